"""The product install carries no simulator: the wheel built from the root pyproject.toml
(`pip install .`, what a terminal gets) holds emv, drivers, offline_queue and terminal only,
and no test key material; the simulator is pipos-sim (sim/pyproject.toml, the `sim` extra),
built from the same simulator/ folder, with the `pipos.virtual_cards` entry point. Without
the simulator the terminal's commands that need it say what to install.

Both wheels are built from a copy of the sources in a temporary directory (so no build/ or
egg-info lands in the working tree), with the environment's setuptools (the version
[tool.uv] build-constraint-dependencies pins) and no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: What the two builds read: the product's packages, the simulator, the two pyproject files.
SOURCES = (
    "emv",
    "drivers",
    "offline_queue",
    "terminal",
    "simulator",
    "sim",
    "pyproject.toml",
    "README.md",
)
PRODUCT_PACKAGES = {"emv", "drivers", "offline_queue", "terminal"}
#: Key material as it is written in the repository: PEM blocks, and the JSON of simulator.pki
#: (RsaKey.to_json: the private exponent in hex).
KEY_MARKERS = (b"PRIVATE KEY", b"private_exponent")
KEY_FILES = sorted(p.name for p in (ROOT / "simulator" / "data").rglob("*.json"))
ENTRY_POINT = "simulator.ports:virtual_card_factory"


def _ignored(_directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", "build") or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pinned = PYPROJECT["tool"]["uv"]["build-constraint-dependencies"]
    assert f"setuptools=={metadata.version('setuptools')}" in pinned
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=_ignored)
        else:
            shutil.copy2(path, src / name)
    out = src / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [*pip, *offline, "--wheel-dir", str(out), ".", "./sim"],
        cwd=src,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [product] = out.glob("pipos-*.whl")
    [sim] = out.glob("pipos_sim-*.whl")
    return {"pipos": product, "pipos-sim": sim}


def _files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _dist_info(files: dict[str, bytes], name: str) -> str:
    [path] = [p for p in files if p.endswith(f".dist-info/{name}")]
    return files[path].decode("utf-8")


def test_the_product_wheel_holds_the_terminal_and_no_simulator_or_key(
    wheels: dict[str, Path],
) -> None:
    files = _files(wheels["pipos"])
    tops = {name.split("/")[0] for name in files if not name.split("/")[0].endswith(".dist-info")}
    assert tops == PRODUCT_PACKAGES
    assert not [n for n in files if n.startswith("simulator/")]
    assert not [n for n in files if Path(n).name in KEY_FILES]
    assert not [(n, m) for n, data in files.items() for m in KEY_MARKERS if m in data]
    # The terminal's own files are there (its data and the checkout page).
    assert "terminal/data/default_params.json" in files
    assert "terminal/api/web/index.html" in files
    assert "pipos.virtual_cards" not in _dist_info(files, "entry_points.txt")
    meta = _dist_info(files, "METADATA")
    assert "Provides-Extra: sim" in meta
    assert 'Requires-Dist: pipos-sim; extra == "sim"' in meta


def test_the_sim_wheel_holds_the_whole_simulator_and_its_entry_point(
    wheels: dict[str, Path],
) -> None:
    files = _files(wheels["pipos-sim"])
    tops = {name.split("/")[0] for name in files if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"simulator"}
    # Every file of simulator/ (a sub-package missing from sim/pyproject.toml's explicit list
    # would be left out), the test PKI with its private halves included.
    sources = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "simulator").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sources - set(files) == set()
    assert b"private_exponent" in files["simulator/data/pki/test_ca_private_keys.json"]
    entry_points = _dist_info(files, "entry_points.txt")
    assert "[pipos.virtual_cards]" in entry_points
    assert f"default = {ENTRY_POINT}" in entry_points
    meta = _dist_info(files, "METADATA")
    assert "Name: pipos-sim" in meta
    assert "Requires-Dist: pipos\n" in meta


# --- the terminal without the simulator ------------------------------------------------------


@pytest.fixture(scope="module")
def without_simulator(
    wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """An environment with the product wheel installed (unpacked) and this environment's
    third-party packages, but no simulator: python -S (no .pth, so neither the editable
    installs of this checkout nor the pipos-sim metadata) and a copy of site-packages' entries
    as symlinks, pipos and pipos-sim left out."""
    base = tmp_path_factory.mktemp("no-simulator")
    product = base / "product"
    with zipfile.ZipFile(wheels["pipos"]) as archive:
        archive.extractall(product)
    site = Path(sysconfig.get_paths()["purelib"])
    third_party = base / "site-packages"
    third_party.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("pipos", "__editable__", "simulator")) or name.endswith(".pth"):
            continue
        (third_party / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(product), str(third_party)])
    env["HOME"] = str(base / "home")
    return {**env, "PIPOS_TEST_CWD": str(base)}


def _isolated(env: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`code` in a Python that sees only what `env` puts on its path (no site-packages)."""
    return subprocess.run(
        [sys.executable, "-S", "-c", code, *args],
        cwd=env["PIPOS_TEST_CWD"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _pipos(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _isolated(env, "import sys; from terminal.cli import main; sys.exit(main())", *args)


def test_the_isolated_environment_really_has_no_simulator(
    without_simulator: dict[str, str],
) -> None:
    probe = (
        "import json, importlib.util, importlib.metadata as m, terminal;"
        "print(json.dumps([terminal.__file__, importlib.util.find_spec('simulator') is None,"
        " [e.value for e in m.entry_points(group='pipos.virtual_cards')]]))"
    )
    result = _isolated(without_simulator, probe)
    assert result.returncode == 0, result.stderr
    terminal_file, no_simulator, providers = json.loads(result.stdout)
    assert not terminal_file.startswith(str(ROOT))  # the wheel's terminal, not the checkout's
    assert no_simulator
    assert providers == []


@pytest.mark.parametrize(
    ("args", "needed_by"),
    [
        (("run", "--port", "0"), "the demo terminal"),
        (("demo",), "the demo terminal"),
        (
            ("run", "--port", "0", "--acquirer", "http://127.0.0.1:9", "--activation-code", "X"),
            "the simulated card field",
        ),
        (("acquirer", "--port", "0"), "pipos acquirer"),
        (("acquirer", "activation-code", "--merchant", "M1"), "pipos acquirer"),
    ],
)
def test_a_command_that_needs_the_simulator_says_what_to_install(
    without_simulator: dict[str, str], args: tuple[str, ...], needed_by: str
) -> None:
    result = _pipos(without_simulator, *args)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("pipos: error: the simulator is not installed, and " + needed_by)
    assert "scripts/bootstrap.sh sim" in line
    assert "pip install ./sim" in line
    # Nothing was started or written before the refusal.
    assert not (Path(without_simulator["HOME"]) / ".local").exists()
    assert not (Path(without_simulator["PIPOS_TEST_CWD"]) / "acquirer.sqlite3").exists()


def test_help_and_a_sim_reader_url_without_the_simulator(
    without_simulator: dict[str, str],
) -> None:
    assert _pipos(without_simulator, "run", "--help").returncode == 0
    result = _pipos(without_simulator, "emv", "transact", "--reader", "sim:visa", "--amount", "1")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "cannot open 'sim:visa': the simulator is not installed" in result.stderr
    assert "scripts/bootstrap.sh sim" in result.stderr


def test_the_sim_wheel_gives_the_product_its_virtual_cards(
    wheels: dict[str, Path], without_simulator: dict[str, str], tmp_path: Path
) -> None:
    with zipfile.ZipFile(wheels["pipos-sim"]) as archive:
        archive.extractall(tmp_path / "sim")
    env = {**without_simulator}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "sim"), env["PYTHONPATH"]])
    code = (
        "from drivers.url import open_reader; import simulator;"
        "r = open_reader('sim:visa'); print(r.wait_for_card(1).atr.hex(), simulator.__file__)"
    )
    result = _isolated(env, code)
    assert result.returncode == 0, result.stderr
    atr, simulator_file = result.stdout.split()
    assert atr
    assert simulator_file.startswith(str(tmp_path / "sim"))
