"""The layout record of a stored layer: :class:`StoredLayout` (what a ``QuantizedLinear``
holds and in which dtypes and shapes) with :data:`FILE_VERSION`, written into
``state_dict()`` and files (:func:`encode_record` / :func:`decode_record`).

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ..core.formats import (
    FloatFormat,
    Format,
    IntFormat,
)
from ..core.quantize import SCALE_DTYPES
from .codes import format_from_record, format_record

__all__ = [
    "FILE_VERSION",
    "FILE_TAG",
    "layout_dtype_name",
    "StoredLayout",
    "record_differences",
    "encode_record",
    "decode_record",
]


#: Version of the layout record written by :func:`save_quantized` and kept in
#: ``state_dict()``; a file or state dict of another version is refused.
FILE_VERSION = 1


FILE_TAG = "quantlab.nn.save_quantized"


_DTYPE_NAMES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def layout_dtype_name(dtype: torch.dtype) -> str:
    """The name a layout record gives a torch dtype: ``torch.float16`` -> ``"float16"``."""
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class StoredLayout:
    """How a :class:`QuantizedLinear`'s buffers are to be read (everything but the bytes).

    ``scaled=False`` is a plain 16/32-bit cast (no ``scale``, granularity ``"tensor"``).
    ``symmetric`` is False only when the zero points were measured (min/max scaling).
    """

    format: Format
    shape: tuple[int, int]
    granularity: str
    axis: int
    group_size: Optional[int]
    scale_dtype: str
    scaled: bool
    zero_point: bool
    symmetric: bool
    weight_dtype: torch.dtype

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def scale_shape(self) -> Optional[tuple[int, ...]]:
        """The QTensor's scale shape: ``()``, ``(C,)`` or ``(out_features, n_groups)``."""
        if not self.scaled:
            return None
        if self.granularity == "tensor":
            return ()
        if self.granularity == "channel":
            return (self.shape[self.axis],)
        return (self.shape[0], self.shape[1] // self.group_size)

    @property
    def n_scales(self) -> int:
        shape = self.scale_shape
        return 0 if shape is None else math.prod(shape)

    def record(self) -> dict:
        """The layout as a JSON-able dict (the scheme part of a state dict or file)."""
        return {
            "format": format_record(self.format),
            "shape": list(self.shape),
            "granularity": self.granularity,
            "axis": self.axis,
            "group_size": self.group_size,
            "scale_dtype": self.scale_dtype,
            "scaled": self.scaled,
            "scale_shape": None if self.scale_shape is None else list(self.scale_shape),
            "zero_point": self.zero_point,
            "symmetric": self.symmetric,
            "weight_dtype": layout_dtype_name(self.weight_dtype),
        }

    @classmethod
    def from_record(cls, rec: Any, where: str) -> StoredLayout:
        """Read :meth:`record`'s dict back, checking every field."""
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: the layer record must be a JSON object, got {rec!r}")
        need = (
            "format",
            "shape",
            "granularity",
            "axis",
            "group_size",
            "scale_dtype",
            "scaled",
            "scale_shape",
            "zero_point",
            "symmetric",
            "weight_dtype",
        )
        missing = [k for k in need if k not in rec]
        if missing:
            raise ValueError(f"{where}: the layer record lacks {missing}")
        fmt = format_from_record(rec["format"], where)
        shape = rec["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
        ):
            raise ValueError(f"{where}: field 'shape' must be two non-negative ints, got {shape!r}")
        gran, gs = rec["granularity"], rec["group_size"]

        def bad(field: str, expected: str) -> ValueError:
            return ValueError(f"{where}: field {field!r} must be {expected}, got {rec[field]!r}")

        if not isinstance(gran, str) or gran not in ("tensor", "channel", "group"):
            raise bad("granularity", "'tensor', 'channel' or 'group'")
        if isinstance(rec["axis"], bool) or rec["axis"] not in (0, 1):
            raise bad("axis", "0 or 1")
        if not isinstance(rec["scale_dtype"], str) or rec["scale_dtype"] not in SCALE_DTYPES:
            raise bad("scale_dtype", f"one of {tuple(SCALE_DTYPES)}")
        for k in ("scaled", "zero_point", "symmetric"):
            if not isinstance(rec[k], bool):
                raise bad(k, "true or false")
        if not isinstance(rec["weight_dtype"], str) or rec["weight_dtype"] not in _DTYPE_NAMES:
            raise bad("weight_dtype", f"one of {tuple(_DTYPE_NAMES)}")
        if gran != "group" and gs is not None:
            raise bad("group_size", f"null for granularity {gran!r}")
        if gran == "group" and not (isinstance(gs, int) and not isinstance(gs, bool) and gs > 0 and shape[1] % gs == 0):
            raise bad("group_size", f"a positive int dividing in_features {shape[1]} (shape {shape})")
        layout = cls(
            fmt,
            (shape[0], shape[1]),
            gran,
            rec["axis"],
            gs,
            rec["scale_dtype"],
            rec["scaled"],
            rec["zero_point"],
            rec["symmetric"],
            _DTYPE_NAMES[rec["weight_dtype"]],
        )
        problem = layout._problem()
        if problem:
            raise ValueError(f"{where}: {problem}")
        want = None if layout.scale_shape is None else list(layout.scale_shape)
        if rec["scale_shape"] != want:
            raise ValueError(
                f"{where}: field 'scale_shape' is {rec['scale_shape']!r}, which does "
                f"not match the record's shape and granularity (expected {want!r})"
            )
        return layout

    def _problem(self) -> Optional[str]:
        """What contradicts itself in this layout (fields named), or None.

        The rules are those of the layers quantize and GPTQ/AWQ build: a cast (``scaled``
        false) is a float format, per tensor, without zero points; zero points belong to
        integer formats; signed integers have zero points exactly when not symmetric;
        unsigned integers always have them (mid-range ones when symmetric).
        """
        fmt = self.format
        if not self.scaled and not isinstance(fmt, FloatFormat):
            return f"field 'scaled' is false (a plain cast), but field 'format' is {fmt.name!r}, not a float format"
        if not self.scaled and (self.granularity != "tensor" or self.zero_point):
            return "field 'scaled' is false (a plain cast), which has no granularity and no zero points"
        if self.zero_point and not isinstance(fmt, IntFormat):
            return f"field 'zero_point' is true, but format {fmt.name!r} has no integer codes"
        if not self.symmetric and not self.zero_point:
            return "field 'symmetric' is false, but field 'zero_point' is false: min/max scaling stores zero points"
        if isinstance(fmt, IntFormat) and self.scaled:
            if fmt.signed and self.symmetric and self.zero_point:
                return (
                    f"fields 'symmetric' and 'zero_point' are both true for signed {fmt.name}: "
                    "symmetric signed codes have no zero points"
                )
            if not fmt.signed and not self.zero_point:
                return (
                    f"field 'zero_point' is false for unsigned {fmt.name}: unsigned codes are "
                    "stored with zero points (mid-range ones when symmetric)"
                )
        return None

    def describe(self) -> str:
        if not self.scaled:
            return self.format.name
        g = f"g{self.group_size}" if self.granularity == "group" else f"per-{self.granularity}"
        return f"{self.format.name} {g}"


def record_differences(ours: dict, theirs: dict, skip: Sequence[str] = ()) -> list[str]:
    """``"key: theirs in the state dict, ours in this layer"`` for every key that differs."""
    out = []
    for k in ours:
        a, b = ours.get(k), theirs.get(k)
        if k in skip or a == b:
            continue
        if k == "format":
            a = a.get("name", a) if isinstance(a, dict) else a
            b = b.get("name", b) if isinstance(b, dict) else b
        out.append(f"{k}: {b!r} in the state dict, {a!r} in this layer")
    return out


def encode_record(rec: dict) -> torch.Tensor:
    """A record as a uint8 tensor of UTF-8 JSON (so a state dict holds tensors only)."""
    data = json.dumps(rec, sort_keys=True).encode("utf-8")
    return torch.tensor(list(data), dtype=torch.uint8)


def decode_record(state: Any, where: str) -> dict:
    """The record of :func:`encode_record` (or a dict already decoded), checked for this
    :data:`FILE_VERSION` (``where`` names the layer in messages).

    Raises:
        ValueError: not UTF-8 JSON of an object, or a record of another version.
    """
    if isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1:
        try:
            rec = json.loads(bytes(state.cpu().tolist()).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: the quantization record is not valid JSON ({err})") from err
    elif isinstance(state, dict):
        rec = state
    else:
        raise ValueError(f"{where}: the quantization record must be a uint8 tensor of JSON, got {type(state).__name__}")
    if not isinstance(rec, dict) or rec.get("quantlab.nn") != FILE_VERSION:
        found = rec.get("quantlab.nn") if isinstance(rec, dict) else None
        raise ValueError(
            f"{where}: the quantization record has version {found!r}; this quantlab reads version {FILE_VERSION}"
        )
    return rec
