"""The offline sales the journal still holds as waiting in the offline queue are selected by
the journal itself, however many newer transactions there are (the checkout asks the queue
about each after a sync: an older one the bank got is never left unmarked). Real SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terminal.domain.records import DECLINED_AFTER_THE_FACT, Kind, State, TxnRecord
from terminal.store.journal import Journal

WHEN = "2026-03-01T17:55:02+00:00"


def _sale(txn_id: str, state: State = State.APPROVED, **fields: Any) -> TxnRecord:
    return TxnRecord(
        id=txn_id,
        kind=Kind.SALE,
        state=state,
        amount=1000,
        currency=978,
        created_at=WHEN,
        updated_at=WHEN,
        **fields,
    )


def test_waiting_offline_sales_are_found_behind_any_number_of_newer_ones(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        waiting = journal.insert(_sale("S-old", State.APPROVED_OFFLINE, offline_id="S-old"))
        journal.insert(_sale("S-sent", State.APPROVED_OFFLINE, offline_id="S-sent", host_ref="H-1"))
        journal.insert(
            _sale(
                "S-declined",
                State.APPROVED_OFFLINE,
                offline_id="S-declined",
                reason=DECLINED_AFTER_THE_FACT,
            )
        )
        for n in range(520):
            journal.insert(_sale(f"S-{n:04d}", host_ref=f"H-{n}"))
        newer = journal.insert(_sale("S-new", State.APPROVED_OFFLINE, offline_id="S-new"))
        assert waiting.id not in {r.id for r in journal.recent(limit=500)}
        assert [r.id for r in journal.waiting_offline()] == [waiting.id, newer.id]
    finally:
        journal.close()
