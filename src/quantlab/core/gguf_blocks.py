"""GGUF block formats, byte for byte as llama.cpp writes them.

GGUF (the file format of llama.cpp) stores a weight row as consecutive *blocks*. Each block
is self-contained: one or two scales plus the codes of 32 weights (Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1, MXFP4) or of 256 weights (the ternary TQ1_0 and TQ2_0, and the "k-quants" Q4_K and
Q6_K, whose 256-weight *super-block* holds 8 or 16 sub-blocks with their own small scales).
All multi-byte fields are little-endian; ``fp16`` is IEEE half precision.

**Q8_0** -- 34 bytes per 32 weights = **8.5 bits per weight**::

    bytes 0-1   d      fp16:  d = max|x| / 127
    bytes 2-33  qs[i]  int8:  round-half-away-from-zero(x[i] / d)   in [-127, 127]
    value:      x[i] ~ d * qs[i]

**Q4_0** -- 18 bytes per 32 weights = **4.5 bits per weight** (4 for the code, 16/32 = 0.5
for the shared scale)::

    bytes 0-1   d      fp16:  d = m / -8, where m is the weight of largest magnitude
                       *with its sign* (the first one on ties)
    bytes 2-17  16 bytes of 4-bit codes q[i] = clamp(trunc(x[i] / d + 8.5), 0, 15):
                byte j holds q[j] in its low nibble and q[j + 16] in its high nibble
                (first half of the block in the low nibbles, second half in the high)
    value:      x[i] ~ d * (q[i] - 8)

Q4_0 is symmetric int4 with the codes offset by 8 (``q - 8`` runs from -8 to 7). Choosing
``d = m / -8`` maps the largest-magnitude weight exactly onto the code -8, the end of the
int4 range that has one extra level, so that weight is stored without error; the opposite
end reaches only ``7/8`` of ``|m|``. ``x / d + 8.5`` truncated is ``round(x / d) + 8``
(halves rounded up), computed with the *unrounded* float32 ``1/d``; only the stored ``d``
is rounded to fp16. Every encoder below likewise computes its codes with the float32 scale
and rounds only the stored scale to fp16.

**Q4_1** -- 20 bytes per 32 weights = **5.0 bits per weight** (asymmetric: a scale and an
offset)::

    bytes 0-1   d      fp16:  d = (max - min) / 15
    bytes 2-3   m      fp16:  m = min, the smallest weight of the block
    bytes 4-19  4-bit codes q[i] = min(15, trunc((x[i] - min) / d + 0.5)), Q4_0 nibble order
    value:      x[i] ~ d * q[i] + m

**Q5_0** -- 22 bytes per 32 weights = **5.5 bits per weight**::

    bytes 0-1   d      fp16:  d = m / -16 (m: the weight of largest magnitude, with its sign)
    bytes 2-5   qh     uint32: bit i is bit 4 (the fifth bit) of q[i]
    bytes 6-21  low 4 bits of q[i] = clamp(trunc(x[i] / d + 16.5), 0, 31), Q4_0 nibble order
    value:      x[i] ~ d * (q[i] - 16)

**Q5_1** -- 24 bytes per 32 weights = **6.0 bits per weight**::

    bytes 0-1   d      fp16:  d = (max - min) / 31
    bytes 2-3   m      fp16:  m = min
    bytes 4-7   qh     uint32: bit i is bit 4 of q[i]
    bytes 8-23  low 4 bits of q[i] = min(31, trunc((x[i] - min) / d + 0.5)), Q4_0 nibble order
    value:      x[i] ~ d * q[i] + m

**MXFP4** (OCP microscaling FP4) -- 17 bytes per 32 weights = **4.25 bits per weight**::

    byte 0      e      E8M0 exponent: e = floor(log2(max|x|)) - 2 + 127   (0 if all zero)
    bytes 1-16  4-bit indices q[i] into kvalues, Q4_0 nibble order
                kvalues = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)
                (twice the E2M1 values 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives)
                q[i] = the index k with the smallest |d * kvalues[k] - x[i]| (the first on ties)
    value:      x[i] ~ d * kvalues[q[i]],   d = 2^(e - 128)   (half of the E8M0 scale 2^(e-127))

The exponent puts the largest magnitude in ``[4, 8) * 2^(e-127)``, just above E2M1's largest
value 6, so the top of the range is clipped to ``6 * 2^(e-127)`` rather than wasted. The
logarithm is float32 ``log2`` as in ggml (``log2f``), not the exact exponent: a maximum a few
float32 steps below a power of two rounds up to it and gets the next exponent.

**TQ1_0** (ternary, as in BitNet b1.58) -- 54 bytes per 256 weights = **1.6875 bits per
weight**: trits ``t[i] = round-half-away(x[i] / d) + 1`` in ``{0, 1, 2}``, packed five per
byte in base 3 (``3^5 = 243 <= 256``)::

    bytes 0-31   byte j holds the trits of weights j, 32+j, 64+j, 96+j, 128+j
    bytes 32-47  byte 32+j holds weights 160+j, 176+j, 192+j, 208+j, 224+j     (j < 16)
                 (the first-listed weight is the most significant base-3 digit:
                  v = 81 t_a + 27 t_b + 9 t_c + 3 t_d + t_e in 0..242)
    bytes 48-51  byte 48+j holds weights 240+j, 244+j, 248+j, 252+j as v = 81 t_a + ... + 3 t_d
    bytes 52-53  d  fp16:  d = max|x|
    stored byte: ceil(v * 256 / 243) = (256 v + 242) // 243, so that digit k comes back as
                 ((byte * 3^k mod 256) * 3) >> 8: a multiplication instead of a division
    value:       x[i] ~ d * (t[i] - 1)

**TQ2_0** -- 66 bytes per 256 weights = **2.0625 bits per weight**, the same trits at two
bits each::

    bytes 0-63   byte 32g + j holds weights 128g + 32k + j in bits 2k..2k+1   (g < 2, k < 4)
    bytes 64-65  d  fp16:  d = max|x|
    value:       x[i] ~ d * (t[i] - 1)

**Q4_K** -- 144 bytes per 256 weights = **4.5 bits per weight**: eight sub-blocks of 32, each
with a 6-bit scale ``sc[j]`` and a 6-bit min ``m[j]``, themselves scaled by two fp16 numbers::

    bytes 0-1     d      fp16: scale of the sub-block scales
    bytes 2-3     dmin   fp16: scale of the sub-block mins
    bytes 4-15    scales, 6 bits each, for j < 4:
                    byte 4+j:   sc[j] | (sc[j+4] >> 4) << 6
                    byte 8+j:   m[j]  | (m[j+4]  >> 4) << 6
                    byte 12+j:  (sc[j+4] & 15) | (m[j+4] & 15) << 4
    bytes 16-143  4-bit codes: byte 16 + 32c + l holds weight 64c + l in its low nibble and
                  weight 64c + 32 + l in its high nibble            (c < 4, l < 32)
    value:        x[i] ~ (d * sc[j]) * q[i] - dmin * m[j],   j = i // 32

**Q6_K** -- 210 bytes per 256 weights = **6.5625 bits per weight**: sixteen sub-blocks of 16
with signed 8-bit scales and one fp16 super-block scale::

    bytes 0-127    ql: low 4 bits of q.  For h < 2, l < 32:
                     byte 64h + l:      q[128h + l]      | q[128h + 64 + l] << 4
                     byte 64h + 32 + l: q[128h + 32 + l] | q[128h + 96 + l] << 4
    bytes 128-191  qh: high 2 bits of q.  byte 128 + 32h + l, bits 2k..2k+1:
                     q[128h + 32k + l] >> 4                         (k < 4)
    bytes 192-207  sc[j]  int8, one per 16 weights
    bytes 208-209  d      fp16
    value:         x[i] ~ (d * sc[i // 16]) * (q[i] - 32),   q in 0..63

``gguf`` (the Python package) can only *decode* the k-quants, so their encoders here are
quantlab's own, vectorized ports of llama.cpp's reference quantizers ``quantize_row_q4_K_ref``
and ``quantize_row_q6_K_ref`` with their scale searches (see :func:`quantize_blocks`).
All other encoders reproduce ``gguf.quants.quantize`` (the reference numpy port of
``ggml-quants.c``) exactly, and every decoder reproduces ``gguf.quants.dequantize`` bit for
bit; ``tests/test_gguf_blocks.py`` checks both on random and edge-case data. (A block whose
scale is so small that ``1/d`` overflows to infinity in float32 -- largest magnitude or range
below about 1e-36, or below 2^-125 for MXFP4 -- makes ggml cast NaN or a negative number to
an integer, which C leaves undefined, so such blocks are outside the byte-equality guarantee.)

**Rows that are not a whole number of blocks** cannot be stored in these formats at all. For
the 256-weight formats llama.cpp's quantizer (``llama-quant.cpp``) then picks another type
for that tensor: Q4_K -> Q5_0, Q6_K -> Q8_0, TQ1_0 and TQ2_0 -> Q4_0 (see
:data:`FALLBACK`), and F16 if the row is not a multiple of 32 either. The functions here do
not switch types behind the caller's back: they raise ``ValueError`` and name the fallback.

In quantlab terms a Q8_0, Q4_0 or Q5_0 block row is a :class:`~quantlab.quantize.QTensor`
with ``granularity="group", group_size=32, scale_dtype="fp16"`` and format ``int8``, ``int4``
(codes ``q - 8``) or ``int5`` (codes ``q - 16``), and TQ2_0 is ``int2`` with group size 256:
:func:`to_qtensor` gives that view, and its ``nbytes`` equals the GGUF byte count.

Taught in: chapters/04_in_practice.ipynb, "Formats you will meet in files".
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch

from ._backend import ArrayLike, as_tensor, like_input, read_only, require_float
from .formats import get_format
from .packing import pack, unpack
from .quantize import QTensor

__all__ = [
    "BLOCK_SIZE",
    "QK_K",
    "BLOCK_SIZES",
    "BLOCK_BYTES",
    "BITS_PER_WEIGHT",
    "FALLBACK",
    "KINDS",
    "quantize_q8_0",
    "quantize_q4_0",
    "dequantize_q8_0",
    "dequantize_q4_0",
    "quantize_blocks",
    "dequantize_blocks",
    "to_qtensor",
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

Kind = Literal["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4", "tq1_0", "tq2_0", "q4_k", "q6_k"]
_FP16 = get_format("fp16")
_F32 = np.float32


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str such as 'q4_0', got {type(kind).__name__}")
    if kind.lower() not in BLOCK_BYTES:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    return kind.lower()


def _row_error(name: str, kind: str, shape: tuple[int, ...], unit: str = "") -> ValueError:
    """The ValueError for a last dimension that is not a whole number of blocks (of weights,
    or of bytes with ``unit=" bytes"``); for weights of a 256-weight kind it names the type
    llama.cpp's quantizer would use for such a row instead."""
    n = BLOCK_BYTES[kind] if unit else BLOCK_SIZES[kind]
    msg = f"the last dimension of {name} must be a multiple of {n}{unit} for {kind}, got shape {shape}"
    if not unit and kind in FALLBACK:
        msg += f"; {kind} stores whole super-blocks of {QK_K} weights"
        if shape and shape[-1] % BLOCK_SIZE == 0:
            msg += f", and for such rows llama.cpp's quantizer falls back to {FALLBACK[kind]}"
        elif shape:
            msg += (
                f", and for such rows llama.cpp's quantizer falls back to f16 (the row is "
                f"not a multiple of {BLOCK_SIZE}, so {FALLBACK[kind]} cannot hold it either)"
            )
    return ValueError(msg)


def _blocks(x: ArrayLike, kind: str) -> tuple[torch.Tensor, tuple[int, ...], bool]:
    """``x`` as float32 blocks ``(n_blocks, BLOCK_SIZES[kind])`` plus its shape and kind."""
    t, was_numpy = as_tensor(x)
    require_float(t)
    if t.dim() == 0 or t.shape[-1] % BLOCK_SIZES[kind] != 0:
        raise _row_error("x", kind, tuple(t.shape))
    if not bool(torch.isfinite(t).all()):
        raise ValueError("x must be finite: a NaN or infinity would poison its block's scale")
    return t.to(torch.float32).reshape(-1, BLOCK_SIZES[kind]), tuple(t.shape), was_numpy


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """``sign(v) * (floor|v| + floor(2 (|v| - floor|v|)))``: ggml's roundf, in float32.

    Written this way (not ``floor(|v| + 0.5)``) because ``|v| + 0.5`` can itself round up
    in float32 (e.g. 0.49999997 + 0.5 == 1.0).
    """
    a = v.abs()
    fl = torch.floor(a)
    fl += torch.floor(2 * (a - fl))
    return torch.sign(v) * fl


def _fp16_bytes(d: torch.Tensor) -> torch.Tensor:
    """fp16 bit patterns of ``d`` (n, 1) as little-endian bytes (n, 2) (quantlab's fp16 format)."""
    code = _FP16.encode(d.reshape(-1)).to(torch.int32)
    return torch.stack([code & 0xFF, (code >> 8) & 0xFF], dim=1).to(torch.uint8)


def _bytes_to_fp16(b: torch.Tensor) -> torch.Tensor:
    """Little-endian fp16 bytes (n, 2) -> float32 values (n, 1)."""
    code = b[:, 0].to(torch.int32) | (b[:, 1].to(torch.int32) << 8)
    return _FP16.decode(code).reshape(-1, 1)


def _rdiv(a: float, t: torch.Tensor) -> torch.Tensor:
    """``a / t`` correctly rounded in float32, as C's ``a / t``.

    (Python's ``a / t`` on a tensor computes ``t.reciprocal() * a``: two roundings.)
    """
    return torch.div(torch.tensor(a, dtype=t.dtype), t)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """``1/d``, or 0 where ``d == 0`` (ggml's ``id = d ? 1/d : 0``)."""
    return torch.where(d == 0, torch.zeros_like(d), _rdiv(1.0, d))


def _nibbles(q: torch.Tensor) -> torch.Tensor:
    """Codes (n, 32) -> 16 bytes (n, 16): ``q[j] & 15 | (q[j + 16] & 15) << 4`` (Q4_0 order)."""
    q = q.to(torch.int32)
    return ((q[:, :16] & 15) | ((q[:, 16:] & 15) << 4)).to(torch.uint8)


def _from_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """16 bytes (n, 16) -> codes (n, 32) in 0..15: the low nibbles first, then the high ones."""
    qs = qs.to(torch.int32)
    return torch.cat([qs & 15, qs >> 4], dim=1)


_BIT = 1 << torch.arange(8, dtype=torch.int32)
_NIBBLE_SHIFT = torch.tensor([0, 4], dtype=torch.int32).reshape(1, 1, 2, 1)
_CRUMB_SHIFT = (2 * torch.arange(4, dtype=torch.int32)).reshape(1, 1, 4, 1)  # 2-bit fields


def _high_bits(q: torch.Tensor) -> torch.Tensor:
    """Q5's ``qh``: bit 4 of each of 32 codes as a little-endian uint32 -> 4 bytes (n, 4)."""
    bits = (q.to(torch.int32) >> 4) & 1
    return (bits.reshape(-1, 4, 8) * _BIT).sum(dim=2).to(torch.uint8)


def _from_high_bits(qh: torch.Tensor) -> torch.Tensor:
    """4 bytes of ``qh`` (n, 4) -> ``16 * bit`` for each of the 32 codes (n, 32)."""
    bits = (qh.to(torch.int32).unsqueeze(-1) >> torch.arange(8, dtype=torch.int32)) & 1
    return bits.reshape(-1, 32) << 4


def _cat(*parts: torch.Tensor) -> torch.Tensor:
    return torch.cat([p.to(torch.uint8) for p in parts], dim=1)


# --------------------------------------------------------------------------- 32-weight encoders
# Each takes float32 blocks (n, 32) and returns their bytes (n, BLOCK_BYTES[kind]).


def _q8_0_codes(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = b.abs().amax(dim=1, keepdim=True) / 127
    return d, _round_half_away(b * _inverse(d)).to(torch.int8)


def _signed_max(b: torch.Tensor) -> torch.Tensor:
    """The weight of largest magnitude with its sign (the first one on ties), shape (n, 1)."""
    imax = b.abs().argmax(dim=1, keepdim=True)  # first index of the largest magnitude
    return torch.gather(b, 1, imax)


def _q4_0_codes(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = _signed_max(b) / -8
    q = torch.trunc(b * _inverse(d) + 8.5).clamp_(0, 15).to(torch.uint8)
    return d, q


def _enc_q8_0(b: torch.Tensor) -> torch.Tensor:
    d, q = _q8_0_codes(b)
    qs = pack(q, 8).reshape(-1, BLOCK_SIZE)  # int8 two's complement, one byte each
    return _cat(_fp16_bytes(d), qs)


def _enc_q4_0(b: torch.Tensor) -> torch.Tensor:
    d, q = _q4_0_codes(b)
    # GGUF nibble order: byte j = q[j] | q[j+16] << 4. quantlab's pack puts element 2j in the
    # low nibble and 2j+1 in the high one, so interleave the two halves first.
    inter = q.reshape(-1, 2, BLOCK_SIZE // 2).transpose(1, 2)
    qs = pack(inter, 4).reshape(-1, BLOCK_SIZE // 2)
    return _cat(_fp16_bytes(d), qs)


def _min_max_codes(b: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_1 / Q5_1: ``d = (max - min) / nmax``, ``q = min(nmax, trunc((x - min) / d + 0.5))``."""
    lo = b.amin(dim=1, keepdim=True)
    d = (b.amax(dim=1, keepdim=True) - lo) / nmax
    q = torch.trunc((b - lo) * _inverse(d) + 0.5).clamp_(0, nmax)
    return d, lo, q


def _enc_q4_1(b: torch.Tensor) -> torch.Tensor:
    d, lo, q = _min_max_codes(b, 15)
    return _cat(_fp16_bytes(d), _fp16_bytes(lo), _nibbles(q))


def _enc_q5_0(b: torch.Tensor) -> torch.Tensor:
    d = _signed_max(b) / -16
    q = torch.trunc(b * _inverse(d) + 16.5).clamp_(0, 31)
    return _cat(_fp16_bytes(d), _high_bits(q), _nibbles(q))


def _enc_q5_1(b: torch.Tensor) -> torch.Tensor:
    d, lo, q = _min_max_codes(b, 31)
    return _cat(_fp16_bytes(d), _fp16_bytes(lo), _high_bits(q), _nibbles(q))


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
    return _cat(e, _nibbles(q))


# --------------------------------------------------------------------------- ternary encoders


def _trits(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``d = max|x|`` and ``t = round-half-away(x / d) + 1`` in {0, 1, 2}, int32 (n, 256)."""
    d = b.abs().amax(dim=1, keepdim=True)
    t = _round_half_away(b * _inverse(d)).to(torch.int32) + 1
    return d, t


def _base3(t: torch.Tensor, n_digits: int, stride: int) -> torch.Tensor:
    """``sum_k t[:, k*stride + j] * 3^(4-k)`` over ``k < n_digits`` for each ``j < stride``."""
    pw = torch.tensor([81, 27, 9, 3, 1][:n_digits], dtype=torch.int32).reshape(1, -1, 1)
    return (t.reshape(-1, n_digits, stride) * pw).sum(dim=1)


def _enc_tq1_0(b: torch.Tensor) -> torch.Tensor:
    d, t = _trits(b)
    v = torch.cat([_base3(t[:, :160], 5, 32), _base3(t[:, 160:240], 5, 16), _base3(t[:, 240:], 4, 4)], dim=1)
    return _cat((v * 256 + 242) // 243, _fp16_bytes(d))


def _enc_tq2_0(b: torch.Tensor) -> torch.Tensor:
    d, t = _trits(b)
    t = t.reshape(-1, 2, 4, 32) << _CRUMB_SHIFT
    qs = t.sum(dim=2).reshape(-1, 64)  # disjoint bit fields: the sum is the OR
    return _cat(qs, _fp16_bytes(d))


# --------------------------------------------------------------------------- k-quant encoders


def _steps(start: float, step: float, idx: list[int], base: float) -> list[np.float32]:
    """``start + step * i + base`` for each ``i``, evaluated left to right in float32 as in C."""
    return [_F32(start) + _F32(step) * _F32(i) + _F32(base) for i in idx]


def _sum(v: torch.Tensor) -> torch.Tensor:
    """``v.sum(dim=1, keepdim=True)`` accumulated left to right in float32, like a C loop.

    A vectorized sum adds in another order; the last-bit differences that makes would tip
    near-ties in the searches below to other codes than llama.cpp's reference picks. The
    loop runs over the (short) sub-block length, each step vectorized over all sub-blocks.
    """
    cols = v.t().contiguous()
    acc = cols[0].clone()
    for c in cols[1:]:
        acc += c
    return acc.unsqueeze(1)


def _make_qkx2(
    x: torch.Tensor, w: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """llama.cpp's ``make_qkx2_quants`` for many sub-blocks at once: scale, min, codes.

    Fits ``x ~ scale * L + min`` (``min <= 0``, ``L`` in ``0..nmax``) by weighted least
    squares. Start from ``scale = (max - min) / nmax`` with ``min = min(x, 0)``; then for each
    of ``nstep + 1`` trial inverse scales ``(rmin + rdelta * i + nmax) / (max - min)`` round
    ``(x - min)`` to codes, solve the 2x2 normal equations for the best scale and min of those
    codes (``min`` clamped to 0, then ``scale = sum w L x / sum w L^2``), and keep the
    candidate if its weighted squared error ``sum w (scale L + min - x)^2`` is strictly
    smaller. As in C, ``min`` in the later trials is the one accepted so far.

    Args:
        x: sub-blocks (m, n), float32.
        w: their weights (m, n).

    Returns:
        ``(scale (m, 1), -min (m, 1), L (m, n) float32)``; zeros where ``max == min``.
    """
    lo = x.amin(dim=1, keepdim=True).clamp(max=0)
    hi = x.amax(dim=1, keepdim=True)
    flat = hi == lo
    span = torch.where(flat, torch.ones_like(hi), hi - lo)
    sum_w = _sum(w)
    sum_x = _sum(w * x)

    iscale = _rdiv(nmax, span)
    scale = _rdiv(1.0, iscale)
    codes = torch.round(iscale * (x - lo)).clamp_(0, nmax)  # nearest_int: half to even
    diff = scale * codes + lo - x
    best = _sum(w * (diff * diff))
    mn = lo
    for factor in _steps(rmin, rdelta, list(range(nstep + 1)), nmax):
        # as in C, a step works from the min accepted so far (not the initial one)
        span = torch.where(hi == mn, torch.ones_like(hi), hi - mn)
        laux = torch.round(_rdiv(float(factor), span) * (x - mn)).clamp_(0, nmax)
        wl = w * laux
        sum_l = _sum(wl)
        sum_l2 = _sum(wl * laux)
        sum_xl = _sum(wl * x)
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        pos = this_min > 0
        this_scale = torch.where(pos, sum_xl / sum_l2, this_scale)
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        diff = this_scale * laux + this_min - x
        err = _sum(w * (diff * diff))
        take = (det > 0) & (err < best)
        codes = torch.where(take, laux, codes)
        best = torch.where(take, err, best)
        scale = torch.where(take, this_scale, scale)
        mn = torch.where(take, this_min, mn)
    zero = torch.zeros_like(scale)
    return torch.where(flat, zero, scale), torch.where(flat, -lo, -mn), torch.where(flat, 0, codes)


def _make_qx(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's ``make_qx_quants`` (``rmse_type = 1``) for many sub-blocks: scale, codes.

    Symmetric fit ``x ~ scale * l``, ``l`` in ``-nmax..nmax-1``, weights ``x^2``. Start from
    ``iscale = -nmax / m`` (``m`` the signed weight of largest magnitude), giving the least-
    squares ``scale = sum w x l / sum w l^2``; then try ``iscale = -(nmax + 0.1 i) / m`` for
    ``i = -9..9`` (not 0) and keep a candidate when it raises ``(sum w x l)^2 / sum w l^2``
    (the reduction in squared error), compared as ``sumlx^2 > best * suml2`` as in C.

    Args:
        x: sub-blocks (m, n), float32.

    Returns:
        ``(scale (m, 1), L = l + nmax (m, n) float32)``; zeros where ``max|x| < 1e-15``.
    """
    m = _signed_max(x)
    zero = m.abs() < 1e-15  # GROUP_MAX_EPS
    m = torch.where(zero, torch.ones_like(m), m)
    w = x * x

    def fit(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        l = torch.round(iscale * x).clamp_(-nmax, nmax - 1)  # noqa: E741 (llama.cpp's name)
        wl = w * l
        return l, _sum(w * x * l), _sum(wl * l)

    l, sumlx, suml2 = fit(_rdiv(-nmax, m))  # noqa: E741 (llama.cpp's name)
    scale = torch.where(suml2 != 0, sumlx / suml2, torch.zeros_like(sumlx))
    best = scale * sumlx
    codes = l
    for factor in _steps(0.0, 0.1, [i for i in range(-9, 10) if i != 0], nmax):
        l, sumlx, suml2 = fit(_rdiv(-float(factor), m))  # noqa: E741 (llama.cpp's name)
        take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        codes = torch.where(take, l, codes)
        scale = torch.where(take, sumlx / suml2, scale)
        best = torch.where(take, scale * sumlx, best)
    return torch.where(zero, 0, scale), torch.where(zero, 0, codes + nmax)


def _nearest(v: torch.Tensor) -> torch.Tensor:
    """ggml's ``nearest_int`` (round half to even); NaN (from an inf/0 scale) becomes 0."""
    return torch.nan_to_num(torch.round(v), nan=0.0, posinf=0.0, neginf=0.0)


def _enc_q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    x = b.reshape(n * 8, 32)
    # float64 square root rounded once to float32 is C's correctly rounded sqrtf
    av_x = torch.sqrt((_sum(x * x) / 32).double()).float()
    scales, mins, codes = _make_qkx2(x, av_x + x.abs(), 15, -1.0, 0.1, 20)
    scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
    # C starts from +0 and keeps strictly larger values, so -0.0 mins never become the max
    max_scale = torch.where(scales > 0, scales, 0.0).amax(dim=1, keepdim=True)
    max_min = torch.where(mins > 0, mins, 0.0).amax(dim=1, keepdim=True)
    inv_scale = torch.where(max_scale > 0, _rdiv(63.0, max_scale), torch.zeros_like(max_scale))
    inv_min = torch.where(max_min > 0, _rdiv(63.0, max_min), torch.zeros_like(max_min))
    # C stores nearest_int in a uint8, then takes MIN(63, .)
    ls = (_nearest(inv_scale * scales).to(torch.int32) & 255).clamp(max=63)
    lm = (_nearest(inv_min * mins).to(torch.int32) & 255).clamp(max=63)
    d_b, dmin_b = _fp16_bytes(max_scale / 63), _fp16_bytes(max_min / 63)
    # requantize with the scales as stored: fp16 super-scales times 6-bit sub-scales
    dq = (_bytes_to_fp16(d_b) * ls).reshape(n * 8, 1)
    mq = (_bytes_to_fp16(dmin_b) * lm).reshape(n * 8, 1)
    safe = torch.where(dq == 0, torch.ones_like(dq), dq)
    requant = _nearest((x + mq) / safe).clamp_(0, 15)
    codes = torch.where(dq == 0, codes, requant).to(torch.int32).reshape(n, 4, 2, 32)
    qs = (codes[:, :, 0] | (codes[:, :, 1] << 4)).reshape(n, 128)
    sc = torch.cat(
        [
            ls[:, :4] | ((ls[:, 4:] >> 4) << 6),
            lm[:, :4] | ((lm[:, 4:] >> 4) << 6),
            (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4),
        ],
        dim=1,
    )
    return _cat(d_b, dmin_b, sc, qs)


def _enc_q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    x = b.reshape(n * 16, 16)
    scales, codes = _make_qx(x, 32)
    scales = scales.reshape(n, 16)
    # the first sub-block of largest |scale|; as C's `abs > max_abs` from 0, a NaN scale (a
    # sub-block whose squares overflow float32) never wins
    mag = scales.abs()
    mag = torch.where(mag > 0, mag, 0.0)
    imax = mag.argmax(dim=1, keepdim=True)
    max_scale = torch.gather(scales, 1, imax)
    empty = torch.gather(mag, 1, imax) < 1e-15  # the whole super-block is written as zero bytes
    iscale = _rdiv(-128.0, torch.where(empty, torch.ones_like(max_scale), max_scale))
    d_b = _fp16_bytes(_rdiv(1.0, iscale))
    sc = _nearest(iscale * scales).clamp_(max=127).to(torch.int32)  # in -128..127
    dq = (_bytes_to_fp16(d_b) * sc).reshape(n * 16, 1)
    safe = torch.where(dq == 0, torch.ones_like(dq), dq)
    requant = _nearest(x / safe).clamp_(-32, 31) + 32
    q = torch.where(dq == 0, codes, requant).to(torch.int32).reshape(n, 2, 4, 32)  # (h, k, l)
    ql = torch.cat([(q[:, :, k] & 15) | ((q[:, :, k + 2] & 15) << 4) for k in (0, 1)], dim=2)
    qh = ((q >> 4) << _CRUMB_SHIFT).sum(dim=2)
    out = _cat(ql.reshape(n, 128), qh.reshape(n, 64), sc & 255, d_b)
    return torch.where(empty, torch.zeros_like(out), out)


# --------------------------------------------------------------------------- decoders
# Each takes the bytes of whole blocks (n, BLOCK_BYTES[kind]) and returns float32 (n, size),
# with the operations in the order gguf.quants.dequantize uses (bit-identical results).


def _codes(kind: str, qs: torch.Tensor) -> torch.Tensor:
    """Signed codes (n_blocks, 32) from the code bytes of Q8_0 (int8) or Q4_0 (``q - 8``)."""
    if kind == "q8_0":
        return unpack(qs.reshape(-1), 8, qs.numel(), signed=True).reshape(-1, BLOCK_SIZE)
    inter = unpack(qs.reshape(-1), 4, 2 * qs.numel()).reshape(-1, BLOCK_SIZE // 2, 2)
    return inter.transpose(1, 2).reshape(-1, BLOCK_SIZE) - 8


def _dec_q8_0(r: torch.Tensor) -> torch.Tensor:
    return _codes("q8_0", r[:, 2:]).to(torch.float32) * _bytes_to_fp16(r[:, :2])


def _dec_q4_0(r: torch.Tensor) -> torch.Tensor:
    return _codes("q4_0", r[:, 2:]).to(torch.float32) * _bytes_to_fp16(r[:, :2])


def _dec_q4_1(r: torch.Tensor) -> torch.Tensor:
    q = _from_nibbles(r[:, 4:]).to(torch.float32)
    return _bytes_to_fp16(r[:, :2]) * q + _bytes_to_fp16(r[:, 2:4])


def _dec_q5_0(r: torch.Tensor) -> torch.Tensor:
    q = (_from_nibbles(r[:, 6:]) | _from_high_bits(r[:, 2:6])) - 16
    return _bytes_to_fp16(r[:, :2]) * q.to(torch.float32)


def _dec_q5_1(r: torch.Tensor) -> torch.Tensor:
    q = (_from_nibbles(r[:, 8:]) | _from_high_bits(r[:, 4:8])).to(torch.float32)
    return _bytes_to_fp16(r[:, :2]) * q + _bytes_to_fp16(r[:, 2:4])


def _dec_mxfp4(r: torch.Tensor) -> torch.Tensor:
    return _e8m0_half(r[:, :1]) * _MXFP4_K.take(_from_nibbles(r[:, 1:]).long())


def _trit_digits(qs: torch.Tensor, n_digits: int) -> torch.Tensor:
    """Base-3 bytes (n, m) -> digits (n, n_digits * m): digit k of byte j at ``k * m + j``."""
    pw = torch.tensor([1, 3, 9, 27, 81][:n_digits], dtype=torch.int32).reshape(1, -1, 1)
    v = (qs.to(torch.int32).unsqueeze(1) * pw) & 255  # the uint8 product, modulo 256
    return ((v * 3) >> 8).reshape(qs.shape[0], -1)


def _dec_tq1_0(r: torch.Tensor) -> torch.Tensor:
    t = torch.cat([_trit_digits(r[:, :32], 5), _trit_digits(r[:, 32:48], 5), _trit_digits(r[:, 48:52], 4)], dim=1)
    return _bytes_to_fp16(r[:, 52:54]) * (t - 1).to(torch.float32)


def _tq2_0_trits(r: torch.Tensor) -> torch.Tensor:
    """TQ2_0 bytes (n, 66) -> the 2-bit codes (n, 256) in weight order."""
    return ((r[:, :64].to(torch.int32).reshape(-1, 2, 1, 32) >> _CRUMB_SHIFT) & 3).reshape(-1, QK_K)


def _dec_tq2_0(r: torch.Tensor) -> torch.Tensor:
    return _bytes_to_fp16(r[:, 64:66]) * (_tq2_0_trits(r) - 1).to(torch.float32)


def _q4_k_scale_min(sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 scale bytes (n, 12) -> 6-bit scales and mins (n, 8) each."""
    sc = sc.to(torch.int32)
    a, b, c = sc[:, 0:4], sc[:, 4:8], sc[:, 8:12]
    scales = torch.cat([a & 63, (c & 15) | ((a >> 2) & 48)], dim=1)
    mins = torch.cat([b & 63, (c >> 4) | ((b >> 2) & 48)], dim=1)
    return scales, mins


def _dec_q4_k(r: torch.Tensor) -> torch.Tensor:
    n = r.shape[0]
    sc, m = _q4_k_scale_min(r[:, 4:16])
    d = (_bytes_to_fp16(r[:, 0:2]) * sc.to(torch.float32)).reshape(n, 8, 1)
    dm = (_bytes_to_fp16(r[:, 2:4]) * m.to(torch.float32)).reshape(n, 8, 1)
    qs = r[:, 16:].to(torch.int32).reshape(n, 4, 1, 32) >> _NIBBLE_SHIFT
    q = (qs & 15).reshape(n, 8, 32).to(torch.float32)
    return (d * q - dm).reshape(n, QK_K)


def _dec_q6_k(r: torch.Tensor) -> torch.Tensor:
    n = r.shape[0]
    sc = r[:, 192:208].view(torch.int8).to(torch.float32)
    d = (_bytes_to_fp16(r[:, 208:210]) * sc).reshape(n, 16, 1)
    ql = (r[:, :128].to(torch.int32).reshape(n, 2, 1, 64) >> _NIBBLE_SHIFT) & 15
    ql = ql.reshape(n, 8, 32)
    qh = r[:, 128:192].to(torch.int32).reshape(n, 2, 1, 32) >> _CRUMB_SHIFT
    qh = (qh & 3).reshape(n, 8, 32)
    q = ((ql | (qh << 4)) - 32).reshape(n, 16, 16).to(torch.float32)
    return (d * q).reshape(n, QK_K)


_ENCODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "q8_0": _enc_q8_0,
    "q4_0": _enc_q4_0,
    "q4_1": _enc_q4_1,
    "q5_0": _enc_q5_0,
    "q5_1": _enc_q5_1,
    "mxfp4": _enc_mxfp4,
    "tq1_0": _enc_tq1_0,
    "tq2_0": _enc_tq2_0,
    "q4_k": _enc_q4_k,
    "q6_k": _enc_q6_k,
}
_DECODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "q8_0": _dec_q8_0,
    "q4_0": _dec_q4_0,
    "q4_1": _dec_q4_1,
    "q5_0": _dec_q5_0,
    "q5_1": _dec_q5_1,
    "mxfp4": _dec_mxfp4,
    "tq1_0": _dec_tq1_0,
    "tq2_0": _dec_tq2_0,
    "q4_k": _dec_q4_k,
    "q6_k": _dec_q6_k,
}


# --------------------------------------------------------------------------- public API


def quantize_blocks(x: ArrayLike, kind: Kind) -> ArrayLike:
    """Encode ``x`` as GGUF blocks of ``kind`` (layouts in the module docstring).

    Every kind except the k-quants gives the same bytes as
    ``gguf.quants.quantize(x, GGMLQuantizationType.<KIND>)``. ``gguf`` cannot encode Q4_K and
    Q6_K; their encoders here port llama.cpp's reference quantizers (``quantize_row_q4_K_ref``
    and ``quantize_row_q6_K_ref`` in ``ggml-quants.c``), not a plain min/max rule:

    * **Q4_K**: per sub-block of 32, weights ``w = sqrt(mean x^2) + |x|`` and the search of
      ``make_qkx2_quants`` (21 trial scales ``(14 + 0.1 i) / (max - min)``, each refined by
      weighted least squares for scale and min); then ``d = max(scale) / 63``,
      ``dmin = max(min) / 63`` (fp16), 6-bit ``sc = round(63 scale / max scale)`` and ``m``
      likewise, and the codes re-rounded against the stored scales:
      ``q = clamp(round((x + dmin m) / (d sc)), 0, 15)``.
    * **Q6_K**: per sub-block of 16, ``make_qx_quants`` with weights ``x^2`` (19 trial scales
      ``-(32 + 0.1 i) / m``, least-squares scale); then ``d = -max_scale / 128`` (fp16, the
      sub-block scale of largest magnitude with its sign), ``sc = min(127, round(-128 scale /
      max_scale))`` as int8, and ``q = clamp(round(x / (d sc)), -32, 31) + 32``.

    The k-quant encoders follow the C code operation by operation in float32 (sums
    accumulated left to right, correctly rounded divisions and square roots, the same
    strict comparisons), vectorized over all sub-blocks: their bytes equal those of the C
    reference compiled without fused multiply-add contraction. (A build that contracts
    ``a * b + c`` into FMAs, e.g. with ``-march=native``, rounds differently and itself
    disagrees with that on a few percent of Q4_K super-blocks.) ``gguf.quants.dequantize``
    reads the bytes back to exactly :func:`dequantize_blocks`. The scales are fp16: weights
    beyond about 1e6 (Q4_K) or 4e6 (Q6_K) overflow them, as in llama.cpp.

    Args:
        x: float array/tensor (computed in float32) whose last dimension (the row) is a
            multiple of ``BLOCK_SIZES[kind]``: 32, or 256 for tq1_0, tq2_0, q4_k and q6_k.
        kind: one of :data:`KINDS`, e.g. ``"q4_0"`` or ``"q4_k"`` (case-insensitive).

    Returns:
        uint8 array of shape ``(*x.shape[:-1], x.shape[-1] // BLOCK_SIZES[kind] *
        BLOCK_BYTES[kind])``; same kind as ``x`` (numpy or torch).

    Raises:
        ValueError: unknown ``kind``; NaN/infinity in ``x``; a row that is not a whole
            number of blocks (for the 256-weight kinds the message names llama.cpp's
            fallback type, :data:`FALLBACK`).
        TypeError: ``x`` not a float array, or ``kind`` not a str.
    """
    kind = _check_kind(kind)
    b, shape, was_numpy = _blocks(x, kind)
    out = _ENCODERS[kind](b)
    out_shape = (*shape[:-1], shape[-1] // BLOCK_SIZES[kind] * BLOCK_BYTES[kind])
    return like_input(out.reshape(out_shape), was_numpy)


def quantize_q8_0(x: ArrayLike) -> ArrayLike:
    """Encode ``x`` as GGUF Q8_0 blocks.

    Args:
        x: float array/tensor whose last dimension is a multiple of 32 (computed in float32).

    Returns:
        uint8 array of shape ``(*x.shape[:-1], x.shape[-1] // 32 * 34)``, the same bytes as
        ``gguf.quants.quantize(x, GGMLQuantizationType.Q8_0)``; same kind as ``x``.

    Raises:
        ValueError: last dimension not a multiple of 32, or NaN/infinity in ``x``.
        TypeError: ``x`` not a float array.
    """
    return quantize_blocks(x, "q8_0")


def quantize_q4_0(x: ArrayLike) -> ArrayLike:
    """Encode ``x`` as GGUF Q4_0 blocks (see the module docstring for the layout).

    Args:
        x: float array/tensor whose last dimension is a multiple of 32 (computed in float32).

    Returns:
        uint8 array of shape ``(*x.shape[:-1], x.shape[-1] // 32 * 18)``, the same bytes as
        ``gguf.quants.quantize(x, GGMLQuantizationType.Q4_0)``; same kind as ``x``.

    Raises:
        ValueError: last dimension not a multiple of 32, or NaN/infinity in ``x``.
        TypeError: ``x`` not a float array.
    """
    return quantize_blocks(x, "q4_0")


def _split(blocks: ArrayLike, kind: str) -> tuple[torch.Tensor, tuple[int, ...], bool]:
    """Checked ``blocks`` as rows of whole blocks (n_blocks, BLOCK_BYTES[kind]), the shape of
    the weights they hold, and whether they came as numpy."""
    t, was_numpy = as_tensor(blocks, "blocks")
    if t.dtype != torch.uint8:
        raise TypeError(f"blocks must be uint8, got dtype {str(t.dtype).replace('torch.', '')}")
    nb = BLOCK_BYTES[kind]
    if t.dim() == 0 or t.shape[-1] % nb != 0:
        raise _row_error("blocks", kind, tuple(t.shape), " bytes")
    shape = (*t.shape[:-1], t.shape[-1] // nb * BLOCK_SIZES[kind])
    return t.reshape(-1, nb), shape, was_numpy


def dequantize_blocks(blocks: ArrayLike, kind: Kind) -> ArrayLike:
    """Decode GGUF blocks of ``kind`` to float32 (the "value" lines of the module docstring).

    Args:
        blocks: uint8 array whose last dimension is a whole number of blocks
            (a multiple of ``BLOCK_BYTES[kind]``).
        kind: one of :data:`KINDS` (case-insensitive).

    Returns:
        float32 array of shape ``(*blocks.shape[:-1], n_blocks * BLOCK_SIZES[kind])``, equal
        bit for bit to ``gguf.quants.dequantize`` (for any bytes, also ones no quantizer
        writes); same kind as ``blocks``.

    Raises:
        ValueError: unknown kind or a partial block.
        TypeError: non-uint8 blocks, or ``kind`` not a str.
    """
    kind = _check_kind(kind)
    raw, shape, was_numpy = _split(blocks, kind)
    return like_input(_DECODERS[kind](raw).reshape(shape), was_numpy)


def dequantize_q8_0(blocks: ArrayLike) -> ArrayLike:
    """Decode Q8_0 blocks (see :func:`dequantize_blocks`)."""
    return dequantize_blocks(blocks, "q8_0")


def dequantize_q4_0(blocks: ArrayLike) -> ArrayLike:
    """Decode Q4_0 blocks (see :func:`dequantize_blocks`)."""
    return dequantize_blocks(blocks, "q4_0")


_NO_QTENSOR = {
    "q4_1": "its offset m is an fp16 number, not an integer number of steps d, and a "
    "QTensor's zero point is an integer code",
    "q5_1": "its offset m is an fp16 number, not an integer number of steps d, and a "
    "QTensor's zero point is an integer code",
    "mxfp4": "its scale is an 8-bit power of two (E8M0) and QTensor scales are "
    "fp32/fp16/bf16, so nbytes would not match its 17 bytes per block",
    "tq1_0": "it packs five ternary digits per byte (1.6875 bits per weight), and a QTensor stores whole bits per code",
    "q4_k": "its two-level scales (6-bit sub-block scales and mins times fp16 super-block "
    "scales) have no QTensor equivalent",
    "q6_k": "its two-level scales (int8 sub-block scales times an fp16 super-block scale) have no QTensor equivalent",
}


def to_qtensor(blocks: ArrayLike, kind: Kind) -> QTensor:
    """View GGUF blocks as a quantlab :class:`QTensor` (groups with fp16 scales).

    Supported kinds, each group with its fp16 scale ``d``:

    ====== ========= ============== ========== ===============
    kind   format    codes          group size bits per weight
    ====== ========= ============== ========== ===============
    q8_0   ``int8``  ``qs``         32         8.5
    q4_0   ``int4``  ``q - 8``      32         4.5
    q5_0   ``int5``  ``q - 16``     32         5.5
    tq2_0  ``int2``  ``t - 1``      256        2.0625
    ====== ========= ============== ========== ===============

    ``QTensor.dequantize()`` then equals :func:`dequantize_blocks`, and ``QTensor.nbytes``
    equals the number of GGUF bytes, so a block-quantized weight can be stored in a
    :class:`quantlab.nn.QuantizedLinear`. The other kinds have no such view (an asymmetric
    fp16 offset, an E8M0 scale, base-3 packing or two-level scales): they raise ``ValueError``
    saying why.

    Raises:
        ValueError: unknown kind, a kind without a QTensor view, a partial block, or TQ2_0
            bytes holding the 2-bit code 3 (value ``+2 d``, never written by the quantizer
            and outside ``int2``).
        TypeError: non-uint8 blocks, or ``kind`` not a str.
    """
    kind = _check_kind(kind)
    if kind in _NO_QTENSOR:
        raise ValueError(f"kind {kind!r} cannot be viewed as a QTensor: {_NO_QTENSOR[kind]}")
    raw, shape, _ = _split(blocks, kind)
    if kind in ("q8_0", "q4_0"):
        codes, d = _codes(kind, raw[:, 2:]), _bytes_to_fp16(raw[:, :2])
    elif kind == "q5_0":
        codes = (_from_nibbles(raw[:, 6:]) | _from_high_bits(raw[:, 2:6])) - 16
        d = _bytes_to_fp16(raw[:, :2])
    else:  # tq2_0
        t = _tq2_0_trits(raw)
        if bool((t == 3).any()):
            raise ValueError(
                "blocks hold the TQ2_0 code 3 (value +2 d), which llama.cpp's quantizer never "
                "writes and int2 cannot hold; use dequantize_blocks for such bytes"
            )
        codes, d = t - 1, _bytes_to_fp16(raw[:, 64:66])
    bits = {"q8_0": 8, "q4_0": 4, "q5_0": 5, "tq2_0": 2}[kind]
    group = BLOCK_SIZES[kind]
    scale = d.reshape(*shape[:-1], shape[-1] // group)
    return QTensor(
        codes.to(torch.int8).reshape(shape),
        scale,
        None,
        get_format(f"int{bits}"),
        shape,
        "group",
        0,
        group,
        "fp16",
        torch.float32,
        False,
    )
