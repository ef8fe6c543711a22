"""How much memory a model needs: weights, scales, KV cache, activations, training state.

Every function here is arithmetic on counts and bit widths; nothing allocates a tensor.
The central formula is

    bytes = n_params * bits_per_weight / 8

where ``bits_per_weight`` includes the overhead that quantized formats carry: one scale
(and, for asymmetric mapping, one zero point) for every ``group_size`` weights. That
overhead is why int4 with an fp16 scale per 128 weights costs 4.125 bits, not 4, and why
GGUF's Q4_0 (an fp16 scale per 32 weights) costs 4.5.

Units: ``GB`` is 10**9 bytes (what disk and model-card sizes use), ``GiB`` is 2**30 bytes
(what memory chips, and so GPU capacities, come in). 28 GB = 26.1 GiB.

Format names ("fp32", "bf16", "int4", "nf4", "fp8_e4m3", any "intN"/"uintN" ...) are
resolved by :func:`quantlab.formats.get_format`, the one place where formats are defined.
The block-scaled formats ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3",
"mxfp4", "mxint8", "nvfp4") carry their scale layout in the format itself, so their bits
per weight include it with no further arguments: 8.25, 6.25, 4.25 and 8.25 for MX (an
8-bit E8M0 scale per 32), 4.5 for NVFP4 (an 8-bit e4m3 scale per 16; its one fp32 scale
per tensor is not counted here -- ``QTensor.nbytes`` counts it).
The calculator is split by job, and this module re-exports every name of its parts, so
``quantlab.core.memory.<name>`` (and ``quantlab.memory.<name>``) reaches all of them:

* :mod:`~quantlab.core.memory_weights` -- bits per weight, bytes of the weights, units, :func:`QuantSpec`;
* :mod:`~quantlab.core.memory_catalog` -- the GPU and model catalog (package data,
  ``quantlab/data/catalog.json``, read once at import) and the look-ups by name;
* :mod:`~quantlab.core.memory_state` -- KV cache, training activations, training state;
* :mod:`~quantlab.core.memory_rlhf` -- the four models of RLHF;
* here -- "does it fit": memory to run a model (:data:`DEFAULT_OVERHEAD` on top of the
  weights) against a GPU's capacity, and the time to read the weights once.

Taught in: chapters/01_why_quantization.ipynb.
"""

from __future__ import annotations

from typing import Any, Iterable

from .memory_catalog import CATALOG, GPU, GPUS, MODEL_SIZES, MODELS, ModelShape, get_gpu, get_model, gpu_bytes
from .memory_rlhf import rlhf_bytes
from .memory_state import activation_bytes, kv_cache_bytes, training_breakdown, training_bytes
from .memory_weights import (
    GB,
    MB,
    DoubleQuant,
    GiB,
    MiB,
    QuantSpec,
    SpecLike,
    bits_per_weight,
    format_bits,
    format_bytes,
    to_gb,
    to_gib,
    weight_bytes,
)
from .validate import check_count

__all__ = [
    "GB",
    "GiB",
    "MB",
    "MiB",
    "DEFAULT_OVERHEAD",
    "DoubleQuant",
    "QuantSpec",
    "SpecLike",
    "CATALOG",
    "GPU",
    "GPUS",
    "ModelShape",
    "MODELS",
    "MODEL_SIZES",
    "format_bits",
    "bits_per_weight",
    "weight_bytes",
    "to_gb",
    "to_gib",
    "format_bytes",
    "get_gpu",
    "gpu_bytes",
    "required_bytes",
    "fits",
    "gpus_that_fit",
    "get_model",
    "kv_cache_bytes",
    "activation_bytes",
    "training_breakdown",
    "training_bytes",
    "rlhf_bytes",
    "weight_read_seconds",
]

DEFAULT_OVERHEAD: float = 0.2
"""Rule-of-thumb extra memory for inference, as a fraction of the weights' bytes.

Covers the CUDA context, the framework's allocator, activations and a short KV cache.
:func:`fits` uses it unless told otherwise; pass ``overhead=0`` to compare weights alone.
"""


def required_bytes(
    n_params: float,
    fmt: SpecLike,
    *,
    overhead: float = DEFAULT_OVERHEAD,
    extra_bytes: float = 0.0,
    **scale_args: Any,
) -> float:
    """Memory to run a model: ``weight_bytes * (1 + overhead) + extra_bytes``.

    Args:
        n_params: number of weights.
        fmt: format name, format object or :class:`~quantlab.core.scheme.QuantScheme`.
        overhead: extra memory as a fraction of the weights (default
            :data:`DEFAULT_OVERHEAD` = 0.2, a rule of thumb; 0 compares weights alone).
        extra_bytes: further bytes, e.g. a KV cache from :func:`kv_cache_bytes`.
        **scale_args: ``group_size``, ``scale_dtype``, ``zero_point_dtype``, ``double_quant``
            as in :func:`bits_per_weight`.

    Raises:
        ValueError: negative ``overhead``/``extra_bytes``, or anything :func:`weight_bytes` rejects.

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """
    overhead = check_count(overhead, "overhead")
    extra = check_count(extra_bytes, "extra_bytes")
    return weight_bytes(n_params, fmt, **scale_args) * (1.0 + overhead) + extra


def fits(
    n_params: float,
    fmt: SpecLike,
    gpu: GPU | str | float,
    *,
    overhead: float = DEFAULT_OVERHEAD,
    extra_bytes: float = 0.0,
    **scale_args: Any,
) -> bool:
    """Does a model fit in a GPU's memory? ``required_bytes(...) <= capacity``.

    Example: ``fits(13e9, QuantSpec("int4", 128), "RTX 4060")`` is True (6.7 GB x 1.2 < 8 GiB).

    Args:
        n_params, fmt, overhead, extra_bytes, **scale_args: see :func:`required_bytes`.
        gpu: a :class:`GPU`, a name from :data:`GPUS`, or a capacity in bytes.

    Raises:
        ValueError: unknown GPU name, capacity <= 0, or anything :func:`required_bytes` rejects.
        TypeError: ``gpu`` of the wrong type.

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """
    capacity = gpu_bytes(gpu)
    return required_bytes(n_params, fmt, overhead=overhead, extra_bytes=extra_bytes, **scale_args) <= capacity


def gpus_that_fit(
    n_params: float,
    fmt: SpecLike,
    *,
    gpus: Iterable[GPU] = GPUS,
    overhead: float = DEFAULT_OVERHEAD,
    extra_bytes: float = 0.0,
    **scale_args: Any,
) -> list[GPU]:
    """The GPUs (from ``gpus``, default :data:`GPUS`) whose memory holds the model.

    Returns:
        The fitting GPUs, in the order of ``gpus`` (smallest memory first for :data:`GPUS`).

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """
    need = required_bytes(n_params, fmt, overhead=overhead, extra_bytes=extra_bytes, **scale_args)
    out = []
    for gpu in gpus:
        if not isinstance(gpu, GPU):
            raise TypeError(f"gpus must hold GPU objects, got {type(gpu).__name__} {gpu!r}")
        if need <= gpu.memory_bytes:
            out.append(gpu)
    return out


def weight_read_seconds(n_params: float, fmt: SpecLike, gpu: GPU | str, **scale_args: Any) -> float:
    """Time to read every weight once from GPU memory: ``weight_bytes / bandwidth``.

    Generating one token (or one action) at batch size 1 reads every weight once and does
    little arithmetic per byte, so this is a lower bound on its latency on that device:
    halving the bytes roughly halves the time.

    Args:
        n_params: number of weights.
        fmt: format name, format object or :class:`~quantlab.core.scheme.QuantScheme`.
        gpu: a :class:`GPU` or a name from :data:`GPUS`.
        **scale_args: as in :func:`bits_per_weight`.

    Returns:
        Seconds.

    Raises:
        ValueError: unknown GPU or format, negative ``n_params``.
        TypeError: ``gpu`` neither a GPU nor a name.

    Taught in: chapters/01_why_quantization.ipynb, "Why it matters for RL".
    """
    if isinstance(gpu, str):
        gpu = get_gpu(gpu)
    if not isinstance(gpu, GPU):
        raise TypeError(f"gpu must be a GPU or a GPU name, got {type(gpu).__name__} {gpu!r}")
    return weight_bytes(n_params, fmt, **scale_args) / (gpu.bandwidth_gbs * GB)
