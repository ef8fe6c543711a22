"""The environments agree: requirements.txt (the one pinned list, used by `make venv`),
environment.yml + postBuild (Binder), and the environment running these tests."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: every requirement is pinned with ==, got {line!r}"
        pins[_normalize(match[1])] = match[2]
    return pins


REQUIREMENTS = _pins(REPO / "requirements.txt")
NODEPS = _pins(REPO / "requirements-nodeps.txt")


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def _pip_section(environment: dict) -> list[str]:
    sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml has one pip: section"
    return [str(x).strip() for x in sections[0]]


def test_requirements_are_pinned() -> None:
    assert "torch" in REQUIREMENTS and REQUIREMENTS["torch"] == "2.13.0"
    assert REQUIREMENTS["jupyter-book"] == "1.0.4.post1"
    assert not set(REQUIREMENTS) & set(NODEPS), "a package is in both pinned lists"


def test_environment_yml_pins_exactly_requirements_txt(environment: dict) -> None:
    pip_pins: dict[str, str] = {}
    for entry in _pip_section(environment):
        if entry.startswith("-"):
            continue  # an index option such as --extra-index-url
        match = PIN.match(entry)
        assert match, f"environment.yml: every pip requirement is pinned with ==, got {entry!r}"
        pip_pins[_normalize(match[1])] = match[2]
    missing = sorted(set(REQUIREMENTS) - set(pip_pins))
    extra = sorted(set(pip_pins) - set(REQUIREMENTS))
    differ = {
        n: (pip_pins[n], REQUIREMENTS[n]) for n in set(pip_pins) & set(REQUIREMENTS) if pip_pins[n] != REQUIREMENTS[n]
    }
    assert not missing, f"in requirements.txt but not in environment.yml: {missing}"
    assert not extra, f"in environment.yml but not in requirements.txt: {extra}"
    assert not differ, f"versions differ (environment.yml, requirements.txt): {differ}"


def test_environment_yml_uses_conda_forge_python_311_and_cpu_torch(environment: dict) -> None:
    assert environment["channels"] == ["conda-forge"]
    conda_deps = [d for d in environment["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda_deps
    assert "pip" in conda_deps
    options = [e for e in _pip_section(environment) if e.startswith("-")]
    assert any(o.startswith("--extra-index-url") and o.rstrip("/").endswith("/whl/cpu") for o in options), (
        "torch must come from the CPU wheel index, or pip installs the CUDA build"
    )


def test_postbuild_installs_the_nodeps_packages_and_quantlab() -> None:
    post = REPO / "postBuild"
    text = post.read_text()
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    assert "--no-deps -r requirements-nodeps.txt" in text
    assert "--no-deps -e ." in text


def test_python_version_agrees() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject
    assert sys.version_info[:2] == (3, 11), f"the pinned environment is Python 3.11, running {sys.version}"


@pytest.mark.parametrize("name", sorted({**REQUIREMENTS, **NODEPS}))
def test_installed_version_matches_the_pin(name: str) -> None:
    want = {**REQUIREMENTS, **NODEPS}[name]
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{name}=={want} is pinned but not installed: run `make venv`")
    assert have == want or have.split("+", 1)[0] == want, f"{name}: installed {have}, pinned {want}; run `make venv`"
