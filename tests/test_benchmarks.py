"""benchmarks/run.py works: its quick mode runs every row and writes well-formed results.

Speed is not asserted here (timings belong to the benchmark, not to the tests); only that
the script runs, every row is present and complete, the numbers are consistent, and
``--only`` re-runs some row groups and merges them into an existing results file.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmark script end to end: make test runs it, make unit does not

ROOT = Path(__file__).resolve().parents[1]
KERNEL_ROWS = {
    "int8_channel_vs_copy",
    "int8_channel_vs_torch",
    "int4_group128_vs_copy",
    "fp8_e4m3_vs_torch_cast",
    "bf16_vs_torch_cast",
    "pack_unpack_int4_vs_copy",
}
SPEED_ROWS = {
    "speed_layer_int8_vs_fp32",
    "speed_layer_int4_vs_fp32",
    "speed_decode_int8",
    "speed_decode_int4",
    "speed_policy_cartpole_ort_vs_torch",
    "speed_policy_cartpole_int8_vs_fp32",
    "speed_policy_mlp512_ort_vs_torch",
    "speed_policy_mlp512_int8_vs_fp32",
}
ROW_KEYS = {
    "key",
    "benchmark",
    "reference",
    "size",
    "goal",
    "status",
    "met",
    "time_ms",
    "reference_ms",
    "ratio",
    "result",
    "check",
    "note",
    "group",
    "measured",
}
GROUPS = ("int8", "int4", "casts", "pack", "gptq", "explorer", "speed", "peer", "notebooks")


def _committed() -> bytes | None:
    path = ROOT / "benchmarks" / "results.json"
    return path.read_bytes() if path.exists() else None


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    before = _committed()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _committed() == before  # quick mode never overwrites the committed results
    return json.loads(out.read_text()), out, proc.stdout


def test_quick_run_writes_json_and_markdown(quick):
    results, out, stdout = quick
    assert results["mode"] == "quick" and results["schema_version"] == 1
    assert results["threads"] == 1 and results["repeats"] >= 1 and results["elements"] > 0
    assert set(results["machine"]) >= {"python", "torch", "numpy", "cpu_count"}
    md = out.with_suffix(".md").read_text()
    assert md.count("\n| ") == len(results["rows"]) + 1  # header + one line per row
    assert "| benchmark | reference |" in stdout


def test_every_row_is_present_and_complete(quick):
    rows = quick[0]["rows"]
    keys = [r["key"] for r in rows]
    assert set(keys) >= KERNEL_ROWS
    assert set(keys) >= SPEED_ROWS
    assert "gptq_blocked_vs_column_loop" in keys
    assert any(k.startswith("explorer_update") for k in keys)
    assert keys[-1] == "notebooks"
    for r in rows:
        assert set(r) == ROW_KEYS, r["key"]
        assert r["goal"] and r["benchmark"]
        assert r["status"] in ("ok", "not available", "skipped"), (r["key"], r["note"])
        assert r["group"] in GROUPS and r["measured"].endswith(" UTC"), r["key"]
    groups = [r["group"] for r in rows]
    assert groups == sorted(groups, key=GROUPS.index)  # rows in the order of their groups
    assert {r["group"] for r in rows if r["key"] in SPEED_ROWS} == {"speed"}


def test_timed_rows_are_consistent(quick):
    for r in quick[0]["rows"]:
        if r["status"] != "ok":
            assert r["met"] is None and r["note"]
            continue
        assert isinstance(r["met"], bool), r["key"]
        assert r["time_ms"] > 0 and r["reference_ms"] > 0 and r["ratio"] > 0, r["key"]
        assert math.isfinite(r["ratio"])
        assert r["result"]


def test_kernel_rows_checked_their_results(quick):
    rows = {r["key"]: r for r in quick[0]["rows"]}
    assert rows["int8_channel_vs_copy"]["check"]["equals_quantize_then_dequantize"] is True
    assert rows["int4_group128_vs_copy"]["check"]["equals_quantize_then_dequantize"] is True
    assert rows["fp8_e4m3_vs_torch_cast"]["check"]["bit_identical_to_torch"] is True
    assert rows["bf16_vs_torch_cast"]["check"]["bit_identical_to_torch"] is True
    assert rows["pack_unpack_int4_vs_copy"]["check"]["round_trip_exact"] is True
    torch_row = rows["int8_channel_vs_torch"]["check"]
    assert torch_row["max_difference_in_steps"] <= 1.0 + 1e-3
    assert torch_row["fraction_differing_from_torch"] < 1e-3


def test_speed_rows_report_policies_and_decoders(quick):
    rows = {r["key"]: r for r in quick[0]["rows"]}
    decode = rows["speed_decode_int8"]["check"]
    assert set(decode["tokens_per_s"]) == {"fp32", "int8", "int8 per channel", "int4", "int4 traced"}
    assert "MatMulNBits" in decode["kernels"]["int8"] and "MatMulInteger" in decode["kernels"]["int8 per channel"]
    traffic = decode["bytes_per_token"]
    assert traffic["int4"] < traffic["int8"] < traffic["fp32"] and traffic["int8 per channel"] < traffic["fp32"]
    assert traffic["int4 traced"] > traffic["int4"]  # the traced step reads every cache slot
    for name in ("cartpole", "mlp512"):
        us = rows[f"speed_policy_{name}_ort_vs_torch"]["check"]["us_per_action"]
        assert set(us) == {"fp32 torch", "fp32 ORT", "int8 ORT"} and min(us.values()) > 0
        assert rows[f"speed_policy_{name}_int8_vs_fp32"]["check"]["us_per_action"] == us  # one timing run


def _run(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_only_merges_some_groups_into_existing_results(quick, tmp_path):
    results, _, _ = quick
    out = tmp_path / "merged.json"
    old = json.loads(json.dumps(results))
    for r in old["rows"]:  # mark every row, to see which ones are measured again
        r["measured"] = "2000-01-01 00:00 UTC"
        r["result"] = "old result"
    out.write_text(json.dumps(old))
    before = _committed()
    proc = _run("--quick", "--only", "pack,speed", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _committed() == before
    merged = json.loads(out.read_text())
    assert [r["key"] for r in merged["rows"]] == [r["key"] for r in old["rows"]]  # same rows, same order
    for r, was in zip(merged["rows"], old["rows"]):
        if r["group"] in ("pack", "speed"):
            assert r["measured"] != was["measured"] and r["result"] != "old result", r["key"]
        else:
            assert r == was, r["key"]  # untouched: values and date
    assert merged["summary"]["met"] == sum(r["met"] is True for r in merged["rows"])
    md = out.with_suffix(".md").read_text()
    assert md.count("\n| ") == len(merged["rows"]) + 1
    assert "2000-01-01 00:00 UTC" in md and "rows measured 2000-01-01 00:00 UTC to" in md


def test_only_writes_a_new_file_and_refuses_other_modes(tmp_path):
    out = tmp_path / "new.json"
    proc = _run("--quick", "--only", "pack", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["key"] for r in rows] == ["pack_unpack_int4_vs_copy"] and rows[0]["group"] == "pack"
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"schema_version": 1, "mode": "full", "threads": 1, "rows": []}))
    proc = _run("--quick", "--only", "pack", "--out", full)  # quick rows never enter a full file
    assert proc.returncode == 2 and "mode" in proc.stderr
    assert json.loads(full.read_text())["rows"] == []
    proc = _run("--quick", "--only", "nonsense", "--out", out)
    assert proc.returncode == 2 and "speed" in proc.stderr
