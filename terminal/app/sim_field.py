"""A simulated contactless field at the counter: someone "taps" a virtual card by its URL.

`pipos run` and the checkout page use it in place of a hardware reader: the page's
"simulated card" buttons (or a test, or the demo) call :meth:`SimulatedField.present` with a
reader URL such as ``sim:visa`` or ``sim:mastercard?decline=1``; the checkout, waiting for a
card, then talks to that virtual card through the ordinary `sim:` driver.

A card taken away from the field during a transaction (the checkout waits for that when the
card asks for a second tap, EMV Contactless Book B §3.5 Start B) is kept until that
transaction ends: presenting the same URL again taps that same card again (a phone that
asked its holder to look at it remembers being asked), any other URL is a new card.
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
        #: The card that left the field during the running transaction (see the module).
        self._left: CardReader | None = None
        self.presented_at: float | None = None  # monotonic time of the last tap (bench)

    def present(self, url: str) -> None:
        """Put the card `url` names in the field (raises the driver's error for a bad URL):
        the card that just left it if it has that URL, else a new one."""
        with self._cond:
            left, self._left = self._left, None
        tap_again = getattr(left, "present_again", None) if left and left.url == url else None
        if left is not None and tap_again is not None:
            tap_again()
            reader = left
        else:
            if left is not None:
                left.close()
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
            self._forget_left()

    def _forget_left(self, only: CardReader | None = None) -> None:
        """Close the card that left the field (`only`: if it is that one). Under the lock."""
        if self._left is not None and (only is None or self._left is only):
            self._left.close()
            self._left = None

    def _card_left(self, reader: CardReader) -> None:
        with self._cond:
            self._forget_left()
            self._left = reader

    def _transaction_ended(self, reader: CardReader | None) -> None:
        with self._cond:
            self._forget_left(reader)

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
        """A reader for one transaction (a card that left the field before it is forgotten)."""
        with self._cond:
            self._forget_left()
        return _FieldReader(self)


class _FieldReader(CardReader):
    def __init__(self, field: SimulatedField) -> None:
        self.url = "field:"
        self._field = field
        self._inner: CardReader | None = None
        self._gone: CardReader | None = None  # the card that left this reader's field

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
        # The card leaves: the next wait_for_card takes whatever is presented next (the
        # same card again, by its URL, or another one).
        inner = self._inner
        if inner is not None:
            inner.wait_for_removal(timeout, cancel)  # raises while the card stays
            self._inner = None
            self._gone = inner
            self._field._card_left(inner)

    def abort(self) -> None:
        inner = self._inner
        if inner is not None:
            inner.abort()

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
        self._field._transaction_ended(self._gone)

    def recorded_inputs(self) -> RecordedInputs | None:
        return None if self._inner is None else self._inner.recorded_inputs()
