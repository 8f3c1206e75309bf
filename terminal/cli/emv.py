"""`pipos emv ...`: tools for payment engineers working with card data."""

from __future__ import annotations

import argparse
import json
import string
import sys

from emv.apdu import ResponseApdu
from emv.explain import explain, format_tree
from emv.tlv import TlvError, decode

from .transact import register_transact


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    emv_parser = subparsers.add_parser(
        "emv", help="EMV tools: decode TLV data, run the card part of a sale"
    )
    emv_sub = emv_parser.add_subparsers(dest="emv_command", metavar="EMV_COMMAND")
    emv_sub.required = True
    decode_parser = emv_sub.add_parser(
        "decode",
        help="decode BER-TLV (a card response, with or without status word) into a tree",
        description=(
            "Decode hex BER-TLV, e.g. a GPO or READ RECORD response. Spaces are allowed. "
            "A trailing status word such as 9000 is recognised when the data would not parse "
            "otherwise. The PAN is masked and track data redacted unless --reveal is given."
        ),
    )
    decode_parser.add_argument("hex", nargs="+", help="hex bytes ('-' reads standard input)")
    decode_parser.add_argument("--json", action="store_true", help="machine-readable output")
    decode_parser.add_argument(
        "--reveal", action="store_true", help="show PAN and track data in full"
    )
    decode_parser.set_defaults(handler=_decode_command)
    register_transact(emv_sub)


# SW1 values a card returns (ISO/IEC 7816-4 §5.1.3): normal, warning and error classes.
_STATUS_WORD_FIRST_BYTES = frozenset(
    {0x90, 0x61, 0x62, 0x63, 0x64, 0x65, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F}
)


def _read_hex(parts: list[str]) -> bytes:
    text = sys.stdin.read() if parts == ["-"] else "".join(parts)
    cleaned = "".join(text.split())
    bad = next((c for c in cleaned if c not in string.hexdigits), None)
    if bad is not None:
        raise ValueError(f"not hex: character {bad!r} at position {cleaned.index(bad)}")
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits ({len(cleaned)})")
    if not cleaned:
        raise ValueError("no data given")
    return bytes.fromhex(cleaned)


def _decode_command(args: argparse.Namespace) -> int:
    try:
        data = _read_hex(args.hex)
    except ValueError as exc:
        print(f"pipos emv decode: {exc}", file=sys.stderr)
        return 2
    status: ResponseApdu | None = None
    body = data
    # A response APDU copied with its status word: recognise the trailing SW when the
    # bytes before it parse on their own.
    if len(data) >= 2 and data[-2] in _STATUS_WORD_FIRST_BYTES:
        try:
            objects = decode(data[:-2])
            status = ResponseApdu.parse(data[-2:])
            body = data[:-2]
        except TlvError:
            status = None
    if status is None:
        try:
            objects = decode(body)
        except TlvError as exc:
            print(f"pipos emv decode: {exc}", file=sys.stderr)
            return 2
    nodes = [explain(obj, reveal=args.reveal) for obj in objects]
    if args.json:
        out: dict[str, object] = {"objects": [node.as_json() for node in nodes]}
        if status is not None:
            out["status_word"] = {"sw": f"{status.sw:04X}", "meaning": status.meaning}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        for line in format_tree(nodes):
            print(line)
        if status is not None:
            print(f"SW {status.describe()}")
    return 0
