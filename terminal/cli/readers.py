"""`pipos readers`: list every reader and scanner on every stack; test one."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from drivers.discovery import DeviceEntry, discover
from drivers.errors import DriverError
from emv import apdu, tlv
from emv.apdu import ApduExchange, ResponseApdu
from emv.errors import EmvError
from emv.qr import classify

from ..domain.logging_setup import redact


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "readers",
        help="list card readers and code scanners (PC/SC, NFC, serial); test one",
        description="Without a sub-command: every reader and scanner found, with its URL, and "
        "what stops it from working with the fix. `readers test URL` reads one card or code.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_list_command)
    sub = parser.add_subparsers(dest="readers_command", metavar="READERS_COMMAND")
    test = sub.add_parser(
        "test",
        help="read one card or code on URL and print what was seen (masked)",
        description="Card reader URLs (pcsc:, nfc:, sim:, replay:): waits for a card, prints "
        "its UID (masked), ATR and the payment applications it offers. Scanner URLs "
        "(serial:): waits for one code and prints its kind, masked.",
    )
    test.add_argument("url", help="reader or scanner URL")
    test.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    test.set_defaults(handler=_test_command)


def _list_command(args: argparse.Namespace) -> int:
    entries = discover()
    if args.json:
        print(json.dumps([asdict(entry) for entry in entries], indent=2))
        return 0
    if not entries:
        print("no readers or scanners found")
    for entry in entries:
        print(_line(entry))
    print("simulated: sim:visa, sim:mastercard, ... (pipos emv transact --reader sim:visa)")
    return 0


def _line(entry: DeviceEntry) -> str:
    head = f"{entry.kind:<13} {entry.url:<40} {entry.description}"
    if entry.status == "ready":
        return head
    return f"{head}\n{'':<14}problem: {entry.problem}\n{'':<14}fix: {entry.fix}"


def _test_command(args: argparse.Namespace) -> int:
    try:
        if args.url.startswith("serial:"):
            return _test_scanner(args.url, args.timeout)
        return _test_card_reader(args.url, args.timeout)
    except DriverError as exc:
        print(f"pipos readers test: {exc}", file=sys.stderr)
        return 1


def _mask_bytes(data: bytes) -> str:
    """The first two bytes, the rest as '*': enough to tell devices apart."""
    shown = data[:2].hex().upper()
    return shown + "*" * (2 * max(0, len(data) - 2))


def _test_card_reader(url: str, timeout: float) -> int:
    from drivers.url import open_reader

    with open_reader(url) as reader:
        print(f"waiting up to {timeout:g} s for a card on {url} ...")
        presence = reader.wait_for_card(timeout=timeout)
        print(f"card UID   {_mask_bytes(presence.uid)}")
        print(f"ATR        {presence.atr.hex().upper()}")
        exchange = ApduExchange(apdu.select_ppse())
        step: bytes | ResponseApdu = exchange.start()
        while isinstance(step, bytes):
            step = exchange.feed(reader.transceive(step))
        print(f"SELECT PPSE {step.describe()}")
        if not step.ok:
            print("no contactless payment directory (not a payment card, or contact-only)")
            return 0
        try:
            for line in _directory_lines(step.data):
                print(line)
        except EmvError as exc:
            print(f"the card's directory is malformed: {exc}")
            return 1
    return 0


def _directory_lines(fci: bytes) -> list[str]:
    lines = []
    for obj in tlv.decode(fci):
        for _, node in obj.walk():
            if node.tag != 0x61:
                continue
            values = tlv.flatten([node])
            aid = values.get(0x4F, b"").hex().upper() or "?"
            label = values.get(0x50, b"").decode("latin-1") or "-"
            priority = values.get(0x87, b"\x00")[0] & 0x0F
            kernel = values.get(0x9F2A, b"").hex().upper() or "default"
            lines.append(f"application {aid:<16} {label:<16} priority {priority} kernel {kernel}")
    return lines or ["the directory lists no applications"]


def _test_scanner(url: str, timeout: float) -> int:
    from drivers.scanner import open_scanner

    with open_scanner(url) as scanner:
        print(f"waiting up to {timeout:g} s for a code on {url} ...")
        code = scanner.wait_for_code(timeout=timeout)
    print(f"read {len(code)} characters")
    try:
        scanned = classify(code)
    except EmvError as exc:
        print(f"not a payment code: {exc}")
        return 0
    print(f"kind       {scanned.kind}")
    if scanned.wallet is not None:
        print(f"code       {scanned.wallet.masked} ({scanned.wallet.scheme})")
    else:
        print(f"text       {redact(code[:24])}{'...' if len(code) > 24 else ''}")
    return 0
