"""quantlab.speed: timing helpers, the roofline model, layer sweeps and the KV-cache decode loop.

Correctness only: shapes, counts, argument errors, and that the exported decode step
generates exactly the tokens of transformers' greedy ``generate`` (on a tiny random Llama,
so the tests run in seconds). Speeds are the benchmark's and the notebook's business.
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

from quantlab import speed  # noqa: E402
from quantlab.evaluation import perplexity  # noqa: E402
from quantlab.nn import QuantizedLinear, QuantScheme, quantize_model  # noqa: E402


# --------------------------------------------------------------------------- timing


def test_time_call_returns_a_positive_median_and_calls_warmup_plus_repeats():
    calls = []
    t = speed.time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert t >= 0 and isinstance(t, float)
    assert len(calls) == 7
    assert speed.time_call(lambda: None, repeats=3, best=True) >= 0


@pytest.mark.parametrize("kwargs, err", [
    (dict(fn=42), TypeError), (dict(fn=lambda: None, repeats=0), ValueError),
    (dict(fn=lambda: None, repeats=1.5), TypeError), (dict(fn=lambda: None, warmup=-1), ValueError),
])
def test_time_call_rejects_bad_arguments(kwargs, err):
    with pytest.raises(err):
        speed.time_call(**kwargs)


def test_time_alternating_runs_in_turn():
    order = []
    out = speed.time_alternating({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                 repeats=3, warmup=0)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert order == ["a", "b"] * 3
    with pytest.raises(ValueError):
        speed.time_alternating({})
    with pytest.raises(TypeError):
        speed.time_alternating({"a": 1})
    with pytest.raises(TypeError):
        speed.time_alternating([lambda: None])


def test_machine_measurements_are_positive():
    bw = speed.measure_bandwidth(4 * 2**20, repeats=2)
    assert set(bw) == {"copy", "read"} and min(bw.values()) > 0
    assert speed.measure_fp32_peak(64, repeats=2) > 0
    assert speed.measure_int8_peak(64, repeats=2) > 0
    with pytest.raises(ValueError):
        speed.measure_bandwidth(1000)
    with pytest.raises(ValueError):
        speed.measure_fp32_peak(8)
    with pytest.raises(ValueError):
        speed.measure_int8_peak(64, repeats=0)


def test_cpu_flags_reads_a_cpuinfo_file(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 fma avx512_vnni\n"
                 "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    info = speed.cpu_flags(f)
    assert info["model"] == "Test CPU"
    assert set(info["flags"]) == set(speed.ISA_FLAGS)
    assert info["flags"]["avx2"] and info["flags"]["avx512_vnni"] and not info["flags"]["amx_int8"]
    missing = speed.cpu_flags(tmp_path / "none")
    assert not any(missing["flags"].values())


# --------------------------------------------------------------------------- roofline


def test_linear_cost_counts_operations_and_bytes():
    c = speed.linear_cost(4096, 4096, 1)
    assert c.flops == 2 * 4096 * 4096
    assert c.weight_bytes == 4 * 4096 * 4096
    assert c.activation_bytes == 4 * (4096 + 4096)
    assert c.bytes == c.weight_bytes + c.activation_bytes
    assert math.isclose(c.intensity, c.flops / c.bytes)
    int4 = speed.linear_cost(576, 1536, 8, bits=4, group_size=32)
    assert int4.weight_bytes == 576 * 1536 * (4 + 32 / 32) / 8  # codes + one fp32 scale per 32
    int8 = speed.linear_cost(576, 1536, 8, bits=8)
    assert int8.weight_bytes == 576 * 1536 + 1536 * 4  # codes + one fp32 scale per output row
    assert int8.flops == int4.flops == 2 * 8 * 576 * 1536
    for bad in (dict(in_features=0, out_features=4, batch=1), dict(in_features=4, out_features=4, batch=0),
                dict(in_features=4, out_features=4, batch=1, bits=0),
                dict(in_features=4, out_features=4, batch=1, bits=4, group_size=0)):
        with pytest.raises(ValueError):
            speed.linear_cost(**bad)


def test_roofline_is_the_minimum_of_the_two_roofs():
    assert speed.roofline(0.5, 10.0, 100.0) == 5.0
    assert speed.roofline(50.0, 10.0, 100.0) == 100.0
    out = speed.roofline(np.array([0.0, 1.0, 100.0]), 10.0, 100.0)
    np.testing.assert_allclose(out, [0.0, 10.0, 100.0])
    with pytest.raises(ValueError):
        speed.roofline(1.0, 0.0, 100.0)
    with pytest.raises(ValueError):
        speed.roofline(-1.0, 10.0, 100.0)


def test_layer_sweep_returns_one_row_per_batch_and_format():
    rows = speed.layer_sweep(64, 32, batches=(1, 3), repeats=1)
    assert len(rows) == 2 * len(speed.SWEEP_FORMATS)
    assert {(r["batch"], r["format"]) for r in rows} == {(b, f) for b in (1, 3) for f in speed.SWEEP_FORMATS}
    for r in rows:
        assert r["seconds"] > 0 and r["gflops"] > 0
        assert r["flops"] == 2 * r["batch"] * 64 * 32
        assert math.isclose(r["intensity"], r["flops"] / r["bytes"])
    one = speed.layer_sweep(64, 32, batches=(2,), formats=("int8 ORT",), repeats=1)
    assert [r["format"] for r in one] == ["int8 ORT"]


@pytest.mark.parametrize("kwargs", [dict(formats=("fp64",)), dict(formats=()), dict(batches=()),
                                    dict(batches=(0,)), dict(repeats=0)])
def test_layer_sweep_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        speed.layer_sweep(64, 32, **kwargs)


# --------------------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
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
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


def test_decode_step_in_torch_matches_generate(tiny_llama):
    step = speed.LlamaDecodeStep(tiny_llama, max_len=32).eval()
    assert step.cache_shape() == (2, 2, 32, 16)
    keys, values = torch.zeros(step.cache_shape()), torch.zeros(step.cache_shape())

    def torch_step(token, pos):
        with torch.no_grad():
            logits, k, v = step(torch.tensor([token]), torch.tensor([pos]), keys, values)
        assert logits.shape == (1, 256) and k.shape == v.shape == (2, 2, 1, 16)
        keys[:, :, pos] = k[:, :, 0]
        values[:, :, pos] = v[:, :, 0]
        return logits[0].numpy()

    assert speed.greedy_decode(torch_step, PROMPT, 12) == _hf_greedy(tiny_llama, PROMPT, 12)


@pytest.mark.parametrize("fused", [True, False])
def test_exported_fp32_decode_loop_equals_greedy_generate(tiny_llama, tmp_path, fused):
    path = speed.export_decoder(tiny_llama, tmp_path / "fp32.onnx", max_len=32, fused=fused)
    dec = speed.OrtDecoder(path, threads=1)
    assert dec.fused is fused
    assert dec.cache_shape == (2, 2, 32, 16) and dec.max_len == 32
    assert dec.cache_bytes == 2 * 2 * 2 * 32 * 16 * 4
    times = []
    tokens = speed.greedy_decode(dec.step, PROMPT, 12, reset=dec.reset, times=times)
    assert tokens == _hf_greedy(tiny_llama, PROMPT, 12)
    assert len(times) == 12 and all(t > 0 for t in times)
    assert dec.generate(PROMPT, 12) == tokens  # generate() resets the cache first
    total, count = dec.nll(PROMPT + tokens)
    assert count == len(PROMPT) + 11
    ppl = perplexity(tiny_llama, torch.tensor(PROMPT + tokens), context=32)
    assert math.isclose(math.exp(total / count), ppl, rel_tol=1e-4)
    traffic = speed.onnx_bytes_per_token(path, dec.cache_bytes)
    assert traffic["embedding_table"] == 256 * 64 * 4  # gathered, one row read per token
    assert traffic["total"] == traffic["weights"] + dec.cache_bytes
    n_params = sum(p.numel() for p in tiny_llama.parameters())  # the tied head counts once here
    assert traffic["weights"] > 4 * (n_params - 256 * 64)
    # the fused step reads the slots written so far, the traced one all of them
    assert dec.cache_bytes_read(4) == (2 * 2 * 2 * 5 * 16 * 4 if fused else dec.cache_bytes)


def test_exported_int4_decode_matches_quantlab_perplexity(tiny_llama, tmp_path):
    q = quantize_model(copy.deepcopy(tiny_llama), QuantScheme("int4", group_size=32), skip=None, progress=False)
    text = PROMPT + list(range(100, 120))
    exact = speed.OrtDecoder(speed.export_decoder(q, tmp_path / "q0.onnx", 32, accuracy_level=0))
    total, count = exact.nll(text)
    assert math.isclose(math.exp(total / count), perplexity(q, torch.tensor(text), context=32), rel_tol=1e-4)
    fast = speed.OrtDecoder(speed.export_decoder(q, tmp_path / "q4.onnx", 32))
    t4 = speed.onnx_bytes_per_token(tmp_path / "q4.onnx")
    t32 = speed.onnx_bytes_per_token(speed.export_decoder(tiny_llama, tmp_path / "f.onnx", 32))
    assert t4["weights"] < 0.3 * t32["weights"]  # 5 bits per weight instead of 32
    assert len(fast.generate(PROMPT, 4)) == 4
    rates = speed.decode_speed({"exact": exact, "fast": fast}, PROMPT, n=2, rounds=1)
    assert set(rates) == {"exact", "fast"} and min(rates.values()) > 0


def test_fused_graph_has_ten_nodes_per_layer_and_stacks_projections(tiny_llama, tmp_path):
    fused = speed.graph_ops(speed.export_decoder(tiny_llama, tmp_path / "f.onnx", 32))
    # per layer: 2 norms, q/k/v stacked, attention, o, gate/up stacked, split, SiLU, mul, down
    assert fused == {"MatMul": 2 * 4 + 1, "SkipSimplifiedLayerNormalization": 2 * 2 - 1 + 1,
                     "GroupQueryAttention": 2, "Split": 2, "QuickGelu": 2, "Mul": 2,
                     "Gather": 1, "SimplifiedLayerNormalization": 1}
    traced = speed.graph_ops(speed.export_decoder(tiny_llama, tmp_path / "t.onnx", 32, fused=False))
    assert sum(traced.values()) > 3 * sum(fused.values())
    q = quantize_model(copy.deepcopy(tiny_llama), QuantScheme("int4", group_size=32), skip=None, progress=False)
    ops = speed.graph_ops(speed.export_decoder(q, tmp_path / "q.onnx", 32))
    assert ops["MatMulNBits"] == 2 * 4 + 1 and "MatMul" not in ops


def _mixed(model):
    """q_proj and gate_proj in int4 g32, k/v/up in int4 g64, o_proj and down_proj left float."""
    def layer_fn(name, linear):
        g = 32 if name.endswith(("q_proj", "gate_proj", "lm_head")) else 64
        return QuantizedLinear.from_linear(linear, QuantScheme("int4", group_size=g))

    return quantize_model(copy.deepcopy(model), skip=["*o_proj", "*down_proj"], layer_fn=layer_fn, progress=False)


def test_fused_graph_keeps_different_schemes_apart_and_computes_quantlabs_model(tiny_llama, tmp_path):
    mixed = _mixed(tiny_llama)
    path = speed.export_decoder(mixed, tmp_path / "m.onnx", 32, accuracy_level=0)
    ops = speed.graph_ops(path)
    assert ops["MatMulNBits"] == 2 * 5 + 1 and ops["MatMul"] == 2 * 2  # q | k+v, gate | up: not stacked
    assert "Split" not in ops
    text = PROMPT + list(range(100, 120))
    total, count = speed.OrtDecoder(path).nll(text)
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
    path = speed.export_decoder(model, tmp_path / "s.onnx", 32, accuracy_level=0)
    assert speed.graph_ops(path)["MatMulNBits"] == 2  # stacked: the same input scale
    text = PROMPT + list(range(100, 120))
    total, count = speed.OrtDecoder(path).nll(text)
    assert math.isclose(math.exp(total / count), perplexity(model, torch.tensor(text), context=32), rel_tol=1e-4)


def test_fused_export_rejects_what_it_cannot_run(tiny_llama, tmp_path):
    from quantlab.deploy.decoder import export_llama_decoder

    with pytest.raises(TypeError, match="Llama-style"):
        export_llama_decoder(torch.nn.Linear(4, 4), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="max_len"):
        export_llama_decoder(tiny_llama, tmp_path / "x.onnx", max_len=0)
    with pytest.raises(ValueError, match="accuracy_level"):
        export_llama_decoder(tiny_llama, tmp_path / "x.onnx", accuracy_level=5)
    with pytest.raises(ValueError, match="folder"):
        export_llama_decoder(tiny_llama, tmp_path / "missing" / "x.onnx")
    with pytest.raises(TypeError, match="fused"):
        speed.export_decoder(tiny_llama, tmp_path / "x.onnx", fused="yes")
    gelu = copy.deepcopy(tiny_llama)
    gelu.config.hidden_act = "gelu"
    with pytest.raises(ValueError, match="hidden_act"):
        export_llama_decoder(gelu, tmp_path / "x.onnx")
    nf4 = quantize_model(copy.deepcopy(tiny_llama), QuantScheme("nf4", group_size=32), skip=None, progress=False)
    with pytest.raises(ValueError, match="model.layers.0.self_attn.q_proj"):
        export_llama_decoder(nf4, tmp_path / "x.onnx")


def test_profile_decoder_counts_the_kernel_calls_of_a_step(tiny_llama, tmp_path):
    path = speed.export_decoder(tiny_llama, tmp_path / "f.onnx", 32)
    prof = speed.profile_decoder(path, PROMPT, n=3)
    assert prof["ops"]["GroupQueryAttention"]["calls"] == 2 and prof["ops"]["MatMul"]["calls"] == 9
    assert prof["step_ms"] > 0 and sum(o["ms"] for o in prof["ops"].values()) < prof["step_ms"]
    with pytest.raises(ValueError):
        speed.profile_decoder(path, PROMPT, n=0)
    with pytest.raises(ValueError):
        speed.profile_decoder(path, [], n=1)


def test_decoder_session_sleeps_by_default_and_spins_only_within_a_step(tiny_llama, tmp_path):
    from quantlab.deploy import ort_session
    from quantlab.deploy.decoder import decoder_session

    path = speed.export_decoder(tiny_llama, tmp_path / "f.onnx", 32)

    def entries(sess):
        opts = sess.get_session_options()
        return (opts.intra_op_num_threads, opts.get_session_config_entry("session.intra_op.allow_spinning"),
                opts.get_session_config_entry("session.force_spinning_stop"))

    assert entries(decoder_session(path, 1)) == (1, "0", "1")  # one thread: no workers to wait for
    assert entries(decoder_session(path, 2)) == (2, "0", "1")  # workers sleep unless asked to spin
    assert entries(decoder_session(path, 2, spinning=True)) == (2, "1", "1")  # then within a step only
    assert entries(decoder_session(path, 2, spinning=False)) == (2, "0", "1")
    assert entries(decoder_session(path, 1, spinning=True)) == (1, "1", "1")
    base, ours = ort_session(path, 2).get_session_options(), decoder_session(path, 2).get_session_options()
    assert ours.graph_optimization_level == base.graph_optimization_level
    assert ours.get_session_config_entry("session.x64quantprecision") == \
        base.get_session_config_entry("session.x64quantprecision")
    assert entries(speed.OrtDecoder(path, threads=2).session) == (2, "0", "1")
    assert entries(speed.OrtDecoder(path, threads=2, spinning=True).session) == (2, "1", "1")
    assert entries(speed.OrtDecoder(path, threads=2, spinning=False).session) == (2, "0", "1")
    with pytest.raises(TypeError, match="spinning"):
        decoder_session(path, 2, spinning="yes")
    with pytest.raises(TypeError, match="threads"):
        decoder_session(path, 2.0)
    with pytest.raises(ValueError, match="threads"):
        decoder_session(path, 0)
    with pytest.raises(ValueError, match="not a file"):
        decoder_session(tmp_path / "missing.onnx")


def test_how_workers_wait_does_not_change_a_logit(tiny_llama, tmp_path):
    path = speed.export_decoder(tiny_llama, tmp_path / "f.onnx", 32)
    spin, sleep = speed.OrtDecoder(path, threads=2, spinning=True), speed.OrtDecoder(path, threads=2, spinning=False)
    for dec in (spin, sleep):
        dec.reset()
    for pos, tok in enumerate(PROMPT):
        assert np.array_equal(spin.step(tok, pos), sleep.step(tok, pos))
    assert spin.generate(PROMPT, 8) == sleep.generate(PROMPT, 8) == _hf_greedy(tiny_llama, PROMPT, 8)


def test_step_returns_logits_that_the_next_step_leaves_alone(tiny_llama, tmp_path):
    dec = speed.OrtDecoder(speed.export_decoder(tiny_llama, tmp_path / "f.onnx", 32))
    dec.reset()
    first = dec.step(PROMPT[0], 0)
    kept = first.copy()
    second = dec.step(PROMPT[1], 1)
    assert first.shape == second.shape == (256,) and first.dtype == np.float32
    assert np.array_equal(first, kept) and not np.array_equal(first, second)
    dec.reset()  # the same token at the same position after a reset: the same logits
    assert np.array_equal(dec.step(PROMPT[0], 0), kept)


class _Counter:
    """A fake decoder: logits that name the next token, and a shared log of its steps."""

    def __init__(self, name, log, vocab=7):
        self.name, self.log, self.vocab = name, log, vocab

    def reset(self):
        self.log.append((self.name, "reset"))

    def step(self, token, position):
        self.log.append((self.name, position))
        return np.eye(self.vocab)[(token + 1) % self.vocab]


@pytest.mark.parametrize("interleave", [True, False])
def test_decode_speed_alternates_step_by_step_or_run_by_run(interleave):
    log = []
    decoders = {"a": _Counter("a", log), "b": _Counter("b", log)}
    rates = speed.decode_speed(decoders, [3, 4], n=3, rounds=2, interleave=interleave)
    assert set(rates) == {"a", "b"} and min(rates.values()) > 0
    if interleave:
        round_ = [("a", "reset"), ("a", 0), ("b", "reset"), ("b", 0)] + [(x, p) for p in (1, 2, 3) for x in "ab"]
    else:
        round_ = [e for x in "ab" for e in [(x, "reset"), (x, 0), (x, 1), (x, 2), (x, 3)]]
    assert log == round_ * 2  # the prompt's token (position 0) untimed, then 3 generated
    with pytest.raises(ValueError):
        speed.decode_speed(decoders, [], n=1)


def test_decode_arguments_are_checked(tiny_llama, tmp_path):
    with pytest.raises(TypeError):
        speed.LlamaDecodeStep(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError):
        speed.LlamaDecodeStep(tiny_llama, max_len=0)
    with pytest.raises(ValueError):
        speed.greedy_decode(lambda t, p: np.zeros(3), [], 2)
    with pytest.raises(ValueError):
        speed.greedy_decode(lambda t, p: np.zeros(3), [1], -1)
    assert speed.greedy_decode(lambda t, p: np.eye(5)[(t + 1) % 5], [0], 4) == [1, 2, 3, 4]
    dec = speed.OrtDecoder(speed.export_decoder(tiny_llama, tmp_path / "d.onnx", max_len=8))
    with pytest.raises(ValueError):
        dec.step(1, 8)
    with pytest.raises(ValueError):
        dec.nll([1])
    with pytest.raises(ValueError):
        dec.nll(list(range(9)))
    with pytest.raises(ValueError):
        speed.decode_speed({}, [1])
    path = speed.export_float(torch.nn.Linear(4, 4), torch.zeros(1, 4), tmp_path / "lin.onnx")
    with pytest.raises(ValueError):
        speed.OrtDecoder(path)


def test_encoder_speed_times_both_formats_and_compares_embeddings():
    from transformers import BertConfig, BertModel

    minilm = pytest.importorskip("quantlab.models.minilm")
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    model = BertModel(cfg).eval()
    q = quantize_model(copy.deepcopy(model), QuantScheme("int8"), skip=None, progress=False)
    sentences = ["a short sentence", "another one, a little longer than the first", "third"]
    r = speed.encoder_speed(model, q, minilm.load_tokenizer(), sentences, batches=(1, 3), seq_len=16, repeats=1)
    assert set(r["sentences_per_s"]) == {("fp32", 1), ("int8", 1), ("fp32", 3), ("int8", 3)}
    for (fmt, b), rate in r["sentences_per_s"].items():
        assert rate > 0 and math.isclose(rate, b / r["seconds"][fmt, b])
    assert 0.95 < r["cosine"] <= 1.0 + 1e-6  # int8 weights and activations: nearly the same embeddings
    tok = minilm.load_tokenizer()
    with pytest.raises(ValueError, match="sentences"):
        speed.encoder_speed(model, q, tok, sentences, batches=(4,))
    with pytest.raises(ValueError, match="batches"):
        speed.encoder_speed(model, q, tok, sentences, batches=())
    with pytest.raises(ValueError, match="seq_len"):
        speed.encoder_speed(model, q, tok, sentences, seq_len=1)
