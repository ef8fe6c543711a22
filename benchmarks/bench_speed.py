"""Speed of quantized inference in ONNX Runtime: one layer, SmolLM2 decoding, control policies.

Rows (all on one thread, ONNX Runtime sessions from ``quantlab.deploy.ort_session``):

* one Linear layer 4096 x 4096 at batch 1, int8 per channel (``MatMulInteger``) and int4 in
  groups of 32 (``MatMulNBits``, accuracy_level 4) against the float32 layer in ONNX Runtime,
  timed alternately (float, quantized, float, ...), median of the per-pair time ratios;
  goals: int8 at least 2x and int4 at least 3x faster (the weight bytes shrink 3.8x and 6.4x);
* SmolLM2-135M greedy decoding with a KV cache (``quantlab.deploy.decoder.export_decoder``, the fused
  graph: ten kernels per layer, the cache updated in place), int8 and
  int4 in groups of 64 (``MatMulNBits``, accuracy_level 4), output head included, against
  float32: tokens per second, and the fraction of the roofline prediction (bytes read per
  token, scales included / measured bandwidth); goal: at least 2x the float32 tokens/s and at
  least 70% of the roofline. int8 per channel (``MatMulInteger``) and the int4 model traced op
  by op (``fused=False``) are timed in the same rounds and reported beside int8 and int4;
* one action at batch 1 of the CartPole policy (``quantlab.rl.load_policies``, 4 -> 64 -> 64
  -> 2) and of a policy of the same shape with hidden layers of 512 (seeded random weights):
  float32 in ONNX Runtime against float32 in eager torch, and int8 per channel in ONNX
  Runtime against float32 in ONNX Runtime, the three timed in turn in one process. These
  sizes are set by fixed costs per call, not by bytes; the rows report the ratios, with
  bounds that only a broken setup misses (ONNX Runtime no slower than eager torch, int8
  within 2x of float32 either way).

``--quick`` uses a 1024 x 1024 layer, a tiny random Llama (2 layers, hidden 64) instead of
SmolLM2 and few repeats, so that the code runs in seconds; its speeds mean nothing.

Usage::

    python benchmarks/bench_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from quantlab import speed
from quantlab.book.rl_speed import actor_runners
from quantlab.deploy import export_float, export_onnx, ort_session
from quantlab.deploy.decoder import export_decoder
from quantlab.deploy.profiling import onnx_bytes_per_token
from quantlab.deploy.runtime import OrtDecoder
from quantlab.nn import QuantizedLinear, QuantScheme, quantize_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import compare


def layer_ratios(n: int, repeats: int, threads: int = 1) -> dict[str, dict[str, float]]:
    """int8 and int4 g32 vs float32, one ``n x n`` layer at batch 1, in ONNX Runtime."""
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(n, n, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n, n, generator=g) / n**0.5)
    x = torch.randn(1, n, generator=g)
    feed = {"input": x.numpy()}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = ort_session(export_float(linear, x, Path(tmp) / "fp32.onnx"), threads)
        for name, scheme in (("int8", QuantScheme("int8")), ("int4", QuantScheme("int4", group_size=32))):
            path = export_onnx(QuantizedLinear.from_linear(linear, scheme), x, Path(tmp) / f"{name}.onnx")
            sess = ort_session(path, threads)
            out[name] = compare(lambda s=sess: s.run(None, feed), lambda: fp32.run(None, feed), repeats)
    return out


def _tiny_llama() -> tuple[torch.nn.Module, list[int]]:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval(), [1, 5, 9, 23]


#: The decoders of :func:`decode`: name -> (scheme or None for float32, what ONNX Runtime runs).
DECODE_VARIANTS: dict[str, tuple[Optional[QuantScheme], str]] = {
    "fp32": (None, "MatMul, float32"),
    "int8": (QuantScheme("int8", group_size=64), "MatMulNBits, int8 in groups of 64"),
    "int8 per channel": (QuantScheme("int8"), "MatMulInteger, int8 per channel"),
    "int4": (QuantScheme("int4", group_size=64), "MatMulNBits, int4 in groups of 64"),
}


def decode(quick: bool, threads: int = 1, n: int = 32, rounds: int = 3) -> dict[str, Any]:
    """Tokens/s of the :data:`DECODE_VARIANTS` in greedy decoding, bytes per token and bandwidth.

    Every Linear layer is quantized, the output head included (``skip=None``).
    """
    torch.set_num_threads(threads)
    if quick:
        model, prompt = _tiny_llama()
        fresh = lambda: _tiny_llama()[0]  # noqa: E731
        max_len, n, rounds = 32, 4, 1
    else:
        from quantlab.models import smollm

        model = smollm.load_model(fresh=False)
        prompt = smollm.load_tokenizer()("The capital of France is").input_ids
        fresh = smollm.load_model
        max_len = 128
    models = {
        k: model if scheme is None else quantize_model(fresh(), scheme, skip=None, progress=False)
        for k, (scheme, _) in DECODE_VARIANTS.items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            k: export_decoder(m, Path(tmp) / f"decoder{i}.onnx", max_len) for i, (k, m) in enumerate(models.items())
        }
        # the same int4 model traced op by op, to show what the fused graph saves
        paths["int4 traced"] = export_decoder(models["int4"], Path(tmp) / "traced.onnx", max_len, fused=False)
        decoders = {k: OrtDecoder(p, threads) for k, p in paths.items()}
        # the cache bytes the timed steps read: slots 0..position, at the mean timed position
        mean_pos = len(prompt) - 1 + (n - 1) / 2
        cache = {k: d.cache_bytes_read(round(mean_pos)) for k, d in decoders.items()}
        traffic = {k: onnx_bytes_per_token(p, cache[k])["total"] for k, p in paths.items()}
        bw = speed.measure_bandwidth(64 * 2**20 if quick else 256 * 2**20, repeats=3 if quick else 7)
        tok_s = speed.decode_speed(decoders, prompt, n=n, rounds=rounds)
    bandwidth = max(bw.values())
    return {
        "tokens_per_s": tok_s,
        "bytes_per_token": traffic,
        "bandwidth_gbs": bandwidth,
        "roofline_fraction": {k: tok_s[k] * traffic[k] / (bandwidth * 1e9) for k in tok_s},
        "model": "tiny random Llama (quick mode)" if quick else "SmolLM2-135M",
    }


def policy_latency(quick: bool, threads: int = 1) -> dict[str, dict[str, Any]]:
    """Seconds per action at batch 1: float32 eager torch, float32 and int8 in ONNX Runtime.

    For the stored CartPole policy (``seed0/fp32``) and a seeded random policy with hidden
    layers of 512. The three callables of one policy are timed in turn (torch, ONNX Runtime
    float32, ONNX Runtime int8, torch, ...), each sample ``inner`` calls long; medians.

    Returns:
        ``{"cartpole": {...}, "mlp512": {...}}``, each with ``seconds`` (name -> seconds per
        call), ``weights`` (count) and ``shape``.
    """
    from quantlab import rl

    torch.set_num_threads(threads)
    policies = {"cartpole": rl.load_policies().policies["seed0/fp32"], "mlp512": rl.Policy(hidden=512, seed=1)}
    repeats, inner = (5, 5) if quick else (300, 20)
    obs = np.zeros((1, 4), dtype=np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, policy in policies.items():
            policy.eval()
            folder = Path(tmp) / name
            folder.mkdir()
            runners = actor_runners(policy, folder, threads)  # eager torch, ONNX Runtime fp32 and int8

            def loop(run_once: Callable[[np.ndarray], Any]) -> Callable[[], None]:
                def run() -> None:
                    for _ in range(inner):
                        run_once(obs)

                return run

            t = speed.time_alternating({k: loop(r) for k, r in runners.items()}, repeats=repeats, warmup=2)
            linears = [m for m in policy.modules() if isinstance(m, torch.nn.Linear)]
            out[name] = {
                "seconds": {k: v / inner for k, v in t.items()},
                "weights": sum(m.weight.numel() for m in linears),
                "shape": " -> ".join([str(linears[0].in_features)] + [str(m.out_features) for m in linears]),
            }
    return out


def rows(quick: bool, threads: int = 1, make_row: Optional[Callable[..., dict]] = None) -> list[dict[str, Any]]:
    """The benchmark rows, in the format of ``benchmarks/run.py`` (``make_row`` is its ``_row``)."""
    if make_row is None:

        def make_row(key, title, reference, size, goal, **fields):
            return {"key": key, "benchmark": title, "reference": reference, "size": size, "goal": goal, **fields}

    out = []
    n = 1024 if quick else 4096
    layer = layer_ratios(n, repeats=3 if quick else 30, threads=threads)
    for name, op, goal_x in (
        ("int8", "MatMulInteger, per channel", 2.0),
        ("int4", "MatMulNBits g32, accuracy_level 4", 3.0),
    ):
        t = layer[name]
        speedup = 1.0 / t["ratio"]
        out.append(
            make_row(
                f"speed_layer_{name}_vs_fp32",
                f"Linear layer in ONNX Runtime, batch 1: {name} ({op})",
                "the float32 layer in ONNX Runtime (MatMul)",
                f"{n}x{n}",
                f"at least {goal_x:g}x faster",
                **t,
                met=speedup >= goal_x,
                result=f"{speedup:.2f}x faster",
                note="alternating runs, median of the per-pair ratios; one thread",
            )
        )
    d = decode(quick, threads)
    tok = d["tokens_per_s"]
    for name in ("int8", "int4"):
        x = tok[name] / tok["fp32"]
        frac = d["roofline_fraction"][name]
        extra = ""
        if name == "int8":
            extra = (
                f"; int8 per channel (MatMulInteger): {tok['int8 per channel']:.1f} tokens/s, "
                f"{d['roofline_fraction']['int8 per channel']:.0%} of its roofline"
            )
        else:
            extra = (
                f"; the same int4 model traced op by op: {tok['int4 traced']:.1f} tokens/s "
                f"(the fused graph {tok['int4'] / tok['int4 traced']:.2f}x faster)"
            )
        out.append(
            make_row(
                f"speed_decode_{name}",
                f"{d['model']} greedy decoding with a KV cache, batch 1: {name} (g64, MatMulNBits, head included)",
                "the float32 model, same loop, timed alternately",
                f"{d['bytes_per_token'][name] / 1e6:.1f} MB/token",
                "at least 2x the fp32 tokens/s and at least 70% of the roofline (bytes per token / bandwidth)",
                time_ms=1e3 / tok[name],
                reference_ms=1e3 / tok["fp32"],
                ratio=tok["fp32"] / tok[name],
                met=x >= 2.0 and frac >= 0.7,
                result=f"{tok[name]:.1f} vs {tok['fp32']:.1f} tokens/s ({x:.2f}x); {frac:.0%} of its roofline "
                f"(fp32: {d['roofline_fraction']['fp32']:.0%}){extra}",
                check={
                    "tokens_per_s": tok,
                    "bytes_per_token": d["bytes_per_token"],
                    "bandwidth_gbs": d["bandwidth_gbs"],
                    "roofline_fraction": d["roofline_fraction"],
                    "kernels": {k: v[1] for k, v in DECODE_VARIANTS.items()},
                },
                note="medians of all generating steps; fused graph (GroupQueryAttention, in-place cache); "
                "bandwidth: the best of a 256 MiB copy and read, same thread count; bytes per token count "
                "the scales and the cache read at the mean timed position",
            )
        )
    pol = policy_latency(quick, threads)
    titles = {"cartpole": "CartPole policy (stored, seed 0)", "mlp512": "policy with hidden layers of 512 (random)"}
    for name, p in pol.items():
        sec = p["seconds"]
        check = {"us_per_action": {k: 1e6 * v for k, v in sec.items()}, "weights": p["weights"]}
        size = f"{p['shape']}, {p['weights']:,} weights"
        ratio = sec["fp32 ORT"] / sec["fp32 torch"]
        out.append(
            make_row(
                f"speed_policy_{name}_ort_vs_torch",
                f"{titles[name]}, one action at batch 1: float32 in ONNX Runtime",
                "the same policy in eager torch (float32), timed in turn",
                size,
                "report (bound: no slower than eager torch)",
                time_ms=1e3 * sec["fp32 ORT"],
                reference_ms=1e3 * sec["fp32 torch"],
                ratio=ratio,
                met=ratio <= 1.0,
                result=f"{1e6 * sec['fp32 ORT']:.1f} vs {1e6 * sec['fp32 torch']:.1f} us ({1 / ratio:.2f}x faster)",
                check=check,
                note="medians of samples of repeated calls; the three formats timed in turn",
            )
        )
        ratio = sec["int8 ORT"] / sec["fp32 ORT"]
        word = f"{1 / ratio:.2f}x faster" if ratio <= 1 else f"{ratio:.2f}x slower"
        out.append(
            make_row(
                f"speed_policy_{name}_int8_vs_fp32",
                f"{titles[name]}, one action at batch 1: int8 per channel in ONNX Runtime (MatMulInteger)",
                "the float32 policy in ONNX Runtime, timed in turn",
                size,
                "report (bound: within 2x of float32 either way)",
                time_ms=1e3 * sec["int8 ORT"],
                reference_ms=1e3 * sec["fp32 ORT"],
                ratio=ratio,
                met=0.5 <= ratio <= 2.0,
                result=f"{1e6 * sec['int8 ORT']:.1f} vs {1e6 * sec['fp32 ORT']:.1f} us ({word})",
                check=check,
                note="medians of samples of repeated calls; the three formats timed in turn",
            )
        )
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    for r in rows(args.quick, args.threads):
        print(f"{r['key']}: {r['result']} (goal: {r['goal']}; met: {r['met']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
