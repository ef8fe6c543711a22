"""Sub-byte codes <-> bytes.

A 4-bit code in an ``int8`` tensor still takes 8 bits of memory: the savings of a low-bit
format only exist once codes are *packed*. The layout used here is a little-endian
bitstream: element ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, where bit
``k`` of the stream is bit ``k % 8`` of byte ``k // 8`` (least significant first).

For 4 bits this means **element 2i sits in the low nibble and element 2i+1 in the high
nibble** of byte i (``byte = lo | hi << 4``); for 2 bits, element 4i in bits 0-1, and so
on. Widths that do not divide 8 (3, 5, 6, 7 bits, ...) straddle byte boundaries; the last
byte is padded with zero bits. Signed codes are stored in two's complement
(``code & (2^bits - 1)``) and sign-extended by :func:`unpack` with ``signed=True``.

Codes of 16 and 32 bits (the bit patterns of an fp16, bf16 or fp32 cast) follow the same
rule: each takes 2 or 4 whole bytes, least significant byte first -- the little-endian
integers x86 and ARM store, so on those machines the bytes are read as ``int16``/``int32``
without any arithmetic (:func:`unpack_view` returns such codes without a copy).

(GGUF's Q4_0 uses another order -- the first half of a 32-weight block in the low nibbles,
the second half in the high nibbles; :mod:`quantlab.gguf_blocks` handles that layout.)

Taught in: chapters/04_in_practice.ipynb, "Real savings need packed storage".
"""

from __future__ import annotations

import sys
from typing import Optional

import numpy as np
import torch

from ._backend import ArrayLike, as_tensor, check_out, dtype_name, like_input, overlaps
from ._fast import chunk_elements
from .validate import check_bool, check_int, check_nonnegative_int

__all__ = ["pack", "unpack", "unpack_view", "packed_nbytes"]


def _check_bits(bits: int) -> int:
    bits = check_int(bits, "bits", what="an int from 1 to 16, or 32")
    if not (1 <= bits <= 16 or bits == 32):
        raise ValueError(f"bits must be from 1 to 16, or 32, got {bits}")
    return bits


#: Whether this machine stores integers least significant byte first (x86, ARM): then the
#: bytes of 16- and 32-bit codes are read and written as int16/int32 directly.
_LITTLE_ENDIAN = sys.byteorder == "little"

#: Whole-byte code widths and the signed integer dtype whose bytes they are.
_WHOLE_BYTES = {8: torch.int8, 16: torch.int16, 32: torch.int32}


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes needed for ``n`` codes of ``bits`` bits: ``ceil(n * bits / 8)`` (exact integers).

    Args:
        n: number of codes, an integer >= 0.
        bits: bits per code, an integer >= 1 (any width: 32 for fp32 bit patterns).

    Returns:
        The number of bytes, an int.

    Raises:
        TypeError: ``n`` or ``bits`` not an integer.
        ValueError: ``n`` negative or ``bits`` below 1.
    """
    n = check_int(n, "n", minimum=0)
    bits = check_int(bits, "bits", minimum=1)
    return -(-n * bits // 8)


#: Unsigned torch dtypes with few kernels: their codes are widened to int64 first.
_WIDE_UNSIGNED = tuple(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name))


def _int_codes(codes: ArrayLike, bits: int) -> tuple[torch.Tensor, bool]:
    """``codes`` as an integer tensor torch can compute with, and whether it was numpy."""
    if isinstance(codes, np.ndarray) and codes.dtype.kind == "u" and codes.dtype.itemsize > 1:
        if codes.dtype.itemsize == 8 and codes.size and int(codes.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"codes must fit in {bits} bits, got values up to {int(codes.max())}")
        codes = codes.astype(np.int64)  # numpy uint16/32/64: torch has few kernels for them
        t, _ = as_tensor(codes, "codes")
        return t, True
    t, was_numpy = as_tensor(codes, "codes")
    if t.dtype in _WIDE_UNSIGNED:
        wide = t.to(torch.int64)
        if t.dtype == torch.uint64 and wide.numel() and int(wide.min()) < 0:
            raise ValueError(f"codes must fit in {bits} bits, got uint64 values of 2^63 or more")
        t = wide
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"codes must be integers, got dtype {dtype_name(t.dtype)}")
    return t, was_numpy


def pack(codes: ArrayLike, bits: int, *, out: Optional[ArrayLike] = None) -> ArrayLike:
    """Pack integer codes into a flat uint8 array.

    Args:
        codes: integer array/tensor of any shape and layout (flattened in C order; strided
            views and views at any offset are copied where the fast path needs it); each
            value must fit in ``bits`` bits, as unsigned (``0 .. 2^bits-1``) or two's
            complement signed (``-2^(bits-1) .. 2^(bits-1)-1``).
        bits: code width, 1 to 16, or 32 (16 and 32: 2 or 4 little-endian bytes a code, the
            bit patterns of an fp16/bf16/fp32 cast).
        out: optional flat uint8 array/tensor of the same kind as ``codes`` with exactly
            ``ceil(codes.size * bits / 8)`` elements to write into (reuses a buffer); it
            must not share memory with ``codes``.

    Returns:
        uint8 array of ``ceil(codes.size * bits / 8)`` bytes (same kind as ``codes``, on
        its device), ``out`` if given.

    Raises:
        TypeError: float codes, a non-int ``bits``, or an ``out`` of the wrong kind/dtype
            or byte order.
        ValueError: ``bits`` outside 1..16 and 32, a code that does not fit in ``bits`` bits
            (checked on the codes' own integer type, before any narrowing), or an ``out``
            of the wrong size, read-only, on another device or overlapping ``codes``.
    """
    bits = _check_bits(bits)
    t, was_numpy = _int_codes(codes, bits)
    n = t.numel()
    o = _check_out(out, packed_nbytes(n, bits), torch.uint8, was_numpy, t.device, t, "codes")
    if bits in (16, 32):
        res = _pack_whole_bytes(t.reshape(-1), bits)
        if o is not None:
            o.copy_(res)
            return out
        return like_input(res, was_numpy)
    if 8 % bits == 0 and n and t.device.type == "cpu":
        res = o if o is not None else torch.empty(packed_nbytes(n, bits), dtype=torch.uint8)
        _pack_fast(t.reshape(-1), bits, res)
        return out if out is not None else like_input(res, was_numpy)
    flat = t.reshape(-1)
    if flat.numel():
        lo, hi = torch.aminmax(flat)
        _check_range(int(lo), int(hi), bits)  # before narrowing: int64 codes must not wrap
    u = flat.to(torch.int32) & ((1 << bits) - 1)
    dev = u.device
    if 8 % bits == 0:
        per = 8 // bits
        pad = (-n) % per
        if pad:
            u = torch.cat([u, u.new_zeros(pad)])
        u = u.reshape(-1, per)
        shifts = torch.arange(0, 8, bits, dtype=torch.int32, device=dev)
        res = (u << shifts).sum(dim=1).to(torch.uint8)
    else:
        stream = ((u.unsqueeze(1) >> torch.arange(bits, dtype=torch.int32, device=dev)) & 1).reshape(-1)
        pad = (-stream.numel()) % 8
        if pad:
            stream = torch.cat([stream, stream.new_zeros(pad)])
        res = (stream.reshape(-1, 8) << torch.arange(8, dtype=torch.int32, device=dev)).sum(dim=1).to(torch.uint8)
    if o is not None:
        o.copy_(res)
        return out
    return like_input(res, was_numpy)


def _pack_whole_bytes(flat: torch.Tensor, bits: int) -> torch.Tensor:
    """16- or 32-bit codes as ``bits // 8`` little-endian bytes each (a new flat uint8 tensor
    on the codes' device).

    Each code is narrowed to the signed integer of its width (two's complement: unsigned
    codes ``2^(bits-1) .. 2^bits - 1`` become the negative integers of the same bits), whose
    bytes are the stored ones on a little-endian machine; elsewhere they are computed as
    ``byte_k = (code >> 8k) & 0xFF``.
    """
    if flat.numel():
        lo, hi = torch.aminmax(flat)
        _check_range(int(lo), int(hi), bits)  # before narrowing: wider codes must not wrap
    if _LITTLE_ENDIAN:
        wide = torch.empty(flat.numel(), dtype=_WHOLE_BYTES[bits], device=flat.device)
        return wide.copy_(flat).view(torch.uint8)  # (a strided view of codes included)
    shifts = torch.arange(0, bits, 8, dtype=torch.int64, device=flat.device)
    return ((flat.to(torch.int64).unsqueeze(1) >> shifts) & 0xFF).to(torch.uint8).reshape(-1)


def _check_range(lo: int, hi: int, bits: int) -> None:
    if lo < -(1 << (bits - 1)) or hi > (1 << bits) - 1:
        raise ValueError(
            f"codes must fit in {bits} bits ([{-(1 << (bits - 1))}, {(1 << bits) - 1}]), got values in [{lo}, {hi}]"
        )


def _check_out(
    out: Optional[ArrayLike],
    n: int,
    dtype: torch.dtype,
    was_numpy: bool,
    device: torch.device,
    source: torch.Tensor,
    source_name: str,
) -> Optional[torch.Tensor]:
    """``out`` as a tensor after every check, before anything is written: among them, that
    it shares no memory with ``source`` (the input, read while ``out`` is written)."""
    if out is None:
        return None
    name = dtype_name(dtype)
    if isinstance(out, (np.ndarray, torch.Tensor)) and tuple(out.shape) != (n,):
        raise ValueError(f"out must be a contiguous 1-d {name} array of {n} elements, got shape {tuple(out.shape)}")
    o = check_out(out, was_numpy=was_numpy, dtype=dtype, shape=(n,), device=device, like="the input")
    if overlaps(o, source):
        raise ValueError(
            f"out must not share memory with {source_name}: it is written while "
            f"{source_name} is read, got an out that overlaps {source_name}"
        )
    return o


_WIDER = {1: torch.int16, 2: torch.int32, 4: torch.int64}  # code bytes -> type of a pair


def _pack_fast(flat: torch.Tensor, bits: int, res: torch.Tensor) -> None:
    """Pack widths that divide 8 (1, 2, 4, 8 bits) chunk by chunk, with no int64 temporaries.

    ``per = 8 // bits`` codes share a byte: ``byte = sum_k (code[per*i + k] & mask) << (k*bits)``,
    computed on strided views of each chunk in the codes' own integer type; the cast to
    uint8 keeps the low 8 bits (two's complement), so the top code needs no mask. For
    4 bits, each pair of codes is read as one integer of twice the width (three ops).
    """
    n = flat.numel()
    per, mask = 8 // bits, (1 << bits) - 1
    whole = n - n % per  # codes that fill whole bytes
    step = chunk_elements() - chunk_elements() % per
    acc = torch.empty(step // per, dtype=flat.dtype)
    tmp = torch.empty(step // per, dtype=flat.dtype)

    def check(c: torch.Tensor) -> None:  # every code fits (measured while c is in cache)
        lo, hi = torch.aminmax(c)
        if int(lo) < -(1 << (bits - 1)) or int(hi) > mask:
            lo, hi = torch.aminmax(flat)
            _check_range(int(lo), int(hi), bits)

    if whole < n:
        check(flat[whole:])
    # (the pair trick reads memory in little-endian order, as x86 and ARM store it)
    wide = _WIDER.get(flat.element_size()) if per == 2 and sys.byteorder == "little" else None
    if wide is not None and (not flat.is_contiguous() or flat.storage_offset() % 2):
        # a strided view, or one starting at an odd element, cannot be read as pairs: copy it
        flat = flat.clone(memory_format=torch.contiguous_format)
    if wide is not None:  # two codes side by side are one integer twice as wide
        w = 8 * flat.element_size()
        acc, tmp = torch.empty(step // per, dtype=wide), torch.empty(step // per, dtype=wide)
    for start in range(0, whole, step):
        c = flat[start : min(whole, start + step)]
        check(c)
        c = c.view(-1, per)
        m = c.shape[0]
        a, s = acc[:m], tmp[:m]
        if wide is not None:
            # v = lo | hi << w: keep both nibbles, move hi's next to lo's, keep the low byte
            torch.bitwise_and(c.view(wide).view(-1), mask | (mask << w), out=a)
            torch.bitwise_right_shift(a, w - bits, out=s)
            a.bitwise_or_(s)
            res[start // per : start // per + m].copy_(a)
            continue
        if per == 1:
            res[start : start + m].copy_(c[:, 0])
            continue
        torch.bitwise_and(c[:, 0], mask, out=a)
        for k in range(1, per):
            if k < per - 1:
                torch.bitwise_and(c[:, k], mask, out=s)
                s.bitwise_left_shift_(k * bits)
            else:
                torch.bitwise_left_shift(c[:, k], k * bits, out=s)
            a.bitwise_or_(s)
        res[start // per : start // per + m].copy_(a)
    if whole < n:  # the last, partly filled byte
        tail = flat[whole:].to(torch.int32) & mask
        res[-1] = int((tail << torch.arange(0, bits * tail.numel(), bits, dtype=torch.int32)).sum())


def _packed_input(packed: ArrayLike, bits: int, n: int, signed: bool) -> tuple[torch.Tensor, bool, int, int, bool]:
    """Check :func:`unpack`'s arguments; return ``(flat bytes, was_numpy, bits, n, signed)``.

    A tensor on the ``meta`` device is accepted (it has a shape and dtype but no values).
    """
    bits = _check_bits(bits)
    if isinstance(packed, torch.Tensor) and packed.is_meta:
        t, was_numpy = packed, False
    else:
        t, was_numpy = as_tensor(packed, "packed")
    if t.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got dtype {dtype_name(t.dtype)}")
    n = check_nonnegative_int(n, "n")
    signed = check_bool(signed, "signed")
    need = packed_nbytes(n, bits)
    if t.numel() < need:
        raise ValueError(f"packed holds {t.numel()} bytes, but {n} codes of {bits} bits need {need}")
    return t.reshape(-1), was_numpy, bits, n, signed


def _unpacked_dtype(bits: int, signed: bool) -> torch.dtype:
    """The dtype :func:`unpack` returns for ``bits``-bit codes: int32, or int64 for unsigned
    32-bit codes (which int32 cannot hold)."""
    return torch.int64 if bits == 32 and not signed else torch.int32


def unpack(packed: ArrayLike, bits: int, n: int, signed: bool = False, *, out: Optional[ArrayLike] = None) -> ArrayLike:
    """Inverse of :func:`pack`: the first ``n`` codes from a packed uint8 array.

    Args:
        packed: uint8 array/tensor produced by :func:`pack` (any shape, flattened in C
            order; strided views are read as they are), on any device (the codes are
            computed there; on the ``meta`` device the result is an empty meta tensor).
        bits: code width, 1 to 16, or 32.
        n: number of codes to read.
        signed: sign-extend two's complement codes.
        out: optional contiguous array/tensor of ``n`` elements of the result's dtype, of
            the same kind as ``packed``, to write into (reuses a buffer); it must not share
            memory with ``packed``.

    Returns:
        A new array of shape ``(n,)`` (same kind and device as ``packed``), ``out`` if
        given: int32, or int64 for unsigned 32-bit codes (which int32 cannot hold).

    Raises:
        TypeError: ``packed`` is not uint8, ``n`` not an int, ``signed`` not a bool, or an
            ``out`` of the wrong kind/dtype or byte order.
        ValueError: ``bits`` outside 1..16 and 32, ``n`` negative, more codes than
            ``packed`` holds, or an ``out`` of the wrong size, read-only, on another device
            or overlapping ``packed``.
    """
    t, was_numpy, bits, n, signed = _packed_input(packed, bits, n, signed)
    dtype = _unpacked_dtype(bits, signed)
    if t.is_meta:
        return torch.empty(n, dtype=dtype, device="meta")
    need = packed_nbytes(n, bits)
    o = _check_out(out, n, dtype, was_numpy, t.device, t, "packed")
    if bits in (16, 32):
        res = _read_whole_bytes(t[:need], bits, n, signed, copy=bits == 32 and signed).to(dtype)
    elif 8 % bits == 0 and n and t.device.type == "cpu":
        res = o if o is not None else torch.empty(n, dtype=torch.int32)
        _unpack_fast(t[:need], bits, n, signed, res)
        return out if out is not None else like_input(res, was_numpy)
    else:
        res = _unpack_bitstream(t[:need], bits, n, signed)
    if o is not None:
        o.copy_(res)
        return out
    return like_input(res, was_numpy)


def unpack_view(packed: ArrayLike, bits: int, n: int, signed: bool = False) -> ArrayLike:
    """The first ``n`` codes of a packed uint8 array, without a copy where the bytes already
    are the codes.

    8-bit codes are ``packed`` itself (uint8, or viewed as int8 when ``signed``); signed
    16- and 32-bit codes are its bytes viewed as int16/int32 (little-endian machines; a
    strided or misaligned ``packed`` is copied first). Every other case is :func:`unpack`:
    unsigned 16/32-bit codes widened to int32/int64, other widths unpacked to int32.
    Writing into a view writes into ``packed``.

    Args:
        packed: uint8 array/tensor produced by :func:`pack`, on any device (``meta``
            included: the result is then a meta tensor).
        bits: code width, 1 to 16, or 32.
        n: number of codes to read.
        signed: sign-extend two's complement codes.

    Returns:
        Flat integer array of ``n`` codes (same kind and device as ``packed``).

    Raises:
        TypeError, ValueError: as :func:`unpack`.
    """
    t, was_numpy, bits, n, signed = _packed_input(packed, bits, n, signed)
    if bits == 8:
        res = t[:n].view(torch.int8) if signed else t[:n]
    elif bits in (16, 32) and signed and _LITTLE_ENDIAN:
        res = _read_whole_bytes(t[: packed_nbytes(n, bits)], bits, n, signed, copy=False)
    else:
        return unpack(packed, bits, n, signed)
    return like_input(res, was_numpy)


def _read_whole_bytes(b: torch.Tensor, bits: int, n: int, signed: bool, copy: bool) -> torch.Tensor:
    """``n`` codes of 16 or 32 bits from their little-endian bytes ``b`` (exactly ``n * bits
    / 8`` of them): int16/int32 (signed) or int32/int64 (unsigned) values.

    On a little-endian machine the bytes are viewed as int16/int32 (a view of ``b`` unless
    ``copy``, or unless ``b`` is strided or misaligned for the wider type); elsewhere each
    code is ``sum_k byte_k << 8k``, sign-extended when ``signed``.
    """
    width = _WHOLE_BYTES[bits]
    if _LITTLE_ENDIAN:
        if copy or b.stride(0) != 1 or b.storage_offset() % (bits // 8):
            b = torch.empty(b.numel(), dtype=torch.uint8, device=b.device).copy_(b)
        v = b.view(width)
    else:
        shifts = torch.arange(0, bits, 8, dtype=torch.int64, device=b.device)
        v = (b.reshape(n, bits // 8).to(torch.int64) << shifts).sum(dim=1).to(width)
    if signed:
        return v
    return v.to(torch.int64) & 0xFFFFFFFF if bits == 32 else v.to(torch.int32) & 0xFFFF


def _unpack_bitstream(b: torch.Tensor, bits: int, n: int, signed: bool) -> torch.Tensor:
    """Codes of 1 to 16 bits from the bytes ``b`` in plain tensor operations on ``b``'s own
    device (int32): bit ``k`` of the stream is ``(b[k // 8] >> (k % 8)) & 1``, and code ``i``
    is ``sum_j bit[i*bits + j] << j``, sign-extended when ``signed``."""
    b = b.to(torch.int32)
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
    return u.to(torch.int32)


def _unpack_fast(b: torch.Tensor, bits: int, n: int, signed: bool, res: torch.Tensor) -> None:
    """Unpack widths that divide 8 chunk by chunk, in uint8 (or int8 when ``signed``).

    Code ``k`` of a byte is ``(byte >> k*bits) & mask``; signed codes shift the field to
    the top of an int8 first, so the arithmetic right shift sign-extends it:
    ``(byte << (8 - (k+1)*bits)) >> (8 - bits)``.
    """
    per, mask = 8 // bits, (1 << bits) - 1
    whole = n // per  # bytes whose codes are all wanted
    src = b.view(torch.int8) if signed else b
    step = chunk_elements() // per
    tmp = torch.empty(step, dtype=src.dtype)
    r2 = res[: whole * per].view(-1, per)
    for start in range(0, whole, step):
        c = src[start : min(whole, start + step)]
        s = tmp[: c.numel()]
        dst = r2[start : start + c.numel()]
        if per == 1:
            dst[:, 0].copy_(c)
            continue
        for k in range(per):
            if signed:
                up = 8 - (k + 1) * bits
                if up:
                    torch.bitwise_left_shift(c, up, out=s)
                    s.bitwise_right_shift_(8 - bits)
                else:
                    torch.bitwise_right_shift(c, 8 - bits, out=s)
            elif k == 0:
                torch.bitwise_and(c, mask, out=s)
            else:
                torch.bitwise_right_shift(c, k * bits, out=s)
                if k < per - 1:
                    s.bitwise_and_(mask)
            dst[:, k].copy_(s)
    rest = n - whole * per
    if rest:  # the first codes of the last byte
        last = int(b[whole])
        for k in range(rest):
            v = (last >> (k * bits)) & mask
            res[whole * per + k] = v - (1 << bits) if signed and v >> (bits - 1) else v
