"""Does it fit: a model's weights, KV cache and overhead against a GPU's memory.

The reader picks a model (a shape from :data:`quantlab.memory.MODELS`, its parameter
count free to change), a weight format (:data:`WEIGHT_FORMATS`: the memory calculator's
formats with their scales, the block-scaled MX and NVFP4 formats and llama.cpp's GGUF
types), a context length and a batch (the KV cache, in a format of its own,
:data:`KV_FORMATS`) and a GPU from :data:`quantlab.memory.GPUS`. The figure draws the bar

    weights   = n_params * bits_per_weight / 8                      (memory.weight_bytes)
    KV cache  = 2 * layers * kv_heads * head_dim * tokens * batch * bits / 8
                                                                      (memory.kv_cache_bytes)
    overhead  = DEFAULT_OVERHEAD * weights   (CUDA context, allocator, activations)
    needed    = weights * (1 + DEFAULT_OVERHEAD) + KV cache            (memory.required_bytes)

against the card's memory and gives the verdict ``needed <= memory`` (:func:`memory.fits`)
and the smallest card of the catalog that holds it (:func:`memory.gpus_that_fit`).

:func:`breakdown` is the truth: it calls quantlab.memory for every format that the memory
calculator knows (a format name, a :class:`~quantlab.memory.QuantSpec`, a block-scaled
format); llama.cpp's k-quants and ternary types, whose block layouts are no scale recipe
of the memory calculator, take their bits per weight from
:data:`quantlab.core.gguf_blocks.BITS_PER_WEIGHT` in the same formula (the way
chapters/04d_beyond_int4.ipynb counts them). The page's script does this arithmetic in
the same order of operations, so its numbers are the same doubles; the browser test
compares them over sampled settings.

Taught in: chapters/01_why_quantization.ipynb, "The memory arithmetic" and "Models
against GPUs"; the KV cache in "What else takes memory".
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Optional, Union

from ...core import gguf_blocks
from ...core import memory as mem
from ...core.memory import QuantSpec
from ...core.validate import check_count, check_int
from ...core.validate import describe as _describe
from ._page import check_root_id, figure_html

__all__ = [
    "WeightFormat",
    "WEIGHT_FORMATS",
    "KV_FORMATS",
    "CONTEXTS",
    "MAX_BATCH",
    "Setting",
    "Breakdown",
    "breakdown",
    "static_data",
    "static_html",
]


@dataclass(frozen=True)
class WeightFormat:
    """A way to store the weights, as the figure's menu offers it.

    Attributes:
        label: what the menu shows.
        group: the menu group ("floats", "integers with scales", ...).
        spec: what :mod:`quantlab.memory` takes (a format name or a :class:`QuantSpec`),
            or None for a GGUF type the memory calculator has no recipe for.
        gguf: the llama.cpp type (``gguf_blocks.KINDS``) this is, if it is one.
    """

    label: str
    group: str
    spec: Optional[Union[str, QuantSpec]]
    gguf: Optional[str] = None

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight, scales included (the memory calculator's, or the GGUF block's)."""
        if self.spec is None:
            return gguf_blocks.BITS_PER_WEIGHT[self.gguf]
        return mem.weight_bytes(8, self.spec)  # 8 weights take bits_per_weight bytes


_FLOAT, _INT, _BLOCK, _GGUF = ("floats", "integers with scales", "block-scaled (MX, NVFP4)", "llama.cpp (GGUF)")
#: The weight formats of the menu, by key, in menu order.
WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "fp32": WeightFormat("fp32", _FLOAT, "fp32"),
    "fp16": WeightFormat("fp16 / bf16", _FLOAT, "fp16"),
    "fp8": WeightFormat("fp8 (e4m3)", _FLOAT, "fp8_e4m3"),
    "int8_g128": WeightFormat("int8, fp16 scale per 128", _INT, QuantSpec("int8", group_size=128)),
    "int4_g128": WeightFormat("int4, fp16 scale per 128 (GPTQ, AWQ)", _INT, QuantSpec("int4", group_size=128)),
    "int4_g128_zp": WeightFormat(
        "int4 g128 with 4-bit zero points", _INT, QuantSpec("int4", group_size=128, zero_point_dtype="int4")
    ),
    "int3_g64_zp": WeightFormat(
        "int3 g64 with 3-bit zero points", _INT, QuantSpec("int3", group_size=64, zero_point_dtype="int3")
    ),
    "nf4": WeightFormat("NF4, fp32 scale per 64", _INT, QuantSpec("nf4", group_size=64, scale_dtype="fp32")),
    "nf4_dq": WeightFormat(
        "NF4, double quantization (QLoRA)", _INT, QuantSpec("nf4", group_size=64, double_quant=True)
    ),
    "mxfp8": WeightFormat("MXFP8 (e4m3, scale per 32)", _BLOCK, "mxfp8_e4m3"),
    "mxfp6": WeightFormat("MXFP6 (e3m2, scale per 32)", _BLOCK, "mxfp6_e3m2"),
    "mxfp4": WeightFormat("MXFP4 (scale per 32)", _BLOCK, "mxfp4"),
    "nvfp4": WeightFormat("NVFP4 (fp8 scale per 16)", _BLOCK, "nvfp4"),
    "q8_0": WeightFormat("Q8_0", _GGUF, QuantSpec("int8", group_size=32), "q8_0"),
    "q6_k": WeightFormat("Q6_K", _GGUF, None, "q6_k"),
    "q5_1": WeightFormat("Q5_1", _GGUF, QuantSpec("int5", group_size=32, zero_point_dtype="fp16"), "q5_1"),
    "q5_0": WeightFormat("Q5_0", _GGUF, QuantSpec("int5", group_size=32), "q5_0"),
    "q4_1": WeightFormat("Q4_1", _GGUF, QuantSpec("int4", group_size=32, zero_point_dtype="fp16"), "q4_1"),
    "q4_k": WeightFormat("Q4_K", _GGUF, None, "q4_k"),
    "q4_0": WeightFormat("Q4_0", _GGUF, QuantSpec("int4", group_size=32), "q4_0"),
    "tq2_0": WeightFormat("TQ2_0 (ternary)", _GGUF, None, "tq2_0"),
    "tq1_0": WeightFormat("TQ1_0 (ternary)", _GGUF, None, "tq1_0"),
}
#: The KV cache formats of the menu: key -> (label, what memory.kv_cache_bytes takes).
KV_FORMATS: dict[str, tuple[str, Union[str, QuantSpec]]] = {
    "fp16": ("fp16 / bf16", "fp16"),
    "fp8": ("fp8 (e4m3)", "fp8_e4m3"),
    "int8": ("int8", "int8"),
    "int4_g32": ("int4, fp16 scale and zero per 32 (KIVI)", QuantSpec("int4", 32, "fp16", "fp16")),
    "int2_g32": ("int2, fp16 scale and zero per 32 (KIVI)", QuantSpec("int2", 32, "fp16", "fp16")),
}
#: The context lengths of the slider (tokens).
CONTEXTS: tuple[int, ...] = tuple(2**k for k in range(9, 18))
#: The largest batch the figure takes.
MAX_BATCH = 1024


@dataclass(frozen=True)
class Setting:
    """One setting of the figure's controls.

    Attributes:
        model: a name from :data:`quantlab.memory.MODELS` (its shape sizes the KV cache).
        n_params: the number of parameters (default: the model's own).
        weights: a key of :data:`WEIGHT_FORMATS`.
        context: tokens held per sequence (>= 1).
        batch: sequences held at once (1 .. :data:`MAX_BATCH`).
        kv: a key of :data:`KV_FORMATS`.
        gpu: a name from :data:`quantlab.memory.GPUS`.
    """

    model: str = "Llama-2-7B"
    n_params: Optional[float] = None
    weights: str = "int4_g128"
    context: int = 4096
    batch: int = 1
    kv: str = "fp16"
    gpu: str = "RTX 4090"

    def __post_init__(self) -> None:
        shape = mem.get_model(self.model)
        if self.n_params is not None:
            n = check_count(self.n_params, "n_params", allow_zero=False)
            object.__setattr__(self, "n_params", n)
        else:
            object.__setattr__(self, "n_params", shape.n_params)
        for value, name, table in ((self.weights, "weights", WEIGHT_FORMATS), (self.kv, "kv", KV_FORMATS)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {type(value).__name__} {_describe(value)}")
            if value not in table:
                raise ValueError(f"{name} must be one of {list(table)}, got {value!r}")
        check_int(self.context, "context", minimum=1)
        check_int(self.batch, "batch", minimum=1, maximum=MAX_BATCH)
        mem.get_gpu(self.gpu)


@dataclass(frozen=True)
class Breakdown:
    """What the figure shows for one :class:`Setting`, in bytes.

    Attributes:
        bits_per_weight: of the weight format, scales included.
        weights, kv_cache, overhead: the three parts of the bar (``overhead`` is
            ``needed - weights - kv_cache``, the rule of thumb's share).
        needed: ``weights * (1 + DEFAULT_OVERHEAD) + kv_cache``.
        capacity: the GPU's memory.
        fits: ``needed <= capacity``.
        smallest_gpu: the first GPU of :data:`quantlab.memory.GPUS` (smallest memory
            first) that holds it, or None.
        gib: the strings the figure prints (``memory.format_bytes(..., "GiB", 1)``) for
            ``weights``, ``kv_cache``, ``overhead``, ``needed`` and ``capacity``.
    """

    bits_per_weight: float
    weights: float
    kv_cache: float
    overhead: float
    needed: float
    capacity: float
    fits: bool
    smallest_gpu: Optional[str]
    gib: dict[str, str]


def breakdown(setting: Setting) -> Breakdown:
    """The figure's numbers for one setting, computed by :mod:`quantlab.memory`.

    Raises:
        TypeError: ``setting`` is not a :class:`Setting`.
    """
    if not isinstance(setting, Setting):
        raise TypeError(f"setting must be a Setting, got {type(setting).__name__}")
    shape = mem.get_model(setting.model)
    wf = WEIGHT_FORMATS[setting.weights]
    kv = shape.kv_cache_bytes(setting.context, setting.batch, KV_FORMATS[setting.kv][1])
    n = setting.n_params
    if wf.spec is not None:
        weights = mem.weight_bytes(n, wf.spec)
        needed = mem.required_bytes(n, wf.spec, extra_bytes=kv)
        fitting = mem.gpus_that_fit(n, wf.spec, extra_bytes=kv)
    else:  # the same formula with the GGUF block's bits per weight
        weights = n * wf.bits_per_weight / 8
        needed = weights * (1.0 + mem.DEFAULT_OVERHEAD) + kv
        fitting = [g for g in mem.GPUS if needed <= g.memory_bytes]
    capacity = mem.gpu_bytes(setting.gpu)
    overhead = needed - weights - kv
    parts = {"weights": weights, "kv_cache": kv, "overhead": overhead, "needed": needed, "capacity": capacity}
    return Breakdown(
        bits_per_weight=wf.bits_per_weight,
        weights=weights,
        kv_cache=kv,
        overhead=overhead,
        needed=needed,
        capacity=capacity,
        fits=needed <= capacity,
        smallest_gpu=fitting[0].name if fitting else None,
        gib={k: mem.format_bytes(max(v, 0.0), "GiB", 1) for k, v in parts.items()},
    )


def static_data(initial: Optional[Setting] = None) -> dict[str, Any]:
    """What the page embeds: the catalogs (models, formats with their bits per weight,
    KV formats, GPUs), the constants of the arithmetic and the first setting.

    Returns:
        ``{"models": [{"name", "n_params", "n_layers", "n_kv_heads", "head_dim"}],
        "weights": [{"key", "label", "group", "bpw", "gguf"}], "kv": [{"key", "label", "bits"}],
        "gpus": [{"name", "memory_gib", "memory_bytes", "kind"}], "contexts", "max_batch",
        "overhead", "gib", "initial": {...}}``.
    """
    if initial is None:
        initial = Setting()
    if not isinstance(initial, Setting):
        raise TypeError(f"initial must be a Setting, got {type(initial).__name__}")
    if initial.context not in CONTEXTS:
        raise ValueError(f"initial.context must be one of {CONTEXTS}, got {initial.context}")
    return {
        "models": [
            {
                "name": m.name,
                "n_params": m.n_params,
                "n_layers": m.n_layers,
                "n_kv_heads": m.n_kv_heads,
                "head_dim": m.head_dim,
            }
            for m in mem.MODELS
        ],
        "weights": [
            {"key": k, "label": w.label, "group": w.group, "bpw": w.bits_per_weight, "gguf": w.gguf}
            for k, w in WEIGHT_FORMATS.items()
        ],
        "kv": [
            {"key": k, "label": label, "bits": mem.kv_cache_bytes(1, 1, 1, 1, 1, spec) * 4}
            for k, (label, spec) in KV_FORMATS.items()
        ],
        "gpus": [
            {"name": g.name, "memory_gib": g.memory_gib, "memory_bytes": g.memory_bytes, "kind": g.kind}
            for g in mem.GPUS
        ],
        "contexts": list(CONTEXTS),
        "max_batch": MAX_BATCH,
        "overhead": mem.DEFAULT_OVERHEAD,
        "gib": mem.GiB,
        "initial": {
            "model": initial.model,
            "n_params": initial.n_params,
            "weights": initial.weights,
            "context": initial.context,
            "batch": initial.batch,
            "kv": initial.kv,
            "gpu": initial.gpu,
        },
    }


def _billions(n: float) -> str:
    """A parameter count in billions as the number box shows it (``6.74``, ``13``)."""
    return f"{n / 1e9:.6g}"


def static_html(root_id: str = "ql-fit", initial: Optional[Setting] = None) -> str:
    """The self-contained, kernel-free figure (an HTML fragment; see :mod:`._page`).

    Args:
        root_id: ``id`` of the figure's outer element (unique per page).
        initial: the setting shown first (default :class:`Setting` ``()``: Llama-2-7B in
            int4 g128, 4096 tokens, batch 1, fp16 KV cache, RTX 4090).

    Raises:
        TypeError, ValueError: a bad ``root_id`` or ``initial``.
    """
    rid = check_root_id(root_id)
    data = static_data(initial)
    ini = data["initial"]
    esc = html.escape

    def opt(value: str, label: str, selected: bool) -> str:
        return f'<option value="{esc(value)}"{" selected" if selected else ""}>{esc(label)}</option>'

    models = "".join(
        opt(m["name"], f"{m['name']} ({_billions(m['n_params'])}B)", m["name"] == ini["model"]) for m in data["models"]
    )
    groups: dict[str, list[str]] = {}
    for w in data["weights"]:
        label = f"{w['label']}: {w['bpw']:g} bits"
        groups.setdefault(w["group"], []).append(opt(w["key"], label, w["key"] == ini["weights"]))
    weights = "".join(f'<optgroup label="{esc(g)}">{"".join(o)}</optgroup>' for g, o in groups.items())
    kvs = "".join(opt(k["key"], f"{k['label']}: {k['bits']:g} bits", k["key"] == ini["kv"]) for k in data["kv"])
    gpus = "".join(
        opt(g["name"], f"{g['name']} ({g['memory_gib']:g} GiB)", g["name"] == ini["gpu"]) for g in data["gpus"]
    )
    ctx_index = CONTEXTS.index(ini["context"])
    cards = "".join(
        f'<div class="qlf-card qlf-part-{k}"><span class="k">{label}</span>'
        f'<span class="v" data-out="{k}">—</span></div>'
        for k, label in (
            ("weights", "Weights"),
            ("kv_cache", "KV cache"),
            ("overhead", f"Overhead ({100 * mem.DEFAULT_OVERHEAD:.0f} % of weights)"),
            ("needed", "Needed"),
            ("capacity", "Card memory"),
        )
    )
    body = (
        '<p class="qlf-lead">Choose a model, a format for its weights, how many tokens it keeps in '
        "its KV cache, and a GPU.</p>"
        '<div class="qlf-controls">'
        f'<label for="{rid}-model">Model<select id="{rid}-model" data-role="model">{models}</select></label>'
        f'<label for="{rid}-params">Parameters (billions)<input type="number" id="{rid}-params" '
        f'data-role="params" min="0.001" max="10000" step="any" value="{_billions(ini["n_params"])}" '
        'inputmode="decimal"></label>'
        f'<label for="{rid}-weights">Weight format'
        f'<select id="{rid}-weights" data-role="weights">{weights}</select></label>'
        "</div>"
        '<div class="qlf-controls">'
        f'<label for="{rid}-context" class="qlf-wide"><span>Context: <output data-out="context" for="{rid}-context">'
        f'{ini["context"]:,}</output> tokens</span><input type="range" id="{rid}-context" data-role="context" min="0" '
        f'max="{len(CONTEXTS) - 1}" step="1" value="{ctx_index}" aria-valuetext="{ini["context"]:,} tokens"></label>'
        f'<label for="{rid}-batch">Batch (sequences)<input type="number" id="{rid}-batch" data-role="batch" '
        f'min="1" max="{MAX_BATCH}" step="1" value="{ini["batch"]}"></label>'
        f'<label for="{rid}-kv">KV cache format<select id="{rid}-kv" data-role="kv">{kvs}</select></label>'
        f'<label for="{rid}-gpu">GPU<select id="{rid}-gpu" data-role="gpu">{gpus}</select></label>'
        "</div>"
        '<p class="qlf-verdict" data-out="verdict" aria-live="polite"></p>'
        '<svg data-role="bar" viewBox="0 0 760 120" role="img" aria-labelledby="' + rid + '-bar-desc">'
        f'<desc id="{rid}-bar-desc">Stacked bar of the memory needed (weights, KV cache, overhead) '
        "against the memory of the chosen GPU.</desc></svg>"
        f'<div class="qlf-cards">{cards}</div>'
        '<p class="qlf-note" data-out="shape"></p>'
        '<p class="qlf-foot">The arithmetic of <code>quantlab.memory</code> (<code>weight_bytes</code>, '
        "<code>kv_cache_bytes</code>, <code>required_bytes</code>); GPU memory in GiB (2<sup>30</sup> bytes), "
        "the unit cards are sold in. The overhead is a rule of thumb for the CUDA context, allocator and "
        "activations. The book's tests compare this page's numbers with quantlab's.</p>"
    )
    return figure_html(
        root_id=rid,
        name="fit",
        title="Does it fit?",
        body=body,
        data=data,
        label="Does it fit: memory for a model's weights, KV cache and overhead "
        "against the memory of a GPU, with the verdict",
    )
