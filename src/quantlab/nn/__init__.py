"""Quantized ``nn.Linear`` layers that really store packed codes, and a one-call model swap.

A fake-quantized model (float weights that merely *lie on* a quantization grid) is exactly
as large as the original. Real savings need the codes packed into bytes: an int4 weight
matrix of ``out x in`` values is stored here as ``out * in / 2`` bytes plus its scales.

:class:`QuantizedLinear` stores one packed representation of its weight -- the bytes of
a :class:`~quantlab.quantize.QTensor` -- as buffers (so ``state_dict()`` carries them):

* ``packed`` -- uint8, the codes packed with :func:`quantlab.packing.pack`'s layout
  (``bits`` bits each, little-endian bitstream; 16- and 32-bit casts store the
  fp16/bf16/fp32 bit patterns, two or four bytes each);
* ``scale`` -- the scales *at their storage dtype* (fp16 by default, as most libraries
  do), in the QTensor's shape: ``()``, ``(C,)`` or ``(out_features, n_groups)``;
* ``zero_point`` -- packed like the codes (asymmetric schemes only);
* ``bias`` -- unchanged, in its original dtype;
* ``input_scale`` -- optional, float32 ``(in_features,)``: a per-input-channel factor
  applied to ``x`` first (AWQ's ``1/s`` where no preceding layer can absorb it);

plus a record of how to read them (format, shape, granularity, axis, group size, scale
dtype, ...), which ``state_dict()`` carries too (as the module's extra state), so a
checkpoint of another scheme is refused instead of decoded into garbage.

``forward`` unpacks the codes, rebuilds the weight with
:meth:`QTensor.dequantize <quantlab.quantize.QTensor.dequantize>` -- the same code that
dequantizes any QTensor -- and calls ``F.linear``; nothing dequantized is cached, so the
memory saved stays saved. On a CPU without low-bit integer kernels this is *slower* than
the fp32 layer: every call rebuilds the float weight. ``nbytes`` is the QTensor's too.

The one-call entry point is :func:`quantize_model`; :func:`size_report` measures the
bytes before and after, layer by layer; :func:`save_quantized` and
:func:`load_quantized` write the quantized layers to a ``safetensors`` file and put them
back into a float model of the same architecture::

    import quantlab as ql
    from quantlab.models import minilm
    model = ql.nn.quantize_model(minilm.load_model().encoder, "int8")  # per-channel int8
    print(ql.nn.size_report(model))

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import itertools
import json
import math
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core._backend import ArrayLike, as_tensor, like_input, read_only
from ..core.formats import (
    BlockFormat,
    CodebookFormat,
    FloatFormat,
    Format,
    FormatLike,
    IntFormat,
    get_format,
)
from ..core.packing import pack, unpack
from ..core.quantize import SCALE_DTYPES, QParams, QTensor, dequantize, quantize
from ..core.validate import check_bool, check_nonnegative_int

__all__ = [
    "QuantScheme",
    "QuantizedLinear",
    "quantize_model",
    "install_results",
    "quantized_layers",
    "linear_layers",
    "size_report",
    "SizeReport",
    "LayerSize",
    "pack_codes",
    "unpack_codes",
    "save_quantized",
    "load_quantized",
    "FILE_VERSION",
]

#: Version of the layout record written by :func:`save_quantized` and kept in
#: ``state_dict()``; a file or state dict of another version is refused.
FILE_VERSION = 1
_FILE_TAG = "quantlab.nn.save_quantized"

# 16- and 32-bit float formats whose codes are exactly the bits of a torch dtype
_TORCH_FLOATS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# integer dtypes of the same width, to move scales without converting them
_SAME_WIDTH_INT = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}




def _packed_nbytes(n: int, bits: int) -> int:
    """Bytes of ``n`` codes of ``bits`` bits packed end to end: ``ceil(n * bits / 8)``."""
    return -(-n * bits // 8)


# --------------------------------------------------------------------------- the scheme


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
            raise TypeError(f"scale_dtype must be a string, got {type(self.scale_dtype).__name__} "
                            f"{self.scale_dtype!r}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(
                f"scale_dtype must be one of {tuple(SCALE_DTYPES)}, got {self.scale_dtype!r}"
            )
        if self.granularity is not None and not isinstance(self.granularity, str):
            raise TypeError(f"granularity must be a string or None, got "
                            f"{type(self.granularity).__name__} {self.granularity!r}")
        if self.granularity is not None and self.granularity not in ("tensor", "channel", "group"):
            raise ValueError(
                f"granularity must be 'tensor', 'channel', 'group' or None, got {self.granularity!r}"
            )
        if self.group_size is not None:
            if isinstance(self.group_size, (bool, np.bool_)) or not isinstance(
                self.group_size, (int, np.integer)
            ):
                raise TypeError(f"group_size must be a positive int or None, got "
                                f"{type(self.group_size).__name__} {self.group_size!r}")
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
            raise ValueError(
                f"group_size={self.group_size} needs granularity='group', got {self.granularity!r}"
            )
        if self.resolved_granularity == "group" and self.group_size is None:
            raise ValueError("granularity='group' needs group_size, got None")
        if not self.symmetric and not isinstance(fmt, IntFormat):
            raise ValueError(
                f"symmetric=False (a zero point) needs an integer format, got fmt={fmt.name!r}"
            )

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


def _as_scheme(scheme: SchemeLike) -> QuantScheme:
    if isinstance(scheme, QuantScheme):
        return scheme
    if isinstance(scheme, (str, Format)):
        return QuantScheme(scheme)
    raise TypeError(f"scheme must be a QuantScheme or a format name, got {type(scheme).__name__}")


# --------------------------------------------------------------------------- packing


def _check_code_bits(bits: Any) -> int:
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__} {bits!r}")
    if not (1 <= bits <= 16 or bits == 32):
        raise ValueError(f"bits must be 1 to 16 or 32, got {bits!r}")
    return int(bits)


def pack_codes(codes: ArrayLike, bits: int) -> ArrayLike:
    """Pack integer codes into uint8 with :func:`quantlab.packing.pack`'s layout.

    16- and 32-bit codes (the fp16/bf16/fp32 bit patterns of a cast) are little-endian bytes,
    so they are written as an int16/int32 tensor viewed as bytes; every other width goes
    through :func:`quantlab.pack`.

    Args:
        codes: integer tensor or numpy array of any shape (flattened in C order), values
            fitting in ``bits``.
        bits: code width, 1 to 16, or 32.

    Returns:
        Flat uint8 tensor of ``ceil(codes.numel() * bits / 8)`` bytes (a numpy array for a
        numpy input).

    Raises:
        TypeError: ``codes`` is not an array/tensor; ``bits`` is not an int.
        ValueError: ``bits`` outside 1..16 and 32; codes that do not fit (from
            :func:`quantlab.pack`).
    """
    bits = _check_code_bits(bits)
    t, was_numpy = as_tensor(codes, "codes")
    flat = t.reshape(-1)
    if bits == 32:  # fp32 bit patterns (a plain fp32 "cast")
        res = flat.to(torch.int64).to(torch.int32).view(torch.uint8).clone()
    elif bits == 16:
        res = flat.to(torch.int32).to(torch.int16).view(torch.uint8).clone()
    else:
        res = pack(flat, bits)
    return like_input(res, was_numpy)


def _unpack_any_device(packed: torch.Tensor, bits: int, n: int, signed: bool) -> torch.Tensor:
    """:func:`quantlab.unpack` in plain tensor operations, for tensors off the CPU."""
    b = packed[: _packed_nbytes(n, bits)].to(torch.int32)
    dev = b.device
    if 8 % bits == 0:
        shifts = torch.arange(0, 8, bits, dtype=torch.int32, device=dev)
        u = ((b.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[:n]
    else:
        stream = ((b.unsqueeze(1) >> torch.arange(8, dtype=torch.int32, device=dev)) & 1).reshape(-1)
        stream = stream[: n * bits].reshape(n, bits)
        u = (stream << torch.arange(bits, dtype=torch.int32, device=dev)).sum(dim=1, dtype=torch.int32)
    if signed:
        u = torch.where(u >= (1 << (bits - 1)), u - (1 << bits), u)
    return u


def unpack_codes(packed: ArrayLike, bits: int, n: int, signed: bool) -> ArrayLike:
    """Inverse of :func:`pack_codes` (and of :func:`quantlab.packing.pack`).

    8-bit codes, and signed 16- and 32-bit ones, are returned as a *view* of ``packed``
    (int8/uint8, int16, int32): no copy; unsigned 16/32-bit codes are widened to
    int32/int64. Other widths go through :func:`quantlab.unpack` (int32) on
    the CPU and through the same arithmetic in tensor operations on other devices; on
    the ``meta`` device the result is an empty int32 meta tensor.

    Args:
        packed: flat uint8 tensor or numpy array.
        bits: code width, 1 to 16, or 32.
        n: number of codes to read.
        signed: sign-extend two's complement codes.

    Returns:
        Flat integer tensor of ``n`` codes (a numpy array for a numpy input).

    Raises:
        TypeError: ``packed`` is not a uint8 array/tensor; ``bits`` or ``n`` is not an int.
        ValueError: ``bits`` outside 1..16 and 32, ``n`` negative, or ``packed`` too short
            for ``n`` codes.
    """
    bits = _check_code_bits(bits)
    n = check_nonnegative_int(n, "n")
    signed = check_bool(signed, "signed")
    if isinstance(packed, torch.Tensor) and packed.is_meta:
        t, was_numpy = packed, False
    else:
        t, was_numpy = as_tensor(packed, "packed")
    if t.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got dtype {str(t.dtype).replace('torch.', '')}")
    need = _packed_nbytes(n, bits)
    if t.numel() < need:
        raise ValueError(f"packed holds {t.numel()} bytes, but {n} codes of {bits} bits need {need}")
    t = t.reshape(-1)
    if bits in (16, 32):
        seg = t[: bits // 8 * n]
        if not seg.is_contiguous() or seg.storage_offset() % (bits // 8):
            seg = seg.clone()  # a strided or misaligned view cannot be read as wider integers
        v = seg.view(torch.int32 if bits == 32 else torch.int16)
        if signed:
            res = v
        else:
            res = v.to(torch.int64) & 0xFFFFFFFF if bits == 32 else v.to(torch.int32) & 0xFFFF
    elif bits == 8:
        res = t[:n].view(torch.int8) if signed else t[:n]
    elif t.is_meta:
        res = torch.empty(n, dtype=torch.int32, device="meta")
    elif t.device.type != "cpu":
        res = _unpack_any_device(t, bits, n, signed)
    else:
        res = unpack(t, bits, n, signed=signed)
    return like_input(res, was_numpy)


# --------------------------------------------------------------------------- formats on file


def _format_record(fmt: Format) -> dict:
    """A JSON-able description of ``fmt``: its name if :func:`get_format` knows it, else
    its fields (custom codebooks and float layouts)."""
    try:
        if get_format(fmt.name) == fmt:
            return {"name": fmt.name}
    except (TypeError, ValueError):
        pass
    kinds = {IntFormat: "int", FloatFormat: "float", CodebookFormat: "codebook"}
    kind = kinds.get(type(fmt))
    if kind is None:
        raise TypeError(f"format {fmt.name!r} of type {type(fmt).__name__} cannot be recorded; "
                        "use an IntFormat, FloatFormat or CodebookFormat")
    rec = {"kind": kind}
    for f in dataclasses.fields(fmt):
        v = getattr(fmt, f.name)
        rec[f.name] = list(v) if isinstance(v, tuple) else v
    return rec


def _format_from_record(rec: Any, where: str) -> Format:
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: field 'format' must be a JSON object, got {rec!r}")
    try:
        if set(rec) == {"name"}:
            fmt = get_format(rec["name"])
        else:
            cls = {"int": IntFormat, "float": FloatFormat, "codebook": CodebookFormat}[rec["kind"]]
            kw = {k: v for k, v in rec.items() if k != "kind"}
            if "table" in kw:
                kw["table"] = tuple(float(v) for v in kw["table"])
            fmt = cls(**kw)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: field 'format' is unreadable: {rec!r} ({err})") from err
    problem = _format_problem(fmt)
    if problem:
        raise ValueError(f"{where}: field 'format' describes {problem}")
    return fmt


def _format_problem(fmt: Format) -> Optional[str]:
    """Why ``fmt`` cannot describe stored codes (its bits against its layout), or None."""
    if isinstance(fmt, BlockFormat):
        return f"the block-scaled format {fmt.name!r}, which QuantizedLinear does not store"
    if not isinstance(fmt.name, str) or not isinstance(fmt.bits, int) or isinstance(fmt.bits, bool):
        return f"a format with name {fmt.name!r} and bits {fmt.bits!r}"
    if isinstance(fmt, FloatFormat):
        if fmt.bits != 1 + fmt.ebits + fmt.mbits:
            return (f"a float format {fmt.name!r} of {fmt.bits} bits whose layout has "
                    f"1 + {fmt.ebits} + {fmt.mbits} = {1 + fmt.ebits + fmt.mbits} bits")
        if not (fmt.bits <= 16 or fmt.bits == 32):
            return f"a float format {fmt.name!r} of {fmt.bits} bits (stored: 1 to 16, or 32)"
        if not 0 <= fmt._nan_code < (1 << fmt.bits):
            return f"a float format {fmt.name!r} whose NaN code {fmt._nan_code} has more than {fmt.bits} bits"
    if isinstance(fmt, CodebookFormat):
        t = fmt.table
        if len(t) < 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and math.isfinite(v) for v in t):
            return f"a codebook {fmt.name!r} that is not 2 or more finite values"
        if any(b <= a for a, b in itertools.pairwise(t)):
            return f"a codebook {fmt.name!r} whose table is not strictly ascending"
        need = max(1, math.ceil(math.log2(len(t))))
        if fmt.bits != need:
            return (f"a codebook {fmt.name!r} of {len(t)} entries stored in {fmt.bits}-bit codes "
                    f"({len(t)} entries take {need} bits)")
    return None


# --------------------------------------------------------------------------- decoding on device

_DECODERS: dict[tuple[Format, torch.device], Format] = {}
_DECODER_CLASSES: dict[type, type] = {}


def _decoder_class(cls: type) -> type:
    """A subclass of a float or codebook format class whose ``decode`` reads a table (or
    the bits of a torch dtype) on the codes' own device."""
    if cls not in _DECODER_CLASSES:

        def decode(self: Format, codes: torch.Tensor) -> torch.Tensor:
            view = self.__dict__["_view_dtype"]
            if view is not None:  # fp16 / bf16 / fp32: the codes are that dtype's bits
                return codes.view(view).to(torch.float32, copy=True)
            return self.__dict__["_table"].take(codes.long())  # a copy, never a view

        _DECODER_CLASSES[cls] = type(f"{cls.__name__}OnDevice", (cls,), {"decode": decode})
    return _DECODER_CLASSES[cls]


def _decoder(fmt: Format, device: torch.device) -> Format:
    """``fmt`` itself for integers; for float and codebook formats, an equal format whose
    ``decode`` gives the same float32 values as ``fmt.decode`` but runs on ``device``
    (its lookup table is copied there once and kept)."""
    if isinstance(fmt, IntFormat):
        return fmt
    key = (fmt, device)
    if key not in _DECODERS:
        sub = _decoder_class(type(fmt))
        dec = sub(**{f.name: getattr(fmt, f.name) for f in dataclasses.fields(fmt) if f.init})
        view = _TORCH_FLOATS.get(fmt.name) if isinstance(fmt, FloatFormat) else None
        if view is not None and get_format(fmt.name) != fmt:
            view = None
        table = None
        if view is None:
            n = len(fmt.table) if isinstance(fmt, CodebookFormat) else 1 << fmt.bits
            table = read_only(fmt.decode(torch.arange(n)).to(torch.float32).to(device))
        object.__setattr__(dec, "_view_dtype", view)
        object.__setattr__(dec, "_table", table)
        _DECODERS[key] = dec
    return _DECODERS[key]


# --------------------------------------------------------------------------- the stored layout

_DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "float64": torch.float64}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class _Layout:
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
            "format": _format_record(self.format),
            "shape": list(self.shape),
            "granularity": self.granularity,
            "axis": self.axis,
            "group_size": self.group_size,
            "scale_dtype": self.scale_dtype,
            "scaled": self.scaled,
            "scale_shape": None if self.scale_shape is None else list(self.scale_shape),
            "zero_point": self.zero_point,
            "symmetric": self.symmetric,
            "weight_dtype": _dtype_name(self.weight_dtype),
        }

    @classmethod
    def from_record(cls, rec: Any, where: str) -> _Layout:
        """Read :meth:`record`'s dict back, checking every field."""
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: the layer record must be a JSON object, got {rec!r}")
        need = ("format", "shape", "granularity", "axis", "group_size", "scale_dtype", "scaled",
                "scale_shape", "zero_point", "symmetric", "weight_dtype")
        missing = [k for k in need if k not in rec]
        if missing:
            raise ValueError(f"{where}: the layer record lacks {missing}")
        fmt = _format_from_record(rec["format"], where)
        shape = rec["shape"]
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
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
        if gran == "group" and not (isinstance(gs, int) and not isinstance(gs, bool) and gs > 0
                                    and shape[1] % gs == 0):
            raise bad("group_size", f"a positive int dividing in_features {shape[1]} (shape {shape})")
        layout = cls(fmt, (shape[0], shape[1]), gran, rec["axis"], gs,
                     rec["scale_dtype"], rec["scaled"], rec["zero_point"], rec["symmetric"],
                     _DTYPE_NAMES[rec["weight_dtype"]])
        problem = layout._problem()
        if problem:
            raise ValueError(f"{where}: {problem}")
        want = None if layout.scale_shape is None else list(layout.scale_shape)
        if rec["scale_shape"] != want:
            raise ValueError(f"{where}: field 'scale_shape' is {rec['scale_shape']!r}, which does "
                             f"not match the record's shape and granularity (expected {want!r})")
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
                return (f"fields 'symmetric' and 'zero_point' are both true for signed {fmt.name}: "
                        "symmetric signed codes have no zero points")
            if not fmt.signed and not self.zero_point:
                return (f"field 'zero_point' is false for unsigned {fmt.name}: unsigned codes are "
                        "stored with zero points (mid-range ones when symmetric)")
        return None

    def describe(self) -> str:
        if not self.scaled:
            return self.format.name
        g = f"g{self.group_size}" if self.granularity == "group" else f"per-{self.granularity}"
        return f"{self.format.name} {g}"


def _differences(ours: dict, theirs: dict, skip: Sequence[str] = ()) -> list[str]:
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


def _encode_record(rec: dict) -> torch.Tensor:
    """A record as a uint8 tensor of UTF-8 JSON (so a state dict holds tensors only)."""
    data = json.dumps(rec, sort_keys=True).encode("utf-8")
    return torch.tensor(list(data), dtype=torch.uint8)


def _decode_record(state: Any, where: str) -> dict:
    if isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1:
        try:
            rec = json.loads(bytes(state.cpu().tolist()).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: the quantization record is not valid JSON ({err})") from err
    elif isinstance(state, dict):
        rec = state
    else:
        raise ValueError(f"{where}: the quantization record must be a uint8 tensor of JSON, got "
                         f"{type(state).__name__}")
    if not isinstance(rec, dict) or rec.get("quantlab.nn") != FILE_VERSION:
        found = rec.get("quantlab.nn") if isinstance(rec, dict) else None
        raise ValueError(f"{where}: the quantization record has version {found!r}; this quantlab "
                         f"reads version {FILE_VERSION}")
    return rec


# --------------------------------------------------------------------------- the layer


def _check_dense(t: torch.Tensor, name: str) -> None:
    """Refuse sparse tensors (TypeError) and tensors without values on the meta device."""
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {t.layout} (call .to_dense() first)")
    if t.is_meta:
        raise ValueError(f"{name} is on the meta device and holds no values; materialize it "
                         "first (e.g. to_empty() and load_state_dict())")


class QuantizedLinear(nn.Module):
    """A Linear layer whose weight is stored as packed low-bit codes plus scales.

    ``y = x @ W_hat^T + b`` with ``W_hat = (code - zero_point) * scale`` (integer formats)
    or ``decode(code) * scale`` (float and codebook formats), rebuilt on every call by
    :meth:`QTensor.dequantize <quantlab.quantize.QTensor.dequantize>` from the unpacked
    codes (see :meth:`dequantize_weight`).

    Build one with :meth:`from_linear` (round-to-nearest with a :class:`QuantScheme`),
    :meth:`from_qtensor` (codes and scales computed elsewhere, e.g. by GPTQ) or
    :meth:`from_weight` (a weight already on a known grid, with its ``QParams``).

    Devices and dtypes: ``.to(device)`` moves every buffer (``.to("meta")`` too; then
    ``to_empty()`` and ``load_state_dict()`` give the layer back); decoding tables of
    float and codebook formats are kept per device. ``.to(dtype)`` / ``.half()`` convert
    ``bias`` and ``input_scale`` like ``nn.Linear``'s parameters, while the codes and the
    scales keep their storage dtypes (part of the scheme); ``forward`` computes in the
    input's dtype.

    ``state_dict()`` holds the buffers and, as extra state, the layout record (format,
    shape, granularity, axis, group size, scale dtype, ...) as a uint8 tensor of JSON;
    ``load_state_dict`` refuses a state dict of another layout with a ValueError that
    names the layer and what differs, before copying anything.

    Attributes:
        in_features, out_features: as for ``nn.Linear``.
        format: the number format of the codes.
        granularity, axis, group_size, scale_dtype: how the scales are shared and stored.
        symmetric: False when zero points were measured (min/max scaling).
        weight_dtype: dtype of the original weight (what :meth:`dequantize_weight` returns).
        packed: uint8 buffer of the packed codes.
        scale: buffer of scales at ``scale_dtype`` (absent for 16/32-bit casts).
        zero_point: uint8 buffer of packed zero points, or None.
        bias: float buffer or None.
        input_scale: float32 buffer ``(in_features,)`` multiplying the input, or None.

    Taught in: chapters/04_in_practice.ipynb, "Real savings need packed storage".
    """

    def __init__(
        self,
        qt: QTensor,
        bias: Optional[torch.Tensor] = None,
        input_scale: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        if not isinstance(qt, QTensor):
            raise TypeError(f"qt must be a QTensor, got {type(qt).__name__}")
        if len(qt.shape) != 2:
            raise ValueError(f"qt must hold a 2-D weight (out_features, in_features), got shape {qt.shape}")
        if not isinstance(qt.codes, torch.Tensor):
            raise TypeError(f"qt.codes must be a torch.Tensor, got {type(qt.codes).__name__}")
        _check_dense(qt.codes, "qt.codes")
        if qt.zero_point is not None and qt.zero_point.is_floating_point():
            raise ValueError(
                "qt has real-valued zero points (HQQ's), which QuantizedLinear does not store: "
                "it packs integer zero points like the codes; use qt.dequantize() as a float "
                "weight instead"
            )
        fmt = qt.format
        out_f, in_f = (int(s) for s in qt.shape)
        scaled = qt.scale is not None
        granularity = qt.granularity if scaled else "tensor"
        axis = int(qt.axis) % 2 if scaled and granularity == "channel" else 0
        if isinstance(fmt, IntFormat) and not fmt.signed and qt.zero_point is not None:
            mid = (fmt.qmax + fmt.qmin + 1) // 2  # symmetric unsigned: the fixed mid-range zero
            symmetric = bool((qt.zero_point == mid).all())
        else:
            symmetric = qt.zero_point is None
        layout = _Layout(fmt, (out_f, in_f), granularity, axis,
                         qt.group_size if granularity == "group" else None, qt.scale_dtype,
                         scaled, qt.zero_point is not None, symmetric, qt.dtype)
        problem = _format_problem(fmt) or layout._problem()
        if problem:
            raise ValueError(f"qt cannot be stored: {problem}")
        packed = pack_codes(qt.codes, fmt.bits)
        scale = None if qt.scale is None else qt.scale.to(SCALE_DTYPES[qt.scale_dtype]).contiguous()
        zp = None if qt.zero_point is None else pack_codes(qt.zero_point, fmt.bits)
        self._install(layout, packed, scale, zp, bias, input_scale)

    def _install(
        self,
        layout: _Layout,
        packed: torch.Tensor,
        scale: Optional[torch.Tensor],
        zero_point: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        input_scale: Optional[torch.Tensor],
    ) -> None:
        """Check the bias and input scale against ``layout`` and register every buffer."""
        out_f, in_f = layout.shape
        if bias is not None:
            if not isinstance(bias, torch.Tensor):
                raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
            _check_dense(bias, "bias")
            if tuple(bias.shape) != (out_f,):
                raise ValueError(f"bias must have shape ({out_f},), got {tuple(bias.shape)}")
        if input_scale is not None:
            if not isinstance(input_scale, torch.Tensor):
                raise TypeError(f"input_scale must be a torch.Tensor or None, got {type(input_scale).__name__}")
            _check_dense(input_scale, "input_scale")
            if tuple(input_scale.shape) != (in_f,):
                raise ValueError(f"input_scale must have shape ({in_f},), got {tuple(input_scale.shape)}")
        self._layout = layout
        self.register_buffer("packed", packed)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer(
            "input_scale", None if input_scale is None else input_scale.detach().float().clone()
        )

    # ---- constructors
    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: SchemeLike = "int8") -> QuantizedLinear:
        """Round-to-nearest quantize an ``nn.Linear`` with a scheme.

        Args:
            linear: the layer; its weight must be a dense tensor holding values (not on
                the ``meta`` device). ``out_features`` or ``in_features`` may be 0.
            scheme: a :class:`QuantScheme` or a format name.

        Returns:
            The quantized layer (the bias is copied).

        Raises:
            TypeError: ``linear`` is not an ``nn.Linear``; a sparse weight or bias.
            ValueError: a weight on the meta device; what :func:`quantlab.quantize` raises
                (e.g. a group size that does not divide ``in_features``).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        scheme = _as_scheme(scheme)
        _check_dense(linear.weight, "linear.weight")
        if linear.bias is not None:
            _check_dense(linear.bias, "linear.bias")
        qt = scheme.quantize(linear.weight.detach())
        return cls(qt, None if linear.bias is None else linear.bias.detach())

    @classmethod
    def from_qtensor(
        cls,
        qt: QTensor,
        bias: Optional[torch.Tensor] = None,
        input_scale: Optional[torch.Tensor] = None,
    ) -> QuantizedLinear:
        """Store a :class:`QTensor` of shape ``(out_features, in_features)`` (e.g. GPTQ's result).

        Args:
            qt: the quantized weight.
            bias: ``(out_features,)`` or None.
            input_scale: ``(in_features,)`` multiplier applied to the input first (AWQ's
                ``1/s`` when it cannot be folded into a preceding layer), or None.

        Returns:
            The layer.
        """
        return cls(qt, bias, input_scale)

    @classmethod
    def from_weight(
        cls,
        weight: ArrayLike,
        qparams: QParams,
        bias: Optional[torch.Tensor] = None,
    ) -> QuantizedLinear:
        """Store a weight that already lies on a quantization grid (e.g. GPTQ's dequantized
        output) together with the ``QParams`` that define that grid.

        The codes are recovered with ``quantize(weight, qparams=qparams)``; for a weight on
        the grid this is exact, so ``dequantize_weight()`` gives ``weight`` back.

        Args:
            weight: float tensor or numpy array ``(out_features, in_features)``.
            qparams: the grid.
            bias: ``(out_features,)`` tensor or None.

        Returns:
            The layer (a torch module whatever the kind of ``weight``).
        """
        if not isinstance(qparams, QParams):
            raise TypeError(f"qparams must be a QParams, got {type(qparams).__name__}")
        if isinstance(weight, torch.Tensor):
            weight = weight.detach()
        return cls(quantize(weight, qparams.format, qparams=qparams), bias)

    # ---- the layout, as attributes
    @property
    def format(self) -> Format:
        return self._layout.format

    @property
    def in_features(self) -> int:
        return self._layout.shape[1]

    @property
    def out_features(self) -> int:
        return self._layout.shape[0]

    @property
    def granularity(self) -> str:
        return self._layout.granularity

    @property
    def axis(self) -> int:
        return self._layout.axis

    @property
    def group_size(self) -> Optional[int]:
        return self._layout.group_size

    @property
    def scale_dtype(self) -> str:
        return self._layout.scale_dtype

    @property
    def symmetric(self) -> bool:
        return self._layout.symmetric

    @property
    def weight_dtype(self) -> torch.dtype:
        return self._layout.weight_dtype

    @property
    def scheme(self) -> QuantScheme:
        """The :class:`QuantScheme` that describes this layer's storage."""
        L = self._layout
        if not L.scaled:
            return QuantScheme(L.format)
        return QuantScheme(L.format, L.granularity, L.group_size, L.axis, L.symmetric, L.scale_dtype)

    # ---- storage
    def _qtensor(self, dtype: torch.dtype, codes: torch.Tensor, fmt: Format) -> QTensor:
        """The stored weight as a QTensor around ``codes`` (shape ``(out, in)``)."""
        L = self._layout
        zp = None
        if self.zero_point is not None:
            zp = unpack_codes(self.zero_point, L.format.bits, L.n_scales,
                              isinstance(L.format, IntFormat) and L.format.signed)
            zp = zp.to(torch.int32).reshape(L.scale_shape)
        scale = None if self.scale is None else self.scale.float()
        return QTensor(codes, scale, zp, fmt, L.shape, L.granularity, L.axis, L.group_size,
                       L.scale_dtype, dtype, False)

    def _header(self) -> QTensor:
        """The QTensor with placeholder (meta) codes: enough for its byte counts."""
        L = self._layout
        codes = torch.empty(L.shape, dtype=L.format.code_dtype, device="meta")
        zp = None if not L.zero_point else torch.empty(L.scale_shape, dtype=torch.int32, device="meta")
        return QTensor(codes, self.scale, zp, L.format, L.shape, L.granularity, L.axis,
                       L.group_size, L.scale_dtype, L.weight_dtype, False)

    @property
    def weight_nbytes(self) -> int:
        """Bytes of the stored weight: packed codes + scales + packed zero points.

        This is :attr:`QTensor.nbytes <quantlab.quantize.QTensor.nbytes>` of the stored
        weight, which equals the memory calculator's
        ``weight_bytes(numel, fmt, group_size, scale_dtype)`` for whole groups and the
        bytes of the ``packed``, ``scale`` and ``zero_point`` buffers.
        """
        return int(self._header().nbytes)

    @property
    def nbytes(self) -> int:
        """Bytes of everything the layer stores: the weight (:attr:`weight_nbytes`), the bias
        and the input scale (if any)."""
        extra = sum(t.numel() * t.element_size() for t in (self.bias, self.input_scale) if t is not None)
        return self.weight_nbytes + int(extra)

    @property
    def bits_per_weight(self) -> float:
        """``8 * weight_nbytes / (out_features * in_features)`` (the format's bits for an
        empty layer), as :attr:`QTensor.bits_per_weight <quantlab.quantize.QTensor.bits_per_weight>`."""
        return float(self._header().bits_per_weight)

    def _codes(self, signed: bool) -> torch.Tensor:
        L = self._layout
        return unpack_codes(self.packed, L.format.bits, L.numel, signed).reshape(L.shape)

    def codes(self) -> torch.Tensor:
        """The unpacked codes, shape ``(out_features, in_features)``, as
        :func:`unpack_codes` returns them (a view of ``packed`` for 8-bit codes)."""
        fmt = self.format
        return self._codes(isinstance(fmt, IntFormat) and fmt.signed)

    def to_qtensor(self) -> QTensor:
        """The stored weight as a :class:`QTensor` (codes unpacked and copied, scales as
        float32, zero points as int32)."""
        fmt = self.format
        return self._qtensor(self.weight_dtype, self.codes().to(fmt.code_dtype, copy=True), fmt)

    def dequantize_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Rebuild the float weight ``(out_features, in_features)`` from the packed codes.

        The codes are unpacked on the buffers' device and handed, with the scales and zero
        points, to :func:`quantlab.dequantize` (a :class:`QTensor` whose format decodes on
        that device): ``W_hat = (code - zero_point) * scale`` or ``decode(code) * scale``,
        computed as :meth:`QTensor.dequantize` computes it. On the ``meta`` device the
        result is an empty meta tensor of the right shape and dtype.

        Args:
            dtype: result dtype (default: the original weight's dtype).

        Returns:
            A new float tensor of shape ``(out_features, in_features)``.
        """
        dtype = dtype or self.weight_dtype
        if self.packed.is_meta:
            return torch.empty(self._layout.shape, dtype=dtype, device="meta")
        fmt = self.format
        dec = _decoder(fmt, self.packed.device)
        # integers: sign-extended codes; fp16/bf16/fp32: the dtype's bits (int16/int32 views)
        signed = fmt.signed if isinstance(fmt, IntFormat) else getattr(dec, "_view_dtype", None) is not None
        return dequantize(self._qtensor(dtype, self._codes(signed), dec))

    # ---- devices, dtypes, state dicts
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> QuantizedLinear:
        # the scales follow the device but keep their storage dtype: they go through fn as
        # integers of the same width (which .to(dtype) / .half() leave alone)
        scale = self._buffers.get("scale")
        if scale is not None and scale.dtype in _SAME_WIDTH_INT:
            self._buffers["scale"] = scale.view(_SAME_WIDTH_INT[scale.dtype])
        try:
            super()._apply(fn, recurse)
        finally:
            moved = self._buffers.get("scale")
            if scale is not None and moved is not None and moved.dtype != scale.dtype:
                self._buffers["scale"] = moved.view(scale.dtype)
        return self

    def _record(self) -> dict:
        rec = {"quantlab.nn": FILE_VERSION, **self._layout.record()}
        rec["bias"] = self.bias is not None
        rec["input_scale"] = self.input_scale is not None
        return rec

    def get_extra_state(self) -> torch.Tensor:
        """The layout record (format, shape, granularity, axis, group size, scale dtype,
        symmetric, weight dtype, version) as a uint8 tensor of UTF-8 JSON."""
        return _encode_record(self._record())

    def _check_record(self, rec: dict, where: str) -> None:
        diff = _differences(self._record(), rec, skip=("weight_dtype", "symmetric"))
        if diff:
            theirs = _Layout.from_record(rec, where).describe() if "format" in rec else "?"
            raise ValueError(
                f"{where}: the state dict holds a {theirs} layer, this layer is "
                f"{self._layout.describe()} ({'; '.join(diff)}). Quantize the model with the "
                "checkpoint's scheme first"
            )
        _Layout.from_record(rec, where)

    def set_extra_state(self, state: Any) -> None:
        """Accept the layout record of a state dict if it matches this layer's layout.

        Raises:
            ValueError: a record of another version, format, shape, granularity, axis,
                group size, scale dtype, zero point, bias or input scale.
        """
        rec = _decode_record(state, "QuantizedLinear")
        self._check_record(rec, "QuantizedLinear")
        theirs = _Layout.from_record(rec, "QuantizedLinear")
        self._layout = dataclasses.replace(self._layout, weight_dtype=theirs.weight_dtype,
                                          symmetric=theirs.symmetric)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        key = prefix + "_extra_state"
        where = f"layer {prefix[:-1]!r}" if prefix else "QuantizedLinear"
        if key in state_dict:  # check the layout before any buffer is overwritten
            self._check_record(_decode_record(state_dict[key], where), where)
        scale = state_dict.get(prefix + "scale")
        if isinstance(scale, torch.Tensor) and not scale.is_meta and scale.numel():
            s = scale.float()
            if not bool((torch.isfinite(s) & (s > 0)).all()):
                raise ValueError(f"{where}: the state dict's 'scale' must hold finite positive "
                                 f"scales, got {s[~(torch.isfinite(s) & (s > 0))][:4].tolist()}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ---- compute
    def forward(self, x: ArrayLike) -> ArrayLike:
        """``F.linear(x * input_scale, dequantize_weight(x.dtype), bias)``; the float weight
        is not kept.

        Args:
            x: float tensor ``(..., in_features)``; a numpy array gives a numpy array.

        Returns:
            ``(..., out_features)`` in ``x``'s dtype and kind.

        Raises:
            ValueError: ``x`` whose last dimension is not ``in_features`` (the message
                names the layer's shape and format). TypeError: a non-float ``x``.
        """
        was_numpy = False
        if not isinstance(x, torch.Tensor):
            x, was_numpy = as_tensor(x)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"QuantizedLinear(in_features={self.in_features}, out_features="
                f"{self.out_features}, format={self.format.name}) takes x of shape "
                f"(..., {self.in_features}), got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"QuantizedLinear takes a float x, got dtype "
                            f"{str(x.dtype).replace('torch.', '')}")
        w = self.dequantize_weight(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype)
        y = F.linear(x, w, b)
        return like_input(y, was_numpy) if was_numpy else y

    def extra_repr(self) -> str:
        g = self.granularity if self.granularity != "group" else f"group {self.group_size}"
        if self.scale is None:
            g = "cast"
        tail = ", input_scale" if self.input_scale is not None else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self.format.name}, {g}, bits_per_weight={self.bits_per_weight:.3f}{tail}")


# --------------------------------------------------------------------------- whole models


SkipLike = Union[Sequence[str], Callable[[str, nn.Module], bool], None]


def _skipper(skip: SkipLike) -> Callable[[str, nn.Module], bool]:
    if skip is None:
        return lambda name, mod: False
    if callable(skip):
        return skip
    if isinstance(skip, str):
        skip = (skip,)
    if not all(isinstance(p, str) for p in skip):
        raise TypeError(f"skip must be glob patterns (strings), a callable or None, got {skip!r}")
    pats = tuple(skip)
    return lambda name, mod: any(fnmatch.fnmatchcase(name, p) for p in pats)


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``(name, module)`` for every ``nn.Linear`` in ``model``, in module order.

    A module registered under several names is listed once, under its first name.
    """
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantizedLinear]]:
    """``(name, module)`` for every :class:`QuantizedLinear` in ``model`` (each once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]


def _names_by_module(model: nn.Module, kind: type) -> dict[int, tuple[nn.Module, list[str]]]:
    """``id(module) -> (module, every name it is registered under)`` for modules of ``kind``,
    in module order: a module shared by two parents has two names."""
    found: dict[int, tuple[nn.Module, list[str]]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, kind):
            found.setdefault(id(m), (m, []))[1].append(n)
    return found


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _naming(err: Exception, name: str) -> Exception:
    """``err`` again, of the same type, with the layer's name in front of its message."""
    try:
        named = type(err)(f"layer {name!r}: {err}")
    except Exception:  # an exception type with other constructor arguments
        err.add_note(f"(raised while quantizing layer {name!r})")
        return err
    return named


def quantize_model(
    model: nn.Module,
    scheme: SchemeLike = "int8",
    *,
    skip: SkipLike = ("lm_head",),
    inplace: bool = True,
    progress: bool = True,
    layer_fn: Optional[Callable[[str, nn.Linear], QuantizedLinear]] = None,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`QuantizedLinear`.

    A Linear module registered under several names (one module object shared by two
    parents) is quantized once and the one :class:`QuantizedLinear` replaces it under
    every name, so the model keeps sharing it and :func:`size_report` counts it once. It
    is skipped if any of its names is.

    Args:
        model: any torch module (a whole model or a part, e.g. ``bert.encoder``). A bare
            ``nn.Linear`` is returned as a new :class:`QuantizedLinear`.
        scheme: a :class:`QuantScheme` or a format name (``"int8"`` = per-channel int8,
            fp16 scales).
        skip: glob patterns of layer names to keep in full precision (default
            ``("lm_head",)``: a language model's output head, often tied to its
            embeddings), a callable ``(name, module) -> bool``, or None.
        inplace: modify ``model`` (default) or a deep copy of it.
        progress: show a tqdm progress bar over the layers.
        layer_fn: build each layer yourself, ``(name, linear) -> QuantizedLinear`` (e.g. a
            GPTQ or AWQ quantizer); default ``QuantizedLinear.from_linear(linear, scheme)``.

    Returns:
        The quantized model (``model`` itself when ``inplace``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; bad ``scheme``, ``skip`` or
            ``inplace``; ``layer_fn`` returned something else than a module.
        ValueError: no Linear layer is left to quantize.
        Exception: an error raised while quantizing one layer is raised again with the
            same type and the layer's name in front of its message (the original is its
            ``__cause__``).

    Taught in: chapters/04_in_practice.ipynb, "A five-line recipe".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    scheme = _as_scheme(scheme)
    skipped = _skipper(skip)
    inplace = check_bool(inplace, "inplace")
    if not inplace:
        model = copy.deepcopy(model)
    targets = [(names, m) for m, names in _names_by_module(model, nn.Linear).values()
               if not any(skipped(n, m) for n in names)]
    if not targets:
        raise ValueError("model has no nn.Linear layer to quantize (after skip)")
    if layer_fn is None:
        layer_fn = lambda name, lin: QuantizedLinear.from_linear(lin, scheme)  # noqa: E731
    from tqdm.auto import tqdm

    for names, lin in tqdm(targets, desc=f"quantizing to {scheme.label}", disable=not progress,
                           leave=False):
        try:
            new = layer_fn(names[0], lin)
        except Exception as err:
            named = _naming(err, names[0])
            if named is err:
                raise
            raise named from err
        if not isinstance(new, nn.Module):
            raise TypeError(f"layer_fn must return an nn.Module, got {type(new).__name__} "
                            f"for layer {names[0]!r}")
        if names == [""]:  # the model is the Linear itself
            return new
        for name in names:
            _set_module(model, name, new)
    return model


def install_results(model: nn.Module, results: Mapping[str, object]) -> nn.Module:
    """Store the results of GPTQ, AWQ (or any QTensors) as packed layers of ``model``.

    Each ``nn.Linear`` named in ``results`` is replaced, in place, by a
    :class:`QuantizedLinear` holding the result's codes and scales and the layer's bias
    (under every name of a Linear module registered under several names). Accepted values:

    * a :class:`~quantlab.quantize.QTensor`;
    * an object with ``.qtensor`` (e.g. :class:`quantlab.gptq.GPTQResult`);
    * an object with ``.qtensors`` and ``.inv_scale`` (:class:`quantlab.awq.AWQResult`):
      layers that share one result object (searched together) take its ``qtensors`` in
      the order their names appear in ``results``, and the layer multiplies its input by
      ``inv_scale`` (``1/s``), which is stored with it and counted in :attr:`~QuantizedLinear.nbytes`.

    Args:
        model: the module the names refer to (the one GPTQ/AWQ was run on).
        results: ``{layer name: result}``, e.g. from ``gptq_quantize_model`` or
            ``awq_quantize_model``.

    Returns:
        ``model``.

    Raises:
        ValueError: a name that is not an ``nn.Linear`` of ``model``, two names of one
            shared module, or a weight whose shape does not match its layer.
        TypeError: a value of another kind.

    Taught in: chapters/04_in_practice.ipynb, "One table over formats".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a mapping of layer names to results, got {type(results).__name__}")
    names_of = {}
    for m, names in _names_by_module(model, nn.Module).values():
        for n in names:
            names_of[n] = (m, names)
    used: dict[int, int] = {}
    done: dict[int, str] = {}
    for name, r in results.items():
        lin, names = names_of.get(name, (None, []))
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"results name {name!r}, which is not an nn.Linear of the model")
        if id(lin) in done:
            raise ValueError(f"results names {done[id(lin)]!r} and {name!r} are the same shared "
                             "module; give one result for it")
        input_scale = None
        if isinstance(r, QTensor):
            qt = r
        elif hasattr(r, "qtensors") and hasattr(r, "inv_scale"):
            k = used.get(id(r), 0)
            used[id(r)] = k + 1
            qt = r.qtensors[k]
            input_scale = r.inv_scale
        elif isinstance(getattr(r, "qtensor", None), QTensor):
            qt = r.qtensor
        else:
            raise TypeError(
                f"results[{name!r}] must be a QTensor or a GPTQ/AWQ result, got {type(r).__name__}"
            )
        if tuple(qt.shape) != tuple(lin.weight.shape):
            raise ValueError(
                f"results[{name!r}] holds a weight of shape {tuple(qt.shape)}, but the layer's is "
                f"{tuple(lin.weight.shape)}"
            )
        bias = None if lin.bias is None else lin.bias.detach()
        new = QuantizedLinear(qt, bias, input_scale)
        done[id(lin)] = name
        for n in names:
            _set_module(model, n, new)
    return model


@dataclass(frozen=True)
class LayerSize:
    """Bytes of one layer before and after quantization (weight and bias)."""

    name: str
    shape: tuple[int, int]
    before: int
    after: int
    bits_per_weight: float


@dataclass(frozen=True)
class SizeReport:
    """Bytes of a model, layer by layer.

    Attributes:
        layers: one :class:`LayerSize` per Linear / QuantizedLinear layer.
        other: bytes of every other parameter and buffer (embeddings, norms), unchanged.
    """

    layers: tuple[LayerSize, ...]
    other: int

    @property
    def linear_before(self) -> int:
        return sum(r.before for r in self.layers)

    @property
    def linear_after(self) -> int:
        return sum(r.after for r in self.layers)

    @property
    def total_before(self) -> int:
        """Bytes of the whole model with every Linear layer at its original dtype."""
        return self.linear_before + self.other

    @property
    def total_after(self) -> int:
        """Bytes of the whole model as stored now."""
        return self.linear_after + self.other

    def __str__(self) -> str:
        lines = [f"{'layer':<44} {'shape':>11} {'before MB':>10} {'after MB':>9} {'bits/w':>7}"]
        for r in self.layers:
            lines.append(f"{r.name:<44} {r.shape[0]:>5}x{r.shape[1]:<5} {r.before / 1e6:>10.3f} "
                         f"{r.after / 1e6:>9.3f} {r.bits_per_weight:>7.3f}")
        lines.append(f"{'Linear layers':<56} {self.linear_before / 1e6:>10.3f} {self.linear_after / 1e6:>9.3f}")
        lines.append(f"{'other parameters and buffers':<56} {self.other / 1e6:>10.3f} {self.other / 1e6:>9.3f}")
        lines.append(f"{'total':<56} {self.total_before / 1e6:>10.3f} {self.total_after / 1e6:>9.3f}")
        return "\n".join(lines)


def _tensor_bytes(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def size_report(model: nn.Module) -> SizeReport:
    """Measure a model's storage: bytes per Linear layer before and after, and in total.

    "Before" is the original layer (weight at its original dtype, plus bias); "after" is
    what is stored now: :attr:`QuantizedLinear.nbytes` for quantized layers, the same as
    before for layers left in full precision. A layer registered under several names is
    one row (under its first name); every other parameter and buffer counts once, under
    ``other`` (shared tensors, such as tied embeddings, are counted once).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Taught in: chapters/04_in_practice.ipynb, "A five-line recipe".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    rows = []
    seen: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, QuantizedLinear):
            numel = m.out_features * m.in_features
            before = numel * torch.empty((), dtype=m.weight_dtype).element_size() + _tensor_bytes(m.bias)
            rows.append(LayerSize(name, (m.out_features, m.in_features), before, m.nbytes,
                                  m.bits_per_weight))
            seen.update(id(t) for t in m.buffers(recurse=False))
        elif isinstance(m, nn.Linear):
            b = _tensor_bytes(m.weight) + _tensor_bytes(m.bias)
            rows.append(LayerSize(name, (m.out_features, m.in_features), b, b,
                                  8.0 * m.weight.element_size()))
            seen.update(id(t) for t in m.parameters(recurse=False))
    other = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        other += _tensor_bytes(t)
    return SizeReport(tuple(rows), other)


# --------------------------------------------------------------------------- files

_BUFFERS = ("packed", "scale", "zero_point", "bias", "input_scale")


def _key(name: str, buffer: str) -> str:
    return f"{name}.{buffer}" if name else buffer


def _check_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be a str or os.PathLike of a str, got {type(path).__name__} {path!r}")
    return path


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((what for test, what in _FILE_KINDS if test(mode)), "not a regular file")


def _save_target(path: str) -> tuple[str, Optional[int]]:
    """Where :func:`save_quantized` writes for ``path`` (a symbolic link is written through,
    so the link stays a link) and the permission bits of the file it replaces (None: new).

    Raises:
        ValueError: ``path`` names something other than a regular file (a directory, a
            FIFO, a device, a socket): the writer replaces its target by renaming a new
            file over it, which would turn a device node into a file.
        FileNotFoundError: the directory to write into does not exist.
    """
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ValueError(
            f"path {path!r} names {_kind(st.st_mode)}; save_quantized writes a new file or "
            "replaces a regular one, nothing else (choose a file name)"
        )
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        import errno

        raise FileNotFoundError(errno.ENOENT, f"cannot save to {path!r}: no directory "
                                f"{folder!r} to write into", path)
    return real, None if st is None else stat.S_IMODE(st.st_mode)


def _umask() -> int:
    """The process's file creation mask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_quantized(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Write every :class:`QuantizedLinear` of ``model`` to a ``safetensors`` file.

    The file holds, for each quantized layer ``name`` (a layer registered under several
    names is written once, under its first name), the tensors ``name.packed``,
    ``name.scale``, ``name.zero_point``, ``name.bias`` and ``name.input_scale`` that it
    has (codes and zero points packed as uint8, scales at their storage dtype), and in the
    file's metadata (strings):

    * ``"quantlab.file"``: ``"quantlab.nn.save_quantized"``;
    * ``"quantlab.version"``: :data:`FILE_VERSION` (``"1"``);
    * ``"quantlab.layers"``: JSON ``{name: record}``, where a record gives the format
      (its name, or its fields for a custom one), ``shape`` ``[out, in]``,
      ``granularity``, ``axis``, ``group_size``, ``scale_dtype``, ``scale_shape``,
      ``scaled``, ``zero_point``, ``symmetric``, ``weight_dtype``, ``bias``,
      ``input_scale`` and ``aliases`` (the layer's other names).

    Nothing else of the model is written: :func:`load_quantized` takes the rest from the
    float model it is given.

    The file is written next to its target and renamed over it, so a save that is
    interrupted leaves any old file intact. A symbolic link is written through (the link
    stays, its target is replaced); a replaced file keeps its permission bits, a new one
    gets the usual ``0o666`` minus the umask.

    Args:
        model: a model holding at least one :class:`QuantizedLinear` (or one itself).
        path: file to write: a new file, or a regular file to replace.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``path`` is not a path.
        ValueError: no quantized layer, or a layer on the meta device; ``path`` names
            something that is not a regular file (a directory, FIFO, device or socket).
            Checked before anything is written.
        FileNotFoundError: the directory of ``path`` does not exist.
        OSError: the file could not be written (e.g. no permission, disk full).
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    path = _check_path(path)
    _save_target(path)  # refuse a bad target before any work
    layers = list(_names_by_module(model, QuantizedLinear).values())
    if not layers:
        raise ValueError("model has no QuantizedLinear layer to save (quantize it first)")
    tensors: dict[str, torch.Tensor] = {}
    records = {}
    for layer, names in layers:
        name = names[0]
        if layer.packed.is_meta:
            raise ValueError(f"layer {name!r} is on the meta device and holds no values")
        rec = layer._record()
        del rec["quantlab.nn"]
        rec["aliases"] = names[1:]
        records[name] = rec
        for buf in _BUFFERS:
            t = getattr(layer, buf)
            if t is not None:
                tensors[_key(name, buf)] = t.detach().to("cpu", copy=True).contiguous()
    metadata = {
        "quantlab.file": _FILE_TAG,
        "quantlab.version": str(FILE_VERSION),
        "quantlab.layers": json.dumps(records, sort_keys=True),
    }
    target, mode = _save_target(path)  # again, just before writing
    try:
        save_file(tensors, target, metadata=metadata)
    except SafetensorError as err:
        raise OSError(f"could not write {path!r}: {err}") from err
    os.chmod(target, mode if mode is not None else 0o666 & ~_umask())


def _read_file(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The layer records and the tensors of a :func:`save_quantized` file, checked."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("quantlab.file") != _FILE_TAG:
                raise ValueError(f"{path!r} was not written by quantlab.nn.save_quantized "
                                 "(its metadata has no 'quantlab.file' entry)")
            if meta.get("quantlab.version") != str(FILE_VERSION):
                raise ValueError(f"{path!r} is a quantlab.nn file of version "
                                 f"{meta.get('quantlab.version')!r}; this quantlab reads version "
                                 f"{FILE_VERSION}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors file)
    except SafetensorError as err:
        raise ValueError(f"{path!r} is not a readable safetensors file ({err})") from err
    try:
        records = json.loads(meta.get("quantlab.layers", ""))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path!r}: the 'quantlab.layers' metadata is not valid JSON ({err})") from err
    if not isinstance(records, dict) or not records:
        raise ValueError(f"{path!r}: the 'quantlab.layers' metadata names no layer")
    return records, tensors


def load_quantized(model: nn.Module, path: Union[str, os.PathLike]) -> nn.Module:
    """Put the quantized layers of a :func:`save_quantized` file into a float model.

    Each layer recorded in the file replaces the ``nn.Linear`` of the same name (and
    the names it shares with, see ``aliases``) by a :class:`QuantizedLinear` rebuilt
    from the file alone -- whatever its format, granularity or group size -- so the
    model computes exactly, bit for bit, what the saved one did. Everything else stays
    the given model's own: non-quantized parameters and buffers (embeddings, norms,
    Linear layers that were skipped). A quantized layer's bias and input scale come
    from the file. The float weights of the replaced layers are not read, so ``model``
    may live on the ``meta`` device (the new layers are then on the CPU); otherwise each
    new layer is put on its Linear's device.

    Everything is checked before the model is changed: every field of each layer's record
    (format, shape, granularity, axis, group size, scale dtype and shape, zero points,
    symmetry, bias, input scale) against the others and against the tensors found, and
    what the tensors hold -- scales finite and positive, bias and input scale finite,
    codebook codes inside the table, no code of a scaled float layer that decodes to NaN or
    infinity, mid-range zero points for symmetric unsigned layers. A custom format must be
    consistent with its bits (``1 + ebits + mbits`` for floats, ``ceil(log2(entries))``
    for codebooks). A record edited by hand is refused unless the codes it describes could
    have come from it (an edit that changes one 8-bit format into another can only be
    seen where the codes contradict it).

    Args:
        model: a model of the architecture that was saved, with ``nn.Linear`` (or
            :class:`QuantizedLinear`) layers where the file has quantized ones.
        path: a file written by :func:`save_quantized`.

    Returns:
        ``model``, changed in place (a bare ``nn.Linear`` given as ``model`` cannot be
        changed in place: the new :class:`QuantizedLinear` is returned).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``path`` is not a path.
        FileNotFoundError: no file at ``path``.
        ValueError: a file that is not safetensors, not written by
            :func:`save_quantized` or of another :data:`FILE_VERSION`; a ``path`` that names
            a directory, FIFO or device; a layer of the file missing from the model, not a
            Linear there, of another shape, with or without a bias where the file differs,
            or not shared where the file's is; a record or tensor that fails the checks
            above. Each message names the layer and the field or tensor.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    path = _check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no file at path {path!r}")
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):  # reading a FIFO would block, a device never end
        raise ValueError(f"path {path!r} names {_kind(mode)}, not a file written by save_quantized")
    records, tensors = _read_file(path)
    modules = {}
    for m, names in _names_by_module(model, nn.Module).values():
        for n in names:
            modules[n] = m
    built: list[tuple[list[str], QuantizedLinear]] = []
    expected: set[str] = set()
    for name, rec in records.items():
        where = f"layer {name!r}"
        if not isinstance(rec, dict):
            raise ValueError(f"{path!r}: {where} has a malformed record {rec!r}")
        layout = _Layout.from_record(rec, f"{path!r}: {where}")
        aliases = rec.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ValueError(f"{path!r}: {where} has malformed aliases {aliases!r}")
        if name not in modules:
            raise ValueError(f"{where} of the file is not in the model (architecture mismatch)")
        target = modules[name]
        if not isinstance(target, (nn.Linear, QuantizedLinear)):
            raise ValueError(f"{where} of the file is an nn.Linear, but the model's is a "
                             f"{type(target).__name__}")
        out_f, in_f = target.out_features, target.in_features
        if (out_f, in_f) != layout.shape:
            raise ValueError(f"{where}: the file's weight has shape {layout.shape}, the model's "
                             f"is {(out_f, in_f)} (architecture mismatch)")
        for field in ("bias", "input_scale"):
            if not isinstance(rec.get(field), bool):
                raise ValueError(f"{path!r}: {where}: field {field!r} must be true or false, got "
                                 f"{rec.get(field)!r}")
        has_bias = target.bias is not None
        if has_bias != rec.get("bias"):
            raise ValueError(f"{where}: the file's layer has {'a' if rec.get('bias') else 'no'} "
                             f"bias, the model's has {'a' if has_bias else 'no'} bias")
        for alias in aliases:
            if modules.get(alias) is not target:
                raise ValueError(f"{where} is shared with {alias!r} in the file, but not in the "
                                 "model (architecture mismatch)")
        parts = {}
        for buf in _BUFFERS:
            key = _key(name, buf)
            present = {"packed": True, "scale": layout.scaled, "zero_point": layout.zero_point,
                       "bias": bool(rec.get("bias")), "input_scale": bool(rec.get("input_scale"))}[buf]
            if present != (key in tensors):
                state = "missing from" if present else "unexpected in"
                raise ValueError(f"{where}: tensor {key!r} is {state} the file")
            parts[buf] = tensors.get(key)
            if present:
                expected.add(key)
        _check_parts(layout, parts, f"{path!r}: {where}")
        _check_values(layout, parts, f"{path!r}: {where}")
        device = target.bias.device if has_bias else (
            target.weight.device if isinstance(target, nn.Linear) else target.packed.device)
        if device.type == "meta":
            device = torch.device("cpu")
        layer = QuantizedLinear.__new__(QuantizedLinear)
        nn.Module.__init__(layer)
        layer._install(layout, *(None if parts[b] is None else parts[b].to(device) for b in _BUFFERS))
        built.append(([name, *aliases], layer))
    extra = sorted(set(tensors) - expected)
    if extra:
        raise ValueError(f"{path!r} holds tensors that belong to no recorded layer: {extra[:5]}")
    for names, layer in built:
        if names == [""]:
            return layer
        for n in names:
            _set_module(model, n, layer)
    return model


def _check_parts(layout: _Layout, parts: dict, where: str) -> None:
    """Check the dtypes and sizes of a layer's tensors read from a file."""
    bits = layout.format.bits
    want = {
        "packed": (torch.uint8, (_packed_nbytes(layout.numel, bits),)),
        "scale": (SCALE_DTYPES[layout.scale_dtype], layout.scale_shape),
        "zero_point": (torch.uint8, (_packed_nbytes(layout.n_scales, bits),)),
        "bias": (None, (layout.shape[0],)),
        "input_scale": (None, (layout.shape[1],)),
    }
    for buf, t in parts.items():
        if t is None:
            continue
        dtype, shape = want[buf]
        if (dtype is not None and t.dtype != dtype) or (dtype is None and not t.is_floating_point()):
            raise ValueError(f"{where}: tensor {buf!r} has dtype {_dtype_name(t.dtype)}, expected "
                             f"{'a float dtype' if dtype is None else _dtype_name(dtype)}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{where}: tensor {buf!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def _check_values(layout: _Layout, parts: dict, where: str) -> None:
    """Check what a layer's tensors hold against its layout, before the layer is built.

    Scales must be finite and positive (quantize stores a tiny positive scale even for a
    group of zeros); bias and input scale finite; codebook codes must index the table;
    the codes of a scaled float layer must decode to finite values (scaled floats
    saturate, so such a layer never stores a NaN or infinity code: finding one means the
    record's format does not describe the codes); the zero points of a symmetric unsigned
    layer must be the mid-range one.
    """
    fmt = layout.format
    scale = parts.get("scale")
    if scale is not None and scale.numel():
        s = scale.float()
        bad = ~(torch.isfinite(s) & (s > 0))
        if bool(bad.any()):
            raise ValueError(f"{where}: tensor 'scale' must hold finite positive scales, got "
                             f"{s[bad][:4].tolist()} ({int(bad.sum())} of {s.numel()} scales)")
    for name in ("bias", "input_scale"):
        t = parts.get(name)
        if t is not None and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: tensor {name!r} holds NaN or infinity "
                             f"({int((~torch.isfinite(t)).sum())} of {t.numel()} values)")
    zp = parts.get("zero_point")
    if zp is not None and isinstance(fmt, IntFormat) and layout.symmetric and not fmt.signed:
        z = unpack_codes(zp, fmt.bits, layout.n_scales, False)
        mid = (fmt.qmax + fmt.qmin + 1) // 2
        if z.numel() and bool((z != mid).any()):
            raise ValueError(f"{where}: tensor 'zero_point' of a symmetric {fmt.name} layer must "
                             f"hold its mid-range zero point {mid}, got values in "
                             f"[{int(z.min())}, {int(z.max())}]")
    packed = parts["packed"]
    if isinstance(fmt, CodebookFormat) and layout.numel:
        codes = unpack_codes(packed, fmt.bits, layout.numel, False)
        top = int(codes.max())
        if top >= len(fmt.table):
            raise ValueError(f"{where}: tensor 'packed' holds code {top}, beyond the "
                             f"{len(fmt.table)} entries of codebook {fmt.name!r}")
    if isinstance(fmt, FloatFormat) and layout.scaled and fmt.bits <= 16 and layout.numel:
        vals = fmt.decode(unpack_codes(packed, fmt.bits, layout.numel, False))
        bad = ~torch.isfinite(vals)
        if bool(bad.any()):
            raise ValueError(f"{where}: tensor 'packed' holds {int(bad.sum())} codes that "
                             f"decode to NaN or infinity in {fmt.name}, which a scaled "
                             f"{fmt.name} layer never stores (values saturate): the record's "
                             "field 'format' does not describe these codes")
