"""Incoherence processing: rotate weights so that outliers spread out before rounding.

A weight matrix whose input features include a few large columns ("outliers") quantizes
badly: each row's scale is set by its outlier and the other weights get few levels. For an
orthogonal ``Q`` (``Q^T Q = I``) the layer's function does not change if the weights and
the input are rotated together::

    y = W x = (W Q) (Q^T x)

and ``W Q`` mixes every column with all others, so its entries look Gaussian ("incoherent")
and round with a much smaller error (QuIP: Chee et al., 2023, "QuIP: 2-Bit Quantization of
Large Language Models With Guarantees"; QuaRot: Ashkboos et al., 2024, "QuaRot:
Outlier-Free 4-Bit Inference in Rotated LLMs"; SpinQuant: Liu et al., 2024). Since
``||(W Q - Q(W Q)) Q^T|| = ||W Q - Q(W Q)||``, the weight error is measured in either
basis.

**Rotations.** :func:`random_orthogonal` draws a Haar-random ``Q`` (QR of a Gaussian
matrix, signs fixed); :func:`hadamard` is Sylvester's ``H_{2m} = [[H, H], [H, -H]] /
sqrt(2)``; :func:`block_hadamard` puts normalised ``block x block`` Hadamard matrices on
the diagonal, for sizes that are not a power of two (SmolLM2's 576 = 9 x 64).

**Consecutive linear layers** (:func:`rotate_linear_pair`): for ``y = W2 (W1 x + b1)``,
``W1' = Q^T W1``, ``b1' = Q^T b1``, ``W2' = W2 Q`` give the same ``y``.

**A Llama-style transformer** (:func:`fold_rotation`, QuaRot's residual rotation): the
residual stream ``h`` is replaced by ``Q^T h`` everywhere. RMSNorm commutes with an
orthogonal map only without its weight, ``RMSNorm(Q^T h) = Q^T RMSNorm(h)`` for
``gamma = 1``, so each norm's weight ``gamma`` is first folded into the layers that read
it (``W <- W diag(gamma)``, then ``gamma <- 1``: :func:`fold_rmsnorm`). Then:

* embeddings (rows are residual vectors): ``E <- E Q``;
* layers that read the residual (``q/k/v_proj``, ``gate/up_proj``, ``lm_head``):
  ``W <- W Q``;
* layers that write into it (``o_proj``, ``down_proj``): ``W <- Q^T W``, ``b <- Q^T b``.

Tied input/output embeddings are untied first (the final norm folds into ``lm_head``
only). The logits are unchanged up to float rounding. Only this offline rotation
(QuaRot's R1) is applied; the online Hadamard transforms QuaRot adds inside attention
and before ``down_proj`` (for activation quantization) are not.

Combine with round-to-nearest (:func:`rtn_rotated`) or with GPTQ
(:func:`gptq_rotated`, which calls :func:`quantlab.gptq.gptq_quantize_model` on the
rotated model).

Taught in: chapters/ (Beyond int4).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from ..core._backend import ArrayLike, as_tensor, like_input, require_float
from ..core.validate import check_int

__all__ = [
    "random_orthogonal",
    "hadamard",
    "block_hadamard",
    "rotate_linear_pair",
    "fold_rmsnorm",
    "fold_rotation",
    "rtn_rotated",
    "gptq_rotated",
]


def random_orthogonal(n: int, seed: int = 0) -> np.ndarray:
    """A Haar-random ``n x n`` orthogonal matrix (float64).

    ``Q R = G`` for a standard Gaussian ``G`` (numpy's ``default_rng(seed)``), then each
    column of ``Q`` is multiplied by ``sign(R_ii)`` so the distribution is uniform
    (Mezzadri, 2007, "How to generate random matrices from the classical compact groups").

    Args:
        n: size (>= 1).
        seed: seed of the generator (an integer >= 0).

    Raises:
        TypeError, ValueError: ``n`` or ``seed`` not an integer in range.

    Taught in: chapters/ (Beyond int4).
    """
    n = check_int(n, "n", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    g = np.random.default_rng(seed).standard_normal((n, n))
    q, r = np.linalg.qr(g)
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    return q * d


def hadamard(n: int) -> np.ndarray:
    """Sylvester's normalised Hadamard matrix of size ``n`` (a power of two), float64.

    ``H_1 = [1]``, ``H_{2m} = [[H_m, H_m], [H_m, -H_m]] / sqrt(2)``: orthogonal and
    symmetric, entries ``+-1/sqrt(n)``.

    Raises:
        ValueError: ``n`` is not a power of two.

    Taught in: chapters/ (Beyond int4).
    """
    n = check_int(n, "n", minimum=1)
    if n & (n - 1):
        raise ValueError(f"n must be a power of two for a Sylvester Hadamard matrix, got {n}")
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(n)


def block_hadamard(n: int, block: Optional[int] = None) -> np.ndarray:
    """Block-diagonal ``n x n`` matrix of normalised ``block x block`` Hadamard matrices.

    Orthogonal; each input feature is mixed with the ``block - 1`` others of its block.

    Args:
        n: size; a multiple of ``block``.
        block: a power of two dividing ``n`` (default: the largest one, e.g. 64 for 576).

    Raises:
        ValueError: ``block`` not a power of two, or not dividing ``n``.

    Taught in: chapters/ (Beyond int4).
    """
    n = check_int(n, "n", minimum=1)
    if block is None:
        block = n & -n
    block = check_int(block, "block", minimum=1)
    if block & (block - 1):
        raise ValueError(f"block must be a power of two, got {block}")
    if n % block:
        raise ValueError(f"n must be a multiple of block {block}, got n={n}")
    return np.kron(np.eye(n // block), hadamard(block))


def _check_orthogonal(q: torch.Tensor, n: int, name: str = "q") -> None:
    if q.dim() != 2 or q.shape != (n, n):
        raise ValueError(f"{name} must be a {n} x {n} matrix, got shape {tuple(q.shape)}")
    if n == 0:
        return  # the empty matrix is orthogonal
    err = float((q.double().T @ q.double() - torch.eye(n, dtype=torch.float64)).abs().max())
    if not err < 1e-4:
        raise ValueError(f"{name} must be orthogonal (Q^T Q = I), got max |Q^T Q - I| = {err:.3g}")


def rotate_linear_pair(
    w1: ArrayLike, w2: ArrayLike, q: ArrayLike, b1: Optional[ArrayLike] = None
) -> tuple[ArrayLike, ArrayLike, Optional[ArrayLike]]:
    """Fold an orthogonal ``Q`` between two linear maps ``y = W2 (W1 x + b1)``.

    ``W1' = Q^T W1``, ``b1' = Q^T b1``, ``W2' = W2 Q``, so ``W2' (W1' x + b1') = y``
    (weights in torch's ``(out, in)`` layout: ``W1`` is ``d x n``, ``W2`` is ``m x d``).

    Args:
        w1: first weight, ``(d, n)``.
        w2: second weight, ``(m, d)``.
        q: orthogonal ``(d, d)``.
        b1: bias of the first map, ``(d,)``, or None.

    Returns:
        ``(w1', w2', b1')`` of the kind and dtype of ``w1`` (computed in float64).

    Raises:
        TypeError: non-float inputs. ValueError: shapes that do not chain, a ``q`` that is
        not orthogonal.

    Taught in: chapters/ (Beyond int4).
    """
    t1, was_numpy = as_tensor(w1, "w1")
    t2, _ = as_tensor(w2, "w2")
    tq, _ = as_tensor(q, "q")
    for t, name in ((t1, "w1"), (t2, "w2"), (tq, "q")):
        require_float(t, name)
    if t1.dim() != 2 or t2.dim() != 2 or t2.shape[1] != t1.shape[0]:
        raise ValueError(f"w1 (d, n) and w2 (m, d) must chain, got shapes {tuple(t1.shape)} and {tuple(t2.shape)}")
    d = t1.shape[0]
    _check_orthogonal(tq, d)
    qd = tq.double()
    n1 = (qd.T @ t1.double()).to(t1.dtype)
    n2 = (t2.double() @ qd).to(t2.dtype)
    nb = None
    if b1 is not None:
        tb, _ = as_tensor(b1, "b1")
        require_float(tb, "b1")
        if tuple(tb.shape) != (d,):
            raise ValueError(f"b1 must have shape ({d},), got {tuple(tb.shape)}")
        nb = like_input((qd.T @ tb.double()).to(tb.dtype), was_numpy)
    return like_input(n1, was_numpy), like_input(n2, was_numpy), nb


# --------------------------------------------------------------------------- Llama models


def _llama_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(decoder, lm_head)`` of a Llama-style causal LM, or a ValueError."""
    inner = getattr(model, "model", None)
    head = getattr(model, "lm_head", None)
    ok = (
        inner is not None
        and isinstance(head, nn.Linear)
        and isinstance(getattr(inner, "embed_tokens", None), nn.Embedding)
        and hasattr(inner, "layers")
        and hasattr(inner, "norm")
    )
    if ok:
        for layer in inner.layers:
            att, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
            ok = (
                ok
                and att is not None
                and mlp is not None
                and all(isinstance(getattr(att, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
                and all(isinstance(getattr(mlp, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj"))
                and hasattr(layer, "input_layernorm")
                and hasattr(layer, "post_attention_layernorm")
            )
    if not ok:
        raise ValueError(
            "model must be a Llama-style causal LM (model.embed_tokens, model.layers[i].self_attn."
            "{q,k,v,o}_proj, mlp.{gate,up,down}_proj, input/post_attention_layernorm, model.norm, "
            f"lm_head), got {type(model).__name__}"
        )
    return inner, head


def _untie(model: nn.Module, inner: nn.Module, head: nn.Linear) -> None:
    if head.weight is inner.embed_tokens.weight or head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr():
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
        cfg = getattr(model, "config", None)
        if cfg is not None and hasattr(cfg, "tie_word_embeddings"):
            cfg.tie_word_embeddings = False


def _fold_norm(norm: nn.Module, linears: list[nn.Linear]) -> None:
    gamma = norm.weight.detach().double()
    for lin in linears:
        lin.weight.copy_((lin.weight.double() * gamma).to(lin.weight.dtype))
    if getattr(norm, "bias", None) is not None:
        raise ValueError(f"fold_rmsnorm folds RMSNorm (no bias), got a norm with a bias: {norm!r}")
    norm.weight.fill_(1.0)


@torch.no_grad()
def fold_rmsnorm(model: nn.Module) -> nn.Module:
    """Fold every RMSNorm weight of a Llama-style model into the layers it feeds (in place).

    ``input_layernorm`` into ``q/k/v_proj``, ``post_attention_layernorm`` into
    ``gate/up_proj``, the final ``norm`` into ``lm_head``: ``W <- W diag(gamma)``, then
    ``gamma <- 1``. Tied embeddings are untied first. The function is unchanged.

    Returns:
        ``model``.

    Raises:
        ValueError: not a Llama-style model.

    Taught in: chapters/ (Beyond int4).
    """
    inner, head = _llama_parts(model)
    _untie(model, inner, head)
    for layer in inner.layers:
        att, mlp = layer.self_attn, layer.mlp
        _fold_norm(layer.input_layernorm, [att.q_proj, att.k_proj, att.v_proj])
        _fold_norm(layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj])
    _fold_norm(inner.norm, [head])
    return model


@torch.no_grad()
def fold_rotation(
    model: nn.Module,
    q: Optional[ArrayLike] = None,
    *,
    kind: str = "hadamard",
    seed: int = 0,
    block: Optional[int] = None,
) -> np.ndarray:
    """Rotate the residual stream of a Llama-style model by ``Q`` (in place; QuaRot's R1).

    Folds the RMSNorm weights first (:func:`fold_rmsnorm`), then ``E <- E Q`` for the
    embeddings, ``W <- W Q`` for ``q/k/v/gate/up_proj`` and ``lm_head``, and
    ``W <- Q^T W`` (and ``b <- Q^T b``) for ``o_proj`` and ``down_proj``; computed in
    float64 and stored in each parameter's dtype. The logits are unchanged up to float
    rounding.

    Args:
        model: e.g. ``transformers.LlamaForCausalLM`` (SmolLM2 loads as one).
        q: the ``hidden x hidden`` orthogonal matrix, or None to build one.
        kind: with ``q=None``: ``"hadamard"`` (:func:`block_hadamard`) or ``"random"``
            (:func:`random_orthogonal`).
        seed: seed for ``kind="random"``.
        block: block size for ``kind="hadamard"`` (default: largest power of two dividing
            the hidden size).

    Returns:
        The rotation used (float64 numpy array).

    Raises:
        ValueError: not a Llama-style model, unknown ``kind``, a ``q`` of the wrong shape
            or not orthogonal.

    Taught in: chapters/ (Beyond int4).
    """
    inner, head = _llama_parts(model)
    d = inner.embed_tokens.weight.shape[1]
    if q is None:
        if kind == "hadamard":
            q = block_hadamard(d, block)
        elif kind == "random":
            q = random_orthogonal(d, seed)
        else:
            raise ValueError(f"kind must be 'hadamard' or 'random', got {kind!r}")
    tq, _ = as_tensor(q, "q")
    require_float(tq, "q")
    _check_orthogonal(tq, d)
    qd = tq.double().cpu()
    fold_rmsnorm(model)

    def right(p: torch.Tensor) -> None:  # W <- W Q
        p.copy_((p.double() @ qd.to(p.device)).to(p.dtype))

    def left(p: torch.Tensor) -> None:  # W <- Q^T W (a bias: Q^T b)
        qt = qd.T.to(p.device)
        p.copy_((qt @ p.double()).to(p.dtype))

    right(inner.embed_tokens.weight)
    for layer in inner.layers:
        att, mlp = layer.self_attn, layer.mlp
        for lin in (att.q_proj, att.k_proj, att.v_proj, mlp.gate_proj, mlp.up_proj):
            right(lin.weight)
        for lin in (att.o_proj, mlp.down_proj):
            left(lin.weight)
            if lin.bias is not None:
                left(lin.bias)
    right(head.weight)
    return qd.numpy()


def _not_head(name: str, module: nn.Linear) -> bool:
    return name != "lm_head"


def rtn_rotated(
    model: nn.Module,
    fmt: Any = "int4",
    *,
    q: Optional[ArrayLike] = None,
    kind: str = "hadamard",
    seed: int = 0,
    inplace: bool = False,
    **qparams: Any,
) -> nn.Module:
    """Rotate (:func:`fold_rotation`) then round every Linear weight but ``lm_head`` to ``fmt``.

    Args:
        model: a Llama-style model (copied unless ``inplace``).
        fmt, **qparams: as :func:`quantlab.fake_quantize`, e.g.
            ``granularity="group", group_size=64``.
        q, kind, seed: see :func:`fold_rotation`.
        inplace: modify ``model`` itself.

    Returns:
        The rotated model with rounded weights (float weights holding the grid values).

    Taught in: chapters/ (Beyond int4).
    """
    from ._model_utils import fake_quantized_copy

    m = model if inplace else copy.deepcopy(model)
    fold_rotation(m, q, kind=kind, seed=seed)
    return fake_quantized_copy(m, fmt, layers=_not_head, inplace=True, **qparams)


def gptq_rotated(
    model: nn.Module,
    run: Callable[[nn.Module], object],
    fmt: Any = "int4",
    *,
    q: Optional[ArrayLike] = None,
    kind: str = "hadamard",
    seed: int = 0,
    inplace: bool = False,
    **gptq_kwargs: Any,
) -> tuple[nn.Module, dict]:
    """Rotate (:func:`fold_rotation`) then run GPTQ on the rotated model.

    The calibration statistics are collected on the rotated (float) model by
    :func:`quantlab.gptq.gptq_quantize_model`, which writes the quantized weights in place.

    Args:
        model: a Llama-style model (copied unless ``inplace``).
        run: ``run(model)`` feeds the calibration data (see ``gptq_quantize_model``).
        fmt, **gptq_kwargs: passed to :func:`quantlab.gptq.gptq_quantize_model`
            (``group_size``, ``damp``, ``act_order``, ...).
        q, kind, seed: see :func:`fold_rotation`.
        inplace: modify ``model`` itself.

    Returns:
        ``(rotated quantized model, {layer name: GPTQResult})``.

    Taught in: chapters/ (Beyond int4).
    """
    from .gptq import gptq_quantize_model

    m = model if inplace else copy.deepcopy(model)
    fold_rotation(m, q, kind=kind, seed=seed)
    gptq_kwargs.setdefault("progress", False)
    results = gptq_quantize_model(m, run, fmt, **gptq_kwargs)
    return m, results
