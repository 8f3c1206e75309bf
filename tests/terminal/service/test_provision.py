"""Provisioning, parameter updates, key rotation and the technician credential, end to end
against the simulated acquirer (a host of each test's own, in process: tests/inprocess.py)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from offline_queue import CardData, OfflinePayment, OfflineQueue
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE
from terminal.domain.params import default_params
from terminal.security.technician import TechnicianAuthError, TechnicianLockedError
from terminal.service.config import load_config
from terminal.service.provision import (
    ParametersRefusedError,
    ProvisionError,
    ProvisionRefusedError,
    ProvisionResult,
    ServiceTerminal,
    load_installed_parameters,
    open_service_terminal,
    provision,
)
from terminal.store.audit import verify_audit_log
from terminal.store.device_secret import SEALED_FILE, DeviceSecretError
from terminal.store.keys import Keystore, KeystoreError, secret_from_file
from tests.conftest_host import TEST_SCRYPT_N, HostHandle, signed_payment
from tests.conftest_tpm import SwTpm

PIN = "270513"
CLIENT = {"sleep": lambda _s: None}


def _provision(host: HostHandle, tmp: Path, code: str | None = None, **kw: Any) -> ProvisionResult:
    kw.setdefault("data_dir", tmp / "data")
    return provision(
        host_url=kw.pop("host_url", host.url),
        activation_code=code or host.activation_code(),
        config_path=tmp / "etc" / "terminal.toml",
        technician_secret=kw.pop("technician_secret", PIN),
        scrypt_n=TEST_SCRYPT_N,
        client_options=host.client_options(**CLIENT),
        # The simulated host is on loopback (or in process): its key pinned, plain HTTP asked for.
        **{**host.provision_options(), **kw},
    )


def _service(tmp: Path, host: HostHandle, **kw: Any) -> ServiceTerminal:
    return open_service_terminal(
        tmp / "etc" / "terminal.toml",
        scrypt_n=TEST_SCRYPT_N,
        client_options=host.client_options(**CLIENT),
        **kw,
    )


def _payment(i: int, amount: int = 1500) -> OfflinePayment:
    return OfflinePayment(
        transaction_id=f"S260101-{i:012x}",
        amount=amount,
        currency=978,
        card=CardData(pan=f"4761739001{i:06d}", pan_sequence=1, expiry="2812"),
        captured_at=1_700_000_000 + i,
        emv={"9F27": "40"},
        brand="visa",
        aid="A0000000031010",
    )


def _enqueue(data_dir: Path, *payments: OfflinePayment) -> None:
    config = load_config(data_dir.parent / "etc" / "terminal.toml")
    ks = Keystore.open(data_dir, config.secret_provider().load())
    with OfflineQueue.open(
        data_dir / "offline_queue.sqlite3", ks.data_key(QUEUE_KEY_PURPOSE)
    ) as queue:
        for p in payments:
            # Signed by the terminal's key, as the checkout queues it (the host and `pipos
            # unit import` take only signed payments).
            assert queue.enqueue(signed_payment(p, ks)).stored


def _events(tmp: Path) -> list[str]:
    path = tmp / "data" / "audit.log"
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


# --- provisioning --------------------------------------------------------------------------


def test_provision_in_one_step(inprocess_host: HostHandle, tmp_path: Path) -> None:
    result = _provision(inprocess_host, tmp_path)
    config = load_config(tmp_path / "etc" / "terminal.toml")
    assert result.action == "provisioned"
    assert config.terminal_id == result.terminal_id
    assert config.host_url == inprocess_host.url
    assert config.params_version == result.params_version
    assert config.host_key_id
    # The key was generated and enrolled; the device secret was created private.
    secret_file = tmp_path / "data" / "device-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    keystore = Keystore.open(tmp_path / "data", secret_from_file(secret_file))
    assert keystore.terminal_id == result.terminal_id
    assert keystore.host_public_key == inprocess_host.host_public_key()
    # The signed parameters are installed and re-verify; the simulator's expired test key
    # (A000000003/99, 2020) was left out and said so.
    assert [k.label() for k in result.refused_ca_keys] == ["A000000003/99"]
    installed = load_installed_parameters(
        config.params_path,
        host_public_key=inprocess_host.host_public_key(),
        terminal_id=result.terminal_id,
        serial=keystore.serial,
        today=datetime.date(2026, 1, 1),
    )
    assert "A000000003/99" not in installed.ca_keys
    assert {a.aid.hex().upper() for a in installed.params.aids} == {
        "A0000000031010",
        "A0000000041010",
    }
    summary = "\n".join(result.summary_lines())
    assert result.terminal_id in summary
    assert "refused CA key A000000003/99: expired" in summary
    assert "provisioned" in _events(tmp_path)
    assert (tmp_path / "data" / "technician.json").exists()
    assert verify_audit_log(tmp_path / "data" / "audit.log").ok


def test_rerun_refreshes_without_enrolling_again(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    first = _provision(inprocess_host, tmp_path)
    # An already used (or any) code is not consumed: nothing is enrolled a second time.
    again = _provision(inprocess_host, tmp_path, code="ALREADY-USED")
    assert again.action == "refreshed"
    assert again.terminal_id == first.terminal_id
    assert again.key_id == first.key_id


def test_rerun_after_a_crash_before_the_config_was_written(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    code = inprocess_host.activation_code()
    first = _provision(inprocess_host, tmp_path, code=code)
    (tmp_path / "etc" / "terminal.toml").unlink()
    again = _provision(inprocess_host, tmp_path, code=code)
    assert again.terminal_id == first.terminal_id  # the host answers the same enrolment


def test_provision_needs_the_technician_pin_once_set(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    _provision(inprocess_host, tmp_path)
    with pytest.raises(TechnicianAuthError):
        _provision(inprocess_host, tmp_path, technician_secret="999999")
    assert "technician_auth_failed" in _events(tmp_path)


def test_a_weak_technician_pin_is_refused_before_enrolling(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="too short"):
        _provision(inprocess_host, tmp_path, technician_secret="123")
    assert not (tmp_path / "etc" / "terminal.toml").exists()


def test_reprovision_with_queued_payments_is_refused_unless_forced(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    first = _provision(inprocess_host, tmp_path)
    _enqueue(tmp_path / "data", _payment(1), _payment(2))
    # Another acquirer URL means a new enrolment: refused while payments wait, saying why.
    other_url = "http://127.0.0.2:9"  # another (simulated, loopback) acquirer
    with pytest.raises(ProvisionRefusedError) as err:
        _provision(inprocess_host, tmp_path, host_url=other_url)
    message = str(err.value)
    assert "2 payment(s)" in message
    assert "30.00" in message
    assert "pipos sync" in message
    assert load_config(tmp_path / "etc" / "terminal.toml").terminal_id == first.terminal_id
    forced = _provision(inprocess_host, tmp_path, force=True)
    assert forced.action == "re-enrolled"
    assert forced.terminal_id != first.terminal_id
    assert forced.key_id != first.key_id
    assert any("forced" in note for note in forced.notes)
    # The queue is still readable: the data keys survive the new identity.
    ks = Keystore.open(tmp_path / "data", secret_from_file(tmp_path / "data" / "device-secret"))
    with OfflineQueue.open(
        tmp_path / "data" / "offline_queue.sqlite3", ks.data_key(QUEUE_KEY_PURPOSE)
    ) as queue:
        assert queue.status().outstanding_count == 2


def test_forced_reprovision_of_an_empty_terminal(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    first = _provision(inprocess_host, tmp_path)
    again = _provision(inprocess_host, tmp_path, force=True)
    assert again.action == "re-enrolled"
    assert again.terminal_id != first.terminal_id
    assert again.previous_terminal_id == first.terminal_id


# --- the device-secret provider (tpm, rpi-otp, file) and private files -------------------


def test_provision_with_the_tpm(swtpm: SwTpm, inprocess_host: HostHandle, tmp_path: Path) -> None:
    result = _provision(inprocess_host, tmp_path, secret_provider="tpm", tpm_tcti=swtpm.tcti)
    config_path = tmp_path / "etc" / "terminal.toml"
    config = load_config(config_path)
    assert (config.secret, config.tpm_tcti, config.secret_file) == ("tpm", swtpm.tcti, None)
    assert 'secret = "tpm"' in config_path.read_text()
    data = tmp_path / "data"
    assert not (data / "device-secret").exists()  # nothing on the card opens the keystore
    assert (data / SEALED_FILE).stat().st_mode & 0o777 == 0o600
    summary = "\n".join(result.summary_lines())
    assert f"secret:      TPM 2.0 through {swtpm.tcti}" in summary
    assert "development only" not in summary
    service = _service(tmp_path, inprocess_host)
    assert service.keystore.terminal_id == result.terminal_id
    # A re-run keeps the configured provider.
    again = _provision(inprocess_host, tmp_path)
    assert again.action == "refreshed"
    assert load_config(config_path).secret == "tpm"


def test_the_file_provider_is_said_to_be_for_development(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    result = _provision(inprocess_host, tmp_path)
    assert load_config(tmp_path / "etc" / "terminal.toml").secret == "file"
    assert any("development only" in note and "--secret tpm" in note for note in result.notes)


#: An acquirer that is not a simulator on this machine; the in-process host answers for it.
REAL_ACQUIRER = "https://acquirer.example:8600"


def test_a_real_acquirer_needs_the_secret_provider_chosen(
    inprocess_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Left to default, a terminal enrolled with a real acquirer would keep its device secret
    # on the SD card: refused, with what to give, before anything is written or enrolled.
    with pytest.raises(ProvisionError, match=r"--secret tpm or --secret rpi-otp") as refused:
        _provision(inprocess_host, tmp_path, host_url=REAL_ACQUIRER)
    assert "--secret file is for development only" in str(refused.value)
    assert "copy of the SD card" in str(refused.value)
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "etc").exists()
    assert inprocess_host.status()["terminals"] == 0
    # The same from the command line: exit status 1 and the message, no traceback.
    from terminal.cli import main

    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    argv = ["provision", "--host", REAL_ACQUIRER, "--activation-code", "CODE",
            "--host-key", inprocess_host.host_key_fingerprint, "--config",
            str(tmp_path / "etc" / "terminal.toml"), "--data-dir", str(tmp_path / "data"),
            "--technician-pin-file", str(pin)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "choose where the device secret lives: --secret tpm or --secret rpi-otp" in err
    assert "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_a_real_acquirer_with_the_file_asked_for_proceeds_with_the_note(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    result = _provision(inprocess_host, tmp_path, host_url=REAL_ACQUIRER, secret_provider="file")
    assert result.action == "provisioned"
    config = load_config(tmp_path / "etc" / "terminal.toml")
    assert (config.secret, config.host_url) == ("file", REAL_ACQUIRER)
    assert any("development only" in note and "--secret tpm" in note for note in result.notes)
    # A re-run keeps the configured provider: no --secret needed again.
    assert _provision(inprocess_host, tmp_path, host_url=REAL_ACQUIRER).action == "refreshed"


def test_a_real_acquirer_with_the_tpm_needs_no_more(
    swtpm: SwTpm, inprocess_host: HostHandle, tmp_path: Path
) -> None:
    result = _provision(
        inprocess_host, tmp_path, host_url=REAL_ACQUIRER, secret_provider="tpm",
        tpm_tcti=swtpm.tcti,
    )  # fmt: skip
    assert result.action == "provisioned"
    assert not any("development only" in note for note in result.notes)
    assert load_config(tmp_path / "etc" / "terminal.toml").secret == "tpm"


def _fake_otp(tmp: Path, key: str) -> Path:
    script = tmp / "bin" / "rpi-otp-private-key"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!/bin/sh\necho {key}\n")
    script.chmod(0o755)
    return script


def test_provision_with_the_pi_otp_key(inprocess_host: HostHandle, tmp_path: Path) -> None:
    script = _fake_otp(tmp_path, "5a" * 32)
    result = _provision(
        inprocess_host, tmp_path, secret_provider="rpi-otp", otp_command=str(script)
    )
    config = load_config(tmp_path / "etc" / "terminal.toml")
    assert (config.secret, config.otp_command) == ("rpi-otp", str(script))
    assert not (tmp_path / "data" / "device-secret").exists()
    assert _service(tmp_path, inprocess_host).keystore.terminal_id == result.terminal_id
    _fake_otp(tmp_path, "0" * 64)  # the card moved to a Pi whose key is not programmed
    with pytest.raises(DeviceSecretError, match="not programmed"):
        _service(tmp_path, inprocess_host)


def test_an_unprogrammed_otp_key_stops_provisioning_before_enrolling(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    script = _fake_otp(tmp_path, "0" * 64)
    with pytest.raises(DeviceSecretError, match="rpi-otp-private-key -w"):
        _provision(inprocess_host, tmp_path, secret_provider="rpi-otp", otp_command=str(script))
    assert not (tmp_path / "etc" / "terminal.toml").exists()
    assert not Keystore.exists(tmp_path / "data")


def test_a_file_terminal_moves_to_the_tpm(
    swtpm: SwTpm, inprocess_host: HostHandle, tmp_path: Path
) -> None:
    first = _provision(inprocess_host, tmp_path)
    _enqueue(tmp_path / "data", _payment(1))
    old_secret = secret_from_file(tmp_path / "data" / "device-secret")
    moved = _provision(inprocess_host, tmp_path, secret_provider="tpm", tpm_tcti=swtpm.tcti)
    assert moved.action == "refreshed"
    assert (moved.terminal_id, moved.key_id) == (first.terminal_id, first.key_id)
    assert not (tmp_path / "data" / "device-secret").exists()
    with pytest.raises(KeystoreError):
        Keystore.open(tmp_path / "data", old_secret)
    assert "device_secret_moved" in _events(tmp_path)
    service = _service(tmp_path, inprocess_host)
    # The data keys come from the master secret inside: the queued payment still decrypts.
    with OfflineQueue.open(
        tmp_path / "data" / "offline_queue.sqlite3", service.keystore.data_key(QUEUE_KEY_PURPOSE)
    ) as queue:
        assert queue.status().outstanding_count == 1


def test_a_move_to_the_tpm_cut_short_is_finished_by_a_rerun(
    swtpm: SwTpm, inprocess_host: HostHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terminal.service.provision as provisioning

    first = _provision(inprocess_host, tmp_path)

    def power_cut(*_args: object) -> None:
        raise OSError("power cut")

    # Cut after the keystore moved, before the configuration names the TPM.
    with monkeypatch.context() as cut:
        cut.setattr(provisioning, "save_config", power_cut)
        with pytest.raises(OSError, match="power cut"):
            _provision(inprocess_host, tmp_path, secret_provider="tpm", tpm_tcti=swtpm.tcti)
    assert load_config(tmp_path / "etc" / "terminal.toml").secret == "file"
    with pytest.raises(ProvisionError, match=r"does not open|belongs to another device secret"):
        _provision(inprocess_host, tmp_path)  # the file no longer opens the keystore
    again = _provision(inprocess_host, tmp_path, secret_provider="tpm", tpm_tcti=swtpm.tcti)
    assert again.terminal_id == first.terminal_id
    assert load_config(tmp_path / "etc" / "terminal.toml").secret == "tpm"
    assert not (tmp_path / "data" / "device-secret").exists()


def test_a_secret_file_with_another_provider_is_refused(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    with pytest.raises(ProvisionError, match="--secret-file is for --secret file"):
        _provision(inprocess_host, tmp_path, secret_provider="tpm", secret_file=tmp_path / "secret")


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_the_files_provisioning_writes_are_private_whatever_the_umask(
    inprocess_host: HostHandle, tmp_path: Path, mask: int
) -> None:
    old = os.umask(mask)
    try:
        _provision(inprocess_host, tmp_path)
    finally:
        os.umask(old)
    data = tmp_path / "data"
    for path in (
        tmp_path / "etc" / "terminal.toml",
        data / "parameters.json",
        data / "device-secret",
        data / "keystore.json",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# --- parameter updates ---------------------------------------------------------------------


def _ca_key(rid: str, index: str, expiry: str, *, good_sum: bool = True) -> dict[str, str]:
    modulus = bytes([0xC1] * 127 + [0x01])
    raw = bytes.fromhex(rid) + bytes.fromhex(index) + modulus + bytes.fromhex("03")
    digest = hashlib.sha1(raw, usedforsecurity=False).hexdigest().upper()
    return {
        "rid": rid,
        "index": index,
        "modulus": modulus.hex().upper(),
        "exponent": "03",
        "expiry": expiry,
        "sha1": digest if good_sum else "00" * 20,
    }


def _full_params(ca_keys: list[dict[str, str]]) -> dict[str, Any]:
    path = Path(__file__).parents[3] / "terminal/data/default_params.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    doc.pop("version")
    doc["ca_public_keys"] = ca_keys
    return doc


def test_parameter_update_rotates_ca_keys_and_refuses_expired_ones(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    _provision(inprocess_host, tmp_path)
    inprocess_host.set_parameters(
        _full_params(
            [
                _ca_key("A000000003", "A1", "2040-12-31"),
                _ca_key("A000000004", "B2", "2040-12-31"),
                _ca_key("A000000004", "B3", "2021-06-30"),
            ]
        )
    )
    service = _service(tmp_path, inprocess_host)
    update = service.update_parameters(PIN)
    assert update.changed
    assert update.added_ca_keys == ("A000000003/A1", "A000000004/B2")
    assert "A000000003/92" in update.removed_ca_keys
    assert [k.label() for k in update.refused_ca_keys] == ["A000000004/B3"]
    config = load_config(tmp_path / "etc" / "terminal.toml")
    assert config.params_version == update.new_version
    assert "parameters_updated" in _events(tmp_path)
    # Nothing new on the host: nothing changes.
    assert not service.update_parameters(PIN).changed


def test_a_bad_ca_checksum_refuses_the_update_and_keeps_the_installed_file(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    _provision(inprocess_host, tmp_path)
    params_file = tmp_path / "data" / "parameters.json"
    before = params_file.read_bytes()
    inprocess_host.set_parameters(
        _full_params([_ca_key("A000000003", "A1", "2040-12-31", good_sum=False)])
    )
    with pytest.raises(ParametersRefusedError, match=r"ca_public_keys\[0\].sha1"):
        _service(tmp_path, inprocess_host).update_parameters(PIN)
    assert params_file.read_bytes() == before
    assert "parameters_refused" in _events(tmp_path)
    assert list(tmp_path.joinpath("data").glob("*.tmp")) == []


def test_parameter_update_is_guarded_by_the_technician_pin(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    _provision(inprocess_host, tmp_path)
    service = _service(tmp_path, inprocess_host, clock=lambda: 1_800_000_000.0)
    for _ in range(2):
        with pytest.raises(TechnicianAuthError):
            service.update_parameters("000001")
    with pytest.raises(TechnicianLockedError) as locked:
        service.update_parameters("000001")
    assert locked.value.retry_after == 30
    # Locked even for the right PIN, and across processes (the state is on disk).
    with pytest.raises(TechnicianLockedError):
        _service(tmp_path, inprocess_host, clock=lambda: 1_800_000_010.0).update_parameters(PIN)
    later = _service(tmp_path, inprocess_host, clock=lambda: 1_800_000_031.0)
    assert not later.update_parameters(PIN).changed
    events = _events(tmp_path)
    assert events.count("technician_auth_failed") == 3
    assert "technician_locked_out" in events


def test_installed_parameters_must_verify(inprocess_host: HostHandle, tmp_path: Path) -> None:
    result = _provision(inprocess_host, tmp_path)
    path = tmp_path / "data" / "parameters.json"
    doc = json.loads(path.read_text())
    doc["signed"]["document"] = doc["signed"]["document"].replace("10000", "99999")
    path.write_text(json.dumps(doc))
    with pytest.raises(ParametersRefusedError, match="signature"):
        load_installed_parameters(
            path,
            host_public_key=inprocess_host.host_public_key(),
            terminal_id=result.terminal_id,
            serial=result.serial,
            today=datetime.date(2026, 1, 1),
        )


def test_full_parameter_files_from_the_host_are_used_as_they_are(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    inprocess_host.set_parameters(_full_params([_ca_key("A000000003", "A1", "2040-12-31")]))
    result = _provision(inprocess_host, tmp_path)
    assert result.params.terminal == default_params().terminal
    assert [a.label for a in result.params.aids] == ["VISA", "MASTERCARD"]


# --- key rotation --------------------------------------------------------------------------


def test_key_rotation_with_the_host(inprocess_host: HostHandle, tmp_path: Path) -> None:
    first = _provision(inprocess_host, tmp_path)
    service = _service(tmp_path, inprocess_host)
    old, new = service.rotate_key(PIN)
    assert old == first.key_id
    assert new != old
    # The new key is what the host now accepts.
    again = _service(tmp_path, inprocess_host)
    assert again.keystore.key_id == new
    with again.client() as client:
        assert client.whoami()["key_id"] == new
    assert "key_rotated" in _events(tmp_path)


def test_the_acquirers_compact_parameters_carry_the_terminals_language() -> None:
    """A provisioned terminal speaks the language its acquirer's parameters name (the page,
    receipts and texts all read `terminal.language`), as the demo's `--language` sets it."""
    from simulator.host.service import default_parameters
    from terminal.domain.params import parse_params
    from terminal.service.provision import parameter_file_document

    compact = default_parameters()
    compact["terminal"]["language"] = "zh"
    document = parameter_file_document(
        compact, terminal_id="T1", merchant_id="M-1", serial="SIM00001"
    )
    assert parse_params(document, "test").terminal.language == "zh"
    del compact["terminal"]["language"]
    document = parameter_file_document(
        compact, terminal_id="T1", merchant_id="M-1", serial="SIM00001"
    )
    assert parse_params(document, "test").terminal.language == "en"


def test_the_acquirers_compact_parameters_carry_the_pages_sound_and_announcement() -> None:
    """An acquirer turns on the spoken amount (and off the tones) for a provisioned
    terminal in its compact parameters, as it names the language; without them the
    defaults hold (announce off, sounds on)."""
    from simulator.host.service import default_parameters
    from terminal.domain.params import parse_params
    from terminal.service.provision import parameter_file_document

    compact = default_parameters()
    compact["terminal"] |= {"announce_amount": True, "sounds": False}
    document = parameter_file_document(
        compact, terminal_id="T1", merchant_id="M-1", serial="SIM00001"
    )
    terminal = parse_params(document, "test").terminal
    assert (terminal.announce_amount, terminal.sounds) == (True, False)
    for key in ("announce_amount", "sounds"):
        compact["terminal"].pop(key, None)
    document = parameter_file_document(
        compact, terminal_id="T1", merchant_id="M-1", serial="SIM00001"
    )
    terminal = parse_params(document, "test").terminal
    assert (terminal.announce_amount, terminal.sounds) == (False, True)
