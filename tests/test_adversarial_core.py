"""Adversarial tests of the core: shared tables, 0-d and 1-d inputs, views, overlapping
buffers, unusual layouts and names.

Each class of failure has a test that pins how it is handled now (and failed before):

* decode tables are never handed out or written through (a 0-d tensor once rescaled
  fp4's table for the rest of the process);
* every granularity works on 1-d inputs (per-channel on a 1-d tensor is one scale per
  element), and ``quantize(...).dequantize()`` equals ``fake_quantize``;
* ``pack``/``unpack`` take any view and refuse an ``out=`` that overlaps their input;
* float64 inputs whose fp32 scale is subnormal dequantize exactly onto the grid;
* format names with non-ASCII digits are refused.

The property tests draw 0-d, 1-d, strided, offset, big-endian and Fortran-ordered inputs
and check that each gives what its contiguous native copy gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import quantlab as ql
from quantlab.core.formats import FORMAT_NAMES, FloatFormat, get_format
from quantlab.core.packing import pack, unpack

SETTINGS = settings(max_examples=30, deadline=None)
TABLE_FORMATS = ["fp4_e2m1", "fp6_e3m2", "fp6_e2m3", "fp8_e4m3", "fp8_e5m2", "bf16", "fp16", "nf4"]
SCALED = ["int8", "int4", "uint4", "int2", "fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp4_e2m1", "nf4"]
FINITE = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)


def _all_values(name: str) -> torch.Tensor:
    """Every code of a format decoded (what a corrupted table would change)."""
    fmt = get_format(name)
    n = len(fmt.table) if hasattr(fmt, "table") else 1 << fmt.bits
    return fmt.decode(torch.arange(n))


# --------------------------------------------------------------------------- decode tables


@pytest.mark.parametrize("name", TABLE_FORMATS)
def test_zero_d_round_trips_leave_the_decode_table_alone(name):
    before = _all_values(name)
    scaled = name not in ("bf16", "fp16")
    # the sequence of the report: a 0-d value quantized with a scale, its result changed
    q = ql.quantize(torch.tensor(1.0), name, scaled=True).dequantize()
    q *= 3
    # an unscaled 0-d cast handed back to the caller, then changed in place
    if isinstance(get_format(name), FloatFormat):
        y = ql.quantize(torch.tensor(2.0), name, scaled=False).dequantize()
        y += 100
        z = ql.fake_quantize(torch.tensor(2.0, dtype=torch.float64), name, scaled=False)
        z += 100
    codes = ql.quantize(torch.tensor(0.5), name, scaled=scaled).codes
    v = get_format(name).decode(codes)  # a 0-d lookup
    v.mul_(7)
    after = _all_values(name)
    assert torch.equal(before.isnan(), after.isnan())
    assert torch.equal(before.nan_to_num(), after.nan_to_num())
    # and the report's own sequence gives the right answer
    assert ql.quantize(torch.tensor([6.0, 3.0]), "fp4_e2m1").dequantize().tolist() == [6.0, 3.0]


@pytest.mark.parametrize("name", ["fp4_e2m1", "fp8_e4m3", "bf16"])
def test_decode_table_is_a_copy_and_the_cached_table_refuses_writes(name):
    fmt = get_format(name)
    before = _all_values(name)
    public = fmt.decode_table
    public.fill_(123.0)  # the caller's copy: writable, and nothing else changes
    assert torch.equal(_all_values(name).nan_to_num(), before.nan_to_num())
    cached = fmt._decode_table
    for write in (
        lambda t: t.mul_(2),
        lambda t: t.__setitem__(0, 1.0),
        lambda t: t.copy_(t * 0),
        lambda t: torch.mul(t, 2, out=t),
        lambda t: t[1:].add_(1),
        lambda t: t[torch.tensor(3)].add_(1),
        lambda t: t.view(-1).zero_(),
        lambda t: torch.nn.functional.relu(t, inplace=True),
    ):
        with pytest.raises(RuntimeError, match="read-only"):
            write(cached)
    with pytest.raises(ValueError, match="read-only"):
        cached.numpy()[0] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        np.asarray(cached)[0] = 5.0
    assert torch.equal(_all_values(name).nan_to_num(), before.nan_to_num())


def test_codebook_tables_refuse_writes_and_decode_copies():
    nf4 = get_format("nf4")
    with pytest.raises(RuntimeError, match="read-only"):
        nf4._table32.mul_(2)
    with pytest.raises(RuntimeError, match="read-only"):
        nf4._midpoints.zero_()
    v = nf4.decode(torch.tensor(15))
    v += 1
    assert float(nf4.decode(torch.tensor(15))) == 1.0
    with pytest.raises(ValueError, match=r"indices 0\.\.15"):
        nf4.decode(torch.tensor([16]))
    with pytest.raises(ValueError, match=r"indices 0\.\.15.*\[-1, 0\]"):
        nf4.decode(torch.tensor([-1, 0]))  # a negative index would have wrapped around


def test_fp32_scaled_dequantize_leaves_the_codes_alone():
    q = ql.quantize(torch.tensor([1.5, -2.0]), "fp32", scaled=True)
    codes = q.codes.clone()
    q.dequantize()
    assert torch.equal(q.codes, codes)  # int32 codes were once viewed as floats and scaled


def test_tables_survive_copies_and_pickles():
    import copy
    import pickle

    fmt = get_format("fp8_e4m3")
    fmt._decode_table  # noqa: B018 (builds the cache)
    for other in (copy.deepcopy(fmt), pickle.loads(pickle.dumps(fmt))):
        assert other == fmt
        assert torch.equal(other.decode(torch.arange(256)).nan_to_num(), fmt.decode(torch.arange(256)).nan_to_num())
        with pytest.raises(RuntimeError, match="read-only"):
            other._decode_table.mul_(2)


# --------------------------------------------------------------------------- 0-d inputs


@pytest.mark.parametrize("name", SCALED + ["fp16", "bf16", "fp32", "int16", "uint8"])
@pytest.mark.parametrize("value", [0.0, -1.5, 3.0e-3, 7.0])
def test_zero_d_equals_one_element(name, value):
    kw = {"symmetric": False} if name == "uint8" else {}
    x0 = torch.tensor(value)
    x1 = x0.reshape(1)
    q0, q1 = ql.quantize(x0, name, **kw), ql.quantize(x1, name, **kw)
    assert q0.shape == () and q0.codes.shape == ()
    assert torch.equal(q0.codes.reshape(1), q1.codes)
    d0 = q0.dequantize()
    assert d0.shape == () and torch.equal(d0.reshape(1), q1.dequantize())
    f0 = ql.fake_quantize(x0, name, **kw)
    assert f0.shape == () and torch.equal(f0, d0)
    n0 = ql.fake_quantize(np.array(value, np.float32), name, **kw)
    assert isinstance(n0, np.ndarray) and n0.shape == () and float(n0) == float(d0)


@pytest.mark.parametrize("granularity", ["channel", "group"])
def test_zero_d_per_channel_or_group_is_refused_by_name(granularity):
    kw = {"group_size": 1} if granularity == "group" else {}
    for fn in (ql.quantize, ql.fake_quantize, ql.choose_qparams):
        with pytest.raises(ValueError, match=f"granularity='{granularity}'.*0-d"):
            fn(torch.tensor(1.0), "int8", granularity=granularity, **kw)


# --------------------------------------------------------------------------- 1-d inputs


def test_per_channel_on_1d_is_one_scale_per_element():
    x = torch.tensor([1000.0, 1.0, 0.01])
    qp = ql.choose_qparams(x, "int8", granularity="channel")
    assert qp.scale.shape == (3,)
    assert torch.allclose(qp.scale.double(), x.double().abs() / 127, rtol=1e-6)
    fq = ql.fake_quantize(x, "int8", granularity="channel")
    q = ql.quantize(x, "int8", granularity="channel")
    assert q.scale.shape == (3,) and q.codes.tolist() == [127, 127, 127]
    assert torch.equal(q.dequantize(), fq)
    assert torch.allclose(fq, x, rtol=1e-6)


@SETTINGS
@given(
    arrays(np.float32, st.integers(1, 24), elements=FINITE),
    st.sampled_from(SCALED),
    st.sampled_from(["tensor", "channel", "group"]),
    st.booleans(),
    st.sampled_from([None, 90.0]),
)
def test_every_granularity_on_1d_agrees_with_fake_quantize(a, name, gran, sym, pct):
    kw = {"granularity": gran, "percentile": pct}
    if gran == "group":
        kw["group_size"] = next(g for g in (4, 3, 2, 1) if a.size % g == 0)
    if not sym and get_format(name).__class__.__name__ == "IntFormat":
        kw["symmetric"] = False
    q = ql.quantize(a, name, **kw)
    n_scales = {"tensor": 1, "channel": a.size, "group": a.size // kw.get("group_size", 1)}[gran]
    assert q.scale.numel() == n_scales
    d = q.dequantize()
    f = ql.fake_quantize(a, name, **kw)
    np.testing.assert_array_equal(d, f)
    t = ql.fake_quantize(torch.from_numpy(a.copy()), name, **kw)
    np.testing.assert_array_equal(t.numpy(), f)
    if gran == "channel" and kw.get("percentile") is None:  # each element is its own absmax
        fmt = get_format(name)
        assert np.all(np.abs(d - a) <= np.abs(a) * (0.51 if fmt.bits <= 4 else 0.2) + 1e-30)


# --------------------------------------------------------------------------- layouts


def _layouts(a: np.ndarray):
    """The same values as ``a`` in other layouts: big-endian, Fortran order, strided,
    reversed (negative strides), at an odd offset, and as torch views."""
    yield "big-endian", a.astype(a.dtype.newbyteorder(">"))
    if a.ndim == 2:
        yield "fortran", np.asfortranarray(a)
    wide = np.repeat(a, 2, axis=-1)
    yield "strided", wide[..., ::2]
    yield "reversed", np.flip(np.flip(a, axis=-1).copy(), axis=-1)
    buf = np.zeros(a.size + 1, a.dtype)
    buf[1:] = a.ravel()
    yield "offset", buf[1:].reshape(a.shape)
    yield "torch strided", torch.from_numpy(wide)[..., ::2]
    yield (
        "torch transposed",
        (torch.from_numpy(np.ascontiguousarray(a.T)).T if a.ndim == 2 else torch.from_numpy(a.copy())),
    )


@SETTINGS
@given(
    arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([2, 4, 8])), elements=FINITE),
    st.sampled_from(SCALED),
    st.sampled_from(["tensor", "channel", "group"]),
)
def test_every_layout_quantizes_like_its_contiguous_copy(a, name, gran):
    kw = {"granularity": gran}
    if gran == "group":
        kw["group_size"] = 2
    ref_q = ql.quantize(a, name, **kw)
    ref = ql.fake_quantize(a, name, **kw)
    for label, view in _layouts(a):
        q = ql.quantize(view, name, **kw)
        assert torch.equal(q.codes, ref_q.codes), label
        got = ql.fake_quantize(view, name, **kw)
        got = got.numpy() if isinstance(got, torch.Tensor) else got
        np.testing.assert_array_equal(got, ref, err_msg=label)
        np.testing.assert_array_equal(np.asarray(view), a, err_msg=label)  # inputs never change


@pytest.mark.parametrize("name", SCALED)
def test_constant_columns_huge_outliers_and_tiny_values(name):
    x = np.zeros((3, 8), np.float32)
    x[0] = 5.0  # an all-equal row
    x[1, 3] = 3e38  # a huge outlier
    x[2] = np.float32(1e-30)
    for gran in ("tensor", "channel", "group"):
        kw = {"granularity": gran}
        if gran == "group":
            kw["group_size"] = 4
        d = ql.quantize(x, name, **kw).dequantize()
        assert np.all(np.isfinite(d))
        np.testing.assert_array_equal(d, ql.fake_quantize(x, name, **kw))
        if gran != "tensor":
            np.testing.assert_allclose(d[0], 5.0, rtol=1e-6)  # its own scale: exact
            assert d[1, 3] == pytest.approx(3e38, rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("gran", ["tensor", "channel", "group"])
def test_non_finite_1d_inputs_raise(bad, gran):
    x = np.array([1.0, bad, 2.0, 3.0], np.float32)
    kw = {"granularity": gran}
    if gran == "group":
        kw["group_size"] = 2
    for fn in (ql.quantize, ql.fake_quantize):
        with pytest.raises(ValueError, match="NaN or infinity"):
            fn(x, "int4", **kw)


# --------------------------------------------------------------------------- float64 grids


@pytest.mark.parametrize("name", ["int8", "int4", "uint8", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "nf4"])
def test_float64_inputs_with_subnormal_fp32_scales_land_on_the_grid(name):
    x = torch.tensor([1e-38, 3e-40, -5e-39, 1e-41, 0.0], dtype=torch.float64)
    q = ql.quantize(x, name)
    assert float(q.scale) < torch.finfo(torch.float32).tiny  # a subnormal fp32 scale
    fmt = q.format
    if hasattr(fmt, "qmin"):
        vals = q.codes.double() - (0 if q.zero_point is None else q.zero_point.double())
    else:
        vals = fmt.decode(q.codes).double()
    grid = vals * q.scale.double()  # exact in float64
    assert torch.equal(q.dequantize(), grid)
    assert torch.equal(ql.fake_quantize(x, name), grid)


def test_float64_grids_of_normal_scales_are_unchanged():
    # the float64 path is taken only where float32 would lose bits: elsewhere the values
    # are the float32 products, as before
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    q = ql.quantize(x, "fp8_e4m3")
    expected = (q.format.decode(q.codes) * q.scale).double()
    assert torch.equal(q.dequantize(), expected)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["int\u0664", "uint\u0668", "int\uff14", "int\u00b2", "int\u2164"])
def test_non_ascii_digits_are_not_format_names(name):
    with pytest.raises(ValueError, match="unknown format"):
        get_format(name)
    with pytest.raises(ValueError, match="unknown format"):
        ql.quantize(torch.ones(4), name)


def test_ascii_names_still_parse():
    assert get_format(" INT4 ").name == "int4" and get_format("uint08").name == "uint8"
    assert set(FORMAT_NAMES) <= {get_format(n).name for n in FORMAT_NAMES}


# --------------------------------------------------------------------------- pack / unpack


@SETTINGS
@given(
    st.integers(1, 16),
    st.integers(0, 40),
    st.integers(0, 3),
    st.integers(1, 3),
    st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8]),
    st.booleans(),
)
def test_pack_and_unpack_take_any_view(bits, n, offset, step, dtype, as_numpy):
    rng = np.random.default_rng(bits * 1000 + n)
    lo = 0 if np.dtype(dtype).kind == "u" else -(1 << (bits - 1))
    hi = min((1 << bits) - 1 if lo == 0 else (1 << (bits - 1)) - 1, np.iinfo(dtype).max)
    base = rng.integers(lo, hi + 1, offset + n * step + 2).astype(dtype)
    view = base[offset : offset + n * step : step]
    src = view if as_numpy else torch.from_numpy(base)[offset : offset + n * step : step]
    ref = pack(np.ascontiguousarray(view), bits)
    got = pack(src, bits)
    np.testing.assert_array_equal(np.asarray(got), ref)
    # unpack from a strided, offset copy of the bytes
    spread = np.zeros(2 * ref.size + 1, np.uint8)
    spread[1::2] = ref
    packed_view = spread[1::2] if as_numpy else torch.from_numpy(spread)[1::2]
    back = np.asarray(unpack(packed_view, bits, n, signed=lo < 0))
    np.testing.assert_array_equal(back, view.astype(np.int64))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64])
def test_pack_of_strided_and_odd_offset_views(dtype):
    # the report's cases: c[::2] and c[1:9] of an int8 tensor failed in torch's view()
    c = torch.randint(-8, 8, (40,), generator=torch.Generator().manual_seed(0)).to(dtype)
    for view in (c[::2], c[1:9], c[1:], c.reshape(4, 10)[:, 1:8], c.reshape(4, 10).T):
        packed = pack(view, 4)
        assert torch.equal(packed, pack(view.contiguous().clone(), 4))
        back = unpack(packed, 4, view.numel(), signed=True)
        assert torch.equal(back, view.reshape(-1).to(torch.int32))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_unpack_refuses_an_out_that_overlaps_packed(bits):
    n = 400
    codes = torch.randint(0, 1 << bits, (n,), generator=torch.Generator().manual_seed(bits))
    packed = pack(codes, bits)
    buf = torch.zeros(n + packed.numel(), dtype=torch.int32)
    raw = buf.view(torch.uint8)
    raw[: packed.numel()] = packed
    with pytest.raises(ValueError, match="out must not share memory with packed"):
        unpack(raw[: packed.numel()], bits, n, out=buf[:n])
    before = buf.clone()
    assert torch.equal(buf, before)  # refused before anything was written
    out = torch.empty(n, dtype=torch.int32)
    assert torch.equal(unpack(raw[: packed.numel()], bits, n, out=out), codes.to(torch.int32))
    a = np.zeros(n + packed.numel(), np.int32)
    a.view(np.uint8)[: packed.numel()] = packed.numpy()
    with pytest.raises(ValueError, match="overlaps packed"):
        unpack(a.view(np.uint8)[: packed.numel()], bits, n, out=a[:n])


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_pack_refuses_an_out_that_overlaps_the_codes(bits):
    codes = torch.randint(0, 1 << bits, (64,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    nbytes = 64 * bits // 8
    with pytest.raises(ValueError, match="out must not share memory with codes"):
        pack(codes, bits, out=codes[:nbytes])
    with pytest.raises(ValueError, match="overlaps codes"):
        pack(codes.numpy(), bits, out=codes.numpy()[-nbytes:])
    other = torch.empty(nbytes, dtype=torch.uint8)
    assert torch.equal(pack(codes, bits, out=other), pack(codes.clone(), bits))
