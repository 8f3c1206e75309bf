"""A strict scripted card: it answers a fixed list of exchanges, in order, and nothing else.

Each exchange is ``(expected, response)``: ``expected`` is the exact command (hex string,
spaces allowed, or bytes) or a matcher (any callable ``bytes -> bool``; see :func:`prefix`
and :data:`ANY`); ``response`` is the R-APDU with its status word (hex or bytes). A command
that does not match the next exchange, or comes after the last, raises
:class:`UnexpectedCommand` naming both the expected and the actual bytes. Because a caller
might catch the exception and carry on, the failure is also remembered and
:meth:`ScriptedCard.assert_finished` raises it again, as it does when exchanges are left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import UnexpectedCommand, VirtualCardRemovedError

Matcher = Callable[[bytes], bool]
Expected = str | bytes | Matcher


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


@dataclass(frozen=True)
class _Prefix:
    head: bytes

    def __call__(self, command: bytes) -> bool:
        return command.startswith(self.head)

    def __repr__(self) -> str:
        return f"a command starting {self.head.hex().upper()}"


def prefix(head: str | bytes) -> Matcher:
    """Match any command that starts with these bytes (e.g. ``prefix("80AE")``)."""
    return _Prefix(_hex(head) if isinstance(head, str) else bytes(head))


class _Any:
    def __call__(self, command: bytes) -> bool:
        return True

    def __repr__(self) -> str:
        return "any command"


#: Match any command.
ANY: Matcher = _Any()


@dataclass(frozen=True)
class Exchange:
    expected: bytes | Matcher
    response: bytes

    def matches(self, command: bytes) -> bool:
        if isinstance(self.expected, bytes):
            return command == self.expected
        return self.expected(command)

    def describe(self) -> str:
        if isinstance(self.expected, bytes):
            return self.expected.hex().upper()
        return repr(self.expected)


class ScriptedCard:
    """A card that plays a script; same field interface as :class:`VirtualCard`."""

    def __init__(
        self,
        exchanges: Iterable[tuple[Expected, str | bytes]],
        *,
        atr: bytes = bytes.fromhex("3B8980015049504F532053494D2A"),
        uid: bytes = bytes.fromhex("08112233"),
    ) -> None:
        self.exchanges: list[Exchange] = []
        for expected, response in exchanges:
            if isinstance(expected, str):
                want: bytes | Matcher = _hex(expected)
            elif isinstance(expected, bytes | bytearray):
                want = bytes(expected)
            else:
                want = expected
            answer = _hex(response) if isinstance(response, str) else bytes(response)
            self.exchanges.append(Exchange(want, answer))
        self.atr = atr
        self.uid = uid
        self.removed = False
        self.position = 0
        self.failures: list[UnexpectedCommand] = []
        self.transcript: list[tuple[bytes, bytes]] = []

    @classmethod
    def from_transcript(cls, exchanges: Sequence[Mapping[str, str]]) -> ScriptedCard:
        """From ``[{"command": hex, "response": hex}, ...]`` (the replay transcript format)."""
        return cls((item["command"], item["response"]) for item in exchanges)

    def power_on(self) -> bytes:
        if self.removed:
            raise VirtualCardRemovedError(self.position)
        return self.atr

    def reset(self) -> bytes:
        return self.atr

    def transceive(self, c_apdu: bytes) -> bytes:
        command = bytes(c_apdu)
        if self.removed:
            raise VirtualCardRemovedError(self.position)
        if self.position >= len(self.exchanges):
            failure = UnexpectedCommand(self.position, "nothing (script finished)", command)
            self.failures.append(failure)
            raise failure
        exchange = self.exchanges[self.position]
        if not exchange.matches(command):
            failure = UnexpectedCommand(self.position, exchange.describe(), command)
            self.failures.append(failure)
            raise failure
        self.position += 1
        self.transcript.append((command, exchange.response))
        return exchange.response

    @property
    def remaining(self) -> int:
        return len(self.exchanges) - self.position

    def assert_finished(self) -> None:
        """Raise the first unexpected command seen, or an AssertionError if exchanges are
        left unused."""
        if self.failures:
            raise self.failures[0]
        if self.remaining:
            nxt = self.exchanges[self.position]
            raise AssertionError(
                f"{self.remaining} scripted exchange(s) not used; next expected {nxt.describe()}"
            )
