"""Hardware reader schemes are known to open_reader, and a missing library is actionable."""

from __future__ import annotations

import sys

import pytest

from drivers.errors import DeviceUnavailableError, UnknownSchemeError
from drivers.url import open_reader, reader_schemes


def test_hardware_schemes_are_listed() -> None:
    assert {"pcsc", "nfc", "sim", "replay"} <= set(reader_schemes())
    with pytest.raises(UnknownSchemeError) as caught:
        open_reader("acr122:0")
    assert "pcsc:" in caught.value.fix
    assert "nfc:" in caught.value.fix


def test_missing_hardware_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nfc", None)  # as if nfcpy were not installed
    monkeypatch.delitem(sys.modules, "drivers.nfc", raising=False)
    with pytest.raises(DeviceUnavailableError) as caught:
        open_reader("nfc:usb")
    assert "pipos[nfc]" in caught.value.fix
