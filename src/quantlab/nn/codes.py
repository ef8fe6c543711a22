"""Codes as stored bytes and formats as records: :func:`pack_codes` / :func:`unpack_codes` (the
layout of :func:`quantlab.core.packing.pack`, plus the 16- and 32-bit bit patterns of a cast),
:func:`format_record` / :func:`format_from_record` (a format written as plain data, and
read back) and :func:`decoder_for` (a format's decoder with its tables on a device).

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Optional

import numpy as np
import torch

from ..core._backend import ArrayLike, as_tensor, like_input, read_only
from ..core.formats import (
    BlockFormat,
    CodebookFormat,
    FloatFormat,
    Format,
    IntFormat,
    get_format,
)
from ..core.packing import pack, unpack
from ..core.validate import check_bool, check_nonnegative_int

__all__ = [
    "codes_nbytes",
    "pack_codes",
    "unpack_codes",
    "format_record",
    "format_from_record",
    "format_problem",
    "decoder_for",
]


# 16- and 32-bit float formats whose codes are exactly the bits of a torch dtype
_TORCH_FLOATS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def codes_nbytes(n: int, bits: int) -> int:
    """Bytes of ``n`` codes of ``bits`` bits packed end to end: ``ceil(n * bits / 8)``."""
    return -(-n * bits // 8)


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
    b = packed[: codes_nbytes(n, bits)].to(torch.int32)
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
    need = codes_nbytes(n, bits)
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


def decoder_for(fmt: Format, device: torch.device) -> Format:
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
