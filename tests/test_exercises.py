"""The exercise checkers: correct solutions pass, each typical mistake gets its own message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantlab.exercises import (
    CheckResult,
    check_asymmetric,
    check_gptq_step,
    check_pack_int4,
    check_symmetric,
)

import quantlab as ql
from quantlab.book import exercises_gptq, exercises_packing, exercises_quantizers


def failed_with(result: CheckResult, *phrases: str) -> None:
    assert isinstance(result, CheckResult)
    assert not result.passed, result.message
    for phrase in phrases:
        assert phrase in result.message, result.message


def round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


# --------------------------------------------------------------------------- symmetric


def sym_quantize(x, bits):
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(x).max() / qmax
    return np.clip(np.round(x / scale), -qmax, qmax), scale


def sym_dequantize(codes, scale):
    return codes * scale


def sym_quantize_int8_half_away(x, bits):
    qmax = 2 ** (bits - 1) - 1
    scale = np.float32(np.abs(x).max() / qmax)
    codes = np.clip(round_half_away(x / scale), -qmax - 1, qmax).astype(np.int8)
    return codes, np.array([scale])


def sym_variant(codes_fn=None, scale_fn=None, clip=True):
    """A symmetric quantizer with one part replaced."""

    def quantize(x, bits):
        qmax = 2 ** (bits - 1) - 1
        scale = scale_fn(x, qmax) if scale_fn else np.abs(x).max() / qmax
        codes = codes_fn(x, scale) if codes_fn else np.round(x / scale)
        return (np.clip(codes, -qmax, qmax) if clip else codes), scale

    return quantize


def test_symmetric_correct_solutions_pass():
    for quantize in (sym_quantize, sym_quantize_int8_half_away):
        result = check_symmetric(quantize, sym_dequantize)
        assert result.passed and result, result.message
        assert "max|x| / qmax" in result.message


def test_symmetric_missing_clip_alone_passes():
    # with the absmax scale |x / scale| <= qmax: the clip never acts (documented)
    assert check_symmetric(sym_variant(clip=False), sym_dequantize).passed


@pytest.mark.parametrize(
    "quantize, phrases",
    [
        (sym_variant(codes_fn=lambda x, s: np.floor(x / s)), ["you floored instead of rounding"]),
        (sym_variant(codes_fn=lambda x, s: np.floor_divide(x, s)), ["you floored instead of rounding"]),
        (sym_variant(codes_fn=lambda x, s: (x / s).astype(int)), ["truncated toward zero instead of rounding"]),
        (sym_variant(codes_fn=lambda x, s: np.ceil(x / s)), ["ceiling instead of rounding"]),
        (sym_variant(codes_fn=lambda x, s: x / s), ["codes are not integers"]),
        (sym_variant(codes_fn=lambda x, s: np.round(x * s)), ["multiplied by the scale"]),
        (sym_variant(scale_fn=lambda x, q: x.max() / q), ["x.max() instead of max|x|"]),
        (
            sym_variant(scale_fn=lambda x, q: q / np.abs(x).max(), codes_fn=lambda x, s: np.round(x * s)),
            ["scale is inverted"],
        ),
        (sym_variant(scale_fn=lambda x, q: np.abs(x).max() / (2 * q + 1)), ["unsigned levels"]),
        (
            sym_variant(scale_fn=lambda x, q: np.abs(x).max(axis=-1, keepdims=True) / q),
            ["must be one number", "ONE absmax scale"],
        ),
    ],
)
def test_symmetric_mistakes(quantize, phrases):
    failed_with(check_symmetric(quantize, sym_dequantize), *phrases)


def test_symmetric_wrong_qmax():
    def quantize(x, bits):
        qmax = 2 ** (bits - 1)  # 8 at 4 bits
        scale = np.abs(x).max() / qmax
        return np.clip(np.round(x / scale), -qmax, qmax), scale

    failed_with(check_symmetric(quantize, sym_dequantize), "codes reach 8 at 4 bits: qmax for signed 4-bit is 7")

    def quantize_clip_8_7(x, bits):  # the qmax of 2**(bits-1) in the scale only
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(x).max() / (qmax + 1)
        return np.clip(np.round(x / scale), -qmax - 1, qmax), scale

    failed_with(check_symmetric(quantize_clip_8_7, sym_dequantize), "qmax for signed 4-bit is 7")


def test_symmetric_missing_clip_with_max_scale():
    quantize = sym_variant(scale_fn=lambda x, q: x.max() / q, clip=False)
    failed_with(
        check_symmetric(quantize, sym_dequantize),
        "outside the signed 4-bit grid -7..7",
        "clip them",
        "x.max() instead of max|x|",
    )


def test_symmetric_dequantize_mistakes():
    failed_with(check_symmetric(sym_quantize, lambda c, s: c / s), "dequantize divided by the scale")
    failed_with(check_symmetric(sym_quantize, lambda c, s: c), "returned the codes unscaled")
    failed_with(check_symmetric(sym_quantize, lambda c, s: (c * s).ravel()), "has shape")


def test_symmetric_return_types_and_shapes():
    failed_with(
        check_symmetric(lambda x, b: sym_quantize(x, b)[0], sym_dequantize),
        "quantize must return 2 values (codes, scale)",
    )
    failed_with(check_symmetric(lambda x, b: None, sym_dequantize), "got None")
    failed_with(
        check_symmetric(lambda x, b: (sym_quantize(x, b)[0].ravel(), sym_quantize(x, b)[1]), sym_dequantize),
        "has shape (24,), expected (4, 6)",
    )
    failed_with(check_symmetric(lambda x, b: ("codes", 1.0), sym_dequantize), "numeric array")


def test_symmetric_exceptions_are_reported():
    def quantize(x, bits):
        raise ValueError("not written yet")

    result = check_symmetric(quantize, sym_dequantize)
    failed_with(result, "quantize(x, 4) raised ValueError: not written yet")

    def dequantize(codes, scale):
        return codes @ scale  # matmul of an array and a scalar

    failed_with(check_symmetric(sym_quantize, dequantize), "dequantize(codes", "raised ValueError")


# --------------------------------------------------------------------------- asymmetric


def asym_quantize(x, bits):
    top = 2**bits - 1
    lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
    scale = (hi - lo) / top
    zero_point = int(np.clip(np.round(-lo / scale), 0, top))
    return np.clip(np.round(x / scale) + zero_point, 0, top), scale, zero_point


def asym_dequantize(codes, scale, zero_point):
    return (codes - zero_point) * scale


def asym_quantize_uint8_half_away(x, bits):
    top = 2**bits - 1
    lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
    scale = np.float32((hi - lo) / top)
    zp = np.clip(round_half_away(-lo / scale), 0, top)
    codes = np.clip(round_half_away(x / scale) + zp, 0, top).astype(np.uint8)
    return codes, scale, np.int32(zp)


def asym_variant(scale_fn=None, zp_fn=None, codes_fn=None, include_zero=True):
    """An asymmetric quantizer with one part replaced; fns get (x, lo, hi, top, scale, zp)."""

    def quantize(x, bits):
        top = 2**bits - 1
        lo, hi = (min(x.min(), 0.0), max(x.max(), 0.0)) if include_zero else (x.min(), x.max())
        scale = scale_fn(lo, hi, top) if scale_fn else (hi - lo) / top
        zp = zp_fn(lo, scale, top) if zp_fn else np.clip(np.round(-lo / scale), 0, top)
        codes = codes_fn(x, lo, scale, zp) if codes_fn else np.round(x / scale) + zp
        return np.clip(codes, 0, top), scale, zp

    return quantize


def test_asymmetric_correct_solutions_pass():
    for quantize in (asym_quantize, asym_quantize_uint8_half_away):
        result = check_asymmetric(quantize, asym_dequantize)
        assert result.passed, result.message
        assert "max(x.max(), 0)" in result.message


@pytest.mark.parametrize(
    "quantize, phrases",
    [
        (asym_variant(zp_fn=lambda lo, s, top: np.round(lo / s)), ["zero_point has the wrong sign"]),
        (asym_variant(zp_fn=lambda lo, s, top: np.clip(np.round(lo / s), 0, top)), ["zero_point is 0", "wrong sign"]),
        (asym_variant(zp_fn=lambda lo, s, top: -lo / s), ["zero_point must be an integer"]),
        (
            asym_variant(scale_fn=lambda lo, hi, top: (hi - lo) / (top + 1)),
            ["divides by 2**bits = 16", "(2**bits - 1)"],
        ),
        (asym_variant(include_zero=False), ["leaves out 0", "min(x.min(), 0)"]),
        (asym_variant(codes_fn=lambda x, lo, s, zp: np.round(x / s)), ["forgot to add the zero point"]),
        (asym_variant(codes_fn=lambda x, lo, s, zp: np.round(x / s) - zp), ["subtracted the zero point in quantize"]),
        (asym_variant(codes_fn=lambda x, lo, s, zp: np.round((x - lo) / s)), ["rounded (x - min) / scale in one go"]),
        (asym_variant(codes_fn=lambda x, lo, s, zp: np.floor(x / s) + zp), ["you floored instead of rounding"]),
        (asym_variant(codes_fn=lambda x, lo, s, zp: (x / s).astype(int) + zp), ["truncated toward zero"]),
        (asym_variant(codes_fn=lambda x, lo, s, zp: x / s + zp), ["codes are not integers"]),
    ],
)
def test_asymmetric_mistakes(quantize, phrases):
    failed_with(check_asymmetric(quantize, asym_dequantize), *phrases)


def test_asymmetric_dequantize_mistakes():
    failed_with(check_asymmetric(asym_quantize, lambda c, s, z: c * s), "dequantize forgot to subtract the zero point")
    failed_with(check_asymmetric(asym_quantize, lambda c, s, z: (c + z) * s), "added the zero point")
    failed_with(check_asymmetric(asym_quantize, lambda c, s, z: c * s - z), "after scaling")


def test_asymmetric_codes_off_grid_and_return_types():
    def unclipped(x, bits):  # codes shifted off the grid, no clip
        codes, scale, zp = asym_quantize(x, bits)
        return codes + 2 ** (bits - 1), scale, zp

    failed_with(check_asymmetric(unclipped, asym_dequantize), "outside the unsigned 4-bit grid 0..15")
    failed_with(
        check_asymmetric(lambda x, b: asym_quantize(x, b)[:2], asym_dequantize),
        "quantize must return 3 values (codes, scale, zero_point)",
    )
    failed_with(check_asymmetric(lambda x, b: 1 / 0, asym_dequantize), "ZeroDivisionError: division by zero")


# --------------------------------------------------------------------------- int4 packing


def pack(codes):
    c = np.asarray(codes, dtype=np.int64) & 0xF
    if c.size % 2:
        c = np.append(c, 0)
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def unpack(packed, n):
    v = np.stack([packed & 0xF, packed >> 4], axis=1).ravel()[:n].astype(np.int16)
    return np.where(v >= 8, v - 16, v)


def test_reference_layout_is_quantlab_pack():
    for codes in exercises_packing._pack_cases():
        n = codes.size
        assert np.array_equal(exercises_packing._ref_pack_int4(codes), ql.pack(codes, 4))
        assert np.array_equal(pack(codes), ql.pack(codes, 4))
        packed = ql.pack(codes, 4)
        assert np.array_equal(exercises_packing._ref_unpack_int4(packed, n), ql.unpack(packed, 4, n, signed=True))
        assert np.array_equal(exercises_packing._ref_unpack_int4(exercises_packing._ref_pack_int4(codes), n), codes)
    assert exercises_packing._ref_pack_int4(np.array([-8, 7, -1, 0])).tolist() == [0x78, 0x0F]


def test_pack_correct_solution_passes():
    result = check_pack_int4(pack, unpack)
    assert result.passed, result.message
    # quantlab's own functions are a correct solution too
    assert check_pack_int4(lambda c: ql.pack(c, 4), lambda p, n: ql.unpack(p, 4, n, signed=True)).passed


def pack_swapped(codes):
    c = np.asarray(codes, dtype=np.int64) & 0xF
    if c.size % 2:
        c = np.append(c, 0)
    return (c[1::2] | (c[0::2] << 4)).astype(np.uint8)


def pack_unmasked(codes):
    c = np.asarray(codes, dtype=np.int64)
    if c.size % 2:
        c = np.append(c, 0)
    return (c[0::2] | ((c[1::2] & 0xF) << 4)).astype(np.uint8)


def unpack_unsigned(packed, n):
    return np.stack([packed & 0xF, packed >> 4], axis=1).ravel()[:n]


def unpack_in_uint8(packed, n):
    v = np.stack([packed & 0xF, packed >> 4], axis=1).ravel()[:n]  # still uint8
    return np.where(v >= 8, v - 16, v)


def pack_even_only(codes):
    c = np.asarray(codes, dtype=np.int64).reshape(-1, 2) & 0xF
    return (c[:, 0] | (c[:, 1] << 4)).astype(np.uint8)


def pack_drop_last(codes):
    c = np.asarray(codes, dtype=np.int64) & 0xF
    c = c[: c.size - c.size % 2]
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


@pytest.mark.parametrize(
    "pack_fn, unpack_fn, phrases",
    [
        (pack_swapped, unpack, ["element 2i belongs in the low nibble"]),
        (pack, lambda p, n: unpack(pack_swapped(unpack(p, n)), n), ["nibbles are read swapped"]),
        (pack, unpack_unsigned, ["codes come back as 8..15 instead of -8..-1"]),
        (pack, unpack_in_uint8, ["248..255", "uint8"]),
        (pack_unmasked, unpack, ["mask each code", "code & 0xF"]),
        (pack_even_only, unpack, ["is odd: pad the codes", "ValueError"]),
        (pack_drop_last, unpack, ["for odd n = 7 the last code needs a byte of its own"]),
        (pack, lambda p, n: unpack(p, 2 * p.size), ["exactly n = 7 codes", "drop it"]),
        (lambda c: pack(c).astype(np.int64), unpack, ["dtype uint8", "got int64", ".astype(np.uint8)"]),
        (lambda c: (np.asarray(c) & 0xF).astype(np.uint8), unpack, ["one byte per code"]),
        (lambda c: pack(c)[None, :], unpack, ["flat 1-d array"]),
        (lambda c: [1.5], unpack, ["must return a uint8 array"]),
    ],
)
def test_pack_mistakes(pack_fn, unpack_fn, phrases):
    failed_with(check_pack_int4(pack_fn, unpack_fn), *phrases)


# --------------------------------------------------------------------------- GPTQ step


def gptq_step(W, U, j, quantize_column):
    W = W.copy()
    q = quantize_column(W[:, j])
    err = (W[:, j] - q) / U[j, j]
    W[:, j] = q
    W[:, j + 1 :] -= err[:, None] * U[j, j + 1 :][None, :]
    return W


def gptq_step_library_style(W, U, j, quantize_column):  # in place, column j included
    err = (W[:, j] - quantize_column(W[:, j])) / U[j, j]
    W[:, j:] -= np.outer(err, U[j, j:])
    return W


def step_variant(update):
    """A GPTQ step that quantizes column j correctly and then calls ``update(W, U, j, w, q)``."""

    def step(W, U, j, quantize_column):
        W = W.copy()
        w = W[:, j].copy()
        q = quantize_column(w)
        W[:, j] = q
        update(W, U, j, w, q)
        return W

    return step


def update_every_other_column(W, U, j, w, q):
    others = np.arange(W.shape[1]) != j
    W[:, others] -= np.outer((w - q) / U[j, j], U[j, others])


def update_without_division(W, U, j, w, q):
    W[:, j + 1 :] -= np.outer(w - q, U[j, j + 1 :])


def update_multiplying(W, U, j, w, q):
    W[:, j + 1 :] -= np.outer((w - q) * U[j, j], U[j, j + 1 :])


def update_wrong_sign(W, U, j, w, q):
    W[:, j + 1 :] += np.outer((w - q) / U[j, j], U[j, j + 1 :])


def update_nothing(W, U, j, w, q):
    pass


def update_with_column(W, U, j, w, q):
    W[:, j + 1 :] -= np.outer((w - q) / U[j, j], U[j + 1 :, j])


def test_gptq_step_correct_solutions_pass():
    for step in (gptq_step, gptq_step_library_style):
        result = check_gptq_step(step)
        assert result.passed, result.message


@pytest.mark.parametrize(
    "step, phrases",
    [
        (step_variant(update_every_other_column), ["already quantized", "update only W[:, j+1:]"]),
        (step_variant(update_without_division), ["you forgot the division by U[j, j]"]),
        (step_variant(update_multiplying), ["multiplied by U[j, j]"]),
        (step_variant(update_wrong_sign), ["wrong sign"]),
        (step_variant(update_nothing), ["the columns after j did not change"]),
        (step_variant(update_with_column), ["did not change", "U[j+1:, j] is zero"]),
    ],
)
def test_gptq_step_mistakes(step, phrases):
    result = check_gptq_step(step)
    failed_with(result, *phrases)
    # the page names the matrix U (formula, exercise and solution): the messages use that name
    assert "H_inv" not in result.message and "U[j" in result.message, result.message


def test_gptq_step_column_j_and_return_value():
    def keeps_column(W, U, j, quantize_column):
        out = gptq_step(W, U, j, quantize_column)
        out[:, j] = W[:, j]  # column j left unquantized
        return out

    failed_with(check_gptq_step(keeps_column), "still holds its unquantized values")

    def in_place_no_return(W, U, j, quantize_column):
        gptq_step_library_style(W, U, j, quantize_column)

    failed_with(check_gptq_step(in_place_no_return), "returned None", "return the updated W")
    failed_with(check_gptq_step(lambda W, H, j, qc: W.T), "has shape (3, 4), expected (4, 3)")
    failed_with(
        check_gptq_step(lambda W, H, j, qc: qc(W)), "raised ValueError", "quantize_column expects one column W[:, j]"
    )


def library_toy():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(4, 3))
    X = rng.normal(size=(32, 3)) @ np.array([[1.0, 0.6, 0.0], [0.0, 1.0, 0.4], [0.0, 0.0, 1.0]])
    H = 2 * X.T @ X / X.shape[0]
    Hd = H + 0.01 * np.mean(np.diag(H)) * np.eye(3)  # the library's damping
    U = np.linalg.cholesky(np.linalg.inv(Hd)).T  # upper: U.T @ U = H^-1
    scale32 = (np.abs(W).max(axis=1) / 7).astype(np.float32)  # per-row int4 scale (fp32, as stored)

    def quantize_column(w):
        codes = np.clip(np.round(w / scale32.astype(np.float64)), -8, 7)
        return (codes.astype(np.float32) * scale32).astype(np.float64)

    return W, H, Hd, U, scale32, quantize_column


def test_gptq_step_agrees_with_library_on_a_three_column_toy():
    W, H, Hd, U, scale32, quantize_column = library_toy()
    lib = ql.gptq.gptq_reference(W, H, "int4", group_size=None, damp=0.01, scale_dtype="fp32")
    Wk = W.copy()
    loss = 0.0
    for j in range(3):
        err = (Wk[:, j] - quantize_column(Wk[:, j])) / U[j, j]
        loss += float(err @ err) / 2
        Wk = gptq_step(Wk, U, j, quantize_column)
    assert np.allclose(np.asarray(lib.qtensor.scale).ravel(), scale32)
    codes = np.round(Wk / scale32.astype(np.float64)[:, None])
    assert np.array_equal(codes, np.asarray(lib.qtensor.codes))
    assert np.allclose(Wk, np.asarray(lib.weight), atol=1e-6)
    assert loss == pytest.approx(lib.loss, rel=1e-6)
    # step 0 alone: the Cholesky row and the inverse Hessian's row give the same update
    one_u = gptq_step(W, U, 0, quantize_column)
    one_h = gptq_step(W, np.linalg.inv(Hd), 0, quantize_column)
    assert np.allclose(one_u, one_h)
    assert not np.allclose(one_u[:, 1:], W[:, 1:])  # the error was spread


def test_checker_column_quantizer_is_the_library_grid():
    W, *_ = library_toy()
    qc = exercises_gptq._ColumnQuantizer(np.abs(W).max(axis=1) / 7)
    lib = ql.quantize(
        torch.tensor(W[:, :1]),
        "int4",
        qparams=ql.choose_qparams(torch.tensor(W), "int4", granularity="channel", axis=0, scale_dtype="fp32"),
    )
    assert np.allclose(qc(W[:, 0]), lib.dequantize().numpy().ravel(), atol=1e-6)


# --------------------------------------------------------------------------- shared


@pytest.mark.parametrize(
    "checker, names",
    [
        (check_symmetric, ["quantize", "dequantize"]),
        (check_asymmetric, ["quantize", "dequantize"]),
        (check_pack_int4, ["pack", "unpack"]),
        (check_gptq_step, ["gptq_step"]),
    ],
)
def test_arguments_must_be_callable(checker, names):
    for bad in range(len(names)):
        args = [lambda *a: None] * len(names)
        args[bad] = 42
        with pytest.raises(TypeError, match=f"^{names[bad]} must be callable"):
            checker(*args)


def test_results_render():
    ok = check_symmetric(sym_quantize, sym_dequantize)
    bad = check_symmetric(sym_variant(codes_fn=lambda x, s: np.floor(x / s)), sym_dequantize)
    assert str(ok).startswith("✓ passed: ") and repr(ok) == str(ok) and bool(ok)
    assert str(bad).startswith("✗ you floored") and not bad
    for result, color in ((ok, "#1a7f37"), (bad, "#cf222e")):
        page = result._repr_html_()
        assert result.headline in page and color in page and "style=" in page
        for external in ("<link", "<script", "class=", "src=", "href=", "url("):
            assert external not in page
        assert result.message.split(":")[0] in page
        assert result.headline in result._repr_markdown_()
    assert "max|x| / qmax" in ok._repr_html_() and "floored" in bad._repr_html_()
    assert "max\\|x\\| / qmax" in ok._repr_markdown_()


def test_html_escapes_the_message():
    result = CheckResult(False, "codes <b>&</b>")
    assert "codes &lt;b&gt;&amp;&lt;/b&gt;" in result._repr_html_()


def test_cases_have_no_rounding_ties():
    # round half to even and half away from zero agree on every case
    def margin(r):
        return float(np.min(np.abs(np.abs(r) % 1.0 - 0.5)))

    for x, bits in exercises_quantizers._symmetric_cases():
        _, scale = exercises_quantizers._ref_symmetric(x, bits)
        assert margin(x / scale) > 0.01
    for x, bits in exercises_quantizers._asymmetric_cases():
        _, scale, _ = exercises_quantizers._ref_asymmetric(x, bits)
        lo, _ = exercises_quantizers._asym_range(x)
        assert margin(x / scale) > 0.01 and margin(-lo / scale) > 0.01
