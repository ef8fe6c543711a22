"""HTML for the explorer: the shipped styles and script, and markup that reads without them.

Both front ends are HTML in the end (the kernel widget's cards and block inspector, the
kernel-free page). Their look is written once, in ``explorer_assets/explorer.css``; markup
built here with :class:`El` can be rendered with those rules *inlined* as ``style``
attributes (:func:`render` with ``inline=True``), so that it still reads where a
``<style>`` element does not survive: an ipywidgets ``HTML`` widget, or JupyterLab showing
an untrusted notebook (its sanitizer keeps inline styles but drops ``<style>``,
``<script>`` and ``<svg>``). The CSS custom properties ``var(--qlx-...)`` become their
values (:data:`COLORS`).

:func:`panel_html` and :func:`panel_text` render a *panel description* (a title, a
sentence and tables of strings, :func:`check_panel`; such as
:meth:`.blocks.BlockView.describe`); the page's script renders the same description in the
browser with one function (``drawPanel``) that knows no word of it.

Taught in: chapters/02_explorer.ipynb, "Try it first".
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Optional, Sequence, Union

from .text import FIGURE_LABELS

__all__ = [
    "COLORS",
    "ALIGNS",
    "asset",
    "El",
    "render",
    "check_panel",
    "panel",
    "panel_html",
    "panel_text",
    "figure_cards",
]

#: Folder of the shipped script and styles, inside the ``quantlab.book`` package.
ASSETS_PACKAGE = "quantlab.book"
ASSETS_DIR = "explorer_assets"


@cache
def asset(name: str) -> str:
    """The text of ``quantlab/book/explorer_assets/<name>`` without its leading ``/* ... */``
    comment (a note for readers of the file, which the page leaves out)."""
    text = resources.files(ASSETS_PACKAGE).joinpath(ASSETS_DIR, name).read_text("utf-8")
    if text.startswith("/*"):
        text = text.split("*/\n", 1)[1]
    return text


def _css_colors(css: str) -> dict[str, str]:
    """The ``--qlx-<name>: #rrggbb`` custom properties of the explorer's styles, by name."""
    return dict(re.findall(r"--qlx-([a-z]+):(#[0-9a-fA-F]{6})\b", css))


#: The explorer's colours, read from the custom properties of ``explorer.css`` (their one
#: definition): ``fg`` text, ``muted`` secondary text and axes, ``border``, ``bg`` panels,
#: ``orig`` the float32 weights, ``quant`` the quantized weights. The page uses them through
#: CSS variables, inlined markup and the kernel widget's matplotlib figure through this dict.
COLORS: dict[str, str] = _css_colors(asset("explorer.css"))


# --------------------------------------------------------------------------- elements


@dataclass
class El:
    """An HTML element: tag, attributes (``class`` a space-separated string; ``True`` for
    a bare attribute such as ``hidden``, ``None`` to leave it out) and children (elements or
    text, escaped when rendered). ``raw`` children (:func:`Raw`) are inserted verbatim."""

    tag: str
    attrs: dict[str, Any] = field(default_factory=dict)
    children: list[Union[El, str, Raw]] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(str(self.attrs.get("class") or "").split())


@dataclass(frozen=True)
class Raw:
    """Text inserted into the HTML as it is (a script or a stylesheet)."""

    text: str


def el(tag: str, attrs: Optional[dict[str, Any]] = None, *children: Union[El, str, Raw]) -> El:
    """Shorthand for :class:`El`: ``el("p", {"class": "x"}, "text")``."""
    return El(tag, dict(attrs or {}), list(children))


_VOID = {"input", "br", "wbr", "img", "hr", "meta", "link"}


@dataclass(frozen=True)
class _Compound:
    tag: Optional[str]
    classes: frozenset[str]
    attrs: tuple[tuple[str, str], ...]

    def matches(self, node: El) -> bool:
        return (
            (self.tag is None or node.tag == self.tag)
            and self.classes <= node.classes
            and all(str(node.attrs.get(k)) == v for k, v in self.attrs)
        )


@dataclass(frozen=True)
class _Rule:
    chain: tuple[_Compound, ...]  # descendant combinators, outermost first
    specificity: tuple[int, int]
    order: int
    declarations: tuple[tuple[str, str], ...]


_COMPOUND = re.compile(r"^([a-z][a-z0-9]*)?((?:\.[\w-]+|\[[\w-]+=[\w-]+\])*)$")


def _compound(text: str) -> Optional[_Compound]:
    m = _COMPOUND.match(text)
    if m is None:
        return None
    classes = frozenset(re.findall(r"\.([\w-]+)", m.group(2)))
    attrs = tuple(re.findall(r"\[([\w-]+)=([\w-]+)\]", m.group(2)))
    return _Compound(m.group(1), classes, attrs)


@cache
def _rules(css: str) -> tuple[_Rule, ...]:
    """The rules of a stylesheet that inlining can apply: plain selectors (tags, classes,
    ``[attr=value]``, descendant combinators) outside ``@media``; custom properties and
    rules with pseudo-classes or other combinators are left to the stylesheet."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    while (start := css.find("@media")) >= 0:  # drop @media blocks (balanced braces)
        depth, i = 0, css.index("{", start)
        while True:
            depth += {"{": 1, "}": -1}.get(css[i], 0)
            i += 1
            if depth == 0:
                break
        css = css[:start] + css[i:]
    rules = []
    for order, (selectors, body) in enumerate(re.findall(r"([^{}]+)\{([^{}]*)\}", css)):
        decls = []
        for decl in body.split(";"):
            if ":" not in decl:
                continue
            prop, value = (s.strip() for s in decl.split(":", 1))
            if prop.startswith("--"):
                continue
            value = re.sub(r"var\(--qlx-([a-z]+)\)", lambda m: COLORS[m.group(1)], value)
            decls.append((prop, value))
        for selector in selectors.split(","):
            parts = [_compound(p) for p in selector.split()]
            if not parts or any(p is None for p in parts):
                continue
            spec = (sum(len(p.classes) + len(p.attrs) for p in parts), sum(p.tag is not None for p in parts))
            rules.append(_Rule(tuple(parts), spec, order, tuple(decls)))
    return tuple(rules)


def _matches(rule: _Rule, node: El, ancestors: Sequence[El]) -> bool:
    *outer, last = rule.chain
    if not last.matches(node):
        return False
    i = len(ancestors)
    for comp in reversed(outer):
        while i > 0 and not comp.matches(ancestors[i - 1]):
            i -= 1
        if i == 0:
            return False
        i -= 1
    return True


def _inline_style(node: El, ancestors: Sequence[El], rules: Sequence[_Rule]) -> Optional[str]:
    found = sorted((r for r in rules if _matches(r, node, ancestors)), key=lambda r: (r.specificity, r.order))
    decls: dict[str, str] = {}
    for r in found:
        for prop, value in r.declarations:
            decls.pop(prop, None)
            decls[prop] = value
    own = node.attrs.get("style")
    text = ";".join(f"{p}:{v}" for p, v in decls.items())
    if own:
        text = f"{text};{own}" if text else str(own)
    return text or None


def render(node: Union[El, str, Raw], inline: bool = False, css: Optional[str] = None) -> str:
    """HTML of ``node``; with ``inline=True`` every element also gets the declarations of the
    stylesheet rules that match it (``css``, default ``explorer.css``) as its ``style``."""
    rules = _rules(css if css is not None else asset("explorer.css")) if inline else ()
    return _render(node, rules, [])


def _render(node: Union[El, str, Raw], rules: Sequence[_Rule], ancestors: list[El]) -> str:
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, str):
        return html.escape(node, quote=False)
    attrs = dict(node.attrs)
    if rules and node.tag not in ("style", "script"):
        attrs["style"] = _inline_style(node, ancestors, rules)
    text = "".join(
        f" {k}" if v is True else f' {k}="{html.escape(str(v), quote=True)}"'
        for k, v in attrs.items()
        if v is not None and v is not False
    )
    if node.tag in _VOID:
        return f"<{node.tag}{text}>"
    ancestors.append(node)
    inner = "".join(_render(c, rules, ancestors) for c in node.children)
    ancestors.pop()
    return f"<{node.tag}{text}>{inner}</{node.tag}>"


# --------------------------------------------------------------------------- panels and cards


#: The alignments a panel table may ask for (its ``align``).
ALIGNS = ("left", "right")


def check_panel(desc: Any) -> dict[str, Any]:
    """``desc`` if it is a panel description: ``{"title": str, "text": str, "tables": [...]}``
    whose tables are ``{"role": str, "align": "left" | "right", "head": [str, ...],
    "rows": [[str, ...], ...]}`` with as many cells in every row as in ``head``.

    Raises:
        TypeError: ``desc`` or one of its parts has the wrong type (the message names it).
        ValueError: an unknown ``align``, or a row with the wrong number of cells.
    """
    if not isinstance(desc, dict):
        raise TypeError(f"desc must be a dict (a panel description), got {type(desc).__name__}")
    for key in ("title", "text"):
        if not isinstance(desc.get(key), str):
            raise TypeError(f"desc[{key!r}] must be a str, got {type(desc.get(key)).__name__}")
    if not isinstance(desc.get("tables"), list):
        raise TypeError(f"desc['tables'] must be a list, got {type(desc.get('tables')).__name__}")
    for i, t in enumerate(desc["tables"]):
        where = f"desc['tables'][{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("role"), str):
            raise TypeError(f"{where} must be a dict with a str 'role', got {t!r:.80}")
        if t.get("align") not in ALIGNS:
            raise ValueError(f"{where}['align'] must be one of {ALIGNS}, got {t.get('align')!r}")
        head, rows = t.get("head"), t.get("rows")
        if not isinstance(head, list) or not all(isinstance(h, str) for h in head):
            raise TypeError(f"{where}['head'] must be a list of str, got {head!r:.80}")
        if not isinstance(rows, list):
            raise TypeError(f"{where}['rows'] must be a list, got {type(rows).__name__}")
        for j, r in enumerate(rows):
            if not isinstance(r, list) or not all(isinstance(v, str) for v in r):
                raise TypeError(f"{where}['rows'][{j}] must be a list of str, got {r!r:.80}")
            if len(r) != len(head):
                raise ValueError(f"{where}['rows'][{j}] has {len(r)} cells, its head {len(head)}")
    return desc


def panel(desc: Optional[dict[str, Any]], role: str = "block") -> El:
    """A panel description (:func:`check_panel`; :meth:`.blocks.BlockView.describe`) as
    elements: a ``div.qlx-block`` (``data-role=role``) holding the title (``p > strong``), the
    sentence (``p``) and the tables (``table[data-role][data-align]``, a header row, then the
    rows); hidden and empty when ``desc`` is None. The page's script (``drawPanel``) builds the
    same elements from the same description; ``explorer.css`` styles them, aligning a table's
    cells by its ``data-align``."""
    box = el("div", {"class": "qlx-block", "data-role": role, "hidden": desc is None})
    if desc is None:
        return box
    check_panel(desc)
    box.children += [el("p", {}, el("strong", {}, desc["title"])), el("p", {}, desc["text"])]
    for t in desc["tables"]:
        head = el("thead", {}, el("tr", {}, *(el("th", {}, h) for h in t["head"])))
        body = el("tbody", {}, *(el("tr", {}, *(el("td", {}, v) for v in r)) for r in t["rows"]))
        box.children.append(el("table", {"data-role": t["role"], "data-align": t["align"]}, head, body))
    return box


def panel_html(desc: dict[str, Any]) -> str:
    """A panel description as HTML with inline styles (for notebooks and the kernel widget)."""
    return render(panel(check_panel(desc)), inline=True)


def panel_text(desc: dict[str, Any]) -> str:
    """A panel description as plain text: the title, the sentence, then each table with
    its columns two spaces apart and aligned as the table says (``align``)."""
    check_panel(desc)
    lines = [desc["title"], desc["text"]]
    for t in desc["tables"]:
        rows = [t["head"]] + t["rows"]
        widths = [max(len(r[i]) for r in rows) for i in range(len(t["head"]))]
        pad = str.ljust if t["align"] == "left" else str.rjust
        lines += ["  ".join(pad(v, w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def figure_cards(figures: Optional[dict[str, str]] = None) -> El:
    """The figure cards (:data:`FIGURE_LABELS`), filled with ``figures`` (or "—")."""
    return el(
        "div",
        {"class": "qlx-figs"},
        *(
            el(
                "div",
                {"class": "qlx-fig"},
                el("span", {"class": "k"}, label),
                el("span", {"class": "v", "data-fig": k}, (figures or {}).get(k, "—")),
            )
            for k, label in FIGURE_LABELS.items()
        ),
    )
