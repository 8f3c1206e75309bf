"""What every route module of the local API shares: its one error (ApiError, answered in
the error envelope), the envelope's JSON, the OpenAPI's error answers per status, the base
of request bodies (terminal.api.settings has RouteKit, what create_api hands a route module).

Route modules (terminal.api.pairing, ...) import this, never terminal.api.server, so the
server imports them without a cycle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ..domain.currency import CURRENCIES
from ..domain.errors import TerminalError
from .models import ErrorEnvelope

__all__ = [
    "REF_PATTERN",
    "STATUS_TEXT",
    "ApiError",
    "Body",
    "currency_code",
    "error_answers",
    "error_response",
    "ok_answers",
]

#: A register's reference (external_reference, a transaction id in a body).
REF_PATTERN: Final = r"^[A-Za-z0-9._:/#-]{1,64}$"


class ApiError(TerminalError):
    """A refusal the API answers in the error envelope, with its status and code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
        details: Mapping[str, int | str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        #: What the error carries besides its message (tries_left; retry_after, reason).
        self.details = dict(details or {})


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    headers = {}
    if extra.get("field"):
        body["field"] = extra["field"]
    body.update(extra.get("details") or {})
    if extra.get("retry_after"):
        headers["Retry-After"] = str(extra["retry_after"])
    return JSONResponse({"error": body}, status_code=status, headers=headers)


#: What each error status means, as the OpenAPI says it (the module docstring in full).
STATUS_TEXT: Final[Mapping[int, str]] = {
    400: "Malformed body (not JSON, not an object), or a Host header the terminal does not "
    "answer to (host_not_allowed)",
    401: "Missing or unknown token (unauthorised), or a page session that ended",
    403: "Wrong merchant PIN (wrong_pin; `tries_left`)",
    404: "Unknown transaction or batch, or a sale without a merchant-presented code",
    409: "Busy, wrong state (`reason`), no printer, reference in use, or a request with this "
    "Idempotency-Key still running (idempotency_in_progress)",
    413: "Request body over 16 KiB (body_too_large)",
    422: "Invalid field or parameter (`field`), or an Idempotency-Key reused for another request",
    423: "Merchant PIN locked for this caller (pin_locked; `retry_after`, `reason`)",
    503: "Acquirer unavailable (`reason`, message in the terminal's language), printer "
    "failed, no merchant PIN set, or a store that cannot be written",
}


# (`dict[Any, Any]`: merged with an endpoint's own success answers, typed as each is.)
def error_answers(*statuses: int) -> dict[Any, Any]:
    """The `responses` of an endpoint that can answer these error statuses: each in the
    error envelope (which also replaces FastAPI's own ``{"detail": [...]}`` 422, never
    sent). 400 (the Host check) and 401 (the token) hold for every /api/v1 endpoint."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status in sorted({400, 401, *statuses}):
        answer: dict[str, Any] = {"model": ErrorEnvelope, "description": STATUS_TEXT[status]}
        if status == 423:
            answer["headers"] = {
                "Retry-After": {
                    "description": "seconds until the PIN may be tried again",
                    "schema": {"type": "integer"},
                }
            }
        answers[status] = answer
    return answers


def ok_answers(model: type[BaseModel], *statuses: int, code: int = 200) -> dict[int | str, Any]:
    """`responses`: `model` as the success answer's schema (documentation only: the
    endpoint's JSON is sent as built, never filtered through the model), and the errors."""
    return {code: {"model": model}} | error_answers(*statuses)


class Body(BaseModel):
    """A request body: unknown fields are refused (422), never ignored."""

    model_config = ConfigDict(extra="forbid")


def currency_code(value: int | str) -> int:
    """A request's currency, ISO 4217 numeric (978) or alphabetic ("EUR"; "978" as text
    too), as its numeric code; 422 unknown_currency otherwise."""
    if isinstance(value, str):
        for cur in CURRENCIES.values():
            if cur.alpha == value.upper():
                return cur.numeric
        if value.isascii() and value.isdigit() and len(value) == 3 and int(value) in CURRENCIES:
            return int(value)
        raise ApiError(
            422, "unknown_currency", f"unknown ISO 4217 currency {value!r}", field="currency"
        )
    if value not in CURRENCIES:
        raise ApiError(
            422, "unknown_currency", f"unknown ISO 4217 numeric currency {value}", field="currency"
        )
    return value
