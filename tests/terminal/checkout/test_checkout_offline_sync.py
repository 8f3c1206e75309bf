"""After a sync the checkout copies the bank's reference (or its after-the-fact decline) into
the journal for every offline sale the journal still holds as waiting, however many newer
transactions there are: an older offline sale the bank got is never left looking unsent (and
so unrefundable). The simulated acquirer in process, its "refuse" fault for the outage; real
journal and offline queue; the newer transactions written to the journal directly."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from terminal.app.runtime import TerminalRuntime
from terminal.domain.records import State
from tests.conftest_host import HostHandle


def _sale(rt: TerminalRuntime, amount: int) -> dict[str, Any]:
    record = rt.checkout.start_sale(amount)
    assert rt.field is not None
    rt.field.present("sim:visa")
    return rt.checkout.view(rt.checkout.wait(record.id, timeout=30))


def test_an_offline_sale_behind_500_newer_transactions_is_marked_sent(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    checkout = terminal.checkout
    host.set_fault("/v1/", "refuse")
    try:
        assert _sale(terminal, 1200)["state"] == "declined"  # unanswered: reversed
        offline = _sale(terminal, 1500)
    finally:
        host.clear_faults()
    assert (offline["state"], offline["offline_status"]) == ("approved_offline", "waiting")
    sale = checkout.get(offline["id"])
    for n in range(520):  # a busy counter's day since, journalled as approved online sales
        checkout.journal.insert(
            replace(
                sale,
                id=f"S-later-{n:04d}",
                state=State.APPROVED,
                result="approved",
                offline_id="",
                host_ref=f"H-later-{n}",
            )
        )
    assert offline["id"] not in {r.id for r in checkout.journal.recent(limit=500)}

    assert checkout.sync_report()["accepted"] == 1
    sent = checkout.view(checkout.get(offline["id"]))
    assert sent["offline_status"] == "sent"
    assert sent["host_ref"]
    assert (sent["refundable_amount"], sent["refundable_after_sync"]) == (1500, False)
