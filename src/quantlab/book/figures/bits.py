"""Bits of a number: flip the bits of a float, or type a value, and see what it stores.

The figure shows one bit pattern of a binary floating-point format: its sign, exponent
and mantissa fields, the value they stand for,

    value = (-1)^s * 2^(E - bias) * (1 + M / 2^m)      (normal, 0 < E < all ones)
    value = (-1)^s * 2^(1 - bias) * (M / 2^m)          (subnormal, E = 0)

its neighbours (the next representable values down and up), and for a typed number the
value it is stored as (rounded to nearest, ties to even) and the rounding error
``stored - typed``. A table lists what the format has or lacks: infinity, NaN,
subnormals, the largest and smallest values.

The formats are :data:`FORMATS`: fp32, fp16, bf16, fp8 e4m3 and e5m2, fp6 e3m2 and e2m3,
fp4 e2m1, defined in :mod:`quantlab.core.formats`, which is the truth here:
:func:`describe` decodes a code and :func:`store` rounds a number with quantlab's own
``FloatFormat.decode`` / ``encode``. The page's script decodes and rounds with a small
routine of its own (bit fields and powers of two, ``assets/bits.js``) built from each
format's parameters as :func:`format_facts` reads them from quantlab; the browser test
compares that routine with :func:`describe` and :func:`store` over every code of the
formats of at most 16 bits (fp16 and bf16 included) and over a dense sample of fp32
codes and of typed values (ties, subnormals, the overflow boundary).

Taught in: chapters/03_core_tradeoff.ipynb, "How the formats store a number".
"""

from __future__ import annotations

import bisect
import html
import math
import re
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, Optional, Union, cast

import torch

from ...core.formats import FloatFormat, get_format
from ...core.validate import describe as _describe
from ._page import check_root_id, figure_html

__all__ = [
    "FORMATS",
    "KINDS",
    "INITIAL",
    "CodeView",
    "StoredValue",
    "format_facts",
    "finite_values",
    "describe",
    "store",
    "parse_value",
    "static_data",
    "static_html",
]

#: The formats of the figure and their labels, in menu order.
FORMATS: dict[str, str] = {
    "fp32": "fp32 (float32, e8m23)",
    "fp16": "fp16 (half, e5m10)",
    "bf16": "bf16 (bfloat16, e8m7)",
    "fp8_e4m3": "fp8 e4m3 (e4m3fn)",
    "fp8_e5m2": "fp8 e5m2",
    "fp6_e3m2": "fp6 e3m2",
    "fp6_e2m3": "fp6 e2m3",
    "fp4_e2m1": "fp4 e2m1",
}
#: What a bit pattern can be.
KINDS: tuple[str, ...] = ("zero", "subnormal", "normal", "inf", "nan")
#: The view the figure opens with: a format and a typed value.
INITIAL: tuple[str, str] = ("fp16", "0.1")


def _format(name: Any) -> FloatFormat:
    if not isinstance(name, str):
        raise TypeError(f"name must be a format name such as 'fp16', got {type(name).__name__} {_describe(name)}")
    if name not in FORMATS:
        raise ValueError(f"name must be one of {list(FORMATS)}, got {name!r}")
    return cast(FloatFormat, get_format(name))  # every name in FORMATS is a float format


def _check_code(fmt: FloatFormat, code: Any) -> int:
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"code must be an integer, got {type(code).__name__} {_describe(code)}")
    if not 0 <= code < 1 << fmt.bits:
        raise ValueError(f"code must be in 0 .. 2^{fmt.bits} - 1 for {fmt.name}, got {code}")
    return code


def _nan_code(fmt: FloatFormat) -> Optional[int]:
    """The code quantlab stores a (positive) NaN as, or None for a format without NaN."""
    if fmt.nan == "none":
        return None
    return int(fmt.encode(torch.tensor([math.nan], dtype=torch.float64))[0])


def _levels(fmt: FloatFormat) -> int:
    """Distinct finite values (+0 and -0 once), counted from the bit layout (every format,
    fp32 included; ``FloatFormat.levels`` agrees for the formats of at most 16 bits)."""
    codes = 1 << fmt.bits
    if fmt.has_inf:
        codes -= 2 << fmt.mbits  # the all-ones exponent: infinities and NaNs, both signs
    elif fmt.nan == "all_ones":
        codes -= 2
    return codes - 1


@cache
def format_facts(name: str) -> dict[str, Any]:
    """What the page's routine needs of a format, and what its table of facts shows.

    Returns:
        ``{"name", "label", "bits", "ebits", "mbits", "bias", "emin", "emax", "has_inf",
        "nan", "nan_code", "overflow", "max", "min_normal", "min_subnormal", "eps",
        "levels"}``, read from the :class:`~quantlab.core.formats.FloatFormat` (``nan_code``
        is the code of a positive NaN, or None).

    Raises:
        TypeError, ValueError: ``name`` not one of :data:`FORMATS`.
    """
    fmt = _format(name)
    return {
        "name": fmt.name,
        "label": FORMATS[name],
        "bits": fmt.bits,
        "ebits": fmt.ebits,
        "mbits": fmt.mbits,
        "bias": fmt.bias,
        "emin": fmt.emin,
        "emax": fmt.emax,
        "has_inf": fmt.has_inf,
        "nan": fmt.nan,
        "nan_code": _nan_code(fmt),
        "overflow": fmt.overflow,
        "max": fmt.max_value,
        "min_normal": fmt.min_normal,
        "min_subnormal": fmt.min_subnormal,
        "eps": fmt.eps,
        "levels": _levels(fmt),
    }


@cache
def finite_values(name: str) -> tuple[float, ...]:
    """Every distinct finite value of a format of at most 16 bits, ascending
    (``FloatFormat.values()``)."""
    fmt = _format(name)
    return tuple(float(v) for v in fmt.values())


def _ordered(name: str) -> list[float]:
    """The non-NaN values of a format of at most 16 bits, ascending, infinities included."""
    fmt = _format(name)
    inf = [math.inf] if fmt.has_inf else []
    return [-x for x in inf] + list(finite_values(name)) + inf


def _neighbours(fmt: FloatFormat, value: float) -> tuple[Optional[float], Optional[float]]:
    """The representable values next below and above ``value`` (None where there is none)."""
    if math.isnan(value):
        return None, None
    if fmt.bits <= 16:
        order = _ordered(fmt.name)
        lo, hi = bisect.bisect_left(order, value), bisect.bisect_right(order, value)
        return (order[lo - 1] if lo > 0 else None), (order[hi] if hi < len(order) else None)
    # fp32: the next float32 values (torch.nextafter); none beyond the infinities
    v = torch.tensor([value], dtype=torch.float32)
    down = float(torch.nextafter(v, torch.tensor([-math.inf]))[0])
    up = float(torch.nextafter(v, torch.tensor([math.inf]))[0])
    return (None if value == -math.inf else down), (None if value == math.inf else up)


@dataclass(frozen=True)
class CodeView:
    """One bit pattern of a format, decoded (what the figure shows for it).

    Attributes:
        format: the format's name.
        code: the bit pattern as an unsigned integer.
        bits: the pattern as a string of ``"0"``/``"1"``, sign first.
        sign, exponent, mantissa: the three fields as unsigned integers.
        value: the value (``FloatFormat.decode``); NaN for a NaN pattern.
        kind: one of :data:`KINDS`.
        down, up: the next representable values below and above ``value`` (None where
            there is none: beyond an infinity, beyond the largest value of a format
            without infinity, next to NaN).
    """

    format: str
    code: int
    bits: str
    sign: int
    exponent: int
    mantissa: int
    value: float
    kind: str
    down: Optional[float]
    up: Optional[float]

    def to_json(self) -> dict[str, Any]:
        """The view as JSON-able values (non-finite numbers as the strings ``"NaN"``,
        ``"Infinity"``, ``"-Infinity"``, and ``-0.0`` as ``"-0"``)."""
        return {k: _json_number(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _json_number(v: float) -> Union[float, str]:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0 and math.copysign(1.0, v) < 0:
        return "-0"
    return v


def _kind(fmt: FloatFormat, exponent: int, value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    if value == 0:
        return "zero"
    return "subnormal" if exponent == 0 else "normal"


def describe(name: str, code: int) -> CodeView:
    """Decode one bit pattern of a format with quantlab (``FloatFormat.decode``).

    Args:
        name: one of :data:`FORMATS`.
        code: the pattern, ``0 <= code < 2^bits`` (sign bit highest).

    Raises:
        TypeError, ValueError: an unknown format, a code that is not an integer in range.
    """
    fmt = _format(name)
    code = _check_code(fmt, code)
    value = float(fmt.decode(torch.tensor([code], dtype=torch.int64))[0])
    sign = code >> (fmt.bits - 1)
    exponent = (code >> fmt.mbits) & ((1 << fmt.ebits) - 1)
    mantissa = code & ((1 << fmt.mbits) - 1)
    if value == 0 and sign:
        value = -0.0
    down, up = _neighbours(fmt, value)
    return CodeView(
        fmt.name,
        code,
        format(code, f"0{fmt.bits}b"),
        sign,
        exponent,
        mantissa,
        value,
        _kind(fmt, exponent, value),
        down,
        up,
    )


@dataclass(frozen=True)
class StoredValue:
    """A typed number stored in a format.

    Attributes:
        typed: the number typed (a float64).
        view: the bit pattern it is stored as (:class:`CodeView`).
        error: ``stored - typed`` (float64; NaN for NaN or infinite input, 0 when equal).
        relative: ``|error| / |typed|`` (NaN for a typed 0, NaN or infinity).
    """

    typed: float
    view: CodeView
    error: float
    relative: float


def store(name: str, typed: float) -> StoredValue:
    """Round ``typed`` into a format as quantlab does (``FloatFormat.encode``: nearest,
    ties to even, from float64; saturating formats clamp, IEEE-like ones overflow to
    infinity) and describe the stored pattern.

    Raises:
        TypeError: ``typed`` is not a real number.
        ValueError: an unknown format, or NaN for a format without NaN (fp6, fp4).
    """
    fmt = _format(name)
    if isinstance(typed, bool) or not isinstance(typed, (int, float)):
        raise TypeError(f"typed must be a real number, got {type(typed).__name__} {_describe(typed)}")
    typed = float(typed)
    if math.isnan(typed) and fmt.nan == "none":
        raise ValueError(f"typed is NaN, which {fmt.name} cannot store (it has no NaN)")
    code = int(fmt.encode(torch.tensor([typed], dtype=torch.float64))[0]) & ((1 << fmt.bits) - 1)
    view = describe(name, code)
    if math.isfinite(typed) and math.isfinite(view.value):
        error = view.value - typed
    elif typed == view.value:  # the same infinity
        error = 0.0
    else:
        error = math.nan
    relative = abs(error) / abs(typed) if typed != 0 and math.isfinite(typed) else math.nan
    return StoredValue(typed, view, error, relative)


def parse_value(text: str) -> float:
    """The number a reader typed, as the page's script reads it: a decimal number such as
    ``0.1``, ``-2.5e-3`` or ``1e5``, or ``inf``, ``-inf``, ``nan`` (any case, spaces around
    ignored; ``∞`` and the minus sign ``−`` too).

    Raises:
        TypeError: ``text`` not a string.
        ValueError: anything else.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    t = text.strip().replace("−", "-").replace("∞", "inf").lower()
    t = {"infinity": "inf", "+infinity": "inf", "-infinity": "-inf", "+inf": "inf"}.get(t, t)
    if t in ("inf", "-inf", "nan"):
        return float(t)
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", t):
        raise ValueError(f"text must be a number such as 0.1, -2.5e-3, inf or nan, got {text!r}")
    return float(t)


def static_data(initial: Optional[tuple[str, str]] = None) -> dict[str, Any]:
    """What the page embeds: every format's facts and the first view.

    Args:
        initial: ``(format, typed text)`` shown first (default :data:`INITIAL`).

    Returns:
        ``{"formats": [format_facts(...) for each format], "initial": {"format", "text",
        "stored": {...}}}`` where ``stored`` is :func:`store` of the typed value (as JSON).

    Raises:
        TypeError, ValueError: a bad ``initial``.
    """
    if initial is None:
        initial = INITIAL
    if not (isinstance(initial, tuple) and len(initial) == 2):
        raise TypeError(f"initial must be a (format, text) tuple, got {_describe(initial)}")
    name, text = initial
    _format(name)
    s = store(name, parse_value(text))
    return {
        "formats": [format_facts(n) for n in FORMATS],
        "initial": {
            "format": name,
            "text": text,
            "code": s.view.code,
            "stored": {
                "typed": _json_number(s.typed),
                "view": s.view.to_json(),
                "error": _json_number(s.error),
                "relative": _json_number(s.relative),
            },
        },
    }


def static_html(root_id: str = "ql-bits", initial: Optional[tuple[str, str]] = None) -> str:
    """The self-contained, kernel-free figure (an HTML fragment; see :mod:`._page`).

    Args:
        root_id: ``id`` of the figure's outer element (unique per page).
        initial: ``(format, typed text)`` shown first (default :data:`INITIAL`).

    Raises:
        TypeError, ValueError: a bad ``root_id`` or ``initial``.
    """
    rid = check_root_id(root_id)
    data = static_data(initial)
    first = data["initial"]["format"]
    options = "".join(
        f'<option value="{k}"{" selected" if k == first else ""}>{html.escape(v)}</option>' for k, v in FORMATS.items()
    )
    specials = "".join(
        f'<button type="button" data-role="special" data-special="{k}">{label}</button>'
        for k, label in (
            ("zero", "0"),
            ("one", "1"),
            ("max", "largest"),
            ("min_normal", "smallest normal"),
            ("min_subnormal", "smallest subnormal"),
            ("inf", "∞"),
            ("nan", "NaN"),
        )
    )
    cards = "".join(
        f'<div class="qlf-card"><span class="k">{label}</span><span class="v" data-out="{k}">—</span></div>'
        for k, label in (
            ("value", "Value"),
            ("kind", "Kind"),
            ("code", "Code (hex)"),
            ("down", "Next value down"),
            ("up", "Next value up"),
        )
    )
    body = (
        '<p class="qlf-lead">Pick a format, then click a bit to flip it, or type a number and see '
        "what the format stores. Every bit is a button (Tab to it, Enter or Space flips it).</p>"
        '<div class="qlf-controls">'
        f'<label for="{rid}-format">Format<select id="{rid}-format" data-role="format">{options}</select></label>'
        f'<label for="{rid}-value">Type a number'
        f'<span class="qlf-typed"><input type="text" id="{rid}-value" data-role="value" inputmode="decimal" '
        f'autocomplete="off" spellcheck="false" size="14" value="{html.escape(data["initial"]["text"])}" '
        'aria-describedby="' + rid + '-typed-help">'
        '<button type="button" data-role="store">Store it</button></span></label></div>'
        f'<p class="qlf-help" id="{rid}-typed-help">A decimal number (0.1, -2.5e-3, 1e5), inf or nan; '
        "Enter stores it.</p>"
        '<div class="qlf-bitrow" data-role="bits" role="group" aria-label="the bits, sign first"></div>'
        '<p class="qlf-formula" data-out="formula" aria-live="polite"></p>'
        f'<div class="qlf-cards">{cards}</div>'
        '<div class="qlf-step"><button type="button" data-role="down" aria-label="go to the next value down">'
        '◀ next down</button><button type="button" data-role="up" aria-label="go to the next value up">'
        'next up ▶</button><span class="qlf-jump" role="group" aria-label="jump to a special value">'
        f"Jump to: {specials}</span></div>"
        '<div class="qlf-typedout" data-role="typed" aria-live="polite"></div>'
        '<table class="qlf-table" data-role="facts"><caption class="qlf-sr">what the format has or lacks</caption>'
        "<tbody></tbody></table>"
        '<p class="qlf-foot">The formats are quantlab\'s (<code>quantlab.formats</code>); the page decodes '
        "and rounds with a small script whose results the book's tests compare with quantlab's, "
        "code by code. No kernel needed.</p>"
    )
    return figure_html(
        root_id=rid,
        name="bits",
        title="Bits of a number",
        body=body,
        data=data,
        label="Bits of a number: the sign, exponent and mantissa bits of a floating-point "
        "format, the value they stand for, its neighbours and the rounding error of a "
        "typed number",
    )
