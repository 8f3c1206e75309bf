"""EMVCo QR Code Specification for Payment Systems, Merchant-Presented Mode (MPM) v1.1.

The terminal shows this code and the customer's phone scans it. A payload is a string of
data objects, each a two-digit ID, a two-digit length and a value (§4.1, "ID-Length-Value");
the length counts characters, not bytes, so the alternate-language template (64) may carry
any Unicode. The last object is always the CRC (ID 63, length 04): CRC-16/CCITT-FALSE
(polynomial 1021, initial value FFFF) over the UTF-8 bytes of everything before it,
including its own "6304" (§4.7.3).

:func:`parse_mpm` validates structure, CRC and every field it knows; :func:`encode_mpm` and
:func:`build_merchant_payload` produce payloads. Errors are :class:`MpmError` carrying the
field ID, the character offset and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .errors import MpmError

#: §4.1: "The payload should not exceed 512 alphanumeric characters."
MAX_PAYLOAD: Final = 512

ID_PAYLOAD_FORMAT: Final = "00"
ID_INITIATION: Final = "01"
ID_MCC: Final = "52"
ID_CURRENCY: Final = "53"
ID_AMOUNT: Final = "54"
ID_TIP: Final = "55"
ID_FEE_FIXED: Final = "56"
ID_FEE_PERCENT: Final = "57"
ID_COUNTRY: Final = "58"
ID_NAME: Final = "59"
ID_CITY: Final = "60"
ID_POSTAL: Final = "61"
ID_ADDITIONAL: Final = "62"
ID_CRC: Final = "63"
ID_LANGUAGE: Final = "64"

STATIC: Final = "11"
DYNAMIC: Final = "12"

#: Human names of the root objects (§4.2, Table 4.1) for messages and `pipos qr decode`.
FIELD_NAMES: Final[Mapping[str, str]] = {
    "00": "Payload Format Indicator",
    "01": "Point of Initiation Method",
    "52": "Merchant Category Code",
    "53": "Transaction Currency",
    "54": "Transaction Amount",
    "55": "Tip or Convenience Indicator",
    "56": "Value of Convenience Fee Fixed",
    "57": "Value of Convenience Fee Percentage",
    "58": "Country Code",
    "59": "Merchant Name",
    "60": "Merchant City",
    "61": "Postal Code",
    "62": "Additional Data Field Template",
    "63": "CRC",
    "64": "Merchant Information - Language Template",
}

#: Additional Data Field Template sub-objects (§4.8, Table 4.3).
ADDITIONAL_NAMES: Final[Mapping[str, str]] = {
    "01": "Bill Number",
    "02": "Mobile Number",
    "03": "Store Label",
    "04": "Loyalty Number",
    "05": "Reference Label",
    "06": "Customer Label",
    "07": "Terminal Label",
    "08": "Purpose of Transaction",
    "09": "Additional Consumer Data Request",
}

_DIGITS: Final = re.compile(r"[0-9]+")
# §4.7.4 / §4.7.5: an amount is digits with at most one "." and no sign; "." may be omitted.
_AMOUNT: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_PERCENT: Final = re.compile(r"[0-9]{1,2}(?:\.[0-9]{0,2})?")
_COUNTRY: Final = re.compile(r"[A-Z]{2}")
_HEX4: Final = re.compile(r"[0-9A-Fa-f]{4}")


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR (§4.7.3)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def crc_for(payload_before_crc: str) -> str:
    """The four upper-case hex digits for `payload_before_crc` + "6304"."""
    data = (payload_before_crc + ID_CRC + "04").encode("utf-8")
    return f"{crc16_ccitt_false(data):04X}"


def is_template_id(parent: str | None, field_id: str) -> bool:
    """Which IDs hold nested ID-length-value objects (§4.2, §4.8, §4.9)."""
    n = int(field_id)
    if parent is None:
        return 26 <= n <= 51 or field_id in (ID_ADDITIONAL, ID_LANGUAGE) or 80 <= n <= 99
    if parent == ID_ADDITIONAL:
        return 50 <= n <= 99  # payment system specific templates
    return False


@dataclass(frozen=True, slots=True)
class MpmField:
    """One data object. `children` is filled for templates; `value` is always the raw text."""

    id: str
    value: str
    children: tuple[MpmField, ...] = ()
    offset: int = field(default=0, compare=False)

    @classmethod
    def template(cls, field_id: str, children: Iterable[MpmField]) -> MpmField:
        kids = tuple(children)
        return cls(field_id, "".join(k.encode() for k in kids), kids)

    def encode(self) -> str:
        if not re.fullmatch(r"[0-9]{2}", self.id):
            raise MpmError("a two-digit ID", field=self.id)
        if len(self.value) > 99:
            raise MpmError(
                f"a value of at most 99 characters, got {len(self.value)}", field=self.id
            )
        return f"{self.id}{len(self.value):02d}{self.value}"

    def child(self, field_id: str) -> MpmField | None:
        return next((c for c in self.children if c.id == field_id), None)


@dataclass(frozen=True, slots=True)
class LanguageTemplate:
    """Merchant Information - Language Template (ID 64, §4.9)."""

    language: str  # ISO 639 two letters
    name: str
    city: str | None = None


@dataclass(frozen=True, slots=True)
class MerchantPayload:
    """A parsed and validated MPM payload. `fields` keeps the scanned order exactly."""

    fields: tuple[MpmField, ...]
    crc: str

    def get(self, field_id: str) -> str | None:
        f = self.field(field_id)
        return None if f is None else f.value

    def field(self, field_id: str) -> MpmField | None:
        return next((f for f in self.fields if f.id == field_id), None)

    @property
    def initiation(self) -> Literal["static", "dynamic"] | None:
        value = self.get(ID_INITIATION)
        return None if value is None else ("static" if value == STATIC else "dynamic")

    @property
    def accounts(self) -> tuple[MpmField, ...]:
        """Merchant Account Information objects, IDs 02-51 (§4.6)."""
        return tuple(f for f in self.fields if 2 <= int(f.id) <= 51)

    @property
    def mcc(self) -> str:
        return self.get(ID_MCC) or ""

    @property
    def currency(self) -> int:
        return int(self.get(ID_CURRENCY) or "0")

    @property
    def amount(self) -> str | None:
        return self.get(ID_AMOUNT)

    @property
    def country(self) -> str:
        return self.get(ID_COUNTRY) or ""

    @property
    def merchant_name(self) -> str:
        return self.get(ID_NAME) or ""

    @property
    def merchant_city(self) -> str:
        return self.get(ID_CITY) or ""

    @property
    def postal_code(self) -> str | None:
        return self.get(ID_POSTAL)

    @property
    def additional(self) -> dict[str, str]:
        f = self.field(ID_ADDITIONAL)
        return {} if f is None else {c.id: c.value for c in f.children}

    @property
    def language(self) -> LanguageTemplate | None:
        f = self.field(ID_LANGUAGE)
        if f is None:
            return None
        city = f.child("02")
        return LanguageTemplate(
            (f.child("00") or MpmField("00", "")).value,
            (f.child("01") or MpmField("01", "")).value,
            None if city is None else city.value,
        )

    def amount_minor(self, exponent: int) -> int | None:
        """The amount in minor units of a currency with `exponent` decimals (None: no 54)."""
        if self.amount is None:
            return None
        return amount_to_minor(self.amount, exponent, field_id=ID_AMOUNT)

    def encode(self) -> str:
        """The payload again, in the same field order, with a freshly computed CRC."""
        return encode_mpm(f for f in self.fields if f.id != ID_CRC)

    def to_json(self) -> dict[str, Any]:
        def one(f: MpmField) -> dict[str, Any]:
            out: dict[str, Any] = {"id": f.id, "value": f.value}
            if f.children:
                out["children"] = [one(c) for c in f.children]
            return out

        return {
            "mode": "merchant-presented",
            "initiation": self.initiation,
            "merchant_name": self.merchant_name,
            "merchant_city": self.merchant_city,
            "country": self.country,
            "mcc": self.mcc,
            "currency": self.currency,
            "amount": self.amount,
            "crc": self.crc,
            "fields": [one(f) for f in self.fields],
        }


# --- amounts --------------------------------------------------------------------------------


def amount_to_minor(text: str, exponent: int, *, field_id: str = ID_AMOUNT) -> int:
    """'23.72' -> 2372 for exponent 2; more decimals than the currency has is an error."""
    if not _AMOUNT.fullmatch(text):
        raise MpmError(f"an amount like '12.34', got {text!r}", field=field_id)
    whole, _, frac = text.partition(".")
    if len(frac) > exponent:
        raise MpmError(
            f"at most {exponent} decimals for this currency, got {text!r}", field=field_id
        )
    units: int = int(whole or "0") * 10**exponent
    return units + int(frac.ljust(exponent, "0") or "0")


def minor_to_amount(minor: int, exponent: int) -> str:
    """2372, exponent 2 -> '23.72' (§4.7.4: "." as the decimal mark, no thousands separator)."""
    if minor < 0:
        raise MpmError("a non-negative amount", field=ID_AMOUNT)
    if exponent == 0:
        return str(minor)
    whole, frac = divmod(minor, 10**exponent)
    return f"{whole}.{frac:0{exponent}d}"


# --- parsing --------------------------------------------------------------------------------


def _split(text: str, start: int, end: int, parent: str | None) -> tuple[MpmField, ...]:
    """ID-length-value objects in text[start:end]; offsets are absolute character offsets."""
    fields: list[MpmField] = []
    pos = start
    while pos < end:
        if end - pos < 4:
            raise MpmError(
                "a two-digit ID and a two-digit length (payload truncated)",
                field=parent,
                offset=pos,
                reason="truncated",
            )
        fid, length_text = text[pos : pos + 2], text[pos + 2 : pos + 4]
        if not (fid.isascii() and fid.isdigit()):
            raise MpmError(f"a two-digit ID, got {fid!r}", field=parent, offset=pos)
        if not (length_text.isascii() and length_text.isdigit()):
            raise MpmError(f"a two-digit length, got {length_text!r}", field=fid, offset=pos + 2)
        length = int(length_text)
        if length == 0:
            raise MpmError(
                "a length of 01-99 (empty values are not allowed)", field=fid, offset=pos + 2
            )
        value_start = pos + 4
        if value_start + length > end:
            raise MpmError(
                f"{length} characters of value, only {end - value_start} remain",
                field=fid,
                offset=pos + 2,
                reason="truncated",
            )
        value = text[value_start : value_start + length]
        children: tuple[MpmField, ...] = ()
        if is_template_id(parent, fid):
            children = _split(text, value_start, value_start + length, fid)
        fields.append(MpmField(fid, value, children, pos))
        pos = value_start + length
    return tuple(fields)


def _check_text(f: MpmField, max_len: int, *, unicode: bool = False) -> None:
    if len(f.value) > max_len:
        raise MpmError(
            f"at most {max_len} characters, got {len(f.value)}", field=f.id, offset=f.offset
        )
    if not unicode and not (f.value.isascii() and f.value.isprintable()):
        raise MpmError("printable ASCII characters (ans)", field=f.id, offset=f.offset)
    if unicode and not f.value.isprintable():
        raise MpmError("printable characters", field=f.id, offset=f.offset)


def _check_digits(f: MpmField, length: int) -> None:
    if len(f.value) != length or not (f.value.isascii() and f.value.isdigit()):
        raise MpmError(f"{length} digits, got {f.value!r}", field=f.id, offset=f.offset)


def _unique(fields: Sequence[MpmField], parent: str | None) -> dict[str, MpmField]:
    seen: dict[str, MpmField] = {}
    for f in fields:
        if f.id in seen:
            where = f"in template {parent}" if parent else "in the payload"
            raise MpmError(f"each ID once {where}, {f.id} repeats", field=f.id, offset=f.offset)
        seen[f.id] = f
    return seen


def _check_guid_template(f: MpmField) -> None:
    """Templates 26-51 and 80-99 start with a Globally Unique Identifier, ID 00 (§4.6.2)."""
    kids = _unique(f.children, f.id)
    guid = kids.get("00")
    if guid is None:
        raise MpmError("a Globally Unique Identifier (sub-ID 00)", field=f.id, offset=f.offset)
    _check_text(guid, 32)
    for kid in f.children:
        _check_text(kid, 99)


def _check_additional(f: MpmField) -> None:
    """Additional Data Field Template (§4.8, Table 4.3)."""
    _unique(f.children, f.id)
    for kid in f.children:
        n = int(kid.id)
        if 1 <= n <= 8:
            _check_text(kid, 25)
        elif n == 9:
            if len(kid.value) > 3 or any(c not in "AME" for c in kid.value):
                raise MpmError(
                    "up to three of 'A', 'M', 'E' (consumer data request)",
                    field=f"{f.id}.{kid.id}",
                    offset=kid.offset,
                )
        elif 50 <= n <= 99:
            _check_guid_template(kid)
        else:
            _check_text(kid, 99)


def _check_language(f: MpmField) -> None:
    """Merchant Information - Language Template (§4.9, Table 4.4)."""
    kids = _unique(f.children, f.id)
    lang, name, city = kids.get("00"), kids.get("01"), kids.get("02")
    if lang is None or name is None:
        raise MpmError("sub-IDs 00 (language) and 01 (merchant name)", field=f.id, offset=f.offset)
    if len(lang.value) != 2 or not (lang.value.isascii() and lang.value.isalpha()):
        raise MpmError("a two-letter ISO 639 language", field="64.00", offset=lang.offset)
    _check_text(name, 25, unicode=True)
    if city is not None:
        _check_text(city, 15, unicode=True)
    for kid in f.children:
        if kid.id not in ("00", "01", "02"):
            _check_text(kid, 99, unicode=True)


def _validate(fields: tuple[MpmField, ...], text: str) -> None:
    first = fields[0]
    if first.id != ID_PAYLOAD_FORMAT or first.value != "01":
        raise MpmError("Payload Format Indicator '000201' first (§4.7.1)", field=first.id)
    last = fields[-1]
    if last.id != ID_CRC:
        raise MpmError(
            "the CRC (ID 63) as the last object (§4.7.3)", field=last.id, offset=last.offset
        )
    by_id = _unique(fields, None)
    for f in fields:
        n = int(f.id)
        if f.id == ID_INITIATION:
            if f.value not in (STATIC, DYNAMIC):
                raise MpmError("'11' (static) or '12' (dynamic)", field=f.id, offset=f.offset)
        elif 2 <= n <= 25:
            _check_text(f, 99)
        elif 26 <= n <= 51 or 80 <= n <= 99:
            _check_guid_template(f)
        elif f.id == ID_MCC:
            _check_digits(f, 4)
        elif f.id == ID_CURRENCY:
            _check_digits(f, 3)
        elif f.id in (ID_AMOUNT, ID_FEE_FIXED):
            if len(f.value) > 13 or not _AMOUNT.fullmatch(f.value):
                raise MpmError(
                    f"an amount of at most 13 characters like '12.34', got {f.value!r}",
                    field=f.id,
                    offset=f.offset,
                )
        elif f.id == ID_TIP:
            if f.value not in ("01", "02", "03"):
                raise MpmError("'01', '02' or '03'", field=f.id, offset=f.offset)
        elif f.id == ID_FEE_PERCENT:
            if not _PERCENT.fullmatch(f.value) or not 0 < float(f.value) < 100:
                raise MpmError(
                    f"a percentage between 00.01 and 99.99, got {f.value!r}",
                    field=f.id,
                    offset=f.offset,
                )
        elif f.id == ID_COUNTRY:
            if not _COUNTRY.fullmatch(f.value):
                raise MpmError(
                    f"an ISO 3166-1 alpha-2 country code, got {f.value!r}",
                    field=f.id,
                    offset=f.offset,
                )
        elif f.id == ID_NAME:
            _check_text(f, 25)
        elif f.id == ID_CITY:
            _check_text(f, 15)
        elif f.id == ID_POSTAL:
            _check_text(f, 10)
        elif f.id == ID_ADDITIONAL:
            _check_additional(f)
        elif f.id == ID_LANGUAGE:
            _check_language(f)
        elif f.id == ID_CRC:
            if len(f.value) != 4 or not _HEX4.fullmatch(f.value):
                raise MpmError(
                    "a CRC of four hex digits (ID 63, length 04)", field=f.id, offset=f.offset
                )
        else:
            _check_text(f, 99)
    for fid in (ID_MCC, ID_CURRENCY, ID_COUNTRY, ID_NAME, ID_CITY):
        if fid not in by_id:
            raise MpmError(f"mandatory {FIELD_NAMES[fid]} (ID {fid})", field=fid, offset=len(text))
    if not any(2 <= int(f.id) <= 51 for f in fields):
        raise MpmError("at least one Merchant Account Information object (IDs 02-51)", field="02")
    # §4.7.5/4.7.6: 56 belongs to tip indicator 02 and 57 to 03, and neither stands alone.
    tip = by_id.get(ID_TIP)
    for fee_id, needs in ((ID_FEE_FIXED, "02"), (ID_FEE_PERCENT, "03")):
        fee = by_id.get(fee_id)
        if tip is not None and tip.value == needs and fee is None:
            raise MpmError(f"ID {fee_id} because ID 55 is {needs}", field=fee_id, offset=tip.offset)
        if fee is not None and (tip is None or tip.value != needs):
            raise MpmError(
                f"ID 55 = {needs} when ID {fee_id} is present", field=fee_id, offset=fee.offset
            )


def parse_mpm(text: str) -> MerchantPayload:
    """Parse and validate an MPM payload: structure, every known field, then the CRC."""
    if not isinstance(text, str):
        raise MpmError("a text payload")
    if not text:
        raise MpmError("a non-empty payload", reason="truncated")
    if len(text) > MAX_PAYLOAD:
        raise MpmError(f"at most {MAX_PAYLOAD} characters (§4.1), got {len(text)}")
    fields = _split(text, 0, len(text), None)
    _validate(fields, text)
    crc_field = fields[-1]
    expected = crc_for(text[: crc_field.offset])
    if crc_field.value.upper() != expected:
        raise MpmError(
            f"CRC {expected}, the payload says {crc_field.value} (corrupt or altered)",
            field=ID_CRC,
            offset=crc_field.offset,
        )
    return MerchantPayload(fields, crc_field.value)


# --- encoding -------------------------------------------------------------------------------


def encode_mpm(fields: Iterable[MpmField]) -> str:
    """Serialise `fields` (without a CRC) in the given order, append the CRC, and re-validate."""
    body = "".join(f.encode() for f in fields if f.id != ID_CRC)
    payload = body + ID_CRC + "04" + crc_for(body)
    parse_mpm(payload)  # never hand out a code the parser (or a phone) would refuse
    return payload


def build_merchant_payload(
    *,
    accounts: Sequence[MpmField],
    mcc: str,
    currency: int,
    country: str,
    merchant_name: str,
    merchant_city: str,
    amount_minor: int | None = None,
    exponent: int = 2,
    dynamic: bool | None = None,
    postal_code: str | None = None,
    additional: Mapping[str, str] | None = None,
    language: LanguageTemplate | None = None,
) -> str:
    """A payload from typed parts, objects in ascending ID order (§4.2).

    `dynamic` defaults to "dynamic when there is an amount": a static code is printed once and
    reused for every sale, a dynamic one is made for one transaction (§4.7.2).
    """
    if dynamic is None:
        dynamic = amount_minor is not None
    fields: list[MpmField] = [
        MpmField(ID_PAYLOAD_FORMAT, "01"),
        MpmField(ID_INITIATION, DYNAMIC if dynamic else STATIC),
        *sorted(accounts, key=lambda f: f.id),
        MpmField(ID_MCC, mcc),
        MpmField(ID_CURRENCY, f"{currency:03d}"),
    ]
    if amount_minor is not None:
        if amount_minor <= 0:
            raise MpmError("a positive amount", field=ID_AMOUNT)
        fields.append(MpmField(ID_AMOUNT, minor_to_amount(amount_minor, exponent)))
    fields += [
        MpmField(ID_COUNTRY, country),
        MpmField(ID_NAME, merchant_name),
        MpmField(ID_CITY, merchant_city),
    ]
    if postal_code:
        fields.append(MpmField(ID_POSTAL, postal_code))
    if additional:
        fields.append(
            MpmField.template(
                ID_ADDITIONAL, (MpmField(k, v) for k, v in sorted(additional.items()))
            )
        )
    if language is not None:
        kids = [MpmField("00", language.language), MpmField("01", language.name)]
        if language.city:
            kids.append(MpmField("02", language.city))
        fields.append(MpmField.template(ID_LANGUAGE, kids))
    return encode_mpm(fields)


def looks_like_mpm(text: str) -> bool:
    """Cheap sniff: every MPM payload starts with the Payload Format Indicator '000201'."""
    return text.startswith("000201")
