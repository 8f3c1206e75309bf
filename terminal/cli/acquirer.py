"""`pipos acquirer`: run the simulated acquirer host, mint enrolment activation codes, and
arm its faults from the command line (`pipos acquirer fault`, docs/ci.md).

This is the one place terminal/ launches the simulator as a command of its own. The simulator
is not part of the product install (it is pipos-sim, the `sim` extra), so the import happens
inside the handler: the terminal application never loads simulator code, and without the
simulator the command says what to install.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Final

import httpx

from ..domain.errors import TerminalError, simulator_missing, simulator_not_installed


class AcquirerCommandError(TerminalError):
    """The acquirer command could not do what was asked: bad input unless raised with
    ``bad_input=False``."""

    def __init__(self, message: str, *, bad_input: bool = True) -> None:
        super().__init__(message)
        self.bad_input = bad_input  # exit status 2, else 1 (terminal.cli.common.exit_status)


_NEEDED_BY = "pipos acquirer (the simulated acquirer host)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "acquirer",
        help="run the simulated acquirer host (or create an activation code)",
        description="Run the simulated acquirer host on HOST:PORT with its state in --db. "
        "Needs the simulator (the sim extra: scripts/bootstrap.sh sim).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8600, help="TCP port (default 8600)")
    parser.add_argument("--db", default="acquirer.sqlite3", help="SQLite state file")
    parser.add_argument("--tls-cert", help="server certificate (PEM): serve HTTPS")
    parser.add_argument("--tls-key", help="server private key (PEM)")
    parser.add_argument("--client-ca", help="require client certificates from this CA (mTLS)")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("PIPOS_ACQUIRER_ADMIN_TOKEN"),
        help="require this X-Admin-Token on /admin endpoints (env PIPOS_ACQUIRER_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--protocol",
        choices=("pipos", "iso8583"),
        default="pipos",
        help="iso8583: also serve the ISO 8583 link (docs/iso8583.md) on --iso8583-port, on "
        "the same ledger; enrolment, parameters and the admin API stay on --port",
    )
    parser.add_argument(
        "--iso8583-port",
        type=_bounded(0, 65535),
        default=8583,
        help="with --protocol iso8583: the ISO 8583 TCP port (default 8583; 0: any free port)",
    )
    parser.add_argument(
        "--iso8583-profile",
        metavar="FILE",
        help="with --protocol iso8583: the field specification (default: the shipped profile)",
    )
    parser.set_defaults(handler=_serve)
    actions = parser.add_subparsers(dest="acquirer_action", metavar="ACTION")
    code = actions.add_parser(
        "activation-code",
        help="create a one-time enrolment activation code for a merchant and print it",
    )
    code.add_argument("--merchant", required=True, help="merchant id the terminal will join")
    code.add_argument("--url", help="a running host (http://127.0.0.1:8600); default: --db")
    code.add_argument("--db", default=argparse.SUPPRESS, help="SQLite state file")
    code.set_defaults(handler=_activation_code)
    fault = actions.add_parser(
        "fault",
        help="make a running simulated acquirer fail (refuse, delay, http_500, "
        "drop_after_commit, corrupt), show its armed faults, or clear them",
        description="Arm a fault on a running simulated acquirer (its PUT /admin/faults): "
        "the next requests whose path starts with --path fail as --mode says, --times times "
        "or until --clear. Without --mode or --clear, print the armed faults. Modes: "
        + "; ".join(f"{mode}: {what}" for mode, what in FAULT_MODES.items()),
    )
    fault.add_argument("--url", required=True, help="the running host, e.g. http://127.0.0.1:8600")
    fault.add_argument(
        "--admin-token",
        default=argparse.SUPPRESS,
        help="the host's X-Admin-Token, if it was started with one "
        "(env PIPOS_ACQUIRER_ADMIN_TOKEN)",
    )
    what = fault.add_mutually_exclusive_group()
    what.add_argument("--mode", choices=tuple(FAULT_MODES), help="the fault to arm")
    what.add_argument("--clear", action="store_true", help="disarm every fault")
    fault.add_argument(
        "--path",
        default="/v1/",
        help="protocol path prefix the fault applies to (default /v1/: every request; "
        "/v1/authorisations: authorisations only, so reversals still get through; "
        "/v1/iso8583/0200: the ISO 8583 host's 0200s)",
    )
    fault.add_argument(
        "--delay-ms",
        type=_bounded(0, _MAX_DELAY_MS),
        default=0,
        help=f"wait this long before the fault (0 to {_MAX_DELAY_MS}; needed by --mode delay)",
    )
    fault.add_argument(
        "--times",
        type=_bounded(1, None),
        help="only the next N matching requests (default: every one until --clear)",
    )
    fault.set_defaults(handler=_fault)
    trace = actions.add_parser(
        "trace",
        help="print an ISO 8583 message field by field (PAN masked, field 55 decoded)",
        description="Decode an ISO 8583 message under a profile (default: the shipped ISO "
        "8583:1987 profile, docs/iso8583.md) and print it as payment engineers read traces: "
        "each field with its name, the PAN and track 2 masked, the PIN block never shown, "
        "field 55 as EMV data objects with their names. The message is hex on the command "
        "line or on standard input (-), or raw bytes from --binary FILE.",
    )
    trace.add_argument("message", nargs="?", help="the message in hex, or - for standard input")
    trace.add_argument("--binary", metavar="FILE", help="read the message's raw bytes from FILE")
    trace.add_argument("--profile", metavar="FILE", help="the acquirer's profile (JSON)")
    trace.add_argument(
        "--framed",
        action="store_true",
        help="the message starts with its length header (as captured off the wire)",
    )
    trace.add_argument(
        "--mac-key",
        metavar="HEX",
        help="the session MAC key: also check the message's MAC (a test key only: never a "
        "production key on a command line)",
    )
    trace.set_defaults(handler=_trace)


#: The simulated host's fault modes (simulator.host.faults) and what the terminal meets.
FAULT_MODES: Final[dict[str, str]] = {
    "refuse": "the connection is closed before the request is read (nothing processed)",
    "delay": "the request waits --delay-ms, then is processed normally",
    "http_500": "answered 500 without being processed",
    "drop_after_commit": "processed and committed, then the connection is cut unanswered",
    "corrupt": "processed and committed, then the answer's bytes are garbled",
}

#: The host's own bound for `delay_ms` (simulator.host.app FaultBody).
_MAX_DELAY_MS: Final = 120_000


def _bounded(low: int, high: int | None) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high` (exit status 2 otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range: {bound}")
        return value

    return parse


def _serve(args: argparse.Namespace) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise AcquirerCommandError("--tls-cert and --tls-key must be given together")
    # `pipos acquirer` runs the simulated host itself: a command of the simulator's, kept in
    # the one CLI (listed in the import contract's exceptions).
    try:
        from simulator.host import server
    except ImportError as exc:
        if not simulator_missing(exc):
            raise
        raise AcquirerCommandError(simulator_not_installed(_NEEDED_BY), bad_input=False) from exc

    iso = args.protocol == "iso8583"
    if not iso and args.iso8583_profile:
        raise AcquirerCommandError("--iso8583-profile goes with --protocol iso8583")
    if args.iso8583_profile:
        from ..acquirer.iso8583.profile import load_profile

        # The terminal's own check of the file, so a wrong profile is refused before the
        # host starts, in the words the terminal uses for it (None: the shipped profile).
        load_profile(args.iso8583_profile)
    tls = server.TlsConfig(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    scheme = "https" if tls else "http"
    print(f"pipos acquirer: {scheme}://{args.host}:{args.port} (state in {args.db})", flush=True)
    server.serve(
        host=args.host,
        port=args.port,
        db=args.db,
        tls=tls,
        admin_token=args.admin_token,
        iso8583_port=args.iso8583_port if iso else None,
        iso8583_profile=args.iso8583_profile,
    )
    return 0


def _activation_code(args: argparse.Namespace) -> int:
    if args.url:
        headers = {"X-Admin-Token": args.admin_token} if args.admin_token else {}
        try:
            response = httpx.post(
                args.url.rstrip("/") + "/admin/activation-codes",
                json={"merchant_id": args.merchant},
                headers=headers,
                timeout=10,
            )
        except httpx.HTTPError as exc:
            raise AcquirerCommandError(f"acquirer at {args.url}: {exc}", bad_input=False) from exc
        if response.status_code != 200:
            raise AcquirerCommandError(
                f"acquirer refused ({response.status_code}): {response.text[:200]}",
                bad_input=response.status_code < 500,
            )
        data = response.json()
        _print_code(str(data["code"]), data.get("host_key_fingerprint"))
        return 0
    try:
        import simulator.host as host
    except ImportError as exc:
        if not simulator_missing(exc):
            raise
        raise AcquirerCommandError(simulator_not_installed(_NEEDED_BY), bad_input=False) from exc
    store = host.Store(args.db)
    try:
        acquirer = host.AcquirerHost(store)
        _print_code(acquirer.create_activation_code(args.merchant), acquirer.host_key_fingerprint)
    except host.HostError as exc:
        raise AcquirerCommandError(exc.message) from exc
    finally:
        store.close()
    return 0


def _fault(args: argparse.Namespace) -> int:
    if args.mode == "delay" and args.delay_ms == 0:
        raise AcquirerCommandError("--mode delay needs --delay-ms (how long to wait)")
    if args.mode is None and (args.delay_ms or args.times is not None):
        raise AcquirerCommandError("--delay-ms and --times go with --mode")
    url = args.url.rstrip("/") + "/admin/faults"
    headers = {"X-Admin-Token": args.admin_token} if args.admin_token else {}
    body: dict[str, object] = {}
    if args.mode is not None:
        fault: dict[str, object] = {"mode": args.mode, "delay_ms": args.delay_ms}
        if args.times is not None:
            fault["times"] = args.times
        body = {args.path: fault}
    method = "PUT" if args.mode else "DELETE" if args.clear else "GET"
    try:
        response = httpx.request(
            method, url, json=body if method == "PUT" else None, headers=headers, timeout=10
        )
    except httpx.HTTPError as exc:
        raise AcquirerCommandError(f"acquirer at {args.url}: {exc}", bad_input=False) from exc
    if response.status_code != 200:
        raise AcquirerCommandError(
            f"acquirer refused ({response.status_code}): {_error_message(response)}",
            bad_input=response.status_code < 500,
        )
    try:
        armed = response.json()
    except ValueError as exc:
        raise AcquirerCommandError(
            f"acquirer at {args.url}: the answer is not JSON (is it the simulated acquirer?)",
            bad_input=False,
        ) from exc
    if args.clear:
        print("no fault armed (all cleared)")
        return 0
    if not isinstance(armed, dict) or not armed:
        print("no fault armed")
        return 0
    for path, armed_fault in sorted(armed.items()):
        print(_fault_line(path, armed_fault if isinstance(armed_fault, dict) else {}))
    return 0


def _fault_line(path: str, fault: dict[str, object]) -> str:
    """One armed fault as a line a person reads (and a script can split on spaces)."""
    parts = [path, str(fault.get("mode", "?"))]
    if fault.get("delay_ms"):
        parts.append(f"delay_ms={fault['delay_ms']}")
    times = fault.get("times")
    parts.append(f"times={times}" if times is not None else "times=until-cleared")
    parts.append(f"hits={fault.get('hits', 0)}")
    return "  ".join(parts)


def _error_message(response: httpx.Response) -> str:
    """The host's error envelope's message, else the start of its body."""
    try:
        error = response.json().get("error", {})
        message = error.get("message") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else response.text[:200]


def _print_code(code: str, fingerprint: object) -> None:
    """The code on its own line (for a script to take), then the host key fingerprint the
    technician pins when enrolling with it."""
    print(code)
    if isinstance(fingerprint, str) and fingerprint:
        print(f"host key: {fingerprint}  (pipos provision --host-key {fingerprint})")


def _trace(args: argparse.Namespace) -> int:
    # The ISO 8583 modules are imported here: `pipos --help` does not pay for them.
    import sys

    from ..acquirer.iso8583.codec import Iso8583Error, decode_message
    from ..acquirer.iso8583.mac import MacError
    from ..acquirer.iso8583.profile import default_profile, load_profile
    from ..acquirer.iso8583.trace import trace_lines

    profile = load_profile(args.profile) if args.profile else default_profile()
    if args.binary:
        if args.message:
            raise AcquirerCommandError("give the message in hex or --binary FILE, not both")
        try:
            with open(args.binary, "rb") as source:
                data = source.read()
        except OSError as exc:
            raise AcquirerCommandError(f"cannot read {args.binary}: {exc.strerror}") from exc
    else:
        text = sys.stdin.read() if args.message in (None, "-") else args.message
        digits = "".join(text.split())
        try:
            data = bytes.fromhex(digits)
        except ValueError:
            raise AcquirerCommandError(
                "the message is not hex (0-9, A-F, spaces allowed); raw bytes go in --binary"
            ) from None
    if args.framed:
        size = profile.length_header_bytes
        announced = int.from_bytes(data[:size], "big")
        if len(data) < size or announced != len(data) - size:
            raise AcquirerCommandError(
                f"--framed: the length header announces {announced} bytes and "
                f"{max(len(data) - size, 0)} follow it"
            )
        data = data[size:]
    try:
        key = bytes.fromhex(args.mac_key) if args.mac_key else None
    except ValueError:
        raise AcquirerCommandError("--mac-key is not hex") from None
    try:
        message = decode_message(profile, data, None)
    except Iso8583Error as exc:
        raise AcquirerCommandError(f"not a message under {profile.name}: {exc}") from exc
    for line in trace_lines(profile, message.mti, message.fields):
        print(line)
    if key is not None:
        try:
            decode_message(profile, data, key)
        except (Iso8583Error, MacError) as exc:
            print(f"MAC: WRONG ({exc})")
            return 1
        print("MAC: ok")
    return 0
