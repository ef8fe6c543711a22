"""A Llama-style decoding step written as one fused ONNX graph for ONNX Runtime.

At batch 1 a language model's step is a few hundred small matrix-vector products. Traced
op by op (what ``torch.onnx.export`` writes), SmolLM2-135M's step is about 900 ONNX
nodes: every RMSNorm is six, every attention a dozen. Each node is a kernel call with a
fixed cost of a few microseconds, and it writes its result to memory for the next one to
read. :func:`export_llama_decoder` writes the graph an inference engine builds for
generation instead (the layout of ``onnxruntime-genai``'s model builder), about ten nodes
per layer::

    x = Gather(embed_tokens, token)                        # one row of the table
    per layer:
      h, x  = SkipSimplifiedLayerNormalization(x, skip)    # residual add + RMSNorm, one kernel
      qkv   = MatMul*(h)                                   # q, k and v projections in one
      a     = GroupQueryAttention(qkv, past_k, past_v)     # rotary, cache write, softmax(q k^T) v
      o     = MatMul*(a)
      h, x  = SkipSimplifiedLayerNormalization(o, x)
      g, u  = Split(MatMul*(h))                            # gate and up projections in one
      skip  = MatMul*(QuickGelu(g) * u)                    # SiLU(g) * u, then down
    logits = MatMul*(SkipSimplifiedLayerNormalization(skip, x))

``MatMul*`` is the layer's own kernel: float ``MatMul`` for ``nn.Linear``, ``MatMulNBits``
or ``DynamicQuantizeLinear`` + ``MatMulInteger`` for :class:`~quantlab.nn.QuantizedLinear`
(:mod:`quantlab.deploy.onnx`), with the layer's codes and scales. Projections that read the
same input (q, k, v; gate, up) are stacked into one weight when they share a scheme
(stacking rows changes no code, scale or group); otherwise each keeps its node.

The key/value cache lives in ``past_key.i`` / ``past_value.i``, float32
``(1, kv_heads, max_len, head_dim)``, one pair per layer. ``GroupQueryAttention`` writes the
new token's key and value into slot ``position`` and attends over slots ``0..position``
only; when the caller binds ``present_key.i`` to the same buffer as ``past_key.i`` (as
:class:`quantlab.deploy.runtime.OrtDecoder` does), nothing is copied. Rotary embedding runs inside
the attention kernel from ``cos``/``sin`` tables of ``max_len`` rows.

Inputs: ``input_ids`` int64 ``(1, 1)``; ``seqlens_k`` int32 ``(1,)`` = ``position``;
``total_sequence_length`` int32 scalar = ``position + 1``; the caches. Outputs: ``logits``
float32 ``(1, 1, vocab)``; ``present_key.i`` / ``present_value.i``.

:class:`LlamaDecodeStep` is the same step written op by op in torch, which
``torch.onnx.export`` traces (about 30 nodes per layer); :func:`export_decoder` writes
either graph. Both run in :class:`quantlab.deploy.runtime.OrtDecoder` (whose session,
:func:`~quantlab.deploy.runtime.decoder_session`, is re-exported here).

Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..nn import QuantizedLinear, quantized_layers
from .onnx import MS_DOMAIN, PROTOBUF_LIMIT, as_float32_array, export_onnx, kernel_nodes, plan_layer
from .runtime import decoder_session

__all__ = ["export_llama_decoder", "export_decoder", "LlamaDecodeStep", "decoder_session", "DECODER_INPUTS"]

#: The graph inputs besides the caches, in order.
DECODER_INPUTS: tuple[str, ...] = ("input_ids", "seqlens_k", "total_sequence_length")

PathLike = Union[str, os.PathLike]


class _Graph:
    """Nodes and initializers being collected."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> None:
        from onnx import helper

        domain = MS_DOMAIN if op in _MS_OPS else ""
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))


_MS_OPS = {"MatMulNBits", "GroupQueryAttention", "SkipSimplifiedLayerNormalization", "QuickGelu"}


def _stack_key(name: str, layer: nn.Module):
    """Layers with equal keys can be stacked into one weight (rows appended)."""
    if isinstance(layer, QuantizedLinear):
        plan = plan_layer(name, layer)
        qt = layer.to_qtensor()
        input_scale = getattr(layer, "input_scale", None)
        if plan.op_type == "MatMulInteger" and qt.granularity == "tensor":
            return None  # one scale per tensor: stacking would need one shared scale
        return (
            "q",
            plan.op_type,
            plan.bits,
            plan.block_size,
            plan.zero_points,
            qt.format.name,
            qt.granularity,
            None if input_scale is None else tuple(as_float32_array(input_scale).ravel().tolist()),
        )
    if isinstance(layer, nn.Linear):
        return ("float",)
    raise TypeError(f"layer {name!r} is a {type(layer).__name__}; expected nn.Linear or QuantizedLinear")


def _stacked(layers: list[QuantizedLinear]) -> tuple[SimpleNamespace, SimpleNamespace]:
    """One layer-like object whose codes, scales, zero points and bias are the rows of all."""
    qts = [layer.to_qtensor() for layer in layers]
    n_out = sum(layer.out_features for layer in layers)
    rows = [qt.scale.reshape(layer.out_features, -1) for qt, layer in zip(qts, layers)]
    zps = None
    if qts[0].zero_point is not None:
        zps = torch.cat([qt.zero_point.reshape(layer.out_features, -1) for qt, layer in zip(qts, layers)])
    qt = SimpleNamespace(
        codes=torch.cat([qt.codes for qt in qts]),
        scale=torch.cat(rows),
        zero_point=zps,
        format=qts[0].format,
        granularity=qts[0].granularity,
        group_size=qts[0].group_size,
    )
    layer = SimpleNamespace(in_features=layers[0].in_features, out_features=n_out, bias=_stacked_bias(layers))
    return layer, qt


def _stacked_bias(layers: list[nn.Module]) -> Optional[torch.Tensor]:
    """The layers' biases one after the other (zeros for a layer without), or None if none has one."""
    if all(layer.bias is None for layer in layers):
        return None
    return torch.cat(
        [layer.bias.detach().float() if layer.bias is not None else torch.zeros(layer.out_features) for layer in layers]
    )


def _linear(g: _Graph, names: list[str], layers: list[nn.Module], x: str, y: str, accuracy_level: int) -> list[str]:
    """Nodes computing ``layers`` on ``x``; returns one output name per layer (or ``[y]`` if stacked).

    Layers with the same scheme are stacked into one node writing ``y``; otherwise each layer
    gets its own node (outputs ``y.0``, ``y.1``, ...).
    """
    keys = [_stack_key(n, layer) for n, layer in zip(names, layers)]
    if len(layers) > 1 and keys[0] is not None and all(k == keys[0] for k in keys):
        groups = [(names[0] + "+", layers, y)]
        outputs = [y]
    else:
        groups = [(n, [layer], f"{y}.{i}" if len(layers) > 1 else y) for i, (n, layer) in enumerate(zip(names, layers))]
        outputs = [out for _, _, out in groups]
    for name, members, out in groups:
        w = name.replace("+", "_stacked")
        if not isinstance(members[0], QuantizedLinear):
            weight = torch.cat([m.weight.detach().float() for m in members]).T.numpy()
            g.const(f"{w}.weight", weight)
            bias = _stacked_bias(members)
            if bias is not None:
                g.node("MatMul", [x, f"{w}.weight"], [f"{out}/nobias"], name=f"{w}/MatMul")
                g.node("Add", [f"{out}/nobias", g.const(f"{w}.bias", bias.numpy())], [out], name=f"{w}/Add")
            else:
                g.node("MatMul", [x, f"{w}.weight"], [out], name=f"{w}/MatMul")
            continue
        layer, qt = (members[0], members[0].to_qtensor()) if len(members) == 1 else _stacked(members)
        nodes, inits = kernel_nodes(
            w,
            w,
            x,
            out,
            layer,
            qt,
            plan_layer(name, members[0]).op_type,
            getattr(members[0], "input_scale", None),
            accuracy_level,
        )
        g.nodes.extend(nodes)
        g.inits.extend(inits)
    return outputs


def _rope_tables(cfg, head_dim: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    kind = rope.get("rope_type", "default")
    if kind not in ("default", None):
        raise ValueError(f"rope_type {kind!r} is not supported (only the default rotary embedding)")
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (max_len, hd/2)
    return freqs.cos().numpy(), freqs.sin().numpy()


def export_llama_decoder(model: nn.Module, path: PathLike, max_len: int = 128, accuracy_level: int = 4) -> Path:
    """Write one decoding step of a Llama-style causal LM as a fused ONNX graph.

    See the module docstring for the graph. Quantized layers keep their codes and scales;
    the token embedding stays the float table the model holds (one row is read per token),
    also when the head is quantized.

    Args:
        model: a transformers ``LlamaForCausalLM`` (SmolLM2, TinyLlama, ...), float32,
            possibly with :class:`~quantlab.nn.QuantizedLinear` layers (``quantize_model``,
            GPTQ or AWQ results).
        path: the ``.onnx`` file to write (its folder must exist).
        max_len: cache slots: the longest prompt plus generation.
        accuracy_level: ``MatMulNBits`` accuracy level (4: int8 activations in blocks).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        TypeError: ``model`` is not a Llama-style causal LM, or a projection is neither
            ``nn.Linear`` nor ``QuantizedLinear``.
        ValueError: ``max_len`` < 1, ``accuracy_level`` outside 0..4, a folder that does not
            exist, an activation other than SiLU, biases in the attention or MLP projections'
            norms, a rotary scaling other than the default, or a layer scheme without an ONNX
            Runtime kernel (the message names the layer).

    Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
    """
    import onnx
    from onnx import TensorProto, helper

    if not hasattr(model, "model") or not hasattr(model.model, "layers") or not hasattr(model, "config"):
        raise TypeError("model must be a transformers Llama-style causal LM (model.model.layers)")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    if isinstance(accuracy_level, bool) or accuracy_level not in (0, 1, 2, 3, 4):
        raise ValueError(f"accuracy_level must be 0, 1, 2, 3 or 4, got {accuracy_level!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path's folder does not exist: {str(path.parent)!r}")
    cfg = model.config
    act = getattr(cfg, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act must be 'silu' (SwiGLU MLP), got {act!r}")
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    eps = float(cfg.rms_norm_eps)
    lm = model.model

    g = _Graph()
    cos, sin = _rope_tables(cfg, head_dim, max_len)
    g.const("rope.cos", cos)
    g.const("rope.sin", sin)
    table = lm.embed_tokens.weight.detach().float().numpy()
    g.const("model.embed_tokens.weight", table)
    g.node("Gather", ["model.embed_tokens.weight", "input_ids"], ["embeds"], name="embed_tokens/Gather")
    inter = lm.layers[0].mlp.gate_proj.out_features
    g.const("mlp.split", np.array([inter, inter], dtype=np.int64))

    def norm(i: str, x: str, skip: str, weight: nn.Module, out: str, new_residual: str) -> None:
        gamma = g.const(f"{i}.weight", weight.weight.detach().float().numpy())
        if skip:
            g.node(
                "SkipSimplifiedLayerNormalization",
                [x, skip, gamma],
                [out, "", "", new_residual],
                name=f"{i}/SkipSimplifiedLayerNorm",
                epsilon=eps,
            )
        else:
            g.node(
                "SimplifiedLayerNormalization",
                [x, gamma],
                [out],
                name=f"{i}/SimplifiedLayerNorm",
                epsilon=eps,
                axis=-1,
                stash_type=1,
            )

    residual, pending = "embeds", ""
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, cfg.vocab_size])]
    cache = [1, n_kv, max_len, head_dim]
    for i, block in enumerate(lm.layers):
        p = f"model.layers.{i}"
        attn, mlp = block.self_attn, block.mlp
        # the residual stream: x_{i} = residual + pending (the last layer's output), normed
        new_res = f"{p}/residual_in"
        norm(
            f"{p}.input_layernorm",
            pending or residual,
            residual if pending else "",
            block.input_layernorm,
            f"{p}/h",
            new_res,
        )
        residual = new_res if pending else residual
        names = [f"{p}.self_attn.{n}_proj" for n in "qkv"]
        qkv = _linear(g, names, [attn.q_proj, attn.k_proj, attn.v_proj], f"{p}/h", f"{p}/qkv", accuracy_level)
        q, k, v = (qkv[0], "", "") if len(qkv) == 1 else qkv
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kind}.{i}", TensorProto.FLOAT, cache))
            outputs.append(helper.make_tensor_value_info(f"present_{kind}.{i}", TensorProto.FLOAT, cache))
        g.node(
            "GroupQueryAttention",
            [q, k, v, f"past_key.{i}", f"past_value.{i}", "seqlens_k", "total_sequence_length", "rope.cos", "rope.sin"],
            [f"{p}/attn", f"present_key.{i}", f"present_value.{i}"],
            name=f"{p}.self_attn/GroupQueryAttention",
            num_heads=n_heads,
            kv_num_heads=n_kv,
            do_rotary=1,
            rotary_interleaved=0,
            scale=1.0 / math.sqrt(head_dim),
        )
        _linear(g, [f"{p}.self_attn.o_proj"], [attn.o_proj], f"{p}/attn", f"{p}/o", accuracy_level)
        post_res = f"{p}/residual_mid"
        norm(f"{p}.post_attention_layernorm", f"{p}/o", residual, block.post_attention_layernorm, f"{p}/h2", post_res)
        residual = post_res
        gu = _linear(
            g,
            [f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"],
            [mlp.gate_proj, mlp.up_proj],
            f"{p}/h2",
            f"{p}/gate_up",
            accuracy_level,
        )
        if len(gu) == 1:
            g.node("Split", [gu[0], "mlp.split"], [f"{p}/gate", f"{p}/up"], name=f"{p}.mlp/Split", axis=-1)
            gate, up = f"{p}/gate", f"{p}/up"
        else:
            gate, up = gu
        g.node("QuickGelu", [gate], [f"{p}/silu"], name=f"{p}.mlp/SiLU", alpha=1.0)  # x * sigmoid(x)
        g.node("Mul", [f"{p}/silu", up], [f"{p}/act"], name=f"{p}.mlp/Mul")
        _linear(g, [f"{p}.mlp.down_proj"], [mlp.down_proj], f"{p}/act", f"{p}/down", accuracy_level)
        pending = f"{p}/down"
    norm("model.norm", pending, residual, lm.norm, "final/h", "final/residual")
    _linear(g, ["lm_head"], [model.lm_head], "final/h", "logits", accuracy_level)

    graph = helper.make_graph(g.nodes, "llama_decode_step", inputs, outputs, g.inits)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)], producer_name="quantlab"
    )
    proto.ir_version = 10  # ONNX Runtime 1.31 reads IR versions up to 13
    if proto.ByteSize() > PROTOBUF_LIMIT:
        onnx.save(proto, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(proto, str(path))
    return path


# --------------------------------------------------------------------------- the traced step


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

    def forward(
        self, input_ids: torch.Tensor, position: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def export_decoder(
    model: nn.Module, path: PathLike, max_len: int = 128, accuracy_level: int = 4, fused: bool = True
) -> Path:
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
        return export_onnx(
            step,
            example,
            path,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={},
            accuracy_level=accuracy_level,
        )
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step, example, str(path), dynamo=False, opset_version=17, input_names=names_in, output_names=names_out
        )
    return path
