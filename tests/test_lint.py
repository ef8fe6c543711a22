"""The source passes the linter and the formatter: ``ruff check`` and ``ruff format --check``
over src/, tests/, scripts/ and benchmarks/, with the settings of pyproject.toml
(``[tool.ruff]``, ``[tool.ruff.lint]``).

The ruff used is the one pinned in the project's environment (``.venv/bin/ruff``, or the
``ruff`` beside the running interpreter).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("src", "tests", "scripts", "benchmarks")


def _ruff() -> str:
    for candidate in (REPO / ".venv" / "bin" / "ruff", Path(sys.executable).with_name("ruff")):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed in the project's environment (requirements.txt pins it)")
    return found


def test_ruff_check_is_clean():
    out = subprocess.run(
        [_ruff(), "check", "--no-cache", *FOLDERS], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"ruff check found problems:\n{out.stdout[-8000:]}{out.stderr[-2000:]}"


def test_ruff_format_is_clean():
    out = subprocess.run(
        [_ruff(), "format", "--check", "--no-cache", *FOLDERS], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"ruff format would reformat (run `.venv/bin/ruff format`):\n{out.stdout[-8000:]}"


def test_ruff_reads_the_project_configuration():
    """The rules come from pyproject.toml (a finding the default rules would not report
    is reported), so a clean run above means clean under the project's rules."""
    source = "import os\n\nx = [1] \n"  # F401 is a default rule, W291 (trailing space) is not
    out = subprocess.run(
        [_ruff(), "check", "--no-cache", "--stdin-filename", "src/quantlab/example.py", "-"],
        cwd=REPO,
        input=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    assert "F401" in out.stdout and "W291" in out.stdout
