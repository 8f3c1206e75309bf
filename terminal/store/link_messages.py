"""The ISO 8583 link's memory of its money messages: what was sent, under which key, and
what the host answered (docs/iso8583.md, "Exactly once").

An ISO 8583 host recognises a message by (terminal, message class, STAN, transmission date
and time: fields 41, MTI digits 1-3, 11, 7); a repeat (0201, 0401, ...) of the same message
gets the first answer, never a second booking. So before a money message leaves, the link
writes here, in one committed transaction (offline_queue.sqlite: WAL, ``synchronous=FULL``),
the checkout's idempotency key for it with its MTI, STAN and field 7 and every field it
carries; a lost answer is then repeated, or reversed, as the same message, after a crash
too. The answer (response code, RRN, authorisation code) is written when it comes. The
rows of the batch not yet reconciled are also the terminal's batch file: the 0500's totals
and the 0320 batch upload are counted from them.

Card data is never here in clear: the fields of a message (the PAN or track 2, the expiry,
field 55) are sealed together with AES-256-GCM under a key from the keystore, bound to the
row's idempotency key (a sealed blob moved to another row does not open); only what a
receipt may show is in clear (amounts, currency, brand, RRN, response and authorisation
codes). When a batch is reconciled its rows keep their clear columns and lose the sealed
fields (``secure_delete``: SQLite zeroes what it frees).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from offline_queue.sqlite import Faults, SqliteFile

from ..domain.errors import TerminalError

__all__ = ["FILE", "LinkMessageError", "LinkMessages", "SentMessage", "StoredMessage"]

#: The file's name, in the terminal's data directory.
FILE: Final = "iso8583-messages.sqlite3"
_SCHEMA_VERSION: Final = 1
_NONCE_BYTES: Final = 12
_SEAL_VERSION: Final = b"\x01"
_AAD: Final = b"pipos iso8583 message v1:"

Token = Callable[[int], bytes]
#: A field's value as the codec takes it: text, or bytes for a binary field.
FieldValue = str | bytes

#: What a message's answer leaves it as.
SENT: Final = "sent"  # written, then sent (or about to be): the host may have it
UNSENT: Final = "unsent"  # the connection failed before anything left: the host has nothing
ANSWERED: Final = "answered"


class LinkMessageError(TerminalError):
    """The link's message memory cannot be opened, read or written, or a row in it does
    not open (altered, or sealed under another keystore's key)."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A money message about to be sent, as it is remembered (the fields in full)."""

    key: str
    #: purchase, preauth, refund, void, increment, capture, release, reversal, advice,
    #: settlement (a 0500).
    kind: str
    #: The message type as first sent (origin digit 0: "0200"); a repeat is its 4th digit 1.
    mti: str
    stan: int
    #: When it was first sent: its field 7 (UTC) is this time, and field 90 of a reversal.
    sent_at: datetime
    fields: Mapping[str, FieldValue] = field(repr=False)
    amount: int = 0
    currency: int = 0
    brand: str = ""
    #: The message it undoes or changes (a reversal's, a hold change's): its key.
    original_key: str = ""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    key: str
    kind: str
    mti: str
    stan: int
    sent_at: datetime
    #: Empty once the batch it belongs to is reconciled (the card data is erased).
    fields: Mapping[str, FieldValue] = field(repr=False)
    amount: int
    currency: int
    brand: str
    original_key: str
    state: str
    response_code: str
    rrn: str
    auth_code: str
    #: Undone by an acknowledged reversal (0410): it counts in no total.
    reversed: bool
    #: The reconciled batch it was counted in ("" while the batch is open).
    batch: str
    #: Its place in the memory: the order the link remembered its messages in.
    seq: int = 0

    @property
    def answered(self) -> bool:
        return self.state == ANSWERED


class LinkMessages:
    """Thread-safe. `seal_key`: 32 bytes from the keystore (``Keystore.data_key``)."""

    def __init__(
        self, path: str | os.PathLike[str], seal_key: bytes, *, token: Token = os.urandom
    ) -> None:
        if len(seal_key) != 32:
            raise LinkMessageError("the message memory's key is 32 bytes (AES-256)")
        self.path = Path(path)
        self._aes = AESGCM(seal_key)
        self._token = token
        self._lock = threading.Lock()
        self._file = SqliteFile(
            self.path,
            Faults("ISO 8583 message memory", LinkMessageError),
            secure_delete=True,
        )
        try:
            with self._file.write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > _SCHEMA_VERSION:
                    raise LinkMessageError(
                        f"ISO 8583 message memory {self.path} has schema {version}, newer "
                        f"than this software ({_SCHEMA_VERSION})"
                    )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS messages ("
                    "key TEXT PRIMARY KEY, kind TEXT NOT NULL, mti TEXT NOT NULL, "
                    "stan INTEGER NOT NULL, sent_at TEXT NOT NULL, sealed BLOB, "
                    "amount INTEGER NOT NULL, currency INTEGER NOT NULL, brand TEXT NOT NULL, "
                    "original_key TEXT NOT NULL, state TEXT NOT NULL, "
                    "response_code TEXT NOT NULL DEFAULT '', rrn TEXT NOT NULL DEFAULT '', "
                    "auth_code TEXT NOT NULL DEFAULT '', reversed INTEGER NOT NULL DEFAULT 0, "
                    "batch TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL)"
                )
                conn.execute("CREATE INDEX IF NOT EXISTS messages_rrn ON messages (rrn)")
                conn.execute("CREATE INDEX IF NOT EXISTS messages_batch ON messages (batch, seq)")
                # No row is ever deleted: the next seq (MAX) and a hold's changes are found
                # through an index, or each message would walk every one kept before it.
                # (Created on open: a file from before them gets them the same way.)
                conn.execute("CREATE INDEX IF NOT EXISTS messages_seq ON messages (seq)")
                conn.execute(
                    "CREATE INDEX IF NOT EXISTS messages_original ON messages (original_key)"
                )
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            self._file.close()
            raise

    # --- sealing ----------------------------------------------------------------------

    def _seal(self, key: str, fields: Mapping[str, FieldValue]) -> bytes:
        document = {
            name: {"b": value.hex()} if isinstance(value, bytes) else {"s": value}
            for name, value in fields.items()
        }
        plain = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        nonce = self._token(_NONCE_BYTES)
        if len(nonce) != _NONCE_BYTES:
            raise LinkMessageError("the token source gave a nonce of the wrong length")
        sealed = self._aes.encrypt(nonce, plain, _AAD + key.encode())
        return _SEAL_VERSION + nonce + sealed

    def _open(self, key: str, sealed: bytes | None) -> dict[str, FieldValue]:
        if sealed is None:
            return {}
        if sealed[:1] != _SEAL_VERSION or len(sealed) < 1 + _NONCE_BYTES + 16:
            raise LinkMessageError(f"message {key}: its sealed fields are not a v1 ciphertext")
        try:
            plain = self._aes.decrypt(
                sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :], _AAD + key.encode()
            )
        except InvalidTag:
            raise LinkMessageError(
                f"message {key}: its sealed fields do not open (altered, moved from another "
                "row, or sealed under another keystore)"
            ) from None
        document = json.loads(plain)
        return {
            name: bytes.fromhex(value["b"]) if "b" in value else str(value["s"])
            for name, value in document.items()
        }

    def _row(self, row: sqlite3.Row) -> StoredMessage:
        return StoredMessage(
            key=row["key"],
            kind=row["kind"],
            mti=row["mti"],
            stan=int(row["stan"]),
            sent_at=datetime.fromisoformat(row["sent_at"]),
            fields=self._open(row["key"], row["sealed"]),
            amount=int(row["amount"]),
            currency=int(row["currency"]),
            brand=row["brand"],
            original_key=row["original_key"],
            state=row["state"],
            response_code=row["response_code"],
            rrn=row["rrn"],
            auth_code=row["auth_code"],
            reversed=bool(row["reversed"]),
            batch=row["batch"],
            seq=int(row["seq"]),
        )

    # --- writing ----------------------------------------------------------------------

    def record(self, message: SentMessage) -> None:
        """Remember `message` before it is sent (committed when this returns). A key that
        is already here is refused: the caller repeats the stored message instead."""
        if message.sent_at.tzinfo is None:
            raise LinkMessageError("a message's time must be an aware datetime")
        sealed = self._seal(message.key, message.fields)
        with self._lock, self._file.write() as conn:
            if conn.execute("SELECT 1 FROM messages WHERE key = ?", (message.key,)).fetchone():
                raise LinkMessageError(f"message {message.key} is remembered already")
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages").fetchone()[0]
            conn.execute(
                "INSERT INTO messages (key, kind, mti, stan, sent_at, sealed, amount, currency, "
                "brand, original_key, state, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.key,
                    message.kind,
                    message.mti,
                    message.stan,
                    message.sent_at.isoformat(),
                    sealed,
                    message.amount,
                    message.currency,
                    message.brand,
                    message.original_key,
                    SENT,
                    seq,
                ),
            )

    def _update(self, key: str, sql: str, params: Sequence[object]) -> None:
        with self._lock, self._file.write() as conn:
            cursor = conn.execute(sql, (*params, key))
            if cursor.rowcount != 1:
                raise LinkMessageError(f"no message {key} in the ISO 8583 message memory")

    def mark_unsent(self, key: str) -> None:
        """Nothing of the message left (the connection failed first): the host has none."""
        self._update(key, "UPDATE messages SET state = ? WHERE key = ?", (UNSENT,))

    def mark_resent(self, key: str) -> None:
        """An unsent message is going out again (the host may have it from now on)."""
        self._update(key, "UPDATE messages SET state = ? WHERE key = ?", (SENT,))

    def answered(self, key: str, *, response_code: str, rrn: str = "", auth_code: str = "") -> None:
        """The host's answer to the message (committed when this returns)."""
        self._update(
            key,
            "UPDATE messages SET state = ?, response_code = ?, rrn = ?, auth_code = ? "
            "WHERE key = ?",
            (ANSWERED, response_code, rrn, auth_code),
        )

    def reversal_acknowledged(self, reversal_key: str, *, response_code: str) -> None:
        """A reversal's 0410: the reversal answered and what it undid marked reversed, in
        one commit."""
        with self._lock, self._file.write() as conn:
            row = conn.execute(
                "SELECT original_key FROM messages WHERE key = ?", (reversal_key,)
            ).fetchone()
            if row is None:
                raise LinkMessageError(f"no message {reversal_key} in the ISO 8583 memory")
            conn.execute(
                "UPDATE messages SET state = ?, response_code = ? WHERE key = ?",
                (ANSWERED, response_code, reversal_key),
            )
            conn.execute("UPDATE messages SET reversed = 1 WHERE key = ?", (row[0],))

    def close_batch(
        self, batch: str, *, through_seq: int | None = None, settled_by: str = ""
    ) -> int:
        """Stamp every finished row of the open batch (answered, or reversed) with `batch`
        and erase their sealed fields, except a message whose reversal is still owed (the
        reversal needs them); a message not answered yet stays in the open batch, whole,
        for its repeat. With `through_seq`, only the rows remembered up to that one (the
        0500 that closed the batch counted no later row) and those naming `settled_by` (its
        second 0500, after a batch upload). Returns how many rows were stamped."""
        limit = (
            ""
            if through_seq is None
            else "AND (seq <= :through OR (original_key = :settled_by AND kind = 'settlement')) "
        )
        with self._lock, self._file.write() as conn:
            cursor = conn.execute(
                "UPDATE messages SET batch = :batch, sealed = NULL WHERE batch = '' "  # noqa: S608 - a fixed clause
                "AND (state = 'answered' OR reversed = 1) "
                f"{limit}"
                "AND key NOT IN (SELECT original_key FROM messages "
                "WHERE kind IN ('reversal', 'release') AND state != 'answered')",
                {"batch": batch, "through": through_seq, "settled_by": settled_by},
            )
            return int(cursor.rowcount)

    # --- reading ----------------------------------------------------------------------

    def get(self, key: str) -> StoredMessage | None:
        with self._file.connection() as conn:
            row = conn.execute("SELECT * FROM messages WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._row(row)

    def by_rrn(self, rrn: str, kinds: Sequence[str]) -> StoredMessage | None:
        """The message of one of `kinds` the host answered with retrieval reference `rrn`
        (the newest, should the host ever give one twice)."""
        marks = ", ".join("?" for _ in kinds)
        with self._file.connection() as conn:
            row = conn.execute(
                f"SELECT * FROM messages WHERE rrn = ? AND kind IN ({marks}) "  # noqa: S608
                "ORDER BY seq DESC LIMIT 1",
                (rrn, *kinds),
            ).fetchone()
        return None if row is None else self._row(row)

    def changes_of(self, original_key: str) -> list[StoredMessage]:
        """The messages that change or undo `original_key`, oldest first."""
        with self._file.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE original_key = ? ORDER BY seq",
                (original_key,),
            ).fetchall()
        return [self._row(row) for row in rows]

    def open_batch(self) -> list[StoredMessage]:
        """The rows not yet reconciled, oldest first."""
        with self._file.connection() as conn:
            rows = conn.execute("SELECT * FROM messages WHERE batch = '' ORDER BY seq").fetchall()
        return [self._row(row) for row in rows]

    def batch_rows(self, batch: str) -> list[StoredMessage]:
        """The rows a reconciled `batch` counted, oldest first."""
        if not batch:
            raise LinkMessageError("a reconciled batch has a name; the open one is open_batch()")
        with self._file.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE batch = ? ORDER BY seq", (batch,)
            ).fetchall()
        return [self._row(row) for row in rows]

    def close(self) -> None:
        self._file.close()
