"""The quantization recipe of a layer: :class:`QuantScheme` (format, granularity, group size,
symmetry, scale storage) and :func:`as_scheme`, which turns a format name into one.

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from ..core._backend import ArrayLike
from ..core.formats import (
    FloatFormat,
    Format,
    FormatLike,
    IntFormat,
    get_format,
)
from ..core.quantize import SCALE_DTYPES, QParams, QTensor, quantize
from ..core.validate import check_bool

__all__ = [
    "QuantScheme",
    "SchemeLike",
    "as_scheme",
]


@dataclass(frozen=True)
class QuantScheme:
    """How to quantize a weight matrix: format, granularity and scale storage.

    (The memory calculator's :class:`quantlab.memory.QuantSpec` only counts bits per weight;
    see there for how the two recipes differ.)

    Attributes:
        fmt: format name or object, e.g. ``"int8"``, ``"int4"``, ``"nf4"``, ``"fp8_e4m3"``,
            ``"fp16"``, ``"bf16"``.
        granularity: ``"tensor"``, ``"channel"`` or ``"group"``; ``None`` (default) means
            ``"group"`` if ``group_size`` is given, ``"channel"`` for scaled formats, and a
            plain cast (no scale) for fp16 / bf16 / fp32.
        group_size: weights per scale along the input dimension (``granularity="group"``),
            a positive int.
        axis: the channel axis for ``"channel"``: 0 = one scale per output row (default),
            1 = one per input column (-2 and -1 are the same axes).
        symmetric: absmax scaling (True) or min/max with a zero point (integer formats
            only); ``True``/``False`` only, not ``0``/``1`` or strings.
        scale_dtype: ``"fp16"`` (default), ``"bf16"`` or ``"fp32"``.

    Example:
        >>> QuantScheme("int4", group_size=128).label
        'int4 g128'

    Raises:
        TypeError: a field of the wrong kind (e.g. ``group_size="32"``, ``symmetric=1``,
            ``axis=1.0``); each message names the field and the value.
        ValueError: unknown format, granularity or scale dtype; ``group_size`` not
            positive, or without ``"group"``; a granularity given for a 16/32-bit cast;
            ``symmetric=False`` for a format without integer codes.

    Taught in: chapters/04_in_practice.ipynb, "One table over formats".
    """

    fmt: FormatLike = "int8"
    granularity: Optional[str] = None
    group_size: Optional[int] = None
    axis: int = 0
    symmetric: bool = True
    scale_dtype: str = "fp16"

    def __post_init__(self) -> None:
        fmt = get_format(self.fmt)
        object.__setattr__(self, "fmt", fmt)
        if not isinstance(self.scale_dtype, str):
            raise TypeError(f"scale_dtype must be a string, got {type(self.scale_dtype).__name__} {self.scale_dtype!r}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype must be one of {tuple(SCALE_DTYPES)}, got {self.scale_dtype!r}")
        if self.granularity is not None and not isinstance(self.granularity, str):
            raise TypeError(
                f"granularity must be a string or None, got {type(self.granularity).__name__} {self.granularity!r}"
            )
        if self.granularity is not None and self.granularity not in ("tensor", "channel", "group"):
            raise ValueError(f"granularity must be 'tensor', 'channel', 'group' or None, got {self.granularity!r}")
        if self.group_size is not None:
            if isinstance(self.group_size, (bool, np.bool_)) or not isinstance(self.group_size, (int, np.integer)):
                raise TypeError(
                    f"group_size must be a positive int or None, got "
                    f"{type(self.group_size).__name__} {self.group_size!r}"
                )
            if self.group_size <= 0:
                raise ValueError(f"group_size must be a positive int, got {self.group_size!r}")
            object.__setattr__(self, "group_size", int(self.group_size))
        if isinstance(self.axis, (bool, np.bool_)) or not isinstance(self.axis, (int, np.integer)):
            raise TypeError(f"axis must be an int, got {type(self.axis).__name__} {self.axis!r}")
        if self.axis not in (0, 1, -1, -2):
            raise ValueError(f"axis must be 0 (output rows) or 1 (input columns), got {self.axis!r}")
        object.__setattr__(self, "axis", int(self.axis))
        object.__setattr__(self, "symmetric", check_bool(self.symmetric, "symmetric"))
        if self.is_cast and self.granularity is not None:
            raise ValueError(
                f"{fmt.name} is stored as a plain cast without scales, so granularity must be "
                f"None, got {self.granularity!r}"
            )
        if self.group_size is not None and self.resolved_granularity != "group":
            raise ValueError(f"group_size={self.group_size} needs granularity='group', got {self.granularity!r}")
        if self.resolved_granularity == "group" and self.group_size is None:
            raise ValueError("granularity='group' needs group_size, got None")
        if not self.symmetric and not isinstance(fmt, IntFormat):
            raise ValueError(f"symmetric=False (a zero point) needs an integer format, got fmt={fmt.name!r}")

    @property
    def is_cast(self) -> bool:
        """True for fp16 / bf16 / fp32: the weight is cast, no scale is stored."""
        return isinstance(self.fmt, FloatFormat) and self.fmt.bits >= 16

    @property
    def resolved_granularity(self) -> str:
        """The granularity actually used (``"tensor"`` for casts)."""
        if self.granularity is not None:
            return self.granularity
        if self.is_cast:
            return "tensor"
        return "group" if self.group_size is not None else "channel"

    @property
    def label(self) -> str:
        """A short name for tables: ``"int8 per-channel"``, ``"int4 g128"``, ``"fp16"``."""
        name = self.fmt.name
        if self.is_cast:
            return name
        g = self.resolved_granularity
        tail = f"g{self.group_size}" if g == "group" else f"per-{g}"
        return f"{name} {tail}" + ("" if self.symmetric else " asym")

    def qparams_kwargs(self) -> dict:
        """Keyword arguments for :func:`quantlab.quantize` (and GPTQ/AWQ) that match this scheme."""
        if self.is_cast:
            return {"scaled": False}
        kw = {
            "granularity": self.resolved_granularity,
            "symmetric": self.symmetric,
            "scale_dtype": self.scale_dtype,
        }
        if kw["granularity"] == "channel":
            kw["axis"] = self.axis
        if kw["granularity"] == "group":
            kw["group_size"] = self.group_size
        return kw

    def quantize(self, weight: ArrayLike, qparams: Optional[QParams] = None) -> QTensor:
        """Quantize a 2-D weight with this scheme (round-to-nearest).

        Args:
            weight: float tensor (or numpy array) of shape ``(out_features, in_features)``.
            qparams: reuse scales chosen elsewhere (e.g. by GPTQ) instead of absmax/min-max.

        Returns:
            The :class:`~quantlab.quantize.QTensor`.
        """
        if qparams is not None:
            return quantize(weight, self.fmt, qparams=qparams)
        return quantize(weight, self.fmt, **self.qparams_kwargs())


#: A scheme, or a format or its name (then ``QuantScheme(fmt)``: per-channel scales).
SchemeLike = Union[FormatLike, QuantScheme]


def as_scheme(scheme: SchemeLike) -> QuantScheme:
    """``scheme`` as a :class:`QuantScheme`: passed through, or a format (name) with the
    scheme's defaults (``QuantScheme("int4")`` is per channel with fp16 scales).

    Raises:
        TypeError: neither a QuantScheme nor a format or format name.
    """
    if isinstance(scheme, QuantScheme):
        return scheme
    if isinstance(scheme, (str, Format)):
        return QuantScheme(scheme)
    raise TypeError(f"scheme must be a QuantScheme or a format name, got {type(scheme).__name__}")
