"""Speed is a property of a machine: records of measurements, and the sentences they support.

A timing is true of one CPU, one engine version, one thread count and one moment. Between
two CPUs of the same cloud machine kind the chapter's speed-ups move by 2-3x and one
comparison (int8 against float32 matrix products) reverses. So the chapter never states a
measured speed as a fact about "quantization" in general. Instead:

* every measurement belongs to a :class:`SpeedRecord`: the machine (CPU model, instruction-set
  flags, cores, threads, engine versions, date, from :func:`machine_info`) and the values
  measured on it, in one run. A page builds one record for its own run and draws its figures,
  tables and sentences from that record only, so it can never mix two machines;
* the book stores reference records measured on named machines
  (``quantlab/data/speed_references.json``, written by ``scripts/measure_speed_reference.py``
  with the same functions the page calls), and shows them beside the reader's run;
* a sentence about a run is *chosen* by :func:`describe` from what the run measured (a CPU on
  which int8 is not faster reads a true sentence about that CPU, with the reason: no VNNI, a
  strong float32 unit, little bandwidth per core);
* a statement made in general is one of :data:`GENERAL_CLAIMS`, and the page asserts it holds on
  every stored reference (:func:`general_claims`), which is exact on any CPU;
* the reader's own timings are asserted only against bounds that a broken setup misses
  (:func:`sanity_problems`): finite, positive, batch 1 within a factor of the memory roofline,
  int8 and int4 no more than 20x faster than float32.

Values of a record (every key optional; JSON, so keys are strings):

* ``bandwidth``: ``{"read": GB/s, "copy": GB/s}``, one thread;
* ``peaks``: ``{"fp32 ORT": GFLOP/s, "int8 ORT": GOP/s, "fp32 torch": GFLOP/s}``, one thread,
  1024 x 1024 x 1024 products (ONNX Runtime's ``MatMul`` and ``MatMulInteger``; torch's sgemm);
* ``layer``: ``{shape: {format: {batch: seconds}}}``, shapes ``"4096x4096"`` and ``"576x1536"``,
  formats of :data:`quantlab.book.speed.SWEEP_FORMATS`;
* ``decode``: ``{threads: {model: tokens/s}}`` (SmolLM2-135M, greedy, KV cache, ONNX Runtime),
  ``decode_bandwidth``: ``{threads: GB/s}``, ``decode_mb_per_token``: ``{model: MB}``;
* ``encoder``: ``{"fp32" | "int8": {sentences per call: sentences/s}}`` (MiniLM, 32 tokens);
* ``policy``: ``{hidden: {variant: seconds}}``, one action at batch 1;
* ``peer``: ``{engine: {kind: {threads: tokens/s}}}``, llama.cpp beside quantlab's decoder.

Taught in: chapters/04c_speed.ipynb (Where the speed comes from), section "Whose machine?".
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

__all__ = [
    "SpeedRecord",
    "machine_info",
    "machine_label",
    "load_references",
    "save_reference",
    "REFERENCES_FILE",
    "SAME",
    "verdict",
    "describe",
    "reasons",
    "GENERAL_CLAIMS",
    "general_claims",
    "claim_range",
    "sanity_problems",
    "DECODE_MODELS",
    "BYTE_RATIOS",
]

PathLike = Union[str, os.PathLike]

#: Package data file holding the reference records.
REFERENCES_FILE = "speed_references.json"

#: Two timings within this factor of each other are "about as fast": the spread of repeated
#: medians on a shared 2-core machine (measured: 5-12% between runs a minute apart).
SAME = 1.15

#: The language-model variants the speed page decodes, in display order.
DECODE_MODELS: tuple[str, ...] = ("fp32", "int8 g64", "int4 g64, head fp32", "int4 g64, head int4")

#: How the sentences name the decoded models.
DECODE_LABELS: dict[str, str] = {
    "fp32": "float32",
    "int8 g64": "int8",
    "int4 g64, head fp32": "int4 with a float32 head",
    "int4 g64, head int4": "int4 throughout",
}

#: Bytes of a float32 weight over the bytes of each sweep format's weight, float32 scales
#: included (what ONNX Runtime reads): int8 per channel of a 4096-wide row 8 + 32/4096 bits,
#: int4 in groups of 32 4 + 32/32 = 5 bits.
BYTE_RATIOS: dict[str, float] = {"int8 ORT": 32 / (8 + 32 / 4096), "int4 ORT": 32 / 5}

_ISA_NAMES = (("amx_int8", "AMX"), ("avx512_vnni", "VNNI"), ("avx_vnni", "VNNI"))


# --------------------------------------------------------------------------- records


def _key(k: Any) -> str:
    return str(k)


@dataclass
class SpeedRecord:
    """One run's measurements on one machine.

    Attributes:
        machine: :func:`machine_info`'s dict (``cpu``, ``flags``, ``cores``, ``threads``,
            ``engines``, ``date``; ``label`` optional).
        values: measurement name -> nested dict of numbers (see the module docstring).
        note: free text (how the run was made: quiet or busy machine, ...).
    """

    machine: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.machine, Mapping):
            raise TypeError(f"machine must be a dict, got {type(self.machine).__name__}")
        for key in ("cpu", "flags"):
            if key not in self.machine:
                raise ValueError(f"machine must have a {key!r} entry, got keys {sorted(self.machine)}")
        if not isinstance(self.values, Mapping):
            raise TypeError(f"values must be a dict, got {type(self.values).__name__}")
        self.machine = dict(self.machine)
        self.values = json.loads(json.dumps(self.values))  # plain JSON: string keys, own copy

    @property
    def label(self) -> str:
        """A short name of the machine: :func:`machine_label`."""
        return self.machine.get("label") or machine_label(self.machine)

    @property
    def flags(self) -> set[str]:
        return set(self.machine.get("flags", ()))

    def put(self, name: str, value: Any) -> None:
        """Store a measurement (converted to plain JSON: tuple keys are not allowed, int keys
        become strings)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.values[name] = json.loads(json.dumps(value, default=float))

    def get(self, *path: Any, default: Any = None) -> Any:
        """``values[path[0]][path[1]]...`` with keys as strings, or ``default`` if any is missing."""
        node: Any = self.values
        for k in path:
            if not isinstance(node, Mapping) or _key(k) not in node:
                return default
            node = node[_key(k)]
        return node

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "values": self.values, "note": self.note}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpeedRecord:
        if not isinstance(data, Mapping) or "machine" not in data:
            raise ValueError("a speed record needs a 'machine' entry")
        return cls(machine=dict(data["machine"]), values=dict(data.get("values", {})), note=str(data.get("note", "")))


def machine_info(threads: int = 1, cpuinfo: PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """Describe this machine: CPU model, the flags of :data:`quantlab.book.speed.ISA_FLAGS` it has,
    logical cores, the thread count of the run, engine versions and today's date (UTC).

    Args:
        threads: threads the measurements use (recorded, not set).
        cpuinfo: where to read the CPU's model and flags.

    Returns:
        ``{"cpu", "flags" (list), "cores", "threads", "engines": {"python", "torch", "onnxruntime",
        "numpy"}, "date"}``.
    """
    from .speed import cpu_flags

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    cpu = cpu_flags(cpuinfo)
    engines = {"python": platform.python_version()}
    for mod in ("torch", "onnxruntime", "numpy"):
        try:
            engines[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover - every pinned environment has them
            engines[mod] = None
    return {
        "cpu": cpu["model"],
        "flags": [f for f, on in cpu["flags"].items() if on],
        "cores": os.cpu_count() or 1,
        "threads": threads,
        "engines": engines,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
    }


def machine_label(machine: Mapping[str, Any]) -> str:
    """``"Intel Xeon, AVX-512 + VNNI + AMX, 2 cores"``: vendor and family from the CPU model
    string, the widest vector unit and the integer-matrix extensions, the core count."""
    cpu = str(machine.get("cpu", "unknown CPU"))
    words = [
        w
        for w in cpu.replace("(R)", "").replace("(TM)", "").replace("(tm)", "").split()
        if w.lower() not in ("processor", "cpu", "@")
    ]
    name = " ".join(words[:2]) if words else "unknown CPU"
    flags = set(machine.get("flags", ()))
    width = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    extra = []
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        extra.append("VNNI")
    if "amx_int8" in flags or "amx_tile" in flags:
        extra.append("AMX")
    isa = " + ".join([width] + extra) if extra else f"{width} only" if width != "no AVX2" else width
    cores = machine.get("cores")
    return f"{name}, {isa}" + (f", {cores} cores" if cores else "")


def _reference_path() -> Path:
    return Path(str(resources.files("quantlab").joinpath("data", REFERENCES_FILE)))


def load_references(path: Optional[PathLike] = None) -> list[SpeedRecord]:
    """The stored reference records (oldest first), from ``quantlab/data/speed_references.json``
    or ``path``."""
    p = Path(path) if path is not None else _reference_path()
    if not p.is_file():
        raise ValueError(f"no reference file at {str(p)!r}")
    data = json.loads(p.read_text())
    if not isinstance(data, Mapping) or not isinstance(data.get("records"), list):
        raise ValueError(f"{str(p)!r} must hold {{'records': [...]}}")
    return [SpeedRecord.from_json(r) for r in data["records"]]


def save_reference(record: SpeedRecord, path: Optional[PathLike] = None, replace_cpu: bool = True) -> Path:
    """Add ``record`` to the reference file (replacing an earlier record of the same CPU model
    and core count if ``replace_cpu``), sorted by date. Returns the path written."""
    if not isinstance(record, SpeedRecord):
        raise TypeError(f"record must be a SpeedRecord, got {type(record).__name__}")
    p = Path(path) if path is not None else _reference_path()
    records = load_references(p) if p.is_file() else []
    if replace_cpu:
        same = (record.machine.get("cpu"), record.machine.get("cores"))
        records = [r for r in records if (r.machine.get("cpu"), r.machine.get("cores")) != same]
    records.append(record)
    records.sort(key=lambda r: str(r.machine.get("date", "")))
    p.write_text(json.dumps({"records": [r.to_json() for r in records]}, indent=1, sort_keys=False) + "\n")
    return p


# --------------------------------------------------------------------------- verdicts


def verdict(ratio: float, same: float = SAME) -> str:
    """``"faster"`` if ``ratio >= same``, ``"slower"`` if ``ratio <= 1 / same``, else
    ``"about as fast"``; ``ratio`` is speed of the candidate over speed of the baseline."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"ratio must be a positive finite number, got {ratio!r}")
    if same <= 1:
        raise ValueError(f"same must be > 1, got {same!r}")
    if ratio >= same:
        return "faster"
    if ratio <= 1 / same:
        return "slower"
    return "about as fast"


def _x(r: float) -> str:
    return f"{r:.1f}×" if r < 9.95 else f"{r:.0f}×"


def _times(ratio: float, than: str = "") -> str:
    """``2.3× faster[ than X]``, ``1.4× slower[ than X]`` or ``about as fast[ as X] (1.05×)``."""
    v = verdict(ratio)
    if v == "faster":
        return f"{_x(ratio)} faster" + (f" than {than}" if than else "")
    if v == "slower":
        return f"{_x(1 / ratio)} slower" + (f" than {than}" if than else "")
    return "about as fast" + (f" as {than}" if than else "") + f" ({ratio:.2f}×)"


def _others(record: SpeedRecord, references: Sequence[SpeedRecord]) -> list[SpeedRecord]:
    """The references other than ``record`` itself (the same object, or the same measurements)."""
    return [r for r in references if r is not record and (r.machine, r.values) != (record.machine, record.values)]


def _vnni(record: SpeedRecord) -> bool:
    return bool(record.flags & {"avx512_vnni", "avx_vnni"})


def reasons(record: SpeedRecord, references: Sequence[SpeedRecord] = ()) -> dict[str, str]:
    """The facts about a machine that explain its speed-ups, as clauses for :func:`describe`.

    * ``"int8_isa"``: what the CPU offers 8-bit products (VNNI, AMX, or AVX2 alone);
    * ``"float_unit"``: set when this machine's float32 peak is at least 1.25x the lowest of the
      other records', naming both (a strong float unit leaves integers less to win);
    * ``"bandwidth"``: set when one thread streams at most 0.8x the highest of the others (less
      bandwidth per core: a step spends more of its time waiting for memory, so every kernel
      comes closer to its roofline).
    """
    out: dict[str, str] = {}
    flags = record.flags
    if "amx_int8" in flags and _vnni(record):
        out["int8_isa"] = (
            "it has VNNI, which does four 8-bit multiply-adds into a 32-bit sum in one "
            "instruction (and AMX, a matrix unit for 8-bit tiles)"
        )
    elif _vnni(record):
        out["int8_isa"] = "it has VNNI, which does four 8-bit multiply-adds into a 32-bit sum in one instruction"
    elif "avx2" in flags:
        out["int8_isa"] = (
            "it has no VNNI: with AVX2 alone an 8-bit multiply-add takes two instructions and sums pairs in 16 bits"
        )
    else:
        out["int8_isa"] = "it has neither AVX2 nor VNNI"
    others = _others(record, references)
    mine = record.get("peaks", "fp32 ORT")
    theirs = [(r.get("peaks", "fp32 ORT"), r) for r in others if r.get("peaks", "fp32 ORT")]
    if mine and theirs:
        low, low_rec = min(theirs, key=lambda t: t[0])
        if mine >= 1.25 * low:
            out["float_unit"] = (
                f"its float32 unit is strong: {mine:.0f} GFLOP/s on one thread, against "
                f"{low:.0f} on the {low_rec.label}"
            )
    bw = _bandwidth(record)
    theirs_bw = [(_bandwidth(r), r) for r in others if _bandwidth(r)]
    if bw and theirs_bw:
        high, high_rec = max(theirs_bw, key=lambda t: t[0])
        if bw <= 0.8 * high:
            out["bandwidth"] = (
                f"one core streams only {bw:.0f} GB/s from memory here, against {high:.0f} GB/s on the {high_rec.label}"
            )
    return out


def _bandwidth(record: SpeedRecord) -> Optional[float]:
    bw = record.get("bandwidth")
    if not isinstance(bw, Mapping) or not bw:
        return None
    vals = [v for v in bw.values() if isinstance(v, (int, float)) and v > 0]
    return max(vals) if vals else None


def _roof_shares(record: SpeedRecord) -> Optional[tuple[float, float]]:
    """Share of the memory roofline reached on one thread by float32 and by int4 throughout."""
    d1, bw1 = record.get("decode", 1) or {}, record.get("decode_bandwidth", 1)
    mb = record.get("decode_mb_per_token") or {}
    a, b = "fp32", "int4 g64, head int4"
    if not (bw1 and d1.get(a) and d1.get(b) and mb.get(a) and mb.get(b)):
        return None
    return d1[a] * mb[a] / (bw1 * 1e3), d1[b] * mb[b] / (bw1 * 1e3)


def _layer(record: SpeedRecord, shape: str, fmt: str, batch: int) -> Optional[float]:
    return record.get("layer", shape, fmt, batch)


def describe(record: SpeedRecord, references: Sequence[SpeedRecord] = ()) -> dict[str, str]:
    """Sentences (Markdown) about one record, each chosen from what it measured.

    Keys (a key is absent when the record lacks the measurements it needs):

    * ``"peaks"``: int8 against float32 matrix products in ONNX Runtime (same engine);
    * ``"batch1"``: the 4096 x 4096 layer at batch 1, int8 and int4 against float32, and the
      ratio of bytes;
    * ``"int4_vs_int8"``: the same layer at batch 1, int4 against int8;
    * ``"batch64"``: how much of the int4 advantage is left at batch 64;
    * ``"decode"``: SmolLM2 tokens/s per format on one thread, and the share of the roofline;
    * ``"threads"``: a second thread, float32 and int4;
    * ``"encoder"``: MiniLM int8 against float32 at 1 and 32 sentences per call;
    * ``"policy"``: the CartPole policy, ONNX Runtime against eager torch and int8 against
      float32, and the 2048-wide policy;
    * ``"peer"``: llama.cpp against quantlab's decoder per kind and thread count;
    * ``"reference"``: whether a reference machine has this record's CPU, and what a difference
      from it means.

    Args:
        record: the run described.
        references: other machines, for the comparisons of :func:`reasons`.
    """
    if not isinstance(record, SpeedRecord):
        raise TypeError(f"record must be a SpeedRecord, got {type(record).__name__}")
    why = reasons(record, references)
    out: dict[str, str] = {}

    fp32, int8 = record.get("peaks", "fp32 ORT"), record.get("peaks", "int8 ORT")
    if fp32 and int8:
        ratio = int8 / fp32
        v = verdict(ratio)
        head = (
            f"ONNX Runtime multiplies 8-bit integers at {int8:.0f} GOP/s and float32 numbers at {fp32:.0f} "
            f"GFLOP/s: int8 products are {_times(ratio, 'float32 ones')}"
        )
        if v == "faster" or not _vnni(record):
            tail = f", because this CPU {why['int8_isa'][3:] if why['int8_isa'].startswith('it ') else why['int8_isa']}"
        else:
            tail = (
                ". This CPU has VNNI, but "
                + why.get("float_unit", "its float32 kernel keeps pace with it")
                + ", so integer arithmetic has little to win"
            )
        out["peaks"] = head + tail + "."

    big = "4096x4096"
    f1, i8, i4 = (_layer(record, big, f, 1) for f in ("fp32 ORT", "int8 ORT", "int4 ORT"))
    if f1 and i8 and i4:
        s8, s4 = f1 / i8, f1 / i4
        parts = []
        for name, s in (("int8", s8), ("int4", s4)):
            ratio = BYTE_RATIOS[f"{name} ORT"]
            rel = "more than" if s > 1.05 * ratio else "less than" if s < 0.95 * ratio else "about"
            parts.append(f"{name} is {_times(s)} ({rel} the {ratio:.1f}× fewer bytes it reads)")
        text = "At batch 1, against float32, " + " and ".join(parts) + "."
        below = [n for n, sp in (("int8", s8), ("int4", s4)) if sp < 0.95 * BYTE_RATIOS[f"{n} ORT"]]
        beyond = [n for n, sp in (("int8", s8), ("int4", s4)) if sp > 1.05 * BYTE_RATIOS[f"{n} ORT"]]
        if below:
            text += (
                f" Below the ratio of bytes ({' and '.join(below)}): an integer kernel does more per byte than a "
                "float product, quantizing the activations and unpacking and scaling the codes."
            )
        if beyond:
            text += (
                f" Beyond it ({' and '.join(beyond)}): part of the smaller weight stayed in the CPU's caches "
                "between calls, so fewer of its bytes came from memory."
            )
        out["batch1"] = text
        r = i8 / i4
        v = verdict(r)
        if v == "faster":
            out["int4_vs_int8"] = f"int4 runs {_times(r, 'int8')} at batch 1: half the bytes, and the bytes decide."
        elif v == "about as fast":
            out["int4_vs_int8"] = (
                f"int4 is {_times(r, 'int8')} at batch 1: half the bytes, but unpacking 4-bit "
                "codes and applying a scale per 32 weights costs this CPU about what the "
                "bytes save."
            )
        else:
            out["int4_vs_int8"] = (
                f"int4 is {_times(r, 'int8')} at batch 1: unpacking 4-bit codes and a scale "
                "per 32 weights cost this CPU more than the bytes save."
            )
    f64, i64 = _layer(record, big, "fp32 ORT", 64), _layer(record, big, "int4 ORT", 64)
    if f1 and i4 and f64 and i64:
        out["batch64"] = (
            f"At batch 64 int4 is {_times(f64 / i64, 'float32')}, against {_x(f1 / i4)} at batch 1: "
            "each weight read now serves 64 inputs, and the arithmetic, not the bytes, decides."
        )

    d1 = record.get("decode", 1)
    if isinstance(d1, Mapping) and d1.get("fp32"):
        base = d1["fp32"]
        items = [f"{DECODE_LABELS.get(m, m)} {d1[m]:.0f} ({_x(d1[m] / base)})" for m in DECODE_MODELS[1:] if d1.get(m)]
        text = f"On one thread float32 generates {base:.1f} tokens/s"
        text += (", " + ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] if items else "") + "."
        roof = _roof_shares(record)
        if roof:
            text += (
                f" Float32 reaches {roof[0]:.0%} of its memory roofline, int4 throughout {roof[1]:.0%}: the fewer "
                "bytes a step reads, the larger the share of the unpacking, scaling and per-kernel costs the "
                "roofline does not count."
            )
            if roof[0] > 1:
                text += (
                    " (More than 100%: the steps streamed faster than the 256 MiB read and copy measured "
                    "beside them, which on a shared machine vary with the load of the moment; the roofline is a "
                    "bound from one measurement, not a stopwatch.)"
                )
            fast = [
                r
                for r in _others(record, references)
                if (_bandwidth(r) or 0) >= 1.25 * (_bandwidth(record) or 0) and _roof_shares(r)
            ]
            if "bandwidth" in why and fast and all(roof[1] > _roof_shares(r)[1] for r in fast):
                text += (
                    f" And {why['bandwidth']}: the less bandwidth per core, the longer a step waits for its "
                    "bytes, and the closer the quantized kernels come to their roofline."
                )
        out["decode"] = text
    d2 = record.get("decode", 2)
    if isinstance(d1, Mapping) and isinstance(d2, Mapping) and d1.get("fp32") and d2.get("fp32"):
        parts = []
        for m in ("fp32", "int4 g64, head int4"):
            if d1.get(m) and d2.get(m):
                parts.append(f"{'float32' if m == 'fp32' else 'int4'} {_x(d2[m] / d1[m])}")
        best = max(d2[m] / d1[m] for m in d1 if d1.get(m) and d2.get(m))
        text = "A second thread gives " + " and ".join(parts) + " one thread's tokens/s"
        if best > 2:
            text += (
                " (more than two cores can give: the machine was busier while one thread ran than while two "
                "did, a shared machine's load changes from minute to minute)."
            )
        elif best < 1.5:
            text += (
                ": the two threads must meet at every kernel call of a step, hundreds per token, so a small "
                "model at batch 1 gains little."
            )
        else:
            text += "."
        out["threads"] = text

    e32, e8 = record.get("encoder", "fp32"), record.get("encoder", "int8")
    if isinstance(e32, Mapping) and isinstance(e8, Mapping):
        parts = [
            f"with {b} sentence{'s' if str(b) != '1' else ''} per call int8 is {_times(e8[b] / e32[b], 'float32')}"
            for b in e32
            if b in e8
        ]
        text = "For MiniLM in ONNX Runtime, " + "; ".join(parts) + "."
        if "peaks" in out:
            ratio = int8 / fp32 if fp32 and int8 else None
            if ratio is not None:
                text += (
                    " An encoder multiplies each weight by every token of a sentence, so it follows the "
                    "arithmetic peaks, and int8 products are " + _times(ratio, "float32 ones") + " on this CPU."
                )
        out["encoder"] = text

    p64, p2k = record.get("policy", 64), record.get("policy", 2048)
    if isinstance(p64, Mapping) and p64.get("fp32 ORT") and p64.get("fp32 torch"):
        text = (
            f"One action of the CartPole policy takes {1e6 * p64['fp32 torch']:.0f} µs in eager torch and "
            f"{1e6 * p64['fp32 ORT']:.0f} µs in ONNX Runtime float32"
        )
        if p64.get("int8 ORT"):
            text += f"; int8 in ONNX Runtime is {_times(p64['fp32 ORT'] / p64['int8 ORT'], 'float32')}"
        text += "."
        if isinstance(p2k, Mapping) and p2k.get("fp32 ORT") and p2k.get("int8 ORT"):
            text += (
                f" With hidden layers of 2048 (17 MB of float32 weights) int8 is "
                f"{_times(p2k['fp32 ORT'] / p2k['int8 ORT'], 'float32')}."
            )
        out["policy"] = text

    same = [
        r
        for r in _others(record, references)
        if r.machine.get("cpu") == record.machine.get("cpu") and r.machine.get("cores") == record.machine.get("cores")
    ]
    if same:
        r = same[-1]
        out["reference"] = (
            f"This run's machine has the same CPU as the reference {r.label} (measured on "
            f"{r.machine.get('date', '?')} on a quiet machine). Where their numbers differ, the "
            "difference is this machine's load while the page was built and the spread between runs "
            "of a shared machine, not the CPU."
        )
    else:
        out["reference"] = (
            "No reference machine has this run's CPU, so its numbers show one more machine beside the references."
        )

    peer = record.get("peer")
    if isinstance(peer, Mapping) and "llama.cpp" in peer and "quantlab" in peer:
        rows = []
        for kind in peer["llama.cpp"]:
            for t in peer["llama.cpp"][kind]:
                a, b = peer["llama.cpp"][kind][t], record.get("peer", "quantlab", kind, t)
                if a and b:
                    rows.append(
                        f"{kind} on {t} thread{'s' if str(t) != '1' else ''}: llama.cpp is "
                        f"{_times(a / b, 'quantlab')} ({a:.0f} against {b:.0f} tokens/s)"
                    )
        if rows:
            out["peer"] = "; ".join(rows) + "."
    return out


# --------------------------------------------------------------------------- general claims


#: Statements the chapter makes in general about speed, each held to every reference machine.
#: name -> (statement, the record values it needs).
GENERAL_CLAIMS: dict[str, str] = {
    "batch1_int_faster": "at batch 1 a 4096 × 4096 layer runs at least 1.5× faster in int8 and in int4 than "
    "in float32 (ONNX Runtime, one thread)",
    "batch_shrinks": "the int4 advantage shrinks with the batch: smaller at batch 64 than at batch 1",
    "eager_slower": "eager torch's dequantize-then-multiply int4 layer is slower than the float32 layer",
    "decode_int4_faster": "SmolLM2 with every layer in int4 generates at least 1.5× float32's tokens/s",
    "decode_head_helps": "quantizing the output head too makes int4 generation faster",
    "roofline_gap": "the int4 decoder reaches a smaller share of its memory roofline than float32",
    "policy_framework": "a 4,600-weight policy acts faster in ONNX Runtime than in eager torch",
    "wide_policy_int8": "a policy with hidden layers of 2048 acts faster in int8 than in float32 (ONNX Runtime)",
}


def general_claims(record: SpeedRecord) -> dict[str, Optional[bool]]:
    """Whether each of :data:`GENERAL_CLAIMS` holds on ``record`` (None: not measured there)."""
    out: dict[str, Optional[bool]] = {k: None for k in GENERAL_CLAIMS}
    big = "4096x4096"
    f1, i8, i4, e1, t1 = (
        _layer(record, big, f, 1) for f in ("fp32 ORT", "int8 ORT", "int4 ORT", "int4 eager", "fp32 torch")
    )
    if f1 and i8 and i4:
        out["batch1_int_faster"] = f1 / i8 >= 1.5 and f1 / i4 >= 1.5
    f64, i64 = _layer(record, big, "fp32 ORT", 64), _layer(record, big, "int4 ORT", 64)
    if f1 and i4 and f64 and i64:
        out["batch_shrinks"] = f64 / i64 < f1 / i4
    if e1 and t1:
        out["eager_slower"] = e1 > t1
    d1 = record.get("decode", 1) or {}
    if d1.get("fp32") and d1.get("int4 g64, head int4"):
        out["decode_int4_faster"] = d1["int4 g64, head int4"] >= 1.5 * d1["fp32"]
    if d1.get("int4 g64, head fp32") and d1.get("int4 g64, head int4"):
        out["decode_head_helps"] = d1["int4 g64, head int4"] > d1["int4 g64, head fp32"]
    roof = _roof_shares(record)
    if roof:
        out["roofline_gap"] = roof[1] < roof[0]
    p64, p2k = record.get("policy", 64) or {}, record.get("policy", 2048) or {}
    if p64.get("fp32 ORT") and p64.get("fp32 torch"):
        out["policy_framework"] = p64["fp32 ORT"] < p64["fp32 torch"]
    if p2k.get("fp32 ORT") and p2k.get("int8 ORT"):
        out["wide_policy_int8"] = p2k["int8 ORT"] < p2k["fp32 ORT"]
    return out


def claim_range(
    records: Iterable[SpeedRecord], *path: Any, over: Optional[Sequence[Any]] = None
) -> tuple[float, float]:
    """The smallest and largest of a value (or of ``value / value_over``) across records that have it.

    ``claim_range(refs, "layer", "4096x4096", "fp32 ORT", 1, over=("layer", "4096x4096", "int4 ORT", 1))``
    gives the range of the batch-1 int4 speed-up over the references, for a sentence such as
    "2.6-4.9× faster on the reference machines".

    Raises:
        ValueError: no record has the value.
    """
    vals = []
    for r in records:
        a = r.get(*path)
        if a is None:
            continue
        if over is not None:
            b = r.get(*over)
            if not b:
                continue
            a = a / b
        vals.append(float(a))
    if not vals:
        raise ValueError(f"no record has {path!r}")
    return min(vals), max(vals)


# --------------------------------------------------------------------------- sanity bounds


def _positive_numbers(node: Any, where: str, problems: list[str]) -> None:
    if isinstance(node, Mapping):
        for k, v in node.items():
            _positive_numbers(v, f"{where}/{k}", problems)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _positive_numbers(v, f"{where}/{i}", problems)
    elif isinstance(node, bool) or node is None or isinstance(node, str):
        return
    elif isinstance(node, (int, float)) and (not math.isfinite(node) or node <= 0):
        problems.append(f"{where} is {node!r}, not a positive finite number")


def sanity_problems(record: SpeedRecord) -> list[str]:
    """Bounds that any working setup meets on any CPU, quiet or busy; a broken one misses them.

    * every measured number is positive and finite;
    * the float32 4096 x 4096 layer at batch 1 takes between 1/10 and 10 times the time of
      reading its 67 MB at the measured bandwidth (it is memory-bound everywhere; a factor of
      10 covers caches, a busy machine and a slow kernel, not a wrong shape);
    * int8 and int4 at batch 1 no more than 20x faster than float32 (the bytes shrink 4-6.4x).

    Returns:
        A list of problems (empty: the record is plausible).
    """
    problems: list[str] = []
    _positive_numbers(record.values, "values", problems)
    bw = _bandwidth(record)
    f1 = _layer(record, "4096x4096", "fp32 ORT", 1)
    if bw and f1:
        predicted = 4096 * 4096 * 4 / (bw * 1e9)
        if not 0.1 <= f1 / predicted <= 10:
            problems.append(
                f"the float32 layer at batch 1 took {f1 * 1e3:.2f} ms, {f1 / predicted:.1f}x the "
                f"{predicted * 1e3:.2f} ms of reading its weight at {bw:.1f} GB/s"
            )
    for fmt in ("int8 ORT", "int4 ORT"):
        q = _layer(record, "4096x4096", fmt, 1)
        if f1 and q and f1 / q > 20:
            problems.append(f"{fmt} at batch 1 is {f1 / q:.0f}x faster than float32, more than fewer bytes explain")
    return problems
