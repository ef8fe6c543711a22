"""Submodules imported on first attribute access (PEP 562), for the layer packages.

``quantlab.core``, ``quantlab.algorithms`` and ``quantlab.book`` each define a module
``__getattr__`` that returns :func:`submodule` ``(__name__, name)``, so that
``quantlab.algorithms.gptq`` works after a plain ``import quantlab``, as the flat
``quantlab.gptq`` does, without importing every module (and its heavy packages) up front.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["submodule"]


def submodule(package: str, name: str) -> ModuleType:
    """The module ``package.name``, imported now if it was not yet.

    Raises:
        AttributeError: ``name`` is private (starts with ``_``) or ``package`` has no such
            module, worded as Python words a missing attribute.
    """
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{package}.{name}":
                raise
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
