"""The notebook modes of make test: parsing, the AVX2 environment, and how work is grouped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbval_modes
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_requested_modes():
    assert nbval_modes.requested_modes(None) == []
    assert nbval_modes.requested_modes("native,avx2", avx512=True) == ["native", "avx2"]
    # on a CPU without AVX-512 the AVX2 restriction changes nothing: only the native run
    assert nbval_modes.requested_modes("native,avx2", avx512=False) == ["native"]
    assert nbval_modes.requested_modes("avx2", avx512=False) == ["avx2"]
    assert nbval_modes.requested_modes("native, native", avx512=True) == ["native"]
    with pytest.raises(pytest.UsageError, match="unknown mode"):
        nbval_modes.requested_modes("native,sse2", avx512=True)


def test_avx2_mode_matches_make_portability():
    spec = importlib.util.spec_from_file_location("portability", ROOT / "scripts" / "portability.py")
    portability = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(portability)
    assert nbval_modes.MODES["avx2"] == portability.ISA_ENV["avx2"]
    assert nbval_modes.MODES["native"] == {}


@pytest.mark.parametrize(
    "nodeid, scope",
    [
        ("chapters/04c_speed.ipynb::avx2::Cell 3", "chapters/04c_speed.ipynb::avx2"),
        ("chapters/04c_speed.ipynb::native::Cell 12", "chapters/04c_speed.ipynb::native"),
        ("tests/test_book.py::test_x", "book"),
        ("tests/test_explorer_browser.py::test_y[a::b]", "book"),
        ("tests/test_formats.py::TestX::test_z", "tests/test_formats.py"),
        ("tests/test_formats.py::test_z[x::y]", "tests/test_formats.py"),
    ],
)
def test_xdist_scopes(nodeid, scope):
    assert nbval_modes.scope_of(nodeid) == scope


def test_longest_scopes_first(tmp_path):
    """Scopes are handed out by estimated seconds, longest first; cells keep their order."""
    import nbformat

    def notebook(name: str, seconds: float) -> None:
        cell = nbformat.v4.new_code_cell("1")
        cell.metadata["execution"] = {
            "iopub.execute_input": "2026-01-01T00:00:00.000000Z",
            "shell.execute_reply": f"2026-01-01T00:00:{seconds:09.6f}Z",
        }
        (tmp_path / "chapters").mkdir(exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / "chapters" / name)

    notebook("a.ipynb", 2.0)
    notebook("b.ipynb", 40.0)
    assert nbval_modes.stored_seconds(tmp_path / "chapters" / "b.ipynb") == 40.0
    assert nbval_modes.stored_seconds(tmp_path / "missing.ipynb") == 60.0
    ids = [
        "tests/test_x.py::test_1",
        "tests/test_x.py::test_2",
        "chapters/a.ipynb::native::Cell 0",
        "chapters/a.ipynb::native::Cell 1",
        "chapters/b.ipynb::native::Cell 0",
        "chapters/b.ipynb::avx2::Cell 0",
        "chapters/b.ipynb::avx2::Cell 1",
        "tests/test_book.py::test_build",
        "tests/test_browser.py::test_pages",
    ]
    assert nbval_modes.longest_first(ids, tmp_path) == [
        "tests/test_book.py::test_build",  # 150 s
        "tests/test_browser.py::test_pages",
        "chapters/b.ipynb::avx2::Cell 0",  # (40 + 5) * 4/3 = 60 s
        "chapters/b.ipynb::avx2::Cell 1",
        "chapters/b.ipynb::native::Cell 0",  # 45 s
        "chapters/a.ipynb::native::Cell 0",  # 7 s
        "chapters/a.ipynb::native::Cell 1",
        "tests/test_x.py::test_1",  # 0.1 s
        "tests/test_x.py::test_2",
    ]


def test_notebook_modes_from_metadata(tmp_path):
    """A notebook may run in fewer modes, with a reason; the native mode always runs."""
    import nbformat

    def notebook(name: str, meta: dict) -> Path:
        nb = nbformat.v4.new_notebook()
        nb.metadata["quantlab"] = meta
        path = tmp_path / name
        nbformat.write(nb, path)
        return path

    both = ["native", "avx2"]
    assert nbval_modes.notebook_modes(notebook("a.ipynb", {}), both) == both
    why = {"nbval_modes_why": "outputs read from a stored file"}
    assert nbval_modes.notebook_modes(notebook("b.ipynb", {"nbval_modes": ["native"], **why}), both) == ["native"]
    assert nbval_modes.notebook_modes(notebook("c.ipynb", {"nbval_modes": ["avx2"], **why}), both) == both
    with pytest.raises(pytest.UsageError, match="needs its reason"):
        nbval_modes.notebook_modes(notebook("d.ipynb", {"nbval_modes": ["native"]}), both)
    # the chapter's own restriction: 05b compares only outputs read from its stored study
    chapter = Path(__file__).resolve().parent.parent / "chapters" / "05b_rl_training.ipynb"
    assert nbval_modes.notebook_modes(chapter, both) == ["native"]
