"""The algorithms layer: quantizing models, not just tensors. Imports :mod:`quantlab.core`.

:mod:`~quantlab.algorithms.gptq`, :mod:`~quantlab.algorithms.awq`,
:mod:`~quantlab.algorithms.hqq`, :mod:`~quantlab.algorithms.rotations`,
:mod:`~quantlab.algorithms.imatrix` (importance-weighted rounding),
:mod:`~quantlab.algorithms.outliers`, :mod:`~quantlab.algorithms.calibration` (layer
statistics from calibration data), :mod:`~quantlab.algorithms.qat` (quantization-aware
training) and ``_model_utils`` (fake-quantized copies of models, input hooks).
"""

import importlib
from types import ModuleType


def __getattr__(name: str) -> ModuleType:
    """Import a submodule on first attribute access, so that ``quantlab.algorithms.<module>``
    works after a plain ``import quantlab`` (as ``quantlab.<module>`` does)."""
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
