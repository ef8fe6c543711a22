"""Activation outliers: why they break int8 matmuls, and two fixes.

In transformers a handful of *input feature* columns of the activations ``X`` (tokens x
features) carry values tens of times larger than the rest, in every token. Quantizing
``X`` with one scale per token (``vector-wise``) then spends almost all of the int8 range
on those few columns: the other features round to a handful of levels.

* :func:`int8_matmul` -- the plain int8 product ``Y = X W^T`` with ``X`` quantized per
  token (row) or per tensor and ``W`` per output channel (row), both absmax int8:
  ``Y ~ (s_x s_w^T) * (X_q W_q^T)``, the integer product rescaled.
* :func:`mixed_precision_matmul` -- LLM.int8() (Dettmers et al., 2022): the feature
  columns where any ``|x| > threshold`` (6.0 by default) are multiplied in floating point
  (LLM.int8() keeps them in fp16; here they keep the input's dtype), the rest in int8:
  ``Y = X[:, O] W[:, O]^T + int8(X[:, ~O]) int8(W[:, ~O])^T``.
  ``threshold=inf`` is the plain int8 product; ``threshold=0`` the float one.
* :func:`smooth` -- SmoothQuant (Xiao et al., 2023): divide feature ``j`` of ``X`` by
  ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` and multiply column ``j`` of ``W`` by it.
  ``(X / s)(W * s)^T = X W^T`` exactly before quantization, but the outliers have moved
  into the weights, which quantize per output channel and tolerate them. Like AWQ's
  scales, ``1/s`` folds into the preceding norm (see :mod:`quantlab.awq`).

Taught in: chapters/04b_language_model.ipynb, "Activation outliers" (sec-llm-outliers).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..core._backend import ArrayLike, as_tensor, like_input, require_float
from ..core.quantize import quantize

__all__ = [
    "outlier_columns",
    "int8_matmul",
    "mixed_precision_matmul",
    "smoothquant_scales",
    "smooth",
]

ACT_GRANULARITIES = ("token", "tensor")


def _pair(X: ArrayLike, W: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, bool]:
    x, was_numpy = as_tensor(X, "X")
    w, _ = as_tensor(W, "W")
    require_float(x, "X")
    require_float(w, "W")
    if x.dim() != 2:
        raise ValueError(f"X must be 2-d (tokens, in_features), got shape {tuple(x.shape)}")
    if w.dim() != 2:
        raise ValueError(f"W must be 2-d (out_features, in_features), got shape {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"X has {x.shape[1]} features but W has {w.shape[1]} input features; they must match")
    return x, w, was_numpy


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a non-negative number, got {threshold!r}")
    if math.isnan(threshold) or threshold < 0:
        raise ValueError(f"threshold must be >= 0 (inf allowed), got {threshold}")
    return float(threshold)


def outlier_columns(X: ArrayLike, threshold: float = 6.0) -> ArrayLike:
    """Boolean mask of the feature columns of ``X`` that hold any ``|x| > threshold``.

    Args:
        X: activations ``(..., in_features)``.
        threshold: magnitude above which a value is an outlier (>= 0; inf: none).

    Returns:
        bool mask ``(in_features,)``, same kind as ``X``.

    Raises:
        TypeError: non-float ``X`` or non-number threshold.
        ValueError: 0-d ``X``, negative or NaN threshold.
    """
    x, was_numpy = as_tensor(X, "X")
    require_float(x, "X")
    threshold = _check_threshold(threshold)
    if x.dim() == 0:
        raise ValueError("X must have at least one axis (..., in_features), got a 0-d value")
    flat = x.reshape(-1, x.shape[-1])
    mask = (
        (flat.abs() > threshold).any(0)
        if flat.shape[0]
        else torch.zeros(x.shape[-1], dtype=torch.bool, device=x.device)
    )
    return like_input(mask, was_numpy)


def _int8_product(x: torch.Tensor, w: torch.Tensor, act: str) -> torch.Tensor:
    """``dequant(int8(x)) @ dequant(int8(w))^T``: the integer product, rescaled."""
    if act == "token":
        qx = quantize(x, "int8", granularity="channel", axis=0)
    else:
        qx = quantize(x, "int8", granularity="tensor")
    qw = quantize(w, "int8", granularity="channel", axis=0)
    # Integer products summed in float64 are exact (|sum| < 127^2 * in < 2^53), then the
    # outer product of the scales restores the units: (s_x s_w^T) * (X_q W_q^T).
    acc = qx.codes.double() @ qw.codes.double().T
    sx = qx.scale.double().reshape(-1, 1) if act == "token" else qx.scale.double()
    return (acc * sx * qw.scale.double().reshape(1, -1)).to(x.dtype)


def int8_matmul(X: ArrayLike, W: ArrayLike, act_granularity: str = "token") -> ArrayLike:
    """``Y ~ X W^T`` with ``X`` and ``W`` absmax-quantized to int8.

    Args:
        X: activations ``(tokens, in_features)``.
        W: weight ``(out_features, in_features)``; quantized per output channel (row).
        act_granularity: ``"token"`` (one scale per row of ``X``, LLM.int8()'s vector-wise)
            or ``"tensor"`` (one scale for all of ``X``).

    Returns:
        ``(tokens, out_features)`` in ``X``'s dtype and kind.

    Raises:
        TypeError, ValueError: non-float inputs, shapes that do not fit, an unknown
            ``act_granularity``.
    """
    x, w, was_numpy = _pair(X, W)
    if act_granularity not in ACT_GRANULARITIES:
        raise ValueError(f"act_granularity must be one of {ACT_GRANULARITIES}, got {act_granularity!r}")
    return like_input(_int8_product(x, w, act_granularity), was_numpy)


def mixed_precision_matmul(
    X: ArrayLike, W: ArrayLike, threshold: float = 6.0, act_granularity: str = "token"
) -> ArrayLike:
    """LLM.int8()'s decomposition: outlier feature columns in float, the rest in int8.

    ``O = outlier_columns(X, threshold)``;
    ``Y = X[:, O] W[:, O]^T + int8_matmul(X[:, ~O], W[:, ~O])``.

    Args:
        X: activations ``(tokens, in_features)``.
        W: weight ``(out_features, in_features)``.
        threshold: outlier magnitude (6.0 as in LLM.int8()); ``inf`` gives plain int8,
            ``0`` keeps every non-zero column in float (the float product).
        act_granularity: see :func:`int8_matmul`.

    Returns:
        ``(tokens, out_features)`` in ``X``'s dtype and kind.

    Raises:
        TypeError, ValueError: as :func:`int8_matmul`, and a negative or NaN threshold.
    """
    x, w, was_numpy = _pair(X, W)
    threshold = _check_threshold(threshold)
    if act_granularity not in ACT_GRANULARITIES:
        raise ValueError(f"act_granularity must be one of {ACT_GRANULARITIES}, got {act_granularity!r}")
    mask = outlier_columns(x, threshold)
    y = _int8_product(x[:, ~mask], w[:, ~mask], act_granularity)
    if bool(mask.any()):
        y += x[:, mask] @ w[:, mask].to(x.dtype).T
    return like_input(y, was_numpy)


def smoothquant_scales(act_abs_max: ArrayLike, W: ArrayLike, alpha: float = 0.5) -> ArrayLike:
    """SmoothQuant's migration scales ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``.

    Args:
        act_abs_max: ``max |x_j|`` per input feature ``(in_features,)``, from calibration.
        W: weight ``(out_features, in_features)``; ``max|W_j|`` is over column ``j``.
        alpha: migration strength in ``[0, 1]`` (0.5 in the paper; 0: ``s = 1/max|W_j|``,
            1: ``s = max|X_j|``). Zero maxima are raised to 1e-5 so ``s`` stays finite.

    Returns:
        ``s`` ``(in_features,)``, same kind as ``act_abs_max``.

    Raises:
        TypeError, ValueError: non-float input, shapes that do not fit, ``alpha`` outside [0, 1],
            negative or non-finite maxima.
    """
    a, was_numpy = as_tensor(act_abs_max, "act_abs_max")
    w, _ = as_tensor(W, "W")
    require_float(a, "act_abs_max")
    require_float(w, "W")
    if w.dim() != 2:
        raise ValueError(f"W must be 2-d (out_features, in_features), got shape {tuple(w.shape)}")
    if a.shape != (w.shape[1],):
        raise ValueError(f"act_abs_max must have shape ({w.shape[1]},), got {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
        raise ValueError("act_abs_max must hold finite, non-negative values")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise TypeError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    wmax = w.detach().abs().amax(0).to(dtype).clamp(min=1e-5)
    s = a.to(dtype).clamp(min=1e-5).pow(alpha) / wmax.pow(1 - alpha)
    return like_input(s, was_numpy)


def smooth(
    X: ArrayLike, W: ArrayLike, alpha: float = 0.5, act_abs_max: Optional[ArrayLike] = None
) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
    """Migrate activation outliers into the weights: ``(X / s, W * s, s)``.

    ``(X / s) (W * s)^T == X W^T`` up to float rounding.

    Args:
        X: activations ``(tokens, in_features)``.
        W: weight ``(out_features, in_features)``.
        alpha: see :func:`smoothquant_scales`.
        act_abs_max: calibration maxima (default: measured on ``X`` itself).

    Returns:
        ``(X_smooth, W_smooth, s)``, each of its input's kind.

    Raises:
        TypeError, ValueError: as :func:`smoothquant_scales` and :func:`int8_matmul`.
    """
    x, w, was_numpy = _pair(X, W)
    amax = x.detach().abs().amax(0) if act_abs_max is None else act_abs_max
    s_t, _ = as_tensor(smoothquant_scales(amax, w, alpha))
    w_was_numpy = isinstance(W, np.ndarray)
    return (
        like_input(x / s_t.to(x.dtype), was_numpy),
        like_input(w * s_t.to(w.dtype), w_was_numpy),
        like_input(s_t, was_numpy),
    )
