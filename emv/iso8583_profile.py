"""ISO 8583 profiles: the checks an acquirer's field specification passes before anything
reads a message with it (docs/iso8583.md, "Supplying an acquirer's own spec").

Pure: the decoded JSON document in, a :class:`ProfileDocument` (or a
:class:`ProfileFormatError` naming the first fault and where it is) out. The terminal
(terminal.acquirer.iso8583.profile) and the simulated ISO 8583 host
(simulator.host.iso8583.profile) both read the operator's one file through it, so a profile
one side takes the other takes too; each codec, its MACs and its framing stay its own.

The field table is pyiso8583's spec format (per field: data_enc, len_enc, len_type, max_len,
desc); the rest says what pyiso8583 does not: the framing (ISO 8583 prescribes none: a
length header is the acquirers' usual TCP framing), the MAC (ISO 8583:1987 §4.4: the last
field, 64 or 128, 8 bytes) and the reversal's message type (0400 request or 0420 advice,
§4.1). Example::

    >>> doc = check_profile({"fields": {}}, required_fields=("t",))
    Traceback (most recent call last):
    ...
    emv.iso8583_profile.ProfileFormatError: the profile must define fields t
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from .errors import EmvError

__all__ = [
    "MAC_ALGORITHMS",
    "MacAlgorithm",
    "ProfileDocument",
    "ProfileFormatError",
    "check_profile",
]

MacAlgorithm = Literal["iso9797-1-alg3", "aes-cmac"]
MAC_ALGORITHMS: Final = ("iso9797-1-alg3", "aes-cmac")
_FIELD_KEYS: Final = frozenset({"data_enc", "len_enc", "len_type", "max_len", "desc"})


class ProfileFormatError(EmvError):
    """An ISO 8583 profile that is not a usable specification: the message names the first
    fault (the field and what is wrong with it)."""


@dataclass(frozen=True, slots=True)
class ProfileDocument:
    """A profile, checked. `fields` is pyiso8583's spec (with an empty "h" header field
    added when the profile has none)."""

    name: str
    version: Literal["1987", "1993"]
    length_header_bytes: int
    max_message_bytes: int
    mac_algorithm: MacAlgorithm
    #: ISO/IEC 9797-1 padding method (1: zeros; 2: 0x80 then zeros) for the DES MAC.
    mac_padding: Literal[1, 2]
    reversal_mti: Literal["0400", "0420"]
    #: The STAN's highest value, after which it wraps to 1 (field 11 is n6 in 1987).
    stan_max: int
    #: pyiso8583's spec: field id -> its definition.
    fields: dict[str, dict[str, Any]]

    def spec(self) -> dict[str, dict[str, Any]]:
        """The field table as pyiso8583 takes it (a copy: a codec may write into it)."""
        return {key: dict(value) for key, value in self.fields.items()}


def _field_fault(key: str, definition: object) -> str | None:
    if key not in ("h", "t", "p") and not (key.isdigit() and 1 <= int(key) <= 128):
        return f"unknown field id {key!r} (h, t, p, or 1 to 128)"
    if not isinstance(definition, dict):
        return f"field {key} must be an object"
    missing = sorted(_FIELD_KEYS - definition.keys())
    if missing:
        return f"field {key} lacks {', '.join(missing)}"
    if not isinstance(definition["max_len"], int) or definition["max_len"] < 0:
        return f"field {key}: max_len must be a whole number >= 0"
    if definition["len_type"] not in (0, 1, 2, 3, 4):
        return f"field {key}: len_type must be 0 (fixed) to 4"
    for encoding in ("data_enc", "len_enc"):
        value = definition[encoding]
        if not isinstance(value, str) or not value:
            return f"field {key}: {encoding} must name an encoding (b, bcd, ascii, cp500, ...)"
    return None


def check_profile(data: object, *, required_fields: Sequence[str]) -> ProfileDocument:
    """`data` (the decoded JSON) checked whole; `required_fields`: the fields the reader
    builds or reads in its messages."""
    if not isinstance(data, dict):
        raise ProfileFormatError("must be a JSON object")
    given = data.get("fields")
    if not isinstance(given, dict):
        raise ProfileFormatError(
            '"fields" must be an object of field definitions (pyiso8583 spec format)'
        )
    for key, definition in given.items():
        text = _field_fault(key, definition)
        if text:
            raise ProfileFormatError(text)
    absent = [key for key in required_fields if key not in given]
    if absent:
        raise ProfileFormatError(f"the profile must define fields {', '.join(absent)}")
    fields: dict[str, dict[str, Any]] = {k: dict(v) for k, v in given.items()}
    if "h" not in fields and "t" in fields:
        fields = {"h": {**fields["t"], "len_type": 0, "max_len": 0, "desc": "No header"}} | fields
    for mac_field in ("64", "128"):
        definition = fields.get(mac_field)
        if definition is not None and (definition["max_len"] != 8 or definition["data_enc"] != "b"):
            raise ProfileFormatError(f"field {mac_field} (the MAC) must be 8 bytes of binary data")
    framing = data.get("framing", {})
    mac = data.get("mac", {})
    if not isinstance(framing, dict) or not isinstance(mac, dict):
        raise ProfileFormatError('"framing" and "mac" must be objects')
    header = framing.get("length_header_bytes", 2)
    biggest = framing.get("max_message_bytes", 4096)
    if header not in (2, 4):
        raise ProfileFormatError("framing.length_header_bytes must be 2 or 4")
    if not isinstance(biggest, int) or not 64 <= biggest < 256**header:
        raise ProfileFormatError(f"framing.max_message_bytes must be 64 to {256**header - 1}")
    algorithm = mac.get("algorithm", "iso9797-1-alg3")
    if algorithm not in MAC_ALGORITHMS:
        raise ProfileFormatError(f"mac.algorithm must be one of {', '.join(MAC_ALGORITHMS)}")
    padding = mac.get("padding", 1)
    if padding not in (1, 2):
        raise ProfileFormatError("mac.padding must be 1 or 2 (ISO/IEC 9797-1 padding method)")
    version = str(data.get("version", "1987"))
    if version not in ("1987", "1993"):
        raise ProfileFormatError('"version" must be "1987" or "1993"')
    reversal = str(data.get("reversal_mti", "0400"))
    if reversal not in ("0400", "0420"):
        raise ProfileFormatError('"reversal_mti" must be "0400" (request) or "0420" (advice)')
    stan_max = data.get("stan_max", 999999)
    stan_digits = fields["11"]["max_len"] if "11" in fields else 6
    if not isinstance(stan_max, int) or not 1 <= stan_max < 10**stan_digits:
        raise ProfileFormatError(
            f"stan_max must be 1 to {10**stan_digits - 1} (field 11 holds {stan_digits})"
        )
    return ProfileDocument(
        name=str(data.get("name", "")),
        version=version,  # type: ignore[arg-type]  # checked above
        length_header_bytes=header,
        max_message_bytes=biggest,
        mac_algorithm=algorithm,
        mac_padding=padding,
        reversal_mti=reversal,  # type: ignore[arg-type]  # checked above
        stan_max=stan_max,
        fields=fields,
    )
