"""Code scanners (QR and barcode) on a serial line: ``serial:/dev/ttyACM0?baud=9600&suffix=CR``.

URL options (all optional):

``baud``     line speed (default 9600; USB CDC scanners ignore it).
``suffix``   what ends a code: ``CR``, ``LF``, ``CRLF``, ``ANY`` (any of them; the default) or
             ``NONE`` (the scanner sends no terminator: a code ends after an idle gap).
``idle``     the idle gap in seconds that ends a code when ``suffix=NONE`` (default 0.1).
``partial``  seconds a code may stay unterminated before it is rejected as partial (default 2).
``max``      longest code accepted, in bytes (default 4096). A longer line is discarded as it
             arrives, so a runaway scanner cannot exhaust memory.
``prefix``   a literal prefix the scanner adds, stripped (``STX`` for 0x02).
``aim``      ``strip`` (default) removes an AIM symbology identifier such as ``]Q1``; ``keep``.
``trigger``  hex bytes sent before each wait (serial trigger mode), e.g. ``16540D`` for a
             Honeywell; ``untrigger`` hex bytes sent when the wait ends (``16550D``).

A code arrives as text (UTF-8). Unplugging the scanner is :class:`ReaderGoneError`; the next
wait re-opens the port, so a replugged scanner (at a stable ``/dev/serial/by-id`` name)
works again. Bad input (over-long, not UTF-8, control characters, partial) is
:class:`ScanRejectedError` with the reason; the caller keeps waiting.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl

from .errors import (
    CancelledError,
    DeviceUnavailableError,
    DriverError,
    ReaderGoneError,
    ReaderTimeoutError,
    UnknownSchemeError,
)
from .url import split_url

log = logging.getLogger(__name__)

_SUFFIXES = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "ANY": b"", "NONE": b""}
# AIM symbology identifier (ISO/IEC 15424): ']' + symbology character + modifier character.
_AIM = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
_READ_SLICE = 0.05


class ScanRejectedError(DriverError):
    """The scanner sent something that is not a usable code; the message says why."""


class CodeScanner(ABC):
    """A device that yields scanned codes."""

    url: str

    @abstractmethod
    def wait_for_code(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> str:
        """The next scanned code; ReaderTimeoutError / CancelledError / ScanRejectedError."""

    @abstractmethod
    def close(self) -> None:
        """Release the device (safe twice)."""

    def __enter__(self) -> CodeScanner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LineFramer:
    """Turns a byte stream into codes: terminators, idle gaps, length cap, prefix stripping.

    Pure (time is passed in), so framing is tested without a device.
    """

    def __init__(
        self,
        *,
        suffix: str = "ANY",
        max_length: int = 4096,
        prefix: bytes = b"",
        strip_aim: bool = True,
    ) -> None:
        self.suffix = suffix
        self.max_length = max_length
        self.prefix = prefix
        self.strip_aim = strip_aim
        self._buffer = bytearray()
        self._overflow = 0  # bytes discarded from the current over-long line
        self._after_cr = False  # a CR ended the last code: a following LF belongs to it

    @property
    def pending(self) -> int:
        return len(self._buffer) + self._overflow

    def feed(self, data: bytes) -> list[str | ScanRejectedError]:
        """Codes (or rejections) completed by `data`."""
        out: list[str | ScanRejectedError] = []
        for byte in data:
            if self._after_cr and byte == 0x0A and self.suffix in ("ANY", "CRLF"):
                self._after_cr = False
                continue
            self._after_cr = False
            if self._is_end(byte):
                if (self.suffix == "CRLF" and byte == 0x0D) or (
                    self.suffix == "ANY" and byte == 0x0D
                ):
                    self._after_cr = True
                out.extend(self._finish())
                continue
            if len(self._buffer) >= self.max_length:
                self._overflow += 1  # keep counting, stop storing
            else:
                self._buffer.append(byte)
        return out

    def _is_end(self, byte: int) -> bool:
        if self.suffix == "NONE":
            return False
        if self.suffix == "LF":
            return byte == 0x0A
        if self.suffix in ("CR", "CRLF"):
            return byte == 0x0D
        return byte in (0x0D, 0x0A)

    def flush(self) -> list[str | ScanRejectedError]:
        """End the current code (an idle gap)."""
        return self._finish()

    def reject_partial(self) -> ScanRejectedError | None:
        if not self.pending:
            return None
        size = self.pending
        self._buffer.clear()
        self._overflow = 0
        return ScanRejectedError(f"partial code: {size} bytes arrived without a terminator")

    def _finish(self) -> list[str | ScanRejectedError]:
        raw, overflow = bytes(self._buffer), self._overflow
        self._buffer.clear()
        self._overflow = 0
        if overflow:
            return [
                ScanRejectedError(
                    f"code too long: {len(raw) + overflow} bytes, the limit is {self.max_length}"
                )
            ]
        if not raw:
            return []
        return [self._decode(raw)]

    def _decode(self, raw: bytes) -> str | ScanRejectedError:
        if raw[:1] == b"\x02":  # STX ... [ETX]
            raw = raw[1:]
            if raw[-1:] == b"\x03":
                raw = raw[:-1]
        if self.prefix and raw.startswith(self.prefix):
            raw = raw[len(self.prefix) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return ScanRejectedError(
                f"not UTF-8 text (byte 0x{raw[exc.start]:02X} at offset {exc.start})"
            )
        if self.strip_aim:
            text = _AIM.sub("", text, count=1)
        bad = next(
            (i for i, ch in enumerate(text) if ord(ch) < 0x20 and ch not in "\t\x1d\x1e\x04"), None
        )
        if bad is not None:
            # GS (0x1D), RS (0x1E), EOT (0x04) are legitimate in GS1 / ISO 15434 payloads.
            return ScanRejectedError(f"control character 0x{ord(text[bad]):02X} at offset {bad}")
        if not text:
            return ScanRejectedError("empty code")
        return text


SerialFactory = Callable[[str, int], Any]


def _default_serial(path: str, baud: int) -> Any:
    import serial

    return serial.serial_for_url(path, baudrate=baud, timeout=_READ_SLICE)


class SerialScanner(CodeScanner):
    """A scanner on pyserial (a serial port, USB CDC ``ttyACM``, or a pyserial URL)."""

    def __init__(self, url: str, *, serial_factory: SerialFactory | None = None) -> None:
        self.url = url
        _, rest = split_url(url)
        path, _, query = rest.partition("?")
        if not path:
            raise DeviceUnavailableError(url, "no device path", "write serial:/dev/ttyACM0")
        options = dict(parse_qsl(query))
        self.path = path
        try:
            self.baud = int(options.get("baud", "9600"))
            suffix = options.get("suffix", "ANY").upper()
            if suffix not in _SUFFIXES:
                raise ValueError(f"suffix must be one of {', '.join(_SUFFIXES)}")
            self.idle = float(options.get("idle", "0.1"))
            self.partial = float(options.get("partial", "2"))
            prefix_opt = options.get("prefix", "")
            prefix = b"\x02" if prefix_opt.upper() == "STX" else prefix_opt.encode()
            self.trigger = bytes.fromhex(options.get("trigger", ""))
            self.untrigger = bytes.fromhex(options.get("untrigger", ""))
            framer = LineFramer(
                suffix=suffix,
                max_length=int(options.get("max", "4096")),
                prefix=prefix,
                strip_aim=options.get("aim", "strip").lower() != "keep",
            )
        except ValueError as exc:
            raise DeviceUnavailableError(
                url, f"bad option: {exc}", "see drivers/scanner.py for the options"
            ) from exc
        self.framer = framer
        self._factory = serial_factory or _default_serial
        self._port: Any = None
        self._queue: list[str | ScanRejectedError] = []
        self._closed = False
        self._open(first=True)

    def _open(self, *, first: bool = False) -> None:
        try:
            self._port = self._factory(self.path, self.baud)
        except ImportError:
            raise
        except (OSError, ValueError) as exc:  # SerialException is an OSError; bad settings
            text = str(exc)
            if "ermission" in text:
                fix = (
                    "add the user to the dialout group "
                    "(or a udev rule with MODE=0660, GROUP=dialout)"
                )
            elif "busy" in text.lower():
                fix = (
                    "another program holds the port (ModemManager? set ENV{ID_MM_DEVICE_IGNORE}=1)"
                )
            else:
                fix = (
                    "check the scanner is plugged in and in USB CDC/serial mode; "
                    "use /dev/serial/by-id names"
                )
            if first:
                raise DeviceUnavailableError(
                    self.url, f"cannot open {self.path}: {text}", fix
                ) from exc
            raise ReaderGoneError(
                f"{self.url}: the scanner is not back yet ({text}); {fix}"
            ) from exc

    def _gone(self, exc: BaseException) -> ReaderGoneError:
        port, self._port = self._port, None
        self.framer = LineFramer(
            suffix=self.framer.suffix,
            max_length=self.framer.max_length,
            prefix=self.framer.prefix,
            strip_aim=self.framer.strip_aim,
        )
        if port is not None:
            with contextlib.suppress(Exception):  # the port is gone; closing may fail too
                port.close()
        return ReaderGoneError(f"{self.url}: the scanner was unplugged ({exc})")

    def _write(self, data: bytes) -> None:
        if data:
            try:
                self._port.write(data)
            except OSError as exc:  # serial.SerialException is an OSError
                raise self._gone(exc) from exc

    def wait_for_code(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> str:
        if self._closed:
            raise ReaderGoneError(f"{self.url}: the scanner was closed")
        if self._port is None:
            self._open()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._write(self.trigger)
        try:
            return self._wait(deadline, timeout, cancel)
        finally:
            if self._port is not None and self.untrigger:
                try:
                    self._port.write(self.untrigger)
                except OSError as exc:  # the read will report the unplug next time
                    log.debug("%s: untrigger failed: %s", self.url, exc)

    def _wait(
        self, deadline: float | None, timeout: float | None, cancel: threading.Event | None
    ) -> str:
        last_byte = time.monotonic()
        while True:
            if self._queue:
                item = self._queue.pop(0)
                if isinstance(item, ScanRejectedError):
                    raise item
                return item
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"waiting for a code on {self.url} was cancelled")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise ReaderTimeoutError(f"no code scanned on {self.url} within {timeout} s")
            try:
                waiting = self._port.in_waiting
                data = self._port.read(max(1, min(waiting, 65536)))
            except OSError as exc:  # serial.SerialException (an OSError): unplugged
                raise self._gone(exc) from exc
            now = time.monotonic()
            if data:
                last_byte = now
                self._queue.extend(self.framer.feed(data))
                continue
            gap = now - last_byte
            if self.framer.pending and self.framer.suffix == "NONE" and gap >= self.idle:
                self._queue.extend(self.framer.flush())
            elif self.framer.pending and self.framer.suffix != "NONE" and gap >= self.partial:
                rejected = self.framer.reject_partial()
                if rejected is not None:
                    self._queue.append(rejected)

    def close(self) -> None:
        self._closed = True
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except OSError as exc:
                log.debug("%s: close: %s", self.url, exc)


ScannerOpener = Callable[[str], CodeScanner]
#: Every scanner scheme and its driver.
_SCANNERS: Final[Mapping[str, ScannerOpener]] = MappingProxyType({"serial": SerialScanner})


def open_scanner(url: str) -> CodeScanner:
    """Open the code scanner the URL names, or say what was tried and how to fix it."""
    scheme, _ = split_url(url)
    opener = _SCANNERS.get(scheme)
    if opener is None:
        raise UnknownSchemeError(
            url,
            f"no scanner driver for scheme {scheme!r}",
            f"use one of: {', '.join(s + ':' for s in sorted(_SCANNERS))}",
        )
    try:
        return opener(url)
    except ImportError as exc:
        raise DeviceUnavailableError(
            url,
            f"the scanner driver needs a module that is not installed ({exc.name})",
            "install the matching extra: pip install 'pipos[serial]'",
        ) from exc
