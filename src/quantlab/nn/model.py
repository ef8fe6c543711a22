"""Whole models: :func:`quantize_model` swaps Linear layers for :class:`QuantizedLinear`,
:func:`install_results` installs codes and scales computed elsewhere (GPTQ, AWQ, ...),
:func:`linear_layers` and :func:`quantized_layers` list them.

Part of :mod:`quantlab.nn`, which re-exports the public names.

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Callable, Mapping, Optional, Sequence, Union

from torch import nn

from ..core.quantize import QTensor
from ..core.validate import check_bool
from .layer import QuantizedLinear
from .scheme import SchemeLike, as_scheme

__all__ = [
    "SkipLike",
    "linear_layers",
    "quantized_layers",
    "names_by_module",
    "set_module",
    "quantize_model",
    "install_results",
]


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
    """``(name, module)`` for every ``nn.Linear`` in ``model``, in module order.

    A module registered under several names is listed once, under its first name.
    """
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantizedLinear]]:
    """``(name, module)`` for every :class:`QuantizedLinear` in ``model`` (each once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]


def names_by_module(model: nn.Module, kind: type) -> dict[int, tuple[nn.Module, list[str]]]:
    """``id(module) -> (module, every name it is registered under)`` for modules of ``kind``,
    in module order: a module shared by two parents has two names."""
    found: dict[int, tuple[nn.Module, list[str]]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, kind):
            found.setdefault(id(m), (m, []))[1].append(n)
    return found


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where ``model.get_submodule(name)`` is (``name`` dotted, as in
    ``named_modules()``)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _naming(err: Exception, name: str) -> Exception:
    """``err`` again, of the same type, with the layer's name in front of its message."""
    try:
        named = type(err)(f"layer {name!r}: {err}")
    except Exception:  # an exception type with other constructor arguments
        err.add_note(f"(raised while quantizing layer {name!r})")
        return err
    return named


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

    A Linear module registered under several names (one module object shared by two
    parents) is quantized once and the one :class:`QuantizedLinear` replaces it under
    every name, so the model keeps sharing it and :func:`size_report` counts it once. It
    is skipped if any of its names is.

    Args:
        model: any torch module (a whole model or a part, e.g. ``bert.encoder``). A bare
            ``nn.Linear`` is returned as a new :class:`QuantizedLinear`.
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
        TypeError: ``model`` is not an ``nn.Module``; bad ``scheme``, ``skip`` or
            ``inplace``; ``layer_fn`` returned something else than a module.
        ValueError: no Linear layer is left to quantize.
        Exception: an error raised while quantizing one layer is raised again with the
            same type and the layer's name in front of its message (the original is its
            ``__cause__``).

    Taught in: chapters/04_in_practice.ipynb, "A five-line recipe".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    scheme = as_scheme(scheme)
    skipped = _skipper(skip)
    inplace = check_bool(inplace, "inplace")
    if not inplace:
        model = copy.deepcopy(model)
    targets = [
        (names, m) for m, names in names_by_module(model, nn.Linear).values() if not any(skipped(n, m) for n in names)
    ]
    if not targets:
        raise ValueError("model has no nn.Linear layer to quantize (after skip)")
    if layer_fn is None:
        layer_fn = lambda name, lin: QuantizedLinear.from_linear(lin, scheme)  # noqa: E731
    from tqdm.auto import tqdm

    for names, lin in tqdm(targets, desc=f"quantizing to {scheme.label}", disable=not progress, leave=False):
        try:
            new = layer_fn(names[0], lin)
        except Exception as err:
            named = _naming(err, names[0])
            if named is err:
                raise
            raise named from err
        if not isinstance(new, nn.Module):
            raise TypeError(f"layer_fn must return an nn.Module, got {type(new).__name__} for layer {names[0]!r}")
        if names == [""]:  # the model is the Linear itself
            return new
        for name in names:
            set_module(model, name, new)
    return model


def install_results(model: nn.Module, results: Mapping[str, object]) -> nn.Module:
    """Store the results of GPTQ, AWQ (or any QTensors) as packed layers of ``model``.

    Each ``nn.Linear`` named in ``results`` is replaced, in place, by a
    :class:`QuantizedLinear` holding the result's codes and scales and the layer's bias
    (under every name of a Linear module registered under several names). Accepted values:

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
        ValueError: a name that is not an ``nn.Linear`` of ``model``, two names of one
            shared module, or a weight whose shape does not match its layer.
        TypeError: a value of another kind.

    Taught in: chapters/04_in_practice.ipynb, "One table over formats".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a mapping of layer names to results, got {type(results).__name__}")
    names_of = {}
    for m, names in names_by_module(model, nn.Module).values():
        for n in names:
            names_of[n] = (m, names)
    used: dict[int, int] = {}
    done: dict[int, str] = {}
    for name, r in results.items():
        lin, names = names_of.get(name, (None, []))
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"results name {name!r}, which is not an nn.Linear of the model")
        if id(lin) in done:
            raise ValueError(
                f"results names {done[id(lin)]!r} and {name!r} are the same shared module; give one result for it"
            )
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
            raise TypeError(f"results[{name!r}] must be a QTensor or a GPTQ/AWQ result, got {type(r).__name__}")
        if tuple(qt.shape) != tuple(lin.weight.shape):
            raise ValueError(
                f"results[{name!r}] holds a weight of shape {tuple(qt.shape)}, but the layer's is "
                f"{tuple(lin.weight.shape)}"
            )
        bias = None if lin.bias is None else lin.bias.detach()
        new = QuantizedLinear(qt, bias, input_scale)
        done[id(lin)] = name
        for n in names:
            set_module(model, n, new)
    return model
