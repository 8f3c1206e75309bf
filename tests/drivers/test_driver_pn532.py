"""A PN532 on a Raspberry Pi UART, through nfcpy's real ``pn532`` driver: the simulator is the
chip on the other side of a pty (host frames, ACKs, checksums, extended frames) with a
virtual ISO 14443-4 Type A card in its field."""

from __future__ import annotations

import os
import select
import threading
from typing import Any

import pytest

pytest.importorskip("nfc", reason="nfcpy is not installed (pip install 'pipos[nfc]')")

import simulator.cards as cards
from drivers.errors import CardRemovedError, DeviceUnavailableError, ReaderTimeoutError
from drivers.url import open_reader
from emv.kernel import OutcomeKind
from simulator.bridges.pn532_pty import (
    ACK,
    ERROR_FRAME,
    STATUS_TIMEOUT,
    FrameKind,
    FrameParser,
    Pn532PtySimulator,
    encode_frame,
)
from tests.drivers.test_driver_emv import _reference, _same_outcome, _transact

SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")

# PN532 command codes (UM0701-02 §7).
DIAGNOSE, GET_FIRMWARE_VERSION, SET_PARAMETERS, SAM_CONFIGURATION = 0x00, 0x02, 0x12, 0x14
RF_CONFIGURATION, IN_LIST_PASSIVE_TARGET, IN_COMMUNICATE_THRU = 0x32, 0x4A, 0x42


class EchoCard:
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    atr = bytes.fromhex("3B8880010000000000000000")

    def __init__(self, response_size: int | None = None) -> None:
        self.response_size = response_size
        self.seen: list[bytes] = []

    def transceive(self, command: bytes) -> bytes:
        self.seen.append(command)
        if self.response_size is not None:
            return bytes(i & 0xFF for i in range(self.response_size)) + b"\x90\x00"
        return command[::-1] + b"\x90\x00"


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("nfcpy finds serial devices only by name under /dev, which needs root")


# -- host frames (no root needed) ---------------------------------------------------------


def test_frames_match_the_bytes_nfcpy_expects() -> None:
    # The SAMConfiguration and SetSerialBaudrate responses nfcpy compares byte for byte.
    assert encode_frame(bytes.fromhex("D515")) == bytes.fromhex("0000FF02FED5151600")
    assert encode_frame(bytes.fromhex("D511")) == bytes.fromhex("0000FF02FED5111A00")
    # The GetFirmwareVersion prefix nfcpy checks: LEN 6, LCS FA, D5 03, IC 32 (PN532).
    assert encode_frame(bytes.fromhex("D50332010607")).startswith(bytes.fromhex("0000FF06FAD50332"))
    long = encode_frame(b"\xd5\x43\x00" + bytes(254))
    assert long[:8] == bytes.fromhex("0000FFFFFF0101FE")  # extended: LEN 257, LCS
    assert (sum(long[8:-2]) + long[-2]) & 0xFF == 0
    assert long[-1] == 0


def test_parser_reads_wake_up_normal_extended_and_ack_frames() -> None:
    parser = FrameParser()
    # nfcpy's first bytes: a 10-byte zero preamble, then GetFirmwareVersion.
    frames = parser.feed(bytes(10) + bytes.fromhex("0000ff02fed4022a00"))
    assert [(f.kind, f.payload) for f in frames] == [(FrameKind.INFO, b"\xd4\x02")]
    extended = encode_frame(b"\xd4\x00\x00" + bytes(range(256)) + bytes(6))
    # Split anywhere: the parser waits for the rest.
    assert parser.feed(extended[:100]) == []
    frame, ack = parser.feed(extended[100:] + ACK)
    assert frame.extended
    assert frame.payload[:3] == b"\xd4\x00\x00"
    assert len(frame.payload) == 265
    assert ack.kind is FrameKind.ACK
    bad = bytearray(encode_frame(b"\xd4\x02"))
    bad[-2] ^= 0xFF  # data checksum
    assert parser.feed(bytes(bad)) == []
    assert parser.bad_frames == 1
    assert encode_frame(b"\x7f") == ERROR_FRAME


class _Host:
    """The host side of the pty, speaking raw frames (what libnfc or a Pi program would)."""

    def __init__(self, chip: Pn532PtySimulator) -> None:
        self.fd = os.open(chip.tty_path, os.O_RDWR | os.O_NOCTTY)
        self.parser = FrameParser()

    def command(self, code: int, data: bytes = b"") -> list[bytes | FrameKind]:
        os.write(self.fd, bytes(2) + encode_frame(bytes([0xD4, code]) + data))
        return self.read(2)

    def read(self, count: int) -> list[bytes | FrameKind]:
        frames: list[bytes | FrameKind] = []
        while len(frames) < count:
            ready, _, _ = select.select([self.fd], [], [], 2.0)
            if not ready:
                break
            for frame in self.parser.feed(os.read(self.fd, 4096)):
                frames.append(frame.payload if frame.kind is FrameKind.INFO else frame.kind)
        return frames


@pytest.mark.integration
def test_raw_frames_automatic_rats_data_exchange_and_errors() -> None:
    card = EchoCard()
    with Pn532PtySimulator(card, link_in_dev=False) as chip:
        host = _Host(chip)
        try:
            assert host.command(0x02) == [FrameKind.ACK, bytes.fromhex("D50332010607")]
            # SetParameters fAutomaticRATS: the chip activates ISO-DEP and returns the ATS.
            assert host.command(0x12, b"\x10") == [FrameKind.ACK, b"\xd5\x13"]
            (_, listed) = host.command(0x4A, b"\x01\x00")
            assert listed == (
                b"\xd5\x4b\x01\x01\x00\x44\x20\x07" + EchoCard.uid + bytes.fromhex("0578808000")
            )
            assert host.command(0x40, b"\x01" + SELECT_PPSE) == [
                FrameKind.ACK,
                b"\xd5\x41\x00" + SELECT_PPSE[::-1] + b"\x90\x00",
            ]
            chip.remove()
            assert host.command(0x40, b"\x01" + SELECT_PPSE)[1] == b"\xd5\x41\x01"  # time-out
            assert host.command(0x4A, b"\x01\x00")[1] == b"\xd5\x4b\x00"  # NbTg 0
            assert host.command(0x06, b"\x63\x39")[1] == b"\xd5\x07\x26"  # REQA still there
            # An unknown command: ACK, then the syntax error frame (TFI 7F).
            assert host.command(0x5E) == [FrameKind.ACK, b"\x7f"]
            # A frame with a bad data checksum is ignored, as the chip does: the next answer
            # is the next command's.
            bad = bytearray(encode_frame(b"\xd4\x02"))
            bad[-2] ^= 0x55
            os.write(host.fd, bytes(bad))
            assert host.command(0x04)[1][:2] == b"\xd5\x05"
            assert chip.bad_frames == 1
            assert chip.statuses[STATUS_TIMEOUT] == 1
        finally:
            os.close(host.fd)


# -- nfcpy's pn532 driver on the simulated chip (root: the device name lives in /dev) -------


def test_open_runs_nfcpy_start_up_and_line_test(pn532_pty: Pn532PtySimulator) -> None:
    with open_reader(pn532_pty.url):
        pass
    sent = pn532_pty.commands
    assert sent[GET_FIRMWARE_VERSION] == 2
    assert sent[SAM_CONFIGURATION] == 1
    assert sent[DIAGNOSE] == 1
    assert sent[SET_PARAMETERS] == 1
    assert sent[RF_CONFIGURATION] >= 8
    # The Diagnose line test is 265 bytes each way: extended frames both directions.
    assert pn532_pty.extended_in >= 1
    assert pn532_pty.extended_out >= 1
    assert pn532_pty.acks_in >= 1  # after SetSerialBaudrate, and to abort at close
    assert pn532_pty.bad_frames == 0


@pytest.mark.parametrize("behaviour", [{}, {"approve_offline": True}])
def test_emv_transaction_through_pn532(
    pn532_pty: Pn532PtySimulator, behaviour: dict[str, Any]
) -> None:
    pn532_pty.insert(cards.load_card("visa", **behaviour))
    with open_reader(pn532_pty.url) as reader:
        presence = reader.wait_for_card(timeout=10)
        result = _transact(reader)
    assert presence.uid == cards.load_card("visa").uid  # 7-byte UID from InListPassiveTarget
    _same_outcome(result, _reference(**behaviour))
    assert result.outcome.masked_pan == "476173******0010"
    # RATS and every APDU went through InCommunicateThru as raw ISO-DEP blocks.
    assert pn532_pty.commands[IN_COMMUNICATE_THRU] == result.apdu_count + 1
    assert pn532_pty.apdus == result.apdu_count


def test_card_removed_mid_transaction_is_try_again(pn532_pty: Pn532PtySimulator) -> None:
    pn532_pty.insert(cards.load_card("visa", removed_after_n_commands=3))
    with open_reader(pn532_pty.url) as reader:
        reader.wait_for_card(timeout=10)
        result = _transact(reader)
        assert result.apdu_count == 3
        assert result.outcome.kind == OutcomeKind.TRY_AGAIN
        assert result.outcome.kind == _reference(removed_after_n_commands=3).outcome.kind
        # The chip answers status 01 (time-out, the target has not answered): the card is
        # gone, not the reader.
        assert pn532_pty.statuses[STATUS_TIMEOUT] >= 1
        with pytest.raises(CardRemovedError):
            reader.transceive(SELECT_PPSE)
        with pytest.raises(ReaderTimeoutError, match="no card presented"):
            reader.wait_for_card(timeout=0.3)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("options", "chained"),
    [({}, False), ({"fsci": 2, "max_chunk": 20, "wtx": True}, True)],
    ids=["fsc256-extended-frames", "fsc32-chaining-wtx"],
)
def test_long_apdus_both_ways(options: dict[str, Any], chained: bool) -> None:
    _needs_root()
    card = EchoCard()
    with Pn532PtySimulator(card, **options) as chip:
        with open_reader(chip.url) as reader:
            reader.wait_for_card(timeout=10)
            command = bytes([0x80, 0xA8, 0x00, 0x00, 0xFF]) + bytes(range(255)) + b"\x00"
            assert reader.transceive(command) == command[::-1] + b"\x90\x00"
            assert card.seen == [command]
            card.response_size = 1000
            assert reader.transceive(SELECT_PPSE) == bytes(i & 0xFF for i in range(1000)) + (
                b"\x90\x00"
            )
        extended_before_open = 1  # the Diagnose line test
        if chained:
            assert chip.chained_commands >= 8
            assert chip.chained_responses >= 1
            assert chip.wtx_sent == 2
        else:
            # FSC 256: a 253-byte I-block is a 254-byte InCommunicateThru, an extended frame;
            # FSD 256: the 1000-byte response comes back in 254-byte blocks, extended too.
            assert chip.extended_in > extended_before_open
            assert chip.extended_out > extended_before_open
            assert chip.chained_commands == 1


def test_removal_then_next_card(pn532_pty: Pn532PtySimulator) -> None:
    pn532_pty.insert(EchoCard())
    with open_reader(pn532_pty.url) as reader:
        reader.wait_for_card(timeout=10)
        with pytest.raises(ReaderTimeoutError, match="stayed"):
            reader.wait_for_removal(timeout=0.3)  # R(NAK) presence checks answered
        pn532_pty.remove()
        reader.wait_for_removal(timeout=10)
        threading.Timer(0.2, pn532_pty.insert, args=(EchoCard(),)).start()
        assert reader.wait_for_card(timeout=10).uid == EchoCard.uid
        assert reader.transceive(SELECT_PPSE) == SELECT_PPSE[::-1] + b"\x90\x00"
    assert pn532_pty.commands[IN_LIST_PASSIVE_TARGET] >= 2


@pytest.mark.integration
def test_chip_that_does_not_answer_is_device_unavailable() -> None:
    _needs_root()
    with Pn532PtySimulator(silent=True) as chip, pytest.raises(DeviceUnavailableError) as caught:
        open_reader(chip.url)
    message = str(caught.value)
    assert chip.path in message
    assert "no NFC reader answers" in message
    assert "enable_uart=1" in message
    assert "serial console off" in message


def test_port_that_does_not_exist_is_device_unavailable() -> None:
    with pytest.raises(DeviceUnavailableError, match=r"no NFC reader answers.*enable_uart"):
        open_reader("nfc:tty:pipos-pn532-absent:pn532")
