"""Tests for quantlab.nn: packed storage, forward equality, sizes, model swap, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import quantlab as ql
from quantlab import memory
from quantlab.nn import (
    QuantizedLinear,
    QuantScheme,
    linear_layers,
    pack_codes,
    quantize_model,
    quantized_layers,
    size_report,
    unpack_codes,
)

SCHEMES = [
    QuantScheme("int8"),
    QuantScheme("int8", granularity="tensor"),
    QuantScheme("int8", axis=1),
    QuantScheme("int4"),
    QuantScheme("int4", group_size=32),
    QuantScheme("int4", group_size=64, symmetric=False, granularity="group"),
    QuantScheme("uint4", group_size=32, symmetric=False),
    QuantScheme("int3", group_size=32),
    QuantScheme("int2", scale_dtype="bf16"),
    QuantScheme("nf4", group_size=64, scale_dtype="fp32"),
    QuantScheme("fp8_e4m3", granularity="tensor", scale_dtype="fp32"),
    QuantScheme("fp4_e2m1", group_size=32),
    QuantScheme("fp16"),
    QuantScheme("bf16"),
    QuantScheme("fp32"),
]


def _linear(out_f: int = 24, in_f: int = 64, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        lin.weight[0, 0] = 0.9  # an outlier
    return lin


# ----------------------------------------------------------------- packing


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8, 16])
@pytest.mark.parametrize("signed", [False, True])
def test_pack_codes_matches_library_pack(bits, signed):
    g = torch.Generator().manual_seed(bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    codes = torch.randint(lo, hi + 1, (37,), generator=g, dtype=torch.int32)
    fast = pack_codes(codes, bits)
    assert fast.dtype == torch.uint8
    assert torch.equal(fast, ql.pack(codes, bits))
    back = unpack_codes(fast, bits, 37, signed)
    assert torch.equal(back.to(torch.int32), codes)


def test_known_nibble_layout():
    # element 2i in the low nibble, 2i+1 in the high nibble; -1 is 0xF in two's complement
    packed = pack_codes(torch.tensor([1, 2, -1, 7], dtype=torch.int8), 4)
    assert packed.tolist() == [0x21, 0x7F]
    assert unpack_codes(packed, 4, 4, signed=True).tolist() == [1, 2, -1, 7]


# ----------------------------------------------------------------- one layer


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.label)
def test_forward_equals_linear_with_dequantized_weight(scheme):
    lin = _linear()
    q = QuantizedLinear.from_linear(lin, scheme)
    qt = scheme.quantize(lin.weight.detach())
    w_hat = qt.dequantize()
    assert torch.equal(q.dequantize_weight(), w_hat)
    x = torch.randn(5, 3, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(q(x), F.linear(x, w_hat, lin.bias))


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.label)
def test_nbytes_equals_qtensor_and_stored_buffers(scheme):
    lin = _linear()
    q = QuantizedLinear.from_linear(lin, scheme)
    qt = scheme.quantize(lin.weight.detach())
    assert q.weight_nbytes == qt.nbytes
    stored = sum(b.numel() * b.element_size() for b in q.buffers())
    assert q.nbytes == stored == qt.nbytes + 24 * 4
    assert q.packed.dtype == torch.uint8
    assert not any(p.numel() for p in q.parameters())  # nothing float is kept besides buffers


@pytest.mark.parametrize(
    "scheme, calc",
    [
        (QuantScheme("int4", group_size=128), dict(fmt="int4", group_size=128, scale_dtype="fp16")),
        (QuantScheme("int4", group_size=32), dict(fmt="int4", group_size=32, scale_dtype="fp16")),
        (QuantScheme("int8"), dict(fmt="int8", group_size=512, scale_dtype="fp16")),
        (QuantScheme("nf4", group_size=64, scale_dtype="fp32"), dict(fmt="nf4", group_size=64, scale_dtype="fp32")),
        (QuantScheme("int3", group_size=128, scale_dtype="bf16"), dict(fmt="int3", group_size=128, scale_dtype="bf16")),
        (
            QuantScheme("uint4", group_size=128, symmetric=False),
            dict(fmt="uint4", group_size=128, scale_dtype="fp16", zero_point_dtype="uint4"),
        ),
        (QuantScheme("fp16"), dict(fmt="fp16")),
        (QuantScheme("bf16"), dict(fmt="bf16")),
        (QuantScheme("fp32"), dict(fmt="fp32")),
    ],
    ids=lambda v: v.label if isinstance(v, QuantScheme) else "",
)
def test_packed_nbytes_equals_memory_calculator_exactly(scheme, calc):
    lin = _linear(out_f=96, in_f=512, bias=False)
    q = QuantizedLinear.from_linear(lin, scheme)
    assert q.weight_nbytes == memory.weight_bytes(96 * 512, **calc)


def test_int4_g128_is_4_125_bits_and_q4_0_like_is_4_5():
    lin = _linear(out_f=64, in_f=256, bias=False)
    assert QuantizedLinear.from_linear(lin, QuantScheme("int4", group_size=128)).bits_per_weight == 4.125
    assert QuantizedLinear.from_linear(lin, QuantScheme("int4", group_size=32)).bits_per_weight == 4.5


def test_fp16_cast_stores_the_fp16_bit_patterns():
    lin = _linear()
    q = QuantizedLinear.from_linear(lin, "fp16")
    assert torch.equal(q.packed, lin.weight.detach().to(torch.float16).view(torch.uint8).reshape(-1))
    qt = ql.quantize(lin.weight.detach(), "fp16")
    assert torch.equal(q.packed, ql.pack(qt.codes, 16))
    assert torch.equal(q.dequantize_weight(), lin.weight.detach().half().float())


def test_scales_are_stored_at_their_dtype():
    lin = _linear()
    assert QuantizedLinear.from_linear(lin, QuantScheme("int4", group_size=32)).scale.dtype == torch.float16
    assert QuantizedLinear.from_linear(lin, QuantScheme("int4", scale_dtype="bf16")).scale.dtype == torch.bfloat16
    assert QuantizedLinear.from_linear(lin, QuantScheme("int4", scale_dtype="fp32")).scale.dtype == torch.float32


def test_known_answer_int8_per_channel():
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.27, -0.5], [0.02, -2.54]]))
    q = QuantizedLinear.from_linear(lin, QuantScheme("int8", scale_dtype="fp32"))
    # row 0: scale 0.01, codes 127, -50; row 1: scale 0.02, codes 1, -127
    assert q.codes().tolist() == [[127, -50], [1, -127]]
    assert torch.allclose(q.scale, torch.tensor([0.01, 0.02]))
    assert q.packed.tolist() == [127, 256 - 50, 1, 256 - 127]


def test_from_qtensor_and_to_qtensor_round_trip():
    w = _linear().weight.detach()
    qt = ql.quantize(w, "uint4", granularity="group", group_size=16, symmetric=False)
    q = QuantizedLinear.from_qtensor(qt, bias=None)
    back = q.to_qtensor()
    assert torch.equal(back.codes.to(torch.int32), qt.codes.to(torch.int32))
    assert torch.equal(back.zero_point, qt.zero_point)
    assert torch.equal(back.dequantize(), qt.dequantize())
    assert back.nbytes == qt.nbytes == q.weight_nbytes


def test_from_weight_recovers_codes_of_a_weight_on_the_grid():
    w = _linear().weight.detach()
    qp = ql.choose_qparams(w, "int4", granularity="group", group_size=32, scale_dtype="fp16")
    w_grid = ql.quantize(w, "int4", qparams=qp).dequantize()  # e.g. what GPTQ returns
    q = QuantizedLinear.from_weight(w_grid, qp)
    assert torch.equal(q.dequantize_weight(), w_grid)


def test_forward_in_bfloat16_and_state_dict_round_trip():
    lin = _linear()
    q = QuantizedLinear.from_linear(lin, QuantScheme("int4", group_size=32))
    x = torch.randn(4, 64)
    assert q(x.bfloat16()).dtype == torch.bfloat16
    q2 = QuantizedLinear.from_linear(_linear(seed=5), QuantScheme("int4", group_size=32))
    q2.load_state_dict(q.state_dict())
    assert torch.equal(q2(x), q(x))


@settings(max_examples=25, deadline=None)
@given(
    out_f=st.integers(1, 8),
    groups=st.integers(1, 4),
    bits=st.sampled_from([2, 3, 4, 8]),
    seed=st.integers(0, 2**16),
)
def test_property_dequantized_weight_matches_qtensor(out_f, groups, bits, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, 16 * groups, generator=g)
    scheme = QuantScheme(f"int{bits}", group_size=16)
    qt = scheme.quantize(w)
    q = QuantizedLinear.from_qtensor(qt)
    assert torch.equal(q.dequantize_weight(), qt.dequantize())
    assert q.weight_nbytes == qt.nbytes
    step = qt.scale.max()
    assert float((q.dequantize_weight() - w).abs().max()) <= float(step) / 2 + 1e-6


# ----------------------------------------------------------------- whole models


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def test_quantize_model_replaces_every_linear_and_shrinks_as_expected():
    model = _mlp()
    before = size_report(model)
    assert before.total_before == before.total_after == sum(p.numel() * 4 for p in model.parameters())
    q = quantize_model(model, QuantScheme("int4", group_size=32), progress=False)
    assert q is model
    assert not linear_layers(q) and len(quantized_layers(q)) == 3
    rep = size_report(q)
    n_w = 64 * 128 + 128 * 64 + 64 * 10
    n_b = 128 + 64 + 10
    assert rep.linear_after == n_w * 4.5 / 8 + n_b * 4
    assert rep.linear_before == (n_w + n_b) * 4
    assert rep.total_before == before.total_before
    assert [r.name for r in rep.layers] == ["0", "2", "4"]
    assert "total" in str(rep)


def test_quantize_model_copy_skip_and_outputs():
    model = _mlp()
    x = torch.randn(8, 64)
    ref = model(x)
    q = quantize_model(model, "int8", skip=("4",), inplace=False, progress=False)
    assert torch.equal(model(x), ref)  # the original is untouched
    assert isinstance(q[4], nn.Linear) and isinstance(q[0], QuantizedLinear)
    cos = F.cosine_similarity(q(x).flatten(), ref.flatten(), dim=0)
    assert cos > 0.999
    assert size_report(q).layers[2].after == size_report(q).layers[2].before


def test_quantize_model_layer_fn_and_callable_skip():
    model = _mlp()
    calls = []

    def layer_fn(name, lin):
        calls.append(name)
        return QuantizedLinear.from_linear(lin, "int8")

    quantize_model(model, "int4", skip=lambda n, m: m.out_features == 10, layer_fn=layer_fn, progress=False)
    assert calls == ["0", "2"]
    assert quantized_layers(model)[0][1].format.name == "int8"


def test_tied_weights_counted_once():
    emb = nn.Embedding(50, 16)
    head = nn.Linear(16, 50, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "lm_head": head, "proj": nn.Linear(16, 16)})
    rep = size_report(model)
    assert rep.total_before == (50 * 16 + 16 * 16 + 16) * 4
    quantize_model(model, "int8", progress=False)  # lm_head skipped by default
    assert isinstance(model["lm_head"], nn.Linear)


# ----------------------------------------------------------------- errors


def test_scheme_errors():
    with pytest.raises(ValueError, match="scale_dtype"):
        QuantScheme("int4", scale_dtype="fp8")
    with pytest.raises(ValueError, match="granularity"):
        QuantScheme("int4", granularity="row")
    with pytest.raises(ValueError, match="group_size=32 needs granularity='group'"):
        QuantScheme("int4", granularity="channel", group_size=32)
    with pytest.raises(ValueError, match="needs group_size"):
        QuantScheme("int4", granularity="group")
    with pytest.raises(ValueError, match="plain cast"):
        QuantScheme("fp16", granularity="channel")
    with pytest.raises(ValueError, match="axis"):
        QuantScheme("int4", axis=2)
    with pytest.raises(ValueError, match="unknown format"):
        QuantScheme("int99x")


def test_layer_and_model_errors():
    lin = _linear()
    with pytest.raises(TypeError, match="linear must be an nn.Linear"):
        QuantizedLinear.from_linear(nn.Conv1d(2, 2, 1), "int8")
    with pytest.raises(TypeError, match="qt must be a QTensor"):
        QuantizedLinear(lin.weight)
    with pytest.raises(ValueError, match="2-D weight"):
        QuantizedLinear(ql.quantize(torch.randn(8), "int8"))
    with pytest.raises(ValueError, match=r"bias must have shape \(24,\)"):
        QuantizedLinear(ql.quantize(lin.weight.detach(), "int8"), torch.zeros(3))
    with pytest.raises(TypeError, match="bias must be a torch.Tensor"):
        QuantizedLinear(ql.quantize(lin.weight.detach(), "int8"), np.zeros(24))
    with pytest.raises(TypeError, match="qparams must be a QParams"):
        QuantizedLinear.from_weight(lin.weight, {"scale": 1})
    with pytest.raises(TypeError, match="scheme must be"):
        quantize_model(_mlp(), 4)
    with pytest.raises(TypeError, match="model must be a torch nn.Module"):
        quantize_model("model", "int8")
    with pytest.raises(TypeError, match="model must be a torch nn.Module"):
        size_report(None)
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        quantize_model(_mlp(), "int8", skip=("*",), progress=False)
    with pytest.raises(TypeError, match="skip must be"):
        quantize_model(_mlp(), "int8", skip=(1, 2), progress=False)
    with pytest.raises(ValueError, match="group_size must divide"):
        QuantizedLinear.from_linear(_linear(in_f=60), QuantScheme("int4", group_size=32))


# ----------------------------------------------------------------- GPTQ / AWQ results


def test_input_scale_multiplies_the_input_and_is_counted():
    lin = _linear()
    qt = ql.quantize(lin.weight.detach(), "int4", granularity="group", group_size=32)
    s = torch.linspace(0.5, 2.0, 64)
    q = QuantizedLinear.from_qtensor(qt, lin.bias, input_scale=s)
    x = torch.randn(3, 64)
    assert torch.allclose(q(x), F.linear(x * s, qt.dequantize(), lin.bias))
    assert q.nbytes == qt.nbytes + 24 * 4 + 64 * 4
    with pytest.raises(ValueError, match=r"input_scale must have shape \(64,\)"):
        QuantizedLinear(qt, None, torch.ones(3))
    with pytest.raises(TypeError, match="input_scale must be a torch.Tensor"):
        QuantizedLinear(qt, None, [1.0] * 64)


def test_install_results_from_gptq_and_awq():
    from quantlab.awq import awq_quantize_model
    from quantlab.gptq import gptq_quantize_model

    torch.manual_seed(0)
    x = torch.randn(256, 64)
    run = lambda m: m(x)  # noqa: E731
    # GPTQ: the packed layers compute exactly what GPTQ's fake-quantized weights compute
    ref = _mlp()
    fake = copy.deepcopy(ref)
    res = gptq_quantize_model(fake, run, "int4", group_size=32, scale_dtype="fp16", progress=False)
    packed = ql.nn.install_results(copy.deepcopy(ref), res)
    assert len(quantized_layers(packed)) == 3
    assert torch.allclose(packed(x), fake(x), atol=1e-5)
    assert (
        size_report(packed).linear_after
        == size_report(
            quantize_model(copy.deepcopy(ref), QuantScheme("int4", group_size=32), progress=False)
        ).linear_after
    )
    # AWQ: two layers sharing one input share one result and its 1/s
    twin = nn.ModuleDict({"a": nn.Linear(64, 16), "b": nn.Linear(64, 8)})
    run2 = lambda m: (m["a"](x), m["b"](x))  # noqa: E731
    fake2 = copy.deepcopy(twin)
    res2 = awq_quantize_model(fake2, run2, "int4", group_size=32, progress=False)
    assert res2["a"] is res2["b"]
    packed2 = ql.nn.install_results(copy.deepcopy(twin), res2)
    for name in ("a", "b"):
        assert packed2[name].input_scale is not None
        assert torch.allclose(packed2[name](x), fake2[name](x), atol=1e-4)


def test_install_results_errors():
    model = _mlp()
    qt = ql.quantize(torch.randn(128, 64), "int8")
    with pytest.raises(ValueError, match="not an nn.Linear"):
        ql.nn.install_results(model, {"1": qt})
    with pytest.raises(ValueError, match="shape"):
        ql.nn.install_results(model, {"2": qt})
    with pytest.raises(TypeError, match="must be a QTensor or a GPTQ/AWQ result"):
        ql.nn.install_results(model, {"0": "codes"})
    with pytest.raises(TypeError, match="model must be"):
        ql.nn.install_results(None, {})
    ql.nn.install_results(model, {"0": qt})
    assert isinstance(model[0], QuantizedLinear)


def test_docstring_examples_run():
    import doctest

    import quantlab.core.scheme
    import quantlab.nn

    result = doctest.testmod(quantlab.core.scheme)  # the recipe nn takes
    assert result.attempted > 0 and result.failed == 0
    assert doctest.testmod(quantlab.nn).failed == 0
