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
:class:`quantlab.speed.OrtDecoder` does), nothing is copied. Rotary embedding runs inside
the attention kernel from ``cos``/``sin`` tables of ``max_len`` rows.

Inputs: ``input_ids`` int64 ``(1, 1)``; ``seqlens_k`` int32 ``(1,)`` = ``position``;
``total_sequence_length`` int32 scalar = ``position + 1``; the caches. Outputs: ``logits``
float32 ``(1, 1, vocab)``; ``present_key.i`` / ``present_value.i``.

Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..nn import QuantizedLinear
from .onnx import _MS_DOMAIN, _PROTOBUF_LIMIT, _f32, _kernel_nodes, _plan_layer

__all__ = ["export_llama_decoder", "decoder_session", "DECODER_INPUTS"]

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

        domain = _MS_DOMAIN if op in _MS_OPS else ""
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))


_MS_OPS = {"MatMulNBits", "GroupQueryAttention", "SkipSimplifiedLayerNormalization", "QuickGelu"}


def _stack_key(name: str, layer: nn.Module):
    """Layers with equal keys can be stacked into one weight (rows appended)."""
    if isinstance(layer, QuantizedLinear):
        plan = _plan_layer(name, layer)
        qt = layer.to_qtensor()
        input_scale = getattr(layer, "input_scale", None)
        if plan.op_type == "MatMulInteger" and qt.granularity == "tensor":
            return None  # one scale per tensor: stacking would need one shared scale
        return ("q", plan.op_type, plan.bits, plan.block_size, plan.zero_points, qt.format.name, qt.granularity,
                None if input_scale is None else tuple(_f32(input_scale).ravel().tolist()))
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
    qt = SimpleNamespace(codes=torch.cat([qt.codes for qt in qts]), scale=torch.cat(rows), zero_point=zps,
                         format=qts[0].format, granularity=qts[0].granularity, group_size=qts[0].group_size)
    layer = SimpleNamespace(in_features=layers[0].in_features, out_features=n_out, bias=_stacked_bias(layers))
    return layer, qt


def _stacked_bias(layers: list[nn.Module]) -> Optional[torch.Tensor]:
    """The layers' biases one after the other (zeros for a layer without), or None if none has one."""
    if all(layer.bias is None for layer in layers):
        return None
    return torch.cat([layer.bias.detach().float() if layer.bias is not None else torch.zeros(layer.out_features)
                      for layer in layers])


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
        groups = [(n, [layer], f"{y}.{i}" if len(layers) > 1 else y)
                  for i, (n, layer) in enumerate(zip(names, layers))]
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
        nodes, inits = _kernel_nodes(w, w, x, out, layer, qt, _plan_layer(name, members[0]).op_type,
                                     getattr(members[0], "input_scale", None), accuracy_level)
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
    n_layers = len(lm.layers)

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
            g.node("SkipSimplifiedLayerNormalization", [x, skip, gamma], [out, "", "", new_residual],
                   name=f"{i}/SkipSimplifiedLayerNorm", epsilon=eps)
        else:
            g.node("SimplifiedLayerNormalization", [x, gamma], [out], name=f"{i}/SimplifiedLayerNorm",
                   epsilon=eps, axis=-1, stash_type=1)

    residual, pending = "embeds", ""
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
              helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, [])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, cfg.vocab_size])]
    cache = [1, n_kv, max_len, head_dim]
    for i, block in enumerate(lm.layers):
        p = f"model.layers.{i}"
        attn, mlp = block.self_attn, block.mlp
        # the residual stream: x_{i} = residual + pending (the last layer's output), normed
        new_res = f"{p}/residual_in"
        norm(f"{p}.input_layernorm", pending or residual, residual if pending else "", block.input_layernorm,
             f"{p}/h", new_res)
        residual = new_res if pending else residual
        names = [f"{p}.self_attn.{n}_proj" for n in "qkv"]
        qkv = _linear(g, names, [attn.q_proj, attn.k_proj, attn.v_proj], f"{p}/h", f"{p}/qkv", accuracy_level)
        q, k, v = (qkv[0], "", "") if len(qkv) == 1 else qkv
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kind}.{i}", TensorProto.FLOAT, cache))
            outputs.append(helper.make_tensor_value_info(f"present_{kind}.{i}", TensorProto.FLOAT, cache))
        g.node("GroupQueryAttention",
               [q, k, v, f"past_key.{i}", f"past_value.{i}", "seqlens_k", "total_sequence_length",
                "rope.cos", "rope.sin"],
               [f"{p}/attn", f"present_key.{i}", f"present_value.{i}"], name=f"{p}.self_attn/GroupQueryAttention",
               num_heads=n_heads, kv_num_heads=n_kv, do_rotary=1, rotary_interleaved=0,
               scale=1.0 / math.sqrt(head_dim))
        _linear(g, [f"{p}.self_attn.o_proj"], [attn.o_proj], f"{p}/attn", f"{p}/o", accuracy_level)
        post_res = f"{p}/residual_mid"
        norm(f"{p}.post_attention_layernorm", f"{p}/o", residual, block.post_attention_layernorm, f"{p}/h2",
             post_res)
        residual = post_res
        gu = _linear(g, [f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"], [mlp.gate_proj, mlp.up_proj], f"{p}/h2",
                     f"{p}/gate_up", accuracy_level)
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
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS_DOMAIN, 1)],
                              producer_name="quantlab")
    proto.ir_version = 10  # ONNX Runtime 1.31 reads IR versions up to 13
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save(proto, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(proto, str(path))
    return path


def decoder_session(path: PathLike, threads: int = 1, *, spinning: Optional[bool] = None,
                    profile_prefix: Optional[PathLike] = None):
    """An ONNX Runtime CPU session for a decode step, with its worker threads set for one token.

    The settings of :func:`quantlab.deploy.ort_session` (all graph optimizations,
    ``intra_op_num_threads = threads``, ``session.x64quantprecision = 1``), and a choice of
    how the worker threads wait between kernels. A decode step of SmolLM2 is about 300
    kernel calls of 5-150 us each; with ``threads > 1`` every call hands part of its work to
    the workers and waits for them. A sleeping worker is woken by the kernel (a futex), which
    costs tens of microseconds per call; a spinning worker picks its part up at once.

    * ``spinning=True``: workers spin while a step runs (``session.intra_op.allow_spinning =
      1``) and stop when it returns (``session.force_spinning_stop = 1``), so that an idle
      decoder takes no core from the next one timed in turn or from the caller's own work.
    * ``spinning=False``: workers always sleep (``allow_spinning = 0``), as in
      :func:`~quantlab.deploy.ort_session`. Better where other processes hold the cores: a
      spinning worker then waits for a descheduled thread and burns its own time slice.
    * ``None`` (default): sleep, as ``False``. Measured on a 2-core Intel Xeon at normal
      priority with two decoders timed in turn (as the speed page does), spinning workers
      halved the tokens per second at 2 threads (float32 10.4 against 21.6, int4 36.6 against
      81.9); run alone at raised priority they raised it by 21-49% (the peer benchmark). Spin
      only where the decoder has the cores to itself.

    Args:
        path: an ``.onnx`` decode step (:func:`export_llama_decoder`).
        threads: intra-op threads, a positive int.
        spinning: see above.
        profile_prefix: turn on ONNX Runtime's profiler (see ``ort_session``).

    Returns:
        ``onnxruntime.InferenceSession``.

    Raises:
        TypeError: ``threads`` is not an int, ``spinning`` neither a bool nor None.
        ValueError: ``threads`` < 1, or ``path`` is not a file.

    Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
    """
    import onnxruntime as ort

    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be a positive int, got {threads!r}")
    if threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads}")
    if spinning is not None and not isinstance(spinning, bool):
        raise TypeError(f"spinning must be True, False or None, got {spinning!r}")
    if not Path(path).is_file():
        raise ValueError(f"path is not a file: {str(path)!r}")
    spin = bool(spinning)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
