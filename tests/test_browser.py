"""Every page of the built book, opened in headless Chromium, works offline.

Fails on any request that leaves the machine, any page error or console error, any
failed or missing local resource, any broken image, and any broken internal link
(a page or #anchor that does not exist). Widgets embedded in pages must render and
every formula must be typeset, without a kernel and without a network.

Needs Debian's chromium and chromium-driver, and node/npm (.ci/run installs them); where
Chromium is missing these tests fail with the command that installs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import book_browser
import pytest

# Evaluated on every page after it loaded: what a reader would see of widgets and math.
RENDER_PROBE = """(() => {
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const unrendered = views.filter((s) => {
    const area = s.parentElement && s.parentElement.querySelector('.widget-subarea');
    return !(area && area.children.length > 0);
  }).length;
  const maths = [...document.querySelectorAll('.math')];
  const untypeset = maths.filter((m) => !m.querySelector('mjx-container')).length;
  const mathErrors = document.querySelectorAll('mjx-merror').length;
  return {widgetViews: views.length, unrendered, maths: maths.length, untypeset, mathErrors};
})()"""


@pytest.fixture(scope="module")
def site_report(book_html: Path, browse: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    pages = book_browser.built_pages(book_html)
    assert pages, f"no HTML pages in {book_html}"
    report = browse(
        [{"path": p, "actions": [{"type": "eval", "expression": RENDER_PROBE}]} for p in pages],
        check_links=True,
    )
    book_browser.SUMMARY["browser"] = (
        f"{len(report['pages'])} pages opened in Chromium, "
        f"{report['externalRequestCount']} requests to other hosts, "
        f"{len(report['brokenLinks'])} broken internal links"
    )
    return report


def test_no_request_leaves_the_machine(site_report: dict[str, Any]) -> None:
    assert site_report["externalRequestCount"] == 0, (
        "requests to other hosts (vendor these, scripts/vendor_js.sh):\n" + "\n".join(site_report["externalRequests"])
    )


def test_every_page_loads_without_errors(site_report: dict[str, Any]) -> None:
    problems = {p["path"]: book_browser.page_problems(p) for p in site_report["pages"]}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, "\n".join(f"{page}:\n  " + "\n  ".join(v) for page, v in problems.items())


def test_internal_links_and_anchors_exist(site_report: dict[str, Any]) -> None:
    broken = [f"{b['page']}: {b['href']} ({b['reason']})" for b in site_report["brokenLinks"]]
    assert not broken, "broken internal links:\n" + "\n".join(broken)
    assert sum(len(p["links"]) for p in site_report["pages"]) > 0


def test_widgets_render_and_math_is_typeset(site_report: dict[str, Any]) -> None:
    bad = []
    for page in site_report["pages"]:
        (probe,) = page["actions"]
        assert probe["ok"], f"{page['path']}: {probe.get('error')}"
        v = probe["value"]
        if v["unrendered"]:
            bad.append(f"{page['path']}: {v['unrendered']} of {v['widgetViews']} widgets not rendered")
        if v["untypeset"] or v["mathErrors"]:
            bad.append(
                f"{page['path']}: {v['untypeset']} of {v['maths']} formulas not typeset, {v['mathErrors']} errors"
            )
    assert not bad, "\n".join(bad)


# --- the checker itself catches what it is meant to catch --------------------------------

BAD_PAGE = """<!doctype html><html><head><title>bad</title>
<script src="https://cdn.example.invalid/lib.js"></script></head><body>
<h1 id="top">bad</h1>
<img src="missing.png" alt="missing">
<a href="good.html#nowhere">no such anchor</a>
<a href="absent.html">no such page</a>
<a href="good.html#here">fine</a>
<a href="https://example.invalid/">an external link is not a load</a>
<script>console.error("boom from a page script"); throw new Error("thrown by a page script");</script>
</body></html>"""

GOOD_PAGE = """<!doctype html><html><head><title>good</title></head><body>
<h2 id="here">here</h2><a href="bad.html#top">back</a></body></html>"""


def test_checker_reports_each_kind_of_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.html").write_text(BAD_PAGE)
    (tmp_path / "good.html").write_text(GOOD_PAGE)
    with book_browser.serve(tmp_path) as url:
        try:
            report = book_browser.run_pages(url, ["bad.html", "good.html"], check_links=True)
        except book_browser.BrowserUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
    bad, good = report["pages"]
    assert bad["external"] == ["https://cdn.example.invalid/lib.js"]
    assert report["externalRequestCount"] == 1
    assert any("thrown by a page script" in m for m in bad["pageErrors"])
    assert any("boom from a page script" in c["text"] for c in bad["consoleErrors"])
    assert any(src.endswith("/missing.png") for src in bad["brokenImages"])
    assert any(e["status"] == 404 and e["url"].endswith("/missing.png") for e in bad["httpErrors"])
    broken = {(b["page"], b["href"]) for b in report["brokenLinks"]}
    assert broken == {("bad.html", "good.html#nowhere"), ("bad.html", "absent.html")}
    assert book_browser.page_problems(good) == []
    assert len(book_browser.page_problems(bad)) >= 5


def test_checker_runs_actions_on_a_page(tmp_path: Path) -> None:
    (tmp_path / "slider.html").write_text(
        """<!doctype html><html><body>
        <input id="bits" type="range" min="1" max="8" value="8">
        <select id="fmt"><option>int8</option><option>int4</option></select>
        <span id="out">8</span>
        <script>
          const show = () => { document.getElementById("out").textContent =
            document.getElementById("bits").value + " " + document.getElementById("fmt").value; };
          document.getElementById("bits").addEventListener("input", show);
          document.getElementById("fmt").addEventListener("change", show);
        </script></body></html>"""
    )
    with book_browser.serve(tmp_path) as url:
        report = book_browser.run_pages(
            url,
            [
                {
                    "path": "slider.html",
                    "actions": [
                        {"type": "setRange", "selector": "#bits", "value": 3},
                        {"type": "text", "selector": "#out"},
                        {"type": "select", "selector": "#fmt", "value": "int4"},
                        {"type": "text", "selector": "#out"},
                        {"type": "eval", "expression": "document.getElementById('bits').value"},
                        {"type": "click", "selector": "#no-such-element", "timeoutMs": 500},
                    ],
                }
            ],
        )
    actions = report["pages"][0]["actions"]
    assert [a["value"] for a in actions[:5] if "value" in a] == ["3 int8", "3 int4", "3"]
    assert actions[5]["ok"] is False and actions[5]["error"]


def test_missing_chromium_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(book_browser, "CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(book_browser.BrowserUnavailable, match="apt-get install -y chromium chromium-driver"):
        book_browser.check_browser_tools()
