"""The Quantization Explorer's data, its two front ends, and their agreement.

Every number the explorer shows is checked against quantlab called directly (with the
format and options the setting stands for, spelled out here independently of
``explorer.resolve``); the static page's embedded data must equal the kernel
explorer's data for every setting.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import quantlab as ql
from quantlab import explorer as E
from quantlab import gguf_blocks, memory, mx
from quantlab.book.explorer import markup, page, text


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for this module (the explorer's tensors are small); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# What each setting means, written out independently of the module under test.
FLOATS = {4: "fp4_e2m1", 6: "fp6_e2m3", 8: "fp8_e4m3", 16: "fp16", 32: "fp32"}
#: The block formats and their block sizes (weights per shared scale; q4_k: per sub-block).
BLOCKS = {"q4_0": 32, "q4_k": 32, "mxfp4": 32, "nvfp4": 16}
GGUF = ("q4_0", "q4_k")


def expected_call(s: E.Settings):
    """(format name, quantize kwargs) for a setting, or None where it has no format.

    Block formats have no options (kwargs None): their blocks are fixed.
    """
    if s.bits == 32:
        return "fp32", {}
    if s.family in BLOCKS:
        return (s.family, None) if s.bits == 4 else None
    if s.family == "int":
        name = f"int{s.bits}"
    elif s.family == "float":
        if s.bits not in FLOATS:
            return None
        name = FLOATS[s.bits]
        if s.bits == 16:
            return name, {}
    else:
        if s.bits != 4:
            return None
        name = "nf4"
    kw = {"granularity": s.granularity, "symmetric": s.symmetric if s.family == "int" else True}
    kw["scale_dtype"] = "fp32"  # the explorer's stated recipe: fp32 scales, which its static twin reproduces
    if s.granularity == "group":
        kw["group_size"] = 64
    return name, kw


ALL = list(E.all_settings())


def reference(x: torch.Tensor, name: str, kw):
    """quantlab called directly: (x_hat, bits per weight with scales, average error in %)."""
    if name in GGUF:
        raw = gguf_blocks.quantize_blocks(x, name)
        x_hat, bpw = gguf_blocks.dequantize_blocks(raw, name), 8 * raw.numel() / x.numel()
    else:
        q = ql.quantize(x, name, **(kw or {}))
        x_hat, bpw = q.dequantize(), q.bits_per_weight
    return x_hat, bpw, 100 * ql.metrics.mean_relative_error(x, x_hat)


def parse_number(text: str) -> float:
    return float(text.replace(",", "").replace("×", "").replace("%", "").strip())


@pytest.fixture(scope="module")
def html_page() -> str:
    return E.static_html()


@pytest.fixture(scope="module")
def page_data(html_page: str) -> dict:
    m = re.search(r'<script type="application/json" data-role="data">(.*?)</script>', html_page, re.S)
    assert m is not None
    return json.loads(m.group(1).replace("<\\/", "</"))


def shown(page_data: dict, s: E.Settings) -> dict:
    """The entry the page shows for a setting, decoded as its script decodes it."""
    return page.decode(page_data, E.settings_index(s))


# --------------------------------------------------------------------------- known answers


def test_known_answers_8_bits():
    d = E.explore("normal", 8)
    assert (d.fmt, d.levels) == ("int8", 256)
    assert d.compression == 32 / (8 + 32 / d.n)  # one fp32 scale for the tensor
    assert d.figures["levels"] == "256"
    assert d.figures["compression"] == "4×"
    assert "256 codes (a symmetric grid uses 255)" in d.regime
    assert "256 codes;" in E.explore("normal", 8, symmetric=False).regime  # all of them


def test_compression_counts_the_scales():
    """The card is 32 / bits per weight with every scale: 7.11x for groups of 64, not 8x."""
    assert E.explore("normal", 4, "group").figures["compression"] == "7.11×"  # 32 / 4.5
    assert E.explore("minilm", 4, "group").figures["compression"] == "7.11×"
    assert E.explore("normal", 4, family="mxfp4").figures["compression"] == "7.53×"  # 32 / 4.25
    for fam in ("q4_0", "q4_k", "nvfp4"):
        assert E.explore("normal", 4, family=fam).figures["compression"] == "7.11×", fam  # 32 / 4.5
    assert E.explore("normal", 8, "channel").figures["compression"] == "3.94×"  # 32 / (8 + 32/256)
    assert E.explore("normal", 4, "group", False).figures["compression"] == "7.01×"  # 32 / (4.5 + 4/64)


def test_known_answers_32_bits_is_fp32_itself():
    for fam in E.FAMILIES:
        d = E.explore("minilm", 32, "group", False, fam)
        assert d.fmt == "fp32"
        assert d.levels == 4294967296
        assert d.figures["levels"] == "4,294,967,296"
        assert d.avg_error_pct == 0.0 and d.figures["error"] == "0 %"
        assert d.figures["compression"] == "1×" and d.compression == 1.0
        np.testing.assert_array_equal(d.snapped, d.strip)
        assert "no error" in d.regime


def test_float_regime_counts_distinct_values():
    assert "253 distinct values (of 256 codes)" in E.explore("normal", 8, family="float").regime
    assert "15 distinct values (of 16 codes)" in E.explore("normal", 4, family="float").regime
    assert "NF4" in E.explore("normal", 4, family="nf4").regime


def test_known_answers_small_widths():
    # one fp32 scale for 16,384 weights: 32 / (2 + 32/16384) and 32 / (3 + 32/16384)
    assert E.explore("normal", 2).figures["compression"] == "15.98×"
    assert E.explore("normal", 3).figures["compression"] == "10.66×"
    assert E.explore("normal", 2).levels == 4
    assert "extreme" in E.explore("normal", 2).regime
    assert "visible steps" in E.explore("normal", 4).regime
    # symmetric int2 uses the codes -1, 0, 1: every snapped value is 0 or +-scale
    d = E.explore("normal", 2)
    assert set(np.unique(np.abs(d.snapped))) <= {0.0, float(d.step)}


def test_normal_strip_spans_about_a_third():
    d = E.explore("normal", 8)
    assert -0.36 < d.strip.min() < -0.30 and 0.30 < d.strip.max() < 0.36
    assert d.strip.shape == (64,)
    w = E.weights("normal")
    assert w.shape == E.NORMAL_SHAPE
    assert abs(float(w.std()) - E.NORMAL_STD) < 0.005


def test_minilm_source_holds_the_outlier():
    w = E.weights("minilm")
    assert w.shape == (64, 1536)
    assert float(w.abs().max()) == pytest.approx(7.9148, abs=1e-3)
    full = ql.models.minilm.load_weight(E.MINILM_WEIGHT)
    torch.testing.assert_close(w, full[96:160])
    d = E.explore("minilm", 8)
    assert d.beyond == int((w.abs() > E.WINDOW).sum()) > 0


def test_outliers_make_per_tensor_int8_coarse_and_groups_fix_it():
    per_tensor = E.explore("minilm", 8, "tensor")
    groups = E.explore("minilm", 8, "group")
    assert per_tensor.step == pytest.approx(7.9148 / 127, rel=1e-4)
    assert per_tensor.avg_error_pct > 10 * groups.avg_error_pct
    assert "outlier" in per_tensor.regime and "outlier" not in groups.regime
    # the outlier the text names is the tensor's largest weight, computed, not typed in
    w = E.weights("minilm").flatten()
    largest = float(w[w.abs().argmax()])
    assert f"the outlier {text.sig(largest)} sets the one scale for all" in per_tensor.regime
    assert text.sig(largest) == "7.91"


def test_planted_outlier_sets_the_scale_like_minilms():
    x = E.weights("outlier")
    normal = E.weights("normal")
    assert float(x[E.sources.OUTLIER_AT]) == E.OUTLIER == float(x.abs().max())
    changed = (x != normal).nonzero().tolist()
    assert changed == [list(E.sources.OUTLIER_AT)]  # the normal weights, one weight changed
    assert E.strip_location("outlier") == E.strip_location("normal")  # the strip avoids it
    d = E.explore("outlier", 4)
    assert d.beyond == 1 and "1 weight lies beyond ±0.45" in d.caption
    assert d.step == pytest.approx(1.0 / 7, rel=1e-6)
    assert "the outlier 1.00 sets the one scale for all" in d.regime
    assert d.avg_error_pct > 2 * E.explore("normal", 4).avg_error_pct
    assert E.explore("outlier", 4, "group").avg_error_pct < 1.01 * E.explore("normal", 4, "group").avg_error_pct


def test_synthetic_sources_share_a_spread_and_differ_in_shape():
    stats = {}
    for source in ("normal", "laplace", "uniform", "bimodal"):
        x = E.weights(source).double()
        assert x.shape == E.NORMAL_SHAPE and x.dtype == torch.float64
        assert abs(float(x.std()) - E.NORMAL_STD) < 0.004, source
        assert abs(float(x.mean())) < 0.005, source
        z = (x - x.mean()) / x.std()
        stats[source] = float((z**4).mean())  # kurtosis: 3 normal, 6 Laplace, 1.8 uniform
        torch.testing.assert_close(E.weights(source).double(), x)  # seeded: the same every call
    assert stats["uniform"] < 1.9 and stats["bimodal"] < 2.5 < 2.9 < stats["normal"] < 3.2 < 5 < stats["laplace"]
    assert float(E.weights("uniform").abs().max()) <= np.sqrt(3) * E.NORMAL_STD
    h = E.histogram(E.weights("bimodal"))
    centre, bump = h[44:46].mean(), h[53:55].mean()  # around 0 and around +0.09
    assert centre < 0.9 * bump  # a dip between two bumps


# --------------------------------------------------------------------------- every setting vs quantlab


def memory_bits(name: str, kw, x: torch.Tensor) -> float:
    """Bits per weight with every scale, from quantlab.memory's arithmetic (not from a QTensor)."""
    if kw is None:  # a block format
        if name in GGUF:
            return gguf_blocks.BITS_PER_WEIGHT[name]
        return memory.bits_per_weight(name) + (32 / x.numel() if name == "nvfp4" else 0)  # + g
    if not kw:  # a plain cast
        return memory.bits_per_weight(name)
    group = {"tensor": x.numel(), "channel": x.shape[1], "group": 64}[kw["granularity"]]
    return memory.bits_per_weight(name, group, "fp32", None if kw["symmetric"] else name)


@pytest.mark.parametrize("source", list(E.SOURCES))
def test_every_setting_matches_quantlab(source):
    x = E.weights(source)
    row, group = E.strip_location(source)
    cols = slice(group * 64, (group + 1) * 64)
    memo: dict = {}
    for s in (s for s in ALL if s.source == source):
        d = E.explore(s.source, s.bits, s.granularity, s.symmetric, s.family)
        call = expected_call(s)
        if call is None:
            assert not d.available and d.fmt is None
            assert set(d.figures.values()) - {f"{s.bits}-bit"} == {"—"}
            assert d.snapped is None and d.hist is None
            continue
        name, kw = call
        key = (name, None if kw is None else tuple(sorted(kw.items())))
        if key not in memo:  # settings that mean the same call are checked against one result
            memo[key] = reference(x, name, kw)
        x_hat, bpw, err = memo[key]
        bits = 4 if kw is None else ql.get_format(name).bits
        assert d.fmt == name, s
        assert d.levels == 2**bits
        if kw is None:
            assert d.granularity == "block" and d.block is not None
            assert d.distinct_values == (16 if name in GGUF else ql.get_format(name).levels)
        else:
            fmt = ql.get_format(name)
            assert d.block is None
            if not isinstance(fmt, ql.FloatFormat):
                assert d.levels == fmt.levels
        assert d.compression == 32 / bpw
        assert d.avg_error_pct == pytest.approx(err, rel=1e-12, abs=1e-12), s
        assert d.bits_per_weight == bpw
        # the storage cost agrees with quantlab.memory's arithmetic (a per-tensor zero point
        # is packed into a whole byte: 4 bits more for the whole tensor)
        expected = memory_bits(name, kw, x)
        assert abs(bpw - expected) <= 8 / x.numel(), (s, bpw, expected)
        np.testing.assert_array_equal(d.snapped, x_hat[row, cols].double().numpy())
        counts, _ = np.histogram(x_hat.numpy().ravel(), bins=E.HIST_EDGES)
        np.testing.assert_array_equal(d.hist, counts)
        # the displayed figures are these numbers, rounded for display
        f = d.figures
        assert f["format"] == name
        assert parse_number(f["levels"]) == 2**bits
        assert f["compression"] == text.compression_text(32 / bpw)
        assert f["compression"] == text.compression_text(32 / expected)
        assert parse_number(f["compression"]) == pytest.approx(32 / expected, abs=0.005)
        assert f["bpw"] == f"{bpw:.2f}" == f"{expected:.2f}"
        shown = parse_number(f["error"])
        assert shown == pytest.approx(err, rel=5e-3, abs=1e-12), (s, f["error"], err)
        assert f["error"] == text.sig(err) + " %"


def test_grid_holds_every_snapped_value():
    for s in ALL:
        d = E.explore(s.source, s.bits, s.granularity, s.symmetric, s.family)
        if d.grid is None:
            continue
        assert d.grid_lines == d.grid.size <= E.MAX_GRID_LINES
        assert np.all(np.abs(d.grid) <= E.WINDOW)
        snapped = d.snapped
        if d.block is not None:  # a block format: the grid is the strip's first block's
            snapped = snapped[: d.block.block_size]
        inside = snapped[np.abs(snapped) <= E.WINDOW]
        gap = np.min(np.abs(inside[:, None] - d.grid[None, :]), axis=1)
        assert gap.max() <= 1e-6 * max(1.0, np.abs(d.grid).max()), s
        if d.step is not None:  # integer grids are evenly spaced by the scale
            # float32 grid values: each difference is exact to a few ulps of the largest value
            np.testing.assert_allclose(np.diff(d.grid), d.step, rtol=1e-5, atol=2.0**-21 * np.abs(d.grid).max())


def test_histogram_bins_are_hundredths():
    np.testing.assert_allclose(np.diff(E.HIST_EDGES), 0.01, atol=1e-12)
    np.testing.assert_array_equal(
        E.histogram(torch.tensor([-0.45, -0.4401, 0.0, 0.449, 0.45, 0.46])),
        np.bincount([0, 0, 45, 89, 89], minlength=90),
    )


def test_histograms_count_every_weight_inside_the_window():
    for source in E.SOURCES:
        d = E.explore(source, 8)
        x = E.weights(source)
        assert d.hist_original.sum() + d.beyond == d.n == x.numel()
        assert len(d.hist) == len(E.HIST_EDGES) - 1 == 90


def test_results_are_cached_and_read_only():
    a = E.explore("normal", 4)
    assert E.explore("normal", 4) is a
    with pytest.raises(ValueError):
        a.snapped[0] = 1.0


# --------------------------------------------------------------------------- display format


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, "0"),
        (0.99217, "0.992"),
        (0.0038567, "0.00386"),
        (12.345, "12.3"),
        (99.996, "100"),
        (99.94, "99.9"),
        (45.5, "45.5"),
        (1234.5, "1234"),
        (5e-7, "0.000000500"),
    ],
)
def test_sig_known_answers(value, expected):
    assert text.sig(value) == expected


def test_zeroed_share_never_shows_a_false_100():
    d = E.explore("minilm", 4)  # every weight but the outliers rounds to 0
    assert 99.9 < d.zeroed_pct < 100
    assert d.figures["zeroed"] == ">99.9 %"
    assert "more than 99.9% of the weights round to 0" in d.regime
    assert text.pct_text(100.0) == "100" and text.pct_text(55.31) == "55.3"


@hsettings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e4, allow_nan=False))
def test_sig_keeps_three_significant_digits(v):
    shown_text = text.sig(v)
    assert "e" not in shown_text
    assert float(shown_text) == pytest.approx(v, rel=5.01e-3)


def test_counts_and_nouns_agree():
    """No "1 levels" or "1 weights lie": captions say 1 level, 1 weight."""
    d = E.explore("minilm", 2)  # symmetric int2 with the outlier's scale: only 0 in the window
    assert d.grid_lines == 1 and d.grid_text == "grid: 1 level in this window (grey lines)"
    assert "1 levels" not in d.caption
    assert E.explore("normal", 4).grid_text == "grid: 15 levels in this window (grey lines)"
    assert E.explore("normal", 16).grid_text == "grid: 65,535 levels here, too fine to draw"
    assert E.beyond_text(1) == "1 weight lies beyond ±0.45 (outliers, not drawn)"
    assert E.beyond_text(2).startswith("2 weights lie beyond")
    for s in ALL:  # every caption of every setting
        d = E.explore(**s.controls())
        assert not re.search(r"\b1 (levels|weights)\b", d.caption + " " + d.grid_text), s


# --------------------------------------------------------------------------- static page


def test_static_data_equals_kernel_data_for_every_setting(page_data):
    assert page_data["bits"] == list(E.BITS)
    assert len(E.FAMILIES) == 7 and len(E.SOURCES) == 6 and len(E.GRANULARITIES) == 3
    assert len(page_data["index"]) == len(ALL) == 6 * 7 * 3 * 2 * 16
    assert [E.settings_index(s) for s in ALL] == list(range(len(ALL)))
    for s in ALL:
        entry = shown(page_data, s)
        d = E.explore(**s.controls())
        assert entry["figs"] == d.figures, s
        assert (entry["title"], entry["regime"], entry["gridText"], entry["notes"]) == (
            d.title,
            d.regime,
            d.grid_text,
            list(d.notes),
        )
        assert entry["ok"] == d.available and entry["fmt"] == d.fmt
        if d.available:
            np.testing.assert_allclose(entry["snap"], d.snapped, atol=0.5e-4 + 1e-12)
            assert entry["hist"] == d.hist.tolist()
            if d.grid is None:
                assert entry["grid"] is None
            else:
                np.testing.assert_allclose(entry["grid"], d.grid, atol=0.5e-4 + 1e-9)
        assert entry.get("block") == (None if d.block is None else d.block.describe())
    for source, src in page_data["sources"].items():
        d = E.explore(source, 8)
        np.testing.assert_allclose(np.array(src["strip"]) / page.UNIT, d.strip, atol=0.5e-4 + 1e-12)
        assert src["hist"] == d.hist_original.tolist() and src["n"] == d.n
        assert src["beyond"] == (E.beyond_text(d.beyond) if d.beyond else "")


def test_static_data_is_compact(page_data):
    """Every setting is there, deduplicated; texts are stored once."""
    blobs = [json.dumps(e, sort_keys=True) for e in page_data["entries"]]
    assert len(set(blobs)) == len(blobs) < len(page_data["index"]) / 4
    assert len(set(page_data["strings"])) == len(page_data["strings"])
    size = len(json.dumps(page_data, separators=(",", ":"), ensure_ascii=False).encode())
    assert size < 650_000, size


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0, 0, 0, 1, -2, 37]), max_size=40))
def test_runs_of_zeros_round_trip(values):
    packed = page.runs_of_zeros(values)
    assert page.expand_zeros(packed) == values
    assert all(not isinstance(v, str) or int(v[1:]) >= 3 for v in packed)
    assert page.runs_of_zeros([5, 0, 0, 0, 0, 2, 0, 0]) == [5, "z4", 2, 0, 0]


def test_kernel_explorer_shows_the_same_as_the_static_page(page_data):
    ex = E.Explorer(bits=4)
    for s in [E.Settings("normal", b) for b in (2, 3, 4, 8, 16, 32)] + [
        E.Settings("minilm", 4, "group", True, "nf4"),
        E.Settings("minilm", 8, "tensor", False, "int"),
        E.Settings("laplace", 8, "channel", True, "int"),
        E.Settings("normal", 8, "tensor", True, "float"),
        E.Settings("normal", 5, "tensor", True, "float"),
        E.Settings("uniform", 4, "tensor", True, "mxfp4"),
        E.Settings("minilm", 4, "group", False, "q4_k"),
        E.Settings("outlier", 4, "group", False, "q4_0"),
        E.Settings("bimodal", 6, "tensor", True, "nvfp4"),
    ]:
        d = ex.set(**s.controls())
        entry = shown(page_data, s)
        assert ex.figures == entry["figs"]
        if d.available:
            # the artists hold exactly the data's values
            np.testing.assert_array_equal(ex.pts_quant.get_offsets()[:, 0], d.snapped)
            np.testing.assert_allclose(
                ex.hist_quant.get_data().values, np.where(d.hist > 0, d.hist * 100.0 / d.n, ex._floor)
            )
        else:
            assert len(ex.pts_quant.get_offsets()) == 0 and not ex.hist_quant.get_visible()


def test_static_page_is_self_contained(html_page):
    assert len(html_page.encode()) < 1_000_000
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html_page)
    assert "<script src" not in html_page and "<link" not in html_page and "import(" not in html_page
    assert html_page.count("<script") == 2
    # the script only looks entries up and maps them to pixels
    js = markup.asset("explorer.js")
    for word in ("Math.round", "Math.floor", "Math.trunc", "zero_point", "quantize", "dequantize"):
        assert not re.search(rf"\b{re.escape(word)}\b", js), word
    assert not re.search(r"\bscale\s*[=*/]|[*/]\s*scale\b", js)


def test_script_and_styles_are_package_files_inlined_verbatim(html_page):
    from importlib import resources

    folder = resources.files("quantlab.book").joinpath("explorer_assets")
    css = folder.joinpath("explorer.css").read_text("utf-8")
    js = folder.joinpath("explorer.js").read_text("utf-8")
    assert css.startswith("/*") and js.startswith("/*")  # a comment for readers of the file...
    body_css, body_js = css.split("*/\n", 1)[1], js.split("*/\n", 1)[1]
    assert f"<style>\n{body_css}</style>" in html_page  # ...that the page leaves out
    assert f"<script>\n{body_js.replace('__ROOT__', 'ql-explorer')}</script>" in html_page
    assert "/* Styles of" not in html_page and "/* Script of" not in html_page


def test_one_palette_for_both_front_ends():
    css = markup.asset("explorer.css")
    assert E.COLORS == {
        "fg": "#1f2328",
        "muted": "#59636e",
        "border": "#d0d7de",
        "bg": "#f3f5f7",
        "orig": "#1f77b4",
        "quant": "#d95f02",
    }
    for name, value in E.COLORS.items():
        assert css.count(value) == 1, name  # written once, in the custom properties
    js = markup.asset("explorer.js")
    assert not re.search(r"#[0-9a-fA-F]{6}\b", js)  # the script only uses var(--qlx-...)
    for module in PACKAGE_FILES:
        source = module.read_text(encoding="utf-8")
        assert not re.search(r"#[0-9a-fA-F]{6}\b", source), module.name


PACKAGE_FILES = sorted(Path(E.__file__).parent.glob("*.py"))


def test_ui_strings_are_written_once():
    """The words of both front ends live in text.py; the script gets them with its data."""
    js = markup.asset("explorer.js")
    assert not re.search(r'"[A-Za-z][a-z]+ [a-z]+ [a-z]+', js)  # no sentence in the script
    for word in ("Block inspector", "original x", "weights lie", "2-bit: extreme", "levels in this"):
        assert word not in js, word
    for key, value in list(E.TEXT.items()) + list(E.FIGURE_LABELS.items()):
        head = value.split("{")[0].strip()
        if " " not in head:  # one word ("Preset", "Format") is also a name in the code
            continue
        literal = '"' + value.split("{")[0][:40]  # the start of a string literal
        holders = [f.name for f in PACKAGE_FILES if literal in f.read_text("utf-8")]
        assert holders == ["text.py"], (key, holders)


def test_histogram_takes_numpy_or_torch_and_returns_numpy():
    x = np.array([-0.45, 0.0, 0.449, 0.46], dtype=np.float32)
    counts = E.histogram(x)
    assert isinstance(counts, np.ndarray)
    np.testing.assert_array_equal(counts, E.histogram(torch.from_numpy(x)))
    with pytest.raises(TypeError, match="values must be a numpy array or a torch tensor, got list"):
        E.histogram([0.0])


def test_static_page_controls(html_page):
    m = re.search(r'<input type="range"[^>]*>', html_page)
    assert m and 'min="0"' in m.group(0) and f'max="{len(E.BITS) - 1}"' in m.group(0)
    assert 'data-bits="2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,32"' in m.group(0)
    assert "2-bit: extreme" in html_page and "32-bit: baseline" in html_page
    for role in ("preset", "source", "family", "granularity", "symmetric"):
        assert f'data-role="{role}"' in html_page
    for fig in E.FIGURE_LABELS:
        assert f'data-fig="{fig}"' in html_page
    for name in E.PRESETS:
        assert f'<option value="{name}">' in html_page


def test_static_html_initial_and_id():
    page_html = E.static_html(E.static_data(), root_id="qlx-2", initial=E.Settings("minilm", 8))
    assert 'id="qlx-2"' in page_html and 'getElementById("qlx-2")' in page_html
    assert 'value="6"' in page_html  # 8 bits is the seventh stop
    assert '<option value="minilm" selected>' in page_html


def sanitized(html_text: str) -> str:
    """What JupyterLab keeps of an untrusted output: no script, style or svg elements."""
    for tag in ("script", "style", "svg"):
        html_text = re.sub(rf"<{tag}\b.*?</{tag}>", "", html_text, flags=re.S)
    return html_text


def visible_text(html_text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_text))


@pytest.mark.parametrize(
    "initial",
    [E.Settings("normal", 4), E.Settings("outlier", 4, family="q4_0"), E.Settings("minilm", 7, family="float")],
)
def test_page_reads_without_script_and_styles(page_data, initial):
    """The initial setting is rendered in Python: filled cards, the regime, a still picture."""
    d = E.explore(**initial.controls())
    kept = sanitized(E.static_html(page_data, initial=initial))
    words = visible_text(kept)
    for k, label in E.FIGURE_LABELS.items():
        assert f"{label} {d.figures[k]}" in words, (k, words[:400])
    assert d.regime in html.unescape(words)
    still = kept[kept.index('data-role="still"') :]
    assert still.count('class="qlx-still-o"') == np.sum(np.abs(d.strip) <= E.WINDOW)
    assert still.count('class="qlx-still-q"') == (np.sum(np.abs(d.snapped) <= E.WINDOW) if d.available else 0)
    assert still.count('class="qlx-still-grid"') == (0 if d.grid is None else len(d.grid))
    assert still.count('class="qlx-still-ho"') == np.count_nonzero(d.hist_original)
    # the stylesheet's rules are inlined, colours resolved: the cards look like cards
    card = re.search(r'<div class="qlx-fig" style="([^"]*)"', kept).group(1)
    assert f"background:{E.COLORS['bg']}" in card and "var(" not in kept
    if d.block is not None:
        assert visible_text(d.block.to_html()).strip() in words
        assert 'data-role="block" style=' in kept  # shown, not hidden
    else:
        assert re.search(r'data-role="block" hidden', kept)


def test_inlined_styles_follow_the_stylesheet():
    css = (
        ".a{color:red;margin:0}.b .c{color:blue}.b[data-x=y] .c{margin:1px}"
        "@media (max-width:4px){.a{color:green}}.a:hover{color:pink}"
    )
    node = markup.el("div", {"class": "b", "data-x": "y"}, markup.el("p", {"class": "a c"}, "t"))
    assert (
        markup.render(node, inline=True, css=css)
        == '<div class="b" data-x="y"><p class="a c" style="color:blue;margin:1px">t</p></div>'
    )
    assert markup.render(node) == '<div class="b" data-x="y"><p class="a c">t</p></div>'


# --------------------------------------------------------------------------- kernel widget


def test_kernel_widget_recomputes_when_the_slider_moves():
    ex = E.Explorer(bits=4)
    box = ex.widget()
    w = ex._widgets
    assert w["bits"].options[0][0].startswith("2-bit") and "baseline" in w["bits"].options[-1][0]
    first = w["image"].value
    assert first[:3] == b"\xff\xd8\xff"  # a JPEG
    w["bits"].value = 8
    assert ex.data.bits == 8 and ex.figures["levels"] == "256"
    assert "256" in w["figs"].value and w["image"].value != first
    w["source"].value = "minilm"
    assert ex.data.settings.source == "minilm"
    assert "beyond" in w["figs"].value
    assert box.children[0] is w["bits"]
    # the cards are the page's markup, with the stylesheet inlined
    assert markup.render(markup.figure_cards(ex.figures), inline=True) in w["figs"].value


def test_kernel_widget_presets_move_the_controls():
    ex = E.Explorer(source="laplace", bits=6)
    ex.widget()
    w = ex._widgets
    assert w["preset"].value == ""
    w["preset"].value = "int8 per channel"
    assert ex.settings == E.Settings("laplace", 8, "channel", True, "int")
    assert (w["bits"].value, w["granularity"].value, w["family"].value) == (8, "channel", "int")
    assert E.PRESETS["int8 per channel"].about in w["figs"].value
    w["preset"].value = "Q4_0"
    assert ex.data.fmt == "q4_0" and w["family"].value == "q4_0" and w["bits"].value == 4
    assert w["block"].layout.display is None
    w["bits"].value = 5  # leaving the preset's setting clears the preset control
    assert w["preset"].value == "" and not ex.data.available
    with pytest.raises(ValueError, match="preset must be one of"):
        ex.preset("Q8_0")


def test_presets_are_the_downloadable_formats():
    assert list(E.PRESETS) == ["Q4_0", "Q4_K", "MXFP4", "NVFP4", "int8 per channel"]
    expected = {
        "Q4_0": ("q4_0", 4.5),
        "Q4_K": ("q4_k", 4.5),
        "MXFP4": ("mxfp4", 4.25),
        "NVFP4": ("nvfp4", 4.5 + 32 / 16384),
        "int8 per channel": ("int8", 8 + 32 / 256),
    }
    for name, preset in E.PRESETS.items():
        s = preset.apply(E.Settings("normal", 2, "group", False, "float"))
        assert E.preset_of(s) == name and preset.matches(s)
        d = E.explore(**s.controls())
        assert (d.fmt, d.bits_per_weight) == expected[name], name
        if d.block is not None:  # the about text states the block format's bits per weight
            assert f"({d.bits_per_weight:.3g} bits per weight)" in preset.about, name
    assert E.preset_of(E.Settings("normal", 8, "group")) is None


def test_saved_notebook_shows_a_still_picture_not_a_repr():
    ex = E.Explorer(bits=4)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    still = base64.b64decode(bundle["image/jpeg"])
    assert still[:3] == b"\xff\xd8\xff"
    from PIL import Image

    img = Image.open(io.BytesIO(still))
    w, h = Image.open(io.BytesIO(ex.image())).size
    assert img.size[0] == w and img.size[1] > h  # the figure plus a band with the note
    assert bundle["text/plain"] == E.TEXT["still_widget"].format(setting=ex.data.title)
    assert "run this cell" in bundle["text/plain"] and "VBox" not in bundle["text/plain"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"source": "gaussian"}, ValueError, "source"),
        ({"bits": 1}, ValueError, "bits"),
        ({"bits": 24}, ValueError, "24"),
        ({"bits": 8.0}, TypeError, "bits"),
        ({"bits": True}, TypeError, "bits"),
        ({"granularity": "row"}, ValueError, "granularity"),
        ({"symmetric": "yes"}, TypeError, "symmetric"),
        ({"family": "fp"}, ValueError, "family"),
    ],
)
def test_bad_settings_raise(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        E.explore(**kwargs)


def test_other_errors():
    with pytest.raises(ValueError, match="source"):
        E.weights("gaussian")
    with pytest.raises(ValueError, match="source"):
        E.strip_location("gaussian")
    with pytest.raises(TypeError, match="initial"):
        E.static_html(E.static_data(), initial="int4")
    with pytest.raises(TypeError, match="settings must be a Settings"):
        E.settings_index("normal|8|tensor|s|int")
    ex = E.Explorer()
    with pytest.raises(ValueError, match="colour"):
        ex.set(colour="red")
    with pytest.raises(ValueError, match="bits"):
        ex.set(bits=33)


@pytest.mark.parametrize("module", ["settings", "sources", "data", "blocks", "text", "markup", "page", "widget"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"quantlab.book.explorer.{module}"))
    assert result.failed == 0
    if module in ("settings", "data", "blocks", "text", "widget"):
        assert result.attempted >= 1


def test_package_modules_stay_small():
    sizes = {f.name: len(f.read_text("utf-8").splitlines()) for f in PACKAGE_FILES}
    assert set(sizes) >= {
        "__init__.py",
        "settings.py",
        "sources.py",
        "data.py",
        "blocks.py",
        "text.py",
        "markup.py",
        "page.py",
        "widget.py",
    }
    assert max(sizes.values()) <= 800, sizes


def test_resolve_explains_how_controls_are_read():
    r = E.resolve(E.Settings("normal", 8, "group", False, "float"))
    assert (r.fmt, r.granularity, r.symmetric) == ("fp8_e4m3", "group", True)
    assert any("symmetric" in n for n in r.notes)
    r = E.resolve(E.Settings("normal", 16, "group", True, "float"))
    assert (r.fmt, r.granularity) == ("fp16", None) and any("cast" in n for n in r.notes)
    r = E.resolve(E.Settings("minilm", 7, "tensor", True, "float"))
    assert r.fmt is None and "4, 6, 8, 16, 32" in r.notes[0]
    r = E.resolve(E.Settings("minilm", 32, "group", False, "nf4"))
    assert (r.fmt, r.granularity) == ("fp32", None)
    assert (
        E.explore("normal", 8, "group", False, "float").notes
        == E.resolve(E.Settings("normal", 8, "group", False, "float")).notes
    )


# --------------------------------------------------------------------------- block formats


def test_block_formats_exist_only_at_4_bits():
    for fam, k in BLOCKS.items():
        assert E.BLOCK_FORMATS[fam] == k and fam in E.FAMILIES
        for bits in E.BITS:
            d = E.explore("normal", bits, family=fam)
            if bits == 4:
                assert d.available and d.fmt == fam and d.block is not None
            elif bits == 32:
                assert d.fmt == "fp32" and d.block is None
            else:
                assert not d.available and d.fmt is None and d.block is None
                assert d.notes == (f"{fam.upper()} is a 4-bit format: no {bits}-bit {fam.upper()}",)
                assert d.regime.startswith("Not available")


def test_block_formats_ignore_granularity_and_symmetric():
    for fam in BLOCKS:
        r = E.resolve(E.Settings("normal", 4, "group", False, fam))
        assert (r.fmt, r.granularity, r.symmetric) == (fam, "block", True)
        assert "granularity" in r.notes[0] and "do not apply" in r.notes[0]
        for source in E.SOURCES:
            entries = {
                json.dumps(page.entry(E.explore(source, 4, gran, sym, fam)), sort_keys=True)
                for gran in E.GRANULARITIES
                for sym in (True, False)
            }
            assert len(entries) == 1, (source, fam)
        d = E.explore("normal", 4, family=fam)
        assert d.notes[:1] == r.notes and "grey lines" in d.notes[1]
        assert d.title.startswith(f"{fam}, ")


def test_block_bits_per_weight_count_the_scales():
    x = E.weights("minilm")
    assert E.explore("minilm", 4, family="mxfp4").bits_per_weight == 4 + 8 / 32 == 4.25
    assert E.explore("minilm", 4, family="nvfp4").bits_per_weight == 4 + 8 / 16 + 32 / x.numel()
    assert E.explore("minilm", 4, family="q4_k").bits_per_weight == 144 * 8 / 256 == 4.5
    assert E.explore("minilm", 4, family="q4_0").bits_per_weight == 18 * 8 / 32 == 4.5
    assert E.explore("minilm", 4, family="nvfp4").figures["bpw"] == "4.50"
    assert E.explore("normal", 4, family="mxfp4").figures["bpw"] == "4.25"


@pytest.mark.parametrize("family", list(BLOCKS))
@pytest.mark.parametrize("source", list(E.SOURCES))
def test_block_view_is_the_strips_first_block(source, family):
    v = E.block_view(source, family)
    d = E.explore(source, 4, family=family)
    assert d.block is v and E.block_view(source, family) is v  # cached, shared
    k = BLOCKS[family]
    row, group = E.strip_location(source)
    assert (v.row, v.start, v.block_size, v.family) == (row, group * 64, k, family)
    assert list(v.columns) == list(range(group * 64, group * 64 + k))
    assert f"row {row}, weights {group * 64}–{group * 64 + k - 1}" in v.where
    x = E.weights(source)
    np.testing.assert_array_equal(v.original, x[row, v.start : v.start + k].double().numpy())
    np.testing.assert_array_equal(v.original, d.strip[:k])
    # x_hat: the explorer's snapped values and quantlab's own decoding, exactly
    np.testing.assert_array_equal(v.x_hat, d.snapped[:k])
    x_hat, _, _ = reference(x, family, None)
    np.testing.assert_array_equal(v.x_hat, x_hat[row, v.start : v.start + k].double().numpy())
    # codes: 4 bits, shown as integers and as bit strings
    assert v.codes.shape == (k,) and v.codes.min() >= 0 and v.codes.max() <= 15
    assert list(v.code_bits) == [format(int(c), "04b") for c in v.codes]
    assert all(int(b, 2) == c for b, c in zip(v.code_bits, v.codes))
    # the grid is every value the block can take, and each weight sits on it
    assert set(v.x_hat.tolist()) <= set(v.values.tolist())
    np.testing.assert_array_equal(d.grid, v.values[np.abs(v.values) <= E.WINDOW])
    assert v.values.size == (16 if family in GGUF else 15)
    # the displayed table and the embedded data
    rows = v.rows()
    assert len(rows) == k and rows[0][0] == str(v.start)
    assert rows[0][1] == f"{round(float(v.original[0]), 4):.4f}"
    # one description, rendered as HTML (notebooks, widget) and as text (repr)
    desc = v.describe()
    assert desc["title"] == f"Block inspector: {E.FAMILIES[family]}" and desc["text"].endswith(f". {v.formula}")
    assert desc["text"].startswith(f"Row {row}, weights {group * 64}–{group * 64 + k - 1}")
    scales, table = desc["tables"]
    assert scales["rows"] == [list(r) for r in v.scale_rows()] and table["rows"] == [list(r) for r in rows]
    assert scales["head"] == list(v.SCALE_HEAD) and table["head"] == list(v.head)
    page_html = v.to_html()
    assert len(re.findall(r"<tr\b", page_html)) == 1 + len(v.scales) + 1 + k
    assert v._repr_html_() == page_html == markup.panel_html(desc)
    cells = re.findall(r"<td\b[^>]*>([^<]*)</td>", page_html)
    assert cells == [html.escape(c, quote=False) for r in scales["rows"] + table["rows"] for c in r]
    lines = repr(v).splitlines()
    assert len(lines) == 2 + 1 + len(v.scales) + 1 + k
    assert lines[:2] == [desc["title"], desc["text"]]
    assert lines[-1].split() == list(rows[-1])
    with pytest.raises(ValueError):
        v.x_hat[0] = 1.0
    with pytest.raises(KeyError, match="has no scale"):
        v.scale("zeta")


@pytest.mark.parametrize("source", list(E.SOURCES))
def test_mxfp4_block_shares_a_power_of_two(source):
    v = E.block_view(source, "mxfp4")
    X = v.scale("X")
    assert X.stored == "E8M0" and 0 <= X.code <= 254 and X.bits == format(X.code, "08b")
    assert X.value == 2.0 ** (X.code - 127) == float(mx.e8m0_decode(torch.tensor([X.code]))[0])
    assert math.frexp(X.value)[0] == 0.5  # a power of two
    assert X.text == f"2^{X.code - 127} = {np.float32(X.value)}"
    # the stored code is quantlab's, and follows MX's rule floor(log2(amax)) - emax(e2m1 = 2)
    q = ql.quantize(E.weights(source), "mxfp4")
    assert X.code == int(mx.scale_codes(q)[v.row, v.start // 32])
    assert X.code - 127 == math.floor(math.log2(np.abs(v.original).max())) - 2
    # the codes decode through e2m1 to the element values; x_hat = element * X
    e2m1 = ql.get_format("fp4_e2m1")
    np.testing.assert_array_equal(v.element, e2m1.decode(torch.tensor(v.codes, dtype=torch.uint8)).double().numpy())
    assert set(np.abs(v.element).tolist()) <= {0, 0.5, 1, 1.5, 2, 3, 4, 6}
    np.testing.assert_array_equal(v.x_hat, (v.element.astype(np.float32) * np.float32(X.value)).astype(np.float64))
    assert v.element_name == "e2m1" and v.head[4] == "e2m1 value"


@pytest.mark.parametrize("source", list(E.SOURCES))
def test_nvfp4_block_has_an_fp8_scale_and_a_tensor_scale(source):
    v = E.block_view(source, "nvfp4")
    sb, g = v.scale("s_b"), v.scale("g")
    assert [s.name for s in v.scales] == ["s_b", "g"]
    e4m3 = ql.get_format("fp8_e4m3")
    assert sb.stored == "fp8 e4m3" and float(e4m3.decode(torch.tensor([sb.code], dtype=torch.uint8))[0]) == sb.value
    assert sb.bits.replace(" ", "") == format(sb.code, "08b")
    x = E.weights(source)
    assert g.value == float(x.abs().max() / (448 * 6))  # in float32
    assert g.stored == "fp32" and np.uint32(g.code).view(np.float32) == np.float32(g.value)
    q = ql.quantize(x, "nvfp4")
    assert g.value == float(q.tensor_scale) and sb.value == float(q.scale[v.row, v.start // 16])
    # x_hat = (element * s_b) * g, in float32
    expected = (v.element.astype(np.float32) * np.float32(sb.value)) * np.float32(g.value)
    np.testing.assert_array_equal(v.x_hat, expected.astype(np.float64))


@pytest.mark.parametrize("source", list(E.SOURCES))
def test_q4_0_block_is_d_times_q_minus_8(source):
    v = E.block_view(source, "q4_0")
    (d,) = v.scales
    assert d.name == "d" and d.stored == "fp16" and np.uint16(d.code).view(np.float16) == d.value
    assert d.bits.replace(" ", "") == format(d.code, "016b")
    np.testing.assert_array_equal(v.element, v.codes - 8)
    expected = np.float32(d.value) * (v.codes - 8).astype(np.float32)
    np.testing.assert_array_equal(v.x_hat, expected.astype(np.float64))
    # llama.cpp's rule: d = (the weight of largest magnitude) / -8, so that weight gets q = 0
    big = v.original[np.argmax(np.abs(v.original))]
    assert d.value == float(np.float16(np.float32(big) / -8))
    assert v.codes[np.argmax(np.abs(v.original))] == 0
    raw = gguf_blocks.quantize_blocks(E.weights(source), "q4_0")
    full = gguf_blocks.dequantize_blocks(raw, "q4_0")
    np.testing.assert_array_equal(v.x_hat, full[v.row, v.start : v.start + 32].double().numpy())
    assert v.element_name == "q − 8" and v.head[4] == "q − 8"


@pytest.mark.parametrize("source", list(E.SOURCES))
def test_q4_k_block_is_step_times_q_minus_offset(source):
    v = E.block_view(source, "q4_k")
    s = {b.name: b for b in v.scales}
    assert list(s) == ["d", "dmin", "sc", "m", "d·sc", "dmin·m"]
    for name in ("d", "dmin"):  # fp16 numbers: their bit patterns read back to them
        assert s[name].stored == "fp16" and np.uint16(s[name].code).view(np.float16) == s[name].value
    for name in ("sc", "m"):  # 6-bit integers
        assert 0 <= s[name].code < 64 and s[name].value == s[name].code and len(s[name].bits) == 6
    step = np.float32(s["d"].value) * np.float32(s["sc"].value)
    offset = np.float32(s["dmin"].value) * np.float32(s["m"].value)
    assert s["d·sc"].value == step and s["dmin·m"].value == offset and s["d·sc"].code is None
    np.testing.assert_array_equal(v.element, v.codes)  # the element is the integer q
    np.testing.assert_array_equal(v.x_hat, (step * v.codes.astype(np.float32) - offset).astype(np.float64))
    # and what dequantize_blocks makes of the stored bytes
    x = E.weights(source)
    raw = gguf_blocks.quantize_blocks(x, "q4_k")
    full = gguf_blocks.dequantize_blocks(raw, "q4_k")
    np.testing.assert_array_equal(v.x_hat, full[v.row, v.start : v.start + 32].double().numpy())
    assert "super-block" in v.where and v.element_name == "q"


def test_block_view_rejects_bad_input():
    with pytest.raises(ValueError, match="family"):
        E.block_view("normal", "int")
    with pytest.raises(ValueError, match="family"):
        E.block_view("normal", 4)
    with pytest.raises(ValueError, match="source"):
        E.block_view("gaussian", "mxfp4")


def test_static_page_carries_the_block_inspector(html_page, page_data):
    assert re.search(r'<div class="qlx-block" data-role="block" hidden style="[^"]*"></div>', html_page)
    js = markup.asset("explorer.js")
    assert "drawPanel" in js and "desc.tables" in js
    for s in ALL:
        entry = shown(page_data, s)
        if s.family in BLOCKS and s.bits == 4:
            assert entry["block"] == E.block_view(s.source, s.family).describe()
            assert len(entry["block"]["tables"][1]["rows"]) == BLOCKS[s.family]
        else:
            assert "block" not in entry
    # the readable keys are unchanged: source|bits|granularity|s or a|family
    assert E.Settings("normal", 8, "tensor", True, "int").key == "normal|8|tensor|s|int"


def test_kernel_widget_shows_the_block_inspector_for_block_formats():
    ex = E.Explorer(bits=4)
    ex.widget()
    w = ex._widgets
    assert w["block"].layout.display == "none" and w["block"].value == ""
    w["family"].value = "mxfp4"
    assert ex.data.fmt == "mxfp4"
    assert w["block"].layout.display is None
    assert w["block"].value == E.block_view("normal", "mxfp4").to_html()
    assert len(re.findall(r"<tr\b", w["block"].value)) == 1 + 1 + 1 + 32  # scales (one), header, 32 weights
    assert ex._widgets["box"].children[-1] is w["block"]
    w["family"].value = "nf4"
    assert w["block"].layout.display == "none"


# --------------------------------------------------------------------------- one description, three renderings

BLOCK_VIEWS = [(source, family) for source in E.SOURCES for family in BLOCKS]


class _PanelReader(HTMLParser):
    """Reads a rendered panel back into a description: the ``strong`` text is the title, the
    other paragraph the sentence, each table its ``data-role``, ``data-align``, head and rows.
    Also records the inline ``text-align`` of every cell, by table."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.desc: dict = {"title": "", "text": "", "tables": []}
        self.cell_align: list[set[str]] = []
        self.tags: list[str] = []
        self._where: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._where.append(tag)
        if len(self._where) == 2:  # a child of the panel's box
            self.tags.append(tag)
        if tag == "table":
            self.desc["tables"].append({"role": a["data-role"], "align": a["data-align"], "head": [], "rows": []})
            self.cell_align.append(set())
        elif tag == "tr" and "tbody" in self._where:
            self.desc["tables"][-1]["rows"].append([])
        elif tag in ("th", "td"):
            self._cell = []
            found = re.findall(r"text-align:(\w+)", a.get("style") or "")
            self.cell_align[-1].add(found[-1] if found else "")

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            t = self.desc["tables"][-1]
            (t["head"] if tag == "th" else t["rows"][-1]).append("".join(self._cell))
            self._cell = None
        self._where.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif "strong" in self._where:
            self.desc["title"] += data
        elif self._where[-1:] == ["p"]:
            self.desc["text"] += data


def read_panel(html_text: str) -> _PanelReader:
    reader = _PanelReader()
    reader.feed(html_text)
    reader.close()
    return reader


@pytest.mark.parametrize("source,family", BLOCK_VIEWS)
def test_html_and_repr_render_the_one_description(source, family):
    """The notebook/widget HTML and the repr hold exactly the description's words and values."""
    v = E.block_view(source, family)
    desc = v.describe()
    assert markup.check_panel(desc) is desc
    assert {t["align"] for t in desc["tables"]} == {"left", "right"}
    # HTML: read back, the description itself; every cell aligned as its table says
    shown = read_panel(v.to_html())
    assert shown.desc == desc
    assert shown.tags == ["p", "p"] + ["table"] * len(desc["tables"])
    assert shown.cell_align == [{t["align"]} for t in desc["tables"]]
    # repr: the title, the sentence, then per table its head and rows, every cell in its
    # column (right-aligned cells end, left-aligned cells start, at one position per column)
    lines = repr(v).splitlines()
    assert lines[:2] == [desc["title"], desc["text"]]
    i = 2
    for t in desc["tables"]:
        edges: list[set[int]] = [set() for _ in t["head"]]
        for cells in [t["head"]] + t["rows"]:
            line, at = lines[i], 0
            for c, cell in enumerate(cells):
                if not cell:  # nothing to place (a computed scale has no code)
                    continue
                at = line.index(cell, at)
                edges[c].add(at + len(cell) if t["align"] == "right" else at)
                at += len(cell)
            assert line[at:].strip() == "", line
            i += 1
        assert all(len(e) == 1 for e in edges), (t["role"], edges)
    assert i == len(lines)


def test_panel_descriptions_are_checked():
    good = E.block_view("normal", "q4_0").describe()
    for bad, exc, words in [
        ("a table", TypeError, "desc must be a dict"),
        ({**good, "title": None}, TypeError, r"desc\['title'\] must be a str"),
        ({**good, "tables": ()}, TypeError, r"desc\['tables'\] must be a list"),
        ({**good, "tables": [{**good["tables"][0], "align": "centre"}]}, ValueError, "align"),
        ({**good, "tables": [{**good["tables"][0], "rows": [["d"]]}]}, ValueError, "1 cells, its head 6"),
        ({**good, "tables": [{**good["tables"][0], "rows": [[1] * 6]}]}, TypeError, "list of str"),
    ]:
        for render in (markup.panel_html, markup.panel_text):
            with pytest.raises(exc, match=words):
                render(bad)


def js_string_literals(source: str) -> list[str]:
    """The string literals of a script, as written between their quotes (comments skipped)."""
    out, i, n = [], 0, len(source)
    while i < n:
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            i = source.index("*/", i) + 2
        elif source[i] in "\"'`":
            j = i + 1
            while source[j] != source[i]:
                j += 2 if source[j] == "\\" else 1
            out.append(source[i + 1 : j])
            i = j + 1
        else:
            i += 1
    return out


#: Words of the inspector that are also names in the script: the bit-width control's
#: ``data-role`` is ``bits`` (a column title too); one-letter strings are SVG's (the group
#: ``g``, the path command ``M``) and also the names of scales (``g``, ``m``, ``d``, ``X``).
SCRIPT_NAMES = {"bits"}


def inspector_words() -> set[str]:
    """Every format-specific string the inspector shows (its titles, sentences, column
    titles, the scales' names, storage and meaning, the element names), and the formats'
    names and labels."""
    words = {k for k in E.FAMILIES} | set(E.FAMILIES.values())
    for source, family in BLOCK_VIEWS:
        v = E.block_view(source, family)
        d = v.describe()
        words |= {d["title"], d["text"], "Block inspector", v.formula, v.element_name, v.label}
        for t in d["tables"]:
            words |= set(t["head"]) | {c for r in t["rows"] for c in r if re.search("[A-Za-z]", c)}
    return {w for w in words if len(w) > 1 and w not in SCRIPT_NAMES}


def ui_strings_in_script(js: str, words: set[str]) -> set[tuple[str, str]]:
    """(literal, word) for every string literal of ``js`` that holds one of ``words`` as a
    whole word (case-insensitive)."""
    found = set()
    for lit in set(js_string_literals(js)):
        for w in words:
            if re.search(rf"(?<![\w-]){re.escape(w.lower())}(?![\w-])", lit.lower()):
                found.add((lit, w))
    return found


def test_script_writes_no_format_specific_string():
    """The static page's script renders the inspector from the description alone: none of
    the inspector's words, and no format's name, is written in explorer.js."""
    js = markup.asset("explorer.js")
    literals = js_string_literals(js)
    # the reader of literals works: it finds selectors and skips comments
    assert "[data-role=block]" in literals and "http://www.w3.org/2000/svg" in literals
    assert not any("A panel" in lit for lit in literals)
    words = inspector_words()
    assert {"scale", "stored as", "E8M0", "fp8 e4m3", "e2m1 value", "decoded x̂", "mxfp4", "q4_k"} <= words
    assert ui_strings_in_script(js, words) == set()
    # and it would notice one: a format's name, a column title, a scale's storage
    for planted in ('"MXFP4 (blocks of 32)"', '"stored as"', "'E8M0'", '"Scale"', '"q4_k"'):
        broken = js.replace("function drawPanel(box, desc) {", f"function drawPanel(box, desc) {{ var w = {planted};")
        assert ui_strings_in_script(broken, words), planted
