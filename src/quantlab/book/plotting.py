"""Figures the chapter draws more than once.

* :func:`draw_bit_fields` -- the bits of one number in a floating-point format, coloured by
  field (sign, exponent, mantissa), with the value they decode to.

Taught in: chapters/03_core_tradeoff.ipynb, "How the formats store a number".
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Optional

from ..core.formats import FloatFields, FloatFormat, FormatLike, get_format

__all__ = ["FIELD_COLORS", "draw_bit_fields", "describe_fields"]

FIELD_COLORS: dict[str, str] = {
    "sign": "#9ecae1",  # light blue
    "exponent": "#a1d99b",  # light green
    "mantissa": "#fdae6b",  # light orange
}
"""Fill colour of each field's bit cells (colour-blind-safe light tones; the text stays black)."""


def describe_fields(fmt: FormatLike, value: float) -> str:
    """The decoding of ``value`` in ``fmt`` as a formula, e.g. ``"(-1)^1 x 2^1 x (1 + 256/1024) = -2.5"``.

    Normal numbers read ``(-1)^s x 2^(E - bias) x (1 + M / 2^mbits)``, subnormals
    ``(-1)^s x 2^(1 - bias) x (M / 2^mbits)``; zero, infinity and NaN are named.

    Args:
        fmt: a floating-point format (name or object).
        value: a real number; it is rounded into the format first.

    Returns:
        One line of text.

    Raises:
        TypeError: ``fmt`` is not a floating-point format or ``value`` not a real number.
    """
    f = _float_format(fmt)
    fl = f.fields(_check_value(value))
    return _formula(f, fl)


def _float_format(fmt: FormatLike) -> FloatFormat:
    f = get_format(fmt)
    if not isinstance(f, FloatFormat):
        raise TypeError(f"fmt must be a floating-point format such as 'fp16', got {f.name}")
    return f


def _check_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _formula(f: FloatFormat, fl: FloatFields) -> str:
    sign = "-" if fl.sign else "+"
    if fl.kind in ("inf", "nan"):
        return f"{sign}{fl.kind}" if fl.kind == "inf" else "NaN"
    if fl.kind == "zero":
        return f"{sign}0"
    den = 1 << f.mbits
    lead = "1 + " if fl.kind == "normal" else ""
    return f"(-1)^{fl.sign} x 2^{fl.unbiased_exponent} x ({lead}{fl.mantissa}/{den}) = {fl.value:.8g}"


def draw_bit_fields(
    ax: Any,
    fmt: FormatLike,
    value: float,
    *,
    colors: Optional[Mapping[str, str]] = None,
    title: Optional[str] = None,
    show_formula: bool = True,
) -> FloatFields:
    """Draw the bits of ``value`` in ``fmt`` as a row of coloured cells on a matplotlib axis.

    One square cell per bit, most significant first: the sign bit, then the exponent field,
    then the mantissa field, each filled with its colour from :data:`FIELD_COLORS` and
    labelled with its name and width underneath. The title (default) names the format, the
    value asked for and the value stored; with ``show_formula`` the decoding
    ``(-1)^s x 2^e x (1 + M/2^m)`` is written below the fields.

    Args:
        ax: a matplotlib ``Axes`` (its ticks and frame are turned off).
        fmt: a floating-point format, e.g. ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``.
        value: the real number to store (rounded to nearest, ties to even, first).
        colors: override fill colours by field name (``"sign"``, ``"exponent"``, ``"mantissa"``).
        title: axis title (default: ``"<format>: <value> -> <stored value>"``).
        show_formula: write the decoding formula under the cells.

    Returns:
        The :class:`~quantlab.formats.FloatFields` that were drawn.

    Raises:
        TypeError: ``fmt`` is not a floating-point format, ``value`` is not a real number, or
            ``ax`` is not a matplotlib Axes.
        ValueError: ``colors`` names a field that does not exist.

    Taught in: chapters/03_core_tradeoff.ipynb, "How the formats store a number".
    """
    from matplotlib.axes import Axes
    from matplotlib.patches import Rectangle

    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    f = _float_format(fmt)
    v = _check_value(value)
    fill = dict(FIELD_COLORS)
    if colors is not None:
        unknown = sorted(set(colors) - set(FIELD_COLORS))
        if unknown:
            raise ValueError(f"colors may only name {sorted(FIELD_COLORS)}, got {unknown}")
        fill.update(colors)
    fl = f.fields(v)
    bits = fl.sign_bits + fl.exponent_bits + fl.mantissa_bits
    field_of = ["sign"] + ["exponent"] * f.ebits + ["mantissa"] * f.mbits
    fontsize = 11 if f.bits <= 16 else 8
    for i, (bit, name) in enumerate(zip(bits, field_of)):
        ax.add_patch(
            Rectangle(
                (i, 0),
                1,
                1,
                facecolor=fill[name],
                edgecolor="black",
                linewidth=0.8,
                label=name if (i == 0 or field_of[i - 1] != name) else None,
            )
        )
        ax.text(i + 0.5, 0.5, bit, ha="center", va="center", fontsize=fontsize, family="monospace")
    spans = [("sign", 0, 1), ("exponent", 1, 1 + f.ebits), ("mantissa", 1 + f.ebits, f.bits)]
    for name, lo, hi in spans:
        if hi > lo:
            label = name if name == "sign" else f"{name} ({hi - lo})"
            if name == "sign" and f.bits > 16:
                label = "s"
            ax.plot([lo + 0.05, hi - 0.05], [-0.15, -0.15], color="0.3", linewidth=1.2)
            ax.text((lo + hi) / 2, -0.45, label, ha="center", va="top", fontsize=9)
    if show_formula:
        ax.text(0, -1.15, _formula(f, fl), ha="left", va="top", fontsize=9, family="monospace")
    ax.set_xlim(-0.2, max(f.bits, 16) + 0.2)  # narrow formats keep the cell size of fp16
    ax.set_ylim(-1.7 if show_formula else -1.0, 1.15)
    ax.set_aspect("equal" if f.bits <= 16 else "auto")
    ax.axis("off")
    stored = f"{fl.value:.8g}" if math.isfinite(fl.value) else str(fl.value)
    ax.set_title(title if title is not None else f"{f.name}: {v:g} -> stored {stored}", fontsize=10, loc="left")
    return fl
