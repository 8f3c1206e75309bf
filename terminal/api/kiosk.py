"""The checkout page's credential: earned by the kiosk, never handed out in the HTML.

The page used to carry a full API token in a ``<meta>`` tag; any origin that could load
``/`` (a DNS-rebinding page) read it. Now the kiosk on the device proves it can read a file
that only the terminal's user can read, and gets a cookie that no other origin can read or
send:

* on start the terminal writes a fresh random one-time code to ``DATA_DIR/kiosk-code``
  (mode 0600, written atomically); a new code replaces it after each use and whenever it
  expires (``CODE_TTL``), so the launcher always finds a live one;
* the launcher (``pipos kiosk``) reads it and opens Chromium on
  ``http://127.0.0.1:8700/kiosk?code=...``;
* ``GET /kiosk`` checks the code (digests compared in constant time; valid once, until it
  expires), sets an HttpOnly, SameSite=Strict session cookie (:data:`COOKIE`) and redirects
  to ``/``; the page then calls the API with that cookie (fetch and EventSource send it on
  same-origin requests only).

Sessions are kept as SHA-256 digests only, in memory and in ``DATA_DIR/kiosk-sessions``
(0600), so the kiosk's page keeps working across a restart of the terminal (systemd's
``Restart=``, an upgrade) without a technician; at most :data:`MAX_SESSIONS` are kept, the
oldest dropped first. A stolen copy of the files holds no usable code (it is replaced at the
next start) and no usable session (digests only).

A session does not last: it ends after :data:`SESSION_IDLE` without a request (the open
page's event stream counts as use, so only a closed or abandoned page goes idle) and, used or
not, :data:`SESSION_MAX_AGE` after the kiosk earned it. A cookie that leaked (cookies are not
scoped by port: a server on another loopback port the kiosk's browser is sent to receives
it) is thus worth a day at most. The kiosk then shows how to open it again, and ``pipos
kiosk`` earns a new session with the code that is always waiting in the file. The times are
wall-clock (they must survive a restart); a session whose times lie ahead of the clock (the
clock was set back) is dropped rather than trusted: the kiosk earns a new one. The last use
is written to the file at most every :data:`_USE_WRITE_INTERVAL` seconds (the SD card is not
written at every request), so a restart may end a session up to that much early.

The code in Chromium's command line is visible to other users' ``ps`` for as long as the
browser runs, but it is spent by the page's first load, so it opens nothing afterwards.

No FastAPI here: ``pipos kiosk`` reads the code file without loading the web stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..domain.errors import ConfigurationError
from ..store.keys import atomic_write

__all__ = [
    "CODE_FILE",
    "CODE_TTL",
    "COOKIE",
    "MAX_SESSIONS",
    "SESSIONS_FILE",
    "SESSION_IDLE",
    "SESSION_MAX_AGE",
    "KioskCodes",
    "kiosk_url",
    "read_kiosk_code",
]

#: The one-time code's file name in the terminal's data directory.
CODE_FILE: Final = "kiosk-code"
#: The digests of the page sessions handed out, beside it.
SESSIONS_FILE: Final = "kiosk-sessions"
#: The page's session cookie.
COOKIE: Final = "pipos_page"
#: How long a code stays valid (seconds): a code printed in a banner or left in a log is dead
#: soon even when nobody used it.
CODE_TTL: Final = 600.0
#: Page sessions kept (each use of a code makes one); the oldest goes first.
MAX_SESSIONS: Final = 8
#: A page session ends after this long (seconds) without a request: a shop closed overnight
#: with the kiosk's browser closed opens it again in the morning.
SESSION_IDLE: Final = 8 * 3600.0
#: ... and this long after the kiosk earned it, however much it is used.
SESSION_MAX_AGE: Final = 24 * 3600.0
#: A session's last use is written to the sessions file when the copy there is older than
#: this (seconds), not at every request.
_USE_WRITE_INTERVAL: Final = 900.0
#: How far ahead of the clock a stored time may be and still be trusted (seconds): a clock
#: stepped back by more than this ends every session.
_CLOCK_SLACK: Final = 300.0
#: The sessions file's format (the first one, a bare list of digests, had no times: its
#: sessions are dropped, so a session older than this version never outlives its limits).
_SESSIONS_FORMAT: Final = "pipos-kiosk-sessions-2"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass
class _Session:
    digest: bytes
    created: float  # wall-clock seconds: when the kiosk earned it
    used: float  # the last request that carried it
    stored_use: float  # `used` as the sessions file has it


_DIGEST_SIZE: Final = hashlib.sha256().digest_size


class KioskCodes:
    """The current one-time code (written to `code_path`) and the page sessions it bought.

    `clock` (monotonic seconds) decides a code's expiry, `wall_clock` (seconds since the
    epoch, since they outlive the process) a session's; `token` makes codes and session
    tokens (all injected, so tests choose time and randomness). `idle` and `max_age`: a
    session's limits (:data:`SESSION_IDLE`, :data:`SESSION_MAX_AGE`).
    """

    def __init__(
        self,
        code_path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        token: Callable[[], str] = lambda: secrets.token_urlsafe(24),
        ttl: float = CODE_TTL,
        idle: float = SESSION_IDLE,
        max_age: float = SESSION_MAX_AGE,
    ) -> None:
        self.code_path = code_path
        self.sessions_path = code_path.with_name(SESSIONS_FILE)
        self._clock = clock
        self._wall = wall_clock
        self._token = token
        self._ttl = ttl
        self._idle = idle
        self._max_age = max_age
        self._lock = threading.Lock()
        self._code: bytes | None = None
        self._expires = 0.0
        self._sessions: list[_Session] = self._load_sessions()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the code -----------------------------------------------------------------------

    def issue(self) -> str:
        """A new code, replacing the current one (which stops working) in memory and in the
        file. Returns it."""
        with self._lock:
            return self._issue()

    def _issue(self) -> str:
        code = self._token()
        self.code_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.code_path, (code + "\n").encode(), mode=0o600)
        self._code = _digest(code)
        self._expires = self._clock() + self._ttl
        return code

    def refresh(self) -> bool:
        """Replace the code if it has expired (True when it did)."""
        with self._lock:
            if self._clock() < self._expires:
                return False
            self._issue()
            return True

    def redeem(self, code: str) -> str | None:
        """A new page session's token for a valid `code`, else None. A valid code works once:
        a new one replaces it at once; an expired one is replaced too, so that the launcher
        finds a live code when it is run again."""
        with self._lock:
            expired = self._clock() >= self._expires
            right = self._code is not None and hmac.compare_digest(_digest(code), self._code)
            if not right and not expired:
                return None
            self._issue()
            if expired:
                return None
            session = self._token()
            now = self._wall()
            self._drop_ended(now)
            earned = _Session(_digest(session), now, now, now)
            self._sessions = [*self._sessions, earned][-MAX_SESSIONS:]
            self._save_sessions()
            return session

    # --- sessions -----------------------------------------------------------------------

    def session_valid(self, session: str) -> bool:
        """Whether `session` is one this terminal handed out and has not ended (digests
        compared in constant time, every one of them). A valid session's idle time starts
        again: this is a use."""
        wanted = _digest(session)
        with self._lock:
            now = self._wall()
            self._drop_ended(now)
            found: _Session | None = None
            for known in self._sessions:
                if hmac.compare_digest(wanted, known.digest):
                    found = known
            if found is None:
                return False
            found.used = now
            if now - found.stored_use >= _USE_WRITE_INTERVAL:
                self._save_sessions()
            return True

    def _ended(self, item: _Session, now: float) -> bool:
        ahead = now + _CLOCK_SLACK
        return (
            item.created > ahead
            or item.used > ahead
            or now - item.created >= self._max_age
            or now - item.used >= self._idle
        )

    def _drop_ended(self, now: float) -> None:
        """Forget the sessions that have ended (and say so in the file)."""
        kept = [item for item in self._sessions if not self._ended(item, now)]
        if len(kept) != len(self._sessions):
            self._sessions = kept
            self._save_sessions()

    def _load_sessions(self) -> list[_Session]:
        try:
            info = self.sessions_path.stat()
            text = self.sessions_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigurationError(
                f"kiosk sessions {self.sessions_path}: cannot read ({exc.strerror}); "
                "delete it (the kiosk then opens with a new code)"
            ) from exc
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"kiosk sessions {self.sessions_path}: readable by group or others; chmod 600 it"
            )
        try:
            doc = json.loads(text)
            if isinstance(doc, list):
                return []  # the first format: sessions without times, not kept
            if doc["format"] != _SESSIONS_FORMAT:
                raise ValueError("unknown format")
            sessions = [
                _Session(
                    bytes.fromhex(item["digest"]),
                    float(item["created"]),
                    float(item["used"]),
                    float(item["used"]),
                )
                for item in doc["sessions"]
            ]
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(
                f"kiosk sessions {self.sessions_path}: not a kiosk sessions file; delete it "
                "(the kiosk then opens with a new code)"
            ) from exc
        now = self._wall()
        return [
            item
            for item in sessions
            if len(item.digest) == _DIGEST_SIZE and not self._ended(item, now)
        ][-MAX_SESSIONS:]

    def _save_sessions(self) -> None:
        for item in self._sessions:
            item.stored_use = item.used
        doc = {
            "format": _SESSIONS_FORMAT,
            "sessions": [
                {"digest": item.digest.hex(), "created": int(item.created), "used": int(item.used)}
                for item in self._sessions
            ],
        }
        atomic_write(self.sessions_path, json.dumps(doc).encode(), mode=0o600)

    # --- replacing an expired code in the background ------------------------------------

    def start(self, interval: float | None = None) -> str:
        """Issue the first code and keep replacing it when it expires (a daemon thread
        checking every `interval` seconds, default a tenth of the code's life). Returns the
        first code."""
        code = self.issue()
        period = interval if interval is not None else max(self._ttl / 10, 0.05)

        def run() -> None:
            while not self._stop.wait(period):
                self.refresh()

        self._thread = threading.Thread(target=run, name="kiosk-code", daemon=True)
        self._thread.start()
        return code

    def close(self) -> None:
        """Stop replacing codes and remove the code file: a stopped terminal leaves no code
        behind (a new one is written at the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._code = None
            self._expires = 0.0
            with contextlib.suppress(FileNotFoundError):
                self.code_path.unlink()


def read_kiosk_code(path: Path) -> str:
    """The current one-time code from the terminal's code file (what ``pipos kiosk`` does)."""
    try:
        info = path.stat()
        code = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"kiosk code {path}: no such file; the terminal writes it when it starts "
            "(is pipos run running, with this data directory?)"
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"kiosk code {path}: cannot read ({exc.strerror}); run the kiosk as the terminal's user"
        ) from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"kiosk code {path}: readable by group or others, so not trusted; restart the "
            "terminal to write a new one"
        )
    if not code or not code.isascii() or not all(c.isalnum() or c in "-_" for c in code):
        raise ConfigurationError(
            f"kiosk code {path}: not a kiosk code; restart the terminal to write a new one"
        )
    return code


def kiosk_url(base_url: str, code: str) -> str:
    """The address that trades `code` for the page's session on the terminal at
    `base_url` (http://127.0.0.1:8700)."""
    return f"{base_url.rstrip('/')}/kiosk?code={code}"
