"""The ISO 8583 link's counters: the systems trace audit number (STAN, field 11) and the
batch number (field 60 of the reconciliation), durable across restarts.

ISO 8583:1987 field 11: the STAN identifies a message from this terminal until the answer
is matched to it, and an acquirer refuses or mismatches a repeated one, so a STAN is never
given twice, not after a restart or power cut, not to two threads at once. Each number is
taken in its own committed transaction (offline_queue.sqlite: WAL, ``synchronous=FULL``)
before the message that carries it is sent: a crash between the commit and the send only
skips a number, which acquirers accept. After its maximum (the profile's `stan_max`,
999999 for an n6 field) it goes back to 1.

The batch number counts the terminal's reconciliations (0500) the same way, 1 to 999999.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Final

from offline_queue.sqlite import Faults, SqliteFile

from ..domain.errors import TerminalError

__all__ = ["BATCH", "FILE", "STAN", "LinkCounterError", "LinkCounters"]

#: The file's name, in the terminal's data directory.
FILE: Final = "iso8583-counters.sqlite3"
STAN: Final = "stan"
BATCH: Final = "batch"
_SCHEMA_VERSION: Final = 1
_BATCH_MAX: Final = 999999


class LinkCounterError(TerminalError):
    """The counters' file cannot be opened, read or written."""


class LinkCounters:
    """Thread-safe; the file is shared safely by several processes too (each number is
    taken under SQLite's write lock)."""

    def __init__(self, path: str | os.PathLike[str], *, stan_max: int = 999999) -> None:
        if not 1 <= stan_max <= 999999999999:
            raise LinkCounterError(f"a STAN's maximum is 1 to 999999999999, not {stan_max}")
        self.path = Path(path)
        self.stan_max = stan_max
        self._lock = threading.Lock()
        self._file = SqliteFile(self.path, Faults("ISO 8583 link counters", LinkCounterError))
        try:
            with self._file.write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > _SCHEMA_VERSION:
                    raise LinkCounterError(
                        f"ISO 8583 link counters {self.path} have schema {version}, newer than "
                        f"this software ({_SCHEMA_VERSION})"
                    )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, "
                    "value INTEGER NOT NULL)"
                )
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            self._file.close()
            raise

    def _take(self, name: str, maximum: int) -> int:
        with self._lock, self._file.write() as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
            last = int(row[0]) if row else 0
            value = last + 1 if 0 < last + 1 <= maximum else 1
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
            return value

    def next_stan(self) -> int:
        """A STAN no earlier message of this terminal carried since the last wrap."""
        return self._take(STAN, self.stan_max)

    def next_batch(self) -> int:
        return self._take(BATCH, _BATCH_MAX)

    def peek(self, name: str) -> int:
        """The last number given (0: none yet)."""
        with self._file.connection() as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._file.close()
