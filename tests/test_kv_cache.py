"""Quantized KV caches (KIVI style) on hand-made tensors and a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_llama

from quantlab import evaluation as ev
from quantlab.algorithms.kv_cache import (
    KV_FORMATS,
    fake_quantize_kv,
    kv_bits_per_element,
    quantized_cache,
    quantized_kv,
)

transformers = pytest.importorskip("transformers")


def test_bits_per_element():
    assert kv_bits_per_element("int8", 32) == 9.0
    assert kv_bits_per_element("int4", 32) == 5.0
    assert kv_bits_per_element("int2", 64) == 2.5
    assert kv_bits_per_element("fp8", 32) == 8.5
    with pytest.raises(ValueError, match="fmt must be one of"):
        kv_bits_per_element("int3")


def test_groups_follow_the_axis():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 40, 16)
    x[..., 3] *= 100.0  # an outlier channel, as keys have
    k = fake_quantize_kv(x, "int4", "channel", 32)
    v = fake_quantize_kv(x, "int4", "token", 8)
    assert k.shape == x.shape and v.shape == x.shape
    # per channel: channel 3's scale is its own, so the other channels stay precise
    err_k = (k - x).abs()[..., [0, 1, 2, 4]].max()
    err_v = (v - x).abs()[..., [0, 1, 2, 4]].max()
    assert err_k < 0.5 and err_v > 2.0
    # int4: at most 16 distinct values per (channel, token group)
    assert k[0, 0, :32, 0].unique().numel() <= 16
    # a last short group (tokens 32..39) gets its own scale: its min and max are exact
    g = x[0, 0, 32:, 5]
    assert torch.isclose(k[0, 0, 32:, 5].min(), g.min(), atol=1e-2)
    # int8 is close, int2 coarse, fp8 in between; dtype kept
    for fmt, tol in [("int8", 0.02), ("fp8", 0.1)]:
        y = fake_quantize_kv(x, fmt, "token", 16)
        assert float((y - x).norm() / x.norm()) < tol, fmt
    assert fake_quantize_kv(x.half(), "int2", "token", 16).dtype == torch.float16
    # a constant group is exact
    c = torch.full((1, 1, 4, 8), 0.5)
    assert torch.equal(fake_quantize_kv(c, "int2", "channel", 32), c)


def test_fake_quantize_kv_errors():
    with pytest.raises(ValueError, match="axis"):
        fake_quantize_kv(torch.zeros(2, 4), "int4", "head")
    with pytest.raises(ValueError, match="at least 2-d"):
        fake_quantize_kv(torch.zeros(4), "int4", "token")
    with pytest.raises(TypeError, match="float"):
        fake_quantize_kv(torch.zeros(2, 4, dtype=torch.long), "int4", "token")
    with pytest.raises(ValueError, match="group_size"):
        fake_quantize_kv(torch.zeros(2, 4), "int4", "token", 0)
    with pytest.raises(ValueError, match="key_fmt"):
        quantized_cache("int3")


def test_quantized_kv_on_a_tiny_llama():
    m = tiny_llama(std=0.1)
    ids = torch.randint(0, 96, (1, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = m(input_ids=ids).logits
        with quantized_kv(m, "int8"):
            l8 = m(input_ids=ids).logits
        with quantized_kv(m, "int2"):
            l2 = m(input_ids=ids).logits
        with quantized_kv(m, None, None):  # nothing quantized: the same logits
            l0 = m(input_ids=ids).logits
        after = m(input_ids=ids).logits  # forward restored

    def rel(a):
        return float((a - ref).norm() / ref.norm())

    assert rel(l8) < 0.02 and rel(l2) > 0.2
    assert torch.allclose(l0, ref, atol=1e-5) and torch.equal(after, ref)
    assert "forward" not in vars(m)


def test_quantized_kv_works_with_the_evaluation_functions():
    m = tiny_llama(std=0.1)
    toks = torch.randint(0, 96, (128,), generator=torch.Generator().manual_seed(4))
    ref = ev.next_token_logprobs(m, toks, 64)
    out = {}
    for fmt in KV_FORMATS:
        with quantized_kv(m, fmt):
            out[fmt] = ev.compare_to_reference(ref, m, toks, 64)
    assert out["int8"].kl < 1e-3 and out["int8"].agreement > 0.95
    assert out["int2"].kl > 10 * out["int8"].kl
    assert out["int4"].kl < out["int2"].kl
    assert out["fp8"].kl < out["int2"].kl


def test_cache_is_a_dynamic_cache_for_generation():
    m = tiny_llama(std=0.1)
    ids = torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(5))
    cache = quantized_cache("int8", config=m.config)
    assert isinstance(cache, transformers.DynamicCache)
    import inspect

    key = "cache" if "cache" in inspect.signature(m.forward).parameters else "past_key_values"
    out = m.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=4,
        do_sample=False,
        pad_token_id=0,
        **{key: cache},
    )
    assert out.shape == (1, 12)
