"""The book: the strict build succeeds with no warning, every page of the table of
contents is built, and the built HTML loads nothing from another host.

The strict build is scripts/build_book.sh (the body of `make book`):
``jupyter-book build . --all -W -n --keep-going``, every notebook executed.
The browser tests (tests/test_browser.py) reuse the book built here.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import book_browser
import pytest
import yaml

REPO = book_browser.REPO

SPHINX_WARNING = re.compile(r"(WARNING|ERROR|CRITICAL):")


@pytest.fixture(scope="module")
def strict_build() -> tuple[int, str]:
    proc = book_browser.build_book()
    return proc.returncode, proc.stdout


def test_strict_build_has_no_warning(strict_build: tuple[int, str]) -> None:
    returncode, output = strict_build
    warnings = [line for line in output.splitlines() if SPHINX_WARNING.search(line)]
    assert returncode == 0 and not warnings, (
        f"`jupyter-book build . --all -W -n --keep-going` exited {returncode} with "
        f"{len(warnings)} warning(s):\n" + "\n".join(warnings[:40]) + "\n--- end of log:\n" + output[-4000:]
    )
    assert "build succeeded" in output, output[-4000:]


def _toc_parts() -> dict[str, list[str]]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return {part["caption"]: [entry["file"] for entry in part["chapters"]] for part in toc["parts"]}


def _toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [toc["root"]] + [f for files in _toc_parts().values() for f in files]


def test_toc_lists_the_chapter_in_order() -> None:
    """The core path in reading order, then the optional deep dives, then the reference pages."""
    assert _toc_parts() == {
        "The core path: an afternoon": [
            "chapters/01_why_quantization",
            "chapters/02_explorer",
            "chapters/02b_build_it",
            "chapters/03_core_tradeoff",
            "chapters/03b_range_calibration",
            "chapters/04_in_practice",
            "chapters/04b_language_model",
            "chapters/05_rl",
            "chapters/06_takeaways",
        ],
        "Deep dives": [
            "chapters/02c_gptq_derivation",
            "chapters/04c_speed",
            "chapters/04d_beyond_int4",
            "chapters/05b_rl_training",
            "chapters/07_real_tools",
        ],
        "Reference": ["chapters/glossary", "chapters/08_references"],
    }


def test_every_toc_page_is_built(strict_build: tuple[int, str], book_html: Path) -> None:
    missing = [f for f in _toc_files() if not (book_html / f"{f}.html").is_file()]
    sources = {f: [p.name for p in REPO.glob(f"{f}.*")] for f in missing}
    assert not missing, f"pages in _toc.yml that were not built (their sources: {sources})"


def test_notebooks_are_stored_executed_top_to_bottom() -> None:
    # nbval compares fresh outputs with the stored ones, and `make test` renders the
    # stored outputs: a notebook committed without them would pass both unseen.
    import nbformat

    problems = []
    for path in sorted((REPO / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        counts = [c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        if not counts:
            continue
        if any(n is None for n in counts):
            problems.append(f"{path.name}: {counts.count(None)} of {len(counts)} code cells not executed")
        elif counts != list(range(1, len(counts) + 1)):
            problems.append(
                f"{path.name}: execution counts {counts[:12]}... are not 1, 2, 3, ... "
                "(run it top to bottom in a fresh kernel)"
            )
    assert not problems, "\n".join(problems)


class _AssetParser(HTMLParser):
    """Collects the URLs a page loads while it renders (not the links a reader clicks)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "audio", "video", "source", "embed") and a.get("src"):
            self.loads.append(a["src"] or "")
        if tag == "link" and a.get("href"):
            rel = (a.get("rel") or "").lower()
            if any(r in rel for r in ("stylesheet", "preload", "modulepreload", "icon", "prefetch")):
                self.loads.append(a["href"] or "")
        if tag == "object" and a.get("data"):
            self.loads.append(a["data"] or "")


def _is_remote(url: str) -> bool:
    return bool(re.match(r"^(https?:)?//", url.strip(), re.I))


def test_built_pages_load_only_local_assets(strict_build: tuple[int, str], book_html: Path) -> None:
    remote = {}
    for page in book_browser.built_pages(book_html):
        parser = _AssetParser()
        parser.feed((book_html / page).read_text(encoding="utf-8"))
        found = [u for u in parser.loads if _is_remote(u)]
        if found:
            remote[page] = found
    assert not remote, f"pages that load from another host: {json.dumps(remote, indent=1)}"


def test_stylesheets_import_nothing_remote(strict_build: tuple[int, str], book_html: Path) -> None:
    pattern = re.compile(r"(@import\s+(url\()?\s*['\"]?|url\(\s*['\"]?)(https?:)?//", re.I)
    offenders = []
    for css in book_html.rglob("*.css"):
        text = re.sub(r"/\*.*?\*/", "", css.read_text(encoding="utf-8", errors="replace"), flags=re.S)
        if pattern.search(text):
            offenders.append(str(css.relative_to(book_html)))
    assert not offenders, f"stylesheets that fetch from another host: {offenders}"


def test_vendored_javascript_is_in_the_build(strict_build: tuple[int, str], book_html: Path) -> None:
    for rel in (
        "_vendor/require.js",
        "_vendor/widgets-shim.js",
        "_vendor/html-manager/embed-amd.js",
        "_vendor/mathjax/es5/tex-mml-chtml.js",
        "_vendor/mathjax/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
    ):
        assert (book_html / rel).is_file(), f"{rel} missing from the build: scripts/vendor_js.sh copies it"


def test_javascript_versions_are_pinned_exactly() -> None:
    package = json.loads((REPO / "package.json").read_text())
    lock = json.loads((REPO / "package-lock.json").read_text())
    pins = {**package.get("dependencies", {}), **package.get("devDependencies", {})}
    assert {"@jupyter-widgets/html-manager", "mathjax", "requirejs", "playwright-core"} <= set(pins)
    for name, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} must be pinned exactly, got {version!r}"
        locked = lock["packages"].get(f"node_modules/{name}", {}).get("version")
        assert locked == version, f"package-lock.json has {name} {locked}, package.json pins {version}"


def test_no_top_level_static_folder() -> None:
    # Jupyter Book 1 adds every .js/.css under a top-level _static/ (and under every
    # html_static_path entry) to every page: the vendored JavaScript must never be there.
    assert not (REPO / "_static").exists(), (
        "a top-level _static/ makes Jupyter Book load every script it finds in the static "
        "paths on every page; put page assets elsewhere"
    )
