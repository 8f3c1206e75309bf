"""An ISO 8583 message as payment engineers read a trace: one line per field, in field order,
with the profile's name for it; the PAN and track 2 masked (PCI DSS 3.3: first six and last
four digits at most), the PIN block never shown, field 55 decoded into its EMV data objects
with their names (EMV Book 3 Annex A), sensitive ones masked, and the MAC in hex.

Used by `pipos acquirer trace` and the link's debug log: what it prints may be kept in logs,
so nothing in it is card data beyond what a receipt shows.
"""

from __future__ import annotations

from collections.abc import Mapping

from emv import tags, tlv
from emv.pan import mask_pan

from .codec import FieldValue
from .profile import Profile

__all__ = ["trace_lines"]

#: Fields whose value is never shown, only its length.
_HIDDEN = frozenset({"52"})
#: Fields holding a PAN (2) or track 2 equivalent data (35): masked.
_PAN_FIELDS = frozenset({"2", "35"})


def _masked_track2(value: str) -> str:
    pan, separator, rest = value.replace("D", "=").partition("=")
    return mask_pan(pan) + (separator + "*" * len(rest) if separator else "")


def _icc_lines(value: bytes) -> list[str]:
    try:
        objects = tlv.decode(value)
    except tlv.TlvError as exc:
        return [f"      (not BER-TLV: {exc}; {len(value)} bytes)"]
    lines = []
    for top in objects:
        for depth, node in top.walk():
            info = tags.describe(node.tag)
            name = info.name if info else "unknown tag"
            if node.constructed:
                shown = ""
            elif tags.is_sensitive(node.tag):
                shown = f"<{len(node.value)} bytes, masked>"
            else:
                shown = node.value.hex().upper()
            lines.append(f"      {'  ' * depth}{tlv.tag_hex(node.tag)} {name}: {shown}".rstrip())
    return lines


def trace_lines(profile: Profile, mti: str, fields: Mapping[str, FieldValue]) -> list[str]:
    """The message `mti` with `fields` as trace lines (no trailing newlines)."""
    lines = [f"MTI {mti}"]
    for key in sorted((k for k in fields if k.isdigit()), key=int):
        value = fields[key]
        name = str(profile.fields.get(key, {}).get("desc", "field"))
        if key in _HIDDEN:
            shown = f"<{len(value)} bytes, not shown>"
        elif key in _PAN_FIELDS:
            # A profile may pack the PAN or track 2 as BCD (binary): its digits, masked too.
            digits = value.hex().upper() if isinstance(value, bytes) else value
            shown = mask_pan(digits.rstrip("F")) if key == "2" else _masked_track2(digits)
        elif isinstance(value, bytes):
            shown = value.hex().upper()
        else:
            shown = value
        if key == "55" and isinstance(value, bytes):
            lines.append(f"  DE {int(key):03d} {name}: {len(value)} bytes")
            lines.extend(_icc_lines(value))
            continue
        lines.append(f"  DE {int(key):03d} {name}: {shown}")
    return lines
