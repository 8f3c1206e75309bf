"""`pipos params ...`: check a terminal parameter file before it reaches a terminal."""

from __future__ import annotations

import argparse
import datetime
import sys

from emv.capk import CaPublicKey
from emv.kernel.kernel_data import kernel_data_name

from ..checkout.card_session import terminal_config
from ..domain.currency import format_amount
from ..domain.params import (
    AidParams,
    ParamsError,
    TerminalParams,
    data_object_amount,
    default_params,
    load_params,
)

#: Capability objects the kernel sends without online PIN when no PIN entry device is attached.
_CAPABILITIES = frozenset({0x9F33, 0xDF8118, 0xDF8119})


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    params_parser = subparsers.add_parser("params", help="terminal parameter files")
    params_sub = params_parser.add_subparsers(dest="params_command", metavar="PARAMS_COMMAND")
    params_sub.required = True
    check = params_sub.add_parser(
        "check",
        help="validate a parameter file and print what it configures",
        description="Validate a parameter file (JSON). Every problem is listed with its field "
        "path; exit status 2 when there is any. Without FILE, checks the embedded defaults.",
    )
    check.add_argument("file", nargs="?", help="parameter file (default: the embedded defaults)")
    check.set_defaults(handler=_check_command)
    from .service import add_params_update  # `params update`: provisioning's command

    add_params_update(params_sub)


def _check_command(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.file) if args.file else default_params()
    except ParamsError as exc:
        count = len(exc.issues)
        print(f"{count} problem{'s' if count != 1 else ''} found:", file=sys.stderr)
        for message in exc.messages:
            print(f"  {message}", file=sys.stderr)
        return 2
    for line in summarise(params, today=datetime.datetime.now(datetime.UTC).date()):
        print(line)
    return 0


def summarise(params: TerminalParams, *, today: datetime.date) -> list[str]:
    """What `params` configures, for a person; each CA key's expiry judged on `today` (valid
    up to and including its expiry date, EMV Book 2 §11.2.1; the terminal refuses an expired
    key for offline data authentication, emv.capk.CaKeyStore.lookup)."""
    t = params.terminal
    currency = t.currency_code
    lines = [
        f"{params.source}: valid",
        f"terminal {t.terminal_identifier}, merchant {t.merchant_identifier.strip()} "
        f"({t.merchant_name_location}), MCC {t.merchant_category_code}",
        f"country {t.country_code:03d}, currency {format_amount(0, currency).split()[-1]} "
        f"({currency:03d}), language {t.language}",
        f"applications ({len(params.aids)}):",
    ]
    for aid in params.aids:
        limits = aid.limits
        on_device = limits.contactless_transaction_on_device_cvm
        lines.append(
            f"  {aid.aid.hex().upper():<16} {aid.label:<12} kernel {aid.kernel_id}  "
            f"contactless limit {format_amount(limits.contactless_transaction, currency)}, "
            f"CVM limit {format_amount(limits.cvm_required, currency)}, "
            f"floor {format_amount(limits.contactless_floor, currency)}"
            + ("" if on_device is None else f", on-device CVM {format_amount(on_device, currency)}")
        )
        lines.extend(_kernel_data_lines(params, aid))
    lines.append(f"CA public keys ({len(params.ca_public_keys)}):")
    for key in params.ca_public_keys:
        ca_key = CaPublicKey(key.rid, key.index, key.modulus, key.exponent, key.expiry, key.sha1)
        checksum = (
            "checksum ok"
            if ca_key.verify_checksum()
            else "no checksum"
            if key.sha1 is None
            else "checksum WRONG"
        )
        if key.expiry is None:
            expiry = "no expiry"
        elif ca_key.is_expired(today):
            expiry = f"EXPIRED on {key.expiry.isoformat()} (not used for card authentication)"
        else:
            expiry = f"expires {key.expiry.isoformat()}"
        lines.append(
            f"  {key.rid.hex().upper()} {key.index:02X}  {len(key.modulus) * 8} bits, "
            f"{expiry}, {checksum}"
        )
    if params.offline is not None and params.offline.enabled:
        offline = params.offline
        lines.append(
            f"offline: up to {format_amount(offline.max_transaction_amount, currency)} each, "
            f"{offline.max_count} payments, {offline.max_age_hours} h"
        )
    else:
        lines.append("offline: not accepted")
    return lines


def _kernel_data_lines(params: TerminalParams, aid: AidParams) -> list[str]:
    """The AID's kernel data objects as its kernel gets them, each with its name; amounts
    also in money, and what the kernel sends instead when it may not claim online PIN."""
    currency = params.terminal.currency_code
    config = terminal_config(params)
    objects = aid.data_objects()
    notes: dict[int, str] = {}
    if aid.kernel_id == 3 and 0x9F66 not in objects:
        objects = dict(sorted({**objects, 0x9F66: params.terminal.ttq}.items()))
        notes[0x9F66] = " (the terminal's)"
    lines = []
    for tag, value in objects.items():
        note = notes.get(tag, "")
        amount = data_object_amount(tag, value)
        if amount is not None:
            note += f" ({format_amount(amount, currency)})"
        honest = (
            config.honest_ttq(value)
            if tag == 0x9F66
            else config.honest_capabilities(value)
            if tag in _CAPABILITIES
            else value
        )
        if honest != value:
            note += f", sent as {honest.hex().upper()}: " + _why_not_as_configured(
                tag, value, honest
            )
        lines.append(f"    {tag:X} {kernel_data_name(tag)} = {value.hex().upper()}{note}")
    return lines


def _why_not_as_configured(tag: int, value: bytes, honest: bytes) -> str:
    """Why the kernel sends `honest` for `value` (emv.kernel.config.TerminalConfig)."""
    if tag == 0x9F66 and honest[0] & ~value[0] & 0x08:  # TTQ byte 1 b4: offline-only reader
        if value[0] & ~honest[0] & 0x04:
            return "no PIN entry device, no online PIN; an offline-only terminal type"
        return "an offline-only terminal type"
    return "no PIN entry device, no online PIN"
