"""A pre-authorisation's held, captured and released amounts are derived by the journal from
its own approval and its changes' records, in the same commit as the record that changes
them, never written from a copy (as a sale's refunded amount is); the totals count a
capture as a sale of its amount and nothing else of a hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from terminal.domain.records import Kind, State, TxnRecord
from terminal.store.journal import Journal, JournalError


def _record(
    txn_id: str, kind: Kind, *, original: str = "", amount: int = 1000, brand: str = "VISA"
) -> TxnRecord:
    return TxnRecord(
        id=txn_id,
        kind=kind,
        original_id=original,
        state=State.IN_PROGRESS,
        amount=amount,
        currency=978,
        created_at="2026-12-01T10:00:00+00:00",
        updated_at="2026-12-01T10:00:00+00:00",
        brand=brand,
    )


def _hold(journal: Journal, amount: int = 5000) -> TxnRecord:
    return journal.update(
        journal.insert(_record("P1", Kind.PREAUTH, amount=amount)), state="approved"
    )


def test_the_hold_is_its_approval_plus_approved_increments(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    started = journal.insert(_record("P1", Kind.PREAUTH, amount=5000))
    assert started.authorised_amount == 0  # nothing held before the bank says so
    held = journal.update(started, state="approved")
    assert held.authorised_amount == 5000
    increment = journal.insert(_record("I1", Kind.INCREMENT, original="P1", amount=2000))
    assert journal.get("P1") == held  # started, it changes nothing (not even the revision)
    approved = journal.update(increment, state="approved")
    after = journal.get("P1")
    assert after is not None
    assert after.authorised_amount == 7000
    assert after.revision == approved.revision + 1  # the same commit, numbered after it
    declined = journal.insert(_record("I2", Kind.INCREMENT, original="P1", amount=300))
    journal.update(declined, state="declined")
    assert journal.get("P1").authorised_amount == 7000  # type: ignore[union-attr]
    journal.close()


def test_a_capture_captures_and_releases_the_rest_a_release_releases(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    hold = _hold(journal)
    capture = journal.insert(_record("C1", Kind.CAPTURE, original="P1", amount=3000))
    failed = journal.update(capture, state="failed", outcome_unknown=True)
    assert journal.get("P1").captured_amount == 0  # type: ignore[union-attr]
    journal.update(failed, state="approved", outcome_unknown=False)
    after = journal.get("P1")
    assert after is not None
    assert (after.authorised_amount, after.captured_amount, after.released) == (5000, 3000, True)
    # A stale copy of the hold written again cannot undo the capture.
    journal.update(hold, reason="an old copy")
    assert journal.get("P1").captured_amount == 3000  # type: ignore[union-attr]
    changes: dict[str, Any]
    for changes in ({"authorised_amount": 0}, {"captured_amount": 0}, {"released": False}):
        with pytest.raises(JournalError, match="derived"):
            journal.update(hold, **changes)
    other = journal.update(journal.insert(_record("P2", Kind.PREAUTH)), state="approved")
    release = journal.insert(_record("L1", Kind.RELEASE, original="P2", amount=1000))
    journal.update(release, state="approved")
    released = journal.get(other.id)
    assert released is not None
    assert (released.captured_amount, released.released) == (0, True)
    journal.close()


def test_totals_count_a_capture_as_a_sale_and_nothing_else_of_a_hold(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    _hold(journal, 5000)
    for txn_id, kind, amount in (
        ("I1", Kind.INCREMENT, 1000),
        ("C1", Kind.CAPTURE, 4500),
    ):
        journal.update(
            journal.insert(_record(txn_id, kind, original="P1", amount=amount)), state="approved"
        )
    journal.update(journal.insert(_record("P2", Kind.PREAUTH, amount=900)), state="approved")
    journal.update(
        journal.insert(_record("L2", Kind.RELEASE, original="P2", amount=900)), state="approved"
    )
    journal.update(journal.insert(_record("S1", Kind.SALE, amount=250)), state="approved")
    [line] = journal.open_totals()
    assert (line.sales_count, line.sales_amount, line.refunds_count) == (2, 4750, 0)
    journal.close()
