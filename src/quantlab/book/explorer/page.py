"""The kernel-free explorer: one self-contained HTML string for the rendered book.

:func:`static_data` computes every setting with :func:`.data.explore` when the book is
built and encodes the results compactly (:func:`entry`); :func:`static_html` embeds them
with the shipped script and styles (``quantlab/book/explorer_assets/explorer.js`` and
``explorer.css``, inlined; nothing is loaded from anywhere). The script only looks up the
precomputed entry for the chosen controls and draws it; it does no quantization arithmetic.

The page also reads without its script: the initial setting is rendered here, in Python
(filled figure cards, the regime, a still picture of the strip and the histogram, the
block inspector), with the stylesheet's rules inlined, so JupyterLab showing an untrusted
notebook (which drops scripts, styles and SVG) shows that setting instead of empty cards.
The script removes the still picture and the inline styles when it starts.

Taught in: chapters/02_explorer.ipynb, "Try it first".
"""

from __future__ import annotations

import html
import itertools
import json
import math
from typing import Any, Optional

import numpy as np

from .blocks import DECIMALS, rounded
from .data import ExplorerData, beyond_text, explore
from .markup import El, Raw, asset, el, figure_cards, panel, render
from .settings import BITS, FAMILIES, GRANULARITIES, GROUP_SIZE, PRESETS, SOURCES, Settings, all_settings, preset_of
from .sources import HIST_EDGES, WINDOW, strip_location
from .text import FIGURE_LABELS, TEXT

__all__ = [
    "UNIT",
    "FIGURE_KEYS",
    "runs_of_zeros",
    "expand_zeros",
    "entry",
    "static_data",
    "decode",
    "static_html",
    "still",
]

#: Positions are embedded as integers in units of ``1 / UNIT`` (1e-4, :data:`.blocks.DECIMALS`).
UNIT = 10**DECIMALS


#: The order of the figures in an entry's ``figs`` list: the bit width, then the cards.
FIGURE_KEYS: tuple[str, ...] = ("bits",) + tuple(FIGURE_LABELS)


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.round(np.asarray(values, dtype=np.float64) * UNIT)]


def runs_of_zeros(values: list[int]) -> list[Any]:
    """A list of integers with every run of 3 or more zeros written as the string ``"z<n>"``
    (``[5, 0, 0, 0, 0, 2]`` becomes ``[5, "z4", 2]``): histograms and differences of
    histograms are mostly zeros."""
    out: list[Any] = []
    run = 0
    for v in list(values) + [None]:
        if v == 0:
            run += 1
            continue
        out += [0] * run if run < 3 else [f"z{run}"]
        run = 0
        if v is not None:
            out.append(int(v))
    return out


def expand_zeros(values: list[Any]) -> list[int]:
    """Undo :func:`runs_of_zeros`."""
    out: list[int] = []
    for v in values:
        out += [0] * int(v[1:]) if isinstance(v, str) else [v]
    return out


class _Strings:
    """Texts shared by many entries, stored once: ``add`` returns a text's index."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.items)
            self.items.append(text)
        return self._index[text]


def entry(data: ExplorerData, strings: Optional[_Strings] = None) -> dict[str, Any]:
    """One setting as the static page embeds it.

    Fields: ``ok``, ``fmt``, ``figs`` (the displayed figures, in the order of
    :data:`FIGURE_KEYS`), ``title``, ``regime``,
    ``gridText`` and ``notes`` (texts, or their indices in the shared list when ``strings``
    is given), and where available: ``snap`` (the 64 snapped values minus the strip's, in
    units of 1e-4), ``grid`` (the grid values in units of 1e-4: the first, then the steps
    between neighbours; None when too fine to draw), ``hist`` (the quantized histogram) or
    ``histDiff`` (its difference from the original histogram, whichever is shorter; both
    with runs of zeros shortened, :func:`runs_of_zeros`), and
    ``block`` for a block format (:meth:`.blocks.BlockView.describe`). :func:`decode`
    undoes the encoding.
    """
    text = (lambda s: s) if strings is None else strings.add
    out: dict[str, Any] = {
        "ok": data.available,
        "fmt": data.fmt,
        "figs": [data.figures[k] for k in FIGURE_KEYS],
        "title": text(data.title),
        "regime": text(data.regime),
        "gridText": text(data.grid_text),
        "notes": [text(n) for n in data.notes],
    }
    if not data.available:
        return out
    strip = _ints(data.strip)
    out["snap"] = [s - o for s, o in zip(_ints(data.snapped), strip)]
    if data.grid is not None:
        g = _ints(data.grid)
        out["grid"] = g[:1] + [b - a for a, b in itertools.pairwise(g)]
    else:
        out["grid"] = None
    dense = runs_of_zeros([int(v) for v in data.hist])
    diff = runs_of_zeros([int(a) - int(b) for a, b in zip(data.hist, data.hist_original)])
    if len(json.dumps(diff)) < len(json.dumps(dense)):
        out["histDiff"] = diff
    else:
        out["hist"] = dense
    if data.block is not None:
        out["block"] = data.block.describe()
    return out


def _source(source: str) -> dict[str, Any]:
    d = explore(source, 32)
    r, c = strip_location(source)
    return {
        "label": SOURCES[source],
        "strip": _ints(d.strip),
        "hist": [int(v) for v in d.hist_original],
        "n": d.n,
        "beyond": beyond_text(d.beyond) if d.beyond else "",
        "where": f"row {r}, weights {c * GROUP_SIZE}–{(c + 1) * GROUP_SIZE - 1}",
        "histTitle": TEXT["hist_title"].format(n=f"{d.n:,}"),
    }


def static_data() -> dict[str, Any]:
    """Every setting's entry, deduplicated, as the static page embeds it.

    Returns:
        ``{"bits", "edges", "window", "unit", "labels", "figKeys", "text", "axes", "presets",
        "sources": {name: {...}}, "strings": [...], "index": [...], "entries": [...]}``:
        ``index[i]`` is the entry of the i-th setting of :func:`.settings.all_settings`
        (:func:`.settings.settings_index`), ``axes`` the order of the choices that index
        counts in, ``strings`` the shared texts the entries point to.
    """
    strings = _Strings()
    entries: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    index: list[int] = []
    for s in all_settings():
        e = entry(explore(**s.controls()), strings)
        blob = json.dumps(e, sort_keys=True, ensure_ascii=False)
        if blob not in seen:
            seen[blob] = len(entries)
            entries.append(e)
        index.append(seen[blob])
    return {
        "bits": list(BITS),
        "edges": rounded(HIST_EDGES),
        "window": WINDOW,
        "unit": UNIT,
        "labels": dict(FIGURE_LABELS),
        "figKeys": list(FIGURE_KEYS),
        "text": dict(TEXT),
        "axes": {
            "source": list(SOURCES),
            "family": list(FAMILIES),
            "granularity": list(GRANULARITIES),
            "symmetric": ["s", "a"],
        },
        "presets": {
            name: {
                "about": p.about,
                "controls": {k: ("s" if v else "a") if k == "symmetric" else v for k, v in p.controls.items()},
            }
            for name, p in PRESETS.items()
        },
        "sources": {source: _source(source) for source in SOURCES},
        "strings": strings.items,
        "index": index,
        "entries": entries,
    }


def decode(data: dict[str, Any], i: int) -> dict[str, Any]:
    """The entry of the i-th setting of :func:`static_data`'s ``data``, decoded as the
    page's script decodes it: texts, and ``snap``, ``grid`` as floats, ``hist`` as counts."""
    e = dict(data["entries"][data["index"][i]])
    e["figs"] = dict(zip(data["figKeys"], e["figs"]))
    s = data["strings"]
    for k in ("title", "regime", "gridText"):
        e[k] = s[e[k]]
    e["notes"] = [s[n] for n in e["notes"]]
    if not e["ok"]:
        return e
    src = data["sources"][data["axes"]["source"][i // (len(data["index"]) // len(data["axes"]["source"]))]]
    e["snap"] = [(a + b) / UNIT for a, b in zip(src["strip"], e["snap"])]
    if e["grid"] is not None:
        e["grid"] = [v / UNIT for v in np.cumsum(e["grid"]).tolist()]
    if "histDiff" in e:
        e["hist"] = [a + b for a, b in zip(src["hist"], expand_zeros(e.pop("histDiff")))]
    else:
        e["hist"] = expand_zeros(e["hist"])
    return e


# --------------------------------------------------------------------------- the page


def _pos(v: float) -> str:
    """A value's place on the still picture's axis, in % of its width."""
    return f"{(v + WINDOW) / (2 * WINDOW) * 100:.2f}%"


def _dot(cls: str, v: float) -> El:
    return el("span", {"class": cls, "style": f"left:{_pos(v)}"})


def still(d: ExplorerData) -> El:
    """A still picture of a setting in plain elements (no SVG, no script): the strip's
    weights and the values they snap to on a number line, the grid, and the histograms
    before and after quantization on the same log scale as the script's drawing."""
    strip_box = el("div", {"class": "qlx-still-strip"})
    if d.grid is not None:
        strip_box.children += [_dot("qlx-still-grid", v) for v in d.grid]
    strip_box.children += [_dot("qlx-still-o", v) for v in d.strip if abs(v) <= WINDOW]
    if d.available:
        strip_box.children += [_dot("qlx-still-q", v) for v in d.snapped if abs(v) <= WINDOW]
    axis = el(
        "div",
        {"class": "qlx-still-axis"},
        *(el("span", {"style": f"left:{_pos(t)}"}, f"{t:g}") for t in (-0.4, -0.2, 0.0, 0.2, 0.4)),
    )
    hist_box = el("div", {"class": "qlx-still-hist"})
    width = f"{100 / (len(HIST_EDGES) - 1):.3f}%"

    def bars(counts: np.ndarray, cls: str) -> list[El]:
        out = []
        for i, c in enumerate(counts):
            if c == 0:
                continue
            level = (math.log10(100 * c / d.n) + 3) / 5  # 0.001 % .. 100 % on a log scale
            out.append(
                el(
                    "span",
                    {
                        "class": cls,
                        "style": f"left:{_pos(HIST_EDGES[i])};width:{width};"
                        f"height:{100 * min(max(level, 0.01), 1):.1f}%",
                    },
                )
            )
        return out

    hist_box.children += bars(d.hist_original, "qlx-still-ho")
    if d.available:
        hist_box.children += bars(d.hist, "qlx-still-hq")
    legend = el(
        "p",
        {"class": "qlx-still-legend"},
        el("span", {"class": "qlx-still-key qlx-still-ko"}),
        " " + TEXT["legend_orig"] + "  ",
        el("span", {"class": "qlx-still-key qlx-still-kq"}),
        " " + TEXT["legend_quant"] + (f" ({d.fmt})" if d.available else ""),
    )
    beyond = [el("p", {"class": "qlx-sub"}, beyond_text(d.beyond))] if d.beyond else []
    return el(
        "div",
        {"class": "qlx-still", "data-role": "still"},
        el("p", {"class": "qlx-still-title"}, TEXT["strip_title"] + ": " + d.title),
        el("p", {"class": "qlx-sub"}, d.grid_text),
        strip_box,
        axis,
        legend,
        el("p", {"class": "qlx-still-title"}, TEXT["hist_title"].format(n=f"{d.n:,}")),
        *beyond,
        hist_box,
        axis,
        el("p", {"class": "qlx-still-note"}, TEXT["still_page"]),
    )


def _select(role: str, label: str, choices: dict[str, str], selected: Optional[str]) -> El:
    return el(
        "label",
        {},
        label,
        el(
            "select",
            {"data-role": role},
            *(el("option", {"value": k, "selected": k == selected}, v) for k, v in choices.items()),
        ),
    )


def static_html(
    data: Optional[dict[str, Any]] = None,
    root_id: str = "ql-explorer",
    initial: Optional[Settings] = None,
) -> str:
    """A self-contained HTML explorer for pages without a kernel.

    Every entry is computed by :func:`.data.explore` (through :func:`static_data`) when this
    runs; the inline script only selects the entry for the controls and draws it as SVG
    (and, for a block format, the block inspector from the entry's ``"block"``). Nothing is
    loaded from anywhere. The initial setting is also rendered here, readable without the
    script and the stylesheet (see the module docstring).

    Args:
        data: precomputed :func:`static_data` (computed if None).
        root_id: the ``id`` of the outer element (unique per page).
        initial: the setting shown first (default 4-bit integers, normal weights).

    Returns:
        An HTML string: a ``<div>`` with controls, figures, a still picture, two SVGs, the
        block inspector (``data-role="block"``, hidden unless a block format is chosen) and
        two scripts.

    Raises:
        TypeError: ``initial`` is not a :class:`.settings.Settings`.
    """
    if initial is None:
        initial = Settings("normal", 4, "tensor", True, "int")
    if not isinstance(initial, Settings):
        raise TypeError(f"initial must be a Settings, got {type(initial).__name__}")
    if data is None:
        data = static_data()
    d = explore(**initial.controls())
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    preset = preset_of(initial)
    ticks = el(
        "div",
        {"class": "qlx-ticks"},
        *(el("span", {"class": "qlx-on" if b == initial.bits else None}, str(b)) for b in BITS),
    )
    root = el(
        "div",
        {"class": "qlx", "id": root_id},
        el("style", {}, Raw(f"\n{asset('explorer.css')}")),
        el("h4", {}, TEXT["title"]),
        el(
            "div",
            {"class": "qlx-slider"},
            el(
                "label",
                {"for": f"{root_id}-bits"},
                f"{TEXT['precision']}: ",
                el("span", {"data-fig": "bits"}, d.figures["bits"]),
            ),
            el(
                "input",
                {
                    "type": "range",
                    "id": f"{root_id}-bits",
                    "data-role": "bits",
                    "min": 0,
                    "max": len(BITS) - 1,
                    "step": 1,
                    "value": BITS.index(initial.bits),
                    "data-bits": ",".join(map(str, BITS)),
                    "aria-label": TEXT["bit_width"],
                    "aria-valuetext": TEXT["bits_value"].format(bits=initial.bits),
                },
            ),
            ticks,
            el("div", {"class": "qlx-ends"}, el("span", {}, TEXT["end_low"]), el("span", {}, TEXT["end_high"])),
        ),
        el(
            "div",
            {"class": "qlx-controls"},
            _select("preset", TEXT["preset"], {"": TEXT["no_preset"], **{k: k for k in PRESETS}}, preset or ""),
            _select("source", TEXT["weights"], SOURCES, initial.source),
            _select("family", TEXT["format"], FAMILIES, initial.family),
            _select("granularity", TEXT["scale_per"], GRANULARITIES, initial.granularity),
            _select(
                "symmetric",
                TEXT["range"],
                {"s": TEXT["symmetric"], "a": TEXT["asymmetric"]},
                "s" if initial.symmetric else "a",
            ),
        ),
        el("p", {"class": "qlx-about", "data-role": "about"}, PRESETS[preset].about if preset else ""),
        figure_cards(d.figures),
        el("p", {"class": "qlx-regime", "data-fig": "regime"}, d.regime),
        el("p", {"class": "qlx-notes", "data-role": "notes"}, "; ".join(d.notes)),
        still(d),
        # the figures the script draws (hidden until it runs: its first act removes every
        # inline style)
        el(
            "svg",
            {
                "data-role": "strip",
                "viewBox": "0 0 760 194",
                "role": "img",
                "style": "display:none",
                "aria-label": "sample weights and their quantized values on a number line",
            },
        ),
        el(
            "svg",
            {
                "data-role": "hist",
                "viewBox": "0 0 760 270",
                "role": "img",
                "style": "display:none",
                "aria-label": "histogram of the weights before and after quantization",
            },
        ),
        panel(None if d.block is None else d.block.describe()),
        el("p", {"class": "qlx-foot"}, TEXT["foot"]),
        el("script", {"type": "application/json", "data-role": "data"}, Raw(payload)),
        el("script", {}, Raw(f"\n{asset('explorer.js').replace('__ROOT__', html.escape(root_id))}")),
    )
    return render(root, inline=True)
