"""The journal numbers every change: a transaction's revision is higher after each write than
any revision given out before, on it or on any other transaction, and survives a restart; a
schema-1 journal is migrated with revisions in the order its transactions were made. A sale's
refunded amount and voided flag are derived from its refund and void records in the same
commit as they change, never written from a copy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from terminal.domain.records import TxnRecord
from terminal.store.journal import SCHEMA_VERSION, Journal, JournalError


def _sale(txn_id: str, *, kind: str = "sale", original: str = "", amount: int = 1000) -> TxnRecord:
    return TxnRecord(
        id=txn_id,
        kind=kind,
        original_id=original,
        state="in_progress",
        amount=amount,
        currency=978,
        created_at="2026-12-01T10:00:00+00:00",
        updated_at="2026-12-01T10:00:00+00:00",
    )


def test_every_write_gets_a_revision_above_all_before(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    first = journal.insert(_sale("S1"))
    second = journal.insert(_sale("S2"))
    assert (first.revision, second.revision) == (1, 2)
    reading = journal.update(first, stage="reading_card")
    approved = journal.update(reading, state="approved", stage="done")
    assert (reading.revision, approved.revision) == (3, 4)
    assert journal.get("S1") == approved
    # A stale copy written again still moves forward, never back to its old number.
    again = journal.update(first, reason="written from an old copy")
    assert again.revision == 5
    journal.close()

    reopened = Journal(tmp_path / "journal.sqlite3")
    assert reopened.get("S1") == again
    assert reopened.update(second, state="cancelled").revision == 6
    reopened.close()


def test_closing_the_batch_moves_every_closed_transaction_forward(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    done = journal.update(journal.insert(_sale("S1")), state="approved")
    running = journal.insert(_sale("S2"))
    assert journal.close_batch("B1", "2026-12-01T20:00:00+00:00", []) == 1
    closed = journal.get("S1")
    assert closed is not None
    assert closed.batch_id == "B1"
    assert closed.revision > max(done.revision, running.revision)
    assert journal.get("S2") == running  # still running: not in the batch, not touched
    journal.close()


#: The transactions table as schema 1 made it (written out: the code's columns move on).
SCHEMA_1_TEXT_COLUMNS = [
    "kind",
    "state",
    "created_at",
    "updated_at",
    "result",
    "reason",
    "external_ref",
    "original_id",
    "stage",
    "masked_pan",
    "brand",
    "aid",
    "entry_mode",
    "cryptogram_kind",
    "cryptogram",
    "atc",
    "tvr",
    "cvm",
    "auth_code",
    "response_code",
    "host_ref",
    "idempotency_key",
    "offline_id",
    "batch_id",
    "extra",
]
SCHEMA_1_INT_COLUMNS = ("amount", "currency", "refunded_amount", "voided")


#: What schema 6 added to the transactions: a sale's tip, a pre-authorisation's amounts.
SCHEMA_6_COLUMNS = ("tip_amount", "authorised_amount", "captured_amount", "released")


def as_schema_5(raw: sqlite3.Connection) -> None:
    """Takes schema 6's columns out of a journal this software made (for a test that
    turns it into an older one)."""
    raw.execute("DROP INDEX transactions_batch")
    for name in SCHEMA_6_COLUMNS:
        raw.execute(f"ALTER TABLE transactions DROP COLUMN {name}")


def test_a_schema_5_journal_gets_tips_and_holds_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    journal.insert(_sale("S-old", amount=500))
    journal.close()
    raw = sqlite3.connect(path)
    as_schema_5(raw)
    raw.execute("PRAGMA user_version = 5")
    raw.commit()
    raw.close()
    journal = Journal(path)
    old = journal.get("S-old")
    assert old is not None
    assert (old.amount, old.tip_amount, old.authorised_amount, old.captured_amount) == (
        500,
        0,
        0,
        0,
    )
    assert old.released is False
    journal.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _old_journal(path: Path, rows: str, *, version: int = 1) -> None:
    """A journal as schema 1 (or 2, with `revision`) left it, holding `rows` (SQL values
    for id, kind, state, amount, currency, original_id, refunded_amount, seq, extra)."""
    cols = ", ".join(
        [f"{name} TEXT NOT NULL DEFAULT ''" for name in SCHEMA_1_TEXT_COLUMNS]
        + [f"{name} INTEGER NOT NULL DEFAULT 0" for name in SCHEMA_1_INT_COLUMNS]
    )
    revision = "revision INTEGER NOT NULL DEFAULT 0, " if version >= 2 else ""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        f"""
        CREATE TABLE transactions (id TEXT PRIMARY KEY, {cols}, {revision}seq INTEGER);
        CREATE INDEX transactions_created ON transactions (seq);
        CREATE INDEX transactions_external ON transactions (external_ref);
        CREATE TABLE batches (batch_id TEXT PRIMARY KEY, closed_at TEXT NOT NULL,
                              totals TEXT NOT NULL);
        CREATE TABLE pending_reversals (idempotency_key TEXT PRIMARY KEY,
                                        txn_id TEXT NOT NULL, created_at TEXT NOT NULL);
        INSERT INTO transactions (id, kind, state, amount, currency, original_id,
                                  refunded_amount, seq, extra)
            VALUES {rows};
        PRAGMA user_version = {version};
        """
    )
    db.close()


def test_a_schema_1_journal_gets_revisions_in_journal_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _old_journal(
        path,
        "('S-old', 'sale', 'approved', 500, 978, '', 0, 1, '{}'), "
        "('S-new', 'sale', 'approved', 700, 978, '', 0, 2, '{}')",
    )
    journal = Journal(path)
    old, new = journal.get("S-old"), journal.get("S-new")
    assert old is not None
    assert new is not None
    assert (old.revision, new.revision) == (1, 2)
    assert journal.update(old, reason="after the upgrade").revision == 3
    journal.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_schema_2_journal_gets_its_extra_as_typed_fields(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _old_journal(
        path,
        "('S-mpm', 'sale', 'approved', 990, 978, '', 0, 1, "
        """'{"method": "merchant_qr", "qr_order_id": "O-1", "qr_payload": "000201"}'), """
        "('S-code', 'sale', 'approved', 1250, 978, '', 0, 2, "
        """'{"qr_order_id": "O-2", "qr_kind": "wallet", "qr_scheme": "alipay"}'), """
        "('R-lost', 'refund', 'failed', 400, 978, 'S-code', 0, 3, "
        """'{"refund_outcome_unknown": true}')""",
        version=2,
    )
    journal = Journal(path)
    mpm, code, lost = journal.get("S-mpm"), journal.get("S-code"), journal.get("R-lost")
    assert mpm is not None
    assert code is not None
    assert lost is not None
    assert (mpm.method, mpm.qr_order_id, mpm.qr_payload) == ("merchant_qr", "O-1", "000201")
    assert (code.method, code.qr_order_id, code.qr_kind, code.qr_scheme) == (
        "card",
        "O-2",
        "wallet",
        "alipay",
    )
    assert lost.outcome_unknown is True
    assert code.outcome_unknown is False
    # The register's API still sees the code-payment fields where earlier releases put them.
    assert mpm.to_json()["extra"] == {
        "method": "merchant_qr",
        "qr_order_id": "O-1",
        "qr_payload": "000201",
    }
    journal.close()
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(transactions)")}
    assert "extra" not in columns
    assert {"method", "qr_order_id", "outcome_unknown"} <= columns


def test_refunded_amount_and_voided_follow_their_records_in_the_same_commit(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    sale = journal.update(journal.insert(_sale("S1", amount=2000)), state="approved")
    refund = journal.insert(_sale("R1", kind="refund", original="S1", amount=700))
    assert journal.get("S1") == sale  # a refund started changes nothing, not even the revision
    approved = journal.update(refund, state="approved")
    after = journal.get("S1")
    assert after is not None
    assert after.refunded_amount == 700
    assert after.revision == approved.revision + 1  # the same commit, numbered after it
    declined = journal.insert(_sale("R2", kind="refund", original="S1", amount=300))
    journal.update(declined, state="declined")
    assert journal.get("S1").refunded_amount == 700  # type: ignore[union-attr]
    # A stale copy of the sale written again cannot undo the refund.
    journal.update(sale, reason="an old copy")
    assert journal.get("S1").refunded_amount == 700  # type: ignore[union-attr]
    with pytest.raises(JournalError, match="derived"):
        journal.update(sale, refunded_amount=0)
    void = journal.insert(_sale("V1", kind="void", original="S1", amount=2000))
    assert journal.get("S1").voided is False  # type: ignore[union-attr]
    journal.update(void, state="approved")
    assert journal.get("S1").voided is True  # type: ignore[union-attr]
    journal.close()


def test_migration_mends_a_refund_counted_twice(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    # As an older version could leave it: 8.00 refunded where one refund of 4.00 exists.
    _old_journal(
        path,
        "('S1', 'sale', 'approved', 2000, 978, '', 800, 1, '{}'), "
        "('R1', 'refund', 'approved', 400, 978, 'S1', 0, 2, '{}')",
    )
    mended = Journal(path).get("S1")
    assert mended is not None
    assert mended.refunded_amount == 400


def test_changed_since_gives_each_transaction_once_in_the_order_of_its_last_change(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    first = journal.insert(_sale("S1"))
    journal.insert(_sale("S2"))
    journal.update(first, reason="changed after S2")
    assert [r.id for r in journal.changed_since(0, 10)] == ["S2", "S1"]
    assert [r.id for r in journal.changed_since(2, 10)] == ["S1"]
    assert [r.id for r in journal.changed_since(0, 1)] == ["S2"]
    assert journal.latest_revision() == 3
    assert [r.id for r in journal.in_batch("")] == ["S1", "S2"]
    assert journal.in_batch("B-none") == []
    journal.close()
