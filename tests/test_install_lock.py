"""The install is locked: uv.lock names every Python package of every extra with its hashes,
the installers (pip, uv) included, and what is installed in this environment is exactly what
the lock says, version for version (scripts/bootstrap.sh installs from nothing else)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = ("pcsc", "nfc", "serial", "printer", "fuzz", "sim", "dev")
#: The distributions built from this repository (the uv workspace): pipos, and the simulator
#: as pipos-sim (sim/pyproject.toml). They are locked by path, without files or hashes.
WORKSPACE = {"pipos": ".", "pipos-sim": "sim"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _locked() -> dict[str, dict[str, object]]:
    return {str(p["name"]): p for p in LOCK["package"]}


def test_every_declared_dependency_of_every_extra_is_locked_with_hashes() -> None:
    locked = _locked()
    project = PYPROJECT["project"]
    wanted = [*project["dependencies"]]
    for extra in EXTRAS:
        wanted += [r for r in project["optional-dependencies"][extra] if _name(r) not in WORKSPACE]
    wanted += PYPROJECT["dependency-groups"]["tools"]
    missing = sorted({_name(r) for r in wanted} - set(locked))
    assert missing == []
    for name, package in locked.items():
        if name in WORKSPACE:
            assert package["source"] == {"editable": WORKSPACE[name]}, name
            continue  # built from this repository
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert files, f"{name} has no files in the lock"
        assert all(str(f["hash"]).startswith("sha256:") for f in files), name


def test_the_simulator_is_the_sim_extra_from_the_workspace() -> None:
    # The product's own install (no extra, or a terminal's device extras) has no simulator;
    # the sim extra (and dev, which includes it) brings pipos-sim from sim/, never an index.
    project = PYPROJECT["project"]
    assert project["optional-dependencies"]["sim"] == ["pipos-sim"]
    assert PYPROJECT["tool"]["uv"]["sources"]["pipos-sim"] == {"workspace": True}
    assert PYPROJECT["tool"]["uv"]["workspace"]["members"] == ["sim"]
    locked = _locked()
    assert set(LOCK["manifest"]["members"]) == set(WORKSPACE)
    pipos = locked["pipos"]
    assert {d["name"] for d in pipos["dependencies"]} & {"pipos-sim"} == set()
    assert [d["name"] for d in pipos["optional-dependencies"]["sim"]] == ["pipos-sim"]
    for extra in ("pcsc", "nfc", "serial", "printer"):
        names = {d["name"] for d in pipos["optional-dependencies"][extra]}
        assert "pipos-sim" not in names, extra


def test_installed_packages_are_exactly_the_locked_versions() -> None:
    locked = {name: str(p["version"]) for name, p in _locked().items() if "version" in p}
    installed = {
        _name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if dist.metadata["Name"]
    }
    installed.pop("pipos", None)
    strays = {n: v for n, v in installed.items() if n not in locked}
    assert strays == {}, "installed but not in uv.lock"
    drifted = {n: (v, locked[n]) for n, v in installed.items() if locked[n] != v}
    assert drifted == {}, "installed version differs from uv.lock"
    # The installers themselves are pinned by the lock too.
    assert installed["pip"] == locked["pip"]
    assert installed["uv"] == locked["uv"]


def test_the_lock_matches_pyproject() -> None:
    # What `uv sync --locked` in scripts/bootstrap.sh refuses to install from: a lock that
    # pyproject.toml has moved away from (a dependency added without `make lock`).
    uv = Path(sys.executable).with_name("uv")
    result = subprocess.run(
        [str(uv), "lock", "--check", "--offline", "--no-python-downloads"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
