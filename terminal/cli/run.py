"""`pipos run` (the terminal with its API and checkout page) and `pipos demo` (a scripted tour).

With no options, `pipos run` starts everything on embedded defaults: the simulated acquirer
on 127.0.0.1, a simulated card field and code scanner (cards are tapped and phone codes
scanned from the page's simulator panel), a demo terminal that
enrols itself with the simulated acquirer, the local API and the checkout page; it prints the
page's address, a one-time kiosk link that opens the page in a browser on this machine, the
register's API token and the merchant PIN. On a bind other than loopback (`--bind
0.0.0.0`) without `--token` it prints no token, only how registers pair (`pipos registers
pair`, docs/api.md "Pairing"): anyone on the network could read a printed one. The
simulated parts come from
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..domain.currency import format_amount
from ..domain.errors import ConfigurationError
from ..domain.messages import LANGUAGES
from ..domain.tips import TipSettings

if TYPE_CHECKING:
    from ..api.stack import DemoStack


def _tip_presets(text: str) -> TipSettings:
    """--tips as argparse reads it: a bad preset is a usage error (exit 2, its reason)."""
    try:
        return TipSettings.parse(text, source="--tips")
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--tips: ")) from exc


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
    run.add_argument(
        "--token",
        help="the register's API token (default: random and printed on a loopback --bind; "
        "none on any other, where registers pair: pipos registers pair)",
    )
    run.add_argument(
        "--acquirer-protocol",
        choices=("pipos", "iso8583"),
        help="demo terminal: how payments reach its simulated acquirer: pipos (the signed "
        "pipos protocol, default) or iso8583 (ISO 8583 over TCP to the simulated ISO 8583 "
        "host, docs/iso8583.md); a provisioned terminal uses its configuration's "
        "acquirer.protocol",
    )
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
        "on the first start, on a loopback --bind only; on any other bind registers pair "
        "and a shared token exists only when this option names its file)",
    )
    run.add_argument(
        "--ready-file",
        metavar="PATH",
        help="once the API answers, write PATH (JSON: url, terminal_id, acquirer_url, pid; "
        "never the token) for a script or CI job to wait on; removed when the terminal stops",
    )
    run.add_argument(
        "--tips",
        metavar="PERCENTS",
        type=_tip_presets,
        help="tip entry on the checkout page (off by default): presets in percent, e.g. "
        "10,15,20, and a typed amount; with --config it overrides the file's checkout.tips",
    )
    run.set_defaults(handler=_run_command)

    demo = subparsers.add_parser(
        "demo",
        help="a scripted tour: online sale, offline sale, sync, refund, QR sales, totals",
        description="Start a throw-away simulated acquirer and terminal, take payments with "
        "simulated cards through the local API, and print what happened.",
    )
    demo.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per step on standard output (JSON lines: step, name, title and "
        "what the step showed), for scripts",
    )
    demo.set_defaults(handler=_demo_command)


def _run_command(args: argparse.Namespace) -> int:
    from ..api.stack import DEMO_PIN, loopback_bind, start_demo_stack, start_provisioned_stack
    from .service import install_sigterm_handler

    if args.config and args.acquirer_protocol:
        raise ConfigurationError(
            "--acquirer-protocol is for the demo terminal: a provisioned terminal uses its "
            "configuration's acquirer.protocol (pipos provision --acquirer-protocol)"
        )
    if args.config and args.language:
        # Not silently ignored: the merchant would believe the terminal now speaks it.
        raise ConfigurationError(
            "--language is for the demo terminal: a provisioned terminal speaks its "
            "acquirer's parameter terminal.language (pipos params check FILE shows it)"
        )
    install_sigterm_handler()  # systemctl stop: close the checkout as Ctrl-C does
    if args.ready_file:
        # A file left by a run that was killed must not announce this one before it is up.
        _remove_stale_ready_file(Path(args.ready_file))
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
        if args.tips is not None:
            stack.checkout.tips = args.tips
        banner = [
            f"pipos terminal {stack.checkout.terminal_id} is running",
            f"  checkout page:  {stack.api.url}/",
            *_provisioned_kiosk_lines(stack, f"pipos kiosk --config {args.config}"),
            f"  API (OpenAPI):  {stack.api.url}/docs",
        ]
        if not stack.token and token_path.exists():
            # A register that used the file before the terminal moved off loopback: said
            # here, so its 401 has an explanation on the terminal's console.
            banner.append(
                f"  register token: {token_path} is not accepted on --bind {args.bind}: pair "
                f"the register, or pass --token-file {token_path} to keep using it"
            )
        if stack.token:
            # Printed once, when made, and only where the console is the one machine
            # that can reach the API; beyond loopback the technician reads the file.
            shown = created and loopback_bind(args.bind)
            banner.append(
                f"  register token: {stack.token} (kept in {token_path})"
                if shown
                else f"  register token: in {token_path}"
            )
        if not loopback_bind(args.bind):
            banner += _pairing_lines(f"pipos registers pair --config {args.config}")
        return _serve_until_stopped(stack, banner, args.ready_file)
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
        acquirer_protocol=args.acquirer_protocol or "pipos",
    )
    if args.tips is not None:
        stack.checkout.tips = args.tips
    kiosk = "pipos kiosk" + (f" --state-dir {args.state_dir}" if args.state_dir else "")
    banner = [
        f"pipos terminal {stack.checkout.terminal_id} is running",
        f"  checkout page:  {stack.api.url}/",
        *_kiosk_lines(stack, kiosk),
        f"  API (OpenAPI):  {stack.api.url}/docs",
        *(
            [f"  register token: {stack.token}"]
            if stack.token
            else _pairing_lines(kiosk.replace("pipos kiosk", "pipos registers pair", 1))
        ),
        f"  merchant PIN:   {stack.pin}",
    ]
    if stack.host is not None:
        banner.append(f"  simulated acquirer: {stack.host.url}")
        if stack.host.iso8583 is not None:
            iso_host, iso_port = stack.host.iso8583.address
            banner.append(f"  ISO 8583 host:  {iso_host}:{iso_port} (payments go over it)")
    if stack.phone is not None:
        banner.append("  simulated phone and scanner: show codes from the page's simulator panel")
    return _serve_until_stopped(stack, banner, args.ready_file)


def _pairing_lines(command: str) -> list[str]:
    """How a register on another machine gets its token: the API is reachable beyond this
    machine, so no token is printed for anyone who reads the banner (docs/api.md,
    "Pairing")."""
    return [
        f"  registers:      pair each one with a one-time code: {command}",
        '                  (then POST /api/v1/pairing {"code", "name"} from the register)',
    ]


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


def _serve_until_stopped(stack: DemoStack, banner: list[str], ready_file: str | None) -> int:
    # Ctrl-C (or SIGTERM) at any instant from here on closes the terminal, even while the
    # banner is still being printed.
    ready = Path(ready_file) if ready_file else None
    try:
        print("\n".join([*banner, "Press Ctrl-C to stop."]), flush=True)
        if ready is not None:
            _write_ready_file(ready, stack)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        # Gone before the terminal is: a job that waits on the file never sees it while the
        # API no longer answers (nor left over for the next run to mistake for its own).
        if ready is not None:
            ready.unlink(missing_ok=True)
        stack.close()
    return 0


def _remove_stale_ready_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"--ready-file {path}: cannot remove the old one ({exc.strerror or exc})"
        ) from exc


def _write_ready_file(path: Path, stack: DemoStack) -> None:
    """`--ready-file`: the API is up (start_*_stack returned once it listened). Written to
    a temporary name and renamed, so a waiter sees either no file or all of it; the
    register token stays out of it (the caller chose it, or reads it from the banner or the
    token file)."""
    import json
    import os

    host = getattr(stack, "host", None)
    document = {
        "url": stack.api.url,
        "terminal_id": stack.checkout.terminal_id,
        "acquirer_url": getattr(host, "url", None),
        "pid": os.getpid(),
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(document) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigurationError(
            f"--ready-file {path}: cannot write it ({exc.strerror or exc})"
        ) from exc


class _DemoReport:
    """What `pipos demo` prints: each step's heading and lines for a person, or with --json
    one JSON object per step (JSON lines: a script reads each step as it ends)."""

    def __init__(self, out: Any, *, as_json: bool) -> None:
        self._out = out
        self._json = as_json
        self._step: dict[str, Any] | None = None

    def step(self, number: str, name: str, title: str, heading: str | None = None) -> None:
        """A new step; `heading` is its text (default: a blank line, then "N. title"; an
        empty one prints nothing)."""
        self._flush()
        self._step = {"step": number, "name": name, "title": title}
        text = f"\n{number}. {title}" if heading is None else heading
        if not self._json and text:
            self._print(text)

    def line(self, text: str, **fields: Any) -> None:
        """A line of the step for a person; its `fields` for a script."""
        if self._json:
            assert self._step is not None, "a line before the first step"
            self._step.update(fields)
        else:
            self._print(text)

    def done(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._json and self._step is not None:
            import json

            self._print(json.dumps(self._step, ensure_ascii=False, sort_keys=False))
        self._step = None

    def _print(self, text: str) -> None:
        print(text, file=self._out, flush=True)


def _payment_fields(txn: dict[str, Any]) -> dict[str, Any]:
    """A transaction's outcome as the demo's JSON lines carry it (masked card, never more)."""
    return {
        "transaction_id": txn.get("id"),
        "state": txn.get("state"),
        "amount": txn.get("amount"),
        "currency": txn.get("currency"),
        "message": (txn.get("message") or {}).get("merchant"),
    }


def _demo_command(args: argparse.Namespace) -> int:
    import httpx

    from ..api.stack import start_demo_stack

    report = _DemoReport(sys.stdout, as_json=bool(getattr(args, "json", False)))
    with tempfile.TemporaryDirectory(prefix="pipos-demo-") as tmp:
        stack = start_demo_stack(
            tmp, scrypt_n=2**12, background=False, confirm_delay=1.0, qr_poll_interval=0.25
        )
        api = httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        )
        checkout = stack.checkout

        def sale(amount: int, card: str) -> dict[str, Any]:
            txn = api.post("/api/v1/sales", json={"amount": amount, "currency": 978}).json()
            presented = api.post("/api/v1/simulator/present", json={"card": card})
            if presented.status_code != 200:
                raise RuntimeError(presented.text)
            record = checkout.wait(txn["id"], timeout=30)
            return dict(checkout.view(record))

        try:
            report.step("0", "start", "the demo terminal and its simulated acquirer", heading="")
            report.line(
                f"Terminal {checkout.terminal_id} enrolled with the simulated acquirer "
                f"at {stack.host.url}",
                terminal_id=checkout.terminal_id,
                acquirer_url=stack.host.url,
            )
            report.line(f"API and checkout page on {stack.api.url}/", api_url=stack.api.url)
            report.step("1", "online_sale", "Online sale of 12.34 EUR with a simulated Visa card")
            first = sale(1234, "visa")
            report.line(
                f"   {first['state']}: {first['message']['merchant']} "
                f"(card {first['masked_pan']}, auth code {first['auth_code']})",
                **_payment_fields(first),
                masked_pan=first["masked_pan"],
                auth_code=first["auth_code"],
            )
            report.step(
                "2",
                "offline_sale",
                "The acquirer goes down; sale of 8.00 EUR with a simulated Mastercard",
            )
            _host_down(stack)
            second = sale(800, "mastercard")
            report.line(
                f"   {second['state']}: {second['message']['merchant']}", **_payment_fields(second)
            )
            queue = api.get("/api/v1/queue").json()
            report.line(
                f"   offline queue: {queue['count']} payment(s) waiting, "
                f"{', '.join(format_amount(v, int(k)) for k, v in queue['amounts'].items())}",
                queue_count=queue["count"],
                queue_amounts=queue["amounts"],
            )
            report.step("3", "sync", "The acquirer is back; the queue is sent")
            _host_up(stack)
            synced = api.post("/api/v1/queue/sync").json()
            report.line(
                f"   sent: {synced['sync'].get('accepted', 0)} accepted, "
                f"{synced['queue']['count']} still waiting",
                accepted=synced["sync"].get("accepted", 0),
                queue_count=synced["queue"]["count"],
            )
            report.step("4", "refund", "Refund of 2.34 EUR of the first sale (merchant PIN)")
            refund = api.post(
                f"/api/v1/transactions/{first['id']}/refund",
                json={"pin": stack.pin, "amount": 234},
            ).json()
            report.line(
                f"   {refund['state']}: {refund['message']['merchant']}",
                **_payment_fields(refund),
                original_id=first["id"],
            )
            report.step(
                "5", "declined_sale", "A declined payment (the bank says: insufficient funds)"
            )
            third = sale(1051, "visa")
            report.line(
                f"   {third['state']}: {third['message']['merchant']}", **_payment_fields(third)
            )
            _qr_steps(stack, api, report)
            report.step("7", "end_of_day", "End-of-day totals, then the end of day (merchant PIN)")
            totals = api.get("/api/v1/totals").json()["totals"]
            for line in totals:
                report.line(
                    f"   {line['brand']:<14} sales {line['sales_count']} "
                    f"{format_amount(line['sales_amount'], line['currency'])}, refunds "
                    f"{line['refunds_count']} "
                    f"{format_amount(line['refunds_amount'], line['currency'])}, net "
                    f"{line['net_text']}"
                )
            closed = api.post("/api/v1/end-of-day", json={"pin": stack.pin}).json()
            report.line(
                f"   batch {closed['batch_id']} closed with the acquirer: "
                f"{closed['host_transactions']} transactions",
                totals=totals,
                batch_id=closed["batch_id"],
                host_transactions=closed["host_transactions"],
            )
            report.step(
                "8",
                "receipt",
                "Customer receipt of the first sale",
                heading="\nCustomer receipt of the first sale:\n",
            )
            receipt = api.get(f"/api/v1/transactions/{first['id']}/receipt").text
            report.line(receipt, transaction_id=first["id"], receipt=receipt)
            report.done()
        finally:
            api.close()
            stack.close()
    return 0


def _qr_steps(stack: DemoStack, api: Any, report: _DemoReport) -> None:
    """Step 6 of the demo: the customer pays with a phone (scanned and shown codes)."""
    checkout = stack.checkout

    def code_sale(amount: int, code: str) -> dict[str, Any]:
        txn = api.post("/api/v1/sales", json={"amount": amount, "currency": 978}).json()
        shown = api.post("/api/v1/simulator/phone", json={"code": code})
        if shown.status_code != 200:
            raise RuntimeError(shown.text)
        return dict(checkout.view(checkout.wait(txn["id"], timeout=60)))

    def sub_step(letter: str, name: str, title: str, *, first: bool = False) -> None:
        heading = f"   {letter}) {title}"
        # The text keeps step 6's heading above its first part.
        report.step(
            f"6{letter}",
            name,
            title,
            heading=f"\n6. Phone payments: QR codes\n{heading}" if first else heading,
        )

    sub_step(
        "a",
        "qr_customer_code",
        "The customer shows an Alipay payment code; the scanner reads it (5.60 EUR)",
        first=True,
    )
    first = code_sale(560, "alipay")
    report.line(f"   {first['state']}: {first['message']['merchant']}", **_payment_fields(first))
    report.line(
        f"   paid with {first['brand']}, code {first['masked_pan']}",
        brand=first["brand"],
        masked_code=first["masked_pan"],
    )
    sub_step(
        "b",
        "qr_confirmed_on_phone",
        "A WeChat Pay code; the customer confirms on the phone (7.20 EUR)",
    )
    second = code_sale(720, "confirm")
    report.line(f"   {second['state']}: {second['message']['merchant']}", **_payment_fields(second))
    sub_step("c", "qr_reused_code", "The customer shows a screenshot of that code again")
    third = code_sale(720, "reused")
    report.line(f"   {third['state']}: {third['message']['merchant']}", **_payment_fields(third))
    sub_step(
        "d",
        "qr_merchant_code",
        "The terminal shows its own code (EMVCo merchant-presented); the phone pays it",
    )
    txn = api.post(
        "/api/v1/sales", json={"amount": 990, "currency": 978, "method": "merchant_qr"}
    ).json()
    payload = checkout.merchant_qr_payload(checkout.get(txn["id"]))
    report.line(f"   code on the screen: {payload}", payload=payload)
    paid = api.post("/api/v1/simulator/pay-merchant-qr", json={"transaction_id": txn["id"]})
    if paid.status_code != 200:
        raise RuntimeError(paid.text)
    fourth = dict(checkout.view(checkout.wait(txn["id"], timeout=60)))
    report.line(f"   {fourth['state']}: {fourth['message']['merchant']}", **_payment_fields(fourth))


def _host_down(stack: DemoStack) -> None:
    """The simulated acquirer stops listening: connections to it are refused (nothing
    processed), as a host that is down."""
    stack.host.stop_listening()


def _host_up(stack: DemoStack) -> None:
    """The simulated acquirer listens again on the same address, with the same ledger."""
    stack.host.listen_again()
