"""choose_qparams / quantize / dequantize: the core of quantization.

Integer formats use the affine map (torchao's order of operations: scale, round, add the
zero point, clamp, then cast)::

    code  = clamp(round(x / scale) + zero_point, qmin, qmax)
    x_hat = (code - zero_point) * scale

* **symmetric** (default): ``zero_point = 0`` and ``scale = absmax / qmax``, so ``+absmax``
  lands on the top code (see "Storing the scales" below). Unsigned formats put the zero point in the middle,
  ``zero_point = (qmax + qmin + 1) // 2``, and ``scale = absmax / (qmax - zero_point)``:
  ``+absmax`` lands on ``qmax`` and ``-absmax`` on ``2 * zero_point - qmax`` (the codes
  below it stay unused, as ``qmin`` does for signed formats), so the grid is symmetric and
  quantizing ``x_hat`` again gives the same codes and scale.
* **asymmetric**: the range ``[min(x_min, 0), max(x_max, 0)]`` (it always contains 0, so
  zero is stored exactly) is spread over all ``2^bits`` codes:
  ``scale = (max - min) / (qmax - qmin)``, ``zero_point = qmin - round(min / scale)``.

Float and codebook formats are symmetric: ``scale = absmax / fmt.max_value`` and the
code is the format's encoding of ``x / scale`` (rounded to nearest, ties to even).
fp32, fp16 and bf16 are *cast* without a scale by default (``scaled=None``).

Granularity decides which elements share one scale:

* ``"tensor"``: one scale for everything; ``scale.shape == ()``.
* ``"channel"``: one per index along ``axis``; ``scale.shape == (x.shape[axis],)``. On a
  1-d tensor that is one scale per element (each element lands on its format's top code).
* ``"group"``: consecutive blocks of ``group_size`` along the last axis;
  ``scale.shape == (*x.shape[:-1], x.shape[-1] // group_size)``.

Every granularity works on 1-d tensors; ``"channel"`` and ``"group"`` refuse a 0-d tensor
with a ``ValueError`` naming the granularity.

Calibration hooks shrink the range before the scale is computed: ``clip_ratio`` (a fixed
fraction of absmax, or of the min/max range) and ``percentile`` (use that percentile of
``|x|`` -- or of ``x`` at both ends, asymmetric -- instead of the extreme values).

Storing the scales (``scale_dtype``): each scale is rounded to the *nearest* value of
``scale_dtype`` (subnormal values included), and to the next value *up* wherever the
nearest one lies below the exact scale by more than float32 rounding (a relative
``2^-21``). So the range always fits: ``+absmax`` is never clipped -- it lands on the top code
``top`` (fp32 scales), or a little below it when an fp16 or bf16 scale had to be rounded
up (by at most ``top * 2^-10`` codes for fp16, ``top * 2^-7`` for bf16, one ulp of the
scale). Quantizing ``x_hat`` again with the same ``qparams`` always gives the same codes;
re-choosing the scale from ``x_hat`` does too wherever ``+absmax`` landed on the top code. Two cases raise
``ValueError`` naming
``scale_dtype`` and the scale:

* the scale is larger than the largest finite value of ``scale_dtype`` (fp16: 65504;
  e.g. int8 on values beyond about 8.3e6) -- it would be infinite and every value NaN;
* the scale is so small that storing it enlarges it by more than 1/16 (it falls among the
  few coarse subnormals of ``scale_dtype``: below ``2^-20`` = 9.5e-7 for fp16, ``2^-129``
  for bf16, ``2^-145`` for fp32) -- the grid would silently be that much coarser.

Use ``scale_dtype="fp32"`` (or ``"bf16"``, fp32's range with fewer digits) then, or
rescale ``x``. A group whose values are all zero needs no scale: it stores the smallest
normal number of ``scale_dtype`` (no division by zero) and codes that decode to 0.

Block-scaled formats (``"mxfp8_e4m3"``, ``"mxfp8_e5m2"``, ``"mxfp6_e3m2"``,
``"mxfp6_e2m3"``, ``"mxfp4"``, ``"mxint8"``, ``"nvfp4"``; see :mod:`quantlab.mx`) bring
their own scales: blocks of 32 (NVFP4: 16) along the last axis, which must be a multiple
of the block size. ``quantize(x, "mxfp4")`` needs no other argument; ``granularity="group"``
with ``group_size`` equal to the block size is accepted too, every other scale option
raises ``ValueError``. ``QTensor.scale`` then holds the block scales as float32 values
(powers of two, or fp8 e4m3 values for NVFP4, whose fp32 scale per tensor is
``QTensor.tensor_scale``), and ``nbytes`` counts 8 bits per block scale (plus 4 bytes for
``tensor_scale``).

Policies: NaN or infinity in ``x`` raises ``ValueError`` on every scaled path --
:func:`quantize`, :func:`fake_quantize` (fast path too), with scales computed from ``x``
or reused through ``qparams`` -- since a NaN would otherwise poison a whole group's scale
or turn into a code silently. The unscaled casts (``scaled=False``) pass NaN and infinity
through like torch's casts do, except to formats without a NaN encoding (fp6, fp4), which
raise on NaN. An empty tensor quantizes to an empty :class:`QTensor` with unit scales.
Dequantized values stay finite in the input's dtype: a grid point beyond the dtype's
largest value (the top code of an asymmetric grid over fp16 data near 65504, say) is
returned as that largest value.

Kinds: :func:`quantize` accepts numpy arrays and torch tensors; ``QTensor.dequantize()``
and :func:`fake_quantize` return the input's kind. The containers themselves
(:class:`QTensor`'s ``codes``, ``scale``, ``zero_point`` and :class:`QParams`) always hold
torch tensors, and ``QTensor.packed()`` returns a torch tensor. A tensor that requires
grad is read detached: results never carry gradients.

Taught in: chapters/02_explorer.ipynb ("What you just saw") and
chapters/03_core_tradeoff.ipynb ("Granularity").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch

from ._backend import ArrayLike, as_tensor, check_out, like_input, require_float
from ._fast import row_chunks
from .formats import (
    BlockFormat,
    FloatFormat,
    Format,
    FormatLike,
    IntFormat,
    get_format,
)
from .mx import decode_blocks, encode_blocks
from .packing import pack, packed_nbytes
from .scheme import EXACT_SCALE_DTYPE, GRANULARITIES, SCALE_DTYPES, QuantScheme
from .validate import check_bool, check_int, check_optional_bool, check_real

__all__ = [
    "QParams",
    "QTensor",
    "choose_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "GRANULARITIES",
    "SCALE_DTYPES",
    "store_scales",
    "require_finite",
]

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
    scale_dtype: str = EXACT_SCALE_DTYPE


# --------------------------------------------------------------------------- validation


def _check_args(
    t: torch.Tensor,
    fmt: Format,
    granularity: str,
    axis: int,
    group_size: Optional[int],
    symmetric: bool,
    clip_ratio: float,
    percentile: Optional[float],
    scale_dtype: str,
) -> tuple[int, Optional[int]]:
    if not isinstance(granularity, str) or granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    check_bool(symmetric, "symmetric")
    if not isinstance(scale_dtype, str) or scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {tuple(SCALE_DTYPES)}, got {scale_dtype!r}")
    check_real(clip_ratio, "clip_ratio", low=0, high=1, low_open=True)
    if percentile is not None:
        check_real(percentile, "percentile", low=0, high=100, low_open=True)
    if not symmetric and not isinstance(fmt, IntFormat):
        raise ValueError(f"symmetric=False (a zero point) needs an integer format, got {fmt.name}")
    if isinstance(fmt, IntFormat) and symmetric and fmt.signed and fmt.bits == 1:
        raise ValueError(
            "int1 has no positive code, so it cannot be symmetric: use symmetric=False "
            "(two levels spanning the range) or a 1-bit codebook such as "
            "codebook([-1, 1], 'binary')"
        )
    if isinstance(fmt, IntFormat) and symmetric and not fmt.signed and fmt.bits == 1:
        raise ValueError(
            "uint1 has no code above its zero point, so it cannot be symmetric: use "
            "symmetric=False (two levels spanning the range)"
        )
    ndim = t.dim()
    if granularity == "channel":
        axis = check_int(axis, "axis", what="an int")
        if ndim == 0:
            raise ValueError(
                "granularity='channel' needs at least a 1-d tensor (one scale per index along axis), got a 0-d tensor"
            )
        if not -ndim <= axis < ndim:
            raise ValueError(f"axis must be in [-{ndim}, {ndim - 1}] for a {ndim}-d tensor, got {axis}")
        axis = int(axis) % ndim
    if granularity == "group":
        if group_size is None:
            raise ValueError("granularity='group' needs group_size, got None")
        group_size = check_int(group_size, "group_size", what="a positive int")
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


def _unpack_scheme(fmt: Any, given: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``fmt`` and the keyword arguments, with a :class:`~quantlab.core.scheme.QuantScheme`
    in ``fmt`` unpacked into its format and keywords (``quantize(x, scheme)``).

    ``given`` holds the keywords the caller passed; each must be at its default when a scheme
    is given (the scheme says how to quantize), else ``ValueError``.
    """
    if not isinstance(fmt, QuantScheme):
        return fmt, given
    changed = sorted(k for k, v in given.items() if v != _KEYWORD_DEFAULTS[k])
    if changed:
        raise ValueError(
            f"fmt is a QuantScheme ({fmt.label}): give {', '.join(changed)} inside it, not beside it, "
            f"got {', '.join(f'{k}={given[k]!r}' for k in changed)}"
        )
    kw = dict(given)
    kw.update(fmt.qparams_kwargs())
    return fmt.fmt, kw


_KEYWORD_DEFAULTS: dict[str, Any] = {
    "granularity": "tensor",
    "axis": 0,
    "group_size": None,
    "symmetric": True,
    "scale_dtype": EXACT_SCALE_DTYPE,
    "scaled": None,
}


def _default_scaled(fmt: Format) -> bool:
    return not (isinstance(fmt, FloatFormat) and fmt.bits >= 16)


def choose_qparams(
    x: ArrayLike,
    fmt: Union[FormatLike, QuantScheme] = "int8",
    *,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: Optional[int] = None,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    percentile: Optional[float] = None,
    scale_dtype: str = EXACT_SCALE_DTYPE,
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
        TypeError, ValueError: see the module docstring; each names the parameter. In
            particular ``ValueError`` for NaN or infinity in ``x`` and for a scale that
            ``scale_dtype`` cannot hold (see "Storing the scales" there).
    """
    fmt, kw = _unpack_scheme(
        fmt,
        {
            "granularity": granularity,
            "axis": axis,
            "group_size": group_size,
            "symmetric": symmetric,
            "scale_dtype": scale_dtype,
        },
    )
    granularity, axis, group_size, symmetric, scale_dtype = (
        kw["granularity"],
        kw["axis"],
        kw["group_size"],
        kw["symmetric"],
        kw["scale_dtype"],
    )
    fmt = get_format(fmt)
    if isinstance(fmt, BlockFormat):
        raise ValueError(
            f"{fmt.name} is block-scaled: its scales are part of the format and quantize() "
            "chooses them; choose_qparams does not apply"
        )
    t, _ = _input(x)
    axis, group_size = _check_args(
        t, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype
    )
    work = t if t.dtype in (torch.float32, torch.float64) else t.float()
    return _choose(work, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype)


def _input(x: ArrayLike) -> tuple[torch.Tensor, bool]:
    """``x`` as a float tensor (detached: results carry no gradients) and whether it was numpy."""
    t, was_numpy = as_tensor(x)
    require_float(t)
    return (t.detach() if t.requires_grad else t), was_numpy


def require_finite(t: torch.Tensor) -> None:
    """Raise the one ``ValueError`` for NaN or infinity in a tensor to be scaled.

    Shared by every quantizer that derives a scale from the values (``choose_qparams``,
    :mod:`quantlab.algorithms.hqq`, :mod:`quantlab.algorithms.imatrix`), so all of them
    refuse the same input with the same message.

    Args:
        t: a float tensor of any shape.

    Raises:
        ValueError: ``t`` holds NaN or +-inf (the message counts them).
    """
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"x contains NaN or infinity ({bad} of {t.numel()} values); quantization with a scale needs finite values"
        )


def _choose(
    t: torch.Tensor,
    fmt: Format,
    granularity: str,
    axis: int,
    group_size: Optional[int],
    symmetric: bool,
    clip_ratio: float,
    percentile: Optional[float],
    scale_dtype: str,
    stats: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> QParams:
    """The parameters for ``t``; ``stats`` = (max, min) over each group if already measured."""
    g = _grouped(t, granularity, axis, group_size)
    dims = _reduce_dims(g, granularity, axis)
    stat_shape = [1 if d in dims else g.shape[d] for d in range(g.dim())]
    if t.numel() == 0:
        scale = torch.ones(stat_shape, dtype=torch.float32)
        zp = None if symmetric else torch.zeros(stat_shape, dtype=torch.int32)
        return QParams(scale, zp, fmt, granularity, axis, group_size, scale_dtype)
    if stats is not None:
        hi, lo = stats
    elif percentile is not None and percentile < 100:
        require_finite(g)  # order statistics would step over a NaN
        if symmetric:
            hi = _kth(g.abs(), dims, percentile / 100, largest=True)
            lo = -hi
        else:
            hi = _kth(g, dims, percentile / 100, largest=True)
            lo = _kth(g, dims, percentile / 100, largest=False)
    elif not dims:  # one parameter per element (per channel on a 1-d tensor): amax(dim=())
        hi, lo = g.clone(), g.clone()  # would reduce over everything instead of nothing
    else:
        hi = g.amax(dim=dims, keepdim=True)
        lo = g.amin(dim=dims, keepdim=True)
    if not (bool(torch.isfinite(hi).all()) and bool(torch.isfinite(lo).all())):
        require_finite(t)
    hi = hi.to(torch.float64)
    lo = lo.to(torch.float64)
    if isinstance(fmt, IntFormat) and not symmetric:
        lo = torch.clamp(lo, max=0.0) * clip_ratio
        hi = torch.clamp(hi, min=0.0) * clip_ratio
        scale = store_scales((hi - lo) / (fmt.qmax - fmt.qmin), scale_dtype)
        zp = torch.clamp(fmt.qmin - torch.round(lo / scale.double()), fmt.qmin, fmt.qmax)
        return QParams(scale, zp.to(torch.int32), fmt, granularity, axis, group_size, scale_dtype)
    absmax = torch.maximum(hi.abs(), lo.abs()) * clip_ratio
    if isinstance(fmt, IntFormat):
        if fmt.signed:
            scale = absmax / fmt.qmax
            zp = None
        else:  # unsigned and symmetric: zero sits mid-range (as torch's quint8 observers do)
            mid = (fmt.qmax + fmt.qmin + 1) // 2
            scale = absmax / (fmt.qmax - mid)  # +-absmax land on mid +- (qmax - mid)
            zp = torch.full(stat_shape, mid, dtype=torch.int32)
    else:
        scale = absmax / fmt.max_value
        zp = None
    return QParams(store_scales(scale, scale_dtype), zp, fmt, granularity, axis, group_size, scale_dtype)


#: Rounding a scale to the nearest value of its dtype may leave it this much (relative)
#: below the exact scale before it is rounded up instead: float32's own rounding noise.
_SCALE_SLACK = 2.0**-21
#: Largest relative enlargement of a (subnormal) scale by storing it before it is refused.
_SCALE_MAX_GROWTH = 1 / 16
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def store_scales(exact: torch.Tensor, scale_dtype: str) -> torch.Tensor:
    """Scales (float64, >= 0) as values of ``scale_dtype`` that hold the range, as float32.

    The one rule by which a scale is stored, shared by ``choose_qparams`` and the
    algorithms that search their own scales (:mod:`quantlab.algorithms.hqq`,
    :mod:`quantlab.algorithms.imatrix`); ``exact`` may have any shape, the result has the same.

    Each scale is rounded to the nearest value of the dtype, or to the next one up where
    the nearest lies more than ``_SCALE_SLACK`` (relative) below it, so ``x / scale``
    never exceeds the top code by more than float32 rounding. A zero scale (a group of
    zeros) becomes the dtype's smallest normal number.

    Raises:
        ValueError: a scale beyond the dtype's largest finite value, or one that storing
            would enlarge by more than ``_SCALE_MAX_GROWTH`` (coarse subnormals).
    """
    sdt = SCALE_DTYPES[scale_dtype]
    info = torch.finfo(sdt)
    too_big = exact > info.max
    if bool(too_big.any()):
        value = float(exact[too_big].max())
        raise ValueError(
            f"scale_dtype={scale_dtype!r} cannot hold the scale {value:.4g} that x needs "
            f"(largest {scale_dtype} value: {info.max:.6g}): "
            + ("use scale_dtype='fp32', or " if scale_dtype == "fp16" else "")
            + "rescale x"
        )
    s = exact.to(sdt)
    low = s.double() < exact * (1 - _SCALE_SLACK)
    if bool(low.any()):  # one step up: the bit pattern of a positive float plus one
        iv = _INT_VIEW[sdt]
        s = torch.where(low, (s.view(iv) + 1).view(sdt), s)
    stored = s.double()
    positive = exact > 0
    grown = positive & (stored > exact * (1 + _SCALE_MAX_GROWTH))
    if bool(grown.any()):
        value = float(exact[grown].min())
        raise ValueError(
            f"scale_dtype={scale_dtype!r} cannot hold the scale {value:.4g} that x needs "
            f"without making the grid more than {_SCALE_MAX_GROWTH:.4g} coarser (stored as "
            f"{float(stored[grown][exact[grown].argmin()]):.4g}; {scale_dtype} stores scales "
            f"below {info.tiny * info.eps / _SCALE_MAX_GROWTH:.3g} only as coarse subnormals): "
            + ("use scale_dtype='fp32' or 'bf16', or " if scale_dtype == "fp16" else "")
            + "rescale x"
        )
    s = torch.where(positive, s, torch.full_like(s, info.tiny))
    return s.float()


# --------------------------------------------------------------------------- QTensor


@dataclass
class QTensor:
    """A quantized tensor: codes plus everything needed to get the values back.

    The containers are torch tensors whatever the input's kind (numpy or torch):
    ``dequantize()`` returns the input's kind.

    Attributes:
        codes: integer torch tensor with the shape of the original (unpacked, one code per
            element): integer codes, float bit patterns or codebook indices.
        scale: float32 tensor (values exact in ``scale_dtype``) in the public shape
            (``()``, ``(C,)`` or ``(*lead, n_groups)``), or None for an unscaled cast.
        zero_point: int32 tensor like ``scale``, or None; a float32 tensor of real-valued
            zero points (values exact in ``scale_dtype``) for :mod:`quantlab.hqq`.
        format: the number format.
        shape: the original shape.
        granularity, axis, group_size, scale_dtype: how it was quantized.
        dtype: the original floating dtype (``dequantize`` returns it).
        was_numpy: whether the input was a numpy array (``dequantize`` returns one then).
        tensor_scale: a 0-d float32 tensor for formats with one extra scale per tensor
            (``nvfp4``), else None.
    """

    codes: torch.Tensor
    scale: Optional[torch.Tensor]
    zero_point: Optional[torch.Tensor]
    format: Format
    shape: tuple[int, ...]
    granularity: str = "tensor"
    axis: int = 0
    group_size: Optional[int] = None
    scale_dtype: str = EXACT_SCALE_DTYPE
    dtype: torch.dtype = torch.float32
    was_numpy: bool = False
    tensor_scale: Optional[torch.Tensor] = None

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of real packed storage: codes at ``bits`` each, scales at ``scale_dtype``,
        integer zero points at the code width (each array packed on its own, rounded up to
        bytes), floating zero points (:mod:`quantlab.hqq`) at ``scale_dtype`` too.
        Block-scaled formats: 8 bits per block scale, 4 bytes for a ``tensor_scale``."""
        total = packed_nbytes(self.numel, self.format.bits)
        if isinstance(self.format, BlockFormat):
            total += self.scale.numel() * self.format.scale_bits // 8
            return total + (4 if self.tensor_scale is not None else 0)
        if self.scale is not None:
            total += self.scale.numel() * _DTYPE_BITS[SCALE_DTYPES[self.scale_dtype]] // 8
        if self.zero_point is not None:
            if self.zero_point.dtype.is_floating_point:  # real-valued zero points (HQQ)
                total += self.zero_point.numel() * _DTYPE_BITS[SCALE_DTYPES[self.scale_dtype]] // 8
            else:
                total += packed_nbytes(self.zero_point.numel(), self.format.bits)
        return total

    @property
    def bits_per_weight(self) -> float:
        """``8 * nbytes / numel``: the format's bits plus the overhead of scales."""
        if self.numel == 0:
            return float(self.format.bits)
        return 8 * self.nbytes / self.numel

    def packed(self) -> torch.Tensor:
        """The codes packed into bytes, as a flat uint8 torch tensor.

        Formats of up to 16 bits use :func:`quantlab.packing.pack`; wider ones (fp32 bit
        patterns) are stored whole, least significant byte first -- the same
        little-endian bitstream. Either way the result has ``packed_nbytes(numel, bits)``
        bytes.
        """
        if self.format.bits <= 16:
            return pack(self.codes.reshape(-1), self.format.bits)
        width = self.format.bits // 8
        flat = self.codes.reshape(-1).to(torch.int32 if width == 4 else torch.int64).cpu().numpy()
        return torch.from_numpy(flat.astype(f"<i{width}").view(np.uint8).copy())

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
        if isinstance(fmt, BlockFormat):
            return decode_blocks(self.codes, self.scale, self.tensor_scale, fmt, self.shape, self.dtype)
        if isinstance(fmt, IntFormat):
            vals = self.codes.to(torch.float32)
        else:
            vals = fmt.decode(self.codes)
        if self.scale is None:
            return vals.to(self.dtype)
        if self.dtype == torch.float64 and (
            _grid_overflow(fmt, self.scale, self.zero_point, torch.float32) is not None
            or _grid_underflow(fmt, self.scale)
        ):
            # grid points beyond float32's range, or below its normal range (where a float32
            # product would keep fewer bits): compute in float64, exactly on the grid
            vals = vals.double()
        if self.granularity == "group":
            vals = vals.reshape(*self.shape[:-1], self.shape[-1] // self.group_size, self.group_size)
        if self.zero_point is not None:
            vals -= self._broadcast(self.zero_point).to(vals.dtype)
        vals *= self._broadcast(self.scale).to(vals.dtype)
        top = _grid_overflow(fmt, self.scale, self.zero_point, self.dtype)
        if top is not None:
            vals.clamp_(-top, top)
        return vals.reshape(self.shape).to(self.dtype)

    def __repr__(self) -> str:
        return (
            f"QTensor(format={self.format.name}, shape={tuple(self.shape)}, "
            f"granularity={self.granularity!r}, bits_per_weight={self.bits_per_weight:.4g}, "
            f"nbytes={self.nbytes})"
        )


def _grid_underflow(fmt: Format, scale: torch.Tensor) -> bool:
    """Whether a grid point ``value * scale`` with the smallest non-zero ``value`` of ``fmt``
    (1 for integers, the smallest subnormal for floats, the smallest non-zero magnitude of a
    codebook) falls below float32's smallest normal number for some scale."""
    if scale.numel() == 0:
        return False
    if isinstance(fmt, IntFormat):
        step = 1.0
    elif isinstance(fmt, FloatFormat):
        step = fmt.min_subnormal
    else:
        step = min((abs(v) for v in getattr(fmt, "table", ()) if v != 0), default=1.0)
    return float(scale.min()) * step < torch.finfo(torch.float32).tiny


def _grid_overflow(
    fmt: Format, scale: torch.Tensor, zero_point: Optional[torch.Tensor], dtype: torch.dtype
) -> Optional[float]:
    """``finfo(dtype).max`` if some grid point ``(code - zero_point) * scale`` could exceed
    it (so dequantized values must be clamped to stay finite), else None."""
    if scale.numel() == 0:
        return None
    top = torch.finfo(dtype).max
    if isinstance(fmt, IntFormat):
        if zero_point is None:
            reach = float(max(-fmt.qmin, fmt.qmax))
        else:
            z = zero_point.double()
            reach = float(torch.maximum(fmt.qmax - z, z - fmt.qmin).max())
    else:
        reach = float(fmt.max_value)
    # 1 + 2^-20: room for the float32 rounding of the product itself
    return top if reach * float(scale.max()) * (1 + 2.0**-20) > top else None


# --------------------------------------------------------------------------- quantize


def quantize(
    x: ArrayLike,
    fmt: Union[FormatLike, QuantScheme] = "int8",
    *,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: Optional[int] = None,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    percentile: Optional[float] = None,
    scale_dtype: str = EXACT_SCALE_DTYPE,
    scaled: Optional[bool] = None,
    qparams: Optional[QParams] = None,
) -> QTensor:
    """Quantize ``x`` to ``fmt``: choose the parameters, then encode every element.

    Args:
        x: float numpy array or torch tensor, any shape (float16/bfloat16/float32/float64).
        fmt: format name or object, e.g. ``"int4"``, ``"fp8_e4m3"``, ``"nf4"``.
        granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype:
            see :func:`choose_qparams`.
        scaled: ``True``, ``False`` or ``None`` (the default: a scale for every format
            except plain casts to fp32/fp16/bf16).
        qparams: reuse parameters chosen before (e.g. on calibration data) instead. They
            must hold exactly one scale per group of ``x`` (``granularity="tensor"``: one;
            ``"channel"``: ``x.shape[axis]``; ``"group"``: ``x.numel() // group_size``,
            taken in C order); values beyond the grid are clipped to it.

    Returns:
        A :class:`QTensor` (torch tensors inside); ``QTensor.dequantize()`` gives values of
        the same kind as ``x``.

    Raises:
        TypeError, ValueError: see :func:`choose_qparams`; also for ``qparams`` that do
            not fit ``x`` (wrong type, format or number of scales, non-positive scales)
            and, on every scaled path, NaN or infinity in ``x``.

    Example:
        >>> q = quantize(np.array([3.0, -1.5, 0.4]), "int3")  # absmax 3, qmax 3: scale 1
        >>> q.codes.tolist(), float(q.scale)  # -1.5 is a tie: rounds to the even code -2
        ([3, -2, 0], 1.0)
    """
    fmt, kw = _unpack_scheme(
        fmt,
        {
            "granularity": granularity,
            "axis": axis,
            "group_size": group_size,
            "symmetric": symmetric,
            "scale_dtype": scale_dtype,
            "scaled": scaled,
        },
    )
    granularity, axis, group_size, symmetric, scale_dtype, scaled = (
        kw["granularity"],
        kw["axis"],
        kw["group_size"],
        kw["symmetric"],
        kw["scale_dtype"],
        kw["scaled"],
    )
    block = get_format(fmt)
    if isinstance(block, BlockFormat):
        return _quantize_block(
            x, block, granularity, group_size, symmetric, clip_ratio, percentile, scale_dtype, scaled, qparams
        )
    p = _prepare(x, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype, scaled, qparams)
    fmt, t = p.fmt, p.t
    if not p.scaled:
        return QTensor(
            fmt.encode(p.work), None, None, fmt, tuple(t.shape), "tensor", 0, None, p.scale_dtype, t.dtype, p.was_numpy
        )
    if p.qparams is not None:
        require_finite(p.work)
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
    return QTensor(
        codes.reshape(t.shape),
        pub_scale,
        pub_zp,
        fmt,
        tuple(t.shape),
        p.granularity,
        p.axis,
        p.group_size,
        p.scale_dtype,
        t.dtype,
        p.was_numpy,
    )


def _quantize_block(
    x: ArrayLike,
    fmt: BlockFormat,
    granularity: str,
    group_size: Optional[int],
    symmetric: bool,
    clip_ratio: float,
    percentile: Optional[float],
    scale_dtype: str,
    scaled: Optional[bool],
    qparams: Optional[QParams],
) -> QTensor:
    """:func:`quantize` for a block-scaled format (see :mod:`quantlab.mx`)."""
    t, was_numpy = _input(x)
    k = fmt.block_size
    if not isinstance(granularity, str) or granularity not in ("tensor", "group"):
        raise ValueError(
            f"{fmt.name} has its own granularity (blocks of {k} along the last axis): leave "
            f"granularity at its default or pass 'group', got granularity={granularity!r}"
        )
    if group_size is not None:
        group_size = check_int(group_size, "group_size", what="a positive int")
        if group_size != k:
            raise ValueError(f"{fmt.name} has blocks of {k}: group_size must be None or {k}, got {group_size}")
    elif granularity == "group":
        raise ValueError("granularity='group' needs group_size, got None")
    if not check_bool(symmetric, "symmetric"):
        raise ValueError(f"{fmt.name} is symmetric (no zero point), got symmetric=False")
    if check_real(clip_ratio, "clip_ratio", low=0, high=1, low_open=True) != 1:
        raise ValueError(f"{fmt.name} chooses its scales by its own rule: clip_ratio must be 1, got {clip_ratio}")
    if percentile is not None:
        raise ValueError(f"{fmt.name} chooses its scales by its own rule: percentile must be None, got {percentile!r}")
    if scale_dtype != EXACT_SCALE_DTYPE:
        raise ValueError(
            f"{fmt.name} stores its block scales as {fmt.scale_format}: leave "
            f"scale_dtype at its default, got {scale_dtype!r}"
        )
    if check_optional_bool(scaled, "scaled") is False:
        raise ValueError(f"{fmt.name} is block-scaled: scaled must be None or True, got False")
    if qparams is not None:
        raise ValueError(
            f"{fmt.name} chooses its block scales itself: qparams must be None, got {type(qparams).__name__}"
        )
    if t.dim() == 0:
        raise ValueError(
            f"{fmt.name} needs at least a 1-d tensor (blocks of {k} along the last axis), got a 0-d tensor"
        )
    n = t.shape[-1]
    if n % k != 0:
        raise ValueError(
            f"{fmt.name} needs the last dimension to be a multiple of its block size {k}, "
            f"got last dimension {n} (shape {tuple(t.shape)})"
        )
    work = t if t.dtype in (torch.float32, torch.float64) else t.float()
    require_finite(work)
    codes, scale, tensor_scale = encode_blocks(work, fmt)
    return QTensor(
        codes, scale, None, fmt, tuple(t.shape), "group", 0, k, fmt.scale_format, t.dtype, was_numpy, tensor_scale
    )


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
    x: ArrayLike,
    fmt: FormatLike,
    granularity: str,
    axis: int,
    group_size: Optional[int],
    symmetric: bool,
    clip_ratio: float,
    percentile: Optional[float],
    scale_dtype: str,
    scaled: Optional[bool],
    qparams: Optional[QParams],
) -> _Prepared:
    fmt = get_format(fmt)
    t, was_numpy = _input(x)
    scaled = check_optional_bool(scaled, "scaled")
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
        qparams = _fit_qparams(work, qparams)
    return _Prepared(
        fmt,
        t,
        was_numpy,
        work,
        granularity,
        axis,
        group_size,
        symmetric,
        clip_ratio,
        percentile,
        scale_dtype,
        bool(scaled),
        qparams,
    )


def _choose_prepared(p: _Prepared, stats: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> QParams:
    return _choose(
        p.work,
        p.fmt,
        p.granularity,
        p.axis,
        p.group_size,
        p.symmetric,
        p.clip_ratio,
        p.percentile,
        p.scale_dtype,
        stats,
    )


def _int_grid_(v: torch.Tensor, fmt: IntFormat, zero_point: Optional[torch.Tensor], clamp: bool = True) -> None:
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
    """False when ``round(x / scale) + zero_point`` provably stays within ``[qmin, qmax]``.

    That holds for symmetric grids whose scale was just measured from ``x`` itself without
    clipping. With ``top = qmax - zero_point`` (``qmax`` for signed formats) the stored
    scale is ``>= absmax / top * (1 - 2^-21)`` in every ``scale_dtype`` (see
    :func:`store_scales`; a zero group's floor is larger), so ``|x / scale| <= top * (1 + 2^-20)
    < top + 1/2`` (``top < 2^18``), even after float32 rounds the quotient: it rounds to at
    most ``top`` in magnitude, and ``zero_point - top >= qmin``.
    """
    measured = p.qparams is None and p.clip_ratio == 1 and (p.percentile is None or p.percentile >= 100)
    return not (measured and p.symmetric and fmt.qmax < (1 << 18))


def _public(p: torch.Tensor, granularity: str) -> torch.Tensor:
    if granularity == "tensor":
        return p.reshape(())
    if granularity == "channel":
        return p.reshape(-1)
    return p.squeeze(-1)


def _fit_qparams(t: torch.Tensor, qp: QParams) -> QParams:
    """``qp`` with its scale (and zero point) in the broadcast shape for ``t``.

    They must hold one entry per group of ``t`` -- the shape they were chosen for, or any
    other with as many entries (taken in C order, e.g. per-row scales of a 2-d weight
    reused on one of its columns as a ``(rows,)`` vector).

    Raises:
        ValueError: the wrong number of scales or zero points, or scales that are not
            positive and finite.
    """
    if qp.scale is None:
        raise ValueError("qparams hold no scale (an unscaled cast), got scaled=True")
    g = _grouped(t, qp.granularity, qp.axis, qp.group_size)
    dims = _reduce_dims(g, qp.granularity, qp.axis)
    shape = tuple(1 if d in dims else g.shape[d] for d in range(g.dim()))
    need = math.prod(shape)
    where = (
        ""
        if qp.granularity == "tensor"
        else (f", axis={qp.axis}" if qp.granularity == "channel" else f", group_size={qp.group_size}")
    )
    for name, v in (("scale", qp.scale), ("zero_point", qp.zero_point)):
        if v is not None and v.numel() != need:
            raise ValueError(
                f"qparams with {name} shape {tuple(v.shape)} ({v.numel()} values) do not fit x "
                f"of shape {tuple(t.shape)}: granularity={qp.granularity!r}{where} needs {need}; "
                "choose them on a tensor of the same shape"
            )
    if tuple(qp.scale.shape) == shape and (qp.zero_point is None or tuple(qp.zero_point.shape) == shape):
        scale, zp = qp.scale, qp.zero_point
    else:
        scale = qp.scale.reshape(shape)
        zp = None if qp.zero_point is None else qp.zero_point.reshape(shape)
    if not bool((scale > 0).all()) or not bool(torch.isfinite(scale).all()):
        raise ValueError(f"qparams.scale must be positive and finite, got {scale.flatten()[:8].tolist()}")
    if scale is qp.scale and zp is qp.zero_point:
        return qp
    return QParams(scale, zp, qp.format, qp.granularity, qp.axis, qp.group_size, qp.scale_dtype)


def dequantize(q: QTensor) -> ArrayLike:
    """Return the values a :class:`QTensor` stands for (same kind and dtype as its input)."""
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    return q.dequantize()


def fake_quantize(
    x: ArrayLike,
    fmt: Union[FormatLike, QuantScheme] = "int8",
    *,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: Optional[int] = None,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    percentile: Optional[float] = None,
    scale_dtype: str = EXACT_SCALE_DTYPE,
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

    Gradients: ``x`` may require grad; it is read detached and the result never requires
    grad (rounding has no useful gradient). For training through the rounding use the
    straight-through estimator of :mod:`quantlab.qat`.

    Args:
        x: float numpy array or torch tensor, any shape.
        fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype,
            scaled, qparams: as in :func:`quantize`.
        out: optional array/tensor of the same kind, shape and dtype as ``x`` (writable,
            contiguous, native byte order, on ``x``'s device) to write the result into; it
            may be ``x`` itself, but no other view overlapping ``x``. Everything is
            checked before the first write.

    Returns:
        ``out`` if given, else a new array/tensor.

    Raises:
        TypeError, ValueError: as :func:`quantize`, and for an ``out`` of the wrong kind,
            dtype, byte order, shape, device or layout, a read-only ``out``, or one that
            partly overlaps ``x``.
    """
    fmt, kw = _unpack_scheme(
        fmt,
        {
            "granularity": granularity,
            "axis": axis,
            "group_size": group_size,
            "symmetric": symmetric,
            "scale_dtype": scale_dtype,
            "scaled": scaled,
        },
    )
    granularity, axis, group_size, symmetric, scale_dtype, scaled = (
        kw["granularity"],
        kw["axis"],
        kw["group_size"],
        kw["symmetric"],
        kw["scale_dtype"],
        kw["scaled"],
    )
    block = get_format(fmt)
    if isinstance(block, BlockFormat):
        q = _quantize_block(
            x, block, granularity, group_size, symmetric, clip_ratio, percentile, scale_dtype, scaled, qparams
        )
        t, _ = _input(x)
        o = _check_out(out, t, q.was_numpy)
        res = q._dequantize_tensor()
        if o is None:
            return like_input(res, q.was_numpy)
        o.copy_(res)
        return out
    p = _prepare(x, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype, scaled, qparams)
    o = _check_out(out, p.t, p.was_numpy)
    if p.scaled and p.qparams is not None:
        require_finite(p.work)  # before anything is written into out
    if (
        p.t.dtype == torch.float32
        and p.t.dim() > 0
        and p.t.numel() > 0
        and p.t.is_contiguous()
        and isinstance(p.fmt, (IntFormat, FloatFormat))
    ):
        res = o if o is not None else torch.empty_like(p.t, memory_format=torch.contiguous_format)
        _fake_quantize_into(p, res)
    else:
        q = quantize(
            x,
            p.fmt,
            granularity=p.granularity,
            axis=p.axis,
            group_size=p.group_size,
            symmetric=p.symmetric,
            clip_ratio=p.clip_ratio,
            percentile=p.percentile,
            scale_dtype=p.scale_dtype,
            scaled=p.scaled,
            qparams=p.qparams,
        )
        res = q._dequantize_tensor()
        if o is not None:
            o.copy_(res)
            res = o
    return out if out is not None else like_input(res, p.was_numpy)


def _check_out(out: Optional[ArrayLike], t: torch.Tensor, was_numpy: bool) -> Optional[torch.Tensor]:
    """``out`` as a tensor, after every check (kind, writability, byte order, shape,
    dtype, device, layout, overlap with ``t``) and before any write."""
    if out is None:
        return None
    o = check_out(out, was_numpy=was_numpy, dtype=t.dtype, shape=t.shape, device=t.device)
    if o.numel() and t.numel() and o.device == t.device:
        same = o.data_ptr() == t.data_ptr() and o.stride() == t.stride()
        a0, a1 = o.data_ptr(), o.data_ptr() + o.numel() * o.element_size()
        size = t.element_size()
        b0 = t.data_ptr() + sum(min(0, st) * (n - 1) for st, n in zip(t.stride(), t.shape)) * size
        b1 = t.data_ptr() + (1 + sum(max(0, st) * (n - 1) for st, n in zip(t.stride(), t.shape))) * size
        if not same and a0 < b1 and b0 < a1:
            raise ValueError("out must be x itself or memory apart from x, got a view overlapping x")
    return o


def _fake_quantize_into(p: _Prepared, out: torch.Tensor) -> None:
    """The fast path of :func:`fake_quantize` (float32, contiguous): results into ``out``."""
    fmt, x = p.fmt, p.t
    if not p.scaled:  # a plain cast: round straight from x into out (chunk by chunk)
        if fmt.nan == "none" and bool(torch.isnan(x).any()):  # as fmt.encode does
            raise ValueError(f"x contains NaN, which format {fmt.name} cannot encode")
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
    top = _grid_overflow(fmt, qp.scale, qp.zero_point, torch.float32)
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
        if top is not None:
            oc.clamp_(-top, top)
