"""The GGUF block formats' shared tables and byte fields.

The tables every codec and the file writer read -- weights per block (:data:`BLOCK_SIZES`:
32, or :data:`QK_K` = 256 for the ternary kinds and the k-quants), bytes per block
(:data:`BLOCK_BYTES`), bits per weight (``8 * bytes / weights``: Q4_0 18 bytes per 32 weights
= 4.5) and llama.cpp's fallback types (:data:`FALLBACK`) -- and the little-endian byte fields
the block layouts share: fp16 scales as two bytes, Q4_0's nibble order (``byte j = q[j] |
q[j + 16] << 4``), Q5's high bits as a uint32, ggml's float32 rounding (``roundf``, correctly
rounded division). The layouts themselves are in :mod:`quantlab.core.gguf_blocks`, whose
names these are too.

Taught in: chapters/04_in_practice.ipynb, "Formats you will meet in files".
"""

from __future__ import annotations

from typing import Literal

import torch

from .formats import get_format

__all__ = [
    "BLOCK_SIZE",
    "QK_K",
    "KINDS",
    "BLOCK_SIZES",
    "BLOCK_BYTES",
    "BITS_PER_WEIGHT",
    "FALLBACK",
    "Kind",
    "CRUMB_SHIFT",
    "round_half_away",
    "signed_max",
    "fp16_bytes",
    "bytes_to_fp16",
    "rdiv",
    "inverse",
    "nibbles",
    "from_nibbles",
    "high_bits",
    "from_high_bits",
    "cat_bytes",
]

BLOCK_SIZE = 32
"""Weights per block in Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and MXFP4."""

QK_K = 256
"""Weights per super-block in TQ1_0, TQ2_0, Q4_K and Q6_K."""

KINDS = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4", "tq1_0", "tq2_0", "q4_k", "q6_k")
"""Every block format this module reads and writes (lower-case ggml type names)."""

BLOCK_SIZES = {k: (QK_K if k in ("tq1_0", "tq2_0", "q4_k", "q6_k") else BLOCK_SIZE) for k in KINDS}
"""Weights per block: 32, or 256 for TQ1_0, TQ2_0, Q4_K and Q6_K."""

BLOCK_BYTES = {
    "q8_0": 2 + 32,  # d, 32 int8
    "q4_0": 2 + 16,  # d, 32 nibbles
    "q4_1": 2 + 2 + 16,  # d, m, 32 nibbles
    "q5_0": 2 + 4 + 16,  # d, qh, 32 nibbles
    "q5_1": 2 + 2 + 4 + 16,  # d, m, qh, 32 nibbles
    "mxfp4": 1 + 16,  # e, 32 nibbles
    "tq1_0": 48 + 4 + 2,  # 240 trits five per byte, 16 trits four per byte, d
    "tq2_0": 64 + 2,  # 256 two-bit trits, d
    "q4_k": 2 + 2 + 12 + 128,  # d, dmin, 6-bit scales and mins, 256 nibbles
    "q6_k": 128 + 64 + 16 + 2,  # ql, qh, int8 scales, d
}
"""Bytes per block (see the module docstring for each layout)."""

BITS_PER_WEIGHT = {k: 8 * BLOCK_BYTES[k] / BLOCK_SIZES[k] for k in KINDS}
"""``8 * BLOCK_BYTES / BLOCK_SIZES``: q8_0 8.5, q4_0 4.5, q4_1 5.0, q5_0 5.5, q5_1 6.0,
mxfp4 4.25, tq1_0 1.6875, tq2_0 2.0625, q4_k 4.5, q6_k 6.5625."""

FALLBACK = {"q4_k": "q5_0", "q6_k": "q8_0", "tq1_0": "q4_0", "tq2_0": "q4_0"}
"""The type llama.cpp's quantizer (``tensor_type_fallback`` in ``src/llama-quant.cpp``) uses
instead of a 256-weight format for a tensor whose rows are not a multiple of 256 (F16 if they
are not a multiple of 32 either)."""

#: A GGUF block kind, as the type checker sees it (the values of :data:`KINDS`).
Kind = Literal["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4", "tq1_0", "tq2_0", "q4_k", "q6_k"]
_FP16 = get_format("fp16")


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """``sign(v) * (floor|v| + floor(2 (|v| - floor|v|)))``: ggml's roundf, in float32.

    Written this way (not ``floor(|v| + 0.5)``) because ``|v| + 0.5`` can itself round up
    in float32 (e.g. 0.49999997 + 0.5 == 1.0).
    """
    a = v.abs()
    fl = torch.floor(a)
    fl += torch.floor(2 * (a - fl))
    return torch.sign(v) * fl


def fp16_bytes(d: torch.Tensor) -> torch.Tensor:
    """fp16 bit patterns of ``d`` (n, 1) as little-endian bytes (n, 2) (quantlab's fp16 format)."""
    code = _FP16.encode(d.reshape(-1)).to(torch.int32)
    return torch.stack([code & 0xFF, (code >> 8) & 0xFF], dim=1).to(torch.uint8)


def bytes_to_fp16(b: torch.Tensor) -> torch.Tensor:
    """Little-endian fp16 bytes (n, 2) -> float32 values (n, 1)."""
    code = b[:, 0].to(torch.int32) | (b[:, 1].to(torch.int32) << 8)
    return _FP16.decode(code).reshape(-1, 1)


def rdiv(a: float, t: torch.Tensor) -> torch.Tensor:
    """``a / t`` correctly rounded in float32, as C's ``a / t``.

    (Python's ``a / t`` on a tensor computes ``t.reciprocal() * a``: two roundings.)
    """
    return torch.div(torch.tensor(a, dtype=t.dtype), t)


def inverse(d: torch.Tensor) -> torch.Tensor:
    """``1/d``, or 0 where ``d == 0`` (ggml's ``id = d ? 1/d : 0``)."""
    return torch.where(d == 0, torch.zeros_like(d), rdiv(1.0, d))


def nibbles(q: torch.Tensor) -> torch.Tensor:
    """Codes (n, 32) -> 16 bytes (n, 16): ``q[j] & 15 | (q[j + 16] & 15) << 4`` (Q4_0 order)."""
    q = q.to(torch.int32)
    return ((q[:, :16] & 15) | ((q[:, 16:] & 15) << 4)).to(torch.uint8)


def from_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """16 bytes (n, 16) -> codes (n, 32) in 0..15: the low nibbles first, then the high ones."""
    qs = qs.to(torch.int32)
    return torch.cat([qs & 15, qs >> 4], dim=1)


_BIT = 1 << torch.arange(8, dtype=torch.int32)
CRUMB_SHIFT = (2 * torch.arange(4, dtype=torch.int32)).reshape(1, 1, 4, 1)
"""Shifts of the four 2-bit fields of a byte (bits 2k..2k+1), shaped to broadcast over (n, groups, 4, 32)."""


def high_bits(q: torch.Tensor) -> torch.Tensor:
    """Q5's ``qh``: bit 4 of each of 32 codes as a little-endian uint32 -> 4 bytes (n, 4)."""
    bits = (q.to(torch.int32) >> 4) & 1
    return (bits.reshape(-1, 4, 8) * _BIT).sum(dim=2).to(torch.uint8)


def from_high_bits(qh: torch.Tensor) -> torch.Tensor:
    """4 bytes of ``qh`` (n, 4) -> ``16 * bit`` for each of the 32 codes (n, 32)."""
    bits = (qh.to(torch.int32).unsqueeze(-1) >> torch.arange(8, dtype=torch.int32)) & 1
    return bits.reshape(-1, 32) << 4


def cat_bytes(*parts: torch.Tensor) -> torch.Tensor:
    """The fields of blocks (each (n, k_i), any integer dtype) side by side as uint8 bytes (n, sum k_i)."""
    return torch.cat([p.to(torch.uint8) for p in parts], dim=1)


def signed_max(b: torch.Tensor) -> torch.Tensor:
    """The weight of largest magnitude with its sign (the first one on ties), shape (n, 1)."""
    imax = b.abs().argmax(dim=1, keepdim=True)  # first index of the largest magnitude
    return torch.gather(b, 1, imax)
