"""The forwarder: drains the queue to the acquirer in batches, with backoff, crash-safe.

Crash safety comes from the store (see :meth:`OfflineQueue.claim_batch`): a batch is marked
'sending' with its idempotency key in one commit before it leaves, and its results are
recorded in one commit after the answer. A crash between the two leaves the batch 'sending';
the next run resends exactly that batch with the same key, and the host answers with its
first result. Each item also carries its transaction id as the host's per-item deduplication
key, so even a payment sent in two different batches is never paid twice.

Retry timing: exponential backoff with full jitter (delay = U(0, min(cap, base * 2^n))), the
scheme that spreads a fleet of terminals coming back online instead of synchronising them.
"""

from __future__ import annotations

import random as _random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import BatchRejectedError, UplinkUnavailableError
from .model import Batch, ItemOutcome, ItemResult
from .store import OfflineQueue

__all__ = ["Backoff", "BatchUploader", "Forwarder", "Progress", "SyncReport"]


class BatchUploader(Protocol):
    """Sends one batch to the host and returns one result per item.

    Raise UplinkUnavailableError when the answer is missing or ambiguous (connection refused,
    timeout, 5xx, a response that fails verification): the same batch is sent again later.
    Raise BatchRejectedError when the host refuses the batch as invalid. The uploader must
    send `batch.idempotency_key` and each item's `transaction_id` unchanged, and build the
    request body deterministically from the batch so a resend is byte-identical.
    """

    def upload(self, batch: Batch) -> Sequence[ItemResult]: ...


Progress = Callable[[int, int], None]
"""progress(done, total): payments settled (accepted, declined or failed) out of total."""


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 1.0  # seconds before the first retry (at most)
    factor: float = 2.0
    cap: float = 300.0  # never wait longer than this between attempts

    def delay(self, failures: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(cap, base * factor^(failures-1))]."""
        ceiling = min(self.cap, self.base * self.factor ** max(0, failures - 1))
        return rand() * ceiling


@dataclass(slots=True)
class SyncReport:
    batches: int = 0
    accepted: int = 0  # newly accepted by the host
    #: Accepted before: the host already had them (answered as duplicates), not paid again.
    duplicates: int = 0
    declined: int = 0
    failed: int = 0
    retried: int = 0
    upload_errors: int = 0
    resumed_batches: int = 0
    remaining: int = 0
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.remaining == 0


class Forwarder:
    """Drains an :class:`OfflineQueue` through a :class:`BatchUploader`.

    All timing is injected: `clock` (seconds), `sleep`, and `random` (in [0, 1)) for jitter.
    """

    def __init__(
        self,
        queue: OfflineQueue,
        uploader: BatchUploader,
        *,
        batch_size: int = 100,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.queue = queue
        self.uploader = uploader
        self.batch_size = batch_size
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._sleep = sleep
        self._random = random

    def sync(
        self,
        *,
        max_failures: int | None = 5,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> SyncReport:
        """Send everything due; return when the queue is drained, `stop` is set, or after
        `max_failures` consecutive failed uploads (None: keep trying).

        Items the host asked to retry are waited for (with backoff) within the same budget.
        """
        report = SyncReport()
        total = self.queue.due_count()
        done = 0
        failures = 0
        if progress:
            progress(0, total)
        while not (stop and stop.is_set()):
            batch = self.queue.claim_batch(self.batch_size)
            if batch is None:
                due_at = self.queue.next_due_at()
                if due_at is None or self.queue.due_count() == 0:
                    break
                failures += 1
                if max_failures is not None and failures > max_failures:
                    break
                wait = max(0.0, due_at - self._clock())
                self._sleep(wait)
                continue
            report.batches += 1
            report.resumed_batches += int(batch.resumed)
            try:
                results = self.uploader.upload(batch)
            except UplinkUnavailableError as exc:
                self.queue.record_attempt_failed(batch, str(exc))
                report.upload_errors += 1
                report.last_error = str(exc)
                failures += 1
                if max_failures is not None and failures >= max_failures:
                    break
                self._sleep(self.backoff.delay(failures, self._random))
                continue
            except BatchRejectedError as exc:
                self.queue.record_batch_rejected(batch, str(exc))
                report.failed += len(batch.items)
                report.last_error = str(exc)
                report.errors.append(f"batch {batch.batch_id}: {exc}")
                done += len(batch.items)
                if progress:
                    progress(min(done, total), total)
                continue
            retry_at = int(self._clock() + self.backoff.delay(failures + 1, self._random)) + 1
            known = _only_known(batch, results)
            counts = self.queue.record_results(batch, known, retry_at=retry_at)
            duplicates = min(
                counts[ItemOutcome.ACCEPTED],
                sum(1 for r in known if r.duplicate and r.outcome is ItemOutcome.ACCEPTED),
            )
            report.accepted += counts[ItemOutcome.ACCEPTED] - duplicates
            report.duplicates += duplicates
            report.declined += counts[ItemOutcome.DECLINED]
            report.failed += counts[ItemOutcome.FAILED]
            report.retried += counts[ItemOutcome.RETRY]
            done += len(batch.items) - counts[ItemOutcome.RETRY]
            failures = 0 if counts[ItemOutcome.RETRY] < len(batch.items) else failures + 1
            if progress:
                progress(min(done, total), max(total, done))
        report.remaining = self.queue.due_count()
        return report


def _only_known(batch: Batch, results: Sequence[ItemResult]) -> list[ItemResult]:
    # An answer about a payment that was not in the batch is ignored, never applied.
    wanted = {item.transaction_id for item in batch.items}
    return [r for r in results if r.transaction_id in wanted]
