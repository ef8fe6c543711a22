"""quantlab: quantization of neural networks, explained and measured.

The library behind the chapter "Quantization". Core API::

    import quantlab as ql
    q = ql.quantize(x, "int4", granularity="group", group_size=128)  # numpy or torch
    x_hat = q.dequantize(); q.nbytes; q.bits_per_weight
    ql.metrics.sqnr_db(x, x_hat)
    ql.memory.weight_bytes(7e9, "fp32")  # 28e9

Submodules (``ql.memory``, ``ql.gptq``, ...) are imported on first use, and so is
``ql.fake_quantized_copy(model, "int4", granularity="channel")`` (a copy of a model whose
Linear weights are rounded to a format).

Layout. The package is split into layers; a module imports only from the layers above
its own (and from numpy, torch and the standard library)::

    quantlab/
      core/         number formats, choose_qparams/quantize/dequantize, the QTensor storage
                    type, bit packing, microscaling and GGUF block codecs, metrics, the
                    memory calculator: imports numpy and torch only
                    (formats, quantize, packing, mx, gguf_blocks, metrics, memory,
                    validate, _backend, _fast)
      algorithms/   post-training and training-time quantization of models: gptq, awq, hqq,
                    rotations, imatrix, outliers, calibration, qat, _model_utils
      nn/           QuantizedLinear, QuantScheme, quantize_model, save/load
      deploy/       export: onnx (ONNX Runtime kernels, re-exported as quantlab.deploy),
                    gguf_export (llama.cpp files)
      book/         the chapter's tools: explorer (+ explorer_assets/), plotting, sweeps,
                    evaluation, exercises, rl, rl_train, rl_speed, speed,
                    figures/ (bits, fit, clip, policy, + assets/), models/ (minilm, smollm, digits)
      data/         package data (calibration/evaluation sentences, stored RL policies)

``tests/test_layout.py`` checks the rule. The modules of the former flat layout keep their
names: ``quantlab.gptq`` *is* ``quantlab.algorithms.gptq`` (the same module object in
``sys.modules``), ``quantlab.models.smollm`` is ``quantlab.book.models.smollm``, and so on
(see :data:`MOVED`), so ``import quantlab.gptq`` and ``from quantlab import rl`` work as
before. Classes and functions report their new module in ``__module__`` (and in pickles).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any, Optional, Sequence

#: The modules of the former flat layout and the layer each lives in now:
#: ``quantlab.<name>`` (and ``quantlab.<name>.<sub>``) is ``quantlab.<layer>.<name>[.<sub>]``.
MOVED: dict[str, str] = {
    **dict.fromkeys(
        ["formats", "quantize", "packing", "metrics", "mx", "memory", "gguf_blocks", "_backend", "_fast", "_validate"],
        "core",
    ),
    **dict.fromkeys(
        ["gptq", "awq", "hqq", "rotations", "imatrix", "outliers", "calibration", "qat", "kv_cache", "_model_utils"],
        "algorithms",
    ),
    "gguf_export": "deploy",
    **dict.fromkeys(
        ["explorer", "plotting", "sweeps", "evaluation", "exercises", "rl", "rl_train", "rl_speed", "speed", "models"],
        "book",
    ),
}


def _new_name(fullname: str) -> Optional[str]:
    """``quantlab.<layer>.<name>...`` for a name of the flat layout (``quantlab.<name>...``
    with ``<name>`` in :data:`MOVED`), else None."""
    parts = fullname.split(".")
    if len(parts) < 2 or parts[0] != __name__ or parts[1] not in MOVED:
        return None
    return ".".join([parts[0], MOVED[parts[1]], *parts[1:]])


class _AliasLoader(importlib.abc.Loader):
    """Loads ``quantlab.<name>`` as the module object of ``quantlab.<layer>.<name>``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._target_spec: Optional[importlib.machinery.ModuleSpec] = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """Import the module under its new name and hand that very object to the import system."""
        module = importlib.import_module(self.target)
        self._target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the module ran under its new name); restore its own ``__spec__``,
        which the import system has just replaced with the alias's."""
        module.__spec__ = self._target_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the names of the flat layout (:data:`MOVED`) and maps them to their layer."""

    _quantlab_aliases = True

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        """A spec whose loader returns the moved module, or None (not a moved name, or no
        module at the new name: then the ordinary finders search ``quantlab/`` itself)."""
        new = _new_name(fullname)
        if new is None:
            return None
        module = sys.modules.get(new)
        if module is not None:
            is_package = hasattr(module, "__path__")
        else:
            try:
                found = importlib.util.find_spec(new)
            except ModuleNotFoundError:
                return None
            if found is None:
                return None
            is_package = found.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new), is_package=is_package)


# One finder, ahead of the path finder (which would otherwise load quantlab.models.smollm a
# second time from quantlab.book.models' folder); a re-import of quantlab replaces it.
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "_quantlab_aliases", False)]
sys.meta_path.insert(0, _AliasFinder())

from .core import formats, metrics, packing  # noqa: E402
from .core.formats import (  # noqa: E402
    NF4_VALUES,
    CodebookFormat,
    FloatFormat,
    Format,
    IntFormat,
    codebook,
    get_format,
)
from .core.metrics import cosine_similarity, mean_relative_error, mse, relative_error, sqnr_db  # noqa: E402
from .core.packing import pack, packed_nbytes, unpack  # noqa: E402
from .core.quantize import (  # noqa: E402
    QParams,
    QTensor,
    choose_qparams,
    dequantize,
    fake_quantize,
    quantize,
)

# Register the old names of the modules imported so far. Besides saving a lookup, this keeps
# a later ``import quantlab.quantize`` from binding the module over the function
# ``quantlab.quantize`` (the import system sets the attribute on first import only).
for _old, _layer in MOVED.items():
    if f"{__name__}.{_layer}.{_old}" in sys.modules:
        sys.modules.setdefault(f"{__name__}.{_old}", sys.modules[f"{__name__}.{_layer}.{_old}"])
del _old, _layer

__version__ = "0.1.0"

__all__ = [
    "Format",
    "IntFormat",
    "FloatFormat",
    "CodebookFormat",
    "NF4_VALUES",
    "codebook",
    "get_format",
    "QParams",
    "QTensor",
    "choose_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "pack",
    "unpack",
    "packed_nbytes",
    "mse",
    "relative_error",
    "mean_relative_error",
    "sqnr_db",
    "cosine_similarity",
    "formats",
    "metrics",
    "packing",
]


#: Functions re-exported from submodules, imported on first access: name -> module.
_LAZY_FUNCTIONS = {"fake_quantized_copy": ".algorithms._model_utils"}


def __getattr__(name: str) -> Any:
    """Import submodules such as ``quantlab.memory`` (and the functions of
    ``_LAZY_FUNCTIONS``, e.g. ``quantlab.fake_quantized_copy``) lazily on attribute access."""
    if name in _LAZY_FUNCTIONS:
        value = getattr(importlib.import_module(_LAZY_FUNCTIONS[name], __name__), name)
        globals()[name] = value
        return value
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        module = importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{name}":
            raise AttributeError(f"module 'quantlab' has no attribute {name!r}") from None
        raise
    globals()[name] = module
    return module
