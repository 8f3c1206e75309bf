"""The running terminal as one object: the runtime (keys, acquirer client, queue, checkout)
plus the local API server, either on embedded demo defaults with a simulated acquirer
(:func:`start_demo_stack`) or as provisioned (:func:`start_provisioned_stack`).

Kept apart from the command line so that `pipos` starts without loading FastAPI and uvicorn
unless the command needs them.
"""

from __future__ import annotations

import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from drivers.sim import virtual_cards_installed

from ..app.runtime import TerminalRuntime, start_terminal
from ..app.sim_scanner import SimulatedPhone
from ..checkout.qr_payment import QrPaymentParams
from ..domain.errors import ConfigurationError, simulator_missing, simulator_not_installed
from ..domain.params import default_params
from ..store.audit import AuditLog
from .server import ApiSettings, PinGuard, create_api

__all__ = [
    "DEMO_PIN",
    "DEMO_SECRET",
    "ApiServer",
    "DemoStack",
    "start_demo_stack",
    "start_provisioned_stack",
]

DEMO_SECRET = b"pipos-demo-device-secret-not-for-production"
DEMO_PIN = "1234"


class ApiServer:
    """The terminal API under uvicorn on a real socket, in a daemon thread."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                lifespan="off",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=1,
            )
        )
        self._bind = (host, port)
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> str:
        family = socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self._bind)
        host, port = sock.getsockname()[:2]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="terminal-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("terminal API did not start")
            time.sleep(0.01)
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


class DemoStack:
    """A simulated acquirer, a demo terminal enrolled with it, and the terminal's API."""

    def __init__(
        self,
        runtime: TerminalRuntime,
        api: ApiServer,
        host: Any,
        token: str,
        pin: str,
        phone: SimulatedPhone | None = None,
    ) -> None:
        self.runtime = runtime
        self.api = api
        self.host = host
        self.token = token
        self.pin = pin
        self.phone = phone

    @property
    def checkout(self) -> Any:
        return self.runtime.checkout

    def close(self) -> None:
        # A sale still waiting is cancelled and its final state published while the streams
        # still run; then the streams end, so the server stops with no request still running.
        self.checkout.close()
        self.checkout.events.close()
        self.api.stop()
        self.runtime.close()
        if self.host is not None:
            self.host.stop()


def start_demo_stack(
    state_dir: str | os.PathLike[str],
    *,
    host_url: str | None = None,
    bind: str = "127.0.0.1",
    port: int = 0,
    reader_url: str | None = None,
    printer_url: str | None = None,
    scanner_url: str | None = None,
    token: str | None = None,
    pin: str = DEMO_PIN,
    secret: bytes = DEMO_SECRET,
    activation_code: str | Callable[[], str] | None = None,
    scrypt_n: int | None = None,
    pin_clock: Callable[[], float] = time.monotonic,
    background: bool = True,
    confirm_delay: float = 3.0,
    qr_poll_interval: float = 1.0,
) -> DemoStack:
    """Start the simulated acquirer (unless `host_url` is given), the terminal and its API.

    The simulated acquirer and the simulated card field (no `reader_url`) need the simulator
    (the `sim` extra); without it this raises :class:`ConfigurationError` saying what to
    install, before anything is started."""
    host = None
    if host_url is None:
        try:
            from simulator.host import HostServer  # the simulator only on the demo path
        except ImportError as exc:
            if not simulator_missing(exc):
                raise
            raise ConfigurationError(
                simulator_not_installed(
                    "the demo terminal (its simulated acquirer, cards and phone)",
                    "A provisioned terminal runs without it: pipos run --config FILE",
                )
            ) from exc
    if reader_url is None and not virtual_cards_installed():
        raise ConfigurationError(
            simulator_not_installed("the simulated card field (pipos run without --reader)")
        )
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if host_url is None:
        host = HostServer(directory / "acquirer.sqlite3")
        host_url = host.start()
        acquirer = host.app.host

        def code() -> str:
            return str(acquirer.create_activation_code("M-DEMO-0001"))

        activation_code = activation_code or code
    kwargs: dict[str, Any] = {}
    if scrypt_n is not None:
        kwargs["scrypt_n"] = scrypt_n
    runtime = start_terminal(
        directory / "terminal",
        secret=secret,
        host_url=host_url,
        activation_code=activation_code,
        reader_url=reader_url,
        scanner_url=scanner_url,
        # The acquirer is on loopback here: poll code payments briskly.
        qr_params=replace(
            QrPaymentParams.from_terminal_params(default_params()),
            poll_interval=qr_poll_interval,
        ),
        client_options={
            "read_timeout": 10.0,
            "retries": 2,
            "max_reversal_attempts": 3,
            "backoff": (0.05, 0.5),
        },
        **kwargs,
    )
    token = token or secrets.token_urlsafe(24)
    phone: SimulatedPhone | None = None
    if runtime.scanner is not None and host_url.startswith(
        ("http://127.0.0.1", "http://localhost")
    ):
        # The customer's simulated phone: its codes are registered with the simulated
        # acquirer, so the page's simulator panel can pay with them.
        phone = SimulatedPhone(host_url, runtime.scanner, confirm_delay=confirm_delay)
    settings = ApiSettings(
        tokens={token: "register-1"},
        pin_guard=PinGuard(pin, salt=secrets.token_bytes(16), clock=pin_clock),
        page_token=secrets.token_urlsafe(24),
        printer_url=printer_url,
        field=runtime.field,
        scanner=runtime.scanner,
        phone=phone,
        audit=AuditLog(directory / "terminal" / "audit.log"),
    )
    api = ApiServer(create_api(runtime.checkout, settings), bind, port)
    api.start()
    if background:
        runtime.start_background()
    return DemoStack(runtime, api, host, token, pin, phone)


# --- the commands --------------------------------------------------------------------------


def _private_text(path: Path, what: str, fix: str) -> str:
    """A one-line secret from a file only its owner can read (never from the command line,
    where every user's `ps` would show it)."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"{what} {path}: cannot read ({exc.strerror}); {fix}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"{what} {path}: readable by group or others; chmod 600 it")
    return text


def _register_token(path: Path) -> tuple[str, bool]:
    """The register's API token from `path`, created (mode 0600) on the first start."""
    if path.exists():
        return _private_text(path, "register token", "delete it to make a new one"), False
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return token, True


def start_provisioned_stack(
    config_path: Path,
    *,
    bind: str,
    port: int,
    printer_url: str | None,
    pin_file: Path | None,
    token_file: Path | None,
    pin_clock: Callable[[], float] = time.monotonic,
) -> tuple[DemoStack, Path, bool]:
    """The terminal as `pipos provision` configured it: its keys, its verified parameters,
    its acquirer, its reader and scanner. No simulator is started."""
    from ..service.config import load_config
    from ..service.provision import load_installed_parameters, tls_from_config
    from ..store.keys import Keystore, secret_from_file

    config = load_config(config_path)
    if not config.provisioned:
        raise ConfigurationError(
            f"{config_path}: the terminal is not provisioned; run pipos provision first"
        )
    secret = secret_from_file(config.secret_file)
    keystore = Keystore.open(config.data_dir, secret)
    if keystore.host_public_key is None or keystore.terminal_id is None:
        raise ConfigurationError(f"{config.data_dir}: the keystore holds no enrolment")
    installed = load_installed_parameters(
        config.params_path,
        host_public_key=keystore.host_public_key,
        terminal_id=keystore.terminal_id,
        serial=keystore.serial,
        today=datetime.now(UTC).date(),
    )
    pin_path = pin_file or config.data_dir / "merchant-pin"
    pin = _private_text(
        pin_path,
        "merchant PIN",
        "write the merchant PIN (4-12 digits) to it with mode 0600, or pass --pin-file",
    )
    token_path = token_file or config.data_dir / "register-token"
    token, created = _register_token(token_path)
    runtime = start_terminal(
        config.data_dir,
        secret=secret,
        host_url=config.host_url,
        params=installed.params,
        reader_url=config.reader_url or "pcsc:",
        scanner_url=config.scanner_url or "",
        qr_params=QrPaymentParams.from_terminal_params(installed.params),
        client_options={"tls": tls_from_config(config)},
    )
    settings = ApiSettings(
        tokens={token: "register-1"},
        pin_guard=PinGuard(pin, salt=secrets.token_bytes(16), clock=pin_clock),
        page_token=secrets.token_urlsafe(24),
        printer_url=printer_url,
        audit=AuditLog(config.audit_path),
    )
    api = ApiServer(create_api(runtime.checkout, settings), bind, port)
    api.start()
    runtime.start_background()
    return DemoStack(runtime, api, None, token, pin), token_path, created
