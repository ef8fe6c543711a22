"""Measure this machine as a reference for the speed page, and store it.

Runs every section of the page "Where the speed comes from" with the same functions the page
calls (:mod:`quantlab.book.speed_run`): the limits (bandwidth, ONNX Runtime's float32 and int8
peaks), the layer sweep, SmolLM2 decoding on one and two threads, MiniLM and the policies. The
record (machine: CPU model, flags, cores, engine versions, date) is added to
``src/quantlab/data/speed_references.json``, replacing an earlier record of the same CPU model
and core count. Run it on a quiet machine: the references are what a reader's run is compared
with. If ``benchmarks/peer_results.json`` holds llama.cpp measurements of the same CPU, they
are copied into the record as ``peer``.

    .venv/bin/python scripts/measure_speed_reference.py [--note "..."] [--dry-run]

About 3-5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def peer_values(peer: dict) -> dict:
    """``benchmarks/peer_results.json``'s tokens/s as a record's ``peer`` value:
    ``{engine: {kind: {threads: tokens/s}}}``."""
    out: dict = {"llama.cpp": {}, "quantlab": {}}
    for kind, per_threads in peer["tokens_per_s"].items():
        for threads, row in per_threads.items():
            for engine in out:
                out[engine].setdefault(kind, {})[str(threads)] = float(row[engine])
    return out


def main(argv: list[str] | None = None) -> int:
    from quantlab.book import speed_facts, speed_run
    from quantlab.book.models import smollm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--note", default="quiet machine", help="how the run was made (stored with the record)")
    ap.add_argument("--dry-run", action="store_true", help="print the record instead of storing it")
    ap.add_argument("--output", default=None, help="reference file (default: the package's data file)")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    record = speed_run.new_record(threads=1, note=args.note)
    start = time.perf_counter()
    print(f"==> {record.label}", flush=True)
    speed_run.limits(record)
    print(f"    limits: {record.values['bandwidth']} {record.values['peaks']}", flush=True)
    speed_run.layers(record)
    print("    layer sweep done", flush=True)
    tokenizer = smollm.load_tokenizer()
    prompt = tokenizer("The capital of France is", return_tensors="pt").input_ids[0].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        models = speed_run.smollm_variants()
        speed_run.decode(record, models, prompt, tmp)
        del models
        print(f"    decode: {record.values['decode']}", flush=True)
        speed_run.encoder(record, folder=tmp)
        speed_run.policies(record, folder=tmp)
    peer_file = ROOT / "benchmarks" / "peer_results.json"
    if peer_file.is_file():
        peer = json.loads(peer_file.read_text())
        if peer.get("cpu", {}).get("model") == record.machine["cpu"] and "tokens_per_s" in peer:
            record.put("peer", peer_values(peer))
            record.note += (
                f"; llama.cpp and quantlab's decoder side by side from benchmarks/{peer_file.name} "
                f"({peer.get('date', '?')})"
            )
    problems = speed_facts.sanity_problems(record)
    print(f"==> measured in {time.perf_counter() - start:.0f} s; sanity problems: {problems or 'none'}")
    if args.dry_run:
        print(json.dumps(record.to_json(), indent=1))
        return 0
    path = speed_facts.save_reference(record, args.output)
    print(f"==> stored in {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
