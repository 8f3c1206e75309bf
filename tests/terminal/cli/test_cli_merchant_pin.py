"""`pipos merchant-pin set|status`, run in process on a terminal provisioned against a host of
the test's own (in process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from terminal.cli import main
from tests.conftest_host import HostHandle
from tests.security.test_pin_bruteforce import provisioned

TECHNICIAN = "270513"


@pytest.fixture
def config(inprocess_host: HostHandle, tmp_path: Path) -> Path:
    return provisioned(inprocess_host, tmp_path, technician=TECHNICIAN)


def _file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


def _set(config: Path, technician: Path, *extra: str) -> int:
    argv = ["merchant-pin", "set", "--config", str(config), "--technician-pin-file"]
    return main([*argv, str(technician), *extra])


def test_set_from_files_then_status(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    technician = _file(tmp_path / "tech", TECHNICIAN)
    assert main(["merchant-pin", "status", "--config", str(config)]) == 0
    assert "not set (pipos merchant-pin set)" in capsys.readouterr().out
    assert _set(config, technician, "--pin-file", str(_file(tmp_path / "pin", "5831"))) == 0
    out = capsys.readouterr().out
    assert "merchant PIN set for terminal" in out
    assert main(["merchant-pin", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "merchant PIN: set" in out
    assert "no wrong entries, no lock-out" in out
    audit = (tmp_path / "data" / "audit.log").read_text()
    assert '"technician_auth_ok"' in audit
    assert '"merchant_pin_set"' in audit


def test_refusals(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    technician = _file(tmp_path / "tech", TECHNICIAN)
    loose = _file(tmp_path / "loose", "5831", mode=0o644)
    assert _set(config, technician, "--pin-file", str(loose)) == 2  # bad input
    assert "readable by group or others; chmod 600 it" in capsys.readouterr().err
    weak = _file(tmp_path / "weak", "2580")
    assert _set(config, technician, "--pin-file", str(weak)) == 2
    err = capsys.readouterr().err
    assert "merchant PIN: one of the most common PINs" in err
    assert "商户密码：这是最常用的密码之一" in err
    wrong = _file(tmp_path / "wrong", "999999")
    good = _file(tmp_path / "good", "5831")
    assert _set(config, wrong, "--pin-file", str(good)) == 1
    assert "wrong technician PIN" in capsys.readouterr().err
    assert not (tmp_path / "data" / "merchant-pin.json").exists()


def test_typed_twice_at_the_terminal(
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    technician = _file(tmp_path / "tech", TECHNICIAN)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    typed = iter(["5831", "5832"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    assert _set(config, technician) == 2
    assert "the two entries differ" in capsys.readouterr().err
    typed = iter(["5831", "5831"])
    assert _set(config, technician) == 0
    typed = iter(["1111"])  # refused at the first entry, never asked again
    assert _set(config, technician) == 2
    assert "repeated digit" in capsys.readouterr().err
    assert main(["merchant-pin", "status", "--config", str(config), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["set"] is True
    assert status["tampered"] is None
