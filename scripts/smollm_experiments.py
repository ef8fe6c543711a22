"""Run every setting of the deep dive "Beyond int4" on SmolLM2-135M and store the results.

Each setting of ``quantlab.book.smollm_study.SETTINGS`` (round-to-nearest, GPTQ with and
without zero points, the importance matrix, AWQ, HQQ, a Hadamard rotation, MXFP4, NVFP4,
Q4_K, TQ2_0; 4, 3 and 2 bits) re-quantizes the Linear layers of the shipped model and is
measured against it on the chapter's one evaluation protocol (``smollm.PROTOCOL``): perplexity,
KL divergence and top-token agreement. ``make experiments`` writes
``benchmarks/smollm_experiments.json``: the configuration (``smollm_study.CONFIG``), its hash
(sha256 of the canonical JSON), one row per setting, and ``meta`` (the machine, from
``speed_facts.machine_info``; torch threads; seconds). The page reads the file and recomputes
the settings it shares with the language-model page live; ``tests/test_smollm_experiments.py``
checks that the stored file matches the configuration.

    python scripts/smollm_experiments.py                    # every setting (one torch thread; minutes)
    python scripts/smollm_experiments.py --only "RTN int4" --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from quantlab.book import smollm_study as sx  # noqa: E402

OUT = ROOT / "benchmarks" / "smollm_experiments.json"


def write_results(study: sx.Study, out: Path, names: Optional[Iterable[str]] = None) -> Path:
    """Run ``names`` (default: every setting) on ``study`` and write the JSON file ``out``."""
    import json

    from quantlab.book.speed_facts import machine_info

    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    rows = sx.run_settings(study, names, log=print)
    result: dict[str, Any] = dict(
        config=sx.CONFIG,
        config_hash=sx.config_hash(sx.CONFIG),
        rows=rows,
        meta=dict(
            machine=machine_info(threads=threads),
            threads=threads,
            load_at_start=load,
            seconds=round(time.perf_counter() - start, 1),
        ),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(rows)} settings in {result['meta']['seconds']} s -> {out}")
    return out


def main(argv: Optional[list[str]] = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON file (default {OUT.relative_to(ROOT)})")
    p.add_argument("--only", action="append", default=None, help="run only this setting (repeatable)")
    args = p.parse_args(argv)
    from quantlab.models import smollm

    torch.manual_seed(0)
    torch.set_num_threads(sx.CONFIG["threads"])
    proto = sx.CONFIG["protocol"]
    calibration, evaluation = smollm.protocol_tokens()
    assert (calibration.numel(), evaluation.numel(), smollm.PROTOCOL.context) == (
        proto["n_calibration"],
        proto["n_evaluation"],
        proto["context"],
    )
    study = sx.Study(
        smollm.load_model(fresh=False), calibration, evaluation, context=proto["context"], reference_bits=5.0
    )
    return write_results(study, args.out, args.only)


if __name__ == "__main__":
    main()
