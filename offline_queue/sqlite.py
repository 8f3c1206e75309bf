"""One way to keep an SQLite file: the offline queue, the terminal's journal, the host's ledger.

Every pipos database is opened by :class:`SqliteFile`, so all of them keep the same
durability rules (DESIGN.md, "Durability first"):

- WAL journal and ``synchronous=FULL``: every commit fsyncs the WAL, so what a commit
  returned survives a crash or a power cut (https://www.sqlite.org/pragma.html#pragma_synchronous);
- one busy timeout, :data:`BUSY_TIMEOUT`: a writer waits that long for another connection's
  write lock, then fails with the caller's "busy" error;
- autocommit connections (``isolation_level=None``): the sqlite3 module opens no transaction
  behind the caller's back. A write is :meth:`SqliteFile.write`: ``BEGIN IMMEDIATE`` takes the
  write lock up front (no read-to-write upgrade, so two writers never deadlock), ``COMMIT``
  when the block ends, ``ROLLBACK`` when it raises;
- the integrity check before anything is written: a damaged file is neither migrated nor
  written to, and the caller may refuse a file that is not its own before it is (``vet``);
- owner-only files: the database is created 0600 whatever the umask (and an existing looser
  one, its ``-wal``, ``-shm`` and ``-journal`` tightened) before SQLite opens it; SQLite gives
  the ``-wal`` and ``-shm`` it creates the main file's mode, so they are 0600 too;
- for a file that holds card data, ``secure_delete`` (``SqliteFile(..., secure_delete=True)``):
  SQLite zeroes what a delete or an update frees, and :meth:`SqliteFile.checkpoint` copies the
  WAL into the main file and truncates it, so no old copy of a page survives in either;
- sqlite3's exceptions stop here: each is translated into the caller's own (:class:`Faults`),
  with the file's path in the message (``raise QueueBusyError(...) from exc``).

    journal = SqliteFile(path, Faults("transaction journal", JournalError))
    with journal.write() as conn:
        conn.execute("INSERT ...")  # committed and fsynced when the block ends

Diagnostics open a file without changing it: ``SqliteFile(path, faults, read_only=True)``
sets no pragma, creates nothing, and cannot write.

The module lives in `offline_queue`, the project's durable-storage package, because the
terminal and the simulated host may both import it (ARCHITECTURE.md); it needs the stdlib and
the project's root error only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

from emv.errors import PiposError

__all__ = ["BUSY_TIMEOUT", "CHECKPOINT_WAIT", "FILE_MODE", "Faults", "SqliteFile"]

#: Seconds a connection waits for another one's lock before the caller's "busy" error: long
#: enough to outwait a queue export or another process's migration, so an approved payment
#: is not refused its commit for a moment's contention.
BUSY_TIMEOUT: Final = 10.0

#: Every pipos database and its companions: owner read and write only (they hold payments,
#: the journal, the host's ledger; nobody else on the device has a reason to read them).
FILE_MODE: Final = 0o600
#: The files SQLite keeps next to a database (WAL mode, and the rollback journal of a file
#: last opened in another mode).
_COMPANIONS: Final = ("-wal", "-shm", "-journal")

#: Seconds :meth:`SqliteFile.checkpoint` waits for readers to leave the WAL. Short on
#: purpose: a TRUNCATE checkpoint holds the write lock while it waits, and an approved payment
#: must not wait behind it; a checkpoint that finds a reader is simply owed and retried.
CHECKPOINT_WAIT: Final = 0.2

#: One of the caller's exception classes (or any callable taking the message).
Raise = Callable[[str], PiposError]

RowFactory = Callable[[sqlite3.Cursor, tuple[Any, ...]], object]


@dataclass(frozen=True)
class Faults:
    """The caller's exceptions for the faults of its file, and how its messages name the file.

    `error` is for every fault without its own class: disk full, I/O error, read-only file,
    a file that cannot be opened, a constraint the caller's SQL broke.
    """

    name: str
    error: Raise
    busy: Raise | None = None
    """Locked by another connection for longer than the busy timeout (default: `error`)."""
    corrupt: Raise | None = None
    """Damaged, or not an SQLite database at all (default: `error`)."""
    advice: str = ""
    """What the person in front of it should do with a damaged file; ends its message."""


_BUSY: Final = "busy"
_CORRUPT: Final = "corrupt"
_OTHER: Final = "error"
_DAMAGED: Final = "the file is damaged or not an SQLite database"

#: SQLite's primary result codes (https://www.sqlite.org/rescode.html): the fault each is,
#: and what it means to the person reading the message.
_RESULT_CODES: Final[dict[int, tuple[str, str]]] = {
    sqlite3.SQLITE_BUSY: (_BUSY, "database is locked by another process"),
    sqlite3.SQLITE_LOCKED: (_BUSY, "database is locked by another process"),
    sqlite3.SQLITE_CORRUPT: (_CORRUPT, _DAMAGED),
    sqlite3.SQLITE_NOTADB: (_CORRUPT, _DAMAGED),
    sqlite3.SQLITE_FULL: (_OTHER, "the disk is full"),
    sqlite3.SQLITE_IOERR: (_OTHER, "the storage failed to read or write"),
    sqlite3.SQLITE_READONLY: (_OTHER, "the file or its folder is read-only"),
    sqlite3.SQLITE_CANTOPEN: (_OTHER, "cannot open the file"),
}


class SqliteFile:
    """One SQLite database file and its one connection, shared by threads under `lock`.

    Opening checks the file (``PRAGMA quick_check``, or ``integrity_check`` with
    ``check="full"``), lets `vet` refuse it, then switches on foreign keys (when asked), WAL
    and ``synchronous=FULL``. Any fault on the way closes the connection and raises the
    caller's exception.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        faults: Faults,
        *,
        busy_timeout: float = BUSY_TIMEOUT,
        foreign_keys: bool = False,
        row_factory: RowFactory | None = sqlite3.Row,
        check: Literal["quick", "full"] | None = "quick",
        vet: Callable[[SqliteFile], None] | None = None,
        read_only: bool = False,
        secure_delete: bool = False,
    ) -> None:
        self.path = Path(path)
        self.faults = faults
        self.read_only = read_only
        self.busy_timeout = busy_timeout
        self.lock = threading.RLock()
        try:
            if read_only:
                target, uri = f"{self.path.absolute().as_uri()}?mode=ro", True
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _owner_only(self.path)
                target, uri = str(self.path), False
            self.conn = sqlite3.connect(
                target,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
            )
        except OSError as exc:
            raise faults.error(f"{faults.name} {self.path}: cannot open ({exc})") from exc
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        try:
            with self.connection() as conn:
                conn.row_factory = row_factory
                if check is not None:
                    self._refuse_damaged(full=check == "full")
                if vet is not None:
                    vet(self)
                if not read_only:
                    if foreign_keys:
                        conn.execute("PRAGMA foreign_keys = ON")
                    if secure_delete:
                        # ON, not FAST: FAST leaves freed overflow and freelist pages as they
                        # were, and a large sealed payload lives on overflow pages.
                        conn.execute("PRAGMA secure_delete = ON")
                    conn.execute("PRAGMA journal_mode = WAL")
                    # FULL: the WAL is fsynced at every commit.
                    conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            self.conn.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteFile({str(self.path)!r})"

    def _refuse_damaged(self, *, full: bool) -> None:
        pragma = "integrity_check" if full else "quick_check"
        rows = [str(row[0]) for row in self.conn.execute(f"PRAGMA {pragma}").fetchall()]
        if rows != ["ok"]:
            shown = "; ".join(rows[:5])
            raise self._fault(_CORRUPT, f"failed the SQLite {pragma} ({shown})")

    # --- use ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE ... COMMIT, ROLLBACK when the block raises.

        The caller's own exceptions leave the block unchanged (after the rollback); sqlite3's
        are translated. Not re-entrant: a caller that nests writes counts its own depth.
        """
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.translate(exc) from exc
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                # A fault such as a full disk may have rolled the transaction back already.
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error as rollback:
                        exc.add_note(f"and the ROLLBACK failed: {rollback}")
                if isinstance(exc, sqlite3.Error):
                    raise self.translate(exc) from exc
                raise

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, outside any transaction of its own, sqlite3's
        exceptions translated: for reads, and for statements that must run outside one."""
        with self.lock:
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise self.translate(exc) from exc

    def checkpoint(self, *, wait: float = CHECKPOINT_WAIT) -> bool:
        """Copy the whole WAL into the database file and truncate the WAL to zero bytes
        (``PRAGMA wal_checkpoint(TRUNCATE)``); True when done.

        False when a reader (another connection, another process) still reads from the WAL
        after `wait` seconds: the frames it may need cannot be dropped yet, so old page copies
        stay in the WAL until a later checkpoint succeeds. The caller keeps it owed.
        """
        with self.lock:
            if self.read_only:
                return False
            try:
                self.conn.execute(f"PRAGMA busy_timeout = {max(0, int(wait * 1000))}")
                try:
                    row = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    self.conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            except sqlite3.Error as exc:
                if _code(exc) in _BUSY_CODES:
                    return False  # another writer or a checkpoint of its own: owed
                raise self.translate(exc) from exc
            # (busy, frames in the WAL, frames checkpointed); -1s when not in WAL mode.
            return row is not None and int(row[0]) == 0

    def translate(self, exc: sqlite3.Error) -> PiposError:
        """The caller's exception for `exc`, with the path and what the fault means."""
        kind, meaning = _RESULT_CODES.get(_code(exc), (_OTHER, ""))
        return self._fault(kind, f"{meaning} ({exc})" if meaning else str(exc))

    def _fault(self, kind: str, detail: str) -> PiposError:
        faults = self.faults
        message = f"{faults.name} {self.path}: {detail}"
        if kind == _BUSY and faults.busy is not None:
            return faults.busy(message)
        if kind == _CORRUPT:
            if faults.advice:
                message += f"; {faults.advice}"
            if faults.corrupt is not None:
                return faults.corrupt(message)
        return faults.error(message)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def __enter__(self) -> SqliteFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_BUSY_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of `exc` (-1 when sqlite3 gave none)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return -1 if code is None else int(code) & 0xFF


def _owner_only(path: Path) -> None:
    """Create `path` 0600 if it does not exist, and take group and other bits off it and its
    companions if they have any, before SQLite opens it.

    Left to itself SQLite creates a database 0644, whatever the umask (its default
    permissions; measured here under umask 022 and 000). ``os.open``'s mode is filtered by the
    umask, ``fchmod``'s is not, so a new file gets exactly 0600. SQLite creates the ``-wal``
    and ``-shm`` with the main file's permissions (its unix VFS, ``findCreateFileMode``), so
    they follow; those an older pipos left looser are tightened here. An existing file keeps
    its owner bits (one made read-only on purpose stays so).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        new = True
    except FileExistsError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        new = False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return  # a directory or a device: SQLite's own open says what is wrong with it
        mode = stat.S_IMODE(info.st_mode)
        if (new and mode != FILE_MODE) or mode & 0o077:
            os.fchmod(fd, FILE_MODE if new else mode & 0o700)
    finally:
        os.close(fd)
    for suffix in _COMPANIONS:
        companion = path.with_name(path.name + suffix)
        try:
            mode = stat.S_IMODE(companion.stat().st_mode)
            if mode & 0o077:
                companion.chmod(mode & 0o700)
        except FileNotFoundError:
            continue
