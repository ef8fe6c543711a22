"""The 32-weight GGUF codecs: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and MXFP4.

Each block holds 32 weights and one or two scales: Q8_0 (8.5 bits per weight, ``d = max|x| /
127``), Q4_0 and Q5_0 (4.5 and 5.5, ``d = m / -8`` and ``m / -16`` with ``m`` the weight of
largest magnitude with its sign, codes offset by 8 and 16), Q4_1 and Q5_1 (5.0 and 6.0, a
scale ``d = (max - min) / nmax`` and an offset ``min``), MXFP4 (4.25, an E8M0 exponent and
E2M1 codes). Byte layouts in :mod:`quantlab.core.gguf_blocks`; the encoders give the bytes of
``gguf.quants.quantize`` and the decoders those of ``gguf.quants.dequantize``, bit for bit.

Taught in: chapters/04_in_practice.ipynb, "Formats you will meet in files".
"""

from __future__ import annotations

from typing import Callable

import torch

from ._backend import read_only
from .gguf_layout import (
    BLOCK_SIZE,
    bytes_to_fp16,
    cat_bytes,
    fp16_bytes,
    from_high_bits,
    from_nibbles,
    high_bits,
    inverse,
    nibbles,
    round_half_away,
    signed_max,
)
from .packing import pack, unpack

__all__ = ["ENCODERS", "DECODERS", "signed_codes"]

# --------------------------------------------------------------------------- encoders
# Each takes float32 blocks (n, 32) and returns their bytes (n, BLOCK_BYTES[kind]).


def _q8_0_codes(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = b.abs().amax(dim=1, keepdim=True) / 127
    return d, round_half_away(b * inverse(d)).to(torch.int8)


def _q4_0_codes(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = signed_max(b) / -8
    q = torch.trunc(b * inverse(d) + 8.5).clamp_(0, 15).to(torch.uint8)
    return d, q


def _enc_q8_0(b: torch.Tensor) -> torch.Tensor:
    d, q = _q8_0_codes(b)
    qs = pack(q, 8).reshape(-1, BLOCK_SIZE)  # int8 two's complement, one byte each
    return cat_bytes(fp16_bytes(d), qs)


def _enc_q4_0(b: torch.Tensor) -> torch.Tensor:
    d, q = _q4_0_codes(b)
    # GGUF nibble order: byte j = q[j] | q[j+16] << 4. quantlab's pack puts element 2j in the
    # low nibble and 2j+1 in the high one, so interleave the two halves first.
    inter = q.reshape(-1, 2, BLOCK_SIZE // 2).transpose(1, 2)
    qs = pack(inter, 4).reshape(-1, BLOCK_SIZE // 2)
    return cat_bytes(fp16_bytes(d), qs)


def _min_max_codes(b: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_1 / Q5_1: ``d = (max - min) / nmax``, ``q = min(nmax, trunc((x - min) / d + 0.5))``."""
    lo = b.amin(dim=1, keepdim=True)
    d = (b.amax(dim=1, keepdim=True) - lo) / nmax
    q = torch.trunc((b - lo) * inverse(d) + 0.5).clamp_(0, nmax)
    return d, lo, q


def _enc_q4_1(b: torch.Tensor) -> torch.Tensor:
    d, lo, q = _min_max_codes(b, 15)
    return cat_bytes(fp16_bytes(d), fp16_bytes(lo), nibbles(q))


def _enc_q5_0(b: torch.Tensor) -> torch.Tensor:
    d = signed_max(b) / -16
    q = torch.trunc(b * inverse(d) + 16.5).clamp_(0, 31)
    return cat_bytes(fp16_bytes(d), high_bits(q), nibbles(q))


def _enc_q5_1(b: torch.Tensor) -> torch.Tensor:
    d, lo, q = _min_max_codes(b, 31)
    return cat_bytes(fp16_bytes(d), fp16_bytes(lo), high_bits(q), nibbles(q))


_MXFP4_K = read_only(torch.tensor([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=torch.float32))
"""MXFP4's ``kvalues``: twice the E2M1 values, indexed by the 4-bit code (sign in bit 3);
read-only, looked up with ``take`` (a copy)."""


def _e8m0_half(e: torch.Tensor) -> torch.Tensor:
    """ggml's ``GGML_E8M0_TO_FP32_HALF``: ``2^(e - 128)`` built from its float32 bits."""
    e = e.to(torch.int32)
    bits = torch.where(e < 2, 0x00200000 << e, (e - 1) << 23)
    return bits.view(torch.float32)


def _enc_mxfp4(b: torch.Tensor) -> torch.Tensor:
    amax = b.abs().amax(dim=1, keepdim=True)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    # float32 log2 as in ggml; its floor agrees with numpy's float32 log2 on every float32
    # within thousands of steps of a power of two (the only place the two could differ).
    e = torch.where(amax > 0, torch.floor(torch.log2(safe)) - 2 + 127, torch.zeros_like(amax))
    e = e.clamp_(0, 255).to(torch.uint8)
    err = (_e8m0_half(e).unsqueeze(-1) * _MXFP4_K - b.unsqueeze(-1)).abs()  # (n, 32, 16)
    q = err.argmin(dim=-1)  # first index of the smallest error
    return cat_bytes(e, nibbles(q))


# --------------------------------------------------------------------------- decoders
# Each takes the bytes of whole blocks (n, BLOCK_BYTES[kind]) and returns float32 (n, size),
# with the operations in the order gguf.quants.dequantize uses (bit-identical results).


def signed_codes(kind: str, qs: torch.Tensor) -> torch.Tensor:
    """Signed codes (n_blocks, 32) from the code bytes (n_blocks, 32 or 16) of Q8_0 (int8) or
    Q4_0 (``q - 8``, in -8..7); ``kind`` is ``"q8_0"`` or ``"q4_0"``."""
    if kind == "q8_0":
        return unpack(qs.reshape(-1), 8, qs.numel(), signed=True).reshape(-1, BLOCK_SIZE)
    inter = unpack(qs.reshape(-1), 4, 2 * qs.numel()).reshape(-1, BLOCK_SIZE // 2, 2)
    return inter.transpose(1, 2).reshape(-1, BLOCK_SIZE) - 8


def _dec_q8_0(r: torch.Tensor) -> torch.Tensor:
    return signed_codes("q8_0", r[:, 2:]).to(torch.float32) * bytes_to_fp16(r[:, :2])


def _dec_q4_0(r: torch.Tensor) -> torch.Tensor:
    return signed_codes("q4_0", r[:, 2:]).to(torch.float32) * bytes_to_fp16(r[:, :2])


def _dec_q4_1(r: torch.Tensor) -> torch.Tensor:
    q = from_nibbles(r[:, 4:]).to(torch.float32)
    return bytes_to_fp16(r[:, :2]) * q + bytes_to_fp16(r[:, 2:4])


def _dec_q5_0(r: torch.Tensor) -> torch.Tensor:
    q = (from_nibbles(r[:, 6:]) | from_high_bits(r[:, 2:6])) - 16
    return bytes_to_fp16(r[:, :2]) * q.to(torch.float32)


def _dec_q5_1(r: torch.Tensor) -> torch.Tensor:
    q = (from_nibbles(r[:, 8:]) | from_high_bits(r[:, 4:8])).to(torch.float32)
    return bytes_to_fp16(r[:, :2]) * q + bytes_to_fp16(r[:, 2:4])


def _dec_mxfp4(r: torch.Tensor) -> torch.Tensor:
    return _e8m0_half(r[:, :1]) * _MXFP4_K.take(from_nibbles(r[:, 1:]).long())


ENCODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "q8_0": _enc_q8_0,
    "q4_0": _enc_q4_0,
    "q4_1": _enc_q4_1,
    "q5_0": _enc_q5_0,
    "q5_1": _enc_q5_1,
    "mxfp4": _enc_mxfp4,
}
"""Kind -> encoder: float32 blocks (n, 32) to their bytes (n, BLOCK_BYTES[kind])."""

DECODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "q8_0": _dec_q8_0,
    "q4_0": _dec_q4_0,
    "q4_1": _dec_q4_1,
    "q5_0": _dec_q5_0,
    "q5_1": _dec_q5_1,
    "mxfp4": _dec_mxfp4,
}
"""Kind -> decoder: the bytes of whole blocks (n, BLOCK_BYTES[kind]) to float32 (n, 32)."""
