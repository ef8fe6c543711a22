"""Loaded by pytest before anything is collected, whatever paths it is given.

It installs the notebook comparison rules of ``tests/nbval_tolerance.py`` (exact by default,
numbers within a tolerance in cells tagged ``rtol=...``/``atol=...``), so that
``pytest --nbval chapters/...`` alone applies them as ``make test`` does.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))

import nbval_tolerance  # noqa: E402

nbval_tolerance.install()

# tests/nbval_modes.py: --nbval-modes native,avx2 runs each notebook once per instruction-set mode.
pytest_plugins = ["nbval_modes"]
