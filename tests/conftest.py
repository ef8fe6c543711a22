"""Shared fixtures: the built book, served on 127.0.0.1, and a headless browser.

- ``book_html``: Path to _build/html. Built with scripts/build_book.sh when missing or
  older than its sources (``make test`` builds it once, in tests/test_book.py, before
  the browser tests run, so they reuse it).
- ``book_url``: base URL of _build/html served on 127.0.0.1 for the whole session.
- ``browse``: ``browse(pages, check_links=False)`` opens pages in headless Chromium and
  returns the report of tests/browser/check_pages.mjs (see tests/book_browser.py).
  Where Chromium is missing the test fails and says how to install it.

Name a test file that needs the built book ``tests/test_*browser*.py``: scripts/test.sh
runs those after the strict build (tests/test_book.py), so the book is built once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import book_browser


@pytest.fixture(scope="session")
def book_html() -> Path:
    if book_browser.book_is_stale():
        proc = book_browser.build_book()
        # A build that finished with warnings still wrote its pages: tests/test_book.py
        # reports the warnings, the browser tests check the pages.
        if not (book_browser.BUILD_HTML / "index.html").is_file():
            pytest.fail(f"building the book failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}")
    return book_browser.BUILD_HTML


@pytest.fixture(scope="session")
def book_url(book_html: Path) -> Iterator[str]:
    with book_browser.serve(book_html) as url:
        yield url


@pytest.fixture(scope="session")
def browse(book_url: str) -> Callable[..., dict[str, Any]]:
    try:
        book_browser.check_browser_tools()
    except book_browser.BrowserUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)

    def _browse(pages: list[Any], **kwargs: Any) -> dict[str, Any]:
        return book_browser.run_pages(book_url, pages, **kwargs)

    return _browse


def _torch_global_state() -> dict[str, Any]:
    import torch

    return {
        "torch.get_num_threads()": torch.get_num_threads(),
        "torch.get_default_dtype()": torch.get_default_dtype(),
        "torch.is_grad_enabled()": torch.is_grad_enabled(),
        "torch.are_deterministic_algorithms_enabled()": torch.are_deterministic_algorithms_enabled(),
    }


@pytest.fixture(autouse=True)
def _no_leaked_torch_state() -> Iterator[None]:
    """Fail a test that changes torch's global settings without restoring them.

    The thread count, default dtype, grad mode and deterministic-algorithms flag are
    recorded before each test and compared after it (fixtures included); a changed one
    is restored, so later tests run as usual, and the test fails naming it. Use
    ``try``/``finally`` (or a context manager such as ``torch.no_grad()``) in tests that
    change them.
    """
    import torch

    before = _torch_global_state()
    yield
    after = _torch_global_state()
    changed = {k: (before[k], after[k]) for k in before if after[k] != before[k]}
    if not changed:
        return
    torch.set_num_threads(before["torch.get_num_threads()"])
    torch.set_default_dtype(before["torch.get_default_dtype()"])
    torch.set_grad_enabled(before["torch.is_grad_enabled()"])
    torch.use_deterministic_algorithms(before["torch.are_deterministic_algorithms_enabled()"])
    pytest.fail(
        "the test changed torch's global state without restoring it: "
        + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()),
        pytrace=False,
    )


@pytest.fixture(autouse=True)
def _isolated_random_state() -> Iterator[None]:
    """Each test sees the random state the one before it left, and leaves none behind.

    Tests seed torch's, numpy's and Python's global generators (or draw from them); the
    states are saved before each test and restored after it, so no test's seeding or draws
    change what another test computes, whatever order they run in.
    """
    import random

    import numpy as np
    import torch

    saved = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        yield
    finally:
        torch.random.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist a worker hands its summary lines to the controller (workeroutput).
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["quantlab_summary"] = dict(book_browser.SUMMARY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    book_browser.SUMMARY.update(getattr(node, "workeroutput", {}).get("quantlab_summary", {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, line in book_browser.SUMMARY.items():
        terminalreporter.write_line(f"{name}: {line}")
