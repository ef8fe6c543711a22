"""quantlab: quantization of neural networks, explained and measured.

The library behind the chapter "Quantization". Core API::

    import quantlab as ql
    q = ql.quantize(x, "int4", granularity="group", group_size=128)  # numpy or torch
    x_hat = q.dequantize(); q.nbytes; q.bits_per_weight
    ql.metrics.sqnr_db(x, x_hat)
    ql.memory.weight_bytes(7e9, "fp32")  # 28e9

Submodules (``ql.memory``, ``ql.gptq``, ...) are imported on first use, and so is
``ql.fake_quantized_copy(model, "int4", granularity="channel")`` (a copy of a model whose
Linear weights are rounded to a format).
"""

from __future__ import annotations

import importlib
from typing import Any

from . import formats, metrics, packing
from .formats import (
    CodebookFormat,
    FloatFormat,
    Format,
    IntFormat,
    NF4_VALUES,
    codebook,
    get_format,
)
from .metrics import cosine_similarity, mean_relative_error, mse, relative_error, sqnr_db
from .packing import pack, packed_nbytes, unpack
from .quantize import QParams, QTensor, choose_qparams, dequantize, fake_quantize, quantize

__version__ = "0.1.0"

__all__ = [
    "Format", "IntFormat", "FloatFormat", "CodebookFormat", "NF4_VALUES", "codebook", "get_format",
    "QParams", "QTensor", "choose_qparams", "quantize", "dequantize", "fake_quantize",
    "pack", "unpack", "packed_nbytes",
    "mse", "relative_error", "mean_relative_error", "sqnr_db", "cosine_similarity",
    "formats", "metrics", "packing",
]


#: Functions re-exported from submodules, imported on first access: name -> module.
_LAZY_FUNCTIONS = {"fake_quantized_copy": "._model_utils"}


def __getattr__(name: str) -> Any:
    """Import submodules such as ``quantlab.memory`` (and the functions of
    ``_LAZY_FUNCTIONS``, e.g. ``quantlab.fake_quantized_copy``) lazily on attribute access."""
    if name in _LAZY_FUNCTIONS:
        value = getattr(importlib.import_module(_LAZY_FUNCTIONS[name], __name__), name)
        globals()[name] = value
        return value
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        module = importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{name}":
            raise AttributeError(f"module 'quantlab' has no attribute {name!r}") from None
        raise
    globals()[name] = module
    return module
