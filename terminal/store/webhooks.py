"""The registers' webhooks and their outbox: what is still to be delivered, durably.

One SQLite file beside the journal (:data:`FILE`), kept by the rules of every pipos database
(offline_queue.sqlite: 0600, WAL, ``synchronous=FULL``, one transaction per operation), with
``secure_delete`` on (a removed webhook leaves no copy of its key in the file's free pages).
It holds:

* each register's webhook: its URL, its signing key and the journal revision it was first
  set at (nothing written up to that revision is sent to that register). The signing key is
  derived from the register's token, :func:`signing_key`: HMAC-SHA256 with the token as the
  key over ``b"pipos-webhook-v1"``; the register works out the same key from its token
  (docs/api.md, "Webhooks"). The token itself is never stored here: a copy of this file can
  sign webhooks, not make API requests. (A schema 1 file kept the tokens in clear: opening
  it converts them in place, in one commit, and checkpoints the WAL so no page keeps them.)
* the durable cursor (:class:`JournalCursor`): the revision and id of the last journal row
  the outbox has been fed with. :meth:`WebhookStore.enqueue` stores the events of a page of
  journal changes and moves the cursor past them in the same commit, so a crash before it
  leaves the cursor where it was and the changes are read again; none is lost, none queued
  twice. Paged by (revision, id), not revision alone: closing a batch gives every row of it
  one revision, and however many there are, none is skipped.
* per transaction, the digest of its record as last seen finished (:func:`record_digest`:
  what a register sees change, so not the batch it was closed in, its revision, stage or
  update time). A write that changes nothing a register sees (closing the batch) queues
  nothing, and a transaction's first final state (transaction.final) is told apart from a
  later change of it (transaction.updated). The first webhook set on a terminal records the
  digest of every transaction already finished (:meth:`WebhookStore.set_endpoint`): what
  ended before any register asked is never sent, not even when the end of day writes it
  again.
* the outbox: one row per event and register, delivered in order per register (only the
  oldest undelivered one of a register is ever due), deleted once the register's URL
  answered 2xx, or once it has been retried for :data:`RETRY_FOR` seconds.

The file is created when a register first sets a webhook: a terminal whose registers never
do has none (:meth:`WebhookStore.exists`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

from offline_queue.sqlite import Faults, SqliteFile

from ..domain.errors import TerminalError
from ..domain.records import TxnRecord
from .journal import Journal, JournalError

__all__ = [
    "FILE",
    "FINAL",
    "RETRY_FOR",
    "SIGNING_KEY_LABEL",
    "UPDATED",
    "Delivery",
    "Endpoint",
    "JournalCursor",
    "JournalFeed",
    "NewEvent",
    "WebhookError",
    "WebhookStore",
    "drop_webhook",
    "record_digest",
    "signing_key",
]

log = logging.getLogger(__name__)

#: The store's file name, in the terminal's data directory beside the journal.
FILE: Final = "webhooks.sqlite3"
#: Seconds an event is retried before it is given up (Stripe retries for days; a register
#: that has been off for a day polls the transaction list instead).
RETRY_FOR: Final = 24 * 3600.0
#: 2: signing keys derived from the tokens instead of the tokens; the cursor with an id.
SCHEMA_VERSION: Final = 2
#: The event types: a transaction's first final state, and any later change of it.
FINAL: Final = "transaction.final"
UPDATED: Final = "transaction.updated"
#: What a register's token is HMAC'd over to give its webhook signing key.
SIGNING_KEY_LABEL: Final = b"pipos-webhook-v1"
#: Journal rows read per page when the digests of finished transactions are recorded.
_SNAPSHOT_PAGE: Final = 500
#: What a register does not see change in a transaction's record: a write that only moves
#: these (the end of day closing the batch gives each row a new revision) is no event.
_NOT_A_CHANGE: Final = frozenset({"revision", "updated_at", "batch_id", "stage"})

_ENDPOINTS: Final = (
    "CREATE TABLE {name} (register TEXT PRIMARY KEY, url TEXT NOT NULL, "
    "signing_key BLOB NOT NULL, from_revision INTEGER NOT NULL, created_at REAL NOT NULL, "
    "updated_at REAL NOT NULL)"
)
#: One row once a webhook was ever set: the cursor, and whether the digests of the
#: transactions it has passed are still to be recorded again (after the schema 1 upgrade).
_FEED: Final = (
    "CREATE TABLE feed (one INTEGER PRIMARY KEY CHECK (one = 1), revision INTEGER NOT NULL, "
    "txn_id TEXT NOT NULL, redigest INTEGER NOT NULL DEFAULT 0)"
)
_SCHEMA: Final = (
    _ENDPOINTS.format(name="endpoints"),
    _FEED,
    "CREATE TABLE seen (txn_id TEXT PRIMARY KEY, digest TEXT NOT NULL)",
    "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, register TEXT NOT NULL, "
    "event_id TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL, "
    "attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, "
    "last_error TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX outbox_register ON outbox (register, id)",
)


def signing_key(token: str) -> bytes:
    """A register's webhook signing key: HMAC-SHA256(key=token as UTF-8, msg=
    :data:`SIGNING_KEY_LABEL`), 32 bytes. The register derives the same from its token."""
    return hmac.new(token.encode("utf-8"), SIGNING_KEY_LABEL, hashlib.sha256).digest()


def record_digest(record: TxnRecord) -> str:
    """The SHA-256 of what a register sees of `record` (its fields less :data:`_NOT_A_CHANGE`):
    equal digests, no change worth an event."""
    shown = {k: v for k, v in record.to_json().items() if k not in _NOT_A_CHANGE}
    text = json.dumps(shown, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JournalCursor(NamedTuple):
    """A place in the journal's order of changes: after the row `txn_id` of `revision`
    ("": before every row of it)."""

    revision: int
    txn_id: str


class WebhookError(TerminalError):
    """The webhook store's file (or the journal it reads) cannot be opened, read or
    written."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A register's webhook. `signing_key` signs its events: never shown or logged.
    `from_revision`: the journal's revision when it was first set (nothing written up to it
    is sent to this register)."""

    register: str
    url: str
    signing_key: bytes
    from_revision: int
    created_at: float
    updated_at: float

    def __repr__(self) -> str:
        return f"Endpoint(register={self.register!r}, url={self.url!r}, signing_key=<hidden>)"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A journal change to queue: the transaction, its revision, the digest of its record
    (:func:`record_digest`), and the transaction as the API shows it (the event's `data`)."""

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
    signing_key: bytes

    def __repr__(self) -> str:
        return (
            f"Delivery(id={self.id}, register={self.register!r}, event_id={self.event_id!r}, "
            f"attempts={self.attempts}, signing_key=<hidden>)"
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
            db = SqliteFile(self.path, Faults("webhook store", WebhookError), secure_delete=True)
            try:
                with db.connection() as conn:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise WebhookError(
                        f"webhook store {self.path} has schema {version}, newer than this "
                        f"software ({SCHEMA_VERSION})"
                    )
                if version < SCHEMA_VERSION:
                    self._migrate(db)
            except BaseException:
                db.close()
                raise
            self._file = db
        return self._file

    def _migrate(self, db: SqliteFile) -> None:
        """Bring the file to :data:`SCHEMA_VERSION` in one commit (the version read again
        inside it: two processes opening it at once migrate it once)."""
        with db.write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
            elif version == 1:
                self._from_schema_1(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if version == 1 and not db.checkpoint():
            # The clear tokens' old pages stay in the WAL until a later checkpoint gets
            # through (SQLite's own, at the next commits).
            log.warning("webhook store %s: WAL not checkpointed after the upgrade", self.path)

    @staticmethod
    def _from_schema_1(conn: sqlite3.Connection) -> None:
        """Schema 1 kept each register's token in clear and the cursor as a revision only:
        the tokens become their signing keys (the table rebuilt: secure_delete zeroes the
        old one's pages), and the cursor restarts at the start of its revision, with the
        digests of what it had passed recorded again by the worker (:meth:`redigest`): the
        digests of schema 1 were of another form."""
        conn.execute(_ENDPOINTS.format(name="endpoints_v2"))
        rows = conn.execute(
            "SELECT register, url, token, created_at, updated_at FROM endpoints"
        ).fetchall()
        for register, url, token, created_at, updated_at in rows:
            conn.execute(
                "INSERT INTO endpoints_v2 (register, url, signing_key, from_revision, "
                "created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?)",
                (register, url, signing_key(str(token)), created_at, updated_at),
            )
        conn.execute("DROP TABLE endpoints")
        conn.execute("ALTER TABLE endpoints_v2 RENAME TO endpoints")
        conn.execute(_FEED)
        old = conn.execute("SELECT value FROM state WHERE key = 'journal_revision'").fetchone()
        if old is not None:
            conn.execute(
                "INSERT INTO feed (one, revision, txn_id, redigest) VALUES (1, ?, '', 1)",
                (int(old[0]),),
            )
        conn.execute("DROP TABLE state")

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
        self, register: str, url: str, token: str, now: float, *, feed: JournalFeed
    ) -> Endpoint:
        """Set (or replace) `register`'s webhook, signed from now on with the key derived
        from `token` (:func:`signing_key`; the token is not kept), in one commit. The
        register gets what is written to the journal after `feed`'s latest revision. The
        terminal's first webhook also starts the outbox's cursor there, with the digest of
        every transaction already finished: none of them is ever sent as final."""
        snapshot = self._finished(feed) if self.cursor() is None else None
        from_revision = feed.latest() if snapshot is None else snapshot[1].revision
        with self._write() as conn:
            started = conn.execute("SELECT 1 FROM feed").fetchone() is not None
            if snapshot is not None and not started:  # else another caller started it first
                digests, upto = snapshot
                self._record_digests(conn, digests.items())
                conn.execute(
                    "INSERT INTO feed (one, revision, txn_id) VALUES (1, ?, ?)",
                    (upto.revision, upto.txn_id),
                )
            conn.execute(
                "INSERT INTO endpoints (register, url, signing_key, from_revision, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (register) DO UPDATE SET "
                "url = excluded.url, signing_key = excluded.signing_key, "
                "updated_at = excluded.updated_at",
                (register, url, signing_key(token), from_revision, now, now),
            )
        found = self.endpoint(register)
        assert found is not None
        return found

    def endpoint(self, register: str) -> Endpoint | None:
        if not self.exists():
            return None
        with self._read() as conn:
            row = conn.execute(
                "SELECT register, url, signing_key, from_revision, created_at, updated_at "
                "FROM endpoints WHERE register = ?",
                (register,),
            ).fetchone()
        if row is None:
            return None
        return Endpoint(
            str(row[0]), str(row[1]), bytes(row[2]), int(row[3]), float(row[4]), float(row[5])
        )

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

    def cursor(self) -> JournalCursor | None:
        """Where in the journal the outbox has been fed up to (None: no webhook was ever
        set, nothing to feed)."""
        if not self.exists():
            return None
        with self._read() as conn:
            row = conn.execute("SELECT revision, txn_id FROM feed").fetchone()
        return None if row is None else JournalCursor(int(row[0]), str(row[1]))

    def digests(self, txn_ids: Iterable[str]) -> dict[str, str]:
        """The digest last recorded of each of `txn_ids` that has one."""
        wanted = list(txn_ids)
        found: dict[str, str] = {}
        if not wanted or not self.exists():
            return found
        with self._read() as conn:
            for start in range(0, len(wanted), _SNAPSHOT_PAGE):
                chunk = wanted[start : start + _SNAPSHOT_PAGE]
                marks = ", ".join("?" * len(chunk))
                found.update(
                    (str(r[0]), str(r[1]))
                    for r in conn.execute(
                        f"SELECT txn_id, digest FROM seen WHERE txn_id IN ({marks})",  # noqa: S608
                        chunk,
                    )
                )
        return found

    def redigest_owed(self) -> bool:
        """Whether the digests of what the cursor has passed are still to be recorded again
        (a schema 1 file upgraded): :meth:`redigest`, before the outbox is fed."""
        if not self.exists():
            return False
        with self._read() as conn:
            row = conn.execute("SELECT redigest FROM feed").fetchone()
        return row is not None and bool(row[0])

    def redigest(self, feed: JournalFeed) -> int:
        """Record again the digest of every finished transaction the cursor has passed, in
        one commit (their digests of schema 1 were of another form, and one that ended
        before the first webhook had none: either would be sent again at the next end of
        day); how many."""
        cursor = self.cursor()
        if cursor is None:
            return 0
        digests, _ = self._finished(feed, upto=cursor.revision)
        with self._write() as conn:
            self._record_digests(conn, digests.items())
            conn.execute("UPDATE feed SET redigest = 0")
        return len(digests)

    @staticmethod
    def _finished(
        feed: JournalFeed, upto: int | None = None
    ) -> tuple[dict[str, str], JournalCursor]:
        """The digest of every finished transaction in the journal (changed up to revision
        `upto`: all), and where the reading ended."""
        digests: dict[str, str] = {}
        cursor = JournalCursor(0, "")
        while True:
            records, after = feed.since(cursor, _SNAPSHOT_PAGE)
            for record in records:
                if upto is not None and record.revision > upto:
                    return digests, cursor
                if record.finished:
                    digests[record.id] = record_digest(record)
                cursor = JournalCursor(record.revision, record.id)
            if not records:
                return digests, after

    @staticmethod
    def _record_digests(conn: sqlite3.Connection, digests: Iterable[tuple[str, str]]) -> None:
        conn.executemany(
            "INSERT INTO seen (txn_id, digest) VALUES (?, ?) ON CONFLICT (txn_id) "
            "DO UPDATE SET digest = excluded.digest",
            digests,
        )

    def enqueue(self, events: Sequence[NewEvent], cursor: JournalCursor, now: float) -> int:
        """Queue `events` for every register with a webhook set before each, and move the
        cursor to `cursor`, in one commit; how many deliveries were queued. An event whose
        digest is the one last recorded for its transaction queues nothing; a transaction's
        first event is transaction.final, every later one transaction.updated."""
        created = datetime.fromtimestamp(now, UTC).isoformat()
        queued = 0
        with self._write() as conn:
            registers = [
                (str(r[0]), int(r[1]))
                for r in conn.execute("SELECT register, from_revision FROM endpoints")
            ]
            for event in events:
                row = conn.execute(
                    "SELECT digest FROM seen WHERE txn_id = ?", (event.txn_id,)
                ).fetchone()
                if row is not None and str(row[0]) == event.digest:
                    continue
                self._record_digests(conn, [(event.txn_id, event.digest)])
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
                for register, from_revision in registers:
                    if event.revision <= from_revision:
                        continue  # written before this register set its webhook
                    conn.execute(
                        "INSERT INTO outbox (register, event_id, body, created_at, next_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (register, event_id, body, now, now),
                    )
                    queued += 1
            conn.execute(
                "UPDATE feed SET revision = ?, txn_id = ?", (cursor.revision, cursor.txn_id)
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
                "o.next_at, o.last_error, e.url, e.signing_key FROM outbox o "
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
                signing_key=bytes(r[9]),
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

    def since(self, cursor: JournalCursor, limit: int) -> tuple[list[TxnRecord], JournalCursor]:
        """Up to `limit` transactions written after `cursor` (each as it is now), in the
        journal's order of changes (revision, then id), and the cursor to continue from."""
        try:
            records = self.journal.changed_since(cursor.revision, limit, after_id=cursor.txn_id)
        except JournalError as exc:
            raise WebhookError(f"transaction journal cannot be read: {exc}") from exc
        if not records:
            return records, cursor
        return records, JournalCursor(records[-1].revision, records[-1].id)

    def close(self) -> None:
        """Nothing of its own to close: the journal is the checkout's."""


def drop_webhook(store: WebhookStore, register: str) -> None:
    """A revoked register's webhook removed (its token no longer counts, so nothing more is
    signed with the key derived from it). The revocation stands if this fails; the fault is
    logged."""
    try:
        store.delete_endpoint(register)
    except WebhookError as exc:
        log.error("webhook of revoked register %r not removed: %s", register, exc)
