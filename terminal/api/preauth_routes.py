"""Pre-authorisation, capture, incremental authorisation and release (docs/api.md,
"Pre-authorisation").

A hotel's, a fuel pump's or a rental desk's register asks for a hold on the card
(``POST /api/v1/preauths``, run at the reader like a sale), raises it without the card
(``/increments``), then captures all or part of it (``/capture``, the rest released) or
releases it (``/release``). The register does these without the merchant: its token (or the
page's session) is enough, no merchant PIN. Every change needs an Idempotency-Key, so a
register that lost an answer retries it safely: the bank sees one capture."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StrictInt, StrictStr

from ..domain.currency import MAX_EMV_AMOUNT
from ..domain.records import TxnRecord
from .common import REF_PATTERN, ApiError, Body, currency_code, ok_answers
from .models import TransactionView
from .settings import RouteKit

__all__ = ["CaptureBody", "IncrementBody", "PreauthBody", "install"]

#: The transaction id in a path: what the journal's ids are made of.
_TXN_ID: Final = r"^[A-Za-z0-9_-]{1,64}$"
_KEY_MAX: Final = 255


class PreauthBody(Body):
    amount: StrictInt = Field(
        gt=0, le=MAX_EMV_AMOUNT, description="the amount to hold, in minor units (1234 = 12.34)"
    )
    currency: StrictInt | StrictStr = Field(
        description="ISO 4217 numeric (978) or alphabetic (EUR) code"
    )
    external_reference: str = Field(default="", pattern=r"^$|" + REF_PATTERN, max_length=64)


class IncrementBody(Body):
    amount: StrictInt = Field(
        gt=0, le=MAX_EMV_AMOUNT, description="what to add to the hold, in minor units"
    )
    external_reference: str = Field(default="", pattern=r"^$|" + REF_PATTERN, max_length=64)


class CaptureBody(Body):
    amount: StrictInt | None = Field(
        default=None,
        gt=0,
        le=MAX_EMV_AMOUNT,
        description="minor units, 1 up to what is held; default: all of the hold",
    )
    external_reference: str = Field(default="", pattern=r"^$|" + REF_PATTERN, max_length=64)


class ReleaseBody(Body):
    external_reference: str = Field(default="", pattern=r"^$|" + REF_PATTERN, max_length=64)


ChangeKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required: 1 to 255 printable ASCII characters, new for each change of "
        "the hold and sent again, unchanged, with a retry of it (docs/api.md, Idempotency): "
        "the retry gets the first answer, and the bank sees the change once.",
        json_schema_extra={"maxLength": _KEY_MAX, "pattern": "^[ -~]+$"},
    ),
]
StartKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Optional, as for a sale: a retry with the same key answers with the "
        "pre-authorisation it started, as it stands now.",
        json_schema_extra={"maxLength": _KEY_MAX, "pattern": "^[ -~]+$"},
    ),
]
TxnId = Annotated[str, Path(pattern=_TXN_ID, description="the pre-authorisation's id")]


def _required(key: str | None) -> str:
    if key is None:
        raise ApiError(
            422,
            "invalid_request",
            "a change of a pre-authorisation needs an Idempotency-Key header (a UUID is "
            "usual), so a retry can never change the hold twice",
            field="Idempotency-Key",
        )
    return key


#: What each change answers besides its success: the errors of docs/api.md.
_CHANGE_ERRORS: Final = (404, 409, 413, 422, 503)


def install(app: FastAPI, kit: RouteKit) -> None:
    """Adds this module's routes to `app`."""
    checkout = kit.checkout

    def answer(who: str, event: str, record: TxnRecord, status: int = 200) -> JSONResponse:
        kit.audit(event, who, record)
        return JSONResponse(checkout.view(record), status_code=status)

    @app.post(
        "/api/v1/preauths",
        status_code=202,
        tags=["pre-authorisations"],
        response_model=None,
        responses=ok_answers(TransactionView, 409, 413, 422, 503, code=202),
    )
    def create_preauth(
        request: Request,
        body: PreauthBody,
        who: str = Depends(kit.register),
        idempotency_key: StartKey = None,
    ) -> JSONResponse:
        """Start a pre-authorisation: the terminal waits for a card and asks the bank to
        hold `amount` (never offline: with the bank unreachable it ends declined,
        `preauth_declined`). Poll the transaction or follow /api/v1/events, as for a sale.
        409 when another transaction is running; 503 on a terminal with no bank."""

        def run() -> JSONResponse:
            code = currency_code(body.currency)
            record = checkout.preauthorise(body.amount, code, external_ref=body.external_reference)
            return answer(who, "preauth", record, 202)

        return kit.idempotent(request, who, idempotency_key, body.model_dump(), run, current=True)

    @app.post(
        "/api/v1/preauths/{txn_id}/increments",
        tags=["pre-authorisations"],
        response_model=None,
        responses=ok_answers(TransactionView, *_CHANGE_ERRORS),
    )
    def increment(
        request: Request,
        txn_id: TxnId,
        body: IncrementBody,
        who: str = Depends(kit.register),
        idempotency_key: ChangeKey = None,
    ) -> JSONResponse:
        """Raise an open hold by `amount`, without the card. Answers with the increment
        (approved, or declined by the bank: the hold stays as it was)."""
        key = _required(idempotency_key)
        return kit.idempotent(
            request,
            who,
            key,
            body.model_dump(),
            lambda: answer(
                who,
                "increment",
                checkout.increment(txn_id, body.amount, external_ref=body.external_reference),
            ),
            current=True,
        )

    @app.post(
        "/api/v1/preauths/{txn_id}/capture",
        tags=["pre-authorisations"],
        response_model=None,
        responses=ok_answers(TransactionView, *_CHANGE_ERRORS),
    )
    def capture(
        request: Request,
        txn_id: TxnId,
        body: CaptureBody,
        who: str = Depends(kit.register),
        idempotency_key: ChangeKey = None,
    ) -> JSONResponse:
        """Take `amount` (default: all) of an open hold, once; the bank releases the rest.
        409 (`reason` captured, released, expired, not_open) when the hold is closed; 422
        (`reason` over_hold) when the amount is more than it holds."""
        key = _required(idempotency_key)
        return kit.idempotent(
            request,
            who,
            key,
            body.model_dump(),
            lambda: answer(
                who,
                "capture",
                checkout.capture(txn_id, body.amount, external_ref=body.external_reference),
            ),
            current=True,
        )

    @app.post(
        "/api/v1/preauths/{txn_id}/release",
        tags=["pre-authorisations"],
        response_model=None,
        responses=ok_answers(TransactionView, *_CHANGE_ERRORS),
    )
    def release(
        request: Request,
        txn_id: TxnId,
        body: ReleaseBody | None = None,
        who: str = Depends(kit.register),
        idempotency_key: ChangeKey = None,
    ) -> JSONResponse:
        """Give an open hold back whole (the body may be left out). 409 (`reason`) when it
        is closed already."""
        key = _required(idempotency_key)
        given = body or ReleaseBody()
        return kit.idempotent(
            request,
            who,
            key,
            given.model_dump(),
            lambda: answer(
                who, "release", checkout.release(txn_id, external_ref=given.external_reference)
            ),
            current=True,
        )
