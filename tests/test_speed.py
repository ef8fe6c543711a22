"""quantlab.speed: timing helpers, the roofline model, layer sweeps and the KV-cache decode loop.

Correctness only: shapes, counts, argument errors, and that the exported decode step
generates exactly the tokens of transformers' greedy ``generate`` (on a tiny random Llama,
so the tests run in seconds). Speeds are the benchmark's and the notebook's business.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
transformers = pytest.importorskip("transformers")

from quantlab import speed  # noqa: E402
from quantlab.evaluation import perplexity  # noqa: E402
from quantlab.nn import QuantScheme, quantize_model  # noqa: E402


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


def test_exported_fp32_decode_loop_equals_greedy_generate(tiny_llama, tmp_path):
    path = speed.export_decoder(tiny_llama, tmp_path / "fp32.onnx", max_len=32)
    dec = speed.OrtDecoder(path, threads=1)
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


def test_exported_int4_decode_matches_quantlab_perplexity(tiny_llama, tmp_path):
    import copy

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
