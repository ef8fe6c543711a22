"""The static Quantization Explorer in the built book, driven in headless Chromium.

Opens _build/html/chapters/02_explorer.html (no kernel, no network), moves the bit-width
slider to 2, 3, 4, 8, 16 and 32 bits and changes the other controls (the weight sources,
granularities, block formats and presets included), reads the displayed figures back, and
checks them against quantlab's numbers for the same settings (``quantlab.explorer.explore``).
The quantized histogram must change with every move, the block inspector must show the
first block of a block format (and be hidden for the other formats), the preset control
must follow the other controls, the still picture rendered in Python must be gone once the
script runs, and no request may leave the machine.

Uses the ``browse`` fixture of tests/conftest.py (the built book served on 127.0.0.1 and
tests/browser/check_pages.mjs driving /usr/bin/chromium).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import book_browser
import pytest

from quantlab import explorer as E
from quantlab.book.explorer import markup

PAGE = "chapters/02_explorer.html"
ROOT = "#ql-explorer"

# What the page shows: every [data-fig] text, the key of the chosen entry, the drawn
# quantized histogram, the orange dots of the strip and the block inspector's table.
READ_BACK = f"""(() => {{
  const r = document.querySelector('{ROOT}');
  if (!r) return null;
  const out = {{key: r.dataset.key, figs: {{}},
    preset: r.querySelector('select[data-role=preset]').value,
    about: r.querySelector('[data-role=about]').textContent,
    still: r.querySelectorAll('[data-role=still]').length, styled: r.querySelectorAll('[style]').length}};
  r.querySelectorAll('[data-fig]').forEach((n) => {{ out.figs[n.dataset.fig] = n.textContent; }});
  const h = r.querySelector('[data-role=hist-quantized]');
  out.hist = h ? h.getAttribute('d') : null;
  out.snapped = r.querySelectorAll('svg[data-role=strip] circle').length;
  out.gridLines = r.querySelectorAll('svg[data-role=strip] .qlx-gridline').length;
  const b = r.querySelector('[data-role=block]');
  const cells = (tr) => [...tr.cells].map((c) => c.textContent);
  out.block = b && {{
    visible: !b.hidden && b.getBoundingClientRect().height > 0,
    rows: [...b.querySelectorAll('table tbody tr')].map(cells),
    html: b.outerHTML,
    desc: b.hidden ? null : {{
      title: b.querySelector(':scope > p > strong').textContent,
      text: b.querySelectorAll(':scope > p')[1].textContent,
      tables: [...b.querySelectorAll(':scope > table')].map((t) => ({{
        role: t.dataset.role, align: t.dataset.align,
        head: cells(t.tHead.rows[0]), rows: [...t.tBodies[0].rows].map(cells)}})),
    }},
  }};
  return out;
}})()"""

# (settings, how to reach them from the previous step)
STEPS: list[tuple[E.Settings, list[dict[str, Any]]]] = []
for _bits in (2, 3, 4, 8, 16, 32):
    STEPS.append(
        (
            E.Settings("normal", _bits),
            [{"type": "setRange", "selector": f"{ROOT} input[data-role=bits]", "value": E.BITS.index(_bits)}],
        )
    )
STEPS += [
    (E.Settings("minilm", 32), [{"type": "select", "selector": f"{ROOT} select[data-role=source]", "value": "minilm"}]),
    (
        E.Settings("minilm", 8),
        [{"type": "setRange", "selector": f"{ROOT} input[data-role=bits]", "value": E.BITS.index(8)}],
    ),
    (
        E.Settings("minilm", 8, "group"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=granularity]", "value": "group"}],
    ),
    (
        E.Settings("minilm", 8, "group", False),
        [{"type": "select", "selector": f"{ROOT} select[data-role=symmetric]", "value": "a"}],
    ),
    (
        E.Settings("minilm", 8, "group", False, "float"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=family]", "value": "float"}],
    ),
    (
        E.Settings("minilm", 4, "group", False, "nf4"),
        [
            {"type": "select", "selector": f"{ROOT} select[data-role=family]", "value": "nf4"},
            {"type": "setRange", "selector": f"{ROOT} input[data-role=bits]", "value": E.BITS.index(4)},
        ],
    ),
    (
        E.Settings("minilm", 5, "group", False, "nf4"),
        [{"type": "setRange", "selector": f"{ROOT} input[data-role=bits]", "value": E.BITS.index(5)}],
    ),
    (
        E.Settings("minilm", 5, "group", False, "mxfp4"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=family]", "value": "mxfp4"}],
    ),
    (
        E.Settings("minilm", 4, "group", False, "mxfp4"),
        [{"type": "setRange", "selector": f"{ROOT} input[data-role=bits]", "value": E.BITS.index(4)}],
    ),
    (
        E.Settings("normal", 4, "group", False, "mxfp4"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=source]", "value": "normal"}],
    ),
    (
        E.Settings("normal", 4, "group", False, "q4_k"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=family]", "value": "q4_k"}],
    ),
    (
        E.Settings("laplace", 4, "group", False, "q4_k"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=source]", "value": "laplace"}],
    ),
    (
        E.Settings("laplace", 8, "channel", True, "int"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=preset]", "value": "int8 per channel"}],
    ),
    (
        E.Settings("outlier", 8, "channel", True, "int"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=source]", "value": "outlier"}],
    ),
    (
        E.Settings("outlier", 4, "channel", True, "q4_0"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=preset]", "value": "Q4_0"}],
    ),
    (
        E.Settings("uniform", 4, "channel", True, "q4_0"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=source]", "value": "uniform"}],
    ),
    (
        E.Settings("uniform", 4, "channel", True, "nvfp4"),
        [{"type": "select", "selector": f"{ROOT} select[data-role=preset]", "value": "NVFP4"}],
    ),
    (
        E.Settings("bimodal", 4, "tensor", True, "nvfp4"),
        [
            {"type": "select", "selector": f"{ROOT} select[data-role=source]", "value": "bimodal"},
            {"type": "select", "selector": f"{ROOT} select[data-role=granularity]", "value": "tensor"},
        ],
    ),
    (
        E.Settings("bimodal", 3, "tensor", True, "nvfp4"),
        [{"type": "setRange", "selector": f"{ROOT} input[data-role=bits]", "value": E.BITS.index(3)}],
    ),
]


@pytest.fixture(scope="module")
def explorer_report(browse: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    actions: list[dict[str, Any]] = [
        {"type": "waitFor", "selector": f"{ROOT} svg[data-role=hist] path"},
        {"type": "eval", "expression": READ_BACK},
    ]
    for _, moves in STEPS:
        actions += moves + [{"type": "eval", "expression": READ_BACK}]
    report = browse([{"path": PAGE, "actions": actions}])
    (page,) = report["pages"]
    return {"report": report, "page": page, "reads": [a for a in page["actions"] if a["action"]["type"] == "eval"]}


def test_page_loads_offline_without_errors(explorer_report):
    page = explorer_report["page"]
    assert explorer_report["report"]["externalRequestCount"] == 0, explorer_report["report"]["externalRequests"]
    assert page["external"] == []
    assert book_browser.page_problems(page) == []
    failed = [a for a in page["actions"] if not a["ok"]]
    assert not failed, failed


def test_initial_view_is_4_bit_integers(explorer_report):
    first = explorer_report["reads"][0]["value"]
    assert first is not None, f"no {ROOT} on {PAGE}"
    assert first["key"] == E.Settings("normal", 4).key
    assert first["figs"]["error"] == E.explore("normal", 4).figures["error"]


@pytest.mark.parametrize("step", range(len(STEPS)), ids=[s.key for s, _ in STEPS])
def test_displayed_figures_equal_quantlab(explorer_report, step):
    settings, _ = STEPS[step]
    shown = explorer_report["reads"][step + 1]["value"]
    assert shown["key"] == settings.key
    data = E.explore(settings.source, settings.bits, settings.granularity, settings.symmetric, settings.family)
    expected = dict(data.figures, regime=data.regime)
    assert {k: shown["figs"][k] for k in expected} == expected
    preset = E.preset_of(settings)
    assert shown["preset"] == (preset or "")  # the preset control follows the other controls
    assert shown["about"] == (E.PRESETS[preset].about if preset else "")
    assert shown["still"] == 0 and shown["styled"] == 0  # the script took over from the still picture
    if data.available:
        # the numbers behind the strings, straight from quantlab
        assert float(shown["figs"]["levels"].replace(",", "")) == 2**data.bits
        bpw = float(shown["figs"]["bpw"])
        assert bpw == pytest.approx(data.bits_per_weight, abs=0.00501)  # 8.125 shows as 8.12
        assert float(shown["figs"]["compression"].rstrip("×")) == pytest.approx(32 / data.bits_per_weight, abs=0.005)
        assert float(shown["figs"]["error"].rstrip(" %")) == pytest.approx(data.avg_error_pct, rel=5e-3, abs=1e-12)
        assert shown["snapped"] == 2 * 64  # blue and orange dots
        assert shown["gridLines"] == (0 if data.grid is None else len(data.grid))
        assert shown["hist"]
    else:
        assert shown["hist"] is None and shown["snapped"] == 64


def test_block_inspector_shows_the_first_block(explorer_report):
    """Choosing a block format at 4 bits shows the inspector: what the page shows, read back,
    is the block's description (:meth:`BlockView.describe`), every word and value of it, in
    the elements quantlab's own renderer makes of it (:func:`markup.panel`)."""
    shown_formats = set()
    for step, (settings, _) in enumerate(STEPS):
        block = explorer_report["reads"][step + 1]["value"]["block"]
        assert block is not None, "no block inspector on the page"
        if settings.family in E.BLOCK_FORMATS and settings.bits == 4:
            view = E.block_view(settings.source, settings.family)
            desc = view.describe()
            assert block["visible"], settings.key
            assert block["desc"] == desc, settings.key
            assert block["html"] == markup.render(markup.panel(desc)), settings.key
            assert len(block["rows"]) == len(view.scales) + view.block_size
            shown_formats.add(settings.family)
        else:
            assert not block["visible"] and block["desc"] is None and block["rows"] == [], settings.key
            assert block["html"] == markup.render(markup.panel(None)).replace(" hidden", ' hidden=""')
    assert shown_formats == set(E.BLOCK_FORMATS)


def test_initial_page_matches_its_still_rendering(explorer_report):
    """Before the script ran, the page held the initial setting's figures (rendered in Python);
    the script shows the same ones."""
    first = explorer_report["reads"][0]["value"]
    d = E.explore("normal", 4)
    assert {k: first["figs"][k] for k in d.figures} == d.figures
    assert first["still"] == 0 and first["preset"] == ""


def test_histogram_changes_with_the_slider(explorer_report):
    reads = [r["value"] for r in explorer_report["reads"][1:7]]  # 2, 3, 4, 8, 16, 32 bits
    paths = [r["hist"] for r in reads]
    assert all(paths) and len(set(paths)) == len(paths)


# --------------------------------------------------------------------------- layout at 1280 px and 390 px

# At 32 bits: is every figure card's value fully visible, and how large is the figures'
# text on screen (CSS font size times the scale of the SVG drawing)? Measured in the page
# itself (1280 px wide) and in a 390 px wide frame of the same page (a phone's width).
LAYOUT = f"""(async () => {{
  function measure(doc) {{
    const r = doc.querySelector('{ROOT}');
    const bits = r.querySelector('input[data-role=bits]');
    bits.value = '{E.BITS.index(32)}';
    bits.dispatchEvent(new Event('input', {{bubbles: true}}));
    const cards = [...r.querySelectorAll('.qlx-fig')].map((c) => {{
      const v = c.querySelector('.v');
      return {{fig: v.dataset.fig, text: v.textContent, vScroll: v.scrollWidth, vClient: v.clientWidth,
               cardScroll: c.scrollWidth, cardClient: c.clientWidth}};
    }});
    let minPx = Infinity, overflow = [];
    r.querySelectorAll('svg').forEach((svg) => {{
      const vb = svg.viewBox.baseVal, scale = svg.getBoundingClientRect().width / vb.width;
      svg.querySelectorAll('text').forEach((t) => {{
        minPx = Math.min(minPx, parseFloat(getComputedStyle(t).fontSize) * scale);
        if (t.hasAttribute('transform')) return;
        const b = t.getBBox();
        if (b.x < -1 || b.x + b.width > vb.width + 1) overflow.push(t.textContent);
      }});
    }});
    return {{width: doc.documentElement.clientWidth, cards, minPx, overflow}};
  }}
  const wide = measure(document);
  const f = document.createElement('iframe');
  f.style.cssText = 'width:390px;height:844px;border:0';
  const loaded = new Promise((ok) => f.addEventListener('load', ok, {{once: true}}));
  f.src = location.href.split('#')[0];
  document.body.appendChild(f);
  await loaded;
  await new Promise((ok) => setTimeout(ok, 300));
  return {{wide, narrow: measure(f.contentDocument)}};
}})()"""


@pytest.fixture(scope="module")
def layout(browse: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    report = browse(
        [
            {
                "path": PAGE,
                "actions": [
                    {"type": "waitFor", "selector": f"{ROOT} svg[data-role=hist] path"},
                    {"type": "eval", "expression": LAYOUT, "timeoutMs": 30000},
                ],
            }
        ]
    )
    (page,) = report["pages"]
    action = page["actions"][-1]
    assert action["ok"], action
    return action["value"]


@pytest.mark.parametrize("width", ["wide", "narrow"])
def test_levels_card_fits_at_32_bits(layout, width):
    shown = layout[width]
    assert 360 <= shown["width"] <= 390 if width == "narrow" else shown["width"] > 1200  # less a scrollbar
    cards = {c["fig"]: c for c in shown["cards"]}
    levels = cards["levels"]
    assert levels["text"] == E.explore("normal", 32).figures["levels"] == "4,294,967,296"
    for c in shown["cards"]:  # every card, the 10-digit number of levels included
        assert c["vScroll"] <= c["vClient"] and c["cardScroll"] <= c["cardClient"], c


@pytest.mark.parametrize("width", ["wide", "narrow"])
def test_figure_text_is_readable(layout, width):
    shown = layout[width]
    assert shown["minPx"] >= 11, shown["minPx"]  # the smallest text of the drawings, in CSS px
    assert shown["overflow"] == []  # titles wrap instead of running off the drawing
