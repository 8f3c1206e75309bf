"""End of day as a report, against the simulated acquirer over HTTP on loopback (its
"refuse" fault for an outage; it declines amounts ending in 51 minor units, offline uploads
included): the terminal's totals count approved sales and refunds as the bank does, the
offline sales this end of day's own sync sent included, never one the bank declined after
the fact; an offline sale still waiting stays in the open batch; the report is kept with
the batch and shown later as it was."""

from __future__ import annotations

from typing import Any

import pytest

from terminal.app.runtime import TerminalRuntime
from tests.conftest_host import HostHandle

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


def _counts(lines: list[dict[str, Any]]) -> list[tuple[str, int, int, int, int]]:
    return sorted(
        (
            str(t["brand"]).upper(),
            t["sales_count"],
            t["sales_amount"],
            t["refunds_count"],
            t["refunds_amount"],
        )
        for t in lines
    )


def test_the_offline_sales_this_end_of_day_sends_are_in_the_terminal_totals(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    assert _sale(terminal, 1000)["state"] == "approved"
    acquirer_host.set_fault("/v1/", "refuse")
    assert _sale(terminal, 1200)["result"] == "host_no_response"  # reversed as always
    assert [_sale(terminal, a)["state"] for a in (800, 900)] == ["approved_offline"] * 2
    acquirer_host.clear_faults()

    report = checkout.end_of_day()  # sends the two offline sales first
    assert report["offline_synced"]["accepted"] == 2
    # The terminal's side counts them, as the bank does: three sales, 27.00.
    assert _counts(report["terminal_totals"]) == _counts(report["host_totals"])
    assert report["grand_totals"][0]["sales_amount"] == 2700
    assert (report["transactions"], report["host_transactions"]) == (3, 3)
    assert report["in_balance"] is True


def test_a_sale_the_bank_declined_after_the_fact_never_counts_and_a_waiting_one_stays_open(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    assert _sale(terminal, 1000)["state"] == "approved"
    acquirer_host.set_fault("/v1/", "refuse")
    assert _sale(terminal, 1200)["result"] == "host_no_response"
    declined = _sale(terminal, 1551)  # the bank will decline it when it is sent
    acquirer_host.clear_faults()
    checkout.sync_offline()
    assert checkout.view(checkout.get(declined["id"]))["offline_status"] == "declined"

    # Before the end of day: the declined offline sale brought no money in.
    lines = checkout.totals()
    assert [(line.sales_count, line.sales_amount, line.offline_count) for line in lines] == [
        (1, 1000, 0)
    ]
    totals = checkout.totals_report()
    assert (totals["transactions"], totals["grand_totals"][0]["net_amount"]) == (1, 1000)

    # One more offline sale that cannot be sent before the batch closes.
    acquirer_host.set_fault("/v1/", "refuse")
    assert _sale(terminal, 1300)["result"] == "host_no_response"
    waiting = _sale(terminal, 700)
    assert waiting["state"] == "approved_offline"
    acquirer_host.clear_faults()
    acquirer_host.set_fault("/v1/batches/offline", "refuse")  # uploads fail, the rest answers
    report = checkout.end_of_day()
    assert report["still_offline"]["count"] == 1
    assert report["still_offline"]["amount_text"] == "7.00 EUR"
    assert _counts(report["terminal_totals"]) == _counts(report["host_totals"])
    assert report["grand_totals"][0]["sales_amount"] == 1000
    assert report["in_balance"] is True
    # The waiting sale is in the next batch, the one the bank will book it in.
    left = checkout.totals()
    assert [(line.sales_count, line.offline_count) for line in left] == [(1, 1)]
    assert checkout.get(waiting["id"]).batch_id == ""

    # History shows the report exactly as it was.
    assert checkout.batch_report(report["batch_id"]) == report
    history, cursor = checkout.batch_history()
    assert (history, cursor) == ([report], None)


def test_a_batch_an_earlier_version_closed_shows_the_bank_totals_it_kept(
    terminal: TerminalRuntime,
) -> None:
    checkout = terminal.checkout
    kept = [
        {
            "brand": "visa",
            "currency": 978,
            "sales_count": 2,
            "sales_amount": 2500,
            "refunds_count": 0,
            "refunds_amount": 0,
            "net_amount": 2500,
        }
    ]
    # As a schema-4 journal kept it: the bank's totals, no report.
    checkout.journal.close_batch("B-old", "2026-01-01T18:00:00+00:00", kept)
    report = checkout.batch_report("B-old")
    assert report["legacy"] is True
    assert report["host_grand_totals"][0]["net_amount_text"] == "25.00 EUR"
    assert report["host_transactions"] == 2
    assert "B-old" in "\n".join(report["text"])
    assert checkout.batch_history() == ([report], None)
