"""What a bridge needs of a card, and the contactless pseudo-APDUs a reader answers itself."""

from __future__ import annotations

from typing import Protocol

from simulator.cards.errors import VirtualCardRemovedError

# PC/SC Part 3 §3.2.2.1.3: GET DATA for the UID of a contactless card (FF CA 00 00 Le).
_GET_UID_PREFIX = bytes.fromhex("FFCA0000")
_SW_OK = bytes.fromhex("9000")
_SW_FUNCTION_NOT_SUPPORTED = bytes.fromhex("6A81")


class BridgeCard(Protocol):
    """Any object a bridge can put in a reader's field."""

    @property
    def uid(self) -> bytes: ...

    @property
    def atr(self) -> bytes: ...

    def transceive(self, command: bytes) -> bytes | None: ...


def answer(card: BridgeCard, command: bytes) -> bytes | None:
    """The card's R-APDU, or None when the card has left the field.

    `FF CA 00 00 00` is answered on the card's behalf, as a PC/SC contactless reader does
    (PC/SC Part 3 §3.2.2.1.3): the UID and '9000', or '6A81' for other P1 values.
    """
    if command[:2] == b"\xff\xca":
        if command[:4] == _GET_UID_PREFIX:
            return bytes(card.uid) + _SW_OK
        return _SW_FUNCTION_NOT_SUPPORTED
    try:
        return card.transceive(command)
    except VirtualCardRemovedError:
        return None
