"""Sphinx extension for the quantlab book: every page loads only local assets.

Two jobs, both at ``html-page-context`` (after every other extension added its files):

1. Drop duplicate ``<script>`` entries. sphinx-thebe registers an inline script that
   declares ``const THEBE_JS_URL``; Sphinx 7.4 adds it to each page twice (once as
   registered, once re-read from the registry with ``''`` instead of ``None`` as its file
   name), and the second ``const`` is a SyntaxError in the browser.
2. Warn (a build error under ``-W``) when a page would load a script or stylesheet from
   another host. The book must work offline: everything it loads is vendored
   (scripts/vendor_js.sh). Links, such as the Binder launch button, are not loads.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _asset_key(asset: Any) -> tuple:
    filename = getattr(asset, "filename", asset) or ""
    attributes = getattr(asset, "attributes", {}) or {}
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe(assets: list[Any]) -> None:
    seen: set[tuple] = set()
    unique = []
    for asset in assets:
        key = _asset_key(asset)
        if key not in seen:
            seen.add(key)
            unique.append(asset)
    assets[:] = unique


def _is_remote(filename: str) -> bool:
    return "://" in filename or filename.startswith("//")


def check_page_assets(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Remove duplicate scripts and warn about scripts or stylesheets from other hosts."""
    for key in ("script_files", "css_files"):
        assets = context.get(key)
        if not isinstance(assets, list):
            continue
        _dedupe(assets)
        for asset in assets:
            filename = str(getattr(asset, "filename", asset) or "")
            if _is_remote(filename):
                logger.warning(
                    "page %r would load %r from another host; vendor it "
                    "(scripts/vendor_js.sh) so the book works offline",
                    pagename,
                    filename,
                    type="quantlab",
                    subtype="offline",
                )


def setup(app: Sphinx) -> dict[str, Any]:
    # Priority 900: run after myst-nb (500) has added its per-page widget scripts.
    app.connect("html-page-context", check_page_assets, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
