"""The ISO 8583 link (terminal.acquirer.iso8583.link) against a small ISO 8583 host on a
real 127.0.0.1 socket (tests/terminal/acquirer/iso8583_fake_host.py): keys exchanged and
kept sealed across a restart, sales with their EMV data, every lost or unbelievable answer
reversed (0400, then 0401 until a 0410), refunds and offline advices exactly once,
settlement through the batch upload, holds, voids, response codes, and any bytes from the
host ending in one of the link's own errors."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psec.tr31
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv import tlv
from terminal.acquirer.client import (
    AcquirerError,
    AuthorisationRequest,
    AuthOutcome,
    BrandTotals,
    HostFaultError,
    HostRejectedError,
    NotEnrolledError,
    OfflineItem,
    OutcomeUnknownError,
    RefundRequest,
    ReversalPendingError,
)
from terminal.acquirer.iso8583.codec import Message, MessageFormatError, encode_message, frame
from terminal.acquirer.iso8583.keys import KeyBlockRefusedError
from terminal.acquirer.iso8583.link import (
    SECRET_MAC_KEY,
    Iso8583Link,
    Iso8583NotRegisteredError,
    Iso8583RequestError,
    Iso8583ResponseError,
    StatusLookupUnsupportedError,
    load_terminal_master_key,
    open_memory,
)
from terminal.acquirer.iso8583.messages import (
    AnswerMismatchError,
    Station,
    answer_mti,
    check_answer,
    financial_request,
)
from terminal.acquirer.iso8583.responses import ResponseOutcome
from terminal.checkout.report import HostUnavailable, look_up
from terminal.domain.records import Kind, State, TxnRecord
from terminal.store.keys import Keystore
from terminal.store.link_counters import FILE as COUNTERS_FILE
from terminal.store.link_counters import STAN, LinkCounters
from terminal.store.link_messages import LinkMessages, SentMessage
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET

from .iso8583_fake_host import ARC, ARPC, PROFILE, Booking, FakeIsoHost

#: The key-injection facility's key-block protection key (a TEST key) and the TMK it wraps.
KBPK = bytes.fromhex("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")
TMK = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFE")
TMK_BLOCK = psec.tr31.wrap(KBPK, "D0000K0AB00N0000", TMK)
STATION = Station(terminal_id="TERM0001", merchant_id="MERCHANT0000001")
PAN = "4761739001010119"
EMV = {
    "9F26": bytes.fromhex("1122334455667788"),
    "9F27": b"\x80",
    "9F36": b"\x00\x2a",
    "5A": bytes.fromhex("4761739001010119"),  # never in field 55
}


class Clock:
    """Aware datetimes a second apart, and a monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.current = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
        self.mono = 1000.0

    def __call__(self) -> datetime:
        self.current += timedelta(seconds=1)
        return self.current

    def monotonic(self) -> float:
        return self.mono


@dataclass
class Terminal:
    keystore: Keystore
    counters: LinkCounters
    memory: LinkMessages
    link: Iso8583Link

    def close(self) -> None:
        self.link.close()
        self.memory.close()
        self.counters.close()


class Rig:
    """A terminal's data directory and the host; :meth:`start` is one start of the
    terminal (the first one provisions the TMK)."""

    def __init__(self, directory: Path, host: FakeIsoHost) -> None:
        self.directory = directory
        self.host = host
        self.clock = Clock()
        self.running: list[Terminal] = []

    def start(self, **options: object) -> Terminal:
        if Keystore.exists(self.directory):
            keystore = Keystore.open(self.directory, TEST_SECRET)
        else:
            keystore = Keystore.create(self.directory, TEST_SECRET, scrypt_n=TEST_SCRYPT_N)
            load_terminal_master_key(keystore, KBPK, TMK_BLOCK)
        counters = LinkCounters(self.directory / COUNTERS_FILE)
        memory = open_memory(self.directory, keystore)
        settings = {
            "clock": self.clock,
            "monotonic": self.clock.monotonic,
            "sleep": lambda _: None,
            "answer_timeout": 5.0,
            "max_reversal_attempts": 3,
        } | options
        settings = {name: value for name, value in settings.items() if value is not None}
        link = Iso8583Link(
            "127.0.0.1",
            self.host.port,
            station=STATION,
            keystore=keystore,
            counters=counters,
            memory=memory,
            currency=978,
            **settings,  # type: ignore[arg-type]
        )
        terminal = Terminal(keystore, counters, memory, link)
        self.running.append(terminal)
        return terminal


@pytest.fixture
def host() -> Iterator[FakeIsoHost]:
    server = FakeIsoHost(TMK)
    yield server
    server.close()


@pytest.fixture
def rig(tmp_path: Path, host: FakeIsoHost) -> Iterator[Rig]:
    made = Rig(tmp_path / "terminal", host)
    yield made
    for terminal in made.running:
        terminal.close()


def _macd(message: Message) -> bool:
    """Whether a message carries a MAC (64, or 128 with a field above 64: an 0800's 70)."""
    return "64" in message.fields or "128" in message.fields


def _sale(amount: int = 1234, **extra: object) -> AuthorisationRequest:
    fields = {
        "amount": amount,
        "currency": 978,
        "pan": PAN,
        "pan_sequence": 1,
        "expiry": "281231",
        "brand": "VISA",
        "emv": EMV,
    } | extra
    return AuthorisationRequest(**fields)  # type: ignore[arg-type]


# --- keys -----------------------------------------------------------------------------------


def test_keys_are_exchanged_once_and_kept_sealed_across_a_restart(
    rig: Rig, host: FakeIsoHost
) -> None:
    first = rig.start()
    approved = first.link.authorise(_sale(), idempotency_key="auth-1")
    assert approved.outcome is AuthOutcome.APPROVED
    # The key exchange went without a MAC (no session key yet); the sign-on and the sale
    # with one, under the key the 0810 carried.
    assert host.mtis() == ["0800/161", "0800/001", "0200"]
    assert not _macd(host.received[0])
    assert _macd(host.received[1])
    assert _macd(host.received[2])
    mac_key = host.mac_key
    assert mac_key is not None
    assert first.keystore.secret(SECRET_MAC_KEY) == mac_key
    last_stan = first.counters.peek(STAN)
    first.close()

    second = rig.start()  # a restart: the keys come from the keystore, no new exchange
    assert second.link.authorise(_sale(), idempotency_key="auth-2").approved
    assert host.mtis()[3:] == ["0800/001", "0200"]
    stans = [int(m.get("11")) for m in host.received]
    assert stans == sorted(stans)
    assert len(set(stans)) == len(stans)
    assert int(host.received[3].get("11")) == last_stan + 1  # persistent, never reused

    # The PAN is remembered (a reversal needs it), sealed; no key is anywhere in clear.
    assert second.memory.get("auth-1") is not None
    assert second.memory.get("auth-1").fields["2"] == PAN  # type: ignore[union-attr]
    secrets = [PAN.encode(), mac_key, TMK]
    for secret in list(secrets[1:]):
        secrets += [secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]
    files = [path for path in rig.directory.iterdir() if path.is_file()]
    assert {p.name for p in files} >= {"keystore.json", "iso8583-messages.sqlite3"}
    for path in files:
        data = path.read_bytes()
        assert not [s for s in secrets if s in data], path.name


def test_the_master_key_is_loaded_from_its_block_or_refused(tmp_path: Path) -> None:
    keystore = Keystore.create(tmp_path, TEST_SECRET, scrypt_n=TEST_SCRYPT_N)
    # ANSI X9.24-1 KCV of an AES key: CMAC over a zero block, first three bytes.
    kcv = load_terminal_master_key(keystore, KBPK, TMK_BLOCK)
    assert len(kcv) == 6
    assert kcv == kcv.upper()
    assert Keystore.open(tmp_path, TEST_SECRET).secret("iso8583/tmk") == TMK
    mac_block = psec.tr31.wrap(KBPK, "D0000M3TC00N0000", bytes(range(16)))
    with pytest.raises(KeyBlockRefusedError, match="usage M3"):
        load_terminal_master_key(keystore, KBPK, mac_block)
    with pytest.raises(KeyBlockRefusedError, match="cannot be opened"):
        load_terminal_master_key(keystore, bytes(32), TMK_BLOCK)
    assert keystore.secret("iso8583/tmk") == TMK  # a refused block changes nothing


def test_an_unregistered_terminal_or_one_without_a_master_key_is_not_enrolled(
    tmp_path: Path,
) -> None:
    stranger = FakeIsoHost(TMK, terminals=())
    rig = Rig(tmp_path / "a", stranger)
    try:
        link = rig.start().link
        # 58, unMAC'd (the host has no key for a terminal it does not know): reported.
        with pytest.raises(Iso8583NotRegisteredError, match="39=58") as refused:
            link.authorise(_sale())
        assert isinstance(refused.value, NotEnrolledError)  # the checkout's "not enrolled"
    finally:
        for terminal in rig.running:
            terminal.close()
        stranger.close()

    # A terminal the host stops knowing after its keys were exchanged: its sign-on is
    # refused the same way (58, unMAC'd).
    registered = FakeIsoHost(TMK)
    rig = Rig(tmp_path / "c", registered)
    try:
        assert rig.start().link.authorise(_sale()).approved
        registered.terminals.clear()
        with pytest.raises(Iso8583NotRegisteredError, match="39=58 to the sign-on"):
            rig.start().link.authorise(_sale())
    finally:
        for terminal in rig.running:
            terminal.close()
        registered.close()

    keystore = Keystore.create(tmp_path / "b", TEST_SECRET, scrypt_n=TEST_SCRYPT_N)
    counters = LinkCounters(tmp_path / "b" / COUNTERS_FILE)
    memory = open_memory(tmp_path / "b", keystore)
    bare = Iso8583Link(
        "127.0.0.1", 9, station=STATION, keystore=keystore, counters=counters,
        memory=memory, currency=978,
    )  # fmt: skip
    with pytest.raises(Iso8583NotRegisteredError, match="no ISO 8583 terminal master key"):
        bare.authorise(_sale())
    bare.close()
    memory.close()
    counters.close()


# --- sales ----------------------------------------------------------------------------------


def test_a_sale_sends_its_chip_data_and_reads_the_issuer_data(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    answer = link.authorise(_sale(), idempotency_key="auth-55")
    sent = host.received[-1]
    assert (sent.mti, sent.get("3"), sent.get("4")) == ("0200", "000000", "000000001234")
    assert (sent.get("2"), sent.get("14"), sent.get("22"), sent.get("23")) == (
        PAN,
        "2812",
        "072",
        "001",
    )
    icc = {node.tag: node.value for node in tlv.decode(sent.fields["55"])}  # type: ignore[arg-type]
    assert icc[0x9F26] == EMV["9F26"]
    assert 0x5A not in icc
    assert answer.outcome is AuthOutcome.APPROVED
    assert (answer.response_code, answer.transaction_ref) == ("00", host.bookings[-1].rrn)
    assert answer.auth_code
    assert answer.arpc == ARPC
    assert answer.arc == ARC
    assert answer.arqc_status == "verified"

    declined = link.authorise(_sale(5151))
    assert declined.outcome is AuthOutcome.DECLINED
    assert (declined.response_code, declined.reason) == ("51", "insufficient funds")
    assert declined.auth_code is None


def test_a_lost_answer_is_reversed_0400_then_0401_until_acknowledged(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start().link
    host.fault("0200", "drop")  # booked, then the connection closed: no answer
    host.fault("0400", "drop")  # the reversal's answer lost too
    answer = link.authorise(_sale(), idempotency_key="auth-lost")
    assert answer.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    assert answer.reversal_status == "reversed"
    assert host.mtis()[-3:] == ["0200", "0400", "0401"]
    sale, first, repeat = host.received[-3:]
    # The repeat is the same message: its STAN and field 7, and field 90 naming the 0200.
    assert (repeat.get("11"), repeat.get("7")) == (first.get("11"), first.get("7"))
    assert repeat.get("90").startswith("0200" + sale.get("11") + sale.get("7"))
    assert host.bookings[-1].status == "reversed"  # booked once, undone once


def test_only_00_acknowledges_a_reversal(rig: Rig, host: FakeIsoHost) -> None:
    """08 and 11 approve a sale; to a reversal they are no acknowledgement: it is repeated."""
    link = rig.start().link
    host.fault("0200", "drop")
    host.fault("0400", "answer", data=b"08")
    answer = link.authorise(_sale(), idempotency_key="auth-08")
    assert answer.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    assert host.mtis()[-3:] == ["0200", "0400", "0401"]
    assert host.bookings[-1].status == "reversed"


def test_a_profile_with_reversal_advices_reverses_with_0420_then_0421(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start(profile=replace(PROFILE, reversal_mti="0420")).link
    host.fault("0200", "drop")
    host.fault("0420", "drop")
    answer = link.authorise(_sale())
    assert answer.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    assert host.mtis()[-3:] == ["0200", "0420", "0421"]
    assert host.bookings[-1].status == "reversed"


def test_a_reversal_still_owed_is_pending_then_repeated_until_acknowledged(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start(max_reversal_attempts=2).link
    host.fault("0200", "drop")
    host.fault("0400", "refuse")  # closed before it is read: the host reverses nothing
    host.fault("0401", "refuse")
    with pytest.raises(ReversalPendingError) as pending:
        link.authorise(_sale(), idempotency_key="auth-owed")
    assert isinstance(pending.value, OutcomeUnknownError)
    assert pending.value.idempotency_key == "auth-owed"
    assert host.bookings[-1].status == "approved"  # the host still holds the money

    # What the checkout's retry_reversals does: the same reversal again, as a repeat.
    cancellation = link.reverse(original_idempotency_key="auth-owed", reason="lost_response")
    assert (cancellation.status, host.mtis()[-1]) == ("reversed", "0401")
    assert host.bookings[-1].status == "reversed"
    seen = len(host.received)
    assert link.reverse(original_idempotency_key="auth-owed").status == "reversed"
    assert len(host.received) == seen  # acknowledged already: answered from the memory
    # A sale that never left (nothing remembered under its key) has nothing to reverse.
    assert link.reverse(original_idempotency_key="auth-never").status == "nothing_to_reverse"
    assert len(host.received) == seen


def test_an_answer_with_a_wrong_mac_is_lost_and_the_keys_are_exchanged_again(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start().link
    link.echo_test()
    before = host.mac_key
    host.fault("0200", "corrupt")
    answer = link.authorise(_sale(), idempotency_key="auth-bad-mac")
    assert answer.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE  # never believed
    # The session key is not trusted any more: exchanged (unMAC'd) before the reversal.
    assert host.mtis()[-4:] == ["0200", "0800/161", "0800/001", "0400"]
    assert not _macd(host.received[-3])
    assert host.mac_key != before
    assert host.bookings[-1].status == "reversed"


def test_a_host_fault_or_a_security_violation_is_a_refusal_nothing_processed(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start().link
    host.fault("0200", "answer", data=b"96")
    with pytest.raises(Iso8583ResponseError) as fault:
        link.authorise(_sale())
    assert isinstance(fault.value, HostRejectedError)
    assert (fault.value.code, fault.value.message) == ("96", "96 system malfunction")
    assert fault.value.outcome is ResponseOutcome.HOST_FAULT
    host.fault("0200", "answer", data=b"63")
    with pytest.raises(Iso8583ResponseError, match="63 security violation"):
        link.authorise(_sale())
    assert host.bookings == []
    assert link.authorise(_sale()).approved
    assert host.mtis()[-3:] == ["0800/161", "0800/001", "0200"]  # re-keyed after the 63


# --- refunds, voids -------------------------------------------------------------------------


def test_a_refund_whose_answer_is_lost_is_outcome_unknown_then_booked_once(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start().link
    sale = link.authorise(_sale(2000))
    host.fault("0200", "drop")
    host.fault("0201", "drop")
    refund = RefundRequest(amount=500, currency=978, original_ref=sale.transaction_ref)
    with pytest.raises(OutcomeUnknownError) as unknown:
        link.refund(refund, idempotency_key="refund-1")
    assert unknown.value.idempotency_key == "refund-1"
    assert host.mtis()[-2:] == ["0200", "0201"]
    result = link.refund(refund, idempotency_key="refund-1")  # the checkout's retry
    refunds = [b for b in host.bookings if b.kind == "refund"]
    assert len(refunds) == 1
    assert result.transaction_ref == refunds[0].rrn
    assert (result.status, result.original_ref) == ("approved", sale.transaction_ref)
    assert host.received[-1].mti == "0201"
    assert host.received[-1].get("37") == sale.transaction_ref
    seen = len(host.received)
    assert link.refund(refund, idempotency_key="refund-1") == result
    assert len(host.received) == seen


def test_a_void_names_the_sale_by_its_rrn_and_a_refused_one_says_why(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start().link
    sale = link.authorise(_sale())
    assert sale.transaction_ref is not None
    voided = link.void(sale.transaction_ref)
    sent = host.received[-1]
    assert (sent.get("3"), sent.get("37"), sent.get("38")) == (
        "020000",
        sale.transaction_ref,
        sale.auth_code,
    )
    assert (voided.status, voided.original_ref) == ("voided", sale.transaction_ref)
    assert host.bookings[-1].status == "voided"
    with pytest.raises(Iso8583ResponseError) as refused:
        link.void(sale.transaction_ref, idempotency_key="void-again")
    assert (refused.value.code, refused.value.message) == ("12", "12 invalid transaction")
    seen = len(host.received)
    with pytest.raises(Iso8583RequestError, match="no approved transaction"):
        link.void("000000009999")
    assert len(host.received) == seen  # nothing sent


# --- holds ----------------------------------------------------------------------------------


def test_a_hold_is_raised_captured_or_released(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    hold = link.authorise(_sale(1000, kind="preauth"))
    assert hold.approved
    assert host.received[-1].mti == "0100"
    rrn = hold.transaction_ref
    assert rrn is not None
    raised = link.increment_hold(rrn, 500, 978, idempotency_key="inc-1")
    sent = host.received[-1]
    assert (sent.mti, sent.get("25"), sent.get("37"), sent.get("4")) == (
        "0100",
        "06",
        rrn,
        "000000000500",
    )
    assert raised.approved
    assert raised.authorised_amount == 1500
    captured = link.capture_hold(rrn, 1200, 978, idempotency_key="cap-1")
    sent = host.received[-1]
    assert (sent.mti, sent.get("25"), sent.get("37")) == ("0220", "06", rrn)
    assert (captured.captured_amount, captured.released_amount, captured.hold_status) == (
        1200,
        300,
        "captured",
    )

    other = link.authorise(_sale(800, kind="preauth"))
    assert other.transaction_ref is not None
    hold_message = host.received[-1]
    released = link.release_hold(other.transaction_ref, idempotency_key="rel-1")
    sent = host.received[-1]
    assert sent.mti == "0400"
    assert sent.get("90").startswith("0100" + hold_message.get("11") + hold_message.get("7"))
    assert (released.hold_status, released.released_amount) == ("released", 800)
    assert host.bookings[-1].status == "released"


def test_releasing_a_raised_hold_reverses_all_it_holds(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    hold = link.authorise(_sale(1000, kind="preauth"))
    assert hold.transaction_ref is not None
    link.increment_hold(hold.transaction_ref, 500, 978, idempotency_key="inc-1")
    released = link.release_hold(hold.transaction_ref, idempotency_key="rel-1")
    sent = host.received[-1]
    # Field 4 of the 0400: what the host holds now, the first amount and the increment.
    assert (sent.mti, sent.get("4")) == ("0400", "000000001500")
    assert (released.released_amount, released.hold_status) == (1500, "released")


def test_fields_12_and_13_are_the_terminals_local_time(
    rig: Rig, host: FakeIsoHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ISO 8583:1987 fields 12/13 are the local transaction time and date, field 7 the
    transmission time in UTC: on a terminal in Shanghai (UTC+8) they differ by 8 hours."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        link = rig.start(clock=None).link  # the link's own clock
        before = datetime.now(UTC)
        link.authorise(_sale(1000))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    sent = host.received[-1]
    transmitted = datetime.strptime(f"{before.year}{sent.get('7')}", "%Y%m%d%H%M%S")
    local = datetime.strptime(f"{before.year}{sent.get('13')}{sent.get('12')}", "%Y%m%d%H%M%S")
    assert abs((local - transmitted) - timedelta(hours=8)) < timedelta(seconds=5)


# --- offline payments -----------------------------------------------------------------------


def _item(offline_id: str, amount: int) -> OfflineItem:
    return OfflineItem(
        offline_id=offline_id,
        amount=amount,
        currency=978,
        pan=PAN,
        pan_sequence=1,
        expiry="2812",
        brand="VISA",
        emv={"9F26": bytes.fromhex("AABBCCDDEEFF0011"), "9F27": b"\x40"},
    )


def test_offline_payments_are_advised_in_order_exactly_once(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    items = [_item("txn-a", 100), _item("txn-b", 200), _item("txn-c", 300)]
    host.fault("0220", "pass")
    host.fault("0220", "drop")  # the second advice booked, its answer lost, twice
    host.fault("0221", "drop")
    with pytest.raises(OutcomeUnknownError):
        link.upload_offline(items, idempotency_key="batch-1")
    result = link.upload_offline(items, idempotency_key="batch-1")  # the forwarder's retry
    assert [m.mti for m in host.received if m.mti.startswith("022")] == [
        "0220",
        "0220",
        "0221",
        "0221",
        "0220",
    ]
    advices = [b for b in host.bookings if b.kind == "advice"]
    assert [b.offline_id for b in advices] == ["txn-a", "txn-b", "txn-c"]  # once each, in order
    assert [r.offline_id for r in result.items] == ["txn-a", "txn-b", "txn-c"]
    assert [(r.result, r.transaction_ref) for r in result.items] == [
        ("approved", b.rrn) for b in advices
    ]
    assert host.received[-1].get("62") == "txn-c"  # the offline id, for a unit swap
    seen = len(host.received)
    again = link.upload_offline(items[:1], idempotency_key="batch-2")  # in another batch
    assert again.items[0].transaction_ref == advices[0].rrn
    assert len(host.received) == seen


@pytest.mark.parametrize("code", ["91", "96", "Z9"])
def test_an_advice_the_host_did_not_take_is_repeated_until_it_does(
    rig: Rig, host: FakeIsoHost, code: str
) -> None:
    """91 (issuer or switch inoperative), 96 and a code the terminal does not know say
    nothing final of an offline payment: it is not kept as declined, and is repeated."""
    link = rig.start().link
    host.fault("0220", "answer", data=code.encode())
    with pytest.raises(HostFaultError, match="sent again later"):
        link.upload_offline([_item("txn-a", 100), _item("txn-b", 200)])
    assert [m.get("62") for m in host.received if m.mti.startswith("022")] == ["txn-a"]
    result = link.upload_offline([_item("txn-a", 100), _item("txn-b", 200)])
    advices = [m for m in host.received if m.mti.startswith("022")]
    assert [(m.mti, m.get("62")) for m in advices] == [
        ("0220", "txn-a"),
        ("0221", "txn-a"),  # the same advice, repeated
        ("0220", "txn-b"),
    ]
    assert advices[0].get("11") == advices[1].get("11")
    assert [r.result for r in result.items] == ["approved", "approved"]


def test_a_declined_advice_is_the_hosts_last_word(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    host.fault("0220", "answer", data=b"05")
    result = link.upload_offline([_item("txn-a", 100)])
    assert [(r.result, r.response_code) for r in result.items] == [("declined", "05")]
    seen = len(host.received)
    assert link.upload_offline([_item("txn-a", 100)]).items[0].result == "declined"
    assert len(host.received) == seen  # answered from the memory: not sent again


# --- settlement -----------------------------------------------------------------------------


def test_settlement_in_balance_closes_at_once(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    link.authorise(_sale(1000))
    settlement = link.settle()
    assert settlement.in_balance is True
    assert host.mtis()[-1] == "0500"
    assert settlement.transaction_count == 1
    assert settlement.totals == (BrandTotals("VISA", 978, 1, 1000, 0, 0, 1000),)
    assert host.open_batch() == []


def test_settlement_out_of_balance_uploads_the_batch_then_closes(
    rig: Rig, host: FakeIsoHost
) -> None:
    terminal = rig.start()
    link = terminal.link
    first = link.authorise(_sale(1000))
    link.authorise(_sale(2000))
    link.authorise(_sale(5151))  # declined: counts nowhere
    voided = link.authorise(_sale(4000))
    assert first.transaction_ref
    assert voided.transaction_ref
    link.void(voided.transaction_ref)
    link.refund(RefundRequest(amount=500, currency=978, original_ref=first.transaction_ref))
    # The host holds a sale the terminal does not: its totals differ (95).
    host.bookings.append(Booking("sale", 700, 978, "000000999999", "approved"))

    settlement = link.settle()
    assert host.mtis()[-5:] == ["0500", "0320", "0320", "0320", "0500"]
    reconcile, *uploads, after = host.received[-5:]
    assert (reconcile.get("3"), reconcile.get("76"), reconcile.get("88")) == (
        "920000",
        "0000000002",
        "0000000000003000",
    )
    assert (reconcile.get("74"), reconcile.get("86")) == ("0000000001", "0000000000000500")
    booked = [b for b in host.bookings[:-1] if b.status == "approved"]
    assert [u.get("37") for u in uploads] == [b.rrn for b in booked]
    assert [u.get("3") for u in uploads] == ["000000", "000000", "200000"]
    assert after.get("3") == "960000"
    assert settlement.in_balance is False
    assert settlement.transaction_count == 3
    assert settlement.totals == (BrandTotals("VISA", 978, 2, 3000, 1, 500, 2500),)
    assert settlement.batch_id == "TERM0001-000001"
    assert terminal.memory.open_batch() == []
    # The card data of a reconciled batch is erased from the memory.
    assert terminal.memory.by_rrn(booked[0].rrn, ("purchase",)).fields == {}  # type: ignore[union-attr]

    empty = link.settle()
    assert (empty.in_balance, empty.transaction_count, empty.totals) == (True, 0, ())
    assert host.received[-1].get("88") == "0" * 16


def test_the_batch_upload_carries_each_transactions_card_and_entry_mode(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start().link
    link.authorise(_sale(1000))
    sale = host.received[-1]
    host.bookings.append(Booking("sale", 700, 978, "000000999999", "approved"))
    link.settle()
    [upload] = [m for m in host.received if m.mti == "0320"]
    assert (upload.get("2"), upload.get("22"), upload.get("14")) == (
        PAN,
        sale.get("22"),
        sale.get("14"),
    )
    assert "35" not in upload.fields  # the PAN or the track 2 equivalent, never both


def test_a_0500_whose_answer_was_lost_is_repeated_and_the_batch_closes_once(
    rig: Rig, host: FakeIsoHost
) -> None:
    terminal = rig.start()
    link = terminal.link
    link.authorise(_sale(1000))
    host.fault("0500", "drop")  # the host closes its batch; the answer never comes
    host.fault("0501", "drop")
    with pytest.raises(OutcomeUnknownError):
        link.settle(idempotency_key="eod-1")
    assert len(host.closed_batches) == 1
    link.authorise(_sale(300))  # a sale after the end of day began: the next batch's

    settlement = link.settle(idempotency_key="eod-2")  # a new end of day, a new key
    reconciliations = [m for m in host.received if m.mti.startswith("050")]
    assert [m.mti for m in reconciliations] == ["0500", "0501", "0501"]
    assert {(m.get("11"), m.get("7"), m.get("60")) for m in reconciliations} == {
        (reconciliations[0].get("11"), reconciliations[0].get("7"), "000001")
    }
    assert len(host.closed_batches) == 1  # closed once, by the first 0500
    assert (settlement.batch_id, settlement.idempotency_key) == ("TERM0001-000001", "eod-1")
    assert (settlement.transaction_count, settlement.in_balance) == (1, True)
    assert settlement.totals == (BrandTotals("VISA", 978, 1, 1000, 0, 0, 1000),)
    assert [row.amount for row in terminal.memory.open_batch()] == [300]

    following = link.settle()
    assert host.received[-1].mti == "0500"
    assert (host.received[-1].get("60"), host.received[-1].get("88")) == (
        "000002",
        "0000000000000300",
    )
    assert (following.batch_id, following.in_balance) == ("TERM0001-000002", True)
    assert len(host.closed_batches) == 2


def test_a_settlement_asked_again_under_its_key_is_answered_from_the_memory(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start().link
    link.authorise(_sale(1000))
    first = link.settle(idempotency_key="eod-1")
    link.authorise(_sale(200))
    seen = len(host.received)
    again = link.settle(idempotency_key="eod-1")
    assert len(host.received) == seen  # nothing sent: the new sale waits for its own batch
    assert again == first
    assert (again.batch_id, again.transaction_count) == ("TERM0001-000001", 1)


def test_a_refused_0500_keeps_the_open_batch_number(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    link.authorise(_sale(1000))
    host.fault("0500", "answer", data=b"30")
    with pytest.raises(Iso8583ResponseError) as refused:
        link.settle(idempotency_key="eod-refused")
    assert refused.value.code == "30"
    settlement = link.settle(idempotency_key="eod-2")
    first, second = [m for m in host.received if m.mti.startswith("050")]
    assert (first.mti, second.mti) == ("0500", "0500")  # refused as sent: a new 0500
    assert first.get("11") != second.get("11")
    assert first.get("60") == second.get("60") == "000001"
    assert settlement.batch_id == "TERM0001-000001"
    # The refused end of day asked again under its key is still refused (from the
    # memory), not the settlement of the batch a later 0500 closed.
    seen = len(host.received)
    with pytest.raises(Iso8583ResponseError) as again:
        link.settle(idempotency_key="eod-refused")
    assert again.value.code == "30"
    assert len(host.received) == seen


def test_a_0500_the_host_could_not_process_is_repeated(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    link.authorise(_sale(1000))
    host.fault("0500", "answer", data=b"96")
    with pytest.raises(Iso8583ResponseError) as fault:
        link.settle()
    assert fault.value.code == "96"
    assert link.settle().transaction_count == 1
    first, repeat = [m for m in host.received if m.mti.startswith("050")]
    assert (first.mti, repeat.mti, first.get("11")) == ("0500", "0501", repeat.get("11"))


# --- the rest -------------------------------------------------------------------------------


def test_status_lookup_is_not_in_iso8583_and_the_report_says_so(rig: Rig) -> None:
    link = rig.start().link
    with pytest.raises(StatusLookupUnsupportedError, match="no status lookup") as unsupported:
        link.status(transaction_ref="000000000001")
    assert isinstance(unsupported.value, AcquirerError)
    sale = TxnRecord(
        id="txn-1",
        kind=Kind.SALE,
        state=State.APPROVED,
        amount=1234,
        currency=978,
        created_at="2026-12-02T09:30:00+00:00",
        updated_at="2026-12-02T09:30:00+00:00",
        host_ref="000000000001",
    )
    # The reconciliation report's lookup: the host's side of each line "not asked".
    assert look_up([sale], link, lambda _: None) == {
        "txn-1": HostUnavailable(
            "the host could not be asked: the ISO 8583 link has no status lookup"
        )
    }


def test_an_idle_link_sends_an_echo_test(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start(echo_interval=60.0).link
    link.authorise(_sale())
    seen = len(host.received)
    rig.clock.mono += 59
    assert link.keep_alive() is False
    assert len(host.received) == seen
    rig.clock.mono += 1
    assert link.keep_alive() is True
    assert host.mtis()[-1] == "0800/301"
    assert link.whoami()["terminal_id"] == "TERM0001"


# --- whatever the host sends back -----------------------------------------------------------

_CODES = st.one_of(
    st.sampled_from(["00", "05", "12", "51", "58", "63", "91", "94", "95", "96"]),
    st.text("0123456789AZ ", min_size=0, max_size=2),
)
_FIELD_VALUES = st.fixed_dictionaries(
    {"39": _CODES},
    optional={
        "37": st.text("0123456789AZ ", min_size=12, max_size=12),
        "38": st.text("0123456789AZ ", min_size=6, max_size=6),
        "55": st.one_of(
            st.binary(max_size=40),
            st.builds(
                lambda value: tlv.encode([tlv.Tlv.primitive(0x91, value)]),
                st.binary(max_size=12),
            ),
        ),
        "62": st.text("ABCxyz-_0", max_size=12),
        "63": st.text(max_size=30, alphabet=st.characters(min_codepoint=32, max_codepoint=126)),
    },
)


@st.composite
def _answers(draw: st.DrawFn) -> tuple[str, bytes | dict[str, str | bytes]]:
    """Raw bytes (framed or not), or a well-MAC'd message with odd fields: mostly of the
    answer's type and STAN, so what the link does with a believed answer is what is tried."""
    if draw(st.integers(0, 3)) == 0:
        raw = draw(st.binary(max_size=80))
        return "raw", (frame(PROFILE, raw) if raw and draw(st.booleans()) else raw)
    fields: dict[str, str | bytes] = dict(draw(_FIELD_VALUES))
    if draw(st.integers(0, 4)):
        fields["11"] = "echo"  # the request's STAN, filled in by the test
    others = st.sampled_from(["0230", "0810", "0410", "0200", "0211"])
    return draw(st.one_of(st.just("answer"), st.just("answer"), others)), fields


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(answer=_answers(), operation=st.sampled_from(["sale", "refund", "advice"]))
def test_any_bytes_from_the_host_end_in_the_links_own_errors(
    tmp_path_factory: pytest.TempPathFactory,
    answer: tuple[str, bytes | dict[str, str | bytes]],
    operation: str,
) -> None:
    server = FakeIsoHost(TMK)
    rig = Rig(tmp_path_factory.mktemp("any"), server)
    try:
        link = rig.start(answer_timeout=2.0, max_reversal_attempts=2).link
        link.echo_test()  # keys and sign-on as usual
        kind, value = answer
        request_type = {"sale": "0200", "refund": "0200", "advice": "0220"}[operation]
        if kind == "raw":
            assert isinstance(value, bytes)
            server.fault(request_type, "garbage", data=value)
        else:
            assert isinstance(value, dict)
            stan = f"{rig.running[0].counters.peek(STAN) + 1:06d}"
            fields = {k: (stan if v == "echo" else v) for k, v in value.items()}
            fields.setdefault("41", STATION.terminal_id)
            mti = answer_mti(request_type) if kind == "answer" else kind
            try:
                data = frame(PROFILE, encode_message(PROFILE, mti, fields, server.mac_key))
            except MessageFormatError:  # a value the profile refuses (an empty 39)
                return
            server.fault(request_type, "garbage", data=data)
        try:
            if operation == "sale":
                link.authorise(_sale())
            elif operation == "refund":
                link.refund(RefundRequest(amount=100, currency=978))
            else:
                link.upload_offline([_item("txn-x", 100)])
        except AcquirerError:
            pass  # the documented way for the link to fail
    finally:
        for terminal in rig.running:
            terminal.close()
        server.close()


# --- the memory as it grows ---------------------------------------------------------------


def _vm_steps(memory: LinkMessages, work: Callable[[], object]) -> int:
    """SQLite virtual machine steps (in hundreds) the memory's connection takes for `work`:
    a count that does not depend on the machine's speed or load."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    connection = memory._file.conn
    connection.set_progress_handler(count, 100)
    try:
        work()
    finally:
        connection.set_progress_handler(None, 0)
    return steps


def _costs(path: Path) -> tuple[int, int]:
    """The VM steps of remembering one more sale and of looking up a hold's changes."""
    memory = LinkMessages(path, bytes(32))
    message = SentMessage(
        key="auth-next",
        kind="purchase",
        mti="0200",
        stan=1,
        sent_at=datetime(2026, 12, 2, 9, 30, tzinfo=UTC),
        fields={"2": PAN, "4": "000000001234"},
        amount=1234,
        currency=978,
    )
    try:
        return (
            _vm_steps(memory, lambda: memory.record(message)),
            _vm_steps(memory, lambda: memory.changes_of("hold-1")),
        )
    finally:
        memory.close()


def test_a_message_costs_the_memory_no_more_after_a_year_of_messages(tmp_path: Path) -> None:
    # The memory never forgets a message (a reconciled batch's rows keep their clear
    # columns), so remembering the next one and finding a hold's changes must not walk
    # every row kept: a year of a busy terminal's messages would slow every sale.
    new = _costs(tmp_path / "new.sqlite3")
    path = tmp_path / "a-year-old.sqlite3"
    LinkMessages(path, bytes(32)).close()
    with contextlib.closing(sqlite3.connect(path)) as old, old:
        old.executemany(
            "INSERT INTO messages (key, kind, mti, stan, sent_at, amount, currency, brand, "
            "original_key, state, seq, batch) VALUES (?, 'purchase', '0200', ?, "
            "'2025-12-02T09:30:00+00:00', 100, 978, 'VISA', '', 'answered', ?, 'B1')",
            [(f"old-{i}", i % 999999 + 1, i + 1) for i in range(20_000)],
        )
    record, changes = _costs(path)
    assert record <= new[0] + 5
    assert changes <= new[1] + 5


# --- answers that approve nothing asked -----------------------------------------------------


def test_a_partial_approval_is_reversed_and_the_sale_declined(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    host.fault("0200", "answer", data=b"10")  # approved for part of the amount
    answer = link.authorise(_sale(), idempotency_key="auth-partial")
    assert not answer.approved
    assert host.mtis()[-2:] == ["0200", "0400"]  # whatever the host holds of it, given back


def test_a_94_is_no_answer_and_the_sale_is_reversed(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    host.fault("0200", "answer", data=b"94")  # duplicate transmission: the first may stand
    answer = link.authorise(_sale(), idempotency_key="auth-94")
    assert answer.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    assert host.mtis()[-2:] == ["0200", "0400"]


def test_a_reversed_authorisation_is_never_sent_again(rig: Rig, host: FakeIsoHost) -> None:
    link = rig.start().link
    host.fault("0200", "drop")
    first = link.authorise(_sale(), idempotency_key="auth-once")
    assert first.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    sent = len(host.received)
    again = link.authorise(_sale(), idempotency_key="auth-once")
    assert again.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    assert len(host.received) == sent  # no 0201 after its 0400


def test_an_answer_for_another_amount_is_not_the_answer() -> None:
    request = financial_request(
        "purchase",
        station=STATION,
        stan=7,
        now=datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
        amount=1234,
        currency=978,
        card=None,
    )
    ours = {"11": "000007", "41": STATION.identify()["41"], "39": "00"}
    assert check_answer(request, Message("0210", dict(ours))) == "00"  # no field 4: believed
    with pytest.raises(AnswerMismatchError, match="another amount"):
        check_answer(request, Message("0210", ours | {"4": "000000000100"}))


def test_a_crash_between_the_0510_and_the_close_finishes_that_settlement(
    rig: Rig, host: FakeIsoHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = rig.start()
    link = terminal.link
    link.authorise(_sale(1000))

    def power_cut(*args: object, **kwargs: object) -> int:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(terminal.memory, "close_batch", power_cut)
        with pytest.raises(OSError, match="power cut"):
            link.settle(idempotency_key="eod-1")
    settlement = link.settle(idempotency_key="eod-2")
    reconciliations = [m for m in host.received if m.mti.startswith("050")]
    assert [m.mti for m in reconciliations] == ["0500"]  # answered 00 already: no new 0500
    assert len(host.closed_batches) == 1
    assert (settlement.batch_id, settlement.transaction_count) == ("TERM0001-000001", 1)
    assert terminal.memory.open_batch() == []


def test_a_lost_answer_to_the_second_0500_is_repeated_without_a_second_upload(
    rig: Rig, host: FakeIsoHost
) -> None:
    link = rig.start().link
    link.authorise(_sale(1000))
    host.bookings.append(Booking("sale", 700, 978, "000000999999", "approved"))
    host.fault("0500", "pass")  # the first 0500: 95
    host.fault("0500", "drop")  # the 960000: closed at the host, its answer lost
    host.fault("0501", "drop")
    with pytest.raises(OutcomeUnknownError):
        link.settle(idempotency_key="eod-1")
    settlement = link.settle()
    tail = [m.mti for m in host.received if m.mti[:3] in ("050", "032")]
    assert tail == ["0500", "0320", "0500", "0501", "0501"]
    assert len(host.closed_batches) == 1
    assert (settlement.batch_id, settlement.in_balance) == ("TERM0001-000001", False)
