"""The event hub: a bounded, numbered log of what happened, that the API streams and the page
follows."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["EventHub"]


class EventHub:
    """A bounded, numbered log of events that API streams and the page follow."""

    def __init__(self, keep: int = 500) -> None:
        self._events: list[dict[str, Any]] = []
        self._next = 1
        self._keep = keep
        self._cond = threading.Condition()
        self._closed = False
        self._followers = 0

    def publish(self, kind: str, data: Mapping[str, Any]) -> int:
        with self._cond:
            event_id = self._next
            self._next += 1
            self._events.append({"id": event_id, "type": kind, "data": dict(data)})
            del self._events[: -self._keep]
            self._cond.notify_all()
            return event_id

    @property
    def last_id(self) -> int:
        with self._cond:
            return self._next - 1

    def after(self, event_id: int, timeout: float | None = None) -> list[dict[str, Any]]:
        """Events newer than `event_id`, waiting up to `timeout` seconds for one (not at all
        once the hub is closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._next - 1 > event_id, timeout=timeout)
            return [e for e in self._events if e["id"] > event_id]

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @contextmanager
    def following(self) -> Iterator[None]:
        """Counts a live stream (an API client, the page) while it follows the hub."""
        with self._cond:
            self._followers += 1
        try:
            yield
        finally:
            with self._cond:
                self._followers -= 1
                self._cond.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        """The terminal is stopping: wake every follower and wait (up to `timeout` s) until
        their streams have ended, so the server then stops with no request still running
        (a stream cut by the server's shutdown prints a CancelledError traceback)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._followers == 0, timeout=timeout)
