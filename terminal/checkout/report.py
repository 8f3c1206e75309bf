"""The per-transaction reconciliation report: every transaction of a batch as the terminal's
journal has it, beside what the acquirer host says of it, each line flagged.

Two halves, kept apart so the comparison is tested without a host:

* :func:`compare` is pure: the journal's records and the host's answer for each (a
  :class:`HostRecord`, :data:`NOT_AT_HOST`, a :class:`HostUnavailable`, or None when the
  terminal never had anything to ask about) in, a :class:`ReconciliationReport` out.
* :func:`batch_report` does the lookups: the batch's records from the journal, and one
  signed ``GET /v1/transactions/{ref}`` per transaction (by the host's reference, or by the
  idempotency key when the terminal has no reference, docs/protocol.md) through the
  checkout's acquirer client.

What each flag means (:class:`Flag`):

* ``match``: both sides agree: the same state and amount, or no money on either side (a sale
  the card or the bank declined, one cancelled, or one that failed and was reversed: the
  host has nothing, a decline or a reversal; a void that failed: the host's sale is not
  voided).
* ``amount_differs``: both moved money, not the same amount (or currency).
* ``state_differs``: one side moved money the other did not, or undid it (approved at the
  terminal, reversed or voided at the host; failed at the terminal, approved at the host).
  Among them: a transaction whose answer was lost (a refund, void or change of a hold
  ``outcome_unknown``, a sale or hold whose reversal is pending) that the host did (the
  terminal's journal does not count it until it settles it), and a hold the terminal holds
  open that has lapsed at the host (``expired``: the host never tells the terminal).
* ``missing_at_host``: the terminal moved money the host has no record of.
* ``unknown_at_terminal``: the host lists a transaction the terminal does not have. The
  pipos protocol has no way to list a batch's transactions, so :func:`batch_report` never
  finds one (the report says ``host_lists_transactions: false``); :func:`compare` takes
  them (`host_only`) for a protocol that can.
* ``host_unreachable``: the host could not be asked (down, failing, not enrolled): the line
  says nothing either way. After the first such answer the rest are not asked.
* ``not_sent``: an offline sale still waiting in the offline queue: the host cannot know it
  yet. Expected, not a difference.

The totals: per currency, the net amount (sales and captures less refunds) each side holds
over the lines both sides answered for, and their difference; and how many lines carry each
flag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from ..acquirer.client import AcquirerError, HostRejectedError, TransactionStatus
from ..domain.messages import Result
from ..domain.records import Kind, State, TxnRecord
from ..store.journal import Journal
from .core import CheckoutCore
from .errors import NotFoundError

__all__ = [
    "CURRENT",
    "DIFFERENCES",
    "NOT_AT_HOST",
    "Flag",
    "HostAnswer",
    "HostLookup",
    "HostNotFound",
    "HostRecord",
    "HostUnavailable",
    "ReconciliationReport",
    "ReportLine",
    "batch_records",
    "batch_report",
    "compare",
    "expected_at_host",
    "look_up",
]

#: The batch selector for the open batch (what the next end of day will close).
CURRENT: Final = "current"


class Flag(StrEnum):
    MATCH = "match"
    AMOUNT_DIFFERS = "amount_differs"
    STATE_DIFFERS = "state_differs"
    MISSING_AT_HOST = "missing_at_host"
    UNKNOWN_AT_TERMINAL = "unknown_at_terminal"
    HOST_UNREACHABLE = "host_unreachable"
    NOT_SENT = "not_sent"


#: The flags that are differences (the report's `differences` counts them). A line the
#: host could not be asked about is unknown, and one not sent yet is expected: neither is.
DIFFERENCES: Final = frozenset(
    {Flag.AMOUNT_DIFFERS, Flag.STATE_DIFFERS, Flag.MISSING_AT_HOST, Flag.UNKNOWN_AT_TERMINAL}
)

#: The host statuses that mean no money moved (a decline, a reversal, one reversed before
#: its authorisation arrived).
_NO_MONEY_AT_HOST: Final = frozenset({"declined", "reversed", "reversed_before_arrival"})
#: What the host says of an authorised pre-authorisation once it has been used: the hold
#: was authorised all the same (its captures, increments and releases are lines of their
#: own, each compared as it is). Not "expired": a lapsed hold is one nobody used, a
#: difference while the terminal holds it open.
_HOLD_AFTER_USE: Final = frozenset({"captured", "released"})
#: The host's status of a hold that lapsed unused (simulator.host: GET /v1/transactions).
_HOLD_EXPIRED: Final = "expired"
#: A void's line carries its sale's host status: the void was done at the host only if the
#: sale is voided there.
_VOIDED_AT_HOST: Final = "voided"
#: How each kind counts in the net amounts: money in, money out, or none (a hold, an
#: increment or a release of one moves no money; its capture does).
_NET_SIGN: Final = {str(Kind.SALE): 1, "capture": 1, str(Kind.REFUND): -1}

#: What the terminal's record means for the host, as a host status: "approved" (money
#: moved), "voided" (moved, then voided), "declined", "none" (never moved: cancelled,
#: failed and reversed), or "not_sent" (waiting in the offline queue).
_APPROVED: Final = "approved"
_VOIDED: Final = "voided"
_DECLINED: Final = "declined"
_NONE: Final = "none"
_NOT_SENT: Final = "not_sent"


@dataclass(frozen=True, slots=True)
class HostRecord:
    """A transaction as the host answered for it."""

    ref: str
    status: str
    kind: str
    amount: int | None
    currency: int | None


@dataclass(frozen=True, slots=True)
class HostNotFound:
    """The host has no transaction by that reference or idempotency key."""


#: The one :class:`HostNotFound`.
NOT_AT_HOST: Final = HostNotFound()


@dataclass(frozen=True, slots=True)
class HostUnavailable:
    """The host could not be asked (`reason`: why, for the merchant and the log)."""

    reason: str


#: The host's answer for one transaction; None: the terminal has nothing to ask by (no
#: reference, no idempotency key: the transaction never reached the host).
HostAnswer = HostRecord | HostNotFound | HostUnavailable | None


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One transaction: the terminal's side, the host's, and the flag."""

    flag: Flag
    #: Why, in a sentence (English, for the register's log).
    explanation: str
    transaction_id: str | None
    kind: str
    #: The record's state (approved_offline, failed, ...), and what it means at the host
    #: (:func:`expected_at_host`: approved, voided, declined, none, not_sent).
    terminal_state: str | None
    terminal_outcome: str | None
    terminal_amount: int | None
    currency: int | None
    host_ref: str | None
    host_state: str | None
    host_amount: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "kind": self.kind,
            "flag": str(self.flag),
            "explanation": self.explanation,
            "terminal_state": self.terminal_state,
            "terminal_outcome": self.terminal_outcome,
            "terminal_amount": self.terminal_amount,
            "currency": self.currency,
            "host_ref": self.host_ref,
            "host_state": self.host_state,
            "host_amount": self.host_amount,
        }


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    lines: tuple[ReportLine, ...]
    #: Whether the host could list transactions the terminal does not have.
    host_lists_transactions: bool

    def counts(self) -> dict[str, int]:
        counts = {str(flag): 0 for flag in Flag}
        for line in self.lines:
            counts[str(line.flag)] += 1
        return counts

    @property
    def differences(self) -> int:
        return sum(1 for line in self.lines if line.flag in DIFFERENCES)

    @property
    def host_reachable(self) -> bool:
        return all(line.flag is not Flag.HOST_UNREACHABLE for line in self.lines)

    def totals(self) -> list[dict[str, int]]:
        """Per currency: the net amount (sales and captures less refunds, minor units) the
        terminal and the host hold over the lines both answered for (not sent and
        unreachable ones are out), and the terminal's less the host's."""
        nets: dict[int, list[int]] = {}
        for line in self.lines:
            if line.flag in (Flag.NOT_SENT, Flag.HOST_UNREACHABLE) or line.currency is None:
                continue
            sign = _NET_SIGN.get(line.kind, 0)
            pair = nets.setdefault(line.currency, [0, 0])
            if line.terminal_outcome == _APPROVED and line.terminal_amount is not None:
                pair[0] += sign * line.terminal_amount
            if line.host_state == _APPROVED and line.host_amount is not None:
                pair[1] += sign * line.host_amount
        return [
            {
                "currency": currency,
                "terminal_net": terminal,
                "host_net": host,
                "difference": terminal - host,
            }
            for currency, (terminal, host) in sorted(nets.items())
        ]


def expected_at_host(record: TxnRecord) -> str:
    """What the terminal's record means at the host, as a host status: "approved",
    "voided" (a voided sale, or an approved void: its sale is voided at the host),
    "declined" (by the bank, or after the fact), "none" (no money moved: cancelled, failed,
    declined by the card) or "not_sent" (an offline sale still in the queue)."""
    if record.kind is Kind.VOID:
        return _VOIDED if record.state is State.APPROVED else _NONE
    if record.state is State.APPROVED_OFFLINE:
        status = record.offline_status
        if status == "waiting":
            return _NOT_SENT
        return _DECLINED if status == "declined" else _APPROVED
    if record.state is State.APPROVED:
        return _VOIDED if record.voided else _APPROVED
    if record.state is State.DECLINED:
        return _DECLINED
    return _NONE


def _line(
    record: TxnRecord, flag: Flag, explanation: str, host: HostRecord | None, expected: str
) -> ReportLine:
    return ReportLine(
        flag=flag,
        explanation=explanation,
        transaction_id=record.id,
        kind=str(record.kind),
        terminal_state=str(record.state),
        terminal_outcome=expected,
        terminal_amount=record.amount,
        currency=record.currency,
        host_ref=host.ref if host is not None else (record.host_ref or None),
        host_state=host.status if host is not None else None,
        host_amount=host.amount if host is not None else None,
    )


def _answer_lost(record: TxnRecord) -> bool:
    """Whether the terminal never learnt what the host did: a refund, void or change of a
    hold whose answer was lost (outcome_unknown, settled later under its own key), or a
    sale or hold whose answer was lost and which it reversed (or still owes a reversal)."""
    return record.outcome_unknown or record.result == Result.HOST_NO_RESPONSE


def _terminal_side(record: TxnRecord, expected: str) -> str:
    """The terminal's side in an explanation."""
    if _answer_lost(record) and expected not in (_APPROVED, _VOIDED):
        if record.outcome_unknown:
            return "outcome unknown at the terminal (its answer was lost)"
        return "no answer at the terminal (reversed, or its reversal pending)"
    return f"{expected} at the terminal"


def _hold_at_terminal(record: TxnRecord) -> str:
    if record.captured_amount:
        return "captured"
    return "released" if record.released else "open"


def _compare_one(record: TxnRecord, answer: HostAnswer) -> ReportLine:
    expected = expected_at_host(record)
    if expected == _NOT_SENT:
        return _line(record, Flag.NOT_SENT, "waiting in the offline queue", None, expected)
    if isinstance(answer, HostUnavailable):
        return _line(record, Flag.HOST_UNREACHABLE, answer.reason, None, expected)
    host = answer if isinstance(answer, HostRecord) else None
    moved = expected in (_APPROVED, _VOIDED)
    side = _terminal_side(record, expected)
    if host is None:
        if moved:
            return _line(
                record,
                Flag.MISSING_AT_HOST,
                f"{expected} at the terminal, unknown to the host",
                None,
                expected,
            )
        why = "not at the host" if answer is NOT_AT_HOST else "never reached the host"
        if _answer_lost(record):
            why = f"{side}; {why}"
        return _line(record, Flag.MATCH, f"no money moved; {why}", None, expected)
    if not moved:
        # A void's host status is its sale's: the void did nothing unless it is voided.
        if (
            host.status != _VOIDED_AT_HOST
            if record.kind is Kind.VOID
            else host.status in _NO_MONEY_AT_HOST
        ):
            return _line(
                record,
                Flag.MATCH,
                f"no money moved on either side ({side}, {host.status} at the host)",
                host,
                expected,
            )
        # The host did it (approved, voided): the answer the terminal never got, or one
        # that said otherwise.
        return _line(
            record,
            Flag.STATE_DIFFERS,
            f"{side}, {host.status} at the host",
            host,
            expected,
        )
    host_status = host.status
    if record.kind is Kind.PREAUTH and host_status == _HOLD_EXPIRED:
        return _line(
            record,
            Flag.STATE_DIFFERS,
            f"{_hold_at_terminal(record)} at the terminal, expired at the host "
            "(the hold lapsed unused; the host does not tell the terminal)",
            host,
            expected,
        )
    if record.kind is Kind.PREAUTH and host_status in _HOLD_AFTER_USE:
        host_status = _APPROVED
    if host_status != expected:
        return _line(
            record,
            Flag.STATE_DIFFERS,
            f"{expected} at the terminal, {host.status} at the host",
            host,
            expected,
        )
    if (host.amount, host.currency) != (record.amount, record.currency):
        return _line(
            record,
            Flag.AMOUNT_DIFFERS,
            f"{record.amount} ({record.currency}) at the terminal, "
            f"{host.amount} ({host.currency}) at the host",
            host,
            expected,
        )
    return _line(record, Flag.MATCH, "same state and amount", host, expected)


def compare(
    records: Sequence[TxnRecord],
    answers: Mapping[str, HostAnswer],
    *,
    host_only: Sequence[HostRecord] = (),
    host_lists_transactions: bool = False,
) -> ReconciliationReport:
    """The report over `records` (finished transactions of one batch, in journal order),
    with the host's answer for each by transaction id (missing: never asked), and
    `host_only`: what the host listed for the batch that no record has (each
    unknown_at_terminal)."""
    lines = [_compare_one(record, answers.get(record.id)) for record in records]
    lines += [
        ReportLine(
            flag=Flag.UNKNOWN_AT_TERMINAL,
            explanation=f"{host.status} at the host, not in the terminal's journal",
            transaction_id=None,
            kind=host.kind,
            terminal_state=None,
            terminal_outcome=None,
            terminal_amount=None,
            currency=host.currency,
            host_ref=host.ref,
            host_state=host.status,
            host_amount=host.amount,
        )
        for host in host_only
    ]
    return ReconciliationReport(tuple(lines), host_lists_transactions)


# --- the lookups -----------------------------------------------------------------------


class HostLookup(Protocol):
    """What the report asks the host (terminal.acquirer.link.AcquirerLink.status)."""

    def status(
        self, *, transaction_ref: str | None = None, idempotency_key: str | None = None
    ) -> TransactionStatus: ...


def batch_records(journal: Journal, batch_id: str) -> tuple[list[TxnRecord], int]:
    """The finished records of a batch ("" for the open one), oldest first, and how many
    of its records are still running (left out: they have no final state to compare)."""
    records = journal.in_batch(batch_id)
    found = [record for record in records if record.finished]
    return found, len(records) - len(found)


def look_up(
    records: Sequence[TxnRecord],
    host: HostLookup | None,
    originals: Callable[[str], TxnRecord | None],
) -> dict[str, HostAnswer]:
    """The host's answer for each record (by transaction id): by the host's reference,
    else by the idempotency key; a void by its sale's reference (the host marks the sale
    voided, it keeps no void of its own). After the host could not be asked once, every
    later record gets the same HostUnavailable without asking."""
    answers: dict[str, HostAnswer] = {}
    unavailable: HostUnavailable | None = (
        HostUnavailable("the terminal is not enrolled with an acquirer") if host is None else None
    )
    for record in records:
        if expected_at_host(record) == _NOT_SENT:
            continue
        ref, key = record.host_ref, record.idempotency_key
        if record.kind is Kind.VOID:
            sale = originals(record.original_id) if record.original_id else None
            ref, key = (sale.host_ref, "") if sale is not None else ("", "")
        if not ref and not key:
            answers[record.id] = None
            continue
        if unavailable is not None or host is None:
            answers[record.id] = unavailable
            continue
        try:
            status = host.status(transaction_ref=ref or None, idempotency_key=key or None)
        except HostRejectedError as exc:
            if exc.status == 404:
                answers[record.id] = NOT_AT_HOST
                continue
            unavailable = HostUnavailable(f"the host refused the lookup ({exc.code})")
            answers[record.id] = unavailable
            continue
        except AcquirerError as exc:
            unavailable = HostUnavailable(f"the host could not be asked: {exc}")
            answers[record.id] = unavailable
            continue
        if status.transaction_ref is None:
            # Reversed before its authorisation arrived: nothing was ever booked.
            answers[record.id] = HostRecord(key, status.status, "sale", None, None)
            continue
        answers[record.id] = HostRecord(
            ref=status.transaction_ref,
            status=status.status,
            kind=status.kind or "",
            amount=status.amount,
            currency=status.currency,
        )
    return answers


def batch_report(core: CheckoutCore, batch: str) -> dict[str, Any]:
    """The report of `batch` (:data:`CURRENT` or a closed batch's id) as the API answers
    it. Raises NotFoundError for a batch the journal does not have."""
    journal = core.journal
    if batch == CURRENT:
        batch_id = ""
    else:
        if journal.batch(batch) is None:
            raise NotFoundError(f"no batch {batch[:64]!r} in the journal")
        batch_id = batch
    records, running = batch_records(journal, batch_id)
    # The checkout's own acquirer client (None: not enrolled); the report is part of the
    # checkout package, so it shares the connection and the sequence counter.
    host = core._acquirer
    answers = look_up(records, host, journal.get)
    report = compare(records, answers, host_lists_transactions=False)
    return {
        "batch": batch,
        "batch_id": batch_id or None,
        "open": not batch_id,
        "generated_at": core._now().isoformat(),  # the checkout's injected clock
        "host_reachable": report.host_reachable,
        "host_lists_transactions": report.host_lists_transactions,
        "lines": [line.to_json() for line in report.lines],
        "counts": report.counts(),
        "differences": report.differences,
        "totals": report.totals(),
        "running": running,
    }
