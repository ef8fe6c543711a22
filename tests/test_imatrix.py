"""Importance-matrix quantization: importances, weighted error against RTN, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantlab.calibration import collect_layer_stats
from quantlab.imatrix import (
    collect_importance,
    imatrix_quantize,
    importance_from_activations,
    weighted_error,
)

import quantlab as ql


def _layer(seed: int = 0):
    rng = np.random.default_rng(seed)
    w = (0.05 * rng.standard_normal((32, 128))).astype(np.float32)
    # activations with a few strong channels, as in language models
    x = rng.standard_normal((256, 128)) * np.exp(rng.standard_normal(128))
    return w, x.astype(np.float32)


def test_importance_is_the_diagonal_of_xtx():
    _, x = _layer()
    imp = importance_from_activations(x)
    assert isinstance(imp, np.ndarray) and imp.shape == (128,) and imp.dtype == np.float64
    np.testing.assert_allclose(imp, np.diag(x.astype(np.float64).T @ x), rtol=1e-10)
    lin = torch.nn.Linear(128, 4)
    xt = torch.from_numpy(x)
    got = collect_importance(lin, lambda m: m(xt))
    stats = collect_layer_stats(lin, lambda m: m(xt))
    np.testing.assert_allclose(got[""], torch.diagonal(stats[""].xtx).numpy(), rtol=1e-12)
    np.testing.assert_allclose(got[""], imp, rtol=1e-5)


@pytest.mark.parametrize("bits", [4, 3, 2])
def test_weighted_error_beats_rtn(bits):
    w, x = _layer()
    imp = importance_from_activations(x)
    rtn = ql.quantize(w, f"int{bits}", granularity="group", group_size=32).dequantize()
    q = imatrix_quantize(w, imp, f"int{bits}", 32)
    w_hat = q.dequantize()
    assert isinstance(w_hat, np.ndarray) and w_hat.dtype == np.float32
    e_rtn, e_imx = weighted_error(w, rtn, imp), weighted_error(w, w_hat, imp)
    assert e_imx < 0.9 * e_rtn
    # and so the layer's output error on the calibration inputs drops
    out = lambda a: float(np.sum((x @ (w - a).T) ** 2))  # noqa: E731
    assert out(w_hat) < out(rtn)


def test_uniform_importance_is_the_plain_search():
    w, _ = _layer(1)
    ones = np.ones(128)
    a = imatrix_quantize(w, None, "int4", 32)
    b = imatrix_quantize(w, 3.0 * ones, "int4", 32)  # the scale of importance does not matter
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale)
    rtn = ql.quantize(w, "int4", granularity="group", group_size=32).dequantize()
    assert weighted_error(w, a.dequantize(), ones) <= weighted_error(w, rtn, ones) * (1 + 1e-6)
    # a one-point grid at factor 1 is RTN's rounding with a least-squares scale
    c = imatrix_quantize(w, None, "int4", 32, n_grid=1, factor_range=(1.0, 1.0))
    assert torch.equal(c.codes, ql.quantize(w, "int4", granularity="group", group_size=32).codes)


def test_important_columns_are_kept_exact():
    w = np.array([[0.9, -0.35, 0.5, 0.2]], np.float32)
    q = imatrix_quantize(w, np.array([1.0, 0, 0, 0]), "int2", None, scale_dtype="fp32")  # exact scales keep it exact
    assert q.dequantize()[0, 0] == np.float32(0.9)
    assert q.scale.shape == (1, 1) and q.zero_point is None and q.bits_per_weight == 2 + 32 / 4


def test_deterministic_and_torch_in_torch_out():
    w, x = _layer(2)
    imp = importance_from_activations(torch.from_numpy(x))
    assert isinstance(imp, torch.Tensor)
    q1 = imatrix_quantize(torch.from_numpy(w), imp, "int4", 32, scale_dtype="fp16")
    q2 = imatrix_quantize(torch.from_numpy(w), imp, "int4", 32, scale_dtype="fp16")
    assert torch.equal(q1.codes, q2.codes) and isinstance(q1.dequantize(), torch.Tensor)
    assert torch.equal(q1.scale, q1.scale.half().float())


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(importance=np.ones(5)), ValueError, "importance must have shape \\(128,\\)"),
        (dict(importance=-np.ones(128)), ValueError, "importance must hold finite values >= 0"),
        (dict(importance=np.zeros(128)), ValueError, "at least one positive"),
        (dict(importance=np.arange(128)), TypeError, "importance"),
        (dict(fmt="uint4"), ValueError, "signed integer format"),
        (dict(fmt="nf4"), ValueError, "signed integer format"),
        (dict(group_size=48), ValueError, "group_size must divide the last dimension 128, got 48"),
        (dict(n_grid=0), ValueError, "n_grid must be >= 1"),
        (dict(factor_range=(0.0, 1.0)), ValueError, "factor_range\\[0\\]"),
        (dict(factor_range=(1.2, 0.9)), ValueError, "factor_range\\[1\\]"),
        (dict(factor_range=0.9), TypeError, "factor_range"),
        (dict(scale_dtype="int8"), ValueError, "scale_dtype"),
    ],
)
def test_imatrix_errors(kwargs, err, match):
    w, _ = _layer()
    kwargs.setdefault("importance", None)
    with pytest.raises(err, match=match):
        imatrix_quantize(w, **kwargs)


def test_nan_is_refused():
    w, _ = _layer()
    w[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        imatrix_quantize(w)
    with pytest.raises(ValueError, match="NaN or infinity"):
        importance_from_activations(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="shape of w"):
        weighted_error(np.ones((2, 3)), np.ones((3, 2)), np.ones(3))
