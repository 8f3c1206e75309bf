"""The terminal's local HTTP API for the merchant's cash register (ECR), and the checkout page.

FastAPI, bound to 127.0.0.1 unless configured otherwise; OpenAPI at /openapi.json, docs at
/docs (Swagger UI) and /redoc, both served from the terminal itself (no CDN). The document
is typed: the `bearerAuth` security scheme, each endpoint's answers as the models of
terminal.api.models (documentation only: the JSON is sent as built), and every error status
it can answer, in the envelope below (`_errors`). Every /api/v1
call needs ``Authorization: Bearer <register token>`` (the event stream and a sale's QR code
also accept ``?token=``, because a browser's EventSource and ``<img>`` cannot set headers),
or the checkout page's session cookie (below). A register token is a fixed one (`tokens`)
or a paired register's (terminal.api.pairing; revoked: 401 token_revoked); only
``POST /api/v1/pairing``, which hands a new register its token, needs none. Refunds,
voids and the end of day also need the merchant PIN, whoever asks; wrong PINs are rate
limited and then locked out.

The checkout page earns its credential (``terminal.api.kiosk``): ``GET /kiosk?code=`` takes
the one-time code the kiosk launcher read from a 0600 file and answers with an HttpOnly,
SameSite=Strict session cookie; the page's HTML holds no token. The cookie is accepted only
on requests the browser marks as the page's own: ``Sec-Fetch-Site: same-origin`` (or
``none`` for a top-level navigation to ``/``, the kiosk opening the page), and ``Origin``,
when sent, the terminal's own; a request with the cookie and no ``Sec-Fetch-Site`` (not a
browser) is refused. The session ends after hours of disuse and a day at most
(``terminal.api.kiosk``). Every request must name the
terminal in its ``Host`` header: loopback names (127.0.0.1, localhost, [::1], with any port)
and the names the operator allowed (``pipos run --allowed-host NAME``); anything else gets
400, which defeats DNS rebinding. Every response carries a strict Content-Security-Policy
(``frame-ancestors 'none'``), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``
and ``Referrer-Policy: no-referrer``.

Errors are JSON ``{"error": {"code": ..., "message": ..., "field": ...}}`` with a precise
4xx: 400 malformed body or a Host the terminal does not answer to, 401 no/bad token, 403
wrong PIN (``tries_left``: wrong PINs left before a lock-out), 404 unknown transaction, 409
busy, wrong state or no printer configured, 413 body too large (with or without
Content-Length), 422 invalid field, 423 PIN locked for this caller (``retry_after``: seconds,
also in the ``Retry-After`` header; ``reason``: wrong, locked or tampered), 503 acquirer or
printer unavailable, or no merchant PIN set (pin_unavailable). The numbers are there so that
a client (the checkout page) can say it in its own language; where one code covers several
causes, ``reason`` names the cause (invalid_state: offline_not_sent, void_settled,
not_finished, ...; the list is in docs/api.md), and the page's text is the catalogue's
``error_<code>_<reason>`` (else ``error_<code>``) in the terminal's language. ``message`` is
English, for the register, except for 503 acquirer_unavailable, whose ``message`` is in the
terminal's language and whose ``reason`` says why the bank could not be asked
(not_connected, unreachable, no_answer, host_error, pending_refund, pending_void): never an
exception's text. The endpoints are described in docs/api.md.

Every request that moves money (a sale, a refund, a void, a cancel, the end of day) takes an
optional ``Idempotency-Key`` header (Stripe's semantics, docs/api.md "Idempotency"): the
first request is processed and its answer kept on disk (terminal.store.idempotency), per
register, for a day at least; a repeat with the same key and body gets that answer again
(``Idempotent-Replayed: true``; a sale as it stands now), another body 422
idempotency_key_reused, one while the first still runs 409 idempotency_in_progress.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import date
from importlib import resources
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, StrictBool, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drivers.errors import DriverError
from drivers.scanner import ScanRejectedError
from emv.errors import PiposError

from ..acquirer.client import AcquirerError
from ..app.sim_scanner import PHONE_CODES, SimulatedDeviceError
from ..checkout.errors import (
    AcquirerRequiredError,
    BusyError,
    CheckoutError,
    DeclinedAfterTheFactError,
    NotFoundError,
    RequestError,
    StateError,
)
from ..checkout.failures import link_failure
from ..checkout.flow import Checkout
from ..domain.currency import MAX_EMV_AMOUNT
from ..domain.messages import LANGUAGES, ui_strings
from ..domain.receipts import (
    BatchReport,
    PrinterError,
    build_receipt,
    print_receipt,
    report_html,
)
from ..domain.records import APPROVED_STATES, MAX_SEARCH, Kind, State, TxnRecord
from ..store.idempotency import FILE as IDEMPOTENCY_FILE
from ..store.idempotency import (
    ClaimKind,
    IdempotencyError,
    IdempotencyStore,
    StoredAnswer,
    fingerprint,
)
from ..store.registers import RegisterStoreError
from . import display, pairing, preauth_routes, report_routes, webhook_routes
from .common import REF_PATTERN as _REF
from .common import ApiError as _ApiError
from .common import Body as _Body
from .common import currency_code as _currency_code
from .common import error_answers as _errors
from .common import error_response as _error
from .common import ok_answers as _ok
from .kiosk import COOKIE
from .models import (
    Acknowledged,
    AcquirerMode,
    BatchList,
    EndOfDayReport,
    Health,
    Printed,
    QueueSummary,
    ReceiptJson,
    SimulatorAnswer,
    Status,
    SyncAnswer,
    Totals,
    TransactionList,
    TransactionView,
    UiStrings,
)
from .settings import ApiSettings, PinGuard, RouteKit

__all__ = [
    "LOOPBACK_HOSTS",
    "PAGE",
    "ApiSettings",
    "PinGuard",
    "allowed_host_names",
    "create_api",
    "render_svg",
]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
#: The checkout page's name as a caller (audit log, PIN guard): its credential is its
#: session cookie, never a token.
PAGE = "checkout-page"
#: How long a cancel waits for the sale to reach its final state before it answers.
CANCEL_SETTLE_SECONDS = 5.0
#: The longest Idempotency-Key (Stripe's limit): a UUID (36) or a register's own
#: "<till>-<receipt>-<attempt>" fits many times.
IDEMPOTENCY_KEY_MAX: Final = 255
#: The answers an Idempotency-Key keeps: what the same request would be answered again
#: (done, or refused for good: an unknown transaction, an invalid field). Every other answer
#: (401, 403 and 423 of the PIN, 409 busy or not yet in that state, 413, 429, 5xx) may be
#: different on a retry, so the key is released and a retry with it is processed anew.
_KEPT_STATUSES: Final = frozenset({200, 201, 202, 404, 422})
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Optional, on every request that moves money: 1 to 255 printable ASCII "
        "characters of the register's choosing (a UUID is usual), new for each operation "
        "and sent again, unchanged, with a retry of it. The first request is processed and "
        "its answer kept (at least 24 hours, also across a restart); a retry with the same "
        "key and the same body gets that answer again (header `Idempotent-Replayed: true`; "
        "a sale: the transaction as it stands now), and nothing is done twice. The same key "
        "with another body or path: 422 idempotency_key_reused; while the first request "
        "is still running: 409 idempotency_in_progress (reason `interrupted`: the terminal "
        "stopped while processing it; look the transaction up, then use a new key). Keys "
        "are the register's own: another register's same key is another key.",
        json_schema_extra={"maxLength": IDEMPOTENCY_KEY_MAX, "pattern": "^[ -~]+$"},
    ),
]


def render_svg(payload: str) -> bytes:
    """`payload` as an SVG QR code (segno; error correction M; UTF-8 kept as bytes)."""
    import io

    import segno

    out = io.BytesIO()
    segno.make_qr(payload, error="m", encoding="utf-8").save(
        out, kind="svg", border=4, xmldecl=False, omitsize=True, title="Scan to pay"
    )
    return out.getvalue()


_HTTP_ERROR_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}
#: The HTTP status of each of the checkout's refusals, by its code (CheckoutError.code);
#: any other refusal is 409.
_CHECKOUT_STATUS: Final[Mapping[str, int]] = {
    BusyError.code: 409,
    NotFoundError.code: 404,
    DeclinedAfterTheFactError.code: 409,
    StateError.code: 409,
    RequestError.code: 422,
    AcquirerRequiredError.code: 503,
}


def _standing_sale(records: list[TxnRecord]) -> TxnRecord | None:
    """The first sale among `records` (oldest first) that stands in the way of another under
    the same reference (`unique_reference`): running, approved online or offline (voided
    or not), or failed with an outcome unknown (the bank may have taken the money). A
    declined, cancelled or settled failed sale took nothing: the customer may pay again."""
    for record in records:
        if record.kind is not Kind.SALE:
            continue
        if record.state in (State.IN_PROGRESS, *APPROVED_STATES) or (
            record.state is State.FAILED and record.outcome_unknown
        ):
            return record
    return None


def _unfinished(txn_id: str) -> _ApiError:
    """A receipt asked of a transaction still running: it has none yet."""
    return _ApiError(
        409,
        "invalid_state",
        f"transaction {txn_id} has not finished",
        details={"reason": "not_finished"},
    )


def _printer_failed(exc: PrinterError) -> _ApiError:
    """The printer refused: the device's own words (an OSError's "[Errno 2] ...") go to the
    log and the register's English message; the page words it by the code alone."""
    log.warning("printing failed: %s", exc)
    return _ApiError(503, "printer_error", str(exc))


# --- the OpenAPI document: who may call, and every error each endpoint can answer ------

#: The register's token (``Authorization: Bearer ...``): the OpenAPI's security scheme, so
#: Swagger's Authorize button sends it. auto_error off: `register` answers a missing or bad
#: token itself, in the error envelope (401), and knows the page's session cookie too.
BEARER = HTTPBearer(
    scheme_name="bearerAuth",
    bearerFormat="register token",
    description="The register's token (pipos run prints it, or --token); the checkout "
    "page uses its session cookie instead.",
    auto_error=False,
)
#: The same token as ``?token=``, on the two endpoints a browser reaches without headers
#: (EventSource, <img>).
TOKEN_QUERY = APIKeyQuery(
    name="token",
    scheme_name="tokenQuery",
    description="The register's token in the query: only /api/v1/events and a sale's "
    "qr.svg accept it (EventSource and <img> cannot send a header).",
    auto_error=False,
)

#: The event stream's answer: what each event type's `data` holds (the schemas are those of
#: the answers named; `x-events` for a reader of the document, docs/api.md in words).
_SSE_EVENTS: Final[Mapping[str, dict[str, Any]]] = {
    "status": {"$ref": "#/components/schemas/Status"},
    "transaction": {"$ref": "#/components/schemas/TransactionView"},
    "end_of_day": {"$ref": "#/components/schemas/EndOfDayReport"},
    "display": {"$ref": "#/components/schemas/DisplayView"},
    "ready": {
        "type": "object",
        "required": ["id", "card", "code"],
        "properties": {
            "id": {"type": "string"},
            "card": {"type": "boolean"},
            "code": {"type": "boolean"},
        },
    },
    "restart": {
        "type": "object",
        "required": ["id", "message", "reason", "restarts"],
        "properties": {
            "id": {"type": "string"},
            "message": {"type": "string"},
            "reason": {"type": "string"},
            "restarts": {"type": "integer"},
        },
    },
    "scan_rejected": {
        "type": "object",
        "required": ["id", "message", "reason"],
        "properties": {
            "id": {"type": "string"},
            "message": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
}
_SSE_RESPONSE: Final[dict[str, Any]] = {
    "description": "The event stream: `event: " + "|".join(_SSE_EVENTS) + "`, `data` JSON "
    "as `x-events` says per type",
    "content": {
        "text/event-stream": {
            "schema": {"type": "string"},
            "x-events": dict(_SSE_EVENTS),
            "example": 'id: 7\nevent: transaction\ndata: {"id": "T1", "state": '
            '"approved", "revision": 7, "...": "..."}\n\n',
        }
    },
}


# --- request bodies ------------------------------------------------------------------------


class SaleBody(_Body):
    amount: StrictInt = Field(gt=0, le=MAX_EMV_AMOUNT, description="minor units (1234 = 12.34)")
    currency: StrictInt | StrictStr = Field(
        description="ISO 4217 numeric (978) or alphabetic (EUR) code"
    )
    external_reference: str = Field(default="", pattern=r"^$|" + _REF, max_length=64)
    unique_reference: StrictBool = Field(
        default=False,
        description="true: at most one sale per `external_reference` (which it needs): if a "
        "sale with this reference is running, was approved (online or offline) or has an "
        "outcome still unknown, the answer is that sale as it stands now (200) and no new "
        "sale starts; a declined, cancelled or failed one does not count",
    )
    tip_amount: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_EMV_AMOUNT,
        description="minor units: the tip the register already asked for (the card is asked "
        "for amount + tip_amount, and the page's tip screen is skipped); default: the "
        "terminal's tip entry, when it is on, asks the customer",
    )
    method: Literal["card", "merchant_qr"] = Field(
        default="card",
        description='"card": wait for a card or a scanned code; "merchant_qr": show the '
        "terminal's dynamic EMVCo QR code (GET /api/v1/sales/{id}/qr.svg) and wait for the "
        "customer's wallet to pay it",
    )


class RefundBody(_Body):
    pin: StrictStr = Field(min_length=4, max_length=12, pattern=r"^[0-9]+$")
    amount: StrictInt | None = Field(
        default=None, gt=0, le=MAX_EMV_AMOUNT, description="minor units; default: all left"
    )
    external_reference: str = Field(default="", pattern=r"^$|" + _REF, max_length=64)


class PinBody(_Body):
    pin: StrictStr = Field(min_length=4, max_length=12, pattern=r"^[0-9]+$")


class PresentBody(_Body):
    card: str = Field(
        pattern=r"^[a-z0-9_]{1,32}(\?[A-Za-z0-9_=&.]{0,200})?$",
        description="virtual card profile with options, e.g. visa or mastercard?decline=true",
    )


class ScanBody(_Body):
    code: str = Field(min_length=1, max_length=4096, description="the text a scanner reads")


class PhoneBody(_Body):
    code: Literal["alipay", "wechatpay", "confirm", "cpm", "expired", "reused", "corrupt"] = Field(
        description="what the simulated phone shows: " + ", ".join(PHONE_CODES)
    )


class AcquirerModeBody(_Body):
    mode: Literal["online", "unreachable", "drops"] = Field(
        description='"online": the simulated acquirer answers; "unreachable": it refuses '
        'connections (the bank is down); "drops": it accepts them and drops them unanswered'
    )


class PayMerchantQrBody(_Body):
    transaction_id: str = Field(pattern=_REF)
    result: Literal["paid", "declined"] = "paid"


def _both_copies() -> list[Literal["merchant", "customer"]]:
    return ["merchant", "customer"]


class PrintBody(_Body):
    copies: list[Literal["merchant", "customer"]] = Field(
        default_factory=_both_copies, min_length=1, max_length=2
    )


class _BodyLimit:
    """Refuses request bodies over MAX_BODY before they are read into memory (413).

    A body with a Content-Length is judged by it; one without (chunked) is read here, byte
    count checked as each piece arrives, at most MAX_BODY + one piece, and handed on whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _error(413, "body_too_large", f"request body over {MAX_BODY} bytes")
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY:
                await too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        pieces: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            piece = message.get("body", b"")
            received += len(piece)
            if received > MAX_BODY:
                await too_large(scope, receive, send)
                return
            pieces.append(piece)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(pieces), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


#: The names a request's Host header may always carry: the terminal on this machine.
LOOPBACK_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})


def _host_name(header: str) -> str:
    """The name in a Host header, without its port, lower case ("[::1]:8700" -> "::1")."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else ":bad"
        if rest and not (rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit()):
            return ""
        return value[1:end]
    name, colon, port = value.partition(":")
    if colon and not (port.isascii() and port.isdigit()):
        return ""  # two colons without brackets, or a port that is not a number
    return name


def allowed_host_names(names: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """The operator's extra Host names, checked and normalised (lower case, no port, IPv6
    without brackets). Raises ConfigurationError naming a bad one."""
    from ..domain.errors import ConfigurationError

    allowed: set[str] = set()
    for raw in names:
        name = raw.strip().lower().removeprefix("[").removesuffix("]")
        labels = name.split(".")
        hostname = name.isascii() and all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels
        )
        ipv6 = name.isascii() and ":" in name and all(c in "0123456789abcdef:." for c in name)
        if not name or len(name) > 253 or not (hostname or ipv6):
            raise ConfigurationError(
                f"allowed host {raw!r}: expected a host name or an IP address (no port, no "
                "wildcard), e.g. terminal-1.shop.lan or 192.168.1.20"
            )
        allowed.add(name)
    return frozenset(allowed)


class _HostCheck:
    """Answers only requests whose Host header names this terminal (400 otherwise).

    A page on another origin that makes its name resolve to 127.0.0.1 (DNS rebinding) sends
    its own name in Host: refused here, before any route sees the request."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = LOOPBACK_HOSTS | allowed
        names = sorted(self.allowed - LOOPBACK_HOSTS)
        self.listed = ", ".join(["127.0.0.1", "localhost", "[::1]", *names])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosts = [v for k, v in scope.get("headers", []) if k == b"host"]
        header = hosts[0].decode("latin-1") if len(hosts) == 1 else ""
        if len(hosts) == 1 and _host_name(header) in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = repr(header[:80]) if hosts else "missing"
        if len(hosts) > 1:
            shown = f"sent {len(hosts)} times"
        response = _error(
            400,
            "host_not_allowed",
            f"Host header {shown}: this terminal answers only to {self.listed} (with any "
            "port); a register on another machine reaches it by a name the operator allowed "
            "(pipos run --allowed-host NAME)",
            field="Host",
        )
        await response(scope, receive, send)


#: The policy of every response: nothing from elsewhere, no inline script or style, never
#: framed. The checkout page runs under it as it is.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: ReDoc's page: the same, except that ReDoc writes its styles as <style> elements (allowed
#: by this answer's nonce alone, which ReDoc puts on them) and runs its search in a blob:
#: worker. Script stays 'self' only. (Swagger UI's page runs under CSP as it is.)
REDOC_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class _SecurityHeaders:
    """Puts the security headers on every response, errors included (a route may bring its
    own Content-Security-Policy: the docs pages do)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", CSP.encode()))
                headers += [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


# --- the application -----------------------------------------------------------------------


def create_api(checkout: Checkout, settings: ApiSettings) -> FastAPI:
    app = FastAPI(
        title="pipos terminal API",
        version="1",
        description=(
            "Local API for the merchant's cash register: sales, progress (poll or server-sent "
            "events), cancel, refunds and voids (merchant PIN), transactions, end-of-day "
            "totals, offline queue and health. Amounts are integers in minor units."
        ),
        # Served below from the terminal's own files, never from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    # The last added runs first: headers on every answer, then the Host check, then the
    # body limit.
    app.add_middleware(_BodyLimit)
    app.add_middleware(_HostCheck, allowed=settings.allowed_hosts)
    app.add_middleware(_SecurityHeaders)

    def api_error(exc: _ApiError) -> JSONResponse:
        return _error(
            exc.status,
            exc.code,
            exc.message,
            field=exc.field,
            retry_after=exc.retry_after,
            details=exc.details,
        )

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError) -> Response:
        return api_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own refusals (a body it cannot parse, an unknown path or method) in the
        # same error shape as every other error.
        code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        response = _error(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": ""}
        if first.get("type") == "json_invalid":
            return _error(400, "malformed_body", "request body is not valid JSON")
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body",)]
        where = ".".join(x for x in loc if not x.startswith("function-after"))
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        if first.get("type") == "model_attributes_type":
            return _error(400, "malformed_body", "request body must be a JSON object")
        return _error(422, "invalid_request", message, field=where or None)

    @app.exception_handler(CheckoutError)
    async def _checkout_error(request: Request, exc: CheckoutError) -> Response:
        return checkout_error(exc)

    def checkout_error(exc: CheckoutError) -> JSONResponse:
        # The code by the refusal's class, and its `reason` where one code covers several
        # causes: the page words it by the two in the terminal's language (ui string
        # error_<code>_<reason>); `message` stays English, for the register and the log.
        status = _CHECKOUT_STATUS.get(type(exc).code, 409)
        details = {"reason": exc.reason} if exc.reason else {}
        if isinstance(exc, AcquirerRequiredError):
            # Said in the terminal's language by why the bank could not be asked; the
            # exception's own text (a socket's "[Errno 111] ...") is the log's, never this.
            cause = exc.__cause__
            reason = exc.reason or (
                link_failure(cause) if isinstance(cause, AcquirerError) else "not_connected"
            )
            text = ui_strings(checkout.language)[f"error_acquirer_unavailable_{reason}"]
            return _error(status, exc.code, text, details={"reason": reason})
        return _error(status, type(exc).code, str(exc), details=details)

    tokens = dict(settings.tokens)
    kiosk = settings.kiosk

    def page_refusal(request: Request) -> str | None:
        """Why the request's page session cookie is not accepted (None: it is, sent by the
        page itself with a session that has not ended).

        SameSite=Strict keeps other sites' requests from carrying the cookie, but another
        origin of the same site (a server on another port of 127.0.0.1, which the browser
        sends the cookie to, since cookies are not scoped by port) may hold it. So the cookie
        counts only on requests the browser itself marks as the page's own: Sec-Fetch-Site
        same-origin, or none for the kiosk's top-level navigation to the page; Origin, when
        sent, this terminal. A page cannot set those headers; a request that has none is not
        from a browser, and is refused (a program has the register's token for the API)."""
        cookie = request.cookies.get(COOKIE)
        if not cookie or kiosk is None:
            return "no checkout page session"
        site = request.headers.get("sec-fetch-site")
        if site is None:
            return (
                "the checkout page's session cookie is accepted from the page in a browser "
                "only, and this request has no Sec-Fetch-Site header (a register uses its "
                "token: Authorization: Bearer ...)"
            )
        navigation = (
            request.method == "GET"
            and request.url.path == "/"
            and request.headers.get("sec-fetch-mode") == "navigate"
        )
        if not (site == "same-origin" or (site == "none" and navigation)):
            return (
                f"the checkout page's session cookie came with a request from elsewhere "
                f"(Sec-Fetch-Site: {site[:32]}); it is accepted from the page itself only"
            )
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin is not None and origin != f"{request.url.scheme}://{host}":
            return (
                f"the checkout page's session cookie came with a request from another origin "
                f"({origin[:80]}); it is accepted from the page itself only"
            )
        if not kiosk.session_valid(cookie):
            return (
                "the checkout page's session has ended (unused for hours, or a day old) or "
                "is not this terminal's: open the kiosk again (pipos kiosk on the terminal)"
            )
        return None

    def register(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> str:
        """Who is asking: a register (its name) or the checkout page (PAGE). The header is
        read here, whole, rather than from BEARER (which is the OpenAPI's security scheme):
        a header that is there but not a bearer token is refused, never taken for the
        page's cookie or the query's token."""
        authorization = request.headers.get("authorization")
        supplied = ""
        if authorization and authorization.startswith("Bearer "):
            supplied = authorization[7:].strip()
        elif authorization is None and request.url.path.endswith(("/events", "/qr.svg")):
            # EventSource and <img> cannot set headers: a register may pass its token here.
            supplied = request.query_params.get("token", "")
        if not supplied:
            if authorization is None and request.cookies.get(COOKIE):
                refusal = page_refusal(request)
                if refusal is None:
                    return PAGE
                raise _ApiError(401, "unauthorised", refusal)
            raise _ApiError(401, "unauthorised", "missing API token (Authorization: Bearer ...)")
        for token, name in tokens.items():
            if hmac.compare_digest(token.encode(), supplied.encode()):
                return name
        if settings.registers is not None:
            # A register paired with a code (terminal.api.pairing): its row is read at every
            # request, so a revocation (here or by pipos registers revoke) holds at once.
            try:
                paired = settings.registers.authenticate(supplied)
            except RegisterStoreError as exc:
                raise _ApiError(503, "registers_unavailable", str(exc)) from exc
            if paired is not None and paired.revoked:
                raise _ApiError(
                    401, "token_revoked", f"register {paired.name!r} was revoked; pair it again"
                )
            if paired is not None:
                return paired.name
        raise _ApiError(401, "unauthorised", "unknown API token")

    def still_admitted(request: Request, who: str) -> bool:
        """Whether an open stream's caller would still be let in. A stream outlives the
        request that opened it, so it is asked again at every batch and keep-alive: the
        page's session ended (its reconnect is then refused, and its 401 path shows how to
        open the kiosk again; an open stream is a use of the session, so only its age ends
        it), or a paired register revoked (here or by pipos registers revoke), ends the
        stream within one keep-alive."""
        if who == PAGE:
            return page_refusal(request) is None
        try:
            return register(request) == who
        except _ApiError:
            return False

    def view(txn_id: str) -> dict[str, Any]:
        return checkout.view(checkout.get(txn_id))

    # --- idempotency ------------------------------------------------------------------

    keys = settings.idempotency or IdempotencyStore(checkout.journal.path.parent / IDEMPOTENCY_FILE)
    app.state.idempotency = keys
    app.state.settings = settings  # read by tests that shorten the keep-alive

    def idempotent(
        request: Request,
        who: str,
        key: str | None,
        body: Mapping[str, Any],
        run: Callable[[], JSONResponse],
        *,
        current: bool = False,
        settle: Callable[[str], object] | None = None,
    ) -> JSONResponse:
        """`run` once per (caller, key): the first request's answer kept, a repeat answered
        with it (docs/api.md, "Idempotency"). `body`: what the fingerprint covers (never
        the PIN: the caller checks it on every attempt, so a replay needs the right PIN
        too and no wrong one is ever compared with a stored hash of it). `current`: a
        repeat answers with the transaction as it stands now (a sale), not as it stood;
        `settle(id)` first brings it up to date (a refund whose answer was lost)."""
        if key is None:
            return run()
        if not (1 <= len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()):
            raise _ApiError(
                422,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII "
                "characters (a UUID is usual)",
                field="Idempotency-Key",
            )
        method, path = request.method, request.url.path
        print_ = fingerprint(method, path, body)
        try:
            claim = keys.claim(who, key, print_)
        except IdempotencyError as exc:
            log.error("idempotency store: %s", exc)
            raise _ApiError(503, "idempotency_unavailable", str(exc)) from exc
        if claim.kind is ClaimKind.REUSED:
            raise _ApiError(
                422,
                "idempotency_key_reused",
                f"Idempotency-Key {key[:64]!r} was used for another request (another body "
                "or path); use a new key for a new request",
                field="Idempotency-Key",
            )
        if claim.kind is ClaimKind.IN_PROGRESS:
            raise _ApiError(
                409,
                "idempotency_in_progress",
                f"the first request with Idempotency-Key {key[:64]!r} is still being "
                "processed; ask again once it has been answered",
                details={"reason": "running"},
            )
        if claim.kind is ClaimKind.INTERRUPTED:
            raise _ApiError(
                409,
                "idempotency_in_progress",
                f"the terminal stopped while it was processing the first request with "
                f"Idempotency-Key {key[:64]!r}, so it has no answer to give again: look the "
                "transaction up (GET /api/v1/transactions?external_reference=...), then "
                "send the request with a new key if it is still wanted",
                details={"reason": "interrupted"},
            )
        replayed = {"Idempotent-Replayed": "true"}
        if claim.kind is ClaimKind.REPLAY:
            assert claim.answer is not None
            answer = claim.answer
            content = answer.body
            if current and answer.transaction_id and 200 <= answer.status < 300:
                if settle is not None:
                    settle(answer.transaction_id)
                content = view(answer.transaction_id)
            return JSONResponse(content, status_code=answer.status, headers=replayed)
        try:
            try:
                response = run()
            except _ApiError as exc:
                response = api_error(exc)
            except CheckoutError as exc:
                response = checkout_error(exc)
        except BaseException:
            keys.release(who, key)  # an answer nobody saw: the register may try again
            raise
        if response.status_code not in _KEPT_STATUSES:
            keys.release(who, key)
            return response
        content = json.loads(bytes(response.body))
        txn = content.get("id") if 200 <= response.status_code < 300 else None
        try:
            keys.finish(who, key, StoredAnswer(response.status_code, content, str(txn or "")))
        except IdempotencyError as exc:
            # Done, but the answer not kept: a repeat finds the key interrupted (409) and
            # the register looks the transaction up, as after a power cut here.
            log.error("idempotency store: the answer to a request was not kept: %s", exc)
        return response

    # --- sales ------------------------------------------------------------------------

    unique_sales = threading.Lock()

    @app.post(
        "/api/v1/sales",
        status_code=202,
        tags=["sales"],
        response_model=None,
        responses={
            202: {"model": TransactionView, "description": "The sale, started"},
            200: {
                "model": TransactionView,
                "description": "`unique_reference`: the sale already made under the "
                "`external_reference`, as it stands now; no new sale",
            },
        }
        | _errors(404, 409, 413, 422, 503),
    )
    def create_sale(
        request: Request,
        body: SaleBody,
        who: str = Depends(register),
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Start a sale; the terminal then waits for a card. Poll the transaction or follow
        /api/v1/events for progress. 409 when another transaction is running. With
        `unique_reference`: the sale already made under the `external_reference`, if any
        (200). A retry with the same Idempotency-Key answers with the sale it started, as
        it stands now."""

        def run() -> JSONResponse:
            code = _currency_code(body.currency)
            if not body.unique_reference:
                record = checkout.start_sale(
                    body.amount,
                    code,
                    external_ref=body.external_reference,
                    method=body.method,
                    tip_amount=body.tip_amount,
                )
                audit("sale_started", who, record)
                return JSONResponse(checkout.view(record), status_code=202)
            if not body.external_reference:
                raise _ApiError(
                    422,
                    "invalid_request",
                    "unique_reference: needs an external_reference to be unique",
                    field="unique_reference",
                )
            # The look-up and the start under one lock: two registers' retries of the same
            # order cannot both find nothing and both start a sale.
            with unique_sales:
                earlier = _standing_sale(checkout.journal.find_external(body.external_reference))
                if earlier is not None:
                    # The register's amount is the sale's before any tip the customer chose.
                    base = earlier.amount - earlier.tip_amount
                    if (base, earlier.currency) != (body.amount, code):
                        # Another order under the same reference (or a changed one): not
                        # the sale the register asks for, so not answered as if it were.
                        raise _ApiError(
                            409,
                            "reference_in_use",
                            f"sale {earlier.id} under external_reference "
                            f"{body.external_reference!r} is of another amount or currency "
                            f"({earlier.amount} {earlier.currency:03d})",
                            field="external_reference",
                        )
                    return JSONResponse(checkout.view(earlier), status_code=200)
                record = checkout.start_sale(
                    body.amount,
                    code,
                    external_ref=body.external_reference,
                    method=body.method,
                    tip_amount=body.tip_amount,
                )
            audit("sale_started", who, record)
            return JSONResponse(checkout.view(record), status_code=202)

        # exclude_none: a field added later with a None default (tip_amount) leaves the
        # fingerprint of a request that does not use it as an earlier release computed it.
        fingerprinted = body.model_dump(exclude_none=True)
        return idempotent(request, who, idempotency_key, fingerprinted, run, current=True)

    @app.get(
        "/api/v1/sales/{txn_id}/qr.svg",
        tags=["sales"],
        response_class=Response,
        responses={
            200: {
                "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                "description": "The code as SVG",
            }
        }
        | _errors(404),
        dependencies=[Security(TOKEN_QUERY)],
    )
    def merchant_qr(txn_id: str, who: str = Depends(register)) -> Response:
        """The dynamic EMVCo merchant-presented code of a `merchant_qr` sale, as SVG: the
        customer scans it with their wallet app (404 for other sales)."""
        payload = checkout.merchant_qr_payload(checkout.get(txn_id))
        return Response(
            render_svg(payload), media_type="image/svg+xml", headers={"Cache-Control": "no-store"}
        )

    @app.get(
        "/api/v1/transactions/{txn_id}",
        tags=["transactions"],
        response_model=None,
        responses=_ok(TransactionView, 404),
    )
    def get_transaction(txn_id: str, who: str = Depends(register)) -> dict[str, Any]:
        return view(txn_id)

    def audited_cancel(who: str, record: TxnRecord) -> TxnRecord:
        # Who asked to stop the sale (the audit names every caller that changes something).
        audit("cancel", who, record)
        return record

    def cancelled(record: TxnRecord) -> dict[str, Any]:
        # A register (and the page) that cancels wants to know how the sale ended: cancelled,
        # or approved when the customer's wallet paid first. Answer with the final state
        # unless it takes longer than CANCEL_SETTLE_SECONDS (a code payment's order being
        # cancelled with the acquirer); the event stream carries it either way.
        return checkout.view(checkout.wait(record.id, timeout=CANCEL_SETTLE_SECONDS))

    @app.post(
        "/api/v1/transactions/{txn_id}/cancel",
        tags=["sales"],
        response_model=None,
        responses=_ok(TransactionView, 404, 409, 413, 422, 503),
    )
    def cancel(
        request: Request,
        txn_id: str,
        who: str = Depends(register),
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Stop waiting for a card or a code, or stop reading one (409 once the card has given
        its outcome and the payment is being completed). Answers with the sale as it ended, or
        as it stands after a few seconds."""
        return idempotent(
            request,
            who,
            idempotency_key,
            {},
            lambda: JSONResponse(cancelled(audited_cancel(who, checkout.cancel(txn_id)))),
        )

    @app.post(
        "/api/v1/cancel",
        tags=["sales"],
        response_model=None,
        responses=_ok(TransactionView, 404, 409, 413, 422, 503),
    )
    def cancel_current(
        request: Request, who: str = Depends(register), idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """Cancel whatever sale is waiting for a card or a code; answers as the
        transaction-specific cancel does."""
        return idempotent(
            request,
            who,
            idempotency_key,
            {},
            lambda: JSONResponse(cancelled(audited_cancel(who, checkout.cancel(None)))),
        )

    @app.get(
        "/api/v1/transactions",
        tags=["transactions"],
        response_model=None,
        responses=_ok(TransactionList, 422),
    )
    def list_transactions(
        who: str = Depends(register),
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        kind: Annotated[
            Literal["sale", "refund", "void", "preauth", "increment", "capture", "release"] | None,
            Query(),
        ] = None,
        external_reference: Annotated[str | None, Query(max_length=64)] = None,
        attention: Annotated[bool, Query()] = False,
        q: Annotated[
            str,
            Query(
                max_length=MAX_SEARCH,
                description="search: an amount as typed (12.34, 12,34, 12), the card's last "
                "4 digits, or part of the transaction id, external reference, authorisation "
                "code or bank reference",
            ),
        ] = "",
        date_from: Annotated[
            date | None, Query(description="YYYY-MM-DD, the terminal's local day, included")
        ] = None,
        date_to: Annotated[
            date | None, Query(description="YYYY-MM-DD, the terminal's local day, included")
        ] = None,
        before: Annotated[
            int | None,
            # SQLite's integers are 64-bit: a larger cursor is no cursor this API gave.
            Query(ge=0, le=2**63 - 1, description="the `next` cursor of the page before"),
        ] = None,
    ) -> dict[str, Any]:
        """Newest first, `limit` at a time; `next` is the cursor of the next (older) page
        (pass it as `before`), null on the last. Every filter given must hold:
        `attention=1` only what needs the merchant's attention (offline sales the bank
        declined after the fact, acknowledged or not); `kind`; `external_reference`
        (exactly); `q` (terminal.domain.records.parse_search: an amount as the merchant
        types it in the terminal's currency matches it exactly; exactly 4 digits match the
        card's last 4 digits or that amount, 48.26 or 4826.00; anything else part of the
        id, external reference, authorisation code or bank reference, any case; what
        matches none of these matches nothing; over 64 characters: 422); `date_from`,
        `date_to`: days in the terminal's local time zone, both included. Each
        transaction's `created_at` is ISO 8601 with the UTC offset of the terminal's clock
        (UTC)."""
        views, cursor = checkout.transactions(
            limit=limit,
            before=before,
            kind=kind,
            external_ref=external_reference or None,
            attention=attention,
            search=q,
            date_from=date_from,
            date_to=date_to,
        )
        return {"transactions": views, "next": cursor}

    def check_pin(pin: str, who: str, action: str, txn_id: str) -> None:
        try:
            settings.pin_guard.check(pin, scope=who)
        except _ApiError as exc:
            if settings.audit is not None and exc.code in ("wrong_pin", "pin_locked"):
                event = "merchant_pin_lockout" if exc.code == "pin_locked" else "merchant_pin_wrong"
                settings.audit.record(event, actor=who, action=action, transaction=txn_id)
            raise

    def audit(event: str, who: str, record: TxnRecord) -> None:
        if settings.audit is not None:
            settings.audit.record(
                event,
                actor=who,
                transaction=record.id,
                original=record.original_id,
                amount=record.amount,
                currency=record.currency,
                result=record.state,
            )

    @app.post(
        "/api/v1/transactions/{txn_id}/refund",
        tags=["refunds"],
        response_model=None,
        responses=_ok(TransactionView, 403, 404, 409, 413, 422, 423, 503),
    )
    def refund(
        request: Request,
        txn_id: str,
        body: RefundBody,
        who: str = Depends(register),
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Refund (part of) an approved sale. Needs the merchant PIN (on a retry with the
        same Idempotency-Key too: the PIN is checked, then the refund's answer given again)."""
        checkout.get(txn_id)  # 404 before the PIN is tried
        check_pin(body.pin, who, "refund", txn_id)

        def run() -> JSONResponse:
            record = checkout.refund(txn_id, body.amount, external_ref=body.external_reference)
            audit("refund", who, record)
            return JSONResponse(checkout.view(record))

        params = body.model_dump(exclude={"pin"})
        # A repeat answers with the refund as it stands now, one whose answer from the bank
        # was lost sent again under its own key first: the register learns whether it went
        # through, and nothing is refunded twice.
        return idempotent(
            request,
            who,
            idempotency_key,
            params,
            run,
            current=True,
            settle=checkout.settle_refund,
        )

    @app.post(
        "/api/v1/transactions/{txn_id}/void",
        tags=["refunds"],
        response_model=None,
        responses=_ok(TransactionView, 403, 404, 409, 413, 422, 423, 503),
    )
    def void(
        request: Request,
        txn_id: str,
        body: PinBody,
        who: str = Depends(register),
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Void an approved online sale not yet settled. Needs the merchant PIN."""
        checkout.get(txn_id)
        check_pin(body.pin, who, "void", txn_id)

        def run() -> JSONResponse:
            record = checkout.void(txn_id)
            audit("void", who, record)
            return JSONResponse(checkout.view(record))

        return idempotent(request, who, idempotency_key, {}, run, current=True)

    # --- receipts ---------------------------------------------------------------------

    @app.get(
        "/api/v1/transactions/{txn_id}/receipt",
        tags=["receipts"],
        response_class=Response,
        responses={
            200: {
                "description": "The receipt: text (`format=text`), an HTML fragment (html) "
                "or both in JSON (json)",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "text/html": {"schema": {"type": "string"}},
                },
                "model": ReceiptJson,  # format=json
            }
        }
        | _errors(404, 409, 422),
    )
    def receipt(
        txn_id: str,
        who: str = Depends(register),
        copy: Literal["merchant", "customer"] = "customer",
        format: Literal["text", "html", "json"] = "text",
    ) -> Response:
        record = checkout.get(txn_id)
        if not record.finished:
            raise _unfinished(txn_id)
        rec = build_receipt(
            record,
            checkout.params,
            copy,
            terminal_id=checkout.terminal_id,
            language=checkout.language,
        )
        if format == "html":
            return HTMLResponse(rec.html())
        if format == "json":
            return JSONResponse({"copy": copy, "text": rec.text(), "html": rec.html()})
        return PlainTextResponse(rec.text())

    @app.post(
        "/api/v1/transactions/{txn_id}/print",
        tags=["receipts"],
        response_model=None,
        responses=_ok(Printed, 404, 409, 413, 422, 503),
    )
    def print_(
        txn_id: str, who: str = Depends(register), body: PrintBody | None = None
    ) -> dict[str, Any]:
        record = checkout.get(txn_id)
        if not settings.printer_url:
            # Not a passing outage but how this terminal is set up: a client error (409).
            raise _ApiError(409, "no_printer", "no receipt printer is configured")
        if not record.finished:
            raise _unfinished(txn_id)
        copies = (body or PrintBody()).copies
        receipts = [
            build_receipt(
                record,
                checkout.params,
                c,
                terminal_id=checkout.terminal_id,
                language=checkout.language,
            )
            for c in copies
        ]
        try:
            print_receipt(settings.printer_url, receipts)
        except PrinterError as exc:
            raise _printer_failed(exc) from exc
        return {"printed": list(copies)}

    # --- totals, queue, health --------------------------------------------------------

    @app.get("/api/v1/totals", tags=["end of day"], response_model=None, responses=_ok(Totals))
    def totals(who: str = Depends(register)) -> dict[str, Any]:
        """The open batch, before the end of day: `lines` per payment method (card brand,
        or code wallet / scheme: `method` "card" or "code") and currency, and
        `grand_totals` per currency, of approved sales and approved refunds only (voided
        sales, voids, declined, cancelled and failed transactions never count, nor an
        offline sale the bank declined after the fact); `offline`: what still waits to be
        sent; `transactions`: how many count. Every amount in minor units with its `*_text`.
        `totals` and `batches` (the last five closed) as earlier releases answered."""
        return checkout.totals_report() | {
            "batches": [b.to_json() for b in checkout.journal.batches(limit=5)]
        }

    @app.post(
        "/api/v1/end-of-day",
        tags=["end of day"],
        response_model=None,
        responses=_ok(EndOfDayReport, 403, 409, 413, 422, 423, 503),
    )
    def end_of_day(
        request: Request,
        body: PinBody,
        who: str = Depends(register),
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Send the offline queue, close the batch with the acquirer, and answer the report
        (kept with the batch: GET /api/v1/batches): `lines` per payment method with the
        bank's `host` line beside each (null when the bank has none) and `differs`;
        `grand_totals` and `host_grand_totals`; `differences` (lines that differ) and
        `in_balance`; `transactions` (approved, counted as the bank counts them) and
        `host_transactions`; `offline_synced`, `still_offline` (offline sales still waiting
        stay in the open batch); `text` (the report's lines in the terminal's language).
        Needs the merchant PIN (body `{"pin": "..."}`), as refunds and voids do. The bank
        not reachable: 503 acquirer_unavailable with `reason` (unreachable, no_answer,
        host_error, not_connected) and a message in the terminal's language; the batch
        stays open."""
        check_pin(body.pin, who, "end_of_day", "")

        def run() -> JSONResponse:
            report = checkout.end_of_day()
            if settings.audit is not None:
                settings.audit.record(
                    "end_of_day",
                    actor=who,
                    batch=report.get("batch_id"),
                    transactions=report.get("transactions"),
                )
            return JSONResponse(report)

        return idempotent(request, who, idempotency_key, {}, run)

    @app.get(
        "/api/v1/batches",
        tags=["end of day"],
        response_model=None,
        responses=_ok(BatchList, 422),
    )
    def batches(
        who: str = Depends(register),
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        before: Annotated[
            int | None,
            # SQLite's integers are 64-bit: a larger cursor is no cursor this API gave.
            Query(ge=0, le=2**63 - 1, description="the `next` cursor of the page before"),
        ] = None,
    ) -> dict[str, Any]:
        """Closed batches' reports, newest first, as they were when each was closed (a
        batch an earlier version closed: the bank's totals it kept, `legacy`); `next`: the
        cursor of the next (older) page, null on the last."""
        reports, cursor = checkout.batch_history(limit=limit, before=before)
        return {"batches": reports, "next": cursor}

    @app.get(
        "/api/v1/batches/{batch_id}/report",
        tags=["end of day"],
        response_class=Response,
        responses={
            200: {
                "description": "The report as a slip (`format=text`) or an HTML fragment",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "text/html": {"schema": {"type": "string"}},
                },
            }
        }
        | _errors(404, 422),
    )
    def batch_report(
        batch_id: str,
        who: str = Depends(register),
        format: Literal["text", "html"] = "text",
    ) -> Response:
        """A closed batch's report (结算单 on a Chinese terminal) as text (the slip) or an
        HTML fragment; 404 for an unknown batch."""
        report = checkout.batch_report(batch_id)
        if format == "html":
            return HTMLResponse(report_html(report))
        return PlainTextResponse("\n".join(report["text"]) + "\n")

    @app.post(
        "/api/v1/batches/{batch_id}/print",
        tags=["end of day"],
        response_model=None,
        responses=_ok(Printed, 404, 409, 413, 503),
    )
    def print_batch(batch_id: str, who: str = Depends(register)) -> dict[str, Any]:
        """Print a closed batch's report on the receipt printer (409 no_printer when none
        is configured, 503 printer_error when it fails); 404 for an unknown batch."""
        report = checkout.batch_report(batch_id)
        if not settings.printer_url:
            raise _ApiError(409, "no_printer", "no receipt printer is configured")
        try:
            print_receipt(settings.printer_url, [BatchReport(tuple(report["text"]))])
        except PrinterError as exc:
            raise _printer_failed(exc) from exc
        return {"printed": batch_id}

    @app.get("/api/v1/queue", tags=["status"], response_model=None, responses=_ok(QueueSummary))
    def queue(who: str = Depends(register)) -> dict[str, Any]:
        return checkout.queue_summary().to_json()

    @app.post(
        "/api/v1/queue/sync", tags=["status"], response_model=None, responses=_ok(SyncAnswer, 413)
    )
    def sync(who: str = Depends(register)) -> dict[str, Any]:
        """Send the offline queue now. `result` says what happened in the terminal's
        language ("3 sent", "Could not send: bank unreachable"), with the counts and the
        failure's code; `sync` keeps the queue's own counts."""
        result = checkout.sync_report()
        counts = {k: result[k] for k in ("accepted", "declined", "failed", "remaining")}
        return {"sync": counts, "result": result, "queue": checkout.queue_summary().to_json()}

    @app.post(
        "/api/v1/offline-declines/acknowledge",
        tags=["status"],
        response_model=None,
        responses=_ok(Acknowledged, 413),
    )
    def acknowledge_declines(who: str = Depends(register)) -> dict[str, Any]:
        """The merchant has seen the offline payments the bank declined after the fact: the
        banner goes (status `offline_declines.unacknowledged` drops to 0), also after a
        restart; a decline that comes later shows it again."""
        result = checkout.acknowledge_declines()
        if settings.audit is not None:
            settings.audit.record(
                "offline_declines_acknowledged", actor=who, count=result["acknowledged"]
            )
        return result

    @app.get("/api/v1/status", tags=["status"], response_model=None, responses=_ok(Status))
    def status(who: str = Depends(register)) -> dict[str, Any]:
        return checkout.status() | dict(settings.extra_status())

    @app.get(
        "/api/v1/ui-strings", tags=["status"], response_model=None, responses=_ok(UiStrings, 422)
    )
    def ui_labels(
        who: str = Depends(register),
        lang: Annotated[
            str | None,
            Query(description='"en" or "zh"; default: the terminal\'s language (parameters)'),
        ] = None,
    ) -> dict[str, Any]:
        """The checkout page's labels in one language (key -> text; "{name}" placeholders
        are the page's to fill). 422 for a language the terminal does not speak."""
        language = checkout.language if lang is None else lang
        if language not in LANGUAGES:
            raise _ApiError(
                422,
                "unknown_language",
                f"unknown language {language[:16]!r}: expected one of {', '.join(LANGUAGES)}",
                field="lang",
            )
        return {"language": language, "strings": ui_strings(language)}

    @app.get(
        "/health",
        tags=["status"],
        response_model=None,
        responses={200: {"model": Health}, 400: _errors()[400]},
    )
    def health() -> dict[str, Any]:
        """Liveness without a token (no business data)."""
        return {"status": "ok", "busy": checkout.current is not None}

    # --- events -----------------------------------------------------------------------

    @app.get(
        "/api/v1/events",
        tags=["sales"],
        response_class=StreamingResponse,
        responses={200: _SSE_RESPONSE} | _errors(422),
        dependencies=[Security(TOKEN_QUERY)],
    )
    async def events(
        request: Request,
        who: str = Depends(register),
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[int | None, Query(ge=0)] = None,
    ) -> StreamingResponse:
        """Server-sent events (`text/event-stream`), each `id: N`, `event: TYPE` and
        `data: JSON`; resume with the Last-Event-ID header or `?after=N` (the stream first
        sends a `status` snapshot, then every event after that id). The event types and
        their `data`:

        - `status`: the terminal's status, as GET /api/v1/status answers it (queue, link
          to the bank, offline acceptance, ...), on every change of it;
        - `transaction`: a transaction as GET /api/v1/transactions/{id} answers it, on
          every change (a refund or void also sends its sale again); keep the highest
          `revision`;
        - `ready`: `{id, card, code}`: the sale's reader (`card`) and code scanner (`code`)
          are open and listening;
        - `restart`: `{id, message, reason, restarts}`: the card asks for another tap
          (`message` in the terminal's language); the sale goes on;
        - `scan_rejected`: `{id, message, reason}`: a code was not read (`message` for the
          merchant, in the terminal's language; `reason` the scanner's words); the sale
          goes on;
        - `end_of_day`: the end-of-day report, as POST /api/v1/end-of-day answers it;
        - `display`: the register's display request (`DisplayView`), as GET
          /api/v1/display answers it, whenever it is set or cleared.

        Comments (`: keep-alive`) come every 15 s while nothing happens. The stream ends
        when the terminal stops (reconnect with Last-Event-ID), and within one keep-alive
        of its register being revoked (the reconnect then gets 401 `token_revoked`)."""
        start = after
        if start is None and last_event_id and last_event_id.isascii() and last_event_id.isdigit():
            start = int(last_event_id)
        if start is None:
            start = checkout.events.last_id

        async def stream() -> AsyncIterator[bytes]:
            with checkout.events.following():
                snapshot = json.dumps(checkout.status())
                yield f"retry: 2000\nevent: status\ndata: {snapshot}\n\n".encode()
                last = start
                hub = checkout.events
                while not hub.closed:
                    if await request.is_disconnected():
                        return
                    if not await run_in_threadpool(still_admitted, request, who):
                        return
                    batch = await run_in_threadpool(hub.after, last, settings.sse_keepalive)
                    if batch and not await run_in_threadpool(still_admitted, request, who):
                        # Revoked (or the session ended) while this batch was awaited: none
                        # of it is sent.
                        return
                    for event in batch:
                        last = event["id"]
                        data = json.dumps(event["data"])
                        yield f"id: {last}\nevent: {event['type']}\ndata: {data}\n\n".encode()
                    if not batch and not hub.closed:
                        yield b": keep-alive\n\n"
                # The terminal is stopping: the stream ends here, cleanly, and the client's
                # EventSource reconnects (with Last-Event-ID) once the terminal is back.

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- the simulated field (demo terminals only) ------------------------------------

    if settings.field is not None:
        sim_field = settings.field

        @app.post(
            "/api/v1/simulator/present",
            tags=["simulator"],
            response_model=None,
            responses=_ok(SimulatorAnswer, 413, 422),
        )
        def present(body: PresentBody, who: str = Depends(register)) -> dict[str, Any]:
            """Tap a virtual card on the simulated reader (demo terminals only)."""
            try:
                sim_field.present("sim:" + body.card)
            except DriverError as exc:
                raise _ApiError(422, "unknown_card", str(exc), field="card") from exc
            except PiposError as exc:  # the simulator's own errors: bad profile or option
                raise _ApiError(422, "unknown_card", str(exc), field="card") from exc
            return {"presented": body.card}

    if settings.scanner is not None:
        sim_scanner = settings.scanner

        @app.post(
            "/api/v1/simulator/scan",
            tags=["simulator"],
            response_model=None,
            responses=_ok(SimulatorAnswer, 413, 422),
        )
        def scan(body: ScanBody, who: str = Depends(register)) -> dict[str, Any]:
            """Hold a code to the simulated scanner (demo terminals only)."""
            try:
                sim_scanner.scan(body.code)
            except ScanRejectedError as exc:
                raise _ApiError(422, "unreadable_code", str(exc), field="code") from exc
            return {"scanned": len(body.code)}

    if settings.phone is not None:
        phone = settings.phone

        @app.post(
            "/api/v1/simulator/phone",
            tags=["simulator"],
            response_model=None,
            responses=_ok(SimulatorAnswer, 413, 422, 503),
        )
        def phone_code(body: PhoneBody, who: str = Depends(register)) -> dict[str, Any]:
            """The simulated customer's wallet makes a code (registered with the simulated
            acquirer) and holds it to the simulated scanner."""
            try:
                phone.show(body.code)
            except SimulatedDeviceError as exc:
                raise _ApiError(503, "simulator_error", str(exc)) from exc
            return {"shown": body.code}

        @app.post(
            "/api/v1/simulator/pay-merchant-qr",
            tags=["simulator"],
            response_model=None,
            responses=_ok(SimulatorAnswer, 404, 409, 413, 422),
        )
        def pay_merchant_qr(
            body: PayMerchantQrBody, who: str = Depends(register)
        ) -> dict[str, Any]:
            """The simulated phone scans a `merchant_qr` sale's code and its user pays."""
            payload = checkout.merchant_qr_payload(checkout.get(body.transaction_id))
            try:
                answer = phone.pay_merchant_code(payload, result=body.result)
            except SimulatedDeviceError as exc:
                raise _ApiError(409, "not_paid", str(exc)) from exc
            return {"order": answer.get("status", "")}

    if settings.acquirer_switch is not None:
        switch = settings.acquirer_switch

        @app.post(
            "/api/v1/simulator/acquirer",
            tags=["simulator"],
            response_model=None,
            responses=_ok(AcquirerMode, 413, 422, 503),
        )
        def simulated_acquirer(
            body: AcquirerModeBody, who: str = Depends(register)
        ) -> dict[str, Any]:
            """Put the demo's own simulated acquirer online, unreachable (connections
            refused) or dropping connections unanswered (demo stacks with their own
            simulated acquirer only). The terminal is not told: it learns of the outage
            from its next request, as it would of a real one; the status event that
            follows carries the mode (status `simulator.acquirer`)."""
            try:
                mode = switch(body.mode)
            except PiposError as exc:  # the simulator's own errors
                raise _ApiError(503, "simulator_error", str(exc)) from exc
            checkout.publish_status()
            return {"acquirer": mode}

    # --- what route modules of their own add (each module's docstring) ---------------

    kit = RouteKit(
        checkout=checkout,
        register=register,
        idempotent=idempotent,
        check_pin=check_pin,
        audit=audit,
        view=view,
        settings=settings,
    )
    for routes in (pairing, preauth_routes, display, webhook_routes, report_routes):
        routes.install(app, kit)

    # --- the checkout page ------------------------------------------------------------

    web = resources.files("terminal.api").joinpath("web")

    def page() -> str:
        text = web.joinpath("index.html").read_text(encoding="utf-8")
        flags = {
            "{{SIMULATOR}}": settings.field is not None,
            "{{SIM_SCANNER}}": settings.scanner is not None,
            "{{SIM_PHONE}}": settings.phone is not None,
        }
        for marker, on in flags.items():
            text = text.replace(marker, "true" if on else "false")
        return text

    def locked(status: int) -> HTMLResponse:
        # Says (in English and Chinese) how the kiosk opens the page; holds nothing that
        # opens the API.
        text = web.joinpath("kiosk.html").read_text(encoding="utf-8")
        return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        """The checkout page for the kiosk that earned its session; otherwise how to open it."""
        if page_refusal(request) is not None:
            return locked(401)
        return HTMLResponse(page(), headers={"Cache-Control": "no-store"})

    @app.get("/kiosk", include_in_schema=False)
    def open_kiosk(code: Annotated[str, Query(max_length=128)] = "") -> Response:
        """Trade the one-time kiosk code for the page's session cookie, then show the page."""
        session = kiosk.redeem(code) if kiosk is not None and code else None
        if session is None:
            return locked(403)
        response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(COOKIE, session, path="/", httponly=True, samesite="strict")
        return response

    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}

    def asset(root: Any, name: str, suffixes: Mapping[str, str]) -> Response:
        suffix = os.path.splitext(name)[1]
        if "/" in name or name.startswith(".") or suffix not in suffixes:
            raise _ApiError(404, "not_found", "no such file")
        item = root.joinpath(name)
        if not item.is_file():
            raise _ApiError(404, "not_found", "no such file")
        return Response(item.read_bytes(), media_type=suffixes[suffix])

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        return asset(web, name, types)

    # --- the API's documentation, from the terminal's own files -----------------------

    def docs_files() -> Any:
        # Swagger UI and ReDoc as their projects publish them (swagger-ui-dist, redoc's
        # standalone bundle), from the fastapi-offline package, so the docs work with no
        # internet and run no script from elsewhere in the API's origin.
        try:
            return resources.files("fastapi_offline").joinpath("static")
        except ModuleNotFoundError as exc:
            raise _ApiError(
                503,
                "docs_unavailable",
                "the API documentation's files are not installed (the fastapi-offline "
                "package); the OpenAPI document is at /openapi.json",
            ) from exc

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        docs_files()
        return HTMLResponse(web.joinpath("docs.html").read_text(encoding="utf-8"))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        docs_files()
        nonce = secrets.token_urlsafe(18)
        text = web.joinpath("redoc.html").read_text(encoding="utf-8")
        return HTMLResponse(
            text.replace("{{NONCE}}", nonce),
            headers={"Content-Security-Policy": REDOC_CSP.format(nonce=nonce)},
        )

    docs_types = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}

    @app.get("/docs-assets/{name}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        return asset(docs_files(), name, docs_types)

    def openapi() -> dict[str, Any]:
        # FastAPI adds its own 422 (`{"detail": [...]}`) to any endpoint with parameters
        # whose `responses` has none: a shape this API never sends (every 422 is the error
        # envelope, and a plain path parameter cannot be invalid), so it goes.
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    answers = operation.get("responses", {})
                    if "HTTPValidationError" in json.dumps(answers.get("422", {})):
                        del answers["422"]
            schemas = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
