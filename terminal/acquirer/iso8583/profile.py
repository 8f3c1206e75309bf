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
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Final

from emv.iso8583_profile import MacAlgorithm, ProfileDocument, ProfileFormatError, check_profile

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

#: The fields every message this terminal sends or reads needs (docs/iso8583.md).
_REQUIRED_FIELDS: Final = ("t", "p", "1", "3", "4", "11", "39", "41", "42", "64", "128")


class Iso8583ProfileError(ConfigurationError):
    """The ISO 8583 profile file is unreadable or not a usable specification."""


#: One acquirer's ISO 8583 profile, checked (its fields: emv.iso8583_profile).
Profile = ProfileDocument


def parse_profile(data: object, *, source: str) -> Profile:
    """A profile from its decoded JSON; Iso8583ProfileError names the first fault and
    `source` (the checks themselves: emv.iso8583_profile, shared with the simulated host)."""
    try:
        doc = check_profile(data, required_fields=_REQUIRED_FIELDS)
    except ProfileFormatError as exc:
        raise Iso8583ProfileError(f"ISO 8583 profile {source}: {exc}") from exc
    return replace(doc, name=doc.name or source)


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
