"""The checkout as one state machine: every move a transaction may make is in one table
(terminal.domain.records.MOVES), checked before it is committed; every acquirer error ends
each kind of transaction as one table says (terminal.checkout.failures.ACQUIRER_FAILURES)."""

from __future__ import annotations

from pathlib import Path

import pytest

from terminal.acquirer.client import (
    AcquirerError,
    HostFaultError,
    HostRejectedError,
    HostUnreachable,
    OutcomeUnknownError,
    ReversalPendingError,
)
from terminal.checkout.failures import failure_for
from terminal.domain.messages import Result
from terminal.domain.records import MOVES, Kind, State, TransitionError, TxnRecord, check_move
from terminal.store.journal import Journal


def test_a_finished_sale_cannot_be_reopened_or_changed_to_another_result() -> None:
    for after in State:
        if after is not State.APPROVED_OFFLINE:
            with pytest.raises(TransitionError, match="approved_offline"):
                check_move(Kind.SALE, State.APPROVED_OFFLINE, after)
    for before in (State.APPROVED, State.DECLINED, State.CANCELLED, State.FAILED):
        for after in State:
            with pytest.raises(TransitionError):
                check_move(Kind.SALE, before, after)


def test_only_a_refund_or_void_with_a_lost_answer_is_settled_after_it_ended() -> None:
    for kind in (Kind.REFUND, Kind.VOID):
        check_move(kind, State.FAILED, State.APPROVED)
        check_move(kind, State.FAILED, State.DECLINED)
        with pytest.raises(TransitionError):
            check_move(kind, State.IN_PROGRESS, State.APPROVED_OFFLINE)
        with pytest.raises(TransitionError):
            check_move(kind, State.DECLINED, State.APPROVED)


def test_every_kind_can_end_in_every_final_state_it_has_from_in_progress() -> None:
    for kind in Kind:
        assert State.IN_PROGRESS in MOVES[(kind, State.IN_PROGRESS)]
        assert {State.APPROVED, State.DECLINED, State.CANCELLED, State.FAILED} <= MOVES[
            (kind, State.IN_PROGRESS)
        ]


def _error(cls: type[AcquirerError]) -> AcquirerError:
    if cls is HostRejectedError:
        return HostRejectedError(409, "original_not_found", "no such sale")
    if issubclass(cls, OutcomeUnknownError):
        return cls("no answer", "auth-1")
    return cls("connection refused")


@pytest.mark.parametrize(
    ("kind", "error", "state", "result", "online", "unknown"),
    [
        (Kind.SALE, ReversalPendingError, State.DECLINED, Result.HOST_NO_RESPONSE, False, False),
        (Kind.SALE, HostRejectedError, State.DECLINED, Result.HOST_ERROR, True, False),
        (Kind.SALE, HostFaultError, State.DECLINED, Result.HOST_ERROR, False, False),
        (Kind.REFUND, HostUnreachable, State.FAILED, Result.REFUND_DECLINED, False, False),
        (Kind.REFUND, OutcomeUnknownError, State.FAILED, Result.REFUND_DECLINED, False, True),
        # A lost answer whose reversal is pending is still a lost answer to a refund.
        (Kind.REFUND, ReversalPendingError, State.FAILED, Result.REFUND_DECLINED, False, True),
        (Kind.REFUND, HostRejectedError, State.DECLINED, Result.REFUND_DECLINED, True, False),
        (Kind.REFUND, HostFaultError, State.FAILED, Result.REFUND_DECLINED, None, False),
        (Kind.VOID, HostUnreachable, State.FAILED, Result.VOID_DECLINED, False, False),
        (Kind.VOID, HostRejectedError, State.DECLINED, Result.VOID_DECLINED, True, False),
        # A void whose answer was lost is settled later under its own key, like a refund.
        (Kind.VOID, OutcomeUnknownError, State.FAILED, Result.VOID_DECLINED, False, True),
        (Kind.VOID, HostFaultError, State.FAILED, Result.VOID_DECLINED, None, False),
    ],
)
def test_one_table_says_how_an_acquirer_error_ends_each_kind(
    kind: Kind,
    error: type[AcquirerError],
    state: State,
    result: Result,
    online: bool | None,
    unknown: bool,
) -> None:
    failure = failure_for(kind, _error(error))
    assert (failure.state, failure.result, failure.online, failure.unknown) == (
        state,
        result,
        online,
        unknown,
    )
    check_move(kind, State.IN_PROGRESS, failure.state)  # every failure is a legal move


def test_the_host_s_words_reach_the_merchant() -> None:
    rejected = _error(HostRejectedError)
    assert failure_for(Kind.REFUND, rejected).reason(rejected) == "no such sale"
    unreachable = _error(HostUnreachable)
    assert failure_for(Kind.VOID, unreachable).reason(unreachable) == (
        "bank unreachable: connection refused"
    )


def test_the_journal_returns_kinds_and_states_as_enums(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    record = journal.insert(
        TxnRecord(
            id="S1",
            kind=Kind.SALE,
            state=State.IN_PROGRESS,
            amount=100,
            currency=978,
            created_at="2026-12-01T10:00:00+00:00",
            updated_at="2026-12-01T10:00:00+00:00",
        )
    )
    assert record.kind is Kind.SALE
    assert record.state is State.IN_PROGRESS
    assert record.to_json()["state"] == "in_progress"
    journal.close()
