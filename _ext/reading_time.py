"""Sphinx extension for the quantlab book: each chapter page shows its reading time.

Under the page title: "About N minutes to read (W words, F figures, T tables, M formulas)". The
words are counted by ``quantlab.book.course.page_words`` from the page's source, the same count
that ``tests/test_course.py`` holds to each page's budget: prose, captions, admonitions and
exercise statements, not code, display math or collapsed dropdowns; the figures, tables and
formulas by ``page_elements``; ``reading_minutes`` adds them up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx

#: Pages without a reading time (reference material, not read in order).
SKIP = ("chapters/glossary", "chapters/08_references")


def add_reading_time(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if docname in SKIP:
        return
    from quantlab.book.course import page_elements, page_words, reading_minutes

    path = Path(app.env.doc2path(docname))
    if path.suffix not in (".md", ".ipynb") or not path.is_file():
        return
    words = page_words(path)
    elements = page_elements(path)
    minutes = reading_minutes(words, **elements)
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not section.children or not isinstance(section[0], nodes.title):
        return
    para = nodes.paragraph(classes=["reading-time"])
    parts = [f"{words:,} words"] + [f"{n} {kind if n != 1 else kind[:-1]}" for kind, n in elements.items() if n]
    para += nodes.emphasis(text=f"About {minutes} minute{'s' if minutes != 1 else ''} to read "
                                f"({', '.join(parts)}); running the code and the exercises takes longer.")
    section.insert(1, para)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("doctree-resolved", add_reading_time)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
