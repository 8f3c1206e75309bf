"""The `sim:` reader: it tells its virtual card when the card leaves the field, and the same
card comes back only when someone presents it again (a second tap)."""

from __future__ import annotations

import threading
import time

import pytest

from drivers.errors import CancelledError, CardRemovedError, ReaderTimeoutError
from drivers.sim import VirtualCardReader
from drivers.url import open_reader
from emv import apdu

VISA_AID = bytes.fromhex("A0000000031010")
# The visa profile's PDOL data (9F66 9F02 9F03 9F1A 95 5F2A 9A 9C 9F37): a qVSDC reader's.
PDOL_DATA = bytes.fromhex(
    "26004000" "000000001234" "000000000000" "0276" "0000000000" "0978" "260301" "00" "1A2B3C4D"
)  # fmt: skip


def _gpo_status(reader: VirtualCardReader) -> int:
    assert reader.transceive(apdu.select(VISA_AID).encode())[-2:] == b"\x90\x00"
    gpo = reader.transceive(apdu.get_processing_options(PDOL_DATA).encode())
    return int.from_bytes(gpo[-2:], "big")


def test_a_card_presented_again_is_the_same_card_on_a_new_tap() -> None:
    reader = open_reader("sim:visa?see_phone")
    assert isinstance(reader, VirtualCardReader)
    reader.wait_for_card(timeout=0)
    assert _gpo_status(reader) == 0x6986  # the phone: see phone, then tap again
    reader.wait_for_removal(timeout=1)
    with pytest.raises(ReaderTimeoutError):
        reader.wait_for_card(timeout=0.01)  # it does not come back by itself
    reader.present_again()
    reader.wait_for_card(timeout=0)
    assert _gpo_status(reader) == 0x9000  # the card saw it leave and come back: verified
    reader.present_again()  # already in the field: nothing changes
    reader.close()


def test_abort_ends_a_wedged_card_s_silence_and_every_later_command() -> None:
    reader = open_reader("sim:visa?hang_on=select")
    reader.wait_for_card(timeout=0)
    raised: list[BaseException] = []

    def talk() -> None:
        try:
            reader.transceive(apdu.select_ppse().encode())
        except CardRemovedError as exc:
            raised.append(exc)

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    talker.join(0.2)
    assert talker.is_alive()  # the card says nothing
    started = time.monotonic()
    reader.abort()
    talker.join(2)
    assert not talker.is_alive()
    assert time.monotonic() - started < 0.5
    assert raised  # the field went off under the card
    with pytest.raises(CancelledError, match="abandoned"):
        reader.transceive(apdu.select_ppse().encode())
    reader.close()
