"""Short chaos run: a fleet of terminal processes selling through an outage, injected faults
and random SIGKILLs, then reconciled with the host's ledger (bench/fleet.py has the rules);
once over the pipos protocol, once over the ISO 8583 link.

The long run is `python -m bench fleet` (`--protocol iso8583`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.fleet import (
    FleetConfig,
    FleetReport,
    TerminalLog,
    _reconcile_terminal,
    host_key,
    run_fleet,
    terminal_view,
)

SHORT = FleetConfig(
    terminals=4,
    duration=14.0,
    outage_at=4.0,
    outage_for=3.5,
    kill_every=1.5,
    fault_every=0.5,
    seed=20240612,
)


def _assert_reconciled(report: FleetReport) -> None:
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


@pytest.mark.integration
def test_fleet_under_chaos_loses_doubles_and_leaves_nothing_unexplained(tmp_path: Path) -> None:
    _assert_reconciled(run_fleet(tmp_path, SHORT))


@pytest.mark.integration
def test_fleet_over_iso8583_loses_doubles_and_leaves_nothing_unexplained(tmp_path: Path) -> None:
    # The same chaos with the money messages on the ISO 8583 link: faults on its 0200, 0220
    # and 0400, the host process (both of its listeners) SIGKILLed.
    _assert_reconciled(run_fleet(tmp_path, replace(SHORT, protocol="iso8583")))


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


def test_iso8583_ledger_rows_are_read_in_the_terminals_terms() -> None:
    # The host keys its rows by its own dedup key and names them by RRN; mapped back, the
    # same rules hold, and a row the terminal never asked for still stands out.
    sent = host_key("0200", 7, "1202093000")
    keys = {sent: "auth-1", host_key("0200", 8, "1202093001"): "auth-2"}
    rrns = {"H1": "000000000001", "H2": "000000000002"}
    rows = [
        _row("H1", "approved", idempotency_key=sent),
        _row("H2", "reversed", idempotency_key=host_key("0200", 8, "1202093001")),
        _row("H3", "approved", idempotency_key=host_key("0200", 9, "1202093002")),
        _row("H4", "approved", idempotency_key=host_key("0220", 10, "1202093003"), offline_id="S4"),
    ]
    records = [
        _record("S1", "approved", idempotency_key="auth-1", host_ref="000000000001"),
        _record("S2", "declined", idempotency_key="auth-2", result="host_no_response"),
        _record("S4", "approved_offline"),
    ]
    log = TerminalLog(0, sales=[(0.0, "S1", "approved", "approved")])
    report = FleetReport(replace(SHORT, protocol="iso8583"))
    _reconcile_terminal("T1", log, records, terminal_view(rows, keys, rrns), report)
    assert report.settled == 2
    assert report.lost == []
    assert report.duplicated == []
    assert report.reversals == 1
    assert report.reversals_unmatched == []
    assert report.unexplained == ["T1:H3 sale approved"]
