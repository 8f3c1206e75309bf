"""The ISO 8583 profile as the simulated host reads it: the acquirer's field specification
(pyiso8583's spec format), the framing, the MAC algorithm, the reversal message type.

The host reads the same JSON file the terminal is configured with (by default the one the
terminal package ships, terminal/data/iso8583/default-1987.json, docs/iso8583.md), as data:
a path or the decoded JSON, never an import of the terminal. It checks what it relies on
itself, so a profile the host cannot serve is refused when the server starts, naming the
field, not at the first message.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ...errors import SimulatorError

__all__ = ["HostProfile", "MacAlgorithm", "default_profile_path", "load_profile"]

MacAlgorithm = Literal["iso9797-1-alg3", "aes-cmac"]
_MAC_ALGORITHMS: Final = ("iso9797-1-alg3", "aes-cmac")
#: The fields the host reads or writes in every message it serves.
_REQUIRED: Final = ("t", "p", "1", "3", "4", "7", "11", "37", "38", "39", "41", "42", "64", "128")
_FIELD_KEYS: Final = frozenset({"data_enc", "len_enc", "len_type", "max_len"})
#: The profile the terminal package ships, relative to the directory holding both packages.
_DEFAULT: Final = Path("terminal", "data", "iso8583", "default-1987.json")


@dataclass(frozen=True, slots=True)
class HostProfile:
    name: str
    length_header_bytes: int
    max_message_bytes: int
    mac_algorithm: MacAlgorithm
    #: ISO/IEC 9797-1 padding method (1 or 2) of the DES MAC; CMAC pads itself.
    mac_padding: int
    reversal_mti: str
    #: pyiso8583's field table: field id -> definition.
    fields: Mapping[str, Mapping[str, Any]]

    def spec(self) -> dict[str, dict[str, Any]]:
        """A fresh copy for pyiso8583 (which may write into what it is given)."""
        return {key: dict(value) for key, value in self.fields.items()}

    def binary(self, field: str) -> bool:
        definition = self.fields.get(field)
        return definition is not None and definition.get("data_enc") == "b"


def default_profile_path() -> Path:
    """Where the terminal package's default profile lies: beside the simulator (a checkout,
    or both distributions in one site-packages), else wherever Python finds `terminal`
    (found, not imported)."""
    sibling = Path(__file__).resolve().parents[3] / _DEFAULT
    if sibling.is_file():
        return sibling
    spec = importlib.util.find_spec("terminal")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location).parent / _DEFAULT
        if candidate.is_file():
            return candidate
    raise SimulatorError(
        "the default ISO 8583 profile (terminal/data/iso8583/default-1987.json) is not "
        "installed: install pipos, or give the profile's path (--iso8583-profile)"
    )


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
    return None


def load_profile(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> HostProfile:
    """The profile at a path, or from its decoded JSON; None: the terminal's default file."""
    if source is None:
        source = default_profile_path()
    if isinstance(source, Mapping):
        data: object = dict(source)
        where = "(given)"
    else:
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SimulatorError(f"ISO 8583 profile {where}: cannot be read: {exc}") from exc

    def fault(text: str) -> SimulatorError:
        return SimulatorError(f"ISO 8583 profile {where}: {text}")

    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
        raise fault('must be a JSON object with "fields" (pyiso8583 spec format)')
    fields: dict[str, Any] = dict(data["fields"])
    for key, definition in fields.items():
        text = _field_fault(key, definition)
        if text:
            raise fault(text)
    absent = [key for key in _REQUIRED if key not in fields]
    if absent:
        raise fault(f"the simulated host needs fields {', '.join(absent)}")
    for mac_field in ("64", "128"):
        if fields[mac_field]["max_len"] != 8 or fields[mac_field]["data_enc"] != "b":
            raise fault(f"field {mac_field} (the MAC) must be 8 bytes of binary data")
    if "h" not in fields:
        fields["h"] = {**fields["t"], "len_type": 0, "max_len": 0}
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
        raise fault("mac.padding must be 1 or 2")
    reversal = str(data.get("reversal_mti", "0400"))
    if reversal not in ("0400", "0420"):
        raise fault('"reversal_mti" must be "0400" or "0420"')
    return HostProfile(
        name=str(data.get("name", where)),
        length_header_bytes=header,
        max_message_bytes=biggest,
        mac_algorithm=algorithm,
        mac_padding=padding,
        reversal_mti=reversal,
        fields=fields,
    )
