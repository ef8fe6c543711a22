"""AWQ: activation-aware weight quantization by per-input-channel scaling.

A few input channels of a Linear layer carry much larger activations than the rest;
the weights that multiply them matter most for the output. AWQ (Lin et al., 2024)
protects them without mixed precision: it multiplies weight column ``j`` by ``s_j > 1``
before quantizing (so its rounding error shrinks *relative to the weight*) and divides the
input by ``s_j``, which leaves the float layer unchanged:

    y = x W^T = (x / s) (W * s)^T   ~   (x / s) Q(W * s)^T

The scales come from the activations, ``s_j = mean|x_j|^alpha`` (normalised so that
``sqrt(max(s) * min(s)) = 1``, as the reference code does), and ``alpha`` is picked on a
grid of ``n_grid`` values in ``[0, 1)`` (20 by default: 0, 0.05, ..., 0.95) by the mean
squared error of the layer's output on calibration inputs. ``alpha = 0`` gives ``s = 1``:
plain round-to-nearest, so the search can never do worse than RTN on its calibration data.

**Folding, so inference costs nothing extra.** The ``1/s`` must be applied to the input,
and it can usually be merged into whatever produced that input:

* a preceding *norm* (RMSNorm or LayerNorm): divide its weight (and bias) by ``s``
  (:func:`fold_into_previous`). In a pre-norm transformer such as SmolLM2/Llama the
  ``input_layernorm`` feeds only q/k/v, and ``post_attention_layernorm`` only gate/up, so
  those layers share one ``s`` (searched jointly: pass all their weights) and it folds
  exactly;
* a preceding *Linear* whose output is this input up to a linear map: divide its output
  rows (and bias) by ``s``: ``up_proj`` -> ``down_proj`` (the input of ``down_proj`` is
  ``act(gate) * up``, linear in ``up``), ``v_proj`` -> ``o_proj`` when the shapes match
  (attention is linear in V; with grouped-query attention, as in SmolLM2, heads share V
  rows and the reference code skips this pair);
* otherwise (a post-norm model such as BERT/MiniLM, whose LayerNorm output also feeds the
  residual stream, or an input that comes out of a nonlinearity like GELU) there is no
  exact place to fold, and the honest cost is one elementwise multiply of the input by
  ``1/s`` (:class:`InputScaledLinear`); AWQ's reference code does the same for GELU
  outputs (its ``ScaledActivation``).

For evaluation, :func:`awq_quantize_model` writes the *effective* weight
``Q(W * s) / s`` into each layer, which is exactly what the layer computes once ``1/s``
is folded upstream (up to float rounding); packed storage keeps ``Q(W * s)`` and ``1/s``.
AWQ's reference code additionally searches a weight clipping ratio; this module does not.

Taught in: chapters/04_in_practice.ipynb (AWQ) and chapters/04b_language_model.ipynb,
"Perplexity" (sec-llm-perplexity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from ..core._backend import ArrayLike, as_tensor, like_input, require_float
from ..core.formats import get_format
from ..core.quantize import QTensor, quantize
from ..core.scheme import DEFAULT_SCALE_DTYPE, SchemeLike, rowwise_recipe
from ._model_utils import run_with_input_hooks
from .calibration import linear_layer_names

__all__ = [
    "AWQResult",
    "awq_scales",
    "awq_quantize_weight",
    "awq_quantize_model",
    "fold_into_previous",
    "scale_input_columns",
    "InputScaledLinear",
    "default_alphas",
]


@dataclass
class AWQResult:
    """What :func:`awq_quantize_weight` returns.

    ``scale``, ``weights``, ``alphas`` and ``losses`` are numpy arrays when the weights
    were numpy arrays, torch tensors otherwise. The :class:`~quantlab.quantize.QTensor`
    objects hold torch codes and scales either way (their ``dequantize()`` returns the
    input's kind); :func:`quantlab.nn.install_results` needs the torch kind.

    Attributes:
        alpha: the chosen exponent.
        scale: ``s`` ``(in_features,)``: weight column ``j`` was multiplied by ``s[j]``.
        qtensors: ``Q(W_i * s)`` for each weight, ready for packed storage.
        weights: the effective weights ``Q(W_i * s) / s`` (what each layer computes with
            once ``1/s`` is folded into its input), same kind and dtype as the inputs.
        alphas: the grid searched, ``(n_grid,)``, float64.
        losses: output MSE for each ``alpha`` of the grid, ``(n_grid,)``, float64.
    """

    alpha: float
    scale: ArrayLike
    qtensors: list[QTensor]
    weights: list[ArrayLike]
    alphas: ArrayLike
    losses: ArrayLike

    @property
    def inv_scale(self) -> ArrayLike:
        """``1 / s``: what multiplies the input (folded into the preceding op); the kind of ``scale``."""
        return 1.0 / self.scale

    @property
    def qtensor(self) -> QTensor:
        """The single quantized weight (when one weight was passed)."""
        if len(self.qtensors) != 1:
            raise ValueError(f"this result holds {len(self.qtensors)} weights; use .qtensors")
        return self.qtensors[0]

    @property
    def weight(self) -> ArrayLike:
        """The single effective weight (when one weight was passed)."""
        if len(self.weights) != 1:
            raise ValueError(f"this result holds {len(self.weights)} weights; use .weights")
        return self.weights[0]


def _recipe(fmt: SchemeLike, group_size: Optional[int], symmetric: bool, scale_dtype: str, who: str) -> tuple:
    """``(fmt, group_size, symmetric, scale_dtype)``, read from a scheme given as ``fmt`` (see
    :func:`quantlab.core.scheme.rowwise_recipe`; the keywords' defaults are this module's)."""
    fmt, kw = rowwise_recipe(
        fmt,
        {"group_size": group_size, "symmetric": symmetric, "scale_dtype": scale_dtype},
        {"group_size": 128, "symmetric": True, "scale_dtype": DEFAULT_SCALE_DTYPE},
        who,
    )
    return fmt, kw["group_size"], kw["symmetric"], kw["scale_dtype"]


def default_alphas(n_grid: int = 20) -> torch.Tensor:
    """The search grid ``[0, 1/n_grid, ..., (n_grid-1)/n_grid]`` (float64)."""
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)):
        raise TypeError(f"n_grid must be a positive int, got {n_grid!r}")
    if n_grid <= 0:
        raise ValueError(f"n_grid must be positive, got {n_grid}")
    return torch.arange(n_grid, dtype=torch.float64) / n_grid


def awq_scales(act_abs_mean: ArrayLike, alpha: float) -> ArrayLike:
    """AWQ's per-input-channel scales ``s = m^alpha / sqrt(max(m^alpha) * min(m^alpha))``.

    Args:
        act_abs_mean: mean ``|x_j|`` per input channel ``(in_features,)`` (non-negative);
            values below 1e-4 are raised to 1e-4 so that dead channels get a finite scale.
        alpha: exponent in ``[0, 1]``; 0 gives all ones.

    Returns:
        ``s`` of the same shape and kind (float32 unless the input is float64).

    Raises:
        TypeError: non-float input or a non-number ``alpha``.
        ValueError: not 1-d, negative or non-finite values, ``alpha`` outside ``[0, 1]``.
    """
    m, was_numpy = as_tensor(act_abs_mean, "act_abs_mean")
    require_float(m, "act_abs_mean")
    if m.dim() != 1:
        raise ValueError(f"act_abs_mean must be 1-d (in_features,), got shape {tuple(m.shape)}")
    if not bool(torch.isfinite(m).all()) or bool((m < 0).any()):
        raise ValueError("act_abs_mean must hold finite, non-negative values")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise TypeError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    dtype = torch.float64 if m.dtype == torch.float64 else torch.float32
    s = m.to(dtype).clamp(min=1e-4).pow(float(alpha))
    if s.numel():
        hi, lo = s.max(), s.min()
        prod = hi * lo
        if bool(torch.isfinite(prod)) and float(prod) > 0:
            s = s / prod.sqrt()
        else:  # max * min overflows (activations beyond ~1e34 in float32): the same, apart
            s = s / (hi.sqrt() * lo.sqrt())
    return like_input(s, was_numpy)


def _as_weights(W) -> tuple[list[torch.Tensor], bool]:
    seq = list(W) if isinstance(W, (list, tuple)) else [W]
    if not seq:
        raise ValueError("W must be a weight or a non-empty list of weights")
    out = []
    was_numpy = False
    for i, w in enumerate(seq):
        t, was_numpy = as_tensor(w, f"W[{i}]")
        require_float(t, f"W[{i}]")
        if t.dim() != 2:
            raise ValueError(f"W[{i}] must be 2-d (out_features, in_features), got shape {tuple(t.shape)}")
        if out and t.shape[1] != out[0].shape[1]:
            raise ValueError(f"all weights must share in_features {out[0].shape[1]}, W[{i}] has {t.shape[1]}")
        out.append(t)
    return out, was_numpy


def awq_quantize_weight(
    W: Union[ArrayLike, Sequence[ArrayLike]],
    X: ArrayLike,
    fmt: SchemeLike = "int4",
    *,
    group_size: Optional[int] = 128,
    alpha: Optional[float] = None,
    n_grid: int = 20,
    act_abs_mean: Optional[ArrayLike] = None,
    symmetric: bool = True,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
) -> AWQResult:
    """Search AWQ's scale exponent for one layer (or layers sharing an input) and quantize.

    For each ``alpha`` of the grid: ``s = awq_scales(mean|x|, alpha)``,
    ``W_hat = Q(W * s) / s`` and the loss ``mean((X W^T - X W_hat^T)^2)`` over all rows and
    outputs (summed over the weights when several share ``X``). The best ``alpha`` wins.

    Args:
        W: weight ``(out, in)`` or a list of weights sharing the input (q/k/v; gate/up).
        X: calibration inputs ``(..., in)`` (leading axes flattened into rows).
        fmt: target format, e.g. ``"int4"``, or a :class:`~quantlab.core.scheme.QuantScheme`
            (per group or per output row) that also gives ``group_size``, ``symmetric``, ``scale_dtype``.
        group_size: columns per scale group (must divide ``in``), or None for per-channel.
        alpha: use this exponent instead of searching (``alpha=0`` is round-to-nearest).
        n_grid: grid size for the search (``alpha = k / n_grid``, ``k = 0..n_grid-1``).
        act_abs_mean: mean ``|x_j|`` measured on more data than ``X`` (default: from ``X``).
        symmetric, scale_dtype: see :func:`quantlab.quantize`.

    Returns:
        An :class:`AWQResult`: numpy arrays for numpy weights, torch tensors (on the
        weights' device) otherwise.

    Raises:
        TypeError, ValueError: bad shapes (``W`` not 2-d, widths that differ, ``X`` of the
            wrong width), ``group_size`` not dividing ``in``, ``alpha`` outside ``[0, 1]``,
            ``n_grid`` not positive, NaN/inf.
    """
    fmt, group_size, symmetric, scale_dtype = _recipe(fmt, group_size, symmetric, scale_dtype, "awq_quantize_weight")
    fmt = get_format(fmt)
    weights, was_numpy = _as_weights(W)
    d = weights[0].shape[1]
    x, _ = as_tensor(X, "X")
    require_float(x, "X")
    if x.dim() == 0 or x.shape[-1] != d:
        raise ValueError(f"X must have shape (..., {d}) to match W, got {tuple(x.shape)}")
    x = x.detach().reshape(-1, d)
    if x.shape[0] == 0:
        raise ValueError("X must hold at least one row")
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
            raise TypeError(f"group_size must be a positive int or None, got {group_size!r}")
        if group_size <= 0 or d % group_size:
            raise ValueError(f"group_size must be positive and divide the last dimension {d}, got {group_size}")
    work = torch.float64 if all(w.dtype == torch.float64 for w in weights) else torch.float32
    device = weights[0].device  # everything is computed where the (first) weight lives
    ws = [w.detach().to(device=device, dtype=work) for w in weights]
    for w in ws:
        if not bool(torch.isfinite(w).all()):
            raise ValueError("W contains NaN or infinity")
    x = x.to(device=device, dtype=work)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("X contains NaN or infinity")
    if act_abs_mean is None:
        m = x.abs().mean(0)
    else:
        m, _ = as_tensor(act_abs_mean, "act_abs_mean")
        if m.shape != (d,):
            raise ValueError(f"act_abs_mean must have shape ({d},), got {tuple(m.shape)}")
        m = m.to(device=device, dtype=work)
    if alpha is None:
        alphas = default_alphas(n_grid)
    else:
        awq_scales(m, alpha)  # validates alpha
        alphas = torch.tensor([float(alpha)], dtype=torch.float64)
    kw = dict(granularity="group", group_size=group_size) if group_size else dict(granularity="channel", axis=0)
    y_ref = [x @ w.T for w in ws]
    n_out = sum(w.shape[0] for w in ws)
    losses = torch.empty(len(alphas), dtype=torch.float64)
    best = None
    for k, a in enumerate(alphas.tolist()):
        s = awq_scales(m, a)
        qts = [quantize(w * s, fmt, symmetric=symmetric, scale_dtype=scale_dtype, **kw) for w in ws]
        eff = [qt.dequantize().div_(s) for qt in qts]
        loss = 0.0
        for yr, we in zip(y_ref, eff):
            diff = torch.addmm(yr, x, we.T, alpha=-1)
            loss += float(diff.square().sum())
        losses[k] = loss / max(1, x.shape[0] * n_out)  # weights without rows: loss 0
        if best is None or losses[k] < best[0]:
            best = (float(losses[k]), a, s, qts, eff)
    _, a, s, qts, eff = best
    out_dtype = weights[0].dtype
    for qt in qts:
        qt.dtype, qt.was_numpy = out_dtype, was_numpy
    return AWQResult(
        float(a),
        like_input(s, was_numpy),
        qts,
        [like_input(e.to(out_dtype), was_numpy) for e in eff],
        like_input(alphas, was_numpy),
        like_input(losses, was_numpy),
    )


# --------------------------------------------------------------------------- folding


def _scale_vector(s: ArrayLike, name: str = "s", allow_meta: bool = False) -> torch.Tensor:
    """``s`` as a 1-d float tensor (numpy arrays are viewed, not copied)."""
    if allow_meta and isinstance(s, torch.Tensor) and s.is_meta:
        t = s
    else:
        t, _ = as_tensor(s, name)
    require_float(t, name)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-d, got shape {tuple(t.shape)}")
    return t.detach()


@torch.no_grad()
def fold_into_previous(prev: torch.nn.Module, s: ArrayLike) -> None:
    """Divide the *output* of ``prev`` by ``s`` in place (so the next layer sees ``x / s``).

    Works for a norm with a per-channel ``weight`` (and optional ``bias``), e.g.
    ``LayerNorm``, ``LlamaRMSNorm``, and for ``nn.Linear`` (its rows and bias).

    Args:
        prev: the module whose output feeds the scaled layer.
        s: positive scales ``(out,)`` (numpy or torch; moved to ``prev``'s device).

    Raises:
        TypeError: ``prev`` has no ``weight`` parameter, or ``s`` is not a float array.
        ValueError: ``s`` does not match ``prev``'s output size or is not positive.
    """
    weight = getattr(prev, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"prev must have a weight tensor, got {type(prev).__name__}")
    s = _scale_vector(s)
    n = weight.shape[0]
    if s.shape != (n,):
        raise ValueError(f"s must have shape ({n},) to match prev's outputs, got {tuple(s.shape)}")
    if not bool((s > 0).all()):
        raise ValueError("s must be positive")
    view = s.reshape(-1, *([1] * (weight.dim() - 1))).to(device=weight.device, dtype=weight.dtype)
    weight.div_(view)
    bias = getattr(prev, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.div_(s.to(device=bias.device, dtype=bias.dtype))


@torch.no_grad()
def scale_input_columns(linear: torch.nn.Linear, s: ArrayLike) -> None:
    """Multiply ``linear``'s weight column ``j`` by ``s[j]`` in place (``W <- W * s``).

    Args:
        linear: the layer to scale.
        s: scales ``(in_features,)`` (numpy or torch; moved to the layer's device).

    Raises:
        TypeError: ``linear`` is not an ``nn.Linear``, or ``s`` is not a float array.
        ValueError: ``s`` does not match ``in_features``.
    """
    if not isinstance(linear, torch.nn.Linear):
        raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    s = _scale_vector(s)
    if s.shape != (linear.in_features,):
        raise ValueError(f"s must have shape ({linear.in_features},), got {tuple(s.shape)}")
    linear.weight.mul_(s.to(device=linear.weight.device, dtype=linear.weight.dtype))


class InputScaledLinear(torch.nn.Module):
    """``y = linear(x * inv_scale)``: AWQ where ``1/s`` has nowhere to fold.

    The cost over the plain layer is one elementwise multiply of the input.

    Args:
        linear: the layer holding ``W * s`` (quantized or not).
        inv_scale: ``1 / s``, shape ``(in_features,)``, numpy or torch; stored as a float32
            buffer on the device of ``linear``'s first parameter or buffer (where it has
            none: on ``inv_scale``'s device). ``module.to(device)`` moves both.

    Raises:
        TypeError: ``linear`` is not a module, or ``inv_scale`` not a float array.
        ValueError: ``inv_scale`` is not 1-d.
    """

    def __init__(self, linear: torch.nn.Module, inv_scale: ArrayLike) -> None:
        super().__init__()
        if not isinstance(linear, torch.nn.Module):
            raise TypeError(f"linear must be a torch.nn.Module, got {type(linear).__name__}")
        t = _scale_vector(inv_scale, "inv_scale", allow_meta=True)
        device = next(iter(linear.parameters()), next(iter(linear.buffers()), t)).device
        self.linear = linear
        self.register_buffer("inv_scale", t.float().clone().to(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale.to(x.dtype))


# --------------------------------------------------------------------------- models


@torch.no_grad()
def awq_quantize_model(
    model: torch.nn.Module,
    run: Callable[[torch.nn.Module], object],
    fmt: SchemeLike = "int4",
    *,
    group_size: Optional[int] = 128,
    n_grid: int = 20,
    max_rows: int = 512,
    layers: Optional[Iterable[str]] = None,
    symmetric: bool = True,
    scale_dtype: str = DEFAULT_SCALE_DTYPE,
    replace_weights: bool = True,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, AWQResult]:
    """AWQ over a model's Linear layers, with inputs captured by forward hooks.

    One call of ``run(model)`` on the unquantized model records, for every chosen layer,
    the mean ``|x_j|`` over all calibration rows and a random sample of at most
    ``max_rows`` input rows (for the output-MSE search). Layers that receive the same
    input tensor (q/k/v after one norm; gate/up) are searched together and share one
    ``s``, so it can fold into that norm (see the module docstring).

    Args:
        model: a torch module.
        run: ``run(model)`` feeds the calibration data through the model.
        fmt, group_size, n_grid, symmetric, scale_dtype: see :func:`awq_quantize_weight`.
        max_rows: input rows kept per layer for the search (the search costs
            ``n_grid * max_rows * in * out`` multiply-adds per layer).
        layers: names of the Linear layers (default: all but one named ``lm_head``, a
            language model's output head, often tied to the token embeddings).
        replace_weights: write the effective weights ``Q(W * s) / s`` into the layers.
        progress: show a progress bar over layers.
        seed: seed of the row sampling.

    Returns:
        ``{layer name: AWQResult}``; layers searched together share one result object
        whose ``qtensors``/``weights`` are in the order of their names.

    Raises:
        TypeError, ValueError: as :func:`quantlab.calibration.collect_layer_stats` and
            :func:`awq_quantize_weight`; ``max_rows`` not a positive int.
    """
    fmt, group_size, symmetric, scale_dtype = _recipe(fmt, group_size, symmetric, scale_dtype, "awq_quantize_model")
    from tqdm.auto import tqdm

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(run):
        raise TypeError(f"run must be callable as run(model), got {type(run).__name__}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows <= 0:
        raise ValueError(f"max_rows must be a positive int, got {max_rows!r}")
    modules = dict(model.named_modules())
    names = [n for n in linear_layer_names(model) if n != "lm_head"] if layers is None else list(layers)
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list[torch.Tensor]] = {}
    abs_sum: dict[str, torch.Tensor] = {}
    count: dict[str, int] = {}

    def on_input(name: str, owner: str, x: torch.Tensor, repeat: bool) -> bool:
        # layers fed the same tensor as an earlier one (their owner) are searched with it
        if owner != name:
            return False
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        abs_sum[name] = abs_sum.get(name, 0) + flat.abs().sum(0)
        count[name] = count.get(name, 0) + flat.shape[0]
        k = min(flat.shape[0], max_rows)
        idx = torch.randperm(flat.shape[0], generator=gen)[:k].to(flat.device)
        rows.setdefault(name, []).append(flat[idx].clone())
        return True

    owner = run_with_input_hooks(model, run, names, on_input)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(owner[n], []).append(n)
    results: dict[str, AWQResult] = {}
    bar = tqdm(total=len(names), desc=f"AWQ {get_format(fmt).name}", disable=not progress)
    for lead, members in groups.items():
        X = torch.cat(rows[lead])
        if X.shape[0] > max_rows:
            X = X[torch.randperm(X.shape[0], generator=gen)[:max_rows]]
        lins = [modules[n] for n in members]
        res = awq_quantize_weight(
            [lin.weight.detach().float() for lin in lins],
            X,
            fmt,
            group_size=group_size,
            n_grid=n_grid,
            act_abs_mean=abs_sum[lead] / count[lead],
            symmetric=symmetric,
            scale_dtype=scale_dtype,
        )
        for n, lin, w in zip(members, lins, res.weights):
            if replace_weights:
                lin.weight.copy_(w.to(lin.weight.dtype))
            results[n] = res
        bar.update(len(members))
    bar.close()
    return results
