"""What the ISO 8583 link keeps on disk: keys sealed in the keystore
(``Keystore.set_secrets``) and its message memory (terminal.store.link_messages), card data
sealed in both, each sealed value bound to where it belongs."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from terminal.store.keys import Keystore, KeystoreError, KeystoreTamperedError
from terminal.store.link_messages import LinkMessageError, LinkMessages, SentMessage
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET

KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
PAN = "4761739001010119"


def test_a_secret_is_kept_sealed_and_survives_a_restart_and_a_new_device_secret(
    tmp_path: Path,
) -> None:
    keystore = Keystore.create(tmp_path, TEST_SECRET, scrypt_n=TEST_SCRYPT_N)
    keystore.set_secrets({"iso8583/mac-key": KEY, "iso8583/pin-key": KEY[::-1]})
    raw = (tmp_path / "keystore.json").read_bytes()
    assert KEY not in raw
    assert KEY.hex().encode() not in raw
    assert KEY.hex().upper().encode() not in raw
    reopened = Keystore.open(tmp_path, TEST_SECRET)
    assert reopened.secret("iso8583/mac-key") == KEY
    assert reopened.secret("absent") is None
    reopened.change_secret(b"another-device-secret-456", scrypt_n=TEST_SCRYPT_N)
    moved = Keystore.open(tmp_path, b"another-device-secret-456")
    assert moved.secret("iso8583/pin-key") == KEY[::-1]
    moved.set_secrets({"iso8583/pin-key": None})
    assert Keystore.open(tmp_path, b"another-device-secret-456").secret("iso8583/pin-key") is None


def test_a_sealed_secret_moved_to_another_name_or_changed_does_not_open(tmp_path: Path) -> None:
    keystore = Keystore.create(tmp_path, TEST_SECRET, scrypt_n=TEST_SCRYPT_N)
    keystore.set_secrets({"a": KEY, "b": KEY[::-1]})
    path = tmp_path / "keystore.json"
    document = json.loads(path.read_bytes())
    document["secrets"]["a"], document["secrets"]["b"] = (
        document["secrets"]["b"],
        document["secrets"]["a"],
    )
    path.write_text(json.dumps(document))
    # The document's MAC covers the secrets: swapped without the device secret, refused.
    with pytest.raises(KeystoreTamperedError):
        Keystore.open(tmp_path, TEST_SECRET)


def _message(key: str, **changes: object) -> SentMessage:
    fields = {"2": PAN, "3": "000000", "4": "000000001234", "55": b"\x9f\x26\x01\x01"}
    values: dict[str, object] = {
        "key": key,
        "kind": "purchase",
        "mti": "0200",
        "stan": 7,
        "sent_at": datetime(2026, 12, 2, 9, 30, tzinfo=UTC),
        "fields": fields,
        "amount": 1234,
        "currency": 978,
        "brand": "VISA",
    } | changes
    return SentMessage(**values)  # type: ignore[arg-type]


def test_the_memory_keeps_a_message_sealed_and_its_answer(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    memory = LinkMessages(path, bytes(32))
    memory.record(_message("auth-1"))
    with pytest.raises(LinkMessageError, match="remembered already"):
        memory.record(_message("auth-1"))
    memory.answered("auth-1", response_code="00", rrn="000000000042", auth_code="A00001")
    memory.close()
    for name in (path.name, path.name + "-wal"):
        if (tmp_path / name).exists():
            assert PAN.encode() not in (tmp_path / name).read_bytes()
    memory = LinkMessages(path, bytes(32))
    row = memory.get("auth-1")
    assert row is not None
    assert row.answered
    assert (row.fields["2"], row.fields["55"], row.rrn) == (
        PAN,
        b"\x9f\x26\x01\x01",
        "000000000042",
    )
    assert memory.by_rrn("000000000042", ("purchase",)) == row
    memory.close()
    with pytest.raises(LinkMessageError, match="do not open"):
        LinkMessages(path, bytes(31) + b"\x01").get("auth-1")  # another keystore's key


def test_a_sealed_row_moved_to_another_key_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    memory = LinkMessages(path, bytes(32))
    memory.record(_message("auth-1"))
    memory.record(_message("auth-2", amount=1))
    memory.close()
    with sqlite3.connect(path) as conn:
        sealed = conn.execute("SELECT sealed FROM messages WHERE key = 'auth-1'").fetchone()[0]
        conn.execute("UPDATE messages SET sealed = ? WHERE key = 'auth-2'", (sealed,))
    memory = LinkMessages(path, bytes(32))
    with pytest.raises(LinkMessageError, match="do not open"):
        memory.get("auth-2")
    memory.close()


def test_a_reconciled_batch_loses_its_card_data_but_not_an_owed_reversal(tmp_path: Path) -> None:
    memory = LinkMessages(tmp_path / "memory.sqlite3", bytes(32))
    memory.record(_message("auth-1"))
    memory.answered("auth-1", response_code="00", rrn="000000000001")
    memory.record(_message("auth-2"))  # its answer lost, its reversal not acknowledged
    memory.record(_message("rev-auth-2", kind="reversal", mti="0400", original_key="auth-2"))
    assert memory.close_batch("TERM0001-000001") == 1
    assert [row.key for row in memory.open_batch()] == ["auth-2", "rev-auth-2"]
    closed = memory.get("auth-1")
    assert closed is not None
    assert closed.fields == {}
    assert closed.batch == "TERM0001-000001"
    memory.reversal_acknowledged("rev-auth-2", response_code="00")
    reversed_sale = memory.get("auth-2")
    assert reversed_sale is not None
    assert reversed_sale.reversed
    assert memory.close_batch("TERM0001-000002") == 2
    memory.close()


def test_a_secret_name_must_not_be_empty(tmp_path: Path) -> None:
    keystore = Keystore.create(tmp_path, TEST_SECRET, scrypt_n=TEST_SCRYPT_N)
    with pytest.raises(KeystoreError, match="name"):
        keystore.set_secrets({"": KEY})


def test_a_message_not_answered_yet_outlives_the_reconciliation_whole(tmp_path: Path) -> None:
    # An advice (or refund, void, capture) whose answer was lost is repeated later, with
    # its content: the end of day must not erase it, or the repeat would carry nothing.
    memory = LinkMessages(tmp_path / "memory.sqlite3", bytes(32))
    memory.record(_message("advice-1", kind="advice", mti="0220"))
    assert memory.close_batch("TERM0001-000001") == 0
    kept = memory.get("advice-1")
    assert kept is not None
    assert kept.fields != {}
    assert kept.batch == ""
    memory.close()
