"""`pipos run` (the terminal with its API and checkout page) and `pipos demo` (a scripted tour).

With no options, `pipos run` starts everything on embedded defaults: the simulated acquirer
on 127.0.0.1, a simulated card field and code scanner (cards are tapped and phone codes
scanned from the page's simulator panel), a demo terminal that
enrols itself with the simulated acquirer, the local API and the checkout page; it prints the
page's address, a one-time kiosk link that opens the page in a browser on this machine, the
register's API token and the merchant PIN. The simulated parts come from
the simulator (pipos-sim, the `sim` extra `make run` installs); without it the command says
what to install. `pipos run --config FILE` (a provisioned terminal) needs no simulator; it
prints how to open the kiosk (`pipos kiosk --config FILE`), never the one-time code: under
systemd its output is the journal, which is not the 0600 file the code is kept in.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..domain.currency import format_amount
from ..domain.errors import ConfigurationError
from ..domain.messages import LANGUAGES

if TYPE_CHECKING:
    from ..api.stack import DemoStack


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the terminal: API for the cash register and the checkout page",
        description="Start the terminal. With no options: simulated acquirer on 127.0.0.1, "
        "simulated card reader and code scanner (tap cards and scan phone codes from the "
        "page), a demo terminal enrolled "
        "automatically, the API and the checkout page on http://127.0.0.1:8700/. The "
        "simulated parts need the simulator (the sim extra, which make run installs); a "
        "provisioned terminal runs with --config.",
    )
    run.add_argument("--state-dir", help="terminal state (default: ~/.local/state/pipos/run)")
    run.add_argument("--bind", default="127.0.0.1", help="API address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8700, help="API port (default 8700)")
    run.add_argument("--acquirer", help="acquirer URL (default: start the simulated one)")
    run.add_argument("--activation-code", help="enrolment code for --acquirer")
    run.add_argument("--reader", help="card reader URL, e.g. pcsc: (default: simulated field)")
    run.add_argument(
        "--scanner",
        help="code scanner URL, e.g. serial:/dev/ttyACM0?suffix=CR (default: simulated "
        "scanner with the simulated reader; none with --reader)",
    )
    run.add_argument("--printer", help="receipt printer: file:PATH, serial:DEV, usb:VID:PID")
    run.add_argument(
        "--pin",
        help="demo terminal: merchant PIN for refunds and voids (default: the demo PIN, "
        "printed at start; sequences, repeats and common PINs are refused)",
    )
    run.add_argument("--token", help="the register's API token (default: random, printed)")
    run.add_argument(
        "--language",
        choices=LANGUAGES,
        help="demo terminal: the language of its page, receipts and texts, "
        f"one of {', '.join(LANGUAGES)} (default en); a provisioned terminal speaks its "
        "acquirer's parameter terminal.language",
    )
    run.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name (or IP address) registers on other machines use to reach this terminal; "
        "requests naming anything else than it, loopback (127.0.0.1, localhost, [::1]) or the "
        "--bind address in their Host header are refused (repeatable)",
    )
    run.add_argument(
        "--config",
        help="run the provisioned terminal of this configuration (pipos provision wrote it; "
        "e.g. /etc/pipos/terminal.toml): its keys, parameters, acquirer and devices",
    )
    run.add_argument(
        "--pin-file",
        help="with --config: the merchant PIN credential `pipos merchant-pin set` wrote "
        "(default DATA_DIR/merchant-pin.json)",
    )
    run.add_argument(
        "--token-file",
        help="with --config: the register token file (default DATA_DIR/register-token, made "
        "on the first start)",
    )
    run.set_defaults(handler=_run_command)

    demo = subparsers.add_parser(
        "demo",
        help="a scripted tour: online sale, offline sale, sync, refund, QR sales, totals",
        description="Start a throw-away simulated acquirer and terminal, take payments with "
        "simulated cards through the local API, and print what happened.",
    )
    demo.set_defaults(handler=_demo_command)


def _run_command(args: argparse.Namespace) -> int:
    from ..api.stack import DEMO_PIN, start_demo_stack, start_provisioned_stack
    from .service import install_sigterm_handler

    if args.config and args.language:
        # Not silently ignored: the merchant would believe the terminal now speaks it.
        raise ConfigurationError(
            "--language is for the demo terminal: a provisioned terminal speaks its "
            "acquirer's parameter terminal.language (pipos params check FILE shows it)"
        )
    install_sigterm_handler()  # systemctl stop: close the checkout as Ctrl-C does
    if args.config:
        stack, token_path, created = start_provisioned_stack(
            Path(args.config),
            bind=args.bind,
            port=args.port,
            printer_url=args.printer,
            pin_file=Path(args.pin_file) if args.pin_file else None,
            token_file=Path(args.token_file) if args.token_file else None,
            allowed_hosts=args.allowed_host,
        )
        banner = [
            f"pipos terminal {stack.checkout.terminal_id} is running",
            f"  checkout page:  {stack.api.url}/",
            *_provisioned_kiosk_lines(stack, f"pipos kiosk --config {args.config}"),
            f"  API (OpenAPI):  {stack.api.url}/docs",
            f"  register token: {stack.token} (kept in {token_path})"
            if created
            else f"  register token: in {token_path}",
        ]
        return _serve_until_stopped(stack, banner)
    state = Path(args.state_dir or Path.home() / ".local/state/pipos/run")
    stack = start_demo_stack(
        state,
        host_url=args.acquirer,
        bind=args.bind,
        port=args.port,
        reader_url=args.reader,
        scanner_url=args.scanner,
        printer_url=args.printer,
        token=args.token,
        pin=args.pin or DEMO_PIN,
        activation_code=args.activation_code,
        allowed_hosts=args.allowed_host,
        language=args.language or "en",
    )
    kiosk = "pipos kiosk" + (f" --state-dir {args.state_dir}" if args.state_dir else "")
    banner = [
        f"pipos terminal {stack.checkout.terminal_id} is running",
        f"  checkout page:  {stack.api.url}/",
        *_kiosk_lines(stack, kiosk),
        f"  API (OpenAPI):  {stack.api.url}/docs",
        f"  register token: {stack.token}",
        f"  merchant PIN:   {stack.pin}",
    ]
    if stack.host is not None:
        banner.append(f"  simulated acquirer: {stack.host.url}")
    if stack.phone is not None:
        banner.append("  simulated phone and scanner: show codes from the page's simulator panel")
    return _serve_until_stopped(stack, banner)


def _kiosk_command(stack: DemoStack, command: str) -> str:
    if stack.api.url != "http://127.0.0.1:8700":
        command += f" --url {stack.api.url}"
    return command


def _kiosk_lines(stack: DemoStack, command: str) -> list[str]:
    """The demo banner's way into the checkout page: a one-time link (the page holds no
    token; a browser earns its session with the code, which then stops working). The demo
    prints to the developer's own terminal."""
    command = _kiosk_command(stack, command)
    return [
        f"  open it once:   {stack.kiosk_url()}",
        f"                  (a one-time link; a new one: {command} --print-url)",
    ]


def _provisioned_kiosk_lines(stack: DemoStack, command: str) -> list[str]:
    """The provisioned banner's way into the checkout page: the command that opens it, not
    the code. The banner goes to the journal under systemd (`journalctl -u pipos`), which
    other users and log shippers may read; the code stays in its 0600 file."""
    command = _kiosk_command(stack, command)
    return [
        f"  open it:        {command}",
        "                  (as the terminal's user; it reads the one-time code from its file)",
    ]


def _serve_until_stopped(stack: DemoStack, banner: list[str]) -> int:
    # Ctrl-C (or SIGTERM) at any instant from here on closes the terminal, even while the
    # banner is still being printed.
    try:
        print("\n".join([*banner, "Press Ctrl-C to stop."]), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.close()
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    import httpx

    from ..api.stack import start_demo_stack

    with tempfile.TemporaryDirectory(prefix="pipos-demo-") as tmp:
        stack = start_demo_stack(
            tmp, scrypt_n=2**12, background=False, confirm_delay=1.0, qr_poll_interval=0.25
        )
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
            _qr_steps(stack, api, say)
            say("\n7. End-of-day totals, then the end of day (merchant PIN)")
            for line in api.get("/api/v1/totals").json()["totals"]:
                say(
                    f"   {line['brand']:<14} sales {line['sales_count']} "
                    f"{format_amount(line['sales_amount'], line['currency'])}, refunds "
                    f"{line['refunds_count']} "
                    f"{format_amount(line['refunds_amount'], line['currency'])}, net "
                    f"{line['net_text']}"
                )
            report = api.post("/api/v1/end-of-day", json={"pin": stack.pin}).json()
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


def _qr_steps(stack: DemoStack, api: Any, say: Callable[[str], None]) -> None:
    """Step 6 of the demo: the customer pays with a phone (scanned and shown codes)."""
    checkout = stack.checkout

    def code_sale(amount: int, code: str) -> dict[str, Any]:
        txn = api.post("/api/v1/sales", json={"amount": amount, "currency": 978}).json()
        shown = api.post("/api/v1/simulator/phone", json={"code": code})
        if shown.status_code != 200:
            raise RuntimeError(shown.text)
        return dict(checkout.view(checkout.wait(txn["id"], timeout=60)))

    say("\n6. Phone payments: QR codes")
    say("   a) The customer shows an Alipay payment code; the scanner reads it (5.60 EUR)")
    first = code_sale(560, "alipay")
    say(f"   {first['state']}: {first['message']['merchant']}")
    say(f"   paid with {first['brand']}, code {first['masked_pan']}")
    say("   b) A WeChat Pay code; the customer confirms on the phone (7.20 EUR)")
    second = code_sale(720, "confirm")
    say(f"   {second['state']}: {second['message']['merchant']}")
    say("   c) The customer shows a screenshot of that code again")
    third = code_sale(720, "reused")
    say(f"   {third['state']}: {third['message']['merchant']}")
    say("   d) The terminal shows its own code (EMVCo merchant-presented); the phone pays it")
    txn = api.post(
        "/api/v1/sales", json={"amount": 990, "currency": 978, "method": "merchant_qr"}
    ).json()
    payload = checkout.merchant_qr_payload(checkout.get(txn["id"]))
    say(f"   code on the screen: {payload}")
    paid = api.post("/api/v1/simulator/pay-merchant-qr", json={"transaction_id": txn["id"]})
    if paid.status_code != 200:
        raise RuntimeError(paid.text)
    fourth = dict(checkout.view(checkout.wait(txn["id"], timeout=60)))
    say(f"   {fourth['state']}: {fourth['message']['merchant']}")


def _host_down(stack: DemoStack) -> None:
    """The simulated acquirer stops listening: connections to it are refused (nothing
    processed), as a host that is down."""
    stack.host.stop_listening()


def _host_up(stack: DemoStack) -> None:
    """The simulated acquirer listens again on the same address, with the same ledger."""
    stack.host.listen_again()
