"""A card that wedges the conversation (slow, silent, a stack that never returns) cannot hold
the sale: Cancel ends it within moments, the card read deadline ends it with "card took too
long", and an answer that comes after either is dropped whatever it says; an unenrolled
terminal takes no offline payment (it could never be uploaded).

In process: the simulated field with the `sim:` driver's virtual cards, or the kernel seam
(`terminal.checkout.card_session.run_card_transaction`) where the order of events must be
forced. The same through pcscd and nfcpy: tests/security/test_wedging_card.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.base import CardReader
from emv.kernel import Outcome, OutcomeKind
from terminal.app.runtime import TerminalRuntime, start_terminal
from terminal.checkout import card_session
from terminal.checkout.card_session import CardSessionResult
from terminal.checkout.errors import StateError
from terminal.domain.messages import Result, message_for
from terminal.domain.records import Stage, State, TxnRecord
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle
from tests.terminal.checkout.conftest import CLIENT, start_checkout_terminal


@pytest.fixture
def terminal_options() -> dict[str, Any]:
    return {"card_timeout": 30.0}


def _wait_for_stage(rt: TerminalRuntime, txn_id: str, stage: Stage, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while rt.checkout.get(txn_id).stage != stage:
        assert time.monotonic() < deadline, f"the sale never reached {stage}"
        time.sleep(0.005)


def _reading(rt: TerminalRuntime, card: str, amount: int = 1500) -> TxnRecord:
    """A sale with `card` presented, once the checkout is reading it."""
    assert rt.field is not None
    record = rt.checkout.start_sale(amount)
    rt.field.present(card)
    _wait_for_stage(rt, record.id, Stage.READING_CARD)
    return record


def test_cancel_ends_a_sale_whose_card_never_answers_within_a_second(
    terminal: TerminalRuntime,
) -> None:
    record = _reading(terminal, "sim:visa?hang_on=gpo")
    time.sleep(0.1)  # the card is silent on GET PROCESSING OPTIONS
    started = time.monotonic()
    terminal.checkout.cancel(record.id)
    ended = terminal.checkout.wait(record.id, timeout=5)
    latency = time.monotonic() - started
    assert (ended.state, ended.result) == (State.CANCELLED, Result.CANCELLED)
    assert latency < 1.0, f"cancel took {latency:.3f} s"
    assert terminal.checkout.current is None
    # The terminal takes the next sale: the wedged card was taken out of the field.
    assert terminal.field is not None
    nxt = terminal.checkout.start_sale(1200)
    terminal.field.present("sim:visa")
    assert terminal.checkout.wait(nxt.id, timeout=20).state == State.APPROVED


def test_a_reading_sale_says_it_can_be_cancelled(terminal: TerminalRuntime) -> None:
    record = _reading(terminal, "sim:visa?hang_on=read_record")
    assert terminal.checkout.view(terminal.checkout.get(record.id))["cancellable"] is True
    terminal.checkout.cancel(record.id)
    assert terminal.checkout.wait(record.id, timeout=5).state == State.CANCELLED


@pytest.mark.parametrize("card", ["sim:visa?hang_on=any", "sim:mastercard?slow=2"])
def test_the_card_read_deadline_ends_a_wedged_or_slow_card(
    tmp_path: Path, host: HostHandle, card: str
) -> None:
    rt = start_checkout_terminal(
        tmp_path / "terminal", host, card_timeout=30.0, card_read_timeout=0.5
    )
    try:
        record = _reading(rt, card)
        ended = rt.checkout.wait(record.id, timeout=5)
        assert (ended.state, ended.result) == (State.DECLINED, Result.CARD_TOO_SLOW)
        assert ended.reason == "no answer from the card within 0.5 s"
        view = rt.checkout.view(ended)
        assert view["message"]["merchant"].startswith("Card took too long; try again")
        assert host.ledger(rt.checkout.terminal_id) == []  # nothing reached the acquirer
    finally:
        rt.close()


def test_the_card_too_slow_message_in_both_languages() -> None:
    en = message_for(Result.CARD_TOO_SLOW, "en", amount="", reason="")
    zh = message_for(Result.CARD_TOO_SLOW, "zh", amount="", reason="")
    assert en.merchant == "Card took too long; try again - payment not taken"
    assert zh.merchant == "读卡超时，请重试 - 未收款"


class Gate:
    """The kernel seam: every card conversation waits at the gate, then returns
    `outcome` (ignoring the checkout's stop, as a stack that never hears of it would)."""

    def __init__(self, outcome: Outcome, before: Callable[[], None] = lambda: None) -> None:
        self.outcome = outcome
        self.before = before
        self.gate = threading.Event()
        self.returned = threading.Event()

    def __call__(
        self, reader: CardReader, params: Any, request: Any, **options: Any
    ) -> CardSessionResult:
        self.gate.wait(10)
        self.before()
        self.returned.set()
        return CardSessionResult(self.outcome, 7)


APPROVED_OUTCOME = Outcome(OutcomeKind.APPROVED, reason="")


def _published(terminal: TerminalRuntime, txn_id: str, state: State) -> int:
    """The id of the event that published `txn_id` in `state` (waiting up to 5 s for it)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for event in terminal.checkout.events.after(0, timeout=0.1):
            data = event["data"]
            if event["type"] == "transaction" and data["id"] == txn_id and data["state"] == state:
                return int(event["id"])
    raise AssertionError(f"{txn_id} was never published as {state}")


def test_a_late_approval_after_cancel_never_changes_the_recorded_outcome(
    terminal: TerminalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = Gate(APPROVED_OUTCOME)
    monkeypatch.setattr(card_session, "run_card_transaction", seam)
    record = _reading(terminal, "sim:visa")
    terminal.checkout.cancel(record.id)
    cancelled = terminal.checkout.wait(record.id, timeout=5)
    assert cancelled.state == State.CANCELLED
    # The cancelled sale is published after its commit (wait() sees the commit): from the
    # event that says "cancelled" on, nothing more may come of that sale.
    last_event = _published(terminal, record.id, State.CANCELLED)
    seam.gate.set()  # the card's approval arrives now, after the sale was recorded
    assert seam.returned.wait(5)
    time.sleep(0.2)
    after = terminal.checkout.get(record.id)
    assert (after.state, after.revision) == (State.CANCELLED, cancelled.revision)
    late = [
        e
        for e in terminal.checkout.events.after(last_event, timeout=0)
        if e["type"] == "transaction"
    ]
    assert late == []


def test_a_cancel_landing_just_before_the_card_s_outcome_is_taken_wins(
    terminal: TerminalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The card has its answer; before the checkout takes it, the merchant cancels.
    holder: list[str] = []

    def merchant_cancels() -> None:
        terminal.checkout.cancel(holder[0])

    seam = Gate(APPROVED_OUTCOME, before=merchant_cancels)
    monkeypatch.setattr(card_session, "run_card_transaction", seam)
    record = _reading(terminal, "sim:visa")
    holder.append(record.id)
    seam.gate.set()
    ended = terminal.checkout.wait(record.id, timeout=5)
    assert (ended.state, ended.result) == (State.CANCELLED, Result.CANCELLED)


def test_once_the_card_s_outcome_is_taken_cancel_is_too_late(
    terminal: TerminalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    acquirer: Any = terminal.client
    real = acquirer.authorise
    entered, gate = threading.Event(), threading.Event()

    def held_authorise(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(acquirer, "authorise", held_authorise)
    assert terminal.field is not None
    record = terminal.checkout.start_sale(1500)
    terminal.field.present("sim:visa")
    assert entered.wait(10)  # the card's outcome is in: the sale is being authorised
    with pytest.raises(StateError, match="too late to cancel"):
        terminal.checkout.cancel(record.id)
    gate.set()
    assert terminal.checkout.wait(record.id, timeout=20).state == State.APPROVED


# --- an unenrolled terminal takes no offline payment ---------------------------------------


@pytest.mark.parametrize("with_host", [False, True], ids=["no acquirer", "acquirer, no code"])
def test_an_unenrolled_terminal_declines_offline_payments(
    tmp_path: Path, host: HostHandle, with_host: bool
) -> None:
    rt = start_terminal(
        tmp_path / "terminal",
        secret=TEST_SECRET,
        host_url=host.url if with_host else None,
        activation_code=None,  # never enrolled
        scrypt_n=TEST_SCRYPT_N,
        client_options=host.client_options(**CLIENT) if with_host else None,
        card_timeout=30.0,
    )
    try:
        assert rt.keystore.terminal_id is None
        assert rt.field is not None
        for card in ("sim:visa?approve_offline", "sim:mastercard"):
            record = rt.checkout.start_sale(800)
            rt.field.present(card)
            ended = rt.checkout.wait(record.id, timeout=20)
            assert ended.state == State.DECLINED, ended  # never approved offline
            assert ended.result == Result.DECLINED_NOT_ENROLLED
            view = rt.checkout.view(ended)
            assert view["message"]["merchant"] == (
                "Cannot take offline payments: terminal not enrolled - payment not taken"
            )
        assert rt.checkout.queue_summary().count == 0
    finally:
        rt.close()


def test_the_not_enrolled_message_in_chinese() -> None:
    zh = message_for(Result.DECLINED_NOT_ENROLLED, "zh", amount="", reason="")
    assert zh.merchant == "无法脱机收款：终端未注册 - 未收款"


def test_a_fault_in_the_card_conversation_fails_the_sale_without_waiting_for_the_deadline(
    terminal: TerminalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(reader: CardReader, params: Any, request: Any, **options: Any) -> Any:
        raise RuntimeError("a bug in the kernel")

    monkeypatch.setattr(card_session, "run_card_transaction", broken)
    assert terminal.field is not None
    record = terminal.checkout.start_sale(1500)
    terminal.field.present("sim:visa")
    started = time.monotonic()
    ended = terminal.checkout.wait(record.id, timeout=10)
    assert (ended.state, ended.result) == (State.FAILED, Result.READER_ERROR)
    assert time.monotonic() - started < 2.0
