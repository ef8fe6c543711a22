"""Block-scaled formats: OCP Microscaling (MX) and NVIDIA's NVFP4.

A block-scaled format stores small elements (8, 6 or 4 bits) and, for every block of
``k`` consecutive elements along the last axis, one 8-bit scale. Use them by name with
:func:`quantlab.quantize` (``ql.quantize(w, "mxfp4")``), :func:`quantlab.fake_quantize`,
:func:`quantlab.dequantize`; ``QTensor.nbytes`` and ``bits_per_weight`` count the scales.

**MX** (OCP Microscaling Formats (MX) Specification v1.0, Rouhani et al., 2023; also
"Microscaling Data Formats for Deep Learning", Rouhani et al., 2023). Blocks of ``k = 32``
share an E8M0 scale ``X = 2^(c - 127)`` (code ``c`` in 0..254; 255 is NaN). Per block::

    shared_exp = floor(log2(max_i |V_i|)) - emax_elem
    X          = 2^shared_exp                   (clamped to E8M0's range 2^-127 .. 2^127)
    P_i        = round_to_element(V_i / X)      (nearest, ties to even, saturating)
    value_i    = P_i * X

``emax_elem`` is the exponent of the element format's largest power of two: fp8 e4m3: 8,
fp8 e5m2: 15, fp6 e3m2: 4, fp6 e2m3: 2, fp4 e2m1: 2, int8: 0. So ``amax / X`` lies in
``[2^emax_elem, 2^(emax_elem+1))`` and the largest elements may exceed the element's max
normal (e4m3's 448 below 512): they saturate to it, as the spec's conversion does (fp8
e5m2 elements too, which as a plain cast would overflow to infinity). ``mxint8``
elements are int8 codes with an implicit ``2^-6`` (fixed point 1.6: values
``-127/64 .. 127/64``; the code -128 is not used, as in the spec's symmetric range).

Choices where the spec leaves room, documented here and tested:

* a block whose elements are all zero gets the smallest scale, code 0 (``2^-127``), as
  does any block whose ``shared_exp`` would fall below -127 (its elements then round
  into the element format's subnormals or to zero);
* NaN or infinity in the input raises ``ValueError``, like every scaled path of
  :func:`quantlab.quantize` (the spec would set the block's scale to NaN);
* a last dimension that is not a multiple of the block size raises ``ValueError``
  naming both (no padding);
* a float64 input whose block needs ``shared_exp > 127`` raises ``ValueError``.

**NVFP4** (NVIDIA, "Introducing NVFP4 for Efficient and Accurate Low-Precision
Inference", 2025; the same arithmetic as torchao's ``nvfp4_quantize`` with a per-tensor
scale): fp4 e2m1 elements in blocks of 16, an fp8 e4m3 scale per block and one fp32 scale
per tensor, all in float32::

    g      = amax(|x|) / (448 * 6)                               (1 for an all-zero tensor)
    s_b    = e4m3(clamp(amax_b / 6 / g, 2^-6, 448))              (nearest, ties to even)
    P_i    = e2m1(clamp(x_i / (g * s_b), -6, 6))
    value  = (P_i * s_b) * g

The clamp at ``2^-6`` (e4m3's smallest normal) keeps a block scale from rounding to zero.
Decoding agrees with gguf's ``NVFP4`` reader, which stores ``s_b`` in its blocks and
leaves ``g`` to a separate tensor: ``P_i * s_b`` is exact in float32, then one rounding
for ``* g``.

The element rounding reuses :class:`quantlab.formats.FloatFormat` (fp8 e4m3/e5m2, fp6
e3m2/e2m3, fp4 e2m1), whose ``round`` is round to nearest, ties to even.

Taught in: chapters/ (Beyond int4).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from .formats import BlockFormat, FloatFormat, get_format

if TYPE_CHECKING:  # pragma: no cover
    from .quantize import QTensor

__all__ = [
    "E8M0_BIAS",
    "e8m0_decode",
    "shared_exponent",
    "scale_codes",
    "encode_blocks",
    "decode_blocks",
]

#: E8M0's exponent bias: code ``c`` stands for ``2^(c - 127)``.
E8M0_BIAS = 127
_E8M0_MIN, _E8M0_MAX = -127, 127
_E4M3 = get_format("fp8_e4m3")
_NVFP4_GLOBAL = 448.0 * 6.0
_NVFP4_SCALE_MIN = 2.0**-6  # e4m3's smallest normal, torchao's E4M3_EPS


def e8m0_decode(codes: torch.Tensor) -> torch.Tensor:
    """E8M0 codes (0..255) -> float32 scales ``2^(code - 127)``; code 255 is NaN.

    Args:
        codes: integer tensor, any shape.

    Returns:
        float32 tensor of the same shape (``2^-127`` is a float32 subnormal, exact).
    """
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point:
        raise TypeError(f"codes must be an integer torch tensor, got {codes!r:.60}")
    c = codes.long()
    if bool(((c < 0) | (c > 255)).any()):
        raise ValueError(f"codes must be in 0..255, got {c.flatten()[:8].tolist()}")
    out = torch.pow(2.0, (c - E8M0_BIAS).double()).float()
    return torch.where(c == 255, torch.full_like(out, math.nan), out)


def shared_exponent(amax: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    """MX's shared exponent ``floor(log2(amax)) - emax_elem`` per block, as int64.

    ``floor(log2(amax))`` comes exactly from the bits (``torch.frexp``), never from a
    rounded logarithm. All-zero blocks and exponents below -127 give -127.

    Raises:
        ValueError: an exponent above 127 (only float64 inputs reach it).
    """
    _, e = torch.frexp(amax)  # amax = m * 2^e with m in [0.5, 1)
    shared = e.long() - 1 - fmt.emax_elem
    shared = torch.where(amax > 0, shared, torch.full_like(shared, _E8M0_MIN))
    shared.clamp_(min=_E8M0_MIN)
    if shared.numel() and int(shared.max()) > _E8M0_MAX:
        big = float(amax.max())
        raise ValueError(
            f"{fmt.name} cannot scale a block with absmax {big:.4g}: its E8M0 scale would need "
            f"2^{int(shared.max())}, beyond the largest 2^{_E8M0_MAX}"
        )
    return shared


def encode_blocks(work: torch.Tensor, fmt: BlockFormat) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Codes, block scales (float32, ``(*lead, n_blocks)``) and the tensor scale (0-d
    float32 or None) of the finite float32/float64 tensor ``work`` (last dimension a
    multiple of ``fmt.block_size``, checked by the caller).

    The codec under :func:`quantlab.core.quantize.quantize` for block-scaled formats, which
    wraps its result in a :class:`~quantlab.core.quantize.QTensor`; :func:`decode_blocks`
    inverts it.
    """
    k = fmt.block_size
    g = work.reshape(*work.shape[:-1], work.shape[-1] // k, k)
    amax = g.abs().amax(dim=-1, keepdim=True) if g.numel() else g.new_zeros((*g.shape[:-1], 1))
    tensor_scale = None
    if fmt.scale_format == "e8m0":
        scale = torch.pow(2.0, shared_exponent(amax, fmt).double()).float()
        v = g / scale.to(g.dtype)
    else:  # NVFP4: fp32 tensor scale, e4m3 block scales, all in float32
        amax32 = amax.float()
        top = float(work.abs().max()) if work.numel() else 0.0
        if not top <= torch.finfo(torch.float32).max:
            raise ValueError(f"{fmt.name} needs values within float32's range, got absmax {top:.4g}")
        gs = torch.tensor(top, dtype=torch.float32) / _NVFP4_GLOBAL
        if top == 0:
            gs = torch.tensor(1.0)
        elif float(gs) < torch.finfo(torch.float32).tiny:
            raise ValueError(
                f"{fmt.name} cannot scale x with absmax {top:.4g}: its fp32 tensor scale "
                f"absmax / {_NVFP4_GLOBAL:g} would be subnormal; rescale x"
            )
        s = (amax32 / fmt.max_value / gs).clamp_(_NVFP4_SCALE_MIN, _E4M3.max_value)
        scale = _E4M3.round(s)
        v = g / (gs * scale).to(g.dtype)
        tensor_scale = gs.reshape(())
    el = fmt.element
    if isinstance(el, FloatFormat):
        v.clamp_(-el.max_value, el.max_value)  # MX and NVFP4 elements saturate
        codes = el.encode(v)
    else:  # mxint8: round(v / 2^-6) to nearest even, symmetric int8 range
        v.div_(fmt.element_scale).round_().clamp_(-el.qmax, el.qmax)
        codes = v.to(el.code_dtype)
    return codes.reshape(work.shape), scale.squeeze(-1), tensor_scale


def decode_blocks(
    codes: torch.Tensor,
    scale: torch.Tensor,
    tensor_scale: Optional[torch.Tensor],
    fmt: BlockFormat,
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> torch.Tensor:
    """``element * X`` per block (times the tensor scale), in ``dtype``: the inverse of
    :func:`encode_blocks`, of the ``shape`` the codes had before blocking.

    MX products are exact (an element times a power of two), so they are formed in
    float64 for float64 inputs and float32 otherwise; NVFP4 always uses float32, as
    its decoders do.
    """
    el = fmt.element
    work = torch.float64 if dtype == torch.float64 and tensor_scale is None else torch.float32
    if isinstance(el, FloatFormat):
        vals = el.decode(codes).to(work)
    else:
        vals = codes.to(work) * fmt.element_scale
    k = fmt.block_size
    vals = vals.reshape(*shape[:-1], shape[-1] // k, k)
    vals = vals * scale.to(work).unsqueeze(-1)
    if tensor_scale is not None:
        vals = vals * tensor_scale.to(work)
    return vals.reshape(shape).to(dtype)


def scale_codes(q: QTensor) -> torch.Tensor:
    """The stored 8-bit block scales of a block-scaled :class:`~quantlab.QTensor`.

    Returns:
        uint8 tensor shaped like ``q.scale``: E8M0 codes ``log2(X) + 127`` for the MX
        formats, fp8 e4m3 bit patterns for ``nvfp4``.

    Raises:
        TypeError: ``q`` is not a QTensor of a block-scaled format.
    """
    # checked by its fields, so that this module needs nothing from quantize (which imports it)
    if not isinstance(getattr(q, "format", None), BlockFormat) or not isinstance(
        getattr(q, "scale", None), torch.Tensor
    ):
        raise TypeError(f"q must be a QTensor of a block-scaled format, got {q!r:.80}")
    if q.format.scale_format == "e8m0":
        _, e = torch.frexp(q.scale.double())
        return (e.long() - 1 + E8M0_BIAS).to(torch.uint8)
    return _E4M3.encode(q.scale)
