"""The core layer: numbers and their storage. Imports numpy and torch only.

* :mod:`~quantlab.core.formats` -- the number formats (integer, float, codebook, block-scaled)
  and :func:`~quantlab.core.formats.get_format`;
* :mod:`~quantlab.core.scheme` -- :class:`~quantlab.core.scheme.QuantScheme`, the one recipe type
  (format, typed granularity, scale and zero-point storage, ``bits_per_weight(shape)``);
* :mod:`~quantlab.core.quantize` -- ``quantize``, ``fake_quantize`` and ``dequantize`` (it
  re-exports the two below);
* :mod:`~quantlab.core.qparams` -- ``QParams``, ``choose_qparams`` and ``store_scales``;
* :mod:`~quantlab.core.qtensor` -- the :class:`~quantlab.core.qtensor.QTensor` storage type;
* :mod:`~quantlab.core.packing` -- sub-byte codes packed into bytes;
* :mod:`~quantlab.core.mx` -- microscaling (MX) and NVFP4 block scales;
* :mod:`~quantlab.core.gguf_blocks` -- the GGUF block codecs (Q8_0 ... Q6_K), byte for byte,
  by family: ``gguf_layout`` (tables, byte fields), ``gguf_legacy`` (the 32-weight kinds),
  ``gguf_ternary`` (TQ1_0, TQ2_0), ``gguf_kquants`` (Q4_K, Q6_K);
* :mod:`~quantlab.core.metrics` -- error metrics (MSE, SQNR, ...);
* :mod:`~quantlab.core.memory` -- the memory calculator (weights, KV cache, training, RLHF),
  re-exporting its parts: ``memory_weights`` (bits per weight, bytes), ``memory_catalog``
  (GPUs, model shapes), ``memory_state`` (KV cache, activations, training), ``memory_rlhf``;
* ``validate`` -- the argument checks every module uses (``_validate`` is its former name);
* ``_backend``, ``_fast`` -- numpy/torch dispatch, chunking.

Nothing here imports another layer of quantlab (algorithms, nn, deploy, book).
"""

from types import ModuleType

from .lazy import submodule


def __getattr__(name: str) -> ModuleType:
    """``quantlab.core.<module>`` after a plain ``import quantlab`` (:func:`quantlab.core.lazy.submodule`)."""
    return submodule(__name__, name)
