"""Registers the hardware reader schemes (`pcsc:`, `nfc:`) without importing their libraries:
pyscard and nfcpy are optional extras, loaded only when a URL names them, so a missing one is
reported by :func:`drivers.url.open_reader` as "install the matching extra"."""

from __future__ import annotations

from .base import CardReader
from .url import register_reader_scheme


def _open_pcsc(url: str) -> CardReader:
    from .pcsc import open_pcsc_reader

    return open_pcsc_reader(url)


def _open_nfc(url: str) -> CardReader:
    from .nfc import open_nfc_reader

    return open_nfc_reader(url)


register_reader_scheme("pcsc", _open_pcsc)
register_reader_scheme("nfc", _open_nfc)
