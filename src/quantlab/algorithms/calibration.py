"""Calibration statistics of the inputs a model's Linear layers see.

GPTQ, AWQ and the outlier tools need to know what a layer's input ``X`` (rows = tokens,
columns = input features) looks like on real data. Everything they need fits in a few
running sums, so calibration never stores the activations themselves:

* the Hessian of the layer's output error, ``H = 2 X^T X / n`` (``in x in``): GPTQ's
  ``tr(dW H dW^T)`` and AWQ's output MSE ``tr(dW X^T X dW^T) / n`` both come from it;
* the mean absolute input per feature, ``mean_j |x_j|`` (AWQ's salience);
* the largest absolute input per feature, ``max_j |x_j|`` (outliers, SmoothQuant).

:func:`collect_layer_stats` registers forward hooks on a model's ``nn.Linear`` layers,
runs a calibration function you give it, and returns one :class:`LayerStats` per layer.
Layers that receive *the same tensor object* (q/k/v projections after one norm, or
gate/up projections) share one :class:`LayerStats`, which saves memory and tells AWQ
which layers must share one scale vector.

Taught in: chapters/04b_language_model.ipynb, "Perplexity" (sec-llm-perplexity).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch

from ..core._backend import ArrayLike, as_tensor, like_input, require_float
from ._model_utils import run_with_input_hooks

__all__ = ["LayerStats", "hessian", "collect_layer_stats", "linear_layer_names"]


def hessian(x: ArrayLike) -> torch.Tensor:
    """GPTQ's Hessian of a Linear layer's squared output error: ``H = 2 X^T X / n``.

    For a layer ``y = x W^T``, the output error of a weight change ``dW`` summed over the
    ``n`` calibration rows is ``||X dW^T||^2 = tr(dW X^T X dW^T)``; its Hessian with
    respect to each row of ``W`` is ``2 X^T X`` (divided by ``n`` to average).

    Args:
        x: calibration inputs, shape ``(..., in_features)``; leading axes are flattened
            into ``n`` rows.

    Returns:
        ``(in_features, in_features)``, float64 for float64 input, else float32; a numpy
        array for a numpy ``x``, else a tensor on ``x``'s device.

    Raises:
        TypeError: ``x`` is not a float array or tensor.
        ValueError: ``x`` is 0-d or has no rows.
    """
    _, was_numpy = as_tensor(x)
    stats = LayerStats()
    stats.add(x)
    return like_input(stats.hessian, was_numpy)


class LayerStats:
    """Running statistics of the inputs of one Linear layer (see the module docstring).

    The statistics are torch tensors whatever :meth:`add` receives (numpy batches too):
    they live on the device of the first batch and feed GPTQ and AWQ, which work in torch.
    For a numpy Hessian of numpy inputs use :func:`hessian`.

    Attributes:
        n: number of rows (tokens) seen.
        xtx: running ``X^T X`` (``in x in``), float32 (float64 if the first batch was).
        abs_sum: running ``sum |x|`` per input feature.
        abs_max: running ``max |x|`` per input feature.
    """

    def __init__(self) -> None:
        self.n = 0
        self.xtx: Optional[torch.Tensor] = None
        self.abs_sum: Optional[torch.Tensor] = None
        self.abs_max: Optional[torch.Tensor] = None

    def add(self, x: ArrayLike) -> None:
        """Add a batch of inputs ``x`` of shape ``(..., in_features)``.

        Args:
            x: float numpy array or tensor; later batches are moved to the device of the
                first one.

        Raises:
            TypeError: ``x`` is not a float array or tensor.
            ValueError: ``x`` is 0-d, has no rows, its width differs from earlier batches,
                it holds NaN or infinity, or its squares would overflow the sums' dtype.
        """
        t, _ = as_tensor(x)
        require_float(t)
        if t.dim() == 0:
            raise ValueError("x must have at least one axis (..., in_features), got a 0-d value")
        shape = tuple(t.shape)
        t = t.detach().reshape(math.prod(shape[:-1]), shape[-1])  # (-1, 0) is ambiguous
        if t.shape[0] == 0:
            raise ValueError(f"x must hold at least one row, got shape {shape}")
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        if self.xtx is None:
            d = t.shape[1]
            self.xtx = torch.zeros(d, d, dtype=dtype, device=t.device)
            self.abs_sum = torch.zeros(d, dtype=dtype, device=t.device)
            self.abs_max = torch.zeros(d, dtype=dtype, device=t.device)
        elif t.shape[1] != self.xtx.shape[0]:
            raise ValueError(f"x must have {self.xtx.shape[0]} features like the earlier batches, got {t.shape[1]}")
        t = t.to(device=self.xtx.device, dtype=self.xtx.dtype)
        if t.numel():
            if not bool(torch.isfinite(t).all()):
                raise ValueError(
                    f"x contains NaN or infinity ({int((~torch.isfinite(t)).sum())} "
                    f"of {t.numel()} values): the statistics would be NaN"
                )
            big = float(t.abs().max())
            if big * big * (self.n + t.shape[0]) > torch.finfo(t.dtype).max:
                raise ValueError(
                    f"x holds values up to {big:.4g}: sums of their squares over "
                    f"{self.n + t.shape[0]} rows overflow {str(t.dtype).replace('torch.', '')}"
                    + ("; pass float64 inputs" if t.dtype != torch.float64 else "")
                )
        self.xtx.addmm_(t.T, t)
        a = t.abs()
        self.abs_sum += a.sum(0)
        torch.maximum(self.abs_max, a.amax(0), out=self.abs_max)
        self.n += t.shape[0]

    def _require(self) -> None:
        if self.n == 0:
            raise ValueError("no calibration inputs were added (n = 0)")

    @property
    def in_features(self) -> int:
        """Width of the inputs (``in_features`` of the layer)."""
        self._require()
        return self.xtx.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """``H = 2 X^T X / n``, a new tensor (on the statistics' device)."""
        self._require()
        return self.xtx * (2.0 / self.n)

    @property
    def gram(self) -> torch.Tensor:
        """``X^T X / n`` (half the Hessian), a new tensor."""
        self._require()
        return self.xtx / self.n

    @property
    def abs_mean(self) -> torch.Tensor:
        """Mean ``|x_j|`` per input feature (AWQ's activation salience)."""
        self._require()
        return self.abs_sum / self.n

    def __repr__(self) -> str:
        d = None if self.xtx is None else self.xtx.shape[0]
        return f"LayerStats(n={self.n}, in_features={d})"


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Names of every ``torch.nn.Linear`` in ``model`` (in ``named_modules`` order)."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def collect_layer_stats(
    model: torch.nn.Module,
    run: Callable[[torch.nn.Module], object],
    layers: Optional[Iterable[str]] = None,
) -> dict[str, LayerStats]:
    """Run ``run(model)`` with forward hooks on Linear layers and gather input statistics.

    Args:
        model: a torch module.
        run: a function that feeds the calibration data through ``model`` (any number of
            forward calls); it is called once, under ``torch.no_grad()``.
        layers: names of the ``nn.Linear`` modules to watch (default: all of them).

    Returns:
        ``{name: LayerStats}`` in model order. Layers whose forward received the very same
        input tensor object share one ``LayerStats`` object (``stats[a] is stats[b]``).

    Raises:
        TypeError: ``model`` is not a torch module or ``run`` is not callable.
        ValueError: a name in ``layers`` is not an ``nn.Linear`` of ``model``, or a layer
            received no input during ``run``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(run):
        raise TypeError(f"run must be callable as run(model), got {type(run).__name__}")
    names = linear_layer_names(model) if layers is None else list(layers)
    stats: dict[str, LayerStats] = {}  # by owner: the first layer that saw an input tensor

    def on_input(name: str, owner: str, x: torch.Tensor, repeat: bool) -> bool:
        if repeat:
            return False  # a sibling fed the very same tensor already added it
        if owner not in stats:
            stats[owner] = LayerStats()
        stats[owner].add(x)
        return True

    owners = run_with_input_hooks(model, run, names, on_input)
    return {n: stats[owners[n]] for n in names}
