"""PPO with quantized actors (quantlab.book.rl_train) and its sweep script."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from quantlab.book.rl_train import (
    ActorCritic,
    behaviour_policy,
    categorical_log_prob,
    gaussian_log_prob,
    train_ppo,
    truncated_weights,
)

pytestmark = pytest.mark.slow  # trains PPO agents: make test runs it, make unit does not

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(updates=2, num_envs=2, steps=32, epochs=1, minibatches=2)


def test_fp32_actors_have_no_mismatch():
    h = train_ppo("CartPole-v1", actor_format="fp32", seed=0, **TINY).history
    assert h["kl"] == [0.0, 0.0]
    assert h["ratio_mean"] == [1.0, 1.0] and h["ratio_max"] == [1.0, 1.0] and h["ratio_std"] == [0.0, 0.0]
    assert h["ratio_clipped"] == [0.0, 0.0]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_int2_actors_differ_from_the_learner(env_id):
    h = train_ppo(env_id, actor_format="int2", seed=0, **TINY).history
    assert all(k > 0 for k in h["kl"])
    assert max(h["ratio_std"]) > 0


@pytest.mark.parametrize("fmt", ["int8", "fp8_e4m3", "int4", "nvfp4", "mxfp4", "int2"])
def test_behaviour_policy_rounds_only_the_actor(fmt):
    m = ActorCritic(3, 1, discrete=False, seed=1)
    mu = behaviour_policy(m, fmt)
    assert not torch.equal(mu.actor[0].weight, m.actor[0].weight)
    assert torch.equal(mu.actor[0].bias, m.actor[0].bias)
    assert all(torch.equal(a, b) for a, b in zip(mu.critic.parameters(), m.critic.parameters()))
    assert torch.equal(mu.log_std, m.log_std)


def test_ppo_improves_cartpole():
    gains = []
    for seed in (0, 1, 2):
        r = train_ppo("CartPole-v1", seed=seed, updates=15).history["return"]
        gains.append(np.mean(r[-5:]) - r[0])
    print("CartPole gains over the first update:", gains)
    assert np.median(gains) > 30, gains


def test_gaussian_log_prob_matches_torch():
    m = ActorCritic(3, 2, discrete=False, seed=0, log_std_init=-0.3)
    obs, act = torch.randn(16, 3), torch.randn(16, 2)
    logp, ent = m.log_prob_entropy(obs, act)
    dist = torch.distributions.Normal(m.actor(obs), m.log_std.exp())
    torch.testing.assert_close(logp, dist.log_prob(act).sum(-1))
    torch.testing.assert_close(ent, dist.entropy().sum(-1))
    mean = m.actor(obs).detach().numpy()
    np.testing.assert_allclose(gaussian_log_prob(mean, m.log_std.detach().numpy(), act.numpy()),
                               logp.detach().numpy(), rtol=1e-5, atol=1e-5)
    # and a Pendulum run goes through (one 200-step episode per environment and update)
    h = train_ppo("Pendulum-v1", seed=0, **dict(TINY, steps=200)).history
    assert all(math.isfinite(x) and x < 0 for x in h["return"])
    assert all(math.isfinite(x) for x in h["entropy"] + h["kl"]) and h["kl"] == [0.0, 0.0]


def test_categorical_log_prob_matches_torch():
    logits = torch.randn(10, 3)
    a = torch.randint(0, 3, (10,))
    ref = torch.distributions.Categorical(logits=logits).log_prob(a)
    np.testing.assert_allclose(categorical_log_prob(logits.numpy(), a.numpy()), ref.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_truncated_weights_are_bounded(c):
    rho = np.exp(np.random.default_rng(0).normal(0, 2, 1000))
    w = truncated_weights(rho, c)
    assert w.max() <= c and np.array_equal(w, np.minimum(rho, c))
    # in training: the share truncated is that of rho > c, and the run completes
    h = train_ppo("CartPole-v1", actor_format="int2", is_correction="truncated", is_clip=c, seed=0, **TINY).history
    assert all(0 <= s <= 1 for s in h["ratio_truncated"])


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(env_id="MountainCar-v0"), ValueError, "env_id"),
    (dict(env_id=3), TypeError, "env_id"),
    (dict(actor_format="int99"), ValueError, "actor_format"),
    (dict(actor_format=8), TypeError, "actor_format"),
    (dict(is_correction="full"), ValueError, "is_correction"),
    (dict(is_clip=0.0), ValueError, "is_clip"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(updates=0), ValueError, "updates"),
    (dict(gamma=1.5), ValueError, "gamma"),
    (dict(granularity="row"), ValueError, "granularity"),
    (dict(ent_coef="x"), TypeError, "ent_coef"),
])
def test_argument_errors(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        train_ppo(**kwargs)


def test_behaviour_policy_argument_errors():
    with pytest.raises(TypeError, match="model"):
        behaviour_policy(torch.nn.Linear(2, 2), "int8")
    with pytest.raises(ValueError, match="fmt"):
        behaviour_policy(ActorCritic(4, 2, True), "nope")
    with pytest.raises(ValueError, match="c"):
        truncated_weights(np.ones(3), -1.0)


def test_quick_sweep_writes_hashed_results(tmp_path):
    spec = importlib.util.spec_from_file_location("rl_experiments", ROOT / "scripts" / "rl_experiments.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--quick", "--workers", "1", "--out", str(tmp_path / "q.json")])
    data = json.loads(out.read_text())
    assert set(data) >= {"config", "config_hash", "runs", "summary", "meta"}
    assert data["config_hash"] == mod.config_hash(data["config"]) == mod.config_hash(mod.QUICK)
    cfg = data["config"]
    assert len(data["runs"]) == len(cfg["seeds"]) * (1 + 2 * (len(cfg["formats"]) - 1))
    for r in data["runs"]:
        assert len(r["history"]["kl"]) == cfg["updates"]
        assert (r["format"] == "fp32") == (max(r["history"]["kl"]) == 0.0)
    assert {(s["format"], s["is_correction"]) for s in data["summary"]} == {
        ("fp32", None), ("int2", None), ("int2", "truncated")}
