"""Tests for quantlab.evaluation: agreement metrics, perplexity, greedy generation, sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from tiny_models import tiny_llama

from quantlab import evaluation as ev


def _emb(n=12, d=8, seed=0):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


# ----------------------------------------------------------------- sentences


def test_sentences_are_many_varied_and_disjoint():
    evs = ev.load_sentences("evaluation")
    cal = ev.load_sentences("calibration")
    assert len(evs) >= 50 and len(cal) >= 50
    assert len(set(evs)) == len(evs) and len(set(cal)) == len(cal)
    assert not set(evs) & set(cal)
    assert not any(s.startswith("#") for s in evs + cal)
    assert ev.load_sentences() == evs


def test_sentences_error():
    with pytest.raises(ValueError, match="split must be one of"):
        ev.load_sentences("test")


# ----------------------------------------------------------------- embedding agreement


def test_identical_embeddings_agree_perfectly():
    e = _emb()
    a = ev.embedding_agreement(e, e.clone())
    assert a.mean_cosine == pytest.approx(1.0, abs=1e-12)
    assert a.min_cosine == pytest.approx(1.0, abs=1e-12)
    assert a.spearman == pytest.approx(1.0)


def test_known_answer_cosine_and_numpy_input():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    emb = np.array([[1.0, 1.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)  # row 0 turned 45 degrees
    a = ev.embedding_agreement(ref, emb)
    assert a.mean_cosine == pytest.approx((math.sqrt(0.5) + 1 + 1) / 3)
    assert a.min_cosine == pytest.approx(math.sqrt(0.5))
    # pair similarities ref: (0, .707, .707); emb: (.707, 1, .707)
    assert a.spearman == pytest.approx(spearmanr([0, 0.7071, 0.7071], [0.7071, 1, 0.7071]).statistic)


def test_agreement_is_scale_invariant_and_matches_scipy_on_pairs():
    ref = _emb(seed=1)
    noisy = ref + 0.3 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    a = ev.embedding_agreement(ref, noisy)
    b = ev.embedding_agreement(ref, 5 * noisy)
    assert a.mean_cosine == pytest.approx(b.mean_cosine, abs=1e-7)
    assert a.spearman == pytest.approx(b.spearman, abs=1e-9)
    n = ref.shape[0]
    iu = np.triu_indices(n, 1)
    nn_ = torch.nn.functional.normalize(noisy, dim=1)
    rho = spearmanr((ref @ ref.T).numpy()[iu], (nn_ @ nn_.T).numpy()[iu]).statistic
    assert a.spearman == pytest.approx(rho, abs=1e-6)
    assert a.spearman < 1 and a.mean_cosine < 1


def test_agreement_errors():
    e = _emb()
    with pytest.raises(ValueError, match="shape of ref_emb"):
        ev.embedding_agreement(e, e[:5])
    with pytest.raises(ValueError, match="must be 2-D"):
        ev.embedding_agreement(e[0], e[0])
    with pytest.raises(ValueError, match="at least 3 sentences"):
        ev.embedding_agreement(e[:2], e[:2])
    with pytest.raises(ValueError, match="non-zero norm"):
        ev.embedding_agreement(e, torch.zeros_like(e))
    with pytest.raises(ValueError, match="finite"):
        ev.embedding_agreement(e, e * float("nan"))
    with pytest.raises(TypeError, match="floating-point"):
        ev.embedding_agreement(e, torch.ones(12, 8, dtype=torch.long))


# ----------------------------------------------------------------- perplexity and generation


class _Out:
    def __init__(self, logits):
        self.logits = logits


class UniformLM(torch.nn.Module):
    """Predicts every one of V tokens with probability 1/V: perplexity V exactly."""

    def __init__(self, vocab=10):
        super().__init__()
        self.vocab = vocab
        self.seen = []

    def forward(self, input_ids):
        self.seen.append(input_ids.shape[1])
        return _Out(torch.zeros(*input_ids.shape, self.vocab))


class CopyLM(torch.nn.Module):
    """Puts logit 2 on 'next = current + 1 (mod V)', 0 elsewhere."""

    def __init__(self, vocab=5):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits.scatter_(-1, ((input_ids + 1) % self.vocab).unsqueeze(-1), 2.0)
        return _Out(logits)


def test_uniform_model_has_perplexity_vocab_and_windows_do_not_overlap():
    m = UniformLM(10)
    toks = torch.arange(600) % 10
    assert ev.perplexity(m, toks, context=256) == pytest.approx(10.0)
    assert m.seen == [256, 256, 88]


def test_known_answer_perplexity_by_hand():
    m = CopyLM(5)
    toks = torch.tensor([0, 1, 2, 4, 0])  # predictions: right, right, wrong, right
    p_right = math.exp(2) / (math.exp(2) + 4)
    p_wrong = 1 / (math.exp(2) + 4)
    want = math.exp(-(3 * math.log(p_right) + math.log(p_wrong)) / 4)
    assert ev.perplexity(m, toks, context=8) == pytest.approx(want)
    # context 2: windows [0,1] [2,4] [0] -> the lone last token predicts nothing
    want2 = math.exp(-(math.log(p_right) + math.log(p_wrong)) / 2)
    assert ev.perplexity(m, np.array([0, 1, 2, 4, 0]), context=2) == pytest.approx(want2)


def test_perplexity_restores_training_mode_and_errors():
    m = UniformLM()
    m.train()
    ev.perplexity(m, torch.arange(10) % 10)
    assert m.training
    with pytest.raises(ValueError, match="context must be >= 2"):
        ev.perplexity(m, torch.arange(10), context=1)
    with pytest.raises(TypeError, match="context must be an int"):
        ev.perplexity(m, torch.arange(10), context=2.5)
    with pytest.raises(TypeError, match="integer token ids"):
        ev.perplexity(m, torch.rand(10))
    with pytest.raises(ValueError, match="1-D stream"):
        ev.perplexity(m, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 ids"):
        ev.perplexity(m, torch.tensor([3]))


def test_generate_errors():
    with pytest.raises(TypeError, match="prompt must be a string"):
        ev.generate(None, None, 3)
    with pytest.raises(ValueError, match="prompt must not be empty"):
        ev.generate(None, None, "")
    with pytest.raises(TypeError, match="n must be an int"):
        ev.generate(None, None, "hi", n=2.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        ev.generate(None, None, "hi", n=0)


# --------------------------------------------------------------------------- KL and top-token agreement


def _tiny_llama():
    pytest.importorskip("transformers")
    return tiny_llama(std=0.3)


def test_kl_and_agreement_of_a_model_with_itself():
    m = _tiny_llama()
    toks = torch.randint(0, 96, (150,), generator=torch.Generator().manual_seed(1))
    assert ev.kl_divergence(m, m, toks, context=64) == pytest.approx(0.0, abs=1e-6)
    assert ev.top_token_agreement(m, m, toks, context=64) == 1.0
    c = ev.compare_to_reference(m, m, toks, context=64)
    assert c.n == 63 + 63 + 21
    assert c.perplexity == ev.perplexity(m, toks, context=64)  # the same operations, bit for bit


def test_perturbed_model_has_positive_kl_and_cached_reference_gives_the_same():
    import copy

    m = _tiny_llama()
    p = copy.deepcopy(m)
    with torch.no_grad():
        for name, w in p.named_parameters():
            if name.endswith("proj.weight"):
                w.add_(0.3 * torch.randn_like(w))
    toks = torch.randint(0, 96, (130,), generator=torch.Generator().manual_seed(2))
    kl = ev.kl_divergence(m, p, toks, context=64)
    agree = ev.top_token_agreement(m, p, toks, context=64)
    assert kl > 1e-3 and agree < 1.0
    ref = ev.next_token_logprobs(m, toks, context=64)
    assert ref.shape == (63 + 63 + 1, 96)
    c = ev.compare_to_reference(ref, p, toks, context=64)
    assert c.kl == pytest.approx(kl, rel=1e-5) and c.agreement == agree
    assert c.perplexity == ev.perplexity(p, toks, context=64)
    # by hand on the first window
    with torch.no_grad():
        lr = torch.log_softmax(m(toks[:64].unsqueeze(0)).logits[0, :-1].double(), -1)
        lp = torch.log_softmax(p(toks[:64].unsqueeze(0)).logits[0, :-1].double(), -1)
    want = float((lr.exp() * (lr - lp)).sum(1).mean())
    assert ev.kl_divergence(m, p, toks[:64], context=64) == pytest.approx(want, rel=1e-4)
    assert ev.top_token_agreement(m, p, toks[:64], context=64) == pytest.approx(
        float((lr.argmax(1) == lp.argmax(1)).double().mean())
    )


def test_compare_to_reference_errors():
    m = UniformLM(10)
    toks = torch.arange(20) % 10
    with pytest.raises(ValueError, match="must have shape"):
        ev.compare_to_reference(torch.zeros(5, 10), m, toks, context=8)
    with pytest.raises(ValueError, match="context must be >= 2"):
        ev.kl_divergence(m, m, toks, context=1)
    with pytest.raises(TypeError, match="integer token ids"):
        ev.top_token_agreement(m, m, torch.rand(10))
    # the uniform model agrees with itself; KL to a sharper model is positive
    assert ev.kl_divergence(CopyLM(10), UniformLM(10), toks, context=8) > 0
