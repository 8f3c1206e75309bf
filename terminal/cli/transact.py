"""`pipos emv transact`: the card part of a sale against any reader URL, no acquirer."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Final

from drivers.base import CardPresence, CardReader, RecordedInputs
from drivers.errors import DriverError
from drivers.url import open_reader
from emv.errors import PiposError

from ..domain.currency import (
    AmountError,
    UnknownCurrencyError,
    currency,
    format_amount,
    parse_amount,
)
from ..domain.params import TerminalParams, default_params, load_params
from .common import ServiceCommandError

#: How a simulated card's URL is written (drivers.sim, simulator.cards.behaviour).
SIM_URL_FORM: Final = "sim:PROFILE?BEHAVIOUR[=VALUE][&BEHAVIOUR[=VALUE]...]"

_FIELDS = (
    ("outcome", "Outcome"),
    ("cryptogram", "Cryptogram"),
    ("kernel", "Kernel"),
    ("aid", "AID"),
    ("label", "Application"),
    ("pan", "PAN"),
    ("expiry", "Expiry (YYMM)"),
    ("oda_method", "ODA method"),
    ("oda_result", "ODA result"),
    ("cvm", "CVM"),
    ("tvr", "TVR"),
    ("tsi", "TSI"),
    ("apdus", "APDUs"),
    ("reason", "Reason"),
)


def register_transact(emv_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = emv_sub.add_parser(
        "transact",
        help="run the card part of a sale (kernel, ODA, CVM; no acquirer) on a reader",
        description="Run Entry Point and the kernel against the card on READER and print the "
        "outcome. Examples: --reader sim:visa, --reader 'sim:mastercard?decline', "
        "--reader replay:transcript.json, --reader pcsc:. A simulated card takes behaviours "
        f"after '?', joined by '&': {SIM_URL_FORM}, e.g. 'sim:visa?decline', "
        "'sim:mastercard?corrupt=sdad', 'sim:visa?slow=0.2&expired'. Exit status 0 when "
        "approved or sent online, 1 for any other outcome, 2 for bad input (an unknown card "
        "profile or behaviour among them).",
    )
    parser.add_argument("--reader", required=True, help="reader URL (sim:, replay:, pcsc:, nfc:)")
    parser.add_argument("--amount", required=True, help="amount in major units, e.g. 12.34")
    parser.add_argument(
        "--currency", type=int, help="ISO 4217 numeric code (default: the terminal's)"
    )
    parser.add_argument("--params", help="parameter file (default: the embedded defaults)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a card")
    parser.add_argument(
        "--record",
        help="write the exchange as a replayable JSON transcript (it holds the card data in "
        "the clear: record test cards only)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_transact_command)


def _open(url: str) -> CardReader:
    """The reader `url` names. What the virtual cards behind `sim:` and `replay:` refuse (an
    unknown profile or behaviour, a bad value, a transcript that is not one) is the URL's
    fault: bad input, with the form the URL takes."""
    try:
        return open_reader(url)
    except DriverError:
        raise  # a driver's own verdict: an unknown scheme is bad input, a device missing not
    except PiposError as exc:
        # Only the virtual-card provider raises anything else here: the drivers translate
        # every library's errors, and the simulator is reached through its entry point.
        form = (
            "replay:PATH names a transcript written by pipos emv transact --record"
            if url.lower().startswith("replay:")
            else f"a simulated card is written {SIM_URL_FORM}, e.g. 'sim:visa?decline' "
            "(pipos emv transact --help shows more)"
        )
        raise ServiceCommandError(f"reader {url!r}: {exc}; {form}") from exc


class _RecordingReader(CardReader):
    """Passes every exchange through and keeps a copy for a replay transcript."""

    def __init__(self, inner: CardReader) -> None:
        self.url = inner.url
        self._inner = inner
        self.exchanges: list[tuple[bytes, bytes]] = []

    def wait_for_card(self, timeout: float | None = None, cancel: object = None) -> CardPresence:
        return self._inner.wait_for_card(timeout)

    def transceive(self, command: bytes) -> bytes:
        response = self._inner.transceive(command)
        self.exchanges.append((command, response))
        return response

    def wait_for_removal(self, timeout: float | None = None, cancel: object = None) -> None:
        self._inner.wait_for_removal(timeout)

    def close(self) -> None:
        self._inner.close()

    def recorded_inputs(self) -> RecordedInputs | None:
        return self._inner.recorded_inputs()

    def replay_report(self) -> dict[str, list[str]] | None:
        return self._inner.replay_report()


def _transact_command(args: argparse.Namespace) -> int:
    # Imported here so that other commands start without loading the kernel.
    from ..checkout.card_session import new_request, run_card_transaction

    params: TerminalParams = load_params(args.params) if args.params else default_params()
    currency_code = args.currency if args.currency is not None else params.terminal.currency_code
    try:
        currency(currency_code)
        amount = parse_amount(args.amount, currency_code)
    except (AmountError, UnknownCurrencyError) as exc:
        print(f"pipos emv transact: {exc}", file=sys.stderr)
        return 2
    # Every exchange is kept: for a transcript (--record) and for the commands the card did
    # not answer (--json).
    recorder = _RecordingReader(_open(args.reader))
    active: CardReader = recorder
    try:
        try:
            active.wait_for_card(timeout=args.timeout)
        except DriverError as exc:
            print(f"pipos emv transact: {exc}", file=sys.stderr)
            return 1
        request = new_request(
            amount,
            currency=currency_code,
            clock=datetime.now,
            random_bytes=secrets.token_bytes,
            reader=active,
        )
        result = run_card_transaction(active, params, request)
    finally:
        active.close()
    summary = result.outcome.summary()
    summary["amount"] = format_amount(amount, currency_code)
    # The ICC data (DE 55) the terminal would send the acquirer, and what the card refused.
    summary["online_data"] = {
        f"{tag:X}": value.hex().upper()
        for tag, value in result.outcome.card_data.icc_data().items()
    }
    summary["unanswered"] = _unanswered(recorder.exchanges)
    replay = recorder.replay_report()
    if replay is not None:
        summary["replay"] = replay
    if args.record:
        _write_transcript(
            Path(args.record), recorder, request.unpredictable_number, request.date, request.time
        )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'Amount':<14} {summary['amount']}")
        for key, label in _FIELDS:
            value = summary.get(key)
            if value in (None, "") and key == "reason":
                continue
            print(f"{label:<14} {value if value not in (None, '') else '-'}")
        for bit in result.outcome.tvr_bits:
            print(f"{'':<14}   TVR: {bit}")
    return 0 if result.outcome.approved or str(result.outcome.kind) == "online_request" else 1


#: Status words that are an answer (ISO 7816-4 §5.6): normal processing, warnings, and the
#: transport's own 61xx / 6Cxx, which the kernel follows with GET RESPONSE or a resend.
_ANSWERED_SW1: Final = frozenset({0x90, 0x61, 0x62, 0x63, 0x6C})


def _unanswered(exchanges: list[tuple[bytes, bytes]]) -> list[dict[str, str]]:
    """The commands the card refused or did not know (6A82 not found, 6A83 no such record,
    6A88 no such data, 6D00 instruction not supported, ...), with their status word."""
    return [
        {"command": command.hex().upper(), "status": response[-2:].hex().upper()}
        for command, response in exchanges
        if len(response) < 2 or response[-2] not in _ANSWERED_SW1
    ]


def _write_transcript(
    path: Path, recorder: _RecordingReader, un: bytes, date: str, time: str
) -> None:
    document = {
        "terminal": {"unpredictable_number": un.hex().upper(), "date": date, "time": time},
        "exchanges": [
            {"command": command.hex().upper(), "response": response.hex().upper()}
            for command, response in recorder.exchanges
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
