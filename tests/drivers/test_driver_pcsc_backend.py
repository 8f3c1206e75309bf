"""The PC/SC reader's own logic over a fake pyscard: no pcscd, no reader, no card.

:class:`FakeScard` stands in for ``smartcard.scard`` (``PcscReader(backend=)``) and answers
with real PC/SC result codes. What is checked: every result code becomes the driver's error
(drivers/errors.py) with a message saying what happened, and the APDU loop: card arrival and
removal, T=0 fix-ups, the reader unplugged and back, pcscd restarted.

The same driver against the real pcscd + vpcd: tests/drivers/test_driver_pcsc.py (integration).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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

scard = pytest.importorskip(
    "smartcard.scard", reason="pyscard is not installed (pip install 'pipos[pcsc]')"
)
from drivers.pcsc import MAX_GET_RESPONSES, PcscReader, ReaderWatch  # noqa: E402

SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")
UID = bytes.fromhex("04A1B2C3D4E5F6")


def echo(command: bytes) -> bytes:
    return command[::-1] + b"\x90\x00"


OK = scard.SCARD_S_SUCCESS
ATR = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")


class FakeScard:
    """``smartcard.scard`` as the driver calls it, over one simulated pcscd: `readers` it
    lists, `service` (False: pcscd stopped), `card` (None: the field is empty; else it
    answers each C-APDU), `protocol` the card speaks, and `transmit_codes` (result codes the
    next SCardTransmit calls fail with, one each). As pcscd does, a reader's state carries
    an event count in its high word, so a card taken away and put back is a change."""

    def __init__(self, readers: tuple[str, ...] = ("ACS ACR1252 Dual Reader PICC 00 00",)) -> None:
        self.readers = list(readers)
        self.service = True
        self.card: Callable[[bytes], bytes] | None = None
        self.protocol = scard.SCARD_PROTOCOL_T1
        self.connect_code = OK
        self.transmit_codes: list[int] = []
        self.sent: list[bytes] = []
        self.contexts = 0
        self.events = 0

    def insert(self, card: Callable[[bytes], bytes] = echo) -> None:
        def with_uid(command: bytes) -> bytes:
            if command == bytes.fromhex("FFCA000000"):  # PC/SC part 3: the card's UID
                return UID + b"\x90\x00"
            return card(command)

        self.card = with_uid
        self.events += 1

    def remove(self) -> None:
        self.card = None
        self.events += 1

    def SCardEstablishContext(self, scope: int) -> tuple[int, int]:
        if not self.service:
            return scard.SCARD_E_NO_SERVICE, 0
        self.contexts += 1
        return OK, 1000 + self.contexts

    def SCardReleaseContext(self, context: int) -> int:
        return OK

    def SCardListReaders(self, context: int, groups: list[str]) -> tuple[int, list[str]]:
        if not self.service:
            return scard.SCARD_E_NO_SERVICE, []
        if not self.readers:
            return scard.SCARD_E_NO_READERS_AVAILABLE, []
        return OK, list(self.readers)

    def SCardGetStatusChange(
        self, context: int, timeout_ms: int, states: list[tuple[str, int]]
    ) -> tuple[int, list[tuple[str, int, list[int]]]]:
        [(name, known)] = states
        if not self.service:
            return scard.SCARD_E_NO_SERVICE, []
        if name not in self.readers:
            return scard.SCARD_E_UNKNOWN_READER, []
        state = scard.SCARD_STATE_PRESENT if self.card else scard.SCARD_STATE_EMPTY
        state |= self.events << 16
        if known == state:
            time.sleep(min(timeout_ms, 10) / 1000)  # nothing changed: pcscd waits
            return scard.SCARD_E_TIMEOUT, [(name, known, [])]
        atr = list(ATR) if self.card else []
        return OK, [(name, state | scard.SCARD_STATE_CHANGED, atr)]

    def SCardConnect(
        self, context: int, reader: str, share: int, protocols: int
    ) -> tuple[int, int, int]:
        if self.connect_code != OK:
            return self.connect_code, 0, 0
        if self.card is None:
            return scard.SCARD_E_NO_SMARTCARD, 0, 0
        return OK, 7, self.protocol

    def SCardTransmit(self, card: int, protocol: int, command: list[int]) -> tuple[int, list[int]]:
        self.sent.append(bytes(command))
        if self.transmit_codes:
            return self.transmit_codes.pop(0), []
        if self.card is None:
            return scard.SCARD_W_REMOVED_CARD, []
        return OK, list(self.card(bytes(command)))

    def SCardDisconnect(self, card: int, disposition: int) -> int:
        return OK


@pytest.fixture
def fake_pcsc() -> FakeScard:
    return FakeScard()


def _pcsc(fake: FakeScard, pattern: str = "") -> PcscReader:
    # A fast reader watch: the reader list straight from the fake, polled every 10 ms.
    watch = ReaderWatch(lambda: list(fake.readers), period=0.01)
    return PcscReader(f"pcsc:{pattern}", pattern, watch, backend=fake)


def test_pcsc_card_arrives_answers_and_leaves(fake_pcsc: FakeScard) -> None:
    with _pcsc(fake_pcsc, "ACR1252") as reader:
        with pytest.raises(ReaderTimeoutError, match="no card presented"):
            reader.wait_for_card(timeout=0.05)
        fake_pcsc.insert()
        presence = reader.wait_for_card(timeout=1)
        assert (presence.uid, presence.atr) == (UID, ATR)
        assert reader.transceive(SELECT_PPSE) == SELECT_PPSE[::-1] + b"\x90\x00"
        with pytest.raises(ReaderTimeoutError, match="stayed"):
            reader.wait_for_removal(timeout=0.05)
        fake_pcsc.remove()
        reader.wait_for_removal(timeout=1)


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        # What pcscd answers when the card leaves between or during commands (measured with
        # vpcd: 0x80100016, then 0x80100069), or stops answering.
        (scard.SCARD_E_NOT_TRANSACTED, CardRemovedError, "card removed during a command"),
        (scard.SCARD_W_REMOVED_CARD, CardRemovedError, "card removed during a command"),
        (scard.SCARD_W_UNRESPONSIVE_CARD, CardRemovedError, "card removed during a command"),
        (scard.SCARD_E_READER_UNAVAILABLE, ReaderGoneError, "reader was unplugged"),
        (
            scard.SCARD_E_NO_SERVICE,
            ReaderGoneError,
            r"pcscd stopped .* systemctl enable --now pcscd\.socket",
        ),
        (scard.SCARD_E_INVALID_PARAMETER, ReaderProtocolError, "command failed"),
    ],
)
def test_pcsc_transmit_failures_become_driver_errors(
    fake_pcsc: FakeScard, code: int, error: type[Exception], message: str
) -> None:
    fake_pcsc.insert()
    with _pcsc(fake_pcsc) as reader:
        reader.wait_for_card(timeout=1)
        fake_pcsc.transmit_codes = [code]
        with pytest.raises(error, match=message) as caught:
            reader.transceive(SELECT_PPSE)
        if error is not ReaderGoneError or code == scard.SCARD_E_NO_SERVICE:
            assert f"0x{code & 0xFFFFFFFF:08X}" in str(caught.value)  # the code, for support
        if error is ReaderProtocolError:
            # A command that failed says nothing about the card: it is still connected.
            assert reader.transceive(SELECT_PPSE).endswith(b"\x90\x00")
            return
        # The card is gone (or its reader, or pcscd): the next command says so and never
        # reaches pcscd.
        sent = len(fake_pcsc.sent)
        with pytest.raises(CardRemovedError, match="no card connected"):
            reader.transceive(SELECT_PPSE)
        assert len(fake_pcsc.sent) == sent


def test_pcsc_answer_without_status_word_is_card_removed(fake_pcsc: FakeScard) -> None:
    fake_pcsc.insert(lambda command: b"\x90")
    with _pcsc(fake_pcsc) as reader:
        reader.wait_for_card(timeout=1)
        with pytest.raises(CardRemovedError, match="no status word"):
            reader.transceive(SELECT_PPSE)


def test_pcsc_t0_card_gets_its_le_fixed_and_its_response_fetched(fake_pcsc: FakeScard) -> None:
    """ISO/IEC 7816-3 §10.3.3 (6Cxx: resend with Le=xx), ISO/IEC 7816-4 §5.1.3 (61xx: GET
    RESPONSE), as a contact card in a dual reader answers."""
    data = bytes(range(0x20))

    def t0_card(command: bytes) -> bytes:
        if command == SELECT_PPSE[:-1] + b"\x00":
            return b"\x6c\x20"  # wrong Le: resend with Le=0x20
        if command == SELECT_PPSE[:-1] + b"\x20":
            return data[:0x10] + b"\x61\x10"  # 16 more bytes are waiting
        if command == bytes.fromhex("00C0000010"):
            return data[0x10:] + b"\x90\x00"
        return b"\x6d\x00"

    fake_pcsc.protocol = scard.SCARD_PROTOCOL_T0
    fake_pcsc.insert(t0_card)
    with _pcsc(fake_pcsc) as reader:
        reader.wait_for_card(timeout=1)
        assert reader.transceive(SELECT_PPSE) == data + b"\x90\x00"
    assert fake_pcsc.sent[-3:] == [
        SELECT_PPSE,
        SELECT_PPSE[:-1] + b"\x20",
        bytes.fromhex("00C0000010"),
    ]


def test_pcsc_t0_card_answering_more_data_forever_is_cut_at_the_bound(
    fake_pcsc: FakeScard,
) -> None:
    """A T=0 card answering '61xx' to every GET RESPONSE used to hold the driver for ever."""

    def more_data(command: bytes) -> bytes:
        return bytes(0x10) + b"\x61\x10" if command[1] == 0xC0 else b"\x61\x10"

    fake_pcsc.protocol = scard.SCARD_PROTOCOL_T0
    fake_pcsc.insert(more_data)
    with _pcsc(fake_pcsc) as reader:
        reader.wait_for_card(timeout=1)
        sent = len(fake_pcsc.sent)
        with pytest.raises(TransportLoopError, match=r"kept answering '61xx' \(more data\)"):
            reader.transceive(SELECT_PPSE)
    # The command and MAX_GET_RESPONSES GET RESPONSE commands, not one more.
    assert len(fake_pcsc.sent) - sent == 1 + MAX_GET_RESPONSES


def test_pcsc_t0_response_over_the_byte_cap_is_cut(fake_pcsc: FakeScard) -> None:
    def huge(command: bytes) -> bytes:
        return bytes(0xFF) + b"\x61\x00"  # 255 bytes and "256 more", every time

    fake_pcsc.protocol = scard.SCARD_PROTOCOL_T0
    fake_pcsc.insert(huge)
    with _pcsc(fake_pcsc) as reader:
        reader.wait_for_card(timeout=1)
        with pytest.raises(TransportLoopError):
            reader.transceive(SELECT_PPSE)


def test_pcsc_t0_card_answering_wrong_length_forever_is_an_error(fake_pcsc: FakeScard) -> None:
    def wrong_length(command: bytes) -> bytes:
        return bytes([0x6C, (command[-1] + 1) & 0xFF])

    fake_pcsc.protocol = scard.SCARD_PROTOCOL_T0
    fake_pcsc.insert(wrong_length)
    with _pcsc(fake_pcsc) as reader:
        reader.wait_for_card(timeout=1)
        sent = len(fake_pcsc.sent)
        with pytest.raises(TransportLoopError, match=r"'6C02' \(wrong length\) again"):
            reader.transceive(SELECT_PPSE)
    assert fake_pcsc.sent[sent:] == [SELECT_PPSE, SELECT_PPSE[:-1] + b"\x01"]


def test_pcsc_abort_never_waits_for_the_stuck_transmit(fake_pcsc: FakeScard) -> None:
    """pyscard's transmit has no timeout and PC/SC serialises one context's calls: abort
    leaves the card reset to a thread of its own and sends nothing more."""
    stuck, release = threading.Event(), threading.Event()
    disconnects: list[int] = []

    def wedged(command: bytes) -> bytes:
        stuck.set()
        release.wait(10)
        return b"\x90\x00"

    def disconnect(card: int, disposition: int) -> int:
        release.wait(10)  # as pcsc-lite: waits for the transmit holding the context
        disconnects.append(disposition)
        return OK

    fake_pcsc.insert(wedged)
    fake_pcsc.SCardDisconnect = disconnect  # type: ignore[method-assign]
    reader = _pcsc(fake_pcsc)
    reader.wait_for_card(timeout=1)
    errors: list[BaseException] = []

    def talk() -> None:
        try:
            reader.transceive(SELECT_PPSE)
            reader.transceive(SELECT_PPSE)
        except CancelledError as exc:
            errors.append(exc)

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    assert stuck.wait(5)
    started = time.monotonic()
    reader.abort()
    assert time.monotonic() - started < 0.1
    release.set()
    talker.join(5)
    assert errors  # the second command was never sent
    assert "abandoned" in str(errors[0])
    reader.close()
    deadline = time.monotonic() + 5
    while not disconnects and time.monotonic() < deadline:
        time.sleep(0.01)
    assert disconnects == [scard.SCARD_RESET_CARD]


def test_pcscd_not_running_says_how_to_start_it(fake_pcsc: FakeScard) -> None:
    fake_pcsc.service = False
    with pytest.raises(DeviceUnavailableError, match="pcscd does not answer") as caught:
        _pcsc(fake_pcsc)
    assert "systemctl enable --now pcscd.socket" in caught.value.fix


def test_pcsc_no_reader_and_wrong_name_say_what_to_do(fake_pcsc: FakeScard) -> None:
    with pytest.raises(DeviceUnavailableError, match="no PC/SC reader name contains") as caught:
        _pcsc(fake_pcsc, "Omnikey")
    assert "pcsc:ACS ACR1252 Dual Reader PICC 00 00" in caught.value.fix
    fake_pcsc.readers = []
    with pytest.raises(DeviceUnavailableError, match="sees no reader") as caught:
        _pcsc(fake_pcsc)
    assert "libccid" in caught.value.fix


def test_pcsc_reader_held_by_another_program(fake_pcsc: FakeScard) -> None:
    fake_pcsc.insert()
    fake_pcsc.connect_code = scard.SCARD_E_SHARING_VIOLATION
    with _pcsc(fake_pcsc) as reader, pytest.raises(DeviceUnavailableError, match="in use"):
        reader.wait_for_card(timeout=1)


def test_pcsc_reader_unplugged_then_back_while_waiting(fake_pcsc: FakeScard) -> None:
    with _pcsc(fake_pcsc) as reader:
        fake_pcsc.readers = []
        with pytest.raises(ReaderTimeoutError):
            reader.wait_for_card(timeout=0.05)
        assert reader.reader_name is None  # it noticed, and waits for the reader
        fake_pcsc.readers = ["ACS ACR1252 Dual Reader PICC 00 00"]
        fake_pcsc.insert()
        assert reader.wait_for_card(timeout=1).uid == UID


def test_pcscd_restart_between_cards(fake_pcsc: FakeScard) -> None:
    fake_pcsc.insert()
    with _pcsc(fake_pcsc) as reader:
        reader.wait_for_card(timeout=1)
        fake_pcsc.service = False
        fake_pcsc.transmit_codes = [scard.SCARD_E_NO_SERVICE]
        with pytest.raises(ReaderGoneError, match=r"systemctl enable --now pcscd\.socket"):
            reader.transceive(SELECT_PPSE)
        with pytest.raises(ReaderGoneError, match="pcscd stopped"):
            reader.wait_for_card(timeout=1)
        fake_pcsc.service = True  # pcscd is back (the virtual card reconnects to it)
        fake_pcsc.insert()
        assert reader.wait_for_card(timeout=1).uid == UID
        assert reader.transceive(SELECT_PPSE).endswith(b"\x90\x00")
    assert fake_pcsc.contexts == 2
