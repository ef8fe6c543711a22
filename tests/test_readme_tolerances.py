"""The README's table of notebook tolerances says what the notebooks' cell tags say.

README.md, section "Same results on every CPU", lists for every notebook which code cells nbval
compares within a tolerance (cells counted from 0, as nbval counts them) and which tolerance.
A notebook edit that adds, moves or changes a tolerance tag without the table fails here, so a
reader of the README never trusts a stale row.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbval_tolerance import tolerance_of

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
ROW = re.compile(r"^\| (\d\d[a-z]?) [^|]+\| ([^|]+) \| ([^|]+) \| [^|]+\|$")


def tolerance_table(text: str) -> list[tuple[str, str, str]]:
    """``(page prefix, cells, tolerance)`` for each row of the tolerance table."""
    start = text.index("| notebook | cells | tolerance | why |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        m = ROW.match(line)
        assert m, f"README tolerance row not understood: {line!r}"
        rows.append((m.group(1), m.group(2).strip(), m.group(3).strip()))
    return rows


def parse_tolerance(text: str) -> tuple[float, float] | None:
    """``"rtol 1e-9"``, ``"rtol 0.02, atol 0.05"``, ``"atol 2 (points)"`` or ``"exact"``."""
    if text == "exact":
        return None
    found = dict(re.findall(r"\b(rtol|atol) ([0-9.e-]+)", text))
    assert found, f"tolerance {text!r} names neither rtol nor atol"
    return float(found.get("rtol", 0.0)), float(found.get("atol", 0.0))


def tagged_cells(path: Path) -> dict[int, tuple[float, float]]:
    """nbval's code-cell index -> (rtol, atol) for every cell with a tolerance tag."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    return {i: tol for i, c in enumerate(code) if (tol := tolerance_of(c.metadata.get("tags", []))) is not None}


def test_parse_tolerance_known_answers():
    assert parse_tolerance("exact") is None
    assert parse_tolerance("rtol 1e-9") == (1e-9, 0.0)
    assert parse_tolerance("rtol 0.02, atol 0.05") == (0.02, 0.05)
    assert parse_tolerance("atol 2 (points)") == (0.0, 2.0)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_rows_match_the_cell_tags(notebook: Path):
    prefix = notebook.name.split("_")[0]
    rows = [(cells, tol) for page, cells, tol in tolerance_table(README.read_text("utf-8")) if page == prefix]
    assert rows, f"README's tolerance table has no row for {notebook.name}"
    tags = tagged_cells(notebook)
    listed: dict[int, tuple[float, float] | None] = {}
    for cells, tol in rows:
        if cells == "all":
            assert parse_tolerance(tol) is None and not tags, (
                f"{notebook.name}: README says every cell is exact, but cells {sorted(tags)} have tolerance tags"
            )
            return
        for token in cells.split(","):
            listed[int(token)] = parse_tolerance(tol)
    assert listed == tags, f"{notebook.name}: README lists {listed}, the notebook's tags say {tags}"
