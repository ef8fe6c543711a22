"""Importance-matrix quantization, as llama.cpp's ``imatrix``.

A Linear layer ``y = W x`` makes the output error ``sum_j dW_ij x_j``; averaged over
calibration inputs its square is ``dW_i (X^T X) dW_i^T``. Keeping only the diagonal of
``X^T X`` gives one *importance* per input column::

    imp_j = sum_n x_nj^2            (the diagonal of X^T X)

so the rounding of column ``j`` matters in proportion to ``imp_j`` (llama.cpp's
``llama-imatrix`` collects these sums; Kawrakow, 2024, llama.cpp PR #4861 "importance
matrix"). The weights themselves are still plain symmetric groups along the last axis,
``w_hat = s * clamp(round(w / s), qmin, qmax)``; only the *choice* of each group's
scale changes: among candidate scales

    s_k = f_k * absmax / qmax,   f_k on a grid of n_grid values in factor_range (and f = 1)

take the rounding pattern ``q_k = clamp(round(w / s_k))`` and its weighted least-squares
scale ``s*_k = sum_j imp_j w_j q_j / sum_j imp_j q_j^2`` (as llama.cpp's
``make_qx_quants`` does), and keep the ``k`` that minimises the weighted error

    E = sum_j imp_j (w_j - s*_k q_j)^2.

``f = 1`` is always a candidate and is taken on ties, and its least-squares scale is no
worse than ``absmax / qmax``, so ``E`` never exceeds that of round-to-nearest. With
uniform importance this is the plain (unweighted) scale search.

Taught in: chapters/ (Beyond int4).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

from ..core._backend import ArrayLike, as_tensor, like_input, require_float
from ..core.formats import IntFormat, get_format
from ..core.quantize import SCALE_DTYPES, QTensor, require_finite, store_scales
from ..core.scheme import DEFAULT_SCALE_DTYPE, SchemeLike, rowwise_recipe
from ..core.validate import check_int, check_real

__all__ = [
    "importance_from_activations",
    "collect_importance",
    "imatrix_quantize",
    "weighted_error",
]


def importance_from_activations(x: ArrayLike) -> ArrayLike:
    """Per-column importance ``imp_j = sum_n x_nj^2`` of calibration inputs.

    Args:
        x: float array ``(..., in_features)``: the inputs a Linear layer received.

    Returns:
        ``(in_features,)`` float64 array of the kind of ``x``.

    Raises:
        TypeError: ``x`` not a float array. ValueError: 0-d, NaN or infinity.

    Taught in: chapters/ (Beyond int4).
    """
    t, was_numpy = as_tensor(x, "x")
    require_float(t, "x")
    if t.dim() == 0:
        raise ValueError("x must be at least 1-d (..., in_features), got a 0-d tensor")
    t = t.detach().double().reshape(math.prod(t.shape[:-1]), t.shape[-1])
    require_finite(t)
    imp = (t * t).sum(0)
    if not bool(torch.isfinite(imp).all()):
        raise ValueError(f"x holds values up to {float(t.abs().max()):.4g}, whose sums of squares overflow float64")
    return like_input(imp, was_numpy)


def collect_importance(
    model: torch.nn.Module,
    run: Callable[[torch.nn.Module], object],
    layers: Optional[Iterable[str]] = None,
) -> dict[str, np.ndarray]:
    """Importance of every input column of a model's Linear layers, from one calibration run.

    Uses :func:`quantlab.calibration.collect_layer_stats` (which accumulates ``X^T X``)
    and takes its diagonal: ``imp_j = sum_n x_nj^2``.

    Args:
        model, run, layers: as in :func:`quantlab.calibration.collect_layer_stats`.

    Returns:
        ``{layer name: (in_features,) float64 numpy array}``.

    Taught in: chapters/ (Beyond int4).
    """
    from .calibration import collect_layer_stats

    stats = collect_layer_stats(model, run, layers)
    return {name: torch.diagonal(st.xtx).double().cpu().numpy().copy() for name, st in stats.items()}


def weighted_error(w: ArrayLike, w_hat: ArrayLike, importance: ArrayLike) -> float:
    """``sum_ij imp_j (w_ij - w_hat_ij)^2``: the importance-weighted squared error.

    Taught in: chapters/ (Beyond int4).
    """
    a, _ = as_tensor(w, "w")
    b, _ = as_tensor(w_hat, "w_hat")
    if a.dim() == 0:
        raise ValueError("w must be at least 1-d (..., in_features), got a 0-d tensor")
    imp = _importance(importance, a.shape[-1])
    if a.shape != b.shape:
        raise ValueError(f"w_hat must have the shape of w {tuple(a.shape)}, got {tuple(b.shape)}")
    d = a.double() - b.double()
    return float((d * d * imp).sum())


def _importance(importance: Any, n: int) -> torch.Tensor:
    t, _ = as_tensor(importance, "importance")
    require_float(t, "importance")
    if tuple(t.shape) != (n,):
        raise ValueError(f"importance must have shape ({n},) (one per input column), got {tuple(t.shape)}")
    t = t.detach().double()
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"importance must hold finite values >= 0, got {t[~torch.isfinite(t) | (t < 0)][:4].tolist()}")
    if n and not bool((t > 0).any()):
        raise ValueError("importance must have at least one positive entry, got all zeros")
    return t


def imatrix_quantize(
    w: ArrayLike,
    importance: Optional[ArrayLike] = None,
    fmt: SchemeLike = "int4",
    group_size: Optional[int] = 32,
    *,
    n_grid: int = 20,
    factor_range: tuple[float, float] = (0.6, 1.2),
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
) -> QTensor:
    """Symmetric group quantization whose scales minimise the importance-weighted error.

    See the module docstring for the search. Columns with zero importance may round
    anywhere; the search only looks at the weighted error.

    Args:
        w: float weight ``(..., in_features)`` (numpy or torch).
        importance: ``(in_features,)`` non-negative importances (e.g. from
            :func:`importance_from_activations`); None for uniform.
        fmt: a signed integer format (``"int4"``, ``"int3"``, ...), or a symmetric
            :class:`~quantlab.core.scheme.QuantScheme` that also gives ``group_size`` and ``scale_dtype``.
        group_size: elements per group along the last axis (must divide it); None for one
            group per row.
        n_grid: candidate scale factors besides 1 (>= 1).
        factor_range: ``(low, high)`` with ``0 < low <= high``: the factors' range.
        scale_dtype: ``"fp16"`` (the recipes' default), ``"bf16"`` or ``"fp32"``: how the scales
            are stored. The search compares candidates with exact scales and stores the winner's:
            with fp32 the result is never worse than round-to-nearest by the weighted error; with
            fp16 or bf16 the stored scale can cost a little of that (at most one ulp of the scale).

    Returns:
        A symmetric :class:`~quantlab.quantize.QTensor` (``granularity="group"``);
        ``dequantize()`` returns the kind of ``w``.

    Raises:
        TypeError, ValueError: naming the parameter, e.g. an importance of the wrong
            length or with negative entries, a non-integer or unsigned ``fmt``, a
            ``group_size`` not dividing the last axis, NaN or infinity in ``w``.

    Example:
        >>> import numpy as np
        >>> w = np.array([[0.9, -0.35, 0.5, 0.2]], np.float32)
        >>> imatrix_quantize(w, np.array([1.0, 0.0, 0.0, 0.0]), "int2", None, scale_dtype="fp32").dequantize()[0, 0]
        np.float32(0.9)

    Taught in: chapters/ (Beyond int4).
    """
    fmt, kw = rowwise_recipe(
        fmt,
        {"group_size": group_size, "symmetric": True, "scale_dtype": scale_dtype},
        {"group_size": 32, "symmetric": True, "scale_dtype": DEFAULT_SCALE_DTYPE},
        "imatrix_quantize",
    )
    if not kw["symmetric"]:
        raise ValueError("imatrix_quantize makes symmetric groups: the scheme must have symmetric=True, got False")
    group_size, scale_dtype = kw["group_size"], kw["scale_dtype"]
    t, was_numpy = as_tensor(w, "w")
    require_float(t, "w")
    t = t.detach()
    f = get_format(fmt)
    if not isinstance(f, IntFormat) or not f.signed or f.bits < 2:
        raise ValueError(f"fmt must be a signed integer format of >= 2 bits such as 'int4', got {f.name}")
    if t.dim() == 0:
        raise ValueError("w must be at least 1-d (groups along the last axis), got a 0-d tensor")
    n = t.shape[-1]
    imp = torch.ones(n, dtype=torch.float64) if importance is None else _importance(importance, n)
    if group_size is None:
        group_size = max(n, 1)
    group_size = check_int(group_size, "group_size", minimum=1)
    if n % group_size != 0:
        raise ValueError(f"group_size must divide the last dimension {n}, got {group_size}")
    n_grid = check_int(n_grid, "n_grid", minimum=1)
    if not isinstance(factor_range, (tuple, list)) or len(factor_range) != 2:
        raise TypeError(f"factor_range must be a pair (low, high), got {factor_range!r}")
    lo = check_real(factor_range[0], "factor_range[0]", low=0, low_open=True)
    hi = check_real(factor_range[1], "factor_range[1]", low=lo)
    if not isinstance(scale_dtype, str) or scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {tuple(SCALE_DTYPES)}, got {scale_dtype!r}")
    x = t.double()
    require_finite(x)
    g = x.reshape(*t.shape[:-1], n // group_size, group_size)
    if n and float(imp.max()) > 0:
        # the search only compares ratios and sums weighted by imp: dividing imp by a power
        # of two near its maximum changes no result (exactly) and keeps imp * w * q finite
        imp = imp * 2.0 ** -math.frexp(float(imp.max()))[1]
    wi = imp.reshape(n // group_size, group_size)
    amax = g.abs().amax(-1, keepdim=True) if g.numel() else g.new_zeros((*g.shape[:-1], 1))
    base = torch.where(amax > 0, amax / f.qmax, torch.ones_like(amax))
    factors = [1.0] + [float(v) for v in np.linspace(lo, hi, n_grid)]
    best_err = best_s = best_q = None
    for fac in factors:
        q = torch.clamp(torch.round(g / (base * fac)), f.qmin, f.qmax)
        num = (wi * g * q).sum(-1, keepdim=True)
        den = (wi * q * q).sum(-1, keepdim=True)
        s = torch.where((den > 0) & (num > 0), num / torch.where(den > 0, den, 1.0), base)
        err = (wi * (g - s * q) ** 2).sum(-1, keepdim=True)
        if best_err is None:
            best_err, best_s, best_q = err, s, q
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s = torch.where(better, s, best_s)
            best_q = torch.where(better, q, best_q)
    scale = store_scales(best_s, scale_dtype)
    codes = best_q.to(f.code_dtype).reshape(t.shape)
    return QTensor(
        codes, scale.squeeze(-1), None, f, tuple(t.shape), "group", 0, group_size, scale_dtype, t.dtype, was_numpy
    )
