"""Dependency floors stay above known vulnerabilities, and what is installed meets them.

Offline: reads pyproject.toml and the installed distributions' metadata only.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# The first release of each that fixed an advisory affecting how this service uses it.
FIXED_IN = {
    "starlette": Version("0.49.1"),  # Range-header DoS in StaticFiles (serves /static)
    "cryptography": Version("44.0.1"),  # CVE-2024-12797, the OpenSSL in its wheels
}


def requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    listed = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return [Requirement(text) for text in listed]


def floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(floors, default=None)


@pytest.mark.parametrize(("name", "fixed"), FIXED_IN.items())
def test_floor_is_above_the_fix(name: str, fixed: Version) -> None:
    [requirement] = [r for r in requirements() if r.name == name]
    lowest = floor(requirement)
    assert lowest is not None and lowest >= fixed, f"{name} floor admits vulnerable releases"


@pytest.mark.parametrize("requirement", [r for r in requirements() if r.marker is None
                                         or r.marker.evaluate()], ids=lambda r: r.name)
def test_installed_version_meets_pyproject(requirement: Requirement) -> None:
    installed = metadata.version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} is installed; pyproject.toml asks {requirement}")
