"""A virtual ICC for vsmartcard's ``vpcd`` pcscd driver: puts a virtual card behind pcscd.

vpcd listens on TCP (35963 for its first slot ``Virtual PCD 00 00``, 35964 for the second).
The card side connects to it: connecting is insertion, closing the socket is removal. Every
message either way is a 2-byte big-endian length and a payload. A 1-byte payload from vpcd is
a control code (0 power off, 1 power on, 2 reset, 4 get ATR; only 4 is answered, with the
ATR); a longer payload is a C-APDU and is answered with the R-APDU.

Speed: Debian's vpcd writes the length and the body separately, so Nagle on its side and
delayed ACK on ours stall each APDU by ~40 ms. Setting TCP_QUICKACK after every ``recv``
(Linux re-arms delayed ACK, so once is not enough) brings a round trip to ~0.1 ms.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

from simulator.errors import SimulatorError

from .card import BridgeCard, answer

log = logging.getLogger(__name__)

VPCD_PORT = 35963
_POWER_OFF, _POWER_ON, _RESET, _GET_ATR = 0, 1, 2, 4


class BridgeError(SimulatorError):
    """A bridge could not reach the stack it bridges to."""


def contactless_atr(atr: bytes, historical: bytes = b"PIPOS") -> bytes:
    """The card's ATR if it already is a PC/SC Part 3 contactless ATR (3B 8n 80 01 ...), else
    one built around `historical` (PC/SC Part 3 §3.1.3.2.3: TD1=80, TD2=01, TCK)."""
    if len(atr) >= 4 and atr[0] == 0x3B and atr[1] & 0xF0 == 0x80 and atr[2:4] == b"\x80\x01":
        return atr
    hist = historical[:15]
    body = bytes([0x80 | len(hist), 0x80, 0x01]) + hist
    tck = 0
    for byte in body:  # TCK: XOR of T0 .. last historical byte (ISO/IEC 7816-3 §8.2.5)
        tck ^= byte
    return b"\x3b" + body + bytes([tck])


def contact_t0_atr(historical: bytes = b"PIPOS") -> bytes:
    """A contact card's ATR offering T=0 only (ISO/IEC 7816-3 §8.2: T0 with no interface
    bytes, so no TD1 and no TCK): pcscd then talks T=0 to the card, and the driver sees the
    '61xx' / '6Cxx' transport answers a contactless reader would have hidden."""
    hist = historical[:15]
    return bytes([0x3B, len(hist)]) + hist


def _quickack(sock: socket.socket) -> None:
    # Not on Linux: no TCP_QUICKACK; slower, still correct.
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class VpcdBridge:
    """Inserts virtual cards into one vpcd slot.

    >>> bridge = VpcdBridge(port=35963)
    >>> bridge.insert(card)      # the card appears in 'Virtual PCD 00 00' within ~0.5 s
    >>> bridge.remove()          # the card leaves the field
    """

    def __init__(self, host: str = "127.0.0.1", port: int = VPCD_PORT) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.card: BridgeCard | None = None
        self.commands = 0
        self.left_field = threading.Event()
        self._answering = False  # the card is working on a command (see remove)
        self._atr: bytes | None = None

    @property
    def inserted(self) -> bool:
        return self._sock is not None

    def insert(
        self, card: BridgeCard, *, connect_timeout: float = 5.0, atr: bytes | None = None
    ) -> None:
        """Connect `card` to vpcd (pcscd must be running with the vpcd driver). `atr` replaces
        the contactless ATR built from the card's (e.g. :func:`contact_t0_atr`)."""
        self.remove()
        self._atr = atr
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise BridgeError(
                        f"cannot reach vpcd on {self.host}:{self.port} ({exc.strerror or exc}):"
                        " is pcscd running with the vsmartcard-vpcd driver?"
                    ) from exc
                time.sleep(0.05)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _quickack(sock)
        with self._lock:
            self._sock = sock
            self.card = card
            self.commands = 0
            self.left_field.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(sock, card), name=f"vpcd-vicc:{self.port}", daemon=True
        )
        self._thread.start()

    def remove(self) -> None:
        """Take the card out of the field (close the socket). A card still working on a
        command (a wedged one) is told it left, so its silence ends with the removal."""
        with self._lock:
            sock, self._sock = self._sock, None
            card = self.card if self._answering else None
        leave = getattr(card, "remove", None)
        if leave is not None:
            leave()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

    close = remove

    def _recv_exact(self, sock: socket.socket, size: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < size:
            try:
                chunk = sock.recv(size - len(chunks))
            except OSError:
                return None
            _quickack(sock)
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)

    def _serve(self, sock: socket.socket, card: BridgeCard) -> None:
        atr = self._atr if self._atr is not None else contactless_atr(bytes(card.atr))
        try:
            while True:
                header = self._recv_exact(sock, 2)
                if header is None:
                    return
                payload = self._recv_exact(sock, int.from_bytes(header, "big"))
                if payload is None:
                    return
                if len(payload) == 1:
                    if payload[0] == _GET_ATR:
                        sock.sendall(len(atr).to_bytes(2, "big") + atr)
                    # Power off/on and reset need no answer; the virtual card keeps no
                    # contact-interface state worth resetting.
                    continue
                with self._lock:
                    self._answering = True
                try:
                    response = answer(card, payload)
                finally:
                    with self._lock:
                        self._answering = False
                if response is None:
                    log.info("vpcd bridge: card left the field after %d commands", self.commands)
                    return
                self.commands += 1
                sock.sendall(len(response).to_bytes(2, "big") + response)
        except OSError as exc:
            log.debug("vpcd bridge: connection ended: %s", exc)
        finally:
            self.left_field.set()
            with self._lock:
                if self._sock is sock:
                    self._sock = None
            with contextlib.suppress(OSError):
                sock.close()
