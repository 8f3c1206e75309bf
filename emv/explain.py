"""Human-readable values: BCD numbers, dates, amounts, text, and bit maps explained.

Used by `pipos emv decode` and by logs. Sensitive values (Book 3 Annex A tags marked
sensitive in :mod:`emv.tags`) are masked unless the caller explicitly asks to reveal them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .pan import mask_pan
from .tags import Format, describe
from .tlv import Tlv, tag_hex

# Bit tables, (byte index from 0, bit mask, meaning). Sources cited per table.
BitTable = tuple[tuple[int, int, str], ...]

#: Terminal Verification Results, EMV Book 3 Annex C5 (Table 46), plus the relay
#: resistance bits of Book C-2 in byte 5.
TVR_BITS: Final[BitTable] = (
    (0, 0x80, "Offline data authentication was not performed"),
    (0, 0x40, "SDA failed"),
    (0, 0x20, "ICC data missing"),
    (0, 0x10, "Card appears on terminal exception file"),
    (0, 0x08, "DDA failed"),
    (0, 0x04, "CDA failed"),
    (0, 0x02, "SDA selected"),
    (1, 0x80, "ICC and terminal have different application versions"),
    (1, 0x40, "Expired application"),
    (1, 0x20, "Application not yet effective"),
    (1, 0x10, "Requested service not allowed for card product"),
    (1, 0x08, "New card"),
    (2, 0x80, "Cardholder verification was not successful"),
    (2, 0x40, "Unrecognised CVM"),
    (2, 0x20, "PIN Try Limit exceeded"),
    (2, 0x10, "PIN entry required and PIN pad not present or not working"),
    (2, 0x08, "PIN entry required, PIN pad present, but PIN was not entered"),
    (2, 0x04, "Online PIN entered"),
    (3, 0x80, "Transaction exceeds floor limit"),
    (3, 0x40, "Lower consecutive offline limit exceeded"),
    (3, 0x20, "Upper consecutive offline limit exceeded"),
    (3, 0x10, "Transaction selected randomly for online processing"),
    (3, 0x08, "Merchant forced transaction online"),
    (4, 0x80, "Default TDOL used"),
    (4, 0x40, "Issuer authentication failed"),
    (4, 0x20, "Script processing failed before final GENERATE AC"),
    (4, 0x10, "Script processing failed after final GENERATE AC"),
    (4, 0x08, "Relay resistance threshold exceeded"),
    (4, 0x04, "Relay resistance time limits exceeded"),
    (4, 0x01, "Relay resistance not performed (b2-b1 '01')"),
    (4, 0x02, "Relay resistance performed (b2-b1 '10')"),
)

#: Transaction Status Information, EMV Book 3 Annex C6 (Table 47).
TSI_BITS: Final[BitTable] = (
    (0, 0x80, "Offline data authentication was performed"),
    (0, 0x40, "Cardholder verification was performed"),
    (0, 0x20, "Card risk management was performed"),
    (0, 0x10, "Issuer authentication was performed"),
    (0, 0x08, "Terminal risk management was performed"),
    (0, 0x04, "Script processing was performed"),
)

#: Application Interchange Profile, EMV Book 3 Annex C1 (Table 37) and Book C-2 byte 2.
AIP_BITS: Final[BitTable] = (
    (0, 0x40, "SDA supported"),
    (0, 0x20, "DDA supported"),
    (0, 0x10, "Cardholder verification is supported"),
    (0, 0x08, "Terminal risk management is to be performed"),
    (0, 0x04, "Issuer authentication is supported"),
    (0, 0x02, "On device cardholder verification is supported"),
    (0, 0x01, "CDA supported"),
    (1, 0x80, "EMV mode is supported (contactless)"),
    (1, 0x01, "Relay resistance protocol is supported"),
)

#: Terminal Transaction Qualifiers, EMV Book C-3 Table 5-2 (tag 9F66).
TTQ_BITS: Final[BitTable] = (
    (0, 0x80, "Mag-stripe mode supported"),
    (0, 0x20, "EMV mode (qVSDC) supported"),
    (0, 0x10, "EMV contact chip supported"),
    (0, 0x08, "Offline-only reader"),
    (0, 0x04, "Online PIN supported"),
    (0, 0x02, "Signature supported"),
    (0, 0x01, "Offline data authentication for online authorisations supported"),
    (1, 0x80, "Online cryptogram required"),
    (1, 0x40, "CVM required"),
    (1, 0x20, "(Contact chip) offline PIN supported"),
    (2, 0x80, "Issuer update processing supported"),
    (2, 0x40, "Consumer device CVM supported"),
)

#: Card Transaction Qualifiers, EMV Book C-3 Table A-? (tag 9F6C, Visa).
CTQ_BITS: Final[BitTable] = (
    (0, 0x80, "Online PIN required"),
    (0, 0x40, "Signature required"),
    (0, 0x20, "Go online if offline data authentication fails and reader is online capable"),
    (0, 0x10, "Switch interface if offline data authentication fails and reader supports contact"),
    (0, 0x08, "Go online if application expired"),
    (0, 0x04, "Switch interface for cash transactions"),
    (0, 0x02, "Switch interface for cashback transactions"),
    (1, 0x80, "Consumer device CVM performed"),
    (1, 0x40, "Card supports issuer update processing at the POS"),
)

#: Terminal Capabilities, EMV Book 4 Annex A2 (tag 9F33).
TERMINAL_CAPABILITIES_BITS: Final[BitTable] = (
    (0, 0x80, "Manual key entry"),
    (0, 0x40, "Magnetic stripe"),
    (0, 0x20, "IC with contacts"),
    (1, 0x80, "Plaintext PIN for ICC verification"),
    (1, 0x40, "Enciphered PIN for online verification"),
    (1, 0x20, "Signature (paper)"),
    (1, 0x10, "Enciphered PIN for offline verification"),
    (1, 0x08, "No CVM required"),
    (2, 0x80, "SDA"),
    (2, 0x40, "DDA"),
    (2, 0x20, "Card capture"),
    (2, 0x08, "CDA"),
)

BIT_TABLES: Final[dict[int, BitTable]] = {
    0x95: TVR_BITS,
    0x9B: TSI_BITS,
    0x82: AIP_BITS,
    0x9F66: TTQ_BITS,
    0x9F6C: CTQ_BITS,
    0x9F33: TERMINAL_CAPABILITIES_BITS,
}


def set_bits(value: bytes, table: BitTable) -> list[str]:
    return [text for index, mask, text in table if index < len(value) and value[index] & mask]


def describe_cid(cid: int) -> str:
    """Cryptogram Information Data, EMV Book 3 §6.5.5.4, Table 15."""
    kind = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC", 0xC0: "RFU"}[cid & 0xC0]
    parts = [kind]
    if cid & 0x08:
        parts.append("advice required")
    reason = cid & 0x07
    reasons = {1: "service not allowed", 2: "PIN Try Limit exceeded", 3: "issuer auth failed"}
    if reason in reasons:
        parts.append(reasons[reason])
    return ", ".join(parts)


def bcd_digits(value: bytes) -> str:
    return value.hex().upper()


def _compressed_numeric(value: bytes) -> str:
    return value.hex().upper().rstrip("F")


def _text(value: bytes) -> str:
    return value.decode("latin-1").translate({c: "." for c in range(32)} | {127: "."})


_DATE_TAGS: Final = frozenset({0x5F24, 0x5F25, 0x9A})
_AMOUNT_TAGS: Final = frozenset({0x9F02, 0x9F03, 0xDF8123, 0xDF8124, 0xDF8125, 0xDF8126})
_BINARY_AMOUNT_TAGS: Final = frozenset({0x81, 0x9F04, 0x9F1B, 0x9F5D})


def _date(digits: str) -> str:
    if len(digits) == 6 and digits.isdigit():
        return f"20{digits[0:2]}-{digits[2:4]}-{digits[4:6]} ({digits})"
    return digits


def _track2(value: bytes, reveal: bool) -> str:
    digits = value.hex().upper().rstrip("F")
    pan, sep, rest = digits.partition("D")
    if reveal:
        return digits
    if not sep:
        return f"[{len(value)} bytes, redacted]"
    expiry = rest[:4]
    return f"{mask_pan(pan)} D {expiry} [service code and discretionary data redacted]"


def describe_afl(value: bytes) -> str:
    """Application File Locator entries (Book 3 §10.2): SFI, first and last record, ODA count."""
    if len(value) % 4:
        return f"{value.hex().upper()} (malformed: {len(value)} bytes is not a multiple of 4)"
    entries = []
    for i in range(0, len(value), 4):
        sfi, first, last, oda = value[i] >> 3, value[i + 1], value[i + 2], value[i + 3]
        entries.append(f"SFI {sfi} records {first}-{last} ({oda} for ODA)")
    return "; ".join(entries)


#: CVM codes, Book 3 Annex C3 (Table 39), bits 6-1 of the first byte of a CV Rule.
_CVM_CODES: Final[dict[int, str]] = {
    0x00: "Fail CVM processing",
    0x01: "Plaintext PIN verification performed by ICC",
    0x02: "Enciphered PIN verified online",
    0x03: "Plaintext PIN by ICC and signature",
    0x04: "Enciphered PIN by ICC",
    0x05: "Enciphered PIN by ICC and signature",
    0x1E: "Signature (paper)",
    0x1F: "No CVM required",
}

#: CVM condition codes, Book 3 Annex C3 (Table 40).
_CVM_CONDITIONS: Final[dict[int, str]] = {
    0x00: "always",
    0x01: "if unattended cash",
    0x02: "if not unattended cash and not manual cash and not purchase with cashback",
    0x03: "if terminal supports the CVM",
    0x04: "if manual cash",
    0x05: "if purchase with cashback",
    0x06: "if in application currency and under X",
    0x07: "if in application currency and over X",
    0x08: "if in application currency and under Y",
    0x09: "if in application currency and over Y",
}


def describe_cvm_list(value: bytes) -> str:
    """CVM List (Book 3 §10.5): amounts X and Y, then two-byte CV Rules."""
    if len(value) < 8 or len(value) % 2:
        return f"{value.hex().upper()} (malformed CVM List of {len(value)} bytes)"
    x, y = int.from_bytes(value[0:4], "big"), int.from_bytes(value[4:8], "big")
    rules = []
    for i in range(8, len(value), 2):
        code, condition = value[i], value[i + 1]
        method = _CVM_CODES.get(code & 0x3F, f"proprietary CVM {code & 0x3F:02X}")
        when = _CVM_CONDITIONS.get(condition, f"condition {condition:02X}")
        follow = ", else next rule" if code & 0x40 else ", else fail"
        rules.append(f"{method} {when}{follow}")
    return f"X={x} Y={y}: " + "; ".join(rules)


def render_value(tag: int, value: bytes, *, reveal: bool = False) -> str:
    """One line for a primitive value: decoded by its format, sensitive parts masked."""
    info = describe(tag)
    if tag == 0x5A:
        pan = _compressed_numeric(value)
        return pan if reveal else mask_pan(pan)
    if tag == 0x57:
        return _track2(value, reveal)
    if info is not None and info.sensitive and not reveal:
        return f"[{len(value)} bytes, redacted]"
    if tag in _DATE_TAGS:
        return _date(bcd_digits(value))
    if tag == 0x9F21 and len(value) == 3:
        digits = bcd_digits(value)
        return f"{digits[0:2]}:{digits[2:4]}:{digits[4:6]}"
    if tag in _AMOUNT_TAGS:
        digits = bcd_digits(value)
        return f"{int(digits)} minor units" if digits.isdigit() else digits
    if tag in _BINARY_AMOUNT_TAGS:
        return f"{int.from_bytes(value, 'big')} minor units"
    if tag == 0x9F27 and len(value) == 1:
        return f"{value.hex().upper()} ({describe_cid(value[0])})"
    if tag == 0x94:
        return describe_afl(value)
    if tag == 0x8E:
        return describe_cvm_list(value)
    if tag == 0x9F36 and value:
        return f"{value.hex().upper()} ({int.from_bytes(value, 'big')})"
    if tag in BIT_TABLES:
        bits = set_bits(value, BIT_TABLES[tag])
        return value.hex().upper() + (": " + "; ".join(bits) if bits else ": no bits set")
    if info is None:
        return value.hex().upper()
    if info.format in (Format.ALPHANUMERIC, Format.ALPHANUMERIC_SPECIAL):
        return _text(value)
    if info.format is Format.NUMERIC:
        return bcd_digits(value)
    if info.format is Format.COMPRESSED_NUMERIC:
        return _compressed_numeric(value)
    return value.hex().upper()


@dataclass
class ExplainedNode:
    tag: str
    name: str
    length: int
    value: str | None
    raw: str | None
    bits: list[str] = field(default_factory=list)
    children: list[ExplainedNode] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"tag": self.tag, "name": self.name, "length": self.length}
        if self.children or self.value is None:
            out["children"] = [child.as_json() for child in self.children]
        else:
            out["value"] = self.value
            if self.raw is not None:
                out["hex"] = self.raw
            if self.bits:
                out["bits"] = self.bits
        return out


def explain(obj: Tlv, *, reveal: bool = False) -> ExplainedNode:
    info = describe(obj.tag)
    name = info.name if info is not None else "Unknown tag"
    if obj.constructed:
        return ExplainedNode(
            tag_hex(obj.tag),
            name,
            len(obj.value),
            None,
            None,
            children=[explain(child, reveal=reveal) for child in obj.children],
        )
    sensitive = info is not None and info.sensitive
    raw = obj.value.hex().upper() if (reveal or not sensitive) else None
    bits = set_bits(obj.value, BIT_TABLES[obj.tag]) if obj.tag in BIT_TABLES else []
    return ExplainedNode(
        tag_hex(obj.tag),
        name,
        len(obj.value),
        render_value(obj.tag, obj.value, reveal=reveal),
        raw,
        bits,
    )


def format_tree(nodes: list[ExplainedNode], indent: int = 0) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    for node in nodes:
        if node.value is None:
            lines.append(f"{pad}{node.tag} {node.name} ({node.length} bytes)")
            lines.extend(format_tree(node.children, indent + 1))
            continue
        if node.bits:
            lines.append(f"{pad}{node.tag} {node.name}: {node.raw}")
            lines.extend(f"{pad}    - {bit}" for bit in node.bits)
        else:
            lines.append(f"{pad}{node.tag} {node.name}: {node.value}")
    return lines
