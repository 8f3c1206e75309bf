"""A PN532 on a UART, simulated on a pty pair, with a virtual card in its field.

nfcpy's real ``pn532`` driver (``nfc:tty:NAME:pn532``) talks to the slave side of the pty;
this simulator is the chip on the master side. nfcpy's serial transport only looks for
devices by name under ``/dev`` (``os.listdir('/dev')``), so the slave is given a unique
symlink there, ``/dev/pipos-pn532-<hex>`` (which needs root), removed at :meth:`stop`.

Host link (PN532 User Manual UM0701-02 §6.2): normal information frames
``00 00 FF LEN LCS D4 CC data DCS 00`` (LEN counts TFI..data, LCS and DCS make the sums
zero), extended information frames ``00 00 FF FF FF LENM LENL LCS D4 ...`` for more than 254
bytes, ACK ``00 00 FF 00 FF 00`` and the syntax error frame ``00 00 FF 01 FF 7F 81 00``.
Every well-formed command is acknowledged, then answered with ``D5 CC+1 ...``. A frame with
a bad checksum is ignored, as the chip does; the host then times out.

What nfcpy 1.0.4 sends, in order (``nfc/clf/pn532.py``, ``pn53x.py``):

* open: GetFirmwareVersion (``02``) behind a 10-byte zero preamble (the HSU wake-up), then
  SAMConfiguration normal mode (``14 01 00 00``), ``stty`` to 921600 baud and
  SetSerialBaudrate (``10 07``) followed by an ACK from the host; Diagnose line test
  (``00 00`` + 262 bytes, sent and echoed as extended frames); GetFirmwareVersion again;
  SetParameters ``00`` (no automatic RATS); RFConfiguration items 02, 04, 05, 0A-0D; RF off
  (RFConfiguration ``01 02``).
* polling: RF off, InListPassiveTarget ``4A 01 00`` (106A) and ``4A 01 03 00`` (106B); no
  target answers ``NbTg 0`` and nfcpy reads CIU_FIFOData to tell an empty field (still
  ``26``, the REQA) from a Type 1 tag.
* every ISO-DEP block (RATS included): ReadRegister CIU_TxMode/RxMode/TxAuto, WriteRegister
  of the same, RFConfiguration ``02`` (response timeout), then InCommunicateThru (``42``)
  with the raw ISO/IEC 14443-4 block. nfcpy runs ISO-DEP itself; InDataExchange is only
  used for Type 1 tags.
* close: ACK (abort), SetSerialBaudrate back to 115200 + ACK, PowerDown.

The card side (ISO/IEC 14443-3 §6 selection is done by the chip inside InListPassiveTarget;
ISO/IEC 14443-4 through InCommunicateThru): ATS to RATS with TA, TB and TC present,
I-blocks answered with the received block number, R(ACK) to chained commands, responses
longer than FSD-3 chained, R(NAK) presence checks answered R(ACK), S(DESELECT), optional
S(WTX). A card that leaves the field (its ``transceive`` raises ``VirtualCardRemovedError`` or
returns None, or :meth:`Pn532PtySimulator.remove`) stops answering: InCommunicateThru reports
status ``01`` (time-out, the target has not answered) and InListPassiveTarget finds no
target, as the chip does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import threading
import tty
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from simulator.errors import SimulatorError

from .card import BridgeCard, answer
from .isodep import IsoDepCardSide, IsoDepLink

log = logging.getLogger(__name__)

ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
#: Application-level error frame (UM0701-02 §6.2.1.5): the command was not understood.
ERROR_FRAME = bytes.fromhex("0000FF01FF7F8100")
HOST_TO_PN532 = 0xD4
PN532_TO_HOST = 0xD5

# PN532 error codes (UM0701-02 §7.1, Table 11).
STATUS_OK = 0x00
STATUS_TIMEOUT = 0x01  # the target has not answered
STATUS_INVALID_PARAMETER = 0x10
STATUS_NOT_ACCEPTABLE = 0x27  # command not acceptable in the current context

# Registers nfcpy reads (CIU = the PN512 core, UM0701-02 §8.6).
CIU_FIFO_DATA = 0x6339
SENS_REQ = 0x26  # REQA left in the FIFO when nothing answered

# ISO/IEC 14443-4 §5.2.3, Table 1: FSCI/FSDI -> frame size.
FRAME_SIZES = (16, 24, 32, 40, 48, 64, 96, 128, 256)
#: Largest TFI+data a PN532 frame carries (nfcpy: ``host_command_frame_max_size``).
MAX_FRAME_DATA = 265


class Pn532SimulatorError(SimulatorError):
    """The simulated PN532 cannot be set up (e.g. no right to create its name in /dev)."""


def checksum(data: bytes) -> int:
    """The byte that makes ``sum(data) + checksum`` zero modulo 256 (LCS and DCS)."""
    return -sum(data) & 0xFF


def encode_frame(payload: bytes) -> bytes:
    """An information frame around TFI + data: normal up to 255 bytes, extended above
    (UM0701-02 §6.2.1.1 and §6.2.1.3)."""
    if not payload or len(payload) > MAX_FRAME_DATA:
        raise ValueError(f"a PN532 frame carries 1..{MAX_FRAME_DATA} bytes, not {len(payload)}")
    if len(payload) <= 0xFF:
        head = bytes([0x00, 0x00, 0xFF, len(payload), checksum(bytes([len(payload)]))])
    else:
        length = len(payload).to_bytes(2, "big")
        head = b"\x00\x00\xff\xff\xff" + length + bytes([checksum(length)])
    return head + payload + bytes([checksum(payload), 0x00])


def _cascade_form(uid: bytes) -> bytes:
    """A UID with its cascade tags, as a host passes it to InListPassiveTarget."""
    if len(uid) == 7:
        return b"\x88" + uid
    if len(uid) == 10:
        return b"\x88" + uid[:3] + b"\x88" + uid[3:]
    return uid


class FrameKind(Enum):
    INFO = "info"
    ACK = "ack"
    NACK = "nack"


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    payload: bytes = b""  # TFI + data of an information frame
    extended: bool = False


class FrameParser:
    """Splits the host's byte stream into frames; skips preamble bytes and wake-up zeros,
    drops frames whose length or data checksum is wrong (counted in ``bad_frames``)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.bad_frames = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            start = self._buffer.find(b"\x00\xff")  # start code, after any 00 preamble
            if start < 0:
                del self._buffer[: max(0, len(self._buffer) - 1)]
                return frames
            del self._buffer[:start]
            buf = self._buffer
            if len(buf) < 4:
                return frames
            length, lcs = buf[2], buf[3]
            if length == 0x00 and lcs == 0xFF:
                frames.append(Frame(FrameKind.ACK))
                del buf[:4]
                continue
            if length == 0xFF and lcs == 0x00:
                frames.append(Frame(FrameKind.NACK))
                del buf[:4]
                continue
            extended = length == 0xFF and lcs == 0xFF
            if extended:
                if len(buf) < 7:
                    return frames
                if (buf[4] + buf[5] + buf[6]) & 0xFF:
                    self.bad_frames += 1
                    del buf[:2]
                    continue
                length, body = buf[4] << 8 | buf[5], 7
            else:
                if (length + lcs) & 0xFF:
                    self.bad_frames += 1
                    del buf[:2]
                    continue
                body = 4
            if len(buf) < body + length + 1:
                return frames
            payload = bytes(buf[body : body + length])
            dcs = buf[body + length]
            del buf[: body + length + 1]
            if length == 0 or (sum(payload) + dcs) & 0xFF:
                self.bad_frames += 1
                continue
            frames.append(Frame(FrameKind.INFO, payload, extended))


class _CardState(Enum):
    ABSENT = "absent"  # field off, or not yet selected
    SELECTED = "selected"  # selected by InListPassiveTarget: awaiting RATS
    PROTOCOL = "protocol"  # ISO-DEP blocks
    HALT = "halt"


@dataclass
class _Link(IsoDepLink):
    """Per-activation state of the card in the field."""

    state: _CardState = _CardState.ABSENT


class Pn532PtySimulator(IsoDepCardSide):
    """A PN532 on the master side of a pty; nfcpy opens :attr:`url`.

    ``fsci``/``fwi`` go in the card's ATS (FSCI 8 = 256-byte frames, so long blocks travel in
    extended host frames); ``max_chunk`` chains responses in smaller pieces; ``wtx`` sends an
    S(WTX) before every response; ``silent`` makes a chip that never answers (a wrong port,
    a PN532 wired to another UART or without power). ``link_in_dev=False`` skips the /dev
    name (no root needed): hosts other than nfcpy open :attr:`tty_path` directly.
    """

    _link: _Link

    def __init__(
        self,
        card: BridgeCard | None = None,
        *,
        name: str | None = None,
        fsci: int = 8,
        fwi: int = 8,
        max_chunk: int | None = None,
        wtx: bool = False,
        silent: bool = False,
        link_in_dev: bool = True,
    ) -> None:
        self.card = card
        self.fsci = fsci
        self.fwi = fwi
        self.max_chunk = max_chunk
        self.wtx = wtx
        self.silent = silent
        self.name = name or f"pipos-pn532-{secrets.token_hex(4)}"
        self.link_path = Path("/dev") / self.name
        #: Command codes received (``Counter({0x42: 57, ...})``), for tests and the report.
        self.commands: Counter[int] = Counter()
        #: Status bytes of InCommunicateThru / InDataExchange answers (01: target silent).
        self.statuses: Counter[int] = Counter()
        self.extended_in = 0
        self.extended_out = 0
        self.acks_in = 0
        self.apdus = 0
        self.chained_commands = 0
        self.chained_responses = 0
        self.wtx_sent = 0
        self.field_on = False
        self.parameters = 0
        self.registers: dict[int, int] = {}
        self._link = _Link()
        self._parser = FrameParser()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master, self._slave = os.openpty()
        # Raw from the start: no echo and no CR/LF translation before nfcpy's pyserial opens
        # the port. Holding the slave open keeps the master readable across nfcpy's own
        # close/reopen when it changes the baud rate.
        tty.setraw(self._slave)
        self.tty_path = os.ttyname(self._slave)
        self.linked = False
        if link_in_dev:
            self._link_in_dev()

    def _link_in_dev(self) -> None:
        try:
            os.symlink(self.tty_path, self.link_path)
        except OSError as exc:
            os.close(self._master)
            os.close(self._slave)
            raise Pn532SimulatorError(
                f"cannot create {self.link_path} -> {self.tty_path} ({exc}): nfcpy only finds "
                "serial devices by name under /dev, which needs root"
            ) from exc
        self.linked = True

    @property
    def path(self) -> str:
        """nfcpy's device path."""
        return f"tty:{self.name}:pn532"

    @property
    def url(self) -> str:
        """The reader URL that reaches this chip (Type A only: the simulated card is A)."""
        return f"nfc:{self.path}?types=A"

    @property
    def bad_frames(self) -> int:
        return self._parser.bad_frames

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pn532-pty", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.linked:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Pn532PtySimulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def insert(self, card: BridgeCard) -> None:
        with self._lock:
            self.card = card
            self._link = _Link()

    def remove(self) -> None:
        """The card leaves the field. The chip does not know until the next exchange with
        it goes unanswered."""
        with self._lock:
            self._gone()

    # -- host link -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self._master, 4096)
            except OSError:
                return
            if self.silent:
                continue
            for frame in self._parser.feed(data):
                try:
                    with self._lock:
                        reply = self._frame(frame)
                    self._write(reply)
                except OSError:
                    return
                except Exception:
                    log.exception("pn532 pty: cannot handle %r", frame)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._master, view)
            view = view[written:]

    def _frame(self, frame: Frame) -> bytes:
        if frame.kind is FrameKind.ACK:
            # From the host an ACK aborts the command in progress (UM0701-02 §6.2.1.6);
            # every command here is answered at once, so there is nothing to abort.
            self.acks_in += 1
            return b""
        if frame.kind is FrameKind.NACK:
            return b""  # "send the last response again": nothing was lost on a pty
        if frame.extended:
            self.extended_in += 1
        payload = frame.payload
        if payload[0] != HOST_TO_PN532 or len(payload) < 2:
            return ACK + ERROR_FRAME
        code, data = payload[1], payload[2:]
        self.commands[code] += 1
        response = self._command(code, data)
        if response is None:
            return ACK + ERROR_FRAME
        body = bytes([PN532_TO_HOST, code + 1]) + response
        if len(body) > 0xFF:
            self.extended_out += 1
        return ACK + encode_frame(body)

    # -- chip commands (UM0701-02 §7) ------------------------------------------------------

    def _command(self, code: int, data: bytes) -> bytes | None:
        if code == 0x00:  # Diagnose (§7.2.1): NumTst 0 is the communication line test
            return data if data[:1] == b"\x00" else b"\x00"
        if code == 0x02:  # GetFirmwareVersion (§7.2.2): IC PN532, v1.6, ISO A/B + ISO 18092
            return bytes([0x32, 0x01, 0x06, 0x07])
        if code == 0x04:  # GetGeneralStatus (§7.2.3)
            active = self._link.state is _CardState.PROTOCOL
            targets = bytes([1, 1, 0x00, 0x00, 0x00]) if active else b""
            return bytes([STATUS_OK, int(self.field_on), int(active)]) + targets + b"\x00"
        if code == 0x06:  # ReadRegister (§7.2.4): 16-bit addresses
            if len(data) % 2:
                return None
            addresses = [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]
            return bytes(self.registers.get(address, 0) for address in addresses)
        if code == 0x08:  # WriteRegister (§7.2.5): address, value triples
            if len(data) % 3:
                return None
            for i in range(0, len(data), 3):
                self.registers[data[i] << 8 | data[i + 1]] = data[i + 2]
            return b""
        if code in (0x10, 0x14):  # SetSerialBaudrate, SAMConfiguration: no effect on a pty
            return b""
        if code == 0x12:  # SetParameters (§7.2.9)
            self.parameters = data[0] if data else 0
            return b""
        if code == 0x16:  # PowerDown (§7.2.11)
            self._field(False)
            return bytes([STATUS_OK])
        if code == 0x32:  # RFConfiguration (§7.3.1): item 1 bit 0 is the RF field
            if data[:1] == b"\x01" and len(data) > 1:
                self._field(bool(data[1] & 0x01))
            return b""
        if code == 0x4A:  # InListPassiveTarget (§7.3.5)
            return self._list_passive_target(data)
        if code == 0x42:  # InCommunicateThru (§7.3.9)
            reply = self._card_frame(data)
            status = STATUS_TIMEOUT if reply is None else STATUS_OK
            self.statuses[status] += 1
            return bytes([status]) + (reply or b"")
        if code == 0x40:  # InDataExchange (§7.3.8)
            exchanged = self._data_exchange(data)
            self.statuses[exchanged[0]] += 1
            return exchanged
        if code in (0x44, 0x52):  # InDeselect, InRelease (§7.3.10, §7.3.11)
            self._link = _Link(state=_CardState.HALT) if self.card else _Link()
            return bytes([STATUS_OK])
        return None

    def _field(self, on: bool) -> None:
        if not on and self.field_on:
            # Field off: the card loses power and forgets its state (ISO/IEC 14443-3 §5).
            self._link = _Link()
        self.field_on = on

    def _list_passive_target(self, data: bytes) -> bytes:
        if len(data) < 2:
            return bytes([0])
        self.field_on = True
        brty, initiator = data[1], data[2:]
        card = self.card
        if brty != 0x00 or card is None:
            if brty == 0x00:
                self.registers[CIU_FIFO_DATA] = SENS_REQ
            return bytes([0])  # NbTg 0
        uid = bytes(card.uid)
        if initiator and initiator not in (uid, _cascade_form(uid)):
            self.registers[CIU_FIFO_DATA] = SENS_REQ
            return bytes([0])
        self.registers.pop(CIU_FIFO_DATA, None)
        self._link = _Link(state=_CardState.SELECTED)
        # ATQA (ISO/IEC 14443-3 §6.3.2): UID size in b8-b7, bit-frame anticollision; the chip
        # reports it most significant byte first. SAK 0x20: ISO/IEC 14443-4 compliant.
        size_bits = {4: 0x00, 7: 0x40, 10: 0x80}[len(uid)]
        target = bytes([1, 0x00, 0x04 | size_bits, 0x20, len(uid)]) + uid
        if self.parameters & 0x10:  # fAutomaticRATS: the chip activates ISO-DEP itself
            ats = self._card_frame(b"\xe0\x80")
            if ats is not None:
                target += ats
        return bytes([1]) + target

    def _data_exchange(self, data: bytes) -> bytes:
        """InDataExchange for a target the chip activated itself (automatic RATS): the chip
        runs ISO-DEP. nfcpy never takes this path for ISO-DEP cards; short APDUs only."""
        if len(data) < 1 or data[0] & 0x0F != 1:
            return bytes([STATUS_INVALID_PARAMETER])
        if self._link.state is not _CardState.PROTOCOL:
            return bytes([STATUS_NOT_ACCEPTABLE])  # no target activated by the chip
        if self.card is None:
            return bytes([STATUS_TIMEOUT])
        response = answer(self.card, bytes(data[1:]))
        if response is None:
            self._gone()
            return bytes([STATUS_TIMEOUT])
        self.apdus += 1
        if len(response) > MAX_FRAME_DATA - 3:
            return bytes([0x07])  # insufficient communication buffer size
        return bytes([STATUS_OK]) + response

    def _gone(self) -> None:
        log.info("pn532 pty: card left the field after %d commands", self.apdus)
        self.card = None
        self._link.command.clear()
        self._link.pending, self._link.waiting = b"", None

    # -- the card: ISO/IEC 14443-4 through InCommunicateThru -------------------------------

    def _card_frame(self, data: bytes) -> bytes | None:
        """The card's answer to one raw frame, or None when nothing answers."""
        link, card = self._link, self.card
        if card is None or not self.field_on or not data:
            return None
        if link.state is _CardState.SELECTED and data[0] == 0xE0 and len(data) == 2:
            # RATS (§5.6.1): FSDI in the upper nibble of the parameter byte.
            link.fsd = FRAME_SIZES[min(data[1] >> 4, 8)]
            link.state = _CardState.PROTOCOL
            # ATS (§5.2): TL, T0 (TA, TB, TC present; FSCI), TA (106 kbit/s both ways),
            # TB (FWI, SFGI 0), TC (no NAD, no CID). nfcpy reads ats[1] and ats[3] unchecked.
            return bytes([0x05, 0x70 | self.fsci, 0x80, self.fwi << 4, 0x00])
        if link.state is _CardState.PROTOCOL:
            return self._block(data, card)
        return None

    def _apdu_answered(self) -> None:
        self.apdus += 1

    def _card_left(self) -> None:
        self._gone()

    def _deselected(self) -> None:
        self._link = _Link(state=_CardState.HALT)
