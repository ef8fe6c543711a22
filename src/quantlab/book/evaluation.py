"""How much did quantization change a model's outputs? Shared measurements for the chapter.

* :func:`embedding_agreement` -- for a sentence encoder (MiniLM): the mean cosine between
  each sentence's quantized and fp32 embedding, and the Spearman rank correlation of the
  two sentence-similarity matrices (does the quantized model still *rank* pairs of
  sentences the same way?).
* :func:`perplexity` -- for a causal language model (SmolLM2): ``exp`` of the mean
  next-token cross-entropy over a token stream, in non-overlapping windows.
* :func:`next_token_logprobs`, :func:`kl_divergence`, :func:`top_token_agreement` and
  :func:`compare_to_reference` -- how far a quantized language model's next-token
  distributions moved from the reference model's: the mean ``KL(p_ref || p)`` and the share
  of positions whose most likely token is unchanged (llama.cpp's "same top p").
* :func:`generate` -- a short greedy continuation, so a reader can *see* what a perplexity
  of 20 or 100 means.
* :func:`load_sentences` -- the chapter's evaluation and calibration sentences (kept apart).

Taught in: chapters/04_in_practice.ipynb ("One table over formats") and
chapters/04b_language_model.ipynb; the KL divergence and top-token agreement in
chapters/04d_beyond_int4.ipynb.
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
    "next_token_logprobs",
    "kl_divergence",
    "top_token_agreement",
    "OutputComparison",
    "compare_to_reference",
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


# --------------------------------------------------------------------------- distance to a reference


def _check_context(context: int) -> None:
    if isinstance(context, bool) or not isinstance(context, int):
        raise TypeError(f"context must be an int, got {context!r}")
    if context < 2:
        raise ValueError(f"context must be >= 2, got {context}")


def _windows(t: torch.Tensor, context: int) -> list[int]:
    return [s for s in range(0, t.numel(), context) if t.numel() - s >= 2]


def _n_predictions(t: torch.Tensor, context: int) -> int:
    return sum(min(context, t.numel() - s) - 1 for s in _windows(t, context))


@torch.no_grad()
def _window_logprobs(model: torch.nn.Module, t: torch.Tensor, context: int):
    """Yield ``(window, log-probs of its predictions)`` for every window, in float32."""
    t = t.to(_device_of(model))
    was_training = model.training
    model.eval()
    try:
        for s in _windows(t, context):
            window = t[s : s + context].unsqueeze(0)
            logits = model(input_ids=window).logits[0, :-1].float()
            yield window[0], torch.log_softmax(logits, dim=-1)
    finally:
        model.train(was_training)


@torch.no_grad()
def next_token_logprobs(model: torch.nn.Module, tokens: ArrayLike, context: int = 256) -> torch.Tensor:
    """The model's next-token log-probabilities at every predicted position, on the CPU.

    Same windows as :func:`perplexity`: row ``i`` is ``log p(. | tokens before)`` for the
    ``i``-th prediction. Compute it once for a reference model and pass it as ``ref`` to
    :func:`kl_divergence`, :func:`top_token_agreement` or :func:`compare_to_reference`, so
    the reference runs only once. Memory: ``N x vocabulary`` float32 (1023 predictions of
    SmolLM2's 49,152 tokens are about 200 MB).

    Args:
        model: a transformers causal LM (returns ``.logits``).
        tokens: 1-D integer token ids.
        context: window length, >= 2.

    Returns:
        ``(N, vocabulary)`` float32 tensor, ``N`` = number of predictions.

    Raises:
        TypeError, ValueError: as :func:`perplexity`.

    Taught in: chapters/04d_beyond_int4.ipynb.
    """
    _check_context(context)
    t = _check_tokens(tokens)
    return torch.cat([lp.cpu() for _, lp in _window_logprobs(model, t, context)])


@dataclass(frozen=True)
class OutputComparison:
    """How a model's next-token predictions compare with a reference's (same tokens).

    Attributes:
        perplexity: the model's perplexity (as :func:`perplexity`).
        kl: mean over positions of ``KL(p_ref || p)`` in nats (0 = same distributions).
        agreement: share of positions where both models' most likely token is the same.
        n: number of predicted positions.
    """

    perplexity: float
    kl: float
    agreement: float
    n: int


def _reference_logprobs(ref, t: torch.Tensor, context: int) -> torch.Tensor:
    if isinstance(ref, torch.nn.Module):
        return torch.cat([lp.cpu() for _, lp in _window_logprobs(ref, t, context)])
    r, _ = as_tensor(ref, "ref")
    require_float(r, "ref")
    n = _n_predictions(t, context)
    if r.dim() != 2 or r.shape[0] != n:
        raise ValueError(
            f"ref log-probs must have shape ({n}, vocabulary) for these tokens and context, got {tuple(r.shape)}"
        )
    return r


@torch.no_grad()
def compare_to_reference(ref, model: torch.nn.Module, tokens: ArrayLike, context: int = 256) -> OutputComparison:
    """Perplexity, KL divergence and top-token agreement in one forward pass per window.

    With reference distributions ``p_ref`` and the model's ``p`` at each of the ``N``
    predicted positions ``t`` (windows as in :func:`perplexity`)::

        kl        = (1/N) sum_t sum_v p_ref(v|t) (log p_ref(v|t) - log p(v|t))
        agreement = (1/N) sum_t [argmax_v p_ref(v|t) == argmax_v p(v|t)]

    KL sees the whole distribution, not only the probability of the token that came: a
    model can keep the perplexity and still move probability around among wrong tokens.
    The perplexity is computed with the same operations as :func:`perplexity` and equals it
    bit for bit, so a page may report either.

    Args:
        ref: the reference model, or its :func:`next_token_logprobs` for the same
            ``tokens`` and ``context`` (then it is not run again).
        model: the model to compare (e.g. quantized).
        tokens: 1-D integer token ids.
        context: window length, >= 2.

    Returns:
        An :class:`OutputComparison`.

    Raises:
        TypeError, ValueError: as :func:`perplexity`; ``ref`` log-probs of the wrong shape.

    Taught in: chapters/04d_beyond_int4.ipynb.
    """
    _check_context(context)
    t = _check_tokens(tokens)
    ref_lp = _reference_logprobs(ref, t, context)
    nll, kl, same, n = 0.0, 0.0, 0, 0
    for window, lp in _window_logprobs(model, t, context):
        lp = lp.cpu()
        r = ref_lp[n : n + lp.shape[0]].float()
        if r.shape[1] != lp.shape[1]:
            raise ValueError(f"ref has {r.shape[1]} classes but the model predicts {lp.shape[1]}")
        # nll_loss of log_softmax is what cross_entropy computes: the perplexity is perplexity()'s, bit for bit
        nll += float(torch.nn.functional.nll_loss(lp, window[1:].cpu(), reduction="sum"))
        kl += float((r.exp() * (r - lp)).sum())
        same += int((r.argmax(1) == lp.argmax(1)).sum())
        n += lp.shape[0]
    return OutputComparison(math.exp(nll / n), max(kl / n, 0.0), same / n, n)


def kl_divergence(ref, model: torch.nn.Module, tokens: ArrayLike, context: int = 256) -> float:
    """Mean ``KL(p_ref || p)`` (nats) of next-token distributions; see :func:`compare_to_reference`.

    Args:
        ref: the reference model, or its :func:`next_token_logprobs` (cached).
        model, tokens, context: as :func:`perplexity`.

    Taught in: chapters/04d_beyond_int4.ipynb.
    """
    return compare_to_reference(ref, model, tokens, context).kl


def top_token_agreement(ref, model: torch.nn.Module, tokens: ArrayLike, context: int = 256) -> float:
    """Share of positions whose most likely next token is the reference's ("same top p").

    Args:
        ref: the reference model, or its :func:`next_token_logprobs` (cached).
        model, tokens, context: as :func:`perplexity`.

    Taught in: chapters/04d_beyond_int4.ipynb.
    """
    return compare_to_reference(ref, model, tokens, context).agreement


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
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
