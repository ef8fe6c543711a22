"""The deploy layer: quantized models written for other runtimes. Imports core and nn.

* :mod:`quantlab.deploy.onnx` -- ONNX export onto ONNX Runtime's integer kernels; its
  public names are re-exported here (``quantlab.deploy.export_onnx``, ...);
* :mod:`quantlab.deploy.decoder` -- a Llama-style decoding step as one fused ONNX graph
  (``export_llama_decoder``), for fast generation in ONNX Runtime;
* :mod:`quantlab.deploy.gguf_export` -- GGUF files for llama.cpp and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import onnx
from .onnx import (
    DEFAULT_ACCURACY_LEVEL,
    DEFAULT_OPSET,
    GROUP_SIZES,
    LayerExport,
    activation_error_bound,
    export_onnx,
    export_plan,
    ort_session,
)

__all__ = list(onnx.__all__)


def __getattr__(name: str) -> Any:
    """``quantlab.deploy.gguf_export`` and ``quantlab.deploy.decoder`` on first use; any other name from
    :mod:`quantlab.deploy.onnx` (the module ``quantlab.deploy`` used to be)."""
    if name in ("gguf_export", "decoder"):
        return importlib.import_module(f"{__name__}.{name}")
    try:
        return getattr(onnx, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
