"""The four kernel-free figures of quantlab.book.figures, driven in headless Chromium.

Each figure's fragment is written into a standalone page (``_page.standalone_page``, in the
theme's light and dark modes) in a temporary folder served on 127.0.0.1, and opened with
tests/browser/check_pages.mjs as the book's own browser tests do. For each figure: every
control changes the display, the values it shows equal quantlab's (for the small float
formats over every code, read off the page itself; for fp16 and bf16 over every code and
for fp32 over a dense sample, through the page's routine; for the memory arithmetic over
sampled settings), no request leaves the machine, no page or console error, no horizontal
overflow 390 px wide, and every text keeps its contrast in both themes.

Where Chromium (or node) is missing these tests fail with the command that installs it, as
the book's other browser tests do. The standalone pages need no built book; the checks inside a
page of the book use the ``book_html`` fixture (built once per run).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import book_browser
import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab import memory as mem
from quantlab.book.figures import _page, bits, clip, fit, policy

FIGURES = ("bits", "fit", "clip", "policy")
ROOTS = {"bits": "ql-bits", "fit": "ql-fit", "clip": "ql-clip", "policy": "ql-policy"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    try:
        book_browser.check_browser_tools()
    except book_browser.BrowserUnavailable as exc:
        pytest.fail(f"the figures' browser tests need Chromium: {exc}", pytrace=False)
    folder: Path = tmp_path_factory.mktemp("figures")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fragments = {
            "bits": bits.static_html(),
            "fit": fit.static_html(),
            "clip": clip.static_html(),
            "policy": policy.static_html(),
        }
    finally:
        torch.set_num_threads(threads)
    for name, fragment in fragments.items():
        for theme in _page.THEMES:
            (folder / f"{name}-{theme}.html").write_text(_page.standalone_page([fragment], name, theme), "utf-8")
    sizes = {name: len(f.encode()) for name, f in fragments.items()}
    book_browser.SUMMARY["figures"] = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sizes.items())
    with book_browser.serve(folder) as url:
        yield {"url": url, "sizes": sizes, "fragments": fragments}


def _run(site: dict[str, Any], path: str, actions: list[dict[str, Any]]) -> dict[str, Any]:
    report = book_browser.run_pages(site["url"], [{"path": path, "actions": actions}])
    (page,) = report["pages"]
    assert report["externalRequestCount"] == 0, report["externalRequests"]
    assert book_browser.page_problems(page) == [], book_browser.page_problems(page)
    failed = [a for a in page["actions"] if not a["ok"]]
    assert not failed, failed
    return page


def _evals(page: dict[str, Any]) -> list[Any]:
    return [a["value"] for a in page["actions"] if a["action"]["type"] == "eval"]


def _num(text: Any) -> float:
    """A value written by the page's ``raw`` (JavaScript's String of a number)."""
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf, "-0": -0.0}
    return special[text] if text in special else float(text)


def _same(a: float, b: float) -> bool:
    """Equal as numbers, NaN equal to NaN and -0 told apart from 0."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1, a) == math.copysign(1, b)


# --------------------------------------------------------------------------- every figure


LAYOUT = r"""(async () => {
  const f = document.createElement('iframe');
  f.style.cssText = 'width:390px;height:900px;border:0';
  const loaded = new Promise((ok) => f.addEventListener('load', ok, {once: true}));
  f.src = location.href.split('#')[0];
  document.body.appendChild(f);
  await loaded;
  await new Promise((ok) => setTimeout(ok, 400));
  const doc = f.contentDocument, figs = [...doc.querySelectorAll('.qlf')], width = doc.documentElement.clientWidth;
  const wide = figs.flatMap((fig) => [...fig.querySelectorAll('*')]).filter((e) => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.right > width + 0.5 && !e.closest('.qlf-sr');
  }).map((e) => e.tagName + ' ' + (e.getAttribute('class') || '') + ' "' + e.textContent.slice(0, 40) + '" ' +
           Math.round(e.getBoundingClientRect().right));
  let minPx = Infinity;
  figs.flatMap((fig) => [...fig.querySelectorAll('svg')]).forEach((svg) => {
    const vb = svg.viewBox.baseVal, scale = vb && vb.width ? svg.getBoundingClientRect().width / vb.width : 1;
    svg.querySelectorAll('text').forEach((t) => {
      minPx = Math.min(minPx, parseFloat(getComputedStyle(t).fontSize) * scale);
    });
  });
  return {width, scrollWidth: doc.documentElement.scrollWidth, figures: figs.length,
          figureRight: Math.max(...figs.map((fig) => fig.getBoundingClientRect().right)), wide, minPx};
})()"""

CONTRAST = r"""(() => [...document.querySelectorAll('.qlf')].map((fig) => {
  function rgba(c) {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function lum(c) {
    const l = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
  }
  function background(e) {
    for (; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0.5) return c;
    }
    return rgba(getComputedStyle(document.body).backgroundColor);
  }
  const low = [];
  let min = Infinity, n = 0;
  fig.querySelectorAll('*').forEach((e) => {
    const own = [...e.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
    if (!own || e.closest('style,script,option,.qlf-sr,button:disabled') || !e.getClientRects().length) return;
    const svg = e instanceof SVGElement, cs = getComputedStyle(e);
    const fg = rgba(svg ? cs.fill : cs.color), bg = background(svg ? e.closest('svg').parentElement : e);
    if (!fg || !bg) return;
    const a = lum(fg), b = lum(bg), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    n++;
    min = Math.min(min, ratio);
    if (ratio < 4.5) low.push([e.tagName, e.textContent.slice(0, 40), ratio.toFixed(2)]);
  });
  const panel = lum(background(fig));
  return {id: fig.id, min, low, n, panel, frame: lum(background(fig.parentElement))};
}))()"""


@pytest.fixture(scope="module")
def layout(site: dict[str, Any]) -> dict[str, Any]:
    pages = [
        {
            "path": f"{name}-{theme}.html",
            "actions": [
                {"type": "waitFor", "selector": ".qlf"},
                {"type": "eval", "expression": CONTRAST},
                {"type": "eval", "expression": LAYOUT, "timeoutMs": 30000},
            ],
        }
        for name in FIGURES
        for theme in _page.THEMES
    ]
    report = book_browser.run_pages(site["url"], pages)
    return report


def test_no_request_leaves_the_machine_and_no_errors(layout):
    assert layout["externalRequestCount"] == 0, layout["externalRequests"]
    problems = {p["path"]: book_browser.page_problems(p) for p in layout["pages"]}
    assert {k: v for k, v in problems.items() if v} == {}
    failed = [(p["path"], a) for p in layout["pages"] for a in p["actions"] if not a["ok"]]
    assert not failed, failed


@pytest.mark.parametrize("name", FIGURES)
@pytest.mark.parametrize("theme", _page.THEMES)
def test_text_is_legible_in_both_themes(layout, name, theme):
    (page,) = [p for p in layout["pages"] if p["path"] == f"{name}-{theme}.html"]
    (contrast,) = page["actions"][1]["value"]
    assert contrast["n"] > 20  # the figure's texts were found
    assert contrast["low"] == [] and contrast["min"] >= 4.5, contrast
    # the figure's own panel and the page around it follow the theme
    if theme == "dark":
        assert contrast["panel"] < 0.05 and contrast["frame"] < 0.05
    else:
        assert contrast["panel"] > 0.9 and contrast["frame"] > 0.9


@pytest.mark.parametrize("name", FIGURES)
def test_fits_390_px(layout, name):
    (page,) = [p for p in layout["pages"] if p["path"] == f"{name}-light.html"]
    shown = page["actions"][2]["value"]
    assert 370 <= shown["width"] <= 390
    assert shown["scrollWidth"] <= shown["width"], shown  # no horizontal scrolling
    assert shown["figureRight"] <= shown["width"] and shown["wide"] == [], shown
    if name != "bits":  # the other figures draw text in SVG: it stays readable
        assert shown["minPx"] is not None and shown["minPx"] >= 11, shown["minPx"]


def test_page_weight(site):
    """What each figure adds to its page (a budget, not a target)."""
    assert site["sizes"]["bits"] < 40_000 and site["sizes"]["fit"] < 40_000
    assert site["sizes"]["clip"] < 80_000 and site["sizes"]["policy"] < 80_000


# ---- the four figures inside a page of the built book, with the theme's own styles

# a built page that shows none of the figures itself (the core pages embed them once each)
BOOK_PAGE = book_browser.BUILD_HTML / "chapters" / "06_takeaways.html"


@pytest.fixture(scope="module")
def in_book(site: dict[str, Any], book_html: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The four figures as cell outputs of a copy of a built page (its scripts and styles
    linked from _build/html), read in the theme's light and dark modes."""
    assert BOOK_PAGE.is_file(), f"the built book has no {BOOK_PAGE}"
    folder = tmp_path_factory.mktemp("book")
    for entry in book_browser.BUILD_HTML.iterdir():
        if entry.name != "chapters":
            (folder / entry.name).symlink_to(entry.resolve())
    (folder / "chapters").mkdir()
    page = BOOK_PAGE.read_text("utf-8")
    assert 'class="qlf' not in page, f"{BOOK_PAGE.name} already shows a figure: the copy would hold it twice"
    at = page.index(">", page.index('<section class="tex2jax_ignore mathjax_ignore"')) + 1
    cells = "".join(
        '<div class="cell docutils container"><div class="cell_output docutils container">'
        f'<div class="output text_html">{site["fragments"][name]}</div></div></div>'
        for name in FIGURES
    )
    (folder / "chapters" / "figures.html").write_text(page[:at] + cells + page[at:], "utf-8")
    dark = "document.documentElement.dataset.theme = 'dark'; document.documentElement.dataset.theme"
    with book_browser.serve(folder) as url:
        report = book_browser.run_pages(
            url,
            [
                {
                    "path": "chapters/figures.html",
                    "actions": [
                        {"type": "waitFor", "selector": ".qlf"},
                        {"type": "eval", "expression": "document.documentElement.dataset.theme = 'light'"},
                        {"type": "eval", "expression": CONTRAST},
                        {"type": "eval", "expression": dark},
                        {"type": "wait", "ms": 200},
                        {"type": "eval", "expression": CONTRAST},
                        {"type": "eval", "expression": LAYOUT, "timeoutMs": 30000},
                    ],
                }
            ],
        )
    (page_report,) = report["pages"]
    return {"report": report, "page": page_report, "reads": _evals(page_report)}


def test_in_the_book_no_error_and_no_request(in_book):
    assert in_book["report"]["externalRequestCount"] == 0, in_book["report"]["externalRequests"]
    assert book_browser.page_problems(in_book["page"]) == []
    assert all(a["ok"] for a in in_book["page"]["actions"]), in_book["page"]["actions"]


@pytest.mark.parametrize("theme", _page.THEMES)
def test_in_the_book_text_is_legible(in_book, theme):
    shown = in_book["reads"][1] if theme == "light" else in_book["reads"][3]
    assert [f["id"] for f in shown] == [ROOTS[n] for n in FIGURES]
    for f in shown:
        assert f["low"] == [] and f["min"] >= 4.5, (theme, f)
        # dark figures on the dark page: the theme's light frame of HTML outputs is lifted
        if theme == "dark":
            assert f["panel"] < 0.05 and f["frame"] < 0.05
        else:
            assert f["panel"] > 0.9


def test_in_the_book_figures_fit_390_px(in_book):
    shown = in_book["reads"][4]
    assert shown["figures"] == 4 and shown["figureRight"] <= shown["width"] and shown["wide"] == [], shown


FORMATTING = r"""(() => {
  const F = document.getElementById('ql-fit').qlfFormat, cases = __CASES__;
  return {fixed: cases.fixed.map((c) => F.fixed(c[0], c[1])), thousands: cases.ints.map((n) => F.thousands(n))};
})()"""


def test_number_formatting_is_pythons(site):
    values = [
        0.25,
        0.35,
        2.5,
        0.125,
        1.05,
        -0.25,
        9.95,
        0.05,
        1e-7,
        123456.789,
        1.5,
        2.675,
        -0.0,
        0.0,
        4.35,
        0.375,
        1.25,
        3.5,
        24.0,
        17.05,
        0.015625,
        1 / 3,
        2.0**-20,
        1e15 + 0.5,
    ]
    rng = np.random.default_rng(0)
    values += [float(v) for v in rng.uniform(-100, 100, 60)] + [k / 8 for k in range(-20, 21)]
    cases = {
        "fixed": [[v, d] for v in values for d in range(4)],
        "ints": [0, 7, 999, 1000, 65535, 4278190079, -1234567, 10**15],
    }
    page = _run(
        site, "fit-light.html", [{"type": "eval", "expression": FORMATTING.replace("__CASES__", json.dumps(cases))}]
    )
    got = _evals(page)[0]
    assert got["fixed"] == [f"{v:.{d}f}" for v, d in cases["fixed"]]
    assert got["thousands"] == [f"{n:,}" for n in cases["ints"]]


# --------------------------------------------------------------------------- bits of a number


SMALL = ("fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1")

# Every code of the small formats, set by clicking the bit buttons, read off the page.
BITS_UI_DOMAIN = r"""(() => {
  const root = document.getElementById('ql-bits'), sel = root.querySelector('select[data-role=format]');
  const out = {};
  for (const name of __NAMES__) {
    sel.value = name; sel.dispatchEvent(new Event('change', {bubbles: true}));
    const buttons = [...root.querySelectorAll('button.qlf-bit')], rows = [];
    for (let c = 0; c < Math.pow(2, buttons.length); c++) {
      buttons.forEach((b) => {
        const want = Math.floor(c / Math.pow(2, Number(b.dataset.bit))) % 2 === 1;
        if ((b.getAttribute('aria-pressed') === 'true') !== want) b.click();
      });
      const v = (k) => root.querySelector('[data-out=' + k + ']');
      rows.push([Number(root.dataset.code), v('value').dataset.value, v('kind').textContent,
                 v('down').dataset.value, v('up').dataset.value, v('formula').textContent,
                 buttons.map((b) => b.textContent).join('')]);
    }
    out[name] = {bits: buttons.length, rows};
  }
  return out;
})()"""

# Every code of fp16 and bf16 and a sample of fp32 codes, through the page's routine.
BITS_ROUTINE_DOMAIN = r"""(() => {
  const r = document.getElementById('ql-bits').qlfRoutine, F = r.formats;
  const raw = (v) => Object.is(v, -0) ? '-0' : String(v);
  function rows(f, codes) {
    const value = [], kind = [], down = [], up = [];
    codes.forEach((c) => {
      const d = r.decode(f, c), dn = r.step(f, c, -1), u = r.step(f, c, 1);
      value.push(raw(d.value)); kind.push(d.kind);
      down.push(dn === null ? null : raw(r.decode(f, dn).value));
      up.push(u === null ? null : raw(r.decode(f, u).value));
    });
    return {value, kind, down, up};
  }
  const all = [...Array(65536).keys()];
  return {fp16: rows(F.fp16, all), bf16: rows(F.bf16, all), fp32: rows(F.fp32, __FP32_CODES__)};
})()"""

# The code each typed value is stored as, through the page's routine.
BITS_ENCODE = r"""(() => {
  const r = document.getElementById('ql-bits').qlfRoutine, F = r.formats, xs = __XS__, out = {};
  for (const name in xs) out[name] = xs[name].map((x) => r.encode(F[name], x));
  return out;
})()"""

BITS_READ = r"""(() => {
  const root = document.getElementById('ql-bits'), v = (k) => root.querySelector('[data-out=' + k + ']');
  const val = (k) => v(k) ? v(k).dataset.value : null;
  return {format: root.dataset.format, code: Number(root.dataset.code), value: val('value'), typed: val('typed'),
          stored: val('stored'), error: val('error'), relerr: val('relerr'), note: v('note') ? v('note').textContent : null,
          bits: root.querySelectorAll('button.qlf-bit').length,
          facts: [...root.querySelectorAll('table[data-role=facts] tr')].map((tr) => [tr.dataset.fact,
                  tr.cells[1].dataset.value || null, tr.cells[1].textContent])};
})()"""


def _kind(v: float, exponent_zero: bool) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf"
    if v == 0:
        return "zero"
    return "subnormal" if exponent_zero else "normal"


def _ordered(fmt) -> np.ndarray:
    """The non-NaN values of a format of at most 16 bits, ascending, infinities included."""
    finite = fmt.values().numpy()
    inf = [math.inf] if fmt.has_inf else []
    return np.array([-x for x in inf] + list(finite) + inf)


def _expected_domain(name: str, codes: np.ndarray) -> dict[str, list]:
    """Value, kind and neighbours of each code, with quantlab (decode, values)."""
    fmt = ql.get_format(name)
    values = fmt.decode(torch.from_numpy(codes.astype(np.int64))).double().numpy()
    sign = (codes >> (fmt.bits - 1)) & 1
    values = np.where((values == 0) & (sign == 1), -0.0, values)
    exponent_zero = ((codes >> fmt.mbits) & ((1 << fmt.ebits) - 1)) == 0
    if fmt.bits <= 16:
        order = _ordered(fmt)
        lo, hi = np.searchsorted(order, values, "left"), np.searchsorted(order, values, "right")
        down = [None if math.isnan(v) or i == 0 else float(order[i - 1]) for v, i in zip(values, lo)]
        up = [None if math.isnan(v) or i == len(order) else float(order[i]) for v, i in zip(values, hi)]
    else:
        v32 = values.astype(np.float32)
        with np.errstate(over="ignore"):  # the neighbours of the largest finite values are infinite
            dn, un = np.nextafter(v32, np.float32(-np.inf)), np.nextafter(v32, np.float32(np.inf))
        down = [None if math.isnan(v) or v == -math.inf else float(d) for v, d in zip(values, dn)]
        up = [None if math.isnan(v) or v == math.inf else float(u) for v, u in zip(values, un)]
    return {
        "value": [float(v) for v in values],
        "kind": [_kind(v, z) for v, z in zip(values, exponent_zero)],
        "down": down,
        "up": up,
    }


def _typed_samples(name: str, rng: np.random.Generator) -> list[float]:
    """Numbers to store: every midpoint between neighbours (ties) of the formats of at most
    8 bits and many of fp16/bf16, numbers a hair beside them, the overflow and underflow
    boundaries, and random numbers over the format's whole range."""
    fmt = ql.get_format(name)
    big = 2.0 ** (fmt.emax + 1)
    xs = [
        0.0,
        -0.0,
        math.inf,
        -math.inf,
        fmt.max_value,
        big,
        (fmt.max_value + big) / 2,
        2 * big,
        1e300,
        -1e300,
        fmt.min_subnormal / 2,
        fmt.min_subnormal * 0.75,
        fmt.min_normal,
        fmt.min_normal * (1 - 2**-30),
        5e-324,
    ]
    if fmt.nan != "none":
        xs.append(math.nan)
    if fmt.bits <= 16:
        finite = fmt.values().numpy()
        pairs = np.arange(len(finite) - 1)
        if len(pairs) > 4000:
            pairs = rng.choice(pairs, 4000, replace=False)
        mids = (finite[pairs] + finite[pairs + 1]) / 2
    else:
        v = rng.uniform(1, 2, 4000) * 2.0 ** rng.integers(-150, 128, 4000)
        v32 = v.astype(np.float32)
        mids = (v32.astype(np.float64) + np.nextafter(v32, np.float32(np.inf)).astype(np.float64)) / 2
        mids = mids[np.isfinite(mids)]
    xs += list(mids) + list(np.nextafter(mids, np.inf)) + list(np.nextafter(mids, -np.inf))
    lo = math.log2(fmt.min_subnormal) - 2
    hi = fmt.emax + 2
    r = rng.uniform(1, 2, 3000) * 2.0 ** rng.integers(int(lo), int(hi), 3000) * rng.choice([-1, 1], 3000)
    return [float(x) for x in xs] + [float(x) for x in r]


def _js_numbers(xs: list[float]) -> str:
    """A JavaScript array literal of the numbers, exactly (NaN, infinities and -0 included)."""

    def one(x: float) -> str:
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return "-0" if x == 0 and math.copysign(1, x) < 0 else repr(x)

    return "[" + ",".join(one(x) for x in xs) + "]"


@pytest.fixture(scope="module")
def bits_report(site: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    fp32_codes = [
        0,
        1,
        2,
        0x007FFFFF,
        0x00800000,
        0x00800001,
        0x3F7FFFFF,
        0x3F800000,
        0x3F800001,
        0x7F7FFFFF,
        0x7F800000,
        0x7F800001,
        0x7FC00000,
        0x7FFFFFFF,
        0x80000000,
        0x80000001,
        0x807FFFFF,
        0x80800000,
        0xBF800000,
        0xFF7FFFFF,
        0xFF800000,
        0xFF800001,
        0xFFFFFFFF,
    ]
    fp32_codes += [int(c) for c in rng.integers(0, 2**32, 30000, dtype=np.uint64)]
    typed = {name: _typed_samples(name, rng) for name in bits.FORMATS}
    encode_js = "{" + ",".join(f'"{k}":{_js_numbers(v)}' for k, v in typed.items()) + "}"
    ui_typed = [
        ("fp16", "0.1"),
        ("bf16", "0.1"),
        ("fp8_e4m3", "500"),
        ("fp8_e5m2", "1e5"),
        ("fp6_e3m2", "-0.3"),
        ("fp6_e2m3", "inf"),
        ("fp4_e2m1", "2.5"),
        ("fp32", "0.1"),
        ("fp32", "1e-45"),
        ("fp16", "-inf"),
        ("fp8_e5m2", "nan"),
        ("fp4_e2m1", "nan"),
        ("fp16", "twelve"),
    ]
    actions: list[dict[str, Any]] = [
        {"type": "waitFor", "selector": "#ql-bits button.qlf-bit"},
        {"type": "eval", "expression": BITS_READ},
    ]
    for name, text in ui_typed:
        actions += [
            {"type": "select", "selector": "#ql-bits select[data-role=format]", "value": name},
            {"type": "fill", "selector": "#ql-bits input[data-role=value]", "value": text},
            {"type": "press", "selector": "#ql-bits input[data-role=value]", "key": "Enter"},
            {"type": "eval", "expression": BITS_READ},
        ]
    # the other controls: a bit from the keyboard, next down / up, the special values
    actions += [
        {"type": "select", "selector": "#ql-bits select[data-role=format]", "value": "fp16"},
        {"type": "fill", "selector": "#ql-bits input[data-role=value]", "value": "1"},
        {"type": "click", "selector": "#ql-bits button[data-role=store]"},
        {"type": "eval", "expression": BITS_READ},
        {"type": "press", "selector": "#ql-bits button.qlf-bit[data-bit='15']", "key": "Space"},
        {"type": "eval", "expression": BITS_READ},
        {"type": "press", "selector": "#ql-bits button.qlf-bit[data-bit='0']", "key": "Enter"},
        {"type": "eval", "expression": BITS_READ},
        {"type": "click", "selector": "#ql-bits button[data-role=up]"},
        {"type": "eval", "expression": BITS_READ},
        {"type": "click", "selector": "#ql-bits button[data-role=down]"},
        {"type": "click", "selector": "#ql-bits button[data-role=down]"},
        {"type": "eval", "expression": BITS_READ},
    ]
    for special in ("max", "min_normal", "min_subnormal", "inf", "nan", "zero", "one"):
        actions += [
            {"type": "click", "selector": f"#ql-bits button[data-special={special}]"},
            {"type": "eval", "expression": BITS_READ},
        ]
    actions += [
        {
            "type": "eval",
            "expression": BITS_UI_DOMAIN.replace("__NAMES__", json.dumps(list(SMALL))),
            "timeoutMs": 120000,
        },
        {
            "type": "eval",
            "expression": BITS_ROUTINE_DOMAIN.replace("__FP32_CODES__", json.dumps(fp32_codes)),
            "timeoutMs": 120000,
        },
        {"type": "eval", "expression": BITS_ENCODE.replace("__XS__", encode_js), "timeoutMs": 120000},
    ]
    page = _run(site, "bits-dark.html", actions)
    reads = _evals(page)
    n_ui = 1 + len(ui_typed)
    return {
        "initial": reads[0],
        "typed": list(zip(ui_typed, reads[1:n_ui])),
        "controls": reads[n_ui:-3],
        "ui_domain": reads[-3],
        "routine": reads[-2],
        "encode": reads[-1],
        "typed_xs": typed,
        "fp32_codes": fp32_codes,
    }


def test_bits_initial_view_is_quantlabs(bits_report):
    first = bits_report["initial"]
    s = bits.store("fp16", 0.1)
    assert (first["format"], first["code"]) == ("fp16", s.view.code)
    assert _num(first["stored"]) == s.view.value and _num(first["error"]) == s.error
    assert first["bits"] == 16


@pytest.mark.parametrize("name", SMALL)
def test_bits_every_code_of_the_small_formats_as_shown(bits_report, name):
    shown = bits_report["ui_domain"][name]
    fmt = ql.get_format(name)
    assert shown["bits"] == fmt.bits and len(shown["rows"]) == 2**fmt.bits
    want = _expected_domain(name, np.arange(2**fmt.bits))
    for c, (code, value, kind, down, up, formula, pattern) in enumerate(shown["rows"]):
        assert code == c and pattern == format(c, f"0{fmt.bits}b")
        assert _same(_num(value), want["value"][c]), (name, c, value)
        assert kind == want["kind"][c], (name, c)
        assert (None if down == "none" else _num(down)) == want["down"][c], (name, c)
        assert (None if up == "none" else _num(up)) == want["up"][c], (name, c)
        assert formula  # the formula line is written for every code
        view = bits.describe(name, c)  # the module's own description agrees
        assert view.kind == kind and (view.down, view.up) == (want["down"][c], want["up"][c])


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp32"])
def test_bits_routine_over_fp16_bf16_and_fp32(bits_report, name):
    got = bits_report["routine"][name]
    codes = np.arange(65536) if name != "fp32" else np.array(bits_report["fp32_codes"], dtype=np.uint64)
    want = _expected_domain(name, codes)
    bad = [
        int(c)
        for i, c in enumerate(codes)
        if not _same(_num(got["value"][i]), want["value"][i])
        or got["kind"][i] != want["kind"][i]
        or (None if got["down"][i] is None else _num(got["down"][i])) != want["down"][i]
        or (None if got["up"][i] is None else _num(got["up"][i])) != want["up"][i]
    ]
    assert bad == [], (name, len(bad), [hex(c) for c in bad[:10]])
    assert len(codes) >= 30000 and sum(k == "subnormal" for k in got["kind"]) > 10


@pytest.mark.parametrize("name", list(bits.FORMATS))
def test_bits_rounding_equals_quantlabs(bits_report, name):
    xs = bits_report["typed_xs"][name]
    got = bits_report["encode"][name]
    fmt = ql.get_format(name)
    codes = fmt.encode(torch.tensor(xs, dtype=torch.float64)).to(torch.int64).numpy() & ((1 << fmt.bits) - 1)
    bad = [(x, g, int(w)) for x, g, w in zip(xs, got, codes) if g != w]
    assert bad == [], (name, len(bad), bad[:5])
    assert len(xs) > 3000


def test_bits_typed_values_as_shown(bits_report):
    for (name, text), shown in bits_report["typed"]:
        assert shown["format"] == name and 0 <= shown["code"] < 2 ** ql.get_format(name).bits
        assert shown["bits"] == ql.get_format(name).bits
        if text == "twelve":
            assert shown["typed"] is None and "not a number" in shown["note"]
            continue
        if text == "nan" and ql.get_format(name).nan == "none":
            assert shown["typed"] is None and "has no NaN" in shown["note"]
            continue
        s = bits.store(name, bits.parse_value(text))
        assert shown["code"] == s.view.code, (name, text)
        assert _same(_num(shown["typed"]), s.typed) and _same(_num(shown["stored"]), s.view.value)
        assert _same(_num(shown["error"]), s.error) and _same(_num(shown["relerr"]), s.relative), (name, text)


def test_bits_controls_change_the_display(bits_report):
    c = bits_report["controls"]
    one, signed, odd, up, back = c[:5]
    assert (one["format"], _num(one["value"])) == ("fp16", 1.0)
    assert _num(signed["value"]) == -1.0 and signed["code"] == one["code"] + 0x8000  # Space flips the sign bit
    assert odd["code"] == signed["code"] + 1  # Enter flips the lowest mantissa bit
    assert _num(up["value"]) == bits.describe("fp16", odd["code"]).up
    assert _num(back["value"]) == bits.describe("fp16", odd["code"]).down
    fmt = ql.get_format("fp16")
    specials = dict(zip(("max", "min_normal", "min_subnormal", "inf", "nan", "zero", "one"), c[5:]))
    assert _num(specials["max"]["value"]) == fmt.max_value and _num(specials["min_normal"]["value"]) == fmt.min_normal
    assert _num(specials["min_subnormal"]["value"]) == fmt.min_subnormal
    assert _num(specials["inf"]["value"]) == math.inf and math.isnan(_num(specials["nan"]["value"]))
    assert _num(specials["zero"]["value"]) == 0 and _num(specials["one"]["value"]) == 1
    # the facts table follows the format
    facts = {f[0]: f for f in one["facts"]}
    assert _num(facts["Largest value"][1]) == 65504 and "2,046 patterns" in facts["NaN"][2]
    e4m3 = next(r for (n, _), r in bits_report["typed"] if n == "fp8_e4m3")
    facts8 = {f[0]: f for f in e4m3["facts"]}
    assert _num(facts8["Largest value"][1]) == 448 and facts8["Infinity"][2].startswith("no")
    assert e4m3["bits"] == 8 and _num(facts8["Finite values"][1]) == ql.get_format("fp8_e4m3").levels


# --------------------------------------------------------------------------- does it fit


FIT_READ = r"""(() => {
  const root = document.getElementById('ql-fit'), out = {state: root.dataset.state, parts: {}, text: {}};
  ['weights', 'kv_cache', 'overhead', 'needed', 'capacity'].forEach((k) => {
    const n = root.querySelector('[data-out=' + k + ']');
    out.parts[k] = n.dataset.bytes; out.text[k] = n.textContent;
  });
  const v = root.querySelector('[data-out=verdict]');
  out.verdict = v.textContent;
  out.fits = v.querySelector('[data-out=fits]') ? v.querySelector('[data-out=fits]').dataset.value : null;
  out.smallest = v.dataset.smallest;
  out.bar = [...root.querySelectorAll('svg[data-role=bar] rect[data-part]')].map((r) => [r.dataset.part, r.getAttribute('width')]);
  out.capacityX = (root.querySelector('svg[data-role=bar] line[data-part=capacity]') || {}).getAttribute?.('x1');
  return out;
})()"""

FIT_ROUTINE = r"""(() => {
  const r = document.getElementById('ql-fit').qlfRoutine;
  return __SETTINGS__.map((s) => r.compute(s));
})()"""


def _fit_steps() -> list[tuple[fit.Setting, list[dict[str, Any]]]]:
    sel = lambda role, value: {"type": "select", "selector": f"#ql-fit select[data-role={role}]", "value": value}  # noqa: E731
    steps = [
        (fit.Setting(gpu="RTX 3060"), [sel("gpu", "RTX 3060")]),
        (fit.Setting(weights="fp16", gpu="RTX 3060"), [sel("weights", "fp16")]),
        (fit.Setting("Llama-2-70B", weights="fp16", gpu="RTX 3060"), [sel("model", "Llama-2-70B")]),
        (fit.Setting("Llama-2-70B", weights="q4_k", gpu="RTX 3060"), [sel("weights", "q4_k")]),
        (fit.Setting("Llama-2-70B", weights="q4_k", gpu="RTX A6000"), [sel("gpu", "RTX A6000")]),
        (
            fit.Setting("Llama-2-70B", weights="q4_k", context=32768, gpu="RTX A6000"),
            [{"type": "setRange", "selector": "#ql-fit input[data-role=context]", "value": fit.CONTEXTS.index(32768)}],
        ),
        (
            fit.Setting("Llama-2-70B", weights="q4_k", context=32768, batch=8, gpu="RTX A6000"),
            [{"type": "fill", "selector": "#ql-fit input[data-role=batch]", "value": "8"}],
        ),
        (
            fit.Setting("Llama-2-70B", weights="q4_k", context=32768, batch=8, kv="int4_g32", gpu="RTX A6000"),
            [sel("kv", "int4_g32")],
        ),
        (
            fit.Setting(
                "Llama-2-70B",
                n_params=float("405") * 1e9,
                weights="q4_k",
                context=32768,
                batch=8,
                kv="int4_g32",
                gpu="RTX A6000",
            ),
            [{"type": "fill", "selector": "#ql-fit input[data-role=params]", "value": "405"}],
        ),
        (
            fit.Setting("Llama-3.2-3B", weights="tq1_0", context=32768, batch=8, kv="int4_g32", gpu="RTX A6000"),
            [sel("model", "Llama-3.2-3B"), sel("weights", "tq1_0")],
        ),
        (
            fit.Setting("Llama-3.2-3B", weights="nvfp4", context=32768, batch=8, kv="fp8", gpu="Jetson Orin Nano 8GB"),
            [sel("weights", "nvfp4"), sel("kv", "fp8"), sel("gpu", "Jetson Orin Nano 8GB")],
        ),
    ]
    return steps


@pytest.fixture(scope="module")
def fit_report(site: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(500):
        model = mem.MODELS[rng.integers(len(mem.MODELS))].name
        n = float(f"{rng.uniform(0.05, 500):.3f}") * 1e9 if rng.random() < 0.5 else None
        samples.append(
            fit.Setting(
                model,
                n_params=n,
                weights=list(fit.WEIGHT_FORMATS)[rng.integers(len(fit.WEIGHT_FORMATS))],
                context=int(fit.CONTEXTS[rng.integers(len(fit.CONTEXTS))]),
                batch=round(2 ** rng.uniform(0, 10)),
                kv=list(fit.KV_FORMATS)[rng.integers(len(fit.KV_FORMATS))],
                gpu=mem.GPUS[rng.integers(len(mem.GPUS))].name,
            )
        )
    js = json.dumps(
        [
            {
                "model": s.model,
                "n": s.n_params,
                "weights": s.weights,
                "context": s.context,
                "batch": s.batch,
                "kv": s.kv,
                "gpu": s.gpu,
            }
            for s in samples
        ]
    )
    actions: list[dict[str, Any]] = [
        {"type": "waitFor", "selector": "#ql-fit svg[data-role=bar] rect"},
        {"type": "eval", "expression": FIT_READ},
    ]
    for _, moves in _fit_steps():
        actions += moves + [{"type": "eval", "expression": FIT_READ}]
    actions += [
        {"type": "fill", "selector": "#ql-fit input[data-role=batch]", "value": "0"},
        {"type": "eval", "expression": FIT_READ},
        {"type": "fill", "selector": "#ql-fit input[data-role=batch]", "value": "8"},
        {"type": "eval", "expression": FIT_READ},
        {"type": "eval", "expression": FIT_ROUTINE.replace("__SETTINGS__", js)},
    ]
    page = _run(site, "fit-dark.html", actions)
    reads = _evals(page)
    return {"reads": reads, "samples": samples}


def _check_shown(shown: dict[str, Any], s: fit.Setting) -> None:
    b = fit.breakdown(s)
    for k in ("weights", "kv_cache", "needed", "capacity"):
        assert float(shown["parts"][k]) == getattr(b, k), (s, k)
    assert float(shown["parts"]["overhead"]) == b.overhead
    assert shown["text"] == b.gib, s
    assert shown["fits"] == ("true" if b.fits else "false") and shown["smallest"] == (b.smallest_gpu or "none")
    assert shown["state"] == ("fits" if b.fits else "too-big")
    assert [p for p, _ in shown["bar"]] == ["weights", "kv_cache", "overhead"]


def test_fit_initial_view(fit_report):
    _check_shown(fit_report["reads"][0], fit.Setting())


@pytest.mark.parametrize("step", range(len(_fit_steps())))
def test_fit_every_control_changes_the_display(fit_report, step):
    reads = fit_report["reads"]
    setting, _ = _fit_steps()[step]
    before, after = reads[step], reads[step + 1]
    _check_shown(after, setting)
    assert after["parts"] != before["parts"] or after["verdict"] != before["verdict"]


def test_fit_refuses_a_bad_batch_and_recovers(fit_report):
    n = len(_fit_steps())
    bad, good = fit_report["reads"][n + 1], fit_report["reads"][n + 2]
    assert bad["state"] == "invalid" and "Batch" in bad["verdict"]
    _check_shown(good, _fit_steps()[-1][0])


def test_fit_routine_equals_quantlab_over_sampled_settings(fit_report):
    got = fit_report["reads"][-1]
    assert len(got) == len(fit_report["samples"]) == 500
    for s, g in zip(fit_report["samples"], got):
        b = fit.breakdown(s)
        assert (g["weights"], g["kv_cache"], g["needed"], g["capacity"], g["overhead"]) == (
            b.weights,
            b.kv_cache,
            b.needed,
            b.capacity,
            b.overhead,
        ), s
        assert (g["fits"], g["smallest_gpu"], g["gib"], g["bits_per_weight"]) == (
            b.fits,
            b.smallest_gpu,
            b.gib,
            b.bits_per_weight,
        ), s
    assert 25 < sum(g["fits"] for g in got) < 475  # the sample holds both verdicts


# --------------------------------------------------------------------------- clip it


CLIP_READ = r"""(() => {
  const root = document.getElementById('ql-clip'), out = {source: root.dataset.source, bits: Number(root.dataset.bits),
    index: Number(root.dataset.index), values: {}, text: {}};
  ['threshold', 'scale', 'clipped', 'zeroed', 'rounding', 'clipping', 'total'].forEach((k) => {
    const n = root.querySelector('[data-out=' + k + ']');
    out.values[k] = Number(n.dataset.value); out.text[k] = n.textContent;
  });
  const line = root.querySelector('svg[data-role=curves] [data-role=alpha-line]');
  out.alphaX = line && line.getAttribute('x1');
  out.curves = ['rounding', 'clipping', 'total'].map((k) => (root.querySelector('[data-role=curve-' + k + ']') || {getAttribute: () => ''}).getAttribute('d').length);
  out.clippedBars = root.querySelector('[data-role=hist-clipped]').getAttribute('d');
  out.markers = root.querySelectorAll('svg[data-role=curves] [data-marker]').length;
  out.choices = [...root.querySelectorAll('table[data-role=choices] tbody tr')].map((tr) => [tr.dataset.marker,
    Number(tr.cells[1].dataset.value), Number(tr.cells[3].dataset.value)]);
  return out;
})()"""


def _clip_steps() -> list[tuple[tuple[str, int, str], list[dict[str, Any]]]]:
    rng_idx = {"weights": [0, 25, 79], "activations": [0, 30, 59]}
    steps: list[tuple[tuple[str, int, str], list[dict[str, Any]]]] = []
    for source in ("weights", "activations"):
        for b in clip.BITS:
            moves = [
                {"type": "select", "selector": "#ql-clip select[data-role=source]", "value": source},
                {"type": "click", "selector": f"#ql-clip input[data-role=bits][value='{b}']"},
            ]
            for i in rng_idx[source]:
                steps.append(
                    (
                        (source, b, str(i)),
                        moves + [{"type": "setRange", "selector": "#ql-clip input[data-role=alpha]", "value": i}],
                    )
                )
                moves = []
            for marker in ("mse", "absmax"):
                steps.append(
                    (
                        (source, b, marker),
                        [{"type": "click", "selector": f"#ql-clip button[data-role=jump][data-marker='{marker}']"}],
                    )
                )
    return steps


@pytest.fixture(scope="module")
def clip_report(site: dict[str, Any]) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = [
        {"type": "waitFor", "selector": "#ql-clip svg[data-role=curves] path"},
        {"type": "eval", "expression": CLIP_READ},
    ]
    for _, moves in _clip_steps():
        actions += moves + [{"type": "eval", "expression": CLIP_READ}]
    actions += [
        {"type": "press", "selector": "#ql-clip input[data-role=alpha]", "key": "ArrowLeft"},
        {"type": "eval", "expression": CLIP_READ},
    ]
    return _evals(_run(site, "clip-light.html", actions))


def test_clip_initial_view_is_the_mse_optimum(clip_report):
    first = clip_report[0]
    data = clip.static_data()
    assert (first["source"], first["bits"]) == ("weights", 4)
    assert first["index"] == data["sources"]["weights"]["bits"]["4"]["best"]


@pytest.mark.parametrize("step", range(len(_clip_steps())), ids=["-".join(map(str, k)) for k, _ in _clip_steps()])
def test_clip_displayed_errors_equal_quantlabs(clip_report, step):
    (source, b, where), _ = _clip_steps()[step]
    shown, before = clip_report[step + 1], clip_report[step]
    data = clip.static_data()["sources"][source]["bits"][str(b)]
    index = data["best"] if where == "mse" else len(clip.RATIOS[source]) - 1 if where == "absmax" else int(where)
    assert (shown["source"], shown["bits"], shown["index"]) == (source, b, index)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        p = clip.clip_point(clip.values(source), b, clip_ratio=float(clip.RATIOS[source][index]))
    finally:
        torch.set_num_threads(threads)
    for k in ("threshold", "clipped", "zeroed", "rounding", "clipping", "total"):
        assert shown["values"][k] == pytest.approx(getattr(p, k), rel=5e-6, abs=1e-12), k
    assert shown["values"]["scale"] == pytest.approx(p.scale, rel=1e-5)
    # the cards print three significant digits of those numbers
    for k in ("threshold", "rounding", "clipping", "total"):
        text = shown["text"][k].split(" (")[0].replace("−", "-").replace(" × 10", "e").replace("^", "")
        assert float(text) == pytest.approx(getattr(p, k), rel=5e-3), (k, shown["text"][k])
    assert all(shown["curves"]) and shown["markers"] == 4
    assert [c[0] for c in shown["choices"]] == ["mse", "p99.9", "p99.99", "absmax"]
    markers = data["markers"]
    assert [c[2] for c in shown["choices"]] == [markers[m]["total"] for m in ("mse", "p99.9", "p99.99", "absmax")]
    if shown["index"] != before["index"] or (shown["source"], shown["bits"]) != (before["source"], before["bits"]):
        assert shown["values"] != before["values"] and shown["alphaX"] != before["alphaX"]


def test_clip_slider_from_the_keyboard(clip_report):
    before, after = clip_report[-2], clip_report[-1]
    assert after["index"] == before["index"] - 1 and after["values"] != before["values"]


# --------------------------------------------------------------------------- watch the policy


POLICY_READ = r"""(() => {
  const root = document.getElementById('ql-policy'), v = (k) => root.querySelector('[data-out=' + k + ']');
  const cart = (p) => root.querySelector('svg[data-role=cart-' + p + '] [data-role=cart]');
  const push = (p) => root.querySelector('svg[data-role=cart-' + p + '] [data-role=push]');
  return {step: Number(root.dataset.step), policy: root.dataset.policy, playing: root.dataset.playing || '0',
          retF: v('ret-fp32').dataset.value, retQ: v('ret-q').dataset.value, first: v('first').dataset.value,
          agreement: Number(v('agreement').dataset.value),
          fp32: [Number(cart('fp32').dataset.x), Number(cart('fp32').dataset.theta), push('fp32') && push('fp32').dataset.action],
          q: [Number(cart('q').dataset.x), Number(cart('q').dataset.theta), push('q') && push('q').dataset.action],
          stateQ: v('state-q').textContent, differs: root.querySelector('[data-panel=q]').classList.contains('qlf-differs')};
})()"""

POLICY_ROUTINE = r"""(() => {
  const r = document.getElementById('ql-policy').qlfRoutine, out = {fp32: r.fp32};
  __KEYS__.forEach((k) => { out[k] = r.trajectory(k); });
  return out;
})()"""


@pytest.fixture(scope="module")
def policy_report(site: dict[str, Any]) -> dict[str, Any]:
    keys = [f"{f}-{g}" for f in policy.FORMATS for g in policy.GRANULARITIES]
    sel = lambda role, value: {"type": "select", "selector": f"#ql-policy select[data-role={role}]", "value": value}  # noqa: E731
    read = {"type": "eval", "expression": POLICY_READ}
    actions: list[dict[str, Any]] = [
        {"type": "waitFor", "selector": "#ql-policy svg[data-role=cart-q] [data-role=cart]"},
        read,
        {"type": "setRange", "selector": "#ql-policy input[data-role=step]", "value": 120},
        read,
        {"type": "click", "selector": "#ql-policy button[data-role=to-first]"},
        read,
        {"type": "click", "selector": "#ql-policy button[data-role=forward]"},
        read,
        {"type": "press", "selector": "#ql-policy button[data-role=back]", "key": "ArrowRight"},
        read,
        {"type": "setRange", "selector": "#ql-policy input[data-role=step]", "value": 400},
        read,
        sel("format", "int8"),
        read,
        sel("granularity", "channel"),
        read,
        {"type": "click", "selector": "#ql-policy button[data-role=restart]"},
        read,
        {"type": "click", "selector": "#ql-policy button[data-role=play]"},
        {"type": "wait", "ms": 600},
        read,
        {"type": "press", "selector": "#ql-policy button[data-role=forward]", "key": "k"},
        read,
        {"type": "wait", "ms": 300},
        read,
        sel("speed", "0.1"),
        {"type": "click", "selector": "#ql-policy button[data-role=restart]"},
        {"type": "click", "selector": "#ql-policy button[data-role=play]"},
        {"type": "wait", "ms": 1000},
        read,
        {"type": "click", "selector": "#ql-policy button[data-role=play]"},
        {"type": "eval", "expression": POLICY_ROUTINE.replace("__KEYS__", json.dumps(keys)), "timeoutMs": 30000},
    ]
    reads = _evals(_run(site, "policy-dark.html", actions))
    return {"reads": reads[:-1], "routine": reads[-1], "keys": keys}


def _episode_at(ep: policy.Episode, t: int) -> tuple[float, float, str]:
    return float(ep.states[t, 0]), float(ep.states[t, 2]), str(int(ep.actions[t]))


def _close(shown: list, want: tuple[float, float, str]) -> None:
    assert shown[0] == pytest.approx(want[0], abs=0.5 / policy.X_SCALE + 1e-9)
    assert shown[1] == pytest.approx(want[1], abs=0.5 / policy.THETA_SCALE + 1e-9)
    assert shown[2] == want[2]


def test_policy_routine_rebuilds_every_episode(policy_report):
    got = policy_report["routine"]
    for key in ["fp32"] + policy_report["keys"]:
        ep = policy.episode() if key == "fp32" else policy.episode(*key.split("-"))
        g = got[key]
        assert g["actions"] == "".join(map(str, ep.actions)) and g["ret"] == ep.ret, key
        np.testing.assert_allclose(g["x"], ep.states[:, 0], atol=0.5 / policy.X_SCALE + 1e-9)
        np.testing.assert_allclose(g["theta"], ep.states[:, 2], atol=0.5 / policy.THETA_SCALE + 1e-9)
        if key != "fp32":
            assert g["first"] == ep.first_difference and g["agreement"] == ep.agreement


def test_policy_display_follows_the_controls(policy_report):
    r = policy_report["reads"]
    ref, q2 = policy.episode(), policy.episode("int2", "tensor")
    first, at120, to_first, fwd, key_fwd, at400, int8, int8c, restart, playing, paused, still, slow = r
    assert (first["step"], first["policy"], first["playing"]) == (0, "int2-tensor", "0")
    assert (float(first["retF"]), float(first["retQ"])) == (ref.ret, q2.ret)
    assert first["first"] == str(q2.first_difference) and first["agreement"] == q2.agreement
    _close(first["fp32"], _episode_at(ref, 0))
    _close(first["q"], _episode_at(q2, 0))
    assert at120["step"] == 120
    _close(at120["fp32"], _episode_at(ref, 120))
    _close(at120["q"], _episode_at(q2, 120))
    assert to_first["step"] == q2.first_difference and to_first["differs"]
    assert fwd["step"] == key_fwd["step"] - 1 == q2.first_difference + 1  # a button, then the → key
    assert at400["step"] == 400 and "ran off the track" in at400["stateQ"]  # int2 ended at step 304
    assert float(int8["retQ"]) == policy.episode("int8", "tensor").ret and int8["policy"] == "int8-tensor"
    assert int8c["policy"] == "int8-channel" and int8c["agreement"] == policy.episode("int8", "channel").agreement
    assert restart["step"] == 0
    assert playing["playing"] == "1" and playing["step"] > 5  # about 30 steps in 0.6 s
    assert paused["playing"] == "0" and still["step"] == paused["step"]  # K paused it
    # at 1/10 speed (5 steps/s) one second plays a few steps, not the 50 of real time
    assert slow["playing"] == "1" and 1 <= slow["step"] <= 20
