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
from typing import NamedTuple, Optional, Union

import torch

from ._backend import ArrayLike, check_out, like_input
from ._fast import row_chunks
from .formats import (
    BlockFormat,
    FloatFormat,
    Format,
    FormatLike,
    IntFormat,
    get_format,
)
from .mx import encode_blocks
from .qparams import (
    QParams,
    check_qparams_args,
    choose_qparams,
    choose_scales,
    default_scaled,
    grouped_view,
    read_input,
    reduce_dims,
    require_finite,
    store_scales,
    unpack_scheme,
)
from .qtensor import QTensor, dequantize, grid_overflow
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
        fmt: format name or object, e.g. ``"int4"``, ``"fp8_e4m3"``, ``"nf4"``; or a
            :class:`~quantlab.core.scheme.QuantScheme`, which then gives the granularity, symmetry
            and scale dtype (those keywords must stay at their defaults).
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
    fmt, granularity, axis, group_size, symmetric, scale_dtype, scaled = unpack_scheme(
        fmt, granularity, axis, group_size, symmetric, scale_dtype, scaled, "quantize"
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
    g = grouped_view(p.work, p.granularity, p.axis, p.group_size)
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
    t, was_numpy = read_input(x)
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
    t, was_numpy = read_input(x)
    scaled = check_optional_bool(scaled, "scaled")
    if qparams is not None:
        if not isinstance(qparams, QParams):
            raise TypeError(f"qparams must be a QParams, got {type(qparams).__name__}")
        if qparams.format != fmt:
            raise ValueError(f"qparams were chosen for {qparams.format.name}, got fmt={fmt.name}")
        granularity, axis, group_size = qparams.granularity, qparams.axis, qparams.group_size
        scale_dtype = qparams.scale_dtype
        symmetric = qparams.zero_point is None
    axis, group_size = check_qparams_args(
        t, fmt, granularity, axis, group_size, symmetric, clip_ratio, percentile, scale_dtype
    )
    if scaled is None:
        scaled = default_scaled(fmt) if qparams is None else qparams.scale is not None
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
    return choose_scales(
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
    g = grouped_view(t, qp.granularity, qp.axis, qp.group_size)
    dims = reduce_dims(g, qp.granularity, qp.axis)
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
    fmt, granularity, axis, group_size, symmetric, scale_dtype, scaled = unpack_scheme(
        fmt, granularity, axis, group_size, symmetric, scale_dtype, scaled, "fake_quantize"
    )
    block = get_format(fmt)
    if isinstance(block, BlockFormat):
        q = _quantize_block(
            x, block, granularity, group_size, symmetric, clip_ratio, percentile, scale_dtype, scaled, qparams
        )
        t, _ = read_input(x)
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
    g = grouped_view(x, p.granularity, p.axis, p.group_size)
    og = out.view(g.shape)
    qp = p.qparams
    if qp is None:
        dims = reduce_dims(g, p.granularity, p.axis)
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
    top = grid_overflow(fmt, qp.scale, qp.zero_point, torch.float32)
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
