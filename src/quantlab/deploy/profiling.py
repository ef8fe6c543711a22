"""What an exported graph holds and where its time goes: operator counts, bytes per token, profiles.

* :func:`graph_ops` -- how many nodes of each operator type an ONNX file holds (at batch 1,
  each node is one kernel call per step);
* :func:`onnx_bytes_per_token` -- the bytes one decoding step reads (its weights, once; one
  row of the embedding table), the numerator of the roofline's prediction;
* :func:`profile_decoder` -- a decoding step's time split by operator type, from ONNX
  Runtime's own profiler.

(These lived in ``quantlab.book.speed``, which re-exports them.)

Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence, Union

from .runtime import OrtDecoder, greedy_decode

__all__ = ["graph_ops", "onnx_bytes_per_token", "profile_decoder"]

PathLike = Union[str, os.PathLike]


def onnx_bytes_per_token(path: PathLike, cache_bytes: int = 0) -> dict[str, float]:
    """Bytes one decoding step of an exported model reads: its weights, once.

    Every initializer of the graph is read once per token, except a table used only by
    ``Gather`` (the token embedding), of which one row is read. ``cache_bytes`` (the KV
    cache that attention reads) is added as given.

    Returns:
        ``{"weights": bytes of the initializers read, "embedding_table": bytes of the
        gathered tables (not read, but stored), "total": weights + cache_bytes}``.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=True)
    sizes = {t.name: onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer}
    shapes = {t.name: list(t.dims) for t in proto.graph.initializer}
    users: dict[str, set[str]] = {}
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in sizes:
                users.setdefault(name, set()).add(node.op_type if i == 0 else node.op_type + "_other")
    tables = [n for n, ops in users.items() if ops == {"Gather"}]
    table_bytes = sum(sizes[n] for n in tables)
    rows = sum(sizes[n] / max(1, shapes[n][0]) for n in tables)
    weights = sum(sizes.values()) - table_bytes + rows
    return {"weights": float(weights), "embedding_table": float(table_bytes), "total": float(weights + cache_bytes)}


def graph_ops(path: PathLike) -> dict[str, int]:
    """How many nodes of each operator type an ONNX file holds (op type -> count).

    At batch 1 every node is one kernel call per step, each with a fixed cost.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def profile_decoder(path: PathLike, prompt: Sequence[int], n: int = 16, threads: int = 1) -> dict[str, Any]:
    """Where one decoding step's time goes: ONNX Runtime's own profile, per operator type.

    Runs greedy decoding (``prompt``, then ``n`` tokens) in a session with profiling on,
    and sums the kernel times that ONNX Runtime records over the ``n`` generating steps.
    The profiler times each kernel call (about a microsecond of its own cost), so shares
    are more reliable than absolute times; ONNX Runtime's graph optimizations (fusions)
    have been applied, so the operator types are those that ran.

    Args:
        path: a decode step from :func:`~quantlab.deploy.decoder.export_decoder` (fused or traced).
        prompt: token ids fed first (untimed).
        n: generated tokens whose steps are summed, at least 1.
        threads: ONNX Runtime intra-op threads.

    Returns:
        ``{"step_ms": mean time of a whole step in the session (ms), "ops": {op type:
        {"ms": mean ms per step, "calls": kernel calls per step}}}``, ops by time, largest
        first.

    Raises:
        ValueError: ``n`` < 1 or an empty prompt (and as :class:`~quantlab.deploy.runtime.OrtDecoder`).
    """
    import json

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    with tempfile.TemporaryDirectory(prefix="quantlab_profile_") as tmp:
        dec = OrtDecoder(path, threads=threads, profile_prefix=Path(tmp) / "step")
        greedy_decode(dec.step, prompt, n)  # raises ValueError for an empty prompt
        events = json.loads(Path(dec.session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    timed = runs[-n:]  # the generating steps
    t0 = timed[0]["ts"]
    ops: dict[str, dict[str, float]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < t0:
            continue
        op = e["args"]["op_name"]
        entry = ops.setdefault(op, {"ms": 0.0, "calls": 0})
        entry["ms"] += e["dur"] / 1e3 / n
        entry["calls"] += 1
    for entry in ops.values():
        entry["calls"] = entry["calls"] // n
    ops = dict(sorted(ops.items(), key=lambda kv: -kv[1]["ms"]))
    return {"step_ms": sum(e["dur"] for e in timed) / 1e3 / n, "ops": ops}
