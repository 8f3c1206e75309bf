"""The registers' webhooks and their outbox: what is still to be delivered, durably.

One SQLite file beside the journal (:data:`FILE`), kept by the rules of every pipos database
(offline_queue.sqlite: 0600, WAL, ``synchronous=FULL``, one transaction per operation). It
holds:

* each register's webhook: its URL and the token the register set it with (the key of the
  signature, terminal.app.webhooks; the token is in this 0600 file only, never logged);
* the journal revision the outbox has been fed up to (the durable cursor:
  :meth:`WebhookStore.enqueue` stores the events of a batch of journal changes and moves
  the cursor past them in the same commit, so a crash before it leaves the cursor where it
  was and the changes are read again; none is lost, none queued twice);
* per transaction, a digest of what a register sees of it as last queued (so a change that
  means nothing to a register, a batch closed, queues nothing, and a transaction's first
  final state is told apart from a later change of it);
* the outbox: one row per event and register, delivered in order per register (only the
  oldest undelivered one of a register is ever due), deleted once the register's URL
  answered 2xx, or once it has been retried for :data:`RETRY_FOR` seconds.

The file is created when a register first sets a webhook: a terminal whose registers never
do has none (:meth:`WebhookStore.exists`).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from offline_queue.sqlite import Faults, SqliteFile

from ..domain.errors import TerminalError
from ..domain.records import TxnRecord
from .journal import Journal, JournalError

__all__ = [
    "FILE",
    "FINAL",
    "RETRY_FOR",
    "UPDATED",
    "Delivery",
    "Endpoint",
    "JournalFeed",
    "NewEvent",
    "WebhookError",
    "WebhookStore",
    "drop_webhook",
]

#: The store's file name, in the terminal's data directory beside the journal.
log = logging.getLogger(__name__)

FILE: Final = "webhooks.sqlite3"
#: Seconds an event is retried before it is given up (Stripe retries for days; a register
#: that has been off for a day polls the transaction list instead).
RETRY_FOR: Final = 24 * 3600.0
SCHEMA_VERSION: Final = 1
#: The event types: a transaction's first final state, and any later change of it.
FINAL: Final = "transaction.final"
UPDATED: Final = "transaction.updated"

_CURSOR: Final = "journal_revision"


class WebhookError(TerminalError):
    """The webhook store's file (or the journal it reads) cannot be opened, read or
    written."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A register's webhook. `token` is the key of its signatures: never shown or logged."""

    register: str
    url: str
    token: str
    created_at: float
    updated_at: float

    def __repr__(self) -> str:
        return f"Endpoint(register={self.register!r}, url={self.url!r}, token=<hidden>)"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A journal change to queue: the transaction, its revision, the digest of what a
    register sees of it, and that view (the event's `data`)."""

    txn_id: str
    revision: int
    digest: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event due to one register: the body as queued (signed afresh at every attempt)
    and where its retries stand."""

    id: int
    register: str
    event_id: str
    body: str
    created_at: float
    attempts: int
    next_at: float
    last_error: str
    url: str
    token: str

    def __repr__(self) -> str:
        return (
            f"Delivery(id={self.id}, register={self.register!r}, event_id={self.event_id!r}, "
            f"attempts={self.attempts}, token=<hidden>)"
        )


class WebhookStore:
    """The webhooks and the outbox; thread-safe (the API's routes and the delivery worker)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: SqliteFile | None = None

    def exists(self) -> bool:
        """Whether a register has ever set a webhook on this terminal (the file exists)."""
        return self._file is not None or self.path.exists()

    def _open(self) -> SqliteFile:
        if self._file is None:
            db = SqliteFile(self.path, Faults("webhook store", WebhookError))
            try:
                with db.connection() as conn:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise WebhookError(
                        f"webhook store {self.path} has schema {version}, newer than this "
                        f"software ({SCHEMA_VERSION})"
                    )
                if version < SCHEMA_VERSION:
                    with db.write() as conn:
                        for statement in (
                            "CREATE TABLE IF NOT EXISTS endpoints (register TEXT PRIMARY KEY, "
                            "url TEXT NOT NULL, token TEXT NOT NULL, created_at REAL NOT NULL, "
                            "updated_at REAL NOT NULL)",
                            "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, "
                            "value INTEGER NOT NULL)",
                            "CREATE TABLE IF NOT EXISTS seen (txn_id TEXT PRIMARY KEY, "
                            "digest TEXT NOT NULL)",
                            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY "
                            "AUTOINCREMENT, register TEXT NOT NULL, event_id TEXT NOT NULL, "
                            "body TEXT NOT NULL, created_at REAL NOT NULL, "
                            "attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, "
                            "last_error TEXT NOT NULL DEFAULT '')",
                            "CREATE INDEX IF NOT EXISTS outbox_register ON outbox (register, id)",
                            f"PRAGMA user_version = {SCHEMA_VERSION}",
                        ):
                            conn.execute(statement)
            except BaseException:
                db.close()
                raise
            self._file = db
        return self._file

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._open().connection() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._open().write() as conn:
            yield conn

    # --- the registers' webhooks ---------------------------------------------------------

    def set_endpoint(
        self, register: str, url: str, token: str, now: float, *, journal_revision: int
    ) -> Endpoint:
        """Set (or replace) `register`'s webhook, in one commit. `journal_revision`: where
        the outbox starts being fed when this is the terminal's first webhook (the journal's
        latest revision: what happened before is not sent)."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO state (key, value) VALUES (?, ?)",
                (_CURSOR, journal_revision),
            )
            conn.execute(
                "INSERT INTO endpoints (register, url, token, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (register) DO UPDATE SET "
                "url = excluded.url, token = excluded.token, updated_at = excluded.updated_at",
                (register, url, token, now, now),
            )
        found = self.endpoint(register)
        assert found is not None
        return found

    def endpoint(self, register: str) -> Endpoint | None:
        if not self.exists():
            return None
        with self._read() as conn:
            row = conn.execute(
                "SELECT register, url, token, created_at, updated_at FROM endpoints "
                "WHERE register = ?",
                (register,),
            ).fetchone()
        if row is None:
            return None
        return Endpoint(str(row[0]), str(row[1]), str(row[2]), float(row[3]), float(row[4]))

    def delete_endpoint(self, register: str) -> int | None:
        """Remove `register`'s webhook and what it had still to receive, in one commit; how
        many undelivered events were dropped (None: it had no webhook)."""
        if not self.exists():
            return None
        with self._write() as conn:
            gone = conn.execute("DELETE FROM endpoints WHERE register = ?", (register,))
            if not gone.rowcount:
                return None
            dropped = conn.execute("DELETE FROM outbox WHERE register = ?", (register,))
            return int(dropped.rowcount)

    def pending(self, register: str) -> tuple[int, str]:
        """How many events wait for `register`, and the last error of the oldest ("")."""
        if not self.exists():
            return 0, ""
        with self._read() as conn:
            count = int(
                conn.execute(
                    "SELECT COUNT(*) FROM outbox WHERE register = ?", (register,)
                ).fetchone()[0]
            )
            head = conn.execute(
                "SELECT last_error FROM outbox WHERE register = ? ORDER BY id LIMIT 1",
                (register,),
            ).fetchone()
        return count, "" if head is None else str(head[0])

    # --- feeding the outbox ----------------------------------------------------------------

    def cursor(self) -> int | None:
        """The journal revision the outbox has been fed up to (None: no webhook was ever
        set, nothing to feed)."""
        if not self.exists():
            return None
        with self._read() as conn:
            row = conn.execute("SELECT value FROM state WHERE key = ?", (_CURSOR,)).fetchone()
        return None if row is None else int(row[0])

    def enqueue(self, events: Sequence[NewEvent], cursor: int, now: float) -> int:
        """Queue `events` for every register with a webhook and move the cursor to
        `cursor`, in one commit; how many deliveries were queued. An event whose digest is
        the one last queued for its transaction queues nothing; a transaction's first
        event is transaction.final, every later one transaction.updated."""
        created = datetime.fromtimestamp(now, UTC).isoformat()
        queued = 0
        with self._write() as conn:
            registers = [str(r[0]) for r in conn.execute("SELECT register FROM endpoints")]
            for event in events:
                row = conn.execute(
                    "SELECT digest FROM seen WHERE txn_id = ?", (event.txn_id,)
                ).fetchone()
                if row is not None and str(row[0]) == event.digest:
                    continue
                conn.execute(
                    "INSERT INTO seen (txn_id, digest) VALUES (?, ?) ON CONFLICT (txn_id) "
                    "DO UPDATE SET digest = excluded.digest",
                    (event.txn_id, event.digest),
                )
                event_id = f"evt_{event.txn_id}_{event.revision}"
                body = json.dumps(
                    {
                        "id": event_id,
                        "type": FINAL if row is None else UPDATED,
                        "created_at": created,
                        "data": dict(event.data),
                    },
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
                for register in registers:
                    conn.execute(
                        "INSERT INTO outbox (register, event_id, body, created_at, next_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (register, event_id, body, now, now),
                    )
                    queued += 1
            conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value",
                (_CURSOR, cursor),
            )
        return queued

    # --- delivering ----------------------------------------------------------------------

    def due(self, now: float) -> list[Delivery]:
        """The oldest undelivered event of each register, when its next attempt is due."""
        if not self.exists():
            return []
        with self._read() as conn:
            rows = conn.execute(
                "SELECT o.id, o.register, o.event_id, o.body, o.created_at, o.attempts, "
                "o.next_at, o.last_error, e.url, e.token FROM outbox o "
                "JOIN endpoints e ON e.register = o.register "
                "WHERE o.id IN (SELECT MIN(id) FROM outbox GROUP BY register) "
                "AND o.next_at <= ? ORDER BY o.id",
                (now,),
            ).fetchall()
        return [
            Delivery(
                id=int(r[0]),
                register=str(r[1]),
                event_id=str(r[2]),
                body=str(r[3]),
                created_at=float(r[4]),
                attempts=int(r[5]),
                next_at=float(r[6]),
                last_error=str(r[7]),
                url=str(r[8]),
                token=str(r[9]),
            )
            for r in rows
        ]

    def next_due(self) -> float | None:
        """When the next attempt of any register's oldest event is due (None: none waits)."""
        if not self.exists():
            return None
        with self._read() as conn:
            row = conn.execute(
                "SELECT MIN(next_at) FROM outbox "
                "WHERE id IN (SELECT MIN(id) FROM outbox GROUP BY register)"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delivered(self, delivery_id: int) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (delivery_id,))

    def failed(self, delivery_id: int, next_at: float, error: str) -> None:
        """Count a failed attempt and set when the next one is due, in one commit."""
        with self._write() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
                "WHERE id = ?",
                (next_at, error[:200], delivery_id),
            )

    def give_up(self, now: float, retry_for: float = RETRY_FOR) -> list[tuple[str, str]]:
        """Drop every event retried for `retry_for` seconds without a 2xx, in one commit;
        the (register, event id) of each dropped."""
        if not self.exists():
            return []
        with self._write() as conn:
            rows = conn.execute(
                "SELECT register, event_id FROM outbox WHERE created_at <= ? ORDER BY id",
                (now - retry_for,),
            ).fetchall()
            conn.execute("DELETE FROM outbox WHERE created_at <= ?", (now - retry_for,))
        return [(str(r[0]), str(r[1])) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class JournalFeed:
    """The journal's changes in revision order, read for the outbox (the journal numbers
    every write with a journal-wide, indexed revision: terminal.store.journal)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def latest(self) -> int:
        """The journal's latest revision (0: empty)."""
        try:
            return self.journal.latest_revision()
        except JournalError as exc:
            raise WebhookError(f"transaction journal cannot be read: {exc}") from exc

    def since(self, revision: int, limit: int) -> tuple[list[TxnRecord], int]:
        """Up to `limit` transactions written after `revision` (each as it is now), oldest
        change first, and the revision to continue from."""
        try:
            records = self.journal.changed_since(revision, limit)
        except JournalError as exc:
            raise WebhookError(f"transaction journal cannot be read: {exc}") from exc
        return records, (records[-1].revision if records else revision)

    def close(self) -> None:
        """Nothing of its own to close: the journal is the checkout's."""


def drop_webhook(store: WebhookStore, register: str) -> None:
    """A revoked register's webhook removed (its token no longer counts, so nothing more is
    signed with it). The revocation stands if this fails; the fault is logged."""
    try:
        store.delete_endpoint(register)
    except WebhookError as exc:
        log.error("webhook of revoked register %r not removed: %s", register, exc)
