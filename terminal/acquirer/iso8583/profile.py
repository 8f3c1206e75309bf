"""The ISO 8583 profile: how one acquirer lays out its messages (docs/iso8583.md).

Every acquirer publishes its own field specification on top of ISO 8583 (1987 or 1993): which
fields it uses, their encodings and lengths, where the MAC goes, which algorithm computes it.
The operator supplies it as a JSON file (`acquirer.iso8583_spec` in the configuration); the
package ships a documented default, ISO 8583:1987 with a binary bitmap
(terminal/data/iso8583/default-1987.json). The field table is pyiso8583's own format (each
field: data_enc, len_enc, len_type, max_len, desc), so an acquirer's pyiso8583 spec can be
used as it is; the rest says what pyiso8583 does not: the framing, the MAC and the reversal.

A profile is checked whole when it is loaded, and every fault is named with the field it is
in: a terminal must not find out at its first sale that the MAC field is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from ...domain.errors import ConfigurationError

__all__ = [
    "DEFAULT_PROFILE",
    "Iso8583ProfileError",
    "MacAlgorithm",
    "Profile",
    "default_profile",
    "load_profile",
]

#: The profile the package ships (terminal/data/iso8583/).
DEFAULT_PROFILE: Final = "default-1987.json"

MacAlgorithm = Literal["iso9797-1-alg3", "aes-cmac"]
_MAC_ALGORITHMS: Final = ("iso9797-1-alg3", "aes-cmac")
#: The fields every message this terminal sends or reads needs (docs/iso8583.md).
_REQUIRED_FIELDS: Final = ("t", "p", "1", "3", "4", "11", "39", "41", "42", "64", "128")
_FIELD_KEYS: Final = frozenset({"data_enc", "len_enc", "len_type", "max_len", "desc"})


class Iso8583ProfileError(ConfigurationError):
    """The ISO 8583 profile file is unreadable or not a usable specification."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One acquirer's ISO 8583 profile, checked."""

    name: str
    #: "1987" or "1993": which edition the field definitions follow.
    version: Literal["1987", "1993"]
    #: The bytes of the length header in front of every message (big-endian binary; 2 is the
    #: usual TCP framing), and the longest message accepted from the host.
    length_header_bytes: int
    max_message_bytes: int
    mac_algorithm: MacAlgorithm
    #: ISO/IEC 9797-1 padding method (1: zeros; 2: 0x80 then zeros) for the DES MAC; AES-CMAC
    #: pads itself (NIST SP 800-38B).
    mac_padding: Literal[1, 2]
    #: How a lost or late answer is undone: 0400 reversal request or 0420 reversal advice.
    reversal_mti: Literal["0400", "0420"]
    #: The STAN's highest value: it wraps back to 1 after it (ISO 8583:1987 field 11 is n6).
    stan_max: int
    #: pyiso8583's spec: field id -> its definition.
    fields: dict[str, dict[str, Any]]

    def spec(self) -> dict[str, dict[str, Any]]:
        """The field table as pyiso8583 takes it (a copy: the codec may not change ours)."""
        return {key: dict(value) for key, value in self.fields.items()}


def _field_fault(key: str, definition: object) -> str | None:
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


def parse_profile(data: object, *, source: str) -> Profile:
    """A profile from its decoded JSON; Iso8583ProfileError names the first fault and `source`."""

    def fault(text: str) -> Iso8583ProfileError:
        return Iso8583ProfileError(f"ISO 8583 profile {source}: {text}")

    if not isinstance(data, dict):
        raise fault("must be a JSON object")
    fields = data.get("fields")
    if not isinstance(fields, dict):
        raise fault('"fields" must be an object of field definitions (pyiso8583 spec format)')
    for key, definition in fields.items():
        if key not in ("h", "t", "p") and not (key.isdigit() and 1 <= int(key) <= 128):
            raise fault(f"unknown field id {key!r} (h, t, p, or 1 to 128)")
        text = _field_fault(key, definition)
        if text:
            raise fault(text)
    absent = [key for key in _REQUIRED_FIELDS if key not in fields]
    if absent:
        raise fault(f"the profile must define fields {', '.join(absent)}")
    if "h" not in fields:
        fields = {"h": {**fields["t"], "len_type": 0, "max_len": 0, "desc": "No header"}} | fields
    for mac_field in ("64", "128"):
        if fields[mac_field]["max_len"] != 8 or fields[mac_field]["data_enc"] != "b":
            raise fault(f"field {mac_field} (the MAC) must be 8 bytes of binary data")
    framing = data.get("framing", {})
    mac = data.get("mac", {})
    if not isinstance(framing, dict) or not isinstance(mac, dict):
        raise fault('"framing" and "mac" must be objects')
    header = framing.get("length_header_bytes", 2)
    biggest = framing.get("max_message_bytes", 4096)
    if header not in (2, 4):
        raise fault("framing.length_header_bytes must be 2 or 4")
    if not isinstance(biggest, int) or not 64 <= biggest < 256**header:
        raise fault(f"framing.max_message_bytes must be 64 to {256**header - 1}")
    algorithm = mac.get("algorithm", "iso9797-1-alg3")
    if algorithm not in _MAC_ALGORITHMS:
        raise fault(f"mac.algorithm must be one of {', '.join(_MAC_ALGORITHMS)}")
    padding = mac.get("padding", 1)
    if padding not in (1, 2):
        raise fault("mac.padding must be 1 or 2 (ISO/IEC 9797-1 padding method)")
    version = str(data.get("version", "1987"))
    if version not in ("1987", "1993"):
        raise fault('"version" must be "1987" or "1993"')
    reversal = str(data.get("reversal_mti", "0400"))
    if reversal not in ("0400", "0420"):
        raise fault('"reversal_mti" must be "0400" (request) or "0420" (advice)')
    stan_max = data.get("stan_max", 999999)
    stan_digits = fields["11"]["max_len"]
    if not isinstance(stan_max, int) or not 1 <= stan_max < 10**stan_digits:
        raise fault(f"stan_max must be 1 to {10**stan_digits - 1} (field 11 holds {stan_digits})")
    return Profile(
        name=str(data.get("name", source)),
        version=version,  # type: ignore[arg-type]  # checked above
        length_header_bytes=header,
        max_message_bytes=biggest,
        mac_algorithm=algorithm,
        mac_padding=padding,
        reversal_mti=reversal,  # type: ignore[arg-type]  # checked above
        stan_max=stan_max,
        fields=fields,
    )


def load_profile(path: str | Path) -> Profile:
    """The operator's profile file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise Iso8583ProfileError(f"ISO 8583 profile {path}: cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Iso8583ProfileError(
            f"ISO 8583 profile {path}: not JSON (line {exc.lineno}: {exc.msg})"
        ) from exc
    return parse_profile(data, source=str(path))


def default_profile() -> Profile:
    """The profile the package ships: ISO 8583:1987, binary bitmap (docs/iso8583.md)."""
    resource = resources.files("terminal").joinpath(f"data/iso8583/{DEFAULT_PROFILE}")
    return parse_profile(json.loads(resource.read_text(encoding="utf-8")), source=DEFAULT_PROFILE)
