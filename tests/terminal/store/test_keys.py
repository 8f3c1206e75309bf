"""Terminal keystore and sequence counter: encryption at rest, rotation, crash safety."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from terminal.domain.signing import verify_signature
from terminal.store.keys import (
    Keystore,
    KeystoreError,
    KeystoreTamperedError,
    SequenceCounter,
    SequenceError,
    WrongSecretError,
    secret_from_file,
    secret_from_passphrase,
)

SECRET = b"device-secret-for-tests-0001"
N = 2**10
REPO = Path(__file__).resolve().parents[3]


def _counter_token() -> object:
    state = {"n": 0}

    def token(size: int) -> bytes:
        state["n"] += 1
        return bytes((state["n"] + i) % 256 for i in range(size))

    return token


def _seed_of(ks: Keystore) -> bytes:
    return ks._current.private_bytes(  # test-only peek at the secret
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_create_and_reopen(tmp_path: Path) -> None:
    ks = Keystore.create(tmp_path, SECRET, serial="SN1", scrypt_n=N)
    signature = ks.sign(b"record")
    again = Keystore.open(tmp_path, SECRET)
    assert again.key_id == ks.key_id
    assert again.public_key == ks.public_key
    assert verify_signature(again.public_key, signature, b"record")
    assert again.serial == "SN1"


def test_wrong_secret_is_refused(tmp_path: Path) -> None:
    Keystore.create(tmp_path, SECRET, scrypt_n=N)
    with pytest.raises(WrongSecretError):
        Keystore.open(tmp_path, b"another-secret-entirely")


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    Keystore.create(tmp_path, SECRET, scrypt_n=N)
    with pytest.raises(KeystoreError, match="already exists"):
        Keystore.create(tmp_path, SECRET, scrypt_n=N)


def test_key_file_is_private_and_holds_no_raw_key(tmp_path: Path) -> None:
    ks = Keystore.create(tmp_path, SECRET, scrypt_n=N)
    path = Keystore.path_in(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    seed = _seed_of(ks)
    content = path.read_bytes()
    for form in (seed, seed.hex().encode(), seed.hex().upper().encode(), base64.b64encode(seed)):
        assert form not in content
    assert seed.hex() not in repr(ks)
    assert "sign=" not in repr(ks.signer())


def test_injected_randomness_makes_creation_reproducible(tmp_path: Path) -> None:
    a = Keystore.create(tmp_path / "a", SECRET, scrypt_n=N, token=_counter_token(), clock=lambda: 5)  # type: ignore[arg-type]
    b = Keystore.create(tmp_path / "b", SECRET, scrypt_n=N, token=_counter_token(), clock=lambda: 5)  # type: ignore[arg-type]
    assert a.key_id == b.key_id
    assert a.data_key("x") == b.data_key("x")


def test_rotation_keeps_old_public_key_for_audit(tmp_path: Path) -> None:
    ks = Keystore.create(tmp_path, SECRET, scrypt_n=N)
    old_id, old_pub = ks.key_id, ks.public_key
    new_id = ks.rotate()
    assert new_id != old_id
    assert ks.key_id == new_id
    reopened = Keystore.open(tmp_path, SECRET)
    keys = reopened.public_keys()
    assert [k.key_id for k in keys] == [old_id, new_id]
    assert keys[0].public_key == old_pub
    assert keys[0].retired is not None
    assert keys[1].retired is None
    assert verify_signature(reopened.public_key, reopened.sign(b"m"), b"m")
    assert not verify_signature(old_pub, reopened.sign(b"m"), b"m")


def test_pending_rotation_survives_restart(tmp_path: Path) -> None:
    ks = Keystore.create(tmp_path, SECRET, scrypt_n=N)
    pending = ks.begin_rotation()
    reopened = Keystore.open(tmp_path, SECRET)
    again = reopened.pending_signer()
    assert again is not None
    assert again.key_id == pending.key_id
    assert reopened.key_id != pending.key_id  # not current until committed
    assert reopened.commit_rotation() == pending.key_id


def test_data_keys(tmp_path: Path) -> None:
    ks = Keystore.create(tmp_path, SECRET, scrypt_n=N)
    key = ks.data_key("offline-queue/card-data")
    assert len(key) == 32
    assert key != ks.data_key("receipts")
    ks.rotate()
    assert Keystore.open(tmp_path, SECRET).data_key("offline-queue/card-data") == key
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, b"5413330089010434", b"row-1")
    assert AESGCM(key).decrypt(nonce, sealed, b"row-1") == b"5413330089010434"
    assert key not in Keystore.path_in(tmp_path).read_bytes()


def test_change_secret(tmp_path: Path) -> None:
    ks = Keystore.create(tmp_path, SECRET, scrypt_n=N)
    data_key = ks.data_key("q")
    ks.change_secret(secret_from_passphrase("correct horse battery"))
    with pytest.raises(WrongSecretError):
        Keystore.open(tmp_path, SECRET)
    reopened = Keystore.open(tmp_path, b"correct horse battery")
    assert reopened.key_id == ks.key_id
    assert reopened.data_key("q") == data_key


def test_device_secret_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "device-secret"
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    path.chmod(0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        secret_from_file(path)
    path.chmod(0o600)
    assert secret_from_file(path) == b"0123456789abcdef0123456789abcdef"


def test_enrolment_identity_export(tmp_path: Path) -> None:
    ks = Keystore.create(tmp_path, SECRET, serial="SN-9", scrypt_n=N)
    ident = ks.identity().to_json()
    assert ident["serial"] == "SN-9"
    assert ident["terminal_id"] is None
    assert base64.b64decode(ident["public_key"]) == ks.public_key
    ks.set_enrolment(terminal_id="T1", merchant_id="M1", host_public_key=b"h" * 32, host_key_id="k")
    assert Keystore.open(tmp_path, SECRET).identity().terminal_id == "T1"


# --- the identity block is authenticated (format 2) --------------------------------------


def _doc(directory: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Keystore.path_in(directory).read_text())
    return doc


def _write(directory: Path, doc: dict[str, Any]) -> None:
    Keystore.path_in(directory).write_text(json.dumps(doc, indent=2, sort_keys=True))


def _as_format_1(directory: Path, secret: bytes = SECRET) -> None:
    """Rewrite a keystore as the previous version wrote it: format 1, no MAC, the master
    secret encrypted under the format-1 label (the rest of the layout is unchanged). Imported
    by the doctor's and `pipos run`'s tests too."""
    doc = _doc(directory)
    kdf = doc["kdf"]
    kek = AESGCM(
        Scrypt(
            salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]
        ).derive(secret)
    )
    entry = doc["master"]
    master = kek.decrypt(
        base64.b64decode(entry["nonce"]),
        base64.b64decode(entry["ciphertext"]),
        b"pipos-master-secret:2",
    )
    nonce = os.urandom(12)
    doc["master"] = {
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(kek.encrypt(nonce, master, b"pipos-master-secret")).decode(),
    }
    doc["format"] = "pipos-keystore-1"
    del doc["mac"]
    _write(directory, doc)


def _enrolled(directory: Path) -> Keystore:
    ks = Keystore.create(directory, SECRET, serial="SN-1", scrypt_n=N)
    ks.set_enrolment(
        terminal_id="T0001", merchant_id="M0001", host_public_key=b"h" * 32, host_key_id="k1"
    )
    return ks


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("terminal_id", "T6666"),
        ("merchant_id", "M6666"),
        ("host_public_key", base64.b64encode(b"a" * 32).decode()),
        ("host_key_id", "attacker"),
        ("serial", "SN-2"),
    ],
)
def test_the_identity_block_cannot_be_swapped(tmp_path: Path, field: str, value: str) -> None:
    _enrolled(tmp_path)
    doc = _doc(tmp_path)
    assert doc["format"] == "pipos-keystore-2"
    doc["identity"][field] = value
    _write(tmp_path, doc)
    with pytest.raises(KeystoreTamperedError, match=r"identity block .* altered"):
        Keystore.open(tmp_path, SECRET)


def test_the_public_keys_and_the_mac_itself_are_covered(tmp_path: Path) -> None:
    ks = _enrolled(tmp_path)
    ks.rotate()
    original = _doc(tmp_path)
    changes: list[Callable[[dict[str, Any]], object]] = [
        lambda d: d["retired"][0].update(public_key=base64.b64encode(b"x" * 32).decode()),
        lambda d: d["current"].update(created=1),
        lambda d: d.pop("mac"),
        lambda d: d.update(mac="AAAA"),
    ]
    for change in changes:
        doc = json.loads(json.dumps(original))
        change(doc)
        _write(tmp_path, doc)
        with pytest.raises(KeystoreTamperedError):
            Keystore.open(tmp_path, SECRET)
    _write(tmp_path, original)
    assert Keystore.open(tmp_path, SECRET).terminal_id == "T0001"


def test_a_format_1_keystore_opens_and_is_upgraded_at_its_next_save(tmp_path: Path) -> None:
    ks = _enrolled(tmp_path)
    data_key = ks.data_key("offline-queue/card-data")
    _as_format_1(tmp_path)
    old = Keystore.open(tmp_path, SECRET)
    assert old.needs_upgrade
    assert old.terminal_id == "T0001"
    assert old.key_id == ks.key_id
    assert old.data_key("offline-queue/card-data") == data_key
    with pytest.raises(WrongSecretError):
        Keystore.open(tmp_path, b"another-secret-entirely")
    old.set_enrolment(
        terminal_id="T0002", merchant_id="M0001", host_public_key=b"h" * 32, host_key_id="k1"
    )
    doc = _doc(tmp_path)
    assert doc["format"] == "pipos-keystore-2"
    assert doc["mac"]
    again = Keystore.open(tmp_path, SECRET)
    assert not again.needs_upgrade
    assert again.terminal_id == "T0002"
    assert again.data_key("offline-queue/card-data") == data_key
    # From now on the identity is bound to the secret.
    doc["identity"]["terminal_id"] = "T6666"
    _write(tmp_path, doc)
    with pytest.raises(KeystoreTamperedError):
        Keystore.open(tmp_path, SECRET)


def test_upgrade_writes_the_new_format_once(tmp_path: Path) -> None:
    _enrolled(tmp_path)
    _as_format_1(tmp_path)
    old = Keystore.open(tmp_path, SECRET)
    assert old.upgrade()
    assert not old.upgrade()
    assert _doc(tmp_path)["format"] == "pipos-keystore-2"
    assert Keystore.open(tmp_path, SECRET).terminal_id == "T0001"


def test_an_upgraded_keystore_relabelled_as_format_1_is_refused(tmp_path: Path) -> None:
    # Dropping the MAC by calling the file format 1 again: its master secret is now under
    # the format-2 label, so it does not open as format 1.
    _enrolled(tmp_path)
    doc = _doc(tmp_path)
    doc["format"] = "pipos-keystore-1"
    del doc["mac"]
    doc["identity"]["host_public_key"] = base64.b64encode(b"a" * 32).decode()
    _write(tmp_path, doc)
    with pytest.raises(KeystoreTamperedError, match="relabelled"):
        Keystore.open(tmp_path, SECRET)


def test_change_secret_keeps_the_identity_bound(tmp_path: Path) -> None:
    ks = _enrolled(tmp_path)
    ks.change_secret(b"a-new-device-secret-0002")
    reopened = Keystore.open(tmp_path, b"a-new-device-secret-0002")
    assert reopened.terminal_id == "T0001"
    doc = _doc(tmp_path)
    doc["identity"]["merchant_id"] = "M6666"
    _write(tmp_path, doc)
    with pytest.raises(KeystoreTamperedError):
        Keystore.open(tmp_path, b"a-new-device-secret-0002")


# --- sequence numbers -------------------------------------------------------------------


def test_sequence_increases_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    with SequenceCounter(path, block=4) as counter:
        first = [counter.next() for _ in range(6)]
    assert first == sorted(set(first))
    with SequenceCounter(path, block=4) as counter:
        assert counter.next() > first[-1]


def test_second_owner_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    with SequenceCounter(path), pytest.raises(SequenceError, match="in use"):
        SequenceCounter(path)


def test_corrupt_counter_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    with pytest.raises(SequenceError, match="corrupt"):
        SequenceCounter(path)


_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from terminal.store.keys import SequenceCounter
    counter = SequenceCounter({path!r}, block={block})
    while True:
        value = counter.next()
        sys.stdout.write(f"{{value}}\\n")
        sys.stdout.flush()
    """
)


@pytest.mark.parametrize("block", [1, 16])
def test_sequence_never_repeats_after_sigkill(tmp_path: Path, block: int) -> None:
    path = tmp_path / "seq.json"
    highest = 0
    for round_ in range(3):
        code = _CHILD.format(repo=str(REPO), path=str(path), block=block)
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        seen = []
        # Kill mid-stream at a different point each round (after some numbers were handed out).
        for _ in range(5 + 7 * round_):
            line = child.stdout.readline()
            seen.append(int(line))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert seen[0] > highest
        highest = max(seen)
    with SequenceCounter(path, block=block) as counter:
        assert counter.next() > highest
