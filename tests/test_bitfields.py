"""Bit fields of known values, checked against hand-worked encodings and torch's own casts,
and the 6.02 dB-per-bit rule of a uniform quantizer on uniform data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantlab as ql
from quantlab import sweeps

# --------------------------------------------------------------------------- known values


def test_one_in_fp32():
    f = ql.get_format("fp32").fields(1.0)
    assert (f.sign_bits, f.exponent_bits, f.mantissa_bits) == ("0", "01111111", "0" * 23)
    assert f.code == 0x3F800000
    assert f.kind == "normal" and f.unbiased_exponent == 0 and f.value == 1.0


def test_minus_two_and_a_half_in_fp16():
    # -2.5 = -1 x 2^1 x 1.25: exponent 1 + 15 = 16 = 10000, mantissa .01 -> 0100000000
    f = ql.get_format("fp16").fields(-2.5)
    assert (f.sign, f.exponent, f.mantissa) == (1, 16, 256)
    assert (f.sign_bits, f.exponent_bits, f.mantissa_bits) == ("1", "10000", "0100000000")
    assert f.code == 0xC100
    assert f.unbiased_exponent == 1 and f.value == -2.5


def test_largest_fp16():
    fmt = ql.get_format("fp16")
    f = fmt.fields(65504.0)
    assert fmt.max_value == 65504.0
    assert (f.exponent_bits, f.mantissa_bits) == ("11110", "1" * 10)
    assert f.code == 0x7BFF and f.kind == "normal" and f.unbiased_exponent == 15
    # halfway to the next power of two rounds (ties to even) to infinity
    assert fmt.fields(65520.0).kind == "inf"
    assert fmt.fields(65519.0).value == 65504.0


def test_subnormals_in_fp16():
    fmt = ql.get_format("fp16")
    tiny = fmt.fields(2.0**-24)
    assert fmt.min_subnormal == 2.0**-24
    assert (tiny.exponent, tiny.mantissa, tiny.code) == (0, 1, 0x0001)
    assert tiny.kind == "subnormal" and tiny.unbiased_exponent == -14
    half_normal = fmt.fields(2.0**-15)  # 0.5 x 2^-14: mantissa .1000000000
    assert half_normal.mantissa_bits == "1000000000" and half_normal.kind == "subnormal"
    assert fmt.fields(fmt.min_normal).kind == "normal"
    assert fmt.fields(2.0**-26).kind == "zero"  # below half the smallest subnormal


def test_fp8_e4m3_largest_is_448_and_saturates():
    fmt = ql.get_format("fp8_e4m3")
    f = fmt.fields(448.0)
    assert fmt.max_value == 448.0
    assert (f.exponent_bits, f.mantissa_bits, f.code) == ("1111", "110", 0x7E)
    assert f.unbiased_exponent == 8
    assert fmt.fields(1000.0).value == 448.0  # no infinity: saturates


def test_fp8_e5m2_has_infinity():
    fmt = ql.get_format("fp8_e5m2")
    assert fmt.max_value == 57344.0
    assert fmt.fields(57344.0).code == 0x7B
    assert fmt.fields(1e6).kind == "inf"


def test_bf16_keeps_fp32_exponent():
    fmt = ql.get_format("bf16")
    assert fmt.fields(1.0).code == 0x3F80
    f = fmt.fields(-2.5)
    assert (f.code, f.exponent_bits, f.mantissa_bits) == (0xC020, "10000000", "0100000")
    assert fmt.max_value == pytest.approx(3.3895313892515355e38)
    assert fmt.eps == 2.0**-7


@pytest.mark.parametrize(
    "name, dtype, int_dtype",
    [
        ("fp16", torch.float16, torch.int16),
        ("bf16", torch.bfloat16, torch.int16),
        ("fp8_e4m3", torch.float8_e4m3fn, torch.uint8),
        ("fp8_e5m2", torch.float8_e5m2, torch.uint8),
    ],
)
@pytest.mark.parametrize("value", [0.0342, -0.1567, 1.0, -2.5, 3.14159, 1e-3, -7.5e-5])
def test_fields_match_torch_casts(name, dtype, int_dtype, value):
    fmt = ql.get_format(name)
    ref = torch.tensor([value], dtype=torch.float32).to(dtype)
    code = int(ref.view(int_dtype).item()) & ((1 << fmt.bits) - 1)
    f = fmt.fields(value)
    assert f.code == code
    assert f.value == float(ref.float().item())


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-60000, max_value=60000, allow_nan=False, width=32))
def test_fields_decode_to_their_value(v):
    fmt = ql.get_format("fp16")
    f = fmt.fields(float(v))
    assert f.value == float(torch.tensor(v, dtype=torch.float32).half().float())
    assert f.sign_bits + f.exponent_bits + f.mantissa_bits == format(f.code, "016b")
    sign = -1.0 if f.sign else 1.0
    if f.kind == "normal":
        assert f.value == sign * math.ldexp(1 + f.mantissa / 1024, f.unbiased_exponent)
    elif f.kind in ("subnormal", "zero"):
        assert f.value == sign * math.ldexp(f.mantissa / 1024, -14)


def test_range_and_precision_table_values():
    fp16, bf16, e4m3 = (ql.get_format(n) for n in ("fp16", "bf16", "fp8_e4m3"))
    assert (fp16.min_normal, fp16.eps) == (2.0**-14, 2.0**-10)
    assert bf16.min_normal == 2.0**-126
    assert (e4m3.min_normal, e4m3.min_subnormal, e4m3.eps) == (2.0**-6, 2.0**-9, 2.0**-3)


def test_fields_rejects_non_numbers():
    with pytest.raises(TypeError, match="value must be a real number"):
        ql.get_format("fp16").fields("1.0")


# --------------------------------------------------------------------------- 6.02 dB per bit


@pytest.fixture(scope="module")
def uniform_data() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1 << 18, generator=gen, dtype=torch.float64) * 2 - 1


@pytest.mark.parametrize("bits", [6, 8, 10, 12, 16])
def test_uniform_quantizer_on_uniform_data_gives_6_02_db_per_bit(uniform_data, bits):
    # 2^bits levels spread over the data's range: SQNR = 20 log10(2^bits - 1) ~ 6.02 x bits
    x_hat = ql.fake_quantize(uniform_data, f"int{bits}", symmetric=False)
    assert ql.sqnr_db(uniform_data, x_hat) == pytest.approx(sweeps.DB_PER_BIT * bits, abs=0.5)


def test_uniform_quantizer_slope_is_6_02_db_per_bit(uniform_data):
    # symmetric intN uses 2^bits - 1 levels: 20 log10(2^bits - 2) approaches 6.02 x bits from 5 bits on
    rows = sweeps.sqnr_sweep(uniform_data.float(), range(5, 17), ("tensor",))
    slope, _ = sweeps.fit_db_per_bit([r["bits"] for r in rows], [r["sqnr_db"] for r in rows])
    assert slope == pytest.approx(20 * math.log10(2), abs=0.5)
    steps = np.diff([r["sqnr_db"] for r in rows])
    assert np.all(np.abs(steps - 6.02) < 0.5)
