"""The algorithms layer: quantizing models, not just tensors. Imports :mod:`quantlab.core`.

:mod:`~quantlab.algorithms.gptq`, :mod:`~quantlab.algorithms.awq`,
:mod:`~quantlab.algorithms.hqq`, :mod:`~quantlab.algorithms.rotations`,
:mod:`~quantlab.algorithms.imatrix` (importance-weighted rounding),
:mod:`~quantlab.algorithms.outliers`, :mod:`~quantlab.algorithms.calibration` (layer
statistics from calibration data), :mod:`~quantlab.algorithms.qat` (quantization-aware
training) and ``_model_utils`` (fake-quantized copies of models, input hooks).
"""

from types import ModuleType

from quantlab.core.lazy import submodule


def __getattr__(name: str) -> ModuleType:
    """``quantlab.algorithms.<module>`` after a plain ``import quantlab`` (:func:`quantlab.core.lazy.submodule`)."""
    return submodule(__name__, name)
