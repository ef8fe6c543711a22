"""Former name of :mod:`quantlab.core.validate` (the shared argument checks), kept so that
``quantlab.core._validate`` and ``quantlab._validate`` still import."""

from __future__ import annotations

from .validate import *  # noqa: F403
from .validate import __all__  # noqa: F401
