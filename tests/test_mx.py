"""Block-scaled formats (MX, NVFP4): a per-block reference written from the OCP MX v1.0
specification, torch's fp8 and e8m0 dtypes, gguf's MXFP4 and NVFP4 blocks, sizes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from quantlab.formats import BLOCK_FORMAT_NAMES, BlockFormat
from quantlab.mx import e8m0_decode, scale_codes

import quantlab as ql
from quantlab import memory as mem

MX = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8")

# The spec's element formats, written out here independently of quantlab.formats:
# (exponent bits, mantissa bits, bias, max normal, emax_elem); None for MXINT8.
SPEC = {
    "mxfp8_e4m3": (4, 3, 7, 448.0, 8),
    "mxfp8_e5m2": (5, 2, 15, 57344.0, 15),
    "mxfp6_e3m2": (3, 2, 3, 28.0, 4),
    "mxfp6_e2m3": (2, 3, 1, 7.5, 2),
    "mxfp4": (2, 1, 1, 6.0, 2),
    "mxint8": None,
}


def _grid(ebits: int, mbits: int, bias: int, max_normal: float) -> list[float]:
    """Non-negative element values in code order (subnormals first), up to max normal."""
    out = []
    for e in range(1 << ebits):
        for m in range(1 << mbits):
            v = m / (1 << mbits) * 2.0 ** (1 - bias) if e == 0 else (1 + m / (1 << mbits)) * 2.0 ** (e - bias)
            if v <= max_normal:
                out.append(v)
    return out


def _round_elem(v: float, grid: list[float]) -> float:
    """Nearest grid value, ties to the even code, saturating at the max normal."""
    a = min(abs(v), grid[-1])
    best = min(range(len(grid)), key=lambda i: (abs(grid[i] - a), i % 2))
    return math.copysign(grid[best], v)


def _mx_reference(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The spec's conversion, block by block in plain Python: (values, E8M0 codes)."""
    spec = SPEC[name]
    emax = 0 if spec is None else spec[4]
    grid = None if spec is None else _grid(*spec[:4])
    rows = x.reshape(-1, 32).astype(np.float64)
    vals, codes = np.empty_like(rows), []
    for r, block in enumerate(rows):
        amax = max(abs(float(v)) for v in block)
        shared = -127 if amax == 0 else max(math.frexp(amax)[1] - 1 - emax, -127)
        X = 2.0**shared
        codes.append(shared + 127)
        for i, v in enumerate(block):
            if grid is None:  # int8 with an implicit 2^-6, symmetric range, ties to even
                q = min(max(round(v / X * 64), -127), 127) / 64  # Python's round: half to even
            else:
                q = _round_elem(v / X, grid)
            vals[r, i] = q * X
    return vals.reshape(x.shape), np.array(codes).reshape(*x.shape[:-1], -1)


def _blocks(rng: np.random.Generator, rows: int = 6) -> np.ndarray:
    """Rows of 64 with blocks of very different magnitudes, a zero block, a tiny one."""
    x = rng.standard_normal((rows, 64)).astype(np.float32)
    x *= np.float32(10.0) ** rng.integers(-6, 6, size=(rows, 1)).astype(np.float32)
    x[0, :32] = 0.0
    x[1, 32:] *= np.float32(1e-38)  # subnormal float32 values: the scale clamps at 2^-127
    x[2, 5] = 2.0**7  # a power of two as the block maximum
    return x


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize("name", MX)
def test_mx_matches_the_per_block_spec_reference(name):
    x = _blocks(np.random.default_rng(1))
    q = ql.quantize(x, name)
    ref, ref_codes = _mx_reference(x, name)
    got = q.dequantize()
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got.astype(np.float64), ref)
    assert scale_codes(q).numpy().tolist() == ref_codes.tolist()
    assert q.scale.shape == (6, 2) and q.granularity == "group" and q.group_size == 32
    assert q.scale_dtype == "e8m0" and q.tensor_scale is None


@pytest.mark.parametrize("name", MX)
def test_mx_zero_block_takes_the_smallest_scale_and_saturates(name):
    fmt = ql.get_format(name)
    x = np.zeros((2, 32), np.float32)
    # amax/X just below 2^(emax+1): beyond the element's max normal, so it saturates
    x[1, 0] = np.float32(2.0 ** (fmt.emax_elem + 1) * (1 - 2.0**-10))
    x[1, 1] = -x[1, 0]
    q = ql.quantize(x, name)
    assert scale_codes(q)[:, 0].tolist() == [0, 127]  # 2^-127 for the zero block, 2^0
    xh = q.dequantize()
    assert not xh[0].any()
    assert xh[1, 0] == fmt.max_value and xh[1, 1] == -fmt.max_value


def test_mxfp8_e5m2_saturates_where_the_plain_cast_overflows():
    x = np.full((1, 32), 1.0, np.float32)
    x[0, 0] = np.float32(65535.0)  # X = 2^0: 65535 is past e5m2's 57344
    assert math.isinf(ql.quantize(x[0, :1], "fp8_e5m2", scaled=False).dequantize()[0])
    assert ql.quantize(x, "mxfp8_e5m2").dequantize()[0, 0] == 57344.0


def test_mxint8_by_hand():
    # amax 1.5 -> X = 2^0; codes round(64 x) to even: 0.0078125*64 = 0.5 -> 0, 1.5 -> 96
    x = np.zeros(32, np.float32)
    x[:4] = [1.5, 0.0078125, -0.0234375, 1.99]
    q = ql.quantize(x, "mxint8")
    assert q.codes[:4].tolist() == [96, 0, -2, 127]  # -1.5 -> -2 (even); 127.36 -> 127
    assert float(q.scale[0]) == 1.0 and q.codes.dtype == torch.int8


def test_e8m0_scales_agree_with_torch_float8_e8m0fnu():
    codes = torch.arange(256, dtype=torch.uint8)
    ours = e8m0_decode(codes)
    theirs = codes.view(torch.float8_e8m0fnu).float()
    assert torch.equal(torch.isnan(ours), torch.isnan(theirs)) and bool(torch.isnan(ours[255]))
    assert torch.equal(ours[:255], theirs[:255])
    q = ql.quantize(_blocks(np.random.default_rng(2)), "mxfp4")
    assert torch.equal(scale_codes(q), q.scale.to(torch.float8_e8m0fnu).view(torch.uint8))


@pytest.mark.parametrize("name, dtype", [("mxfp8_e4m3", torch.float8_e4m3fn), ("mxfp8_e5m2", torch.float8_e5m2)])
def test_mxfp8_elements_agree_with_torch_fp8_casts(name, dtype):
    x = torch.from_numpy(_blocks(np.random.default_rng(3)))
    q = ql.quantize(x, name)
    X = q.scale.unsqueeze(-1)
    top = torch.finfo(dtype).max
    v = (x.reshape(6, 2, 32) / X).clamp(-top, top).to(dtype)
    assert torch.equal(q.codes.reshape(6, 2, 32), v.view(torch.uint8))  # bit patterns
    got = q.dequantize()
    assert isinstance(got, torch.Tensor)
    assert torch.equal(got, (v.float() * X).reshape(6, 64))


def test_float4_e2m1fn_x2_exists_but_cannot_be_cast_on_this_torch():
    # torch has the dtype, but no cast kernel to or from it on CPU: the fp4 elements are
    # checked against the spec reference and gguf instead.
    t = torch.tensor([0x21], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    with pytest.raises((RuntimeError, NotImplementedError)):
        t.to(torch.float32)


@pytest.mark.parametrize("name", BLOCK_FORMAT_NAMES)
def test_block_formats_are_idempotent_and_keep_dtypes(name):
    x = torch.from_numpy(_blocks(np.random.default_rng(4)))
    q = ql.quantize(x, name)
    q2 = ql.quantize(q.dequantize(), name)
    assert torch.equal(q2.codes, q.codes) and torch.equal(q2.scale, q.scale)
    assert torch.equal(ql.fake_quantize(x, name), q.dequantize())
    assert torch.equal(ql.dequantize(q), q.dequantize())
    out = torch.empty_like(x)
    assert ql.fake_quantize(x, name, out=out) is out and torch.equal(out, q.dequantize())
    x16 = x[2:].to(torch.float16)
    assert ql.fake_quantize(x16, name).dtype == torch.float16
    x64 = x.double()
    assert ql.fake_quantize(x64, name).dtype == torch.float64
    assert torch.equal(ql.quantize(x64, name).codes, q.codes)
    same = ql.quantize(x, name, granularity="group", group_size=ql.get_format(name).block_size)
    assert torch.equal(same.codes, q.codes)


# --------------------------------------------------------------------------- gguf


def _gguf():
    return pytest.importorskip("gguf")


def _mxfp4_gguf_bytes(q) -> np.ndarray:
    """quantlab's mxfp4 QTensor in gguf's block layout: E8M0 byte, then 16 bytes whose
    low nibbles hold elements 0..15 and high nibbles 16..31."""
    codes = q.codes.reshape(-1, 32).numpy().astype(np.uint8)
    e = scale_codes(q).reshape(-1, 1).numpy()
    qs = codes[:, :16] | (codes[:, 16:] << 4)
    return np.concatenate([e, qs], axis=1).reshape(*q.shape[:-1], -1)


def test_mxfp4_agrees_with_gguf_mxfp4():
    gguf = _gguf()
    T = gguf.GGMLQuantizationType.MXFP4
    x = np.random.default_rng(5).standard_normal((8, 256)).astype(np.float32)
    x[0, :32] = 0.0
    q = ql.quantize(x, "mxfp4")
    ours = _mxfp4_gguf_bytes(q)
    theirs = gguf.quants.quantize(x, T)
    assert ours.shape == theirs.shape == (8, 8 * 17)
    # gguf writes +0 (code 0) where quantlab keeps the sign of a negative value that
    # rounds to zero (code 8, -0): the same value
    o, t = ours.reshape(-1, 17).copy(), theirs.reshape(-1, 17).copy()
    for a in (o, t):
        lo, hi = a[:, 1:] & 0x0F, a[:, 1:] >> 4
        lo[lo == 8], hi[hi == 8] = 0, 0
        a[:, 1:] = lo | (hi << 4)
    np.testing.assert_array_equal(o, t)
    # decoding: gguf's reader on quantlab's bytes gives quantlab's values, bit for bit
    np.testing.assert_array_equal(gguf.quants.dequantize(ours, T), q.dequantize())
    np.testing.assert_array_equal(gguf.quants.dequantize(theirs, T), q.dequantize())


def test_mxfp4_differs_from_gguf_only_by_its_documented_rules():
    gguf = _gguf()
    T = gguf.GGMLQuantizationType.MXFP4
    # 1. ties: amax 4 -> X = 2^0. 0.75, 1.75, 3.5 lie halfway between e2m1 values. The
    #    spec rounds to the even code (1, 2, 4); gguf takes the first nearest entry of its
    #    table, the smaller magnitude (0.5, 1.5, 3).
    x = np.zeros((1, 32), np.float32)
    x[0, :7] = [4.0, 0.75, 1.75, 3.5, -1.75, 1.25, 5.0]
    ours = ql.quantize(x, "mxfp4").dequantize()[0, :7]
    theirs = gguf.quants.dequantize(gguf.quants.quantize(x, T), T)[0, :7]
    assert ours.tolist() == [4.0, 1.0, 2.0, 4.0, -2.0, 1.0, 4.0]
    assert theirs.tolist() == [4.0, 0.5, 1.5, 3.0, -1.5, 1.0, 4.0]  # 1.25, 5.0: both even
    # 2. exponent: gguf takes floor(log2(amax)) from a float32 log2, which rounds up just
    #    below a power of two; quantlab reads it from the bits.
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = np.float32(2.0**20 * (1 - 2.0**-24))  # floor(log2) is 19
    assert float(np.floor(np.log2(x[0, 0]))) == 20.0
    assert scale_codes(ql.quantize(x, "mxfp4")).item() == 19 - 2 + 127
    assert gguf.quants.quantize(x, T)[0, 0] == 20 - 2 + 127


def test_nvfp4_decodes_like_gguf_nvfp4():
    gguf = _gguf()
    T = gguf.GGMLQuantizationType.NVFP4
    x = np.random.default_rng(6).standard_normal((4, 128)).astype(np.float32)
    x[1] *= 1e-3
    q = ql.quantize(x, "nvfp4")
    # gguf's layout: super-blocks of 64 = 4 e4m3 scale bytes, then 4 x 8 bytes whose low
    # nibbles hold elements 0..7 of a sub-block of 16 and high nibbles 8..15
    codes = q.codes.reshape(-1, 4, 16).numpy().astype(np.uint8)
    sc = scale_codes(q).reshape(-1, 4).numpy()
    qs = (codes[:, :, :8] | (codes[:, :, 8:] << 4)).reshape(-1, 32)
    data = np.concatenate([sc, qs], axis=1).reshape(4, -1)
    decoded = gguf.quants.dequantize(data, T) * q.tensor_scale.numpy()  # float32 * fp32 scale
    np.testing.assert_array_equal(decoded, q.dequantize())


def test_nvfp4_matches_its_two_level_recipe():
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32))
    x[2, 16:32] = 0.0
    q = ql.quantize(x, "nvfp4")
    g = x.abs().max() / (448.0 * 6.0)
    blocks = x.reshape(3, 4, 16)
    s = (blocks.abs().amax(-1) / 6.0 / g).clamp(2.0**-6, 448.0)
    s = s.to(torch.float8_e4m3fn).float()
    assert float(q.tensor_scale) == float(g) and torch.equal(q.scale, s)
    assert torch.equal(scale_codes(q), s.to(torch.float8_e4m3fn).view(torch.uint8))
    v = (blocks / (g * s).unsqueeze(-1)).clamp(-6, 6).double().numpy()
    grid = _grid(2, 1, 1, 6.0)
    ref = np.vectorize(lambda a: _round_elem(float(a), grid))(v)
    elems = (torch.from_numpy(ref).float() * s.unsqueeze(-1)) * g
    assert torch.equal(q.dequantize(), elems.reshape(3, 64))
    z = ql.quantize(torch.zeros(2, 16), "nvfp4")
    assert float(z.tensor_scale) == 1.0 and not q.dequantize()[2, 16:32].any()
    assert not z.dequantize().any()


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "name, bits",
    [
        ("mxfp8_e4m3", 8.25),
        ("mxfp8_e5m2", 8.25),
        ("mxfp6_e3m2", 6.25),
        ("mxfp6_e2m3", 6.25),
        ("mxfp4", 4.25),
        ("mxint8", 8.25),
        ("nvfp4", 4.5),
    ],
)
def test_sizes_count_the_scales(name, bits):
    x = np.ones((4, 256), np.float32)
    q = ql.quantize(x, name)
    extra = 4 if name == "nvfp4" else 0  # nvfp4's fp32 scale per tensor
    assert q.nbytes == 1024 * bits / 8 + extra
    assert q.bits_per_weight == bits + 8 * extra / 1024
    assert ql.get_format(name).bits_per_weight == bits
    assert mem.bits_per_weight(name) == bits
    assert mem.weight_bytes(1e9, name) == 1e9 * bits / 8
    assert mem.QuantSpec(name).bits_per_weight() == bits
    assert mem.bits_per_weight(name, group_size=ql.get_format(name).block_size) == bits
    assert mem.kv_cache_bytes(1, 1, 32, 1, dtype=name) == 2 * 32 * bits / 8
    assert mem.format_bits(name) == int(bits)  # the element width alone
    assert len(q.packed()) == 1024 * ql.get_format(name).bits // 8


def test_nvfp4_memory_accepts_its_own_scale_format():
    assert mem.bits_per_weight("nvfp4", 16, "fp8_e4m3") == 4.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(group_size=64), "blocks of 32: group_size must be None or 32, got 64"),
        (dict(scale_dtype="fp32"), "scale_dtype"),
        (dict(zero_point_dtype="fp16"), "zero_point_dtype"),
        (dict(double_quant=True), "double_quant"),
    ],
)
def test_memory_refuses_contradicting_scale_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mem.bits_per_weight("mxfp4", **kwargs)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_last_dimension_must_be_a_multiple_of_the_block(name):
    k = ql.get_format(name).block_size
    with pytest.raises(ValueError, match=f"multiple of its block size {k}, got last dimension 40"):
        ql.quantize(np.ones((3, 40), np.float32), name)
    with pytest.raises(ValueError, match="0-d"):
        ql.quantize(np.array(1.0, np.float32), name)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxint8", "nvfp4"])
def test_nan_and_infinity_are_refused(name, bad):
    x = np.ones((1, 32), np.float32)
    x[0, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.quantize(x, name)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.fake_quantize(x, name)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(granularity="channel"), ValueError, "granularity='channel'"),
        (dict(granularity="group"), ValueError, "needs group_size"),
        (dict(granularity="group", group_size=16), ValueError, "group_size must be None or 32, got 16"),
        (dict(group_size=32.0), TypeError, "group_size"),
        (dict(symmetric=False), ValueError, "symmetric=False"),
        (dict(symmetric="no"), TypeError, "symmetric"),
        (dict(clip_ratio=0.9), ValueError, "clip_ratio must be 1, got 0.9"),
        (dict(percentile=99.0), ValueError, "percentile must be None"),
        (dict(scale_dtype="fp16"), ValueError, "e8m0.*got 'fp16'"),
        (dict(scaled=False), ValueError, "scaled must be None or True, got False"),
    ],
)
def test_scale_options_are_refused(kwargs, err, match):
    x = np.ones((2, 64), np.float32)
    with pytest.raises(err, match=match):
        ql.quantize(x, "mxfp4", **kwargs)
    with pytest.raises(err, match=match):
        ql.fake_quantize(x, "mxfp4", **kwargs)


def test_qparams_and_choose_qparams_are_refused():
    x = np.ones((2, 64), np.float32)
    qp = ql.choose_qparams(x, "fp4_e2m1")
    with pytest.raises(ValueError, match="qparams must be None"):
        ql.quantize(x, "mxfp4", qparams=qp)
    with pytest.raises(ValueError, match="choose_qparams does not apply"):
        ql.choose_qparams(x, "mxfp4")


def test_scales_beyond_e8m0_are_refused():
    with pytest.raises(ValueError, match="E8M0 scale would need 2\\^"):
        ql.quantize(np.full(32, 1e300), "mxfp4")
    with pytest.raises(ValueError, match="float32's range"):
        ql.quantize(np.full(16, 1e300), "nvfp4")


def test_empty_and_block_format_objects():
    q = ql.quantize(np.zeros((0, 32), np.float32), "mxfp4")
    assert q.codes.shape == (0, 32) and q.nbytes == 0 and q.dequantize().shape == (0, 32)
    fmt = ql.get_format("MXFP4")
    assert isinstance(fmt, BlockFormat) and fmt is ql.get_format("mxfp4_e2m1")
    assert fmt.levels == 15 and ql.get_format("mxint8").levels == 255
    with pytest.raises(TypeError, match="element"):
        BlockFormat("bad", 4, element=None)
    with pytest.raises(ValueError, match="scale_format"):
        BlockFormat("bad", 4, element=ql.get_format("fp4"), scale_format="fp16")
    with pytest.raises(TypeError):
        scale_codes(ql.quantize(np.ones(4, np.float32), "int4"))
    with pytest.raises(ValueError, match="0..255"):
        e8m0_decode(torch.tensor([256]))
