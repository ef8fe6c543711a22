"""The memory beyond the weights: the KV cache, training activations and the training state.

Formulas (bits of a format written ``bits(.)``)::

    KV cache     2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bits(dtype) / 8
    activations  n_layers * seq_len * batch * hidden * (34 + 5 * n_heads * seq_len / hidden)
    training     weights + gradients + master copy + optimizer moments
                 (mixed-precision Adam: 2 + 2 + 4 + 8 = 16 bytes per parameter)

Adapters (LoRA, QLoRA) freeze the base weights, which may then be quantized, and train only
the adapter weights. Every name is re-exported by :mod:`quantlab.core.memory`.

Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
"""

from __future__ import annotations

from typing import Any

from .formats import FloatFormat
from .memory_weights import SpecLike, format_bits, resolve_format, spec_bits, spec_format
from .scheme import QuantScheme
from .validate import check_bool, check_count, check_int

__all__ = ["kv_cache_bytes", "activation_bytes", "training_breakdown", "training_bytes"]


def _is_float_format(fmt: Any, name: str) -> bool:
    """True if the format is a floating-point format (one that can hold trained weights)."""
    return isinstance(resolve_format(fmt, name), FloatFormat)


def _same_format(a: Any, b: Any) -> bool:
    return resolve_format(a, "dtype").name == resolve_format(b, "dtype").name


def kv_cache_bytes(
    n_layers: int,
    n_kv_heads: int,
    head_dim: int,
    seq_len: int,
    batch: int = 1,
    dtype: SpecLike = "fp16",
) -> float:
    """Bytes of the key/value cache a transformer keeps while generating.

    Formula (a key and a value vector per layer, KV head and token)::

        2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bits(dtype) / 8

    Example: Llama-2-7B (32 layers, 32 KV heads, head_dim 128) at 4096 tokens in fp16
    holds 2 * 32 * 32 * 128 * 4096 * 2 bytes = 2 GiB per sequence.

    Args:
        n_layers, n_kv_heads, head_dim: model shape (integers >= 1).
        seq_len: tokens held (>= 0).
        batch: sequences held at once (>= 1).
        dtype: format of the cache (name, format object or :class:`~quantlab.core.scheme.QuantScheme`).

    Raises:
        ValueError: a size below its minimum, unknown dtype.
        TypeError: a non-integer size.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    n_layers = check_int(n_layers, "n_layers", minimum=1)
    n_kv_heads = check_int(n_kv_heads, "n_kv_heads", minimum=1)
    head_dim = check_int(head_dim, "head_dim", minimum=1)
    seq_len = check_int(seq_len, "seq_len", minimum=0)
    batch = check_int(batch, "batch", minimum=1)
    bits = spec_bits(dtype, "dtype")
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bits / 8


def activation_bytes(
    n_layers: int,
    hidden_size: int,
    n_heads: int,
    seq_len: int,
    batch: int = 1,
    store_attention_scores: bool = True,
) -> float:
    """Activations a transformer stores for the backward pass during training (16-bit).

    Estimate of Korthikanti et al. (2022), "Reducing Activation Recomputation in Large
    Transformer Models", eq. 1 (no recomputation, no parallelism)::

        n_layers * seq_len * batch * hidden_size * (34 + 5 * n_heads * seq_len / hidden_size)

    The second term is the attention score matrices (quadratic in ``seq_len``); fused
    attention kernels (FlashAttention) do not store them: ``store_attention_scores=False``
    keeps only the 34 term. In inference nothing is kept for a backward pass, and a layer's
    activations are freed once the next layer has read them: the KV cache is what persists.

    Args:
        n_layers, hidden_size, n_heads: model shape (integers >= 1).
        seq_len: tokens per sequence (>= 0).
        batch: sequences per step (>= 1).
        store_attention_scores: whether the softmax inputs/outputs are kept.

    Raises:
        ValueError / TypeError: as :func:`kv_cache_bytes`.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    n_layers = check_int(n_layers, "n_layers", minimum=1)
    hidden_size = check_int(hidden_size, "hidden_size", minimum=1)
    n_heads = check_int(n_heads, "n_heads", minimum=1)
    seq_len = check_int(seq_len, "seq_len", minimum=0)
    batch = check_int(batch, "batch", minimum=1)
    store_attention_scores = check_bool(store_attention_scores, "store_attention_scores")
    per_element = 34.0
    if store_attention_scores:
        per_element += 5.0 * n_heads * seq_len / hidden_size
    return n_layers * seq_len * batch * hidden_size * per_element


_OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd_momentum": 1, "sgd": 0}


def training_breakdown(
    n_params: float,
    weight_dtype: SpecLike = "bf16",
    *,
    optimizer: str = "adam",
    master_dtype: str | None = "fp32",
    moment_dtype: str = "fp32",
    grad_dtype: str | None = None,
    adapter_params: float | None = None,
    adapter_dtype: str = "bf16",
) -> dict[str, float]:
    """Bytes of each part of a model's training state.

    Full fine-tuning (``adapter_params=None``) trains all ``n_params`` weights::

        weights     n * bits(weight_dtype) / 8
        gradients   n * bits(grad_dtype) / 8          (grad_dtype defaults to weight_dtype)
        master      n * bits(master_dtype) / 8        (0 if None or equal to weight_dtype)
        optimizer   n * k * bits(moment_dtype) / 8    (k = 2 for Adam: m and v)

    Mixed-precision Adam (bf16 weights and gradients, fp32 master copy and moments) is the
    classic 2 + 2 + 4 + 8 = 16 bytes per parameter: 112 GB for 7B parameters. Plain fp32
    Adam is also 4 + 4 + 0 + 8 = 16.

    With adapters (LoRA, QLoRA) the ``n_params`` base weights are frozen, stored in
    ``weight_dtype`` (which may be quantized, e.g. ``QuantSpec("nf4", 64, "fp32")``), and
    only ``adapter_params`` extra weights (stored in ``adapter_dtype``) carry gradients,
    master copies and optimizer moments.

    Args:
        n_params: parameters of the model (>= 0).
        weight_dtype: format of the (base) weights: name, format object or :class:`~quantlab.core.scheme.QuantScheme`.
            Full fine-tuning needs a floating-point format.
        optimizer: "adam"/"adamw" (2 moments), "sgd_momentum" (1) or "sgd" (0).
        master_dtype: format of the master copy of trained weights, or ``None``.
        moment_dtype: format of each optimizer moment.
        grad_dtype: format of the gradients (default: that of the trained weights).
        adapter_params: number of trainable adapter weights, or ``None`` for full fine-tuning.
        adapter_dtype: format of the adapter weights.

    Returns:
        A dict with keys "weights", "adapters", "gradients", "master_weights",
        "optimizer_state" (bytes each; "adapters" is 0 for full fine-tuning).

    Raises:
        ValueError: unknown optimizer or format, negative counts, a non-float
            ``weight_dtype`` in full fine-tuning.
        TypeError: counts that are not numbers.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    n = check_count(n_params, "n_params")
    if optimizer not in _OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZER_STATES)}, got {optimizer!r}")
    weights = n * spec_bits(weight_dtype, "weight_dtype") / 8
    if adapter_params is None:
        if not _is_float_format(spec_format(weight_dtype), "weight_dtype") or (
            isinstance(weight_dtype, QuantScheme) and weight_dtype.resolved_granularity != "tensor"
        ):
            raise ValueError(
                "full fine-tuning needs a floating-point weight_dtype; train quantized weights "
                f"through adapters (adapter_params=...), got weight_dtype={str(weight_dtype)!r}"
            )
        trained, trained_dtype, adapters = n, spec_format(weight_dtype), 0.0
    else:
        trained = check_count(adapter_params, "adapter_params")
        trained_dtype = adapter_dtype
        adapters = trained * format_bits(adapter_dtype, name="adapter_dtype") / 8
    if grad_dtype is None:
        grad_dtype = trained_dtype
    grads = trained * format_bits(grad_dtype, name="grad_dtype") / 8
    master = 0.0
    if master_dtype is not None:
        master_b = format_bits(master_dtype, name="master_dtype")
        if not _same_format(master_dtype, trained_dtype):
            master = trained * master_b / 8
    state = trained * _OPTIMIZER_STATES[optimizer] * format_bits(moment_dtype, name="moment_dtype") / 8
    return {
        "weights": weights,
        "adapters": adapters,
        "gradients": grads,
        "master_weights": master,
        "optimizer_state": state,
    }


def training_bytes(n_params: float, weight_dtype: SpecLike = "bf16", **kwargs: Any) -> float:
    """Total training memory of a model (weights, gradients, master copy, optimizer state).

    The sum of :func:`training_breakdown` (same arguments): 16 bytes per parameter for
    mixed-precision Adam, so ``training_bytes(7e9) == 112e9``. Activations come on top
    (:func:`activation_bytes`).

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    return sum(training_breakdown(n_params, weight_dtype, **kwargs).values())
