"""Edge cases of the core modules: scale storage, non-finite values, out= buffers,
unusual inputs, and argument checks. Each test pins one documented behaviour."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from quantlab._validate import check_bool, check_count, check_int, check_real
from quantlab.formats import FloatFormat, IntFormat

import quantlab as ql
from quantlab import memory as mem

SETTINGS = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- scale storage


def test_fp16_subnormal_scales_keep_small_rows_accurate():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * 1e-4  # int8 scales ~3e-6: below fp16's smallest normal
    errs = {
        sd: ql.relative_error(w, ql.quantize(w, "int8", granularity="channel", scale_dtype=sd).dequantize())
        for sd in ("fp16", "fp32")
    }
    assert errs["fp16"] < 1.05 * errs["fp32"] < 0.0075


@pytest.mark.parametrize("fmt", ["int12", "int16"])
def test_wide_ints_with_fp16_scales_on_ordinary_weights(fmt):
    torch.manual_seed(1)
    w = torch.randn(32, 128) * 0.05
    e16 = ql.relative_error(w, ql.quantize(w, fmt, granularity="channel", scale_dtype="fp16").dequantize())
    e32 = ql.relative_error(w, ql.quantize(w, fmt, granularity="channel", scale_dtype="fp32").dequantize())
    assert e16 < 1.1 * e32


@pytest.mark.parametrize("sdt", ["fp16", "bf16"])
def test_scales_round_up_so_absmax_is_not_clipped(sdt):
    torch.manual_seed(2)
    x = torch.randn(4096)
    q = ql.quantize(x, "int16", scale_dtype=sdt)
    step = float(q.scale)
    assert step >= float(x.abs().max()) / 32767  # rounded up, never down
    assert float((x - q.dequantize()).abs().max()) <= step / 2 * (1 + 1e-5)
    assert int(q.codes[x.abs().argmax()].abs()) == 32767


def test_scale_overflow_raises_naming_scale_dtype():
    with pytest.raises(ValueError, match=r"scale_dtype='fp16' cannot hold the scale 1.429e\+05"):
        ql.quantize(torch.tensor([1e6, -2.0]), "int4", scale_dtype="fp16")
    with pytest.raises(ValueError, match="scale_dtype='fp32' cannot hold the scale"):
        ql.quantize(np.array([1e300, 1.0]), "int8")
    with pytest.raises(ValueError, match="scale_dtype='fp16'"):
        ql.fake_quantize(torch.full((4, 8), 1e7), "int8", granularity="channel", scale_dtype="fp16")
    # a range fp32 scales hold is fine, and float64 values come back without float32 overflow
    x = np.array([1e39, -3e38, 1.0])
    np.testing.assert_allclose(ql.quantize(x, "int8").dequantize()[:2], [1e39, -3e38], rtol=1e-2)


def test_scale_underflow_raises_but_zero_groups_are_fine():
    x = torch.zeros(2, 8)
    x[1] = 1e-7  # int8 scale 7.9e-10: far below fp16's subnormals
    with pytest.raises(ValueError, match="scale_dtype='fp16'.*coarser"):
        ql.quantize(x, "int8", granularity="channel", scale_dtype="fp16")
    q = ql.quantize(x, "int8", granularity="channel", scale_dtype="bf16")  # fp32's range
    np.testing.assert_allclose(q.dequantize(), x, rtol=1e-2)
    z = ql.quantize(torch.zeros(3, 4), "int8", granularity="channel", scale_dtype="fp16")
    assert bool((z.dequantize() == 0).all()) and bool((z.scale > 0).all())


@SETTINGS
@given(
    arrays(np.float32, st.integers(1, 24), elements=st.floats(-1e5, 1e5, width=32)),
    st.sampled_from(["int4", "int8", "int12", "int16", "uint8"]),
    st.sampled_from(["fp32", "fp16", "bf16"]),
)
@example(np.array([1.1754944e-38], dtype=np.float32), "int16", "fp32")  # an fp32 scale among the subnormals
def test_every_scale_dtype_holds_the_range_or_says_why(a, name, sdt):
    fmt = ql.get_format(name)
    try:
        q = ql.quantize(a, fmt, scale_dtype=sdt)
    except ValueError as err:
        assert f"scale_dtype={sdt!r}" in str(err)
        return
    absmax = float(np.abs(a).max())
    if absmax == 0:
        return
    top = fmt.qmax if fmt.signed else fmt.qmax - int(q.zero_point)
    rel = (q.codes.long() - (0 if q.zero_point is None else int(q.zero_point)))[np.abs(a).argmax()]
    ulp = {"fp32": 0.0, "fp16": 2.0**-10, "bf16": 2.0**-7}[sdt]  # a scale rounded up by one ulp
    info = torch.finfo(ql.core.quantize.SCALE_DTYPES[sdt])
    ulp = max(ulp, info.tiny * info.eps / float(q.scale))  # one ulp of a subnormal scale is coarser
    assert top * (1 - ulp) - 1 <= abs(int(rel)) <= top  # +-absmax on (or just below) the top code
    err = np.abs(a.astype(np.float64) - q.dequantize())
    assert err.max() <= float(q.scale) / 2 * (1 + 1e-5) + absmax * 1e-6
    fq = ql.fake_quantize(a, fmt, scale_dtype=sdt)
    np.testing.assert_array_equal(fq, q.dequantize())


# --------------------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("fmt", ["int8", "uint4", "fp8_e4m3", "nf4"])
def test_nan_with_reused_qparams_raises_on_every_path(fmt):
    sym = fmt != "uint4"
    qp = ql.choose_qparams(torch.tensor([1.0, -2.0]), fmt, symmetric=sym)
    bad = torch.tensor([math.nan, 1.0])
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.quantize(bad, fmt, qparams=qp)
    out = torch.zeros(2)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.fake_quantize(bad, fmt, qparams=qp, out=out)
    assert bool((out == 0).all())  # nothing written
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.fake_quantize(bad.double(), fmt, qparams=qp)  # the general path too


def test_nan_with_percentile_raises():
    x = torch.randn(100)
    x[3] = math.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.quantize(x, "int8", percentile=99)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.fake_quantize(x, "int8", percentile=99, symmetric=False)


def test_unscaled_cast_without_nan_code_raises_on_both_paths():
    x = torch.tensor([1.0, math.nan])
    with pytest.raises(ValueError, match="cannot encode"):
        ql.quantize(x, "fp6_e2m3", scaled=False)
    with pytest.raises(ValueError, match="cannot encode"):
        ql.fake_quantize(x, "fp6_e2m3", scaled=False)
    # formats with a NaN code pass it through, on both paths alike
    assert bool(torch.isnan(ql.fake_quantize(x, "fp16")[1]))
    assert bool(torch.isnan(ql.quantize(x, "fp16").dequantize()[1]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fmt, sym", [("uint8", False), ("uint4", False), ("int4", False), ("int8", True)])
def test_grid_stays_inside_the_dtype_range(dtype, fmt, sym):
    big = torch.finfo(dtype).max
    for vals in ([big, -0.3 * big], [-big, 0.01 * big], [big, -big], [-big, 0.7 * big]):
        x = torch.tensor(vals, dtype=dtype)
        for sdt in ("fp32", "bf16"):
            try:
                q = ql.quantize(x, fmt, symmetric=sym, scale_dtype=sdt)
            except ValueError as err:  # float32's max needs a scale beyond float32
                assert "scale_dtype" in str(err)
                continue
            d = q.dequantize()
            assert bool(torch.isfinite(d).all()), (vals, sdt, d)
            assert torch.equal(ql.fake_quantize(x, fmt, symmetric=sym, scale_dtype=sdt), d)


# --------------------------------------------------------------------------- re-quantizing


@pytest.mark.parametrize("fmt", ["uint8", "uint4", "uint2", "int8", "int16"])
@pytest.mark.parametrize("sdt", ["fp32", "fp16", "bf16"])
def test_requantizing_a_symmetric_grid_changes_nothing(fmt, sdt):
    torch.manual_seed(3)
    x = torch.randn(16, 64)
    q1 = ql.quantize(x, fmt, granularity="channel", scale_dtype=sdt)
    qp = ql.choose_qparams(x, fmt, granularity="channel", scale_dtype=sdt)
    q2 = ql.quantize(q1.dequantize(), fmt, qparams=qp)  # same parameters: always the same
    assert torch.equal(q1.codes, q2.codes) and torch.equal(q1.dequantize(), q2.dequantize())
    # re-chosen parameters: the same wherever +-absmax reached the top code, i.e. where
    # storing the scale moved it by less than half a code (coarse dtypes, wide formats)
    top = ql.get_format(fmt).qmax - (0 if fmt.startswith("int") else int(q1.zero_point[0]))
    if top * {"fp32": 2.0**-23, "fp16": 2.0**-10, "bf16": 2.0**-7}[sdt] < 0.5:
        for _ in range(3):  # and it does not drift
            q3 = ql.quantize(q1.dequantize(), fmt, granularity="channel", scale_dtype=sdt)
            assert torch.equal(q1.codes, q3.codes) and torch.equal(q1.scale, q3.scale)
            q1 = q3


def test_uint_symmetric_grid_is_symmetric_and_uint1_is_refused():
    q = ql.quantize(torch.tensor([-2.0, 2.0, 0.0]), "uint8")
    assert q.codes.tolist() == [1, 255, 128] and q.dequantize().tolist() == [-2.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="uint1 .* cannot be symmetric"):
        ql.quantize(torch.ones(3), "uint1")


# --------------------------------------------------------------------------- reused qparams


def test_qparams_from_a_slice_are_refused_at_quantize_time():
    x = torch.randn(64, 256)
    for kw, part in (
        (dict(granularity="group", group_size=64), x[:, :128]),
        (dict(granularity="group", group_size=64), x[:1]),
        (dict(granularity="channel", axis=0), x[:16]),
    ):
        qp = ql.choose_qparams(part, "int8", **kw)
        with pytest.raises(ValueError, match=r"qparams with scale shape .* do not fit x of shape \(64, 256\)"):
            ql.quantize(x, "int8", qparams=qp)
        with pytest.raises(ValueError, match="do not fit"):
            ql.fake_quantize(x, "int8", qparams=qp)


def test_qparams_with_as_many_scales_fit_any_shape():
    x = torch.randn(8, 16)
    qp = ql.choose_qparams(x, "int8", granularity="channel", axis=0)
    col = ql.quantize(x[:, 3], "int8", qparams=qp)  # one scale per row, on a column
    assert torch.equal(col.codes, ql.quantize(x, "int8", qparams=qp).codes[:, 3])
    assert col.dequantize().shape == (8,)
    assert ql.quantize(x.reshape(8, 16, 1), "int8", qparams=qp).dequantize().shape == (8, 16, 1)


def test_qparams_with_bad_scales_are_refused():
    qp = ql.choose_qparams(torch.randn(4), "int8")
    bad = ql.QParams(torch.zeros(()), None, qp.format, "tensor", 0, None)
    with pytest.raises(ValueError, match="qparams.scale must be positive and finite"):
        ql.quantize(torch.randn(4), "int8", qparams=bad)


# --------------------------------------------------------------------------- out= buffers


def test_out_read_only_numpy_is_refused_before_writing(tmp_path):
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    ro = np.zeros((3, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        ql.fake_quantize(x, "int8", out=ro)
    assert not ro.any()
    path = tmp_path / "buf.bin"
    np.zeros((3, 4), np.float32).tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=(3, 4))
    with pytest.raises(ValueError, match="out must be writable"):
        ql.fake_quantize(x, "int8", out=mm)
    with pytest.raises(ValueError, match="out must be writable"):
        ql.fake_quantize(x.astype(np.float64), "int8", out=_read_only(np.zeros((3, 4))))
    del mm
    with pytest.raises(ValueError, match="out must be writable"):
        ql.pack(np.zeros(8, np.int8), 4, out=_read_only(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="out must be writable"):
        ql.unpack(np.zeros(4, np.uint8), 4, 8, out=_read_only(np.zeros(8, np.int32)))


def _read_only(a):
    a.flags.writeable = False
    return a


def test_read_only_inputs_are_fine():
    x = _read_only(np.linspace(-1, 1, 16, dtype=np.float32))
    np.testing.assert_array_equal(ql.fake_quantize(x, "int4"), ql.quantize(x.copy(), "int4").dequantize())
    assert ql.pack(_read_only(np.arange(4, dtype=np.int8)), 4).tolist() == [0x10, 0x32]


def test_out_byte_order_and_overlap_are_checked():
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="out must be in native byte order"):
        ql.fake_quantize(x, "int8", out=np.zeros(4, np.float32).astype(">f4"))
    buf = torch.randn(9)
    with pytest.raises(ValueError, match="out must be x itself or memory apart from x"):
        ql.fake_quantize(buf[:8], "int8", out=buf[1:])
    y = torch.randn(8)
    assert ql.fake_quantize(y, "int8", out=y) is y  # out=x itself is fine


# --------------------------------------------------------------------------- unusual inputs


def test_fake_quantize_of_a_tensor_that_requires_grad():
    w = torch.randn(8, 16, requires_grad=True)
    out = ql.fake_quantize(w, "int4", granularity="channel")
    assert not out.requires_grad
    assert torch.equal(out, ql.fake_quantize(w.detach(), "int4", granularity="channel"))
    q = ql.quantize(w, "int4")
    assert not q.scale.requires_grad and not q.dequantize().requires_grad


def test_big_endian_numpy_input_works():
    a = np.linspace(-3, 3, 20).astype(">f4")
    want = ql.quantize(a.astype("<f4"), "int8").dequantize()
    np.testing.assert_array_equal(ql.quantize(a, "int8").dequantize(), want)
    np.testing.assert_array_equal(ql.fake_quantize(a, "int8"), want)
    assert ql.mse(a, a.astype("<f4")) == 0.0
    assert ql.pack(np.array([1, 2], dtype=">i4"), 4).tolist() == [0x21]


def test_meta_and_sparse_tensors_are_refused():
    with pytest.raises(ValueError, match="x must hold data, got a tensor on the meta device"):
        ql.quantize(torch.empty(4, device="meta"), "int8")
    with pytest.raises(TypeError, match="x must be a dense tensor"):
        ql.quantize(torch.eye(3).to_sparse(), "int8")
    with pytest.raises(TypeError, match="codes must be a dense tensor"):
        ql.pack(torch.eye(3, dtype=torch.int8).to_sparse(), 4)


def test_fp32_qtensor_packs_to_its_bytes():
    x = torch.randn(5)
    q = ql.quantize(x, "fp32")
    b = q.packed()
    assert b.dtype == torch.uint8 and b.numel() == ql.packed_nbytes(5, 32) == q.nbytes
    assert torch.equal(torch.from_numpy(b.numpy().view("<f4").copy()), x)


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("bits", [3, 5, 8, 16])
def test_pack_refuses_int64_codes_beyond_int32(bits):
    for bad in (2**32 + 1, -(2**40), 2**31):
        with pytest.raises(ValueError, match=f"codes must fit in {bits} bits"):
            ql.pack(torch.tensor([0, bad], dtype=torch.int64), bits)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, ">u2"])
def test_pack_accepts_wide_unsigned_codes(dtype):
    codes = np.array([0, 1, 7, 3, 2, 5, 6], dtype=dtype)
    assert ql.pack(codes, 4).tolist() == [0x10, 0x37, 0x52, 0x06]
    assert ql.pack(torch.from_numpy(codes.astype(np.uint16)), 4).tolist() == [0x10, 0x37, 0x52, 0x06]
    with pytest.raises(ValueError, match="codes must fit in 4 bits"):
        ql.pack(np.array([70000], dtype=np.uint32), 4)
    with pytest.raises(ValueError, match="codes must fit"):
        ql.pack(np.array([2**64 - 1], dtype=np.uint64), 4)


def test_packed_nbytes_checks_its_arguments():
    assert ql.packed_nbytes(10**30, 3) == -(-3 * 10**30 // 8)  # exact for huge counts
    with pytest.raises(ValueError, match="bits must be >= 1, got -3"):
        ql.packed_nbytes(10, -3)
    with pytest.raises(ValueError, match="bits must be >= 1, got 0"):
        ql.packed_nbytes(10, 0)
    with pytest.raises(TypeError, match="n must be an integer"):
        ql.packed_nbytes(2.5, 4)
    with pytest.raises(TypeError, match="bits must be an integer"):
        ql.packed_nbytes(2, True)


# --------------------------------------------------------------------------- flags and counts


@pytest.mark.parametrize("bad", ["no", 0, 1, None, "False"])
def test_boolean_flags_take_only_bools(bad):
    with pytest.raises(TypeError, match="symmetric must be True or False"):
        ql.quantize(torch.randn(4), "int8", symmetric=bad)
    with pytest.raises(TypeError, match="symmetric must be True or False"):
        ql.choose_qparams(torch.randn(4), "int8", symmetric=bad)
    with pytest.raises(TypeError, match="signed must be True or False"):
        ql.unpack(np.zeros(2, np.uint8), 4, 2, signed=bad)
    with pytest.raises(TypeError, match="store_attention_scores must be True or False"):
        mem.activation_bytes(2, 64, 4, 16, store_attention_scores=bad)
    if bad is not None:
        with pytest.raises(TypeError, match="scaled must be True, False or None"):
            ql.quantize(torch.randn(4), "fp16", scaled=bad)
        with pytest.raises(TypeError, match="signed must be True or False"):
            IntFormat("int4", 4, signed=bad)
        with pytest.raises(TypeError, match="has_inf must be True or False"):
            FloatFormat("f", 8, ebits=4, mbits=3, bias=7, has_inf=bad)
    assert ql.quantize(torch.ones(2), "int8", symmetric=np.bool_(True)).zero_point is None


def test_weight_bytes_of_a_huge_int_is_a_clear_error():
    with pytest.raises(ValueError, match="n_params must be a finite real number within the float range"):
        mem.weight_bytes(10**400, "int4")
    assert mem.weight_bytes(10**12, "int4") == 5e11


def test_validators():
    assert check_bool(np.bool_(False), "f") is False
    assert check_int(np.int64(3), "n", minimum=0) == 3
    assert check_real(0.5, "r", low=0, high=1, low_open=True) == 0.5
    with pytest.raises(ValueError, match=r"r must be in \(0, 1\], got nan"):
        check_real(math.nan, "r", low=0, high=1, low_open=True)
    with pytest.raises(TypeError, match="n must be an integer, got float 2.0"):
        check_int(2.0, "n")
    with pytest.raises(ValueError, match="c must be >= 0, got -1.0"):
        check_count(-1, "c")


# --------------------------------------------------------------------------- kinds


def test_numpy_in_numpy_out():
    a = np.array([0.1, -0.7, 3.0], np.float32)
    fp8 = ql.get_format("fp8_e4m3")
    r = fp8.round(a)
    assert isinstance(r, np.ndarray) and r.dtype == np.float32
    codes = fp8.encode(a)
    assert isinstance(codes, np.ndarray)
    np.testing.assert_array_equal(fp8.decode(codes), r)
    nf4 = ql.get_format("nf4")
    assert isinstance(nf4.encode(a), np.ndarray) and isinstance(nf4.decode(nf4.encode(a)), np.ndarray)
    assert isinstance(ql.fake_quantize(a, "int4"), np.ndarray)
    assert isinstance(ql.quantize(a, "int4").dequantize(), np.ndarray)
    assert isinstance(ql.cosine_similarity(a.reshape(1, 3), a.reshape(1, 3), dim=-1), np.ndarray)
    packed = ql.pack(np.array([1, 2, 3], np.int8), 4)
    assert isinstance(packed, np.ndarray) and isinstance(ql.unpack(packed, 4, 3), np.ndarray)
    assert fp8.round(torch.tensor([0.1], requires_grad=True)).requires_grad is False


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(
    arrays(np.float16, st.integers(1, 16), elements=st.floats(-65504, 65504, width=16)),
    st.sampled_from(["uint8", "uint4", "int4", "int8"]),
    st.booleans(),
    st.sampled_from(["fp32", "fp16", "bf16"]),
)
def test_dequantized_values_stay_finite_in_fp16(a, name, sym, sdt):
    try:
        q = ql.quantize(a, name, symmetric=sym, scale_dtype=sdt)
    except ValueError as err:
        assert f"scale_dtype={sdt!r}" in str(err)
        return
    d = q.dequantize()
    assert d.dtype == np.float16 and np.isfinite(d).all()
    np.testing.assert_array_equal(ql.fake_quantize(a, name, symmetric=sym, scale_dtype=sdt), d)


@SETTINGS
@given(
    arrays(np.float32, st.integers(2, 12), elements=st.floats(-10, 10, width=32)),
    st.integers(0, 11),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.sampled_from(["int4", "uint8", "fp8_e4m3", "nf4"]),
)
def test_non_finite_values_raise_on_every_scaled_path(a, i, bad, name):
    sym = name != "uint8"
    a = np.append(a, np.float32(1.0))  # a range every scale dtype holds
    qp = ql.choose_qparams(a, name, symmetric=sym)
    a[i % (a.size - 1)] = bad
    calls = [
        lambda: ql.quantize(a, name, symmetric=sym),
        lambda: ql.fake_quantize(a, name, symmetric=sym),
        lambda: ql.quantize(a, name, qparams=qp),
        lambda: ql.fake_quantize(a, name, qparams=qp),
        lambda: ql.fake_quantize(a.astype(np.float64), name, qparams=qp),
        lambda: ql.quantize(a, name, symmetric=sym, percentile=90),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="NaN or infinity"):
            call()
