"""GGUF block formats Q8_0 and Q4_0, byte for byte as llama.cpp writes them.

GGUF (the file format of llama.cpp) stores a weight row as consecutive *blocks* of 32
weights. Each block is self-contained: an fp16 scale ``d`` followed by the codes.

**Q8_0** -- 34 bytes per 32 weights = **8.5 bits per weight**::

    bytes 0-1   d      fp16, little-endian:  d = max|x| / 127
    bytes 2-33  qs[i]  int8:  round-half-away-from-zero(x[i] / d)   in [-127, 127]
    value:      x[i] ~ d * qs[i]

**Q4_0** -- 18 bytes per 32 weights = **4.5 bits per weight** (4 for the code, 16/32 = 0.5
for the shared scale)::

    bytes 0-1   d      fp16, little-endian:  d = m / -8, where m is the weight of largest
                       magnitude *with its sign* (the first one on ties)
    bytes 2-17  16 bytes of 4-bit codes q[i] = clamp(trunc(x[i] / d + 8.5), 0, 15):
                byte j holds q[j] in its low nibble and q[j + 16] in its high nibble
                (first half of the block in the low nibbles, second half in the high)
    value:      x[i] ~ d * (q[i] - 8)

Q4_0 is symmetric int4 with the codes offset by 8 (``q - 8`` runs from -8 to 7). Choosing
``d = m / -8`` maps the largest-magnitude weight exactly onto the code -8, the end of the
int4 range that has one extra level, so that weight is stored without error; the opposite
end reaches only ``7/8`` of ``|m|``. ``x / d + 8.5`` truncated is ``round(x / d) + 8``
(halves rounded up), computed with the *unrounded* float32 ``1/d``; only the stored ``d``
is rounded to fp16. Q8_0 likewise divides by the float32 ``d`` before storing it as fp16.

In quantlab terms a block row is a :class:`~quantlab.quantize.QTensor` with
``granularity="group", group_size=32, scale_dtype="fp16"`` and format ``int8`` (Q8_0) or
``int4`` (Q4_0, codes ``q - 8``): :func:`to_qtensor` gives that view, and its ``nbytes``
equals the GGUF byte count. (A block whose largest magnitude is below about 1e-36 makes
``1/d`` overflow to infinity in float32; ggml then casts NaN to an integer, which C leaves
undefined, so such blocks are outside the byte-equality guarantee.) The encoders below reproduce ``gguf.quants.quantize`` (the
reference numpy port of ``ggml-quants.c``) exactly; ``tests/test_gguf_blocks.py`` checks
byte equality on random and edge-case data.

Taught in: chapters/04_in_practice.ipynb, "Formats you will meet in files".
"""

from __future__ import annotations

from typing import Literal

import torch

from ._backend import ArrayLike, as_tensor, like_input, require_float
from .formats import get_format
from .packing import pack, unpack
from .quantize import QTensor

__all__ = [
    "BLOCK_SIZE",
    "BLOCK_BYTES",
    "BITS_PER_WEIGHT",
    "quantize_q8_0",
    "quantize_q4_0",
    "dequantize_q8_0",
    "dequantize_q4_0",
    "quantize_blocks",
    "dequantize_blocks",
    "to_qtensor",
]

BLOCK_SIZE = 32
"""Weights per block in Q8_0 and Q4_0."""

BLOCK_BYTES = {"q8_0": 2 + 32, "q4_0": 2 + 16}
"""Bytes per block: an fp16 scale plus the codes."""

BITS_PER_WEIGHT = {k: 8 * v / BLOCK_SIZE for k, v in BLOCK_BYTES.items()}
"""8.5 for Q8_0 and 4.5 for Q4_0."""

Kind = Literal["q8_0", "q4_0"]
_FP16 = get_format("fp16")


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or kind.lower() not in BLOCK_BYTES:
        raise ValueError(f"kind must be 'q8_0' or 'q4_0', got {kind!r}")
    return kind.lower()


def _blocks(x: ArrayLike) -> tuple[torch.Tensor, tuple[int, ...], bool]:
    t, was_numpy = as_tensor(x)
    require_float(t)
    if t.dim() == 0 or t.shape[-1] % BLOCK_SIZE != 0:
        shape = tuple(t.shape)
        raise ValueError(
            f"the last dimension of x must be a multiple of {BLOCK_SIZE}, got shape {shape}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError("x must be finite: a NaN or infinity would poison its block's scale")
    return t.to(torch.float32).reshape(-1, BLOCK_SIZE), tuple(t.shape), was_numpy


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
    """fp16 bit patterns of ``d`` (n, 1) as little-endian bytes (n, 2), via quantlab's fp16 format."""
    code = _FP16.encode(d.reshape(-1)).to(torch.int32)
    return torch.stack([code & 0xFF, (code >> 8) & 0xFF], dim=1).to(torch.uint8)


def _bytes_to_fp16(b: torch.Tensor) -> torch.Tensor:
    code = b[:, 0].to(torch.int32) | (b[:, 1].to(torch.int32) << 8)
    return _FP16.decode(code).reshape(-1, 1)


def _out_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    return (*shape[:-1], shape[-1] // BLOCK_SIZE * BLOCK_BYTES[kind])


def _q8_0_codes(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = b.abs().amax(dim=1, keepdim=True) / 127
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    return d, _round_half_away(b * inv).to(torch.int8)


def _q4_0_codes(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    imax = b.abs().argmax(dim=1, keepdim=True)  # first index of the largest magnitude
    m = torch.gather(b, 1, imax)
    d = m / -8
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc(b * inv + 8.5).clamp_(0, 15).to(torch.uint8)
    return d, q


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
    b, shape, was_numpy = _blocks(x)
    d, q = _q8_0_codes(b)
    qs = pack(q, 8).reshape(-1, BLOCK_SIZE)  # int8 two's complement, one byte each
    out = torch.cat([_fp16_bytes(d), qs], dim=1).reshape(_out_shape(shape, "q8_0"))
    return like_input(out, was_numpy)


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
    b, shape, was_numpy = _blocks(x)
    d, q = _q4_0_codes(b)
    # GGUF nibble order: byte j = q[j] | q[j+16] << 4. quantlab's pack puts element 2j in the
    # low nibble and 2j+1 in the high one, so interleave the two halves first.
    inter = q.reshape(-1, 2, BLOCK_SIZE // 2).transpose(1, 2)
    qs = pack(inter, 4).reshape(-1, BLOCK_SIZE // 2)
    out = torch.cat([_fp16_bytes(d), qs], dim=1).reshape(_out_shape(shape, "q4_0"))
    return like_input(out, was_numpy)


def _split(blocks: ArrayLike, kind: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], bool]:
    t, was_numpy = as_tensor(blocks, "blocks")
    if t.dtype != torch.uint8:
        raise TypeError(f"blocks must be uint8, got dtype {str(t.dtype).replace('torch.', '')}")
    nb = BLOCK_BYTES[kind]
    if t.dim() == 0 or t.shape[-1] % nb != 0:
        raise ValueError(
            f"the last dimension of blocks must be a multiple of {nb} bytes for {kind}, "
            f"got shape {tuple(t.shape)}"
        )
    flat = t.reshape(-1, nb)
    shape = (*t.shape[:-1], t.shape[-1] // nb * BLOCK_SIZE)
    return _bytes_to_fp16(flat[:, :2]), flat[:, 2:], shape, was_numpy


def _codes(kind: str, qs: torch.Tensor) -> torch.Tensor:
    """Signed codes (n_blocks, 32): int8 for Q8_0, ``q - 8`` for Q4_0."""
    if kind == "q8_0":
        return unpack(qs.reshape(-1), 8, qs.numel(), signed=True).reshape(-1, BLOCK_SIZE)
    inter = unpack(qs.reshape(-1), 4, 2 * qs.numel()).reshape(-1, BLOCK_SIZE // 2, 2)
    return inter.transpose(1, 2).reshape(-1, BLOCK_SIZE) - 8


def dequantize_blocks(blocks: ArrayLike, kind: Kind) -> ArrayLike:
    """Decode GGUF Q8_0 or Q4_0 blocks to float32: ``d * qs`` or ``d * (q - 8)``.

    Args:
        blocks: uint8 array whose last dimension is a whole number of blocks.
        kind: ``"q8_0"`` or ``"q4_0"``.

    Returns:
        float32 array of shape ``(*blocks.shape[:-1], n_blocks * 32)``, equal to
        ``gguf.quants.dequantize``; same kind as ``blocks``.

    Raises:
        ValueError: unknown kind or a partial block. TypeError: non-uint8 blocks.
    """
    kind = _check_kind(kind)
    d, qs, shape, was_numpy = _split(blocks, kind)
    out = _codes(kind, qs).to(torch.float32) * d
    return like_input(out.reshape(shape), was_numpy)


def quantize_blocks(x: ArrayLike, kind: Kind) -> ArrayLike:
    """Encode ``x`` as ``"q8_0"`` or ``"q4_0"`` blocks (see :func:`quantize_q8_0`, :func:`quantize_q4_0`)."""
    kind = _check_kind(kind)
    return quantize_q8_0(x) if kind == "q8_0" else quantize_q4_0(x)


def dequantize_q8_0(blocks: ArrayLike) -> ArrayLike:
    """Decode Q8_0 blocks (see :func:`dequantize_blocks`)."""
    return dequantize_blocks(blocks, "q8_0")


def dequantize_q4_0(blocks: ArrayLike) -> ArrayLike:
    """Decode Q4_0 blocks (see :func:`dequantize_blocks`)."""
    return dequantize_blocks(blocks, "q4_0")


def to_qtensor(blocks: ArrayLike, kind: Kind) -> QTensor:
    """View GGUF blocks as a quantlab :class:`QTensor` (group 32, fp16 scales).

    Q8_0 becomes ``int8`` codes and Q4_0 ``int4`` codes ``q - 8``, each group of 32 with its
    fp16 scale ``d``. ``QTensor.dequantize()`` then equals :func:`dequantize_blocks`, and
    ``QTensor.nbytes`` equals the number of GGUF bytes (4.5 or 8.5 bits per weight), so a
    block-quantized weight can be stored in a :class:`quantlab.nn.QuantizedLinear`.

    Raises:
        ValueError: unknown kind or a partial block. TypeError: non-uint8 blocks.
    """
    kind = _check_kind(kind)
    d, qs, shape, _ = _split(blocks, kind)
    fmt = get_format("int8" if kind == "q8_0" else "int4")
    codes = _codes(kind, qs).to(torch.int8).reshape(shape)
    scale = d.reshape(*shape[:-1], shape[-1] // BLOCK_SIZE)
    return QTensor(codes, scale, None, fmt, shape, "group", 0, BLOCK_SIZE, "fp16", torch.float32, False)
