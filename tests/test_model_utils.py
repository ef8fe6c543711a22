"""quantlab._model_utils: fake-quantized copies of models and input hooks."""

from __future__ import annotations

import pytest
import torch
from quantlab._model_utils import fake_quantized_copy, linear_layers_of, run_with_input_hooks
from torch import nn

import quantlab as ql
from quantlab.nn import QuantScheme


def _mlp() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m


def test_copy_rounds_every_linear_weight_and_leaves_the_original():
    m = _mlp()
    before = [p.clone() for p in m.parameters()]
    q = fake_quantized_copy(m, "int4", granularity="channel", axis=0)
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
    for lin, qlin in ((m[0], q[0]), (m[2], q[2])):
        want = ql.fake_quantize(lin.weight.detach(), "int4", granularity="channel", axis=0)
        assert torch.equal(qlin.weight, want)
        assert torch.equal(qlin.bias, lin.bias)
    assert not q[0].weight.requires_grad or q[0].weight.grad is None


def test_qtensors_scheme_layers_and_inplace():
    m = _mlp()
    q, qts = fake_quantized_copy(m, "int8", return_qtensors=True)
    assert [qt.shape for qt in qts] == [(16, 8), (4, 16)]
    assert torch.equal(q[2].weight, qts[1].dequantize())
    scheme = QuantScheme("int4", group_size=8)
    qs, _sq = fake_quantized_copy(m, scheme, return_qtensors=True)
    assert torch.equal(qs[0].weight, scheme.quantize(m[0].weight.detach()).dequantize())
    only = fake_quantized_copy(m, "int2", layers=["2"])
    assert torch.equal(only[0].weight, m[0].weight) and not torch.equal(only[2].weight, m[2].weight)
    pred = fake_quantized_copy(m, "int2", layers=lambda name, mod: mod.out_features == 16)
    assert not torch.equal(pred[0].weight, m[0].weight) and torch.equal(pred[2].weight, m[2].weight)
    same = fake_quantized_copy(m, "int4", inplace=True)
    assert same is m and torch.equal(m[0].weight, ql.fake_quantize(_mlp()[0].weight.detach(), "int4"))


def test_copy_errors_name_the_parameter():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        fake_quantized_copy({}, "int8")
    with pytest.raises(ValueError, match="model has no nn.Linear layer to quantize: ReLU"):
        fake_quantized_copy(nn.ReLU(), "int8")
    with pytest.raises(TypeError, match="qparams must not be given with a scheme"):
        fake_quantized_copy(_mlp(), QuantScheme("int8"), granularity="tensor")
    with pytest.raises(ValueError, match="layers must name nn.Linear modules of the model, got '1'"):
        fake_quantized_copy(_mlp(), "int8", layers=["1"])
    with pytest.raises(TypeError, match="layers must be a list of names"):
        linear_layers_of(_mlp(), "0")
    with pytest.raises(TypeError, match="inplace must be True or False, got 1"):
        fake_quantized_copy(_mlp(), "int8", inplace=1)


def test_input_hooks_group_layers_fed_the_same_tensor():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.c(self.a(x) + self.b(x))

    model = Two()
    calls = []

    def on_input(name, owner, x, repeat):
        calls.append((name, owner, repeat))
        return not repeat

    owners = run_with_input_hooks(model, lambda m: [m(torch.ones(2, 4)) for _ in range(2)], ["a", "b", "c"], on_input)
    assert owners == {"a": "a", "b": "a", "c": "c"}
    assert calls[:3] == [("a", "a", False), ("b", "a", True), ("c", "c", False)]
    with pytest.raises(ValueError, match=r"received no input during run\(model\): \['c'\]"):
        run_with_input_hooks(model, lambda m: m.a(torch.ones(1, 4)), ["a", "c"], on_input)
    assert not model.a._forward_pre_hooks  # hooks removed, also after an error
