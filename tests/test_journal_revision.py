"""The journal numbers every change: a transaction's revision is higher after each write than
any revision given out before, on it or on any other transaction, and survives a restart; a
schema-1 journal is migrated with revisions in the order its transactions were made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from terminal.transactions import _COLUMNS, _INT_COLUMNS, Journal, TxnRecord


def _sale(txn_id: str) -> TxnRecord:
    return TxnRecord(
        id=txn_id,
        kind="sale",
        state="in_progress",
        amount=1000,
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


def test_a_schema_1_journal_gets_revisions_in_journal_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    # The journal as schema 1 made it: the same columns less `revision`.
    old_columns = [name for name in _COLUMNS if name not in ("id", "revision")]
    cols = ", ".join(
        f"{name} INTEGER NOT NULL DEFAULT 0"
        if name in _INT_COLUMNS or name == "voided"
        else f"{name} TEXT NOT NULL DEFAULT ''"
        for name in old_columns
    )
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        f"""
        CREATE TABLE transactions (id TEXT PRIMARY KEY, {cols}, seq INTEGER);
        CREATE INDEX transactions_created ON transactions (seq);
        CREATE INDEX transactions_external ON transactions (external_ref);
        CREATE TABLE batches (batch_id TEXT PRIMARY KEY, closed_at TEXT NOT NULL,
                              totals TEXT NOT NULL);
        CREATE TABLE pending_reversals (idempotency_key TEXT PRIMARY KEY,
                                        txn_id TEXT NOT NULL, created_at TEXT NOT NULL);
        INSERT INTO transactions (id, kind, state, amount, currency, seq, extra)
            VALUES ('S-old', 'sale', 'approved', 500, 978, 1, '{{}}'),
                   ('S-new', 'sale', 'approved', 700, 978, 2, '{{}}');
        PRAGMA user_version = 1;
        """
    )
    db.close()

    journal = Journal(path)
    old, new = journal.get("S-old"), journal.get("S-new")
    assert old is not None
    assert new is not None
    assert (old.revision, new.revision) == (1, 2)
    assert journal.update(old, reason="after the upgrade").revision == 3
    journal.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
