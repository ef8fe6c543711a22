"""The logic that turns speed measurements into sentences, verdicts and bounds, tested without
the hardware: synthetic records of three machine profiles (an AMD EPYC with AVX-512 and VNNI,
an Intel Xeon with AVX-512, VNNI and AMX, an AVX2-only CPU without VNNI on which int8
``MatMulInteger`` is slower than float32), and the stored references."""

from __future__ import annotations

import copy
import json
import math

import pytest

from quantlab.book import speed_facts as sf
from quantlab.book.speed_facts import SpeedRecord


def _layer(
    fp32_b1: float, int8_x: float, int4_x: float, fp32_b64: float, int4_x64: float, torch_b1: float, eager_b1: float
) -> dict:
    return {
        "4096x4096": {
            "fp32 torch": {"1": torch_b1, "64": 2 * fp32_b64},
            "fp32 ORT": {"1": fp32_b1, "64": fp32_b64},
            "int8 ORT": {"1": fp32_b1 / int8_x, "64": fp32_b64 / 1.5},
            "int4 ORT": {"1": fp32_b1 / int4_x, "64": fp32_b64 / int4_x64},
            "int4 eager": {"1": eager_b1, "64": eager_b1 * 1.4},
        }
    }


def _decode(fp32: float, int8: float, int4b: float, int4a: float, two: float) -> dict:
    one = {"fp32": fp32, "int8 g64": int8, "int4 g64, head fp32": int4b, "int4 g64, head int4": int4a}
    return {"1": one, "2": {k: v * two for k, v in one.items()}}


MB = {"fp32": 538.7, "int8 g64": 143.6, "int4 g64, head fp32": 173.7, "int4 g64, head int4": 76.4}


def amd_profile() -> SpeedRecord:
    return SpeedRecord(
        machine={
            "cpu": "AMD EPYC 9R14",
            "flags": ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni"],
            "cores": 2,
            "threads": 1,
            "date": "2026-12-01",
        },
        values={
            "bandwidth": {"read": 37.8, "copy": 36.2},
            "peaks": {"fp32 ORT": 104.0, "int8 ORT": 386.0},
            "layer": _layer(2.36e-3, 1.93, 4.93, 12.6e-3, 1.54, 2.82e-3, 70.7e-3),
            "decode": _decode(52.6, 119.4, 127.8, 206.8, 1.15),
            "decode_bandwidth": {"1": 38.6, "2": 47.1},
            "decode_mb_per_token": MB,
            "encoder": {"fp32": {"1": 162.0, "32": 285.0}, "int8": {"1": 272.0, "32": 403.0}},
            "policy": {
                "64": {"fp32 torch": 19e-6, "int8 torch (eager)": 83e-6, "fp32 ORT": 6e-6, "int8 ORT": 8e-6},
                "2048": {"fp32 torch": 877e-6, "int8 torch (eager)": 1905e-6, "fp32 ORT": 566e-6, "int8 ORT": 304e-6},
            },
        },
    )


def intel_profile() -> SpeedRecord:
    return SpeedRecord(
        machine={
            "cpu": "Intel(R) Xeon(R) Processor",
            "cores": 2,
            "threads": 1,
            "date": "2026-12-07",
            "flags": [
                "avx2",
                "fma",
                "avx512f",
                "avx512bw",
                "avx512_vnni",
                "avx_vnni",
                "avx512_bf16",
                "amx_tile",
                "amx_int8",
                "amx_bf16",
            ],
        },
        values={
            "bandwidth": {"read": 11.5, "copy": 12.1},
            "peaks": {"fp32 ORT": 141.0, "int8 ORT": 152.0},
            "layer": _layer(6.1e-3, 2.89, 3.87, 30e-3, 1.3, 6.5e-3, 95e-3),
            "decode": _decode(17.4, 47.3, 40.0, 66.0, 1.6),
            "decode_bandwidth": {"1": 12.1, "2": 20.0},
            "decode_mb_per_token": MB,
            "encoder": {"fp32": {"1": 120.0, "32": 240.0}, "int8": {"1": 125.0, "32": 230.0}},
            "policy": {
                "64": {"fp32 torch": 51.4e-6, "int8 torch (eager)": 160e-6, "fp32 ORT": 10.0e-6, "int8 ORT": 13.2e-6},
                "2048": {"fp32 torch": 1500e-6, "int8 torch (eager)": 3000e-6, "fp32 ORT": 1200e-6, "int8 ORT": 700e-6},
            },
        },
    )


def avx2_profile() -> SpeedRecord:
    """An AVX2-only CPU without VNNI: int8 products slower than float32, int4 barely ahead of int8."""
    return SpeedRecord(
        machine={"cpu": "AMD EPYC 7R13", "flags": ["avx2", "fma"], "cores": 2, "threads": 1, "date": "2026-12-02"},
        values={
            "bandwidth": {"read": 20.0, "copy": 22.0},
            "peaks": {"fp32 ORT": 80.0, "int8 ORT": 55.0},
            "layer": _layer(3.6e-3, 1.6, 1.7, 20e-3, 0.9, 3.9e-3, 120e-3),
            "decode": _decode(30.0, 50.0, 48.0, 60.0, 1.3),
            "decode_bandwidth": {"1": 22.0, "2": 30.0},
            "decode_mb_per_token": MB,
            "encoder": {"fp32": {"1": 100.0, "32": 180.0}, "int8": {"1": 70.0, "32": 120.0}},
            "policy": {
                "64": {"fp32 torch": 30e-6, "int8 torch (eager)": 120e-6, "fp32 ORT": 9e-6, "int8 ORT": 14e-6},
                "2048": {"fp32 torch": 1200e-6, "int8 torch (eager)": 2600e-6, "fp32 ORT": 900e-6, "int8 ORT": 650e-6},
            },
        },
    )


PROFILES = {"amd": amd_profile, "intel": intel_profile, "avx2": avx2_profile}


def test_verdict_thresholds():
    assert sf.verdict(1.2) == "faster" and sf.verdict(1 / 1.2) == "slower"
    assert sf.verdict(1.1) == "about as fast" and sf.verdict(0.9) == "about as fast"
    assert sf.verdict(sf.SAME) == "faster" and sf.verdict(1 / sf.SAME) == "slower"
    for bad in (0, -1.0, float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="ratio"):
            sf.verdict(bad)
    with pytest.raises(ValueError, match="same"):
        sf.verdict(1.5, same=1.0)


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_passes_the_page(name):
    """What the page does with a live run: sanity bounds hold and every sentence is produced."""
    rec = PROFILES[name]()
    others = [p() for n, p in PROFILES.items() if n != name]
    assert sf.sanity_problems(rec) == []
    text = sf.describe(rec, others)
    assert set(text) == {
        "peaks",
        "batch1",
        "int4_vs_int8",
        "batch64",
        "decode",
        "threads",
        "encoder",
        "policy",
        "reference",
    }
    for key, sentence in text.items():
        assert sentence.endswith("."), (key, sentence)
        assert "nan" not in sentence.lower() and "inf" not in sentence.lower(), sentence


def test_sentences_follow_the_measurements():
    amd, intel, avx2 = amd_profile(), intel_profile(), avx2_profile()
    refs = [amd, intel, avx2]
    t_amd, t_intel, t_avx2 = (sf.describe(r, refs) for r in refs)
    # int8 against float32 peaks: faster with VNNI on the AMD, about as fast on the Intel, slower on AVX2
    assert "3.7× faster" in t_amd["peaks"] and "VNNI" in t_amd["peaks"]
    assert "about as fast as float32 ones (1.08×)" in t_intel["peaks"] and "VNNI" in t_intel["peaks"]
    assert "float32 unit is strong" in t_intel["peaks"] and "141" in t_intel["peaks"]
    assert "slower" in t_avx2["peaks"] and "no VNNI" in t_avx2["peaks"]
    # int4 against int8 at batch 1
    assert t_amd["int4_vs_int8"].startswith("int4 runs 2.6× faster")
    assert "about as fast" in t_avx2["int4_vs_int8"]
    # bandwidth per core named where it is low
    assert "12 GB/s" in t_intel["decode"] and "38 GB/s" in t_intel["decode"]
    assert "bandwidth per core" not in t_amd["decode"]
    # the encoder follows the peaks: int8 slower where integer products are slower
    assert "int8 is 1.4× slower" in t_avx2["encoder"]
    # a second thread
    assert "float32 1.6×" in t_intel["threads"] and "little" not in t_intel["threads"]
    assert "little" in t_amd["threads"]


def test_a_run_on_a_reference_cpu_is_told_so():
    run = intel_profile()  # the same CPU, measured the same day, other numbers
    run.values["bandwidth"]["read"] = 10.0
    text = sf.describe(run, [amd_profile(), intel_profile()])["reference"]
    assert "same CPU as the reference Intel Xeon" in text and "2026-12-07" in text


def test_bytes_ratio_wording():
    rec = amd_profile()
    text = sf.describe(rec)["batch1"]
    # 1.93x for int8 is less than 32/8.008 = 4.0; 4.93x for int4 less than 6.4
    assert "int8 is 1.9× faster (less than the 4.0× fewer bytes" in text
    assert "int4 is 4.9× faster (less than the 6.4× fewer bytes" in text
    assert "caches" not in text and "more per byte" in text
    rec.values["layer"]["4096x4096"]["int4 ORT"]["1"] = rec.values["layer"]["4096x4096"]["fp32 ORT"]["1"] / 8
    text = sf.describe(rec)["batch1"]
    assert "Beyond it (int4)" in text and "caches" in text and "Below the ratio of bytes (int8)" in text


def test_missing_measurements_leave_sentences_out():
    rec = SpeedRecord(machine={"cpu": "x", "flags": []}, values={"peaks": {"fp32 ORT": 10.0, "int8 ORT": 5.0}})
    text = sf.describe(rec)
    assert set(text) == {"peaks", "reference"} and "neither AVX2 nor VNNI" in text["peaks"]
    assert text["reference"].startswith("No reference machine has this run's CPU")
    assert all(v is None for v in sf.general_claims(rec).values())


@pytest.mark.parametrize("name", PROFILES)
def test_general_claims_hold_on_the_profiles(name):
    claims = sf.general_claims(PROFILES[name]())
    assert set(claims) == set(sf.GENERAL_CLAIMS)
    assert all(claims.values()), claims


def test_general_claims_can_fail():
    rec = avx2_profile()
    rec.values["layer"]["4096x4096"]["int8 ORT"]["1"] = rec.values["layer"]["4096x4096"]["fp32 ORT"]["1"]
    rec.values["decode"]["1"]["int4 g64, head int4"] = 30.0
    claims = sf.general_claims(rec)
    assert claims["batch1_int_faster"] is False and claims["decode_int4_faster"] is False


def test_stored_references():
    refs = sf.load_references()
    assert len(refs) >= 2
    labels = [r.label for r in refs]
    assert len(set(labels)) == len(labels)
    for r in refs:
        for key in ("cpu", "flags", "cores", "threads", "engines", "date"):
            assert key in r.machine, (r.label, key)
        assert r.machine["engines"].get("onnxruntime") and r.machine["engines"].get("torch")
        assert sf.sanity_problems(r) == [], r.label
        # every statement the chapter makes in general holds on every reference
        claims = sf.general_claims(r)
        assert all(v is True for v in claims.values()), (r.label, claims)
    assert any("AMD" in r.machine["cpu"] for r in refs) and any("Intel" in r.machine["cpu"] for r in refs)


def test_sanity_catches_broken_setups():
    rec = intel_profile()
    bad = copy.deepcopy(rec)
    bad.values["layer"]["4096x4096"]["fp32 ORT"]["1"] = float("nan")
    assert any("not a positive finite" in p for p in sf.sanity_problems(bad))
    bad = copy.deepcopy(rec)
    bad.values["layer"]["4096x4096"]["fp32 ORT"]["1"] = 1.0  # a second for one 64 MB product: broken
    assert any("float32 layer at batch 1" in p for p in sf.sanity_problems(bad))
    busy_threads = copy.deepcopy(rec)  # one thread measured in a burst of load, two threads in a lull
    busy_threads.values["decode"]["2"]["fp32"] = 2.6 * busy_threads.values["decode"]["1"]["fp32"]
    assert sf.sanity_problems(busy_threads) == []
    bad = copy.deepcopy(rec)
    bad.values["layer"]["4096x4096"]["int4 ORT"]["1"] = bad.values["layer"]["4096x4096"]["fp32 ORT"]["1"] / 30
    assert any("more than fewer bytes" in p for p in sf.sanity_problems(bad))
    busy = copy.deepcopy(rec)  # a busy machine: everything 3x slower, bandwidth too
    for node in busy.values["layer"]["4096x4096"].values():
        for b in node:
            node[b] *= 3
    busy.values["bandwidth"] = {"read": 4.0, "copy": 4.0}
    assert sf.sanity_problems(busy) == []


def test_record_roundtrip_and_errors(tmp_path):
    rec = intel_profile()
    rec.put("extra", {1: 2.0})
    assert rec.get("extra", 1) == 2.0 and rec.get("extra", "1") == 2.0 and rec.get("nope", default=3) == 3
    back = SpeedRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert back.values == rec.values and back.machine == rec.machine
    with pytest.raises(ValueError, match="'cpu'"):
        SpeedRecord(machine={"flags": []})
    with pytest.raises(TypeError, match="machine"):
        SpeedRecord(machine=[1, 2])
    with pytest.raises(ValueError, match="name"):
        rec.put("", 1)
    with pytest.raises(TypeError, match="record"):
        sf.describe({"machine": {}})
    path = tmp_path / "refs.json"
    sf.save_reference(amd_profile(), path)
    sf.save_reference(intel_profile(), path)
    newer = intel_profile()
    newer.machine["date"] = "2026-12-08"
    sf.save_reference(newer, path)  # replaces the older record of the same CPU
    refs = sf.load_references(path)
    assert [r.machine["date"] for r in refs] == ["2026-12-01", "2026-12-08"]
    with pytest.raises(ValueError, match="no reference file"):
        sf.load_references(tmp_path / "missing.json")


def test_machine_label_and_info(tmp_path):
    assert sf.machine_label(intel_profile().machine) == "Intel Xeon, AVX-512 + VNNI + AMX, 2 cores"
    assert sf.machine_label(avx2_profile().machine) == "AMD EPYC, AVX2 only, 2 cores"
    assert (
        sf.machine_label({"cpu": "AMD EPYC 9R14 Processor", "flags": ["avx2", "avx512f", "avx512_vnni"]})
        == "AMD EPYC, AVX-512 + VNNI"
    )
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU 1\nflags\t\t: fpu avx2 fma avx512f\n")
    info = sf.machine_info(2, cpuinfo)
    assert info["cpu"] == "Test CPU 1" and set(info["flags"]) == {"avx2", "fma", "avx512f"}
    assert info["threads"] == 2 and info["engines"]["torch"] and len(info["date"]) == 10
    with pytest.raises(ValueError, match="threads"):
        sf.machine_info(0)


def test_claim_range():
    refs = [amd_profile(), intel_profile()]
    lo, hi = sf.claim_range(refs, "layer", "4096x4096", "fp32 ORT", 1, over=("layer", "4096x4096", "int4 ORT", 1))
    assert math.isclose(lo, 3.87) and math.isclose(hi, 4.93)
    with pytest.raises(ValueError, match="no record"):
        sf.claim_range(refs, "nothing")
