"""Offline sales closed end to end: each says whether it waits in the queue, was sent, or
was declined by the bank when it was sent (the simulated host declines amounts ending in 51
minor units, docs/protocol.md, offline uploads included); a declined one can be neither
refunded nor voided, and the merchant's acknowledgement of the declines is kept in the
journal across a restart, a later decline raising the banner again. The simulated acquirer
over HTTP on loopback, its "refuse" fault for the outage; real journal and offline queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from terminal.app.runtime import TerminalRuntime
from terminal.checkout.errors import DeclinedAfterTheFactError
from tests.conftest_host import HostHandle
from tests.terminal.checkout.conftest import start_checkout_terminal

pytestmark = pytest.mark.integration


@pytest.fixture
def checkout_host(acquirer_host: HostHandle) -> HostHandle:
    """Every test here needs the host on a real socket."""
    return acquirer_host


def _sale(rt: TerminalRuntime, amount: int, card: str = "visa") -> dict[str, Any]:
    record = rt.checkout.start_sale(amount)
    assert rt.field is not None
    rt.field.present(f"sim:{card}")
    return rt.checkout.view(rt.checkout.wait(record.id, timeout=30))


def _offline_sales(rt: TerminalRuntime, host: HostHandle, *amounts: int) -> list[dict[str, Any]]:
    """Sales taken while the bank drops every connection (the first one, unanswered, is
    reversed as always; the next ones are taken offline)."""
    host.set_fault("/v1/", "refuse")
    if rt.checkout.host_online is not False:
        assert _sale(rt, 1200)["state"] == "declined"
    sales = [_sale(rt, amount) for amount in amounts]
    host.clear_faults()
    return sales


def _unacknowledged(rt: TerminalRuntime) -> int:
    return int(rt.checkout.status()["offline_declines"]["unacknowledged"])


def test_offline_sale_says_waiting_sent_or_declined(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    online = _sale(terminal, 1000)
    assert (online["state"], online["offline_status"]) == ("approved", None)

    good, bad = _offline_sales(terminal, acquirer_host, 1500, 1551)
    assert (good["state"], good["offline_status"]) == ("approved_offline", "waiting")
    assert (bad["state"], bad["offline_status"]) == ("approved_offline", "waiting")
    assert _unacknowledged(terminal) == 0

    report = checkout.sync_report()
    assert (report["accepted"], report["declined"]) == (1, 1)
    good = checkout.view(checkout.get(good["id"]))
    bad = checkout.view(checkout.get(bad["id"]))
    assert good["offline_status"] == "sent"
    assert good["host_ref"]
    assert good["refundable_amount"] == 1500
    assert bad["offline_status"] == "declined"
    assert bad["state"] == "approved_offline"  # what the customer's receipt said
    assert (bad["refundable_amount"], bad["voidable"]) == (0, False)
    assert _unacknowledged(terminal) == 1
    assert [r.id for r in checkout.journal.declined_after_the_fact()] == [bad["id"]]


def test_sale_declined_after_the_fact_is_neither_refunded_nor_voided(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    (bad,) = _offline_sales(terminal, acquirer_host, 2051)
    checkout.sync_offline()
    assert checkout.view(checkout.get(bad["id"]))["offline_status"] == "declined"
    before = checkout.journal.recent()
    with pytest.raises(DeclinedAfterTheFactError, match="declined this offline payment"):
        checkout.refund(bad["id"])
    with pytest.raises(DeclinedAfterTheFactError, match="declined this offline payment"):
        checkout.refund(bad["id"], 100)
    with pytest.raises(DeclinedAfterTheFactError, match="cannot be voided"):
        checkout.void(bad["id"])
    assert checkout.journal.recent() == before  # nothing journalled, nothing sent
    assert not [r for r in acquirer_host.ledger() if r["kind"] in ("refund", "void")]


def test_acknowledgement_survives_a_restart_and_a_new_decline_shows_again(
    tmp_path: Path, acquirer_host: HostHandle
) -> None:
    rt = start_checkout_terminal(tmp_path / "terminal", acquirer_host)
    try:
        _offline_sales(rt, acquirer_host, 1551, 2251)
        rt.checkout.sync_offline()
        assert _unacknowledged(rt) == 2
        assert rt.checkout.acknowledge_declines() == {"acknowledged": 2, "unacknowledged": 0}
        assert _unacknowledged(rt) == 0
        # Acknowledging again changes nothing; no transaction got a new revision.
        assert rt.checkout.acknowledge_declines() == {"acknowledged": 0, "unacknowledged": 0}
        assert all(r.reason for r in rt.checkout.journal.declined_after_the_fact())
    finally:
        rt.close()

    rt = start_checkout_terminal(tmp_path / "terminal", acquirer_host)
    try:
        assert _unacknowledged(rt) == 0
        # Still listed under "needs attention": acknowledging hides the banner only.
        assert len(rt.checkout.journal.declined_after_the_fact()) == 2
        (later,) = _offline_sales(rt, acquirer_host, 3051)
        rt.checkout.sync_offline()
        assert _unacknowledged(rt) == 1
        assert [r.id for r in rt.checkout.journal.declined_after_the_fact(unacknowledged=True)] == [
            later["id"]
        ]
    finally:
        rt.close()
