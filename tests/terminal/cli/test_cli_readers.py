"""`pipos readers`: what a technician sees when listing and testing readers and scanners."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from drivers.discovery import discover
from simulator.cards import load_card
from terminal.cli import main


def _fake_usb_device(root: Path, name: str, vendor: str, product: str, bus: int, dev: int) -> None:
    device = root / name
    device.mkdir(parents=True)
    for field, value in (
        ("idVendor", vendor),
        ("idProduct", product),
        ("busnum", str(bus)),
        ("devnum", str(dev)),
    ):
        (device / field).write_text(value + "\n")


def test_usb_nfc_reader_without_permission_is_explained(tmp_path: Path) -> None:
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    _fake_usb_device(sysfs, "1-1", "072f", "2200", 1, 12)
    _fake_usb_device(sysfs, "1-2", "1d6b", "0002", 1, 1)  # a hub: not a reader
    node = dev / "001" / "012"
    node.parent.mkdir(parents=True)
    node.touch()

    def denied(path: str, mode: int) -> bool:
        return path != str(node) and os.access(path, mode)

    entries = [e for e in discover(sysfs_usb=sysfs, dev_usb=dev, access=denied) if e.stack == "nfc"]
    assert len(entries) == 1
    (acr,) = entries
    assert acr.url == "nfc:usb:072f:2200"
    assert acr.description == "ACS ACR122U"
    assert acr.status == "problem"
    assert acr.problem == f"no read/write permission on {node}"
    assert "udev rule" in acr.fix
    allowed = [e for e in discover(sysfs_usb=sysfs, dev_usb=dev) if e.stack == "nfc"]
    assert allowed[0].status == "ready"


def test_lists_pcsc_readers_from_pcscd(pcscd: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["readers"]) == 0
    out = capsys.readouterr().out
    assert "pcsc:Virtual PCD 00 00" in out


def test_reader_test_shows_the_cards_applications(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["readers", "test", "sim:visa_debit", "--timeout", "1"]) == 0
    out = capsys.readouterr().out
    assert "card UID" in out
    assert "SELECT PPSE 9000 (success)" in out
    assert "application A0000000031010" in out
    assert "priority" in out


def test_reader_test_through_pcscd(vpcd_card: object, capsys: pytest.CaptureFixture[str]) -> None:
    vpcd_card.insert(load_card("mastercard"))  # type: ignore[attr-defined]
    assert main(["readers", "test", "pcsc:Virtual PCD 00 00", "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert "application A0000000041010   MASTERCARD" in out


def test_scanner_test_masks_the_code(
    pty_scanner: object, capsys: pytest.CaptureFixture[str]
) -> None:
    path = pty_scanner.path  # type: ignore[attr-defined]
    code = "284761739001010119"
    timer = threading.Timer(0.2, pty_scanner.type_code, args=(code,))  # type: ignore[attr-defined]
    timer.start()
    try:
        assert main(["readers", "test", f"serial:{path}", "--timeout", "10"]) == 0
    finally:
        timer.join()
    out = capsys.readouterr().out
    assert "kind       wallet" in out
    assert code not in out


def test_unknown_url_says_what_exists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["readers", "test", "floppy:a"]) == 1
    assert "use one of:" in capsys.readouterr().err
