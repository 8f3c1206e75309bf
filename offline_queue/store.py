"""The durable payment queue: one SQLite file (WAL, synchronous=FULL), via sqlite-utils over a
connection opened by :mod:`offline_queue.sqlite`.

Durability rule (DESIGN.md): `enqueue` returns only after the row is committed and the WAL is
fsynced, so a payment the merchant saw approved survives a crash or power cut at any instant.
Each state change is one IMMEDIATE transaction that also appends to `transitions`, so a crash
leaves every row in exactly one state with its full timestamped history.

Sensitive data (PAN, card data, EMV data, the signed record) lives only in `payload`, sealed
with AES-GCM under the payment's own data key and bound to the transaction id (see
:mod:`offline_queue.cardcrypt`); the wrapped data key is kept apart, in `card_data_keys`. The
clear columns hold what the merchant may see: amount, currency, masked PAN, brand, AID, states.

Erased means unrecoverable. Once the host has given its final word on a payment (accepted, or
declined after the fact) its card data has no further use, and in the same transaction as that
state change the queue deletes the payment's wrapped key, NULLs its sealed card data and its
PAN lookup hash, and replaces its content hash by one of the clear columns only. The file runs
with ``secure_delete`` on, so what those statements free is zeroed in the page; after the
commit the WAL is checkpointed into the database file and truncated, so no older copy of a
page (the key, the sealed data) survives in the ``-wal`` file either. A reader holding the WAL
open (another process in a read transaction) can hold the checkpoint up: it is then owed
(:attr:`OfflineQueue.erasure_pending`) and retried at the next sync, at the next acceptance,
at close and at the next open. Why the keys share the queue's file rather than a small file
of their own: a transaction over two attached WAL databases is not atomic across a crash
(https://www.sqlite.org/lang_attach.html), and "the key is destroyed exactly when the payment
is accepted" must hold at any instant.

Declined payments lose their card data too: the host has refused them for good, nothing in
the terminal can send them again, and the merchant's follow-up needs only the clear columns.
Failed payments (refused as invalid, or whose batch was refused) keep it: a technician may
send them again (:meth:`OfflineQueue.requeue_failed`) or export them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlite_utils import Database

from emv.pan import mask_pan

from .cardcrypt import CardCipher, Sealed, Token
from .errors import (
    CardDataError,
    PaymentConflictError,
    QueueBusyError,
    QueueCorruptError,
    QueueError,
    QueueSchemaError,
    UnknownPaymentError,
)
from .limits import AmountFormatter, Exposure, OfflineDecision, OfflineLimits, check_offline
from .model import (
    OUTSTANDING_STATES,
    Batch,
    BatchItem,
    CardData,
    ItemOutcome,
    ItemResult,
    OfflinePayment,
    QueuedPayment,
    QueueStatus,
    State,
    StateSummary,
    validate_payment,
)
from .sqlite import BUSY_TIMEOUT, Faults, SqliteFile

__all__ = ["SCHEMA_VERSION", "EnqueueResult", "ImportReport", "OfflineQueue"]

Clock = Callable[[], float]

SCHEMA_VERSION: Final = 2
_APPLICATION_ID: Final = 0x50495051  # "PIPQ" in PRAGMA application_id: marks a pipos queue


def _migrate_to_1(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE batches (
            batch_id TEXT PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_attempt_at INTEGER,
            last_error TEXT,
            closed_at INTEGER
        );
        CREATE TABLE payments (
            transaction_id TEXT PRIMARY KEY,
            state TEXT NOT NULL
                CHECK (state IN ('pending', 'sending', 'accepted', 'declined', 'failed')),
            amount INTEGER NOT NULL CHECK (amount > 0),
            currency INTEGER NOT NULL CHECK (currency BETWEEN 1 AND 999),
            masked_pan TEXT NOT NULL,
            pan_hash TEXT NOT NULL,
            brand TEXT,
            aid TEXT,
            captured_at INTEGER NOT NULL,
            payload BLOB,
            content_hash TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            sending_at INTEGER,
            finished_at INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER,
            batch_id TEXT REFERENCES batches (batch_id),
            host_ref TEXT,
            host_code TEXT,
            reason TEXT,
            flagged INTEGER NOT NULL DEFAULT 0,
            acknowledged_at INTEGER,
            imported INTEGER NOT NULL DEFAULT 0,
            CHECK ((state = 'sending') = (batch_id IS NOT NULL))
        );
        CREATE INDEX payments_state ON payments (state, created_at);
        CREATE INDEX payments_batch ON payments (batch_id) WHERE batch_id IS NOT NULL;
        CREATE INDEX payments_pan ON payments (pan_hash);
        CREATE TABLE transitions (
            id INTEGER PRIMARY KEY,
            transaction_id TEXT NOT NULL REFERENCES payments (transaction_id),
            from_state TEXT,
            to_state TEXT NOT NULL,
            at INTEGER NOT NULL,
            batch_id TEXT,
            detail TEXT
        );
        CREATE INDEX transitions_tx ON transitions (transaction_id, id);
        """
    )


#: The content hash of a payment whose card data is erased starts with this: it is computed
#: from the clear columns only (see :func:`_erased_hash`).
_ERASED: Final = "erased:"
#: States in which a payment's card data is erased (the host's final word).
_ERASED_STATES: Final = (State.ACCEPTED, State.DECLINED)
#: meta key: a VACUUM is owed to clear the free space of a file older pipos versions wrote
#: without secure_delete (stale copies of erased card data may sit in it).
_SCRUB_KEY: Final = "vacuum_owed"


def _erased_hash(
    transaction_id: str,
    amount: int,
    currency: int,
    captured_at: int,
    masked_pan: str,
    brand: str | None,
    aid: str | None,
) -> str:
    """What tells the same payment again apart from a different one under the same id once
    its card data is gone: the clear columns only, so it is no oracle for the card data
    (the keyed content hash over the whole record would be one, to someone with the key)."""
    doc = [transaction_id, amount, currency, captured_at, masked_pan, brand, (aid or "").upper()]
    return _ERASED + hashlib.sha256(_canonical_list(doc)).hexdigest()


def _canonical_list(doc: list[Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _erase_sql(db: Database, txid: str, erased_hash: str) -> None:
    """Erase a payment's card data: its key, its sealed data, its PAN lookup hash (a guess
    oracle for the PAN to whoever holds the key) and its content hash. In the caller's
    transaction."""
    db.execute(
        "UPDATE payments SET payload = NULL, pan_hash = '', content_hash = ? "
        "WHERE transaction_id = ?",
        (erased_hash, txid),
    )
    db.execute("DELETE FROM card_data_keys WHERE transaction_id = ?", (txid,))


def _migrate_to_2(db: Database) -> None:
    """Per-payment data keys, kept apart; the card data of payments the host has given its
    final word on erased. The re-sealing of unsent payments under keys of their own needs the
    queue key, and happens at the first open with it (:meth:`OfflineQueue._reseal_v1`)."""
    db.execute(
        "CREATE TABLE card_data_keys ("
        "transaction_id TEXT PRIMARY KEY REFERENCES payments (transaction_id), "
        "wrapped_key BLOB NOT NULL) WITHOUT ROWID"
    )
    erased = [s.value for s in _ERASED_STATES]
    for r in db.execute(
        "SELECT transaction_id, amount, currency, captured_at, masked_pan, brand, aid "
        "FROM payments WHERE state IN (?, ?)",
        erased,
    ).fetchall():
        _erase_sql(db, str(r[0]), _erased_hash(str(r[0]), *r[1:]))
    # Older versions wrote without secure_delete: what they freed (the card data of accepted
    # payments, set to NULL) may still sit in free space of the file. One VACUUM clears it;
    # a queue that never held a payment (a new one) has nothing to clear.
    if db.execute("SELECT COUNT(*) FROM payments").fetchone()[0]:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (_SCRUB_KEY,))


# Migration n takes the schema from version n-1 to n. Append, never edit a published one.
MIGRATIONS: Final[tuple[Callable[[Database], None], ...]] = (_migrate_to_1, _migrate_to_2)

#: The queue's exceptions for the faults of its file (offline_queue.sqlite translates).
_FAULTS: Final = Faults(
    "queue",
    QueueError,
    busy=QueueBusyError,
    corrupt=QueueCorruptError,
    advice="do not delete it - export it with a technician's tools or restore the last backup",
)


def _refuse_foreign(file: SqliteFile) -> None:
    """Refuse, before anything is written to it, a file that is not a pipos queue or that a
    newer pipos wrote."""
    conn = file.conn
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    if app_id != _APPLICATION_ID and (tables or version):
        raise QueueCorruptError(
            f"queue {file.path}: not a pipos offline queue (other tables found)"
        )
    if version > SCHEMA_VERSION:
        raise QueueSchemaError(
            f"queue {file.path}: schema version {version} is newer than this pipos understands "
            f"({SCHEMA_VERSION}); update pipos before opening it"
        )


def _migrate(file: SqliteFile, db: Database) -> None:
    """Each step one IMMEDIATE transaction, the version read inside it: two processes opening
    an old queue at once migrate it once."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    while version < SCHEMA_VERSION:
        with file.write():
            current = db.execute("PRAGMA user_version").fetchone()[0]
            if current == version:  # another process may have migrated meanwhile
                MIGRATIONS[version](db)
                db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {version + 1}")
        version = db.execute("PRAGMA user_version").fetchone()[0]


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """`stored` is True when the payment is durably in the queue (now or from before)."""

    stored: bool
    decision: OfflineDecision
    duplicate: bool = False  # the same payment was already queued: nothing was added

    def __bool__(self) -> bool:
        return self.stored


@dataclass(frozen=True, slots=True)
class ImportReport:
    added: tuple[str, ...]
    already_present: tuple[str, ...]
    conflicts: tuple[str, ...]  # same transaction id, different contents: left untouched


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def payment_document(p: OfflinePayment) -> dict[str, Any]:
    """Canonical plaintext of everything about a payment (also the backup's item format)."""
    return {
        "transaction_id": p.transaction_id,
        "amount": p.amount,
        "currency": p.currency,
        "captured_at": p.captured_at,
        "brand": p.brand,
        "aid": p.aid,
        "card": {
            "pan": p.card.pan,
            "pan_sequence": p.card.pan_sequence,
            "expiry": p.card.expiry,
            "cardholder_name": p.card.cardholder_name,
        },
        "emv": {k.upper(): v.upper() for k, v in sorted(p.emv.items())},
        "signed_record": _b64(p.signed_record),
        "signature": _b64(p.signature),
        "key_id": p.key_id,
    }


def payment_from_document(doc: Mapping[str, Any]) -> OfflinePayment:
    try:
        card = doc["card"]
        payment = OfflinePayment(
            transaction_id=str(doc["transaction_id"]),
            amount=doc["amount"],
            currency=doc["currency"],
            captured_at=doc["captured_at"],
            brand=doc.get("brand"),
            aid=doc.get("aid"),
            card=CardData(
                pan=card["pan"],
                pan_sequence=card.get("pan_sequence"),
                expiry=card.get("expiry"),
                cardholder_name=card.get("cardholder_name"),
            ),
            emv=dict(doc.get("emv") or {}),
            signed_record=_unb64(doc.get("signed_record") or ""),
            signature=_unb64(doc.get("signature") or ""),
            key_id=doc.get("key_id"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise QueueError(f"payment document: missing or malformed field ({exc})") from None
    validate_payment(payment)
    return payment


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _payment_erased_hash(p: OfflinePayment) -> str:
    return _erased_hash(
        p.transaction_id, p.amount, p.currency, p.captured_at, mask_pan(p.card.pan), p.brand, p.aid
    )


def _blob(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | memoryview) else None


class OfflineQueue:
    """An open queue database. Open with :meth:`open`; close with :meth:`close` (or `with`).

    Safe to share between threads (one lock); several processes may open the same file (WAL,
    IMMEDIATE transactions and a busy timeout serialise the writers).
    Without a data key the queue can only be read (status, list): enqueueing, syncing and
    exporting need it.
    """

    def __init__(
        self,
        file: SqliteFile,
        db: Database,
        cipher: CardCipher | None,
        *,
        clock: Clock,
        token: Token,
    ) -> None:
        self.path = file.path
        self._file = file
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._token = token
        self._scrub_owed = False

    def __repr__(self) -> str:
        return f"OfflineQueue({str(self.path)!r})"

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        data_key: bytes | None = None,
        *,
        clock: Clock = time.time,
        token: Token = os.urandom,
        create: bool = True,
        full_check: bool = False,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> OfflineQueue:
        """Open (and create or migrate) the queue at `path`, after an integrity check.

        Raises QueueCorruptError when the file is damaged or is not a pipos queue,
        QueueSchemaError when it was written by a newer pipos, CardDataError when `data_key`
        is not the key this queue was created with.
        """
        p = Path(path)
        if not create and not p.exists():
            raise QueueError(f"queue {p}: no such file")
        if p.exists() and p.is_dir():
            raise QueueError(f"queue {p}: is a directory, expected a database file")
        # The integrity check (and _refuse_foreign) run before anything is written: a damaged
        # file, or another program's, is not migrated or written to. Then foreign keys, WAL and
        # synchronous=FULL: a committed payment survives power loss.
        file = SqliteFile(
            p,
            _FAULTS,
            busy_timeout=busy_timeout,
            foreign_keys=True,
            row_factory=None,
            check="full" if full_check else "quick",
            vet=_refuse_foreign,
            secure_delete=True,
        )
        cipher = CardCipher(data_key, token=token) if data_key is not None else None
        try:
            with file.connection():
                db = Database(file.conn, execute_plugins=False)
                _migrate(file, db)
                queue = cls(file, db, cipher, clock=clock, token=token)
                queue._check_key()
                queue._reseal_v1()
                queue._vacuum_if_owed()
            # A process killed after an erasure, before its checkpoint, left old pages in
            # the WAL: cleared now (or owed, if a reader holds the WAL).
            queue.scrub()
            _fsync_directory(p.parent)
        except BaseException:
            file.close()
            raise
        return queue

    def _check_key(self) -> None:
        if self._cipher is None:
            return
        with self._write():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('key_check', ?)",
                    (self._cipher.key_check,),
                )
            elif row[0] != self._cipher.key_check:
                raise CardDataError(
                    f"queue {self.path}: the data key does not match the key this queue was "
                    "created with (another terminal's queue? use `pipos queue import` to move "
                    "payments between terminals)"
                )

    def _reseal_v1(self) -> None:
        """Schema 2's second half: every payment still sealed the version 1 way (under the
        queue-wide key) re-sealed under a data key of its own, in one transaction. A payload
        that does not open is left as it is: the forwarder marks it failed, as it would have."""
        if self._cipher is None:
            return
        cipher = self._cipher
        legacy = (
            "SELECT transaction_id, payload FROM payments WHERE payload IS NOT NULL "
            "AND transaction_id NOT IN (SELECT transaction_id FROM card_data_keys)"
        )
        with self._file.connection():
            if self._db.execute(legacy + " LIMIT 1").fetchone() is None:
                return  # the usual open: no write lock taken for nothing
        with self._write():
            rows = self._db.execute(legacy).fetchall()  # read again under the write lock
            for txid, payload in rows:
                try:
                    plaintext = cipher.open_v1(str(txid), bytes(payload))
                except CardDataError:
                    continue
                sealed = cipher.seal(str(txid), plaintext)
                self._db.execute(
                    "UPDATE payments SET payload = ? WHERE transaction_id = ?",
                    (sealed.payload, txid),
                )
                self._db.execute(
                    "INSERT INTO card_data_keys (transaction_id, wrapped_key) VALUES (?, ?)",
                    (txid, sealed.wrapped_key),
                )
            if rows:
                self._scrub_owed = True

    def _vacuum_if_owed(self) -> None:
        """The one VACUUM schema 2 asks for: rebuilds the file without its free space, where
        an older pipos (no secure_delete) left copies of card data it had set to NULL. Busy
        (another process has the queue open in a transaction): left owed for the next open."""
        with self._file.connection():
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_SCRUB_KEY,)).fetchone()
        if row is None:
            return
        try:
            with self._file.connection():
                self._db.execute("VACUUM")
        except QueueBusyError:
            return
        with self._write():
            self._db.execute("DELETE FROM meta WHERE key = ?", (_SCRUB_KEY,))
        self._scrub_owed = True

    @property
    def erasure_pending(self) -> bool:
        """True while erased card data may still have an old copy in the WAL: the checkpoint
        after the erasure found a reader in the WAL. Retried by :meth:`scrub`, which the
        queue calls at each sync, acceptance, close and open."""
        return self._scrub_owed

    def scrub(self) -> bool:
        """Checkpoint the WAL into the database file and truncate it to zero bytes; True when
        done, False (and still owed) while a reader holds the WAL. Cheap on an empty WAL."""
        done = self._file.checkpoint()
        self._scrub_owed = not done
        return done

    def close(self) -> None:
        if self._scrub_owed:
            with contextlib.suppress(QueueError):
                self.scrub()
        self._file.close()

    def __enter__(self) -> OfflineQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions -------------------------------------------------------------------

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front, so no upgrade deadlock."""
        return self._file.write()

    def _now(self) -> int:
        return int(self._clock())

    def _need_cipher(self) -> CardCipher:
        if self._cipher is None:
            raise QueueError("this operation needs the queue's data key (opened read-only)")
        return self._cipher

    def _transition(
        self,
        txid: str,
        from_state: State | None,
        to_state: State,
        now: int,
        *,
        batch_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        self._db.table("transitions").insert(
            {
                "transaction_id": txid,
                "from_state": None if from_state is None else from_state.value,
                "to_state": to_state.value,
                "at": now,
                "batch_id": batch_id,
                "detail": detail,
            }
        )

    # --- taking payments ----------------------------------------------------------------

    def exposure(self) -> Exposure:
        """What is stored and not yet paid: pending, sending and failed payments."""
        with self._file.connection():
            return self._exposure()

    def _exposure(self) -> Exposure:
        marks = ",".join("?" for _ in OUTSTANDING_STATES)
        states = [s.value for s in OUTSTANDING_STATES]
        amounts = {
            int(r["currency"]): int(r["total"])
            for r in self._db.query(
                f"SELECT currency, SUM(amount) AS total FROM payments "  # noqa: S608
                f"WHERE state IN ({marks}) GROUP BY currency",
                states,
            )
        }
        row = self._db.execute(
            f"SELECT COUNT(*), MIN(created_at) FROM payments WHERE state IN ({marks})",  # noqa: S608
            states,
        ).fetchone()
        return Exposure(amounts=amounts, count=int(row[0]), oldest_created_at=row[1])

    def check(
        self,
        limits: OfflineLimits,
        *,
        amount: int,
        currency: int,
        card_approves_offline: bool,
        fmt: AmountFormatter | None = None,
    ) -> OfflineDecision:
        """May a payment of `amount` be approved offline now? Ask before the card's 2nd GEN AC.

        `enqueue(..., limits=...)` checks again atomically with the insert, so two sales
        racing for the last headroom cannot both be stored.
        """
        with self._file.connection():
            return check_offline(
                limits,
                self._exposure(),
                amount=amount,
                currency=currency,
                card_approves_offline=card_approves_offline,
                now=self._now(),
                fmt=fmt,
            )

    def enqueue(
        self,
        payment: OfflinePayment,
        *,
        limits: OfflineLimits | None = None,
        fmt: AmountFormatter | None = None,
    ) -> EnqueueResult:
        """Store a payment durably (committed and fsynced on return), within `limits` if given.

        Idempotent: the same payment enqueued again adds nothing (`duplicate=True`); the same
        transaction id with different contents raises PaymentConflictError.
        """
        validate_payment(payment)
        cipher = self._need_cipher()
        doc = payment_document(payment)
        plaintext = _canonical(doc)
        content_hash = self._content_hash(cipher, plaintext)
        sealed = cipher.seal(payment.transaction_id, plaintext)
        with self._write():
            now = self._now()
            existing = self._db.execute(
                "SELECT content_hash FROM payments WHERE transaction_id = ?",
                (payment.transaction_id,),
            ).fetchone()
            if existing is not None:
                if hmac.compare_digest(existing[0], content_hash) or hmac.compare_digest(
                    existing[0], _payment_erased_hash(payment)
                ):
                    return EnqueueResult(True, OfflineDecision(True), duplicate=True)
                raise PaymentConflictError(
                    f"transaction {payment.transaction_id} is already queued with different "
                    "contents; refusing to overwrite it"
                )
            if limits is not None:
                decision = check_offline(
                    limits,
                    self._exposure(),
                    amount=payment.amount,
                    currency=payment.currency,
                    card_approves_offline=True,
                    now=now,
                    fmt=fmt,
                )
                if not decision.allowed:
                    return EnqueueResult(False, decision)
            self._insert_row(
                payment, cipher, sealed, content_hash, now, state=State.PENDING, imported=False
            )
            self._transition(payment.transaction_id, None, State.PENDING, now, detail="queued")
        return EnqueueResult(True, OfflineDecision(True))

    @staticmethod
    def _content_hash(cipher: CardCipher, plaintext: bytes) -> str:
        return cipher.pan_hash(hashlib.sha256(plaintext).hexdigest())

    def _insert_row(
        self,
        payment: OfflinePayment,
        cipher: CardCipher,
        sealed: Sealed,
        content_hash: str,
        now: int,
        *,
        state: State,
        imported: bool,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        row: dict[str, Any] = {
            "transaction_id": payment.transaction_id,
            "state": state.value,
            "amount": payment.amount,
            "currency": payment.currency,
            "masked_pan": mask_pan(payment.card.pan),
            "pan_hash": cipher.pan_hash(payment.card.pan),
            "brand": payment.brand,
            "aid": payment.aid.upper() if payment.aid else None,
            "captured_at": payment.captured_at,
            "payload": sealed.payload,
            "content_hash": content_hash,
            "created_at": now,
            "updated_at": now,
            "imported": int(imported),
        }
        if extra:
            row.update(extra)
        self._db.table("payments").insert(row)
        self._db.execute(
            "INSERT INTO card_data_keys (transaction_id, wrapped_key) VALUES (?, ?)",
            (payment.transaction_id, sealed.wrapped_key),
        )

    # --- reading ------------------------------------------------------------------------

    def get(self, transaction_id: str) -> QueuedPayment | None:
        with self._file.connection():
            rows = list(
                self._db.query("SELECT * FROM payments WHERE transaction_id = ?", (transaction_id,))
            )
        return _row_to_payment(rows[0]) if rows else None

    def list_payments(
        self,
        states: Iterable[State] | None = None,
        *,
        flagged_only: bool = False,
        limit: int | None = None,
    ) -> list[QueuedPayment]:
        """Payments oldest first, optionally only some states or only flagged ones."""
        where, params = [], []
        if states is not None:
            wanted = [State(s).value for s in states]
            where.append(f"state IN ({','.join('?' for _ in wanted)})")
            params.extend(wanted)
        if flagged_only:
            where.append("flagged = 1")
        sql = "SELECT * FROM payments"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, rowid"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._file.connection():
            return [_row_to_payment(r) for r in self._db.query(sql, params)]

    def find_by_pan(self, pan: str) -> list[QueuedPayment]:
        """Payments made with this card, found by the keyed PAN hash (the PAN is not stored)."""
        cipher = self._need_cipher()
        with self._file.connection():
            return [
                _row_to_payment(r)
                for r in self._db.query(
                    "SELECT * FROM payments WHERE pan_hash = ? ORDER BY created_at, rowid",
                    (cipher.pan_hash(pan),),
                )
            ]

    def history(self, transaction_id: str) -> list[tuple[str | None, str, int, str | None]]:
        """(from, to, at, detail) of every state change of one payment, oldest first."""
        with self._file.connection():
            return [
                (r["from_state"], r["to_state"], r["at"], r["detail"])
                for r in self._db.query(
                    "SELECT * FROM transitions WHERE transaction_id = ? ORDER BY id",
                    (transaction_id,),
                )
            ]

    def status(self) -> QueueStatus:
        """Counts, amounts per currency and the oldest payment, per state."""
        with self._file.connection():
            now = self._now()
            per: dict[State, dict[str, Any]] = {
                s: {"count": 0, "amounts": {}, "oldest": None} for s in State
            }
            for r in self._db.query(
                "SELECT state, currency, COUNT(*) AS n, SUM(amount) AS total, "
                "MIN(created_at) AS oldest FROM payments GROUP BY state, currency"
            ):
                entry = per[State(r["state"])]
                entry["count"] += int(r["n"])
                entry["amounts"][int(r["currency"])] = int(r["total"])
                if entry["oldest"] is None or r["oldest"] < entry["oldest"]:
                    entry["oldest"] = int(r["oldest"])
            flagged = self._db.execute(
                "SELECT COUNT(*) FROM payments WHERE flagged = 1 AND acknowledged_at IS NULL"
            ).fetchone()[0]
        return QueueStatus(
            now=now,
            states={
                s: StateSummary(s, v["count"], dict(v["amounts"]), v["oldest"])
                for s, v in per.items()
            },
            flagged=int(flagged),
        )

    def acknowledge(self, transaction_id: str) -> None:
        """The merchant has seen a declined/failed payment: it stays, but stops alerting."""
        with self._write():
            cur = self._db.execute(
                "UPDATE payments SET acknowledged_at = ?, updated_at = ? "
                "WHERE transaction_id = ? AND flagged = 1",
                (self._now(), self._now(), transaction_id),
            )
            if cur.rowcount == 0:
                raise UnknownPaymentError(
                    f"no flagged payment with transaction id {transaction_id}"
                )

    # --- forwarding ---------------------------------------------------------------------

    def claim_batch(self, max_items: int = 100) -> Batch | None:
        """The next batch to upload, or None when nothing is due.

        A batch left 'sending' (a crash, or no answer from the host) comes back first, with
        the same id, items, order and idempotency key, so the resend is answered by the host
        with its first result instead of being processed again.
        """
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if self._scrub_owed:
            self.scrub()
        while True:
            again, claimed = self._claim(max_items)
            if not again:
                return claimed

    def _claim(self, max_items: int) -> tuple[bool, Batch | None]:
        """(again, batch): again is True when a resumed batch turned out empty."""
        cipher = self._need_cipher()
        with self._write():
            now = self._now()
            open_batch = self._db.execute(
                "SELECT batch_id, idempotency_key, attempts FROM batches "
                "WHERE closed_at IS NULL ORDER BY created_at, rowid LIMIT 1"
            ).fetchone()
            resumed = open_batch is not None
            if open_batch is not None:
                batch_id, idem, attempts = open_batch
            else:
                due = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT transaction_id FROM payments WHERE state = 'pending' "
                        "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
                        "ORDER BY created_at, rowid LIMIT ?",
                        (now, max_items),
                    )
                ]
                if not due:
                    return False, None
                batch_id = "B" + self._token(12).hex()
                idem = "oq-" + self._token(16).hex()
                attempts = 0
                self._db.table("batches").insert(
                    {"batch_id": batch_id, "idempotency_key": idem, "created_at": now}
                )
                for txid in due:
                    self._db.execute(
                        "UPDATE payments SET state = 'sending', batch_id = ?, sending_at = ?, "
                        "updated_at = ?, attempts = attempts + 1 WHERE transaction_id = ?",
                        (batch_id, now, now, txid),
                    )
                    self._transition(txid, State.PENDING, State.SENDING, now, batch_id=batch_id)
            items: list[BatchItem] = []
            for r in self._db.query(
                "SELECT p.transaction_id, p.amount, p.currency, p.captured_at, p.payload, "
                "k.wrapped_key FROM payments AS p LEFT JOIN card_data_keys AS k "
                "USING (transaction_id) "
                "WHERE p.batch_id = ? AND p.state = 'sending' ORDER BY p.created_at, p.rowid",
                (batch_id,),
            ):
                item = self._open_item(cipher, r)
                if isinstance(item, str):
                    self._finish(r["transaction_id"], State.FAILED, now, reason=item)
                else:
                    items.append(item)
            if not items:
                self._db.execute(
                    "UPDATE batches SET closed_at = ? WHERE batch_id = ?", (now, batch_id)
                )
                return resumed, None
        return False, Batch(batch_id, idem, tuple(items), int(attempts), resumed)

    @staticmethod
    def _open_item(cipher: CardCipher, r: Mapping[str, Any]) -> BatchItem | str:
        """The decrypted item, or the reason it cannot be sent."""
        txid = str(r["transaction_id"])
        if r["payload"] is None:
            return "card data missing"
        try:
            plaintext = cipher.open(txid, bytes(r["payload"]), _blob(r["wrapped_key"]))
            p = payment_from_document(json.loads(plaintext))
        except (CardDataError, QueueError, ValueError) as exc:
            return f"card data unreadable: {exc}"
        if (p.amount, p.currency, p.captured_at) != (r["amount"], r["currency"], r["captured_at"]):
            return "row altered: amount, currency or time differ from the sealed record"
        return BatchItem(
            transaction_id=txid,
            amount=p.amount,
            currency=p.currency,
            card=p.card,
            captured_at=p.captured_at,
            emv=p.emv,
            brand=p.brand,
            aid=p.aid,
            signed_record=p.signed_record,
            signature=p.signature,
            key_id=p.key_id,
        )

    def _finish(
        self,
        txid: str,
        state: State,
        now: int,
        *,
        reason: str | None = None,
        host_ref: str | None = None,
        code: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        old = self._db.execute(
            "SELECT state, amount, currency, captured_at, masked_pan, brand, aid "
            "FROM payments WHERE transaction_id = ?",
            (txid,),
        ).fetchone()
        flagged = state in (State.DECLINED, State.FAILED)
        self._db.execute(
            "UPDATE payments SET state = ?, batch_id = NULL, finished_at = ?, "
            "updated_at = ?, reason = ?, host_ref = ?, host_code = ?, flagged = ? "
            "WHERE transaction_id = ?",
            (state.value, now, now, reason, host_ref, code, int(flagged), txid),
        )
        if state in _ERASED_STATES:
            # The host's final word: the card data has served its purpose (DESIGN.md:
            # sensitive data deleted once authorised). Destroyed with the state change, in
            # its transaction; the WAL is scrubbed after the commit (record_results).
            _erase_sql(self._db, txid, _erased_hash(txid, *old[1:]))
            self._scrub_owed = True
        self._transition(
            txid, State(old[0]), state, now, batch_id=batch_id, detail=reason or host_ref
        )

    def record_results(
        self, batch: Batch, results: Sequence[ItemResult], *, retry_at: int | None = None
    ) -> dict[ItemOutcome, int]:
        """Apply the host's answer to a batch in one transaction and close the batch.

        Items the host did not answer for, and RETRY items, go back to pending (due at
        `retry_at`); they keep their transaction id, which is the host's deduplication key.
        """
        by_id = {r.transaction_id: r for r in results}
        counts = dict.fromkeys(ItemOutcome, 0)
        with self._write():
            now = self._now()
            for item in batch.items:
                row = self._db.execute(
                    "SELECT state, batch_id FROM payments WHERE transaction_id = ?",
                    (item.transaction_id,),
                ).fetchone()
                if row is None or row[0] != State.SENDING.value or row[1] != batch.batch_id:
                    continue  # already recorded (a second call for the same batch)
                res = by_id.get(item.transaction_id) or ItemResult(
                    item.transaction_id, ItemOutcome.RETRY, reason="no result from the host"
                )
                counts[res.outcome] += 1
                if res.outcome is ItemOutcome.RETRY:
                    self._db.execute(
                        "UPDATE payments SET state = 'pending', batch_id = NULL, "
                        "next_attempt_at = ?, reason = ?, updated_at = ? "
                        "WHERE transaction_id = ?",
                        (retry_at, res.reason, now, item.transaction_id),
                    )
                    self._transition(
                        item.transaction_id,
                        State.SENDING,
                        State.PENDING,
                        now,
                        batch_id=batch.batch_id,
                        detail=res.reason or "retry",
                    )
                else:
                    self._finish(
                        item.transaction_id,
                        State(res.outcome.value),
                        now,
                        reason=res.reason,
                        host_ref=res.host_ref,
                        code=res.code,
                        batch_id=batch.batch_id,
                    )
            self._db.execute(
                "UPDATE batches SET closed_at = ?, last_attempt_at = ?, attempts = attempts + 1 "
                "WHERE batch_id = ?",
                (now, now, batch.batch_id),
            )
        if self._scrub_owed:
            # After the commit (a checkpoint cannot run inside a transaction): the pages the
            # erasure changed, and every older copy of them, leave the WAL. A reader in the
            # WAL makes it owed; the next sync, acceptance or close tries again.
            self.scrub()
        return counts

    def record_attempt_failed(self, batch: Batch, error: str) -> None:
        """The upload did not get an answer: the batch stays 'sending' to be resent as is."""
        with self._write():
            now = self._now()
            self._db.execute(
                "UPDATE batches SET attempts = attempts + 1, last_attempt_at = ?, last_error = ? "
                "WHERE batch_id = ?",
                (now, error[:500], batch.batch_id),
            )

    def record_batch_rejected(self, batch: Batch, error: str) -> None:
        """The host refused the batch as invalid: its payments become 'failed' (flagged)."""
        with self._write():
            now = self._now()
            for item in batch.items:
                row = self._db.execute(
                    "SELECT state, batch_id FROM payments WHERE transaction_id = ?",
                    (item.transaction_id,),
                ).fetchone()
                if row is not None and row[0] == "sending" and row[1] == batch.batch_id:
                    self._finish(
                        item.transaction_id,
                        State.FAILED,
                        now,
                        reason=f"host rejected the batch: {error}"[:500],
                        batch_id=batch.batch_id,
                    )
            self._db.execute(
                "UPDATE batches SET closed_at = ?, last_attempt_at = ?, last_error = ?, "
                "attempts = attempts + 1 WHERE batch_id = ?",
                (now, now, error[:500], batch.batch_id),
            )

    def requeue_failed(self, transaction_id: str) -> None:
        """A technician sends a failed payment again (after fixing the cause)."""
        with self._write():
            now = self._now()
            cur = self._db.execute(
                "UPDATE payments SET state = 'pending', flagged = 0, finished_at = NULL, "
                "next_attempt_at = NULL, updated_at = ? WHERE transaction_id = ? "
                "AND state = 'failed' AND payload IS NOT NULL AND transaction_id IN "
                "(SELECT transaction_id FROM card_data_keys)",
                (now, transaction_id),
            )
            if cur.rowcount == 0:
                raise UnknownPaymentError(f"no failed payment with transaction id {transaction_id}")
            self._transition(transaction_id, State.FAILED, State.PENDING, now, detail="requeued")

    def due_count(self) -> int:
        """Payments the forwarder still has to send (pending or sending)."""
        with self._file.connection():
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM payments WHERE state IN ('pending', 'sending')"
                ).fetchone()[0]
            )

    def next_due_at(self) -> int | None:
        """When the earliest deferred pending payment becomes due (None: nothing deferred)."""
        with self._file.connection():
            row = self._db.execute(
                "SELECT MIN(COALESCE(next_attempt_at, 0)) FROM payments WHERE state = 'pending'"
            ).fetchone()
            return None if row[0] is None else int(row[0])

    # --- export / import (see offline_queue.backup for the file format) -----------------

    def export_documents(self) -> list[dict[str, Any]]:
        """Every payment with its card data decrypted, for re-encryption under a transport key."""
        cipher = self._need_cipher()
        out = []
        with self._file.connection():
            for r in self._db.query(
                "SELECT p.*, k.wrapped_key FROM payments AS p LEFT JOIN card_data_keys AS k "
                "USING (transaction_id) ORDER BY p.created_at, p.rowid"
            ):
                txid = str(r["transaction_id"])
                payment: dict[str, Any] | None = None
                # Erased payments (accepted, declined) have neither payload nor key: the
                # backup carries their clear columns only.
                if r["payload"] is not None:
                    plaintext = cipher.open(txid, bytes(r["payload"]), _blob(r["wrapped_key"]))
                    payment = json.loads(plaintext)
                clear = {k: r[k] for k in _EXPORTED_COLUMNS}
                out.append({"row": clear, "payment": payment})
        return out

    def import_documents(self, documents: Iterable[Mapping[str, Any]]) -> ImportReport:
        """Add exported payments to this queue; payments already here are left alone.

        Rows that were 'sending' on the old unit come in as 'pending': their transaction id
        is the host's offline_id, so the resend is answered as a duplicate, not paid twice.
        """
        cipher = self._need_cipher()
        added: list[str] = []
        present: list[str] = []
        conflicts: list[str] = []
        prepared = [_prepare_import(cipher, d) for d in documents]
        with self._write():
            now = self._now()
            for row, payment, plaintext in prepared:
                txid = str(row["transaction_id"])
                existing = self._db.execute(
                    "SELECT content_hash FROM payments WHERE transaction_id = ?", (txid,)
                ).fetchone()
                erased_hash = _erased_hash(
                    txid,
                    int(row["amount"]),
                    int(row["currency"]),
                    int(row["captured_at"]),
                    str(row["masked_pan"]),
                    row["brand"],
                    row["aid"],
                )
                content_hash = (
                    self._content_hash(cipher, plaintext) if plaintext is not None else ""
                )
                if existing is not None:
                    if plaintext is None or existing[0] in (content_hash, erased_hash):
                        present.append(txid)
                    else:
                        conflicts.append(txid)
                    continue
                state = State(row["state"])
                if state is State.SENDING:
                    state = State.PENDING
                if state in _ERASED_STATES:
                    # A backup from before per-payment keys carries the card data of
                    # declined payments: not kept here either.
                    payment = None
                if payment is None:
                    if state in (State.PENDING, State.SENDING):
                        raise QueueError(f"backup item {txid}: unsent payment without card data")
                    self._db.table("payments").insert(
                        {
                            **{k: row[k] for k in _EXPORTED_COLUMNS},
                            "state": state.value,
                            "pan_hash": "",
                            "payload": None,
                            "content_hash": erased_hash
                            if state in _ERASED_STATES
                            else str(row["content_hash"]),
                            "batch_id": None,
                            "imported": 1,
                            "updated_at": now,
                        }
                    )
                else:
                    sealed = cipher.seal(txid, plaintext or b"")
                    keep = {
                        k: row[k]
                        for k in _EXPORTED_COLUMNS
                        if k not in ("transaction_id", "state", "masked_pan", "captured_at")
                        and k not in ("amount", "currency", "brand", "aid", "content_hash")
                    }
                    keep["updated_at"] = now
                    self._insert_row(
                        payment,
                        cipher,
                        sealed,
                        content_hash,
                        int(row["created_at"]),
                        state=state,
                        imported=True,
                        extra=keep,
                    )
                self._transition(txid, None, state, now, detail="imported from backup")
                added.append(txid)
        return ImportReport(tuple(added), tuple(present), tuple(conflicts))


_EXPORTED_COLUMNS: Final = (
    "transaction_id",
    "state",
    "amount",
    "currency",
    "masked_pan",
    "brand",
    "aid",
    "captured_at",
    "content_hash",
    "created_at",
    "sending_at",
    "finished_at",
    "attempts",
    "host_ref",
    "host_code",
    "reason",
    "flagged",
    "acknowledged_at",
)


def _prepare_import(
    cipher: CardCipher, doc: Mapping[str, Any]
) -> tuple[Mapping[str, Any], OfflinePayment | None, bytes | None]:
    try:
        row = doc["row"]
        missing = [k for k in _EXPORTED_COLUMNS if k not in row]
        if missing:
            raise QueueError(f"backup item: missing fields {', '.join(missing)}")
        State(row["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise QueueError(f"backup item: malformed ({exc})") from None
    if doc.get("payment") is None:
        return row, None, None
    payment = payment_from_document(doc["payment"])
    if payment.transaction_id != row["transaction_id"] or (
        payment.amount,
        payment.currency,
    ) != (row["amount"], row["currency"]):
        raise QueueError(f"backup item {row['transaction_id']}: payment does not match its row")
    return row, payment, _canonical(payment_document(payment))


def _row_to_payment(r: Mapping[str, Any]) -> QueuedPayment:
    return QueuedPayment(
        transaction_id=str(r["transaction_id"]),
        state=State(r["state"]),
        amount=int(r["amount"]),
        currency=int(r["currency"]),
        masked_pan=str(r["masked_pan"]),
        brand=r["brand"],
        aid=r["aid"],
        captured_at=int(r["captured_at"]),
        created_at=int(r["created_at"]),
        updated_at=int(r["updated_at"]),
        sending_at=r["sending_at"],
        finished_at=r["finished_at"],
        attempts=int(r["attempts"]),
        batch_id=r["batch_id"],
        host_ref=r["host_ref"],
        host_code=r["host_code"],
        reason=r["reason"],
        flagged=bool(r["flagged"]),
        acknowledged_at=r["acknowledged_at"],
        imported=bool(r["imported"]),
    )


def _fsync_directory(directory: Path) -> None:
    """Make the database, -wal and -shm directory entries durable (a new file's name is only
    on disk once its directory is fsynced; SQLite syncs file contents, not the directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data itself is synced
    finally:
        os.close(fd)
