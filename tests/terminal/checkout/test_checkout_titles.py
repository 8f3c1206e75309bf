"""A transaction's title (terminal.checkout.core.title_key, worded by the ui strings
``title_<key>``): what happened, from its kind, state and stored result, never "Approved"
for a refund or a void, and what became of a sale since (voided, refunded, declined by the
bank after the fact); and a reason said once in the merchant's message."""

from __future__ import annotations

from dataclasses import replace

import pytest

from terminal.checkout.core import refund_state, title_key
from terminal.domain.messages import LANGUAGES, Result, message_for, ui_strings
from terminal.domain.records import DECLINED_AFTER_THE_FACT, Kind, State, TxnRecord

SALE = TxnRecord(
    id="S1",
    kind=Kind.SALE,
    state=State.APPROVED,
    amount=2000,
    currency=978,
    created_at="2026-03-01T10:00:00+00:00",
    updated_at="2026-03-01T10:00:00+00:00",
    result=Result.APPROVED,
)


def _as(kind: Kind, state: State, result: Result | None = None, **fields: object) -> TxnRecord:
    return replace(SALE, kind=kind, state=state, result=str(result or ""), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "key", "english"),
    [
        (SALE, "approved", "Approved"),
        (
            _as(Kind.SALE, State.APPROVED_OFFLINE, Result.APPROVED_OFFLINE),
            "approved_offline",
            "Approved offline",
        ),
        (
            _as(
                Kind.SALE,
                State.APPROVED_OFFLINE,
                Result.APPROVED_OFFLINE,
                reason=DECLINED_AFTER_THE_FACT,
            ),
            "declined_after_the_fact",
            "Declined by the bank afterwards",
        ),
        (replace(SALE, voided=True), "sale_voided", "Voided"),
        (replace(SALE, refunded_amount=2000), "sale_refunded", "Refunded"),
        (replace(SALE, refunded_amount=500), "sale_partially_refunded", "Partially refunded"),
        (
            _as(Kind.SALE, State.DECLINED, Result.DECLINED_BY_CARD),
            "declined_by_card",
            "Declined by the card",
        ),
        (
            _as(Kind.SALE, State.DECLINED, Result.DECLINED_BY_ISSUER),
            "declined_by_bank",
            "Declined by the bank",
        ),
        (
            _as(Kind.SALE, State.DECLINED, Result.TRY_ANOTHER_INTERFACE),
            "use_another_method",
            "Use another payment method",
        ),
        (
            _as(Kind.SALE, State.DECLINED, Result.CARD_NOT_SUPPORTED),
            "use_another_method",
            "Use another payment method",
        ),
        (_as(Kind.SALE, State.DECLINED, Result.TRY_AGAIN), "try_again", "Try again"),
        (
            _as(Kind.SALE, State.DECLINED, Result.HOST_NO_RESPONSE),
            "reversed",
            "Not completed - payment reversed",
        ),
        (
            _as(Kind.SALE, State.DECLINED, Result.DECLINED_OFFLINE_LIMIT),
            "declined_offline",
            "Declined - bank unreachable",
        ),
        (_as(Kind.SALE, State.CANCELLED, Result.CANCELLED), "cancelled", "Cancelled"),
        (_as(Kind.SALE, State.CANCELLED, Result.NO_CARD), "no_card", "No card presented"),
        (_as(Kind.SALE, State.FAILED, Result.READER_ERROR), "reader_error", "Card reader problem"),
        (_as(Kind.SALE, State.IN_PROGRESS), "in_progress", "In progress"),
        (_as(Kind.REFUND, State.APPROVED, Result.REFUND_APPROVED), "refunded", "Refunded"),
        (
            _as(Kind.REFUND, State.DECLINED, Result.REFUND_DECLINED),
            "refund_declined",
            "Refund declined",
        ),
        (
            _as(Kind.REFUND, State.FAILED, Result.REFUND_DECLINED, outcome_unknown=True),
            "refund_unknown",
            "Refund not confirmed - no answer from the bank",
        ),
        (
            _as(Kind.REFUND, State.FAILED, Result.REFUND_DECLINED),
            "refund_failed",
            "Refund not completed",
        ),
        (_as(Kind.VOID, State.APPROVED, Result.VOID_APPROVED), "voided", "Voided"),
        (_as(Kind.VOID, State.DECLINED, Result.VOID_DECLINED), "void_declined", "Void declined"),
    ],
)
def test_titles_say_what_happened(record: TxnRecord, key: str, english: str) -> None:
    assert title_key(record) == key
    assert ui_strings("en")[f"title_{key}"] == english


def test_every_result_of_every_kind_has_a_title_in_every_language() -> None:
    for kind in Kind:
        for state in State:
            for result in (*Result, None):
                key = title_key(_as(kind, state, result))
                for language in LANGUAGES:
                    assert ui_strings(language)[f"title_{key}"]
                if kind is not Kind.SALE:
                    assert key not in ("approved", "approved_offline"), (kind, state)


def test_refund_state() -> None:
    assert refund_state(SALE) is None
    assert refund_state(replace(SALE, refunded_amount=1)) == "partially_refunded"
    assert refund_state(replace(SALE, refunded_amount=2000)) == "refunded"
    assert refund_state(replace(SALE, voided=True)) == "voided"
    assert refund_state(_as(Kind.REFUND, State.APPROVED)) is None


def test_a_reason_that_restates_the_result_is_not_said_twice() -> None:
    # The kernel's own words for a card decline (emv.kernel.transaction.Reasons).
    assert message_for(Result.DECLINED_BY_CARD, "en", reason="Declined by card").merchant == (
        "Declined by the card"
    )
    same = "Card not supported - try another card"
    assert message_for(Result.CARD_NOT_SUPPORTED, "en", reason=same).merchant == same
    # A reason that adds something is kept.
    assert message_for(
        Result.TRY_AGAIN, "en", reason="Card removed too early - tap again"
    ).merchant == (
        "Card read failed - ask the customer to tap again (Card removed too early - tap again)"
    )
    assert message_for(Result.DECLINED_BY_ISSUER, "en", reason="51").merchant == (
        "Declined by the bank (51 insufficient funds)"
    )
