"""offline_queue.sqlite, on real SQLite files: every pipos database is opened alike (WAL,
synchronous=FULL, one busy timeout), a second writer waits and then gets the caller's "busy"
error, a write that raises leaves nothing, a damaged file and a full disk give the caller's
errors with the path, and a file opened read-only is never written."""

from __future__ import annotations

import ast
import re
import sqlite3
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

import offline_queue.sqlite
from emv.errors import PiposError
from offline_queue import OfflineQueue, QueueBusyError, QueueCorruptError, QueueError
from offline_queue.sqlite import BUSY_TIMEOUT, Faults, SqliteFile
from simulator.errors import SimulatorError
from simulator.host.ledger import Store
from terminal.store.journal import Journal, JournalError

FAULTS = Faults(
    "test store",
    QueueError,
    busy=QueueBusyError,
    corrupt=QueueCorruptError,
    advice="keep the file",
)


def _pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
    return (
        conn.execute("PRAGMA journal_mode").fetchone()[0],
        conn.execute("PRAGMA synchronous").fetchone()[0],
        conn.execute("PRAGMA busy_timeout").fetchone()[0],
    )


def _with_table(path: Path) -> SqliteFile:
    file = SqliteFile(path, FAULTS)
    with file.write() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return file


def test_the_pragmas_read_back(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "a.sqlite3"  # the folder is made
    with SqliteFile(path, FAULTS) as file:
        assert _pragmas(file.conn) == ("wal", 2, int(BUSY_TIMEOUT * 1000))  # 2: FULL
        assert file.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 0
        assert file.conn.isolation_level is None  # no transaction behind the caller's back
        assert not file.conn.in_transaction
    with SqliteFile(path, FAULTS, foreign_keys=True, busy_timeout=0.5) as file:
        assert file.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert _pragmas(file.conn)[2] == 500
    # WAL is the file's own mode from now on: another program sees it.
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_journal_queue_and_host_ledger_open_their_files_alike(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    queue = OfflineQueue.open(tmp_path / "queue.sqlite3", b"k" * 32)
    ledger = Store(tmp_path / "acquirer.sqlite3")
    try:
        expected = ("wal", 2, int(BUSY_TIMEOUT * 1000))
        assert _pragmas(journal._file.conn) == expected
        assert _pragmas(queue._file.conn) == expected
        assert _pragmas(ledger._file.conn) == expected
        assert queue._file.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        journal.close()
        queue.close()
        ledger.close()


def test_a_second_writer_waits_the_busy_timeout_then_gets_the_busy_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.sqlite3"
    first = _with_table(path)
    second = SqliteFile(path, FAULTS, busy_timeout=0.3)
    with first.write() as conn:
        conn.execute("INSERT INTO t (v) VALUES ('first')")
        started = time.monotonic()
        with (
            pytest.raises(QueueBusyError, match="locked by another process") as caught,
            second.write(),
        ):
            pass  # BEGIN IMMEDIATE waits for the lock, in vain
        waited = time.monotonic() - started
    assert waited >= 0.25
    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert not second.conn.in_transaction
    # The first writer's row is committed; the second's never was.
    assert [r["v"] for r in second.conn.execute("SELECT v FROM t")] == ["first"]
    first.close()
    second.close()


def test_a_second_writer_gets_the_lock_once_the_first_commits(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    first = _with_table(path)
    second = SqliteFile(path, FAULTS, busy_timeout=5.0)
    holding = threading.Event()

    def hold() -> None:
        with first.write() as conn:
            conn.execute("INSERT INTO t (v) VALUES ('first')")
            holding.set()
            time.sleep(0.3)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(5)
    started = time.monotonic()
    with second.write() as conn:
        conn.execute("INSERT INTO t (v) VALUES ('second')")
    waited = time.monotonic() - started
    thread.join()
    assert 0.1 < waited < 5.0
    assert [r["v"] for r in second.conn.execute("SELECT v FROM t ORDER BY id")] == [
        "first",
        "second",
    ]
    first.close()
    second.close()


def test_a_write_that_raises_is_rolled_back_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    file = _with_table(path)

    # The caller's own exception leaves unchanged, after the rollback.
    def change_then_refuse(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (id, v) VALUES (1, 'gone')")
        raise ValueError("changed my mind")

    def change_then_break_a_constraint(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (id, v) VALUES (2, 'gone too')")
        conn.execute("INSERT INTO t (id, v) VALUES (3, NULL)")

    with pytest.raises(ValueError, match="changed my mind"), file.write() as conn:
        change_then_refuse(conn)
    # sqlite3's exception is translated into the caller's, the path in its message.
    with (
        pytest.raises(QueueError, match="NOT NULL constraint failed") as caught,
        file.write() as conn,
    ):
        change_then_break_a_constraint(conn)
    assert type(caught.value) is QueueError
    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert not file.conn.in_transaction
    file.close()
    # Nothing of either write reached the file, as another connection reads it.
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    other.close()


def test_a_file_that_is_not_a_database_gives_the_corrupt_error_with_its_path(
    tmp_path: Path,
) -> None:
    path = tmp_path / "garbage.sqlite3"
    garbage = b"this is not sqlite at all " * 200
    path.write_bytes(garbage)
    with pytest.raises(QueueCorruptError, match="damaged or not an SQLite database") as caught:
        SqliteFile(path, FAULTS)
    assert str(path) in str(caught.value)
    assert str(caught.value).endswith("; keep the file")
    assert path.read_bytes() == garbage  # not written to
    # Each store keeps its own exception type.
    with pytest.raises(JournalError, match=re.escape(str(path))):
        Journal(path)
    with pytest.raises(QueueCorruptError, match=re.escape(str(path))):
        OfflineQueue.open(path, b"k" * 32)
    with pytest.raises(SimulatorError, match=re.escape(str(path))):
        Store(path)
    assert path.read_bytes() == garbage


def test_damaged_pages_fail_the_check_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    file = _with_table(path)
    with file.write() as conn:
        conn.execute("CREATE INDEX t_v ON t (v)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i:05}",) for i in range(3000)])
    file.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    file.close()
    data = bytearray(path.read_bytes())
    for offset in range(2 * 4096 + 16, min(len(data), 8 * 4096), 7):  # scribble on pages 3-8
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(QueueCorruptError, match=r"failed the SQLite (quick|integrity)_check"):
        SqliteFile(path, FAULTS)
    with pytest.raises(QueueCorruptError, match="failed the SQLite integrity_check"):
        SqliteFile(path, FAULTS, check="full")
    assert path.read_bytes() == bytes(data)


def test_a_full_disk_gives_the_callers_error_and_the_write_is_rolled_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.sqlite3"
    file = _with_table(path)
    pages = file.conn.execute("PRAGMA page_count").fetchone()[0]
    file.conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # a disk with two pages left
    with pytest.raises(QueueError, match="the disk is full") as caught, file.write() as conn:
        conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 100_000,))
    assert type(caught.value) is QueueError
    assert not file.conn.in_transaction
    assert file.conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    file.close()


def test_a_file_opened_read_only_cannot_be_written(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    with _with_table(path) as file, file.write() as conn:
        conn.execute("INSERT INTO t (v) VALUES ('kept')")
    with SqliteFile(path, FAULTS, read_only=True) as ro:
        assert [r["v"] for r in ro.conn.execute("SELECT v FROM t")] == ["kept"]
        with pytest.raises(QueueError, match="read-only") as caught, ro.write() as conn:
            conn.execute("INSERT INTO t (v) VALUES ('refused')")
        assert str(path) in str(caught.value)
        assert not ro.conn.in_transaction
        with pytest.raises(QueueError, match="read-only"), ro.connection() as conn:
            conn.execute("DELETE FROM t")
    with SqliteFile(path, FAULTS) as file:
        assert [r["v"] for r in file.conn.execute("SELECT v FROM t")] == ["kept"]
    # Read-only creates nothing: a missing file stays missing.
    missing = tmp_path / "missing" / "b.sqlite3"
    with pytest.raises(QueueError, match="cannot open") as refused:
        SqliteFile(missing, FAULTS, read_only=True)
    assert str(missing) in str(refused.value)
    assert not missing.parent.exists()


def test_the_callers_vet_refuses_a_file_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with closing(sqlite3.connect(path)) as raw, raw:  # another program's database
        raw.execute("CREATE TABLE theirs (a)")

    def not_ours(file: SqliteFile) -> None:
        raise QueueCorruptError(f"{file.path}: not ours")

    with pytest.raises(QueueCorruptError, match="not ours"):
        SqliteFile(path, FAULTS, vet=not_ours)
    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # left as it was


def test_the_helper_needs_only_the_stdlib_and_the_root_error() -> None:
    """The simulator's contract lets simulator.host.ledger import this module and nothing else
    of offline_queue; the module in turn must not reach the rest of the package."""
    source = Path(offline_queue.sqlite.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module or "")
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names and name != "emv.errors"
    }
    assert outside == set()
    assert issubclass(QueueError, PiposError)


def test_checkpoint_truncates_the_wal_or_says_a_reader_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with SqliteFile(path, FAULTS, secure_delete=True) as file:
        assert file.conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        with file.write() as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.execute("INSERT INTO t VALUES (randomblob(3000))")
        wal = tmp_path / "c.sqlite3-wal"
        assert wal.stat().st_size > 0
        with closing(sqlite3.connect(path, isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM t").fetchone()
            with file.write() as conn:
                conn.execute("DELETE FROM t")
            started = time.monotonic()
            assert file.checkpoint(wait=0.05) is False  # the reader's snapshot needs the WAL
            assert time.monotonic() - started < 2  # and a writer is not kept waiting long
            reader.execute("COMMIT")
        assert file.checkpoint() is True
        assert wal.stat().st_size == 0
        # The busy timeout is the file's own again after the checkpoint's short wait.
        assert file.conn.execute("PRAGMA busy_timeout").fetchone()[0] == int(BUSY_TIMEOUT * 1000)
    with SqliteFile(path, FAULTS, read_only=True) as ro:
        assert ro.checkpoint() is False  # a read-only look writes nothing
