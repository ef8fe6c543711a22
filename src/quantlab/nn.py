"""Quantized ``nn.Linear`` layers that really store packed codes, and a one-call model swap.

A fake-quantized model (float weights that merely *lie on* a quantization grid) is exactly
as large as the original. Real savings need the codes packed into bytes: an int4 weight
matrix of ``out x in`` values is stored here as ``out * in / 2`` bytes plus its scales.

:class:`QuantizedLinear` holds, as buffers (so ``state_dict()`` carries them):

* ``packed`` -- uint8, the codes packed with :func:`quantlab.packing.pack`'s layout
  (``bits`` bits each, little-endian bitstream; 16-bit casts store the fp16/bf16 bit
  patterns, two bytes each);
* ``scale`` -- the scales *at their storage dtype* (fp16 by default, as most libraries do);
* ``zero_point`` -- packed like the codes (asymmetric schemes only);
* ``bias`` -- unchanged, in its original dtype;
* ``input_scale`` -- optional, float32 ``(in_features,)``: a per-input-channel factor
  applied to ``x`` first (AWQ's ``1/s`` where no preceding layer can absorb it).

``forward`` unpacks and dequantizes the weight on the fly and calls ``F.linear``; nothing
dequantized is cached, so the memory saved stays saved. On a CPU without low-bit integer
kernels this is *slower* than the fp32 layer: every call rebuilds the float weight.

The one-call entry point is :func:`quantize_model`; :func:`size_report` measures the
bytes before and after, layer by layer::

    import quantlab as ql
    from quantlab.models import minilm
    model = ql.nn.quantize_model(minilm.load_model().encoder, "int8")  # per-channel int8
    print(ql.nn.size_report(model))

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .formats import FloatFormat, Format, IntFormat, get_format
from .packing import pack, unpack
from .quantize import SCALE_DTYPES, QParams, QTensor, quantize

__all__ = [
    "QuantScheme",
    "QuantizedLinear",
    "quantize_model",
    "install_results",
    "quantized_layers",
    "linear_layers",
    "size_report",
    "SizeReport",
    "LayerSize",
    "pack_codes",
    "unpack_codes",
]

_CAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------- the scheme


@dataclass(frozen=True)
class QuantScheme:
    """How to quantize a weight matrix: format, granularity and scale storage.

    Attributes:
        fmt: format name or object, e.g. ``"int8"``, ``"int4"``, ``"nf4"``, ``"fp8_e4m3"``,
            ``"fp16"``, ``"bf16"``.
        granularity: ``"tensor"``, ``"channel"`` or ``"group"``; ``None`` (default) means
            ``"group"`` if ``group_size`` is given, ``"channel"`` for scaled formats, and a
            plain cast (no scale) for fp16 / bf16 / fp32.
        group_size: weights per scale along the input dimension (``granularity="group"``).
        axis: the channel axis for ``"channel"``: 0 = one scale per output row (default).
        symmetric: absmax scaling (True) or min/max with a zero point (integer formats).
        scale_dtype: ``"fp16"`` (default), ``"bf16"`` or ``"fp32"``.

    Example:
        >>> QuantScheme("int4", group_size=128).label
        'int4 g128'

    Raises:
        ValueError: unknown format, granularity or scale dtype; ``group_size`` without
            ``"group"``; a granularity given for a 16/32-bit cast.

    Taught in: chapters/04_in_practice.ipynb, "One table over formats".
    """

    fmt: Union[str, Format] = "int8"
    granularity: Optional[str] = None
    group_size: Optional[int] = None
    axis: int = 0
    symmetric: bool = True
    scale_dtype: str = "fp16"

    def __post_init__(self) -> None:
        fmt = get_format(self.fmt)
        object.__setattr__(self, "fmt", fmt)
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(
                f"scale_dtype must be one of {tuple(SCALE_DTYPES)}, got {self.scale_dtype!r}"
            )
        if self.granularity is not None and self.granularity not in ("tensor", "channel", "group"):
            raise ValueError(
                f"granularity must be 'tensor', 'channel', 'group' or None, got {self.granularity!r}"
            )
        if self.is_cast and self.granularity is not None:
            raise ValueError(
                f"{fmt.name} is stored as a plain cast without scales, so granularity must be "
                f"None, got {self.granularity!r}"
            )
        if self.group_size is not None and self.resolved_granularity != "group":
            raise ValueError(
                f"group_size={self.group_size} needs granularity='group', got {self.granularity!r}"
            )
        if self.resolved_granularity == "group" and self.group_size is None:
            raise ValueError("granularity='group' needs group_size, got None")
        if isinstance(self.axis, bool) or self.axis not in (0, 1, -1, -2):
            raise ValueError(f"axis must be 0 (output rows) or 1 (input columns), got {self.axis!r}")

    @property
    def is_cast(self) -> bool:
        """True for fp16 / bf16 / fp32: the weight is cast, no scale is stored."""
        return isinstance(self.fmt, FloatFormat) and self.fmt.bits >= 16

    @property
    def resolved_granularity(self) -> str:
        """The granularity actually used (``"tensor"`` for casts)."""
        if self.granularity is not None:
            return self.granularity
        if self.is_cast:
            return "tensor"
        return "group" if self.group_size is not None else "channel"

    @property
    def label(self) -> str:
        """A short name for tables: ``"int8 per-channel"``, ``"int4 g128"``, ``"fp16"``."""
        name = self.fmt.name
        if self.is_cast:
            return name
        g = self.resolved_granularity
        tail = f"g{self.group_size}" if g == "group" else f"per-{g}"
        return f"{name} {tail}" + ("" if self.symmetric else " asym")

    def qparams_kwargs(self) -> dict:
        """Keyword arguments for :func:`quantlab.quantize` (and GPTQ/AWQ) that match this scheme."""
        if self.is_cast:
            return {"scaled": False}
        kw = {
            "granularity": self.resolved_granularity,
            "symmetric": self.symmetric,
            "scale_dtype": self.scale_dtype,
        }
        if kw["granularity"] == "channel":
            kw["axis"] = self.axis
        if kw["granularity"] == "group":
            kw["group_size"] = self.group_size
        return kw

    def quantize(self, weight: torch.Tensor, qparams: Optional[QParams] = None) -> QTensor:
        """Quantize a 2-D weight with this scheme (round-to-nearest).

        Args:
            weight: float tensor of shape ``(out_features, in_features)``.
            qparams: reuse scales chosen elsewhere (e.g. by GPTQ) instead of absmax/min-max.

        Returns:
            The :class:`~quantlab.quantize.QTensor`.
        """
        if qparams is not None:
            return quantize(weight, self.fmt, qparams=qparams)
        return quantize(weight, self.fmt, **self.qparams_kwargs())


SchemeLike = Union[str, Format, QuantScheme]


def _as_scheme(scheme: SchemeLike) -> QuantScheme:
    if isinstance(scheme, QuantScheme):
        return scheme
    if isinstance(scheme, (str, Format)):
        return QuantScheme(scheme)
    raise TypeError(f"scheme must be a QuantScheme or a format name, got {type(scheme).__name__}")


# --------------------------------------------------------------------------- packing


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes into uint8 with :func:`quantlab.packing.pack`'s layout.

    16- and 32-bit codes (the fp16/bf16/fp32 bit patterns of a cast) are little-endian bytes,
    so they are written as an int16/int32 tensor viewed as bytes; every other width goes
    through :func:`quantlab.pack`.

    Args:
        codes: integer tensor of any shape (flattened in C order), values fitting in ``bits``.
        bits: code width, 1 to 16, or 32.

    Returns:
        Flat uint8 tensor of ``ceil(codes.numel() * bits / 8)`` bytes.
    """
    flat = codes.reshape(-1)
    if bits == 32:  # fp32 bit patterns (a plain fp32 "cast")
        return flat.to(torch.int64).to(torch.int32).view(torch.uint8).clone()
    if bits == 16:
        return flat.to(torch.int32).to(torch.int16).view(torch.uint8).clone()
    return pack(flat, bits)


def unpack_codes(packed: torch.Tensor, bits: int, n: int, signed: bool) -> torch.Tensor:
    """Inverse of :func:`pack_codes` (and of :func:`quantlab.packing.pack`).

    8-, 16- and 32-bit codes are returned as a *view* of ``packed`` (int8/uint8,
    int16, int32): no copy. Other widths go through :func:`quantlab.unpack` (int32).

    Args:
        packed: flat uint8 tensor.
        bits: code width, 1 to 16.
        n: number of codes to read.
        signed: sign-extend two's complement codes.

    Returns:
        Flat integer tensor of ``n`` codes.
    """
    if bits == 32:
        return packed[: 4 * n].view(torch.int32)
    if bits == 16:
        v = packed[: 2 * n].view(torch.int16)
        return v if signed else v.to(torch.int32) & 0xFFFF
    if bits == 8:
        return packed[:n].view(torch.int8) if signed else packed[:n]
    return unpack(packed, bits, n, signed=signed)


# --------------------------------------------------------------------------- the layer


class QuantizedLinear(nn.Module):
    """A Linear layer whose weight is stored as packed low-bit codes plus scales.

    ``y = x @ W_hat^T + b`` with ``W_hat = (code - zero_point) * scale`` (integer formats)
    or ``decode(code) * scale`` (float and codebook formats), rebuilt on every call.

    Build one with :meth:`from_linear` (round-to-nearest with a :class:`QuantScheme`),
    :meth:`from_qtensor` (codes and scales computed elsewhere, e.g. by GPTQ) or
    :meth:`from_weight` (a weight already on a known grid, with its ``QParams``).

    Attributes:
        in_features, out_features: as for ``nn.Linear``.
        format: the number format of the codes.
        granularity, axis, group_size, scale_dtype: how the scales are shared and stored.
        packed: uint8 buffer of the packed codes.
        scale: buffer of scales at ``scale_dtype`` (absent for 16-bit casts).
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
        out_f, in_f = qt.shape
        if bias is not None:
            if not isinstance(bias, torch.Tensor):
                raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
            if tuple(bias.shape) != (out_f,):
                raise ValueError(f"bias must have shape ({out_f},), got {tuple(bias.shape)}")
        if input_scale is not None:
            if not isinstance(input_scale, torch.Tensor):
                raise TypeError(f"input_scale must be a torch.Tensor or None, got {type(input_scale).__name__}")
            if tuple(input_scale.shape) != (in_f,):
                raise ValueError(f"input_scale must have shape ({in_f},), got {tuple(input_scale.shape)}")
        self.in_features = int(in_f)
        self.out_features = int(out_f)
        self.format: Format = qt.format
        self.granularity = qt.granularity
        self.axis = qt.axis
        self.group_size = qt.group_size
        self.scale_dtype = qt.scale_dtype
        self.weight_dtype: torch.dtype = qt.dtype
        fmt = qt.format
        self._signed = isinstance(fmt, IntFormat) and fmt.signed
        self.register_buffer("packed", pack_codes(qt.codes, fmt.bits))
        scale = None if qt.scale is None else qt.scale.to(SCALE_DTYPES[qt.scale_dtype]).contiguous()
        self.register_buffer("scale", scale)
        zp = None if qt.zero_point is None else pack_codes(qt.zero_point, fmt.bits)
        self.register_buffer("zero_point", zp)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer(
            "input_scale", None if input_scale is None else input_scale.detach().float().clone()
        )

    # ---- constructors
    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: SchemeLike = "int8") -> "QuantizedLinear":
        """Round-to-nearest quantize an ``nn.Linear`` with a scheme.

        Raises:
            TypeError: ``linear`` is not an ``nn.Linear``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        scheme = _as_scheme(scheme)
        qt = scheme.quantize(linear.weight.detach())
        return cls(qt, None if linear.bias is None else linear.bias.detach())

    @classmethod
    def from_qtensor(
        cls,
        qt: QTensor,
        bias: Optional[torch.Tensor] = None,
        input_scale: Optional[torch.Tensor] = None,
    ) -> "QuantizedLinear":
        """Store a :class:`QTensor` of shape ``(out_features, in_features)`` (e.g. GPTQ's result).

        Args:
            qt: the quantized weight.
            bias: ``(out_features,)`` or None.
            input_scale: ``(in_features,)`` multiplier applied to the input first (AWQ's
                ``1/s`` when it cannot be folded into a preceding layer), or None.
        """
        return cls(qt, bias, input_scale)

    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        qparams: QParams,
        bias: Optional[torch.Tensor] = None,
    ) -> "QuantizedLinear":
        """Store a weight that already lies on a quantization grid (e.g. GPTQ's dequantized
        output) together with the ``QParams`` that define that grid.

        The codes are recovered with ``quantize(weight, qparams=qparams)``; for a weight on
        the grid this is exact, so ``dequantize_weight()`` gives ``weight`` back.
        """
        if not isinstance(qparams, QParams):
            raise TypeError(f"qparams must be a QParams, got {type(qparams).__name__}")
        return cls(quantize(weight.detach(), qparams.format, qparams=qparams), bias)

    # ---- storage
    def _scale_view(self, p: torch.Tensor) -> torch.Tensor:
        if self.granularity == "tensor":
            return p.reshape(())
        if self.granularity == "channel":
            return p.reshape(-1, 1) if self.axis == 0 else p.reshape(1, -1)
        return p.reshape(self.out_features, -1, 1)

    @property
    def weight_nbytes(self) -> int:
        """Bytes of the stored weight: packed codes + scales + packed zero points.

        Equals ``QTensor.nbytes`` and the memory calculator's
        ``weight_bytes(numel, fmt, group_size, scale_dtype)`` for whole groups.
        """
        total = self.packed.numel()
        if self.scale is not None:
            total += self.scale.numel() * self.scale.element_size()
        if self.zero_point is not None:
            total += self.zero_point.numel()
        return int(total)

    @property
    def nbytes(self) -> int:
        """Bytes of everything the layer stores: the weight (:attr:`weight_nbytes`), the bias
        and the input scale (if any)."""
        extra = sum(t.numel() * t.element_size() for t in (self.bias, self.input_scale) if t is not None)
        return self.weight_nbytes + int(extra)

    @property
    def bits_per_weight(self) -> float:
        """``8 * weight_nbytes / (out_features * in_features)``."""
        return 8 * self.weight_nbytes / (self.out_features * self.in_features)

    def codes(self) -> torch.Tensor:
        """The unpacked codes, shape ``(out_features, in_features)``."""
        n = self.out_features * self.in_features
        return unpack_codes(self.packed, self.format.bits, n, self._signed).reshape(
            self.out_features, self.in_features
        )

    def to_qtensor(self) -> QTensor:
        """The stored weight as a :class:`QTensor` (codes unpacked)."""
        zp = None
        if self.zero_point is not None:
            zp = unpack_codes(self.zero_point, self.format.bits, self._n_scales(), self._signed)
            zp = zp.to(torch.int32).reshape(self.scale.shape)
        scale = None if self.scale is None else self.scale.float()
        codes = self.codes().to(self.format.code_dtype, copy=True)
        return QTensor(codes, scale, zp, self.format, (self.out_features, self.in_features),
                       self.granularity, self.axis, self.group_size, self.scale_dtype,
                       self.weight_dtype, False)

    def _n_scales(self) -> int:
        return 1 if self.scale is None else self.scale.numel()

    def dequantize_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Rebuild the float weight ``(out_features, in_features)`` from the packed codes.

        Args:
            dtype: result dtype (default: the original weight's dtype).
        """
        dtype = dtype or self.weight_dtype
        fmt = self.format
        shape = (self.out_features, self.in_features)
        if self.scale is None:  # a 16-bit cast: the bytes are the fp16/bf16 values
            if fmt.bits == 16 and fmt.name in _CAST_DTYPES:
                return self.packed.view(_CAST_DTYPES[fmt.name]).reshape(shape).to(dtype)
            return fmt.decode(self.codes()).reshape(shape).to(dtype)
        codes = self.codes()
        if isinstance(fmt, IntFormat):
            w = codes.to(torch.float32)
        else:
            w = fmt.decode(codes)
        if self.granularity == "group":
            w = w.reshape(self.out_features, -1, self.group_size)
        if self.zero_point is not None:
            zp = unpack_codes(self.zero_point, fmt.bits, self._n_scales(), self._signed)
            w -= self._scale_view(zp.to(torch.float32))
        w *= self._scale_view(self.scale.float())
        return w.reshape(shape).to(dtype)

    # ---- compute
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x * input_scale, dequantize_weight(), bias)``; the float weight is not kept."""
        w = self.dequantize_weight(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        g = self.granularity if self.granularity != "group" else f"group {self.group_size}"
        if self.scale is None:
            g = "cast"
        tail = ", input_scale" if self.input_scale is not None else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self.format.name}, {g}, bits_per_weight={self.bits_per_weight:.3f}{tail}")


# --------------------------------------------------------------------------- whole models


SkipLike = Union[Sequence[str], Callable[[str, nn.Module], bool], None]


def _skipper(skip: SkipLike) -> Callable[[str, nn.Module], bool]:
    if skip is None:
        return lambda name, mod: False
    if callable(skip):
        return skip
    if isinstance(skip, str):
        skip = (skip,)
    if not all(isinstance(p, str) for p in skip):
        raise TypeError(f"skip must be glob patterns (strings), a callable or None, got {skip!r}")
    pats = tuple(skip)
    return lambda name, mod: any(fnmatch.fnmatchcase(name, p) for p in pats)


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``(name, module)`` for every ``nn.Linear`` in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantizedLinear]]:
    """``(name, module)`` for every :class:`QuantizedLinear` in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize_model(
    model: nn.Module,
    scheme: SchemeLike = "int8",
    *,
    skip: SkipLike = ("lm_head",),
    inplace: bool = True,
    progress: bool = True,
    layer_fn: Optional[Callable[[str, nn.Linear], QuantizedLinear]] = None,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`QuantizedLinear`.

    Args:
        model: any torch module (a whole model or a part, e.g. ``bert.encoder``).
        scheme: a :class:`QuantScheme` or a format name (``"int8"`` = per-channel int8,
            fp16 scales).
        skip: glob patterns of layer names to keep in full precision (default
            ``("lm_head",)``: a language model's output head, often tied to its
            embeddings), a callable ``(name, module) -> bool``, or None.
        inplace: modify ``model`` (default) or a deep copy of it.
        progress: show a tqdm progress bar over the layers.
        layer_fn: build each layer yourself, ``(name, linear) -> QuantizedLinear`` (e.g. a
            GPTQ or AWQ quantizer); default ``QuantizedLinear.from_linear(linear, scheme)``.

    Returns:
        The quantized model (``model`` itself when ``inplace``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; bad ``scheme`` or ``skip``.
        ValueError: no Linear layer is left to quantize.

    Taught in: chapters/04_in_practice.ipynb, "A five-line recipe".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    scheme = _as_scheme(scheme)
    skipped = _skipper(skip)
    if not inplace:
        model = copy.deepcopy(model)
    targets = [(n, m) for n, m in linear_layers(model) if not skipped(n, m)]
    if not targets:
        raise ValueError("model has no nn.Linear layer to quantize (after skip)")
    if layer_fn is None:
        layer_fn = lambda name, lin: QuantizedLinear.from_linear(lin, scheme)  # noqa: E731
    from tqdm.auto import tqdm

    for name, lin in tqdm(targets, desc=f"quantizing to {scheme.label}", disable=not progress,
                          leave=False):
        _set_module(model, name, layer_fn(name, lin))
    return model


def install_results(model: nn.Module, results: Mapping[str, object]) -> nn.Module:
    """Store the results of GPTQ, AWQ (or any QTensors) as packed layers of ``model``.

    Each ``nn.Linear`` named in ``results`` is replaced, in place, by a
    :class:`QuantizedLinear` holding the result's codes and scales and the layer's bias.
    Accepted values:

    * a :class:`~quantlab.quantize.QTensor`;
    * an object with ``.qtensor`` (e.g. :class:`quantlab.gptq.GPTQResult`);
    * an object with ``.qtensors`` and ``.inv_scale`` (:class:`quantlab.awq.AWQResult`):
      layers that share one result object (searched together) take its ``qtensors`` in
      the order their names appear in ``results``, and the layer multiplies its input by
      ``inv_scale`` (``1/s``), which is stored with it and counted in :attr:`~QuantizedLinear.nbytes`.

    Args:
        model: the module the names refer to (the one GPTQ/AWQ was run on).
        results: ``{layer name: result}``, e.g. from ``gptq_quantize_model`` or
            ``awq_quantize_model``.

    Returns:
        ``model``.

    Raises:
        ValueError: a name that is not an ``nn.Linear`` of ``model``, or a weight whose shape
            does not match its layer.
        TypeError: a value of another kind.

    Taught in: chapters/04_in_practice.ipynb, "One table over formats".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    used: dict[int, int] = {}
    for name, r in results.items():
        lin = modules.get(name)
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"results name {name!r}, which is not an nn.Linear of the model")
        input_scale = None
        if isinstance(r, QTensor):
            qt = r
        elif hasattr(r, "qtensors") and hasattr(r, "inv_scale"):
            k = used.get(id(r), 0)
            used[id(r)] = k + 1
            qt = r.qtensors[k]
            input_scale = r.inv_scale
        elif isinstance(getattr(r, "qtensor", None), QTensor):
            qt = r.qtensor
        else:
            raise TypeError(
                f"results[{name!r}] must be a QTensor or a GPTQ/AWQ result, got {type(r).__name__}"
            )
        if tuple(qt.shape) != tuple(lin.weight.shape):
            raise ValueError(
                f"results[{name!r}] holds a weight of shape {tuple(qt.shape)}, but the layer's is "
                f"{tuple(lin.weight.shape)}"
            )
        bias = None if lin.bias is None else lin.bias.detach()
        _set_module(model, name, QuantizedLinear(qt, bias, input_scale))
    return model


@dataclass(frozen=True)
class LayerSize:
    """Bytes of one layer before and after quantization (weight and bias)."""

    name: str
    shape: tuple[int, int]
    before: int
    after: int
    bits_per_weight: float


@dataclass(frozen=True)
class SizeReport:
    """Bytes of a model, layer by layer.

    Attributes:
        layers: one :class:`LayerSize` per Linear / QuantizedLinear layer.
        other: bytes of every other parameter and buffer (embeddings, norms), unchanged.
    """

    layers: tuple[LayerSize, ...]
    other: int

    @property
    def linear_before(self) -> int:
        return sum(r.before for r in self.layers)

    @property
    def linear_after(self) -> int:
        return sum(r.after for r in self.layers)

    @property
    def total_before(self) -> int:
        """Bytes of the whole model with every Linear layer at its original dtype."""
        return self.linear_before + self.other

    @property
    def total_after(self) -> int:
        """Bytes of the whole model as stored now."""
        return self.linear_after + self.other

    def __str__(self) -> str:
        lines = [f"{'layer':<44} {'shape':>11} {'before MB':>10} {'after MB':>9} {'bits/w':>7}"]
        for r in self.layers:
            lines.append(f"{r.name:<44} {r.shape[0]:>5}x{r.shape[1]:<5} {r.before / 1e6:>10.3f} "
                         f"{r.after / 1e6:>9.3f} {r.bits_per_weight:>7.3f}")
        lines.append(f"{'Linear layers':<56} {self.linear_before / 1e6:>10.3f} {self.linear_after / 1e6:>9.3f}")
        lines.append(f"{'other parameters and buffers':<56} {self.other / 1e6:>10.3f} {self.other / 1e6:>9.3f}")
        lines.append(f"{'total':<56} {self.total_before / 1e6:>10.3f} {self.total_after / 1e6:>9.3f}")
        return "\n".join(lines)


def _tensor_bytes(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def size_report(model: nn.Module) -> SizeReport:
    """Measure a model's storage: bytes per Linear layer before and after, and in total.

    "Before" is the original layer (weight at its original dtype, plus bias); "after" is
    what is stored now: :attr:`QuantizedLinear.nbytes` for quantized layers, the same as
    before for layers left in full precision. Every other parameter and buffer counts
    once, under ``other`` (shared tensors, such as tied embeddings, are counted once).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Taught in: chapters/04_in_practice.ipynb, "A five-line recipe".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    rows = []
    seen: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, QuantizedLinear):
            numel = m.out_features * m.in_features
            before = numel * torch.empty((), dtype=m.weight_dtype).element_size() + _tensor_bytes(m.bias)
            rows.append(LayerSize(name, (m.out_features, m.in_features), before, m.nbytes,
                                  m.bits_per_weight))
            seen.update(id(t) for t in m.buffers(recurse=False))
        elif isinstance(m, nn.Linear):
            b = _tensor_bytes(m.weight) + _tensor_bytes(m.bias)
            rows.append(LayerSize(name, (m.out_features, m.in_features), b, b,
                                  8.0 * m.weight.element_size()))
            seen.update(id(t) for t in m.parameters(recurse=False))
    other = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        other += _tensor_bytes(t)
    return SizeReport(tuple(rows), other)
