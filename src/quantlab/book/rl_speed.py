"""How fast quantized actors act: environment steps per second of a batch of actors.

In actor-learner RL the actors spend their time on two things per environment step: the
policy's forward pass (one observation per environment, a batch of ``num_envs`` rows) and
the environment's own step. Quantizing the actor can only speed up the first. This module
measures both, for the same policy network run three ways:

* ``"fp32 torch"``: eager PyTorch, float32 (``torch.inference_mode``);
* ``"fp32 ORT"``: ONNX Runtime, float32 (:func:`quantlab.deploy.onnx.export_float`);
* ``"int8 ORT"``: ONNX Runtime's integer kernels, int8 weights with one scale per output row
  and int8 activations rounded on the fly (``quantlab.nn.QuantScheme("int8")`` exported by
  :func:`quantlab.deploy.export_onnx`: ``DynamicQuantizeLinear`` + ``MatMulInteger``).

:func:`acting_speed` times, for each hidden width and batch size, the forward pass alone and
the forward pass plus one step of a synchronous vector environment (the greedy action: argmax,
or the clipped mean for continuous actions), all variants alternately in one process
(:func:`quantlab.book.speed.time_alternating`), so that the load of a shared machine hits them
alike. The numbers are machine-specific; record the CPU with them
(:func:`quantlab.book.speed.cpu_flags`).

Taught in: chapters/05b_rl_training.ipynb (Quantized actors inside RL training).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..core.validate import check_int
from ..deploy.onnx import export_float
from .rl_train import ENV_DEFAULTS, ActorCritic, make_vec_env
from .speed import time_alternating

__all__ = ["SPEED_VARIANTS", "actor_runners", "acting_speed"]

PathLike = Union[str, os.PathLike]

#: The ways :func:`acting_speed` runs the actor: name -> description.
SPEED_VARIANTS: dict[str, str] = {
    "fp32 torch": "eager PyTorch, float32",
    "fp32 ORT": "ONNX Runtime MatMul, float32",
    "int8 ORT": "ONNX Runtime DynamicQuantizeLinear + MatMulInteger, int8 weights per row",
}


def _check_variants(variants: Any) -> list[str]:
    if isinstance(variants, str) or not isinstance(variants, Sequence):
        raise TypeError(f"variants must be a sequence of names, got {variants!r}")
    out = list(variants)
    if not out:
        raise ValueError("variants is empty")
    for v in out:
        if v not in SPEED_VARIANTS:
            raise ValueError(f"variants must be names from {list(SPEED_VARIANTS)}, got {v!r}")
    return out


def actor_runners(
    actor: nn.Module, folder: PathLike, threads: int = 1, variants: Sequence[str] = tuple(SPEED_VARIANTS)
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Callables ``obs (batch, obs_dim) float32 -> actor outputs (batch, act_dim)``, one per variant.

    Args:
        actor: the policy network, an ``nn.Sequential`` of ``nn.Linear`` and activations
            (e.g. ``ActorCritic.actor``); it is not modified.
        folder: an existing folder for the ONNX files.
        threads: ONNX Runtime intra-op threads (torch uses its current setting).
        variants: names from :data:`SPEED_VARIANTS`.

    Returns:
        name -> callable. The int8 variant's outputs differ from float32 by the rounding of
        the weights (per row) and of the activations (per call).

    Raises:
        TypeError: ``actor`` is not a module, ``variants`` not a sequence.
        ValueError: an unknown variant; ``folder`` is not a folder.
    """
    from ..deploy import export_onnx, ort_session
    from ..nn import QuantScheme, quantize_model

    if not isinstance(actor, nn.Module):
        raise TypeError(f"actor must be a torch nn.Module, got {type(actor).__name__}")
    variants = _check_variants(variants)
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder must be an existing folder, got {str(folder)!r}")
    threads = check_int(threads, "threads", minimum=1)
    first = next(m for m in actor.modules() if isinstance(m, nn.Linear))
    example = torch.zeros(1, first.in_features)
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for v in variants:
        if v == "fp32 torch":

            def run_torch(x: np.ndarray, m: nn.Module = actor) -> np.ndarray:
                with torch.inference_mode():
                    return m(torch.from_numpy(x)).numpy()

            runners[v] = run_torch
        else:
            if v == "fp32 ORT":
                path = export_float(actor, example, folder / "actor_fp32.onnx")
            else:
                scheme = QuantScheme("int8", granularity="channel", scale_dtype="fp32")
                q = quantize_model(copy.deepcopy(actor), scheme, skip=None, progress=False)
                path = export_onnx(q, example, folder / "actor_int8.onnx")
            sess = ort_session(path, threads)
            runners[v] = lambda x, s=sess: s.run(None, {"input": x})[0]
    return runners


def acting_speed(
    env_id: str = "CartPole-v1",
    hidden: Sequence[int] = (64, 1024),
    batches: Sequence[int] = (1, 16, 256),
    variants: Sequence[str] = tuple(SPEED_VARIANTS),
    repeats: int = 5,
    transitions: int = 2048,
    threads: int = 1,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Environment steps per second of ``batch`` actors, per variant, width and batch size.

    For each width in ``hidden`` an :class:`~quantlab.book.rl_train.ActorCritic` actor
    (``obs -> hidden -> hidden -> actions``, tanh; weights from ``seed``) is run by each
    variant of :func:`actor_runners`. For each batch size, every variant gets its own vector
    environment of ``batch`` copies of ``env_id`` (reset with ``seed``); one timed call
    makes ``calls = max(1, transitions // batch)`` steps of either

    * ``"forward"``: the actor's forward pass on a fixed batch of observations, or
    * ``"forward+env"``: forward pass, greedy action, ``envs.step``,

    and all ``2 x len(variants)`` callables are timed alternately
    (:func:`~quantlab.book.speed.time_alternating`, median of ``repeats`` rounds after one
    warm-up round). torch runs on ``threads`` threads (restored afterwards), ONNX Runtime too.

    Args:
        env_id: an environment of :data:`~quantlab.book.rl_train.ENV_DEFAULTS`.
        hidden: hidden widths (e.g. 64, the width trained in the sweep, and a wide 1024).
        batches: numbers of environments stepped together.
        variants: names from :data:`SPEED_VARIANTS`.
        repeats: timed rounds.
        transitions: environment transitions per timed call (sets ``calls``).
        threads: torch and ONNX Runtime threads.
        seed: seeds the weights and the environments.

    Returns:
        One dict per (hidden, batch, variant, mode): ``env``, ``hidden``, ``batch``,
        ``variant``, ``mode``, ``calls``, ``seconds`` (median per timed call),
        ``us_per_step`` (microseconds per batched step) and ``steps_per_s``
        (environment transitions per second, ``batch * calls / seconds``).

    Raises:
        TypeError: an argument of the wrong type (named in the message).
        ValueError: an unknown environment or variant, or a size below 1.
    """
    if env_id not in ENV_DEFAULTS:
        raise ValueError(f"env_id must be one of {sorted(ENV_DEFAULTS)}, got {env_id!r}")
    variants = _check_variants(variants)
    for name, seq in (("hidden", hidden), ("batches", batches)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or not seq:
            raise TypeError(f"{name} must be a non-empty sequence of ints, got {seq!r}")
    hidden = [check_int(h, "hidden", minimum=1) for h in hidden]
    batches = [check_int(b, "batches", minimum=1) for b in batches]
    repeats, transitions = check_int(repeats, "repeats", minimum=1), check_int(transitions, "transitions", minimum=1)
    threads, seed = check_int(threads, "threads", minimum=1), check_int(seed, "seed", minimum=0)

    probe = make_vec_env(env_id, 1)
    space = probe.single_action_space
    discrete = hasattr(space, "n")
    obs_dim = int(np.prod(probe.single_observation_space.shape))
    act_dim = int(space.n) if discrete else int(np.prod(space.shape))
    low, high = (None, None) if discrete else (space.low, space.high)
    probe.close()

    def greedy(out: np.ndarray) -> np.ndarray:
        return out.argmax(-1) if discrete else np.clip(out, low, high)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for h in hidden:
                actor = ActorCritic(obs_dim, act_dim, discrete, h, seed).actor.eval()
                folder = Path(tmp) / f"h{h}"
                folder.mkdir()
                runners = actor_runners(actor, folder, threads, variants)
                for batch in batches:
                    calls = max(1, transitions // batch)
                    envs = {v: make_vec_env(env_id, batch) for v in variants}
                    try:
                        state = {v: e.reset(seed=seed)[0].astype(np.float32) for v, e in envs.items()}
                        fixed = state[variants[0]].copy()

                        # forward and step are timed below, within this iteration (B023 does not apply)
                        def forward(run=None):
                            for _ in range(calls):  # noqa: B023
                                run(fixed)  # noqa: B023

                        def step(v=None):
                            run, env = runners[v], envs[v]  # noqa: B023
                            for _ in range(calls):  # noqa: B023
                                obs = env.step(greedy(run(state[v])))[0]  # noqa: B023
                                state[v] = obs.astype(np.float32, copy=False)  # noqa: B023

                        fns: dict[str, Callable[[], Any]] = {}
                        for v in variants:
                            fns[f"{v}|forward"] = lambda r=runners[v]: forward(r)
                            fns[f"{v}|forward+env"] = lambda v=v: step(v)
                        times = time_alternating(fns, repeats)
                    finally:
                        for e in envs.values():
                            e.close()
                    for key, t in times.items():
                        v, mode = key.split("|")
                        rows.append(
                            dict(
                                env=env_id,
                                hidden=h,
                                batch=batch,
                                variant=v,
                                mode=mode,
                                calls=calls,
                                seconds=t,
                                us_per_step=t / calls * 1e6,
                                steps_per_s=batch * calls / t,
                            )
                        )
    finally:
        torch.set_num_threads(old_threads)
    return rows
