"""Transcript replay: a card that answers from a recorded APDU exchange.

Format (JSON)::

    {"terminal": {"unpredictable_number": "hex", "date": "YYMMDD", "time": "HHMMSS"},
     "exchanges": [{"command": "hex", "response": "hex"}, ...]}

The ``terminal`` block is optional. A command is answered as the card answered it, and only
then (ISO 7816-4 v2013 §5.6 status words):

* READ RECORD and GET DATA by their exact P1 P2 (record and SFI; the data object's tag): one
  the card was never asked for gets '6A83' (record not found) or '6A88' (referenced data not
  found), never the next record, so a kernel that reads what the card does not hold fails
  there and then;
* SELECT by the name it selects: another name gets '6A82' (file not found);
* GET PROCESSING OPTIONS and GENERATE AC by instruction, in order (their data hold the
  terminal's unpredictable number and amounts): one whose data differ from the recording is
  answered as recorded and reported in :attr:`ReplayCard.differing`;
* any other instruction the recording never saw gets '6D00' (instruction not supported).

What was not matched (:attr:`ReplayCard.unmatched`) and what was recorded but never asked for
(:attr:`ReplayCard.unused`) are kept for the report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .errors import SimulatorError

log = logging.getLogger(__name__)

UNMATCHED_RESPONSE = bytes.fromhex("6D00")
_SELECT_INS = 0xA4
_READ_RECORD_INS = 0xB2
_GET_DATA_INS = 0xCA
#: Matched on P1 P2 exactly; the answer when the recording has no such exchange.
_BY_REFERENCE: Final = {
    _READ_RECORD_INS: bytes.fromhex("6A83"),  # record not found
    _GET_DATA_INS: bytes.fromhex("6A88"),  # referenced data not found
}
_NOT_FOUND = bytes.fromhex("6A82")  # SELECT: file or application not found
#: Matched by instruction, in order; their data are compared with the recording's.
_IN_ORDER: Final = frozenset({0xA8, 0xAE})  # GET PROCESSING OPTIONS, GENERATE AC
# Uniform contactless ATR (PC/SC Part 3 §3.1.3.2.3) for a replayed ISO 14443-4 card.
REPLAY_ATR = bytes.fromhex("3B8880010000000000000000")


class TranscriptError(SimulatorError):
    """A transcript file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Exchange:
    command: bytes
    response: bytes

    def matches(self, command: bytes) -> bool:
        if len(command) < 4 or len(self.command) < 4:
            return False
        if command[1] != self.command[1]:
            return False
        if command[1] == _SELECT_INS:
            return _select_name(command) == _select_name(self.command)
        if command[1] in _BY_REFERENCE:
            return command[2:4] == self.command[2:4]
        return True


def _unmatched_answer(command: bytes) -> bytes:
    if len(command) < 2:
        return UNMATCHED_RESPONSE
    if command[1] == _SELECT_INS:
        return _NOT_FOUND
    return _BY_REFERENCE.get(command[1], UNMATCHED_RESPONSE)


def _select_name(command: bytes) -> bytes:
    if len(command) < 5:
        return b""
    length = command[4]
    return command[5 : 5 + length]


@dataclass(frozen=True, slots=True)
class TerminalInputs:
    unpredictable_number: bytes
    date: str
    time: str


@dataclass(frozen=True, slots=True)
class Transcript:
    exchanges: tuple[Exchange, ...]
    terminal: TerminalInputs | None = None

    @classmethod
    def load(cls, path: str | Path) -> Transcript:
        source = Path(path)
        try:
            raw = json.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TranscriptError(f"{source}: cannot read transcript: {exc.strerror}") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TranscriptError(f"{source}: not a JSON transcript: {exc}") from exc
        return cls.from_json(raw, str(source))

    @classmethod
    def from_json(cls, raw: object, source: str = "transcript") -> Transcript:
        if not isinstance(raw, dict):
            raise TranscriptError(f"{source}: expected a JSON object with 'exchanges'")
        exchanges_raw = raw.get("exchanges")
        if not isinstance(exchanges_raw, list) or not exchanges_raw:
            raise TranscriptError(f"{source}: 'exchanges' must be a non-empty list")
        exchanges = []
        for index, item in enumerate(exchanges_raw):
            if not isinstance(item, dict):
                raise TranscriptError(f"{source}: exchanges[{index}] must be an object")
            command = _hex_field(item, "command", f"{source}: exchanges[{index}]", min_bytes=4)
            response = _hex_field(item, "response", f"{source}: exchanges[{index}]", min_bytes=2)
            exchanges.append(Exchange(command, response))
        terminal: TerminalInputs | None = None
        terminal_raw = raw.get("terminal")
        if terminal_raw is not None:
            where = f"{source}: terminal"
            if not isinstance(terminal_raw, dict):
                raise TranscriptError(f"{where} must be an object")
            un = _hex_field(terminal_raw, "unpredictable_number", where, min_bytes=4)
            if len(un) != 4:
                raise TranscriptError(f"{where}.unpredictable_number must be 4 bytes")
            date = _digits_field(terminal_raw, "date", where)
            time = _digits_field(terminal_raw, "time", where)
            terminal = TerminalInputs(un, date, time)
        return cls(tuple(exchanges), terminal)


def _hex_field(obj: dict[str, object], name: str, where: str, *, min_bytes: int) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise TranscriptError(f"{where}.{name} must be a hex string")
    try:
        data = bytes.fromhex(value)
    except ValueError as exc:
        raise TranscriptError(f"{where}.{name} is not hex: {value[:40]!r}") from exc
    if len(data) < min_bytes:
        raise TranscriptError(f"{where}.{name} must be at least {min_bytes} bytes")
    return data


def _digits_field(obj: dict[str, object], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or len(value) != 6 or not value.isdigit():
        raise TranscriptError(f"{where}.{name} must be six digits")
    return value


@dataclass
class ReplayCard:
    """Answers commands from a :class:`Transcript`; records what it could not match."""

    transcript: Transcript
    uid: bytes = bytes.fromhex("08A1B2C3")
    atr: bytes = REPLAY_ATR
    used: list[bool] = field(default_factory=list)
    unmatched: list[bytes] = field(default_factory=list)
    #: GPO and GENERATE AC answered as recorded although their data differ: (sent, recorded).
    differing: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.used = [False] * len(self.transcript.exchanges)

    def transceive(self, command: bytes) -> bytes:
        exchanges = self.transcript.exchanges
        found = next(
            (i for i, e in enumerate(exchanges) if not self.used[i] and e.matches(command)), None
        )
        if found is None and len(command) >= 2 and command[1] not in _IN_ORDER:
            # A record, a data object or an application asked for again: the card answers the
            # same (they are the card's data, not a step of the transaction).
            found = next((i for i, e in enumerate(exchanges) if e.matches(command)), None)
        if found is not None:
            self.used[found] = True
            exchange = exchanges[found]
            if command[1] in _IN_ORDER and command != exchange.command:
                self.differing.append((command, exchange.command))
                log.warning(
                    "replay: %s differs from the recorded %s", command.hex(), exchange.command.hex()
                )
            return exchange.response
        self.unmatched.append(command)
        answer = _unmatched_answer(command)
        log.warning(
            "replay: command %s is not in the transcript; answered %s", command.hex(), answer.hex()
        )
        return answer

    def recorded_inputs(self) -> tuple[bytes, str, str] | None:
        terminal = self.transcript.terminal
        if terminal is None:
            return None
        return terminal.unpredictable_number, terminal.date, terminal.time

    def report(self) -> dict[str, list[str]]:
        """What could not be answered as recorded, hex: `unmatched` commands, `unused`
        recorded commands, `differing` GPO / GENERATE AC ("sent != recorded")."""
        return {
            "unmatched": [c.hex().upper() for c in self.unmatched],
            "unused": [e.command.hex().upper() for e in self.unused],
            "differing": [f"{s.hex().upper()} != {r.hex().upper()}" for s, r in self.differing],
        }

    @property
    def unused(self) -> list[Exchange]:
        return [e for e, used in zip(self.transcript.exchanges, self.used, strict=True) if not used]
