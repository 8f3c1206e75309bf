"""The simulated ISO 8583 host on the real wire: a raw client written here (pyiso8583 under
the profile file's field table, psec's MAC, TR-31 blocks opened with psec) over TCP on
127.0.0.1, against the host's own codec and MAC (simulator/host/iso8583/), on the JSON
host's ledger, decisions and fault board.

Registration, the key exchange and its keys, sign-on, every money message and its
exactly-once answers, reconciliation with the batch upload, every fault mode, one 0210
written out byte by byte, and the MACs against the standards' own examples."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iso8583
import psec.mac
import psec.tr31
import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from emv import tlv
from simulator.host.iso8583 import Iso8583Server, default_profile_path, load_profile
from simulator.host.iso8583.keys import kif_kbpk
from simulator.host.iso8583.mac import compute_mac
from tests.conftest_host import HostHandle, TerminalKeys, card_emv, enrolled_terminal
from tests.conftest_host import inprocess_host_at as _inprocess_host_at
from tests.terminal.acquirer.test_acquirer_tls import pki  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

PROFILE_PATH = default_profile_path()
PROFILE_JSON: dict[str, Any] = json.loads(PROFILE_PATH.read_text(encoding="utf-8"))
SPEC: dict[str, Any] = PROFILE_JSON["fields"]
BINARY = {key for key, definition in SPEC.items() if definition["data_enc"] == "b"}
#: The virtual Visa card: the host holds its issuer's key and verifies its ARQCs.
PAN = "4761739001010010"
SENT = "1202083015"  # field 7: 2 December, 08:30:15 UTC


# --- the test's own terminal on the wire -------------------------------------------------


def _mac(algorithm: str, key: bytes, data: bytes) -> bytes:
    """psec's retail MAC, or cryptography's CMAC: not the host's code."""
    if algorithm == "iso9797-1-alg3":
        return psec.mac.generate_retail_mac(key[:8], key[8:], data, padding=1)
    signer = cmac.CMAC(algorithms.AES(key))
    signer.update(data)
    return signer.finalize()[:8]


def _mac_field(fields: dict[str, Any]) -> str:
    return "128" if any(k.isdigit() and 64 < int(k) < 128 for k in fields) else "64"


@dataclass
class Answer:
    mti: str
    fields: dict[str, str]  # binary fields in hex
    raw: bytes

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str) -> str | None:
        return self.fields.get(key)

    def mac_ok(self, algorithm: str, key: bytes | None) -> bool:
        where = _mac_field(self.fields)
        if key is None or where not in self.fields:
            return False
        return _mac(algorithm, key, self.raw[:-8]) == bytes.fromhex(self.fields[where])


@dataclass
class Wire:
    """One terminal's connection: its TID/MID, its TMK, its session MAC key."""

    address: tuple[str, int]
    tid: str
    mid: str
    tmk: bytes
    algorithm: str = "iso9797-1-alg3"
    mac_key: bytes | None = None
    tls: ssl.SSLContext | None = None
    stan: int = 0
    sock: socket.socket | None = field(default=None, repr=False)

    def connect(self) -> socket.socket:
        if self.sock is None:
            raw = socket.create_connection(self.address, timeout=5)
            self.sock = self.tls.wrap_socket(raw, server_hostname="localhost") if self.tls else raw
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def next_stan(self) -> str:
        self.stan += 1
        return f"{self.stan:06d}"

    def encode(self, mti: str, fields: dict[str, str], key: bytes | None) -> bytes:
        document = {"t": mti, **fields}
        where = _mac_field(document)
        if key is not None:
            document[where] = "00" * 8
        raw, _ = iso8583.encode(document, json.loads(json.dumps(SPEC)))
        data = bytes(raw)
        if key is None:
            return data
        return data[:-8] + _mac(self.algorithm, key, data[:-8])

    def send_raw(self, data: bytes) -> None:
        self.connect().sendall(len(data).to_bytes(2, "big") + data)

    def read(self) -> Answer | None:
        """The next answer, or None when the host closed or cut the connection."""
        sock = self.connect()

        def exactly(count: int) -> bytes | None:
            data = b""
            while len(data) < count:
                try:
                    piece = sock.recv(count - len(data))
                except ConnectionResetError:
                    piece = b""
                if not piece:
                    self.close()
                    return None
                data += piece
            return data

        header = exactly(2)
        body = exactly(int.from_bytes(header, "big")) if header else None
        if body is None:
            return None
        document, _ = iso8583.decode(body, json.loads(json.dumps(SPEC)))
        fields = {k: v for k, v in document.items() if k not in ("h", "t", "p", "1")}
        return Answer(str(document["t"]), fields, body)

    def attempt(
        self, mti: str, fields: dict[str, str], *, key: bytes | str | None = "session"
    ) -> Answer | None:
        """Send one message (MAC'd under the session key, another `key`, or none) and read
        its answer: None when the connection ended instead."""
        mac_key = self.mac_key if key == "session" else key
        assert not isinstance(mac_key, str)
        self.send_raw(self.encode(mti, fields, mac_key))
        return self.read()

    def exchange(
        self, mti: str, fields: dict[str, str], *, key: bytes | str | None = "session"
    ) -> Answer:
        """:meth:`attempt`, where the host must answer."""
        answer = self.attempt(mti, fields, key=key)
        assert answer is not None, f"no answer to the {mti}"
        return answer

    def network_fields(self, code: str) -> dict[str, str]:
        fields = {"7": SENT, "11": self.next_stan(), "24": "000", "70": code}
        return {**fields, **self.ids()}

    def network(self, code: str, *, key: bytes | str | None = "session") -> Answer:
        return self.exchange("0800", self.network_fields(code), key=key)

    def ids(self) -> dict[str, str]:
        return {"41": self.tid, "42": self.mid.ljust(15)}

    def key_exchange(self, *, key: bytes | str | None = "session") -> dict[str, psec.tr31.Header]:
        """0800 70=161 (MAC'd under the session key while there is one); the new MAC key,
        opened from its block under the TMK, is kept."""
        answer = self.network("161", key=key)
        assert answer["39"] == "00", answer
        parts = dict(part.split("=", 1) for part in answer["63"].split(";"))
        mac_header, mac_key = psec.tr31.unwrap(self.tmk, parts["MAC"])
        pin_header, _ = psec.tr31.unwrap(self.tmk, parts["PIN"])
        # The 0810 of a key exchange is MAC'd under the new key it carries.
        assert answer.mac_ok(self.algorithm, mac_key)
        self.mac_key = mac_key
        return {"MAC": mac_header, "PIN": pin_header}

    def financial(
        self,
        amount: int,
        *,
        processing: str = "000000",
        stan: str | None = None,
        sent: str = SENT,
        pan: str | None = PAN,
        chip: bool = True,
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """A purchase's fields (field 55 with a real ARQC for the virtual card)."""
        fields = {
            "3": processing,
            "4": f"{amount:012d}",
            "7": sent,
            "11": stan or self.next_stan(),
            "12": "093015",
            "13": "1202",
            "22": "072",
            "24": "000",
            "25": "00",
            "49": "826",
            **self.ids(),
        }
        if pan:
            emv, psn = card_emv(pan, amount)
            fields |= {"2": pan, "14": "2812", "23": f"{psn or 0:03d}"}
            if chip:
                objects = [tlv.Tlv.primitive(int(t, 16), v) for t, v in emv.items()]
                fields["55"] = tlv.encode(objects).hex().upper()
        return fields | (extra or {})

    def original(self, mti: str, fields: dict[str, str]) -> str:
        """Field 90 naming a message sent (MTI, STAN, field 7, acquirer, forwarder)."""
        return f"{mti}{fields['11']}{fields['7']}{'0' * 22}"


# --- fixtures ----------------------------------------------------------------------------


@dataclass
class IsoHost:
    handle: HostHandle
    server: Iso8583Server
    terminal_id: str
    registration: dict[str, Any]
    wires: list[Wire] = field(default_factory=list)

    def wire(self, *, algorithm: str = "iso9797-1-alg3", tls: ssl.SSLContext | None = None) -> Wire:
        reg = self.registration
        tmk = psec.tr31.unwrap(kif_kbpk(), reg["tmk_key_block"])[1]
        wire = Wire(self.server.address, reg["tid"], reg["mid"], tmk, algorithm, tls=tls)
        self.wires.append(wire)
        return wire

    def ready(self, **options: Any) -> Wire:
        """A wire with its session key, signed on."""
        wire = self.wire(**options)
        wire.key_exchange()
        answer = wire.network("001")
        assert answer["39"] == "00"
        return wire

    def ledger(self) -> list[dict[str, Any]]:
        return self.handle.ledger(self.terminal_id)


@contextmanager
def _iso_host(
    tmp_path: Path,
    keys: TerminalKeys,
    *,
    profile: dict[str, Any] | None = None,
    tls: ssl.SSLContext | None = None,
    **app_options: Any,
) -> Iterator[IsoHost]:
    with (
        _inprocess_host_at(tmp_path / "acquirer.sqlite3", **app_options) as handle,
        enrolled_terminal(handle, keys) as terminal,
    ):
        response = handle.http.post(
            "/admin/iso8583/terminals", json={"terminal_id": terminal.terminal_id}
        )
        response.raise_for_status()
        server = Iso8583Server(
            handle.app.host, handle.app.faults, profile=profile or PROFILE_PATH, tls=tls
        )
        server.start()
        iso = IsoHost(handle, server, terminal.terminal_id, response.json())
        try:
            yield iso
        finally:
            for wire in iso.wires:
                wire.close()
            server.stop()


@pytest.fixture
def iso_host(tmp_path: Path, terminal_keys: TerminalKeys) -> Iterator[IsoHost]:
    with _iso_host(tmp_path, terminal_keys) as iso:
        yield iso


@pytest.fixture
def wire(iso_host: IsoHost) -> Wire:
    return iso_host.ready()


def _pay(wire: Wire, amount: int, **options: Any) -> tuple[dict[str, str], Answer]:
    fields = wire.financial(amount, **options)
    answer = wire.exchange("0200", fields)
    assert answer.mac_ok(wire.algorithm, wire.mac_key)
    return fields, answer


# --- registration, keys, sign-on ---------------------------------------------------------


def test_registration_issues_tid_mid_and_a_tmk_block_once(iso_host: IsoHost) -> None:
    reg = iso_host.registration
    assert len(reg["tid"]) == 8
    assert 0 < len(reg["mid"]) <= 15
    header, tmk = psec.tr31.unwrap(kif_kbpk(), reg["tmk_key_block"])
    assert (header.version_id, header.key_usage, header.algorithm, header.mode_of_use) == (
        "D",
        "K0",
        "A",
        "B",
    )
    assert header.exportability == "N"
    assert len(tmk) == 32
    again = iso_host.handle.http.post(
        "/admin/iso8583/terminals", json={"terminal_id": iso_host.terminal_id}
    )
    assert again.json() == reg
    unknown = iso_host.handle.http.post("/admin/iso8583/terminals", json={"terminal_id": "TX"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_terminal")


def test_key_exchange_then_sign_on(iso_host: IsoHost) -> None:
    wire = iso_host.wire()
    # No key yet: the only message the host takes without a MAC.
    headers = wire.key_exchange(key=None)
    mac, pin = headers["MAC"], headers["PIN"]
    assert (mac.version_id, mac.key_usage, mac.algorithm, mac.mode_of_use) == ("D", "M3", "T", "C")
    assert (pin.version_id, pin.key_usage, pin.algorithm, pin.mode_of_use) == ("D", "P0", "A", "B")
    assert wire.mac_key is not None
    assert len(wire.mac_key) == 16
    signed_on = wire.network("001")
    assert (signed_on.mti, signed_on["39"], signed_on["11"]) == ("0810", "00", "000002")
    assert signed_on.mac_ok(wire.algorithm, wire.mac_key)
    echo = wire.network("301")
    assert echo["39"] == "00"
    assert echo.mac_ok(wire.algorithm, wire.mac_key)


def test_a_sign_on_without_a_mac_is_a_security_violation(iso_host: IsoHost) -> None:
    wire = iso_host.wire()
    answer = wire.network("001", key=None)
    assert answer["39"] == "63"


def test_an_unknown_tid_gets_58_without_a_mac_and_the_connection_closed(
    iso_host: IsoHost,
) -> None:
    wire = iso_host.wire()
    wire.tid = "NOSUCH01"
    answer = wire.network("161", key=None)
    assert (answer.mti, answer["39"]) == ("0810", "58")
    assert "64" not in answer.fields
    assert "128" not in answer.fields
    assert wire.read() is None  # closed


def test_the_previous_key_works_until_the_new_one_is_used(wire: Wire) -> None:
    old = wire.mac_key
    wire.key_exchange()  # MAC'd under the old key; the 0810 under the new one
    new = wire.mac_key
    assert old != new
    # The terminal that lost the 0810 still has the old key: it is taken, and answered in it.
    answer = wire.network("301", key=old)
    assert answer["39"] == "00"
    assert answer.mac_ok(wire.algorithm, old)
    answer = wire.network("301", key=new)
    assert answer["39"] == "00"
    assert answer.mac_ok(wire.algorithm, new)
    # The new key used once: the old one is retired.
    answer = wire.network("301", key=old)
    assert answer["39"] == "63"
    assert answer.mac_ok(wire.algorithm, new)


def test_key_exchanges_without_a_mac_do_not_take_the_terminals_key(
    iso_host: IsoHost, wire: Wire
) -> None:
    # Anyone who knows the TID may ask for keys without a MAC (the contract's recovery of a
    # terminal that lost its own), and gets them under a TMK they do not hold...
    stranger = iso_host.wire()
    stranger.tmk = bytes(32)
    for _ in range(2):
        answer = stranger.network("161", key=None)
        assert answer["39"] == "00"
    # ...while the terminal's key, the last one a request was MAC'd under, still works.
    answer = wire.network("301")
    assert answer["39"] == "00"
    assert answer.mac_ok(wire.algorithm, wire.mac_key)


# --- purchases, exactly once -------------------------------------------------------------


def test_a_purchase_approved_with_rrn_auth_code_and_issuer_data(
    iso_host: IsoHost, wire: Wire
) -> None:
    fields, answer = _pay(wire, 1200)
    assert (answer.mti, answer["39"], answer["11"], answer["4"]) == (
        "0210",
        "00",
        fields["11"],
        fields["4"],
    )
    assert len(answer["37"]) == 12
    assert answer["37"].isdigit()
    assert len(answer["38"]) == 6
    assert "2" not in answer.fields  # no card data comes back
    icc = tlv.flatten(tlv.decode(bytes.fromhex(answer["55"])))
    assert icc[0x8A] == b"00"
    emv, psn = card_emv(PAN, 1200)
    arpc = iso_host.handle.app.host.verifier.make_arpc(
        pan=PAN, pan_sequence=psn, emv=emv, arc=b"00"
    )
    assert arpc is not None
    assert icc[0x91] == arpc + b"00"
    [row] = iso_host.ledger()
    assert (row["kind"], row["status"], row["amount"], row["auth_code"]) == (
        "sale",
        "approved",
        1200,
        answer["38"],
    )
    assert row["arqc_status"] == "valid"


def test_an_amount_ending_in_51_is_declined_51(iso_host: IsoHost, wire: Wire) -> None:
    _, answer = _pay(wire, 1051)
    assert answer["39"] == "51"
    assert answer.get("38") is None
    [row] = iso_host.ledger()
    assert (row["status"], row["response_code"]) == ("declined", "51")


def test_a_repeat_gets_the_same_answer_and_books_once(iso_host: IsoHost, wire: Wire) -> None:
    fields, first = _pay(wire, 2500)
    repeat = wire.exchange("0201", fields)
    assert repeat.mti == "0210"
    assert repeat.fields == first.fields
    again = wire.exchange("0200", fields)
    assert again.fields == first.fields
    assert len(iso_host.ledger()) == 1


def test_the_same_stan_and_time_with_other_content_is_94(iso_host: IsoHost, wire: Wire) -> None:
    fields, _ = _pay(wire, 2500)
    other = {**fields, "4": f"{2600:012d}"}  # only the amount differs
    answer = wire.exchange("0200", other)
    assert answer["39"] == "94"
    assert [r["amount"] for r in iso_host.ledger()] == [2500]


@pytest.mark.parametrize("how", ["wrong", "missing"])
def test_a_bad_mac_is_63_and_nothing_is_booked(iso_host: IsoHost, wire: Wire, how: str) -> None:
    fields = wire.financial(1500)
    if how == "wrong":
        data = bytearray(wire.encode("0200", fields, wire.mac_key))
        data[-1] ^= 0x01
        wire.send_raw(bytes(data))
        answer = wire.read()
    else:
        answer = wire.attempt("0200", fields, key=None)
    assert answer is not None
    assert answer["39"] == "63"
    assert answer.mac_ok(wire.algorithm, wire.mac_key)
    assert iso_host.ledger() == []
    # Not processed, so nothing was stored either: the same message, MAC'd, goes through.
    _, retried = _pay(wire, 1500, stan=fields["11"])
    assert retried["39"] == "00"


def test_a_purchase_with_track_2_instead_of_the_pan(iso_host: IsoHost, wire: Wire) -> None:
    iso_host.handle.set_rules(require_arqc=False)
    fields = wire.financial(700, pan=None)
    fields["35"] = f"{PAN}D28122010000000000"
    fields["22"] = "912"
    answer = wire.exchange("0200", fields)
    assert answer["39"] == "00"
    [row] = iso_host.ledger()
    assert row["masked_pan"] == "476173******0010"


# --- refund, void, reversal --------------------------------------------------------------


def test_refund_of_a_sale_and_void_of_another(iso_host: IsoHost, wire: Wire) -> None:
    _, sale = _pay(wire, 3000)
    refund_fields = wire.financial(1000, processing="200000", extra={"37": sale["37"]})
    refund = wire.exchange("0200", refund_fields)
    assert refund["39"] == "00"
    assert refund["37"] != sale["37"]
    _, other = _pay(wire, 4000)
    void_fields = wire.financial(4000, processing="020000", pan=None)
    void_fields |= {"37": other["37"], "38": other["38"]}
    void = wire.exchange("0200", void_fields)
    assert (void["39"], void["37"]) == ("00", other["37"])
    by_amount = {(r["kind"], r["amount"]): r for r in iso_host.ledger()}
    assert by_amount[("refund", 1000)]["original_ref"] == by_amount[("sale", 3000)]["ref"]
    assert by_amount[("sale", 4000)]["status"] == "voided"
    # A void of what is not there, or not voidable, is 12: invalid transaction.
    unknown = wire.financial(4000, processing="020000", pan=None, extra={"37": "999999999999"})
    again = wire.financial(4000, processing="020000", pan=None, extra={"37": other["37"]})
    for fields in (unknown, again):
        answer = wire.exchange("0200", fields)
        assert answer["39"] == "12"
    # A refund over what the sale has left is 13.
    over = wire.financial(2500, processing="200000", extra={"37": sale["37"]})
    answer = wire.exchange("0200", over)
    assert answer["39"] == "13"


def test_a_reversal_names_the_original_by_field_90(iso_host: IsoHost, wire: Wire) -> None:
    fields, _sale = _pay(wire, 5000)
    kept = {k: fields[k] for k in ("2", "3", "4", "14", "22", "23", "49", "55")}
    reversal = {
        **kept,
        "7": "1202083115",
        "11": wire.next_stan(),
        "25": "00",
        **wire.ids(),
        "90": wire.original("0200", fields),
    }
    answer = wire.exchange("0400", reversal)
    assert (answer.mti, answer["39"], answer["90"], answer["25"]) == (
        "0410",
        "00",
        reversal["90"],
        "00",
    )
    [row] = iso_host.ledger()
    assert row["status"] == "reversed"
    # Repeated until acknowledged: a repeat is acknowledged again, nothing changes.
    repeat = wire.exchange("0401", reversal)
    assert repeat.fields == answer.fields
    assert [r["status"] for r in iso_host.ledger()] == ["reversed"]


def test_a_reversal_before_its_original_declines_the_late_original(
    iso_host: IsoHost, wire: Wire
) -> None:
    late = wire.financial(6000)
    reversal = {
        "4": late["4"],
        "7": "1202083215",
        "11": wire.next_stan(),
        "25": "00",
        "49": "826",
        **wire.ids(),
        "90": wire.original("0200", late),
    }
    answer = wire.exchange("0400", reversal)
    assert answer["39"] == "00"
    arrived = wire.exchange("0200", late)
    assert arrived["39"] == "05"
    assert arrived.get("38") is None
    assert [r for r in iso_host.ledger() if r["status"] == "approved"] == []


# --- offline advices ---------------------------------------------------------------------


def test_an_offline_advice_is_booked_once(iso_host: IsoHost, wire: Wire) -> None:
    fields = wire.financial(1800, extra={"62": "OFF-0001"})
    first = wire.exchange("0220", fields)
    assert (first.mti, first["39"]) == ("0230", "00")
    assert len(first["37"]) == 12
    # The same advice again (its repeat), and re-sent under a new STAN (after a restart):
    repeat = wire.exchange("0221", fields)
    assert repeat.fields == first.fields
    resent = wire.exchange("0220", {**fields, "11": wire.next_stan()})
    assert (resent["39"], resent["37"]) == ("00", first["37"])
    [row] = iso_host.ledger()
    assert (row["kind"], row["offline_id"], row["status"]) == (
        "offline_sale",
        "OFF-0001",
        "approved",
    )
    missing_id = wire.exchange("0220", wire.financial(1800))
    assert missing_id["39"] == "30"


# --- pre-authorisations ------------------------------------------------------------------


def test_a_hold_raised_then_captured(iso_host: IsoHost, wire: Wire) -> None:
    hold_fields = wire.financial(5000)
    hold = wire.exchange("0100", hold_fields)
    assert (hold.mti, hold["39"]) == ("0110", "00")
    follow_up = {"37": hold["37"], "25": "06"}
    raised = wire.exchange("0100", wire.financial(2000, pan=None, extra=follow_up))
    assert raised["39"] == "00"
    declined = wire.exchange("0100", wire.financial(151, pan=None, extra=follow_up))
    assert declined["39"] == "51"
    capture = wire.exchange("0220", wire.financial(6500, pan=None, extra=follow_up))
    assert (capture.mti, capture["39"]) == ("0230", "00")
    kinds = {(r["kind"], r["status"], r["amount"]) for r in iso_host.ledger()}
    assert ("preauth", "captured", 5000) in kinds
    assert ("increment", "approved", 2000) in kinds
    assert ("capture", "approved", 6500) in kinds
    again = wire.exchange("0220", wire.financial(100, pan=None, extra=follow_up))
    assert again["39"] == "12"
    # A hold whose answer was lost is reversed by the 0400 naming its 0100.
    lost = wire.financial(3000)
    wire.exchange("0100", lost)
    reversal = {
        "4": lost["4"],
        "7": "1202083315",
        "11": wire.next_stan(),
        "25": "00",
        "49": "826",
        **wire.ids(),
        "90": wire.original("0100", lost),
    }
    reversed_ = wire.exchange("0400", reversal)
    assert reversed_["39"] == "00"
    statuses = {(r["kind"], r["amount"]): r["status"] for r in iso_host.ledger()}
    assert statuses[("preauth", 3000)] == "reversed"


# --- reconciliation ----------------------------------------------------------------------


def _totals(
    wire: Wire, *, debits: tuple[int, int], credits: tuple[int, int], processing: str = "920000"
) -> dict[str, str]:
    net = debits[1] - credits[1]
    return {
        "3": processing,
        "7": "1202180000",
        "11": wire.next_stan(),
        "24": "000",
        "49": "826",
        **wire.ids(),
        "60": "000001",
        "74": f"{credits[0]:010d}",
        "75": f"{0:010d}",
        "76": f"{debits[0]:010d}",
        "77": f"{0:010d}",
        "86": f"{credits[1]:016d}",
        "87": f"{0:016d}",
        "88": f"{debits[1]:016d}",
        "89": f"{0:016d}",
        "97": ("C" if net >= 0 else "D") + f"{abs(net):016d}",
    }


def test_reconciliation_in_balance_closes_the_batch(iso_host: IsoHost, wire: Wire) -> None:
    _, sale = _pay(wire, 3000)
    _pay(wire, 1051)  # declined: in no total
    refund = wire.financial(500, processing="200000", extra={"37": sale["37"]})
    assert wire.exchange("0200", refund)["39"] == "00"
    answer = wire.exchange("0500", _totals(wire, debits=(1, 3000), credits=(1, 500)))
    assert (answer.mti, answer["39"]) == ("0510", "00")
    assert answer.mac_ok(wire.algorithm, wire.mac_key)  # in field 128: 0500 has fields > 64
    assert {r["batch_id"] is not None for r in iso_host.ledger()} == {True}


def test_out_of_balance_then_batch_upload_then_closed(iso_host: IsoHost, wire: Wire) -> None:
    fields, sale = _pay(wire, 3000)
    answer = wire.exchange("0500", _totals(wire, debits=(2, 4000), credits=(0, 0)))
    assert answer["39"] == "95"
    assert {r["batch_id"] for r in iso_host.ledger()} == {None}  # stays open
    upload = {
        "3": "000000",
        "4": fields["4"],
        "7": "1202180100",
        "11": wire.next_stan(),
        "24": "000",
        "37": sale["37"],
        "38": sale["38"],
        "49": "826",
        **wire.ids(),
        "90": wire.original("0200", fields),
    }
    uploaded = wire.exchange("0320", upload)
    assert (uploaded.mti, uploaded["39"]) == ("0330", "00")
    closing = _totals(wire, debits=(2, 4000), credits=(0, 0), processing="960000")
    closed = wire.exchange("0500", closing)
    assert closed["39"] == "00"
    assert {r["batch_id"] is not None for r in iso_host.ledger()} == {True}
    store = iso_host.handle.app.host.store
    [row] = store.query("SELECT rrn, amount, matches FROM iso8583_batch_uploads")
    assert row == {"rrn": sale["37"], "amount": 3000, "matches": 1}


# --- faults ------------------------------------------------------------------------------


def test_fault_refuse_cuts_before_processing(iso_host: IsoHost, wire: Wire) -> None:
    iso_host.handle.set_fault("/v1/iso8583/0200", "refuse", times=1)
    fields = wire.financial(1200)
    assert wire.attempt("0200", fields) is None
    assert iso_host.ledger() == []
    wire.close()
    _, answer = _pay(wire, 1200, stan=fields["11"])
    assert answer["39"] == "00"


def test_fault_delay_answers_late(iso_host: IsoHost, wire: Wire) -> None:
    iso_host.handle.set_fault("/v1/iso8583/", "delay", times=1, delay_ms=300)
    started = time.monotonic()
    _, answer = _pay(wire, 1200)
    assert time.monotonic() - started >= 0.3
    assert answer["39"] == "00"


def test_fault_http_500_is_96_without_processing(iso_host: IsoHost, wire: Wire) -> None:
    iso_host.handle.set_fault("/v1/iso8583/0200", "http_500", times=1)
    _, answer = _pay(wire, 1200)
    assert answer["39"] == "96"
    assert iso_host.ledger() == []


def test_fault_drop_after_commit_books_and_the_repeat_gets_the_answer(
    iso_host: IsoHost, wire: Wire
) -> None:
    iso_host.handle.set_fault("/v1/iso8583/0200", "drop_after_commit", times=1)
    fields = wire.financial(1200)
    assert wire.attempt("0200", fields) is None
    [row] = iso_host.ledger()
    assert row["status"] == "approved"
    wire.close()
    repeat = wire.exchange("0201", fields)
    assert repeat["39"] == "00"
    assert repeat["38"] == row["auth_code"]
    assert len(iso_host.ledger()) == 1


def test_fault_corrupt_answers_with_a_wrong_mac(iso_host: IsoHost, wire: Wire) -> None:
    iso_host.handle.set_fault("/v1/iso8583/0200", "corrupt", times=1)
    fields = wire.financial(1200)
    answer = wire.exchange("0200", fields)
    assert not answer.mac_ok(wire.algorithm, wire.mac_key)
    assert len(iso_host.ledger()) == 1


def test_down_refuses_connections_then_up_on_the_same_port(iso_host: IsoHost, wire: Wire) -> None:
    address = iso_host.server.address
    iso_host.server.stop_listening()
    assert wire.attempt("0800", wire.network_fields("301")) is None  # the open one was cut
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5)
    assert iso_host.server.listen_again() == address
    answer = wire.network("301")
    assert answer["39"] == "00"


# --- the terminal's own codec on the same wire --------------------------------------------


def test_the_terminals_codec_and_the_hosts_agree(iso_host: IsoHost, wire: Wire) -> None:
    """The terminal's codec (terminal/acquirer/iso8583/codec.py, psec's MAC) builds a
    purchase the host takes, and reads the host's answer with its MAC checked."""
    from terminal.acquirer.iso8583.codec import decode_message, encode_message
    from terminal.acquirer.iso8583.profile import load_profile as terminal_profile

    profile = terminal_profile(PROFILE_PATH)
    fields: dict[str, str | bytes] = dict(wire.financial(2200))
    fields["55"] = bytes.fromhex(str(fields["55"]))
    assert wire.mac_key is not None
    wire.send_raw(encode_message(profile, "0200", fields, wire.mac_key))
    answer = wire.read()
    assert answer is not None
    decoded = decode_message(profile, answer.raw, wire.mac_key)  # raises on a wrong MAC
    assert (decoded.mti, decoded.get("39"), decoded.get("11")) == ("0210", "00", fields["11"])


# --- other profiles, TLS -----------------------------------------------------------------


def test_an_aes_cmac_profile(tmp_path: Path, terminal_keys: TerminalKeys) -> None:
    profile = {**PROFILE_JSON, "mac": {"algorithm": "aes-cmac"}}
    with _iso_host(tmp_path, terminal_keys, profile=profile) as iso:
        wire = iso.wire(algorithm="aes-cmac")
        headers = wire.key_exchange()
        mac = headers["MAC"]
        assert (mac.key_usage, mac.algorithm, mac.mode_of_use) == ("M6", "A", "C")
        _, answer = _pay(wire, 900)
        assert answer["39"] == "00"


def test_over_tls(
    tmp_path: Path,
    terminal_keys: TerminalKeys,
    pki: dict[str, Path],  # noqa: F811 - the imported fixture
) -> None:
    from simulator.host.iso8583 import server_ssl_context

    context = server_ssl_context(
        pki["server"].with_suffix(".pem"), pki["server"].with_suffix(".key")
    )
    client = ssl.create_default_context(cafile=str(pki["ca"].with_suffix(".pem")))
    client.check_hostname = False
    with _iso_host(tmp_path, terminal_keys, tls=context) as iso:
        wire = iso.ready(tls=client)
        _, answer = _pay(wire, 1200)
        assert answer["39"] == "00"


# --- one 0210 byte by byte ---------------------------------------------------------------

#: Every random value the host draws, by size: the one transaction's reference (8), its
#: auth code (3), the session keys (16), the TMK (32), the enrolment's (5, 2).
_DRAWS: dict[int, bytes] = {
    2: b"\x12\x34",
    3: bytes.fromhex("A1B2C3"),
    5: bytes.fromhex("0102030405"),
    8: bytes.fromhex("0011223344556677"),
    16: bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
    32: bytes(range(32)),
}


def test_a_0210_byte_for_byte(tmp_path: Path, terminal_keys: TerminalKeys) -> None:
    token: Callable[[int], bytes] = _DRAWS.__getitem__
    with _iso_host(
        tmp_path, terminal_keys, token=token, clock=lambda: 1_796_200_000.0, timestamp_window=10**10
    ) as iso:
        iso.handle.set_rules(require_arqc=False)
        wire = iso.ready()
        assert wire.mac_key == _DRAWS[16]
        fields = wire.financial(1234, stan="000042", chip=False)
        answer = wire.exchange("0200", fields)
    # Fields 3 4 7 | 11 12 13 | 24 | 25 | 37 38 39 | 41 42 | 49 | 64:
    # 0011 0010 | 0011 1000 | 0000 0001 | 1000 0000 | 0000 1110 | 1100 0000 | 1000 0000 | 0000 0001
    bitmap = bytes.fromhex("323801800EC08001")
    body = (
        b"0210"
        + bitmap
        + b"000000"  # 3
        + b"000000001234"  # 4
        + b"1202083015"  # 7
        + b"000042"  # 11
        + b"093015"  # 12
        + b"1202"  # 13
        + b"000"  # 24
        + b"00"  # 25
        + b"000000000001"  # 37: the host's first RRN
        + b"A1B2C3"  # 38
        + b"00"  # 39
        + b"P0000001"  # 41
        + b"PM0000001      "  # 42
        + b"826"  # 49
    )
    expected = body + psec.mac.generate_retail_mac(_DRAWS[16][:8], _DRAWS[16][8:], body, padding=1)
    assert answer.raw == expected


# --- the MACs against the standards ------------------------------------------------------


def test_the_retail_mac_is_iso_9797_1_annex_b() -> None:
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    mac = compute_mac("iso9797-1-alg3", key, b"Now is the time for all ", padding=1)
    assert mac.hex().upper() == "A1C72E74EA3FA9B6"
    # Padding method 2 and an unaligned message agree with psec's.
    data = b"Now is the time for it"
    for padding in (1, 2):
        assert compute_mac("iso9797-1-alg3", key, data, padding=padding) == (
            psec.mac.generate_retail_mac(key[:8], key[8:], data, padding=padding)
        )


def test_aes_cmac_is_rfc_4493() -> None:
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert compute_mac("aes-cmac", key, message).hex() == "070a16b46b4d4144"
    assert compute_mac("aes-cmac", key, b"").hex() == "bb1d6929e9593728"


def test_a_profile_the_host_cannot_serve_is_refused_at_start() -> None:
    from simulator.errors import SimulatorError

    broken = {**PROFILE_JSON, "fields": {k: v for k, v in SPEC.items() if k != "41"}}
    with pytest.raises(SimulatorError, match="41"):
        load_profile(broken)
    bad_mac = {**PROFILE_JSON, "mac": {"algorithm": "hmac"}}
    with pytest.raises(SimulatorError, match=r"mac\.algorithm"):
        load_profile(bad_mac)


def test_the_command_line_takes_the_iso_8583_port_and_profile() -> None:
    from simulator.host.__main__ import build_parser

    args = build_parser().parse_args(["--iso8583-port", "8583", "--iso8583-profile", "p.json"])
    assert (args.iso8583_port, args.iso8583_profile) == (8583, "p.json")
    assert build_parser().parse_args([]).iso8583_port is None
