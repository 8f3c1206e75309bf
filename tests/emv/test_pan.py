"""PAN helpers (ISO/IEC 7812-1 Luhn, PCI DSS 3.3 masking): known answers and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emv.pan import luhn_valid, mask_pan


def test_luhn_known_answers() -> None:
    assert luhn_valid("4761739001010119")
    assert luhn_valid("5413330089010434")
    assert luhn_valid("79927398713")  # the ISO/IEC 7812 worked example
    assert not luhn_valid("79927398710")


def test_masking_keeps_first_six_and_last_four() -> None:
    assert mask_pan("4761739001010119") == "476173******0119"
    assert mask_pan("6799998900000060018") == "679999*********0018"
    assert mask_pan("123456789") == "*********"


@given(st.text(alphabet="0123456789", min_size=10, max_size=19))
def test_mask_never_shows_more_than_ten_digits(digits: str) -> None:
    masked = mask_pan(digits)
    assert len(masked) == len(digits)
    assert sum(c.isdigit() for c in masked) == 10
