"""The Quantization Explorer: drag a bit-width slider, watch weights snap to the grid.

One source of numbers, two front ends:

* :func:`explore` computes everything the explorer shows for one setting
  ``(source, bits, granularity, symmetric, family)`` with quantlab's own quantizers
  (:func:`quantlab.quantize`, :func:`quantlab.metrics.mean_relative_error`): the number of
  levels ``2^bits``, the compression ``32 / bits``, the average error
  ``100 * mean|x - x_hat| / mean|x|`` in %, the storage cost with scales, a short
  description of the regime, one group of 64 sample weights with the values they snap
  to, the grid those weights see, and a histogram of all weights after quantization on
  fixed bins.
* :class:`Explorer` is the kernel front end: ipywidgets controls and a matplotlib figure
  whose artists are updated in place (``set_offsets``, ``set_segments``,
  ``StepPatch.set_data``), never re-created.
* :func:`static_html` is the kernel-free front end for the rendered book: it computes
  every setting with :func:`explore` when the book is built and returns one
  self-contained HTML string (inline SVG, inline script, no CDN). The script only looks
  up the precomputed entry for the chosen controls and draws it; it does no
  quantization arithmetic. The script and its styles are real files shipped beside this
  module (``quantlab/book/explorer_assets/explorer.js`` and ``explorer.css``), inlined into
  the page when it is built; the styles also hold the explorer's colours (:data:`COLORS`).

The bit widths are 2..16 (integers ``int2`` .. ``int16``) and 32, which is float32
itself (the baseline: no error, ``2^32`` bit patterns). quantlab's integer formats stop
at 16 bits and nothing between 16 and 32 bits is used for weights, so the slider steps
from 16 straight to 32.

Besides integers, floats and NF4, the "Format" control offers three block-scaled 4-bit
formats (:data:`BLOCK_FORMATS`), whose blocks are fixed by the format: ``mxfp4`` (OCP MX,
:mod:`quantlab.mx`), ``nvfp4`` and llama.cpp's ``q4_k``
(:mod:`quantlab.gguf_blocks`). For them :func:`block_view` takes one block of the strip
apart: its shared scales as stored, and every weight's code, element value and decoded
value. Both front ends show it as a table under the figures.

Taught in: chapters/02_explorer.ipynb, "Try it first", "What you just saw" and "Blocks that
share a scale".
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

from ..core import gguf_blocks, metrics
from ..core.formats import BlockFormat, CodebookFormat, FloatFormat, IntFormat, get_format
from ..core.mx import E8M0_BIAS, scale_codes
from ..core.quantize import QTensor, quantize

__all__ = [
    "BITS",
    "SOURCES",
    "GRANULARITIES",
    "FAMILIES",
    "BLOCK_FORMATS",
    "GROUP_SIZE",
    "FLOAT_FORMATS",
    "NORMAL_STD",
    "NORMAL_SHAPE",
    "WINDOW",
    "MINILM_WEIGHT",
    "MINILM_ROWS",
    "HIST_EDGES",
    "histogram",
    "Settings",
    "ExplorerData",
    "weights",
    "strip_location",
    "Resolved",
    "resolve",
    "explore",
    "BlockScale",
    "BlockView",
    "block_view",
    "all_settings",
    "format_figures",
    "FIGURE_LABELS",
    "clear_cache",
    "static_data",
    "static_html",
    "COLORS",
    "Explorer",
]

#: Standard deviation of the normal source, chosen so that the strip of 64 sample
#: weights spans about -0.33 .. +0.33.
NORMAL_STD = 0.106
NORMAL_SHAPE = (64, 256)
#: Slider stops: integer widths 2..16, then 32 (float32, the baseline).
BITS: tuple[int, ...] = tuple(range(2, 17)) + (32,)
#: Weight sources and their labels.
SOURCES: dict[str, str] = {
    "normal": f"normal distribution (std {NORMAL_STD}, seeded)",
    "minilm": "MiniLM layer 0, output.dense (with outliers)",
}
#: Granularities and their labels.
GRANULARITIES: dict[str, str] = {"tensor": "per-tensor", "group": "groups of 64"}
#: Format families and their labels.
FAMILIES: dict[str, str] = {
    "int": "integer",
    "float": "float",
    "nf4": "NF4",
    "mxfp4": "MXFP4 (blocks of 32)",
    "nvfp4": "NVFP4 (blocks of 16)",
    "q4_k": "Q4_K (llama.cpp)",
}
#: The block-scaled families (4 bits only) and their block size: the weights of a row that
#: share one scale (for ``q4_k`` a sub-block; its super-blocks hold 256 weights).
BLOCK_FORMATS: dict[str, int] = {"mxfp4": 32, "nvfp4": 16, "q4_k": 32}
#: Weights per group for ``granularity="group"`` (NF4's usual block size).
GROUP_SIZE = 64
#: Float formats of the ``"float"`` family by bit width (16 and 32 are plain casts).
FLOAT_FORMATS: dict[int, str] = {4: "fp4_e2m1", 6: "fp6_e2m3", 8: "fp8_e4m3", 16: "fp16", 32: "fp32"}
#: The real layer: rows 96..159 of this weight (64 x 1536) hold its two largest weights.
MINILM_WEIGHT = "encoder.layer.0.output.dense.weight"
MINILM_ROWS = (96, 160)
#: The window drawn on the number line and the histogram's fixed bins (90 bins of 0.01).
WINDOW = 0.45
HIST_EDGES: np.ndarray = np.round(np.linspace(-WINDOW, WINDOW, 91), 10)
#: Grids with more lines than this inside the window are described, not drawn.
MAX_GRID_LINES = 256
#: Decimals of positions embedded in the static page (1e-4 is a tenth of a pixel there).
_DECIMALS = 4


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """One position of the explorer's controls.

    Attributes:
        source: ``"normal"`` or ``"minilm"``.
        bits: one of :data:`BITS`.
        granularity: ``"tensor"`` or ``"group"`` (groups of :data:`GROUP_SIZE`).
        symmetric: zero point 0 (True) or a zero point (False, integer formats only).
        family: ``"int"``, ``"float"``, ``"nf4"``, or a block format of
            :data:`BLOCK_FORMATS` (``"mxfp4"``, ``"nvfp4"``, ``"q4_k"``).
    """

    source: str = "normal"
    bits: int = 8
    granularity: str = "tensor"
    symmetric: bool = True
    family: str = "int"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {tuple(SOURCES)}, got {self.source!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise TypeError(f"bits must be an int, got {self.bits!r}")
        if self.bits not in BITS:
            raise ValueError(f"bits must be 2..16 or 32, got {self.bits}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {tuple(GRANULARITIES)}, got {self.granularity!r}"
            )
        if not isinstance(self.symmetric, (bool, np.bool_)):
            raise TypeError(f"symmetric must be True or False, got {self.symmetric!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {self.family!r}")

    @property
    def key(self) -> str:
        """Compact key used by the static page, e.g. ``"normal|8|tensor|s|int"``."""
        sym = "s" if self.symmetric else "a"
        return f"{self.source}|{self.bits}|{self.granularity}|{sym}|{self.family}"


@dataclass(frozen=True)
class Resolved:
    """What a setting actually computes.

    Attributes:
        fmt: the quantlab format name (``"q4_k"`` for llama.cpp's GGUF blocks), or None
            where the family has no such width.
        granularity: ``"tensor"`` or ``"group"``; ``"block"`` for the block formats (their
            blocks are fixed); None for an unscaled cast (fp16, fp32).
        symmetric: whether the grid is symmetric (always, except asymmetric integers).
        notes: how the controls were interpreted, in words.
    """

    fmt: Optional[str]
    granularity: Optional[str]  # None for an unscaled cast, "block" for a block format
    symmetric: bool
    notes: tuple[str, ...] = ()


def resolve(settings: Settings) -> Resolved:
    """Map a control setting to the quantlab call it stands for.

    * 32 bits is always float32 itself (an exact cast, whatever the other controls say).
    * ``"int"``: ``int2`` .. ``int16`` with a scale (and a zero point if asymmetric).
    * ``"float"``: ``fp4_e2m1``, ``fp6_e2m3``, ``fp8_e4m3`` with a scale; ``fp16`` is a
      plain cast. Other widths have no float format (``fmt=None``).
    * ``"nf4"``: NF4 at 4 bits only.
    * ``"mxfp4"``, ``"nvfp4"``, ``"q4_k"``: those block formats at 4 bits only, with
      ``granularity="block"``: their blocks and scales are fixed by the format, so the
      granularity and range controls do not apply (a note says so).
    Float and NF4 formats are symmetric (a zero point needs an integer format).

    Args:
        settings: the controls.

    Returns:
        The :class:`Resolved` call.
    """
    b, fam = settings.bits, settings.family
    if b == 32:
        notes = ("fp32 is stored as is: no scale, no grid to choose",)
        return Resolved("fp32", None, True, notes)
    if fam == "int":
        return Resolved(f"int{b}", settings.granularity, bool(settings.symmetric))
    if fam in BLOCK_FORMATS:
        name = fam.upper()
        if b != 4:
            return Resolved(None, None, True, (f"{name} is a 4-bit format: no {b}-bit {name}",))
        return Resolved(fam, "block", True, (_BLOCK_NOTES[fam],))
    notes: list[str] = []
    if not settings.symmetric:
        notes.append("float and NF4 formats are symmetric (a zero point needs integers)")
    if fam == "float":
        name = FLOAT_FORMATS.get(b)
        if name is None:
            widths = ", ".join(str(k) for k in FLOAT_FORMATS)
            return Resolved(None, None, True, (f"no {b}-bit float format: floats here have {widths} bits",))
        if b == 16:
            notes.append("fp16 is a plain cast: no scale, so granularity does not apply")
            return Resolved(name, None, True, tuple(notes))
        return Resolved(name, settings.granularity, True, tuple(notes))
    if b != 4:
        return Resolved(None, None, True, (f"NF4 is a 4-bit format: no {b}-bit NF4",))
    return Resolved("nf4", settings.granularity, True, tuple(notes))


_BLOCK_NOTES = {
    "mxfp4": "MXFP4 fixes its own blocks (32 weights of a row share one power-of-two scale) and "
             "is symmetric, so the granularity and range controls do not apply",
    "nvfp4": "NVFP4 fixes its own blocks (16 weights of a row share one fp8 scale, times one fp32 "
             "scale for the tensor) and is symmetric, so the granularity and range controls do "
             "not apply",
    "q4_k": "Q4_K fixes its own blocks (32 weights share a 6-bit scale and min, 256 weights "
            "their fp16 d and dmin) and sets its own offsets, so the granularity and range "
            "controls do not apply",
}


def all_settings() -> Iterator[Settings]:
    """Every combination of the controls, in a fixed order."""
    for source in SOURCES:
        for family in FAMILIES:
            for granularity in GRANULARITIES:
                for symmetric in (True, False):
                    for bits in BITS:
                        yield Settings(source, bits, granularity, symmetric, family)


# --------------------------------------------------------------------------- weights


@lru_cache(maxsize=None)
def _weights(source: str) -> torch.Tensor:
    if source == "normal":
        z = np.random.default_rng(0).standard_normal(NORMAL_SHAPE)
        return torch.from_numpy((z * NORMAL_STD).astype(np.float32))
    from .models import minilm

    w = minilm.load_weight(MINILM_WEIGHT)
    return w[MINILM_ROWS[0] : MINILM_ROWS[1]].contiguous()


def weights(source: str) -> torch.Tensor:
    """The weights a source stands for (a copy), float32.

    * ``"normal"``: 64 x 256 draws of ``N(0, NORMAL_STD^2)`` (numpy ``default_rng(0)``).
    * ``"minilm"``: rows 96..159 of all-MiniLM-L6-v2's ``encoder.layer.0.output.dense``
      weight (64 x 1536), which hold the layer's two largest weights (7.91 and 1.24;
      the rest lie within +-0.65).

    Raises:
        ValueError: unknown source.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {tuple(SOURCES)}, got {source!r}")
    return _weights(source).clone()


@lru_cache(maxsize=None)
def strip_location(source: str) -> tuple[int, int]:
    """``(row, group)`` of the group of 64 weights shown on the strip.

    The group whose smaller side (``min(max, -min)``) is widest among the groups whose
    values stay inside +-0.35 (normal) or +-0.3 (MiniLM): a group without outliers that
    spans both signs.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {tuple(SOURCES)}, got {source!r}")
    w = _weights(source).numpy()
    g = w.reshape(w.shape[0], -1, GROUP_SIZE)
    balanced = np.minimum(g.max(-1), -g.min(-1))
    balanced[np.abs(g).max(-1) > _STRIP_LIMIT[source]] = -np.inf
    r, c = np.unravel_index(int(np.argmax(balanced)), balanced.shape)
    return int(r), int(c)


_STRIP_LIMIT = {"normal": 0.35, "minilm": 0.3}


def _strip(source: str) -> np.ndarray:
    r, c = strip_location(source)
    return _weights(source).numpy()[r, c * GROUP_SIZE : (c + 1) * GROUP_SIZE].copy()


# --------------------------------------------------------------------------- data


@dataclass
class ExplorerData:
    """Everything the explorer shows for one setting.

    Attributes:
        settings: the controls.
        available: False where the family has no format of that width.
        fmt: the quantlab format name (``None`` if not available).
        granularity, symmetric: the options actually used (``granularity=None`` for a cast,
            ``"block"`` for a block format).
        bits: the bit width.
        levels: ``2^bits``, the number of codes (``None`` if not available).
        distinct_values: distinct finite values of the format (floats, and mxfp4 / nvfp4
            whose e2m1 elements have two zeros; else ``levels``).
        compression: ``32 / bits``.
        avg_error_pct: ``100 * mean|x - x_hat| / mean|x|`` over all weights of the source.
        bits_per_weight: storage per weight including scales and zero points.
        zeroed_pct: % of non-zero weights that became exactly 0.
        step: grid step at the strip's group for integer formats (else ``None``; q4_k's
            step ``d·sc`` is in ``block``).
        regime: a short description of the regime.
        notes: remarks on how the controls were interpreted.
        strip: the 64 original weights on the strip.
        snapped: their values after quantization (``None`` if not available).
        grid: grid values inside the window, or ``None`` if too many to draw.
        grid_lines: how many grid values lie inside the window.
        hist: counts of the quantized weights in the bins :data:`HIST_EDGES` (:func:`histogram`).
        hist_original: counts of the original weights in the same bins.
        beyond: weights beyond the window (originals), not in any bin.
        n: number of weights.
        figures: the displayed figures (:func:`format_figures`).
        block: for a block format, the strip's first block taken apart
            (:func:`block_view`); else None. The grid is that block's grid.
    """

    settings: Settings
    available: bool
    fmt: Optional[str]
    granularity: Optional[str]
    symmetric: bool
    bits: int
    levels: Optional[int]
    distinct_values: Optional[int]
    compression: Optional[float]
    avg_error_pct: Optional[float]
    bits_per_weight: Optional[float]
    zeroed_pct: Optional[float]
    step: Optional[float]
    regime: str
    notes: tuple[str, ...]
    strip: np.ndarray
    snapped: Optional[np.ndarray]
    grid: Optional[np.ndarray]
    grid_lines: int
    hist: Optional[np.ndarray]
    hist_original: np.ndarray
    beyond: int
    n: int
    figures: dict[str, str] = field(default_factory=dict)
    block: Optional["BlockView"] = None

    @property
    def title(self) -> str:
        """Plot title, e.g. ``"int4, per-tensor, symmetric"``."""
        if not self.available:
            return f"{self.bits}-bit {FAMILIES[self.settings.family]}: not available"
        if self.granularity is None:
            return f"{self.fmt} (a cast, no scale)"
        if self.granularity == "block":
            return f"{self.fmt}, {_BLOCK_TITLES[self.fmt]}"
        sym = "symmetric" if self.symmetric else "asymmetric"
        return f"{self.fmt}, {GRANULARITIES[self.granularity]}, {sym}"

    def to_json(self) -> dict[str, Any]:
        """The entry as the static page embeds it (positions rounded to 1e-4); block
        formats add ``"block"`` (:meth:`BlockView.to_json`)."""
        entry = {
            "ok": self.available,
            "fmt": self.fmt,
            "title": self.title,
            "figs": dict(self.figures),
            "regime": self.regime,
            "notes": list(self.notes),
            "snap": None if self.snapped is None else _rounded(self.snapped),
            "grid": None if self.grid is None else _rounded(self.grid),
            "gridLines": self.grid_lines,
            "hist": None if self.hist is None else [int(v) for v in self.hist],
        }
        if self.block is not None:
            entry["block"] = self.block.to_json()
        return entry


_BLOCK_TITLES = {
    "mxfp4": "blocks of 32 sharing a power-of-two scale",
    "nvfp4": "blocks of 16 sharing an fp8 scale, one fp32 scale per tensor",
    "q4_k": "sub-blocks of 32 with a scale and a min, super-blocks of 256",
}


def _rounded(a: np.ndarray) -> list[float]:
    return [float(v) + 0.0 for v in np.round(np.asarray(a, dtype=np.float64), _DECIMALS)]


def _grid_values(q: QTensor, row: int, group: int) -> np.ndarray:
    """Every value the strip's group can take: all codes dequantized with its scale."""
    fmt = q.format
    if isinstance(fmt, IntFormat):
        codes = torch.arange(fmt.qmin, fmt.qmax + 1).to(fmt.code_dtype)
    else:
        codes = torch.arange(fmt.levels if isinstance(fmt, CodebookFormat) else 1 << fmt.bits)
        codes = codes.to(fmt.code_dtype)
    if q.granularity == "tensor":
        scale, zp = q.scale, q.zero_point
    else:
        scale = q.scale[row, group]
        zp = None if q.zero_point is None else q.zero_point[row, group]
    grid = QTensor(codes, scale, zp, fmt, tuple(codes.shape), "tensor").dequantize()
    grid = grid[torch.isfinite(grid)].double().numpy()
    return np.unique(grid)


@lru_cache(maxsize=None)
def _largest_weight(source: str) -> float:
    """The weight of largest magnitude of a source (signed): the outlier the regime text names."""
    x = _weights(source).flatten()
    return float(x[x.abs().argmax()])


def _regime(res: Resolved, settings: Settings, step: Optional[float], zeroed: Optional[float]) -> str:
    b = settings.bits
    if res.fmt is None:
        return "Not available: " + res.notes[0] + "."
    if b == 32:
        return "32-bit baseline: float32 itself, full precision, no error."
    if res.fmt == "fp16":
        return "16-bit float cast: 65,536 codes; the error is far below anything a network notices."
    if b == 16:
        text = "16-bit: 65,536 levels; the error is far below anything a network notices."
    elif b > 8:
        text = f"{b}-bit: finer than 8 bits; the error keeps halving with every bit, but 8 bits already suffice for most weights."
    elif b == 8:
        text = "8-bit: 256 levels; for well-behaved weights the error is tiny. The standard choice for inference."
    elif b >= 5:
        text = f"{b}-bit: {1 << b} levels; between 8 and 4 bits, the error roughly doubles with every bit removed."
    elif b == 4:
        text = "4-bit: 16 levels, visible steps; needs care (small groups, NF4, GPTQ)."
    elif b == 3:
        text = "3-bit: 8 levels, coarse steps; usable only with the best methods."
    else:
        text = "2-bit extreme: 4 codes (3 when symmetric); most weights land on 0 or the ends."
    if res.fmt == "nf4":
        text += " NF4 places its 16 levels at quantiles of a normal distribution: dense near 0."
    elif res.fmt in _BLOCK_REGIME:
        text += _BLOCK_REGIME[res.fmt]
    elif res.fmt.startswith("fp"):
        fmt = get_format(res.fmt)
        text += (f" {res.fmt} spaces its {fmt.levels} distinct values (of {1 << fmt.bits} codes)"
                 " unevenly: dense near 0, sparse at the ends.")
    if settings.source == "minilm" and res.granularity == "tensor" and step is not None and zeroed is not None:
        if zeroed >= 1:
            text += (
                f" But here the outlier {_sig(_largest_weight(settings.source))} sets the one scale"
                f" for all: the step is {_sig(step)},"
                f" so {_pct_text(zeroed).replace('>', 'more than ')}% of the weights round to 0."
            )
    return text


_BLOCK_REGIME = {
    "mxfp4": " MXFP4: every 32 weights of a row share one power-of-two scale (an 8-bit E8M0 "
             "exponent), and each weight is an fp4 e2m1 value times that scale.",
    "nvfp4": " NVFP4: every 16 weights share an fp8 e4m3 scale, on top of one fp32 scale for "
             "the tensor; each weight is an fp4 e2m1 value times both.",
    "q4_k": " Q4_K: every 32 weights get a 6-bit scale and a 6-bit min, themselves scaled by "
            "two fp16 numbers per 256 weights; each weight is a step times an integer 0..15, "
            "minus an offset.",
}


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


@lru_cache(maxsize=None)
def _source_stats(source: str) -> tuple[np.ndarray, int]:
    """Histogram of a source's original weights and how many lie beyond the window."""
    x = _weights(source)
    return histogram(x), int((x.abs() > WINDOW).sum())


@lru_cache(maxsize=None)
def _explore(settings: Settings) -> ExplorerData:
    x = _weights(settings.source)
    strip = _strip(settings.source)
    hist_original, beyond = _source_stats(settings.source)
    res = resolve(settings)
    common = dict(
        settings=settings, bits=settings.bits, strip=strip, hist_original=hist_original.copy(),
        beyond=beyond, n=int(x.numel()), notes=res.notes,
    )
    if res.fmt is None:
        data = ExplorerData(
            available=False, fmt=None, granularity=None, symmetric=True, levels=None,
            distinct_values=None, compression=None, avg_error_pct=None, bits_per_weight=None,
            zeroed_pct=None, step=None, regime=_regime(res, settings, None, None),
            snapped=None, grid=None, grid_lines=0, hist=None, **common,
        )
        data.figures = format_figures(data)
        _freeze(data)
        return data
    if res.granularity == "block":
        return _explore_block(settings, res, common)
    fmt = get_format(res.fmt)
    if res.granularity is None:  # fp32 / fp16: a plain cast
        q = quantize(x, fmt)
    else:
        q = quantize(
            x, fmt, granularity=res.granularity, symmetric=res.symmetric,
            group_size=GROUP_SIZE if res.granularity == "group" else None,
        )
    x_hat = q.dequantize()
    err = 100.0 * metrics.mean_relative_error(x, x_hat)
    zeroed = 100.0 * int(((x_hat == 0) & (x != 0)).sum()) / x.numel()
    row, group = strip_location(settings.source)
    snapped = x_hat[row, group * GROUP_SIZE : (group + 1) * GROUP_SIZE].double().numpy().copy()
    hist = histogram(x_hat)
    grid, grid_lines, step = None, 0, None
    if q.scale is not None:
        values = _grid_values(q, row, group)
        inside = values[np.abs(values) <= WINDOW]
        grid_lines = int(inside.size)
        grid = inside if grid_lines <= MAX_GRID_LINES else None
        if isinstance(fmt, IntFormat):
            step = float(q.scale if q.granularity == "tensor" else q.scale[row, group])
    else:
        grid_lines = int(fmt.levels) if fmt.bits <= 16 else 1 << fmt.bits  # dense everywhere
    if isinstance(fmt, FloatFormat):
        distinct = fmt.levels if fmt.bits <= 16 else None
    else:
        distinct = fmt.levels
    data = ExplorerData(
        available=True, fmt=fmt.name, granularity=res.granularity, symmetric=res.symmetric,
        levels=1 << fmt.bits, distinct_values=distinct, compression=32 / fmt.bits,
        avg_error_pct=err, bits_per_weight=q.bits_per_weight, zeroed_pct=zeroed, step=step,
        regime=_regime(res, settings, step, zeroed), snapped=snapped, grid=grid,
        grid_lines=grid_lines, hist=hist, **common,
    )
    data.figures = format_figures(data)
    _freeze(data)
    return data


def _explore_block(settings: Settings, res: Resolved, common: dict[str, Any]) -> ExplorerData:
    """:func:`explore` for a block format: quantlab's quantizer and decoder for the whole
    source; the grid is the strip's first block's (:func:`block_view`)."""
    x = _weights(settings.source)
    _, x_hat, bpw = _block_quantized(settings.source, res.fmt)
    view = _block_view(settings.source, res.fmt)
    err = 100.0 * metrics.mean_relative_error(x, x_hat)
    zeroed = 100.0 * int(((x_hat == 0) & (x != 0)).sum()) / x.numel()
    row, group = strip_location(settings.source)
    snapped = x_hat[row, group * GROUP_SIZE : (group + 1) * GROUP_SIZE].double().numpy().copy()
    inside = view.values[np.abs(view.values) <= WINDOW]
    grid_lines = int(inside.size)
    k, unit = view.block_size, "sub-block" if res.fmt == "q4_k" else "block"
    own = "scale and min" if res.fmt == "q4_k" else "scale"
    others = GROUP_SIZE // k - 1
    rest = (f"the other {unit} of the strip has its own {own}" if others == 1 else
            f"the strip's {others} other {unit}s have their own {own}s")
    common = dict(common, notes=res.notes + (
        f"the grey lines are the grid of the strip's first {unit} (row {view.row}, weights "
        f"{view.start}–{view.start + k - 1}): " + rest,))
    if res.fmt == "q4_k":
        distinct = 16
    else:
        distinct = get_format(res.fmt).levels
    data = ExplorerData(
        available=True, fmt=res.fmt, granularity="block", symmetric=True, levels=16,
        distinct_values=distinct, compression=32 / 4, avg_error_pct=err, bits_per_weight=bpw,
        zeroed_pct=zeroed, step=None, regime=_regime(res, settings, None, zeroed),
        snapped=snapped, grid=inside.copy() if grid_lines <= MAX_GRID_LINES else None,
        grid_lines=grid_lines, hist=histogram(x_hat), block=view, **common,
    )
    data.figures = format_figures(data)
    _freeze(data)
    return data


def _freeze(data: ExplorerData) -> None:
    """Cached results are shared: make their arrays read-only."""
    for name in ("strip", "snapped", "grid", "hist", "hist_original"):  # block: read-only already
        a = getattr(data, name)
        if a is not None:
            a.flags.writeable = False


def explore(
    source: str = "normal",
    bits: int = 8,
    granularity: str = "tensor",
    symmetric: bool = True,
    family: str = "int",
) -> ExplorerData:
    """Compute what the explorer shows for one setting, with quantlab's quantizers.

    ``x_hat = fake_quantize(weights(source), fmt, granularity, group_size=64, symmetric)``
    and the average error is ``100 * mean|x - x_hat| / mean|x|``
    (:func:`quantlab.metrics.mean_relative_error`). Results are cached per setting.

    Args:
        source: ``"normal"`` or ``"minilm"`` (see :func:`weights`).
        bits: 2..16 or 32.
        granularity: ``"tensor"`` or ``"group"``.
        symmetric: True for zero point 0, False for a zero point (integers only).
        family: ``"int"``, ``"float"`` (fp4 / fp6 / fp8 / fp16), ``"nf4"``, or a block
            format at 4 bits: ``"mxfp4"``, ``"nvfp4"`` (:func:`quantlab.quantize`) or
            ``"q4_k"`` (:func:`quantlab.gguf_blocks.quantize_blocks` and
            ``dequantize_blocks``); their blocks are fixed, so granularity and symmetric
            do not apply. Their bits per weight count every scale (mxfp4 4.25, nvfp4 4.5
            plus one fp32 per tensor, q4_k 4.5), their grid is that of the strip's first
            block, and ``block`` holds that block taken apart (:func:`block_view`).

    Returns:
        :class:`ExplorerData` (``available=False`` where the family lacks that width);
        shared between calls, so its arrays are read-only.

    Raises:
        ValueError, TypeError: a control value outside its choices (the message names it).

    Example:
        >>> d = explore("normal", 8)
        >>> d.levels, d.figures["compression"]
        (256, '4×')
    """
    return _explore(Settings(source, int(bits) if isinstance(bits, np.integer) else bits,
                             granularity, symmetric, family))


def clear_cache() -> None:
    """Forget computed settings (benchmarks time the computation this way)."""
    _explore.cache_clear()
    _block_quantized.cache_clear()
    _block_view.cache_clear()


# --------------------------------------------------------------------------- block formats


@lru_cache(maxsize=None)
def _block_quantized(source: str, family: str) -> tuple[Any, torch.Tensor, float]:
    """A source in a block format: what is stored (the :class:`QTensor` of ``mxfp4`` and
    ``nvfp4``, the GGUF bytes of ``q4_k``), the decoded weights (float32) and the bits per
    weight with every scale counted."""
    x = _weights(source)
    if family == "q4_k":
        raw = gguf_blocks.quantize_blocks(x, "q4_k")
        return raw, gguf_blocks.dequantize_blocks(raw, "q4_k"), 8 * raw.numel() / x.numel()
    q = quantize(x, family)
    return q, q.dequantize(), q.bits_per_weight


@dataclass(frozen=True)
class BlockScale:
    """One scale of a block, as the format stores it.

    Attributes:
        name: its symbol in the decoding formula: ``"X"`` (mxfp4); ``"s_b"``, ``"g"``
            (nvfp4); ``"d"``, ``"dmin"``, ``"sc"``, ``"m"`` (q4_k) and the two products
            ``"d·sc"``, ``"dmin·m"`` that q4_k's decoder computes from them.
        value: the number it stands for.
        stored: how it is stored: ``"E8M0"``, ``"fp8 e4m3"``, ``"fp32"``, ``"fp16"``,
            ``"6-bit integer"``, or ``"computed"`` (not stored).
        code: the stored integer: the E8M0 code, the bit pattern of a float, the 6-bit
            integer; None when computed.
        bits: ``code`` in binary; for a float its sign, exponent and mantissa fields,
            separated by spaces (``"0 0101 100"``). None when computed.
        text: ``value`` as displayed: the shortest decimal that reads back to the stored
            number (for E8M0 also the power of two, ``"2^-5 = 0.03125"``).
        meaning: what it does, in words.
    """

    name: str
    value: float
    stored: str
    code: Optional[int]
    bits: Optional[str]
    text: str
    meaning: str


@dataclass(frozen=True, repr=False, eq=False)
class BlockView:
    """One block of a block format, taken apart: the block inspector (:func:`block_view`).

    Attributes:
        source, family: the weights (:data:`SOURCES`) and the format (:data:`BLOCK_FORMATS`).
        label: the format's label (:data:`FAMILIES`).
        block_size: weights in the block: 32 (mxfp4, a q4_k sub-block) or 16 (nvfp4).
        row, start: the block is ``weights(source)[row, start : start + block_size]``.
        where: that position in words (for q4_k with its super-block).
        formula: how a weight is decoded.
        scales: the block's scales as stored (:class:`BlockScale`), in the formula's order.
        original: the block's float32 weights (as float64).
        codes: the stored 4-bit codes (int64, 0..15).
        code_bits: each code as a 4-character bit string.
        element: each code's value before the scales: the fp4 e2m1 value (mxfp4, nvfp4)
            or the integer ``q`` itself (q4_k).
        element_name: what ``element`` is: ``"e2m1"`` or ``"q"``.
        x_hat: the decoded weights, as quantlab decodes them (float32 values, as float64).
        values: every value a weight of this block can take (the 16 codes decoded with
            the block's scales), unique and ascending: the strip's grid for this format.
    """

    source: str
    family: str
    label: str
    block_size: int
    row: int
    start: int
    where: str
    formula: str
    scales: tuple[BlockScale, ...]
    original: np.ndarray
    codes: np.ndarray
    code_bits: tuple[str, ...]
    element: np.ndarray
    element_name: str
    x_hat: np.ndarray
    values: np.ndarray

    @property
    def columns(self) -> range:
        """The block's columns in its row."""
        return range(self.start, self.start + self.block_size)

    def scale(self, name: str) -> BlockScale:
        """The scale called ``name`` (see :attr:`BlockScale.name`).

        Raises:
            KeyError: the format has no scale of that name.
        """
        for s in self.scales:
            if s.name == name:
                return s
        raise KeyError(f"{self.family} has no scale {name!r}: it has {[s.name for s in self.scales]}")

    #: Column titles of the table of scales (:meth:`scale_rows`).
    SCALE_HEAD = ("scale", "stored as", "code", "bits", "value", "what it does")

    @property
    def head(self) -> tuple[str, ...]:
        """Column titles of the element table (:meth:`rows`)."""
        elem = "e2m1 value" if self.element_name == "e2m1" else "q"
        return ("weight", "original x", "code", "bits", elem, "decoded x̂")

    def rows(self) -> list[tuple[str, ...]]:
        """The element table as displayed: positions rounded to 1e-4 (as the static page
        embeds them), codes as integers and bit strings, element values exactly."""
        x, xh = _rounded(self.original), _rounded(self.x_hat)
        return [
            (str(c), f"{x[i]:.4f}", str(int(self.codes[i])), self.code_bits[i],
             _element_text(self.element[i]), f"{xh[i]:.4f}")
            for i, c in enumerate(self.columns)
        ]

    def scale_rows(self) -> list[tuple[str, ...]]:
        """The scales as displayed: name, how stored, stored integer, its bits, value, meaning."""
        return [(s.name, s.stored, "" if s.code is None else str(s.code), s.bits or "", s.text,
                 s.meaning) for s in self.scales]

    def to_json(self) -> dict[str, Any]:
        """The inspector as the static page embeds it: texts, codes, and positions rounded
        to 1e-4 like the rest of the page (its script formats them with 4 decimals)."""
        return {
            "label": self.label,
            "where": self.where,
            "formula": self.formula,
            "scaleHead": list(self.SCALE_HEAD),
            "scales": [list(r) for r in self.scale_rows()],
            "head": list(self.head),
            "cols": list(self.columns),
            "x": _rounded(self.original),
            "code": [int(c) for c in self.codes],
            "bits": list(self.code_bits),
            "elem": [_element_text(v) for v in self.element],
            "xhat": _rounded(self.x_hat),
        }

    def to_html(self) -> str:
        """The inspector as an HTML table with inline styles (the kernel front end and
        notebooks display this)."""
        esc = html.escape
        cell = "padding:1px 8px;border-bottom:1px solid #e3e6ea;text-align:right"
        left = cell.replace("right", "left")
        scales = "".join(
            "<tr>" + "".join(f"<td style='{left}'>{esc(v)}</td>" for v in r) + "</tr>"
            for r in self.scale_rows()
        )
        head = "".join(f"<th style='{cell}'>{esc(h)}</th>" for h in self.head)
        body = "".join(
            "<tr>" + "".join(f"<td style='{cell}'>{esc(v)}</td>" for v in r) + "</tr>"
            for r in self.rows()
        )
        shead = "".join(f"<th style='{left}'>{esc(h)}</th>" for h in self.SCALE_HEAD)
        return (
            "<div class='qlx-block-inspector' style='max-width:774px;font-size:13px'>"
            f"<p style='margin:6px 0 2px 0'><b>Block inspector: {esc(self.label)}</b>, "
            f"{esc(self.where)}. {esc(self.formula)}</p>"
            f"<table style='border-collapse:collapse;margin:2px 0 6px 0'><tr>{shead}</tr>{scales}</table>"
            "<table style='border-collapse:collapse;font-variant-numeric:tabular-nums'>"
            f"<tr>{head}</tr>{body}</table></div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        lines = [f"{self.label}: {self.where} of the {SOURCES[self.source]}", self.formula]
        width = max(len(s.name) for s in self.scales)
        for s in self.scales:
            stored = "computed" if s.code is None else f"{s.stored} code {s.code} ({s.bits})"
            lines.append(f"  {s.name:<{width}} = {s.text:<16} {stored}: {s.meaning}")
        rows = [self.head] + [tuple(r) for r in self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.head))]
        for r in rows:
            lines.append("  ".join(v.rjust(w) for v, w in zip(r, widths)))
        return "\n".join(lines)


def _element_text(v: float) -> str:
    """An element value as displayed: ``"1.5"``, ``"-6"``, ``"-0"`` (e2m1's negative zero)."""
    v = float(v)
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    return f"{v:g}"


def _shortest(v: Union[float, torch.Tensor], dtype: type) -> str:
    """``v`` as ``dtype`` (numpy float32 or float16), in the shortest decimal that reads back."""
    return np.format_float_positional(dtype(float(v)), unique=True, trim="-")


def _float_bits(code: int, ebits: int, mbits: int) -> str:
    """The bit pattern of a float as ``"sign exponent mantissa"`` (``"0 0101 100"``)."""
    b = f"{code:0{1 + ebits + mbits}b}"
    return f"{b[0]} {b[1:1 + ebits]} {b[1 + ebits:]}"


def _view_mx(source: str, family: str, row: int, start: int) -> dict[str, Any]:
    """The fields of an mxfp4 / nvfp4 :class:`BlockView` that depend on the format."""
    q, _, _ = _block_quantized(source, family)
    fmt: BlockFormat = q.format
    el = fmt.element
    k = fmt.block_size
    codes = q.codes[row, start : start + k]
    every = torch.arange(1 << el.bits).to(el.code_dtype)
    b = start // k
    sb = q.scale[row, b]  # float32
    code = int(scale_codes(q)[row, b])
    if family == "mxfp4":
        scales = (BlockScale(
            "X", float(sb), "E8M0", code, f"{code:08b}",
            f"2^{code - E8M0_BIAS} = {_shortest(sb, np.float32)}",
            f"the scale the {k} weights share: 2^(c − {E8M0_BIAS}) for the stored code c"),)
        values = el.decode(every).float() * sb
        formula = "x̂ = e2m1(code) · X, with X = 2^(c − 127)"
    else:
        g = q.tensor_scale  # 0-d float32
        gcode = int(np.float32(float(g)).view(np.uint32))
        scales = (
            BlockScale("s_b", float(sb), "fp8 e4m3", code, _float_bits(code, 4, 3),
                       _shortest(sb, np.float32), f"the scale of these {k} weights"),
            BlockScale("g", float(g), "fp32", gcode, _float_bits(gcode, 8, 23),
                       _shortest(g, np.float32),
                       "one scale for the whole tensor: max|x| / (448 · 6)"),
        )
        values = (el.decode(every).float() * sb) * g
        formula = "x̂ = (e2m1(code) · s_b) · g"
    return dict(
        scales=scales, codes=codes.long().numpy(),
        element=el.decode(codes).double().numpy(), element_name="e2m1",
        values=values.double().numpy(), formula=formula,
    )


def _view_q4_k(source: str, row: int, start: int) -> dict[str, Any]:
    """The fields of a q4_k :class:`BlockView` that depend on the format: the super-block's
    bytes read as in ``gguf_blocks`` (d, dmin, the 6-bit scales and mins, the nibbles)."""
    raw, _, _ = _block_quantized(source, "q4_k")
    size, nbytes = gguf_blocks.QK_K, gguf_blocks.BLOCK_BYTES["q4_k"]
    s, j = divmod(start, size)[0], (start % size) // 32
    blk = raw[row, s * nbytes : (s + 1) * nbytes]
    d_code, dmin_code = int(blk[0]) | int(blk[1]) << 8, int(blk[2]) | int(blk[3]) << 8
    d, dmin = (np.uint16(c).view(np.float16) for c in (d_code, dmin_code))
    sc_all, m_all = gguf_blocks._q4_k_scale_min(blk[4:16].reshape(1, 12))
    sc, m = int(sc_all[0, j]), int(m_all[0, j])
    c, high = divmod(j, 2)  # byte 16 + 32c + l: weight 64c + l (low nibble), 64c + 32 + l (high)
    codes = (blk[16 + 32 * c : 16 + 32 * (c + 1)].long() >> (4 * high)) & 15
    step, offset = np.float32(d) * np.float32(sc), np.float32(dmin) * np.float32(m)
    first = s * size
    scales = (
        BlockScale("d", float(d), "fp16", d_code, _float_bits(d_code, 5, 10), _shortest(d, np.float16),
                   f"scale of the 8 sub-block scales of the super-block (weights {first}–{first + size - 1})"),
        BlockScale("dmin", float(dmin), "fp16", dmin_code, _float_bits(dmin_code, 5, 10),
                   _shortest(dmin, np.float16), "scale of the 8 sub-block mins of the super-block"),
        BlockScale("sc", float(sc), "6-bit integer", sc, f"{sc:06b}", str(sc),
                   f"this sub-block's scale, in units of d (sub-block {j} of 8)"),
        BlockScale("m", float(m), "6-bit integer", m, f"{m:06b}", str(m),
                   "this sub-block's min, in units of dmin"),
        BlockScale("d·sc", float(step), "computed", None, None, _shortest(step, np.float32),
                   "the step between neighbouring codes q"),
        BlockScale("dmin·m", float(offset), "computed", None, None, _shortest(offset, np.float32),
                   "the offset subtracted from every weight of the sub-block"),
    )
    values = step * np.arange(16, dtype=np.float32) - offset  # float32, as the decoder
    return dict(
        scales=scales, codes=codes.numpy(), element=codes.double().numpy(), element_name="q",
        values=values.astype(np.float64), formula="x̂ = (d · sc) · q − dmin · m",
        where_extra=f" (sub-block {j} of the super-block of weights {first}–{first + size - 1})",
    )


@lru_cache(maxsize=None)
def _block_view(source: str, family: str) -> BlockView:
    row, group = strip_location(source)
    start, k = group * GROUP_SIZE, BLOCK_FORMATS[family]
    parts = _view_q4_k(source, row, start) if family == "q4_k" else _view_mx(source, family, row, start)
    where = f"row {row}, weights {start}–{start + k - 1}" + parts.pop("where_extra", "")
    _, x_hat, _ = _block_quantized(source, family)
    view = BlockView(
        source=source, family=family, label=FAMILIES[family], block_size=k, row=row, start=start,
        where=where, original=_weights(source)[row, start : start + k].double().numpy(),
        code_bits=tuple(f"{int(c):04b}" for c in parts["codes"]),
        x_hat=x_hat[row, start : start + k].double().numpy(),
        **{**parts, "values": np.unique(parts["values"])},
    )
    for name in ("original", "codes", "element", "x_hat", "values"):
        getattr(view, name).flags.writeable = False
    return view


def block_view(source: str = "normal", family: str = "mxfp4") -> BlockView:
    """The block inspector: the first block of the strip's 64 weights in a block format.

    The strip (:func:`strip_location`) starts a block in every block format, so its
    first ``block_size`` weights are one whole block, which this takes apart with the
    scales as stored:

    * ``"mxfp4"`` (OCP MX, blocks of 32): one E8M0 code ``c`` per block,
      ``X = 2^(c - 127)``, and fp4 e2m1 elements: ``x_hat = e2m1(code) * X``.
    * ``"nvfp4"`` (blocks of 16): an fp8 e4m3 block scale ``s_b`` and one fp32 scale ``g``
      per tensor: ``x_hat = (e2m1(code) * s_b) * g`` in float32.
    * ``"q4_k"`` (llama.cpp): super-blocks of 256 weights with fp16 ``d`` and ``dmin``,
      each of their 8 sub-blocks of 32 with a 6-bit scale ``sc`` and a 6-bit min ``m``,
      and 4-bit codes ``q``: ``x_hat = (d * sc) * q - dmin * m`` in float32.

    The codes and scales come from quantlab's own quantizers (:func:`quantlab.quantize`
    with ``"mxfp4"`` / ``"nvfp4"``, :func:`quantlab.gguf_blocks.quantize_blocks` with
    ``"q4_k"``) and ``x_hat`` from their decoders: it equals the explorer's snapped
    values for these weights. Results are cached; their arrays are read-only.

    Args:
        source: ``"normal"`` or ``"minilm"``.
        family: ``"mxfp4"``, ``"nvfp4"`` or ``"q4_k"``.

    Returns:
        :class:`BlockView` (a table in notebooks).

    Raises:
        ValueError: an unknown source, or a family that is not a block format (the
            message names the parameter).

    Example:
        >>> v = block_view("normal", "mxfp4")
        >>> v.block_size, v.scale("X").stored, len(v.rows())
        (32, 'E8M0', 32)
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {tuple(SOURCES)}, got {source!r}")
    if not isinstance(family, str) or family not in BLOCK_FORMATS:
        raise ValueError(f"family must be a block format, one of {tuple(BLOCK_FORMATS)}, got {family!r}")
    return _block_view(source, family)


# --------------------------------------------------------------------------- figures


def _sig(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` significant digits, in positional notation (no exponent)."""
    if v == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
    text = f"{v:.{decimals}f}"
    if float(text) != 0 and len(text.replace("-", "").replace(".", "").lstrip("0")) > digits:
        # rounding carried into a new digit (e.g. 9.996 -> 10.00): one decimal fewer
        text = f"{v:.{max(0, decimals - 1)}f}"
    return text


def format_figures(data: ExplorerData) -> dict[str, str]:
    """The figures both front ends display, as strings.

    ``levels`` with thousands separators (``"4,294,967,296"``), ``compression`` as
    ``"4×"`` (at most two decimals), ``error`` in % with three significant digits,
    ``bpw`` (bits per weight with scales) with two decimals, ``zeroed`` in % (``">99.9"``
    rather than a rounded-up 100 when a few weights survive).
    Settings that are not available show ``"—"``.
    """
    if not data.available:
        dash = "—"
        return {"bits": f"{data.bits}-bit", "format": dash, "levels": dash, "compression": dash,
                "error": dash, "bpw": dash, "zeroed": dash}
    comp = f"{data.compression:.2f}".rstrip("0").rstrip(".")
    return {
        "bits": f"{data.bits}-bit",
        "format": data.fmt,
        "levels": f"{data.levels:,}",
        "compression": f"{comp}×",
        "error": f"{_sig(data.avg_error_pct)} %",
        "bpw": f"{data.bits_per_weight:.2f}",
        "zeroed": f"{_pct_text(data.zeroed_pct)} %",
    }


def _pct_text(v: float) -> str:
    """A percentage with three significant digits that never rounds up to a false 100."""
    text = _sig(v)
    return ">99.9" if float(text) >= 100 > v else text


#: Labels of the figures, in display order.
FIGURE_LABELS: dict[str, str] = {
    "format": "Format",
    "levels": "Levels (2^bits)",
    "compression": "Compression vs fp32",
    "error": "Average error",
    "bpw": "Bits/weight incl. scales",
    "zeroed": "Weights rounded to 0",
}


# --------------------------------------------------------------------------- static page


def static_data() -> dict[str, Any]:
    """Every setting's entry, deduplicated, as the static page embeds it.

    Returns:
        ``{"bits", "edges", "window", "sources": {name: {...}}, "keys": {key: index},
        "entries": [entry, ...]}`` where ``keys`` maps :attr:`Settings.key` to an entry.
    """
    entries: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    keys: dict[str, int] = {}
    sources: dict[str, Any] = {}
    for s in all_settings():
        data = _explore(s)
        entry = data.to_json()
        blob = json.dumps(entry, sort_keys=True, ensure_ascii=False)
        if blob not in index:
            index[blob] = len(entries)
            entries.append(entry)
        keys[s.key] = index[blob]
        if s.source not in sources:
            r, c = strip_location(s.source)
            sources[s.source] = {
                "label": SOURCES[s.source],
                "strip": _rounded(data.strip),
                "hist": [int(v) for v in data.hist_original],
                "n": data.n,
                "beyond": data.beyond,
                "where": f"row {r}, weights {c * GROUP_SIZE}–{(c + 1) * GROUP_SIZE - 1}",
            }
    return {
        "bits": list(BITS),
        "edges": _rounded(HIST_EDGES),
        "window": WINDOW,
        "labels": dict(FIGURE_LABELS),
        "sources": sources,
        "keys": keys,
        "entries": entries,
    }


_ASSETS = "explorer_assets"


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    """The text of ``quantlab/book/explorer_assets/<name>`` without its leading ``/* ... */`` comment.

    The static page inlines the styles (``explorer.css``) and the script (``explorer.js``)
    of the kernel-free explorer; they ship as package data beside this module.
    """
    text = resources.files(__package__).joinpath(_ASSETS, name).read_text("utf-8")
    if text.startswith("/*"):
        text = text.split("*/\n", 1)[1]
    return text


def _css_colors(css: str) -> dict[str, str]:
    """The ``--qlx-<name>: #rrggbb`` custom properties of the explorer's styles, by name."""
    return dict(re.findall(r"--qlx-([a-z]+):(#[0-9a-fA-F]{6})\b", css))


#: The explorer's colours, read from the custom properties of ``explorer.css`` (their one
#: definition): ``fg`` text, ``muted`` secondary text and axes, ``border``, ``bg`` panels,
#: ``orig`` the float32 weights, ``quant`` the quantized weights. The static page uses
#: them through CSS variables, the kernel front end through this dict.
COLORS: dict[str, str] = _css_colors(_asset("explorer.css"))


def static_html(
    data: Optional[dict[str, Any]] = None,
    root_id: str = "ql-explorer",
    initial: Optional[Settings] = None,
) -> str:
    """A self-contained HTML explorer for pages without a kernel.

    Every entry is computed by :func:`explore` (through :func:`static_data`) when this
    runs; the inline script only selects the entry for the controls and draws it as SVG
    (and, for a block format, the block inspector's tables from the entry's ``"block"``).
    Nothing is loaded from anywhere.

    Args:
        data: precomputed :func:`static_data` (computed if None).
        root_id: the ``id`` of the outer element (unique per page).
        initial: the setting shown first (default 4-bit integers, normal weights).

    Returns:
        An HTML string: a ``<div>`` with controls, figures, two SVGs, the block inspector
        (``data-role="block"``, hidden unless a block format is chosen) and two scripts.
    """
    if data is None:
        data = static_data()
    if initial is None:
        initial = Settings("normal", 4, "tensor", True, "int")
    if not isinstance(initial, Settings):
        raise TypeError(f"initial must be a Settings, got {type(initial).__name__}")
    rid = html.escape(root_id, quote=True)
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")

    def options(choices: dict[str, str], selected: str) -> str:
        return "".join(
            f'<option value="{html.escape(k)}"{" selected" if k == selected else ""}>{html.escape(v)}</option>'
            for k, v in choices.items()
        )

    ticks = "".join(f"<span>{b}</span>" for b in BITS)
    figs = "".join(
        f'<div class="qlx-fig"><span class="k">{html.escape(label)}</span>'
        f'<span class="v" data-fig="{k}">—</span></div>'
        for k, label in FIGURE_LABELS.items()
    )
    sym = "s" if initial.symmetric else "a"
    return (
        f'<div class="qlx" id="{rid}">'
        f"<style>\n{_asset('explorer.css')}</style>"
        '<h4>Quantization Explorer</h4>'
        '<div class="qlx-slider">'
        f'<label for="{rid}-bits">Precision: <span data-fig="bits">{initial.bits}-bit</span></label>'
        f'<input type="range" id="{rid}-bits" data-role="bits" min="0" max="{len(BITS) - 1}" step="1" '
        f'value="{BITS.index(initial.bits)}" data-bits="{",".join(map(str, BITS))}" '
        'aria-label="bit width">'
        f'<div class="qlx-ticks">{ticks}</div>'
        '<div class="qlx-ends"><span>2-bit: extreme</span>'
        "<span>… 16-bit … 32-bit: baseline (fp32)</span></div></div>"
        '<div class="qlx-controls">'
        f'<label>Weights<select data-role="source">{options(SOURCES, initial.source)}</select></label>'
        f'<label>Format<select data-role="family">{options(FAMILIES, initial.family)}</select></label>'
        f'<label>Scale per<select data-role="granularity">{options(GRANULARITIES, initial.granularity)}</select></label>'
        '<label>Range<select data-role="symmetric">'
        + options({"s": "symmetric", "a": "asymmetric (zero point)"}, sym)
        + "</select></label></div>"
        f'<div class="qlx-figs">{figs}</div>'
        '<p class="qlx-regime" data-fig="regime"></p>'
        '<p class="qlx-notes" data-role="notes"></p>'
        '<svg data-role="strip" viewBox="0 0 760 194" role="img" '
        'aria-label="sample weights and their quantized values on a number line"></svg>'
        '<svg data-role="hist" viewBox="0 0 760 270" role="img" '
        'aria-label="histogram of the weights before and after quantization"></svg>'
        '<div class="qlx-block" data-role="block" hidden></div>'
        '<p class="qlx-foot">Every number and curve here was computed by quantlab in Python when '
        "this page was built; the page's script only picks the precomputed result for your "
        "settings and draws it. No kernel needed.</p>"
        f'<script type="application/json" data-role="data">{payload}</script>'
        f"<script>\n{_asset('explorer.js').replace('__ROOT__', rid)}</script>"
        "</div>"
    )


# --------------------------------------------------------------------------- kernel widget


class Explorer:
    """The kernel front end: ipywidgets controls driving a matplotlib figure.

    The figure is built once (``matplotlib.figure.Figure`` on the Agg canvas); every
    update changes its artists in place (``set_offsets`` of the snapped points,
    ``set_segments`` of the grid and the links, ``StepPatch.set_data`` of the histogram,
    ``set_text`` of the titles), redraws and sends the PNG to an ``ipywidgets.Image``.

    Args:
        source, bits, granularity, symmetric, family: the initial setting (see
            :func:`explore`).
        dpi: resolution of the image sent to the browser.

    Example:
        >>> ex = Explorer(bits=4)          # in a notebook, display(ex) shows it
        >>> ex.set(bits=8).figures["levels"]
        '256'
    """

    def __init__(
        self,
        source: str = "normal",
        bits: int = 4,
        granularity: str = "tensor",
        symmetric: bool = True,
        family: str = "int",
        dpi: int = 90,
    ) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.settings = Settings(source, bits, granularity, symmetric, family)
        self.dpi = dpi
        self.fig = Figure(figsize=(8.6, 5.6), dpi=dpi, layout=None)
        FigureCanvasAgg(self.fig)  # draws off-screen; the PNG goes to an ipywidgets.Image
        self._build_axes()
        self._widgets: Optional[dict[str, Any]] = None
        self._source_drawn: Optional[str] = None
        self.data = explore(**self._kwargs(self.settings))
        self._draw(self.data)

    # ---- figure
    def _build_axes(self) -> None:
        """Axes, ticks, labels and legend (drawn once) plus the data artists (animated)."""
        from matplotlib.collections import LineCollection
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.ticker import FixedLocator, NullLocator

        fig = self.fig
        fig.subplots_adjust(left=0.13, right=0.98, top=0.94, bottom=0.09, hspace=0.5)
        self.ax_strip, self.ax_hist = fig.subplots(2, 1, height_ratios=[1, 1.5])
        ticks = [-0.4, -0.2, 0.0, 0.2, 0.4]
        ax = self.ax_strip
        ax.set_xlim(-WINDOW, WINDOW)
        ax.set_ylim(-0.6, 1.7)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_locator(NullLocator())
        ax.set_xlabel("weight value")
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
        yaxis = ax.get_yaxis_transform()
        ax.text(-0.01, 1, "float32", transform=yaxis, ha="right", va="center")
        ax.text(-0.01, 0, "quantized", transform=yaxis, ha="right", va="center")
        ax.set_title("64 sample weights (one group) and where each one lands", fontsize=10,
                     loc="left", weight="bold")
        anim = dict(animated=True)
        self.grid_lines = LineCollection([], colors="0.6", linewidths=0.8, alpha=0.6, zorder=1, **anim)
        self.links = LineCollection([], colors="0.5", linewidths=0.6, alpha=0.6, zorder=2, **anim)
        ax.add_collection(self.grid_lines)
        ax.add_collection(self.links)
        self.pts_orig = ax.scatter(np.zeros(0), np.zeros(0), s=22, color=COLORS["orig"], alpha=0.7, zorder=3, **anim)
        self.pts_quant = ax.scatter(np.zeros(0), np.zeros(0), s=26, color=COLORS["quant"], alpha=0.6, zorder=3, **anim)

        ax = self.ax_hist
        ax.set_yscale("log")
        ax.set_xlim(-WINDOW, WINDOW)
        self._floor = 10.0**-3.3
        ax.set_ylim(10.0**-3, 100)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_locator(FixedLocator([1e-3, 1e-2, 1e-1, 1, 10, 100]))
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("weight value (bins of 0.01)")
        ax.set_ylabel("% of weights per bin\n(log scale)")
        ax.grid(axis="y", color="0.85", linewidth=0.6)
        zeros = np.full(len(HIST_EDGES) - 1, self._floor)
        self.hist_orig = ax.stairs(zeros, HIST_EDGES, fill=True, baseline=self._floor, color=COLORS["orig"],
                                   alpha=0.3, **anim)
        self.hist_quant = ax.stairs(zeros, HIST_EDGES, baseline=None, color=COLORS["quant"], linewidth=1.6, **anim)
        ax.legend(handles=[Patch(color=COLORS["orig"], alpha=0.35, label="float32 weights"),
                           Line2D([], [], color=COLORS["quant"], linewidth=1.6, label="after quantization")],
                  loc="upper right", fontsize=8, frameon=False)
        ax.set_title("All weights of the tensor, before and after quantization", fontsize=10,
                     loc="left", weight="bold")
        # Only data artists change; the texts that change live in the HTML beside the image
        # (rendering glyphs is most of the cost of a matplotlib redraw).
        self._animated = [self.grid_lines, self.links, self.pts_orig, self.pts_quant,
                          self.hist_orig, self.hist_quant]
        # Everything that never changes is rendered once; updates restore it and draw
        # only the animated artists on top (blitting on the Agg buffer).
        fig.canvas.draw()
        self._background = fig.canvas.copy_from_bbox(fig.bbox)

    def _pct(self, counts: np.ndarray, n: int) -> np.ndarray:
        pct = counts * (100.0 / n)
        return np.where(pct > 0, pct, self._floor)

    def _draw(self, d: ExplorerData) -> None:
        """Update the data artists in place from ``d`` and redraw them on the canvas."""
        if self._source_drawn != d.settings.source:
            self.pts_orig.set_offsets(np.column_stack([d.strip, np.ones_like(d.strip)]))
            self.hist_orig.set_data(self._pct(d.hist_original, d.n))
            self._source_drawn = d.settings.source
        if d.available:
            top = np.column_stack([d.strip, np.ones_like(d.strip)])
            bottom = np.column_stack([d.snapped, np.zeros_like(d.snapped)])
            self.pts_quant.set_offsets(bottom)
            self.links.set_segments(np.stack([top, bottom], axis=1))
            self.hist_quant.set_data(self._pct(d.hist, d.n))
            self.hist_quant.set_visible(True)
        else:
            self.pts_quant.set_offsets(np.empty((0, 2)))
            self.links.set_segments([])
            self.hist_quant.set_visible(False)
        if d.grid is not None:
            g = d.grid
            self.grid_lines.set_segments(np.stack([np.column_stack([g, np.full_like(g, -0.25)]),
                                                   np.column_stack([g, np.full_like(g, 1.25)])], axis=1))
        else:
            self.grid_lines.set_segments([])
        canvas = self.fig.canvas
        canvas.restore_region(self._background)
        for artist in self._animated:
            artist.axes.draw_artist(artist)

    def image(self) -> bytes:
        """The canvas as JPEG bytes (quality 92, no chroma subsampling): what the widget shows.

        JPEG because it encodes in about 2 ms here; PNG takes about 15 ms for this canvas.
        """
        from PIL import Image

        canvas = self.fig.canvas
        w, h = canvas.get_width_height(physical=True)
        buf = io.BytesIO()
        rgba = Image.frombuffer("RGBA", (w, h), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        rgba.convert("RGB").save(buf, format="jpeg", quality=92, subsampling=0)
        return buf.getvalue()

    # ---- state
    @staticmethod
    def _kwargs(s: Settings) -> dict[str, Any]:
        return dict(source=s.source, bits=s.bits, granularity=s.granularity,
                    symmetric=s.symmetric, family=s.family)

    def set(self, **changes: Any) -> ExplorerData:
        """Change controls (``bits=8``, ``source="minilm"``, ...), recompute and redraw.

        Returns:
            The :class:`ExplorerData` now shown.

        Raises:
            ValueError, TypeError: an unknown control or a value outside its choices.
        """
        unknown = set(changes) - {"source", "bits", "granularity", "symmetric", "family"}
        if unknown:
            raise ValueError(f"unknown explorer control(s) {sorted(unknown)}")
        kw = self._kwargs(self.settings)
        kw.update(changes)
        self.settings = Settings(**kw)
        self.data = explore(**kw)
        self._draw(self.data)
        if self._widgets is not None:
            self._sync_widgets()
        return self.data

    @property
    def figures(self) -> dict[str, str]:
        """The displayed figures of the current setting."""
        return dict(self.data.figures)

    # ---- widgets
    def widget(self):
        """The ipywidgets box: controls, figures, regime text, the figure image and, for
        a block format, the block inspector (:meth:`BlockView.to_html`) under it."""
        if self._widgets is None:
            self._make_widgets()
        return self._widgets["box"]

    def _make_widgets(self) -> None:
        import ipywidgets as W

        s = self.settings
        labels = [f"{b}-bit" + (" (extreme)" if b == 2 else " (baseline, fp32)" if b == 32 else "") for b in BITS]
        w: dict[str, Any] = {}
        w["bits"] = W.SelectionSlider(options=list(zip(labels, BITS)), value=s.bits, description="Precision",
                                      continuous_update=True, layout=W.Layout(width="560px"),
                                      style={"description_width": "80px"})
        w["ends"] = W.HTML("<div style='display:flex;justify-content:space-between;width:470px;"
                           "margin-left:88px;font-size:12px;color:#666'><span>2-bit: extreme</span>"
                           "<span>… 16-bit … 32-bit: baseline (fp32)</span></div>")
        w["source"] = W.Dropdown(options=[(v, k) for k, v in SOURCES.items()], value=s.source,
                                 description="Weights", style={"description_width": "80px"},
                                 layout=W.Layout(width="420px"))
        w["family"] = W.Dropdown(options=[(v, k) for k, v in FAMILIES.items()], value=s.family,
                                 description="Format", style={"description_width": "80px"},
                                 layout=W.Layout(width="300px"))
        w["granularity"] = W.ToggleButtons(options=[(v, k) for k, v in GRANULARITIES.items()],
                                           value=s.granularity, description="Scale per",
                                           style={"description_width": "80px", "button_width": "110px"})
        w["symmetric"] = W.ToggleButtons(options=[("symmetric", True), ("asymmetric", False)],
                                         value=s.symmetric, description="Range",
                                         style={"description_width": "80px", "button_width": "110px"})
        w["figs"] = W.HTML()
        w["image"] = W.Image(format="jpeg", layout=W.Layout(width="774px"))
        w["block"] = W.HTML(layout=W.Layout(display="none"))  # the block inspector
        w["box"] = W.VBox([w["bits"], w["ends"], w["source"], w["family"], w["granularity"],
                           w["symmetric"], w["figs"], w["image"], w["block"]])
        self._widgets = w
        for name in ("bits", "source", "family", "granularity", "symmetric"):
            w[name].observe(self._on_change, names="value")
        self._sync_widgets()

    def _on_change(self, change: dict[str, Any]) -> None:
        w = self._widgets
        self.set(**{k: w[k].value for k in ("source", "bits", "granularity", "symmetric", "family")})

    def caption(self) -> str:
        """What the figure shows for the current setting, in words (shown under the figures)."""
        d = self.data
        r, c = strip_location(d.settings.source)
        text = (f"{d.title}. Strip: row {r}, weights {c * GROUP_SIZE}..{(c + 1) * GROUP_SIZE - 1} "
                f"of the {SOURCES[d.settings.source]}. ")
        if not d.available:
            text += "Nothing to quantize at this setting."
        elif d.grid is not None:
            text += f"Grid: {d.grid_lines} levels inside the window (grey lines)."
        else:
            text += f"Grid: {d.grid_lines:,} levels here, too fine to draw."
        if d.beyond:
            text += f" {d.beyond} weights lie beyond ±{WINDOW} (outliers, not drawn)."
        return text

    def _figures_html(self) -> str:
        d = self.data
        cells = "".join(
            f"<div style='background:#f4f6f8;border-radius:6px;padding:4px 8px'>"
            f"<div style='font-size:11px;color:#555'>{html.escape(label)}</div>"
            f"<div style='font-size:17px;font-weight:700;color:#222'>{html.escape(d.figures[k])}</div></div>"
            for k, label in FIGURE_LABELS.items()
        )
        notes = "; ".join(d.notes)
        return (
            "<div style='display:grid;grid-template-columns:repeat(6,1fr);gap:6px;max-width:774px'>"
            f"{cells}</div><p style='margin:6px 0 0 0;max-width:774px'>{html.escape(d.regime)}</p>"
            f"<p style='margin:2px 0;font-size:12px;color:#666;max-width:774px'>"
            f"{html.escape(self.caption())}{' Note: ' + html.escape(notes) + '.' if notes else ''}</p>"
        )

    def _sync_widgets(self) -> None:
        w = self._widgets
        w["figs"].value = self._figures_html()
        w["image"].value = self.image()
        block = self.data.block
        w["block"].value = "" if block is None else block.to_html()
        w["block"].layout.display = "none" if block is None else None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget())
