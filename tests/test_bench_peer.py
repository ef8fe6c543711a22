"""benchmarks/bench_peer.py: reading llama-bench's output, and the skip path without a compiler.

Nothing is built or downloaded here and no speed is asserted: the parser reads a stored
output of llama-bench (tests/data/llama_bench_tg32.json, written by the llama.cpp of
llama-cpp-python 0.3.36 on SmolLM2-135M Q4_0), the build script is run with a missing
cmake (it must stop before downloading anything), and benchmarks/run.py must leave the
opt-in group out of a run that does not name it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "llama_bench_tg32.json"


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("_bench_peer_under_test", ROOT / "benchmarks" / "bench_peer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def no_cmake(tmp_path, monkeypatch):
    """An empty cache folder and a cmake that does not exist."""
    monkeypatch.setenv("QUANTLAB_LLAMACPP_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CMAKE", str(tmp_path / "no-such-cmake"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- parsing


def test_parses_llama_bench_json(peer):
    text = SAMPLE.read_text()
    stored = json.loads(text)
    tests = peer.parse_llama_bench(text)
    assert len(tests) == len(stored) == 2
    for got, raw in zip(tests, stored):
        assert got["threads"] == raw["n_threads"] and got["n_gen"] == raw["n_gen"] == 32 and got["n_prompt"] == 0
        assert got["tokens_per_s"] == pytest.approx(raw["avg_ts"])
        assert got["samples_ts"] == pytest.approx(raw["samples_ts"]) and len(got["samples_ts"]) == 3
        assert got["model_size"] == raw["model_size"] and got["n_params"] == raw["model_n_params"]
        assert got["build_commit"] == raw["build_commit"] and got["cpu_info"] == raw["cpu_info"]
    assert [t["threads"] for t in tests] == [1, 2]


def test_parses_jsonl_and_text_around_the_json(peer):
    stored = json.loads(SAMPLE.read_text())
    jsonl = "\n".join(json.dumps(d) for d in stored)
    assert peer.parse_llama_bench(jsonl) == peer.parse_llama_bench(SAMPLE.read_text())
    noisy = "load_backend: loaded CPU backend\n" + SAMPLE.read_text()
    assert peer.parse_llama_bench(noisy) == peer.parse_llama_bench(SAMPLE.read_text())


def test_parses_the_markdown_table(peer):
    stored = json.loads(SAMPLE.read_text())
    lines = [
        "| model | size | params | backend | threads | test | t/s |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for d in stored:
        lines.append(
            f"| {d['model_type']} | {d['model_size'] / 2**20:.2f} MiB | {d['model_n_params'] / 1e6:.2f} M | "
            f"CPU | {d['n_threads']} | tg{d['n_gen']} | {d['avg_ts']:.2f} ± {d['stddev_ts']:.2f} |"
        )
    tests = peer.parse_llama_bench("\n".join(lines) + "\n\nbuild: abc (1)\n")
    assert [t["threads"] for t in tests] == [d["n_threads"] for d in stored]
    for got, raw in zip(tests, stored):
        assert got["tokens_per_s"] == pytest.approx(raw["avg_ts"], abs=0.005)
        assert got["n_gen"] == 32 and got["n_prompt"] == 0 and got["samples_ts"] == []
        assert got["model_size"] == pytest.approx(raw["model_size"], rel=1e-3)


@pytest.mark.parametrize("text", ["", "error: failed to load model", "| model |\n"])
def test_output_without_a_test_is_an_error(peer, text):
    with pytest.raises(ValueError):
        peer.parse_llama_bench(text)
    with pytest.raises(TypeError):
        peer.parse_llama_bench(None)


# --------------------------------------------------------------------------- building and skipping


def test_build_script_stops_with_status_3_when_cmake_is_missing(no_cmake):
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_llamacpp.sh")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    assert "missing cmake" in proc.stderr and proc.stdout == ""
    assert not (no_cmake / "sdist").exists()  # stopped before downloading anything


def test_a_missing_tool_skips_the_rows_with_the_reason(peer, no_cmake):
    with pytest.raises(peer.PeerUnavailable, match="missing cmake"):
        peer.build_llama_bench()
    rows = peer.rows(quick=True)
    assert len(rows) == 1 and rows[0]["status"] == "skipped" and "missing cmake" in rows[0]["note"]


def test_a_cached_binary_is_used_without_building(peer, no_cmake):
    binary = no_cmake / "bin" / "llama-bench"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    assert peer.build_llama_bench() == binary  # cmake is missing, but nothing needs building


def test_a_failing_build_is_an_error_not_a_skip(peer, tmp_path):
    script = tmp_path / "build.sh"
    script.write_text("echo 'compiler crashed' >&2\nexit 1\n")
    with pytest.raises(RuntimeError, match="compiler crashed"):
        peer.build_llama_bench(script)


def test_run_py_runs_the_peer_group_only_when_named(tmp_path):
    env = {**os.environ, "QUANTLAB_LLAMACPP_DIR": str(tmp_path / "cache"), "CMAKE": str(tmp_path / "none")}
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--only", "peer", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["key"], r["group"], r["status"]) for r in rows] == [("peer", "peer", "skipped")]
    assert "missing cmake" in rows[0]["note"]
    assert not (tmp_path / "peer_results.json").exists()  # quick mode writes no stored reference


@pytest.fixture
def run_module(monkeypatch):
    """benchmarks/run.py with every group replaced by one that records that it ran."""
    spec = importlib.util.spec_from_file_location("_bench_run_under_test", ROOT / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    ran = []

    def fake(group):
        def bench(*args, **kwargs):
            ran.append(group)
            return [run._row(f"{group}_row", group, "-", "", "-", met=True, result="new")]

        return bench

    for name in ("int8_channel", "int4_group", "float_casts", "pack", "gptq", "explorer", "speed", "peer", "notebooks"):
        monkeypatch.setattr(run, f"bench_{name}", fake(name))
    threads = torch.get_num_threads()
    yield run, ran
    torch.set_num_threads(threads)  # run.main sets torch's threads


def test_a_run_without_only_leaves_out_the_peer_and_keeps_its_rows(run_module, tmp_path):
    run, ran = run_module
    assert run.GROUPS.index("peer") < run.GROUPS.index("notebooks") and run.OPT_IN_GROUPS == ("peer",)
    out = tmp_path / "results.json"
    old = {
        "schema_version": 1,
        "mode": "quick",
        "threads": 1,
        "date": "2000-01-01 00:00 UTC",
        "machine": {"cpu_model": "Another CPU 9000"},
        "rows": [
            run._row(
                "peer_q4_0_2t",
                "peer row",
                "-",
                "",
                "-",
                group="peer",
                met=False,
                result="old",
                measured="2000-01-01 00:00 UTC",
            ),
            run._row(
                "pack_row", "pack", "-", "", "-", group="pack", met=True, result="old", measured="2000-01-01 00:00 UTC"
            ),
        ],
    }
    out.write_text(json.dumps(old))
    assert run.main(["--quick", "--out", str(out)]) == 0
    assert "peer" not in ran and "notebooks" in ran
    rows = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["peer_q4_0_2t"]["result"] == "old" and rows["pack_row"]["result"] == "new"
    keys = list(rows)
    assert keys.index("peer_q4_0_2t") < keys.index("notebooks_row")  # rows in the order of their groups
    written = json.loads(out.read_text())
    assert written["machines_by_group"] == {"peer": {"cpu_model": "Another CPU 9000"}}  # kept, measured elsewhere
    assert (
        "Rows of the group(s) peer were measured on another CPU: Another CPU 9000."
        in out.with_suffix(".md").read_text()
    )
    ran.clear()
    assert run.main(["--quick", "--only", "peer", "--out", str(out)]) == 0
    assert ran == ["peer"]
    written = json.loads(out.read_text())
    rows = {r["key"]: r for r in written["rows"]}
    assert "peer_q4_0_2t" not in rows and rows["peer_row"]["result"] == "new"
    assert "machines_by_group" not in written  # every row now from this machine


def test_the_stored_reference_names_the_machine_and_every_kind(peer):
    table = {
        k: {t: {"llama.cpp": 100.0 / (i + 1), "quantlab": 80.0 / (i + 1), "ratio": 1.25} for t in (1, 2)}
        for i, k in enumerate(peer.KINDS)
    }
    result = {
        "tokens_per_s": table,
        "llama_bench": peer.parse_llama_bench(SAMPLE.read_text())[0],
        "load_average": {"before": [1.0, 1.0, 1.0], "after": [2.0, 1.0, 1.0]},
    }
    rec = peer.record(result, {"rounds": 3})
    assert rec["cpu"]["cores"] == os.cpu_count() and rec["cpu"]["model"]
    assert rec["engines"]["llama.cpp"]["build_commit"] == json.loads(SAMPLE.read_text())[0]["build_commit"]
    assert "0.3.36" in rec["engines"]["llama.cpp"]["source"]
    assert set(rec["tokens_per_s"]) == {"F32", "Q8_0", "Q4_0"} and set(rec["tokens_per_s"]["Q4_0"]) == {"1", "2"}
    assert rec["tokens_per_s"]["Q8_0"]["2"] == {"llama.cpp": 50.0, "quantlab": 40.0, "ratio": 1.25}
    assert rec["kinds"]["Q4_0"]["bits_per_weight"] == 4.5 and rec["settings"] == {"rounds": 3}
    assert rec["scheduling"]["nice"] == os.nice(0)
    json.dumps(rec)  # stored as JSON
