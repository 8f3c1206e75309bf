"""Running the simulated host under uvicorn: blocking (CLI) or in a background thread (tests)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from .app import HostApp, create_app


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


class HostServer:
    """The host on a real loopback socket, served from a daemon thread.

    Port 0 picks a free port; `url` is known once `start()` returns.
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
        self._server = uvicorn.Server(_config(self.app, tls, log_level))
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> str:
        # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (otherwise
        # Nagle + delayed ACK add ~40 ms to every response written in two parts).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self._bind)
        host, port = sock.getsockname()[:2]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="acquirer-host", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("simulated acquirer host did not start")
            time.sleep(0.01)
        scheme = "https" if self._tls else "http"
        self.url = f"{scheme}://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.app.host.store.close()

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
) -> None:
    """Serve until interrupted (the `pipos acquirer` command)."""
    app = create_app(db, admin_token=admin_token)
    # The key terminals pin at enrolment (pipos provision --host-key), shown where the
    # operator starts the host as well as with each activation code.
    print(f"host key: {app.host.host_key_fingerprint}", flush=True)
    config = _config(app, tls, log_level)
    config.host, config.port = host, port
    uvicorn.Server(config).run()
