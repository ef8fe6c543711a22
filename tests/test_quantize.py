"""choose_qparams / quantize / dequantize: known answers, torch references, errors."""

import math

import numpy as np
import pytest
import torch

import quantlab as ql

# --------------------------------------------------------------------------- known answers


def test_int4_symmetric_per_tensor_by_hand():
    # absmax 1.75, qmax 7 -> scale 0.25 exactly; x/scale = 7, -1.2, 0.5, 1.5, -4, 2.4
    x = torch.tensor([1.75, -0.3, 0.125, 0.375, -1.0, 0.6])
    q = ql.quantize(x, "int4")
    assert float(q.scale) == 0.25 and q.zero_point is None
    assert q.codes.tolist() == [7, -1, 0, 2, -4, 2]  # ties 0.5 -> 0 and 1.5 -> 2 (to even)
    assert q.dequantize().tolist() == [1.75, -0.25, 0.0, 0.5, -1.0, 0.5]


def test_int4_asymmetric_by_hand():
    # range [-0.5, 3.25] over 15 steps -> scale 0.25; zero_point = -8 - round(-0.5/0.25) = -6
    x = np.array([-0.5, 3.25, 0.0, 1.1, 2.0], dtype=np.float32)
    q = ql.quantize(x, "int4", symmetric=False)
    assert float(q.scale) == 0.25 and int(q.zero_point) == -6
    assert q.codes.tolist() == [-8, 7, -6, -2, 2]
    x_hat = q.dequantize()
    assert isinstance(x_hat, np.ndarray) and x_hat.dtype == np.float32
    assert x_hat.tolist() == [-0.5, 3.25, 0.0, 1.0, 2.0]


def test_uint8_asymmetric_keeps_zero_exact():
    x = torch.tensor([0.3, 0.7, 1.9])  # all positive: the range is widened to include 0
    q = ql.quantize(x, "uint8", symmetric=False)
    assert int(q.zero_point) == 0
    assert ql.fake_quantize(torch.tensor([0.0, 0.3, 1.9]), "uint8", symmetric=False)[0].item() == 0.0


def test_per_channel_by_hand_both_axes():
    x = torch.tensor([[3.5, -1.0, 0.3, 2.0], [0.875, 0.1, -0.5, 0.0]])
    q0 = ql.quantize(x, "int4", granularity="channel", axis=0)
    assert q0.scale.tolist() == [0.5, 0.125]
    assert q0.codes.tolist() == [[7, -2, 1, 4], [7, 1, -4, 0]]
    q1 = ql.quantize(x, "int4", granularity="channel", axis=-1)
    assert q1.axis == 1 and q1.scale.shape == (4,)
    assert q1.scale.tolist() == pytest.approx([0.5, 1 / 7, 0.5 / 7, 2 / 7], rel=1e-7)
    assert q1.codes[0].tolist() == [7, -7, 4, 7]


def test_per_group_by_hand():
    x = torch.tensor([[1.75, 0.25, -0.5, 0.1, 7.0, -3.0, 1.4, 0.5]])
    q = ql.quantize(x, "int4", granularity="group", group_size=4)
    assert q.scale.shape == (1, 2) and q.scale.tolist() == [[0.25, 1.0]]
    assert q.codes.tolist() == [[7, 1, -2, 0, 7, -3, 1, 0]]
    assert q.dequantize().tolist() == [[1.75, 0.25, -0.5, 0.0, 7.0, -3.0, 1.0, 0.0]]


def test_scaled_fp8_and_nf4_by_hand():
    x = torch.tensor([112.0, -56.0, 0.25, 3.0])  # absmax 112 -> scale 112/448 = 0.25
    q = ql.quantize(x, "fp8_e4m3")
    assert float(q.scale) == 0.25
    assert q.dequantize().tolist() == [112.0, -56.0, 0.25, 3.0]  # all on the e4m3 grid
    n = ql.quantize(torch.tensor([2.0, -2.0, 0.5, 0.0]), "nf4")
    assert float(n.scale) == 2.0 and n.codes.tolist() == [15, 0, 10, 7]
    assert n.dequantize()[2].item() == pytest.approx(2 * 0.24611230194568634)


def test_unscaled_casts():
    x = torch.tensor([1.0, 1.0 + 2.0**-11, 70000.0, math.nan])
    q = ql.quantize(x, "fp16")
    assert q.scale is None and q.bits_per_weight == 16
    out = q.dequantize()
    assert out[:3].tolist() == [1.0, 1.0, math.inf] and math.isnan(out[3])  # NaN passes, like the cast


def test_clip_ratio_and_percentile():
    x = torch.cat([torch.linspace(-1, 1, 999), torch.tensor([100.0])])
    full = ql.quantize(x, "int8")
    assert float(full.scale) == pytest.approx(100 / 127)
    half = ql.quantize(x, "int8", clip_ratio=0.5)
    assert float(half.scale) == pytest.approx(50 / 127)
    pct = ql.quantize(x, "int8", percentile=99.0)
    assert float(pct.scale) == pytest.approx(float(x.abs().kthvalue(990).values) / 127)
    # values beyond the clipping range saturate at the top code
    assert int(pct.codes[-1]) == 127
    asym = ql.quantize(x, "uint8", symmetric=False, percentile=99.0)
    assert float(asym.dequantize().max()) < 2.0


def test_percentile_per_channel():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    q = ql.quantize(x, "int8", granularity="channel", axis=0, percentile=50.0)
    assert q.scale.tolist() == pytest.approx([2.0 / 127, 20.0 / 127])


def test_scale_dtype_fp16_scales_are_representable():
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    q = ql.quantize(x, "int4", granularity="group", group_size=128, scale_dtype="fp16")
    assert bool((q.scale.half().float() == q.scale).all())
    assert q.nbytes == 4 * 256 // 2 + 8 * 2
    assert q.bits_per_weight == 4.125


def test_qparams_reuse():
    g = torch.Generator().manual_seed(1)
    calib, x = torch.randn(16, 64, generator=g), torch.randn(16, 64, generator=g) * 2
    qp = ql.choose_qparams(calib, "int8", granularity="channel", axis=0)
    q = ql.quantize(x, "int8", qparams=qp)
    assert torch.equal(q.scale, qp.scale.reshape(-1))
    assert int(q.codes.abs().max()) == 127  # x is wider than calib: clipped at qmax
    with pytest.raises(ValueError, match="do not fit"):
        ql.quantize(torch.randn(8, 64), "int8", qparams=qp)
    with pytest.raises(ValueError, match="chosen for int8"):
        ql.quantize(x, "int4", qparams=qp)


# --------------------------------------------------------------------------- references


def test_int8_per_tensor_matches_torch_fake_quantize():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=g) * 3
    for symmetric in (True, False):
        q = ql.quantize(x, "int8" if symmetric else "uint8", symmetric=symmetric)
        zp = 0 if q.zero_point is None else int(q.zero_point)
        qmin, qmax = (-128, 127) if symmetric else (0, 255)
        ref = torch.fake_quantize_per_tensor_affine(x, float(q.scale), zp, qmin, qmax)
        ours = q.dequantize()
        diff = (ours - ref).abs()
        # torch multiplies by 1/scale, quantlab divides: at most one step apart, rarely
        assert float(diff.max()) <= float(q.scale) * 1.0001
        assert int((diff > 0).sum()) <= 5


def test_int8_per_channel_matches_torch_fake_quantize():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 512, generator=g) * torch.rand(64, 1, generator=g) * 4
    for axis in (0, 1):
        q = ql.quantize(x, "int8", granularity="channel", axis=axis)
        zp = torch.zeros(q.scale.numel(), dtype=torch.int32)
        ref = torch.fake_quantize_per_channel_affine(x, q.scale, zp, axis, -128, 127)
        diff = (q.dequantize() - ref).abs()
        step = q.scale.max()
        assert float(diff.max()) <= float(step) * 1.0001
        assert int((diff > 0).sum()) <= 5


def test_numpy_and_torch_give_identical_results():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 64)).astype(np.float32)
    for kw in [
        dict(fmt="int4", granularity="group", group_size=32),
        dict(fmt="int8", granularity="channel", axis=1, symmetric=False),
        dict(fmt="fp8_e5m2"),
        dict(fmt="nf4", granularity="group", group_size=64),
    ]:
        qn = ql.quantize(a, **kw)
        qt = ql.quantize(torch.from_numpy(a.copy()), **kw)
        dn, dt = qn.dequantize(), qt.dequantize()
        assert isinstance(dn, np.ndarray) and isinstance(dt, torch.Tensor)
        np.testing.assert_array_equal(dn, dt.numpy())


def test_dtypes_preserved():
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        x = torch.randn(32, 32).to(dt)
        assert ql.fake_quantize(x, "int8").dtype == dt
    x64 = np.random.default_rng(0).standard_normal(10)
    assert ql.fake_quantize(x64, "int4").dtype == np.float64


# --------------------------------------------------------------------------- storage


def test_nbytes_and_bits_per_weight():
    x = torch.randn(256, 512)
    assert ql.quantize(x, "int8").nbytes == 256 * 512 + 4
    q = ql.quantize(x, "int4", granularity="group", group_size=128, symmetric=False, scale_dtype="fp16")
    # codes 4 bits + fp16 scale + 4-bit zero point per 128 weights
    assert q.bits_per_weight == 4 + 16 / 128 + 4 / 128
    q32 = ql.quantize(x, "int4", granularity="group", group_size=32, scale_dtype="fp16")
    assert q32.bits_per_weight == 4.5  # GGUF Q4_0's budget
    nf4 = ql.quantize(x, "nf4", granularity="group", group_size=64)
    assert nf4.bits_per_weight == 4.5  # fp32 absmax per 64
    q3 = ql.quantize(torch.randn(3, 7), "int3")
    assert q3.nbytes == math.ceil(21 * 3 / 8) + 4
    assert ql.unpack(q3.packed(), 3, 21, signed=True).tolist() == q3.codes.reshape(-1).tolist()
    assert "int3" in repr(q3)


# --------------------------------------------------------------------------- edge cases


def test_empty_tensor_defined():
    for shape, kw in [
        ((0,), {}),
        ((0, 8), dict(granularity="group", group_size=4)),
        ((3, 0), dict(granularity="channel", axis=0)),
    ]:
        q = ql.quantize(torch.empty(shape), "int4", **kw)
        assert q.codes.shape == shape and q.dequantize().shape == shape
        assert q.nbytes == 4 * q.scale.numel()


def test_constant_and_zero_tensors_do_not_divide_by_zero():
    z = ql.quantize(torch.zeros(10), "int8")
    assert float(z.scale) > 0 and torch.equal(z.dequantize(), torch.zeros(10))
    c = ql.fake_quantize(torch.full((10,), 3.0), "int8", symmetric=False)
    assert torch.allclose(c, torch.full((10,), 3.0), rtol=1e-6)
    g = ql.fake_quantize(torch.zeros(2, 8), "nf4", granularity="group", group_size=4)
    assert bool(torch.isfinite(g).all()) and float(g.abs().max()) == 0.0


def test_tiny_values_with_fp16_scales_are_refused_not_zeroed():
    # fp16 cannot hold the scale 1.6e-11 these values need: an error, not silent zeros
    x = torch.tensor([1e-9, -2e-9, 5e-10])
    with pytest.raises(ValueError, match="scale_dtype='fp16' cannot hold the scale 1.575e-11"):
        ql.fake_quantize(x, "int8", scale_dtype="fp16")
    out = ql.fake_quantize(x, "int8", scale_dtype="fp32")
    assert bool(torch.isfinite(out).all()) and float((out - x).abs().max()) < 1e-11


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(fmt="int17"), ValueError, "int17"),
        (dict(fmt="int0"), ValueError, "int0"),
        (dict(fmt="float8"), ValueError, "unknown format 'float8'"),
        (dict(fmt="int4", granularity="row"), ValueError, "granularity must be one of"),
        (dict(fmt="int4", granularity="group"), ValueError, "needs group_size, got None"),
        (dict(fmt="int4", granularity="group", group_size=0), ValueError, "group_size must be positive, got 0"),
        (dict(fmt="int4", granularity="group", group_size=-4), ValueError, "got -4"),
        (dict(fmt="int4", granularity="group", group_size=5), ValueError, "must divide the last dimension 8, got 5"),
        (dict(fmt="int4", granularity="group", group_size=2.0), TypeError, "group_size must be a positive int"),
        (dict(fmt="int4", group_size=4), ValueError, "only used with granularity='group'"),
        (dict(fmt="int4", granularity="channel", axis=2), ValueError, r"axis must be in \[-2, 1\].*got 2"),
        (dict(fmt="int4", granularity="channel", axis=-3), ValueError, "got -3"),
        (dict(fmt="int4", granularity="channel", axis="0"), TypeError, "axis must be an int"),
        (dict(fmt="int4", clip_ratio=0.0), ValueError, "clip_ratio must be in"),
        (dict(fmt="int4", clip_ratio=1.5), ValueError, "got 1.5"),
        (dict(fmt="int4", percentile=0), ValueError, "percentile must be in"),
        (dict(fmt="int4", percentile=101), ValueError, "got 101"),
        (dict(fmt="int4", scale_dtype="fp8"), ValueError, "scale_dtype must be one of"),
        (dict(fmt="fp8_e4m3", symmetric=False), ValueError, "needs an integer format, got fp8_e4m3"),
        (dict(fmt="int1"), ValueError, "int1 has no positive code"),
        (dict(fmt="int4", symmetric="yes"), TypeError, "symmetric must be True or False"),
        (dict(fmt="int4", scaled=False), ValueError, "only for float formats"),
        (dict(fmt=4), TypeError, "fmt must be a format name"),
    ],
)
def test_bad_arguments(kwargs, exc, msg):
    x = torch.randn(4, 8)
    fmt = kwargs.pop("fmt")
    with pytest.raises(exc, match=msg):
        ql.quantize(x, fmt, **kwargs)


@pytest.mark.parametrize(
    "x, exc, msg",
    [
        (np.arange(6), TypeError, "floating-point values.*int64"),
        (torch.arange(6, dtype=torch.int8), TypeError, "int8"),
        (np.ones(4, dtype=np.complex64), TypeError, "complex64"),
        (torch.ones(3, dtype=torch.bool), TypeError, "bool"),
        ([0.1, 0.2], TypeError, "numpy.ndarray or a torch.Tensor, got list"),
        (np.array(["a"]), TypeError, "must hold numbers"),
        (np.array([0.1, np.nan, 0.3]), ValueError, r"NaN or infinity \(1 of 3 values\)"),
        (torch.tensor([0.1, math.inf]), ValueError, "NaN or infinity"),
    ],
)
def test_bad_inputs(x, exc, msg):
    with pytest.raises(exc, match=msg):
        ql.quantize(x, "int8")


def test_nan_in_one_group_is_reported_not_spread():
    x = torch.randn(2, 8)
    x[1, 5] = math.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.quantize(x, "int4", granularity="group", group_size=4)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ql.quantize(x, "nf4", granularity="channel", axis=0)


def test_dequantize_type_error():
    with pytest.raises(TypeError, match="q must be a QTensor, got ndarray"):
        ql.dequantize(np.zeros(3))
