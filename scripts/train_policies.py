"""Train the CartPole policies the RL page studies, and store them with the package.

    .venv/bin/python scripts/train_policies.py            # all seeds of rl.TRAINING_RECIPE
    .venv/bin/python scripts/train_policies.py --quick --out /tmp/p.safetensors   # one policy, short QAT

Writes src/quantlab/data/cartpole_policies.safetensors (about 1 MB): seeds 0, 1, 2, ... are
trained with REINFORCE until ``n_policies`` of ``quantlab.rl.TRAINING_RECIPE`` have solved the
task; for each kept seed the float32 policy ("seed{s}/fp32"), its training curve, and one QAT
fine-tune per format and granularity ("seed{s}/qat-{fmt}-{gran}"). Seeds whose training did
not solve the task within ``max_episodes`` are listed in the metadata (``unsolved``).
The recipe and its hash are stored in the file's metadata; tests/test_rl.py checks that the
stored file matches the current recipe and that retraining still solves the task.

Why store them: training is chaotic. Its sampling and gradients go through vectorised kernels
whose last bits differ between CPUs (AVX2, AVX-512) and thread counts, and the same seed then
solves CartPole after 90 episodes on one machine and 220 on another. Evaluating a stored policy
is exact everywhere (quantlab.rl uses a fixed-order forward pass), so the page's tables are too.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

from quantlab import rl

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "quantlab" / "data" / rl.POLICIES_FILE)
    parser.add_argument("--quick", action="store_true", help="one seed and a short QAT (for tests)")
    args = parser.parse_args(argv)

    recipe = copy.deepcopy(rl.TRAINING_RECIPE)
    if args.quick:
        recipe["n_policies"] = 1
        recipe["qat"].update(steps=5, rounds=1, episodes=2, formats=["int2"], granularities=["tensor"])
    torch.set_num_threads(1)
    policies, curves = {}, {}
    start = time.perf_counter()
    unsolved = []
    for seed in range(recipe["max_seed"] + 1):
        if len(curves) == recipe["n_policies"]:
            break
        result = rl.train_reinforce(
            rl.Policy(seed=seed, **recipe["policy"]),
            seed=seed,
            progress=False,
            env_id=recipe["env_id"],
            **recipe["reinforce"],
        )
        if not result.solved:
            print(f"seed {seed}: not solved after {result.episodes} episodes (skipped)")
            unsolved.append(seed)
            continue
        policies[f"seed{seed}/fp32"] = result.policy
        curves[f"seed{seed}/fp32"] = result.returns
        qat = {k: v for k, v in recipe["qat"].items() if k not in ("formats", "granularities")}
        for fmt in recipe["qat"]["formats"]:
            for gran in recipe["qat"]["granularities"]:
                name = "binary" if fmt == "binary" else fmt
                tuned = rl.finetune_qat(result.policy, rl.BINARY if fmt == "binary" else fmt, gran, seed=seed, **qat)
                policy = rl.Policy(seed=seed, **recipe["policy"])
                policy.load_state_dict(tuned.state_dict())
                policies[f"seed{seed}/qat-{name}-{gran}"] = policy
        print(f"seed {seed}: solved after {result.episodes} episodes ({time.perf_counter() - start:.0f} s so far)")
    if len(curves) < recipe["n_policies"]:
        print(f"only {len(curves)} of {recipe['n_policies']} seeds solved the task", file=sys.stderr)
        return 1
    meta = {
        "unsolved": json.dumps(unsolved),
        "recipe": json.dumps(recipe, sort_keys=True),
        "recipe_hash": rl.recipe_hash(recipe),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    rl.save_policies(args.out, policies, curves=curves, metadata=meta)
    print(f"wrote {len(policies)} policies to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
