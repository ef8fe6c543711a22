"""The deploy layer: quantized models written for, and run by, other runtimes. Imports core and nn.

* :mod:`quantlab.deploy.onnx` -- ONNX export onto ONNX Runtime's integer kernels (and
  :func:`~quantlab.deploy.onnx.export_float` for float models); its public names are
  re-exported here (``quantlab.deploy.export_onnx``, ...);
* :mod:`quantlab.deploy.decoder` -- a Llama-style decoding step as one fused ONNX graph
  (``export_llama_decoder``) or traced op by op (``LlamaDecodeStep``); ``export_decoder``
  writes either;
* :mod:`quantlab.deploy.runtime` -- running that step in ONNX Runtime: ``decoder_session``,
  ``OrtDecoder`` (the KV cache), ``greedy_decode``;
* :mod:`quantlab.deploy.profiling` -- what an exported graph holds and where its time goes:
  ``graph_ops``, ``onnx_bytes_per_token``, ``profile_decoder``;
* :mod:`quantlab.deploy.gguf_export` -- GGUF files for llama.cpp and transformers;
* :mod:`quantlab.deploy.gguf_llama` -- the LLaMA layout in GGUF: tensor names, the rotary row
  order of ``W_q`` and ``W_k`` (re-exported by ``gguf_export``);
* :mod:`quantlab.deploy.shipped` -- where the model files shipped in PyPI packages lie.

Nothing here imports :mod:`quantlab.book`.
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
    export_float,
    export_onnx,
    export_plan,
    ort_session,
)

__all__ = list(onnx.__all__)

#: Submodules imported on first use (they import onnx, onnxruntime or gguf when called).
_SUBMODULES = ("gguf_export", "decoder", "runtime", "profiling", "shipped")


def __getattr__(name: str) -> Any:
    """The submodules of :data:`_SUBMODULES` on first use; any other name from
    :mod:`quantlab.deploy.onnx` (the module ``quantlab.deploy`` used to be)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    try:
        return getattr(onnx, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
