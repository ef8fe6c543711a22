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

(GGUF's Q4_0 uses another order -- the first half of a 32-weight block in the low nibbles,
the second half in the high nibbles; :mod:`quantlab.gguf_blocks` handles that layout.)

Taught in: chapters/04_in_practice.ipynb, "Real savings need packed storage".
"""

from __future__ import annotations

import math

import torch

from ._backend import ArrayLike, as_tensor, like_input

__all__ = ["pack", "unpack", "packed_nbytes"]


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int from 1 to 16, got {bits!r}")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be from 1 to 16, got {bits}")
    return bits


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes needed for ``n`` codes of ``bits`` bits: ``ceil(n * bits / 8)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return math.ceil(n * bits / 8)


def pack(codes: ArrayLike, bits: int) -> ArrayLike:
    """Pack integer codes into a flat uint8 array.

    Args:
        codes: integer array/tensor of any shape (flattened in C order); each value must
            fit in ``bits`` bits, as unsigned (``0 .. 2^bits-1``) or two's complement
            signed (``-2^(bits-1) .. 2^(bits-1)-1``).
        bits: code width, 1 to 16.

    Returns:
        uint8 array of ``ceil(codes.size * bits / 8)`` bytes (same kind as ``codes``).

    Raises:
        TypeError: float codes or a non-int ``bits``.
        ValueError: ``bits`` outside 1..16, or a code that does not fit in ``bits`` bits.
    """
    bits = _check_bits(bits)
    t, was_numpy = as_tensor(codes, "codes")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"codes must be integers, got dtype {str(t.dtype).replace('torch.', '')}")
    flat = t.reshape(-1).to(torch.int32)
    if flat.numel():
        lo, hi = int(flat.min()), int(flat.max())
        if lo < -(1 << (bits - 1)) or hi > (1 << bits) - 1:
            raise ValueError(
                f"codes must fit in {bits} bits ([{-(1 << (bits - 1))}, {(1 << bits) - 1}]), "
                f"got values in [{lo}, {hi}]"
            )
    u = flat & ((1 << bits) - 1)
    n = u.numel()
    if 8 % bits == 0:
        per = 8 // bits
        pad = (-n) % per
        if pad:
            u = torch.cat([u, u.new_zeros(pad)])
        u = u.reshape(-1, per)
        shifts = torch.arange(0, 8, bits, dtype=torch.int32)
        out = (u << shifts).sum(dim=1).to(torch.uint8)
    else:
        stream = ((u.unsqueeze(1) >> torch.arange(bits, dtype=torch.int32)) & 1).reshape(-1)
        pad = (-stream.numel()) % 8
        if pad:
            stream = torch.cat([stream, stream.new_zeros(pad)])
        out = (stream.reshape(-1, 8) << torch.arange(8, dtype=torch.int32)).sum(dim=1).to(torch.uint8)
    return like_input(out, was_numpy)


def unpack(packed: ArrayLike, bits: int, n: int, signed: bool = False) -> ArrayLike:
    """Inverse of :func:`pack`: the first ``n`` codes from a packed uint8 array.

    Args:
        packed: flat uint8 array/tensor produced by :func:`pack`.
        bits: code width, 1 to 16.
        n: number of codes to read.
        signed: sign-extend two's complement codes.

    Returns:
        int32 array of shape ``(n,)`` (same kind as ``packed``).

    Raises:
        TypeError: ``packed`` is not uint8.
        ValueError: ``n`` negative or more codes than ``packed`` holds.
    """
    bits = _check_bits(bits)
    t, was_numpy = as_tensor(packed, "packed")
    if t.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got dtype {str(t.dtype).replace('torch.', '')}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    need = packed_nbytes(n, bits)
    if t.numel() < need:
        raise ValueError(f"packed holds {t.numel()} bytes, but {n} codes of {bits} bits need {need}")
    b = t.reshape(-1)[:need].to(torch.int32)
    if 8 % bits == 0:
        shifts = torch.arange(0, 8, bits, dtype=torch.int32)
        u = ((b.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[:n]
    else:
        stream = ((b.unsqueeze(1) >> torch.arange(8, dtype=torch.int32)) & 1).reshape(-1)
        stream = stream[: n * bits].reshape(n, bits)
        u = (stream << torch.arange(bits, dtype=torch.int32)).sum(dim=1, dtype=torch.int32)
    if signed:
        u = torch.where(u >= (1 << (bits - 1)), u - (1 << bits), u)
    return like_input(u.to(torch.int32), was_numpy)
