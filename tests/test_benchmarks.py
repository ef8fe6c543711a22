"""benchmarks/run.py works: its quick mode runs every row and writes well-formed results.

Speed is not asserted here (timings belong to the benchmark, not to the tests); only that
the script runs, every row is present and complete, and the numbers are consistent.
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
    "int8_channel_vs_copy", "int8_channel_vs_torch", "int4_group128_vs_copy",
    "fp8_e4m3_vs_torch_cast", "bf16_vs_torch_cast", "pack_unpack_int4_vs_copy",
}
ROW_KEYS = {"key", "benchmark", "reference", "size", "goal", "status", "met", "time_ms",
            "reference_ms", "ratio", "result", "check", "note"}


def _committed() -> bytes | None:
    path = ROOT / "benchmarks" / "results.json"
    return path.read_bytes() if path.exists() else None


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    before = _committed()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
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
    assert KERNEL_ROWS <= set(keys)
    assert "gptq_blocked_vs_column_loop" in keys
    assert any(k.startswith("explorer_update") for k in keys)
    assert keys[-1] == "notebooks"
    for r in rows:
        assert set(r) == ROW_KEYS, r["key"]
        assert r["goal"] and r["benchmark"]
        assert r["status"] in ("ok", "not available", "skipped"), (r["key"], r["note"])


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
