"""Where the speed of quantization comes from: timing, rooflines, layer sweeps, decoding.

Eager torch runs a :class:`~quantlab.nn.QuantizedLinear` by rebuilding the float weight
and calling a float matrix product, so it saves memory but no time. The speed comes from
kernels that read the low-bit codes directly (ONNX Runtime's ``MatMulInteger`` and
``MatMulNBits``, written by :func:`quantlab.deploy.export_onnx`). This module measures
them against the machine's limits:

* :func:`time_call` and :func:`time_alternating` time callables (medians; alternating runs
  so that a shared machine's load hits every candidate alike);
* :func:`measure_bandwidth`, :func:`measure_fp32_peak`, :func:`measure_int8_peak` measure
  the roof: bytes per second from memory, float and int8 multiply-adds per second;
* :func:`linear_cost` and :func:`roofline` give the model of a matrix product: ``2 M N K``
  operations, ``N K bits / 8`` weight bytes plus the activations, and the attainable speed
  ``min(peak, intensity x bandwidth)`` (Williams, Waterman and Patterson, 2009, "Roofline");
* :func:`layer_sweep` times one Linear layer in every format over a range of batch sizes;
* :func:`decode_speed` times greedy decoding of several decoders in turn, step by step;
* :func:`encoder_speed` measures sentences per second of an encoder (MiniLM) in ONNX
  Runtime, float32 against int8, at several batch sizes;
* :func:`cpu_flags` reads the instruction-set extensions that decide which kernels run.

Timings are medians of wall-clock times, in seconds, on whatever threads the caller set
(``torch.set_num_threads`` for torch, ``threads=`` for ONNX Runtime).

What is measured runs in :mod:`quantlab.deploy`, which owns deployment: the float exporter
(:func:`quantlab.deploy.onnx.export_float`), the decoding graph
(:class:`~quantlab.deploy.decoder.LlamaDecodeStep`, :func:`~quantlab.deploy.decoder.export_decoder`),
its runtime (:class:`~quantlab.deploy.runtime.OrtDecoder`,
:func:`~quantlab.deploy.runtime.greedy_decode`) and its inspection
(:func:`~quantlab.deploy.profiling.graph_ops`,
:func:`~quantlab.deploy.profiling.onnx_bytes_per_token`,
:func:`~quantlab.deploy.profiling.profile_decoder`). These names lived here before and are
re-exported, so ``speed.OrtDecoder`` and the others keep working.

Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..deploy.decoder import LlamaDecodeStep, export_decoder
from ..deploy.onnx import export_float
from ..deploy.profiling import graph_ops, onnx_bytes_per_token, profile_decoder
from ..deploy.runtime import OrtDecoder, greedy_decode

__all__ = [
    "time_call",
    "time_alternating",
    "measure_bandwidth",
    "measure_fp32_peak",
    "measure_int8_peak",
    "measure_ort_peak",
    "cpu_flags",
    "ISA_FLAGS",
    "LinearCost",
    "linear_cost",
    "roofline",
    "export_float",
    "layer_sweep",
    "SWEEP_FORMATS",
    "LlamaDecodeStep",
    "export_decoder",
    "OrtDecoder",
    "greedy_decode",
    "decode_speed",
    "onnx_bytes_per_token",
    "graph_ops",
    "profile_decoder",
    "encoder_speed",
]

PathLike = Union[str, os.PathLike]

#: /proc/cpuinfo flags that decide which matrix kernels a CPU can run.
ISA_FLAGS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)

#: Formats that :func:`layer_sweep` knows: name -> description.
SWEEP_FORMATS: dict[str, str] = {
    "fp32 torch": "torch.nn.functional.linear, float32",
    "fp32 ORT": "ONNX Runtime MatMul (+ Add), float32",
    "int8 ORT": "ONNX Runtime DynamicQuantizeLinear + MatMulInteger, int8 per channel",
    "int4 ORT": "ONNX Runtime MatMulNBits, int4 groups of 32, accuracy_level 4",
    "int4 eager": "quantlab QuantizedLinear (packed int4 g32): dequantize, then float matmul",
}


def _check_repeats(repeats: Any) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, int):
        raise TypeError(f"repeats must be an int, got {repeats!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    return repeats


# --------------------------------------------------------------------------- timing


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, best: bool = False) -> float:
    """Median (or shortest) wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls.

    Args:
        fn: a callable without arguments.
        repeats: timed calls, at least 1.
        warmup: untimed calls first (first touch of buffers, lazy initialisation), >= 0.
        best: return the shortest time instead of the median (for a machine's limits: what it
            can do when nothing else runs, as STREAM-like benchmarks report).

    Returns:
        The median (or shortest) time in seconds.

    Raises:
        TypeError: ``fn`` is not callable or ``repeats`` / ``warmup`` not an int.
        ValueError: ``repeats`` < 1 or ``warmup`` < 0.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    repeats = _check_repeats(repeats)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if best else statistics.median(times)


def time_alternating(fns: Mapping[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds of several callables timed in turn: a, b, c, a, b, c, ...

    On a shared machine the load changes from second to second; running the candidates
    alternately exposes them to the same load, so their *ratios* are steadier than times
    measured one after another.

    Args:
        fns: name -> callable without arguments (at least one).
        repeats: rounds, at least 1.
        warmup: untimed rounds first.

    Returns:
        name -> median seconds.

    Raises:
        TypeError: ``fns`` is not a mapping of callables.
        ValueError: ``fns`` is empty; ``repeats`` < 1.
    """
    if not isinstance(fns, Mapping):
        raise TypeError(f"fns must be a mapping name -> callable, got {type(fns).__name__}")
    if not fns:
        raise ValueError("fns is empty")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"fns[{name!r}] is not callable")
    repeats = _check_repeats(repeats)
    for _ in range(max(0, int(warmup))):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


# --------------------------------------------------------------------------- the machine


def measure_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 5) -> dict[str, float]:
    """Memory bandwidth of one thread, in GB/s (1e9 bytes per second).

    Two measurements on float32 buffers of ``nbytes`` each (far larger than any cache):

    * ``"copy"``: ``dst.copy_(src)``, counted as ``2 * nbytes`` (read + write);
    * ``"read"``: ``src.sum()``, counted as ``nbytes``: streaming a buffer once, the way a
      matrix-vector product streams its weights.

    Each is the best of ``repeats`` calls (the machine's limit, not a typical run). Take the
    larger of the two as the bandwidth: the copy is a ``memcpy``, while the sum runs torch's own
    kernel, which without SIMD (``ATEN_CPU_CAPABILITY=default``) is limited by its arithmetic
    (measured here: read 32 -> 22 GB/s, copy 38 -> 36 GB/s).

    Uses torch's current thread count; call ``torch.set_num_threads(1)`` for one thread.

    Args:
        nbytes: size of each buffer in bytes (at least 1 MiB).
        repeats: timed calls per measurement.

    Returns:
        ``{"copy": GB/s, "read": GB/s}``.

    Raises:
        ValueError: ``nbytes`` below 1 MiB; ``repeats`` < 1.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 2**20:
        raise ValueError(f"nbytes must be an int of at least 1 MiB, got {nbytes!r}")
    repeats = _check_repeats(repeats)
    n = nbytes // 4
    src = torch.ones(n)
    dst = torch.empty(n)
    t_copy = time_call(lambda: dst.copy_(src), repeats, best=True)
    t_read = time_call(lambda: src.sum(), repeats, best=True)
    return {"copy": 2 * 4 * n / t_copy / 1e9, "read": 4 * n / t_read / 1e9}


def measure_fp32_peak(n: int = 1024, repeats: int = 5) -> float:
    """float32 matrix-product speed, GFLOP/s, from an ``n x n x n`` sgemm (``2 n^3`` operations).

    Uses torch's current thread count; the best of ``repeats`` calls.

    Raises:
        ValueError: ``n`` < 16; ``repeats`` < 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 16:
        raise ValueError(f"n must be an int >= 16, got {n!r}")
    repeats = _check_repeats(repeats)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    return 2 * n**3 / time_call(lambda: torch.mm(a, b, out=out), repeats, best=True) / 1e9


def measure_int8_peak(n: int = 1024, repeats: int = 5, threads: int = 1) -> float:
    """int8 matrix-product speed, GOP/s, from ONNX Runtime's ``MatMulInteger`` (uint8 x int8).

    One ``n x n x n`` product (``2 n^3`` operations, int32 accumulators), in a session from
    :func:`quantlab.deploy.ort_session` with ``threads`` threads; the best of ``repeats``.

    Raises:
        ValueError: ``n`` < 16; ``repeats`` or ``threads`` < 1.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..deploy import ort_session

    if isinstance(n, bool) or not isinstance(n, int) or n < 16:
        raise ValueError(f"n must be an int >= 16, got {n!r}")
    repeats = _check_repeats(repeats)
    rng = np.random.default_rng(0)
    b = rng.integers(-127, 128, size=(n, n), dtype=np.int8)
    a = rng.integers(0, 256, size=(n, n), dtype=np.uint8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "int8_peak.onnx"
        onnx.save(model, str(path))
        sess = ort_session(path, threads=threads)
    return 2 * n**3 / time_call(lambda: sess.run(None, {"a": a}), repeats, best=True) / 1e9


def measure_ort_peak(dtype: str = "int8", n: int = 1024, repeats: int = 5, threads: int = 1) -> float:
    """Matrix-product speed of ONNX Runtime on this CPU, GFLOP/s (float32) or GOP/s (int8).

    One ``n x n x n`` product (``2 n^3`` operations): ``MatMul`` on float32 for ``"fp32"``,
    ``MatMulInteger`` (uint8 x int8, int32 sums) for ``"int8"``, in a session from
    :func:`quantlab.deploy.ort_session` with ``threads`` threads; the best of ``repeats``.
    Both peaks come from the same engine, so their ratio measures the CPU's integer and float
    units, not two libraries (torch's sgemm is MKL; ONNX Runtime's kernels are its own, MLAS).

    Raises:
        ValueError: ``dtype`` not ``"fp32"`` or ``"int8"``; ``n`` < 16; ``repeats`` or ``threads`` < 1.
    """
    if dtype == "int8":
        return measure_int8_peak(n, repeats, threads)
    if dtype != "fp32":
        raise ValueError(f"dtype must be 'fp32' or 'int8', got {dtype!r}")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..deploy import ort_session

    if isinstance(n, bool) or not isinstance(n, int) or n < 16:
        raise ValueError(f"n must be an int >= 16, got {n!r}")
    repeats = _check_repeats(repeats)
    rng = np.random.default_rng(0)
    b = rng.standard_normal((n, n)).astype(np.float32)
    a = rng.standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "fp32_peak",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fp32_peak.onnx"
        onnx.save(model, str(path))
        sess = ort_session(path, threads=threads)
    return 2 * n**3 / time_call(lambda: sess.run(None, {"a": a}), repeats, best=True) / 1e9


def cpu_flags(path: PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU model and which of :data:`ISA_FLAGS` it has, read from ``/proc/cpuinfo``.

    Returns:
        ``{"model": str, "flags": {flag: bool}}``; on systems without ``/proc/cpuinfo`` the
        model is ``platform.processor()`` and every flag False.
    """
    import platform

    model, flags, seen_model = platform.processor() or platform.machine(), set(), False
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not seen_model:
                model, seen_model = value.strip(), True
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": {f: f in flags for f in ISA_FLAGS}}


# --------------------------------------------------------------------------- the roofline


@dataclass(frozen=True)
class LinearCost:
    """Work and traffic of ``y = x W^T`` for ``x`` ``(batch, in_features)``.

    Attributes:
        flops: ``2 * batch * in_features * out_features`` (one multiply and one add each).
        weight_bytes: bytes of the weight at its bit width, scales included.
        activation_bytes: float32 input and output, ``4 * batch * (in + out)``.
        bytes: ``weight_bytes + activation_bytes``.
        intensity: ``flops / bytes``, operations per byte moved.
    """

    flops: float
    weight_bytes: float
    activation_bytes: float

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.activation_bytes

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes


def linear_cost(
    in_features: int,
    out_features: int,
    batch: int,
    bits: float = 32,
    group_size: Optional[int] = None,
    scale_bits: int = 32,
) -> LinearCost:
    """The roofline model's count for one Linear layer.

    ``weight_bytes = N K (bits + scale_bits / g) / 8`` with one scale per group of ``g``
    weights (``group_size``), or one per output row when ``group_size`` is None and
    ``bits < 32`` (``N scale_bits / 8`` extra), none for float32.

    Args:
        in_features, out_features: ``K`` and ``N``.
        batch: rows of ``x`` (``M``).
        bits: bits per weight code (32 for float32, 8, 4).
        group_size: weights per scale, or None (per output channel).
        scale_bits: bits per scale (32: float32 scales, as ONNX Runtime stores them).

    Raises:
        ValueError: a size below 1, or ``bits`` not positive.
    """
    for name, v in (("in_features", in_features), ("out_features", out_features), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not bits > 0:
        raise ValueError(f"bits must be positive, got {bits!r}")
    if group_size is not None and (not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")
    k, n, m = in_features, out_features, batch
    weight = n * k * bits / 8
    if bits < 32:
        weight += (n * k / group_size if group_size else n) * scale_bits / 8
    return LinearCost(flops=2.0 * m * n * k, weight_bytes=float(weight), activation_bytes=4.0 * m * (k + n))


def roofline(intensity: Union[float, np.ndarray], bandwidth_gbs: float, peak_gflops: float) -> Union[float, np.ndarray]:
    """Attainable GFLOP/s at an arithmetic intensity: ``min(peak, intensity * bandwidth)``.

    A kernel that performs ``I`` operations per byte it moves cannot run faster than the
    memory delivers bytes (``I x B``) nor faster than the arithmetic units (the peak).
    Williams, Waterman and Patterson, 2009, "Roofline: an insightful visual performance
    model for multicore architectures".

    Args:
        intensity: operations per byte (scalar or array).
        bandwidth_gbs: memory bandwidth, GB/s.
        peak_gflops: compute peak, GFLOP/s (or GOP/s).

    Raises:
        ValueError: a bandwidth or peak that is not positive, or a negative intensity.
    """
    if not bandwidth_gbs > 0 or not peak_gflops > 0:
        raise ValueError("bandwidth_gbs and peak_gflops must be positive")
    arr = np.asarray(intensity, dtype=float)
    if (arr < 0).any():
        raise ValueError("intensity must be >= 0")
    out = np.minimum(peak_gflops, arr * bandwidth_gbs)
    return float(out) if np.ndim(intensity) == 0 else out


# --------------------------------------------------------------------------- one layer


def _layer_runners(
    weight: torch.Tensor, formats: Sequence[str], folder: Path, threads: int
) -> dict[str, Callable[[torch.Tensor, np.ndarray], Any]]:
    from ..deploy import export_onnx, ort_session
    from ..nn import QuantizedLinear, QuantScheme

    out_f, in_f = weight.shape
    linear = nn.Linear(in_f, out_f, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    example = torch.zeros(1, in_f)
    runners: dict[str, Callable] = {}
    for fmt in formats:
        if fmt == "fp32 torch":
            runners[fmt] = lambda xt, xn: torch.nn.functional.linear(xt, weight)
        elif fmt == "fp32 ORT":
            sess = ort_session(export_float(linear, example, folder / "fp32.onnx"), threads)
            runners[fmt] = lambda xt, xn, s=sess: s.run(None, {"input": xn})
        elif fmt in ("int8 ORT", "int4 ORT", "int4 eager"):
            scheme = QuantScheme("int8") if fmt == "int8 ORT" else QuantScheme("int4", group_size=32)
            layer = QuantizedLinear.from_linear(linear, scheme)
            if fmt == "int4 eager":
                runners[fmt] = lambda xt, xn, q=layer: q(xt)
            else:
                path = export_onnx(layer, example, folder / f"{fmt.split()[0]}.onnx")
                sess = ort_session(path, threads)
                runners[fmt] = lambda xt, xn, s=sess: s.run(None, {"input": xn})
        else:
            raise ValueError(f"unknown format {fmt!r}; choose from {list(SWEEP_FORMATS)}")
    return runners


def layer_sweep(
    in_features: int,
    out_features: int,
    batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    formats: Sequence[str] = tuple(SWEEP_FORMATS),
    repeats: int = 5,
    threads: int = 1,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time one Linear layer (no bias) in several formats over batch sizes.

    A random weight ``(out_features, in_features)`` (Gaussian, std ``1/sqrt(in)``) is
    quantized with quantlab (int8 per channel, int4 in groups of 32) and, for the ONNX
    Runtime formats, exported with :func:`quantlab.deploy.export_onnx`; the formats are in
    :data:`SWEEP_FORMATS`. At each batch size all formats are timed alternately
    (:func:`time_alternating`). torch runs on its current thread count; ONNX Runtime on
    ``threads``.

    Args:
        in_features, out_features: the layer's size.
        batches: batch sizes (rows of ``x``).
        formats: names from :data:`SWEEP_FORMATS`.
        repeats: timed rounds per batch size.
        threads: ONNX Runtime intra-op threads.
        seed: seeds the weight and inputs.

    Returns:
        One dict per (batch, format): ``batch``, ``format``, ``seconds`` (median) and the
        roofline counts ``flops``, ``bytes``, ``intensity`` (:func:`linear_cost`), and
        ``gflops`` (``flops / seconds / 1e9``).

    Raises:
        ValueError: an unknown format, an empty ``batches`` or a batch below 1.
    """
    formats = list(formats)
    if not formats:
        raise ValueError("formats is empty")
    for fmt in formats:
        if fmt not in SWEEP_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {list(SWEEP_FORMATS)}")
    batches = list(batches)
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"batches must be positive ints, got {batches!r}")
    repeats = _check_repeats(repeats)
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=g) / math.sqrt(in_features)
    bits = {
        "fp32 torch": (32, None),
        "fp32 ORT": (32, None),
        "int8 ORT": (8, None),
        "int4 ORT": (4, 32),
        "int4 eager": (4, 32),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        runners = _layer_runners(weight, formats, Path(tmp), threads)
        for batch in batches:
            xt = torch.randn(batch, in_features, generator=g)
            xn = xt.numpy()
            fns = {fmt: (lambda r=runners[fmt]: r(xt, xn)) for fmt in formats}  # noqa: B023 (timed just below)
            times = time_alternating(fns, repeats)
            for fmt in formats:
                b, gs = bits[fmt]
                # fp32 scales in ONNX Runtime; quantlab's eager layer keeps its own (fp16) scales
                cost = linear_cost(in_features, out_features, batch, b, gs)
                rows.append(
                    dict(
                        batch=batch,
                        format=fmt,
                        seconds=times[fmt],
                        flops=cost.flops,
                        bytes=cost.bytes,
                        intensity=cost.intensity,
                        gflops=cost.flops / times[fmt] / 1e9,
                    )
                )
    return rows


# --------------------------------------------------------------------------- decoding speed


def decode_speed(
    decoders: Mapping[str, OrtDecoder], prompt: Sequence[int], n: int = 16, rounds: int = 2, interleave: bool = True
) -> dict[str, float]:
    """Tokens per second of greedy generation, for several decoders timed in turn.

    Each round feeds ``prompt`` to every decoder (untimed), then generates ``n`` greedy
    tokens with each. With ``interleave`` (the default) the decoders take turns step by
    step: every decoder makes its k-th generating step before any makes its (k+1)-th, so a
    change in the machine's load within a round hits all of them alike. Without it, each
    decoder generates its ``n`` tokens in one go (:func:`greedy_decode`), in turn. A
    decoder's speed is one over the median of all its generating steps; the tokens are
    the same either way.

    Args:
        decoders: name -> :class:`OrtDecoder` (or any object with ``step`` and ``reset``).
        prompt: token ids, at least one.
        n: tokens generated per round, >= 1.
        rounds: rounds, >= 1.
        interleave: alternate the decoders step by step (True) or run after run (False).

    Returns:
        name -> tokens per second.

    Raises:
        ValueError: no decoders, an empty prompt, ``n`` or ``rounds`` below 1.
    """
    if not decoders:
        raise ValueError("decoders is empty")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rounds = _check_repeats(rounds)
    prompt = [int(t) for t in prompt]
    if not prompt:
        raise ValueError("prompt must hold at least one token")
    steps: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(rounds):
        if not interleave:
            for name, dec in decoders.items():
                greedy_decode(dec.step, prompt, n, reset=dec.reset, times=steps[name])
            continue
        token = {}
        for name, dec in decoders.items():
            dec.reset()
            for pos, tok in enumerate(prompt[:-1]):
                dec.step(tok, pos)
            token[name] = prompt[-1]
        for pos in range(len(prompt) - 1, len(prompt) - 1 + n):
            for name, dec in decoders.items():
                t0 = time.perf_counter()
                logits = dec.step(token[name], pos)
                token[name] = int(np.argmax(np.asarray(logits)))
                steps[name].append(time.perf_counter() - t0)
    return {name: 1.0 / statistics.median(t) for name, t in steps.items()}


class _Encoder(nn.Module):
    """``(input_ids, attention_mask) -> last hidden state`` of a transformers encoder."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def encoder_speed(
    model: nn.Module,
    quantized: nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    batches: Sequence[int] = (1, 32),
    seq_len: int = 32,
    repeats: int = 5,
    threads: int = 1,
    folder: Optional[PathLike] = None,
) -> dict[str, Any]:
    """Sentences per second of an encoder in ONNX Runtime: float32 against its quantized copy.

    Both models are exported with ``(input_ids, attention_mask)`` inputs padded to
    ``seq_len`` tokens and a dynamic batch axis (``torch.onnx.export`` for the float model,
    :func:`quantlab.deploy.export_onnx` for the quantized one: ``MatMulInteger`` for int8
    per channel). For each batch size, the two sessions are timed alternately on the first
    ``batch`` sentences (:func:`time_alternating`). Unlike a decoder at batch 1, an encoder
    multiplies every weight with all ``seq_len`` tokens of a sentence at once, so even one
    sentence is a matrix product with ``seq_len`` rows.

    Args:
        model: the float encoder (a transformers ``BertModel``, e.g. MiniLM).
        quantized: the same model with :class:`~quantlab.nn.QuantizedLinear` layers.
        tokenizer: its tokenizer.
        sentences: at least ``max(batches)`` texts.
        batches: batch sizes (sentences per call).
        seq_len: tokens per sentence (padded or truncated).
        repeats: timed rounds per batch size.
        threads: ONNX Runtime intra-op threads.
        folder: where the ``.onnx`` files go (a temporary folder if None).

    Returns:
        ``{"sentences_per_s": {(format, batch): float}, "seconds": {(format, batch): float},
        "cosine": mean cosine similarity of the int8 and float32 sentence embeddings (mean
        pooling over real tokens) on the largest batch}``, formats ``"fp32"`` and ``"int8"``.

    Raises:
        ValueError: too few sentences, an empty ``batches`` or a batch below 1, ``seq_len`` < 2.
    """
    from ..deploy import export_onnx, ort_session

    batches = list(batches)
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"batches must be positive ints, got {batches!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}")
    sentences = list(sentences)
    if len(sentences) < max(batches):
        raise ValueError(f"need at least {max(batches)} sentences, got {len(sentences)}")
    repeats = _check_repeats(repeats)
    enc = tokenizer(
        sentences[: max(batches)], padding="max_length", truncation=True, max_length=seq_len, return_tensors="np"
    )
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    example = (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1]))
    names = dict(
        input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "hidden": {0: "batch"}},
    )
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder) if folder is not None else Path(tmp)
        fp32_path = where / "encoder_fp32.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Encoder(model).eval(), example, str(fp32_path), dynamo=False, opset_version=17, **names)
        int8_path = export_onnx(_Encoder(quantized).eval(), example, where / "encoder_int8.onnx", **names)
        sessions = {"fp32": ort_session(fp32_path, threads), "int8": ort_session(int8_path, threads)}
        seconds: dict[tuple[str, int], float] = {}
        for batch in batches:
            feed = {"input_ids": ids[:batch], "attention_mask": mask[:batch]}
            fns = {name: (lambda s=sess, f=feed: s.run(None, f)) for name, sess in sessions.items()}
            for name, t in time_alternating(fns, repeats).items():
                seconds[name, batch] = t
        big = max(batches)
        feed = {"input_ids": ids[:big], "attention_mask": mask[:big]}
        emb = {name: _mean_pool(sess.run(None, feed)[0], mask[:big]) for name, sess in sessions.items()}
    cosine = float((emb["fp32"] * emb["int8"]).sum(axis=1).mean())
    return {"sentences_per_s": {k: k[1] / t for k, t in seconds.items()}, "seconds": seconds, "cosine": cosine}
