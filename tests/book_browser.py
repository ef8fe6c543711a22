"""Helpers for tests that need the built book or a headless browser.

Used through the fixtures in tests/conftest.py (``book_html``, ``book_url``, ``browse``),
or directly::

    from book_browser import run_pages
    report = run_pages(base_url, [
        {"path": "chapters/02_explorer.html", "actions": [
            {"type": "setRange", "selector": "input[type=range]", "value": 4},
            {"type": "attr", "selector": "img#explorer-plot", "name": "src"},
        ]},
    ])
    report["pages"][0]["actions"][1]["value"]   # the figure after the slider moved

The browser side is tests/browser/check_pages.mjs (playwright-core driving Debian's
/usr/bin/chromium); its header documents every action and the report's fields.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUILD_HTML = REPO / "_build" / "html"
CHECK_PAGES = REPO / "tests" / "browser" / "check_pages.mjs"
CHROMIUM = os.environ.get("QUANTLAB_CHROMIUM", "/usr/bin/chromium")

INSTALL_HINT = (
    "The browser tests need Debian's Chromium and Node.js: "
    "`apt-get update && apt-get install -y chromium chromium-driver nodejs npm` "
    "(.ci/run does this), then `bash scripts/vendor_js.sh` for playwright-core."
)

# Figures for the closing summary of a pytest run (printed by tests/conftest.py).
SUMMARY: dict[str, str] = {}

# What the book is built from: a newer file here means _build/html is stale.
BOOK_SOURCES = ("_config.yml", "_toc.yml", "chapters", "src/quantlab", "_ext")


class BrowserUnavailable(RuntimeError):
    """Chromium, Node.js or playwright-core is missing (the message says how to install)."""


def check_browser_tools() -> None:
    """Raise BrowserUnavailable unless Chromium, node and playwright-core are installed."""
    missing = []
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium ({CHROMIUM})")
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        raise BrowserUnavailable(f"missing: {', '.join(missing)}. {INSTALL_HINT}")
    if not (REPO / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["bash", str(REPO / "scripts" / "vendor_js.sh")], check=True, cwd=REPO)


def _newest_mtime(paths: Sequence[Path]) -> float:
    newest = 0.0
    for path in paths:
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            for f in path.rglob("*"):
                if f.is_file() and "__pycache__" not in f.parts and ".ipynb_checkpoints" not in f.parts:
                    newest = max(newest, f.stat().st_mtime)
    return newest


BUILD_STAMP = REPO / "_build" / ".book-stamp"  # written by scripts/build_book.sh


def book_is_stale(html: Path = BUILD_HTML) -> bool:
    """True when _build/html is missing or older than any of the book's sources.

    A finished build (even one that failed on warnings, which tests/test_book.py reports)
    is reused, so that ``make test`` builds the book once.
    """
    if not (html / "index.html").is_file() or not BUILD_STAMP.is_file():
        return True
    return _newest_mtime([REPO / p for p in BOOK_SOURCES]) > BUILD_STAMP.stat().st_mtime


def build_book(*extra_args: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/build_book.sh (the body of `make book`); return the finished process.

    Output (stdout and stderr together) is in ``.stdout``; the caller checks ``returncode``.
    """
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "build_book.sh"), *extra_args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


def built_pages(html: Path = BUILD_HTML) -> list[str]:
    """Every HTML page of the built book, as paths relative to ``html`` (posix)."""
    skip = {"_static", "_vendor", "_sources", "_images", ".doctrees"}
    pages = []
    for f in sorted(html.rglob("*.html")):
        rel = f.relative_to(html)
        if rel.parts[0] in skip:
            continue
        pages.append(rel.as_posix())
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_pages(
    base_url: str,
    pages: Sequence[str | dict[str, Any]],
    *,
    check_links: bool = False,
    settle_ms: int = 300,
    timeout_s: float = 600,
) -> dict[str, Any]:
    """Open ``pages`` (paths relative to ``base_url``, or dicts with "path" and "actions")
    in headless Chromium and return the report of tests/browser/check_pages.mjs.

    Raises:
        BrowserUnavailable: Chromium, node or playwright-core is missing.
        RuntimeError: the browser driver itself failed.
    """
    check_browser_tools()
    spec = {
        "baseUrl": base_url,
        "pages": list(pages),
        "chromium": CHROMIUM,
        "checkLinks": check_links,
        "settleMs": settle_ms,
    }
    with tempfile.TemporaryDirectory(prefix="ql-browser-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        report_path = Path(tmp) / "report.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run(
            ["node", str(CHECK_PAGES), str(spec_path), str(report_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0 or not report_path.is_file():
            raise RuntimeError(
                f"check_pages.mjs failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return json.loads(report_path.read_text())


def page_problems(page: dict[str, Any]) -> list[str]:
    """Human-readable problems in one page's report (empty when the page is clean)."""
    problems = []
    problems += [f"request to another host: {u}" for u in page["external"]]
    problems += [f"page error: {m}" for m in page["pageErrors"]]
    problems += [f"console error: {c['text']} ({c['url']})" for c in page["consoleErrors"]]
    problems += [f"HTTP {e['status']}: {e['url']}" for e in page["httpErrors"]]
    problems += [f"request failed ({e['error']}): {e['url']}" for e in page["failed"]]
    problems += [f"missing image: {src}" for src in page["brokenImages"]]
    if page.get("status") not in (200, 304):
        problems.append(f"page status {page.get('status')}")
    return problems
