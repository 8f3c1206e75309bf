"""Data Object Lists: PDOL, CDOL1, CDOL2, DDOL, TDOL (EMV Book 3 §5.4).

A DOL is a list of (tag, length) pairs the card sends; the terminal answers with the
concatenated values, each forced to the requested length by the rules of §5.4.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .tags import Format, describe
from .tlv import TlvError, _read_length, _read_tag, tag_hex, tag_is_constructed


@dataclass(frozen=True, slots=True)
class DolEntry:
    tag: int
    length: int


#: The most DOL related data a command can carry: DOL data travels in the data field of a
#: short command APDU (EMV Book 1 §9.4.1: Lc is one byte), so a card asking for more is
#: malformed; refusing it here keeps a hostile card from making the terminal allocate
#: gigabytes of zeros.
MAX_DOL_DATA = 255


def parse_dol(data: bytes) -> tuple[DolEntry, ...]:
    """The entries of a DOL: tags followed by one-byte or long-form lengths, no values."""
    entries: list[DolEntry] = []
    offset, end = 0, len(data)
    total = 0
    while offset < end:
        start = offset
        tag, offset = _read_tag(data, offset, end)
        length, offset = _read_length(data, offset, end, tag)
        total += length
        if total > MAX_DOL_DATA:
            raise TlvError(
                start, f"DOL related data of at most {MAX_DOL_DATA} bytes (a short APDU)", tag
            )
        entries.append(DolEntry(tag, length))
    return tuple(entries)


def fit_value(tag: int, value: bytes, length: int) -> bytes:
    """Force one value to the DOL's length, by the data object's format (§5.4 a-c)."""
    info = describe(tag)
    fmt = info.format if info is not None else Format.BINARY
    if len(value) == length:
        return value
    if len(value) > length:
        # §5.4 (b): numeric data is truncated on the left, everything else on the right.
        return value[len(value) - length :] if fmt is Format.NUMERIC else value[:length]
    padding = length - len(value)
    # §5.4 (c): n is right-justified with leading zeros; cn is left-justified with trailing
    # 'F' nibbles; an, ans and b are left-justified with trailing zeros.
    if fmt is Format.NUMERIC:
        return bytes(padding) + value
    if fmt is Format.COMPRESSED_NUMERIC:
        return value + b"\xff" * padding
    return value + bytes(padding)


def build_dol(dol: bytes | tuple[DolEntry, ...], data: Mapping[int, bytes]) -> bytes:
    """The DOL related data: each entry's value from `data`, fitted; zeros when absent.

    §5.4: a tag the terminal does not know, holds no value for, or that names a
    constructed object is answered with zeros of the requested length.
    """
    entries = parse_dol(dol) if isinstance(dol, bytes | bytearray) else dol
    parts: list[bytes] = []
    for entry in entries:
        value = data.get(entry.tag)
        if value is None or tag_is_constructed(entry.tag):
            parts.append(bytes(entry.length))
        else:
            parts.append(fit_value(entry.tag, value, entry.length))
    return b"".join(parts)


def dol_length(dol: bytes | tuple[DolEntry, ...]) -> int:
    entries = parse_dol(dol) if isinstance(dol, bytes | bytearray) else dol
    return sum(entry.length for entry in entries)


def split_dol_data(dol: bytes, related: bytes) -> dict[int, bytes]:
    """The reverse of :func:`build_dol`: cut DOL related data back into values by tag."""
    values: dict[int, bytes] = {}
    offset = 0
    for entry in parse_dol(dol):
        if offset + entry.length > len(related):
            raise TlvError(
                offset, f"{entry.length} bytes for tag {tag_hex(entry.tag)} in DOL data", entry.tag
            )
        values[entry.tag] = related[offset : offset + entry.length]
        offset += entry.length
    if offset != len(related):
        raise TlvError(offset, f"DOL data of {offset} bytes, got {len(related)}")
    return values
