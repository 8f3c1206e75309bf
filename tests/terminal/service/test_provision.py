"""Provisioning, parameter updates, key rotation and the technician credential, end to end
against the simulated acquirer (a host of each test's own, in process: tests/inprocess.py)."""

from __future__ import annotations

import datetime
import hashlib
import json
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
    ProvisionRefusedError,
    ProvisionResult,
    ServiceTerminal,
    load_installed_parameters,
    open_service_terminal,
    provision,
)
from terminal.store.audit import verify_audit_log
from terminal.store.keys import Keystore, secret_from_file
from tests.conftest_host import TEST_SCRYPT_N, HostHandle

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
        **kw,
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
    ks = Keystore.open(data_dir, secret_from_file(config.secret_file))
    with OfflineQueue.open(
        data_dir / "offline_queue.sqlite3", ks.data_key(QUEUE_KEY_PURPOSE)
    ) as queue:
        for p in payments:
            assert queue.enqueue(p).stored


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
    other_url = "http://another-acquirer.inprocess"
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
    doc = json.loads((Path(__file__).parents[3] / "terminal/data/default_params.json").read_text())
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
