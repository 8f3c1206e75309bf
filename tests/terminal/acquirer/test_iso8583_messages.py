"""The ISO 8583 link's messages, byte for byte.

Each expected message is written out here from ISO 8583:1987 and the default profile
(docs/iso8583.md): the bitmaps worked by hand bit by bit, every field in its encoding, the
MAC computed by the ISO 9797-1 algorithm written out in test_iso8583_codec. None of it is
what the codec produced and was then copied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from terminal.acquirer.iso8583.codec import (
    Message,
    MessageFormatError,
    decode_message,
    encode_message,
)
from terminal.acquirer.iso8583.messages import (
    AnswerMismatchError,
    CardData,
    OriginalMessage,
    ReconciliationTotals,
    Request,
    Station,
    answer_mti,
    check_answer,
    echo_test,
    financial_request,
    icc_data,
    reconciliation,
    reversal,
)
from terminal.acquirer.iso8583.profile import default_profile

from .test_iso8583_codec import DES_KEY, _retail_mac_by_hand

PROFILE = default_profile()
STATION = Station(terminal_id="TERM0001", merchant_id="MERCHANT0000001")
#: 09:30:15 in UTC+1 on 2 December: 08:30:15 UTC.
NOW = datetime(2026, 12, 2, 9, 30, 15, tzinfo=timezone(timedelta(hours=1)))
EMV = {
    "9F26": bytes.fromhex("1122334455667788"),
    "9F27": b"\x80",
    "9F36": b"\x00\x2a",
    "5A": bytes.fromhex("4761739001010119"),  # never in field 55: the PAN is in field 2
}
CARD = CardData(pan="4761739001010119", expiry_yymm="2812", pan_sequence=1)


def _purchase() -> Request:
    return financial_request(
        "purchase",
        station=STATION,
        stan=42,
        now=NOW,
        amount=1234,
        currency=978,
        card=CARD,
        emv=EMV,
    )


def test_field_55_is_the_online_data_without_the_pan() -> None:
    expected = "9F260811223344556677889F2701809F3602002A"
    assert icc_data(EMV).hex().upper() == expected


def test_a_contactless_purchase_0200_byte_for_byte() -> None:
    raw = encode_message(PROFILE, "0200", _purchase().fields, DES_KEY)
    # Fields 2 3 4 7 | 11 12 13 14 | 22 23 24 | 25 | 41 42 | 49 55 | 64:
    # 0111 0010 | 0011 1100 | 0000 0111 | 1000 0000 | 0000 0000 | 1100 0000 | 1000 0010 | 0000 0001
    bitmap = bytes.fromhex("723C078000C08201")
    icc = bytes.fromhex("9F260811223344556677889F2701809F3602002A")
    body = (
        b"0200"
        + bitmap
        + b"16"
        + b"4761739001010119"  # 2, LLVAR
        + b"000000"  # 3: goods and services
        + b"000000001234"  # 4
        + b"1202083015"  # 7: MMDDhhmmss in UTC
        + b"000042"  # 11
        + b"093015"  # 12: local time
        + b"1202"  # 13: local date
        + b"2812"  # 14: expiry YYMM
        + b"072"  # 22: contactless chip, cannot take a PIN
        + b"001"  # 23
        + b"000"  # 24
        + b"00"  # 25
        + b"TERM0001"  # 41
        + b"MERCHANT0000001"  # 42
        + b"978"  # 49
        + b"020"
        + icc  # 55, LLLVAR
    )
    assert raw == body + _retail_mac_by_hand(DES_KEY, body, 1)


def test_its_reversal_0400_names_the_original_in_field_90() -> None:
    purchase = _purchase()
    original = OriginalMessage("0200", purchase.stan, NOW, purchase.fields)
    later = NOW + timedelta(seconds=31)
    request = reversal(original, station=STATION, stan=43, now=later)
    assert request.mti == "0400"
    assert request.fields["90"] == "0200" + "000042" + "1202083015" + "0" * 11 + "0" * 11
    assert request.fields["11"] == "000043"
    assert request.fields["7"] == "1202083046"
    assert {k: request.fields[k] for k in ("2", "3", "4", "49", "55")} == {
        k: purchase.fields[k] for k in ("2", "3", "4", "49", "55")
    }
    raw = encode_message(PROFILE, request.mti, request.fields, DES_KEY)
    # Field 90 is above 64: a secondary bitmap (bit 1 set), and the MAC in field 128.
    assert raw[4] & 0x80
    secondary = raw[12:20]
    assert secondary == bytes.fromhex("0000004000000001")  # bits 90 and 128
    assert raw[-8:] == _retail_mac_by_hand(DES_KEY, raw[:-8], 1)
    # Field 25 is the original's POS condition code: a hold's follow-up (06) stays 06.
    follow_up = OriginalMessage("0100", "000044", NOW, {**purchase.fields, "25": "06"})
    assert reversal(follow_up, station=STATION, stan=45, now=later).fields["25"] == "06"


def test_an_echo_test_carries_network_management_code_301() -> None:
    request = echo_test(station=STATION, stan=7, now=NOW)
    assert (request.mti, request.fields["70"], request.fields["7"]) == ("0800", "301", "1202083015")


def test_refund_and_void_processing_codes_and_the_void_s_original() -> None:
    common = {"station": STATION, "stan": 9, "now": NOW, "amount": 500, "currency": 978}
    refund = financial_request("refund", card=CARD, **common)  # type: ignore[arg-type]
    void = financial_request(
        "void",
        card=None,
        original_rrn="634512000042",
        original_auth_code="A1B2C3",
        **common,  # type: ignore[arg-type]
    )
    assert refund.fields["3"] == "200000"
    assert (void.fields["3"], void.fields["37"], void.fields["38"]) == (
        "020000",
        "634512000042",
        "A1B2C3",
    )
    assert "2" not in void.fields


def test_a_card_with_track_2_sends_it_instead_of_the_pan() -> None:
    card = CardData(track2="4761739001010119D28122011234567F", entry_mode="contactless_magstripe")
    fields = card.fields()
    assert fields == {"35": "4761739001010119D28122011234567", "22": "912"}


def test_reconciliation_totals_fields_74_to_97() -> None:
    totals = ReconciliationTotals(
        debits_count=3, debits_amount=4500, credits_count=1, credits_amount=700
    )
    request = reconciliation(
        totals, station=STATION, stan=50, now=NOW, batch_number=12, currency=978
    )
    f = request.fields
    assert (request.mti, f["3"], f["60"]) == ("0500", "920000", "000012")
    assert (f["74"], f["76"], f["86"], f["88"]) == (
        "0000000001",
        "0000000003",
        "0000000000000700",
        "0000000000004500",
    )
    assert f["97"] == "C0000000000003800"
    encode_message(PROFILE, request.mti, request.fields, DES_KEY)  # fits the profile


@pytest.mark.parametrize(
    ("request_mti", "answer"),
    [("0100", "0110"), ("0200", "0210"), ("0220", "0230"), ("0400", "0410"), ("0800", "0810")],
)
def test_the_answer_type_is_the_function_digit_plus_one(request_mti: str, answer: str) -> None:
    assert answer_mti(request_mti) == answer


def test_an_answer_must_echo_the_request() -> None:
    purchase = _purchase()
    echoed = {"11": "000042", "41": "TERM0001", "39": "51"}
    assert check_answer(purchase, Message("0210", echoed)) == "51"
    with pytest.raises(AnswerMismatchError, match="0210, not 0230"):
        check_answer(purchase, Message("0230", echoed))
    with pytest.raises(AnswerMismatchError, match="STAN"):
        check_answer(purchase, Message("0210", {**echoed, "11": "000041"}))
    with pytest.raises(AnswerMismatchError, match="terminal id"):
        check_answer(purchase, Message("0210", {**echoed, "41": "TERM0002"}))
    with pytest.raises(AnswerMismatchError, match="no response code"):
        check_answer(purchase, Message("0210", {"11": "000042", "41": "TERM0001"}))


def test_an_answer_decoded_from_the_wire_is_checked_the_same() -> None:
    purchase = _purchase()
    answer = encode_message(
        PROFILE,
        "0210",
        {"11": "000042", "37": "634512000042", "38": "A1B2C3", "39": "00", "41": "TERM0001"},
        DES_KEY,
    )
    assert check_answer(purchase, decode_message(PROFILE, answer, DES_KEY)) == "00"


def test_bad_inputs_are_refused_before_anything_is_built() -> None:
    with pytest.raises(MessageFormatError, match="STAN"):
        echo_test(station=STATION, stan=1_000_000, now=NOW)
    with pytest.raises(MessageFormatError, match="aware"):
        echo_test(station=STATION, stan=1, now=datetime(2026, 12, 2))
    with pytest.raises(MessageFormatError, match="amount"):
        financial_request(
            "purchase", station=STATION, stan=1, now=NOW, amount=0, currency=978, card=CARD
        )
    assert NOW.astimezone(UTC).hour == 8


@pytest.mark.parametrize(
    ("terminal_id", "merchant_id"),
    [("TERM00012", "MERCHANT0000001"), ("TERM0001", "MERCHANT00000012"), ("", "M1")],
)
def test_an_id_that_does_not_fit_its_field_is_refused_not_cut(
    terminal_id: str, merchant_id: str
) -> None:
    """Cut to 8 (41) or 15 (42) characters, an id would name another terminal or merchant."""
    with pytest.raises(MessageFormatError, match="printable characters"):
        Station(terminal_id=terminal_id, merchant_id=merchant_id)


def test_an_original_rrn_longer_than_field_37_is_refused_not_cut() -> None:
    common = {"station": STATION, "stan": 7, "now": NOW, "amount": 100, "currency": 978}
    with pytest.raises(MessageFormatError, match="field 37"):
        financial_request("void", card=None, original_rrn="1234567890123", **common)  # type: ignore[arg-type]
    short = financial_request("void", card=None, original_rrn="42", **common)  # type: ignore[arg-type]
    assert short.fields["37"] == "000000000042"
