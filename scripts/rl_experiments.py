"""Sweep PPO with quantized actors: environments x actor formats x seeds x IS correction.

Three parts, one JSON file (``make experiments`` writes benchmarks/rl_experiments.json):

1. **The sweep** (``runs``, ``summary``). Each run is :func:`quantlab.book.rl_train.train_ppo`;
   its per-update history is stored, with a deterministic evaluation of the final policy as
   the actors run it (quantized) and as the learner holds it (fp32). With fp32 actors
   ``mu == pi`` exactly, so the truncated correction changes nothing (``rho = 1``): that
   pair is run once, without correction.
2. **A QuaRL-style study of the trained fp32 policies** (``study``, ``study_summary``): for
   each environment and seed, the sweep's fp32 policy is quantized after training (PTQ, per
   row) to each width of ``config["study"]["widths"]`` and evaluated deterministically; it is
   fine-tuned for ``finetune_updates`` PPO updates with quantization-aware training at each
   width (QAT, :func:`quantlab.book.rl_train.finetune_ppo`) and evaluated quantized; and it is
   fine-tuned in fp32 for as many updates (the control, evaluated in fp32 and after PTQ at
   each width). The actor's weight spread (:func:`quantlab.book.rl_train.weight_spread`) is
   recorded with each policy.
3. **Speed of acting** (``speed``): environment steps per second of a batch of actors, fp32
   (torch, ONNX Runtime) against int8 (ONNX Runtime), forward pass alone and with the
   environment step (:func:`quantlab.book.rl_speed.acting_speed`), measured in the main
   process after the others, with the CPU model and flags it ran on.

The file holds the configuration, its hash (``sha256`` of the canonical JSON:
``json.dumps(config, sort_keys=True, separators=(",", ":"))``), the three parts and ``meta``
(versions, CPU, wall time of each part)::

    python scripts/rl_experiments.py                      # everything (2 processes)
    python scripts/rl_experiments.py --quick --out /tmp/q.json   # 1 env, 2 formats, 2 seeds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from quantlab.book.rl_train import (  # noqa: E402
    ACTOR_FORMATS,
    ENV_DEFAULTS,
    ActorCritic,
    evaluate_actor,
    finetune_ppo,
    train_ppo,
    weight_spread,
)

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
    "study": {
        "widths": ["int8", "int6", "int4", "int3", "int2"],
        "finetune_updates": 10,
        "finetune_lr": 3e-4,
        "episodes": 16,
        "eval_seed": 10_000,
    },
    "speed": {
        "env": "CartPole-v1",
        "hidden": [64, 1024],
        "batches": [1, 16, 256],
        "variants": ["fp32 torch", "fp32 ORT", "int8 ORT"],
        "repeats": 7,
        "transitions": 2048,
        "threads": 1,
    },
}
QUICK: dict[str, Any] = dict(
    FULL, envs=["CartPole-v1"], formats=["fp32", "int2"], seeds=[0, 1], updates=3, eval_episodes=2
)
QUICK["settings"] = {"CartPole-v1": dict(ENV_DEFAULTS["CartPole-v1"], num_envs=4, steps=64)}
QUICK["study"] = dict(FULL["study"], widths=["int8", "int2"], finetune_updates=2, episodes=2)
QUICK["speed"] = dict(FULL["speed"], hidden=[16], batches=[1, 4], repeats=1, transitions=8)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 (hex) of ``json.dumps(config, sort_keys=True, separators=(",", ":"))``."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _jobs(config: dict[str, Any]) -> list[tuple[str, str, Optional[str], int]]:
    return [
        (e, f, c, s)
        for e in config["envs"]
        for f in config["formats"]
        for c in config["corrections"]
        if not (f == "fp32" and c is not None)
        for s in config["seeds"]
    ]


def _run(job: tuple[str, str, Optional[str], int], config: dict[str, Any]) -> dict[str, Any]:
    env, fmt, corr, seed = job
    s = config["settings"][env]
    start = time.perf_counter()
    res = train_ppo(
        env,
        actor_format=fmt,
        is_correction=corr,
        is_clip=config["is_clip"],
        seed=seed,
        granularity=config["granularity"],
        **dict(s, updates=config["updates"] or s["updates"]),
    )
    n, g = config["eval_episodes"], config["granularity"]
    h = res.history
    out = dict(
        env=env,
        format=fmt,
        is_correction=corr,
        seed=seed,
        final_return=float(np.nanmean(h["return"][-config["last_k"] :])),
        eval_actor=float(evaluate_actor(res.model, env, fmt, n, granularity=g).mean()),
        eval_learner=float(evaluate_actor(res.model, env, "fp32", n).mean()),
        seconds=round(time.perf_counter() - start, 2),
        history=h,
    )
    if fmt == "fp32" and corr is None:  # the study starts from this policy (not stored in the file)
        m = res.model
        out["_model"] = dict(
            obs_dim=m.actor[0].in_features,
            act_dim=m.actor[-1].out_features,
            discrete=m.discrete,
            hidden=res.config["hidden"],
            state={k: v.detach().numpy().copy() for k, v in m.state_dict().items()},
        )
    return out


def _study(job: tuple[str, int, dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """PTQ, QAT and the fp32 fine-tuning control for one fp32 policy of the sweep."""
    import torch

    env, seed, saved = job
    st, g = config["study"], config["granularity"]
    start = time.perf_counter()
    model = ActorCritic(saved["obs_dim"], saved["act_dim"], saved["discrete"], saved["hidden"], seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in saved["state"].items()})

    def ev(m: ActorCritic, fmt: str) -> float:
        return float(evaluate_actor(m, env, fmt, st["episodes"], seed=st["eval_seed"], granularity=g).mean())

    s = config["settings"][env]
    ft = {k: v for k, v in dict(s, lr=st["finetune_lr"]).items() if k != "updates"}  # the env's PPO settings
    control = finetune_ppo(model, env, updates=st["finetune_updates"], seed=seed, granularity=g, **ft)
    qat, qat_train = {}, {}
    for w in st["widths"]:
        r = finetune_ppo(model, env, updates=st["finetune_updates"], seed=seed, qat_format=w, granularity=g, **ft)
        qat[w] = ev(r.model, w)
        qat_train[w] = float(np.nanmean(r.history["return"][-config["last_k"] :]))
    return dict(
        env=env,
        seed=seed,
        spread=weight_spread(model),
        fp32=ev(model, "fp32"),
        ptq={w: ev(model, w) for w in st["widths"]},
        qat=qat,
        qat_train_return=qat_train,
        control=dict(
            fp32=ev(control.model, "fp32"),
            ptq={w: ev(control.model, w) for w in st["widths"]},
            train_return=float(np.nanmean(control.history["return"][-config["last_k"] :])),
        ),
        seconds=round(time.perf_counter() - start, 2),
    )


def _stats(x: list[float]) -> dict[str, float]:
    a = np.asarray(x, dtype=np.float64)
    return dict(
        mean=float(np.mean(a)),
        std=float(np.std(a)),
        median=float(np.median(a)),
        min=float(np.min(a)),
        max=float(np.max(a)),
    )


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (env, format, correction): spread over seeds of the final training return, the
    evaluations, the mean mismatch (KL, ratios) and the entropy (mean and last update)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["env"], r["format"], r["is_correction"]), []).append(r)
    out = []
    for (env, fmt, corr), rs in groups.items():
        m = lambda k: _stats([float(np.mean(r["history"][k])) for r in rs])  # noqa: E731, B023 (used in this iteration)
        out.append(
            dict(
                env=env,
                format=fmt,
                is_correction=corr,
                seeds=len(rs),
                final_return=_stats([r["final_return"] for r in rs]),
                eval_actor=_stats([r["eval_actor"] for r in rs]),
                eval_learner=_stats([r["eval_learner"] for r in rs]),
                kl=m("kl"),
                ratio_std=m("ratio_std"),
                ratio_max=m("ratio_max"),
                ratio_clipped=m("ratio_clipped"),
                ratio_truncated=m("ratio_truncated"),
                entropy_mean=m("entropy"),
                entropy_last=_stats([r["history"]["entropy"][-1] for r in rs]),
            )
        )
    return out


def summarize_study(study: list[dict[str, Any]], widths: list[str]) -> list[dict[str, Any]]:
    """Per (env, width): spread over seeds of the PTQ, QAT and control returns, with the fp32
    return of the same policies."""
    out = []
    for env in dict.fromkeys(r["env"] for r in study):
        rs = [r for r in study if r["env"] == env]
        for w in widths:
            out.append(
                dict(
                    env=env,
                    width=w,
                    seeds=len(rs),
                    fp32=_stats([r["fp32"] for r in rs]),
                    ptq=_stats([r["ptq"][w] for r in rs]),
                    qat=_stats([r["qat"][w] for r in rs]),
                    control_fp32=_stats([r["control"]["fp32"] for r in rs]),
                    control_ptq=_stats([r["control"]["ptq"][w] for r in rs]),
                )
            )
    return out


def _pool_map(fn, jobs: list, config: dict[str, Any], workers: int) -> list:
    if workers <= 1:
        return [fn(j, config) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, jobs, [config] * len(jobs)))


def main(argv: Optional[list[str]] = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 env, 2 formats, 2 seeds, tiny budget")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/rl_experiments[_quick].json)")
    p.add_argument("--workers", type=int, default=2, help="processes (each uses one torch thread)")
    args = p.parse_args(argv)
    config = QUICK if args.quick else FULL
    out = args.out or ROOT / "benchmarks" / ("rl_experiments_quick.json" if args.quick else "rl_experiments.json")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    runs = _pool_map(_run, _jobs(config), config, args.workers)
    t_sweep = time.perf_counter() - start
    models = {(r["env"], r["seed"]): r.pop("_model") for r in runs if "_model" in r}
    study = _pool_map(
        _study, [(e, s, models[e, s]) for e in config["envs"] for s in config["seeds"]], config, args.workers
    )
    t_study = time.perf_counter() - start - t_sweep

    import gymnasium
    import onnxruntime
    import torch

    from quantlab.book.rl_speed import acting_speed
    from quantlab.book.speed import cpu_flags

    sp = config["speed"]
    rows = acting_speed(
        sp["env"], sp["hidden"], sp["batches"], sp["variants"], sp["repeats"], sp["transitions"], sp["threads"]
    )
    cpu = cpu_flags()
    t_speed = time.perf_counter() - start - t_sweep - t_study
    result = dict(
        config=config,
        config_hash=config_hash(config),
        runs=runs,
        summary=summarize(runs),
        study=study,
        study_summary=summarize_study(study, config["study"]["widths"]),
        speed=dict(rows=rows, cpu=cpu),
        meta=dict(
            seconds=round(time.perf_counter() - start, 1),
            seconds_sweep=round(t_sweep, 1),
            seconds_study=round(t_study, 1),
            seconds_speed=round(t_speed, 1),
            workers=args.workers,
            cpu=cpu["model"],
            cpus=os.cpu_count(),
            load_at_start=load,
            python=platform.python_version(),
            torch=torch.__version__,
            onnxruntime=onnxruntime.__version__,
            gymnasium=gymnasium.__version__,
            numpy=np.__version__,
            machine=platform.machine(),
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(
        f"{len(runs)} runs ({t_sweep:.0f} s), {len(study)} PTQ/QAT studies ({t_study:.0f} s), "
        f"{len(rows)} speed rows ({t_speed:.0f} s) in {result['meta']['seconds']} s -> {out}"
    )
    return out


if __name__ == "__main__":
    main()
