"""Application cryptograms of the virtual cards, for the card and for a simulated issuer host.

Both sides use :mod:`emv.cryptogram`: the ICC master key is derived from the profile's TEST
issuer master key, PAN and PSN (EMV Book 2 A1.4.1, option A); the session key and the data
covered depend on the profile's cryptogram kind:

``visa_cvn18``  (Visa CVN 18) session key: EMV common session key derivation with the ATC
                (Book 2 A1.3.1, R = ATC || 00..00). Data: Book 2 §8.1.1 Table 26
                (9F02 9F03 9F1A 95 5F2A 9A 9C 9F37 82 9F36) followed by the whole IAD (9F10).
                MAC padding method 2. IAD = '06' DKI '12' '03' CVR byte 2..4 (7 bytes); CVR
                byte 2 bits 6-5 give the cryptogram type (00 AAC, 01 TC, 10 ARQC), which is
                where EMV Book C-3 tells the reader to look when 9F27 is absent (IAD byte 5).
``mchip_cvn10`` (M/Chip) session key: Mastercard proprietary derivation with R = ATC || 0000
                || UN. Data: Table 26 followed by the 6-byte CVR (IAD bytes 3-8).
                IAD = DKI '10' CVR(6) ICC dynamic number(2) counters(8) (18 bytes); CVR
                byte 1 bits 6-5 hold the first GENERATE AC type with the same coding.

A host verifies with :func:`verify_cryptogram` from the values it receives (tag -> bytes,
as in an authorisation request's ICC data). All keys involved are TEST keys.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import date
from typing import Final

from emv import cryptogram as ac
from emv.apdu import CryptogramType

from .errors import CardError
from .profile import CardProfile, CryptogramKind

#: Tags :func:`compute_cryptogram` reads (the Book 2 Table 26 set plus the IAD).
AC_INPUT_TAGS: Final = (
    0x9F02,
    0x9F03,
    0x9F1A,
    0x95,
    0x5F2A,
    0x9A,
    0x9C,
    0x9F37,
    0x82,
    0x9F36,
    0x9F10,
)

_VISA_CVN: Final = 0x12
_MCHIP_CVN: Final = 0x10
#: Cryptogram type coding of the CVR (Visa CVR byte 2 / M/Chip CVR byte 1, bits 6-5).
_CVR_TYPE: Final = {CryptogramType.AAC: 0b00, CryptogramType.TC: 0b01, CryptogramType.ARQC: 0b10}
#: Bits 8-7 '10': second GENERATE AC not requested.
_SECOND_AC_NOT_REQUESTED: Final = 0b10


class CryptogramDataError(CardError):
    """A value the cryptogram covers is missing or is not valid for its format."""

    def __init__(self, tag: int, problem: str) -> None:
        self.tag = tag
        super().__init__(f"tag {tag:X}: {problem}")


def bcd_to_int(value: bytes, tag: int) -> int:
    text = value.hex()
    if not text.isdigit():
        raise CryptogramDataError(tag, "is not numeric (BCD)")
    return int(text) if text else 0


def bcd_date(value: bytes, tag: int) -> date:
    """YYMMDD (n6) as a date; years 00-49 are 20xx, 50-99 19xx (EMV Book 3 §4.3 practice)."""
    if len(value) != 3 or not value.hex().isdigit():
        raise CryptogramDataError(tag, "is not a date YYMMDD")
    yy, mm, dd = (int(value[i : i + 1].hex()) for i in range(3))
    try:
        return date(2000 + yy if yy < 50 else 1900 + yy, mm, dd)
    except ValueError as exc:
        raise CryptogramDataError(tag, "is not a valid date") from exc


def icc_master_key(profile: CardProfile) -> bytes:
    """The card's ICC master key for application cryptograms (Book 2 A1.4.1, option A)."""
    return ac.derive_icc_master_key_option_a(
        profile.issuer_master_key, profile.pan, profile.pan_sequence_number
    )


def build_iad(
    kind: CryptogramKind, dki: int, cryptogram_type: CryptogramType, dynamic_number: bytes = b""
) -> bytes:
    """The Issuer Application Data (9F10) the card returns with a first GENERATE AC / GPO."""
    type_bits = (_SECOND_AC_NOT_REQUESTED << 6) | (_CVR_TYPE[cryptogram_type] << 4)
    if kind is CryptogramKind.VISA_CVN18:
        return bytes([0x06, dki, _VISA_CVN, 0x03, type_bits, 0x00, 0x00])
    cvr = bytes([type_bits, 0, 0, 0, 0, 0])
    return bytes([dki, _MCHIP_CVN]) + cvr + dynamic_number[:2].rjust(2, b"\x00") + bytes(8)


def kind_of_iad(iad: bytes) -> CryptogramKind | None:
    """Which of the two kinds produced this IAD (None: neither)."""
    if len(iad) == 7 and iad[0] == 0x06 and iad[2] == _VISA_CVN:
        return CryptogramKind.VISA_CVN18
    if len(iad) == 18 and iad[1] == _MCHIP_CVN:
        return CryptogramKind.MCHIP_CVN10
    return None


def cryptogram_type_of_iad(iad: bytes) -> CryptogramType | None:
    """The cryptogram type recorded in the CVR of the IAD, None if not readable."""
    kind = kind_of_iad(iad)
    if kind is None:
        return None
    byte = iad[4] if kind is CryptogramKind.VISA_CVN18 else iad[2]
    bits = (byte >> 4) & 0b11
    for crypto_type, coded in _CVR_TYPE.items():
        if coded == bits:
            return crypto_type
    return None


def _value(values: Mapping[int, bytes], tag: int, length: int) -> bytes:
    value = values.get(tag)
    if value is None:
        raise CryptogramDataError(tag, "is missing")
    if len(value) != length:
        raise CryptogramDataError(tag, f"must be {length} bytes, got {len(value)}")
    return bytes(value)


def ac_data(kind: CryptogramKind, values: Mapping[int, bytes]) -> bytes:
    """The data the AC covers, from terminal and card values by tag (see module docstring)."""
    iad = values.get(0x9F10)
    if iad is None:
        raise CryptogramDataError(0x9F10, "is missing")
    if kind is CryptogramKind.VISA_CVN18:
        tail = bytes(iad)
    else:
        if len(iad) < 8:
            raise CryptogramDataError(0x9F10, "is too short to hold the M/Chip CVR")
        tail = bytes(iad[2:8])
    try:
        return ac.build_ac_data(
            amount_authorised=bcd_to_int(_value(values, 0x9F02, 6), 0x9F02),
            amount_other=bcd_to_int(_value(values, 0x9F03, 6), 0x9F03),
            terminal_country_code=bcd_to_int(_value(values, 0x9F1A, 2), 0x9F1A),
            tvr=_value(values, 0x95, 5),
            transaction_currency_code=bcd_to_int(_value(values, 0x5F2A, 2), 0x5F2A),
            transaction_date=bcd_date(_value(values, 0x9A, 3), 0x9A),
            transaction_type=bcd_to_int(_value(values, 0x9C, 1), 0x9C),
            unpredictable_number=_value(values, 0x9F37, 4),
            aip=_value(values, 0x82, 2),
            atc=int.from_bytes(_value(values, 0x9F36, 2), "big"),
            iad=tail,
        )
    except ac.CryptogramError as exc:
        raise CryptogramDataError(0x9F10, str(exc)) from exc


def session_key(kind: CryptogramKind, master_key: bytes, values: Mapping[int, bytes]) -> bytes:
    atc = int.from_bytes(_value(values, 0x9F36, 2), "big")
    if kind is CryptogramKind.VISA_CVN18:
        return ac.derive_common_session_key(master_key, atc)
    return ac.derive_mastercard_session_key(master_key, atc, _value(values, 0x9F37, 4))


def compute_cryptogram(
    kind: CryptogramKind, master_key: bytes, values: Mapping[int, bytes]
) -> bytes:
    """The 8-byte application cryptogram (9F26) over ``values`` (AC_INPUT_TAGS by tag)."""
    key = session_key(kind, master_key, values)
    return ac.generate_ac(key, ac_data(kind, values), padding=2)


def verify_cryptogram(profile: CardProfile, values: Mapping[int, bytes]) -> bool:
    """Issuer-side check of an ARQC/TC/AAC: ``values`` holds AC_INPUT_TAGS and 9F26.

    Missing or malformed values make it False, never an exception: a host answers a bad
    request with a decline, not a crash.
    """
    cryptogram = values.get(0x9F26)
    if cryptogram is None or len(cryptogram) != ac.AC_LENGTH:
        return False
    try:
        expected = compute_cryptogram(profile.cryptogram_kind, icc_master_key(profile), values)
    except CryptogramDataError:
        return False
    return hmac.compare_digest(expected, bytes(cryptogram))
