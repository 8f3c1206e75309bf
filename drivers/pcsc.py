"""PC/SC card readers through pcscd and pyscard: ``pcsc:`` (first reader) and ``pcsc:NAME``
(the first reader whose name contains NAME, case-insensitive, e.g. ``pcsc:ACR122``).

Card presence comes from PC/SC events (SCardGetStatusChange), waited on in short slices so
that a cancel or a timeout is honoured promptly. Contactless readers present an ISO 14443-4
card as T=1 and run T=CL themselves; the UID comes from the PC/SC Part 3 pseudo-APDU
``FF CA 00 00 00``. Readers may be unplugged and plugged back while a reader object lives:
:class:`ReaderWatch` follows the reader list, and :class:`PcscReader` waits for its reader to
come back instead of failing.

Every pyscard result code is translated here into :mod:`drivers.errors`.

The calls that reach pcscd go through a backend, ``smartcard.scard`` itself unless one is
passed in (:class:`PcscBackend`): unit tests drive the reader loop and the error translation
with a fake reader and card, and no pcscd. Result codes and constants are pyscard's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from smartcard import scard

from .base import CardPresence, CardReader
from .errors import (
    PCSCD_FIX,
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

#: Bounds on one command's T=0 transport (ISO/IEC 7816-4 §5.1.3 '61xx', ISO/IEC 7816-3
#: §10.3.3 '6Cxx'), so a card answering "more data" or "wrong length" forever cannot hold the
#: terminal: GET RESPONSE rounds, bytes gathered (an extended-length response at most), and
#: one resend with the Le the card asked for per command sent.
MAX_GET_RESPONSES: Final = 32
MAX_RESPONSE_BYTES: Final = 65536 + 2

PNP_NOTIFICATION = "\\\\?PnP?\\Notification"
GET_UID = bytes.fromhex("FFCA000000")
_SLICE_MS = 100

_DAEMON_GONE = {
    scard.SCARD_E_NO_SERVICE,
    scard.SCARD_E_SERVICE_STOPPED,
    scard.SCARD_E_INVALID_HANDLE,
}
_READER_GONE = {scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE}
_CARD_GONE = {
    scard.SCARD_E_NOT_TRANSACTED,
    scard.SCARD_W_REMOVED_CARD,
    scard.SCARD_W_RESET_CARD,
    scard.SCARD_W_UNPOWERED_CARD,
    scard.SCARD_W_UNRESPONSIVE_CARD,
    scard.SCARD_E_NO_SMARTCARD,
    scard.SCARD_F_COMM_ERROR,
    scard.SCARD_E_COMM_DATA_LOST,
}


class PcscBackend(Protocol):
    """The pyscard calls the driver makes, as ``smartcard.scard`` names them (the default
    backend is that module). Each returns the PC/SC result code first, as pyscard does."""

    def SCardEstablishContext(self, scope: int) -> Any: ...  # noqa: N802 - pyscard's names
    def SCardReleaseContext(self, context: int) -> Any: ...  # noqa: N802
    def SCardListReaders(self, context: int, groups: list[str]) -> Any: ...  # noqa: N802
    def SCardGetStatusChange(  # noqa: N802
        self, context: int, timeout_ms: int, states: list[tuple[str, int]]
    ) -> Any: ...
    def SCardConnect(  # noqa: N802
        self, context: int, reader: str, share: int, protocols: int
    ) -> Any: ...
    def SCardTransmit(self, card: int, protocol: int, command: list[int]) -> Any: ...  # noqa: N802
    def SCardDisconnect(self, card: int, disposition: int) -> Any: ...  # noqa: N802


def _code(hresult: int) -> int:
    """pyscard returns result codes as signed or unsigned ints depending on the platform."""
    return hresult & 0xFFFFFFFF


def _same(hresult: int, constant: int) -> bool:
    return _code(hresult) == _code(constant)


def _in(hresult: int, constants: set[int]) -> bool:
    return _code(hresult) in {_code(c) for c in constants}


def _describe(hresult: int) -> str:
    try:
        message = str(scard.SCardGetErrorMessage(hresult)).strip().rstrip(".")
    except Exception:  # pragma: no cover - message lookup must never mask the real error
        message = "unknown error"
    return f"{message} (0x{_code(hresult):08X})"


def establish_context(url: str, backend: PcscBackend | None = None) -> int:
    """A PC/SC context, or DeviceUnavailableError saying pcscd is not running."""
    pcsc = scard if backend is None else backend
    hresult, context = pcsc.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if not _same(hresult, scard.SCARD_S_SUCCESS):
        raise DeviceUnavailableError(url, f"pcscd does not answer: {_describe(hresult)}", PCSCD_FIX)
    return int(context)


def list_pcsc_readers(context: int | None = None, backend: PcscBackend | None = None) -> list[str]:
    """Reader names pcscd knows now ([] when pcscd has none). DeviceUnavailableError when
    pcscd is not running."""
    pcsc = scard if backend is None else backend
    own = context is None
    ctx = establish_context("pcsc:", pcsc) if context is None else context
    try:
        hresult, readers = pcsc.SCardListReaders(ctx, [])
        if _same(hresult, scard.SCARD_E_NO_READERS_AVAILABLE):
            return []
        if _in(hresult, _DAEMON_GONE):
            raise DeviceUnavailableError("pcsc:", f"pcscd stopped: {_describe(hresult)}", PCSCD_FIX)
        if not _same(hresult, scard.SCARD_S_SUCCESS):
            raise ReaderProtocolError(f"listing PC/SC readers failed: {_describe(hresult)}")
        return [str(name) for name in readers]
    finally:
        if own:
            pcsc.SCardReleaseContext(ctx)


def match_reader(readers: list[str], pattern: str) -> str | None:
    """The first reader whose name contains `pattern` (case-insensitive); the first reader
    when the pattern is empty."""
    wanted = pattern.strip().lower()
    for name in readers:
        if wanted in name.lower():
            return name
    return None


ReaderListener = Callable[[list[str], list[str]], None]


class ReaderWatch:
    """Follows the PC/SC reader list and reports readers plugged in and out.

    Like pyscard's ``ReaderMonitor`` it polls a reader-list function, but each watch owns its
    state (ReaderMonitor shares one state and one thread across all its instances, so a test's
    fake list would leak into every reader) and a failing poll never prints a traceback.
    `list_readers` is injectable, which is how hot-plug is tested without hardware.
    """

    def __init__(
        self, list_readers: Callable[[], list[str]] | None = None, period: float = 0.5
    ) -> None:
        self._list = list_readers if list_readers is not None else list_pcsc_readers
        self.period = period
        self._readers: list[str] = []
        self._listeners: list[ReaderListener] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_listener(self, listener: ReaderListener) -> None:
        """`listener(added, removed)` is called on every change (from the polling thread when
        :meth:`start` ran, else from :meth:`refresh`)."""
        self._listeners.append(listener)

    @property
    def readers(self) -> list[str]:
        return list(self._readers)

    def refresh(self) -> list[str]:
        """Poll the reader list once; notify listeners of what changed. When pcscd is down
        the list is empty (every reader has gone)."""
        try:
            current = list(self._list())
        except DeviceUnavailableError:
            current = []
        with self._changed:
            previous = self._readers
            added = [r for r in current if r not in previous]
            removed = [r for r in previous if r not in current]
            self._readers = current
            if added or removed:
                self._changed.notify_all()
        if added or removed:
            log.info("PC/SC readers plugged in: %s; unplugged: %s", added, removed)
            for listener in list(self._listeners):
                listener(added, removed)
        return current

    def wait_for(
        self, pattern: str, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> str:
        """The name of a reader matching `pattern`, waiting for one to be plugged in."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise CancelledError("waiting for a PC/SC reader was cancelled")
            name = match_reader(self.refresh(), pattern)
            if name is not None:
                return name
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ReaderTimeoutError(f"no PC/SC reader matching {pattern!r} was plugged in")
            pause = self.period if remaining is None else min(self.period, remaining)
            if cancel is not None:
                cancel.wait(pause)
            else:
                time.sleep(pause)

    def start(self) -> None:
        """Poll in a background thread (for listeners that must hear of changes promptly)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pcsc-reader-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("PC/SC reader watch: polling failed")
            self._stop.wait(self.period)


class PcscReader(CardReader):
    """One PC/SC reader, chosen by name pattern, with the card in its field.

    `backend` stands in for ``smartcard.scard`` (unit tests: a fake reader and card).
    """

    def __init__(
        self,
        url: str,
        pattern: str = "",
        watch: ReaderWatch | None = None,
        *,
        backend: PcscBackend | None = None,
    ) -> None:
        self.url = url
        self.pattern = pattern
        self._scard: PcscBackend = scard if backend is None else backend
        self._context: int | None = establish_context(url, self._scard)
        self._watch = watch or ReaderWatch(self._list_readers)
        readers = self._watch.refresh()
        self.reader_name: str | None = match_reader(readers, pattern)
        if self.reader_name is None:
            self._release()
            if not readers:
                raise DeviceUnavailableError(
                    url,
                    "pcscd is running but sees no reader",
                    "plug the reader in (check with pcsc_scan); USB CCID readers such as the "
                    "ACS ACR1252U need the libccid package; an ACR122U must not be claimed "
                    "by the pn533 kernel module (blacklist pn533 pn533_usb)",
                )
            raise DeviceUnavailableError(
                url,
                f"no PC/SC reader name contains {pattern!r}",
                "use one of: " + ", ".join(f"pcsc:{name}" for name in readers),
            )
        self._card: int | None = None
        self._protocol = scard.SCARD_PROTOCOL_T1
        self._state = scard.SCARD_STATE_UNAWARE
        self.presence: CardPresence | None = None
        self._aborted = False

    # -- context and reader list -------------------------------------------------------

    def _ctx(self) -> int:
        """The PC/SC context, re-established after pcscd restarted."""
        if self._context is None:
            try:
                self._context = establish_context(self.url, self._scard)
            except DeviceUnavailableError as exc:
                raise ReaderGoneError(f"{self.url}: pcscd stopped; {PCSCD_FIX}") from exc
        return self._context

    def _daemon_gone(self, hresult: int) -> ReaderGoneError:
        self._context = None
        self._card = None
        return ReaderGoneError(f"{self.url}: pcscd stopped ({_describe(hresult)}); {PCSCD_FIX}")

    def _list_readers(self) -> list[str]:
        if self._context is None:
            self._context = establish_context(self.url, self._scard)
        try:
            return list_pcsc_readers(self._context, self._scard)
        except DeviceUnavailableError:
            self._context = None
            raise

    def _status(self, name: str, known: int, timeout_ms: int) -> tuple[int, int, bytes]:
        hresult, states = self._scard.SCardGetStatusChange(self._ctx(), timeout_ms, [(name, known)])
        if _in(hresult, _DAEMON_GONE):
            raise self._daemon_gone(hresult)
        if not states:
            return hresult, scard.SCARD_STATE_UNKNOWN, b""
        _, event, atr = states[0]
        return hresult, int(event), bytes(atr)

    # -- CardReader ----------------------------------------------------------------------

    def wait_for_card(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> CardPresence:
        if self._card is not None and self.presence is not None:
            return self.presence
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"waiting for a card on {self.url} was cancelled")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ReaderTimeoutError(f"no card presented on {self.url} within {timeout} s")
            if self.reader_name is None:
                # The reader was unplugged: wait for it (or one like it) to come back.
                slice_s = (
                    self._watch.period if remaining is None else min(self._watch.period, remaining)
                )
                try:
                    self.reader_name = self._watch.wait_for(self.pattern, slice_s, cancel)
                    log.info("%s: reader %r is back", self.url, self.reader_name)
                    self._state = scard.SCARD_STATE_UNAWARE
                except ReaderTimeoutError:
                    continue
            slice_ms = (
                _SLICE_MS if remaining is None else max(1, min(_SLICE_MS, int(remaining * 1000)))
            )
            hresult, event, atr = self._status(self.reader_name, self._state, slice_ms)
            if _same(hresult, scard.SCARD_E_TIMEOUT):
                continue
            if _in(hresult, _READER_GONE) or event & scard.SCARD_STATE_UNKNOWN:
                log.warning("%s: reader %r was unplugged", self.url, self.reader_name)
                self.reader_name = None
                continue
            if not _same(hresult, scard.SCARD_S_SUCCESS):
                raise ReaderProtocolError(
                    f"{self.url}: waiting for a card failed: {_describe(hresult)}"
                )
            self._state = event & ~scard.SCARD_STATE_CHANGED
            if event & scard.SCARD_STATE_PRESENT and not event & scard.SCARD_STATE_MUTE:
                presence = self._connect(atr)
                if presence is not None:
                    return presence
                # Present but not answering (still powering up, or swapped for another card
                # faster than the driver polls): ask again shortly rather than wait for an
                # event that may never come.
                self._state = scard.SCARD_STATE_UNAWARE
                if cancel is not None:
                    cancel.wait(_SLICE_MS / 1000)
                else:
                    time.sleep(_SLICE_MS / 1000)

    def _connect(self, atr: bytes) -> CardPresence | None:
        assert self.reader_name is not None
        hresult, card, protocol = self._scard.SCardConnect(
            self._ctx(),
            self.reader_name,
            scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )
        if _in(hresult, _DAEMON_GONE):
            raise self._daemon_gone(hresult)
        if _same(hresult, scard.SCARD_E_SHARING_VIOLATION):
            raise DeviceUnavailableError(
                self.url,
                f"reader {self.reader_name!r} is in use by another program",
                "close the other program holding it (another pipos, a PC/SC tool, or nfcpy on "
                "the same USB reader: never let nfcpy and pcscd share one reader)",
            )
        if _in(hresult, _CARD_GONE):
            return None  # the card left while being powered up: keep waiting
        if not _same(hresult, scard.SCARD_S_SUCCESS):
            raise ReaderProtocolError(
                f"{self.url}: connecting to the card failed: {_describe(hresult)}"
            )
        self._card, self._protocol = int(card), int(protocol)
        try:
            uid = self._get_uid()
        except CardRemovedError:
            self._drop_card()
            return None
        self.presence = CardPresence(uid, atr)
        return self.presence

    def _get_uid(self) -> bytes:
        response = self.transceive(GET_UID)
        if len(response) >= 2 and response[-2:] == b"\x90\x00":
            return response[:-2]
        # A contact card or a reader without the pseudo-APDU: no UID, not a fault.
        return b""

    def _transmit(self, command: bytes) -> bytes:
        if self._aborted:
            raise CancelledError(f"{self.url}: the card conversation was abandoned")
        if self._card is None:
            raise CardRemovedError(f"{self.url}: no card connected (wait_for_card first)")
        hresult, response = self._scard.SCardTransmit(self._card, self._protocol, list(command))
        if _same(hresult, scard.SCARD_S_SUCCESS):
            return bytes(response)
        if _in(hresult, _DAEMON_GONE):
            raise self._daemon_gone(hresult)
        if _in(hresult, _READER_GONE):
            self._drop_card()
            self.reader_name = None
            raise ReaderGoneError(f"{self.url}: the reader was unplugged during a command")
        if _in(hresult, _CARD_GONE):
            self._drop_card()
            raise CardRemovedError(
                f"{self.url}: card removed during a command ({_describe(hresult)})"
            )
        raise ReaderProtocolError(f"{self.url}: command failed: {_describe(hresult)}")

    def transceive(self, command: bytes) -> bytes:
        response = self._transmit(command)
        if len(response) < 2:
            self._drop_card()
            raise CardRemovedError(f"{self.url}: the card returned no status word")
        if self._protocol == scard.SCARD_PROTOCOL_T0:
            response = self._t0_fixups(command, response)
        return response

    def _t0_fixups(self, command: bytes, response: bytes) -> bytes:
        """T=0 only (a contact card in a dual reader): ISO/IEC 7816-3 §10.3.3 '6Cxx' (resend
        with Le=xx) and ISO/IEC 7816-4 §5.1.3 '61xx' (GET RESPONSE) are handled here; T=CL
        needs neither. Bounded: at most :data:`MAX_GET_RESPONSES` GET RESPONSE rounds and
        :data:`MAX_RESPONSE_BYTES` bytes, and one resend per command sent; past a bound the
        card is faulty or hostile (:class:`TransportLoopError`)."""
        data = bytearray()
        sent, resent, rounds = command, False, 0
        while True:
            sw1, sw2 = response[-2], response[-1]
            if sw1 == 0x6C and len(sent) >= 5:
                if resent:
                    raise TransportLoopError(
                        f"{self.url}: the card answered '6C{sw2:02X}' (wrong length) again "
                        f"after the command was resent with the length it asked for"
                    )
                resent, sent = True, sent[:-1] + bytes([sw2])
            elif sw1 == 0x61:
                data += response[:-2]
                rounds += 1
                if rounds > MAX_GET_RESPONSES:
                    raise TransportLoopError(
                        f"{self.url}: the card kept answering '61xx' (more data) after "
                        f"{MAX_GET_RESPONSES} GET RESPONSE commands"
                    )
                if len(data) > MAX_RESPONSE_BYTES:
                    raise TransportLoopError(
                        f"{self.url}: the card's response grew past {MAX_RESPONSE_BYTES} "
                        "bytes of '61xx' (more data)"
                    )
                resent, sent = False, bytes([command[0] & 0x03, 0xC0, 0, 0, sw2])
            else:
                return bytes(data) + response
            response = self._transmit(sent)
            if len(response) < 2:
                self._drop_card()
                raise CardRemovedError(f"{self.url}: the card returned no status word")

    def _drop_card(self) -> None:
        card, self._card = self._card, None
        self.presence = None
        if card is not None:
            self._scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)

    def wait_for_removal(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> None:
        self._drop_card()
        deadline = None if timeout is None else time.monotonic() + timeout
        known = scard.SCARD_STATE_UNAWARE
        while self.reader_name is not None:
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"waiting for the card to leave {self.url} was cancelled")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ReaderTimeoutError(f"the card stayed on {self.url} for {timeout} s")
            slice_ms = (
                _SLICE_MS if remaining is None else max(1, min(_SLICE_MS, int(remaining * 1000)))
            )
            hresult, event, _ = self._status(self.reader_name, known, slice_ms)
            if _same(hresult, scard.SCARD_E_TIMEOUT):
                continue
            if _in(hresult, _READER_GONE) or event & scard.SCARD_STATE_UNKNOWN:
                self.reader_name = None  # no reader, no card
                return
            if not _same(hresult, scard.SCARD_S_SUCCESS):
                raise ReaderProtocolError(
                    f"{self.url}: watching the card failed: {_describe(hresult)}"
                )
            known = event & ~scard.SCARD_STATE_CHANGED
            if not event & scard.SCARD_STATE_PRESENT:
                self._state = known
                return

    def abort(self) -> None:
        """pyscard's SCardTransmit has no timeout, and PC/SC serialises the calls on one
        context: a disconnect from here would wait for the stuck transmit. So the reset is
        left to a thread of its own (it resets the card as soon as pcscd lets it, which also
        ends the transmit on readers that honour it) and nothing more is sent."""
        self._aborted = True
        card, self._card = self._card, None
        self.presence = None
        if card is not None:
            threading.Thread(
                target=self._scard.SCardDisconnect,
                args=(card, scard.SCARD_RESET_CARD),
                name="pcsc-abort",
                daemon=True,
            ).start()

    def _release(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            self._scard.SCardReleaseContext(context)

    def close(self) -> None:
        try:
            self._drop_card()
        finally:
            self._release()


def open_pcsc_reader(url: str) -> PcscReader:
    _, rest = split_url(url)
    return PcscReader(url, rest)
