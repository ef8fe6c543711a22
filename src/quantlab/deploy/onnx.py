"""Export quantized models to ONNX Runtime's low-bit CPU kernels.

Dequantizing a weight on every call (what :class:`quantlab.nn.QuantizedLinear` does in
torch) saves memory but no time. The speed comes from kernels that multiply the low-bit
codes directly. :func:`export_onnx` writes an ONNX file in which every
:class:`~quantlab.nn.QuantizedLinear` becomes one of ONNX Runtime's integer kernels, fed
with the layer's *own* codes and scales (nothing is quantized again):

* **8-bit integer weights, per output channel or per tensor** (``"int8"``, ``"uint8"``;
  symmetric or with zero points) become the graph that
  ``onnxruntime.quantization.quantize_dynamic`` writes, and that ONNX Runtime fuses into
  one ``DynamicQuantizeMatMul`` kernel::

      x_q, s_x, z_x = DynamicQuantizeLinear(x)              # uint8 activations, per tensor
      acc = MatMulInteger(x_q, W_q^T, z_x, z_w)             # int32: sum_k (x_q - z_x)(w_q - z_w)
      y   = Cast(acc, float) * (s_x * s_w) + b

* **4- and 8-bit integer weights in groups** of 32, 64 or 128 along the input dimension
  (``"int4"``, ``"uint4"``, ``"int8"``, ``"uint8"``; symmetric or with zero points) become one
  ``com.microsoft.MatMulNBits`` node::

      y[..., n] = sum_k x[..., k] * (u[n, k] - z_u[n, k // g]) * s[n, k // g] + b[n]

  with the codes stored unsigned, ``u = code + 2^(bits-1)`` for signed formats (so a
  signed symmetric weight needs no zero-point input: its default is ``2^(bits-1)``).
  ``accuracy_level=4`` (the default here) lets the kernel quantize ``x`` to int8 in blocks
  of ``g`` and use integer dot products; ``accuracy_level=0`` multiplies in float.

* Everything else (float ``nn.Linear`` layers, norms, activations, attention) is traced
  by ``torch.onnx.export`` and stays float: ``MatMul``/``Gemm``. A model without any
  quantized layer is therefore exported whole in float -- the float baseline comes from
  the same function.

How close ONNX Runtime comes to the quantized torch model. The weights are identical, so
the only differences are the activation rounding of the integer kernels and float
summation order. Per output element ``y[n]`` of one layer:

* MatMulInteger: ``DynamicQuantizeLinear`` rounds each ``x_k`` to a step
  ``s_x = (max(x, 0) - min(x, 0)) / 255`` (one scale per call), so
  ``|y_ort[n] - y_torch[n]| <= (s_x / 2) * sum_k |W_hat[n, k]|``.
* MatMulNBits with ``accuracy_level=4``: ``x`` is rounded in blocks of ``g`` to int8 with
  ``s_b = max_{k in b} |x_k| / 127``, so
  ``|y_ort[n] - y_torch[n]| <= sum_b (s_b / 2) * sum_{k in b} |W_hat[n, k]|``.
  With ``accuracy_level=0`` the difference is float rounding only (~1e-6 relative).

:func:`activation_error_bound` computes these bounds; ``tests/test_deploy.py`` asserts
them element by element (with a 1% margin plus float rounding); the measured worst
element uses 7-34% of its bound. In relative terms, ``||y_ort - y_torch|| / ||y_torch||``:

* one layer, Gaussian inputs: 0.7% (MatMulInteger), 0.55-0.65% (MatMulNBits, g = 32..128);
  asserted below 1.5%;
* an MLP mixing both kernels with a float layer, a transformer block: 0.2-0.7%; asserted
  below 2%;
* one layer with activation outliers (MiniLM): a single activation step for the whole
  input is coarse, so MatMulInteger gives 1.7-3.7% on MiniLM's real activations (3.9% on
  the test's synthetic ones, asserted below 8%), while MatMulNBits, rounding per block,
  gives 0.2-1.8% (asserted below 4%);
* all six MiniLM encoder layers on real sentences (last hidden state): 17% for int8 per
  channel -- the same as ``quantize_dynamic`` applied to the float model, i.e. the cost of
  dynamic per-tensor activations, not of the export -- and 5.6% for int4 g32 at
  ``accuracy_level=4`` (1.4e-6 at ``accuracy_level=0``).

On x86 CPUs without VNNI instructions (AVX2 / AVX-512 only), ONNX Runtime's u8 x s8
kernels add pairs of products in saturating int16 arithmetic (``2 * 255 * 127 > 32767``),
which overflows for int8 weights beyond +-64. :func:`ort_session` sets the session option
``session.x64quantprecision`` so ONNX Runtime switches such weights to u8 x u8 there
(the same codes, shifted by 128, with a zero point of 128); on VNNI CPUs it does nothing.
Sessions made otherwise should set it too.

The building blocks of the export are public for the other graph writers of
:mod:`quantlab.deploy` (the fused decoder, :mod:`quantlab.deploy.decoder`):
:func:`plan_layer` (which kernel a layer maps to), :func:`kernel_nodes` (its nodes),
:func:`as_float32_array`, :data:`MS_DOMAIN` and :data:`PROTOBUF_LIMIT`.

Example::

    import torch, quantlab as ql
    from quantlab.deploy import export_onnx, ort_session
    model = ql.nn.quantize_model(torch.nn.Sequential(torch.nn.Linear(256, 256)),
                                 ql.nn.QuantScheme("int4", group_size=32))
    x = torch.randn(4, 256)
    path = export_onnx(model, x, "model.onnx")
    y = ort_session(path, threads=2).run(None, {"input": x.numpy()})[0]  # (4, 256)

Taught in: chapters/ (Where the speed comes from).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..core.formats import IntFormat
from ..core.quantize import QTensor
from ..nn import QuantizedLinear, quantized_layers

__all__ = [
    "export_onnx",
    "export_float",
    "ort_session",
    "export_plan",
    "LayerExport",
    "activation_error_bound",
    "GROUP_SIZES",
    "DEFAULT_OPSET",
    "DEFAULT_ACCURACY_LEVEL",
]

#: Group sizes (``block_size`` of ``MatMulNBits``) that the exporter accepts.
GROUP_SIZES: tuple[int, ...] = (32, 64, 128)
#: ONNX opset of the exported graph when ``opset=None``.
DEFAULT_OPSET: int = 17
#: ``MatMulNBits`` ``accuracy_level`` when not given: 4 = int8 activations, integer dot products.
DEFAULT_ACCURACY_LEVEL: int = 4

_DOMAIN = "quantlab.deploy"
_PLACEHOLDER = "QuantizedLinear"
#: The operator domain of ONNX Runtime's contrib kernels (``MatMulNBits``, ``GroupQueryAttention``, ...).
MS_DOMAIN = "com.microsoft"
#: Initializer bytes above which a graph's weights go to an external data file: below
#: protobuf's 2 GiB limit, with room for the graph itself.
PROTOBUF_LIMIT = 2**31 - 2**26

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class LayerExport:
    """How one :class:`~quantlab.nn.QuantizedLinear` is exported.

    Attributes:
        name: the layer's module name.
        op_type: ``"MatMulInteger"`` or ``"MatMulNBits"``.
        bits: code width (4 or 8).
        block_size: ``MatMulNBits`` block size (the group size), or None.
        zero_points: whether the weight carries zero points.
    """

    name: str
    op_type: str
    bits: int
    block_size: Optional[int]
    zero_points: bool


def plan_layer(name: str, layer: QuantizedLinear) -> LayerExport:
    """Check that ONNX Runtime has a kernel for ``layer``'s scheme and say which.

    Args:
        name: the layer's name in the model (``""`` for the model itself), for messages.
        layer: the quantized layer.

    Returns:
        The :class:`LayerExport` record: kernel (``MatMulNBits`` or ``MatMulInteger``), bits,
        group size, whether it has zero points.

    Raises:
        ValueError: no ONNX Runtime kernel runs the layer's format, granularity or group size.
    """
    label = repr(name) if name else "the model itself"
    qt = layer.to_qtensor()
    fmt = qt.format
    if not isinstance(fmt, IntFormat):
        raise ValueError(
            f"layer {label} uses format {fmt.name!r}; ONNX Runtime's low-bit kernels take integer "
            "codes only (int4/uint4 in groups, int8/uint8 per channel or in groups)"
        )
    if qt.scale is None:
        raise ValueError(f"layer {label} has no scale ({fmt.name} stored as a plain cast)")
    has_zp = qt.zero_point is not None
    if qt.granularity == "group":
        if fmt.bits not in (4, 8):
            raise ValueError(
                f"layer {label} uses {fmt.name} in groups; MatMulNBits is exported for 4- and "
                f"8-bit codes only, got {fmt.bits} bits"
            )
        if qt.group_size not in GROUP_SIZES:
            raise ValueError(
                f"layer {label} uses group_size={qt.group_size}; MatMulNBits is exported for block sizes {GROUP_SIZES}"
            )
        return LayerExport(name, "MatMulNBits", fmt.bits, qt.group_size, has_zp)
    if fmt.bits != 8:
        raise ValueError(
            f"layer {label} uses {fmt.name} with granularity {qt.granularity!r}; ONNX Runtime runs "
            f"{fmt.bits}-bit codes only in groups (MatMulNBits): quantize with group_size in "
            f"{GROUP_SIZES}"
        )
    if qt.granularity == "channel" and qt.axis not in (0, -2):
        raise ValueError(
            f"layer {label} has one scale per input column (axis={qt.axis}); MatMulInteger "
            "applies weight scales per output channel (axis=0) or per tensor"
        )
    return LayerExport(name, "MatMulInteger", 8, None, has_zp)


def export_plan(model: nn.Module) -> list[LayerExport]:
    """Which ONNX Runtime kernel each quantized layer of ``model`` is exported to.

    Args:
        model: a torch module holding :class:`~quantlab.nn.QuantizedLinear` layers.

    Returns:
        One :class:`LayerExport` per quantized layer, in module order.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a layer's scheme has no ONNX Runtime kernel (the message names the layer
            and the reason): a float or codebook format (nf4, fp8, ...), codes of other than
            4 or 8 bits in groups, a group size outside :data:`GROUP_SIZES`, sub-8-bit codes
            per channel or per tensor, or scales along the input dimension.

    Taught in: chapters/ (Where the speed comes from).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    return [plan_layer(name, layer) for name, layer in quantized_layers(model)]


# --------------------------------------------------------------------------- tracing


class _Slot:
    """The layers being exported, looked up by index while torch traces the model."""

    layers: list = []  # noqa: RUF012 (shared on purpose: set and cleared around one export)


class _QuantizedLinearOp(torch.autograd.Function):
    """Runs a quantized layer in torch and traces as one placeholder ONNX node."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: int) -> torch.Tensor:
        state = torch._C._get_tracing_state()  # run the layer itself without recording it
        torch._C._set_tracing_state(None)
        try:
            return _Slot.layers[index](x)
        finally:
            torch._C._set_tracing_state(state)

    @staticmethod
    def symbolic(g, x, index: int):
        layer = _Slot.layers[index]
        out = g.op(f"{_DOMAIN}::{_PLACEHOLDER}", x, index_i=index)
        sizes = x.type().varyingSizes() if x.type().dim() is not None else None
        if sizes:
            out.setType(x.type().with_sizes(list(sizes[:-1]) + [layer.out_features]))
        return out


class _Placeholder(nn.Module):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuantizedLinearOp.apply(x, self.index)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# --------------------------------------------------------------------------- graph pieces


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name) or "layer"


def as_float32_array(t: torch.Tensor) -> np.ndarray:
    """``t`` (any shape, any float dtype) as a float32 numpy array on the CPU, detached: the
    form every float initializer of an exported graph takes."""
    return t.detach().to(torch.float32).cpu().numpy()


def _i32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.int32).cpu().numpy()


def _matmul_integer_nodes(w: str, p: str, x: str, y: str, layer: QuantizedLinear, qt: QTensor):
    """The graph ``quantize_dynamic`` writes for one MatMul, with the layer's codes."""
    from onnx import TensorProto, helper, numpy_helper

    n_out = layer.out_features
    signed = qt.format.signed
    wdtype = np.int8 if signed else np.uint8
    codes = _i32(qt.codes)
    b = np.ascontiguousarray(codes.T.astype(wdtype))  # (K, N)
    scale = as_float32_array(qt.scale).reshape(-1)
    if qt.zero_point is not None:
        zp = _i32(qt.zero_point).reshape(-1).astype(wdtype)
    else:
        zp = np.zeros(scale.shape, dtype=wdtype)
    if qt.granularity == "tensor":
        scale, zp = scale.reshape(()), zp.reshape(())
    elif scale.shape != (n_out,):
        raise ValueError(f"layer {w!r}: expected {n_out} channel scales, got {scale.shape}")
    inits = [
        numpy_helper.from_array(b, f"{w}.weight_quantized"),
        numpy_helper.from_array(scale.astype(np.float32), f"{w}.weight_scale"),
        numpy_helper.from_array(zp, f"{w}.weight_zero_point"),
    ]
    nodes = [
        helper.make_node(
            "DynamicQuantizeLinear", [x], [f"{p}/x_q", f"{p}/x_scale", f"{p}/x_zp"], name=f"{p}/DynamicQuantizeLinear"
        ),
        helper.make_node("Mul", [f"{p}/x_scale", f"{w}.weight_scale"], [f"{p}/scales"], name=f"{p}/MulScales"),
        helper.make_node(
            "MatMulInteger",
            [f"{p}/x_q", f"{w}.weight_quantized", f"{p}/x_zp", f"{w}.weight_zero_point"],
            [f"{p}/acc"],
            name=f"{p}/MatMulInteger",
        ),
        helper.make_node("Cast", [f"{p}/acc"], [f"{p}/acc_f"], to=TensorProto.FLOAT, name=f"{p}/Cast"),
    ]
    if layer.bias is None:
        nodes.append(helper.make_node("Mul", [f"{p}/acc_f", f"{p}/scales"], [y], name=f"{p}/Mul"))
    else:
        inits.append(numpy_helper.from_array(as_float32_array(layer.bias), f"{w}.bias"))
        nodes.append(helper.make_node("Mul", [f"{p}/acc_f", f"{p}/scales"], [f"{p}/y0"], name=f"{p}/Mul"))
        nodes.append(helper.make_node("Add", [f"{p}/y0", f"{w}.bias"], [y], name=f"{p}/AddBias"))
    return nodes, inits


def _pack_nibbles(u: np.ndarray) -> np.ndarray:
    """Pack 4-bit values along the last axis, the first of each pair in the low nibble."""
    if u.shape[-1] % 2:
        u = np.concatenate([u, np.zeros(u.shape[:-1] + (1,), dtype=u.dtype)], axis=-1)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def _matmul_nbits_nodes(w: str, p: str, x: str, y: str, layer: QuantizedLinear, qt: QTensor, accuracy_level: int):
    """One ``com.microsoft.MatMulNBits`` node holding the layer's codes and scales."""
    from onnx import helper, numpy_helper

    n_out, k_in = layer.out_features, layer.in_features
    bits, g = qt.format.bits, int(qt.group_size)
    n_blocks = k_in // g
    offset = (1 << (bits - 1)) if qt.format.signed else 0
    u = (_i32(qt.codes) + offset).astype(np.uint8)  # (N, K), 0 .. 2^bits - 1
    u = u.reshape(n_out, n_blocks, g)
    packed = _pack_nibbles(u) if bits == 4 else u
    scale = as_float32_array(qt.scale).reshape(n_out, n_blocks)
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(packed), f"{w}.weight_packed"),
        numpy_helper.from_array(np.ascontiguousarray(scale), f"{w}.weight_scales"),
    ]
    inputs = [x, f"{w}.weight_packed", f"{w}.weight_scales"]
    if qt.zero_point is not None:
        zu = (_i32(qt.zero_point).reshape(n_out, n_blocks) + offset).astype(np.uint8)
        zu = _pack_nibbles(zu) if bits == 4 else zu
        inits.append(numpy_helper.from_array(np.ascontiguousarray(zu), f"{w}.weight_zero_points"))
        inputs.append(f"{w}.weight_zero_points")
    else:
        inputs.append("")
    if layer.bias is not None:
        inits.append(numpy_helper.from_array(as_float32_array(layer.bias), f"{w}.bias"))
        inputs += ["", f"{w}.bias"]
    while inputs[-1] == "":
        inputs.pop()
    attrs = dict(K=k_in, N=n_out, bits=bits, block_size=g)
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    node = helper.make_node("MatMulNBits", inputs, [y], name=f"{p}/MatMulNBits", domain=MS_DOMAIN, **attrs)
    return [node], inits


def kernel_nodes(w: str, p: str, x: str, y: str, layer, qt, op_type: str, input_scale, accuracy_level: int):
    """The nodes of one quantized layer: a ``Mul`` by its input scale if it has one (AWQ's
    ``1/s``), then its kernel (``op_type`` from :func:`plan_layer`). ``w`` prefixes the
    initializers, ``p`` the node and value names."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    if input_scale is not None:
        inits.append(numpy_helper.from_array(as_float32_array(input_scale), f"{w}.input_scale"))
        nodes.append(helper.make_node("Mul", [x, f"{w}.input_scale"], [f"{p}/x_scaled"], name=f"{p}/InputScale"))
        x = f"{p}/x_scaled"
    if op_type == "MatMulInteger":
        more_nodes, more = _matmul_integer_nodes(w, p, x, y, layer, qt)
    else:
        more_nodes, more = _matmul_nbits_nodes(w, p, x, y, layer, qt, accuracy_level)
    return nodes + more_nodes, inits + more


# --------------------------------------------------------------------------- export


def _as_inputs(example_input, float32: bool = True) -> tuple[torch.Tensor, ...]:
    if isinstance(example_input, torch.Tensor):
        inputs = (example_input,)
    elif (
        isinstance(example_input, (tuple, list))
        and example_input
        and all(isinstance(t, torch.Tensor) for t in example_input)
    ):
        inputs = tuple(example_input)
    else:
        raise TypeError(
            f"example_input must be a torch.Tensor or a non-empty tuple of tensors, got {type(example_input).__name__}"
        )
    for i, t in enumerate(inputs):
        if float32 and t.is_floating_point() and t.dtype != torch.float32:
            raise ValueError(
                f"example_input[{i}] has dtype {t.dtype}; the integer kernels take float32 "
                "activations, so export a float32 model with float32 inputs"
            )
    return inputs


def export_onnx(
    model: nn.Module,
    example_input: Union[torch.Tensor, Sequence[torch.Tensor]],
    path: PathLike,
    *,
    opset: Optional[int] = None,
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL,
    input_names: Optional[Sequence[str]] = None,
    output_names: Optional[Sequence[str]] = None,
    dynamic_axes: Optional[dict] = None,
) -> Path:
    """Write ``model`` as an ONNX file whose quantized layers run ONNX Runtime's integer kernels.

    ``torch.onnx.export`` (the TorchScript exporter, which works offline) traces the model
    with each :class:`~quantlab.nn.QuantizedLinear` standing in as one placeholder node;
    each placeholder is then replaced by the kernel for its scheme, built from the layer's
    stored codes and scales (``QuantizedLinear.to_qtensor()``), bias and input scale:

    * 8-bit codes per output channel or per tensor -> ``DynamicQuantizeLinear`` +
      ``MatMulInteger`` + ``Cast`` + ``Mul`` (+ ``Add`` for the bias)::

          y = float(sum_k (q(x)_k - z_x) (code[n, k] - z_w[n])) * s_x * s_w[n] + b[n]

    * 4- or 8-bit codes in groups of ``g`` in :data:`GROUP_SIZES` -> ``com.microsoft.MatMulNBits``
      (``bits``, ``block_size=g``, ``K``, ``N``, ``accuracy_level``)::

          y[n] = sum_k x_k * (code[n, k] - z[n, k // g]) * s[n, k // g] + b[n]

    * float layers and all other operations -> their usual float ONNX operators.

    A layer with an input scale (AWQ's ``1/s``) gets a ``Mul`` by that vector in front.
    The model is left as it was (its layers are swapped back after tracing).

    Tolerance: for one layer, ``|y_ort - y_torch| <= activation_error_bound(...)`` (half an
    activation quantization step times ``sum_k |W_hat[n, k]|``) plus float rounding;
    relative (Frobenius) errors measured ~0.7% per layer on Gaussian inputs (tests: < 1.5%),
    0.2-0.7% through an MLP or a transformer block (tests: < 2%), more for per-tensor
    activation steps on inputs with outliers (see the module docstring).

    Args:
        model: a torch module with :class:`~quantlab.nn.QuantizedLinear` layers and/or float
            ``nn.Linear`` layers (left float; a model without quantized layers is the float
            baseline). float32 weights where there are quantized layers.
        example_input: a tensor, or a tuple of tensors, to trace ``model`` with, e.g.
            ``(batch, in_features)`` for an MLP or ``(batch, seq, d_model)``; float inputs
            must be float32 when the model has quantized layers.
        path: the ``.onnx`` file to write (its folder must exist; a new file or a regular
            file to replace).
        opset: ONNX opset of the default domain, at least 11 (``DynamicQuantizeLinear``);
            None means :data:`DEFAULT_OPSET`.
        accuracy_level: ``MatMulNBits`` ``accuracy_level``: 0 (unset: float arithmetic) or 1 to
            4; 4 (the default) quantizes activations to int8 in blocks and runs integer dot
            products, the fast path on CPUs.
        input_names: names of the graph inputs (default ``"input"``, or ``"input_0"``,
            ``"input_1"``, ... for several).
        output_names: names of the graph outputs (default ``"output"`` / ``"output_0"``, ...).
        dynamic_axes: as for ``torch.onnx.export``; default: axis 0 of every input and output
            is dynamic (``"batch"``).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``example_input`` is not a tensor (or
            tuple of tensors), or ``opset`` / ``accuracy_level`` is not an int.
        ValueError: a layer's scheme has no kernel (see :func:`export_plan`; the message
            names the layer); ``opset`` below 11, ``accuracy_level`` outside 0..4, a
            non-float32 floating input to a model with quantized layers; a ``path`` whose
            folder does not exist or that names a directory, FIFO or device.

    Taught in: chapters/ (Where the speed comes from).
    """
    import onnx
    from onnx import helper

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if opset is None:
        opset = DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int or None, got {opset!r}")
    if opset < 11:
        raise ValueError(f"opset must be at least 11 (DynamicQuantizeLinear), got {opset}")
    if isinstance(accuracy_level, bool) or not isinstance(accuracy_level, int):
        raise TypeError(f"accuracy_level must be an int, got {accuracy_level!r}")
    if not 0 <= accuracy_level <= 4:
        raise ValueError(f"accuracy_level must be 0, 1, 2, 3 or 4, got {accuracy_level}")
    layers = quantized_layers(model)
    inputs = _as_inputs(example_input, float32=bool(layers))
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path's folder does not exist: {str(path.parent)!r}")
    if path.exists() and not path.is_file():
        raise ValueError(f"path {str(path)!r} names a directory, FIFO or device, not a file to write")
    plan = [plan_layer(name, layer) for name, layer in layers]

    n_in = len(inputs)
    if input_names is None:
        input_names = ["input"] if n_in == 1 else [f"input_{i}" for i in range(n_in)]
    input_names = list(input_names)
    if output_names is not None:
        output_names = list(output_names)

    if isinstance(model, QuantizedLinear):  # the model is one layer: trace it inside a container
        wrapped: nn.Module = nn.Sequential(model)
        layers = [("0", model)]
    else:
        wrapped = model

    with torch.no_grad():
        probe = wrapped(*inputs)
    n_out = len(torch.utils._pytree.tree_leaves(probe))  # the exporter flattens nested outputs
    if output_names is None:
        output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    if dynamic_axes is None:
        dynamic_axes = {n: {0: "batch"} for n in list(input_names) + list(output_names)}

    _Slot.layers = [layer for _, layer in layers]
    was_training = wrapped.training
    traced = io.BytesIO()
    try:
        for i, (name, _) in enumerate(layers):
            _set_module(wrapped, name, _Placeholder(i))
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                inputs,
                traced,
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                custom_opsets={_DOMAIN: 1} if layers else None,
                do_constant_folding=True,
            )
    finally:
        for name, layer in layers:
            _set_module(wrapped, name, layer)
        _Slot.layers = []
        wrapped.train(was_training)

    proto = onnx.load_from_string(traced.getvalue())
    graph = proto.graph
    taken = {t.name for t in graph.initializer}
    prefixes: dict[int, str] = {}
    calls: dict[int, int] = {}
    new_nodes = []
    for node in graph.node:
        if node.domain != _DOMAIN:
            new_nodes.append(node)
            continue
        index = next(a.i for a in node.attribute if a.name == "index")
        name, layer = layers[index]
        first = index not in prefixes
        if first:
            w = _safe(plan[index].name or name)
            while any(t.startswith(w + ".") for t in taken):
                w += "_q"
            prefixes[index] = w
        w = prefixes[index]  # initializers: one set per layer, however often it is called
        calls[index] = calls.get(index, 0) + 1
        p = w if calls[index] == 1 else f"{w}/call{calls[index]}"  # node and value names
        nodes, inits = kernel_nodes(
            w,
            p,
            node.input[0],
            node.output[0],
            layer,
            layer.to_qtensor(),
            plan[index].op_type,
            getattr(layer, "input_scale", None),
            accuracy_level,
        )
        new_nodes.extend(nodes)
        if first:
            graph.initializer.extend(inits)
            taken.update(t.name for t in inits)
    del graph.node[:]
    graph.node.extend(new_nodes)
    keep = [o for o in proto.opset_import if o.domain != _DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    uses_ms = any(n.domain == MS_DOMAIN for n in graph.node)
    if uses_ms and not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    if proto.ByteSize() > PROTOBUF_LIMIT:
        onnx.save(proto, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(proto, str(path))
    return path


def export_float(model: nn.Module, example_input: torch.Tensor, path: PathLike, opset: int = 17) -> Path:
    """Write a float torch module as ONNX (TorchScript exporter), batch axis dynamic.

    The float counterpart of :func:`export_onnx`: input ``"input"``, output ``"output"``,
    axis 0 of both named ``"batch"``. (Once moved here from ``quantlab.book.speed``, which
    still re-exports it.)

    Args:
        model: a float torch module taking one tensor.
        example_input: an input of the right shape (its batch axis becomes dynamic).
        path: the ``.onnx`` file to write.
        opset: the ONNX opset.

    Returns:
        ``path`` as a Path.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Taught in: chapters/04c_speed.ipynb (Where the speed comes from).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example_input,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return path


# --------------------------------------------------------------------------- running


def ort_session(path: PathLike, threads: int = 1, profile_prefix: Optional[PathLike] = None):
    """An ONNX Runtime CPU ``InferenceSession`` for an exported file.

    Graph optimizations are all on (``ORT_ENABLE_ALL``: ONNX Runtime fuses
    ``DynamicQuantizeLinear`` + ``MatMulInteger`` + scales into ``DynamicQuantizeMatMul``),
    ``intra_op_num_threads = threads``, ``session.x64quantprecision = 1`` (int8 weights
    are run as u8 x u8 on x86 CPUs without VNNI, where u8 x s8 saturates; no effect elsewhere)
    and ``session.intra_op.allow_spinning = 0`` (idle worker threads sleep, so that sessions
    timed in turn do not compete with each other's spinning threads).

    Args:
        path: an ``.onnx`` file (e.g. from :func:`export_onnx`).
        threads: intra-op threads, a positive int.
        profile_prefix: if given, ONNX Runtime's profiler records every kernel call and
            ``session.end_profiling()`` writes them to a JSON file starting with this path.

    Returns:
        ``onnxruntime.InferenceSession``.

    Raises:
        TypeError: ``threads`` is not an int.
        ValueError: ``threads`` < 1, or ``path`` is not a file.

    Taught in: chapters/ (Where the speed comes from).
    """
    import onnxruntime as ort

    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be a positive int, got {threads!r}")
    if threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads}")
    if not Path(path).is_file():
        raise ValueError(f"path is not a file: {str(path)!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    # Worker threads sleep when idle instead of spinning: a spinning thread keeps a core busy
    # after its run, taking it from the next session timed in turn (or from other work on a
    # shared machine); measured on 2 cores, 2-thread decoding was 2x slower with spinning.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- tolerance


def activation_error_bound(
    layer: QuantizedLinear, x: torch.Tensor, *, accuracy_level: int = DEFAULT_ACCURACY_LEVEL
) -> torch.Tensor:
    """Worst-case ``|y_ort - y_torch|`` of one exported layer from activation rounding.

    The weights are the same codes and scales on both sides; the integer kernels round
    the activations ``x`` (after the layer's input scale, if any):

    * MatMulInteger (8-bit codes per channel / per tensor): one step
      ``s_x = (max(x, 0) - min(x, 0)) / 255`` for the whole input, so
      ``bound[..., n] = (s_x / 2) * sum_k |W_hat[n, k]|``.
    * MatMulNBits, ``accuracy_level=4``: int8 with ``s_b = max_{k in b} |x_k| / 127`` per
      block ``b`` of ``g`` inputs of each row, so
      ``bound[..., n] = sum_b (s_b / 2) * sum_{k in b} |W_hat[n, k]|``.
    * MatMulNBits, ``accuracy_level`` 2 or 3 (x may be cast to fp16 / bf16, unit roundoff
      ``u = 2^-11`` / ``2^-8``): ``bound[..., n] = u * sum_k |x_k| |W_hat[n, k]|``.
    * MatMulNBits, ``accuracy_level`` 0 or 1: zero (fp32 arithmetic).

    Float summation adds about ``1e-6 * sum_k |x_k W_hat[n, k]|`` to each case.

    Args:
        layer: the :class:`~quantlab.nn.QuantizedLinear`.
        x: its input, float tensor ``(..., in_features)``.
        accuracy_level: the ``MatMulNBits`` accuracy level of the export (0 to 4).

    Returns:
        float32 tensor ``(..., out_features)``.

    Raises:
        TypeError: ``layer`` is not a QuantizedLinear or ``x`` not a tensor.
        ValueError: ``x``'s last dimension is not ``in_features``; ``accuracy_level``
            outside 0..4; a scheme without kernel (see :func:`export_plan`).

    Taught in: chapters/ (Where the speed comes from).
    """
    if not isinstance(layer, QuantizedLinear):
        raise TypeError(f"layer must be a QuantizedLinear, got {type(layer).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != layer.in_features:
        raise ValueError(f"x must have last dimension {layer.in_features}, got shape {tuple(x.shape)}")
    if isinstance(accuracy_level, bool) or accuracy_level not in (0, 1, 2, 3, 4):
        raise ValueError(f"accuracy_level must be 0, 1, 2, 3 or 4, got {accuracy_level!r}")
    how = plan_layer("", layer)
    qt = layer.to_qtensor()
    x = x.detach().float()
    input_scale = getattr(layer, "input_scale", None)
    if input_scale is not None:
        x = x * input_scale.float()
    w_abs = torch.as_tensor(qt.dequantize()).float().abs()  # (N, K)
    lead, n_out = x.shape[:-1], layer.out_features
    if how.op_type == "MatMulInteger":
        step = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 255
        return ((step / 2) * w_abs.sum(dim=1)).expand(*lead, n_out).clone()
    if accuracy_level in (2, 3):
        u = 2.0**-11 if accuracy_level == 2 else 2.0**-8
        return u * (x.abs() @ w_abs.T)
    if accuracy_level < 4:
        return torch.zeros(*lead, n_out)
    g = int(how.block_size)
    xb = x.reshape(-1, layer.in_features // g, g)
    step = xb.abs().amax(dim=-1) / 127  # (M, n_blocks)
    wb = w_abs.reshape(n_out, -1, g).sum(dim=-1)  # (N, n_blocks)
    return ((step / 2) @ wb.T).reshape(*lead, n_out)
