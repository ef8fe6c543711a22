"""The quantized tensor: :class:`QTensor` (codes, scales, zero points, how they are shared) and
:func:`dequantize`.

``x_hat = (code - zero_point) * scale`` for integer formats, ``decode(code) * scale`` for float
and codebook formats; block-scaled formats decode each block with its own scale. ``nbytes`` counts
real packed storage: codes at ``bits`` each, scales at ``scale_dtype``, zero points at the code
width. :mod:`quantlab.core.quantize` makes QTensors and re-exports these names.

Taught in: chapters/02_explorer.ipynb ("What you just saw") and chapters/04_in_practice.ipynb
("Real savings need packed storage").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ._backend import ArrayLike, like_input
from .formats import (
    BlockFormat,
    FloatFormat,
    Format,
    IntFormat,
)
from .mx import decode_blocks
from .packing import pack, packed_nbytes
from .scheme import EXACT_SCALE_DTYPE, SCALE_DTYPES

__all__ = ["QTensor", "dequantize", "grid_overflow"]

_DTYPE_BITS = {torch.float32: 32, torch.float16: 16, torch.bfloat16: 16}


# --------------------------------------------------------------------------- QTensor


@dataclass
class QTensor:
    """A quantized tensor: codes plus everything needed to get the values back.

    The containers are torch tensors whatever the input's kind (numpy or torch):
    ``dequantize()`` returns the input's kind.

    Attributes:
        codes: integer torch tensor with the shape of the original (unpacked, one code per
            element): integer codes, float bit patterns or codebook indices.
        scale: float32 tensor (values exact in ``scale_dtype``) in the public shape
            (``()``, ``(C,)`` or ``(*lead, n_groups)``), or None for an unscaled cast.
        zero_point: int32 tensor like ``scale``, or None; a float32 tensor of real-valued
            zero points (values exact in ``scale_dtype``) for :mod:`quantlab.hqq`.
        format: the number format.
        shape: the original shape.
        granularity, axis, group_size, scale_dtype: how it was quantized.
        dtype: the original floating dtype (``dequantize`` returns it).
        was_numpy: whether the input was a numpy array (``dequantize`` returns one then).
        tensor_scale: a 0-d float32 tensor for formats with one extra scale per tensor
            (``nvfp4``), else None.
    """

    codes: torch.Tensor
    scale: Optional[torch.Tensor]
    zero_point: Optional[torch.Tensor]
    format: Format
    shape: tuple[int, ...]
    granularity: str = "tensor"
    axis: int = 0
    group_size: Optional[int] = None
    scale_dtype: str = EXACT_SCALE_DTYPE
    dtype: torch.dtype = torch.float32
    was_numpy: bool = False
    tensor_scale: Optional[torch.Tensor] = None

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of real packed storage: codes at ``bits`` each, scales at ``scale_dtype``,
        integer zero points at the code width (each array packed on its own, rounded up to
        bytes), floating zero points (:mod:`quantlab.hqq`) at ``scale_dtype`` too.
        Block-scaled formats: 8 bits per block scale, 4 bytes for a ``tensor_scale``."""
        total = packed_nbytes(self.numel, self.format.bits)
        if isinstance(self.format, BlockFormat):
            total += self.scale.numel() * self.format.scale_bits // 8
            return total + (4 if self.tensor_scale is not None else 0)
        if self.scale is not None:
            total += self.scale.numel() * _DTYPE_BITS[SCALE_DTYPES[self.scale_dtype]] // 8
        if self.zero_point is not None:
            if self.zero_point.dtype.is_floating_point:  # real-valued zero points (HQQ)
                total += self.zero_point.numel() * _DTYPE_BITS[SCALE_DTYPES[self.scale_dtype]] // 8
            else:
                total += packed_nbytes(self.zero_point.numel(), self.format.bits)
        return total

    @property
    def bits_per_weight(self) -> float:
        """``8 * nbytes / numel``: the format's bits plus the overhead of scales."""
        if self.numel == 0:
            return float(self.format.bits)
        return 8 * self.nbytes / self.numel

    def packed(self) -> torch.Tensor:
        """The codes packed into bytes, as a flat uint8 torch tensor on the codes' device.

        :func:`quantlab.core.packing.pack`, the library's one codec: codes of 1 to 16 bits as a
        little-endian bitstream, 32-bit codes (fp32 bit patterns) as 4 bytes each, least
        significant first. The result has ``packed_nbytes(numel, bits)`` bytes.
        """
        return pack(self.codes.reshape(-1), self.format.bits)

    def _broadcast(self, p: torch.Tensor) -> torch.Tensor:
        if self.granularity == "tensor":
            return p
        if self.granularity == "channel":
            shape = [1] * len(self.shape)
            shape[self.axis] = self.shape[self.axis]
            return p.reshape(shape)
        return p.unsqueeze(-1)

    def dequantize(self) -> ArrayLike:
        """Values back as floats in the original dtype and kind (numpy or torch).

        ``x_hat = (code - zero_point) * scale`` (integers) or ``decode(code) * scale``.
        """
        return like_input(self._dequantize_tensor(), self.was_numpy)

    def _dequantize_tensor(self) -> torch.Tensor:
        fmt = self.format
        if isinstance(fmt, BlockFormat):
            return decode_blocks(self.codes, self.scale, self.tensor_scale, fmt, self.shape, self.dtype)
        if isinstance(fmt, IntFormat):
            vals = self.codes.to(torch.float32)
        else:
            vals = fmt.decode(self.codes)
        if self.scale is None:
            return vals.to(self.dtype)
        if self.dtype == torch.float64 and (
            grid_overflow(fmt, self.scale, self.zero_point, torch.float32) is not None
            or _grid_underflow(fmt, self.scale)
        ):
            # grid points beyond float32's range, or below its normal range (where a float32
            # product would keep fewer bits): compute in float64, exactly on the grid
            vals = vals.double()
        if self.granularity == "group":
            vals = vals.reshape(*self.shape[:-1], self.shape[-1] // self.group_size, self.group_size)
        if self.zero_point is not None:
            vals -= self._broadcast(self.zero_point).to(vals.dtype)
        vals *= self._broadcast(self.scale).to(vals.dtype)
        top = grid_overflow(fmt, self.scale, self.zero_point, self.dtype)
        if top is not None:
            vals.clamp_(-top, top)
        return vals.reshape(self.shape).to(self.dtype)

    def __repr__(self) -> str:
        return (
            f"QTensor(format={self.format.name}, shape={tuple(self.shape)}, "
            f"granularity={self.granularity!r}, bits_per_weight={self.bits_per_weight:.4g}, "
            f"nbytes={self.nbytes})"
        )


def _grid_underflow(fmt: Format, scale: torch.Tensor) -> bool:
    """Whether a grid point ``value * scale`` with the smallest non-zero ``value`` of ``fmt``
    (1 for integers, the smallest subnormal for floats, the smallest non-zero magnitude of a
    codebook) falls below float32's smallest normal number for some scale."""
    if scale.numel() == 0:
        return False
    if isinstance(fmt, IntFormat):
        step = 1.0
    elif isinstance(fmt, FloatFormat):
        step = fmt.min_subnormal
    else:
        step = min((abs(v) for v in getattr(fmt, "table", ()) if v != 0), default=1.0)
    return float(scale.min()) * step < torch.finfo(torch.float32).tiny


def grid_overflow(
    fmt: Format, scale: torch.Tensor, zero_point: Optional[torch.Tensor], dtype: torch.dtype
) -> Optional[float]:
    """``finfo(dtype).max`` if some grid point ``(code - zero_point) * scale`` could exceed
    it (so dequantized values must be clamped to stay finite), else None."""
    if scale.numel() == 0:
        return None
    top = torch.finfo(dtype).max
    if isinstance(fmt, IntFormat):
        if zero_point is None:
            reach = float(max(-fmt.qmin, fmt.qmax))
        else:
            z = zero_point.double()
            reach = float(torch.maximum(fmt.qmax - z, z - fmt.qmin).max())
    else:
        reach = float(fmt.max_value)
    # 1 + 2^-20: room for the float32 rounding of the product itself
    return top if reach * float(scale.max()) * (1 + 2.0**-20) > top else None


def dequantize(q: QTensor) -> ArrayLike:
    """Return the values a :class:`QTensor` stands for (same kind and dtype as its input)."""
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    return q.dequantize()
