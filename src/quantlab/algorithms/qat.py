"""Quantization-aware training: fake quantization with a straight-through estimator.

Post-training quantization (PTQ) rounds trained weights once and hopes for the best.
Quantization-aware training (QAT) keeps training while the forward pass already sees
the rounded weights, so the network learns weights that survive rounding:

* forward:  ``y = x @ Q(W).T + b`` with ``Q(W) = dequantize(quantize(W))`` (see
  :func:`quantlab.fake_quantize`), computed from the current float weights ``W``;
* backward: rounding has zero gradient almost everywhere, so the *straight-through
  estimator* (STE; Bengio et al., 2013) pretends ``Q`` is the identity:
  ``dL/dW := dL/dQ(W)``.

The float weights ``W`` (the "latent" weights) get the updates; small steps accumulate
in them until a weight crosses a rounding boundary and its quantized value moves.
After training, :func:`convert` bakes ``Q(W)`` into plain ``nn.Linear`` layers.
:func:`fake_quantized_copy` (from :mod:`quantlab._model_utils`) is the post-training
counterpart: a copy of a model whose Linear weights hold ``Q(W)``, without training.

Taught in: chapters/05_rl.ipynb, "Quantization-aware training".
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..core.formats import Format, FormatLike, IntFormat, get_format
from ..core.quantize import fake_quantize
from ..core.scheme import DEFAULT_SCALE_DTYPE, SCALE_DTYPES, QuantScheme, SchemeLike, refuse_keywords_beside
from ._model_utils import fake_quantized_copy

__all__ = [
    "FakeQuantSTE",
    "fake_quant_ste",
    "FakeQuantLinear",
    "prepare_qat",
    "convert",
    "fake_quantized_copy",
]

#: Former name of :data:`~quantlab.core.formats.FormatLike`, kept for code that imports it.
FormatArg = FormatLike


class FakeQuantSTE(torch.autograd.Function):
    """``Q(w)`` forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, fmt: Format, kwargs: dict) -> torch.Tensor:  # type: ignore[override]
        return fake_quantize(w.detach(), fmt, **kwargs)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return grad, None, None


def _qat_kwargs(
    fmt: Format,
    granularity: str,
    axis: int,
    group_size: Optional[int],
    symmetric: Optional[bool],
    scale_dtype: Optional[str] = None,
) -> dict[str, Any]:
    if granularity not in ("tensor", "channel", "group"):
        raise ValueError(f"granularity must be 'tensor', 'channel' or 'group', got {granularity!r}")
    if symmetric is None:  # int1's codes are {-1, 0}: only an asymmetric map uses both
        symmetric = not (isinstance(fmt, IntFormat) and fmt.bits == 1)
    kw: dict[str, Any] = {"granularity": granularity, "symmetric": symmetric}
    if granularity == "channel":
        kw["axis"] = axis
    if granularity == "group":
        kw["group_size"] = group_size
    if scale_dtype is not None and not isinstance(scale_dtype, str):
        raise TypeError(f"scale_dtype must be a string or None, got {type(scale_dtype).__name__} {scale_dtype!r}")
    if scale_dtype is not None and scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {tuple(SCALE_DTYPES)} or None, got {scale_dtype!r}")
    kw["scale_dtype"] = DEFAULT_SCALE_DTYPE if scale_dtype is None else scale_dtype
    return kw


def _recipe(
    fmt: Any,
    granularity: str,
    axis: int,
    group_size: Optional[int],
    symmetric: Optional[bool],
    scale_dtype: Optional[str],
    default_granularity: str,
) -> tuple[Format, dict[str, Any]]:
    """The format and :func:`fake_quantize` keywords of a format plus keywords, or of a
    :class:`~quantlab.core.scheme.QuantScheme` (then the keywords must stay at their defaults)."""
    if not isinstance(fmt, QuantScheme):
        f = get_format(fmt)
        return f, _qat_kwargs(f, granularity, axis, group_size, symmetric, scale_dtype)
    given = {
        "granularity": granularity,
        "axis": axis,
        "group_size": group_size,
        "symmetric": symmetric,
        "scale_dtype": scale_dtype,
    }
    defaults = {
        "granularity": default_granularity,
        "axis": 0,
        "group_size": None,
        "symmetric": None,
        "scale_dtype": None,
    }
    refuse_keywords_beside(fmt, given, defaults, "QAT")
    return fmt.fmt, fmt.qparams_kwargs()


def fake_quant_ste(
    w: torch.Tensor,
    fmt: SchemeLike,
    *,
    granularity: str = "tensor",
    axis: int = 0,
    group_size: Optional[int] = None,
    symmetric: Optional[bool] = None,
    scale_dtype: Optional[str] = None,
) -> torch.Tensor:
    """Fake-quantize ``w`` in the forward pass; pass the gradient straight through.

    ``out = Q(w)`` (same shape and dtype as ``w``), and ``d out / d w = I``: whatever
    gradient reaches ``out`` reaches ``w`` unchanged.

    Args:
        w: float tensor, any shape (usually a Linear weight, ``(out_features, in_features)``).
        fmt: a format name (``"int4"``, ``"fp8_e4m3"``, ...) or a :class:`~quantlab.formats.Format`.
        granularity: ``"tensor"``, ``"channel"`` or ``"group"`` (see :func:`quantlab.quantize`).
        axis: the channel axis for ``"channel"`` (0: one scale per output row).
        group_size: elements per group for ``"group"``.
        symmetric: absmax (True) or min/max mapping; default True, except ``int1``
            (whose codes -1 and 0 need the asymmetric map).
        scale_dtype: how the scales are stored; None: a recipe's default,
            :data:`~quantlab.core.scheme.DEFAULT_SCALE_DTYPE` (fp16), as the weights will be stored.

    ``fmt`` may also be a :class:`~quantlab.core.scheme.QuantScheme`, which gives all of these.

    Returns:
        ``Q(w)``, a tensor that requires grad if ``w`` does.

    Raises:
        TypeError: ``w`` not a floating-point torch tensor.
        ValueError: unknown format or granularity, or arguments :func:`quantlab.quantize` rejects.

    Taught in: chapters/05_rl.ipynb, "Quantization-aware training".
    """
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"w must hold floating-point values, got dtype {w.dtype}")
    fmt, kw = _recipe(fmt, granularity, axis, group_size, symmetric, scale_dtype, "tensor")
    return FakeQuantSTE.apply(w, fmt, kw)


class FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` whose forward pass uses fake-quantized weights (STE backward).

    ``y = x @ Q(W).T + b``; ``W`` stays float and trainable, the bias is not quantized.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        fmt: the weight format (name or Format), or a :class:`~quantlab.core.scheme.QuantScheme`.
        granularity, axis, group_size, symmetric, scale_dtype: see :func:`fake_quant_ste`. The default
            granularity ``"channel"`` with ``axis=0`` gives one scale per output neuron.
        device: where the parameters are created (as ``nn.Linear``; default the CPU).

    Shapes: ``(*, in_features) -> (*, out_features)``.

    Taught in: chapters/05_rl.ipynb, "Quantization-aware training".
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        fmt: SchemeLike = "int8",
        granularity: str = "channel",
        axis: int = 0,
        group_size: Optional[int] = None,
        symmetric: Optional[bool] = None,
        scale_dtype: Optional[str] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device)
        self.fmt, self.qkwargs = _recipe(fmt, granularity, axis, group_size, symmetric, scale_dtype, "channel")

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: SchemeLike, **kwargs: Any) -> FakeQuantLinear:
        """A FakeQuantLinear holding a copy of ``linear``'s weight and bias, on its device.

        Args:
            linear: the layer to copy.
            fmt: the weight format.
            **kwargs: ``granularity``, ``axis``, ``group_size``, ``symmetric``, ``scale_dtype``.

        Returns:
            The new layer (float32 parameters, on ``linear.weight``'s device).

        Raises:
            TypeError: ``linear`` is not an ``nn.Linear``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        out = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            fmt=fmt,
            device=linear.weight.device,
            **kwargs,
        )
        with torch.no_grad():
            out.weight.copy_(linear.weight)
            if linear.bias is not None:
                out.bias.copy_(linear.bias)
        return out

    def quantized_weight(self) -> torch.Tensor:
        """``Q(W)`` as a plain tensor (no graph)."""
        with torch.no_grad():
            return fake_quantize(self.weight.detach(), self.fmt, **self.qkwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, FakeQuantSTE.apply(self.weight, self.fmt, self.qkwargs), self.bias)

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight is ``Q(W)`` (what the deployed layer computes),
        on this layer's device."""
        out = nn.Linear(self.in_features, self.out_features, self.bias is not None, device=self.weight.device)
        with torch.no_grad():
            out.weight.copy_(self.quantized_weight())
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        if "granularity" in self.qkwargs:
            how = f"granularity={self.qkwargs['granularity']!r}"
        else:  # a cast, or a block format with its own scales
            how = "cast" if self.qkwargs.get("scaled") is False else f"blocks of {self.fmt.block_size}"
        return f"{super().extra_repr()}, fmt={self.fmt.name}, {how}"


def _swap(model: nn.Module, make) -> int:
    count = 0
    for name, child in model.named_children():
        new = make(child)
        if new is not None:
            setattr(model, name, new)
            count += 1
        else:
            count += _swap(child, make)
    return count


def prepare_qat(model: nn.Module, fmt: SchemeLike, *, inplace: bool = False, **kwargs: Any) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` with a :class:`FakeQuantLinear` (same weights).

    Args:
        model: any module.
        fmt: the weight format, or a :class:`~quantlab.core.scheme.QuantScheme`.
        inplace: modify ``model`` itself instead of a deep copy.
        **kwargs: ``granularity``, ``axis``, ``group_size``, ``symmetric``, ``scale_dtype`` (see
            :func:`fake_quant_ste`).

    Returns:
        The prepared model; train it as usual.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: ``model`` has no Linear layer, or bad quantization arguments.

    Taught in: chapters/05_rl.ipynb, "Quantization-aware training".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _recipe(  # validate everything before the first layer is made
        fmt,
        kwargs.get("granularity", "channel"),
        kwargs.get("axis", 0),
        kwargs.get("group_size"),
        kwargs.get("symmetric"),
        kwargs.get("scale_dtype"),
        "channel",
    )
    if not isinstance(fmt, QuantScheme):
        fmt = get_format(fmt)
    out = model if inplace else copy.deepcopy(model)

    def make(m: nn.Module) -> Optional[nn.Module]:
        if type(m) is nn.Linear:
            return FakeQuantLinear.from_linear(m, fmt, **kwargs)
        return None

    if type(out) is nn.Linear:
        return make(out)
    if _swap(out, make) == 0:
        raise ValueError("model must contain at least one torch.nn.Linear layer, found none")
    return out


def convert(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replace every :class:`FakeQuantLinear` with a plain ``nn.Linear`` holding ``Q(W)``.

    Raises:
        TypeError: ``model`` is not a module.

    Taught in: chapters/05_rl.ipynb, "Quantization-aware training".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, FakeQuantLinear):
        return model.to_linear()
    out = model if inplace else copy.deepcopy(model)
    _swap(out, lambda m: m.to_linear() if isinstance(m, FakeQuantLinear) else None)
    return out
