"""The quantization recipe: :class:`QuantScheme`, the one description of how weights are stored.

A scheme names a format, how elements share a scale (its **granularity**), how the scales and
zero points are stored, and nothing else. Every part of quantlab reads the same type:
:func:`quantlab.core.quantize.quantize` (``quantize(x, scheme)``), the algorithms (GPTQ, AWQ,
HQQ), the layers of :mod:`quantlab.nn`, the memory calculator (:mod:`quantlab.core.memory`,
which counts ``scheme.bits_per_weight()``) and the RL code.

Granularity, typed as in torchao (``granularity.py``)::

    PerTensor()          one scale for the whole tensor
    PerAxis(axis=0)      one scale per index along ``axis`` (0: per output row of a weight)
    PerGroup(32)         one scale per ``group_size`` consecutive weights along the last axis

The string names ``"tensor"``, ``"channel"`` and ``"group"`` (with ``axis`` and
``group_size`` beside them) are accepted too and mean the same.

Bits per weight, with ``b(.)`` the width of a format and ``n`` the number of weights that share
one scale (the whole tensor, one row or column, or ``group_size``)::

    bits = b(fmt) + (b(scale_dtype) + b(zero point)) / n

A symmetric scheme stores no zero point; an asymmetric one stores integer zero points at the
code width (``zero_point_dtype=None``), or real-valued ones in ``zero_point_dtype`` (HQQ,
llama.cpp's Q4_1). With :class:`DoubleQuant` the scales are themselves quantized (QLoRA).
16- and 32-bit floats are plain casts (no scale); block-scaled formats (MXFP4, NVFP4) bring
their own scales.

**The default scale dtype** is :data:`DEFAULT_SCALE_DTYPE`, ``"fp16"``: what GPTQ, AWQ,
llama.cpp and most stored checkpoints use. It is stated here once, and every recipe defaults to
it: a :class:`QuantScheme`, the memory calculator, :mod:`quantlab.nn`, GPTQ, AWQ, HQQ, imatrix
and QAT. The primitives that only compute (``quantize``, ``choose_qparams``, ``fake_quantize``
and ``sweeps``' error rows, called with a format and keywords instead of a scheme) keep exact
float32 scales, :data:`EXACT_SCALE_DTYPE`, as torchao's primitives keep the input's dtype: the
scale is then exactly ``absmax / qmax``, the formula the chapter's first pages compute by hand, and
no input is too small or too large for its scale. ``quantize(x, scheme)`` stores what the scheme says.

Taught in: chapters/03_core_tradeoff.ipynb ("Granularity") and chapters/04_in_practice.ipynb
("A five-line recipe").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from .formats import BlockFormat, CodebookFormat, FloatFormat, Format, FormatLike, IntFormat, codebook, get_format
from .packing import packed_nbytes
from .validate import check_bool, check_int, check_positive_int

__all__ = [
    "DEFAULT_SCALE_DTYPE",
    "EXACT_SCALE_DTYPE",
    "SCALE_DTYPES",
    "GRANULARITIES",
    "PerTensor",
    "PerAxis",
    "PerGroup",
    "Granularity",
    "DoubleQuant",
    "QuantScheme",
    "SchemeLike",
    "as_scheme",
    "rowwise_recipe",
    "refuse_keywords_beside",
]

#: The dtype scales are stored in unless a recipe says otherwise (see the module docstring).
DEFAULT_SCALE_DTYPE = "fp16"
#: The scales of the primitives (:func:`~quantlab.core.quantize.quantize`, ``choose_qparams``,
#: ``fake_quantize``) called without a recipe: exact float32, as torchao's primitives keep the
#: input's dtype. They compute; a recipe stores.
EXACT_SCALE_DTYPE = "fp32"
#: The dtypes a scale can be stored in, by name.
SCALE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
#: The granularity names.
GRANULARITIES = ("tensor", "channel", "group")


@dataclass(frozen=True)
class PerTensor:
    """One scale for the whole tensor."""

    name = "tensor"


@dataclass(frozen=True)
class PerAxis:
    """One scale per index along ``axis`` (``axis=0``: one per output row of a weight matrix)."""

    axis: int = 0
    name = "channel"

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", check_int(self.axis, "axis", what="an int"))


@dataclass(frozen=True)
class PerGroup:
    """One scale per ``group_size`` consecutive elements along the last axis."""

    group_size: int
    name = "group"

    def __post_init__(self) -> None:
        object.__setattr__(self, "group_size", check_positive_int(self.group_size, "group_size"))


#: A typed granularity.
Granularity = Union[PerTensor, PerAxis, PerGroup]


def _format_bits(fmt: Any, name: str) -> int:
    """The bit width of a format name, for the storage of scales and zero points."""
    if not isinstance(fmt, (str, Format)):
        raise TypeError(f"{name} must be a format name, got {type(fmt).__name__} {fmt!r}")
    try:
        return int(get_format(fmt).bits)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


@dataclass(frozen=True)
class DoubleQuant:
    """Second-level quantization of the per-group scales (QLoRA's "double quantization").

    The first-level scales (one per ``group_size`` weights) are themselves quantized to
    ``dtype``, in blocks of ``block_size`` scales, each block with one scale of its own
    stored in ``scale_dtype``. Per weight this costs

        bits(dtype) / group_size + bits(scale_dtype) / (group_size * block_size)

    QLoRA's NF4 (``group_size=64``, 8-bit scales, ``block_size=256``, fp32 second-level
    scales) gives 4 + 8/64 + 32/(64*256) = 4.127 bits per weight.

    Attributes:
        dtype: format the first-level scales are stored in (default "int8", 8 bits).
        block_size: number of first-level scales that share one second-level scale.
        scale_dtype: format of the second-level scale (default "fp32", as QLoRA).

    Taught in: chapters/01_why_quantization.ipynb, "The formats side by side".
    """

    dtype: str = "int8"
    block_size: int = 256
    scale_dtype: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_size", check_int(self.block_size, "DoubleQuant.block_size", minimum=1))
        object.__setattr__(self, "dtype", _format_name(self.dtype, "DoubleQuant.dtype"))
        object.__setattr__(self, "scale_dtype", _format_name(self.scale_dtype, "DoubleQuant.scale_dtype"))

    def bits_per_scale(self) -> float:
        """Bits each first-level scale costs: ``bits(dtype) + bits(scale_dtype) / block_size``."""
        return _format_bits(self.dtype, "dtype") + _format_bits(self.scale_dtype, "scale_dtype") / self.block_size


def _format_name(fmt: Any, name: str) -> str:
    """The registry name of a format given by name or object (``TypeError``/``ValueError`` naming ``name``)."""
    if isinstance(fmt, Format):
        try:
            same = get_format(fmt.name) == fmt
        except ValueError:
            same = False
        if not same:
            raise ValueError(f"{name} must be a format the registry names (fp16, int8, ...), got {fmt!r}")
        return fmt.name
    if not isinstance(fmt, str):
        raise TypeError(f"{name} must be a string, got {type(fmt).__name__} {fmt!r}")
    _format_bits(fmt, name)
    return get_format(fmt).name


def _format_json(fmt: Format) -> Any:
    """A format as JSON: its registry name, or a codebook's values and name."""
    try:
        if get_format(fmt.name) == fmt:
            return fmt.name
    except ValueError:
        pass
    if isinstance(fmt, CodebookFormat):
        return {"codebook": [float(v) for v in fmt.table], "name": fmt.name}
    raise ValueError(
        f"{fmt!r} is neither a registry format nor a codebook, so a scheme of it cannot be written as JSON"
    )


def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class QuantScheme:
    """How to store a tensor's values: format, granularity, and the storage of scales and zero points.

    Attributes:
        fmt: format name or object, e.g. ``"int8"``, ``"int4"``, ``"nf4"``, ``"fp8_e4m3"``,
            ``"fp16"``, ``"mxfp4"``; resolved to a :class:`~quantlab.core.formats.Format`.
        granularity: ``PerTensor()``, ``PerAxis(axis)``, ``PerGroup(group_size)``, or the names
            ``"tensor"``, ``"channel"``, ``"group"``; ``None`` (default) means per group if
            ``group_size`` is given, per channel (``axis``) for scaled formats, and a plain cast
            (no scale) for fp16 / bf16 / fp32. Stored as the resolved name (None for casts and
            block-scaled formats); :attr:`grain` is the typed form.
        group_size: elements per scale along the last axis (per group), a positive int.
        axis: the channel axis of a weight matrix (per channel): 0 = one scale per output row
            (default), 1 = one per input column; -2 and -1 name the same axes and are stored as
            0 and 1. Per tensor and per group it means nothing and is stored as 0.
        symmetric: absmax scaling (True) or min/max with a zero point (integer formats; other
            formats only with real-valued zero points, which are counted but not made).
        scale_dtype: ``"fp16"`` (:data:`DEFAULT_SCALE_DTYPE`), ``"bf16"`` or ``"fp32"``, which
            :func:`quantize` makes; any other format name (``"fp8_e4m3"``, ``"int8"``) describes
            a storage that :meth:`bits_per_weight` counts and :func:`quantize` refuses. Casts and
            block-scaled formats store no scale of this kind: theirs is kept at the default.
        zero_point_dtype: with ``symmetric=False``: ``None`` for integer zero points at the code
            width (what :func:`quantize` makes; the format's own name means the same), or a
            float format name for real-valued ones (HQQ, llama.cpp's Q4_1 "min"), counted by
            :meth:`bits_per_weight`.
        double_quant: quantize the scales too (QLoRA): a :class:`DoubleQuant`, ``True`` for
            its defaults, ``None``/``False`` for none; per-group schemes only. Counted by
            :meth:`bits_per_weight`; :func:`quantize` does not make it.

    Example:
        >>> QuantScheme("int4", group_size=128).label
        'int4 g128'
        >>> QuantScheme("int4", PerGroup(128)).bits_per_weight()
        4.125

    Raises:
        TypeError: a field of the wrong kind (e.g. ``group_size="32"``, ``symmetric=1``,
            ``axis=1.0``); each message names the field and the value.
        ValueError: unknown format, granularity or scale dtype; ``group_size`` not positive,
            or without per-group granularity; a granularity given for a 16/32-bit cast;
            ``symmetric=False`` for a format without integer codes; ``zero_point_dtype``
            without ``symmetric=False``; ``double_quant`` without per-group scales.

    Taught in: chapters/04_in_practice.ipynb, "A five-line recipe".
    """

    fmt: FormatLike = "int8"
    granularity: Union[str, Granularity, None] = None
    group_size: Optional[int] = None
    axis: int = 0
    symmetric: bool = True
    scale_dtype: str = DEFAULT_SCALE_DTYPE
    zero_point_dtype: Optional[str] = None
    double_quant: Union[DoubleQuant, bool, None] = None

    def __post_init__(self) -> None:
        fmt = get_format(self.fmt)
        object.__setattr__(self, "fmt", fmt)
        self._take_typed_granularity()
        object.__setattr__(self, "scale_dtype", _format_name(self.scale_dtype, "scale_dtype"))
        if self.granularity is not None and not isinstance(self.granularity, str):
            raise TypeError(
                "granularity must be PerTensor(), PerAxis(axis), PerGroup(group_size), a name or None, "
                f"got {type(self.granularity).__name__} {self.granularity!r}"
            )
        if self.granularity is not None and self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be 'tensor', 'channel', 'group' or None, got {self.granularity!r}")
        if self.group_size is not None:
            if not _is_int(self.group_size):
                raise TypeError(
                    f"group_size must be a positive int or None, got "
                    f"{type(self.group_size).__name__} {self.group_size!r}"
                )
            if self.group_size <= 0:
                raise ValueError(f"group_size must be a positive int, got {self.group_size!r}")
            object.__setattr__(self, "group_size", int(self.group_size))
        if not _is_int(self.axis):
            raise TypeError(f"axis must be an int, got {type(self.axis).__name__} {self.axis!r}")
        if self.axis not in (0, 1, -1, -2):
            raise ValueError(f"axis must be 0 (output rows) or 1 (input columns), got {self.axis!r}")
        object.__setattr__(self, "axis", int(self.axis) % 2)  # a weight's axes: -2 is 0, -1 is 1
        object.__setattr__(self, "symmetric", check_bool(self.symmetric, "symmetric"))
        if self.zero_point_dtype is not None:
            zp = _format_name(self.zero_point_dtype, "zero_point_dtype")
            object.__setattr__(self, "zero_point_dtype", None if zp == fmt.name else zp)  # the code width
        if isinstance(fmt, BlockFormat):
            if self.granularity not in (None, "group") or self.group_size not in (None, fmt.block_size):
                raise ValueError(
                    f"{fmt.name} brings its own scales, one per block of {fmt.block_size}: leave granularity and "
                    f"group_size out (or give group_size={fmt.block_size}), got granularity={self.granularity!r}, "
                    f"group_size={self.group_size!r}"
                )
            if self.scale_dtype not in (DEFAULT_SCALE_DTYPE, fmt.scale_format):
                raise ValueError(
                    f"{fmt.name} stores its block scales as {fmt.scale_format}: leave scale_dtype at its default, "
                    f"got {self.scale_dtype!r}"
                )
            object.__setattr__(self, "granularity", None)
            object.__setattr__(self, "group_size", None)
            object.__setattr__(self, "scale_dtype", DEFAULT_SCALE_DTYPE)
        if self.is_cast and self.granularity == "tensor":  # a cast is one tensor with no scale
            object.__setattr__(self, "granularity", None)
        if self.is_cast:
            object.__setattr__(self, "scale_dtype", DEFAULT_SCALE_DTYPE)
        if self.is_cast and self.group_size is not None:
            raise ValueError(
                f"{fmt.name} is stored as a plain cast without scales, so group_size must be None, "
                f"got {self.group_size!r}"
            )
        if self.is_cast and self.granularity is not None:
            raise ValueError(
                f"{fmt.name} is stored as a plain cast without scales, so granularity must be None, "
                f"got {self.granularity!r}"
            )
        if self.group_size is not None and self.resolved_granularity != "group":
            raise ValueError(f"group_size={self.group_size} needs granularity='group', got {self.granularity!r}")
        if self.resolved_granularity == "group" and self.group_size is None and not self.is_block:
            raise ValueError("granularity='group' needs group_size, got None")
        if self.zero_point_dtype is not None and self.symmetric:
            raise ValueError(
                f"zero_point_dtype={self.zero_point_dtype!r} needs symmetric=False (a symmetric scheme "
                "stores no zero point)"
            )
        if not self.symmetric and not isinstance(fmt, IntFormat) and self.zero_point_dtype is None:
            raise ValueError(
                f"symmetric=False (a zero point) needs an integer format, or real-valued zero points "
                f"(zero_point_dtype='fp16', say), got fmt={fmt.name!r}"
            )
        dq = self.double_quant
        if dq is True:
            object.__setattr__(self, "double_quant", DoubleQuant())
        elif dq is False:
            object.__setattr__(self, "double_quant", None)
        elif dq is not None and not isinstance(dq, DoubleQuant):
            raise TypeError(f"double_quant must be a DoubleQuant, True, False or None, got {type(dq).__name__} {dq!r}")
        if self.double_quant is not None and (self.resolved_granularity != "group" or self.is_block):
            raise ValueError(f"double_quant needs per-group scales (a group_size), got {self.label!r}")
        if not (self.is_cast or self.is_block):  # one spelling per recipe, so equal recipes compare equal
            object.__setattr__(self, "granularity", self.resolved_granularity)
        if self.granularity != "channel":
            object.__setattr__(self, "axis", 0)

    def _take_typed_granularity(self) -> None:
        """Turn ``PerTensor()`` / ``PerAxis(a)`` / ``PerGroup(g)`` into the name and its field."""
        g = self.granularity
        if isinstance(g, PerTensor):
            object.__setattr__(self, "granularity", "tensor")
        elif isinstance(g, PerAxis):
            if self.axis != 0 and _is_int(self.axis) and self.axis % 2 != g.axis % 2:
                raise ValueError(f"axis={self.axis} contradicts granularity={g!r}")
            object.__setattr__(self, "granularity", "channel")
            object.__setattr__(self, "axis", g.axis)
        elif isinstance(g, PerGroup):
            if self.group_size is not None and self.group_size != g.group_size:
                raise ValueError(f"group_size={self.group_size!r} contradicts granularity={g!r}")
            object.__setattr__(self, "granularity", "group")
            object.__setattr__(self, "group_size", g.group_size)

    # ----------------------------------------------------------------------- what it is

    @property
    def is_cast(self) -> bool:
        """True for fp16 / bf16 / fp32: the value is cast, no scale is stored."""
        return isinstance(self.fmt, FloatFormat) and self.fmt.bits >= 16

    @property
    def is_block(self) -> bool:
        """True for block-scaled formats (MXFP4, NVFP4, ...), which bring their own scales."""
        return isinstance(self.fmt, BlockFormat)

    @property
    def resolved_granularity(self) -> str:
        """The granularity name actually used (``"tensor"`` for casts)."""
        if self.granularity is not None:
            return self.granularity
        if self.is_cast:
            return "tensor"
        if self.is_block:
            return "group"
        return "group" if self.group_size is not None else "channel"

    @property
    def grain(self) -> Granularity:
        """The granularity as a typed object: ``PerTensor()``, ``PerAxis(axis)`` or ``PerGroup(g)``."""
        g = self.resolved_granularity
        if self.is_block:
            return PerGroup(self.fmt.block_size)
        if g == "tensor":
            return PerTensor()
        if g == "channel":
            return PerAxis(self.axis)
        return PerGroup(self.group_size)

    @property
    def label(self) -> str:
        """A short name for tables: ``"int8 per-channel"``, ``"int4 g128"``, ``"fp16"``."""
        name = self.fmt.name
        if self.is_cast or self.is_block:
            return name
        g = self.resolved_granularity
        tail = f"g{self.group_size}" if g == "group" else f"per-{g}"
        return f"{name} {tail}" + ("" if self.symmetric else " asym")

    def __str__(self) -> str:
        return self.label

    # ----------------------------------------------------------------------- what it costs

    def bits_per_weight(self, shape: Optional[Sequence[int]] = None) -> float:
        """Storage bits per element, scales and zero points included.

        Without a ``shape``, the average over whole groups:
        ``b(fmt) + (b(scale_dtype) + b(zero point)) / n`` with ``n = group_size``; one scale per
        tensor is counted as free (a single number beside millions), and a per-channel scheme
        has no answer (it depends on the row length). Block-scaled formats: their own
        ``bits_per_weight`` (MXFP4: 4.25).

        With a ``shape``, exactly ``8 * nbytes / numel`` of the packed
        :class:`~quantlab.core.qtensor.QTensor` that ``quantize(x, self)`` makes for a tensor of
        that shape: codes, scales and zero points each packed on their own and rounded up to whole
        bytes, NVFP4's fp32 tensor scale included; an empty shape costs the format's bits. Double
        quantization, which :func:`quantize` does not make, is counted by its formula.

        Known answers: int4 g128 with fp16 scales = 4 + 16/128 = 4.125; Q4_0 (int4, fp16 per
        32) = 4.5; NF4 with fp32 per 64 = 4.5; NF4 with double quantization = 4.127;
        int8 per channel on a (1536, 384) weight = 8 + 16/384.

        Args:
            shape: the tensor's shape, e.g. ``(out_features, in_features)``; needed per channel.

        Raises:
            ValueError: a per-channel scheme without ``shape``; a shape that does not fit the
                granularity (fewer than 2 dimensions for ``axis=1``, a last dimension that is
                not a multiple of ``group_size`` or of a block format's block size).
            TypeError: ``shape`` not a sequence of ints.

        Taught in: chapters/01_why_quantization.ipynb, "The formats side by side".
        """
        dims = None if shape is None else self._check_shape(shape)
        fmt = self.fmt
        if dims is None:
            return self._average_bits()
        numel = int(np.prod(dims, dtype=np.int64)) if dims else 1
        if numel == 0 or self.is_cast:
            return float(fmt.bits)
        total = packed_nbytes(numel, fmt.bits)
        if isinstance(fmt, BlockFormat):
            total += (numel // fmt.block_size) * fmt.scale_bits // 8 + (4 if fmt.tensor_scale else 0)
            return 8 * total / numel
        g = self.resolved_granularity
        n_scales = 1 if g == "tensor" else dims[self.axis] if g == "channel" else numel // self.group_size
        if self.double_quant is not None:
            total += n_scales * self.double_quant.bits_per_scale() / 8
        else:
            total += packed_nbytes(n_scales, _format_bits(self.scale_dtype, "scale_dtype"))
        if not self.symmetric:
            total += packed_nbytes(n_scales, _format_bits(self.zero_point_dtype or fmt.name, "zero_point_dtype"))
        return 8 * total / numel

    def _average_bits(self) -> float:
        """Bits per weight over whole groups, without a shape (see :meth:`bits_per_weight`)."""
        fmt = self.fmt
        if isinstance(fmt, BlockFormat):
            return float(fmt.bits_per_weight)
        bits = float(fmt.bits)
        g = self.resolved_granularity
        if self.is_cast or g == "tensor":
            return bits
        if g == "channel":
            raise ValueError(
                f"{self.label}: the cost of one scale per channel depends on the channel length; "
                "pass shape=(out_features, in_features), or use a group_size"
            )
        scale_bits = (
            self.double_quant.bits_per_scale()
            if self.double_quant is not None
            else _format_bits(self.scale_dtype, "scale_dtype")
        )
        zp_bits = 0 if self.symmetric else _format_bits(self.zero_point_dtype or fmt.name, "zero_point_dtype")
        return bits + (scale_bits + zp_bits) / self.group_size

    def _check_shape(self, shape: Any) -> tuple[int, ...]:
        if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
            raise TypeError(f"shape must be a sequence of ints, got {type(shape).__name__} {shape!r}")
        dims = tuple(check_int(d, "shape", minimum=0, what="a sequence of ints") for d in shape)
        g = self.resolved_granularity
        if g == "channel" and not self.is_cast and len(dims) < 2 and self.axis == 1:
            raise ValueError(f"{self.label}: axis=1 does not exist in a tensor of shape {dims}")
        if g == "channel" and not self.is_cast and not dims:
            raise ValueError(f"{self.label}: one scale per channel needs at least a 1-d shape, got {dims}")
        last = self.fmt.block_size if self.is_block else self.group_size
        if g == "group" and (not dims or dims[-1] % last):
            what = f"the block size {last} of {self.fmt.name}" if self.is_block else f"group_size={last}"
            raise ValueError(f"{self.label}: the last dimension of shape {dims} must be a multiple of {what}")
        return dims

    # ----------------------------------------------------------------------- how to make it

    def qparams_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~quantlab.core.quantize.quantize` (and GPTQ/AWQ) that make this scheme.

        Raises:
            ValueError: a part :func:`quantize` does not make (real-valued zero points, double
                quantization, scales in a dtype other than fp16/bf16/fp32): those recipes are for
                counting bits, or for :mod:`quantlab.hqq`.
        """
        if self.is_cast:
            return {"scaled": False}
        if self.zero_point_dtype is not None:
            raise ValueError(
                f"{self.label}: zero_point_dtype={self.zero_point_dtype!r} (real-valued zero points) is not "
                "made by quantize(); quantlab.algorithms.hqq makes such zero points"
            )
        if not self.is_block and self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(
                f"{self.label}: scale_dtype={self.scale_dtype!r} is counted by bits_per_weight(), but quantize() "
                f"stores scales only as {tuple(SCALE_DTYPES)}"
            )
        if self.double_quant is not None:
            raise ValueError(
                f"{self.label}: double quantization is counted by bits_per_weight(), not made by quantize()"
            )
        if self.is_block:
            return {}
        kw: dict[str, Any] = {
            "granularity": self.resolved_granularity,
            "symmetric": self.symmetric,
            "scale_dtype": self.scale_dtype,
        }
        if kw["granularity"] == "channel":
            kw["axis"] = self.axis
        if kw["granularity"] == "group":
            kw["group_size"] = self.group_size
        return kw

    def quantize(self, x: Any, qparams: Any = None) -> Any:
        """Quantize ``x`` with this scheme (round-to-nearest): ``quantize(x, self)``.

        Args:
            x: float tensor (or numpy array), e.g. a weight of shape ``(out_features, in_features)``.
            qparams: reuse scales chosen elsewhere (e.g. by GPTQ) instead of absmax/min-max.

        Returns:
            The :class:`~quantlab.core.quantize.QTensor`.
        """
        from .quantize import quantize  # quantize imports this module

        if qparams is not None:
            return quantize(x, self.fmt, qparams=qparams)
        return quantize(x, self.fmt, **self.qparams_kwargs())

    # ----------------------------------------------------------------------- serialization

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back (``from_dict(s.to_dict()) == s``)."""
        dq = self.double_quant
        return {
            "fmt": _format_json(self.fmt),
            "granularity": None if self.is_cast else self.resolved_granularity,
            "group_size": self.group_size,
            "axis": self.axis,
            "symmetric": self.symmetric,
            "scale_dtype": self.scale_dtype,
            "zero_point_dtype": self.zero_point_dtype,
            "double_quant": None
            if dq is None
            else {"dtype": dq.dtype, "block_size": dq.block_size, "scale_dtype": dq.scale_dtype},
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantScheme:
        """The scheme a :meth:`to_dict` dict describes.

        Raises:
            TypeError: ``data`` not a dict.
            ValueError: unknown keys, or fields :class:`QuantScheme` refuses.
        """
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
        known = {
            "fmt",
            "granularity",
            "group_size",
            "axis",
            "symmetric",
            "scale_dtype",
            "zero_point_dtype",
            "double_quant",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"data has unknown keys {unknown}; a scheme has {sorted(known)}")
        kw = dict(data)
        if isinstance(kw.get("fmt"), dict):
            fmt = kw["fmt"]
            if set(fmt) != {"codebook", "name"}:
                raise ValueError(
                    f"data['fmt'] must be a format name or {{'codebook': [...], 'name': ...}}, got {fmt!r}"
                )
            kw["fmt"] = codebook(fmt["codebook"], fmt["name"])
        if isinstance(kw.get("double_quant"), dict):
            kw["double_quant"] = DoubleQuant(**kw["double_quant"])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> QuantScheme:
        """The scheme a :meth:`to_json` string describes."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls.from_dict(json.loads(text))


#: A scheme, or a format or its name (then ``QuantScheme(fmt)``: per-channel scales).
SchemeLike = Union[FormatLike, QuantScheme]


def as_scheme(scheme: SchemeLike) -> QuantScheme:
    """``scheme`` as a :class:`QuantScheme`: passed through, or a format (name) with the
    scheme's defaults (``QuantScheme("int4")`` is per channel with fp16 scales).

    Raises:
        TypeError: neither a QuantScheme nor a format or format name.
    """
    if isinstance(scheme, QuantScheme):
        return scheme
    if isinstance(scheme, (str, Format)):
        return QuantScheme(scheme)
    raise TypeError(f"scheme must be a QuantScheme or a format name, got {type(scheme).__name__}")


def refuse_keywords_beside(scheme: QuantScheme, given: dict[str, Any], defaults: dict[str, Any], who: str) -> None:
    """Refuse recipe keywords passed beside a scheme: the scheme says how to quantize.

    Every function that takes a :class:`QuantScheme` in place of its format calls this with the
    keywords as the caller passed them and their defaults.

    Raises:
        ValueError: a keyword that differs from its default, named with its value.
    """
    changed = sorted(k for k, v in given.items() if v != defaults[k])
    if changed:
        raise ValueError(
            f"{who}: fmt is a QuantScheme ({scheme.label}); give {', '.join(changed)} inside it, not beside it, "
            f"got {', '.join(f'{k}={given[k]!r}' for k in changed)}"
        )


def rowwise_recipe(
    fmt: Any, given: dict[str, Any], defaults: dict[str, Any], who: str, *, real_zero_points: bool = False
) -> tuple[FormatLike, dict[str, Any]]:
    """Read a :class:`QuantScheme` given to an algorithm that quantizes a weight row by row
    (GPTQ, AWQ, HQQ, imatrix), in place of its format.

    Args:
        fmt: a scheme, or a format (name): then ``(fmt, given)`` come back unchanged.
        given: the algorithm's recipe keywords as the caller passed them, out of
            ``group_size``, ``symmetric`` and ``scale_dtype``.
        defaults: the same keywords' defaults; beside a scheme each must be left there.
        who: the function's name, for messages.
        real_zero_points: the algorithm stores real-valued zero points in the scale dtype
            (HQQ): the scheme must say so (``symmetric=False, zero_point_dtype=scale_dtype``).
            Otherwise zero points are integers at the code width (``zero_point_dtype=None``).

    Returns:
        ``(format, keywords)``: with a scheme, its format and ``group_size`` (None: one scale
        per output row), ``symmetric`` and ``scale_dtype``, for the keys of ``given``.

    Raises:
        ValueError: keywords beside a scheme that differ from their defaults; a scheme whose
            scales are not per group or per output row (``PerAxis(0)``); a part of the scheme
            the algorithm does not make (double quantization, scales other than fp16/bf16/fp32,
            zero points of another kind), each named with its value.
    """
    if not isinstance(fmt, QuantScheme):
        return fmt, given
    refuse_keywords_beside(fmt, given, defaults, who)
    g = fmt.resolved_granularity
    if fmt.is_cast or fmt.is_block or g == "tensor" or (g == "channel" and fmt.axis != 0):
        raise ValueError(
            f"{who} quantizes a weight row by row: the scheme needs per-group scales or one per output row "
            f"(PerAxis(0)), got {fmt.label!r}"
        )
    if fmt.double_quant is not None:
        raise ValueError(
            f"{who} stores its scales as they are: the scheme's double_quant must be None, got {fmt.double_quant!r}"
        )
    if fmt.scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"{who} stores scales as {tuple(SCALE_DTYPES)}, got scale_dtype={fmt.scale_dtype!r}")
    if real_zero_points and (fmt.symmetric or fmt.zero_point_dtype != fmt.scale_dtype):
        raise ValueError(
            f"{who} optimises real-valued zero points stored like the scales: the scheme must be symmetric=False "
            f"with zero_point_dtype={fmt.scale_dtype!r}, got symmetric={fmt.symmetric}, "
            f"zero_point_dtype={fmt.zero_point_dtype!r}"
        )
    if not real_zero_points and fmt.zero_point_dtype is not None:
        raise ValueError(
            f"{who} stores integer zero points at the code width: the scheme's zero_point_dtype must be None, "
            f"got {fmt.zero_point_dtype!r}"
        )
    values = {
        "group_size": fmt.group_size if g == "group" else None,
        "symmetric": fmt.symmetric,
        "scale_dtype": fmt.scale_dtype,
    }
    return fmt.fmt, {k: values[k] for k in given}
