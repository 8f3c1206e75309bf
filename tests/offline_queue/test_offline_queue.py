"""The offline queue: durable store, limits, card data at rest, forwarder, backup."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from offline_queue import (
    SCHEMA_VERSION,
    Backoff,
    Batch,
    BatchRejectedError,
    CardData,
    CardDataError,
    Forwarder,
    ItemOutcome,
    ItemResult,
    OfflineLimits,
    OfflinePayment,
    OfflineQueue,
    PaymentConflictError,
    QueueCorruptError,
    QueueSchemaError,
    RefusalReason,
    State,
    UplinkUnavailableError,
    export_queue,
    import_queue,
)
from offline_queue.backup import read_backup
from offline_queue.errors import BackupError, InvalidPaymentError

PAN = "4761739001010119"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


class Clock:
    def __init__(self, start: int = 1_700_000_000) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def counter_token() -> object:
    c = itertools.count(1)

    def token(n: int) -> bytes:
        return next(c).to_bytes(n, "big")

    return token


def payment(
    txid: str = "tx-1", amount: int = 1250, currency: int = 978, pan: str = PAN
) -> OfflinePayment:
    return OfflinePayment(
        transaction_id=txid,
        amount=amount,
        currency=currency,
        card=CardData(pan=pan, pan_sequence=1, expiry="2812", cardholder_name="TEST/CARD"),
        captured_at=1_700_000_000,
        emv={"9F26": "0102030405060708", "9F27": "40", "5A": PAN + "F" if len(PAN) % 2 else PAN},
        brand="visa",
        aid="A0000000031010",
        signed_record=b'{"txid":"' + txid.encode() + b'","pan":"' + pan.encode() + b'"}',
        signature=b"\x01" * 64,
        key_id="ed25519:00",
    )


LIMITS = OfflineLimits(
    max_transaction_amount={978: 5000},
    max_total_amount={978: 25000},
    max_count=10,
    max_age_seconds=3600,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> Iterator[OfflineQueue]:
    q = OfflineQueue.open(tmp_path / "queue.sqlite3", KEY, clock=clock)
    yield q
    q.close()


class FakeUploader:
    """Programmable BatchUploader for unit tests (the end-to-end proof uses the real host)."""

    def __init__(self, outcomes: dict[str, ItemOutcome] | None = None) -> None:
        self.outcomes = outcomes or {}
        self.calls: list[Batch] = []
        self.fail_next = 0
        self.reject = False

    def upload(self, batch: Batch) -> Sequence[ItemResult]:
        self.calls.append(batch)
        if self.fail_next:
            self.fail_next -= 1
            raise UplinkUnavailableError("connection refused")
        if self.reject:
            raise BatchRejectedError("422 items.0.pan: invalid")
        return [
            ItemResult(
                i.transaction_id,
                self.outcomes.get(i.transaction_id, ItemOutcome.ACCEPTED),
                host_ref="O" + i.transaction_id,
                reason="insufficient funds"
                if self.outcomes.get(i.transaction_id) is ItemOutcome.DECLINED
                else None,
            )
            for i in batch.items
        ]


# --- store ---------------------------------------------------------------------------


def test_enqueue_is_durable_and_visible_after_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.sqlite3"
    with OfflineQueue.open(path, KEY, clock=clock) as q:
        assert q.enqueue(payment("a")).stored
    with OfflineQueue.open(path, KEY, clock=clock) as q:
        row = q.get("a")
        assert row is not None
        assert row.state is State.PENDING
        assert row.masked_pan == "476173******0119"
        assert (row.amount, row.currency) == (1250, 978)
        assert q.history("a") == [(None, "pending", 1_700_000_000, "queued")]


def test_wal_and_synchronous_full(queue: OfflineQueue) -> None:
    conn = queue._db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_enqueue_twice_is_idempotent_and_conflict_is_refused(queue: OfflineQueue) -> None:
    assert not queue.enqueue(payment("a")).duplicate
    again = queue.enqueue(payment("a"))
    assert again.stored
    assert again.duplicate
    assert len(queue.list_payments()) == 1
    with pytest.raises(PaymentConflictError, match="already queued with different contents"):
        queue.enqueue(payment("a", amount=999))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transaction_id": "bad id!"}, "transaction_id"),
        ({"amount": 0}, "amount: expected 1"),
        ({"amount": 12.5}, "integer minor units"),
        ({"currency": 1000}, "currency"),
        ({"card": CardData(pan="12AB")}, "card.pan"),
        ({"emv": {"9F2": "zz"}}, "emv: tag"),
    ],
)
def test_malformed_payment_is_refused_with_the_field(
    queue: OfflineQueue, change: dict[str, object], message: str
) -> None:
    import dataclasses

    bad = dataclasses.replace(payment(), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidPaymentError, match=message):
        queue.enqueue(bad)
    assert queue.list_payments() == []


def test_no_clear_pan_in_the_database_files(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.sqlite3"
    q = OfflineQueue.open(path, KEY, clock=clock)
    pans = [f"54133300899{i:05d}" for i in range(20)]
    for i, pan in enumerate(pans):
        q.enqueue(payment(f"t{i}", amount=100 + i, pan=pan))
    # Keep the connection open so the -wal and -shm files exist while we look at them.
    files = [p for p in tmp_path.iterdir() if p.name.startswith("q.sqlite3")]
    assert {p.name for p in files} >= {"q.sqlite3", "q.sqlite3-wal", "q.sqlite3-shm"}
    blob = b"".join(p.read_bytes() for p in files)
    for pan in pans:
        assert pan.encode() not in blob  # ASCII digits
        assert bytes.fromhex(pan) not in blob  # BCD, as in tag 5A
        assert pan[6:].encode() not in blob  # not even the hidden middle digits next to the end
    assert b"TEST/CARD" not in blob
    # The lookup by keyed hash still finds the card.
    assert [p.transaction_id for p in q.find_by_pan(pans[3])] == ["t3"]
    q.close()


def test_ciphertext_moved_to_another_row_fails_authentication(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.sqlite3"
    q = OfflineQueue.open(path, KEY, clock=clock)
    q.enqueue(payment("a", amount=100))
    q.enqueue(payment("b", amount=100, pan="5413330089600010"))
    raw = sqlite3.connect(path)
    with raw:
        blob = raw.execute("SELECT payload FROM payments WHERE transaction_id='a'").fetchone()[0]
        raw.execute("UPDATE payments SET payload=? WHERE transaction_id='b'", (blob,))
    raw.close()
    batch = q.claim_batch(10)
    assert batch is not None
    assert [i.transaction_id for i in batch.items] == ["a"]
    b = q.get("b")
    assert b is not None
    assert b.state is State.FAILED
    assert b.flagged
    assert "failed authentication" in (b.reason or "")
    q.close()


def test_wrong_data_key_is_refused_at_open(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.sqlite3"
    OfflineQueue.open(path, KEY, clock=clock).close()
    with pytest.raises(CardDataError, match="does not match"):
        OfflineQueue.open(path, OTHER_KEY, clock=clock)
    # Read-only use (status, list) needs no key.
    with OfflineQueue.open(path, None, clock=clock) as q:
        assert q.status().outstanding_count == 0


def test_corrupt_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(QueueCorruptError, match="damaged or not an SQLite database"):
        OfflineQueue.open(path, KEY)


def test_damaged_pages_fail_the_integrity_check(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.sqlite3"
    with OfflineQueue.open(path, KEY, clock=clock) as q:
        for i in range(200):
            q.enqueue(payment(f"t{i}", amount=1))
        q._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page + 16, min(len(data), 6 * page), 7):  # scribble on pages 3-6
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(QueueCorruptError):
        OfflineQueue.open(path, KEY, clock=clock)


def test_other_database_and_newer_schema_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE x (a)")
    conn.commit()
    conn.close()
    with pytest.raises(QueueCorruptError, match="not a pipos offline queue"):
        OfflineQueue.open(other, KEY)
    newer = tmp_path / "newer.sqlite3"
    OfflineQueue.open(newer, KEY).close()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(QueueSchemaError, match="newer than this pipos"):
        OfflineQueue.open(newer, KEY)


# --- limits --------------------------------------------------------------------------


def test_limit_total_amount_reason(queue: OfflineQueue) -> None:
    for i in range(5):
        assert queue.enqueue(payment(f"t{i}", amount=5000), limits=LIMITS).stored
    result = queue.enqueue(payment("t5", amount=100), limits=LIMITS)
    assert not result.stored
    assert result.decision.reason is RefusalReason.TOTAL_AMOUNT
    assert result.decision.message == "offline limit reached: 250.00 stored of 250.00"
    assert queue.get("t5") is None


def test_limit_per_transaction_count_age_card_and_currency(
    queue: OfflineQueue, clock: Clock
) -> None:
    d = queue.check(LIMITS, amount=5001, currency=978, card_approves_offline=True)
    assert d.reason is RefusalReason.TRANSACTION_AMOUNT
    assert d.message == "offline limit per payment exceeded: 50.01 over 50.00"
    d = queue.check(LIMITS, amount=100, currency=978, card_approves_offline=False)
    assert d.reason is RefusalReason.CARD_DECLINED
    d = queue.check(LIMITS, amount=100, currency=840, card_approves_offline=True)
    assert d.reason is RefusalReason.CURRENCY
    assert queue.check(LIMITS, amount=100, currency=978, card_approves_offline=True)
    for i in range(10):
        queue.enqueue(payment(f"c{i}", amount=1), limits=LIMITS)
    d = queue.check(LIMITS, amount=1, currency=978, card_approves_offline=True)
    assert d.message == "offline limit reached: 10 payments stored of 10"
    small = OfflineLimits({978: 5000}, {978: 25000}, max_count=100, max_age_seconds=3600)
    clock.now += 3600
    d = queue.check(small, amount=1, currency=978, card_approves_offline=True)
    assert d.reason is RefusalReason.AGE
    assert "oldest stored payment is 60 min old" in d.message
    disabled = OfflineLimits({978: 5000}, {978: 25000}, 100, 3600, enabled=False)
    assert (
        queue.check(disabled, amount=1, currency=978, card_approves_offline=True).reason
        is RefusalReason.DISABLED
    )


def test_limits_use_the_given_formatter(queue: OfflineQueue) -> None:
    def fmt(minor: int, cur: int) -> str:
        return f"{minor} units of {cur:03d}"

    d = queue.check(LIMITS, amount=6000, currency=978, card_approves_offline=True, fmt=fmt)
    assert (
        d.message == "offline limit per payment exceeded: 6000 units of 978 over 5000 units of 978"
    )


def test_accepted_payments_free_the_limit(queue: OfflineQueue, clock: Clock) -> None:
    for i in range(5):
        queue.enqueue(payment(f"t{i}", amount=5000), limits=LIMITS)
    Forwarder(queue, FakeUploader(), clock=clock, sleep=clock.sleep, random=lambda: 0.5).sync()
    assert queue.enqueue(payment("t5", amount=5000), limits=LIMITS).stored


# --- forwarder -----------------------------------------------------------------------


def test_sync_sends_in_batches_and_records_every_transition(
    queue: OfflineQueue, clock: Clock
) -> None:
    for i in range(7):
        queue.enqueue(payment(f"t{i}", amount=100))
    up = FakeUploader()
    seen: list[tuple[int, int]] = []
    report = Forwarder(queue, up, batch_size=3, clock=clock, sleep=clock.sleep).sync(
        progress=lambda d, t: seen.append((d, t))
    )
    assert [len(b.items) for b in up.calls] == [3, 3, 1]
    assert report.accepted == 7
    assert report.complete
    assert seen[0] == (0, 7)
    assert seen[-1] == (7, 7)
    row = queue.get("t0")
    assert row is not None
    assert row.state is State.ACCEPTED
    assert row.host_ref == "Ot0"
    assert [h[:2] for h in queue.history("t0")] == [
        (None, "pending"),
        ("pending", "sending"),
        ("sending", "accepted"),
    ]
    # Card data is erased once the host has the payment.
    assert (
        queue._db.execute("SELECT COUNT(*) FROM payments WHERE payload IS NOT NULL").fetchone()[0]
        == 0
    )
    # Batch items carry the decrypted card data for the host.
    assert up.calls[0].items[0].card.pan == PAN
    assert up.calls[0].items[0].emv["9F26"] == "0102030405060708"


def test_unreachable_host_resends_the_same_batch_with_backoff(
    queue: OfflineQueue, clock: Clock
) -> None:
    for i in range(3):
        queue.enqueue(payment(f"t{i}", amount=100))
    up = FakeUploader()
    up.fail_next = 3
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        clock.sleep(s)

    fw = Forwarder(
        queue,
        up,
        batch_size=10,
        backoff=Backoff(base=1, cap=60),
        clock=clock,
        sleep=sleep,
        random=lambda: 1.0,
    )
    report = fw.sync(max_failures=10)
    assert report.complete
    assert report.upload_errors == 3
    assert sleeps == [1.0, 2.0, 4.0]  # exponential; jitter source returned its maximum
    keys = {b.idempotency_key for b in up.calls}
    ids = {b.batch_id for b in up.calls}
    assert len(keys) == 1
    assert len(ids) == 1
    assert [b.resumed for b in up.calls] == [False, True, True, True]
    assert all([i.transaction_id for i in b.items] == ["t0", "t1", "t2"] for b in up.calls)


def test_jitter_spreads_the_delay() -> None:
    b = Backoff(base=2, factor=2, cap=30)
    assert b.delay(1, lambda: 0.25) == 0.5
    assert b.delay(3, lambda: 0.5) == 4.0
    assert b.delay(10, lambda: 1.0) == 30


def test_sync_gives_up_after_max_failures_and_keeps_the_batch(
    queue: OfflineQueue, clock: Clock
) -> None:
    queue.enqueue(payment("a"))
    up = FakeUploader()
    up.fail_next = 100
    report = Forwarder(queue, up, clock=clock, sleep=clock.sleep, random=lambda: 0.5).sync(
        max_failures=2
    )
    assert not report.complete
    assert report.remaining == 1
    assert report.last_error == "connection refused"
    row = queue.get("a")
    assert row is not None
    assert row.state is State.SENDING
    # A later sync (e.g. a new process after a crash) resumes the very same batch.
    up.fail_next = 0
    report = Forwarder(queue, up, clock=clock, sleep=clock.sleep).sync()
    assert report.complete
    assert report.resumed_batches == 1
    assert len({b.idempotency_key for b in up.calls}) == 1


def test_declined_after_the_fact_is_kept_flagged_and_shown(
    queue: OfflineQueue, clock: Clock
) -> None:
    queue.enqueue(payment("good"))
    queue.enqueue(payment("bad", pan="5413330089600010"))
    up = FakeUploader({"bad": ItemOutcome.DECLINED})
    report = Forwarder(queue, up, clock=clock, sleep=clock.sleep).sync()
    assert (report.accepted, report.declined) == (1, 1)
    bad = queue.get("bad")
    assert bad is not None
    assert bad.state is State.DECLINED
    assert bad.flagged
    assert bad.reason == "insufficient funds"
    status = queue.status()
    assert status.flagged == 1
    assert status.states[State.DECLINED].amounts == {978: 1250}
    assert [p.transaction_id for p in queue.list_payments(flagged_only=True)] == ["bad"]
    queue.acknowledge("bad")
    assert queue.status().flagged == 0
    assert queue.get("bad").state is State.DECLINED  # type: ignore[union-attr]


def test_retry_items_go_back_to_pending_and_are_sent_again(
    queue: OfflineQueue, clock: Clock
) -> None:
    queue.enqueue(payment("a"))
    queue.enqueue(payment("b"))
    up = FakeUploader({"b": ItemOutcome.RETRY})
    fw = Forwarder(queue, up, clock=clock, sleep=clock.sleep, random=lambda: 0.5)
    report = fw.sync(max_failures=1)
    assert report.retried >= 1
    up.outcomes.clear()
    report = fw.sync()
    assert report.complete
    assert queue.get("b").state is State.ACCEPTED  # type: ignore[union-attr]


def test_rejected_batch_marks_failed_and_requeue(queue: OfflineQueue, clock: Clock) -> None:
    queue.enqueue(payment("a"))
    up = FakeUploader()
    up.reject = True
    report = Forwarder(queue, up, clock=clock, sleep=clock.sleep).sync()
    assert report.failed == 1
    a = queue.get("a")
    assert a is not None
    assert a.state is State.FAILED
    assert a.flagged
    assert "host rejected the batch" in (a.reason or "")
    up.reject = False
    queue.requeue_failed("a")
    Forwarder(queue, up, clock=clock, sleep=clock.sleep).sync()
    assert queue.get("a").state is State.ACCEPTED  # type: ignore[union-attr]


def test_answers_about_unknown_payments_are_ignored(queue: OfflineQueue, clock: Clock) -> None:
    queue.enqueue(payment("a"))
    batch = queue.claim_batch()
    assert batch is not None
    counts = queue.record_results(batch, [ItemResult("zzz", ItemOutcome.ACCEPTED)], retry_at=0)
    assert counts[ItemOutcome.RETRY] == 1
    assert queue.get("a").state is State.PENDING  # type: ignore[union-attr]


def test_status_counts_amounts_and_oldest(queue: OfflineQueue, clock: Clock) -> None:
    queue.enqueue(payment("a", amount=100))
    clock.now += 60
    queue.enqueue(payment("b", amount=250, currency=840))
    st = queue.status()
    pending = st.states[State.PENDING]
    assert pending.count == 2
    assert pending.amounts == {978: 100, 840: 250}
    assert pending.oldest_created_at == 1_700_000_000
    assert st.outstanding_amounts() == {978: 100, 840: 250}


# --- backup --------------------------------------------------------------------------


def test_export_import_moves_payments_to_a_replacement_unit(tmp_path: Path, clock: Clock) -> None:
    old = OfflineQueue.open(tmp_path / "old.sqlite3", KEY, clock=clock)
    old.enqueue(payment("a"))
    old.enqueue(payment("b", pan="5413330089600010"))
    old.enqueue(payment("c", pan="5413330089600028"))
    Forwarder(old, FakeUploader({"c": ItemOutcome.DECLINED}), clock=clock, sleep=clock.sleep).sync()
    old.enqueue(payment("d", amount=77))
    old.claim_batch()  # "d" is left 'sending' when the unit dies
    backup = tmp_path / "queue.backup"
    assert export_queue(old, backup, b"correct horse", scrypt_n=2**10) == 4
    blob = backup.read_bytes()
    assert PAN.encode() not in blob
    assert b"5413330089600010" not in blob
    with pytest.raises(BackupError, match="already exists"):
        export_queue(old, backup, b"correct horse", scrypt_n=2**10)
    old.close()

    new = OfflineQueue.open(tmp_path / "new.sqlite3", OTHER_KEY, clock=clock)
    report = import_queue(new, backup, b"correct horse")
    assert sorted(report.added) == ["a", "b", "c", "d"]
    again = import_queue(new, backup, b"correct horse")
    assert again.added == ()
    assert sorted(again.already_present) == ["a", "b", "c", "d"]
    assert len(new.list_payments()) == 4
    d = new.get("d")
    assert d is not None
    assert d.state is State.PENDING
    assert d.imported
    c = new.get("c")
    assert c is not None
    assert c.state is State.DECLINED
    assert c.flagged
    # Unsent payments keep their card data, re-sealed under the new unit's key; the host's
    # final word (accepted, declined) erased it on the old unit, and the backup has none.
    assert new.find_by_pan("5413330089600028") == []  # declined
    assert new.find_by_pan("5413330089600010") == []  # accepted
    assert [p.transaction_id for p in new.find_by_pan(PAN)] == ["d"]
    up = FakeUploader()
    Forwarder(new, up, clock=clock, sleep=clock.sleep).sync()
    assert up.calls[0].items[0].card.pan in (PAN,)
    assert [i.transaction_id for i in up.calls[0].items] == ["d"]
    new.close()


def test_backup_errors_are_specific(tmp_path: Path, clock: Clock) -> None:
    q = OfflineQueue.open(tmp_path / "q.sqlite3", KEY, clock=clock)
    q.enqueue(payment("a"))
    backup = tmp_path / "b.backup"
    export_queue(q, backup, b"correct horse", scrypt_n=2**10)
    with pytest.raises(BackupError, match="wrong passphrase"):
        read_backup(backup, b"wrong horse!")
    with pytest.raises(BackupError, match="too short"):
        export_queue(q, tmp_path / "x", b"short")
    tampered = bytearray(backup.read_bytes())
    tampered[-5] ^= 1
    (tmp_path / "t.backup").write_bytes(bytes(tampered))
    with pytest.raises(BackupError, match="wrong passphrase, or the file is damaged"):
        read_backup(tmp_path / "t.backup", b"correct horse")
    (tmp_path / "n.backup").write_bytes(b"hello")
    with pytest.raises(BackupError, match="not a pipos queue backup"):
        read_backup(tmp_path / "n.backup", b"correct horse")
    with pytest.raises(BackupError, match="no such file"):
        read_backup(tmp_path / "missing", b"correct horse")
    head_end = backup.read_bytes().index(b"\n", 25)
    header = json.loads(backup.read_bytes()[21:head_end])
    header["count"] = 5
    bad = backup.read_bytes()[:21] + json.dumps(header).encode() + backup.read_bytes()[head_end:]
    (tmp_path / "h.backup").write_bytes(bad)
    with pytest.raises(BackupError, match="wrong passphrase, or the file is damaged"):
        read_backup(tmp_path / "h.backup", b"correct horse")
    q.close()
