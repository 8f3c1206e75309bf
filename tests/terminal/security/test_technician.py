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
    KEY_PURPOSE,
    TechnicianAuthError,
    TechnicianCredential,
    TechnicianCredentialReplacedError,
    TechnicianError,
    TechnicianLockedError,
    upgrade_keystore,
)
from terminal.store.audit import AuditLog
from terminal.store.keys import Keystore, KeystoreTamperedError
from tests.terminal.store.test_keys import _as_format_1

KEY = b"t" * 32
SECRET = "270513"
KEYSTORE_SECRET = b"device-secret-for-tests-0001"


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


def _old_terminal(tmp_path: Path, *, format_1: bool = True) -> Keystore:
    """The keystore of a terminal the previous version provisioned (format 1), or of one this
    version provisioned or upgraded (format 2)."""
    Keystore.create(tmp_path, KEYSTORE_SECRET, serial="SN-1", scrypt_n=2**10)
    if format_1:
        _as_format_1(tmp_path, KEYSTORE_SECRET)
    return Keystore.open(tmp_path, KEYSTORE_SECRET)


def write_format_1(path: Path, secret: str, *, failures: int = 0) -> str:
    """A technician.json as the previous version wrote it (scrypt only: anyone can compute it
    for a secret of their own); returns its hash. Shared with tests/security/
    test_pin_bruteforce.py."""
    salt = b"s" * 16
    old_hash = Scrypt(salt=salt, length=32, n=2**10, r=8, p=1).derive(secret.encode())
    path.write_text(
        json.dumps(
            {
                "format": "pipos-technician-1",
                "kdf": {"salt": base64.b64encode(salt).decode(), "n": 2**10, "r": 8, "p": 1},
                "hash": base64.b64encode(old_hash).decode(),
                "set_at": 1,
                "failures": failures,
                "locked_until": 0,
            }
        )
    )
    return base64.b64encode(old_hash).decode()


def test_a_credential_of_the_previous_format_is_upgraded_at_first_use(tmp_path: Path) -> None:
    clock = Clock()
    keystore = _old_terminal(tmp_path)
    key = keystore.data_key(KEY_PURPOSE)
    old_hash = write_format_1(tmp_path / "technician.json", SECRET, failures=1)
    technician = _technician(tmp_path, clock, key=key)
    with pytest.raises(TechnicianAuthError, match="1 more before"):  # its count carried over
        technician.verify("000001", action="test")
    doc = json.loads((tmp_path / "technician.json").read_text())
    assert doc["format"] == "pipos-technician-2"
    assert "failures" not in doc
    assert doc["hash"] != old_hash
    technician.verify(SECRET, action="test")
    # Bound to the device key from then on.
    with pytest.raises(TechnicianError):
        _technician(tmp_path, clock, key=b"u" * 32).verify(SECRET, action="test")
    assert "technician_credential_upgraded" in _events(tmp_path)


def test_upgrading_the_keystore_upgrades_the_credential_first(tmp_path: Path) -> None:
    """What `pipos run` and `pipos provision` do to an old terminal: no PIN is needed, and
    afterwards the keystore's format 2 says that the upgrade is done."""
    clock = Clock()
    keystore = _old_terminal(tmp_path)
    write_format_1(tmp_path / "technician.json", SECRET)
    audit = AuditLog(tmp_path / "audit.log")
    assert upgrade_keystore(keystore, tmp_path / "technician.json", audit) is True
    assert not Keystore.open(tmp_path, KEYSTORE_SECRET).needs_upgrade
    assert json.loads((tmp_path / "technician.json").read_text())["format"] == (
        "pipos-technician-2"
    )
    assert upgrade_keystore(keystore, tmp_path / "technician.json", audit) is False
    technician = _technician(tmp_path, clock, key=keystore.data_key(KEY_PURPOSE))
    assert technician.upgrade() is False
    technician.verify(SECRET, action="test")
    # A terminal without a credential (never provisioned) upgrades its keystore all the same.
    other = tmp_path / "other"
    assert upgrade_keystore(_old_terminal(other), other / "technician.json", audit) is True


@pytest.mark.parametrize("keystore", ["format 2", "upgraded from format 1", "missing"])
def test_an_old_format_written_over_an_upgraded_terminal_is_refused(
    tmp_path: Path, keystore: str
) -> None:
    """The SD-card attack: a format-1 technician.json hashing the attacker's own secret
    written over the credential, its lock-out record deleted. The old code upgraded it and
    let the attacker's PIN in (unit export, merchant-pin set, re-provisioning)."""
    clock = Clock()
    if keystore == "missing":
        key = KEY
    else:
        opened = _old_terminal(tmp_path, format_1=keystore != "format 2")
        key = opened.data_key(KEY_PURPOSE)
        opened.upgrade()
    technician = _technician(tmp_path, clock, key=key)
    technician.set(SECRET)
    attacker = "correct-horse-battery-staple-1"
    write_format_1(technician.path, attacker)
    (tmp_path / "technician-lockout.json").unlink()
    planted = technician.path.read_bytes()
    for secret in (attacker, SECRET):
        with pytest.raises(TechnicianCredentialReplacedError, match="re-provision the terminal"):
            _technician(tmp_path, clock, key=key).verify(secret, action="unit_export")
    with pytest.raises(TechnicianCredentialReplacedError, match="replaced by an older format"):
        technician.upgrade()
    assert technician.path.read_bytes() == planted  # left as found, for whoever looks into it
    events = _events(tmp_path)
    assert events.count("technician_credential_downgrade_refused") == 3
    assert "technician_credential_upgraded" not in events
    assert "technician_auth_ok" not in events


def test_the_keystore_cannot_be_relabelled_to_let_an_old_format_in(tmp_path: Path) -> None:
    """The keystore's format is read from its clear part: lowering it to format 1 lets the
    old credential past that check, but then the keystore does not open, so the key the
    credential needs is not there."""
    _old_terminal(tmp_path, format_1=False)
    write_format_1(tmp_path / "technician.json", "correct-horse-battery-staple-1")
    path = Keystore.path_in(tmp_path)
    path.write_text(path.read_text().replace("pipos-keystore-2", "pipos-keystore-1"))
    technician = TechnicianCredential(
        tmp_path / "technician.json",
        AuditLog(tmp_path / "audit.log"),
        device_key=lambda: Keystore.open(tmp_path, KEYSTORE_SECRET).data_key(KEY_PURPOSE),
        scrypt_n=2**10,
    )
    with pytest.raises(KeystoreTamperedError, match="relabelled"):
        technician.verify("correct-horse-battery-staple-1", action="unit_export")
