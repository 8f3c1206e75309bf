"""NFC readers through nfcpy's own protocol code, on its udp device, with the simulator's
ISO 14443 card emulator on the other end (integration: a real UDP socket and nfcpy's stack).
The reader's own logic with a fake frontend, no socket: tests/drivers/test_driver_nfc_backend.py."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("nfc", reason="nfcpy is not installed (pip install 'pipos[nfc]')")

from drivers.errors import (
    CancelledError,
    CardRemovedError,
    DeviceUnavailableError,
    ReaderTimeoutError,
)
from drivers.nfc import parse_nfc_url
from drivers.url import open_reader
from simulator.bridges.nfc_udp import NfcUdpCardEmulator

SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")


class EchoCard:
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    atr = bytes.fromhex("3B8880010000000000000000")

    def __init__(self, leave_after: int | None = None, response_size: int | None = None) -> None:
        self.leave_after = leave_after
        self.response_size = response_size
        self.seen: list[bytes] = []

    def transceive(self, command: bytes) -> bytes | None:
        if self.leave_after is not None and len(self.seen) >= self.leave_after:
            return None
        self.seen.append(command)
        if self.response_size is not None:
            return bytes(i & 0xFF for i in range(self.response_size)) + b"\x90\x00"
        return command[::-1] + b"\x90\x00"


@pytest.fixture
def emulator() -> object:
    card = NfcUdpCardEmulator(EchoCard())
    card.start()
    yield card
    card.stop()


def test_nfc_urls_map_to_nfcpy_paths() -> None:
    assert parse_nfc_url("nfc:usb") == ("usb", ["106A", "106B"])
    assert parse_nfc_url("nfc:usb:072f:2200") == ("usb:072f:2200", ["106A", "106B"])
    assert parse_nfc_url("nfc:tty:AMA0:pn532?types=A") == ("tty:AMA0:pn532", ["106A"])
    assert parse_nfc_url("nfc:udp:127.0.0.1:50000?types=B") == ("udp:127.0.0.1:50000", ["106B"])
    with pytest.raises(DeviceUnavailableError, match="types=A"):
        parse_nfc_url("nfc:usb?types=F")


@pytest.mark.integration
def test_type_a_activation_and_apdu_exchange(emulator: NfcUdpCardEmulator) -> None:
    with open_reader(emulator.url) as reader:
        presence = reader.wait_for_card(timeout=10)
        assert presence.uid == EchoCard.uid  # 7-byte UID through two cascade levels
        assert presence.atr[:4] == bytes.fromhex("3B808001")
        assert reader.transceive(SELECT_PPSE) == SELECT_PPSE[::-1] + b"\x90\x00"
        assert reader.transceive(SELECT_PPSE) == SELECT_PPSE[::-1] + b"\x90\x00"


@pytest.mark.integration
@pytest.mark.parametrize("technology", ["A", "B"])
def test_chaining_both_ways_and_wtx(technology: str) -> None:
    card = EchoCard()
    # FSC 32: a 200-byte command is sent in 7 chained blocks; responses come in 20-byte
    # chunks; every response is preceded by a waiting-time extension.
    emulator = NfcUdpCardEmulator(card, technology=technology, fsci=2, max_chunk=20, wtx=True)
    emulator.start()
    try:
        with open_reader(emulator.url) as reader:
            presence = reader.wait_for_card(timeout=10)
            assert presence.uid == (EchoCard.uid if technology == "A" else EchoCard.uid[:4])
            command = bytes([0x80, 0xA8, 0x00, 0x00, 195]) + bytes(range(195)) + b"\x00"
            assert reader.transceive(command) == command[::-1] + b"\x90\x00"
            assert card.seen == [command]
        assert emulator.chained_commands >= 6
        assert emulator.chained_responses >= 1
        assert emulator.wtx_sent == 1
    finally:
        emulator.stop()


@pytest.mark.integration
def test_long_response_is_reassembled() -> None:
    card = EchoCard(response_size=1000)
    emulator = NfcUdpCardEmulator(card)
    emulator.start()
    try:
        with open_reader(emulator.url) as reader:
            reader.wait_for_card(timeout=10)
            response = reader.transceive(SELECT_PPSE)
            assert response == bytes(i & 0xFF for i in range(1000)) + b"\x90\x00"
    finally:
        emulator.stop()


@pytest.mark.integration
def test_no_card_times_out_and_cancels(emulator: NfcUdpCardEmulator) -> None:
    emulator.remove()
    with open_reader(emulator.url) as reader:
        with pytest.raises(ReaderTimeoutError, match="no card presented"):
            reader.wait_for_card(timeout=0.3)
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(CancelledError):
            reader.wait_for_card(timeout=30, cancel=cancel)


@pytest.mark.integration
def test_card_leaving_mid_command_is_card_removed(emulator: NfcUdpCardEmulator) -> None:
    emulator.insert(EchoCard(leave_after=1))
    with open_reader(emulator.url) as reader:
        reader.wait_for_card(timeout=10)
        reader.transceive(SELECT_PPSE)
        with pytest.raises(CardRemovedError):  # nfcpy: Type4TagCommandError (timeout)
            reader.transceive(SELECT_PPSE)
        with pytest.raises(CardRemovedError):
            reader.transceive(SELECT_PPSE)


@pytest.mark.integration
def test_field_broken_is_card_removed() -> None:
    emulator = NfcUdpCardEmulator(EchoCard(), rfoff_on_remove=True)
    emulator.start()
    try:
        with open_reader(emulator.url) as reader:
            reader.wait_for_card(timeout=10)
            reader.transceive(SELECT_PPSE)
            emulator.remove()
            with pytest.raises(CardRemovedError):  # nfcpy: raw BrokenLinkError("RFOFF")
                reader.transceive(SELECT_PPSE)
    finally:
        emulator.stop()


@pytest.mark.integration
def test_removal_then_next_card(emulator: NfcUdpCardEmulator) -> None:
    with open_reader(emulator.url) as reader:
        reader.wait_for_card(timeout=10)
        with pytest.raises(ReaderTimeoutError, match="stayed"):
            reader.wait_for_removal(timeout=0.3)
        emulator.remove()
        reader.wait_for_removal(timeout=10)
        threading.Timer(0.2, emulator.insert, args=(EchoCard(),)).start()
        assert reader.wait_for_card(timeout=10).uid == EchoCard.uid
        assert reader.transceive(SELECT_PPSE).endswith(b"\x90\x00")
        reader.close()
        reader.close()


def test_no_nfc_device_is_an_actionable_error() -> None:
    with pytest.raises(DeviceUnavailableError) as caught:
        open_reader("nfc:usb:ffff:0001")
    assert "no NFC reader answers" in str(caught.value)
    assert "python -m nfc" in caught.value.fix
