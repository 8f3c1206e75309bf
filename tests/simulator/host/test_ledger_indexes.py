"""The simulated host's hot lookups use an index (EXPLAIN QUERY PLAN), so they cost the
same on a ledger of a million rows as on an empty one: a plan is checked, never a time."""

from __future__ import annotations

from pathlib import Path

from simulator.host.ledger import Store


def _plan(store: Store, sql: str, params: tuple[object, ...]) -> str:
    with store.transaction() as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(r[-1]) for r in rows)


def test_an_offline_payments_duplicate_check_after_a_unit_swap_uses_an_index(
    tmp_path: Path,
) -> None:
    # simulator.host.service offline_batch: the same payment sent again under the
    # replacement unit's terminal id is found by its offline id.
    store = Store(tmp_path / "acquirer.sqlite3")
    try:
        plan = _plan(
            store,
            "SELECT ref, status FROM transactions WHERE offline_id = ? AND merchant_id = ? "
            "AND kind = 'offline_sale' AND amount = ? AND currency = ? AND card_token = ?",
            ("T-1", "M-1", 100, 978, "tok"),
        )
        assert "USING INDEX transactions_offline_id" in plan, plan
        same_unit = _plan(
            store,
            "SELECT ref, status FROM transactions WHERE terminal_id = ? AND offline_id = ?",
            ("T1", "x"),
        )
        assert "USING INDEX" in same_unit, same_unit
    finally:
        store.close()
