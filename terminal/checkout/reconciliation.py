"""Reconciliation: totals, end of day against the acquirer, the offline queue's sync, the
reversals still owed, and recovery after a crash."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from offline_queue.errors import QueueError
from offline_queue.model import State as QueueState

from ..acquirer.client import (
    AcquirerError,
    BrandTotals,
    HostRejectedError,
    HostUnreachable,
    NotEnrolledError,
)
from ..acquirer.qr_client import QrHostError
from ..domain.currency import format_amount
from ..domain.messages import Result, ui_strings
from ..domain.records import DECLINED_AFTER_THE_FACT, Kind, State, TotalsLine, TxnRecord
from .core import QR_CANCEL_PREFIX, _now_text
from .errors import AcquirerRequiredError
from .failures import link_failure
from .refunds import RefundsAndVoids

__all__ = ["Reconciliation", "totals_json"]

log = logging.getLogger(__name__)


def totals_json(lines: Sequence[TotalsLine]) -> list[dict[str, Any]]:
    return [
        {
            "brand": line.brand,
            "currency": line.currency,
            "sales_count": line.sales_count,
            "sales_amount": line.sales_amount,
            "refunds_count": line.refunds_count,
            "refunds_amount": line.refunds_amount,
            "net_amount": line.net_amount,
            "offline_count": line.offline_count,
            "offline_amount": line.offline_amount,
            "net_text": format_amount(line.net_amount, line.currency),
        }
        for line in lines
    ]


class Reconciliation(RefundsAndVoids):
    """End of day, sync and recovery."""

    def totals(self) -> list[TotalsLine]:
        return self.journal.open_totals()

    def end_of_day(self) -> dict[str, Any]:
        """Send what the queue holds, then close the batch with the acquirer and compare."""
        with self._holding():
            if self._acquirer is None:
                raise AcquirerRequiredError("the terminal is not connected to an acquirer")
            sync = self._safe_sync()
            lines = self.journal.open_totals()
            mine = [
                BrandTotals(
                    brand=line.brand,
                    currency=line.currency,
                    sales_count=line.sales_count - line.offline_count,
                    sales_amount=line.sales_amount - line.offline_amount,
                    refunds_count=line.refunds_count,
                    refunds_amount=line.refunds_amount,
                    net_amount=line.net_amount - line.offline_amount,
                )
                for line in lines
            ]
            try:
                settlement = self._acquirer.settle(terminal_totals=None)
            except HostUnreachable as exc:
                self._link(False, "unreachable")
                raise AcquirerRequiredError(f"bank unreachable, batch not closed: {exc}") from exc
            except AcquirerError as exc:
                raise AcquirerRequiredError(f"batch not closed: {exc}") from exc
            self._link(True)
            host_totals = [t.to_json() for t in settlement.totals]
            count = self.journal.close_batch(
                settlement.batch_id, _now_text(self._now()), host_totals
            )
            report = {
                "batch_id": settlement.batch_id,
                "transactions": count,
                "host_transactions": settlement.transaction_count,
                "host_totals": host_totals,
                "terminal_totals": [t.to_json() for t in mine],
                "offline_synced": dict(sync),
                "still_offline": self.queue_summary().to_json(),
            }
            self.events.publish("end_of_day", report)
            return report

    def _safe_sync(self) -> Mapping[str, int]:
        try:
            result = self.queue.sync()
        except QueueError as exc:  # the queue's own errors: report, do not lose the batch
            log.warning("offline sync failed: %s", exc)
            return {"error": 1}
        self._mark_synced()
        answered = sum(result.get(k, 0) for k in ("accepted", "declined", "failed"))
        if answered:
            self._link(True)  # the bank answered a batch: it is back
        elif result.get("upload_errors"):
            # The uploader does not say how it failed: keep what the last exchange said.
            self._link(False, self.host_failure or "unreachable")
        elif self.host_online is False:
            # Nothing was sent (an empty queue says nothing of the bank): ask it.
            self.probe_host()
        return result

    def sync_offline(self) -> Mapping[str, int]:
        """Send the offline queue now and bring the journal up to date with what happened."""
        result = self._safe_sync()
        self._publish_status()
        return result

    def sync_report(self) -> dict[str, Any]:
        """The merchant's "send offline payments": what was sent and, when nothing could
        be, why, in words the page shows ("3 sent", "could not send: bank unreachable")."""
        result = self.sync_offline()
        strings = ui_strings(self.language)
        sent = sum(result.get(k, 0) for k in ("accepted", "declined", "failed"))
        remaining = self.queue_summary().count
        failure = ""
        if result.get("error"):
            failure = "queue_error"
        elif remaining and not sent:
            failure = self.host_failure or "unreachable"
        elif self.host_online is False:
            failure = self.host_failure or "no_answer"
        if failure:
            reason = strings.get(f"host_failure_{failure}", failure)
            text = strings["sync_failed"].format(reason=reason)
        elif sent:
            text = strings["sync_sent"].format(count=sent)
        else:
            text = strings["sync_nothing"]
        return {
            "sent": sent,
            "accepted": result.get("accepted", 0),
            "declined": result.get("declined", 0),
            "failed": result.get("failed", 0),
            "remaining": remaining,
            "ok": not failure,
            "failure": failure,
            "text": text,
            "host_online": self.host_online,
        }

    def probe_host(self) -> bool | None:
        """Ask the bank whether it answers (a signed request that moves no money): the
        evidence that brings an offline terminal back online, or keeps it offline. None
        when there is no bank to ask (not connected, not enrolled)."""
        if self._acquirer is None:
            return None
        try:
            self._acquirer.whoami()
        except NotEnrolledError:
            return None
        except HostRejectedError:
            self._link(True)  # a signed refusal is an answer
        except AcquirerError as exc:
            self._link(False, link_failure(exc))
        else:
            self._link(True)
        return self.host_online

    def _mark_synced(self) -> None:
        """Copy the host references (and after-the-fact declines) from the queue."""
        for record in self.journal.recent(limit=500):
            if (
                record.state is not State.APPROVED_OFFLINE
                or record.host_ref
                or not record.offline_id
            ):
                continue
            state, ref = self.queue.host_ref(record.offline_id)
            if state == QueueState.DECLINED:
                self._transition(
                    record,
                    record.state,
                    reason=DECLINED_AFTER_THE_FACT,
                    host_ref=ref or "",
                )
            elif ref:
                self._transition(record, record.state, host_ref=ref)

    def acknowledge_declines(self) -> dict[str, int]:
        """The merchant has seen the after-the-fact declines: recorded in one journal
        commit, so the banner stays gone after a restart; a later decline shows it again."""
        acknowledged = self.journal.acknowledge_declines(_now_text(self._now()))
        self._publish_status()
        remaining = len(self.journal.declined_after_the_fact(unacknowledged=True))
        return {"acknowledged": acknowledged, "unacknowledged": remaining}

    def owes_the_host(self) -> bool:
        """Whether something the host may have done waits to be undone or settled: a
        reversal or order cancel not yet acknowledged, a void whose answer was lost."""
        return bool(self.journal.pending_reversals() or self.journal.unsettled(Kind.VOID))

    def retry_reversals(self) -> int:
        """Send reversals the host has not acknowledged yet, and settle the voids whose
        answer was lost; returns how many of either remain."""
        for key, _txn in self.journal.pending_reversals():
            if key.startswith(QR_CANCEL_PREFIX):
                if self._qr_client is None:
                    continue
                try:
                    self._qr_client.cancel(key[len(QR_CANCEL_PREFIX) :], "no_answer")
                except QrHostError as exc:
                    log.info("code order cancel still pending: %s", type(exc).__name__)
                    continue
                self.journal.reversal_done(key)
                continue
            if self._acquirer is None:
                continue
            try:
                self._acquirer.reverse(original_idempotency_key=key, reason="lost_response")
            except AcquirerError as exc:
                log.info("reversal still pending: %s", type(exc).__name__)
                # A signed refusal is an answer; an unanswered or refused request is not.
                if isinstance(exc, HostRejectedError):
                    self._link(True)
                else:
                    self._link(False, link_failure(exc))
                continue
            self.journal.reversal_done(key)
            self._link(True)  # the bank acknowledged it: it answers again
        unknown_voids = self._settle_unknown_voids()
        return len(self.journal.pending_reversals()) + len(unknown_voids)

    def recover(self) -> list[TxnRecord]:
        """After a restart: finish what a crash interrupted, truthfully."""
        fixed = [self._recovered(record) for record in self.journal.unfinished()]
        self.retry_reversals()
        return fixed

    def _recovered(self, record: TxnRecord) -> TxnRecord:
        """How a transaction a crash interrupted ends: each in one commit, with the reversal
        or order cancel it owes."""
        if record.offline_id or self.queue.host_ref(record.id)[0]:
            # In the offline queue already (a card's, or a code the parameters allow
            # offline): it will be sent, so it is approved offline, never cancelled.
            return self._finish(
                record, State.APPROVED_OFFLINE, Result.APPROVED_OFFLINE, offline_id=record.id
            )
        if record.qr_order_id:
            # A code payment cut short: cancel its order (reversed if it was paid), so no
            # money is kept for a sale the merchant never saw approved.
            return self._finish(
                record,
                State.CANCELLED,
                Result.CODE_CANCELLED,
                "cancelled",
                reversal_key=QR_CANCEL_PREFIX + record.qr_order_id,
            )
        if record.idempotency_key and record.kind in (Kind.REFUND, Kind.VOID):
            # It may have reached the bank: re-sent under this key before the next refund of
            # the sale (_settle_unknown_refunds), or, a void, by retry_reversals just below.
            return self._finish(
                record,
                State.FAILED,
                Result.REFUND_DECLINED if record.kind is Kind.REFUND else Result.VOID_DECLINED,
                "interrupted; no answer from the bank",
                outcome_unknown=True,
            )
        if record.idempotency_key and record.kind is Kind.SALE:
            # The authorisation may have reached the host: reverse it, never assume.
            return self._finish(
                record,
                State.DECLINED,
                Result.HOST_NO_RESPONSE,
                "interrupted",
                reversal_key=record.idempotency_key,
            )
        return self._finish(record, State.CANCELLED, Result.CANCELLED, "interrupted")
