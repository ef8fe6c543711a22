"""Sphinx extension for the quantlab book: choose how notebooks are executed.

``_config.yml`` sets ``execute_notebooks: cache``: ``make book`` executes every notebook
(reusing jupyter-cache's result for an unchanged one). The environment variable
``QUANTLAB_BOOK_EXECUTION`` overrides it for one build, with one of myst-nb's modes:
``off`` (render the outputs stored in the notebooks), ``cache``, ``force``, ``auto``,
``inline``.

``make test`` uses ``off`` for its strict build: in the same run nbval has just re-executed
every notebook in a fresh kernel and checked that it reproduces its stored outputs, so a
third execution would add time and nothing else.
"""

from __future__ import annotations

import os
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)

MODES = ("off", "force", "auto", "cache", "inline")
VARIABLE = "QUANTLAB_BOOK_EXECUTION"


def apply_execution_mode(app: Sphinx, config: Config) -> None:
    """Override ``nb_execution_mode`` from the environment, when the variable is set."""
    mode = os.environ.get(VARIABLE, "").strip()
    if not mode:
        return
    if mode not in MODES:
        raise ValueError(f"{VARIABLE} must be one of {MODES}, got {mode!r}")
    logger.info("notebook execution: %s (from %s)", mode, VARIABLE)
    config.nb_execution_mode = mode


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", apply_execution_mode)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
