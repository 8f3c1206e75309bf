"""Every database file 0600 whatever the umask (issue 16, item 9): the offline queue, the
journal, the simulated host's ledger (all through offline_queue.sqlite), their ``-wal`` and
``-shm``, and the audit log. Before, under umask 022 they were 0644 (the audit log 0640):
anyone on the device could copy the queue's sealed card data and the merchant's journal.
(Configuration files are tests/security/test_config_modes.py's.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from offline_queue import OfflineQueue
from offline_queue.errors import QueueError
from offline_queue.sqlite import Faults, SqliteFile
from terminal.store.audit import AuditLog, verify_audit_log
from terminal.store.journal import Journal
from tests.offline_queue.test_offline_queue import KEY, payment

UMASKS = [0o022, 0o000]


@pytest.fixture(params=UMASKS, ids=lambda m: f"umask {m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(path: Path) -> dict[str, int]:
    """The database and every companion SQLite made for it, by name."""
    return {p.name: _mode(p) for p in sorted(path.parent.iterdir()) if p.name.startswith(path.name)}


def test_the_queue_and_its_wal_and_shm_are_created_0600(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "offline_queue.sqlite3"
    with OfflineQueue.open(path, KEY) as q:
        q.enqueue(payment("a"))
        modes = _modes(path)
    assert set(modes) == {path.name, path.name + "-wal", path.name + "-shm"}
    assert set(modes.values()) == {0o600}, {k: oct(v) for k, v in modes.items()}


def test_the_journal_is_created_0600(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    try:
        modes = _modes(path)
    finally:
        journal.close()
    assert path.name + "-wal" in modes
    assert set(modes.values()) == {0o600}, {k: oct(v) for k, v in modes.items()}


def test_any_pipos_database_is_created_0600(tmp_path: Path, umask: int) -> None:
    # The simulated host's ledger and anything else opened through the one helper.
    path = tmp_path / "any.sqlite3"
    with SqliteFile(path, Faults("test file", QueueError)) as file, file.write() as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    assert _mode(path) == 0o600


def test_a_looser_database_an_older_pipos_left_is_tightened(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "offline_queue.sqlite3"
    OfflineQueue.open(path, KEY).close()
    # As SQLite made them under umask 022 (an empty -journal is not a hot one).
    for name in (path.name, path.name + "-wal", path.name + "-shm", path.name + "-journal"):
        (tmp_path / name).touch()
        (tmp_path / name).chmod(0o644)
    with OfflineQueue.open(path, KEY) as q:
        q.enqueue(payment("a"))
        modes = _modes(path)
    assert set(modes.values()) == {0o600}, {k: oct(v) for k, v in modes.items()}


def test_a_read_only_look_changes_no_mode(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    path.chmod(0o640)
    SqliteFile(path, Faults("journal", QueueError), read_only=True).close()
    assert _mode(path) == 0o640  # diagnostics change nothing (the next writer tightens it)


def test_the_audit_log_is_created_0600_and_an_older_one_tightened(
    tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, clock=lambda: 1_700_000_000.0)
    log.record("provisioned", terminal_id="T1")
    assert _mode(path) == 0o600
    path.chmod(0o640)  # what pipos created before
    log.record("queue_exported", count=1)
    assert _mode(path) == 0o600
    assert verify_audit_log(path).count == 2
