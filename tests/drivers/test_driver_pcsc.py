"""PC/SC readers through the real pcscd + vpcd, with a virtual card on the other end (the
tests taking `pcscd` or `vpcd_card` are integration tests, marked by tests/conftest.py). The
reader's own logic over a fake pyscard, no pcscd: tests/drivers/test_driver_pcsc_backend.py."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("smartcard", reason="pyscard is not installed (pip install 'pipos[pcsc]')")

from drivers.base import CardPresence
from drivers.errors import (
    CancelledError,
    CardRemovedError,
    DeviceUnavailableError,
    ReaderGoneError,
    ReaderTimeoutError,
)
from drivers.pcsc import PcscReader, ReaderWatch, match_reader
from drivers.url import open_reader
from simulator.bridges.vpcd import VpcdBridge, contactless_atr

SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")


class EchoCard:
    """Answers every command with its own bytes reversed and '9000'; leaves after `leave_after`."""

    uid = bytes.fromhex("04A1B2C3D4E5F6")
    atr = bytes.fromhex("3B8880010000000000000000")

    def __init__(self, leave_after: int | None = None) -> None:
        self.leave_after = leave_after
        self.seen: list[bytes] = []

    def transceive(self, command: bytes) -> bytes | None:
        if self.leave_after is not None and len(self.seen) >= self.leave_after:
            return None
        self.seen.append(command)
        return command[::-1] + b"\x90\x00"


def test_contactless_atr_is_built_per_pcsc_part3() -> None:
    assert contactless_atr(bytes.fromhex("3B8880010000000000000000")) == bytes.fromhex(
        "3B8880010000000000000000"
    )
    built = contactless_atr(b"\x3b\x00", b"AB")
    assert built[:4] == bytes.fromhex("3B828001")
    assert built[4:6] == b"AB"
    tck = 0
    for byte in built[1:]:
        tck ^= byte
    assert tck == 0


def test_apdu_exchange_through_pcscd(vpcd_card: VpcdBridge) -> None:
    card = EchoCard()
    vpcd_card.insert(card)
    with open_reader("pcsc:Virtual PCD 00 00") as reader:
        presence = reader.wait_for_card(timeout=10)
        assert presence == CardPresence(EchoCard.uid, EchoCard.atr)
        assert reader.transceive(SELECT_PPSE) == SELECT_PPSE[::-1] + b"\x90\x00"
        long_command = bytes([0x80, 0xA8, 0, 0, 250]) + bytes(range(250)) + b"\x00"
        assert reader.transceive(long_command) == long_command[::-1] + b"\x90\x00"
    # FF CA was answered by the bridge on the reader's behalf, never reached the card.
    assert card.seen == [SELECT_PPSE, long_command]


def test_first_reader_and_name_match() -> None:
    readers = ["ACS ACR1252 1S CL Reader [ACR1252 Dual Reader PICC] 00 00", "Virtual PCD 00 00"]
    assert match_reader(readers, "") == readers[0]
    assert match_reader(readers, "virtual") == readers[1]
    assert match_reader(readers, "acr122") is None


def test_unknown_reader_name_lists_the_readers(pcscd: object) -> None:
    with pytest.raises(DeviceUnavailableError) as caught:
        open_reader("pcsc:ACS ACR122U")
    message = str(caught.value)
    assert "no PC/SC reader name contains 'ACS ACR122U'" in message
    assert "pcsc:Virtual PCD 00 00" in message


def test_wait_for_card_times_out_and_cancels(vpcd_card: VpcdBridge) -> None:
    with open_reader("pcsc:Virtual PCD 00 01") as reader:
        with pytest.raises(ReaderTimeoutError, match="no card presented"):
            reader.wait_for_card(timeout=0.3)
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(CancelledError):
            reader.wait_for_card(timeout=30, cancel=cancel)


def test_card_arriving_while_waiting_is_seen(vpcd_card: VpcdBridge) -> None:
    with open_reader("pcsc:Virtual PCD 00 00") as reader:
        threading.Timer(0.3, vpcd_card.insert, args=(EchoCard(),)).start()
        assert reader.wait_for_card(timeout=10).uid == EchoCard.uid


def test_removal_mid_transaction_is_card_removed(vpcd_card: VpcdBridge) -> None:
    vpcd_card.insert(EchoCard(leave_after=2))
    with open_reader("pcsc:Virtual PCD 00 00") as reader:
        reader.wait_for_card(timeout=10)
        reader.transceive(SELECT_PPSE)
        reader.transceive(SELECT_PPSE)
        with pytest.raises(CardRemovedError):
            reader.transceive(SELECT_PPSE)
        with pytest.raises(CardRemovedError):
            reader.transceive(SELECT_PPSE)
        reader.wait_for_removal(timeout=10)


def test_removal_between_commands_then_a_new_card(vpcd_card: VpcdBridge) -> None:
    vpcd_card.insert(EchoCard())
    with open_reader("pcsc:Virtual PCD 00 00") as reader:
        reader.wait_for_card(timeout=10)
        vpcd_card.remove()
        with pytest.raises(CardRemovedError):
            reader.transceive(SELECT_PPSE)
        reader.wait_for_removal(timeout=10)
        with pytest.raises(ReaderTimeoutError):
            reader.wait_for_card(timeout=0.2)
        vpcd_card.insert(EchoCard())
        assert reader.wait_for_card(timeout=10).uid == EchoCard.uid
        assert reader.transceive(SELECT_PPSE).endswith(b"\x90\x00")


def test_wait_for_removal_times_out_while_the_card_stays(vpcd_card: VpcdBridge) -> None:
    vpcd_card.insert(EchoCard())
    with open_reader("pcsc:Virtual PCD 00 00") as reader:
        reader.wait_for_card(timeout=10)
        with pytest.raises(ReaderTimeoutError, match="stayed"):
            reader.wait_for_removal(timeout=0.3)


class FakeReaderList:
    """A reader list the test plugs readers into and out of."""

    def __init__(self, *names: str) -> None:
        self.names = list(names)

    def __call__(self) -> list[str]:
        return list(self.names)


def test_reader_watch_reports_plug_and_unplug() -> None:
    fake = FakeReaderList("Virtual PCD 00 00")
    watch = ReaderWatch(fake, period=0.01)
    events: list[tuple[list[str], list[str]]] = []
    watch.add_listener(lambda added, removed: events.append((added, removed)))
    watch.refresh()
    fake.names.append("ACS ACR122U PICC Interface 00 00")
    watch.refresh()
    fake.names.remove("Virtual PCD 00 00")
    watch.refresh()
    watch.refresh()
    assert events == [
        (["Virtual PCD 00 00"], []),
        (["ACS ACR122U PICC Interface 00 00"], []),
        ([], ["Virtual PCD 00 00"]),
    ]


def test_reader_watch_waits_for_a_reader_to_be_plugged_in() -> None:
    fake = FakeReaderList()
    watch = ReaderWatch(fake, period=0.01)
    threading.Timer(0.1, fake.names.append, args=("ACS ACR122U PICC Interface 00 00",)).start()
    assert watch.wait_for("acr122", timeout=10) == "ACS ACR122U PICC Interface 00 00"
    with pytest.raises(ReaderTimeoutError):
        watch.wait_for("ACR1252", timeout=0.05)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        watch.wait_for("ACR1252", cancel=cancel)


def test_reader_watch_thread_notifies_listeners() -> None:
    fake = FakeReaderList()
    watch = ReaderWatch(fake, period=0.01)
    plugged = threading.Event()
    watch.add_listener(lambda added, removed: plugged.set() if added else None)
    watch.start()
    try:
        fake.names.append("Reader 00 00")
        assert plugged.wait(10)
    finally:
        watch.stop()


def test_reader_unplugged_and_plugged_back_while_waiting(vpcd_card: VpcdBridge) -> None:
    """Hot-plug: the reader disappears from the list, the reader object waits for it to come
    back, then sees the card in it."""
    fake = FakeReaderList("Virtual PCD 00 00")
    reader = PcscReader(
        "pcsc:Virtual PCD 00 00", "Virtual PCD 00 00", ReaderWatch(fake, period=0.02)
    )
    with reader:
        fake.names.clear()
        reader.reader_name = None  # what an unknown-reader status tells the reader
        with pytest.raises(ReaderTimeoutError):
            reader.wait_for_card(timeout=0.2)
        vpcd_card.insert(EchoCard())

        def plug_back() -> None:
            time.sleep(0.2)
            fake.names.append("Virtual PCD 00 00")

        threading.Thread(target=plug_back).start()
        assert reader.wait_for_card(timeout=10).uid == EchoCard.uid


def test_pcscd_stopping_is_reader_gone_and_restart_recovers(
    vpcd_card: VpcdBridge, pcscd: object
) -> None:
    from tests.conftest_hardware import Pcscd

    assert isinstance(pcscd, Pcscd)
    if not pcscd.owned:
        pytest.skip("pcscd was started outside the tests; not stopping it")
    vpcd_card.insert(EchoCard())
    reader = open_reader("pcsc:Virtual PCD 00 00")
    try:
        reader.wait_for_card(timeout=10)
        pcscd.stop()
        with pytest.raises(ReaderGoneError, match=r"systemctl enable --now pcscd\.socket"):
            reader.transceive(SELECT_PPSE)
        with pytest.raises(DeviceUnavailableError, match=r"systemctl enable --now pcscd\.socket"):
            open_reader("pcsc:")
    finally:
        pcscd.start()
    vpcd_card.insert(EchoCard())
    assert reader.wait_for_card(timeout=10).uid == EchoCard.uid
    reader.close()
    reader.close()  # closing twice is safe
