"""The terminal parameter file: JSON loaded and validated into typed, frozen dataclasses.

The file holds what an acquirer configures on a terminal: the terminal's own EMV data
objects (EMV Book 4 Annex A), the supported applications with their contactless limits and
Terminal Action Codes (EMV Book 3 §10.7, EMV Contactless Book B §3.1), the certification
authority public keys (EMV Book 2 §5, §6), and the optional offline queue and QR settings.

Validation collects every problem in one pass and raises one :class:`ParamsError` listing
them all, each naming the source and the field path, e.g.::

    params.json: aids[1].limits.cvm_required: expected a non-negative integer amount in
    minor units, got -5

Money is an integer count of minor units: a float or a string where an amount belongs is an
error, never converted. Keys starting with "_" are comments and ignored at every level.

An AID's ``kernel_data`` configures its kernel by tag (EMV Contactless Book C-2 Annex A,
Book C-3 Annex A; :mod:`emv.kernel.kernel_data`), each object checked against its definition.
The named fields that carry one of these objects (:data:`NAMED_KERNEL_DATA`: the limits, the
Kernel 2 TACs, 9F09, 9F1B, the Kernel 3 TTQ) may be given either way; given both ways they
must agree. The format, every key and its tag: docs/parameters.md.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Final, Literal, TypeVar

from emv.kernel.config import KERNEL_MASTERCARD, KERNEL_VISA
from emv.kernel.kernel_data import KERNEL_DATA_OBJECTS, check_kernel_data, kernel_data_name
from terminal.domain.currency import (
    CURRENCIES,
    MAX_EMV_AMOUNT,
    AmountError,
    Currency,
    UnknownCurrencyError,
    currency,
    format_amount,
    parse_amount,
)
from terminal.domain.errors import ConfigurationError

__all__ = [
    "CURRENCIES",
    "FORMAT_VERSION",
    "NAMED_KERNEL_DATA",
    "AidLimits",
    "AidParams",
    "AmountError",
    "CaKeyParams",
    "Currency",
    "OfflineParams",
    "ParamIssue",
    "ParamsError",
    "QrParams",
    "RandomSelection",
    "TerminalData",
    "TerminalParams",
    "UnknownCurrencyError",
    "currency",
    "data_object_amount",
    "default_params",
    "format_amount",
    "load_params",
    "parse_amount",
    "parse_params",
]

FORMAT_VERSION: Final = 1
"""The parameter file format this module reads (top-level "version", optional)."""

Language = Literal["en", "zh"]

# --- the typed result ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TerminalData:
    """The terminal's own data objects (EMV Book 4 Annex A; tags in brackets)."""

    terminal_capabilities: bytes  # 9F33, 3 bytes
    additional_terminal_capabilities: bytes  # 9F40, 5 bytes
    terminal_type: bytes  # 9F35, 1 byte n2 (e.g. 22)
    country_code: int  # 9F1A, ISO 3166-1 numeric
    currency_code: int  # 5F2A, ISO 4217 numeric
    currency_exponent: int  # 5F36
    merchant_category_code: str  # 9F15, 4 digits
    merchant_name_location: str  # 9F4E
    merchant_identifier: str  # 9F16, up to 15 characters
    terminal_identifier: str  # 9F1C, 8 characters
    ifd_serial_number: str  # 9F1E, 8 characters
    language: Language
    ttq: bytes  # 9F66 default, 4 bytes
    # Not EMV data objects: how the checkout page gives its feedback. Short tones on a tap,
    # an approval and a decline are on unless the merchant turns them off (a quiet shop);
    # speaking the approved amount aloud (the QR speaker box a Chinese counter knows) is
    # off unless asked for: not every counter wants its takings announced.
    announce_amount: bool = False
    sounds: bool = True

    def emv_tags(self) -> dict[int, bytes]:
        """These values encoded as EMV data object values, keyed by tag number.

        n-format values are BCD, right-justified; 9F16 is space-padded to its fixed 15.
        """
        return {
            0x9F33: self.terminal_capabilities,
            0x9F40: self.additional_terminal_capabilities,
            0x9F35: self.terminal_type,
            0x9F1A: bytes.fromhex(f"{self.country_code:04d}"),
            0x5F2A: bytes.fromhex(f"{self.currency_code:04d}"),
            0x5F36: bytes.fromhex(f"{self.currency_exponent:02d}"),
            0x9F15: bytes.fromhex(self.merchant_category_code),
            0x9F4E: self.merchant_name_location.encode("ascii"),
            0x9F16: self.merchant_identifier.ljust(15).encode("ascii"),
            0x9F1C: self.terminal_identifier.encode("ascii"),
            0x9F1E: self.ifd_serial_number.encode("ascii"),
            0x9F66: self.ttq,
        }


@dataclass(frozen=True, slots=True)
class AidLimits:
    """Contactless limits in minor units of the terminal currency (Book B §3.1.1, Book A §5.7)."""

    contactless_transaction: int
    contactless_floor: int
    cvm_required: int
    contactless_transaction_on_device_cvm: int | None = None


@dataclass(frozen=True, slots=True)
class RandomSelection:
    """Random transaction selection for online processing (EMV Book 3 §10.6.2)."""

    threshold: int = 0  # minor units
    target_percent: int = 0  # 0..99
    max_target_percent: int = 0  # 0..99


#: The AID keys that carry a kernel data object, by tag. A key maps onto its tag only for
#: the kernels the object belongs to (``KERNEL_DATA_OBJECTS[tag].kernels``): DF8125 and the
#: TACs DF8120-DF8122 for Kernel 2, 9F66 for Kernel 3, the others for both. Amounts in DF8123-
#: DF8126 are n12 BCD minor units ("000000015000" is 150.00), 9F1B is binary minor units.
NAMED_KERNEL_DATA: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x9F09: "application_version",
        0x9F1B: "terminal_floor_limit",
        0xDF8123: "limits.contactless_floor",
        0xDF8124: "limits.contactless_transaction",
        0xDF8125: "limits.contactless_transaction_on_device_cvm",
        0xDF8126: "limits.cvm_required",
        0xDF8120: "tac.default",
        0xDF8121: "tac.denial",
        0xDF8122: "tac.online",
        0x9F66: "ttq",
    }
)

#: The n12 amount objects (Book C-2 Annex A: Reader limits, BCD minor units).
_N12_AMOUNTS: Final = frozenset({0xDF8123, 0xDF8124, 0xDF8125, 0xDF8126})
#: 9F1B Terminal Floor Limit is b4 (EMV Book 3 §10.6.1): at most this many minor units.
_MAX_B4: Final = 0xFFFFFFFF


def data_object_amount(tag: int, value: bytes) -> int | None:
    """The amount in minor units an amount object holds (DF8123-DF8126 n12 BCD, 9F1B
    binary), or None for any other object."""
    if tag in _N12_AMOUNTS:
        return int(value.hex())
    if tag == 0x9F1B:
        return int.from_bytes(value, "big")
    return None


def _named_tags(kernel_id: int) -> dict[str, int]:
    """The AID keys that carry a kernel data object for this kernel: key -> tag."""
    return {
        key: tag
        for tag, key in NAMED_KERNEL_DATA.items()
        if kernel_id in KERNEL_DATA_OBJECTS[tag].kernels
    }


def _no_kernel_data() -> Mapping[int, bytes]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AidParams:
    """One supported application (AID) and how the terminal treats it."""

    aid: bytes  # 4F / 9F06, 5..16 bytes
    label: str
    kernel_id: int  # Book B §3.3.2: 2 = Mastercard, 3 = Visa, ...
    partial_selection: bool
    application_version: bytes  # 9F09, 2 bytes
    limits: AidLimits
    tac_denial: bytes  # 5 bytes each (EMV Book 3 §10.7)
    tac_online: bytes
    tac_default: bytes
    terminal_floor_limit: int  # 9F1B, minor units
    random_selection: RandomSelection = field(default_factory=RandomSelection)
    ttq: bytes | None = None  # 9F66 override for this AID
    tdol: bytes | None = None  # default TDOL (97)
    ddol: bytes | None = None  # default DDOL (9F49)
    status_check: bool = False  # Book B §3.1.1.3
    zero_amount_allowed: bool = True  # Book B §3.1.1.4
    extended_selection: bool = False  # Book B §3.3.3.3 Extended Selection Support
    fdda_version_0: bool = False  # Book C-3 §5.8.2: accept legacy fDDA (no 9F69 version 01)
    #: Kernel data objects by tag (emv.kernel.kernel_data), validated, without those a named
    #: field above carries (NAMED_KERNEL_DATA): those are in the named fields.
    kernel_data: Mapping[int, bytes] = field(default_factory=_no_kernel_data)

    @property
    def rid(self) -> bytes:
        """The Registered Application Provider Identifier: the AID's first 5 bytes."""
        return self.aid[:5]

    def data_objects(self) -> dict[int, bytes]:
        """Every kernel data object this AID configures, sorted by tag: ``kernel_data`` and
        the named fields that carry an object for this kernel, encoded as the tag is."""
        named: dict[str, bytes | None] = {
            "application_version": self.application_version,
            "terminal_floor_limit": self.terminal_floor_limit.to_bytes(4, "big"),
            "limits.contactless_floor": _n12(self.limits.contactless_floor),
            "limits.contactless_transaction": _n12(self.limits.contactless_transaction),
            "limits.contactless_transaction_on_device_cvm": _n12(
                self.limits.contactless_transaction_on_device_cvm
            ),
            "limits.cvm_required": _n12(self.limits.cvm_required),
            "tac.default": self.tac_default,
            "tac.denial": self.tac_denial,
            "tac.online": self.tac_online,
            "ttq": self.ttq,
        }
        objects = dict(self.kernel_data)
        for key, tag in _named_tags(self.kernel_id).items():
            value = named[key]
            if value is not None:
                objects[tag] = value
        return dict(sorted(objects.items()))


def _n12(amount: int | None) -> bytes | None:
    return None if amount is None else bytes.fromhex(f"{amount:012d}")


@dataclass(frozen=True, slots=True)
class CaKeyParams:
    """A certification authority public key as configured (EMV Book 2 §5.1, Table 2)."""

    rid: bytes  # 5 bytes
    index: int  # 8F, 0..255
    modulus: bytes  # 64..248 bytes
    exponent: bytes  # 03 or 010001
    expiry: datetime.date | None = None
    sha1: bytes | None = None  # check sum over RID || index || modulus || exponent


@dataclass(frozen=True, slots=True)
class OfflineParams:
    """Limits for payments kept in the offline queue while the acquirer is unreachable."""

    max_transaction_amount: int  # minor units of the terminal currency
    max_total_amount: Mapping[int, int]  # ISO 4217 numeric -> minor units stored at most
    max_count: int
    max_age_hours: int
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class QrParams:
    """Which EMVCo QR code flows the terminal accepts."""

    enabled: bool = False
    consumer_presented: bool = False  # customer shows a code, the scanner reads it
    merchant_presented: bool = False  # the terminal shows a code, the phone scans it


@dataclass(frozen=True, slots=True)
class TerminalParams:
    """A whole, validated parameter file."""

    terminal: TerminalData
    aids: tuple[AidParams, ...]
    ca_public_keys: tuple[CaKeyParams, ...]
    offline: OfflineParams | None  # None: no offline acceptance configured
    qr: QrParams
    source: str

    def aid_params(self, aid: bytes) -> AidParams | None:
        """The configured entry for exactly this AID, if any."""
        for entry in self.aids:
            if entry.aid == aid:
                return entry
        return None


# --- errors --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamIssue:
    """One problem found in a parameter file."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


class ParamsError(ConfigurationError):
    """A parameter file is unreadable or invalid; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[ParamIssue]) -> None:
        self.issues: tuple[ParamIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    @property
    def messages(self) -> list[str]:
        """One line per problem, each naming the source and the field path."""
        return [str(issue) for issue in self.issues]


# --- validation machinery ------------------------------------------------------------------

_T = TypeVar("_T")
_HEX_RE: Final = re.compile(r"[0-9A-Fa-f]*")
_PRINTABLE_RE: Final = re.compile(r"[\x20-\x7e]*")
_ALNUM_RE: Final = re.compile(r"[0-9A-Za-z]*")


def _show(value: object) -> str:
    """A JSON-looking rendering of a bad value, kept short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Collects issues while walking the document; getters return placeholders on error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[ParamIssue] = []

    def error(self, path: str, message: str) -> None:
        self.issues.append(ParamIssue(self.source, path, message))

    # structure

    def section(
        self,
        value: object,
        path: str,
        required: Sequence[str],
        optional: Sequence[str] = (),
    ) -> dict[str, object]:
        """An object with these keys; unknown keys and missing required keys are issues."""
        if not isinstance(value, dict):
            self.error(path, f"expected an object, got {_show(value)}")
            return {}
        result: dict[str, object] = {}
        known = set(required) | set(optional)
        for key, item in value.items():
            if key.startswith("_"):
                continue
            if key not in known:
                self.error(_join(path, key), f"unknown field (expected one of: {_names(known)})")
                continue
            result[key] = item
        for key in required:
            if key not in value:
                self.error(_join(path, key), "missing required field")
        return result

    def get(
        self,
        obj: Mapping[str, object],
        key: str,
        path: str,
        convert: Callable[[object, str], _T],
        placeholder: _T,
    ) -> _T:
        """Convert obj[key] if present (a missing key was already reported by section())."""
        if key not in obj:
            return placeholder
        return convert(obj[key], _join(path, key))

    def optional(
        self,
        obj: Mapping[str, object],
        key: str,
        path: str,
        convert: Callable[[object, str], _T],
    ) -> _T | None:
        """Convert obj[key] unless it is absent or null."""
        value = obj.get(key)
        if value is None:
            return None
        return convert(value, _join(path, key))

    # scalar converters: report and return a placeholder of the right type on error

    def hex_bytes(
        self, value: object, path: str, *, size: int | None = None, lo: int = 0, hi: int = 0
    ) -> bytes:
        want = f"{size} bytes as {2 * size} hex digits" if size else f"{lo} to {hi} bytes as hex"
        if not isinstance(value, str) or not _HEX_RE.fullmatch(value) or len(value) % 2:
            self.error(path, f"expected {want}, got {_show(value)}")
            return b""
        data = bytes.fromhex(value)
        if size is not None and len(data) != size:
            self.error(path, f"expected {want}, got {len(data)} bytes")
            return b""
        if size is None and not lo <= len(data) <= hi:
            self.error(path, f"expected {want}, got {len(data)} bytes")
            return b""
        return data

    def amount(self, value: object, path: str) -> int:
        if isinstance(value, float):
            self.error(
                path,
                f"expected an integer amount in minor units (money is never a float), "
                f"got {_show(value)}",
            )
            return 0
        if isinstance(value, str):
            self.error(
                path,
                f"expected an integer amount in minor units, got the string {_show(value)} "
                f"(write 1234 for 12.34)",
            )
            return 0
        if not _is_int(value):
            self.error(path, f"expected an integer amount in minor units, got {_show(value)}")
            return 0
        assert isinstance(value, int)
        if value < 0:
            self.error(path, f"expected a non-negative integer amount in minor units, got {value}")
            return 0
        if value > MAX_EMV_AMOUNT:
            self.error(path, f"amount {value} exceeds the EMV n12 maximum {MAX_EMV_AMOUNT}")
            return 0
        return value

    def integer(self, value: object, path: str, lo: int, hi: int) -> int:
        if not _is_int(value):
            self.error(path, f"expected an integer {lo}..{hi}, got {_show(value)}")
            return lo
        assert isinstance(value, int)
        if not lo <= value <= hi:
            self.error(path, f"expected an integer {lo}..{hi}, got {value}")
            return lo
        return value

    def boolean(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {_show(value)}")
            return False
        return value

    def text(self, value: object, path: str, lo: int, hi: int, *, alnum: bool = False) -> str:
        kind = "letters and digits" if alnum else "printable ASCII characters"
        pattern = _ALNUM_RE if alnum else _PRINTABLE_RE
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.error(path, f"expected {lo}..{hi} {kind}, got {_show(value)}")
            return ""
        if not lo <= len(value) <= hi:
            span = f"exactly {lo}" if lo == hi else f"{lo}..{hi}"
            self.error(path, f"expected {span} {kind}, got {len(value)}: {_show(value)}")
            return ""
        return value

    def numeric_code(self, value: object, path: str, what: str) -> int:
        """A 3-digit numeric code (ISO 3166 / ISO 4217): a JSON integer or a "ddd" string."""
        if isinstance(value, str) and len(value) == 3 and value.isascii() and value.isdigit():
            number = int(value)
        elif _is_int(value):
            assert isinstance(value, int)
            number = value
        else:
            self.error(path, f"expected a 3-digit numeric {what} code, got {_show(value)}")
            return 0
        if not 1 <= number <= 999:
            self.error(path, f"expected a 3-digit numeric {what} code 001..999, got {number}")
            return 0
        return number

    def currency_code(self, value: object, path: str) -> int:
        number = self.numeric_code(value, path, "ISO 4217 currency")
        if number and number not in CURRENCIES:
            self.error(path, f"unknown ISO 4217 numeric currency code {number:03d}")
            return 0
        return number


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _names(keys: set[str]) -> str:
    return ", ".join(sorted(keys))


# --- sections ------------------------------------------------------------------------------

_TERMINAL_REQUIRED: Final = (
    "terminal_capabilities",
    "additional_terminal_capabilities",
    "terminal_type",
    "country_code",
    "currency_code",
    "merchant_category_code",
    "merchant_name_location",
    "merchant_identifier",
    "terminal_identifier",
    "ifd_serial_number",
    "language",
    "ttq",
)


_TERMINAL_OPTIONAL: Final = ("currency_exponent", "announce_amount", "sounds")


def _terminal_type(c: _Checker, value: object, path: str) -> bytes:
    # EMV Book 4 Annex A1, Table 24: first digit = operational control (1 financial
    # institution, 2 merchant, 3 cardholder), second = environment/capability 1..6.
    text = f"{value:02d}" if _is_int(value) and isinstance(value, int) else value
    if (
        not isinstance(text, str)
        or len(text) != 2
        or text[0] not in "123"
        or text[1] not in "123456"
    ):
        c.error(
            path,
            f'expected a terminal type n2 such as "22" (first digit 1..3, second 1..6), '
            f"got {_show(value)}",
        )
        return b"\x22"
    return bytes.fromhex(text)


def _parse_terminal(c: _Checker, value: object, path: str) -> TerminalData:
    obj = c.section(value, path, _TERMINAL_REQUIRED, _TERMINAL_OPTIONAL)
    currency_code = c.get(obj, "currency_code", path, c.currency_code, 0)
    exponent: int = CURRENCIES[currency_code].exponent if currency_code in CURRENCIES else 2
    if "currency_exponent" in obj:
        given = c.integer(obj["currency_exponent"], _join(path, "currency_exponent"), 0, 9)
        if currency_code in CURRENCIES and given != exponent:
            c.error(
                _join(path, "currency_exponent"),
                f"{CURRENCIES[currency_code].alpha} has exponent {exponent} in ISO 4217, "
                f"got {given}",
            )
    mcc = c.get(obj, "merchant_category_code", path, lambda v, p: c.text(v, p, 4, 4), "0000")
    if mcc and not (mcc.isascii() and mcc.isdigit()):
        c.error(_join(path, "merchant_category_code"), f"expected 4 digits, got {_show(mcc)}")
    language_raw = obj.get("language", "en")
    language: Language = "en"
    if language_raw == "zh":
        language = "zh"
    elif language_raw != "en":
        c.error(_join(path, "language"), f'expected "en" or "zh", got {_show(language_raw)}')

    def defined(tag: int, size: int) -> Callable[[object, str], bytes]:
        """A data object checked against its definition (emv.kernel.kernel_data): no RFU bits."""

        def convert(v: object, p: str) -> bytes:
            value = c.hex_bytes(v, p, size=size)
            if value:
                for _tag, message in check_kernel_data(KERNEL_VISA, {tag: value}):
                    c.error(p, message)
            return value

        return convert

    return TerminalData(
        terminal_capabilities=c.get(obj, "terminal_capabilities", path, defined(0x9F33, 3), b""),
        additional_terminal_capabilities=c.get(
            obj,
            "additional_terminal_capabilities",
            path,
            lambda v, p: c.hex_bytes(v, p, size=5),
            b"",
        ),
        terminal_type=c.get(obj, "terminal_type", path, lambda v, p: _terminal_type(c, v, p), b""),
        country_code=c.get(
            obj, "country_code", path, lambda v, p: c.numeric_code(v, p, "ISO 3166 country"), 0
        ),
        currency_code=currency_code,
        currency_exponent=exponent,
        merchant_category_code=mcc,
        merchant_name_location=c.get(
            obj, "merchant_name_location", path, lambda v, p: c.text(v, p, 1, 128), ""
        ),
        merchant_identifier=c.get(
            obj, "merchant_identifier", path, lambda v, p: c.text(v, p, 1, 15), ""
        ),
        terminal_identifier=c.get(
            obj, "terminal_identifier", path, lambda v, p: c.text(v, p, 8, 8, alnum=True), ""
        ),
        ifd_serial_number=c.get(
            obj, "ifd_serial_number", path, lambda v, p: c.text(v, p, 8, 8, alnum=True), ""
        ),
        language=language,
        ttq=c.get(obj, "ttq", path, defined(0x9F66, 4), b""),
        announce_amount=c.get(obj, "announce_amount", path, c.boolean, False),
        sounds=c.get(obj, "sounds", path, c.boolean, True),
    )


def _parse_random_selection(
    c: _Checker, value: object, path: str, floor_limit: int
) -> RandomSelection:
    obj = c.section(value, path, (), ("threshold", "target_percent", "max_target_percent"))
    threshold = c.get(obj, "threshold", path, c.amount, 0)
    target = c.get(obj, "target_percent", path, lambda v, p: c.integer(v, p, 0, 99), 0)
    maximum = c.get(obj, "max_target_percent", path, lambda v, p: c.integer(v, p, 0, 99), 0)
    # EMV Book 3 §10.6.2: the target percentage may not exceed the maximum target
    # percentage, and the threshold value is below the floor limit.
    if target > maximum:
        c.error(
            _join(path, "target_percent"),
            f"target percentage {target} exceeds max_target_percent {maximum}",
        )
    if maximum > 0 and threshold >= floor_limit:
        c.error(
            _join(path, "threshold"),
            f"threshold {threshold} must be below the terminal floor limit {floor_limit}",
        )
    return RandomSelection(threshold, target, maximum)


_AID_REQUIRED: Final = ("aid", "label", "kernel_id")
_AID_OPTIONAL: Final = (
    # Required unless the kernel data objects they carry are given (NAMED_KERNEL_DATA).
    "application_version",
    "limits",
    "tac",
    "terminal_floor_limit",
    # Optional.
    "partial_selection",
    "random_selection",
    "ttq",
    "tdol",
    "ddol",
    "status_check",
    "zero_amount_allowed",
    "extended_selection",
    "fdda_version_0",
    "kernel_data",
)
_LIMITS_REQUIRED: Final = ("contactless_transaction", "contactless_floor", "cvm_required")
_LIMITS_OPTIONAL: Final = ("contactless_transaction_on_device_cvm",)
_TAC_REQUIRED: Final = ("denial", "online", "default")
#: A kernel data object's tag as the file writes it: 1 to 4 bytes of hex digits.
_TAG_RE: Final = re.compile(r"(?:[0-9A-Fa-f]{2}){1,4}")


def _parse_kernel_data(
    c: _Checker, value: object, path: str, kernel_id: int | None
) -> tuple[dict[int, bytes], set[int]]:
    """An AID's ``kernel_data``: tag (hex) -> value (hex), each object checked against its
    definition for this kernel (``check_kernel_data``). Returns the valid objects and the
    tags given at all (valid or not), so that a bad object is reported once, not also as a
    missing named field. ``kernel_id`` None: the AID's kernel is itself invalid."""
    if not isinstance(value, dict):
        c.error(
            path,
            f'expected an object of tag to hex value, e.g. {{"DF811B": "20"}}, got {_show(value)}',
        )
        return {}, set()
    values: dict[int, bytes] = {}
    given: set[int] = set()
    spelled: dict[int, str] = {}
    for key, item in value.items():
        if key.startswith("_"):
            continue
        if not _TAG_RE.fullmatch(key):
            c.error(
                _join(path, key),
                f'expected a tag as hex digits, such as "DF811B", got {_show(key)}',
            )
            continue
        tag = int(key, 16)
        name = key.upper()
        if name != f"{tag:X}":  # "00DF81": no tag has a zero first byte
            c.error(
                _join(path, key),
                f"{name} is not a configuration data object pipos knows "
                "(see docs/parameters.md for the list)",
            )
            continue
        item_path = _join(path, name)
        if tag in spelled:
            c.error(item_path, f"given twice, as {_show(spelled[tag])} and as {_show(key)}")
            continue
        spelled[tag] = key
        given.add(tag)
        what = f"{name} ({KERNEL_DATA_OBJECTS[tag].name})" if tag in KERNEL_DATA_OBJECTS else name
        if not isinstance(item, str) or not _HEX_RE.fullmatch(item) or len(item) % 2:
            c.error(
                item_path,
                f'{what}: expected its value as hex digits, two per byte (e.g. "20"), '
                f"got {_show(item)}",
            )
            continue
        values[tag] = bytes.fromhex(item)
    if kernel_id is None:
        return {}, given
    for tag, message in check_kernel_data(kernel_id, values):
        c.error(_join(path, f"{tag:X}"), message)
        del values[tag]
    return values, given


class _AidFields:
    """An AID's named fields merged with the kernel data objects that carry them."""

    def __init__(
        self,
        c: _Checker,
        path: str,
        kernel_id: int | None,
        values: Mapping[int, bytes],
        given: set[int],
        currency_code: int,
    ) -> None:
        self.c = c
        self.path = path
        self.tags = _named_tags(kernel_id) if kernel_id is not None else {}
        self.values = values
        self.given = given
        self.currency_code = currency_code

    def tag_given(self, key: str) -> bool:
        tag = self.tags.get(key)
        return tag is not None and tag in self.given

    def hint(self, keys: Sequence[str]) -> str:
        """How else the missing keys may be given, if they may."""
        tags = sorted(f"{self.tags[key]:X}" for key in keys if key in self.tags)
        if not tags:
            return ""
        if len(tags) == 1:
            return f" (or give it as kernel_data.{tags[0]})"
        return f" (or give kernel_data {', '.join(tags[:-1])} and {tags[-1]})"

    def require(self, within: Mapping[str, object], key: str) -> None:
        """`key` (e.g. "limits.cvm_required") must be in `within` unless its tag is given."""
        if key.rsplit(".", 1)[-1] not in within and not self.tag_given(key):
            self.c.error(_join(self.path, key), "missing required field" + self.hint([key]))

    def group(
        self,
        obj: Mapping[str, object],
        name: str,
        required: Sequence[str],
        optional: Sequence[str] = (),
    ) -> dict[str, object]:
        """A section such as "limits": its keys required unless their tags are given."""
        keys = [f"{name}.{key}" for key in required]
        if name not in obj:
            untagged = [key for key in keys if not self.tag_given(key)]
            if len(untagged) == len(keys):
                self.c.error(_join(self.path, name), "missing required field" + self.hint(keys))
            else:
                for key in untagged:
                    self.c.error(_join(self.path, key), "missing required field" + self.hint([key]))
            return {}
        if not isinstance(obj[name], dict):
            return self.c.section(obj[name], _join(self.path, name), ())  # reports it
        section = self.c.section(obj[name], _join(self.path, name), (), (*required, *optional))
        for key in keys:
            self.require(section, key)
        return section

    def _disagree(self, key: str, tag: int, raw: bytes, shown: str, named: str) -> None:
        self.c.error(
            f"{self.path}.kernel_data.{tag:X}",
            f"{tag:X} ({kernel_data_name(tag)}) {raw.hex().upper()}{shown} disagrees with "
            f"{_join(self.path, key)} {named}; give it one way, or the same both ways",
        )

    def amount(self, key: str, named: int | None) -> int | None:
        """An amount: as the named field gives it, else as its tag does (n12 BCD or b4)."""
        tag = self.tags.get(key)
        raw = self.values.get(tag) if tag is not None else None
        if tag is None or raw is None:
            return named
        from_tag = data_object_amount(tag, raw)
        assert from_tag is not None  # the named amounts are amount objects
        if named is not None and named != from_tag:
            self._disagree(
                key, tag, raw, f" ({self._money(from_tag)})", f"{named} ({self._money(named)})"
            )
        return from_tag if named is None else named

    def binary(self, key: str, named: bytes | None) -> bytes | None:
        """A binary value: as the named field gives it, else as its tag does."""
        tag = self.tags.get(key)
        raw = self.values.get(tag) if tag is not None else None
        if tag is None or raw is None:
            return named
        if named is not None and named != raw:
            self._disagree(key, tag, raw, "", named.hex().upper())
        return raw if named is None else named

    def _money(self, minor: int) -> str:
        if self.currency_code in CURRENCIES:
            return format_amount(minor, self.currency_code)
        return f"{minor} minor units"

    def unnamed(self) -> Mapping[int, bytes]:
        """The kernel data objects no named field carries."""
        named = set(self.tags.values())
        return MappingProxyType(
            {tag: value for tag, value in sorted(self.values.items()) if tag not in named}
        )


def _parse_aid(c: _Checker, value: object, path: str, currency_code: int = 0) -> AidParams:
    obj = c.section(value, path, _AID_REQUIRED, _AID_OPTIONAL)
    before = len(c.issues)
    kernel_id = c.get(obj, "kernel_id", path, lambda v, p: c.integer(v, p, 1, 255), 1)
    known_kernel = kernel_id if "kernel_id" in obj and len(c.issues) == before else None
    values: dict[int, bytes] = {}
    given: set[int] = set()
    if "kernel_data" in obj:
        values, given = _parse_kernel_data(
            c, obj["kernel_data"], _join(path, "kernel_data"), known_kernel
        )
    fields = _AidFields(c, path, known_kernel, values, given, currency_code)

    def valid(
        within: Mapping[str, object],
        at: str,
        key: str,
        convert: Callable[[object, str], _T],
        *,
        nullable: bool = False,
    ) -> _T | None:
        """within[key] converted, or None when absent (or null, when `nullable`) or invalid
        (then already reported)."""
        if key not in within or (nullable and within[key] is None):
            return None
        count = len(c.issues)
        result = convert(within[key], _join(at, key))
        return result if len(c.issues) == count else None

    def hex_of(size: int) -> Callable[[object, str], bytes]:
        return lambda v, p: c.hex_bytes(v, p, size=size)

    def floor_amount(v: object, p: str) -> int:
        amount = c.amount(v, p)
        if amount > _MAX_B4:
            c.error(p, f"{amount} does not fit 9F1B (Terminal Floor Limit, b4): at most {_MAX_B4}")
        return amount

    def ttq_value(v: object, p: str) -> bytes:
        ttq = c.hex_bytes(v, p, size=4)
        if ttq and known_kernel in (KERNEL_MASTERCARD, KERNEL_VISA):
            for _tag, message in check_kernel_data(known_kernel, {0x9F66: ttq}):
                c.error(p, message)
        return ttq

    fields.require(obj, "application_version")
    fields.require(obj, "terminal_floor_limit")
    limits_obj = fields.group(obj, "limits", _LIMITS_REQUIRED, _LIMITS_OPTIONAL)
    tac_obj = fields.group(obj, "tac", _TAC_REQUIRED)
    limits_path, tac_path = _join(path, "limits"), _join(path, "tac")

    def limit(key: str) -> int | None:
        nullable = key in _LIMITS_OPTIONAL
        given = valid(limits_obj, limits_path, key, c.amount, nullable=nullable)
        return fields.amount(f"limits.{key}", given)

    def tac(key: str) -> bytes:
        return fields.binary(f"tac.{key}", valid(tac_obj, tac_path, key, hex_of(5))) or b""

    floor_limit = (
        fields.amount(
            "terminal_floor_limit", valid(obj, path, "terminal_floor_limit", floor_amount)
        )
        or 0
    )
    random_selection = RandomSelection()
    if "random_selection" in obj:
        random_selection = _parse_random_selection(
            c, obj["random_selection"], _join(path, "random_selection"), floor_limit
        )

    def flag(key: str, default: bool) -> bool:
        return c.get(obj, key, path, c.boolean, default) if key in obj else default

    def dol(v: object, p: str) -> bytes:
        return c.hex_bytes(v, p, lo=0, hi=252)

    fdda_version_0 = flag("fdda_version_0", False)
    if fdda_version_0 and known_kernel is not None and known_kernel != KERNEL_VISA:
        c.error(
            _join(path, "fdda_version_0"),
            f"fDDA is Kernel 3's (Book C-3 §5.8.2); Kernel {known_kernel} has none",
        )
    return AidParams(
        aid=c.get(obj, "aid", path, lambda v, p: c.hex_bytes(v, p, lo=5, hi=16), b""),
        label=c.get(obj, "label", path, lambda v, p: c.text(v, p, 1, 16), ""),
        kernel_id=kernel_id,
        partial_selection=flag("partial_selection", True),
        application_version=fields.binary(
            "application_version", valid(obj, path, "application_version", hex_of(2))
        )
        or b"",
        limits=AidLimits(
            contactless_transaction=limit("contactless_transaction") or 0,
            contactless_floor=limit("contactless_floor") or 0,
            cvm_required=limit("cvm_required") or 0,
            contactless_transaction_on_device_cvm=limit("contactless_transaction_on_device_cvm"),
        ),
        tac_denial=tac("denial"),
        tac_online=tac("online"),
        tac_default=tac("default"),
        terminal_floor_limit=floor_limit,
        random_selection=random_selection,
        ttq=fields.binary("ttq", valid(obj, path, "ttq", ttq_value, nullable=True)),
        tdol=c.optional(obj, "tdol", path, dol),
        ddol=c.optional(obj, "ddol", path, dol),
        status_check=flag("status_check", False),
        zero_amount_allowed=flag("zero_amount_allowed", True),
        extended_selection=flag("extended_selection", False),
        fdda_version_0=fdda_version_0,
        kernel_data=fields.unnamed(),
    )


def _parse_date(c: _Checker, value: object, path: str) -> datetime.date:
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    c.error(path, f'expected a date "YYYY-MM-DD", got {_show(value)}')
    return datetime.date.min


def _parse_capk(c: _Checker, value: object, path: str) -> CaKeyParams:
    obj = c.section(value, path, ("rid", "index", "modulus", "exponent"), ("expiry", "sha1"))

    def index(v: object, p: str) -> int:
        # The index (8F) is conventionally written in hex ("92"); a JSON integer also works.
        if isinstance(v, str) and len(v) == 2 and _HEX_RE.fullmatch(v):
            return int(v, 16)
        if _is_int(v):
            return c.integer(v, p, 0, 255)
        c.error(p, f'expected a 1-byte index as 2 hex digits such as "92", got {_show(v)}')
        return 0

    def exponent(v: object, p: str) -> bytes:
        # EMV Book 2 §5.1 / Annex B2.1: the CA public key exponent is 3 or 2^16 + 1.
        if isinstance(v, str) and v.upper() in ("03", "010001"):
            return bytes.fromhex(v)
        c.error(p, f'expected exponent "03" or "010001", got {_show(v)}')
        return b""

    rid = c.get(obj, "rid", path, lambda v, p: c.hex_bytes(v, p, size=5), b"")
    idx = c.get(obj, "index", path, index, 0)
    modulus = c.get(obj, "modulus", path, lambda v, p: c.hex_bytes(v, p, lo=64, hi=248), b"")
    if modulus and not modulus[-1] & 1:
        c.error(_join(path, "modulus"), "an RSA modulus is odd; this one is even")
    exp = c.get(obj, "exponent", path, exponent, b"")
    sha1 = c.optional(obj, "sha1", path, lambda v, p: c.hex_bytes(v, p, size=20))
    if sha1 and rid and modulus and exp:
        # The CA public key check sum is SHA-1 over RID || index || modulus || exponent.
        actual = hashlib.sha1(rid + bytes([idx]) + modulus + exp, usedforsecurity=False).digest()
        if actual != sha1:
            c.error(
                _join(path, "sha1"),
                f"check sum does not match the key (computed {actual.hex().upper()})",
            )
    return CaKeyParams(
        rid=rid,
        index=idx,
        modulus=modulus,
        exponent=exp,
        expiry=c.optional(obj, "expiry", path, lambda v, p: _parse_date(c, v, p)),
        sha1=sha1,
    )


def _parse_offline(c: _Checker, value: object, path: str, terminal_currency: int) -> OfflineParams:
    obj = c.section(
        value,
        path,
        ("max_transaction_amount", "max_total_amount", "max_count", "max_age_hours"),
        ("enabled",),
    )
    per_transaction = c.get(obj, "max_transaction_amount", path, c.amount, 0)
    totals: dict[int, int] = {}
    totals_path = _join(path, "max_total_amount")
    raw_totals = obj.get("max_total_amount", {})
    if not isinstance(raw_totals, dict):
        c.error(
            totals_path,
            f'expected an object of currency code to amount, e.g. {{"978": 50000}}, '
            f"got {_show(raw_totals)}",
        )
    else:
        for key, amount in raw_totals.items():
            item_path = f"{totals_path}.{key}"
            code = c.currency_code(key, item_path)
            totals[code] = c.amount(amount, item_path)
    enabled = c.get(obj, "enabled", path, c.boolean, True) if "enabled" in obj else True
    if enabled and isinstance(raw_totals, dict) and terminal_currency:
        total = totals.get(terminal_currency)
        if total is None:
            c.error(
                totals_path,
                f"no total limit for the terminal currency {terminal_currency:03d}: "
                f"the offline queue would be unbounded",
            )
        elif per_transaction > total:
            c.error(
                _join(path, "max_transaction_amount"),
                f"{per_transaction} exceeds the total offline limit {total} for "
                f"currency {terminal_currency:03d}",
            )
    return OfflineParams(
        max_transaction_amount=per_transaction,
        max_total_amount=MappingProxyType(totals),
        max_count=c.get(obj, "max_count", path, lambda v, p: c.integer(v, p, 1, 1_000_000), 1),
        max_age_hours=c.get(obj, "max_age_hours", path, lambda v, p: c.integer(v, p, 1, 8760), 1),
        enabled=enabled,
    )


def _parse_qr(c: _Checker, value: object, path: str) -> QrParams:
    obj = c.section(value, path, (), ("enabled", "consumer_presented", "merchant_presented"))

    def flag(key: str) -> bool:
        return c.get(obj, key, path, c.boolean, False)

    return QrParams(flag("enabled"), flag("consumer_presented"), flag("merchant_presented"))


def _parse_list(
    c: _Checker,
    value: object,
    path: str,
    parse_item: Callable[[_Checker, object, str], _T],
) -> list[_T]:
    if not isinstance(value, list):
        c.error(path, f"expected a list, got {_show(value)}")
        return []
    return [parse_item(c, item, f"{path}[{i}]") for i, item in enumerate(value)]


# --- entry points --------------------------------------------------------------------------


def parse_params(obj: object, source: str) -> TerminalParams:
    """Validate a decoded JSON document; `source` names it in error messages.

    Raises ParamsError listing every problem found.
    """
    c = _Checker(source)
    top = c.section(obj, "", ("terminal", "aids"), ("version", "ca_public_keys", "offline", "qr"))
    if "version" in top and top["version"] != FORMAT_VERSION:
        c.error("version", f"unsupported format version {_show(top['version'])}, expected 1")
    terminal = (
        _parse_terminal(c, top.get("terminal", {}), "terminal") if "terminal" in top else None
    )
    qr = _parse_qr(c, top["qr"], "qr") if "qr" in top else QrParams()

    terminal_currency = terminal.currency_code if terminal is not None else 0

    def parse_aid(checker: _Checker, value: object, path: str) -> AidParams:
        return _parse_aid(checker, value, path, terminal_currency)

    aids = _parse_list(c, top.get("aids", []), "aids", parse_aid) if "aids" in top else []
    if "aids" in top and isinstance(top["aids"], list) and not top["aids"] and not qr.enabled:
        c.error("aids", "no applications configured and QR is disabled: nothing can be paid")
    seen_aids: dict[bytes, int] = {}
    for i, entry in enumerate(aids):
        if entry.aid in seen_aids:
            c.error(
                f"aids[{i}].aid",
                f"duplicate AID {entry.aid.hex().upper()} (also aids[{seen_aids[entry.aid]}])",
            )
        elif entry.aid:
            seen_aids[entry.aid] = i

    keys = _parse_list(c, top.get("ca_public_keys", []), "ca_public_keys", _parse_capk)
    seen_keys: dict[tuple[bytes, int], int] = {}
    for i, key in enumerate(keys):
        ident = (key.rid, key.index)
        if ident in seen_keys:
            c.error(
                f"ca_public_keys[{i}]",
                f"duplicate key RID {key.rid.hex().upper()} index {key.index:02X} "
                f"(also ca_public_keys[{seen_keys[ident]}])",
            )
        elif key.rid:
            seen_keys[ident] = i

    offline = None
    if top.get("offline") is not None:
        offline = _parse_offline(c, top["offline"], "offline", terminal_currency)

    if c.issues or terminal is None:
        raise ParamsError(c.issues or [ParamIssue(source, "terminal", "missing required field")])
    return TerminalParams(
        terminal=terminal,
        aids=tuple(aids),
        ca_public_keys=tuple(keys),
        offline=offline,
        qr=qr,
        source=source,
    )


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a valid JSON number")


# A parameter file is a few kilobytes; these bounds keep a hostile or mistaken file (a huge
# one, /dev/zero, a JSON bomb nested thousands deep) from exhausting memory or the stack.
MAX_PARAMS_BYTES: Final = 1024 * 1024
MAX_JSON_DEPTH: Final = 32


def _nesting_depth_exceeds(text: str, limit: int) -> bool:
    """True when arrays/objects nest deeper than `limit` (brackets inside strings ignored).

    Checked before json.loads, whose recursive decoder would otherwise raise RecursionError
    on a few thousand nested brackets."""
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _decode(text: str, source: str) -> object:
    if _nesting_depth_exceeds(text, MAX_JSON_DEPTH):
        raise ParamsError(
            [ParamIssue(source, "", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")]
        )
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except _DuplicateKeyError as exc:
        raise ParamsError(
            [ParamIssue(source, "", f"duplicate key {exc.key!r} in one JSON object")]
        ) from exc
    except json.JSONDecodeError as exc:
        raise ParamsError(
            [
                ParamIssue(
                    source, "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
                )
            ]
        ) from exc
    except ValueError as exc:
        raise ParamsError([ParamIssue(source, "", f"invalid JSON: {exc}")]) from exc


def load_params(path: str | os.PathLike[str]) -> TerminalParams:
    """Read and validate a parameter file. Raises ParamsError (also for unreadable files)."""
    source = os.fspath(path)
    raw = _read_bounded(source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError([ParamIssue(source, "", "not UTF-8 text")]) from exc
    return parse_params(_decode(text, source), source)


def _read_bounded(source: str) -> bytes:
    """The bytes of a regular file of at most MAX_PARAMS_BYTES.

    Opened non-blocking so a FIFO cannot hang the command waiting for a writer; anything but a
    regular file (a FIFO, /dev/zero, a directory) is refused before it is read; at most one byte
    over the bound is read, so a file that grows while being read is refused too."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ParamsError([ParamIssue(source, "", f"cannot read: {exc.strerror}")]) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ParamsError(
                [ParamIssue(source, "", f"not a regular file ({_file_kind(info.st_mode)})")]
            )
        if info.st_size > MAX_PARAMS_BYTES:
            raise ParamsError([ParamIssue(source, "", _too_big(info.st_size))])
        chunks: list[bytes] = []
        remaining = MAX_PARAMS_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise ParamsError([ParamIssue(source, "", f"cannot read: {exc.strerror}")]) from exc
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > MAX_PARAMS_BYTES:
        raise ParamsError([ParamIssue(source, "", _too_big(len(raw)))])
    return raw


def _too_big(size: int) -> str:
    return f"too large ({size} bytes; a parameter file is at most {MAX_PARAMS_BYTES} bytes)"


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def default_params() -> TerminalParams:
    """The embedded defaults for a simulated terminal (terminal/data/default_params.json)."""
    resource = resources.files("terminal").joinpath("data/default_params.json")
    text = resource.read_text(encoding="utf-8")
    return parse_params(_decode(text, "default_params.json"), "default_params.json")
