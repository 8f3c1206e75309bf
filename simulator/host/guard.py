"""What the host keeps of requests it could not authenticate: counts in memory, never rows.

Anyone who can reach the host can send junk (no signature, an unknown terminal, a bad
signature, a replayed request, a body that is not JSON). Writing each refusal to the ledger
let 2,000 junk requests grow the database by 19.3 MB in 3 s (issue 16). The host now keeps:

* a count per source address and refusal code (the source table bounded: beyond
  `max_sources` addresses the rest are counted under ``"other"``);
* the last `recent` refusals (a ring buffer) for an operator or a test to look at;
* a rate limit per source: more than `limit` refusals within one `window` and that source's
  requests are answered ``429 rate_limited`` until the window ends, before any signature or
  database work is done.

A request that authenticated (the signature of a key the host enrolled for a terminal, not
a replay) and is then refused, say for a stale sequence number, is the terminal's doing and
is still recorded in the ledger's ``rejections`` table: only a terminal holding its key can
cause those. An enrolment is not such a request: anyone can make a key pair and sign an
enrolment with it, so its refusals (an unknown or used activation code) are anyone's too.

Enrolment refusals are also counted by a second, stricter guard (`ENROLMENT_LIMIT` per
`ENROLMENT_WINDOW`, 5 a minute by default): each tells the sender whether a guessed
activation code exists, so past that the source's enrolments are answered 429 before the
code is looked up. At 5 guesses a minute an address tries 7,200 codes a day out of the 2^48
a generated code is drawn from.

The rate limit is by address, so a terminal sharing an address with a flooder (NAT) is also
told 429 for the rest of the window; its requests were not processed and it retries.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request

from .service import HostError

DEFAULT_LIMIT: Final = 100
DEFAULT_WINDOW: Final = 1.0
#: Refused enrolments (wrong, unknown or used activation codes) per source and window.
ENROLMENT_LIMIT: Final = 5
ENROLMENT_WINDOW: Final = 60.0
#: The refusals of an enrolment that tell the sender something about an activation code.
ENROLMENT_REFUSALS: Final = frozenset(
    {"activation_code_invalid", "activation_code_used", "key_already_enrolled"}
)
OTHER_SOURCES: Final = "other"


@dataclass
class _Window:
    started: float
    count: int


class RejectionGuard:
    """Thread-safe: the web layer records from its event loop, tests read from theirs."""

    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        recent: int = 100,
        max_sources: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("the rejection limit needs limit >= 1 and a positive window")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_sources = max_sources
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._windows: dict[str, _Window] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self._total = 0
        self._limited = 0

    def _source(self, source: str) -> str:
        if source in self._counts or len(self._counts) < self._max_sources:
            return source
        return OTHER_SOURCES

    def blocked(self, source: str) -> bool:
        """True while `source` is over its limit for the current window (answer 429)."""
        with self._lock:
            current = self._windows.get(source)
            if current is None or self._clock() - current.started >= self.window:
                return False
            if current.count < self.limit:
                return False
            self._limited += 1
            return True

    def record(self, source: str, code: str, *, method: str, path: str, status: int) -> None:
        """Count one unauthenticated refusal of `source`."""
        now = self._clock()
        with self._lock:
            key = self._source(source)
            by_code = self._counts.setdefault(key, {})
            by_code[code] = by_code.get(code, 0) + 1
            self._total += 1
            current = self._windows.get(source)
            if current is None or now - current.started >= self.window:
                if current is None and len(self._windows) >= self._max_sources:
                    self._expire(now)
                self._windows[source] = _Window(now, 1)
            else:
                current.count += 1
            self._recent.append(
                {
                    "source": source,
                    "code": code,
                    "status": status,
                    "method": method,
                    "path": path[:200],
                }
            )

    def _expire(self, now: float) -> None:
        for source in [s for s, w in self._windows.items() if now - w.started >= self.window]:
            del self._windows[source]

    def snapshot(self) -> dict[str, Any]:
        """What `GET /admin/status` shows under ``unauthenticated_rejections``."""
        with self._lock:
            by_code: dict[str, int] = {}
            for codes in self._counts.values():
                for code, n in codes.items():
                    by_code[code] = by_code.get(code, 0) + n
            return {
                "total": self._total,
                "rate_limited": self._limited,
                "limit": {"per_source": self.limit, "window_seconds": self.window},
                "by_code": dict(sorted(by_code.items())),
                "by_source": {s: dict(sorted(c.items())) for s, c in sorted(self._counts.items())},
                "recent": list(self._recent),
            }


def source_of(request: Request) -> str:
    """The address a request came from, for counting and rate-limiting refusals."""
    client = request.client
    return client.host if client is not None else "-"


def rate_limited(guard: RejectionGuard, what: str = "refused requests") -> HostError:
    return HostError(
        429,
        "rate_limited",
        f"too many {what} from this address; wait {guard.window:g} s",
        retry_after=guard.window,
    )


def refuse_if_flooding(request: Request, *, enrolling: bool = False) -> None:
    """A source over its limit of unauthenticated refusals (or, for an enrolment, of
    refused enrolments) is answered 429 before any signature or database work is done."""
    guard: RejectionGuard = request.app.state.guard
    source = source_of(request)
    if guard.blocked(source):
        raise rate_limited(guard)
    enrolment: RejectionGuard | None = getattr(request.app.state, "enrolment_guard", None)
    if enrolling and enrolment is not None and enrolment.blocked(source):
        raise rate_limited(enrolment, "refused enrolments (activation codes)")


__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_WINDOW",
    "ENROLMENT_LIMIT",
    "ENROLMENT_REFUSALS",
    "ENROLMENT_WINDOW",
    "RejectionGuard",
    "rate_limited",
    "refuse_if_flooding",
    "source_of",
]
