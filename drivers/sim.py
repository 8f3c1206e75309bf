"""Readers with a virtual card behind them: `sim:PROFILE[?option=value...]` and `replay:PATH`.

The virtual cards live in the simulator distribution, reached through the
``pipos.virtual_cards`` entry-point group (the drivers never import the simulator). A plugin
is a factory ``(scheme, target, options) -> VirtualCardPort``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Protocol
from urllib.parse import parse_qsl

from .base import CardPresence, CardReader, RecordedInputs
from .errors import CancelledError, CardRemovedError, DeviceUnavailableError, ReaderTimeoutError
from .url import split_url

VIRTUAL_CARD_ENTRY_POINT_GROUP = "pipos.virtual_cards"


class VirtualCardPort(Protocol):
    """What a virtual card offers a reader."""

    uid: bytes
    atr: bytes

    def transceive(self, command: bytes) -> bytes | None:
        """The R-APDU, or None when the card has left the field."""

    def recorded_inputs(self) -> tuple[bytes, str, str] | None:
        """(unpredictable number, YYMMDD, HHMMSS) of a recorded transcript, else None."""


VirtualCardFactory = Callable[[str, str, Mapping[str, str]], VirtualCardPort]


class VirtualCardReader(CardReader):
    """A reader whose field always holds one virtual card until the card leaves."""

    def __init__(self, url: str, card: VirtualCardPort) -> None:
        self.url = url
        self._card = card
        self._present = True
        self._closed = False

    def wait_for_card(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> CardPresence:
        if cancel is not None and cancel.is_set():
            raise CancelledError("waiting for a card was cancelled")
        if not self._present:
            # A virtual card that left does not come back by itself; behave like an empty field.
            if cancel is not None and cancel.wait(timeout):
                raise CancelledError("waiting for a card was cancelled")
            raise ReaderTimeoutError(f"no card presented on {self.url} within {timeout} s")
        return CardPresence(self._card.uid, self._card.atr)

    def transceive(self, command: bytes) -> bytes:
        if not self._present:
            raise CardRemovedError("card removed")
        response = self._card.transceive(command)
        if response is None:
            self._present = False
            raise CardRemovedError("card removed during the command")
        return response

    def wait_for_removal(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> None:
        self._present = False

    def close(self) -> None:
        self._closed = True

    def recorded_inputs(self) -> RecordedInputs | None:
        recorded = self._card.recorded_inputs()
        if recorded is None:
            return None
        return RecordedInputs(*recorded)


def _factory() -> VirtualCardFactory | None:
    for entry in entry_points(group=VIRTUAL_CARD_ENTRY_POINT_GROUP):
        if entry.name == "default":
            factory: VirtualCardFactory = entry.load()
            return factory
    return None


def open_virtual_reader(url: str) -> CardReader:
    scheme, rest = split_url(url)
    target, _, query = rest.partition("?")
    factory = _factory()
    if factory is None:
        raise DeviceUnavailableError(
            url,
            "no virtual card provider is installed (entry point group pipos.virtual_cards)",
            "install pipos itself (pip install -e .), which ships the simulator",
        )
    options = dict(parse_qsl(query, keep_blank_values=True))
    return VirtualCardReader(url, factory(scheme, target, options))
