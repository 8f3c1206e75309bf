"""`pipos run` (the terminal with its API and checkout page) and `pipos demo` (a scripted tour).

With no options, `pipos run` starts everything on embedded defaults: the simulated acquirer
on 127.0.0.1, a simulated card field (cards are tapped from the page), a demo terminal that
enrols itself with the simulated acquirer, the local API and the checkout page; it prints the
page's address, the register's API token and the merchant PIN.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from .api import ApiSettings, PinGuard, create_api
from .currency import format_amount
from .runtime import TerminalRuntime, start_terminal

__all__ = ["ApiServer", "DemoStack", "register", "start_demo_stack"]

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
    ) -> None:
        self.runtime = runtime
        self.api = api
        self.host = host
        self.token = token
        self.pin = pin

    @property
    def checkout(self) -> Any:
        return self.runtime.checkout

    def close(self) -> None:
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
    token: str | None = None,
    pin: str = DEMO_PIN,
    secret: bytes = DEMO_SECRET,
    activation_code: str | Callable[[], str] | None = None,
    scrypt_n: int | None = None,
    pin_clock: Callable[[], float] = time.monotonic,
    background: bool = True,
) -> DemoStack:
    """Start the simulated acquirer (unless `host_url` is given), the terminal and its API."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    host = None
    if host_url is None:
        from simulator.host import HostServer  # the simulator only on the demo path

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
        client_options={
            "read_timeout": 10.0,
            "retries": 2,
            "max_reversal_attempts": 3,
            "backoff": (0.05, 0.5),
        },
        **kwargs,
    )
    token = token or secrets.token_urlsafe(24)
    settings = ApiSettings(
        tokens={token: "register-1"},
        pin_guard=PinGuard(pin, salt=secrets.token_bytes(16), clock=pin_clock),
        page_token=secrets.token_urlsafe(24),
        printer_url=printer_url,
        field=runtime.field,
    )
    api = ApiServer(create_api(runtime.checkout, settings), bind, port)
    api.start()
    if background:
        runtime.start_background()
    return DemoStack(runtime, api, host, token, pin)


# --- the commands --------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the terminal: API for the cash register and the checkout page",
        description="Start the terminal. With no options: simulated acquirer on 127.0.0.1, "
        "simulated card reader (tap cards from the page), a demo terminal enrolled "
        "automatically, the API and the checkout page on http://127.0.0.1:8700/.",
    )
    run.add_argument("--state-dir", help="terminal state (default: ~/.local/state/pipos/run)")
    run.add_argument("--bind", default="127.0.0.1", help="API address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8700, help="API port (default 8700)")
    run.add_argument("--acquirer", help="acquirer URL (default: start the simulated one)")
    run.add_argument("--activation-code", help="enrolment code for --acquirer")
    run.add_argument("--reader", help="card reader URL, e.g. pcsc: (default: simulated field)")
    run.add_argument("--printer", help="receipt printer: file:PATH, serial:DEV, usb:VID:PID")
    run.add_argument("--pin", default=DEMO_PIN, help="merchant PIN for refunds and voids")
    run.add_argument("--token", help="the register's API token (default: random, printed)")
    run.set_defaults(handler=_run_command)

    demo = subparsers.add_parser(
        "demo",
        help="a scripted tour: online sale, offline sale, sync, refund, totals",
        description="Start a throw-away simulated acquirer and terminal, take payments with "
        "simulated cards through the local API, and print what happened.",
    )
    demo.set_defaults(handler=_demo_command)


def _run_command(args: argparse.Namespace) -> int:
    state = Path(args.state_dir or Path.home() / ".local/state/pipos/run")
    stack = start_demo_stack(
        state,
        host_url=args.acquirer,
        bind=args.bind,
        port=args.port,
        reader_url=args.reader,
        printer_url=args.printer,
        token=args.token,
        pin=args.pin,
        activation_code=args.activation_code,
    )
    print(f"pipos terminal {stack.checkout.terminal_id} is running")
    print(f"  checkout page:  {stack.api.url}/")
    print(f"  API (OpenAPI):  {stack.api.url}/docs")
    print(f"  register token: {stack.token}")
    print(f"  merchant PIN:   {stack.pin}")
    if stack.host is not None:
        print(f"  simulated acquirer: {stack.host.url}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.close()
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    import httpx

    with tempfile.TemporaryDirectory(prefix="pipos-demo-") as tmp:
        stack = start_demo_stack(tmp, scrypt_n=2**12, background=False)
        api = httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        )
        checkout = stack.checkout
        out = sys.stdout

        def say(text: str) -> None:
            print(text, file=out, flush=True)

        def sale(amount: int, card: str) -> dict[str, Any]:
            txn = api.post("/api/v1/sales", json={"amount": amount, "currency": 978}).json()
            presented = api.post("/api/v1/simulator/present", json={"card": card})
            if presented.status_code != 200:
                raise RuntimeError(presented.text)
            record = checkout.wait(txn["id"], timeout=30)
            return dict(checkout.view(record))

        try:
            say(
                f"Terminal {checkout.terminal_id} enrolled with the simulated acquirer "
                f"at {stack.host.url}"
            )
            say(f"API and checkout page on {stack.api.url}/")
            say("\n1. Online sale of 12.34 EUR with a simulated Visa card")
            first = sale(1234, "visa")
            say(
                f"   {first['state']}: {first['message']['merchant']} "
                f"(card {first['masked_pan']}, auth code {first['auth_code']})"
            )
            say("\n2. The acquirer goes down; sale of 8.00 EUR with a simulated Mastercard")
            _host_down(stack)
            second = sale(800, "mastercard")
            say(f"   {second['state']}: {second['message']['merchant']}")
            queue = api.get("/api/v1/queue").json()
            say(
                f"   offline queue: {queue['count']} payment(s) waiting, "
                f"{', '.join(format_amount(v, int(k)) for k, v in queue['amounts'].items())}"
            )
            say("\n3. The acquirer is back; the queue is sent")
            _host_up(stack)
            synced = api.post("/api/v1/queue/sync").json()
            say(
                f"   sent: {synced['sync'].get('accepted', 0)} accepted, "
                f"{synced['queue']['count']} still waiting"
            )
            say("\n4. Refund of 2.34 EUR of the first sale (merchant PIN)")
            refund = api.post(
                f"/api/v1/transactions/{first['id']}/refund",
                json={"pin": stack.pin, "amount": 234},
            ).json()
            say(f"   {refund['state']}: {refund['message']['merchant']}")
            say("\n5. A declined payment (the bank says: insufficient funds)")
            third = sale(1051, "visa")
            say(f"   {third['state']}: {third['message']['merchant']}")
            say("\n6. End-of-day totals")
            for line in api.get("/api/v1/totals").json()["totals"]:
                say(
                    f"   {line['brand']:<14} sales {line['sales_count']} "
                    f"{format_amount(line['sales_amount'], line['currency'])}, refunds "
                    f"{line['refunds_count']} "
                    f"{format_amount(line['refunds_amount'], line['currency'])}, net "
                    f"{line['net_text']}"
                )
            report = api.post("/api/v1/end-of-day").json()
            say(
                f"   batch {report['batch_id']} closed with the acquirer: "
                f"{report['host_transactions']} transactions"
            )
            say("\nCustomer receipt of the first sale:\n")
            say(api.get(f"/api/v1/transactions/{first['id']}/receipt").text)
        finally:
            api.close()
            stack.close()
    return 0


def _host_down(stack: DemoStack) -> None:
    """Stop the simulated acquirer: connections to it are refused (nothing processed)."""
    stack.host.stop()


def _host_up(stack: DemoStack) -> None:
    """Start the simulated acquirer again on the same address with the same ledger."""
    from urllib.parse import urlparse

    from simulator.host import HostServer

    port = urlparse(stack.host.url).port or 0
    stack.host = HostServer(stack.host.db_path, port=port)
    stack.host.start()
