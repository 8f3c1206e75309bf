"""Checkout orchestration: the simulated acquirer host in process (tests/inprocess.py), or
over HTTP on loopback for a host that goes down or cuts the connection (integration);
virtual cards through the `sim:` driver, real SQLite journal and offline queue."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from simulator.host import HostServer
from terminal.app.runtime import TerminalRuntime
from terminal.checkout.errors import BusyError, RequestError, StateError
from terminal.domain.messages import Result, message_for
from tests.conftest_host import HostHandle


def _sale(rt: TerminalRuntime, amount: int, card: str = "visa") -> dict[str, object]:
    record = rt.checkout.start_sale(amount)
    assert rt.field is not None
    rt.field.present(f"sim:{card}")
    return rt.checkout.view(rt.checkout.wait(record.id, timeout=30))


def test_online_sale_is_approved_recorded_and_in_the_host_ledger(
    terminal: TerminalRuntime,
    host: HostHandle,
) -> None:
    result = _sale(terminal, 1234)
    assert result["state"] == "approved"
    assert result["masked_pan"] == "476173******0010"
    assert result["auth_code"]
    assert result["message"] == {
        "merchant": "Approved 12.34 EUR",
        "customer": "Approved - thank you",
    }
    ledger = host.ledger()
    assert [(r["kind"], r["amount"], r["status"]) for r in ledger] == [("sale", 1234, "approved")]
    # The journal on disk says the same after a reopen.
    journal_file = terminal.state_dir / "journal.sqlite3"
    assert b"4761730000000010" not in journal_file.read_bytes()
    assert terminal.checkout.get(str(result["id"])).state == "approved"


def test_issuer_decline_is_declined_with_reason(terminal: TerminalRuntime) -> None:
    result = _sale(terminal, 1051)  # the simulated issuer: amounts ending in 51 lack funds
    assert result["state"] == "declined"
    assert result["result"] == Result.DECLINED_BY_ISSUER
    assert "insufficient funds" in str(result["reason"])
    assert result["refundable_amount"] == 0


@pytest.mark.integration
def test_host_down_sale_is_approved_offline_then_synced_and_refundable(
    tmp_path: Path,
    terminal: TerminalRuntime,
    acquirer_host: HostHandle,
) -> None:
    port = urlparse(acquirer_host.url).port
    acquirer_host.server.stop()
    offline = _sale(terminal, 800, "mastercard")
    assert offline["state"] == "approved_offline"
    assert offline["message"]["merchant"] == (  # type: ignore[index]
        "Network down - approved offline, will be sent automatically"
    )
    status = terminal.checkout.status()
    assert status["host_online"] is False
    assert status["queue"]["count"] == 1
    assert status["queue"]["amounts"] == {"978": 800}
    # Refund is refused (clearly) while the payment has not reached the bank.
    with pytest.raises(StateError, match="still in the offline queue"):
        terminal.checkout.refund(str(offline["id"]), 100)
    server = HostServer(acquirer_host.db_path, port=port or 0)
    server.start()
    try:
        terminal.checkout.sync_offline()
        assert terminal.checkout.queue_summary().count == 0
        refund = terminal.checkout.refund(str(offline["id"]), 300)
        assert refund.state == "approved"
        sale = terminal.checkout.get(str(offline["id"]))
        assert sale.host_ref
        assert sale.refunded_amount == 300
        ledger = HostHandle(server).ledger()
        kinds = sorted((r["kind"], r["amount"]) for r in ledger)
        assert kinds == [("offline_sale", 800), ("refund", 300)]
    finally:
        server.stop()


@pytest.mark.integration
def test_offline_limit_refusal_is_a_decline_never_a_silent_accept(
    terminal: TerminalRuntime,
    acquirer_host: HostHandle,
) -> None:
    acquirer_host.server.stop()
    result = _sale(terminal, 6000)  # over the default 50.00 per-payment offline limit
    assert result["state"] == "declined"
    assert result["result"] == Result.DECLINED_OFFLINE_LIMIT
    assert "offline limit per payment exceeded" in str(result["reason"])
    assert terminal.checkout.queue_summary().count == 0


@pytest.mark.integration
def test_lost_authorisation_response_is_reversed_not_approved(
    terminal: TerminalRuntime,
    acquirer_host: HostHandle,
) -> None:
    acquirer_host.set_fault("/v1/authorisations", "drop_after_commit", times=1)
    result = _sale(terminal, 2000)
    assert result["state"] == "declined"
    assert result["result"] == Result.HOST_NO_RESPONSE
    ledger = acquirer_host.ledger()
    assert [r["status"] for r in ledger] == ["reversed"]


def test_one_transaction_at_a_time_and_cancel_stops_waiting(terminal: TerminalRuntime) -> None:
    record = terminal.checkout.start_sale(500)
    with pytest.raises(BusyError, match="busy"):
        terminal.checkout.start_sale(600)
    terminal.checkout.cancel(record.id)
    done = terminal.checkout.wait(record.id, timeout=10)
    assert done.state == "cancelled"
    assert done.result == Result.CANCELLED
    # The terminal is free again at once.
    second = terminal.checkout.start_sale(700)
    terminal.checkout.cancel()
    assert terminal.checkout.wait(second.id, timeout=10).state == "cancelled"


def test_void_and_refund_rules(terminal: TerminalRuntime) -> None:
    sale = _sale(terminal, 2500)
    with pytest.raises(RequestError, match="exceeds what is left"):
        terminal.checkout.refund(str(sale["id"]), 2600)
    voided = terminal.checkout.void(str(sale["id"]))
    assert voided.state == "approved"
    assert voided.result == Result.VOID_APPROVED
    with pytest.raises(StateError):
        terminal.checkout.refund(str(sale["id"]), 100)
    assert terminal.checkout.totals() == []


def test_end_of_day_closes_the_batch_with_host_totals(terminal: TerminalRuntime) -> None:
    _sale(terminal, 1000)
    first = _sale(terminal, 2000, "mastercard")
    terminal.checkout.refund(str(first["id"]), 500)
    lines = {line.brand: line for line in terminal.checkout.totals()}
    assert lines["VISA CREDIT"].sales_amount == 1000
    report = terminal.checkout.end_of_day()
    assert report["transactions"] == 3
    nets = sorted(t["net_amount"] for t in report["host_totals"])
    assert nets == [1000, 1500]
    assert terminal.checkout.totals() == []


def test_invalid_amounts_never_reach_the_card(terminal: TerminalRuntime) -> None:
    for amount in (0, -5, 10**12):
        with pytest.raises(RequestError):
            terminal.checkout.start_sale(amount)
    with pytest.raises(RequestError, match="not accepted"):
        terminal.checkout.start_sale(100, 840)
    assert terminal.checkout.journal.recent() == []


def test_messages_exist_in_english_and_chinese_for_every_result() -> None:
    for result in Result:
        for language in ("en", "zh"):
            message = message_for(result, language, amount="1.00 EUR", reason="why")
            assert message.merchant
            assert message.customer
            assert "why" not in message.customer
    assert message_for(Result.APPROVED_OFFLINE, "zh").merchant.startswith("网络中断")


def test_events_follow_the_sale(terminal: TerminalRuntime) -> None:
    start = terminal.checkout.events.last_id
    _sale(terminal, 300)
    stages = [
        e["data"].get("stage")
        for e in terminal.checkout.events.after(start, timeout=0)
        if e["type"] == "transaction"
    ]
    assert stages[0] == "waiting_for_card"
    assert stages[-1] == "done"
    assert "authorising" in stages
    assert threading.active_count() >= 1


@pytest.mark.parametrize(
    ("card", "amount"),
    [("visa", 1234), ("visa", 7000), ("mastercard", 7000), ("visa_debit", 2500)],
)
def test_the_issuer_verifies_every_online_arqc_from_what_the_terminal_sends(
    terminal: TerminalRuntime, host: HostHandle, card: str, amount: int
) -> None:
    """The simulated issuer holds the virtual cards' issuer master keys by default
    (simulator.host.issuers) and recomputes each ARQC from the online data alone (EMV Book 2
    v4.4 §8.1.1): a Kernel 3 sale above the CVM limit, whose TVR the kernel changes after the
    GPO, verifies as well as a Kernel 2 one."""
    result = _sale(terminal, amount, card)
    assert result["state"] == "approved", result["reason"]
    [row] = [r for r in host.ledger() if r["kind"] == "sale"]
    assert (row["status"], row["arqc_status"]) == ("approved", "valid")


def test_a_wrong_arqc_is_declined_with_the_reason(terminal: TerminalRuntime) -> None:
    # The card's cryptogram is corrupted after the card computed it: 7000 goes online.
    record = terminal.checkout.start_sale(7000)
    assert terminal.field is not None
    terminal.field.present("sim:visa?corrupt=cryptogram")
    result = terminal.checkout.view(terminal.checkout.wait(record.id, timeout=30))
    assert result["state"] == "declined"
    assert result["result"] == Result.DECLINED_BY_ISSUER
