"""The quantization recipe of a layer: :class:`~quantlab.core.scheme.QuantScheme`, the one
recipe type of quantlab, and :func:`~quantlab.core.scheme.as_scheme`, which turns a format
name into one. They live in :mod:`quantlab.core.scheme`; this module keeps their old address.

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

from ..core.scheme import PerAxis, PerGroup, PerTensor, QuantScheme, SchemeLike, as_scheme

__all__ = [
    "QuantScheme",
    "PerTensor",
    "PerAxis",
    "PerGroup",
    "SchemeLike",
    "as_scheme",
]
