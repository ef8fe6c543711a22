"""Tests for quantlab.calibration: running statistics equal one-shot ones, layers fed the
same tensor share statistics, and every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantlab.calibration import LayerStats, collect_layer_stats, hessian, linear_layer_names


def test_running_stats_equal_one_shot():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 50, 12, generator=g, dtype=torch.float64)
    st = LayerStats()
    for batch in X:
        st.add(batch)
    flat = X.reshape(-1, 12)
    assert st.n == 150 and st.in_features == 12
    torch.testing.assert_close(st.hessian, 2 * flat.T @ flat / 150)
    torch.testing.assert_close(st.gram, flat.T @ flat / 150)
    torch.testing.assert_close(st.abs_mean, flat.abs().mean(0))
    torch.testing.assert_close(st.abs_max, flat.abs().amax(0))
    torch.testing.assert_close(hessian(X), st.hessian)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q = torch.nn.Linear(8, 4)
        self.k = torch.nn.Linear(8, 4)
        self.o = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.o(self.q(x) + self.k(x))


def test_collect_shares_stats_of_one_input_and_counts_every_batch():
    net = _Net()
    xs = [torch.randn(5, 8), torch.randn(7, 8)]

    def run(m):
        for x in xs:
            m(x)

    stats = collect_layer_stats(net, run)
    assert list(stats) == linear_layer_names(net) == ["q", "k", "o"]
    assert stats["q"] is stats["k"] and stats["o"] is not stats["q"]
    assert stats["q"].n == 12 and stats["o"].n == 12
    flat = torch.cat(xs)
    torch.testing.assert_close(stats["q"].hessian, 2 * flat.T @ flat / 12)


def test_collect_leaves_no_hooks():
    net = _Net()
    collect_layer_stats(net, lambda m: m(torch.randn(2, 8)), layers=["o"])
    assert all(not m._forward_pre_hooks for m in net.modules())


def test_errors():
    st = LayerStats()
    with pytest.raises(ValueError, match="no calibration inputs"):
        st.hessian  # noqa: B018 (the property raises)
    with pytest.raises(ValueError, match="0-d"):
        st.add(torch.tensor(1.0))
    with pytest.raises(ValueError, match="at least one row"):
        st.add(torch.zeros(0, 3))
    with pytest.raises(TypeError, match="real floating"):
        st.add(np.ones((2, 3), dtype=np.int64))
    st.add(torch.ones(2, 3))
    with pytest.raises(ValueError, match="must have 3 features like the earlier batches, got 4"):
        st.add(torch.ones(2, 4))
    net = _Net()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        collect_layer_stats("net", lambda m: None)
    with pytest.raises(TypeError, match="run must be callable"):
        collect_layer_stats(net, 3)
    with pytest.raises(ValueError, match="nn.Linear modules of the model, got 'x'"):
        collect_layer_stats(net, lambda m: None, layers=["x"])
    with pytest.raises(ValueError, match="received no input"):
        collect_layer_stats(net, lambda m: None)


def test_hessian_returns_the_input_kind():
    X = np.random.default_rng(0).standard_normal((20, 5)).astype(np.float32)
    H = hessian(X)
    assert isinstance(H, np.ndarray) and H.dtype == np.float32
    Ht = hessian(torch.from_numpy(X))
    assert isinstance(Ht, torch.Tensor)
    np.testing.assert_array_equal(H, Ht.numpy())
    st = LayerStats()
    st.add(X)  # statistics stay torch tensors (documented)
    assert isinstance(st.hessian, torch.Tensor)
