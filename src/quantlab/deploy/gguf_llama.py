"""The LLaMA layout in GGUF: tensor names and the rotary row order of the query and key projections.

transformers' LLaMA layout differs from GGUF's in names (``model.layers.0.self_attn.q_proj.weight``
is ``blk.0.attn_q.weight``) and in the order of the rows of the query and key projections: HF's
rotary embedding rotates the pairs ``(i, i + d/2)`` of each head (``rotate_half``), llama.cpp's
the adjacent pairs ``(2i, 2i + 1)``, so llama.cpp's converter permutes the rows of ``W_q`` and
``W_k`` within each head (:func:`permute_qk`: ``w.reshape(n_heads, 2, d/2, ...).swapaxes(1, 2)``)
and transformers undoes it when it loads a GGUF (:func:`unpermute_qk`).
:func:`llama_tensors_from_hf` and :func:`llama_tensors_to_hf` apply both mappings to a whole
model. Every name is re-exported by :mod:`quantlab.deploy.gguf_export`, which writes the files.

Taught in: chapters/04b_language_model.ipynb.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import torch

from ..core._backend import as_tensor

__all__ = [
    "llama_tensors_from_hf",
    "llama_tensors_to_hf",
    "hf_name_to_gguf",
    "gguf_name_to_hf",
    "permute_qk",
    "unpermute_qk",
]

_LLAMA_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LLAMA_LAYER = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$", re.ASCII)
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$", re.ASCII)


def hf_name_to_gguf(name: str) -> str:
    """GGUF name of a transformers LLaMA parameter (llama.cpp's ``convert_hf_to_gguf`` names).

    ``model.embed_tokens.weight`` -> ``token_embd.weight``, ``model.norm.weight`` ->
    ``output_norm.weight``, ``lm_head.weight`` -> ``output.weight``, and for layer ``i``:
    ``model.layers.i.self_attn.{q,k,v,o}_proj.weight`` -> ``blk.i.attn_{q,k,v,output}.weight``,
    ``model.layers.i.mlp.{gate,up,down}_proj.weight`` -> ``blk.i.ffn_{gate,up,down}.weight``,
    ``model.layers.i.input_layernorm.weight`` -> ``blk.i.attn_norm.weight``,
    ``model.layers.i.post_attention_layernorm.weight`` -> ``blk.i.ffn_norm.weight``.

    Raises:
        ValueError: a name outside this mapping (e.g. a bias, which LLaMA has none of).
        TypeError: ``name`` not a str.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name in _LLAMA_GLOBAL:
        return _LLAMA_GLOBAL[name]
    m = _HF_LAYER.match(name)
    if m and m.group(2) in _LLAMA_LAYER:
        return f"blk.{m.group(1)}.{_LLAMA_LAYER[m.group(2)]}"
    raise ValueError(f"name {name!r} is not a parameter of the llama architecture's GGUF mapping")


def gguf_name_to_hf(name: str) -> str:
    """The transformers LLaMA parameter name of a GGUF tensor (inverse of :func:`hf_name_to_gguf`).

    Raises:
        ValueError: a name outside the mapping. TypeError: ``name`` not a str.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    for hf, gg in _LLAMA_GLOBAL.items():
        if gg == name:
            return hf
    m = _GGUF_LAYER.match(name)
    if m:
        for hf, gg in _LLAMA_LAYER.items():
            if gg == m.group(2):
                return f"model.layers.{m.group(1)}.{hf}"
    raise ValueError(f"name {name!r} is not a tensor of the llama architecture's GGUF mapping")


def _check_heads(w: torch.Tensor, n_heads: Any, name: str) -> int:
    if isinstance(n_heads, bool) or not isinstance(n_heads, int):
        raise TypeError(f"n_heads must be an int, got {n_heads!r}")
    if n_heads < 1 or w.dim() < 1 or w.shape[0] % (2 * n_heads) != 0:
        raise ValueError(
            f"n_heads must be positive and divide the rows of {name} into heads of even size, "
            f"got n_heads={n_heads} for shape {tuple(w.shape)}"
        )
    return n_heads


def permute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF -> GGUF row order of a query or key projection (llama.cpp's ``permute``).

    Within each head of ``d`` rows, HF's rows ``(0, d/2, 1, d/2 + 1, ...)`` become GGUF's rows
    ``(0, 1, 2, 3, ...)``: ``w.reshape(n_heads, 2, d/2, ...).swapaxes(1, 2)``. Only the output
    rows move, so blocks along a row (and thus any GGUF quantization) are unaffected.

    Args:
        w: weight ``(n_heads * d, in_features)`` (or a bias ``(n_heads * d,)``).
        n_heads: heads of this projection: ``num_attention_heads`` for ``q_proj``,
            ``num_key_value_heads`` for ``k_proj``.

    Returns:
        The permuted tensor, same shape and dtype.

    Raises:
        ValueError: rows not a multiple of ``2 * n_heads``. TypeError: ``n_heads`` not an int.
    """
    n = _check_heads(w, n_heads, "w")
    shape = w.shape
    return w.reshape(n, 2, shape[0] // n // 2, *shape[1:]).transpose(1, 2).reshape(shape)


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """GGUF -> HF row order of a query or key projection, the inverse of :func:`permute_qk`
    (transformers' ``_reverse_permute_weights``); same arguments and errors."""
    n = _check_heads(w, n_heads, "w")
    shape = w.shape
    return w.reshape(n, shape[0] // n // 2, 2, *shape[1:]).transpose(1, 2).reshape(shape)


def _config_heads(config: Any) -> tuple[int, int]:
    n_heads = getattr(config, "num_attention_heads", None)
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    if not isinstance(n_heads, int):
        raise ValueError(f"model.config must give num_attention_heads, got {n_heads!r}")
    return n_heads, n_kv


def llama_tensors_from_hf(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers LLaMA model's weights as GGUF tensors (names, q/k row order), float32.

    Works on a float model, a fake-quantized one, and one whose Linear layers were swapped for
    :class:`quantlab.nn.QuantizedLinear` (their weights are dequantized, times their AWQ
    ``input_scale`` if they have one). ``lm_head`` tied to the embeddings is not repeated (a
    tied GGUF has no ``output.weight``).

    Args:
        model: a ``LlamaForCausalLM`` (``model.config.model_type == "llama"``).

    Returns:
        ``{gguf_name: float32 CPU tensor}`` in the model's parameter order.

    Raises:
        TypeError: ``model`` not an ``nn.Module``.
        ValueError: not a llama model; a parameter outside the mapping; a tied ``lm_head``
            whose weight no longer equals the embeddings (e.g. quantized separately --
            :func:`quantlab.nn.quantize_model` skips ``lm_head`` by default for this reason).
    """
    from ..nn import QuantizedLinear

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type != "llama":
        raise ValueError(f"model must be a transformers llama model, got model_type {model_type!r}")
    n_heads, n_kv = _config_heads(config)

    hf: dict[str, torch.Tensor] = {}
    quantized = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            w = module.dequantize_weight(torch.float32)
            if module.input_scale is not None:  # forward computes F.linear(x * s, W): W diag(s)
                w = w * module.input_scale.to(w)
            quantized[name] = w
    for name, p in model.named_parameters():  # a tied lm_head is listed once, as embed_tokens
        owner = name.rsplit(".", 1)[0]
        if owner in quantized:
            if name.endswith(".bias"):
                hf[name] = p
            continue
        hf[name] = p
    for name, w in quantized.items():
        hf[f"{name}.weight"] = w

    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied and "lm_head.weight" in hf:
        embed = hf.get("model.embed_tokens.weight")
        if embed is None or not torch.equal(hf["lm_head.weight"].float(), embed.float()):
            raise ValueError(
                "model.lm_head.weight differs from the tied embeddings model.embed_tokens.weight "
                "(quantized separately?); a tied llama GGUF stores only token_embd.weight, so "
                "quantize lm_head and the embeddings alike or not at all"
            )
        del hf["lm_head.weight"]

    out: dict[str, torch.Tensor] = {}
    for name, t in hf.items():
        gg = hf_name_to_gguf(name)
        t = t.detach().to("cpu", torch.float32)
        if gg.endswith(".attn_q.weight"):
            t = permute_qk(t, n_heads)
        elif gg.endswith(".attn_k.weight"):
            t = permute_qk(t, n_kv)
        out[gg] = t.contiguous()
    return out


def llama_tensors_to_hf(tensors: Mapping[str, Any], n_heads: int, n_kv_heads: int) -> dict[str, torch.Tensor]:
    """GGUF tensors as a transformers LLaMA state dict (the inverse of
    :func:`llama_tensors_from_hf`, as transformers maps them when it loads a GGUF).

    Args:
        tensors: ``{gguf_name: float array or tensor}``.
        n_heads: ``num_attention_heads`` (rows of ``attn_q`` are un-permuted per head).
        n_kv_heads: ``num_key_value_heads`` (for ``attn_k``).

    Returns:
        ``{hf_name: float32 tensor}``; without ``lm_head.weight`` when the file has no
        ``output.weight`` (tie it to the embeddings, as ``from_pretrained`` does).

    Raises:
        ValueError: a name outside the mapping. TypeError: ``tensors`` not a mapping.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of names to tensors, got {type(tensors).__name__}")
    out = {}
    for name, t in tensors.items():
        hf = gguf_name_to_hf(name)
        if not isinstance(t, torch.Tensor):
            t, _ = as_tensor(np.asarray(t), f"tensors[{name!r}]")  # any byte order and strides
        t = t.to(torch.float32)
        if name.endswith(".attn_q.weight"):
            t = unpermute_qk(t, n_heads)
        elif name.endswith(".attn_k.weight"):
            t = unpermute_qk(t, n_kv_heads)
        out[hf] = t.contiguous()
    return out
