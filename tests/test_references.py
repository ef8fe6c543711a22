"""The bibliography: every key the chapters cite exists in chapters/references.bib, and every
entry there has the fields a reader needs to find the work (author, title, year)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
BIB = CHAPTERS / "references.bib"

# {cite}`a,b`, {cite:p}`a`, {cite:t}`a`, {cite:ps}`a`, ...
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
ENTRY = re.compile(r"^@(\w+)\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)


def _chapter_texts() -> dict[str, str]:
    """The text of every page: Markdown files, and the cell sources of notebooks."""
    texts = {}
    for path in sorted(CHAPTERS.iterdir()):
        if path.suffix == ".md":
            texts[path.name] = path.read_text(encoding="utf-8")
        elif path.suffix == ".ipynb":
            nb = json.loads(path.read_text(encoding="utf-8"))
            texts[path.name] = "\n".join("".join(c.get("source", "")) for c in nb.get("cells", []))
    return texts


def _entries() -> dict[str, tuple[str, str]]:
    """key -> (entry type, body) for every entry of the bib file."""
    text = BIB.read_text(encoding="utf-8")
    starts = list(ENTRY.finditer(text))
    out = {}
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        key = m.group(2)
        assert key not in out, f"duplicate bib key {key!r}"
        out[key] = (m.group(1).lower(), text[m.end() : end])
    return out


def _cited() -> dict[str, set[str]]:
    """key -> pages that cite it."""
    cited: dict[str, set[str]] = {}
    for page, text in _chapter_texts().items():
        for group in CITE.findall(text):
            for key in group.split(","):
                cited.setdefault(key.strip(), set()).add(page)
    return cited


def test_bib_has_enough_entries():
    assert len(_entries()) >= 15


@pytest.mark.parametrize("key", sorted(_entries()))
def test_entry_has_author_title_year(key):
    _, body = _entries()[key]
    for field in ("author", "title", "year"):
        assert re.search(rf"^\s*{field}\s*=", body, re.MULTILINE | re.IGNORECASE), f"{key}: no {field} field"
    year = re.search(r"^\s*year\s*=\s*[{\"]?(\d{4})", body, re.MULTILINE | re.IGNORECASE)
    assert year and 1900 < int(year.group(1)) < 2100, f"{key}: year is not a four-digit year"


def test_every_cited_key_exists():
    entries = _entries()
    missing = {k: sorted(pages) for k, pages in _cited().items() if k not in entries}
    assert not missing, f"cited but not in references.bib: {missing}"


def test_pages_cite_something():
    assert _cited(), "no {cite} role found in chapters/"


def test_references_page_prints_the_bibliography():
    text = (CHAPTERS / "08_references.md").read_text(encoding="utf-8")
    assert "{bibliography}" in text
