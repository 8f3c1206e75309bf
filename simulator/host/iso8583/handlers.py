"""What the simulated ISO 8583 host does with each message: the terminal found by its TID,
the MAC checked, the message mapped onto the JSON host's own operations (AcquirerHost:
authorise, refund, void, reverse, offline_batch, settle, increment, capture), exactly once.

One request, one answer (docs/iso8583.md, "The link, message by message"):

    0800 70=161 key exchange  -> 0810 39=00, 63 = MAC=<TR-31>;PIN=<TR-31>, MAC'd under the
                                 new MAC key (the request may come without a MAC)
    0800 70=001 sign-on, 301 echo test -> 0810 39=00
    0200 3=00 purchase        -> authorise               0210 39, 37 RRN, 38, 55 (91, 8A)
    0200 3=20 refund          -> refund (37: the sale's RRN; none: unreferenced)
    0200 3=02 void            -> void of the sale named by 37 (and 38)
    0100 3=00                 -> authorise, a pre-authorisation's hold   0110
    0100 with 37 and 25=06    -> increment of the hold named by 37
    0220 with 37 and 25=06    -> capture of the hold named by 37         0230
    0220 without 37           -> offline upload of one payment (62: its offline id)
    0400 / 0420 with 90       -> reverse the message 90 names (a tombstone if it never came)
    0500 3=920000             -> totals compared: 00 in balance (batch closed), 95 not
    0320                      -> batch upload of one transaction, recorded   0330 39=00
    0500 3=960000             -> the batch closed on the host's totals   0510 39=00

Exactly once: every money message runs inside AcquirerHost.idempotent under the key
``iso8583:<class>:<STAN>:<field 7>`` (class: the MTI's first three digits, so 0201 is
0200's repeat), with the message's fields but the MAC as the fingerprint. A repeat, or the
same message again, gets the stored answer; the same key with other content, 94.

The answer to a request has its type with the function digit + 1 and origin digit 0 (ISO
8583:1987 §4.1.3; 0201, a repeat, is answered 0210 as 0200 is), echoes the request's
identifying fields (3, 4, 7, 11, 12, 13, 24, 25, 41, 42, 49, 60, 70, 90) and is MAC'd under
the key the request was MAC'd under. A request without a MAC or with a wrong one is not
processed: 39=63, MAC'd under the newest key. An unknown TID: 39=58, no MAC (there is no
key), and the connection is closed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from emv import tlv
from emv.errors import EmvError

from ...errors import SimulatorError
from ..decisions import APPROVED, INVALID_AMOUNT, INVALID_TRANSACTION
from ..service import AcquirerHost, Caller, HostError
from .codec import FieldValue, Message, decode, encode, verify_mac
from .profile import HostProfile
from .terminals import IsoTerminal, SessionKey, TerminalRegistry

__all__ = ["Iso8583Host", "Reply", "answer_mti"]

log = logging.getLogger(__name__)

# Field 39 codes of the link (ISO 8583:1987 Annex A) beside the issuer's decisions.
INVALID_MERCHANT: Final = "03"
FORMAT_ERROR: Final = "30"
NOT_PERMITTED_TO_CARDHOLDER: Final = "57"
EXCEEDS_LIMIT: Final = "61"
NOT_PERMITTED_TO_TERMINAL: Final = "58"
SECURITY_VIOLATION: Final = "63"
DUPLICATE_TRANSMISSION: Final = "94"
RECONCILE_ERROR: Final = "95"
SYSTEM_MALFUNCTION: Final = "96"

#: The request's fields every answer carries back (as received).
_ECHO: Final = ("3", "4", "7", "11", "12", "13", "24", "25", "41", "42", "49", "60", "70", "90")
#: How a refusal of the JSON host (HostError.code) reads in field 39.
_REFUSALS: Final[Mapping[str, str]] = {
    "not_found": INVALID_TRANSACTION,
    "not_voidable": INVALID_TRANSACTION,
    "not_refundable": INVALID_TRANSACTION,
    "already_settled": INVALID_TRANSACTION,
    "hold_captured": INVALID_TRANSACTION,
    "hold_released": INVALID_TRANSACTION,
    "hold_expired": INVALID_TRANSACTION,
    "hold_not_open": INVALID_TRANSACTION,
    "invalid_amount": INVALID_AMOUNT,
    "refund_exceeds_sale": INVALID_AMOUNT,
    "capture_exceeds_hold": INVALID_AMOUNT,
    "currency_mismatch": INVALID_AMOUNT,
    "unreferenced_refund_refused": NOT_PERMITTED_TO_CARDHOLDER,
    "unreferenced_refund_limit": EXCEEDS_LIMIT,
    "invalid_request": FORMAT_ERROR,
    "invalid_emv_data": FORMAT_ERROR,
    "idempotency_key_reused": DUPLICATE_TRANSMISSION,
}
#: Field 25, POS condition code: 06, a pre-authorisation's follow-up (increment, capture).
_PREAUTH_FOLLOW_UP: Final = "06"
_MAX_AMOUNT: Final = 10**12 - 1


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server does: send `data` (None: nothing), then close if `close`."""

    data: bytes | None
    close: bool = False


def answer_mti(mti: str) -> str:
    """The answer's type: function digit + 1, origin 0 (0200 and its repeat 0201 -> 0210)."""
    return mti[:2] + str(int(mti[2]) + 1) + "0"


def _is_request(mti: str) -> bool:
    return len(mti) == 4 and mti.isdigit() and int(mti[2]) % 2 == 0


def _refused(what: str, code: str = "invalid_request") -> HostError:
    return HostError(422, code, what)


def _digits(message: Message, key: str, what: str) -> str:
    value = message.text(key)
    if not value.isdigit():
        raise _refused(f"field {key} ({what}) must be digits")
    return value


def _amount(message: Message) -> int:
    amount = int(_digits(message, "4", "amount"))
    if not 0 < amount <= _MAX_AMOUNT:
        raise _refused("field 4: the amount must be 1 or more minor units", "invalid_amount")
    return amount


def _currency(message: Message) -> int:
    currency = int(_digits(message, "49", "currency"))
    if not 1 <= currency <= 999:
        raise _refused("field 49: an ISO 4217 numeric currency code")
    return currency


def _card(message: Message) -> dict[str, Any]:
    """The card of a financial message: PAN (2) and expiry (14), or track 2 (35)."""
    pan, expiry = message.text("2"), message.text("14")
    track2 = message.text("35").upper().replace("=", "D")
    if not pan and track2:
        pan, _, rest = track2.partition("D")
        expiry = rest[:4]
    if not (pan.isdigit() and 12 <= len(pan) <= 19):
        raise _refused("field 2 or 35: a PAN of 12 to 19 digits")
    card: dict[str, Any] = {"pan": pan}
    if len(expiry) == 4 and expiry.isdigit():
        card["expiry"] = expiry
    sequence = message.text("23")
    if sequence:
        if not sequence.isdigit() or int(sequence) > 99:
            raise _refused("field 23: a PAN sequence number, 0 to 99")
        card["pan_sequence"] = int(sequence)
    return card


def _emv(message: Message) -> dict[str, str]:
    """Field 55's data objects, tag hex -> value hex (as the JSON host takes them)."""
    raw = message.fields.get("55")
    if not isinstance(raw, bytes) or not raw:
        return {}
    try:
        objects = tlv.flatten(tlv.decode(raw))
    except EmvError as exc:
        raise _refused(f"field 55 is not BER-TLV: {exc}", "invalid_emv_data") from exc
    return {tlv.tag_hex(tag): value.hex().upper() for tag, value in objects.items()}


def _aid(emv: Mapping[str, str]) -> str | None:
    """The application: 4F (the card's AID), else 9F06 (the terminal's), else 84."""
    return emv.get("4F") or emv.get("9F06") or emv.get("84") or None


def _fingerprint(message: Message) -> bytes:
    """The request as the dedup compares it: every field but the MAC, the origin digit
    normalised (a repeat is the same request)."""
    fields = {
        key: value.hex().upper() if isinstance(value, bytes) else value
        for key, value in message.fields.items()
        if key not in ("64", "128")
    }
    return json.dumps(
        {"t": message.mti[:3] + "0", **fields}, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")


@dataclass(frozen=True, slots=True)
class _Exchange:
    """A request from a known terminal whose MAC (or its absence) was accepted."""

    request: Message
    terminal: IsoTerminal
    key: SessionKey | None

    def caller(self, idempotency_key: str | None) -> Caller:
        return Caller(
            terminal_id=self.terminal.terminal_id,
            merchant_id=self.terminal.merchant_id,
            key_id=f"iso8583:{self.terminal.tid}",
            seq=0,
            idempotency_key=idempotency_key,
            public_key=b"",
        )


Operation = Callable[[sqlite3.Connection, Caller], dict[str, Any]]


class Iso8583Host:
    """The message handlers, on the JSON host's AcquirerHost and ledger (synchronous: the
    server calls them from a worker thread)."""

    def __init__(
        self,
        host: AcquirerHost,
        profile: HostProfile,
        *,
        registry: TerminalRegistry | None = None,
    ) -> None:
        self.host = host
        self.profile = profile
        self.registry = registry or TerminalRegistry(host)

    # --- reading and answering ------------------------------------------------------------

    def read(self, raw: bytes) -> Message | None:
        """The request in `raw`, or None when it is not a message under the profile."""
        try:
            return decode(self.profile, raw)
        except SimulatorError as exc:
            log.warning("ISO 8583: unreadable message of %d bytes: %s", len(raw), exc)
            return None

    def _reply(
        self,
        request: Message,
        answer: Mapping[str, FieldValue],
        key: SessionKey | None,
        *,
        close: bool = False,
    ) -> Reply:
        fields: dict[str, FieldValue] = {
            k: request.fields[k] for k in _ECHO if isinstance(request.fields.get(k), str)
        }
        for k, v in answer.items():
            # Stored answers keep binary fields as hex (they are JSON in the ledger).
            fields[k] = bytes.fromhex(v) if isinstance(v, str) and self.profile.binary(k) else v
        data = encode(self.profile, answer_mti(request.mti), fields, key.mac_key if key else None)
        return Reply(data, close)

    def answer(self, request: Message) -> Reply:
        """Process `request` and answer it (module docstring)."""
        if not _is_request(request.mti):
            log.warning("ISO 8583: %r is not a request's message type", request.mti)
            return Reply(None, close=True)
        terminal = self.registry.terminal(request.text("41"))
        if terminal is None:
            return self._reply(request, {"39": NOT_PERMITTED_TO_TERMINAL}, None, close=True)
        keys = self.registry.mac_keys(terminal, self.profile.mac_algorithm)
        newest = keys[0] if keys else None
        key: SessionKey | None = None
        if request.mac_present:
            key = next((k for k in keys if verify_mac(self.profile, request, k.mac_key)), None)
            if key is None:
                log.warning("ISO 8583: %s from %s with a wrong MAC", request.mti, terminal.tid)
                return self._reply(request, {"39": SECURITY_VIOLATION}, newest)
            self.registry.confirm(terminal, key)
        elif not (request.mti[:3] == "080" and request.text("70") == "161"):
            log.warning("ISO 8583: %s from %s without a MAC", request.mti, terminal.tid)
            return self._reply(request, {"39": SECURITY_VIOLATION}, newest)
        exchange = _Exchange(request, terminal, key)
        if request.text("42").rstrip() != terminal.mid:
            return self._reply(request, {"39": INVALID_MERCHANT}, key)
        try:
            return self._dispatch(exchange)
        except HostError as exc:
            # Refused, nothing booked (the operation's transaction rolled back).
            return self._reply(request, {"39": _REFUSALS.get(exc.code, SYSTEM_MALFUNCTION)}, key)
        except SimulatorError as exc:  # the ledger failed: nothing committed either
            log.error("ISO 8583: %s from %s not processed: %s", request.mti, terminal.tid, exc)
            return self._reply(request, {"39": SYSTEM_MALFUNCTION}, key)

    def malfunction(self, request: Message) -> Reply:
        """39=96 without processing (the fault board's http_500), MAC'd as an answer would
        be."""
        terminal = self.registry.terminal(request.text("41"))
        if terminal is None or not _is_request(request.mti):
            return Reply(None, close=True)
        keys = self.registry.mac_keys(terminal, self.profile.mac_algorithm)
        key = next((k for k in keys if verify_mac(self.profile, request, k.mac_key)), None)
        return self._reply(request, {"39": SYSTEM_MALFUNCTION}, key or (keys[0] if keys else None))

    def _dispatch(self, exchange: _Exchange) -> Reply:
        request = exchange.request
        kind = request.mti[:3]
        processing = request.text("3")[:2]
        follow_up = "37" in request.fields and request.text("25") == _PREAUTH_FOLLOW_UP
        if kind == "080":
            return self._network(exchange)
        operation: Operation | None = None
        if kind == "010" and processing == "00" and follow_up:
            operation = self._increment(request)
        elif kind == "010" and processing == "00":
            operation = self._authorise(request, "preauth")
        elif kind == "020" and processing == "00":
            operation = self._authorise(request, "sale")
        elif kind == "020" and processing == "20":
            operation = self._refund(request)
        elif kind == "020" and processing == "02":
            operation = self._void(request)
        elif kind == "022":
            if follow_up:
                operation = self._capture(request)
            elif "37" not in request.fields:
                operation = self._offline(request)
        elif kind in ("040", "042"):
            operation = self._reverse(request)
        elif kind == "050":
            operation = self._reconcile(request)
        elif kind == "032":
            operation = self._upload(exchange.terminal, request)
        if operation is None:
            return self._reply(request, {"39": INVALID_TRANSACTION}, exchange.key)
        return self._exactly_once(exchange, operation)

    def _exactly_once(self, exchange: _Exchange, operation: Operation) -> Reply:
        request = exchange.request
        stan = _digits(request, "11", "STAN")
        sent = _digits(request, "7", "transmission date and time")
        kind = request.mti[:3]
        caller = exchange.caller(f"iso8583:{kind}:{stan}:{sent}")
        _, body = self.host.idempotent(
            caller,
            f"iso8583/{kind}0",
            _fingerprint(request),
            lambda conn: operation(conn, caller),
        )
        stored = json.loads(body)
        return self._reply(request, stored["answer"], exchange.key)

    # --- network management ---------------------------------------------------------------

    def _network(self, exchange: _Exchange) -> Reply:
        request, terminal = exchange.request, exchange.terminal
        code = request.text("70")
        if code == "161":
            new_key, blocks = self.registry.exchange(terminal, self.profile.mac_algorithm)
            return self._reply(request, {"39": APPROVED, "63": blocks}, new_key)
        if code == "001":
            self.registry.signed_on(terminal)
            return self._reply(request, {"39": APPROVED}, exchange.key)
        if code == "301":
            return self._reply(request, {"39": APPROVED}, exchange.key)
        return self._reply(request, {"39": INVALID_TRANSACTION}, exchange.key)

    # --- the ledger's RRNs ----------------------------------------------------------------

    @staticmethod
    def _rrn(conn: sqlite3.Connection, ref: str) -> str:
        """The RRN of ledger transaction `ref` (an12: its row number, 12 digits), made the
        first time it is asked for."""
        row = conn.execute("SELECT id FROM iso8583_rrns WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            number = conn.execute("INSERT INTO iso8583_rrns (ref) VALUES (?)", (ref,)).lastrowid
        else:
            number = row["id"]
        return f"{int(number or 0):012d}"

    @staticmethod
    def _ref(conn: sqlite3.Connection, request: Message) -> str:
        """The ledger reference of the RRN in field 37 (HostError not_found: none)."""
        rrn = request.text("37").strip()
        row = (
            conn.execute("SELECT ref FROM iso8583_rrns WHERE id = ?", (int(rrn),)).fetchone()
            if rrn.isdigit()
            else None
        )
        if row is None:
            raise HostError(404, "not_found", f"no transaction has RRN {rrn!r}")
        return str(row["ref"])

    @staticmethod
    def _auth_code(conn: sqlite3.Connection, ref: str) -> str | None:
        row = conn.execute("SELECT auth_code FROM transactions WHERE ref = ?", (ref,)).fetchone()
        return None if row is None or row["auth_code"] is None else str(row["auth_code"])

    def _booked(self, conn: sqlite3.Connection, code: str, ref: str | None) -> dict[str, Any]:
        """An answer naming a ledger transaction: 39, its RRN (37) and auth code (38)."""
        answer: dict[str, Any] = {"39": code}
        if ref:
            answer["37"] = self._rrn(conn, ref)
            auth = self._auth_code(conn, ref) if code == APPROVED else None
            if auth:
                answer["38"] = auth
        return {"answer": answer, "ref": ref}

    # --- money messages -------------------------------------------------------------------

    def _authorise(self, request: Message, kind: str) -> Operation:
        emv = _emv(request)
        body = {
            **_card(request),
            "amount": _amount(request),
            "currency": _currency(request),
            "aid": _aid(emv),
            "emv": emv,
            "kind": kind,
        }

        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            result = self.host.authorise(caller, conn, body)
            booked = self._booked(conn, str(result["response_code"]), result["transaction_ref"])
            if result.get("arpc"):
                # Issuer authentication data (EMV Book 2 §8.2.1, ARPC method 1): the ARPC
                # and the ARC it was computed over; 8A the ARC itself.
                arc, arpc = bytes.fromhex(result["arc"]), bytes.fromhex(result["arpc"])
                icc = tlv.encode(
                    [tlv.Tlv.primitive(0x91, arpc + arc), tlv.Tlv.primitive(0x8A, arc)]
                )
                booked["answer"]["55"] = icc.hex().upper()
            return booked

        return operation

    def _refund(self, request: Message) -> Operation:
        amount, currency = _amount(request), _currency(request)
        referenced = "37" in request.fields
        card = {} if referenced else _card(request)
        aid = None if referenced else _aid(_emv(request))

        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            body: dict[str, Any] = {"amount": amount, "currency": currency}
            if referenced:
                body["original_ref"] = self._ref(conn, request)
            else:
                body |= {"pan": card["pan"], "aid": aid}
            result = self.host.refund(caller, conn, body)
            return self._booked(conn, APPROVED, str(result["transaction_ref"]))

        return operation

    def _void(self, request: Message) -> Operation:
        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            ref = self._ref(conn, request)
            auth = request.text("38").strip()
            if auth and auth != (self._auth_code(conn, ref) or ""):
                raise HostError(409, "not_voidable", "field 38 is not the sale's auth code")
            self.host.void(caller, conn, {"original_ref": ref})
            # The answer names the sale voided (a void is no transaction of its own).
            named = {k: request.text(k) for k in ("37", "38") if k in request.fields}
            return {"answer": {"39": APPROVED, **named}, "ref": ref}

        return operation

    def _increment(self, request: Message) -> Operation:
        change = {"amount": _amount(request), "currency": _currency(request)}

        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            result = self.host.increment(caller, conn, self._ref(conn, request), change)
            return self._booked(conn, str(result["response_code"]), result["transaction_ref"])

        return operation

    def _capture(self, request: Message) -> Operation:
        change = {"amount": _amount(request), "currency": _currency(request)}

        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            result = self.host.capture(caller, conn, self._ref(conn, request), change)
            return self._booked(conn, APPROVED, str(result["transaction_ref"]))

        return operation

    def _offline(self, request: Message) -> Operation:
        offline_id = request.text("62").strip()
        if not offline_id or len(offline_id) > 128:
            raise _refused("field 62: the offline payment's id (1 to 128 characters)")
        emv = _emv(request)
        item = {
            **_card(request),
            "offline_id": offline_id,
            "amount": _amount(request),
            "currency": _currency(request),
            "aid": _aid(emv),
            "emv": emv,
        }

        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            [result] = self.host.offline_batch(
                caller, conn, {"items": [item]}, mac_authenticated=True
            )["items"]
            ref = result.get("transaction_ref")
            if result["result"] == "duplicate":
                # The payment is booked already (sent before under another STAN, or by the
                # unit this one replaced): its first answer.
                row = conn.execute(
                    "SELECT response_code FROM transactions WHERE ref = ?", (ref,)
                ).fetchone()
                return self._booked(conn, str(row["response_code"]), ref)
            if result["result"] == "refused":
                return {"answer": {"39": INVALID_TRANSACTION}, "ref": None}
            return self._booked(conn, str(result["response_code"]), ref)

        return operation

    def _reverse(self, request: Message) -> Operation:
        original = _digits(request, "90", "original data elements")
        if len(original) < 20:
            raise _refused("field 90: original MTI, STAN and transmission date and time")
        original_key = f"iso8583:{original[:3]}:{original[4:10]}:{original[10:20]}"

        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            result = self.host.reverse(
                caller,
                conn,
                {"original_idempotency_key": original_key, "reason": "iso8583 reversal"},
            )
            return {"answer": {"39": APPROVED}, "status": result["status"]}

        return operation

    def _reconcile(self, request: Message) -> Operation:
        processing = request.text("3")
        if processing not in ("920000", "960000"):
            raise _refused("field 3 of a 0500: 920000, or 960000 after a batch upload")
        compare = processing == "920000"
        totals = {
            key: int(_digits(request, key, "reconciliation totals"))
            for key in (("74", "75", "76", "77", "86", "87", "88", "89") if compare else ())
        }
        net = request.text("97")
        currency = _currency(request) if compare else 0

        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            if compare:
                host = _open_totals(conn, caller.terminal_id, currency)
                # Debits are sales, credits refunds; what the terminal reversed it counts
                # in the reversal fields, the host not at all (a reversed sale is no sale).
                mine = (
                    totals["76"] - totals["77"],
                    totals["88"] - totals["89"],
                    totals["74"] - totals["75"],
                    totals["86"] - totals["87"],
                )
                balance = host[1] - host[3]
                expected_net = ("C" if balance >= 0 else "D") + f"{abs(balance):016d}"
                if mine != host or (net and net != expected_net):
                    self.host.store.add_event(
                        conn,
                        self.host.now(),
                        caller.terminal_id,
                        None,
                        "iso8583_out_of_balance",
                        {"terminal": list(mine), "host": list(host)},
                    )
                    return {"answer": {"39": RECONCILE_ERROR}}
            settled = self.host.settle(caller, conn, {})
            return {"answer": {"39": APPROVED}, "batch_id": settled["batch_id"]}

        return operation

    def _upload(self, terminal: IsoTerminal, request: Message) -> Operation:
        amount = _amount(request)
        processing = _digits(request, "3", "processing code")
        rrn = request.text("37").strip()

        def operation(conn: sqlite3.Connection, caller: Caller) -> dict[str, Any]:
            try:
                ref: str | None = self._ref(conn, request)
            except HostError:
                ref = None
            row = (
                conn.execute(
                    "SELECT amount FROM transactions WHERE ref = ? AND terminal_id = ?",
                    (ref, caller.terminal_id),
                ).fetchone()
                if ref
                else None
            )
            matches = row is not None and int(row["amount"]) == amount
            conn.execute(
                "INSERT INTO iso8583_batch_uploads (tid, rrn, processing_code, amount, ref, "
                "matches, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (terminal.tid, rrn, processing, amount, ref, int(matches), self.host.now()),
            )
            return {"answer": {"39": APPROVED}, "ref": ref}

        return operation


def _open_totals(
    conn: sqlite3.Connection, terminal_id: str, currency: int
) -> tuple[int, int, int, int]:
    """The host's totals of the terminal's open batch in `currency`, as settlement counts
    them (AcquirerHost.settle): approved sales (a capture is one; a hold, its increments and
    its release move no money) and approved refunds. (debits count, debits amount, credits
    count, credits amount)."""
    row = conn.execute(
        "SELECT "
        "COUNT(CASE WHEN kind IN ('sale', 'offline_sale', 'capture') THEN 1 END), "
        "COALESCE(SUM(CASE WHEN kind IN ('sale', 'offline_sale', 'capture') THEN amount END), 0), "
        "COUNT(CASE WHEN kind = 'refund' THEN 1 END), "
        "COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount END), 0) "
        "FROM transactions WHERE terminal_id = ? AND batch_id IS NULL AND status = 'approved' "
        "AND currency = ?",
        (terminal_id, currency),
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])
