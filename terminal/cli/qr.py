"""`pipos qr ...`: decode any scanned payment code, and make the terminal's own
merchant-presented code (EMVCo MPM) for an amount, optionally as an SVG rendered by segno.

Listed in COMMAND_MODULES in terminal/cli/__init__.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from emv.qr import MpmField, QrError, classify
from emv.qr.mpm import ADDITIONAL_NAMES, FIELD_NAMES, MerchantPayload

from ..domain.currency import parse_amount
from ..domain.errors import TerminalError
from ..domain.merchant_qr import MerchantCodeError, merchant_payload
from ..domain.params import default_params, load_params


class QrCommandError(TerminalError):
    """A `pipos qr` command could not do what was asked: bad input unless raised with
    ``bad_input=False``."""

    def __init__(self, message: str, *, bad_input: bool = True) -> None:
        super().__init__(message)
        self.bad_input = bad_input  # exit status 2, else 1 (terminal.cli.common.exit_status)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    qr = subparsers.add_parser("qr", help="QR payment codes (EMVCo CPM/MPM, wallet codes)")
    sub = qr.add_subparsers(dest="qr_command", metavar="QR_COMMAND")
    sub.required = True

    decode = sub.add_parser(
        "decode",
        help="decode and validate a scanned code",
        description="Decode TEXT as an EMVCo consumer-presented code (base64), an EMVCo "
        "merchant-presented code (CRC checked) or a wallet payment code. Card numbers are "
        "masked. Exit status 2 when the code is invalid.",
    )
    decode.add_argument("text", help="the scanned text (quote it)")
    decode.add_argument("--json", action="store_true", help="print JSON")
    decode.set_defaults(handler=_decode_command)

    merchant = sub.add_parser(
        "merchant",
        help="make this terminal's merchant-presented code",
        description="Build an EMVCo merchant-presented payload from the terminal parameters: "
        "dynamic with --amount, static without.",
    )
    merchant.add_argument("--amount", help="amount in major units, e.g. 12.34")
    merchant.add_argument("--params", help="parameter file (default: the embedded defaults)")
    merchant.add_argument("--reference", help="reference label (additional data 05)")
    merchant.add_argument("--name", help="merchant name (default: from the parameters)")
    merchant.add_argument("--city", help="merchant city (default: from the parameters)")
    merchant.add_argument("--country", help="ISO 3166-1 alpha-2 (default: from the parameters)")
    merchant.add_argument("--svg", metavar="FILE", help="also write the QR code as SVG")
    merchant.set_defaults(handler=_merchant_command)


# --- decode ---------------------------------------------------------------------------------


def describe(text: str) -> dict[str, Any]:
    """What `pipos qr decode --json` prints; raises QrError for an invalid code."""
    scanned = classify(text)
    if scanned.cpm is not None:
        return scanned.cpm.to_json()
    if scanned.wallet is not None:
        return {
            "mode": "wallet-code",
            "scheme": scanned.wallet.scheme,
            "code": scanned.wallet.masked,
            "length": len(scanned.wallet.code),
        }
    assert scanned.mpm is not None
    return scanned.mpm.to_json()


def _mpm_lines(mpm: MerchantPayload) -> list[str]:
    lines = [f"EMVCo merchant-presented code ({mpm.initiation or 'unspecified'}), CRC ok"]

    def add(field: MpmField, indent: str, names: dict[str, str]) -> None:
        name = names.get(field.id, "")
        if 2 <= int(field.id) <= 51 and indent == "  ":
            name = "Merchant Account Information"
        if field.children:
            lines.append(f"{indent}{field.id} {name}".rstrip())
            sub_names = ADDITIONAL_NAMES if field.id == "62" else {}
            for child in field.children:
                add(child, indent + "  ", dict(sub_names))
        else:
            lines.append(f"{indent}{field.id} {name + ':' if name else ''} {field.value}")

    for f in mpm.fields:
        add(f, "  ", dict(FIELD_NAMES))
    return lines


def _decode_command(args: argparse.Namespace) -> int:
    try:
        info = describe(args.text)
    except QrError as exc:
        print(f"pipos: invalid code ({exc.reason}): {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    if info["mode"] == "merchant-presented":
        scanned = classify(args.text)
        assert scanned.mpm is not None
        print("\n".join(_mpm_lines(scanned.mpm)))
    elif info["mode"] == "wallet-code":
        print(f"wallet payment code: {info['scheme']}, {info['length']} digits, {info['code']}")
    else:
        print(f"EMVCo consumer-presented code: account {info['pan']}, expiry {info['expiry']}")
        for index, app in enumerate(info["applications"], 1):
            print(f"  application {index}: {app['data']}")
            if app["transparent"]:
                print(f"    cryptogram data: {app['transparent']}")
        if info["common"] or info["common_transparent"]:
            print(f"  common data: {info['common']}")
            if info["common_transparent"]:
                print(f"    cryptogram data: {info['common_transparent']}")
    return 0


# --- merchant -------------------------------------------------------------------------------


def _merchant_command(args: argparse.Namespace) -> int:
    params = load_params(args.params) if args.params else default_params()
    amount = None
    if args.amount is not None:
        amount = parse_amount(args.amount, params.terminal.currency_code)
        if amount <= 0:
            print("pipos: error: --amount must be positive", file=sys.stderr)
            return 2
    try:
        payload = merchant_payload(
            params,
            amount,
            reference=args.reference,
            name=args.name,
            city=args.city,
            country=args.country,
        )
    except MerchantCodeError as exc:
        hint = "; give it with --country" if "country" in str(exc) else ""
        raise QrCommandError(f"{exc}{hint}") from exc
    print(payload)
    if args.svg:
        write_svg(payload, args.svg)
    return 0


def write_svg(payload: str, path: str) -> None:
    """Render `payload` as an SVG QR code (segno, error correction M, UTF-8 kept as bytes)."""
    import segno  # optional dependency, only for rendering

    try:
        segno.make_qr(payload, error="m", encoding="utf-8").save(path, kind="svg", scale=4)
    except (OSError, ValueError, segno.DataOverflowError) as exc:
        raise QrCommandError(f"cannot write SVG {path}: {exc}", bad_input=False) from exc
