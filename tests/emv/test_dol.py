"""DOL building and parsing (EMV Book 3 §5.4), against hand-worked examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv.dol import DolEntry, build_dol, dol_length, fit_value, parse_dol, split_dol_data
from emv.tlv import TlvError

# A Visa-style PDOL: TTQ(4) amount(6) other amount(6) country(2) TVR(5) currency(2)
# date(3) type(1) UN(4).
VISA_PDOL = bytes.fromhex("9F66049F02069F03069F1A0295055F2A029A039C019F3704")


def test_parse_pdol_entries() -> None:
    assert parse_dol(VISA_PDOL) == (
        DolEntry(0x9F66, 4),
        DolEntry(0x9F02, 6),
        DolEntry(0x9F03, 6),
        DolEntry(0x9F1A, 2),
        DolEntry(0x95, 5),
        DolEntry(0x5F2A, 2),
        DolEntry(0x9A, 3),
        DolEntry(0x9C, 1),
        DolEntry(0x9F37, 4),
    )
    assert dol_length(VISA_PDOL) == 33


def test_build_pdol_hand_worked() -> None:
    data = {
        0x9F66: bytes.fromhex("36A04000"),
        0x9F02: bytes.fromhex("000000001234"),
        0x9F1A: bytes.fromhex("0276"),
        0x95: bytes(5),
        0x5F2A: bytes.fromhex("0978"),
        0x9A: bytes.fromhex("261125"),
        0x9C: b"\x00",
        0x9F37: bytes.fromhex("CAFEBABE"),
        # 9F03 is absent: zeros of the requested length
    }
    expected = bytes.fromhex("36A0400000000000123400000000000002760000000000097826112500CAFEBABE")
    assert build_dol(VISA_PDOL, data) == expected


def test_numeric_is_right_aligned_and_truncated_on_the_left() -> None:
    amount = bytes.fromhex("000000001234")
    assert fit_value(0x9F02, amount, 8) == bytes.fromhex("0000000000001234")
    assert fit_value(0x9F02, amount, 4) == bytes.fromhex("00001234")


def test_compressed_numeric_is_padded_with_f_and_cut_on_the_right() -> None:
    pan = bytes.fromhex("4761739001010119")
    assert fit_value(0x5A, pan, 10) == bytes.fromhex("4761739001010119FFFF")
    assert fit_value(0x5A, pan, 4) == bytes.fromhex("47617390")


def test_text_and_binary_are_left_aligned_with_zeros_and_cut_on_the_right() -> None:
    assert fit_value(0x9F1C, b"TERM0001", 10) == b"TERM0001\x00\x00"
    assert fit_value(0x9F1C, b"TERM0001", 4) == b"TERM"
    assert fit_value(0x9F37, bytes.fromhex("01020304"), 2) == bytes.fromhex("0102")
    assert fit_value(0x9F37, bytes.fromhex("0102"), 4) == bytes.fromhex("01020000")


def test_absent_and_constructed_tags_are_zero_filled() -> None:
    dol = bytes.fromhex("DF7F037002")
    # DF7F has no value; 70 is a template, which a DOL never carries (§5.4).
    assert build_dol(dol, {0x70: b"xy"}) == bytes(5)
    # A tag outside the dictionary that the terminal holds a value for is sent as binary.
    assert build_dol(bytes.fromhex("DF7F03"), {0xDF7F: b"ab"}) == b"ab\x00"


def test_split_reverses_build() -> None:
    data = {0x9F02: bytes.fromhex("000000000100"), 0x9F37: bytes.fromhex("01020304")}
    related = build_dol(VISA_PDOL, data)
    values = split_dol_data(VISA_PDOL, related)
    assert values[0x9F02] == data[0x9F02]
    assert values[0x9F37] == data[0x9F37]
    with pytest.raises(TlvError, match="DOL data of 33 bytes, got 34"):
        split_dol_data(VISA_PDOL, related + b"\x00")


def test_malformed_dol_is_reported() -> None:
    with pytest.raises(TlvError, match="a length byte"):
        parse_dol(bytes.fromhex("9F66"))


@given(st.binary(max_size=200))
def test_parse_dol_raises_only_tlv_error(data: bytes) -> None:
    try:
        entries = parse_dol(data)
    except TlvError:
        return
    assert all(entry.length >= 0 for entry in entries)
