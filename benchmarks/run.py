"""Run every quantlab benchmark in one process, print a table, write the results.

Each row times quantlab against a reference measured *in the same run* -- a memory copy
of the same tensor, or torch's own kernel -- and reports the ratio, because absolute
times drift on a shared machine while ratios measured side by side are steadier. The
candidate and its reference are timed alternately (reference, candidate, reference, ...)
and the row reports the median of the per-pair ratios, plus the median times.

Rows (16M float32 elements, a 4096 x 4096 tensor, unless noted):

* int8 per-channel quantize + dequantize (scales included) vs a memory copy (goal: within
  3x) and vs ``torch.fake_quantize_per_channel_affine`` (goal: at least 5x faster);
* int4 groups of 128, quantize + dequantize, vs a memory copy (within 6x);
* fp8 e4m3 and bf16 round trips vs torch's own cast there and back (no slower);
* pack + unpack of int4 codes vs a memory copy of the codes (within 2x);
* GPTQ, one 384x1536 layer, 4096 calibration rows, blocked vs column loop
  (``benchmarks/bench_gptq.py``; at least 10x faster, same result);
* kernel explorer: one slider update vs re-creating the figure
  (``benchmarks/bench_explorer.py``; at most 25 ms and at least 2x faster);
* ONNX Runtime speed (``benchmarks/bench_speed.py``): one 4096 x 4096 layer at batch 1, int8
  and int4 vs float32 (at least 2x / 3x faster); SmolLM2-135M decoding at batch 1, int8 and
  int4 in groups of 64 vs float32 (at least 2x the tokens/s and 70% of the roofline); one
  action of the CartPole policy and of a 512-wide policy, ONNX Runtime vs eager torch and
  int8 vs float32 (reported, with loose bounds);
* the peer engine (``benchmarks/bench_peer.py``, group ``peer``, only when named:
  ``--only peer`` or ``make bench-peer``): SmolLM2-135M decoding in llama.cpp's
  ``llama-bench`` against quantlab's ONNX Runtime decoder at the same bits per weight
  (F32, Q8_0, Q4_0), at 1 and 2 threads, timed in turn (goal: at least llama.cpp's
  tokens/s); llama-bench is built once into a cache folder by ``scripts/build_llamacpp.sh``
  (skipped, with the reason, where no compiler or cmake is present); it also writes the
  stored reference ``peer_results.json`` next to the results file (full mode);
* executing every notebook of the book (full mode only; under 5 minutes in total).

The rows come in groups, named after the benchmark that makes them: ``int8``, ``int4``,
``casts``, ``pack``, ``gptq``, ``explorer``, ``speed``, ``peer`` and ``notebooks``
(:data:`GROUPS`). ``--only`` runs some groups and merges their rows into the results file
already there: the other rows keep their values, and every row records when it was measured
(``measured``, UTC) and its group (``group``). A run without ``--only`` runs every group
but those of :data:`OPT_IN_GROUPS` (``peer`` downloads and builds llama.cpp), and keeps
their rows from the results file already there.

Usage::

    python benchmarks/run.py                # full run: writes benchmarks/results.{json,md}
    python benchmarks/run.py --quick --out /tmp/r.json   # small sizes, few repeats (CI)
    python benchmarks/run.py --only speed   # re-measure the speed rows, keep the others
    python benchmarks/run.py --only peer    # llama.cpp vs quantlab (make bench-peer)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

import quantlab as ql

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCHEMA_VERSION = 1
#: The row groups, in the order they run and appear; ``--only`` selects among them.
GROUPS: tuple[str, ...] = ("int8", "int4", "casts", "pack", "gptq", "explorer", "speed", "peer", "notebooks")
#: Groups that run only when ``--only`` names them (their rows are kept by a run without ``--only``).
OPT_IN_GROUPS: tuple[str, ...] = ("peer",)
# Rows written before rows carried their group: the group from the start of the key.
_KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("int8_channel", "int8"),
    ("int4_group", "int4"),
    ("fp8_", "casts"),
    ("bf16_", "casts"),
    ("pack", "pack"),
    ("gptq", "gptq"),
    ("explorer", "explorer"),
    ("speed", "speed"),
    ("peer", "peer"),
    ("notebooks", "notebooks"),
)


# --------------------------------------------------------------------------- timing


def compare(candidate: Callable[[], Any], reference: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Time ``candidate`` and ``reference`` alternately; medians in ms and of the ratios.

    Returns:
        ``time_ms`` and ``reference_ms`` (medians) and ``ratio``: the median over the
        repeats of candidate time / reference time measured back to back.
    """
    candidate()  # warm up: first-touch of buffers, lazy initialisation
    reference()
    cand, ref, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reference()
        t1 = time.perf_counter()
        candidate()
        t2 = time.perf_counter()
        ref.append(t1 - t0)
        cand.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return {
        "time_ms": 1e3 * statistics.median(cand),
        "reference_ms": 1e3 * statistics.median(ref),
        "ratio": statistics.median(ratios),
    }


def _row(key: str, title: str, reference: str, size: str, goal: str, **fields: Any) -> dict[str, Any]:
    row = {
        "key": key,
        "benchmark": title,
        "reference": reference,
        "size": size,
        "goal": goal,
        "status": "ok",
        "met": None,
        "time_ms": None,
        "reference_ms": None,
        "ratio": None,
        "result": "",
        "check": {},
        "note": "",
        "group": None,
        "measured": None,
    }
    row.update(fields)
    return row


def _vs_copy(
    key: str,
    title: str,
    t: dict[str, float],
    max_ratio: float,
    size: str,
    reference: str = "memory copy of the same tensor (Tensor.copy_ into a buffer)",
    **extra: Any,
) -> dict[str, Any]:
    return _row(
        key,
        title,
        reference,
        size,
        f"within {max_ratio:g}x the copy",
        **t,
        met=t["ratio"] <= max_ratio,
        result=f"{t['ratio']:.2f}x the copy",
        **extra,
    )


def _vs_torch(
    key: str, title: str, reference: str, t: dict[str, float], min_speedup: float, size: str, **extra: Any
) -> dict[str, Any]:
    speedup = 1.0 / t["ratio"]
    if min_speedup == 1.0:
        goal, met = "no slower than torch (ratio <= 1)", t["ratio"] <= 1.0
    else:
        goal, met = f"at least {min_speedup:g}x faster than torch", speedup >= min_speedup
    word = "faster" if speedup >= 1 else "slower"
    shown = speedup if speedup >= 1 else 1.0 / speedup
    return _row(key, title, reference, size, goal, **t, met=met, result=f"{shown:.2f}x {word} than torch", **extra)


# --------------------------------------------------------------------------- kernels


def bench_int8_channel(x: torch.Tensor, repeats: int, size: str) -> list[dict[str, Any]]:
    out = torch.empty_like(x)
    copy_buf = torch.empty_like(x)
    zp = torch.zeros(x.shape[0], dtype=torch.int32)

    def ours():
        ql.fake_quantize(x, "int8", granularity="channel", axis=0, out=out)

    def torch_fq():
        scale = torch.maximum(x.amax(dim=1), x.amin(dim=1).neg()) / 127
        return torch.fake_quantize_per_channel_affine(x, scale, zp, 0, -128, 127)

    title = "int8 per-channel quantize + dequantize (scales included)"
    t_copy = compare(ours, lambda: copy_buf.copy_(x), repeats)
    t_torch = compare(ours, torch_fq, repeats)
    # checks: the fast path equals the general path; torch differs by at most one step
    ours()
    general = ql.quantize(x, "int8", granularity="channel", axis=0).dequantize()
    ref = torch_fq()
    scale = torch.maximum(x.amax(dim=1), x.amin(dim=1).neg()) / 127
    steps = ((out - ref).abs() / scale[:, None]).max().item()
    differ = (out != ref).float().mean().item()
    check_copy = {"equals_quantize_then_dequantize": bool(torch.equal(out, general))}
    check_torch = {"fraction_differing_from_torch": differ, "max_difference_in_steps": round(steps, 3)}
    note = (
        "torch multiplies by 1/scale, quantlab divides by scale: they differ by one step on "
        "about 1e-6 of the values. torch's op has no out= and allocates its result."
    )
    return [
        _vs_copy("int8_channel_vs_copy", title, t_copy, 3.0, size, check=check_copy),
        _vs_torch(
            "int8_channel_vs_torch",
            title,
            "torch.fake_quantize_per_channel_affine (with its scales from amax/amin)",
            t_torch,
            5.0,
            size,
            check=check_torch,
            note=note,
        ),
    ]


def bench_int4_group(x: torch.Tensor, repeats: int, size: str) -> list[dict[str, Any]]:
    out = torch.empty_like(x)
    copy_buf = torch.empty_like(x)

    def ours():
        ql.fake_quantize(x, "int4", granularity="group", group_size=128, out=out)

    t = compare(ours, lambda: copy_buf.copy_(x), repeats)
    ours()
    general = ql.quantize(x, "int4", granularity="group", group_size=128).dequantize()
    return [
        _vs_copy(
            "int4_group128_vs_copy",
            "int4 groups of 128, quantize + dequantize",
            t,
            6.0,
            size,
            check={"equals_quantize_then_dequantize": bool(torch.equal(out, general))},
        )
    ]


def bench_float_casts(x: torch.Tensor, repeats: int, size: str) -> list[dict[str, Any]]:
    rows = []
    out = torch.empty_like(x)
    back = torch.empty_like(x)
    for name, dtype in (("fp8_e4m3", torch.float8_e4m3fn), ("bf16", torch.bfloat16)):
        there = torch.empty(x.shape, dtype=dtype)

        def ours(name=name):
            ql.fake_quantize(x, name, scaled=False, out=out)

        def torch_cast(there=there):
            there.copy_(x)
            back.copy_(there)

        t = compare(ours, torch_cast, repeats)
        ours()
        torch_cast()
        same = bool(torch.equal(out.view(torch.int32), back.view(torch.int32)))
        rows.append(
            _vs_torch(
                f"{name}_vs_torch_cast",
                f"{name} round trip (fake_quantize, unscaled)",
                f"torch cast to {str(dtype).replace('torch.', '')} and back (into buffers)",
                t,
                1.0,
                size,
                check={"bit_identical_to_torch": same},
            )
        )
    rows[-1]["note"] = (
        "quantlab's bf16 rounding from float32 is torch's own cast, applied to "
        "cache-sized chunks; fp8 uses quantlab's round(x / q) * q."
    )
    return rows


def bench_pack(codes: torch.Tensor, repeats: int, size: str) -> list[dict[str, Any]]:
    n = codes.numel()
    packed = torch.empty(ql.packed_nbytes(n, 4), dtype=torch.uint8)
    unpacked = torch.empty_like(codes)
    copy_buf = torch.empty_like(codes)

    def ours():
        ql.pack(codes, 4, out=packed)
        ql.unpack(packed, 4, n, signed=True, out=unpacked)

    t = compare(ours, lambda: copy_buf.copy_(codes), repeats)
    ours()
    return [
        _vs_copy(
            "pack_unpack_int4_vs_copy",
            "pack + unpack int4 codes (int32 codes, signed)",
            t,
            2.0,
            size,
            reference="memory copy of the int32 codes (Tensor.copy_ into a buffer)",
            check={"round_trip_exact": bool(torch.equal(unpacked, codes))},
            note="unpack returns int32 codes, so the codes are int32 on both sides.",
        )
    ]


# --------------------------------------------------------------------------- other benchmarks


def _load(name: str):
    path = HERE / f"{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_gptq(quick: bool, threads: int) -> list[dict[str, Any]]:
    title = "GPTQ int4 g128, one 384x1536 layer, 4096 calibration rows"
    reference = "column-by-column GPTQ loop (quantlab.gptq.gptq_reference), same precomputed factor"
    goal = "at least 10x faster, same result"
    mod = _load("bench_gptq")
    if mod is None or not hasattr(mod, "bench_gptq"):
        return [
            _row(
                "gptq_blocked_vs_column_loop",
                title,
                reference,
                "384x1536",
                goal,
                status="not available",
                note="benchmarks/bench_gptq.py is not there",
            )
        ]
    r = mod.bench_gptq(repeats=1 if quick else 5, minilm=False, threads=threads)
    speedup = r["column_loop_s"] / r["blocked_s"]
    same = r["same_codes"]
    return [
        _row(
            "gptq_blocked_vs_column_loop",
            title,
            reference,
            "384x1536, 4096 rows",
            goal,
            time_ms=1e3 * r["blocked_s"],
            reference_ms=1e3 * r["column_loop_s"],
            ratio=1.0 / speedup,
            met=speedup >= 10 and same >= 0.999,
            result=f"{speedup:.1f}x faster (quantization loops); end to end "
            f"{r['speedup_end_to_end']:.1f}x ({1e3 * r['blocked_end_to_end_s']:.0f} vs "
            f"{1e3 * r['column_loop_end_to_end_s']:.0f} ms, shared factorisation "
            f"{1e3 * r['factor_s']:.0f} ms); {100 * same:.3f}% identical codes",
            check={
                "same_codes_fraction_float32": same,
                "hessian_ms": 1e3 * r["hessian_s"],
                "factor_ms": 1e3 * r["factor_s"],
                "blocked_end_to_end_ms": 1e3 * r["blocked_end_to_end_s"],
                "column_loop_end_to_end_ms": 1e3 * r["column_loop_end_to_end_s"],
            },
            note="medians of separate runs (bench_gptq.py); tests/test_gptq.py proves the "
            "two give identical codes in float64; in float32 a handful of ties may "
            "round apart.",
        )
    ]


def bench_explorer(quick: bool, threads: int) -> list[dict[str, Any]]:
    title = "kernel explorer: one slider update (compute + in-place redraw, Agg)"
    reference = "re-creating the figure each update"
    goal = "at most 25 ms and at least 2x faster"
    mod = _load("bench_explorer")
    if mod is None or not hasattr(mod, "bench_explorer"):
        return [
            _row(
                "explorer_update",
                title,
                reference,
                "",
                goal,
                status="not available",
                note="benchmarks/bench_explorer.py is not there",
            )
        ]
    r = mod.bench_explorer(repeats=2 if quick else 32, threads=threads, static=False)
    rows = []
    for source in [k for k, v in r.items() if isinstance(v, dict) and "update_ms" in v]:
        v = r[source]
        speedup = v["recreate_ms"] / v["update_ms"]
        met = v["update_ms"] <= r.get("budget_ms", 25.0) and speedup >= 2
        rows.append(
            _row(
                f"explorer_update_{source}",
                f"{title}, {source} weights",
                reference,
                source,
                goal,
                time_ms=v["update_ms"],
                reference_ms=v["recreate_ms"],
                ratio=1.0 / speedup,
                met=met,
                result=(
                    f"{v['update_ms']:.1f} ms ({v.get('update_cpu_ms', float('nan')):.1f} ms of CPU), "
                    f"{speedup:.1f}x faster"
                ),
                check={
                    "update_cpu_ms": v.get("update_cpu_ms"),
                    "redraw_ms": v.get("redraw_ms"),
                    "compute_ms": v.get("compute_ms"),
                },
                note="medians of separate runs (bench_explorer.py); the goal is judged on wall-clock "
                "time, CPU time shown beside it is steadier on a shared machine",
            )
        )
    return rows


def bench_speed(quick: bool, threads: int) -> list[dict[str, Any]]:
    mod = _load("bench_speed")
    if mod is None or not hasattr(mod, "rows"):
        return [
            _row(
                "speed",
                "ONNX Runtime speed (layer, SmolLM2 decoding, policies)",
                "-",
                "",
                "-",
                status="not available",
                note="benchmarks/bench_speed.py is not there",
            )
        ]
    return mod.rows(quick, threads, make_row=_row)


def bench_peer(quick: bool, threads: int, record_path: Optional[Path] = None) -> list[dict[str, Any]]:
    mod = _load("bench_peer")
    if mod is None or not hasattr(mod, "rows"):
        return [
            _row(
                "peer",
                "SmolLM2-135M decoding: quantlab + ONNX Runtime vs llama.cpp",
                "-",
                "",
                "-",
                status="not available",
                note="benchmarks/bench_peer.py is not there",
            )
        ]
    return mod.rows(quick, threads, make_row=_row, record_path=record_path)


def bench_notebooks(quick: bool) -> list[dict[str, Any]]:
    title = "execute every notebook of the book (jupyter nbconvert --execute)"
    goal = "under 5 minutes in total"
    notebooks = sorted((ROOT / "chapters").glob("*.ipynb"))
    if quick:
        return [
            _row("notebooks", title, "-", f"{len(notebooks)} notebooks", goal, status="skipped", note="full mode only")
        ]
    per: dict[str, float] = {}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for nb in notebooks:
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "jupyter",
                    "nbconvert",
                    "--to",
                    "notebook",
                    "--execute",
                    "--output-dir",
                    tmp,
                    "--ExecutePreprocessor.timeout=600",
                    str(nb),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            per[nb.name] = round(time.perf_counter() - t0, 1)
            if proc.returncode != 0:
                failed.append(nb.name)
    total = sum(per.values())
    return [
        _row(
            "notebooks",
            title,
            "-",
            f"{len(notebooks)} notebooks",
            goal,
            status="ok" if not failed else "error",
            time_ms=1e3 * total,
            met=total < 300 and not failed,
            result=f"{total:.0f} s in total",
            check={"seconds_per_notebook": per, "failed": failed},
            note="one after another, each in a fresh kernel",
        )
    ]


# --------------------------------------------------------------------------- output


def _fmt_ms(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v < 0.1:
        return f"{1e3 * v:.1f} us"
    return f"{v / 1e3:.1f} s" if v >= 10_000 else f"{v:.1f} ms"


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| benchmark | reference | time | reference time | result | goal | met | measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        if r["status"] != "ok":
            met = r["status"]
        lines.append(
            f"| {r['benchmark']} | {r['reference']} | {_fmt_ms(r['time_ms'])} | "
            f"{_fmt_ms(r['reference_ms'])} | {r['result'] or r['note']} | {r['goal']} | {met} | "
            f"{r.get('measured') or results.get('date', '-')} |"
        )
    return "\n".join(lines)


_ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def cpu_info() -> dict[str, Any]:
    """The CPU model, its SIMD flags that matter for these kernels, and what torch uses of them.

    Speeds and float results depend on the instruction set (AVX2 or AVX-512, VNNI, AMX), so the
    results file records it. Read from /proc/cpuinfo where it exists.
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu_model": model,
        "isa_flags": [f for f in _ISA_FLAGS if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_env": {
            k: os.environ[k]
            for k in (
                "ATEN_CPU_CAPABILITY",
                "ONEDNN_MAX_CPU_ISA",
                "MKL_ENABLE_INSTRUCTIONS",
                "OPENBLAS_CORETYPE",
                "NPY_DISABLE_CPU_FEATURES",
            )
            if k in os.environ
        },
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    cpu = (
        f"{m['cpu_model']} ({', '.join(m['isa_flags'])}; torch uses {m['torch_cpu_capability']})"
        if "cpu_model" in m
        else "CPU not recorded"
    )
    dates = {r.get("measured") or results["date"] for r in results["rows"]}
    when = (
        results["date"]
        if len(dates) <= 1
        else f"written {results['date']}, rows measured {min(dates)} to {max(dates)} (last column)"
    )
    head = (
        f"# quantlab benchmarks ({results['mode']} mode)\n\n"
        f"{when}; {cpu}; torch {m['torch']}, numpy {m['numpy']}, Python {m['python']}; "
        f"{m['cpu_count']} CPUs, {results['threads']} torch thread(s); "
        f"{results['elements']:,} float32 elements per kernel row; "
        f"medians of {results['repeats']} alternating runs.\n\n"
    )
    by_cpu: dict[str, list[str]] = {}
    for g, machine in results.get("machines_by_group", {}).items():
        by_cpu.setdefault(machine.get("cpu_model", "another CPU"), []).append(g)
    for other, groups in by_cpu.items():
        head += f"Rows of the group(s) {', '.join(groups)} were measured on another CPU: {other}.\n\n"
    notes = [f"- {r['benchmark']}: {r['note']}" for r in results["rows"] if r["note"]]
    return head + table(results) + "\n\nNotes:\n\n" + "\n".join(notes) + "\n"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def run(
    quick: bool,
    threads: int,
    repeats: Optional[int] = None,
    only: Optional[Sequence[str]] = None,
    peer_record: Optional[Path] = None,
) -> dict[str, Any]:
    """Run the benchmark groups (all but :data:`OPT_IN_GROUPS`, or those named in ``only``,
    see :data:`GROUPS`). ``peer_record``: where the ``peer`` group writes its stored reference."""
    if only is not None:
        unknown = sorted(set(only) - set(GROUPS))
        if unknown:
            raise ValueError(f"unknown group(s) {unknown}; the groups are {list(GROUPS)}")
    torch.set_num_threads(threads)
    rows_, cols_ = (256, 1024) if quick else (4096, 4096)
    reps = repeats or (3 if quick else 15)
    size = f"{rows_}x{cols_} float32"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows_, cols_, generator=g)
    codes = torch.randint(-8, 8, (rows_ * cols_,), generator=g, dtype=torch.int32)
    rows: list[dict[str, Any]] = []
    steps: list[tuple[str, Callable[[], list[dict[str, Any]]]]] = [
        ("int8", lambda: bench_int8_channel(x, reps, size)),
        ("int4", lambda: bench_int4_group(x, reps, size)),
        ("casts", lambda: bench_float_casts(x, reps, size)),
        ("pack", lambda: bench_pack(codes, reps, f"{rows_ * cols_} int32 codes")),
        ("gptq", lambda: bench_gptq(quick, threads)),
        ("explorer", lambda: bench_explorer(quick, threads)),
        ("speed", lambda: bench_speed(quick, threads)),
        ("peer", lambda: bench_peer(quick, threads, peer_record)),
        ("notebooks", lambda: bench_notebooks(quick)),
    ]
    assert [name for name, _ in steps] == list(GROUPS)
    for name, step in steps:
        if (only is None and name in OPT_IN_GROUPS) or (only is not None and name not in only):
            continue
        t0 = time.perf_counter()
        try:
            new = step()
        except Exception as err:  # a broken benchmark is reported, the others still run
            new = [
                _row(
                    name,
                    name,
                    "-",
                    "",
                    "-",
                    status="error",
                    note=f"{type(err).__name__}: {err}",
                    check={"traceback": traceback.format_exc(limit=3)},
                )
            ]
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        measured = _now()
        for r in new:
            r["group"], r["measured"] = name, measured
        rows.extend(new)
    torch.set_num_threads(threads)
    return {
        "schema_version": SCHEMA_VERSION,
        "mode": "quick" if quick else "full",
        "date": _now(),
        "threads": threads,
        "repeats": reps,
        "elements": rows_ * cols_,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(terse=True),
            **cpu_info(),
        },
        "rows": rows,
        "summary": _summary(rows),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "met": sum(r["met"] is True for r in rows),
        "not_met": sum(r["met"] is False for r in rows),
        "not_run": sum(r["status"] != "ok" for r in rows),
    }


def row_group(row: dict[str, Any]) -> Optional[str]:
    """The group of a row: its ``group`` field, or for older rows the one its key starts with."""
    if row.get("group"):
        return row["group"]
    return next((g for prefix, g in _KEY_PREFIXES if row["key"].startswith(prefix)), None)


def merge(old: dict[str, Any], new: dict[str, Any], groups: Sequence[str]) -> dict[str, Any]:
    """``old`` results with the rows of ``groups`` replaced by those of ``new``.

    Rows of the other groups keep their values and their ``measured`` date (rows from before
    rows carried one get ``old``'s date). The rows stay in the order of :data:`GROUPS`. The
    file's ``date`` becomes ``new``'s (its last write); machine, repeats and sizes are
    ``new``'s too, so ``mode`` and ``threads`` must agree. Kept groups measured on another
    CPU than ``new``'s are listed with their machine in ``machines_by_group``.

    Raises:
        ValueError: a different schema version, mode or thread count.
    """
    for field in ("schema_version", "mode", "threads"):
        if old.get(field) != new.get(field):
            raise ValueError(
                f"cannot merge rows of {field}={new.get(field)!r} into results with "
                f"{field}={old.get(field)!r}; write them to another file (--out)"
            )
    kept = []
    for r in old["rows"]:
        r = dict(r)
        r["group"] = row_group(r)
        r.setdefault("measured", None)
        r["measured"] = r["measured"] or old.get("date")
        if r["group"] not in groups:
            kept.append(r)
    order = {g: i for i, g in enumerate(GROUPS)}
    rows = sorted(kept + list(new["rows"]), key=lambda r: order.get(r["group"], len(GROUPS)))
    cpu = new.get("machine", {}).get("cpu_model")
    elsewhere = {}
    for g in sorted({r["group"] for r in kept}, key=lambda g: order.get(g, len(GROUPS))):
        machine = old.get("machines_by_group", {}).get(g, old.get("machine", {}))
        if machine.get("cpu_model", cpu) != cpu:
            elsewhere[g] = machine
    merged = {**new, "rows": rows, "summary": _summary(rows)}
    merged.pop("machines_by_group", None)
    if elsewhere:
        merged["machines_by_group"] = elsewhere
    return merged


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed pairs per row")
    ap.add_argument("--out", type=Path, default=HERE / "results.json", help="JSON results path")
    ap.add_argument("--md", type=Path, default=None, help="Markdown table path (default: next to --out, .md)")
    ap.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="GROUP[,GROUP...]",
        help=f"run only these row groups ({', '.join(GROUPS)}) and merge their rows into "
        "the results already in --out (the other rows keep their values and dates)",
    )
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    only = None
    if args.only is not None:
        only = [g.strip() for item in args.only for g in item.split(",") if g.strip()]
        unknown = [g for g in only if g not in GROUPS]
        if unknown or not only:
            ap.error(f"--only takes group names among {', '.join(GROUPS)}; got {args.only}")
    old = None
    if only is not None and args.out.exists():
        old = json.loads(args.out.read_text())
        for field, value in (
            ("schema_version", SCHEMA_VERSION),
            ("mode", "quick" if args.quick else "full"),
            ("threads", args.threads),
        ):
            if old.get(field) != value:  # checked before running anything
                ap.error(
                    f"{args.out} holds results of {field}={old.get(field)!r}, this run has "
                    f"{field}={value!r}: give another --out"
                )
    elif only is None and args.out.exists():
        old = json.loads(args.out.read_text())
        if any(
            old.get(f) != v
            for f, v in (
                ("schema_version", SCHEMA_VERSION),
                ("threads", args.threads),
                ("mode", "quick" if args.quick else "full"),
            )
        ):
            old = None  # another kind of results: written anew, without its opt-in rows
    peer_record = None if args.quick else args.out.parent / "peer_results.json"
    results = run(args.quick, args.threads, args.repeats, only=only, peer_record=peer_record)
    if old is not None and only is None:  # every group ran but the opt-in ones: keep their rows
        old = {**old, "rows": [r for r in old["rows"] if row_group(r) in OPT_IN_GROUPS]}
        results = merge(old, results, [g for g in GROUPS if g not in OPT_IN_GROUPS])
    elif old is not None:
        was = old.get("machine", {}).get("cpu_model")
        if was is not None and was != results["machine"].get("cpu_model"):
            print(
                f"warning: {args.out} was measured on {was!r}, this run on {results['machine'].get('cpu_model')!r}",
                file=sys.stderr,
            )
        results = merge(old, results, only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    md = args.md or args.out.with_suffix(".md")
    md.write_text(markdown(results))
    print(table(results))
    print(f"\nwrote {args.out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
