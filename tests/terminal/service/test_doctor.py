"""`pipos doctor` with readers present (pcscd + vpcd), absent and inaccessible (fake sysfs,
permissions and udev rules), and against a provisioned terminal and the simulated host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import drivers.pcsc
from drivers.discovery import DeviceEntry, discover
from drivers.errors import DeviceUnavailableError
from terminal.cli import main
from terminal.service.config import TerminalConfig, load_config, save_config
from terminal.service.doctor import Check, DoctorReport, Environment, run_doctor
from tests.conftest_host import HostHandle
from tests.conftest_tpm import SwTpm
from tests.terminal.service.test_provision import PIN, _provision


def _fake_usb(tmp: Path, vendor: str, product: str) -> tuple[Path, Path]:
    sysfs, dev = tmp / "sys", tmp / "dev"
    device = sysfs / "1-1.2"
    device.mkdir(parents=True)
    for name, value in (("idVendor", vendor), ("idProduct", product)):
        (device / name).write_text(value + "\n")
    (device / "busnum").write_text("1\n")
    (device / "devnum").write_text("5\n")
    (dev / "001").mkdir(parents=True)
    (dev / "001" / "005").write_text("")
    return sysfs, dev


def _no_pcsc(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(context: int | None = None) -> list[str]:
        raise DeviceUnavailableError(
            "pcsc:", "pcscd does not answer: Service not available", "start pcscd"
        )

    monkeypatch.setattr(drivers.pcsc, "list_pcsc_readers", gone)


def _by_name(report: DoctorReport, prefix: str) -> list[Check]:
    return [c for c in report.checks if c.name.startswith(prefix)]


def _config(tmp: Path, **kw: Any) -> Path:
    path = tmp / "terminal.toml"
    save_config(
        TerminalConfig(host_url="http://127.0.0.1:9", data_dir=tmp, secret_file=tmp / "s", **kw),
        path,
    )
    return path


def test_readers_present_through_pcscd(pcscd: object, tmp_path: Path) -> None:
    sysfs, dev = tmp_path / "nosys", tmp_path / "nodev"
    env = Environment(devices=lambda: discover(sysfs_usb=sysfs, dev_usb=dev))
    report = run_doctor(_config(tmp_path, reader_url="pcsc:Virtual PCD 00 00"), env)
    [present] = [c for c in report.checks if "Virtual PCD 00 00" in c.name]
    assert present.status == "pass"
    [configured] = _by_name(report, "configured reader")
    assert configured.status == "pass"
    assert not _by_name(report, "PC/SC")


def test_readers_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_pcsc(monkeypatch)
    env = Environment(devices=lambda: discover(sysfs_usb=tmp_path / "x", dev_usb=tmp_path / "y"))
    report = run_doctor(tmp_path / "missing.toml", env)
    [pcsc] = _by_name(report, "PC/SC")
    assert pcsc.status == "fail"
    assert "pcscd is not running" in pcsc.message
    assert "systemctl enable --now pcscd" in pcsc.fix
    [reader] = _by_name(report, "card reader")
    assert reader.status == "warn"
    [config] = _by_name(report, "configuration")
    assert config.status == "fail"
    assert "pipos provision" in config.fix
    assert not report.ok


def test_usb_reader_without_udev_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_pcsc(monkeypatch)
    sysfs, dev = _fake_usb(tmp_path, "072f", "2200")
    env = Environment(
        devices=lambda: discover(sysfs_usb=sysfs, dev_usb=dev, access=lambda _p, _m: False),
        udev_dirs=[tmp_path / "rules.d"],
    )
    report = run_doctor(tmp_path / "missing.toml", env)
    [reader] = _by_name(report, "reader ACS ACR122U")
    assert reader.status == "fail"
    assert "no udev rule" in reader.message
    assert "packaging/udev/60-pipos.rules" in reader.fix


def test_usb_reader_with_rule_but_user_not_in_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_pcsc(monkeypatch)
    sysfs, dev = _fake_usb(tmp_path, "04cc", "2533")
    rules = tmp_path / "rules.d"
    rules.mkdir()
    # The rule the package installs.
    shipped = Path(__file__).parents[3] / "packaging" / "udev" / "60-pipos.rules"
    (rules / "60-pipos.rules").write_text(shipped.read_text())
    modules = tmp_path / "module"
    (modules / "pn533_usb").mkdir(parents=True)
    env = Environment(
        devices=lambda: discover(sysfs_usb=sysfs, dev_usb=dev, access=lambda _p, _m: False),
        udev_dirs=[rules],
        groups=lambda: {"users"},
        user=lambda: "pipos",
        sys_module=modules,
    )
    report = run_doctor(tmp_path / "missing.toml", env)
    [reader] = _by_name(report, "reader NXP PN533")
    assert reader.status == "fail"
    assert "user 'pipos' is not in it" in reader.message
    assert "usermod -aG pipos pipos" in reader.fix
    [kernel] = _by_name(report, "kernel NFC driver")
    assert "blacklist pn533_usb" in kernel.fix


def test_scanner_and_uart_reader_inaccessible(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scanner = tmp_path / "ttyACM7"
    scanner.write_text("")
    env = Environment(
        devices=lambda: [],
        access=lambda _p, _m: False,
        groups=lambda: {"pipos"},
        user=lambda: "pipos",
    )
    config = _config(
        tmp_path, reader_url="nfc:tty:NOSUCHUART:pn532", scanner_url=f"serial:{scanner}"
    )
    report = run_doctor(config, env)
    [reader] = _by_name(report, "configured reader")
    assert reader.status == "fail"
    assert "/dev/ttyNOSUCHUART does not exist" in reader.message
    assert "enable_uart=1" in reader.fix
    [scan] = _by_name(report, "configured scanner")
    assert scan.status == "fail"
    assert "not in group 'dialout'" in scan.message
    assert "usermod -aG dialout pipos" in scan.fix


def test_scanner_accessible_but_modemmanager_not_kept_off(tmp_path: Path) -> None:
    scanner = tmp_path / "ttyACM0"
    scanner.write_text("")
    env = Environment(devices=lambda: [], udev_dirs=[tmp_path / "none"])
    report = run_doctor(_config(tmp_path, scanner_url=f"serial:{scanner}"), env)
    [scan] = _by_name(report, "configured scanner")
    assert scan.status == "warn"
    assert "ModemManager" in scan.message


@pytest.mark.parametrize(
    ("reader", "scanner"),
    [("sim:visa", "sim:phone"), ("replay:transcript.json", "replay:codes.txt")],
)
def test_provisioned_terminal_with_a_simulated_reader_or_scanner_is_warned(
    tmp_path: Path, reader: str, scanner: str
) -> None:
    env = Environment(devices=lambda: [], udev_dirs=[tmp_path / "none"])
    config = _config(tmp_path, terminal_id="T0A1B2C3D4E", reader_url=reader, scanner_url=scanner)
    report = run_doctor(config, env)
    [configured] = _by_name(report, "configured reader")
    assert configured.status == "warn"
    assert f"{reader} is a simulated reader" in configured.message
    assert "takes no real payments" in configured.message
    assert "[devices] reader" in configured.fix
    assert "pipos provision with --reader" in configured.fix
    [scan] = _by_name(report, "configured scanner")
    assert scan.status == "warn"
    assert f"{scanner} is a simulated scanner" in scan.message
    assert "[devices] scanner" in scan.fix
    lines = report.lines()
    at = next(i for i, line in enumerate(lines) if line.startswith("WARN  configured reader"))
    assert f"{reader} is a simulated reader" in lines[at]
    assert lines[at + 1].strip().startswith("fix: set [devices] reader")


def test_simulated_reader_on_an_unprovisioned_configuration_passes(tmp_path: Path) -> None:
    # A development configuration (not provisioned) may use the simulator: nothing to warn of.
    env = Environment(devices=lambda: [])
    report = run_doctor(_config(tmp_path, reader_url="sim:visa"), env)
    [configured] = _by_name(report, "configured reader")
    assert configured.status == "pass"
    assert "is simulated" in configured.message


def _ready_reader() -> list[DeviceEntry]:
    return [DeviceEntry("pcsc:ACS ACR122U", "card reader", "pcsc", "ACS ACR122U 00 00")]


def _set_merchant_pin(config: Path, tmp_path: Path) -> None:
    """What the technician does after provisioning (README, step 8)."""
    files = {"technician": PIN, "merchant": "5831"}
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
        (tmp_path / name).chmod(0o600)
    argv = ["merchant-pin", "set", "--config", str(config)]
    argv += ["--technician-pin-file", str(tmp_path / "technician")]
    assert main([*argv, "--pin-file", str(tmp_path / "merchant")]) == 0


def test_provisioned_terminal_is_healthy(acquirer_host: HostHandle, tmp_path: Path) -> None:
    _provision(acquirer_host, tmp_path)
    _set_merchant_pin(tmp_path / "etc" / "terminal.toml", tmp_path)
    report = run_doctor(tmp_path / "etc" / "terminal.toml", Environment(devices=_ready_reader))
    statuses = {c.name: c.status for c in report.checks}
    for name in (
        "configuration",
        "host reachable",
        "host key",
        "clock",
        "clock skew",
        "keystore",
        "parameters",
        "free disk",
        "queue backlog",
        "audit log",
        "technician credential",
        "merchant PIN",
    ):
        assert statuses[name] == "pass", (name, report.lines())
    # The default provider is the development file: said, with the way out.
    [secret] = _by_name(report, "device secret")
    assert secret.status == "warn"
    assert "development only" in secret.message
    assert "--secret tpm" in secret.fix
    assert report.ok


def test_doctor_reports_the_tpm_and_whether_it_answers(
    acquirer_host: HostHandle, swtpm: SwTpm, tmp_path: Path
) -> None:
    _provision(acquirer_host, tmp_path, secret_provider="tpm", tpm_tcti=swtpm.tcti)
    config = tmp_path / "etc" / "terminal.toml"
    _set_merchant_pin(config, tmp_path)
    report = run_doctor(config, Environment(devices=_ready_reader))
    checks = {c.name: c for c in report.checks}
    assert checks["device secret"].status == "pass", report.lines()
    assert "tpm: TPM 2.0 (manufacturer IBM) answers through" in checks["device secret"].message
    assert checks["keystore"].status == "pass"
    assert report.ok
    swtpm.stop()  # the TPM gone (or the card in another unit)
    report = run_doctor(config, Environment(devices=_ready_reader))
    checks = {c.name: c for c in report.checks}
    assert checks["device secret"].status == "fail"
    assert "cannot reach the TPM" in checks["device secret"].message
    assert checks["keystore"].status == "fail"
    assert not report.ok


def test_doctor_warns_about_a_keystore_of_the_older_format(
    acquirer_host: HostHandle, tmp_path: Path
) -> None:
    from terminal.store.keys import secret_from_file
    from tests.terminal.store.test_keys import _as_format_1

    _provision(acquirer_host, tmp_path)
    data = tmp_path / "data"
    _as_format_1(data, secret_from_file(data / "device-secret"))
    report = run_doctor(tmp_path / "etc" / "terminal.toml", Environment(devices=_ready_reader))
    [old] = _by_name(report, "keystore format")
    assert old.status == "warn"
    assert "not authenticated" in old.message
    assert "pipos provision" in old.fix


def test_doctor_finds_tampering_corruption_wrong_clock_and_no_host(
    acquirer_host: HostHandle, tmp_path: Path
) -> None:
    _provision(acquirer_host, tmp_path)
    data = tmp_path / "data"
    audit = data / "audit.log"
    audit.write_text(audit.read_text().replace('"mode":"provisioned"', '"mode":"refreshed"'))
    (data / "offline_queue.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    env = Environment(devices=_ready_reader, now=lambda: 1_600_000_000.0)
    acquirer_host.server.stop()
    report = run_doctor(tmp_path / "etc" / "terminal.toml", env)
    checks = {c.name: c for c in report.checks}
    assert checks["audit log"].status == "fail"
    assert checks["queue database"].status == "fail"
    assert "do not delete it" in checks["queue database"].fix
    assert checks["clock"].status == "fail"
    assert checks["host reachable"].status == "fail"
    assert not report.ok


def test_doctor_json_for_fleet_tooling(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _no_pcsc(monkeypatch)
    status = main(["doctor", "--json", "--config", str(tmp_path / "none.toml")])
    doc = json.loads(capsys.readouterr().out)
    assert status == 1
    assert doc["ok"] is False
    assert doc["summary"]["fail"] >= 1
    assert {"name", "status", "message", "fix"} <= set(doc["checks"][0])


def test_doctor_says_whether_the_merchant_pin_is_set_and_never_in_clear(
    acquirer_host: HostHandle, tmp_path: Path
) -> None:
    _provision(acquirer_host, tmp_path)
    config = tmp_path / "etc" / "terminal.toml"
    data_dir = load_config(config).data_dir
    [pin] = _by_name(run_doctor(config, Environment(devices=_ready_reader)), "merchant PIN")
    assert (pin.status, pin.fix) == ("fail", f"pipos merchant-pin set --config {config}")
    _set_merchant_pin(config, tmp_path)
    [pin] = _by_name(run_doctor(config, Environment(devices=_ready_reader)), "merchant PIN")
    assert pin.status == "pass"
    (data_dir / "merchant-pin").write_text("4826\n")  # an older version's clear-text file
    report = run_doctor(config, Environment(devices=_ready_reader))
    [pin] = _by_name(report, "merchant PIN")
    assert pin.status == "fail"
    assert "in clear" in pin.message
    assert not report.ok
