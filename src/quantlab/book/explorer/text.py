"""Every word and number format the explorer shows, written once for both front ends.

The kernel widget (:mod:`.widget`) and the kernel-free page (:mod:`.page`, whose script
receives :data:`TEXT` with its data) take their labels and titles from here; numbers are
turned into the displayed strings by :func:`sig`, :func:`pct_text` and
:func:`plural`.

Taught in: chapters/02_explorer.ipynb, "Try it first".
"""

from __future__ import annotations

import math

__all__ = ["TEXT", "FIGURE_LABELS", "sig", "pct_text", "plural", "compression_text"]

#: Labels of the figure cards, in display order.
FIGURE_LABELS: dict[str, str] = {
    "format": "Format",
    "levels": "Codes (2^bits)",
    "compression": "Compression vs fp32",
    "error": "Average error",
    "bpw": "Bits/weight incl. scales",
    "zeroed": "Weights rounded to 0",
}

#: The explorer's other words: control labels, the ends of the slider, the figures' titles
#: and axes, and the notes under a still picture. ``{n}`` and ``{fmt}`` are filled in.
TEXT: dict[str, str] = {
    "title": "Quantization Explorer",
    "precision": "Precision",
    "weights": "Weights",
    "format": "Format",
    "scale_per": "Scale per",
    "range": "Range",
    "preset": "Preset",
    "no_preset": "— (set the controls)",
    "symmetric": "symmetric",
    "asymmetric": "asymmetric (zero point)",
    "end_low": "2-bit: extreme",
    "end_high": "… 16-bit … 32-bit: baseline (fp32)",
    "stop_low": " (extreme)",
    "stop_high": " (baseline, fp32)",
    "bit_width": "bit width",
    "bits_value": "{bits} bits",
    "note": "Note: {notes}.",
    "strip_title": "64 sample weights (one group) and where each one lands",
    "hist_title": "All {n} weights of the tensor, before and after quantization",
    "float32": "float32",
    "quantized": "quantized",
    "weight_value": "weight value",
    "hist_x": "weight value (bins of 0.01)",
    "hist_y": "% of weights per bin (log scale)",
    "legend_orig": "float32 weights",
    "legend_quant": "after quantization",
    "not_available": "not available",
    "foot": "Every number and curve here was computed by quantlab in Python when this page was "
    "built; the page's script only picks the precomputed result for your settings and "
    "draws it. No kernel needed.",
    "still_page": "A still picture of the setting above, drawn when the page was built. The "
    "controls need the page's script: in JupyterLab, run this cell (or trust the "
    "notebook); in the built book they work as they are.",
    "still_widget": "A still picture of the live explorer ({setting}): run this cell to move the slider.",
}


def sig(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` significant digits, in positional notation (no exponent).

    Example:
        >>> sig(0.0038567), sig(12.345), sig(99.996)
        ('0.00386', '12.3', '100')
    """
    if v == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    text = f"{v:.{decimals}f}"
    if float(text) != 0 and len(text.replace("-", "").replace(".", "").lstrip("0")) > digits:
        # rounding carried into a new digit (e.g. 9.996 -> 10.00): one decimal fewer
        text = f"{v:.{max(0, decimals - 1)}f}"
    return text


def pct_text(v: float) -> str:
    """A percentage with three significant digits that never rounds up to a false 100.

    Example:
        >>> pct_text(99.96), pct_text(100.0), pct_text(55.31)
        ('>99.9', '100', '55.3')
    """
    text = sig(v)
    return ">99.9" if float(text) >= 100 > v else text


def plural(n: int, one: str, many: str) -> str:
    """``"1 level"``, ``"16 levels"``, ``"65,536 levels"``: a count and the right noun.

    Example:
        >>> plural(1, "weight lies", "weights lie"), plural(2, "level", "levels")
        ('1 weight lies', '2 levels')
    """
    return f"{n:,} {one if n == 1 else many}"


def compression_text(ratio: float) -> str:
    """A compression ratio as displayed: at most two decimals, ``"7.11×"``, ``"8×"``."""
    return f"{ratio:.2f}".rstrip("0").rstrip(".") + "×"
