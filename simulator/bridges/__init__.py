"""Bridges that put a virtual card or a virtual scanner behind a real stack.

* :mod:`.vpcd` - a virtual ICC for vsmartcard's ``vpcd`` pcscd driver (PC/SC tests).
* :mod:`.nfc_udp` - an ISO 14443-4 card emulator on nfcpy's ``udp`` device (nfcpy tests).
* :mod:`.pn532_pty` - a PN532 chip on a pty, for nfcpy's own UART driver (``nfc:tty:...:pn532``,
  the Raspberry Pi reader path).
* :mod:`.pty_scanner` - a code scanner typing into a pty pair (pyserial tests).
* :mod:`.isodep` - the card side of the ISO/IEC 14443-4 block protocol both NFC bridges share.

Each bridge takes any card object with ``transceive(bytes) -> bytes``, ``uid`` and ``atr``
(a :class:`simulator.cards.VirtualCard`, a :class:`simulator.replay.ReplayCard`, or a test
double). A card leaves the field when its ``transceive`` raises
:class:`simulator.cards.errors.VirtualCardRemovedError` or returns ``None``, or when the bridge's
``remove()`` is called.
"""

from __future__ import annotations

from .card import BridgeCard, answer

__all__ = ["BridgeCard", "answer"]
