"""An acquirer that accepts connections and drops them (the simulated host's "refuse"
fault, over a real socket), or that is down (its port refuses connections): the sale whose
request went unanswered is reversed as always, the next ones are taken offline within the
limits without another online try, one the terminal cannot take offline is still put to the
bank (it may be back), and the terminal's online state follows only what the bank answers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from terminal.app.runtime import TerminalRuntime
from terminal.domain.messages import Result
from tests.conftest_host import HostHandle

pytestmark = pytest.mark.integration


@pytest.fixture
def checkout_host(acquirer_host: HostHandle) -> HostHandle:
    """Every test here needs the host on a real socket."""
    return acquirer_host


def _sale(rt: TerminalRuntime, amount: int, card: str = "visa") -> dict[str, object]:
    record = rt.checkout.start_sale(amount)
    assert rt.field is not None
    rt.field.present(f"sim:{card}")
    return rt.checkout.view(rt.checkout.wait(record.id, timeout=30))


def _hits(host: HostHandle) -> int:
    return int(host.faults()["/v1/"]["hits"])


@pytest.mark.parametrize("mode", ["refuse", "drop_after_commit"])
def test_dropped_connections_reverse_the_first_sale_then_go_offline_within_limits(
    terminal: TerminalRuntime, acquirer_host: HostHandle, mode: str
) -> None:
    checkout = terminal.checkout
    assert _sale(terminal, 1000)["state"] == "approved"
    assert checkout.status()["host"]["online"] is True
    acquirer_host.set_fault("/v1/", mode)

    first = _sale(terminal, 1200)
    assert first["state"] == "declined"
    assert first["result"] == Result.HOST_NO_RESPONSE  # reversed as always (still owed here)
    status = checkout.status()
    assert status["host_online"] is False
    assert status["host"]["last_failure"] == "no_answer"
    assert status["host"]["last_failure_text"] == "bank not answering"
    assert status["host"]["since"]
    assert status["pending_reversals"] == 1
    assert status["offline_acceptance"] == {
        "enabled": True,
        "max_amount": 5000,
        "currency": 978,
        "max_amount_text": "50.00 EUR",
    }

    hits = _hits(acquirer_host)
    second = _sale(terminal, 1500)
    assert second["state"] == "approved_offline"
    assert second["result"] == Result.APPROVED_OFFLINE
    # No online request was sent: the terminal knew the bank was not answering.
    assert _hits(acquirer_host) == hits
    over = _sale(terminal, 6000)  # over the 50.00 EUR per-payment offline limit
    # Not taken offline, so put to the bank: still not answering, so it ends as the
    # first unanswered one did (reversed, here still owed), never charged.
    assert _hits(acquirer_host) > hits
    assert over["state"] == "declined"
    assert over["result"] == Result.HOST_NO_RESPONSE
    status = checkout.status()
    assert status["queue"]["count"] == 1
    assert status["pending_reversals"] == 2
    assert status["host_online"] is False

    # Pressing sync while the bank still drops connections: nothing sent, still offline.
    report = checkout.sync_report()
    assert report["sent"] == 0
    assert report["remaining"] == 1
    assert report["ok"] is False
    assert report["text"].startswith("Could not send: bank")
    assert checkout.status()["host_online"] is False

    # The bank is back: the sync's signed answers are the evidence.
    acquirer_host.clear_faults()
    report = checkout.sync_report()
    assert (report["sent"], report["accepted"], report["ok"]) == (1, 1, True)
    assert report["text"] == "1 sent"
    assert checkout.status()["host"]["online"] is True
    assert checkout.retry_reversals() == 0
    assert _sale(terminal, 1300)["state"] == "approved"
    ledger = {r["amount"]: (r["kind"], r["status"]) for r in acquirer_host.ledger()}
    assert ledger[1500] == ("offline_sale", "approved")
    assert ledger[1300] == ("sale", "approved")
    # The unanswered ones were never charged: not processed (refused), or reversed (dropped
    # after the host committed them).
    assert ledger.get(1200, ("sale", "reversed")) == ("sale", "reversed")
    assert ledger.get(6000, ("sale", "reversed")) == ("sale", "reversed")


def test_a_sale_over_the_offline_limits_is_put_to_the_bank_and_its_answer_brings_it_back(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    acquirer_host.set_fault("/v1/", "refuse")
    assert _sale(terminal, 1200)["result"] == Result.HOST_NO_RESPONSE
    acquirer_host.clear_faults()  # the bank is back, and the terminal does not know it yet
    assert checkout.status()["host_online"] is False
    within = _sale(terminal, 1500)
    assert within["state"] == "approved_offline"  # within the limits: no online try

    over = _sale(terminal, 6000)
    assert over["state"] == "approved"
    assert over["result"] == Result.APPROVED
    assert over["auth_code"]
    # The bank's answer is the evidence: online again, and the next sale goes online.
    status = checkout.status()
    assert status["host_online"] is True
    assert status["host"]["online"] is True
    assert _sale(terminal, 1300)["state"] == "approved"
    ledger = {r["amount"]: (r["kind"], r["status"]) for r in acquirer_host.ledger()}
    assert ledger[6000] == ("sale", "approved")
    assert ledger[1300] == ("sale", "approved")
    assert 1500 not in ledger  # still in the queue, sent by the next sync
    assert checkout.status()["queue"]["count"] == 1


def test_a_host_that_is_down_and_back_on_its_address(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    """The other outage: nothing listens (connections refused, nothing sent, so nothing to
    reverse). An over-limit sale is tried, refused at once and declined over the limits;
    once the host listens again the same sale is approved online."""
    assert acquirer_host.server is not None
    checkout = terminal.checkout
    acquirer_host.server.stop_listening()
    first = _sale(terminal, 1200)
    assert first["state"] == "approved_offline"
    status = checkout.status()
    assert status["host_online"] is False
    assert status["host"]["last_failure"] == "unreachable"
    assert status["pending_reversals"] == 0

    over = _sale(terminal, 6000)
    assert over["state"] == "declined"
    assert over["result"] == Result.DECLINED_OFFLINE_LIMIT
    assert "offline limit per payment exceeded" in str(over["reason"])
    assert checkout.status()["queue"]["count"] == 1

    acquirer_host.server.listen_again()
    again = _sale(terminal, 6000)
    assert again["state"] == "approved"
    assert checkout.status()["host_online"] is True
    report = checkout.sync_report()
    assert (report["sent"], report["accepted"], report["ok"]) == (1, 1, True)
    ledger = sorted((r["kind"], r["amount"], r["status"]) for r in acquirer_host.ledger())
    assert ledger == [("offline_sale", 1200, "approved"), ("sale", 6000, "approved")]


def test_sync_with_an_empty_queue_does_not_bring_a_failing_bank_online(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    acquirer_host.set_fault("/v1/", "refuse")
    assert _sale(terminal, 1200)["result"] == Result.HOST_NO_RESPONSE
    assert checkout.queue_summary().count == 0

    report = checkout.sync_report()
    assert (report["sent"], report["remaining"], report["ok"]) == (0, 0, False)
    assert report["failure"] == "no_answer"
    assert report["text"] == "Could not send: bank not answering"
    assert checkout.status()["host_online"] is False

    # An echo the bank answers is evidence: back online, and an empty queue says so.
    acquirer_host.clear_faults()
    report = checkout.sync_report()
    assert (report["ok"], report["text"], report["host_online"]) == (True, "Nothing to send", True)
    assert checkout.status()["host_online"] is True


def test_offline_acceptance_off_is_said_and_the_bank_is_still_asked(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    acquirer_host.set_fault("/v1/", "refuse")
    assert _sale(terminal, 1200)["result"] == Result.HOST_NO_RESPONSE
    checkout = terminal.checkout
    assert checkout.params.offline is not None
    checkout.params = replace(
        checkout.params, offline=replace(checkout.params.offline, enabled=False)
    )
    status = checkout.status()
    assert status["offline_acceptance"]["enabled"] is False
    assert status["offline_acceptance"]["max_amount"] is None
    # Nothing can be taken offline, so every card sale is the bank's to answer: while it
    # does not, each is declined (reversed as always)...
    hits = _hits(acquirer_host)
    declined = _sale(terminal, 1500)
    assert _hits(acquirer_host) > hits
    assert declined["state"] == "declined"
    assert declined["result"] == Result.HOST_NO_RESPONSE
    assert checkout.queue_summary().count == 0
    # ...and the first it answers brings the terminal back online (it would otherwise
    # decline every sale until a sync, with nothing to sync).
    acquirer_host.clear_faults()
    assert _sale(terminal, 1600)["state"] == "approved"
    assert checkout.status()["host_online"] is True

    # A host that refuses connections: nothing was sent, declined as offline-off says.
    assert acquirer_host.server is not None
    acquirer_host.server.stop_listening()
    refused = _sale(terminal, 1700)
    assert refused["state"] == "declined"
    assert refused["result"] == Result.DECLINED_OFFLINE_DISABLED
    assert checkout.status()["host_online"] is False
    assert _sale(terminal, 1800)["result"] == Result.DECLINED_OFFLINE_DISABLED
