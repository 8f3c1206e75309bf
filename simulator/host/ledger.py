"""The simulated acquirer's durable state: one SQLite file.

Everything the host decides is written here inside one transaction together with the
idempotency record of the request that caused it, so a crash or a dropped response can never
make the host process a request twice. Tests read the ledger (directly or through
`GET /admin/ledger`) to prove what was authorised, reversed, refunded and settled.

Card numbers are never stored: the ledger keeps the masked PAN (first 6 + last 4) and a keyed
hash (HMAC-SHA-256 under a host secret) to recognise the same card again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from offline_queue.sqlite import Faults, SqliteFile

from ..errors import SimulatorError

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS config (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activation_codes (
    code TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    used_at INTEGER,
    terminal_id TEXT
);
CREATE TABLE IF NOT EXISTS terminals (
    terminal_id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    serial TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key BLOB NOT NULL,
    last_seq INTEGER NOT NULL,
    enrolled_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS terminal_keys (
    terminal_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key BLOB NOT NULL,
    added_at INTEGER NOT NULL,
    retired_at INTEGER,
    PRIMARY KEY (terminal_id, key_id)
);
CREATE TABLE IF NOT EXISTS seen_requests (
    signature_hash TEXT PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    terminal_id TEXT,
    key_id TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    seq TEXT,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    terminal_id TEXT NOT NULL,
    key TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    response BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, key)
);
CREATE TABLE IF NOT EXISTS reversal_tombstones (
    terminal_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, idempotency_key)
);
CREATE TABLE IF NOT EXISTS transactions (
    ref TEXT PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency INTEGER NOT NULL,
    brand TEXT NOT NULL,
    masked_pan TEXT NOT NULL,
    card_token TEXT NOT NULL,
    status TEXT NOT NULL,
    response_code TEXT NOT NULL,
    reason TEXT,
    auth_code TEXT,
    arqc_status TEXT,
    idempotency_key TEXT,
    offline_id TEXT,
    original_ref TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    batch_id TEXT
);
CREATE INDEX IF NOT EXISTS transactions_idem ON transactions (terminal_id, idempotency_key);
CREATE UNIQUE INDEX IF NOT EXISTS transactions_offline
    ON transactions (terminal_id, offline_id) WHERE offline_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS transactions_open ON transactions (terminal_id, batch_id);
-- An offline payment's duplicate check (the same payment sent again, by this unit or the
-- one that replaced it) looks it up by its offline id: without this, every upload scans
-- every offline payment already booked, and a drain slows as the ledger grows.
CREATE INDEX IF NOT EXISTS transactions_offline_id
    ON transactions (offline_id) WHERE offline_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    terminal_id TEXT NOT NULL,
    ref TEXT,
    type TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    closed_at INTEGER NOT NULL,
    totals TEXT NOT NULL
);
-- The ISO 8583 host (simulator/host/iso8583/): terminals registered for ISO 8583 with
-- their TMK (a TR-31 block under the KIF's KBPK), session keys (blocks under the TMK) per
-- key exchange, retrieval reference numbers (the id, 12 digits) of ledger transactions, and
-- the batch uploads (0320) of out-of-balance reconciliations.
CREATE TABLE IF NOT EXISTS iso8583_merchants (
    merchant_id TEXT PRIMARY KEY,
    mid TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS iso8583_terminals (
    tid TEXT PRIMARY KEY,
    terminal_id TEXT NOT NULL UNIQUE,
    mid TEXT NOT NULL,
    tmk_key_block TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    signed_on_at INTEGER
);
CREATE TABLE IF NOT EXISTS iso8583_session_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tid TEXT NOT NULL,
    mac_algorithm TEXT NOT NULL,
    mac_key_block TEXT NOT NULL,
    pin_key_block TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    confirmed_at INTEGER,
    retired_at INTEGER
);
CREATE INDEX IF NOT EXISTS iso8583_session_keys_tid ON iso8583_session_keys (tid, id);
CREATE TABLE IF NOT EXISTS iso8583_rrns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ref TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS iso8583_batch_uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tid TEXT NOT NULL,
    rrn TEXT NOT NULL,
    processing_code TEXT NOT NULL,
    amount INTEGER NOT NULL,
    ref TEXT,
    matches INTEGER NOT NULL,
    at INTEGER NOT NULL
);
"""


class Store:
    """One SQLite connection guarded by a lock; transactions are BEGIN IMMEDIATE.

    The file is kept as the terminal keeps its own (offline_queue.sqlite): WAL and
    ``synchronous=FULL``, so a committed authorisation survives power loss; its faults are
    SimulatorErrors.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = SqliteFile(self.path, Faults("acquirer ledger", SimulatorError))
        self._lock = self._file.lock
        self._depth = 0
        try:
            with self._file.connection() as conn:
                conn.executescript(SCHEMA)
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested use joins the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._file.conn
                finally:
                    self._depth -= 1
                return
            with self._file.write() as conn:
                self._depth = 1
                try:
                    yield conn
                finally:
                    self._depth = 0

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._file.connection() as conn:
            return [dict(row) for row in conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self._file.connection() as conn:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else dict(row)

    # --- configuration ------------------------------------------------------------------

    def get_config(self, key: str, default: Any = None) -> Any:
        row = self.one("SELECT value FROM config WHERE key = ?", (key,))
        return default if row is None else json.loads(row["value"])

    def set_config(self, key: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO config (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value, sort_keys=True)),
            )

    def _secret(self, key: str, size: int) -> bytes:
        with self.transaction():
            value = self.get_config(key)
            if value is None:
                value = os.urandom(size).hex()
                self.set_config(key, value)
            return bytes.fromhex(value)

    def host_key(self) -> Ed25519PrivateKey:
        """The host's Ed25519 key (signs parameters and responses), created on first use.

        A simulator stores it in its database; a real acquirer keeps it in an HSM.
        """
        return Ed25519PrivateKey.from_private_bytes(self._secret("host_signing_seed", 32))

    def host_public_key(self) -> bytes:
        return (
            self.host_key()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def card_token(self, pan: str) -> str:
        secret = self._secret("card_token_secret", 32)
        return hmac.new(secret, pan.encode("ascii"), hashlib.sha256).hexdigest()[:32]

    # --- ledger views -------------------------------------------------------------------

    def ledger(self, terminal_id: str | None = None) -> list[dict[str, Any]]:
        if terminal_id is None:
            return self.query("SELECT * FROM transactions ORDER BY created_at, rowid")
        return self.query(
            "SELECT * FROM transactions WHERE terminal_id = ? ORDER BY created_at, rowid",
            (terminal_id,),
        )

    def events(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM events ORDER BY id")

    def rejections(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM rejections ORDER BY id")

    def add_event(
        self,
        conn: sqlite3.Connection,
        at: int,
        terminal_id: str,
        ref: str | None,
        type_: str,
        detail: dict[str, Any],
    ) -> None:
        conn.execute(
            "INSERT INTO events (at, terminal_id, ref, type, detail) VALUES (?, ?, ?, ?, ?)",
            (at, terminal_id, ref, type_, json.dumps(detail, sort_keys=True)),
        )
