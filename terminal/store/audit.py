"""The audit log of security-relevant events: append-only JSON lines, hash-chained.

Events: provisioning, enrolment, key rotation, parameter changes, technician PIN failures and
lock-outs, queue export and import, refunds. No card data: a value that looks like a PAN is
masked (first 6 + last 4) before it is written, and callers pass only ids and amounts.

Each line carries the SHA-256 of the previous line's hash and its own content::

    {"at": 1735689600, "detail": {...}, "event": "provisioned", "hash": "...", "prev": "...",
     "seq": 1}

hash = SHA-256(prev || canonical JSON of the line without "hash"), so editing, removing or
reordering a line breaks the chain from that line on, and :func:`verify_audit_log` says
where. (A chain alone cannot show that the *last* lines were cut off; the sequence number
and `pipos doctor`'s record of the last hash it saw narrow that down.)

Writers append under an exclusive lock (flock) with O_APPEND and fsync each line, so two
processes (the service and a technician's command) never interleave or fork the chain.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from emv.pan import mask_pan

from ..domain.errors import TerminalError
from ..domain.logging_setup import redact

__all__ = ["FILE_MODE", "GENESIS", "AuditCheck", "AuditError", "AuditLog", "verify_audit_log"]

GENESIS: Final = "0" * 64
#: Owner read and write only: who did what on the terminal is nobody else's to read.
FILE_MODE: Final = 0o600
_PAN_LIKE: Final = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


class AuditError(TerminalError):
    """The audit log cannot be written or read."""


def _canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _chain(prev: str, record: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev.encode("ascii") + _canonical(record)).hexdigest()


def _scrub(value: Any) -> Any:
    """Mask anything that looks like a card number, at any depth."""
    if isinstance(value, str):
        # Track 2 and Luhn-valid PANs via the log redactor, then any long digit run at all.
        return _PAN_LIKE.sub(lambda m: mask_pan(m.group(0)), redact(value))
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _scrub(str(value))


@dataclass(frozen=True)
class AuditCheck:
    ok: bool
    count: int
    last_hash: str
    problem: str = ""
    line: int | None = None


class AuditLog:
    """Append security events to `path`. Cheap to construct; opens the file per event."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._clock = clock

    def record(self, event: str, *, actor: str = "system", **detail: Any) -> dict[str, Any]:
        """Append one event; durable (fsynced) when this returns. Returns the written line."""
        if not event or not event.replace("_", "").isalnum():
            raise AuditError(f"audit event name {event!r}: letters, digits and _ only")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise AuditError(f"audit log {self.path}: cannot open ({exc.strerror})") from exc
        try:
            # The open's mode is filtered by the umask, fchmod's is not: 0600 whatever the
            # umask, and a log an older pipos created 0640 tightened at its next event.
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev = self._tail(fd)
            record: dict[str, Any] = {
                "seq": seq + 1,
                "at": int(self._clock()),
                "event": event,
                "actor": _scrub(actor),
                "detail": _scrub(detail),
                "prev": prev,
            }
            record["hash"] = _chain(prev, record)
            data = _canonical(record) + b"\n"
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            raise AuditError(f"audit log {self.path}: cannot write ({exc.strerror})") from exc
        finally:
            os.close(fd)
        return record

    @staticmethod
    def _tail(fd: int) -> tuple[int, str]:
        """The last line's sequence number and hash (reads backwards from the end)."""
        size = os.lseek(fd, 0, os.SEEK_END)
        if size == 0:
            return 0, GENESIS
        chunk = 4096
        data = b""
        pos = size
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            data = os.pread(fd, step, pos) + data
            if data.rstrip(b"\n").count(b"\n") >= 1:
                break
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            record = json.loads(last)
            return int(record["seq"]), str(record["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(
                "audit log: the last line is damaged; keep the file for inspection and start "
                "a new one (move it aside)"
            ) from exc

    def events(self) -> Iterator[dict[str, Any]]:
        """Every recorded event, oldest first (not verified: use verify_audit_log)."""
        try:
            with self.path.open("rb") as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)
        except FileNotFoundError:
            return


def verify_audit_log(path: str | os.PathLike[str]) -> AuditCheck:
    """Walk the chain; report the first line that does not follow from the one before."""
    p = Path(path)
    try:
        lines = p.read_bytes().splitlines()
    except FileNotFoundError:
        return AuditCheck(True, 0, GENESIS)
    except OSError as exc:
        return AuditCheck(False, 0, GENESIS, f"cannot read ({exc.strerror})")
    prev = GENESIS
    count = 0
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            claimed = record.pop("hash")
        except (ValueError, KeyError, AttributeError, TypeError):
            return AuditCheck(False, count, prev, "line is not an audit record", number)
        if record.get("prev") != prev:
            return AuditCheck(
                False, count, prev, "chain broken: a line before it was changed or removed", number
            )
        if record.get("seq") != count + 1:
            return AuditCheck(False, count, prev, "sequence number out of order", number)
        if _chain(prev, record) != claimed:
            return AuditCheck(False, count, prev, "line content was altered", number)
        prev = claimed
        count += 1
    return AuditCheck(True, count, prev)
