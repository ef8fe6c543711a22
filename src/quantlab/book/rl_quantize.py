"""Quantized CartPole policies: each Linear layer's weight through a quantlab format, biases in fp32.

:func:`quantize_policy` replaces each weight by its round trip ``dequantize(quantize(W))``
(``ql.fake_quantize``) under :func:`policy_scheme` -- absmax scaling per tensor or per output
channel, fp32 scales -- so the policy acts as its stored form would; biases stay in fp32
(130 numbers of the 4,610). :data:`BINARY` is sign quantization as a 1-bit codebook.
The packed size comes from :mod:`quantlab.nn` (``quantize_model``, ``size_report``).
Re-exported by :mod:`quantlab.book.rl`.

Taught in: chapters/05_rl.ipynb, "How many bits does a policy need?".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    pass

from ..algorithms._model_utils import fake_quantized_copy
from ..core.formats import BlockFormat, FloatFormat, Format, FormatLike, IntFormat, codebook, get_format
from ..core.quantize import QTensor, quantize
from ..core.scheme import PerAxis, PerTensor, QuantScheme
from .rl_policy import check_policy

__all__ = ["BINARY", "FormatArg", "linear_layers", "policy_scheme", "quantized_weights", "quantize_policy"]

BINARY: Format = codebook([-1.0, 1.0], "binary")
"""Sign quantization as a 1-bit format: the codebook {-1, +1}. With absmax scaling a weight
becomes ``+-absmax`` of its tensor (or output channel). ``int1`` cannot do this: its codes are
{-1, 0}, so symmetric int1 has no positive value at all."""

#: Former name of :data:`~quantlab.core.formats.FormatLike`, kept for code that imports it.
FormatArg = FormatLike

# --------------------------------------------------------------------------- quantization


def linear_layers(policy: nn.Module) -> list[nn.Linear]:
    """The ``torch.nn.Linear`` layers of ``policy`` in module order (a ValueError if none)."""
    layers = [m for m in policy.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("policy must contain at least one torch.nn.Linear layer, found none")
    return layers


def _resolve(fmt: FormatLike) -> Format:
    return get_format(fmt)


def policy_scheme(fmt: FormatLike, granularity: str = "tensor") -> QuantScheme:
    """The recipe the RL pages round a policy's weights with, as a :class:`QuantScheme`.

    ``fmt`` with one scale per layer (``"tensor"``) or per output neuron (``"channel"``,
    ``PerAxis(0)``), stored in fp32: a policy of a few thousand weights pays nothing for exact
    scales. ``int1`` is mapped asymmetrically (its codes are -1 and 0: only a min/max map uses
    both). Casts (fp16, bf16) and block-scaled formats (mxfp4, nvfp4) bring their own storage.

    Raises:
        ValueError: an unknown format, or a granularity other than ``"tensor"``/``"channel"``.
    """
    if granularity not in ("tensor", "channel"):
        raise ValueError(f"granularity must be 'tensor' or 'channel', got {granularity!r}")
    f = _resolve(fmt)
    if isinstance(f, BlockFormat) or (isinstance(f, FloatFormat) and f.bits >= 16):
        return QuantScheme(f)
    grain = PerAxis(0) if granularity == "channel" else PerTensor()
    int1 = isinstance(f, IntFormat) and f.bits == 1
    return QuantScheme(f, grain, symmetric=not int1, scale_dtype="fp32")


def quantized_weights(policy: nn.Module, fmt: FormatLike, granularity: str = "tensor") -> list[QTensor]:
    """Quantize every Linear weight of ``policy`` to ``fmt``; one :class:`QTensor` per layer.

    Args:
        policy: a module with Linear layers (weights of shape ``(out, in)``).
        fmt: a format name (``"int8"`` .. ``"int2"``) or object (e.g. :data:`BINARY`).
            ``"int1"`` is mapped asymmetrically (its only codes are -1 and 0).
        granularity: ``"tensor"`` (one scale per layer) or ``"channel"`` (one per output row).

    Raises:
        ValueError: unknown format or granularity, a policy without Linear layers.
        TypeError: a policy that is not a module.
    """
    check_policy(policy)
    scheme = policy_scheme(fmt, granularity)
    return [quantize(layer.weight.detach(), scheme) for layer in linear_layers(policy)]


def quantize_policy(policy: nn.Module, fmt: FormatLike, granularity: str = "tensor") -> nn.Module:
    """A copy of ``policy`` whose Linear weights are rounded to ``fmt`` (biases stay fp32).

    Each weight ``W`` becomes ``dequantize(quantize(W, fmt, granularity))``: the values
    the quantized policy really computes with, held as floats so the same forward pass
    runs. For its packed storage see :func:`quantlab.nn.quantize_model`.

    Args, Raises: see :func:`quantized_weights`.

    Taught in: chapters/05_rl.ipynb, "How many bits does a policy need?".
    """
    check_policy(policy)
    scheme = policy_scheme(fmt, granularity)
    linear_layers(policy)
    return fake_quantized_copy(policy, scheme.fmt, **scheme.qparams_kwargs())
