"""A simulated contactless field at the counter: someone "taps" a virtual card by its URL.

`pipos run` and the checkout page use it in place of a hardware reader: the page's
"simulated card" buttons (or a test, or the demo) call :meth:`SimulatedField.present` with a
reader URL such as ``sim:visa`` or ``sim:mastercard?decline=1``; the checkout, waiting for a
card, then talks to that virtual card through the ordinary `sim:` driver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from drivers.base import CardPresence, CardReader, RecordedInputs
from drivers.errors import CancelledError, ReaderTimeoutError
from drivers.url import open_reader

__all__ = ["SimulatedField"]

_POLL = 0.02  # seconds between looks at the cancel flag while the field is empty


class SimulatedField:
    """Holds at most one presented card until a reader picks it up."""

    def __init__(self, opener: Callable[[str], CardReader] = open_reader) -> None:
        self._opener = opener
        self._cond = threading.Condition()
        self._presented: CardReader | None = None
        self.presented_at: float | None = None  # monotonic time of the last tap (bench)

    def present(self, url: str) -> None:
        """Put the card `url` names in the field (raises the driver's error for a bad URL)."""
        reader = self._opener(url)
        with self._cond:
            if self._presented is not None:
                self._presented.close()
            self._presented = reader
            self.presented_at = time.monotonic()
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            if self._presented is not None:
                self._presented.close()
            self._presented = None

    def _take(self, timeout: float | None, cancel: threading.Event | None) -> CardReader:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._presented is None:
                if cancel is not None and cancel.is_set():
                    raise CancelledError("waiting for a card was cancelled")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ReaderTimeoutError(f"no card presented within {timeout} s")
                self._cond.wait(_POLL if remaining is None else min(_POLL, remaining))
            reader, self._presented = self._presented, None
            return reader

    def reader(self) -> CardReader:
        """A reader for one transaction."""
        return _FieldReader(self)


class _FieldReader(CardReader):
    def __init__(self, field: SimulatedField) -> None:
        self.url = "field:"
        self._field = field
        self._inner: CardReader | None = None

    def wait_for_card(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> CardPresence:
        if self._inner is None:
            self._inner = self._field._take(timeout, cancel)
            self.url = self._inner.url
        return self._inner.wait_for_card(timeout=0, cancel=cancel)

    def _reader(self) -> CardReader:
        if self._inner is None:
            raise ReaderTimeoutError("no card in the field")
        return self._inner

    def transceive(self, command: bytes) -> bytes:
        return self._reader().transceive(command)

    def wait_for_removal(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> None:
        if self._inner is not None:
            self._inner.wait_for_removal(timeout, cancel)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()

    def recorded_inputs(self) -> RecordedInputs | None:
        return None if self._inner is None else self._inner.recorded_inputs()
