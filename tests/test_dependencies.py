"""What an install without the lock may get: never an older release than the one tested."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# The packages that parse what strangers send, or check who they are: a release older than the
# locked one may lack a security fix.
EXPOSED = ["fastapi", "starlette", "python-multipart", "pyjwt"]


def _locked() -> dict[str, Version]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    return {p["name"]: Version(p["version"]) for p in lock["package"] if "version" in p}


def _floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floors: dict[str, Version] = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        for spec in requirement.specifier:
            if spec.operator == ">=":
                floors[requirement.name.lower()] = Version(spec.version)
    return floors


@pytest.mark.parametrize("name", EXPOSED)
def test_the_floor_of_an_exposed_package_is_the_locked_release(name: str) -> None:
    locked, floors = _locked(), _floors()
    assert name in floors, f"{name} has no >= floor in pyproject.toml"
    assert floors[name] >= locked[name], (
        f"pyproject.toml lets an install without uv.lock take {name} {floors[name]}, "
        f"older than the locked and tested {locked[name]}: raise the floor"
    )
