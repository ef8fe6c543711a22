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

Taught in: chapters/05_rl.ipynb, "Train a policy" and "How many bits does a policy need?".
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import gymnasium as gym

from ..algorithms._model_utils import fake_quantized_copy
from ..core.formats import BlockFormat, FloatFormat, Format, FormatLike, IntFormat, codebook, get_format
from ..core.quantize import QTensor, quantize
from ..core.scheme import PerAxis, PerTensor, QuantScheme
from ..core.validate import check_int, check_positive

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
]

ENV_ID: str = "CartPole-v1"
"""The gymnasium environment the policy controls."""

MAX_RETURN: float = 500.0
"""CartPole-v1 ends an episode after 500 steps, each worth a reward of 1: the top score."""

BINARY: Format = codebook([-1.0, 1.0], "binary")
"""Sign quantization as a 1-bit format: the codebook {-1, +1}. With absmax scaling a weight
becomes ``+-absmax`` of its tensor (or output channel). ``int1`` cannot do this: its codes are
{-1, 0}, so symmetric int1 has no positive value at all."""

#: Former name of :data:`~quantlab.core.formats.FormatLike`, kept for code that imports it.
FormatArg = FormatLike


# --------------------------------------------------------------------------- validation


def _check_policy(policy: Any, name: str = "policy") -> nn.Module:
    if not isinstance(policy, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(policy).__name__}")
    return policy


# --------------------------------------------------------------------------- the policy


class Policy(nn.Module):
    """The MLP policy ``obs_dim -> hidden -> hidden -> n_actions`` with ReLU.

    Args:
        obs_dim: observation size (4 for CartPole).
        n_actions: number of discrete actions (2 for CartPole).
        hidden: width of both hidden layers.
        seed: seeds the initial weights (PyTorch's default Linear initialisation drawn
            from a private generator, so the global RNG is untouched).

    Shapes: ``forward`` maps ``(batch, obs_dim)`` float32 to ``(batch, n_actions)`` logits.
    """

    def __init__(self, obs_dim: int = 4, n_actions: int = 2, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        obs_dim = check_int(obs_dim, "obs_dim", minimum=1)
        n_actions = check_int(n_actions, "n_actions", minimum=2)
        hidden = check_int(hidden, "hidden", minimum=1)
        seed = check_int(seed, "seed", minimum=0)
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_actions),
        )
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)  # PyTorch's default range
                    layer.weight.uniform_(-bound, bound, generator=g)
                    layer.bias.uniform_(-bound, bound, generator=g)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Action logits, ``(batch, n_actions)``."""
        return self.net(obs)

    @torch.no_grad()
    def act(self, obs: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        """Greedy actions (index of the largest logit) for a batch of observations."""
        return _greedy(self, obs)


def _numpy_layers(policy: nn.Module) -> Optional[list[tuple[str, Any, Any]]]:
    """The layers of a plain Linear/ReLU/Tanh stack as numpy arrays, or None for anything else.

    A forward pass of a network this small costs microseconds in numpy but tens of
    microseconds of framework overhead per layer in torch, so rollouts use numpy when they
    can. Only exact ``nn.Linear`` layers qualify (a subclass may change the weights it uses).
    """
    seq = policy.net if isinstance(getattr(policy, "net", None), nn.Sequential) else policy
    if not isinstance(seq, nn.Sequential) or type(policy) not in (Policy, nn.Sequential):
        return None
    layers: list[tuple[str, Any, Any]] = []
    for m in seq:
        if type(m) is nn.Linear:
            w = np.ascontiguousarray(m.weight.detach().numpy(), dtype=np.float32)  # (out, in)
            b = None if m.bias is None else m.bias.detach().numpy().copy()
            layers.append(("linear", w, b))
        elif type(m) is nn.ReLU:
            layers.append(("relu", None, None))
        elif type(m) is nn.Tanh:
            layers.append(("tanh", None, None))
        else:
            return None
    return layers


_ROWS_PER_CHUNK = 512


def fixed_order_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w.T`` computed the same way, bit for bit, on every CPU.

    Each output is ``sum_k x[i, k] * w[j, k]``: the products are formed elementwise and
    summed along ``k`` by numpy's reduction, whose order is fixed by the array shapes alone.
    A BLAS matrix product picks its kernel, and so its summation order, by instruction set
    and thread count; its results differ in the last bits between machines.

    Args:
        x: ``(batch, in)`` float32.
        w: ``(out, in)`` float32.

    Returns:
        ``(batch, out)`` float32.
    """
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
    for start in range(0, x.shape[0], _ROWS_PER_CHUNK):
        rows = x[start : start + _ROWS_PER_CHUNK]
        np.sum(rows[:, None, :] * w[None, :, :], axis=-1, dtype=np.float32, out=out[start : start + len(rows)])
    return out


def _numpy_forward(layers: list[tuple[str, Any, Any]], x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float32)  # a copy: the in-place steps below must not touch the input
    for kind, w, b in layers:
        if kind == "linear":
            x = fixed_order_matmul(x, w)
            if b is not None:
                x += b
        elif kind == "relu":
            np.maximum(x, 0, out=x)
        else:
            np.tanh(x, out=x)
    return x


def numpy_logits(policy: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The policy's forward pass in numpy, for a snapshot of its current weights.

    Args:
        policy: a :class:`Policy` or an ``nn.Sequential`` of exact ``nn.Linear``,
            ``nn.ReLU`` and ``nn.Tanh`` layers.

    Returns:
        A function mapping ``(batch, obs_dim)`` float32 arrays to ``(batch, n_actions)`` logits.

    Raises:
        TypeError: ``policy`` is not a module.
        ValueError: a module this function cannot translate (any other layer type).

    Taught in: chapters/05_rl.ipynb, "The real-time budget".
    """
    _check_policy(policy)
    layers = _numpy_layers(policy)
    if layers is None:
        raise ValueError(
            "policy must be a Policy or an nn.Sequential of nn.Linear/nn.ReLU/nn.Tanh layers, "
            f"got {type(policy).__name__}"
        )
    return lambda x: _numpy_forward(layers, x)


def _logits_fn(policy: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``(batch, obs_dim) float32 numpy -> logits numpy`` for the current weights."""
    layers = _numpy_layers(policy)
    if layers is not None:
        return lambda x: _numpy_forward(layers, x)

    def torch_logits(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return policy(torch.from_numpy(x)).numpy()

    return torch_logits


def _as_obs(obs: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    if isinstance(obs, torch.Tensor):
        obs = obs.detach().cpu().numpy()
    x = np.ascontiguousarray(obs, dtype=np.float32)
    return x[None, :] if x.ndim == 1 else x


def _greedy(policy: nn.Module, obs: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    return _logits_fn(policy)(_as_obs(obs)).argmax(axis=-1)


def make_env(env_id: str = ENV_ID) -> gym.Env:
    """A gymnasium environment without the checker wrapper (it only slows each step)."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string, got {type(env_id).__name__}")
    import gymnasium as gym

    return gym.make(env_id, disable_env_checker=True)


# --------------------------------------------------------------------------- evaluation


def rollout(
    policy: nn.Module,
    episodes: int = 20,
    seed: int = 0,
    *,
    record_states: bool = False,
    env_id: str = ENV_ID,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Run ``episodes`` greedy episodes side by side, one batched forward pass per step.

    The episodes run in gymnasium's vectorised environment
    (``gym.make_vec(env_id, num_envs=episodes)``), reset once with ``seed``, which draws
    every episode's starting state; each step, every unfinished episode's observation goes
    through the policy in one batch and the action with the largest logit is taken. So
    the result depends only on the weights, ``episodes`` and ``seed``.

    Args:
        policy: a module mapping ``(batch, obs_dim)`` observations to action logits.
        episodes: number of episodes (>= 1).
        seed: seed of the environment reset (>= 0).
        record_states: also return every observation the policy acted on.
        env_id: the gymnasium environment.

    Returns:
        ``(returns, states)``: returns of shape ``(episodes,)``; states of shape
        ``(n_steps_total, obs_dim)`` (float32) or None.

    Raises:
        TypeError, ValueError: bad ``policy``, ``episodes`` or ``seed``.
    """
    _check_policy(policy)
    episodes = check_int(episodes, "episodes", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string, got {type(env_id).__name__}")
    import gymnasium as gym

    env = gym.make_vec(env_id, num_envs=episodes, vectorization_mode="vector_entry_point")
    obs, _ = env.reset(seed=seed)
    returns = np.zeros(episodes)
    running = np.ones(episodes, dtype=bool)
    states: list[np.ndarray] = []
    actions = np.zeros(episodes, dtype=np.int64)
    logits = _logits_fn(policy)
    while running.any():
        batch = np.asarray(obs, dtype=np.float32)[running]
        if record_states:
            states.append(batch)
        actions[running] = logits(batch).argmax(axis=-1)
        obs, reward, terminated, truncated, _ = env.step(actions)
        returns[running] += reward[running]
        running &= ~(terminated | truncated)
    env.close()
    return returns, (np.concatenate(states) if record_states else None)


def episode_returns(policy: nn.Module, episodes: int = 20, seed: int = 0) -> np.ndarray:
    """Return of each of ``episodes`` greedy episodes (see :func:`rollout`), shape ``(episodes,)``."""
    return rollout(policy, episodes, seed)[0]


def evaluate(policy: nn.Module, episodes: int = 20, seed: int = 0) -> float:
    """Mean return of ``policy`` over ``episodes`` greedy episodes (see :func:`rollout`).

    Deterministic: the same weights and seed give the same number. CartPole-v1 caps the
    return at :data:`MAX_RETURN` = 500.

    Taught in: chapters/05_rl.ipynb, "Train a policy".
    """
    return float(episode_returns(policy, episodes, seed).mean())


def collect_states(policy: nn.Module, episodes: int = 20, seed: int = 0) -> torch.Tensor:
    """Every observation ``policy`` meets in ``episodes`` greedy episodes, ``(n, obs_dim)`` float32.

    These are the states on which :func:`action_agreement` compares a quantized policy
    with the original.
    """
    return torch.from_numpy(rollout(policy, episodes, seed, record_states=True)[1])


def action_agreement(policy: nn.Module, ref_policy: nn.Module, states: Union[np.ndarray, torch.Tensor]) -> float:
    """Share of ``states`` on which ``policy`` picks the same greedy action as ``ref_policy``.

    ``agreement = mean_i [argmax policy(s_i) == argmax ref_policy(s_i)]``, in [0, 1].
    A return that saturates at 500 hides small differences; agreement does not.

    Args:
        policy, ref_policy: modules mapping observations to logits.
        states: ``(n, obs_dim)`` observations, n >= 1 (e.g. from :func:`collect_states`).

    Raises:
        TypeError: a policy that is not a module, states that are not an array/tensor.
        ValueError: states that are not a non-empty 2-D batch.

    Taught in: chapters/05_rl.ipynb, "How many bits does a policy need?".
    """
    _check_policy(policy, "policy")
    _check_policy(ref_policy, "ref_policy")
    if not isinstance(states, (np.ndarray, torch.Tensor)):
        raise TypeError(f"states must be a numpy array or torch tensor, got {type(states).__name__}")
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"states must have shape (n, obs_dim) with n >= 1, got {tuple(states.shape)}")
    a = _greedy(policy, states)
    b = _greedy(ref_policy, states)
    return float((a == b).mean())


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train_reinforce` returns.

    Attributes:
        policy: the trained policy.
        returns: the return of every training episode (sampled actions), in order.
        eval_returns: ``(episode, greedy mean return)`` at each check.
        solved: whether a greedy check reached ``target_return``.
        episodes: number of training episodes run.
    """

    policy: Policy
    returns: list[float] = field(default_factory=list)
    eval_returns: list[tuple[int, float]] = field(default_factory=list)
    solved: bool = False
    episodes: int = 0


def _discounted(rewards: Sequence[float], gamma: float) -> np.ndarray:
    out = np.empty(len(rewards))
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def train_reinforce(
    policy: Optional[nn.Module] = None,
    *,
    seed: int = 0,
    max_episodes: int = 1000,
    lr: float = 0.01,
    gamma: float = 0.99,
    target_return: float = MAX_RETURN,
    eval_every: int = 10,
    eval_episodes: int = 10,
    progress: bool = True,
    env_id: str = ENV_ID,
) -> TrainResult:
    """Train a policy with REINFORCE until its greedy return reaches ``target_return``.

    One episode per update: sample actions from ``softmax(logits)``, compute the
    discounted returns ``G_t``, normalise them to zero mean and unit variance (a baseline
    that also scales the step), and take one Adam step on
    ``-sum_t log pi(a_t|s_t) * G_t_normalised / T``. Every ``eval_every`` episodes the
    greedy policy plays ``eval_episodes`` episodes (seeds ``10_000 + seed*100 ...``, apart from
    the training seeds); training stops as soon as their mean reaches ``target_return``.

    Args:
        policy: the module to train (default: a fresh ``Policy(seed=seed)``). Trained in place.
        seed: seeds the initial weights, the action sampling and the environment resets.
        max_episodes: give up after this many episodes.
        lr: Adam learning rate.
        gamma: discount factor in (0, 1].
        target_return: stop when the greedy check reaches this mean return.
        eval_every: episodes between greedy checks.
        eval_episodes: episodes per greedy check.
        progress: show a tqdm progress bar (on stderr).
        env_id: the gymnasium environment.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TypeError, ValueError: bad arguments (each message names the parameter).

    Taught in: chapters/05_rl.ipynb, "Train a policy".
    """
    seed = check_int(seed, "seed", minimum=0)
    max_episodes = check_int(max_episodes, "max_episodes", minimum=1)
    lr = check_positive(lr, "lr")
    gamma = check_positive(gamma, "gamma")
    if gamma > 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    target_return = check_positive(target_return, "target_return")
    eval_every = check_int(eval_every, "eval_every", minimum=1)
    eval_episodes = check_int(eval_episodes, "eval_episodes", minimum=1)
    if policy is None:
        policy = Policy(seed=seed)
    _check_policy(policy)
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    env = make_env(env_id)
    result = TrainResult(policy=policy)
    bar = tqdm(range(max_episodes), desc="REINFORCE", unit="ep", disable=not progress)
    for ep in bar:
        obs, _ = env.reset(seed=seed * 100_000 + ep)
        observations, actions, rewards = [], [], []
        done = False
        logits_fn = _logits_fn(policy)  # the weights change only between episodes
        while not done:
            o = np.asarray(obs, dtype=np.float32)
            z = logits_fn(o[None, :])[0].astype(np.float64)
            p = np.exp(z - z.max())
            a = min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right")), len(p) - 1)
            obs, r, terminated, truncated, _ = env.step(a)
            observations.append(o)
            actions.append(a)
            rewards.append(r)
            done = terminated or truncated
        g = torch.as_tensor(_discounted(rewards, gamma), dtype=torch.float32)
        g = (g - g.mean()) / (g.std(unbiased=False) + 1e-8)
        logp = torch.log_softmax(policy(torch.from_numpy(np.stack(observations))), dim=-1)
        chosen = logp[torch.arange(len(actions)), torch.as_tensor(actions)]
        loss = -(chosen * g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        result.returns.append(float(sum(rewards)))
        result.episodes = ep + 1
        if (ep + 1) % eval_every == 0:
            score = evaluate(policy, eval_episodes, seed=10_000 + seed * 100)
            result.eval_returns.append((ep + 1, score))
            bar.set_postfix(greedy_return=f"{score:.0f}")
            if score >= target_return:
                result.solved = True
                break
    bar.close()
    env.close()
    return result


# --------------------------------------------------------------------------- quantization


def _linears(policy: nn.Module) -> list[nn.Linear]:
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
        return QuantScheme(f, scale_dtype="fp32")
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
    _check_policy(policy)
    scheme = policy_scheme(fmt, granularity)
    return [quantize(layer.weight.detach(), scheme) for layer in _linears(policy)]


def quantize_policy(policy: nn.Module, fmt: FormatLike, granularity: str = "tensor") -> nn.Module:
    """A copy of ``policy`` whose Linear weights are rounded to ``fmt`` (biases stay fp32).

    Each weight ``W`` becomes ``dequantize(quantize(W, fmt, granularity))``: the values
    the quantized policy really computes with, held as floats so the same forward pass
    runs. For its packed storage see :func:`quantlab.nn.quantize_model`.

    Args, Raises: see :func:`quantized_weights`.

    Taught in: chapters/05_rl.ipynb, "How many bits does a policy need?".
    """
    _check_policy(policy)
    scheme = policy_scheme(fmt, granularity)
    _linears(policy)
    return fake_quantized_copy(policy, scheme.fmt, **scheme.qparams_kwargs())


# --------------------------------------------------------------------------- quantization-aware training


def finetune_qat(
    policy: nn.Module,
    fmt: FormatLike,
    granularity: str = "tensor",
    *,
    steps: int = 100,
    rounds: int = 2,
    episodes: int = 10,
    lr: float = 3e-3,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Fine-tune a quantized copy of ``policy`` to imitate ``policy`` (QAT by distillation).

    The copy's Linear layers become :class:`quantlab.qat.FakeQuantLinear` (weights rounded
    to ``fmt`` in the forward pass, straight-through gradients). It is trained with the
    cross-entropy between its logits and the original's greedy action, on states from
    ``rounds`` rounds of data collection (DAgger): round 0 uses states the original policy
    visits, each later round adds the states the *quantized* student visits, labelled by
    the original. Each round takes ``steps`` Adam steps on minibatches of ``batch_size``.

    Args:
        policy: the trained float policy (the teacher; not modified).
        fmt: the weight format, e.g. ``"int2"`` or :data:`BINARY`.
        granularity: ``"tensor"`` or ``"channel"`` (one scale per output neuron).
        steps: optimizer steps per round (>= 1).
        rounds: rounds of data collection and training (>= 1).
        episodes: greedy episodes per round of data collection (>= 1).
        lr: Adam learning rate (> 0).
        batch_size: states per step (>= 1).
        seed: seeds the minibatch draws; the rollouts reset with ``20_000 + 100*seed + round``
            (seeds apart from the evaluation seeds the chapter uses).
        progress: show a tqdm progress bar.

    Returns:
        A copy of ``policy`` with plain Linear layers holding the quantized weights
        (the same kind of object :func:`quantize_policy` returns).

    Raises:
        TypeError, ValueError: bad arguments (each message names the parameter).

    Taught in: chapters/05_rl.ipynb, "Quantization-aware training".
    """
    from tqdm.auto import tqdm

    from ..algorithms.qat import convert, prepare_qat

    _check_policy(policy)
    scheme = policy_scheme(fmt, granularity)
    fmt = scheme.fmt
    steps = check_int(steps, "steps", minimum=1)
    rounds = check_int(rounds, "rounds", minimum=1)
    episodes = check_int(episodes, "episodes", minimum=1)
    lr = check_positive(lr, "lr")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    student = prepare_qat(policy, scheme)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    data = collect_states(policy, episodes, seed=20_000 + 100 * seed)
    bar = tqdm(total=rounds * steps, desc=f"QAT {fmt.name}", disable=not progress)
    for r in range(rounds):
        if r > 0:
            visited = collect_states(convert(student), episodes, seed=20_000 + 100 * seed + r)
            data = torch.cat([data, visited])
        labels = torch.from_numpy(_greedy(policy, data))
        for _ in range(steps):
            idx = torch.randint(len(data), (min(batch_size, len(data)),), generator=gen)
            loss = F.cross_entropy(student(data[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    return convert(student)


# --------------------------------------------------------------------------- stored policies

TRAINING_RECIPE: dict[str, Any] = {
    "env_id": ENV_ID,
    "n_policies": 10,
    "max_seed": 40,
    "policy": {"obs_dim": 4, "n_actions": 2, "hidden": 64},
    "reinforce": {
        "max_episodes": 1000,
        "lr": 0.01,
        "gamma": 0.99,
        "target_return": MAX_RETURN,
        "eval_every": 10,
        "eval_episodes": 10,
    },
    "qat": {
        "formats": ["int2", "binary"],
        "granularities": ["tensor", "channel"],
        "steps": 100,
        "rounds": 2,
        "episodes": 10,
        "lr": 3e-3,
        "batch_size": 256,
    },
}
"""How the stored policies (:func:`load_policies`) were made: ``scripts/train_policies.py``
trains one :class:`Policy` per seed with :func:`train_reinforce`, seeds 0, 1, 2, ... in turn,
until ``n_policies`` of them have solved the task (a seed that has not solved it after
``max_episodes`` is recorded in the file's ``unsolved`` metadata and skipped), then fine-tunes
each kept policy with :func:`finetune_qat` for every QAT format and granularity listed here."""

POLICIES_FILE = "cartpole_policies.safetensors"
"""File name of the stored policies inside the package's ``data`` folder."""


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a training recipe's canonical JSON: stored beside the policies it made,
    so a test can tell when the stored file no longer matches :data:`TRAINING_RECIPE`."""
    if not isinstance(recipe, Mapping):
        raise TypeError(f"recipe must be a mapping, got {type(recipe).__name__}")
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


@dataclass
class StoredPolicies:
    """What :func:`load_policies` returns.

    Attributes:
        policies: name -> policy, e.g. ``"seed3/fp32"`` or ``"seed3/qat-int2-tensor"``.
        curves: name -> training returns per episode (float64), for the fp32 policies.
        metadata: the file's metadata (``recipe`` as JSON, ``recipe_hash``, ``unsolved``: the
            seeds skipped because training did not solve the task, as JSON; ``torch``, ...).
    """

    policies: dict[str, nn.Module]
    curves: dict[str, np.ndarray]
    metadata: dict[str, str]

    def seeds(self) -> list[int]:
        """The seeds of the stored float32 policies, ascending."""
        return sorted(int(k.split("/")[0][4:]) for k in self.policies if k.endswith("/fp32"))


def save_policies(
    path: Union[str, Path],
    policies: Mapping[str, nn.Module],
    *,
    curves: Optional[Mapping[str, Sequence[float]]] = None,
    metadata: Optional[Mapping[str, str]] = None,
) -> Path:
    """Write :class:`Policy` modules (and optional training curves) to one safetensors file.

    Args:
        path: the file to write.
        policies: name -> :class:`Policy` (names without ``"."``, e.g. ``"seed3/fp32"``).
        curves: name -> returns per training episode.
        metadata: string -> string, stored in the file's header.

    Returns:
        The path written.

    Raises:
        TypeError: a policy that is not a :class:`Policy`, metadata that is not str -> str.
        ValueError: a name containing ``"."``.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, policy in policies.items():
        if not isinstance(policy, Policy):
            raise TypeError(f"policies[{name!r}] must be a Policy, got {type(policy).__name__}")
        if "." in name:
            raise ValueError(f"policy names must not contain '.', got {name!r}")
        linears = _linears(policy)
        shapes[name] = [linears[0].in_features, linears[-1].out_features, linears[0].out_features]
        for key, value in policy.state_dict().items():
            tensors[f"policy.{name}.{key}"] = value.detach().to(torch.float32).contiguous().clone()
    for name, curve in (curves or {}).items():
        tensors[f"curve.{name}"] = torch.as_tensor(np.asarray(curve, dtype=np.float64))
    meta = {"shapes": json.dumps(shapes)}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        meta[k] = v
    path = Path(path)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_policies(path: Optional[Union[str, Path]] = None) -> StoredPolicies:
    """Read policies written by :func:`save_policies` (default: the ones stored with quantlab).

    The stored file holds ten CartPole policies trained with :func:`train_reinforce`
    (``"seed{s}/fp32"``, the first ten seeds whose training solved the task), their QAT fine-tunes
    (``"seed{s}/qat-{fmt}-{granularity}"``)
    and training curves, made by ``scripts/train_policies.py`` with :data:`TRAINING_RECIPE`.
    Evaluating them is exact on every CPU (see the module docstring), training them again is not.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that was not written by :func:`save_policies`.

    Taught in: chapters/05_rl.ipynb, "Train a policy".
    """
    from safetensors import safe_open

    if path is None:
        path = Path(__file__).resolve().parents[1] / "data" / POLICIES_FILE
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no stored policies at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        if "shapes" not in meta:
            raise ValueError(f"{path} was not written by quantlab.rl.save_policies (no 'shapes' metadata)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors file, not a dict)
    policies: dict[str, nn.Module] = {}
    for name, (obs_dim, n_actions, hidden) in json.loads(meta["shapes"]).items():
        policy = Policy(obs_dim=obs_dim, n_actions=n_actions, hidden=hidden)
        prefix = f"policy.{name}."
        policy.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        policies[name] = policy
    curves = {k[len("curve.") :]: v.numpy() for k, v in tensors.items() if k.startswith("curve.")}
    return StoredPolicies(policies=policies, curves=curves, metadata=meta)
