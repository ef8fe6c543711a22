"""Helpers that act on a model's ``nn.Linear`` layers, shared by several modules.

* :func:`fake_quantized_copy` -- a copy of a model whose Linear weights are rounded to a
  format and stored back as floats ("fake quantization"): what round-to-nearest does to
  the model's outputs, with the same forward pass. Used by
  :func:`quantlab.models.digits.quantize_weights` and re-exported as
  ``quantlab.fake_quantized_copy`` and ``quantlab.qat.fake_quantized_copy``.
* :func:`run_with_input_hooks` -- run a calibration function with forward pre-hooks on
  chosen Linear layers, recognising layers that receive *the very same input tensor*
  (q/k/v after one norm, gate/up): :func:`quantlab.calibration.collect_layer_stats` and
  :func:`quantlab.awq.awq_quantize_model` collect their statistics with it.

Only numpy and torch are imported here.

Taught in: chapters/03_core_tradeoff.ipynb, "Accuracy of a trained model" (fake
quantization of a model) and chapters/04b_language_model.ipynb, "Perplexity" (hooks).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import nn

from ..core.formats import Format, get_format
from ..core.quantize import QTensor, fake_quantize, quantize

__all__ = ["fake_quantized_copy", "linear_layers_of", "run_with_input_hooks"]

LayerSelector = Union[None, Iterable[str], Callable[[str, nn.Linear], bool]]
"""Which Linear layers: None (all), names, or a predicate ``f(name, module) -> bool``."""


def linear_layers_of(model: nn.Module, layers: LayerSelector = None) -> list[tuple[str, nn.Linear]]:
    """``(name, module)`` of the ``nn.Linear`` layers of ``model`` chosen by ``layers``.

    Args:
        model: a torch module.
        layers: None for every ``nn.Linear`` (in ``named_modules`` order, a module shared
            under several names once), an iterable of module names, or a predicate
            ``layers(name, module) -> bool`` called for every ``nn.Linear``.

    Returns:
        The chosen layers, in model order (names: in the order given).

    Raises:
        TypeError: ``model`` is not a torch module, or ``layers`` is a single string.
        ValueError: a name that is not an ``nn.Linear`` of ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if layers is None or callable(layers):
        found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        return found if layers is None else [(n, m) for n, m in found if layers(n, m)]
    if isinstance(layers, str):
        raise TypeError(f"layers must be a list of names, a predicate or None, got the string {layers!r}")
    modules = dict(model.named_modules())
    chosen = []
    for name in layers:
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"layers must name nn.Linear modules of the model, got {name!r}")
        chosen.append((name, module))
    return chosen


def _is_scheme(fmt: Any) -> bool:
    """A quantization scheme object (e.g. ``quantlab.nn.QuantScheme``), not a format."""
    return not isinstance(fmt, (str, Format)) and callable(getattr(fmt, "quantize", None))


@torch.no_grad()
def fake_quantized_copy(
    model: nn.Module,
    fmt: Any,
    *,
    layers: LayerSelector = None,
    inplace: bool = False,
    return_qtensors: bool = False,
    **qparams: Any,
) -> Union[nn.Module, tuple[nn.Module, list[QTensor]]]:
    """A copy of ``model`` whose Linear weights are rounded to ``fmt``, stored as floats.

    Each chosen weight ``W`` becomes ``dequantize(quantize(W, fmt, **qparams))``
    (:func:`quantlab.fake_quantize`, bit for bit): the values a quantized layer computes
    with, held in the weight's own dtype, so the model's forward pass is unchanged.
    Biases, norms, embeddings and the training/eval mode are left as they are. The copy
    measures a format's *accuracy*; for packed storage see :func:`quantlab.nn.quantize_model`.

    Args:
        model: any module with ``nn.Linear`` layers (not modified unless ``inplace``).
        fmt: a format name or :class:`~quantlab.formats.Format` (then ``qparams`` are the
            keyword arguments of :func:`quantlab.quantize`, e.g. ``granularity="channel",
            axis=0``), or a scheme object with a ``quantize(weight) -> QTensor`` method,
            such as :class:`quantlab.nn.QuantScheme` (then no ``qparams``).
        layers: which Linear layers (see :func:`linear_layers_of`; default all).
        inplace: round the weights of ``model`` itself instead of a deep copy.
        return_qtensors: also return the :class:`~quantlab.quantize.QTensor` of each
            rounded weight (codes and scales, e.g. to count bytes), in layer order.
        **qparams: keyword arguments of :func:`quantlab.quantize`.

    Returns:
        The model with rounded weights, or ``(model, qtensors)`` with ``return_qtensors``.

    Raises:
        TypeError: ``model`` is not a module, or ``qparams`` given with a scheme.
        ValueError: ``model`` has no ``nn.Linear`` layer (or none is chosen), an unknown
            format, or options :func:`quantlab.quantize` rejects.

    Example:
        >>> import torch, quantlab as ql
        >>> m = torch.nn.Linear(4, 2)
        >>> q = ql.fake_quantized_copy(m, "int4", granularity="channel", axis=0)
        >>> bool(torch.equal(q.weight, ql.fake_quantize(m.weight, "int4", granularity="channel", axis=0)))
        True

    Taught in: chapters/03_core_tradeoff.ipynb, "Accuracy of a trained model".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    scheme = _is_scheme(fmt)
    if scheme and qparams:
        raise TypeError(f"qparams must not be given with a scheme object (it carries its own), got {sorted(qparams)}")
    if not scheme:
        fmt = get_format(fmt)
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be True or False, got {inplace!r}")
    if not isinstance(return_qtensors, bool):
        raise TypeError(f"return_qtensors must be True or False, got {return_qtensors!r}")
    out = model if inplace else copy.deepcopy(model)
    chosen = [m for _, m in linear_layers_of(out, layers)]
    if not chosen:
        raise ValueError(f"model has no nn.Linear layer to quantize: {type(model).__name__}")
    qtensors: list[QTensor] = []
    for layer in chosen:
        w = layer.weight.detach()
        if scheme or return_qtensors:
            qt = fmt.quantize(w) if scheme else quantize(w, fmt, **qparams)
            layer.weight.copy_(qt.dequantize())
            qtensors.append(qt)
        else:
            layer.weight.copy_(fake_quantize(w, fmt, **qparams))
    return (out, qtensors) if return_qtensors else out


def run_with_input_hooks(
    model: nn.Module,
    run: Callable[[nn.Module], object],
    names: list[str],
    on_input: Callable[[str, str, torch.Tensor, bool], bool],
) -> dict[str, str]:
    """Call ``run(model)`` with a forward pre-hook on each named Linear layer.

    Every forward call of a watched layer calls ``on_input(name, owner, x, repeat)``:

    * ``x`` is the layer's input tensor;
    * ``owner`` is the first watched layer that received the very same tensor object as
      this layer's *first* input (the layer itself otherwise): layers fed by one norm
      (q/k/v) or one activation (gate/up) get one owner, so they can share statistics;
    * ``repeat`` is True when this tensor object was already consumed by the owner's group
      (a sibling's call with the same input).

    ``on_input`` returns True when it consumed ``x``; consumed tensors are remembered (by a
    weak reference, so a recycled ``id`` of a freed tensor is never taken for the same one).

    Args:
        model: a torch module.
        run: feeds the calibration data through ``model``; called once.
        names: names of ``nn.Linear`` modules of ``model``.
        on_input: the callback described above.

    Returns:
        ``{name: owner}`` for every name.

    Raises:
        ValueError: a name that is not an ``nn.Linear`` of ``model``, or a layer that
            received no input during ``run``.
    """
    modules = dict(model.named_modules())
    for name in names:
        if not isinstance(modules.get(name), nn.Linear):
            raise ValueError(f"layers must name nn.Linear modules of the model, got {name!r}")
    owner: dict[str, str] = {}
    seen: dict[int, tuple[weakref.ref, str]] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0]
            hit = seen.get(id(x))
            same: Optional[str] = hit[1] if hit is not None and hit[0]() is x else None
            if name not in owner:
                owner[name] = same if same is not None else name
            if on_input(name, owner[name], x, same is not None and same == owner[name]):
                seen[id(x)] = (weakref.ref(x), owner[name])

        return hook

    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        run(model)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in owner]
    if missing:
        raise ValueError(f"these layers received no input during run(model): {missing[:5]}")
    return {n: owner[n] for n in names}
