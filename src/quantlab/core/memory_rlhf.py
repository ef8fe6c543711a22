"""RLHF memory: the four models PPO-style training from human feedback holds at once.

Policy and value model are trained (weights plus training state, :func:`~quantlab.core.memory_state.training_bytes`);
the reference policy and the reward model are frozen (weights only), so they can be stored
quantized at no cost to training::

    total = train(policy) + weights(reference) + weights(reward) + train(value)

Re-exported by :mod:`quantlab.core.memory`.

Taught in: chapters/01_why_quantization.ipynb, "Why it matters for RL".
"""

from __future__ import annotations

from .memory_state import training_bytes
from .memory_weights import SpecLike, spec_bits
from .validate import check_count

__all__ = ["rlhf_bytes"]


def rlhf_bytes(
    n_params: float,
    *,
    policy_fmt: SpecLike = "bf16",
    reference_fmt: SpecLike = "bf16",
    reward_fmt: SpecLike = "bf16",
    value_fmt: SpecLike = "bf16",
    reward_params: float | None = None,
    value_params: float | None = None,
    adapter_params: float | None = None,
    optimizer: str = "adam",
    master_dtype: str | None = "fp32",
    moment_dtype: str = "fp32",
) -> dict[str, float]:
    """Memory of the four models PPO-style RLHF holds at once, per model.

    - policy: trained, so weights plus its training state (:func:`training_bytes`);
    - reference: the frozen starting policy (for the KL penalty): weights only;
    - reward: frozen reward model: weights only;
    - value: the critic, trained too (weights plus training state).

    Frozen models can be stored quantized at no cost to training (``reference_fmt="int8"``,
    ``QuantSpec("int4", 128)``); trained ones need a float format, unless
    ``adapter_params`` is given: then policy and value keep frozen (possibly quantized)
    bases and each trains ``adapter_params`` adapter weights (LoRA/QLoRA).

    Args:
        n_params: parameters of the policy (and of the reference, its copy).
        policy_fmt, reference_fmt, reward_fmt, value_fmt: each model's storage format.
        reward_params: parameters of the reward model (default ``n_params``).
        value_params: parameters of the value model (default ``reward_params``; the
            critic is usually initialised from the reward model).
        adapter_params: trainable adapter weights per trained model, or ``None`` (full).
        optimizer, master_dtype, moment_dtype: see :func:`training_breakdown`.

    Returns:
        ``{"policy": ..., "reference": ..., "reward": ..., "value": ...}`` in bytes; the
        total is ``sum(result.values())``.

    Raises:
        ValueError / TypeError: as :func:`weight_bytes` and :func:`training_breakdown`.

    Taught in: chapters/01_why_quantization.ipynb, "Why it matters for RL".
    """
    n = check_count(n_params, "n_params")
    r = n if reward_params is None else check_count(reward_params, "reward_params")
    v = r if value_params is None else check_count(value_params, "value_params")
    train = dict(
        adapter_params=adapter_params,
        optimizer=optimizer,
        master_dtype=master_dtype,
        moment_dtype=moment_dtype,
    )
    return {
        "policy": training_bytes(n, policy_fmt, **train),
        "reference": n * spec_bits(reference_fmt, "reference_fmt") / 8,
        "reward": r * spec_bits(reward_fmt, "reward_fmt") / 8,
        "value": training_bytes(v, value_fmt, **train),
    }
