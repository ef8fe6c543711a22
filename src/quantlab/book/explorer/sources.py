"""The weights the explorer quantizes, the strip of 64 it draws, and its histogram bins.

Five synthetic distributions of 64 x 256 weights with the same standard deviation
(:data:`~quantlab.book.explorer.settings.NORMAL_STD`), each seeded, and one real layer:

* ``"normal"``: ``N(0, std^2)``, the bell most trained weights resemble;
* ``"laplace"``: a sharper peak and longer tails (``scale = std / sqrt(2)``);
* ``"uniform"``: flat on ``±sqrt(3) std``, no tails at all;
* ``"bimodal"``: two bumps, ``±0.09`` plus ``N(0, 0.055^2)``;
* ``"outlier"``: the normal weights with one weight set to :data:`OUTLIER` (about 9.4
  standard deviations out);
* ``"minilm"``: 64 rows of a real layer of all-MiniLM-L6-v2 (:data:`MINILM_WEIGHT`), whose
  two largest weights (7.91 and 1.24) are outliers.

Taught in: chapters/02_explorer.ipynb, "Try it first" and "Real weights with outliers".
"""

from __future__ import annotations

import math
from functools import cache
from typing import Union

import numpy as np
import torch

from .settings import GROUP_SIZE, NORMAL_STD, SOURCES

__all__ = [
    "NORMAL_SHAPE",
    "OUTLIER",
    "OUTLIER_AT",
    "OUTLIER_SOURCES",
    "MINILM_WEIGHT",
    "MINILM_ROWS",
    "WINDOW",
    "HIST_EDGES",
    "weights",
    "largest_weight",
    "strip_location",
    "strip",
    "histogram",
    "source_histogram",
]

#: Shape of the synthetic sources.
NORMAL_SHAPE = (64, 256)
#: The planted outlier of the ``"outlier"`` source, and its position (row, column).
OUTLIER = 1.0
OUTLIER_AT = (32, 40)
#: Sources whose largest weight is an outlier that sets a per-tensor scale on its own.
OUTLIER_SOURCES = ("outlier", "minilm")
#: The real layer: rows 96..159 of this weight (64 x 1536) hold its two largest weights.
MINILM_WEIGHT = "encoder.layer.0.output.dense.weight"
MINILM_ROWS = (96, 160)
#: The window drawn on the number line and the histogram's fixed bins (90 bins of 0.01).
WINDOW = 0.45
HIST_EDGES: np.ndarray = np.round(np.linspace(-WINDOW, WINDOW, 91), 10)
#: The strip is a group whose weights all stay inside this bound (no outlier on it).
_STRIP_LIMIT = {"minilm": 0.3}


def _check_source(source: object) -> str:
    if not isinstance(source, str) or source not in SOURCES:
        raise ValueError(f"source must be one of {tuple(SOURCES)}, got {source!r}")
    return source


def _synthetic(source: str) -> np.ndarray:
    """The float64 draws of a synthetic source (64 x 256), each from its own seeded generator."""
    s = NORMAL_STD
    if source in ("normal", "outlier"):
        z = np.random.default_rng(0).standard_normal(NORMAL_SHAPE) * s
        if source == "outlier":
            z[OUTLIER_AT] = OUTLIER
        return z
    if source == "laplace":
        return np.random.default_rng(1).laplace(0.0, s / math.sqrt(2), NORMAL_SHAPE)
    if source == "uniform":
        half = math.sqrt(3) * s
        return np.random.default_rng(2).uniform(-half, half, NORMAL_SHAPE)
    rng = np.random.default_rng(3)  # bimodal: centres +-0.09, spread 0.055 (std 0.1055)
    sign = np.where(rng.random(NORMAL_SHAPE) < 0.5, -1.0, 1.0)
    return sign * 0.09 + rng.standard_normal(NORMAL_SHAPE) * 0.055


@cache
def _weights(source: str) -> torch.Tensor:
    if source != "minilm":
        return torch.from_numpy(_synthetic(source).astype(np.float32))
    from ..models import minilm

    w = minilm.load_weight(MINILM_WEIGHT)
    return w[MINILM_ROWS[0] : MINILM_ROWS[1]].contiguous()


def weights(source: str) -> torch.Tensor:
    """The weights a source stands for (a copy), float32.

    * synthetic sources (``"normal"``, ``"laplace"``, ``"uniform"``, ``"bimodal"``,
      ``"outlier"``): 64 x 256 seeded draws (numpy ``default_rng``), described in the
      module docstring; ``"normal"`` is ``N(0, 0.106^2)`` from ``default_rng(0)``.
    * ``"minilm"``: rows 96..159 of all-MiniLM-L6-v2's ``encoder.layer.0.output.dense``
      weight (64 x 1536), which hold the layer's two largest weights (7.91 and 1.24;
      the rest lie within +-0.65).

    Raises:
        ValueError: unknown source.
    """
    return _weights(_check_source(source)).clone()


@cache
def largest_weight(source: str) -> float:
    """The weight of largest magnitude of a source (signed): the outlier a regime names."""
    x = _weights(_check_source(source)).flatten()
    return float(x[x.abs().argmax()])


@cache
def strip_location(source: str) -> tuple[int, int]:
    """``(row, group)`` of the group of 64 weights shown on the strip.

    The group whose smaller side (``min(max, -min)``) is widest among the groups whose
    values stay inside +-0.35 (+-0.3 for MiniLM): a group without outliers that spans
    both signs. Every block format's blocks start at its first weight.
    """
    w = _weights(_check_source(source)).numpy()
    g = w.reshape(w.shape[0], -1, GROUP_SIZE)
    balanced = np.minimum(g.max(-1), -g.min(-1))
    balanced[np.abs(g).max(-1) > _STRIP_LIMIT.get(source, 0.35)] = -np.inf
    r, c = np.unravel_index(int(np.argmax(balanced)), balanced.shape)
    return int(r), int(c)


def strip(source: str) -> np.ndarray:
    """The 64 weights of the strip (:func:`strip_location`), float32 values as a new array."""
    r, c = strip_location(source)
    return _weights(source).numpy()[r, c * GROUP_SIZE : (c + 1) * GROUP_SIZE].copy()


def histogram(values: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """Counts of ``values`` in the 90 bins of :data:`HIST_EDGES` (width 0.01 over +-0.45).

    Values outside the window are not counted; the last bin includes its right edge
    (``numpy.histogram`` with ``bins=HIST_EDGES``).

    Args:
        values: real numbers, any shape: a numpy array or a torch tensor (any device).

    Returns:
        ``(90,)`` int64 numpy counts, for either kind of input (a histogram is data for a
        plot, not a tensor to compute with).

    Raises:
        TypeError: ``values`` is neither a numpy array nor a torch tensor.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    elif not isinstance(values, np.ndarray):
        raise TypeError(f"values must be a numpy array or a torch tensor, got {type(values).__name__}")
    counts, _ = np.histogram(values.ravel(), bins=HIST_EDGES)
    return counts


@cache
def source_histogram(source: str) -> tuple[np.ndarray, int]:
    """Histogram of a source's original weights (read-only) and how many lie beyond the window."""
    x = _weights(_check_source(source))
    counts = histogram(x)
    counts.flags.writeable = False
    return counts, int((x.abs() > WINDOW).sum())
