"""Codes as stored bytes and formats as records: :func:`pack_codes` / :func:`unpack_codes`
(the codec of :mod:`quantlab.core.packing`, under the names this package has always used),
:func:`format_record` / :func:`format_from_record` (a format written as plain data, and
read back) and :func:`device_decoder` (a format that decodes codes on a device).

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..core._backend import ArrayLike, read_only
from ..core.formats import (
    BlockFormat,
    CodebookFormat,
    FloatFormat,
    Format,
    IntFormat,
    get_format,
)
from ..core.packing import pack, packed_nbytes, unpack_view

__all__ = [
    "codes_nbytes",
    "pack_codes",
    "unpack_codes",
    "format_record",
    "format_from_record",
    "format_problem",
    "cast_dtype",
    "device_decoder",
    "decoder_for",
    "FloatFormatOnDevice",
    "CodebookFormatOnDevice",
]


def codes_nbytes(n: int, bits: int) -> int:
    """Bytes of ``n`` codes of ``bits`` bits packed end to end: ``ceil(n * bits / 8)``
    (:func:`quantlab.packing.packed_nbytes`)."""
    return packed_nbytes(n, bits)


def pack_codes(codes: ArrayLike, bits: int) -> ArrayLike:
    """Pack integer codes into uint8: :func:`quantlab.packing.pack`.

    Args:
        codes: integer tensor or numpy array of any shape (flattened in C order), values
            fitting in ``bits`` bits (unsigned or two's complement).
        bits: code width, 1 to 16, or 32 (16 and 32: the fp16/bf16/fp32 bit patterns of a
            cast, 2 or 4 little-endian bytes each).

    Returns:
        Flat uint8 tensor of ``ceil(codes.numel() * bits / 8)`` bytes (a numpy array for a
        numpy input).

    Raises:
        TypeError: ``codes`` is not an integer array/tensor; ``bits`` is not an int.
        ValueError: ``bits`` outside 1..16 and 32; codes that do not fit in ``bits`` bits.
    """
    return pack(codes, bits)


def unpack_codes(packed: ArrayLike, bits: int, n: int, signed: bool) -> ArrayLike:
    """Inverse of :func:`pack_codes`: :func:`quantlab.packing.unpack_view`.

    8-bit codes, and signed 16- and 32-bit ones, are returned as a *view* of ``packed``
    (uint8/int8, int16, int32): no copy; unsigned 16/32-bit codes are widened to
    int32/int64, other widths unpacked to int32, on ``packed``'s own device (on the
    ``meta`` device: an empty meta tensor).

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
    return unpack_view(packed, bits, n, signed)


def format_record(fmt: Format) -> dict:
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
        raise TypeError(
            f"format {fmt.name!r} of type {type(fmt).__name__} cannot be recorded; "
            "use an IntFormat, FloatFormat or CodebookFormat"
        )
    rec = {"kind": kind}
    for f in dataclasses.fields(fmt):
        v = getattr(fmt, f.name)
        rec[f.name] = list(v) if isinstance(v, tuple) else v
    return rec


def format_from_record(rec: Any, where: str) -> Format:
    """The format a record of :func:`format_record` describes (``where`` names the layer in
    messages).

    Raises:
        ValueError: not such a record, or one whose format cannot describe stored codes.
    """
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
    problem = format_problem(fmt)
    if problem:
        raise ValueError(f"{where}: field 'format' describes {problem}")
    return fmt


def format_problem(fmt: Format) -> Optional[str]:
    """Why ``fmt`` cannot describe stored codes (its bits against its layout), or None."""
    if isinstance(fmt, BlockFormat):
        return f"the block-scaled format {fmt.name!r}, which QuantizedLinear does not store"
    if not isinstance(fmt.name, str) or not isinstance(fmt.bits, int) or isinstance(fmt.bits, bool):
        return f"a format with name {fmt.name!r} and bits {fmt.bits!r}"
    if isinstance(fmt, FloatFormat):
        if fmt.bits != 1 + fmt.ebits + fmt.mbits:
            return (
                f"a float format {fmt.name!r} of {fmt.bits} bits whose layout has "
                f"1 + {fmt.ebits} + {fmt.mbits} = {1 + fmt.ebits + fmt.mbits} bits"
            )
        if not (fmt.bits <= 16 or fmt.bits == 32):
            return f"a float format {fmt.name!r} of {fmt.bits} bits (stored: 1 to 16, or 32)"
        if not 0 <= fmt._nan_code < (1 << fmt.bits):
            return f"a float format {fmt.name!r} whose NaN code {fmt._nan_code} has more than {fmt.bits} bits"
    if isinstance(fmt, CodebookFormat):
        t = fmt.table
        if len(t) < 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in t
        ):
            return f"a codebook {fmt.name!r} that is not 2 or more finite values"
        if any(b <= a for a, b in itertools.pairwise(t)):
            return f"a codebook {fmt.name!r} whose table is not strictly ascending"
        need = max(1, math.ceil(math.log2(len(t))))
        if fmt.bits != need:
            return (
                f"a codebook {fmt.name!r} of {len(t)} entries stored in {fmt.bits}-bit codes "
                f"({len(t)} entries take {need} bits)"
            )
    return None


# 16- and 32-bit float formats whose codes are exactly the bits of a torch dtype
_TORCH_FLOATS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def cast_dtype(fmt: Format) -> Optional[torch.dtype]:
    """The torch dtype whose bit patterns ``fmt``'s codes are, or None.

    fp16, bf16 and fp32 (the formats of those names that :func:`get_format` gives) and any
    32-bit float format (whose ``decode`` reads its codes as fp32 bits) have one: their
    codes are decoded by viewing them, read as int16/int32, as that dtype.
    """
    if not isinstance(fmt, FloatFormat):
        return None
    if fmt.bits == 32:
        return torch.float32
    view = _TORCH_FLOATS.get(fmt.name)
    return view if view is not None and get_format(fmt.name) == fmt else None


def _decode_on_device(codes: torch.Tensor, view_dtype: Optional[torch.dtype], table: torch.Tensor) -> torch.Tensor:
    """float32 values of ``codes``: the codes' bits as ``view_dtype`` (codes read as int16 /
    int32 of that width), else ``table[codes]``; a new tensor either way."""
    if view_dtype is not None:
        return codes.view(view_dtype).to(torch.float32, copy=True)
    return table.take(codes.long())  # take() copies, never a view


@dataclass(frozen=True)
class FloatFormatOnDevice(FloatFormat):
    """A :class:`~quantlab.formats.FloatFormat` whose :meth:`decode` runs on one device.

    Its format fields are those of the format it was made from (:func:`device_decoder`);
    it adds, outside equality and hashing, where the values come from: ``view_dtype``
    (the torch dtype whose bits the codes are, :func:`cast_dtype`) or ``device_table``
    (float32 value of every code ``0 .. 2^bits - 1``, shape ``(2^bits,)``, on the device).

    ``decode(codes)`` gives the float32 values ``fmt.decode`` gives, bit for bit, on the
    codes' device: ``codes.view(view_dtype)`` (codes read as int16/int32) or
    ``device_table[codes]`` (codes read unsigned).
    """

    device_table: Optional[torch.Tensor] = field(default=None, compare=False, repr=False)
    view_dtype: Optional[torch.dtype] = field(default=None, compare=False, repr=False)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (any shape, on the decoder's device) -> float32 values, same shape."""
        return _decode_on_device(codes, self.view_dtype, self.device_table)


@dataclass(frozen=True)
class CodebookFormatOnDevice(CodebookFormat):
    """A :class:`~quantlab.formats.CodebookFormat` whose :meth:`decode` runs on one device.

    Its ``table`` is that of the format it was made from (:func:`device_decoder`);
    ``device_table`` (outside equality and hashing) holds the same values as a float32
    tensor of shape ``(len(table),)`` on the device, and ``decode(codes)`` is
    ``device_table[codes]``: the values ``fmt.decode`` gives, bit for bit.
    """

    device_table: Optional[torch.Tensor] = field(default=None, compare=False, repr=False)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Indices (any shape, on the decoder's device) -> float32 values, same shape."""
        return _decode_on_device(codes, None, self.device_table)


_DECODERS: dict[tuple[Format, torch.device], Format] = {}


def device_decoder(fmt: Format, device: torch.device) -> Format:
    """A format equal in its fields to ``fmt`` whose ``decode`` runs on ``device``.

    Integer formats need none (their values are the codes): ``fmt`` itself. A float or
    codebook format gets a :class:`FloatFormatOnDevice` / :class:`CodebookFormatOnDevice`
    made once per ``(fmt, device)`` and kept: its lookup table is copied to ``device``
    once, or, for the casts of :func:`cast_dtype`, no table at all. Its ``decode`` gives
    the same float32 values as ``fmt.decode``; codes are read signed exactly when ``fmt``
    is a signed integer format or ``cast_dtype(fmt)`` is not None.

    Args:
        fmt: an integer, float or codebook format.
        device: where the codes to decode are.

    Returns:
        A format usable wherever ``fmt`` is (``QTensor.dequantize`` included).
    """
    if isinstance(fmt, IntFormat):
        return fmt
    key = (fmt, torch.device(device))
    if key not in _DECODERS:
        fields = {f.name: getattr(fmt, f.name) for f in dataclasses.fields(fmt) if f.init}
        if isinstance(fmt, CodebookFormat):
            table = read_only(fmt.decode(torch.arange(len(fmt.table))).to(key[1]))
            _DECODERS[key] = CodebookFormatOnDevice(**fields, device_table=table)
        elif isinstance(fmt, FloatFormat):
            view = cast_dtype(fmt)
            table = None if view is not None else read_only(fmt.decode(torch.arange(1 << fmt.bits)).to(key[1]))
            _DECODERS[key] = FloatFormatOnDevice(**fields, device_table=table, view_dtype=view)
        else:
            raise TypeError(f"fmt must be an integer, float or codebook format, got {type(fmt).__name__} {fmt.name!r}")
    return _DECODERS[key]


#: Former name of :func:`device_decoder`, kept for code that imports it.
decoder_for = device_decoder
