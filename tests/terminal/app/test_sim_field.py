"""The simulated field at the counter: a card taken away during a transaction and presented
again by the same URL is the same card (a second tap); any other URL, or the next
transaction, gets a new one."""

from __future__ import annotations

import threading

import pytest

from drivers.errors import CancelledError, ReaderTimeoutError
from emv import apdu
from terminal.app.sim_field import SimulatedField

SEE_PHONE = "sim:visa?see_phone"
VISA_AID = bytes.fromhex("A0000000031010")
# The visa profile's PDOL data (9F66 9F02 9F03 9F1A 95 5F2A 9A 9C 9F37): a qVSDC reader's.
PDOL_DATA = bytes.fromhex(
    "26004000" "000000001234" "000000000000" "0276" "0000000000" "0978" "260301" "00" "1A2B3C4D"
)  # fmt: skip


def _gpo_status(reader: object) -> int:
    transceive = reader.transceive  # type: ignore[attr-defined]
    assert transceive(apdu.select(VISA_AID).encode())[-2:] == b"\x90\x00"
    gpo: bytes = transceive(apdu.get_processing_options(PDOL_DATA).encode())
    return int.from_bytes(gpo[-2:], "big")


def test_the_same_card_presented_again_is_tapped_again() -> None:
    field = SimulatedField()
    reader = field.reader()
    field.present(SEE_PHONE)
    reader.wait_for_card(timeout=1)
    assert _gpo_status(reader) == 0x6986  # see phone
    reader.wait_for_removal(timeout=1)
    with pytest.raises(ReaderTimeoutError):
        reader.wait_for_card(timeout=0.05)  # the field is empty until someone taps
    field.present(SEE_PHONE)
    reader.wait_for_card(timeout=1)
    assert _gpo_status(reader) == 0x9000  # the same phone, verified on its second tap
    reader.close()


def test_another_url_or_the_next_transaction_gets_a_new_card() -> None:
    field = SimulatedField()
    reader = field.reader()
    field.present(SEE_PHONE)
    reader.wait_for_card(timeout=1)
    assert _gpo_status(reader) == 0x6986
    reader.wait_for_removal(timeout=1)
    field.present("sim:visa?see_phone=1")  # another URL: another card
    reader.wait_for_card(timeout=1)
    assert _gpo_status(reader) == 0x6986
    reader.wait_for_removal(timeout=1)
    reader.close()
    nxt = field.reader()  # a new transaction forgets the card that left the last one
    field.present(SEE_PHONE)
    nxt.wait_for_card(timeout=1)
    assert _gpo_status(nxt) == 0x6986
    nxt.close()


def test_waiting_for_the_second_tap_is_cancellable() -> None:
    field = SimulatedField()
    reader = field.reader()
    field.present("sim:visa")
    reader.wait_for_card(timeout=1)
    reader.wait_for_removal(timeout=1)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        reader.wait_for_card(timeout=5, cancel=cancel)
    reader.close()
