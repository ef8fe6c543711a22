"""HQQ: lower weight error than min/max round-to-nearest, determinism, storage, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantlab.hqq import hqq_quantize, shrink_lp

import quantlab as ql


def _weights(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "gaussian":
        return (0.02 * rng.standard_normal((64, 256))).astype(np.float32)
    return (0.02 * rng.standard_t(3, (64, 256))).astype(np.float32)  # heavy tails


def _rel(w, w_hat) -> float:
    return float(np.linalg.norm(w - w_hat) / np.linalg.norm(w))


def _lp(w, w_hat, p=0.7) -> float:
    return float((np.abs(w - w_hat) ** p).mean())


@pytest.mark.parametrize("kind", ["gaussian", "heavy_tailed"])
@pytest.mark.parametrize("bits", [4, 3, 2])
def test_hqq_beats_min_max_rtn(kind, bits):
    w = _weights(kind)
    fmt = f"uint{bits}"
    rtn = ql.quantize(w, fmt, granularity="group", group_size=64, symmetric=False, scale_dtype="fp16").dequantize()
    q = hqq_quantize(w, fmt, 64)
    w_hat = q.dequantize()
    assert isinstance(w_hat, np.ndarray) and w_hat.dtype == np.float32
    assert _lp(w, w_hat) < _lp(w, rtn)  # the objective HQQ minimises
    assert _rel(w, w_hat) < _rel(w, rtn)  # and the plain relative L2 error
    assert np.abs(w - w_hat).mean() < np.abs(w - rtn).mean()
    # updating the scales too lowers the L2 error further
    assert _rel(w, hqq_quantize(w, fmt, 64, optimize_scale=True).dequantize()) < _rel(w, w_hat)


def test_hqq_is_deterministic_and_never_worse_than_its_start():
    w = _weights("heavy_tailed")
    a, b = hqq_quantize(w, "int3", 64), hqq_quantize(w, "int3", 64)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.zero_point, b.zero_point)
    start = hqq_quantize(w, "int3", 64, iters=0).dequantize()
    err = lambda x: np.abs(w - x).reshape(64, 4, 64).mean(-1)  # noqa: E731
    assert (err(a.dequantize()) <= err(start) + 1e-6).all()  # per group, fp16 rounding aside
    full = hqq_quantize(w, "int3", 64, early_stop=False, iters=5)
    assert full.codes.shape == w.shape


def test_hqq_min_max_start_by_hand():
    # one group [-1, 0.6, 2]: s = 3 / 15 = 0.2, z = 0 - (-1) / 0.2 = 5 (uint4)
    w = np.array([[-1.0, 0.6, 2.0, 0.0]], np.float32)
    q = hqq_quantize(w, "uint4", None, iters=0, scale_dtype="fp32")
    assert float(q.scale[0, 0]) == pytest.approx(0.2) and float(q.zero_point[0, 0]) == pytest.approx(5.0)
    assert q.codes.tolist() == [[0, 8, 15, 5]]
    np.testing.assert_allclose(q.dequantize(), [[-1.0, 0.6, 2.0, 0.0]], atol=1e-6)


def test_hqq_storage_is_a_normal_qtensor():
    w = torch.from_numpy(_weights("gaussian"))
    q = hqq_quantize(w, "int4", 64)
    assert q.granularity == "group" and q.group_size == 64 and q.scale.shape == (64, 4)
    assert q.zero_point.dtype == torch.float32 and q.scale_dtype == "fp16"
    assert torch.equal(q.scale, q.scale.half().float())  # exact fp16 values
    assert torch.equal(q.zero_point, q.zero_point.half().float())
    assert q.nbytes == 64 * 256 // 2 + 2 * 256 * 2  # codes + fp16 scale + fp16 zero per group
    assert q.bits_per_weight == 4.5
    assert isinstance(q.dequantize(), torch.Tensor)
    assert int(q.codes.min()) >= -8 and int(q.codes.max()) <= 7
    assert torch.equal(ql.dequantize(q), q.dequantize())


def test_shrink_lp():
    e = torch.tensor([-2.0, -0.01, 0.0, 0.01, 2.0])
    out = shrink_lp(e, 10.0, 1.0)
    assert torch.allclose(out, torch.tensor([-1.9, 0.0, 0.0, 0.0, 1.9]))
    out = shrink_lp(e, 10.0, 0.7)  # threshold |e|^-0.3 / 10: 0.081 at 2, 0.40 at 0.01
    assert out[2] == 0 and out[1] == 0 and out[3] == 0
    assert float(out[4]) == pytest.approx(2.0 - 2.0**-0.3 / 10, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(fmt="fp8_e4m3"), ValueError, "integer format"),
        (dict(group_size=48), ValueError, "group_size must divide the last dimension 256, got 48"),
        (dict(group_size=0), ValueError, "group_size must be >= 1"),
        (dict(group_size=64.0), TypeError, "group_size"),
        (dict(iters=-1), ValueError, "iters"),
        (dict(lp_norm=1.5), ValueError, "lp_norm must be in \\(0, 1\\], got 1.5"),
        (dict(beta=0.0), ValueError, "beta"),
        (dict(kappa=0.5), ValueError, "kappa"),
        (dict(optimize_scale=1), TypeError, "optimize_scale"),
        (dict(scale_dtype="fp8"), ValueError, "scale_dtype"),
    ],
)
def test_hqq_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        hqq_quantize(np.ones((2, 256), np.float32), **kwargs)


def test_hqq_refuses_nan_and_non_arrays():
    w = np.ones((2, 64), np.float32)
    w[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        hqq_quantize(w)
    with pytest.raises(TypeError, match="w must be"):
        hqq_quantize([1.0, 2.0])
    with pytest.raises(ValueError, match="0-d"):
        hqq_quantize(np.array(1.0, np.float32))
