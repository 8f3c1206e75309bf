"""Exceptions of the virtual cards (all rooted in :class:`simulator.errors.SimulatorError`).

Card *answers* (status words such as '6985' or '6A82') are values, never exceptions. These
exceptions are for the things that are not an answer: the card has left the field, a card
profile is unusable, or a scripted card met a command its script did not expect.
"""

from __future__ import annotations

from simulator.errors import SimulatorError


class CardError(SimulatorError):
    """Root of the virtual card exceptions."""


class VirtualCardRemovedError(CardError):
    """The card left the reader's field: no response will come (the reader sees a timeout)."""

    def __init__(self, commands_answered: int) -> None:
        self.commands_answered = commands_answered
        super().__init__(f"card removed from the field after {commands_answered} commands")


class ProfileError(CardError):
    """A card profile (simulator/data/cards/*.json) is missing, malformed or inconsistent."""

    def __init__(self, profile: str, problem: str, field: str | None = None) -> None:
        self.profile = profile
        self.field = field
        self.problem = problem
        where = f"{profile}: {field}" if field else profile
        super().__init__(f"card profile {where}: {problem}")


class BehaviourError(CardError):
    """Behaviour options that cannot be combined or are unknown."""


class UnexpectedCommand(CardError, AssertionError):  # noqa: N818 - the name the tests read
    """A :class:`~simulator.cards.scripted.ScriptedCard` received a command it did not expect.

    Also an ``AssertionError`` so pytest reports it as a test failure.
    """

    def __init__(self, index: int, expected: str, actual: bytes) -> None:
        self.index = index
        self.expected = expected
        self.actual = bytes(actual)
        super().__init__(
            f"exchange {index}: expected command {expected}, got {self.actual.hex().upper()}"
        )
