"""The chapter as a course a student finishes: word budgets, the glossary, terms linked at their
first use, code a student can copy, and one value per quantity across pages."""

from __future__ import annotations

import ast
import builtins
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from quantlab.book.course import (
    glossary_terms,
    markdown_of,
    page_elements,
    page_words,
    prose_words,
    reading_minutes,
)

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = REPO / "chapters"
GLOSSARY = CHAPTERS / "glossary.md"

#: Word budgets of the course (prose a reader reads; see quantlab.book.course.prose_words).
CORE_TOTAL, PAGE_MAX = 15_000, 2_500


def _parts() -> dict[str, list[Path]]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    out = {}
    for part in toc["parts"]:
        files = []
        for entry in part["chapters"]:
            stem = REPO / entry["file"]
            files.append(next(p for p in (stem.with_suffix(".ipynb"), stem.with_suffix(".md")) if p.is_file()))
        out[part["caption"]] = files
    return out


CORE = _parts()["The core path: an afternoon"]
DEEP = _parts()["Deep dives"]
PAGES = [CHAPTERS / "index.md"] + CORE + DEEP


# --------------------------------------------------------------------------- word budgets


def test_prose_words_counts_what_a_reader_reads():
    text = """(sec-x)=
# A title

Two words {term}`scale <scale>` and {glue:text}`x:.1f` here.

```python
not counted at all
```

$$
y = x
$$

````{dropdown} Collapsed
hidden words are not counted
````

```{exercise} Try it
:label: ex-a

Do this.
```

````{solution} ex-a
:class: dropdown

The answer, collapsed.
````
"""
    # "A title" 2, "Two words scale and 0 here." 6, "Try it" 2, "Do this." 2
    assert prose_words(text) == 12
    assert reading_minutes(0) == 1 and reading_minutes(181) == 2
    with pytest.raises(ValueError, match="words"):
        reading_minutes(-1)
    with pytest.raises(TypeError, match="markdown"):
        prose_words(None)


def test_page_elements_and_reading_time(tmp_path):
    nb = {
        "cells": [
            {
                "cell_type": "markdown",
                "metadata": {},
                "source": "Text.\n\n$$\ny = x\n$$\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                "\n```{glue:figure} fig\nCaption.\n```",
            },
            {
                "cell_type": "code",
                "metadata": {},
                "outputs": [
                    {"output_type": "display_data", "data": {"image/png": "...", "text/plain": "<Figure>"}},
                    {"output_type": "display_data", "data": {"text/html": "<table><tr><td>1</td></tr></table>"}},
                    {"output_type": "display_data", "data": {"text/html": "<div id=x></div><script>draw()</script>"}},
                ],
                "source": "show()",
            },
            {
                "cell_type": "code",
                "metadata": {"tags": ["remove-cell"]},
                "outputs": [{"output_type": "display_data", "data": {"image/png": "..."}}],
                "source": "hidden()",
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "page.ipynb"
    path.write_text(json.dumps(nb))
    assert page_elements(path) == {"figures": 3, "tables": 2, "formulas": 1}
    # 360 words (2 min) + 3 figures (2.25) + 2 tables (1) + 1 formula (0.25) = 5.5 -> 6
    assert reading_minutes(360, figures=3, tables=2, formulas=1) == 6
    with pytest.raises(ValueError, match="tables"):
        reading_minutes(10, tables=-1)


def test_word_budgets():
    """The core path is an afternoon of reading (at most 15,000 words), each page under 2,500,
    and each deep dive under 2,500."""
    words = {p.name: page_words(p) for p in PAGES}
    core = sum(words[p.name] for p in [CHAPTERS / "index.md"] + CORE)
    over = {name: w for name, w in words.items() if w >= PAGE_MAX}
    assert not over, f"pages over {PAGE_MAX} words: {over}"
    assert core <= CORE_TOTAL, f"the core path has {core} words (budget {CORE_TOTAL}): {words}"


def test_deep_dives_say_what_they_assume():
    for page in DEEP:
        md = markdown_of(page)
        head = md[: md.find("\n## ")] if "\n## " in md else md
        assert re.search(r"\*\*Assumes:\*\*", head) and re.search(r"\*\*You get:\*\*", head), page.name


# --------------------------------------------------------------------------- the glossary


def test_glossary_is_large_and_sorted():
    terms = glossary_terms(GLOSSARY)
    assert len(terms) >= 40, len(terms)
    assert len(set(t.lower() for t in terms)) == len(terms), "a term is defined twice"
    assert [t.lower() for t in terms] == sorted(t.lower() for t in terms), "glossary terms are not in order"


#: Glossary terms that are also ordinary words in this chapter's prose ("the code beside it",
#: "return to", "scale up"): not required to be linked at their first occurrence.
ORDINARY_WORDS = {
    "code",
    "return",
    "scale",
    "weight",
    "kernel",
    "grid",
    "activation",
    "policy",
    "quantization",
    "advantage",
    "embedding",
    "rotation",
    "clipping",
    "outlier",
    "calibration",
    "sign bit",
}


def _prose_for_terms(markdown: str) -> str:
    """Prose with code, math and roles other than {term} reduced to plain text; each {term} role
    becomes a marker ``\x00target\x00``."""
    out: list[str] = []
    stack: list[tuple[str, bool]] = []  # open fences: (fence, is a code block)
    for line in markdown.splitlines():
        s = line.strip()
        m = re.match(r"^(`{3,}|~{3,}|:{3,})(.*)$", s)
        if (
            m
            and stack
            and not m.group(2).strip()
            and m.group(1)[0] == stack[-1][0][0]
            and len(m.group(1)) >= len(stack[-1][0])
        ):
            stack.pop()  # a closing fence
            continue
        if stack and stack[-1][1]:
            continue  # inside a code block
        if m:
            stack.append((m.group(1), not m.group(2).strip().startswith("{")))
            continue
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", " ", text)

    def term(m: re.Match) -> str:
        body = m.group(1)
        t = re.match(r"^(.*?)\s*<([^>]*)>$", body, flags=re.S)
        return f"\x00{(t.group(2) if t else body).strip().lower()}\x00"

    text = re.sub(r"\{term\}`([^`]*)`", term, text)
    text = re.sub(r"^\s*(`{3,}|~{3,}|:{3,}).*$", " ", text, flags=re.M)  # directive fences
    text = re.sub(r"\{[\w:-]+\}`[^`\n]*`", " ", text)  # other roles: refs, glue, cite
    text = re.sub(r"`[^`\n]*`", " ", text)  # inline code
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = re.sub(r"^\(.+\)=$", " ", text, flags=re.M)  # targets
    text = re.sub(r"^#+ .*$", " ", text, flags=re.M)  # headings: the body's first use carries the link
    return text


def first_unlinked_terms(markdown: str, terms: list[str]) -> list[str]:
    """Terms whose first occurrence in the prose is plain text, not a {term} link."""
    text = _prose_for_terms(markdown)
    low = text.lower()
    bad = []
    for t in terms:
        key = t.lower()
        if key in ORDINARY_WORDS:
            continue
        link = low.find(f"\x00{key}\x00")
        pattern = re.compile(r"(?<![\w-])" + re.escape(key) + r"(?:s|es)?(?![\w-])")
        plain = None
        for m in pattern.finditer(low):
            before = low.rfind("\x00", 0, m.start())
            inside = before != -1 and low.count("\x00", 0, m.start()) % 2 == 1
            if not inside:
                plain = m.start()
                break
        if plain is not None and (link == -1 or plain < link):
            bad.append(t)
    return bad


def test_first_use_rule_finds_unlinked_terms():
    terms = ["perplexity", "KV cache"]
    assert first_unlinked_terms("The {term}`perplexity` and the perplexity.", terms) == []
    assert first_unlinked_terms("The perplexity, then {term}`perplexity`.", terms) == ["perplexity"]
    assert first_unlinked_terms("A {term}`cache <KV cache>` then the KV cache.", terms) == []
    assert first_unlinked_terms("`perplexity` in code and $perplexity$ in math.", terms) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_terms_are_linked_at_first_use(page):
    """Every glossary term a page uses links to the glossary where the page first uses it."""
    bad = first_unlinked_terms(markdown_of(page), glossary_terms(GLOSSARY))
    assert not bad, f"{page.name}: first use without a {{term}} link: {bad}"


# --------------------------------------------------------------------------- copyable notebooks


def _names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names a cell defines, names it loads)."""
    defined, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, (ast.Store, ast.Del)) else loaded).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
            for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs if hasattr(node, "args") else []:
                defined.add(a.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                defined.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    return defined, loaded


def removed_names_used(nb: dict) -> list[tuple[int, str]]:
    """(cell index, name) for every name a visible code cell uses that only a removed cell
    (tag ``remove-cell`` or ``remove-input``) defines before it."""
    visible_defs: set[str] = set(dir(builtins)) | {"display", "get_ipython"}
    removed_defs: set[str] = set()
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
        tags = set(cell.get("metadata", {}).get("tags", []))
        tree = ast.parse(src)
        defined, loaded = _names(tree)
        if tags & {"remove-cell", "remove-input"}:
            removed_defs |= defined
            continue
        for name in sorted(loaded - defined - visible_defs):
            if name in removed_defs:
                problems.append((i, name))
        visible_defs |= defined
    return problems


def test_removed_names_rule():
    nb = {
        "cells": [
            {"cell_type": "code", "metadata": {"tags": ["remove-cell"]}, "source": "def helper():\n    return 1"},
            {"cell_type": "code", "metadata": {}, "source": "x = helper()"},
            {"cell_type": "code", "metadata": {}, "source": "def helper():\n    return 2\ny = helper()"},
        ]
    }
    assert removed_names_used(nb) == [(1, "helper")]


@pytest.mark.parametrize("notebook", sorted(CHAPTERS.glob("*.ipynb")), ids=lambda p: p.name)
def test_visible_code_runs_when_copied(notebook):
    """A student who copies the visible cells in order gets no NameError: no visible cell uses a
    name that only a cell hidden from the book defines."""
    problems = removed_names_used(json.loads(notebook.read_text()))
    assert not problems, f"{notebook.name}: visible cells use names defined only in removed cells: {problems}"


# --------------------------------------------------------------------------- one value per quantity


def _glued(notebook: Path) -> dict[str, str]:
    nb = json.loads(notebook.read_text())
    out = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                out[name] = o.get("data", {}).get("application/papermill.record/text/plain")
    return out


def shared_values() -> dict[str, dict[str, str]]:
    """Glued values named ``shared_*``, per name, per notebook."""
    out: dict[str, dict[str, str]] = {}
    for nb in sorted(CHAPTERS.glob("*.ipynb")):
        for name, value in _glued(nb).items():
            if name.startswith("shared_"):
                out.setdefault(name, {})[nb.name] = value
    return out


def _same(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)


def test_shared_quantities_agree_across_pages():
    """A quantity several pages state (SmolLM2's reference perplexity, MiniLM's outlier, ...) is glued
    under one ``shared_`` name on each page that computes it, and every page finds the same value."""
    values = shared_values()
    assert values, "no shared_ quantities are glued"
    for name, per_page in values.items():
        first_page, first = next(iter(per_page.items()))
        for page, v in per_page.items():
            assert _same(v, first), f"{name}: {first_page} says {first}, {page} says {v}"
