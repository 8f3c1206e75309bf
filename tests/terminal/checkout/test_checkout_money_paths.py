"""Paths where a payment could be lost, doubled or taken without a receipt: a reversal the
host refuses, an unanswered refund retried by the merchant, a void after a refund, and the
background forwarder surviving a fault. The simulated acquirer over HTTP on loopback where a
fault cuts the connection or the host restarts (integration), in process otherwise; virtual
cards through the `sim:` driver, real SQLite journal and offline queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from simulator.host import HostServer
from terminal.acquirer.client import AuthorisationRequest, HostRejectedError, RefundRequest
from terminal.app.runtime import TerminalRuntime
from terminal.checkout.errors import AcquirerRequiredError, StateError
from terminal.domain.messages import Result
from tests.conftest_host import (
    AcquirerTerminal,
    HostHandle,
    card_emv,
)
from tests.terminal.checkout.conftest import start_checkout_terminal

CLIENT: dict[str, Any] = {"sleep": lambda _s: None, "read_timeout": 10.0}


class SkewableClock:
    """The terminal's wall clock; `jump_after(n)` moves it an hour ahead from the n-th
    further reading on (an NTP step, a bad RTC), so the host refuses those requests."""

    def __init__(self) -> None:
        self.calls = 0
        self.skew_from: int | None = None

    def __call__(self) -> float:
        self.calls += 1
        if self.skew_from is not None and self.calls >= self.skew_from:
            return time.time() + 3600
        return time.time()

    def jump_after(self, n: int) -> None:
        self.skew_from = self.calls + n + 1

    def fix(self) -> None:
        self.skew_from = None


def _start(directory: Path, host: HostHandle, **client: Any) -> TerminalRuntime:
    return start_checkout_terminal(directory, host, client={**CLIENT, **client})


@pytest.fixture
def checkout_host(acquirer_host: HostHandle) -> HostHandle:
    """The shared `terminal` on the host on a real socket."""
    return acquirer_host


@pytest.fixture
def terminal_options() -> dict[str, Any]:
    """This module's client options: the client's default number of reversal attempts."""
    return {"client": CLIENT}


def _sale(rt: TerminalRuntime, amount: int, card: str = "visa") -> Mapping[str, Any]:
    record = rt.checkout.start_sale(amount)
    assert rt.field is not None
    rt.field.present(f"sim:{card}")
    return rt.checkout.view(rt.checkout.wait(record.id, timeout=30))


@pytest.mark.integration
def test_reversal_the_host_refuses_is_kept_and_retried_never_dropped(
    tmp_path: Path, acquirer_host: HostHandle
) -> None:
    clock = SkewableClock()
    rt = _start(tmp_path / "terminal", acquirer_host, clock=clock, max_reversal_attempts=3)
    try:
        # The authorisation is processed but its answer is lost; the terminal's clock then
        # steps an hour ahead, so the host refuses the reversal (401, timestamp window).
        acquirer_host.set_fault("/v1/authorisations", "drop_after_commit", times=1)
        clock.jump_after(1)
        result = _sale(rt, 2000)
        assert result["state"] == "declined"
        assert result["result"] == Result.HOST_NO_RESPONSE
        # The approval at the host must not be forgotten: the reversal waits to be retried.
        assert len(rt.checkout.journal.pending_reversals()) == 1
        clock.fix()
        assert rt.checkout.retry_reversals() == 0
        assert [r["status"] for r in acquirer_host.ledger()] == ["reversed"]
    finally:
        rt.close()


@pytest.mark.integration
def test_unanswered_refund_is_not_sent_again_under_a_new_key(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    sale = _sale(terminal, 2000)
    assert sale["state"] == "approved"
    # The host refunds, but every answer (the client's three tries) is lost.
    acquirer_host.set_fault("/v1/refunds", "drop_after_commit", times=3)
    first = terminal.checkout.refund(str(sale["id"]), 500)
    assert first.state == "failed"
    # The merchant tries again: the earlier refund is settled first, with its own key; it
    # did go through, so it is recorded and nothing more is refunded.
    with pytest.raises(StateError, match="earlier refund"):
        terminal.checkout.refund(str(sale["id"]), 500)
    refunds = [r for r in acquirer_host.ledger() if r["kind"] == "refund"]
    assert [(r["amount"], r["status"]) for r in refunds] == [(500, "approved")]
    assert terminal.checkout.get(first.id).state == "approved"
    assert terminal.checkout.get(str(sale["id"])).refunded_amount == 500
    # Now the merchant can refund more, once.
    again = terminal.checkout.refund(str(sale["id"]), 500)
    assert again.state == "approved"
    assert terminal.checkout.get(str(sale["id"])).refunded_amount == 1000


@pytest.mark.integration
def test_void_whose_answer_is_lost_is_settled_under_its_own_key(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    sale = _sale(terminal, 1800)
    assert sale["state"] == "approved"
    # The host voids, but every answer (the client's three tries) is lost.
    acquirer_host.set_fault("/v1/voids", "drop_after_commit", times=3)
    first = terminal.checkout.void(str(sale["id"]))
    assert (first.state, first.reason) == ("failed", "no answer from the bank")
    assert terminal.checkout.owes_the_host()
    # The background loop's pass settles it under its own key: the host answers the first
    # result, the sale is voided on the terminal as at the host, and nothing is owed.
    assert terminal.checkout.retry_reversals() == 0
    assert terminal.checkout.get(first.id).state == "approved"
    assert terminal.checkout.get(str(sale["id"])).voided is True
    assert not terminal.checkout.owes_the_host()
    voids = [r for r in acquirer_host.ledger() if r["kind"] == "sale" and r["status"] == "voided"]
    assert len(voids) == 1
    with pytest.raises(StateError, match="cannot be voided"):
        terminal.checkout.void(str(sale["id"]))


@pytest.mark.integration
def test_refund_with_no_answer_yet_blocks_another_refund_of_the_sale(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    sale = _sale(terminal, 2000)
    acquirer_host.set_fault("/v1/refunds", "drop_after_commit", times=3)
    terminal.checkout.refund(str(sale["id"]), 500)
    acquirer_host.set_fault("/v1/refunds", "http_500", times=3)
    with pytest.raises(AcquirerRequiredError, match="earlier refund"):
        terminal.checkout.refund(str(sale["id"]), 500)
    refunds = [r for r in acquirer_host.ledger() if r["kind"] == "refund"]
    assert len(refunds) == 1


def _refund_then_power_cut(
    rt: TerminalRuntime,
    sale_id: str,
    amount: int,
    directory: Path,
    host: HostHandle,
    *,
    at_state: str | None = None,
) -> TerminalRuntime:
    """Refund `amount` and cut the power as the refund's final state (`at_state`, or any)
    is being committed; then start the terminal again on the same files."""
    original = rt.checkout._finish

    def crash(record: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        if record.kind == "refund" and at_state in (None, state):
            raise SystemExit("power cut")
        return original(record, state, *args, **kwargs)

    rt.checkout._finish = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        rt.checkout.refund(sale_id, amount)
    rt.close()
    return _start(directory, host)


@pytest.mark.integration
def test_refund_interrupted_by_a_crash_is_settled_before_another(
    tmp_path: Path, acquirer_host: HostHandle
) -> None:
    directory = tmp_path / "terminal"
    rt = _start(directory, acquirer_host)
    sale = _sale(rt, 2000)
    # A crash after the refund left (it reached the host) and before its answer was recorded.
    acquirer_host.set_fault("/v1/refunds", "drop_after_commit", times=3)
    rt = _refund_then_power_cut(rt, str(sale["id"]), 700, directory, acquirer_host)
    try:
        with pytest.raises(StateError, match="earlier refund"):
            rt.checkout.refund(str(sale["id"]), 700)
        refunds = [r for r in acquirer_host.ledger() if r["kind"] == "refund"]
        assert [r["amount"] for r in refunds] == [700]
        assert rt.checkout.get(str(sale["id"])).refunded_amount == 700
    finally:
        rt.close()


def test_refund_approved_then_a_crash_before_its_record_is_counted_once(
    tmp_path: Path, inprocess_host: HostHandle
) -> None:
    """The bank refunded 7.00 and answered; the terminal died while recording the approval.
    After the restart the refund is settled under its own key; the sale shows 7.00 refunded,
    what the bank moved, not 14.00 (the sale's total used to be committed apart from the
    refund record, so the settle added it a second time), and 13.00 can still be refunded."""
    directory = tmp_path / "terminal"
    rt = _start(directory, inprocess_host)
    sale = _sale(rt, 2000)
    rt = _refund_then_power_cut(
        rt, str(sale["id"]), 700, directory, inprocess_host, at_state="approved"
    )
    try:
        with pytest.raises(StateError, match="earlier refund"):
            rt.checkout.refund(str(sale["id"]), 700)
        moved = sum(r["amount"] for r in inprocess_host.ledger() if r["kind"] == "refund")
        assert moved == 700
        assert rt.checkout.get(str(sale["id"])).refunded_amount == moved
        assert rt.checkout.view(rt.checkout.get(str(sale["id"])))["refundable_amount"] == 1300
        rest = rt.checkout.refund(str(sale["id"]), 1300)
        assert rest.state == "approved"
        assert rt.checkout.get(str(sale["id"])).refunded_amount == 2000
    finally:
        rt.close()


def test_host_refuses_to_void_a_sale_that_was_refunded(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    client = inprocess_terminal.client
    # With its chip data: the host declines an authorisation without an ARQC (Q1).
    emv, psn = card_emv("4761739001010010", 3000)
    request = AuthorisationRequest(
        amount=3000, currency=826, pan="4761739001010010", pan_sequence=psn, emv=emv
    )
    sale = client.authorise(request)
    assert sale.approved
    assert sale.transaction_ref
    client.refund(RefundRequest(amount=1000, currency=826, original_ref=sale.transaction_ref))
    # Voiding it now would cancel the charge while the customer keeps the refund.
    with pytest.raises(HostRejectedError) as err:
        client.void(sale.transaction_ref)
    assert err.value.code == "not_voidable"


@pytest.mark.integration
def test_background_forwarder_survives_a_fault_and_keeps_forwarding(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    port = urlparse(acquirer_host.url).port
    acquirer_host.server.stop()
    offline = _sale(terminal, 800, "mastercard")
    assert offline["state"] == "approved_offline"
    server = HostServer(acquirer_host.db_path, port=port or 0)
    server.start()
    try:
        # One pass of the loop hits a fault (a disk error, a bug): forwarding must go on.
        real_sync = terminal.checkout.sync_offline
        faults = [OSError("disk I/O error")]

        def sync_once_failing() -> Mapping[str, int]:
            if faults:
                raise faults.pop()
            return real_sync()

        terminal.checkout.sync_offline = sync_once_failing  # type: ignore[method-assign]
        drained = threading.Event()
        terminal.start_background(interval=0.05, random=lambda: 0.0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if terminal.checkout.queue_summary().count == 0:
                drained.set()
                break
            time.sleep(0.05)
        assert not faults
        assert drained.is_set(), "the background forwarder stopped after one fault"
    finally:
        terminal.close()
        server.stop()
