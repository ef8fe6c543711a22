"""What every kernel-free figure shares: the page fragment, its styles and script helpers.

A figure is one ``<div class="qlf" id="...">`` holding, in this order, its styles (the
shared ``assets/figures.css`` plus the figure's own rules), its controls and drawings, its
precomputed data as ``<script type="application/json" data-role="data">`` and one inline
script: the shared helpers of ``assets/common.js`` followed by the figure's own
``assets/<name>.js``, inside one function, with ``__ROOT__`` replaced by the figure's id.
Nothing is loaded from anywhere: the fragment works in a page opened from disk, in the
built book and in JupyterLab (a trusted notebook).

Colours are CSS custom properties of ``.qlf`` (``--qlf-fg``, ``--qlf-panel``, ...) with a
second set under ``html[data-theme="dark"]`` (the pydata-sphinx-theme's dark mode) and
``body[data-jp-theme-light="false"]`` (JupyterLab's dark themes), so a figure follows the
reader's theme without its script knowing about it.

:func:`standalone_page` wraps fragments into a whole HTML document (the browser tests
open one per figure).
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any, Sequence

from ...core.validate import describe

__all__ = ["asset", "check_root_id", "json_payload", "figure_html", "standalone_page", "THEMES"]

_ASSETS = "assets"
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: The themes :func:`standalone_page` can open a page in.
THEMES: tuple[str, ...] = ("light", "dark")


@cache
def asset(name: str) -> str:
    """The text of ``quantlab/book/figures/assets/<name>`` without its leading ``/* ... */``
    comment (the comment documents the file; the page does not need it).

    Raises:
        FileNotFoundError: no such asset.
    """
    text = resources.files(__package__).joinpath(_ASSETS, name).read_text("utf-8")
    if text.startswith("/*"):
        text = text.split("*/\n", 1)[1]
    return text


def check_root_id(root_id: Any) -> str:
    """Return ``root_id`` if it can be the ``id`` of a figure's outer element.

    An id starts with a letter and holds at most 64 letters, digits, ``-`` and ``_``
    (it is pasted into the script and into derived ids such as ``<id>-format``).

    Raises:
        TypeError: not a string.
        ValueError: a string of any other shape.
    """
    if not isinstance(root_id, str):
        raise TypeError(f"root_id must be a string, got {type(root_id).__name__} {describe(root_id)}")
    if not _ID_RE.match(root_id):
        raise ValueError(
            f"root_id must start with a letter and hold at most 64 letters, digits, '-' and '_', got {root_id!r}"
        )
    return root_id


def json_payload(data: Any) -> str:
    """``data`` as compact JSON that is safe inside ``<script>`` (no ``</`` sequence).

    Raises:
        ValueError: ``data`` holds NaN or infinity (JSON has neither).
    """
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"data must hold finite numbers only ({err})") from err
    return text.replace("</", "<\\/")


def figure_html(*, root_id: str, name: str, title: str, body: str, data: Any, label: str) -> str:
    """Assemble one figure's fragment (see the module docstring).

    Args:
        root_id: the ``id`` of the outer ``<div>`` (checked by :func:`check_root_id`).
        name: the figure's asset name: ``assets/<name>.js`` and ``assets/<name>.css``.
        title: the heading shown above the figure.
        body: the figure's controls and drawings (HTML, ids already derived from ``root_id``).
        data: the precomputed data (JSON-able, finite numbers only).
        label: ``aria-label`` of the whole figure (what it is, for a screen reader).

    Returns:
        The HTML fragment: a ``<div class="qlf qlf-<name>" id=root_id role="figure">``.
    """
    rid = check_root_id(root_id)
    css = asset("figures.css") + asset(f"{name}.css")
    script = asset("common.js") + asset(f"{name}.js")
    return (
        f'<div class="qlf qlf-{name}" id="{rid}" role="figure" aria-label="{html.escape(label)}">'
        f"<style>\n{css}</style>"
        f"<h4>{html.escape(title)}</h4>"
        f"{body}"
        f'<script type="application/json" data-role="data">{json_payload(data)}</script>'
        "<script>\n(function () {\n"
        f'var root = document.getElementById("{rid}");\n'
        "if (!root || root.dataset.ready) return;\n"
        'root.dataset.ready = "1";\n'
        'var D = JSON.parse(root.querySelector("script[data-role=data]").textContent);\n'
        f"{script.replace('__ROOT__', rid)}"
        "})();\n</script>"
        "</div>"
    )


def standalone_page(fragments: Sequence[str], title: str = "figure", theme: str = "light") -> str:
    """A whole HTML document holding ``fragments``, as the book's theme would frame them.

    The ``<html>`` element carries ``data-theme`` (``"light"`` or ``"dark"``), the attribute
    the pydata-sphinx-theme sets; in dark mode the page background is dark too.

    Raises:
        TypeError: ``fragments`` not a sequence of strings, ``title`` not a string.
        ValueError: an unknown ``theme``.
    """
    if isinstance(fragments, str) or not all(isinstance(f, str) for f in fragments):
        raise TypeError(f"fragments must be a sequence of HTML strings, got {describe(fragments)}")
    if not isinstance(title, str):
        raise TypeError(f"title must be a string, got {type(title).__name__}")
    if theme not in THEMES:
        raise ValueError(f"theme must be one of {THEMES}, got {theme!r}")
    bg, fg = ("#12161c", "#ced6dd") if theme == "dark" else ("#ffffff", "#222832")
    return (
        f'<!DOCTYPE html>\n<html lang="en" data-theme="{theme}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        f"<style>body{{margin:0;padding:8px;background:{bg};color:{fg};"
        "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}</style>"
        f"</head><body><main>{''.join(fragments)}</main></body></html>\n"
    )
