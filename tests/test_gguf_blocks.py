"""Tests for quantlab.gguf_blocks: byte equality with gguf.quants, layout, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf import quants
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import quantlab as ql
from quantlab import gguf_blocks as gb

KINDS = {"q8_0": T.Q8_0, "q4_0": T.Q4_0}


def _edge_cases() -> np.ndarray:
    rng = np.random.default_rng(7)
    rows = [
        np.zeros(32),                                  # all zero: d = 0
        np.full(32, 3.0),                              # constant
        np.full(32, -3.0),
        np.r_[np.ones(31), -1.0],                      # ties in magnitude, first wins
        np.r_[-1.0, np.ones(31)],
        np.linspace(-1, 1, 32),
        (np.arange(32) - 16) / 16 * 127 / 8,           # exact halves after scaling
        np.r_[1e-8, np.zeros(31)],                     # subnormal fp16 scale
        np.r_[1e-30, -1e-30, np.zeros(30)],            # scale underflows to 0 in fp16
        np.r_[1e6, -2.0, np.zeros(30)],                # large
        np.r_[7e6, 1.0, np.zeros(30)],                 # Q8_0 scale overflows fp16
        rng.standard_t(2, 32) * 0.05,                  # heavy tails, like real weights
        np.r_[0.49999997, -0.49999997, np.full(30, 127.0)],  # |v| + 0.5 rounds up in fp32
    ]
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_byte_identical_on_random_data(kind):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 256)) * rng.uniform(0.001, 10, (64, 1))).astype(np.float32)
    ours = gb.quantize_blocks(x, kind)
    ref = quants.quantize(x, KINDS[kind])
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    assert np.array_equal(ours, ref)
    assert np.array_equal(gb.dequantize_blocks(ours, kind), quants.dequantize(ref, KINDS[kind]))


@pytest.mark.parametrize("kind", KINDS)
def test_byte_identical_on_edge_cases(kind):
    x = _edge_cases()
    ours = gb.quantize_blocks(x, kind)
    with np.errstate(over="ignore"):  # one block's scale overflows fp16 to inf, in both
        ref = quants.quantize(x, KINDS[kind])
    assert np.array_equal(ours, ref)
    with np.errstate(invalid="ignore"):
        deq_ref = quants.dequantize(ref, KINDS[kind])
    assert np.array_equal(gb.dequantize_blocks(ours, kind), deq_ref, equal_nan=True)


# Magnitudes below 1e-30 are flushed to 0: a block whose largest magnitude is below about
# 1e-36 makes 1/d overflow to infinity, and ggml then casts NaN to an integer (undefined).
_weights = st.floats(-1e4, 1e4, width=32).map(lambda v: v if abs(v) >= 1e-30 else 0.0)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (3, 64), elements=_weights))
def test_property_byte_identical(x):
    for kind, qt in KINDS.items():
        assert np.array_equal(gb.quantize_blocks(x, kind), quants.quantize(x, qt))


def test_torch_input_gives_torch_output_and_3d_shapes():
    x = torch.randn(2, 3, 64)
    b = gb.quantize_q4_0(x)
    assert isinstance(b, torch.Tensor) and b.shape == (2, 3, 36)
    assert gb.dequantize_q4_0(b).shape == (2, 3, 64)
    assert np.array_equal(b.numpy(), quants.quantize(x.numpy(), T.Q4_0))


def test_known_answer_q4_0_block_layout():
    # weights 0..31 scaled: largest magnitude is x[31] = 31 -> d = 31 / -8 = -3.875
    x = np.arange(32, dtype=np.float32)
    b = gb.quantize_q4_0(x)
    assert b.shape == (18,)
    assert b[:2].view(np.float16)[0] == np.float16(-3.875)
    q = np.trunc(x * np.float32(1 / -3.875) + np.float32(8.5)).clip(0, 15).astype(np.uint8)
    assert q[0] == 8 and q[31] == 0
    assert list(b[2:]) == [int(q[j] | (q[j + 16] << 4)) for j in range(16)]
    # the largest weight is exact: d * (0 - 8) = 31
    assert gb.dequantize_q4_0(b)[31] == 31.0


def test_known_answer_q8_0_block():
    x = np.zeros(32, dtype=np.float32)
    x[:4] = [1.27, -0.635, 0.005, 0.0]  # d = 0.01: codes 127, -63.5 -> -64 (away from zero), 0.5 -> 1
    b = gb.quantize_q8_0(x)
    assert b.shape == (34,)
    assert b[:2].view(np.float16)[0] == np.float16(0.01)
    assert list(b[2:6].view(np.int8)) == [127, -64, 1, 0]


def test_bits_per_weight_and_qtensor_view():
    assert gb.BITS_PER_WEIGHT == {"q8_0": 8.5, "q4_0": 4.5}
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 128)).astype(np.float32)
    for kind in KINDS:
        b = gb.quantize_blocks(x, kind)
        qt = gb.to_qtensor(b, kind)
        assert qt.nbytes == b.size
        assert qt.bits_per_weight == gb.BITS_PER_WEIGHT[kind]
        assert np.array_equal(qt.dequantize().numpy(), gb.dequantize_blocks(b, kind))
        # storable in a packed layer; its memory equals the GGUF bytes
        layer = ql.nn.QuantizedLinear.from_qtensor(qt)
        assert layer.weight_nbytes == b.size
    assert ql.memory.bits_per_weight("int4", group_size=32, scale_dtype="fp16") == 4.5


def test_q8_0_matches_quantlab_int8_group_quantizer_up_to_rounding_rule():
    # Q8_0 is int8, groups of 32, absmax/127 scales: quantlab's quantizer gives the same
    # codes except at exact halves (ggml rounds away from zero, quantlab to even).
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    ours = gb.to_qtensor(gb.quantize_q8_0(x), "q8_0")
    lib = ql.quantize(x, "int8", granularity="group", group_size=32)
    assert (ours.codes.numpy() != lib.codes.numpy()).mean() < 0.01


def test_errors():
    with pytest.raises(ValueError, match="multiple of 32"):
        gb.quantize_q8_0(np.zeros(30, dtype=np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        gb.quantize_q4_0(np.array(1.0, dtype=np.float32))
    with pytest.raises(ValueError, match="must be finite"):
        gb.quantize_q4_0(np.r_[np.nan, np.zeros(31)].astype(np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        gb.quantize_q8_0(np.zeros(32, dtype=np.int32))
    with pytest.raises(ValueError, match="kind must be"):
        gb.quantize_blocks(np.zeros(32, dtype=np.float32), "q4_1")
    with pytest.raises(ValueError, match="multiple of 18 bytes"):
        gb.dequantize_q4_0(np.zeros(20, dtype=np.uint8))
    with pytest.raises(TypeError, match="blocks must be uint8"):
        gb.dequantize_q8_0(np.zeros(34, dtype=np.int8))
    with pytest.raises(ValueError, match="kind must be"):
        gb.to_qtensor(np.zeros(34, dtype=np.uint8), "Q5")
