"""Number formats: ranges, bit-exact agreement with torch's casts, bit fields, NF4."""

import math

import numpy as np
import pytest
import torch
from quantlab.formats import NF4_VALUES, CodebookFormat, FloatFormat, IntFormat
from scipy.stats import norm

import quantlab as ql

TORCH_DTYPES = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("bits", range(1, 17))
def test_int_formats_any_width(bits):
    s = ql.get_format(f"int{bits}")
    u = ql.get_format(f"uint{bits}")
    assert isinstance(s, IntFormat) and s.signed and s.bits == bits
    assert (s.qmin, s.qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert (u.qmin, u.qmax) == (0, 2**bits - 1)
    assert s.levels == u.levels == 2**bits
    assert s.values().numel() == 2**bits


def test_known_float_ranges():
    f = {
        n: ql.get_format(n)
        for n in ["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"]
    }
    assert f["fp32"].max_value == float(torch.finfo(torch.float32).max)
    assert f["fp16"].max_value == 65504.0
    assert f["bf16"].max_value == float(torch.finfo(torch.bfloat16).max)
    assert f["fp8_e4m3"].max_value == 448.0
    assert f["fp8_e5m2"].max_value == 57344.0
    assert f["fp6_e3m2"].max_value == 28.0
    assert f["fp6_e2m3"].max_value == 7.5
    assert f["fp4_e2m1"].max_value == 6.0
    assert f["fp16"].min_normal == 2.0**-14 and f["fp16"].min_subnormal == 2.0**-24
    assert f["fp8_e4m3"].min_subnormal == 2.0**-9
    assert f["fp16"].eps == float(torch.finfo(torch.float16).eps)
    assert f["bf16"].eps == float(torch.finfo(torch.bfloat16).eps)
    # fp4 e2m1 holds exactly these magnitudes
    assert f["fp4_e2m1"].values().tolist() == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert f["fp8_e4m3"].overflow == "saturate" and not f["fp8_e4m3"].has_inf
    assert f["fp8_e5m2"].overflow == "inf" and f["fp8_e5m2"].has_inf


def test_fp8_values_match_torch_enumeration():
    for name, dt in [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)]:
        all_codes = torch.arange(256, dtype=torch.uint8)
        ref = all_codes.view(dt).float()
        ours = ql.get_format(name).decode(all_codes)
        same = (ours.view(torch.int32) == ref.view(torch.int32)) | (ours.isnan() & ref.isnan())
        assert bool(same.all()), name


@pytest.mark.parametrize("bad", ["int0", "int17", "uint32", "fp7", "nf3", "", "int-4"])
def test_unknown_format_names(bad):
    with pytest.raises(ValueError, match=repr(bad) if bad else "unknown format"):
        ql.get_format(bad)


def test_format_type_error():
    with pytest.raises(TypeError, match="fmt must be a format name"):
        ql.get_format(8)


def test_aliases():
    assert ql.get_format("float16") is ql.get_format("fp16")
    assert ql.get_format("FP8_E4M3FN") is ql.get_format("fp8_e4m3")
    assert ql.get_format(ql.get_format("nf4")).name == "nf4"


# --------------------------------------------------------------------------- bit-exact casts


def _edge_values() -> torch.Tensor:
    vals = [
        0.0,
        -0.0,
        math.inf,
        -math.inf,
        math.nan,
        1.0,
        -1.0,
        1e-45,
        -1e-45,
        1e-40,
        65504.0,
        65519.0,
        65520.0,
        65536.0,
        57344.0,
        61439.0,
        61440.0,
        448.0,
        464.0,
        470.0,
        480.0,
        1e6,
        3.4e38,
        -3.4e38,
        2.0**-14,
        2.0**-24,
        2.0**-25,
        1.5 * 2.0**-25,
        2.0**-6,
        2.0**-9,
        2.0**-10,
        3 * 2.0**-11,
        2.0**-16,
        2.0**-17,
        1.0 + 2.0**-11,
        1.0 + 3 * 2.0**-11,
        1.0 + 2.0**-8,
        1.0 + 3 * 2.0**-8,
        1.0625,
        1.1875,
    ]
    ties = []
    for m in (2, 3, 7, 10):  # exact ties halfway between neighbours, even and odd
        for k in range(1, 6):
            ties.append(1.0 + (2 * k + 1) * 2.0 ** -(m + 1))
    t = torch.tensor(vals + ties, dtype=torch.float32)
    return torch.cat([t, -t])


def _random_values(n: int = 200_000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # magnitudes over many binades, including the subnormal ranges of every target
    return torch.randn(n, generator=g) * torch.exp2(torch.randint(-40, 40, (n,), generator=g).float())


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
@pytest.mark.parametrize("which", ["random", "edge"])
def test_round_bit_exact_with_torch_cast(name, which):
    x = _random_values() if which == "random" else _edge_values()
    fmt = ql.get_format(name)
    ours = fmt.round(x)
    ref = x.to(TORCH_DTYPES[name]).float()
    same = (ours.view(torch.int32) == ref.view(torch.int32)) | (ours.isnan() & ref.isnan())
    assert bool(same.all()), (x[~same][:5], ours[~same][:5], ref[~same][:5])


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_codes_bit_exact_with_torch_cast(name):
    x = torch.cat([_random_values(50_000, seed=1), _edge_values()])
    fmt = ql.get_format(name)
    codes = fmt.encode(x).long()
    dt = TORCH_DTYPES[name]
    ref = x.to(dt).view(torch.uint8 if fmt.bits == 8 else torch.int16).long() & ((1 << fmt.bits) - 1)
    nan = torch.isnan(x)
    assert bool((codes[~nan] == ref[~nan]).all())
    # NaN payloads: torch's bf16 cast uses 0xFFFF; every format must at least decode to NaN
    assert bool(fmt.decode(codes[nan]).isnan().all())
    if name != "bf16":
        assert bool((codes[nan] == ref[nan]).all())


def test_round_float64_input_is_single_rounding():
    # 1 + 2^-11 + 2^-40 is just above a tie for fp16: rounding from float64 goes up,
    # while first casting to float32 (which drops 2^-40) creates a tie that goes down to 1.0.
    # numpy rounds float64 -> float16 once (agrees); torch's cast goes through float32.
    x = torch.tensor([1.0 + 2.0**-11 + 2.0**-40], dtype=torch.float64)
    assert ql.get_format("fp16").round(x).item() == 1.0 + 2.0**-10
    assert float(np.float16(x.item())) == 1.0 + 2.0**-10
    assert x.float().to(torch.float16).item() == 1.0  # the double rounding avoided


def test_signed_zero_and_overflow_documented():
    fp8 = ql.get_format("fp8_e4m3")
    r = fp8.round(torch.tensor([-0.0, 1e9, -math.inf]))
    assert math.copysign(1.0, r[0].item()) == -1.0
    assert r[1].item() == 448.0 and r[2].item() == -448.0  # saturates
    e5 = ql.get_format("fp8_e5m2").round(torch.tensor([61440.0, -1e9]))
    assert e5[0].item() == math.inf and e5[1].item() == -math.inf  # overflows to inf
    fp4 = ql.get_format("fp4_e2m1")
    assert fp4.round(torch.tensor([5.0, 7.0, 100.0, 0.25, 0.75])).tolist() == [4.0, 6.0, 6.0, 0.0, 1.0]


def test_nan_in_format_without_nan_raises():
    with pytest.raises(ValueError, match="cannot encode"):
        ql.get_format("fp4_e2m1").encode(torch.tensor([math.nan]))


@pytest.mark.parametrize("name", ["fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "fp8_e4m3", "fp8_e5m2"])
def test_small_float_round_is_nearest_grid_value(name):
    fmt = ql.get_format(name)
    grid = fmt.values()
    x = torch.linspace(-fmt.max_value, fmt.max_value, 20001, dtype=torch.float64)
    r = fmt.round(x)
    dist = (x.unsqueeze(1) - grid.unsqueeze(0)).abs()
    best = dist.min(dim=1).values
    assert bool(((r - x).abs() <= best + 1e-12).all())
    assert bool(torch.isin(r, grid).all())
    codes = fmt.encode(x)
    assert bool((fmt.decode(codes).double() == r).all())


# --------------------------------------------------------------------------- bit fields


def test_fields_known_values():
    f16 = ql.get_format("fp16")
    one = f16.fields(1.0)
    assert (one.sign_bits, one.exponent_bits, one.mantissa_bits) == ("0", "01111", "0000000000")
    m = f16.fields(-2.5)  # -1.25 * 2^1
    assert (m.sign, m.exponent_bits, m.mantissa_bits, m.unbiased_exponent) == (1, "10000", "0100000000", 1)
    big = f16.fields(65504.0)
    assert big.exponent_bits == "11110" and big.mantissa_bits == "1" * 10 and big.code == 0x7BFF
    sub = f16.fields(2.0**-24)
    assert sub.kind == "subnormal" and sub.code == 1 and sub.exponent_bits == "00000"
    e4 = ql.get_format("fp8_e4m3").fields(448.0)
    assert (e4.exponent_bits, e4.mantissa_bits, e4.code) == ("1111", "110", 0x7E)
    inf = f16.fields(1e6)
    assert inf.kind == "inf" and inf.code == 0x7C00
    assert ql.get_format("fp32").fields(0.1).code == 0x3DCCCCCD
    with pytest.raises(TypeError, match="value must be a real number"):
        f16.fields("1.0")


# --------------------------------------------------------------------------- codebooks


def test_nf4_table_equals_bitsandbytes_constants():
    # bitsandbytes/functional.py get_4bit_type("nf4"), as float32 literals
    bnb = [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
    assert list(NF4_VALUES) == bnb
    assert ql.get_format("nf4").bits == 4 and ql.get_format("nf4").levels == 16


def test_nf4_is_the_normal_quantile_construction():
    # QLoRA's create_normal_map(offset=0.9677083, use_extra_value=True), recomputed with scipy
    offset = 0.9677083
    v1 = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    v3 = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    v = np.sort(np.concatenate([v1, [0.0], v3]))
    v /= np.abs(v).max()
    np.testing.assert_allclose(np.array(NF4_VALUES), v, atol=2e-7)


def test_codebook_nearest_and_ties():
    cb = ql.codebook([0.0, 1.0, -1.0, 0.5], "tiny")
    assert isinstance(cb, CodebookFormat) and cb.bits == 2 and cb.table == (-1.0, 0.0, 0.5, 1.0)
    codes = cb.encode(torch.tensor([-0.6, -0.5, 0.24, 0.25, 0.8, 9.0]))
    assert codes.tolist() == [0, 0, 1, 1, 3, 3]  # ties to the lower entry
    assert cb.decode(codes).tolist() == [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "values, exc, msg",
    [
        ([1.0], ValueError, "at least 2"),
        ([1.0, 1.0], ValueError, "distinct"),
        ([0.0, math.nan], ValueError, "finite"),
        (["a", "b"], TypeError, "real numbers"),
        ([0.0, -0.0], ValueError, "distinct"),
    ],
)
def test_codebook_errors(values, exc, msg):
    with pytest.raises(exc, match=msg):
        ql.codebook(values)


def test_float_format_is_frozen():
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        ql.get_format("fp16").bits = 8  # type: ignore[misc]
    assert isinstance(ql.get_format("fp16"), FloatFormat)
