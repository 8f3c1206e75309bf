"""Card profiles: the personalisation data of a virtual card, read from JSON.

A profile (``simulator/data/cards/NAME.json``) is what an issuer's personalisation bureau
would load into a real card: PAN, PSN, dates, the applications listed in the PPSE, the PDOL,
the AIP and AFL, the record layout, the data objects of the records, the card risk
management limits, the ODA keys (names of TEST keys in :mod:`simulator.pki`) and the TEST
issuer master key for application cryptograms. Every field is checked when the profile is
loaded; a bad one raises :class:`ProfileError` naming the profile and the field.

JSON schema (hex strings for binary values, integers for amounts in minor units)::

    {
      "name": "visa", "description": "...",
      "kernel": "visa_qvsdc" | "mastercard_mchip",
      "pan": "4761739001010010", "pan_sequence_number": 1,       # 5A, 5F34 (null: absent)
      "expiry": "2031-12-31", "effective": "2024-01-01",         # 5F24, 5F25
      "service_code": "201", "cardholder_name": "TEST/CARD",     # in 57, 5F20
      "application_currency": 978, "issuer_country": 276,        # 9F42, 5F28
      "applications": [{"aid": "A0000000031010", "label": "VISA CREDIT", "priority": 1,
                        "kernel_id": "03", "preferred_name": "Visa Credit",
                        "blocked": false, "fci_discretionary": {"9F4D": "0B0A"}}],
      "pdol": "9F6604...", "language": "en",                     # 9F38, 5F2D
      "aip": "2000",                                             # 82
      "afl": [{"sfi": 1, "first": 1, "last": 2, "oda": 1}],      # 94
      "records": [{"sfi": 1, "record": 1, "tags": ["5A", "5F24"]}],
      "data": {"9F07": "FFC0", "8C": "..."},                     # other record objects
      "limits": {"single_offline": 5000, "cumulative_offline": 15000,
                 "consecutive_offline": 5},
      "oda": {"method": "fdda" | "cda" | "dda" | "sda" | "none",
              "ca_rid": "A000000003", "ca_index": "92", "issuer_key": "visa_issuer",
              "icc_key": "visa_card", "issuer_expiry": "1249", "icc_expiry": "1249",
              "dac": "DAC1", "ddol": "9F3704", "fdda_version": 1},
      "cryptogram": {"kind": "visa_cvn18" | "mchip_cvn10", "dki": 1,
                     "issuer_master_key": "TEST 16-byte key"},
      "atc": 0, "ctq": "2800", "cvm_preference": ["online_pin", "signature"],
      "return_cid": true, "response_format": 2,
      "uid": "08A1B2C3", "behaviour": {"request_online": true}
    }

Records may list any tag of ``data`` plus the derived tags 5A, 5F34, 5F24, 5F25, 57, 5F20,
9F42, 5F28, 9F32, 8F, 90, 92, 9F46, 9F47, 9F48, 93, 9F49 (the ODA objects absent for the
profile's method are skipped). Records marked for ODA by the AFL may not hold the ICC
certificate (9F46) or the SSAD (93): both sign the static data (EMV Book 3 §10.3).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from emv.pan import mask_pan
from emv.tlv import TlvError, parse_tag_hex

from .errors import ProfileError

#: Where the shipped card profiles live.
PROFILES_DIR: Final = Path(__file__).resolve().parent.parent / "data" / "cards"


class CardKernel(StrEnum):
    """Which contactless application the card runs (and so which kernel reads it)."""

    VISA_QVSDC = "visa_qvsdc"  # EMV Book C-3 (Kernel 3)
    MASTERCARD_MCHIP = "mastercard_mchip"  # EMV Book C-2 (Kernel 2), M/Chip


class CardOda(StrEnum):
    """The offline data authentication method the card supports."""

    NONE = "none"
    SDA = "sda"
    DDA = "dda"
    FDDA = "fdda"
    CDA = "cda"


class CryptogramKind(StrEnum):
    """How the card computes its application cryptograms (see :mod:`.crypto`)."""

    VISA_CVN18 = "visa_cvn18"
    MCHIP_CVN10 = "mchip_cvn10"


@dataclass(frozen=True)
class Application:
    """One application of the card, as listed in the PPSE directory and selected by AID."""

    aid: bytes
    label: str
    priority: int
    kernel_id: bytes
    preferred_name: str | None = None
    blocked: bool = False
    fci_discretionary: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True)
class AflEntry:
    """One 4-byte entry of the Application File Locator (EMV Book 3 §10.2)."""

    sfi: int
    first: int
    last: int
    oda: int

    def encode(self) -> bytes:
        return bytes([self.sfi << 3, self.first, self.last, self.oda])

    def records(self) -> range:
        return range(self.first, self.last + 1)

    def is_oda(self, record: int) -> bool:
        return self.first <= record < self.first + self.oda


@dataclass(frozen=True)
class RecordLayout:
    sfi: int
    record: int
    tags: tuple[int, ...]


@dataclass(frozen=True)
class Limits:
    """Card risk management limits (amounts in minor units of the application currency)."""

    single_offline: int = 0
    cumulative_offline: int = 0
    consecutive_offline: int = 0


@dataclass(frozen=True)
class OdaConfig:
    method: CardOda = CardOda.NONE
    ca_rid: bytes = b""
    ca_index: int = 0
    issuer_key: str = ""
    icc_key: str | None = None
    issuer_expiry: str = "1249"
    icc_expiry: str = "1249"
    dac: bytes = b"\xda\xc1"
    ddol: bytes = b"\x9f\x37\x04"
    fdda_version: int = 1


@dataclass(frozen=True)
class CardProfile:
    """A parsed, validated card profile. Build one with :func:`load_profile`."""

    name: str
    description: str
    source: str
    kernel: CardKernel
    pan: str
    pan_sequence_number: int | None
    expiry: date
    effective: date
    service_code: str
    cardholder_name: str
    application_currency: int
    issuer_country: int
    applications: tuple[Application, ...]
    pdol: bytes
    language: str
    aip: bytes
    afl: tuple[AflEntry, ...]
    records: tuple[RecordLayout, ...]
    data: Mapping[int, bytes]
    limits: Limits
    oda: OdaConfig
    cryptogram_kind: CryptogramKind
    derivation_key_index: int
    issuer_master_key: bytes = field(repr=False)
    atc: int = 0
    ctq: bytes = b"\x00\x00"
    cvm_preference: tuple[str, ...] = ()
    return_cid: bool = True
    response_format: int = 2
    uid: bytes | None = None
    behaviour: Mapping[str, Any] = field(default_factory=dict)

    @property
    def masked_pan(self) -> str:
        """First 6 and last 4 digits only (PCI DSS 3.3), safe for logs and reports."""
        return mask_pan(self.pan)

    def afl_bytes(self) -> bytes:
        return b"".join(entry.encode() for entry in self.afl)


_CVM_CHOICES: Final = ("online_pin", "signature", "no_cvm")


class _Reader:
    """Typed access to one JSON object, raising ProfileError that names the field."""

    def __init__(self, profile: str, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.profile = profile
        self.raw = raw
        self.prefix = prefix

    def fail(self, key: str, problem: str) -> ProfileError:
        return ProfileError(self.profile, problem, self.prefix + key)

    def get(self, key: str, default: Any = ..., kind: type | tuple[type, ...] = object) -> Any:
        if key not in self.raw:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.raw[key]
        if kind is not object and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind is int)
        ):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be {names}, got {type(value).__name__}")
        return value

    def text(self, key: str, default: Any = ...) -> str:
        value: str = self.get(key, default, str)
        return value

    def integer(self, key: str, default: Any = ..., low: int = 0, high: int = 2**63) -> int:
        value: int = self.get(key, default, int)
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, got {value}")
        return value

    def hexbytes(self, key: str, default: Any = ..., length: int | None = None) -> bytes:
        value = self.get(key, default, (str, bytes))
        if isinstance(value, bytes):
            raw = value
        else:
            try:
                raw = bytes.fromhex(value)
            except ValueError as exc:
                raise self.fail(key, f"must be hex, got {value!r}") from exc
        if length is not None and len(raw) != length:
            raise self.fail(key, f"must be {length} bytes, got {len(raw)}")
        return raw

    def day(self, key: str) -> date:
        text = self.text(key)
        try:
            return date.fromisoformat(text)
        except ValueError as exc:
            raise self.fail(key, f"must be a date YYYY-MM-DD, got {text!r}") from exc

    def child(self, key: str, default: Any = ...) -> _Reader:
        value = self.get(key, default, dict)
        return _Reader(self.profile, value, f"{self.prefix}{key}.")

    def items(self, key: str) -> list[_Reader]:
        value = self.get(key, ..., list)
        out: list[_Reader] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", "must be an object")
            out.append(_Reader(self.profile, item, f"{self.prefix}{key}[{i}]."))
        return out

    def tag(self, key: str, text: str) -> int:
        try:
            return parse_tag_hex(text)
        except TlvError as exc:
            raise self.fail(key, f"{text!r} is not a tag: {exc}") from exc


def _tag_map(reader: _Reader, key: str) -> dict[int, bytes]:
    raw = reader.get(key, {}, dict)
    out: dict[int, bytes] = {}
    for tag_text, value in raw.items():
        tag = reader.tag(key, tag_text)
        if not isinstance(value, str):
            raise reader.fail(f"{key}.{tag_text}", "must be a hex string")
        try:
            out[tag] = bytes.fromhex(value)
        except ValueError as exc:
            raise reader.fail(f"{key}.{tag_text}", f"must be hex, got {value!r}") from exc
    return out


#: Tags the card derives from the structured fields or the test PKI, allowed in records.
DERIVED_TAGS: Final = frozenset(
    {0x5A, 0x5F34, 0x5F24, 0x5F25, 0x57, 0x5F20, 0x9F42, 0x5F28}
    | {0x8F, 0x90, 0x92, 0x9F32, 0x9F46, 0x9F47, 0x9F48, 0x93, 0x9F49}
)
#: Objects that sign the static data and so cannot be part of it (EMV Book 3 §10.3).
_SIGNS_STATIC_DATA: Final = frozenset({0x9F46, 0x93})


def parse_profile(raw: Mapping[str, Any], source: str = "<memory>") -> CardProfile:
    """Validate one profile's JSON object."""
    name = raw.get("name") if isinstance(raw.get("name"), str) else source
    r = _Reader(str(name), raw)
    kernel_text = r.text("kernel")
    try:
        kernel = CardKernel(kernel_text)
    except ValueError as exc:
        raise r.fail("kernel", f"unknown kernel {kernel_text!r}") from exc
    pan = r.text("pan")
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise r.fail("pan", "must be 12 to 19 decimal digits")
    psn_raw = r.get("pan_sequence_number", None, (int, type(None)))
    if psn_raw is not None and not 0 <= psn_raw <= 99:
        raise r.fail("pan_sequence_number", "must be 0..99")
    service_code = r.text("service_code", "201")
    if len(service_code) != 3 or not service_code.isdigit():
        raise r.fail("service_code", "must be 3 digits")

    applications: list[Application] = []
    for app in r.items("applications"):
        aid = app.hexbytes("aid")
        if not 5 <= len(aid) <= 16:
            raise app.fail("aid", "must be 5 to 16 bytes")
        applications.append(
            Application(
                aid=aid,
                label=app.text("label"),
                priority=app.integer("priority", 1, 0, 15),
                kernel_id=app.hexbytes("kernel_id"),
                preferred_name=app.get("preferred_name", None, (str, type(None))),
                blocked=bool(app.get("blocked", False, bool)),
                fci_discretionary=tuple(_tag_map(app, "fci_discretionary").items()),
            )
        )
    if not applications:
        raise r.fail("applications", "must list at least one application")

    afl: list[AflEntry] = []
    for afl_r in r.items("afl"):
        sfi = afl_r.integer("sfi", ..., 1, 30)
        first = afl_r.integer("first", ..., 1, 255)
        last = afl_r.integer("last", ..., first, 255)
        oda_count = afl_r.integer("oda", 0, 0, last - first + 1)
        afl.append(AflEntry(sfi, first, last, oda_count))

    records: list[RecordLayout] = []
    for rec in r.items("records"):
        tags = rec.get("tags", ..., list)
        records.append(
            RecordLayout(
                rec.integer("sfi", ..., 1, 30),
                rec.integer("record", ..., 1, 255),
                tuple(rec.tag("tags", str(t)) for t in tags),
            )
        )
    data = _tag_map(r, "data")
    by_location = {(x.sfi, x.record): x for x in records}
    if len(by_location) != len(records):
        raise r.fail("records", "lists the same SFI/record twice")
    for entry in afl:
        for number in entry.records():
            layout = by_location.get((entry.sfi, number))
            if layout is None:
                raise r.fail("afl", f"names SFI {entry.sfi} record {number}, absent in records")
            if entry.is_oda(number) and _SIGNS_STATIC_DATA & set(layout.tags):
                raise r.fail(
                    "records",
                    f"SFI {entry.sfi} record {number} is signed (ODA) but holds 9F46 or 93",
                )
    for layout in records:
        for tag in layout.tags:
            if tag not in data and tag not in DERIVED_TAGS:
                raise r.fail("records", f"tag {tag:X} has no value in data")

    limits_r = r.child("limits", {})
    limits = Limits(
        limits_r.integer("single_offline", 0),
        limits_r.integer("cumulative_offline", 0),
        limits_r.integer("consecutive_offline", 0, 0, 255),
    )
    oda_r = r.child("oda", {})
    method_text = oda_r.text("method", "none")
    try:
        method = CardOda(method_text)
    except ValueError as exc:
        raise oda_r.fail("method", f"unknown ODA method {method_text!r}") from exc
    oda = OdaConfig(method=method)
    if method is not CardOda.NONE:
        icc_key = oda_r.get("icc_key", None, (str, type(None)))
        if method in (CardOda.DDA, CardOda.FDDA, CardOda.CDA) and icc_key is None:
            raise oda_r.fail("icc_key", f"is required for {method.value}")
        oda = OdaConfig(
            method=method,
            ca_rid=oda_r.hexbytes("ca_rid", ..., 5),
            ca_index=oda_r.hexbytes("ca_index", ..., 1)[0],
            issuer_key=oda_r.text("issuer_key"),
            icc_key=icc_key,
            issuer_expiry=oda_r.text("issuer_expiry", "1249"),
            icc_expiry=oda_r.text("icc_expiry", "1249"),
            dac=oda_r.hexbytes("dac", "DAC1", 2),
            ddol=oda_r.hexbytes("ddol", "9F3704"),
            fdda_version=oda_r.integer("fdda_version", 1, 0, 1),
        )
    crypto_r = r.child("cryptogram")
    kind_text = crypto_r.text("kind")
    try:
        kind = CryptogramKind(kind_text)
    except ValueError as exc:
        raise crypto_r.fail("kind", f"unknown cryptogram kind {kind_text!r}") from exc
    cvm_preference = tuple(r.get("cvm_preference", [], list))
    for choice in cvm_preference:
        if choice not in _CVM_CHOICES:
            raise r.fail("cvm_preference", f"{choice!r} is not one of {', '.join(_CVM_CHOICES)}")
    response_format = r.integer("response_format", 2, 1, 2)
    uid = r.hexbytes("uid", None) if r.get("uid", None) is not None else None
    if uid is not None and len(uid) not in (4, 7, 10):
        raise r.fail("uid", "must be 4, 7 or 10 bytes")
    behaviour = r.get("behaviour", {}, dict)
    return CardProfile(
        name=str(name),
        description=r.text("description", ""),
        source=source,
        kernel=kernel,
        pan=pan,
        pan_sequence_number=psn_raw,
        expiry=r.day("expiry"),
        effective=r.day("effective"),
        service_code=service_code,
        cardholder_name=r.text("cardholder_name", "TEST/CARDHOLDER"),
        application_currency=r.integer("application_currency", ..., 0, 999),
        issuer_country=r.integer("issuer_country", ..., 0, 999),
        applications=tuple(applications),
        pdol=r.hexbytes("pdol", ""),
        language=r.text("language", "en"),
        aip=r.hexbytes("aip", ..., 2),
        afl=tuple(afl),
        records=tuple(records),
        data=data,
        limits=limits,
        oda=oda,
        cryptogram_kind=kind,
        derivation_key_index=crypto_r.integer("dki", 1, 0, 255),
        issuer_master_key=crypto_r.hexbytes("issuer_master_key", ..., 16),
        atc=r.integer("atc", 0, 0, 0xFFFE),
        ctq=r.hexbytes("ctq", "0000", 2),
        cvm_preference=cvm_preference,
        return_cid=bool(r.get("return_cid", True, bool)),
        response_format=response_format,
        uid=uid,
        behaviour=dict(behaviour),
    )


def list_profiles(directory: Path = PROFILES_DIR) -> list[str]:
    """Names of the shipped profiles (file stems), sorted."""
    return sorted(path.stem for path in directory.glob("*.json"))


def profile_path(name_or_path: str | Path, directory: Path = PROFILES_DIR) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".json") or "/" in text:
        return Path(name_or_path)
    return directory / f"{text}.json"


def load_profile(name_or_path: str | Path, directory: Path = PROFILES_DIR) -> CardProfile:
    """A profile by name (``"visa"``: ``simulator/data/cards/visa.json``) or by file path."""
    path = profile_path(name_or_path, directory)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        known = ", ".join(list_profiles(directory))
        raise ProfileError(str(name_or_path), f"no such profile (known: {known})") from exc
    except (OSError, ValueError) as exc:
        raise ProfileError(str(name_or_path), f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProfileError(str(name_or_path), "must be a JSON object")
    return parse_profile(raw, str(path))


def profile_for_pan(pan: str, directory: Path = PROFILES_DIR) -> CardProfile | None:
    """The shipped profile personalised with this PAN (what a simulated issuer host needs to
    find the issuer master key of a card), or None."""
    for name in list_profiles(directory):
        profile = load_profile(name, directory)
        if profile.pan == pan:
            return profile
    return None
