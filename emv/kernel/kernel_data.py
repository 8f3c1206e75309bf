"""Per-AID kernel configuration data objects, by tag, as EMV Contactless Book C-2 (Kernel 2,
v2.10, Annex A "Data Dictionary") and Book C-3 (Kernel 3, v2.10) define them.

An acquirer configures a contactless reader per AID with these objects (``"DF8118": "60"``);
:func:`check_kernel_data` validates each against its definition (length, format, the bits
the book leaves RFU, and what pipos does not implement), naming the object, so that a
parameter file's mistake is found where it is made rather than on a customer's card.

The phone message table (DF8131) and the Book A user-interface message identifiers are here
too, because Kernel 2's "see phone" outcome is built from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "DEFAULT_PHONE_MESSAGE_TABLE",
    "KERNEL_DATA_OBJECTS",
    "KernelDataObject",
    "PhoneMessage",
    "UiMessage",
    "check_kernel_data",
    "kernel_data_name",
    "parse_phone_message_table",
]


class UiMessage(IntEnum):
    """User Interface Request Data message identifiers (EMV Contactless Book A v2.10 §9.4,
    "Message Identifiers"), those the kernels here give."""

    APPROVED = 0x03
    NOT_AUTHORISED = 0x07
    PLEASE_ENTER_PIN = 0x09
    REMOVE_CARD = 0x10
    PROCESSING_ERROR = 0x0F
    PRESENT_CARD = 0x15
    PROCESSING = 0x16
    CARD_READ_OK = 0x17
    INSERT_OR_SWIPE = 0x18
    PRESENT_ONE_CARD_ONLY = 0x19
    APPROVED_PLEASE_SIGN = 0x1A
    AUTHORISING = 0x1B
    INSERT_SWIPE_OR_TRY_ANOTHER_CARD = 0x1C
    PLEASE_INSERT_CARD = 0x1D
    SEE_PHONE = 0x20
    PRESENT_CARD_AGAIN = 0x21


@dataclass(frozen=True, slots=True)
class KernelDataObject:
    """One configuration data object: its definition, as the book gives it."""

    tag: int
    name: str
    #: The kernels whose configuration it belongs to.
    kernels: frozenset[int]
    #: Allowed value lengths in bytes (inclusive range).
    min_length: int
    max_length: int
    #: "b" binary, "n" BCD digits, "an" alphanumeric.
    data_format: str = "b"
    #: Bits the book defines, per byte (the others are RFU and must be zero); None: any.
    defined_bits: tuple[int, ...] | None = None
    #: The value must be a whole number of entries of this many bytes (a table).
    entry_size: int | None = None
    #: The clause it comes from.
    source: str = ""


_K2: Final = frozenset({2})
_K3: Final = frozenset({3})
_BOTH: Final = frozenset({2, 3})

_OBJECTS: Final = (
    # Book C-2 v2.10 Annex A.
    KernelDataObject(0xDF8117, "Card Data Input Capability", _K2, 1, 1,
                     defined_bits=(0xE0,), source="C-2 Annex A"),
    KernelDataObject(0xDF8118, "CVM Capability - CVM Required", _K2, 1, 1,
                     defined_bits=(0xF8,), source="C-2 Annex A"),
    KernelDataObject(0xDF8119, "CVM Capability - No CVM Required", _K2, 1, 1,
                     defined_bits=(0xF8,), source="C-2 Annex A"),
    KernelDataObject(0xDF811A, "Default UDOL", _K2, 3, 3, source="C-2 Annex A"),
    KernelDataObject(0xDF811B, "Kernel Configuration", _K2, 1, 1,
                     defined_bits=(0xF8,), source="C-2 Annex A"),
    KernelDataObject(0xDF811E, "Mag-stripe CVM Capability - CVM Required", _K2, 1, 1,
                     defined_bits=(0xF0,), source="C-2 Annex A"),
    KernelDataObject(0xDF812C, "Mag-stripe CVM Capability - No CVM Required", _K2, 1, 1,
                     defined_bits=(0xF0,), source="C-2 Annex A"),
    KernelDataObject(0xDF811F, "Security Capability", _K2, 1, 1,
                     defined_bits=(0xE8,), source="C-2 Annex A"),
    KernelDataObject(0xDF8120, "Terminal Action Code - Default", _K2, 5, 5, source="C-2 Annex A"),
    KernelDataObject(0xDF8121, "Terminal Action Code - Denial", _K2, 5, 5, source="C-2 Annex A"),
    KernelDataObject(0xDF8122, "Terminal Action Code - Online", _K2, 5, 5, source="C-2 Annex A"),
    KernelDataObject(0xDF8123, "Reader Contactless Floor Limit", _BOTH, 6, 6, "n",
                     source="C-2 Annex A; Book B §3.1.1.7"),
    KernelDataObject(0xDF8124, "Reader Contactless Transaction Limit (No On-device CVM)",
                     _BOTH, 6, 6, "n", source="C-2 Annex A; Book B §3.1.1.6"),
    KernelDataObject(0xDF8125, "Reader Contactless Transaction Limit (On-device CVM)",
                     _K2, 6, 6, "n", source="C-2 Annex A"),
    KernelDataObject(0xDF8126, "Reader CVM Required Limit", _BOTH, 6, 6, "n",
                     source="C-2 Annex A; Book B §3.1.1.9"),
    KernelDataObject(0xDF8130, "Hold Time Value", _K2, 1, 1, source="C-2 Annex A"),
    KernelDataObject(0xDF812D, "Message Hold Time", _K2, 3, 3, "n", source="C-2 Annex A"),
    KernelDataObject(0xDF8131, "Phone Message Table", _K2, 8, 240, entry_size=8,
                     source="C-2 Annex A"),
    KernelDataObject(0x9F6D, "Mag-stripe Application Version Number (Reader)", _K2, 2, 2,
                     source="C-2 Annex A"),
    KernelDataObject(0x9F7E, "Mobile Support Indicator", _K2, 1, 1,
                     defined_bits=(0x03,), source="C-2 Annex A"),
    KernelDataObject(0x9F1D, "Terminal Risk Management Data", _K2, 8, 8, source="C-2 Annex A"),
    KernelDataObject(0x9F53, "Transaction Category Code", _K2, 1, 1, "an", source="C-2 Annex A"),
    # Terminal data a kernel may need its own value of (EMV Book 4 v4.4 Annex A).
    KernelDataObject(0x9F33, "Terminal Capabilities", _BOTH, 3, 3,
                     defined_bits=(0xE0, 0xF8, 0xE8), source="Book 4 Annex A2"),
    KernelDataObject(0x9F35, "Terminal Type", _BOTH, 1, 1, "n", source="Book 4 Annex A1"),
    KernelDataObject(0x9F40, "Additional Terminal Capabilities", _BOTH, 5, 5,
                     source="Book 4 Annex A3"),
    KernelDataObject(0x9F1A, "Terminal Country Code", _BOTH, 2, 2, "n", source="Book 4 Annex A"),
    KernelDataObject(0x9F09, "Application Version Number (Reader)", _BOTH, 2, 2,
                     source="Book 3 §10.4.1"),
    KernelDataObject(0x9F1B, "Terminal Floor Limit", _BOTH, 4, 4, source="Book 3 §10.6.1"),
    # Book C-3 v2.10 Table 5-2 / Annex A.
    KernelDataObject(0x9F66, "Terminal Transaction Qualifiers", _K3, 4, 4,
                     defined_bits=(0xBF, 0xE0, 0xC0, 0xFF), source="C-3 Annex A, Table A-2"),
)  # fmt: skip

#: tag -> definition, for every configuration object pipos accepts in ``kernel_data``.
KERNEL_DATA_OBJECTS: Final[Mapping[int, KernelDataObject]] = {o.tag: o for o in _OBJECTS}

#: Terminal Type values EMV Book 4 v4.4 Annex A1, Table 24 defines.
_TERMINAL_TYPES: Final = frozenset(
    {0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x34, 0x35, 0x36}
)

#: Kernel Configuration (DF811B) byte 1 bits (C-2 v2.10 Annex A).
KC_ONLY_EMV_MODE: Final = 0x80
KC_ONLY_MAG_STRIPE_MODE: Final = 0x40
KC_ON_DEVICE_CVM: Final = 0x20
KC_RELAY_RESISTANCE: Final = 0x10


def kernel_data_name(tag: int) -> str:
    """The object's name as the book gives it, or its tag when pipos does not know it."""
    known = KERNEL_DATA_OBJECTS.get(tag)
    return known.name if known is not None else f"{tag:X}"


def _is_bcd(value: bytes) -> bool:
    return all(b >> 4 <= 9 and b & 0x0F <= 9 for b in value)


def _check_one(kernel_id: int, tag: int, value: bytes) -> str | None:
    definition = KERNEL_DATA_OBJECTS.get(tag)
    if definition is None:
        return (
            f"{tag:X} is not a Kernel {kernel_id} configuration data object pipos knows "
            "(see docs/parameters.md for the list)"
        )
    name = definition.name
    if kernel_id not in definition.kernels:
        kernels = " and ".join(str(k) for k in sorted(definition.kernels))
        return f"{tag:X} ({name}) configures Kernel {kernels}, not Kernel {kernel_id}"
    length = len(value)
    if not definition.min_length <= length <= definition.max_length:
        size = (
            f"{definition.min_length}"
            if definition.min_length == definition.max_length
            else f"{definition.min_length}-{definition.max_length}"
        )
        return f"{tag:X} ({name}) must be {size} bytes, got {length}"
    if definition.entry_size and length % definition.entry_size:
        return (
            f"{tag:X} ({name}) must be whole entries of {definition.entry_size} bytes, "
            f"got {length} bytes"
        )
    if definition.data_format == "n" and not _is_bcd(value):
        return f"{tag:X} ({name}) is numeric (BCD digits only), got {value.hex().upper()}"
    if definition.data_format == "an" and not all(
        0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A for b in value
    ):
        return f"{tag:X} ({name}) is alphanumeric, got {value.hex().upper()}"
    if definition.defined_bits is not None:
        for index, (byte, defined) in enumerate(zip(value, definition.defined_bits, strict=True)):
            if byte & ~defined & 0xFF:
                return (
                    f"{tag:X} ({name}) byte {index + 1} sets bits the book leaves RFU "
                    f"({byte & ~defined & 0xFF:02X}; defined: {defined:02X})"
                )
    if tag == 0x9F35 and value[0] not in _TERMINAL_TYPES:
        return f"9F35 (Terminal Type) {value.hex().upper()} is not a Book 4 Annex A1 type"
    if tag == 0xDF811B:
        if value[0] & KC_ONLY_MAG_STRIPE_MODE:
            return (
                "DF811B (Kernel Configuration) says only mag-stripe mode: pipos implements "
                "EMV mode only (C-2 mag-stripe mode is not implemented), so nothing could be paid"
            )
        if value[0] & KC_RELAY_RESISTANCE:
            return (
                "DF811B (Kernel Configuration) asks for the relay resistance protocol, which "
                "pipos does not implement (C-2 EXCHANGE RELAY RESISTANCE DATA)"
            )
    return None


def check_kernel_data(kernel_id: int, data: Mapping[int, bytes]) -> list[tuple[int, str]]:
    """Every problem with an AID's kernel data as (tag, message); empty when it is valid."""
    problems = []
    for tag, value in data.items():
        message = _check_one(kernel_id, tag, value)
        if message is not None:
            problems.append((tag, message))
    return problems


@dataclass(frozen=True, slots=True)
class PhoneMessage:
    """One Phone Message Table entry (C-2 v2.10 Annex A)."""

    pcii_mask: bytes
    pcii_value: bytes
    message: int
    status: int

    def matches(self, pcii: bytes) -> bool:
        masked = bytes(a & b for a, b in zip(self.pcii_mask, pcii.ljust(3, b"\x00"), strict=False))
        return masked == self.pcii_value


def parse_phone_message_table(value: bytes) -> tuple[PhoneMessage, ...]:
    """DF8131: entries of PCII mask (3), PCII value (3), message identifier, status."""
    return tuple(
        PhoneMessage(value[i : i + 3], value[i + 3 : i + 6], value[i + 6], value[i + 7])
        for i in range(0, len(value) - len(value) % 8, 8)
    )


#: The default Phone Message Table (C-2 v2.10 Annex A): a phone asking for its own
#: verification, acknowledgement or PIN change gives "See Phone"; anything else, "Declined".
#: Entries are mask, value, message identifier, status ('00': Not Ready, Book A §9.2).
DEFAULT_PHONE_MESSAGE_TABLE: Final = bytes.fromhex(
    "000800000800" "2000"
    "000400000400" "2000"
    "000100000100" "2000"
    "000200000200" "2000"
    "000000000000" "0700"
)  # fmt: skip
