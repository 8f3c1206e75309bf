"""The merchant PIN credential: hashed and bound to the device, checked per caller."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from terminal.security.merchant_pin import (
    MerchantPin,
    MerchantPinError,
    MerchantPinLockedError,
    MerchantPinWrongError,
)
from terminal.store.audit import AuditLog, verify_audit_log

KEY = b"d" * 32
PIN = "739158"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _pin(tmp_path: Path, clock: Clock | None = None, key: bytes = KEY) -> MerchantPin:
    return MerchantPin(
        tmp_path / "merchant-pin.json",
        AuditLog(tmp_path / "audit.log"),
        device_key=key,
        clock=clock or Clock(),
        scrypt_n=2**10,
    )


def _events(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "audit.log").read_text().splitlines()
    return [json.loads(line)["event"] for line in lines if line]


def test_set_then_verify_per_caller(tmp_path: Path) -> None:
    clock = Clock()
    credential = _pin(tmp_path, clock)
    assert not credential.exists()
    with pytest.raises(MerchantPinError, match="pipos merchant-pin set"):
        credential.verify(PIN, scope="register-1")
    credential.set(PIN)
    credential.verify(PIN, scope="register-1")
    with pytest.raises(MerchantPinWrongError) as wrong:
        credential.verify("739159", scope="checkout-page")
    assert wrong.value.tries_left == 2
    with pytest.raises(MerchantPinWrongError):
        credential.verify("739159", scope="checkout-page")
    with pytest.raises(MerchantPinLockedError) as locked:
        credential.verify("739159", scope="checkout-page")
    assert locked.value.retry_after == 30
    with pytest.raises(MerchantPinLockedError, match="too many wrong PINs"):
        credential.verify(PIN, scope="checkout-page")  # the right PIN too, while locked
    credential.verify(PIN, scope="register-1")  # another caller is not locked
    clock.now += 30
    credential.verify(PIN, scope="checkout-page")
    status = credential.status()
    assert status.set_at == 1_800_000_000
    assert status.locked() == {}
    assert _events(tmp_path) == ["merchant_pin_set"]
    assert verify_audit_log(tmp_path / "audit.log").ok


def test_the_file_holds_no_pin_and_is_useless_without_the_device_key(tmp_path: Path) -> None:
    credential = _pin(tmp_path)
    credential.set(PIN)
    raw = credential.path.read_bytes()
    assert PIN.encode() not in raw
    assert credential.path.stat().st_mode & 0o077 == 0
    doc = json.loads(raw)
    # What a thief with the file can compute for a guess (the right one, even) does not match
    # the stored hash: it is peppered with a key derived from the device secret.
    kdf = doc["kdf"]
    guess = Scrypt(
        salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]
    ).derive(PIN.encode())
    assert guess != base64.b64decode(doc["hash"])
    # The same files on a terminal with another device key: its lock-out record does not
    # authenticate (so every caller is locked), and past that the right PIN is still wrong.
    clock = Clock()
    elsewhere = _pin(tmp_path, clock, key=b"e" * 32)
    with pytest.raises(MerchantPinLockedError):
        elsewhere.verify(PIN, scope="register-1")
    clock.now += 3600
    with pytest.raises(MerchantPinLockedError, match="wrong PIN"):
        elsewhere.verify(PIN, scope="register-1")


def test_weak_pins_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    credential = _pin(tmp_path)
    for weak in ("1234", "0000", "1212", "2580", "654321", "1999", "12ab"):
        with pytest.raises(MerchantPinError, match=r"merchant PIN: .* / 商户密码"):
            credential.set(weak)
    assert not credential.exists()
    assert not (tmp_path / "merchant-pin-lockout.json").exists()


def test_setting_the_pin_removes_a_clear_text_one_and_resets_lock_outs(tmp_path: Path) -> None:
    legacy = tmp_path / "merchant-pin"
    legacy.write_text("4826\n")
    credential = _pin(tmp_path)
    assert credential.set(PIN) is True
    assert not legacy.exists()
    for _ in range(3):
        with pytest.raises(MerchantPinError):
            credential.verify("111222", scope="checkout-page")
    with pytest.raises(MerchantPinLockedError):
        credential.verify(PIN, scope="checkout-page")
    # The demo terminal sets its PIN at each start and keeps the lock-outs...
    credential.set(PIN, actor="demo", keep_lockout=True)
    with pytest.raises(MerchantPinLockedError):
        credential.verify(PIN, scope="checkout-page")
    # ...the technician's `pipos merchant-pin set` starts them again.
    assert credential.set("4826") is False
    credential.verify("4826", scope="checkout-page")
    assert _events(tmp_path) == [
        "merchant_pin_set",
        "merchant_pin_changed",
        "merchant_pin_changed",
    ]


def test_a_clear_text_or_foreign_credential_file_is_refused(tmp_path: Path) -> None:
    credential = _pin(tmp_path)
    credential.path.write_text("4826\n")
    with pytest.raises(MerchantPinError, match="in clear"):
        credential.read()
    credential.path.write_text('{"format": "something-else"}')
    with pytest.raises(MerchantPinError, match="not a merchant PIN credential"):
        credential.read()


def test_a_tampered_lock_out_record_locks_every_caller_and_is_audited(tmp_path: Path) -> None:
    clock = Clock()
    credential = _pin(tmp_path, clock)
    credential.set(PIN)
    (tmp_path / "merchant-pin-lockout.json").unlink()
    with pytest.raises(MerchantPinLockedError, match="altered or removed") as locked:
        credential.verify(PIN, scope="register-1")
    assert locked.value.retry_after == 3600
    status = credential.status()
    assert status.tampered is None
    assert status.locked() == {"": 3600}
    assert "pin_lockout_tampered" in _events(tmp_path)
    clock.now += 3600
    credential.verify(PIN, scope="register-1")


def test_the_errors_name_no_operation_and_carry_their_numbers(tmp_path: Path) -> None:
    """The PIN guards refunds, voids and the end of day: a message that says "refunds and
    voids are locked" is wrong for the end of day. The API words the errors in the terminal's
    language from their attributes (tries_left, retry_after, reason), not from the text."""
    clock = Clock()
    credential = _pin(tmp_path, clock)
    credential.set(PIN)
    refused: list[MerchantPinError] = []
    for _ in range(4):
        with pytest.raises(MerchantPinError) as error:
            credential.verify("111222", scope="checkout-page")
        refused.append(error.value)
    wrong, wrong_again, locking, locked = refused
    assert isinstance(wrong, MerchantPinWrongError)
    assert isinstance(wrong_again, MerchantPinWrongError)
    assert (wrong.tries_left, wrong_again.tries_left) == (2, 1)
    assert str(wrong) == "wrong PIN (2 tries left before the merchant PIN is locked)"
    assert isinstance(locking, MerchantPinLockedError)
    assert (locking.retry_after, locking.reason) == (30, "wrong")
    assert str(locking) == "wrong PIN: the merchant PIN is locked for 30 s"
    assert isinstance(locked, MerchantPinLockedError)
    assert (locked.retry_after, locked.reason) == (30, "locked")
    assert str(locked) == "too many wrong PINs: the merchant PIN is locked for 30 s"
    (tmp_path / "merchant-pin-lockout.json").unlink()
    with pytest.raises(MerchantPinLockedError) as tampered:
        credential.verify(PIN, scope="register-1")
    assert (tampered.value.retry_after, tampered.value.reason) == (3600, "tampered")
    assert str(tampered.value) == (
        "the PIN lock-out record was altered or removed: the merchant PIN is locked for 3600 s"
    )
    for message in (*map(str, refused), str(tampered.value)):
        assert not any(word in message for word in ("refund", "void", "end of day"))
