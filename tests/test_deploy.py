"""quantlab.deploy: quantized layers exported to ONNX Runtime's integer kernels.

Every export is run by ONNX Runtime and compared with the quantized torch model: per
element against :func:`quantlab.deploy.activation_error_bound` (the worst case of the
kernels' activation rounding; the weights are the same codes on both sides), and in
relative (Frobenius) error. The op types of the written file are asserted, so a silent
float fallback fails.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from quantlab.deploy import (  # noqa: E402
    DEFAULT_ACCURACY_LEVEL,
    activation_error_bound,
    export_onnx,
    export_plan,
    ort_session,
)
from quantlab.nn import QuantizedLinear, QuantScheme, quantize_model, quantized_layers  # noqa: E402

# Relative error ||y_ort - y_torch|| / ||y_torch||: measured 0.55-0.7% for one layer on
# Gaussian inputs, 0.2-0.7% through the small models below.
REL_LAYER = 0.015
REL_MODEL = 0.02
# With outlier channels in x, MatMulInteger's one activation step for all of x gets coarse
# (measured 1.7-3.7% on MiniLM's real activations, 3.9% on the inputs below); MatMulNBits
# rounds x per block of g inputs (measured 0.2-1.4% real, 0.9% g32 / 1.8% g128 below).
REL_OUTLIERS = {"MatMulInteger": 0.08, "MatMulNBits": 0.04}
# accuracy_level=0 multiplies in float: only summation order differs.
REL_FLOAT = 1e-5
FLOAT_OPS = {"MatMul", "Gemm"}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _nodes(path, op_type: str) -> list:
    return [n for n in onnx.load(str(path)).graph.node if n.op_type == op_type]


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _init(path, name: str) -> np.ndarray:
    for t in onnx.load(str(path)).graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    raise KeyError(name)


def _run(path, x: torch.Tensor, name: str = "input") -> np.ndarray:
    return ort_session(path).run(None, {name: x.numpy()})[0]


def _one_layer(scheme, in_f=256, out_f=96, bias=True, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict(fc=nn.Linear(in_f, out_f, bias=bias)))
    return quantize_model(model, scheme, progress=False)


def _check_layer(model: nn.Module, x: torch.Tensor, y_ort: np.ndarray, accuracy_level: int = 4):
    """Per element within the activation-rounding bound (1% margin + float rounding)."""
    ((_, layer),) = quantized_layers(model)
    with torch.no_grad():
        y_t = model(x).numpy()
    bound = activation_error_bound(layer, x, accuracy_level=accuracy_level).numpy()
    w_abs = torch.as_tensor(layer.to_qtensor().dequantize()).abs()
    fp = 1e-5 * (x.abs() @ w_abs.T).numpy() + 1e-6
    err = np.abs(y_ort - y_t)
    assert np.all(err <= 1.01 * bound + fp), f"max err/bound {np.max(err / (bound + fp)):.3f}"
    return _rel(y_ort, y_t)


# --------------------------------------------------------------------------- 8-bit


@pytest.mark.parametrize(
    "scheme",
    [
        QuantScheme("int8"),  # per output channel, symmetric
        QuantScheme("int8", symmetric=False),
        QuantScheme("int8", granularity="tensor"),
        QuantScheme("uint8"),
    ],
    ids=lambda s: s.label,
)
def test_int8_round_trip_matmul_integer(tmp_path, scheme):
    model = _one_layer(scheme)
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(1))
    path = export_onnx(model, x, tmp_path / "m.onnx")
    ops = _ops(path)
    assert ops[:3] == ["DynamicQuantizeLinear", "Mul", "MatMulInteger"]
    assert "MatMulInteger" in ops and not FLOAT_OPS & set(ops)
    assert [p.op_type for p in export_plan(model)] == ["MatMulInteger"]
    # the layer's own codes, transposed to (K, N): nothing quantized again
    qt = model.fc.to_qtensor()
    w = _init(path, "fc.weight_quantized")
    assert w.dtype == (np.int8 if qt.format.signed else np.uint8)
    np.testing.assert_array_equal(w, qt.codes.numpy().T)
    np.testing.assert_array_equal(_init(path, "fc.weight_scale").reshape(-1), qt.scale.numpy().reshape(-1))
    y = _run(path, x)
    assert _check_layer(model, x, y) < REL_LAYER


def test_int8_fuses_to_dynamic_quantize_matmul(tmp_path):
    model = _one_layer(QuantScheme("int8"))
    path = export_onnx(model, torch.randn(2, 256), tmp_path / "m.onnx")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    assert _ops(tmp_path / "optimized.onnx") == ["DynamicQuantizeMatMul"]


# --------------------------------------------------------------------------- 4-bit


def _unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    out = np.empty(packed.shape[:-1] + (2 * packed.shape[-1],), dtype=np.int32)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "zp"])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_round_trip_matmul_nbits(tmp_path, group_size, symmetric):
    scheme = QuantScheme("int4", group_size=group_size, symmetric=symmetric)
    model = _one_layer(scheme, in_f=256, out_f=96)
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(2))
    path = export_onnx(model, x, tmp_path / "m.onnx")
    assert _ops(path) == ["MatMulNBits"]
    (node,) = _nodes(path, "MatMulNBits")
    assert node.domain == "com.microsoft"
    assert _attrs(node) == {
        "K": 256,
        "N": 96,
        "bits": 4,
        "block_size": group_size,
        "accuracy_level": DEFAULT_ACCURACY_LEVEL,
    }
    # storage layout: (N, K / g, g / 2) bytes, low nibble first, codes + 8; scales (N, K / g)
    qt = model.fc.to_qtensor()
    packed = _init(path, "fc.weight_packed")
    assert packed.dtype == np.uint8 and packed.shape == (96, 256 // group_size, group_size // 2)
    np.testing.assert_array_equal(_unpack_nibbles(packed).reshape(96, 256), qt.codes.numpy() + 8)
    np.testing.assert_array_equal(_init(path, "fc.weight_scales"), qt.scale.numpy().reshape(96, -1))
    if symmetric:
        assert list(node.input[3:4]) in ([], [""])  # default zero point 8
    else:
        zp = _init(path, "fc.weight_zero_points")
        assert zp.shape == (96, math.ceil(256 // group_size / 2))
        unpacked = _unpack_nibbles(zp)[:, : 256 // group_size]
        np.testing.assert_array_equal(unpacked, qt.zero_point.numpy().reshape(96, -1) + 8)
    y = _run(path, x)
    assert _check_layer(model, x, y) < REL_LAYER


@pytest.mark.parametrize(
    "scheme",
    [
        QuantScheme("int4", group_size=32),
        QuantScheme("int4", group_size=64, symmetric=False),
        QuantScheme("uint4", group_size=32),
        QuantScheme("int8", group_size=128, symmetric=False),
    ],
    ids=lambda s: s.label,
)
def test_matmul_nbits_float_accuracy_level_is_exact(tmp_path, scheme):
    """accuracy_level=0 multiplies in float: only summation order differs from torch."""
    model = _one_layer(scheme, in_f=256, out_f=64)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(3))
    path = export_onnx(model, x, tmp_path / "m.onnx", accuracy_level=0)
    (node,) = _nodes(path, "MatMulNBits")
    assert _attrs(node)["bits"] == scheme.fmt.bits and "accuracy_level" not in _attrs(node)
    with torch.no_grad():
        assert _rel(_run(path, x), model(x).numpy()) < REL_FLOAT


def test_int4_without_bias_and_3d_input(tmp_path):
    model = _one_layer(QuantScheme("int4", group_size=32), in_f=128, out_f=64, bias=False)
    x = torch.randn(2, 7, 128, generator=torch.Generator().manual_seed(4))
    path = export_onnx(model, x, tmp_path / "m.onnx")
    (node,) = _nodes(path, "MatMulNBits")
    assert len(node.input) == 3  # no zero points, no bias
    y = _run(path, x)
    assert y.shape == (2, 7, 64)
    assert _check_layer(model, x, y) < REL_LAYER


# --------------------------------------------------------------------------- whole models


def test_mixed_model_keeps_float_layers_float(tmp_path):
    torch.manual_seed(5)
    model = nn.Sequential(
        OrderedDict(
            inp=nn.Linear(64, 128),
            act1=nn.GELU(),
            hidden=nn.Linear(128, 128),
            act2=nn.ReLU(),
            out=nn.Linear(128, 32),
            head=nn.Linear(32, 10),
        )
    )
    schemes = {
        "inp": QuantScheme("int4", group_size=32),
        "hidden": QuantScheme("int8"),
        "out": QuantScheme("int4", group_size=64, symmetric=False),
    }
    quantize_model(
        model,
        skip=("head",),
        progress=False,
        layer_fn=lambda name, lin: QuantizedLinear.from_linear(lin, schemes[name]),
    )
    assert isinstance(model.head, nn.Linear)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(6))
    path = export_onnx(model, x, tmp_path / "mlp.onnx")
    ops = _ops(path)
    assert ops.count("MatMulNBits") == 2 and ops.count("MatMulInteger") == 1
    assert sum(op in FLOAT_OPS for op in ops) == 1  # the head, float
    assert {"Gelu", "Relu"} <= set(ops) or "Erf" in ops
    assert [(p.name, p.op_type) for p in export_plan(model)] == [
        ("inp", "MatMulNBits"),
        ("hidden", "MatMulInteger"),
        ("out", "MatMulNBits"),
    ]
    onnx.checker.check_model(onnx.load(str(path)))
    with torch.no_grad():
        y_t = model(x).numpy()
    assert _rel(_run(path, x), y_t) < REL_MODEL
    # the model itself is unchanged: its layers are back in place
    assert [n for n, _ in quantized_layers(model)] == ["inp", "hidden", "out"]
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), y_t)


class _Block(nn.Module):
    """A pre-norm transformer block: multi-head self-attention and a GELU MLP."""

    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        split = lambda z: z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.down(nn.functional.gelu(self.up(self.norm2(x))))


@pytest.mark.parametrize("scheme", [QuantScheme("int8"), QuantScheme("int4", group_size=32)], ids=lambda s: s.label)
def test_transformer_block(tmp_path, scheme):
    torch.manual_seed(7)
    model = quantize_model(_Block().eval(), scheme, progress=False)
    x = torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(8))
    path = export_onnx(model, x, tmp_path / "block.onnx")
    ops = _ops(path)
    kernel = "MatMulNBits" if scheme.fmt.bits == 4 else "MatMulInteger"
    assert ops.count(kernel) == 6
    assert ops.count("MatMul") == 2  # the two attention products, float
    x2 = torch.randn(3, 8, 64, generator=torch.Generator().manual_seed(9))  # another batch size
    with torch.no_grad():
        assert _rel(_run(path, x2), model(x2).numpy()) < REL_MODEL


def test_layer_called_twice_and_input_scale(tmp_path):
    torch.manual_seed(10)
    lin = nn.Linear(64, 64)
    qt = QuantScheme("int4", group_size=32).quantize(lin.weight.detach())
    inv = torch.rand(64) + 0.5
    shared = QuantizedLinear.from_qtensor(qt, lin.bias.detach(), input_scale=inv)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = shared

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    model = Twice()
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(11))
    path = export_onnx(model, x, tmp_path / "twice.onnx")
    assert _ops(path).count("MatMulNBits") == 2
    names = [t.name for t in onnx.load(str(path)).graph.initializer]
    assert names.count("fc.weight_packed") == 1 and "fc.input_scale" in names
    with torch.no_grad():
        assert _rel(_run(path, x), model(x).numpy()) < REL_MODEL


def test_model_that_is_one_quantized_layer(tmp_path):
    torch.manual_seed(14)
    layer = QuantizedLinear.from_linear(nn.Linear(64, 32), QuantScheme("int8"))
    x = torch.randn(3, 64)
    path = export_onnx(layer, x, tmp_path / "one.onnx")
    assert "MatMulInteger" in _ops(path)
    with torch.no_grad():
        assert _rel(_run(path, x), layer(x).numpy()) < REL_LAYER


# --------------------------------------------------------------------------- real weights


@pytest.mark.parametrize(
    "scheme",
    [QuantScheme("int8"), QuantScheme("int4", group_size=32), QuantScheme("int4", group_size=128, symmetric=False)],
    ids=lambda s: s.label,
)
def test_real_minilm_layer(tmp_path, scheme):
    minilm = pytest.importorskip("quantlab.models.minilm")
    try:
        w = minilm.load_weight("encoder.layer.0.output.dense.weight")  # (384, 1536), outliers
        b = minilm.load_weight("encoder.layer.0.output.dense.bias")
    except ModuleNotFoundError as err:
        pytest.skip(str(err))
    lin = nn.Linear(1536, 384)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    model = quantize_model(nn.Sequential(OrderedDict(fc=lin)), scheme, progress=False)
    # this layer's input is a GELU output (the intermediate activations), 8 tokens, with a
    # few outlier channels ~80x the typical value (std), as MiniLM's have
    gen = torch.Generator().manual_seed(12)
    x = nn.functional.gelu(torch.randn(8, 1536, generator=gen))
    x[:, torch.randperm(1536, generator=gen)[:4]] *= 20
    path = export_onnx(model, x, tmp_path / "minilm.onnx")
    kernel = "MatMulNBits" if scheme.fmt.bits == 4 else "MatMulInteger"
    assert kernel in _ops(path) and not FLOAT_OPS & set(_ops(path))
    assert _check_layer(model, x, _run(path, x)) < REL_OUTLIERS[kernel]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "scheme, in_f, reason",
    [
        (QuantScheme("int4", group_size=16), 64, "group_size=16"),
        (QuantScheme("int4", group_size=96), 192, "group_size=96"),
        (QuantScheme("int4", granularity="tensor"), 64, "granularity 'tensor'"),
        (QuantScheme("int4"), 64, "granularity 'channel'"),
        (QuantScheme("nf4", group_size=64), 64, "'nf4'"),
        (QuantScheme("fp8_e4m3"), 64, "'fp8_e4m3'"),
        (QuantScheme("fp16"), 64, "fp16"),
        (QuantScheme("int8", axis=1), 64, "axis=1"),
        (QuantScheme("int3", group_size=32), 64, "3 bits"),
    ],
    ids=["g16", "g96", "int4-tensor", "int4-channel", "nf4", "fp8", "fp16", "int8-axis1", "int3"],
)
def test_unsupported_scheme_names_layer_and_reason(tmp_path, scheme, in_f, reason):
    torch.manual_seed(13)
    model = nn.Sequential(OrderedDict(first=nn.Linear(in_f, in_f), act=nn.ReLU(), proj=nn.Linear(in_f, 16)))
    quantize_model(
        model,
        progress=False,
        layer_fn=lambda name, lin: QuantizedLinear.from_linear(lin, QuantScheme("int8") if name == "first" else scheme),
    )
    path = tmp_path / "bad.onnx"
    with pytest.raises(ValueError, match="layer 'proj'") as info:
        export_onnx(model, torch.randn(2, in_f), path)
    assert reason in str(info.value)
    assert not path.exists()
    with pytest.raises(ValueError, match="layer 'proj'"):
        export_plan(model)


def test_argument_errors(tmp_path):
    model = _one_layer(QuantScheme("int8"), in_f=32, out_f=8)
    x = torch.randn(2, 32)
    with pytest.raises(TypeError, match="model"):
        export_onnx("model", x, tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="example_input"):
        export_onnx(model, x.numpy(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="float32"):
        export_onnx(model, x.half(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset must be at least 11.*got 10"):
        export_onnx(model, x, tmp_path / "m.onnx", opset=10)
    with pytest.raises(TypeError, match="opset"):
        export_onnx(model, x, tmp_path / "m.onnx", opset="17")
    with pytest.raises(ValueError, match="accuracy_level .* got 5"):
        export_onnx(model, x, tmp_path / "m.onnx", accuracy_level=5)
    with pytest.raises(ValueError, match="folder"):
        export_onnx(model, x, tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match="path"):
        export_onnx(model, x, 3)


def test_ort_session(tmp_path):
    model = _one_layer(QuantScheme("int8"), in_f=32, out_f=8)
    path = export_onnx(model, torch.randn(2, 32), tmp_path / "m.onnx", opset=13)
    assert {o.domain: o.version for o in onnx.load(str(path)).opset_import}[""] == 13
    sess = ort_session(path, threads=2)
    opts = sess.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.get_session_config_entry("session.x64quantprecision") == "1"
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # idle threads sleep
    with pytest.raises(ValueError, match="threads"):
        ort_session(path, threads=0)
    with pytest.raises(TypeError, match="threads"):
        ort_session(path, threads=1.0)
    with pytest.raises(ValueError, match="not a file"):
        ort_session(tmp_path / "nothing.onnx")
