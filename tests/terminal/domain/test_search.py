"""The transaction list's search box (terminal.domain.records.parse_search): an amount as a
merchant types it in the terminal's currency, with either decimal separator, reads as that
amount; four digits are also the card's last four; anything else is a reference; nothing
typed ever raises."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from terminal.domain.currency import MAX_EMV_AMOUNT
from terminal.domain.records import MAX_SEARCH, TxnQuery, parse_search

exponents = st.sampled_from([0, 2, 3])  # JPY, EUR, BHD (ISO 4217 minor unit digits)
amounts = st.integers(min_value=1, max_value=MAX_EMV_AMOUNT)


def _typed(amount: int, exponent: int, separator: str, trim: bool) -> str:
    whole, fraction = divmod(amount, 10**exponent)
    if not exponent:
        return str(whole)
    digits = f"{fraction:0{exponent}d}"
    if trim:
        digits = digits.rstrip("0")  # "12,5" for 12.50, "12" for 12.00
    return f"{whole}{separator}{digits}" if digits else str(whole)


@given(amounts, exponents, st.sampled_from([".", ","]), st.booleans(), st.sampled_from(["", " "]))
def test_an_amount_typed_either_way_reads_as_that_amount(
    amount: int, exponent: int, separator: str, trim: bool, pad: str
) -> None:
    typed = _typed(amount, exponent, separator, trim)
    query = parse_search(pad + typed + pad, exponent)
    assert amount in query.amounts
    assert query.typed
    if not (typed.isdigit() and len(typed) >= 6):
        assert query.text == ""  # an amount is not also searched as text
    if typed.isdigit() and len(typed) == 4:
        assert query.last4 == typed


@given(st.text(max_size=MAX_SEARCH), exponents)
def test_anything_typed_is_a_query_never_an_error(typed: str, exponent: int) -> None:
    query = parse_search(typed, exponent)
    assert all(0 < a <= MAX_EMV_AMOUNT for a in query.amounts)
    assert query.everything == (typed.strip() == "")
    if query.text:
        assert query.text == typed.strip().lower()


def test_examples() -> None:
    assert parse_search("12,34", 2) == TxnQuery(amounts=(1234,), typed=True)
    assert parse_search("12.34", 2) == parse_search("12,34", 2)
    assert parse_search("12", 2).amounts == (1200,)
    assert parse_search("12", 0).amounts == (12,)
    assert parse_search("4826", 2) == TxnQuery(amounts=(482600, 4826), last4="4826", typed=True)
    assert parse_search("0010", 2).last4 == "0010"
    assert parse_search("123456", 2) == TxnQuery(amounts=(12345600,), text="123456", typed=True)
    # Too many decimals for the currency, or zero: an amount that cannot be, so nothing.
    assert parse_search("12.345", 2) == TxnQuery(typed=True)
    assert parse_search("12.34", 0) == TxnQuery(typed=True)
    assert parse_search("0,00", 2) == TxnQuery(typed=True)
    assert parse_search("S260301-ab", 2) == TxnQuery(text="s260301-ab", typed=True)
    assert parse_search("   ", 2).everything
