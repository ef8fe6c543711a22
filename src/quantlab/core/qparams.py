"""Choosing the quantization parameters: :class:`QParams`, :func:`choose_qparams`, and how a
scale is stored (:func:`store_scales`).

``choose_qparams`` measures each group's range (absmax, or min/max with a zero point; clipped by
``clip_ratio`` or read at a ``percentile``) and turns it into a scale: ``scale = absmax / qmax``
(symmetric), or ``scale = (max - min) / (qmax - qmin)`` and ``zero_point = qmin - round(min /
scale)`` (asymmetric). :func:`store_scales` rounds each scale to ``scale_dtype`` (up where rounding
down would clip ``+absmax``). The rules, the refusals and their reasons are in the docstring of
:mod:`quantlab.core.quantize`, which re-exports every public name here.

Taught in: chapters/02_explorer.ipynb ("What you just saw") and chapters/03_core_tradeoff.ipynb
("Granularity").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ._backend import ArrayLike, as_tensor, require_float
from .formats import (
    BlockFormat,
    FloatFormat,
    Format,
    FormatLike,
    IntFormat,
    get_format,
)
from .scheme import EXACT_SCALE_DTYPE, GRANULARITIES, SCALE_DTYPES, QuantScheme, refuse_keywords_beside
from .validate import check_bool, check_int, check_real

__all__ = [
    "QParams",
    "choose_qparams",
    "store_scales",
    "require_finite",
    "read_input",
    "check_qparams_args",
    "grouped_view",
    "reduce_dims",
    "unpack_scheme",
    "default_scaled",
    "choose_scales",
]


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


def check_qparams_args(
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


def grouped_view(t: torch.Tensor, granularity: str, axis: int, group_size: Optional[int]) -> torch.Tensor:
    """View ``t`` so that the scale broadcasts: groups become their own axis."""
    if granularity == "group":
        return t.reshape(*t.shape[:-1], t.shape[-1] // group_size, group_size)
    return t


def reduce_dims(t: torch.Tensor, granularity: str, axis: int) -> tuple[int, ...]:
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


def unpack_scheme(
    fmt: Any,
    granularity: str,
    axis: int,
    group_size: Optional[int],
    symmetric: bool,
    scale_dtype: str,
    scaled: Optional[bool],
    who: str,
) -> tuple[Any, str, int, Optional[int], bool, str, Optional[bool]]:
    """``(fmt, granularity, axis, group_size, symmetric, scale_dtype, scaled)`` with a
    :class:`~quantlab.core.scheme.QuantScheme` in ``fmt`` unpacked into its format and keywords
    (``quantize(x, scheme)``); a format passes through with the keywords as given.

    Raises:
        ValueError: a keyword beside a scheme that is not at its default (the scheme says how
            to quantize), or a scheme :func:`quantize` cannot make.
    """
    given = {
        "granularity": granularity,
        "axis": axis,
        "group_size": group_size,
        "symmetric": symmetric,
        "scale_dtype": scale_dtype,
        "scaled": scaled,
    }
    if isinstance(fmt, QuantScheme):
        refuse_keywords_beside(fmt, given, _KEYWORD_DEFAULTS, who)
        given.update(fmt.qparams_kwargs())
        fmt = fmt.fmt
    return fmt, *given.values()


_KEYWORD_DEFAULTS: dict[str, Any] = {
    "granularity": "tensor",
    "axis": 0,
    "group_size": None,
    "symmetric": True,
    "scale_dtype": EXACT_SCALE_DTYPE,
    "scaled": None,
}


def default_scaled(fmt: Format) -> bool:
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
        fmt: format name or object (see :func:`quantlab.formats.get_format`), or a
            :class:`~quantlab.core.scheme.QuantScheme` (then the keywords below stay at their defaults).
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
    fmt, granularity, axis, group_size, symmetric, scale_dtype, _ = unpack_scheme(
        fmt, granularity, axis, group_size, symmetric, scale_dtype, None, "choose_qparams"
    )
    fmt = get_format(fmt)
    if isinstance(fmt, BlockFormat):
        raise ValueError(
            f"{fmt.name} is block-scaled: its scales are part of the format and quantize() "
            "chooses them; choose_qparams does not apply"
        )
    t, _ = read_input(x)
    axis, group_size = check_qparams_args(
        t, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype
    )
    work = t if t.dtype in (torch.float32, torch.float64) else t.float()
    return choose_scales(work, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype)


def read_input(x: ArrayLike) -> tuple[torch.Tensor, bool]:
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


def choose_scales(
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
    g = grouped_view(t, granularity, axis, group_size)
    dims = reduce_dims(g, granularity, axis)
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
