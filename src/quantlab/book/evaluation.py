"""How much did quantization change a model's outputs? Shared measurements for the chapter.

* :func:`embedding_agreement` -- for a sentence encoder (MiniLM): the mean cosine between
  each sentence's quantized and fp32 embedding, and the Spearman rank correlation of the
  two sentence-similarity matrices (does the quantized model still *rank* pairs of
  sentences the same way?).
* :func:`perplexity` -- for a causal language model (SmolLM2): ``exp`` of the mean
  next-token cross-entropy over a token stream, in non-overlapping windows.
* :func:`generate` -- a short greedy continuation, so a reader can *see* what a perplexity
  of 20 or 100 means.
* :func:`load_sentences` -- the chapter's evaluation and calibration sentences (kept apart).

Taught in: chapters/04_in_practice.ipynb ("One table over formats") and
chapters/04b_language_model.ipynb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import torch

from ..core._backend import ArrayLike, as_tensor, require_float

__all__ = [
    "Agreement",
    "embedding_agreement",
    "perplexity",
    "generate",
    "load_sentences",
    "SENTENCE_SPLITS",
]

SENTENCE_SPLITS = ("evaluation", "calibration")


# --------------------------------------------------------------------------- sentences


def load_sentences(split: str = "evaluation") -> list[str]:
    """Sentences written for the chapter, one per line in ``quantlab/data/``.

    Args:
        split: ``"evaluation"`` (60 sentences over 10 topics, used to compare outputs) or
            ``"calibration"`` (a separate set, used by GPTQ/AWQ to collect activations).
            The two sets share no sentence.

    Returns:
        The sentences, in file order.

    Raises:
        ValueError: unknown split.
    """
    if split not in SENTENCE_SPLITS:
        raise ValueError(f"split must be one of {SENTENCE_SPLITS}, got {split!r}")
    text = resources.files("quantlab").joinpath("data", f"{split}_sentences.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# --------------------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class Agreement:
    """Agreement of a quantized model's embeddings with the reference.

    Attributes:
        mean_cosine: mean over sentences of ``cos(e_ref_i, e_i)`` (1 = same direction).
        min_cosine: the worst sentence's cosine.
        spearman: Spearman rank correlation between the off-diagonal entries of the two
            cosine-similarity matrices (1 = every pair of sentences ranked the same).
    """

    mean_cosine: float
    min_cosine: float
    spearman: float


def _rows(x: ArrayLike, name: str) -> torch.Tensor:
    t, _ = as_tensor(x, name)
    require_float(t, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (sentences, dim), got shape {tuple(t.shape)}")
    return t.double()


def embedding_agreement(ref_emb: ArrayLike, emb: ArrayLike) -> Agreement:
    """Compare sentence embeddings with reference ones.

    With unit-normalised rows ``r_i`` (reference) and ``e_i``:

    * ``mean_cosine = mean_i <r_i, e_i>``;
    * ``spearman = Spearman(S_ref[i<j], S[i<j])`` with ``S = E E^T`` (pairwise cosines),
      computed by ``scipy.stats.spearmanr`` over the ``n(n-1)/2`` sentence pairs.

    Args:
        ref_emb: ``(n, d)`` reference embeddings (numpy or torch), e.g. fp32 MiniLM.
        emb: ``(n, d)`` embeddings of the same sentences from the quantized model.

    Returns:
        An :class:`Agreement`.

    Raises:
        ValueError: shapes differ, are not 2-D, fewer than 3 sentences, a zero row, or
            non-finite values.
        TypeError: non-float inputs.

    Taught in: chapters/04_in_practice.ipynb, "One table over formats".
    """
    from scipy.stats import spearmanr

    r = _rows(ref_emb, "ref_emb")
    e = _rows(emb, "emb").to(r.device)
    if r.shape != e.shape:
        raise ValueError(f"emb must have the shape of ref_emb {tuple(r.shape)}, got {tuple(e.shape)}")
    if r.shape[0] < 3:
        raise ValueError(f"need at least 3 sentences for a rank correlation, got {r.shape[0]}")
    if not (torch.isfinite(r).all() and torch.isfinite(e).all()):
        raise ValueError("ref_emb and emb must be finite")
    rn, en = r.norm(dim=1), e.norm(dim=1)
    if bool((rn == 0).any()) or bool((en == 0).any()):
        raise ValueError("every embedding needs a non-zero norm, got a zero row")
    r = r / rn[:, None]
    e = e / en[:, None]
    cos = (r * e).sum(dim=1)
    iu = torch.triu_indices(r.shape[0], r.shape[0], offset=1, device=r.device)
    s_ref = (r @ r.T)[iu[0], iu[1]].cpu().numpy()
    s = (e @ e.T)[iu[0], iu[1]].cpu().numpy()
    rho = float(spearmanr(s_ref, s).statistic)
    return Agreement(float(cos.mean()), float(cos.min()), rho)


# --------------------------------------------------------------------------- language models


def _device_of(model: torch.nn.Module) -> torch.device:
    """Where ``model`` computes: the device of its first parameter (CPU if it has none)."""
    p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return torch.device("cpu") if p is None else p.device


def _check_tokens(tokens: ArrayLike) -> torch.Tensor:
    t, _ = as_tensor(tokens, "tokens")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"tokens must be integer token ids, got dtype {str(t.dtype).replace('torch.', '')}")
    if t.dim() != 1:
        raise ValueError(f"tokens must be a 1-D stream of token ids, got shape {tuple(t.shape)}")
    if t.numel() < 2:
        raise ValueError(f"tokens must hold at least 2 ids, got {t.numel()}")
    return t.long()


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    tokens: ArrayLike,
    context: int = 256,
    *,
    progress: bool = False,
) -> float:
    """Perplexity of a causal language model on a token stream.

    The stream is cut into non-overlapping windows of ``context`` tokens (the last one may
    be shorter); in each window the model predicts tokens 2..L from the ones before, so a
    window of L tokens contributes L - 1 predictions. With ``N`` predictions in all,

        ppl = exp( -(1/N) * sum log p(token_t | tokens before t in its window) )

    A model that guessed uniformly among V tokens would score V; lower is better.

    Args:
        model: a transformers causal LM (returns ``.logits``), in eval mode; may be quantized.
        tokens: 1-D integer tensor/array of token ids (e.g. from
            :func:`quantlab.models.smollm.text_tokens`); moved to the model's device.
        context: window length, >= 2.
        progress: show a tqdm bar over the windows.

    Returns:
        The perplexity as a float.

    Raises:
        ValueError: ``context`` < 2, or ``tokens`` not 1-D or shorter than 2.
        TypeError: float tokens, non-int ``context``.

    Taught in: chapters/04b_language_model.ipynb.
    """
    if isinstance(context, bool) or not isinstance(context, int):
        raise TypeError(f"context must be an int, got {context!r}")
    if context < 2:
        raise ValueError(f"context must be >= 2, got {context}")
    t = _check_tokens(tokens)
    from tqdm.auto import tqdm

    t = t.to(_device_of(model))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    starts = [s for s in range(0, t.numel(), context) if t.numel() - s >= 2]
    try:
        for s in tqdm(starts, desc="perplexity", disable=not progress, leave=False):
            window = t[s : s + context].unsqueeze(0)
            logits = model(input_ids=window).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum")
            total += float(nll)
            count += window.shape[1] - 1
    finally:
        model.train(was_training)
    return math.exp(total / count)


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer, prompt: str, n: int = 20) -> str:
    """Greedy continuation of ``prompt``: ``n`` new tokens, each the most likely one.

    Deterministic (no sampling), so a stored notebook output can be checked.

    Args:
        model: a transformers causal LM (possibly quantized).
        tokenizer: its tokenizer.
        prompt: the text to continue.
        n: number of new tokens, >= 1.

    Returns:
        The generated continuation only (without the prompt), decoded to text.

    Raises:
        TypeError: ``prompt`` not a string or ``n`` not an int.
        ValueError: ``n`` < 1 or an empty prompt.

    Taught in: chapters/04b_language_model.ipynb.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError("prompt must not be empty")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    ids = ids.to(_device_of(model))
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
