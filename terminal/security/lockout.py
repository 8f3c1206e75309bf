"""One lock-out policy for every PIN the terminal checks (the merchant's and the technician's),
kept where a restart cannot reset it, authenticated so that the SD card alone cannot either.

The policy (:class:`LockoutPolicy`): wrong entries in a row are counted; the first
`free_failures - 1` cost nothing, the `free_failures`-th and every one after it lock, the k-th
of those (k = 0, 1, ...) for `base_lockout * 2^k` seconds, at most `max_lockout`; a right entry
starts the count again. While locked, no entry
is checked at all, the right one neither (otherwise a lock-out would only slow a guesser who
can tell "locked" from "wrong" apart). With the defaults (3 free, 30 s doubling to 1 h) a
guesser gets about 30 tries in the first day and 24 a day after that, per scope.

Scopes keep one caller's failures from locking another out. Each credential keeps its own
book (its own file, its own key), so a locked merchant PIN never locks the technician; inside
the merchant's book each API caller (the register, the kiosk page) has its own count, so a
hostile holder of the page's credential locks the page only, never the register.

The book is one JSON file next to its credential, written atomically (mode 0600) under an
exclusive lock (flock on a ``.lock`` file beside it, held for the whole check, so parallel
guesses are counted one after the other, never all against the same count), and carrying an
HMAC-SHA256 under a key derived from the terminal's device-bound key (the caller passes
`Keystore.data_key(...)` in: whoever has the SD card but not the device secret cannot forge
a record). It fails closed: a book that is missing, unreadable or whose MAC does not verify
is noticed as tampered, and replaced at once (so the deadline does not slide with every look)
by one in which every scope is locked for `max_lockout` and every further wrong entry costs
`max_lockout` again, until a right entry clears that scope. Deleting or editing the file thus
never gives a guesser more tries than waiting; a fresh book is written only when the
credential itself is set, which takes the technician. The caller audits the tamper.

Not covered, and said so in docs/security.md: rolling the book back to an earlier authentic
copy of itself (only a monotonic counter off the SD card, a TPM NV counter, would notice), and
anything done by a program replaced on the card.

Deadlines are wall-clock times (the clock is injected; `time.time` by default), since they
must survive a restart. A clock set back never makes a wait longer than `max_lockout`.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..domain.errors import TerminalError
from ..store.keys import atomic_write

__all__ = [
    "DEFAULT_POLICY",
    "KeySource",
    "LockoutBook",
    "LockoutError",
    "LockoutPolicy",
    "LockoutSession",
    "ScopeState",
    "derive_key",
    "resolve_key",
]

FORMAT: Final = "pipos-pin-lockout-1"
#: A caller's name as the API knows it: printable, bounded (the book stays small).
_SCOPE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")

#: The device-bound key, or a function giving it when first needed (a credential may be
#: checked before the keystore that holds the key is opened: terminal.service.provision).
KeySource = bytes | Callable[[], bytes]


class LockoutError(TerminalError):
    """The lock-out record cannot be written, or a scope name is invalid."""


@dataclass(frozen=True)
class LockoutPolicy:
    free_failures: int = 3
    base_lockout: int = 30
    max_lockout: int = 3600

    def __post_init__(self) -> None:
        if self.free_failures < 1 or self.base_lockout < 1 or self.max_lockout < self.base_lockout:
            raise ValueError("lock-out policy: free_failures >= 1, 1 <= base <= max")

    def lockout_for(self, failures: int) -> int:
        """Seconds locked after the `failures`-th wrong entry in a row (0: not locked)."""
        if failures < self.free_failures:
            return 0
        # The exponent is bounded so a huge count never builds a huge integer.
        return min(self.max_lockout, self.base_lockout << min(failures - self.free_failures, 40))

    @property
    def saturation(self) -> int:
        """The failure count from which every further wrong entry locks for `max_lockout`."""
        failures = self.free_failures
        while self.lockout_for(failures) < self.max_lockout:
            failures += 1
        return failures


DEFAULT_POLICY: Final = LockoutPolicy()


@dataclass(frozen=True)
class ScopeState:
    failures: int = 0
    locked_until: int = 0

    def retry_after(self, now: int, policy: LockoutPolicy) -> int:
        """Seconds until an entry is checked again (0: now)."""
        if now >= self.locked_until:
            return 0
        return min(self.locked_until - now, policy.max_lockout)

    def to_json(self) -> dict[str, int]:
        return {"failures": self.failures, "locked_until": self.locked_until}


def derive_key(device_key: bytes, label: str) -> bytes:
    """A 32-byte key for `label` from the device-bound key (HKDF-SHA256, RFC 5869: the info
    string keeps the PIN pepper and the lock-out MAC key of each credential apart)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"pipos pin v1:" + label.encode()
    ).derive(device_key)


def resolve_key(source: KeySource) -> bytes:
    key = source() if callable(source) else source
    if len(key) < 16:
        raise LockoutError("the device-bound key for the PIN credentials is too short")
    return key


def _state(value: Any) -> ScopeState:
    if not isinstance(value, dict) or set(value) != {"failures", "locked_until"}:
        raise ValueError("not a scope state")
    failures, until = value["failures"], value["locked_until"]
    if not all(type(v) is int and v >= 0 for v in (failures, until)):
        raise ValueError("not a scope state")
    return ScopeState(failures, until)


class LockoutBook:
    """The lock-out record at `path` for one credential (`purpose` names it in the MAC)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: KeySource,
        *,
        purpose: str,
        clock: Callable[[], float] = time.time,
        policy: LockoutPolicy = DEFAULT_POLICY,
    ) -> None:
        self.path = Path(path)
        self._key = key
        self.purpose = purpose
        self._clock = clock
        self.policy = policy

    @contextmanager
    def session(self, *, missing_ok: bool = False) -> Iterator[LockoutSession]:
        """The record, read and verified, under the book's exclusive lock until the end of the
        block (the caller checks its PIN inside it). `missing_ok`: the credential is being set
        for the first time, so no record yet is no tampering."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            mac_key = derive_key(resolve_key(self._key), "lockout:" + self.purpose)
            yield LockoutSession(self, mac_key, missing_ok=missing_ok)
        finally:
            os.close(fd)

    def now(self) -> int:
        return int(self._clock())


class LockoutSession:
    """One look at the book, under its lock. :attr:`tampered` says why the stored record was
    not trusted when this session was the one to notice it (it has then written the
    fail-closed record: every scope locked for the longest lock-out)."""

    def __init__(self, book: LockoutBook, mac_key: bytes, *, missing_ok: bool = False) -> None:
        self._book = book
        self._mac_key = mac_key
        self.policy = book.policy
        self.now = book.now()
        self.tampered: str | None = None
        #: The record was not there at all (a credential of an older format never had one).
        self.missing = False
        self.floor = ScopeState()
        self._scopes: dict[str, ScopeState] = {}
        try:
            raw = book.path.read_bytes()
        except FileNotFoundError:
            self.missing = True
            if not missing_ok:
                self._fail_closed("the lock-out record is missing")
            return
        except OSError as exc:
            self._fail_closed(f"the lock-out record is unreadable ({exc.strerror})")
            return
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or set(doc) != {
                "format",
                "purpose",
                "floor",
                "scopes",
                "mac",
            }:
                raise ValueError("unexpected fields")
            body = {k: v for k, v in doc.items() if k != "mac"}
            if not (
                isinstance(doc["mac"], str)
                and hmac.compare_digest(doc["mac"], self._mac(body))
                and doc["format"] == FORMAT
                and doc["purpose"] == book.purpose
                and isinstance(doc["scopes"], dict)
            ):
                raise ValueError("authentication failed")
            floor = _state(doc["floor"])
            scopes = {str(k): _state(v) for k, v in doc["scopes"].items()}
        except (ValueError, UnicodeDecodeError, TypeError):
            self._fail_closed("the lock-out record was altered (its authentication fails)")
            return
        self.floor, self._scopes = floor, scopes

    def _mac(self, body: Mapping[str, Any]) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._mac_key, canonical, sha256).hexdigest()

    def _fail_closed(self, why: str) -> None:
        self.tampered = why
        self.reset(ScopeState(self.policy.saturation, self.now + self.policy.max_lockout))

    def _write(self) -> None:
        body: dict[str, Any] = {
            "format": FORMAT,
            "purpose": self._book.purpose,
            "floor": self.floor.to_json(),
            "scopes": {k: v.to_json() for k, v in sorted(self._scopes.items())},
        }
        body["mac"] = self._mac(body)
        try:
            atomic_write(self._book.path, json.dumps(body, sort_keys=True, indent=1).encode())
        except OSError as exc:
            raise LockoutError(
                f"lock-out record {self._book.path}: cannot write ({exc.strerror})"
            ) from exc

    @staticmethod
    def _check_scope(scope: str) -> str:
        if not _SCOPE.fullmatch(scope):
            raise LockoutError(f"invalid lock-out scope {scope!r}")
        return scope

    def state(self, scope: str) -> ScopeState:
        return self._scopes.get(self._check_scope(scope), self.floor)

    def scopes(self) -> dict[str, ScopeState]:
        """Every scope with a state of its own (the others are at :attr:`floor`)."""
        return dict(self._scopes)

    def retry_after(self, scope: str) -> int:
        return self.state(scope).retry_after(self.now, self.policy)

    def fail(self, scope: str) -> ScopeState:
        """Count a wrong entry for `scope` (written before this returns)."""
        before = self.state(scope)
        failures = before.failures + 1
        lockout = self.policy.lockout_for(failures)
        after = ScopeState(failures, self.now + lockout if lockout else 0)
        self._scopes[scope] = after
        self._write()
        return after

    def succeed(self, scope: str) -> None:
        """A right entry for `scope`: its count starts again."""
        if self.state(scope) == ScopeState():
            return
        if self.floor == ScopeState():
            del self._scopes[scope]
        else:
            self._scopes[scope] = ScopeState()  # below a fail-closed floor: cleared for it only
        self._write()

    def set_state(self, scope: str, state: ScopeState) -> None:
        """Carry a state over (an older credential format's own count, migrated)."""
        self._scopes[self._check_scope(scope)] = state
        self._write()

    def reset(self, floor: ScopeState | None = None) -> None:
        """A new record: every scope at `floor` (no failures by default). Only for a credential
        being set, which is the technician's to do."""
        self.floor = floor or ScopeState()
        self._scopes = {}
        self._write()
