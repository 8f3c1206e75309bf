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
EXTRAS = ("pcsc", "nfc", "serial", "printer", "fuzz", "dev")


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
        wanted += [r for r in project["optional-dependencies"][extra] if not r.startswith("pipos")]
    wanted += PYPROJECT["dependency-groups"]["tools"]
    missing = sorted({_name(r) for r in wanted} - set(locked))
    assert missing == []
    for name, package in locked.items():
        if package.get("source", {}) == {"editable": "."}:
            continue  # pipos itself
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert files, f"{name} has no files in the lock"
        assert all(str(f["hash"]).startswith("sha256:") for f in files), name


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
