"""ISO 4217 currencies and integer-minor-unit amount formatting and parsing.

Money in pipos is an integer count of minor units together with an ISO 4217 numeric currency
code; this module is the one place that turns such a pair into text for a person, and text a
person typed back into minor units. No float is involved anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from terminal.domain.errors import TerminalError

__all__ = [
    "CURRENCIES",
    "MAX_EMV_AMOUNT",
    "AmountError",
    "Currency",
    "UnknownCurrencyError",
    "currency",
    "format_amount",
    "parse_amount",
]

MAX_EMV_AMOUNT: Final = 999_999_999_999
"""Largest amount an EMV n12 amount field (9F02, 9F03) can carry, in minor units."""


class UnknownCurrencyError(TerminalError, LookupError):
    """An ISO 4217 numeric code that is not in pipos's currency table."""


class AmountError(TerminalError, ValueError):
    """Text that is not a valid amount for the currency (a ValueError, so argparse reports it)."""


@dataclass(frozen=True, slots=True)
class Currency:
    """One ISO 4217 currency: numeric code, alphabetic code and minor-unit exponent (5F36)."""

    numeric: int
    alpha: str
    exponent: int
    name: str


# ISO 4217 list one (current currencies) - a practical subset: the currencies of card markets
# plus every non-2-exponent currency commonly met. The exponent is the "minor unit" column.
_TABLE: Final[tuple[tuple[int, str, int, str], ...]] = (
    (8, "ALL", 2, "Albanian lek"),
    (32, "ARS", 2, "Argentine peso"),
    (36, "AUD", 2, "Australian dollar"),
    (48, "BHD", 3, "Bahraini dinar"),
    (50, "BDT", 2, "Bangladeshi taka"),
    (51, "AMD", 2, "Armenian dram"),
    (108, "BIF", 0, "Burundian franc"),
    (124, "CAD", 2, "Canadian dollar"),
    (144, "LKR", 2, "Sri Lankan rupee"),
    (152, "CLP", 0, "Chilean peso"),
    (156, "CNY", 2, "Renminbi"),
    (170, "COP", 2, "Colombian peso"),
    (174, "KMF", 0, "Comoro franc"),
    (203, "CZK", 2, "Czech koruna"),
    (208, "DKK", 2, "Danish krone"),
    (262, "DJF", 0, "Djiboutian franc"),
    (324, "GNF", 0, "Guinean franc"),
    (344, "HKD", 2, "Hong Kong dollar"),
    (348, "HUF", 2, "Hungarian forint"),
    (352, "ISK", 0, "Icelandic krona"),
    (356, "INR", 2, "Indian rupee"),
    (360, "IDR", 2, "Indonesian rupiah"),
    (368, "IQD", 3, "Iraqi dinar"),
    (376, "ILS", 2, "Israeli new shekel"),
    (392, "JPY", 0, "Japanese yen"),
    (398, "KZT", 2, "Kazakhstani tenge"),
    (400, "JOD", 3, "Jordanian dinar"),
    (404, "KES", 2, "Kenyan shilling"),
    (410, "KRW", 0, "South Korean won"),
    (414, "KWD", 3, "Kuwaiti dinar"),
    (434, "LYD", 3, "Libyan dinar"),
    (446, "MOP", 2, "Macanese pataca"),
    (458, "MYR", 2, "Malaysian ringgit"),
    (484, "MXN", 2, "Mexican peso"),
    (496, "MNT", 2, "Mongolian togrog"),
    (498, "MDL", 2, "Moldovan leu"),
    (504, "MAD", 2, "Moroccan dirham"),
    (512, "OMR", 3, "Omani rial"),
    (524, "NPR", 2, "Nepalese rupee"),
    (548, "VUV", 0, "Vanuatu vatu"),
    (554, "NZD", 2, "New Zealand dollar"),
    (566, "NGN", 2, "Nigerian naira"),
    (578, "NOK", 2, "Norwegian krone"),
    (586, "PKR", 2, "Pakistani rupee"),
    (600, "PYG", 0, "Paraguayan guarani"),
    (604, "PEN", 2, "Peruvian sol"),
    (608, "PHP", 2, "Philippine peso"),
    (634, "QAR", 2, "Qatari riyal"),
    (643, "RUB", 2, "Russian ruble"),
    (646, "RWF", 0, "Rwandan franc"),
    (682, "SAR", 2, "Saudi riyal"),
    (702, "SGD", 2, "Singapore dollar"),
    (704, "VND", 0, "Vietnamese dong"),
    (710, "ZAR", 2, "South African rand"),
    (752, "SEK", 2, "Swedish krona"),
    (756, "CHF", 2, "Swiss franc"),
    (764, "THB", 2, "Thai baht"),
    (784, "AED", 2, "UAE dirham"),
    (788, "TND", 3, "Tunisian dinar"),
    (800, "UGX", 0, "Ugandan shilling"),
    (807, "MKD", 2, "Macedonian denar"),
    (818, "EGP", 2, "Egyptian pound"),
    (826, "GBP", 2, "Pound sterling"),
    (840, "USD", 2, "United States dollar"),
    (858, "UYU", 2, "Uruguayan peso"),
    (901, "TWD", 2, "New Taiwan dollar"),
    (933, "BYN", 2, "Belarusian ruble"),
    (941, "RSD", 2, "Serbian dinar"),
    (944, "AZN", 2, "Azerbaijani manat"),
    (946, "RON", 2, "Romanian leu"),
    (949, "TRY", 2, "Turkish lira"),
    (950, "XAF", 0, "CFA franc BEAC"),
    (952, "XOF", 0, "CFA franc BCEAO"),
    (953, "XPF", 0, "CFP franc"),
    (975, "BGN", 2, "Bulgarian lev"),
    (977, "BAM", 2, "Bosnia and Herzegovina convertible mark"),
    (978, "EUR", 2, "Euro"),
    (980, "UAH", 2, "Ukrainian hryvnia"),
    (981, "GEL", 2, "Georgian lari"),
    (985, "PLN", 2, "Polish zloty"),
    (986, "BRL", 2, "Brazilian real"),
    (990, "CLF", 4, "Unidad de Fomento"),
)

CURRENCIES: Final[Mapping[int, Currency]] = MappingProxyType(
    {numeric: Currency(numeric, alpha, exp, name) for numeric, alpha, exp, name in _TABLE}
)
"""ISO 4217 currencies by numeric code (read-only)."""


def currency(numeric: int) -> Currency:
    """The currency with this ISO 4217 numeric code, or UnknownCurrencyError."""
    try:
        return CURRENCIES[numeric]
    except (KeyError, TypeError):
        raise UnknownCurrencyError(f"unknown ISO 4217 numeric currency code {numeric!r}") from None


def format_amount(minor: int, currency_numeric: int) -> str:
    """Render minor units for a person: ``format_amount(1234, 978) == "12.34 EUR"``.

    Negative amounts (refund totals) get a leading minus sign; zero-exponent currencies have
    no decimal point (``"1234 JPY"``).
    """
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise AmountError(f"amount must be an integer in minor units, got {type(minor).__name__}")
    cur = currency(currency_numeric)
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor))
    if cur.exponent == 0:
        return f"{sign}{digits} {cur.alpha}"
    digits = digits.rjust(cur.exponent + 1, "0")
    return f"{sign}{digits[: -cur.exponent]}.{digits[-cur.exponent :]} {cur.alpha}"


_AMOUNT_RE: Final = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


def parse_amount(text: str, currency_numeric: int) -> int:
    """Parse what a person typed ("12.34") into minor units (1234) for the currency.

    Strict: only ASCII digits with at most one '.', no sign, no thousands separators, no more
    decimals than the currency's exponent; surrounding whitespace is ignored. The result fits
    an EMV n12 amount field.
    """
    cur = currency(currency_numeric)
    if not isinstance(text, str):
        raise AmountError(f"amount must be text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise AmountError("amount is empty")
    if stripped.startswith("-"):
        raise AmountError(f"amount must not be negative, got {stripped!r}")
    if stripped.startswith("+"):
        raise AmountError(f"amount must be written without a sign, got {stripped!r}")
    if "," in stripped:
        raise AmountError(
            f"amount must use '.' as the decimal point and no thousands separators, "
            f"got {stripped!r}"
        )
    match = _AMOUNT_RE.fullmatch(stripped)
    if match is None:
        raise AmountError(
            f"amount must be digits with an optional '.' and decimals "
            f"(e.g. {format_amount(1234, cur.numeric).split()[0]}), got {stripped!r}"
        )
    whole, decimals = match.group(1), match.group(2) or ""
    if len(decimals) > cur.exponent:
        if cur.exponent == 0:
            raise AmountError(
                f"{cur.alpha} has no minor unit: no decimals allowed, got {stripped!r}"
            )
        raise AmountError(
            f"{cur.alpha} has {cur.exponent} decimal places at most, got {stripped!r}"
        )
    # Shift the decimal point by string concatenation: exact, and no float anywhere.
    digits = (whole + decimals.ljust(cur.exponent, "0")).lstrip("0") or "0"
    if len(digits) > len(str(MAX_EMV_AMOUNT)) or int(digits) > MAX_EMV_AMOUNT:
        raise AmountError(
            f"amount {stripped} {cur.alpha} exceeds the largest payable amount "
            f"{format_amount(MAX_EMV_AMOUNT, cur.numeric)}"
        )
    return int(digits)
