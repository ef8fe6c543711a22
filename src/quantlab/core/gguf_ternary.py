"""The ternary GGUF codecs: TQ1_0 and TQ2_0 (BitNet b1.58's weights in {-1, 0, +1} times a scale).

A super-block of 256 weights has one fp16 scale ``d = max|x|`` and trits ``t = round-half-away(x
/ d) + 1`` in {0, 1, 2}: TQ1_0 packs five per byte in base 3 (``3^5 = 243 <= 256``; 54 bytes,
1.6875 bits per weight), TQ2_0 stores two bits each (66 bytes, 2.0625 bits per weight). Byte
layouts in :mod:`quantlab.core.gguf_blocks`; the bytes are those of ``gguf.quants``.

Taught in: chapters/04_in_practice.ipynb, "Formats you will meet in files".
"""

from __future__ import annotations

from typing import Callable

import torch

from .gguf_layout import CRUMB_SHIFT, QK_K, bytes_to_fp16, cat_bytes, fp16_bytes, inverse, round_half_away

__all__ = ["ENCODERS", "DECODERS", "tq2_0_trits"]

# --------------------------------------------------------------------------- encoders


def _trits(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``d = max|x|`` and ``t = round-half-away(x / d) + 1`` in {0, 1, 2}, int32 (n, 256)."""
    d = b.abs().amax(dim=1, keepdim=True)
    t = round_half_away(b * inverse(d)).to(torch.int32) + 1
    return d, t


def _base3(t: torch.Tensor, n_digits: int, stride: int) -> torch.Tensor:
    """``sum_k t[:, k*stride + j] * 3^(4-k)`` over ``k < n_digits`` for each ``j < stride``."""
    pw = torch.tensor([81, 27, 9, 3, 1][:n_digits], dtype=torch.int32).reshape(1, -1, 1)
    return (t.reshape(-1, n_digits, stride) * pw).sum(dim=1)


def _enc_tq1_0(b: torch.Tensor) -> torch.Tensor:
    d, t = _trits(b)
    v = torch.cat([_base3(t[:, :160], 5, 32), _base3(t[:, 160:240], 5, 16), _base3(t[:, 240:], 4, 4)], dim=1)
    return cat_bytes((v * 256 + 242) // 243, fp16_bytes(d))


def _enc_tq2_0(b: torch.Tensor) -> torch.Tensor:
    d, t = _trits(b)
    t = t.reshape(-1, 2, 4, 32) << CRUMB_SHIFT
    qs = t.sum(dim=2).reshape(-1, 64)  # disjoint bit fields: the sum is the OR
    return cat_bytes(qs, fp16_bytes(d))


def _trit_digits(qs: torch.Tensor, n_digits: int) -> torch.Tensor:
    """Base-3 bytes (n, m) -> digits (n, n_digits * m): digit k of byte j at ``k * m + j``."""
    pw = torch.tensor([1, 3, 9, 27, 81][:n_digits], dtype=torch.int32).reshape(1, -1, 1)
    v = (qs.to(torch.int32).unsqueeze(1) * pw) & 255  # the uint8 product, modulo 256
    return ((v * 3) >> 8).reshape(qs.shape[0], -1)


def _dec_tq1_0(r: torch.Tensor) -> torch.Tensor:
    t = torch.cat([_trit_digits(r[:, :32], 5), _trit_digits(r[:, 32:48], 5), _trit_digits(r[:, 48:52], 4)], dim=1)
    return bytes_to_fp16(r[:, 52:54]) * (t - 1).to(torch.float32)


def tq2_0_trits(r: torch.Tensor) -> torch.Tensor:
    """TQ2_0 bytes (n, 66) -> the 2-bit codes (n, 256) in weight order (0, 1, 2 for the trits
    -1, 0, +1; 3 is never written by the quantizer)."""
    return ((r[:, :64].to(torch.int32).reshape(-1, 2, 1, 32) >> CRUMB_SHIFT) & 3).reshape(-1, QK_K)


def _dec_tq2_0(r: torch.Tensor) -> torch.Tensor:
    return bytes_to_fp16(r[:, 64:66]) * (tq2_0_trits(r) - 1).to(torch.float32)


ENCODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tq1_0": _enc_tq1_0, "tq2_0": _enc_tq2_0}
"""Kind -> encoder: float32 super-blocks (n, 256) to their bytes (n, BLOCK_BYTES[kind])."""

DECODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tq1_0": _dec_tq1_0, "tq2_0": _dec_tq2_0}
"""Kind -> decoder: the bytes of whole super-blocks (n, BLOCK_BYTES[kind]) to float32 (n, 256)."""
