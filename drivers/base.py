"""The one narrow interface the kernel and the checkout see: card readers and code scanners."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CardPresence:
    """What the reader learnt when a card entered the field."""

    uid: bytes
    atr: bytes


@dataclass(frozen=True, slots=True)
class RecordedInputs:
    """Terminal inputs recorded with a transcript (unpredictable number, date, time), so that
    dynamic signatures recorded from a real card verify when the transcript is replayed."""

    unpredictable_number: bytes
    date: str  # YYMMDD
    time: str  # HHMMSS


class CardReader(ABC):
    """A contactless card reader. Implementations translate their library's errors into
    :mod:`drivers.errors` and are safe to close twice."""

    url: str

    @abstractmethod
    def wait_for_card(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> CardPresence:
        """Block until a card is in the field; ReaderTimeoutError / CancelledError otherwise."""

    @abstractmethod
    def transceive(self, command: bytes) -> bytes:
        """Send one C-APDU, return the R-APDU with its status word."""

    @abstractmethod
    def wait_for_removal(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> None:
        """Block until the card has left the field."""

    @abstractmethod
    def close(self) -> None:
        """Release the reader."""

    def abort(self) -> None:
        """Give up on the card conversation, from another thread, without blocking.

        The checkout calls this when it stops waiting for a :meth:`transceive` (the merchant
        cancelled, the card took too long, the terminal is stopping). The command in flight
        returns (or raises) as soon as the stack lets it; every later :meth:`transceive`
        raises :class:`~drivers.errors.CancelledError`. The thread that was talking to the
        card still calls :meth:`close` when its command returns. The default does nothing:
        for a reader whose commands never block for long.
        """
        return None

    def recorded_inputs(self) -> RecordedInputs | None:
        """Inputs a replayed transcript carries; None for live readers."""
        return None

    def replay_report(self) -> dict[str, list[str]] | None:
        """What a replayed transcript could not answer as recorded (commands it never saw,
        exchanges never asked for, commands whose data differ); None for live readers."""
        return None

    def __enter__(self) -> CardReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
