"""Run every notebook under several instruction-set modes in one pytest session.

``make book`` executes the notebooks natively: with every kernel the CPU has. ``make test`` must
fail wherever ``make book`` would, so it runs each notebook natively too; and because the stored
outputs were computed on one machine, it also runs each notebook as an AVX2-only CPU would
(``ATEN_CPU_CAPABILITY=avx2``, oneDNN, MKL, OpenBLAS and numpy restricted alike), which checks
that the comparisons of ``nbval_tolerance`` hold on another instruction set.

With ``--nbval-modes native,avx2`` (``scripts/test.sh`` sets it) nbval's collector of each
notebook is replaced by one collector per mode, with node ids ``chapters/NAME.ipynb::native::Cell 3``
and ``chapters/NAME.ipynb::avx2::Cell 3``. Each mode starts its own kernel with the mode's
environment, so both can run at once in two pytest-xdist workers (``--dist loadscope`` keeps the
cells of one notebook and mode together, in order). On a CPU without AVX-512 the two modes are
the same machine, and only ``native`` runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

#: Environment of each mode (added to the kernel's environment while it starts).
MODES: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    },
}


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        return any(line.startswith("flags") and " avx512f" in line for line in Path(cpuinfo).read_text().splitlines())
    except OSError:
        return False


def requested_modes(value: str | None, avx512: bool | None = None) -> list[str]:
    """Parse ``--nbval-modes`` (comma-separated names of :data:`MODES`). ``avx2`` is dropped on a CPU
    without AVX-512, where it would repeat ``native``."""
    if not value:
        return []
    modes = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise pytest.UsageError(f"--nbval-modes: unknown mode(s) {unknown}; choose from {sorted(MODES)}")
    if avx512 is None:
        avx512 = cpu_has_avx512()
    if not avx512 and "native" in modes:
        modes = [m for m in modes if m != "avx2"]
    return list(dict.fromkeys(modes))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--nbval-modes", default=None, help="run each notebook once per mode: comma-separated from " + ", ".join(MODES)
    )


def _mode_class(base: type) -> type:
    class ModeNotebook(base):  # type: ignore[misc, valid-type]
        """nbval's notebook collector whose kernel starts with one mode's environment."""

        mode: str = "native"

        def setup(self) -> None:
            saved = {k: os.environ.get(k) for k in MODES[self.mode]}
            os.environ.update(MODES[self.mode])
            try:
                super().setup()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    return ModeNotebook


def notebook_modes(path: Path, modes: list[str]) -> list[str]:
    """The requested ``modes`` a notebook runs in: all of them, unless its metadata
    ``quantlab.nbval_modes`` names fewer, with its reason in ``quantlab.nbval_modes_why`` (a
    notebook whose every compared output is read from a stored file gains nothing from a second
    instruction set). The native mode always runs: it is how ``make book`` executes the notebook."""
    import nbformat

    meta = nbformat.read(path, as_version=4).metadata.get("quantlab", {})
    allowed = meta.get("nbval_modes")
    if allowed is None:
        return modes
    if not meta.get("nbval_modes_why"):
        raise pytest.UsageError(f"{path.name}: metadata quantlab.nbval_modes needs its reason in nbval_modes_why")
    return [m for m in modes if m in allowed or m == "native"]


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Iterator[list]:
    results = yield
    modes = requested_modes(parent.config.getoption("--nbval-modes"))
    if not modes or file_path.suffix != ".ipynb":
        return results
    from nbval.plugin import IPyNbFile

    out = []
    for res in results:
        if isinstance(res, IPyNbFile) and not getattr(res, "mode", None):
            cls = _mode_class(type(res))
            for mode in notebook_modes(file_path, modes):
                node = cls.from_parent(
                    parent, path=file_path, name=f"{res.name}::{mode}", nodeid=f"{res.nodeid}::{mode}"
                )
                node.mode = mode
                out.append(node)
        else:
            out.append(res)
    return out


def scope_of(nodeid: str) -> str:
    """The unit of work a pytest-xdist worker takes whole (``--dist loadscope``): the cells of one
    notebook in one mode together and in order; the strict book build and the browser tests that
    reuse it together, build first; every other test with the rest of its module (module
    fixtures, such as a loaded model, are set up once)."""
    path = nodeid.split("::", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if name == "test_book.py" or (name.startswith("test_") and "browser" in name and name.endswith(".py")):
        return "book"
    if path.endswith(".ipynb"):
        return nodeid.rsplit("::", 1)[0]
    return path


#: Estimated seconds of the scopes that are not notebooks: the strict book build with the browser
#: tests (about 2.5 minutes on a quiet 2-core machine), and any other test.
BOOK_SECONDS = 150.0
TEST_SECONDS = 0.05


def stored_seconds(notebook: Path) -> float:
    """Seconds the notebook's cells took when its stored outputs were computed (the execution
    timestamps nbclient records in each cell's metadata), or 60 when it records none."""
    import datetime

    import nbformat

    try:
        nb = nbformat.read(notebook, as_version=4)
    except (OSError, ValueError):
        return 60.0
    total = 0.0
    for cell in nb.cells:
        t = cell.get("metadata", {}).get("execution", {})
        start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
        if start and end:
            parse = datetime.datetime.fromisoformat
            total += (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()
    return total or 60.0


def scope_seconds(scope: str, n_tests: int, root: Path) -> float:
    """Estimated cost of a scope, to hand the longest ones out first: a notebook's stored cell
    times plus a kernel start (its AVX2 run a third longer), the book scope's
    :data:`BOOK_SECONDS`, and :data:`TEST_SECONDS` per test elsewhere."""
    if ".ipynb::" in scope:
        path, mode = scope.split("::", 1)
        return (stored_seconds(root / path) + 5.0) * (4 / 3 if mode == "avx2" else 1.0)
    if scope == "book":
        return BOOK_SECONDS
    return TEST_SECONDS * n_tests


def scopes_longest_first(sizes: dict[str, int], root: Path) -> list[str]:
    """The scopes of ``sizes`` (scope -> number of tests) ordered by :func:`scope_seconds`,
    longest first (ties keep their order). Handing the longest work out first keeps the two
    workers busy to the end instead of leaving one notebook running alone."""
    return sorted(sizes, key=lambda scope: -scope_seconds(scope, sizes[scope], root))


def longest_first(nodeids: list[str], root: Path) -> list[str]:
    """``nodeids`` in the order the scheduler runs them: whole scopes (:func:`scope_of`),
    longest first (:func:`scopes_longest_first`), each scope's tests in their order."""
    order: dict[str, list[str]] = {}
    for nodeid in nodeids:
        order.setdefault(scope_of(nodeid), []).append(nodeid)
    return [
        nodeid for scope in scopes_longest_first({k: len(v) for k, v in order.items()}, root) for nodeid in order[scope]
    ]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With ``--dist loadscope``, schedule by :func:`scope_of` (pytest-xdist's own ``loadgroup``
    marks do not reach the node ids under pytest 9, so the grouping is done here)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            # The first call comes when the whole queue is built: order it longest first. (Only
            # the queue: each worker runs tests by their index in its own collection.)
            if not getattr(self, "_longest_first", False):
                units = dict(self.workqueue)
                self.workqueue.clear()
                for scope in scopes_longest_first({k: len(v) for k, v in units.items()}, config.rootpath):
                    self.workqueue[scope] = units[scope]
                self._longest_first = True
            super()._assign_work_unit(node)

    return ScopeScheduling(config, log)
