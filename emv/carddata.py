"""The card's account data as all of pipos reads it: PAN, expiry, PAN sequence number and
Track 2 Equivalent Data, from the card's data objects.

One reader, used by the kernel (for the outcome and its checks) and by the checkout (for the
authorisation and the offline queue), so the card number the kernel vetted is the number
the acquirer gets. Formats per EMV 4.4 Book 3 Annex A:

* '5A' Application PAN: cn, up to 19 digits, padded with hex 'F' to whole bytes;
* '57' Track 2 Equivalent Data (and Book C-2's '9F6B' Track 2 Data): PAN, field separator
  hex 'D', expiry YYMM, service code (3 digits), discretionary data, padded with 'F';
* '5F24' Application Expiration Date: n6 YYMMDD;
* '5F34' PAN Sequence Number: n2.

The PAN is 8 to 19 digits (ISO/IEC 7812-1). Where the card gives the PAN both in '5A' and in
track 2 the two must agree, and an expiry month must be 01-12; anything else is a
:class:`CardAccountError` naming the data object, never a silently different number.

>>> read_account(
...     {0x57: bytes.fromhex("4761739001010010D31122010000000000000F"), 0x5F34: b"\\x01"}
... ).expiry
'3112'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .errors import EmvError
from .pan import mask_pan

__all__ = ["CardAccount", "CardAccountError", "Track2", "parse_track2", "read_account"]

TAG_PAN: Final = 0x5A
TAG_TRACK2_EQUIVALENT: Final = 0x57
TAG_TRACK2_DATA: Final = 0x9F6B
TAG_EXPIRY: Final = 0x5F24
TAG_PAN_SEQUENCE: Final = 0x5F34
PAN_DIGITS: Final = range(8, 20)


class CardAccountError(EmvError):
    """The card's account data is missing, malformed or contradicts itself (a card fault).
    `missing` tells the first apart (the kernel reports it as TVR 'ICC data missing')."""

    def __init__(self, tag: str, problem: str, *, missing: bool = False) -> None:
        self.tag = tag
        self.missing = missing
        super().__init__(f"card data object {tag}: {problem}")


@dataclass(frozen=True, slots=True)
class Track2:
    """Track 2 Equivalent Data, split into its fields (all decimal digit strings)."""

    pan: str
    expiry: str  # YYMM
    service_code: str
    discretionary: str

    def __repr__(self) -> str:
        return f"Track2(pan={mask_pan(self.pan)!r}, <redacted>)"


@dataclass(frozen=True, slots=True)
class CardAccount:
    """The account the card names: what an authorisation or a queued payment carries."""

    pan: str
    expiry: str | None  # YYMM
    pan_sequence: int | None
    track2: bytes | None  # the card's '57' (or '9F6B') as it sent it

    def __repr__(self) -> str:
        return f"CardAccount(pan={mask_pan(self.pan)!r}, <redacted>)"


def _check_pan(digits: str, tag: str) -> str:
    if not digits.isdigit():
        raise CardAccountError(tag, "the PAN holds something other than decimal digits")
    if len(digits) not in PAN_DIGITS:
        raise CardAccountError(tag, f"a PAN of {len(digits)} digits (8 to 19 allowed)")
    return digits


def _check_yymm(yymm: str, tag: str) -> str:
    if len(yymm) != 4 or not yymm.isdigit() or not 1 <= int(yymm[2:]) <= 12:
        raise CardAccountError(tag, "the expiry date is not a valid YYMM")
    return yymm


def parse_track2(value: bytes, tag: str = "57") -> Track2:
    """Track 2 Equivalent Data split into PAN, expiry, service code and discretionary data."""
    text = value.hex().upper()
    digits, separator, rest = text.partition("D")
    if not separator:
        raise CardAccountError(tag, "no field separator 'D' after the PAN")
    pan = _check_pan(digits, tag)
    expiry = _check_yymm(rest[:4], tag)
    service_code = rest[4:7]
    if len(service_code) != 3 or not service_code.isdigit():
        raise CardAccountError(tag, "no 3-digit service code after the expiry date")
    discretionary = rest[7:]
    trimmed = discretionary.rstrip("F")
    if not trimmed.isdigit() and trimmed:
        raise CardAccountError(tag, "the discretionary data holds something other than digits")
    return Track2(pan, expiry, service_code, trimmed)


def read_account(card: Mapping[int, bytes]) -> CardAccount:
    """The card's PAN, expiry and PAN sequence number, checked against each other."""
    pan: str | None = None
    if TAG_PAN in card:
        pan = _check_pan(card[TAG_PAN].hex().upper().rstrip("F"), "5A")
    track2_raw = card.get(TAG_TRACK2_EQUIVALENT)
    track2_tag = "57"
    if track2_raw is None and TAG_TRACK2_DATA in card:
        track2_raw, track2_tag = card[TAG_TRACK2_DATA], "9F6B"
    track2 = parse_track2(track2_raw, track2_tag) if track2_raw is not None else None
    if track2 is not None:
        if pan is not None and pan != track2.pan:
            raise CardAccountError(track2_tag, "its PAN differs from the Application PAN (5A)")
        pan = track2.pan
    if pan is None:
        raise CardAccountError(
            "5A", "the card gave no PAN (neither 5A nor track 2 data)", missing=True
        )
    expiry: str | None = None
    if TAG_EXPIRY in card:
        date = card[TAG_EXPIRY].hex()
        if len(date) != 6:
            raise CardAccountError("5F24", "the expiration date is not n6 YYMMDD")
        expiry = _check_yymm(date[:4], "5F24")
    elif track2 is not None:
        expiry = track2.expiry
    sequence: int | None = None
    if TAG_PAN_SEQUENCE in card:
        raw = card[TAG_PAN_SEQUENCE].hex()
        if len(raw) != 2 or not raw.isdigit():
            raise CardAccountError("5F34", "the PAN sequence number is not n2")
        sequence = int(raw)
    return CardAccount(pan, expiry, sequence, track2_raw)
