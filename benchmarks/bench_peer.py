"""The peer engine: SmolLM2-135M decoding in llama.cpp beside quantlab's ONNX Runtime decoder.

Both engines run the same weights at the same bits per weight, in one process run, at 1 and
2 threads:

* **llama.cpp**: ``llama-bench -p 0 -n 32`` (32 generated tokens from an empty context,
  median of its per-run tokens/s) on GGUF files written by quantlab's own writer
  (:func:`quantlab.deploy.gguf_export.export_smollm`). llama-bench is built from the
  pinned ``llama-cpp-python`` source distribution by ``scripts/build_llamacpp.sh`` into a
  cache folder, once; where cmake, ninja/make or a C++ compiler is missing the rows are
  skipped with the script's message.
* **quantlab**: the fused decode graph (:func:`quantlab.deploy.decoder.export_decoder`) in ONNX
  Runtime (:class:`quantlab.deploy.runtime.OrtDecoder`): the prompt "The capital of France is",
  then 32 greedy tokens; tokens/s of a run = 32 / the summed times of its 32 steps (the
  Python loop and the argmax included), median over the runs.

The kinds (:data:`KINDS`) match the bytes a token reads, scales included: GGUF's Q8_0 and
Q4_0 are blocks of 32 codes with one float16 scale (8.5 and 4.5 bits per weight); quantlab's
``MatMulNBits`` keeps float32 scales, so groups of 64 give the same 8.5 and 4.5 bits (groups
of 32 would read 9 and 5). The Q4_0 file keeps the token embeddings in Q8_0 (quantlab's
default, as llama.cpp keeps its output layer above 4 bits); SmolLM2's output head is tied to
them, so the quantlab model's head is int8 g64 there. The float32 file is all F32.

The two engines are timed alternately: per thread count, each round runs llama-bench then
quantlab for each kind in turn, so that a change of the machine's load hits both.

Usage::

    python benchmarks/run.py --only peer          # rows in benchmarks/results.{json,md}
    python benchmarks/bench_peer.py [--rounds 3]  # print the table only
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The ``llama-cpp-python`` source distribution whose ``vendor/llama.cpp`` is built.
LLAMA_CPP_PYTHON = "0.3.36"
BUILD_SCRIPT = ROOT / "scripts" / "build_llamacpp.sh"
#: The exit status of ``scripts/build_llamacpp.sh`` when a build tool is missing.
SKIP_STATUS = 3
THREADS: tuple[int, ...] = (1, 2)
#: GGUF kind -> (export_smollm kind, keep Q8_0 embeddings, quantlab body scheme, head scheme,
#: description of the quantlab side). ``None`` schemes: float32.
KINDS: dict[str, tuple[str, bool, Optional[tuple[str, int]], Optional[tuple[str, int]], str]] = {
    "F32": ("f32", False, None, None, "float32 (MatMul)"),
    "Q8_0": ("q8_0", False, ("int8", 64), ("int8", 64), "int8 g64, float32 scales (MatMulNBits)"),
    "Q4_0": (
        "q4_0",
        True,
        ("int4", 64),
        ("int8", 64),
        "int4 g64, float32 scales (MatMulNBits); head int8 g64 like the file's Q8_0 embeddings",
    ),
}
BITS_PER_WEIGHT = {"F32": 32.0, "Q8_0": 8.5, "Q4_0": 4.5}
#: Seconds of rest after each sample (one llama-bench call and the quantlab runs of one kind):
#: on a shared machine the other work gets the cores between samples.
PAUSE_S = 3.0


class PeerUnavailable(RuntimeError):
    """llama-bench cannot be built here (a tool is missing); the message says which."""


# --------------------------------------------------------------------------- building


def build_llama_bench(
    script: Path = BUILD_SCRIPT, env: Optional[Mapping[str, str]] = None, timeout: float = 3600
) -> Path:
    """The path of a built ``llama-bench`` (built first if the cache has none).

    Runs ``scripts/build_llamacpp.sh``: it prints the cached binary at once, or downloads the
    pinned source distribution from PyPI and builds it (minutes).

    Raises:
        PeerUnavailable: the script exited with :data:`SKIP_STATUS` (no cmake, no ninja or
            make, no C++ compiler, no pip); its message is the exception's.
        RuntimeError: the build failed otherwise (the end of its output in the message).
    """
    run_env = dict(os.environ if env is None else env)
    run_env.setdefault("PYTHON", sys.executable)
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=run_env, timeout=timeout)
    if proc.returncode == SKIP_STATUS:
        raise PeerUnavailable(proc.stderr.strip() or "llama.cpp cannot be built here")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        raise RuntimeError(f"{script.name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return Path(lines[-1])


# --------------------------------------------------------------------------- llama-bench output


def _record(d: Mapping[str, Any]) -> dict[str, Any]:
    samples = [float(x) for x in d.get("samples_ts") or []]
    return {
        "model_type": d.get("model_type", ""),
        "model_size": int(d.get("model_size", 0)),
        "n_params": int(d.get("model_n_params", 0)),
        "threads": int(d["n_threads"]),
        "n_prompt": int(d.get("n_prompt", 0)),
        "n_gen": int(d.get("n_gen", 0)),
        "tokens_per_s": float(d["avg_ts"]),
        "stddev_ts": float(d.get("stddev_ts", 0.0)),
        "samples_ts": samples,
        "build_commit": d.get("build_commit", ""),
        "build_number": d.get("build_number"),
        "cpu_info": d.get("cpu_info", ""),
        "poll": d.get("poll"),
    }


_SIZE = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_PARAMS = {"K": 1e3, "M": 1e6, "B": 1e9}


def _markdown(text: str) -> list[dict[str, Any]]:
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.strip().startswith("|")
    ]
    if len(rows) < 2:
        raise ValueError("llama-bench output holds neither JSON nor a Markdown table")
    head, out = rows[0], []
    for cells in rows[2:]:
        if len(cells) != len(head):
            continue
        d = dict(zip(head, cells))
        avg, _, std = d["t/s"].partition("±")
        test = re.fullmatch(r"(?:pp(\d+))?\+?(?:tg(\d+))?(?: @ d\d+)?", d.get("test", ""))
        size, unit = (d.get("size", "0 MiB").split() + ["MiB"])[:2]
        params, punit = (d.get("params", "0 M").split() + ["M"])[:2]
        out.append(
            _record(
                {
                    "model_type": d.get("model", ""),
                    "model_size": round(float(size) * _SIZE.get(unit, 1)),
                    "model_n_params": round(float(params) * _PARAMS.get(punit, 1)),
                    "n_threads": d.get("threads", d.get("n_threads", 0)),
                    "n_prompt": int(test.group(1) or 0) if test else 0,
                    "n_gen": int(test.group(2) or 0) if test else 0,
                    "avg_ts": float(avg),
                    "stddev_ts": float(std or 0),
                }
            )
        )
    if not out:
        raise ValueError("llama-bench's Markdown table has no rows")
    return out


def parse_llama_bench(text: str) -> list[dict[str, Any]]:
    """The tests in ``llama-bench``'s output (``-o json``, ``-o jsonl`` or the Markdown table).

    Returns:
        One dict per test: ``model_type``, ``model_size`` (bytes), ``n_params``, ``threads``,
        ``n_prompt``, ``n_gen``, ``tokens_per_s`` (llama-bench's mean), ``stddev_ts``,
        ``samples_ts`` (per run; empty from Markdown), ``build_commit``, ``build_number``,
        ``cpu_info``, ``poll``.

    Raises:
        ValueError: the text holds no test.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    body = text.strip()
    start = body.find("[")
    if start >= 0 and body.endswith("]"):
        try:
            return [_record(d) for d in json.loads(body[start:])]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    records = []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                records.append(_record(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    if records:
        return records
    return _markdown(body)


def run_llama_bench(
    binary: Path, model: Path, threads: int, n: int = 32, repeats: int = 3, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """One ``llama-bench -p 0 -n n -r repeats -t threads -o json`` run; its one test record."""
    cmd = [
        str(binary),
        "-m",
        str(model),
        "-p",
        "0",
        "-n",
        str(n),
        "-r",
        str(repeats),
        "-t",
        str(threads),
        "-o",
        "json",
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    tests = parse_llama_bench(proc.stdout)
    if len(tests) != 1:
        raise RuntimeError(f"expected one llama-bench test, got {len(tests)}")
    return tests[0]


# --------------------------------------------------------------------------- machine


def cpu_record() -> dict[str, Any]:
    """CPU model, the instruction-set flags that matter for these kernels, and the core count."""
    sys.path.insert(0, str(HERE))
    from run import cpu_info  # the results file's own CPU record

    info = cpu_info()
    return {
        "model": info["cpu_model"],
        "isa_flags": info["isa_flags"],
        "cores": os.cpu_count(),
        "platform": platform.platform(terse=True),
    }


def scheduling() -> dict[str, Any]:
    """This process's scheduler priority: its nice value and, on Linux, its autogroup's.

    On a shared machine a benchmark run may be given a higher priority (a negative nice
    value, or ``echo -20 > /proc/self/autogroup`` where autogroups are on) so that other work
    takes less of its time slices; the record says so.
    """
    out: dict[str, Any] = {"nice": os.nice(0) if hasattr(os, "nice") else None}
    try:
        out["autogroup"] = Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        out["autogroup"] = None
    return out


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (None where the OS does not say)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- the two engines


def _scheme(spec: Optional[tuple[str, int]]):
    from quantlab.nn import QuantScheme

    return None if spec is None else QuantScheme(spec[0], group_size=spec[1])


def quantlab_model(kind: str):
    """SmolLM2-135M for ``kind`` (:data:`KINDS`), quantized as the quantlab side runs it."""
    from quantlab.book.models import smollm
    from quantlab.nn import QuantizedLinear, quantize_model

    _, _, body, head = KINDS[kind][:4]
    model = smollm.load_model()
    if body is None:
        return model
    body, head = _scheme(body), _scheme(head)
    return quantize_model(
        model,
        body,
        skip=None,
        progress=False,
        layer_fn=lambda name, lin: QuantizedLinear.from_linear(lin, head if name == "lm_head" else body),
    )


def write_models(folder: Path, kinds: Sequence[str], max_len: int = 128) -> dict[str, dict[str, Path]]:
    """The GGUF file (quantlab's writer) and the fused ONNX decode step of each kind."""
    from quantlab.deploy.decoder import export_decoder
    from quantlab.deploy.gguf_export import DEFAULT_KEEP, export_smollm

    out: dict[str, dict[str, Path]] = {}
    for kind in kinds:
        gkind, keep_q8, *_ = KINDS[kind]
        gguf_file = folder / f"smollm2-{kind.lower()}.gguf"
        export_smollm(None, gguf_file, kind=gkind, keep=DEFAULT_KEEP if keep_q8 else None)
        onnx_file = export_decoder(quantlab_model(kind), folder / f"smollm2-{kind.lower()}.onnx", max_len)
        out[kind] = {"gguf": gguf_file, "onnx": onnx_file}
    return out


def quantlab_tokens_per_s(decoder, prompt: Sequence[int], n: int) -> float:
    """One run of greedy decoding: ``n`` / the summed seconds of its ``n`` generating steps."""
    from quantlab.deploy.runtime import greedy_decode

    times: list[float] = []
    greedy_decode(decoder.step, prompt, n, reset=decoder.reset, times=times)
    return n / sum(times)


def measure(
    binary: Path,
    models: Mapping[str, Mapping[str, Path]],
    threads: Sequence[int] = THREADS,
    rounds: int = 3,
    n: int = 32,
    repeats: int = 3,
    decoder_options: Optional[Mapping[str, Any]] = None,
    pause: float = PAUSE_S,
) -> dict[str, Any]:
    """Tokens/s of both engines for every kind and thread count, timed alternately.

    Per thread count: for ``rounds`` rounds, for each kind, one ``llama-bench`` call
    (``repeats`` runs of ``n`` tokens) then ``repeats`` quantlab runs of ``n`` tokens.

    Returns:
        ``{"tokens_per_s": {kind: {threads: {"llama.cpp": median, "quantlab": median,
        "ratio": llama.cpp / quantlab}}}, "samples": {...}, "llama_bench": one test record,
        "prompt_tokens": int, "load_average": {"before", "after"}}``.
    """
    from quantlab.book.models import smollm
    from quantlab.deploy.runtime import OrtDecoder

    prompt = smollm.load_tokenizer()("The capital of France is").input_ids
    before = load_average()
    samples: dict[str, dict[int, dict[str, list[float]]]] = {
        k: {t: {"llama.cpp": [], "quantlab": []} for t in threads} for k in models
    }
    record = None
    for t in threads:
        # The benchmark gives each engine the machine to itself at raised priority (see scheduling()),
        # where spinning worker threads pay off; the decoder's default is to let them sleep.
        options = {"spinning": True, **dict(decoder_options or {})}
        decoders = {k: OrtDecoder(m["onnx"], t, **options) for k, m in models.items()}
        for dec in decoders.values():
            quantlab_tokens_per_s(dec, prompt, 4)  # warm up
        for _ in range(rounds):
            for kind, m in models.items():
                record = run_llama_bench(binary, m["gguf"], t, n=n, repeats=repeats)
                samples[kind][t]["llama.cpp"].extend(record["samples_ts"] or [record["tokens_per_s"]])
                for _ in range(repeats):
                    samples[kind][t]["quantlab"].append(quantlab_tokens_per_s(decoders[kind], prompt, n))
                time.sleep(pause)
        del decoders
    table = {}
    for kind, per in samples.items():
        table[kind] = {}
        for t, s in per.items():
            peer, ours = statistics.median(s["llama.cpp"]), statistics.median(s["quantlab"])
            table[kind][t] = {"llama.cpp": peer, "quantlab": ours, "ratio": peer / ours}
    return {
        "tokens_per_s": table,
        "samples": samples,
        "llama_bench": record,
        "prompt_tokens": len(prompt),
        "load_average": {"before": before, "after": load_average()},
    }


def record(result: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The stored reference for this machine (``benchmarks/peer_results.json``)."""
    import onnxruntime

    import quantlab

    lb = result["llama_bench"] or {}
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_record(),
        "engines": {
            "llama.cpp": {
                "source": f"llama-cpp-python {LLAMA_CPP_PYTHON} (PyPI sdist), GGML_NATIVE=ON",
                "build_commit": lb.get("build_commit"),
                "build_number": lb.get("build_number"),
                "cpu_info": lb.get("cpu_info"),
            },
            "quantlab": {"version": quantlab.__version__, "onnxruntime": onnxruntime.__version__},
        },
        "load_average": result["load_average"],
        "scheduling": scheduling(),
        "settings": dict(settings),
        "kinds": {k: {"bits_per_weight": BITS_PER_WEIGHT[k], "quantlab": KINDS[k][4]} for k in result["tokens_per_s"]},
        "tokens_per_s": {
            k: {str(t): {e: round(v, 2) for e, v in per.items()} for t, per in d.items()}
            for k, d in result["tokens_per_s"].items()
        },
        "samples_tokens_per_s": {
            k: {str(t): {e: [round(x, 2) for x in v] for e, v in per.items()} for t, per in d.items()}
            for k, d in result.get("samples", {}).items()
        },
    }


def rows(
    quick: bool,
    threads: int = 1,
    make_row: Optional[Callable[..., dict]] = None,
    record_path: Optional[Path] = None,
    rounds: Optional[int] = None,
) -> list[dict[str, Any]]:
    """The benchmark rows, in the format of ``benchmarks/run.py`` (``make_row`` is its ``_row``).

    One row per kind and thread count: quantlab's tokens/s against llama.cpp's, ratio =
    quantlab's time per token / llama.cpp's. ``quick`` runs one round of 8 tokens and only
    F32 and Q4_0. Where llama-bench cannot be built, one row with status ``skipped`` and the
    reason. ``record_path``: also write :func:`record` there.
    """
    if make_row is None:

        def make_row(key, title, reference, size, goal, **fields):
            return {"key": key, "benchmark": title, "reference": reference, "size": size, "goal": goal, **fields}

    title = "SmolLM2-135M decoding: quantlab + ONNX Runtime vs llama.cpp"
    reference = "llama.cpp llama-bench -p 0 -n 32 (same weights, same bits per weight), timed in turn"
    goal = "at least llama.cpp's tokens/s"
    try:
        binary = build_llama_bench()
    except PeerUnavailable as err:
        return [
            make_row(
                "peer", title, reference, "", goal, status="skipped", note=f"llama.cpp vs quantlab not measured: {err}"
            )
        ]
    kinds = ("F32", "Q4_0") if quick else tuple(KINDS)
    n, rounds = (8, 1) if quick else (32, rounds or 3)
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="quantlab_peer_") as tmp:
        models = write_models(Path(tmp), kinds)
        result = measure(binary, models, THREADS, rounds=rounds, n=n, repeats=repeats, pause=0.0 if quick else PAUSE_S)
    settings = {
        "llama-bench": f"-p 0 -n {n} -r {repeats} (its default thread waiting: OpenMP, polling)",
        "quantlab": "fused ONNX graph (quantlab.deploy.runtime.OrtDecoder, default options: worker "
        "threads spin "
        f"within a step when threads > 1), {n} greedy tokens after a "
        f"{result['prompt_tokens']}-token prompt, {repeats} runs per round",
        "rounds": rounds,
        "alternation": "per thread count and round: llama.cpp then quantlab, kind by kind",
        "tokens_per_s": "median over all runs of (tokens / seconds of the run)",
    }
    if record_path is not None and not quick:
        Path(record_path).write_text(json.dumps(record(result, settings), indent=1) + "\n")
    out = []
    load = result["load_average"]
    cpu = cpu_record()
    for kind in kinds:
        for t in THREADS:
            v = result["tokens_per_s"][kind][t]
            ours, peer = v["quantlab"], v["llama.cpp"]
            word = f"{peer / ours:.2f}x slower" if ours < peer else f"{ours / peer:.2f}x faster"
            out.append(
                make_row(
                    f"peer_{kind.lower()}_{t}t",
                    f"{title}: {kind} / {KINDS[kind][4].split(' (')[0]}, {t} thread(s)",
                    reference,
                    f"{BITS_PER_WEIGHT[kind]:g} bits/weight",
                    goal,
                    time_ms=1e3 / ours,
                    reference_ms=1e3 / peer,
                    ratio=peer / ours,
                    met=ours >= peer,
                    result=f"{ours:.1f} vs {peer:.1f} tokens/s (quantlab {word})",
                    check={
                        "tokens_per_s": {"quantlab": ours, "llama.cpp": peer},
                        "threads": t,
                        "samples_ts": result["samples"][kind][t],
                        "load_average": load,
                        "llama_cpp_build": (result["llama_bench"] or {}).get("build_commit"),
                        "cpu": cpu,
                    },
                    note=f"{cpu['model']}, {cpu['cores']} cores; medians of runs of {n} tokens, the engines timed in "
                    f"turn; llama.cpp built from llama-cpp-python {LLAMA_CPP_PYTHON} (GGML_NATIVE); GGUF written "
                    "by quantlab",
                )
            )
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round of 8 tokens, F32 and Q4_0")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", type=Path, default=None, help="also write the stored reference JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    for r in rows(args.quick, record_path=args.record, rounds=args.rounds):
        print(f"{r['key']}: {r.get('result') or r.get('note')} (goal: {r['goal']}; met: {r.get('met')})")
    print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
