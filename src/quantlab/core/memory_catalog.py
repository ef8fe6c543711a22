"""The GPU and model catalog: :class:`GPU` and :class:`ModelShape` records, read from package data.

The data -- the GPUs (:data:`GPUS`, smallest memory first), the published model shapes
(:data:`MODELS`) and the round model sizes (:data:`MODEL_SIZES`) -- is
``quantlab/data/catalog.json``, read once at import and checked row by row against the
records it becomes; this module holds the records, their loading and the look-ups by name.
A GPU's capacity is ``memory_gib * 2**30`` bytes (vendors write "24 GB" for 24 GiB = 25.8 GB).
Every name is re-exported by :mod:`quantlab.core.memory`.

Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs" and "What else takes memory".
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from .memory_state import kv_cache_bytes
from .memory_weights import GiB
from .validate import check_count

__all__ = ["CATALOG", "GPU", "GPUS", "get_gpu", "gpu_bytes", "ModelShape", "MODELS", "MODEL_SIZES", "get_model"]


# --------------------------------------------------------------------------- the catalog file


def _read_catalog() -> dict[str, Any]:
    """``quantlab/data/catalog.json`` (package data), parsed."""
    return json.loads(resources.files("quantlab").joinpath("data", "catalog.json").read_text("utf-8"))


CATALOG: dict[str, Any] = _read_catalog()
"""The parsed ``quantlab/data/catalog.json``: ``{"gpus": {"rows": [...]}, "models": {"rows":
[...]}, "model_sizes": {"values": [...]}}``, each part with an ``"about"`` text. Rows are
the fields of :class:`GPU` / :class:`ModelShape` (a row may add a ``"note"``, which is
documentation only). :data:`GPUS`, :data:`MODELS` and :data:`MODEL_SIZES` are built from it."""


def _records(cls: type, part: str) -> list[Any]:
    """The rows of ``CATALOG[part]`` as ``cls`` objects (their fields, in the file's order).

    Raises:
        ValueError: a row lacks a field of ``cls`` or has one it does not know (besides
            ``"note"``), naming the row.
    """
    names = [f.name for f in fields(cls)]
    out = []
    for i, row in enumerate(CATALOG[part]["rows"]):
        extra = set(row) - set(names) - {"note"}
        missing = [n for n in names if n not in row]
        if extra or missing:
            raise ValueError(
                f"catalog.json {part}[{i}] ({row.get('name')!r}): missing {missing}, unknown {sorted(extra)}"
            )
        out.append(cls(**{n: row[n] for n in names}))
    return out


# --------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class GPU:
    """A GPU (or edge module) and its memory.

    Vendors write "24 GB", but memory chips come in binary sizes: the card holds
    24 GiB = 25.8 GB. ``memory_gib`` is that nominal capacity; a little of it is taken by
    the driver and CUDA context (see :data:`quantlab.core.memory.DEFAULT_OVERHEAD`).

    Attributes:
        name: marketing name, e.g. "RTX 4090".
        memory_gib: nominal memory in GiB (the number on the box).
        bandwidth_gbs: peak memory bandwidth from the spec sheet, in GB/s (10**9 bytes/s).
        kind: "consumer", "laptop", "workstation", "datacenter" or "edge".

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """

    name: str
    memory_gib: float
    bandwidth_gbs: float
    kind: str

    @property
    def memory_bytes(self) -> float:
        """Memory in bytes: ``memory_gib * 2**30``."""
        return self.memory_gib * GiB


GPUS: tuple[GPU, ...] = tuple(_records(GPU, "gpus"))
"""A small catalog of common GPUs, smallest memory first (spec-sheet values; H100 and A100 are SXM)."""


def get_gpu(name: str) -> GPU:
    """Look up a GPU in :data:`GPUS` by name (case and spaces ignored).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        TypeError: ``name`` not a string.

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__} {name!r}")
    key = name.replace(" ", "").lower()
    for gpu in GPUS:
        if gpu.name.replace(" ", "").lower() == key:
            return gpu
    raise ValueError(f"name must be one of {[g.name for g in GPUS]}, got {name!r}")


def gpu_bytes(gpu: GPU | str | float) -> float:
    """Memory capacity in bytes of a :class:`GPU`, a GPU name, or a number of bytes.

    Raises:
        ValueError: unknown GPU name, or a capacity that is not > 0.
        TypeError: anything else.

    Taught in: chapters/01_why_quantization.ipynb, "Models against GPUs".
    """
    if isinstance(gpu, GPU):
        return gpu.memory_bytes
    if isinstance(gpu, str):
        return get_gpu(gpu).memory_bytes
    if isinstance(gpu, bool) or not isinstance(gpu, numbers.Real):
        raise TypeError(f"gpu must be a GPU, a GPU name or a number of bytes, got {type(gpu).__name__} {gpu!r}")
    return check_count(gpu, "gpu", allow_zero=False)


# --------------------------------------------------------------------------- model shapes


@dataclass(frozen=True)
class ModelShape:
    """The shape of a decoder-only transformer, enough to size its KV cache and activations.

    Attributes:
        name: model name.
        n_params: number of parameters (approximate, from the model card).
        n_layers: transformer blocks.
        hidden_size: width of the residual stream.
        n_heads: attention (query) heads.
        n_kv_heads: key/value heads (fewer than ``n_heads`` with grouped-query attention).
        head_dim: width of one head.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """

    name: str
    n_params: float
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    def kv_cache_bytes(self, seq_len: int, batch: int = 1, dtype: str = "fp16") -> float:
        """KV cache of this model; see :func:`kv_cache_bytes`."""
        return kv_cache_bytes(self.n_layers, self.n_kv_heads, self.head_dim, seq_len, batch, dtype)


MODELS: tuple[ModelShape, ...] = tuple(_records(ModelShape, "models"))
"""A few published model shapes (from their configuration files)."""

MODEL_SIZES: tuple[float, ...] = tuple(float(v) for v in CATALOG["model_sizes"]["values"])
"""Round parameter counts of the common model sizes: 1B, 3B, 7B, 13B, 70B."""


def get_model(name: str) -> ModelShape:
    """Look up a model in :data:`MODELS` by name (case ignored).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        TypeError: ``name`` not a string.

    Taught in: chapters/01_why_quantization.ipynb, "What else takes memory".
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__} {name!r}")
    for model in MODELS:
        if model.name.lower() == name.lower():
            return model
    raise ValueError(f"name must be one of {[m.name for m in MODELS]}, got {name!r}")
