"""The webhook delivery worker: every final transaction state, and every later change of it,
POSTed to each register's webhook, signed, retried, in order, surviving a restart.

Where the events come from, and why: the journal's revision, not the checkout's event hub.
The hub (terminal.checkout.events) is a bounded log in memory: what it held when the
terminal stopped, or what was committed just before a crash and not yet published, is
gone, and a follower that falls 500 events behind misses some. The journal numbers every
committed write with a journal-wide revision, so the worker keeps a durable cursor (the
last revision it has queued, terminal.store.webhooks) and reads what was written after it:
a crash between the journal's commit and the queueing leaves the cursor behind the change,
and the worker reads it again after the restart. The queueing itself (the events for every
register and the cursor moved past them) is one commit of the webhook store. The journal is
polled (every `poll` seconds, an indexed read) rather than followed through the hub, so
there is one path for events, the same after a restart as before it.

What a register receives (docs/api.md, "Webhooks"): ``POST <url>`` with the JSON body
``{"id", "type": "transaction.final" | "transaction.updated", "created_at", "data": the
transaction as GET /api/v1/transactions/{id} shows it}`` and the header ``Pipos-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 keyed by the register's signing key over "<t>.<body>">``
(Stripe's scheme). The signing key is HMAC-SHA256(key=the token the register set the
webhook with, msg="pipos-webhook-v1") (terminal.store.webhooks.signing_key: the terminal
keeps that key, not the token); the register derives it from its token, checks the
signature and refuses a `t` too old. Card data goes no further than the view's masked PAN
(first 6 and last 4): the journal holds nothing more.

Delivery: any 2xx acknowledges an event; anything else (another status, a refused
connection, a timeout, a URL the HTTP client cannot use after all) is retried after 1 s,
2 s, 4 s ... up to 5 minutes between attempts, each delay jittered (x0.5 to x1.5, from the
injected random source), for 24 hours, after which the event is given up (logged by
register and event id). A register's events are delivered one at a time, in order: the
next is sent once the one before it is acknowledged or given up; one register's failing
URL never holds up another's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random as _random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx

from ..domain.records import TxnRecord
from ..store.webhooks import (
    RETRY_FOR,
    Delivery,
    JournalFeed,
    NewEvent,
    WebhookStore,
    record_digest,
)

__all__ = [
    "FIRST_RETRY",
    "MAX_RETRY",
    "SIGNATURE_HEADER",
    "Poster",
    "WebhookWorker",
    "retry_delay",
    "sign",
    "url_origin",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "Pipos-Signature"
#: Seconds before the first retry; each later one waits twice as long, up to MAX_RETRY.
FIRST_RETRY: Final = 1.0
MAX_RETRY: Final = 300.0
#: Seconds one attempt may take to connect, and to get its answer.
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 10.0


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The Pipos-Signature header's value: ``t=<timestamp>,v1=<hex HMAC-SHA256 keyed by
    the register's signing key over "<timestamp>.<body>">``."""
    mac = hmac.new(key, f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def retry_delay(failures: int, random: Callable[[], float]) -> float:
    """Seconds before the next attempt after `failures` failed ones (1 or more): 1, 2, 4
    ... capped at 5 minutes, times a jitter from 0.5 to 1.5 (`random` in [0, 1))."""
    nominal = min(MAX_RETRY, FIRST_RETRY * float(2 ** min(30, max(0, failures - 1))))
    return min(MAX_RETRY, nominal * (0.5 + random()))


class Poster(Protocol):
    """Sends one POST; returns the HTTP status (raises httpx.HTTPError when no answer)."""

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int: ...


class _HttpPoster:
    """POST with httpx: no redirects followed (a register's webhook answers itself)."""

    def __init__(self) -> None:
        self._client = httpx.Client(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
            headers={"User-Agent": "pipos-terminal-webhook"},
        )

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        return self._client.post(url, content=body, headers=dict(headers)).status_code

    def close(self) -> None:
        self._client.close()


def url_origin(url: str) -> str:
    """A webhook URL as it may be logged or audited: scheme, host and port only (a path or
    a query may carry the register's own secret)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<not a URL>"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class WebhookWorker:
    """Feeds the outbox from the journal and delivers what is due, in a thread of its own.

    `view`: a transaction as the API shows it (the event's data). `clock`: Unix seconds;
    `random`: the jitter's source, in [0, 1); `sleep(seconds)`: waits between passes (by
    default until stop() is called or the seconds have passed); `post`: sends one request
    (by default httpx). Tests drive :meth:`run_once` with a fake clock instead of the
    thread."""

    def __init__(
        self,
        store: WebhookStore,
        feed: JournalFeed,
        view: Callable[[TxnRecord], Mapping[str, Any]],
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        sleep: Callable[[float], object] | None = None,
        post: Poster | None = None,
        poll: float = 0.5,
        batch: int = 200,
        retry_for: float = RETRY_FOR,
    ) -> None:
        self.store = store
        self.feed = feed
        self._view = view
        self._clock = clock
        self._random = random
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._own_poster: _HttpPoster | None = None
        if post is None:
            post = self._own_poster = _HttpPoster()
        self._post: Poster = post
        self._poll = poll
        self._batch = batch
        self._retry_for = retry_for
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def now(self) -> float:
        """The worker's clock (Unix seconds): what the routes date a webhook by."""
        return self._clock()

    # --- one pass ------------------------------------------------------------------------

    def feed_once(self) -> int:
        """Queue the final transactions written since the cursor; how many deliveries.

        Final: a transaction no longer in progress (TxnRecord.finished). Each is queued
        when its record changes in a way a register sees (terminal.store.webhooks
        record_digest): the first time as transaction.final, later as transaction.updated;
        a write that changes nothing of it (the end of day closing its batch) queues
        nothing."""
        if self.store.redigest_owed():
            self.store.redigest(self.feed)
        queued = 0
        while True:
            cursor = self.store.cursor()
            if cursor is None:
                return queued  # no register ever set a webhook
            records, upto = self.feed.since(cursor, self._batch)
            if not records:
                return queued
            finished = {r.id: (r, record_digest(r)) for r in records if r.finished}
            known = self.store.digests(finished)
            events = [
                NewEvent(record.id, record.revision, digest, self._view(record))
                for record, digest in finished.values()
                if known.get(record.id) != digest
            ]
            queued += self.store.enqueue(events, upto, self._clock())

    def deliver_due(self) -> int:
        """Attempt every register's oldest event that is due; how many were acknowledged."""
        now = self._clock()
        for register, event_id in self.store.give_up(now, self._retry_for):
            log.warning(
                "webhook of register %s: event %s given up after %d hours without a 2xx",
                register,
                event_id,
                int(self._retry_for // 3600),
            )
        done = 0
        for delivery in self.store.due(now):
            if self._attempt(delivery):
                done += 1
        return done

    def _attempt(self, delivery: Delivery) -> bool:
        body = delivery.body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(delivery.signing_key, int(self._clock()), body),
            "Pipos-Event-Id": delivery.event_id,
        }
        level = logging.INFO  # a register's URL failing is the register's to mend
        try:
            status = self._post(delivery.url, body, headers)
        except httpx.HTTPError as exc:
            error = f"no answer ({type(exc).__name__})"
        except Exception as exc:
            # Whatever one register's URL makes the client raise (httpx raises UnicodeError
            # for a host label it cannot encode, for one) is this delivery's failure, retried
            # like any other: it must never end the pass, or every other register would wait
            # behind it. Only the type is kept: the message may quote the URL.
            error = f"not sent ({type(exc).__name__})"
            level = logging.WARNING  # not an answer at all: worth an operator's look
        else:
            if 200 <= status < 300:
                self.store.delivered(delivery.id)
                return True
            error = f"HTTP {status}"
        failures = delivery.attempts + 1
        wait = retry_delay(failures, self._random)
        self.store.failed(delivery.id, self._clock() + wait, error)
        log.log(
            level,
            "webhook of register %s (%s): %s for event %s, attempt %d; next in %.1f s",
            delivery.register,
            url_origin(delivery.url),
            error,
            delivery.event_id,
            failures,
            wait,
        )
        return False

    def run_once(self) -> float:
        """Feed, then deliver what is due; seconds until the next pass is needed."""
        self.feed_once()
        self.deliver_due()
        due = self.store.next_due()
        if due is None:
            return self._poll
        return max(0.0, min(self._poll, due - self._clock()))

    # --- the thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.run_once()
            except Exception:
                # A locked disk, a journal being replaced: log, wait, try again; never end
                # deliveries for good.
                log.exception("webhook pass failed; retrying")
                wait = max(self._poll, 1.0)
            if self._stop.is_set():
                break
            self._sleep(wait)

    def start(self) -> None:
        """Start the worker's thread (again a no-op while it runs)."""
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (an attempt under way finishes first: at most its timeouts)."""
        with self._start_lock:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout)
                self._thread = None

    def close(self) -> None:
        """Stop, and close what the worker opened (the store and feed are the caller's)."""
        self.stop()
        if self._own_poster is not None:
            self._own_poster.close()
