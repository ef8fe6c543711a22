"""The kernel explorer: ipywidgets controls driving a matplotlib figure.

Every move of a control calls :func:`.data.explore` and updates the figure's artists in
place (``set_offsets``, ``set_segments``, ``StepPatch.set_data``), never re-created; the
figure cards, the regime and the block inspector are the same markup as the kernel-free
page's (:mod:`.markup`), with the same words (:mod:`.text`).

Saved in a notebook, the cell that shows an :class:`Explorer` keeps a still picture of the
figure with a note to run the cell (:meth:`Explorer._repr_mimebundle_`): that is what
JupyterLab shows before the cell runs, instead of the widget's text representation.

Taught in: chapters/02_explorer.ipynb, "Try it first".
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Optional

import numpy as np

from .data import ExplorerData, explore
from .markup import COLORS, el, figure_cards, render
from .settings import BITS, FAMILIES, GRANULARITIES, PRESETS, SOURCES, Settings, preset_of
from .sources import HIST_EDGES, WINDOW
from .text import FIGURE_LABELS, TEXT

__all__ = ["Explorer"]

_CONTROLS = ("source", "bits", "granularity", "symmetric", "family")


class Explorer:
    """The kernel front end: ipywidgets controls driving a matplotlib figure.

    The figure is built once (``matplotlib.figure.Figure`` on the Agg canvas); every
    update changes its artists in place (``set_offsets`` of the snapped points,
    ``set_segments`` of the grid and the links, ``StepPatch.set_data`` of the histogram),
    redraws them and sends the image to an ``ipywidgets.Image``.

    Args:
        source, bits, granularity, symmetric, family: the initial setting (see
            :func:`.data.explore`).
        dpi: resolution of the image sent to the browser.

    Example:
        >>> ex = Explorer(bits=4)          # in a notebook, display(ex) shows it
        >>> ex.set(bits=8).figures["levels"]
        '256'
        >>> ex.preset("Q4_K").fmt
        'q4_k'
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
        FigureCanvasAgg(self.fig)  # draws off-screen; the image goes to an ipywidgets.Image
        self._build_axes()
        self._widgets: Optional[dict[str, Any]] = None
        self._source_drawn: Optional[str] = None
        self.data = explore(**self.settings.controls())
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
        ax.set_xlabel(TEXT["weight_value"])
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
        yaxis = ax.get_yaxis_transform()
        ax.text(-0.01, 1, TEXT["float32"], transform=yaxis, ha="right", va="center")
        ax.text(-0.01, 0, TEXT["quantized"], transform=yaxis, ha="right", va="center")
        ax.set_title(TEXT["strip_title"], fontsize=10, loc="left", weight="bold")
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
        ax.set_xlabel(TEXT["hist_x"])
        ax.set_ylabel(TEXT["hist_y"].replace(" (", "\n("))
        ax.grid(axis="y", color="0.85", linewidth=0.6)
        zeros = np.full(len(HIST_EDGES) - 1, self._floor)
        self.hist_orig = ax.stairs(
            zeros, HIST_EDGES, fill=True, baseline=self._floor, color=COLORS["orig"], alpha=0.3, **anim
        )
        self.hist_quant = ax.stairs(zeros, HIST_EDGES, baseline=None, color=COLORS["quant"], linewidth=1.6, **anim)
        ax.legend(
            handles=[
                Patch(color=COLORS["orig"], alpha=0.35, label=TEXT["legend_orig"]),
                Line2D([], [], color=COLORS["quant"], linewidth=1.6, label=TEXT["legend_quant"]),
            ],
            loc="upper right",
            fontsize=8,
            frameon=False,
        )
        ax.set_title(TEXT["hist_title"].format(n="").replace("  ", " "), fontsize=10, loc="left", weight="bold")
        # Only data artists change; the texts that change live in the HTML beside the image
        # (rendering glyphs is most of the cost of a matplotlib redraw).
        self._animated = [self.grid_lines, self.links, self.pts_orig, self.pts_quant, self.hist_orig, self.hist_quant]
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
            self.grid_lines.set_segments(
                np.stack(
                    [np.column_stack([g, np.full_like(g, -0.25)]), np.column_stack([g, np.full_like(g, 1.25)])], axis=1
                )
            )
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

    def still(self) -> bytes:
        """A still picture for a saved notebook (JPEG bytes): a note to run the cell, the
        figure cards as a line of text, then the figure as :meth:`image` draws it."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from PIL import Image

        w, _ = self.fig.canvas.get_width_height(physical=True)
        head = Figure(figsize=(w / self.dpi, 0.8), dpi=self.dpi)
        FigureCanvasAgg(head)
        d = self.data
        head.text(
            0.01,
            0.78,
            TEXT["still_widget"].format(setting=d.title),
            fontsize=10,
            weight="bold",
            color=COLORS["fg"],
            va="center",
        )
        cards = [f"{FIGURE_LABELS[k]}: {d.figures[k]}" for k in FIGURE_LABELS]
        for line, y in ((cards[:3], 0.45), (cards[3:], 0.15)):
            head.text(0.01, y, "     ".join(line), fontsize=9, color=COLORS["muted"], va="center")
        head.canvas.draw()
        top = np.asarray(head.canvas.buffer_rgba())[..., :3]
        self._draw(self.data)  # the figure's canvas holds the current setting
        body = np.asarray(self.fig.canvas.buffer_rgba())[..., :3]
        buf = io.BytesIO()
        Image.fromarray(np.concatenate([top[:, :w], body], axis=0)).save(buf, format="jpeg", quality=88)
        return buf.getvalue()

    # ---- state
    def set(self, **changes: Any) -> ExplorerData:
        """Change controls (``bits=8``, ``source="minilm"``, ...), recompute and redraw.

        Returns:
            The :class:`.data.ExplorerData` now shown.

        Raises:
            ValueError, TypeError: an unknown control or a value outside its choices.
        """
        unknown = set(changes) - set(_CONTROLS)
        if unknown:
            raise ValueError(f"unknown explorer control(s) {sorted(unknown)}: the controls are {_CONTROLS}")
        kw = self.settings.controls()
        kw.update(changes)
        self.settings = Settings(**kw)
        self.data = explore(**kw)
        self._draw(self.data)
        if self._widgets is not None:
            self._sync_widgets()
        return self.data

    def preset(self, name: str) -> ExplorerData:
        """Set the controls of a preset (:data:`.settings.PRESETS`: ``"Q4_0"``, ``"Q4_K"``,
        ``"MXFP4"``, ``"NVFP4"``, ``"int8 per channel"``); the weights stay.

        Raises:
            ValueError: an unknown preset (the message lists them).
        """
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
        return self.set(**PRESETS[name].controls)

    @property
    def figures(self) -> dict[str, str]:
        """The displayed figures of the current setting."""
        return dict(self.data.figures)

    # ---- widgets
    def widget(self):
        """The ipywidgets box: controls, figures, regime text, the figure image and, for
        a block format, the block inspector (:meth:`.blocks.BlockView.to_html`) under it."""
        if self._widgets is None:
            self._make_widgets()
        return self._widgets["box"]

    def _make_widgets(self) -> None:
        import ipywidgets as W

        s = self.settings
        labels = [f"{b}-bit" + (TEXT["stop_low"] if b == 2 else TEXT["stop_high"] if b == 32 else "") for b in BITS]
        style = {"description_width": "80px"}
        w: dict[str, Any] = {}
        w["bits"] = W.SelectionSlider(
            options=list(zip(labels, BITS)),
            value=s.bits,
            description=TEXT["precision"],
            continuous_update=True,
            layout=W.Layout(width="560px"),
            style=style,
        )
        ends = el(
            "div",
            {"class": "qlx-ends", "style": "width:470px;margin-left:88px"},
            el("span", {}, TEXT["end_low"]),
            el("span", {}, TEXT["end_high"]),
        )
        w["ends"] = W.HTML(render(ends, inline=True))
        w["preset"] = W.Dropdown(
            options=[(TEXT["no_preset"], "")] + [(k, k) for k in PRESETS],
            value=preset_of(s) or "",
            description=TEXT["preset"],
            style=style,
            layout=W.Layout(width="300px"),
        )
        w["source"] = W.Dropdown(
            options=[(v, k) for k, v in SOURCES.items()],
            value=s.source,
            description=TEXT["weights"],
            style=style,
            layout=W.Layout(width="480px"),
        )
        w["family"] = W.Dropdown(
            options=[(v, k) for k, v in FAMILIES.items()],
            value=s.family,
            description=TEXT["format"],
            style=style,
            layout=W.Layout(width="300px"),
        )
        w["granularity"] = W.ToggleButtons(
            options=[(v, k) for k, v in GRANULARITIES.items()],
            value=s.granularity,
            description=TEXT["scale_per"],
            style={**style, "button_width": "150px"},
        )
        w["symmetric"] = W.ToggleButtons(
            options=[(TEXT["symmetric"], True), (TEXT["asymmetric"], False)],
            value=s.symmetric,
            description=TEXT["range"],
            style={**style, "button_width": "190px"},
        )
        w["figs"] = W.HTML()
        w["image"] = W.Image(format="jpeg", layout=W.Layout(width="774px"))
        w["block"] = W.HTML(layout=W.Layout(display="none"))  # the block inspector
        w["box"] = W.VBox(
            [
                w["bits"],
                w["ends"],
                w["preset"],
                w["source"],
                w["family"],
                w["granularity"],
                w["symmetric"],
                w["figs"],
                w["image"],
                w["block"],
            ]
        )
        self._widgets = w
        for name in _CONTROLS:
            w[name].observe(self._on_change, names="value")
        w["preset"].observe(self._on_preset, names="value")
        self._sync_widgets()

    def _on_change(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        w = self._widgets
        self.set(**{k: w[k].value for k in _CONTROLS})

    def _on_preset(self, change: dict[str, Any]) -> None:
        if not self._syncing and change["new"]:
            self.preset(change["new"])

    _syncing = False

    def _figures_html(self) -> str:
        d = self.data
        name = preset_of(d.settings)
        about = [el("p", {"class": "qlx-about"}, f"{name}: {PRESETS[name].about}")] if name else []
        notes = "; ".join(d.notes)
        box = el(
            "div",
            {"class": "qlx-widget", "style": "max-width:774px"},
            *about,
            figure_cards(d.figures),
            el("p", {"class": "qlx-regime"}, d.regime),
            el("p", {"class": "qlx-notes"}, d.caption + (" " + TEXT["note"].format(notes=notes) if notes else "")),
        )
        return render(box, inline=True)

    def _sync_widgets(self) -> None:
        w = self._widgets
        self._syncing = True
        try:  # the controls follow the setting (a preset moves several at once)
            for name in _CONTROLS:
                w[name].value = getattr(self.settings, name)
            w["preset"].value = preset_of(self.settings) or ""
        finally:
            self._syncing = False
        w["figs"].value = self._figures_html()
        w["image"].value = self.image()
        block = self.data.block
        w["block"].value = "" if block is None else block.to_html()
        w["block"].layout.display = "none" if block is None else None

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The widget, and for a notebook that is opened before it runs, a still picture
        (``image/jpeg``, :meth:`still`) and a plain-text note: JupyterLab shows the widget
        once the cell has run, and the picture (a safe output) in a saved, untrusted notebook."""
        bundle = dict(self.widget()._repr_mimebundle_())
        bundle["image/jpeg"] = base64.b64encode(self.still()).decode("ascii")
        bundle["text/plain"] = html.unescape(TEXT["still_widget"].format(setting=self.data.title))
        return bundle
