"""A code scanner typing into a pty pair: the driver opens :attr:`PtyScanner.path` as its
serial port; :meth:`type_code` sends a code as a scanner would; :meth:`unplug` closes the
master side, which the driver sees as the device going away (read fails with EIO)."""

from __future__ import annotations

import os
import tty


class PtyScanner:
    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw from the start: no echo back to the scanner, no CR->LF translation, even for
        # bytes typed before the driver opens the port (pyserial sets raw mode itself).
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.plugged = True
        self.received = bytearray()  # what the driver sent (trigger commands)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._master, view)
            view = view[written:]

    def type_code(self, code: str, *, prefix: bytes = b"", suffix: bytes = b"\r") -> None:
        self.write(prefix + code.encode("utf-8") + suffix)

    def read_sent(self, size: int = 1024) -> bytes:
        """Bytes the driver wrote to the scanner (non-blocking)."""
        os.set_blocking(self._master, False)
        try:
            data = os.read(self._master, size)
        except BlockingIOError:
            data = b""
        finally:
            os.set_blocking(self._master, True)
        self.received += data
        return data

    def unplug(self) -> None:
        if not self.plugged:
            return
        self.plugged = False
        os.close(self._master)
        os.close(self._slave)
