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

The data this module works with -- the GPU catalog (:data:`GPUS`), the model shapes
(:data:`MODELS`) and the round model sizes (:data:`MODEL_SIZES`) -- is package data,
``quantlab/data/catalog.json``, read once at import; this file holds only the arithmetic.

Taught in: chapters/01_why_quantization.ipynb.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any, Iterable, Union

from .formats import BlockFormat, FloatFormat, Format, FormatLike, get_format
from .scheme import DEFAULT_SCALE_DTYPE, DoubleQuant, QuantScheme
from .validate import check_bool, check_count, check_int

__all__ = [
    "GB",
    "GiB",
    "MB",
    "MiB",
    "DEFAULT_OVERHEAD",
    "DoubleQuant",
    "QuantSpec",
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

GB: int = 10**9
"""One gigabyte: 10**9 bytes (SI; model files and disks are sized in GB)."""
GiB: int = 2**30
"""One gibibyte: 2**30 = 1,073,741,824 bytes (memory chips come in binary sizes)."""
MB: int = 10**6
"""One megabyte: 10**6 bytes."""
MiB: int = 2**20
"""One mebibyte: 2**20 bytes."""

DEFAULT_OVERHEAD: float = 0.2
"""Rule-of-thumb extra memory for inference, as a fraction of the weights' bytes.

Covers the CUDA context, the framework's allocator, activations and a short KV cache.
:func:`fits` uses it unless told otherwise; pass ``overhead=0`` to compare weights alone.
"""


# --------------------------------------------------------------------------- validation


_check_count = check_count  # finite real number >= 0 (> 0 with allow_zero=False), as float


def _check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum``."""
    return check_int(value, name, minimum=minimum)


def _get_format(fmt: Any, name: str) -> Format:
    """Resolve a format name (or pass a Format through), naming the parameter ``name`` on error."""
    if isinstance(fmt, Format):
        return fmt
    if isinstance(fmt, str):
        try:
            return get_format(fmt)
        except ValueError as err:
            raise ValueError(f"{name} must name a known format, got {fmt!r} ({err})") from err
    raise TypeError(f"{name} must be a format name such as 'int4' or a Format, got {type(fmt).__name__} {fmt!r}")


def format_bits(fmt: Any, *, name: str = "fmt") -> int:
    """Bit width of one stored value of a format (without any scale overhead).

    Args:
        fmt: a format name ("fp32", "bf16", "int4", "uint3", "nf4", "fp8_e4m3", ...; see
            :func:`quantlab.formats.get_format`) or a :class:`~quantlab.formats.Format`.
        name: the parameter name to quote in error messages.

    Returns:
        The number of bits, e.g. 32 for "fp32", 4 for "int4" and "nf4".

    Raises:
        ValueError: if the name is not a known format.
        TypeError: if ``fmt`` is neither a string nor a Format.

    Taught in: chapters/01_why_quantization.ipynb, "The formats side by side".
    """
    return int(_get_format(fmt, name).bits)


def _is_float_format(fmt: Any, name: str) -> bool:
    """True if the format is a floating-point format (one that can hold trained weights)."""
    return isinstance(_get_format(fmt, name), FloatFormat)


def _same_format(a: Any, b: Any) -> bool:
    return _get_format(a, "dtype").name == _get_format(b, "dtype").name


# --------------------------------------------------------------------------- bits per weight


def bits_per_weight(
    fmt: Any,
    group_size: int | None = None,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
    zero_point_dtype: str | None = None,
    double_quant: DoubleQuant | bool | None = None,
) -> float:
    """Average storage bits per weight, scales and zero points included.

    Formula, with ``b(.)`` the bit width of a format and ``g = group_size``::

        bits = b(fmt) + b(scale_dtype) / g + b(zero_point_dtype) / g

    With ``double_quant`` the scale term becomes ``b(dq.dtype) / g + b(dq.scale_dtype) / (g * dq.block_size)``.

    Known answers: int4 with an fp16 scale per 128 weights = 4 + 16/128 = 4.125;
    GGUF Q4_0 (int4, fp16 scale per 32) = 4.5; NF4 with an fp32 absmax per 64 = 4.5;
    NF4 with double quantization = 4 + 8/64 + 32/(64*256) = 4.126953125.

    Block-scaled formats (:class:`~quantlab.formats.BlockFormat`: "mxfp4", "nvfp4", ...)
    fix their own scales: ``bits = b(fmt) + 8 / block_size`` (mxfp4: 4 + 8/32 = 4.25,
    mxfp8/mxint8: 8.25, mxfp6: 6.25, nvfp4: 4 + 8/16 = 4.5). For them ``group_size`` may
    only be None or the block size, ``scale_dtype`` only its default or the format's own
    scale format ("fp8_e4m3" for nvfp4), and there is no zero point or double quantization.

    Args:
        fmt: the weights' format, by name ("int4", "nf4", "fp16", ...) or as a format object.
        group_size: number of weights that share one scale. ``None`` means no per-group
            scales (a plain cast such as fp16, or one scale for a whole tensor, whose cost is
            negligible). For per-channel scales pass the channel length (``in_features``).
        scale_dtype: format each scale is stored in (used only with ``group_size``).
        zero_point_dtype: format of the zero point for asymmetric mapping; ``None`` means
            symmetric (no zero point). Used only with ``group_size``.
        double_quant: quantize the scales too: a :class:`DoubleQuant`, ``True`` for QLoRA's
            defaults, or ``None``/``False`` for none. Replaces ``scale_dtype``.

    Returns:
        Bits per weight as a float (exact for power-of-two group sizes).

    Raises:
        ValueError: unknown format name, or ``group_size <= 0``, or ``double_quant``
            or ``zero_point_dtype`` given without a ``group_size``.
        TypeError: ``group_size`` not an integer, ``double_quant`` of the wrong type.

    Taught in: chapters/01_why_quantization.ipynb, "The formats side by side".
    """
    block = _get_format(fmt, "fmt")
    if isinstance(block, BlockFormat):
        return _block_bits(block, group_size, scale_dtype, zero_point_dtype, double_quant)
    bits = float(format_bits(fmt))
    if double_quant is True:
        double_quant = DoubleQuant()
    elif double_quant is False:
        double_quant = None
    if double_quant is not None and not isinstance(double_quant, DoubleQuant):
        raise TypeError(
            "double_quant must be a DoubleQuant, True, False or None, "
            f"got {type(double_quant).__name__} {double_quant!r}"
        )
    if group_size is None:
        if double_quant is not None:
            raise ValueError(f"double_quant needs a group_size, got group_size=None and {double_quant!r}")
        if zero_point_dtype is not None:
            raise ValueError(f"zero_point_dtype needs a group_size, got group_size=None and {zero_point_dtype!r}")
        format_bits(scale_dtype, name="scale_dtype")
        return bits
    g = _check_int(group_size, "group_size")
    if double_quant is None:
        bits += format_bits(scale_dtype, name="scale_dtype") / g
    else:
        format_bits(scale_dtype, name="scale_dtype")
        bits += format_bits(double_quant.dtype) / g
        bits += format_bits(double_quant.scale_dtype) / (g * double_quant.block_size)
    if zero_point_dtype is not None:
        bits += format_bits(zero_point_dtype, name="zero_point_dtype") / g
    return bits


def _block_bits(fmt: BlockFormat, group_size: Any, scale_dtype: Any, zero_point_dtype: Any, double_quant: Any) -> float:
    """Bits per weight of a block-scaled format, refusing scale arguments that contradict it."""
    if group_size is not None and _check_int(group_size, "group_size") != fmt.block_size:
        raise ValueError(
            f"{fmt.name} has blocks of {fmt.block_size}: group_size must be None or {fmt.block_size}, got {group_size}"
        )
    if scale_dtype not in (DEFAULT_SCALE_DTYPE, fmt.scale_format):
        raise ValueError(
            f"{fmt.name} stores its block scales as {fmt.scale_format}: leave scale_dtype at "
            f"its default, got {scale_dtype!r}"
        )
    if zero_point_dtype is not None:
        raise ValueError(f"{fmt.name} has no zero point: zero_point_dtype must be None, got {zero_point_dtype!r}")
    if double_quant is not None and double_quant is not False:
        raise ValueError(
            f"{fmt.name} stores 8-bit block scales: double_quant must be None or False, got {double_quant!r}"
        )
    return float(fmt.bits_per_weight)


def QuantSpec(
    fmt: FormatLike,
    group_size: int | None = None,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
    zero_point_dtype: str | None = None,
    double_quant: DoubleQuant | bool | None = None,
) -> QuantScheme:
    """A storage recipe in the memory calculator's words, returned as a :class:`QuantScheme`.

    ``QuantSpec(fmt)`` is ``fmt`` with one scale per tensor (counted as free: ``fmt``'s bits),
    or a plain cast for fp16/bf16/fp32; ``QuantSpec(fmt, g)`` adds one ``scale_dtype`` scale per
    ``g`` weights; ``zero_point_dtype`` adds zero points (``symmetric=False``); ``double_quant``
    quantizes the scales. The scheme is what every function here takes, and what
    :mod:`quantlab.nn` and :func:`quantlab.quantize` take.

    Example: ``QuantSpec("int4", group_size=128).bits_per_weight()`` is 4.125
    (``QuantScheme("int4", group_size=128)``).

    Raises:
        ValueError: an unknown format; ``zero_point_dtype`` or ``double_quant`` without a
            ``group_size``; anything :class:`QuantScheme` refuses.

    Taught in: chapters/01_why_quantization.ipynb, "Why it matters for RL".
    """
    f = _get_format(fmt, "fmt")
    if group_size is None:
        if double_quant is not None and double_quant is not False:
            raise ValueError(f"double_quant needs a group_size, got group_size=None and {double_quant!r}")
        if zero_point_dtype is not None:
            raise ValueError(f"zero_point_dtype needs a group_size, got group_size=None and {zero_point_dtype!r}")
    plain = isinstance(f, BlockFormat) or (isinstance(f, FloatFormat) and f.bits >= 16)
    granularity = None if plain or group_size is not None else "tensor"
    return QuantScheme(
        f,
        granularity,
        group_size,
        symmetric=zero_point_dtype is None,
        scale_dtype=scale_dtype,
        zero_point_dtype=zero_point_dtype,
        double_quant=double_quant,
    )


#: A format or its name (:data:`~quantlab.core.formats.FormatLike`), or a :class:`QuantScheme`.
SpecLike = Union[FormatLike, QuantScheme]


def _spec_bits(spec: SpecLike, name: str) -> float:
    """Bits per weight of a format name, format object or :class:`~quantlab.core.scheme.QuantScheme` (block-scaled
    formats with their scales)."""
    if isinstance(spec, QuantScheme):
        return spec.bits_per_weight()
    fmt = _get_format(spec, name)
    if isinstance(fmt, BlockFormat):
        return float(fmt.bits_per_weight)
    return float(fmt.bits)


def _spec_fmt(spec: SpecLike) -> Any:
    return spec.fmt if isinstance(spec, QuantScheme) else spec


def weight_bytes(
    n_params: float,
    fmt: SpecLike,
    group_size: int | None = None,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
    zero_point_dtype: str | None = None,
    double_quant: DoubleQuant | bool | None = None,
) -> float:
    """Bytes needed to store ``n_params`` weights in a format, scales included.

    Formula: ``n_params * bits_per_weight(fmt, group_size, ...) / 8``. This is the average
    over whole groups (it assumes ``n_params`` is a multiple of ``group_size``, true for
    real layers); the packed size of one particular tensor is ``QTensor.nbytes``.

    Example: ``weight_bytes(7e9, "fp32") == 28e9`` (28 GB = 26.1 GiB).

    Args:
        n_params: number of weights (>= 0; a float such as ``7e9`` is fine).
        fmt: format name, format object, or a :class:`~quantlab.core.scheme.QuantScheme` (then the scale arguments
            must be left at their defaults).
        group_size, scale_dtype, zero_point_dtype, double_quant: see :func:`bits_per_weight`.

    Returns:
        Bytes, as a float.

    Raises:
        ValueError: negative or non-finite ``n_params``, unknown format, bad ``group_size``,
            or scale arguments given together with a :class:`~quantlab.core.scheme.QuantScheme`.
        TypeError: ``n_params`` not a real number.

    Taught in: chapters/01_why_quantization.ipynb, "The memory arithmetic".
    """
    n = _check_count(n_params, "n_params")
    if isinstance(fmt, QuantScheme):
        if (group_size, scale_dtype, zero_point_dtype, double_quant) != (None, DEFAULT_SCALE_DTYPE, None, None):
            raise ValueError(
                f"fmt is a QuantScheme ({fmt}); give group_size/scale_dtype/zero_point_dtype/"
                f"double_quant inside it, got group_size={group_size!r}, scale_dtype={scale_dtype!r}, "
                f"zero_point_dtype={zero_point_dtype!r}, double_quant={double_quant!r}"
            )
        bits = fmt.bits_per_weight()
    else:
        bits = bits_per_weight(fmt, group_size, scale_dtype, zero_point_dtype, double_quant)
    return n * bits / 8


# --------------------------------------------------------------------------- units


def to_gb(nbytes: float) -> float:
    """Bytes to gigabytes (10**9 bytes). Taught in: chapters/01_why_quantization.ipynb, "The memory arithmetic"."""
    return _check_count(nbytes, "nbytes") / GB


def to_gib(nbytes: float) -> float:
    """Bytes to gibibytes (2**30 bytes). Taught in: chapters/01_why_quantization.ipynb, "The memory arithmetic"."""
    return _check_count(nbytes, "nbytes") / GiB


_UNITS = {"B": 1, "MB": MB, "MiB": MiB, "GB": GB, "GiB": GiB}


def format_bytes(nbytes: float, unit: str = "GB", digits: int = 1) -> str:
    """Format a byte count in a unit, e.g. ``format_bytes(28e9, "GiB") == "26.1 GiB"``.

    Args:
        nbytes: number of bytes (>= 0).
        unit: one of "B", "MB", "MiB", "GB", "GiB".
        digits: decimals to show (>= 0).

    Returns:
        A string such as "28.0 GB".

    Raises:
        ValueError: unknown unit, negative ``nbytes`` or ``digits``.

    Taught in: chapters/01_why_quantization.ipynb, "The memory arithmetic".
    """
    n = _check_count(nbytes, "nbytes")
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {sorted(_UNITS)}, got {unit!r}")
    digits = _check_int(digits, "digits", minimum=0)
    return f"{n / _UNITS[unit]:.{digits}f} {unit}"


# --------------------------------------------------------------------------- the catalog file


def _read_catalog() -> dict[str, Any]:
    """``quantlab/data/catalog.json`` (package data), parsed."""
    return json.loads(resources.files("quantlab").joinpath("data", "catalog.json").read_text("utf-8"))


CATALOG: dict[str, Any] = _read_catalog()
"""The parsed ``quantlab/data/catalog.json``: ``{"gpus": {"rows": [...]}, "models": {"rows":
[...]}, "model_sizes": {"values": [...]}}``, each part with an ``"about"`` text. Rows are
the fields of :class:`GPU` / :class:`ModelShape` (a row may add a ``"note"``, which is
documentation only). :data:`GPUS`, :data:`MODELS` and :data:`MODEL_SIZES` are built from it."""


def _records(cls: type, part: str) -> list[Any]:
    """The rows of ``CATALOG[part]`` as ``cls`` objects (their fields, in the file's order).

    Raises:
        ValueError: a row lacks a field of ``cls`` or has one it does not know (besides
            ``"note"``), naming the row.
    """
    names = [f.name for f in fields(cls)]
    out = []
    for i, row in enumerate(CATALOG[part]["rows"]):
        extra = set(row) - set(names) - {"note"}
        missing = [n for n in names if n not in row]
        if extra or missing:
            raise ValueError(
                f"catalog.json {part}[{i}] ({row.get('name')!r}): missing {missing}, unknown {sorted(extra)}"
            )
        out.append(cls(**{n: row[n] for n in names}))
    return out


# --------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class GPU:
    """A GPU (or edge module) and its memory.

    Vendors write "24 GB", but memory chips come in binary sizes: the card holds
    24 GiB = 25.8 GB. ``memory_gib`` is that nominal capacity; a little of it is taken by
    the driver and CUDA context (see :data:`DEFAULT_OVERHEAD`).

    Attributes:
        name: marketing name, e.g. "RTX 4090".
        memory_gib: nominal memory in GiB (the number on the box).
        bandwidth_gbs: peak memory bandwidth from the spec sheet, in GB/s (10**9 bytes/s).
        kind: "consumer", "laptop", "workstation", "datacenter" or "edge".

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """

    name: str
    memory_gib: float
    bandwidth_gbs: float
    kind: str

    @property
    def memory_bytes(self) -> float:
        """Memory in bytes: ``memory_gib * 2**30``."""
        return self.memory_gib * GiB


GPUS: tuple[GPU, ...] = tuple(_records(GPU, "gpus"))
"""A small catalog of common GPUs, smallest memory first (spec-sheet values; H100 and A100 are SXM)."""


def get_gpu(name: str) -> GPU:
    """Look up a GPU in :data:`GPUS` by name (case and spaces ignored).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        TypeError: ``name`` not a string.

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__} {name!r}")
    key = name.replace(" ", "").lower()
    for gpu in GPUS:
        if gpu.name.replace(" ", "").lower() == key:
            return gpu
    raise ValueError(f"name must be one of {[g.name for g in GPUS]}, got {name!r}")


def gpu_bytes(gpu: GPU | str | float) -> float:
    """Memory capacity in bytes of a :class:`GPU`, a GPU name, or a number of bytes.

    Raises:
        ValueError: unknown GPU name, or a capacity that is not > 0.
        TypeError: anything else.

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """
    if isinstance(gpu, GPU):
        return gpu.memory_bytes
    if isinstance(gpu, str):
        return get_gpu(gpu).memory_bytes
    if isinstance(gpu, bool) or not isinstance(gpu, numbers.Real):
        raise TypeError(f"gpu must be a GPU, a GPU name or a number of bytes, got {type(gpu).__name__} {gpu!r}")
    return _check_count(gpu, "gpu", allow_zero=False)


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
    overhead = _check_count(overhead, "overhead")
    extra = _check_count(extra_bytes, "extra_bytes")
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


# --------------------------------------------------------------------------- model shapes


@dataclass(frozen=True)
class ModelShape:
    """The shape of a decoder-only transformer, enough to size its KV cache and activations.

    Attributes:
        name: model name.
        n_params: number of parameters (approximate, from the model card).
        n_layers: transformer blocks.
        hidden_size: width of the residual stream.
        n_heads: attention (query) heads.
        n_kv_heads: key/value heads (fewer than ``n_heads`` with grouped-query attention).
        head_dim: width of one head.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """

    name: str
    n_params: float
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    def kv_cache_bytes(self, seq_len: int, batch: int = 1, dtype: str = "fp16") -> float:
        """KV cache of this model; see :func:`kv_cache_bytes`."""
        return kv_cache_bytes(self.n_layers, self.n_kv_heads, self.head_dim, seq_len, batch, dtype)


MODELS: tuple[ModelShape, ...] = tuple(_records(ModelShape, "models"))
"""A few published model shapes (from their configuration files)."""

MODEL_SIZES: tuple[float, ...] = tuple(float(v) for v in CATALOG["model_sizes"]["values"])
"""Round parameter counts of the common model sizes: 1B, 3B, 7B, 13B, 70B."""


def get_model(name: str) -> ModelShape:
    """Look up a model in :data:`MODELS` by name (case ignored).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        TypeError: ``name`` not a string.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__} {name!r}")
    for model in MODELS:
        if model.name.lower() == name.lower():
            return model
    raise ValueError(f"name must be one of {[m.name for m in MODELS]}, got {name!r}")


# --------------------------------------------------------------------------- beyond the weights


def kv_cache_bytes(
    n_layers: int,
    n_kv_heads: int,
    head_dim: int,
    seq_len: int,
    batch: int = 1,
    dtype: SpecLike = "fp16",
) -> float:
    """Bytes of the key/value cache a transformer keeps while generating.

    Formula (a key and a value vector per layer, KV head and token)::

        2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bits(dtype) / 8

    Example: Llama-2-7B (32 layers, 32 KV heads, head_dim 128) at 4096 tokens in fp16
    holds 2 * 32 * 32 * 128 * 4096 * 2 bytes = 2 GiB per sequence.

    Args:
        n_layers, n_kv_heads, head_dim: model shape (integers >= 1).
        seq_len: tokens held (>= 0).
        batch: sequences held at once (>= 1).
        dtype: format of the cache (name, format object or :class:`~quantlab.core.scheme.QuantScheme`).

    Raises:
        ValueError: a size below its minimum, unknown dtype.
        TypeError: a non-integer size.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    n_layers = _check_int(n_layers, "n_layers")
    n_kv_heads = _check_int(n_kv_heads, "n_kv_heads")
    head_dim = _check_int(head_dim, "head_dim")
    seq_len = _check_int(seq_len, "seq_len", minimum=0)
    batch = _check_int(batch, "batch")
    bits = _spec_bits(dtype, "dtype")
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bits / 8


def activation_bytes(
    n_layers: int,
    hidden_size: int,
    n_heads: int,
    seq_len: int,
    batch: int = 1,
    store_attention_scores: bool = True,
) -> float:
    """Activations a transformer stores for the backward pass during training (16-bit).

    Estimate of Korthikanti et al. (2022), "Reducing Activation Recomputation in Large
    Transformer Models", eq. 1 (no recomputation, no parallelism)::

        n_layers * seq_len * batch * hidden_size * (34 + 5 * n_heads * seq_len / hidden_size)

    The second term is the attention score matrices (quadratic in ``seq_len``); fused
    attention kernels (FlashAttention) do not store them: ``store_attention_scores=False``
    keeps only the 34 term. In inference nothing is kept for a backward pass, and a layer's
    activations are freed once the next layer has read them: the KV cache is what persists.

    Args:
        n_layers, hidden_size, n_heads: model shape (integers >= 1).
        seq_len: tokens per sequence (>= 0).
        batch: sequences per step (>= 1).
        store_attention_scores: whether the softmax inputs/outputs are kept.

    Raises:
        ValueError / TypeError: as :func:`kv_cache_bytes`.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    n_layers = _check_int(n_layers, "n_layers")
    hidden_size = _check_int(hidden_size, "hidden_size")
    n_heads = _check_int(n_heads, "n_heads")
    seq_len = _check_int(seq_len, "seq_len", minimum=0)
    batch = _check_int(batch, "batch")
    store_attention_scores = check_bool(store_attention_scores, "store_attention_scores")
    per_element = 34.0
    if store_attention_scores:
        per_element += 5.0 * n_heads * seq_len / hidden_size
    return n_layers * seq_len * batch * hidden_size * per_element


_OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd_momentum": 1, "sgd": 0}


def training_breakdown(
    n_params: float,
    weight_dtype: SpecLike = "bf16",
    *,
    optimizer: str = "adam",
    master_dtype: str | None = "fp32",
    moment_dtype: str = "fp32",
    grad_dtype: str | None = None,
    adapter_params: float | None = None,
    adapter_dtype: str = "bf16",
) -> dict[str, float]:
    """Bytes of each part of a model's training state.

    Full fine-tuning (``adapter_params=None``) trains all ``n_params`` weights::

        weights     n * bits(weight_dtype) / 8
        gradients   n * bits(grad_dtype) / 8          (grad_dtype defaults to weight_dtype)
        master      n * bits(master_dtype) / 8        (0 if None or equal to weight_dtype)
        optimizer   n * k * bits(moment_dtype) / 8    (k = 2 for Adam: m and v)

    Mixed-precision Adam (bf16 weights and gradients, fp32 master copy and moments) is the
    classic 2 + 2 + 4 + 8 = 16 bytes per parameter: 112 GB for 7B parameters. Plain fp32
    Adam is also 4 + 4 + 0 + 8 = 16.

    With adapters (LoRA, QLoRA) the ``n_params`` base weights are frozen, stored in
    ``weight_dtype`` (which may be quantized, e.g. ``QuantSpec("nf4", 64, "fp32")``), and
    only ``adapter_params`` extra weights (stored in ``adapter_dtype``) carry gradients,
    master copies and optimizer moments.

    Args:
        n_params: parameters of the model (>= 0).
        weight_dtype: format of the (base) weights: name, format object or :class:`~quantlab.core.scheme.QuantScheme`.
            Full fine-tuning needs a floating-point format.
        optimizer: "adam"/"adamw" (2 moments), "sgd_momentum" (1) or "sgd" (0).
        master_dtype: format of the master copy of trained weights, or ``None``.
        moment_dtype: format of each optimizer moment.
        grad_dtype: format of the gradients (default: that of the trained weights).
        adapter_params: number of trainable adapter weights, or ``None`` for full fine-tuning.
        adapter_dtype: format of the adapter weights.

    Returns:
        A dict with keys "weights", "adapters", "gradients", "master_weights",
        "optimizer_state" (bytes each; "adapters" is 0 for full fine-tuning).

    Raises:
        ValueError: unknown optimizer or format, negative counts, a non-float
            ``weight_dtype`` in full fine-tuning.
        TypeError: counts that are not numbers.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    n = _check_count(n_params, "n_params")
    if optimizer not in _OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZER_STATES)}, got {optimizer!r}")
    weights = n * _spec_bits(weight_dtype, "weight_dtype") / 8
    if adapter_params is None:
        if not _is_float_format(_spec_fmt(weight_dtype), "weight_dtype") or (
            isinstance(weight_dtype, QuantScheme) and weight_dtype.resolved_granularity != "tensor"
        ):
            raise ValueError(
                "full fine-tuning needs a floating-point weight_dtype; train quantized weights "
                f"through adapters (adapter_params=...), got weight_dtype={str(weight_dtype)!r}"
            )
        trained, trained_dtype, adapters = n, _spec_fmt(weight_dtype), 0.0
    else:
        trained = _check_count(adapter_params, "adapter_params")
        trained_dtype = adapter_dtype
        adapters = trained * format_bits(adapter_dtype, name="adapter_dtype") / 8
    if grad_dtype is None:
        grad_dtype = trained_dtype
    grads = trained * format_bits(grad_dtype, name="grad_dtype") / 8
    master = 0.0
    if master_dtype is not None:
        master_b = format_bits(master_dtype, name="master_dtype")
        if not _same_format(master_dtype, trained_dtype):
            master = trained * master_b / 8
    state = trained * _OPTIMIZER_STATES[optimizer] * format_bits(moment_dtype, name="moment_dtype") / 8
    return {
        "weights": weights,
        "adapters": adapters,
        "gradients": grads,
        "master_weights": master,
        "optimizer_state": state,
    }


def training_bytes(n_params: float, weight_dtype: SpecLike = "bf16", **kwargs: Any) -> float:
    """Total training memory of a model (weights, gradients, master copy, optimizer state).

    The sum of :func:`training_breakdown` (same arguments): 16 bytes per parameter for
    mixed-precision Adam, so ``training_bytes(7e9) == 112e9``. Activations come on top
    (:func:`activation_bytes`).

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    return sum(training_breakdown(n_params, weight_dtype, **kwargs).values())


def rlhf_bytes(
    n_params: float,
    *,
    policy_fmt: SpecLike = "bf16",
    reference_fmt: SpecLike = "bf16",
    reward_fmt: SpecLike = "bf16",
    value_fmt: SpecLike = "bf16",
    reward_params: float | None = None,
    value_params: float | None = None,
    adapter_params: float | None = None,
    optimizer: str = "adam",
    master_dtype: str | None = "fp32",
    moment_dtype: str = "fp32",
) -> dict[str, float]:
    """Memory of the four models PPO-style RLHF holds at once, per model.

    - policy: trained, so weights plus its training state (:func:`training_bytes`);
    - reference: the frozen starting policy (for the KL penalty): weights only;
    - reward: frozen reward model: weights only;
    - value: the critic, trained too (weights plus training state).

    Frozen models can be stored quantized at no cost to training (``reference_fmt="int8"``,
    ``QuantSpec("int4", 128)``); trained ones need a float format, unless
    ``adapter_params`` is given: then policy and value keep frozen (possibly quantized)
    bases and each trains ``adapter_params`` adapter weights (LoRA/QLoRA).

    Args:
        n_params: parameters of the policy (and of the reference, its copy).
        policy_fmt, reference_fmt, reward_fmt, value_fmt: each model's storage format.
        reward_params: parameters of the reward model (default ``n_params``).
        value_params: parameters of the value model (default ``reward_params``; the
            critic is usually initialised from the reward model).
        adapter_params: trainable adapter weights per trained model, or ``None`` (full).
        optimizer, master_dtype, moment_dtype: see :func:`training_breakdown`.

    Returns:
        ``{"policy": ..., "reference": ..., "reward": ..., "value": ...}`` in bytes; the
        total is ``sum(result.values())``.

    Raises:
        ValueError / TypeError: as :func:`weight_bytes` and :func:`training_breakdown`.

    Taught in: chapters/01_why_quantization.ipynb, "Why it matters for RL".
    """
    n = _check_count(n_params, "n_params")
    r = n if reward_params is None else _check_count(reward_params, "reward_params")
    v = r if value_params is None else _check_count(value_params, "value_params")
    train = dict(
        adapter_params=adapter_params,
        optimizer=optimizer,
        master_dtype=master_dtype,
        moment_dtype=moment_dtype,
    )
    return {
        "policy": training_bytes(n, policy_fmt, **train),
        "reference": n * _spec_bits(reference_fmt, "reference_fmt") / 8,
        "reward": r * _spec_bits(reward_fmt, "reward_fmt") / 8,
        "value": training_bytes(v, value_fmt, **train),
    }


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
