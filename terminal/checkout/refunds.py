"""Refunds and voids of an approved sale: each journaled before its request leaves. One whose
answer was lost (or cut by a crash) is settled under its own idempotency key, the host
answering the first result: a refund before any new refund of the sale, a void by the
background loop or before another void of the sale."""

from __future__ import annotations

import logging
from typing import Any

from ..acquirer.client import AcquirerError, HostRejectedError, RefundRequest
from ..acquirer.link import AcquirerLink
from ..domain.currency import format_amount
from ..domain.messages import Result
from ..domain.records import Kind, Stage, State, TxnRecord
from .core import CheckoutCore, _now_text
from .errors import (
    AcquirerRequiredError,
    CheckoutError,
    DeclinedAfterTheFactError,
    RequestError,
    StateError,
)

__all__ = ["RefundsAndVoids"]


log = logging.getLogger(__name__)


def _refuse_declined_after_the_fact(sale: TxnRecord, what: str) -> None:
    """No refund or void of an offline sale the bank declined when it was sent: the money
    never came in, so giving it back would pay the customer twice."""
    if sale.declined_after_the_fact:
        raise DeclinedAfterTheFactError(
            f"sale {sale.id} cannot be {what}: the bank declined this offline payment after "
            "the fact, so no money was received for it"
        )


class RefundsAndVoids(CheckoutCore):
    """Refund (part of) a sale; void one not yet settled."""

    def _resolve_host_ref(self, sale: TxnRecord) -> str:
        if sale.host_ref:
            return sale.host_ref
        if sale.offline_id:
            state, ref = self.queue.host_ref(sale.offline_id)
            if ref:
                self._transition(sale, sale.state, host_ref=ref)
                return ref
            raise StateError(
                f"sale {sale.id} is still in the offline queue ({state or 'unknown'}); "
                "it can be refunded once it has been sent to the bank",
                reason="offline_not_sent",
            )
        raise StateError(f"sale {sale.id} has no bank reference", reason="no_bank_reference")

    def _undo_record(self, sale: TxnRecord, kind: Kind, amount: int, **fields: Any) -> TxnRecord:
        """Journal a refund or void of `sale` before its request leaves, and make it the
        terminal's current transaction."""
        now = _now_text(self._now())
        record = self.journal.insert(
            TxnRecord(
                id=self._new_id("R" if kind is Kind.REFUND else "V"),
                kind=kind,
                state=State.IN_PROGRESS,
                amount=amount,
                currency=sale.currency,
                created_at=now,
                updated_at=now,
                original_id=sale.id,
                stage=Stage.AUTHORISING,
                masked_pan=sale.masked_pan,
                brand=sale.brand,
                aid=sale.aid,
                **fields,
            )
        )
        with self._state_lock:
            self._current = record.id
        return record

    def refund(
        self, original_id: str, amount: int | None = None, *, external_ref: str = ""
    ) -> TxnRecord:
        """Refund (part of) an approved sale to the card it was paid with."""
        sale = self.get(original_id)
        if sale.kind is not Kind.SALE:
            raise StateError(
                f"{original_id} is a {sale.kind}, only sales can be refunded",
                reason="refund_not_a_sale",
            )
        _refuse_declined_after_the_fact(sale, "refunded")
        # What is left of the sale, whether or not the bank has it yet: an offline sale
        # still in the queue is refused below, by its own reason, once the queue is asked
        # (the forwarder may have sent it a moment ago).
        refundable = self._left_to_refund(sale)
        if refundable <= 0:
            if sale.voided:
                why, reason = ", voided", "refund_voided"
            elif sale.refunded_amount:
                why, reason = ", already fully refunded", "refund_fully_refunded"
            else:
                why, reason = "", "refund_not_approved"
            raise StateError(
                f"sale {original_id} cannot be refunded ({sale.state}{why})", reason=reason
            )
        amount = refundable if amount is None else amount
        self._check_amount(amount, sale.currency)
        if amount > refundable:
            raise RequestError(
                f"refund of {format_amount(amount, sale.currency)} exceeds what is left to "
                f"refund ({format_amount(refundable, sale.currency)})",
                reason="refund_too_much",
            )
        with self._holding():
            host_ref = self._resolve_host_ref(sale)
            if self._acquirer is None:
                raise AcquirerRequiredError(
                    "the terminal is not connected to an acquirer", reason="not_connected"
                )
            self._settle_unknown_refunds(sale, host_ref, self._acquirer)
            # Checked again now that the terminal is ours: another refund or a void may have
            # finished since the checks above.
            sale = self.get(original_id)
            _refuse_declined_after_the_fact(sale, "refunded")
            left = self._left_to_refund(sale)
            if amount > left:
                raise StateError(
                    f"refund of {format_amount(amount, sale.currency)} exceeds what is left to "
                    f"refund ({format_amount(left, sale.currency)})",
                    reason="refund_too_much",
                )
            record = self._undo_record(
                sale,
                Kind.REFUND,
                amount,
                external_ref=external_ref,
                entry_mode=sale.entry_mode,
                idempotency_key=self._acquirer.new_idempotency_key("refund"),
            )
            self._publish(record)
            try:
                answer = self._acquirer.refund(
                    RefundRequest(amount=amount, currency=sale.currency, original_ref=host_ref),
                    idempotency_key=record.idempotency_key,
                )
            except AcquirerError as exc:
                # A lost answer (the bank may have refunded): the next refund of this sale
                # first re-sends this one under its own key (_settle_unknown_refunds).
                return self._fail(record, exc)
            self._link(True)
            # One commit: the refund's approval and the sale's refunded amount derived from
            # it (a crash can no longer leave the one without the other).
            return self._finish(
                record, State.APPROVED, Result.REFUND_APPROVED, host_ref=answer.transaction_ref
            )

    def _settle_unknown_refunds(
        self, sale: TxnRecord, host_ref: str, acquirer: AcquirerLink
    ) -> None:
        """Re-send, under their own idempotency keys, this sale's refunds whose answer was
        lost, before any new refund: the host answers the first result (or refunds now), so a
        refund the merchant retries is never paid twice. One that did go through is recorded
        and the new request is refused, for the merchant to decide again."""
        went_through: list[TxnRecord] = []
        # One settler at a time (the background loop settles refunds too): listed under the
        # lock, so what the other has just settled is not sent again.
        with self._settling:
            for earlier in self.journal.find_original(sale.id):
                if earlier.kind is not Kind.REFUND or not earlier.outcome_unknown:
                    continue
                try:
                    settled = self._resend_refund(earlier, host_ref, acquirer)
                except AcquirerError as exc:
                    raise AcquirerRequiredError(
                        f"an earlier refund ({earlier.id}) of this sale has no answer from the "
                        "bank yet; try again when the bank can be reached",
                        reason="pending_refund",
                    ) from exc
                if settled.state is State.APPROVED:
                    went_through.append(settled)
        if went_through:
            done = ", ".join(
                f"{r.id} ({format_amount(r.amount, r.currency)})" for r in went_through
            )
            raise StateError(
                f"an earlier refund of this sale did reach the bank and is now recorded as "
                f"approved: {done}; nothing more was refunded",
                reason="earlier_refund_done",
            )

    def _resend_refund(
        self, earlier: TxnRecord, host_ref: str, acquirer: AcquirerLink
    ) -> TxnRecord:
        """A refund whose answer was lost, sent again under its own key: recorded approved
        (the host refunded it, then or now) or declined (the host refused it). AcquirerError
        when the host still cannot be asked (it stays unknown)."""
        try:
            answer = acquirer.refund(
                RefundRequest(
                    amount=earlier.amount, currency=earlier.currency, original_ref=host_ref
                ),
                idempotency_key=earlier.idempotency_key,
            )
        except HostRejectedError as exc:
            return self._fail(earlier, exc)  # the host's refusal settles it: declined
        self._link(True)
        return self._transition(
            earlier,
            State.APPROVED,
            Result.REFUND_APPROVED,
            "",
            host_ref=answer.transaction_ref,
            outcome_unknown=False,
        )

    def settle_refund(self, refund_id: str) -> TxnRecord:
        """The refund `refund_id` as it stands, settled first when its answer was lost: sent
        again under its own key (the host answers its first result, or refunds now, never
        twice). What a register's repeat of the refund request (its Idempotency-Key) is
        answered with. Left as it is when the host still cannot be asked."""
        record = self.get(refund_id)
        if record.kind is not Kind.REFUND or not record.outcome_unknown or self._acquirer is None:
            return record
        acquirer = self._acquirer
        with self._settling:
            record = self.get(refund_id)  # another settler may have settled it meanwhile
            if not record.outcome_unknown:
                return record
            try:
                return self._resend_refund(
                    record, self._resolve_host_ref(self.get(record.original_id)), acquirer
                )
            except (AcquirerError, CheckoutError) as exc:
                log.info("refund %s still unanswered: %s", refund_id, type(exc).__name__)
                return record

    def _check_voidable(self, sale: TxnRecord) -> None:
        _refuse_declined_after_the_fact(sale, "voided")
        if self._voidable(sale):
            return
        why = "only approved online sales not yet settled or refunded can be voided"
        # The first that holds says what stands in the way (the merchant's text by reason).
        if sale.kind is not Kind.SALE:
            why, reason = f"{sale.id} is a {sale.kind}", "void_not_a_sale"
        elif sale.voided:
            reason = "void_already_voided"
        elif sale.state is State.APPROVED_OFFLINE:
            reason = "void_offline"  # the bank got it later, in a batch: refund it instead
        elif sale.state is not State.APPROVED or not sale.host_ref:
            reason = "void_not_approved"
        elif sale.batch_id:
            reason = "void_settled"  # closed at an end of day: too late, refund it instead
        else:
            reason = "void_refunded"
        raise StateError(f"{sale.id} cannot be voided: {why}", reason=reason)

    def _settle_unknown_voids(self, sale_id: str | None = None) -> list[TxnRecord]:
        """Re-send, under their own idempotency keys, the voids whose answer was lost (of
        one sale, or all): the host answers the first result, so the journal learns whether
        the sale was voided. Returns the voids still unknown (the host could not be asked)."""
        if self._acquirer is None:
            return self.journal.unsettled(Kind.VOID)
        acquirer = self._acquirer
        still_unknown: list[TxnRecord] = []
        # Listed under the lock: what another settler has just settled is not sent again.
        with self._settling:
            for earlier in self.journal.unsettled(Kind.VOID):
                if sale_id is not None and earlier.original_id != sale_id:
                    continue
                sale = self.get(earlier.original_id)
                try:
                    answer = acquirer.void(sale.host_ref, idempotency_key=earlier.idempotency_key)
                except HostRejectedError as exc:
                    self._fail(earlier, exc)  # the host's refusal settles it: declined
                    continue
                except AcquirerError as exc:
                    log.info("void %s still unanswered: %s", earlier.id, type(exc).__name__)
                    still_unknown.append(earlier)
                    continue
                self._link(True)
                self._transition(
                    earlier,
                    State.APPROVED,
                    Result.VOID_APPROVED,
                    answer.status,
                    outcome_unknown=False,
                )
        return still_unknown

    def void(self, original_id: str) -> TxnRecord:
        """Cancel an approved online sale that is not settled yet (no money moves)."""
        self._check_voidable(self.get(original_id))
        if self._acquirer is None:
            raise AcquirerRequiredError(
                "the terminal is not connected to an acquirer", reason="not_connected"
            )
        acquirer = self._acquirer
        with self._holding():
            # An earlier void of this sale whose answer was lost is settled first: it may
            # have voided the sale already (then the check below refuses a second one).
            if self._settle_unknown_voids(original_id):
                # Its own reason: no exception says why (the settler keeps those for the
                # log), and "not connected" would be untrue of a terminal with a bank.
                raise AcquirerRequiredError(
                    "an earlier void of this sale has no answer from the bank yet; try again "
                    "when the bank can be reached",
                    reason="pending_void",
                )
            # Read again under the terminal's lock: a refund may have finished in between.
            sale = self.get(original_id)
            self._check_voidable(sale)
            record = self._undo_record(
                sale, Kind.VOID, sale.amount, idempotency_key="void-" + sale.host_ref
            )
            try:
                answer = acquirer.void(sale.host_ref, idempotency_key=record.idempotency_key)
            except AcquirerError as exc:
                return self._fail(record, exc)
            self._link(True)
            # One commit: the void's approval and the sale's voided flag derived from it.
            return self._finish(record, State.APPROVED, Result.VOID_APPROVED, reason=answer.status)
