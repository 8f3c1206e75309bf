"""The per-transaction reconciliation report, terminal vs host (issue 18 item 5):
``GET /api/v1/reconciliation?batch=current|<batch_id>``, for a register or the checkout
page. What the lines and flags mean is terminal.checkout.report's docstring (and
docs/api.md, "Reconciliation report")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, Field

from ..checkout.report import CURRENT, batch_report
from .common import ok_answers
from .settings import RouteKit

__all__ = ["ReconciliationLine", "ReconciliationReportModel", "install"]

#: A batch id as the acquirer gives it (or "current").
BATCH_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

FlagName = Literal[
    "match",
    "amount_differs",
    "state_differs",
    "missing_at_host",
    "unknown_at_terminal",
    "host_unreachable",
    "not_sent",
]


class ReconciliationLine(BaseModel):
    """One transaction: the terminal's side beside the host's, and its flag."""

    transaction_id: str | None = Field(description="null for a line only the host has")
    kind: str = Field(
        description="sale, refund, void, preauth (a hold: moves no money), increment (raises "
        "a hold), capture (takes a hold: moves its amount, like a sale), release (gives a hold "
        "back); for a line only the host has, the host's kind"
    )
    flag: FlagName
    explanation: str = Field(description="why, in a sentence (English)")
    terminal_state: str | None = Field(description="the journal's state")
    terminal_outcome: str | None = Field(
        description="what it means at the host: approved, voided, declined, none, not_sent"
    )
    terminal_amount: int | None = Field(description="minor units")
    currency: int | None = Field(description="ISO 4217 numeric")
    host_ref: str | None
    host_state: str | None = Field(
        description="the host's status (approved, declined, reversed, voided; a hold's: "
        "captured, released, expired); null when not known"
    )
    host_amount: int | None = Field(description="minor units")


class CurrencyDifference(BaseModel):
    currency: int
    terminal_net: int = Field(
        description="sales and captures less refunds the terminal holds (minor units)"
    )
    host_net: int = Field(description="the same at the host")
    difference: int = Field(description="terminal_net - host_net")


class ReconciliationReportModel(BaseModel):
    """The report of one batch."""

    batch: str = Field(description='as asked: "current" or a batch id')
    batch_id: str | None = Field(description="null for the open batch")
    open: bool
    generated_at: str = Field(description="ISO 8601, the terminal's clock")
    host_reachable: bool = Field(description="false: some lines are host_unreachable")
    host_lists_transactions: bool = Field(
        description="whether the host could list what the terminal lacks (unknown_at_terminal); "
        "the pipos protocol cannot: always false"
    )
    lines: list[ReconciliationLine]
    counts: dict[str, int] = Field(description="lines per flag (every flag, 0 included)")
    differences: int = Field(
        description="lines that differ: amount_differs, state_differs, missing_at_host, "
        "unknown_at_terminal"
    )
    totals: list[CurrencyDifference] = Field(
        description="per currency, over the lines both sides answered for"
    )
    running: int = Field(description="transactions of the batch still running, left out")


def install(app: FastAPI, kit: RouteKit) -> None:
    """Adds this module's routes to `app`."""

    @app.get(
        "/api/v1/reconciliation",
        tags=["end of day"],
        response_model=None,
        responses=ok_answers(ReconciliationReportModel, 404, 422),
    )
    def reconciliation(
        batch: Annotated[
            str,
            Query(
                pattern=BATCH_PATTERN,
                description='"current" (the open batch) or a closed batch\'s id',
            ),
        ] = CURRENT,
        who: str = Depends(kit.register),
    ) -> dict[str, Any]:
        """Every finished transaction of the batch in the terminal's journal beside what the
        acquirer host says of it (one lookup each), flagged: `match`, `amount_differs`,
        `state_differs` (among them a transaction whose answer was lost that the host did,
        and a hold open at the terminal that lapsed at the host), `missing_at_host`,
        `unknown_at_terminal`, `host_unreachable` (the
        host could not be asked: the report still answers, the lines marked), `not_sent`
        (an offline sale still in the queue: expected, not a difference); `counts` per
        flag, `differences`, and per currency the net amounts of both sides. An unknown
        batch: 404 not_found."""
        del who
        return batch_report(kit.checkout, batch)
