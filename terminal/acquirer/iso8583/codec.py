"""ISO 8583 messages to and from bytes: pyiso8583 under the profile's field table, the MAC
(terminal.acquirer.iso8583.mac) in the message's last field, and the TCP framing.

A message here is its field values by field id, as pyiso8583 takes them: ``"t"`` the message
type ("0200"), ``"2"`` ... ``"128"`` strings (numeric and text fields) or bytes (binary
fields: 52, 55, the MAC). The bitmap is worked out from the fields present.

Where the MAC goes (ISO 8583:1987 §4.4, the MAC is the last field of a message): field 64 in
a message with no field above 64, otherwise field 128 (and a secondary bitmap). It covers
every byte from the message type to the byte before the MAC itself.

Framing: each message on the TCP stream is preceded by its length, big-endian binary in
`length_header_bytes` bytes (2 in the default profile), the length not counting itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import iso8583
from iso8583.decoder import DecodeError
from iso8583.encoder import EncodeError

from ...domain.errors import TerminalError
from .mac import MAC_BYTES, compute_mac, mac_matches
from .profile import Profile

__all__ = [
    "FieldValue",
    "FramingError",
    "Iso8583Error",
    "MacMismatchError",
    "Message",
    "MessageFormatError",
    "decode_message",
    "encode_message",
    "frame",
    "mac_field",
    "read_frame",
]

FieldValue = str | bytes
_MAC_PLACEHOLDER: Final = bytes(MAC_BYTES)


class Iso8583Error(TerminalError):
    """An ISO 8583 message could not be built, read, framed or authenticated."""


class MessageFormatError(Iso8583Error):
    """Values that do not fit the profile (building), or bytes that are not a message under
    it (reading: the host's answer is treated as lost)."""


class MacMismatchError(Iso8583Error):
    """An answer whose MAC is missing or wrong: never acted on (treated as lost)."""


class FramingError(Iso8583Error):
    """The TCP stream ended inside a message, or announced one longer than the profile's
    limit."""


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message: its type and field values (the MAC field included, as received)."""

    mti: str
    fields: Mapping[str, FieldValue]

    def get(self, field: str, default: str = "") -> str:
        """A text field's value ("" when absent)."""
        value = self.fields.get(field, default)
        return value.hex().upper() if isinstance(value, bytes) else value


def mac_field(fields: Mapping[str, FieldValue]) -> str:
    """Where this message's MAC goes: 128 if any field above 64 is present, else 64."""
    above = any(key.isdigit() and 64 < int(key) < 128 for key in fields)
    return "128" if above else "64"


def encode_message(
    profile: Profile, mti: str, fields: Mapping[str, FieldValue], mac_key: bytes | None
) -> bytes:
    """The message's bytes (without the length header), MAC'd under `mac_key` (None: no MAC,
    only for the sign-on that comes before any key exists, when the profile allows it)."""
    document: dict[str, FieldValue] = {"t": mti}
    for key, value in fields.items():
        if key in ("t", "p", "1", "64", "128"):
            raise MessageFormatError(f"field {key} is set by the codec, not given")
        # pyiso8583 takes a binary field's value as hex text.
        document[key] = value.hex().upper() if isinstance(value, bytes) else value
    where = mac_field(fields)
    if mac_key is not None:
        document[where] = _MAC_PLACEHOLDER.hex()
    try:
        raw, _ = iso8583.encode(document, profile.spec())  # type: ignore[arg-type]
    except EncodeError as exc:
        raise MessageFormatError(f"message {mti}: {exc}") from exc
    data = bytes(raw)
    if mac_key is None:
        return data
    body = data[:-MAC_BYTES]
    mac = compute_mac(profile.mac_algorithm, mac_key, body, padding=profile.mac_padding)
    return body + mac


def decode_message(profile: Profile, data: bytes, mac_key: bytes | None) -> Message:
    """The message in `data` (without the length header). With `mac_key`, its MAC must be
    there and right (MacMismatchError otherwise)."""
    try:
        document, _ = iso8583.decode(data, profile.spec())
    except DecodeError as exc:
        raise MessageFormatError(f"not an ISO 8583 message under the profile: {exc}") from exc
    except KeyError as exc:
        # pyiso8583 looks each field of the bitmap up in the spec without a check.
        raise MessageFormatError(
            f"not an ISO 8583 message under the profile: its bitmap names field {exc}, "
            "which the profile does not define"
        ) from exc
    binary = {key for key, spec in profile.fields.items() if spec["data_enc"] == "b"}
    fields: dict[str, FieldValue] = {
        key: bytes.fromhex(value) if key in binary else value
        for key, value in document.items()
        if key not in ("t", "p", "1", "h")
    }
    mti = str(document.get("t", ""))
    if mac_key is not None:
        where = mac_field(fields)
        received = fields.get(where)
        if not isinstance(received, bytes) or len(received) != MAC_BYTES:
            raise MacMismatchError(f"message {mti} carries no MAC in field {where}")
        if not data.endswith(received) or not mac_matches(
            profile.mac_algorithm,
            mac_key,
            data[:-MAC_BYTES],
            received,
            padding=profile.mac_padding,
        ):
            raise MacMismatchError(f"message {mti}: the MAC in field {where} is wrong")
    return Message(mti=mti, fields=fields)


def frame(profile: Profile, message: bytes) -> bytes:
    """`message` with its length header in front."""
    if len(message) > profile.max_message_bytes:
        raise FramingError(
            f"a message of {len(message)} bytes is over the profile's limit of "
            f"{profile.max_message_bytes}"
        )
    return len(message).to_bytes(profile.length_header_bytes, "big") + message


def read_frame(profile: Profile, receive: Callable[[int], bytes]) -> bytes:
    """One message from a stream; `receive(n)` returns up to n bytes, b"" at its end (a
    socket's recv)."""

    def exactly(count: int, what: str) -> bytes:
        data = b""
        while len(data) < count:
            piece = receive(count - len(data))
            if not piece:
                raise FramingError(
                    f"the connection ended after {len(data)} of the {count} bytes of {what}"
                )
            data += piece
        return data

    header = exactly(profile.length_header_bytes, "a length header")
    length = int.from_bytes(header, "big")
    if length == 0 or length > profile.max_message_bytes:
        raise FramingError(
            f"the host announced a message of {length} bytes (the profile accepts 1 to "
            f"{profile.max_message_bytes})"
        )
    return exactly(length, "a message")
