"""The technician credential: weak secrets refused, bound to the device, its lock-out
authenticated and its own (a locked merchant PIN never locks the technician)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from terminal.security.merchant_pin import MerchantPin, MerchantPinError, MerchantPinLockedError
from terminal.security.technician import (
    TechnicianAuthError,
    TechnicianCredential,
    TechnicianError,
    TechnicianLockedError,
)
from terminal.store.audit import AuditLog

KEY = b"t" * 32
SECRET = "270513"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _technician(tmp_path: Path, clock: Clock, key: bytes = KEY) -> TechnicianCredential:
    return TechnicianCredential(
        tmp_path / "technician.json",
        AuditLog(tmp_path / "audit.log"),
        device_key=key,
        clock=clock,
        scrypt_n=2**10,
    )


def _events(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "audit.log").read_text().splitlines()
    return [json.loads(line)["event"] for line in lines if line]


@pytest.mark.parametrize("weak", ["123456", "654321", "111111", "121212", "147258", "qwerty"])
def test_weak_secrets_are_refused(tmp_path: Path, weak: str) -> None:
    with pytest.raises(TechnicianError, match=r"technician PIN or pass-phrase: .* / 技术员密码"):
        _technician(tmp_path, Clock()).set(weak)
    assert not (tmp_path / "technician.json").exists()


def test_lock_out_through_the_shared_policy(tmp_path: Path) -> None:
    clock = Clock()
    technician = _technician(tmp_path, clock)
    technician.set(SECRET)
    assert SECRET.encode() not in technician.path.read_bytes()
    for left in (2, 1):
        with pytest.raises(TechnicianAuthError, match=f"{left} more before a lock-out"):
            technician.verify("000001", action="test")
    with pytest.raises(TechnicianLockedError) as locked:
        technician.verify("000001", action="test")
    assert locked.value.retry_after == 30
    clock.now += 10
    with pytest.raises(TechnicianLockedError):
        _technician(tmp_path, clock).verify(SECRET, action="test")  # another process
    clock.now += 20
    technician.verify(SECRET, action="test")
    events = _events(tmp_path)
    assert events.count("technician_auth_failed") == 3
    assert "technician_locked_out" in events
    assert events[-1] == "technician_auth_ok"


@pytest.mark.parametrize("damage", ["delete", "reset_count"])
def test_the_failure_count_cannot_be_reset_by_editing_files(tmp_path: Path, damage: str) -> None:
    clock = Clock()
    technician = _technician(tmp_path, clock)
    technician.set(SECRET)
    for _ in range(3):
        with pytest.raises(TechnicianError):
            technician.verify("000001", action="test")
    book = tmp_path / "technician-lockout.json"
    if damage == "delete":
        book.unlink()
    else:
        doc = json.loads(book.read_text())
        doc["scopes"] = {}
        book.write_text(json.dumps(doc))
    with pytest.raises(TechnicianLockedError) as locked:
        technician.verify(SECRET, action="test")
    assert locked.value.retry_after == 3600
    assert "pin_lockout_tampered" in _events(tmp_path)


def test_a_locked_merchant_pin_never_locks_the_technician(tmp_path: Path) -> None:
    clock = Clock()
    technician = _technician(tmp_path, clock)
    technician.set(SECRET)
    merchant = MerchantPin(
        tmp_path / "merchant-pin.json",
        AuditLog(tmp_path / "audit.log"),
        device_key=b"m" * 32,
        clock=clock,
        scrypt_n=2**10,
    )
    merchant.set("4826")
    for _ in range(12):
        with pytest.raises(MerchantPinError) as refused:
            merchant.verify("9999", scope="checkout-page")
        if isinstance(refused.value, MerchantPinLockedError):
            clock.now += refused.value.retry_after
    with pytest.raises(MerchantPinLockedError):
        merchant.verify("9999", scope="checkout-page")
    with pytest.raises(MerchantPinLockedError):
        merchant.verify("4826", scope="checkout-page")
    technician.verify(SECRET, action="merchant_pin_set")


def test_a_credential_of_the_previous_format_is_upgraded_at_first_use(tmp_path: Path) -> None:
    clock = Clock()
    salt = b"s" * 16
    old_hash = Scrypt(salt=salt, length=32, n=2**10, r=8, p=1).derive(SECRET.encode())
    (tmp_path / "technician.json").write_text(
        json.dumps(
            {
                "format": "pipos-technician-1",
                "kdf": {"salt": base64.b64encode(salt).decode(), "n": 2**10, "r": 8, "p": 1},
                "hash": base64.b64encode(old_hash).decode(),
                "set_at": 1,
                "failures": 1,
                "locked_until": 0,
            }
        )
    )
    technician = _technician(tmp_path, clock)
    with pytest.raises(TechnicianAuthError, match="1 more before"):  # its count carried over
        technician.verify("000001", action="test")
    doc = json.loads((tmp_path / "technician.json").read_text())
    assert doc["format"] == "pipos-technician-2"
    assert "failures" not in doc
    assert doc["hash"] != base64.b64encode(old_hash).decode()
    technician.verify(SECRET, action="test")
    # Bound to the device key from then on.
    with pytest.raises(TechnicianError):
        _technician(tmp_path, clock, key=b"u" * 32).verify(SECRET, action="test")
    assert "technician_credential_upgraded" in _events(tmp_path)
