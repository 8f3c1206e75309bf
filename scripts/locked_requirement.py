"""Print one package of uv.lock as a hash-checked pip requirement line (its wheels only).

scripts/bootstrap.sh needs uv before uv can read the lock, so it installs uv itself with
pip from the version and hashes the lock records for it (`pip install --require-hashes`):
the lock stays the only source of what is installed, the installer included.

Usage: python3 scripts/locked_requirement.py NAME [LOCKFILE]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirement(name: str, lock_path: Path) -> str:
    try:
        with lock_path.open("rb") as handle:
            lock = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(
            f"{lock_path}: cannot be read ({exc}); after a merge conflict take either side "
            "(git checkout --theirs uv.lock), then run make lock"
        ) from exc
    for package in lock.get("package", []):
        if package.get("name") != name:
            continue
        # Wheels only: the installer is never built from source (uv would need Rust).
        files = package.get("wheels", [])
        hashes = [f["hash"] for f in files if str(f.get("hash", "")).startswith("sha256:")]
        if not hashes:
            raise SystemExit(f"{lock_path}: {name} {package['version']} has no wheel hashes")
        return " ".join([f"{name}=={package['version']}", *(f"--hash={h}" for h in hashes)])
    raise SystemExit(f"{lock_path}: no package {name!r}; run `make lock`")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    lock_file = Path(sys.argv[2]) if len(sys.argv) == 3 else Path("uv.lock")
    print(requirement(sys.argv[1], lock_file))
