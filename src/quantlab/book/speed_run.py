"""The speed page's measurements, section by section, stored in one :class:`SpeedRecord`.

The page "Where the speed comes from" and ``scripts/measure_speed_reference.py`` (which
writes the stored reference machines) call the same functions, so a reference and a
reader's run measure exactly the same things:

* :func:`limits`: one thread's memory bandwidth and the float32 and int8 matrix-product peaks
  of one engine, ONNX Runtime (``MatMul`` against ``MatMulInteger``: like with like);
* :func:`layers`: one Linear layer in five implementations over batch sizes;
* :func:`smollm_variants` and :func:`decode`: SmolLM2-135M generating at batch 1 through the
  fused decoding graph, per weight format, on one and two threads;
* :func:`encoder`: MiniLM sentences per second, float32 against int8;
* :func:`policies`: one action of a control policy in eager torch and ONNX Runtime.

Each function stores its results in the record it is given (``record.put``) and returns what
the page displays. Timings run alternately (:func:`quantlab.book.speed.time_alternating`) and
report medians, except the limits, which report the best of several calls.

Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from ..deploy.decoder import export_decoder
from ..deploy.onnx import export_float
from ..deploy.profiling import onnx_bytes_per_token
from ..deploy.runtime import OrtDecoder
from . import speed
from .speed_facts import SpeedRecord, machine_info

__all__ = [
    "new_record",
    "scratch_folder",
    "SCRATCH_PREFIX",
    "limits",
    "layers",
    "LAYER_SHAPES",
    "BATCHES",
    "smollm_variants",
    "decode",
    "encoder",
    "policies",
    "POLICY_HIDDEN",
    "N_GEN",
    "MAX_LEN",
]

PathLike = Union[str, os.PathLike]

#: The layers of the sweep: name -> (in_features, out_features).
LAYER_SHAPES: dict[str, tuple[int, int]] = {"4096x4096": (4096, 4096), "576x1536": (576, 1536)}
#: Batch sizes of the sweep.
BATCHES: tuple[int, ...] = (1, 4, 16, 64)
#: Tokens generated per timed decoding round, and the decoder's cache length.
N_GEN, MAX_LEN = 16, 64
#: Hidden widths of the timed policies (64: the stored CartPole policy).
POLICY_HIDDEN: tuple[int, ...] = (64, 2048)


#: Name prefix of the folders that :func:`scratch_folder` makes: ``quantlab_speed_<pid>_<random>``.
SCRATCH_PREFIX = "quantlab_speed_"
_SCRATCH_NAME = re.compile(re.escape(SCRATCH_PREFIX) + r"(\d+)_")


def _process_runs(pid: int) -> bool:
    """True if a process with this id exists (``kill(pid, 0)`` sends no signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


def scratch_folder(root: Optional[PathLike] = None) -> tempfile.TemporaryDirectory:
    """A temporary folder for the models the page exports (about 2 GB of ``.onnx`` files).

    The folder is removed by ``.cleanup()``, or when the object is collected or the interpreter
    exits. A kernel that is killed (a notebook runner stops a failed notebook that way) does
    neither, so each call first removes the folders left by processes that no longer run: their
    names carry the process id that made them. Folders of running processes are never touched.

    Args:
        root: where to make the folder; default the system's temporary directory.

    Returns:
        A :class:`tempfile.TemporaryDirectory`; its ``.name`` is the folder's path.
    """
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    if not base.is_dir():
        raise ValueError(f"root is not a directory: {str(base)!r}")
    for old in base.glob(SCRATCH_PREFIX + "*"):
        match = _SCRATCH_NAME.match(old.name)
        if match and old.is_dir() and not old.is_symlink() and not _process_runs(int(match.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}_", dir=base)


def new_record(threads: int = 1, note: str = "") -> SpeedRecord:
    """An empty record of this machine (:func:`quantlab.book.speed_facts.machine_info`)."""
    return SpeedRecord(machine=machine_info(threads), note=note)


def _check_record(record: Any) -> SpeedRecord:
    if not isinstance(record, SpeedRecord):
        raise TypeError(f"record must be a SpeedRecord, got {type(record).__name__}")
    return record


def limits(record: SpeedRecord, n: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Bandwidth and peaks of one thread, stored as ``bandwidth`` and ``peaks``.

    The bandwidth is the best of ``repeats`` reads and copies of a 256 MiB buffer
    (:func:`quantlab.book.speed.measure_bandwidth`); the peaks are ONNX Runtime's float32
    ``MatMul`` and int8 ``MatMulInteger`` on ``n x n x n`` products (``2 n^3`` operations).

    Returns:
        ``{"bandwidth": {"read", "copy"}, "peaks": {"fp32 ORT", "int8 ORT"}}``.
    """
    _check_record(record)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bandwidth = speed.measure_bandwidth(repeats=repeats)
    finally:
        torch.set_num_threads(prev)
    peaks = {
        "fp32 ORT": speed.measure_ort_peak("fp32", n, repeats=repeats),
        "int8 ORT": speed.measure_ort_peak("int8", n, repeats=repeats),
    }
    record.put("bandwidth", bandwidth)
    record.put("peaks", peaks)
    return {"bandwidth": bandwidth, "peaks": peaks}


def layers(record: SpeedRecord, batches: Sequence[int] = BATCHES, repeats: int = 5) -> dict[str, list[dict]]:
    """:func:`quantlab.book.speed.layer_sweep` over :data:`LAYER_SHAPES` on one thread, stored
    as ``layer`` (``{shape: {format: {batch: seconds}}}``).

    Returns:
        ``{shape: rows}`` with the sweep's rows (seconds, flops, bytes, intensity, gflops).
    """
    _check_record(record)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweep = {
            name: speed.layer_sweep(k, n, tuple(batches), repeats=repeats, threads=1)
            for name, (k, n) in LAYER_SHAPES.items()
        }
    finally:
        torch.set_num_threads(prev)
    stored: dict[str, dict[str, dict[str, float]]] = {}
    for name, rows in sweep.items():
        for r in rows:
            stored.setdefault(name, {}).setdefault(r["format"], {})[str(r["batch"])] = r["seconds"]
    record.put("layer", stored)
    return sweep


def smollm_variants() -> dict[str, torch.nn.Module]:
    """SmolLM2-135M in the formats of :data:`quantlab.book.speed_facts.DECODE_MODELS`.

    ``fp32`` (the shipped weights, dequantized Q4_1), ``int8 g64`` (every Linear layer and the
    head in int8 with a scale per group of 64), ``int4 g64, head fp32`` (the decoder layers in
    int4, groups of 64, the head left in float32) and ``int4 g64, head int4`` (the head too).
    Rounded to nearest with fp16 scales (:class:`quantlab.nn.QuantScheme`).
    """
    from ..nn import QuantScheme, quantize_model
    from .models import smollm

    int8, int4 = QuantScheme("int8", group_size=64), QuantScheme("int4", group_size=64)
    return {
        "fp32": smollm.load_model(),
        "int8 g64": quantize_model(smollm.load_model(), int8, skip=None, progress=False),
        "int4 g64, head fp32": quantize_model(smollm.load_model(), int4, progress=False),  # skips lm_head
        "int4 g64, head int4": quantize_model(smollm.load_model(), int4, skip=None, progress=False),
    }


def decode(
    record: SpeedRecord,
    models: Mapping[str, torch.nn.Module],
    prompt: Sequence[int],
    folder: PathLike,
    n_gen: int = N_GEN,
    max_len: int = MAX_LEN,
    rounds: int = 2,
    threads: Sequence[int] = (1, 2),
) -> dict[str, Any]:
    """Tokens per second of greedy generation for each model, on each thread count.

    Each model is exported once (:func:`quantlab.deploy.decoder.export_decoder`, the fused graph);
    for each thread count the bandwidth is measured again on that many threads and all models
    generate ``n_gen`` tokens after ``prompt``, taking turns step by step
    (:func:`quantlab.book.speed.decode_speed`). Stored as ``decode`` (``{threads: {model:
    tokens/s}}``), ``decode_bandwidth`` and ``decode_mb_per_token`` (weights read per token
    plus the mean KV cache read, MB).

    Returns:
        ``{"paths": {model: Path}, "tokens_per_s": {threads: {model: float}}, "bandwidth":
        {threads: GB/s}, "traffic": {model: onnx_bytes_per_token dict}, "decoders": {threads:
        {model: OrtDecoder}}}``.
    """
    _check_record(record)
    if not models:
        raise ValueError("models is empty")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder is not a directory: {str(folder)!r}")
    threads = [int(t) for t in threads]
    if not threads or min(threads) < 1:
        raise ValueError(f"threads must be positive ints, got {threads!r}")
    prompt = [int(t) for t in prompt]
    paths = {
        name: export_decoder(m, folder / f"decoder_{i}.onnx", max_len) for i, (name, m) in enumerate(models.items())
    }
    slots = len(prompt) + (n_gen - 1) / 2  # mean number of cached positions a timed step reads
    first = next(iter(models.values()))
    cfg = first.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cache_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * slots * head_dim * 4
    traffic = {name: onnx_bytes_per_token(p, cache_bytes) for name, p in paths.items()}
    prev = torch.get_num_threads()
    tok_s: dict[int, dict[str, float]] = {}
    bw: dict[int, float] = {}
    decoders: dict[int, dict[str, Any]] = {}
    try:
        for t in threads:
            torch.set_num_threads(t)
            bw[t] = max(speed.measure_bandwidth(repeats=3).values())
            decoders[t] = {name: OrtDecoder(p, threads=t) for name, p in paths.items()}
            tok_s[t] = speed.decode_speed(decoders[t], prompt, n=n_gen, rounds=rounds)
    finally:
        torch.set_num_threads(prev)
    record.put("decode", tok_s)
    record.put("decode_bandwidth", bw)
    record.put("decode_mb_per_token", {name: t["total"] / 1e6 for name, t in traffic.items()})
    return {"paths": paths, "tokens_per_s": tok_s, "bandwidth": bw, "traffic": traffic, "decoders": decoders}


def encoder(
    record: SpeedRecord, batches: Sequence[int] = (1, 32), repeats: int = 5, folder: Optional[PathLike] = None
) -> dict[str, Any]:
    """MiniLM in float32 and int8 per channel in ONNX Runtime, one thread
    (:func:`quantlab.book.speed.encoder_speed`); stored as ``encoder``.

    Returns:
        ``encoder_speed``'s dict.
    """
    from ..nn import QuantScheme, quantize_model
    from .evaluation import load_sentences
    from .models import minilm

    _check_record(record)
    fp32 = minilm.load_model()
    int8 = quantize_model(minilm.load_model(), QuantScheme("int8"), skip=None, progress=False)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = speed.encoder_speed(
            fp32,
            int8,
            minilm.load_tokenizer(),
            load_sentences("evaluation"),
            batches=tuple(batches),
            seq_len=32,
            repeats=repeats,
            threads=1,
            folder=folder,
        )
    finally:
        torch.set_num_threads(prev)
    record.put("encoder", {fmt: {str(b): enc["sentences_per_s"][fmt, b] for b in batches} for fmt in ("fp32", "int8")})
    return enc


def policies(
    record: SpeedRecord, hidden: Sequence[int] = POLICY_HIDDEN, folder: Optional[PathLike] = None, repeats: int = 200
) -> dict[int, dict[str, float]]:
    """One action at batch 1 of a policy 4 -> hidden -> hidden -> 2, four ways, one thread.

    Width 64 is the stored CartPole policy (seed 0); wider ones have random weights (only
    their speed matters). Variants: ``"fp32 torch"`` (eager), ``"int8 torch (eager)"``
    (quantlab's packed int8 layers, dequantized at each call), ``"fp32 ORT"`` and
    ``"int8 ORT"`` (``MatMulInteger``, int8 per channel), timed in turn. Stored as ``policy``.

    Returns:
        ``{hidden: {variant: seconds}}``.
    """
    from ..deploy import export_onnx, ort_session
    from ..nn import QuantScheme, quantize_model
    from . import rl

    _check_record(record)
    hidden = [int(h) for h in hidden]
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be positive ints, got {hidden!r}")
    obs_t = torch.zeros(1, 4)
    obs_n = obs_t.numpy()
    out: dict[int, dict[str, float]] = {}
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(folder) if folder is not None else Path(tmp)
            for h in hidden:
                policy = rl.load_policies().policies["seed0/fp32"] if h == 64 else rl.Policy(hidden=h, seed=1)
                policy.eval()
                q = quantize_model(policy, QuantScheme("int8"), skip=None, inplace=False, progress=False)
                s32 = ort_session(export_float(policy, obs_t, where / f"policy{h}_fp32.onnx"), threads=1)
                s8 = ort_session(export_onnx(q, obs_t, where / f"policy{h}_int8.onnx"), threads=1)
                with torch.no_grad():
                    fns = {
                        "fp32 torch": lambda p=policy: p(obs_t),
                        "int8 torch (eager)": lambda m=q: m(obs_t),
                        "fp32 ORT": lambda s=s32: s.run(None, {"input": obs_n}),
                        "int8 ORT": lambda s=s8: s.run(None, {"input": obs_n}),
                    }
                    n = repeats if h <= 512 else max(10, repeats // 5)
                    out[h] = speed.time_alternating(fns, repeats=n, warmup=5)
    finally:
        torch.set_num_threads(prev)
    record.put("policy", {str(h): v for h, v in out.items()})
    return out
