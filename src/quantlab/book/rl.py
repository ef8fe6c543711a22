"""A small control policy for CartPole-v1: train it, evaluate it, quantize it.

The policy is a multilayer perceptron ``4 -> 64 -> 64 -> 2`` (observation -> hidden ->
hidden -> one logit per action) with ReLU activations; :meth:`Policy.act` takes the
action with the larger logit (greedy). It is trained with REINFORCE (the score-function
policy gradient) with normalised discounted returns as the advantage::

    loss = -mean_t( log pi(a_t | s_t) * (G_t - mean(G)) / std(G) ),
    G_t  = sum_k gamma^k r_{t+k}

Everything is seeded: the initial weights come from a ``torch.Generator`` and the
sampled actions from a ``numpy.random.Generator``, both seeded with ``seed``; training
episode ``i`` resets the environment with ``100_000 * seed + i``, and an evaluation of
``n`` episodes resets gymnasium's vectorised CartPole with its ``seed``, which draws all
``n`` starting states. CartPole's dynamics are deterministic, so a greedy policy
evaluated with a seed always scores the same (on one machine, with one thread,
``torch.set_num_threads(1)``, the training run is reproducible too).

Rollouts of a plain Linear/ReLU stack run its forward pass in numpy
(:func:`numpy_logits`): for a network this small, torch's per-call overhead costs more
than the arithmetic. That forward pass is also **the same on every CPU**: each product
``x @ W.T`` is an elementwise multiply followed by a sum in a fixed order, never a BLAS
call, whose summation order depends on the instruction set (AVX2, AVX-512) and the
thread count. Greedy actions, and so evaluation returns and action agreements, are then
exact functions of the weights: a policy that scores 500 here scores 500 on any machine.
Training is not: its sampling and gradients go through torch's and numpy's vectorised
kernels, which differ in the last bits between CPUs, and a chaotic task turns that into a
different policy. The chapter therefore studies policies trained once and stored with the
package (:func:`load_policies`, made by ``scripts/train_policies.py``).

Quantizing a policy (:func:`quantize_policy`) replaces each Linear layer's weight by its
round trip through a :mod:`quantlab` format (``ql.fake_quantize``), per tensor or per
output channel; biases stay in fp32 (they are 130 numbers of the 4,610). The packed size
of a quantized policy comes from :mod:`quantlab.nn` (``quantize_model`` and ``size_report``).
The code is split by job, and this module re-exports every name of its parts:
:mod:`~quantlab.book.rl_policy` (the policy, its environment, rollouts and evaluation),
:mod:`~quantlab.book.rl_reinforce` (REINFORCE training), :mod:`~quantlab.book.rl_quantize`
(quantized policies), :mod:`~quantlab.book.rl_qat` (quantization-aware fine-tuning),
:mod:`~quantlab.book.rl_stored` (the stored policies).

Taught in: chapters/05_rl.ipynb, "Train a policy" and "How many bits does a policy need?".
"""

from __future__ import annotations

from .rl_policy import (
    ENV_ID,
    MAX_RETURN,
    Policy,
    action_agreement,
    collect_states,
    episode_returns,
    evaluate,
    fixed_order_matmul,
    make_env,
    numpy_logits,
    rollout,
)
from .rl_qat import finetune_qat
from .rl_quantize import BINARY, FormatArg, policy_scheme, quantize_policy, quantized_weights
from .rl_reinforce import TrainResult, train_reinforce
from .rl_stored import POLICIES_FILE, TRAINING_RECIPE, StoredPolicies, load_policies, recipe_hash, save_policies

__all__ = [
    "ENV_ID",
    "MAX_RETURN",
    "BINARY",
    "Policy",
    "TrainResult",
    "make_env",
    "numpy_logits",
    "train_reinforce",
    "rollout",
    "evaluate",
    "episode_returns",
    "collect_states",
    "action_agreement",
    "quantize_policy",
    "quantized_weights",
    "finetune_qat",
    "fixed_order_matmul",
    "TRAINING_RECIPE",
    "recipe_hash",
    "StoredPolicies",
    "save_policies",
    "load_policies",
    "POLICIES_FILE",
    "policy_scheme",
    "FormatArg",
]
