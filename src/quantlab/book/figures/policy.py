"""Watch the policy: one CartPole episode of a stored policy, in float32 and at fewer bits.

The figure animates the first of the RL page's evaluation episodes (:data:`EPISODES`
greedy episodes from the evaluation seed :data:`EVAL_SEED`, ``rl.rollout`` /
``rl.collect_states``: the very states chapters/05_rl.ipynb measures) for the first stored
policy (``rl.load_policies()``) and for copies of it whose weights are rounded
(``rl.quantize_policy``) to 8, 4, 3, 2 bits or the binary sign format, per tensor or per
output channel. Side by side: the cart and pole of each, the action each takes (push left
or right), the step where the actions first differ, and each episode's return.

The quantized policy acts like the float32 one until it first picks another action: up to
that step both episodes pass through the same states (CartPole is deterministic), so that
step is the first index where the quantized policy's greedy action on the float32
episode's states differs. After it, the episodes part.

Every number comes from quantlab's evaluation, which is exact on every CPU (the forward
pass runs in a fixed order, ``rl.numpy_logits``): the returns, the actions, the step of the
first difference, and the action agreement on the float32 episode's states
(``rl.action_agreement``). Only the drawing is rounded: cart positions to 1 mm and pole
angles to 0.1 mrad, stored as differences from step to step.

Taught in: chapters/05_rl.ipynb, "How many bits does a policy need?".
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Optional

import numpy as np

from ...core.validate import describe as _describe
from ._page import check_root_id, figure_html

__all__ = [
    "EVAL_SEED",
    "EPISODES",
    "EPISODE",
    "FORMATS",
    "GRANULARITIES",
    "X_SCALE",
    "THETA_SCALE",
    "Episode",
    "policy",
    "episode",
    "split_episodes",
    "ending",
    "clear_cache",
    "static_data",
    "static_html",
]

#: The RL page's evaluation: episodes and the seed of their starting states.
EVAL_SEED = 1000
EPISODES = 20
#: Which of those episodes the figure shows (the first).
EPISODE = 0
#: The rounded policies: key -> (label, bits). ``"binary"`` is ``rl.BINARY`` (the signs).
FORMATS: dict[str, tuple[str, int]] = {
    "int8": ("int8", 8),
    "int4": ("int4", 4),
    "int3": ("int3", 3),
    "int2": ("int2", 2),
    "binary": ("binary (1 bit, signs)", 1),
}
#: Granularities of the scales: key -> label.
GRANULARITIES: dict[str, str] = {"tensor": "per tensor", "channel": "per output channel"}
#: Units of the stored drawing: cart position in mm, pole angle in 0.1 mrad.
X_SCALE = 1000
THETA_SCALE = 10000


def _check_choice(value: Any, name: str, table: dict) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {_describe(value)}")
    if value not in table:
        raise ValueError(f"{name} must be one of {list(table)}, got {value!r}")
    return value


@lru_cache(maxsize=1)
def _stored() -> tuple[int, Any]:
    from .. import rl

    stored = rl.load_policies()
    seed = stored.seeds()[0]
    return seed, stored.policies[f"seed{seed}/fp32"]


def policy(fmt: Optional[str] = None, granularity: str = "tensor"):
    """The first stored float32 policy (``fmt=None``) or its copy rounded to a format of
    :data:`FORMATS` with ``rl.quantize_policy`` (``granularity`` ``"tensor"`` or ``"channel"``)."""
    from .. import rl

    _, fp32 = _stored()
    if fmt is None:
        return fp32
    _check_choice(fmt, "fmt", FORMATS)
    _check_choice(granularity, "granularity", GRANULARITIES)
    return rl.quantize_policy(fp32, rl.BINARY if fmt == "binary" else fmt, granularity)


def split_episodes(returns: np.ndarray, states: np.ndarray) -> list[np.ndarray]:
    """Cut the states of ``rl.rollout(..., record_states=True)`` into one array per episode.

    ``rl.rollout`` records, at each step ``t``, the observations of the episodes still
    running, in episode order; episode ``e`` runs for ``returns[e]`` steps (a reward of 1
    per step). So step ``t``'s block holds the episodes with ``returns[e] > t``.

    Args:
        returns: ``(episodes,)`` returns (whole numbers of steps).
        states: ``(sum(returns), obs_dim)`` recorded states.

    Returns:
        ``[states of episode 0 (returns[0] x obs_dim), ...]``.

    Raises:
        ValueError: shapes that do not fit together.
    """
    lengths = np.asarray(returns).astype(np.int64)
    if not np.array_equal(lengths, np.asarray(returns)) or lengths.ndim != 1 or (lengths < 0).any():
        raise ValueError(f"returns must be whole numbers of steps, got {returns!r}")
    if states.ndim != 2 or states.shape[0] != int(lengths.sum()):
        raise ValueError(f"states must have sum(returns) = {int(lengths.sum())} rows, got shape {states.shape}")
    rows: list[list[int]] = [[] for _ in lengths]
    offset = 0
    for t in range(int(lengths.max(initial=0))):
        running = np.nonzero(lengths > t)[0]
        for j, e in enumerate(running):
            rows[e].append(offset + j)
        offset += len(running)
    return [states[r] for r in rows]


@dataclass(frozen=True)
class Episode:
    """One episode of one policy.

    Attributes:
        key: ``"fp32"`` or ``"<format>-<granularity>"``.
        label: what the figure calls the policy.
        states: ``(steps, 4)`` observations acted on: cart position, cart velocity, pole
            angle (radians, positive leaning right), pole angular velocity.
        actions: ``(steps,)`` greedy actions (0 push left, 1 push right).
        ret: the episode's return (its number of steps, at most 500).
        first_difference: the first step at which this policy's action differs from the
            float32 policy's (None if never; None for float32 itself).
        agreement: share of the float32 episode's states on which this policy picks the
            float32 policy's action (``rl.action_agreement``; 1 for float32).
    """

    key: str
    label: str
    states: np.ndarray
    actions: np.ndarray
    ret: float
    first_difference: Optional[int]
    agreement: float


@cache
def episode(fmt: Optional[str] = None, granularity: str = "tensor") -> Episode:
    """The shown episode of the float32 policy (``fmt=None``) or of a rounded copy.

    Runs the RL page's evaluation (``rl.rollout(policy, EPISODES, EVAL_SEED,
    record_states=True)``) and keeps episode :data:`EPISODE`.

    Raises:
        TypeError, ValueError: an unknown format or granularity.
    """
    from .. import rl

    q = policy(fmt, granularity)
    returns, states = rl.rollout(q, EPISODES, EVAL_SEED, record_states=True)
    mine = split_episodes(returns, states)[EPISODE]
    actions = rl.numpy_logits(q)(mine).argmax(axis=-1)
    if fmt is None:
        return Episode("fp32", "float32", mine, actions, float(returns[EPISODE]), None, 1.0)
    ref = episode()
    on_ref = rl.numpy_logits(q)(ref.states).argmax(axis=-1)
    differ = np.nonzero(on_ref != ref.actions)[0]
    first = int(differ[0]) if differ.size else None
    label = f"{FORMATS[fmt][0]}, {GRANULARITIES[granularity]}"
    return Episode(
        f"{fmt}-{granularity}",
        label,
        mine,
        actions,
        float(returns[EPISODE]),
        first,
        rl.action_agreement(q, policy(), ref.states),
    )


def ending(ep: Episode) -> Optional[dict[str, Any]]:
    """How an episode that stopped before the time limit ended: the state after its last
    push, found by one step of gymnasium's CartPole from its last recorded state.

    Returns:
        None for an episode that reached ``rl.MAX_RETURN`` steps (cut off by the time
        limit); else ``{"x", "theta", "reason"}`` with ``reason`` ``"cart"`` (the cart left
        the track, ``|x| > x_threshold``) or ``"pole"`` (``|theta|`` beyond the threshold).

    Raises:
        TypeError: ``ep`` is not an :class:`Episode`.
    """
    from .. import rl

    if not isinstance(ep, Episode):
        raise TypeError(f"ep must be an Episode, got {type(ep).__name__}")
    if ep.ret >= rl.MAX_RETURN:
        return None
    env = rl.make_env()
    try:
        env.reset(seed=0)
        cart = env.unwrapped
        cart.state = np.asarray(ep.states[-1], dtype=np.float64)
        obs, _, terminated, _, _ = env.step(int(ep.actions[-1]))
        x_limit = cart.x_threshold
    finally:
        env.close()
    if not terminated:
        raise RuntimeError(f"episode {ep.key} stopped after {ep.ret:g} steps but its last push ends nothing")
    reason = "cart" if abs(obs[0]) > x_limit else "pole"
    return {"x": float(obs[0]), "theta": float(obs[2]), "reason": reason}


def _deltas(values: np.ndarray, scale: int) -> list[int]:
    ints = np.round(values * scale).astype(np.int64)
    return [int(v) for v in np.diff(ints, prepend=0)]


def _episode_json(ep: Episode, start: int) -> dict[str, Any]:
    """``ep`` from step ``start`` on: positions and angles as step-to-step differences of
    rounded integers (the first one absolute), actions as a string of 0/1."""
    return {
        "key": ep.key,
        "label": ep.label,
        "ret": ep.ret,
        "first_difference": ep.first_difference,
        "agreement": ep.agreement,
        "start": start,
        "x": _deltas(ep.states[start:, 0], X_SCALE),
        "theta": _deltas(ep.states[start:, 2], THETA_SCALE),
        "actions": "".join(str(int(a)) for a in ep.actions[start:]),
        "end": ending(ep),
    }


def static_data(initial: tuple[str, str] = ("int2", "tensor")) -> dict[str, Any]:
    """What the page embeds: the float32 episode and every rounded one (from its first
    difference on; before it, it is the float32 episode).

    Args:
        initial: ``(format, granularity)`` shown first beside float32.

    Returns:
        ``{"seed", "episode", "episodes", "eval_seed", "x_scale", "theta_scale",
        "fp32": {...}, "rounded": {key: {...}}, "formats", "granularities", "initial"}``.
    """
    if not (isinstance(initial, tuple) and len(initial) == 2):
        raise TypeError(f"initial must be a (format, granularity) tuple, got {_describe(initial)}")
    _check_choice(initial[0], "initial format", FORMATS)
    _check_choice(initial[1], "initial granularity", GRANULARITIES)
    seed, _ = _stored()
    ref = episode()
    rounded = {}
    for fmt in FORMATS:
        for gran in GRANULARITIES:
            ep = episode(fmt, gran)
            start = len(ep.states) if ep.first_difference is None else ep.first_difference
            rounded[ep.key] = _episode_json(ep, start)
    return {
        "seed": seed,
        "episode": EPISODE,
        "episodes": EPISODES,
        "eval_seed": EVAL_SEED,
        "x_scale": X_SCALE,
        "theta_scale": THETA_SCALE,
        "fp32": _episode_json(ref, 0),
        "rounded": rounded,
        "formats": {k: v[0] for k, v in FORMATS.items()},
        "granularities": GRANULARITIES,
        "initial": {"format": initial[0], "granularity": initial[1]},
    }


def clear_cache() -> None:
    """Forget the loaded policy and the computed episodes."""
    _stored.cache_clear()
    episode.cache_clear()


def static_html(root_id: str = "ql-policy", initial: tuple[str, str] = ("int2", "tensor")) -> str:
    """The self-contained, kernel-free figure (an HTML fragment; see :mod:`._page`).

    Args:
        root_id: ``id`` of the figure's outer element (unique per page).
        initial: ``(format, granularity)`` shown first beside float32.

    Raises:
        TypeError, ValueError: a bad ``root_id`` or ``initial``.
    """
    rid = check_root_id(root_id)
    data = static_data(initial)
    ini = data["initial"]
    esc = html.escape
    fmts = "".join(
        f'<option value="{k}"{" selected" if k == ini["format"] else ""}>{esc(v)}</option>'
        for k, v in data["formats"].items()
    )
    grans = "".join(
        f'<option value="{k}"{" selected" if k == ini["granularity"] else ""}>{esc(v)}</option>'
        for k, v in GRANULARITIES.items()
    )
    n_steps = max(len(data["fp32"]["actions"]), *(r["start"] + len(r["actions"]) for r in data["rounded"].values()))
    cards = "".join(
        f'<div class="qlf-card"><span class="k">{label}</span><span class="v" data-out="{k}">—</span></div>'
        for k, label in (
            ("ret-fp32", "Return, float32"),
            ("ret-q", "Return, rounded"),
            ("first", "First different action"),
            ("agreement", "Same action on float32's states"),
        )
    )
    panel = (
        '<div class="qlf-panel" data-panel="{p}"><p class="qlf-ptitle" data-out="title-{p}"></p>'
        '<svg data-role="cart-{p}" viewBox="0 0 200 92" role="img" aria-label="{alt}"></svg>'
        '<p class="qlf-pstate" data-out="state-{p}" aria-live="off"></p></div>'
    )
    body = (
        f'<p class="qlf-lead">Policy seed {data["seed"]}, the first of the RL page\'s {EPISODES} test episodes '
        f"(evaluation seed {EVAL_SEED}). Play it, or step through it: both carts start from the same state "
        "and move together until the rounded policy first pushes the other way.</p>"
        '<div class="qlf-controls">'
        f'<label for="{rid}-format">Rounded to<select id="{rid}-format" data-role="format">{fmts}</select></label>'
        f'<label for="{rid}-gran">Scales<select id="{rid}-gran" data-role="granularity">{grans}</select></label>'
        f'<label for="{rid}-speed">Speed<select id="{rid}-speed" data-role="speed">'
        '<option value="1">real time (50 steps/s)</option><option value="0.25">¼ speed</option>'
        '<option value="0.1">1/10 speed</option></select></label></div>'
        '<div class="qlf-transport" role="group" aria-label="playback">'
        '<button type="button" data-role="play" aria-pressed="false">▶ Play</button>'
        '<button type="button" data-role="back" aria-label="one step back">◀ step</button>'
        '<button type="button" data-role="forward" aria-label="one step forward">step ▶</button>'
        '<button type="button" data-role="to-first">go to the first difference</button>'
        '<button type="button" data-role="restart">restart</button></div>'
        '<div class="qlf-slider">'
        f'<label for="{rid}-step"><span>Step <output data-out="step" for="{rid}-step">0</output> of '
        f"{n_steps - 1}</span></label>"
        f'<input type="range" id="{rid}-step" data-role="step" min="0" max="{n_steps - 1}" step="1" value="0">'
        '<svg data-role="timeline" viewBox="0 0 760 56" role="img" aria-label="timeline: how long each '
        'episode lasts and where the actions first differ"></svg></div>'
        '<div class="qlf-panels">'
        + panel.format(p="fp32", alt="the float32 policy's cart and pole")
        + panel.format(p="q", alt="the rounded policy's cart and pole")
        + "</div>"
        '<p class="qlf-note">The track runs from −2.4 m to +2.4 m: an episode ends when the cart leaves it, '
        "when the pole leans past 12°, or after 500 steps (the best return). Arrows: the push chosen at this "
        "step, red where the two policies choose differently.</p>"
        f'<div class="qlf-cards">{cards}</div>'
        '<p class="qlf-foot">Computed by quantlab when this page was built (<code>rl.rollout</code>, '
        "<code>rl.quantize_policy</code>, <code>rl.action_agreement</code>), exact on every CPU. Keys while "
        "the figure has focus: Space or K play and pause, ← and → step, Home restarts. No kernel needed.</p>"
    )
    return figure_html(
        root_id=rid,
        name="policy",
        title="Watch the policy",
        body=body,
        data=data,
        label="Watch the policy: a CartPole episode of a float32 policy and of its copy "
        "with rounded weights, animated side by side",
    )
