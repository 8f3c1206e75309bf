"""The nfcpy reader's own logic over a fake frontend: no device, no socket, no card.

:class:`FakeFrontend` stands in for ``nfc.ContactlessFrontend`` (``NfcReader(frontend=)``)
and hands over a scripted ``Type4Tag`` that raises nfcpy's own exceptions. What is checked:
every nfcpy failure becomes the driver's error (drivers/errors.py) with what to do about it,
and the card loop: arrival, removal (the field switched off after), a card of another type.

The same driver on nfcpy's real stack (its udp device): tests/drivers/test_driver_nfc.py
(integration).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

import pytest

from drivers.errors import (
    CancelledError,
    CardRemovedError,
    DeviceUnavailableError,
    ReaderGoneError,
    ReaderProtocolError,
    ReaderTimeoutError,
    TransportLoopError,
)

pytest.importorskip("nfc", reason="nfcpy is not installed (pip install 'pipos[nfc]')")
import nfc.clf
import nfc.tag
import nfc.tag.tt4

from drivers.nfc import MAX_CHAINED_BLOCKS, MAX_FRAMES_PER_APDU, MAX_WTX_PER_APDU, NfcReader

SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")
UID = bytes.fromhex("04A1B2C3D4E5F6")


def echo(command: bytes) -> bytes:
    return command[::-1] + b"\x90\x00"


class FakeTag(nfc.tag.tt4.Type4Tag):
    """What nfcpy's ``connect`` hands over for an ISO-DEP card, with a scripted exchange:
    `respond(command)` answers (or raises nfcpy's exception); `present` is the R(NAK)
    presence check."""

    def __init__(self, respond: Callable[[bytes], Any] = echo, target: Any = None) -> None:
        nfc.tag.Tag.__init__(self, None, target)
        self.respond = respond
        self.present = True

    @property
    def identifier(self) -> bytes:
        return UID

    def transceive(self, data: bytes, timeout: float | None = None) -> Any:
        return self.respond(bytes(data))

    def _is_present(self) -> bool:
        return self.present


class FakeDevice:
    def __init__(self) -> None:
        self.muted = 0

    def mute(self) -> None:
        self.muted += 1


class FakeFrontend:
    """``nfc.ContactlessFrontend`` as the driver uses it: `opens` is what ``open`` returns
    (or raises); each ``connect`` hands over the next of `tags` (None: the field is empty),
    or raises `connect_error`."""

    def __init__(self, *tags: Any, opens: Any = True) -> None:
        self.tags = list(tags)
        self.opens = opens
        self.connect_error: BaseException | None = None
        self.device = FakeDevice()
        self.closed = False
        self.rdwr: dict[str, Any] = {}

    def __call__(self) -> FakeFrontend:  # the factory NfcReader(frontend=) calls
        return self

    def open(self, path: str) -> bool:
        if isinstance(self.opens, BaseException):
            raise self.opens
        return bool(self.opens)

    def connect(self, rdwr: dict[str, Any], terminate: Callable[[], bool]) -> Any:
        self.rdwr = rdwr
        if self.connect_error is not None:
            raise self.connect_error
        return self.tags.pop(0) if self.tags else None

    def close(self) -> None:
        self.closed = True


def _raise(exc: BaseException) -> Callable[[bytes], Any]:
    def respond(command: bytes) -> Any:
        raise exc

    return respond


def test_nfc_card_arrives_answers_and_leaves() -> None:
    tag = FakeTag()
    frontend = FakeFrontend(None, tag)  # one empty poll, then the card
    with NfcReader("nfc:usb?types=A", frontend=frontend) as reader:
        presence = reader.wait_for_card(timeout=1)
        assert presence.uid == UID
        assert presence.atr == bytes.fromhex("3B80800101")  # PC/SC part 3, no historical bytes
        assert frontend.rdwr["targets"] == ["106A"]
        assert reader.transceive(SELECT_PPSE) == SELECT_PPSE[::-1] + b"\x90\x00"
        with pytest.raises(ReaderTimeoutError, match="stayed"):
            reader.wait_for_removal(timeout=0.05)
        tag.present = False
        reader.wait_for_removal(timeout=1)
        assert frontend.device.muted == 1  # the field switched off for the next card
        with pytest.raises(ReaderTimeoutError, match="no card presented"):
            reader.wait_for_card(timeout=0.05)
    assert frontend.closed


@pytest.mark.parametrize(
    ("failure", "error", "message"),
    [
        (nfc.tag.TagCommandError(nfc.tag.TIMEOUT_ERROR), CardRemovedError, "card removed"),
        (nfc.tag.TagCommandError(nfc.tag.RECEIVE_ERROR), CardRemovedError, "card removed"),
        (nfc.tag.TagCommandError(nfc.tag.PROTOCOL_ERROR), ReaderProtocolError, "ISO-DEP"),
        (nfc.clf.BrokenLinkError("RFOFF"), CardRemovedError, "card removed"),
        (nfc.clf.TransmissionError("crc"), CardRemovedError, "card removed"),
        (OSError(errno.ENODEV, "No such device"), ReaderGoneError, "unplugged"),
    ],
)
def test_nfc_transceive_failures_become_driver_errors(
    failure: BaseException, error: type[Exception], message: str
) -> None:
    frontend = FakeFrontend(FakeTag(_raise(failure)))
    with NfcReader("nfc:usb", frontend=frontend) as reader:
        reader.wait_for_card(timeout=1)
        with pytest.raises(error, match=message) as caught:
            reader.transceive(SELECT_PPSE)
        assert caught.value.__cause__ is failure  # translated at the boundary, cause kept
        with pytest.raises(CardRemovedError, match="no card in the field"):
            reader.transceive(SELECT_PPSE)


def test_nfc_answer_without_status_word_is_card_removed() -> None:
    for answer in (None, b"\x90"):
        frontend = FakeFrontend(FakeTag(lambda command, a=answer: a))
        with NfcReader("nfc:usb", frontend=frontend) as reader:
            reader.wait_for_card(timeout=1)
            with pytest.raises(CardRemovedError, match="no status word"):
                reader.transceive(SELECT_PPSE)


def test_nfc_a_card_that_is_no_payment_card_is_refused() -> None:
    class Type2Tag:
        type = "Type2Tag"

    with (
        NfcReader("nfc:usb", frontend=FakeFrontend(Type2Tag())) as reader,
        pytest.raises(ReaderProtocolError, match="nfcpy sees a Type2Tag"),
    ):
        reader.wait_for_card(timeout=1)


def test_nfc_reader_lost_while_polling_is_reader_gone() -> None:
    frontend = FakeFrontend()
    frontend.connect_error = OSError(errno.EIO, "Input/output error")
    with (
        NfcReader("nfc:usb", frontend=frontend) as reader,
        pytest.raises(ReaderGoneError, match="stopped answering"),
    ):
        reader.wait_for_card(timeout=1)


@pytest.mark.parametrize(
    ("opens", "message", "fix"),
    [
        (OSError(errno.EACCES, "Permission denied"), "permission denied", "udev rule"),
        (OSError(errno.EBUSY, "Device busy"), "is busy", "stop pcscd"),
        (TimeoutError(), "no NFC reader answers", "python -m nfc"),
        (False, "no NFC reader answers", "lsusb"),
    ],
)
def test_nfc_device_that_does_not_open_says_how_to_fix_it(
    opens: Any, message: str, fix: str
) -> None:
    with pytest.raises(DeviceUnavailableError, match=message) as caught:
        NfcReader("nfc:tty:AMA0:pn532", frontend=FakeFrontend(opens=opens))
    assert fix in caught.value.fix


def test_nfc_type_b_card_gets_a_pcsc_style_atr() -> None:
    class Target:
        # ATQB: 50, PUPI (4), application data (4), protocol info (3)
        sensb_res = bytes.fromhex("5011223344A1A2A3A4B1B2B3")

    frontend = FakeFrontend(FakeTag(target=Target()))
    with NfcReader("nfc:usb?types=B", frontend=frontend) as reader:
        atr = reader.wait_for_card(timeout=1).atr
    historical = bytes.fromhex("A1A2A3A4B1B2B3")
    assert atr[:4] == bytes([0x3B, 0x80 | len(historical), 0x80, 0x01])
    assert atr[4:-1] == historical
    tck = 0
    for byte in atr[1:-1]:
        tck ^= byte
    assert atr[-1] == tck  # PC/SC part 3 §3.1.3.2.3: TCK over T0..Tk


# --- the bounds on one APDU (drivers.nfc._FrameBudget) ------------------------------------


class FrameCard:
    """nfcpy's frontend as its ISO-DEP initiator sees it: each frame answered by `answer`."""

    def __init__(self, answer: Callable[[bytes], bytes], delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.frames: list[bytes] = []
        self.timeouts: list[float] = []

    def exchange(self, data: bytes, timeout: float) -> bytearray:
        self.frames.append(bytes(data))
        self.timeouts.append(timeout)
        if self.delay:
            time.sleep(self.delay)
        return bytearray(self.answer(bytes(data)))


class IsoDepTag(FakeTag):
    """A tag with nfcpy's own ISO-DEP initiator (its WTX, chaining and retransmit loops)
    over a :class:`FrameCard`."""

    def __init__(self, card: FrameCard) -> None:
        super().__init__()
        self._dep = nfc.tag.tt4.IsoDepInitiator(card, 256, 0.01)

    def transceive(self, data: bytes, timeout: float | None = None) -> Any:
        return nfc.tag.tt4.Type4Tag.transceive(self, data, timeout)


def _reader_with(card: FrameCard, **options: Any) -> NfcReader:
    reader = NfcReader("nfc:usb?types=A", frontend=FakeFrontend(IsoDepTag(card)), **options)
    reader.wait_for_card(timeout=1)
    return reader


def test_nfc_iso_dep_answers_pass_through_the_budget() -> None:
    card = FrameCard(lambda frame: bytes([frame[0]]) + echo(frame[1:]))
    with _reader_with(card) as reader:
        assert reader.transceive(SELECT_PPSE) == echo(SELECT_PPSE)
        assert reader.transceive(SELECT_PPSE) == echo(SELECT_PPSE)  # a budget per APDU


def test_nfc_card_asking_for_more_time_forever_is_cut_at_the_bound() -> None:
    card = FrameCard(lambda frame: b"\xf2\x01")  # S(WTX) to the I-block and to every answer
    with (
        _reader_with(card) as reader,
        pytest.raises(TransportLoopError, match=r"more time \(S\(WTX\)\) 16 times"),
    ):
        reader.transceive(SELECT_PPSE)
    assert len(card.frames) == 1 + MAX_WTX_PER_APDU


def test_nfc_response_chained_forever_is_cut_at_the_bound() -> None:
    card = FrameCard(lambda frame: bytes([0x12 | (frame[0] & 1)]) + bytes(10))
    with (
        _reader_with(card) as reader,
        pytest.raises(TransportLoopError, match=f"more than {MAX_CHAINED_BLOCKS} chained"),
    ):
        reader.transceive(SELECT_PPSE)


def test_nfc_ack_with_the_wrong_block_number_forever_is_cut_at_the_bound() -> None:
    # nfcpy re-sends its I-block after an R(ACK) of the other block number, for ever.
    card = FrameCard(lambda frame: bytes([0xA2 | (~frame[0] & 1)]))
    with (
        _reader_with(card) as reader,
        pytest.raises(TransportLoopError, match=f"more than {MAX_FRAMES_PER_APDU} frames"),
    ):
        reader.transceive(SELECT_PPSE)


def test_nfc_one_apdu_may_not_take_longer_than_its_time() -> None:
    card = FrameCard(lambda frame: b"\xf2\x3b", delay=0.05)  # WTXM 59: a minute each
    with (
        _reader_with(card, apdu_timeout=0.2) as reader,
        pytest.raises(TransportLoopError, match=r"took longer than 0.2 s"),
    ):
        reader.transceive(SELECT_PPSE)
    # Every frame waited at most what was left of the APDU's time, not the card's 59 FWT.
    assert max(card.timeouts) <= 0.2


def test_nfc_abort_stops_before_the_next_frame() -> None:
    holder: list[NfcReader] = []

    def answer(frame: bytes) -> bytes:
        holder[0].abort()  # the checkout gives up while this frame is on the air
        return b"\xf2\x01"

    card = FrameCard(answer)
    reader = _reader_with(card)
    holder.append(reader)
    with pytest.raises(CancelledError, match="abandoned"):
        reader.transceive(SELECT_PPSE)
    assert len(card.frames) == 1
    with pytest.raises(CancelledError):
        reader.transceive(SELECT_PPSE)
    reader.close()
