"""Checker of the int4 packing exercise: two signed 4-bit codes per byte, and back.

:func:`check_pack_int4` -- code ``2j`` in the low nibble of byte ``j`` and code ``2j + 1`` in
the high one, each as its 4-bit two's complement (``code & 0xF``), as :func:`quantlab.pack`
does; unpacking sign-extends (``n - 16`` for ``n >= 8``). It names swapped nibbles, a lost
sign, an odd length padded the wrong way, and the like.

Taught in: chapters/02b_build_it.ipynb, "Build it yourself".
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .exercises_common import (
    CheckResult,
    Fail,
    call_reader,
    describe,
    first_difference,
    first_fraction,
    numeric_array,
    require_callable,
    run_check,
    show_values,
)

__all__ = ["check_pack_int4"]

# --------------------------------------------------------------------------- int4 packing


def _ref_pack_int4(codes: np.ndarray) -> np.ndarray:
    """Reference: byte i = ``(c[2i] & 0xF) | (c[2i+1] & 0xF) << 4``, odd length padded with 0."""
    c = np.asarray(codes, dtype=np.int64).ravel() & 0xF
    if c.size % 2:
        c = np.append(c, 0)
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def _ref_unpack_int4(packed: np.ndarray, n: int) -> np.ndarray:
    """Reference: low nibble first, sign-extended (``v - 16`` where ``v >= 8``), first ``n``."""
    b = np.asarray(packed, dtype=np.int64)
    v = np.stack([b & 0xF, b >> 4], axis=1).ravel()[:n]
    return np.where(v >= 8, v - 16, v)


def _pack_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    return [
        rng.permutation(np.arange(-8, 8)).astype(np.int64),  # every code once
        np.array([7, -8], dtype=np.int64),
        rng.integers(-8, 8, 7).astype(np.int64),  # odd length
        np.array([-3], dtype=np.int64),
        rng.integers(-8, 8, 33).astype(np.int8),
    ]


def _check_pack_case(pack: Callable, unpack: Callable, codes: np.ndarray) -> None:
    n = codes.size
    nbytes = (n + 1) // 2
    where = f" (on codes = {show_values(codes, 10)}, n = {n}, dtype {codes.dtype})"
    odd = (
        (
            f". n = {n} is odd: pad the codes with one 0 to an even length, so the last byte "
            f"holds the last code in its low nibble"
        )
        if n % 2
        else ""
    )
    ref = _ref_pack_int4(codes)

    out = call_reader(pack, "pack(codes)", codes.copy(), hint=odd + where)
    try:
        arr = np.asarray(out)
    except Exception as err:
        raise Fail(f"pack returned {describe(out)}, not an array: {err}{where}") from None
    if arr.dtype.kind not in "iu":
        raise Fail(f"pack must return a uint8 array, got {describe(out)}{where}")
    if arr.ndim != 1:
        raise Fail(f"pack must return a flat 1-d array of ceil(n / 2) = {nbytes} bytes, got shape {arr.shape}{where}")
    if arr.size != nbytes:
        if n % 2 and arr.size == n // 2:
            raise Fail(
                f"for odd n = {n} the last code needs a byte of its own: pack must return "
                f"ceil(n / 2) = {nbytes} bytes, got {arr.size}; pad with a 0 code{where}"
            )
        if arr.size == n:
            raise Fail(
                f"pack returned one byte per code ({arr.size}); two 4-bit codes share a "
                f"byte: ceil(n / 2) = {nbytes} bytes{where}"
            )
        raise Fail(f"pack must return ceil(n / 2) = {nbytes} bytes, got {arr.size}{where}")
    if arr.dtype != np.uint8:
        right = np.array_equal(arr.astype(np.int64) & 0xFF, ref.astype(np.int64))
        raise Fail(
            f"pack must return dtype uint8 (one byte per two codes), got {arr.dtype}"
            + ("; the values are right otherwise: convert with .astype(np.uint8)" if right else "")
            + where
        )
    if not np.array_equal(arr, ref):
        c = codes.astype(np.int64)
        c2 = np.append(c, 0) if n % 2 else c
        lo, hi = c2[0::2], c2[1::2]
        k = first_difference(arr, ref)
        ex = (
            f"(byte {k} holds codes {lo[k]} (low nibble) and {hi[k]} (high nibble): expected "
            f"0x{int(ref[k]):02X}, got 0x{int(arr[k]):02X})"
        )
        variants = [
            (
                ((hi & 0xF) | ((lo & 0xF) << 4)) & 0xFF,
                "the nibbles are swapped: element 2i belongs in the low nibble and element 2i+1 in "
                "the high nibble, byte = (c[2i] & 0xF) | (c[2i+1] & 0xF) << 4 ",
            ),
            (
                (lo | ((hi & 0xF) << 4)) & 0xFF,
                "mask each code to its 4-bit two's complement (code & 0xF) before combining: a "
                "negative code is ...1111xxxx in two's complement, and unmasked in the low nibble "
                "its sign bits overwrite the high nibble ",
            ),
            (
                ((lo + 8) | ((hi + 8) << 4)) & 0xFF,
                "you stored code + 8 (offset binary); quantlab.pack stores two's complement "
                "nibbles, code & 0xF (so -1 is 0xF and -8 is 0x8) ",
            ),
        ]
        for variant, message in variants:
            if np.array_equal(arr.astype(np.int64), variant):
                raise Fail(message + ex + where)
        raise Fail(f"the packed bytes differ: byte i = (c[2i] & 0xF) | (c[2i+1] & 0xF) << 4 {ex}{where}")

    # unpack, on the reference bytes
    out = call_reader(unpack, f"unpack(packed, {n})", ref.copy(), n, hint=odd + where)
    got = numeric_array(out, "the codes returned by unpack").ravel()
    if got.size != n:
        if n % 2 and got.size == n + 1:
            raise Fail(
                f"unpack must return exactly n = {n} codes, got {n + 1}: the last byte's "
                f"high nibble is padding, drop it ([:n]){where}"
            )
        raise Fail(f"unpack must return n = {n} codes, got {got.size}{where}")
    i = first_fraction(got)
    if i is not None:
        raise Fail(f"unpack returned codes with a fraction (e.g. {got[i]:.4g}): use integer operations (&, >>){where}")
    expected = codes.astype(np.float64)
    if not np.array_equal(got, expected):
        k = first_difference(got, expected)
        ex = (
            f"(code {k} is in the {'low' if k % 2 == 0 else 'high'} nibble of byte {k // 2} = "
            f"0x{int(ref[k // 2]):02X}: expected {int(expected[k])}, got {int(got[k])})"
        )
        v = np.stack([ref.astype(np.int64) & 0xF, ref.astype(np.int64) >> 4], axis=1)
        swapped = v[:, ::-1].ravel()[:n]
        variants = [
            (
                expected.astype(np.int64) & 0xF,
                "codes come back as 8..15 instead of -8..-1: the "
                "nibble is two's complement, sign-extend it: v - 16 where v >= 8 "
                "(np.where(v >= 8, v - 16, v)) ",
            ),
            (
                expected.astype(np.int64) & 0xFF,
                "negative codes come back as 248..255: uint8 "
                "arithmetic wrapped around when subtracting 16; convert to a signed type first, "
                "v = v.astype(np.int16), then v - 16 where v >= 8 ",
            ),
            (
                np.where(swapped >= 8, swapped - 16, swapped),
                "the nibbles are read swapped: element "
                "2i is in the low nibble (byte & 0xF) and element 2i+1 in the high nibble "
                "(byte >> 4) ",
            ),
            (
                (expected.astype(np.int64) & 0xF) - 8,
                "you subtracted 8 (offset binary); the nibbles are two's complement: v - 16 where v >= 8 ",
            ),
        ]
        for variant, message in variants:
            if np.array_equal(got, variant.astype(np.float64)):
                raise Fail(message + ex + where)
        raise Fail(f"unpack returned the wrong codes {ex}{where}")


def check_pack_int4(pack: Callable, unpack: Callable) -> CheckResult:
    """Check int4 packing: two signed 4-bit codes per byte, as :func:`quantlab.pack` lays them out.

    The layout (``quantlab.pack(codes, 4)`` / ``quantlab.unpack(packed, 4, n, signed=True)``)::

        byte[i] = (c[2i] & 0xF) | (c[2i+1] & 0xF) << 4     # element 2i in the LOW nibble
        len(packed) = ceil(n / 2)                          # odd n: last high nibble is 0
        unpack: v = (byte & 0xF, byte >> 4) interleaved, first n;  code = v - 16 if v >= 8

    Codes are ``-8..7``, stored as two's complement nibbles (``-1 -> 0xF``,
    ``-8 -> 0x8``). The cases have even and odd lengths (1, 2, 7, 16, 33 codes), every
    code value, and int64 and int8 inputs. ``unpack`` is checked on the reference bytes.

    Mistakes recognised (each with its own message): swapped nibbles (in pack or unpack);
    a sign lost in unpack (codes 8..15 instead of -8..-1) or wrapped around in uint8
    (248..255); unmasked negative codes; offset-binary nibbles; an odd length not handled
    (an exception, a missing last byte, or the padding code returned by unpack); a dtype
    other than uint8; a length other than ``ceil(n / 2)``; exceptions.

    Args:
        pack: the reader's ``pack(codes) -> packed``: ``codes`` a 1-d integer numpy array
            (int64 or int8) of values in -8..7; ``packed`` a 1-d uint8 array of
            ``ceil(n / 2)`` bytes.
        unpack: the reader's ``unpack(packed, n) -> codes``: the first ``n`` codes as a 1-d
            integer array (integral floats are accepted).

    Returns:
        A :class:`CheckResult`: passed, or the first mistake found, in words.

    Raises:
        TypeError: ``pack`` or ``unpack`` is not callable.
    """
    require_callable(pack, "pack")
    require_callable(unpack, "unpack")
    cases = _pack_cases()

    def body() -> str:
        for codes in cases:
            _check_pack_case(pack, unpack, codes)
        sizes = ", ".join(str(c.size) for c in cases)
        return (
            f"pack and unpack agree with quantlab's int4 layout on {len(cases)} arrays "
            f"({sizes} codes): element 2i in the low nibble, 2i+1 in the high nibble, "
            f"two's complement, odd lengths padded."
        )

    return run_check(body)
