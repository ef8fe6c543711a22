"""The layer: :class:`QuantizedLinear`, a Linear layer whose weight is stored packed and
rebuilt (dequantized) on each call.

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..core._backend import ArrayLike, as_tensor, like_input
from ..core.formats import (
    Format,
    IntFormat,
)
from ..core.quantize import SCALE_DTYPES, QParams, QTensor, dequantize, quantize
from .codes import cast_dtype, device_decoder, format_problem, pack_codes, unpack_codes
from .layout import FILE_VERSION, StoredLayout, decode_record, encode_record, record_differences
from .scheme import QuantScheme, SchemeLike, as_scheme

__all__ = [
    "QuantizedLinear",
]


# integer dtypes of the same width, to move scales without converting them
_SAME_WIDTH_INT = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}


def _check_dense(t: torch.Tensor, name: str) -> None:
    """Refuse sparse tensors (TypeError) and tensors without values on the meta device."""
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {t.layout} (call .to_dense() first)")
    if t.is_meta:
        raise ValueError(
            f"{name} is on the meta device and holds no values; materialize it "
            "first (e.g. to_empty() and load_state_dict())"
        )


class QuantizedLinear(nn.Module):
    """A Linear layer whose weight is stored as packed low-bit codes plus scales.

    ``y = x @ W_hat^T + b`` with ``W_hat = (code - zero_point) * scale`` (integer formats)
    or ``decode(code) * scale`` (float and codebook formats), rebuilt on every call by
    :meth:`QTensor.dequantize <quantlab.quantize.QTensor.dequantize>` from the unpacked
    codes (see :meth:`dequantize_weight`).

    Build one with :meth:`from_linear` (round-to-nearest with a :class:`QuantScheme`),
    :meth:`from_qtensor` (codes and scales computed elsewhere, e.g. by GPTQ) or
    :meth:`from_weight` (a weight already on a known grid, with its ``QParams``).

    Devices and dtypes: ``.to(device)`` moves every buffer (``.to("meta")`` too; then
    ``to_empty()`` and ``load_state_dict()`` give the layer back); decoding tables of
    float and codebook formats are kept per device. ``.to(dtype)`` / ``.half()`` convert
    ``bias`` and ``input_scale`` like ``nn.Linear``'s parameters, while the codes and the
    scales keep their storage dtypes (part of the scheme); ``forward`` computes in the
    input's dtype.

    ``state_dict()`` holds the buffers and, as extra state, the layout record (format,
    shape, granularity, axis, group size, scale dtype, ...) as a uint8 tensor of JSON;
    ``load_state_dict`` refuses a state dict of another layout with a ValueError that
    names the layer and what differs, before copying anything.

    Attributes:
        in_features, out_features: as for ``nn.Linear``.
        format: the number format of the codes.
        granularity, axis, group_size, scale_dtype: how the scales are shared and stored.
        symmetric: False when zero points were measured (min/max scaling).
        weight_dtype: dtype of the original weight (what :meth:`dequantize_weight` returns).
        packed: uint8 buffer of the packed codes.
        scale: buffer of scales at ``scale_dtype`` (absent for 16/32-bit casts).
        zero_point: uint8 buffer of packed zero points, or None.
        bias: float buffer or None.
        input_scale: float32 buffer ``(in_features,)`` multiplying the input, or None.

    Taught in: chapters/04_in_practice.ipynb, "Real savings need packed storage".
    """

    def __init__(
        self,
        qt: QTensor,
        bias: Optional[torch.Tensor] = None,
        input_scale: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        if not isinstance(qt, QTensor):
            raise TypeError(f"qt must be a QTensor, got {type(qt).__name__}")
        if len(qt.shape) != 2:
            raise ValueError(f"qt must hold a 2-D weight (out_features, in_features), got shape {qt.shape}")
        if not isinstance(qt.codes, torch.Tensor):
            raise TypeError(f"qt.codes must be a torch.Tensor, got {type(qt.codes).__name__}")
        _check_dense(qt.codes, "qt.codes")
        if qt.zero_point is not None and qt.zero_point.is_floating_point():
            raise ValueError(
                "qt has real-valued zero points (HQQ's), which QuantizedLinear does not store: "
                "it packs integer zero points like the codes; use qt.dequantize() as a float "
                "weight instead"
            )
        fmt = qt.format
        out_f, in_f = (int(s) for s in qt.shape)
        scaled = qt.scale is not None
        granularity = qt.granularity if scaled else "tensor"
        axis = int(qt.axis) % 2 if scaled and granularity == "channel" else 0
        if isinstance(fmt, IntFormat) and not fmt.signed and qt.zero_point is not None:
            mid = (fmt.qmax + fmt.qmin + 1) // 2  # symmetric unsigned: the fixed mid-range zero
            symmetric = bool((qt.zero_point == mid).all())
        else:
            symmetric = qt.zero_point is None
        layout = StoredLayout(
            fmt,
            (out_f, in_f),
            granularity,
            axis,
            qt.group_size if granularity == "group" else None,
            qt.scale_dtype,
            scaled,
            qt.zero_point is not None,
            symmetric,
            qt.dtype,
        )
        problem = format_problem(fmt) or layout._problem()
        if problem:
            raise ValueError(f"qt cannot be stored: {problem}")
        packed = pack_codes(qt.codes, fmt.bits)
        scale = None if qt.scale is None else qt.scale.to(SCALE_DTYPES[qt.scale_dtype]).contiguous()
        zp = None if qt.zero_point is None else pack_codes(qt.zero_point, fmt.bits)
        self._install(layout, packed, scale, zp, bias, input_scale)

    def _install(
        self,
        layout: StoredLayout,
        packed: torch.Tensor,
        scale: Optional[torch.Tensor],
        zero_point: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        input_scale: Optional[torch.Tensor],
    ) -> None:
        """Check the bias and input scale against ``layout`` and register every buffer."""
        out_f, in_f = layout.shape
        if bias is not None:
            if not isinstance(bias, torch.Tensor):
                raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
            _check_dense(bias, "bias")
            if tuple(bias.shape) != (out_f,):
                raise ValueError(f"bias must have shape ({out_f},), got {tuple(bias.shape)}")
        if input_scale is not None:
            if not isinstance(input_scale, torch.Tensor):
                raise TypeError(f"input_scale must be a torch.Tensor or None, got {type(input_scale).__name__}")
            _check_dense(input_scale, "input_scale")
            if tuple(input_scale.shape) != (in_f,):
                raise ValueError(f"input_scale must have shape ({in_f},), got {tuple(input_scale.shape)}")
        self._layout = layout
        self.register_buffer("packed", packed)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.detach().float().clone())

    # ---- constructors
    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: SchemeLike = "int8") -> QuantizedLinear:
        """Round-to-nearest quantize an ``nn.Linear`` with a scheme.

        Args:
            linear: the layer; its weight must be a dense tensor holding values (not on
                the ``meta`` device). ``out_features`` or ``in_features`` may be 0.
            scheme: a :class:`QuantScheme` or a format name.

        Returns:
            The quantized layer (the bias is copied).

        Raises:
            TypeError: ``linear`` is not an ``nn.Linear``; a sparse weight or bias.
            ValueError: a weight on the meta device; what :func:`quantlab.quantize` raises
                (e.g. a group size that does not divide ``in_features``).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        scheme = as_scheme(scheme)
        _check_dense(linear.weight, "linear.weight")
        if linear.bias is not None:
            _check_dense(linear.bias, "linear.bias")
        qt = scheme.quantize(linear.weight.detach())
        return cls(qt, None if linear.bias is None else linear.bias.detach())

    @classmethod
    def from_qtensor(
        cls,
        qt: QTensor,
        bias: Optional[torch.Tensor] = None,
        input_scale: Optional[torch.Tensor] = None,
    ) -> QuantizedLinear:
        """Store a :class:`QTensor` of shape ``(out_features, in_features)`` (e.g. GPTQ's result).

        Args:
            qt: the quantized weight.
            bias: ``(out_features,)`` or None.
            input_scale: ``(in_features,)`` multiplier applied to the input first (AWQ's
                ``1/s`` when it cannot be folded into a preceding layer), or None.

        Returns:
            The layer.
        """
        return cls(qt, bias, input_scale)

    @classmethod
    def from_weight(
        cls,
        weight: ArrayLike,
        qparams: QParams,
        bias: Optional[torch.Tensor] = None,
    ) -> QuantizedLinear:
        """Store a weight that already lies on a quantization grid (e.g. GPTQ's dequantized
        output) together with the ``QParams`` that define that grid.

        The codes are recovered with ``quantize(weight, qparams=qparams)``; for a weight on
        the grid this is exact, so ``dequantize_weight()`` gives ``weight`` back.

        Args:
            weight: float tensor or numpy array ``(out_features, in_features)``.
            qparams: the grid.
            bias: ``(out_features,)`` tensor or None.

        Returns:
            The layer (a torch module whatever the kind of ``weight``).
        """
        if not isinstance(qparams, QParams):
            raise TypeError(f"qparams must be a QParams, got {type(qparams).__name__}")
        if isinstance(weight, torch.Tensor):
            weight = weight.detach()
        return cls(quantize(weight, qparams.format, qparams=qparams), bias)

    # ---- the layout, as attributes
    @property
    def format(self) -> Format:
        return self._layout.format

    @property
    def in_features(self) -> int:
        return self._layout.shape[1]

    @property
    def out_features(self) -> int:
        return self._layout.shape[0]

    @property
    def granularity(self) -> str:
        return self._layout.granularity

    @property
    def axis(self) -> int:
        return self._layout.axis

    @property
    def group_size(self) -> Optional[int]:
        return self._layout.group_size

    @property
    def scale_dtype(self) -> str:
        return self._layout.scale_dtype

    @property
    def symmetric(self) -> bool:
        return self._layout.symmetric

    @property
    def weight_dtype(self) -> torch.dtype:
        return self._layout.weight_dtype

    @property
    def scheme(self) -> QuantScheme:
        """The :class:`QuantScheme` that describes this layer's storage."""
        L = self._layout
        if not L.scaled:
            return QuantScheme(L.format)
        return QuantScheme(L.format, L.granularity, L.group_size, L.axis, L.symmetric, L.scale_dtype)

    # ---- storage
    def _qtensor(self, dtype: torch.dtype, codes: torch.Tensor, fmt: Format) -> QTensor:
        """The stored weight as a QTensor around ``codes`` (shape ``(out, in)``)."""
        L = self._layout
        zp = None
        if self.zero_point is not None:
            zp = unpack_codes(
                self.zero_point, L.format.bits, L.n_scales, isinstance(L.format, IntFormat) and L.format.signed
            )
            zp = zp.to(torch.int32).reshape(L.scale_shape)
        scale = None if self.scale is None else self.scale.float()
        return QTensor(codes, scale, zp, fmt, L.shape, L.granularity, L.axis, L.group_size, L.scale_dtype, dtype, False)

    def _header(self) -> QTensor:
        """The QTensor with placeholder (meta) codes: enough for its byte counts."""
        L = self._layout
        codes = torch.empty(L.shape, dtype=L.format.code_dtype, device="meta")
        zp = None if not L.zero_point else torch.empty(L.scale_shape, dtype=torch.int32, device="meta")
        return QTensor(
            codes,
            self.scale,
            zp,
            L.format,
            L.shape,
            L.granularity,
            L.axis,
            L.group_size,
            L.scale_dtype,
            L.weight_dtype,
            False,
        )

    @property
    def weight_nbytes(self) -> int:
        """Bytes of the stored weight: packed codes + scales + packed zero points.

        This is :attr:`QTensor.nbytes <quantlab.quantize.QTensor.nbytes>` of the stored
        weight, which equals the memory calculator's
        ``weight_bytes(numel, fmt, group_size, scale_dtype)`` for whole groups and the
        bytes of the ``packed``, ``scale`` and ``zero_point`` buffers.
        """
        return int(self._header().nbytes)

    @property
    def nbytes(self) -> int:
        """Bytes of everything the layer stores: the weight (:attr:`weight_nbytes`), the bias
        and the input scale (if any)."""
        extra = sum(t.numel() * t.element_size() for t in (self.bias, self.input_scale) if t is not None)
        return self.weight_nbytes + int(extra)

    @property
    def bits_per_weight(self) -> float:
        """``8 * weight_nbytes / (out_features * in_features)`` (the format's bits for an
        empty layer), as :attr:`QTensor.bits_per_weight <quantlab.quantize.QTensor.bits_per_weight>`."""
        return float(self._header().bits_per_weight)

    def _codes(self, signed: bool) -> torch.Tensor:
        L = self._layout
        return unpack_codes(self.packed, L.format.bits, L.numel, signed).reshape(L.shape)

    def codes(self) -> torch.Tensor:
        """The unpacked codes, shape ``(out_features, in_features)``, as
        :func:`unpack_codes` returns them (a view of ``packed`` for 8-bit codes)."""
        fmt = self.format
        return self._codes(isinstance(fmt, IntFormat) and fmt.signed)

    def to_qtensor(self) -> QTensor:
        """The stored weight as a :class:`QTensor` (codes unpacked and copied, scales as
        float32, zero points as int32)."""
        fmt = self.format
        return self._qtensor(self.weight_dtype, self.codes().to(fmt.code_dtype, copy=True), fmt)

    def dequantize_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Rebuild the float weight ``(out_features, in_features)`` from the packed codes.

        The codes are unpacked on the buffers' device and handed, with the scales and zero
        points, to :func:`quantlab.dequantize` (a :class:`QTensor` whose format decodes on
        that device: :func:`~quantlab.nn.codes.device_decoder`):
        ``W_hat = (code - zero_point) * scale`` or ``decode(code) * scale``, computed as
        :meth:`QTensor.dequantize` computes it. On the ``meta`` device the result is an
        empty meta tensor of the right shape and dtype.

        Args:
            dtype: result dtype (default: the original weight's dtype).

        Returns:
            A new float tensor of shape ``(out_features, in_features)``.
        """
        dtype = dtype or self.weight_dtype
        if self.packed.is_meta:
            return torch.empty(self._layout.shape, dtype=dtype, device="meta")
        fmt = self.format
        # integers: sign-extended codes; fp16/bf16/fp32: the dtype's bits (int16/int32 views)
        signed = fmt.signed if isinstance(fmt, IntFormat) else cast_dtype(fmt) is not None
        dec = device_decoder(fmt, self.packed.device)
        return dequantize(self._qtensor(dtype, self._codes(signed), dec))

    # ---- devices, dtypes, state dicts
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> QuantizedLinear:
        # the scales follow the device but keep their storage dtype: they go through fn as
        # integers of the same width (which .to(dtype) / .half() leave alone)
        scale = self._buffers.get("scale")
        if scale is not None and scale.dtype in _SAME_WIDTH_INT:
            self._buffers["scale"] = scale.view(_SAME_WIDTH_INT[scale.dtype])
        try:
            super()._apply(fn, recurse)
        finally:
            moved = self._buffers.get("scale")
            if scale is not None and moved is not None and moved.dtype != scale.dtype:
                self._buffers["scale"] = moved.view(scale.dtype)
        return self

    def _record(self) -> dict:
        rec = {"quantlab.nn": FILE_VERSION, **self._layout.record()}
        rec["bias"] = self.bias is not None
        rec["input_scale"] = self.input_scale is not None
        return rec

    def get_extra_state(self) -> torch.Tensor:
        """The layout record (format, shape, granularity, axis, group size, scale dtype,
        symmetric, weight dtype, version) as a uint8 tensor of UTF-8 JSON."""
        return encode_record(self._record())

    def _check_record(self, rec: dict, where: str) -> None:
        diff = record_differences(self._record(), rec, skip=("weight_dtype", "symmetric"))
        if diff:
            theirs = StoredLayout.from_record(rec, where).describe() if "format" in rec else "?"
            raise ValueError(
                f"{where}: the state dict holds a {theirs} layer, this layer is "
                f"{self._layout.describe()} ({'; '.join(diff)}). Quantize the model with the "
                "checkpoint's scheme first"
            )
        StoredLayout.from_record(rec, where)

    def set_extra_state(self, state: Any) -> None:
        """Accept the layout record of a state dict if it matches this layer's layout.

        Raises:
            ValueError: a record of another version, format, shape, granularity, axis,
                group size, scale dtype, zero point, bias or input scale.
        """
        rec = decode_record(state, "QuantizedLinear")
        self._check_record(rec, "QuantizedLinear")
        theirs = StoredLayout.from_record(rec, "QuantizedLinear")
        self._layout = dataclasses.replace(self._layout, weight_dtype=theirs.weight_dtype, symmetric=theirs.symmetric)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        key = prefix + "_extra_state"
        where = f"layer {prefix[:-1]!r}" if prefix else "QuantizedLinear"
        if key in state_dict:  # check the layout before any buffer is overwritten
            self._check_record(decode_record(state_dict[key], where), where)
        scale = state_dict.get(prefix + "scale")
        if isinstance(scale, torch.Tensor) and not scale.is_meta and scale.numel():
            s = scale.float()
            if not bool((torch.isfinite(s) & (s > 0)).all()):
                raise ValueError(
                    f"{where}: the state dict's 'scale' must hold finite positive "
                    f"scales, got {s[~(torch.isfinite(s) & (s > 0))][:4].tolist()}"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # ---- compute
    def forward(self, x: ArrayLike) -> ArrayLike:
        """``F.linear(x * input_scale, dequantize_weight(x.dtype), bias)``; the float weight
        is not kept.

        Args:
            x: float tensor ``(..., in_features)``; a numpy array gives a numpy array.

        Returns:
            ``(..., out_features)`` in ``x``'s dtype and kind.

        Raises:
            ValueError: ``x`` whose last dimension is not ``in_features`` (the message
                names the layer's shape and format). TypeError: a non-float ``x``.
        """
        was_numpy = False
        if not isinstance(x, torch.Tensor):
            x, was_numpy = as_tensor(x)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"QuantizedLinear(in_features={self.in_features}, out_features="
                f"{self.out_features}, format={self.format.name}) takes x of shape "
                f"(..., {self.in_features}), got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"QuantizedLinear takes a float x, got dtype {str(x.dtype).replace('torch.', '')}")
        w = self.dequantize_weight(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype)
        y = F.linear(x, w, b)
        return like_input(y, was_numpy) if was_numpy else y

    def extra_repr(self) -> str:
        g = self.granularity if self.granularity != "group" else f"group {self.group_size}"
        if self.scale is None:
            g = "cast"
        tail = ", input_scale" if self.input_scale is not None else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"format={self.format.name}, {g}, bits_per_weight={self.bits_per_weight:.3f}{tail}"
        )
