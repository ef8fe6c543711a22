"""The kernel-free figures of quantlab.book.figures: the data each embeds equals quantlab's,
their pages are self-contained, and bad arguments are refused.

What the pages *show* (their scripts' arithmetic and drawing) is checked in headless
Chromium by tests/test_figures_browser.py.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab import memory as mem
from quantlab import rl
from quantlab.book.figures import _page, bits, clip, fit, policy
from quantlab.core import gguf_blocks


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for this module (small tensors, rollouts); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _payload(page: str) -> dict:
    m = re.search(r'<script type="application/json" data-role="data">(.*?)</script>', page, re.S)
    assert m, "no data script"
    return json.loads(m.group(1))


def _self_contained(page: str, root_id: str) -> None:
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    assert "<script src" not in page and "<link" not in page and "import(" not in page
    assert "<img" not in page and "url(" not in page and "@import" not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert page.startswith('<div class="qlf ') and f'id="{root_id}"' in page
    assert f'getElementById("{root_id}")' in page and "__ROOT__" not in page
    assert 'html[data-theme="dark"] .qlf' in page  # the theme's dark mode has its own colours
    # every control has a label or an aria-label
    for tag in re.findall(r"<(?:select|input)\b[^>]*>", page):
        if 'type="radio"' in tag:
            continue
        ident = re.search(r'id="([^"]+)"', tag)
        assert ident and f'for="{ident.group(1)}"' in page, tag


# --------------------------------------------------------------------------- the shared frame


def test_root_id_is_checked():
    assert _page.check_root_id("fig-1_a") == "fig-1_a"
    with pytest.raises(TypeError, match="root_id must be a string, got int 3"):
        _page.check_root_id(3)
    for bad in ("", "1abc", "a b", 'a"><script>', "x" * 65):
        with pytest.raises(ValueError, match="root_id must start with a letter"):
            _page.check_root_id(bad)


def test_payload_is_safe_inside_a_script():
    text = _page.json_payload({"a": "</script><b>", "b": [1.5, -0.0]})
    assert "</" not in text and json.loads(text) == {"a": "</script><b>", "b": [1.5, -0.0]}
    with pytest.raises(ValueError, match="data must hold finite numbers only"):
        _page.json_payload({"x": math.nan})


def test_assets_are_package_files_without_their_header_comment():
    for name in (
        "figures.css",
        "common.js",
        "bits.js",
        "bits.css",
        "fit.js",
        "fit.css",
        "clip.js",
        "clip.css",
        "policy.js",
        "policy.css",
    ):
        text = _page.asset(name)
        assert text and not text.startswith("/*"), name
    with pytest.raises(FileNotFoundError):
        _page.asset("missing.js")


def test_scripts_pick_colours_from_the_theme_variables():
    for name in ("common.js", "bits.js", "fit.js", "clip.js", "policy.js"):
        assert not re.search(r"#[0-9a-fA-F]{3,6}\b", _page.asset(name)), name
    css = _page.asset("figures.css")
    light = re.search(r"\.qlf\{(--qlf-[^}]*)", css).group(1)
    dark = re.search(r'html\[data-theme="dark"\] \.qlf,[^{]*\{([^}]*)\}', css).group(1)
    names = lambda block: set(re.findall(r"--qlf-([a-z]+):", block))  # noqa: E731
    assert names(light) == names(dark) and {"fg", "panel", "muted"} <= names(light)


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_text_colours_contrast_with_the_panels(theme):
    """WCAG contrast of at least 4.5:1 for every text colour on both backgrounds."""
    css = _page.asset("figures.css")
    block = (
        re.search(r"\.qlf\{(--qlf-[^}]*)", css)
        if theme == "light"
        else re.search(r'html\[data-theme="dark"\] \.qlf,[^{]*\{([^}]*)\}', css)
    ).group(1)
    colours = dict(re.findall(r"--qlf-([a-z]+):(#[0-9a-fA-F]{6})", block))
    for bg in ("panel", "bg"):
        for fg in ("fg", "muted", "a", "b", "good", "bad", "sign", "exp", "man"):
            hi, lo = sorted((_luminance(colours[fg]), _luminance(colours[bg])), reverse=True)
            assert (hi + 0.05) / (lo + 0.05) >= 4.5, (theme, fg, bg)
    for field in ("sign", "exp", "man"):  # a set bit: --qlf-on on the field's colour
        hi, lo = sorted((_luminance(colours["on"]), _luminance(colours[field])), reverse=True)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, (theme, field)


def test_standalone_page():
    page = _page.standalone_page(["<p>x</p>"], "t", theme="dark")
    assert page.startswith("<!DOCTYPE html>") and 'data-theme="dark"' in page and "<p>x</p>" in page
    with pytest.raises(ValueError, match="theme must be one of"):
        _page.standalone_page(["x"], theme="sepia")
    with pytest.raises(TypeError, match="fragments must be a sequence of HTML strings"):
        _page.standalone_page("<p>x</p>")


# --------------------------------------------------------------------------- bits of a number


@pytest.mark.parametrize("name", list(bits.FORMATS))
def test_format_facts_are_quantlabs(name):
    fmt = ql.get_format(name)
    facts = bits.format_facts(name)
    assert (facts["bits"], facts["ebits"], facts["mbits"], facts["bias"]) == (fmt.bits, fmt.ebits, fmt.mbits, fmt.bias)
    assert facts["max"] == fmt.max_value and facts["min_normal"] == fmt.min_normal
    assert facts["min_subnormal"] == fmt.min_subnormal and facts["eps"] == fmt.eps
    assert (facts["emin"], facts["emax"], facts["has_inf"], facts["nan"], facts["overflow"]) == (
        fmt.emin,
        fmt.emax,
        fmt.has_inf,
        fmt.nan,
        fmt.overflow,
    )
    if fmt.bits <= 16:
        assert facts["levels"] == fmt.levels
    if facts["nan_code"] is None:
        assert fmt.nan == "none"
    else:
        assert math.isnan(float(fmt.decode(torch.tensor([facts["nan_code"]]))[0]))


def test_fp32_levels_and_neighbours():
    assert bits.format_facts("fp32")["levels"] == 2**32 - 2**24 - 1  # all but inf/NaN, one zero
    one = bits.store("fp32", 1.0).view
    assert (one.code, one.down, one.up) == (0x3F800000, 1 - 2**-24, 1 + 2**-23)
    top = bits.describe("fp32", 0x7F7FFFFF)
    assert top.value == ql.get_format("fp32").max_value and top.up == math.inf
    assert bits.describe("fp32", 0x7F800000).up is None and bits.describe("fp32", 0xFF800000).down is None
    tiny = bits.describe("fp32", 1)
    assert tiny.kind == "subnormal" and tiny.value == 2.0**-149 and tiny.down == 0.0


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"])
def test_every_code_of_the_small_formats(name):
    fmt = ql.get_format(name)
    values = [bits.describe(name, c) for c in range(1 << fmt.bits)]
    finite = sorted({v.value for v in values if math.isfinite(v.value)})
    assert len(finite) == fmt.levels
    for v in values:
        assert v.bits == format(v.code, f"0{fmt.bits}b")
        assert v.code == (v.sign << (fmt.bits - 1)) | (v.exponent << fmt.mbits) | v.mantissa
        if v.kind == "nan":
            assert math.isnan(v.value) and v.down is None and v.up is None
            continue
        assert fmt.fields(v.value).code == v.code  # quantlab stores this value in these bits
        assert v.kind == fmt.fields(v.value).kind
        between = [x for x in finite if (v.down is None or x > v.down) and (v.up is None or x < v.up)]
        if math.isfinite(v.value):
            assert between == [abs(v.value) if v.value == 0 else v.value]  # nothing in between
        if v.down is not None:
            assert v.down < v.value
        if v.up is not None:
            assert v.up > v.value
    assert sum(v.kind == "inf" for v in values) == (2 if fmt.has_inf else 0)
    assert sum(v.kind == "subnormal" for v in values) == 2 * ((1 << fmt.mbits) - 1)


def test_fp16_neighbours_are_one_code_apart():
    x = bits.store("fp16", 0.1).view
    assert (x.code, x.value) == (0x2E66, float(torch.tensor(0.1).half()))
    assert x.down == float(torch.tensor([0x2E65], dtype=torch.int16).view(torch.float16)[0])
    assert x.up == float(torch.tensor([0x2E67], dtype=torch.int16).view(torch.float16)[0])
    assert bits.describe("fp16", 0x7BFF).up == math.inf and bits.describe("fp16", 0xFBFF).down == -math.inf


@pytest.mark.parametrize(
    "name, typed, stored",
    [
        ("fp16", 0.1, 0.0999755859375),
        ("bf16", 0.1, 0.10009765625),
        ("fp8_e4m3", 500.0, 448.0),
        ("fp8_e5m2", 1e6, math.inf),
        ("fp4_e2m1", 2.5, 2.0),
        ("fp4_e2m1", 3.5, 4.0),
        ("fp6_e2m3", -100.0, -7.5),
        ("fp8_e4m3", 2.0**-10, 0.0),
        ("fp32", 0.1, 0.10000000149011612),
    ],
)
def test_store_rounds_as_quantlab(name, typed, stored):
    s = bits.store(name, typed)
    assert s.view.value == stored
    assert s.view.value == float(ql.get_format(name).round(torch.tensor([typed], dtype=torch.float64))[0])
    if math.isfinite(stored):
        assert s.error == stored - typed and s.relative == abs(stored - typed) / abs(typed)
    else:
        assert math.isnan(s.error) and s.view.kind == "inf"


def test_store_special_inputs():
    assert bits.store("fp16", math.inf).error == 0.0 and math.isnan(bits.store("fp16", math.inf).relative)
    assert bits.store("fp8_e4m3", math.inf).view.value == 448.0  # saturates
    assert bits.store("fp8_e4m3", math.nan).view.code == 0x7F
    z = bits.store("fp16", -0.0)
    assert z.view.code == 0x8000 and z.view.kind == "zero" and math.isnan(z.relative)
    with pytest.raises(ValueError, match="typed is NaN, which fp4_e2m1 cannot store"):
        bits.store("fp4_e2m1", math.nan)
    with pytest.raises(TypeError, match="typed must be a real number, got str"):
        bits.store("fp16", "0.1")


@pytest.mark.parametrize(
    "text, value",
    [
        ("0.1", 0.1),
        (" -2.5e-3 ", -2.5e-3),
        ("1E5", 1e5),
        (".5", 0.5),
        ("−1", -1.0),
        ("inf", math.inf),
        ("-Infinity", -math.inf),
        ("∞", math.inf),
    ],
)
def test_parse_value(text, value):
    assert bits.parse_value(text) == value


def test_parse_value_refuses_other_text():
    assert math.isnan(bits.parse_value("NaN"))
    for bad in ("", "abc", "1,5", "0x10", "1e"):
        with pytest.raises(ValueError, match="text must be a number such as 0.1"):
            bits.parse_value(bad)
    with pytest.raises(TypeError, match="text must be a string"):
        bits.parse_value(0.1)


def test_describe_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"name must be one of \['fp32'"):
        bits.describe("int8", 0)
    with pytest.raises(TypeError, match="name must be a format name"):
        bits.describe(16, 0)
    with pytest.raises(ValueError, match=r"code must be in 0 .. 2\^4 - 1 for fp4_e2m1, got 16"):
        bits.describe("fp4_e2m1", 16)
    with pytest.raises(TypeError, match="code must be an integer, got float"):
        bits.describe("fp16", 1.0)


def test_bits_page_embeds_quantlabs_facts():
    page = bits.static_html()
    _self_contained(page, "ql-bits")
    data = _payload(page)
    assert data["formats"] == [json.loads(json.dumps(bits.format_facts(n))) for n in bits.FORMATS]
    first = bits.store("fp16", 0.1)
    assert data["initial"]["code"] == first.view.code == 0x2E66
    assert data["initial"]["stored"]["view"]["value"] == first.view.value
    assert data["initial"]["stored"]["error"] == first.error
    other = bits.static_html("b2", initial=("fp8_e4m3", "-inf"))
    assert _payload(other)["initial"]["stored"]["view"]["value"] == -448.0
    assert '<option value="fp8_e4m3" selected>' in other and 'value="-inf"' in other
    with pytest.raises(ValueError, match="name must be one of"):
        bits.static_html(initial=("fp64", "1"))
    with pytest.raises(TypeError, match="initial must be a \\(format, text\\) tuple"):
        bits.static_html(initial="fp16")
    with pytest.raises(ValueError, match="text must be a number"):
        bits.static_html(initial=("fp16", "one"))


# --------------------------------------------------------------------------- does it fit


def test_gguf_bits_agree_with_the_memory_calculator():
    """The legacy GGUF types are scale recipes the memory calculator knows."""
    for key, w in fit.WEIGHT_FORMATS.items():
        if w.gguf is not None:
            assert w.bits_per_weight == gguf_blocks.BITS_PER_WEIGHT[w.gguf], key
            if w.spec is not None:
                assert mem.weight_bytes(32, w.spec) * 8 / 32 == gguf_blocks.BITS_PER_WEIGHT[w.gguf], key
    assert {w.gguf for w in fit.WEIGHT_FORMATS.values() if w.gguf} >= {"q8_0", "q4_0", "q4_k", "q6_k", "tq1_0"}
    assert fit.WEIGHT_FORMATS["nf4_dq"].bits_per_weight == mem.bits_per_weight("nf4", 64, double_quant=True)
    assert fit.WEIGHT_FORMATS["nvfp4"].bits_per_weight == 4.5 and fit.WEIGHT_FORMATS["mxfp4"].bits_per_weight == 4.25


SETTINGS = [
    fit.Setting(),
    fit.Setting("Llama-2-70B", weights="fp16", context=8192, batch=1, kv="fp16", gpu="H100 80GB"),
    fit.Setting("Llama-2-70B", weights="q4_k", context=8192, batch=4, kv="int4_g32", gpu="RTX A6000"),
    fit.Setting("Llama-3.2-1B", n_params=70e9, weights="tq1_0", context=131072, batch=32, kv="fp8", gpu="RTX 3060"),
    fit.Setting("Llama-2-13B", weights="nvfp4", context=512, batch=1024, kv="int2_g32", gpu="Jetson Orin Nano 8GB"),
]


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: f"{s.model}-{s.weights}-{s.context}-{s.batch}")
def test_breakdown_is_the_memory_calculators(s):
    b = fit.breakdown(s)
    shape = mem.get_model(s.model)
    w = fit.WEIGHT_FORMATS[s.weights]
    kv = mem.kv_cache_bytes(
        shape.n_layers, shape.n_kv_heads, shape.head_dim, s.context, s.batch, fit.KV_FORMATS[s.kv][1]
    )
    assert b.kv_cache == kv
    if w.spec is not None:
        assert b.weights == mem.weight_bytes(s.n_params, w.spec)
        assert b.needed == mem.required_bytes(s.n_params, w.spec, extra_bytes=kv)
        assert b.fits == mem.fits(s.n_params, w.spec, s.gpu, extra_bytes=kv)
        fitting = mem.gpus_that_fit(s.n_params, w.spec, extra_bytes=kv)
        assert b.smallest_gpu == (fitting[0].name if fitting else None)
    else:
        assert b.weights == s.n_params * gguf_blocks.BITS_PER_WEIGHT[w.gguf] / 8
        assert b.needed == b.weights * (1 + mem.DEFAULT_OVERHEAD) + kv
    assert b.capacity == mem.get_gpu(s.gpu).memory_bytes
    assert b.overhead == pytest.approx(mem.DEFAULT_OVERHEAD * b.weights, rel=1e-12)
    assert b.gib["needed"] == mem.format_bytes(b.needed, "GiB", 1)


def test_breakdown_known_answers():
    b = fit.breakdown(fit.Setting())  # Llama-2-7B, int4 g128, 4096 tokens of fp16 cache, RTX 4090
    assert b.kv_cache == 2 * 2**30  # "2 GiB per sequence" (chapters/01)
    assert b.weights == 6.74e9 * 4.125 / 8 and b.fits and b.smallest_gpu == "Jetson Orin Nano 8GB"
    big = fit.breakdown(fit.Setting("Llama-2-70B", weights="fp16", gpu="H100 80GB"))
    assert not big.fits and big.smallest_gpu is None


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"model": "GPT-5"}, ValueError, "name must be one of"),
        ({"weights": "int5"}, ValueError, "weights must be one of"),
        ({"kv": 8}, TypeError, "kv must be a string, got int"),
        ({"batch": 0}, ValueError, "batch"),
        ({"batch": 2000}, ValueError, "batch"),
        ({"context": 1.5}, TypeError, "context"),
        ({"n_params": -1}, ValueError, "n_params"),
        ({"gpu": "TPU"}, ValueError, "name must be one of"),
    ],
)
def test_bad_settings_raise(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        fit.Setting(**kwargs)


def test_fit_page_embeds_the_catalogs():
    page = fit.static_html()
    _self_contained(page, "ql-fit")
    data = _payload(page)
    assert [m["name"] for m in data["models"]] == [m.name for m in mem.MODELS]
    for m, shape in zip(data["models"], mem.MODELS):
        assert (m["n_params"], m["n_layers"], m["n_kv_heads"], m["head_dim"]) == (
            shape.n_params,
            shape.n_layers,
            shape.n_kv_heads,
            shape.head_dim,
        )
    assert [(g["name"], g["memory_bytes"]) for g in data["gpus"]] == [(g.name, g.memory_bytes) for g in mem.GPUS]
    assert {w["key"]: w["bpw"] for w in data["weights"]} == {
        k: w.bits_per_weight for k, w in fit.WEIGHT_FORMATS.items()
    }
    for k in data["kv"]:
        spec = fit.KV_FORMATS[k["key"]][1]
        assert mem.kv_cache_bytes(1, 1, 1, 1, 1, spec) == 2 * k["bits"] / 8
    assert data["overhead"] == mem.DEFAULT_OVERHEAD and data["gib"] == mem.GiB
    assert data["contexts"] == [2**k for k in range(9, 18)]
    assert data["initial"] == {
        "model": "Llama-2-7B",
        "n_params": 6.74e9,
        "weights": "int4_g128",
        "context": 4096,
        "batch": 1,
        "kv": "fp16",
        "gpu": "RTX 4090",
    }
    with pytest.raises(ValueError, match="initial.context must be one of"):
        fit.static_html(initial=fit.Setting(context=1000))
    with pytest.raises(TypeError, match="initial must be a Setting"):
        fit.static_data(initial={"model": "Llama-2-7B"})
    with pytest.raises(TypeError, match="setting must be a Setting"):
        fit.breakdown("Llama-2-7B")


# --------------------------------------------------------------------------- clip it


def test_clip_point_known_answers():
    """int4 (q_max 7, q_min -8) with the range 1.0: step 1/7; 5.0 is clipped to 1.0 (error
    16), -1.2 is inside the grid's range [-8/7, 1] only down to -1.1428..., so it is clipped to -8/7."""
    x = np.array([5.0, 0.3, -0.05, -1.2, 0.0, 1 / 7], dtype=np.float32)
    p = clip.clip_point(x, 4, clip_ratio=0.2)
    s = np.float32(1.0) / np.float32(7)
    assert p.scale == pytest.approx(float(s), rel=1e-7) and p.threshold == pytest.approx(1.0, rel=1e-6)
    assert p.ratio == pytest.approx(0.2, rel=1e-6)
    assert p.clipped == pytest.approx(2 / 6)
    assert p.clipping == pytest.approx(((5 - 7 * p.scale) ** 2 + (-1.2 + 8 * p.scale) ** 2) / 6, rel=1e-6)
    assert p.rounding == pytest.approx(((0.3 - 2 * p.scale) ** 2 + 0.05**2 + 0.0) / 6, rel=1e-5)
    assert p.total == pytest.approx(ql.mse(x, ql.fake_quantize(x, "int4", clip_ratio=0.2)), rel=1e-12)
    assert p.zeroed == pytest.approx(1 / 5)  # -0.05 of the five non-zero values
    # absmax clips nothing, beyond the float32 rounding of the scale
    assert clip.clip_point(x, 8).clipping <= (5.0 * 2**-20) ** 2


def test_clip_point_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"bits must be one of \(4, 8\), got 3"):
        clip.clip_point(np.ones(4, np.float32), 3)
    with pytest.raises(TypeError, match="x must be a non-empty float numpy array"):
        clip.clip_point([1.0, 2.0], 4)
    with pytest.raises(TypeError, match="bits must be an integer"):
        clip.clip_point(np.ones(4, np.float32), "4")
    with pytest.raises(ValueError, match="source must be one of"):
        clip.values("biases")


def test_clip_histogram_counts_every_value():
    x = np.array([-8.0, 4.0, 1e-5, 0.0, 0.5], dtype=np.float32)
    h = clip.histogram(x)
    assert h["absmax"] == 8.0 and h["n"] == 5 and h["below"] == 2  # 1e-5 and 0 are under 8e-3
    assert sum(h["counts"]) + h["below"] == 5 and h["counts"][-1] == 1  # max|x| in the last bin
    assert h["ratios"][0] == pytest.approx(10.0**-clip.HIST_DECADES) and h["ratios"][-1] == 1.0


@pytest.mark.slow
def test_clip_sources_are_minilms_layer():
    from quantlab.models import minilm

    from quantlab import evaluation

    w = clip.weights()
    np.testing.assert_array_equal(w, minilm.load_weight("encoder.layer.0.output.dense.weight", as_numpy=True))
    a = clip.activations()
    tok = minilm.load_tokenizer()
    sentences = evaluation.load_sentences("calibration")
    tokens = sum(len(tok(s)["input_ids"]) for s in sentences)
    assert a.shape == (tokens, 1536) and a.dtype == np.float32
    assert a.min() > -0.2 and a.max() > 10  # GELU outputs: never below -0.17, a few large ones
    with pytest.raises(ValueError):
        a[0, 0] = 1.0  # read-only


@pytest.mark.slow
def test_clip_page_embeds_quantlabs_errors():
    page = clip.static_html()
    _self_contained(page, "ql-clip")
    data = _payload(page)
    for source in clip.SOURCES:
        x = clip.values(source)
        entry = data["sources"][source]
        assert entry["ratios"] == pytest.approx(list(clip.RATIOS[source]), rel=5e-6)
        assert entry["hist"]["counts"] == clip.histogram(x)["counts"]
        for b in clip.BITS:
            e = entry["bits"][str(b)]
            fmt = f"int{b}"
            # the grid search of chapters/03b: the ratio with the smallest ql.mse
            mses = [ql.mse(x, ql.fake_quantize(x, fmt, clip_ratio=float(r))) for r in clip.RATIOS[source]]
            assert e["best"] == int(np.argmin(mses)), (source, b)
            assert e["total"] == pytest.approx(mses, rel=6e-6)
            for i in (0, len(mses) // 2, len(mses) - 1):
                p = clip.clip_point(x, b, clip_ratio=float(clip.RATIOS[source][i]))
                for k in ("threshold", "rounding", "clipping", "clipped", "zeroed"):
                    assert e[k][i] == pytest.approx(getattr(p, k), rel=5e-6, abs=1e-12), (source, b, k, i)
                assert p.rounding + p.clipping == pytest.approx(p.total, rel=1e-12)
            for pct in clip.PERCENTILES:
                qp = ql.choose_qparams(x, fmt, percentile=pct)
                m = e["markers"][f"p{pct:g}"]
                assert m["threshold"] == pytest.approx(float(qp.scale) * ql.get_format(fmt).qmax, rel=5e-6)
                assert m["total"] == pytest.approx(ql.mse(x, ql.fake_quantize(x, fmt, percentile=pct)), rel=6e-6)
            assert e["markers"]["mse"]["total"] == pytest.approx(min(mses), rel=6e-6)
            assert e["markers"]["absmax"]["ratio"] == pytest.approx(1.0, abs=1e-6)
    # what page 03b says: on the weights the best int4 range is a small fraction of absmax
    w4 = data["sources"]["weights"]["bits"]["4"]["markers"]
    assert w4["mse"]["ratio"] < 0.05 and w4["mse"]["total"] < w4["absmax"]["total"] / 3
    with pytest.raises(ValueError, match="source must be one of"):
        clip.static_html(initial=("biases", 4))
    with pytest.raises(ValueError, match="bits must be one of"):
        clip.static_data(initial=("weights", 2))


# --------------------------------------------------------------------------- watch the policy


def test_split_episodes_reassembles_the_rollout():
    p = policy.policy("int2", "tensor")
    returns, states = rl.rollout(p, policy.EPISODES, policy.EVAL_SEED, record_states=True)
    parts = policy.split_episodes(returns, states)
    assert [len(s) for s in parts] == [int(r) for r in returns]
    # re-interleave step by step, as rl.rollout recorded them
    again = [s[t] for t in range(int(returns.max())) for s in parts if len(s) > t]
    np.testing.assert_array_equal(np.stack(again), states)
    np.testing.assert_array_equal(np.concatenate([s[:1] for s in parts]), states[: len(parts)])
    with pytest.raises(ValueError, match="states must have sum"):
        policy.split_episodes(returns, states[:-1])
    with pytest.raises(ValueError, match="returns must be whole numbers"):
        policy.split_episodes(np.array([1.5]), states[:1])


def test_the_float32_episode_is_the_rl_pages():
    ep = policy.episode()
    p = policy.policy()
    stored = rl.load_policies()
    first = stored.policies[f"seed{stored.seeds()[0]}/fp32"].state_dict()
    assert all(torch.equal(v, first[k]) for k, v in p.state_dict().items())
    states = rl.collect_states(p, policy.EPISODES, seed=policy.EVAL_SEED).numpy()
    returns = rl.episode_returns(p, policy.EPISODES, seed=policy.EVAL_SEED)
    assert ep.ret == returns[policy.EPISODE] == len(ep.states)
    np.testing.assert_array_equal(ep.states[0], states[policy.EPISODE])  # step 0 holds every episode's start
    np.testing.assert_array_equal(ep.actions, rl.numpy_logits(p)(ep.states).argmax(-1))
    assert ep.first_difference is None and ep.agreement == 1.0 and policy.ending(ep) is None


@pytest.mark.parametrize("fmt, gran", [("int8", "tensor"), ("int2", "tensor"), ("binary", "channel")])
def test_rounded_episode_follows_float32_until_the_first_difference(fmt, gran):
    ref, ep = policy.episode(), policy.episode(fmt, gran)
    q = policy.policy(fmt, gran)
    d = ep.first_difference
    assert d is not None  # every rounded policy of this episode differs somewhere
    np.testing.assert_array_equal(ep.states[: d + 1], ref.states[: d + 1])
    np.testing.assert_array_equal(ep.actions[:d], ref.actions[:d])
    assert ep.actions[d] != ref.actions[d]
    assert ep.agreement == rl.action_agreement(q, policy.policy(), torch.from_numpy(ref.states))
    assert ep.ret == rl.episode_returns(q, policy.EPISODES, seed=policy.EVAL_SEED)[policy.EPISODE]
    end = policy.ending(ep)
    if ep.ret < rl.MAX_RETURN:
        assert end["reason"] in ("cart", "pole")
        assert abs(end["x"]) > 2.4 if end["reason"] == "cart" else abs(end["theta"]) > 12 * math.pi / 180
    else:
        assert end is None


def test_policy_arguments_are_checked():
    with pytest.raises(ValueError, match="fmt must be one of"):
        policy.policy("int5")
    with pytest.raises(ValueError, match="granularity must be one of"):
        policy.episode("int4", "group")
    with pytest.raises(TypeError, match="ep must be an Episode"):
        policy.ending("episode")
    with pytest.raises(ValueError, match="initial format must be one of"):
        policy.static_data(initial=("fp8", "tensor"))
    with pytest.raises(TypeError, match="initial must be a \\(format, granularity\\) tuple"):
        policy.static_html(initial="int2")


@pytest.mark.slow
def test_policy_page_embeds_the_episodes():
    page = policy.static_html()
    _self_contained(page, "ql-policy")
    data = _payload(page)
    ref = policy.episode()

    def rebuild(entry, prefix_x=(), prefix_t=()):
        x = np.cumsum(entry["x"]) / data["x_scale"]
        t = np.cumsum(entry["theta"]) / data["theta_scale"]
        return np.concatenate([prefix_x, x]), np.concatenate([prefix_t, t])

    fx, ft = rebuild(data["fp32"])
    np.testing.assert_allclose(fx, ref.states[:, 0], atol=0.5 / policy.X_SCALE + 1e-12)
    np.testing.assert_allclose(ft, ref.states[:, 2], atol=0.5 / policy.THETA_SCALE + 1e-12)
    assert data["fp32"]["actions"] == "".join(map(str, ref.actions)) and data["fp32"]["ret"] == ref.ret
    assert len(data["rounded"]) == len(policy.FORMATS) * len(policy.GRANULARITIES)
    for fmt in policy.FORMATS:
        for gran in policy.GRANULARITIES:
            ep, entry = policy.episode(fmt, gran), data["rounded"][f"{fmt}-{gran}"]
            assert (entry["ret"], entry["first_difference"], entry["agreement"]) == (
                ep.ret,
                ep.first_difference,
                ep.agreement,
            )
            start = entry["start"]
            x, t = rebuild(entry, fx[:start], ft[:start])
            np.testing.assert_allclose(x, ep.states[:, 0], atol=0.5 / policy.X_SCALE + 1e-9)
            np.testing.assert_allclose(t, ep.states[:, 2], atol=0.5 / policy.THETA_SCALE + 1e-9)
            assert data["fp32"]["actions"][:start] + entry["actions"] == "".join(map(str, ep.actions))
            assert entry["end"] == policy.ending(ep)
    assert data["seed"] == rl.load_policies().seeds()[0] and data["eval_seed"] == 1000
