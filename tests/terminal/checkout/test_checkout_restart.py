"""Entry Point restarts driven by the checkout (EMV Contactless Book B v2.10 §3.5, Start B):
the card asks for another tap ("see phone", removed too early), the sale is not ended but
waits for the card to leave the field and come back, then runs a fresh kernel transaction.

The terminal runs on the in-process simulated host with its simulated field; virtual cards
through the `sim:` driver and the real kernel, or a kernel seam (`run_card_transaction`
replaced in `terminal.checkout.card_session`) where the test is about the checkout alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest

from drivers.base import CardReader
from emv.kernel import Outcome, OutcomeKind
from emv.kernel.kernel_data import UiMessage
from emv.kernel.outcome import Start
from terminal.app.runtime import TerminalRuntime
from terminal.checkout import card_session
from terminal.checkout.card_session import CardSessionResult, run_card_transaction
from terminal.checkout.sale import MAX_RESTARTS
from terminal.domain.messages import Result, restart_text
from terminal.domain.params import TerminalParams, default_params
from terminal.domain.records import Stage, State
from tests.conftest_host import HostHandle
from tests.terminal.checkout.conftest import start_checkout_terminal

SEE_PHONE = "See phone for instructions, then tap again"
SEE_PHONE_OUTCOME = Outcome(
    OutcomeKind.END_APPLICATION, reason=SEE_PHONE, start=Start.B, message=UiMessage.SEE_PHONE
)
REMOVED_OUTCOME = Outcome(
    OutcomeKind.TRY_AGAIN,
    reason="Card removed too early - tap again",
    start=Start.B,
    message=UiMessage.PRESENT_CARD_AGAIN,
)


def _options(*, card_timeout: float = 30.0, language: Literal["en", "zh"] = "en") -> dict[str, Any]:
    """start_checkout_terminal's keywords: the card timeout and the terminal's language."""
    params: TerminalParams = default_params()
    params = replace(params, terminal=replace(params.terminal, language=language))
    return {"params": params, "card_timeout": card_timeout}


def _terminal(path: Path, host: HostHandle, **options: Any) -> TerminalRuntime:
    return start_checkout_terminal(path / "terminal", host, **_options(**options))


@pytest.fixture
def terminal_options() -> dict[str, Any]:
    return _options()


class Kernel:
    """The kernel seam: every card transaction the checkout runs, with the reader it ran
    on; each answered by `script` (call number -> outcome, or None for the real kernel)."""

    def __init__(self, script: Callable[[int], Outcome | None] = lambda _n: None) -> None:
        self.script = script
        self.readers: list[CardReader] = []

    def __call__(
        self, reader: CardReader, params: Any, request: Any, **options: Any
    ) -> CardSessionResult:
        self.readers.append(reader)
        scripted = self.script(len(self.readers))
        if scripted is None:
            return run_card_transaction(reader, params, request, **options)
        return CardSessionResult(scripted, 0)

    @property
    def runs(self) -> int:
        return len(self.readers)


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    seam = Kernel()
    monkeypatch.setattr(card_session, "run_card_transaction", seam)
    return seam


def _next_event(rt: TerminalRuntime, kind: str, after: int, timeout: float = 20.0) -> Any:
    """The first `kind` event after event number `after` (fails after `timeout` s)."""
    deadline = time.monotonic() + timeout
    last = after
    while (remaining := deadline - time.monotonic()) > 0:
        for event in rt.checkout.events.after(last, timeout=remaining):
            last = event["id"]
            if event["type"] == kind:
                return event
    raise AssertionError(f"no {kind} event within {timeout} s")


def _present(rt: TerminalRuntime, url: str) -> None:
    assert rt.field is not None
    rt.field.present(url)


@pytest.mark.parametrize(
    ("card", "first_tap_pan", "cvm"),
    [
        # Kernel 2: the phone's AAC with DF4B, after the records (the PAN is known).
        ("mastercard_phone?see_phone", "520474******1002", "no_cvm"),
        # Kernel 3: GPO '6986', before anything is read.
        ("visa?see_phone", "", "cdcvm"),
    ],
)
def test_see_phone_restarts_the_sale_and_the_second_tap_is_approved(
    terminal: TerminalRuntime,
    host: HostHandle,
    kernel: Kernel,
    card: str,
    first_tap_pan: str,
    cvm: str,
) -> None:
    start = terminal.checkout.events.last_id
    record = terminal.checkout.start_sale(1234)
    _present(terminal, f"sim:{card}")
    restart = _next_event(terminal, "restart", start)
    assert restart["data"] == {
        "id": record.id,
        "message": SEE_PHONE,
        "reason": SEE_PHONE,
        "restarts": 1,
    }
    # The sale waits for the second tap: open, cancellable, nothing sent to the acquirer.
    waiting = terminal.checkout.wait(record.id, timeout=0.3)
    assert (waiting.state, waiting.stage) == (State.IN_PROGRESS, Stage.WAITING_FOR_CARD_AGAIN)
    view = terminal.checkout.view(waiting)
    assert view["cancellable"] is True
    assert view["prompt"] == "Tap the card or phone again"
    assert waiting.masked_pan == first_tap_pan  # what the first tap gave is in the journal
    assert host.ledger() == []
    assert kernel.runs == 1
    # The phone is taken away (the checkout waited for that), verified, and tapped again.
    _present(terminal, f"sim:{card}")
    done = terminal.checkout.wait(record.id, timeout=30)
    assert done.state == State.APPROVED, done.reason
    assert done.result == Result.APPROVED
    assert done.cvm == cvm
    assert kernel.runs == 2
    assert kernel.readers[0] is kernel.readers[1]  # one reader, open across the taps
    [row] = [r for r in host.ledger() if r["kind"] == "sale"]
    assert (row["status"], row["arqc_status"]) == ("approved", "valid")


def test_a_card_removed_too_early_is_tapped_again_and_completes(
    terminal: TerminalRuntime, kernel: Kernel
) -> None:
    start = terminal.checkout.events.last_id
    record = terminal.checkout.start_sale(1234)
    _present(terminal, "sim:visa?removed_after_n_commands=3")
    restart = _next_event(terminal, "restart", start)
    assert restart["data"]["message"] == "Present card again"
    _present(terminal, "sim:visa?removed_after_n_commands=3")  # the same card, held still
    done = terminal.checkout.wait(record.id, timeout=30)
    assert done.state == State.APPROVED, done.reason
    assert kernel.runs == 2


def test_cancel_while_waiting_for_the_second_tap_cancels_the_sale(
    terminal: TerminalRuntime, host: HostHandle, kernel: Kernel
) -> None:
    kernel.script = lambda n: SEE_PHONE_OUTCOME if n == 1 else None
    start = terminal.checkout.events.last_id
    record = terminal.checkout.start_sale(1234)
    _present(terminal, "sim:visa")
    _next_event(terminal, "restart", start)
    terminal.checkout.cancel(record.id)
    done = terminal.checkout.wait(record.id, timeout=10)
    assert (done.state, done.result) == (State.CANCELLED, Result.CANCELLED)
    assert kernel.runs == 1
    assert host.ledger() == []
    assert terminal.checkout.current is None  # the terminal is free again
    # A card presented after the cancel is no one's.
    _present(terminal, "sim:visa")
    assert terminal.checkout.get(record.id).state == State.CANCELLED


def test_no_second_tap_within_the_card_timeout_ends_the_sale(
    tmp_path: Path, host: HostHandle, kernel: Kernel
) -> None:
    kernel.script = lambda n: SEE_PHONE_OUTCOME
    rt = _terminal(tmp_path, host, card_timeout=1.5)
    try:
        began = time.monotonic()
        record = rt.checkout.start_sale(1234)
        _present(rt, "sim:visa")
        done = rt.checkout.wait(record.id, timeout=15)
        assert time.monotonic() - began < 10  # within the sale's one card timeout
        assert (done.state, done.result) == (State.CANCELLED, Result.NO_CARD)
        assert kernel.runs == 1
        assert host.ledger() == []
    finally:
        rt.close()


def test_more_restarts_than_the_bound_end_the_sale_as_try_again(
    terminal: TerminalRuntime, host: HostHandle, kernel: Kernel
) -> None:
    kernel.script = lambda n: REMOVED_OUTCOME
    last = terminal.checkout.events.last_id
    record = terminal.checkout.start_sale(1234)
    _present(terminal, "sim:visa")
    for n in range(1, MAX_RESTARTS + 1):
        restart = _next_event(terminal, "restart", last)
        last = restart["id"]
        assert restart["data"]["restarts"] == n
        assert restart["data"]["message"] == "Present card again"
        _present(terminal, "sim:visa")
    done = terminal.checkout.wait(record.id, timeout=10)
    assert (done.state, done.result) == (State.DECLINED, Result.TRY_AGAIN)
    assert f"after {MAX_RESTARTS} already" in done.reason
    assert kernel.runs == MAX_RESTARTS + 1
    assert len({id(reader) for reader in kernel.readers}) == 1
    restarts = [e for e in terminal.checkout.events.after(0, timeout=0) if e["type"] == "restart"]
    assert len(restarts) == MAX_RESTARTS
    assert host.ledger() == []


def test_the_restart_event_speaks_the_terminal_s_language(
    tmp_path: Path, host: HostHandle, kernel: Kernel
) -> None:
    rt = _terminal(tmp_path, host, language="zh")
    try:
        start = rt.checkout.events.last_id
        record = rt.checkout.start_sale(1234)
        _present(rt, "sim:mastercard_phone?see_phone")
        restart = _next_event(rt, "restart", start)
        assert restart["data"]["message"] == "请查看手机上的提示，然后再次挥卡"
        view = rt.checkout.view(rt.checkout.get(record.id))
        assert view["prompt"] == "请将卡片或手机再次靠近读卡器"
        rt.checkout.cancel(record.id)
        assert rt.checkout.wait(record.id, timeout=10).state == State.CANCELLED
    finally:
        rt.close()


def test_restart_texts_in_english_and_chinese() -> None:
    assert restart_text(UiMessage.SEE_PHONE, "en") == SEE_PHONE
    assert restart_text(UiMessage.PRESENT_CARD_AGAIN, "zh") == "请再次挥卡"
    # No identifier, or one without a text of its own: "present card again".
    assert restart_text(None, "en") == "Present card again"
    assert restart_text(UiMessage.PROCESSING_ERROR, "zh") == "请再次挥卡"
    assert restart_text(UiMessage.SEE_PHONE, "fr") == SEE_PHONE
