"""The journal's after-the-fact declines: offline sales the bank declined when they were
sent, listed for the "needs attention" filter, and the merchant's acknowledgement of them,
one commit that survives a reopen, covers only what was journalled before it, and gives no
transaction a new revision. A schema-3 journal gets the acknowledgement table by its own
migration step."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from terminal.domain.records import DECLINED_AFTER_THE_FACT, Kind, State, TxnRecord
from terminal.store.journal import SCHEMA_VERSION, Journal
from tests.terminal.store.test_journal_revision import as_schema_5


def _offline_sale(txn_id: str, *, declined: bool) -> TxnRecord:
    return TxnRecord(
        id=txn_id,
        kind=Kind.SALE,
        state=State.APPROVED_OFFLINE,
        amount=951,
        currency=978,
        created_at="2026-12-01T10:00:00+00:00",
        updated_at="2026-12-01T10:00:00+00:00",
        offline_id=txn_id,
        host_ref="O1" if not declined else "",
        reason=DECLINED_AFTER_THE_FACT if declined else "",
    )


def test_declines_are_listed_and_acknowledged_durably(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    declined = journal.insert(_offline_sale("S1", declined=True))
    sent = journal.insert(_offline_sale("S2", declined=False))
    waiting = journal.insert(replace(_offline_sale("S3", declined=False), host_ref=""))
    assert [r.id for r in journal.declined_after_the_fact()] == ["S1"]
    assert [r.offline_status for r in (declined, sent, waiting)] == [
        "declined",
        "sent",
        "waiting",
    ]
    revisions = {r.id: r.revision for r in journal.recent()}
    assert journal.acknowledge_declines("2026-12-01T11:00:00+00:00") == 1
    assert journal.declined_after_the_fact(unacknowledged=True) == []
    assert {r.id: r.revision for r in journal.recent()} == revisions
    journal.close()

    journal = Journal(path)
    assert journal.declined_after_the_fact(unacknowledged=True) == []
    later = journal.insert(_offline_sale("S4", declined=True))
    assert journal.declined_after_the_fact(unacknowledged=True) == [later]
    assert [r.id for r in journal.declined_after_the_fact()] == ["S4", "S1"]
    journal.close()


def test_schema_3_journal_gets_the_acknowledgement_table(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE decline_acknowledgements")
    # What schema 5 added to the batches is not in a schema-3 journal either.
    raw.execute("DROP INDEX batches_seq")
    raw.execute("ALTER TABLE batches DROP COLUMN seq")
    raw.execute("ALTER TABLE batches DROP COLUMN report")
    as_schema_5(raw)
    raw.execute("PRAGMA user_version = 3")
    raw.commit()
    raw.close()
    journal = Journal(path)
    journal.insert(_offline_sale("S1", declined=True))
    assert journal.acknowledge_declines("2026-12-01T11:00:00+00:00") == 1
    journal.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
