"""Tests for quantlab.nn's storage: one packed representation, devices, state dicts,
safetensors files, and the layer/model edge cases (shared modules, empty layers, errors)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import quantlab as ql
from quantlab.nn import (
    FILE_VERSION,
    QuantizedLinear,
    QuantScheme,
    load_quantized,
    pack_codes,
    quantize_model,
    quantized_layers,
    save_quantized,
    size_report,
    unpack_codes,
)

SCHEMES = [
    QuantScheme("int8"),
    QuantScheme("int8", axis=1),
    QuantScheme("int4"),
    QuantScheme("int4", group_size=32),
    QuantScheme("uint4", group_size=16, symmetric=False),
    QuantScheme("int3", group_size=32, scale_dtype="bf16"),
    QuantScheme("nf4", group_size=64, scale_dtype="fp32"),
    QuantScheme("fp8_e4m3", granularity="tensor", scale_dtype="fp32"),
    QuantScheme("fp4_e2m1", group_size=32),
    QuantScheme("fp16"),
    QuantScheme("fp32"),
]


def _linear(out_f: int = 24, in_f: int = 64, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias)


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class _Net(nn.Module):
    """Four Linear layers, a norm and an embedding-like parameter."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.up = nn.Linear(32, 64)
        self.norm = nn.LayerNorm(64)
        self.mid = nn.ModuleDict({"a": nn.Linear(64, 64, bias=False), "b": nn.Linear(64, 48)})
        self.head = nn.Linear(48, 10)
        self.offset = nn.Parameter(torch.randn(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.up(x))
        h = self.mid["b"](torch.relu(self.mid["a"](h)))
        return self.head(h) + self.offset


def _mixed(model: nn.Module) -> nn.Module:
    """Quantize ``_Net`` with a different scheme per layer (and keep ``head`` in float)."""
    schemes = {
        "up": QuantScheme("int4", group_size=16),
        "mid.a": QuantScheme("nf4", group_size=32),
        "mid.b": QuantScheme("fp8_e4m3", scale_dtype="bf16"),
    }
    return quantize_model(
        model, skip=("head",), progress=False, layer_fn=lambda n, lin: QuantizedLinear.from_linear(lin, schemes[n])
    )


# ----------------------------------------------------------------- one representation


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.label)
def test_layer_is_a_packed_qtensor(scheme):
    lin = _linear()
    q = QuantizedLinear.from_linear(lin, scheme)
    qt = q.to_qtensor()
    assert torch.equal(q.dequantize_weight(), ql.dequantize(qt))
    assert q.weight_nbytes == qt.nbytes
    stored = [q.packed] + [t for t in (q.scale, q.zero_point) if t is not None]
    assert q.weight_nbytes == sum(t.numel() * t.element_size() for t in stored)
    assert torch.equal(q.packed, pack_codes(qt.codes, qt.format.bits))
    assert q.scheme.label == scheme.label
    assert torch.equal(QuantizedLinear.from_qtensor(qt, lin.bias)(_x(3, 64)), q(_x(3, 64)))


def test_pack_and_unpack_codes_numpy_in_numpy_out():
    codes = np.array([1, -2, 3, -4, 0], dtype=np.int8)
    for bits in (4, 8, 16):
        packed = pack_codes(codes, bits)
        assert isinstance(packed, np.ndarray) and packed.dtype == np.uint8
        assert np.array_equal(packed, pack_codes(torch.from_numpy(codes), bits).numpy())
        back = unpack_codes(packed, bits, 5, signed=True)
        assert isinstance(back, np.ndarray) and back.astype(np.int64).tolist() == codes.tolist()


def test_unpack_off_the_cpu_matches_library_unpack():
    """The tensor-operation path that unpacks codes off the CPU gives the CPU's codes."""
    from quantlab.core.packing import _unpack_bitstream

    g = torch.Generator().manual_seed(0)
    for bits in (1, 2, 3, 4, 5, 7):
        for signed in (False, True):
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1))) if signed else (0, 1 << bits)
            codes = torch.randint(lo, hi, (41,), generator=g)
            packed = ql.pack(codes, bits)
            want = ql.unpack(packed, bits, 41, signed)
            assert torch.equal(_unpack_bitstream(packed, bits, 41, signed), want)


def test_forward_numpy_in_numpy_out():
    q = QuantizedLinear.from_linear(_linear(), "int8")
    x = _x(3, 64)
    y = q(x.numpy())
    assert isinstance(y, np.ndarray) and np.array_equal(y, q(x).numpy())


# ----------------------------------------------------------------- devices and dtypes


@pytest.mark.parametrize(
    "scheme",
    [
        QuantScheme("int4", group_size=32),
        QuantScheme("nf4", group_size=32),
        QuantScheme("fp8_e4m3"),
        QuantScheme("bf16"),
        QuantScheme("int8"),
    ],
    ids=lambda s: s.label,
)
def test_meta_device_and_back(scheme):
    q = QuantizedLinear.from_linear(_linear(), scheme)
    x = _x(5, 64)
    ref, sd, nbytes = q(x), q.state_dict(), q.nbytes
    dtypes = {n: b.dtype for n, b in q.named_buffers()}
    q.to("meta")
    assert all(b.device.type == "meta" for b in q.buffers())
    assert {n: b.dtype for n, b in q.named_buffers()} == dtypes
    assert q.nbytes == nbytes
    y = q(x.to("meta"))
    assert y.device.type == "meta" and y.shape == (5, 24)
    q.to_empty(device="cpu")
    q.load_state_dict(sd)
    assert torch.equal(q(x), ref)


def test_dtype_conversion_keeps_codes_and_scales():
    q = QuantizedLinear.from_linear(_linear(), QuantScheme("int4", group_size=32, scale_dtype="fp32"))
    x = _x(4, 64)
    ref = q(x)
    scale = q.scale.clone()
    q.half()
    assert q.scale.dtype == torch.float32 and torch.equal(q.scale, scale)  # the scheme's dtype
    assert q.bias.dtype == torch.float16  # the bias follows, as nn.Linear's would
    assert q(x.half()).dtype == torch.float16
    q.float()
    assert torch.allclose(q(x), ref, atol=1e-2)
    assert q.to(torch.float64)(x.double()).dtype == torch.float64


# ----------------------------------------------------------------- state dicts


def test_state_dict_records_the_scheme_and_refuses_another():
    nf4 = quantize_model(_Net(), QuantScheme("nf4", group_size=16), progress=False, skip=None)
    int4 = quantize_model(_Net(), QuantScheme("int4", group_size=16), progress=False, skip=None)
    x = _x(2, 32)
    before = int4(x)
    sd = nf4.state_dict()
    rec = json.loads(bytes(sd["up._extra_state"].tolist()))
    assert rec["format"] == {"name": "nf4"} and rec["group_size"] == 16 and rec["quantlab.nn"] == FILE_VERSION
    match = r"layer 'up'.*nf4 g16 layer.*int4 g16.*format: 'nf4' in the state dict, 'int4' in this layer"
    with pytest.raises(ValueError, match=match):
        int4.load_state_dict(sd)
    assert torch.equal(int4(x), before)  # nothing was copied
    again = quantize_model(_Net(seed=3), QuantScheme("nf4", group_size=16), progress=False, skip=None)
    again.load_state_dict(sd)  # the same scheme loads
    assert torch.equal(again(x), nf4(x))
    other_group = quantize_model(_Net(), QuantScheme("nf4", group_size=8), progress=False, skip=None)
    with pytest.raises(ValueError, match="group_size: 16 in the state dict, 8 in this layer"):
        other_group.load_state_dict(sd)


def test_state_dict_round_trips_through_torch_save(tmp_path):
    q = QuantizedLinear.from_linear(_linear(), QuantScheme("uint4", group_size=16, symmetric=False))
    torch.save(q.state_dict(), tmp_path / "q.pt")
    sd = torch.load(tmp_path / "q.pt", weights_only=True)
    q2 = QuantizedLinear.from_linear(_linear(seed=4), QuantScheme("uint4", group_size=16, symmetric=False))
    q2.load_state_dict(sd)
    assert torch.equal(q2(_x(3, 64)), q(_x(3, 64)))
    bad = dict(sd, _extra_state=torch.tensor(list(b'{"quantlab.nn": 99}'), dtype=torch.uint8))
    with pytest.raises(ValueError, match="version 99"):
        q2.load_state_dict(bad)


# ----------------------------------------------------------------- files


def test_save_and_load_mixed_schemes_bit_for_bit(tmp_path):
    model = _mixed(_Net())
    model.mid["a"] = QuantizedLinear.from_qtensor(
        ql.quantize(model.mid["a"].dequantize_weight(), "uint3", granularity="group", group_size=8, symmetric=False),
        input_scale=torch.linspace(0.5, 2, 64),
    )
    x = _x(7, 32)
    ref = model(x)
    path = tmp_path / "model.safetensors"
    save_quantized(model, path)
    fresh = _Net(seed=0)  # same architecture; other parameters are this model's own
    out = load_quantized(fresh, path)
    assert out is fresh
    assert torch.equal(fresh(x), ref)
    assert isinstance(fresh.head, nn.Linear)
    for name, layer in quantized_layers(fresh):
        old = model.get_submodule(name)
        assert layer._layout == old._layout and layer.scheme == old.scheme
        assert layer.nbytes == old.nbytes
    tensors = load_file(path)
    assert tensors["up.packed"].dtype == torch.uint8 and tensors["mid.b.scale"].dtype == torch.bfloat16
    assert "mid.a.input_scale" in tensors and "mid.a.zero_point" in tensors


def test_load_takes_other_parameters_from_the_given_model(tmp_path):
    model = _mixed(_Net())
    save_quantized(model, tmp_path / "m.safetensors")
    other = _Net(seed=9)
    load_quantized(other, tmp_path / "m.safetensors")
    assert torch.equal(other.offset, _Net(seed=9).offset)
    assert torch.equal(other.up.packed, model.up.packed)


def test_load_into_a_meta_model(tmp_path):
    model = _mixed(_Net())
    save_quantized(model, tmp_path / "m.safetensors")
    with torch.device("meta"):
        skeleton = _Net()
    load_quantized(skeleton, tmp_path / "m.safetensors")
    assert skeleton.up.packed.device.type == "cpu"
    assert torch.equal(skeleton.up.packed, model.up.packed)


def test_custom_codebook_format_round_trips(tmp_path):
    fmt = ql.codebook([-1.0, -0.25, 0.0, 0.5, 1.0], "five")
    qt = ql.quantize(_linear().weight.detach(), fmt, granularity="channel")
    model = nn.Sequential(QuantizedLinear.from_qtensor(qt))
    save_quantized(model, tmp_path / "c.safetensors")
    back = load_quantized(nn.Sequential(nn.Linear(64, 24, bias=False)), tmp_path / "c.safetensors")
    assert back[0].format == fmt
    assert torch.equal(back(_x(2, 64)), model(_x(2, 64)))


def test_load_errors_name_the_layer(tmp_path):
    path = tmp_path / "m.safetensors"
    save_quantized(_mixed(_Net()), path)

    missing = _Net()
    del missing.mid["b"]
    with pytest.raises(ValueError, match=r"layer 'mid.b' of the file is not in the model"):
        load_quantized(missing, path)
    wider = _Net()
    wider.up = nn.Linear(32, 80)
    with pytest.raises(ValueError, match=r"layer 'up'.*shape \(64, 32\).*\(80, 32\)"):
        load_quantized(wider, path)
    no_bias = _Net()
    no_bias.mid["b"] = nn.Linear(64, 48, bias=False)
    with pytest.raises(ValueError, match=r"layer 'mid.b'.*a bias.*no bias"):
        load_quantized(no_bias, path)
    conv = _Net()
    conv.up = nn.Conv1d(32, 64, 1)
    with pytest.raises(ValueError, match=r"layer 'up'.*Conv1d"):
        load_quantized(conv, path)
    wider_late = _Net()
    wider_late.mid["b"] = nn.Linear(64, 40)
    with pytest.raises(ValueError, match="mid.b"):
        load_quantized(wider_late, path)
    assert isinstance(wider_late.mid["a"], nn.Linear)  # checked before anything was replaced


def test_load_refuses_foreign_and_other_version_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, plain)
    with pytest.raises(ValueError, match="not written by quantlab.nn.save_quantized"):
        load_quantized(_Net(), plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_quantized(_Net(), junk)
    path = tmp_path / "m.safetensors"
    save_quantized(_mixed(_Net()), path)
    tensors = load_file(path)
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    save_file(tensors, tmp_path / "v2.safetensors", metadata=dict(meta, **{"quantlab.version": "2"}))
    with pytest.raises(ValueError, match="version '2'.*reads version 1"):
        load_quantized(_Net(), tmp_path / "v2.safetensors")
    del tensors["up.scale"]
    save_file(tensors, tmp_path / "short.safetensors", metadata=meta)
    with pytest.raises(ValueError, match=r"layer 'up'.*'up.scale' is missing"):
        load_quantized(_Net(), tmp_path / "short.safetensors")
    with pytest.raises(FileNotFoundError):
        load_quantized(_Net(), tmp_path / "nothing.safetensors")
    with pytest.raises(TypeError, match="path must be"):
        load_quantized(_Net(), 3)
    with pytest.raises(ValueError, match="no QuantizedLinear layer"):
        save_quantized(_Net(), path)


# ----------------------------------------------------------------- shared modules


class _Shared(nn.Module):
    """One Linear module registered under two names and called twice."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(16, 32)
        self.block = nn.Linear(32, 32)
        self.again = self.block
        self.out = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.again(torch.relu(self.block(self.inp(x)))))


def test_a_shared_linear_is_replaced_everywhere_and_counted_once(tmp_path):
    model = _Shared()
    scheme = QuantScheme("int4", group_size=16)
    quantize_model(model, scheme, progress=False)
    assert model.block is model.again and isinstance(model.block, QuantizedLinear)
    rep = size_report(model)
    assert [r.name for r in rep.layers] == ["inp", "block", "out"]
    w = {n: QuantizedLinear.from_linear(getattr(_Shared(), n), scheme) for n in ("inp", "block", "out")}
    x = _x(3, 16)
    assert torch.equal(model(x), w["out"](w["block"](torch.relu(w["block"](w["inp"](x))))))
    assert rep.linear_after == sum(q.nbytes for q in w.values())
    # saved once, loaded shared
    save_quantized(model, tmp_path / "s.safetensors")
    assert "again.packed" not in load_file(tmp_path / "s.safetensors")
    fresh = load_quantized(_Shared(), tmp_path / "s.safetensors")
    assert fresh.block is fresh.again and torch.equal(fresh(x), model(x))
    unshared = _Shared()
    unshared.again = nn.Linear(32, 32)
    with pytest.raises(ValueError, match="shared with 'again'"):
        load_quantized(unshared, tmp_path / "s.safetensors")


def test_install_results_replaces_a_shared_linear_everywhere():
    model = _Shared()
    qt = ql.quantize(model.block.weight.detach(), "int8", granularity="channel")
    ql.nn.install_results(model, {"again": qt})
    assert model.block is model.again and isinstance(model.block, QuantizedLinear)
    with pytest.raises(ValueError, match="same shared module"):
        ql.nn.install_results(_Shared(), {"block": qt, "again": qt})


# ----------------------------------------------------------------- edge cases and errors


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("fmt", ["int8", "int4", "nf4", "fp16"])
@pytest.mark.parametrize("shape", [(0, 64), (24, 0)])
def test_empty_layers_work(fmt, shape):
    lin = nn.Linear(shape[1], shape[0])
    q = QuantizedLinear.from_linear(lin, fmt)
    x = _x(2, shape[1])
    y = q(x)
    assert y.shape == (2, shape[0]) and torch.equal(y, lin(x).detach())
    assert q.bits_per_weight == ql.get_format(fmt).bits  # no weights: the format's bits
    assert "bits_per_weight" in repr(q)
    model = quantize_model(nn.Sequential(lin, nn.ReLU()), fmt, progress=False)
    assert size_report(model).layers[0].shape == shape


def test_quantize_model_errors_name_the_layer():
    model = nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 8))  # 8 inputs: g32 cannot divide them
    with pytest.raises(ValueError, match=r"layer '1': .*group_size") as info:
        quantize_model(model, QuantScheme("int4", group_size=32), progress=False)
    assert isinstance(info.value.__cause__, ValueError)

    def failing(name, lin):
        raise KeyError("no codes")

    with pytest.raises(KeyError, match="layer '0'"):
        quantize_model(nn.Sequential(nn.Linear(4, 4)), layer_fn=failing, progress=False)
    with pytest.raises(TypeError, match="layer_fn must return an nn.Module.*'0'"):
        quantize_model(nn.Sequential(nn.Linear(4, 4)), layer_fn=lambda n, m: None, progress=False)
    with pytest.raises(TypeError, match="inplace must be True or False"):
        quantize_model(nn.Sequential(nn.Linear(4, 4)), inplace="no", progress=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(group_size=0), ValueError, "group_size must be a positive int, got 0"),
        (dict(group_size=-8), ValueError, "group_size must be a positive int, got -8"),
        (dict(group_size="32"), TypeError, "group_size must be a positive int or None, got str '32'"),
        (dict(group_size=32.0), TypeError, "group_size .* got float 32.0"),
        (dict(group_size=True), TypeError, "group_size .* got bool True"),
        (dict(symmetric="no"), TypeError, "symmetric must be True or False, got str 'no'"),
        (dict(symmetric=0), TypeError, "symmetric must be True or False, got int 0"),
        (dict(axis=1.0), TypeError, "axis must be an int, got float 1.0"),
        (dict(axis=True), TypeError, "axis must be an int, got bool True"),
        (dict(scale_dtype=16), TypeError, "scale_dtype must be a string, got int 16"),
        (
            dict(granularity=1),
            TypeError,
            r"granularity must be PerTensor\(\), PerAxis\(axis\), PerGroup\(group_size\), a name or None, got int 1",
        ),
    ],
)
def test_scheme_refuses_look_alike_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        QuantScheme("int4", **kwargs)


def test_scheme_normalises_numpy_values_and_refuses_asymmetric_floats():
    s = QuantScheme("int4", group_size=np.int64(32), symmetric=np.bool_(False))
    assert s.group_size == 32 and type(s.group_size) is int and s.symmetric is False
    with pytest.raises(
        ValueError, match="symmetric=False .* needs an integer format, or real-valued zero points.*got fmt='nf4'"
    ):
        QuantScheme("nf4", symmetric=False)


def test_sparse_and_meta_weights_are_refused_clearly():
    lin = _linear()
    sparse = copy.deepcopy(lin)
    sparse.weight = nn.Parameter(lin.weight.detach().to_sparse())
    with pytest.raises(TypeError, match="linear.weight must be a dense tensor, got layout torch.sparse_coo"):
        QuantizedLinear.from_linear(sparse, "int8")
    with pytest.raises(TypeError, match=r"layer '0': linear.weight must be a dense tensor"):
        quantize_model(nn.Sequential(sparse), "int8", progress=False)
    meta = copy.deepcopy(lin).to("meta")
    with pytest.raises(ValueError, match="linear.weight is on the meta device"):
        QuantizedLinear.from_linear(meta, "int8")
    qt = ql.quantize(lin.weight.detach(), "int8")
    qt.codes = qt.codes.to_sparse()
    with pytest.raises(TypeError, match="qt.codes must be a dense tensor"):
        QuantizedLinear.from_qtensor(qt)
