"""Short chaos run: a fleet of terminal processes selling through an outage, injected faults
and random SIGKILLs, then reconciled with the host's ledger (bench/fleet.py has the rules).

The long run is `python -m bench fleet`.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.fleet import FleetConfig, FleetReport, TerminalLog, _reconcile_terminal, run_fleet

SHORT = FleetConfig(
    terminals=4,
    duration=14.0,
    outage_at=4.0,
    outage_for=3.5,
    kill_every=1.5,
    fault_every=0.5,
    seed=20240612,
)


@pytest.mark.integration
def test_fleet_under_chaos_loses_doubles_and_leaves_nothing_unexplained(tmp_path: Path) -> None:
    report = run_fleet(tmp_path, SHORT)
    print("\n" + report.summary())
    # The chaos really happened ...
    assert report.kills >= 3
    assert report.host_outages == 1
    assert report.faults_hit >= 3
    assert report.approved_offline > 0, "sales during the outage are approved offline"
    assert report.approved_online > 0
    # ... and every payment shown approved is settled exactly once, nothing else is.
    assert report.lost == []
    assert report.duplicated == []
    assert report.unexplained == []
    assert report.reversals_unmatched == []
    assert report.problems() == []
    assert report.settled >= report.shown_approved
    # The outage left a backlog, and it was all delivered (during the run, or at the final
    # settle; `python -m bench fleet` reports how long the drain took).
    assert report.backlog > 0
    assert report.queue_left == 0


def _record(txn_id: str, state: str, **kw: object) -> SimpleNamespace:
    base = {"kind": "sale", "amount": 100, "idempotency_key": "", "host_ref": "", "result": ""}
    return SimpleNamespace(id=txn_id, state=state, **(base | kw))


def _row(ref: str, status: str, **kw: object) -> dict[str, object]:
    base = {"kind": "sale", "amount": 100, "idempotency_key": None, "offline_id": None}
    return {"ref": ref, "status": status} | base | kw


def test_reconciliation_catches_lost_doubled_and_unexplained_payments() -> None:
    # The checker itself: it must fail a run that lost, doubled or invented money.
    log = TerminalLog(0, sales=[(0.0, "S1", "approved", "approved"), (0, "S9", "approved", "-")])
    records = [
        _record("S1", "approved", idempotency_key="k1", host_ref="A1"),
        _record("S2", "approved_offline"),
        _record("S3", "declined", idempotency_key="k3", result="host_no_response"),
    ]
    rows = [
        _row("A1", "approved", idempotency_key="k1"),
        _row("A1b", "approved", idempotency_key="k1"),  # the same authorisation twice
        _row("O2", "approved", offline_id="S2", amount=999),  # settled for another amount
        _row("A3", "approved", idempotency_key="k3"),  # lost response never reversed
        _row("A4", "reversed", idempotency_key="k4"),  # a reversal nobody asked for
    ]
    report = FleetReport(SHORT)
    _reconcile_terminal("T1", log, records, rows, report)
    assert report.lost == [
        "T1:S9 shown approved, journal says otherwise",
        "T1:S2 settled with a different amount",
    ]
    assert report.duplicated == ["T1:S1"]
    assert sorted(report.unexplained) == [
        "T1:A1b sale approved",
        "T1:A3 sale approved",
        "T1:O2 sale approved",
    ]
    assert report.reversals_unmatched == ["T1:A4"]
