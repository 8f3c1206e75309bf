"""Pre-authorisations (hotels, fuel, rentals): a hold on the card, raised, captured or
released later.

The hold is authorised like a sale (the card is run by the sale's own path, the request
carries ``"kind": "preauth"``), but only online: without the bank nothing is held, so a
bank that cannot be reached declines it with that reason. Its changes need no card (the
host holds the card's reference): an increment raises the hold, a capture takes 1 up to
all of it once (the bank releases the rest), a release gives it back whole. Each change is
journaled, with its idempotency key, before its request leaves; what it does to the hold
(held, captured, released) is derived by the journal in the same commit as the change's
approval. A change whose answer was lost (or cut by a crash) is settled under its own key
before the next change of the same hold, and by the background loop, the host answering
the first result: nothing is captured twice."""

from __future__ import annotations

import logging
from typing import Any, Final

from ..acquirer.client import (
    AcquirerError,
    HoldChange,
    HostRejectedError,
    HostUnreachable,
)
from ..acquirer.link import AcquirerLink
from ..domain.currency import format_amount
from ..domain.messages import Result, ui_strings
from ..domain.records import HOLD_CHANGES, Kind, Stage, State, TxnRecord
from .core import _now_text
from .errors import AcquirerRequiredError, RequestError, StateError
from .reconciliation import Reconciliation
from .sale import Sales

__all__ = ["Preauths", "hold_title_key"]

log = logging.getLogger(__name__)

#: How each change ends: approved, declined.
_RESULTS: Final = {
    Kind.INCREMENT: (Result.INCREMENT_APPROVED, Result.INCREMENT_DECLINED),
    Kind.CAPTURE: (Result.CAPTURE_APPROVED, Result.CAPTURE_DECLINED),
    Kind.RELEASE: (Result.RELEASE_APPROVED, Result.RELEASE_DECLINED),
}

#: The id prefix of each change's record.
_PREFIXES: Final = {Kind.INCREMENT: "I", Kind.CAPTURE: "C", Kind.RELEASE: "L"}


def hold_title_key(record: TxnRecord) -> str:
    """What happened to a pre-authorisation or one of its changes, as the key of its title
    (ui string ``title_<key>``): a hold says what became of it since (held, captured,
    released); a change whose answer was lost is "not confirmed"."""
    if record.kind is Kind.PREAUTH:
        if record.state is State.IN_PROGRESS:
            return "preauth_in_progress"
        if record.state is State.APPROVED:
            if record.captured_amount:
                return "preauth_captured"
            return "preauth_released" if record.released else "preauth_held"
        return "preauth_declined" if record.state is State.DECLINED else "preauth_failed"
    word = str(record.kind)
    if record.state is State.IN_PROGRESS:
        return f"{word}_in_progress"
    if record.state is State.APPROVED:
        return f"{word}_approved"
    if record.state is State.DECLINED:
        return f"{word}_declined"
    if record.state is State.FAILED and record.outcome_unknown:
        return f"{word}_unknown"
    return f"{word}_failed"


class Preauths(Sales, Reconciliation):
    """Pre-authorise an amount at the reader; raise, capture or release the hold."""

    def preauthorise(
        self, amount: int, currency_code: int | None = None, *, external_ref: str = ""
    ) -> TxnRecord:
        """Begin a pre-authorisation and return at once: the terminal waits for a card and
        asks the bank to hold `amount`; progress arrives as events and in the journal, as a
        sale's does. Refused at once (nothing is read) on a terminal with no bank."""
        code = self.params.terminal.currency_code if currency_code is None else currency_code
        self._check_amount(amount, code)
        if self._acquirer is None:
            raise AcquirerRequiredError(
                "a pre-authorisation needs the bank, and this terminal is not connected to one",
                reason="not_connected",
            )
        return self._start_at_reader(Kind.PREAUTH, amount, code, external_ref)

    def increment(self, preauth_id: str, amount: int, *, external_ref: str = "") -> TxnRecord:
        """Raise an open hold by `amount` (no card needed)."""
        hold = self._open_hold(preauth_id)
        self._check_amount(amount, hold.currency)
        return self._change(preauth_id, Kind.INCREMENT, amount, external_ref)

    def capture(
        self, preauth_id: str, amount: int | None = None, *, external_ref: str = ""
    ) -> TxnRecord:
        """Take `amount` (all of the hold when None) of an open hold, once: the money moves
        and the bank releases the rest of the hold."""
        hold = self._open_hold(preauth_id)
        if amount is not None:
            self._check_amount(amount, hold.currency)
            self._check_within(hold, amount)
        # "All of it" is read once the terminal is taken (in _change): an increment that
        # finishes in between is captured too.
        return self._change(preauth_id, Kind.CAPTURE, amount, external_ref)

    def release(self, preauth_id: str, *, external_ref: str = "") -> TxnRecord:
        """Give an open hold back whole."""
        self._open_hold(preauth_id)
        return self._change(preauth_id, Kind.RELEASE, None, external_ref)

    # --- the changes ---------------------------------------------------------------------

    def _open_hold(self, preauth_id: str) -> TxnRecord:
        """The pre-authorisation `preauth_id`, refused unless it holds money now."""
        hold = self.get(preauth_id)
        if hold.kind is not Kind.PREAUTH:
            raise StateError(
                f"{preauth_id} is a {hold.kind}, not a pre-authorisation", reason="not_a_preauth"
            )
        if hold.state is not State.APPROVED or not hold.host_ref:
            raise StateError(
                f"pre-authorisation {preauth_id} holds nothing ({hold.state})", reason="not_open"
            )
        if hold.captured_amount:
            raise StateError(
                f"pre-authorisation {preauth_id} has been captured "
                f"({format_amount(hold.captured_amount, hold.currency)})",
                reason="captured",
            )
        if hold.released:
            raise StateError(f"pre-authorisation {preauth_id} has been released", reason="released")
        return hold

    @staticmethod
    def _check_within(hold: TxnRecord, amount: int) -> None:
        if amount > hold.authorised_amount:
            raise RequestError(
                f"capture of {format_amount(amount, hold.currency)} is more than the hold "
                f"({format_amount(hold.authorised_amount, hold.currency)})",
                reason="over_hold",
            )

    def _hold_acquirer(self) -> AcquirerLink:
        if self._acquirer is None:
            raise AcquirerRequiredError(
                "the terminal is not connected to an acquirer", reason="not_connected"
            )
        return self._acquirer

    def _change(
        self, preauth_id: str, kind: Kind, amount: int | None, external_ref: str
    ) -> TxnRecord:
        """`amount` None: all the hold holds, read once the terminal is taken (a release,
        or a capture of all of it)."""
        with self._holding():
            acquirer = self._hold_acquirer()
            # An earlier change of this hold whose answer was lost goes first, under its own
            # key: it may have captured or released the hold already.
            went_through, unknown = self._settle_changes(acquirer, preauth_id)
            if unknown:
                raise AcquirerRequiredError(
                    f"an earlier change of pre-authorisation {preauth_id} ({unknown[0].id}) has "
                    "no answer from the bank yet; try again when the bank can be reached",
                    reason="pending_hold_change",
                )
            if went_through:
                done = ", ".join(f"{r.kind} {r.id} ({r.state})" for r in went_through)
                raise StateError(
                    f"an earlier change of this pre-authorisation reached the bank and is now "
                    f"recorded: {done}; nothing more was done",
                    reason="earlier_hold_change_done",
                )
            # Read again now that the terminal is ours: another change may have finished.
            hold = self._open_hold(preauth_id)
            if amount is None or kind is Kind.RELEASE:
                amount = hold.authorised_amount
            elif kind is Kind.CAPTURE:
                self._check_within(hold, amount)
            now = _now_text(self._now())
            record = self.journal.insert(
                TxnRecord(
                    id=self._new_id(_PREFIXES[kind]),
                    kind=kind,
                    state=State.IN_PROGRESS,
                    amount=amount,
                    currency=hold.currency,
                    created_at=now,
                    updated_at=now,
                    external_ref=external_ref,
                    original_id=hold.id,
                    stage=Stage.AUTHORISING,
                    masked_pan=hold.masked_pan,
                    brand=hold.brand,
                    aid=hold.aid,
                    entry_mode=hold.entry_mode,
                    idempotency_key=acquirer.new_idempotency_key(str(kind)),
                )
            )
            with self._state_lock:
                self._current = record.id
            self._publish(record)
            try:
                answer = self._send_change(acquirer, hold.host_ref, record)
            except HostRejectedError as exc:
                ended = self._fail(record, exc)
                self._refuse_for(exc, ended)
                return ended
            except HostUnreachable as exc:
                # Nothing reached the bank: the change is recorded as failed, and the
                # caller told the bank is unavailable (nothing changed; it may retry).
                self._fail(record, exc)
                raise AcquirerRequiredError(
                    f"{kind} of pre-authorisation {preauth_id} not sent: the bank is "
                    "unreachable; nothing changed",
                    reason="unreachable",
                ) from exc
            except AcquirerError as exc:
                return self._fail(record, exc)
            return self._answered(record, answer)

    @staticmethod
    def _send_change(acquirer: AcquirerLink, host_ref: str, record: TxnRecord) -> HoldChange:
        key = record.idempotency_key
        if record.kind is Kind.INCREMENT:
            return acquirer.increment_hold(
                host_ref, record.amount, record.currency, idempotency_key=key
            )
        if record.kind is Kind.CAPTURE:
            return acquirer.capture_hold(
                host_ref, record.amount, record.currency, idempotency_key=key
            )
        return acquirer.release_hold(host_ref, idempotency_key=key)

    def _answered(self, record: TxnRecord, answer: HoldChange, **changes: Any) -> TxnRecord:
        """End a change as the bank answered it: in one commit with what it does to the
        hold (the journal derives held, captured and released from it)."""
        self._link(True)
        approved, declined = _RESULTS[record.kind]
        if answer.approved:
            return self._finish(
                record,
                State.APPROVED,
                approved,
                host_ref=answer.transaction_ref or "",
                response_code=answer.response_code or "",
                **changes,
            )
        return self._finish(
            record,
            State.DECLINED,
            declined,
            f"{answer.response_code or ''} {answer.reason}".strip(),
            host_ref=answer.transaction_ref or "",
            response_code=answer.response_code or "",
            **changes,
        )

    @staticmethod
    def _refuse_for(exc: HostRejectedError, ended: TxnRecord) -> None:
        """The host refused the change because of the hold's state or the amount: the
        change is recorded as declined, and the caller told why, as the checks before the
        request would have (409 / 422 of the local API)."""
        match exc.code:  # the host's codes (docs/protocol.md, Pre-authorisation)
            case "hold_captured":
                reason = "captured"
            case "hold_released":
                reason = "released"
            case "hold_expired":
                reason = "expired"
            case "hold_not_open":
                reason = "not_open"
            case "capture_exceeds_hold":
                raise RequestError(
                    f"the bank refused capture {ended.id}: {exc.message or exc.code}",
                    reason="over_hold",
                ) from exc
            case _:
                return  # another refusal: the change is declined with the host's words
        raise StateError(
            f"the bank refused {ended.kind} {ended.id}: {exc.message or exc.code}", reason=reason
        ) from exc

    def _settle_changes(
        self, acquirer: AcquirerLink, preauth_id: str | None = None
    ) -> tuple[list[TxnRecord], list[TxnRecord]]:
        """Re-send, under their own keys, the changes of holds (of one, or all) whose answer
        was lost: the host answers the first result (or does it now), so the journal learns
        what became of each. Returns those now settled by the bank's answer, and those
        still unknown (the bank could not be asked)."""
        settled: list[TxnRecord] = []
        unknown: list[TxnRecord] = []
        with self._settling:  # one settler at a time: the background loop, a change
            for kind in (Kind.INCREMENT, Kind.CAPTURE, Kind.RELEASE):
                for earlier in self.journal.unsettled(kind):
                    if preauth_id is not None and earlier.original_id != preauth_id:
                        continue
                    hold = self.get(earlier.original_id)
                    try:
                        answer = self._send_change(acquirer, hold.host_ref, earlier)
                    except HostRejectedError as exc:
                        settled.append(self._fail(earlier, exc))  # refused: declined
                        continue
                    except AcquirerError as exc:
                        log.info(
                            "%s %s still unanswered: %s",
                            earlier.kind,
                            earlier.id,
                            type(exc).__name__,
                        )
                        unknown.append(earlier)
                        continue
                    settled.append(self._answered(earlier, answer, outcome_unknown=False))
        return settled, unknown

    # --- what the rest of the checkout does, for holds too ---------------------------------

    def retry_reversals(self) -> int:
        """Also settle the changes of holds whose answer was lost (the background loop)."""
        left = super().retry_reversals()
        if self._acquirer is None:
            return left + sum(len(self.journal.unsettled(k)) for k in HOLD_CHANGES)
        return left + len(self._settle_changes(self._acquirer)[1])

    def _recovered(self, record: TxnRecord) -> TxnRecord:
        """A pre-authorisation a crash interrupted is reversed if its request may have left
        (as a sale is); a change of a hold ends unknown, settled under its own key."""
        if record.kind is Kind.PREAUTH and record.idempotency_key:
            return self._finish(
                record,
                State.DECLINED,
                Result.HOST_NO_RESPONSE,
                "interrupted",
                reversal_key=record.idempotency_key,
            )
        if record.kind in HOLD_CHANGES and record.idempotency_key:
            return self._finish(
                record,
                State.FAILED,
                _RESULTS[record.kind][1],
                "interrupted; no answer from the bank",
                outcome_unknown=True,
            )
        return super()._recovered(record)

    def view(self, record: TxnRecord) -> dict[str, Any]:
        """A hold or a change as every other transaction is shown, titled by what became of
        it; a hold also carries its change records (`changes`, oldest first)."""
        data = super().view(record)
        if record.kind is Kind.PREAUTH or record.kind in HOLD_CHANGES:
            data["title_key"] = hold_title_key(record)
            data["title"] = ui_strings(self.language)[f"title_{data['title_key']}"]
        if record.kind is Kind.PREAUTH:
            data["changes"] = [
                {
                    "id": change.id,
                    "kind": str(change.kind),
                    "amount": change.amount,
                    "amount_text": format_amount(change.amount, change.currency),
                    "state": str(change.state),
                    "created_at": change.created_at,
                }
                for change in self.journal.find_original(record.id)
            ]
        return data
