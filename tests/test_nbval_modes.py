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
