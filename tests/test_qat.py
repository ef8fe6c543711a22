"""Tests for quantlab.qat: fake quantization with a straight-through estimator."""

from __future__ import annotations

import pytest
import torch
from quantlab.qat import FakeQuantLinear, convert, fake_quant_ste, prepare_qat
from torch import nn

import quantlab as ql
from quantlab.core.scheme import DEFAULT_SCALE_DTYPE  # QAT stores what a recipe stores


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """Tests here seed torch's global generator (for nn.Linear's initialisation): give
    the generator back to later tests as they found it."""
    with torch.random.fork_rng(devices=[]):
        yield


def test_forward_equals_fake_quantize():
    w = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    out = fake_quant_ste(w, "int4", granularity="channel")
    assert torch.equal(out, ql.fake_quantize(w, "int4", granularity="channel", axis=0, scale_dtype=DEFAULT_SCALE_DTYPE))


def test_known_answer_int2():
    # absmax 1, int2 symmetric: scale 1/qmax = 1, codes round(w) in {-1, 0, 1} (-2 unused)
    w = torch.tensor([1.0, -0.6, 0.4, 0.2])
    assert fake_quant_ste(w, "int2").tolist() == [1.0, -1.0, 0.0, 0.0]


def test_ste_passes_gradient_through_unchanged():
    w = torch.randn(6, 4, requires_grad=True)
    g = torch.randn(6, 4)
    out = fake_quant_ste(w, "int2", granularity="channel")
    out.backward(g)
    assert torch.equal(w.grad, g)  # identity, although rounding has zero derivative


def test_ste_gradient_nonzero_where_rounding_is_flat():
    # a loss whose true derivative through rounding is 0 everywhere still trains w
    w = torch.tensor([0.3, -0.2, 1.0], requires_grad=True)
    fake_quant_ste(w, "int2").sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 1.0]


def test_int1_defaults_to_asymmetric():
    w = torch.tensor([-1.0, 0.5, 1.0])
    out = fake_quant_ste(w, "int1")
    assert torch.equal(out, ql.fake_quantize(w, "int1", symmetric=False))


def test_fake_quant_linear_forward_and_grad():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    fq = FakeQuantLinear.from_linear(lin, "int3", granularity="tensor")
    x = torch.randn(7, 5)
    expected = x @ ql.fake_quantize(lin.weight.detach(), "int3", scale_dtype=DEFAULT_SCALE_DTYPE).T + lin.bias.detach()
    y = fq(x)
    torch.testing.assert_close(y, expected)
    y.sum().backward()
    # d sum(x W^T) / dW = 1^T x for every output row, straight through Q
    torch.testing.assert_close(fq.weight.grad, x.sum(0).expand(3, 5))
    assert fq.bias.grad.tolist() == [7.0, 7.0, 7.0]


def test_training_through_ste_reduces_loss():
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    target = x @ torch.randn(8, 2)
    model = prepare_qat(nn.Sequential(nn.Linear(8, 2)), "int4", granularity="channel")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(100):
        loss = ((model(x) - target) ** 2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_prepare_and_convert_round_trip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 2)))
    prepared = prepare_qat(model, "int4", granularity="channel")
    assert isinstance(prepared[0], FakeQuantLinear) and isinstance(prepared[2][0], FakeQuantLinear)
    assert type(model[0]) is nn.Linear  # the original is untouched
    deployed = convert(prepared)
    assert type(deployed[0]) is nn.Linear and type(deployed[2][0]) is nn.Linear
    x = torch.randn(3, 4)
    torch.testing.assert_close(deployed(x), prepared(x))
    torch.testing.assert_close(
        deployed[0].weight,
        ql.fake_quantize(model[0].weight.detach(), "int4", granularity="channel", scale_dtype=DEFAULT_SCALE_DTYPE),
    )


def test_prepare_inplace_and_bare_linear():
    lin = nn.Linear(3, 2)
    assert isinstance(prepare_qat(lin, "int8"), FakeQuantLinear)
    model = nn.Sequential(nn.Linear(3, 2))
    assert prepare_qat(model, "int8", inplace=True) is model
    assert isinstance(model[0], FakeQuantLinear)
    assert type(convert(model[0])) is nn.Linear


def test_errors():
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        fake_quant_ste([1.0, 2.0], "int4")
    with pytest.raises(TypeError, match="floating-point"):
        fake_quant_ste(torch.tensor([1, 2]), "int4")
    with pytest.raises(ValueError, match="granularity must be"):
        fake_quant_ste(torch.randn(3), "int4", granularity="row")
    with pytest.raises(ValueError, match="unknown format"):
        fake_quant_ste(torch.randn(3), "int99x")
    with pytest.raises(TypeError, match="linear must be a torch.nn.Linear"):
        FakeQuantLinear.from_linear(nn.ReLU(), "int4")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        prepare_qat("model", "int4")
    with pytest.raises(ValueError, match="at least one torch.nn.Linear"):
        prepare_qat(nn.Sequential(nn.ReLU()), "int4")
    with pytest.raises(ValueError, match="granularity must be"):
        prepare_qat(nn.Linear(2, 2), "int4", granularity="rows")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        convert(3)


def test_layers_are_created_on_the_input_layers_device():
    meta = nn.Linear(6, 3, device="meta")
    fq = FakeQuantLinear.from_linear(meta, "int4")
    assert fq.weight.is_meta and fq.bias.is_meta
    lin = FakeQuantLinear.from_linear(nn.Linear(6, 3), "int4").to_linear()
    assert lin.weight.device.type == "cpu"


def test_fake_quantized_copy_is_reexported():
    from quantlab import qat

    m = nn.Sequential(nn.Linear(4, 2))
    q = qat.fake_quantized_copy(m, "int4")
    assert torch.equal(q[0].weight, ql.fake_quantize(m[0].weight.detach(), "int4"))
