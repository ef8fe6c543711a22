"""Sweep PPO with quantized actors: environments x actor formats x seeds x IS correction.

Each run is :func:`quantlab.book.rl_train.train_ppo`; its per-update history is stored,
with a deterministic evaluation of the final policy as the actors run it (quantized) and
as the learner holds it (fp32). The JSON file holds the configuration, its hash
(``sha256`` of the canonical JSON: ``json.dumps(config, sort_keys=True,
separators=(",", ":"))``), every run and a summary over seeds per (environment, format,
correction)::

    python scripts/rl_experiments.py                      # the full sweep (2 processes)
    python scripts/rl_experiments.py --quick --out /tmp/q.json   # 1 env, 2 formats, 2 seeds

With fp32 actors ``mu == pi`` exactly, so the truncated correction changes nothing
(``rho = 1``): that pair is run once, without correction.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from quantlab.book.rl_train import ACTOR_FORMATS, ENV_DEFAULTS, evaluate_actor, train_ppo  # noqa: E402

FULL: dict[str, Any] = {
    "envs": list(ENV_DEFAULTS),
    "formats": list(ACTOR_FORMATS),
    "seeds": [0, 1, 2, 3, 4],
    "corrections": [None, "truncated"],
    "is_clip": 1.0,
    "updates": None,  # None: each environment's default budget (ENV_DEFAULTS)
    "eval_episodes": 8,
    "granularity": "channel",
    "last_k": 5,
    "settings": ENV_DEFAULTS,
}
QUICK: dict[str, Any] = dict(FULL, envs=["CartPole-v1"], formats=["fp32", "int2"], seeds=[0, 1],
                             updates=3, eval_episodes=2)
QUICK["settings"] = {"CartPole-v1": dict(ENV_DEFAULTS["CartPole-v1"], num_envs=4, steps=64)}


def config_hash(config: dict[str, Any]) -> str:
    """sha256 (hex) of ``json.dumps(config, sort_keys=True, separators=(",", ":"))``."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _jobs(config: dict[str, Any]) -> list[tuple[str, str, Optional[str], int]]:
    return [(e, f, c, s) for e in config["envs"] for f in config["formats"]
            for c in config["corrections"] if not (f == "fp32" and c is not None)
            for s in config["seeds"]]


def _run(job: tuple[str, str, Optional[str], int], config: dict[str, Any]) -> dict[str, Any]:
    env, fmt, corr, seed = job
    s = config["settings"][env]
    start = time.perf_counter()
    res = train_ppo(env, actor_format=fmt, is_correction=corr, is_clip=config["is_clip"], seed=seed,
                    granularity=config["granularity"],
                    **dict(s, updates=config["updates"] or s["updates"]))
    n, g = config["eval_episodes"], config["granularity"]
    h = res.history
    return dict(env=env, format=fmt, is_correction=corr, seed=seed,
                final_return=float(np.nanmean(h["return"][-config["last_k"]:])),
                eval_actor=float(evaluate_actor(res.model, env, fmt, n, granularity=g).mean()),
                eval_learner=float(evaluate_actor(res.model, env, "fp32", n).mean()),
                seconds=round(time.perf_counter() - start, 2), history=h)


def _stats(x: list[float]) -> dict[str, float]:
    a = np.asarray(x, dtype=np.float64)
    return dict(mean=float(np.mean(a)), std=float(np.std(a)), median=float(np.median(a)),
                min=float(np.min(a)), max=float(np.max(a)))


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (env, format, correction): spread over seeds of the final training return, the
    evaluations, the mean mismatch (KL, ratios) and the entropy (mean and last update)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["env"], r["format"], r["is_correction"]), []).append(r)
    out = []
    for (env, fmt, corr), rs in groups.items():
        m = lambda k: _stats([float(np.mean(r["history"][k])) for r in rs])  # noqa: E731
        out.append(dict(env=env, format=fmt, is_correction=corr, seeds=len(rs),
                        final_return=_stats([r["final_return"] for r in rs]),
                        eval_actor=_stats([r["eval_actor"] for r in rs]),
                        eval_learner=_stats([r["eval_learner"] for r in rs]),
                        kl=m("kl"), ratio_std=m("ratio_std"), ratio_max=m("ratio_max"),
                        ratio_clipped=m("ratio_clipped"), ratio_truncated=m("ratio_truncated"),
                        entropy_mean=m("entropy"),
                        entropy_last=_stats([r["history"]["entropy"][-1] for r in rs])))
    return out


def main(argv: Optional[list[str]] = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 env, 2 formats, 2 seeds, tiny budget")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/rl_experiments[_quick].json)")
    p.add_argument("--workers", type=int, default=2, help="processes (each uses one torch thread)")
    args = p.parse_args(argv)
    config = QUICK if args.quick else FULL
    out = args.out or ROOT / "benchmarks" / ("rl_experiments_quick.json" if args.quick else "rl_experiments.json")
    jobs = _jobs(config)
    start = time.perf_counter()
    if args.workers <= 1:
        runs = [_run(j, config) for j in jobs]
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            runs = list(pool.map(_run, jobs, [config] * len(jobs)))
    import gymnasium
    import torch
    result = dict(config=config, config_hash=config_hash(config), runs=runs, summary=summarize(runs),
                  meta=dict(seconds=round(time.perf_counter() - start, 1), python=platform.python_version(),
                            torch=torch.__version__, gymnasium=gymnasium.__version__, numpy=np.__version__,
                            machine=platform.machine()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{len(runs)} runs in {result['meta']['seconds']} s -> {out}")
    return out


if __name__ == "__main__":
    main()
