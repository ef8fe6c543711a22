"""The Quantization Explorer: drag a bit-width slider, watch weights snap to the grid.

One source of numbers, two front ends, a module per job:

* :mod:`.settings`: the model of a setting. The controls ``(source, bits, granularity,
  symmetric, family)`` (:class:`Settings`), the quantlab call each stands for
  (:func:`resolve`), and the presets named after downloadable formats (:data:`PRESETS`).
* :mod:`.sources`: the weights (five seeded distributions and a real MiniLM layer), the
  strip of 64 drawn on the number line, the histogram's bins.
* :mod:`.data`: :func:`explore` computes everything shown for one setting with quantlab's
  quantizers (:class:`ExplorerData`) and :func:`format_figures` writes the figure cards.
* :mod:`.blocks`: the block inspector (:func:`block_view`), one block of ``q4_0``,
  ``q4_k``, ``mxfp4`` or ``nvfp4`` taken apart, described once (:meth:`BlockView.describe`).
* :mod:`.text` and :mod:`.markup`: the words both front ends use, and HTML that reads
  with or without the shipped stylesheet (the styles and script live in
  ``quantlab/book/explorer_assets/``; the colours are :data:`COLORS`).
* :mod:`.page`: the kernel-free front end for the rendered book (:func:`static_html`,
  every setting precomputed by :func:`static_data`; its script only looks results up).
* :mod:`.widget`: the kernel front end (:class:`Explorer`): ipywidgets controls and a
  matplotlib figure updated in place.

The bit widths are 2..16 (integers ``int2`` .. ``int16``) and 32, which is float32
itself (the baseline: no error, ``2^32`` bit patterns).

Taught in: chapters/02_explorer.ipynb, "Try it first", "What you just saw" and "Blocks that
share a scale".
"""

from __future__ import annotations

from .blocks import BlockScale, BlockView, block_view
from .data import MAX_GRID_LINES, ExplorerData, beyond_text, clear_cache, explore, format_figures
from .markup import COLORS
from .page import static_data, static_html
from .settings import (
    BITS,
    BLOCK_FORMATS,
    FAMILIES,
    FLOAT_FORMATS,
    GRANULARITIES,
    GROUP_SIZE,
    NORMAL_STD,
    PRESETS,
    SOURCES,
    Preset,
    Resolved,
    Settings,
    all_settings,
    preset_of,
    resolve,
    settings_index,
)
from .sources import (
    HIST_EDGES,
    MINILM_ROWS,
    MINILM_WEIGHT,
    NORMAL_SHAPE,
    OUTLIER,
    OUTLIER_SOURCES,
    WINDOW,
    histogram,
    strip_location,
    weights,
)
from .text import FIGURE_LABELS, TEXT
from .widget import Explorer

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
    "OUTLIER",
    "OUTLIER_SOURCES",
    "WINDOW",
    "MINILM_WEIGHT",
    "MINILM_ROWS",
    "HIST_EDGES",
    "MAX_GRID_LINES",
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
    "settings_index",
    "Preset",
    "PRESETS",
    "preset_of",
    "format_figures",
    "beyond_text",
    "FIGURE_LABELS",
    "TEXT",
    "clear_cache",
    "static_data",
    "static_html",
    "COLORS",
    "Explorer",
]
