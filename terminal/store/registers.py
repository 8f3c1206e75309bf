"""The cash registers paired with this terminal, and the one-time codes they pair with.

A register on another machine (a terminal bound beyond loopback) never gets the page's or a
printed token: it pairs once with a short code given to the merchant (printed by
``pipos registers pair``, or asked for by a register already paired) and is answered with a
token of its own
(32 random bytes, URL-safe base64), which names it in the audit log and which the
technician can revoke on its own. docs/api.md, "Pairing".

What is kept, in one SQLite file beside the journal (offline_queue.sqlite: 0600, WAL,
``synchronous=FULL``, each operation one transaction):

- a register: its name (unique among the registers not revoked, any case: a revoked one's
  name may be paired again), the SHA-256 of its token (the token itself is shown once, in
  the pairing's answer, and never stored), when it was paired, last seen (written at most
  once every :data:`SEEN_EVERY` seconds, so a busy register does not write at every
  request) and revoked;
- a pairing code: :data:`CODE_DIGITS` digits, kept as a salted SHA-256 only, valid
  :data:`CODE_LIFETIME` seconds, good for one pairing. One code is live at a time (a new
  one replaces the one before), and it takes :data:`CODE_TRIES` wrong tries in all, from
  every caller together, while it is valid: the fifth wrong one burns it. Guessing a code
  thus succeeds at most 5 times in a million per code the merchant asks for. (Hashing keeps
  the code off a copied file at a glance; a million codes are hashed in a second, so the
  defence is the short life, the single use and the tries, not the hash.)

The terminal's API and the technician's command (``pipos registers``) open the same file:
a code the command issues is taken by the running terminal at once, and a revocation
holds from the register's next request (every request reads its register's row).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from offline_queue.sqlite import Faults, SqliteFile

from ..domain.errors import TerminalError

__all__ = [
    "CODE_DIGITS",
    "CODE_LIFETIME",
    "CODE_TRIES",
    "FILE",
    "NAME_PATTERN",
    "SEEN_EVERY",
    "Authenticated",
    "CodeRefused",
    "IssuedCode",
    "NameTaken",
    "Paired",
    "PairedRegister",
    "RefusalReason",
    "RegisterNameError",
    "RegisterStore",
    "RegisterStoreError",
    "check_register_name",
    "normalise_code",
    "show_code",
]

#: The store's file name, in the terminal's data directory beside the journal.
FILE: Final = "registers.sqlite3"
#: A register's name: what the audit log and the technician's list call it.
NAME_PATTERN: Final = r"^[A-Za-z0-9 ._-]{1,32}$"
CODE_DIGITS: Final = 6
#: Seconds a pairing code is valid: long enough to type it at the register, short enough
#: that one seen over a shoulder is soon worthless.
CODE_LIFETIME: Final = 300.0
#: Wrong tries a code takes, from every caller together, before it is burned.
CODE_TRIES: Final = 5
#: Seconds between two writes of a register's last_seen_at.
SEEN_EVERY: Final = 60.0
#: Random bytes in a register's token.
TOKEN_BYTES: Final = 32
#: Codes used, burned, replaced or expired are kept this long (the technician's "why did it
#: not pair" is answered within minutes), then deleted when the next code is issued.
CODE_HISTORY: Final = 24 * 3600.0
SCHEMA_VERSION: Final = 1

_NAME = re.compile(NAME_PATTERN)
_LIVE: Final = "live"
_USED: Final = "used"
_BURNED: Final = "burned"
_REPLACED: Final = "replaced"


class RegisterStoreError(TerminalError):
    """The registers' file cannot be opened, read or written (damaged, disk full, newer)."""


class RegisterNameError(RegisterStoreError):
    """A register name that is not one (empty, too long, a character outside the set)."""

    #: A name the person typed: exit status 2 (terminal.cli.common.exit_status).
    bad_input = True


def check_register_name(name: str) -> str:
    """`name` if it is a valid register name, else RegisterNameError saying why."""
    if not _NAME.fullmatch(name) or name.strip() != name:
        raise RegisterNameError(
            f"register name {name[:40]!r}: 1 to 32 letters, digits, spaces, '.', '_' or '-', "
            "not starting or ending with a space (e.g. till-2)"
        )
    return name


def normalise_code(text: str) -> str | None:
    """The code's digits as typed ("123 456", "123456"), or None when it is not
    :data:`CODE_DIGITS` digits once spaces are taken out."""
    digits = text.replace(" ", "")
    if len(digits) != CODE_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    return digits


def show_code(code: str) -> str:
    """A code as it is printed for the merchant: two groups of three ("123 456")."""
    return f"{code[:3]} {code[3:]}"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _code_hash(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class PairedRegister:
    """A register as the technician's list shows it (never its token). Times are Unix
    seconds; `revoked_at` None while it may use the API."""

    name: str
    created_at: float
    last_seen_at: float | None
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A new pairing code: its digits (shown as :func:`show_code`) and when it expires."""

    code: str
    expires_at: float

    @property
    def shown(self) -> str:
        return show_code(self.code)


class RefusalReason(StrEnum):
    #: Not the live code (`CodeRefused.tries_left` wrong tries remain before it burns).
    WRONG = "wrong"
    #: The last code issued has expired unused.
    EXPIRED = "expired"
    #: No code waits: none issued, or the last one was used, burned or replaced.
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Paired:
    """The register is paired: `token` is its token, shown this once."""

    register: PairedRegister
    token: str


@dataclass(frozen=True, slots=True)
class CodeRefused:
    reason: RefusalReason
    tries_left: int = 0


@dataclass(frozen=True, slots=True)
class NameTaken:
    """The code was right, but a register not revoked has the name; the code still holds."""

    name: str


PairingOutcome = Paired | CodeRefused | NameTaken


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Whose token it is: a register's `name`, `revoked` or not."""

    name: str
    revoked: bool


class RegisterStore:
    """The paired registers and the pairing codes; thread-safe.

    `clock`: Unix seconds; `random_bytes(n)`: n random bytes (both injected: tests move the
    clock and fix the codes and tokens)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self._random = random_bytes
        self._lock = threading.Lock()
        self._file: SqliteFile | None = None

    # --- the file ----------------------------------------------------------------------

    def _open(self) -> SqliteFile:
        if self._file is None:
            db = SqliteFile(self.path, Faults("register store", RegisterStoreError))
            try:
                with db.connection() as conn:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RegisterStoreError(
                        f"register store {self.path} has schema {version}, newer than this "
                        f"software ({SCHEMA_VERSION})"
                    )
                if version < SCHEMA_VERSION:
                    with db.write() as conn:
                        conn.execute(
                            "CREATE TABLE IF NOT EXISTS registers (id INTEGER PRIMARY KEY, "
                            "name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, "
                            "created_at REAL NOT NULL, last_seen_at REAL, revoked_at REAL)"
                        )
                        # One register not revoked per name, whatever its case.
                        conn.execute(
                            "CREATE UNIQUE INDEX IF NOT EXISTS registers_active_name ON "
                            "registers (name COLLATE NOCASE) WHERE revoked_at IS NULL"
                        )
                        conn.execute(
                            "CREATE TABLE IF NOT EXISTS codes (id INTEGER PRIMARY KEY, "
                            "salt TEXT NOT NULL, code_hash TEXT NOT NULL, "
                            "created_at REAL NOT NULL, expires_at REAL NOT NULL, "
                            "wrong_tries INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL)"
                        )
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                db.close()
                raise
            self._file = db
        return self._file

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # --- codes -------------------------------------------------------------------------

    def issue_code(self) -> IssuedCode:
        """A new pairing code, valid :data:`CODE_LIFETIME` seconds; the code live before it
        no longer pairs. Committed before this returns (the running terminal takes it)."""
        # 8 random bytes reduced to 6 digits: the bias of the modulo is below 1e-13.
        code = f"{int.from_bytes(self._random(8), 'big') % 10**CODE_DIGITS:0{CODE_DIGITS}d}"
        salt = self._random(16).hex()
        with self._lock:
            db = self._open()
            now = self.clock()
            expires = now + CODE_LIFETIME
            with db.write() as conn:
                conn.execute("UPDATE codes SET state = ? WHERE state = ?", (_REPLACED, _LIVE))
                conn.execute("DELETE FROM codes WHERE created_at < ?", (now - CODE_HISTORY,))
                conn.execute(
                    "INSERT INTO codes (salt, code_hash, created_at, expires_at, state) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (salt, _code_hash(salt, code), now, expires, _LIVE),
                )
        return IssuedCode(code, expires)

    def pair(self, code: str, name: str) -> PairingOutcome:
        """Pair register `name` with `code` (its digits, :func:`normalise_code`): in one
        transaction the code is checked, the register stored and the code spent; or a wrong
        try counted (the :data:`CODE_TRIES`-th burns the code)."""
        check_register_name(name)
        digits = normalise_code(code)
        token = base64.urlsafe_b64encode(self._random(TOKEN_BYTES)).rstrip(b"=").decode("ascii")
        with self._lock:
            db = self._open()
            now = self.clock()
            with db.write() as conn:
                row = conn.execute(
                    "SELECT id, salt, code_hash, expires_at, wrong_tries, state FROM codes "
                    "ORDER BY id DESC LIMIT 1"
                ).fetchone()
                if row is None or str(row["state"]) != _LIVE:
                    return CodeRefused(RefusalReason.NONE)
                if float(row["expires_at"]) <= now:
                    return CodeRefused(RefusalReason.EXPIRED)
                given = _code_hash(str(row["salt"]), digits or "")
                if digits is None or not hmac.compare_digest(given, str(row["code_hash"])):
                    tries = int(row["wrong_tries"]) + 1
                    state = _BURNED if tries >= CODE_TRIES else _LIVE
                    conn.execute(
                        "UPDATE codes SET wrong_tries = ?, state = ? WHERE id = ?",
                        (tries, state, row["id"]),
                    )
                    return CodeRefused(RefusalReason.WRONG, max(0, CODE_TRIES - tries))
                taken = conn.execute(
                    "SELECT name FROM registers WHERE name = ? COLLATE NOCASE "
                    "AND revoked_at IS NULL",
                    (name,),
                ).fetchone()
                if taken is not None:
                    return NameTaken(str(taken["name"]))
                conn.execute(
                    "INSERT INTO registers (name, token_hash, created_at) VALUES (?, ?, ?)",
                    (name, _token_hash(token), now),
                )
                conn.execute("UPDATE codes SET state = ? WHERE id = ?", (_USED, row["id"]))
        return Paired(PairedRegister(name, now, None, None), token)

    # --- registers ---------------------------------------------------------------------

    def authenticate(self, token: str) -> Authenticated | None:
        """Whose `token` is (None: no register's), its last_seen_at brought up to date
        when it is older than :data:`SEEN_EVERY` seconds."""
        wanted = _token_hash(token)
        with self._lock:
            db = self._open()
            now = self.clock()
            with db.connection() as conn:
                row = conn.execute(
                    "SELECT id, name, last_seen_at, revoked_at FROM registers WHERE token_hash = ?",
                    (wanted,),
                ).fetchone()
            if row is None:
                return None
            revoked = row["revoked_at"] is not None
            seen = row["last_seen_at"]
            if not revoked and (seen is None or now - float(seen) >= SEEN_EVERY):
                with db.write() as conn:
                    conn.execute(
                        "UPDATE registers SET last_seen_at = ? WHERE id = ?", (now, row["id"])
                    )
            return Authenticated(str(row["name"]), revoked)

    def registers(self) -> list[PairedRegister]:
        """Every register paired, revoked ones too, in the order they were paired."""
        with self._lock:
            db = self._open()
            with db.connection() as conn:
                rows = conn.execute(
                    "SELECT name, created_at, last_seen_at, revoked_at FROM registers ORDER BY id"
                ).fetchall()
        return [_register(row) for row in rows]

    def revoke(self, name: str) -> PairedRegister | None:
        """Revoke the register `name` (any case) not yet revoked: its token is refused from
        its next request on. None when no such register is paired."""
        check_register_name(name)
        with self._lock:
            db = self._open()
            now = self.clock()
            with db.write() as conn:
                row = conn.execute(
                    "SELECT id FROM registers WHERE name = ? COLLATE NOCASE AND revoked_at IS NULL",
                    (name,),
                ).fetchone()
                if row is None:
                    return None
                conn.execute("UPDATE registers SET revoked_at = ? WHERE id = ?", (now, row["id"]))
                revoked = conn.execute(
                    "SELECT name, created_at, last_seen_at, revoked_at FROM registers WHERE id = ?",
                    (row["id"],),
                ).fetchone()
        return _register(revoked)


def _register(row: Any) -> PairedRegister:
    seen = row["last_seen_at"]
    revoked = row["revoked_at"]
    return PairedRegister(
        str(row["name"]),
        float(row["created_at"]),
        None if seen is None else float(seen),
        None if revoked is None else float(revoked),
    )
