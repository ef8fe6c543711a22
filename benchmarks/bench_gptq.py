"""GPTQ timings: blocked lazy updates against the column-by-column loop, and a whole model.

* one 384x1536 layer (MiniLM's ``output.dense`` shape) with a Hessian from 4096
  calibration rows: the Hessian, the factorisation both versions share (damping and the
  Cholesky factor of ``H^-1``, :func:`quantlab.gptq._factor`), and the blocked GPTQ
  (block 128) against the column loop (:func:`quantlab.gptq.gptq_reference`), medians
  over ``repeats``, timed alternately. Like is compared with like: ``blocked_s`` and
  ``column_loop_s`` time the quantization loop -- what blocking changes -- with both
  given the same precomputed factor; ``*_end_to_end_s`` add the shared factorisation.
  Both give the same codes in float64 (tests/test_gptq.py), so only the time differs;
* GPTQ int4 g128 over all 36 encoder Linear layers of all-MiniLM-L6-v2 (the issue's
  budget: under 30 s on 2 cores), calibration from the chapter's calibration sentences.

Run ``python benchmarks/bench_gptq.py`` or call :func:`bench_gptq` (returns a dict).
Timings use one thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_gptq(repeats: int = 3, minilm: bool = True, threads: int = 1) -> dict[str, Any]:
    """Time GPTQ on one layer (blocked vs column loop) and over MiniLM's 36 layers.

    Args:
        repeats: runs per single-layer timing (the median is reported).
        minilm: also time GPTQ over all 36 MiniLM encoder layers (loads the model).
        threads: torch threads during the timings.

    Returns:
        A dict with ``layer_shape``, ``calibration_rows``, ``hessian_s``, ``factor_s``
        (the shared factorisation), ``blocked_s`` and ``column_loop_s`` (the quantization
        loops, given the same factor), ``speedup`` (their ratio, column loop / blocked),
        ``blocked_end_to_end_s``, ``column_loop_end_to_end_s`` and ``speedup_end_to_end``
        (the public functions, factorisation included), ``same_codes`` (fraction of
        identical codes in float32), and, with ``minilm``, ``minilm_layers``,
        ``minilm_calibration_tokens``, ``minilm_stats_s`` (forward pass with hooks) and
        ``minilm_gptq_s`` (GPTQ of all layers).
    """
    from quantlab.calibration import hessian
    from quantlab.gptq import _factor, _gptq_blocked, _gptq_columns, gptq_quantize_weight, gptq_reference

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        rows, cols, n = 384, 1536, 4096
        X = torch.randn(n, cols, generator=g) * (torch.rand(cols, generator=g) * 2 + 0.1)
        W = torch.randn(rows, cols, generator=g) * 0.05
        out: dict[str, Any] = {"layer_shape": (rows, cols), "calibration_rows": n}
        H = hessian(X)
        out["hessian_s"] = _median_time(lambda: hessian(X), repeats)
        damp = 0.01
        out["factor_s"] = _median_time(lambda: _factor(H, damp, False, torch.float32), repeats)
        fac = _factor(H, damp, False, torch.float32)
        args = ("int4", 128)
        kw = dict(damp=damp, act_order=False, symmetric=True, scale_dtype="fp32")

        def blocked(factor=fac):
            return _gptq_blocked(
                W, H, *args, 128, kw["damp"], kw["act_order"], kw["symmetric"], kw["scale_dtype"], factor
            )

        def column_loop(factor=fac):
            return _gptq_columns(W, H, *args, kw["damp"], kw["act_order"], kw["symmetric"], kw["scale_dtype"], factor)

        fast = gptq_quantize_weight(W, H, "int4", group_size=128, block_size=128)
        slow = gptq_reference(W, H, "int4", group_size=128)
        out["same_codes"] = float((fast.qtensor.codes == slow.qtensor.codes).float().mean())
        t_blocked, t_loop, t_blocked_e2e, t_loop_e2e = [], [], [], []
        blocked(), column_loop()  # warm up
        for _ in range(repeats):  # alternately, so both see the same machine load
            for fn, acc in ((column_loop, t_loop), (blocked, t_blocked)):
                t0 = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            gptq_reference(W, H, "int4", group_size=128)
            t_loop_e2e.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            gptq_quantize_weight(W, H, "int4", group_size=128, block_size=128)
            t_blocked_e2e.append(time.perf_counter() - t0)
        med = statistics.median
        out["blocked_s"], out["column_loop_s"] = med(t_blocked), med(t_loop)
        out["speedup"] = out["column_loop_s"] / out["blocked_s"]
        out["blocked_end_to_end_s"] = med(t_blocked_e2e)
        out["column_loop_end_to_end_s"] = med(t_loop_e2e)
        out["speedup_end_to_end"] = out["column_loop_end_to_end_s"] / out["blocked_end_to_end_s"]
        if minilm:
            out.update(_bench_minilm())
        return out
    finally:
        torch.set_num_threads(old_threads)


def _bench_minilm() -> dict[str, Any]:
    from quantlab.calibration import collect_layer_stats
    from quantlab.evaluation import load_sentences
    from quantlab.gptq import gptq_quantize_model
    from quantlab.models import minilm

    model = minilm.load_model()
    tok = minilm.load_tokenizer()
    names = [n[: -len(".weight")] for n in minilm.linear_weight_names()]
    batch = tok(load_sentences("calibration"), padding=True, truncation=True, max_length=128, return_tensors="pt")
    t0 = time.perf_counter()
    stats = collect_layer_stats(model, lambda m: m(**batch), names)
    t1 = time.perf_counter()
    gptq_quantize_model(model, None, "int4", group_size=128, stats=stats, progress=False)
    t2 = time.perf_counter()
    return {
        "minilm_layers": len(names),
        "minilm_calibration_tokens": int(batch["attention_mask"].sum()),
        "minilm_stats_s": t1 - t0,
        "minilm_gptq_s": t2 - t1,
    }


if __name__ == "__main__":
    print(
        "GPTQ, one 384x1536 layer: blocked_s / column_loop_s time the quantization loops "
        "given the same precomputed factor (like with like); *_end_to_end_s include the "
        "shared factorisation (factor_s)"
    )
    for key, value in bench_gptq().items():
        print(f"{key:>28}: {value:.4g}" if isinstance(value, float) else f"{key:>28}: {value}")
