"""QuantScheme, the one recipe type: typed granularity, bits per weight, serialization, and the
same recipe read by quantize, nn, the memory calculator and the RL code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from quantlab.core import memory as mem
from quantlab.core.quantize import quantize
from quantlab.core.scheme import (
    DEFAULT_SCALE_DTYPE,
    DoubleQuant,
    PerAxis,
    PerGroup,
    PerTensor,
    QuantScheme,
    as_scheme,
)
from quantlab.nn import quantize_model, size_report

SCHEMES = [
    QuantScheme("int4", PerGroup(128)),
    QuantScheme("int4", PerGroup(32), scale_dtype="fp32"),
    QuantScheme("nf4", PerGroup(64), scale_dtype="fp32"),
    QuantScheme("uint4", PerGroup(32), symmetric=False),
    QuantScheme("int8", PerAxis(0)),
    QuantScheme("int8", PerAxis(1), scale_dtype="bf16"),
    QuantScheme("int8", PerTensor()),
    QuantScheme("fp8_e4m3", PerTensor(), scale_dtype="fp32"),
    QuantScheme("int3", PerGroup(64), symmetric=False),
    QuantScheme("bf16"),
    QuantScheme("mxfp4"),
]


def test_the_default_scale_dtype_is_stated_once_and_is_fp16():
    assert DEFAULT_SCALE_DTYPE == "fp16"
    assert QuantScheme("int4").scale_dtype == DEFAULT_SCALE_DTYPE
    assert mem.QuantSpec("int4", 128).scale_dtype == DEFAULT_SCALE_DTYPE


@pytest.mark.parametrize("scheme", SCHEMES, ids=str)
def test_counted_bits_equal_the_packed_bits(scheme):
    """bits_per_weight(shape) is what a real packed QTensor of that shape costs."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32))
    q = quantize(x, scheme)
    assert q.bits_per_weight == pytest.approx(scheme.bits_per_weight(tuple(x.shape)), rel=1e-12)


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if not s.is_block], ids=str)
def test_quantize_with_a_scheme_is_quantize_with_its_keywords(scheme):
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((16, 128)).astype(np.float32))
    a, b = quantize(x, scheme), quantize(x, scheme.fmt, **scheme.qparams_kwargs())
    assert torch.equal(a.codes, b.codes) and a.granularity == b.granularity and a.scale_dtype == b.scale_dtype
    assert (a.scale is None and b.scale is None) or torch.equal(a.scale, b.scale)
    assert torch.equal(scheme.quantize(x).codes, a.codes)


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if not s.is_block and s.fmt.name != "bf16"], ids=str)
def test_nn_layers_store_what_the_scheme_counts(scheme):
    lin = torch.nn.Linear(256, 64)
    model = quantize_model(torch.nn.Sequential(lin), scheme, skip=None, progress=False)
    (layer,) = size_report(model).layers
    assert layer.bits_per_weight == pytest.approx(scheme.bits_per_weight((64, 256)), rel=1e-12)


def test_known_answers_by_hand():
    assert QuantScheme("int4", group_size=128).bits_per_weight() == 4 + 16 / 128
    assert QuantScheme("int4", PerGroup(32)).bits_per_weight() == 4.5  # GGUF Q4_0
    assert QuantScheme("nf4", PerGroup(64), scale_dtype="fp32").bits_per_weight() == 4.5
    assert QuantScheme("nf4", PerGroup(64), double_quant=True).bits_per_weight() == 4 + 8 / 64 + 32 / (64 * 256)
    assert QuantScheme("int8").bits_per_weight((1536, 384)) == 8 + 16 / 384  # one fp16 scale per row of 384
    assert QuantScheme("int8", PerAxis(1)).bits_per_weight((1536, 384)) == 8 + 16 / 1536
    assert QuantScheme("int8", "tensor").bits_per_weight() == 8  # one number beside millions: free
    assert QuantScheme("int8", "tensor").bits_per_weight((4, 4)) == 8 + 16 / 16
    assert QuantScheme("uint4", PerGroup(32), symmetric=False).bits_per_weight() == 4 + (16 + 4) / 32
    assert QuantScheme("int4", PerGroup(32), symmetric=False, zero_point_dtype="fp16").bits_per_weight() == 5.0
    assert QuantScheme("fp16").bits_per_weight() == 16 and QuantScheme("mxfp4").bits_per_weight() == 4.25
    assert QuantScheme("nvfp4").bits_per_weight() == 4.5


def test_typed_granularity_is_the_named_one():
    assert QuantScheme("int4", PerGroup(32)) == QuantScheme("int4", "group", 32) == QuantScheme("int4", group_size=32)
    assert QuantScheme("int8", PerAxis(1)) == QuantScheme("int8", "channel", axis=1)
    assert QuantScheme("int8", PerTensor()) == QuantScheme("int8", "tensor")
    assert QuantScheme("int4", group_size=64).grain == PerGroup(64)
    assert QuantScheme("int8").grain == PerAxis(0) and QuantScheme("fp16").grain == PerTensor()
    assert QuantScheme("mxfp4").grain == PerGroup(32) and QuantScheme("nvfp4").grain == PerGroup(16)
    assert str(QuantScheme("int4", PerGroup(128))) == "int4 g128"
    assert as_scheme("int4") == QuantScheme("int4") and as_scheme(SCHEMES[0]) is SCHEMES[0]


@pytest.mark.parametrize(
    "scheme", [*SCHEMES, QuantScheme("nf4", PerGroup(64), double_quant=DoubleQuant(block_size=128))]
)
def test_serialization_round_trips(scheme):
    data = scheme.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert QuantScheme.from_dict(data) == scheme
    assert QuantScheme.from_json(scheme.to_json()) == scheme


def test_quantspec_is_the_same_type_with_the_calculators_words():
    assert isinstance(mem.QuantSpec("int4", 128), QuantScheme)
    assert mem.QuantSpec("int4", 128) == QuantScheme("int4", PerGroup(128))
    assert mem.QuantSpec("int8") == QuantScheme("int8", PerTensor())  # no group: one scale per tensor
    assert mem.QuantSpec("fp16") == QuantScheme("fp16")
    assert mem.QuantSpec("int4", 32, "fp16", "fp16").bits_per_weight() == 5.0  # KIVI's scale and zero per 32
    assert mem.weight_bytes(7e9, QuantScheme("int4", PerGroup(128))) == 7e9 * 4.125 / 8


def test_the_rl_recipe_is_a_scheme():
    from quantlab.book.rl import policy_scheme

    assert policy_scheme("int4") == QuantScheme("int4", PerTensor(), scale_dtype="fp32")
    assert policy_scheme("int2", "channel") == QuantScheme("int2", PerAxis(0), scale_dtype="fp32")
    assert policy_scheme("int1") == QuantScheme("int1", PerTensor(), symmetric=False, scale_dtype="fp32")
    assert policy_scheme("mxfp4").is_block and policy_scheme("fp16").is_cast
    with pytest.raises(ValueError, match="granularity must be 'tensor' or 'channel', got 'group'"):
        policy_scheme("int4", "group")


@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda: QuantScheme("int8").bits_per_weight(), ValueError, "pass shape="),
        (lambda: QuantScheme("int4", PerGroup(32), group_size=64), ValueError, "group_size=64 contradicts"),
        (lambda: QuantScheme("int8", PerAxis(1), axis=-2), ValueError, "axis=-2 contradicts"),
        (lambda: QuantScheme("int4", zero_point_dtype="fp16"), ValueError, "zero_point_dtype='fp16' needs symmetric"),
        (lambda: QuantScheme("int8", double_quant=True), ValueError, "double_quant needs per-group scales"),
        (lambda: QuantScheme("int8", double_quant="yes"), TypeError, "double_quant must be"),
        (lambda: QuantScheme("mxfp4", group_size=64), ValueError, "mxfp4 brings its own scales"),
        (lambda: QuantScheme("int4", PerGroup(0)), ValueError, "group_size must be positive, got 0"),
        (lambda: QuantScheme("int4", PerGroup(32)).bits_per_weight((4, 48)), ValueError, "multiple of group_size=32"),
        (lambda: QuantScheme("int4", PerGroup(32)).bits_per_weight("4x64"), TypeError, "shape must be a sequence"),
        (lambda: QuantScheme("int4", PerGroup(32)).bits_per_weight((4, 6.4e1)), TypeError, "shape must be"),
        (lambda: QuantScheme("int8", PerAxis(1)).bits_per_weight((64,)), ValueError, "axis=1 does not exist"),
        (lambda: QuantScheme.from_dict({"fmt": "int4", "bits": 4}), ValueError, r"unknown keys \['bits'\]"),
        (lambda: QuantScheme.from_dict("int4"), TypeError, "data must be a dict"),
        (lambda: QuantScheme("int4", zero_point_dtype="fp16", symmetric=False).qparams_kwargs(), ValueError, "hqq"),
        (lambda: QuantScheme("nf4", PerGroup(64), double_quant=True).qparams_kwargs(), ValueError, "double"),
        (
            lambda: quantize(torch.ones(4, 32), QuantScheme("int4", PerGroup(32)), group_size=16),
            ValueError,
            "give group_size inside it",
        ),
        (
            lambda: quantize(torch.ones(4, 32), QuantScheme("int4", PerGroup(32)), scale_dtype="fp16"),
            ValueError,
            "give scale_dtype inside it",
        ),
    ],
)
def test_bad_recipes_get_clear_errors(make, err, match):
    with pytest.raises(err, match=match):
        make()


def _layer(seed=0, out=16, inp=64, rows=128):
    g = np.random.default_rng(seed)
    w = torch.from_numpy(g.standard_normal((out, inp)).astype(np.float32))
    x = torch.from_numpy(g.standard_normal((rows, inp)).astype(np.float32))
    return w, x


@pytest.mark.parametrize(
    "scheme, keywords",
    [
        (QuantScheme("int4", PerGroup(32), scale_dtype="fp32"), dict(group_size=32, scale_dtype="fp32")),
        (QuantScheme("int3", PerAxis(0)), dict(group_size=None, scale_dtype="fp16")),
        (QuantScheme("uint4", PerGroup(16), symmetric=False), dict(group_size=16, symmetric=False, scale_dtype="fp16")),
    ],
    ids=str,
)
def test_gptq_and_awq_take_a_scheme(scheme, keywords):
    from quantlab.algorithms.awq import awq_quantize_weight
    from quantlab.algorithms.gptq import gptq_quantize_weight, gptq_reference

    w, x = _layer()
    h = 2 * x.T @ x / x.shape[0]
    fmt = scheme.fmt.name
    assert torch.equal(gptq_quantize_weight(w, h, scheme).weight, gptq_quantize_weight(w, h, fmt, **keywords).weight)
    assert torch.equal(gptq_reference(w, h, scheme).weight, gptq_reference(w, h, fmt, **keywords).weight)
    a, b = awq_quantize_weight(w, x, scheme, n_grid=4), awq_quantize_weight(w, x, fmt, n_grid=4, **keywords)
    assert torch.equal(a.weight, b.weight) and a.alpha == b.alpha


def test_hqq_and_imatrix_take_a_scheme():
    from quantlab.algorithms.hqq import hqq_quantize
    from quantlab.algorithms.imatrix import imatrix_quantize

    w, x = _layer(1)
    hqq_scheme = QuantScheme("uint4", PerGroup(32), symmetric=False, zero_point_dtype="fp16")  # HQQ's storage
    a = hqq_quantize(w, hqq_scheme, iters=5)
    assert torch.equal(a.codes, hqq_quantize(w, "uint4", 32, iters=5).codes)
    assert a.bits_per_weight == hqq_scheme.bits_per_weight(tuple(w.shape))
    imp = (x**2).mean(0)
    b = imatrix_quantize(w, imp, QuantScheme("int4", PerGroup(32), scale_dtype="fp32"))
    assert torch.equal(b.codes, imatrix_quantize(w, imp, "int4", 32).codes)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda w, h: __import__("quantlab.algorithms.gptq", fromlist=["x"]).gptq_quantize_weight(
                w, h, QuantScheme("int4", PerTensor())
            ),
            "row by row",
        ),
        (
            lambda w, h: __import__("quantlab.algorithms.gptq", fromlist=["x"]).gptq_quantize_weight(
                w, h, QuantScheme("int4", PerAxis(1))
            ),
            "row by row",
        ),
        (
            lambda w, h: __import__("quantlab.algorithms.gptq", fromlist=["x"]).gptq_quantize_weight(
                w, h, QuantScheme("int4", PerGroup(32)), group_size=64
            ),
            "give group_size inside it",
        ),
        (
            lambda w, h: __import__("quantlab.algorithms.hqq", fromlist=["x"]).hqq_quantize(
                w, QuantScheme("int4", PerGroup(32))
            ),
            "must be symmetric=False",
        ),
        (
            lambda w, h: __import__("quantlab.algorithms.imatrix", fromlist=["x"]).imatrix_quantize(
                w, None, QuantScheme("int4", PerGroup(32), symmetric=False)
            ),
            "must have symmetric=True",
        ),
    ],
)
def test_algorithms_refuse_schemes_they_cannot_make(call, match):
    w, x = _layer(2)
    with pytest.raises(ValueError, match=match):
        call(w, 2 * x.T @ x / x.shape[0])


def test_qat_takes_a_scheme():
    from quantlab.algorithms.qat import FakeQuantLinear, fake_quant_ste, prepare_qat

    w, _ = _layer(3)
    scheme = QuantScheme("int4", PerGroup(16), scale_dtype="bf16")
    keywords = dict(granularity="group", group_size=16, symmetric=True, scale_dtype="bf16")
    assert torch.equal(fake_quant_ste(w, scheme), fake_quant_ste(w, "int4", **keywords))
    assert torch.equal(fake_quant_ste(w, scheme), quantize(w, scheme).dequantize())
    model = prepare_qat(torch.nn.Sequential(torch.nn.Linear(64, 8)), QuantScheme("int8", PerAxis(0)))
    assert model[0].qkwargs == dict(granularity="channel", axis=0, symmetric=True, scale_dtype="fp16")
    with pytest.raises(ValueError, match="give granularity inside it"):
        FakeQuantLinear(64, 8, fmt=scheme, granularity="tensor")


def test_equal_recipes_compare_equal_however_they_are_spelled():
    assert QuantScheme("int8", PerAxis(-2)) == QuantScheme("int8", PerAxis(0))
    assert hash(QuantScheme("int8", PerAxis(-2))) == hash(QuantScheme("int8"))
    assert QuantScheme("int8", axis=-1) == QuantScheme("int8", axis=1)
    assert QuantScheme("int4", "tensor", axis=1) == QuantScheme("int4", "tensor")  # axis means nothing there
    assert QuantScheme("nvfp4", scale_dtype="fp8_e4m3") == QuantScheme("nvfp4")  # its own scales
    assert QuantScheme("fp16", PerTensor(), scale_dtype="fp32") == QuantScheme("fp16")  # a cast stores no scale
    zp_named = QuantScheme("int4", group_size=32, symmetric=False, zero_point_dtype="int4")
    assert zp_named == QuantScheme("int4", group_size=32, symmetric=False)  # the code width either way
    assert QuantScheme("fp16").grain == PerTensor() and QuantScheme("fp16", QuantScheme("fp16").grain).is_cast


@pytest.mark.parametrize(
    "scheme, shape",
    [
        (QuantScheme("int8"), (0, 16)),
        (QuantScheme("nvfp4"), (64, 128)),
        (QuantScheme("int4", PerTensor(), symmetric=False), (64, 128)),
        (QuantScheme("int4"), (3, 5)),
        (QuantScheme("int4", PerAxis(1)), (3, 5)),
        (QuantScheme("int4", PerGroup(32)), (4, 0)),
        (QuantScheme("uint3", PerGroup(8), symmetric=False), (3, 24)),
    ],
    ids=str,
)
def test_bits_per_weight_of_a_shape_is_the_packed_size(scheme, shape):
    """Byte rounding, NVFP4's tensor scale and empty tensors included."""
    q = quantize(torch.randn(*shape, generator=torch.Generator().manual_seed(0)), scheme)
    assert scheme.bits_per_weight(shape) == q.bits_per_weight


def test_the_calculators_recipes_keep_their_answers():
    """Storages quantize() does not make are still counted (fp8 and int8 scales, float zero points)."""
    assert mem.QuantSpec("nvfp4", 16, "fp8_e4m3").bits_per_weight() == 4.5
    assert mem.QuantSpec("int4", 32, "fp8_e4m3").bits_per_weight() == 4.25
    assert mem.QuantSpec("int4", 128, "int8").bits_per_weight() == 4 + 8 / 128
    assert mem.QuantSpec("nf4", 64, "fp16", "fp16").bits_per_weight() == 4.5
    assert mem.QuantSpec("fp4", 32, "fp16", "fp16").bits_per_weight() == 5.0
    with pytest.raises(ValueError, match="quantize\\(\\) stores scales only as"):
        quantize(torch.ones(4, 128), mem.QuantSpec("int4", 128, "int8"))
    for args, match in [
        (("mxfp4", None, "bf16"), "mxfp4 stores its block scales as e8m0"),
        (("nvfp4", None, "fp32"), "nvfp4 stores its block scales as fp8_e4m3"),
        (("fp16", 128), "plain cast without scales, so group_size must be None, got 128"),
    ]:
        with pytest.raises(ValueError, match=match):
            mem.QuantSpec(*args)


def test_schemes_of_codebooks_and_format_objects_round_trip_through_json():
    from quantlab.book.rl import BINARY, policy_scheme
    from quantlab.core.formats import codebook, get_format

    for scheme in [
        policy_scheme(BINARY, "channel"),
        QuantScheme(codebook([-3, -2, -1, 0, 1, 2, 3, 4], "int3"), PerGroup(32)),  # a codebook named like int3
        QuantScheme("int4", PerGroup(32), symmetric=False, zero_point_dtype=get_format("fp16")),
        QuantScheme("nf4", PerGroup(64), double_quant=DoubleQuant(get_format("int8"), np.int64(256))),
    ]:
        back = QuantScheme.from_json(scheme.to_json())
        assert back == scheme and type(back.fmt) is type(scheme.fmt)


def test_algorithms_refuse_what_they_do_not_make():
    from quantlab.algorithms.gptq import gptq_quantize_weight
    from quantlab.algorithms.hqq import hqq_quantize

    w, x = _layer(4)
    h = 2 * x.T @ x / x.shape[0]
    with pytest.raises(ValueError, match="double_quant must be None"):
        gptq_quantize_weight(w, h, QuantScheme("nf4", PerGroup(64), double_quant=True))
    with pytest.raises(ValueError, match="zero_point_dtype must be None, got 'fp16'"):
        gptq_quantize_weight(w, h, QuantScheme("int4", PerGroup(64), symmetric=False, zero_point_dtype="fp16"))
    with pytest.raises(ValueError, match="scale_dtype='int8'"):
        gptq_quantize_weight(w, h, QuantScheme("int4", PerGroup(64), scale_dtype="int8"))
    with pytest.raises(ValueError, match="zero_point_dtype='fp16', got symmetric=False, zero_point_dtype=None"):
        hqq_quantize(w, QuantScheme("int4", PerGroup(64), symmetric=False))


def test_qat_layers_print_and_check_their_scale_dtype():
    from quantlab.algorithms.qat import FakeQuantLinear, prepare_qat

    assert repr(FakeQuantLinear(32, 32, fmt=QuantScheme("fp16"))).endswith("fmt=fp16, cast)")
    assert "blocks of 32" in str(prepare_qat(torch.nn.Sequential(torch.nn.Linear(32, 32)), QuantScheme("mxfp4")))
    with pytest.raises(ValueError, match="scale_dtype must be one of .* got 'xx'"):
        prepare_qat(torch.nn.Sequential(torch.nn.Linear(32, 32)), "int4", scale_dtype="xx")
    with pytest.raises(TypeError, match="scale_dtype must be a string or None, got int 3"):
        FakeQuantLinear(32, 32, fmt="int4", scale_dtype=3)


def test_the_former_device_decoder_name_still_works():
    from quantlab.nn import codes

    assert codes.decoder_for is codes.device_decoder
