"""The simulator's side of the `sim:` and `replay:` reader URLs.

Registered under the ``pipos.virtual_cards`` entry-point group; the drivers call
:func:`virtual_card_factory` with the URL's scheme, target and query options and get back an
object with ``uid``, ``atr``, ``transceive`` and ``recorded_inputs`` (a virtual card's also
``remove`` and ``insert``: the reader tells it when it leaves the field and comes back).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .cards import VirtualCard, load_card
from .cards.errors import VirtualCardRemovedError
from .errors import SimulatorError
from .replay import ReplayCard, Transcript


class UnknownVirtualCardError(SimulatorError):
    """The URL names no card profile or transcript."""


@dataclass
class _RemovalAwareCard:
    """Adapts a virtual card that raises on removal to the reader's None-on-removal port."""

    card: VirtualCard

    @property
    def uid(self) -> bytes:
        return self.card.uid

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def transceive(self, command: bytes) -> bytes | None:
        try:
            return self.card.transceive(command)
        except VirtualCardRemovedError:
            return None

    def recorded_inputs(self) -> tuple[bytes, str, str] | None:
        return None

    def report(self) -> dict[str, list[str]] | None:
        return None

    def remove(self) -> None:
        """The reader saw the card leave its field."""
        self.card.remove()

    def insert(self) -> None:
        """The same card is presented again (a second tap)."""
        self.card.insert()


_TRUE = frozenset({"", "1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def url_option_value(text: str) -> bool | int | float | str:
    """A behaviour value from a URL query: `?decline`, `?slow=0.2`, `?corrupt=sdad`."""
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def virtual_card_factory(scheme: str, target: str, options: Mapping[str, str]) -> object:
    """`sim:PROFILE?behaviour...` or `replay:PATH` -> a card for the drivers' virtual reader."""
    if scheme == "replay":
        if not target:
            raise UnknownVirtualCardError("replay: needs a transcript path, e.g. replay:visa.json")
        return ReplayCard(Transcript.load(target))
    if scheme == "sim":
        # Values are checked by the card's Behaviour, which names any it does not know.
        behaviour: dict[str, Any] = {k: url_option_value(v) for k, v in options.items()}
        # A reader in front of a person waits for real when the card is told to be slow.
        card = load_card(target or "visa", sleep=time.sleep, **behaviour)
        return _RemovalAwareCard(card)
    raise UnknownVirtualCardError(f"no virtual card for scheme {scheme!r}")
