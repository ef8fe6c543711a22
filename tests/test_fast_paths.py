"""The hot paths agree with the general ones, bit for bit.

The library rounds and quantizes large tensors on cache-sized chunks, uses torch's own
cast for fp16/bf16, and has a fused, in-place ``fake_quantize``. These tests compare each
fast path with the path it short-cuts, on inputs that cross chunk boundaries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from quantlab._fast import CHUNK_ELEMENTS

import quantlab as ql
from quantlab import formats

FLOAT_NAMES = ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, except that any NaN matches any NaN."""
    return a.dtype == b.dtype and a.shape == b.shape and bool(((_bits(a) == _bits(b)) | (a.isnan() & b.isnan())).all())


def _every_kind_of_float32(n: int, seed: int) -> torch.Tensor:
    """Random bit patterns: every sign, exponent (subnormal, inf, NaN) and mantissa."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(-(2**31), 2**31 - 1, (n,), generator=g, dtype=torch.int64)
    return bits.to(torch.int32).view(torch.float32)


def _near_grid(fmt: formats.FloatFormat) -> torch.Tensor:
    """Every value of ``fmt``, every midpoint between neighbours, and 3 ulps either side."""
    v = fmt.values()
    mids = (v[1:] + v[:-1]) / 2
    base = torch.cat([v, mids, -mids]).float()
    return torch.cat([(_bits(base) + d).view(torch.float32) for d in range(-3, 4)])


@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_round_cast_path_equals_arithmetic_path(name):
    # float32 input: fp16/bf16 take torch's cast; use_cast=False forces round(x/q)*q
    fmt = ql.get_format(name)
    x = torch.cat([_every_kind_of_float32(3 * CHUNK_ELEMENTS + 5, seed=1), _near_grid(fmt)])
    fast = fmt.round(x)
    slow = x.clone()
    fmt._round_inplace(slow, use_cast=False)
    assert _same(fast, slow)


@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_round_float32_equals_float64_route(name):
    # the same values rounded from float64 (a different code path) give the same result
    fmt = ql.get_format(name)
    x = torch.cat([_every_kind_of_float32(200_000, seed=2), _near_grid(fmt)])
    assert _same(fmt.round(x), fmt.round(x.double()).float())


def test_round_leaves_input_alone_and_keeps_shape():
    x = torch.randn(3, 5, 7)
    before = x.clone()
    r = ql.get_format("fp8_e4m3").round(x)
    assert torch.equal(x, before)
    assert r.shape == x.shape and r.data_ptr() != x.data_ptr()
    r_t = ql.get_format("fp8_e4m3").round(x.transpose(0, 2))  # non-contiguous input
    assert torch.equal(r_t, r.transpose(0, 2))


# --------------------------------------------------------------------------- fake_quantize


def _general(x, fmt, **kw):
    """The general path: quantize, then dequantize."""
    return ql.quantize(x, fmt, **kw).dequantize()


CASES = [
    ("int8", dict(granularity="channel", axis=0)),
    ("int8", dict(granularity="channel", axis=1)),
    ("int8", dict(granularity="tensor")),
    ("int8", dict(granularity="channel", axis=0, symmetric=False)),
    ("uint8", dict(granularity="channel", axis=0)),
    ("int4", dict(granularity="group", group_size=128)),
    ("int4", dict(granularity="group", group_size=32, symmetric=False)),
    ("int3", dict(granularity="channel", axis=0, clip_ratio=0.9)),
    ("int4", dict(granularity="channel", axis=0, percentile=99.0)),
    ("int8", dict(granularity="channel", axis=0, scale_dtype="fp16")),
    ("int16", dict(granularity="tensor", scale_dtype="bf16")),
    ("fp8_e4m3", dict(granularity="tensor")),
    ("fp8_e4m3", dict(granularity="channel", axis=0)),
    ("fp8_e5m2", dict(granularity="group", group_size=64)),
    ("fp4_e2m1", dict(granularity="group", group_size=32)),
    ("fp8_e4m3", dict(scaled=False)),
    ("bf16", dict()),
    ("fp16", dict()),
    ("nf4", dict(granularity="group", group_size=64)),
]


@pytest.mark.parametrize("fmt,kw", CASES, ids=[f"{f}-{kw}" for f, kw in CASES])
def test_fake_quantize_equals_quantize_then_dequantize(fmt, kw):
    g = torch.Generator().manual_seed(0)
    # 200 x 1024 = 200k elements: several chunks; outliers in a few rows
    x = torch.randn(200, 1024, generator=g)
    x[::97] *= 40.0
    want = _general(x, fmt, **kw)
    got = ql.fake_quantize(x, fmt, **kw)
    assert _same(got, want)
    out = torch.full_like(x, math.nan)
    res = ql.fake_quantize(x, fmt, out=out, **kw)
    assert res is out and _same(out, want)


def test_fake_quantize_fast_path_matches_on_awkward_inputs():
    # zeros (scale floor), a constant row, subnormals, a 3-d tensor, a 1-d tensor
    x = torch.randn(7, 300, 64)
    x[0] = 0.0
    x[1] = 2.5
    x[2] *= 1e-40
    for kw in (
        dict(granularity="channel", axis=0),
        dict(granularity="group", group_size=16),
        dict(granularity="tensor"),
    ):
        assert _same(ql.fake_quantize(x, "int4", **kw), _general(x, "int4", **kw))
    v = torch.randn(5 * CHUNK_ELEMENTS + 3)
    assert _same(ql.fake_quantize(v, "int8"), _general(v, "int8"))
    assert _same(ql.fake_quantize(v, "fp8_e4m3"), _general(v, "fp8_e4m3"))


@pytest.mark.parametrize(
    "fmt,kw",
    [
        ("int8", dict(granularity="channel", axis=0)),
        ("int4", dict(granularity="group", group_size=128, symmetric=False)),
        ("fp8_e4m3", dict(granularity="group", group_size=64)),
    ],
)
def test_fake_quantize_with_an_outlier_row_over_several_chunks(fmt, kw):
    rows = 3 * CHUNK_ELEMENTS // 512 + 37
    x = torch.randn(rows, 512, generator=torch.Generator().manual_seed(3))
    x[-1] *= 100.0
    assert _same(ql.fake_quantize(x, fmt, **kw), _general(x, fmt, **kw))


def test_fake_quantize_nan_in_a_late_chunk_reports_the_whole_tensor():
    rows = 3 * CHUNK_ELEMENTS // 512 + 37
    x = torch.randn(rows, 512)
    x[-1, :3] = math.nan
    with pytest.raises(ValueError) as fast:
        ql.fake_quantize(x, "int8", granularity="channel")
    with pytest.raises(ValueError) as general:
        ql.quantize(x, "int8", granularity="channel")
    assert str(fast.value) == str(general.value)
    assert f"3 of {x.numel()} values" in str(fast.value)


def test_fake_quantize_other_dtypes_and_numpy():
    x = torch.randn(64, 96)
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        xd = x.to(dt)
        got = ql.fake_quantize(xd, "int4", granularity="channel")
        want = _general(xd, "int4", granularity="channel")
        assert got.dtype == dt and torch.equal(got, want)
    a = x.numpy()
    got = ql.fake_quantize(a, "int8", granularity="channel")
    assert isinstance(got, np.ndarray) and np.array_equal(got, _general(a, "int8", granularity="channel"))
    buf = np.empty_like(a)
    res = ql.fake_quantize(a, "int8", granularity="channel", out=buf)
    assert res is buf and np.array_equal(buf, got)


def test_fake_quantize_out_may_be_the_input():
    x = torch.randn(40, 50)
    want = _general(x, "int4", granularity="group", group_size=10)
    ql.fake_quantize(x, "int4", granularity="group", group_size=10, out=x)
    assert torch.equal(x, want)


def test_fake_quantize_rejects_bad_out():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="out must have shape"):
        ql.fake_quantize(x, "int8", out=torch.empty(8, 4))
    with pytest.raises(TypeError, match="out must have dtype"):
        ql.fake_quantize(x, "int8", out=torch.empty(4, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="out must be"):
        ql.fake_quantize(x, "int8", out=np.empty((4, 8), np.float32))
    with pytest.raises(TypeError, match="out must be"):
        ql.fake_quantize(x.numpy(), "int8", out=torch.empty(4, 8))
    with pytest.raises(ValueError, match="out must be contiguous"):
        ql.fake_quantize(x, "int8", out=torch.empty(8, 4).t())


def test_fake_quantize_errors_still_come_from_the_checks():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="group_size must divide"):
        ql.fake_quantize(x, "int4", granularity="group", group_size=3)
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        ql.fake_quantize(x, "int8", granularity="channel")


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_pack_fast_path_equals_bitstream_layout(bits, signed):
    # the fast path must give the documented little-endian bitstream, byte for byte
    g = torch.Generator().manual_seed(bits)
    n = 2 * CHUNK_ELEMENTS + 7
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    codes = torch.randint(lo, hi, (n,), generator=g, dtype=torch.int32)
    packed = ql.pack(codes, bits)
    u = (codes & ((1 << bits) - 1)).long()
    stream = ((u.unsqueeze(1) >> torch.arange(bits)) & 1).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros((-stream.numel()) % 8)])
    want = (stream.reshape(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)
    assert torch.equal(packed, want)
    back = ql.unpack(packed, bits, n, signed=signed)
    assert back.dtype == torch.int32 and torch.equal(back, codes)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64])
def test_pack_accepts_every_integer_dtype(dtype):
    codes = torch.tensor([0, 1, 7, 3, 2, 5, 6], dtype=dtype)
    assert ql.pack(codes, 4).tolist() == [0x10, 0x37, 0x52, 0x06]


def test_pack_unpack_out_buffers():
    codes = torch.randint(-8, 8, (1001,), dtype=torch.int32)
    buf = torch.empty(501, dtype=torch.uint8)
    assert ql.pack(codes, 4, out=buf) is buf
    dst = torch.empty(1001, dtype=torch.int32)
    assert ql.unpack(buf, 4, 1001, signed=True, out=dst) is dst
    assert torch.equal(dst, codes)
    with pytest.raises(ValueError, match="out must"):
        ql.pack(codes, 4, out=torch.empty(500, dtype=torch.uint8))
    with pytest.raises(ValueError, match="out must"):
        ql.unpack(buf, 4, 1001, out=torch.empty(1000, dtype=torch.int32))
    with pytest.raises(TypeError, match="out must"):
        ql.unpack(buf, 4, 1001, out=torch.empty(1001, dtype=torch.int64))


def test_pack_range_error_in_a_late_chunk():
    codes = torch.zeros(3 * CHUNK_ELEMENTS, dtype=torch.int32)
    codes[-1] = 16
    with pytest.raises(ValueError, match=r"got values in \[0, 16\]"):
        ql.pack(codes, 4)


def test_fast_paths_agree_with_several_threads():
    # with several torch threads the chunks are larger (quantlab._fast.chunk_elements)
    from quantlab._fast import MULTI_THREAD_CHUNK_ELEMENTS, chunk_elements

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert chunk_elements() == MULTI_THREAD_CHUNK_ELEMENTS
        x = torch.randn(2 * MULTI_THREAD_CHUNK_ELEMENTS // 1024 + 3, 1024)
        for fmt, kw in [
            ("int8", dict(granularity="channel")),
            ("fp8_e4m3", dict(scaled=False)),
            ("int4", dict(granularity="group", group_size=128)),
            ("bf16", dict()),
        ]:
            assert _same(ql.fake_quantize(x, fmt, **kw), _general(x, fmt, **kw)), fmt
        codes = torch.randint(-8, 8, (x.numel() + 1,), dtype=torch.int32)
        assert torch.equal(ql.unpack(ql.pack(codes, 4), 4, codes.numel(), signed=True), codes)
    finally:
        torch.set_num_threads(old)
    assert chunk_elements() == (CHUNK_ELEMENTS if old == 1 else MULTI_THREAD_CHUNK_ELEMENTS)
