"""Error against bits: measure a format's error on a tensor, sweep bit widths, fit the slope.

The rule of thumb for a uniform quantizer is that every extra bit halves the step and so
divides the noise power by 4: the signal-to-quantization-noise ratio (SQNR) grows by
``20 log10(2) = 6.02 dB`` per bit. What the *offset* is depends on the signal. With a step
``delta = absmax / qmax`` (symmetric absmax scaling) and rounding noise spread evenly over
one step (power ``delta^2 / 12``), a signal of RMS ``sigma`` gives

    SQNR = 10 log10(12) + 20 log10(qmax) - 20 log10(absmax / sigma)
         ~ 6.02 * bits + 4.77 - 20 log10(crest factor)        (qmax ~ 2^(bits-1))

where the *crest factor* ``absmax / sigma`` says how far the largest value sticks out above
the typical one. A full-scale sine has crest factor sqrt(2), which turns 4.77 into the
textbook's +1.76 dB; uniform data (crest sqrt(3)) gets 0 dB; Gaussian weights have a crest
factor of 4 to 5 over a layer and heavy-tailed weights far more, which is why real weights sit
well below the rule. Smaller groups lower each group's crest factor and win part of it back.

Functions:

* :func:`gaussian_weights`, :func:`student_t_weights` -- seeded synthetic weight matrices.
* :func:`crest_factor`, :func:`uniform_noise_sqnr_db`, :func:`rule_of_thumb_db` -- the theory.
* :func:`error_row` -- quantize one tensor one way and measure it (one table row).
* :func:`sqnr_sweep` -- rows for every bit width x granularity.
* :func:`fit_db_per_bit` -- least-squares slope (dB per bit) and intercept.
* :func:`rows_to_markdown` -- a list of rows as a Markdown table for a notebook.

Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits" and "Granularity".
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..core._backend import ArrayLike, as_tensor, require_float
from ..core.formats import FloatFormat, FormatLike, get_format
from ..core.metrics import sqnr_db
from ..core.quantize import quantize
from ..core.scheme import EXACT_SCALE_DTYPE
from ..core.validate import check_nonnegative_int

__all__ = [
    "DB_PER_BIT",
    "SINE_OFFSET_DB",
    "GranularitySpec",
    "gaussian_weights",
    "student_t_weights",
    "crest_factor",
    "uniform_noise_sqnr_db",
    "rule_of_thumb_db",
    "granularity_label",
    "error_row",
    "sqnr_sweep",
    "fit_db_per_bit",
    "rows_to_markdown",
]

DB_PER_BIT: float = 20 * math.log10(2)
"""6.0206 dB: the SQNR gained per extra bit of a uniform quantizer (noise power / 4)."""

SINE_OFFSET_DB: float = 10 * math.log10(1.5)
"""1.7609 dB: the offset of ``6.02 * bits + 1.76`` for a full-scale sine (crest factor sqrt(2))."""

GranularitySpec = Union[str, int]
"""``"tensor"``, ``"channel"``, ``"cast"`` (no scale, fp16/bf16/fp32 only) or a group size (int)."""


# --------------------------------------------------------------------------- synthetic weights


def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (numbers.Integral,)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        dims = tuple(shape)
    except TypeError as err:
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from err
    if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"shape must hold ints, got {shape!r}")
    if len(dims) == 0 or any(d <= 0 for d in dims):
        raise ValueError(f"shape must hold at least one positive dimension, got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(float(value)) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def gaussian_weights(shape: Any = (512, 1024), std: float = 0.02, seed: int = 0) -> torch.Tensor:
    """A seeded matrix of normal weights, ``N(0, std^2)``, as float32.

    Args:
        shape: an int or a tuple of positive ints, e.g. ``(out_features, in_features)``.
        std: standard deviation (> 0). 0.02 is a common initialisation scale.
        seed: seed of the generator (the same seed gives the same tensor).

    Returns:
        float32 tensor of ``shape``.

    Raises:
        ValueError, TypeError: bad shape, ``std <= 0`` or a negative seed.

    Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits".
    """
    dims = _check_shape(shape)
    std = _check_positive(std, "std")
    gen = torch.Generator().manual_seed(check_nonnegative_int(seed, "seed"))
    return torch.randn(dims, generator=gen, dtype=torch.float32).mul_(std)


def student_t_weights(shape: Any = (512, 1024), df: float = 3.0, std: float = 0.02, seed: int = 0) -> torch.Tensor:
    """A seeded matrix of heavy-tailed weights: Student-t with ``df`` degrees of freedom.

    Trained networks' weights have heavier tails than a Gaussian: a few weights are many
    standard deviations out. A Student-t with small ``df`` reproduces that; ``df -> inf``
    gives back the Gaussian. The draw is rescaled so that its *population* standard deviation
    is ``std`` (a t variable has variance ``df / (df - 2)``).

    Args:
        shape: an int or a tuple of positive ints.
        df: degrees of freedom, > 2 so that the variance exists (3 is very heavy-tailed,
            10 mildly).
        std: standard deviation of the distribution (> 0).
        seed: seed of the generator.

    Returns:
        float32 tensor of ``shape``.

    Raises:
        ValueError, TypeError: bad shape, ``df <= 2``, ``std <= 0`` or a negative seed.

    Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits".
    """
    dims = _check_shape(shape)
    df = _check_positive(df, "df")
    if df <= 2:
        raise ValueError(f"df must be > 2 so that the variance exists, got {df}")
    std = _check_positive(std, "std")
    rng = np.random.default_rng(check_nonnegative_int(seed, "seed"))
    t = rng.standard_t(df, size=dims) * (std / math.sqrt(df / (df - 2)))
    return torch.from_numpy(t.astype(np.float32))


# --------------------------------------------------------------------------- theory


def crest_factor(x: ArrayLike) -> float:
    """``max|x| / sqrt(mean(x^2))``: how far the largest value sticks out above the RMS.

    Raises:
        ValueError: ``x`` empty or all zeros.

    Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits".
    """
    t, _ = as_tensor(x)
    require_float(t)
    if t.numel() == 0:
        raise ValueError("x is empty: a crest factor needs at least one element")
    t = t.double()
    rms = float(t.square().mean().sqrt())
    if rms == 0:
        raise ValueError("crest_factor is undefined for an all-zero x")
    return float(t.abs().max()) / rms


def _check_bits(bits: Any, name: str = "bits", lo: int = 2, hi: int = 16) -> int:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"{name} must be an int from {lo} to {hi}, got {bits!r}")
    if not lo <= bits <= hi:
        raise ValueError(f"{name} must be from {lo} to {hi}, got {bits}")
    return int(bits)


def uniform_noise_sqnr_db(bits: Union[int, Sequence[int]], crest: float) -> Union[float, np.ndarray]:
    """SQNR predicted for symmetric absmax ``intN`` quantization if rounding noise is uniform.

    Formula: ``10 log10(12) + 20 log10(qmax) - 20 log10(crest)`` with ``qmax = 2^(bits-1) - 1``
    (step ``absmax / qmax``, noise power ``step^2 / 12``, signal power ``(absmax / crest)^2``).
    The uniform-noise model holds when the step is small against the spread of the values;
    at 2-3 bits most values round to zero and the real SQNR falls below it.

    Args:
        bits: 2 to 16, or a sequence of them.
        crest: the signal's crest factor ``absmax / RMS`` (>= 1), see :func:`crest_factor`.

    Returns:
        dB, a float (or a numpy array for a sequence of bit widths).

    Raises:
        ValueError, TypeError: bits outside 2..16 or ``crest < 1``.

    Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits".
    """
    crest = _check_positive(crest, "crest")
    if crest < 1:
        raise ValueError(f"crest must be >= 1 (absmax is at least the RMS), got {crest}")
    single = isinstance(bits, str) or not isinstance(bits, (Sequence, np.ndarray, range))
    arr = [_check_bits(b) for b in ([bits] if single else list(bits))]
    qmax = np.array([(1 << (b - 1)) - 1 for b in arr], dtype=np.float64)
    out = 10 * math.log10(12) + 20 * np.log10(qmax) - 20 * math.log10(crest)
    return float(out[0]) if single else out


def rule_of_thumb_db(
    bits: Union[float, Sequence[float]], offset_db: float = SINE_OFFSET_DB
) -> Union[float, np.ndarray]:
    """The textbook line ``6.02 * bits + offset_db`` (default offset 1.76 dB, a full-scale sine).

    Args:
        bits: a bit width or a sequence of them.
        offset_db: the intercept in dB.

    Returns:
        dB, a float or a numpy array.

    Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits".
    """
    if isinstance(offset_db, bool) or not isinstance(offset_db, numbers.Real):
        raise TypeError(f"offset_db must be a number, got {offset_db!r}")
    if isinstance(bits, (Sequence, np.ndarray, range)) and not isinstance(bits, str):
        arr = np.asarray(bits)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"bits must be a number or a sequence of numbers, got {bits!r}")
        return DB_PER_BIT * arr.astype(np.float64) + offset_db
    if isinstance(bits, bool) or not isinstance(bits, numbers.Real):
        raise TypeError(f"bits must be a number or a sequence of numbers, got {bits!r}")
    return DB_PER_BIT * float(bits) + offset_db


# --------------------------------------------------------------------------- measuring


def granularity_label(granularity: GranularitySpec) -> str:
    """A short name for a granularity spec: ``"tensor"``, ``"channel"``, ``"cast"`` or ``"g128"``.

    Raises:
        ValueError, TypeError: not one of the accepted specs (see :data:`GranularitySpec`).
    """
    return _parse_granularity(granularity)[2]


def _parse_granularity(spec: GranularitySpec) -> tuple[str, Optional[int], str]:
    """(granularity, group_size, label) for a spec."""
    if isinstance(spec, str):
        if spec in ("tensor", "channel", "cast"):
            return spec, None, spec
        raise ValueError(f"granularity must be 'tensor', 'channel', 'cast' or a group size (int), got {spec!r}")
    if isinstance(spec, bool) or not isinstance(spec, numbers.Integral):
        raise TypeError(f"granularity must be 'tensor', 'channel', 'cast' or a group size (int), got {spec!r}")
    if spec <= 0:
        raise ValueError(f"a group size must be positive, got {spec}")
    return "group", int(spec), f"g{int(spec)}"


def error_row(
    x: ArrayLike,
    fmt: FormatLike,
    granularity: GranularitySpec = "tensor",
    *,
    axis: int = 0,
    scale_dtype: str = EXACT_SCALE_DTYPE,
) -> dict[str, Any]:
    """Quantize ``x`` one way and measure what it costs and what it loses.

    Args:
        x: float array or tensor (e.g. a weight matrix ``(out_features, in_features)``).
        fmt: format name or object, e.g. ``"int4"``, ``"fp8_e4m3"``, ``"nf4"``, ``"bf16"``.
        granularity: ``"tensor"`` (one scale), ``"channel"`` (one per index along ``axis``),
            a group size such as 128 (groups along the last axis), or ``"cast"`` (no scale:
            a plain cast to fp32/fp16/bf16).
        axis: channel axis for ``"channel"``.
        scale_dtype: dtype the scales are stored in (``"fp32"``, ``"fp16"``, ``"bf16"``).

    Returns:
        A dict with ``format``, ``bits`` (of one code), ``granularity`` (label, e.g. ``"g128"``),
        ``group_size``, ``bits_per_weight`` (packed storage incl. scales,
        :attr:`QTensor.bits_per_weight`), ``sqnr_db`` (``inf`` if exact) and ``relative_error``.

    Raises:
        ValueError, TypeError: bad format, granularity or tensor (from :func:`quantize`);
            ``"cast"`` with a format that is not fp32/fp16/bf16.

    Taught in: chapters/03_core_tradeoff.ipynb, "The tradeoff table".
    """
    f = get_format(fmt)
    gran, group_size, label = _parse_granularity(granularity)
    if gran == "cast":
        if not (isinstance(f, FloatFormat) and f.bits >= 16):
            raise ValueError(f"granularity='cast' needs fp32, fp16 or bf16, got fmt={f.name}")
        q = quantize(x, f, scaled=False)
    else:
        q = quantize(x, f, granularity=gran, axis=axis, group_size=group_size, scale_dtype=scale_dtype, scaled=True)
    x_hat = q.dequantize()
    snr = sqnr_db(x, x_hat)
    return {
        "format": f.name,
        "bits": f.bits,
        "granularity": label,
        "group_size": group_size,
        "bits_per_weight": q.bits_per_weight,
        "sqnr_db": snr,
        "relative_error": 0.0 if snr == math.inf else 10 ** (-snr / 20),  # the same number
    }


def sqnr_sweep(
    x: ArrayLike,
    bits: Iterable[int] = range(2, 17),
    granularities: Sequence[GranularitySpec] = ("tensor", 128),
    *,
    fmt: Callable[[int], FormatLike] = lambda b: f"int{b}",
    axis: int = 0,
    scale_dtype: str = EXACT_SCALE_DTYPE,
) -> list[dict[str, Any]]:
    """SQNR of ``x`` at every bit width and granularity: one :func:`error_row` each.

    Args:
        x: float array or tensor.
        bits: bit widths, each from 2 to 16.
        granularities: specs as in :func:`error_row`, e.g. ``("tensor", "channel", 128, 32)``.
        fmt: maps a bit width to a format (default symmetric ``intN``).
        axis, scale_dtype: see :func:`error_row`.

    Returns:
        A list of row dicts (see :func:`error_row`), bit widths in the outer loop.

    Raises:
        ValueError, TypeError: empty ``bits`` or ``granularities``, a bit width outside 2..16,
            a bad granularity.

    Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits".
    """
    bit_list = [_check_bits(b) for b in bits]
    if not bit_list:
        raise ValueError("bits must hold at least one bit width, got none")
    if isinstance(granularities, (str, int)):
        raise TypeError(f"granularities must be a sequence of specs, got {granularities!r}")
    grans = list(granularities)
    if not grans:
        raise ValueError("granularities must hold at least one spec, got none")
    for g in grans:
        _parse_granularity(g)
    if not callable(fmt):
        raise TypeError(f"fmt must map a bit width to a format, got {fmt!r}")
    return [error_row(x, fmt(b), g, axis=axis, scale_dtype=scale_dtype) for b in bit_list for g in grans]


def fit_db_per_bit(bits: Sequence[float], sqnr: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``sqnr = slope * bits + intercept``.

    Args:
        bits: bit widths (at least two distinct values).
        sqnr: SQNR in dB at those widths, finite, same length.

    Returns:
        ``(slope_db_per_bit, intercept_db)``.

    Raises:
        ValueError: different lengths, fewer than two distinct bit widths, or non-finite values.

    Taught in: chapters/03_core_tradeoff.ipynb, "Error versus bits".
    """
    b = np.asarray(list(bits), dtype=np.float64)
    s = np.asarray(list(sqnr), dtype=np.float64)
    if b.shape != s.shape or b.ndim != 1:
        raise ValueError(f"bits and sqnr must be 1-d and of the same length, got {b.shape} and {s.shape}")
    if len(np.unique(b)) < 2:
        raise ValueError(f"bits must hold at least two distinct values, got {b.tolist()}")
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise ValueError(f"bits and sqnr must be finite, got bits={b.tolist()} sqnr={s.tolist()}")
    slope, intercept = np.polyfit(b, s, 1)
    return float(slope), float(intercept)


def rows_to_markdown(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    headers: Optional[Sequence[str]] = None,
    formats: Optional[Mapping[str, str]] = None,
) -> str:
    """A list of row dicts as a Markdown table (for ``IPython.display.Markdown``).

    Args:
        rows: dicts holding at least ``columns``.
        columns: keys to show, in order.
        headers: column titles (default: the keys).
        formats: format spec per key, e.g. ``{"sqnr_db": ".1f"}``; None values print as "-".

    Returns:
        The table as a string, one line per row.

    Raises:
        ValueError: ``headers`` of the wrong length, or a row missing a column.
    """
    cols = list(columns)
    heads = list(headers) if headers is not None else cols
    if len(heads) != len(cols):
        raise ValueError(f"headers must have {len(cols)} entries, got {len(heads)}")
    fmts = dict(formats or {})
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(cols)]
    for i, row in enumerate(rows):
        missing = [c for c in cols if c not in row]
        if missing:
            raise ValueError(f"row {i} has no column(s) {missing}")
        cells = []
        for c in cols:
            v = row[c]
            cells.append("-" if v is None else format(v, fmts.get(c, "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
