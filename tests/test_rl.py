"""Tests for quantlab.rl: the CartPole policy, its training, evaluation and quantization."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import quantlab as ql
from quantlab import rl
from quantlab.book.rl_quantize import linear_layers

ROOT = Path(__file__).resolve().parents[1]


def train_one_thread(**kwargs) -> rl.TrainResult:
    """Training is reproducible on one machine with one thread; the thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return rl.train_reinforce(progress=False, **kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> rl.TrainResult:
    return train_one_thread(seed=0)


def test_training_reaches_target_with_fixed_seed(trained):
    # retraining with the stored policies' recipe still solves the task, on any CPU
    assert trained.solved
    assert trained.eval_returns[-1][1] == rl.MAX_RETURN
    # held-out evaluation seeds: the greedy policy balances the pole to the time limit
    assert rl.evaluate(trained.policy, episodes=20, seed=1000) >= 475.0


def test_training_is_reproducible(trained):
    again = train_one_thread(seed=0)
    assert again.episodes == trained.episodes
    assert again.returns == trained.returns
    for a, b in zip(again.policy.parameters(), trained.policy.parameters()):
        assert torch.equal(a, b)


def test_evaluation_is_deterministic_with_a_seed(trained):
    r1 = rl.episode_returns(trained.policy, episodes=5, seed=3)
    r2 = rl.episode_returns(trained.policy, episodes=5, seed=3)
    assert np.array_equal(r1, r2)
    assert rl.evaluate(trained.policy, 5, seed=3) == float(r1.mean())


def test_untrained_policy_scores_low_and_returns_are_bounded():
    returns = rl.episode_returns(rl.Policy(seed=1), episodes=10, seed=0)
    assert returns.shape == (10,)
    assert np.all(returns >= 1) and np.all(returns <= rl.MAX_RETURN)
    assert returns.mean() < 200


def test_rollout_matches_a_single_environment_step_by_step():
    # an independent reference: the plain (non-vector) CartPole env driven by torch's forward
    policy = rl.Policy(seed=2)
    returns, states = rl.rollout(policy, episodes=1, seed=7, record_states=True)
    env = rl.make_env()
    env.reset()
    env.unwrapped.state = states[0].astype(np.float64)
    total, obs = 0.0, states[0]
    for t in range(len(states)):
        np.testing.assert_allclose(obs, states[t], atol=1e-5)
        with torch.no_grad():
            a = int(policy(torch.from_numpy(np.asarray(obs, dtype=np.float32))[None]).argmax())
        obs, r, term, trunc, _ = env.step(a)
        total += r
        if term or trunc:
            break
    assert total == returns[0]


def test_numpy_forward_matches_torch():
    policy = rl.Policy(seed=3)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    with torch.no_grad():
        ref = policy(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rl.numpy_logits(policy)(x), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(policy.act(x), ref.argmax(-1))


def test_action_agreement_known_answers(trained):
    states = rl.collect_states(trained.policy, episodes=3, seed=0)
    assert states.shape[1] == 4 and states.shape[0] >= 3
    assert rl.action_agreement(trained.policy, trained.policy, states) == 1.0
    flipped = rl.Policy(seed=0)
    flipped.load_state_dict(trained.policy.state_dict())
    with torch.no_grad():  # swap the two output rows: every greedy action flips
        flipped.net[4].weight.copy_(trained.policy.net[4].weight.flip(0))
        flipped.net[4].bias.copy_(trained.policy.net[4].bias.flip(0))
    assert rl.action_agreement(flipped, trained.policy, states) == 0.0
    # a constant policy agrees on exactly the share of states where the reference picks 0
    const = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        const[0].weight.zero_()
        const[0].bias.copy_(torch.tensor([1.0, 0.0]))
    share = float((trained.policy.act(states) == 0).mean())
    assert rl.action_agreement(const, trained.policy, states.numpy()) == pytest.approx(share)


def test_quantize_policy_matches_library_and_keeps_biases(trained):
    p = trained.policy
    q = rl.quantize_policy(p, "int4", "channel")
    for lq, lp in zip(linear_layers(q), linear_layers(p)):
        assert torch.equal(lq.weight, ql.fake_quantize(lp.weight.detach(), "int4", granularity="channel", axis=0))
        assert torch.equal(lq.bias, lp.bias)
    assert torch.equal(linear_layers(p)[0].weight, trained.policy.net[0].weight)  # original untouched
    assert rl.action_agreement(rl.quantize_policy(p, "int8", "channel"), p, rl.collect_states(p, 2, 0)) > 0.9


def test_binary_format_gives_two_values_per_channel(trained):
    q = rl.quantize_policy(trained.policy, rl.BINARY, "channel")
    w = q.net[2].weight
    absmax = trained.policy.net[2].weight.detach().abs().amax(dim=1, keepdim=True)
    assert torch.equal(w.abs(), absmax.expand_as(w))
    assert torch.equal(torch.sign(w), torch.sign(trained.policy.net[2].weight.detach()))


def test_quantized_weights_are_the_library_qtensors():
    p = rl.Policy(seed=0)
    qs = rl.quantized_weights(p, "int3", "channel")
    assert len(qs) == 3
    for q, layer in zip(qs, linear_layers(p)):
        ref = ql.quantize(layer.weight.detach(), "int3", granularity="channel", axis=0)
        assert torch.equal(q.codes, ref.codes) and torch.equal(q.scale, ref.scale)
    # int1 is mapped asymmetrically: both of its codes are used
    q1 = rl.quantized_weights(p, "int1")[1]
    assert q1.zero_point is not None and set(q1.codes.unique().tolist()) == {-1, 0}


@pytest.mark.slow
def test_finetune_qat_recovers_agreement_at_two_bits(trained):
    p = trained.policy
    states = rl.collect_states(p, 10, seed=1000)
    ptq = rl.quantize_policy(p, "int2", "tensor")
    qat = rl.finetune_qat(p, "int2", "tensor", steps=60, rounds=2, seed=0)
    # the result is a plain policy whose weights lie on the int2 grid of each layer
    for layer in linear_layers(qat):
        assert type(layer) is nn.Linear
        assert torch.equal(layer.weight, ql.fake_quantize(layer.weight.detach(), "int2"))
    assert rl.action_agreement(qat, p, states) > rl.action_agreement(ptq, p, states)


def test_errors():
    p = rl.Policy(seed=0)
    with pytest.raises(ValueError, match="hidden must be >= 1, got 0"):
        rl.Policy(hidden=0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        rl.Policy(seed=1.5)
    with pytest.raises(ValueError, match="episodes must be >= 1, got 0"):
        rl.evaluate(p, episodes=0)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        rl.evaluate(p, seed=-1)
    with pytest.raises(TypeError, match="policy must be a torch.nn.Module"):
        rl.evaluate("policy")
    with pytest.raises(TypeError, match="env_id must be a string"):
        rl.rollout(p, env_id=3)
    with pytest.raises(ValueError, match=r"states must have shape \(n, obs_dim\)"):
        rl.action_agreement(p, p, np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="states must be a numpy array or torch tensor"):
        rl.action_agreement(p, p, [[0.0] * 4])
    with pytest.raises(TypeError, match="ref_policy must be a torch.nn.Module"):
        rl.action_agreement(p, None, np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="granularity must be 'tensor' or 'channel', got 'group'"):
        rl.quantize_policy(p, "int4", "group")
    with pytest.raises(ValueError, match="unknown format"):
        rl.quantize_policy(p, "int4x")
    with pytest.raises(ValueError, match="at least one torch.nn.Linear"):
        rl.quantize_policy(nn.Sequential(nn.ReLU()), "int4")
    with pytest.raises(ValueError, match="gamma must be in"):
        rl.train_reinforce(gamma=1.5, progress=False)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        rl.train_reinforce(lr=0.0, progress=False)
    with pytest.raises(ValueError, match="numpy_logits|policy must be a Policy"):
        rl.numpy_logits(nn.Sequential(nn.Linear(4, 2), nn.Sigmoid()))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        rl.finetune_qat(p, "int2", steps=0)


# --------------------------------------------------------------------------- exact evaluation, stored policies


def test_fixed_order_matmul_matches_float64_and_does_not_depend_on_the_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1100, 64)).astype(np.float32)  # more rows than one chunk
    w = rng.normal(size=(48, 64)).astype(np.float32)
    y = rl.fixed_order_matmul(x, w)
    assert y.dtype == np.float32 and y.shape == (1100, 48)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    # each row's bits are the same alone, in a small batch and in a large one
    for i in [0, 511, 512, 1099]:
        assert np.array_equal(rl.fixed_order_matmul(x[i : i + 1], w)[0], y[i])
        assert np.array_equal(rl.fixed_order_matmul(x[max(0, i - 3) : i + 1], w)[-1], y[i])


def test_stored_policies_match_the_recipe_and_solve_the_task():
    stored = rl.load_policies()
    recipe = json.loads(stored.metadata["recipe"])
    assert recipe == rl.TRAINING_RECIPE, (
        "the stored policies were made with another recipe: rerun scripts/train_policies.py"
    )
    assert stored.metadata["recipe_hash"] == rl.recipe_hash(rl.TRAINING_RECIPE)
    seeds = stored.seeds()
    assert len(seeds) == recipe["n_policies"]
    unsolved = json.loads(stored.metadata["unsolved"])
    assert sorted(seeds + unsolved) == list(range(max(seeds + unsolved) + 1))  # seeds tried in turn
    for seed in seeds:
        policy = stored.policies[f"seed{seed}/fp32"]
        # the greedy check that ended its training, replayed: exact on every CPU
        assert rl.evaluate(policy, recipe["reinforce"]["eval_episodes"], seed=10_000 + seed * 100) == rl.MAX_RETURN
        assert len(stored.curves[f"seed{seed}/fp32"]) <= recipe["reinforce"]["max_episodes"]
        for fmt in recipe["qat"]["formats"]:
            for gran in recipe["qat"]["granularities"]:
                assert isinstance(stored.policies[f"seed{seed}/qat-{fmt}-{gran}"], rl.Policy)


def test_save_and_load_policies_round_trip(tmp_path):
    a, b = rl.Policy(seed=1), rl.Policy(hidden=8, seed=2)
    path = rl.save_policies(
        tmp_path / "p.safetensors", {"a/fp32": a, "b": b}, curves={"a/fp32": [9.0, 10.0]}, metadata={"note": "x"}
    )
    stored = rl.load_policies(path)
    assert set(stored.policies) == {"a/fp32", "b"} and stored.metadata["note"] == "x"
    x = torch.randn(5, 4)
    for name, p in [("a/fp32", a), ("b", b)]:
        assert torch.equal(stored.policies[name](x), p(x))
    np.testing.assert_array_equal(stored.curves["a/fp32"], [9.0, 10.0])
    with pytest.raises(TypeError, match="Policy"):
        rl.save_policies(tmp_path / "q.safetensors", {"a": nn.Linear(4, 2)})
    with pytest.raises(ValueError, match="'.'"):
        rl.save_policies(tmp_path / "q.safetensors", {"a.b": a})
    with pytest.raises(FileNotFoundError):
        rl.load_policies(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="save_policies"):
        rl.load_policies(tmp_path / "other.safetensors")


@pytest.mark.slow
def test_train_policies_script_quick(tmp_path):
    out = tmp_path / "p.safetensors"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_policies.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = rl.load_policies(out)
    assert set(stored.policies) == {"seed0/fp32", "seed0/qat-int2-tensor"}
    assert json.loads(stored.metadata["recipe"])["n_policies"] == 1
