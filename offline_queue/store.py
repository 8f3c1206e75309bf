"""The durable payment queue: one SQLite file (WAL, synchronous=FULL), via sqlite-utils over a
connection opened by :mod:`offline_queue.sqlite`.

Durability rule (DESIGN.md): `enqueue` returns only after the row is committed and the WAL is
fsynced, so a payment the merchant saw approved survives a crash or power cut at any instant.
Each state change is one IMMEDIATE transaction that also appends to `transitions`, so a crash
leaves every row in exactly one state with its full timestamped history.

Sensitive data (PAN, card data, EMV data, the signed record) lives only in `payload`, sealed
with AES-GCM bound to the transaction id (see :mod:`offline_queue.cardcrypt`). The clear
columns hold what the merchant may see: amount, currency, masked PAN, brand, AID, states.
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

from .cardcrypt import CardCipher, Token
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

SCHEMA_VERSION: Final = 1
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


# Migration n takes the schema from version n-1 to n. Append, never edit a published one.
MIGRATIONS: Final[tuple[Callable[[Database], None], ...]] = (_migrate_to_1,)

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
        )
        cipher = CardCipher(data_key, token=token) if data_key is not None else None
        try:
            with file.connection():
                db = Database(file.conn, execute_plugins=False)
                _migrate(file, db)
                queue = cls(file, db, cipher, clock=clock, token=token)
                queue._check_key()
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

    def close(self) -> None:
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
                if hmac.compare_digest(existing[0], content_hash):
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
        sealed: bytes | None,
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
            "payload": sealed,
            "content_hash": content_hash,
            "created_at": now,
            "updated_at": now,
            "imported": int(imported),
        }
        if extra:
            row.update(extra)
        self._db.table("payments").insert(row)

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
                "SELECT transaction_id, amount, currency, captured_at, payload FROM payments "
                "WHERE batch_id = ? AND state = 'sending' ORDER BY created_at, rowid",
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
            p = payment_from_document(json.loads(cipher.open(txid, bytes(r["payload"]))))
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
            "SELECT state FROM payments WHERE transaction_id = ?", (txid,)
        ).fetchone()
        flagged = state in (State.DECLINED, State.FAILED)
        # Once the host has the payment the card data has served its purpose: erase it
        # (DESIGN.md: sensitive data deleted once authorised). Declined and failed rows keep
        # it for the merchant's follow-up and the technician's export.
        payload_sql = ", payload = NULL" if state is State.ACCEPTED else ""
        self._db.execute(
            f"UPDATE payments SET state = ?, batch_id = NULL, finished_at = ?, "  # noqa: S608
            f"updated_at = ?, reason = ?, host_ref = ?, host_code = ?, flagged = ?"
            f"{payload_sql} WHERE transaction_id = ?",
            (state.value, now, now, reason, host_ref, code, int(flagged), txid),
        )
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
                "AND state = 'failed' AND payload IS NOT NULL",
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
            for r in self._db.query("SELECT * FROM payments ORDER BY created_at, rowid"):
                txid = str(r["transaction_id"])
                payment: dict[str, Any] | None = None
                if r["payload"] is not None:
                    payment = json.loads(cipher.open(txid, bytes(r["payload"])))
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
                content_hash = (
                    self._content_hash(cipher, plaintext)
                    if plaintext is not None
                    else str(row["content_hash"])
                )
                if existing is not None:
                    if existing[0] == content_hash or plaintext is None:
                        present.append(txid)
                    else:
                        conflicts.append(txid)
                    continue
                state = State(row["state"])
                if state is State.SENDING:
                    state = State.PENDING
                if payment is None:
                    if state in (State.PENDING, State.SENDING):
                        raise QueueError(f"backup item {txid}: unsent payment without card data")
                    self._db.table("payments").insert(
                        {
                            **{k: row[k] for k in _EXPORTED_COLUMNS},
                            "state": state.value,
                            "pan_hash": "",
                            "payload": None,
                            "content_hash": content_hash,
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
