"""Card data at rest in the queue: a data key per payment kept apart, destroyed with the host's
final word, the WAL scrubbed after it; the migration of a queue sealed the version 1 way.

The attack these close (the SD card read with the keystore open) is the WAL scan,
tests/security/test_erased_card_data.py; here each rule on its own, on real files.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlite_utils import Database

from offline_queue import (
    SCHEMA_VERSION,
    CardDataError,
    Forwarder,
    ItemOutcome,
    OfflineQueue,
    PaymentConflictError,
    State,
)
from offline_queue.cardcrypt import WRAPPED_KEY_LEN, CardCipher
from offline_queue.store import MIGRATIONS, payment_document
from tests.offline_queue.test_offline_queue import KEY, Clock, FakeUploader, counter_token, payment


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _files(path: Path) -> bytes:
    """Every byte of the database and its companions, as they are on disk now."""
    return b"".join(
        p.read_bytes() for p in sorted(path.parent.iterdir()) if p.name.startswith(path.name)
    )


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _sealed(path: Path, txid: str) -> tuple[bytes | None, bytes | None]:
    raw = _raw(path)
    try:
        payload = raw.execute(
            "SELECT payload FROM payments WHERE transaction_id = ?", (txid,)
        ).fetchone()
        key = raw.execute(
            "SELECT wrapped_key FROM card_data_keys WHERE transaction_id = ?", (txid,)
        ).fetchone()
    finally:
        raw.close()
    return (payload[0] if payload else None), (key[0] if key else None)


# --- sealing -----------------------------------------------------------------------------


def test_each_payment_is_sealed_under_its_own_key_kept_in_its_own_table(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "q.sqlite3"
    with OfflineQueue.open(path, KEY, clock=clock) as q:
        q.enqueue(payment("a"))
        q.enqueue(payment("b", pan="5413330089600010"))
    (pa, ka), (pb, kb) = _sealed(path, "a"), _sealed(path, "b")
    assert pa is not None
    assert pb is not None
    assert ka is not None
    assert kb is not None
    assert pa[:1] == pb[:1] == ka[:1] == kb[:1] == b"\x02"
    assert len(ka) == len(kb) == WRAPPED_KEY_LEN
    cipher = CardCipher(KEY)
    doc = json.loads(cipher.open("a", pa, ka))
    assert doc["card"]["pan"] == payment("a").card.pan
    # The queue key alone opens nothing: the version 1 scheme's key does not fit.
    with pytest.raises(CardDataError):
        cipher.open_v1("a", b"\x01" + pa[1:])
    # Each key is bound to its payment: swapped, neither opens, and the forwarder says so.
    with pytest.raises(CardDataError, match="failed authentication"):
        cipher.open("a", pa, kb)
    raw = _raw(path)
    raw.execute("UPDATE card_data_keys SET wrapped_key = ? WHERE transaction_id = 'a'", (kb,))
    raw.execute("UPDATE card_data_keys SET wrapped_key = ? WHERE transaction_id = 'b'", (ka,))
    raw.close()
    with OfflineQueue.open(path, KEY, clock=clock) as q:
        assert q.claim_batch() is None
        for txid in ("a", "b"):
            row = q.get(txid)
            assert row is not None
            assert row.state is State.FAILED
            assert "failed authentication" in (row.reason or "")


def test_the_data_key_comes_from_the_injected_randomness(tmp_path: Path, clock: Clock) -> None:
    token = counter_token()
    with OfflineQueue.open(tmp_path / "q.sqlite3", KEY, clock=clock, token=token) as q:  # type: ignore[arg-type]
        q.enqueue(payment("a"))
    payload, wrapped = _sealed(tmp_path / "q.sqlite3", "a")
    assert payload is not None
    assert wrapped is not None
    # counter_token hands out 1, 2, 3 ...: the data key (32 bytes) came first, then the
    # payload's nonce and the wrap's nonce.
    assert payload[1:13] == (2).to_bytes(12, "big")
    assert wrapped[1:13] == (3).to_bytes(12, "big")
    data_key = (1).to_bytes(32, "big")
    assert AESGCM(data_key).decrypt(payload[1:13], payload[13:], b"\x02carda")


# --- erasure -----------------------------------------------------------------------------


def test_accepted_and_declined_payments_lose_key_data_and_pan_hash_failed_keep_them(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "q.sqlite3"
    q = OfflineQueue.open(path, KEY, clock=clock)
    q.enqueue(payment("bad", pan="5413330089600028"))
    up = FakeUploader()
    up.reject = True
    Forwarder(q, up, clock=clock, sleep=clock.sleep).sync()
    q.enqueue(payment("ok"))
    q.enqueue(payment("no", pan="5413330089600010"))
    sealed = {t: _sealed(path, t) for t in ("ok", "no")}
    Forwarder(q, FakeUploader({"no": ItemOutcome.DECLINED}), clock=clock, sleep=clock.sleep).sync()
    raw = _raw(path)
    rows = {
        r[0]: r[1:]
        for r in raw.execute(
            "SELECT p.transaction_id, p.state, p.payload IS NULL, p.pan_hash, p.content_hash, "
            "k.wrapped_key IS NULL FROM payments p LEFT JOIN card_data_keys k "
            "USING (transaction_id)"
        )
    }
    raw.close()
    for txid, state in (("ok", "accepted"), ("no", "declined")):
        st, no_payload, pan_hash, content_hash, no_key = rows[txid]
        assert (st, no_payload, pan_hash, no_key) == (state, 1, "", 1)
        assert content_hash.startswith("erased:")
    assert rows["bad"][:2] == ("failed", 0)
    assert rows["bad"][2] != ""  # kept for a technician: the PAN lookup hash
    assert rows["bad"][4] == 0  # and the key
    # Nothing of what was erased is anywhere on disk, the queue still open: the WAL was
    # checkpointed and truncated, and secure_delete zeroed what the erasure freed.
    assert not q.erasure_pending
    assert (tmp_path / "q.sqlite3-wal").stat().st_size == 0
    on_disk = _files(path)
    for payload, wrapped in sealed.values():
        assert payload is not None
        assert wrapped is not None
        assert wrapped not in on_disk
        assert payload[13:45] not in on_disk
    assert CardCipher(KEY).pan_hash(payment("ok").card.pan).encode() not in on_disk
    assert q.find_by_pan(payment("ok").card.pan) == []
    assert [p.transaction_id for p in q.find_by_pan("5413330089600028")] == ["bad"]
    q.requeue_failed("bad")
    assert Forwarder(q, FakeUploader(), clock=clock, sleep=clock.sleep).sync().accepted == 1
    q.close()


def test_the_same_payment_after_erasure_is_a_duplicate_a_different_one_a_conflict(
    queue: OfflineQueue, clock: Clock
) -> None:
    queue.enqueue(payment("a"))
    Forwarder(queue, FakeUploader(), clock=clock, sleep=clock.sleep).sync()
    again = queue.enqueue(payment("a"))
    assert again.stored
    assert again.duplicate
    with pytest.raises(PaymentConflictError, match="different contents"):
        queue.enqueue(payment("a", amount=999))
    with pytest.raises(PaymentConflictError, match="different contents"):
        queue.enqueue(payment("a", pan="5413330089600010"))


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> Iterator[OfflineQueue]:
    q = OfflineQueue.open(tmp_path / "queue.sqlite3", KEY, clock=clock)
    yield q
    q.close()


def test_a_reader_in_the_wal_holds_the_scrub_up_until_it_leaves(
    tmp_path: Path, clock: Clock
) -> None:
    """What really happens: a reader's snapshot keeps the frames it may need, so right after
    the erasure the old copy of the key is still in the WAL; the scrub is owed, and done at
    the next sync once the reader has gone."""
    path = tmp_path / "q.sqlite3"
    q = OfflineQueue.open(path, KEY, clock=clock)
    q.enqueue(payment("a"))
    _, wrapped = _sealed(path, "a")
    assert wrapped is not None
    reader = _raw(path)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM card_data_keys").fetchone()[0] == 1
    Forwarder(q, FakeUploader(), clock=clock, sleep=clock.sleep).sync()
    assert q.get("a").state is State.ACCEPTED  # type: ignore[union-attr]
    assert q.erasure_pending
    assert wrapped in (tmp_path / "q.sqlite3-wal").read_bytes()
    # The reader still sees its snapshot; a new one does not.
    assert reader.execute("SELECT COUNT(*) FROM card_data_keys").fetchone()[0] == 1
    reader.execute("COMMIT")
    Forwarder(q, FakeUploader(), clock=clock, sleep=clock.sleep).sync()  # nothing due: scrubs
    assert not q.erasure_pending
    assert (tmp_path / "q.sqlite3-wal").stat().st_size == 0
    assert wrapped not in _files(path)
    reader.close()
    q.close()


def test_an_owed_scrub_is_done_at_close(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.sqlite3"
    q = OfflineQueue.open(path, KEY, clock=clock)
    q.enqueue(payment("a"))
    _, wrapped = _sealed(path, "a")
    other = OfflineQueue.open(path, None, clock=clock)  # a status command, still open
    reader = _raw(path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM payments").fetchone()
    Forwarder(q, FakeUploader(), clock=clock, sleep=clock.sleep).sync()
    assert q.erasure_pending
    reader.execute("COMMIT")
    reader.close()
    q.close()  # the other connection keeps the WAL from being removed: the scrub does it
    assert wrapped is not None
    assert wrapped not in _files(path)
    other.close()


# --- migration from schema 1 -------------------------------------------------------------


def _v1_seal(txid: str, plaintext: bytes, nonce: bytes) -> bytes:
    """Card data sealed the way pipos did before per-payment keys (one queue-wide key)."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"pipos offline-queue v1: aes-gcm"
    ).derive(KEY)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext, b"\x01" + txid.encode())


def _schema_1_queue(path: Path) -> dict[str, bytes]:
    """A queue as pipos wrote it before this change: schema 1, no secure_delete, version 1
    ciphertexts; "old" was accepted and its card data set to NULL (its copy left in free
    space), "d" declined with its card data kept."""
    conn = sqlite3.connect(path, isolation_level=None)
    # Debian builds SQLite with secure_delete on by default; pipos did not ask for it.
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("PRAGMA journal_mode = WAL")
    db = Database(conn)
    MIGRATIONS[0](db)
    conn.execute("PRAGMA application_id = 1346981969")
    conn.execute("PRAGMA user_version = 1")
    cipher = CardCipher(KEY)
    conn.execute("INSERT INTO meta VALUES ('key_check', ?)", (cipher.key_check,))
    sealed: dict[str, bytes] = {}
    for n, (txid, state, pan) in enumerate(
        [
            ("p", "pending", "4761739001010119"),
            ("old", "accepted", "5413330089600010"),
            ("d", "declined", "5413330089600028"),
        ]
    ):
        p = payment(txid, pan=pan)
        plaintext = json.dumps(payment_document(p), sort_keys=True, separators=(",", ":"))
        sealed[txid] = _v1_seal(txid, plaintext.encode(), n.to_bytes(12, "big"))
        content = cipher.pan_hash(hashlib.sha256(plaintext.encode()).hexdigest())
        conn.execute(
            "INSERT INTO payments (transaction_id, state, amount, currency, masked_pan, "
            "pan_hash, brand, aid, captured_at, payload, content_hash, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                txid,
                state,
                p.amount,
                p.currency,
                "476173******0119",
                cipher.pan_hash(pan),
                p.brand,
                p.aid,
                p.captured_at,
                sealed[txid],
                content,
                1,
                1,
            ),
        )
    # What pipos did on acceptance: the card data set to NULL, without secure_delete.
    conn.execute("UPDATE payments SET payload = NULL WHERE transaction_id = 'old'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sealed


@pytest.mark.parametrize("first_open", ["with the key", "read-only first"])
def test_a_schema_1_queue_is_resealed_and_its_finished_card_data_wiped(
    tmp_path: Path, clock: Clock, first_open: str
) -> None:
    path = tmp_path / "q.sqlite3"
    sealed = _schema_1_queue(path)
    # The old code's "erased" copy, still in the file (its head: enough to decrypt from).
    assert sealed["old"][:200] in _files(path)
    if first_open == "read-only first":
        with OfflineQueue.open(path, None, clock=clock) as ro:  # `pipos queue status`
            assert ro.status().states[State.PENDING].count == 1
        # The schema moved on and the file was rebuilt; "p" waits for the key to be resealed.
        assert sealed["old"][13:45] not in _files(path)
        assert sealed["d"][13:45] not in _files(path)
        assert _sealed(path, "p") == (sealed["p"], None)
    with OfflineQueue.open(path, KEY, clock=clock) as q:
        raw = q._db.conn
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("SELECT COUNT(*) FROM meta WHERE key = 'vacuum_owed'").fetchone()[0] == 0
        on_disk = _files(path)
        for txid in ("p", "old", "d"):
            assert sealed[txid] not in on_disk, txid
            assert sealed[txid][13:45] not in on_disk, txid
        payload, wrapped = _sealed(path, "p")
        assert payload is not None
        assert payload[:1] == b"\x02"
        assert wrapped is not None
        assert _sealed(path, "old") == (None, None)
        assert _sealed(path, "d") == (None, None)
        assert q.find_by_pan("5413330089600028") == []
        assert q.get("d").state is State.DECLINED  # type: ignore[union-attr]
        up = FakeUploader()
        Forwarder(q, up, clock=clock, sleep=clock.sleep).sync()
        assert [(i.transaction_id, i.card.pan) for b in up.calls for i in b.items] == [
            ("p", "4761739001010119")
        ]


# --- a crash between the erasure and its checkpoint --------------------------------------

_KILLED_AFTER_ERASURE = r"""
import os, signal, sys
from pathlib import Path
from offline_queue import Forwarder, OfflineQueue
from tests.offline_queue.test_offline_queue import KEY, FakeUploader

queue = OfflineQueue.open(Path(sys.argv[1]), KEY)
# SIGKILL right after the commit that erased the card data, before the WAL is scrubbed.
OfflineQueue.scrub = lambda self: os.kill(os.getpid(), signal.SIGKILL)
Forwarder(queue, FakeUploader()).sync()
"""


@pytest.mark.integration
def test_a_kill_between_the_erasure_and_its_scrub_is_scrubbed_at_the_next_open(
    tmp_path: Path, clock: Clock
) -> None:
    import signal
    import subprocess
    import sys

    path = tmp_path / "q.sqlite3"
    with OfflineQueue.open(path, KEY, clock=clock) as q:
        q.enqueue(payment("a"))
    _, wrapped = _sealed(path, "a")
    assert wrapped is not None
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_ERASURE, str(path)],
        cwd=root,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    # The erasure is committed (in the WAL the killed process left), but the database file
    # still has the page as it was before: the key is on disk until a checkpoint.
    assert (tmp_path / "q.sqlite3-wal").stat().st_size > 0
    assert wrapped in _files(path)
    with OfflineQueue.open(path, KEY, clock=clock) as q:
        assert q.get("a").state is State.ACCEPTED  # type: ignore[union-attr]
        assert not q.erasure_pending
        assert wrapped not in _files(path)
