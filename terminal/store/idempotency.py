"""The answers the terminal gave to requests that move money, kept by their Idempotency-Key.

A cash register that sends a sale, a refund, a void, a cancel or an end of day with an
``Idempotency-Key`` header and loses the answer (a cable pulled, a timeout, its own crash)
sends the same request again with the same key: the terminal answers with what it answered
the first time and does nothing twice (Stripe's semantics; docs/api.md, "Idempotency").

One SQLite file beside the journal, kept by the rules of every pipos database
(offline_queue.sqlite: 0600, WAL, ``synchronous=FULL``, one transaction per write): a key is
claimed in one commit before the request is processed, and its answer stored in another once
it is, so the answer survives a restart. A key is the register's own (the caller's name is
its scope: two registers never see each other's keys) and is kept :data:`RETENTION` seconds
at least; older keys are purged when the store is first used after a start and at most once
every :data:`PURGE_EVERY` seconds after that.

What is stored: the request's fingerprint (:func:`fingerprint`: SHA-256 of the method, the
path and the body as canonical JSON, without the merchant PIN, which is a credential checked
again on every attempt, never a parameter to compare), the answer's status code, its JSON
body (which never holds a PIN or card data beyond the masked PAN of a transaction's view),
and the id of the transaction it answered with. The file is created by the first request
that carries a key: a terminal whose register never sends one has none.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from offline_queue.sqlite import Faults, SqliteFile

from ..domain.errors import TerminalError

__all__ = [
    "FILE",
    "PURGE_EVERY",
    "RETENTION",
    "Claim",
    "ClaimKind",
    "IdempotencyError",
    "IdempotencyStore",
    "StoredAnswer",
    "fingerprint",
]

#: The store's file name, in the terminal's data directory beside the journal.
FILE: Final = "idempotency.sqlite3"
#: Seconds a key is kept at least (Stripe keeps 24 hours): a register's retry comes within
#: seconds or minutes; a day covers a register switched off overnight with a request unsent.
RETENTION: Final = 24 * 3600.0
#: Seconds between purges of the keys older than RETENTION while the terminal runs.
PURGE_EVERY: Final = 3600.0
SCHEMA_VERSION: Final = 1

_RUNNING: Final = "running"
_DONE: Final = "done"


class IdempotencyError(TerminalError):
    """The store's file cannot be opened, read or written (damaged, disk full, newer)."""


def fingerprint(method: str, path: str, body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the request: its method, its path and its body as canonical JSON
    (keys sorted, no spaces, ASCII). Two requests that mean the same thing have the same
    fingerprint; any other body or path another one."""
    canonical = json.dumps(
        [method.upper(), path, dict(body)],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The first answer to a key: its status code, its JSON body, and the transaction it
    was about ("" when none)."""

    status: int
    body: dict[str, Any]
    transaction_id: str


class ClaimKind(StrEnum):
    #: The key is new (or expired): this request is processed, and its answer stored.
    NEW = "new"
    #: The same request was answered before: answer it again (`Claim.answer`).
    REPLAY = "replay"
    #: The key was used for another request (another body or path).
    REUSED = "reused"
    #: The first request with this key is still being processed.
    IN_PROGRESS = "in_progress"
    #: The first request with this key was being processed when the terminal stopped (a
    #: power cut, a crash): what it did is in the journal, its answer was never stored.
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class Claim:
    kind: ClaimKind
    answer: StoredAnswer | None = None


class IdempotencyStore:
    """The keys and their answers; thread-safe (the API's requests run on a thread pool).

    `clock`: Unix seconds (injected, so the retention is tested with a moved clock)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        retention: float = RETENTION,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self.retention = retention
        self._lock = threading.Lock()
        self._file: SqliteFile | None = None
        self._purged_at: float | None = None
        #: The keys this process is processing now. A key stored running that is not here
        #: was being processed by an earlier run of the terminal, which stopped.
        self._inflight: set[tuple[str, str]] = set()

    def _open(self) -> SqliteFile:
        if self._file is None:
            db = SqliteFile(self.path, Faults("idempotency store", IdempotencyError))
            try:
                with db.connection() as conn:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise IdempotencyError(
                        f"idempotency store {self.path} has schema {version}, newer than "
                        f"this software ({SCHEMA_VERSION})"
                    )
                if version < SCHEMA_VERSION:
                    with db.write() as conn:
                        conn.execute(
                            "CREATE TABLE IF NOT EXISTS keys (scope TEXT NOT NULL, "
                            "key TEXT NOT NULL, fingerprint TEXT NOT NULL, state TEXT NOT NULL, "
                            "status INTEGER NOT NULL DEFAULT 0, body TEXT NOT NULL DEFAULT '', "
                            "transaction_id TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, "
                            "PRIMARY KEY (scope, key))"
                        )
                        conn.execute("CREATE INDEX IF NOT EXISTS keys_created ON keys (created_at)")
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                db.close()
                raise
            self._file = db
        return self._file

    def _purge_due(self, conn: Any, now: float) -> None:
        """Delete the expired keys (in the caller's write transaction) when a purge is due."""
        if self._purged_at is not None and now - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = now
        conn.execute(
            "DELETE FROM keys WHERE created_at < ? AND state = ?", (now - self.retention, _DONE)
        )
        # A key still running from an earlier run is kept as long as a finished one, then
        # purged the same way; one this process is processing is never purged under it.
        stale = [
            (r[0], r[1])
            for r in conn.execute(
                "SELECT scope, key FROM keys WHERE created_at < ?", (now - self.retention,)
            )
            if (r[0], r[1]) not in self._inflight
        ]
        conn.executemany("DELETE FROM keys WHERE scope = ? AND key = ?", stale)

    def purge(self) -> int:
        """Delete every key older than the retention now; how many were deleted."""
        with self._lock:
            db = self._open()
            now = self._clock()
            with db.connection() as conn:
                before = int(conn.execute("SELECT COUNT(*) FROM keys").fetchone()[0])
            self._purged_at = None
            with db.write() as conn:
                self._purge_due(conn, now)
            with db.connection() as conn:
                return before - int(conn.execute("SELECT COUNT(*) FROM keys").fetchone()[0])

    def claim(self, scope: str, key: str, print_: str) -> Claim:
        """What to do with a request that carries `key` (from caller `scope`, with
        fingerprint `print_`); a NEW claim is committed before this returns, so a second
        request with the key finds it, in this run or after a restart."""
        with self._lock:
            db = self._open()
            now = self._clock()
            with db.connection() as conn:
                row = conn.execute(
                    "SELECT fingerprint, state, status, body, transaction_id, created_at "
                    "FROM keys WHERE scope = ? AND key = ?",
                    (scope, key),
                ).fetchone()
                purge = self._purged_at is None or now - self._purged_at >= PURGE_EVERY
            live = row is not None and (
                float(row[5]) >= now - self.retention or (scope, key) in self._inflight
            )
            if live:
                assert row is not None
                if str(row[0]) != print_:
                    return Claim(ClaimKind.REUSED)
                if str(row[1]) == _RUNNING:
                    if (scope, key) in self._inflight:
                        return Claim(ClaimKind.IN_PROGRESS)
                    return Claim(ClaimKind.INTERRUPTED)
                body = json.loads(str(row[3]))
                return Claim(ClaimKind.REPLAY, StoredAnswer(int(row[2]), body, str(row[4])))
            # New (or expired, which counts as new): claimed in one commit, the due purge
            # with it.
            with db.write() as conn:
                if purge:
                    self._purge_due(conn, now)
                conn.execute(
                    "INSERT OR REPLACE INTO keys (scope, key, fingerprint, state, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (scope, key, print_, _RUNNING, now),
                )
            self._inflight.add((scope, key))
            return Claim(ClaimKind.NEW)

    def finish(self, scope: str, key: str, answer: StoredAnswer) -> None:
        """Store the answer to a claimed key (committed: a repeat gets it, also after a
        restart)."""
        with self._lock:
            db = self._open()
            try:
                with db.write() as conn:
                    conn.execute(
                        "UPDATE keys SET state = ?, status = ?, body = ?, transaction_id = ? "
                        "WHERE scope = ? AND key = ?",
                        (
                            _DONE,
                            answer.status,
                            json.dumps(answer.body, separators=(",", ":")),
                            answer.transaction_id,
                            scope,
                            key,
                        ),
                    )
            finally:
                self._inflight.discard((scope, key))

    def release(self, scope: str, key: str) -> None:
        """Forget a claimed key whose answer is not kept (a 5xx, a refusal that may change
        on a retry): the register may send the request again with it."""
        with self._lock:
            db = self._open()
            try:
                with db.write() as conn:
                    conn.execute("DELETE FROM keys WHERE scope = ? AND key = ?", (scope, key))
            finally:
                self._inflight.discard((scope, key))

    def forget(self, scope: str) -> int:
        """Delete every answer kept for caller `scope` (a register revoked: a register
        paired again under its name starts with no keys of its own, never the revoked
        one's answers); how many were deleted. A request of the revoked register still
        running finds its claim gone, and its answer is not kept: the register is gone.
        A terminal that never kept an answer has no file, and none is made for this."""
        if self._file is None and not self.path.exists():
            return 0
        with self._lock:
            db = self._open()
            with db.write() as conn:
                return int(conn.execute("DELETE FROM keys WHERE scope = ?", (scope,)).rowcount)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
