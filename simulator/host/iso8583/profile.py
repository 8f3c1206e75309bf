"""The ISO 8583 profile as the simulated host reads it: the acquirer's field specification
(pyiso8583's spec format), the framing, the MAC algorithm, the reversal message type.

The host reads the same JSON file the terminal is configured with (by default the one the
terminal package ships, terminal/data/iso8583/default-1987.json, docs/iso8583.md), as data:
a path or the decoded JSON, never an import of the terminal. It checks it with the
terminal's own rules (emv.iso8583_profile) and the fields it relies on, so a profile the
host cannot serve is refused when the server starts, naming the field, not at the first
message.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from emv.iso8583_profile import MacAlgorithm, ProfileFormatError, check_profile

from ...errors import SimulatorError

__all__ = ["HostProfile", "MacAlgorithm", "default_profile_path", "load_profile"]

#: The fields the host reads or writes in every message it serves.
_REQUIRED: Final = ("t", "p", "1", "3", "4", "7", "11", "37", "38", "39", "41", "42", "64", "128")
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
    try:
        doc = check_profile(data, required_fields=_REQUIRED)
    except ProfileFormatError as exc:
        raise SimulatorError(f"ISO 8583 profile {where}: {exc}") from exc
    return HostProfile(
        name=doc.name or where,
        length_header_bytes=doc.length_header_bytes,
        max_message_bytes=doc.max_message_bytes,
        mac_algorithm=doc.mac_algorithm,
        mac_padding=doc.mac_padding,
        reversal_mti=doc.reversal_mti,
        fields=doc.fields,
    )
