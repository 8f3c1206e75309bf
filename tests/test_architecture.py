"""The package layers of ARCHITECTURE.md are enforced: `make test` runs lint-imports with the
contracts in pyproject.toml, and a change that crosses a layer (the checkout importing the
command line, the kernel importing a driver, the simulator importing the terminal) breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("emv", "drivers", "offline_queue", "terminal", "simulator")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(module: Path, line: str) -> None:
    text = module.read_text(encoding="utf-8")
    marker = "from __future__ import annotations\n"
    module.write_text(text.replace(marker, marker + line + "  # noqa\n", 1), encoding="utf-8")


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("terminal/checkout/flow.py", "import terminal.cli", "no module of the terminal imports"),
        ("emv/tlv.py", "import drivers.base", "emv is pure protocol logic"),
        ("drivers/pcsc.py", "import emv.tlv", "drivers move bytes"),
        ("offline_queue/store.py", "import terminal.store.keys", "offline_queue sits below"),
        ("simulator/cards.py", "import terminal.domain.params", "never imports the terminal"),
        ("terminal/checkout/flow.py", "import simulator.host", "only through a driver URL"),
        ("terminal/domain/currency.py", "import terminal.domain.receipts", "no import cycles"),
        ("terminal/checkout/flow.py", "import terminal.api.server", "terminal layers"),
        ("terminal/domain/params.py", "import terminal.store.journal", "terminal layers"),
        ("terminal/store/journal.py", "import terminal.checkout.flow", "terminal layers"),
        ("terminal/acquirer/client.py", "import terminal.security.technician", "terminal layers"),
    ],
)
def test_crossing_a_layer_breaks_the_lint(
    tree: Path, module: str, line: str, contract: str
) -> None:
    path = tree / module
    if not path.exists():
        path = tree / module.replace(".py", "/__init__.py")
    _add_import(path, line)
    result = _lint(tree)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(contract in row for row in broken), result.stdout
