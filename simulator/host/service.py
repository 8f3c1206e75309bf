"""The simulated acquirer's protocol logic, independent of FastAPI.

`AcquirerHost` authenticates signed requests (docs/protocol.md), applies idempotency and runs
each operation inside one SQLite transaction. Every method returns a JSON-able dict or raises
:class:`HostError`, which the web layer turns into a 4xx JSON body and records as a rejection.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from emv.pan import mask_pan

from ..errors import SimulatorError
from . import verify
from .decisions import (
    APPROVED,
    DO_NOT_HONOUR,
    INVALID_AMOUNT,
    CryptogramVerifier,
    EmvCryptogramVerifier,
    IssuerKey,
    Rules,
    brand_for,
    decide,
    decide_increment,
)
from .issuers import virtual_issuer_keys
from .ledger import Store

ENROL_PATH: Final = "/v1/enrol"
DEFAULT_WINDOW: Final = 300
_HEADERS: Final = (
    "x-pipos-terminal",
    "x-pipos-key-id",
    "x-pipos-seq",
    "x-pipos-timestamp",
    "x-pipos-signature",
)

Clock = Callable[[], float]
Token = Callable[[int], bytes]


class HostError(SimulatorError):
    """A request the host refuses: HTTP status, a stable machine code and a human message.

    `authenticated`: the request carried the valid signature (not a replay) of a key the
    host enrolled for a terminal, so the refusal is that terminal's doing and is recorded in
    the ledger; any other refusal, an enrolment's included (anyone can make a key pair and
    sign with it), is only counted in memory (simulator.host.guard). `detail` adds fields to
    the error object (``last_sequence`` of ``stale_sequence``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        authenticated: bool = False,
        detail: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.authenticated = authenticated
        self.detail = dict(detail or {})
        #: Seconds, for the ``Retry-After`` header of a ``429``.
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.detail}}


@dataclass(frozen=True)
class Caller:
    terminal_id: str  # "-" while enrolling
    merchant_id: str | None
    key_id: str
    seq: int
    idempotency_key: str | None
    public_key: bytes
    #: SHA-256 of the request's signature: an enrolment's is recorded (replay) only when
    #: the enrolment succeeds, so refused enrolments write nothing.
    signature_hash: str = ""

    @property
    def enrolled(self) -> bool:
        """The request was signed by the key of an enrolled terminal: its refusals are that
        terminal's doing. An enrolment's key is whatever the sender made up."""
        return self.terminal_id != verify.UNSET


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _default_ca_keys() -> list[dict[str, Any]]:
    path = Path(__file__).resolve().parent.parent / "data" / "test_ca_keys.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [dict(k) for k in data] if isinstance(data, list) else []


def default_parameters() -> dict[str, Any]:
    """A plausible UK contactless set-up; tests replace it through `PUT /admin/parameters`."""
    return {
        "terminal": {
            "country_code": "0826",
            "currency_code": "0826",
            "currency_exponent": 2,
            "merchant_category_code": "5999",
            "terminal_type": "22",
            "terminal_capabilities": "E0F8C8",
            "additional_terminal_capabilities": "6000F0A001",
        },
        "aids": [
            {
                "aid": "A0000000031010",
                "brand": "visa",
                "kernel": 3,
                "floor_limit": 0,
                "contactless_transaction_limit": 10000,
                "cvm_required_limit": 10000,
            },
            {
                "aid": "A0000000041010",
                "brand": "mastercard",
                "kernel": 2,
                "floor_limit": 0,
                "contactless_transaction_limit": 10000,
                "cvm_required_limit": 10000,
            },
        ],
        "ca_public_keys": _default_ca_keys(),
        "offline": {"max_count": 20, "max_total": 50000, "max_age_seconds": 86400},
    }


#: The card's own fields in the signed record, and where the item carries them (EMV tags).
_CARD_FIELDS: Final = (("cryptogram", "9F26"), ("atc", "9F36"), ("aid", None))


def mismatched_field(
    record: Mapping[str, Any], item: Mapping[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first field where the terminal's signed record and the uploaded item disagree:
    (name, what the record says, what the item says), or None.

    Compared: the id, amount, currency and capture time; the card by its masked PAN (the
    record holds no card data); and the card's own cryptogram (9F26), ATC (9F36) and AID.
    A card payment (an item with a PAN or EMV data, which every offline item is) needs all
    three in the record: the masked PAN alone fits every card of the same BIN and last 4,
    while the cryptogram is the card's own, computed over amount, ATC and unpredictable
    number, and checked by its issuer. Only a payment without card data (a code payment)
    may leave them empty. terminal/service/transfer.py applies the same rule to imports
    (tests/terminal/domain/test_signing.py checks that the two agree)."""
    emv = {str(k).upper(): str(v).upper() for k, v in (item.get("emv") or {}).items()}
    pan = str(item.get("pan") or "")
    pairs: list[tuple[str, Any, Any]] = [
        ("transaction_id", record.get("transaction_id"), item.get("offline_id")),
        ("amount", record.get("amount"), item.get("amount")),
        ("currency", record.get("currency"), item.get("currency")),
        ("captured_at", record.get("captured_at"), item.get("captured_at")),
        ("masked_pan", record.get("masked_pan"), mask_pan(pan)),
    ]
    for name, signed, sent in pairs:
        if signed != sent or isinstance(signed, bool) or isinstance(sent, bool):
            return name, signed, sent
    card = bool(pan or emv)
    for name, tag in _CARD_FIELDS:
        value = record.get(name)
        signed = value.upper() if isinstance(value, str) else value
        sent = emv.get(tag, "") if tag else str(item.get("aid") or "").upper()
        if not isinstance(signed, str) or (card and not signed) or signed != sent:
            return name, signed, sent
    return None


def _record_mismatch(record: Mapping[str, Any], item: Mapping[str, Any]) -> tuple[str, str] | None:
    """:func:`mismatched_field` as an item's refusal (code, reason). Masked PANs only."""
    found = mismatched_field(record, item)
    if found is None:
        return None
    name, signed, sent = found
    if name in ("cryptogram", "atc", "aid") and not signed:
        why = f"{name}: the signed record has none, and a card payment must carry its card's"
    else:
        why = f"{name}: the signed record says {signed!r}, the item says {sent!r}"
    return "record_mismatch", why


def _hex_map(data: Mapping[str, str] | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for tag, value in (data or {}).items():
        try:
            out[tag.upper()] = bytes.fromhex(value)
        except ValueError as exc:
            raise HostError(422, "invalid_emv_data", f"EMV tag {tag}: value is not hex") from exc
    return out


class AcquirerHost:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = time.time,
        token: Token = os.urandom,
        timestamp_window: int = DEFAULT_WINDOW,
        verifier: CryptogramVerifier | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.token = token
        self.window = timestamp_window
        self.verifier: CryptogramVerifier = verifier or EmvCryptogramVerifier(self._issuer_key)
        self._host_key = store.host_key()
        self.host_public_key = store.host_public_key()
        self.host_key_id = verify.key_id_for(self.host_public_key)

    def now(self) -> int:
        return int(self.clock())

    def _ref(self, prefix: str) -> str:
        return prefix + self.token(8).hex().upper()

    # --- authentication (docs/protocol.md "Verification") -------------------------------

    def authenticate(
        self, *, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Caller:
        values = {}
        for name in _HEADERS:
            value = headers.get(name)
            if not value:
                raise HostError(401, "missing_header", f"header {name} is required")
            values[name] = value
        seq_value = verify.header_number(values["x-pipos-seq"])
        timestamp_value = verify.header_number(values["x-pipos-timestamp"])
        if seq_value is None or timestamp_value is None:
            raise HostError(
                400,
                "bad_header",
                "X-Pipos-Seq and X-Pipos-Timestamp must be decimal digits, below 2^63",
            )
        seq, timestamp = seq_value, timestamp_value
        if len(values["x-pipos-signature"]) > verify.MAX_SIGNATURE_HEADER:
            raise HostError(400, "bad_header", "X-Pipos-Signature is too long")
        terminal_id = values["x-pipos-terminal"]
        key_id = values["x-pipos-key-id"]
        idem = headers.get("idempotency-key") or None
        for name, value in (("terminal id", terminal_id), ("key id", key_id), ("key", idem)):
            if value is not None and not verify.TOKEN.fullmatch(value):
                raise HostError(400, "bad_header", f"{name}: invalid characters or length")
        merchant_id: str | None = None
        last_seq = -1
        enrolling = path == ENROL_PATH
        if enrolling:
            if terminal_id != verify.UNSET:
                raise HostError(400, "bad_header", "enrolment is sent with X-Pipos-Terminal: -")
            public_key = self._enrol_public_key(body)
            if verify.key_id_for(public_key) != key_id:
                raise HostError(401, "bad_signature", "key id does not match the public key")
        else:
            row = self.store.one("SELECT * FROM terminals WHERE terminal_id = ?", (terminal_id,))
            if row is None:
                raise HostError(401, "unknown_terminal", f"terminal {terminal_id} is not enrolled")
            merchant_id = str(row["merchant_id"])
            last_seq = int(row["last_seq"])
            if row["key_id"] == key_id:
                public_key = bytes(row["public_key"])
            else:
                old = self.store.one(
                    "SELECT retired_at FROM terminal_keys WHERE terminal_id = ? AND key_id = ?",
                    (terminal_id, key_id),
                )
                if old is not None:
                    raise HostError(401, "retired_key", f"key {key_id} was retired by rotation")
                raise HostError(401, "unknown_key", f"key {key_id} is not this terminal's key")
        signature = verify.b64decode(values["x-pipos-signature"])
        message = verify.canonical_request(
            method=method,
            path=path,
            terminal_id=terminal_id,
            key_id=key_id,
            seq=seq,
            timestamp=timestamp,
            idempotency_key=idem,
            body=body,
        )
        if signature is None or not verify.verify(public_key, signature, message):
            raise HostError(
                401,
                "bad_signature",
                "signature does not verify: the request was altered or signed with another key",
            )
        sig_hash = hashlib.sha256(signature).hexdigest()
        now = self.now()
        with self.store.transaction() as conn:
            if conn.execute(
                "SELECT 1 FROM seen_requests WHERE signature_hash = ?", (sig_hash,)
            ).fetchone():
                raise HostError(409, "replayed_request", f"request seq {seq} was already received")
            if abs(now - timestamp) > self.window:
                raise HostError(
                    401,
                    "timestamp_out_of_window",
                    f"timestamp {timestamp} is more than {self.window}s from host time {now}",
                    # An enrolment's key is anyone's: only an enrolled terminal's is recorded.
                    authenticated=not enrolling,
                )
            if enrolling:
                # Nothing written for an enrolment until it succeeds (AcquirerHost.enrol):
                # anyone can sign one with a key of their own, so a refused one must cost
                # the host no row (issue 16).
                return Caller(terminal_id, None, key_id, seq, idem, public_key, sig_hash)
            if seq <= last_seq:
                # The answer carries the last accepted number (signed, like every answer), so
                # a terminal whose counter went back (an old sequence.json restored) jumps
                # past it by itself.
                raise HostError(
                    409,
                    "stale_sequence",
                    f"sequence number {seq} is not greater than the last accepted {last_seq}",
                    authenticated=True,
                    detail={"last_sequence": last_seq},
                )
            conn.execute(
                "INSERT INTO seen_requests (signature_hash, terminal_id, seq, at) "
                "VALUES (?, ?, ?, ?)",
                (sig_hash, terminal_id, seq, now),
            )
            conn.execute(
                "UPDATE terminals SET last_seq = ? WHERE terminal_id = ?", (seq, terminal_id)
            )
        return Caller(terminal_id, merchant_id, key_id, seq, idem, public_key, sig_hash)

    @staticmethod
    def _enrol_public_key(body: bytes) -> bytes:
        try:
            data = json.loads(body)
            key = verify.b64decode(str(data["public_key"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise HostError(422, "invalid_request", "enrolment body needs public_key") from exc
        if key is None or len(key) != 32:
            raise HostError(422, "invalid_request", "public_key must be 32 bytes, base64")
        return key

    def record_rejection(
        self, *, method: str, path: str, headers: Mapping[str, str], error: HostError
    ) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO rejections (at, terminal_id, key_id, method, path, seq, status, "
                "code, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.now(),
                    headers.get("x-pipos-terminal"),
                    headers.get("x-pipos-key-id"),
                    method,
                    path,
                    headers.get("x-pipos-seq"),
                    error.status,
                    error.code,
                    error.message,
                ),
            )

    def sign_response(self, *, terminal_id: str, seq: int, status: int, body: bytes) -> str:
        return verify.sign_response(
            self._host_key, terminal_id=terminal_id, seq=seq, status=status, body=body
        )

    # --- idempotency --------------------------------------------------------------------

    def idempotent(
        self,
        caller: Caller,
        endpoint: str,
        body: bytes,
        operation: Callable[[sqlite3.Connection], dict[str, Any]],
    ) -> tuple[int, bytes]:
        """Run `operation` once per (terminal, Idempotency-Key); replay the stored bytes after.

        The operation's effects and the stored response commit in one transaction, so a
        response lost after the commit is found again on retry and never re-executed.

        The request's fingerprint is `endpoint` and the body: `endpoint` names what the
        request acts on, its path parameters included (``preauths/{ref}/capture``), so the
        same key sent to another hold is a different request (422 idempotency_key_reused),
        never answered with the first hold's result.
        """
        key = caller.idempotency_key
        if not key:
            raise HostError(400, "missing_idempotency_key", f"{endpoint} needs Idempotency-Key")
        request_hash = hashlib.sha256(endpoint.encode() + b"\n" + body).hexdigest()
        scope = caller.terminal_id
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT request_hash, status, response FROM idempotency "
                "WHERE terminal_id = ? AND key = ?",
                (scope, key),
            ).fetchone()
            if row is not None:
                if row["request_hash"] != request_hash:
                    raise HostError(
                        422,
                        "idempotency_key_reused",
                        f"Idempotency-Key {key} was used for a different request",
                    )
                return int(row["status"]), bytes(row["response"])
            result = dumps(operation(conn))
            conn.execute(
                "INSERT INTO idempotency (terminal_id, key, endpoint, request_hash, status, "
                "response, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (scope, key, endpoint, request_hash, 200, result, self.now()),
            )
        return 200, result

    # --- admin ----------------------------------------------------------------------------

    def create_activation_code(self, merchant_id: str, code: str | None = None) -> str:
        code = code or "-".join(self.token(2).hex().upper() for _ in range(3))
        with self.store.transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO activation_codes (code, merchant_id, created_at) VALUES (?, ?, ?)",
                    (code, merchant_id, self.now()),
                )
            except sqlite3.IntegrityError as exc:
                raise HostError(409, "activation_code_exists", "activation code exists") from exc
        return code

    def rules(self) -> Rules:
        return Rules.from_json(self.store.get_config("rules", {}))

    def set_rules(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Store rules; PANs in card_limits/blocked_cards are replaced by card tokens."""
        stored = dict(data)
        stored["card_limits"] = {
            self.store.card_token(pan): int(limit)
            for pan, limit in (data.get("card_limits") or {}).items()
        }
        stored["blocked_cards"] = [self.store.card_token(p) for p in data.get("blocked_cards", [])]
        self.store.set_config("rules", stored)
        return {"rules": "updated"}

    def set_issuer_keys(self, keys: Mapping[str, Mapping[str, Any]]) -> None:
        for prefix, spec in keys.items():
            IssuerKey.from_json(spec)  # validate before storing
            if not (prefix.isascii() and prefix.isdigit()):
                raise HostError(422, "invalid_request", "issuer key prefixes are PAN digits")
        self.store.set_config("issuer_keys", {k: dict(v) for k, v in keys.items()})

    def _issuer_key(self, pan: str) -> IssuerKey | None:
        keys: dict[str, Any] | None = self.store.get_config("issuer_keys", None)
        if keys is None:  # none configured: the virtual cards' issuers (simulator.host.issuers)
            keys = virtual_issuer_keys()
        matches = [p for p in keys if pan.startswith(p)]
        if not matches:
            return None
        return IssuerKey.from_json(keys[max(matches, key=len)])

    def set_parameters(self, params: Mapping[str, Any]) -> int:
        with self.store.transaction():
            version = int(self.store.get_config("parameters_version", 1)) + 1
            self.store.set_config("parameters", dict(params))
            self.store.set_config("parameters_version", version)
        return version

    # --- operations ---------------------------------------------------------------------

    @property
    def host_key_fingerprint(self) -> str:
        """What a technician pins with `pipos provision --host-key` (printed with each
        activation code)."""
        return verify.fingerprint_for(self.host_public_key)

    def host_key_info(self) -> dict[str, Any]:
        return {
            "host_key_id": self.host_key_id,
            "host_public_key": verify.b64encode(self.host_public_key),
            "host_key_fingerprint": self.host_key_fingerprint,
        }

    def enrol(self, caller: Caller, body: Mapping[str, Any]) -> dict[str, Any]:
        code = str(body.get("activation_code", ""))
        serial = str(body.get("serial", ""))[:64]
        now = self.now()
        with self.store.transaction() as conn:
            row = conn.execute("SELECT * FROM activation_codes WHERE code = ?", (code,)).fetchone()
            if row is None:
                raise HostError(403, "activation_code_invalid", "activation code is not known")
            if row["used_at"] is not None:
                term = conn.execute(
                    "SELECT * FROM terminals WHERE terminal_id = ?", (row["terminal_id"],)
                ).fetchone()
                # A retry after a lost response, from the same key: answer the same enrolment.
                if term is not None and bytes(term["public_key"]) == caller.public_key:
                    self._seen(conn, caller, str(term["terminal_id"]), now)
                    return self._enrolment(str(term["terminal_id"]), str(term["merchant_id"]))
                raise HostError(409, "activation_code_used", "activation code was already used")
            if conn.execute(
                "SELECT 1 FROM terminal_keys WHERE public_key = ?", (caller.public_key,)
            ).fetchone():
                raise HostError(
                    409, "key_already_enrolled", "this public key belongs to an enrolled terminal"
                )
            terminal_id = "T" + self.token(5).hex().upper()
            merchant_id = str(row["merchant_id"])
            conn.execute(
                "INSERT INTO terminals (terminal_id, merchant_id, serial, key_id, public_key, "
                "last_seq, enrolled_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    terminal_id,
                    merchant_id,
                    serial,
                    caller.key_id,
                    caller.public_key,
                    caller.seq,
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO terminal_keys (terminal_id, key_id, public_key, added_at) "
                "VALUES (?, ?, ?, ?)",
                (terminal_id, caller.key_id, caller.public_key, now),
            )
            conn.execute(
                "UPDATE activation_codes SET used_at = ?, terminal_id = ? WHERE code = ?",
                (now, terminal_id, code),
            )
            self._seen(conn, caller, terminal_id, now)
            self.store.add_event(conn, now, terminal_id, None, "enrolled", {"serial": serial})
        return self._enrolment(terminal_id, merchant_id)

    @staticmethod
    def _seen(conn: sqlite3.Connection, caller: Caller, terminal_id: str, now: int) -> None:
        """An enrolment that succeeded: its signature is not taken a second time."""
        conn.execute(
            "INSERT OR IGNORE INTO seen_requests (signature_hash, terminal_id, seq, at) "
            "VALUES (?, ?, ?, ?)",
            (caller.signature_hash, terminal_id, caller.seq, now),
        )

    def _enrolment(self, terminal_id: str, merchant_id: str) -> dict[str, Any]:
        return {"terminal_id": terminal_id, "merchant_id": merchant_id, **self.host_key_info()}

    def rotate_key(self, caller: Caller, body: Mapping[str, Any]) -> dict[str, Any]:
        new_public = verify.b64decode(str(body.get("new_public_key", "")))
        proof = verify.b64decode(str(body.get("proof", "")))
        if new_public is None or len(new_public) != 32 or proof is None:
            raise HostError(422, "invalid_request", "new_public_key and proof must be base64")
        new_key_id = verify.key_id_for(new_public)
        message = "\n".join(
            ["PIPOS-ROTATE-V1", caller.terminal_id, caller.key_id, new_key_id]
        ).encode()
        if not verify.verify(new_public, proof, message):
            raise HostError(401, "bad_proof", "the new key did not sign the rotation proof")
        now = self.now()
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE terminal_keys SET retired_at = ? WHERE terminal_id = ? AND key_id = ?",
                (now, caller.terminal_id, caller.key_id),
            )
            conn.execute(
                "INSERT OR REPLACE INTO terminal_keys (terminal_id, key_id, public_key, added_at) "
                "VALUES (?, ?, ?, ?)",
                (caller.terminal_id, new_key_id, new_public, now),
            )
            conn.execute(
                "UPDATE terminals SET key_id = ?, public_key = ? WHERE terminal_id = ?",
                (new_key_id, new_public, caller.terminal_id),
            )
            self.store.add_event(
                conn,
                now,
                caller.terminal_id,
                None,
                "key_rotated",
                {"old": caller.key_id, "new": new_key_id},
            )
        return {"key_id": new_key_id, "retired_key_id": caller.key_id}

    def whoami(self, caller: Caller) -> dict[str, Any]:
        return {
            "terminal_id": caller.terminal_id,
            "merchant_id": caller.merchant_id,
            "key_id": caller.key_id,
            "seq": caller.seq,
        }

    def terminal_keys(self, caller: Caller, key_ids: Sequence[str]) -> dict[str, Any]:
        """Which of `key_ids` are keys (current or retired) the host enrolled for a terminal
        of the caller's merchant, with their public keys and terminals: what `pipos queue
        import` and `pipos unit import` ask before they believe a key a backup declares
        (docs/protocol.md, "Terminal keys"). Keys of other merchants' terminals are not
        named, as if unknown."""
        wanted = sorted({str(k) for k in key_ids})
        if not wanted:
            return {"merchant_id": caller.merchant_id, "keys": []}
        rows = self.store.query(
            "SELECT k.key_id, k.terminal_id, k.public_key, k.added_at, k.retired_at "
            "FROM terminal_keys k JOIN terminals t ON t.terminal_id = k.terminal_id "
            "WHERE t.merchant_id = ? AND k.key_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY k.key_id, k.terminal_id",
            (caller.merchant_id, json.dumps(wanted)),
        )
        return {
            "merchant_id": caller.merchant_id,
            "keys": [
                {
                    "key_id": r["key_id"],
                    "terminal_id": r["terminal_id"],
                    "public_key": verify.b64encode(bytes(r["public_key"])),
                    "added_at": r["added_at"],
                    "retired_at": r["retired_at"],
                }
                for r in rows
            ],
        }

    def parameters(self, caller: Caller) -> dict[str, Any]:
        params = self.store.get_config("parameters") or default_parameters()
        document = {
            "format": "pipos-params-1",
            "version": int(self.store.get_config("parameters_version", 1)),
            "terminal_id": caller.terminal_id,
            "merchant_id": caller.merchant_id,
            "issued_at": self.now(),
            **params,
        }
        text = dumps(document)
        return {
            "document": text.decode("utf-8"),
            "signature": verify.b64encode(self._host_key.sign(text)),
            "host_key_id": self.host_key_id,
        }

    def _spent(self, conn: sqlite3.Connection, card_token: str) -> int:
        """What the card has used of its limit: its approved sales (online and offline) and
        captures, and what its open holds hold (the first amount and the approved
        increments). A captured hold counts by its capture (the rest was released); a
        released, lapsed, declined or reversed one holds nothing."""
        # Open as _hold_state has it: authorised, not captured or released, not yet lapsed.
        lapsed_before = self.now() - self.rules().preauth_hold_days * 86400
        row = conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM transactions WHERE card_token = ? "
            "AND status = 'approved' AND ("
            "kind IN ('sale', 'offline_sale', 'capture') "
            "OR (kind = 'preauth' AND created_at > ?) "
            "OR (kind = 'increment' AND original_ref IN (SELECT ref FROM transactions "
            "WHERE kind = 'preauth' AND status = 'approved' AND created_at > ?)))",
            (card_token, lapsed_before, lapsed_before),
        ).fetchone()
        return int(row[0])

    def authorise(
        self,
        caller: Caller,
        conn: sqlite3.Connection,
        body: Mapping[str, Any],
        *,
        cryptogram_before_sale: bool = False,
    ) -> dict[str, Any]:
        """Authorise a sale and record it in the ledger, approved or declined.

        `cryptogram_before_sale` is for EMVCo consumer-presented codes (set only by the code
        payment router, never from a request field): the phone computes its ARQC before the
        terminal knows the amount (EMVCo CPM §3.3), so 9F02 and 5F2A are the phone's own and
        are not compared with the sale; the cryptogram is still verified over the data as sent.
        """
        now = self.now()
        idem = caller.idempotency_key
        tomb = conn.execute(
            "SELECT 1 FROM reversal_tombstones WHERE terminal_id = ? AND idempotency_key = ?",
            (caller.terminal_id, idem),
        ).fetchone()
        if tomb:
            self.store.add_event(
                conn, now, caller.terminal_id, None, "late_after_reversal", {"key": idem}
            )
            return {
                "transaction_ref": None,
                "outcome": "declined",
                "response_code": DO_NOT_HONOUR,
                "reason": "reversed before it arrived",
                "auth_code": None,
                "arc": "3035",
                "arpc": None,
                "arqc_status": "not_checked",
            }
        pan = str(body["pan"])
        amount = int(body["amount"])
        currency = int(body["currency"])
        pan_sequence = body.get("pan_sequence")
        emv = _hex_map(body.get("emv"))
        token = self.store.card_token(pan)
        brand = brand_for(body.get("aid"), body.get("brand"))
        arqc = self.verifier.verify_arqc(pan=pan, pan_sequence=pan_sequence, emv=emv)
        bound = not cryptogram_before_sale
        if bound and "9F02" in emv and int(emv["9F02"].hex() or "0") != amount:
            decision_code, reason = INVALID_AMOUNT, "amount does not match 9F02"
        elif bound and "5F2A" in emv and int(emv["5F2A"].hex() or "0") != currency:
            decision_code, reason = INVALID_AMOUNT, "currency does not match 5F2A"
        else:
            d = decide(
                self.rules(),
                amount=amount,
                card_token=token,
                spent=self._spent(conn, token),
                arqc=arqc,
            )
            decision_code, reason = d.response_code, d.reason
        approved = decision_code == APPROVED
        # ARC (8A) is the response code in ASCII (EMV Book 4 §A1, "an" 2).
        arc = decision_code.encode("ascii")
        arpc = None
        if arqc.status == "valid":
            arpc = self.verifier.make_arpc(pan=pan, pan_sequence=pan_sequence, emv=emv, arc=arc)
        # A pre-authorisation is authorised like a sale and kept as a hold (kind preauth):
        # captured, raised or released later by its reference (_hold).
        kind = "preauth" if body.get("kind") == "preauth" else "sale"
        ref = self._ref("P" if kind == "preauth" else "A")
        auth_code = self.token(3).hex().upper() if approved else None
        conn.execute(
            "INSERT INTO transactions (ref, terminal_id, merchant_id, kind, amount, currency, "
            "brand, masked_pan, card_token, status, response_code, reason, auth_code, "
            "arqc_status, idempotency_key, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ref,
                caller.terminal_id,
                caller.merchant_id,
                kind,
                amount,
                currency,
                brand,
                mask_pan(pan),
                token,
                "approved" if approved else "declined",
                decision_code,
                reason,
                auth_code,
                arqc.status,
                idem,
                now,
                now,
            ),
        )
        self.store.add_event(
            conn,
            now,
            caller.terminal_id,
            ref,
            "authorised" if approved else "declined",
            {"amount": amount, "currency": currency, "code": decision_code},
        )
        return {
            "transaction_ref": ref,
            "outcome": "approved" if approved else "declined",
            "response_code": decision_code,
            "reason": reason,
            "auth_code": auth_code,
            "arc": arc.hex().upper(),
            "arpc": arpc.hex().upper() if arpc else None,
            "arqc_status": arqc.status,
        }

    def record_code_sale(
        self,
        conn: sqlite3.Connection,
        *,
        terminal_id: str,
        amount: int,
        currency: int,
        scheme: str,
        masked: str,
        code: str,
        idempotency_key: str | None,
    ) -> str:
        """Book a sale the wallet provider has paid (a wallet payment code, or a merchant-
        presented code paid by a wallet) so settlement, refunds and reversals see it like a
        card sale. The scheme is the brand; the code is kept only as a keyed hash. Returns
        the transaction reference."""
        now = self.now()
        row = conn.execute(
            "SELECT merchant_id FROM terminals WHERE terminal_id = ?", (terminal_id,)
        ).fetchone()
        if row is None:
            raise HostError(404, "unknown_terminal", f"terminal {terminal_id} is not enrolled")
        ref = self._ref("W")
        conn.execute(
            "INSERT INTO transactions (ref, terminal_id, merchant_id, kind, amount, currency, "
            "brand, masked_pan, card_token, status, response_code, reason, auth_code, "
            "arqc_status, idempotency_key, created_at, updated_at) "
            "VALUES (?, ?, ?, 'sale', ?, ?, ?, ?, ?, 'approved', ?, 'paid by wallet', ?, "
            "'not_applicable', ?, ?, ?)",
            (
                ref,
                terminal_id,
                str(row["merchant_id"]),
                amount,
                currency,
                scheme.lower(),
                masked,
                self.store.card_token(code),
                APPROVED,
                self.token(3).hex().upper(),
                idempotency_key,
                now,
                now,
            ),
        )
        self.store.add_event(
            conn,
            now,
            terminal_id,
            ref,
            "authorised",
            {"amount": amount, "currency": currency, "code": APPROVED, "scheme": scheme},
        )
        return ref

    def _find(
        self,
        conn: sqlite3.Connection,
        caller: Caller,
        ref: str | None,
        idem: str | None,
        *,
        every_keyed_kind: bool = False,
    ) -> sqlite3.Row | None:
        """The caller's transaction by its reference, else by the Idempotency-Key it was
        sent under: a sale or a hold (what a reversal undoes), or with `every_keyed_kind`
        any kind the terminal sends under a key of its own (the status lookup: a lost
        answer to a refund or a change of a hold is looked up by its key like a sale's).
        Never an offline item: each carries its batch's key, shared by all of the batch."""
        if ref:
            row: sqlite3.Row | None = conn.execute(
                "SELECT * FROM transactions WHERE ref = ? AND terminal_id = ?",
                (ref, caller.terminal_id),
            ).fetchone()
            return row
        if idem:
            sql = (
                "SELECT * FROM transactions WHERE idempotency_key = ? AND terminal_id = ? "
                "AND kind IN ('sale', 'preauth', 'refund', 'increment', 'capture', 'release')"
                if every_keyed_kind
                else "SELECT * FROM transactions WHERE idempotency_key = ? AND terminal_id = ? "
                "AND kind IN ('sale', 'preauth')"
            )
            row = conn.execute(sql, (idem, caller.terminal_id)).fetchone()
            return row
        raise HostError(422, "invalid_request", "give original_ref or original_idempotency_key")

    def reverse(
        self, caller: Caller, conn: sqlite3.Connection, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        now = self.now()
        ref, idem = body.get("original_ref"), body.get("original_idempotency_key")
        row = self._find(conn, caller, ref, idem)
        if row is None:
            if ref:
                raise HostError(404, "not_found", f"transaction {ref} not found")
            # The original never arrived (or not yet): leave a tombstone so that it is
            # refused if it turns up later. This is what makes a reversal after a lost
            # response safe whichever way the race goes.
            conn.execute(
                "INSERT OR IGNORE INTO reversal_tombstones (terminal_id, idempotency_key, at) "
                "VALUES (?, ?, ?)",
                (caller.terminal_id, idem, now),
            )
            self.store.add_event(
                conn, now, caller.terminal_id, None, "reversal_no_original", {"key": idem}
            )
            return {"status": "no_original", "original_ref": None}
        if row["batch_id"] is not None:
            raise HostError(409, "already_settled", "transaction is settled; refund it instead")
        if row["status"] == "approved":
            conn.execute(
                "UPDATE transactions SET status = 'reversed', updated_at = ? WHERE ref = ?",
                (now, row["ref"]),
            )
            self.store.add_event(
                conn,
                now,
                caller.terminal_id,
                row["ref"],
                "reversed",
                {"reason": str(body.get("reason", ""))},
            )
            return {"status": "reversed", "original_ref": row["ref"]}
        if row["status"] in ("reversed", "voided"):
            return {"status": "already_reversed", "original_ref": row["ref"]}
        return {"status": "nothing_to_reverse", "original_ref": row["ref"]}

    def void(
        self, caller: Caller, conn: sqlite3.Connection, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        now = self.now()
        ref = str(body.get("original_ref", ""))
        row = self._find(conn, caller, ref, None)
        if row is None:
            raise HostError(404, "not_found", f"transaction {ref} not found")
        if row["batch_id"] is not None:
            raise HostError(409, "already_settled", "transaction is settled; refund it instead")
        if row["status"] != "approved":
            raise HostError(409, "not_voidable", f"transaction {ref} is {row['status']}")
        if conn.execute(
            "SELECT 1 FROM transactions WHERE original_ref = ? AND kind = 'refund' "
            "AND status = 'approved'",
            (ref,),
        ).fetchone():
            # Voiding would cancel the charge while the customer keeps the refund.
            raise HostError(409, "not_voidable", f"transaction {ref} has been refunded")
        conn.execute(
            "UPDATE transactions SET status = 'voided', updated_at = ? WHERE ref = ?", (now, ref)
        )
        self.store.add_event(conn, now, caller.terminal_id, ref, "voided", {})
        return {"status": "voided", "original_ref": ref}

    def refund(
        self, caller: Caller, conn: sqlite3.Connection, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        now = self.now()
        amount = int(body["amount"])
        currency = int(body["currency"])
        if amount <= 0:
            raise HostError(422, "invalid_amount", "refund amount must be positive")
        original = body.get("original_ref")
        if original:
            row = self._find(conn, caller, str(original), None)
            if row is None or row["kind"] not in ("sale", "offline_sale"):
                raise HostError(404, "not_found", f"sale {original} not found")
            if row["status"] != "approved":
                raise HostError(409, "not_refundable", f"sale {original} is {row['status']}")
            if int(row["currency"]) != currency:
                raise HostError(422, "currency_mismatch", "refund currency differs from the sale")
            refunded = conn.execute(
                "SELECT COALESCE(SUM(amount), 0) FROM transactions WHERE original_ref = ? "
                "AND kind = 'refund' AND status = 'approved'",
                (original,),
            ).fetchone()[0]
            if refunded + amount > int(row["amount"]):
                raise HostError(
                    422,
                    "refund_exceeds_sale",
                    f"refunds would total {refunded + amount}, sale was {row['amount']}",
                )
            brand, masked, token = row["brand"], row["masked_pan"], row["card_token"]
        else:
            pan = body.get("pan")
            if not pan:
                raise HostError(422, "invalid_request", "an unreferenced refund needs the card")
            self._check_unreferenced_refund(conn, caller, amount, now)
            brand = brand_for(body.get("aid"), body.get("brand"))
            masked, token = mask_pan(str(pan)), self.store.card_token(str(pan))
        ref = self._ref("R")
        conn.execute(
            "INSERT INTO transactions (ref, terminal_id, merchant_id, kind, amount, currency, "
            "brand, masked_pan, card_token, status, response_code, reason, auth_code, "
            "idempotency_key, original_ref, created_at, updated_at) "
            "VALUES (?, ?, ?, 'refund', ?, ?, ?, ?, ?, 'approved', '00', 'refund', ?, ?, ?, ?, ?)",
            (
                ref,
                caller.terminal_id,
                caller.merchant_id,
                amount,
                currency,
                brand,
                masked,
                token,
                self.token(3).hex().upper(),
                caller.idempotency_key,
                original,
                now,
                now,
            ),
        )
        self.store.add_event(
            conn, now, caller.terminal_id, ref, "refunded", {"amount": amount, "original": original}
        )
        return {"status": "approved", "transaction_ref": ref, "original_ref": original}

    # --- pre-authorisations -----------------------------------------------------------------

    def _hold(self, conn: sqlite3.Connection, caller: Caller, ref: str) -> sqlite3.Row:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM transactions WHERE ref = ? AND terminal_id = ? AND kind = 'preauth'",
            (ref, caller.terminal_id),
        ).fetchone()
        if row is None:
            raise HostError(404, "not_found", f"pre-authorisation {ref} not found")
        return row

    def _hold_state(self, conn: sqlite3.Connection, hold: sqlite3.Row) -> dict[str, Any]:
        """What a hold is now: held in total (its amount and approved increments), captured,
        released, and its status (open, captured, released, expired, or the authorisation's
        own: declined, reversed). Only an authorised hold holds anything: a declined or
        reversed one holds 0."""
        ref = hold["ref"]
        increments, captured = conn.execute(
            "SELECT COALESCE(SUM(CASE WHEN kind = 'increment' THEN amount END), 0), "
            "COALESCE(SUM(CASE WHEN kind = 'capture' THEN amount END), 0) "
            "FROM transactions WHERE original_ref = ? AND status = 'approved'",
            (ref,),
        ).fetchone()
        status = str(hold["status"])
        authorised_once = status in ("approved", "captured", "released")
        authorised = int(hold["amount"]) + int(increments) if authorised_once else 0
        if status == "approved":
            lapse = int(hold["created_at"]) + self.rules().preauth_hold_days * 86400
            status = "open" if self.now() < lapse else "expired"
        released = authorised - int(captured) if status in ("captured", "released") else 0
        return {
            "preauth_ref": ref,
            "authorised_amount": authorised,
            "captured_amount": int(captured),
            "released_amount": released,
            "hold_status": status,
        }

    def _open_hold(
        self, conn: sqlite3.Connection, caller: Caller, ref: str, action: str
    ) -> tuple[sqlite3.Row, dict[str, Any]]:
        """The hold `ref`, refused unless it is open (409 with the hold's status as code)."""
        hold = self._hold(conn, caller, ref)
        state = self._hold_state(conn, hold)
        status = state["hold_status"]
        if status != "open":
            code = {
                "captured": "hold_captured",
                "released": "hold_released",
                "expired": "hold_expired",
            }.get(status, "hold_not_open")
            raise HostError(409, code, f"cannot {action} pre-authorisation {ref}: it is {status}")
        return hold, state

    def _hold_row(
        self,
        conn: sqlite3.Connection,
        caller: Caller,
        hold: sqlite3.Row,
        kind: str,
        amount: int,
        *,
        status: str = "approved",
        response_code: str = APPROVED,
        reason: str = "",
    ) -> str:
        now = self.now()
        ref = self._ref({"increment": "I", "capture": "C", "release": "L"}[kind])
        conn.execute(
            "INSERT INTO transactions (ref, terminal_id, merchant_id, kind, amount, currency, "
            "brand, masked_pan, card_token, status, response_code, reason, auth_code, "
            "idempotency_key, original_ref, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ref,
                caller.terminal_id,
                caller.merchant_id,
                kind,
                amount,
                int(hold["currency"]),
                hold["brand"],
                hold["masked_pan"],
                hold["card_token"],
                status,
                response_code,
                reason or kind,
                self.token(3).hex().upper() if status == "approved" else None,
                caller.idempotency_key,
                hold["ref"],
                now,
                now,
            ),
        )
        self.store.add_event(
            conn, now, caller.terminal_id, ref, kind, {"amount": amount, "hold": hold["ref"]}
        )
        return ref

    @staticmethod
    def _check_currency(hold: sqlite3.Row, body: Mapping[str, Any]) -> None:
        if int(body["currency"]) != int(hold["currency"]):
            raise HostError(
                422, "currency_mismatch", "currency differs from the pre-authorisation's"
            )

    def increment(
        self, caller: Caller, conn: sqlite3.Connection, ref: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Raise an open hold: the issuer's rules decide on the added amount."""
        hold, _ = self._open_hold(conn, caller, ref, "raise")
        self._check_currency(hold, body)
        amount = int(body["amount"])
        token = str(hold["card_token"])
        d = decide_increment(
            self.rules(), amount=amount, card_token=token, spent=self._spent(conn, token)
        )
        approved = d.response_code == APPROVED
        txn = self._hold_row(
            conn,
            caller,
            hold,
            "increment",
            amount,
            status="approved" if approved else "declined",
            response_code=d.response_code,
            reason=d.reason,
        )
        return {
            "status": "approved" if approved else "declined",
            "transaction_ref": txn,
            "amount": amount,
            "response_code": d.response_code,
            "reason": d.reason,
        } | self._hold_state(conn, hold)

    def capture(
        self, caller: Caller, conn: sqlite3.Connection, ref: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Take 1 to all of an open hold, once: the money moves (settled as a sale of the
        amount captured) and the rest of the hold is released."""
        hold, state = self._open_hold(conn, caller, ref, "capture")
        self._check_currency(hold, body)
        amount = int(body["amount"])
        if not 0 < amount <= state["authorised_amount"]:
            raise HostError(
                422,
                "capture_exceeds_hold",
                f"capture of {amount} is over the hold of {state['authorised_amount']}",
            )
        txn = self._hold_row(conn, caller, hold, "capture", amount)
        conn.execute(
            "UPDATE transactions SET status = 'captured', updated_at = ? WHERE ref = ?",
            (self.now(), ref),
        )
        return {
            "status": "approved",
            "transaction_ref": txn,
            "amount": amount,
            "response_code": APPROVED,
        } | self._hold_state(conn, self._hold(conn, caller, ref))

    def release(self, caller: Caller, conn: sqlite3.Connection, ref: str) -> dict[str, Any]:
        """Give an open hold back whole."""
        hold, state = self._open_hold(conn, caller, ref, "release")
        txn = self._hold_row(conn, caller, hold, "release", state["authorised_amount"])
        conn.execute(
            "UPDATE transactions SET status = 'released', updated_at = ? WHERE ref = ?",
            (self.now(), ref),
        )
        return {
            "status": "approved",
            "transaction_ref": txn,
            "amount": state["authorised_amount"],
            "response_code": APPROVED,
        } | self._hold_state(conn, self._hold(conn, caller, ref))

    # --- unreferenced refunds ---------------------------------------------------------------

    def unreferenced_refund_limits(self) -> dict[str, int]:
        limits: dict[str, Any] = self.store.get_config("unreferenced_refund_limits", {}) or {}
        return {str(k): int(v) for k, v in limits.items()}

    def set_unreferenced_refund_limit(self, merchant_id: str, limit: int) -> dict[str, Any]:
        """Allow a merchant refunds that point at no sale of this host, up to `limit` minor
        units in total over any 24 hours (0, the default: none at all)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**63:
            raise HostError(422, "invalid_request", "limit: minor units, 0 to 2^63-1")
        with self.store.transaction():
            limits = self.unreferenced_refund_limits()
            limits[merchant_id] = limit
            self.store.set_config("unreferenced_refund_limits", limits)
        return {"merchant_id": merchant_id, "unreferenced_refund_limit": limit}

    def _check_unreferenced_refund(
        self, conn: sqlite3.Connection, caller: Caller, amount: int, now: int
    ) -> None:
        """A refund to a card with no sale of this host behind it moves money to any card:
        only within the merchant's explicit limit (issue 16)."""
        merchant = caller.merchant_id or ""
        limit = self.unreferenced_refund_limits().get(merchant, 0)
        if limit <= 0:
            raise HostError(
                403,
                "unreferenced_refund_refused",
                f"merchant {merchant} may not refund without the original sale: refund the "
                "sale itself (its reference), or ask the acquirer for an unreferenced refund "
                "limit",
            )
        done = conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM transactions WHERE merchant_id = ? "
            "AND kind = 'refund' AND original_ref IS NULL AND status = 'approved' "
            "AND created_at > ?",
            (merchant, now - 86400),
        ).fetchone()[0]
        if int(done) + amount > limit:
            raise HostError(
                403,
                "unreferenced_refund_limit",
                f"unreferenced refunds of merchant {merchant} would total {int(done) + amount} "
                f"in 24 hours, over its limit of {limit}: refund the original sale instead",
            )

    # --- offline batches ----------------------------------------------------------------

    def _record_problem(
        self, conn: sqlite3.Connection, caller: Caller, item: Mapping[str, Any]
    ) -> tuple[str, str] | None:
        """Why an offline item cannot be booked as the terminal's, or None.

        The item must carry the terminal's canonical record (terminal.checkout.core), its
        Ed25519 signature and the key id; the key must be one the host enrolled for a
        terminal of the caller's merchant (a replacement unit uploads what the old one
        signed); a retired key only for a record captured before it was retired; and the
        record must say what the item says."""
        raw = verify.b64decode(str(item.get("signed_record") or ""))
        signature = verify.b64decode(str(item.get("signature") or ""))
        key_id = item.get("key_id")
        if not raw or not signature or not key_id:
            return (
                "unsigned_record",
                "the payment carries no terminal signature (signed_record, signature, key_id)",
            )
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return "bad_record_signature", "the signed record is not a JSON object"
        signer = record.get("terminal_id") or caller.terminal_id
        key = conn.execute(
            "SELECT k.public_key, k.retired_at FROM terminal_keys k JOIN terminals t "
            "ON t.terminal_id = k.terminal_id WHERE k.terminal_id = ? AND k.key_id = ? "
            "AND t.merchant_id = ?",
            (str(signer), str(key_id), caller.merchant_id),
        ).fetchone()
        if key is None:
            return (
                "unknown_signing_key",
                f"key {str(key_id)[:40]} is not a key of terminal {str(signer)[:40]} of this "
                "merchant",
            )
        if not verify.verify(bytes(key["public_key"]), signature, raw):
            return (
                "bad_record_signature",
                f"the signature does not verify with key {key_id}: the record was altered or "
                "signed with another key",
            )
        captured = record.get("captured_at")
        if key["retired_at"] is not None and (
            not isinstance(captured, int) or captured > int(key["retired_at"]) + self.window
        ):
            return (
                "retired_signing_key",
                f"key {key_id} was retired before this record was captured",
            )
        return _record_mismatch(record, item)

    def offline_batch(
        self,
        caller: Caller,
        conn: sqlite3.Connection,
        body: Mapping[str, Any],
        *,
        mac_authenticated: bool = False,
    ) -> dict[str, Any]:
        """`mac_authenticated`: the items came in ISO 8583 advices (0220), each under the
        MAC of the terminal's session key, which vouches for it as the Ed25519 record
        signature does on the pipos protocol; they carry no signed record."""
        now = self.now()
        results: list[dict[str, Any]] = []
        rules = self.rules()
        for item in body.get("items", []):
            offline_id = str(item["offline_id"])
            problem = None if mac_authenticated else self._record_problem(conn, caller, item)
            if problem is not None:
                code, why = problem
                # Refused, not booked: nothing of it is in the ledger but this event, and the
                # terminal keeps it flagged for a technician rather than sending it again.
                self.store.add_event(
                    conn,
                    now,
                    caller.terminal_id,
                    None,
                    "offline_refused",
                    {"offline_id": offline_id, "code": code},
                )
                results.append(
                    {
                        "offline_id": offline_id,
                        "result": "refused",
                        "status": "refused",
                        "transaction_ref": None,
                        "response_code": None,
                        "reason_code": code,
                        "reason": why,
                    }
                )
                continue
            existing = conn.execute(
                "SELECT ref, status FROM transactions WHERE terminal_id = ? AND offline_id = ?",
                (caller.terminal_id, offline_id),
            ).fetchone()
            if existing is None:
                # A payment moved to a replacement unit (queue export/import) arrives under the
                # new unit's terminal id; if the old unit sent it before it died, it is the same
                # payment: same merchant, offline id (random), amount, currency and card.
                existing = conn.execute(
                    "SELECT ref, status FROM transactions WHERE offline_id = ? "
                    "AND merchant_id = ? AND kind = 'offline_sale' AND amount = ? "
                    "AND currency = ? AND card_token = ?",
                    (
                        offline_id,
                        caller.merchant_id,
                        int(item["amount"]),
                        int(item["currency"]),
                        self.store.card_token(str(item["pan"])),
                    ),
                ).fetchone()
            if existing is not None:
                # Per-item deduplication: a batch re-sent after a partial failure is safe.
                results.append(
                    {
                        "offline_id": offline_id,
                        "result": "duplicate",
                        "transaction_ref": existing["ref"],
                        "status": existing["status"],
                    }
                )
                continue
            pan = str(item["pan"])
            amount, currency = int(item["amount"]), int(item["currency"])
            token = self.store.card_token(pan)
            emv = _hex_map(item.get("emv"))
            arqc = self.verifier.verify_arqc(
                pan=pan, pan_sequence=item.get("pan_sequence"), emv=emv
            )
            d = decide(
                rules,
                amount=amount,
                card_token=token,
                spent=self._spent(conn, token),
                arqc=arqc,
                online=False,
            )
            status = "approved" if d.approved else "declined"
            ref = self._ref("O")
            conn.execute(
                "INSERT INTO transactions (ref, terminal_id, merchant_id, kind, amount, "
                "currency, brand, masked_pan, card_token, status, response_code, reason, "
                "arqc_status, idempotency_key, offline_id, created_at, updated_at) "
                "VALUES (?, ?, ?, 'offline_sale', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref,
                    caller.terminal_id,
                    caller.merchant_id,
                    amount,
                    currency,
                    brand_for(item.get("aid"), item.get("brand")),
                    mask_pan(pan),
                    token,
                    status,
                    d.response_code,
                    d.reason,
                    arqc.status,
                    caller.idempotency_key,
                    offline_id,
                    int(item.get("captured_at") or now),
                    now,
                ),
            )
            self.store.add_event(
                conn,
                now,
                caller.terminal_id,
                ref,
                "offline_" + status,
                {"offline_id": offline_id, "amount": amount},
            )
            results.append(
                {
                    "offline_id": offline_id,
                    "result": status,
                    "transaction_ref": ref,
                    "status": status,
                    "response_code": d.response_code,
                }
            )
        return {"items": results}

    def status(self, caller: Caller, *, ref: str | None, idem: str | None) -> dict[str, Any]:
        """A transaction of the caller's by reference or by key (any kind sent under a key
        of its own). A hold also gives what it holds (_hold_state); one that has lapsed has
        `status` expired, since the authorisation's row still says approved."""
        with self.store.transaction() as conn:
            row = self._find(conn, caller, ref, idem, every_keyed_kind=True)
            if row is None:
                tomb = (
                    idem
                    and conn.execute(
                        "SELECT 1 FROM reversal_tombstones WHERE terminal_id = ? "
                        "AND idempotency_key = ?",
                        (caller.terminal_id, idem),
                    ).fetchone()
                )
                if tomb:
                    return {"transaction_ref": None, "status": "reversed_before_arrival"}
                raise HostError(404, "not_found", "no such transaction for this terminal")
            found = {
                k: row[k]
                for k in (
                    "ref",
                    "kind",
                    "status",
                    "amount",
                    "currency",
                    "brand",
                    "masked_pan",
                    "response_code",
                    "auth_code",
                    "batch_id",
                    "original_ref",
                    "created_at",
                )
            }
            hold = self._hold_state(conn, row) if row["kind"] == "preauth" else {}
            if hold.get("hold_status") == "expired":
                found["status"] = "expired"
            return found | hold | {"transaction_ref": row["ref"]}

    def settle(
        self, caller: Caller, conn: sqlite3.Connection, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        now = self.now()
        batch_id = self._ref("B")
        rows = conn.execute(
            "SELECT kind, brand, currency, status, amount FROM transactions "
            "WHERE terminal_id = ? AND batch_id IS NULL",
            (caller.terminal_id,),
        ).fetchall()
        totals: dict[tuple[str, int], dict[str, Any]] = {}
        for r in rows:
            # A hold, its increments and its release move no money; its capture is a sale.
            if r["status"] != "approved" or r["kind"] in ("preauth", "increment", "release"):
                continue
            t = totals.setdefault(
                (r["brand"], int(r["currency"])),
                {
                    "brand": r["brand"],
                    "currency": int(r["currency"]),
                    "sales_count": 0,
                    "sales_amount": 0,
                    "refunds_count": 0,
                    "refunds_amount": 0,
                },
            )
            if r["kind"] == "refund":
                t["refunds_count"] += 1
                t["refunds_amount"] += int(r["amount"])
            else:
                t["sales_count"] += 1
                t["sales_amount"] += int(r["amount"])
        out = []
        for key in sorted(totals):
            t = totals[key]
            t["net_amount"] = t["sales_amount"] - t["refunds_amount"]
            out.append(t)
        conn.execute(
            "UPDATE transactions SET batch_id = ? WHERE terminal_id = ? AND batch_id IS NULL",
            (batch_id, caller.terminal_id),
        )
        conn.execute(
            "INSERT INTO batches (batch_id, terminal_id, closed_at, totals) VALUES (?, ?, ?, ?)",
            (batch_id, caller.terminal_id, now, json.dumps(out, sort_keys=True)),
        )
        self.store.add_event(
            conn,
            now,
            caller.terminal_id,
            None,
            "settled",
            {"batch_id": batch_id, "count": len(rows)},
        )
        terminal_totals = body.get("terminal_totals")
        in_balance = None
        if terminal_totals is not None:

            def norm(ts: Any) -> list[tuple[str, int, int, int, int, int]]:
                return sorted(
                    (
                        str(t["brand"]),
                        int(t["currency"]),
                        int(t["sales_count"]),
                        int(t["sales_amount"]),
                        int(t["refunds_count"]),
                        int(t["refunds_amount"]),
                    )
                    for t in ts
                )

            in_balance = norm(terminal_totals) == norm(out)
        return {
            "batch_id": batch_id,
            "closed_at": now,
            "transaction_count": len(rows),
            "totals": out,
            "in_balance": in_balance,
        }
