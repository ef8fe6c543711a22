"""PPO with quantized actors (quantlab.book.rl_train), QAT fine-tuning, the speed of acting
(quantlab.book.rl_speed) and the sweep script with its stored results."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from quantlab.qat import FakeQuantLinear, prepare_qat

from quantlab.book.rl import policy_scheme
from quantlab.book.rl_speed import SPEED_VARIANTS, acting_speed, actor_runners
from quantlab.book.rl_train import (
    ActorCritic,
    behaviour_policy,
    categorical_log_prob,
    finetune_ppo,
    gaussian_log_prob,
    train_ppo,
    truncated_weights,
    weight_spread,
)

pytestmark = pytest.mark.slow  # trains PPO agents: make test runs it, make unit does not

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(updates=2, num_envs=2, steps=32, epochs=1, minibatches=2)
STORED = ROOT / "benchmarks" / "rl_experiments.json"


def _script():
    spec = importlib.util.spec_from_file_location("rl_experiments", ROOT / "scripts" / "rl_experiments.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    np.testing.assert_allclose(
        gaussian_log_prob(mean, m.log_std.detach().numpy(), act.numpy()), logp.detach().numpy(), rtol=1e-5, atol=1e-5
    )
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


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
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
        (dict(qat_format="nvfp4"), ValueError, "qat_format"),
        (dict(qat_format="int99"), ValueError, "qat_format"),
        (dict(qat_format=4), TypeError, "qat_format"),
        (dict(qat_format="int4", actor_format="int8"), ValueError, "actor_format"),
        (dict(init_model="policy"), TypeError, "init_model"),
        (dict(init_model=ActorCritic(3, 1, discrete=False)), ValueError, "model"),
    ],
)
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


# --------------------------------------------------------------------------- QAT and fine-tuning


@pytest.mark.parametrize("fmt", ["int8", "int4", "int2"])
def test_qat_actors_act_with_the_learners_rounded_policy(fmt):
    res = train_ppo("CartPole-v1", qat_format=fmt, seed=0, **TINY)
    h = res.history
    assert res.config["actor_format"] == res.config["qat_format"] == fmt
    assert h["kl"] == [0.0, 0.0] and h["ratio_max"] == [1.0, 1.0]  # mu is pi: the same Q(W)
    # the returned model holds plain Linear layers with the latent (float) weights
    assert all(type(m) is torch.nn.Linear for m in res.model.actor if isinstance(m, torch.nn.Linear))
    qat = prepare_qat(res.model.actor, policy_scheme(fmt, "channel"))  # the RL pages' recipe
    mu = behaviour_policy(res.model, fmt)
    for a, b in zip(
        [m for m in qat if isinstance(m, FakeQuantLinear)], [m for m in mu.actor if isinstance(m, torch.nn.Linear)]
    ):
        assert torch.equal(a.quantized_weight(), b.weight)


def test_qat_learner_gets_straight_through_gradients():
    # the learner's loss is computed with Q(W); its gradient reaches the latent W unchanged
    m = ActorCritic(4, 2, discrete=True, seed=3)
    obs, act = torch.randn(32, 4), torch.randint(0, 2, (32,))
    learner = ActorCritic(4, 2, discrete=True, seed=3)
    learner.actor = prepare_qat(learner.actor, policy_scheme("int3", "channel"))
    rounded = behaviour_policy(m, "int3")
    for net in (learner, rounded):
        logp, ent = net.log_prob_entropy(obs, act)
        (-(logp.mean()) - 0.1 * ent.mean()).backward()
    for a, b in zip(learner.actor.parameters(), rounded.actor.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_finetune_continues_from_a_copy_of_the_model():
    base = train_ppo("CartPole-v1", seed=1, **TINY).model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tiny = {k: v for k, v in TINY.items() if k != "updates"}
    a = finetune_ppo(base, "CartPole-v1", updates=2, seed=1, **tiny)
    b = finetune_ppo(base, "CartPole-v1", updates=2, seed=1, **tiny)
    q = finetune_ppo(base, "CartPole-v1", updates=2, seed=1, qat_format="int2", **tiny)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())  # untouched
    assert a.config["finetune"] and a.config["hidden"] == 64 and q.config["actor_format"] == "int2"
    for k in before:  # reproducible, and the weights moved
        assert torch.equal(a.model.state_dict()[k], b.model.state_dict()[k])
    assert not torch.equal(a.model.actor[0].weight, base.actor[0].weight)
    assert not torch.equal(q.model.actor[0].weight, a.model.actor[0].weight)
    assert max(a.history["kl"]) == 0.0 and max(q.history["kl"]) == 0.0


def test_finetune_argument_errors():
    with pytest.raises(TypeError, match="model"):
        finetune_ppo(torch.nn.Linear(4, 2), "CartPole-v1")
    with pytest.raises(ValueError, match="model"):
        finetune_ppo(ActorCritic(4, 3, discrete=True), "CartPole-v1")
    with pytest.raises(TypeError, match="hidden"):
        finetune_ppo(ActorCritic(4, 2, discrete=True), "CartPole-v1", hidden=32)
    with pytest.raises(ValueError, match="updates"):
        finetune_ppo(ActorCritic(4, 2, discrete=True), "CartPole-v1", updates=0)


def test_weight_spread_per_layer():
    m = ActorCritic(4, 2, discrete=True, seed=0)
    with torch.no_grad():
        m.actor[2].weight.zero_()
        m.actor[2].weight[:, 0] = torch.tensor([1.0, -1.0] * 32)  # one column of +-1
        m.actor[2].weight[0, 1] = 4.0
    s = weight_spread(m)
    assert len(s) == 3
    w = m.actor[2].weight.detach().double().numpy()
    assert math.isclose(s[1]["range_over_std"], 4.0 / w.std(ddof=1), rel_tol=1e-12)
    assert math.isclose(s[1]["max_abs"], 4.0) and math.isclose(s[1]["std"], w.std(ddof=1), rel_tol=1e-12)
    rows = np.abs(w).max(1) / w.std(1, ddof=1)
    assert math.isclose(s[1]["row_range_over_std"], rows.mean(), rel_tol=1e-12)
    with pytest.raises(TypeError, match="model"):
        weight_spread(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------- speed of acting (correctness only)


def test_actor_runners_compute_the_actor(tmp_path):
    m = ActorCritic(4, 2, discrete=True, hidden=64, seed=0)
    with torch.no_grad():
        m.actor[4].weight.mul_(100)  # logits of order 1, as a trained policy's
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    runners = actor_runners(m.actor, tmp_path)
    assert list(runners) == list(SPEED_VARIANTS)
    ref = runners["fp32 torch"](x)
    np.testing.assert_allclose(ref, m.actor(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(runners["fp32 ORT"](x), ref, rtol=1e-5, atol=1e-6)
    q = behaviour_policy(m, "int8").actor(torch.from_numpy(x)).detach().numpy()
    y = runners["int8 ORT"](x)  # int8 weights per row (as behaviour_policy) and int8 activations
    assert y.shape == ref.shape and np.linalg.norm(y - q) / np.linalg.norm(q) < 0.05
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_acting_speed_rows():
    rows = acting_speed("Pendulum-v1", hidden=[8], batches=[1, 3], repeats=1, transitions=4)
    assert len(rows) == 2 * len(SPEED_VARIANTS) * 2
    assert {(r["batch"], r["variant"], r["mode"]) for r in rows} == {
        (b, v, m) for b in (1, 3) for v in SPEED_VARIANTS for m in ("forward", "forward+env")
    }
    for r in rows:
        assert r["calls"] == max(1, 4 // r["batch"]) and r["seconds"] > 0
        assert math.isclose(r["steps_per_s"], r["batch"] * r["calls"] / r["seconds"])
        assert math.isclose(r["us_per_step"], r["seconds"] / r["calls"] * 1e6)


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(env_id="Breakout"), ValueError, "env_id"),
        (dict(variants=["int4 ORT"]), ValueError, "variants"),
        (dict(variants="fp32 ORT"), TypeError, "variants"),
        (dict(batches=[0]), ValueError, "batches"),
        (dict(hidden=64), TypeError, "hidden"),
        (dict(repeats=0), ValueError, "repeats"),
    ],
)
def test_acting_speed_argument_errors(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        acting_speed(**kwargs)


# --------------------------------------------------------------------------- the sweep script


def test_stored_results_hold_the_full_config():
    """benchmarks/rl_experiments.json (written by `make experiments`) is the script's current
    full configuration, with every job of the sweep and every policy of the study."""
    mod = _script()
    data = json.loads(STORED.read_text())
    assert data["config_hash"] == mod.config_hash(mod.FULL), (
        "benchmarks/rl_experiments.json was made with another configuration: run `make experiments`"
    )
    assert data["config_hash"] == mod.config_hash(data["config"])
    jobs = {(r["env"], r["format"], r["is_correction"], r["seed"]) for r in data["runs"]}
    assert jobs == set(mod._jobs(mod.FULL)) and len(data["runs"]) == len(jobs)
    full = mod.FULL
    assert {(r["env"], r["seed"]) for r in data["study"]} == {(e, s) for e in full["envs"] for s in full["seeds"]}
    for r in data["study"]:
        assert set(r["ptq"]) == set(r["qat"]) == set(r["control"]["ptq"]) == set(full["study"]["widths"])
    sp = full["speed"]
    assert len(data["speed"]["rows"]) == len(sp["hidden"]) * len(sp["batches"]) * len(sp["variants"]) * 2
    assert data["speed"]["cpu"]["model"]


def test_quick_sweep_writes_hashed_results(tmp_path):
    mod = _script()
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
        ("fp32", None),
        ("int2", None),
        ("int2", "truncated"),
    }
    # the PTQ/QAT study of each fp32 policy, and the speed rows
    widths = cfg["study"]["widths"]
    assert [(r["env"], r["seed"]) for r in data["study"]] == [("CartPole-v1", s) for s in cfg["seeds"]]
    for r in data["study"]:
        assert set(r["ptq"]) == set(r["qat"]) == set(r["control"]["ptq"]) == set(widths)
        assert len(r["spread"]) == 3 and all(x["range_over_std"] > 1 for x in r["spread"])
        fp32_run = next(x for x in data["runs"] if x["format"] == "fp32" and x["seed"] == r["seed"])
        assert "_model" not in fp32_run
    assert {(s["env"], s["width"]) for s in data["study_summary"]} == {("CartPole-v1", w) for w in widths}
    sp = cfg["speed"]
    assert len(data["speed"]["rows"]) == len(sp["hidden"]) * len(sp["batches"]) * len(sp["variants"]) * 2
    assert data["meta"]["seconds"] >= data["meta"]["seconds_sweep"] > 0
