"""The settings of the deep dive "Beyond int4" (quantlab.book.smollm_study) and the results that
scripts/smollm_experiments.py stores for it in benchmarks/smollm_experiments.json."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from quantlab.evaluation import perplexity

from quantlab.book import smollm_study as sx

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "benchmarks" / "smollm_experiments.json"


def _script():
    spec = importlib.util.spec_from_file_location("smollm_experiments", ROOT / "scripts" / "smollm_experiments.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_study():
    pytest.importorskip("transformers")
    from tiny_models import tiny_llama

    model = tiny_llama(std=0.3)
    gen = torch.Generator().manual_seed(0)
    cal = torch.randint(0, 96, (128,), generator=gen)
    ev = torch.randint(0, 96, (96,), generator=gen)
    return sx.Study(model, cal, ev, context=32, reference_bits=5.0)


# --------------------------------------------------------------------------- the settings


#: Bits per weight that a setting's format promises whatever the layer shapes (fp16 scales per
#: group of 64; int zero points stored in the codes' width; HQQ's zero points in fp16).
PROMISED = {
    "RTN int4": 4.25,
    "RTN int3": 3.25,
    "RTN int2": 2.25,
    "GPTQ int4, symmetric": 4.25,
    "GPTQ int4, zero point": 4 + 20 / 64,
    "GPTQ int3, zero point": 3 + 19 / 64,
    "GPTQ int3 g32, zero point": 3 + 19 / 32,
    "imatrix-RTN int4": 4.25,
    "AWQ int4": 4.25,
    "HQQ int4, zero point": 4.5,
    "rotation+RTN int4": 4.25,
    "MXFP4": 4.25,
}


def test_settings_are_named_and_described():
    assert list(sx.SETTINGS)[:2] == [sx.REFERENCE, sx.ROTATED]
    assert len(sx.SETTINGS) == 24
    for name, s in sx.SETTINGS.items():
        assert (s.family == "reference") == (name in (sx.REFERENCE, sx.ROTATED))
        assert ("zero point" in name) == s.zero_point, name
        assert name.startswith("rotation+") == s.rotated, name
        if s.bits:
            assert f"int{s.bits}" in name
    assert sx.CONFIG["settings"] == {n: vars(s) for n, s in sx.SETTINGS.items()}
    assert sx.CONFIG["protocol"] == {"n_calibration": 2048, "n_evaluation": 1024, "context": 256}


def test_protocol_in_config_is_the_chapter_protocol():
    from quantlab.models import smollm

    assert sx.CONFIG["protocol"] == smollm.PROTOCOL._asdict()


def test_every_setting_builds_and_is_measured(tiny_study):
    rows = sx.run_settings(tiny_study)
    assert list(rows) == list(sx.SETTINGS)
    for name, r in rows.items():
        assert r["family"] == sx.SETTINGS[name].family
        assert math.isfinite(r["ppl"]) and r["ppl"] > 1 and r["kl"] >= 0 and 0 <= r["agree"] <= 1, name
    for name, bits in PROMISED.items():
        assert rows[name]["bits"] == pytest.approx(bits, abs=1e-9), name
    ref = rows[sx.REFERENCE]
    assert ref["bits"] == 5.0 and ref["kl"] == 0 and ref["agree"] == 1
    assert ref["ppl"] == perplexity(tiny_study.reference, tiny_study.evaluation, 32)
    # the rotation alone computes the same function
    assert rows[sx.ROTATED]["ppl"] == pytest.approx(ref["ppl"], rel=1e-4) and rows[sx.ROTATED]["agree"] == 1
    # fewer bits lose more, and every quantized setting moves the distributions
    assert rows["RTN int2"]["kl"] > rows["RTN int3"]["kl"] > rows["RTN int4"]["kl"] > 0
    # no block spans 256 weights of a row here: the K-quant and ternary settings are their fallbacks
    assert rows["Q4_K (+Q5_0)"]["bits"] == 5.5 and rows["TQ2_0 (+Q4_0)"]["bits"] == 4.5


def test_build_leaves_the_reference_unchanged_and_measures_what_it_built(tiny_study):
    before = {k: v.clone() for k, v in tiny_study.reference.state_dict().items()}
    model, _bits = tiny_study.build("GPTQ int4, symmetric")
    after = tiny_study.reference.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    m = tiny_study.measure(model)
    assert m["ppl"] == perplexity(model, tiny_study.evaluation, 32)


def test_build_rejects_unknown_settings(tiny_study):
    with pytest.raises(ValueError, match="name must be one of"):
        tiny_study.build("int5 magic")
    with pytest.raises(ValueError, match="names must be keys of SETTINGS"):
        sx.run_settings(tiny_study, ["RTN int4", "RTN int9"])
    with pytest.raises(TypeError, match="reference must be a torch.nn.Module"):
        sx.Study("model", torch.arange(10), torch.arange(10))


def test_calibrate_feeds_windows_one_at_a_time():
    calls = []

    class Recorder(torch.nn.Module):
        def forward(self, input_ids):
            calls.append(tuple(input_ids.shape))

    sx.calibrate(Recorder(), torch.arange(100), 32)
    assert calls == [(1, 32), (1, 32), (1, 32), (1, 4)]
    calls.clear()
    sx.calibrate(Recorder(), torch.arange(100), 32, n_windows=2)
    assert calls == [(1, 32), (1, 32)]
    with pytest.raises(ValueError, match="context must be an int >= 2"):
        sx.calibrate(Recorder(), torch.arange(10), 1)
    with pytest.raises(ValueError, match="n_windows must be a positive int"):
        sx.calibrate(Recorder(), torch.arange(10), 4, n_windows=0)


# --------------------------------------------------------------------------- comparing methods


def test_gap_closed_and_compare_words():
    assert sx.gap_closed(20.0, 30.0, 20.0) == 1.0
    assert sx.gap_closed(30.0, 30.0, 20.0) == 0.0
    assert sx.gap_closed(22.5, 30.0, 20.0) == pytest.approx(0.75)
    assert sx.compare_words(0.75, 0.70) == "about as much as"
    assert sx.compare_words(0.90, 0.60) == "more than"
    assert sx.compare_words(0.40, 0.60) == "less than"
    assert sx.compare_words(0.40, 0.60, band=0.25) == "about as much as"
    with pytest.raises(ValueError, match="ppl_rtn must be above ppl_ref"):
        sx.gap_closed(20.0, 19.0, 20.0)
    with pytest.raises(ValueError, match="ppl must be a positive finite number"):
        sx.gap_closed(float("nan"), 30.0, 20.0)
    with pytest.raises(ValueError, match="band must be in"):
        sx.compare_words(0.5, 0.5, band=1.5)


# --------------------------------------------------------------------------- the stored results


def test_config_hash_is_of_the_canonical_json():
    assert sx.config_hash({"b": 1, "a": [1, 2]}) == sx.config_hash({"a": [1, 2], "b": 1})
    assert sx.config_hash({"a": 1}) != sx.config_hash({"a": 2})
    with pytest.raises(TypeError, match="config must be a dict"):
        sx.config_hash([1])


def test_stored_results_hold_the_current_config():
    """benchmarks/smollm_experiments.json (written by `make experiments`) is the script's output
    for the current CONFIG, with a row for every setting."""
    data = sx.load_results(STORED)
    assert data["config"] == json.loads(json.dumps(sx.CONFIG))
    assert data["config_hash"] == sx.config_hash(sx.CONFIG) == sx.config_hash(data["config"])
    assert list(data["rows"]) == list(sx.SETTINGS)
    rows = data["rows"]
    for name, r in rows.items():
        assert r["family"] == sx.SETTINGS[name].family
        assert math.isfinite(r["ppl"]) and r["ppl"] > 1 and r["kl"] >= 0 and 0 <= r["agree"] <= 1, name
    for name, bits in PROMISED.items():
        assert rows[name]["bits"] == pytest.approx(bits, abs=1e-9), name
    assert rows[sx.REFERENCE]["kl"] == 0 and rows[sx.REFERENCE]["agree"] == 1 and rows[sx.REFERENCE]["bits"] == 5.0
    assert data["meta"]["machine"]["cpu"] and data["meta"]["seconds"] > 0


def test_load_results_refuses_stale_or_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no stored results"):
        sx.load_results(tmp_path / "none.json")
    stale = json.loads(STORED.read_text())
    stale["config_hash"] = "0" * 64
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="another configuration"):
        sx.load_results(tmp_path / "stale.json")
    short = json.loads(STORED.read_text())
    del short["rows"]["MXFP4"]
    (tmp_path / "short.json").write_text(json.dumps(short))
    with pytest.raises(ValueError, match="has no rows for"):
        sx.load_results(tmp_path / "short.json")


def test_script_writes_what_load_results_reads(tmp_path, tiny_study):
    mod = _script()
    out = mod.write_results(tiny_study, tmp_path / "r.json", names=["shipped (Q4_1)", "RTN int4"])
    data = json.loads(out.read_text())
    assert data["config_hash"] == sx.config_hash(sx.CONFIG)
    assert list(data["rows"]) == ["shipped (Q4_1)", "RTN int4"] and data["rows"]["RTN int4"]["bits"] == 4.25
    assert data["meta"]["machine"]["cpu"] and data["meta"]["threads"] == torch.get_num_threads()
