"""An ISO/IEC 14443 card on nfcpy's ``udp`` device: puts a virtual card in front of nfcpy.

nfcpy's ``udp:HOST:PORT`` device sends every frame as one datagram, ASCII ``"106A <hex>"``
(``"106B ..."`` for Type B), without CRC; a bare ``"RFOFF"`` is the field switched off. This
emulator is the card side, on raw UDP, so the reader side runs nfcpy's own activation and
ISO-DEP code unchanged:

* Type A (ISO/IEC 14443-3 §6): ATQA to REQA/WUPA, anticollision and select with cascade for
  4- and 7-byte UIDs (BCC), SAK 0x20 (ISO 14443-4 compliant); HLTA.
* Type A activation (ISO/IEC 14443-4 §5.6): ATS to RATS with TA and TB present (nfcpy reads
  ``ats[1]`` and ``ats[3]`` unchecked), FSD taken from the RATS.
* Type B (ISO/IEC 14443-3 §7): ATQB to REQB/WUPB, answer to ATTRIB.
* Half-duplex block protocol (ISO/IEC 14443-4 §7): I-blocks answered with the block number
  received; chained commands acknowledged with R(ACK); responses longer than FSD-3 chained;
  R(NAK) presence checks answered with R(ACK); S(DESELECT); optional S(WTX) before a response.

A card leaves the field when its ``transceive`` raises ``VirtualCardRemovedError`` or returns None
(the emulator then goes silent, as a card that left does: the reader times out), or when
:meth:`NfcUdpCardEmulator.remove` is called.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from enum import Enum

from .card import BridgeCard
from .isodep import IsoDepCardSide, IsoDepLink

log = logging.getLogger(__name__)

# ISO/IEC 14443-4 §5.2.3, Table 1: FSCI/FSDI -> frame size.
FRAME_SIZES = (16, 24, 32, 40, 48, 64, 96, 128, 256)


class _State(Enum):
    IDLE = "idle"
    READY = "ready"
    SELECTED = "selected"  # Type A: awaiting RATS; Type B: awaiting ATTRIB
    PROTOCOL = "protocol"  # ISO-DEP blocks
    HALT = "halt"


@dataclass
class _Link(IsoDepLink):
    """Per-activation state: the card's state and the ISO-DEP protocol state."""

    state: _State = _State.IDLE
    cascade: int = 0


class NfcUdpCardEmulator(IsoDepCardSide):
    """The card side of nfcpy's udp device.

    Parameters let tests force the protocol's corners: ``fsci`` (the card's frame size, so
    commands arrive chained), ``max_chunk`` (response chaining below FSD-3), ``wtx`` (send an
    S(WTX) request before every response), ``wtx_forever`` (answer every S(WTX) response with
    another S(WTX) request: a card that never delivers), ``wtx_interval`` (seconds the card
    works before each S(WTX) request, as a slow card does), ``rfoff_on_remove`` (tell the reader
    at once instead of going silent).
    """

    _link: _Link

    def __init__(
        self,
        card: BridgeCard | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        technology: str = "A",
        fsci: int = 8,
        fwi: int = 8,
        max_chunk: int | None = None,
        wtx: bool = False,
        wtx_forever: bool = False,
        wtx_interval: float = 0.0,
        rfoff_on_remove: bool = False,
    ) -> None:
        if technology not in ("A", "B"):
            raise ValueError("technology must be 'A' or 'B'")
        self.card = card
        self.technology = technology
        self.fsci = fsci
        self.fwi = fwi
        self.max_chunk = max_chunk
        self.wtx = wtx or wtx_forever
        self.wtx_forever = wtx_forever
        self.wtx_interval = wtx_interval
        self.rfoff_on_remove = rfoff_on_remove
        self.commands = 0
        self.chained_commands = 0
        self.chained_responses = 0
        self.wtx_sent = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self.host, self.port = self._sock.getsockname()[:2]
        self._link = _Link()
        self._peer: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def brty(self) -> str:
        return "106" + self.technology

    @property
    def url(self) -> str:
        """The reader URL that reaches this card."""
        return f"nfc:udp:{self.host}:{self.port}?types={self.technology}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nfc-udp-card", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._sock.close()

    def insert(self, card: BridgeCard) -> None:
        with self._lock:
            self.card = card
            self.commands = 0
            self._link = _Link()

    def remove(self) -> None:
        with self._lock:
            self.card = None
            self._link = _Link()
            peer = self._peer
        if self.rfoff_on_remove and peer is not None:
            self._sock.sendto(b"RFOFF", peer)

    # -- datagram loop --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                datagram, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                with self._lock:
                    self._peer = peer
                    replies = self._receive(datagram)
                for reply in replies:
                    self._sock.sendto(reply, peer)
            except Exception:
                log.exception("nfc udp card: cannot handle %r", datagram[:80])

    def _receive(self, datagram: bytes) -> list[bytes]:
        if datagram.startswith(b"RFOFF"):
            self._link = _Link()  # field off: every card resets (ISO/IEC 14443-3 §5)
            return []
        try:
            brty_raw, hex_data = datagram.split()
            data = bytes.fromhex(hex_data.decode("ascii"))
        except ValueError:
            log.warning("nfc udp card: malformed datagram %r", datagram[:80])
            return []
        if brty_raw.decode("ascii", "replace") != self.brty or self.card is None or not data:
            return []  # another technology, or no card in the field: silence
        if self.technology == "A":
            frames = self._type_a(data, self.card)
        else:
            frames = self._type_b(data, self.card)
        return [f"{self.brty} {frame.hex()}".encode("ascii") for frame in frames]

    # -- ISO/IEC 14443-3 Type A -----------------------------------------------------------

    def _cascade_levels(self, uid: bytes) -> list[bytes]:
        if len(uid) == 4:
            return [uid]
        if len(uid) == 7:
            return [b"\x88" + uid[:3], uid[3:]]
        if len(uid) == 10:
            return [b"\x88" + uid[:3], b"\x88" + uid[3:6], uid[6:]]
        raise ValueError(f"a Type A UID is 4, 7 or 10 bytes, not {len(uid)}")

    def _type_a(self, data: bytes, card: BridgeCard) -> list[bytes]:
        link = self._link
        if data in (b"\x26", b"\x52"):  # REQA / WUPA (§6.3.1): HALT cards only wake on WUPA
            if link.state is _State.HALT and data == b"\x26":
                return []
            self._link = _Link(state=_State.READY)
            size_bits = {4: 0x00, 7: 0x40, 10: 0x80}[len(card.uid)]
            return [bytes([0x04 | size_bits, 0x00])]  # ATQA, bit-frame anticollision
        if data == b"\x50\x00":  # HLTA
            self._link = _Link(state=_State.HALT)
            return []
        if link.state is _State.READY and len(data) >= 2 and data[0] in (0x93, 0x95, 0x97):
            level = (data[0] - 0x93) // 2
            levels = self._cascade_levels(bytes(card.uid))
            if level >= len(levels):
                return []
            part = levels[level]
            if data[1] == 0x20:  # anticollision: the UID part and its BCC
                return [part + bytes([part[0] ^ part[1] ^ part[2] ^ part[3]])]
            if data[1] == 0x70 and data[2:6] == part:  # select
                if level + 1 < len(levels):
                    return [b"\x04"]  # SAK: cascade bit, UID not complete
                link.state = _State.SELECTED
                return [b"\x20"]  # SAK: complete, ISO/IEC 14443-4 compliant
            return []
        if link.state is _State.SELECTED and data[0] == 0xE0 and len(data) == 2:
            # RATS (ISO/IEC 14443-4 §5.6.1): FSDI in the upper nibble of the parameter.
            link.fsd = FRAME_SIZES[min(data[1] >> 4, 8)]
            link.state = _State.PROTOCOL
            # ATS (§5.2): TL, T0 (TA, TB, TC present; FSCI), TA (106 kbit/s only),
            # TB (FWI, SFGI 0), TC (no NAD, no CID).
            return [bytes([0x05, 0x70 | self.fsci, 0x80, self.fwi << 4, 0x00])]
        if link.state is _State.PROTOCOL:
            return self._protocol_block(data, card)
        return []

    # -- ISO/IEC 14443-3 Type B -----------------------------------------------------------

    def _type_b(self, data: bytes, card: BridgeCard) -> list[bytes]:
        link = self._link
        pupi = bytes(card.uid)[:4].ljust(4, b"\x00")
        if data[0] == 0x05 and len(data) >= 3:  # REQB/WUPB (§7.7.4)
            if link.state is _State.HALT and not data[2] & 0x08:
                return []
            self._link = _Link(state=_State.SELECTED)
            # ATQB (§7.9): 50, PUPI, application data, protocol info (bit rates 106 only;
            # FSCI | ISO 14443-4 compliant; FWI | ADC 0 | FO 0).
            return [
                b"\x50" + pupi + b"\x00" * 4 + bytes([0x00, self.fsci << 4 | 0x01, self.fwi << 4])
            ]
        if link.state is _State.SELECTED and data[0] == 0x1D and data[1:5] == pupi:
            # ATTRIB (§7.10): param 2 low nibble is the reader's FSDI.
            link.fsd = FRAME_SIZES[min(data[6] & 0x0F, 8)] if len(data) > 6 else 256
            link.state = _State.PROTOCOL
            return [b"\x00"]  # MBLI 0, CID 0
        if data[0] == 0x50 and len(data) == 5 and data[1:5] == pupi:  # HLTB
            self._link = _Link(state=_State.HALT)
            return [b"\x00"]
        if link.state is _State.PROTOCOL:
            return self._protocol_block(data, card)
        return []

    # -- ISO/IEC 14443-4 §7 block protocol -------------------------------------------------

    def _apdu_answered(self) -> None:
        self.commands += 1

    def _card_left(self) -> None:
        log.info("nfc udp card: card left the field after %d commands", self.commands)
        self.card = None
        self._link = _Link()

    def _deselected(self) -> None:
        self._link = _Link(state=_State.HALT)

    def _protocol_block(self, data: bytes, card: BridgeCard) -> list[bytes]:
        block = self._block(data, card)
        if block is not None and block[0] & 0xF7 == 0xF2 and self.wtx_interval:
            time.sleep(self.wtx_interval)  # the card is working: more time, after a while
        return [block] if block is not None else []
