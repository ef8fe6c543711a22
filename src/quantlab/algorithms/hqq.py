"""HQQ: calibration-free optimisation of the zero points by half-quadratic splitting.

Half-Quadratic Quantization (Badri & Shaji, 2023, "Half-Quadratic Quantization of Large
Machine Learning Models") keeps the asymmetric min/max grid of each group,

    code  = clamp(round(w / s + z), qmin, qmax)
    w_hat = (code - z) * s,

but chooses the real-valued zero point ``z`` (and, optionally, ``s``) to minimise a
sparsity-promoting ``l_p`` norm (``p < 1``) of the error instead of taking it from the
extremes: ``min_z || w - w_hat(z) ||_p^p``. Rounding makes this non-smooth, so HQQ splits
it with an auxiliary error variable ``w_e`` (half-quadratic splitting)::

    min_{z, w_e}  ||w_e||_p^p + beta/2 ||w_e - (w - w_hat(z))||_2^2

and alternates, with ``beta`` growing by ``kappa`` each step:

1. ``w_e <- shrink_p(w - w_hat(z), beta)``, the generalised soft-thresholding
   ``sign(e) * relu(|e| - |e|^(p-1) / beta)``: large (outlier) errors are kept in
   ``w_e``, small ones set to 0;
2. ``z <- mean(code - (w - w_e) / s)`` over the group: the least-squares zero point that
   maps the codes onto the weights with the outlier errors taken out;
3. (``optimize_scale=True``, an extension) ``s`` and ``z`` together by least squares of
   ``w - w_e`` on ``code``: ``s = cov(code, t) / var(code)``, ``z = mean(code) - mean(t) / s``.

This follows ``optimize_weights_proximal`` of the reference code (``p = 0.7``,
``beta = 10``, ``kappa = 1.01``, 20 iterations, stopping once the mean absolute error
``mean|w - w_hat|`` stops falling). Differences: the error is tracked per group, each group
keeps the zero point (and scale) of its own best iterate, and the iterations stop when no
group improves; the reference tracks the error of the whole tensor and returns the zero
points computed right after its best iterate. No calibration data is needed.

Storage: codes of ``fmt`` (signed or unsigned integers), and per group a scale and a
real-valued zero point, both stored in ``scale_dtype`` (fp16 by default, as HQQ does).
The result is a :class:`~quantlab.quantize.QTensor` with ``granularity="group"`` and a
float32 ``zero_point``; its ``nbytes`` counts 16 bits for each scale and zero point.

Taught in: chapters/ (Beyond int4).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..core._backend import ArrayLike, as_tensor, require_float
from ..core.formats import IntFormat, get_format
from ..core.quantize import SCALE_DTYPES, QTensor, require_finite, store_scales
from ..core.scheme import DEFAULT_SCALE_DTYPE, SchemeLike, rowwise_recipe
from ..core.validate import check_bool, check_int, check_real

__all__ = ["hqq_quantize", "shrink_lp"]


def shrink_lp(e: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Generalised soft-thresholding, the proximal step of ``||.||_p^p`` (HQQ eq. 6).

    ``shrink(e) = sign(e) * relu(|e| - |e|^(p-1) / beta)`` (``p = 1``: plain soft
    thresholding with ``1 / beta``). A tiny ``1e-8`` keeps ``|e|^(p-1)`` finite at 0.

    Args:
        e: error tensor.
        beta: penalty weight (> 0).
        p: the norm's exponent in (0, 1].

    Returns:
        A tensor like ``e``.
    """
    if p == 1:
        thr = torch.full_like(e, 1.0 / beta)
    else:
        thr = (e.abs() + 1e-8).pow(p - 1) / beta
    return torch.sign(e) * torch.relu(e.abs() - thr)


def _grid(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, fmt: IntFormat) -> torch.Tensor:
    return torch.clamp(torch.round(w / s + z), fmt.qmin, fmt.qmax)


def hqq_quantize(
    w: ArrayLike,
    fmt: SchemeLike = "int4",
    group_size: Optional[int] = 64,
    *,
    iters: int = 20,
    lp_norm: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
    optimize_scale: bool = False,
    early_stop: bool = True,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
) -> QTensor:
    """Quantize ``w`` with HQQ's optimised zero points (groups along the last axis).

    Starts from the min/max grid of each group, ``s = (max - min) / (qmax - qmin)`` and
    ``z = qmin - min / s``, then runs the half-quadratic iterations of the module
    docstring and keeps the iterate with the lowest mean absolute error
    ``mean|w - w_hat|`` (iteration 0 is the min/max start itself, so the result is never
    worse than it by that measure). Deterministic: no randomness anywhere.

    Args:
        w: float numpy array or torch tensor, at least 1-d.
        fmt: an integer format (``"int4"``, ``"uint3"``, ``"int2"``, ...), or a
            :class:`~quantlab.core.scheme.QuantScheme` that also gives ``group_size`` and
            ``scale_dtype``: HQQ's own storage, ``symmetric=False`` with real-valued zero points
            (``zero_point_dtype`` equal to ``scale_dtype``), whose ``bits_per_weight`` it then makes.
        group_size: elements per group along the last axis (must divide it); None for
            one group per row (the whole last axis).
        iters: half-quadratic iterations (>= 0; 0 gives the min/max start).
        lp_norm: ``p`` in (0, 1].
        beta: initial penalty weight (> 0); multiplied by ``kappa`` every iteration.
        kappa: growth factor of ``beta`` (>= 1).
        optimize_scale: also update the scales (least squares), not only the zero points.
        early_stop: stop at the first iteration whose error does not fall (the
            reference's rule); False runs all ``iters``.
        scale_dtype: ``"fp16"`` (default), ``"bf16"`` or ``"fp32"``: how scales and zero
            points are stored (the codes are recomputed with the stored values).

    Returns:
        A :class:`~quantlab.quantize.QTensor` (``granularity="group"``, float32 zero points);
        ``dequantize()`` returns the kind of ``w``.

    Raises:
        TypeError: ``w`` not a float array/tensor, a parameter of the wrong type.
        ValueError: a non-integer ``fmt``, ``group_size`` not dividing the last axis,
            parameters out of range, NaN or infinity in ``w``; scales or zero points that
            ``scale_dtype`` cannot hold (e.g. fp16 zero points of groups far from 0).

    Example:
        >>> import numpy as np
        >>> w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
        >>> q = hqq_quantize(w, "int4", 64)
        >>> q.bits_per_weight  # 4 + (16 + 16) / 64
        4.5

    Taught in: chapters/ (Beyond int4).
    """
    fmt, kw = rowwise_recipe(
        fmt,
        {"group_size": group_size, "scale_dtype": scale_dtype},
        {"group_size": 64, "scale_dtype": DEFAULT_SCALE_DTYPE},
        "hqq_quantize",
        real_zero_points=True,
    )
    group_size, scale_dtype = kw["group_size"], kw["scale_dtype"]
    t, was_numpy = as_tensor(w, "w")
    require_float(t, "w")
    t = t.detach()
    f = get_format(fmt)
    if not isinstance(f, IntFormat):
        raise ValueError(f"fmt must be an integer format such as 'int4', got {f.name}")
    if t.dim() == 0:
        raise ValueError("w must be at least 1-d (groups along the last axis), got a 0-d tensor")
    n = t.shape[-1]
    if group_size is None:
        group_size = max(n, 1)
    group_size = check_int(group_size, "group_size", minimum=1)
    if n % group_size != 0:
        raise ValueError(f"group_size must divide the last dimension {n}, got {group_size}")
    iters = check_int(iters, "iters", minimum=0)
    p = check_real(lp_norm, "lp_norm", low=0, high=1, low_open=True)
    beta = check_real(beta, "beta", low=0, low_open=True)
    kappa = check_real(kappa, "kappa", low=1)
    optimize_scale = check_bool(optimize_scale, "optimize_scale")
    early_stop = check_bool(early_stop, "early_stop")
    if not isinstance(scale_dtype, str) or scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {tuple(SCALE_DTYPES)}, got {scale_dtype!r}")
    work = t.to(torch.float64)
    require_finite(work)
    g = work.reshape(*t.shape[:-1], n // group_size, group_size)
    span = f.qmax - f.qmin
    if t.numel():
        lo = g.amin(-1, keepdim=True)
        hi = g.amax(-1, keepdim=True)
    else:
        lo = hi = g.new_zeros((*g.shape[:-1], 1))
    s = (hi - lo) / span
    # a constant group c: any scale works, z maps it exactly; s = |c| / span keeps z within
    # [qmin - span, qmin + span] (s = 1 would give z = qmin - c, beyond fp16 for |c| > 65504)
    s = torch.where(s > 0, s, torch.where(lo != 0, lo.abs() / span, torch.ones_like(s)))
    z = f.qmin - lo / s
    best_err = (g - (_grid(g, s, z, f) - z) * s).abs().mean(-1, keepdim=True)
    best_s, best_z = s.clone(), z.clone()
    for _ in range(iters):
        codes = _grid(g, s, z, f)
        err = g - (codes - z) * s
        we = shrink_lp(err, beta, p)
        target = g - we
        if optimize_scale:
            cm = codes.mean(-1, keepdim=True)
            tm = target.mean(-1, keepdim=True)
            var = ((codes - cm) ** 2).mean(-1, keepdim=True)
            cov = ((codes - cm) * (target - tm)).mean(-1, keepdim=True)
            new_s = torch.where((var > 0) & (cov > 0), cov / torch.where(var > 0, var, 1.0), s)
            s = new_s
            z = cm - tm / s
        else:
            z = (codes - target / s).mean(-1, keepdim=True)
        beta *= kappa
        e = (g - (_grid(g, s, z, f) - z) * s).abs().mean(-1, keepdim=True)
        better = e < best_err
        best_err = torch.where(better, e, best_err)
        best_s = torch.where(better, s, best_s)
        best_z = torch.where(better, z, best_z)
        if early_stop and not bool(better.any()):
            break
    # store scales and zero points as scale_dtype values, then encode with those
    s_st = store_scales(best_s, scale_dtype).double()
    z_st = best_z.to(SCALE_DTYPES[scale_dtype]).double()
    if not bool(torch.isfinite(z_st).all()):
        worst = float(best_z[~torch.isfinite(z_st)].abs().max())
        raise ValueError(
            f"scale_dtype={scale_dtype!r} cannot hold a zero point of magnitude {worst:.4g} that a "
            "group needs (its values lie far from 0 compared with their spread): use "
            "scale_dtype='fp32', or center w"
        )
    codes = _grid(g, s_st, z_st, f).to(f.code_dtype).reshape(t.shape)
    return QTensor(
        codes,
        s_st.squeeze(-1).float(),
        z_st.squeeze(-1).float(),
        f,
        tuple(t.shape),
        "group",
        0,
        group_size,
        scale_dtype,
        t.dtype,
        was_numpy,
    )
