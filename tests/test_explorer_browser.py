"""The static Quantization Explorer in the built book, driven in headless Chromium.

Opens _build/html/chapters/02_explorer.html (no kernel, no network), moves the bit-width
slider to 2, 3, 4, 8, 16 and 32 bits and changes the other controls, reads the displayed
figures back, and checks them against quantlab's numbers for the same settings
(``quantlab.explorer.explore``). The quantized histogram must change with every move, and
no request may leave the machine.

Uses the ``browse`` fixture of tests/conftest.py (the built book served on 127.0.0.1 and
tests/browser/check_pages.mjs driving /usr/bin/chromium).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import book_browser
from quantlab import explorer as E

PAGE = "chapters/02_explorer.html"
ROOT = "#ql-explorer"

# What the page shows: every [data-fig] text, the key of the chosen entry, the drawn
# quantized histogram and the orange dots of the strip.
READ_BACK = f"""(() => {{
  const r = document.querySelector('{ROOT}');
  if (!r) return null;
  const out = {{key: r.dataset.key, figs: {{}}}};
  r.querySelectorAll('[data-fig]').forEach((n) => {{ out.figs[n.dataset.fig] = n.textContent; }});
  const h = r.querySelector('[data-role=hist-quantized]');
  out.hist = h ? h.getAttribute('d') : null;
  out.snapped = r.querySelectorAll('svg[data-role=strip] circle').length;
  out.gridLines = r.querySelectorAll('svg[data-role=strip] .qlx-gridline').length;
  return out;
}})()"""

# (settings, how to reach them from the previous step)
STEPS: list[tuple[E.Settings, list[dict[str, Any]]]] = []
for _bits in (2, 3, 4, 8, 16, 32):
    STEPS.append((E.Settings("normal", _bits),
                  [{"type": "setRange", "selector": f"{ROOT} input[data-role=bits]",
                    "value": E.BITS.index(_bits)}]))
STEPS += [
    (E.Settings("minilm", 32), [{"type": "select", "selector": f"{ROOT} select[data-role=source]",
                                 "value": "minilm"}]),
    (E.Settings("minilm", 8), [{"type": "setRange", "selector": f"{ROOT} input[data-role=bits]",
                                "value": E.BITS.index(8)}]),
    (E.Settings("minilm", 8, "group"), [{"type": "select", "selector": f"{ROOT} select[data-role=granularity]",
                                         "value": "group"}]),
    (E.Settings("minilm", 8, "group", False), [{"type": "select", "selector": f"{ROOT} select[data-role=symmetric]",
                                                "value": "a"}]),
    (E.Settings("minilm", 8, "group", False, "float"), [{"type": "select", "selector": f"{ROOT} select[data-role=family]",
                                                         "value": "float"}]),
    (E.Settings("minilm", 4, "group", False, "nf4"), [
        {"type": "select", "selector": f"{ROOT} select[data-role=family]", "value": "nf4"},
        {"type": "setRange", "selector": f"{ROOT} input[data-role=bits]", "value": E.BITS.index(4)}]),
    (E.Settings("minilm", 5, "group", False, "nf4"), [{"type": "setRange", "selector": f"{ROOT} input[data-role=bits]",
                                                       "value": E.BITS.index(5)}]),
]


@pytest.fixture(scope="module")
def explorer_report(browse: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    actions: list[dict[str, Any]] = [{"type": "waitFor", "selector": f"{ROOT} svg[data-role=hist] path"},
                                     {"type": "eval", "expression": READ_BACK}]
    for _, moves in STEPS:
        actions += moves + [{"type": "eval", "expression": READ_BACK}]
    report = browse([{"path": PAGE, "actions": actions}])
    (page,) = report["pages"]
    return {"report": report, "page": page,
            "reads": [a for a in page["actions"] if a["action"]["type"] == "eval"]}


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
    data = E.explore(settings.source, settings.bits, settings.granularity, settings.symmetric,
                     settings.family)
    expected = dict(data.figures, regime=data.regime)
    assert {k: shown["figs"][k] for k in expected} == expected
    if data.available:
        # the numbers behind the strings, straight from quantlab
        assert float(shown["figs"]["levels"].replace(",", "")) == 2 ** data.bits
        assert float(shown["figs"]["compression"].rstrip("×")) == pytest.approx(32 / data.bits, abs=0.005)
        assert float(shown["figs"]["error"].rstrip(" %")) == pytest.approx(data.avg_error_pct, rel=5e-3, abs=1e-12)
        assert shown["snapped"] == 2 * 64  # blue and orange dots
        assert shown["gridLines"] == (0 if data.grid is None else len(data.grid))
        assert shown["hist"]
    else:
        assert shown["hist"] is None and shown["snapped"] == 64


def test_histogram_changes_with_the_slider(explorer_report):
    reads = [r["value"] for r in explorer_report["reads"][1:7]]  # 2, 3, 4, 8, 16, 32 bits
    paths = [r["hist"] for r in reads]
    assert all(paths) and len(set(paths)) == len(paths)
