"""What the checkout needs from the world around it: the clock, randomness, the reader and
scanner factories, the offline queue."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from drivers.base import CardReader
from drivers.scanner import CodeScanner
from offline_queue.limits import OfflineDecision
from offline_queue.model import OfflinePayment

__all__ = [
    "Clock",
    "OfflineQueuePort",
    "QueueSummary",
    "RandomBytes",
    "ReaderFactory",
    "ScannerFactory",
]


Clock = Callable[[], datetime]
RandomBytes = Callable[[int], bytes]
ReaderFactory = Callable[[], CardReader]
ScannerFactory = Callable[[], CodeScanner]


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """Payments stored but not yet accepted by the host (the offline banner)."""

    count: int = 0
    amounts: Mapping[int, int] = field(default_factory=dict)
    flagged: int = 0  # declined by the host after the fact, or failed: the merchant must look

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "amounts": {f"{cur:03d}": amount for cur, amount in sorted(self.amounts.items())},
            "flagged": self.flagged,
        }


class OfflineQueuePort(Protocol):
    """What the checkout needs from the offline queue (adapted in terminal.app.queue_port)."""

    def admit(
        self, payment: OfflinePayment, *, card_approves_offline: bool, now: int
    ) -> OfflineDecision:
        """Check the offline limits and, when allowed, store `payment` durably (fsynced)."""

    def summary(self, now: int) -> QueueSummary: ...

    def host_ref(self, transaction_id: str) -> tuple[str, str | None]:
        """(queue state, host reference once the host accepted it); ("", None) if unknown."""

    def sync(self) -> Mapping[str, int]:
        """Send what is pending now; returns counts per final state."""
