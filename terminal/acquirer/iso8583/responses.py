"""What an ISO 8583 response code (field 39) means to the terminal: one table.

Each code is one of the link's outcomes, which says what the link does with the answer
(terminal.acquirer.iso8583.link), the checkout result a sale or pre-authorisation answered
with it ends in, and its words for the merchant in every language the terminal speaks
(terminal.domain.messages, the one copy of them: the pipos protocol's host answers the same
codes). A code the table does not have is a decline, shown with its code ("Declined by the
bank (77)"): an acquirer's own codes are declines unless its profile says otherwise.

Codes: ISO 8583:1987 Annex A (field 39, "response code"), as acquirers use them; Q1 is the
pipos host's "card authentication required".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from ...domain.messages import Result, response_text
from .messages import APPROVED_CODES

__all__ = ["RESPONSES", "ResponseCode", "ResponseOutcome", "meaning_of"]


class ResponseOutcome(StrEnum):
    """What an answer with the code did, to the link."""

    #: The money moved (or the hold, the refund, the void, the advice was booked).
    APPROVED = "approved"
    #: The issuer or the card's scheme said no: processed, and refused.
    DECLINED = "declined"
    #: The host refused the request as sent (not valid for it, this terminal or this
    #: transaction): nothing was processed.
    REFUSED = "refused"
    #: The host found the request's MAC missing or wrong: nothing was processed; the link
    #: exchanges keys again before the next message.
    SECURITY = "security"
    #: The host could not process it now: nothing was processed; try again later.
    HOST_FAULT = "host_fault"
    #: The reconciliation's totals are not the host's: the batch upload (0320) follows.
    OUT_OF_BALANCE = "out_of_balance"


@dataclass(frozen=True, slots=True)
class ResponseCode:
    code: str
    outcome: ResponseOutcome
    #: How a sale (or a pre-authorisation: its own results are chosen by the checkout)
    #: answered with this code ends.
    result: Result

    def text(self, language: str) -> str:
        """The code with its words ("51 insufficient funds"), or the code alone."""
        words = response_text(self.code, language)
        return f"{self.code} {words}" if words else self.code

    @property
    def approved(self) -> bool:
        return self.outcome is ResponseOutcome.APPROVED

    @property
    def processed(self) -> bool:
        """Whether the host acted on the request (approved or declined it)."""
        return self.outcome in (ResponseOutcome.APPROVED, ResponseOutcome.DECLINED)


def _table(
    rows: tuple[tuple[ResponseOutcome, Result, tuple[str, ...]], ...],
) -> Mapping[str, ResponseCode]:
    table: dict[str, ResponseCode] = {}
    for outcome, result, codes in rows:
        for code in codes:
            assert code not in table, code  # one meaning per code
            table[code] = ResponseCode(code, outcome, result)
    return MappingProxyType(dict(sorted(table.items())))


_O = ResponseOutcome
#: Every response code the terminal knows, by code.
RESPONSES: Final[Mapping[str, ResponseCode]] = _table(
    (
        # 00 approved, 08 honour with identification, 11 approved (VIP): docs/iso8583.md,
        # "Messages".
        (_O.APPROVED, Result.APPROVED, tuple(sorted(APPROVED_CODES))),
        (
            _O.DECLINED,
            Result.DECLINED_BY_ISSUER,
            (
                "10",  # approved for a partial amount: not taken, reversed (link.authorise)
                "01",  # refer to card issuer
                "04",  # pick up card
                "05",  # do not honour
                "14",  # invalid card number
                "41",  # lost card
                "43",  # stolen card
                "51",  # insufficient funds
                "54",  # expired card
                "55",  # incorrect PIN
                "57",  # transaction not permitted to cardholder
                "59",  # suspected fraud
                "61",  # exceeds withdrawal amount limit
                "62",  # restricted card
                "65",  # exceeds withdrawal frequency limit
                "75",  # allowable number of PIN tries exceeded
                "91",  # issuer or switch inoperative
                "Q1",  # card authentication required (the pipos host)
            ),
        ),
        (
            _O.REFUSED,
            Result.HOST_ERROR,
            (
                "03",  # invalid merchant
                "12",  # invalid transaction (a void of an unknown sale)
                "13",  # invalid amount
                "30",  # format error
                "58",  # transaction not permitted to terminal (not registered)
                "94",  # duplicate transmission (same STAN and time, other content)
            ),
        ),
        (_O.SECURITY, Result.HOST_ERROR, ("63",)),  # security violation (the MAC)
        (_O.HOST_FAULT, Result.HOST_ERROR, ("96",)),  # system malfunction
        (_O.OUT_OF_BALANCE, Result.HOST_ERROR, ("95",)),  # reconcile error
    )
)


def meaning_of(code: str) -> ResponseCode:
    """What `code` means; a code not in the table is a decline shown with its code."""
    found = RESPONSES.get(code)
    if found is not None:
        return found
    return ResponseCode(code, ResponseOutcome.DECLINED, Result.DECLINED_BY_ISSUER)
