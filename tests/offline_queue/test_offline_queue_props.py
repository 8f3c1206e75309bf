"""Property test: any interleaving of sales, uploads, lost answers and crashes (reopen) keeps
every payment exactly once, and never makes the host process a payment twice.

The model host here is deliberately stricter than the real one: it deduplicates only by the
batch's Idempotency-Key, not by item, so the queue alone must guarantee that a payment is never
sent as a new payment twice (the real host's per-item check is a second line of defence).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from offline_queue import (
    Batch,
    CardData,
    ItemOutcome,
    ItemResult,
    OfflinePayment,
    OfflineQueue,
    State,
    UplinkUnavailableError,
)

KEY = bytes(32)


class StrictHost:
    def __init__(self) -> None:
        self.processed: Counter[str] = Counter()
        self.answers: dict[str, tuple[tuple[str, ...], list[ItemResult]]] = {}

    def upload(
        self, batch: Batch, *, lose_answer: bool, retry: frozenset[str]
    ) -> Sequence[ItemResult]:
        ids = tuple(i.transaction_id for i in batch.items)
        if batch.idempotency_key in self.answers:
            first_ids, results = self.answers[batch.idempotency_key]
            assert first_ids == ids, "same idempotency key sent with different items"
        else:
            results = []
            for i in batch.items:
                if i.transaction_id in retry:
                    results.append(ItemResult(i.transaction_id, ItemOutcome.RETRY))
                    continue
                self.processed[i.transaction_id] += 1
                outcome = ItemOutcome.DECLINED if i.amount % 7 == 0 else ItemOutcome.ACCEPTED
                results.append(
                    ItemResult(i.transaction_id, outcome, host_ref="H" + i.transaction_id)
                )
            self.answers[batch.idempotency_key] = (ids, results)
        if lose_answer:
            raise UplinkUnavailableError("answer lost")
        return results


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "q.sqlite3"
        self.now = 1_700_000_000
        self.queue = OfflineQueue.open(self.path, KEY, clock=lambda: self.now)
        self.host = StrictHost()
        self.approved: list[str] = []
        self.n = 0

    def teardown(self) -> None:
        self.queue.close()
        self.dir.cleanup()

    @rule(amount=st.integers(1, 100))
    def sale(self, amount: int) -> None:
        txid = f"t{self.n}"
        self.n += 1
        p = OfflinePayment(txid, amount, 978, CardData(pan="4761739001010119"), self.now)
        assert self.queue.enqueue(p).stored
        self.approved.append(txid)

    @rule(
        size=st.integers(1, 5),
        lose=st.booleans(),
        crash_before_record=st.booleans(),
        retry_mask=st.integers(0, 31),
    )
    def upload(self, size: int, lose: bool, crash_before_record: bool, retry_mask: int) -> None:
        batch = self.queue.claim_batch(size)
        if batch is None:
            return
        retry = frozenset(
            i.transaction_id for k, i in enumerate(batch.items) if retry_mask >> k & 1
        )
        try:
            results = self.host.upload(batch, lose_answer=lose, retry=retry)
        except UplinkUnavailableError as exc:
            self.queue.record_attempt_failed(batch, str(exc))
            return
        if crash_before_record:
            return  # the answer arrived, then power was lost before it was recorded
        self.queue.record_results(batch, results, retry_at=self.now)

    @rule()
    def crash_and_restart(self) -> None:
        self.queue.close()
        self.queue = OfflineQueue.open(self.path, KEY, clock=lambda: self.now)

    @rule(seconds=st.integers(0, 100))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds

    @invariant()
    def nothing_lost_nothing_doubled(self) -> None:
        rows = {p.transaction_id: p for p in self.queue.list_payments()}
        assert sorted(rows) == sorted(self.approved)
        assert all(c == 1 for c in self.host.processed.values())
        for txid, p in rows.items():
            if p.state in (State.ACCEPTED, State.DECLINED):
                assert self.host.processed[txid] == 1
            assert (p.state is State.SENDING) == (p.batch_id is not None)

    @precondition(lambda self: self.n > 0)
    @rule()
    def drain_fully(self) -> None:
        for _ in range(100):
            batch = self.queue.claim_batch(10)
            if batch is None:
                break
            self.queue.record_results(
                batch, self.host.upload(batch, lose_answer=False, retry=frozenset()), retry_at=0
            )
        assert self.queue.due_count() == 0
        assert sum(self.host.processed.values()) == len(self.approved)


QueueMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestQueueMachine = QueueMachine.TestCase
