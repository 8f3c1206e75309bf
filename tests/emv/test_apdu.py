"""Command APDU encodings and the 61xx / 6Cxx transport rules."""

from __future__ import annotations

import pytest

from emv import apdu
from emv.apdu import ApduError, ApduExchange, CryptogramType, ResponseApdu


def test_command_encodings_known_answers() -> None:
    assert apdu.select_ppse().encode() == bytes.fromhex("00A404000E325041592E5359532E444446303100")
    assert apdu.select(bytes.fromhex("A0000000031010")).encode() == bytes.fromhex(
        "00A4040007A000000003101000"
    )
    assert apdu.select(b"\xa0\x00\x00\x00\x03", next_occurrence=True).encode()[:4] == bytes.fromhex(
        "00A40402"
    )
    assert apdu.get_processing_options(b"").encode() == bytes.fromhex("80A8000002830000")
    assert apdu.get_processing_options(bytes.fromhex("36A04000")).encode() == bytes.fromhex(
        "80A8000006830436A0400000"
    )
    # PDOL data of 128 bytes or more: tag 83's length takes the long form (Book 3 Annex B2),
    # so Lc = 1 + 2 + 130 = 133 (0x85) and the template reads 83 81 82.
    long_gpo = apdu.get_processing_options(bytes(130)).encode()
    assert long_gpo[:8] == bytes.fromhex("80A8000085838182")
    assert apdu.read_record(1, 1).encode() == bytes.fromhex("00B2010C00")
    assert apdu.read_record(3, 2).encode() == bytes.fromhex("00B2021C00")
    assert apdu.generate_ac(CryptogramType.ARQC, b"\x01\x02", cda_requested=True).encode() == (
        bytes.fromhex("80AE900002010200")
    )
    assert apdu.generate_ac(CryptogramType.TC, b"").encode() == bytes.fromhex("80AE400000")
    assert apdu.get_data(0x9F36).encode() == bytes.fromhex("80CA9F3600")
    assert apdu.internal_authenticate(b"\xca\xfe\xba\xbe").encode() == bytes.fromhex(
        "0088000004CAFEBABE00"
    )
    assert apdu.compute_cryptographic_checksum(b"\x00\x00\x00\x01").encode() == bytes.fromhex(
        "802A8E80040000000100"
    )


def test_builders_refuse_out_of_range_parameters() -> None:
    with pytest.raises(ApduError, match="SFI 31"):
        apdu.read_record(31, 1)
    with pytest.raises(ApduError, match="record number 0"):
        apdu.read_record(1, 0)
    with pytest.raises(ApduError, match="exceeds 255"):
        apdu.internal_authenticate(bytes(256)).encode()


def test_status_words_have_meanings() -> None:
    assert ResponseApdu.parse(bytes.fromhex("9000")).ok
    assert ResponseApdu.parse(bytes.fromhex("6A82")).meaning == "file or application not found"
    assert ResponseApdu.parse(bytes.fromhex("63C2")).meaning == "verification failed, 2 tries left"
    assert ResponseApdu.parse(bytes.fromhex("6283")).warning
    with pytest.raises(ApduError, match="no status word"):
        ResponseApdu.parse(b"\x90")


def test_61xx_is_collected_with_get_response() -> None:
    exchange = ApduExchange(apdu.read_record(1, 1))
    assert exchange.start() == bytes.fromhex("00B2010C00")
    follow = exchange.feed(bytes.fromhex("7003") + bytes.fromhex("6103"))
    assert follow == bytes.fromhex("00C0000003")
    final = exchange.feed(bytes.fromhex("9F36019000"))
    assert final == ResponseApdu(bytes.fromhex("70039F3601"), 0x9000)


def test_6cxx_resends_with_the_exact_length_once() -> None:
    exchange = ApduExchange(apdu.get_data(0x9F36))
    exchange.start()
    assert exchange.feed(bytes.fromhex("6C05")) == bytes.fromhex("80CA9F3605")
    with pytest.raises(ApduError, match="6Cxx twice"):
        exchange.feed(bytes.fromhex("6C05"))


def test_endless_61xx_is_bounded() -> None:
    exchange = ApduExchange(apdu.read_record(1, 1))
    exchange.start()
    for _ in range(apdu.MAX_GET_RESPONSE):
        assert exchange.feed(bytes.fromhex("AA6101")) == bytes.fromhex("00C0000001")
    with pytest.raises(ApduError, match="kept answering 61xx"):
        exchange.feed(bytes.fromhex("AA6101"))
