"""Pages 02 and 02b in JupyterLab, as a student on a laptop or on Binder meets them.

Starts JupyterLab headless on 127.0.0.1 on a temporary copy of ``chapters/`` (autosave off,
through a settings folder, so nothing is written back; the copy is deleted after), opens
each notebook in headless Chromium (tests/browser/jupyterlab.mjs, playwright-core), looks at
it as it opens, clears its outputs, runs all cells and checks:

* before anything runs, the kernel-free explorer shows its initial setting (filled cards,
  a still picture) although JupyterLab drops the scripts and styles of an untrusted
  notebook, and the live explorer's cell shows a picture, not a widget's text repr;
* no cell ends in an error, and every code cell ran;
* the live explorer renders, and keys on its slider change its cards and its figure;
* once run, the kernel-free explorer's own script draws it;
* a checker on 02b prints its feedback (a mark and a sentence).

Fails with the install hint where Chromium, Node.js or playwright-core is missing, as the book's other browser tests do.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import book_browser
import pytest

from quantlab import explorer as E

REPO = book_browser.REPO
DRIVER = REPO / "tests" / "browser" / "jupyterlab.mjs"
NOTEBOOKS = ("02_explorer.ipynb", "02b_build_it.ipynb")
LIVE_CELL = "explorer.Explorer("
KEYS = ["End", "Home", "ArrowRight", "ArrowRight"]  # 32 bits, 2 bits, 3 bits, 4 bits
SETTINGS = {  # JupyterLab user settings for the run: no autosave, every cell in the DOM
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"JupyterLab did not answer {url} within {timeout} s")


@pytest.fixture(scope="module")
def lab() -> dict[str, Any]:
    try:
        book_browser.check_browser_tools()
    except book_browser.BrowserUnavailable as exc:
        pytest.fail(f"JupyterLab in Chromium cannot be tested: {exc}", pytrace=False)
    import jupyterlab  # noqa: F401  (pinned in requirements.txt: its absence is a broken environment)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ql-jupyterlab-") as tmp:
        tmp = Path(tmp)
        root = tmp / "chapters"
        shutil.copytree(REPO / "chapters", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        stored = {name: (root / name).read_bytes() for name in NOTEBOOKS}
        for rel, value in SETTINGS.items():
            (tmp / "settings" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "settings" / rel).write_text(json.dumps(value))
        port, token = _free_port(), secrets.token_hex(16)
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(REPO / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
            JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
            JUPYTER_CONFIG_DIR=str(tmp / "config"),
            JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
            IPYTHONDIR=str(tmp / "ipython"),
            MPLCONFIGDIR=str(tmp / "matplotlib"),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
        )
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # JupyterLab refuses to start as root without it
        log = open(tmp / "server.log", "w")  # noqa: SIM115 (open while the server runs)
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            base = f"http://127.0.0.1:{port}/"
            _wait_for_server(f"{base}api/status?token={token}", proc)
            server_s = time.monotonic() - started
            shots = (
                Path(os.environ["QUANTLAB_JUPYTERLAB_SCREENSHOTS"])
                if "QUANTLAB_JUPYTERLAB_SCREENSHOTS" in os.environ
                else None
            )
            spec = {
                "baseUrl": base,
                "token": token,
                "chromium": book_browser.CHROMIUM,
                "notebooks": list(NOTEBOOKS),
                "liveCell": LIVE_CELL,
                "slider": {"keys": KEYS},
                "firstOpenWait": {
                    "02_explorer.ipynb": [
                        ".jp-OutputArea-output .qlx .qlx-still-o",
                        ".jp-CodeCell .jp-OutputArea-output img",
                    ]
                },
                "screenshots": str(shots) if shots else None,
            }
            (tmp / "spec.json").write_text(json.dumps(spec))
            run = subprocess.run(
                ["node", str(DRIVER), str(tmp / "spec.json"), str(tmp / "report.json")],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=400,
            )
            if run.returncode != 0 or not (tmp / "report.json").is_file():
                raise RuntimeError(
                    f"jupyterlab.mjs failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
                )
            report = json.loads((tmp / "report.json").read_text())
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        report["server_s"] = server_s
        report["unchanged"] = {name: (root / name).read_bytes() == stored[name] for name in NOTEBOOKS}
        report["server_log"] = (tmp / "server.log").read_text()[-4000:]
    report["seconds"] = time.monotonic() - started
    steps = "; ".join(
        f"{nb['name']}: opened in {nb['timings'].get('open_ms', 0) / 1e3:.1f} s, ran in "
        f"{nb['timings'].get('run_ms', 0) / 1e3:.1f} s"
        + (" (Run All issued twice: the first was dropped)" if nb.get("runAllClicks", 1) > 1 else "")
        for nb in report["notebooks"]
    )
    book_browser.SUMMARY["jupyterlab"] = (
        f"{len(NOTEBOOKS)} notebooks opened, run and driven in {report['seconds']:.0f} s (server up in "
        f"{report['server_s']:.1f} s; {steps})"
    )
    report["by_name"] = {nb["name"]: nb for nb in report["notebooks"]}
    return report


def cards(settings: E.Settings) -> dict[str, str]:
    """The figure cards of a setting by label, as both explorers show them."""
    figures = E.explore(**settings.controls()).figures
    return {label: figures[k] for k, label in E.FIGURE_LABELS.items()}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_an_error(lab, name):
    nb = lab["by_name"][name]
    assert nb["ok"], (nb["error"], lab["server_log"][-1500:])
    assert nb["runAllClicks"] in (1, 2)  # a dropped Run All is retried once, never more
    prompts = nb["run"]["prompts"]
    assert len(prompts) == nb["run"]["codeCells"] > 5
    assert all(p.startswith("[") and p[1:-2].isdigit() for p in prompts), prompts  # every cell ran
    assert [s for s in nb["stderr"] if "Traceback" in s or "Error" in s] == []


def test_nothing_leaves_the_machine_or_is_written_back(lab):
    assert lab["external"] == []
    assert lab["pageErrors"] == []
    assert all(lab["unchanged"].values()), lab["unchanged"]  # autosave off: the copies are as stored
    assert not (REPO / "chapters" / ".ipynb_checkpoints").exists()


def test_first_open_shows_the_explorer_as_it_will_look(lab):
    first = lab["by_name"]["02_explorer.ipynb"]["firstOpen"]
    initial = E.explore("normal", 4)
    qlx = first["qlx"]
    assert qlx is not None, "no kernel-free explorer in the stored outputs"
    assert qlx["cards"] == cards(E.Settings("normal", 4))  # filled, not "—"
    assert qlx["regime"] == initial.regime
    assert qlx["stillDots"] == 2 * 64 and qlx["svgs"] == 0 and not qlx["ready"]  # scripts dropped
    assert qlx["cardBackground"] == "rgb(243, 245, 247)"  # the stylesheet's --qlx-bg, inlined
    live = first["live"]
    assert live is not None and live["image"] and live["imageWidth"] > 500, live
    assert "VBox" not in live["text"] and not live["widget"]


def test_live_explorer_moves_with_its_slider(lab):
    live = lab["by_name"]["02_explorer.ipynb"]["live"]
    assert live is not None, "the live explorer did not render"
    before = live["before"]
    assert before["widget"] and before["cards"] == cards(E.Settings("normal", 4))
    expected_bits = [32, 2, 3, 4]
    seen = [before]
    for step, bits in zip(live["steps"], expected_bits):
        assert step["cards"] == cards(E.Settings("normal", bits)), step["key"]
        assert step["src"] != seen[-1]["src"]  # a new figure
        assert step["cards"] != seen[-1]["cards"]
        seen.append(step)
    assert len(live["steps"]) == len(expected_bits)


def test_kernel_free_explorer_runs_its_script_once_trusted(lab):
    qlx = lab["by_name"]["02_explorer.ipynb"]["static"]
    assert qlx is not None and qlx["ready"] and qlx["histPath"] and qlx["stillDots"] == 0
    assert qlx["key"] == E.Settings("normal", 4).key
    assert qlx["cards"] == cards(E.Settings("normal", 4))


def test_checkers_print_their_feedback(lab):
    feedback = lab["by_name"]["02b_build_it.ipynb"]["feedback"]
    assert any("✗" in f and "floor" in f for f in feedback), feedback  # the floor mistake is named
    assert any("✓" in f for f in feedback), feedback
