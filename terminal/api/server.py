"""The terminal's local HTTP API for the merchant's cash register (ECR), and the checkout page.

FastAPI, bound to 127.0.0.1 unless configured otherwise; OpenAPI at /openapi.json, docs at
/docs. Every /api/v1 call needs ``Authorization: Bearer <register token>`` (the event stream
also accepts ``?token=``, because a browser's EventSource cannot set headers). Refunds and
voids also need the merchant PIN; wrong PINs are rate limited and then locked out.

Errors are JSON ``{"error": {"code": ..., "message": ..., "field": ...}}`` with a precise
4xx: 400 malformed body, 401 no/bad token, 403 wrong PIN, 404 unknown transaction, 409 busy,
wrong state or no printer configured, 413 body too large, 422 invalid field, 423 PIN locked,
429 PIN retry too soon, 503 acquirer or printer unavailable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from drivers.errors import DriverError
from drivers.scanner import ScanRejectedError
from emv.errors import PiposError

from ..app.sim_field import SimulatedField
from ..app.sim_scanner import PHONE_CODES, SimulatedDeviceError, SimulatedPhone, SimulatedScanner
from ..checkout.errors import (
    AcquirerRequiredError,
    BusyError,
    CheckoutError,
    NotFoundError,
    RequestError,
    StateError,
)
from ..checkout.flow import Checkout
from ..checkout.reconciliation import totals_json
from ..domain.currency import CURRENCIES, MAX_EMV_AMOUNT
from ..domain.messages import LANGUAGES, ui_strings
from ..domain.receipts import PrinterError, build_receipt, print_receipt
from ..domain.records import TxnRecord
from ..store.audit import AuditLog

__all__ = ["ApiSettings", "PinGuard", "create_api", "hash_pin", "render_svg"]

MAX_BODY = 16 * 1024
#: How long a cancel waits for the sale to reach its final state before it answers.
CANCEL_SETTLE_SECONDS = 5.0
_REF = r"^[A-Za-z0-9._:/#-]{1,64}$"


def render_svg(payload: str) -> bytes:
    """`payload` as an SVG QR code (segno; error correction M; UTF-8 kept as bytes)."""
    import io

    import segno

    out = io.BytesIO()
    segno.make_qr(payload, error="m", encoding="utf-8").save(
        out, kind="svg", border=4, xmldecl=False, omitsize=True, title="Scan to pay"
    )
    return out.getvalue()


def hash_pin(pin: str, salt: bytes) -> bytes:
    """PBKDF2-SHA256 of the merchant PIN (it is never stored in the clear)."""
    return hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, 100_000)


class PinGuard:
    """Checks the merchant PIN; wrong PINs slow down, then lock out.

    After each wrong PIN the next try must wait `delay * 2^(failures-1)` seconds (429); after
    `max_failures` wrong PINs in a row, PIN operations are locked for `lockout` seconds (423).
    """

    def __init__(
        self,
        pin: str,
        *,
        salt: bytes,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = 5,
        delay: float = 1.0,
        lockout: float = 900.0,
    ) -> None:
        if not (pin.isdigit() and 4 <= len(pin) <= 12):
            raise ValueError("the merchant PIN must be 4 to 12 digits")
        self._salt = salt
        self._hash = hash_pin(pin, salt)
        self._clock = clock
        self._max = max_failures
        self._delay = delay
        self._lockout = lockout
        self._failures = 0
        self._not_before = 0.0
        self._locked_until = 0.0
        self._lock = threading.Lock()

    def check(self, pin: str) -> None:
        with self._lock:
            now = self._clock()
            if now < self._locked_until:
                raise _ApiError(
                    423,
                    "pin_locked",
                    f"too many wrong PINs: refunds and voids are locked for "
                    f"{int(self._locked_until - now) + 1} s",
                    retry_after=int(self._locked_until - now) + 1,
                )
            if now < self._not_before:
                wait = int(self._not_before - now) + 1
                raise _ApiError(
                    429,
                    "pin_retry_too_soon",
                    f"wait {wait} s before trying the PIN again",
                    retry_after=wait,
                )
            if hmac.compare_digest(hash_pin(pin, self._salt), self._hash):
                self._failures = 0
                return
            self._failures += 1
            if self._failures >= self._max:
                self._locked_until = now + self._lockout
                self._failures = 0
                raise _ApiError(
                    423,
                    "pin_locked",
                    f"wrong PIN; {self._max} wrong PINs in a row: "
                    f"locked for {int(self._lockout)} s",
                    retry_after=int(self._lockout),
                )
            self._not_before = now + self._delay * 2 ** (self._failures - 1)
            raise _ApiError(
                403,
                "wrong_pin",
                f"wrong PIN ({self._max - self._failures} tries left before lockout)",
                field="pin",
            )


@dataclass
class ApiSettings:
    """`tokens`: register token -> register name. `page_token` is the checkout page's own."""

    tokens: Mapping[str, str]
    pin_guard: PinGuard
    page_token: str | None = None
    printer_url: str | None = None
    field: SimulatedField | None = None
    scanner: SimulatedScanner | None = None  # simulated terminals: POST /simulator/scan
    phone: SimulatedPhone | None = None  # the simulated customer's phone (demo host only)
    sse_keepalive: float = 15.0
    extra_status: Callable[[], Mapping[str, Any]] = dc_field(default=lambda: {})
    #: Security events (refunds, voids, merchant PIN failures) go to the audit log.
    audit: AuditLog | None = None


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after


_HTTP_ERROR_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    headers = {}
    if extra.get("field"):
        body["field"] = extra["field"]
    if extra.get("retry_after"):
        headers["Retry-After"] = str(extra["retry_after"])
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# --- request bodies ------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SaleBody(_Body):
    amount: StrictInt = Field(gt=0, le=MAX_EMV_AMOUNT, description="minor units (1234 = 12.34)")
    currency: StrictInt | StrictStr = Field(
        description="ISO 4217 numeric (978) or alphabetic (EUR) code"
    )
    external_reference: str = Field(default="", pattern=r"^$|" + _REF, max_length=64)
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


class PayMerchantQrBody(_Body):
    transaction_id: str = Field(pattern=_REF)
    result: Literal["paid", "declined"] = "paid"


def _both_copies() -> list[Literal["merchant", "customer"]]:
    return ["merchant", "customer"]


class PrintBody(_Body):
    copies: list[Literal["merchant", "customer"]] = Field(
        default_factory=_both_copies, min_length=1, max_length=2
    )


def _currency_code(value: int | str) -> int:
    if isinstance(value, str):
        for cur in CURRENCIES.values():
            if cur.alpha == value.upper():
                return cur.numeric
        if value.isdigit() and len(value) == 3 and int(value) in CURRENCIES:
            return int(value)
        raise _ApiError(
            422, "unknown_currency", f"unknown ISO 4217 currency {value!r}", field="currency"
        )
    if value not in CURRENCIES:
        raise _ApiError(
            422, "unknown_currency", f"unknown ISO 4217 numeric currency {value}", field="currency"
        )
    return value


class _BodyLimit:
    """Refuses request bodies over MAX_BODY before they are read into memory (413)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            response = _error(413, "body_too_large", f"request body over {MAX_BODY} bytes")
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:
                    raise _ApiError(413, "body_too_large", f"request body over {MAX_BODY} bytes")
            return message

        await self.app(scope, limited, send)


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
    )
    app.add_middleware(_BodyLimit)

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError) -> Response:
        return _error(
            exc.status, exc.code, exc.message, field=exc.field, retry_after=exc.retry_after
        )

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
        if isinstance(exc, BusyError):
            return _error(409, "busy", str(exc))
        if isinstance(exc, NotFoundError):
            return _error(404, "not_found", str(exc))
        if isinstance(exc, StateError):
            return _error(409, "invalid_state", str(exc))
        if isinstance(exc, RequestError):
            return _error(422, "invalid_request", str(exc))
        if isinstance(exc, AcquirerRequiredError):
            return _error(503, "acquirer_unavailable", str(exc))
        return _error(409, "refused", str(exc))

    tokens = dict(settings.tokens)
    if settings.page_token:
        tokens[settings.page_token] = "checkout-page"

    def register(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> str:
        supplied = ""
        if authorization and authorization.startswith("Bearer "):
            supplied = authorization[7:].strip()
        elif request.url.path.endswith(("/events", "/qr.svg")):
            # EventSource and <img> cannot set headers: the page passes its token here.
            supplied = request.query_params.get("token", "")
        if not supplied:
            raise _ApiError(401, "unauthorised", "missing API token (Authorization: Bearer ...)")
        for token, name in tokens.items():
            if hmac.compare_digest(token.encode(), supplied.encode()):
                return name
        raise _ApiError(401, "unauthorised", "unknown API token")

    def view(txn_id: str) -> dict[str, Any]:
        return checkout.view(checkout.get(txn_id))

    # --- sales ------------------------------------------------------------------------

    @app.post("/api/v1/sales", status_code=202, tags=["sales"])
    def create_sale(body: SaleBody, who: str = Depends(register)) -> dict[str, Any]:
        """Start a sale; the terminal then waits for a card. Poll the transaction or follow
        /api/v1/events for progress. 409 when another transaction is running."""
        code = _currency_code(body.currency)
        record = checkout.start_sale(
            body.amount, code, external_ref=body.external_reference, method=body.method
        )
        return checkout.view(record)

    @app.get(
        "/api/v1/sales/{txn_id}/qr.svg",
        tags=["sales"],
        response_class=Response,
        responses={200: {"content": {"image/svg+xml": {}}}},
    )
    def merchant_qr(txn_id: str, who: str = Depends(register)) -> Response:
        """The dynamic EMVCo merchant-presented code of a `merchant_qr` sale, as SVG: the
        customer scans it with their wallet app (404 for other sales)."""
        payload = checkout.merchant_qr_payload(checkout.get(txn_id))
        return Response(
            render_svg(payload), media_type="image/svg+xml", headers={"Cache-Control": "no-store"}
        )

    @app.get("/api/v1/transactions/{txn_id}", tags=["transactions"])
    def get_transaction(txn_id: str, who: str = Depends(register)) -> dict[str, Any]:
        return view(txn_id)

    def cancelled(record: TxnRecord) -> dict[str, Any]:
        # A register (and the page) that cancels wants to know how the sale ended: cancelled,
        # or approved when the customer's wallet paid first. Answer with the final state
        # unless it takes longer than CANCEL_SETTLE_SECONDS (a code payment's order being
        # cancelled with the acquirer); the event stream carries it either way.
        return checkout.view(checkout.wait(record.id, timeout=CANCEL_SETTLE_SECONDS))

    @app.post("/api/v1/transactions/{txn_id}/cancel", tags=["sales"])
    def cancel(txn_id: str, who: str = Depends(register)) -> dict[str, Any]:
        """Stop waiting for a card or a code (409 once the card is being read). Answers
        with the sale as it ended, or as it stands after a few seconds."""
        return cancelled(checkout.cancel(txn_id))

    @app.post("/api/v1/cancel", tags=["sales"])
    def cancel_current(who: str = Depends(register)) -> dict[str, Any]:
        """Cancel whatever sale is waiting for a card or a code; answers as the
        transaction-specific cancel does."""
        return cancelled(checkout.cancel(None))

    @app.get("/api/v1/transactions", tags=["transactions"])
    def list_transactions(
        who: str = Depends(register),
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        kind: Annotated[Literal["sale", "refund", "void"] | None, Query()] = None,
        external_reference: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        if external_reference:
            records = checkout.journal.find_external(external_reference)
        else:
            records = checkout.journal.recent(limit=limit, kind=kind)
        return {"transactions": [checkout.view(r) for r in records]}

    def check_pin(pin: str, who: str, action: str, txn_id: str) -> None:
        try:
            settings.pin_guard.check(pin)
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

    @app.post("/api/v1/transactions/{txn_id}/refund", tags=["refunds"])
    def refund(txn_id: str, body: RefundBody, who: str = Depends(register)) -> dict[str, Any]:
        """Refund (part of) an approved sale. Needs the merchant PIN."""
        checkout.get(txn_id)  # 404 before the PIN is tried
        check_pin(body.pin, who, "refund", txn_id)
        record = checkout.refund(txn_id, body.amount, external_ref=body.external_reference)
        audit("refund", who, record)
        return checkout.view(record)

    @app.post("/api/v1/transactions/{txn_id}/void", tags=["refunds"])
    def void(txn_id: str, body: PinBody, who: str = Depends(register)) -> dict[str, Any]:
        """Void an approved online sale not yet settled. Needs the merchant PIN."""
        checkout.get(txn_id)
        check_pin(body.pin, who, "void", txn_id)
        record = checkout.void(txn_id)
        audit("void", who, record)
        return checkout.view(record)

    # --- receipts ---------------------------------------------------------------------

    @app.get("/api/v1/transactions/{txn_id}/receipt", tags=["receipts"])
    def receipt(
        txn_id: str,
        who: str = Depends(register),
        copy: Literal["merchant", "customer"] = "customer",
        format: Literal["text", "html", "json"] = "text",
    ) -> Response:
        record = checkout.get(txn_id)
        if not record.finished:
            raise _ApiError(409, "invalid_state", f"transaction {txn_id} has not finished")
        rec = build_receipt(record, checkout.params, copy, terminal_id=checkout.terminal_id)
        if format == "html":
            return HTMLResponse(rec.html())
        if format == "json":
            return JSONResponse({"copy": copy, "text": rec.text(), "html": rec.html()})
        return PlainTextResponse(rec.text())

    @app.post("/api/v1/transactions/{txn_id}/print", tags=["receipts"])
    def print_(
        txn_id: str, who: str = Depends(register), body: PrintBody | None = None
    ) -> dict[str, Any]:
        record = checkout.get(txn_id)
        if not settings.printer_url:
            # Not a passing outage but how this terminal is set up: a client error (409).
            raise _ApiError(409, "no_printer", "no receipt printer is configured")
        if not record.finished:
            raise _ApiError(409, "invalid_state", f"transaction {txn_id} has not finished")
        copies = (body or PrintBody()).copies
        receipts = [
            build_receipt(record, checkout.params, c, terminal_id=checkout.terminal_id)
            for c in copies
        ]
        try:
            print_receipt(settings.printer_url, receipts)
        except PrinterError as exc:
            raise _ApiError(503, "printer_error", str(exc)) from exc
        return {"printed": list(copies)}

    # --- totals, queue, health --------------------------------------------------------

    @app.get("/api/v1/totals", tags=["end of day"])
    def totals(who: str = Depends(register)) -> dict[str, Any]:
        """Totals since the last end of day, per card brand and currency."""
        return {"totals": totals_json(checkout.totals()), "batches": checkout.journal.batches()[:5]}

    @app.post("/api/v1/end-of-day", tags=["end of day"])
    def end_of_day(who: str = Depends(register)) -> dict[str, Any]:
        """Send the offline queue, close the batch with the acquirer, report its totals."""
        return checkout.end_of_day()

    @app.get("/api/v1/queue", tags=["status"])
    def queue(who: str = Depends(register)) -> dict[str, Any]:
        return checkout.queue_summary().to_json()

    @app.post("/api/v1/queue/sync", tags=["status"])
    def sync(who: str = Depends(register)) -> dict[str, Any]:
        """Send the offline queue now."""
        return {"sync": dict(checkout.sync_offline()), "queue": checkout.queue_summary().to_json()}

    @app.get("/api/v1/status", tags=["status"])
    def status(who: str = Depends(register)) -> dict[str, Any]:
        return checkout.status() | dict(settings.extra_status())

    @app.get("/api/v1/ui-strings", tags=["status"])
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

    @app.get("/health", tags=["status"])
    def health() -> dict[str, Any]:
        """Liveness without a token (no business data)."""
        return {"status": "ok", "busy": checkout.current is not None}

    # --- events -----------------------------------------------------------------------

    @app.get("/api/v1/events", tags=["sales"], response_class=StreamingResponse)
    async def events(
        request: Request,
        who: str = Depends(register),
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[int | None, Query(ge=0)] = None,
    ) -> StreamingResponse:
        """Server-sent events: `transaction` (every change), `status` (queue, host),
        `end_of_day`, `restart` (the card asks for another tap: `id`, `message` in the
        terminal's language, `reason`; the sale goes on). Resume with Last-Event-ID or
        ?after=."""
        start = after
        if start is None and last_event_id and last_event_id.isdigit():
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
                    batch = await run_in_threadpool(hub.after, last, settings.sse_keepalive)
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

        @app.post("/api/v1/simulator/present", tags=["simulator"])
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

        @app.post("/api/v1/simulator/scan", tags=["simulator"])
        def scan(body: ScanBody, who: str = Depends(register)) -> dict[str, Any]:
            """Hold a code to the simulated scanner (demo terminals only)."""
            try:
                sim_scanner.scan(body.code)
            except ScanRejectedError as exc:
                raise _ApiError(422, "unreadable_code", str(exc), field="code") from exc
            return {"scanned": len(body.code)}

    if settings.phone is not None:
        phone = settings.phone

        @app.post("/api/v1/simulator/phone", tags=["simulator"])
        def phone_code(body: PhoneBody, who: str = Depends(register)) -> dict[str, Any]:
            """The simulated customer's wallet makes a code (registered with the simulated
            acquirer) and holds it to the simulated scanner."""
            try:
                phone.show(body.code)
            except SimulatedDeviceError as exc:
                raise _ApiError(503, "simulator_error", str(exc)) from exc
            return {"shown": body.code}

        @app.post("/api/v1/simulator/pay-merchant-qr", tags=["simulator"])
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

    # --- the checkout page ------------------------------------------------------------

    web = resources.files("terminal.api").joinpath("web")

    def page() -> str:
        text = web.joinpath("index.html").read_text(encoding="utf-8")
        token = settings.page_token or ""
        flags = {
            "{{SIMULATOR}}": settings.field is not None,
            "{{SIM_SCANNER}}": settings.scanner is not None,
            "{{SIM_PHONE}}": settings.phone is not None,
        }
        for marker, on in flags.items():
            text = text.replace(marker, "true" if on else "false")
        return text.replace("{{PAGE_TOKEN}}", token)

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page(), headers={"Cache-Control": "no-store"})

    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        suffix = os.path.splitext(name)[1]
        if "/" in name or name.startswith(".") or suffix not in types:
            raise _ApiError(404, "not_found", "no such file")
        item = web.joinpath(name)
        if not item.is_file():
            raise _ApiError(404, "not_found", "no such file")
        return Response(item.read_bytes(), media_type=types[suffix])

    return app
