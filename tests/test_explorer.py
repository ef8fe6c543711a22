"""The Quantization Explorer's data, its two front ends, and their agreement.

Every number the explorer shows is checked against quantlab called directly (with the
format and options the setting stands for, spelled out here independently of
``explorer.resolve``); the static page's embedded data must equal the kernel
explorer's data for every setting.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

import quantlab as ql
from quantlab import explorer as E
from quantlab import gguf_blocks, mx



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
BLOCKS = {"mxfp4": 32, "nvfp4": 16, "q4_k": 32}


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
    if s.granularity == "group":
        kw["group_size"] = 64
    return name, kw


ALL = list(E.all_settings())


def reference(x: torch.Tensor, name: str, kw):
    """quantlab called directly: (x_hat, bits per weight with scales, average error in %)."""
    if name == "q4_k":
        raw = gguf_blocks.quantize_blocks(x, "q4_k")
        x_hat, bpw = gguf_blocks.dequantize_blocks(raw, "q4_k"), 8 * raw.numel() / x.numel()
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


# --------------------------------------------------------------------------- known answers


def test_known_answers_8_bits():
    d = E.explore("normal", 8)
    assert (d.fmt, d.levels, d.compression) == ("int8", 256, 4.0)
    assert d.figures["levels"] == "256"
    assert d.figures["compression"] == "4×"
    assert "256 levels" in d.regime


def test_known_answers_32_bits_is_fp32_itself():
    for fam in E.FAMILIES:
        d = E.explore("minilm", 32, "group", False, fam)
        assert d.fmt == "fp32"
        assert d.levels == 4294967296
        assert d.figures["levels"] == "4,294,967,296"
        assert d.avg_error_pct == 0.0 and d.figures["error"] == "0 %"
        assert d.figures["compression"] == "1×"
        np.testing.assert_array_equal(d.snapped, d.strip)
        assert "no error" in d.regime


def test_float_regime_counts_distinct_values():
    assert "253 distinct values (of 256 codes)" in E.explore("normal", 8, family="float").regime
    assert "15 distinct values (of 16 codes)" in E.explore("normal", 4, family="float").regime
    assert "NF4" in E.explore("normal", 4, family="nf4").regime


def test_known_answers_small_widths():
    assert E.explore("normal", 2).figures["compression"] == "16×"
    assert E.explore("normal", 3).figures["compression"] == "10.67×"
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
    assert f"the outlier {E._sig(largest)} sets the one scale for all" in per_tensor.regime
    assert E._sig(largest) == "7.91"


# --------------------------------------------------------------------------- every setting vs quantlab


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
            assert d.distinct_values == (16 if name == "q4_k" else ql.get_format(name).levels)
        else:
            fmt = ql.get_format(name)
            assert d.block is None
            if not isinstance(fmt, ql.FloatFormat):
                assert d.levels == fmt.levels
        assert d.compression == 32 / bits
        assert d.avg_error_pct == pytest.approx(err, rel=1e-12, abs=1e-12), s
        assert d.bits_per_weight == bpw
        np.testing.assert_array_equal(d.snapped, x_hat[row, cols].double().numpy())
        counts, _ = np.histogram(x_hat.numpy().ravel(), bins=E.HIST_EDGES)
        np.testing.assert_array_equal(d.hist, counts)
        # the displayed figures are these numbers, rounded for display
        f = d.figures
        assert f["format"] == name
        assert parse_number(f["levels"]) == 2**bits
        assert parse_number(f["compression"]) == pytest.approx(32 / bits, abs=0.005)
        shown = parse_number(f["error"])
        assert shown == pytest.approx(err, rel=5e-3, abs=1e-12), (s, f["error"], err)
        assert f["error"] == E._sig(err) + " %"


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
            np.testing.assert_allclose(np.diff(d.grid), d.step, rtol=1e-5)


def test_histogram_bins_are_hundredths():
    np.testing.assert_allclose(np.diff(E.HIST_EDGES), 0.01, atol=1e-12)
    np.testing.assert_array_equal(E.histogram(torch.tensor([-0.45, -0.4401, 0.0, 0.449, 0.45, 0.46])),
                                  np.bincount([0, 0, 45, 89, 89], minlength=90))


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
    "value, text",
    [(0, "0"), (0.99217, "0.992"), (0.0038567, "0.00386"), (12.345, "12.3"), (99.996, "100"),
     (99.94, "99.9"), (45.5, "45.5"), (1234.5, "1234"), (5e-7, "0.000000500")],
)
def test_sig_known_answers(value, text):
    assert E._sig(value) == text


def test_zeroed_share_never_shows_a_false_100():
    d = E.explore("minilm", 4)  # every weight but the outliers rounds to 0
    assert 99.9 < d.zeroed_pct < 100
    assert d.figures["zeroed"] == ">99.9 %"
    assert "more than 99.9% of the weights round to 0" in d.regime
    assert E._pct_text(100.0) == "100" and E._pct_text(55.31) == "55.3"


@hsettings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e4, allow_nan=False))
def test_sig_keeps_three_significant_digits(v):
    text = E._sig(v)
    assert "e" not in text
    assert float(text) == pytest.approx(v, rel=5.01e-3)


# --------------------------------------------------------------------------- static page


def test_static_data_equals_kernel_data_for_every_setting(page_data):
    assert page_data["bits"] == list(E.BITS)
    assert len(E.FAMILIES) == 6
    assert len(page_data["keys"]) == len(ALL) == 2 * 6 * 2 * 2 * 16
    for s in ALL:
        entry = page_data["entries"][page_data["keys"][s.key]]
        d = E.explore(s.source, s.bits, s.granularity, s.symmetric, s.family)
        assert entry == json.loads(json.dumps(d.to_json())), s
        assert entry["figs"] == d.figures
        if d.available:
            np.testing.assert_allclose(entry["snap"], d.snapped, atol=0.5e-4 + 1e-12)
            assert entry["hist"] == d.hist.tolist()
    for source, src in page_data["sources"].items():
        d = E.explore(source, 8)
        np.testing.assert_allclose(src["strip"], d.strip, atol=0.5e-4 + 1e-12)
        assert src["hist"] == d.hist_original.tolist() and src["n"] == d.n


def test_kernel_explorer_shows_the_same_as_the_static_page(page_data):
    ex = E.Explorer(bits=4)
    for s in [E.Settings("normal", b) for b in (2, 3, 4, 8, 16, 32)] + [
        E.Settings("minilm", 4, "group", True, "nf4"),
        E.Settings("minilm", 8, "tensor", False, "int"),
        E.Settings("normal", 8, "tensor", True, "float"),
        E.Settings("normal", 5, "tensor", True, "float"),
        E.Settings("normal", 4, "tensor", True, "mxfp4"),
        E.Settings("minilm", 4, "group", False, "q4_k"),
        E.Settings("minilm", 6, "tensor", True, "nvfp4"),
    ]:
        d = ex.set(source=s.source, bits=s.bits, granularity=s.granularity,
                   symmetric=s.symmetric, family=s.family)
        entry = page_data["entries"][page_data["keys"][s.key]]
        assert ex.figures == entry["figs"]
        if d.available:
            # the artists hold exactly the data's values
            np.testing.assert_array_equal(ex.pts_quant.get_offsets()[:, 0], d.snapped)
            np.testing.assert_allclose(ex.hist_quant.get_data().values,
                                       np.where(d.hist > 0, d.hist * 100.0 / d.n, ex._floor))
        else:
            assert len(ex.pts_quant.get_offsets()) == 0 and not ex.hist_quant.get_visible()


def test_static_page_is_self_contained(html_page):
    assert len(html_page.encode()) < 1_000_000
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html_page)
    assert "<script src" not in html_page and "<link" not in html_page and "import(" not in html_page
    assert html_page.count("<script") == 2
    # the script only looks entries up and maps them to pixels
    js = E._asset("explorer.js")
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
    css = E._asset("explorer.css")
    assert E.COLORS == {"fg": "#1f2328", "muted": "#59636e", "border": "#d0d7de", "bg": "#f3f5f7",
                        "orig": "#1f77b4", "quant": "#d95f02"}
    for name, value in E.COLORS.items():
        assert css.count(value) == 1, name  # written once, in the custom properties
    js = E._asset("explorer.js")
    assert not re.search(r"#[0-9a-fA-F]{6}\b", js)  # the script only uses var(--qlx-...)
    ex_source = open(E.__file__, encoding="utf-8").read()
    assert E.COLORS["orig"] not in ex_source and E.COLORS["quant"] not in ex_source


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
    for role in ("source", "family", "granularity", "symmetric"):
        assert f'data-role="{role}"' in html_page
    for fig in E.FIGURE_LABELS:
        assert f'data-fig="{fig}"' in html_page


def test_static_html_initial_and_id():
    page = E.static_html(E.static_data(), root_id="qlx-2", initial=E.Settings("minilm", 8))
    assert 'id="qlx-2"' in page and 'getElementById("qlx-2")' in page
    assert 'value="6"' in page  # 8 bits is the seventh stop
    assert '<option value="minilm" selected>' in page


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


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"source": "laplace"}, ValueError, "source"),
        ({"bits": 1}, ValueError, "bits"),
        ({"bits": 24}, ValueError, "24"),
        ({"bits": 8.0}, TypeError, "bits"),
        ({"bits": True}, TypeError, "bits"),
        ({"granularity": "channel"}, ValueError, "granularity"),
        ({"symmetric": "yes"}, TypeError, "symmetric"),
        ({"family": "fp"}, ValueError, "family"),
    ],
)
def test_bad_settings_raise(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        E.explore(**kwargs)


def test_other_errors():
    with pytest.raises(ValueError, match="source"):
        E.weights("uniform")
    with pytest.raises(ValueError, match="source"):
        E.strip_location("uniform")
    with pytest.raises(TypeError, match="initial"):
        E.static_html(E.static_data(), initial="int4")
    ex = E.Explorer()
    with pytest.raises(ValueError, match="colour"):
        ex.set(colour="red")
    with pytest.raises(ValueError, match="bits"):
        ex.set(bits=33)


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(E)
    assert result.attempted >= 3 and result.failed == 0


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
    assert E.explore("normal", 8, "group", False, "float").notes == E.resolve(
        E.Settings("normal", 8, "group", False, "float")).notes


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
            entries = {json.dumps(E.explore(source, 4, gran, sym, fam).to_json(), sort_keys=True)
                       for gran in E.GRANULARITIES for sym in (True, False)}
            assert len(entries) == 1, (source, fam)
        d = E.explore("normal", 4, family=fam)
        assert d.notes[:1] == r.notes and "grey lines" in d.notes[1]
        assert d.title.startswith(f"{fam}, ")


def test_block_bits_per_weight_count_the_scales():
    x = E.weights("minilm")
    assert E.explore("minilm", 4, family="mxfp4").bits_per_weight == 4 + 8 / 32 == 4.25
    assert E.explore("minilm", 4, family="nvfp4").bits_per_weight == 4 + 8 / 16 + 32 / x.numel()
    assert E.explore("minilm", 4, family="q4_k").bits_per_weight == 144 * 8 / 256 == 4.5
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
    assert v.values.size == (16 if family == "q4_k" else 15)
    # the displayed table and the embedded data
    rows = v.rows()
    assert len(rows) == k and rows[0][0] == str(v.start)
    assert rows[0][1] == f"{round(float(v.original[0]), 4):.4f}"
    j = v.to_json()
    assert j["cols"] == list(v.columns) and j["code"] == v.codes.tolist()
    np.testing.assert_allclose(j["xhat"], v.x_hat, atol=0.5e-4 + 1e-12)
    np.testing.assert_allclose(j["x"], v.original, atol=0.5e-4 + 1e-12)
    assert j["scales"] == [list(r) for r in v.scale_rows()]
    assert v.to_html().count("<tr>") == 1 + len(v.scales) + 1 + k
    assert v._repr_html_() == v.to_html()
    assert len(repr(v).splitlines()) == 2 + len(v.scales) + 1 + k
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
        E.block_view("laplace", "mxfp4")


def test_static_page_carries_the_block_inspector(html_page, page_data):
    assert '<div class="qlx-block" data-role="block" hidden></div>' in html_page
    js = E._asset("explorer.js")
    assert "drawBlock" in js and "block-table" in js
    for s in ALL:
        entry = page_data["entries"][page_data["keys"][s.key]]
        if s.family in BLOCKS and s.bits == 4:
            assert entry["block"] == json.loads(json.dumps(E.block_view(s.source, s.family).to_json()))
            assert len(entry["block"]["xhat"]) == BLOCKS[s.family]
        else:
            assert "block" not in entry
    # the existing keys are unchanged: source|bits|granularity|s or a|family
    assert E.Settings("normal", 8, "tensor", True, "int").key == "normal|8|tensor|s|int"
    assert "minilm|4|group|a|q4_k" in page_data["keys"]


def test_kernel_widget_shows_the_block_inspector_for_block_formats():
    ex = E.Explorer(bits=4)
    ex.widget()
    w = ex._widgets
    assert w["block"].layout.display == "none" and w["block"].value == ""
    w["family"].value = "mxfp4"
    assert ex.data.fmt == "mxfp4"
    assert w["block"].layout.display is None
    assert w["block"].value == E.block_view("normal", "mxfp4").to_html()
    assert w["block"].value.count("<tr>") == 1 + 1 + 1 + 32  # scales (one), header, 32 weights
    assert ex._widgets["box"].children[-1] is w["block"]
    w["family"].value = "nf4"
    assert w["block"].layout.display == "none"
