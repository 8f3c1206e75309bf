"""NFC readers driven by nfcpy in reader mode: ``nfc:usb``, ``nfc:usb:072f:2200``,
``nfc:tty:AMA0:pn532``, ``nfc:udp:127.0.0.1:50000`` (the part after ``nfc:`` is nfcpy's own
device path), with an optional ``?types=A,B`` choosing the technologies polled.

nfcpy activates ISO/IEC 14443-4 (ISO-DEP) cards of Type A (RATS/ATS) and Type B (ATTRIB) and
runs the block protocol itself: frame sizes from the ATS/ATQB, command and response chaining,
R(NAK) retries and waiting-time extensions. This module only polls, moves APDUs, and
translates nfcpy's exceptions into :mod:`drivers.errors`.

nfcpy's block protocol has loops a card can keep going for ever (S(WTX) after S(WTX),
chained blocks without end, an R(ACK) re-sent for ever). :class:`_FrameBudget` stands between
nfcpy's ISO-DEP initiator and the frontend and bounds what one APDU may cost: frames,
waiting-time extensions, chained blocks and bytes, and time (every frame's timeout is cut to
what is left of it); past a bound the APDU ends in :class:`TransportLoopError`.

The contactless frontend is made by a factory, ``nfc.ContactlessFrontend`` unless one is
passed in: unit tests hand the reader a fake frontend whose ``connect`` returns a scripted
``nfc.tag.tt4.Type4Tag`` and raises nfcpy's own exceptions, without any device.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qsl

import nfc
import nfc.clf
import nfc.tag
import nfc.tag.tt4

from .base import CardPresence, CardReader
from .errors import (
    CancelledError,
    CardRemovedError,
    DeviceUnavailableError,
    ReaderGoneError,
    ReaderProtocolError,
    ReaderTimeoutError,
    TransportLoopError,
)
from .url import split_url

log = logging.getLogger(__name__)

_TECHNOLOGIES = {"A": "106A", "B": "106B"}
_POLL_PAUSE = 0.05

#: What one APDU may cost on the air (see the module docstring). An EMV card answers in a
#: few frames (EMV Contactless Book D: FWI at most 7, responses of 256 bytes at most), so
#: these only stop a card that never finishes.
MAX_WTX_PER_APDU: Final = 16
MAX_CHAINED_BLOCKS: Final = 64
MAX_FRAMES_PER_APDU: Final = 256
MAX_RESPONSE_BYTES: Final = 65536 + 2
#: Seconds one APDU may take, waiting-time extensions included.
APDU_TIMEOUT: Final = 5.0


class _BoundError(Exception):
    """Internal: raised through nfcpy's ISO-DEP loop (which catches only nfcpy's own
    errors) when an APDU crossed a bound; :meth:`NfcReader.transceive` translates it."""


class _AbandonedError(Exception):
    """Internal: the conversation was abandoned (:meth:`NfcReader.abort`)."""


class _FrameBudget:
    """nfcpy's ISO-DEP initiator talks to the frontend through this: one APDU's frames are
    counted and timed (:meth:`start` begins an APDU); anything else is the frontend's."""

    def __init__(self, clf: Any, apdu_timeout: float) -> None:
        self._clf = clf
        self._apdu_timeout = apdu_timeout
        self.aborted = False
        self.start()

    def start(self) -> None:
        self._frames = self._wtx = self._chained = self._bytes = 0
        self._deadline = time.monotonic() + self._apdu_timeout

    def exchange(self, data: Any, timeout: float | None) -> Any:
        if self.aborted:
            raise _AbandonedError("the card conversation was abandoned")
        self._frames += 1
        if self._frames > MAX_FRAMES_PER_APDU:
            raise _BoundError(f"more than {MAX_FRAMES_PER_APDU} frames for one command")
        if data and data[0] & 0xFE == 0xF2:  # our S(WTX) response: the card wants more time
            self._wtx += 1
            if self._wtx > MAX_WTX_PER_APDU:
                raise _BoundError(
                    f"the card asked for more time (S(WTX)) {MAX_WTX_PER_APDU} times for one "
                    "command"
                )
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _BoundError(f"one command took longer than {self._apdu_timeout:g} s")
        response = self._clf.exchange(
            data, remaining if timeout is None else min(timeout, remaining)
        )
        if response and response[0] & 0xE2 == 0x02:  # an I-block: part of the answer
            self._bytes += len(response) - 1
            if self._bytes > MAX_RESPONSE_BYTES:
                raise _BoundError(f"the response grew past {MAX_RESPONSE_BYTES} bytes")
            if response[0] & 0x10:
                self._chained += 1
                if self._chained > MAX_CHAINED_BLOCKS:
                    raise _BoundError(f"more than {MAX_CHAINED_BLOCKS} chained response blocks")
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clf, name)


def _pseudo_atr(historical: bytes) -> bytes:
    """The ATR a PC/SC reader would build for this card (PC/SC Part 3 §3.1.3.2.3), so both
    stacks report the same kind of value."""
    hist = historical[:15]
    body = bytes([0x80 | len(hist), 0x80, 0x01]) + hist
    tck = 0
    for byte in body:
        tck ^= byte
    return b"\x3b" + body + bytes([tck])


def parse_nfc_url(url: str) -> tuple[str, list[str]]:
    """nfcpy's device path and the targets to poll, from ``nfc:PATH[?types=A,B]``."""
    _, rest = split_url(url)
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query))
    types = [t.strip().upper() for t in options.get("types", "A,B").split(",") if t.strip()]
    unknown = [t for t in types if t not in _TECHNOLOGIES]
    if unknown or not types:
        raise DeviceUnavailableError(
            url,
            f"unknown card technology {unknown or types}",
            "use ?types=A, ?types=B or ?types=A,B",
        )
    return path or "usb", [_TECHNOLOGIES[t] for t in types]


def _open_error(url: str, path: str, exc: BaseException | None) -> DeviceUnavailableError:
    code = getattr(exc, "errno", None)
    if code == errno.EACCES:
        return DeviceUnavailableError(
            url,
            f"permission denied on the NFC device at {path!r}",
            "install the udev rule that `python -m nfc` prints (or add the user to the group "
            "owning the device), then replug the reader",
        )
    if code == errno.EBUSY:
        return DeviceUnavailableError(
            url,
            f"the NFC device at {path!r} is busy",
            "another program holds it: stop pcscd if it drives this reader (never let nfcpy and "
            "pcscd share one reader), and blacklist the pn533/pn533_usb kernel modules",
        )
    detail = f" ({exc})" if exc is not None else ""
    return DeviceUnavailableError(
        url,
        f"no NFC reader answers at {path!r}{detail}",
        "check the reader is plugged in (lsusb) and run `python -m nfc` to see what nfcpy "
        "finds; for a PN532 on a Pi UART enable_uart=1 and turn the serial console off",
    )


Frontend = Callable[[], Any]
"""Makes an unopened contactless frontend: ``nfc.ContactlessFrontend`` or a test's fake (its
``open(path)``, ``connect(rdwr=..., terminate=...)``, ``close()`` and ``device.mute()``)."""


class NfcReader(CardReader):
    """A reader on nfcpy; one ISO-DEP card at a time. `frontend` stands in for
    ``nfc.ContactlessFrontend`` (unit tests: a fake device and card)."""

    def __init__(
        self, url: str, *, frontend: Frontend | None = None, apdu_timeout: float = APDU_TIMEOUT
    ) -> None:
        self.url = url
        self.apdu_timeout = apdu_timeout
        self.path, self.targets = parse_nfc_url(url)
        make = nfc.ContactlessFrontend if frontend is None else frontend
        self._clf: Any = make()
        try:
            opened = self._clf.open(self.path)
        except (OSError, TimeoutError, nfc.clf.CommunicationError) as exc:
            raise _open_error(url, self.path, exc) from exc
        if not opened:
            raise _open_error(url, self.path, None)
        self._tag: Any = None
        self._budget: _FrameBudget | None = None
        self.presence: CardPresence | None = None
        self._closed = False
        self._aborted = False

    def wait_for_card(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> CardPresence:
        if self._tag is not None and self.presence is not None:
            return self.presence
        deadline = None if timeout is None else time.monotonic() + timeout

        def stop() -> bool:
            return (cancel is not None and cancel.is_set()) or (
                deadline is not None and time.monotonic() >= deadline
            )

        while True:
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"waiting for a card on {self.url} was cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                raise ReaderTimeoutError(f"no card presented on {self.url} within {timeout} s")
            try:
                tag = self._clf.connect(
                    rdwr={
                        "targets": self.targets,
                        "on-connect": lambda tag: False,  # keep the tag; we talk to it
                        "iterations": 1,
                        "interval": 0.1,
                        "beep-on-connect": False,
                    },
                    terminate=stop,
                )
            except (OSError, nfc.clf.CommunicationError) as exc:
                raise ReaderGoneError(
                    f"{self.url}: the NFC reader stopped answering ({exc})"
                ) from exc
            if tag is None or tag is False:
                # Nothing in the field this round (nfcpy also answers False after an I/O
                # error it logged, e.g. the udp peer not listening yet).
                time.sleep(_POLL_PAUSE)
                continue
            if not isinstance(tag, nfc.tag.tt4.Type4Tag):
                raise ReaderProtocolError(
                    f"{self.url}: the card in the field is not a contactless payment card "
                    f"(an ISO/IEC 14443-4 card); nfcpy sees a {tag.type}"
                )
            self._tag = tag
            self._budget = self._bound(tag)
            self.presence = CardPresence(bytes(tag.identifier), self._atr(tag))
            return self.presence

    def _bound(self, tag: Any) -> _FrameBudget | None:
        """Put a :class:`_FrameBudget` between the tag's ISO-DEP initiator and the frontend
        (nfcpy 1.0.4 keeps the initiator in ``Type4Tag._dep``, its frontend in ``.clf``;
        the version is pinned). A tag without one (a test's scripted tag) is left as is."""
        dep = getattr(tag, "_dep", None)
        clf = getattr(dep, "clf", None)
        if dep is None or clf is None:
            return None
        budget = clf if isinstance(clf, _FrameBudget) else _FrameBudget(clf, self.apdu_timeout)
        dep.clf = budget
        if self._aborted:
            budget.aborted = True
        return budget

    @staticmethod
    def _atr(tag: Any) -> bytes:
        target = getattr(tag, "target", None)
        sensb_res = getattr(target, "sensb_res", None)
        if sensb_res:
            # Type B: application data and protocol info (PC/SC Part 3 §3.1.3.2.3.2).
            return _pseudo_atr(bytes(sensb_res[5:12]))
        return _pseudo_atr(b"")

    def transceive(self, command: bytes) -> bytes:
        if self._aborted:
            raise CancelledError(f"{self.url}: the card conversation was abandoned")
        if self._tag is None:
            raise CardRemovedError(f"{self.url}: no card in the field (wait_for_card first)")
        if self._budget is not None:
            self._budget.start()
        try:
            response = self._tag.transceive(bytes(command))
        except _BoundError as exc:
            self._forget_card()
            raise TransportLoopError(f"{self.url}: {exc}; the card is faulty") from exc
        except _AbandonedError as exc:
            self._forget_card()
            raise CancelledError(f"{self.url}: {exc}") from exc
        except nfc.tag.TagCommandError as exc:
            self._forget_card()
            if getattr(exc, "errno", None) == nfc.tag.PROTOCOL_ERROR:
                raise ReaderProtocolError(f"{self.url}: ISO-DEP protocol error: {exc}") from exc
            raise CardRemovedError(f"{self.url}: card removed during a command ({exc})") from exc
        except nfc.clf.CommunicationError as exc:  # BrokenLinkError (RF off), transmission
            self._forget_card()
            raise CardRemovedError(f"{self.url}: card removed during a command ({exc!r})") from exc
        except OSError as exc:
            self._forget_card()
            raise ReaderGoneError(f"{self.url}: the NFC reader was unplugged ({exc})") from exc
        if response is None or len(response) < 2:
            self._forget_card()
            raise CardRemovedError(f"{self.url}: the card returned no status word")
        return bytes(response)

    def _forget_card(self) -> None:
        self._tag = None
        self.presence = None

    def abort(self) -> None:
        """The frame in flight ends at its own timeout (nfcpy offers no way to interrupt
        it); the next frame is not sent, so the APDU fails at once after."""
        self._aborted = True
        budget = self._budget
        if budget is not None:
            budget.aborted = True

    def wait_for_removal(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> None:
        tag, deadline = self._tag, None if timeout is None else time.monotonic() + timeout
        self._forget_card()
        while tag is not None:
            try:
                if not tag.is_present:  # R(NAK) presence check (ISO/IEC 14443-4 §7.5.6.2)
                    break
            except (OSError, nfc.tag.TagCommandError):
                break
            if cancel is not None and cancel.is_set():
                self._tag, self.presence = tag, self.presence
                raise CancelledError(f"waiting for the card to leave {self.url} was cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                self._tag = tag
                raise ReaderTimeoutError(f"the card stayed on {self.url} for {timeout} s")
            if cancel is not None:
                cancel.wait(0.1)
            else:
                time.sleep(0.1)
        # Switch the field off so the next card (or the same one) is activated afresh.
        device = getattr(self._clf, "device", None)
        if device is not None:
            device.mute()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._forget_card()
        try:
            self._clf.close()
        except (OSError, nfc.clf.CommunicationError) as exc:  # closing a reader already gone
            log.debug("%s: close: %s", self.url, exc)


def open_nfc_reader(url: str) -> NfcReader:
    return NfcReader(url)
