"""The terminal's transaction journal: every sale, refund and void the merchant started.

One SQLite file (WAL, ``synchronous=FULL``): a result is committed, and so fsynced, before the
checkout publishes it, so a payment the merchant saw approved is on disk. The journal holds
what the merchant's list, the receipts and the totals need and nothing more: the PAN appears
only masked (first 6 + last 4); no track data, no full PAN, no expiry date. The card data an
offline payment needs for its later upload lives, encrypted, in the offline queue.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from offline_queue.sqlite import Faults, SqliteFile

from ..domain.errors import TerminalError
from ..domain.records import (
    DECLINED_AFTER_THE_FACT,
    Kind,
    Method,
    PaymentMethod,
    Stage,
    State,
    TotalsLine,
    TxnQuery,
    TxnRecord,
)

__all__ = ["BatchRow", "Journal", "JournalError", "TotalsLine", "TxnRecord"]

SCHEMA_VERSION: Final = 6


class JournalError(TerminalError):
    """The journal file is unusable (corrupt, wrong version) or a record is missing."""


_COLUMNS: Final = tuple(f.name for f in fields(TxnRecord))
_INT_COLUMNS: Final = {
    "amount",
    "currency",
    "refunded_amount",
    "revision",
    "tip_amount",
    "authorised_amount",
    "captured_amount",
}
_BOOL_COLUMNS: Final = frozenset({"voided", "outcome_unknown", "released"})
#: Schema 3: what schema 1 and 2 kept in a JSON column `extra`, as columns of their own.
_TYPED_EXTRA_COLUMNS: Final = {
    "method": "'card'",
    "qr_order_id": "''",
    "qr_payload": "''",
    "qr_kind": "''",
    "qr_scheme": "''",
    "outcome_unknown": "0",
}
#: The `extra` key schema 2 marked a refund with lost answer by.
_SCHEMA2_UNKNOWN_MARK: Final = "refund_outcome_unknown"
#: Columns added after schema 1, each by its own migration step.
#: Schema 6: a sale's tip, and what a pre-authorisation holds, captured and released.
_SCHEMA6_COLUMNS: Final = ("tip_amount", "authorised_amount", "captured_amount", "released")
_LATER_COLUMNS: Final = frozenset({"revision", *_TYPED_EXTRA_COLUMNS, *_SCHEMA6_COLUMNS})
#: Columns the journal derives from other records (Journal._derive); a write of a record
#: never sets them, so a stale copy of a sale cannot undo a refund or a void.
_DERIVED_COLUMNS: Final = frozenset(
    {"refunded_amount", "voided", "authorised_amount", "captured_amount", "released"}
)
_DERIVED_FROM_RECORDS: Final = """
    SELECT COALESCE(SUM(CASE WHEN kind = 'refund' AND state = 'approved' THEN amount END), 0),
           COALESCE(MAX(kind = 'void' AND state = 'approved'), 0)
    FROM transactions WHERE original_id = ?
"""
#: A pre-authorisation's held, captured and released amounts from its approved changes
#: (the hold's own approved amount is added by Journal._derive_hold): a capture releases
#: the rest of the hold, so it counts as released too.
_HOLD_FROM_RECORDS: Final = """
    SELECT COALESCE(SUM(CASE WHEN kind = 'increment' AND state = 'approved' THEN amount END), 0),
           COALESCE(SUM(CASE WHEN kind = 'capture' AND state = 'approved' THEN amount END), 0),
           COALESCE(MAX(kind IN ('capture', 'release') AND state = 'approved'), 0)
    FROM transactions WHERE original_id = ?
"""
#: Kinds that move no money in the totals: a hold, its increments and its release (its
#: capture is counted as a sale of the amount captured).
_NO_MONEY_KINDS: Final = frozenset({"preauth", "increment", "release"})
#: An offline sale still in the offline queue: approved offline, not sent (no host
#: reference), not declined by the bank. The bank does not know it yet, so no batch closed
#: with the bank includes it: it stays open until the batch after it is sent.
_WAITING_OFFLINE: Final = (
    "(kind = 'sale' AND state = 'approved_offline' AND host_ref = '' AND reason != ?)"
)
#: created_at (ISO 8601 with its UTC offset) as Unix seconds, whatever offset the clock gave.
_CREATED_UNIX: Final = "CAST(strftime('%s', created_at) AS INTEGER)"
#: The columns the merchant's search finds text in (TxnQuery.text).
_SEARCHED_TEXT: Final = ("id", "external_ref", "auth_code", "host_ref", "qr_order_id")


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One closed batch as the journal keeps it: the bank's totals, and (since schema 5)
    the end-of-day report as the merchant saw it when it was closed (None before)."""

    batch_id: str
    closed_at: str
    totals: list[dict[str, Any]]
    report: dict[str, Any] | None
    #: The batch's place in the journal's order of batches: the paging cursor.
    seq: int

    def to_json(self) -> dict[str, Any]:
        """As earlier releases listed a batch (GET /api/v1/totals `batches`)."""
        return {"batch_id": self.batch_id, "closed_at": self.closed_at, "totals": self.totals}


class Journal:
    """Thread-safe access to the journal file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # offline_queue.sqlite: the quick_check before anything is written, WAL and
        # synchronous=FULL (the WAL fsynced at every commit: an approved payment survives
        # power loss), every SQLite fault a JournalError.
        self._file = SqliteFile(self.path, Faults("transaction journal", JournalError))
        self._db = self._file.conn
        try:
            with self._file.connection():
                self._migrate()
        except BaseException:
            self._file.close()
            raise

    def _migrate(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # current: no write lock taken just to open the journal
        # One write transaction, the version read inside it: two processes opening an old
        # journal at once migrate it once (the second waits, then finds it done).
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"transaction journal {self.path} has schema {version}, newer than this "
                    f"software ({SCHEMA_VERSION})"
                )
            if version < 1:
                cols = ", ".join(
                    f"{name} INTEGER NOT NULL DEFAULT 0"
                    if name in _INT_COLUMNS or name in _BOOL_COLUMNS
                    else f"{name} TEXT NOT NULL DEFAULT ''"
                    for name in _COLUMNS
                    if name != "id" and name not in _LATER_COLUMNS
                )
                for statement in (
                    f"CREATE TABLE transactions (id TEXT PRIMARY KEY, {cols}, seq INTEGER)",
                    "CREATE INDEX transactions_created ON transactions (seq)",
                    "CREATE INDEX transactions_external ON transactions (external_ref)",
                    "CREATE TABLE batches (batch_id TEXT PRIMARY KEY, closed_at TEXT NOT NULL, "
                    "totals TEXT NOT NULL)",
                    "CREATE TABLE pending_reversals (idempotency_key TEXT PRIMARY KEY, "
                    "txn_id TEXT NOT NULL, created_at TEXT NOT NULL)",
                ):
                    db.execute(statement)
            if version < 2:
                # Existing rows get revisions in journal order, so they keep their order.
                # Refunded amounts and voids are derived from their records from now on:
                # worked out again here, which also mends a sale whose refund an older
                # version counted twice (its total was written apart from the refund).
                db.execute(
                    "ALTER TABLE transactions ADD COLUMN revision INTEGER NOT NULL DEFAULT 0"
                )
                db.execute("UPDATE transactions SET revision = seq")
                db.execute("CREATE INDEX transactions_revision ON transactions (revision)")
                db.execute("CREATE INDEX transactions_original ON transactions (original_id)")
                sales = db.execute(
                    "SELECT DISTINCT original_id FROM transactions WHERE original_id != ''"
                ).fetchall()
                for (sale_id,) in sales:
                    self._derive_sale(db, sale_id)
            if version < 3:
                self._type_extra(db, had_extra=version >= 1)
            if version < 4:
                # Schema 4: the merchant's acknowledgement of each offline sale the bank
                # declined after the fact (the banner goes once all are acknowledged). A
                # table of its own: acknowledging changes no transaction (no new revision,
                # nothing a register polling the list would take for a change of the sale).
                db.execute(
                    "CREATE TABLE decline_acknowledgements (txn_id TEXT PRIMARY KEY, "
                    "acknowledged_at TEXT NOT NULL)"
                )
            if version < 5:
                # Schema 5: a batch keeps the end-of-day report the merchant saw (written in
                # the same commit that closes it), and a number of its own for paging the
                # history (rowid is not stable across a VACUUM of a table like this one).
                db.execute("ALTER TABLE batches ADD COLUMN report TEXT NOT NULL DEFAULT ''")
                db.execute("ALTER TABLE batches ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
                earlier = db.execute(
                    "SELECT batch_id FROM batches ORDER BY closed_at, rowid"
                ).fetchall()
                for number, (batch_id,) in enumerate(earlier, start=1):
                    db.execute("UPDATE batches SET seq = ? WHERE batch_id = ?", (number, batch_id))
                db.execute("CREATE INDEX batches_seq ON batches (seq)")
            if version < 6:
                for name in _SCHEMA6_COLUMNS:
                    db.execute(
                        f"ALTER TABLE transactions ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0"
                    )
                # The reconciliation report reads one batch's transactions.
                db.execute("CREATE INDEX transactions_batch ON transactions (batch_id)")
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _type_extra(db: sqlite3.Connection, *, had_extra: bool) -> None:
        """Schema 3: the code-payment fields and the refund's lost-answer mark get columns of
        their own, filled from the JSON column `extra` of a schema 1 or 2 journal, which is
        then dropped."""
        for name, default in _TYPED_EXTRA_COLUMNS.items():
            kind = "INTEGER" if name in _BOOL_COLUMNS else "TEXT"
            db.execute(
                f"ALTER TABLE transactions ADD COLUMN {name} {kind} NOT NULL DEFAULT {default}"
            )
        if not had_extra:
            return
        for txn_id, extra_text in db.execute("SELECT id, extra FROM transactions").fetchall():
            extra = json.loads(extra_text or "{}")
            values = {
                name: str(extra[name])
                for name in _TYPED_EXTRA_COLUMNS
                if name != "outcome_unknown" and extra.get(name)
            }
            if extra.get(_SCHEMA2_UNKNOWN_MARK):
                values["outcome_unknown"] = "1"
            if values:
                assignments = ", ".join(f"{name} = ?" for name in values)
                db.execute(
                    f"UPDATE transactions SET {assignments} WHERE id = ?",  # noqa: S608
                    (*values.values(), txn_id),
                )
        if sqlite3.sqlite_version_info >= (3, 35):  # DROP COLUMN came with SQLite 3.35
            db.execute("ALTER TABLE transactions DROP COLUMN extra")
        # Older: the column stays, unread; inserts leave it at its default.

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE ... COMMIT, ROLLBACK when the block raises (offline_queue.sqlite).
        with self._file.write() as db:
            yield db

    @staticmethod
    def _row(row: sqlite3.Row) -> TxnRecord:
        values: dict[str, Any] = {name: row[name] for name in _COLUMNS}
        for name in _BOOL_COLUMNS:
            values[name] = bool(values[name])
        values["kind"] = Kind(values["kind"])
        values["method"] = Method(values["method"])
        values["state"] = State(values["state"])
        values["stage"] = Stage(values["stage"])
        return TxnRecord(**values)

    @staticmethod
    def _values(record: TxnRecord) -> dict[str, Any]:
        """The columns a write of `record` sets: all but the derived ones (_derive's)."""
        return {name: getattr(record, name) for name in _COLUMNS if name not in _DERIVED_COLUMNS}

    @staticmethod
    def _next_revision(db: sqlite3.Connection) -> int:
        # Inside a BEGIN IMMEDIATE transaction: no other writer can take the same number.
        return int(
            db.execute("SELECT COALESCE(MAX(revision), 0) + 1 FROM transactions").fetchone()[0]
        )

    def _derive(self, db: sqlite3.Connection, record: TxnRecord) -> None:
        """Work out again what `record` changes in another record, in the same transaction:
        a refund or a void changes its sale's refunded amount or voided flag; a
        pre-authorisation's approval, increments, capture and release what it holds."""
        if record.kind in ("refund", "void") and record.original_id:
            self._derive_sale(db, record.original_id)
        elif record.kind == "preauth":
            self._derive_hold(db, record.id)
        elif record.kind in ("increment", "capture", "release") and record.original_id:
            self._derive_hold(db, record.original_id)

    def _derive_hold(self, db: sqlite3.Connection, preauth_id: str) -> None:
        before = db.execute(
            "SELECT state, amount, authorised_amount, captured_amount, released "
            "FROM transactions WHERE id = ? AND kind = 'preauth'",
            (preauth_id,),
        ).fetchone()
        if before is None:
            return
        increments, captured, released = db.execute(_HOLD_FROM_RECORDS, (preauth_id,)).fetchone()
        own = int(before["amount"]) if before["state"] == "approved" else 0
        derived = (own + int(increments) if own else 0, int(captured), int(released))
        stored = (
            int(before["authorised_amount"]),
            int(before["captured_amount"]),
            int(before["released"]),
        )
        if stored != derived:  # unchanged (a change declined): the hold keeps its revision
            db.execute(
                "UPDATE transactions SET authorised_amount = ?, captured_amount = ?, "
                "released = ?, revision = ? WHERE id = ?",
                (*derived, self._next_revision(db), preauth_id),
            )

    def _derive_sale(self, db: sqlite3.Connection, sale_id: str) -> None:
        before = db.execute(
            "SELECT refunded_amount, voided FROM transactions WHERE id = ? AND kind = 'sale'",
            (sale_id,),
        ).fetchone()
        if before is None:
            return
        refunded, voided = db.execute(_DERIVED_FROM_RECORDS, (sale_id,)).fetchone()
        # Unchanged (a refund started, one declined): the sale keeps its revision.
        if (int(before[0]), int(before[1])) != (int(refunded), int(voided)):
            db.execute(
                "UPDATE transactions SET refunded_amount = ?, voided = ?, revision = ? "
                "WHERE id = ?",
                (int(refunded), int(voided), self._next_revision(db), sale_id),
            )

    def _reread(self, db: sqlite3.Connection, txn_id: str) -> TxnRecord:
        row = db.execute("SELECT * FROM transactions WHERE id = ?", (txn_id,)).fetchone()
        if row is None:
            raise JournalError(f"transaction {txn_id} is not in the journal")
        return self._row(row)

    def insert(self, record: TxnRecord) -> TxnRecord:
        """Add `record`; returns it as stored, with its first revision."""
        with self._write() as db:
            new = replace(record, revision=self._next_revision(db))
            values = self._values(new)
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM transactions").fetchone()[0]
            db.execute(
                f"INSERT INTO transactions ({names}, seq) VALUES ({marks}, ?)",  # noqa: S608
                (*values.values(), seq),
            )
            self._derive(db, new)
            return self._reread(db, new.id)

    def update(
        self,
        record: TxnRecord,
        *,
        reversal_key: str = "",
        expect: Callable[[TxnRecord], None] | None = None,
        **changes: Any,
    ) -> TxnRecord:
        """Apply `changes` to `record` as it is stored now, with what that changes in its
        sale, in one commit; returns it as stored, with a revision higher than any given out
        before. Only the fields in `changes` are written: a stale copy cannot undo what
        another writer changed meanwhile (a batch closed, a host reference copied). Derived
        fields (refunded amount, voided) are the journal's, never the caller's.

        `expect` is called with the stored record inside the write transaction and may
        refuse the change by raising (the checkout checks its move there, against what is
        stored, not against its copy). `reversal_key`: in the same commit, an idempotency
        key whose request must be undone (see :meth:`add_pending_reversal`), so a result
        never stands without its reversal."""
        if _DERIVED_COLUMNS & changes.keys():
            raise JournalError(
                f"{', '.join(sorted(_DERIVED_COLUMNS & changes.keys()))} are derived from the "
                "refund and void records, not written"
            )
        with self._write() as db:
            stored = self._reread(db, record.id)
            if expect is not None:
                expect(stored)
            new = replace(stored, **changes, revision=self._next_revision(db))
            values = {
                name: value
                for name, value in self._values(new).items()
                if name in changes or name == "revision"
            }
            assignments = ", ".join(f"{name} = ?" for name in values)
            db.execute(
                f"UPDATE transactions SET {assignments} WHERE id = ?",  # noqa: S608
                (*values.values(), record.id),
            )
            self._derive(db, new)
            if reversal_key:
                self._add_reversal(db, reversal_key, record.id, new.updated_at)
            return self._reread(db, record.id)

    def get(self, txn_id: str) -> TxnRecord | None:
        with self._file.connection() as db:
            row = db.execute("SELECT * FROM transactions WHERE id = ?", (txn_id,)).fetchone()
        return None if row is None else self._row(row)

    def find_external(self, external_ref: str) -> list[TxnRecord]:
        with self._file.connection() as db:
            rows = db.execute(
                "SELECT * FROM transactions WHERE external_ref = ? ORDER BY seq", (external_ref,)
            ).fetchall()
        return [self._row(r) for r in rows]

    def in_batch(self, batch_id: str) -> list[TxnRecord]:
        """The transactions of a batch ("": the open one), oldest first."""
        with self._file.connection() as db:
            rows = db.execute(
                "SELECT * FROM transactions WHERE batch_id = ? ORDER BY seq", (batch_id,)
            ).fetchall()
        return [self._row(r) for r in rows]

    def changed_since(
        self, revision: int, limit: int, *, after_id: str | None = None
    ) -> list[TxnRecord]:
        """Up to `limit` transactions written after `revision`, each as it is now, in the
        order of their last change, then of their id (the revision is journal-wide and
        indexed). With `after_id`, those at `revision` itself whose id sorts after it come
        first: one write gives many rows one revision (closing a batch), so a reader paging
        by revision alone would skip the rest of a revision cut by `limit`."""
        args: tuple[int | str, ...]
        if after_id is None:
            where, args = "revision > ?", (revision,)
        else:
            where = "revision >= ? AND (revision > ? OR id > ?)"
            args = (revision, revision, after_id)
        with self._file.connection() as db:
            rows = db.execute(
                f"SELECT * FROM transactions WHERE {where} ORDER BY revision, id LIMIT ?",  # noqa: S608
                (*args, limit),
            ).fetchall()
        return [self._row(r) for r in rows]

    def latest_revision(self) -> int:
        """The journal's highest revision (0: nothing written yet)."""
        with self._file.connection() as db:
            row = db.execute("SELECT COALESCE(MAX(revision), 0) FROM transactions").fetchone()
        return int(row[0])

    def recent(
        self, *, limit: int = 50, before_seq: int | None = None, kind: str | None = None
    ) -> list[TxnRecord]:
        """Newest first."""
        query = "SELECT * FROM transactions WHERE 1 = 1"
        args: list[Any] = []
        if before_seq is not None:
            query += " AND seq < ?"
            args.append(before_seq)
        if kind is not None:
            query += " AND kind = ?"
            args.append(kind)
        query += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._file.connection() as db:
            rows = db.execute(query, args).fetchall()
        return [self._row(r) for r in rows]

    def page(
        self,
        *,
        limit: int = 50,
        before: int | None = None,
        kind: str | None = None,
        external_ref: str | None = None,
        attention: bool = False,
        query: TxnQuery | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> tuple[list[TxnRecord], int | None]:
        """One page of the merchant's list, newest first, and the cursor of the next (older)
        page (None: this is the last). Every filter given must hold: `before` (a cursor this
        method gave: older than it), `kind`, `external_ref` (exactly), `attention` (offline
        sales the bank declined after the fact), `query` (the search: any of its criteria),
        `since` and `until` (Unix seconds: created at or after `since`, before `until`)."""
        where = ["1 = 1"]
        args: list[Any] = []
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if external_ref is not None:
            where.append("external_ref = ?")
            args.append(external_ref)
        if attention:
            where.append("kind = 'sale' AND state = 'approved_offline' AND reason = ?")
            args.append(DECLINED_AFTER_THE_FACT)
        if since is not None:
            where.append(f"{_CREATED_UNIX} >= ?")
            args.append(since)
        if until is not None:
            where.append(f"{_CREATED_UNIX} < ?")
            args.append(until)
        if query is not None and not query.everything:
            matches: list[str] = []
            if query.amounts:
                matches.append(f"amount IN ({', '.join('?' for _ in query.amounts)})")
                args.extend(query.amounts)
            if query.last4:
                matches.append("(masked_pan != '' AND substr(masked_pan, -4) = ?)")
                args.append(query.last4)
            if query.text:
                # instr(), not LIKE: what the merchant types is text, never a pattern.
                matches += [f"instr(lower({name}), ?) > 0" for name in _SEARCHED_TEXT]
                args.extend([query.text] * len(_SEARCHED_TEXT))
            where.append("(" + (" OR ".join(matches) or "0") + ")")
        sql = (
            f"SELECT * FROM transactions WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY seq DESC LIMIT ?"
        )
        with self._file.connection() as db:
            rows = db.execute(sql, (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [self._row(r) for r in rows], (int(rows[-1]["seq"]) if more else None)

    def declined_after_the_fact(self, *, unacknowledged: bool = False) -> list[TxnRecord]:
        """The offline sales the bank declined when they were sent (newest first); with
        `unacknowledged`, only those the merchant has not acknowledged yet."""
        query = (
            "SELECT * FROM transactions WHERE kind = 'sale' AND state = 'approved_offline' "
            "AND reason = ?"
        )
        if unacknowledged:
            query += " AND id NOT IN (SELECT txn_id FROM decline_acknowledgements)"
        query += " ORDER BY seq DESC"
        with self._file.connection() as db:
            rows = db.execute(query, (DECLINED_AFTER_THE_FACT,)).fetchall()
        return [self._row(r) for r in rows]

    def waiting_offline(self) -> list[TxnRecord]:
        """Every offline sale the journal still holds as waiting in the offline queue
        (approved offline with its queue id, no host reference, not declined by the bank),
        oldest first, however many newer transactions there are: each is asked of the
        queue after a sync, so none the bank has got stays unmarked."""
        with self._file.connection() as db:
            rows = db.execute(
                f"SELECT * FROM transactions WHERE {_WAITING_OFFLINE} "  # noqa: S608
                "AND offline_id != '' ORDER BY seq",
                (DECLINED_AFTER_THE_FACT,),
            ).fetchall()
        return [self._row(r) for r in rows]

    def acknowledge_declines(self, now: str) -> int:
        """Record, in one commit, that the merchant has seen every after-the-fact decline
        journalled so far; returns how many were newly acknowledged. A decline journalled
        later is not covered: it shows the banner again."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO decline_acknowledgements (txn_id, acknowledged_at) "
                "SELECT id, ? FROM transactions WHERE kind = 'sale' "
                "AND state = 'approved_offline' AND reason = ?",
                (now, DECLINED_AFTER_THE_FACT),
            )
            return int(cursor.rowcount)

    def unfinished(self) -> list[TxnRecord]:
        with self._file.connection() as db:
            rows = db.execute(
                "SELECT * FROM transactions WHERE state = 'in_progress' ORDER BY seq"
            ).fetchall()
        return [self._row(r) for r in rows]

    def unsettled(self, kind: str) -> list[TxnRecord]:
        """The records of `kind` that failed with their answer lost (the bank may have done
        them), oldest first: settled under their own idempotency key."""
        with self._file.connection() as db:
            rows = db.execute(
                "SELECT * FROM transactions WHERE kind = ? AND state = 'failed' "
                "AND outcome_unknown = 1 ORDER BY seq",
                (str(kind),),
            ).fetchall()
        return [self._row(r) for r in rows]

    def find_original(self, original_id: str) -> list[TxnRecord]:
        """The refunds and voids of one sale, oldest first."""
        with self._file.connection() as db:
            rows = db.execute(
                "SELECT * FROM transactions WHERE original_id = ? ORDER BY seq", (original_id,)
            ).fetchall()
        return [self._row(r) for r in rows]

    # --- reversals a lost host response left to do -------------------------------------

    def add_pending_reversal(self, idempotency_key: str, txn_id: str, now: str) -> None:
        """Keep `idempotency_key` until its reversal (or order cancel) is acknowledged."""
        with self._write() as db:
            self._add_reversal(db, idempotency_key, txn_id, now)

    @staticmethod
    def _add_reversal(db: sqlite3.Connection, idempotency_key: str, txn_id: str, now: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO pending_reversals VALUES (?, ?, ?)",
            (idempotency_key, txn_id, now),
        )

    def pending_reversals(self) -> list[tuple[str, str]]:
        with self._file.connection() as db:
            rows = db.execute(
                "SELECT idempotency_key, txn_id FROM pending_reversals ORDER BY created_at"
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def reversal_done(self, idempotency_key: str) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM pending_reversals WHERE idempotency_key = ?", (idempotency_key,)
            )

    # --- totals ------------------------------------------------------------------------

    def open_totals(self, *, waiting: bool = True) -> list[TotalsLine]:
        """Totals of the open batch per brand, currency and method: sales approved (online,
        or offline and not declined by the bank after the fact), less none of their refunds
        (counted apart: approved refunds); voided sales and the voids themselves are out,
        and so is anything declined, cancelled, failed or still running.

        `offline_count` / `offline_amount`: of those sales, the ones still waiting in the
        offline queue. `waiting=False` leaves them out altogether: the totals the bank can
        know (what end of day compares with the bank's)."""
        with self._file.connection() as db:
            rows = db.execute(
                "SELECT kind, state, brand, currency, amount, voided, reason, host_ref, "
                "method, entry_mode FROM transactions "
                "WHERE batch_id = '' AND state IN ('approved', 'approved_offline')"
            ).fetchall()
        lines: dict[tuple[str, int], dict[str, int]] = {}
        methods: dict[tuple[str, int], PaymentMethod] = {}
        for r in rows:
            if r["kind"] == "void" or r["voided"] or r["kind"] in _NO_MONEY_KINDS:
                continue
            offline = r["kind"] == "sale" and r["state"] == "approved_offline"
            if offline and r["reason"] == DECLINED_AFTER_THE_FACT:
                continue  # the bank declined it when it was sent: no money came in
            still_waiting = offline and not r["host_ref"]
            if still_waiting and not waiting:
                continue
            key = (r["brand"] or "UNKNOWN", int(r["currency"]))
            by_code = r["method"] == Method.MERCHANT_QR or str(r["entry_mode"]).startswith("qr")
            methods.setdefault(key, "code" if by_code else "card")
            line = lines.setdefault(key, {})
            if r["kind"] == "refund":
                line["refunds_count"] = line.get("refunds_count", 0) + 1
                line["refunds_amount"] = line.get("refunds_amount", 0) + int(r["amount"])
            else:
                line["sales_count"] = line.get("sales_count", 0) + 1
                line["sales_amount"] = line.get("sales_amount", 0) + int(r["amount"])
                if still_waiting:
                    line["offline_count"] = line.get("offline_count", 0) + 1
                    line["offline_amount"] = line.get("offline_amount", 0) + int(r["amount"])
        return [
            TotalsLine(brand, cur, **counts, method=methods[(brand, cur)])
            for (brand, cur), counts in sorted(lines.items())
        ]

    def close_batch(
        self,
        batch_id: str,
        closed_at: str,
        totals: list[dict[str, Any]],
        report: dict[str, Any] | None = None,
    ) -> int:
        """Mark every finished transaction of the open batch as part of `batch_id`, and keep
        the batch's totals and end-of-day `report`, in one commit (a crash leaves the batch
        open, or closed with its report: history shows the report as the merchant saw it).
        Offline sales still waiting in the queue stay open: the bank has not got them, so
        they belong to the batch after they are sent. Returns how many were marked."""
        with self._write() as db:
            close = (
                "UPDATE transactions SET batch_id = ?, revision = ? WHERE batch_id = '' "  # noqa: S608
                f"AND state != 'in_progress' AND NOT {_WAITING_OFFLINE}"
            )
            cursor = db.execute(close, (batch_id, self._next_revision(db), DECLINED_AFTER_THE_FACT))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches").fetchone()[0]
            db.execute(
                "INSERT INTO batches (batch_id, closed_at, totals, report, seq) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    batch_id,
                    closed_at,
                    json.dumps(totals, sort_keys=True),
                    "" if report is None else json.dumps(report, sort_keys=True),
                    seq,
                ),
            )
        return cursor.rowcount

    @staticmethod
    def _batch(row: sqlite3.Row) -> BatchRow:
        return BatchRow(
            batch_id=row["batch_id"],
            closed_at=row["closed_at"],
            totals=json.loads(row["totals"]),
            report=json.loads(row["report"]) if row["report"] else None,
            seq=int(row["seq"]),
        )

    def batches(self, *, limit: int | None = None, before: int | None = None) -> list[BatchRow]:
        """Closed batches, newest first; `before`: older than that batch's `seq`."""
        sql = "SELECT * FROM batches"
        args: list[Any] = []
        if before is not None:
            sql += " WHERE seq < ?"
            args.append(before)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._file.connection() as db:
            rows = db.execute(sql, args).fetchall()
        return [self._batch(r) for r in rows]

    def batch(self, batch_id: str) -> BatchRow | None:
        with self._file.connection() as db:
            row = db.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return None if row is None else self._batch(row)

    def close(self) -> None:
        self._file.close()
