"""The final outcome of a contactless transaction (EMV Book A §6.2 / Book B §3.5).

An :class:`Outcome` is a value: what the terminal shows the merchant, what it sends the
acquirer (``card_data``) and why a transaction did not go through. Its ``repr`` and
:meth:`Outcome.summary` never show the PAN or track data: the PAN appears only masked
(first 6 + last 4), and :class:`CardData` redacts sensitive values in its ``repr``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from emv import pan
from emv.oda import OdaFailure, OdaMethod
from emv.tags import describe
from emv.tlv import tag_hex

from .kernel_data import UiMessage
from .tvr import Tsi, Tvr

__all__ = [
    "NOT_IN_ICC_DATA",
    "CardData",
    "CryptogramKind",
    "CvmKind",
    "OdaStatus",
    "Outcome",
    "OutcomeKind",
    "Start",
    "mask_pan",
]


#: The account and cardholder data an authorisation carries in its own fields (PAN, expiry,
#: track 1 and 2 data and their discretionary parts, cardholder name), never in the ICC data:
#: 5A, 57, 56, 9F6B, 5F20, 5F24, 9F1F, 9F20.
NOT_IN_ICC_DATA: Final = frozenset({0x5A, 0x57, 0x56, 0x9F6B, 0x5F20, 0x5F24, 0x9F1F, 0x9F20})


class OutcomeKind(StrEnum):
    """Outcome values of EMV Book A §6.2.1 / Book B Table 3-3 used by the kernels."""

    APPROVED = "approved"
    DECLINED = "declined"
    ONLINE_REQUEST = "online_request"
    TRY_AGAIN = "try_again"
    TRY_ANOTHER_INTERFACE = "try_another_interface"
    #: Consumed by Entry Point (Book B §3.3.3): only final when a caller inspects a kernel
    #: step directly; :class:`ContactlessTransaction` moves on to the next candidate.
    SELECT_NEXT = "select_next"
    END_APPLICATION = "end_application"


class Start(StrEnum):
    """Where Entry Point starts again after this outcome (Book B v2.10 §3.5, Outcome
    parameter "Start"): B is a new tap of the same transaction (protocol activation with the
    same pre-processing, e.g. after "see phone"), C is combination selection (the next
    application on the same tap; :class:`ContactlessTransaction` does that itself)."""

    B = "B"
    C = "C"


class CryptogramKind(StrEnum):
    """Cryptogram Information Data b8-b7 (EMV Book 3 §6.5.5.4, Table 15)."""

    TC = "TC"
    ARQC = "ARQC"
    AAC = "AAC"

    @classmethod
    def from_cid(cls, cid: int) -> CryptogramKind | None:
        return {0x00: cls.AAC, 0x40: cls.TC, 0x80: cls.ARQC}.get(cid & 0xC0)


class CvmKind(StrEnum):
    """The cardholder verification applied (Book 3 §10.5, Book C-2 §7.5, Book C-3 §5.7)."""

    NO_CVM = "no_cvm"
    SIGNATURE = "signature"
    CDCVM = "cdcvm"
    ONLINE_PIN = "online_pin"


class OdaStatus(StrEnum):
    NOT_PERFORMED = "not_performed"
    SUCCESSFUL = "successful"
    FAILED = "failed"


#: Tags never shown in the clear by CardData's repr, in addition to those the tag dictionary
#: marks sensitive (PCI DSS 3.2-3.4): PAN, track data, cardholder name.
_ALWAYS_REDACTED: Final = frozenset({0x56, 0x57, 0x5A, 0x5F20, 0x9F0B, 0x9F1F, 0x9F20, 0x9F6B})


def _sensitive(tag: int) -> bool:
    info = describe(tag)
    return tag in _ALWAYS_REDACTED or (info is not None and info.sensitive)


class CardData(Mapping[int, bytes]):
    """EMV data for online authorisation (tag -> value); its repr redacts card data."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[int, bytes] | None = None) -> None:
        self._data: dict[int, bytes] = dict(data or {})

    def __getitem__(self, tag: int) -> bytes:
        return self._data[tag]

    def __iter__(self) -> Iterator[int]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{tag_hex(tag)}: " + ("<redacted>" if _sensitive(tag) else value.hex().upper())
            for tag, value in self._data.items()
        )
        return f"CardData({{{shown}}})"

    __str__ = __repr__

    def icc_data(self) -> dict[int, bytes]:
        """What goes in the ICC data of the authorisation request (ISO 8583 DE 55): all of it
        but the account data, which travels in fields of its own (:data:`NOT_IN_ICC_DATA`)."""
        return {tag: value for tag, value in self._data.items() if tag not in NOT_IN_ICC_DATA}

    def redacted(self) -> dict[str, str]:
        """Tag hex -> value hex, sensitive values replaced by '<redacted>' (for logs)."""
        return {
            tag_hex(tag): "<redacted>" if _sensitive(tag) else value.hex().upper()
            for tag, value in self._data.items()
        }


def mask_pan(digits: str | None) -> str | None:
    """First 6 and last 4 digits (PCI DSS 3.3); None when the card gave no PAN."""
    return pan.mask_pan(digits) if digits else None


@dataclass(frozen=True)
class Outcome:
    """What a contactless transaction ended in, with everything the terminal displays."""

    kind: OutcomeKind
    #: Merchant-facing reason when not approved (empty when approved or sent online).
    reason: str = ""
    cryptogram: CryptogramKind | None = None
    kernel_id: int | None = None
    aid: bytes | None = None
    label: str = ""
    #: First 6 + last 4 only.
    masked_pan: str | None = None
    #: Application Expiration Date as YYMM.
    expiry: str | None = None
    oda_method: OdaMethod = OdaMethod.NONE
    oda_status: OdaStatus = OdaStatus.NOT_PERFORMED
    oda_failure: OdaFailure | None = None
    cvm: CvmKind | None = None
    tvr: bytes = bytes(5)
    tsi: bytes = bytes(2)
    apdu_count: int = 0
    #: Technical detail for the technician's log (never card data).
    detail: str = ""
    card_data: CardData = field(default_factory=CardData)
    #: Book B §3.5 "Start": None when the transaction is over; B when Entry Point must start
    #: again at protocol activation (a second tap), after showing ``message``.
    start: Start | None = None
    #: Book A §9.4 message identifier for the cardholder (User Interface Request Data).
    message: UiMessage | None = None

    @property
    def approved(self) -> bool:
        return self.kind is OutcomeKind.APPROVED

    @property
    def tvr_bits(self) -> list[str]:
        return Tvr(self.tvr).names()

    @property
    def tsi_bits(self) -> list[str]:
        return Tsi(self.tsi).names()

    def summary(self) -> dict[str, object]:
        """The displayable fields as JSON-ready values (no PAN, no track data)."""
        return {
            "outcome": str(self.kind),
            "cryptogram": None if self.cryptogram is None else str(self.cryptogram),
            "kernel": self.kernel_id,
            "aid": None if self.aid is None else self.aid.hex().upper(),
            "label": self.label,
            "pan": self.masked_pan,
            "expiry": self.expiry,
            "oda_method": self.oda_method.value,
            "oda_result": str(self.oda_status),
            "oda_failure": None if self.oda_failure is None else self.oda_failure.value,
            "cvm": None if self.cvm is None else str(self.cvm),
            "tvr": self.tvr.hex().upper(),
            "tvr_bits": self.tvr_bits,
            "tsi": self.tsi.hex().upper(),
            "tsi_bits": self.tsi_bits,
            "apdus": self.apdu_count,
            "reason": self.reason,
            "detail": self.detail,
            "start": None if self.start is None else str(self.start),
            "message": None if self.message is None else f"{int(self.message):02X}",
        }
