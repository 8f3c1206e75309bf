"""A small ISO 8583 host for the link's tests: a threaded TCP server on 127.0.0.1 speaking
the wire contract of issue 19 with the terminal's own codec (the simulated host proper is
simulator/host/iso8583/; this one only needs to be right about what the link's tests look
at).

It issues session keys as TR-31 blocks under the terminal master key, checks every
request's MAC (an un-MAC'd request only for a key exchange), deduplicates money messages by
(message class, STAN, field 7) and answers a repeat with the stored answer, keeps a ledger
of what it booked, and takes faults per message type: ``drop`` (processed, then the
connection closed without an answer), ``corrupt`` (answered under a wrong MAC), ``refuse``
(closed before processing), ``garbage`` (the given bytes sent instead of an answer, then
the connection closed), ``answer`` (the given response code, nothing processed), ``pass``
(nothing: a later message of the type gets the next fault).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import psec.tr31

from emv import tlv
from terminal.acquirer.iso8583.codec import (
    FieldValue,
    MacMismatchError,
    Message,
    MessageFormatError,
    decode_message,
    encode_message,
    frame,
    read_frame,
)
from terminal.acquirer.iso8583.messages import answer_mti
from terminal.acquirer.iso8583.profile import Profile, default_profile

PROFILE = default_profile()
#: The issuer authentication data every approval carries: ARPC (8 bytes), then the ARC.
ARPC = bytes.fromhex("1A2B3C4D5E6F7081")
ARC = b"00"


@dataclass
class Booking:
    kind: str  # sale, refund, preauth, increment, capture, advice
    amount: int
    currency: int
    rrn: str
    status: str  # approved, declined, voided, reversed, released, captured
    original_rrn: str = ""
    offline_id: str = ""
    batch: int | None = None
    fields: dict[str, FieldValue] = field(default_factory=dict)


@dataclass
class Fault:
    mode: str
    data: bytes = b""


class FakeIsoHost:
    def __init__(
        self,
        tmk: bytes,
        *,
        terminals: tuple[str, ...] = ("TERM0001",),
        profile: Profile = PROFILE,
    ) -> None:
        self.tmk = tmk
        self.profile = profile
        self.terminals = set(terminals)
        self.mac_key: bytes | None = None
        self.previous_key: bytes | None = None
        self.received: list[Message] = []
        self.bookings: list[Booking] = []
        self.uploads: list[Message] = []
        self.closed_batches: list[list[Booking]] = []
        self._answers: dict[
            tuple[str, str, str], tuple[dict[str, FieldValue], str, dict[str, FieldValue]]
        ] = {}
        self._booked: dict[tuple[str, str, str], Booking] = {}
        self._tombstones: set[tuple[str, str, str]] = set()
        self._faults: dict[str, list[Fault]] = {}
        self._rrn = 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    # --- control -------------------------------------------------------------------------

    def fault(self, mti: str, mode: str, times: int = 1, data: bytes = b"") -> None:
        with self._lock:
            self._faults.setdefault(mti, []).extend(Fault(mode, data) for _ in range(times))

    def mtis(self) -> list[str]:
        """What the host received, each message as MTI (and field 70 for an 0800)."""
        return [m.mti + ("/" + m.get("70") if m.mti == "0800" else "") for m in self.received]

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept() (close alone does not)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(timeout=5)

    # --- serving -------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    raw = read_frame(self.profile, conn.recv)
                except Exception:
                    return
                try:
                    answer, close = self._handle(raw)
                except _Close:
                    return
                try:
                    conn.sendall(answer)
                except OSError:
                    return
                if close:
                    return

    def _send(self, mti: str, fields: dict[str, FieldValue], key: bytes | None) -> bytes:
        return frame(self.profile, encode_message(self.profile, mti, fields, key))

    def _handle(self, raw: bytes) -> tuple[bytes, bool]:
        """The answer to `raw`, and whether the connection is closed after it."""
        try:
            request = decode_message(self.profile, raw, None)
        except MessageFormatError:
            raise _Close() from None
        with self._lock:
            self.received.append(request)
            fault = self._faults.get(request.mti, [])
            now = fault.pop(0) if fault else None
        if now is not None and now.mode == "refuse":
            raise _Close()
        if now is not None and now.mode == "garbage":
            return now.data, True
        if now is not None and now.mode == "answer":  # this code, and nothing processed
            fields = {"11": request.get("11"), "41": request.get("41"), "39": now.data.decode()}
            return self._send(answer_mti(request.mti[:3] + "0"), fields, self.mac_key), False
        key_exchange = request.mti == "0800" and request.get("70") == "161"
        echoed: dict[str, FieldValue] = {
            "11": request.get("11"),
            "41": request.get("41"),
            "39": "00",
        }
        answer_type = answer_mti(request.mti[:3] + "0")
        if request.get("41").strip() not in self.terminals:
            # No key for a terminal it does not know: unMAC'd, and the connection closed.
            return self._send(answer_type, {**echoed, "39": "58"}, None), True
        macd = "64" in request.fields or "128" in request.fields
        if (not key_exchange or macd) and not self._mac_ok(raw):
            return self._send(answer_type, {**echoed, "39": "63"}, self.mac_key), False
        if key_exchange:
            return self._key_exchange(echoed, now), False
        with self._lock:
            mti, fields = self._process(request)
        if now is not None and now.mode == "drop":
            raise _Close()
        key = os.urandom(16) if now is not None and now.mode == "corrupt" else self.mac_key
        return self._send(mti, {**echoed, **fields}, key), False

    def _mac_ok(self, raw: bytes) -> bool:
        for key in (self.mac_key, self.previous_key):
            if key is None:
                continue
            try:
                decode_message(self.profile, raw, key)
            except (MacMismatchError, MessageFormatError):
                continue
            if key == self.mac_key:
                self.previous_key = None  # the first request under the new key: old one gone
            return True
        return False

    def _key_exchange(self, echoed: dict[str, FieldValue], now: Fault | None) -> bytes:
        mac_key, pin_key = os.urandom(16), os.urandom(16)
        blocks = (
            f"MAC={psec.tr31.wrap(self.tmk, 'D0000M3TC00N0000', mac_key)};"
            f"PIN={psec.tr31.wrap(self.tmk, 'D0000P0AB00N0000', pin_key)}"
        )
        self.previous_key, self.mac_key = self.mac_key, mac_key
        if now is not None and now.mode == "drop":
            raise _Close()
        key = os.urandom(16) if now is not None and now.mode == "corrupt" else mac_key
        return self._send("0810", {**echoed, "70": "161", "63": blocks}, key)

    # --- money ---------------------------------------------------------------------------

    def _next_rrn(self) -> str:
        self._rrn += 1
        return f"{self._rrn:012d}"

    def _process(self, request: Message) -> tuple[str, dict[str, FieldValue]]:
        cls = request.mti[:3]
        answer_type = answer_mti(cls + "0")
        if cls == "080":
            return answer_type, {"70": request.get("70")}
        if cls == "032":
            return answer_type, self._reconcile(request)
        dedup = (cls, request.get("11"), request.get("7"))
        fingerprint = {k: v for k, v in request.fields.items() if k not in ("64", "128")}
        stored = self._answers.get(dedup)
        if stored is not None:
            first, mti, fields = stored
            return (mti, fields) if first == fingerprint else (mti, {"39": "94"})
        # A 0500 once, as every money message (its repeat, 0501, gets the first answer).
        fields = self._reconcile(request) if cls == "050" else self._book(request, dedup)
        self._answers[dedup] = (fingerprint, answer_type, fields)
        return answer_type, fields

    def _find(self, rrn: str) -> Booking | None:
        return next((b for b in self.bookings if b.rrn == rrn), None)

    def _approve(
        self, request: Message, kind: str, dedup: tuple[str, str, str], **extra: Any
    ) -> dict[str, FieldValue]:
        booking = Booking(
            kind,
            int(request.get("4") or 0),
            int(request.get("49") or 0),
            self._next_rrn(),
            "approved",
            fields=dict(request.fields),
            **extra,
        )
        self.bookings.append(booking)
        self._booked[dedup] = booking
        return {"37": booking.rrn, "38": f"A{self._rrn:05d}", "39": "00"}

    def _book(self, request: Message, dedup: tuple[str, str, str]) -> dict[str, FieldValue]:
        cls, processing = request.mti[:3], request.get("3")[:2]
        if dedup in self._tombstones:
            return {"39": "12"}  # reversed before it arrived: never booked
        if cls in ("040", "042"):  # a reversal request or a reversal advice
            original = request.get("90")
            key = (original[:3], original[4:10], original[10:20])
            target = self._booked.get(key)
            if target is None:
                self._tombstones.add(key)
            elif target.kind == "preauth":
                target.status = "released"
            else:
                target.status = "reversed"
            return {"39": "00", "25": request.get("25")}
        if cls == "020" and processing == "02":
            sale = self._find(request.get("37"))
            if sale is None or sale.kind != "sale" or sale.status != "approved":
                return {"39": "12"}
            sale.status = "voided"
            return {"39": "00", "37": sale.rrn}
        if cls == "020" and processing == "20":
            return self._approve(request, "refund", dedup, original_rrn=request.get("37"))
        if cls == "010" and request.get("25") == "06":
            hold = self._find(request.get("37"))
            if hold is None or hold.status != "approved":
                return {"39": "12"}
            hold.amount += int(request.get("4"))
            return self._approve(request, "increment", dedup, original_rrn=hold.rrn)
        if cls == "022" and request.get("25") == "06":
            hold = self._find(request.get("37"))
            if hold is None or hold.status != "approved":
                return {"39": "12"}
            hold.status = "captured"
            return self._approve(request, "capture", dedup, original_rrn=hold.rrn)
        if cls == "022":
            offline_id = request.get("62")
            earlier = next(
                (b for b in self.bookings if b.offline_id and b.offline_id == offline_id), None
            )
            if earlier is not None:
                return {"39": "00", "37": earlier.rrn}
            return self._approve(request, "advice", dedup, offline_id=offline_id)
        # 0200 purchase, 0100 pre-authorisation: 51 for an amount ending in 51.
        if int(request.get("4")) % 100 == 51:
            self.bookings.append(
                Booking(
                    "sale",
                    int(request.get("4")),
                    int(request.get("49")),
                    self._next_rrn(),
                    "declined",
                )
            )
            return {"39": "51", "37": self.bookings[-1].rrn}
        answer = self._approve(request, "preauth" if cls == "010" else "sale", dedup)
        answer["55"] = tlv.encode(
            [tlv.Tlv.primitive(0x91, ARPC + ARC), tlv.Tlv.primitive(0x8A, ARC)]
        )
        return answer

    def open_batch(self) -> list[Booking]:
        return [
            b
            for b in self.bookings
            if b.batch is None
            and b.status in ("approved", "captured")
            and b.kind in ("sale", "refund", "advice", "capture")
        ]

    def _totals(self) -> tuple[int, int, int, int]:
        batch = self.open_batch()
        debits = [b for b in batch if b.kind != "refund"]
        credits = [b for b in batch if b.kind == "refund"]
        return (
            len(debits),
            sum(b.amount for b in debits),
            len(credits),
            sum(b.amount for b in credits),
        )

    def _close_batch(self) -> None:
        batch = self.open_batch()
        for booking in batch:
            booking.batch = len(self.closed_batches) + 1
        self.closed_batches.append(batch)

    def _reconcile(self, request: Message) -> dict[str, FieldValue]:
        if request.mti.startswith("032"):
            self.uploads.append(request)
            return {"39": "00"}
        if request.get("3") == "960000":
            self._close_batch()
            return {"39": "00"}
        theirs = (
            int(request.get("76")),
            int(request.get("88")),
            int(request.get("74")),
            int(request.get("86")),
        )
        if theirs != self._totals():
            return {"39": "95"}
        self._close_batch()
        return {"39": "00"}


class _Close(Exception):  # noqa: N818 - not an error: the host closes the connection
    pass
