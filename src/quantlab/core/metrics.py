"""Error metrics between an original tensor ``x`` and its reconstruction ``x_hat``.

* ``mse = mean((x - x_hat)^2)``
* ``relative_error = ||x - x_hat||_2 / ||x||_2`` (the whole tensor; 0 means exact)
* ``mean_relative_error = mean(|x - x_hat|) / mean(|x|)`` (the explorer's "average error")
* ``sqnr_db = 10 log10( sum(x^2) / sum((x - x_hat)^2) )`` -- signal-to-quantization-noise
  ratio in decibels; each extra bit of a uniform quantizer adds about 6.02 dB.
* ``cosine_similarity = <x, x_hat> / (||x|| ||x_hat||)`` (over the last axis with
  ``dim=-1``, otherwise over the whole tensor).

All reduce in float64. Inputs may be numpy arrays or torch tensors (mixed is fine) of the
same shape; tensors that require grad are read detached. Scalars come back as Python
floats; ``cosine_similarity(..., dim=...)`` returns an array of the kind of ``x``.

Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits".
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ._backend import ArrayLike, as_tensor, like_input, require_float
from .validate import check_int

__all__ = ["mse", "relative_error", "mean_relative_error", "sqnr_db", "cosine_similarity"]


def _pair(x: ArrayLike, x_hat: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    a, _ = as_tensor(x, "x")
    b, _ = as_tensor(x_hat, "x_hat")
    a, b = a.detach(), b.detach()  # metrics are numbers, not part of a graph
    require_float(a, "x")
    require_float(b, "x_hat")
    if a.shape != b.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError("x is empty: an error metric needs at least one element")
    return a.double(), b.double()


def mse(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Mean squared error ``mean((x - x_hat)^2)``."""
    a, b = _pair(x, x_hat)
    return float(((a - b) ** 2).mean())


def relative_error(x: ArrayLike, x_hat: ArrayLike) -> float:
    """``||x - x_hat|| / ||x||`` (Frobenius norms). Raises ValueError if ``x`` is all zeros."""
    a, b = _pair(x, x_hat)
    den = float(torch.linalg.vector_norm(a))
    if den == 0:
        raise ValueError("relative_error is undefined for an all-zero x")
    return float(torch.linalg.vector_norm(a - b)) / den


def mean_relative_error(x: ArrayLike, x_hat: ArrayLike) -> float:
    """``mean|x - x_hat| / mean|x|``: the average error as a fraction of the average size."""
    a, b = _pair(x, x_hat)
    den = float(a.abs().mean())
    if den == 0:
        raise ValueError("mean_relative_error is undefined for an all-zero x")
    return float((a - b).abs().mean()) / den


def sqnr_db(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum x^2 / sum (x - x_hat)^2)`` in dB.

    Returns ``inf`` for an exact reconstruction. Raises ValueError if ``x`` is all zeros.
    """
    a, b = _pair(x, x_hat)
    signal = float((a**2).sum())
    if signal == 0:
        raise ValueError("sqnr_db is undefined for an all-zero x")
    noise = float(((a - b) ** 2).sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise)


def cosine_similarity(x: ArrayLike, x_hat: ArrayLike, dim: Optional[int] = None):
    """Cosine similarity of ``x`` and ``x_hat``.

    Args:
        x, x_hat: same shape.
        dim: None for one number over the whole tensors; an axis (e.g. -1) for one value
            per row, returned as an array of the kind of ``x``.

    Raises:
        ValueError: shapes differ, an input is empty, or a compared vector is all zeros.
    """
    a, b = _pair(x, x_hat)
    if dim is None:
        na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
        if na == 0 or nb == 0:
            raise ValueError("cosine_similarity is undefined when a vector is all zeros")
        return float((a * b).sum()) / (na * nb)
    dim = check_int(dim, "dim", what="None or an int axis")
    if not -a.dim() <= dim < a.dim():
        raise ValueError(f"dim must be None or an axis of a {a.dim()}-d tensor, got {dim!r}")
    na = torch.linalg.vector_norm(a, dim=dim)
    nb = torch.linalg.vector_norm(b, dim=dim)
    if bool((na == 0).any()) or bool((nb == 0).any()):
        raise ValueError("cosine_similarity is undefined when a vector is all zeros")
    out = (a * b).sum(dim=dim) / (na * nb)
    _, was_numpy = as_tensor(x, "x")
    return like_input(out, was_numpy)
