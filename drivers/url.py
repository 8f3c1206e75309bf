"""Devices addressed by URL: `pcsc:`, `nfc:usb`, `serial:/dev/ttyACM0?baud=9600`, `sim:visa`,
`replay:PATH`.

Built-in schemes live in this package. Schemes provided by other distributions (the
simulator's `sim:` and `replay:`) are found through the ``pipos.readers`` entry-point group,
so the drivers never import the simulator and the terminal reaches it only through a URL.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from .base import CardReader
from .errors import DeviceUnavailableError, UnknownSchemeError

ReaderOpener = Callable[[str], CardReader]

READER_ENTRY_POINT_GROUP = "pipos.readers"

_BUILTIN_READERS: dict[str, ReaderOpener] = {}


def register_reader_scheme(scheme: str, opener: ReaderOpener) -> None:
    """Add a scheme at run time (tests, embedders)."""
    _BUILTIN_READERS[scheme] = opener


def _plugin_readers() -> dict[str, ReaderOpener]:
    found: dict[str, ReaderOpener] = {}
    for entry in entry_points(group=READER_ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    return found


def reader_schemes() -> list[str]:
    _load_builtin_drivers()
    return sorted(
        {*_BUILTIN_READERS, *(e.name for e in entry_points(group=READER_ENTRY_POINT_GROUP))}
    )


def split_url(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme:
        raise UnknownSchemeError(
            url,
            "the address has no scheme",
            f"write it as SCHEME:DEVICE, one of: {', '.join(s + ':' for s in reader_schemes())}",
        )
    return scheme.lower(), rest


def _load_builtin_drivers() -> None:
    # Each driver module registers its schemes on import.
    from . import schemes, sim  # noqa: F401


def open_reader(url: str) -> CardReader:
    """Open the card reader the URL names, or say what was tried and how to fix it."""
    _load_builtin_drivers()
    scheme, _ = split_url(url)
    opener = _BUILTIN_READERS.get(scheme)
    if opener is None:
        opener = _plugin_readers().get(scheme)
    if opener is None:
        raise UnknownSchemeError(
            url,
            f"no reader driver for scheme {scheme!r}",
            f"use one of: {', '.join(s + ':' for s in reader_schemes())}",
        )
    try:
        return opener(url)
    except DeviceUnavailableError:
        raise
    except ImportError as exc:
        raise DeviceUnavailableError(
            url,
            f"the driver for {scheme!r} needs a module that is not installed ({exc.name})",
            f"install the matching extra, e.g. pip install 'pipos[{scheme}]'",
        ) from exc
