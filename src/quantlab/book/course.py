"""The chapter as a course: words of prose per page, reading time, and the glossary's terms.

A student should finish the core path in an afternoon. These functions measure what that
takes, the same way for the reading time each page shows (``_ext/reading_time.py``) and for
the tests that hold every page to its word budget (``tests/test_course.py``):

* :func:`prose_words` counts the words a reader reads on a page: Markdown prose, headings,
  lists, figure captions, admonitions and exercise statements. It leaves out what a reader
  does not read as prose: code blocks, display math, collapsed dropdowns (a ``dropdown`` or
  a ``solution`` with ``:class: dropdown``), MyST targets and comments. A role such as
  ``{glue:text}`x`` or ``{term}`scale``` counts as the words it shows (one for a glued value).
* :func:`page_words` applies it to the Markdown cells of a notebook or to a Markdown page.
* :func:`page_elements` counts the figures, tables and displayed formulas of a page, and
  :func:`reading_minutes` turns words and those into minutes (:data:`WORDS_PER_MINUTE`,
  :data:`MINUTES_PER`).
* :func:`glossary_terms` reads the terms of the glossary page.

Taught in: chapters/index.md (the roadmap and its reading times).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Union

__all__ = [
    "prose_words",
    "page_words",
    "page_elements",
    "reading_minutes",
    "WORDS_PER_MINUTE",
    "MINUTES_PER",
    "glossary_terms",
    "markdown_of",
]

PathLike = Union[str, os.PathLike]

#: Reading speed of technical prose, words per minute.
WORDS_PER_MINUTE = 180

#: Minutes a reader spends on each element besides the prose: reading a figure or a table of
#: numbers, and following a displayed formula. Set so that the dense pages (the core tradeoff,
#: the speed page) come out near what a student new to the subject took to read them.
MINUTES_PER: dict[str, float] = {"figures": 0.75, "tables": 0.5, "formulas": 0.25}

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,}|:{3,})\s*(\{?[\w:-]*\}?)?(.*)$")
_ROLE = re.compile(r"\{([\w:-]+)\}`([^`\n]*)`")
_INLINE_MATH = re.compile(r"\$[^$\n]+\$")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’.,:/×%+-]*")


def _role_text(match: re.Match) -> str:
    role, body = match.group(1), match.group(2)
    if role.startswith("glue"):
        return "0"  # a glued value reads as one word
    if role in ("term", "ref", "doc", "numref"):
        m = re.match(r"^(.*?)\s*<[^>]*>$", body, flags=re.S)
        if m:
            return m.group(1)
        return body if role == "term" else "section"
    if role == "cite":
        return ""
    return body


def _skip_block(directive: str, options: list[str]) -> bool:
    name = directive.strip("{}")
    if name in ("dropdown", "code-cell", "code", "code-block", "math", "raw", "glue:", "glue", "glue:any"):
        return True
    if name == "solution":
        return any(o.strip().startswith(":class:") and "dropdown" in o for o in options)
    return name == "" or not directive.startswith("{")  # True: a plain code fence


def prose_words(markdown: str) -> int:
    """Words of prose in a MyST Markdown text (see the module docstring for what counts)."""
    if not isinstance(markdown, str):
        raise TypeError(f"markdown must be a str, got {type(markdown).__name__}")
    lines = markdown.splitlines()
    kept: list[str] = []
    stack: list[tuple[str, bool]] = []  # (fence, skipped)
    in_math = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stack:
            fence, skipped = stack[-1]
            if stripped == fence or (
                stripped.startswith(fence) and set(stripped) <= set(fence[0]) and len(stripped) >= len(fence)
            ):
                stack.pop()
                i += 1
                continue
        m = _FENCE.match(line)
        if m and (not stack or not stack[-1][1]):
            fence, directive = m.group(2), (m.group(3) or "")
            options = []
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith(":") and not lines[j].strip().startswith(fence[0] * 3):
                options.append(lines[j])
                j += 1
            skipped = _skip_block(directive, options)
            stack.append((fence, skipped))
            if not skipped and m.group(4).strip():
                kept.append(m.group(4))  # the title of an admonition or exercise
            i = j
            continue
        if stack and stack[-1][1]:
            i += 1
            continue
        if stripped.startswith("$$"):
            if not (len(stripped) > 2 and stripped.endswith("$$") and stripped != "$$"):
                in_math = not in_math
            i += 1
            continue
        if in_math or re.match(r"^\(.+\)=$", stripped) or stripped.startswith("<!--") or stripped.startswith("%"):
            i += 1
            continue
        kept.append(line)
        i += 1
    text = "\n".join(kept)
    text = _ROLE.sub(_role_text, text)
    text = _INLINE_MATH.sub(" x ", text)
    text = re.sub(r"`[^`\n]*`", " code ", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return len(_WORD.findall(text))


def markdown_of(path: PathLike) -> str:
    """The Markdown of a page: a ``.md`` file's text, or a notebook's Markdown cells joined."""
    p = Path(path)
    if p.suffix == ".md":
        return p.read_text()
    if p.suffix != ".ipynb":
        raise ValueError(f"path must be a .md or .ipynb file, got {str(p)!r}")
    nb = json.loads(p.read_text())
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "markdown"]
    return "\n\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)


def page_words(path: PathLike) -> int:
    """:func:`prose_words` of a page."""
    return prose_words(markdown_of(path))


def page_elements(path: PathLike) -> dict[str, int]:
    """Figures, tables and displayed formulas a reader meets on a page (besides its prose).

    Figures: ``{glue:figure}`` directives, image outputs and interactive HTML outputs of code
    cells not removed from the book; tables: HTML tables in such outputs and Markdown tables in
    the prose; formulas: ``$$`` blocks. Outputs of cells tagged ``remove-cell``/``remove-output``
    are not shown, and do not count.
    """
    p = Path(path)
    md = markdown_of(p)
    counts = {"figures": md.count("{glue:figure}"), "tables": 0, "formulas": 0}
    counts["tables"] += len(re.findall(r"^\s*\|[\s:|-]*-{3,}[\s:|-]*\|?\s*$", md, flags=re.M))
    counts["formulas"] += len(re.findall(r"^\s*\$\$", md, flags=re.M)) // 2
    if p.suffix == ".ipynb":
        nb = json.loads(p.read_text())
        for cell in nb.get("cells", []):
            tags = set(cell.get("metadata", {}).get("tags", []))
            if cell.get("cell_type") != "code" or tags & {"remove-cell", "remove-output"}:
                continue
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if any(k.startswith("image/") for k in data):
                    counts["figures"] += 1
                html = data.get("text/html")
                if html:
                    html = "".join(html) if isinstance(html, list) else html
                    n = html.count("<table")
                    counts["tables"] += n
                    if not n and "<script" in html:
                        counts["figures"] += 1  # an interactive figure
                text = data.get("text/markdown")
                if text:
                    text = "".join(text) if isinstance(text, list) else text
                    counts["tables"] += len(re.findall(r"^\s*\|[\s:|-]*-{3,}", text, flags=re.M))
    return counts


def reading_minutes(words: int, figures: int = 0, tables: int = 0, formulas: int = 0) -> int:
    """Minutes to read a page: ``words`` at :data:`WORDS_PER_MINUTE` plus :data:`MINUTES_PER`
    figure, table and displayed formula, rounded up (at least 1)."""
    for name, v in (("words", words), ("figures", figures), ("tables", tables), ("formulas", formulas)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    minutes = (
        words / WORDS_PER_MINUTE
        + MINUTES_PER["figures"] * figures
        + MINUTES_PER["tables"] * tables
        + MINUTES_PER["formulas"] * formulas
    )
    return max(1, math.ceil(minutes))


def glossary_terms(path: PathLike) -> list[str]:
    """The terms defined in the ``{glossary}`` block of a Markdown page, in order."""
    text = Path(path).read_text()
    m = re.search(r"```\{glossary\}\n(.*?)\n```", text, flags=re.S)
    if not m:
        raise ValueError(f"no glossary block in {str(path)!r}")
    return [line.strip() for line in m.group(1).splitlines() if line and not line[0].isspace()]
