"""ISO 8583 messages to and from bytes for the simulated host: pyiso8583 under the profile's
field table, the MAC in the message's last field, and the length-header framing.

A message is its type and its field values by id: text fields as str, binary fields (the
profile's ``data_enc: b``: 52, 55, the MACs) as bytes. Where the MAC goes (ISO 8583:1987
§4.4, the MAC is the last field): field 64, or field 128 when the message has any field
from 65 to 127 (and so a secondary bitmap). It covers the message from the type to the byte
before the MAC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import iso8583
from iso8583.decoder import DecodeError
from iso8583.encoder import EncodeError

from ...errors import SimulatorError
from .mac import MAC_BYTES, compute_mac, mac_matches
from .profile import HostProfile

__all__ = [
    "FieldValue",
    "Message",
    "decode",
    "encode",
    "frame",
    "mac_field",
    "verify_mac",
]

FieldValue = str | bytes
#: pyiso8583's own entries of a decoded message (header, type, bitmaps), not fields.
_NOT_FIELDS: Final = frozenset({"h", "t", "p", "1"})


def mac_field(fields: Mapping[str, object]) -> str:
    """Where a message with these fields carries its MAC: 128 if any of 65-127 is there."""
    return "128" if any(key.isdigit() and 64 < int(key) < 128 for key in fields) else "64"


@dataclass(frozen=True, slots=True)
class Message:
    mti: str
    fields: Mapping[str, FieldValue]
    #: The bytes it was read from (without the length header); empty for one being built.
    raw: bytes = field(default=b"", repr=False)

    def text(self, key: str) -> str:
        """A text field's value, "" when absent (a binary one in hex)."""
        value = self.fields.get(key, "")
        return value.hex().upper() if isinstance(value, bytes) else value

    @property
    def mac_present(self) -> bool:
        return mac_field(self.fields) in self.fields


def encode(
    profile: HostProfile, mti: str, fields: Mapping[str, FieldValue], mac_key: bytes | None
) -> bytes:
    """The message's bytes, MAC'd under `mac_key` (None: without a MAC field)."""
    document: dict[str, str] = {"t": mti}
    for key, value in fields.items():
        if key in _NOT_FIELDS or key in ("64", "128"):
            continue
        document[key] = value.hex().upper() if isinstance(value, bytes) else value
    where = mac_field(document)
    if mac_key is not None:
        document[where] = bytes(MAC_BYTES).hex()
    try:
        raw, _ = iso8583.encode(document, profile.spec())
    except EncodeError as exc:
        raise SimulatorError(f"the simulated ISO 8583 host cannot build its {mti}: {exc}") from exc
    data = bytes(raw)
    if mac_key is None:
        return data
    body = data[:-MAC_BYTES]
    return body + compute_mac(profile.mac_algorithm, mac_key, body, padding=profile.mac_padding)


def decode(profile: HostProfile, data: bytes) -> Message:
    """The message in `data`; SimulatorError when it is not one under the profile."""
    try:
        document, _ = iso8583.decode(data, profile.spec())
    except (DecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise SimulatorError(f"not an ISO 8583 message under the profile: {exc}") from exc
    fields: dict[str, FieldValue] = {}
    for key, value in document.items():
        if key in _NOT_FIELDS:
            continue
        fields[key] = bytes.fromhex(value) if profile.binary(key) else value
    return Message(str(document.get("t", "")), fields, bytes(data))


def verify_mac(profile: HostProfile, message: Message, key: bytes) -> bool:
    """Whether `message` (as read) carries the right MAC under `key`."""
    received = message.fields.get(mac_field(message.fields))
    if not isinstance(received, bytes) or len(received) != MAC_BYTES:
        return False
    if not message.raw.endswith(received):
        return False  # the MAC is not the message's last field
    return mac_matches(
        profile.mac_algorithm,
        key,
        message.raw[:-MAC_BYTES],
        received,
        padding=profile.mac_padding,
    )


def frame(profile: HostProfile, data: bytes) -> bytes:
    """`data` with its length header (big-endian binary, not counting itself) in front."""
    if len(data) > profile.max_message_bytes:
        raise SimulatorError(
            f"an answer of {len(data)} bytes is over the profile's {profile.max_message_bytes}"
        )
    return len(data).to_bytes(profile.length_header_bytes, "big") + data
