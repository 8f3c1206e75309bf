"""Terminal, AID and per-transaction parameters of the contactless kernel.

Amounts are integers in minor units of the transaction currency. Nothing here reads a clock
or a random source: the date, time, unpredictable number and random-selection draw of a
transaction are fields of :class:`TransactionRequest`, supplied by the caller, so a recorded
transaction replays exactly.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from emv.errors import EmvError

from .kernel_data import KERNEL_DATA_OBJECTS, check_kernel_data

__all__ = [
    "DEFAULT_TERMINAL_DATA",
    "DEFAULT_TTQ",
    "KERNEL_MASTERCARD",
    "KERNEL_VISA",
    "AidConfig",
    "KernelConfigError",
    "TerminalConfig",
    "TransactionRequest",
    "default_aids",
]

#: Kernel Identifiers (EMV Book B §3.3.2.5, Table 3-6): Kernel 2 Mastercard, Kernel 3 Visa.
KERNEL_MASTERCARD: Final = 2
KERNEL_VISA: Final = 3

#: Terminal Transaction Qualifiers (Book C-3 v2.10 Annex A, 9F66) of a contactless-only
#: reader without a PIN pad: qVSDC supported, signature supported; byte 3: consumer device
#: CVM supported. No online PIN (byte 1 b3) and no contact chip (b5): a reader claims only
#: what it can do. Byte 2 b8-b7 are set per transaction by Entry Point pre-processing.
DEFAULT_TTQ: Final = bytes.fromhex("22004000")

#: TTQ byte 1 b3 "Online PIN supported" and Terminal Capabilities byte 2 b7 "Enciphered PIN
#: for online verification": cleared unless a PIN entry device is attached.
TTQ_ONLINE_PIN: Final = 0x04
CAPABILITY_ONLINE_PIN: Final = 0x40

#: An attended, online-capable contactless merchant terminal (EMV Book 4 v4.4 Annex A).
DEFAULT_TERMINAL_DATA: Final[Mapping[int, bytes]] = MappingProxyType(
    {
        0x9F33: bytes.fromhex("0028C8"),  # Terminal Capabilities: signature, no CVM, SDA/DDA/CDA
        0x9F35: bytes.fromhex("22"),  # Terminal Type: attended, merchant, offline with online
        0x9F40: bytes.fromhex("6000F0A001"),  # Additional Terminal Capabilities
        0x9F1A: bytes.fromhex("0978"),  # Terminal Country Code
        0x5F2A: bytes.fromhex("0978"),  # Transaction Currency Code
        0x5F36: bytes.fromhex("02"),  # Transaction Currency Exponent
        0x9F15: bytes.fromhex("5411"),  # Merchant Category Code
        0x9F16: b"PIPOS0000000001",  # Merchant Identifier
        0x9F1C: b"PIPOS001",  # Terminal Identification
        0x9F1E: b"PIPOS001",  # Interface Device Serial Number
        0x9F4E: b"PIPOS TEST MERCHANT",  # Merchant Name and Location
    }
)

_REQUIRED_TERMINAL_TAGS: Final = (0x9F33, 0x9F35, 0x9F1A, 0x5F2A)
_FIXED_LENGTHS: Final = {0x9F33: 3, 0x9F35: 1, 0x9F40: 5, 0x9F1A: 2, 0x5F2A: 2, 0x5F36: 1}


class KernelConfigError(EmvError):
    """A terminal, AID or transaction parameter is invalid; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise KernelConfigError(name, f"must be a non-negative integer amount, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TerminalConfig:
    """The terminal's own data objects (tag -> value) and its contactless capabilities."""

    #: 9F33, 9F35, 9F40, 9F1A, 5F2A, 5F36, 9F15, 9F16, 9F1C, 9F1E, 9F4E.
    data: Mapping[int, bytes] = field(default_factory=lambda: dict(DEFAULT_TERMINAL_DATA))
    #: Terminal Transaction Qualifiers 9F66 before pre-processing (Book C-3 Table 5-2).
    ttq: bytes = DEFAULT_TTQ
    #: Whether the terminal can go online (Book 3 §10.7: TAC/IAC-Online versus Default).
    #: An offline-only Terminal Type (9F35 x3, x6) cannot, whatever this says.
    online_capable: bool = True
    #: Whether a PIN entry device is attached and answers. Without one the kernel never
    #: claims online PIN (TTQ byte 1 b3, 9F33 byte 2 b7, DF8118/DF8119 b7 are cleared):
    #: a terminal must not offer a CVM it cannot perform.
    pin_entry_device: bool = False

    def __post_init__(self) -> None:
        for tag in _REQUIRED_TERMINAL_TAGS:
            if tag not in self.data:
                raise KernelConfigError(f"terminal.{tag:X}", "is required")
        for tag, length in _FIXED_LENGTHS.items():
            value = self.data.get(tag)
            if value is not None and len(value) != length:
                raise KernelConfigError(
                    f"terminal.{tag:X}", f"must be {length} bytes, got {len(value)}"
                )
        if len(self.ttq) != 4:
            raise KernelConfigError("terminal.ttq", f"must be 4 bytes, got {len(self.ttq)}")
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

    @property
    def currency(self) -> int:
        return int(self.data[0x5F2A].hex())

    @property
    def terminal_type(self) -> int:
        return self.data[0x9F35][0]

    @property
    def online_only(self) -> bool:
        """Terminal Type x1 or x4: online only (EMV Book 4 Annex A1, Table 24)."""
        return self.terminal_type & 0x0F in (0x01, 0x04)

    @property
    def offline_only(self) -> bool:
        """Terminal Type x3 or x6: offline only (EMV Book 4 Annex A1, Table 24)."""
        return self.terminal_type & 0x0F in (0x03, 0x06)

    @property
    def can_go_online(self) -> bool:
        """Online capable by configuration and by Terminal Type (Book 3 §10.7)."""
        return self.online_capable and not self.offline_only

    def honest_capabilities(self, value: bytes) -> bytes:
        """Terminal Capabilities (or a CVM capability byte when one byte) without online PIN
        when no PIN entry device is attached."""
        if self.pin_entry_device:
            return value
        if len(value) == 1:
            return bytes([value[0] & ~CAPABILITY_ONLINE_PIN & 0xFF])
        return value[:1] + bytes([value[1] & ~CAPABILITY_ONLINE_PIN & 0xFF]) + value[2:]

    def honest_ttq(self, ttq: bytes) -> bytes:
        """The TTQ without "online PIN supported" when no PIN entry device is attached, and
        with "offline-only reader" (byte 1 b4) when the terminal cannot go online."""
        first = ttq[0]
        if not self.pin_entry_device:
            first &= ~TTQ_ONLINE_PIN & 0xFF
        if not self.can_go_online:
            first |= 0x08
        return bytes([first]) + ttq[1:]


@dataclass(frozen=True, kw_only=True)
class AidConfig:
    """One supported application (Book B §3.1: a reader Combination of AID and kernel)."""

    aid: bytes
    kernel_id: int
    label: str = ""
    #: Book B §3.3.2.5: the card's ADF Name may extend this AID.
    partial_selection: bool = True
    #: Application Version Number (terminal), 9F09 (Book 3 §10.4.1).
    app_version: bytes = b"\x00\x02"
    #: Reader Contactless Transaction Limit (Book B §3.1.1.6); None: no limit.
    contactless_transaction_limit: int | None = None
    #: Reader Contactless Floor Limit (Book B §3.1.1.7); None: the terminal floor limit.
    contactless_floor_limit: int | None = None
    #: Reader CVM Required Limit (Book B §3.1.1.9); None: never required by amount.
    cvm_required_limit: int | None = None
    #: Terminal Floor Limit 9F1B (Book 3 §10.6.1).
    terminal_floor_limit: int = 0
    #: Terminal Action Codes (Book 3 §10.7), 5 bytes each.
    tac_denial: bytes = bytes(5)
    tac_online: bytes = bytes.fromhex("F45084800C")
    tac_default: bytes = bytes.fromhex("F45084800C")
    #: Random transaction selection (Book 3 §10.6.2).
    random_selection_threshold: int = 0
    random_selection_target_percent: int = 0
    random_selection_max_percent: int = 0
    #: Reader CVM limit for consumer-device CVM transactions (Book C-3); None: no limit.
    cdcvm_transaction_limit: int | None = None
    #: Book B §3.1.1.5: whether a zero amount may be processed contactless.
    zero_amount_allowed: bool = True
    #: Terminal Transaction Qualifiers for this AID (Book B §3.1.1.1: per Combination);
    #: None: the terminal's.
    ttq: bytes | None = None
    #: Book B §3.1.1.3 Status Check Support: a single unit of currency asks for an online
    #: cryptogram (a card status check).
    status_check: bool = False
    #: Book B §3.3.3.3 Extended Selection Support: append the directory entry's Extended
    #: Selection (9F29) to the ADF Name at final selection. Off unless configured.
    extended_selection: bool = False
    #: Book C-3 v2.10 §5.8.2: fDDA needs Card Authentication Related Data (9F69) with
    #: version '01'; a card without it (legacy fDDA version '00') is accepted only when
    #: the acquirer configures it.
    fdda_version_0: bool = False
    #: Kernel configuration data objects by tag (:mod:`emv.kernel.kernel_data`): C-2's
    #: DF81xx objects, per-AID 9F33/9F35/9F40/9F1A/9F66. Objects the named fields above
    #: carry (limits, TACs, 9F09, 9F1B, 9F66) must agree with them.
    kernel_data: Mapping[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 5 <= len(self.aid) <= 16:
            raise KernelConfigError("aid", f"must be 5-16 bytes, got {len(self.aid)}")
        if self.kernel_id not in (KERNEL_MASTERCARD, KERNEL_VISA):
            raise KernelConfigError(
                "kernel_id", f"kernel {self.kernel_id} is not implemented (2 or 3)"
            )
        if len(self.app_version) != 2:
            raise KernelConfigError("app_version", "must be 2 bytes")
        for name in ("tac_denial", "tac_online", "tac_default"):
            if len(getattr(self, name)) != 5:
                raise KernelConfigError(name, "must be 5 bytes")
        for name in (
            "contactless_transaction_limit",
            "contactless_floor_limit",
            "cvm_required_limit",
            "terminal_floor_limit",
            "random_selection_threshold",
            "cdcvm_transaction_limit",
        ):
            _check_limit(name, getattr(self, name))
        for name in ("random_selection_target_percent", "random_selection_max_percent"):
            value = getattr(self, name)
            if not 0 <= value <= 99:
                raise KernelConfigError(name, f"must be 0-99, got {value}")
        if self.random_selection_max_percent < self.random_selection_target_percent:
            raise KernelConfigError(
                "random_selection_max_percent", "must not be below the target percentage"
            )
        if self.ttq is not None and len(self.ttq) != 4:
            raise KernelConfigError("ttq", f"must be 4 bytes, got {len(self.ttq)}")
        data = dict(self.kernel_data)
        for tag, message in check_kernel_data(self.kernel_id, data):
            raise KernelConfigError(f"kernel_data.{tag:X}", message)
        # An optional named field left out (None) takes its value from the data object:
        # a numeric (n12) limit as its amount, the TTQ as it is.
        for tag, (name, value) in self.named_objects().items():
            if value is None and tag in data:
                numeric = KERNEL_DATA_OBJECTS[tag].data_format == "n"
                object.__setattr__(self, name, int(data[tag].hex()) if numeric else data[tag])
        for tag, (name, value) in self.named_objects().items():
            given = data.get(tag)
            if given is not None and value is not None and given != value:
                raise KernelConfigError(
                    f"kernel_data.{tag:X}",
                    f"{given.hex().upper()} disagrees with {name} "
                    f"({value.hex().upper()}); give it one way, or the same both ways",
                )
        object.__setattr__(self, "kernel_data", MappingProxyType(data))

    def named_objects(self) -> dict[int, tuple[str, bytes | None]]:
        """The kernel data objects the named fields carry: tag -> (field, encoded value)."""

        def n12(value: int | None) -> bytes | None:
            return None if value is None else bytes.fromhex(f"{value:012d}")

        objects: dict[int, tuple[str, bytes | None]] = {
            0xDF8123: ("contactless_floor_limit", n12(self.contactless_floor_limit)),
            0xDF8124: ("contactless_transaction_limit", n12(self.contactless_transaction_limit)),
            0xDF8126: ("cvm_required_limit", n12(self.cvm_required_limit)),
            0x9F09: ("app_version", self.app_version),
            0x9F1B: ("terminal_floor_limit", self.terminal_floor_limit.to_bytes(4, "big")),
        }
        if self.kernel_id == KERNEL_MASTERCARD:
            objects[0xDF8125] = ("cdcvm_transaction_limit", n12(self.cdcvm_transaction_limit))
            objects[0xDF8120] = ("tac_default", self.tac_default)
            objects[0xDF8121] = ("tac_denial", self.tac_denial)
            objects[0xDF8122] = ("tac_online", self.tac_online)
        else:
            objects[0x9F66] = ("ttq", self.ttq)
        return objects

    def data_object(self, tag: int) -> bytes | None:
        """A configuration data object's value: as configured, or as a named field gives it."""
        value = self.kernel_data.get(tag)
        if value is not None:
            return value
        named = self.named_objects().get(tag)
        return None if named is None else named[1]

    @property
    def rid(self) -> bytes:
        return self.aid[:5]

    @property
    def floor_limit(self) -> int:
        """The floor limit contactless processing uses (Book B §3.1.1.7-8)."""
        if self.contactless_floor_limit is not None:
            return self.contactless_floor_limit
        return self.terminal_floor_limit


def default_aids() -> tuple[AidConfig, ...]:
    """Visa and Visa Electron (Kernel 3), Mastercard and Maestro (Kernel 2), with common
    European limits in minor units: contactless limit 1000.00, floor and CVM limits 50.00."""

    def visa(aid: str, label: str) -> AidConfig:
        return AidConfig(
            aid=bytes.fromhex(aid),
            kernel_id=KERNEL_VISA,
            label=label,
            app_version=b"\x00\x8c",
            contactless_transaction_limit=100_000,
            contactless_floor_limit=5_000,
            cvm_required_limit=5_000,
            tac_denial=bytes.fromhex("0010000000"),
            tac_online=bytes.fromhex("DC4004F800"),
            tac_default=bytes.fromhex("DC4000A800"),
        )

    def mastercard(aid: str, label: str) -> AidConfig:
        return AidConfig(
            aid=bytes.fromhex(aid),
            kernel_id=KERNEL_MASTERCARD,
            label=label,
            app_version=b"\x00\x02",
            contactless_transaction_limit=100_000,
            contactless_floor_limit=5_000,
            cvm_required_limit=5_000,
            tac_denial=bytes.fromhex("0000000000"),
            tac_online=bytes.fromhex("F45084800C"),
            tac_default=bytes.fromhex("F45084800C"),
        )

    return (
        visa("A0000000031010", "VISA"),
        visa("A0000000032010", "VISA ELECTRON"),
        mastercard("A0000000041010", "MASTERCARD"),
        mastercard("A0000000043060", "MAESTRO"),
    )


def _parse_digits(name: str, text: str, length: int) -> str:
    if not isinstance(text, str) or len(text) != length or not (text.isascii() and text.isdigit()):
        raise KernelConfigError(name, f"must be {length} digits, got {text!r}")
    return text


@dataclass(frozen=True, kw_only=True)
class TransactionRequest:
    """One sale as the caller asks for it; every value the kernel cannot invent is here."""

    amount: int
    other_amount: int = 0
    #: ISO 4217 numeric; None uses the terminal's Transaction Currency Code (5F2A).
    currency: int | None = None
    #: Transaction Type 9C as its two decimal digits (ISO 8583:1987 processing code):
    #: 0 purchase, 1 cash, 9 purchase with cashback, 20 refund.
    transaction_type: int = 0
    #: Transaction Date 9A, YYMMDD.
    date: str
    #: Transaction Time 9F21, HHMMSS.
    time: str
    #: Unpredictable Number 9F37, 4 bytes from the caller's random source.
    unpredictable_number: bytes
    #: Random number 0-99 for random transaction selection (Book 3 §10.6.2): the transaction
    #: is selected when it is below the transaction target percentage.
    random_selection: int = 99

    def __post_init__(self) -> None:
        _check_limit("amount", self.amount)
        _check_limit("other_amount", self.other_amount)
        if self.amount >= 10**12 or self.other_amount >= 10**12:
            raise KernelConfigError("amount", "must fit in 12 digits (n12, tag 9F02)")
        if self.currency is not None and not 0 <= self.currency <= 999:
            raise KernelConfigError(
                "currency", f"must be an ISO 4217 numeric code, got {self.currency}"
            )
        if not 0 <= self.transaction_type <= 99:
            raise KernelConfigError("transaction_type", "must be two digits")
        digits = _parse_digits("date", self.date, 6)
        try:
            datetime.date(2000 + int(digits[:2]), int(digits[2:4]), int(digits[4:]))
        except ValueError as exc:
            raise KernelConfigError("date", f"is not a calendar date: {digits}") from exc
        clock = _parse_digits("time", self.time, 6)
        if int(clock[:2]) > 23 or int(clock[2:4]) > 59 or int(clock[4:]) > 59:
            raise KernelConfigError("time", f"is not a time of day: {clock}")
        if len(self.unpredictable_number) != 4:
            raise KernelConfigError("unpredictable_number", "must be 4 bytes")
        if not 0 <= self.random_selection <= 99:
            raise KernelConfigError("random_selection", "must be 0-99")

    @property
    def today(self) -> datetime.date:
        return datetime.date(2000 + int(self.date[:2]), int(self.date[2:4]), int(self.date[4:]))
