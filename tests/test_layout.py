"""The package layout: layers that import only from the layers above them, and the module
names of the former flat layout as aliases of the moved modules.

The layers, top to bottom (see the docstring of ``quantlab/__init__.py``)::

    core -> algorithms -> nn -> deploy -> book

A module may import from its own layer and from the layers above it, never from one below.

Two more rules keep the modules apart: no module imports another module's private
(underscore) names, and the module-level imports between quantlab modules form no cycle.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import quantlab

PACKAGE = Path(quantlab.__file__).resolve().parent
LAYERS = ("core", "algorithms", "nn", "deploy", "book")
RANK = {layer: i for i, layer in enumerate(LAYERS)}

#: Imports against the rule, each with its reason. Each must be inside a function (imported
#: on first use), so that importing the module never loads the lower layer.
EXCEPTIONS: dict[tuple[str, str], str] = {}
#: Names a module may import from the package root itself (which imports the core).
ROOT_NAMES = {"__version__"}
#: Third-party packages the core may import; anything else must be the standard library.
CORE_THIRD_PARTY = {"numpy", "torch"}
#: Packages of the extras that ``import quantlab.core`` must not load.
HEAVY = [
    "gymnasium",
    "transformers",
    "sklearn",
    "gguf",
    "matplotlib",
    "scipy",
    "onnx",
    "onnxruntime",
    "ipywidgets",
    "IPython",
    "sentence_transformers",
    "tokenizers",
    "pandas",
]


@dataclass(frozen=True)
class Import:
    """One import statement of a module: the module it names (absolute), the names it takes
    (``from X import a, b``), and whether it runs at import time (module level)."""

    target: str
    names: tuple[str, ...]
    module_level: bool
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` tests ``TYPE_CHECKING`` (its imports serve annotations only)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _from_target(package: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement of a module in ``package`` names."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, source: str, is_package: bool = False) -> list[Import]:
    """Every import of a module's source (including those inside functions), made absolute;
    ``module_level`` is False for those inside functions and ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    in_function: set[int] = set()  # imports that do not run when the module is imported
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            in_function.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, (), id(node) not in in_function, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(package, node)
            names = tuple(a.name for a in node.names)
            found.append(Import(target, names, id(node) not in in_function, node.lineno))
    return found


def _module_imports(name: str, path: Path) -> list[Import]:
    return _imports(name, path.read_text("utf-8"), path.name == "__init__.py")


def _layer(module: str) -> str | None:
    """The layer of a quantlab module (old names mapped through ``quantlab.MOVED``); ``"root"``
    for the package itself; None outside quantlab."""
    parts = module.split(".")
    if parts[0] != "quantlab":
        return None
    if len(parts) == 1:
        return "root"
    if parts[1] in quantlab.MOVED:
        return quantlab.MOVED[parts[1]]
    return parts[1] if parts[1] in RANK else "unknown"


def test_every_module_lives_in_a_layer():
    """No module file directly in ``quantlab/`` (besides ``__init__``): a module of the flat
    layout is moved into its layer (``git mv``) and keeps its old name through ``MOVED``."""
    outside = [m for m in _modules() if m != "quantlab" and m.split(".")[1] not in RANK]
    assert outside == [], f"modules outside core/algorithms/nn/deploy/book: {outside}"


def _violations(name: str, imports: list[Import], used_exceptions: set) -> list[str]:
    """The imports of module ``name`` that break the layer rule (exceptions used are added
    to ``used_exceptions``)."""
    own, bad = _layer(name), []
    for imp in imports:
        target_layer = _layer(imp.target)
        if target_layer is None:
            continue
        where = f"{name}:{imp.line} imports {imp.target}"
        if target_layer == "root":
            if name != "quantlab" and not set(imp.names) <= ROOT_NAMES:
                bad.append(f"{where} {imp.names} (only {sorted(ROOT_NAMES)} from the root)")
        elif own == "root":
            if target_layer != "core" and imp.module_level:
                bad.append(f"{where} (the root imports only the core eagerly)")
        elif target_layer not in RANK:
            bad.append(f"{where} (a module outside the layers)")
        elif RANK[target_layer] > RANK[own]:
            key = (name, imp.target)
            if key in EXCEPTIONS and not imp.module_level:
                used_exceptions.add(key)
            else:
                bad.append(f"{where} ({own} must not import {target_layer})")
    return bad


def test_each_layer_imports_only_from_the_layers_above_it():
    violations: list[str] = []
    used_exceptions: set = set()
    for name, path in _modules().items():
        violations += _violations(name, _module_imports(name, path), used_exceptions)
    assert violations == []
    assert used_exceptions == set(EXCEPTIONS), "an exception no longer needed: remove it"


def test_the_rule_checker_flags_imports_from_lower_layers():
    source = (
        "import numpy as np\n"
        "from . import formats\n"
        "from ..nn import QuantizedLinear\n"
        "def f():\n"
        "    from ..book import rl\n"
        "    import quantlab.gptq\n"
        "from .. import __version__, nn\n"
    )
    imports = _imports("quantlab.core.example", source)
    assert [(i.target, i.module_level) for i in imports] == [
        ("numpy", True),
        ("quantlab.core", True),
        ("quantlab.nn", True),
        ("quantlab", True),
        ("quantlab.book", False),
        ("quantlab.gptq", False),
    ]
    bad = _violations("quantlab.core.example", imports, set())
    assert [b.split(" imports ")[1].split(" ")[0] for b in bad] == [
        "quantlab.nn",
        "quantlab",
        "quantlab.book",
        "quantlab.gptq",
    ]
    # the same targets are all allowed in the book layer, except ``nn`` from the root
    assert _violations("quantlab.book.example", imports, set()) == [
        bad[1].replace("quantlab.core.example", "quantlab.book.example")
    ]


def test_core_imports_only_numpy_torch_and_the_standard_library():
    allowed = CORE_THIRD_PARTY | set(sys.stdlib_module_names) | {"quantlab"}
    bad = []
    for name, path in _modules().items():
        if _layer(name) != "core":
            continue
        for imp in _module_imports(name, path):
            top = imp.target.split(".")[0]
            if top and top not in allowed:
                bad.append(f"{name}:{imp.line} imports {imp.target}")
    assert bad == []


# --------------------------------------------------------------------------- private names

#: Imports of another module's private names, each with its reason. Empty: a name another
#: module needs is public (documented) in the module that owns it.
PRIVATE_EXCEPTIONS: dict[tuple[str, str, str], str] = {}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_imports(name: str, source: str, modules: set[str], is_package: bool = False) -> list[str]:
    """The private names module ``name`` takes from other quantlab modules: ``from M import
    _x`` (``_x`` not itself a submodule of ``M``) and ``m._x`` on a quantlab module ``m`` it
    imported, as ``"name:line takes M._x"``."""
    tree = ast.parse(source)
    found = []
    aliases: dict[str, str] = {}  # local name -> quantlab module it is bound to
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("quantlab"):
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(package, node)
            if not target.startswith("quantlab"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in modules or _resolve(full) in modules:
                    aliases[alias.asname or alias.name] = full
                elif _private(alias.name) and _resolve(target) != name:
                    found.append(f"{name}:{node.lineno} takes {target}.{alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _resolve(aliases[node.value.id]) != name
        ):
            found.append(f"{name}:{node.lineno} takes {aliases[node.value.id]}.{node.attr}")
    return found


def _resolve(module: str) -> str:
    """The module's own name for a name of the flat layout (``quantlab.gptq`` ->
    ``quantlab.algorithms.gptq``); other names unchanged."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "quantlab" and parts[1] in quantlab.MOVED:
        return ".".join(["quantlab", quantlab.MOVED[parts[1]], *parts[1:]])
    return module


def test_no_module_imports_another_modules_private_names():
    """A name that starts with ``_`` belongs to its module; one that another module needs is
    made public (documented) where it lives, or moved to the module that uses it."""
    modules = _modules()
    found, used = [], set()
    for name, path in modules.items():
        for hit in _private_imports(name, path.read_text("utf-8"), set(modules), path.name == "__init__.py"):
            key = (name, *hit.split(" takes ")[1].rsplit(".", 1))
            if key in PRIVATE_EXCEPTIONS:
                used.add(key)
            else:
                found.append(hit)
    assert found == []
    assert used == set(PRIVATE_EXCEPTIONS), "an exception no longer needed: remove it"


def test_the_private_name_checker_flags_both_forms():
    source = (
        "from . import quantize, _backend\n"
        "from .quantize import QTensor, _store\n"
        "from ..deploy import onnx as ox\n"
        "import quantlab.core.mx as mx\n"
        "def f():\n"
        "    return ox._f32, mx.decode_blocks, quantize._choose, _backend.as_tensor, ox.__name__\n"
        "    from quantlab.gptq import _check_damp\n"
    )
    modules = {
        "quantlab.core.quantize",
        "quantlab.core._backend",
        "quantlab.deploy.onnx",
        "quantlab.core.mx",
        "quantlab.algorithms.gptq",
    }
    hits = _private_imports("quantlab.core.example", source, modules)
    assert sorted(h.split(" takes ")[1] for h in hits) == sorted(
        [
            "quantlab.core.quantize._store",
            "quantlab.deploy.onnx._f32",
            "quantlab.core.quantize._choose",
            "quantlab.gptq._check_damp",
        ]
    )
    # a module may use its own private names through any of its names
    assert _private_imports("quantlab.algorithms.gptq", "from quantlab.gptq import _check_damp\n", modules) == []


# --------------------------------------------------------------------------- import cycles


def _import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the quantlab modules its module-level imports load (``from P import m`` of
    a submodule ``m`` counts as ``P.m``; flat-layout names are resolved)."""
    graph: dict[str, set[str]] = {}
    for name, (source, is_package) in sources.items():
        edges = graph.setdefault(name, set())
        for imp in _imports(name, source, is_package):
            if not imp.module_level or not imp.target.startswith("quantlab"):
                continue
            target = _resolve(imp.target)
            subs = [f"{target}.{n}" for n in imp.names if f"{target}.{n}" in sources]
            edges.update(subs or [target])
            if subs and len(subs) < len(imp.names):
                edges.add(target)
        edges.discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    """Module-level imports between quantlab modules form no cycle (an import inside a
    function or under ``if TYPE_CHECKING:`` runs later, and is not counted)."""
    sources = {name: (path.read_text("utf-8"), path.name == "__init__.py") for name, path in _modules().items()}
    graph = _import_graph(sources)
    assert sum(len(e) for e in graph.values()) > 100  # the graph was read
    assert _cycles(graph) == []


def test_the_cycle_checker_finds_a_cycle():
    sources = {
        "quantlab.core.a": ("from . import b\n", False),
        "quantlab.core.b": ("from .c import thing\n", False),
        "quantlab.core.c": (
            "from typing import TYPE_CHECKING\nfrom .a import x\nif TYPE_CHECKING:\n    from .d import T\n",
            False,
        ),
        "quantlab.core.d": ("from .c import y\ndef f():\n    from .a import z\n", False),
    }
    graph = _import_graph(sources)
    assert graph["quantlab.core.c"] == {"quantlab.core.a"}  # the TYPE_CHECKING import is left out
    assert _cycles(graph) == [["quantlab.core.a", "quantlab.core.b", "quantlab.core.c"]]
    sources["quantlab.core.c"] = ("def g():\n    from .a import x\n", False)
    assert _cycles(_import_graph(sources)) == []


# --------------------------------------------------------------------------- old names


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


OLD_NAMES = sorted(quantlab.MOVED) + ["models.minilm", "models.smollm", "models.digits"]


@pytest.mark.parametrize("old", OLD_NAMES)
def test_old_module_name_is_the_same_module_object(old):
    new = f"quantlab.{quantlab.MOVED[old.split('.')[0]]}.{old}"
    if not _present(new):
        pytest.skip(f"{new} is not in this tree")
    module = importlib.import_module(f"quantlab.{old}")
    assert module is importlib.import_module(new)
    assert sys.modules[f"quantlab.{old}"] is sys.modules[new]
    assert module.__name__ == new and module.__spec__.name == new  # its own spec, not the alias's


def test_every_moved_module_has_its_old_name():
    """Each module of a layer keeps its flat-layout name in ``quantlab.MOVED``, besides
    ``deploy.onnx`` (the former ``quantlab.deploy``) and the modules written after the layers
    were introduced, which never had a flat name."""
    new_only = {
        "quantlab.deploy.onnx",
        "quantlab.deploy.decoder",
        "quantlab.deploy.runtime",
        "quantlab.deploy.profiling",
        "quantlab.deploy.shipped",
        "quantlab.deploy.gguf_llama",
        "quantlab.core.validate",
        "quantlab.core.lazy",
        "quantlab.core.scheme",
        "quantlab.core.qparams",
        "quantlab.core.qtensor",
        *(f"quantlab.core.memory_{m}" for m in ("weights", "catalog", "state", "rlhf")),
        *(f"quantlab.core.gguf_{m}" for m in ("layout", "legacy", "ternary", "kquants")),
        *(f"quantlab.nn.{m}" for m in ("scheme", "codes", "layout", "layer", "model", "size", "io")),
        "quantlab.book.course",
        "quantlab.book.speed_facts",
        "quantlab.book.speed_run",
        "quantlab.book.figures",
        "quantlab.book.smollm_study",
        *(f"quantlab.book.rl_{m}" for m in ("policy", "reinforce", "quantize", "qat", "stored")),
        *(f"quantlab.book.exercises_{m}" for m in ("common", "quantizers", "packing", "gptq")),
    }
    missing = []
    for name in _modules():
        parts = name.split(".")
        if len(parts) == 3 and parts[1] in RANK and name not in new_only and quantlab.MOVED.get(parts[2]) != parts[1]:
            missing.append(name)
    assert missing == []


def test_old_import_forms_still_work():
    import quantlab.gptq
    import quantlab.models.smollm
    import quantlab.quantize
    from quantlab.gptq import gptq_quantize_model

    import quantlab as ql
    from quantlab import _model_utils, rl
    from quantlab.algorithms import gptq
    from quantlab.book.models import smollm
    from quantlab.nn import QuantScheme

    assert quantlab.gptq is gptq and gptq_quantize_model is gptq.gptq_quantize_model
    assert rl is importlib.import_module("quantlab.book.rl")
    assert quantlab.models.smollm is smollm and ql.models.smollm is smollm
    assert QuantScheme is ql.core.scheme.QuantScheme and QuantScheme.__module__ == "quantlab.core.scheme"
    assert ql.memory.weight_bytes(7e9, "fp32") == 28e9
    assert ql.memory is importlib.import_module("quantlab.core.memory")
    assert ql.deploy.export_onnx is importlib.import_module("quantlab.deploy.onnx").export_onnx
    assert ql.gguf_blocks is importlib.import_module("quantlab.core.gguf_blocks")
    assert ql.gguf_export is importlib.import_module("quantlab.deploy.gguf_export")
    assert callable(ql.quantize) and ql.quantize is ql.core.quantize.quantize
    assert ql.QTensor is ql.core.quantize.QTensor and ql.formats is ql.core.formats
    assert ql.fake_quantized_copy is _model_utils.fake_quantized_copy
    with pytest.raises(AttributeError):
        ql.no_such_module  # noqa: B018 (the lookup raises)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("quantlab.models.no_such_model")


def test_old_names_in_a_fresh_interpreter():
    """Aliases resolve before anything else is imported, in either order of import."""
    code = (
        "import sys\n"
        "import quantlab.models.digits as a\n"
        "import quantlab.book.models.digits as b\n"
        "import quantlab.rotations as r\n"
        "from quantlab.algorithms import rotations\n"
        "import quantlab as ql\n"
        "assert a is b and r is rotations and ql.quantize.__class__.__name__ == 'function'\n"
        "assert sys.modules['quantlab.models'] is sys.modules['quantlab.book.models']\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_importing_the_core_loads_no_heavy_package_and_no_other_layer():
    code = (
        "import json, sys\n"
        "import quantlab.core\n"
        f"heavy = [h for h in {HEAVY!r} if h in sys.modules]\n"
        "layers = sorted(m for m in sys.modules if m.startswith(('quantlab.algorithms',\n"
        "    'quantlab.nn', 'quantlab.deploy', 'quantlab.book')))\n"
        "print(json.dumps([heavy, layers]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], []]


# --------------------------------------------------------------------------- type names


def test_one_name_for_a_format_or_its_name():
    """``FormatLike`` (core.formats) is the one alias for "a format or its name"; the wider
    unions name what they add (``SpecLike`` and ``SchemeLike``: or a QuantScheme, the one recipe type)."""
    import typing

    from quantlab.formats import Format, FormatLike

    from quantlab import memory, qat, rl
    from quantlab import nn as qnn

    assert set(typing.get_args(FormatLike)) == {str, Format}
    assert qat.FormatArg is FormatLike and rl.FormatArg is FormatLike  # former names
    assert set(typing.get_args(memory.SpecLike)) == {str, Format, qnn.QuantScheme}
    assert set(typing.get_args(qnn.SchemeLike)) == {str, Format, qnn.QuantScheme}
    spelled_out = [
        f"{name}:{n}"
        for name, path in _modules().items()
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if ("Union[str, Format]" in line and not line.startswith("FormatLike = "))
        or "FormatArg]" in line
        or ": FormatArg" in line
    ]
    assert spelled_out == []
