"""The running terminal as one object: the runtime (keys, acquirer client, queue, checkout)
plus the local API server, either on embedded demo defaults with a simulated acquirer
(:func:`start_demo_stack`) or as provisioned (:func:`start_provisioned_stack`).

Kept apart from the command line so that `pipos` starts without loading FastAPI and uvicorn
unless the command needs them.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from drivers.sim import virtual_cards_installed

from ..acquirer.iso8583.link import SECRET_TMK, load_terminal_master_key
from ..acquirer.iso8583.settings import Iso8583Settings
from ..app.runtime import TerminalRuntime, start_terminal
from ..app.sim_scanner import SimulatedPhone
from ..checkout.qr_payment import QrPaymentParams
from ..domain.errors import ConfigurationError, simulator_missing, simulator_not_installed
from ..domain.messages import LANGUAGES
from ..domain.params import Language, default_params
from ..security.merchant_pin import DEFAULT_SCRYPT_N as MERCHANT_PIN_SCRYPT_N
from ..security.merchant_pin import FILE as MERCHANT_PIN_FILE
from ..security.merchant_pin import KEY_PURPOSE as MERCHANT_PIN_KEY_PURPOSE
from ..security.merchant_pin import LEGACY_FILE as MERCHANT_PIN_LEGACY_FILE
from ..security.merchant_pin import MerchantPin, MerchantPinError, check_new_pin
from ..security.technician import upgrade_keystore
from ..service.config import PROTOCOLS, iso8583_settings
from ..store.audit import AuditLog
from ..store.keys import Keystore
from ..store.registers import FILE as REGISTERS_FILE
from ..store.registers import RegisterStore
from .kiosk import CODE_FILE, KioskCodes, kiosk_url, read_kiosk_code
from .server import LOOPBACK_HOSTS, ApiSettings, PinGuard, allowed_host_names, create_api
from .settings import SHARED_REGISTER
from .webhook_routes import start_webhooks, stop_webhooks

if TYPE_CHECKING:
    from ..service.config import TerminalConfig
    from ..store.keys import Keystore

__all__ = [
    "ACQUIRER_MODES",
    "DEMO_PIN",
    "DEMO_SECRET",
    "ApiServer",
    "DemoStack",
    "SimulatedAcquirerSwitch",
    "loopback_bind",
    "start_demo_stack",
    "start_provisioned_stack",
]

DEMO_SECRET = b"pipos-demo-device-secret-not-for-production"
#: The demo terminal's merchant PIN (printed in `pipos run`'s banner): one the weak-PIN rules
#: accept (terminal.security.pin_policy), so the demo takes the same path as a real terminal.
DEMO_PIN = "4826"


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
        self._app = app
        self._bind = (host, port)
        self._thread: threading.Thread | None = None
        self.url = ""

    def start_background(self) -> None:
        """Start what the API runs besides answering requests: the registers' webhook
        deliveries (terminal.api.webhook_routes)."""
        start_webhooks(self._app)

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
        # The address a browser on this machine uses: a wildcard bind is reached on loopback
        # (a Host of 0.0.0.0 is not one the terminal answers to).
        loopback = "::1" if ":" in host else "127.0.0.1"
        shown = loopback if _unspecified(host) else host
        self.url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        # The kept answers of requests with an Idempotency-Key (opened with the app): closed
        # once no request runs any more.
        keys = getattr(self._app.state, "idempotency", None)
        if keys is not None:
            keys.close()
        registers = getattr(self._app.state, "registers", None)  # terminal.api.pairing
        if registers is not None:
            registers.close()
        stop_webhooks(self._app)


#: What the simulator drawer can make of the demo's own acquirer.
ACQUIRER_MODES: tuple[str, ...] = ("online", "unreachable", "drops")


class SimulatedAcquirerSwitch:
    """The demo's own simulated acquirer, as the simulator drawer switches it (POST
    /api/v1/simulator/acquirer): "online"; "unreachable", the host stops listening
    (connections refused, ECONNREFUSED: the terminal's request never reaches it); "drops",
    the host accepts connections and closes them unanswered.

    "drops" arms the host's "refuse" fault (close before the request is read) rather than
    "drop_after_commit" (process, commit, then cut): the terminal sees the same thing (no
    answer: it reverses and goes offline), but the host has done nothing, so nothing it
    did is lost with the answer. Under drop_after_commit an end of day or an upload during
    the outage would be committed by the host and unknown to the terminal, leaving the
    demo's batches out of step with the bank's, which is a fault of its own and not the
    outage the drawer shows. The terminal is never told the mode: it learns of an outage
    from its own next request or probe, as of a real one."""

    def __init__(self, host: Any) -> None:
        self._host = host
        self._lock = threading.Lock()
        self.mode = "online"

    def __call__(self, mode: str) -> str:
        if mode not in ACQUIRER_MODES:
            raise ConfigurationError(
                f"unknown acquirer mode {mode[:16]!r}: choose one of {', '.join(ACQUIRER_MODES)}"
            )
        from simulator.host import Fault  # the demo's own host: the simulator is installed

        with self._lock:
            faults = self._host.app.faults
            if mode == "unreachable":
                faults.clear()
                self._host.stop_listening()
            else:
                self._host.listen_again()
                faults.clear()
                if mode == "drops":
                    faults.set("/v1/", Fault("refuse"))
            self.mode = mode
            return mode

    def status(self) -> dict[str, Any]:
        """The status field the page's simulator drawer shows."""
        return {"simulator": {"acquirer": self.mode}}


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
        kiosk: KioskCodes | None = None,
    ) -> None:
        self.runtime = runtime
        self.api = api
        self.host = host
        self.token = token
        self.pin = pin
        self.phone = phone
        self.kiosk = kiosk

    def kiosk_url(self, base_url: str | None = None) -> str:
        """The one-time address that opens the checkout page, from the code file as the
        kiosk launcher reads it (`base_url`: another way to the same API, e.g. a proxy)."""
        if self.kiosk is None:
            raise ConfigurationError("this terminal serves no checkout page session")
        return kiosk_url(base_url or self.api.url, read_kiosk_code(self.kiosk.code_path))

    @property
    def checkout(self) -> Any:
        return self.runtime.checkout

    def close(self) -> None:
        # A sale still waiting is cancelled and its final state published while the streams
        # still run; then the streams end, so the server stops with no request still running.
        self.checkout.close()
        self.checkout.events.close()
        self.api.stop()
        if self.kiosk is not None:
            self.kiosk.close()
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
    pin_clock: Callable[[], float] = time.time,
    session_clock: Callable[[], float] = time.time,
    background: bool = True,
    confirm_delay: float = 3.0,
    qr_poll_interval: float = 1.0,
    allowed_hosts: Iterable[str] = (),
    language: str = "en",
    acquirer_protocol: str = "pipos",
) -> DemoStack:
    """Start the simulated acquirer (unless `host_url` is given), the terminal and its API.

    `language` ("en" or "zh"): the demo terminal's `terminal.language` parameter, so its
    page, receipts and server texts speak it; another language is refused before anything
    starts. `acquirer_protocol` "iso8583": the money messages go over ISO 8583 to the
    simulated acquirer's ISO 8583 host (docs/iso8583.md), the terminal registered with it
    and its TMK loaded under the key-injection facility's TEST key; enrolment and
    parameters stay on the pipos protocol. It needs the demo's own simulated acquirer.

    The simulated acquirer and the simulated card field (no `reader_url`) need the simulator
    (the `sim` extra); without it this raises :class:`ConfigurationError` saying what to
    install, before anything is started. `allowed_hosts`: names, besides loopback and
    `bind`, that requests may carry in their Host header (:func:`allowed_host_names`).
    `session_clock`: the wall clock the kiosk page's sessions end by (tests move it).

    `token`: the register's fixed token; None makes a random one on a loopback `bind`
    (:func:`loopback_bind`), and none at all on any other: a register on another machine
    pairs (`pipos registers pair`, terminal.api.pairing) and gets a token of its own, and
    the stack's `token` is then ""."""
    check_new_pin(pin)  # a weak --pin is refused before anything starts
    if language not in LANGUAGES:
        raise ConfigurationError(
            f"unknown language {language[:16]!r}: choose one of {', '.join(LANGUAGES)}"
        )
    if acquirer_protocol not in PROTOCOLS:
        raise ConfigurationError(
            f"unknown acquirer protocol {acquirer_protocol[:16]!r}: choose one of "
            f"{', '.join(PROTOCOLS)}"
        )
    if acquirer_protocol == "iso8583" and host_url is not None:
        raise ConfigurationError(
            "--acquirer-protocol iso8583 runs the demo on its own simulated acquirer (its ISO "
            "8583 host); with --acquirer URL, provision the terminal for that acquirer's ISO "
            "8583 link instead (pipos provision --acquirer-protocol iso8583)"
        )
    chosen: Language = "zh" if language == "zh" else "en"
    base = default_params()
    # The same parameter a provisioned terminal gets from its acquirer's download.
    params = replace(base, terminal=replace(base.terminal, language=chosen))
    hosts = _allowed_hosts(bind, allowed_hosts)
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
    kiosk = KioskCodes(directory / "terminal" / CODE_FILE, wall_clock=session_clock)
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
    pinned: dict[str, Any] = {}
    if host is not None:
        # The demo's own simulated acquirer, in this process: its key is known, so the
        # enrolment answer (and every answer after) is checked against it, never learnt.
        pinned["host_public_key"] = host.app.host.host_public_key
    iso8583 = None
    if acquirer_protocol == "iso8583":
        assert host is not None
        iso8583 = _demo_iso8583(host)
    runtime = start_terminal(
        directory / "terminal",
        iso8583=iso8583,
        secret=secret,
        host_url=host_url,
        activation_code=activation_code,
        params=params,
        reader_url=reader_url,
        scanner_url=scanner_url,
        # The acquirer is on loopback here: poll code payments briskly.
        qr_params=replace(
            QrPaymentParams.from_terminal_params(params),
            poll_interval=qr_poll_interval,
        ),
        client_options={
            "read_timeout": 10.0,
            "retries": 2,
            "max_reversal_attempts": 3,
            "backoff": (0.05, 0.5),
            **pinned,
        },
        **kwargs,
    )
    if token is None and loopback_bind(bind):
        token = secrets.token_urlsafe(24)
    phone: SimulatedPhone | None = None
    if runtime.scanner is not None and host_url.startswith(
        ("http://127.0.0.1", "http://localhost")
    ):
        # The customer's simulated phone: its codes are registered with the simulated
        # acquirer, so the page's simulator panel can pay with them.
        phone = SimulatedPhone(host_url, runtime.scanner, confirm_delay=confirm_delay)
    switch = None if host is None else SimulatedAcquirerSwitch(host)
    if switch is not None:
        runtime.checkout.extra_status = switch.status
    settings = ApiSettings(
        tokens={token: SHARED_REGISTER} if token else {},
        pin_guard=PinGuard(
            _demo_merchant_pin(directory / "terminal", runtime, pin, pin_clock, scrypt_n)
        ),
        registers=RegisterStore(directory / "terminal" / REGISTERS_FILE),
        acquirer_switch=switch,
        kiosk=kiosk,
        allowed_hosts=hosts,
        printer_url=printer_url,
        field=runtime.field,
        scanner=runtime.scanner,
        phone=phone,
        audit=AuditLog(directory / "terminal" / "audit.log"),
    )
    api = ApiServer(create_api(runtime.checkout, settings), bind, port)
    api.start()
    kiosk.start()
    if background:
        runtime.start_background()
        api.start_background()
    return DemoStack(runtime, api, host, token or "", pin, phone, kiosk)


def _demo_iso8583(host: Any) -> Callable[[Keystore], Iso8583Settings]:
    """The demo's link to its own ISO 8583 host: started beside the JSON host, the
    terminal registered once it is enrolled, its TMK loaded under the facility's TEST key
    the first time (kept in the keystore after: a restart keeps its session keys)."""
    address, port = host.start_iso8583()

    def settings(keystore: Keystore) -> Iso8583Settings:
        if keystore.terminal_id is None:
            raise ConfigurationError("the demo terminal is not enrolled: no ISO 8583 identity")
        registered = host.register_iso8583(keystore.terminal_id)
        if keystore.secret(SECRET_TMK) is None:
            load_terminal_master_key(
                keystore, host.kif_test_kbpk(), str(registered["tmk_key_block"])
            )
        return Iso8583Settings(
            host=address,
            port=port,
            terminal_id=str(registered["tid"]),
            merchant_id=str(registered["mid"]),
            # On loopback: an answer comes at once or not at all.
            options={"answer_timeout": 10.0, "retries": 2, "backoff": (0.05, 0.5)},
        )

    return settings


def loopback_bind(bind: str) -> bool:
    """Whether the API bound to `bind` is reached from this machine only, by the loopback
    names (127.0.0.1, localhost, ::1): there a register token may be printed for a register
    on the same machine. Any other address (0.0.0.0, the shop network's, even 127.0.0.2)
    counts as reachable by others, whose registers pair instead."""
    return bind.strip().lower().removeprefix("[").removesuffix("]") in LOOPBACK_HOSTS


def _allowed_hosts(bind: str, names: Iterable[str]) -> frozenset[str]:
    """The operator's names, and the address the API is bound to unless it is every address
    (a register that reaches a terminal by its own IP address is no rebinding)."""
    extra = [*names] + ([] if _unspecified(bind) else [bind])
    return allowed_host_names(tuple(extra))


def _unspecified(address: str) -> bool:
    """Whether `address` means every address of the machine ("", 0.0.0.0, ::)."""
    try:
        return not address or ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False  # a name


# --- the commands --------------------------------------------------------------------------


def _demo_merchant_pin(
    directory: Path,
    runtime: TerminalRuntime,
    pin: str,
    clock: Callable[[], float],
    scrypt_n: int | None,
) -> MerchantPin:
    """The demo terminal's merchant PIN, set at every start (it may be another `--pin` than
    last time) the way `pipos merchant-pin set` sets a real one, except that the callers'
    lock-outs are kept: restarting the demo does not reset them either."""
    credential = MerchantPin(
        directory / MERCHANT_PIN_FILE,
        AuditLog(directory / "audit.log"),
        device_key=runtime.keystore.data_key(MERCHANT_PIN_KEY_PURPOSE),
        clock=clock,
        scrypt_n=scrypt_n or MERCHANT_PIN_SCRYPT_N,
    )
    credential.set(pin, actor="demo", keep_lockout=True)
    return credential


def _provisioned_merchant_pin(
    config_path: Path,
    config: TerminalConfig,
    keystore: Keystore,
    pin_file: Path | None,
    clock: Callable[[], float],
) -> MerchantPin:
    """The merchant PIN `pipos merchant-pin set` stored (hashed, bound to this keystore),
    checked before anything starts. A clear-text PIN file of an earlier version is refused."""
    legacy = config.data_dir / MERCHANT_PIN_LEGACY_FILE
    set_it = f"set it with `pipos merchant-pin set --config {config_path}`"
    if legacy.exists():
        raise ConfigurationError(
            f"{legacy} holds the merchant PIN in clear, which this version refuses; {set_it} "
            "(it stores the PIN hashed and removes that file)"
        )
    credential = MerchantPin(
        pin_file or config.data_dir / MERCHANT_PIN_FILE,
        AuditLog(config.audit_path),
        device_key=keystore.data_key(MERCHANT_PIN_KEY_PURPOSE),
        clock=clock,
    )
    try:
        credential.read()
    except MerchantPinError as exc:
        raise ConfigurationError(str(exc)) from exc
    return credential


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
    pin_clock: Callable[[], float] = time.time,
    allowed_hosts: Iterable[str] = (),
) -> tuple[DemoStack, Path, bool]:
    """The terminal as `pipos provision` configured it: its keys, its verified parameters,
    its acquirer, its reader and scanner. No simulator is started. The configuration file
    has no table for the API: the names a register may reach it by are `allowed_hosts`
    (`pipos run --config FILE --allowed-host NAME`)."""
    from ..service.config import load_config
    from ..service.provision import (
        load_installed_parameters,
        refuse_if_exported,
        tls_from_config,
    )
    from ..store.keys import Keystore

    hosts = _allowed_hosts(bind, allowed_hosts)
    config = load_config(config_path)
    if not config.provisioned:
        raise ConfigurationError(
            f"{config_path}: the terminal is not provisioned; run pipos provision first"
        )
    # Its queue went to a replacement (pipos unit export): the replacement sends it.
    refuse_if_exported(config, config_path)
    secret = config.secret_provider().load()
    keystore = Keystore.open(config.data_dir, secret)
    # A format-1 keystore: its identity block MAC'd from this start on (its technician
    # credential first, which a format-2 keystore no longer accepts in the old format).
    upgrade_keystore(keystore, config.technician_path, AuditLog(config.audit_path))
    if keystore.host_public_key is None or keystore.terminal_id is None:
        raise ConfigurationError(f"{config.data_dir}: the keystore holds no enrolment")
    installed = load_installed_parameters(
        config.params_path,
        host_public_key=keystore.host_public_key,
        terminal_id=keystore.terminal_id,
        serial=keystore.serial,
        today=datetime.now(UTC).date(),
    )
    merchant_pin = _provisioned_merchant_pin(config_path, config, keystore, pin_file, pin_clock)
    # On loopback the one register beside the terminal gets the shared token file, as
    # before; on any other bind a register pairs (terminal.api.pairing) and gets a token of
    # its own, and the shared one exists only when the technician names its file: a token
    # printed on the console of a terminal on the shop's network would be anyone's.
    token_path = token_file or config.data_dir / "register-token"
    token, created = "", False
    if token_file is not None or loopback_bind(bind):
        token, created = _register_token(token_path)
    kiosk = KioskCodes(config.data_dir / CODE_FILE)
    runtime = start_terminal(
        config.data_dir,
        iso8583=iso8583_settings(config),
        secret=secret,
        host_url=config.host_url,
        params=installed.params,
        reader_url=config.reader_url or "pcsc:",
        scanner_url=config.scanner_url or "",
        qr_params=QrPaymentParams.from_terminal_params(installed.params),
        client_options={"tls": tls_from_config(config)},
    )
    runtime.checkout.tips = config.tip_settings  # the file's checkout.tips (off without it)
    settings = ApiSettings(
        tokens={token: SHARED_REGISTER} if token else {},
        pin_guard=PinGuard(merchant_pin),
        registers=RegisterStore(config.data_dir / REGISTERS_FILE),
        kiosk=kiosk,
        allowed_hosts=hosts,
        printer_url=printer_url,
        audit=AuditLog(config.audit_path),
    )
    api = ApiServer(create_api(runtime.checkout, settings), bind, port)
    api.start()
    kiosk.start()
    runtime.start_background()
    api.start_background()
    # The provisioned terminal never knows its merchant PIN, only the PIN's hash.
    return DemoStack(runtime, api, None, token, "", kiosk=kiosk), token_path, created
