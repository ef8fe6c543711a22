"""quantlab.sweeps: synthetic weights, the uniform-noise theory, error rows and SQNR sweeps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab import sweeps

# --------------------------------------------------------------------------- synthetic weights


def test_gaussian_weights_are_seeded_and_scaled():
    a = sweeps.gaussian_weights((256, 512), std=0.05, seed=3)
    b = sweeps.gaussian_weights((256, 512), std=0.05, seed=3)
    c = sweeps.gaussian_weights((256, 512), std=0.05, seed=4)
    assert a.shape == (256, 512) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.std()) == pytest.approx(0.05, rel=0.02)


def test_student_t_weights_have_the_asked_std_and_heavy_tails():
    t = sweeps.student_t_weights((512, 1024), df=5, std=0.02, seed=0)
    g = sweeps.gaussian_weights((512, 1024), std=0.02, seed=0)
    assert t.dtype == torch.float32 and t.shape == (512, 1024)
    assert float(t.std()) == pytest.approx(0.02, rel=0.05)
    assert torch.equal(t, sweeps.student_t_weights((512, 1024), df=5, std=0.02, seed=0))
    assert sweeps.crest_factor(t) > 2 * sweeps.crest_factor(g)


def test_int_shape_is_one_dimensional():
    assert sweeps.gaussian_weights(10).shape == (10,)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(shape=(0, 4)), ValueError, "shape must hold at least one positive"),
        (dict(shape=(2.5, 4)), TypeError, "shape must hold ints"),
        (dict(shape="ab"), TypeError, "shape must hold ints"),
        (dict(shape=None), TypeError, "shape must be an int or a sequence"),
        (dict(std=0), ValueError, "std must be a positive finite number, got 0"),
        (dict(std="1"), TypeError, "std must be a positive number"),
        (dict(seed=-1), ValueError, "seed must be a non-negative int, got -1"),
    ],
)
def test_gaussian_weights_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        sweeps.gaussian_weights(**kwargs)


def test_student_t_needs_df_above_two():
    with pytest.raises(ValueError, match="df must be > 2 so that the variance exists, got 2.0"):
        sweeps.student_t_weights((4, 4), df=2)


# --------------------------------------------------------------------------- theory


def test_crest_factor_known_answers():
    assert sweeps.crest_factor(np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx(1.0)
    assert sweeps.crest_factor(torch.tensor([3.0, 0.0, 0.0, 0.0])) == pytest.approx(2.0)
    sine = np.sin(np.linspace(0, 2 * np.pi, 100_001)[:-1])
    assert sweeps.crest_factor(sine) == pytest.approx(math.sqrt(2), rel=1e-6)


@pytest.mark.parametrize(
    "x, err, match",
    [
        (np.zeros(3), ValueError, "undefined for an all-zero x"),
        (np.zeros(0), ValueError, "x is empty"),
        (np.arange(3), TypeError, "x must hold real floating-point values"),
        ([1.0, 2.0], TypeError, "x must be a numpy.ndarray or a torch.Tensor, got list"),
    ],
)
def test_crest_factor_errors(x, err, match):
    with pytest.raises(err, match=match):
        sweeps.crest_factor(x)


def test_uniform_noise_prediction_known_answer():
    # crest sqrt(3) (uniform data): 10 log10(12 / 3) + 20 log10(127) = 20 log10(254)
    assert sweeps.uniform_noise_sqnr_db(8, math.sqrt(3)) == pytest.approx(20 * math.log10(254))
    arr = sweeps.uniform_noise_sqnr_db(range(2, 5), 1.0)
    assert isinstance(arr, np.ndarray)
    np.testing.assert_allclose(arr, 10 * np.log10(12) + 20 * np.log10([1, 3, 7]))


def test_uniform_noise_prediction_matches_gaussian_measurement():
    x = sweeps.gaussian_weights((256, 1024), seed=1)
    crest = sweeps.crest_factor(x)
    for bits in (6, 8, 12):
        measured = ql.sqnr_db(x, ql.fake_quantize(x, f"int{bits}"))
        assert measured == pytest.approx(sweeps.uniform_noise_sqnr_db(bits, crest), abs=0.3)


@pytest.mark.parametrize(
    "bits, crest, err, match",
    [
        (1, 2.0, ValueError, "bits must be from 2 to 16, got 1"),
        (17, 2.0, ValueError, "bits must be from 2 to 16, got 17"),
        (True, 2.0, TypeError, "bits must be an int"),
        (8, 0.5, ValueError, "crest must be >= 1"),
        (8, -1.0, ValueError, "crest must be a positive finite number"),
    ],
)
def test_uniform_noise_prediction_errors(bits, crest, err, match):
    with pytest.raises(err, match=match):
        sweeps.uniform_noise_sqnr_db(bits, crest)


def test_rule_of_thumb_and_the_sine_offset():
    assert pytest.approx(6.0206, abs=1e-4) == sweeps.DB_PER_BIT
    assert pytest.approx(1.7609, abs=1e-4) == sweeps.SINE_OFFSET_DB
    assert sweeps.rule_of_thumb_db(8) == pytest.approx(6.0206 * 8 + 1.7609, abs=1e-3)
    np.testing.assert_allclose(sweeps.rule_of_thumb_db([2, 4], offset_db=0.0), [12.0412, 24.0824], atol=1e-3)
    with pytest.raises(TypeError, match="offset_db must be a number"):
        sweeps.rule_of_thumb_db(8, offset_db="1.76")
    with pytest.raises(TypeError, match="bits must be a number"):
        sweeps.rule_of_thumb_db("8")


def test_full_scale_sine_reaches_six_bits_plus_1_76_db():
    # 2^10 levels spread over [-1, 1] (asymmetric int10): the textbook's full-scale sine
    sine = torch.sin(torch.linspace(0, 2 * math.pi * 997, 200_003, dtype=torch.float64))
    x_hat = ql.fake_quantize(sine, "int10", symmetric=False)
    assert ql.sqnr_db(sine, x_hat) == pytest.approx(sweeps.rule_of_thumb_db(10), abs=0.1)


# --------------------------------------------------------------------------- error rows


@pytest.fixture(scope="module")
def w() -> torch.Tensor:
    return sweeps.student_t_weights((64, 256), df=3, seed=0)


def test_error_row_keys_and_bits_per_weight(w):
    row = sweeps.error_row(w, "int8", "tensor")
    assert set(row) == {"format", "bits", "granularity", "group_size", "bits_per_weight", "sqnr_db", "relative_error"}
    assert row["bits_per_weight"] == pytest.approx(8 + 32 / w.numel())
    ch = sweeps.error_row(w, "int8", "channel")
    assert ch["bits_per_weight"] == pytest.approx(8 + 32 / 256)  # one fp32 scale per row of 256
    g = sweeps.error_row(w, "int4", 64, scale_dtype="fp16")
    assert (g["granularity"], g["group_size"]) == ("g64", 64)
    assert g["bits_per_weight"] == pytest.approx(4 + 16 / 64)


def test_error_row_matches_the_metrics(w):
    row = sweeps.error_row(w, "int4", "channel")
    x_hat = ql.fake_quantize(w, "int4", granularity="channel")
    assert row["sqnr_db"] == ql.sqnr_db(w, x_hat)
    # SQNR and relative error are the same number in two units
    assert row["relative_error"] == pytest.approx(ql.relative_error(w, x_hat), rel=1e-12)
    assert row["sqnr_db"] == pytest.approx(-20 * math.log10(row["relative_error"]))


def test_error_row_casts(w):
    fp32 = sweeps.error_row(w, "fp32", "cast")
    assert fp32["sqnr_db"] == math.inf and fp32["relative_error"] == 0.0
    assert fp32["bits_per_weight"] == 32
    fp16 = sweeps.error_row(w, "fp16", "cast")
    assert fp16["bits_per_weight"] == 16 and fp16["granularity"] == "cast"
    assert fp16["sqnr_db"] > sweeps.error_row(w, "bf16", "cast")["sqnr_db"]


@pytest.mark.parametrize(
    "fmt, gran, err, match",
    [
        ("int8", "cast", ValueError, "granularity='cast' needs fp32, fp16 or bf16, got fmt=int8"),
        ("int8", "rows", ValueError, "granularity must be 'tensor', 'channel', 'cast' or a group size"),
        ("int8", 0, ValueError, "a group size must be positive, got 0"),
        ("int8", 1.5, TypeError, "granularity must be"),
        ("int8", 100, ValueError, "group_size must divide the last dimension 256, got 100"),
        ("int99", "tensor", ValueError, "integer formats have 1 to 16 bits"),
    ],
)
def test_error_row_errors(w, fmt, gran, err, match):
    with pytest.raises(err, match=match):
        sweeps.error_row(w, fmt, gran)


def test_granularity_label():
    assert [sweeps.granularity_label(g) for g in ("tensor", "channel", "cast", 32)] == [
        "tensor",
        "channel",
        "cast",
        "g32",
    ]


# --------------------------------------------------------------------------- sweeps


def test_sweep_shape_and_order(w):
    rows = sweeps.sqnr_sweep(w, [2, 4, 8], ("tensor", "channel", 32))
    assert [(r["bits"], r["granularity"]) for r in rows] == [
        (b, g) for b in (2, 4, 8) for g in ("tensor", "channel", "g32")
    ]
    assert [r["format"] for r in rows[:3]] == ["int2"] * 3


def test_sweep_sqnr_grows_with_bits_and_smaller_groups_help(w):
    rows = sweeps.sqnr_sweep(w, range(2, 17), ("tensor", 32))
    for gran in ("tensor", "g32"):
        s = [r["sqnr_db"] for r in rows if r["granularity"] == gran]
        assert np.all(np.diff(s) > 0)
    by = {(r["bits"], r["granularity"]): r["sqnr_db"] for r in rows}
    assert all(by[(b, "g32")] > by[(b, "tensor")] for b in range(2, 17))


def test_sweep_of_gaussian_has_slope_6_02_above_five_bits():
    x = sweeps.gaussian_weights((256, 512), seed=2)
    rows = sweeps.sqnr_sweep(x, range(6, 17), ("tensor",))
    slope, _ = sweeps.fit_db_per_bit([r["bits"] for r in rows], [r["sqnr_db"] for r in rows])
    assert slope == pytest.approx(sweeps.DB_PER_BIT, abs=0.1)


def test_sweep_numpy_and_torch_agree(w):
    a = sweeps.sqnr_sweep(w, [3, 5], ("channel",))
    b = sweeps.sqnr_sweep(w.numpy(), [3, 5], ("channel",))
    assert [r["sqnr_db"] for r in a] == pytest.approx([r["sqnr_db"] for r in b])


def test_sweep_with_another_format_family(w):
    rows = sweeps.sqnr_sweep(w, [4, 8], ("tensor",), fmt=lambda b: "fp4_e2m1" if b == 4 else "fp8_e4m3")
    assert [r["format"] for r in rows] == ["fp4_e2m1", "fp8_e4m3"]


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(bits=[]), ValueError, "bits must hold at least one bit width"),
        (dict(bits=[1]), ValueError, "bits must be from 2 to 16, got 1"),
        (dict(granularities="tensor"), TypeError, "granularities must be a sequence of specs"),
        (dict(granularities=()), ValueError, "granularities must hold at least one spec"),
        (dict(granularities=("rows",)), ValueError, "granularity must be"),
        (dict(fmt="int4"), TypeError, "fmt must map a bit width to a format"),
    ],
)
def test_sweep_errors(w, kwargs, err, match):
    with pytest.raises(err, match=match):
        sweeps.sqnr_sweep(w, **kwargs)


# --------------------------------------------------------------------------- fit and table


def test_fit_recovers_an_exact_line():
    bits = [2, 4, 6, 8]
    slope, intercept = sweeps.fit_db_per_bit(bits, [6.02 * b - 3.0 for b in bits])
    assert (slope, intercept) == (pytest.approx(6.02), pytest.approx(-3.0))


@pytest.mark.parametrize(
    "bits, sqnr, match",
    [
        ([2, 4], [1.0], "same length"),
        ([4, 4], [1.0, 2.0], "at least two distinct values"),
        ([2, 4], [1.0, math.inf], "must be finite"),
    ],
)
def test_fit_errors(bits, sqnr, match):
    with pytest.raises(ValueError, match=match):
        sweeps.fit_db_per_bit(bits, sqnr)


def test_rows_to_markdown():
    rows = [{"a": "int8", "b": 8.0625, "c": None}, {"a": "fp16", "b": 16.0, "c": 3}]
    md = sweeps.rows_to_markdown(rows, ["a", "b", "c"], ["format", "bits", "n"], {"b": ".2f"})
    assert md.splitlines() == [
        "| format | bits | n |",
        "|---|---|---|",
        "| int8 | 8.06 | - |",
        "| fp16 | 16.00 | 3 |",
    ]
    with pytest.raises(ValueError, match=r"row 0 has no column\(s\) \['d'\]"):
        sweeps.rows_to_markdown(rows, ["a", "d"])
    with pytest.raises(ValueError, match="headers must have 2 entries, got 1"):
        sweeps.rows_to_markdown(rows, ["a", "b"], ["x"])
