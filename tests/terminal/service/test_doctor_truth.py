"""`pipos doctor` says the truth (issue 18, item 7): a stopped pcscd fails only a terminal
that reads cards through it, and the fix is the one `pipos readers` gives; the merchant PIN
and the register token are checked as `pipos run --config` reads them; the keystore's fix
agrees with what its check says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import drivers.pcsc
from drivers.errors import DeviceUnavailableError
from terminal.cli import main
from terminal.service.config import load_config
from terminal.service.doctor import Check, DoctorReport, Environment, run_doctor
from tests.conftest_host import HostHandle
from tests.terminal.service.test_doctor import _config, _ready_reader, _set_merchant_pin
from tests.terminal.service.test_provision import _provision


def _check(report: DoctorReport, name: str) -> Check:
    [check] = [c for c in report.checks if c.name == name]
    return check


def _pcscd_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """pcscd is not running: what drivers.pcsc says then (with the driver's own fix)."""
    pytest.importorskip("smartcard", reason="pyscard (the pcsc extra) is not installed")

    def stopped(context: int | None = None) -> list[str]:
        raise DeviceUnavailableError(
            "pcsc:",
            "pcscd does not answer: Service not available",
            drivers.errors.PCSCD_FIX,
        )

    monkeypatch.setattr(drivers.pcsc, "list_pcsc_readers", stopped)


@pytest.mark.parametrize("reader", ["sim:visa", "nfc:usb"])
def test_a_stopped_pcscd_is_a_warning_when_the_reader_does_not_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    _pcscd_stopped(monkeypatch)
    config = _config(tmp_path, terminal_id="T0A1B2C3D4E", reader_url=reader)
    pcsc = _check(run_doctor(config, Environment(udev_dirs=[tmp_path / "none"])), "PC/SC")
    assert pcsc.status == "warn"
    assert f"the configured reader {reader} does not use it" in pcsc.message


@pytest.mark.parametrize("reader", ["pcsc:", "pcsc:ACR122", None])
def test_a_stopped_pcscd_fails_a_terminal_that_reads_cards_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str | None
) -> None:
    _pcscd_stopped(monkeypatch)
    config = _config(tmp_path, terminal_id="T0A1B2C3D4E", reader_url=reader)
    pcsc = _check(run_doctor(config, Environment(udev_dirs=[tmp_path / "none"])), "PC/SC")
    assert pcsc.status == "fail"
    assert "pcscd is not running" in pcsc.message


def test_doctor_and_readers_give_the_same_fix_for_a_stopped_pcscd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _pcscd_stopped(monkeypatch)
    assert main(["readers", "--json"]) == 0
    [listed] = [e for e in json.loads(capsys.readouterr().out) if e["stack"] == "pcsc"]
    config = _config(tmp_path, terminal_id="T0A1B2C3D4E", reader_url="pcsc:")
    doctor = _check(run_doctor(config, Environment(udev_dirs=[tmp_path / "none"])), "PC/SC")
    assert listed["fix"] == doctor.fix
    assert "pcscd" in doctor.fix


def _provisioned(host: HostHandle, tmp_path: Path) -> Path:
    _provision(host, tmp_path)
    return tmp_path / "etc" / "terminal.toml"


def test_a_merchant_pin_file_the_start_refuses_fails_the_check(
    host: HostHandle, tmp_path: Path
) -> None:
    config = _provisioned(host, tmp_path)
    data_dir = load_config(config).data_dir
    pin = _check(run_doctor(config, Environment(devices=_ready_reader)), "merchant PIN")
    assert pin.status == "fail"
    assert "merchant-pin.json is missing" in pin.message
    assert pin.fix == f"pipos merchant-pin set --config {config}"  # the command, as typed
    (data_dir / "merchant-pin.json").write_text('{"format": "something else"}\n')
    report = run_doctor(config, Environment(devices=_ready_reader))
    pin = _check(report, "merchant PIN")
    assert pin.status == "fail"  # `pipos run --config` refuses to start with it
    assert "not a merchant PIN credential" in pin.message
    assert pin.fix == f"pipos merchant-pin set --config {config}"
    assert not report.ok


def test_the_register_token_is_checked_as_the_start_reads_it(
    host: HostHandle, tmp_path: Path
) -> None:
    config = _provisioned(host, tmp_path)
    _set_merchant_pin(config, tmp_path)
    token = load_config(config).data_dir / "register-token"
    check = _check(run_doctor(config, Environment(devices=_ready_reader)), "register token")
    assert check.status == "pass"  # not made yet: the first start makes it
    assert f"pipos run --config {config} makes {token}" in check.message
    token.write_text("a-token\n")
    token.chmod(0o644)
    report = run_doctor(config, Environment(devices=_ready_reader))
    check = _check(report, "register token")
    assert check.status == "fail"
    assert "readable by group or others" in check.message
    assert check.fix == f"chmod 600 {token}"
    assert not report.ok
    token.chmod(0o600)
    report = run_doctor(config, Environment(devices=_ready_reader))
    assert _check(report, "register token").status == "pass"


def test_the_keystore_fix_agrees_with_its_message(host: HostHandle, tmp_path: Path) -> None:
    config = _provisioned(host, tmp_path)
    secret = load_config(config).data_dir / "device-secret"
    secret.write_bytes(b"another unit's device secret, 32+ bytes long\n")
    secret.chmod(0o600)
    keystore = _check(run_doctor(config, Environment(devices=_ready_reader)), "keystore")
    assert keystore.status == "fail"
    assert "device secret or passphrase is not correct" in keystore.message
    # Not "run as the terminal's user": the secret is readable, it is the wrong one.
    assert "run as" not in keystore.fix
    assert "device secret" in keystore.fix
    (load_config(config).data_dir / "keystore.json").unlink()
    keystore = _check(run_doctor(config, Environment(devices=_ready_reader)), "keystore")
    assert "is missing" in keystore.message
    assert "restore keystore.json from this unit's backup" in keystore.fix


def test_an_exported_unit_is_said_before_the_start_refuses_it(
    host: HostHandle, tmp_path: Path
) -> None:
    config = _provisioned(host, tmp_path)
    _set_merchant_pin(config, tmp_path)
    check = _check(run_doctor(config, Environment(devices=_ready_reader)), "unit export")
    assert check.status == "pass"
    record = load_config(config).data_dir / "unit-exported.json"
    record.write_text(json.dumps({"file": "/media/usb/queue.bin", "exported_at": 0, "count": 2}))
    report = run_doctor(config, Environment(devices=_ready_reader))
    check = _check(report, "unit export")
    assert check.status == "fail"
    assert "/media/usb/queue.bin" in check.message
    assert "2 payment(s)" in check.message
    assert f"pipos unit reinstate --config {config}" in check.fix
    assert not report.ok
