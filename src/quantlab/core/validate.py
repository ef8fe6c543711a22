"""Argument checks shared by quantlab's modules: one place for each kind of check.

Every module of the package validates its public arguments with these functions, so the
same argument raises the same exception everywhere. Each helper returns the checked value
(converted to a plain Python type) or raises ``TypeError`` (wrong kind of value) /
``ValueError`` (right kind, bad value) with a message that names the parameter and
repeats what was received.

Conventions:

* **booleans** are ``True``/``False`` (Python ``bool`` or ``numpy.bool_``) only: strings
  such as ``"no"`` and numbers such as ``0`` or ``1`` are refused, since ``"no"`` is truthy.
* **integers** are ``numbers.Integral`` (Python ``int``, numpy integers), never ``bool``.
* **real numbers** are ``numbers.Real`` (not ``bool``); a Python ``int`` too large for a
  float is refused with a ``ValueError``.

The rule for the exception type: ``TypeError`` when the value is of the wrong kind (a float
for a count, a string for a flag), ``ValueError`` when it is of the right kind but outside
what the parameter accepts (a negative count, a zero step size). Messages name the
parameter and repeat the value received, e.g. ``"n must be a non-negative int, got -1"``.

(Formerly ``quantlab.core._validate``, which still re-exports these names.)

Taught in: README.md (Bad input gets a clear error).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import numpy as np

__all__ = [
    "check_bool",
    "check_optional_bool",
    "check_int",
    "check_positive_int",
    "check_nonnegative_int",
    "check_real",
    "check_positive",
    "check_count",
    "describe",
]


def describe(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (huge integers are summarised)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` as a ``bool``; only ``True``/``False`` (or ``numpy.bool_``) pass.

    Raises:
        TypeError: anything else, e.g. ``"no"``, ``0`` or ``None``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {describe(value)}")


def check_optional_bool(value: Any, name: str) -> Optional[bool]:
    """Like :func:`check_bool`, but ``None`` passes through (meaning "the default")."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True, False or None, got {type(value).__name__} {describe(value)}")


def check_int(
    value: Any,
    name: str,
    *,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
    what: str = "an integer",
) -> int:
    """Return ``value`` as an ``int`` after checking ``minimum <= value <= maximum``.

    Args:
        value: the value received.
        name: the parameter name for messages.
        minimum, maximum: inclusive bounds (None: unbounded).
        what: how the expected type is described in the ``TypeError`` message.

    Raises:
        TypeError: not an integer (bools and floats such as ``2.0`` included).
        ValueError: outside the bounds.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {describe(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {describe(value)}")
    return value


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> Optional[int]:
    """Return ``value`` as an ``int`` after checking it is an integer ``> 0`` (a size, a count
    of steps); with ``allow_none=True``, ``None`` passes through.

    Raises:
        TypeError: not an integer (bools and floats such as ``2.0`` included), e.g.
            ``"block_size must be a positive int, got float 1.5"``.
        ValueError: ``<= 0``, e.g. ``"block_size must be positive, got 0"``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        kind = "a positive int or None" if allow_none else "a positive int"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {describe(value)}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {describe(int(value))}")
    return int(value)


def check_nonnegative_int(value: Any, name: str) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer ``>= 0`` (a seed, a
    number of codes).

    Raises:
        TypeError: not an integer, e.g. ``"n must be a non-negative int, got float 2.0"``.
        ValueError: negative, e.g. ``"n must be a non-negative int, got -1"``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative int, got {type(value).__name__} {describe(value)}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {describe(int(value))}")
    return int(value)


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {describe(value)}")
    try:
        return float(value)
    except OverflowError as err:  # a Python int beyond the float range
        raise ValueError(
            f"{name} must be a finite real number within the float range (< 1.8e308), got {describe(value)}"
        ) from err


def check_real(
    value: Any,
    name: str,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` inside an interval.

    Args:
        value: the value received.
        name: the parameter name for messages.
        low, high: the interval's ends (None: unbounded).
        low_open, high_open: whether the ends are excluded.

    Raises:
        TypeError: not a real number.
        ValueError: NaN, infinite, too large for a float, or outside the interval; the
            message shows the interval, e.g. ``"clip_ratio must be in (0, 1], got 1.5"``.
    """
    v = _as_float(value, name)
    inside = math.isfinite(v)
    if inside and low is not None:
        inside = v > low if low_open else v >= low
    if inside and high is not None:
        inside = v < high if high_open else v <= high
    if not inside:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {describe(value)}")
    return v


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float after checking it is a finite real number ``> 0`` (a
    learning rate, a step size).

    Raises:
        TypeError: not a real number, e.g. ``"lr must be a real number, got str '0.1'"``.
        ValueError: NaN, infinite, too large for a float, or ``<= 0``, e.g.
            ``"lr must be a finite number > 0, got 0"``.
    """
    v = _as_float(value, name)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {describe(value)}")
    return v


def check_count(value: Any, name: str, *, allow_zero: bool = True) -> float:
    """Return ``value`` as a float after checking it is a finite real number ``>= 0``
    (``> 0`` with ``allow_zero=False``).

    Raises:
        TypeError: not a real number.
        ValueError: NaN, infinite, too large for a float, or below the bound.
    """
    v = _as_float(value, name)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {v!r}")
    return v
