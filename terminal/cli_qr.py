"""`pipos qr ...`: decode any scanned payment code, and make the terminal's own
merchant-presented code (EMVCo MPM) for an amount, optionally as an SVG rendered by segno.

Add ``cli_qr.register`` to the registrars in terminal/cli.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Final

from emv.qr import MpmField, QrError, build_merchant_payload, classify
from emv.qr.mpm import ADDITIONAL_NAMES, FIELD_NAMES, MerchantPayload

from .currency import currency as currency_info
from .currency import parse_amount
from .errors import TerminalError
from .params import TerminalParams, default_params, load_params

#: ISO 3166-1 numeric -> alpha-2 for the countries pipos ships parameters for; MPM field 58
#: wants alpha-2 while EMV 9F1A is numeric. `--country` covers the rest.
COUNTRIES: Final = {
    36: "AU", 40: "AT", 56: "BE", 124: "CA", 156: "CN", 203: "CZ", 208: "DK", 246: "FI",
    250: "FR", 276: "DE", 344: "HK", 356: "IN", 360: "ID", 372: "IE", 380: "IT", 392: "JP",
    410: "KR", 442: "LU", 458: "MY", 528: "NL", 554: "NZ", 578: "NO", 608: "PH", 616: "PL",
    620: "PT", 702: "SG", 724: "ES", 752: "SE", 756: "CH", 764: "TH", 826: "GB", 840: "US",
}  # fmt: skip

#: The Globally Unique Identifier of the pipos acquirer's merchant account template (26).
ACCOUNT_GUID: Final = "com.pipos.acquirer"


class QrCommandError(TerminalError):
    """A `pipos qr` command could not do what was asked."""


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


def merchant_payload(
    params: TerminalParams,
    amount_minor: int | None,
    *,
    reference: str | None = None,
    name: str | None = None,
    city: str | None = None,
    country: str | None = None,
) -> str:
    """The terminal's MPM payload; dynamic when `amount_minor` is given."""
    t = params.terminal
    name_part, _, rest = t.merchant_name_location.partition(",")
    default_city = rest.strip().rsplit(" ", 1)[0] if rest.strip() else "UNKNOWN"
    country = country or COUNTRIES.get(t.country_code)
    if country is None:
        raise QrCommandError(f"no alpha-2 code known for country {t.country_code}: use --country")
    additional = {"07": t.terminal_identifier}
    if reference:
        additional["05"] = reference
    account = MpmField.template(
        "26", [MpmField("00", ACCOUNT_GUID), MpmField("01", t.merchant_identifier.strip())]
    )
    try:
        return build_merchant_payload(
            accounts=[account],
            mcc=t.merchant_category_code,
            currency=t.currency_code,
            country=country.upper(),
            merchant_name=(name or name_part.strip())[:25],
            merchant_city=(city or default_city)[:15],
            amount_minor=amount_minor,
            exponent=currency_info(t.currency_code).exponent,
            additional=additional,
        )
    except QrError as exc:
        raise QrCommandError(str(exc)) from exc


def _merchant_command(args: argparse.Namespace) -> int:
    params = load_params(args.params) if args.params else default_params()
    amount = None
    if args.amount is not None:
        amount = parse_amount(args.amount, params.terminal.currency_code)
        if amount <= 0:
            print("pipos: error: --amount must be positive", file=sys.stderr)
            return 2
    payload = merchant_payload(
        params,
        amount,
        reference=args.reference,
        name=args.name,
        city=args.city,
        country=args.country,
    )
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
        raise QrCommandError(f"cannot write SVG {path}: {exc}") from exc
