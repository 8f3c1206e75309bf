"""The card side of the ISO/IEC 14443-4 block transmission protocol (§7), shared by the card
emulators behind nfcpy's udp device and behind the simulated PN532 chip: I-blocks with
block numbers, command chaining acknowledged with R(ACK), response chaining in FSD-3 pieces,
R(NAK) presence checks, S(DESELECT) and S(WTX)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .card import BridgeCard, answer


@dataclass
class IsoDepLink:
    """Per-activation protocol state: what the reader negotiated and what is in flight."""

    fsd: int = 256
    command: bytearray = field(default_factory=bytearray)
    pending: bytes = b""  # rest of a chained response
    waiting: bytes | None = None  # response held back behind an S(WTX)
    waiting_bn: int = 0  # block number of the I-block it answers
    last_block: bytes = b""


class IsoDepCardSide:
    """Mixin: answers one ISO-DEP block. The emulator provides `_link` (an IsoDepLink),
    `max_chunk`, `wtx`, the counters, and the three hooks below."""

    _link: IsoDepLink
    max_chunk: int | None
    wtx: bool
    #: Every S(WTX) response is answered with another S(WTX) request (a card that never
    #: delivers its answer); emulators without the attribute never do this.
    wtx_forever: bool = False
    chained_commands: int
    chained_responses: int
    wtx_sent: int

    def _apdu_answered(self) -> None:
        """One C-APDU was answered by the card."""

    def _card_left(self) -> None:
        """The card left the field during a command: the emulator forgets it."""

    def _deselected(self) -> None:
        """S(DESELECT): the card goes to HALT."""

    def _chunk(self) -> int:
        size = self._link.fsd - 3  # PCB + 2 bytes EDC (§7.1.1)
        return min(size, self.max_chunk) if self.max_chunk else size

    def _send_response(self, response: bytes, bn: int) -> bytes:
        chunk = self._chunk()
        if len(response) > chunk:
            self._link.pending = response[chunk:]
            self.chained_responses += 1
            block = bytes([0x12 | bn]) + response[:chunk]
        else:
            self._link.pending = b""
            block = bytes([0x02 | bn]) + response
        self._link.last_block = block
        return block

    def _block(self, data: bytes, card: BridgeCard) -> bytes | None:
        """The block the card sends back, or None for silence (the reader times out)."""
        link = self._link
        pcb = data[0]
        bn = pcb & 0x01
        if pcb & 0xE2 == 0x02:  # I-block (§7.1.1.1)
            inf = data[1:]
            if pcb & 0x08:  # CID follows the PCB
                inf = inf[1:]
            if pcb & 0x10:  # chaining: acknowledge and wait for the rest (§7.5.2)
                link.command += inf
                self.chained_commands += 1
                return bytes([0xA2 | bn])
            command = bytes(link.command + inf)
            link.command.clear()
            response = answer(card, command)
            if response is None:
                self._card_left()
                return None  # silence, as with a card that left
            self._apdu_answered()
            if self.wtx:
                link.waiting, link.waiting_bn = response, bn
                self.wtx_sent += 1
                return bytes([0xF2, 0x01])  # S(WTX) request, WTXM 1 (§7.3)
            return self._send_response(response, bn)
        if pcb & 0xF6 == 0xA2:  # R(ACK): next part of a chained response, or resend
            if link.pending:
                return self._send_response(link.pending, bn)
            return link.last_block or None
        if pcb & 0xF6 == 0xB2:  # R(NAK): a presence check (§7.5.6.2) is answered R(ACK)
            return bytes([0xA2 | bn])
        if pcb & 0xF7 == 0xC2:  # S(DESELECT)
            self._deselected()
            return bytes([0xC2])
        if pcb & 0xF7 == 0xF2 and link.waiting is not None:  # S(WTX) response
            if self.wtx_forever:
                self.wtx_sent += 1
                return bytes([0xF2, 0x01])  # more time, again
            response, link.waiting = link.waiting, None
            return self._send_response(response, link.waiting_bn)
        return None
