"""Checkers of the quantizer exercises: symmetric (absmax) and asymmetric (min/max) quantization.

:func:`check_symmetric` -- one absmax scale per tensor, ``scale = max|x| / qmax`` with
``qmax = 2^(bits-1) - 1``, signed codes ``round(x / scale)`` in ``-qmax..qmax``.
:func:`check_asymmetric` -- ``scale = (max - min) / (2^bits - 1)``, an integer zero point
``round(-min / scale)``, unsigned codes ``round(x / scale) + zero_point`` in ``0..2^bits-1``.
Each names the mistake it recognises (floor instead of round, the wrong ``qmax``, a zero
point with the wrong sign, no clipping, ...) and the case where it shows.

Taught in: chapters/02b_build_it.ipynb, "Build it yourself".
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .exercises_common import (
    CheckResult,
    Fail,
    avoid_ties,
    call_reader,
    check_not_truncated,
    dtype_of,
    first_difference,
    first_fraction,
    is_close,
    low_precision,
    require_callable,
    returned_items,
    run_check,
    same_values,
    scalar_value,
    shaped_array,
    show_values,
    wrapped_codes,
)

__all__ = ["check_symmetric", "check_asymmetric"]

# --------------------------------------------------------------------------- symmetric


def _ref_symmetric(x: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """Reference: ``scale = max|x| / qmax``, ``codes = clip(round(x / scale), -qmax, qmax)``."""
    qmax = 2 ** (bits - 1) - 1
    scale = float(np.abs(x).max()) / qmax
    return np.clip(np.round(x / scale), -qmax, qmax), scale


def _symmetric_cases() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(2024)
    a = rng.normal(0.0, 1.0, 16)
    a[5] = -1.6 * np.abs(a).max()  # the most negative value dominates: max != max|x|
    b = rng.normal(0.0, 0.5, (4, 6))
    b[2, 3] = 1.4 * np.abs(b).max()  # here the largest value is positive
    c = rng.normal(0.0, 2.0, 40)
    c[7] = -1.3 * np.abs(c).max()
    d = -np.abs(rng.normal(0.0, 1.0, 11))  # all negative
    cases = [(b, 4), (a, 4), (c, 8), (d, 3)]
    out = []
    for x, bits in cases:
        qmax = 2 ** (bits - 1) - 1
        s = float(np.abs(x).max()) / qmax
        out.append((avoid_ties(x, lambda v, s=s: v / s, s), bits))
    return out


def _symmetric_scale_problem(scale: float, x: np.ndarray, bits: int) -> Optional[str]:
    qmax, half = 2 ** (bits - 1) - 1, 2 ** (bits - 1)
    absmax, xmax, xmin = float(np.abs(x).max()), float(x.max()), float(x.min())
    ref = absmax / qmax
    if is_close(scale, ref):
        return None
    if is_close(scale, xmax / qmax) and not is_close(xmax, absmax):
        return (
            f"the scale comes from x.max() instead of max|x| (x.max() = {xmax:.4g}, "
            f"max|x| = {absmax:.4g}): values below -x.max(), here down to x.min() = "
            f"{xmin:.4g}, do not fit and get clipped. Use the absolute maximum: "
            f"scale = np.abs(x).max() / qmax"
        )
    if is_close(scale, 1.0 / ref):
        return (
            f"the scale is inverted: you returned qmax / max|x| = {scale:.4g}; the scale is "
            f"the step between codes, scale = max|x| / qmax = {ref:.4g}, so that "
            f"x ≈ codes * scale"
        )
    span = (xmax - xmin) / (2**bits - 1)
    if is_close(scale, span) and not is_close(span, ref):
        return (
            "that is the asymmetric scale (x.max() - x.min()) / (2**bits - 1); the symmetric "
            f"scheme uses scale = max|x| / qmax = {ref:.4g}"
        )
    if scale > 0:
        k = absmax / scale
        kk = round(k)
        if kk > 0 and is_close(k, kk):
            if kk == half:
                return (
                    f"the scale is max|x| / {half}: qmax for signed {bits}-bit is {qmax} = "
                    f"2**(bits-1) - 1, not 2**(bits-1) = {half}"
                )
            if kk in (2**bits - 1, 2**bits):
                return (
                    f"the scale is max|x| / {kk}, a count of unsigned levels; the signed "
                    f"symmetric grid -{qmax}..{qmax} needs scale = max|x| / qmax = "
                    f"max|x| / {qmax}"
                )
            return (
                f"the scale is max|x| / {kk}; it should be max|x| / qmax = max|x| / {qmax} "
                f"(qmax = 2**(bits-1) - 1 at {bits} bits)"
            )
    return f"the scale is {scale:.6g}, expected max|x| / qmax = {absmax:.6g} / {qmax} = {ref:.6g}"


def _check_symmetric_case(quantize: Callable, dequantize: Callable, x: np.ndarray, bits: int) -> None:
    qmax, half = 2 ** (bits - 1) - 1, 2 ** (bits - 1)
    where = f" (on x = {show_values(x)} of shape {x.shape}, bits = {bits})"
    ref_codes, ref_scale = _ref_symmetric(x, bits)

    out = call_reader(quantize, f"quantize(x, {bits})", x.copy(), bits, hint=where)
    codes, scale = returned_items(out, 2, "quantize", "(codes, scale)")
    code_dtype, scale_dtype = dtype_of(codes), dtype_of(scale)
    codes = shaped_array(codes, "the codes returned by quantize", x.shape, ": return one code per element of x" + where)
    scale = scalar_value(
        scale, "the scale returned by quantize", "this exercise uses ONE absmax scale for the whole tensor" + where
    )
    i = first_fraction(codes)
    if i is not None:
        raise Fail(
            f"the codes are not integers (e.g. {codes.ravel()[i]:.4g}): round x / scale "
            f"to the nearest integer with np.round, then clip{where}"
        )
    wrapped = wrapped_codes(code_dtype, codes, ref_codes, bits)
    if wrapped:
        raise Fail(wrapped + where)
    rounded = low_precision(scale_dtype, scale, ref_scale, "the scale")
    if rounded:
        raise Fail(rounded + where)
    hi, lo = int(codes.max()), int(codes.min())
    if hi == half:
        raise Fail(
            f"codes reach {half} at {bits} bits: qmax for signed {bits}-bit is {qmax} "
            f"(2**(bits-1) - 1), so scale = max|x| / {qmax} and the codes are clipped "
            f"to -{qmax}..{qmax}{where}"
        )
    if hi > qmax or lo < -half:
        worst = hi if hi > qmax else lo
        also = _symmetric_scale_problem(scale, x, bits)
        raise Fail(
            f"codes reach {worst}, outside the signed {bits}-bit grid -{qmax}..{qmax}: "
            f"clip them, codes = np.clip(np.round(x / scale), -qmax, qmax)"
            + (f". Also, {also}" if also else "")
            + where
        )
    problem = _symmetric_scale_problem(scale, x, bits)
    if problem:
        raise Fail(problem + where)

    if not np.array_equal(codes, ref_codes):
        r = x / ref_scale
        on_int = np.abs(r - np.round(r)) < 1e-6  # floor/trunc of these may go either way
        k = first_difference(codes, ref_codes)
        ex = (
            f"(e.g. x = {x.ravel()[k]:.4g}: x / scale = {r.ravel()[k]:.3f}, which must give code "
            f"{int(ref_codes.ravel()[k])}, you returned {int(codes.ravel()[k])})"
        )
        variants = [
            (
                np.floor(r),
                on_int,
                "you floored instead of rounding: np.floor (and //) always goes "
                "down, so most values land a whole step too low; round to the nearest code with "
                "np.round " + ex,
            ),
            (
                np.trunc(r),
                on_int,
                "you truncated toward zero instead of rounding (int(), "
                ".astype(int) and np.trunc drop the fraction): round to the nearest code with "
                "np.round before converting " + ex,
            ),
            (
                np.ceil(r),
                on_int,
                "you took the ceiling instead of rounding: np.ceil always goes "
                "up; round to the nearest code with np.round " + ex,
            ),
            (
                np.round(x * ref_scale),
                None,
                "quantize multiplied by the scale: codes = "
                "round(x / scale) (dequantize is the one that multiplies, x_hat = codes * scale) " + ex,
            ),
        ]
        for variant, ignore, message in variants:
            if same_values(codes, np.clip(variant, -qmax, qmax), ignore):
                raise Fail(message + where)
        wrong = int(np.sum(codes != ref_codes))
        raise Fail(
            f"codes differ from clip(round(x / scale), -qmax, qmax) at {wrong} of {codes.size} positions {ex}{where}"
        )

    # dequantize, on the reference codes
    int_codes = ref_codes.astype(np.int64)
    xh = call_reader(dequantize, f"dequantize(codes, {ref_scale:.4g})", int_codes.copy(), ref_scale, hint=where)
    xh_dtype = dtype_of(xh)
    xh = shaped_array(xh, "the values returned by dequantize", x.shape, ": one value per code" + where)
    expected = ref_codes * ref_scale
    check_not_truncated(xh_dtype, xh, expected, where)
    if not np.allclose(xh, expected, rtol=1e-6, atol=1e-12):
        k = int(np.argmax(np.abs(xh - expected)))
        ex = (
            f"(code {int(ref_codes.ravel()[k])} with scale {ref_scale:.4g} should give "
            f"{expected.ravel()[k]:.4g}, you returned {xh.ravel()[k]:.4g})"
        )
        if np.allclose(xh, ref_codes / ref_scale, rtol=1e-6):
            raise Fail(f"dequantize divided by the scale: x_hat = codes * scale {ex}{where}")
        if np.allclose(xh, ref_codes, rtol=1e-6):
            raise Fail(f"dequantize returned the codes unscaled: x_hat = codes * scale {ex}{where}")
        raise Fail(f"dequantize should return codes * scale {ex}{where}")


def check_symmetric(quantize: Callable, dequantize: Callable) -> CheckResult:
    """Check a symmetric (absmax) quantizer with one scale per tensor.

    The reference, for ``bits`` bits and ``qmax = 2**(bits-1) - 1``::

        scale = max|x| / qmax
        codes = clip(round(x / scale), -qmax, qmax)      # integers in -qmax..qmax
        x_hat = codes * scale

    The grid is symmetric: ``-2**(bits-1)`` (e.g. -8 at 4 bits) is never produced,
    because ``|x / scale| <= qmax`` for every element; a clip to ``-2**(bits-1)..qmax``
    is therefore accepted too. For the same reason the clip never acts with this scale
    (it does once the scale comes from other data, e.g. calibration), so a missing clip is
    reported only when codes actually leave the grid. The cases use 3, 4 and 8 bits,
    1-d and 2-d tensors, tensors whose largest magnitude is negative, and an all-negative
    tensor; none has a rounding tie, so round-half-to-even (``np.round``) and
    round-half-away-from-zero both pass. Codes may be integers or floats holding integers.

    Mistakes recognised (each with its own message): floor, truncation or ceiling instead of
    rounding; codes not rounded at all; ``qmax = 2**(bits-1)`` (codes reach 8 at 4 bits);
    a scale from ``x.max()`` instead of ``max|x|``; an inverted scale or codes computed as
    ``x * scale``; an unsigned or asymmetric scale; codes outside the grid (missing clip);
    more than one scale; a dequantize that divides or forgets the scale; wrong shapes or
    return types; exceptions.

    Args:
        quantize: the reader's ``quantize(x, bits) -> (codes, scale)``; ``x`` is a float64
            numpy array of any shape, ``bits`` an int; ``codes`` has ``x``'s shape and
            ``scale`` is one number.
        dequantize: the reader's ``dequantize(codes, scale) -> x_hat``; called with the
            reference codes (an int64 array) and scale (a float).

    Returns:
        A :class:`CheckResult`: passed, or the first mistake found, in words, with the
        input it showed up on.

    Raises:
        TypeError: ``quantize`` or ``dequantize`` is not callable.
    """
    require_callable(quantize, "quantize")
    require_callable(dequantize, "dequantize")
    cases = _symmetric_cases()

    def body() -> str:
        for x, bits in cases:
            _check_symmetric_case(quantize, dequantize, x, bits)
        widths = ", ".join(str(b) for b in sorted({b for _, b in cases}))
        return (
            f"quantize and dequantize agree with the reference on {len(cases)} tensors "
            f"({widths} bits): scale = max|x| / qmax, codes = clip(round(x / scale), "
            f"-qmax, qmax), x_hat = codes * scale."
        )

    return run_check(body)


# --------------------------------------------------------------------------- asymmetric


def _asym_range(x: np.ndarray) -> tuple[float, float]:
    """The range ``[min(x.min(), 0), max(x.max(), 0)]``: it always includes 0."""
    return min(float(x.min()), 0.0), max(float(x.max()), 0.0)


def _ref_asymmetric(x: np.ndarray, bits: int) -> tuple[np.ndarray, float, int]:
    """Reference: min/max scale over a range that includes 0, unsigned codes ``0..2^bits-1``."""
    top = 2**bits - 1
    lo, hi = _asym_range(x)
    scale = (hi - lo) / top
    zp = int(np.clip(np.round(-lo / scale), 0, top))
    return np.clip(np.round(x / scale) + zp, 0, top), scale, zp


def _asymmetric_cases() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(7)
    a = rng.normal(0.3, 1.0, 16)  # mixed signs, skewed
    b = rng.normal(0.0, 0.7, (3, 8))
    b[1, 2] = 2.5 * np.abs(b).max()
    c = np.abs(rng.normal(0.0, 1.0, 12)) + 0.2  # all positive (like ReLU outputs)
    d = -np.abs(rng.normal(0.0, 1.0, 10)) - 0.1  # all negative
    e = rng.uniform(-0.4, 1.0, 9)
    cases = []
    for x, bits in [(a, 4), (b, 8), (c, 4), (d, 3), (e, 2)]:
        lo, hi = _asym_range(x)
        s = (hi - lo) / (2**bits - 1)
        cases.append((avoid_ties(x, lambda v, s=s: v / s, s), bits))
    return cases


def _asymmetric_scale_problem(scale: float, x: np.ndarray, bits: int) -> Optional[str]:
    top = 2**bits - 1
    lo, hi = _asym_range(x)
    ref = (hi - lo) / top
    xmin, xmax = float(x.min()), float(x.max())
    if is_close(scale, ref):
        return None
    if is_close(scale, (hi - lo) / 2**bits):
        return (
            f"the scale divides by 2**bits = {2**bits}, but the grid 0..{top} has "
            f"{top} steps between its ends: scale = (max - min) / (2**bits - 1) = "
            f"{hi - lo:.4g} / {top}"
        )
    if (is_close(scale, (xmax - xmin) / top) or is_close(scale, (xmax - xmin) / 2**bits)) and not (xmin <= 0 <= xmax):
        return (
            f"the scale uses the range x.min()..x.max() = [{xmin:.4g}, {xmax:.4g}], which "
            f"leaves out 0. The convention here includes 0 in the range, min = "
            f"min(x.min(), 0), max = max(x.max(), 0) (here [{lo:.4g}, {hi:.4g}]), so that "
            f"0.0 (padding, ReLU zeros) is represented exactly"
        )
    if is_close(scale, 1.0 / ref):
        return (
            f"the scale is inverted: you returned (2**bits - 1) / (max - min) = {scale:.4g}; "
            f"the scale is the step between codes, (max - min) / (2**bits - 1) = {ref:.4g}"
        )
    absmax = max(abs(xmin), abs(xmax))
    if any(is_close(scale, absmax / k) for k in (2 ** (bits - 1) - 1, 2 ** (bits - 1), top / 2)):
        return (
            "that is a symmetric absmax scale; the asymmetric scheme spans min..max: "
            f"scale = (max - min) / (2**bits - 1) = {ref:.4g}"
        )
    return (
        f"the scale is {scale:.6g}, expected (max - min) / (2**bits - 1) = "
        f"({hi:.4g} - {lo:.4g}) / {top} = {ref:.6g} (min = min(x.min(), 0), "
        f"max = max(x.max(), 0))"
    )


def _check_asymmetric_case(quantize: Callable, dequantize: Callable, x: np.ndarray, bits: int) -> None:
    top = 2**bits - 1
    where = f" (on x = {show_values(x)} of shape {x.shape}, bits = {bits})"
    ref_codes, ref_scale, ref_zp = _ref_asymmetric(x, bits)
    lo, _ = _asym_range(x)

    out = call_reader(quantize, f"quantize(x, {bits})", x.copy(), bits, hint=where)
    codes, scale, zp = returned_items(out, 3, "quantize", "(codes, scale, zero_point)")
    code_dtype, scale_dtype = dtype_of(codes), dtype_of(scale)
    codes = shaped_array(codes, "the codes returned by quantize", x.shape, ": return one code per element of x" + where)
    one = "this exercise uses one scale and one zero point for the whole tensor" + where
    scale = scalar_value(scale, "the scale returned by quantize", one)
    zp = scalar_value(zp, "the zero_point returned by quantize", one)
    rounded = low_precision(scale_dtype, scale, ref_scale, "the scale")
    if rounded:
        raise Fail(rounded + where)
    wrapped = wrapped_codes(code_dtype, codes, ref_codes, bits)
    if wrapped and zp == ref_zp and is_close(scale, ref_scale):
        raise Fail(wrapped + where)
    problem = _asymmetric_scale_problem(scale, x, bits)
    if problem:
        raise Fail(problem + where)
    if zp != round(zp):
        raise Fail(
            f"the zero_point must be an integer, round(-min / scale) = {ref_zp}, got "
            f"{zp:.4g}: rounding it makes 0.0 land exactly on a code{where}"
        )
    i = first_fraction(codes)
    if i is not None:
        raise Fail(
            f"the codes are not integers (e.g. {codes.ravel()[i]:.4g}): round x / scale "
            f"with np.round, then add the zero point and clip{where}"
        )
    zp = int(round(zp))  # noqa: RUF046 -- zp may be a numpy or torch scalar, whose round() is not an int
    if zp != ref_zp:
        expl = (
            f"zero_point = round(-min / scale) = {ref_zp} (min = min(x.min(), 0) = {lo:.4g}, "
            f"scale = {ref_scale:.4g}), the code that 0.0 maps to"
        )
        if zp == -ref_zp:
            raise Fail(f"the zero_point has the wrong sign: {expl}; you returned {zp} = round(min / scale){where}")
        if zp == 0:
            raise Fail(
                f"the zero_point is 0, expected {expl}. If you computed round(min / scale), "
                f"it has the wrong sign and the clip to 0..{top} turned it into 0{where}"
            )
        raise Fail(f"the zero_point is {zp}, expected {expl}{where}")

    if not np.array_equal(codes, ref_codes):
        r = x / ref_scale
        on_int = np.abs(r - np.round(r)) < 1e-6
        k = first_difference(codes, ref_codes)
        ex = (
            f"(e.g. x = {x.ravel()[k]:.4g}: x / scale = {r.ravel()[k]:.3f}, zero_point = "
            f"{ref_zp}, must give code {int(ref_codes.ravel()[k])}, you returned "
            f"{int(codes.ravel()[k])})"
        )

        def clip(v: np.ndarray) -> np.ndarray:
            return np.clip(v, 0, top)

        no_zp = (
            "you forgot to add the zero point: codes = round(x / scale) + zero_point, so that "
            f"0.0 maps to the code zero_point and min to 0 {ex}"
        )
        minus_zp = (
            "you subtracted the zero point in quantize: codes = round(x / scale) + "
            f"zero_point (dequantize is the one that subtracts it) {ex}"
        )
        variants = [
            (
                clip(np.floor(r) + ref_zp),
                on_int,
                "you floored instead of rounding: np.floor "
                "always goes down, so most values land a whole step too low; round with np.round " + ex,
            ),
            (
                clip(np.trunc(r) + ref_zp),
                on_int,
                "you truncated toward zero instead of rounding "
                "(int(), .astype(int) and np.trunc drop the fraction): round with np.round " + ex,
            ),
            (np.round(r), None, no_zp),
            (clip(np.round(r)), None, no_zp),
            (np.round(r) - ref_zp, None, minus_zp),
            (clip(np.round(r) - ref_zp), None, minus_zp),
            (
                clip(np.round((x - lo) / ref_scale)),
                None,
                "you rounded (x - min) / scale in one go; the zero point is rounded on its own and "
                "added after rounding, codes = round(x / scale) + zero_point, so that the codes "
                f"agree with the zero_point you return and 0.0 lands exactly on it {ex}",
            ),
            (
                clip(np.round(x * ref_scale) + ref_zp),
                None,
                "quantize multiplied by the scale: codes = round(x / scale) + zero_point (dequantize multiplies) " + ex,
            ),
        ]
        for variant, ignore, message in variants:
            if same_values(codes, variant, ignore):
                raise Fail(message + where)
        cmin, cmax = int(codes.min()), int(codes.max())
        if cmin < 0 or cmax > top:
            worst = cmin if cmin < 0 else cmax
            raise Fail(
                f"codes reach {worst}, outside the unsigned {bits}-bit grid 0..{top} "
                f"(0..2**bits - 1): clip them, codes = np.clip(np.round(x / scale) + "
                f"zero_point, 0, 2**bits - 1){where}"
            )
        wrong = int(np.sum(codes != ref_codes))
        raise Fail(
            f"codes differ from clip(round(x / scale) + zero_point, 0, 2**bits - 1) at "
            f"{wrong} of {codes.size} positions {ex}{where}"
        )

    int_codes = ref_codes.astype(np.int64)
    xh = call_reader(
        dequantize, f"dequantize(codes, {ref_scale:.4g}, {ref_zp})", int_codes.copy(), ref_scale, ref_zp, hint=where
    )
    xh_dtype = dtype_of(xh)
    xh = shaped_array(xh, "the values returned by dequantize", x.shape, ": one value per code" + where)
    expected = (ref_codes - ref_zp) * ref_scale
    check_not_truncated(xh_dtype, xh, expected, where)
    if not np.allclose(xh, expected, rtol=1e-6, atol=1e-12):
        k = int(np.argmax(np.abs(xh - expected)))
        ex = (
            f"(code {int(ref_codes.ravel()[k])} with zero_point {ref_zp} and scale "
            f"{ref_scale:.4g} should give {expected.ravel()[k]:.4g}, you returned "
            f"{xh.ravel()[k]:.4g})"
        )
        variants = [
            (
                ref_codes * ref_scale,
                "dequantize forgot to subtract the zero point: x_hat = (codes - zero_point) * scale",
            ),
            (
                (ref_codes + ref_zp) * ref_scale,
                "dequantize added the zero point, the wrong sign: x_hat = (codes - zero_point) * scale",
            ),
            (
                ref_codes * ref_scale - ref_zp,
                "dequantize subtracted the zero point after "
                "scaling; subtract it from the codes first: x_hat = (codes - zero_point) * scale",
            ),
            ((ref_codes - ref_zp) / ref_scale, "dequantize divided by the scale: x_hat = (codes - zero_point) * scale"),
        ]
        for variant, message in variants:
            if np.allclose(xh, variant, rtol=1e-6, atol=1e-12):
                raise Fail(f"{message} {ex}{where}")
        raise Fail(f"dequantize should return (codes - zero_point) * scale {ex}{where}")


def check_asymmetric(quantize: Callable, dequantize: Callable) -> CheckResult:
    """Check an asymmetric (min/max, zero-point) quantizer with unsigned codes.

    The reference, for ``bits`` bits (codes ``0..2**bits - 1``)::

        min = min(x.min(), 0);  max = max(x.max(), 0)     # the range always includes 0
        scale = (max - min) / (2**bits - 1)
        zero_point = clip(round(-min / scale), 0, 2**bits - 1)   # the code of 0.0
        codes = clip(round(x / scale) + zero_point, 0, 2**bits - 1)
        x_hat = (codes - zero_point) * scale

    Including 0 in the range is the standard convention (PyTorch's observers, ONNX): 0.0
    is then exactly representable (as the code ``zero_point``), which padding and ReLU
    zeros need. The cases use 2, 3, 4 and 8 bits, mixed-sign, all-positive and
    all-negative tensors (the last two test the convention) and avoid rounding ties.

    Mistakes recognised (each with its own message): a zero point with the wrong sign
    (also when the clip turned it into 0) or not an integer; codes without the zero point
    or with it subtracted; ``round((x - min) / scale)`` in one go; floor or truncation
    instead of rounding; a scale over ``2**bits`` instead of ``2**bits - 1``; a range that
    leaves out 0; an inverted or symmetric scale; codes outside ``0..2**bits - 1``; a
    dequantize that forgets to subtract the zero point, adds it, subtracts it after
    scaling, or divides; wrong shapes or return types; exceptions.

    Args:
        quantize: the reader's ``quantize(x, bits) -> (codes, scale, zero_point)``; ``x``
            is a float64 numpy array of any shape; ``scale`` and ``zero_point`` are one
            number each.
        dequantize: the reader's ``dequantize(codes, scale, zero_point) -> x_hat``; called
            with the reference codes (an int64 array), scale (a float) and zero point (an
            int).

    Returns:
        A :class:`CheckResult`: passed, or the first mistake found, in words.

    Raises:
        TypeError: ``quantize`` or ``dequantize`` is not callable.
    """
    require_callable(quantize, "quantize")
    require_callable(dequantize, "dequantize")
    cases = _asymmetric_cases()

    def body() -> str:
        for x, bits in cases:
            _check_asymmetric_case(quantize, dequantize, x, bits)
        widths = ", ".join(str(b) for b in sorted({b for _, b in cases}))
        return (
            f"quantize and dequantize agree with the reference on {len(cases)} tensors "
            f"({widths} bits): range [min(x.min(), 0), max(x.max(), 0)], scale = "
            f"(max - min) / (2**bits - 1), zero_point = round(-min / scale), codes = "
            f"clip(round(x / scale) + zero_point, 0, 2**bits - 1), x_hat = "
            f"(codes - zero_point) * scale."
        )

    return run_check(body)
