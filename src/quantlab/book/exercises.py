"""Checkers for the "Build it yourself" exercises: write a quantizer in numpy, get told what is wrong.

The chapter's "Build it yourself" section asks readers to write the core of quantization
themselves, a few lines of numpy each: symmetric and asymmetric quantizers, int4 packing
and one GPTQ column step. Each ``check_*`` function here runs the reader's functions on
fixed test cases, compares them with a reference and answers in words: a
:class:`CheckResult` that says "passed", or names the mistake it recognised (floor instead
of round, the wrong ``qmax``, a zero point with the wrong sign, swapped nibbles, ...) and
shows where it shows up. Exceptions raised by the reader's code are caught and reported,
never propagated. In Jupyter a result displays as a green "✓ passed" or red "✗ ..." line.

Checkers:

* :func:`check_symmetric` -- one absmax scale per tensor, signed codes ``-qmax..qmax``.
* :func:`check_asymmetric` -- min/max scale and zero point, unsigned codes ``0..2^bits-1``.
* :func:`check_pack_int4` -- two signed 4-bit codes per byte, as :func:`quantlab.pack` does.
* :func:`check_gptq_step` -- one column of GPTQ, as :mod:`quantlab.gptq` does it.

Conventions shared by the checkers:

* **Test cases avoid exact rounding ties** (``x / scale`` never ends in ``.5``), so
  numpy's round-half-to-even (``np.round``, what the references use) and
  round-half-away-from-zero both pass.
* **Codes** may be returned as an integer array or as a float array holding integers
  (``np.round`` returns floats); codes with a fraction are reported as not rounded.
  Storing them in a small integer type (``np.int8``, ``np.uint8``) is what saves memory
  in practice, but it is not required here.
* ``dequantize`` is called with the *reference* codes (an ``int64`` array) and parameters,
  so a mistake in ``quantize`` is not reported twice.

Example::

    from quantlab.exercises import check_symmetric

    def quantize(x, bits):
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(x).max() / qmax
        return np.clip(np.round(x / scale), -qmax, qmax), scale

    def dequantize(codes, scale):
        return codes * scale

    check_symmetric(quantize, dequantize)   # ✓ passed: ...
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["CheckResult", "check_symmetric", "check_asymmetric", "check_pack_int4", "check_gptq_step"]

_GREEN = "#1a7f37"
_RED = "#cf222e"


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class CheckResult:
    """The answer of a checker: passed or not, and why, in words.

    Displays as one line, ``✓ passed: ...`` or ``✗ <what is wrong>``: as plain text
    (``repr``/``str``), as Markdown and as self-contained HTML (inline styles only) in
    Jupyter. ``bool(result)`` is ``result.passed``, so ``assert check_symmetric(q, dq)``
    works in a test.

    Attributes:
        passed: True if every test case agreed with the reference.
        message: what was checked (when passed) or the mistake found and where (when not).
    """

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    @property
    def headline(self) -> str:
        """``"✓ passed"`` or ``"✗"``: the mark that starts the displayed line."""
        return "✓ passed" if self.passed else "✗"

    def __str__(self) -> str:
        return f"✓ passed: {self.message}" if self.passed else f"✗ {self.message}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        special = "\\`*_[]<>#|~"  # what Markdown would read as markup
        text = "".join("\\" + c if c in special else c for c in self.message)
        text = text.replace("\n", "  \n")
        color = _GREEN if self.passed else _RED
        mark = "✓ passed:" if self.passed else "✗"
        return f'<span style="color:{color};font-weight:bold">{mark}</span> {text}'

    def _repr_html_(self) -> str:
        color = _GREEN if self.passed else _RED
        tint = "rgba(26,127,55,0.08)" if self.passed else "rgba(207,34,46,0.08)"
        mark = "✓ passed:" if self.passed else "✗"
        return (
            f'<div style="border-left:4px solid {color};background:{tint};padding:6px 10px;'
            f"margin:4px 0;font-family:system-ui,-apple-system,Segoe UI,sans-serif;"
            f'line-height:1.45;white-space:pre-wrap">'
            f'<span style="color:{color};font-weight:bold">{mark}</span> '
            f"{html.escape(self.message)}</div>"
        )


# --------------------------------------------------------------------------- helpers


class _Fail(Exception):
    """A diagnosis: the reader's code is wrong in the way the message says."""


def _require_callable(func: Any, name: str) -> None:
    if not callable(func):
        raise TypeError(f"{name} must be callable (a function), got {type(func).__name__}: {func!r}"[:200])


def _run(body: Callable[[], str]) -> CheckResult:
    """Run a checker's body; turn a diagnosis (or anything unexpected) into a result."""
    try:
        return CheckResult(True, body())
    except _Fail as fail:
        return CheckResult(False, str(fail))
    except Exception as err:  # a return value the checks below could not even look at
        return CheckResult(False, f"could not check the returned values: {type(err).__name__}: {_text(err)}")


def _call(func: Callable, text: str, *args: Any, hint: str = "") -> Any:
    """``func(*args)``; an exception becomes a diagnosis naming the call, type and text
    (``sys.exit()`` inside the reader's code too: it would end the checker, not the cell)."""
    try:
        return func(*args)
    except (Exception, SystemExit) as err:
        more = (
            " (sys.exit() and exit() stop the program: return a value instead)" if isinstance(err, SystemExit) else ""
        )
        raise _Fail(f"{text} raised {type(err).__name__}: {_text(err)}{more}{hint}") from None


def _text(err: BaseException, limit: int = 300) -> str:
    """``str(err)``, cut to ``limit`` characters, or a placeholder if even that fails."""
    try:
        text = str(err)
    except Exception:  # an exception whose __str__ raises
        return "(its message could not be shown)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dtype(value: Any) -> Optional[np.dtype]:
    """The numpy dtype ``value`` would have as an array, or None."""
    try:
        return np.asarray(value).dtype
    except Exception:
        return None


def _wrapped(dtype: Optional[np.dtype], got: np.ndarray, ref: np.ndarray, bits: int) -> Optional[str]:
    """A diagnosis if ``got`` is ``ref`` stored in an integer type too narrow for it (the
    codes wrapped around), else None."""
    if dtype is None or dtype.kind not in "iu" or dtype.itemsize >= 8 or np.array_equal(got, ref):
        return None
    with np.errstate(over="ignore"):
        as_stored = ref.astype(np.int64).astype(dtype).astype(np.float64)
    if got.shape != ref.shape or not np.array_equal(got, as_stored):
        return None
    k = _first_diff(got, ref)
    lo, hi = int(ref.min()), int(ref.max())
    if dtype.kind == "u" and lo < 0:
        need = f"signed codes ({lo}..{hi}) need a signed type such as np.int8"
    else:
        need = f"codes {lo}..{hi} need a type that holds them, such as np.uint8 (0..255) or np.int16"
    return (
        f"the codes are right, but stored as {dtype.name}, which cannot hold {int(ref.ravel()[k])}: "
        f"it wrapped around to {int(got.ravel()[k])}; {need} (or keep the float array "
        "np.round returns)"
    )


def _integer_values(dtype: Optional[np.dtype], got: np.ndarray, expected: np.ndarray, where: str) -> None:
    """A diagnosis if dequantize returned the right values cut to integers."""
    if (
        dtype is not None
        and dtype.kind in "iub"
        and not np.allclose(got, expected, rtol=1e-6, atol=1e-12)
        and np.array_equal(got, np.trunc(expected))
    ):
        raise _Fail(
            f"dequantize returned integers (dtype {dtype.name}): the values codes * scale "
            f"have fractions, e.g. {_show(expected, 3)} came back as {_show(got, 3)}; keep "
            f"them float (no .astype(int)){where}"
        )


def _precision(dtype: Optional[np.dtype], value: float, ref: float, what: str) -> Optional[str]:
    """A diagnosis if ``value`` is ``ref`` rounded to a low-precision float (float16, or
    float32 beyond this checker's tolerance), else None."""
    if dtype is None or dtype.kind != "f" or dtype.itemsize >= 8 or _close(value, ref):
        return None
    eps = float(np.finfo(dtype).eps)
    if not math.isclose(value, ref, rel_tol=2 * eps):
        return None
    return (
        f"{what} is {value:.7g}, {ref:.7g} rounded to {dtype.name} (about "
        f"{round(-math.log10(eps))} digits): compute and return it in float64, "
        "numpy's default"
    )


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__} ({value!r})"[:120]


def _show(a: Any, k: int = 8) -> str:
    """The first ``k`` values of an array, short."""
    flat = np.asarray(a).ravel()
    body = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat[:k].tolist())
    return f"[{body}{', ...' if flat.size > k else ''}]"


def _items(out: Any, n: int, func: str, names: str) -> tuple:
    """The ``n`` items of a returned tuple/list, or a diagnosis."""
    if not isinstance(out, (tuple, list)) or len(out) != n:
        raise _Fail(f"{func} must return {n} values {names}, got {_describe(out)}")
    return tuple(out)


def _numeric(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array, or a diagnosis if it is not numbers."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # e.g. a ragged list
        raise _Fail(f"{what} is not an array: {type(err).__name__}: {err}") from None
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise _Fail(f"{what} must be a numeric array, got {_describe(value)}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise _Fail(f"found NaN or infinity in {what}: {_show(arr)}")
    return arr


def _shaped(value: Any, what: str, shape: tuple, hint: str = "") -> np.ndarray:
    arr = _numeric(value, what)
    if arr.shape != shape:
        raise _Fail(f"{what} has shape {arr.shape}, expected {shape}{hint}")
    return arr


def _scalar(value: Any, what: str, hint: str) -> float:
    """A single number (a Python/numpy scalar or a one-element array), or a diagnosis."""
    arr = _numeric(value, what)
    if arr.size != 1:
        raise _Fail(f"{what} must be one number, got an array of shape {arr.shape}: {hint}")
    return float(arr.reshape(()))


def _close(a: float, b: float, rtol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-300)


def _integral(arr: np.ndarray) -> Optional[int]:
    """Index (flat) of the first value with a fraction, or None if all are integers."""
    bad = np.flatnonzero(arr != np.round(arr))
    return int(bad[0]) if bad.size else None


def _same(got: np.ndarray, variant: np.ndarray, ignore: Optional[np.ndarray] = None) -> bool:
    """``got`` equals ``variant`` (except where ``ignore``: values on a rounding boundary)."""
    if got.shape != variant.shape:
        return False
    keep = np.ones(got.shape, bool) if ignore is None else ~ignore
    return bool(np.array_equal(got[keep], variant[keep]))


def _first_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.flatnonzero(a.ravel() != b.ravel())[0])


def _avoid_ties(x: np.ndarray, ratio: Callable[[np.ndarray], np.ndarray], step: float) -> np.ndarray:
    """Nudge the values of ``x`` whose ``ratio`` (``x / scale``) lies near a rounding tie.

    Only values strictly inside the range are moved (the extremes fix the scale), by
    ``step`` times 0.03, which keeps them inside.
    """
    x = x.copy()
    for _ in range(20):
        r = ratio(x)
        near = np.abs(np.abs(r) % 1.0 - 0.5) < 0.02
        near &= (x != x.max()) & (x != x.min())
        if not near.any():
            break
        x[near] += 0.03 * step
    return x


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
        out.append((_avoid_ties(x, lambda v, s=s: v / s, s), bits))
    return out


def _symmetric_scale_problem(scale: float, x: np.ndarray, bits: int) -> Optional[str]:
    qmax, half = 2 ** (bits - 1) - 1, 2 ** (bits - 1)
    absmax, xmax, xmin = float(np.abs(x).max()), float(x.max()), float(x.min())
    ref = absmax / qmax
    if _close(scale, ref):
        return None
    if _close(scale, xmax / qmax) and not _close(xmax, absmax):
        return (
            f"the scale comes from x.max() instead of max|x| (x.max() = {xmax:.4g}, "
            f"max|x| = {absmax:.4g}): values below -x.max(), here down to x.min() = "
            f"{xmin:.4g}, do not fit and get clipped. Use the absolute maximum: "
            f"scale = np.abs(x).max() / qmax"
        )
    if _close(scale, 1.0 / ref):
        return (
            f"the scale is inverted: you returned qmax / max|x| = {scale:.4g}; the scale is "
            f"the step between codes, scale = max|x| / qmax = {ref:.4g}, so that "
            f"x ≈ codes * scale"
        )
    span = (xmax - xmin) / (2**bits - 1)
    if _close(scale, span) and not _close(span, ref):
        return (
            "that is the asymmetric scale (x.max() - x.min()) / (2**bits - 1); the symmetric "
            f"scheme uses scale = max|x| / qmax = {ref:.4g}"
        )
    if scale > 0:
        k = absmax / scale
        kk = round(k)
        if kk > 0 and _close(k, kk):
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
    where = f" (on x = {_show(x)} of shape {x.shape}, bits = {bits})"
    ref_codes, ref_scale = _ref_symmetric(x, bits)

    out = _call(quantize, f"quantize(x, {bits})", x.copy(), bits, hint=where)
    codes, scale = _items(out, 2, "quantize", "(codes, scale)")
    code_dtype, scale_dtype = _dtype(codes), _dtype(scale)
    codes = _shaped(codes, "the codes returned by quantize", x.shape, ": return one code per element of x" + where)
    scale = _scalar(
        scale, "the scale returned by quantize", "this exercise uses ONE absmax scale for the whole tensor" + where
    )
    i = _integral(codes)
    if i is not None:
        raise _Fail(
            f"the codes are not integers (e.g. {codes.ravel()[i]:.4g}): round x / scale "
            f"to the nearest integer with np.round, then clip{where}"
        )
    wrapped = _wrapped(code_dtype, codes, ref_codes, bits)
    if wrapped:
        raise _Fail(wrapped + where)
    rounded = _precision(scale_dtype, scale, ref_scale, "the scale")
    if rounded:
        raise _Fail(rounded + where)
    hi, lo = int(codes.max()), int(codes.min())
    if hi == half:
        raise _Fail(
            f"codes reach {half} at {bits} bits: qmax for signed {bits}-bit is {qmax} "
            f"(2**(bits-1) - 1), so scale = max|x| / {qmax} and the codes are clipped "
            f"to -{qmax}..{qmax}{where}"
        )
    if hi > qmax or lo < -half:
        worst = hi if hi > qmax else lo
        also = _symmetric_scale_problem(scale, x, bits)
        raise _Fail(
            f"codes reach {worst}, outside the signed {bits}-bit grid -{qmax}..{qmax}: "
            f"clip them, codes = np.clip(np.round(x / scale), -qmax, qmax)"
            + (f". Also, {also}" if also else "")
            + where
        )
    problem = _symmetric_scale_problem(scale, x, bits)
    if problem:
        raise _Fail(problem + where)

    if not np.array_equal(codes, ref_codes):
        r = x / ref_scale
        on_int = np.abs(r - np.round(r)) < 1e-6  # floor/trunc of these may go either way
        k = _first_diff(codes, ref_codes)
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
            if _same(codes, np.clip(variant, -qmax, qmax), ignore):
                raise _Fail(message + where)
        wrong = int(np.sum(codes != ref_codes))
        raise _Fail(
            f"codes differ from clip(round(x / scale), -qmax, qmax) at {wrong} of {codes.size} positions {ex}{where}"
        )

    # dequantize, on the reference codes
    int_codes = ref_codes.astype(np.int64)
    xh = _call(dequantize, f"dequantize(codes, {ref_scale:.4g})", int_codes.copy(), ref_scale, hint=where)
    xh_dtype = _dtype(xh)
    xh = _shaped(xh, "the values returned by dequantize", x.shape, ": one value per code" + where)
    expected = ref_codes * ref_scale
    _integer_values(xh_dtype, xh, expected, where)
    if not np.allclose(xh, expected, rtol=1e-6, atol=1e-12):
        k = int(np.argmax(np.abs(xh - expected)))
        ex = (
            f"(code {int(ref_codes.ravel()[k])} with scale {ref_scale:.4g} should give "
            f"{expected.ravel()[k]:.4g}, you returned {xh.ravel()[k]:.4g})"
        )
        if np.allclose(xh, ref_codes / ref_scale, rtol=1e-6):
            raise _Fail(f"dequantize divided by the scale: x_hat = codes * scale {ex}{where}")
        if np.allclose(xh, ref_codes, rtol=1e-6):
            raise _Fail(f"dequantize returned the codes unscaled: x_hat = codes * scale {ex}{where}")
        raise _Fail(f"dequantize should return codes * scale {ex}{where}")


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
    _require_callable(quantize, "quantize")
    _require_callable(dequantize, "dequantize")
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

    return _run(body)


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
        cases.append((_avoid_ties(x, lambda v, s=s: v / s, s), bits))
    return cases


def _asymmetric_scale_problem(scale: float, x: np.ndarray, bits: int) -> Optional[str]:
    top = 2**bits - 1
    lo, hi = _asym_range(x)
    ref = (hi - lo) / top
    xmin, xmax = float(x.min()), float(x.max())
    if _close(scale, ref):
        return None
    if _close(scale, (hi - lo) / 2**bits):
        return (
            f"the scale divides by 2**bits = {2**bits}, but the grid 0..{top} has "
            f"{top} steps between its ends: scale = (max - min) / (2**bits - 1) = "
            f"{hi - lo:.4g} / {top}"
        )
    if (_close(scale, (xmax - xmin) / top) or _close(scale, (xmax - xmin) / 2**bits)) and not (xmin <= 0 <= xmax):
        return (
            f"the scale uses the range x.min()..x.max() = [{xmin:.4g}, {xmax:.4g}], which "
            f"leaves out 0. The convention here includes 0 in the range, min = "
            f"min(x.min(), 0), max = max(x.max(), 0) (here [{lo:.4g}, {hi:.4g}]), so that "
            f"0.0 (padding, ReLU zeros) is represented exactly"
        )
    if _close(scale, 1.0 / ref):
        return (
            f"the scale is inverted: you returned (2**bits - 1) / (max - min) = {scale:.4g}; "
            f"the scale is the step between codes, (max - min) / (2**bits - 1) = {ref:.4g}"
        )
    absmax = max(abs(xmin), abs(xmax))
    if any(_close(scale, absmax / k) for k in (2 ** (bits - 1) - 1, 2 ** (bits - 1), top / 2)):
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
    where = f" (on x = {_show(x)} of shape {x.shape}, bits = {bits})"
    ref_codes, ref_scale, ref_zp = _ref_asymmetric(x, bits)
    lo, _ = _asym_range(x)

    out = _call(quantize, f"quantize(x, {bits})", x.copy(), bits, hint=where)
    codes, scale, zp = _items(out, 3, "quantize", "(codes, scale, zero_point)")
    code_dtype, scale_dtype = _dtype(codes), _dtype(scale)
    codes = _shaped(codes, "the codes returned by quantize", x.shape, ": return one code per element of x" + where)
    one = "this exercise uses one scale and one zero point for the whole tensor" + where
    scale = _scalar(scale, "the scale returned by quantize", one)
    zp = _scalar(zp, "the zero_point returned by quantize", one)
    rounded = _precision(scale_dtype, scale, ref_scale, "the scale")
    if rounded:
        raise _Fail(rounded + where)
    wrapped = _wrapped(code_dtype, codes, ref_codes, bits)
    if wrapped and zp == ref_zp and _close(scale, ref_scale):
        raise _Fail(wrapped + where)
    problem = _asymmetric_scale_problem(scale, x, bits)
    if problem:
        raise _Fail(problem + where)
    if zp != round(zp):
        raise _Fail(
            f"the zero_point must be an integer, round(-min / scale) = {ref_zp}, got "
            f"{zp:.4g}: rounding it makes 0.0 land exactly on a code{where}"
        )
    i = _integral(codes)
    if i is not None:
        raise _Fail(
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
            raise _Fail(f"the zero_point has the wrong sign: {expl}; you returned {zp} = round(min / scale){where}")
        if zp == 0:
            raise _Fail(
                f"the zero_point is 0, expected {expl}. If you computed round(min / scale), "
                f"it has the wrong sign and the clip to 0..{top} turned it into 0{where}"
            )
        raise _Fail(f"the zero_point is {zp}, expected {expl}{where}")

    if not np.array_equal(codes, ref_codes):
        r = x / ref_scale
        on_int = np.abs(r - np.round(r)) < 1e-6
        k = _first_diff(codes, ref_codes)
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
            if _same(codes, variant, ignore):
                raise _Fail(message + where)
        cmin, cmax = int(codes.min()), int(codes.max())
        if cmin < 0 or cmax > top:
            worst = cmin if cmin < 0 else cmax
            raise _Fail(
                f"codes reach {worst}, outside the unsigned {bits}-bit grid 0..{top} "
                f"(0..2**bits - 1): clip them, codes = np.clip(np.round(x / scale) + "
                f"zero_point, 0, 2**bits - 1){where}"
            )
        wrong = int(np.sum(codes != ref_codes))
        raise _Fail(
            f"codes differ from clip(round(x / scale) + zero_point, 0, 2**bits - 1) at "
            f"{wrong} of {codes.size} positions {ex}{where}"
        )

    int_codes = ref_codes.astype(np.int64)
    xh = _call(
        dequantize, f"dequantize(codes, {ref_scale:.4g}, {ref_zp})", int_codes.copy(), ref_scale, ref_zp, hint=where
    )
    xh_dtype = _dtype(xh)
    xh = _shaped(xh, "the values returned by dequantize", x.shape, ": one value per code" + where)
    expected = (ref_codes - ref_zp) * ref_scale
    _integer_values(xh_dtype, xh, expected, where)
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
                raise _Fail(f"{message} {ex}{where}")
        raise _Fail(f"dequantize should return (codes - zero_point) * scale {ex}{where}")


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
    _require_callable(quantize, "quantize")
    _require_callable(dequantize, "dequantize")
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

    return _run(body)


# --------------------------------------------------------------------------- int4 packing


def _ref_pack_int4(codes: np.ndarray) -> np.ndarray:
    """Reference: byte i = ``(c[2i] & 0xF) | (c[2i+1] & 0xF) << 4``, odd length padded with 0."""
    c = np.asarray(codes, dtype=np.int64).ravel() & 0xF
    if c.size % 2:
        c = np.append(c, 0)
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def _ref_unpack_int4(packed: np.ndarray, n: int) -> np.ndarray:
    """Reference: low nibble first, sign-extended (``v - 16`` where ``v >= 8``), first ``n``."""
    b = np.asarray(packed, dtype=np.int64)
    v = np.stack([b & 0xF, b >> 4], axis=1).ravel()[:n]
    return np.where(v >= 8, v - 16, v)


def _pack_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    return [
        rng.permutation(np.arange(-8, 8)).astype(np.int64),  # every code once
        np.array([7, -8], dtype=np.int64),
        rng.integers(-8, 8, 7).astype(np.int64),  # odd length
        np.array([-3], dtype=np.int64),
        rng.integers(-8, 8, 33).astype(np.int8),
    ]


def _check_pack_case(pack: Callable, unpack: Callable, codes: np.ndarray) -> None:
    n = codes.size
    nbytes = (n + 1) // 2
    where = f" (on codes = {_show(codes, 10)}, n = {n}, dtype {codes.dtype})"
    odd = (
        (
            f". n = {n} is odd: pad the codes with one 0 to an even length, so the last byte "
            f"holds the last code in its low nibble"
        )
        if n % 2
        else ""
    )
    ref = _ref_pack_int4(codes)

    out = _call(pack, "pack(codes)", codes.copy(), hint=odd + where)
    try:
        arr = np.asarray(out)
    except Exception as err:
        raise _Fail(f"pack returned {_describe(out)}, not an array: {err}{where}") from None
    if arr.dtype.kind not in "iu":
        raise _Fail(f"pack must return a uint8 array, got {_describe(out)}{where}")
    if arr.ndim != 1:
        raise _Fail(f"pack must return a flat 1-d array of ceil(n / 2) = {nbytes} bytes, got shape {arr.shape}{where}")
    if arr.size != nbytes:
        if n % 2 and arr.size == n // 2:
            raise _Fail(
                f"for odd n = {n} the last code needs a byte of its own: pack must return "
                f"ceil(n / 2) = {nbytes} bytes, got {arr.size}; pad with a 0 code{where}"
            )
        if arr.size == n:
            raise _Fail(
                f"pack returned one byte per code ({arr.size}); two 4-bit codes share a "
                f"byte: ceil(n / 2) = {nbytes} bytes{where}"
            )
        raise _Fail(f"pack must return ceil(n / 2) = {nbytes} bytes, got {arr.size}{where}")
    if arr.dtype != np.uint8:
        right = np.array_equal(arr.astype(np.int64) & 0xFF, ref.astype(np.int64))
        raise _Fail(
            f"pack must return dtype uint8 (one byte per two codes), got {arr.dtype}"
            + ("; the values are right otherwise: convert with .astype(np.uint8)" if right else "")
            + where
        )
    if not np.array_equal(arr, ref):
        c = codes.astype(np.int64)
        c2 = np.append(c, 0) if n % 2 else c
        lo, hi = c2[0::2], c2[1::2]
        k = _first_diff(arr, ref)
        ex = (
            f"(byte {k} holds codes {lo[k]} (low nibble) and {hi[k]} (high nibble): expected "
            f"0x{int(ref[k]):02X}, got 0x{int(arr[k]):02X})"
        )
        variants = [
            (
                ((hi & 0xF) | ((lo & 0xF) << 4)) & 0xFF,
                "the nibbles are swapped: element 2i belongs in the low nibble and element 2i+1 in "
                "the high nibble, byte = (c[2i] & 0xF) | (c[2i+1] & 0xF) << 4 ",
            ),
            (
                (lo | ((hi & 0xF) << 4)) & 0xFF,
                "mask each code to its 4-bit two's complement (code & 0xF) before combining: a "
                "negative code is ...1111xxxx in two's complement, and unmasked in the low nibble "
                "its sign bits overwrite the high nibble ",
            ),
            (
                ((lo + 8) | ((hi + 8) << 4)) & 0xFF,
                "you stored code + 8 (offset binary); quantlab.pack stores two's complement "
                "nibbles, code & 0xF (so -1 is 0xF and -8 is 0x8) ",
            ),
        ]
        for variant, message in variants:
            if np.array_equal(arr.astype(np.int64), variant):
                raise _Fail(message + ex + where)
        raise _Fail(f"the packed bytes differ: byte i = (c[2i] & 0xF) | (c[2i+1] & 0xF) << 4 {ex}{where}")

    # unpack, on the reference bytes
    out = _call(unpack, f"unpack(packed, {n})", ref.copy(), n, hint=odd + where)
    got = _numeric(out, "the codes returned by unpack").ravel()
    if got.size != n:
        if n % 2 and got.size == n + 1:
            raise _Fail(
                f"unpack must return exactly n = {n} codes, got {n + 1}: the last byte's "
                f"high nibble is padding, drop it ([:n]){where}"
            )
        raise _Fail(f"unpack must return n = {n} codes, got {got.size}{where}")
    i = _integral(got)
    if i is not None:
        raise _Fail(f"unpack returned codes with a fraction (e.g. {got[i]:.4g}): use integer operations (&, >>){where}")
    expected = codes.astype(np.float64)
    if not np.array_equal(got, expected):
        k = _first_diff(got, expected)
        ex = (
            f"(code {k} is in the {'low' if k % 2 == 0 else 'high'} nibble of byte {k // 2} = "
            f"0x{int(ref[k // 2]):02X}: expected {int(expected[k])}, got {int(got[k])})"
        )
        v = np.stack([ref.astype(np.int64) & 0xF, ref.astype(np.int64) >> 4], axis=1)
        swapped = v[:, ::-1].ravel()[:n]
        variants = [
            (
                expected.astype(np.int64) & 0xF,
                "codes come back as 8..15 instead of -8..-1: the "
                "nibble is two's complement, sign-extend it: v - 16 where v >= 8 "
                "(np.where(v >= 8, v - 16, v)) ",
            ),
            (
                expected.astype(np.int64) & 0xFF,
                "negative codes come back as 248..255: uint8 "
                "arithmetic wrapped around when subtracting 16; convert to a signed type first, "
                "v = v.astype(np.int16), then v - 16 where v >= 8 ",
            ),
            (
                np.where(swapped >= 8, swapped - 16, swapped),
                "the nibbles are read swapped: element "
                "2i is in the low nibble (byte & 0xF) and element 2i+1 in the high nibble "
                "(byte >> 4) ",
            ),
            (
                (expected.astype(np.int64) & 0xF) - 8,
                "you subtracted 8 (offset binary); the nibbles are two's complement: v - 16 where v >= 8 ",
            ),
        ]
        for variant, message in variants:
            if np.array_equal(got, variant.astype(np.float64)):
                raise _Fail(message + ex + where)
        raise _Fail(f"unpack returned the wrong codes {ex}{where}")


def check_pack_int4(pack: Callable, unpack: Callable) -> CheckResult:
    """Check int4 packing: two signed 4-bit codes per byte, as :func:`quantlab.pack` lays them out.

    The layout (``quantlab.pack(codes, 4)`` / ``quantlab.unpack(packed, 4, n, signed=True)``)::

        byte[i] = (c[2i] & 0xF) | (c[2i+1] & 0xF) << 4     # element 2i in the LOW nibble
        len(packed) = ceil(n / 2)                          # odd n: last high nibble is 0
        unpack: v = (byte & 0xF, byte >> 4) interleaved, first n;  code = v - 16 if v >= 8

    Codes are ``-8..7``, stored as two's complement nibbles (``-1 -> 0xF``,
    ``-8 -> 0x8``). The cases have even and odd lengths (1, 2, 7, 16, 33 codes), every
    code value, and int64 and int8 inputs. ``unpack`` is checked on the reference bytes.

    Mistakes recognised (each with its own message): swapped nibbles (in pack or unpack);
    a sign lost in unpack (codes 8..15 instead of -8..-1) or wrapped around in uint8
    (248..255); unmasked negative codes; offset-binary nibbles; an odd length not handled
    (an exception, a missing last byte, or the padding code returned by unpack); a dtype
    other than uint8; a length other than ``ceil(n / 2)``; exceptions.

    Args:
        pack: the reader's ``pack(codes) -> packed``: ``codes`` a 1-d integer numpy array
            (int64 or int8) of values in -8..7; ``packed`` a 1-d uint8 array of
            ``ceil(n / 2)`` bytes.
        unpack: the reader's ``unpack(packed, n) -> codes``: the first ``n`` codes as a 1-d
            integer array (integral floats are accepted).

    Returns:
        A :class:`CheckResult`: passed, or the first mistake found, in words.

    Raises:
        TypeError: ``pack`` or ``unpack`` is not callable.
    """
    _require_callable(pack, "pack")
    _require_callable(unpack, "unpack")
    cases = _pack_cases()

    def body() -> str:
        for codes in cases:
            _check_pack_case(pack, unpack, codes)
        sizes = ", ".join(str(c.size) for c in cases)
        return (
            f"pack and unpack agree with quantlab's int4 layout on {len(cases)} arrays "
            f"({sizes} codes): element 2i in the low nibble, 2i+1 in the high nibble, "
            f"two's complement, odd lengths padded."
        )

    return _run(body)


# --------------------------------------------------------------------------- GPTQ step


class _ColumnQuantizer:
    """``quantize_column(w) -> q``: round one column onto a fixed int4 grid, one scale per row.

    ``q = clip(round(w / scale), -8, 7) * scale`` with ``scale = max_k |W[r, k]| / 7`` of the
    original weight (the per-row grid :func:`quantlab.gptq.gptq_reference` uses with
    ``group_size=None``). The grid is fixed before GPTQ's corrections move the later columns,
    so an updated weight can round beyond ``-7``; int4's spare code ``-8`` then catches it, as
    in :func:`quantlab.quantize` (chapters/02b_build_it.ipynb, "One GPTQ step").
    Returns the dequantized values, same shape as ``w``.
    """

    def __init__(self, scale: np.ndarray):
        self.scale = np.asarray(scale, dtype=np.float64)

    def __call__(self, w: Any) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        rows = self.scale.size
        if w.shape not in ((rows,), (rows, 1)):
            raise ValueError(f"quantize_column expects one column W[:, j] of shape ({rows},), got shape {w.shape}")
        s = self.scale.reshape(w.shape)
        return np.clip(np.round(w / s), -8, 7) * s

    def __repr__(self) -> str:
        return "quantize_column (int4, one scale per row)"


def _gptq_cases() -> list[tuple[np.ndarray, np.ndarray, int, _ColumnQuantizer, str]]:
    rng = np.random.default_rng(11)
    cases = []
    for rows, cols, j, kind in [
        (4, 3, 0, "cholesky"),
        (4, 5, 2, "cholesky"),
        (3, 5, 2, "inverse"),
        (4, 5, 4, "cholesky"),
    ]:
        W = rng.normal(0.0, 1.0, (rows, cols))
        X = rng.normal(0.0, 0.6, (8 * cols, cols)) @ (np.eye(cols) + 0.5 * rng.normal(size=(cols, cols)))
        H = 2.0 * X.T @ X / X.shape[0]
        H += 0.01 * np.mean(np.diag(H)) * np.eye(cols)
        H_inv = np.linalg.inv(H)
        M = np.linalg.cholesky(H_inv).T if kind == "cholesky" else H_inv
        qc = _ColumnQuantizer(np.abs(W).max(axis=1) / 7)
        cases.append((W, M, j, qc, kind))
    return cases


def _ref_gptq_step(W: np.ndarray, U: np.ndarray, j: int, quantize_column: Callable) -> np.ndarray:
    """Reference: column ``j`` becomes ``q_j``; ``W[:, j+1:] -= err ⊗ U[j, j+1:]``."""
    W = np.array(W, dtype=np.float64)
    w = W[:, j].copy()
    q = quantize_column(w)
    err = (w - q) / U[j, j]
    W[:, j] = q
    W[:, j + 1 :] -= err[:, None] * U[j, j + 1 :][None, :]
    return W


def _check_gptq_case(
    gptq_step: Callable, W: np.ndarray, M: np.ndarray, j: int, qc: _ColumnQuantizer, kind: str
) -> None:
    rows, cols = W.shape
    what = (
        "the upper Cholesky factor of the inverse Hessian, as quantlab.gptq uses"
        if kind == "cholesky"
        else "the full inverse Hessian in place of its Cholesky factor"
    )
    where = f" (on a {rows}x{cols} W, j = {j}, U = {what})"
    expected = _ref_gptq_step(W, M, j, qc)
    w = W[:, j]
    q = qc(w)
    d = M[j, j]
    err = (w - q) / d

    out = _call(gptq_step, f"gptq_step(W, U, {j}, quantize_column)", W.copy(), M.copy(), j, qc, hint=where)
    if out is None:
        raise _Fail(
            f"gptq_step returned None: return the updated W (an array of shape "
            f"{W.shape}), also if you changed W in place{where}"
        )
    got = _shaped(out, "the W returned by gptq_step", W.shape, where)

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.allclose(a, b, rtol=1e-6, atol=1e-9))

    if j > 0 and not close(got[:, :j], W[:, :j]):
        changed = sorted({int(c) for c in np.nonzero(~np.isclose(got[:, :j], W[:, :j], rtol=1e-6, atol=1e-9))[1]})
        raise _Fail(
            f"columns {changed} changed, but the columns before j = {j} are already "
            f"quantized: GPTQ never touches them again; update only W[:, j+1:] "
            f"(the row U[j, :j] is not used){where}"
        )
    later = got[:, j + 1 :]
    if not close(later, expected[:, j + 1 :]):
        row = M[j, j + 1 :][None, :]
        rest = W[:, j + 1 :]
        k = int(np.argmax(np.abs(later - expected[:, j + 1 :]).max(axis=0))) + j + 1
        ex = f"(column {k}: expected {_show(expected[:, k], 4)}, got {_show(got[:, k], 4)})"
        variants = [
            (
                rest,
                "the columns after j did not change: spread the rounding error of column j "
                "over them, err = (w_j - q_j) / U[j, j], W[:, j+1:] -= err[:, None] * "
                "U[j, j+1:][None, :] (row j of U; with the upper-triangular Cholesky "
                "factor, the column U[j+1:, j] is zero) ",
            ),
            (
                rest - (w - q)[:, None] * row,
                f"you forgot the division by U[j, j] = {d:.4g}: "
                f"err = (w_j - q_j) / U[j, j], then W[:, j+1:] -= err[:, None] * "
                f"U[j, j+1:][None, :] ",
            ),
            (
                rest - ((w - q) * d)[:, None] * row,
                f"you multiplied by U[j, j] = {d:.4g} instead of dividing: err = (w_j - q_j) / U[j, j] ",
            ),
            (
                rest + err[:, None] * row,
                "the update has the wrong sign: with err = (w_j - q_j) / "
                "U[j, j] (original minus quantized), the later columns are corrected by "
                "W[:, j+1:] -= err[:, None] * U[j, j+1:][None, :] ",
            ),
            (rest - ((w - q) / d**2)[:, None] * row, "you divided by U[j, j] twice: err = (w_j - q_j) / U[j, j] "),
        ]
        for variant, message in variants:
            if close(later, variant):
                raise _Fail(message + ex + where)
        raise _Fail(
            f"the columns after j are not updated as expected: W[:, j+1:] -= "
            f"err[:, None] * U[j, j+1:][None, :] with err = (w_j - q_j) / "
            f"U[j, j] {ex}{where}"
        )
    if not close(got[:, j], q):
        ex = f"(expected {_show(q, 4)}, got {_show(got[:, j], 4)})"
        if close(got[:, j], w):
            raise _Fail(
                f"column j = {j} still holds its unquantized values: set W[:, j] = q_j = "
                f"quantize_column(W[:, j]) (subtracting err * U[j, j] from column j "
                f"does exactly that) {ex}{where}"
            )
        raise _Fail(f"column j = {j} must hold its quantized values q_j = quantize_column(W[:, j]) {ex}{where}")


def check_gptq_step(gptq_step: Callable) -> CheckResult:
    """Check one GPTQ column step: quantize column ``j``, spread its error over the later ones.

    The reference (the update of :func:`quantlab.gptq.gptq_reference`, one column)::

        w = W[:, j];  q = quantize_column(w)
        err = (w - q) / U[j, j]
        W[:, j] = q
        W[:, j+1:] -= err[:, None] * U[j, j+1:][None, :]

    The step reads only the row ``U[j, j:]``. In GPTQ (the paper's code and
    :mod:`quantlab.gptq`) ``U`` is the upper Cholesky factor of the damped
    inverse Hessian (``U.T @ U = H^-1``): its row ``j`` is the row ``j`` of the inverse
    Hessian of the columns not yet quantized, divided by the square root of its diagonal
    entry, so ``err * U[j, k]`` with ``err = (w - q) / U[j, j]`` is the optimal-brain-surgeon
    update ``(w - q) [H_j^-1]_jk / [H_j^-1]_jj``. Running the step for ``j = 0, 1, ...``
    with ``U`` therefore gives ``gptq_reference``'s codes; for ``j = 0`` the inverse
    Hessian itself gives the same update. Setting ``W[:, j] = q`` is the same as
    including column ``j`` in the update (``W[:, j:] -= err[:, None] * U[j, j:]``), as
    the library does.

    The cases: 3- and 5-column toys, ``j`` first, middle and last, with ``U`` and (once)
    with the full symmetric inverse Hessian, where changing the columns before ``j`` shows.
    The checker passes copies of ``W`` and ``U``, so changing them in place is fine,
    as long as the result is returned.

    Mistakes recognised (each with its own message): changing already-quantized columns
    (before ``j``); not updating the later columns (or using the zero column
    ``U[j+1:, j]``); forgetting the division by ``U[j, j]``, multiplying
    by it, or dividing twice; the wrong sign; leaving column ``j`` unquantized; returning
    None or the wrong shape; exceptions.

    Args:
        gptq_step: the reader's ``gptq_step(W, U, j, quantize_column) -> W_updated``:
            ``W`` a float64 ``(rows, cols)`` array, ``U`` a ``(cols, cols)`` array,
            ``j`` the column to quantize, ``quantize_column(w) -> q`` a function that rounds
            one column ``w = W[:, j]`` onto the grid (int4, one scale per row) and returns
            the dequantized values ``q``, same shape.

    Returns:
        A :class:`CheckResult`: passed, or the first mistake found, in words.

    Raises:
        TypeError: ``gptq_step`` is not callable.
    """
    _require_callable(gptq_step, "gptq_step")
    cases = _gptq_cases()

    def body() -> str:
        for W, M, j, qc, kind in cases:
            _check_gptq_case(gptq_step, W, M, j, qc, kind)
        return (
            f"gptq_step agrees with the reference on {len(cases)} steps (first, middle and "
            f"last column): W[:, j] = q_j, err = (w_j - q_j) / U[j, j], "
            f"W[:, j+1:] -= err[:, None] * U[j, j+1:][None, :]."
        )

    return _run(body)
