"""The journal as the merchant's screens read it: the transaction list's search, date
filter and paging (one page at a time, newest first, with the cursor of the next); the open
batch's totals, which count approved sales and refunds only (never a voided sale, a void, a
decline, a cancel, nor an offline sale the bank declined after the fact); closing a batch,
which keeps offline sales still waiting open and stores the end-of-day report in the same
commit; the batch history, paged; and the schema 5 migration of a schema-4 journal."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from terminal.domain.records import (
    DECLINED_AFTER_THE_FACT,
    Kind,
    Method,
    State,
    TxnRecord,
    parse_search,
)
from terminal.store.journal import SCHEMA_VERSION, Journal
from tests.terminal.store.test_journal_revision import as_schema_5


def _at(day: int, hour: int = 12) -> str:
    return datetime(2026, 3, day, hour, 0, 0, tzinfo=UTC).isoformat(timespec="seconds")


def _txn(txn_id: str, amount: int, **fields: object) -> TxnRecord:
    values: dict[str, object] = {
        "id": txn_id,
        "kind": Kind.SALE,
        "state": State.APPROVED,
        "amount": amount,
        "currency": 978,
        "created_at": _at(1),
        "updated_at": _at(1),
        "brand": "VISA",
        "masked_pan": "476173******0010",
        "host_ref": f"H-{txn_id}",
    }
    values.update(fields)
    return TxnRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.sqlite3")


def _ids(records: list[TxnRecord]) -> list[str]:
    return [r.id for r in records]


def test_search_by_amount_last_digits_and_reference(journal: Journal) -> None:
    journal.insert(_txn("S1", 1234, external_ref="ECR-42", auth_code="A1B2C3"))
    journal.insert(_txn("S2", 4826, masked_pan="510510******5100"))
    journal.insert(_txn("S3", 5000, masked_pan="476173******4826", host_ref="RRN998877"))
    journal.insert(_txn("S4", 482600, masked_pan=""))

    def found(typed: str) -> list[str]:
        return _ids(journal.page(query=parse_search(typed, 2))[0])

    assert found("12.34") == found("12,34") == ["S1"]
    assert found("50") == ["S3"]  # 50.00
    # Four digits: the card's last 4 (S3), or the amount as the keypad (48.26) or in
    # whole units (4826.00) spells it.
    assert found("4826") == ["S4", "S3", "S2"]
    assert found("ecr-42") == found("ECR") == ["S1"]
    assert found("a1b2") == ["S1"]  # the authorisation code
    assert found("998877") == ["S3"]  # the bank's reference, digits as a reference
    assert found("") == ["S4", "S3", "S2", "S1"]
    # Not an amount of this currency, nothing it names: nothing, never an error.
    for typed in ("12.345", "0", "%", "'; DROP TABLE transactions; --", "ＥＣＲ"):
        assert found(typed) == [], typed
    assert len(journal.recent()) == 4


def test_date_filter_and_paging(journal: Journal) -> None:
    for day in range(1, 8):
        journal.insert(_txn(f"S{day}", 100 * day, created_at=_at(day, 23)))
    # Stored with another offset: the same instant compares the same.
    journal.insert(_txn("S-local", 900, created_at="2026-03-05T01:30:00+02:00"))

    def unix(day: int) -> int:
        return int(datetime(2026, 3, day, tzinfo=UTC).timestamp())

    records, cursor = journal.page(since=unix(3), until=unix(5))
    assert (_ids(records), cursor) == (["S-local", "S4", "S3"], None)

    first, cursor = journal.page(limit=3)
    assert _ids(first) == ["S-local", "S7", "S6"]
    assert cursor is not None
    second, cursor = journal.page(limit=3, before=cursor)
    assert _ids(second) == ["S5", "S4", "S3"]
    third, last = journal.page(limit=3, before=cursor)
    assert (_ids(third), last) == (["S2", "S1"], None)
    exact, none_left = journal.page(limit=2, before=cursor)
    assert (_ids(exact), none_left) == (["S2", "S1"], None)
    # Filters and paging together.
    page, _ = journal.page(limit=10, since=unix(6), query=parse_search("7", 2))
    assert _ids(page) == ["S7"]


def _offline(txn_id: str, amount: int, **fields: object) -> TxnRecord:
    return _txn(txn_id, amount, state=State.APPROVED_OFFLINE, offline_id=txn_id, **fields)


def _open_batch(journal: Journal) -> None:
    sale = journal.insert(_txn("S-online", 1000))
    journal.insert(_txn("R-1", 300, kind=Kind.REFUND, original_id=sale.id))
    voided = journal.insert(_txn("S-voided", 700))
    journal.insert(_txn("V-1", 700, kind=Kind.VOID, original_id=voided.id))
    journal.insert(_txn("S-declined", 1051, state=State.DECLINED, host_ref=""))
    journal.insert(_txn("S-cancelled", 400, state=State.CANCELLED, host_ref=""))
    journal.insert(_txn("R-declined", 100, kind=Kind.REFUND, state=State.DECLINED))
    journal.insert(_offline("S-sent", 1500, host_ref="O-1"))
    journal.insert(_offline("S-waiting", 800, host_ref=""))
    journal.insert(_offline("S-bank-no", 1551, host_ref="", reason=DECLINED_AFTER_THE_FACT))
    journal.insert(_txn("S-wallet", 1800, brand="ALIPAY", entry_mode="qr_wallet", masked_pan=""))
    journal.insert(_txn("S-mpm", 600, brand="WECHATPAY", method=Method.MERCHANT_QR))


def test_open_totals_count_approved_sales_and_refunds_only(journal: Journal) -> None:
    _open_batch(journal)
    lines = {line.brand: line for line in journal.open_totals()}
    visa = lines["VISA"]
    # The online sale, the sent and the waiting offline sales; not the voided one, the
    # decline, the cancel, nor the sale the bank declined after the fact.
    assert (visa.sales_count, visa.sales_amount) == (3, 1000 + 1500 + 800)
    assert (visa.refunds_count, visa.refunds_amount) == (1, 300)
    assert (visa.offline_count, visa.offline_amount) == (1, 800)  # still waiting only
    assert visa.method == "card"
    assert (lines["ALIPAY"].method, lines["WECHATPAY"].method) == ("code", "code")
    # What the bank can know: without the waiting sale.
    bank_side = {line.brand: line for line in journal.open_totals(waiting=False)}
    assert (bank_side["VISA"].sales_count, bank_side["VISA"].sales_amount) == (2, 2500)
    assert bank_side["VISA"].offline_count == 0


def test_close_batch_keeps_waiting_offline_sales_open_and_stores_the_report(
    journal: Journal, tmp_path: Path
) -> None:
    _open_batch(journal)
    report = {"batch_id": "B-1", "text": ["END OF DAY"], "lines": []}
    marked = journal.close_batch("B-1", _at(2), [{"brand": "visa"}], report)
    assert marked == 11  # every finished one but the sale still waiting in the queue
    waiting = journal.get("S-waiting")
    assert waiting is not None
    assert waiting.batch_id == ""
    left = journal.open_totals()
    assert [(line.brand, line.sales_count, line.offline_count) for line in left] == [("VISA", 1, 1)]
    journal.close()
    reopened = Journal(tmp_path / "journal.sqlite3")
    batch = reopened.batch("B-1")
    assert batch is not None
    assert (batch.report, batch.totals, batch.seq) == (report, [{"brand": "visa"}], 1)
    assert reopened.batch("B-2") is None


def test_batch_history_is_paged_newest_first(journal: Journal) -> None:
    for number in range(1, 6):
        journal.close_batch(f"B-{number}", _at(number), [], {"batch_id": f"B-{number}"})
    page = journal.batches(limit=2)
    assert [b.batch_id for b in page] == ["B-5", "B-4"]
    older = journal.batches(limit=2, before=page[-1].seq)
    assert [b.batch_id for b in older] == ["B-3", "B-2"]
    assert [b.batch_id for b in journal.batches(before=older[-1].seq)] == ["B-1"]


def test_a_schema_4_journal_keeps_its_batches_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX batches_seq")
    raw.execute("ALTER TABLE batches DROP COLUMN seq")
    raw.execute("ALTER TABLE batches DROP COLUMN report")
    as_schema_5(raw)
    for batch_id, day in (("B-old", 1), ("B-newer", 2)):
        raw.execute(
            "INSERT INTO batches VALUES (?, ?, ?)",
            (batch_id, _at(day), json.dumps([{"brand": "visa", "net_amount": day}])),
        )
    raw.execute("PRAGMA user_version = 4")
    raw.commit()
    raw.close()
    journal = Journal(path)
    old = journal.batches()
    assert [(b.batch_id, b.seq, b.report) for b in old] == [
        ("B-newer", 2, None),
        ("B-old", 1, None),
    ]
    assert old[0].totals == [{"brand": "visa", "net_amount": 2}]
    journal.close_batch("B-new", _at(3), [], {"batch_id": "B-new"})
    assert [b.batch_id for b in journal.batches(limit=1)] == ["B-new"]
    journal.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_refund_is_found_by_its_sale_reference_too(journal: Journal) -> None:
    sale = journal.insert(_txn("S1", 2000, external_ref="ECR-7"))
    refund = journal.insert(
        replace(_txn("R1", 500, kind=Kind.REFUND, original_id=sale.id), external_ref="ECR-7-R")
    )
    assert _ids(journal.page(query=parse_search("ecr-7", 2))[0]) == [refund.id, sale.id]
    assert _ids(journal.page(kind="refund")[0]) == [refund.id]
    assert _ids(journal.page(external_ref="ECR-7")[0]) == [sale.id]
