"""Bits per weight and bytes: what storing weights in a format costs, scales included.

The central formula of the memory calculator::

    bytes = n_params * bits_per_weight / 8

where ``bits_per_weight`` includes the overhead that quantized formats carry: one scale
(and, for asymmetric mapping, one zero point) for every ``group_size`` weights. That
overhead is why int4 with an fp16 scale per 128 weights costs 4.125 bits, not 4, and why
GGUF's Q4_0 (an fp16 scale per 32 weights) costs 4.5. Block-scaled formats (MX, NVFP4)
carry their scale layout in the format itself.

Also here: the byte units (``GB`` = 10**9, ``GiB`` = 2**30 bytes; 28 GB = 26.1 GiB) and
their formatting, and :class:`QuantSpec`, the calculator's way of writing a
:class:`~quantlab.core.scheme.QuantScheme`. Every name is re-exported by
:mod:`quantlab.core.memory`.

Taught in: chapters/01_why_quantization.ipynb, "The formats side by side" and "The memory arithmetic".
"""

from __future__ import annotations

from typing import Any, Union

from .formats import BlockFormat, FloatFormat, Format, FormatLike, get_format
from .scheme import DEFAULT_SCALE_DTYPE, DoubleQuant, QuantScheme
from .validate import check_count, check_int

__all__ = [
    "GB",
    "GiB",
    "MB",
    "MiB",
    "DoubleQuant",
    "QuantSpec",
    "SpecLike",
    "format_bits",
    "resolve_format",
    "spec_bits",
    "spec_format",
    "bits_per_weight",
    "weight_bytes",
    "to_gb",
    "to_gib",
    "format_bytes",
]

GB: int = 10**9
"""One gigabyte: 10**9 bytes (SI; model files and disks are sized in GB)."""
GiB: int = 2**30
"""One gibibyte: 2**30 = 1,073,741,824 bytes (memory chips come in binary sizes)."""
MB: int = 10**6
"""One megabyte: 10**6 bytes."""
MiB: int = 2**20
"""One mebibyte: 2**20 bytes."""


def resolve_format(fmt: Any, name: str) -> Format:
    """Resolve a format name (or pass a Format through), naming the parameter ``name`` on error.

    The memory calculator's entry to :func:`~quantlab.core.formats.get_format`: every function of
    :mod:`quantlab.core.memory` that takes a format reads it through here.

    Raises:
        ValueError: an unknown format name (``name`` and the value quoted).
        TypeError: ``fmt`` neither a string nor a :class:`~quantlab.core.formats.Format`.

    Taught in: chapters/01_why_quantization.ipynb, "The formats side by side".
    """
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
    return int(resolve_format(fmt, name).bits)


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
    block = resolve_format(fmt, "fmt")
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
    g = check_int(group_size, "group_size", minimum=1)
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
    if group_size is not None and check_int(group_size, "group_size", minimum=1) != fmt.block_size:
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
    f = resolve_format(fmt, "fmt")
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


def spec_bits(spec: SpecLike, name: str) -> float:
    """Bits per weight of a format name, format object or :class:`~quantlab.core.scheme.QuantScheme`.

    A scheme counts its scales and zero points (``scheme.bits_per_weight()``); a block-scaled
    format counts its block scales (mxfp4: 4.25); any other format is its bit width alone
    (one scale per tensor is free). ``name`` is the parameter quoted in errors.

    Raises:
        ValueError / TypeError: as :func:`resolve_format`.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    if isinstance(spec, QuantScheme):
        return spec.bits_per_weight()
    fmt = resolve_format(spec, name)
    if isinstance(fmt, BlockFormat):
        return float(fmt.bits_per_weight)
    return float(fmt.bits)


def spec_format(spec: SpecLike) -> Any:
    """The format of a spec: ``spec.fmt`` for a :class:`~quantlab.core.scheme.QuantScheme`, else
    ``spec`` itself (a format or its name, unchanged).

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
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
    n = check_count(n_params, "n_params")
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
    return check_count(nbytes, "nbytes") / GB


def to_gib(nbytes: float) -> float:
    """Bytes to gibibytes (2**30 bytes). Taught in: chapters/01_why_quantization.ipynb, "The memory arithmetic"."""
    return check_count(nbytes, "nbytes") / GiB


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
    n = check_count(nbytes, "nbytes")
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {sorted(_UNITS)}, got {unit!r}")
    digits = check_int(digits, "digits", minimum=0)
    return f"{n / _UNITS[unit]:.{digits}f} {unit}"
