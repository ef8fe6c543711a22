"""Error metrics: hand-computed values, the 6.02 dB-per-bit rule, errors."""

import math

import numpy as np
import pytest
import torch

import quantlab as ql


def test_known_values():
    x = np.array([3.0, 4.0])
    y = np.array([3.0, 3.0])
    assert ql.mse(x, y) == 0.5
    assert ql.relative_error(x, y) == pytest.approx(1 / 5)
    assert ql.mean_relative_error(x, y) == pytest.approx(0.5 / 3.5)
    assert ql.sqnr_db(x, y) == pytest.approx(10 * math.log10(25 / 1))
    assert ql.cosine_similarity(x, y) == pytest.approx(21 / (5 * math.sqrt(18)))
    assert ql.sqnr_db(x, x) == math.inf


def test_cosine_per_row_and_mixed_kinds():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0]], dtype=np.float32)
    rows = ql.cosine_similarity(a, b, dim=-1)
    assert isinstance(rows, torch.Tensor)
    assert rows.tolist() == pytest.approx([0.0, 1.0])


def test_uniform_quantizer_gains_6_02_db_per_bit():
    # uniform data over the full range: SQNR = 6.02 b dB (+ o(1)); slope within 0.5 dB of 6.02
    x = torch.rand(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    bits = list(range(4, 13))
    s = [ql.sqnr_db(x, ql.fake_quantize(x, f"int{b}")) for b in bits]
    slope = np.polyfit(bits, s, 1)[0]
    assert abs(slope - 6.02) < 0.5
    assert abs(s[4] - 6.02 * 8) < 1.0  # int8 on uniform data: about 48 dB


@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda: ql.mse(np.zeros(3), np.zeros(4)), ValueError, r"same shape, got \(3,\) and \(4,\)"),
        (lambda: ql.mse(np.zeros(0), np.zeros(0)), ValueError, "empty"),
        (lambda: ql.sqnr_db(np.zeros(3), np.ones(3)), ValueError, "all-zero x"),
        (lambda: ql.relative_error(np.zeros(3), np.ones(3)), ValueError, "all-zero x"),
        (lambda: ql.mean_relative_error(np.zeros(3), np.ones(3)), ValueError, "all-zero x"),
        (lambda: ql.cosine_similarity(np.ones(3), np.zeros(3)), ValueError, "all zeros"),
        (lambda: ql.cosine_similarity(np.ones((2, 3)), np.ones((2, 3)), dim=2), ValueError, "dim must be None"),
        (lambda: ql.mse(np.arange(3), np.arange(3)), TypeError, "x must hold real floating-point"),
        (lambda: ql.mse([1.0], [1.0]), TypeError, "got list"),
    ],
)
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
