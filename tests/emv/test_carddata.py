"""The one reader of the card's account data (emv.carddata): known answers from the formats
of EMV 4.4 Book 3 Annex A, the refusals, and the property that any bytes give an account or
a CardAccountError naming the data object, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv.carddata import CardAccount, CardAccountError, parse_track2, read_account

# EMVCo / network test-card style values (test PANs, Luhn-valid).
VISA_TRACK2 = bytes.fromhex("4761739001010010D31122010000000000000F")
MC_TRACK2 = bytes.fromhex("5413330089010434D2912201000000000000")


def test_track_2_fields() -> None:
    track = parse_track2(VISA_TRACK2)
    assert (track.pan, track.expiry, track.service_code) == ("4761739001010010", "3112", "201")
    assert track.discretionary == "0000000000000"
    assert "4761739001010010" not in repr(track)
    nineteen = parse_track2(bytes.fromhex("6011000990139424123D251210100000000F"))
    assert nineteen.pan == "6011000990139424123"


def test_account_from_5a_5f24_5f34_and_track_2() -> None:
    account = read_account(
        {
            0x5A: bytes.fromhex("4761739001010010"),
            0x57: VISA_TRACK2,
            0x5F24: bytes.fromhex("311231"),
            0x5F34: bytes.fromhex("01"),
        }
    )
    assert account == CardAccount("4761739001010010", "3112", 1, VISA_TRACK2)
    assert "4761739001010010" not in repr(account)
    # 5A padded with F to whole bytes (an odd number of digits).
    odd = read_account({0x5A: bytes.fromhex("476173900101001F")})
    assert (odd.pan, odd.expiry, odd.pan_sequence) == ("476173900101001", None, None)
    # Book C-2's Track 2 Data (9F6B) when there is no 57.
    assert read_account({0x9F6B: MC_TRACK2}).expiry == "2912"


@pytest.mark.parametrize(
    ("card", "tag", "problem"),
    [
        ({}, "5A", "no PAN"),
        ({0x5A: bytes.fromhex("4761739001010010"), 0x57: MC_TRACK2}, "57", "differs"),
        ({0x5A: bytes.fromhex("47617390A1010010")}, "5A", "decimal digits"),
        ({0x5A: bytes.fromhex("4761739F")}, "5A", "a PAN of 7 digits"),
        ({0x57: VISA_TRACK2, 0x5F24: bytes.fromhex("3112")}, "5F24", "n6 YYMMDD"),
        ({0x57: VISA_TRACK2, 0x5F24: bytes.fromhex("311331")}, "5F24", "YYMM"),
        ({0x57: VISA_TRACK2, 0x5F34: bytes.fromhex("0A")}, "5F34", "n2"),
        ({0x57: VISA_TRACK2[:10]}, "57", "not a valid YYMM"),
    ],
)
def test_refusals_name_the_data_object(card: dict[int, bytes], tag: str, problem: str) -> None:
    with pytest.raises(CardAccountError, match=problem) as caught:
        read_account(card)
    assert caught.value.tag == tag
    assert str(caught.value).startswith(f"card data object {tag}: ")


@given(
    st.dictionaries(
        st.sampled_from([0x5A, 0x57, 0x9F6B, 0x5F24, 0x5F34]), st.binary(max_size=24), max_size=5
    )
)
def test_any_bytes_give_an_account_or_a_card_data_error(card: dict[int, bytes]) -> None:
    try:
        account = read_account(card)
    except CardAccountError as exc:
        assert exc.tag in {"5A", "57", "9F6B", "5F24", "5F34"}
        return
    assert account.pan.isdigit()
    assert 8 <= len(account.pan) <= 19
    assert account.expiry is None or (len(account.expiry) == 4 and account.expiry.isdigit())
