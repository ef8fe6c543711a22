"""quantlab.deploy's decoding: the traced and fused decoding steps, their runtime, profiling.

Correctness only: shapes, counts, argument errors, and that the exported decode step
generates exactly the tokens of transformers' greedy ``generate`` (on a tiny random Llama,
so the tests run in seconds). Speeds are the benchmark's and the notebook's business
(``tests/test_speed.py`` tests the timing of decoders).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
transformers = pytest.importorskip("transformers")

from quantlab.evaluation import perplexity  # noqa: E402

from quantlab.deploy.decoder import (  # noqa: E402
    LlamaDecodeStep,
    decoder_session,
    export_decoder,
    export_llama_decoder,
)
from quantlab.deploy.onnx import export_float  # noqa: E402
from quantlab.deploy.profiling import graph_ops, onnx_bytes_per_token, profile_decoder  # noqa: E402
from quantlab.deploy.runtime import OrtDecoder, greedy_decode  # noqa: E402
from quantlab.nn import QuantizedLinear, QuantScheme, quantize_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights than the default init, so the logits are not near-ties
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model


PROMPT = [3, 17, 42, 5, 99]


def _hf_greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    return out[0, len(prompt) :].tolist()


def test_decode_step_in_torch_matches_generate(tiny_llama):
    step = LlamaDecodeStep(tiny_llama, max_len=32).eval()
    assert step.cache_shape() == (2, 2, 32, 16)
    keys, values = torch.zeros(step.cache_shape()), torch.zeros(step.cache_shape())

    def torch_step(token, pos):
        with torch.no_grad():
            logits, k, v = step(torch.tensor([token]), torch.tensor([pos]), keys, values)
        assert logits.shape == (1, 256) and k.shape == v.shape == (2, 2, 1, 16)
        keys[:, :, pos] = k[:, :, 0]
        values[:, :, pos] = v[:, :, 0]
        return logits[0].numpy()

    assert greedy_decode(torch_step, PROMPT, 12) == _hf_greedy(tiny_llama, PROMPT, 12)


@pytest.mark.parametrize("fused", [True, False])
def test_exported_fp32_decode_loop_equals_greedy_generate(tiny_llama, tmp_path, fused):
    path = export_decoder(tiny_llama, tmp_path / "fp32.onnx", max_len=32, fused=fused)
    dec = OrtDecoder(path, threads=1)
    assert dec.fused is fused
    assert dec.cache_shape == (2, 2, 32, 16) and dec.max_len == 32
    assert dec.cache_bytes == 2 * 2 * 2 * 32 * 16 * 4
    times = []
    tokens = greedy_decode(dec.step, PROMPT, 12, reset=dec.reset, times=times)
    assert tokens == _hf_greedy(tiny_llama, PROMPT, 12)
    assert len(times) == 12 and all(t > 0 for t in times)
    assert dec.generate(PROMPT, 12) == tokens  # generate() resets the cache first
    total, count = dec.nll(PROMPT + tokens)
    assert count == len(PROMPT) + 11
    ppl = perplexity(tiny_llama, torch.tensor(PROMPT + tokens), context=32)
    assert math.isclose(math.exp(total / count), ppl, rel_tol=1e-4)
    traffic = onnx_bytes_per_token(path, dec.cache_bytes)
    assert traffic["embedding_table"] == 256 * 64 * 4  # gathered, one row read per token
    assert traffic["total"] == traffic["weights"] + dec.cache_bytes
    n_params = sum(p.numel() for p in tiny_llama.parameters())  # the tied head counts once here
    assert traffic["weights"] > 4 * (n_params - 256 * 64)
    # the fused step reads the slots written so far, the traced one all of them
    assert dec.cache_bytes_read(4) == (2 * 2 * 2 * 5 * 16 * 4 if fused else dec.cache_bytes)


def test_exported_int4_decode_matches_quantlab_perplexity(tiny_llama, tmp_path):
    q = quantize_model(copy.deepcopy(tiny_llama), QuantScheme("int4", group_size=32), skip=None, progress=False)
    text = PROMPT + list(range(100, 120))
    exact = OrtDecoder(export_decoder(q, tmp_path / "q0.onnx", 32, accuracy_level=0))
    total, count = exact.nll(text)
    assert math.isclose(math.exp(total / count), perplexity(q, torch.tensor(text), context=32), rel_tol=1e-4)
    fast = OrtDecoder(export_decoder(q, tmp_path / "q4.onnx", 32))
    t4 = onnx_bytes_per_token(tmp_path / "q4.onnx")
    t32 = onnx_bytes_per_token(export_decoder(tiny_llama, tmp_path / "f.onnx", 32))
    assert t4["weights"] < 0.3 * t32["weights"]  # 5 bits per weight instead of 32
    assert len(fast.generate(PROMPT, 4)) == 4


def test_fused_graph_has_ten_nodes_per_layer_and_stacks_projections(tiny_llama, tmp_path):
    fused = graph_ops(export_decoder(tiny_llama, tmp_path / "f.onnx", 32))
    # per layer: 2 norms, q/k/v stacked, attention, o, gate/up stacked, split, SiLU, mul, down
    assert fused == {
        "MatMul": 2 * 4 + 1,
        "SkipSimplifiedLayerNormalization": 2 * 2 - 1 + 1,
        "GroupQueryAttention": 2,
        "Split": 2,
        "QuickGelu": 2,
        "Mul": 2,
        "Gather": 1,
        "SimplifiedLayerNormalization": 1,
    }
    traced = graph_ops(export_decoder(tiny_llama, tmp_path / "t.onnx", 32, fused=False))
    assert sum(traced.values()) > 3 * sum(fused.values())
    q = quantize_model(copy.deepcopy(tiny_llama), QuantScheme("int4", group_size=32), skip=None, progress=False)
    ops = graph_ops(export_decoder(q, tmp_path / "q.onnx", 32))
    assert ops["MatMulNBits"] == 2 * 4 + 1 and "MatMul" not in ops


def _mixed(model):
    """q_proj and gate_proj in int4 g32, k/v/up in int4 g64, o_proj and down_proj left float."""

    def layer_fn(name, linear):
        g = 32 if name.endswith(("q_proj", "gate_proj", "lm_head")) else 64
        return QuantizedLinear.from_linear(linear, QuantScheme("int4", group_size=g))

    return quantize_model(copy.deepcopy(model), skip=["*o_proj", "*down_proj"], layer_fn=layer_fn, progress=False)


def test_fused_graph_keeps_different_schemes_apart_and_computes_quantlabs_model(tiny_llama, tmp_path):
    mixed = _mixed(tiny_llama)
    path = export_decoder(mixed, tmp_path / "m.onnx", 32, accuracy_level=0)
    ops = graph_ops(path)
    assert ops["MatMulNBits"] == 2 * 5 + 1 and ops["MatMul"] == 2 * 2  # q | k+v, gate | up: not stacked
    assert "Split" not in ops
    text = PROMPT + list(range(100, 120))
    total, count = OrtDecoder(path).nll(text)
    assert math.isclose(math.exp(total / count), perplexity(mixed, torch.tensor(text), context=32), rel_tol=1e-4)


def test_fused_graph_applies_an_input_scale(tiny_llama, tmp_path):
    model = copy.deepcopy(tiny_llama)
    torch.manual_seed(1)
    for block in model.model.layers:  # AWQ-style 1/s in front of q, k and v (the same vector)
        s = torch.rand(64) + 0.5
        for name in ("q_proj", "k_proj", "v_proj"):
            lin = getattr(block.self_attn, name)
            qt = QuantScheme("int4", group_size=32).quantize(lin.weight.detach() * s)
            setattr(block.self_attn, name, QuantizedLinear.from_qtensor(qt, input_scale=1.0 / s))
    path = export_decoder(model, tmp_path / "s.onnx", 32, accuracy_level=0)
    assert graph_ops(path)["MatMulNBits"] == 2  # stacked: the same input scale
    text = PROMPT + list(range(100, 120))
    total, count = OrtDecoder(path).nll(text)
    assert math.isclose(math.exp(total / count), perplexity(model, torch.tensor(text), context=32), rel_tol=1e-4)


def test_fused_export_rejects_what_it_cannot_run(tiny_llama, tmp_path):
    with pytest.raises(TypeError, match="Llama-style"):
        export_llama_decoder(torch.nn.Linear(4, 4), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="max_len"):
        export_llama_decoder(tiny_llama, tmp_path / "x.onnx", max_len=0)
    with pytest.raises(ValueError, match="accuracy_level"):
        export_llama_decoder(tiny_llama, tmp_path / "x.onnx", accuracy_level=5)
    with pytest.raises(ValueError, match="folder"):
        export_llama_decoder(tiny_llama, tmp_path / "missing" / "x.onnx")
    with pytest.raises(TypeError, match="fused"):
        export_decoder(tiny_llama, tmp_path / "x.onnx", fused="yes")
    gelu = copy.deepcopy(tiny_llama)
    gelu.config.hidden_act = "gelu"
    with pytest.raises(ValueError, match="hidden_act"):
        export_llama_decoder(gelu, tmp_path / "x.onnx")
    nf4 = quantize_model(copy.deepcopy(tiny_llama), QuantScheme("nf4", group_size=32), skip=None, progress=False)
    with pytest.raises(ValueError, match="model.layers.0.self_attn.q_proj"):
        export_llama_decoder(nf4, tmp_path / "x.onnx")


def test_profile_decoder_counts_the_kernel_calls_of_a_step(tiny_llama, tmp_path):
    path = export_decoder(tiny_llama, tmp_path / "f.onnx", 32)
    prof = profile_decoder(path, PROMPT, n=3)
    assert prof["ops"]["GroupQueryAttention"]["calls"] == 2 and prof["ops"]["MatMul"]["calls"] == 9
    assert prof["step_ms"] > 0 and sum(o["ms"] for o in prof["ops"].values()) < prof["step_ms"]
    with pytest.raises(ValueError):
        profile_decoder(path, PROMPT, n=0)
    with pytest.raises(ValueError):
        profile_decoder(path, [], n=1)


def test_decoder_session_sleeps_by_default_and_spins_only_within_a_step(tiny_llama, tmp_path):
    from quantlab.deploy import ort_session

    path = export_decoder(tiny_llama, tmp_path / "f.onnx", 32)

    def entries(sess):
        opts = sess.get_session_options()
        return (
            opts.intra_op_num_threads,
            opts.get_session_config_entry("session.intra_op.allow_spinning"),
            opts.get_session_config_entry("session.force_spinning_stop"),
        )

    assert entries(decoder_session(path, 1)) == (1, "0", "1")  # one thread: no workers to wait for
    assert entries(decoder_session(path, 2)) == (2, "0", "1")  # workers sleep unless asked to spin
    assert entries(decoder_session(path, 2, spinning=True)) == (2, "1", "1")  # then within a step only
    assert entries(decoder_session(path, 2, spinning=False)) == (2, "0", "1")
    assert entries(decoder_session(path, 1, spinning=True)) == (1, "1", "1")
    base, ours = ort_session(path, 2).get_session_options(), decoder_session(path, 2).get_session_options()
    assert ours.graph_optimization_level == base.graph_optimization_level
    assert ours.get_session_config_entry("session.x64quantprecision") == base.get_session_config_entry(
        "session.x64quantprecision"
    )
    assert entries(OrtDecoder(path, threads=2).session) == (2, "0", "1")
    assert entries(OrtDecoder(path, threads=2, spinning=True).session) == (2, "1", "1")
    assert entries(OrtDecoder(path, threads=2, spinning=False).session) == (2, "0", "1")
    with pytest.raises(TypeError, match="spinning"):
        decoder_session(path, 2, spinning="yes")
    with pytest.raises(TypeError, match="threads"):
        decoder_session(path, 2.0)
    with pytest.raises(ValueError, match="threads"):
        decoder_session(path, 0)
    with pytest.raises(ValueError, match="not a file"):
        decoder_session(tmp_path / "missing.onnx")


def test_how_workers_wait_does_not_change_a_logit(tiny_llama, tmp_path):
    path = export_decoder(tiny_llama, tmp_path / "f.onnx", 32)
    spin, sleep = OrtDecoder(path, threads=2, spinning=True), OrtDecoder(path, threads=2, spinning=False)
    for dec in (spin, sleep):
        dec.reset()
    for pos, tok in enumerate(PROMPT):
        assert np.array_equal(spin.step(tok, pos), sleep.step(tok, pos))
    assert spin.generate(PROMPT, 8) == sleep.generate(PROMPT, 8) == _hf_greedy(tiny_llama, PROMPT, 8)


def test_step_returns_logits_that_the_next_step_leaves_alone(tiny_llama, tmp_path):
    dec = OrtDecoder(export_decoder(tiny_llama, tmp_path / "f.onnx", 32))
    dec.reset()
    first = dec.step(PROMPT[0], 0)
    kept = first.copy()
    second = dec.step(PROMPT[1], 1)
    assert first.shape == second.shape == (256,) and first.dtype == np.float32
    assert np.array_equal(first, kept) and not np.array_equal(first, second)
    dec.reset()  # the same token at the same position after a reset: the same logits
    assert np.array_equal(dec.step(PROMPT[0], 0), kept)


def test_decode_arguments_are_checked(tiny_llama, tmp_path):
    with pytest.raises(TypeError):
        LlamaDecodeStep(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError):
        LlamaDecodeStep(tiny_llama, max_len=0)
    with pytest.raises(ValueError):
        greedy_decode(lambda t, p: np.zeros(3), [], 2)
    with pytest.raises(ValueError):
        greedy_decode(lambda t, p: np.zeros(3), [1], -1)
    assert greedy_decode(lambda t, p: np.eye(5)[(t + 1) % 5], [0], 4) == [1, 2, 3, 4]
    dec = OrtDecoder(export_decoder(tiny_llama, tmp_path / "d.onnx", max_len=8))
    with pytest.raises(ValueError):
        dec.step(1, 8)
    with pytest.raises(ValueError):
        dec.nll([1])
    with pytest.raises(ValueError):
        dec.nll(list(range(9)))
    path = export_float(torch.nn.Linear(4, 4), torch.zeros(1, 4), tmp_path / "lin.onnx")
    with pytest.raises(ValueError):
        OrtDecoder(path)


def test_the_former_names_in_book_speed_are_the_deploy_objects():
    """``quantlab.book.speed`` (and ``quantlab.speed``) re-export what moved to deploy."""
    import quantlab
    from quantlab import deploy
    from quantlab.book import speed
    from quantlab.deploy import decoder, onnx, profiling, runtime

    moved = {
        "export_float": onnx,
        "LlamaDecodeStep": decoder,
        "export_decoder": decoder,
        "OrtDecoder": runtime,
        "greedy_decode": runtime,
        "onnx_bytes_per_token": profiling,
        "graph_ops": profiling,
        "profile_decoder": profiling,
    }
    for name, module in moved.items():
        assert getattr(speed, name) is getattr(module, name), name
        assert getattr(quantlab.speed, name) is getattr(module, name), name
        assert name in speed.__all__
    assert decoder.decoder_session is runtime.decoder_session
    assert deploy.export_float is onnx.export_float
    assert deploy.runtime is runtime and deploy.profiling is profiling
