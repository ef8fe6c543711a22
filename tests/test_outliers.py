"""Tests for quantlab.outliers: the decomposition's two limits (plain int8 and the float
product), the int8 product by hand and against the library's quantizer, SmoothQuant's
exact preservation of X W^T, what each buys on outlier inputs, and every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantlab.outliers import (
    int8_matmul,
    mixed_precision_matmul,
    outlier_columns,
    smooth,
    smoothquant_scales,
)

import quantlab as ql


def _outlier_inputs(seed: int = 0, n: int = 64, d: int = 96, out: int = 32, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    X[:, [5, 40]] *= 25  # two outlier features, in every token (as in LLMs)
    W = torch.randn(out, d, generator=g, dtype=dtype) * 0.1
    return X, W


def _rel(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


# ----------------------------------------------------------------- known answers


def test_outlier_columns_by_hand():
    X = np.array([[0.5, -7.0, 1.0], [2.0, 0.1, 6.0]])
    np.testing.assert_array_equal(outlier_columns(X), [False, True, False])  # 6.0 is not > 6
    np.testing.assert_array_equal(outlier_columns(X, 1.5), [True, True, True])
    np.testing.assert_array_equal(outlier_columns(X, np.inf), [False, False, False])


def test_int8_matmul_by_hand():
    # X rows absmax 127 and 254 -> scales 1 and 2; W row absmax 127 -> scale 1: all exact.
    X = np.array([[127.0, 1.0], [254.0, -2.0]])
    W = np.array([[1.0, 127.0]])
    np.testing.assert_array_equal(int8_matmul(X, W), [[254.0], [0.0]])


@pytest.mark.parametrize("act", ["token", "tensor"])
def test_int8_matmul_is_the_library_quantizers_product(act):
    X, W = _outlier_inputs(1)
    gran = dict(granularity="channel", axis=0) if act == "token" else dict(granularity="tensor")
    expect = ql.fake_quantize(X, "int8", **gran) @ ql.fake_quantize(W, "int8", granularity="channel").T
    # the library dequantizes in float32; the int8 product rescales in float64
    torch.testing.assert_close(int8_matmul(X, W, act), expect, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- the decomposition


def test_threshold_inf_is_plain_int8():
    X, W = _outlier_inputs(2)
    assert torch.equal(mixed_precision_matmul(X, W, threshold=float("inf")), int8_matmul(X, W))


def test_threshold_zero_is_the_float_product():
    X, W = _outlier_inputs(3)
    X[:, 7] = 0  # an all-zero column is not an outlier; it contributes nothing anyway
    torch.testing.assert_close(mixed_precision_matmul(X, W, threshold=0.0), X @ W.T, rtol=1e-12, atol=1e-12)


def test_decomposition_beats_plain_int8_on_outliers():
    X, W = _outlier_inputs(4, dtype=torch.float32)
    exact = X @ W.T
    plain = _rel(int8_matmul(X, W), exact)
    mixed = _rel(mixed_precision_matmul(X, W, threshold=6.0), exact)
    assert torch.equal(outlier_columns(X).nonzero().flatten(), torch.tensor([5, 40]))
    assert mixed < plain / 3


# ----------------------------------------------------------------- SmoothQuant


def test_smoothquant_scales_by_hand():
    a = np.array([16.0, 1.0])
    W = np.array([[1.0, -4.0], [0.5, 2.0]])  # column maxima 1 and 4
    np.testing.assert_allclose(smoothquant_scales(a, W, 0.5), [4.0, 0.5])  # sqrt(16)/1, 1/sqrt(4)
    np.testing.assert_allclose(smoothquant_scales(a, W, 1.0), [16.0, 1.0])
    np.testing.assert_allclose(smoothquant_scales(a, W, 0.0), [1.0, 0.25])


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.85, 1.0])
def test_smoothing_preserves_the_product_exactly(alpha):
    X, W = _outlier_inputs(5)
    Xs, Ws, s = smooth(X, W, alpha)
    torch.testing.assert_close(Xs @ Ws.T, X @ W.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Xs * s, X, rtol=1e-15, atol=0)


def test_smoothing_rescues_per_tensor_int8():
    X, W = _outlier_inputs(6, dtype=torch.float32)
    exact = X @ W.T
    before = _rel(int8_matmul(X, W, "tensor"), exact)
    Xs, Ws, _ = smooth(X, W, 0.5)
    after = _rel(int8_matmul(Xs, Ws, "tensor"), exact)
    assert after < before / 2


def test_numpy_kinds():
    X, W = _outlier_inputs(7)
    Xs, Ws, s = smooth(X.numpy(), W.numpy())
    assert all(isinstance(v, np.ndarray) for v in (Xs, Ws, s))
    assert isinstance(mixed_precision_matmul(X.numpy(), W.numpy()), np.ndarray)


# ----------------------------------------------------------------- errors


def test_errors():
    X, W = torch.randn(4, 8), torch.randn(3, 8)
    with pytest.raises(ValueError, match="X has 8 features but W has 5"):
        int8_matmul(X, torch.randn(3, 5))
    with pytest.raises(ValueError, match="X must be 2-d"):
        mixed_precision_matmul(torch.randn(8), W)
    with pytest.raises(ValueError, match="W must be 2-d"):
        int8_matmul(X, torch.randn(8))
    with pytest.raises(ValueError, match="act_granularity must be one of"):
        int8_matmul(X, W, "channel")
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        mixed_precision_matmul(X, W, threshold=-1.0)
    with pytest.raises(TypeError, match="threshold must be a non-negative number"):
        outlier_columns(X, threshold="6")
    with pytest.raises(ValueError, match="0-d"):
        outlier_columns(torch.tensor(1.0))
    with pytest.raises(TypeError, match="X must hold real floating"):
        int8_matmul(torch.ones(4, 8, dtype=torch.int64), W)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 2"):
        smoothquant_scales(torch.ones(8), W, 2)
    with pytest.raises(ValueError, match=r"act_abs_max must have shape \(8,\)"):
        smoothquant_scales(torch.ones(3), W)
    with pytest.raises(ValueError, match="non-negative"):
        smoothquant_scales(-torch.ones(8), W)
