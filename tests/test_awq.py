"""Tests for quantlab.awq: alpha = 0 is round-to-nearest, the scales by hand, the search
loss is the true output MSE, salient channels are protected, folding keeps the float
function, the model helper, and every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantlab.awq import (
    InputScaledLinear,
    awq_quantize_model,
    awq_quantize_weight,
    awq_scales,
    default_alphas,
    fold_into_previous,
    scale_input_columns,
)

import quantlab as ql
from quantlab.core.scheme import DEFAULT_SCALE_DTYPE


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """Tests here seed torch's global generator (for nn.Linear's initialisation): give
    the generator back to later tests as they found it."""
    with torch.random.fork_rng(devices=[]):
        yield


def _salient(seed: int = 0, rows: int = 64, cols: int = 256, n: int = 400):
    """Inputs where a few channels are 30x larger than the rest (as in LLM activations)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, cols, generator=g)
    X[:, :4] *= 30
    W = torch.randn(rows, cols, generator=g) * 0.05
    return W, X


# ----------------------------------------------------------------- known answers


def test_scales_by_hand():
    m = np.array([1.0, 4.0])
    np.testing.assert_allclose(awq_scales(m, 1.0), [0.5, 2.0])  # [1, 4] / sqrt(4 * 1)
    np.testing.assert_allclose(awq_scales(m, 0.5), [1 / 2**0.5, 2**0.5])
    np.testing.assert_array_equal(awq_scales(m, 0.0), [1.0, 1.0])


def test_default_grid_is_twenty_points_in_zero_one():
    a = default_alphas()
    assert len(a) == 20 and a[0] == 0 and a[-1] == 0.95 and bool((a < 1).all())


@pytest.mark.parametrize("fmt, group_size", [("int4", 128), ("int3", 64), ("int8", None), ("nf4", 32)])
def test_alpha_zero_is_round_to_nearest(fmt, group_size):
    W, X = _salient(1)
    res = awq_quantize_weight(W, X, fmt, group_size=group_size, alpha=0.0)
    kw = dict(granularity="group", group_size=group_size) if group_size else dict(granularity="channel")
    rtn = ql.quantize(W, fmt, scale_dtype=DEFAULT_SCALE_DTYPE, **kw)  # AWQ stores scales as a recipe does
    assert res.alpha == 0.0 and torch.equal(res.scale, torch.ones(W.shape[1]))
    assert torch.equal(res.qtensor.codes, rtn.codes)
    assert torch.equal(res.weight, rtn.dequantize())


def test_losses_are_the_output_mse():
    W, X = _salient(2)
    res = awq_quantize_weight(W, X, "int4", group_size=64)
    for k in (0, 7, 19):
        s = awq_scales(X.abs().mean(0), float(res.alphas[k]))
        eff = ql.fake_quantize(W * s, "int4", granularity="group", group_size=64, scale_dtype=DEFAULT_SCALE_DTYPE) / s
        mse = ((X @ W.T - X @ eff.T) ** 2).mean().item()
        assert res.losses[k].item() == pytest.approx(mse, rel=1e-4)
    assert res.losses[res.alphas.tolist().index(res.alpha)] == res.losses.min()


def test_salient_channels_are_protected():
    W, X = _salient(3)
    res = awq_quantize_weight(W, X, "int4", group_size=128)
    assert res.alpha > 0
    assert res.losses.min() < 0.8 * res.losses[0]  # at least 20% below round-to-nearest
    assert bool((res.scale[:4] > res.scale[4:].max()).all())  # the large channels get s > rest


def test_weights_sharing_an_input_share_one_scale():
    W, X = _salient(4)
    W2 = torch.randn(32, W.shape[1]) * 0.1
    res = awq_quantize_weight([W, W2], X, "int4", group_size=64)
    assert len(res.qtensors) == 2 and res.weights[1].shape == W2.shape
    alone = awq_quantize_weight(W2, X, "int4", group_size=64, alpha=res.alpha)
    assert torch.equal(res.qtensors[1].codes, alone.qtensor.codes)
    with pytest.raises(ValueError, match="holds 2 weights"):
        res.qtensor  # noqa: B018 (the property raises)


def test_numpy_weight_comes_back_as_numpy():
    W, X = _salient(5)
    res = awq_quantize_weight(W.numpy(), X.numpy(), "int4", group_size=64)
    assert isinstance(res.weight, np.ndarray) and res.weight.dtype == np.float32


# ----------------------------------------------------------------- folding


def test_folding_into_layernorm_keeps_the_float_function():
    torch.manual_seed(0)
    ln, lin = torch.nn.LayerNorm(16), torch.nn.Linear(16, 8)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2)
        ln.bias.uniform_(-1, 1)
    x = torch.randn(5, 16)
    before = lin(ln(x))
    s = torch.rand(16) * 3 + 0.2
    fold_into_previous(ln, s)
    scale_input_columns(lin, s)
    torch.testing.assert_close(lin(ln(x)), before, rtol=1e-5, atol=1e-5)


def test_folding_into_previous_linear_and_wrapper():
    torch.manual_seed(1)
    up, down = torch.nn.Linear(8, 12), torch.nn.Linear(12, 4)
    x = torch.randn(3, 8)
    before = down(up(x))
    s = torch.rand(12) + 0.5
    inv = 1 / s
    wrapped = InputScaledLinear(torch.nn.Linear(12, 4), inv)
    with torch.no_grad():
        wrapped.linear.weight.copy_(down.weight * s)
        wrapped.linear.bias.copy_(down.bias)
    torch.testing.assert_close(wrapped(up(x)), before, rtol=1e-5, atol=1e-5)
    fold_into_previous(up, s)
    scale_input_columns(down, s)
    torch.testing.assert_close(down(up(x)), before, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- model helper


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(128)
        self.q = torch.nn.Linear(128, 64)
        self.k = torch.nn.Linear(128, 64)
        self.out = torch.nn.Linear(64, 16)

    def forward(self, x):
        h = self.norm(x)
        return self.out(torch.relu(self.q(h) * self.k(h)))


def test_model_helper_shares_scales_and_writes_effective_weights():
    torch.manual_seed(2)
    model = _Block()
    X = torch.randn(4, 50, 128)
    X[..., :3] *= 20
    res = awq_quantize_model(model, lambda m: m(X), "int4", group_size=64, max_rows=100, progress=False)
    assert list(res) == ["q", "k", "out"]
    assert res["q"] is res["k"] and res["out"] is not res["q"]
    assert torch.equal(model.q.weight.detach(), res["q"].weights[0])
    assert torch.equal(model.k.weight.detach(), res["k"].weights[1])
    assert torch.equal(model.out.weight.detach(), res["out"].weight)


def test_model_helper_skips_lm_head_by_default():
    model = torch.nn.Sequential()
    model.add_module("body", torch.nn.Linear(32, 32))
    model.add_module("lm_head", torch.nn.Linear(32, 100))
    head = model.lm_head.weight.detach().clone()
    res = awq_quantize_model(model, lambda m: m(torch.randn(50, 32)), "int4", group_size=16, n_grid=4, progress=False)
    assert list(res) == ["body"] and torch.equal(model.lm_head.weight.detach(), head)


def test_model_helper_errors():
    model = _Block()
    with pytest.raises(ValueError, match="max_rows must be a positive int, got 0"):
        awq_quantize_model(model, lambda m: m(torch.randn(2, 128)), max_rows=0, progress=False)
    with pytest.raises(ValueError, match="nn.Linear modules"):
        awq_quantize_model(model, lambda m: m(torch.randn(2, 128)), layers=["norm"], progress=False)
    with pytest.raises(TypeError, match="run must be callable"):
        awq_quantize_model(model, None, progress=False)
    with pytest.raises(ValueError, match="received no input"):
        awq_quantize_model(model, lambda m: None, progress=False)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(W=torch.zeros(8)), ValueError, "W\\[0\\] must be 2-d"),
        (dict(W=[torch.zeros(4, 16), torch.zeros(4, 8)]), ValueError, "share in_features 16"),
        (dict(W=[]), ValueError, "non-empty list"),
        (dict(X=torch.zeros(10, 5)), ValueError, r"X must have shape \(\.\.\., 16\)"),
        (dict(X=torch.zeros(0, 16)), ValueError, "at least one row"),
        (dict(group_size=5), ValueError, "divide the last dimension 16, got 5"),
        (dict(group_size=2.0), TypeError, "group_size must be a positive int"),
        (dict(alpha=1.5), ValueError, r"alpha must be in \[0, 1\], got 1.5"),
        (dict(alpha="half"), TypeError, "alpha must be a number"),
        (dict(n_grid=0), ValueError, "n_grid must be positive, got 0"),
        (dict(X=torch.full((3, 16), float("inf"))), ValueError, "X contains NaN"),
        (dict(act_abs_mean=torch.ones(3)), ValueError, r"act_abs_mean must have shape \(16,\)"),
    ],
)
def test_errors(kwargs, exc, match):
    args = dict(W=torch.randn(4, 16), X=torch.randn(10, 16), group_size=8)
    args.update(kwargs)
    W, X = args.pop("W"), args.pop("X")
    with pytest.raises(exc, match=match):
        awq_quantize_weight(W, X, "int4", **args)


def test_scale_and_fold_errors():
    with pytest.raises(ValueError, match="1-d"):
        awq_scales(np.ones((2, 2)), 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        awq_scales(np.array([-1.0, 1.0]), 0.5)
    with pytest.raises(ValueError, match=r"s must have shape \(4,\)"):
        fold_into_previous(torch.nn.LayerNorm(4), torch.ones(3))
    with pytest.raises(ValueError, match="s must be positive"):
        fold_into_previous(torch.nn.LayerNorm(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(TypeError, match="prev must have a weight"):
        fold_into_previous(torch.nn.ReLU(), torch.ones(2))
    with pytest.raises(TypeError, match="nn.Linear"):
        scale_input_columns(torch.nn.LayerNorm(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"s must have shape \(3,\)"):
        scale_input_columns(torch.nn.Linear(3, 2), torch.ones(2))


def test_numpy_in_numpy_out():
    W, X = _salient(rows=8, cols=64, n=50)[:2]
    res = awq_quantize_weight(W.numpy(), X.numpy(), "int4", group_size=32, n_grid=4)
    for arr in (res.scale, res.inv_scale, res.weight, res.alphas, res.losses):
        assert isinstance(arr, np.ndarray)
    ref = awq_quantize_weight(W, X, "int4", group_size=32, n_grid=4)
    assert isinstance(ref.scale, torch.Tensor) and res.alpha == ref.alpha
    np.testing.assert_array_equal(res.scale, ref.scale.numpy())
    np.testing.assert_array_equal(res.weight, ref.weight.numpy())


def test_folding_accepts_numpy_scales_and_buffers_follow_the_module():
    lin = torch.nn.Linear(4, 3)
    w = lin.weight.detach().clone()
    scale_input_columns(lin, np.array([1.0, 2.0, 0.5, 1.0], dtype=np.float32))
    torch.testing.assert_close(lin.weight, w * torch.tensor([1.0, 2.0, 0.5, 1.0]))
    fold_into_previous(lin, np.full(3, 2.0))
    torch.testing.assert_close(lin.weight, w * torch.tensor([1.0, 2.0, 0.5, 1.0]) / 2)
    with pytest.raises(TypeError, match="s must be a numpy.ndarray or a torch.Tensor, got list"):
        fold_into_previous(lin, [1.0, 1.0, 1.0])
    meta = InputScaledLinear(torch.nn.Linear(4, 3, device="meta"), np.ones(4, dtype=np.float32))
    assert meta.inv_scale.is_meta  # created where the layer lives, not on the CPU
    y = meta(torch.empty(2, 4, device="meta"))
    assert y.is_meta and y.shape == (2, 3)
