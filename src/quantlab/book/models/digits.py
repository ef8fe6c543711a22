"""A tiny classifier for scikit-learn's bundled digits, trained in seconds on the CPU.

The data are the 1,797 8x8 images of handwritten digits that ship with scikit-learn
(:func:`sklearn.datasets.load_digits`; nothing is downloaded). Pixel values 0..16 are divided
by 16. A fixed, stratified split (``split_seed``) keeps 30% of the images for testing.

The model is a multilayer perceptron 64-64-64-10 with ReLU activations (8,970 parameters):
three ``Linear`` layers. :func:`train` fits it with Adam on minibatches, seeded, so that the
same seed gives the same weights. :func:`quantize_weights` rounds the weights of every
``Linear`` layer to a format (biases stay in float32, as most weight-only schemes keep them),
and :func:`accuracy_vs_bits` repeats train -> quantize -> evaluate over several seeds.

Taught in: chapters/03_core_tradeoff.ipynb, "Accuracy of a trained model".
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ...algorithms._model_utils import fake_quantized_copy
from ...core.formats import FormatLike
from ...core.validate import check_nonnegative_int, check_positive_int

__all__ = [
    "DigitsData",
    "DigitsMLP",
    "load_data",
    "train",
    "accuracy",
    "quantize_weights",
    "accuracy_vs_bits",
    "summarize",
]


@dataclass(frozen=True)
class DigitsData:
    """The digits split into train and test tensors.

    Attributes:
        X_train: float32 ``(n_train, 64)``, pixels scaled to [0, 1].
        y_train: int64 ``(n_train,)``, labels 0..9.
        X_test: float32 ``(n_test, 64)``.
        y_test: int64 ``(n_test,)``.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


def load_data(test_size: float = 0.3, split_seed: int = 0) -> DigitsData:
    """Load the bundled digits and split them (stratified by label).

    Args:
        test_size: fraction of the 1,797 images held out for testing, in (0, 1).
        split_seed: seed of the split.

    Returns:
        :class:`DigitsData` (with the defaults: 1,257 training and 540 test images).

    Raises:
        ValueError: ``test_size`` outside (0, 1) or a negative seed.
    """
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise TypeError(f"test_size must be a number in (0, 1), got {test_size!r}")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    split_seed = check_nonnegative_int(split_seed, "split_seed")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=split_seed, stratify=y)
    return DigitsData(torch.from_numpy(X_tr), torch.from_numpy(y_tr), torch.from_numpy(X_te), torch.from_numpy(y_te))


class DigitsMLP(nn.Module):
    """Multilayer perceptron ``64 -> hidden -> hidden -> 10`` with ReLU (logits out).

    Args:
        hidden: width of the two hidden layers (default 64).

    Shapes:
        input ``(batch, 64)``, output ``(batch, 10)``.
    """

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        hidden = check_positive_int(hidden, "hidden")
        self.net = nn.Sequential(
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@contextmanager
def _threads(n: Optional[int]) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)`` and restore the previous count afterwards."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Adam:
    """Adam (Kingma & Ba, 2015) with torch.optim.Adam's defaults, written out in place.

    ``torch.optim`` imports the compiler stack on first use (about 1.5 s of CPU here), longer
    than training this model; these few lines compute the same update (a test checks it
    against ``torch.optim.Adam``)::

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    Gradients are cleared after each step.
    """

    def __init__(
        self, params: list[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = params
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        bc1 = 1 - self.b1**self.t
        bc2 = 1 - self.b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = v.sqrt().div_(math.sqrt(bc2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / bc1)
            p.grad = None


def train(
    seed: int = 0,
    data: Optional[DigitsData] = None,
    *,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-2,
    hidden: int = 64,
    num_threads: Optional[int] = 1,
) -> DigitsMLP:
    """Train a :class:`DigitsMLP` with Adam and cross-entropy; seeded, under a second.

    The seed fixes the initial weights and the order of the minibatches (the data split is
    fixed by ``data``), so the spread over seeds is the spread of training itself.

    Args:
        seed: seed of the initialisation and of the shuffling.
        data: the split (default :func:`load_data` with its defaults).
        epochs: passes over the training set.
        batch_size: images per step.
        lr: Adam's learning rate.
        hidden: hidden width.
        num_threads: torch threads while training (1 is fastest for a model this small; the
            previous setting is restored), or None to leave the setting alone.

    Returns:
        The trained model in eval mode (float32).

    Raises:
        ValueError, TypeError: a negative seed or a non-positive epochs/batch_size/lr/hidden.
    """
    seed = check_nonnegative_int(seed, "seed")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if num_threads is not None:
        num_threads = check_positive_int(num_threads, "num_threads")
    if data is None:
        data = load_data()
    if not isinstance(data, DigitsData):
        raise TypeError(f"data must be a DigitsData, got {type(data).__name__}")
    with _threads(num_threads):
        torch.manual_seed(seed)
        model = DigitsMLP(hidden)
        gen = torch.Generator().manual_seed(seed)
        adam = _Adam(list(model.parameters()), lr=float(lr))
        X, y = data.X_train, data.y_train
        n = X.shape[0]
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
                loss.backward()
                adam.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``X``'s rows whose arg-max logit equals the label ``y`` (0 to 1).

    Raises:
        ValueError: ``X`` and ``y`` hold different numbers of examples, or none.
    """
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must hold the same number of examples, got {X.shape[0]} and {y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError("X is empty: accuracy needs at least one example")
    return float((model(X).argmax(dim=-1) == y).float().mean())


def quantize_weights(model: nn.Module, fmt: FormatLike, granularity: str = "tensor", **kwargs: Any) -> nn.Module:
    """A copy of ``model`` whose ``Linear`` weights are rounded to ``fmt`` (fake quantization).

    Each weight matrix ``(out_features, in_features)`` goes through
    :func:`quantlab.fake_quantize` (by :func:`quantlab.fake_quantized_copy`); with
    ``granularity="channel"`` there is one scale per output row (``axis=0``). Biases and
    everything else are left in float32. The copy still stores float32 numbers (this
    measures the *accuracy* of the format, not its size).

    Args:
        model: any module with ``nn.Linear`` layers (not modified).
        fmt: format, e.g. ``"int4"``.
        granularity: ``"tensor"``, ``"channel"`` or ``"group"`` (then pass ``group_size``).
        **kwargs: further keyword arguments of :func:`quantlab.quantize`.

    Returns:
        The quantized copy, in eval mode.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ValueError: it has no ``Linear`` layer,
            or a bad format/granularity (from :func:`quantlab.quantize`).
    """
    return fake_quantized_copy(model, fmt, granularity=granularity, **kwargs).eval()


def accuracy_vs_bits(
    bits: Iterable[int] = (8, 6, 4, 3, 2),
    granularities: Sequence[str] = ("tensor", "channel"),
    seeds: Iterable[int] = range(5),
    data: Optional[DigitsData] = None,
    **train_kwargs: Any,
) -> list[dict[str, Any]]:
    """Train one model per seed, quantize its weights to ``intN`` for each N, test it.

    Args:
        bits: integer bit widths, each from 2 to 16 (symmetric absmax ``intN``).
        granularities: ``"tensor"`` and/or ``"channel"``.
        seeds: training seeds.
        data: the split (default :func:`load_data`).
        **train_kwargs: passed to :func:`train` (``epochs``, ``lr``, ...).

    Returns:
        Rows ``{"seed", "bits", "granularity", "accuracy"}`` -- first the float32 model
        (``bits=32``, ``granularity="fp32"``), then every (bits, granularity) -- for each seed.

    Raises:
        ValueError: empty ``bits``/``seeds``/``granularities``, a width outside 2..16, or a
            granularity other than "tensor"/"channel".
    """
    bit_list = list(bits)
    seed_list = [check_nonnegative_int(s, "seed") for s in seeds]
    gran_list = list(granularities)
    if not bit_list or not seed_list or not gran_list:
        raise ValueError(f"bits, granularities and seeds must be non-empty, got {bit_list}, {gran_list}, {seed_list}")
    for b in bit_list:
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or not 2 <= b <= 16:
            raise ValueError(f"bits must be ints from 2 to 16, got {b!r}")
    for g in gran_list:
        if g not in ("tensor", "channel"):
            raise ValueError(f"granularities must be 'tensor' or 'channel', got {g!r}")
    if data is None:
        data = load_data()
    rows: list[dict[str, Any]] = []
    for seed in seed_list:
        model = train(seed, data, **train_kwargs)
        rows.append(
            {"seed": seed, "bits": 32, "granularity": "fp32", "accuracy": accuracy(model, data.X_test, data.y_test)}
        )
        for b in bit_list:
            for g in gran_list:
                qm = quantize_weights(model, f"int{int(b)}", granularity=g)
                rows.append(
                    {"seed": seed, "bits": int(b), "granularity": g, "accuracy": accuracy(qm, data.X_test, data.y_test)}
                )
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, standard deviation, min and max of accuracy per (granularity, bits) over seeds.

    Args:
        rows: output of :func:`accuracy_vs_bits`.

    Returns:
        One row per (granularity, bits) in first-seen order: ``granularity``, ``bits``,
        ``n`` (seeds), ``mean``, ``std`` (sample, ``ddof=1``; 0 for one seed), ``min``,
        ``max``, and ``drop`` -- the mean over seeds of (fp32 accuracy - this accuracy),
        paired by seed (``None`` if the rows hold no fp32 entry).

    Raises:
        ValueError: empty ``rows`` or a row missing a key.
    """
    if not rows:
        raise ValueError("rows must not be empty")
    for r in rows:
        for k in ("seed", "bits", "granularity", "accuracy"):
            if k not in r:
                raise ValueError(f"each row needs seed, bits, granularity and accuracy; missing {k!r} in {r}")
    base = {r["seed"]: r["accuracy"] for r in rows if r["granularity"] == "fp32"}
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["granularity"], r["bits"]), []).append(r)
    out = []
    for (g, b), rs in groups.items():
        acc = np.array([r["accuracy"] for r in rs], dtype=np.float64)
        drops = [base[r["seed"]] - r["accuracy"] for r in rs if r["seed"] in base]
        out.append(
            {
                "granularity": g,
                "bits": b,
                "n": len(rs),
                "mean": float(acc.mean()),
                "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "min": float(acc.min()),
                "max": float(acc.max()),
                "drop": float(np.mean(drops)) if len(drops) == len(rs) else None,
            }
        )
    return out
