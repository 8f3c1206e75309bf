"""The simulated ISO 8583 host on TCP (TLS optional): asyncio, in a thread of its own, beside
the JSON host and on the same AcquirerHost, ledger and fault board.

Each connection carries one request at a time, each answered on the same connection before
the next is read (docs/iso8583.md, "Transport"); a connection idle for `idle_timeout`
seconds is closed. The handlers (simulator.host.iso8583.handlers) run in a worker thread,
since the ledger is SQLite.

Faults: the JSON host's fault board (`PUT /admin/faults`), under the pseudo-paths
``/v1/iso8583/<MTI>`` (``/v1/iso8583/`` covers every message type), applied to the next
matching requests as on the JSON host:

    refuse             the connection is cut once the request is read, nothing processed
    delay              `delay_ms`, then processed (even if the terminal gave up meanwhile)
    http_500           39=96, nothing processed
    drop_after_commit  processed and committed, then the connection is cut, no answer
    corrupt            processed and committed, answered with a wrong MAC

"Down" is :meth:`Iso8583Server.stop_listening` (connections refused) and
:meth:`~Iso8583Server.listen_again` (the same address).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Mapping
from typing import Any, Final

from ...errors import SimulatorError
from ..faults import FaultBoard
from ..listen import bound_socket
from ..service import AcquirerHost
from .codec import frame
from .handlers import Iso8583Host, Reply
from .profile import HostProfile, load_profile

__all__ = ["FAULT_PREFIX", "Iso8583Server", "server_ssl_context"]

log = logging.getLogger(__name__)

#: The fault board's pseudo-path of ISO 8583 messages: + the MTI.
FAULT_PREFIX: Final = "/v1/iso8583/"
#: What the server does instead of answering: cut the connection (a reset, not a close).
_CUT: Final = Reply(None, close=True)


def server_ssl_context(
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str],
    client_ca: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """The server's TLS: its certificate, and with `client_ca` client certificates
    required (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


class Iso8583Server:
    """The ISO 8583 host on a real socket, served from a daemon thread's event loop.

    Port 0 picks a free port; `address` is known once :meth:`start` returns. `profile`: a
    loaded profile, a path, the decoded JSON, or None for the terminal's default file."""

    def __init__(
        self,
        host: AcquirerHost,
        faults: FaultBoard,
        *,
        profile: HostProfile | str | os.PathLike[str] | Mapping[str, Any] | None = None,
        bind: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        idle_timeout: float = 300.0,
    ) -> None:
        self.profile = profile if isinstance(profile, HostProfile) else load_profile(profile)
        self.handlers = Iso8583Host(host, self.profile)
        self.faults = faults
        self._bind = (bind, port)
        self._tls = tls
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        return self._bind

    @property
    def listening(self) -> bool:
        server = self._server
        return server is not None and server.is_serving()

    # --- life cycle (any thread but the server's own) -------------------------------------

    def start(self, timeout: float = 10.0) -> tuple[str, int]:
        with self._lock:
            if self._stopped:
                raise SimulatorError("the ISO 8583 host was stopped; start another")
            if self._thread is not None:
                raise SimulatorError("the ISO 8583 host is already started")
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(
                target=self._run, args=(loop,), name="iso8583-host", daemon=True
            )
            self._thread.start()
            try:
                self._call(self._listen(), timeout)
            except BaseException:
                self._end_loop()
                raise
            return self._bind

    def stop_listening(self, timeout: float = 10.0) -> None:
        """Down: new connections refused, open ones cut; the ledger untouched."""
        with self._lock:
            if self._loop is not None and self.listening:
                self._call(self._close(), timeout)

    def listen_again(self, timeout: float = 10.0) -> tuple[str, int]:
        """Up again on the same address (the port start() bound, even from port 0)."""
        with self._lock:
            if self._stopped or self._loop is None:
                raise SimulatorError("the ISO 8583 host is not started")
            if not self.listening:
                self._call(self._listen(), timeout)
            return self._bind

    def stop(self) -> None:
        """End it for good (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if self._loop is not None:
                with contextlib.suppress(SimulatorError):
                    self._call(self._close(), 10.0)
                self._end_loop()

    def __enter__(self) -> Iso8583Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coroutine: Any, timeout: float) -> Any:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise SimulatorError("the ISO 8583 host did not answer its controller") from exc

    def _end_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)
        self._loop = None

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # The connections left are ended; handlers still running in worker threads
            # finish (each ledger write is one transaction: in or not); then the loop ends.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    # --- on the loop ----------------------------------------------------------------------

    async def _listen(self) -> None:
        sock = bound_socket(self._bind, "the ISO 8583 host")
        self._server = await asyncio.start_server(self._connection, sock=sock, ssl=self._tls)
        host, port = sock.getsockname()[:2]
        self._bind = (str(host), int(port))

    async def _close(self) -> None:
        server = self._server
        if server is None:
            return
        server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5.0)

    async def _read(self, reader: asyncio.StreamReader) -> bytes | None:
        """One framed message; None at the end of the stream, on an idle connection or a
        length the profile does not accept."""
        size = self.profile.length_header_bytes
        try:
            header = await asyncio.wait_for(reader.readexactly(size), self.idle_timeout)
            length = int.from_bytes(header, "big")
            if not 0 < length <= self.profile.max_message_bytes:
                log.warning("ISO 8583: a message of %d bytes announced; connection closed", length)
                return None
            return await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError):
            return None

    async def _exchange(self, raw: bytes) -> Reply:
        request = self.handlers.read(raw)
        if request is None:
            return Reply(None, close=True)
        fault = self.faults.take(FAULT_PREFIX + request.mti)
        if fault is not None and fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        mode = fault.mode if fault is not None else None
        if mode == "refuse":
            return _CUT
        if mode == "http_500":
            return await asyncio.to_thread(self.handlers.malfunction, request)
        reply = await asyncio.to_thread(self.handlers.answer, request)
        if mode == "drop_after_commit":
            return _CUT
        if mode == "corrupt" and reply.data:
            # The MAC is the answer's last 8 bytes: one of them changed.
            reply = Reply(reply.data[:-1] + bytes([reply.data[-1] ^ 0xFF]), reply.close)
        return reply

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                raw = await self._read(reader)
                if raw is None:
                    break
                reply = await self._exchange(raw)
                if reply is _CUT:
                    writer.transport.abort()
                    return
                if reply.data is not None:
                    writer.write(frame(self.profile, reply.data))
                    await writer.drain()
                if reply.close:
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        except Exception:  # a fault of the simulator itself: the connection ends with it
            log.exception("ISO 8583: the host failed on a message; connection cut")
            writer.transport.abort()
            return
        finally:
            self._connections.discard(writer)
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
