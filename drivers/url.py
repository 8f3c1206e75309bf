"""Devices addressed by URL: `pcsc:`, `nfc:usb`, `serial:/dev/ttyACM0?baud=9600`, `sim:visa`,
`replay:PATH`.

Every scheme is in one static table, :data:`READER_DRIVERS`. The virtual cards behind `sim:`
and `replay:` come from the ``pipos.virtual_cards`` entry point (see :mod:`drivers.sim`), so
the drivers never import the simulator and the terminal reaches it only through a URL.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from .base import CardReader
from .errors import DeviceUnavailableError, UnknownSchemeError

ReaderOpener = Callable[[str], CardReader]

#: Every reader scheme and the function that opens it, named "module:function" and imported
#: only when a URL asks for the scheme (pyscard and nfcpy are optional extras). The table is
#: the registry, as nfcpy's ``usb_device_map`` is: no module registers itself on import.
READER_DRIVERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "pcsc": "drivers.pcsc:open_pcsc_reader",
        "nfc": "drivers.nfc:open_nfc_reader",
        # Virtual cards, from whatever provides the ``pipos.virtual_cards`` entry point.
        "sim": "drivers.sim:open_virtual_reader",
        "replay": "drivers.sim:open_virtual_reader",
    }
)


def reader_schemes() -> list[str]:
    return sorted(READER_DRIVERS)


def split_url(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme:
        raise UnknownSchemeError(
            url,
            "the address has no scheme",
            f"write it as SCHEME:DEVICE, one of: {', '.join(s + ':' for s in reader_schemes())}",
        )
    return scheme.lower(), rest


def _load_opener(target: str) -> ReaderOpener:
    module_name, _, function = target.partition(":")
    opener: ReaderOpener = getattr(importlib.import_module(module_name), function)
    return opener


def open_reader(url: str) -> CardReader:
    """Open the card reader the URL names, or say what was tried and how to fix it."""
    scheme, _ = split_url(url)
    target = READER_DRIVERS.get(scheme)
    if target is None:
        raise UnknownSchemeError(
            url,
            f"no reader driver for scheme {scheme!r}",
            f"use one of: {', '.join(s + ':' for s in reader_schemes())}",
        )
    try:
        return _load_opener(target)(url)
    except DeviceUnavailableError:
        raise
    except ImportError as exc:
        raise DeviceUnavailableError(
            url,
            f"the driver for {scheme!r} needs a module that is not installed ({exc.name})",
            f"install the matching extra, e.g. pip install 'pipos[{scheme}]'",
        ) from exc
