"""`python -m simulator.host`: run the simulated acquirer host, or mint an activation code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator.host")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8600, help="TCP port (0: any free port)")
    parser.add_argument("--db", default="acquirer.sqlite3", help="SQLite state file")
    parser.add_argument("--tls-cert", help="server certificate (PEM); enables HTTPS")
    parser.add_argument("--tls-key", help="server private key (PEM)")
    parser.add_argument("--client-ca", help="CA for client certificates (mutual TLS)")
    parser.add_argument("--admin-token", default=os.environ.get("PIPOS_ACQUIRER_ADMIN_TOKEN"))
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--iso8583-port",
        type=int,
        metavar="PORT",
        help="also serve ISO 8583 on this TCP port (0: any free port), same ledger",
    )
    parser.add_argument(
        "--iso8583-profile",
        metavar="PATH",
        help="the ISO 8583 profile (default: terminal/data/iso8583/default-1987.json)",
    )
    parser.add_argument(
        "--activation-code",
        metavar="MERCHANT_ID",
        help="create a one-time activation code for MERCHANT_ID in --db, print it, and exit",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .ledger import Store
    from .server import TlsConfig, serve
    from .service import AcquirerHost, HostError

    if args.activation_code:
        store = Store(args.db)
        try:
            host = AcquirerHost(store)
            print(host.create_activation_code(args.activation_code))
            # Printed with every code: what the technician pins (pipos provision --host-key).
            print(f"host key: {host.host_key_fingerprint}")
        except HostError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        finally:
            store.close()
        return 0
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    tls = TlsConfig(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    serve(
        host=args.host,
        port=args.port,
        db=args.db,
        tls=tls,
        admin_token=args.admin_token,
        log_level=args.log_level,
        iso8583_port=args.iso8583_port,
        iso8583_profile=args.iso8583_profile,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
