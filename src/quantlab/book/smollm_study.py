"""SmolLM2 beyond int4: every setting of the deep dive, built and measured one way.

The deep dive "Beyond int4" compares two dozen ways of re-quantizing the Linear layers of a
Llama-style language model (SmolLM2-135M as shipped, the reference): round-to-nearest, GPTQ
with and without zero points, llama.cpp's importance matrix, AWQ, HQQ, a Hadamard rotation
of the residual stream, and the block formats MXFP4, NVFP4, Q4_K and TQ2_0, at 4, 3 and 2
bits. Running all of them takes minutes, so ``scripts/smollm_experiments.py`` runs them once
with :func:`run_settings` and stores the rows in ``benchmarks/smollm_experiments.json`` with
the hash of :data:`CONFIG`; the page reads the file (:func:`load_results`) and recomputes
live, with the same :class:`Study`, the settings that the core page on the language model
also reports, so that both pages state one value per quantity.

* :data:`SETTINGS` -- name -> :class:`Setting`, in the order of the page's table.
* :class:`Study` -- the reference model, the evaluation protocol's token streams and the
  reference's next-token log-probabilities; the calibration statistics ($X^\\top X$ of every
  layer's input) and the rotated model are computed on first use.
* :meth:`Study.build` -- a quantized copy of the reference for one setting, and its bits per
  weight (scales and zero points included); :meth:`Study.measure` -- its perplexity, KL
  divergence from the reference and top-token agreement
  (:func:`quantlab.evaluation.compare_to_reference`, whose perplexity is bit for bit
  :func:`quantlab.evaluation.perplexity`'s).
* :func:`calibrate` -- feeds calibration text through a model one window at a time (the
  statistics of GPTQ and the importance matrix, AWQ's activations).
* :func:`gap_closed` and :func:`compare_words` -- how much of round-to-nearest's loss a
  method removes, and the words that compare two methods (chosen from the numbers).

Taught in: chapters/04d_beyond_int4.ipynb (and the settings shared with
chapters/04b_language_model.ipynb).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import torch

__all__ = [
    "Setting",
    "SETTINGS",
    "CONFIG",
    "LOST",
    "REFERENCE",
    "ROTATED",
    "Study",
    "calibrate",
    "run_settings",
    "config_hash",
    "load_results",
    "gap_closed",
    "compare_words",
]

PathLike = Union[str, os.PathLike]

#: A perplexity above this means the model has lost its predictions; its exact value is noise.
LOST = 1000.0

#: The names of the two rows that are not re-quantized: the model as shipped, and the rotated
#: model before any rounding (it computes the same function).
REFERENCE, ROTATED = "shipped (Q4_1)", "rotated, not rounded"


@dataclass(frozen=True)
class Setting:
    """One way of quantizing the Linear layers.

    Attributes:
        family: the method, as the table's colours group it (``"RTN"``, ``"GPTQ"``, ...).
        method: what :meth:`Study.build` runs: ``"reference"``, ``"rotated"``, ``"rtn"``,
            ``"gptq"``, ``"imatrix"``, ``"awq"``, ``"hqq"``, ``"mxfp4"``, ``"nvfp4"``, ``"q4_k"``
            or ``"tq2_0"``.
        bits: bits of the integer codes (0 for the reference rows and the block formats).
        group_size: weights of a row that share a scale.
        zero_point: an integer zero point per group (all ``2**bits`` codes used) instead of
            a symmetric grid.
        rotated: quantize the rotated model (a block-Hadamard rotation of the residual stream
            folded into the weights) instead of the reference.
    """

    family: str
    method: str
    bits: int = 0
    group_size: int = 64
    zero_point: bool = False
    rotated: bool = False


def _int_settings() -> dict[str, Setting]:
    s: dict[str, Setting] = {}
    for b in (4, 3, 2):
        s[f"RTN int{b}"] = Setting("RTN", "rtn", b)
        s[f"GPTQ int{b}, zero point"] = Setting("GPTQ", "gptq", b, zero_point=True)
        if b >= 3:
            s[f"GPTQ int{b}, symmetric"] = Setting("GPTQ", "gptq", b)
        if b == 3:
            s["GPTQ int3 g32, zero point"] = Setting("GPTQ", "gptq", 3, group_size=32, zero_point=True)
        s[f"imatrix-RTN int{b}"] = Setting("imatrix-RTN", "imatrix", b)
        if b == 4:
            s["AWQ int4"] = Setting("AWQ", "awq", 4)
            s["HQQ int4, zero point"] = Setting("HQQ", "hqq", 4, zero_point=True)
        if b >= 3:
            s[f"rotation+RTN int{b}"] = Setting("rotation+RTN", "rtn", b, rotated=True)
            s[f"rotation+GPTQ int{b}, zero point"] = Setting("rotation+GPTQ", "gptq", b, zero_point=True, rotated=True)
    return s


#: Every setting of the page, in the order of its table.
SETTINGS: dict[str, Setting] = {
    REFERENCE: Setting("reference", "reference"),
    ROTATED: Setting("reference", "rotated"),
    **_int_settings(),
    "MXFP4": Setting("MXFP4", "mxfp4", group_size=32),
    "NVFP4": Setting("NVFP4", "nvfp4", group_size=16),
    "Q4_K (+Q5_0)": Setting("Q4_K", "q4_k", group_size=256),
    "TQ2_0 (+Q4_0)": Setting("TQ2_0", "tq2_0", group_size=256),
}

#: Everything that decides the stored numbers; :func:`config_hash` of it is stored with them.
CONFIG: dict[str, Any] = {
    "model": "SmolLM2-135M-Instruct, shipped Q4_1 weights dequantized to float32",
    "protocol": {"n_calibration": 2048, "n_evaluation": 1024, "context": 256},
    "settings": {name: asdict(s) for name, s in SETTINGS.items()},
    "scale_dtype": "fp16",
    "gptq": {"act_order": True, "damp": 0.01, "block_size": 128},
    "awq": {"calibration_windows": 2, "max_rows": 128, "n_grid": 20, "seed": 0},
    "hqq": {"iters": 10},
    "imatrix": {"n_grid": 10},
    "rotation": {"kind": "hadamard", "seed": 0},
    "threads": 1,
}


def config_hash(config: dict[str, Any]) -> str:
    """sha256 (hex) of ``json.dumps(config, sort_keys=True, separators=(",", ":"))``."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def calibrate(model: torch.nn.Module, tokens: torch.Tensor, context: int, n_windows: Optional[int] = None) -> None:
    """Feed ``tokens`` through ``model`` in windows of ``context`` tokens, one window per call.

    Args:
        model: a causal language model (called as ``model(input_ids=...)``).
        tokens: 1-D token ids (the protocol's calibration stream).
        context: window length.
        n_windows: feed only the first ``n_windows`` windows (default: all).

    Raises:
        ValueError: ``context`` < 2 or ``n_windows`` < 1.
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 2:
        raise ValueError(f"context must be an int >= 2, got {context!r}")
    if n_windows is not None and (isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1):
        raise ValueError(f"n_windows must be a positive int or None, got {n_windows!r}")
    starts = list(range(0, tokens.numel(), context))[:n_windows]
    with torch.no_grad():
        for start in starts:
            model(input_ids=tokens[start : start + context].unsqueeze(0))


class Study:
    """The reference model, the protocol's tokens, and what every setting is measured against.

    Args:
        reference: the reference model (a transformers Llama model in eval mode); never modified.
        calibration: 1-D calibration token ids.
        evaluation: 1-D evaluation token ids (other text than the calibration tokens).
        context: window length of calibration and evaluation.
        layers: names of the Linear layers to quantize (default: every Linear but ``lm_head``).
        reference_bits: bits per weight of the reference's Linear layers (5.0 for Q4_1).
        config: the options of the methods (default :data:`CONFIG`).

    Attributes:
        ref_logprobs: the reference's next-token log-probabilities at every predicted position.
        n_weights: weights in the chosen layers.
    """

    def __init__(
        self,
        reference: torch.nn.Module,
        calibration: torch.Tensor,
        evaluation: torch.Tensor,
        context: int = 256,
        layers: Optional[Iterable[str]] = None,
        reference_bits: float = 5.0,
        config: Optional[dict[str, Any]] = None,
    ) -> None:
        from quantlab.book.evaluation import next_token_logprobs
        from quantlab.nn import linear_layers

        if not isinstance(reference, torch.nn.Module):
            raise TypeError(f"reference must be a torch.nn.Module, got {type(reference).__name__}")
        self.reference = reference
        self.calibration, self.evaluation, self.context = calibration, evaluation, context
        self.layers = [n for n, _ in linear_layers(reference) if n != "lm_head"] if layers is None else list(layers)
        self.reference_bits = float(reference_bits)
        self.config = CONFIG if config is None else config
        self.n_weights = sum(reference.get_submodule(n).weight.numel() for n in self.layers)
        self.ref_logprobs = next_token_logprobs(reference, evaluation, context)
        self._stats: Optional[dict] = None
        self._rotated: Optional[torch.nn.Module] = None
        self._rot_stats: Optional[dict] = None

    # ------------------------------------------------------------------ what settings share

    def _calibrate(self, model: torch.nn.Module, n_windows: Optional[int] = None) -> None:
        calibrate(model, self.calibration, self.context, n_windows)

    @property
    def stats(self) -> dict:
        """Calibration statistics of every chosen layer of the reference (computed once)."""
        if self._stats is None:
            from quantlab.algorithms.calibration import collect_layer_stats

            self._stats = collect_layer_stats(self.reference, self._calibrate, self.layers)
        return self._stats

    @property
    def rotated(self) -> torch.nn.Module:
        """The reference with a block-Hadamard rotation of its residual stream folded in."""
        if self._rotated is None:
            from quantlab.algorithms.rotations import fold_rotation

            self._rotated = copy.deepcopy(self.reference)
            fold_rotation(self._rotated, kind=self.config["rotation"]["kind"], seed=self.config["rotation"]["seed"])
        return self._rotated

    @property
    def rotated_stats(self) -> dict:
        """Calibration statistics of the rotated model (computed once)."""
        if self._rot_stats is None:
            from quantlab.algorithms.calibration import collect_layer_stats

            self._rot_stats = collect_layer_stats(self.rotated, self._calibrate, self.layers)
        return self._rot_stats

    # ------------------------------------------------------------------ building a setting

    def _copy_with(self, base: torch.nn.Module, quantize_layer: Callable) -> tuple[torch.nn.Module, float]:
        # quantize_layer(name, weight) -> (dequantized weight, bits used by the layer)
        model = copy.deepcopy(base)
        total = 0.0
        with torch.no_grad():
            for name in self.layers:
                linear = model.get_submodule(name)
                w_hat, bits = quantize_layer(name, linear.weight.detach())
                linear.weight.copy_(w_hat)
                total += bits
        return model, total / self.n_weights

    def build(self, name: str) -> tuple[torch.nn.Module, float]:
        """A quantized copy of the reference for setting ``name``, and its bits per weight.

        Args:
            name: a key of :data:`SETTINGS`.

        Returns:
            ``(model, bits per weight of the chosen layers, scales and zero points included)``.

        Raises:
            ValueError: an unknown setting.
        """
        if name not in SETTINGS:
            raise ValueError(f"name must be one of {list(SETTINGS)}, got {name!r}")
        s = SETTINGS[name]
        cfg, sd = self.config, self.config["scale_dtype"]
        if s.method == "reference":
            return self.reference, self.reference_bits
        if s.method == "rotated":
            return self.rotated, 32.0
        base = self.rotated if s.rotated else self.reference
        fmt = f"int{s.bits}"
        if s.method == "rtn":
            from quantlab.nn import QuantScheme

            scheme = QuantScheme(fmt, group_size=s.group_size, scale_dtype=sd)

            def rtn_layer(n, w):
                qt = scheme.quantize(w)
                return qt.dequantize(), 8 * qt.nbytes

            return self._copy_with(base, rtn_layer)
        if s.method == "gptq":
            from quantlab.algorithms.gptq import gptq_quantize_model

            model = copy.deepcopy(base)
            g = cfg["gptq"]
            res = gptq_quantize_model(
                model,
                None,
                fmt,
                group_size=s.group_size,
                stats=self.rotated_stats if s.rotated else self.stats,
                symmetric=not s.zero_point,
                scale_dtype=sd,
                act_order=g["act_order"],
                damp=g["damp"],
                block_size=g["block_size"],
                layers=self.layers,
                progress=False,
            )
            return model, 8 * sum(r.qtensor.nbytes for r in res.values()) / self.n_weights
        if s.method == "imatrix":
            from quantlab.algorithms.imatrix import imatrix_quantize

            stats = self.stats

            def imatrix_layer(n, w):
                qt = imatrix_quantize(
                    w, stats[n].xtx.diagonal(), fmt, s.group_size, n_grid=cfg["imatrix"]["n_grid"], scale_dtype=sd
                )
                return qt.dequantize(), qt.bits_per_weight * w.numel()

            return self._copy_with(base, imatrix_layer)
        if s.method == "awq":
            from quantlab.algorithms.awq import awq_quantize_model

            a = cfg["awq"]
            model = copy.deepcopy(base)
            res = awq_quantize_model(
                model,
                lambda m: self._calibrate(m, a["calibration_windows"]),
                fmt,
                group_size=s.group_size,
                max_rows=a["max_rows"],
                n_grid=a["n_grid"],
                seed=a["seed"],
                scale_dtype=sd,
                layers=self.layers,
                progress=False,
            )
            unique = {id(r): r for r in res.values()}.values()  # layers sharing an input share a result
            return model, 8 * sum(qt.nbytes for r in unique for qt in r.qtensors) / self.n_weights
        if s.method == "hqq":
            from quantlab.algorithms.hqq import hqq_quantize

            def hqq_layer(n, w):
                qt = hqq_quantize(w, f"uint{s.bits}", s.group_size, iters=cfg["hqq"]["iters"], scale_dtype=sd)
                return qt.dequantize(), qt.bits_per_weight * w.numel()

            return self._copy_with(base, hqq_layer)
        if s.method in ("mxfp4", "nvfp4"):
            from quantlab.core.quantize import quantize

            def block_layer(n, w):
                qt = quantize(w, s.method)
                return qt.dequantize(), qt.bits_per_weight * w.numel()

            return self._copy_with(base, block_layer)
        # llama.cpp's rule: a K-quant or ternary block spans 256 weights of a row; rows that 256
        # does not divide get FALLBACK[kind] (q4_k -> q5_0, tq2_0 -> q4_0)
        from quantlab.core.gguf_blocks import FALLBACK, dequantize_blocks, quantize_blocks

        def gguf_layer(n, w):
            k = s.method if w.shape[1] % 256 == 0 else FALLBACK.get(s.method, s.method)
            blocks = quantize_blocks(w, k)
            return dequantize_blocks(blocks, k), 8 * blocks.numel()

        return self._copy_with(base, gguf_layer)

    def measure(self, model: torch.nn.Module) -> dict[str, float]:
        """``{"ppl", "kl", "agree"}`` of ``model`` against the reference on the evaluation tokens."""
        from quantlab.book.evaluation import compare_to_reference

        c = compare_to_reference(self.ref_logprobs, model, self.evaluation, self.context)
        return {"ppl": c.perplexity, "kl": c.kl, "agree": c.agreement}

    def row(self, name: str) -> dict[str, Any]:
        """Build and measure one setting: ``{"family", "bits", "ppl", "kl", "agree", "seconds"}``."""
        t0 = time.perf_counter()
        model, bits = self.build(name)
        out = {
            "family": SETTINGS[name].family,
            "bits": bits,
            **self.measure(model),
            "seconds": time.perf_counter() - t0,
        }
        return out


def run_settings(
    study: Study, names: Optional[Iterable[str]] = None, log: Optional[Callable[[str], None]] = None
) -> dict[str, dict[str, Any]]:
    """:meth:`Study.row` of each setting (default: all of :data:`SETTINGS`, in order).

    Raises:
        ValueError: an unknown setting name.
    """
    names = list(SETTINGS) if names is None else list(names)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise ValueError(f"names must be keys of SETTINGS, got unknown {unknown}")
    rows = {}
    for n in names:
        rows[n] = study.row(n)
        if log:
            r = rows[n]
            log(
                f"{n:<32} {r['bits']:5.2f} bits  ppl {r['ppl']:10.2f}  KL {r['kl']:.4f}  "
                f"same top token {r['agree']:.1%}  ({r['seconds']:.1f} s)"
            )
    return rows


def load_results(path: PathLike) -> dict[str, Any]:
    """The stored results of ``scripts/smollm_experiments.py``, checked against :data:`CONFIG`.

    Returns:
        The file's dict: ``config``, ``config_hash``, ``rows`` (setting -> row), ``meta``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file was made with another configuration, or lacks a setting (run
            ``make experiments``).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no stored results at {str(p)!r}: run scripts/smollm_experiments.py")
    data = json.loads(p.read_text())
    if data.get("config_hash") != config_hash(CONFIG):
        raise ValueError(
            f"{str(p)!r} was made with another configuration than quantlab.book.smollm_study.CONFIG: "
            "run scripts/smollm_experiments.py (make experiments)"
        )
    missing = [n for n in SETTINGS if n not in data.get("rows", {})]
    if missing:
        raise ValueError(f"{str(p)!r} has no rows for {missing}: run scripts/smollm_experiments.py")
    return data


def gap_closed(ppl: float, ppl_rtn: float, ppl_ref: float) -> float:
    """The share of round-to-nearest's loss that a method removes at the same bits:

        1 - (ppl - ppl_ref) / (ppl_rtn - ppl_ref)

    1 means the method is as good as the reference, 0 as bad as round-to-nearest.

    Raises:
        ValueError: a perplexity that is not positive and finite, or ``ppl_rtn <= ppl_ref``.
    """
    for name, v in (("ppl", ppl), ("ppl_rtn", ppl_rtn), ("ppl_ref", ppl_ref)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    if ppl_rtn <= ppl_ref:
        raise ValueError(
            f"ppl_rtn must be above ppl_ref (round-to-nearest loses something), got {ppl_rtn} <= {ppl_ref}"
        )
    return 1 - (ppl - ppl_ref) / (ppl_rtn - ppl_ref)


def compare_words(closed_a: float, closed_b: float, band: float = 0.15) -> str:
    """How method A's share of the loss removed compares with method B's, in words.

    ``"about as much as"`` when the two shares differ by at most ``band``, else ``"more than"``
    or ``"less than"``. A page states the comparison with these words, so its text follows
    the numbers; it also asserts that the difference is not within 0.05 of ``band``, so that
    another CPU cannot tip the words.

    Raises:
        ValueError: ``band`` not in (0, 1).
    """
    if not 0 < band < 1:
        raise ValueError(f"band must be in (0, 1), got {band!r}")
    d = closed_a - closed_b
    if abs(d) <= band:
        return "about as much as"
    return "more than" if d > 0 else "less than"
