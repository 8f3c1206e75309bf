"""Readers with a virtual card behind them: `sim:PROFILE[?option=value...]` and `replay:PATH`.

The virtual cards live in the simulator distribution (pipos-sim, the `sim` extra, which a
terminal's install leaves out), reached through the ``pipos.virtual_cards`` entry-point group
(the drivers never import the simulator). A plugin is a factory
``(scheme, target, options) -> VirtualCardPort``. Without one, a `sim:` or `replay:` URL gets
a :class:`DeviceUnavailableError` that says what to install.
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
#: How to get the virtual cards (the same wording as terminal.domain.errors'
#: SIMULATOR_INSTALL_HINT; the drivers may not import the terminal).
SIMULATOR_FIX = (
    "install the sim extra (pipos[sim], the pipos-sim distribution): scripts/bootstrap.sh sim, "
    "as make run does, or pip install ./sim from the pipos repository; a terminal uses its "
    "own reader (pcsc:, nfc:usb)"
)


class VirtualCardPort(Protocol):
    """What a virtual card offers a reader."""

    uid: bytes
    atr: bytes

    def transceive(self, command: bytes) -> bytes | None:
        """The R-APDU, or None when the card has left the field."""

    def recorded_inputs(self) -> tuple[bytes, str, str] | None:
        """(unpredictable number, YYMMDD, HHMMSS) of a recorded transcript, else None."""

    def report(self) -> dict[str, list[str]] | None:
        """A transcript's replay report (CardReader.replay_report), else None. Optional:
        a provider without it reports nothing."""

    def remove(self) -> None:
        """The card has left the field. Optional, as is :meth:`insert`: a card without
        them never learns of its taps."""

    def insert(self) -> None:
        """The same card is in the field again (a second tap)."""


VirtualCardFactory = Callable[[str, str, Mapping[str, str]], VirtualCardPort]


class VirtualCardReader(CardReader):
    """A reader whose field always holds one virtual card until the card leaves; the same
    card comes back only when someone presents it again (:meth:`present_again`)."""

    def __init__(self, url: str, card: VirtualCardPort) -> None:
        self.url = url
        self._card = card
        self._present = True
        self._closed = False
        self._aborted = False

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
        if self._aborted:
            raise CancelledError(f"{self.url}: the card conversation was abandoned")
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
        leave = getattr(self._card, "remove", None)  # a provider from before taps
        if leave is not None:
            leave()

    def abort(self) -> None:
        """The field is switched off under the card: a virtual card that is told when it
        leaves (``remove``) stops whatever it was doing, a wedged one included."""
        self._aborted = True
        leave = getattr(self._card, "remove", None)
        if leave is not None:
            leave()

    def present_again(self) -> None:
        """The card that left is tapped again: the same card (its counters, its state), so a
        phone that asked to be looked at before a second tap sees that tap."""
        if self._present:
            return
        self._present = True
        back = getattr(self._card, "insert", None)
        if back is not None:
            back()

    def close(self) -> None:
        self._closed = True

    def recorded_inputs(self) -> RecordedInputs | None:
        recorded = self._card.recorded_inputs()
        if recorded is None:
            return None
        return RecordedInputs(*recorded)

    def replay_report(self) -> dict[str, list[str]] | None:
        report = getattr(self._card, "report", None)  # a provider from before reports
        return None if report is None else report()


def _factory(url: str) -> VirtualCardFactory:
    """The installed virtual card provider, or the error that says what to install."""
    for entry in entry_points(group=VIRTUAL_CARD_ENTRY_POINT_GROUP):
        if entry.name == "default":
            try:
                factory: VirtualCardFactory = entry.load()
            except ImportError as exc:  # its metadata is installed, its code is not
                raise DeviceUnavailableError(
                    url,
                    f"the virtual card provider {entry.value} cannot be imported "
                    f"({exc.name or exc})",
                    SIMULATOR_FIX,
                ) from exc
            return factory
    raise DeviceUnavailableError(
        url,
        "the simulator is not installed (no provider in the entry point group "
        f"{VIRTUAL_CARD_ENTRY_POINT_GROUP})",
        SIMULATOR_FIX,
    )


def virtual_cards_installed() -> bool:
    """Whether `sim:` and `replay:` URLs can open (the simulator is installed)."""
    try:
        _factory("sim:")
    except DeviceUnavailableError:
        return False
    return True


def open_virtual_reader(url: str) -> CardReader:
    scheme, rest = split_url(url)
    target, _, query = rest.partition("?")
    factory = _factory(url)
    options = dict(parse_qsl(query, keep_blank_values=True))
    return VirtualCardReader(url, factory(scheme, target, options))
