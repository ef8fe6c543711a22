"""What every exercise checker shares: :class:`CheckResult` and the diagnosis helpers.

A checker runs the reader's functions on fixed cases and compares them with a reference; a
mistake it recognises is raised as :class:`Fail` with a message in words, and
:func:`run_check` turns that (or any exception the returned values cause) into a failed
:class:`CheckResult`. The helpers here call the reader's code safely (:func:`call_reader`:
an exception, even ``sys.exit()``, becomes a diagnosis), read returned values as float64
arrays of the expected shape, and recognise the mistakes every exercise can make: codes
stored in too narrow an integer type (wrapped around), values cut to integers, results
computed in float16/float32, and test cases on a rounding tie (``x / scale`` ending in
``.5``, nudged away so that any rounding rule passes).

Taught in: chapters/02b_build_it.ipynb, "Build it yourself".
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

__all__ = [
    "CheckResult",
    "Fail",
    "require_callable",
    "run_check",
    "call_reader",
    "error_text",
    "dtype_of",
    "wrapped_codes",
    "check_not_truncated",
    "low_precision",
    "describe",
    "show_values",
    "returned_items",
    "numeric_array",
    "shaped_array",
    "scalar_value",
    "is_close",
    "first_fraction",
    "same_values",
    "first_difference",
    "avoid_ties",
]

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


class Fail(Exception):
    """A diagnosis: the reader's code is wrong in the way the message says."""


def require_callable(func: Any, name: str) -> None:
    """Refuse a checker argument that is not callable (a TypeError naming ``name``): the
    one error a checker raises instead of reporting it."""
    if not callable(func):
        raise TypeError(f"{name} must be callable (a function), got {type(func).__name__}: {func!r}"[:200])


def run_check(body: Callable[[], str]) -> CheckResult:
    """Run a checker's body; turn a diagnosis (or anything unexpected) into a result."""
    try:
        return CheckResult(True, body())
    except Fail as fail:
        return CheckResult(False, str(fail))
    except Exception as err:  # a return value the checks below could not even look at
        return CheckResult(False, f"could not check the returned values: {type(err).__name__}: {error_text(err)}")


def call_reader(func: Callable, text: str, *args: Any, hint: str = "") -> Any:
    """``func(*args)``; an exception becomes a diagnosis naming the call, type and text
    (``sys.exit()`` inside the reader's code too: it would end the checker, not the cell)."""
    try:
        return func(*args)
    except (Exception, SystemExit) as err:
        more = (
            " (sys.exit() and exit() stop the program: return a value instead)" if isinstance(err, SystemExit) else ""
        )
        raise Fail(f"{text} raised {type(err).__name__}: {error_text(err)}{more}{hint}") from None


def error_text(err: BaseException, limit: int = 300) -> str:
    """``str(err)``, cut to ``limit`` characters, or a placeholder if even that fails."""
    try:
        text = str(err)
    except Exception:  # an exception whose __str__ raises
        return "(its message could not be shown)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dtype_of(value: Any) -> Optional[np.dtype]:
    """The numpy dtype ``value`` would have as an array, or None."""
    try:
        return np.asarray(value).dtype
    except Exception:
        return None


def wrapped_codes(dtype: Optional[np.dtype], got: np.ndarray, ref: np.ndarray, bits: int) -> Optional[str]:
    """A diagnosis if ``got`` is ``ref`` stored in an integer type too narrow for it (the
    codes wrapped around), else None."""
    if dtype is None or dtype.kind not in "iu" or dtype.itemsize >= 8 or np.array_equal(got, ref):
        return None
    with np.errstate(over="ignore"):
        as_stored = ref.astype(np.int64).astype(dtype).astype(np.float64)
    if got.shape != ref.shape or not np.array_equal(got, as_stored):
        return None
    k = first_difference(got, ref)
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


def check_not_truncated(dtype: Optional[np.dtype], got: np.ndarray, expected: np.ndarray, where: str) -> None:
    """A diagnosis if dequantize returned the right values cut to integers."""
    if (
        dtype is not None
        and dtype.kind in "iub"
        and not np.allclose(got, expected, rtol=1e-6, atol=1e-12)
        and np.array_equal(got, np.trunc(expected))
    ):
        raise Fail(
            f"dequantize returned integers (dtype {dtype.name}): the values codes * scale "
            f"have fractions, e.g. {show_values(expected, 3)} came back as {show_values(got, 3)}; keep "
            f"them float (no .astype(int)){where}"
        )


def low_precision(dtype: Optional[np.dtype], value: float, ref: float, what: str) -> Optional[str]:
    """A diagnosis if ``value`` is ``ref`` rounded to a low-precision float (float16, or
    float32 beyond this checker's tolerance), else None."""
    if dtype is None or dtype.kind != "f" or dtype.itemsize >= 8 or is_close(value, ref):
        return None
    eps = float(np.finfo(dtype).eps)
    if not math.isclose(value, ref, rel_tol=2 * eps):
        return None
    return (
        f"{what} is {value:.7g}, {ref:.7g} rounded to {dtype.name} (about "
        f"{round(-math.log10(eps))} digits): compute and return it in float64, "
        "numpy's default"
    )


def describe(value: Any) -> str:
    """A returned value in words for a diagnosis: an array's shape and dtype, a sequence's
    length, or a short repr."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__} ({value!r})"[:120]


def show_values(a: Any, k: int = 8) -> str:
    """The first ``k`` values of an array, short."""
    flat = np.asarray(a).ravel()
    body = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat[:k].tolist())
    return f"[{body}{', ...' if flat.size > k else ''}]"


def returned_items(out: Any, n: int, func: str, names: str) -> tuple:
    """The ``n`` items of a returned tuple/list, or a diagnosis."""
    if not isinstance(out, (tuple, list)) or len(out) != n:
        raise Fail(f"{func} must return {n} values {names}, got {describe(out)}")
    return tuple(out)


def numeric_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array, or a diagnosis if it is not numbers."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # e.g. a ragged list
        raise Fail(f"{what} is not an array: {type(err).__name__}: {err}") from None
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise Fail(f"{what} must be a numeric array, got {describe(value)}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise Fail(f"found NaN or infinity in {what}: {show_values(arr)}")
    return arr


def shaped_array(value: Any, what: str, shape: tuple, hint: str = "") -> np.ndarray:
    """``value`` as a float64 array of ``shape``, or a diagnosis (``hint`` added to it)."""
    arr = numeric_array(value, what)
    if arr.shape != shape:
        raise Fail(f"{what} has shape {arr.shape}, expected {shape}{hint}")
    return arr


def scalar_value(value: Any, what: str, hint: str) -> float:
    """A single number (a Python/numpy scalar or a one-element array), or a diagnosis."""
    arr = numeric_array(value, what)
    if arr.size != 1:
        raise Fail(f"{what} must be one number, got an array of shape {arr.shape}: {hint}")
    return float(arr.reshape(()))


def is_close(a: float, b: float, rtol: float = 1e-6) -> bool:
    """``|a - b| <= rtol * max(|a|, |b|)``: the checkers' tolerance for a scale or a value."""
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-300)


def first_fraction(arr: np.ndarray) -> Optional[int]:
    """Index (flat) of the first value with a fraction, or None if all are integers."""
    bad = np.flatnonzero(arr != np.round(arr))
    return int(bad[0]) if bad.size else None


def same_values(got: np.ndarray, variant: np.ndarray, ignore: Optional[np.ndarray] = None) -> bool:
    """``got`` equals ``variant`` (except where ``ignore``: values on a rounding boundary)."""
    if got.shape != variant.shape:
        return False
    keep = np.ones(got.shape, bool) if ignore is None else ~ignore
    return bool(np.array_equal(got[keep], variant[keep]))


def first_difference(a: np.ndarray, b: np.ndarray) -> int:
    """Flat index of the first element where ``a`` and ``b`` differ (they must differ)."""
    return int(np.flatnonzero(a.ravel() != b.ravel())[0])


def avoid_ties(x: np.ndarray, ratio: Callable[[np.ndarray], np.ndarray], step: float) -> np.ndarray:
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
