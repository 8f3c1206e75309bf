"""The audit log: append-only, hash-chained lines; tampering shows; no card data."""

from __future__ import annotations

import json
from pathlib import Path

from terminal.store.audit import AuditLog, verify_audit_log


def _log(tmp_path: Path) -> AuditLog:
    ticks = iter(range(1_700_000_000, 1_700_001_000))
    return AuditLog(tmp_path / "audit.log", clock=lambda: float(next(ticks)))


def test_events_chain_and_verify(tmp_path: Path) -> None:
    log = _log(tmp_path)
    first = log.record("provisioned", actor="technician", terminal_id="T1")
    second = log.record("key_rotated", old_key_id="a", new_key_id="b")
    assert first["prev"] == "0" * 64
    assert second["prev"] == first["hash"]
    assert [e["seq"] for e in log.events()] == [1, 2]
    check = verify_audit_log(log.path)
    assert check.ok
    assert check.count == 2
    assert check.last_hash == second["hash"]


def test_an_edited_line_is_found(tmp_path: Path) -> None:
    log = _log(tmp_path)
    for i in range(4):
        log.record("refund", amount=100 + i)
    lines = log.path.read_text().splitlines()
    lines[1] = lines[1].replace('"amount":101', '"amount":9999')
    log.path.write_text("\n".join(lines) + "\n")
    check = verify_audit_log(log.path)
    assert not check.ok
    assert check.line == 2
    assert "altered" in check.problem


def test_a_removed_line_breaks_the_chain(tmp_path: Path) -> None:
    log = _log(tmp_path)
    for i in range(3):
        log.record("refund", amount=i + 1)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    check = verify_audit_log(log.path)
    assert not check.ok
    assert check.line == 2
    assert "chain broken" in check.problem


def test_card_numbers_never_reach_the_log(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.record(
        "refund",
        note="card 4761739001010119 refunded",
        pan="5413330089010434",
        nested={"track2": "4761739001010119D28122011234567890"},
    )
    text = log.path.read_text()
    assert "4761739001010119" not in text
    assert "5413330089010434" not in text
    assert "476173******0119" in text
    assert verify_audit_log(log.path).ok


def test_appends_survive_reopening(tmp_path: Path) -> None:
    _log(tmp_path).record("provisioned")
    AuditLog(tmp_path / "audit.log").record("parameters_updated", new_version=2)
    records = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    assert [r["seq"] for r in records] == [1, 2]
    assert verify_audit_log(tmp_path / "audit.log").ok


def test_a_missing_log_is_empty_and_valid(tmp_path: Path) -> None:
    check = verify_audit_log(tmp_path / "none.log")
    assert check.ok
    assert check.count == 0
