"""The register's display request shown on the checkout page between sales, and the
customer's tip (docs/api.md, "Display request" and "Tips").

Display: ``PUT /api/v1/display`` (a message, basket lines, a total), ``GET`` reads it,
``DELETE`` clears it. It is kept in memory only (a restart clears it: the register sends it
again), published to the page and every event stream as a ``display`` event, and cleared
when a sale starts (the sale's screen replaces it).

Tips: with tip entry on (``pipos run --tips``, the configuration file's ``checkout.tips``) a
card sale waits in ``waiting_for_tip``; ``GET /api/v1/transactions/{id}/tip`` gives the
offer (each preset's tip, rounded half up to the minor unit), ``POST`` sets the tip chosen
and the card is then asked for the total."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Final

from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ..checkout.events import EventHub
from ..checkout.flow import Checkout
from ..domain.currency import CURRENCIES, MAX_EMV_AMOUNT, format_amount
from ..domain.records import Kind, Stage, State
from ..domain.tips import MAX_TIP_PERCENT, tip_for
from .common import ApiError, Body, currency_code, ok_answers
from .models import TransactionView
from .settings import RouteKit

__all__ = [
    "DISPLAY_EVENT",
    "MAX_LINES",
    "MAX_LINE_TEXT",
    "MAX_MESSAGE",
    "DisplayBoard",
    "DisplayBody",
    "DisplayView",
    "TipBody",
    "TipOffer",
    "install",
]

#: The event type the page (and every event stream) gets the display by.
DISPLAY_EVENT: Final = "display"
MAX_MESSAGE: Final = 120
MAX_LINE_TEXT: Final = 40
MAX_LINES: Final = 50
#: Quantities above this are a register's typing error, not a basket line.
MAX_QUANTITY: Final = 99_999


# --- bodies and answers ----------------------------------------------------------------


class DisplayLineBody(Body):
    text: StrictStr = Field(min_length=1, max_length=MAX_LINE_TEXT, description="the item")
    quantity: StrictInt = Field(default=1, ge=1, le=MAX_QUANTITY)
    amount: StrictInt = Field(
        ge=-MAX_EMV_AMOUNT,
        le=MAX_EMV_AMOUNT,
        description="the line's amount in minor units (quantity included; negative: a discount)",
    )


class DisplayBody(Body):
    message: StrictStr = Field(default="", max_length=MAX_MESSAGE, description="a line of text")
    lines: list[DisplayLineBody] = Field(default_factory=list, max_length=MAX_LINES)
    total: StrictInt | None = Field(
        default=None, ge=0, le=MAX_EMV_AMOUNT, description="minor units; null: none shown"
    )
    currency: StrictInt | StrictStr | None = Field(
        default=None,
        description="ISO 4217 numeric (978) or alphabetic (EUR); the terminal's own (the "
        "only one accepted) when left out",
    )


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DisplayLine(_Answer):
    text: str
    quantity: int
    amount: int
    amount_text: str


class DisplayView(_Answer):
    """What the checkout page shows between sales (`shown` false: nothing, the idle screen)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "shown": True,
                    "message": "Thank you!",
                    "lines": [
                        {"text": "Coffee", "quantity": 2, "amount": 500, "amount_text": "5.00 EUR"}
                    ],
                    "total": 500,
                    "total_text": "5.00 EUR",
                    "currency": 978,
                    "currency_alpha": "EUR",
                }
            ]
        },
    )

    shown: bool
    message: str
    lines: list[DisplayLine]
    total: int | None
    total_text: str
    currency: int
    currency_alpha: str


class TipBody(Body):
    tip_amount: StrictInt = Field(
        ge=0,
        le=MAX_EMV_AMOUNT,
        description="minor units; 0: no tip (the card is asked for the base)",
    )


class TipPreset(_Answer):
    percent: int
    tip_amount: int
    tip_text: str
    total: int
    total_text: str


class TipOffer(_Answer):
    """What the tip screen offers for a sale waiting for its tip."""

    id: str
    amount: int = Field(description="the base amount, minor units")
    amount_text: str
    currency: int
    presets: list[TipPreset]
    custom: bool = Field(description="whether a tip amount may be typed")
    max_tip: int = Field(
        description="the largest tip taken, minor units: the sale's own amount (a tip above "
        "it is refused, tip_too_large), or less where the EMV maximum amount comes first"
    )


# --- the display board -------------------------------------------------------------------


def _empty(currency: int) -> dict[str, Any]:
    return {
        "shown": False,
        "message": "",
        "lines": [],
        "total": None,
        "total_text": "",
        "currency": currency,
        "currency_alpha": CURRENCIES[currency].alpha,
    }


#: The transactions whose screen replaces the register's display when they start: those
#: the customer takes part in at the terminal (a card or a code).
_CLEARED_BY: Final = frozenset({Kind.SALE, Kind.PREAUTH})


class DisplayBoard:
    """The display request as it stands (in memory), published on every change; cleared by
    a sale starting (seen on the checkout's event hub, which a follower thread reads)."""

    def __init__(self, events: EventHub, currency: int) -> None:
        self._events = events
        self._currency = currency
        self._lock = threading.Lock()
        self._view = _empty(currency)
        #: The event id of the display's last change (0: none yet).
        self._shown_at = 0
        self._follower = threading.Thread(target=self._follow, name="display", daemon=True)
        self._follower.start()

    @property
    def view(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._view)

    def show(self, view: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._view = dict(view)
            self._shown_at = self._events.publish(DISPLAY_EVENT, self._view)
            return dict(self._view)

    def clear(self) -> dict[str, Any]:
        return self.show(_empty(self._currency))

    def _clear_if_older(self, event_id: int) -> None:
        """Clear what was shown before event `event_id` (a transaction starting): a display
        the register set after it (the basket, sent right after the sale) stays."""
        with self._lock:
            if not self._view["shown"] or self._shown_at > event_id:
                return
            self._view = _empty(self._currency)
            self._shown_at = self._events.publish(DISPLAY_EVENT, self._view)

    def _follow(self) -> None:
        last = self._events.last_id
        # Only a transaction's first event clears: a register may show something while its
        # sale runs (the basket beside "present card"), and the sale's later progress
        # events must not wipe it.
        seen: str | None = None
        while not self._events.closed:
            for event in self._events.after(last, timeout=5.0):
                last = event["id"]
                data = event["data"]
                started = (
                    event["type"] == "transaction"
                    and data.get("kind") in _CLEARED_BY
                    and data.get("state") == State.IN_PROGRESS
                    and data.get("id") != seen
                )
                if started:
                    seen = data.get("id")
                    self._clear_if_older(event["id"])


def _currency_code(value: int | str | None, terminal: int) -> int:
    if value is None:
        return terminal
    code = currency_code(value)
    if code != terminal:
        raise ApiError(
            422,
            "invalid_request",
            f"currency {code:03d} is not this terminal's ({CURRENCIES[terminal].alpha}, "
            f"{terminal:03d}): the display shows amounts in the terminal's currency",
            field="currency",
        )
    return code


def _tip_offer(checkout: Checkout, txn_id: str) -> dict[str, Any]:
    record = checkout.get(txn_id)
    if record.stage is not Stage.WAITING_FOR_TIP or record.finished:
        raise ApiError(
            409,
            "invalid_state",
            f"transaction {txn_id} is not waiting for a tip ({record.stage or record.state})",
            details={"reason": "not_waiting_for_tip"},
        )
    base, code = record.amount, record.currency
    presets = []
    for percent in checkout.tips.presets:
        tip = tip_for(base, percent)
        presets.append(
            {
                "percent": percent,
                "tip_amount": tip,
                "tip_text": format_amount(tip, code),
                "total": base + tip,
                "total_text": format_amount(base + tip, code),
            }
        )
    return {
        "id": record.id,
        "amount": base,
        "amount_text": format_amount(base, code),
        "currency": code,
        "presets": presets,
        "custom": checkout.tips.custom,
        "max_tip": min(tip_for(base, MAX_TIP_PERCENT), MAX_EMV_AMOUNT - base),
    }


def install(app: FastAPI, kit: RouteKit) -> None:
    """Adds this module's routes to `app`."""
    checkout = kit.checkout
    register = kit.register
    terminal_currency = checkout.params.terminal.currency_code
    board = DisplayBoard(checkout.events, terminal_currency)
    app.state.display = board

    @app.get(
        "/api/v1/display",
        tags=["display"],
        response_model=None,
        responses=ok_answers(DisplayView),
    )
    def get_display(who: str = Depends(register)) -> dict[str, Any]:
        """What the checkout page shows between sales (kept in memory only)."""
        return board.view

    @app.put(
        "/api/v1/display",
        tags=["display"],
        response_model=None,
        responses=ok_answers(DisplayView, 413, 422),
    )
    def put_display(body: DisplayBody, who: str = Depends(register)) -> dict[str, Any]:
        """Show a message and a basket (lines, a total) on the checkout page between sales,
        replacing what was shown. Kept in memory only: a restart of the terminal clears it;
        a sale starting clears it too (the sale's screen replaces it)."""
        code = _currency_code(body.currency, terminal_currency)
        if not body.message and not body.lines and body.total is None:
            raise ApiError(
                422,
                "invalid_request",
                "nothing to show: give a message, lines or a total (DELETE clears the display)",
            )
        view = {
            "shown": True,
            "message": body.message,
            "lines": [
                {
                    "text": line.text,
                    "quantity": line.quantity,
                    "amount": line.amount,
                    "amount_text": format_amount(line.amount, code),
                }
                for line in body.lines
            ],
            "total": body.total,
            "total_text": "" if body.total is None else format_amount(body.total, code),
            "currency": code,
            "currency_alpha": CURRENCIES[code].alpha,
        }
        return board.show(view)

    @app.delete(
        "/api/v1/display",
        tags=["display"],
        response_model=None,
        responses=ok_answers(DisplayView),
    )
    def delete_display(who: str = Depends(register)) -> dict[str, Any]:
        """Clear the display: the page shows its own idle screen."""
        return board.clear()

    @app.get(
        "/api/v1/transactions/{txn_id}/tip",
        tags=["sales"],
        response_model=None,
        responses=ok_answers(TipOffer, 404, 409),
    )
    def tip_offer(txn_id: str, who: str = Depends(register)) -> dict[str, Any]:
        """The tip screen's offer for a sale waiting for its tip: the base amount, each
        preset's tip (rounded half up to the minor unit) and total, whether a tip may be
        typed. 409 for a sale not waiting for a tip."""
        return _tip_offer(checkout, txn_id)

    @app.post(
        "/api/v1/transactions/{txn_id}/tip",
        tags=["sales"],
        response_model=None,
        responses=ok_answers(TransactionView, 404, 409, 413, 422),
    )
    def set_tip(txn_id: str, body: TipBody, who: str = Depends(register)) -> dict[str, Any]:
        """The customer's tip (0: none) for a sale waiting for it: `tip_amount` is kept, the
        amount becomes base + tip (at most the EMV maximum, else 422) and the terminal waits
        for the card, in one commit. 409 for a sale not waiting for a tip."""
        if not checkout.tips.custom and body.tip_amount:
            offer = _tip_offer(checkout, txn_id)
            allowed = {preset["tip_amount"] for preset in offer["presets"]}
            if body.tip_amount not in allowed:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"tip_amount {body.tip_amount} is none of the presets' tips "
                    f"({', '.join(str(a) for a in sorted(allowed))}) and this terminal takes "
                    "no typed tip",
                    field="tip_amount",
                )
        return checkout.view(checkout.set_tip(txn_id, body.tip_amount))
