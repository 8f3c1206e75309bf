"""EMVCo QR Code Specification for Payment Systems, Consumer-Presented Mode (CPM) v1.1.

The customer's phone shows this code and the terminal scans it. The QR text is the base64
of BER-TLV data (§3.2): the Payload Format Indicator '85' = "CPV01" first, one or more
Application Templates '61', and at most one Common Data Template '62'. Each application
template names its ADF ('4F') and may hold account data; the transparent templates '63'
(inside '61') and '64' (inside '62') carry the application cryptogram and the data it was
computed over, which the terminal forwards to the acquirer for online authorisation just
as it forwards a card's (§3.3, Table 3.3).

Decoding uses :mod:`emv.tlv`; every defect becomes a :class:`CpmError` that names the tag,
the byte offset and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .. import tlv
from ..pan import mask_pan
from ..tlv import Tlv, TlvError, tag_hex
from .errors import CpmError

PAYLOAD_FORMAT: Final = b"CPV01"

TAG_PAYLOAD_FORMAT: Final = 0x85
TAG_APPLICATION: Final = 0x61
TAG_COMMON: Final = 0x62
TAG_APP_TRANSPARENT: Final = 0x63
TAG_COMMON_TRANSPARENT: Final = 0x64

TAG_ADF_NAME: Final = 0x4F
TAG_LABEL: Final = 0x50
TAG_TRACK2: Final = 0x57
TAG_PAN: Final = 0x5A
TAG_CARDHOLDER: Final = 0x5F20
TAG_EXPIRY: Final = 0x5F24
TAG_LANGUAGE: Final = 0x5F2D
TAG_PSN: Final = 0x5F34
TAG_ISSUER_URL: Final = 0x5F50
TAG_APP_VERSION: Final = 0x9F08
TAG_PAN_LAST4: Final = 0x9F25
TAG_CRYPTOGRAM: Final = 0x9F26

#: §3.3 Table 3.3 "Data objects": fixed lengths (bytes) of what the terminal inspects.
_FIXED: Final[Mapping[int, int]] = {
    0x9F08: 2,  # Application Version Number
    0x9F25: 2,  # last 4 digits of PAN, n4
    0x5F24: 3,  # Application Expiration Date, YYMMDD
    0x5F34: 1,  # PAN Sequence Number
    0x9F26: 8,  # Application Cryptogram
    0x9F27: 1,  # Cryptogram Information Data
    0x9F36: 2,  # Application Transaction Counter
    0x9F37: 4,  # Unpredictable Number
    0x82: 2,  # Application Interchange Profile
}
#: Variable lengths (min, max) in bytes.
_RANGES: Final[Mapping[int, tuple[int, int]]] = {
    TAG_ADF_NAME: (5, 16),
    TAG_LABEL: (1, 16),
    TAG_TRACK2: (8, 19),
    TAG_PAN: (6, 10),
    TAG_CARDHOLDER: (2, 26),
    TAG_LANGUAGE: (2, 8),
    TAG_ISSUER_URL: (1, 255),
    0x9F10: (1, 32),  # Issuer Application Data
    0x9F19: (6, 6),  # Token Requestor ID, n11
    0x9F24: (29, 29),  # Payment Account Reference, an29
}
_ANS: Final = {TAG_LABEL, TAG_CARDHOLDER, TAG_ISSUER_URL, 0x9F24}
_TRACK2: Final = re.compile(r"([0-9]{12,19})D([0-9]{2})([0-9]{2})([0-9]{3})([0-9]*)F?")


@dataclass(frozen=True)
class CpmApplication:
    """One Application Template (61): its primitives in scanned order, and its 63 contents."""

    data: Mapping[int, bytes]
    transparent: Mapping[int, bytes] = field(default_factory=dict)

    @property
    def aid(self) -> bytes:
        return self.data.get(TAG_ADF_NAME, b"")

    @property
    def label(self) -> str | None:
        raw = self.data.get(TAG_LABEL)
        return None if raw is None else raw.decode("ascii", "replace")


@dataclass(frozen=True, slots=True)
class CpmAccount:
    """The account a code pays from, from its PAN (5A) or Track 2 Equivalent Data (57)."""

    pan: str
    expiry: str | None  # YYMM
    pan_sequence: int | None
    service_code: str | None

    @property
    def masked_pan(self) -> str:
        """First six and last four digits only (PCI DSS 3.3)."""
        return mask_pan(self.pan)

    def expired(self, today: datetime.date) -> bool:
        """True after the last day of the expiry month (EMV Book 3 §10.5.3 semantics)."""
        if self.expiry is None:
            return False
        year, month = 2000 + int(self.expiry[:2]), int(self.expiry[2:])
        return (today.year, today.month) > (year, month)


@dataclass(frozen=True)
class ConsumerPresentedCode:
    """A decoded, validated CPM payload."""

    applications: tuple[CpmApplication, ...]
    common: Mapping[int, bytes] = field(default_factory=dict)
    common_transparent: Mapping[int, bytes] = field(default_factory=dict)
    has_common_template: bool = False

    def account(self, index: int = 0) -> CpmAccount:
        """Account data of application `index`, falling back to the common template (§3.3)."""
        merged = {**self.common, **self.applications[index].data}
        psn_raw = merged.get(TAG_PSN)
        psn = int(psn_raw.hex()) if psn_raw else None
        expiry_raw = merged.get(TAG_EXPIRY)
        if TAG_TRACK2 in merged:
            pan, expiry, service = _track2(merged[TAG_TRACK2], 0)
            return CpmAccount(pan, expiry, psn, service)
        return CpmAccount(
            _pan(merged[TAG_PAN], 0), expiry_raw.hex()[:4] if expiry_raw else None, psn, None
        )

    def cryptogram_data(self, index: int = 0) -> dict[int, bytes]:
        """The transparent data for the host: common (64) overlaid by the application's (63)."""
        return {**self.common_transparent, **self.applications[index].transparent}

    def host_emv(self, index: int = 0) -> dict[str, str]:
        """`cryptogram_data` as the acquirer protocol's tag-hex -> value-hex map."""
        data = self.cryptogram_data(index)
        data.setdefault(TAG_ADF_NAME, self.applications[index].aid)
        return {tag_hex(t): v.hex().upper() for t, v in data.items()}

    def encode(self) -> str:
        return encode_cpm(
            self.applications,
            self.common,
            self.common_transparent,
            with_common=self.has_common_template,
        )

    def to_json(self) -> dict[str, Any]:
        """A display form with card data masked: never the full PAN or track 2."""

        def show(data: Mapping[int, bytes]) -> dict[str, str]:
            out: dict[str, str] = {}
            for tag, value in data.items():
                if tag in (TAG_PAN, TAG_TRACK2):
                    out[tag_hex(tag)] = "(masked)"
                elif tag in _ANS or tag == TAG_LANGUAGE:
                    out[tag_hex(tag)] = value.decode("ascii", "replace")
                else:
                    out[tag_hex(tag)] = value.hex().upper()
            return out

        account = self.account()
        return {
            "mode": "consumer-presented",
            "pan": account.masked_pan,
            "expiry": account.expiry,
            "applications": [
                {"data": show(a.data), "transparent": show(a.transparent)}
                for a in self.applications
            ],
            "common": show(self.common),
            "common_transparent": show(self.common_transparent),
        }


# --- field checks ---------------------------------------------------------------------------


def _pan(value: bytes, offset: int) -> str:
    digits = value.hex().upper().rstrip("F")
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise CpmError("a PAN of 12-19 BCD digits padded with F", tag="5A", offset=offset)
    return digits


def _track2(value: bytes, offset: int) -> tuple[str, str, str]:
    match = _TRACK2.fullmatch(value.hex().upper())
    if match is None:
        raise CpmError(
            "Track 2 Equivalent Data: PAN, 'D', YYMM expiry, service code, F padding",
            tag="57",
            offset=offset,
        )
    pan, yy, mm, service, _ = match.groups()
    if not 1 <= int(mm) <= 12:
        raise CpmError(f"an expiry month 01-12 in track 2, got {mm}", tag="57", offset=offset)
    return pan, yy + mm, service


def _check_primitive(obj: Tlv, offset: int) -> None:
    tag, value, name = obj.tag, obj.value, tag_hex(obj.tag)
    if tag in _FIXED and len(value) != _FIXED[tag]:
        raise CpmError(f"{_FIXED[tag]} bytes, got {len(value)}", tag=name, offset=offset)
    if tag in _RANGES:
        lo, hi = _RANGES[tag]
        if not lo <= len(value) <= hi:
            raise CpmError(f"{lo}-{hi} bytes, got {len(value)}", tag=name, offset=offset)
    if tag in _ANS and not all(0x20 <= b < 0x7F for b in value):
        raise CpmError("printable ASCII (ans)", tag=name, offset=offset)
    if tag == TAG_LANGUAGE:
        text = value.decode("ascii", "replace")
        if len(value) % 2 or not (text.isascii() and text.isalpha() and text.islower()):
            raise CpmError("1-4 ISO 639 two-letter lower-case languages", tag=name, offset=offset)
    if tag == TAG_PAN:
        _pan(value, offset)
    if tag == TAG_TRACK2:
        _track2(value, offset)
    if tag in (TAG_EXPIRY, TAG_PSN, TAG_PAN_LAST4) and not value.hex().isdigit():
        raise CpmError("BCD digits", tag=name, offset=offset)
    if tag == TAG_EXPIRY and not 1 <= int(value.hex()[2:4]) <= 12:
        raise CpmError("a YYMMDD date with a month 01-12", tag=name, offset=offset)


def _offsets(data: bytes) -> dict[int, int]:
    """id(obj) -> byte offset, so errors point into the decoded bytes."""
    positions: dict[int, int] = {}

    def walk(objects: Sequence[Tlv], start: int) -> None:
        pos = start
        for obj in objects:
            while pos < len(data) and data[pos] in (0x00, 0xFF):
                pos += 1
            positions[id(obj)] = pos
            header = len(obj.encode()) - len(obj.value)
            walk(obj.children, pos + header)
            pos += len(obj.encode())

    walk(tlv.decode(data), 0)
    return positions


def _template(
    obj: Tlv, offset_of: Mapping[int, int], transparent_tag: int
) -> tuple[dict[int, bytes], dict[int, bytes]]:
    data: dict[int, bytes] = {}
    transparent: dict[int, bytes] | None = None
    for child in obj.children:
        where = offset_of.get(id(child), 0)
        name = tag_hex(child.tag)
        if child.tag == transparent_tag:
            if transparent is not None:
                raise CpmError(f"one template {name}", tag=name, offset=where)
            transparent = {}
            for item in child.children:
                item_at = offset_of.get(id(item), 0)
                if item.constructed:
                    raise CpmError(
                        "primitive data objects only", tag=tag_hex(item.tag), offset=item_at
                    )
                if item.tag in transparent:
                    raise CpmError("each tag once", tag=tag_hex(item.tag), offset=item_at)
                _check_primitive(item, item_at)
                transparent[item.tag] = item.value
        elif child.constructed:
            raise CpmError(
                f"primitive data or template {tag_hex(transparent_tag)}", tag=name, offset=where
            )
        else:
            if child.tag in data:
                raise CpmError("each tag once", tag=name, offset=where)
            _check_primitive(child, where)
            data[child.tag] = child.value
    return data, transparent or {}


def decode_cpm_bytes(data: bytes) -> ConsumerPresentedCode:
    """Validate the BER-TLV of a CPM payload (already base64-decoded)."""
    try:
        objects = tlv.decode(data)
        offset_of = _offsets(data)
    except TlvError as exc:
        truncated = "truncated" in exc.expected or "remain" in exc.expected
        raise CpmError(
            exc.expected,
            tag=None if exc.tag is None else tag_hex(exc.tag),
            offset=exc.offset,
            reason="truncated" if truncated else "corrupt",
        ) from exc
    if not objects:
        raise CpmError("a Payload Format Indicator '85'", reason="truncated")
    first = objects[0]
    if first.tag != TAG_PAYLOAD_FORMAT or first.value != PAYLOAD_FORMAT:
        raise CpmError(
            "Payload Format Indicator '85' = \"CPV01\" first (§3.2)", tag=tag_hex(first.tag)
        )
    applications: list[CpmApplication] = []
    common: dict[int, bytes] = {}
    common_transparent: dict[int, bytes] = {}
    has_common = False
    for obj in objects[1:]:
        where = offset_of.get(id(obj), 0)
        if obj.tag == TAG_APPLICATION:
            app_data, app_transparent = _template(obj, offset_of, TAG_APP_TRANSPARENT)
            if TAG_ADF_NAME not in app_data:
                raise CpmError(
                    "an ADF Name '4F' in every Application Template", tag="61", offset=where
                )
            applications.append(CpmApplication(app_data, app_transparent))
        elif obj.tag == TAG_COMMON:
            if has_common:
                raise CpmError("at most one Common Data Template", tag="62", offset=where)
            has_common = True
            common, common_transparent = _template(obj, offset_of, TAG_COMMON_TRANSPARENT)
        else:
            raise CpmError(
                "only '61' Application and '62' Common Data Templates after '85'",
                tag=tag_hex(obj.tag),
                offset=where,
            )
    if not applications:
        raise CpmError(
            "at least one Application Template '61'", reason="truncated", offset=len(data)
        )
    for index, app in enumerate(applications):
        merged = {**common, **app.data}
        if TAG_PAN not in merged and TAG_TRACK2 not in merged:
            raise CpmError(
                f"a PAN '5A' or Track 2 Equivalent Data '57' for application {index + 1}",
                tag="61",
                offset=len(data),
            )
    return ConsumerPresentedCode(tuple(applications), common, common_transparent, has_common)


def decode_cpm(text: str) -> ConsumerPresentedCode:
    """Decode the scanned text of a CPM code: base64, then the BER-TLV of §3.2."""
    if not isinstance(text, str):
        raise CpmError("base64 text")
    stripped = text.strip()
    if not stripped:
        raise CpmError("a non-empty code", reason="truncated")
    if len(stripped) % 4:
        raise CpmError(
            f"base64 text in groups of four characters, got {len(stripped)} characters",
            reason="truncated",
        )
    try:
        raw = base64.b64decode(stripped.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise CpmError("base64 text (A-Z a-z 0-9 + / =)") from exc
    return decode_cpm_bytes(raw)


def _objects(data: Mapping[int, bytes]) -> list[Tlv]:
    return [Tlv.primitive(tag, value) for tag, value in data.items()]


def encode_cpm(
    applications: Sequence[CpmApplication],
    common: Mapping[int, bytes] | None = None,
    common_transparent: Mapping[int, bytes] | None = None,
    *,
    with_common: bool | None = None,
) -> str:
    """The base64 QR text for these templates; validated by decoding before it is returned."""
    objects = [Tlv.primitive(TAG_PAYLOAD_FORMAT, PAYLOAD_FORMAT)]
    for app in applications:
        kids = _objects(app.data)
        if app.transparent:
            kids.append(Tlv.template(TAG_APP_TRANSPARENT, _objects(app.transparent)))
        objects.append(Tlv.template(TAG_APPLICATION, kids))
    common = common or {}
    common_transparent = common_transparent or {}
    if with_common is None:
        with_common = bool(common or common_transparent)
    if with_common:
        kids = _objects(common)
        if common_transparent:
            kids.append(Tlv.template(TAG_COMMON_TRANSPARENT, _objects(common_transparent)))
        objects.append(Tlv.template(TAG_COMMON, kids))
    raw = tlv.encode(objects)
    decode_cpm_bytes(raw)
    return base64.b64encode(raw).decode("ascii")


def looks_like_cpm(text: str) -> bool:
    """Every CPM code starts with base64 of '85 05 "CPV0"': "hQVDUFYw"."""
    return text.strip().startswith("hQVDUFYw")
