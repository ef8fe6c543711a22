"""quantlab.speed: timing helpers, the roofline model, layer sweeps and the speed of decoders.

Correctness only: shapes, counts, argument errors. The decoding step itself (exported,
run and profiled) is :mod:`quantlab.deploy`'s and is tested in ``tests/test_deploy_decoder.py``.
Speeds are the benchmark's and the notebook's business.
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
from quantlab.nn import QuantScheme, quantize_model  # noqa: E402

# --------------------------------------------------------------------------- timing


def test_time_call_returns_a_positive_median_and_calls_warmup_plus_repeats():
    calls = []
    t = speed.time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert t >= 0 and isinstance(t, float)
    assert len(calls) == 7
    assert speed.time_call(lambda: None, repeats=3, best=True) >= 0


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(fn=42), TypeError),
        (dict(fn=lambda: None, repeats=0), ValueError),
        (dict(fn=lambda: None, repeats=1.5), TypeError),
        (dict(fn=lambda: None, warmup=-1), ValueError),
    ],
)
def test_time_call_rejects_bad_arguments(kwargs, err):
    with pytest.raises(err):
        speed.time_call(**kwargs)


def test_time_alternating_runs_in_turn():
    order = []
    out = speed.time_alternating({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=0)
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
    f.write_text(
        "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 fma avx512_vnni\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
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
    for bad in (
        dict(in_features=0, out_features=4, batch=1),
        dict(in_features=4, out_features=4, batch=0),
        dict(in_features=4, out_features=4, batch=1, bits=0),
        dict(in_features=4, out_features=4, batch=1, bits=4, group_size=0),
    ):
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


@pytest.mark.parametrize(
    "kwargs", [dict(formats=("fp64",)), dict(formats=()), dict(batches=()), dict(batches=(0,)), dict(repeats=0)]
)
def test_layer_sweep_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        speed.layer_sweep(64, 32, **kwargs)


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
    with pytest.raises(ValueError):
        speed.decode_speed({}, [1])


def test_decode_speed_times_exported_decoders(tmp_path):
    """Real decoders from :mod:`quantlab.deploy` timed in turn: both get a positive speed."""
    from tiny_models import tiny_llama

    model = tiny_llama()
    fused = speed.OrtDecoder(speed.export_decoder(model, tmp_path / "f.onnx", 16))
    traced = speed.OrtDecoder(speed.export_decoder(model, tmp_path / "t.onnx", 16, fused=False))
    rates = speed.decode_speed({"fused": fused, "traced": traced}, [3, 17, 42], n=2, rounds=1)
    assert set(rates) == {"fused", "traced"} and min(rates.values()) > 0


def test_encoder_speed_times_both_formats_and_compares_embeddings():
    from transformers import BertConfig, BertModel

    minilm = pytest.importorskip("quantlab.models.minilm")
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
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


def test_scratch_folder_removes_what_killed_runs_left_and_nothing_else(tmp_path):
    """The speed page exports about 2 GB of models; a kernel killed mid-page must not leave them for good."""
    import os
    import subprocess
    import sys

    from quantlab.book import speed_run

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # that process has exited
    stale = tmp_path / f"{speed_run.SCRATCH_PREFIX}{dead_pid}_abc"
    stale.mkdir()
    (stale / "decoder_0.onnx").write_bytes(b"x" * 100)
    alive = tmp_path / f"{speed_run.SCRATCH_PREFIX}{os.getppid()}_def"  # the parent process still runs
    alive.mkdir()
    unrelated = tmp_path / f"{speed_run.SCRATCH_PREFIX}notapid"
    unrelated.mkdir()

    scratch = speed_run.scratch_folder(tmp_path)
    folder = tmp_path / os.path.basename(scratch.name)
    assert folder.is_dir() and folder.name.startswith(f"{speed_run.SCRATCH_PREFIX}{os.getpid()}_")
    assert not stale.exists()
    assert alive.is_dir() and unrelated.is_dir()
    (folder / "model.onnx").write_bytes(b"y")
    scratch.cleanup()
    assert not folder.exists()


def test_scratch_folder_rejects_bad_roots(tmp_path):
    from quantlab.book import speed_run

    with pytest.raises(ValueError, match="root is not a directory"):
        speed_run.scratch_folder(tmp_path / "missing")
    with pytest.raises(TypeError, match="root must be a path"):
        speed_run.scratch_folder(3)
