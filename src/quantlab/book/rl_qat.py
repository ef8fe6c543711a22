"""Quantization-aware fine-tuning of a CartPole policy: train through the quantizer.

A quantized copy of a trained policy is trained to imitate it (distillation): its Linear
layers round their weights to the format in the forward pass and pass gradients straight
through the rounding, and it learns the original's greedy actions by cross-entropy on the
states both visit (DAgger rounds): see :func:`finetune_qat`.
Re-exported by :mod:`quantlab.book.rl`.

Taught in: chapters/05_rl.ipynb, "How many bits does a policy need?".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    pass

from ..core.formats import FormatLike
from ..core.validate import check_int, check_positive
from .rl_policy import check_policy, collect_states, greedy_actions
from .rl_quantize import policy_scheme

__all__ = ["finetune_qat"]

# --------------------------------------------------------------------------- quantization-aware training


def finetune_qat(
    policy: nn.Module,
    fmt: FormatLike,
    granularity: str = "tensor",
    *,
    steps: int = 100,
    rounds: int = 2,
    episodes: int = 10,
    lr: float = 3e-3,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Fine-tune a quantized copy of ``policy`` to imitate ``policy`` (QAT by distillation).

    The copy's Linear layers become :class:`quantlab.qat.FakeQuantLinear` (weights rounded
    to ``fmt`` in the forward pass, straight-through gradients). It is trained with the
    cross-entropy between its logits and the original's greedy action, on states from
    ``rounds`` rounds of data collection (DAgger): round 0 uses states the original policy
    visits, each later round adds the states the *quantized* student visits, labelled by
    the original. Each round takes ``steps`` Adam steps on minibatches of ``batch_size``.

    Args:
        policy: the trained float policy (the teacher; not modified).
        fmt: the weight format, e.g. ``"int2"`` or :data:`BINARY`.
        granularity: ``"tensor"`` or ``"channel"`` (one scale per output neuron).
        steps: optimizer steps per round (>= 1).
        rounds: rounds of data collection and training (>= 1).
        episodes: greedy episodes per round of data collection (>= 1).
        lr: Adam learning rate (> 0).
        batch_size: states per step (>= 1).
        seed: seeds the minibatch draws; the rollouts reset with ``20_000 + 100*seed + round``
            (seeds apart from the evaluation seeds the chapter uses).
        progress: show a tqdm progress bar.

    Returns:
        A copy of ``policy`` with plain Linear layers holding the quantized weights
        (the same kind of object :func:`quantize_policy` returns).

    Raises:
        TypeError, ValueError: bad arguments (each message names the parameter).

    Taught in: chapters/05_rl.ipynb, "Quantization-aware training".
    """
    from tqdm.auto import tqdm

    from ..algorithms.qat import convert, prepare_qat

    check_policy(policy)
    scheme = policy_scheme(fmt, granularity)
    fmt = scheme.fmt
    steps = check_int(steps, "steps", minimum=1)
    rounds = check_int(rounds, "rounds", minimum=1)
    episodes = check_int(episodes, "episodes", minimum=1)
    lr = check_positive(lr, "lr")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    student = prepare_qat(policy, scheme)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    data = collect_states(policy, episodes, seed=20_000 + 100 * seed)
    bar = tqdm(total=rounds * steps, desc=f"QAT {fmt.name}", disable=not progress)
    for r in range(rounds):
        if r > 0:
            visited = collect_states(convert(student), episodes, seed=20_000 + 100 * seed + r)
            data = torch.cat([data, visited])
        labels = torch.from_numpy(greedy_actions(policy, data))
        for _ in range(steps):
            idx = torch.randint(len(data), (min(batch_size, len(data)),), generator=gen)
            loss = F.cross_entropy(student(data[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    return convert(student)
