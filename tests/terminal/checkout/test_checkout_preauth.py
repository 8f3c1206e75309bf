"""Pre-authorisations at the checkout: a hold authorised with the card, raised, captured
(all or part of it) or released; refused when the bank cannot hold it (down, no bank), when
a capture is over the hold or the hold has been closed; a capture whose answer was lost, or
cut by a crash, settled exactly once. Virtual cards through the `sim:` driver, the simulated
acquirer in process (over a real socket where a fault cuts the connection or the host stops
listening), real SQLite journal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from terminal.acquirer.client import OutcomeUnknownError
from terminal.app.runtime import TerminalRuntime
from terminal.checkout.errors import AcquirerRequiredError, RequestError, StateError
from terminal.domain.messages import Result
from terminal.domain.receipts import build_receipt
from terminal.domain.records import Kind, State, TxnRecord
from tests.conftest_host import HostHandle
from tests.terminal.checkout.conftest import start_checkout_terminal


def _preauth(rt: TerminalRuntime, amount: int, card: str = "visa") -> TxnRecord:
    record = rt.checkout.preauthorise(amount)
    assert rt.field is not None
    rt.field.present(f"sim:{card}")
    return rt.checkout.wait(record.id, timeout=30)


def _kinds(host: HostHandle) -> list[tuple[str, int, str]]:
    return [(r["kind"], r["amount"], r["status"]) for r in host.ledger()]


def test_full_capture_takes_the_hold_and_counts_as_one_sale(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    hold = _preauth(terminal, 5000)
    assert (hold.kind, hold.state, hold.result) == (
        Kind.PREAUTH,
        State.APPROVED,
        Result.PREAUTH_APPROVED,
    )
    assert hold.authorised_amount == 5000
    assert hold.host_ref
    view = terminal.checkout.view(hold)
    assert view["title_key"] == "preauth_held"
    # A hold moves no money: nothing in the totals yet.
    assert terminal.checkout.totals() == []

    capture = terminal.checkout.capture(hold.id)
    assert (capture.state, capture.result, capture.amount) == (
        State.APPROVED,
        Result.CAPTURE_APPROVED,
        5000,
    )
    after = terminal.checkout.get(hold.id)
    assert (after.authorised_amount, after.captured_amount, after.released) == (5000, 5000, True)
    assert terminal.checkout.view(after)["title_key"] == "preauth_captured"
    assert [c["kind"] for c in terminal.checkout.view(after)["changes"]] == ["capture"]
    [line] = terminal.checkout.totals()
    assert (line.sales_count, line.sales_amount, line.refunds_amount) == (1, 5000, 0)
    assert _kinds(host) == [("preauth", 5000, "captured"), ("capture", 5000, "approved")]
    # Receipted like the rest, in both languages: the hold and the capture, each by its kind.
    params = terminal.checkout.params
    english = build_receipt(capture, params, "customer", language="en")
    assert english.title == "CAPTURE"
    assert english.status == "APPROVED"
    assert build_receipt(after, params, "merchant", language="en").title == "PRE-AUTHORISATION"
    chinese = build_receipt(capture, params, "customer", language="zh")
    assert ("交易类型", "预授权完成") in chinese.lines


def test_partial_capture_releases_the_rest(terminal: TerminalRuntime, host: HostHandle) -> None:
    hold = _preauth(terminal, 5000)
    capture = terminal.checkout.capture(hold.id, 3250)
    assert capture.state is State.APPROVED
    after = terminal.checkout.get(hold.id)
    assert (after.captured_amount, after.released) == (3250, True)
    assert terminal.checkout._acquirer is not None
    status = terminal.checkout._acquirer.status(transaction_ref=hold.host_ref)
    assert (status.authorised_amount, status.captured_amount, status.released_amount) == (
        5000,
        3250,
        1750,
    )
    [line] = terminal.checkout.totals()
    assert line.sales_amount == 3250
    # One capture only: a second is refused by the terminal, before any request.
    with pytest.raises(StateError) as refused:
        terminal.checkout.capture(hold.id, 100)
    assert refused.value.reason == "captured"
    assert [k for k, _a, _s in _kinds(host)] == ["preauth", "capture"]


def test_increment_raises_the_hold_then_the_capture_takes_it(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    hold = _preauth(terminal, 5000)
    raised = terminal.checkout.increment(hold.id, 2000)
    assert (raised.state, raised.result) == (State.APPROVED, Result.INCREMENT_APPROVED)
    assert terminal.checkout.get(hold.id).authorised_amount == 7000
    capture = terminal.checkout.capture(hold.id, 6800)
    assert capture.state is State.APPROVED
    after = terminal.checkout.get(hold.id)
    assert (after.authorised_amount, after.captured_amount) == (7000, 6800)
    [line] = terminal.checkout.totals()
    assert (line.sales_count, line.sales_amount) == (1, 6800)
    # An increment the issuer declines (x.51: insufficient funds) leaves the hold as it was.
    hold2 = _preauth(terminal, 1000)
    declined = terminal.checkout.increment(hold2.id, 151)
    assert (declined.state, declined.result) == (State.DECLINED, Result.INCREMENT_DECLINED)
    assert terminal.checkout.get(hold2.id).authorised_amount == 1000


def test_release_gives_the_hold_back_and_closes_it(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    hold = _preauth(terminal, 4000)
    release = terminal.checkout.release(hold.id)
    assert (release.state, release.result, release.amount) == (
        State.APPROVED,
        Result.RELEASE_APPROVED,
        4000,
    )
    after = terminal.checkout.get(hold.id)
    assert (after.captured_amount, after.released) == (0, True)
    assert terminal.checkout.view(after)["title_key"] == "preauth_released"
    assert terminal.checkout.totals() == []
    attempts: list[Callable[[], TxnRecord]] = [
        lambda: terminal.checkout.capture(hold.id),
        lambda: terminal.checkout.increment(hold.id, 100),
        lambda: terminal.checkout.release(hold.id),
    ]
    for attempt in attempts:
        with pytest.raises(StateError) as refused:
            attempt()
        assert refused.value.reason == "released"
    assert _kinds(host) == [("preauth", 4000, "released"), ("release", 4000, "approved")]


def test_capture_over_the_hold_is_refused_before_any_request(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    hold = _preauth(terminal, 2000)
    with pytest.raises(RequestError) as refused:
        terminal.checkout.capture(hold.id, 2001)
    assert refused.value.reason == "over_hold"
    assert [k for k, _a, _s in _kinds(host)] == ["preauth"]
    assert terminal.checkout.journal.find_original(hold.id) == []


def test_changes_of_what_is_not_an_open_hold_are_refused(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    sale = terminal.checkout.start_sale(1000)
    assert terminal.field is not None
    terminal.field.present("sim:visa")
    terminal.checkout.wait(sale.id, timeout=30)
    with pytest.raises(StateError) as refused:
        terminal.checkout.capture(sale.id)
    assert refused.value.reason == "not_a_preauth"
    declined = _preauth(terminal, 1051)  # x.51: the issuer declines the hold
    assert declined.state is State.DECLINED
    with pytest.raises(StateError) as refused:
        terminal.checkout.release(declined.id)
    assert refused.value.reason == "not_open"


@pytest.mark.integration
def test_host_down_declines_the_preauthorisation_with_its_reason(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    assert acquirer_host.server is not None
    acquirer_host.server.stop_listening()
    try:
        hold = _preauth(terminal, 3000)
    finally:
        acquirer_host.server.listen_again()
    assert (hold.state, hold.result) == (State.DECLINED, Result.PREAUTH_DECLINED)
    assert "bank unreachable" in hold.reason
    message = terminal.checkout.message(hold)
    assert message is not None
    assert "nothing held" in message.merchant
    # Never taken offline: nothing in the queue, nothing to reverse.
    assert terminal.checkout.status()["queue"]["count"] == 0
    assert terminal.checkout.journal.pending_reversals() == []
    # A change of a hold while the bank is down: refused as unavailable, nothing changed.
    held = _preauth(terminal, 3000)
    assert held.state is State.APPROVED
    acquirer_host.server.stop_listening()
    try:
        with pytest.raises(AcquirerRequiredError) as down:
            terminal.checkout.capture(held.id)
    finally:
        acquirer_host.server.listen_again()
    assert down.value.reason == "unreachable"
    assert terminal.checkout.get(held.id).captured_amount == 0
    assert terminal.checkout.capture(held.id).state is State.APPROVED


@pytest.mark.integration
def test_lost_answer_on_capture_is_settled_exactly_once(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    hold = _preauth(terminal, 5000)
    # The host captures, but every answer (the client's three tries) is lost.
    acquirer_host.set_fault("/v1/preauths/", "drop_after_commit", times=3)
    first = terminal.checkout.capture(hold.id, 4000)
    assert (first.state, first.outcome_unknown) == (State.FAILED, True)
    assert terminal.checkout.view(first)["title_key"] == "capture_unknown"
    # The register tries again: the earlier capture is settled first under its own key; it
    # did go through, so it is recorded and nothing more is captured.
    with pytest.raises(StateError) as refused:
        terminal.checkout.capture(hold.id, 4000)
    assert refused.value.reason == "earlier_hold_change_done"
    assert terminal.checkout.get(first.id).state is State.APPROVED
    after = terminal.checkout.get(hold.id)
    assert (after.captured_amount, after.released) == (4000, True)
    captures = [r for r in acquirer_host.ledger() if r["kind"] == "capture"]
    assert [(r["amount"], r["status"]) for r in captures] == [(4000, "approved")]
    with pytest.raises(StateError) as again:
        terminal.checkout.capture(hold.id, 4000)
    assert again.value.reason == "captured"


def test_lost_answer_with_the_bank_still_silent_blocks_the_next_change(
    tmp_path: Path, host: HostHandle
) -> None:
    rt = start_checkout_terminal(tmp_path / "terminal", host)
    try:
        hold = _preauth(rt, 5000)
        original = rt.checkout._acquirer
        assert original is not None

        def silent(*_args: Any, **kwargs: Any) -> Any:
            raise OutcomeUnknownError("no answer", kwargs["idempotency_key"])

        real = original.capture_hold
        original.capture_hold = silent  # type: ignore[method-assign]
        first = rt.checkout.capture(hold.id)
        assert first.outcome_unknown
        with pytest.raises(AcquirerRequiredError) as blocked:
            rt.checkout.release(hold.id)
        assert blocked.value.reason == "pending_hold_change"
        original.capture_hold = real  # type: ignore[method-assign]
        # The background loop settles it (the bank never got it: captured now, once).
        assert rt.checkout.retry_reversals() == 0
        assert rt.checkout.get(first.id).state is State.APPROVED
        assert rt.checkout.get(hold.id).captured_amount == 5000
        assert [r["kind"] for r in host.ledger()] == ["preauth", "capture"]
    finally:
        rt.close()


def test_capture_cut_by_a_crash_is_settled_at_the_restart(tmp_path: Path, host: HostHandle) -> None:
    """The bank captured and answered; the terminal died while recording it. At the next
    start the capture is settled under its own key: recorded once, as the bank did it."""
    directory = tmp_path / "terminal"
    rt = start_checkout_terminal(directory, host)
    hold = _preauth(rt, 5000)
    original = rt.checkout._finish

    def crash(record: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
        if record.kind == "capture":
            raise SystemExit("power cut")
        return original(record, state, *args, **kwargs)

    rt.checkout._finish = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        rt.checkout.capture(hold.id, 2500)
    rt.close()
    rt = start_checkout_terminal(directory, host)
    try:
        [capture] = rt.checkout.journal.find_original(hold.id)
        assert (capture.state, capture.outcome_unknown) == (State.APPROVED, False)
        after = rt.checkout.get(hold.id)
        assert (after.captured_amount, after.released) == (2500, True)
        assert [(r["kind"], r["amount"]) for r in host.ledger()] == [
            ("preauth", 5000),
            ("capture", 2500),
        ]
    finally:
        rt.close()


# The power cut ends the pre-authorisation's own thread: its SystemExit is the crash.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_preauthorisation_cut_by_a_crash_is_reversed_at_the_restart(
    tmp_path: Path, host: HostHandle
) -> None:
    directory = tmp_path / "terminal"
    rt = start_checkout_terminal(directory, host)
    original = rt.checkout._finish

    def crash(record: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
        if record.kind == "preauth":
            raise SystemExit("power cut")
        return original(record, state, *args, **kwargs)

    rt.checkout._finish = crash  # type: ignore[method-assign]
    record = rt.checkout.preauthorise(3000)
    assert rt.field is not None
    rt.field.present("sim:visa")
    rt.checkout.wait(record.id, timeout=10)
    rt.close()
    rt = start_checkout_terminal(directory, host)
    try:
        hold = rt.checkout.get(record.id)
        assert (hold.state, hold.result) == (State.DECLINED, Result.HOST_NO_RESPONSE)
        assert hold.authorised_amount == 0
        assert [(r["kind"], r["status"]) for r in host.ledger()] == [("preauth", "reversed")]
    finally:
        rt.close()
