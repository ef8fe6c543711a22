"""Write a quantized model to a GGUF file that llama.cpp and transformers can load.

:mod:`quantlab.gguf_blocks` encodes one weight matrix as GGUF blocks; this module writes a
whole model: every 2-D weight encoded with quantlab's own encoder in the kind you choose
(per tensor if you like), the 1-D tensors (norm weights) as F32 as llama.cpp does, and the
metadata the architecture needs -- hyperparameters, tokenizer, chat template -- copied from
a *template* GGUF file of the same model (by default the shipped SmolLM2-135M-Instruct file,
:func:`quantlab.deploy.shipped.smollm_gguf_path`).

**The file** (GGUF version 3, little-endian), in four parts::

    header        magic b"GGUF", version (uint32), tensor count and KV count (uint64 each)
    KV metadata   key (string), value type (uint32), value: e.g. general.architecture =
                  "llama", llama.block_count = 30, tokenizer.ggml.tokens = [49152 strings]
    tensor infos  per tensor: name, n_dims, dims ne[0], ne[1], ... (uint64 each), type
                  (GGMLQuantizationType, e.g. Q4_0 = 2), offset of its data
    tensor data   after padding to the alignment (general.alignment, default 32 bytes),
                  each tensor's bytes in the order of the infos, each padded to the alignment

The dims are stored **reversed** with respect to numpy/torch: ``ne[0]`` is the row length
(the number of columns, the dimension the blocks run along), so a PyTorch ``Linear`` weight
of shape ``(out_features, in_features)`` is stored as ``ne = [in_features, out_features]``.
:class:`gguf.GGUFWriter` does the reversal: ``add_tensor(name, data, raw_dtype=...)`` takes
the quantized bytes as a uint8 array of shape ``(rows, bytes_per_row)`` and derives the
logical shape ``(rows, row_length)`` itself (``gguf.quants.quant_shape_from_byte_shape``);
passing the logical shape as ``raw_shape`` with uint8 data would convert it a second time.

**Kinds and fallbacks.** A kind is one of :data:`quantlab.gguf_blocks.KINDS` (``"q8_0"``,
``"q4_0"``, ``"q4_1"``, ``"q5_0"``, ``"q5_1"``, ``"mxfp4"``, ``"tq1_0"``, ``"tq2_0"``,
``"q4_k"``, ``"q6_k"``) or ``"f16"``/``"f32"`` (unquantized). A row must be a whole number of
blocks. For the 256-weight kinds, a tensor whose rows are not a multiple of 256 (SmolLM2's
576-wide rows) is written, as llama.cpp's quantizer does, in the fallback kind
:data:`quantlab.gguf_blocks.FALLBACK` (Q4_K -> Q5_0, Q6_K -> Q8_0, TQ1_0/TQ2_0 -> Q4_0), or
F16 if the row is not a multiple of 32 either; the result lists every such substitution.
For the 32-weight kinds llama.cpp has no fallback and neither has :func:`write_gguf`: it
raises ``ValueError`` naming the tensor.

**From a PyTorch model.** transformers' LLaMA layout differs from GGUF's in names
(``model.layers.0.self_attn.q_proj.weight`` is ``blk.0.attn_q.weight``) and in the order of
the rows of the query and key projections: HF's rotary embedding rotates the pairs
``(i, i + d/2)`` of each head (``rotate_half``), llama.cpp's the adjacent pairs
``(2i, 2i + 1)``, so llama.cpp's converter permutes the rows of ``W_q`` and ``W_k`` within
each head (:func:`permute_qk`) and transformers undoes it when it loads a GGUF
(:func:`unpermute_qk`). :func:`llama_tensors_from_hf` applies both mappings, so a
quantlab-quantized SmolLM2 (fake-quantized weights, or :class:`~quantlab.nn.QuantizedLinear`
layers) can be exported; tensors read from a GGUF file are already in GGUF's layout. The
mappings live in :mod:`quantlab.deploy.gguf_llama` and are re-exported here.

Example::

    from quantlab.gguf_export import export_smollm
    result = export_smollm(None, "smollm2-q4_0.gguf", kind="q4_0")  # from the shipped file
    print(result.summary())
    # transformers: AutoModelForCausalLM.from_pretrained(folder, gguf_file="smollm2-q4_0.gguf")

Taught in: chapters/04b_language_model.ipynb.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from collections import Counter
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Union

import numpy as np
import torch

from ..core import gguf_blocks
from ..core._backend import as_tensor
from .gguf_llama import (
    gguf_name_to_hf,
    hf_name_to_gguf,
    llama_tensors_from_hf,
    llama_tensors_to_hf,
    permute_qk,
    unpermute_qk,
)
from .shipped import smollm_gguf_path

if TYPE_CHECKING:
    import gguf

__all__ = [
    "FLOAT_KINDS",
    "EXPORT_KINDS",
    "FILE_TYPES",
    "DEFAULT_KEEP",
    "QUANTIZED_BY",
    "GGUFExport",
    "write_gguf",
    "export_smollm",
    "read_gguf_tensors",
    "llama_tensors_from_hf",
    "llama_tensors_to_hf",
    "hf_name_to_gguf",
    "gguf_name_to_hf",
    "permute_qk",
    "unpermute_qk",
]

FLOAT_KINDS = ("f32", "f16")
"""Unquantized kinds: float32 (4 bytes per weight) and IEEE half precision (2 bytes)."""

EXPORT_KINDS = gguf_blocks.KINDS + FLOAT_KINDS
"""Every kind :func:`write_gguf` writes: the block kinds of :mod:`quantlab.gguf_blocks`
plus ``"f32"`` and ``"f16"``."""

FILE_TYPES = {
    "f32": 0,  # ALL_F32
    "f16": 1,  # MOSTLY_F16
    "q4_0": 2,  # MOSTLY_Q4_0
    "q4_1": 3,  # MOSTLY_Q4_1
    "q8_0": 7,  # MOSTLY_Q8_0
    "q5_0": 8,  # MOSTLY_Q5_0
    "q5_1": 9,  # MOSTLY_Q5_1
    "q4_k": 14,  # MOSTLY_Q4_K_S: Q4_K throughout, no Q6_K mix
    "q6_k": 18,  # MOSTLY_Q6_K
    "tq1_0": 36,  # MOSTLY_TQ1_0
    "tq2_0": 37,  # MOSTLY_TQ2_0
    "mxfp4": 38,  # MOSTLY_MXFP4_MOE, the only llama.cpp file type for MXFP4
}
"""``general.file_type`` (llama.cpp's ``llama_ftype``, ``gguf.LlamaFileType``) written for
each ``default_kind``: like ``llama-quantize``, the file type names the kind that was asked
for; tensors kept in another kind or written in a fallback kind do not change it."""

DEFAULT_KEEP: Mapping[str, str] = MappingProxyType({"token_embd.weight": "q8_0"})
""":func:`export_smollm`'s default exceptions: the token embeddings stay Q8_0, as in the
shipped file (tied embeddings are also the output layer, where 4 bits cost the most)."""

QUANTIZED_BY = "quantlab"
"""Value of the ``general.quantized_by`` field of every file written here (next to
``quantlab.version``)."""

_QUANT_VERSION = 2  # GGML_QNT_VERSION: the block layouts of gguf_blocks
_SKIPPED_KEYS = ("general.architecture",)  # written by GGUFWriter itself, first
_PATTERN_CHARS = re.compile(r"[*?\[]")
_BLOCK = re.compile(r"^blk\.(\d+)\.", re.ASCII)

PathLike = Union[str, "os.PathLike[str]"]
Template = Union[str, "os.PathLike[str]", "gguf.GGUFReader", None]
"""A GGUF file: its path, an open ``gguf.GGUFReader``, or None for the shipped SmolLM2 file."""


# --------------------------------------------------------------------------- reading


def _reader(template: Template) -> gguf.GGUFReader:
    """``template`` as a :class:`gguf.GGUFReader` (None: the shipped SmolLM2 file)."""
    import gguf

    if isinstance(template, gguf.GGUFReader):
        return template
    if template is None:
        template = smollm_gguf_path()
    if not isinstance(template, (str, os.PathLike)):
        raise TypeError(f"template must be a GGUF path, a gguf.GGUFReader or None, got {type(template).__name__}")
    if not Path(template).is_file():
        raise ValueError(f"template must be an existing GGUF file, got {str(template)!r}")
    return gguf.GGUFReader(template)


def read_gguf_tensors(source: Template = None, names: Optional[Iterable[str]] = None) -> dict[str, torch.Tensor]:
    """Tensors of a GGUF file dequantized to float32 (``gguf.quants.dequantize``), GGUF layout.

    Args:
        source: a GGUF path, a ``gguf.GGUFReader``, or None for the shipped SmolLM2 file.
        names: optional collection of tensor names to read (default: all).

    Returns:
        ``{name: float32 tensor}`` in file order, numpy shape order (``(rows, row_length)``).

    Raises:
        ValueError: a name the file does not hold. TypeError: bad ``source``.
    """
    import gguf

    reader = _reader(source)
    wanted = None if names is None else set(names)
    if wanted is not None:
        unknown = sorted(wanted - {t.name for t in reader.tensors})
        if unknown:
            raise ValueError(f"names holds tensors the file does not have: {unknown[:5]}")
    out = {}
    for t in reader.tensors:
        if wanted is None or t.name in wanted:
            a = gguf.quants.dequantize(t.data, t.tensor_type)
            out[t.name] = torch.from_numpy(np.array(a, dtype=np.float32, copy=True))
    return out


def _fields(reader: gguf.GGUFReader) -> dict[str, tuple[Any, Any, Any]]:
    """The template's KV fields as ``{key: (value, type, sub_type)}`` for GGUFWriter.

    Strings are copied as their raw bytes and numbers with their stored type, so every copied
    field is written byte for byte as it was read."""
    from gguf import GGUFValueType as V

    out = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in _SKIPPED_KEYS:
            continue  # header fields the reader exposes as pseudo-KVs; the architecture
        main = f.types[0]
        if main == V.ARRAY:
            sub = f.types[-1]
            if len(f.types) != 2:
                raise ValueError(f"template field {key!r} is a nested array, which cannot be copied")
            if not f.data:
                raise ValueError(f"template field {key!r} is an empty array, which GGUFWriter cannot write")
            if sub == V.STRING:
                val: Any = [bytes(f.parts[i]) for i in f.data]
            else:
                val = np.concatenate([f.parts[i] for i in f.data]).tolist()
            out[key] = (val, main, sub)
        elif main == V.STRING:
            out[key] = (bytes(f.parts[f.data[0]]), main, None)
        else:
            out[key] = (f.parts[f.data[0]][0].item(), main, None)
    return out


# --------------------------------------------------------------------------- writing


@dataclasses.dataclass(frozen=True)
class GGUFExport:
    """What :func:`write_gguf` wrote.

    Attributes:
        path: the file.
        types: tensor name -> kind written (``"q4_0"``, ``"f32"``, ...), in file order.
        fallbacks: tensor name -> ``(requested kind, kind written)`` for each tensor whose
            rows did not fit the requested kind (llama.cpp's fallback, see the module docstring).
        file_type: the ``general.file_type`` written (:data:`FILE_TYPES`).
        block_count: decoder blocks in the file (fewer than the template's if truncated).
        n_bytes: size of the file.
    """

    path: Path
    types: dict[str, str]
    fallbacks: dict[str, tuple[str, str]]
    file_type: int
    block_count: Optional[int]
    n_bytes: int

    def summary(self) -> str:
        """One line per kind (tensor count), the fallbacks, and the file size."""
        counts = Counter(self.types.values())
        lines = [
            f"{self.path.name}: {self.n_bytes / 1e6:.1f} MB, {len(self.types)} tensors, "
            f"general.file_type {self.file_type}"
        ]
        lines += [f"  {kind}: {n} tensors" for kind, n in counts.most_common()]
        falls = Counter(self.fallbacks.values())
        lines += [
            f"  fallback {a} -> {b}: {n} tensors (rows not a whole number of blocks)"
            for (a, b), n in falls.most_common()
        ]
        return "\n".join(lines)


def _check_target(path: Path) -> None:
    """Refuse, before any work, a path the file cannot replace: one that names a directory,
    FIFO, device or socket (the file is renamed over its target), or one in a folder that
    does not exist (FileNotFoundError)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
        raise ValueError(f"path {str(path)!r} names {kind}; write_gguf writes a new file or replaces a regular one")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: no directory {str(folder)!r}")


def _check_kind(kind: Any, what: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"{what} must be a str such as 'q4_0', got {type(kind).__name__}")
    if kind.lower() not in EXPORT_KINDS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, EXPORT_KINDS))}; got {kind!r}")
    return kind.lower()


def _as_float_tensor(name: str, t: Any) -> torch.Tensor:
    """``t`` as a float CPU tensor (numpy arrays in any byte order and layout), finite."""
    if not isinstance(t, (np.ndarray, torch.Tensor)):
        raise TypeError(f"tensors[{name!r}] must be a torch tensor or numpy array, got {type(t).__name__}")
    t, _ = as_tensor(t, f"tensors[{name!r}]")  # big-endian or reversed arrays: a native copy
    if not t.is_floating_point():
        raise TypeError(f"tensors[{name!r}] must be a float tensor, got dtype {t.dtype}")
    t = t.detach().cpu()
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise ValueError(
            f"tensor {name!r} holds NaN or infinity ({int(bad.sum())} of "
            f"{t.numel()} values); a GGUF file needs finite values"
        )
    return t


def _resolve_kinds(names_2d: list[str], kinds: Mapping[str, Any], default: str, names_1d: list[str]) -> dict[str, str]:
    """Requested kind per quantizable tensor: an exact key, else the first matching pattern,
    else ``default``."""
    for key in kinds:
        if not isinstance(key, str):
            raise TypeError(f"kinds keys must be tensor names or glob patterns, got {key!r}")
    checked = {key: _check_kind(val, f"kinds[{key!r}]") for key, val in kinds.items()}
    everything = set(names_2d) | set(names_1d)
    for key, kind in checked.items():
        if _PATTERN_CHARS.search(key):
            if not any(fnmatch.fnmatchcase(n, key) for n in everything):
                raise ValueError(f"kinds pattern {key!r} matches no tensor")
        elif key not in everything:
            raise ValueError(f"kinds names {key!r}, which is not a tensor being written")
        elif key in names_1d and kind != "f32":
            raise ValueError(
                f"kinds[{key!r}] is {kind!r}, but {key} is 1-D (a norm weight): 1-D tensors are "
                "written as f32, as llama.cpp does"
            )
    patterns = [(k, v) for k, v in checked.items() if _PATTERN_CHARS.search(k)]
    out = {}
    for n in names_2d:
        if n in checked:
            out[n] = checked[n]
            continue
        out[n] = next((v for k, v in patterns if fnmatch.fnmatchcase(n, k)), default)
    return out


def _fit(name: str, kind: str, row: int, fallback: bool) -> str:
    """The kind a tensor with rows of ``row`` weights is written in (llama.cpp's fallback)."""
    if kind in FLOAT_KINDS or row % gguf_blocks.BLOCK_SIZES[kind] == 0:
        return kind
    size = gguf_blocks.BLOCK_SIZES[kind]
    if kind in gguf_blocks.FALLBACK:
        alt = gguf_blocks.FALLBACK[kind]
        alt = alt if row % gguf_blocks.BLOCK_SIZES[alt] == 0 else "f16"
        if fallback:
            return alt
        raise ValueError(
            f"tensor {name!r} has rows of {row} weights, not a multiple of {size} for {kind}; "
            f"llama.cpp's quantizer would write it as {alt} (pass fallback=True to do the same)"
        )
    raise ValueError(
        f"tensor {name!r} has rows of {row} weights, not a multiple of {size} for {kind} "
        "(llama.cpp's quantizer has no fallback for this kind either); choose another kind "
        "for it in kinds, e.g. 'f16'"
    )


_F16_MAX = 65504.0


def _encode(name: str, t: torch.Tensor, kind: str) -> np.ndarray:
    """The bytes (or values) of ``t`` in ``kind``; a ValueError naming the tensor where they
    would not decode to finite values (f16 beyond 65504, block scales that overflow fp16)."""
    if kind == "f32":
        out = t.to(torch.float32).contiguous().numpy()
        if not np.isfinite(out).all():  # float64 values beyond float32's range
            raise ValueError(
                f"tensor {name!r} holds values beyond float32's range (largest magnitude {float(t.abs().max()):.4g})"
            )
        return out
    amax = float(t.abs().max()) if t.numel() else 0.0
    if kind == "f16":
        if amax > _F16_MAX:
            raise ValueError(
                f"tensor {name!r} holds values up to {amax:.4g} in magnitude, beyond "
                f"f16's largest value {_F16_MAX:g}; write it as 'f32' (kinds) or "
                "rescale it"
            )
        return t.to(torch.float32).numpy().astype(np.float16)
    try:
        out = np.ascontiguousarray(gguf_blocks.quantize_blocks(t, kind).numpy())
    except ValueError as e:
        raise ValueError(f"tensor {name!r}: {e}") from e
    if amax > _F16_MAX:  # block scales and minimums are fp16: they may have overflowed
        back = gguf_blocks.dequantize_blocks(torch.from_numpy(out), kind)
        if not bool(torch.isfinite(back).all()):
            raise ValueError(
                f"tensor {name!r} holds values up to {amax:.4g} in magnitude: {kind}'s fp16 block "
                f"scales overflow (fp16 ends at {_F16_MAX:g}), so the file would decode to "
                "infinity or NaN; write it as 'f32' (kinds) or rescale it"
            )
    return out


def _block_count(arch: str, fields: dict, template_names: list[str], present: set[str]) -> Optional[int]:
    """The block count of the file: the template's, or ``n`` when exactly the tensors of blocks
    ``n, n+1, ...`` are missing; otherwise a ValueError listing what is missing."""
    missing = [n for n in template_names if n not in present]
    key = f"{arch}.block_count"
    total = fields[key][0] if key in fields else None
    if not missing:
        return total
    blocks = [_BLOCK.match(n) for n in missing]
    if total is not None and all(blocks):
        n = min(int(b.group(1)) for b in blocks)
        expected = [t for t in template_names if (b := _BLOCK.match(t)) and int(b.group(1)) >= n]
        if missing == expected:
            return n
    raise ValueError(
        f"tensors misses {len(missing)} of the template's tensors, e.g. {missing[:4]}; give all of "
        "them, or leave out whole trailing blocks (blk.n, blk.n+1, ...) for a truncated model"
    )


def write_gguf(
    tensors: Mapping[str, Any],
    path: PathLike,
    *,
    template: Template = None,
    kinds: Optional[Mapping[str, str]] = None,
    default_kind: str = "q8_0",
    fallback: bool = True,
) -> GGUFExport:
    """Write ``tensors`` to a GGUF file, each 2-D weight block-quantized by quantlab.

    The template (a GGUF file of the same model) supplies the tensor names, their order and
    shapes, and the metadata: every KV field is copied unchanged (architecture,
    hyperparameters, tokenizer vocabulary, merges, token types, chat template, ...), except

    * ``general.file_type``: :data:`FILE_TYPES` of ``default_kind``;
    * ``general.quantization_version``: 2 (the block layouts written);
    * ``general.quantized_by`` = ``"quantlab"`` and ``quantlab.version`` (added);
    * ``{arch}.block_count``: only for a truncated model (see ``tensors``).

    A custom ``general.alignment`` in the template is honoured for the tensor data.

    Args:
        tensors: ``{gguf_name: float tensor or array}`` in GGUF naming and numpy shape order
            (``blk.0.attn_q.weight`` is ``(rows, row_length)`` as the template's tensor).
            Every template tensor must be given, except that whole trailing decoder blocks may
            be left out (``blk.n`` onwards): the file is then a model of ``n`` blocks and its
            ``block_count`` says so. Tensors are written in the template's order.
        path: the file to write (replaced if it exists; written to ``path + ".part"`` first).
        template: a GGUF path or ``gguf.GGUFReader``; None for the shipped SmolLM2-135M file.
        kinds: ``{tensor name or glob pattern: kind}`` for 2-D tensors; an exact name wins,
            otherwise the first matching pattern (``"blk.*.ffn_down.weight"``). Keys must match
            a tensor. 1-D tensors are always F32.
        default_kind: kind of every other 2-D tensor (:data:`EXPORT_KINDS`, e.g. ``"q4_0"``).
        fallback: for a 256-weight kind and rows that are not a multiple of 256, write the
            fallback kind llama.cpp uses (default) instead of raising.

    Returns:
        A :class:`GGUFExport`: the kind of each tensor, the fallbacks taken, the file size.

    Raises:
        ValueError: unknown kind (naming the parameter or ``kinds`` key); tensor names the
            template does not hold, or missing tensors other than whole trailing blocks; a
            shape other than the template's; a row that is not a whole number of blocks for a
            32-weight kind (or any kind with ``fallback=False``), naming the tensor; NaN or
            infinity in a tensor (naming it), or values the kind cannot hold (beyond 65504
            for f16, or so large that a kind's fp16 block scales overflow); a ``path`` that
            names a directory, FIFO or device.
        FileNotFoundError: the folder of ``path`` does not exist.
        TypeError: ``tensors``/``kinds`` not mappings; a tensor that is not a float
            tensor/array; ``fallback`` not a bool.
    """
    import gguf

    from .. import __version__

    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of GGUF names to tensors, got {type(tensors).__name__}")
    if kinds is None:
        kinds = {}
    if not isinstance(kinds, Mapping):
        raise TypeError(f"kinds must be a mapping of names/patterns to kinds, got {type(kinds).__name__}")
    if not isinstance(fallback, bool):
        raise TypeError(f"fallback must be a bool, got {fallback!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    _check_target(Path(path))
    default_kind = _check_kind(default_kind, "default_kind")
    reader = _reader(template)

    infos = {t.name: t for t in reader.tensors}
    unknown = [n for n in tensors if n not in infos]
    if unknown:
        hint = ""
        if any(str(n).startswith(("model.", "lm_head")) for n in unknown):
            hint = " (transformers names: convert them with llama_tensors_from_hf)"
        raise ValueError(f"tensors holds names the template does not have: {unknown[:5]}{hint}")
    if "general.architecture" not in reader.fields:
        raise ValueError("template must be a model GGUF file with a general.architecture field")
    fields = _fields(reader)
    arch = str(reader.fields["general.architecture"].contents())
    order = [t.name for t in reader.tensors if t.name in tensors]
    block_count = _block_count(arch, fields, [t.name for t in reader.tensors], set(tensors))

    data = {}
    for name in order:
        t = _as_float_tensor(name, tensors[name])
        expected = tuple(int(d) for d in reversed(infos[name].shape.tolist()))
        if tuple(t.shape) != expected:
            raise ValueError(f"tensors[{name!r}] must have the template's shape {expected}, got {tuple(t.shape)}")
        data[name] = t
    names_1d = [n for n in order if data[n].dim() == 1]
    names_2d = [n for n in order if data[n].dim() >= 2]
    requested = _resolve_kinds(names_2d, kinds, default_kind, names_1d)

    # the changed fields keep their place among the copied ones; the new ones come last
    V = gguf.GGUFValueType
    fields["general.file_type"] = (FILE_TYPES[default_kind], V.UINT32, None)
    fields["general.quantization_version"] = (_QUANT_VERSION, V.UINT32, None)
    if block_count is not None:
        key = f"{arch}.block_count"
        fields[key] = (block_count, fields[key][1], None)
    fields["general.quantized_by"] = (QUANTIZED_BY, V.STRING, None)
    fields["quantlab.version"] = (__version__, V.STRING, None)

    types, fallbacks = {}, {}
    writer = gguf.GGUFWriter(None, arch)
    for key, (val, vtype, sub) in fields.items():
        writer.add_key_value(key, val, vtype, sub)
    if "general.alignment" in fields:
        writer.data_alignment = int(fields["general.alignment"][0])

    for name in order:
        t = data[name]
        if t.dim() == 1:
            kind = "f32"
        else:
            kind = _fit(name, requested[name], t.shape[-1], fallback)
            if kind != requested[name]:
                fallbacks[name] = (requested[name], kind)
        arr = _encode(name, t, kind)
        raw = None if kind in FLOAT_KINDS else gguf.GGMLQuantizationType[kind.upper()]
        writer.add_tensor(name, arr, raw_dtype=raw)  # uint8 (rows, bytes per row): see docstring
        types[name] = kind

    path = Path(path)
    part = path.with_name(path.name + ".part")
    try:
        writer.write_header_to_file(part)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(part, path)
    except BaseException:
        writer.close()
        part.unlink(missing_ok=True)
        raise
    return GGUFExport(path, types, fallbacks, FILE_TYPES[default_kind], block_count, path.stat().st_size)


def export_smollm(
    model_or_path: Union[torch.nn.Module, Template],
    path: PathLike,
    kind: str = "q4_0",
    *,
    keep: Optional[Mapping[str, str]] = DEFAULT_KEEP,
    layers: Optional[int] = None,
    template: Template = None,
    fallback: bool = True,
) -> GGUFExport:
    """Write SmolLM2 (or another llama model) as a GGUF file quantized to ``kind``.

    Args:
        model_or_path: the weights: a transformers ``LlamaForCausalLM`` -- e.g. from
            :func:`quantlab.models.smollm.load_model`, possibly quantized by quantlab (its
            weights are converted with :func:`llama_tensors_from_hf`) --, a GGUF path or
            ``gguf.GGUFReader`` (its tensors dequantized, :func:`read_gguf_tensors`), or None
            for the shipped SmolLM2-135M-Instruct file.
        path: the file to write.
        kind: kind of the 2-D weights (:data:`EXPORT_KINDS`); also the file type.
        keep: ``{name or glob pattern: kind}`` exceptions to ``kind`` (default
            :data:`DEFAULT_KEEP`: embeddings in Q8_0); None or ``{}`` for none.
        layers: write only the first ``layers`` decoder blocks (a truncated model whose
            ``block_count`` says so); None for all.
        template: the GGUF file giving names, shapes and metadata; None: ``model_or_path`` if
            it is a file, else the shipped SmolLM2 file.
        fallback: see :func:`write_gguf`.

    Returns:
        The :class:`GGUFExport` of :func:`write_gguf`.

    Raises:
        ValueError: ``layers`` outside ``[1, block_count]``; and as :func:`write_gguf` and
            :func:`llama_tensors_from_hf`.
        TypeError: bad ``model_or_path`` or ``layers``.
    """
    import gguf

    if isinstance(model_or_path, torch.nn.Module):
        tensors = llama_tensors_from_hf(model_or_path)
    elif model_or_path is None or isinstance(model_or_path, (str, os.PathLike, gguf.GGUFReader)):
        source = _reader(model_or_path)
        if template is None:
            template = source
        tensors = None
    else:
        raise TypeError(
            "model_or_path must be a torch model, a GGUF path, a gguf.GGUFReader or None, "
            f"got {type(model_or_path).__name__}"
        )
    reader = _reader(template)
    names = [t.name for t in reader.tensors]
    if layers is not None:
        if isinstance(layers, bool) or not isinstance(layers, int):
            raise TypeError(f"layers must be an int or None, got {layers!r}")
        arch = str(reader.fields["general.architecture"].contents())
        key = f"{arch}.block_count"
        total = int(reader.fields[key].contents()) if key in reader.fields else 0
        if not 1 <= layers <= total:
            raise ValueError(f"layers must be in [1, {total}], got {layers}")
        names = [n for n in names if not ((b := _BLOCK.match(n)) and int(b.group(1)) >= layers)]
    if tensors is None:
        tensors = read_gguf_tensors(source, names)
    else:
        wanted, known = set(names), {t.name for t in reader.tensors}
        tensors = {n: t for n, t in tensors.items() if n in wanted or n not in known}
    return write_gguf(tensors, path, template=reader, kinds=keep or {}, default_kind=kind, fallback=fallback)
