"""Phone payments in the checkout, end to end: the simulated phone types its code into a pty,
the real serial scanner driver reads it while the checkout also waits for a card, the code
payment goes over the acquirer client's own signed connection to the simulated acquirer
(in process through tests/inprocess.py, real SQLite; on 127.0.0.1 for the tests where the
host goes down), and the outcome is journaled, evented and receipted like a card's.
Merchant-presented sales are paid by the simulated phone through the host's wallet
notification. Every test reads codes through a real pty: integration tests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlparse

import pytest

from emv.qr.mpm import parse_mpm
from simulator.host import HostServer
from simulator.wallet import PhoneWallet, WalletAccount
from terminal.acquirer.qr_client import AcquirerTransport, QrClient
from terminal.app.runtime import TerminalRuntime
from terminal.checkout.core import QR_CANCEL_PREFIX
from terminal.checkout.qr_payment import QrPaymentParams
from terminal.domain.messages import Result
from terminal.domain.receipts import build_receipt
from terminal.domain.records import Stage, TxnRecord
from tests.conftest_host import HostHandle

pytest.importorskip("serial")
from simulator.bridges.pty_scanner import PtyScanner

pytestmark = pytest.mark.integration  # the serial scanner driver on a real pty

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
WALLET_PAN = "4761739001010119"
QR = QrPaymentParams(confirm_timeout=60, poll_interval=0.05)
CARD_TIMEOUT = 8.0


def _random() -> Any:
    counter = itertools.count(1)

    def rnd(n: int) -> bytes:
        return bytes((next(counter) * 151 + 7) % 256 for _ in range(n))

    return rnd


@pytest.fixture
def pty() -> Iterator[PtyScanner]:
    scanner = PtyScanner()
    try:
        yield scanner
    finally:
        scanner.unplug()


@pytest.fixture
def terminal_options(pty: PtyScanner) -> dict[str, Any]:
    """The shared `terminal` with the scanner on the pty."""
    return {
        "scanner_url": f"serial:{pty.path}?suffix=CR",
        "qr_params": QR,
        "card_timeout": CARD_TIMEOUT,
    }


@pytest.fixture
def phone(host: HostHandle) -> PhoneWallet:
    host.set_issuer_key(WALLET_PAN[:6], IMK)  # the host checks the CPM cryptogram
    return PhoneWallet(
        WalletAccount(WALLET_PAN, "3012", IMK),
        random=_random(),
        clock=time.time,
        register=host.register_wallet_code,
    )


def _orders(host: HostHandle) -> list[dict[str, Any]]:
    return host.qr_orders()


def _stages(rt: TerminalRuntime, since: int, txn_id: str) -> list[str]:
    return [
        e["data"]["stage"]
        for e in rt.checkout.events.after(since, timeout=0)
        if e["type"] == "transaction" and e["data"]["id"] == txn_id
    ]


def _wait_for_stage(rt: TerminalRuntime, txn_id: str, stage: str) -> None:
    """Follow the event stream until the sale reaches `stage` (no clock involved)."""
    last = 0
    while True:
        for event in rt.checkout.events.after(last, timeout=30):
            last = event["id"]
            data = event["data"]
            if event["type"] == "transaction" and data.get("id") == txn_id:
                assert data["state"] == "in_progress", data
                if data["stage"] == stage:
                    return


def _wait_ready(rt: TerminalRuntime, txn_id: str) -> None:
    """Wait until the reader and the scanner listen (a serial port drops earlier bytes)."""
    last = 0
    while True:
        for event in rt.checkout.events.after(last, timeout=30):
            last = event["id"]
            if event["type"] == "ready" and event["data"]["id"] == txn_id:
                assert event["data"] == {"id": txn_id, "card": True, "code": True}
                return


def _code_sale(rt: TerminalRuntime, pty: PtyScanner, code: str, amount: int = 1250) -> Any:
    record = rt.checkout.start_sale(amount)
    _wait_ready(rt, record.id)
    pty.type_code(code)
    return rt.checkout.wait(record.id, timeout=60)


def test_wallet_code_through_the_serial_scanner_is_approved_journaled_and_receipted(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet, host: HostHandle
) -> None:
    start = terminal.checkout.events.last_id
    code = phone.wallet_code("alipay")
    done = _code_sale(terminal, pty, code)
    view = terminal.checkout.view(done)
    assert (view["state"], view["result"]) == ("approved", Result.APPROVED)
    assert view["message"]["merchant"] == "Approved 12.50 EUR"
    assert (view["brand"], view["entry_mode"]) == ("ALIPAY", "qr_wallet")
    assert view["masked_pan"].endswith(code[-4:])
    assert code not in view["masked_pan"]
    assert "reading_code" in _stages(terminal, start, done.id)
    [order] = _orders(host)
    assert (order["status"], order["amount"], order["order_id"]) == (
        "paid",
        1250,
        done.qr_order_id,
    )
    receipt = build_receipt(done, terminal.checkout.params, "customer").text()
    assert "QR / WALLET" in receipt
    assert "WALLET CODE" in receipt
    assert code not in receipt
    # The journal file never holds the code itself.
    assert code.encode() not in (terminal.state_dir / "journal.sqlite3").read_bytes()


def test_wallet_sale_is_refunded_through_the_checkout_and_settled_under_its_scheme(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet, host: HostHandle
) -> None:
    done = _code_sale(terminal, pty, phone.wallet_code("wechatpay"), amount=1800)
    assert done.state == "approved"
    assert done.host_ref  # the host booked it: a bank reference to refund against
    refund = terminal.checkout.refund(done.id, 800)
    assert (refund.state, refund.result) == ("approved", Result.REFUND_APPROVED)
    ledger = host.ledger()
    assert [(r["kind"], r["brand"], r["amount"]) for r in ledger] == [
        ("sale", "wechatpay", 1800),
        ("refund", "wechatpay", 800),
    ]
    report = terminal.checkout.end_of_day()
    assert [
        (t["brand"], t["sales_amount"], t["refunds_amount"]) for t in report["host_totals"]
    ] == [("wechatpay", 1800, 800)]


def test_consumer_presented_code_is_authorised_with_its_cryptogram(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet, host: HostHandle
) -> None:
    done = _code_sale(terminal, pty, phone.consumer_code(), amount=2200)
    assert done.state == "approved"
    assert done.masked_pan == "476173******0119"
    assert done.host_ref  # authorised through the host's ledger, refundable like a card
    ledger = host.ledger()
    assert [(r["amount"], r["status"]) for r in ledger] == [(2200, "approved")]


def test_confirm_then_pay_waits_for_the_customer(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet, host: HostHandle
) -> None:
    start = terminal.checkout.events.last_id
    code = phone.wallet_code("wechatpay", confirm_delay=0.3)
    done = _code_sale(terminal, pty, code)
    assert done.state == "approved"
    assert Stage.WAITING_FOR_CONFIRMATION in _stages(terminal, start, done.id)
    assert _orders(host)[0]["status"] == "paid"


def test_cancel_from_the_register_cancels_the_order_and_charges_nothing(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet, host: HostHandle
) -> None:
    code = phone.wallet_code("alipay", confirm_delay=3600, confirm_outcome="never")
    record = terminal.checkout.start_sale(1500)
    _wait_ready(terminal, record.id)
    pty.type_code(code)
    _wait_for_stage(terminal, record.id, Stage.WAITING_FOR_CONFIRMATION)
    terminal.checkout.cancel(record.id)
    done = terminal.checkout.wait(record.id, timeout=30)
    assert (done.state, done.result) == ("cancelled", Result.CODE_CANCELLED)
    assert terminal.checkout.message(done).merchant == (  # type: ignore[union-attr]
        "Payment cancelled. Nothing was charged."
    )
    assert [o["status"] for o in _orders(host)] == ["cancelled"]
    assert host.ledger() == []
    assert terminal.checkout.current is None  # the terminal is free for the next sale


@pytest.mark.parametrize(
    ("make", "reason", "merchant"),
    [
        (lambda p: p.wallet_code("alipay", expired=True), "expired", "has expired"),
        (lambda p: "https://example.invalid/menu", "unsupported", "not accepted"),
    ],
)
def test_bad_codes_get_a_clear_reason_and_nothing_is_charged(
    terminal: TerminalRuntime,
    pty: PtyScanner,
    phone: PhoneWallet,
    host: HostHandle,
    make: Any,
    reason: str,
    merchant: str,
) -> None:
    done = _code_sale(terminal, pty, make(phone))
    assert done.state == "declined"
    assert done.reason == reason
    assert merchant in terminal.checkout.message(done).merchant  # type: ignore[union-attr]
    assert host.ledger() == []
    assert all(o["status"] != "paid" for o in _orders(host))


@pytest.mark.parametrize("damage", [PhoneWallet.corrupt, PhoneWallet.truncate])
def test_a_damaged_read_asks_to_scan_again_and_the_sale_goes_on(
    terminal: TerminalRuntime,
    pty: PtyScanner,
    phone: PhoneWallet,
    host: HostHandle,
    damage: Any,
) -> None:
    """A code read with a character misread or missing is not the customer's refusal: the
    terminal says "scan it again" (the scan_rejected event) and keeps waiting; a good read
    then pays, once."""
    record = terminal.checkout.start_sale(1250)
    _wait_ready(terminal, record.id)
    start = terminal.checkout.events.last_id
    pty.type_code(damage(phone.consumer_code()))
    deadline = time.monotonic() + 10
    rejected: list[dict[str, Any]] = []
    while not rejected and time.monotonic() < deadline:
        events = terminal.checkout.events.after(start, timeout=0.5)
        rejected = [e["data"] for e in events if e["type"] == "scan_rejected"]
    assert rejected
    assert rejected[0]["id"] == record.id
    assert rejected[0]["message"] == "Code not read - scan it again"
    assert not terminal.checkout.get(record.id).finished
    assert host.ledger() == []
    pty.type_code(phone.wallet_code("alipay"))
    done = terminal.checkout.wait(record.id, timeout=60)
    assert done.state == "approved"
    assert [o["status"] for o in _orders(host)] == ["paid"]


def test_reused_code_is_refused(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet
) -> None:
    code = phone.wallet_code("alipay")
    assert _code_sale(terminal, pty, code).state == "approved"
    again = _code_sale(terminal, pty, phone.reused_code())
    assert (again.state, again.result, again.reason) == (
        "declined",
        Result.CODE_DECLINED,
        "reused",
    )


def test_a_card_still_pays_while_the_scanner_waits(terminal: TerminalRuntime) -> None:
    record = terminal.checkout.start_sale(300)
    assert terminal.field is not None
    terminal.field.present("sim:visa")
    done = terminal.checkout.wait(record.id, timeout=30)
    assert (done.state, done.entry_mode) == ("approved", "contactless")


def test_offline_code_means_take_a_card_and_the_order_is_cancelled_later(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet, acquirer_host: HostHandle
) -> None:
    code = phone.wallet_code("alipay")
    port = urlparse(acquirer_host.url).port
    acquirer_host.server.stop()
    done = _code_sale(terminal, pty, code)
    assert (done.state, done.result, done.reason) == (
        "declined",
        Result.CODE_USE_CARD,
        "offline",
    )
    assert "take a card instead" in terminal.checkout.message(done).merchant  # type: ignore[union-attr]
    order_key = QR_CANCEL_PREFIX + done.qr_order_id
    assert (order_key, done.id) in terminal.checkout.journal.pending_reversals()
    server = HostServer(acquirer_host.db_path, port=port or 0)
    server.start()
    try:
        assert terminal.checkout.retry_reversals() == 0
        # The cancel reached the host first: a late copy of the payment can never charge.
        [order] = _orders(HostHandle(server))
        assert (order["order_id"], order["status"]) == (done.qr_order_id, "cancelled")
    finally:
        server.stop()


def test_merchant_presented_sale_is_paid_by_the_phone(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    start = terminal.checkout.events.last_id
    record = terminal.checkout.start_sale(990, method="merchant_qr")
    payload = terminal.checkout.merchant_qr_payload(record)
    mpm = parse_mpm(payload)  # a valid EMVCo MPM, CRC included
    assert (mpm.initiation, mpm.amount_minor(2), mpm.currency) == ("dynamic", 990, 978)
    assert mpm.additional["05"] == record.qr_order_id
    assert terminal.checkout.view(record)["qr_svg"] is None  # the order is being opened
    _wait_for_stage(terminal, record.id, Stage.WAITING_FOR_PAYMENT)
    view = terminal.checkout.view(terminal.checkout.get(record.id))
    assert view["qr_svg"] == f"/api/v1/sales/{record.id}/qr.svg"
    assert view["cancellable"] is True
    assert host.pay_merchant_code(payload)["status"] == "paid"
    done = terminal.checkout.wait(record.id, timeout=30)
    assert (done.state, done.entry_mode, done.brand) == ("approved", "qr_merchant", "QR SIM-WALLET")
    assert terminal.checkout.view(done)["qr_svg"] is None
    assert _stages(terminal, start, record.id)[-1] == "done"
    receipt = build_receipt(done, terminal.checkout.params, "merchant").text()
    assert "QR CODE (MERCHANT)" in receipt


def test_cancelled_merchant_code_cannot_be_paid_afterwards(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    record = terminal.checkout.start_sale(450, method="merchant_qr")
    payload = terminal.checkout.merchant_qr_payload(record)
    _wait_for_stage(terminal, record.id, Stage.WAITING_FOR_PAYMENT)
    terminal.checkout.cancel()
    done = terminal.checkout.wait(record.id, timeout=30)
    assert (done.state, done.result) == ("cancelled", Result.CODE_CANCELLED)
    with pytest.raises(Exception, match="409"):
        host.pay_merchant_code(payload)
    assert [o["status"] for o in _orders(host)] == ["cancelled"]


def test_code_payment_cut_short_by_a_crash_is_given_back_on_restart(
    terminal: TerminalRuntime, phone: PhoneWallet, host: HostHandle
) -> None:
    checkout = terminal.checkout
    assert terminal.client is not None
    # What a crash leaves: the order id journaled, the wallet paid, no result on screen.
    order_id = "Q00C0FFEE00C0FFEE"
    record = checkout.journal.insert(
        TxnRecord(
            id="S-crashed",
            kind="sale",
            state="in_progress",
            amount=800,
            currency=978,
            created_at="2026-01-01T10:00:00+00:00",
            updated_at="2026-01-01T10:00:00+00:00",
            stage=Stage.READING_CODE,
            entry_mode="qr",
            qr_order_id=order_id,
        )
    )
    client = QrClient(AcquirerTransport(terminal.client))
    paid = client.pay_with_wallet_code(order_id, phone.wallet_code("alipay"), "alipay", 800, 978)
    assert paid.status == "paid"
    [fixed] = checkout.recover()
    assert (fixed.id, fixed.state, fixed.result) == (
        record.id,
        "cancelled",
        Result.CODE_CANCELLED,
    )
    # Nobody saw it approved, so the customer gets the money back.
    assert [o["status"] for o in _orders(host)] == ["reversed"]
    assert checkout.journal.pending_reversals() == []


def test_consumer_code_offline_only_when_the_parameters_allow_its_scheme(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    checkout.qr_params = replace(QR, offline_schemes=frozenset({"cpm"}))
    alipay = phone.wallet_code("alipay")  # issued while the provider is reachable
    acquirer_host.server.stop()
    # A card first: the terminal learns the acquirer is unreachable (approved offline).
    record = checkout.start_sale(300)
    assert terminal.field is not None
    terminal.field.present("sim:visa")
    assert checkout.wait(record.id, timeout=30).state == "approved_offline"
    assert checkout.host_online is False
    code_sale = _code_sale(terminal, pty, phone.consumer_code(), amount=1100)
    assert (code_sale.state, code_sale.entry_mode) == ("approved_offline", "qr_consumer")
    assert checkout.queue_summary().count == 2
    # A wallet code's scheme is not allowed offline: take a card.
    wallet = _code_sale(terminal, pty, alipay)
    assert (wallet.state, wallet.result) == ("declined", Result.CODE_USE_CARD)
    assert checkout.queue_summary().count == 2
    # Back online, both are uploaded: the code's signed record carries its cryptogram, ATC and
    # AID as a card's does, so the host books it instead of refusing a record that binds no card.
    server = HostServer(acquirer_host.db_path, port=urlparse(acquirer_host.url).port or 0)
    server.start()
    try:
        checkout.sync_offline()
        assert checkout.queue_summary().count == 0
        booked = sorted((r["kind"], r["amount"]) for r in HostHandle(server).ledger())
        assert booked == [("offline_sale", 300), ("offline_sale", 1100)]
        assert checkout.get(code_sale.id).host_ref
    finally:
        server.stop()


def test_closing_the_terminal_stops_waiting_for_a_card_or_a_code(
    terminal: TerminalRuntime,
) -> None:
    record = terminal.checkout.start_sale(100)
    _wait_ready(terminal, record.id)
    terminal.checkout.close()
    done = terminal.checkout.get(record.id)
    assert (done.state, done.result) == ("cancelled", Result.CANCELLED)


def test_a_damaged_scan_asks_for_another_in_the_terminals_language(
    terminal: TerminalRuntime, pty: PtyScanner, phone: PhoneWallet
) -> None:
    """A bad read (here bytes that are not text) does not end the sale: the merchant is asked,
    in the terminal's words, to scan again, and the next good code pays."""
    start = terminal.checkout.events.last_id
    record = terminal.checkout.start_sale(1250)
    _wait_ready(terminal, record.id)
    pty.write(b"\xff\xfe\xfd\r")
    deadline = time.monotonic() + 10
    rejected: list[dict[str, Any]] = []
    while not rejected:
        assert time.monotonic() < deadline, "no scan_rejected event"
        events = terminal.checkout.events.after(start, timeout=0.5)
        rejected = [e for e in events if e["type"] == "scan_rejected"]
    [note] = [e["data"] for e in rejected]
    assert note["id"] == record.id
    assert note["message"] == "Code not read - scan it again"
    assert note["reason"].startswith("code not read: ")
    assert terminal.checkout.get(record.id).state == "in_progress"
    pty.type_code(phone.wallet_code("alipay"))
    done = terminal.checkout.wait(record.id, timeout=60)
    assert done.state == "approved"
