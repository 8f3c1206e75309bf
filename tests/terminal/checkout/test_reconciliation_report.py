"""The per-transaction reconciliation report (terminal.checkout.report): the pure comparison
on hand-made records and host answers, then the whole report against the simulated acquirer
on loopback (its "refuse" fault for an outage; amounts ending in 51 minor units declined),
with differences made at the host by changing its ledger."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from terminal.app.runtime import TerminalRuntime
from terminal.checkout.errors import NotFoundError
from terminal.checkout.report import (
    NOT_AT_HOST,
    Flag,
    HostRecord,
    HostUnavailable,
    batch_report,
    compare,
)
from terminal.domain.records import DECLINED_AFTER_THE_FACT, Kind, State, TxnRecord
from tests.conftest_host import HostHandle
from tests.terminal.checkout.test_checkout_preauth import _preauth

# --- the comparison alone ----------------------------------------------------------------

_SALE = TxnRecord(
    id="T1",
    kind=Kind.SALE,
    state=State.APPROVED,
    amount=1000,
    currency=978,
    created_at="2026-01-01T10:00:00+00:00",
    updated_at="2026-01-01T10:00:01+00:00",
    host_ref="A1",
    idempotency_key="auth-1",
)


#: A capture whose answer was lost: failed, outcome unknown, no host reference (looked up by
#: its key).
_LOST_CAPTURE = replace(
    _SALE,
    id="C1",
    kind=Kind.CAPTURE,
    state=State.FAILED,
    original_id="P1",
    host_ref="",
    idempotency_key="hold-1",
    outcome_unknown=True,
)


def _host(status: str = "approved", amount: int = 1000, kind: str = "sale") -> HostRecord:
    return HostRecord(ref="A1", status=status, kind=kind, amount=amount, currency=978)


@pytest.mark.parametrize(
    ("record", "answer", "flag"),
    [
        (_SALE, _host(), Flag.MATCH),
        (_SALE, _host(amount=999), Flag.AMOUNT_DIFFERS),
        (_SALE, HostRecord("A1", "approved", "sale", 1000, 840), Flag.AMOUNT_DIFFERS),
        (_SALE, _host("reversed"), Flag.STATE_DIFFERS),
        (_SALE, _host("voided"), Flag.STATE_DIFFERS),
        (_SALE, NOT_AT_HOST, Flag.MISSING_AT_HOST),
        (_SALE, HostUnavailable("down"), Flag.HOST_UNREACHABLE),
        (replace(_SALE, voided=True), _host("voided"), Flag.MATCH),
        (replace(_SALE, state=State.DECLINED), _host("declined"), Flag.MATCH),
        # Failed at the terminal (reversed): the host has a reversal, nothing or a decline.
        (replace(_SALE, state=State.FAILED, host_ref=""), _host("reversed"), Flag.MATCH),
        (replace(_SALE, state=State.FAILED, host_ref=""), NOT_AT_HOST, Flag.MATCH),
        # ... but money the host took that the terminal says failed is a difference.
        (replace(_SALE, state=State.FAILED, host_ref=""), _host(), Flag.STATE_DIFFERS),
        # Declined by the card, never sent: nothing to ask.
        (replace(_SALE, state=State.DECLINED, host_ref="", idempotency_key=""), None, Flag.MATCH),
        (replace(_SALE, state=State.APPROVED_OFFLINE, host_ref=""), None, Flag.NOT_SENT),
        (replace(_SALE, state=State.APPROVED_OFFLINE), _host(kind="offline_sale"), Flag.MATCH),
        (
            replace(_SALE, state=State.APPROVED_OFFLINE, reason=DECLINED_AFTER_THE_FACT),
            _host("declined", kind="offline_sale"),
            Flag.MATCH,
        ),
        (replace(_SALE, kind=Kind.VOID, original_id="T0"), _host("voided"), Flag.MATCH),
        (replace(_SALE, kind=Kind.VOID, original_id="T0"), _host(), Flag.STATE_DIFFERS),
        # A hold captured (or released) at the host was authorised all the same.
        (replace(_SALE, kind=Kind.PREAUTH), _host("captured", kind="preauth"), Flag.MATCH),
        (replace(_SALE, kind=Kind.PREAUTH), _host("reversed", kind="preauth"), Flag.STATE_DIFFERS),
        # ... but one that lapsed at the host while the terminal holds it open differs.
        (replace(_SALE, kind=Kind.PREAUTH), _host("expired", kind="preauth"), Flag.STATE_DIFFERS),
        # A change of a hold (or a refund) whose answer was lost: what the host did decides.
        (_LOST_CAPTURE, _host(kind="capture"), Flag.STATE_DIFFERS),
        (_LOST_CAPTURE, _host("declined", kind="capture"), Flag.MATCH),
        (_LOST_CAPTURE, NOT_AT_HOST, Flag.MATCH),
        (replace(_LOST_CAPTURE, kind=Kind.REFUND), _host(kind="refund"), Flag.STATE_DIFFERS),
        # A void that did not go through: its sale stands at the host (and is its own line).
        (replace(_LOST_CAPTURE, kind=Kind.VOID), _host("voided"), Flag.STATE_DIFFERS),
        (replace(_LOST_CAPTURE, kind=Kind.VOID), _host(), Flag.MATCH),
        (
            replace(_SALE, kind=Kind.VOID, state=State.DECLINED, original_id="T0"),
            _host(),
            Flag.MATCH,
        ),
    ],
)
def test_each_line_is_flagged_by_what_each_side_holds(
    record: TxnRecord, answer: Any, flag: Flag
) -> None:
    report = compare([record], {} if answer is None else {record.id: answer})
    (line,) = report.lines
    assert line.flag is flag, line.explanation
    assert line.terminal_state == record.state
    assert line.explanation


def test_a_hold_moves_no_money_in_the_totals_and_its_capture_does() -> None:
    hold = replace(_SALE, id="P1", kind=Kind.PREAUTH, amount=5000, host_ref="P1")
    capture = replace(_SALE, id="C1", kind=Kind.CAPTURE, amount=4200, host_ref="C1")
    report = compare(
        [hold, capture],
        {
            "P1": HostRecord("P1", "captured", "preauth", 5000, 978),
            "C1": HostRecord("C1", "approved", "capture", 4200, 978),
        },
    )
    assert [line.flag for line in report.lines] == [Flag.MATCH, Flag.MATCH]
    assert report.totals() == [
        {"currency": 978, "terminal_net": 4200, "host_net": 4200, "difference": 0}
    ]


def test_the_totals_count_differences_and_leave_out_what_was_not_compared() -> None:
    refund = replace(_SALE, id="T2", kind=Kind.REFUND, amount=300, host_ref="R1", original_id="T1")
    waiting = replace(_SALE, id="T3", state=State.APPROVED_OFFLINE, host_ref="", amount=500)
    other = replace(_SALE, id="T4", host_ref="A4", amount=700)
    report = compare(
        [_SALE, refund, waiting, other],
        {
            "T1": _host(amount=900),
            "T2": HostRecord("R1", "approved", "refund", 300, 978),
            "T4": HostUnavailable("down"),
        },
        host_only=[HostRecord("A9", "approved", "sale", 250, 978)],
        host_lists_transactions=True,
    )
    assert [line.flag for line in report.lines] == [
        Flag.AMOUNT_DIFFERS,
        Flag.MATCH,
        Flag.NOT_SENT,
        Flag.HOST_UNREACHABLE,
        Flag.UNKNOWN_AT_TERMINAL,
    ]
    host_only = report.lines[-1]
    assert (host_only.transaction_id, host_only.host_ref, host_only.host_amount) == (
        None,
        "A9",
        250,
    )
    assert report.differences == 2
    assert report.counts()["not_sent"] == 1
    assert report.counts()["state_differs"] == 0
    assert not report.host_reachable
    # Terminal: 10.00 - 3.00; host: 9.00 - 3.00 + 2.50 (the line only it has).
    assert report.totals() == [
        {"currency": 978, "terminal_net": 700, "host_net": 850, "difference": -150}
    ]


# --- against the simulated host ------------------------------------------------------------


@pytest.fixture
def checkout_host(acquirer_host: HostHandle) -> HostHandle:
    """Every test here needs the host on a real socket (its refuse fault)."""
    return acquirer_host


def _sale(rt: TerminalRuntime, amount: int, card: str = "visa") -> TxnRecord:
    record = rt.checkout.start_sale(amount)
    assert rt.field is not None
    rt.field.present(f"sim:{card}")
    return rt.checkout.wait(record.id, timeout=30)


def _flags(report: dict[str, Any]) -> dict[str, str]:
    return {line["transaction_id"]: line["flag"] for line in report["lines"]}


def _at_host(host: HostHandle, sql: str, *args: Any) -> None:
    """Change the host's ledger behind the terminal's back (what a bank's own fault, or a
    fraud, would do)."""
    with host.app.host.store.transaction() as conn:
        assert conn.execute(sql, args).rowcount == 1


@pytest.mark.integration
def test_a_batch_both_sides_agree_on_is_all_match_and_an_offline_sale_not_sent(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    paid = _sale(terminal, 1000)
    declined = _sale(terminal, 1551)  # the host declines x.51
    refunded = _sale(terminal, 2000)
    refund = checkout.refund(refunded.id, 500)
    voided = _sale(terminal, 700)
    void = checkout.void(voided.id)
    assert [paid.state, declined.state, refund.state, void.state] == [
        State.APPROVED,
        State.DECLINED,
        State.APPROVED,
        State.APPROVED,
    ]
    acquirer_host.set_fault("/v1/", "refuse")
    failed = _sale(terminal, 1200)  # the first one in an outage: no answer, reversed
    offline = _sale(terminal, 800)  # then store and forward
    assert (failed.result, offline.state) == ("host_no_response", State.APPROVED_OFFLINE)
    acquirer_host.clear_faults()

    report = batch_report(checkout, "current")
    flags = _flags(report)
    assert flags.pop(offline.id) == "not_sent"
    assert set(flags.values()) == {"match"}, report["lines"]
    assert {paid.id, declined.id, refunded.id, refund.id, voided.id, void.id, failed.id} == set(
        flags
    )
    assert report["differences"] == 0
    assert report["host_reachable"] is True
    assert report["open"] is True
    assert report["totals"] == [
        {"currency": 978, "terminal_net": 2500, "host_net": 2500, "difference": 0}
    ]
    line = next(x for x in report["lines"] if x["transaction_id"] == paid.id)
    assert (line["terminal_amount"], line["host_amount"], line["host_state"]) == (
        1000,
        1000,
        "approved",
    )

    # Closed: the same batch by its id, now with the offline sale sent and matched.
    closed = checkout.end_of_day()
    by_id = batch_report(checkout, str(closed["batch_id"]))
    assert set(_flags(by_id).values()) == {"match"}
    assert offline.id in _flags(by_id)
    assert by_id["open"] is False
    assert batch_report(checkout, "current")["lines"] == []


@pytest.mark.integration
def test_an_amount_changed_and_a_transaction_removed_at_the_host_are_flagged(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    changed = _sale(terminal, 1000)
    removed = _sale(terminal, 1200)
    reversed_ = _sale(terminal, 1300)
    kept = _sale(terminal, 1400)
    _at_host(acquirer_host, "UPDATE transactions SET amount = 1100 WHERE ref = ?", changed.host_ref)
    _at_host(acquirer_host, "DELETE FROM transactions WHERE ref = ?", removed.host_ref)
    _at_host(
        acquirer_host,
        "UPDATE transactions SET status = 'reversed' WHERE ref = ?",
        reversed_.host_ref,
    )

    report = batch_report(checkout, "current")
    assert _flags(report) == {
        changed.id: "amount_differs",
        removed.id: "missing_at_host",
        reversed_.id: "state_differs",
        kept.id: "match",
    }
    assert report["differences"] == 3
    assert report["counts"]["amount_differs"] == 1
    line = next(x for x in report["lines"] if x["transaction_id"] == changed.id)
    assert (line["terminal_amount"], line["host_amount"]) == (1000, 1100)
    # Terminal 49.00; host 11.00 + 14.00 (the reversed one holds nothing, the removed one
    # is not there).
    assert report["totals"] == [
        {"currency": 978, "terminal_net": 4900, "host_net": 2500, "difference": 2400}
    ]


@pytest.mark.integration
def test_with_the_host_down_the_report_answers_with_its_lines_marked(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    first, second = _sale(terminal, 1000), _sale(terminal, 2000)
    acquirer_host.set_fault("/v1/", "refuse")
    report = batch_report(checkout, "current")
    assert _flags(report) == {first.id: "host_unreachable", second.id: "host_unreachable"}
    assert report["host_reachable"] is False
    assert report["differences"] == 0
    assert report["totals"] == []
    # One lookup refused; the second line was not asked (no wait per line on an outage).
    assert acquirer_host.faults()["/v1/"]["hits"] == 1


def test_an_unknown_batch_is_not_found(terminal: TerminalRuntime) -> None:
    with pytest.raises(NotFoundError, match="no batch"):
        batch_report(terminal.checkout, "B-NOPE")


def _line_of(report: dict[str, Any], record: TxnRecord) -> dict[str, Any]:
    line: dict[str, Any] = next(x for x in report["lines"] if x["transaction_id"] == record.id)
    return line


@pytest.mark.integration
def test_a_capture_whose_answer_was_lost_differs_until_it_is_settled(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    """The host captured; every answer was lost (the terminal's record: failed, outcome
    unknown). The report must not call it a match: the host took 40.00 the journal does
    not count."""
    checkout = terminal.checkout
    hold = _preauth(terminal, 5000)
    acquirer_host.set_fault("/v1/preauths/", "drop_after_commit", times=3)
    capture = checkout.capture(hold.id, 4000)
    assert (capture.state, capture.outcome_unknown, capture.host_ref) == (State.FAILED, True, "")
    acquirer_host.clear_faults()

    report = batch_report(checkout, "current")
    line = _line_of(report, capture)
    assert (line["flag"], line["host_state"], line["host_amount"]) == (
        "state_differs",
        "approved",
        4000,
    )
    assert "outcome unknown" in line["explanation"]
    assert line["host_ref"]  # the host's capture, found by the key the terminal sent
    assert report["differences"] == 1
    assert report["totals"] == [
        {"currency": 978, "terminal_net": 0, "host_net": 4000, "difference": -4000}
    ]

    # Settled under its own key (the background loop): both sides agree.
    assert checkout.retry_reversals() == 0
    settled = batch_report(checkout, "current")
    assert set(_flags(settled).values()) == {"match"}, settled["lines"]
    assert settled["totals"] == [
        {"currency": 978, "terminal_net": 4000, "host_net": 4000, "difference": 0}
    ]


@pytest.mark.integration
def test_a_refund_whose_answer_was_lost_differs(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    checkout = terminal.checkout
    sale = _sale(terminal, 2000)
    acquirer_host.set_fault("/v1/refunds", "drop_after_commit", times=3)
    refund = checkout.refund(sale.id, 500)
    assert (refund.state, refund.outcome_unknown) == (State.FAILED, True)
    acquirer_host.clear_faults()
    report = batch_report(checkout, "current")
    assert _flags(report) == {sale.id: "match", refund.id: "state_differs"}
    assert _line_of(report, refund)["host_amount"] == 500
    assert report["totals"] == [
        {"currency": 978, "terminal_net": 2000, "host_net": 1500, "difference": 500}
    ]


@pytest.mark.integration
def test_a_hold_lapsed_at_the_host_while_open_at_the_terminal_differs(
    terminal: TerminalRuntime, acquirer_host: HostHandle
) -> None:
    """The host never tells the terminal a hold lapsed: the report is where it shows."""
    checkout = terminal.checkout
    lapsed, kept = _preauth(terminal, 3000), _preauth(terminal, 2000)
    # Authorised eight days ago at the host (the default hold: 7 days).
    _at_host(
        acquirer_host,
        "UPDATE transactions SET created_at = created_at - 8 * 86400 WHERE ref = ?",
        lapsed.host_ref,
    )
    report = batch_report(checkout, "current")
    assert _flags(report) == {lapsed.id: "state_differs", kept.id: "match"}
    line = _line_of(report, lapsed)
    assert (line["terminal_state"], line["host_state"]) == ("approved", "expired")
    assert "open at the terminal, expired at the host" in line["explanation"]
    assert report["differences"] == 1
