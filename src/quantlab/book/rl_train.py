"""PPO whose actors act with a quantized copy of the policy (quantization inside RL training).

An actor-learner split, as in IMPALA: the **learner** keeps the fp32 weights of an
actor-critic (a policy ``pi`` and a separate critic ``V``) and takes the gradient steps;
the **actors** collect experience with a *behaviour policy* ``mu``, the learner's policy
with its Linear weights rounded to ``actor_format`` (``quantlab.fake_quantized_copy``),
refreshed after every update. The data then comes from ``mu``, not from ``pi``: an
off-policy mismatch that quantization creates, measured on the states the actors visit::

    KL(mu || pi)(s) = sum_a mu(a|s) (log mu(a|s) - log pi(a|s))            (discrete)
                    = sum_j log(s_pi/s_mu) + (s_mu^2 + (m_mu - m_pi)^2) / (2 s_pi^2) - 1/2
                                                                           (diagonal Gaussian)
    rho_t = pi(a_t|s_t) / mu(a_t|s_t)                        (importance ratio of a sample)

PPO (clipped objective) with generalised advantage estimation::

    delta_t = r_t + gamma V(s_{t+1}) (1 - done_t) - V(s_t)
    A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1}
    L_clip  = -mean_t( w_t min(r_t(theta) A_t, clip(r_t(theta), 1 - eps, 1 + eps) A_t) )
    L       = L_clip + c_v mean_t (V(s_t) - (A_t + V_old(s_t)))^2 / 2 - c_H mean_t H(pi(.|s_t))

``is_correction`` chooses the "old" policy of the ratio ``r_t(theta) = pi_theta / old``
and the weight ``w_t``:

* ``None`` -- ignore the mismatch: ``old = mu`` (the log-probabilities the actors
  recorded, used as if they were the learner's) and ``w_t = 1``;
* ``"truncated"`` -- ``old = pi`` (the learner's fp32 policy before the update) and a
  truncated importance weight ``w_t = min(rho_t, c)``, ``c = is_clip`` (1 or 2), as in
  V-trace (IMPALA): the bias of truncation is traded for a bounded variance.

A truncation at a time limit (Pendulum always, CartPole and Acrobot at 500 steps) is not
a terminal state: its reward gets ``gamma V(s_final)`` added (bootstrapping).

Discrete actions (CartPole-v1, Acrobot-v1) use a categorical policy over the logits;
continuous ones (Pendulum-v1) a Gaussian ``N(m(s), diag(exp(2 log_std)))`` with a
state-independent ``log_std`` (a parameter, not a Linear weight: it stays fp32), the sampled
action clipped to the action bounds only when it is sent to the environment.

Quantization-aware training (``qat_format``): the learner's *actor* Linear layers become
:class:`quantlab.qat.FakeQuantLinear` layers, which compute with ``Q(W)`` (symmetric, one
scale per output row or per tensor as ``granularity`` says) and pass gradients straight
through to the float ("latent") weights ``W``; the actors act with the same ``Q(W)``, so
``mu == pi`` exactly and the policy that is trained is the one that is deployed.
:func:`finetune_ppo` continues PPO from a trained model (e.g. a short QAT fine-tuning of an
fp32 policy, as in QuaRL).

Reproducibility: weights come from a seeded ``torch.Generator``, actions and minibatches
from a seeded ``numpy.random.Generator``, the vector environment is reset with ``seed``.
Rollouts run the actor's forward pass in numpy with the fixed summation order of
:func:`quantlab.book.rl.fixed_order_matmul`, and the mismatch is computed with the same
forward pass for ``mu`` and ``pi``, so fp32 actors give a KL of exactly 0 and ratios of
exactly 1. Gradients go through torch (with one thread), so a run is reproducible on one
machine; across CPUs the last bits differ, and a chaotic task turns that into a different
run: conclusions rest on several seeds.

Block formats (``nvfp4``: blocks of 16, ``mxfp4``: 32) need a layer's input width to be a
multiple of the block; the first layer (input = observation, 3..6 wide) is zero-padded to
one block before rounding, which leaves every block's scale unchanged (zeros do not change
a block's absmax), i.e. a short block with its own scale.

Taught in: chapters/05b_rl_training.ipynb (Quantized actors inside RL training).
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..algorithms._model_utils import fake_quantized_copy
from ..algorithms.qat import FakeQuantLinear, convert, prepare_qat
from ..core.formats import BlockFormat, Format, get_format
from ..core.quantize import fake_quantize
from ..core.validate import check_int, check_positive
from .rl import numpy_logits, policy_scheme

__all__ = [
    "ENV_DEFAULTS",
    "ACTOR_FORMATS",
    "ActorCritic",
    "PPOResult",
    "make_vec_env",
    "behaviour_policy",
    "categorical_log_prob",
    "gaussian_log_prob",
    "mismatch",
    "truncated_weights",
    "train_ppo",
    "finetune_ppo",
    "evaluate_actor",
    "weight_spread",
]

ACTOR_FORMATS: tuple[str, ...] = ("fp32", "int8", "fp8_e4m3", "int4", "nvfp4", "mxfp4", "int2")
"""Formats the sweep gives the actors (``fp32``: the learner's own weights)."""

ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        num_envs=8, steps=128, updates=40, epochs=4, minibatches=4, lr=1e-3, gamma=0.99, lam=0.95, reward_scale=1.0
    ),
    "Acrobot-v1": dict(
        num_envs=8, steps=128, updates=40, epochs=4, minibatches=4, lr=1e-3, gamma=0.99, lam=0.95, reward_scale=1.0
    ),
    "Pendulum-v1": dict(
        num_envs=8, steps=200, updates=60, epochs=10, minibatches=8, lr=1e-3, gamma=0.95, lam=0.95, reward_scale=0.1
    ),
}
"""Per-environment PPO settings (small budgets that learn in seconds to a minute on one core).
``reward_scale`` multiplies the rewards the learner sees (Pendulum's are -16..0 a step);
reported returns are always the environment's own."""

IS_CORRECTIONS: tuple[Optional[str], ...] = (None, "truncated")


# --------------------------------------------------------------------------- environments


def make_vec_env(env_id: str, num_envs: int) -> Any:
    """``gym.make_vec(env_id, num_envs, vectorization_mode="sync")`` with same-step autoreset.

    With ``AutoresetMode.SAME_STEP`` the observation returned at an episode's last step is
    already the next episode's first; the last one is in ``info["final_obs"]``.

    Raises:
        ValueError: an environment other than those of :data:`ENV_DEFAULTS`.
    """
    import gymnasium as gym

    if env_id not in ENV_DEFAULTS:
        raise ValueError(f"env_id must be one of {sorted(ENV_DEFAULTS)}, got {env_id!r}")
    num_envs = check_int(num_envs, "num_envs", minimum=1)
    return gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )


# --------------------------------------------------------------------------- the actor-critic


def _mlp(sizes: list[int], g: torch.Generator, last_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        lin = nn.Linear(n_in, n_out)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(n_in)  # PyTorch's default range, from a private generator
            lin.weight.uniform_(-bound, bound, generator=g)
            lin.bias.uniform_(-bound, bound, generator=g)
            if i == len(sizes) - 2:
                lin.weight.mul_(last_gain)
                lin.bias.zero_()
        layers += [lin, nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class ActorCritic(nn.Module):
    """A policy MLP ``actor`` (``obs -> hidden -> hidden -> logits or mean``, tanh) and a
    separate critic MLP ``critic`` (``obs -> hidden -> hidden -> 1``); for continuous actions
    also ``log_std``, one state-independent parameter per action dimension.

    Args:
        obs_dim: observation size.
        act_dim: number of actions (discrete) or action dimensions (continuous).
        discrete: categorical (True) or Gaussian (False) policy.
        hidden: width of the hidden layers.
        seed: seeds the initial weights (the global RNG is untouched).
        log_std_init: initial ``log_std`` (continuous only).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, discrete: bool, hidden: int = 64, seed: int = 0, log_std_init: float = 0.0
    ) -> None:
        super().__init__()
        obs_dim, act_dim = check_int(obs_dim, "obs_dim", minimum=1), check_int(act_dim, "act_dim", minimum=1)
        hidden, seed = check_int(hidden, "hidden", minimum=1), check_int(seed, "seed", minimum=0)
        if not isinstance(discrete, bool):
            raise TypeError(f"discrete must be True or False, got {discrete!r}")
        g = torch.Generator().manual_seed(seed)
        self.discrete = discrete
        self.actor = _mlp([obs_dim, hidden, hidden, act_dim], g, last_gain=0.01)
        self.critic = _mlp([obs_dim, hidden, hidden, 1], g, last_gain=1.0)
        self.log_std = None if discrete else nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """``V(s)``, shape ``(batch,)``."""
        return self.critic(obs).squeeze(-1)

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log pi(a|s)`` and the entropy ``H(pi(.|s))``, both ``(batch,)``.

        Categorical: ``log_softmax(logits)[a]``, ``H = -sum_a p_a log p_a``.
        Gaussian: ``sum_j -(a_j - m_j)^2 / (2 s_j^2) - log s_j - log(2 pi)/2``,
        ``H = sum_j log s_j + (1 + log(2 pi))/2``.
        """
        out = self.actor(obs)
        if self.discrete:
            logp_all = torch.log_softmax(out, dim=-1)
            logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            return logp, -(logp_all.exp() * logp_all).sum(-1)
        log_std = self.log_std.expand_as(out)
        z = (actions - out) / log_std.exp()
        logp = (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return logp, (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)


def categorical_log_prob(logits: np.ndarray, actions: Optional[np.ndarray] = None) -> np.ndarray:
    """``log_softmax(logits)`` in float64, ``(batch, n)``; with ``actions``, ``log p(a)``, ``(batch,)``."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return logp if actions is None else np.take_along_axis(logp, np.asarray(actions)[:, None], -1)[:, 0]


def gaussian_log_prob(mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``log N(a; m, diag(exp(2 log_std)))`` in float64, summed over action dimensions: ``(batch,)``."""
    m, a = np.asarray(mean, np.float64), np.asarray(actions, np.float64)
    ls = np.broadcast_to(np.asarray(log_std, np.float64), m.shape)
    return (-0.5 * ((a - m) / np.exp(ls)) ** 2 - ls - 0.5 * math.log(2 * math.pi)).sum(-1)


# --------------------------------------------------------------------------- the behaviour policy


def _check_format(fmt: Any, name: str = "actor_format") -> Format:
    if not isinstance(fmt, (str, Format)):
        raise TypeError(f"{name} must be a format name or Format, got {type(fmt).__name__} {fmt!r}")
    try:
        return get_format(fmt)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{name} must be a known format such as {list(ACTOR_FORMATS)}, got {fmt!r}") from e


def behaviour_policy(model: ActorCritic, fmt: Any = "fp32", granularity: str = "channel") -> ActorCritic:
    """A copy of ``model`` whose *actor* Linear weights are rounded to ``fmt`` (the actors' ``mu``).

    ``"fp32"`` is an exact copy. Scaled element formats (int8, fp8_e4m3, int4, int2) use one
    scale per output row (``granularity="channel"``) or per layer (``"tensor"``); block formats
    (nvfp4, mxfp4) their own blocks along the input axis, a layer narrower than a block padded
    with zeros. The critic and ``log_std`` stay fp32: actors only need the policy's outputs.

    Raises:
        TypeError: ``model`` is not an :class:`ActorCritic`, ``fmt`` not a format.
        ValueError: an unknown format or granularity.
    """
    if not isinstance(model, ActorCritic):
        raise TypeError(f"model must be an ActorCritic, got {type(model).__name__}")
    f = _check_format(fmt, "fmt")
    scheme = policy_scheme(f, granularity)
    if f.name == "fp32":
        return copy.deepcopy(model)
    block = f.block_size if isinstance(f, BlockFormat) else None
    kw = scheme.qparams_kwargs()
    fits = {
        f"actor.{n}"
        for n, m in model.actor.named_children()
        if isinstance(m, nn.Linear) and (block is None or m.in_features % block == 0)
    }
    out = fake_quantized_copy(model, f, layers=lambda n, m: n in fits, **kw)
    if block is not None:  # layers narrower than a block: zero-pad the input axis, round, cut
        with torch.no_grad():
            for n, m in out.actor.named_children():
                if isinstance(m, nn.Linear) and f"actor.{n}" not in fits:
                    w = m.weight
                    pad = torch.zeros(w.shape[0], -w.shape[1] % block, dtype=w.dtype)
                    m.weight.copy_(fake_quantize(torch.cat([w, pad], 1), f)[:, : w.shape[1]])
    return out


def _distribution(model: ActorCritic, out: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(log-probabilities of all actions, None) or (mean, log_std) from the actor's outputs."""
    if model.discrete:
        return categorical_log_prob(out), None
    return out.astype(np.float64), model.log_std.detach().numpy().astype(np.float64)


def mismatch(
    behaviour: tuple[np.ndarray, Optional[np.ndarray]], target: tuple[np.ndarray, Optional[np.ndarray]], discrete: bool
) -> np.ndarray:
    """``KL(mu || pi)`` per state, float64 ``(batch,)``, from :func:`_distribution` pairs.

    Discrete: ``sum_a mu_a (log mu_a - log pi_a)``. Gaussian (diagonal):
    ``sum_j log(s_pi/s_mu) + (s_mu^2 + (m_mu - m_pi)^2) / (2 s_pi^2) - 1/2``.
    """
    if discrete:
        lm, lp = behaviour[0], target[0]
        return (np.exp(lm) * (lm - lp)).sum(-1)
    (mm, lsm), (mp, lsp) = behaviour, target
    lsm, lsp = np.broadcast_to(lsm, mm.shape), np.broadcast_to(lsp, mp.shape)
    return (lsp - lsm + (np.exp(2 * lsm) + (mm - mp) ** 2) / (2 * np.exp(2 * lsp)) - 0.5).sum(-1)


def truncated_weights(rho: np.ndarray, c: float) -> np.ndarray:
    """V-trace's truncated importance weights ``min(rho, c)`` (``rho = pi/mu`` per sample)."""
    c = check_positive(c, "c")
    return np.minimum(np.asarray(rho, dtype=np.float64), c)


# --------------------------------------------------------------------------- training


@dataclass
class PPOResult:
    """What :func:`train_ppo` returns.

    Attributes:
        model: the learner's fp32 actor-critic after training.
        history: per update (lists of equal length): ``return`` (mean return of the episodes
            that ended during the update's rollout, the previous value when none ended),
            ``entropy`` (mean ``H(pi)`` on the visited states, before the update),
            ``behaviour_entropy`` (the same for ``mu``), ``kl`` (mean ``KL(mu || pi)``),
            ``ratio_mean``, ``ratio_std``, ``ratio_max`` (of ``rho = pi/mu`` on the sampled
            actions), ``ratio_clipped`` (share with ``|rho - 1| > eps``: samples PPO's clip
            range already excludes when ``mu`` stands in for ``pi``), ``ratio_truncated``
            (share with ``rho > c``), ``episodes`` (how many ended).
        config: the settings of the run.
    """

    model: ActorCritic
    history: dict[str, list[float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _sample(model: ActorCritic, out: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Actions drawn from the actor outputs ``out`` and their log-probabilities (float64)."""
    if model.discrete:
        logp = categorical_log_prob(out)
        u = rng.random(len(out))[:, None]  # inverse CDF: the first action whose CDF exceeds u
        a = np.minimum((np.cumsum(np.exp(logp), -1) < u).sum(-1), out.shape[1] - 1)
        return a, np.take_along_axis(logp, a[:, None], -1)[:, 0]
    log_std = model.log_std.detach().numpy().astype(np.float64)
    a = out.astype(np.float64) + np.exp(log_std) * rng.standard_normal(out.shape)
    return a.astype(np.float32), gaussian_log_prob(out, log_std, a.astype(np.float32))


def _entropy(model: ActorCritic, dist: tuple[np.ndarray, Optional[np.ndarray]]) -> float:
    if model.discrete:
        return float(-(np.exp(dist[0]) * dist[0]).sum(-1).mean())
    return float((dist[1] + 0.5 * (1 + math.log(2 * math.pi))).sum())


def _check_qat_format(fmt: Any) -> Optional[Format]:
    if fmt is None:
        return None
    f = _check_format(fmt, "qat_format")
    if isinstance(f, BlockFormat):
        raise ValueError(
            f"qat_format must be an element format with one scale per row or tensor "
            f"(int2..int8, fp8_e4m3, ...), not the block format {f.name!r}"
        )
    return f


def train_ppo(
    env_id: str = "CartPole-v1",
    *,
    actor_format: Any = None,
    qat_format: Any = None,
    is_correction: Optional[str] = None,
    is_clip: float = 1.0,
    seed: int = 0,
    updates: Optional[int] = None,
    num_envs: Optional[int] = None,
    steps: Optional[int] = None,
    epochs: Optional[int] = None,
    minibatches: Optional[int] = None,
    lr: Optional[float] = None,
    gamma: Optional[float] = None,
    lam: Optional[float] = None,
    reward_scale: Optional[float] = None,
    clip_eps: float = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
    max_grad_norm: float = 0.5,
    hidden: int = 64,
    granularity: str = "channel",
    init_model: Optional[ActorCritic] = None,
) -> PPOResult:
    """Train an actor-critic with PPO; the rollouts come from ``behaviour_policy(model, actor_format)``.

    Each update: (1) refresh ``mu`` from the learner's weights, (2) run ``num_envs``
    environments for ``steps`` steps with actions drawn from ``mu``, (3) measure ``H(pi)``,
    ``H(mu)``, ``KL(mu || pi)`` and ``rho = pi/mu`` on those samples, (4) GAE, (5)
    ``epochs`` passes of ``minibatches`` Adam steps on the clipped loss (see the module
    docstring for the loss and ``is_correction``). Settings left at None take the
    environment's :data:`ENV_DEFAULTS`.

    Args:
        env_id: ``"CartPole-v1"``, ``"Acrobot-v1"`` or ``"Pendulum-v1"``.
        actor_format: the actors' format, e.g. ``"fp32"``, ``"int8"``, ``"nvfp4"``, ``"int2"``;
            None means ``qat_format`` with QAT, else ``"fp32"``.
        qat_format: None (the learner computes in fp32), or an element format (``"int8"``,
            ``"int4"``, ``"int2"``, ...): quantization-aware training, the learner's actor
            layers compute with ``Q(W)`` (:class:`quantlab.qat.FakeQuantLinear`, straight-through
            gradients) and the actors act with the same ``Q(W)``. The returned model holds the
            latent float weights; ``behaviour_policy(model, qat_format, granularity)`` is the
            trained quantized policy.
        is_correction: None (use ``mu``'s log-probabilities as the old policy's) or
            ``"truncated"`` (weights ``min(pi/mu, is_clip)`` on the loss).
        is_clip: the truncation level ``c`` (> 0; 1 or 2 in V-trace).
        seed: seeds weights, actions, minibatches and the environments.
        granularity: scales of element formats, ``"channel"`` or ``"tensor"``.
        init_model: start from a copy of this :class:`ActorCritic` (weights only; a fresh
            optimizer) instead of new weights; ``hidden`` is then the model's. See
            :func:`finetune_ppo`.
        (the rest: the usual PPO settings; ``clip_eps`` is PPO's epsilon.)

    Returns:
        A :class:`PPOResult`.

    Raises:
        TypeError: a setting of the wrong type (named in the message).
        ValueError: an unknown environment, format or correction, a setting out of range,
            ``actor_format`` other than ``qat_format`` with QAT, a block ``qat_format``, or an
            ``init_model`` whose sizes do not fit the environment.
    """
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string, got {type(env_id).__name__}")
    if env_id not in ENV_DEFAULTS:
        raise ValueError(f"env_id must be one of {sorted(ENV_DEFAULTS)}, got {env_id!r}")
    qat = _check_qat_format(qat_format)
    fmt = _check_format(actor_format if actor_format is not None else (qat.name if qat is not None else "fp32"))
    if qat is not None and fmt.name != qat.name:
        raise ValueError(f"actor_format must be qat_format ({qat.name!r}) or None with QAT, got {actor_format!r}")
    if init_model is not None and not isinstance(init_model, ActorCritic):
        raise TypeError(f"init_model must be an ActorCritic or None, got {type(init_model).__name__}")
    if is_correction not in IS_CORRECTIONS:
        raise ValueError(f"is_correction must be None or 'truncated', got {is_correction!r}")
    if granularity not in ("tensor", "channel"):
        raise ValueError(f"granularity must be 'tensor' or 'channel', got {granularity!r}")
    d = dict(ENV_DEFAULTS[env_id])
    given = dict(
        updates=updates,
        num_envs=num_envs,
        steps=steps,
        epochs=epochs,
        minibatches=minibatches,
        lr=lr,
        gamma=gamma,
        lam=lam,
        reward_scale=reward_scale,
    )
    d.update({k: v for k, v in given.items() if v is not None})
    for k in ("updates", "num_envs", "steps", "epochs", "minibatches"):
        d[k] = check_int(d[k], k, minimum=1)
    for k in ("lr", "reward_scale"):
        d[k] = check_positive(d[k], k)
    for k, v in (("gamma", d["gamma"]), ("lam", d["lam"]), ("clip_eps", clip_eps)):
        if check_positive(v, k) > 1:
            raise ValueError(f"{k} must be in (0, 1], got {v!r}")
    is_clip, vf_coef, max_grad_norm = (
        check_positive(is_clip, "is_clip"),
        check_positive(vf_coef, "vf_coef"),
        check_positive(max_grad_norm, "max_grad_norm"),
    )
    if isinstance(ent_coef, bool) or not isinstance(ent_coef, (int, float)) or ent_coef < 0:
        raise (TypeError if not isinstance(ent_coef, (int, float)) or isinstance(ent_coef, bool) else ValueError)(
            f"ent_coef must be a real number >= 0, got {ent_coef!r}"
        )
    seed, hidden = check_int(seed, "seed", minimum=0), check_int(hidden, "hidden", minimum=1)
    if init_model is not None:
        hidden = init_model.actor[0].out_features
    batch = d["num_envs"] * d["steps"]
    if d["minibatches"] > batch:
        raise ValueError(f"minibatches must be <= num_envs * steps = {batch}, got {d['minibatches']}")
    config = dict(
        env_id=env_id,
        actor_format=fmt.name,
        qat_format=None if qat is None else qat.name,
        is_correction=is_correction,
        is_clip=is_clip,
        seed=seed,
        clip_eps=clip_eps,
        vf_coef=vf_coef,
        ent_coef=float(ent_coef),
        max_grad_norm=max_grad_norm,
        hidden=hidden,
        granularity=granularity,
        finetune=init_model is not None,
        **d,
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    envs = make_vec_env(env_id, d["num_envs"])
    try:
        if init_model is not None:
            _check_fits(init_model, envs)
        with torch.random.fork_rng(devices=[]):  # new layers draw from the global RNG: restore it
            return _train(envs, config, init_model)
    finally:
        envs.close()
        torch.set_num_threads(threads)


def finetune_ppo(model: ActorCritic, env_id: str, *, updates: int = 10, **kwargs: Any) -> PPOResult:
    """Continue PPO for ``updates`` updates from a copy of a trained ``model`` (fresh optimizer).

    ``finetune_ppo(model, env, qat_format="int4")`` is a short quantization-aware fine-tuning
    of a float policy (QuaRL's QAT recipe); with ``qat_format=None`` (the default) it is the
    float control with the same budget. ``model`` itself is not modified.

    Args:
        model: a trained :class:`ActorCritic` whose sizes fit ``env_id``.
        env_id: the environment it was trained on.
        updates: PPO updates (>= 1).
        **kwargs: any other setting of :func:`train_ppo` (``qat_format``, ``seed``, ``lr``, ...),
            except ``hidden`` (the model's) and ``init_model``.

    Returns:
        A :class:`PPOResult` whose ``model`` holds the fine-tuned (latent) weights.

    Raises:
        TypeError: ``model`` is not an :class:`ActorCritic`, or a setting of the wrong type.
        ValueError: ``model`` does not fit the environment, or a setting :func:`train_ppo`
            rejects.
    """
    if not isinstance(model, ActorCritic):
        raise TypeError(f"model must be an ActorCritic, got {type(model).__name__}")
    for k in ("hidden", "init_model"):
        if k in kwargs:
            raise TypeError(f"finetune_ppo() takes no {k!r} argument: the model sets it")
    return train_ppo(env_id, updates=updates, init_model=model, **kwargs)


def _check_fits(model: ActorCritic, envs: Any) -> None:
    space = envs.single_action_space
    discrete = hasattr(space, "n")
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(space.n) if discrete else int(np.prod(space.shape))
    first, last = model.actor[0], model.actor[len(model.actor) - 1]
    got = (first.in_features, last.out_features, model.discrete)
    if got != (obs_dim, act_dim, discrete):
        raise ValueError(
            f"model must fit the environment (observations, actions, discrete) = "
            f"{(obs_dim, act_dim, discrete)}, got {got}"
        )


def _latent(actor: nn.Sequential) -> nn.Sequential:
    """The actor with each FakeQuantLinear replaced by a plain Linear holding its float weights."""
    out = copy.deepcopy(actor)
    for name, m in out.named_children():
        if isinstance(m, FakeQuantLinear):
            lin = nn.Linear(m.in_features, m.out_features, m.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(m.weight)
                if m.bias is not None:
                    lin.bias.copy_(m.bias)
            setattr(out, name, lin)
    return out


def _train(envs: Any, cfg: dict[str, Any], init: Optional[ActorCritic] = None) -> PPOResult:
    space = envs.single_action_space
    discrete = hasattr(space, "n")
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(space.n) if discrete else int(np.prod(space.shape))
    if init is None:
        model = ActorCritic(obs_dim, act_dim, discrete, cfg["hidden"], cfg["seed"])
    else:
        model = copy.deepcopy(init)
        model.actor = _latent(model.actor)
    qat = cfg["qat_format"]
    if qat is not None:  # the learner's actor computes with Q(W); gradients pass straight through
        model.actor = prepare_qat(model.actor, policy_scheme(qat, cfg["granularity"]))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], eps=1e-5)
    rng = np.random.default_rng(cfg["seed"])
    N, T, gamma, lam, eps = cfg["num_envs"], cfg["steps"], cfg["gamma"], cfg["lam"], cfg["clip_eps"]
    obs, _ = envs.reset(seed=cfg["seed"])
    running, last_return = np.zeros(N), float("nan")
    keys = (
        "return",
        "entropy",
        "behaviour_entropy",
        "kl",
        "ratio_mean",
        "ratio_std",
        "ratio_max",
        "ratio_clipped",
        "ratio_truncated",
        "episodes",
    )
    hist: dict[str, list[float]] = {k: [] for k in keys}
    low, high = (None, None) if discrete else (space.low, space.high)

    for _ in range(cfg["updates"]):
        if qat is None:
            mu = behaviour_policy(model, cfg["actor_format"], cfg["granularity"])
            pi_fn = numpy_logits(model.actor)
        else:  # mu is the learner's own quantized policy: Q(W) as the FakeQuantLinear layers compute it
            mu = copy.deepcopy(model)
            mu.actor = convert(model.actor)
            pi_fn = numpy_logits(mu.actor)
        mu_fn, v_fn = numpy_logits(mu.actor), numpy_logits(model.critic)
        b_obs = np.zeros((T, N, obs_dim), np.float32)
        b_act = np.zeros((T, N) if discrete else (T, N, act_dim), np.int64 if discrete else np.float32)
        b_out = np.zeros((T, N, act_dim), np.float32)
        b_logp_mu, b_rew, b_done = np.zeros((T, N)), np.zeros((T, N)), np.zeros((T, N))
        finished: list[float] = []
        for t in range(T):
            out = mu_fn(obs)
            act, logp = _sample(mu, out, rng)
            b_obs[t], b_act[t], b_out[t], b_logp_mu[t] = obs, act, out, logp
            obs, rew, term, trunc, info = envs.step(act if discrete else np.clip(act, low, high))
            running += rew
            done = term | trunc
            r = rew * cfg["reward_scale"]
            boot = trunc & ~term  # a time limit: bootstrap from the final observation's value
            if boot.any():
                final = np.stack([info["final_obs"][i] for i in np.flatnonzero(boot)]).astype(np.float32)
                r[boot] += gamma * v_fn(final)[:, 0]
            b_rew[t], b_done[t] = r, done
            for i in np.flatnonzero(done):
                finished.append(float(running[i]))
                running[i] = 0.0
        # ---- mismatch and entropy on the visited states (same numpy forward for mu and pi)
        flat_obs = b_obs.reshape(T * N, obs_dim)
        flat_act = b_act.reshape(T * N, *b_act.shape[2:])
        mu_dist = _distribution(mu, b_out.reshape(T * N, act_dim))
        pi_dist = _distribution(model, pi_fn(flat_obs))
        logp_mu = b_logp_mu.reshape(-1)
        logp_pi = (
            np.take_along_axis(pi_dist[0], flat_act[:, None], -1)[:, 0]
            if discrete
            else gaussian_log_prob(pi_dist[0], pi_dist[1], flat_act)
        )
        rho = np.exp(logp_pi - logp_mu)
        if finished:
            last_return = float(np.mean(finished))
        rec = dict(
            zip(
                keys,
                (
                    last_return,
                    _entropy(model, pi_dist),
                    _entropy(mu, mu_dist),
                    float(mismatch(mu_dist, pi_dist, discrete).mean()),
                    float(rho.mean()),
                    float(rho.std()),
                    float(rho.max()),
                    float((np.abs(rho - 1) > eps).mean()),
                    float((rho > cfg["is_clip"]).mean()),
                    float(len(finished)),
                ),
            )
        )
        for k in keys:
            hist[k].append(rec[k])
        # ---- GAE with the critic's values (fp32)
        values = v_fn(flat_obs)[:, 0].reshape(T, N).astype(np.float64)
        next_v = v_fn(obs)[:, 0].astype(np.float64)
        adv = np.zeros((T, N))
        gae = np.zeros(N)
        for t in reversed(range(T)):
            nv = next_v if t == T - 1 else values[t + 1]
            delta = b_rew[t] + gamma * nv * (1 - b_done[t]) - values[t]
            gae = delta + gamma * lam * (1 - b_done[t]) * gae
            adv[t] = gae
        ret = (adv + values).reshape(-1)
        adv = adv.reshape(-1)
        if cfg["is_correction"] is None:
            old_logp, weight = logp_mu, np.ones_like(rho)
        else:
            old_logp, weight = logp_pi, truncated_weights(rho, cfg["is_clip"])
        # ---- PPO epochs
        t_obs, t_act = torch.from_numpy(flat_obs), torch.from_numpy(flat_act)
        t_old, t_w = torch.from_numpy(old_logp).float(), torch.from_numpy(weight).float()
        t_adv, t_ret = torch.from_numpy(adv).float(), torch.from_numpy(ret).float()
        size = T * N // cfg["minibatches"]
        for _ in range(cfg["epochs"]):
            perm = rng.permutation(T * N)
            for k in range(cfg["minibatches"]):
                idx = torch.from_numpy(perm[k * size : (k + 1) * size])
                logp, ent = model.log_prob_entropy(t_obs[idx], t_act[idx])
                a = t_adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8)
                ratio = (logp - t_old[idx]).exp()
                surr = torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)
                v_loss = 0.5 * (model.value(t_obs[idx]) - t_ret[idx]).pow(2).mean()
                loss = -(t_w[idx] * surr).mean() + cfg["vf_coef"] * v_loss - cfg["ent_coef"] * ent.mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg["max_grad_norm"])
                opt.step()
    model.actor = _latent(model.actor)
    return PPOResult(model=model, history=hist, config=cfg)


# --------------------------------------------------------------------------- evaluation


def weight_spread(model: ActorCritic) -> list[dict[str, float]]:
    """How wide each actor Linear weight is spread relative to its typical size, per layer.

    For a weight ``W`` (float64): ``range_over_std = max|W| / std(W)`` (one scale per tensor
    must cover ``max|W|``, so a large ratio leaves few levels for the bulk of the weights),
    ``row_range_over_std`` = the mean over rows ``r`` of ``max|W_r| / std(W_r)`` (the same for
    per-row scales, as ``granularity="channel"`` uses), ``max_abs`` and ``std`` (standard
    deviations with Bessel's correction).

    Raises:
        TypeError: ``model`` is not an :class:`ActorCritic`.
    """
    if not isinstance(model, ActorCritic):
        raise TypeError(f"model must be an ActorCritic, got {type(model).__name__}")
    out = []
    for m in model.actor:
        if isinstance(m, nn.Linear):
            w = m.weight.detach().double()
            row = (w.abs().amax(1) / w.std(1).clamp_min(1e-30)).mean()
            out.append(
                dict(
                    range_over_std=float(w.abs().max() / w.std()),
                    row_range_over_std=float(row),
                    max_abs=float(w.abs().max()),
                    std=float(w.std()),
                )
            )
    return out


def evaluate_actor(
    model: ActorCritic,
    env_id: str,
    actor_format: Any = "fp32",
    episodes: int = 8,
    seed: int = 10_000,
    granularity: str = "channel",
) -> np.ndarray:
    """Returns of ``episodes`` episodes with the deterministic action (argmax / mean) of
    ``behaviour_policy(model, actor_format)``, one environment per episode, reset with ``seed``.

    Raises:
        TypeError, ValueError: see :func:`behaviour_policy` and :func:`make_vec_env`.
    """
    episodes, seed = check_int(episodes, "episodes", minimum=1), check_int(seed, "seed", minimum=0)
    mu = behaviour_policy(model, actor_format, granularity)
    fn = numpy_logits(mu.actor)
    envs = make_vec_env(env_id, episodes)
    space = envs.single_action_space
    try:
        obs, _ = envs.reset(seed=seed)
        total, alive = np.zeros(episodes), np.ones(episodes, bool)
        while alive.any():
            out = fn(obs)
            act = out.argmax(-1) if model.discrete else np.clip(out, space.low, space.high)
            obs, rew, term, trunc, _ = envs.step(act)
            total += rew * alive
            alive &= ~(term | trunc)
        return total
    finally:
        envs.close()
