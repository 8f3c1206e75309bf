"""`pipos acquirer`: run the simulated acquirer host, and mint enrolment activation codes.

This is the one place terminal/ launches the simulator as a command of its own. The simulator
is not part of the product install (it is pipos-sim, the `sim` extra), so the import happens
inside the handler: the terminal application never loads simulator code, and without the
simulator the command says what to install.
"""

from __future__ import annotations

import argparse
import os

import httpx

from ..domain.errors import TerminalError, simulator_missing, simulator_not_installed


class AcquirerCommandError(TerminalError):
    """The acquirer command could not do what was asked."""


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
        raise AcquirerCommandError(simulator_not_installed(_NEEDED_BY)) from exc

    tls = server.TlsConfig(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    scheme = "https" if tls else "http"
    print(f"pipos acquirer: {scheme}://{args.host}:{args.port} (state in {args.db})", flush=True)
    server.serve(host=args.host, port=args.port, db=args.db, tls=tls, admin_token=args.admin_token)
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
            raise AcquirerCommandError(f"acquirer at {args.url}: {exc}") from exc
        if response.status_code != 200:
            raise AcquirerCommandError(
                f"acquirer refused ({response.status_code}): {response.text[:200]}"
            )
        data = response.json()
        _print_code(str(data["code"]), data.get("host_key_fingerprint"))
        return 0
    try:
        import simulator.host as host
    except ImportError as exc:
        if not simulator_missing(exc):
            raise
        raise AcquirerCommandError(simulator_not_installed(_NEEDED_BY)) from exc
    store = host.Store(args.db)
    try:
        acquirer = host.AcquirerHost(store)
        _print_code(acquirer.create_activation_code(args.merchant), acquirer.host_key_fingerprint)
    except host.HostError as exc:
        raise AcquirerCommandError(exc.message) from exc
    finally:
        store.close()
    return 0


def _print_code(code: str, fingerprint: object) -> None:
    """The code on its own line (for a script to take), then the host key fingerprint the
    technician pins when enrolling with it."""
    print(code)
    if isinstance(fingerprint, str) and fingerprint:
        print(f"host key: {fingerprint}  (pipos provision --host-key {fingerprint})")
