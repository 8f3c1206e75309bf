"""Running the simulated host under uvicorn: blocking (CLI) or in a background thread (tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from ..errors import SimulatorError
from .app import HostApp, create_app
from .iso8583 import Iso8583Server, TerminalRegistry, server_ssl_context
from .iso8583.keys import kif_kbpk
from .listen import bound_socket


@dataclass(frozen=True)
class TlsConfig:
    certfile: str
    keyfile: str
    client_ca: str | None = None  # set: mutual TLS, client certificates required

    def uvicorn_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"ssl_certfile": self.certfile, "ssl_keyfile": self.keyfile}
        if self.client_ca:
            kwargs["ssl_ca_certs"] = self.client_ca
            kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        return kwargs


def _config(app: HostApp, tls: TlsConfig | None, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",  # the fault injector cuts connections through h11's transport
        lifespan="off",
        log_level=log_level,
        access_log=False,
        **(tls.uvicorn_kwargs() if tls else {}),
    )


def _cut_connections(server: uvicorn.Server) -> None:
    """Abort every connection `server` still has open (run on its own loop)."""
    for connection in list(server.server_state.connections):
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()


class HostServer:
    """The host on a real loopback socket, served from a daemon thread.

    Port 0 picks a free port; `url` is known once `start()` returns. `stop_listening()` and
    `listen_again()` take the host off the network and put it back on the same address (an
    acquirer that is down, then up again), the app and its ledger untouched; `stop()` ends
    it for good, in either state.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsConfig | None = None,
        log_level: str = "warning",
        **app_kwargs: Any,
    ) -> None:
        self.app = create_app(db_path, **app_kwargs)
        self.db_path = Path(db_path)
        self._bind = (host, port)
        self._tls = tls
        self._log_level = log_level
        # The uvicorn server of the current listening period and the thread it runs in.
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # One caller at a time moves the server between its states (the demo's drawer route,
        # a test, shutdown may each call from their own thread).
        self._lock = threading.Lock()
        self._stopped = False
        self.url = ""
        #: The ISO 8583 host beside it (start_iso8583), on the same ledger and faults.
        self.iso8583: Iso8583Server | None = None

    def start_iso8583(
        self,
        *,
        profile: str | os.PathLike[str] | None = None,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """Serve ISO 8583 too (docs/iso8583.md), on this host's address and `port` (0: any
        free one), on the same ledger, rules and fault board, over TLS with `tls`
        (server_ssl_context); it goes down and up with the JSON host (stop_listening,
        listen_again). Returns its address."""
        with self._lock:
            if self.iso8583 is None:
                self.iso8583 = Iso8583Server(
                    self.app.host,
                    self.app.faults,
                    profile=profile,
                    bind=self._bind[0],
                    port=port,
                    tls=tls,
                )
                return self.iso8583.start()
            return self.iso8583.address

    def iso8583_down(self) -> None:
        """Take only the ISO 8583 host off the network (the JSON host stays up): an
        acquiring host down while the terminal-management host answers."""
        with self._lock:
            if self.iso8583 is not None:
                self.iso8583.stop_listening()

    def iso8583_up(self) -> None:
        with self._lock:
            if self.iso8583 is not None and not self.iso8583.listening:
                self.iso8583.listen_again()

    def register_iso8583(self, terminal_id: str) -> dict[str, Any]:
        """Register an enrolled terminal for ISO 8583, as POST /admin/iso8583/terminals
        does: its TID, MID and TMK (a TR-31 block under the key-injection facility's TEST
        key, :meth:`kif_test_kbpk`)."""
        return TerminalRegistry(self.app.host).register(terminal_id)

    @staticmethod
    def kif_test_kbpk() -> bytes:
        """The key-injection facility's published TEST key-block protection key, the one
        a terminal opens its TMK block with in the demo (never a production key)."""
        return kif_kbpk()

    @property
    def listening(self) -> bool:
        """Whether the host accepts connections now."""
        server, thread = self._server, self._thread
        return server is not None and thread is not None and thread.is_alive() and server.started

    def start(self, timeout: float = 10.0) -> str:
        with self._lock:
            if self._stopped:
                raise SimulatorError("the simulated acquirer host was stopped; start another")
            if self._thread is not None:
                raise SimulatorError("the simulated acquirer host is already started")
            try:
                host, port = self._serve(timeout)
            except SimulatorError:
                self._server = self._thread = None  # never started: start() may be tried again
                raise
            # From now on the host lives on this one address: listen_again() binds it again.
            self._bind = (host, port)
            scheme = "https" if self._tls else "http"
            self.url = f"{scheme}://{host}:{port}"
            return self.url

    def stop_listening(self, timeout: float = 10.0) -> None:
        """Stop accepting connections, the way a host that is down looks: a connection is
        refused (ECONNREFUSED), open keep-alive connections are closed. A request being
        answered gets `timeout` seconds to finish, then is cut. The app and its ledger stay
        as they are, for :meth:`listen_again`. A host that is not listening (stopped
        already, or ended by :meth:`stop`) is left as it is. Blocks until the port is
        closed; safe from any thread but the host's own."""
        with self._lock:
            self._shut_down(timeout)
            if self.iso8583 is not None:
                self.iso8583.stop_listening(timeout)

    def listen_again(self, timeout: float = 10.0) -> str:
        """Accept connections again on the same address (the port `start()` bound, even when
        it was picked from port 0), with the same ledger, parameters, rules and faults.
        Listening already: nothing to do. Returns the URL, which has not changed."""
        with self._lock:
            if self._stopped:
                raise SimulatorError("the simulated acquirer host was stopped; start another")
            if self._thread is None:
                raise SimulatorError("the simulated acquirer host was never started")
            if not self.listening:
                self._serve(timeout)
            if self.iso8583 is not None and not self.iso8583.listening:
                self.iso8583.listen_again(timeout)
            return self.url

    def stop(self) -> None:
        """End the host: stop listening if it is, and close its ledger. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._shut_down(10.0)
                if self.iso8583 is not None:
                    self.iso8583.stop()
            finally:
                self.app.host.store.close()

    def _serve(self, timeout: float) -> tuple[str, int]:
        """Bind `self._bind` and run a fresh uvicorn server on it in a daemon thread; returns
        the bound address once it accepts connections. (A uvicorn server runs once: its
        loop, listening socket and connection set end with it, so each listening period
        has its own, all on the one app.)"""
        sock = bound_socket(self._bind, "the simulated acquirer host")
        host, port = sock.getsockname()[:2]
        server = uvicorn.Server(_config(self.app, self._tls, self._log_level))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="acquirer-host", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise SimulatorError("simulated acquirer host did not start")
            time.sleep(0.01)
        self._loop = server.servers[0].get_loop()
        return str(host), int(port)

    def _shut_down(self, timeout: float) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None or not thread.is_alive():
            return
        if thread is threading.current_thread():
            # Joining itself would hang the host's loop for good.
            raise SimulatorError("the simulated acquirer host cannot be stopped from its own loop")
        # uvicorn's own shutdown: the listening socket closes first (new connections are
        # refused at once), idle connections next, requests in flight are let finish...
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            # ...within `timeout`; then they are cut (reset), as a host going down cuts
            # them, so the client learns at once rather than at its read timeout, and
            # uvicorn stops waiting for their handlers (cancelled as the loop ends; each
            # ledger write is one transaction: it is in or it is not).
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                    loop.call_soon_threadsafe(_cut_connections, server)
            server.force_exit = True
            thread.join(10.0)
        if thread.is_alive():
            raise SimulatorError("the simulated acquirer host did not stop")

    def __enter__(self) -> HostServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    db: str | os.PathLike[str] = "acquirer.sqlite3",
    tls: TlsConfig | None = None,
    admin_token: str | None = None,
    log_level: str = "info",
    iso8583_port: int | None = None,
    iso8583_profile: str | os.PathLike[str] | None = None,
) -> None:
    """Serve until interrupted (the `pipos acquirer` command); with `iso8583_port`, the
    ISO 8583 host beside it on the same ledger (TLS with the same certificate), reading
    `iso8583_profile` (None: the terminal's default profile file)."""
    app = create_app(db, admin_token=admin_token)
    # The key terminals pin at enrolment (pipos provision --host-key), shown where the
    # operator starts the host as well as with each activation code.
    print(f"host key: {app.host.host_key_fingerprint}", flush=True)
    config = _config(app, tls, log_level)
    config.host, config.port = host, port
    iso8583: Iso8583Server | None = None
    if iso8583_port is not None:
        context = server_ssl_context(tls.certfile, tls.keyfile, tls.client_ca) if tls else None
        iso8583 = Iso8583Server(
            app.host, app.faults, profile=iso8583_profile, bind=host, port=iso8583_port, tls=context
        )
        iso_host, iso_port = iso8583.start()
        print(f"ISO 8583 host: {iso_host}:{iso_port}", flush=True)
    try:
        uvicorn.Server(config).run()
    finally:
        if iso8583 is not None:
            iso8583.stop()
