"""Quantized ``nn.Linear`` layers that really store packed codes, and a one-call model swap.

A fake-quantized model (float weights that merely *lie on* a quantization grid) is exactly
as large as the original. Real savings need the codes packed into bytes: an int4 weight
matrix of ``out x in`` values is stored here as ``out * in / 2`` bytes plus its scales.

:class:`QuantizedLinear` stores one packed representation of its weight -- the bytes of
a :class:`~quantlab.quantize.QTensor` -- as buffers (so ``state_dict()`` carries them):

* ``packed`` -- uint8, the codes packed with :func:`quantlab.packing.pack`'s layout
  (``bits`` bits each, little-endian bitstream; 16- and 32-bit casts store the
  fp16/bf16/fp32 bit patterns, two or four bytes each);
* ``scale`` -- the scales *at their storage dtype* (fp16 by default, as most libraries
  do), in the QTensor's shape: ``()``, ``(C,)`` or ``(out_features, n_groups)``;
* ``zero_point`` -- packed like the codes (asymmetric schemes only);
* ``bias`` -- unchanged, in its original dtype;
* ``input_scale`` -- optional, float32 ``(in_features,)``: a per-input-channel factor
  applied to ``x`` first (AWQ's ``1/s`` where no preceding layer can absorb it);

plus a record of how to read them (format, shape, granularity, axis, group size, scale
dtype, ...), which ``state_dict()`` carries too (as the module's extra state), so a
checkpoint of another scheme is refused instead of decoded into garbage.

``forward`` unpacks the codes, rebuilds the weight with
:meth:`QTensor.dequantize <quantlab.quantize.QTensor.dequantize>` -- the same code that
dequantizes any QTensor -- and calls ``F.linear``; nothing dequantized is cached, so the
memory saved stays saved. On a CPU without low-bit integer kernels this is *slower* than
the fp32 layer: every call rebuilds the float weight. ``nbytes`` is the QTensor's too.

The one-call entry point is :func:`quantize_model`; :func:`size_report` measures the
bytes before and after, layer by layer; :func:`save_quantized` and
:func:`load_quantized` write the quantized layers to a ``safetensors`` file and put them
back into a float model of the same architecture::

    import quantlab as ql
    from quantlab.models import minilm
    model = ql.nn.quantize_model(minilm.load_model().encoder, "int8")  # per-channel int8
    print(ql.nn.size_report(model))

Taught in: chapters/04_in_practice.ipynb, "A five-line recipe" and "Real savings need
packed storage".

The package is split by job, each name re-exported here: :mod:`~quantlab.nn.scheme` (the
recipe, whose home is :mod:`quantlab.core.scheme`), :mod:`~quantlab.nn.codes` (stored codes
and format records), :mod:`~quantlab.nn.layout` (the layout record), :mod:`~quantlab.nn.layer`
(the layer), :mod:`~quantlab.nn.model` (whole models), :mod:`~quantlab.nn.size` (the size
report) and :mod:`~quantlab.nn.io` (files).
"""

from __future__ import annotations

from .codes import pack_codes, unpack_codes
from .io import load_quantized, save_quantized
from .layer import QuantizedLinear
from .layout import FILE_VERSION
from .model import SkipLike as SkipLike
from .model import install_results, linear_layers, quantize_model, quantized_layers
from .scheme import PerAxis, PerGroup, PerTensor, QuantScheme
from .scheme import SchemeLike as SchemeLike
from .size import LayerSize, SizeReport, size_report

__all__ = [
    "QuantScheme",
    "PerTensor",
    "PerAxis",
    "PerGroup",
    "QuantizedLinear",
    "quantize_model",
    "install_results",
    "quantized_layers",
    "linear_layers",
    "size_report",
    "SizeReport",
    "LayerSize",
    "pack_codes",
    "unpack_codes",
    "save_quantized",
    "load_quantized",
    "FILE_VERSION",
]

# The public classes keep the name they are documented and pickled under (QuantScheme keeps its
# home, quantlab.core.scheme; a pickle that names quantlab.nn.QuantScheme still finds it here).
for _cls in (QuantizedLinear, LayerSize, SizeReport):
    _cls.__module__ = __name__
del _cls
