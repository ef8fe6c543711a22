"""Everything the explorer shows for one setting, computed with quantlab's quantizers.

:func:`explore` quantizes the weights of a source as a setting says (:func:`.settings.resolve`)
and returns :class:`ExplorerData`: the number of codes ``2^bits``, the bits per weight
with every scale counted, the compression ``32 / bits_per_weight``, the average error
``100 * mean|x - x_hat| / mean|x|`` in %, the share of weights rounded to 0, a short
description of the regime, one group of 64 sample weights with the values they snap to,
the grid those weights see, and a histogram of all weights after quantization on fixed
bins. Both front ends display these numbers, as :func:`format_figures` writes them.

Taught in: chapters/02_explorer.ipynb, "What you just saw" and "The other controls".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Optional

import numpy as np
import torch

from ...core import metrics
from ...core.formats import CodebookFormat, FloatFormat, IntFormat, get_format
from ...core.quantize import QTensor, quantize
from . import blocks
from .blocks import BlockView
from .settings import FAMILIES, GRANULARITIES, GROUP_SIZE, SOURCES, Resolved, Settings, resolve
from .sources import (
    OUTLIER_SOURCES,
    WINDOW,
    histogram,
    largest_weight,
    source_histogram,
    strip,
    strip_location,
    weights,
)
from .text import compression_text, pct_text, plural, sig

__all__ = ["ExplorerData", "explore", "format_figures", "beyond_text", "clear_cache", "MAX_GRID_LINES"]

#: Grids with more lines than this inside the window are described, not drawn.
MAX_GRID_LINES = 256
#: The explorer's integer and float grids keep fp32 scales: the kernel-free page recomputes every
#: setting in the browser in float32 (``explorer.js``), and an fp32 scale is what it can reproduce
#: bit for bit. Its compression counts them at 32 bits.
SCALE_DTYPE = "fp32"

_BLOCK_TITLES = {
    "q4_0": "blocks of 32 sharing an fp16 scale",
    "q4_k": "sub-blocks of 32 with a scale and a min, super-blocks of 256",
    "mxfp4": "blocks of 32 sharing a power-of-two scale",
    "nvfp4": "blocks of 16 sharing an fp8 scale, one fp32 scale per tensor",
}

_BLOCK_REGIME = {
    "q4_0": " Q4_0: every 32 weights share one fp16 scale d, and each weight is d times an "
    "integer from −8 to 7: an evenly spaced grid per block.",
    "q4_k": " Q4_K: every 32 weights get a 6-bit scale and a 6-bit min, themselves scaled by "
    "two fp16 numbers per 256 weights; each weight is a step times an integer 0..15, "
    "minus an offset.",
    "mxfp4": " MXFP4: every 32 weights of a row share one power of two as their scale (stored "
    "as E8M0, an 8-bit exponent with no sign and no mantissa), and each weight is an "
    "fp4 e2m1 value (a 4-bit float: 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6) times it.",
    "nvfp4": " NVFP4: every 16 weights share an fp8 e4m3 scale, on top of one fp32 scale for "
    "the tensor; each weight is an fp4 e2m1 value (0 to ±6) times both.",
}


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
        compression: ``32 / bits_per_weight``: how many times smaller than float32, every
            scale and zero point counted (int4 in groups of 64: 32 / 4.5 = 7.11).
        avg_error_pct: ``100 * mean|x - x_hat| / mean|x|`` over all weights of the source.
        bits_per_weight: storage per weight including scales and zero points.
        zeroed_pct: % of non-zero weights that became exactly 0.
        step: grid step at the strip's group for integer formats (else ``None``; the block
            formats' steps are in ``block``).
        regime: a short description of the regime.
        notes: remarks on how the controls were interpreted.
        strip: the 64 original weights on the strip.
        snapped: their values after quantization (``None`` if not available).
        grid: grid values inside the window, or ``None`` if too many to draw.
        grid_lines: how many grid values lie inside the window.
        hist: counts of the quantized weights in the bins ``HIST_EDGES`` (:func:`histogram`).
        hist_original: counts of the original weights in the same bins.
        beyond: weights beyond the window (originals), not in any bin.
        n: number of weights.
        figures: the displayed figures (:func:`format_figures`).
        block: for a block format, the strip's first block taken apart
            (:func:`.blocks.block_view`); else None. The grid is that block's grid.
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
    block: Optional[BlockView] = None

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

    @property
    def grid_text(self) -> str:
        """What the grey lines on the strip are: ``"grid: 15 levels in this window (grey lines)"``
        (a symmetric 4-bit grid uses 15 of the 16 codes)."""
        if not self.available:
            return "no format of this kind at this bit width"
        if self.grid is None:
            return f"grid: {plural(self.grid_lines, 'level', 'levels')} here, too fine to draw"
        return f"grid: {plural(self.grid_lines, 'level', 'levels')} in this window (grey lines)"

    @property
    def caption(self) -> str:
        """What the figure shows, in words: the title, where the strip is, the grid, and the
        weights beyond the window (the kernel widget shows it under its cards)."""
        r, c = strip_location(self.settings.source)
        text = (
            f"{self.title}. Strip: row {r}, weights {c * GROUP_SIZE}–{(c + 1) * GROUP_SIZE - 1} "
            f"of the {SOURCES[self.settings.source]}; {self.grid_text}."
        )
        if self.beyond:
            text += f" {beyond_text(self.beyond)}."
        return text


def beyond_text(n: int) -> str:
    """``"1 weight lies beyond ±0.45 (outliers, not drawn)"``, with the count and verb agreeing."""
    return f"{plural(n, 'weight lies', 'weights lie')} beyond ±{WINDOW} (outliers, not drawn)"


def _grid_values(q: QTensor, row: int, group: int) -> np.ndarray:
    """Every value the strip's group can take: all codes dequantized with its scale."""
    fmt = q.format
    if isinstance(fmt, IntFormat):  # a symmetric grid leaves out the lowest code (-qmax .. qmax)
        lowest = fmt.qmin if q.zero_point is not None else -fmt.qmax
        codes = torch.arange(lowest, fmt.qmax + 1).to(fmt.code_dtype)
    else:
        codes = torch.arange(fmt.levels if isinstance(fmt, CodebookFormat) else 1 << fmt.bits)
        codes = codes.to(fmt.code_dtype)
    if q.granularity == "tensor":
        scale, zp = q.scale, q.zero_point
    elif q.granularity == "channel":
        scale = q.scale.reshape(-1)[row]
        zp = None if q.zero_point is None else q.zero_point.reshape(-1)[row]
    else:
        scale = q.scale[row, group]
        zp = None if q.zero_point is None else q.zero_point[row, group]
    grid = QTensor(codes, scale, zp, fmt, tuple(codes.shape), "tensor").dequantize()
    grid = grid[torch.isfinite(grid)].double().numpy()
    return np.unique(grid)


def _regime(res: Resolved, settings: Settings, step: Optional[float], zeroed: Optional[float]) -> str:
    b = settings.bits
    if res.fmt is None:
        return "Not available: " + res.notes[0] + "."
    # a b-bit format has 2^b codes; a symmetric integer grid leaves the lowest one unused
    sym_int = res.fmt.startswith("int") and res.symmetric and res.granularity is not None
    codes = f"{1 << b:,} codes" + (f" (a symmetric grid uses {(1 << b) - 1:,})" if sym_int else "")
    if b == 32:
        return "32-bit baseline: float32 itself, full precision, no error."
    if res.fmt == "fp16":
        return "16-bit float cast: 65,536 codes; the error is far below anything a network notices."
    if b == 16:
        text = f"16-bit: {codes}; the error is far below anything a network notices."
    elif b > 8:
        text = (
            f"{b}-bit: finer than 8 bits; the error keeps halving with every bit, "
            "but 8 bits already suffice for most weights."
        )
    elif b == 8:
        text = f"8-bit: {codes}; for well-behaved weights the error is tiny. The standard choice for inference."
    elif b >= 5:
        text = f"{b}-bit: {codes}; between 8 and 4 bits, the error roughly doubles with every bit removed."
    elif b == 4:
        text = f"4-bit: {codes}, visible steps; needs care (small groups, NF4, GPTQ)."
    elif b == 3:
        text = f"3-bit: {codes}, coarse steps; usable only with the best methods."
    else:
        text = "2-bit extreme: 4 codes (3 when symmetric); most weights land on 0 or the ends."
    if res.fmt == "nf4":
        text += " NF4 places its 16 levels at quantiles of a normal distribution: dense near 0."
    elif res.fmt in _BLOCK_REGIME:
        text += _BLOCK_REGIME[res.fmt]
    elif res.fmt.startswith("fp"):
        fmt = get_format(res.fmt)
        text += (
            f" {res.fmt} spaces its {fmt.levels} distinct values (of {1 << fmt.bits} codes)"
            " unevenly: dense near 0, sparse at the ends."
        )
    if (
        settings.source in OUTLIER_SOURCES
        and res.granularity == "tensor"
        and step is not None
        and zeroed is not None
        and zeroed >= 1
    ):
        text += (
            f" But here the outlier {sig(largest_weight(settings.source))} sets the one scale"
            f" for all: the step is {sig(step)},"
            f" so {pct_text(zeroed).replace('>', 'more than ')}% of the weights round to 0."
        )
    return text


def format_figures(data: ExplorerData) -> dict[str, str]:
    """The figures both front ends display, as strings.

    ``levels`` with thousands separators (``"4,294,967,296"``), ``compression`` as
    ``"7.11×"`` (``32 / bits_per_weight``, at most two decimals), ``error`` in % with three
    significant digits, ``bpw`` (bits per weight with scales) with two decimals, ``zeroed``
    in % (``">99.9"`` rather than a rounded-up 100 when a few weights survive).
    Settings that are not available show ``"—"``.
    """
    if not data.available:
        dash = "—"
        return {
            "bits": f"{data.bits}-bit",
            "format": dash,
            "levels": dash,
            "compression": dash,
            "error": dash,
            "bpw": dash,
            "zeroed": dash,
        }
    return {
        "bits": f"{data.bits}-bit",
        "format": data.fmt,
        "levels": f"{data.levels:,}",
        "compression": compression_text(data.compression),
        "error": f"{sig(data.avg_error_pct)} %",
        "bpw": f"{data.bits_per_weight:.2f}",
        "zeroed": f"{pct_text(data.zeroed_pct)} %",
    }


def _finish(data: ExplorerData) -> ExplorerData:
    """Fill the figures and make the arrays read-only (cached results are shared)."""
    data.figures = format_figures(data)
    for name in ("strip", "hist_original"):  # the others are read-only already
        _frozen(getattr(data, name))
    return data


def _snapped(source: str, x_hat: torch.Tensor) -> np.ndarray:
    row, group = strip_location(source)
    return x_hat[row, group * GROUP_SIZE : (group + 1) * GROUP_SIZE].double().numpy().copy()


@dataclass(frozen=True)
class _Measured:
    """What one quantlab call gives, shared by every setting that stands for it."""

    levels: int
    distinct: Optional[int]
    bits_per_weight: float
    err: float
    zeroed: float
    step: Optional[float]
    snapped: np.ndarray
    grid: Optional[np.ndarray]
    grid_lines: int
    hist: np.ndarray
    block: Optional[BlockView] = None
    notes: tuple[str, ...] = ()


def _errors(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[float, float]:
    """The average error in % and the % of non-zero weights that became 0."""
    err = 100.0 * metrics.mean_relative_error(x, x_hat)
    zeroed = 100.0 * int(((x_hat == 0) & (x != 0)).sum()) / x.numel()
    return err, zeroed


def _frozen(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if a is not None:
        a.flags.writeable = False
    return a


@cache
def _measure(source: str, fmt_name: str, granularity: Optional[str], symmetric: bool) -> _Measured:
    """Quantize a source as ``resolve`` says, once per distinct call (cached)."""
    x = weights(source)
    if granularity == "block":
        return _measure_block(source, fmt_name)
    fmt = get_format(fmt_name)
    if granularity is None:  # fp32 / fp16: a plain cast
        q = quantize(x, fmt)
    else:
        q = quantize(
            x,
            fmt,
            granularity=granularity,
            symmetric=symmetric,
            group_size=GROUP_SIZE if granularity == "group" else None,
            scale_dtype=SCALE_DTYPE,
        )
    x_hat = q.dequantize()
    err, zeroed = _errors(x, x_hat)
    row, group = strip_location(source)
    grid, grid_lines, step = None, 0, None
    if q.scale is not None:
        values = _grid_values(q, row, group)
        inside = values[np.abs(values) <= WINDOW]
        grid_lines = int(inside.size)
        grid = inside if grid_lines <= MAX_GRID_LINES else None
        if isinstance(fmt, IntFormat):
            scale = (
                q.scale
                if q.granularity == "tensor"
                else (q.scale.reshape(-1)[row] if q.granularity == "channel" else q.scale[row, group])
            )
            step = float(scale)
    else:
        grid_lines = int(fmt.levels) if fmt.bits <= 16 else 1 << fmt.bits  # dense everywhere
    distinct = (fmt.levels if fmt.bits <= 16 else None) if isinstance(fmt, FloatFormat) else fmt.levels
    return _Measured(
        levels=1 << fmt.bits,
        distinct=distinct,
        bits_per_weight=q.bits_per_weight,
        err=err,
        zeroed=zeroed,
        step=step,
        snapped=_frozen(_snapped(source, x_hat)),
        grid=_frozen(grid),
        grid_lines=grid_lines,
        hist=_frozen(histogram(x_hat)),
    )


def _measure_block(source: str, fam: str) -> _Measured:
    """:func:`_measure` for a block format: quantlab's quantizer and decoder for the whole
    source; the grid is the strip's first block's (:func:`.blocks.block_view`)."""
    _, x_hat, bpw = blocks.block_quantized(source, fam)
    view = blocks.block_view(source, fam)
    err, zeroed = _errors(weights(source), x_hat)
    inside = view.values[np.abs(view.values) <= WINDOW]
    grid_lines = int(inside.size)
    k, unit = view.block_size, "sub-block" if fam == "q4_k" else "block"
    own = "scale and min" if fam == "q4_k" else "scale"
    others = GROUP_SIZE // k - 1
    rest = (
        f"the other {unit} of the strip has its own {own}"
        if others == 1
        else f"the strip's {others} other {unit}s have their own {own}s"
    )
    note = (
        f"the grey lines are the grid of the strip's first {unit} (row {view.row}, weights "
        f"{view.start}–{view.start + k - 1}): " + rest
    )
    return _Measured(
        levels=16,
        distinct=16 if fam in ("q4_0", "q4_k") else get_format(fam).levels,
        bits_per_weight=bpw,
        err=err,
        zeroed=zeroed,
        step=None,
        snapped=_frozen(_snapped(source, x_hat)),
        grid=_frozen(inside.copy()) if grid_lines <= MAX_GRID_LINES else None,
        grid_lines=grid_lines,
        hist=_frozen(histogram(x_hat)),
        block=view,
        notes=(note,),
    )


@cache
def _explore(settings: Settings) -> ExplorerData:
    source = settings.source
    hist_original, beyond = source_histogram(source)
    res = resolve(settings)
    common: dict[str, Any] = dict(
        settings=settings,
        bits=settings.bits,
        strip=strip(source),
        hist_original=hist_original.copy(),
        beyond=beyond,
        n=int(weights(source).numel()),
    )
    if res.fmt is None:
        return _finish(
            ExplorerData(
                available=False,
                fmt=None,
                granularity=None,
                symmetric=True,
                levels=None,
                distinct_values=None,
                compression=None,
                avg_error_pct=None,
                bits_per_weight=None,
                zeroed_pct=None,
                step=None,
                regime=_regime(res, settings, None, None),
                notes=res.notes,
                snapped=None,
                grid=None,
                grid_lines=0,
                hist=None,
                **common,
            )
        )
    m = _measure(source, res.fmt, res.granularity, res.symmetric)
    return _finish(
        ExplorerData(
            available=True,
            fmt=res.fmt,
            granularity=res.granularity,
            symmetric=res.symmetric,
            levels=m.levels,
            distinct_values=m.distinct,
            compression=32 / m.bits_per_weight,
            avg_error_pct=m.err,
            bits_per_weight=m.bits_per_weight,
            zeroed_pct=m.zeroed,
            step=m.step,
            regime=_regime(res, settings, m.step, m.zeroed),
            notes=res.notes + m.notes,
            snapped=m.snapped,
            grid=m.grid,
            grid_lines=m.grid_lines,
            hist=m.hist,
            block=m.block,
            **common,
        )
    )


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
        source: a key of :data:`.settings.SOURCES` (see :func:`.sources.weights`).
        bits: 2..16 or 32.
        granularity: ``"tensor"``, ``"channel"`` (one scale per row) or ``"group"``.
        symmetric: True for zero point 0, False for a zero point (integers only).
        family: ``"int"``, ``"float"`` (fp4 / fp6 / fp8 / fp16), ``"nf4"``, or a block
            format at 4 bits: ``"mxfp4"``, ``"nvfp4"`` (:func:`quantlab.quantize`),
            ``"q4_0"`` or ``"q4_k"`` (:func:`quantlab.gguf_blocks.quantize_blocks` and
            ``dequantize_blocks``); their blocks are fixed, so granularity and symmetric
            do not apply. Their bits per weight count every scale (mxfp4 4.25, nvfp4 4.5
            plus one fp32 per tensor, q4_0 and q4_k 4.5), their grid is that of the strip's
            first block, and ``block`` holds that block taken apart (:func:`.blocks.block_view`).

    Returns:
        :class:`ExplorerData` (``available=False`` where the family lacks that width);
        shared between calls, so its arrays are read-only.

    Raises:
        ValueError, TypeError: a control value outside its choices (the message names it).

    Example:
        >>> d = explore("normal", 8)
        >>> d.levels, d.figures["compression"]
        (256, '4×')
        >>> explore("normal", 4, "group").figures["compression"]   # 32 / 4.5
        '7.11×'
    """
    return _explore(
        Settings(source, int(bits) if isinstance(bits, np.integer) else bits, granularity, symmetric, family)
    )


def clear_cache() -> None:
    """Forget computed settings (benchmarks time the computation this way)."""
    _explore.cache_clear()
    _measure.cache_clear()
    blocks.clear_cache()
