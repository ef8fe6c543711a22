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
* :class:`LlamaDecodeStep`, :func:`export_decoder`, :class:`OrtDecoder` and
  :func:`greedy_decode` run a Llama-style language model (SmolLM2) one token at a time with
  a key/value cache in ONNX Runtime;
* :func:`encoder_speed` measures sentences per second of an encoder (MiniLM) in ONNX
  Runtime, float32 against int8, at several batch sizes;
* :func:`profile_decoder` splits a decoding step's time by operator (ONNX Runtime's
  profiler);
* :func:`cpu_flags` reads the instruction-set extensions that decide which kernels run.

Timings are medians of wall-clock times, in seconds, on whatever threads the caller set
(``torch.set_num_threads`` for torch, ``threads=`` for ONNX Runtime).

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
ISA_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                              "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")

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


def time_alternating(fns: Mapping[str, Callable[[], Any]], repeats: int = 5,
                     warmup: int = 1) -> dict[str, float]:
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
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(b, "b")])
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
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "fp32_peak",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "b")])
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


def linear_cost(in_features: int, out_features: int, batch: int, bits: float = 32,
                group_size: Optional[int] = None, scale_bits: int = 32) -> LinearCost:
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
    return LinearCost(flops=2.0 * m * n * k, weight_bytes=float(weight),
                      activation_bytes=4.0 * m * (k + n))


def roofline(intensity: Union[float, np.ndarray], bandwidth_gbs: float,
             peak_gflops: float) -> Union[float, np.ndarray]:
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


def export_float(model: nn.Module, example_input: torch.Tensor, path: PathLike,
                 opset: int = 17) -> Path:
    """Write a float torch module as ONNX (TorchScript exporter), batch axis dynamic.

    The float counterpart of :func:`quantlab.deploy.export_onnx`: input ``"input"``,
    output ``"output"``, axis 0 of both named ``"batch"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example_input,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def _layer_runners(weight: torch.Tensor, formats: Sequence[str], folder: Path,
                   threads: int) -> dict[str, Callable[[torch.Tensor, np.ndarray], Any]]:
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
                runners[fmt] = lambda xt, xn, s=ort_session(path, threads): s.run(None, {"input": xn})
        else:
            raise ValueError(f"unknown format {fmt!r}; choose from {list(SWEEP_FORMATS)}")
    return runners


def layer_sweep(in_features: int, out_features: int, batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
                formats: Sequence[str] = tuple(SWEEP_FORMATS), repeats: int = 5, threads: int = 1,
                seed: int = 0) -> list[dict[str, Any]]:
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
    bits = {"fp32 torch": (32, None), "fp32 ORT": (32, None), "int8 ORT": (8, None),
            "int4 ORT": (4, 32), "int4 eager": (4, 32)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        runners = _layer_runners(weight, formats, Path(tmp), threads)
        for batch in batches:
            xt = torch.randn(batch, in_features, generator=g)
            xn = xt.numpy()
            fns = {fmt: (lambda r=runners[fmt]: r(xt, xn)) for fmt in formats}
            times = time_alternating(fns, repeats)
            for fmt in formats:
                b, gs = bits[fmt]
                # fp32 scales in ONNX Runtime; quantlab's eager layer keeps its own (fp16) scales
                cost = linear_cost(in_features, out_features, batch, b, gs)
                rows.append(dict(batch=batch, format=fmt, seconds=times[fmt], flops=cost.flops,
                                 bytes=cost.bytes, intensity=cost.intensity,
                                 gflops=cost.flops / times[fmt] / 1e9))
    return rows


# --------------------------------------------------------------------------- decoding


class LlamaDecodeStep(nn.Module):
    """One decoding step of a transformers Llama model (SmolLM2), with a fixed-size KV cache.

    ``forward(input_ids, position, past_keys, past_values)`` takes

    * ``input_ids``: int64 ``(1,)``, the current token;
    * ``position``: int64 ``(1,)``, its position ``p`` (0-based), also the number of cached
      tokens;
    * ``past_keys``, ``past_values``: float32 ``(layers, kv_heads, max_len, head_dim)``; slots
      ``0 .. p-1`` hold the keys and values (after rotary embedding, for keys) of the tokens
      before, the rest is ignored (masked);

    and returns ``(logits (1, vocab), new_keys, new_values)`` with the new entries
    ``(layers, kv_heads, 1, head_dim)`` for slot ``p``, which the caller writes into the cache.
    Fixed shapes keep the exported graph simple; attention reads all ``max_len`` slots and
    masks the unused ones.

    The computation is the model's own (it calls the model's embedding, norms, projections,
    MLPs and head, so quantized layers stay quantized); only attention is written out here,
    for one query token: rotary embedding, grouped-query attention (each of the
    ``kv_heads`` key/value heads serves ``heads / kv_heads`` query heads), softmax with
    scale ``1/sqrt(head_dim)``.

    Args:
        model: a transformers ``LlamaForCausalLM`` (possibly with QuantizedLinear layers).
        max_len: cache slots (the longest prompt + generation).

    Raises:
        TypeError: ``model`` has no Llama-style ``model.layers``.
        ValueError: ``max_len`` < 1.
    """

    def __init__(self, model: nn.Module, max_len: int = 128) -> None:
        super().__init__()
        if not hasattr(model, "model") or not hasattr(model.model, "layers") or not hasattr(model, "config"):
            raise TypeError("model must be a transformers Llama-style causal LM (model.model.layers)")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        cfg = model.config
        self.lm = model
        self.max_len = max_len
        self.n_layers = len(model.model.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rope = getattr(cfg, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        inv_freq = 1.0 / theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("slots", torch.arange(max_len), persistent=False)
        half = self.head_dim // 2
        rot = torch.zeros(self.head_dim, self.head_dim)  # x @ rot = rotate_half(x) = (-x2, x1)
        rot[torch.arange(half) + half, torch.arange(half)] = -1.0
        rot[torch.arange(half), torch.arange(half) + half] = 1.0
        self.register_buffer("rot", rot, persistent=False)
        self.register_buffer("eye", torch.eye(self.head_dim), persistent=False)

    def cache_shape(self) -> tuple[int, int, int, int]:
        """``(layers, kv_heads, max_len, head_dim)``."""
        return (self.n_layers, self.n_kv, self.max_len, self.head_dim)

    def forward(self, input_ids: torch.Tensor, position: torch.Tensor, past_keys: torch.Tensor,
                past_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lm = self.lm.model
        n_kv, rep, hd = self.n_kv, self.n_heads // self.n_kv, self.head_dim
        x = lm.embed_tokens(input_ids)  # (1, d)
        freqs = position.to(torch.float32)[:, None] * self.inv_freq[None, :]  # (1, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos(), emb.sin()  # (1, hd)
        # rotary embedding as one (hd x hd) matrix per step, shared by all layers:
        # x * cos + rotate_half(x) * sin = x @ (diag(cos) + rot * sin); queries also take the scale
        rope_k = self.eye * cos + self.rot * sin
        rope_q = rope_k * (1.0 / math.sqrt(hd))
        masked = (self.slots >= position)[None, None, :]  # (1, 1, max_len): slots not yet written
        new_k, new_v = [], []
        for i, block in enumerate(lm.layers):
            attn = block.self_attn
            h = block.input_layernorm(x)
            q = attn.q_proj(h).view(n_kv, rep, hd)
            k = attn.k_proj(h).view(n_kv, 1, hd)
            v = attn.v_proj(h).view(n_kv, 1, hd)
            q = torch.matmul(q, rope_q)  # rotated and scaled by 1/sqrt(head_dim)
            k = torch.matmul(k, rope_k)
            s_past = torch.matmul(q, past_keys[i].transpose(-1, -2))  # (n_kv, rep, max_len)
            s_past = s_past.masked_fill(masked, float("-inf"))
            s_new = torch.matmul(q, k.transpose(-1, -2))  # (n_kv, rep, 1)
            p = torch.softmax(torch.cat([s_past, s_new], dim=-1), dim=-1)
            out = torch.matmul(p[..., :-1], past_values[i]) + p[..., -1:] * v  # (n_kv, rep, hd)
            x = x + attn.o_proj(out.reshape(1, n_kv * rep * hd))
            x = x + block.mlp(block.post_attention_layernorm(x))
            new_k.append(k)
            new_v.append(v)
        logits = self.lm.lm_head(lm.norm(x))
        return logits, torch.stack(new_k), torch.stack(new_v)


def export_decoder(model: nn.Module, path: PathLike, max_len: int = 128,
                   accuracy_level: int = 4, fused: bool = True) -> Path:
    """Export one decoding step of ``model`` to ONNX, for :class:`OrtDecoder`.

    ``fused=True`` (the default) writes the graph an inference engine runs
    (:func:`quantlab.deploy.decoder.export_llama_decoder`): about ten nodes per layer, with
    ONNX Runtime's fused kernels for RMSNorm + residual, attention with rotary embedding and
    an in-place KV cache, and stacked q/k/v and gate/up projections. ``fused=False`` traces
    :class:`LlamaDecodeStep` op by op with ``torch.onnx.export`` (about 30 nodes per layer;
    inputs ``input_ids``, ``position``, ``past_keys``, ``past_values``; outputs ``logits``,
    ``new_keys``, ``new_values``; attention over all ``max_len`` slots, masked). Both keep
    quantized layers (:class:`~quantlab.nn.QuantizedLinear`) on ONNX Runtime's integer
    kernels (:func:`quantlab.deploy.export_onnx`), with the layers' own codes and scales.

    Args:
        model: a transformers Llama-style causal LM.
        path: the ``.onnx`` file to write.
        max_len: cache slots.
        accuracy_level: ``MatMulNBits`` accuracy level for grouped layers.
        fused: the fused graph (True) or the traced one (False).

    Returns:
        ``path`` as a Path.
    """
    from ..deploy import export_onnx
    from ..deploy.decoder import export_llama_decoder
    from ..nn import quantized_layers

    if not isinstance(fused, bool):
        raise TypeError(f"fused must be a bool, got {fused!r}")
    if fused:
        return export_llama_decoder(model, path, max_len=max_len, accuracy_level=accuracy_level)
    step = LlamaDecodeStep(model, max_len).eval()
    cache = torch.zeros(step.cache_shape())
    example = (torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), cache, cache.clone())
    names_in = ["input_ids", "position", "past_keys", "past_values"]
    names_out = ["logits", "new_keys", "new_values"]
    path = Path(path)
    if quantized_layers(step):
        return export_onnx(step, example, path, input_names=names_in, output_names=names_out,
                           dynamic_axes={}, accuracy_level=accuracy_level)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, example, str(path), dynamo=False, opset_version=17,
                          input_names=names_in, output_names=names_out)
    return path


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
    return {"weights": float(weights), "embedding_table": float(table_bytes),
            "total": float(weights + cache_bytes)}


class OrtDecoder:
    """Greedy decoding with an exported decode step (:func:`export_decoder`) in ONNX Runtime.

    For a fused graph the KV cache is one ONNX Runtime buffer per layer and kind, bound as
    both the input and the output of its attention node (``IOBinding``): the kernel writes
    the new key and value into slot ``position`` in place, and a step copies nothing but
    the token in and the logits out. For a traced graph (``fused=False``) the cache is held
    as numpy arrays, passed in whole every step, and each step's new keys and values are
    written into slot ``position``.

    The token, position and logits are numpy arrays that share their memory with the bound
    ONNX Runtime values, so a step writes three numbers and copies the logits out; nothing
    else crosses between Python and ONNX Runtime.

    Args:
        path: the exported ``.onnx`` file.
        threads: ONNX Runtime intra-op threads.
        profile_prefix: turn on ONNX Runtime's profiler (see
            :func:`quantlab.deploy.ort_session`).
        spinning: whether worker threads spin between the kernels of a step (and stop when
            it returns) instead of sleeping; None (default): they sleep. See
            :func:`quantlab.deploy.decoder.decoder_session`.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        cache_shape: ``(layers, kv_heads, max_len, head_dim)``.
        fused: whether the graph is the fused one.
    """

    def __init__(self, path: PathLike, threads: int = 1, profile_prefix: Optional[PathLike] = None, *,
                 spinning: Optional[bool] = None) -> None:
        from ..deploy.decoder import decoder_session

        self.session = decoder_session(path, threads=threads, spinning=spinning, profile_prefix=profile_prefix)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.fused = "seqlens_k" in inputs
        if self.fused:
            layers = sum(1 for n in inputs if n.startswith("past_key."))
            shape = inputs["past_key.0"].shape if layers else []
            self.cache_shape = (layers, *shape[1:]) if len(shape) == 4 else ()
        else:
            shape = inputs["past_keys"].shape if "past_keys" in inputs else []
            self.cache_shape = tuple(shape)
        if len(self.cache_shape) != 4 or not all(isinstance(s, int) for s in self.cache_shape):
            raise ValueError(f"{path} is not a decode step from export_decoder (inputs {sorted(inputs)})")
        self.vocab = int(self.session.get_outputs()[0].shape[-1])
        self.reset()

    @property
    def max_len(self) -> int:
        return self.cache_shape[2]

    @property
    def cache_bytes(self) -> int:
        """Bytes of keys and values the cache holds (float32, all ``max_len`` slots)."""
        return 2 * int(np.prod(self.cache_shape)) * 4

    def cache_bytes_read(self, position: int) -> int:
        """Bytes of keys and values that the step at ``position`` reads.

        The fused graph's attention reads slots ``0..position``; the traced graph reads all
        ``max_len`` slots (and masks the unused ones).
        """
        slots = position + 1 if self.fused else self.max_len
        layers, kv, _, hd = self.cache_shape
        return 2 * layers * kv * slots * hd * 4

    def reset(self) -> None:
        """Empty the cache."""
        if not self.fused:
            self.keys = np.zeros(self.cache_shape, dtype=np.float32)
            self.values = np.zeros(self.cache_shape, dtype=np.float32)
            return
        import onnxruntime as ort

        layers, kv, slots, hd = self.cache_shape
        zeros = np.zeros((1, kv, slots, hd), dtype=np.float32)
        if not hasattr(self, "_binding"):
            self._binding = self.session.io_binding()
            # numpy arrays and the OrtValues bound to the graph share one buffer each
            self._ids_np = np.zeros((1, 1), dtype=np.int64)
            self._seqlens_np = np.zeros(1, dtype=np.int32)
            self._total_np = np.ones((), dtype=np.int32)
            self._logits_np = np.zeros((1, 1, self.vocab), dtype=np.float32)
            self._ids = ort.OrtValue.ortvalue_from_numpy(self._ids_np)
            self._seqlens = ort.OrtValue.ortvalue_from_numpy(self._seqlens_np)
            self._total = ort.OrtValue.ortvalue_from_numpy(self._total_np)
            self._logits = ort.OrtValue.ortvalue_from_numpy(self._logits_np)
            self._cache = [ort.OrtValue.ortvalue_from_numpy(zeros.copy()) for _ in range(2 * layers)]
            b = self._binding
            b.bind_ortvalue_input("input_ids", self._ids)
            b.bind_ortvalue_input("seqlens_k", self._seqlens)
            b.bind_ortvalue_input("total_sequence_length", self._total)
            b.bind_ortvalue_output("logits", self._logits)
            for i in range(layers):
                for j, kind in enumerate(("key", "value")):
                    buf = self._cache[2 * i + j]
                    b.bind_ortvalue_input(f"past_{kind}.{i}", buf)
                    b.bind_ortvalue_output(f"present_{kind}.{i}", buf)
        else:
            for buf in self._cache:
                buf.update_inplace(zeros)

    def step(self, token: int, position: int) -> np.ndarray:
        """Feed ``token`` at ``position``; returns the logits ``(vocab,)`` for the next token."""
        if not 0 <= position < self.max_len:
            raise ValueError(f"position must be in 0..{self.max_len - 1}, got {position}")
        if self.fused:
            self._ids_np[0, 0] = token  # the bound inputs read these buffers
            self._seqlens_np[0] = position
            self._total_np[()] = position + 1
            self.session.run_with_iobinding(self._binding)
            return self._logits_np[0, 0].copy()  # the next step overwrites the buffer
        logits, k, v = self.session.run(None, {
            "input_ids": np.array([token], dtype=np.int64),
            "position": np.array([position], dtype=np.int64),
            "past_keys": self.keys, "past_values": self.values})
        self.keys[:, :, position] = k[:, :, 0]
        self.values[:, :, position] = v[:, :, 0]
        return logits[0]

    def generate(self, prompt: Sequence[int], n: int) -> list[int]:
        """Greedy: feed ``prompt`` token by token, then ``n`` argmax tokens. Returns the new tokens."""
        return greedy_decode(self.step, prompt, n, reset=self.reset)

    def nll(self, tokens: Sequence[int]) -> tuple[float, int]:
        """Summed negative log-likelihood of ``tokens[1:]`` given the tokens before, and its count.

        ``math.exp(total / count)`` is the perplexity of one window, as
        :func:`quantlab.evaluation.perplexity` computes it with ``context = len(tokens)``.
        """
        tokens = [int(t) for t in tokens]
        if len(tokens) < 2 or len(tokens) > self.max_len:
            raise ValueError(f"need 2 to {self.max_len} tokens, got {len(tokens)}")
        self.reset()
        total = 0.0
        for pos, tok in enumerate(tokens[:-1]):
            logits = self.step(tok, pos).astype(np.float64)
            m = logits.max()
            total += float(m + np.log(np.exp(logits - m).sum()) - logits[tokens[pos + 1]])
        return total, len(tokens) - 1


def greedy_decode(step: Callable[[int, int], Any], prompt: Sequence[int], n: int,
                  reset: Optional[Callable[[], None]] = None,
                  times: Optional[list[float]] = None) -> list[int]:
    """Greedy generation with a one-token step function ``step(token, position) -> logits``.

    The prompt is fed one token at a time (positions ``0 .. len(prompt) - 1``), then each
    argmax is fed back, ``n`` times.

    Args:
        step: the decode step (e.g. :meth:`OrtDecoder.step`), returning the next-token logits.
        prompt: token ids, at least one.
        n: tokens to generate, >= 0.
        reset: called first (empties a cache), if given.
        times: if a list is given, the seconds of each generating step are appended to it
            (the prompt's steps are not timed).

    Returns:
        The ``n`` generated token ids.

    Raises:
        ValueError: an empty prompt or a negative ``n``.
    """
    prompt = [int(t) for t in prompt]
    if not prompt:
        raise ValueError("prompt must hold at least one token")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if reset is not None:
        reset()
    for pos, tok in enumerate(prompt[:-1]):
        step(tok, pos)
    out: list[int] = []
    tok, pos = prompt[-1], len(prompt) - 1
    for _ in range(n):
        t0 = time.perf_counter()
        logits = step(tok, pos)
        tok = int(np.argmax(np.asarray(logits)))
        if times is not None:
            times.append(time.perf_counter() - t0)
        out.append(tok)
        pos += 1
    return out


def decode_speed(decoders: Mapping[str, "OrtDecoder"], prompt: Sequence[int], n: int = 16,
                 rounds: int = 2, interleave: bool = True) -> dict[str, float]:
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
        path: a decode step from :func:`export_decoder` (fused or traced).
        prompt: token ids fed first (untimed).
        n: generated tokens whose steps are summed, at least 1.
        threads: ONNX Runtime intra-op threads.

    Returns:
        ``{"step_ms": mean time of a whole step in the session (ms), "ops": {op type:
        {"ms": mean ms per step, "calls": kernel calls per step}}}``, ops by time, largest
        first.

    Raises:
        ValueError: ``n`` < 1 or an empty prompt (and as :class:`OrtDecoder`).
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


def encoder_speed(model: nn.Module, quantized: nn.Module, tokenizer: Any, sentences: Sequence[str],
                  batches: Sequence[int] = (1, 32), seq_len: int = 32, repeats: int = 5, threads: int = 1,
                  folder: Optional[PathLike] = None) -> dict[str, Any]:
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
    enc = tokenizer(sentences[:max(batches)], padding="max_length", truncation=True, max_length=seq_len,
                    return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    example = (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1]))
    names = dict(input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                 dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "hidden": {0: "batch"}})
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
