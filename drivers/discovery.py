"""Finding the readers and scanners attached to this machine, on every stack, with what stops
each one from working and how to fix it. Used by `pipos readers` and `pipos doctor`.

Nothing here opens a device: PC/SC readers come from pcscd's list, USB NFC readers from sysfs
(vendor and product ids), serial scanners from pyserial's port list; access is checked with
the permissions of the running user, which is what the terminal service will have.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from .errors import PCSCD_FIX, PCSCD_RESTART_FIX, DeviceUnavailableError, DriverError

Status = Literal["ready", "problem"]

#: USB NFC readers nfcpy drives (vendor, product) -> name. ACS readers also work through
#: pcscd (preferred: nfcpy's ACR122U support has reopen bugs).
NFC_USB_READERS: Final[dict[tuple[int, int], str]] = {
    (0x072F, 0x2200): "ACS ACR122U",
    (0x072F, 0x223B): "ACS ACR1252U",
    (0x04CC, 0x2533): "NXP PN533",
    (0x04E6, 0x5591): "SCM SCL3711",
    (0x054C, 0x02E1): "Sony RC-S380",
    (0x054C, 0x06C1): "Sony RC-S380/S",
}

_UDEV_FIX = (
    "install the udev rule from packaging/udev (or the one `python -m nfc` prints), "
    "then replug the reader"
)
_DIALOUT_FIX = "add the terminal's user to the 'dialout' group (usermod -aG dialout USER)"


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    url: str
    kind: Literal["card reader", "code scanner"]
    stack: Literal["pcsc", "nfc", "serial"]
    description: str
    status: Status = "ready"
    problem: str = ""
    fix: str = ""


def _pcsc_entries() -> list[DeviceEntry]:
    try:
        from .pcsc import list_pcsc_readers
    except ImportError:
        return [
            DeviceEntry(
                "pcsc:",
                "card reader",
                "pcsc",
                "PC/SC readers",
                "problem",
                "pyscard is not installed",
                "pip install 'pipos[pcsc]' (needs libpcsclite-dev)",
            )
        ]
    try:
        names = list_pcsc_readers()
    except DeviceUnavailableError as exc:
        # pcscd does not answer: the one fix for it (drivers.errors.PCSCD_FIX).
        return [
            DeviceEntry(
                "pcsc:", "card reader", "pcsc", "PC/SC readers", "problem", exc.tried, PCSCD_FIX
            )
        ]
    except DriverError as exc:
        return [
            DeviceEntry(
                "pcsc:",
                "card reader",
                "pcsc",
                "PC/SC readers",
                "problem",
                str(exc),
                PCSCD_RESTART_FIX,
            )
        ]
    return [DeviceEntry(f"pcsc:{name}", "card reader", "pcsc", name) for name in names]


def _read_int(path: Path, base: int) -> int | None:
    try:
        return int(path.read_text().strip(), base)
    except (OSError, ValueError):
        return None


def _nfc_usb_entries(
    sysfs: Path, dev: Path, access: Callable[[str, int], bool]
) -> list[DeviceEntry]:
    entries: list[DeviceEntry] = []
    if not sysfs.is_dir():
        return entries
    for device in sorted(sysfs.iterdir()):
        # sysfs gives the ids in hex and the bus and device numbers in decimal.
        vendor, product = _read_int(device / "idVendor", 16), _read_int(device / "idProduct", 16)
        if vendor is None or product is None or (vendor, product) not in NFC_USB_READERS:
            continue
        name = NFC_USB_READERS[(vendor, product)]
        url = f"nfc:usb:{vendor:04x}:{product:04x}"
        bus, devnum = _read_int(device / "busnum", 10), _read_int(device / "devnum", 10)
        node = dev / f"{bus or 0:03d}" / f"{devnum or 0:03d}"
        if node.exists() and not access(str(node), os.R_OK | os.W_OK):
            entries.append(
                DeviceEntry(
                    url,
                    "card reader",
                    "nfc",
                    name,
                    "problem",
                    f"no read/write permission on {node}",
                    _UDEV_FIX,
                )
            )
        else:
            entries.append(DeviceEntry(url, "card reader", "nfc", name))
    return entries


def _serial_entries(access: Callable[[str, int], bool]) -> list[DeviceEntry]:
    try:
        from serial.tools import list_ports
    except ImportError:
        return [
            DeviceEntry(
                "serial:",
                "code scanner",
                "serial",
                "serial scanners",
                "problem",
                "pyserial is not installed",
                "pip install 'pipos[serial]'",
            )
        ]
    entries: list[DeviceEntry] = []
    for port in sorted(list_ports.comports(), key=lambda p: str(p.device)):
        device = str(port.device)
        if not any(marker in device for marker in ("ttyACM", "ttyUSB")):
            continue  # built-in UARTs and Bluetooth ports are not scanners
        description = (
            " ".join(
                str(part) for part in (port.manufacturer, port.product or port.description) if part
            )
            or device
        )
        url = f"serial:{device}"
        if not access(device, os.R_OK | os.W_OK):
            entries.append(
                DeviceEntry(
                    url,
                    "code scanner",
                    "serial",
                    description,
                    "problem",
                    f"no read/write permission on {device}",
                    _DIALOUT_FIX,
                )
            )
        else:
            entries.append(DeviceEntry(url, "code scanner", "serial", description))
    return entries


def discover(
    *,
    sysfs_usb: Path = Path("/sys/bus/usb/devices"),
    dev_usb: Path = Path("/dev/bus/usb"),
    access: Callable[[str, int], bool] = os.access,
) -> list[DeviceEntry]:
    """Every reader and scanner found, PC/SC first, then USB NFC, then serial scanners."""
    return [
        *_pcsc_entries(),
        *_nfc_usb_entries(sysfs_usb, dev_usb, access),
        *_serial_entries(access),
    ]
