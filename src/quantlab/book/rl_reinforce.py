"""Training the CartPole policy with REINFORCE, the score-function policy gradient.

Normalised discounted returns are the advantage::

    loss = -mean_t( log pi(a_t | s_t) * (G_t - mean(G)) / std(G) ),
    G_t  = sum_k gamma^k r_{t+k}

Everything is seeded: the initial weights come from a ``torch.Generator`` and the sampled
actions from a ``numpy.random.Generator``, both seeded with ``seed``; training episode ``i``
resets the environment with ``100_000 * seed + i``. On one machine, with one thread, a run
is reproducible; across CPUs torch's and numpy's vectorised kernels differ in the last bits,
and a chaotic task turns that into a different policy (hence the stored policies,
:mod:`quantlab.book.rl_stored`). Re-exported by :mod:`quantlab.book.rl`.

Taught in: chapters/05_rl.ipynb, "Train a policy".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    pass

from ..core.validate import check_int, check_positive
from .rl_policy import ENV_ID, MAX_RETURN, Policy, check_policy, evaluate, logits_function, make_env

__all__ = ["TrainResult", "train_reinforce"]

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
    check_policy(policy)
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
        logits_fn = logits_function(policy)  # the weights change only between episodes
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
