"""Tests for quantlab.gguf_blocks: byte equality with gguf.quants, layout, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, quants
from gguf import GGMLQuantizationType as T
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import quantlab as ql
from quantlab import gguf_blocks as gb

# kinds gguf.quants can encode (byte equality) and every kind (decode equality)
KINDS = {
    "q8_0": T.Q8_0,
    "q4_0": T.Q4_0,
    "q4_1": T.Q4_1,
    "q5_0": T.Q5_0,
    "q5_1": T.Q5_1,
    "mxfp4": T.MXFP4,
    "tq1_0": T.TQ1_0,
    "tq2_0": T.TQ2_0,
}
K_QUANTS = {"q4_k": T.Q4_K, "q6_k": T.Q6_K}
ALL_KINDS = {**KINDS, **K_QUANTS}


def _edge_cases(width: int = 32) -> np.ndarray:
    """Edge-case blocks of 32; for width 256 each one tiled into a super-block, plus
    super-blocks that mix eight different edge blocks."""
    rng = np.random.default_rng(7)
    rows = [
        np.zeros(32),  # all zero: d = 0
        np.full(32, 3.0),  # constant
        np.full(32, -3.0),
        np.r_[np.ones(31), -1.0],  # ties in magnitude, first wins
        np.r_[-1.0, np.ones(31)],
        np.linspace(-1, 1, 32),
        (np.arange(32) - 16) / 16 * 127 / 8,  # exact halves after scaling
        np.r_[1e-8, np.zeros(31)],  # subnormal fp16 scale
        np.r_[1e-30, -1e-30, np.zeros(30)],  # scale underflows to 0 in fp16
        np.r_[1e6, -2.0, np.zeros(30)],  # large
        np.r_[7e6, 1.0, np.zeros(30)],  # Q8_0 scale overflows fp16
        rng.standard_t(2, 32) * 0.05,  # heavy tails, like real weights
        np.r_[0.49999997, -0.49999997, np.full(30, 127.0)],  # |v| + 0.5 rounds up in fp32
        -np.abs(rng.standard_normal(32)),  # all negative: min/max kinds
        np.r_[1e30, -1e30, 1.0, np.zeros(29)],  # huge: every fp16 scale overflows
        np.r_[7.0, 0.25, 2.5, -2.5, 5.0, -5.0, -0.25, 0.75, np.zeros(24)],  # MXFP4 ties
        np.r_[np.nextafter(np.float32(8), np.float32(0)), 1.0, np.zeros(30)],  # log2f -> 3.0
        np.r_[2.0, 1.0, -1.0, 0.5, -0.5, np.zeros(27)],  # ternary halves: away from zero
    ]
    x = np.stack(rows).astype(np.float32)
    if width == 32:
        return x
    tiled = np.repeat(x, width // 32, axis=0).reshape(-1, width)
    mixed = x[np.arange(len(x) * (width // 32)) % len(x)].reshape(-1, width)
    return np.concatenate([tiled, mixed])


def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Gaussian rows of random magnitude; one row in four all-negative, one row all zero."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.001, 10, (*shape[:-1], 1))
    rows = x.reshape(-1, shape[-1])
    rows[::4] = -np.abs(rows[::4])
    rows[-1] = 0
    return x.astype(np.float32)


RANDOM_SHAPES = [(64, 256), (3, 5, 512), (1, 256), (7, 768)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(len(RANDOM_SHAPES)))
def test_byte_identical_on_random_data(kind, seed):
    x = _random(RANDOM_SHAPES[seed], seed)
    ours = gb.quantize_blocks(x, kind)
    ref = quants.quantize(x, KINDS[kind])
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    assert np.array_equal(ours, ref)
    assert np.array_equal(gb.dequantize_blocks(ours, kind), quants.dequantize(ref, KINDS[kind]))


@pytest.mark.parametrize("kind", KINDS)
def test_byte_identical_on_edge_cases(kind):
    x = _edge_cases(gb.BLOCK_SIZES[kind])
    ours = gb.quantize_blocks(x, kind)
    with np.errstate(over="ignore", invalid="ignore"):  # fp16 scales overflow, in both
        ref = quants.quantize(x, KINDS[kind])
    assert np.array_equal(ours, ref)
    with np.errstate(invalid="ignore"):
        deq_ref = quants.dequantize(ref, KINDS[kind])
    assert np.array_equal(gb.dequantize_blocks(ours, kind), deq_ref, equal_nan=True)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_dequantize_identical_on_arbitrary_bytes(kind):
    # any bytes, also ones no quantizer writes: NaN/inf fp16 scales, E8M0 255, TQ1_0 bytes > 242
    rng = np.random.default_rng(11)
    raw = rng.integers(0, 256, (16, 3 * gb.BLOCK_BYTES[kind]), dtype=np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = quants.dequantize(raw, ALL_KINDS[kind])
    ours = gb.dequantize_blocks(raw, kind)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (16, 3 * gb.BLOCK_SIZES[kind])
    assert np.array_equal(ours, ref, equal_nan=True)


# Magnitudes below 1e-30 are flushed to 0: a block whose largest magnitude is below about
# 1e-36 makes 1/d overflow to infinity, and ggml then casts NaN to an integer (undefined).
_weights = st.floats(-1e4, 1e4, width=32).map(lambda v: v if abs(v) >= 1e-30 else 0.0)
# Q4_1/Q5_1 divide by the range max - min: flush below 1e-20 so distinct values differ enough.
_wide_weights = st.floats(-1e4, 1e4, width=32).map(lambda v: v if abs(v) >= 1e-20 else 0.0)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (3, 64), elements=_weights))
def test_property_byte_identical(x):
    for kind in ("q8_0", "q4_0"):
        assert np.array_equal(gb.quantize_blocks(x, kind), quants.quantize(x, KINDS[kind]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(arrays(np.float32, (2, 256), elements=_wide_weights))
def test_property_byte_identical_new_kinds(x):
    for kind in ("q4_1", "q5_0", "q5_1", "mxfp4", "tq1_0", "tq2_0"):
        assert np.array_equal(gb.quantize_blocks(x, kind), quants.quantize(x, KINDS[kind])), kind


# ---------------------------------------------------------------- k-quants (quantlab's encoder)


def _k_quant_inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [
        _random((16, 1024), 1),
        (rng.standard_t(3, (8, 512)) * 0.02).astype(np.float32),  # heavy-tailed weights
        rng.uniform(0, 1, (4, 256)).astype(np.float32),  # no negative weights
        _edge_cases(256),  # zeros, huge, ties, ...
    ]


@pytest.mark.parametrize("kind", K_QUANTS)
def test_k_quants_read_back_exactly_through_gguf(kind):
    for x in _k_quant_inputs():
        b = gb.quantize_blocks(x, kind)
        n_bytes = x.shape[-1] // 256 * gb.BLOCK_BYTES[kind]
        assert b.dtype == np.uint8 and b.shape == (*x.shape[:-1], n_bytes)
        with np.errstate(invalid="ignore", over="ignore"):
            ref = quants.dequantize(b, K_QUANTS[kind])
        assert np.array_equal(gb.dequantize_blocks(b, kind), ref, equal_nan=True)


def test_k_quant_scale_structure():
    x = _random((8, 512), 2)
    x[0, :256] = 0  # an all-zero super-block is all zero bytes
    b4 = gb.quantize_blocks(x, "q4_k").reshape(-1, 144)
    b6 = gb.quantize_blocks(x, "q6_k").reshape(-1, 210)
    assert not b4[0].any() and not b6[0].any()
    # the largest sub-block scale is stored as 63 (Q4_K) / -128 (Q6_K): the super-scale is
    # chosen to make it so (rows of this data have positive and negative weights)
    b = b4[1:-2]  # skip the zero super-blocks (x[0, :256] and the zero last row)
    sc = np.concatenate([b[:, 4:8] & 63, (b[:, 12:16] & 15) | ((b[:, 4:8] >> 2) & 48)], axis=1)
    assert (sc.max(axis=1) == 63).all()
    assert (b6[1:-2, 192:208].view(np.int8).min(axis=1) == -128).all()


def test_q6_k_sub_block_whose_squares_overflow_does_not_poison_its_super_block():
    # make_qx_quants weighs by x^2: 1e30^2 overflows float32 and that sub-block's scale is
    # NaN. llama.cpp's `abs_scale > max_abs_scale` skips it, so it gets scale 0 and the
    # other fifteen sub-blocks are quantized as usual; all-NaN super-blocks are all zero.
    x = np.random.default_rng(4).standard_normal((2, 256)).astype(np.float32)
    x[0, :16] = 1e30
    x[1, :] = 1e30
    b = gb.quantize_blocks(x, "q6_k")
    y = gb.dequantize_blocks(b, "q6_k")
    assert np.isfinite(b[0, 208:].view(np.float16)).all() and b[0, 192] == 0
    assert np.abs(y[0, 16:] - x[0, 16:]).max() < 0.05 and not y[0, :16].any()
    assert not b[1].any()


# Two super-blocks (an outlier, a zero sub-block, a constant run) and their bytes from
# llama.cpp's C reference, quantize_row_q4_K_ref / quantize_row_q6_K_ref in ggml-quants.c
# (compiled without fused multiply-add contraction).
_GOLDEN_Q4_K = (
    "fb1cc128fff7f7f8fff6f3fcae8a3478a0367ab3377df447be044bc1188bc2589cd5599f2569d2266ce339ad"
    "e37abd07579bd3579f2468d0246ce138ace179bd0579b2468af2468ef35ace139bd0279b9cd568af2569d236"
    "7ce339ad037ab0178ab3478bf4589e145bc1259bd2289cd5067ab2377bf3478ff35bc0148cc0289cd4599d25"
    "69a1256de236aee23abe067b4d22b028587f4054fffbc0f5c76657963b44283c65293f152c52163df3194d06"
    "2a40173a43173e54284e042b41183c52e060a02070b03070f030b0f040c00080d04090d050901050d02060e0"
    "20a0f0607ab0377bb4478ef448cf155cc1189cd25595d565a52565e53575e535b50575b5c0579bd4589f2468"
    "d1256ce138ace279bd067ab2468af3478e135ac0149bd027"
)
_GOLDEN_Q6_K = (
    "100b0afe0de7c0dfb9d2adb5a08f97828e9c9ca0cabad7c8ebd5e909f3170724f43473216200418f307ebd6e"
    "aced8bcc16c7c7f8e8a9180acb3afd6b1d1c8e30aeb9bbc0d7d9f4d50bf2182910362d33f2b171c08feea16d"
    "bf7b3a8d490b6b1917e8e9090bdb292dfd4b1f6d313e8f537f7f8d8d90ababb9a9dcb7dafae508f8249dfa54"
    "8d2b51f9274dfa108ef6508a186e851862c55fb2c46fb118afc528b2186e8558a2c55fb2d46fc118b3c52bb2"
    "e5538a2552b9244ef8238ef4138d24527f88936e926d5e7b808d738b6ea2756ec910010f0f0f0d0d000a0e08"
    "080c060a0a0708010b0a0e0d08000f0a020d06000f087f8c637f58324e35322b251e0004fef864f343822171"
    "0051ae307ddc6dbbfc9bbaf0fddddf0faba1818dc36095a24278b0a0c0b0d0e0e0f0f000001020203030a2e2"
    "a070b08ebe806c9f6a4a6c481a5ad708e9f90a1bfc2a3d3e4c3f5e415f80058649c48649c48a08c74a04c349"
    "c44aca048dca448d0b41c9074dca008ec6403a944d2a9449e7913ae38d3bd04e3790b4186c8458a0c45cb014"
    "7cc018b0c42ce22080e40000e5171e0ae31ce21be71cc018"
)


def _golden_input() -> np.ndarray:
    i = np.arange(512)
    x = (((i * 37) % 101 - 50) / 25 + ((i * 11) % 7 - 3) / 8).astype(np.float32)
    x[300], x[320:352], x[400:416] = 9.5, 0.0, -0.75
    return x


@pytest.mark.parametrize("kind, golden", [("q4_k", _GOLDEN_Q4_K), ("q6_k", _GOLDEN_Q6_K)])
def test_k_quant_bytes_equal_llama_cpp_reference(kind, golden):
    assert gb.quantize_blocks(_golden_input(), kind).tobytes().hex() == golden


def test_round_trip_error_ordering_on_gaussian_data():
    # measured: q8_0 0.0054, q6_k 0.0178, q5_1 0.038, q5_0 0.043, q4_k 0.071, q4_1 0.078,
    # q4_0 0.086, mxfp4 0.115, tq1_0 = tq2_0 0.81 (ternary: not meant for Gaussian weights)
    x = np.random.default_rng(0).standard_normal((32, 1024)).astype(np.float32)
    err = {}
    for kind in ALL_KINDS:
        y = gb.dequantize_blocks(gb.quantize_blocks(x, kind), kind)
        err[kind] = float(np.linalg.norm(y - x) / np.linalg.norm(x))
    assert err["q8_0"] < 0.006
    assert err["q8_0"] < err["q6_k"] < 0.02
    assert err["q6_k"] < err["q5_1"] < err["q5_0"] < 0.047
    assert err["q5_0"] < err["q4_k"] < 0.076
    assert err["q4_k"] < err["q4_1"] < err["q4_0"] < 0.092
    assert err["q4_k"] < 0.87 * err["q4_0"]  # the k-quant search is worth ~17% error
    assert err["q4_0"] < err["mxfp4"] < 0.125
    assert err["tq1_0"] == err["tq2_0"] < 0.85  # the same trits, packed two ways


# ---------------------------------------------------------------- layout, API, views


def test_torch_input_gives_torch_output_and_3d_shapes():
    x = torch.randn(2, 3, 64)
    b = gb.quantize_q4_0(x)
    assert isinstance(b, torch.Tensor) and b.shape == (2, 3, 36)
    assert gb.dequantize_q4_0(b).shape == (2, 3, 64)
    assert np.array_equal(b.numpy(), quants.quantize(x.numpy(), T.Q4_0))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_torch_in_torch_out_every_kind(kind):
    x = torch.randn(2, 3, 512, generator=torch.Generator().manual_seed(0))
    b = gb.quantize_blocks(x, kind)
    n = 512 // gb.BLOCK_SIZES[kind] * gb.BLOCK_BYTES[kind]
    assert isinstance(b, torch.Tensor) and b.dtype == torch.uint8 and b.shape == (2, 3, n)
    assert np.array_equal(b.numpy(), gb.quantize_blocks(x.numpy(), kind))
    y = gb.dequantize_blocks(b, kind)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (2, 3, 512)
    assert gb.dequantize_blocks(b, kind.upper()).equal(y)  # kind is case-insensitive


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


def test_known_answer_q4_1_and_q5_1_blocks():
    # min 100, max 115 -> Q4_1 d = 1, m = 100, codes 0..15 twice: byte j = j | j << 4
    x = (np.r_[np.arange(16), np.arange(16)] + 100).astype(np.float32)
    b = gb.quantize_blocks(x, "q4_1")
    assert b.shape == (20,) and list(b[:4].view(np.float16)) == [1.0, 100.0]
    assert list(b[4:]) == [j | j << 4 for j in range(16)]
    assert np.array_equal(gb.dequantize_blocks(b, "q4_1"), x)
    # Q5_1: min 0, max 31 -> d = 1, codes q[i] = i; bit 4 of q[i] is set for i >= 16
    x = np.arange(32, dtype=np.float32)
    b = gb.quantize_blocks(x, "q5_1")
    assert b.shape == (24,) and list(b[:4].view(np.float16)) == [1.0, 0.0]
    assert b[4:8].view("<u4")[0] == 0xFFFF0000
    assert list(b[8:]) == [j | j << 4 for j in range(16)]
    assert np.array_equal(gb.dequantize_blocks(b, "q5_1"), x)


def test_known_answer_q5_0_block():
    # x[0] = -16 has the largest magnitude: d = -16 / -16 = 1, q = x + 16 = 0..31
    x = np.arange(32, dtype=np.float32) - 16
    b = gb.quantize_blocks(x, "q5_0")
    assert b.shape == (22,) and b[:2].view(np.float16)[0] == 1.0
    assert b[2:6].view("<u4")[0] == 0xFFFF0000  # bit i = bit 4 of q[i]
    assert list(b[6:]) == [j | j << 4 for j in range(16)]  # low nibbles, Q4_0 order
    assert np.array_equal(gb.dequantize_blocks(b, "q5_0"), x)


def test_known_answer_mxfp4_block():
    # max|x| = 7: e = floor(log2 7) - 2 + 127 = 127, d = 2^(127 - 128) = 0.5, so the grid is
    # 0.5 * kvalues = +-(0, 0.5, 1, 1.5, 2, 3, 4, 6); 7 clips to 6; ties take the lower index
    x = np.zeros(32, dtype=np.float32)
    x[:8] = [7.0, 0.25, 2.5, -2.5, 5.0, -5.0, -0.5, 1.5]
    b = gb.quantize_blocks(x, "mxfp4")
    assert b.shape == (17,) and b[0] == 127
    codes = np.r_[b[1:] & 15, b[1:] >> 4]
    assert list(codes[:8]) == [7, 0, 4, 12, 6, 14, 9, 3] and not codes[8:].any()
    assert list(gb.dequantize_blocks(b, "mxfp4")[:8]) == [6.0, 0.0, 2.0, -2.0, 4.0, -4.0, -0.5, 1.5]


def test_known_answer_ternary_blocks():
    # d = max|x| = 1 and trits t[i] = i % 3, written out from the layout in the docstring
    t = np.arange(256) % 3
    x = (t - 1).astype(np.float32)
    b1 = gb.quantize_blocks(x, "tq1_0")
    p5, p4 = [81, 27, 9, 3, 1], [81, 27, 9, 3]
    v = [sum(p * t[j + 32 * k] for k, p in enumerate(p5)) for j in range(32)]
    v += [sum(p * t[160 + j + 16 * k] for k, p in enumerate(p5)) for j in range(16)]
    v += [sum(p * t[240 + j + 4 * k] for k, p in enumerate(p4)) for j in range(4)]
    assert b1.shape == (54,) and list(b1[:52]) == [(256 * vi + 242) // 243 for vi in v]
    assert b1[0] == 69 and b1[52:].view(np.float16)[0] == 1.0  # v = 0,2,1,0,2 -> 65 -> 69
    b2 = gb.quantize_blocks(x, "tq2_0")
    expect = [sum(int(t[128 * g + 32 * k + j]) << (2 * k) for k in range(4)) for g in range(2) for j in range(32)]
    assert b2.shape == (66,) and list(b2[:64]) == expect and b2[64:].view(np.float16)[0] == 1.0
    for b, kind in [(b1, "tq1_0"), (b2, "tq2_0")]:
        assert np.array_equal(gb.dequantize_blocks(b, kind), x)


def test_block_tables_match_gguf_and_bits_per_weight():
    for kind, qtype in ALL_KINDS.items():
        assert (gb.BLOCK_SIZES[kind], gb.BLOCK_BYTES[kind]) == GGML_QUANT_SIZES[qtype]
    assert gb.BITS_PER_WEIGHT == {
        "q8_0": 8.5,
        "q4_0": 4.5,
        "q4_1": 5.0,
        "q5_0": 5.5,
        "q5_1": 6.0,
        "mxfp4": 4.25,
        "tq1_0": 1.6875,
        "tq2_0": 2.0625,
        "q4_k": 4.5,
        "q6_k": 6.5625,
    }
    assert set(gb.KINDS) == set(ALL_KINDS)
    # llama.cpp's fallback types have 32-weight blocks
    assert gb.FALLBACK == {"q4_k": "q5_0", "q6_k": "q8_0", "tq1_0": "q4_0", "tq2_0": "q4_0"}
    assert all(gb.BLOCK_SIZES[f] == 32 for f in gb.FALLBACK.values())


@pytest.mark.parametrize("kind", ["q8_0", "q4_0", "q5_0", "tq2_0"])
def test_bits_per_weight_and_qtensor_view(kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 512)).astype(np.float32)
    b = gb.quantize_blocks(x, kind)
    qt = gb.to_qtensor(b, kind)
    assert qt.group_size == gb.BLOCK_SIZES[kind] and qt.scale_dtype == "fp16"
    assert qt.nbytes == b.size
    assert qt.bits_per_weight == gb.BITS_PER_WEIGHT[kind]
    assert np.array_equal(qt.dequantize().numpy(), gb.dequantize_blocks(b, kind))
    # storable in a packed layer; its memory equals the GGUF bytes
    layer = ql.nn.QuantizedLinear.from_qtensor(qt)
    assert layer.weight_nbytes == b.size


def test_quantlab_bits_per_weight_formula_for_q4_0():
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
        gb.quantize_blocks(np.zeros(32, dtype=np.float32), "q3_k")
    with pytest.raises(ValueError, match="multiple of 18 bytes"):
        gb.dequantize_q4_0(np.zeros(20, dtype=np.uint8))
    with pytest.raises(TypeError, match="blocks must be uint8"):
        gb.dequantize_q8_0(np.zeros(34, dtype=np.int8))
    with pytest.raises(ValueError, match="kind must be"):
        gb.to_qtensor(np.zeros(34, dtype=np.uint8), "Q5")
    with pytest.raises(TypeError, match="kind must be a str such as 'q4_0', got int"):
        gb.dequantize_blocks(np.zeros(34, dtype=np.uint8), 8)
    with pytest.raises(ValueError, match="must be finite"):
        gb.quantize_blocks(np.r_[np.inf, np.zeros(255)].astype(np.float32), "q4_k")
    with pytest.raises(ValueError, match=r"multiple of 32 for q5_1, got shape \(2, 48\)"):
        gb.quantize_blocks(np.zeros((2, 48), dtype=np.float32), "q5_1")
    with pytest.raises(ValueError, match=r"multiple of 144 bytes for q4_k, got shape \(100,\)"):
        gb.dequantize_blocks(np.zeros(100, dtype=np.uint8), "q4_k")


@pytest.mark.parametrize("kind", ["q4_k", "q6_k", "tq1_0", "tq2_0"])
def test_row_not_a_whole_super_block_names_llama_cpp_fallback(kind):
    x = np.zeros((4, 288), dtype=np.float32)  # 288 = 9 * 32: fine for the fallback type
    fallback = gb.FALLBACK[kind]
    msg = rf"x must be a multiple of 256 for {kind}, got shape \(4, 288\)"
    with pytest.raises(ValueError, match=msg) as e:
        gb.quantize_blocks(x, kind)
    assert f"falls back to {fallback}" in str(e.value)
    assert np.array_equal(gb.quantize_blocks(x, fallback), quants.quantize(x, KINDS[fallback]))
    # not a multiple of 32 either: llama.cpp stores the tensor as f16
    with pytest.raises(ValueError, match=r"falls back to f16 \(the row is not a multiple of 32"):
        gb.quantize_blocks(np.zeros((4, 300), dtype=np.float32), kind)


@pytest.mark.parametrize("kind", ["q4_1", "q5_1", "mxfp4", "tq1_0", "q4_k", "q6_k"])
def test_to_qtensor_refuses_kinds_it_cannot_express(kind):
    b = gb.quantize_blocks(np.ones((2, 256), dtype=np.float32), kind)
    with pytest.raises(ValueError, match=f"kind '{kind}' cannot be viewed as a QTensor"):
        gb.to_qtensor(b, kind)


def test_to_qtensor_refuses_tq2_0_code_3():
    b = gb.quantize_blocks(np.ones(256, dtype=np.float32), "tq2_0")  # every trit is 2
    b[0] |= 3  # weight 0 gets code 3: value +2 d, which int2 cannot hold
    assert gb.dequantize_blocks(b, "tq2_0")[0] == 2.0
    with pytest.raises(ValueError, match="code 3"):
        gb.to_qtensor(b, "tq2_0")
