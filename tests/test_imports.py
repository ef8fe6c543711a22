"""The core imports only numpy and torch: the heavy packages of the extras stay out.

Each check runs in a fresh interpreter (this test process has imported everything).
"""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "quantlab",
    "quantlab.formats",
    "quantlab.quantize",
    "quantlab.packing",
    "quantlab.metrics",
    "quantlab.memory",
    "quantlab.nn",
    "quantlab.gptq",
    "quantlab.awq",
    "quantlab.outliers",
    "quantlab.qat",
    "quantlab.calibration",
    "quantlab._model_utils",
]
#: Packages of the extras (book, models, rl, deploy): none may be imported by the core.
HEAVY = [
    "gymnasium",
    "transformers",
    "sklearn",
    "gguf",
    "matplotlib",
    "ipywidgets",
    "scipy",
    "IPython",
    "onnx",
    "onnxruntime",
    "sentence_transformers",
    "tokenizers",
    "accelerate",
    "pandas",
    "PIL",
]
#: Modules outside the core that import their heavy packages on first use only.
LAZY = [
    "quantlab.explorer",
    "quantlab.plotting",
    "quantlab.sweeps",
    "quantlab.evaluation",
    "quantlab.models",
    "quantlab.models.digits",
    "quantlab.models.minilm",
    "quantlab.models.smollm",
    "quantlab.rl",
    "quantlab.book.figures.bits",
    "quantlab.book.figures.fit",
    "quantlab.book.figures.clip",
    "quantlab.book.figures.policy",
]


def _heavy_imported_by(modules: list[str]) -> dict[str, list[str]]:
    """``{module: heavy packages present after importing it}``, importing in order."""
    code = (
        "import importlib, json, sys\n"
        "found = {}\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"    found[m] = [h for h in {HEAVY!r} if h in sys.modules]\n"
        "print(json.dumps(found))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_imports_no_heavy_package():
    found = _heavy_imported_by(CORE)
    assert found == {m: [] for m in CORE}


def test_other_modules_import_heavy_packages_lazily():
    found = _heavy_imported_by(CORE + LAZY)
    assert found == {m: [] for m in CORE + LAZY}


def test_lazy_reexport_of_fake_quantized_copy():
    import quantlab
    from quantlab import _model_utils, qat

    assert quantlab.fake_quantized_copy is _model_utils.fake_quantized_copy
    assert qat.fake_quantized_copy is _model_utils.fake_quantized_copy


def test_layered_names_are_reachable_as_attributes():
    """After ``import quantlab``, ``quantlab.<layer>.<module>`` works as ``quantlab.<module>`` does
    (the notebooks use the layered names), each the same module object; unknown names are
    AttributeErrors."""
    code = (
        "import json, quantlab as ql\n"
        "pairs = [(ql.core.memory, ql.memory), (ql.algorithms.gptq, ql.gptq), (ql.algorithms.qat, ql.qat),\n"
        "         (ql.core.metrics, ql.metrics), (ql.book.sweeps, ql.sweeps)]\n"
        "same = [a is b for a, b in pairs]\n"
        "errors = []\n"
        "for pkg, name in [(ql.core, 'nothing'), (ql.algorithms, '_model_utils_x'), (ql.book, 'gptq')]:\n"
        "    try:\n"
        "        getattr(pkg, name)\n"
        "    except AttributeError as e:\n"
        "        errors.append(str(e))\n"
        "print(json.dumps([same, errors]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    same, errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert same == [True] * 5
    assert errors == [
        "module 'quantlab.core' has no attribute 'nothing'",
        "module 'quantlab.algorithms' has no attribute '_model_utils_x'",
        "module 'quantlab.book' has no attribute 'gptq'",
    ]
