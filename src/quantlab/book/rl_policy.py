"""The CartPole policy and its environment: the network, its fixed-order numpy forward pass, rollouts.

The policy is a multilayer perceptron ``4 -> 64 -> 64 -> 2`` (observation -> hidden ->
hidden -> one logit per action) with ReLU activations; :meth:`Policy.act` takes the
action with the larger logit (greedy). Rollouts of a plain Linear/ReLU stack run its
forward pass in numpy (:func:`numpy_logits`): each product ``x @ W.T`` is an elementwise
multiply followed by a sum in a fixed order, never a BLAS call, so greedy actions -- and so
evaluation returns (:func:`evaluate`, at most :data:`MAX_RETURN` = 500) and action
agreements (:func:`action_agreement`) -- are exact functions of the weights, the same on
every CPU. An evaluation of ``n`` episodes resets gymnasium's vectorised CartPole with its
``seed``, which draws all ``n`` starting states. Re-exported by :mod:`quantlab.book.rl`.

Taught in: chapters/05_rl.ipynb, "Train a policy".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import gymnasium as gym

from ..core.validate import check_int

__all__ = [
    "ENV_ID",
    "MAX_RETURN",
    "Policy",
    "check_policy",
    "make_env",
    "numpy_logits",
    "fixed_order_matmul",
    "logits_function",
    "greedy_actions",
    "rollout",
    "evaluate",
    "episode_returns",
    "collect_states",
    "action_agreement",
]

ENV_ID: str = "CartPole-v1"
"""The gymnasium environment the policy controls."""

MAX_RETURN: float = 500.0
"""CartPole-v1 ends an episode after 500 steps, each worth a reward of 1: the top score."""

# --------------------------------------------------------------------------- validation


def check_policy(policy: Any, name: str = "policy") -> nn.Module:
    """``policy`` itself if it is a ``torch.nn.Module``, else a TypeError naming ``name``."""
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
        return greedy_actions(self, obs)


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
    check_policy(policy)
    layers = _numpy_layers(policy)
    if layers is None:
        raise ValueError(
            "policy must be a Policy or an nn.Sequential of nn.Linear/nn.ReLU/nn.Tanh layers, "
            f"got {type(policy).__name__}"
        )
    return lambda x: _numpy_forward(layers, x)


def logits_function(policy: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``(batch, obs_dim) float32 numpy -> logits numpy`` for the current weights:
    the fixed-order numpy forward pass of :func:`numpy_logits` for a plain Linear/ReLU stack,
    the module's own torch forward pass otherwise."""
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


def greedy_actions(policy: nn.Module, obs: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """The greedy actions ``argmax(logits)`` of ``policy`` for observations ``(obs_dim,)`` or
    ``(batch, obs_dim)``, numpy or torch: an int array ``(batch,)``."""
    return logits_function(policy)(_as_obs(obs)).argmax(axis=-1)


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
    check_policy(policy)
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
    logits = logits_function(policy)
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
    check_policy(policy, "policy")
    check_policy(ref_policy, "ref_policy")
    if not isinstance(states, (np.ndarray, torch.Tensor)):
        raise TypeError(f"states must be a numpy array or torch tensor, got {type(states).__name__}")
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"states must have shape (n, obs_dim) with n >= 1, got {tuple(states.shape)}")
    a = greedy_actions(policy, states)
    b = greedy_actions(ref_policy, states)
    return float((a == b).mean())
