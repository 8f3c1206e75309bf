"""One TCP connection (TLS where the acquirer requires it) to an ISO 8583 host: a request
sent, its answer read and believed, or a precise account of how it failed.

What a failure means for the money decides how it is reported (the same two errors as the
pipos protocol's client, terminal.acquirer.client, so the checkout handles both links
alike):

- :class:`~terminal.acquirer.client.HostUnreachable`: the request never left (no route,
  connection refused, the TLS handshake failed): nothing was processed; retry or go offline.
- :class:`~terminal.acquirer.client.OutcomeUnknownError`: the request was sent and no
  believable answer came (the connection dropped, the wait ran out, the answer's MAC was
  wrong, it answered another STAN or terminal, it was not a message): the host may have
  processed it, so a money-moving request is reversed by the caller (0400/0420), repeated
  until acknowledged.

Answers to earlier requests that arrive late on the same connection (a reversal's original,
answered after its time ran out) are skipped: only the answer with this request's STAN and
type counts. The connection is opened on first use and kept for the next request (the
acquirer's idle timeout closes it; the next request opens a new one).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Final

from ..client import HostUnreachable, OutcomeUnknownError, TlsOptions
from .codec import (
    Iso8583Error,
    Message,
    MessageFormatError,
    decode_message,
    encode_message,
    frame,
    read_frame,
)
from .messages import AnswerMismatchError, Request, answer_mti, answer_mtis, check_answer
from .profile import Profile
from .trace import trace_lines

__all__ = ["AnswerKey", "Iso8583Connection"]

log = logging.getLogger(__name__)

#: The longest the terminal waits for an answer before it treats it as lost (the acquirer's
#: profile may say less; card schemes allow the acquirer about 15-20 s end to end).
DEFAULT_ANSWER_TIMEOUT: Final = 20.0
#: Answers to earlier requests read and skipped before this one's is given up on.
_MAX_STRAY_ANSWERS: Final = 8
#: The key an answer is checked under, chosen from the answer as read (the key exchange's).
AnswerKey = Callable[[Message], bytes | None]


def _readable(sock: socket.socket) -> bool:
    """Whether `sock` has something to read (bytes or the peer's close) right now."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed under us
        return True
    return bool(ready)


class Iso8583Connection:
    """Thread-safe: one exchange at a time on the connection.

    `mac_key()`: the current session MAC key (None before the first key exchange: only an
    0800 may then be sent, unMAC'd: the key exchange, or the sign-on of a profile that
    signs on first).
    `clock`: monotonic seconds (injected for the tests of the answer timeout)."""

    def __init__(
        self,
        host: str,
        port: int,
        profile: Profile,
        *,
        mac_key: Callable[[], bytes | None],
        tls: TlsOptions | None = None,
        connect_timeout: float = 5.0,
        answer_timeout: float = DEFAULT_ANSWER_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.profile = profile
        self._mac_key = mac_key
        self._tls = tls
        self.connect_timeout = connect_timeout
        self.answer_timeout = answer_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):  # a socket the peer already dropped
                self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is not None and _readable(self._sock):
            # Nothing is asked on it now, so whatever it holds is the host's end of the
            # connection (it closed it: went down, or timed an idle link out) or an answer
            # given up on. A request sent on it would be lost after the send, an outcome
            # unknown where a fresh connect says at once whether the host is there.
            self._drop()
        if self._sock is not None:
            return self._sock
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise HostUnreachable(
                f"ISO 8583 host {self.host}:{self.port} unreachable: {exc}"
            ) from exc
        # One request, one answer: no Nagle wait between the length header and the message.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = raw
        if self._tls is not None:
            try:
                sock = self._tls.context().wrap_socket(raw, server_hostname=self.host)
            except (OSError, ssl.SSLError) as exc:
                raw.close()
                raise HostUnreachable(
                    f"ISO 8583 host {self.host}:{self.port}: TLS refused: {exc}"
                ) from exc
        self._sock = sock
        return sock

    def exchange(
        self,
        request: Request,
        *,
        reference: str = "",
        send_mac: bool = True,
        answer_key: AnswerKey | None = None,
    ) -> Message:
        """Send `request` and return its answer, checked (type, STAN, terminal id, response
        code, MAC). `reference`: the caller's key for the request (the journal's), carried
        by an OutcomeUnknownError so the caller reverses the right one.

        The key exchange's own: `send_mac` False sends an 0800 without a MAC (the terminal
        has no session key, or no longer trusts its own), and `answer_key` gives the key
        the answer is checked under once it is read (the 0810 is MAC'd under the new MAC
        key it carries); None from it takes the answer unchecked (a refusal that carries no
        keys and cannot be MAC'd, which the caller only reports). An Iso8583Error it raises
        makes the answer unbelievable, as a wrong MAC does."""
        key = self._mac_key() if send_mac else None
        if not send_mac and request.mti != "0800":
            raise MessageFormatError("only a network management message (0800) goes unMAC'd")
        if key is None and request.mti != "0800":
            raise HostUnreachable(
                "no session MAC key yet: the terminal signs on and exchanges keys before any "
                "other ISO 8583 message"
            )
        data = frame(self.profile, encode_message(self.profile, request.mti, request.fields, key))
        with self._lock:
            sock = self._connect()
            log.debug(
                "ISO 8583 ->\n%s", "\n".join(trace_lines(self.profile, request.mti, request.fields))
            )
            try:
                sock.sendall(data)
            except OSError as exc:
                # A send on a kept connection the host has since closed: nothing of this
                # request was read by the host when sendall fails on its first bytes, but
                # a partial send cannot be told apart, so the outcome is unknown.
                self._drop()
                raise OutcomeUnknownError(
                    f"the {request.mti} could not be sent whole: {exc}", reference
                ) from exc
            return self._answer(sock, request, key, reference, answer_key)

    def _answer(
        self,
        sock: socket.socket,
        request: Request,
        key: bytes | None,
        reference: str,
        answer_key: AnswerKey | None,
    ) -> Message:
        deadline = self._clock() + self.answer_timeout
        expected = answer_mti(request.mti)
        for _ in range(_MAX_STRAY_ANSWERS + 1):
            left = deadline - self._clock()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                raw = read_frame(self.profile, sock.recv)
                answer = decode_message(self.profile, raw, None if answer_key else key)
                if answer_key is not None and _answers(answer, request):
                    verify = answer_key(answer)
                    if verify is not None:
                        answer = decode_message(self.profile, raw, verify)
            except (TimeoutError, OSError, Iso8583Error) as exc:
                self._drop()
                raise OutcomeUnknownError(
                    f"no believable answer to the {request.mti} (STAN {request.stan}): {exc}",
                    reference,
                ) from exc
            log.debug(
                "ISO 8583 <-\n%s", "\n".join(trace_lines(self.profile, answer.mti, answer.fields))
            )
            if not _answers(answer, request):
                log.warning(
                    "ISO 8583: skipped a %s for STAN %s while waiting for the %s of STAN %s",
                    answer.mti,
                    answer.get("11"),
                    expected,
                    request.stan,
                )
                continue
            try:
                check_answer(request, answer)
            except AnswerMismatchError as exc:
                self._drop()
                raise OutcomeUnknownError(str(exc), reference) from exc
            return answer
        self._drop()
        raise OutcomeUnknownError(
            f"no answer to the {request.mti} (STAN {request.stan}) within "
            f"{self.answer_timeout:g} s",
            reference,
        )


def _answers(answer: Message, request: Request) -> bool:
    """Whether `answer` is of the type and STAN of an answer to `request` (the rest of
    check_answer comes after: an answer to an earlier request is skipped, not refused)."""
    try:
        expected = answer_mtis(request.mti)
    except Iso8583Error:
        return False
    return answer.mti in expected and answer.get("11") == request.stan
