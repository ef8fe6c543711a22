"""choose_qparams / quantize / dequantize: the core of quantization.

Integer formats use the affine map (torchao's order of operations: scale, round, add the
zero point, clamp, then cast)::

    code  = clamp(round(x / scale) + zero_point, qmin, qmax)
    x_hat = (code - zero_point) * scale

* **symmetric** (default): ``zero_point = 0`` and ``scale = absmax / qmax``, so ``+absmax``
  lands exactly on the top code.
* **asymmetric**: the range ``[min(x_min, 0), max(x_max, 0)]`` (it always contains 0, so
  zero is stored exactly) is spread over all ``2^bits`` codes:
  ``scale = (max - min) / (qmax - qmin)``, ``zero_point = qmin - round(min / scale)``.

Float and codebook formats are symmetric: ``scale = absmax / fmt.max_value`` and the
code is the format's encoding of ``x / scale`` (rounded to nearest, ties to even).
fp32, fp16 and bf16 are *cast* without a scale by default (``scaled=None``).

Granularity decides which elements share one scale:

* ``"tensor"``: one scale for everything; ``scale.shape == ()``.
* ``"channel"``: one per index along ``axis``; ``scale.shape == (x.shape[axis],)``.
* ``"group"``: consecutive blocks of ``group_size`` along the last axis;
  ``scale.shape == (*x.shape[:-1], x.shape[-1] // group_size)``.

Calibration hooks shrink the range before the scale is computed: ``clip_ratio`` (a fixed
fraction of absmax, or of the min/max range) and ``percentile`` (use that percentile of
``|x|`` -- or of ``x`` at both ends, asymmetric -- instead of the extreme values).

Policies: NaN or infinity in ``x`` raises ``ValueError`` whenever a scale is computed (a
NaN would otherwise poison a whole group's scale silently); the unscaled casts to fp16 /
bf16 / fp32 pass them through like torch's casts do. An empty tensor quantizes to an
empty :class:`QTensor` with unit scales. A constant tensor never divides by zero: the
scale has a floor of the smallest normal number of its dtype.

Taught in: chapters/02_explorer.ipynb ("What you just saw") and
chapters/03_core_tradeoff.ipynb ("Granularity").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch

from ._backend import ArrayLike, as_tensor, like_input, require_float
from .formats import CodebookFormat, FloatFormat, Format, FormatLike, IntFormat, get_format
from ._fast import row_chunks
from .packing import pack, packed_nbytes

__all__ = [
    "QParams",
    "QTensor",
    "choose_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "GRANULARITIES",
    "SCALE_DTYPES",
]

GRANULARITIES = ("tensor", "channel", "group")
SCALE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
_DTYPE_BITS = {torch.float32: 32, torch.float16: 16, torch.bfloat16: 16}


@dataclass
class QParams:
    """Quantization parameters of one tensor.

    Attributes:
        scale: float tensor in the *broadcast* shape (see :meth:`QParams.view_shape`);
            stored values are exactly representable in ``scale_dtype``.
        zero_point: integer tensor of the same shape, or None (symmetric / float formats).
        format: the number format.
        granularity, axis, group_size: how elements share parameters.
        scale_dtype: the dtype the scales are stored in (``"fp32"``, ``"fp16"``, ``"bf16"``).
    """

    scale: Optional[torch.Tensor]
    zero_point: Optional[torch.Tensor]
    format: Format
    granularity: str
    axis: int
    group_size: Optional[int]
    scale_dtype: str = "fp32"


# --------------------------------------------------------------------------- validation


def _check_args(
    t: torch.Tensor, fmt: Format, granularity: str, axis: int, group_size: Optional[int],
    symmetric: bool, clip_ratio: float, percentile: Optional[float], scale_dtype: str,
) -> tuple[int, Optional[int]]:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if not isinstance(symmetric, (bool, np.bool_)):
        raise TypeError(f"symmetric must be True or False, got {symmetric!r}")
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {tuple(SCALE_DTYPES)}, got {scale_dtype!r}")
    if isinstance(clip_ratio, bool) or not isinstance(clip_ratio, (int, float)):
        raise TypeError(f"clip_ratio must be a number in (0, 1], got {clip_ratio!r}")
    if not 0 < clip_ratio <= 1:
        raise ValueError(f"clip_ratio must be in (0, 1], got {clip_ratio}")
    if percentile is not None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)):
            raise TypeError(f"percentile must be a number in (0, 100], got {percentile!r}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if not symmetric and not isinstance(fmt, IntFormat):
        raise ValueError(
            f"symmetric=False (a zero point) needs an integer format, got {fmt.name}"
        )
    if isinstance(fmt, IntFormat) and symmetric and fmt.signed and fmt.bits == 1:
        raise ValueError(
            "int1 has no positive code, so it cannot be symmetric: use symmetric=False "
            "(two levels spanning the range) or a 1-bit codebook such as "
            "codebook([-1, 1], 'binary')"
        )
    ndim = t.dim()
    if granularity == "channel":
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axis must be an int, got {axis!r}")
        if ndim == 0 or not -ndim <= axis < ndim:
            raise ValueError(f"axis must be in [-{ndim}, {ndim - 1}] for a {ndim}-d tensor, got {axis}")
        axis = int(axis) % ndim
    if granularity == "group":
        if group_size is None:
            raise ValueError("granularity='group' needs group_size, got None")
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
            raise TypeError(f"group_size must be a positive int, got {group_size!r}")
        if group_size <= 0:
            raise ValueError(f"group_size must be positive, got {group_size}")
        if ndim == 0:
            raise ValueError("granularity='group' needs at least a 1-d tensor, got a 0-d tensor")
        n = t.shape[-1]
        if n % group_size != 0:
            raise ValueError(f"group_size must divide the last dimension {n}, got {group_size}")
        group_size = int(group_size)
    elif group_size is not None and granularity != "group":
        raise ValueError(
            f"group_size={group_size} is only used with granularity='group', got granularity={granularity!r}"
        )
    return int(axis) if granularity == "channel" else 0, group_size


# --------------------------------------------------------------------------- shapes


def _grouped(t: torch.Tensor, granularity: str, axis: int, group_size: Optional[int]) -> torch.Tensor:
    """View ``t`` so that the scale broadcasts: groups become their own axis."""
    if granularity == "group":
        return t.reshape(*t.shape[:-1], t.shape[-1] // group_size, group_size)
    return t


def _reduce_dims(t: torch.Tensor, granularity: str, axis: int) -> tuple[int, ...]:
    if granularity == "tensor":
        return tuple(range(t.dim()))
    if granularity == "channel":
        return tuple(d for d in range(t.dim()) if d != axis)
    return (t.dim() - 1,)  # grouped view: reduce within each group


def _kth(v: torch.Tensor, dims: tuple[int, ...], q: float, largest: bool) -> torch.Tensor:
    """The ``q``-quantile (0..1) of ``v`` over ``dims`` by order statistic (keepdim)."""
    keep = [d for d in range(v.dim()) if d not in dims]
    moved = v.permute(*keep, *dims)
    flat = moved.reshape(*[v.shape[d] for d in keep], -1)
    n = flat.shape[-1]
    k = min(n, max(1, math.ceil(q * n))) if largest else max(1, min(n, math.floor((1 - q) * n) + 1))
    out = flat.kthvalue(k, dim=-1).values
    shape = [1 if d in dims else v.shape[d] for d in range(v.dim())]
    return out.reshape(shape)


# --------------------------------------------------------------------------- qparams


def _default_scaled(fmt: Format) -> bool:
    return not (isinstance(fmt, FloatFormat) and fmt.bits >= 16)


def choose_qparams(
    x: ArrayLike,
    fmt: FormatLike = "int8",
    *,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: Optional[int] = None,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    percentile: Optional[float] = None,
    scale_dtype: str = "fp32",
) -> QParams:
    """Choose ``scale`` (and ``zero_point``) for ``x`` from its absmax or min/max.

    Args:
        x: float array or tensor, any shape.
        fmt: format name or object (see :func:`quantlab.formats.get_format`).
        granularity: ``"tensor"``, ``"channel"`` or ``"group"``.
        axis: the channel axis for ``granularity="channel"`` (negative counts from the end).
        group_size: elements per group along the last axis (``granularity="group"``).
        symmetric: absmax scaling with zero point 0 (True) or min/max with a zero point.
        clip_ratio: multiply the measured range by this factor in (0, 1] (clipping).
        percentile: if given, measure the range at this percentile instead of the extremes.
        scale_dtype: dtype the scales are stored in: ``"fp32"``, ``"fp16"`` or ``"bf16"``.

    Returns:
        :class:`QParams` with ``scale`` shaped to broadcast against the grouped view of ``x``.

    Raises:
        TypeError, ValueError: see the module docstring; each names the parameter.
    """
    fmt = get_format(fmt)
    t, _ = as_tensor(x)
    require_float(t)
    axis, group_size = _check_args(
        t, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype
    )
    work = t if t.dtype in (torch.float32, torch.float64) else t.float()
    return _choose(work, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype)


def _choose(
    t: torch.Tensor, fmt: Format, granularity: str, axis: int, group_size: Optional[int],
    symmetric: bool, clip_ratio: float, percentile: Optional[float], scale_dtype: str,
    stats: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> QParams:
    """The parameters for ``t``; ``stats`` = (max, min) over each group if already measured."""
    g = _grouped(t, granularity, axis, group_size)
    dims = _reduce_dims(g, granularity, axis)
    stat_shape = [1 if d in dims else g.shape[d] for d in range(g.dim())]
    sdt = SCALE_DTYPES[scale_dtype]
    if t.numel() == 0:
        scale = torch.ones(stat_shape, dtype=torch.float32)
        zp = None if symmetric else torch.zeros(stat_shape, dtype=torch.int32)
        return QParams(scale, zp, fmt, granularity, axis, group_size, scale_dtype)
    if stats is not None:
        hi, lo = stats
    elif percentile is not None and percentile < 100:
        if symmetric:
            hi = _kth(g.abs(), dims, percentile / 100, largest=True)
            lo = -hi
        else:
            hi = _kth(g, dims, percentile / 100, largest=True)
            lo = _kth(g, dims, percentile / 100, largest=False)
    else:
        hi = g.amax(dim=dims, keepdim=True)
        lo = g.amin(dim=dims, keepdim=True)
    if not (bool(torch.isfinite(hi).all()) and bool(torch.isfinite(lo).all())):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"x contains NaN or infinity ({bad} of {t.numel()} values); quantization with a "
            "scale needs finite values"
        )
    hi = hi.to(torch.float64)
    lo = lo.to(torch.float64)
    tiny = torch.finfo(sdt).tiny
    if isinstance(fmt, IntFormat) and not symmetric:
        lo = torch.clamp(lo, max=0.0) * clip_ratio
        hi = torch.clamp(hi, min=0.0) * clip_ratio
        scale = (hi - lo) / (fmt.qmax - fmt.qmin)
        scale = _store(torch.clamp(scale, min=tiny), sdt)
        zp = torch.clamp(fmt.qmin - torch.round(lo / scale.double()), fmt.qmin, fmt.qmax)
        return QParams(scale, zp.to(torch.int32), fmt, granularity, axis, group_size, scale_dtype)
    absmax = torch.maximum(hi.abs(), lo.abs()) * clip_ratio
    if isinstance(fmt, IntFormat):
        if fmt.signed:
            scale = absmax / fmt.qmax
            zp = None
        else:  # unsigned and symmetric: zero sits mid-range (as torch's quint8 observers do)
            scale = absmax / ((fmt.qmax - fmt.qmin) / 2)
            zp = torch.full(stat_shape, (fmt.qmax + fmt.qmin + 1) // 2, dtype=torch.int32)
    else:
        scale = absmax / fmt.max_value
        zp = None
    scale = _store(torch.clamp(scale, min=tiny), sdt)
    return QParams(scale, zp, fmt, granularity, axis, group_size, scale_dtype)


def _store(scale: torch.Tensor, sdt: torch.dtype) -> torch.Tensor:
    """Round scales to their storage dtype (never to zero), returned as float32."""
    s = scale.to(sdt)
    s = torch.where(s > 0, s, torch.full_like(s, torch.finfo(sdt).tiny))
    return s.float()


# --------------------------------------------------------------------------- QTensor


@dataclass
class QTensor:
    """A quantized tensor: codes plus everything needed to get the values back.

    Attributes:
        codes: integer tensor with the shape of the original (unpacked, one code per
            element): integer codes, float bit patterns or codebook indices.
        scale: float32 tensor (values exact in ``scale_dtype``) in the public shape
            (``()``, ``(C,)`` or ``(*lead, n_groups)``), or None for an unscaled cast.
        zero_point: int32 tensor like ``scale``, or None.
        format: the number format.
        shape: the original shape.
        granularity, axis, group_size, scale_dtype: how it was quantized.
        dtype: the original floating dtype (``dequantize`` returns it).
        was_numpy: whether the input was a numpy array (``dequantize`` returns one then).
    """

    codes: torch.Tensor
    scale: Optional[torch.Tensor]
    zero_point: Optional[torch.Tensor]
    format: Format
    shape: tuple[int, ...]
    granularity: str = "tensor"
    axis: int = 0
    group_size: Optional[int] = None
    scale_dtype: str = "fp32"
    dtype: torch.dtype = torch.float32
    was_numpy: bool = False

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of real packed storage: codes at ``bits`` each, scales at ``scale_dtype``,
        zero points at the code width (each array packed on its own, rounded up to bytes)."""
        total = packed_nbytes(self.numel, self.format.bits)
        if self.scale is not None:
            total += self.scale.numel() * _DTYPE_BITS[SCALE_DTYPES[self.scale_dtype]] // 8
        if self.zero_point is not None:
            total += packed_nbytes(self.zero_point.numel(), self.format.bits)
        return total

    @property
    def bits_per_weight(self) -> float:
        """``8 * nbytes / numel``: the format's bits plus the overhead of scales."""
        if self.numel == 0:
            return float(self.format.bits)
        return 8 * self.nbytes / self.numel

    def packed(self) -> torch.Tensor:
        """The codes packed into bytes (see :func:`quantlab.packing.pack`)."""
        return pack(self.codes.reshape(-1), self.format.bits)

    def _broadcast(self, p: torch.Tensor) -> torch.Tensor:
        if self.granularity == "tensor":
            return p
        if self.granularity == "channel":
            shape = [1] * len(self.shape)
            shape[self.axis] = self.shape[self.axis]
            return p.reshape(shape)
        return p.unsqueeze(-1)

    def dequantize(self) -> ArrayLike:
        """Values back as floats in the original dtype and kind (numpy or torch).

        ``x_hat = (code - zero_point) * scale`` (integers) or ``decode(code) * scale``.
        """
        return like_input(self._dequantize_tensor(), self.was_numpy)

    def _dequantize_tensor(self) -> torch.Tensor:
        fmt = self.format
        if isinstance(fmt, IntFormat):
            vals = self.codes.to(torch.float32)
        else:
            vals = fmt.decode(self.codes)
        if self.scale is None:
            return vals.to(self.dtype)
        if self.granularity == "group":
            vals = vals.reshape(*self.shape[:-1], self.shape[-1] // self.group_size, self.group_size)
        if self.zero_point is not None:
            vals -= self._broadcast(self.zero_point).to(torch.float32)
        vals *= self._broadcast(self.scale)
        return vals.reshape(self.shape).to(self.dtype)

    def __repr__(self) -> str:
        return (
            f"QTensor(format={self.format.name}, shape={tuple(self.shape)}, "
            f"granularity={self.granularity!r}, bits_per_weight={self.bits_per_weight:.4g}, "
            f"nbytes={self.nbytes})"
        )


# --------------------------------------------------------------------------- quantize


def quantize(
    x: ArrayLike,
    fmt: FormatLike = "int8",
    *,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: Optional[int] = None,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    percentile: Optional[float] = None,
    scale_dtype: str = "fp32",
    scaled: Optional[bool] = None,
    qparams: Optional[QParams] = None,
) -> QTensor:
    """Quantize ``x`` to ``fmt``: choose the parameters, then encode every element.

    Args:
        x: float numpy array or torch tensor, any shape (float16/bfloat16/float32/float64).
        fmt: format name or object, e.g. ``"int4"``, ``"fp8_e4m3"``, ``"nf4"``.
        granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype:
            see :func:`choose_qparams`.
        scaled: use a scale (default: yes, except plain casts to fp32/fp16/bf16).
        qparams: reuse parameters chosen before (e.g. on calibration data) instead.

    Returns:
        A :class:`QTensor`; ``QTensor.dequantize()`` gives values of the same kind as ``x``.

    Example:
        >>> q = quantize(np.array([3.0, -1.5, 0.4]), "int3")  # absmax 3, qmax 3: scale 1
        >>> q.codes.tolist(), float(q.scale)  # -1.5 is a tie: rounds to the even code -2
        ([3, -2, 0], 1.0)
    """
    p = _prepare(x, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile,
                 scale_dtype, scaled, qparams)
    fmt, t = p.fmt, p.t
    if not p.scaled:
        return QTensor(fmt.encode(p.work), None, None, fmt, tuple(t.shape), "tensor", 0, None,
                       p.scale_dtype, t.dtype, p.was_numpy)
    qparams = p.qparams or _choose_prepared(p)
    g = _grouped(p.work, p.granularity, p.axis, p.group_size)
    v = g / qparams.scale.to(g.dtype)
    if isinstance(fmt, IntFormat):
        _int_grid_(v, fmt, qparams.zero_point, _clamp_needed(fmt, p, qparams))
        codes = v.to(fmt.code_dtype)
    else:
        if isinstance(fmt, FloatFormat):
            v.clamp_(-fmt.max_value, fmt.max_value)  # scaled floats saturate
        codes = fmt.encode(v)
    pub_scale = _public(qparams.scale, p.granularity)
    pub_zp = None if qparams.zero_point is None else _public(qparams.zero_point, p.granularity)
    return QTensor(codes.reshape(t.shape), pub_scale, pub_zp, fmt, tuple(t.shape), p.granularity,
                   p.axis, p.group_size, p.scale_dtype, t.dtype, p.was_numpy)


class _Prepared(NamedTuple):
    """Checked arguments of :func:`quantize` / :func:`fake_quantize`."""

    fmt: Format
    t: torch.Tensor  # the input as a tensor
    was_numpy: bool
    work: torch.Tensor  # float32/float64 view (or widened copy) of t
    granularity: str
    axis: int
    group_size: Optional[int]
    symmetric: bool
    clip_ratio: float
    percentile: Optional[float]
    scale_dtype: str
    scaled: bool
    qparams: Optional[QParams]  # given by the caller (checked), else None


def _prepare(
    x: ArrayLike, fmt: FormatLike, granularity: str, axis: int, group_size: Optional[int],
    symmetric: bool, clip_ratio: float, percentile: Optional[float], scale_dtype: str,
    scaled: Optional[bool], qparams: Optional[QParams],
) -> _Prepared:
    fmt = get_format(fmt)
    t, was_numpy = as_tensor(x)
    require_float(t)
    if qparams is not None:
        if not isinstance(qparams, QParams):
            raise TypeError(f"qparams must be a QParams, got {type(qparams).__name__}")
        if qparams.format != fmt:
            raise ValueError(f"qparams were chosen for {qparams.format.name}, got fmt={fmt.name}")
        granularity, axis, group_size = qparams.granularity, qparams.axis, qparams.group_size
        scale_dtype = qparams.scale_dtype
        symmetric = qparams.zero_point is None
    axis, group_size = _check_args(
        t, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype
    )
    if scaled is None:
        scaled = _default_scaled(fmt) if qparams is None else qparams.scale is not None
    work = t if t.dtype in (torch.float32, torch.float64) else t.float()
    if not scaled:
        if not isinstance(fmt, FloatFormat):
            raise ValueError(f"scaled=False is only for float formats, got {fmt.name}")
        if granularity != "tensor":
            raise ValueError(f"an unscaled cast has no granularity, got granularity={granularity!r}")
    elif qparams is not None:
        _check_qparams_shape(work, qparams)
    return _Prepared(fmt, t, was_numpy, work, granularity, axis, group_size, symmetric,
                     clip_ratio, percentile, scale_dtype, bool(scaled), qparams)


def _choose_prepared(
    p: _Prepared, stats: Optional[tuple[torch.Tensor, torch.Tensor]] = None
) -> QParams:
    return _choose(p.work, p.fmt, p.granularity, p.axis, p.group_size, p.symmetric,
                   p.clip_ratio, p.percentile, p.scale_dtype, stats)


def _int_grid_(
    v: torch.Tensor, fmt: IntFormat, zero_point: Optional[torch.Tensor], clamp: bool = True
) -> None:
    """In place: ``v = x / scale`` becomes ``clamp(round(v) + zero_point, qmin, qmax)``.

    The one integer quantizer: :func:`quantize` casts the result to codes,
    :func:`fake_quantize` maps it straight back to values. ``clamp=False`` only where
    :func:`_clamp_needed` proves the clamp changes nothing.
    """
    v.round_()
    if zero_point is not None:
        v += zero_point.to(v.dtype)
    if clamp:
        v.clamp_(fmt.qmin, fmt.qmax)


def _clamp_needed(fmt: IntFormat, p: _Prepared, qp: QParams) -> bool:
    """False when ``round(x / scale)`` provably stays within ``[qmin, qmax]``.

    That holds for symmetric signed integers whose fp32 scale was just measured from
    ``x`` itself without clipping: ``scale >= absmax / qmax * (1 - 2^-24)`` (one rounding
    of the quotient to float32, or the floor ``tiny``, which is larger), so
    ``|x / scale| <= qmax * (1 + 2^-23) < qmax + 1/2`` for every ``qmax < 2^21``: it rounds
    to at most ``qmax`` in magnitude, and ``-qmax > qmin``.
    """
    measured = p.qparams is None and p.clip_ratio == 1 and (p.percentile is None or p.percentile >= 100)
    return not (measured and fmt.signed and qp.zero_point is None and qp.scale_dtype == "fp32"
                and fmt.qmax < (1 << 21))


def _public(p: torch.Tensor, granularity: str) -> torch.Tensor:
    if granularity == "tensor":
        return p.reshape(())
    if granularity == "channel":
        return p.reshape(-1)
    return p.squeeze(-1)


def _check_qparams_shape(t: torch.Tensor, qp: QParams) -> None:
    g = _grouped(t, qp.granularity, qp.axis, qp.group_size)
    try:  # numpy's check costs ~2 us, torch's ~50 us: GPTQ calls this once per column
        shape = np.broadcast_shapes(tuple(g.shape), tuple(qp.scale.shape))
    except ValueError as err:
        raise ValueError(
            f"qparams with scale shape {tuple(qp.scale.shape)} do not fit x of shape {tuple(t.shape)}"
        ) from err
    if shape != tuple(g.shape):
        raise ValueError(
            f"qparams with scale shape {tuple(qp.scale.shape)} do not fit x of shape {tuple(t.shape)}"
        )


def dequantize(q: QTensor) -> ArrayLike:
    """Return the values a :class:`QTensor` stands for (same kind and dtype as its input)."""
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    return q.dequantize()


def fake_quantize(
    x: ArrayLike,
    fmt: FormatLike = "int8",
    *,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: Optional[int] = None,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    percentile: Optional[float] = None,
    scale_dtype: str = "fp32",
    scaled: Optional[bool] = None,
    qparams: Optional[QParams] = None,
    out: Optional[ArrayLike] = None,
) -> ArrayLike:
    """Quantize and dequantize in one call: ``dequantize(quantize(x, fmt, ...))``.

    Returns values of the same kind, shape and dtype as ``x`` that lie on ``fmt``'s grid,
    bit for bit what ``quantize(x, fmt, ...).dequantize()`` returns.

    Fast path (float32 input, integer or float format): the codes are never stored.
    The tensor is visited in cache-sized chunks (``quantlab._fast``): one pass measures
    each group's max and min, a second divides by the scale, rounds, clamps and multiplies
    back, all in place in the output -- so a large tensor crosses main memory about as
    often as in a copy. Pass ``out`` to reuse a buffer across calls (allocating a fresh
    64 MiB tensor costs more than the arithmetic). ``benchmarks/run.py`` measures it.

    Args:
        x: float numpy array or torch tensor, any shape.
        fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype,
            scaled, qparams: as in :func:`quantize`.
        out: optional array/tensor of the same kind, shape and dtype as ``x`` (contiguous)
            to write the result into; it may be ``x`` itself.

    Returns:
        ``out`` if given, else a new array/tensor.

    Raises:
        TypeError, ValueError: as :func:`quantize`, and for an ``out`` of the wrong kind,
            dtype, shape or layout.
    """
    p = _prepare(x, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile,
                 scale_dtype, scaled, qparams)
    o = _check_out(out, p.t, p.was_numpy)
    if p.t.dtype == torch.float32 and p.t.dim() > 0 and p.t.numel() > 0 \
            and p.t.is_contiguous() and isinstance(p.fmt, (IntFormat, FloatFormat)):
        res = o if o is not None else torch.empty_like(p.t, memory_format=torch.contiguous_format)
        _fake_quantize_into(p, res)
    else:
        q = quantize(x, p.fmt, granularity=p.granularity, axis=p.axis, group_size=p.group_size,
                     symmetric=p.symmetric, clip_ratio=p.clip_ratio, percentile=p.percentile,
                     scale_dtype=p.scale_dtype, scaled=p.scaled, qparams=p.qparams)
        res = q._dequantize_tensor()
        if o is not None:
            o.copy_(res)
            res = o
    return out if out is not None else like_input(res, p.was_numpy)


def _check_out(out: Optional[ArrayLike], t: torch.Tensor, was_numpy: bool) -> Optional[torch.Tensor]:
    if out is None:
        return None
    kind = "a numpy.ndarray" if was_numpy else "a torch.Tensor"
    if isinstance(out, np.ndarray) != was_numpy or not isinstance(out, (np.ndarray, torch.Tensor)):
        raise TypeError(f"out must be {kind} like x, got {type(out).__name__}")
    o, _ = as_tensor(out, "out")
    if tuple(o.shape) != tuple(t.shape):
        raise ValueError(f"out must have shape {tuple(t.shape)} like x, got {tuple(o.shape)}")
    want = torch.float32 if (was_numpy and t.dtype == torch.bfloat16) else t.dtype
    if o.dtype != want:
        raise TypeError(f"out must have dtype {str(want).replace('torch.', '')} like x, "
                        f"got {str(o.dtype).replace('torch.', '')}")
    if not o.is_contiguous():
        raise ValueError("out must be contiguous, got a strided view")
    return o


def _fake_quantize_into(p: _Prepared, out: torch.Tensor) -> None:
    """The fast path of :func:`fake_quantize` (float32, contiguous): results into ``out``."""
    fmt, x = p.fmt, p.t
    if not p.scaled:  # a plain cast: round straight from x into out (chunk by chunk)
        rounder = fmt._rounder(torch.float32)
        if rounder is None:
            out.copy_(x)
        else:
            rounder(out, x)
        return
    g = _grouped(x, p.granularity, p.axis, p.group_size)
    og = out.view(g.shape)
    qp = p.qparams
    if qp is None:
        dims = _reduce_dims(g, p.granularity, p.axis)
        stats = None
        if dims and 0 not in dims and not (p.percentile is not None and p.percentile < 100):
            # each chunk of rows holds whole groups: measure max and min chunk by chunk
            shape = [1 if d in dims else g.shape[d] for d in range(g.dim())]
            hi, lo = torch.empty(shape), torch.empty(shape)
            for sl in row_chunks(g):
                torch.amax(g[sl], dim=dims, keepdim=True, out=hi[sl])
                torch.amin(g[sl], dim=dims, keepdim=True, out=lo[sl])
            stats = (hi, lo)
        qp = _choose_prepared(p, stats)
    scale = qp.scale.to(torch.float32)
    zp = None if qp.zero_point is None else qp.zero_point.to(torch.float32)
    per_row = scale.dim() > 0 and scale.shape[0] > 1  # parameters vary along dim 0
    rounder = None if isinstance(fmt, IntFormat) else fmt._rounder(torch.float32)
    clamp = isinstance(fmt, IntFormat) and _clamp_needed(fmt, p, qp)
    for sl in row_chunks(g):
        s = scale[sl] if per_row else scale
        z = zp[sl] if (zp is not None and per_row) else zp
        oc = og[sl]
        torch.div(g[sl], s, out=oc)
        if isinstance(fmt, IntFormat):
            _int_grid_(oc, fmt, z, clamp)
            if z is not None:
                oc -= z
            else:
                oc += 0.0  # round() gives -0.0 for small negatives; integer codes have no -0
        else:
            oc.clamp_(-fmt.max_value, fmt.max_value)  # scaled floats saturate
            if rounder is not None:
                rounder(oc)
        oc *= s
