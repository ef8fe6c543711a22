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

The codecs live by family, and this module dispatches to them and re-exports the tables:
:mod:`~quantlab.core.gguf_layout` (the tables and the shared byte fields),
:mod:`~quantlab.core.gguf_legacy` (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, MXFP4),
:mod:`~quantlab.core.gguf_ternary` (TQ1_0, TQ2_0), :mod:`~quantlab.core.gguf_kquants` (Q4_K, Q6_K).

Taught in: chapters/04_in_practice.ipynb, "Formats you will meet in files".
"""

from __future__ import annotations

from typing import Callable

import torch

from . import gguf_kquants, gguf_legacy, gguf_ternary
from ._backend import ArrayLike, as_tensor, like_input, require_float
from .formats import get_format
from .gguf_layout import (
    BITS_PER_WEIGHT,
    BLOCK_BYTES,
    BLOCK_SIZE,
    BLOCK_SIZES,
    FALLBACK,
    KINDS,
    QK_K,
    Kind,
    bytes_to_fp16,
    from_high_bits,
    from_nibbles,
)
from .gguf_legacy import signed_codes
from .gguf_ternary import tq2_0_trits
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


_ENCODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    **gguf_legacy.ENCODERS,
    **gguf_ternary.ENCODERS,
    **gguf_kquants.ENCODERS,
}
_DECODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    **gguf_legacy.DECODERS,
    **gguf_ternary.DECODERS,
    **gguf_kquants.DECODERS,
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
        codes, d = signed_codes(kind, raw[:, 2:]), bytes_to_fp16(raw[:, :2])
    elif kind == "q5_0":
        codes = (from_nibbles(raw[:, 6:]) | from_high_bits(raw[:, 2:6])) - 16
        d = bytes_to_fp16(raw[:, :2])
    else:  # tq2_0
        t = tq2_0_trits(raw)
        if bool((t == 3).any()):
            raise ValueError(
                "blocks hold the TQ2_0 code 3 (value +2 d), which llama.cpp's quantizer never "
                "writes and int2 cannot hold; use dequantize_blocks for such bytes"
            )
        codes, d = t - 1, bytes_to_fp16(raw[:, 64:66])
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
