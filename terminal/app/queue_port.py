"""The offline queue as the checkout uses it: limits from the parameters, durable admission,
the banner's summary, host references after sync, and an on-demand sync."""

from __future__ import annotations

from collections.abc import Mapping

from offline_queue.forwarder import Forwarder
from offline_queue.limits import OfflineDecision, OfflineLimits, check_offline
from offline_queue.model import OUTSTANDING_STATES, OfflinePayment
from offline_queue.store import OfflineQueue

from ..checkout.ports import QueueSummary
from ..domain.currency import format_amount

__all__ = ["QueuePort"]


class QueuePort:
    """Adapts :class:`offline_queue.store.OfflineQueue` (+ its forwarder) to the checkout."""

    def __init__(
        self, queue: OfflineQueue, limits: OfflineLimits, forwarder: Forwarder | None
    ) -> None:
        self.queue = queue
        self.limits = limits
        self.forwarder = forwarder

    def admit(
        self, payment: OfflinePayment, *, card_approves_offline: bool, now: int
    ) -> OfflineDecision:
        if not card_approves_offline:
            # The pure check gives the precise reason (the card's own refusal comes first).
            return check_offline(
                self.limits,
                self.queue.exposure(),
                amount=payment.amount,
                currency=payment.currency,
                card_approves_offline=False,
                now=now,
                fmt=format_amount,
            )
        # Limits are checked again inside the insert's transaction: no race for the headroom.
        result = self.queue.enqueue(payment, limits=self.limits, fmt=format_amount)
        return result.decision if not result.stored else OfflineDecision(True)

    def summary(self, now: int) -> QueueSummary:
        status = self.queue.status()
        return QueueSummary(
            count=status.outstanding_count,
            amounts=status.outstanding_amounts(),
            flagged=status.flagged,
        )

    def host_ref(self, transaction_id: str) -> tuple[str, str | None]:
        queued = self.queue.get(transaction_id)
        if queued is None:
            return "", None
        return str(queued.state), queued.host_ref

    def outstanding(self, transaction_id: str) -> bool:
        queued = self.queue.get(transaction_id)
        return queued is not None and queued.state in OUTSTANDING_STATES

    def sync(self) -> Mapping[str, int]:
        if self.forwarder is None:
            return {}
        report = self.forwarder.sync(max_failures=1)
        return {
            "accepted": report.accepted,
            "duplicates": report.duplicates,
            "declined": report.declined,
            "failed": report.failed,
            "remaining": report.remaining,
            "upload_errors": report.upload_errors,
        }
