"""The terminal's merchant-presented code (EMVCo QR Code Specification for Payment Systems,
Merchant-Presented Mode, v1.1): the payload a dynamic sale shows and `pipos qr merchant`
prints, from the terminal's parameters. No I/O: the checkout and the command line both call
:func:`merchant_payload` and say the error their own way."""

from __future__ import annotations

from typing import Final

from emv.qr import MpmField, QrError, build_merchant_payload

from .currency import currency as currency_info
from .errors import TerminalError
from .params import TerminalParams

__all__ = ["ACCOUNT_GUID", "COUNTRIES", "MerchantCodeError", "merchant_payload"]

#: ISO 3166-1 numeric -> alpha-2 for the countries pipos ships parameters for; MPM field 58
#: wants alpha-2 while EMV 9F1A is numeric. `--country` covers the rest.
COUNTRIES: Final = {
    36: "AU", 40: "AT", 56: "BE", 124: "CA", 156: "CN", 203: "CZ", 208: "DK", 246: "FI",
    250: "FR", 276: "DE", 344: "HK", 356: "IN", 360: "ID", 372: "IE", 380: "IT", 392: "JP",
    410: "KR", 442: "LU", 458: "MY", 528: "NL", 554: "NZ", 578: "NO", 608: "PH", 616: "PL",
    620: "PT", 702: "SG", 724: "ES", 752: "SE", 756: "CH", 764: "TH", 826: "GB", 840: "US",
}  # fmt: skip

#: The Globally Unique Identifier of the pipos acquirer's merchant account template (26).
ACCOUNT_GUID: Final = "com.pipos.acquirer"


class MerchantCodeError(TerminalError):
    """The parameters cannot make a valid merchant-presented code (the reason says why)."""


def merchant_payload(
    params: TerminalParams,
    amount_minor: int | None,
    *,
    reference: str | None = None,
    name: str | None = None,
    city: str | None = None,
    country: str | None = None,
) -> str:
    """The terminal's MPM payload; dynamic when `amount_minor` is given."""
    t = params.terminal
    name_part, _, rest = t.merchant_name_location.partition(",")
    default_city = rest.strip().rsplit(" ", 1)[0] if rest.strip() else "UNKNOWN"
    country = country or COUNTRIES.get(t.country_code)
    if country is None:
        raise MerchantCodeError(
            f"no ISO 3166 alpha-2 code known for the terminal's country {t.country_code:03d}"
        )
    additional = {"07": t.terminal_identifier}
    if reference:
        additional["05"] = reference
    account = MpmField.template(
        "26", [MpmField("00", ACCOUNT_GUID), MpmField("01", t.merchant_identifier.strip())]
    )
    try:
        return build_merchant_payload(
            accounts=[account],
            mcc=t.merchant_category_code,
            currency=t.currency_code,
            country=country.upper(),
            merchant_name=(name or name_part.strip())[:25],
            merchant_city=(city or default_city)[:15],
            amount_minor=amount_minor,
            exponent=currency_info(t.currency_code).exponent,
            additional=additional,
        )
    except QrError as exc:
        raise MerchantCodeError(str(exc)) from exc
