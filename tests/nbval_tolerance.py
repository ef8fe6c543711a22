"""nbval, strict where results are exact and within stated tolerances where they are not.

Loaded for every pytest run by the repository's top-level ``conftest.py``. nbval compares
each stored cell output with the output of a fresh run, character for character (after
``tests/nbval_sanitize.cfg``). That is right for what does not depend on float rounding:
shapes, counts, byte sizes, bit patterns, format names, integer codes of fixed inputs. It is
wrong for numbers that come out of float reductions (sums, matrix products, softmax,
perplexities): their last digits depend on the CPU's instruction set, the kernels torch and
the BLAS pick for it, and the thread count.

The rule, per cell:

* **No tolerance tag: exact.** Every compared output must be reproduced exactly.
* **A tag ``rtol=R`` and/or ``atol=A``: numbers within a tolerance, text exact.** Each output
  is split into numbers and the text between them. The text must match exactly and the
  outputs must hold the same count of numbers; each number ``x`` must satisfy
  ``|x - x_ref| <= A + R * |x_ref| + u``, where ``u`` is one unit in the last digit the
  stored output printed (a value printed as ``21.83`` may honestly print as ``21.84``
  elsewhere). Numbers include integers, decimals, exponents, thousands separators and a
  trailing ``%`` (compared in percent units).

Two more rules close gaps that nbval leaves:

* Figures glued with ``myst_nb.glue`` are stored under
  ``application/papermill.record/image/png``, which nbval would compare byte for byte; they are
  skipped like plain ``image/png`` outputs are. What a figure shows is covered by the numbers
  printed or glued beside it and by the notebook's assertion cells.
* A cell tagged ``rtol=...`` whose tolerance does not parse fails the test (a typo must not
  silently turn into a strict or a blanket comparison).

The tolerances chosen for each notebook, and why, are listed in the README ("What the notebook
tests compare").
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

SKIP_EXTRA = ("application/papermill.record/image/png",)

# A number not glued to a preceding letter, digit or underscore (so "int4", "g64", "fp16",
# "e4m3" stay text) with optional sign, thousands separators, decimals, exponent and "%".
NUMBER = re.compile(
    r"(?<![A-Za-z_0-9.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?%?"
    r"|(?<![A-Za-z_0-9.])[-+]?\.\d+(?:[eE][-+]?\d+)?%?"
)
TAG = re.compile(r"^(rtol|atol)=(.+)$")


def tolerance_of(tags: list[str]) -> Optional[tuple[float, float]]:
    """``(rtol, atol)`` from a cell's tags, or None when the cell is compared exactly.

    Raises:
        ValueError: a tolerance tag whose value is not a finite number >= 0.
    """
    found: dict[str, float] = {}
    for tag in tags or []:
        m = TAG.match(tag)
        if not m:
            continue
        try:
            value = float(m.group(2))
        except ValueError:
            raise ValueError(f"cell tag {tag!r}: the tolerance must be a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"cell tag {tag!r}: the tolerance must be a finite number >= 0")
        found[m.group(1)] = value
    if not found:
        return None
    return found.get("rtol", 0.0), found.get("atol", 0.0)


def _parse(token: str) -> tuple[float, float]:
    """The value of a number token and one unit in its last printed digit."""
    s = token.rstrip("%").replace(",", "")
    mantissa, _, exponent = s.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exp = int(exponent) if exponent else 0
    return float(s), 10.0 ** (exp - decimals)


def split_numbers(text: str) -> tuple[list[str], list[str]]:
    """``(pieces_of_text, numbers)``: the text between numbers, and the numbers in order."""
    pieces, numbers, last = [], [], 0
    for m in NUMBER.finditer(text):
        pieces.append(text[last : m.start()])
        numbers.append(m.group())
        last = m.end()
    pieces.append(text[last:])
    return pieces, numbers


def mismatch(ref: str, test: str, rtol: float, atol: float) -> Optional[str]:
    """None when ``test`` matches ``ref`` within the tolerance, else a description of the first difference."""
    ref_text, ref_nums = split_numbers(ref)
    test_text, test_nums = split_numbers(test)
    if len(ref_nums) != len(test_nums):
        return f"{len(test_nums)} numbers where the stored output has {len(ref_nums)}"
    for a, b in zip(ref_text, test_text):
        if a != b:
            return f"text differs: stored {a!r}, got {b!r}"
    for a, b in zip(ref_nums, test_nums):
        (x_ref, unit), (x, _) = _parse(a), _parse(b)
        if math.isnan(x_ref) or math.isnan(x):
            if not (math.isnan(x_ref) and math.isnan(x)):
                return f"number {b} where the stored output has {a}"
            continue
        allowed = atol + rtol * abs(x_ref) + unit
        if not abs(x - x_ref) <= allowed * (1 + 1e-12):
            return (
                f"number {b} where the stored output has {a}: differs by {abs(x - x_ref):.6g}, "
                f"allowed {allowed:.6g} (rtol={rtol:g}, atol={atol:g}, last digit {unit:g})"
            )
    return None


def _as_text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def install() -> None:
    """Patch nbval's output comparison with the rules above (idempotent)."""
    from nbval import plugin

    if getattr(plugin.IPyNbCell.compare_outputs, "_quantlab", False):
        return
    strict_compare = plugin.IPyNbCell.compare_outputs
    original_init = plugin.IPyNbFile.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.skip_compare = tuple(self.skip_compare) + SKIP_EXTRA

    def compare_outputs(self: Any, test: Any, ref: Any, skip_compare: Any = None) -> bool:
        tags = self.cell.get("metadata", {}).get("tags", [])
        tol = tolerance_of(tags)
        if tol is None:
            return strict_compare(self, test, ref, skip_compare)
        rtol, atol = tol
        skip = skip_compare or self.parent.skip_compare
        self.comparison_traceback = []

        def flatten(outputs: Any) -> dict[str, list[str]]:
            flat: dict[str, list[str]] = {}
            for out in plugin.transform_streams_for_comparison(outputs):
                for key, value in out.items():
                    if key in skip:
                        continue
                    items = value.items() if key == "data" else [(key, value)]
                    for k, v in items:
                        if k not in skip:
                            flat.setdefault(k, []).append(self.sanitize(_as_text(v)))
            return flat

        got, stored = flatten(test), flatten(ref)
        if set(got) != set(stored):
            self.comparison_traceback.append(f"output fields differ: stored {sorted(stored)}, got {sorted(got)}")
            return False
        for key, refs in stored.items():
            tests = got[key]
            if len(tests) != len(refs):
                self.comparison_traceback.append(
                    f"{len(tests)} outputs of type {key} where the stored notebook has {len(refs)}"
                )
                return False
            for r, t in zip(refs, tests):
                why = mismatch(r, t, rtol, atol)
                if why is not None:
                    self.comparison_traceback.append(
                        f"{key} (compared with rtol={rtol:g}, atol={atol:g}): {why}\n--- stored:\n{r}\n--- got:\n{t}"
                    )
                    return False
        return True

    compare_outputs._quantlab = True  # type: ignore[attr-defined]
    plugin.IPyNbFile.__init__ = __init__
    plugin.IPyNbCell.compare_outputs = compare_outputs
