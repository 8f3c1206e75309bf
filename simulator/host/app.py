"""The simulated acquirer host as a FastAPI application (OpenAPI at /openapi.json, /docs).

`create_app()` returns an ASGI application: the FastAPI app wrapped in the fault injector.
Protocol endpoints live under /v1 and require a signed request (docs/protocol.md); admin
endpoints under /admin are for tests and the operator (optionally guarded by a token).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from . import verify
from .decisions import CryptogramVerifier
from .faults import Fault, FaultBoard, FaultInjector, FaultMode
from .guard import (
    DEFAULT_LIMIT,
    DEFAULT_WINDOW,
    ENROLMENT_LIMIT,
    ENROLMENT_REFUSALS,
    ENROLMENT_WINDOW,
    RejectionGuard,
    rate_limited,
    refuse_if_flooding,
    source_of,
)
from .iso8583.terminals import TerminalRegistry
from .ledger import Store
from .qr_payments import router as qr_router
from .service import ENROL_PATH, AcquirerHost, Caller, HostError, dumps

_HEX = r"^[0-9A-Fa-f]*$"
_PAN = r"^[0-9]{12,19}$"
_ID = r"^[A-Za-z0-9._:~-]{1,128}$"
_MAX_AMOUNT = 10**12 - 1  # n12 (EMV 9F02)
_MAX_INT64 = 2**63 - 1  # what SQLite's INTEGER holds: every stored number stays below it
_B64 = r"^[A-Za-z0-9+/]*={0,2}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrolBody(_Body):
    activation_code: str = Field(min_length=1, max_length=64)
    public_key: str = Field(description="raw Ed25519 public key, base64")
    serial: str = Field(default="", max_length=64)


class RotateBody(_Body):
    new_public_key: str
    proof: str = Field(description="new key's signature over the rotation statement")


class AuthoriseBody(_Body):
    amount: int = Field(gt=0, le=_MAX_AMOUNT, description="minor units")
    currency: int = Field(ge=1, le=999, description="ISO 4217 numeric")
    pan: str = Field(pattern=_PAN)
    pan_sequence: int | None = Field(default=None, ge=0, le=99)
    expiry: str | None = Field(default=None, pattern=r"^[0-9]{4}$", description="YYMM")
    brand: str | None = Field(default=None, max_length=32)
    aid: str | None = Field(default=None, pattern=_HEX, max_length=32)
    transaction_type: str = Field(default="purchase", max_length=32)
    entry_mode: str = Field(default="contactless", max_length=32)
    emv: dict[str, str] = Field(default_factory=dict, description="tag hex -> value hex")
    kind: Literal["sale", "preauth"] = Field(
        default="sale", description="preauth: a hold, captured or released later"
    )


class HoldAmountBody(_Body):
    """An increment or a capture of a pre-authorisation's hold."""

    amount: int = Field(gt=0, le=_MAX_AMOUNT, description="minor units")
    currency: int = Field(ge=1, le=999, description="ISO 4217 numeric")


class ReleaseBody(_Body):
    """A release of a hold: nothing but the signed request."""


class ReversalBody(_Body):
    original_ref: str | None = Field(default=None, pattern=_ID)
    original_idempotency_key: str | None = Field(default=None, pattern=_ID)
    reason: str = Field(default="", max_length=64)


class VoidBody(_Body):
    original_ref: str = Field(pattern=_ID)


class RefundBody(_Body):
    amount: int = Field(gt=0, le=_MAX_AMOUNT)
    currency: int = Field(ge=1, le=999)
    original_ref: str | None = Field(default=None, pattern=_ID)
    pan: str | None = Field(default=None, pattern=_PAN)
    brand: str | None = Field(default=None, max_length=32)
    aid: str | None = Field(default=None, pattern=_HEX, max_length=32)


class OfflineItem(_Body):
    offline_id: str = Field(pattern=_ID)
    amount: int = Field(gt=0, le=_MAX_AMOUNT)
    currency: int = Field(ge=1, le=999)
    pan: str = Field(pattern=_PAN)
    pan_sequence: int | None = Field(default=None, ge=0, le=99)
    expiry: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    brand: str | None = Field(default=None, max_length=32)
    aid: str | None = Field(default=None, pattern=_HEX, max_length=32)
    emv: dict[str, str] = Field(default_factory=dict)
    captured_at: int | None = Field(default=None, ge=0, le=_MAX_INT64)
    signed_record: str | None = Field(
        default=None, max_length=4096, pattern=_B64, description="the terminal's record, base64"
    )
    signature: str | None = Field(
        default=None, max_length=128, pattern=_B64, description="its Ed25519 signature, base64"
    )
    key_id: str | None = Field(default=None, pattern=_ID, description="the signing key's id")


class OfflineBatchBody(_Body):
    items: list[OfflineItem] = Field(max_length=1000)


class Totals(_Body):
    brand: str = Field(max_length=32)
    currency: int = Field(ge=1, le=999)
    sales_count: int = Field(ge=0, le=_MAX_INT64)
    sales_amount: int = Field(ge=0, le=_MAX_INT64)
    refunds_count: int = Field(ge=0, le=_MAX_INT64)
    refunds_amount: int = Field(ge=0, le=_MAX_INT64)
    net_amount: int | None = Field(default=None, ge=-_MAX_INT64, le=_MAX_INT64)


class SettlementBody(_Body):
    terminal_totals: list[Totals] | None = Field(default=None, max_length=1000)


class RefundLimitBody(_Body):
    limit: int = Field(ge=0, le=_MAX_INT64, description="minor units per 24 hours; 0: none")


class TerminalKeysBody(_Body):
    key_ids: list[Annotated[str, Field(pattern=_ID)]] = Field(
        min_length=1, max_length=100, description="key ids to confirm (ed25519:...)"
    )


class ActivationCodeBody(_Body):
    merchant_id: str = Field(pattern=_ID)
    code: str | None = Field(default=None, pattern=_ID)


# Rules name cards by PAN and amounts in minor units: digits and 64-bit integers only, so a
# bad rule is a 422 rather than a crash in the card-token hash or in SQLite.
_Pan = Annotated[str, Field(pattern=r"^[0-9]{8,19}$")]
_Minor = Annotated[int, Field(ge=0, le=2**63 - 1)]


class RulesBody(_Body):
    insufficient_funds_suffix: int | None = Field(default=51, ge=0, le=99)
    decline_amounts: dict[Annotated[str, Field(pattern=r"^[0-9]{1,12}$")], str] = Field(
        default_factory=dict, description="amount in minor units -> response code"
    )
    card_limits: dict[_Pan, _Minor] = Field(default_factory=dict, description="PAN -> limit")
    default_card_limit: _Minor | None = None
    blocked_cards: list[_Pan] = Field(default_factory=list, description="PANs")
    require_arqc: bool = Field(
        default=True, description="decline an online card authorisation without 9F26"
    )
    require_verified_arqc: bool = Field(
        default=False, description="decline too an ARQC the host holds no issuer key for"
    )
    preauth_hold_days: int = Field(
        default=7, ge=0, le=365, description="days a pre-authorisation's hold stays open"
    )


class IssuerKeyBody(_Body):
    imk_ac: str = Field(pattern=r"^[0-9A-Fa-f]{32}$")
    session_key: str = Field(default="common", pattern=r"^(common|mastercard)$")
    padding: int = Field(default=2, ge=1, le=2)
    iad: str = Field(default="none", pattern=r"^(none|full)$")
    arpc_key: str = Field(default="session", pattern=r"^(session|master)$")


class Iso8583TerminalBody(_Body):
    terminal_id: str = Field(pattern=_ID, description="the pipos terminal id (enrolled)")


class FaultBody(_Body):
    mode: FaultMode
    delay_ms: int = Field(default=0, ge=0, le=120_000)
    times: int | None = Field(default=None, ge=1)


def _signed_path(scope: Scope) -> str:
    path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return path + ("?" + query if query else "")


async def _signed(request: Request) -> Caller:
    """Dependency: authenticate the signed request (before the body is validated)."""
    path = _signed_path(request.scope)
    refuse_if_flooding(request, enrolling=path == ENROL_PATH)
    host: AcquirerHost = request.app.state.host
    body = await request.body()
    caller = host.authenticate(method=request.method, path=path, headers=request.headers, body=body)
    # Refusals from here on are recorded in the ledger only for an enrolled terminal's key;
    # an enrolment is signed by whatever key its sender made (simulator.host.guard).
    request.state.authenticated = caller.enrolled
    return caller


async def _admin(request: Request, x_admin_token: Annotated[str | None, Header()] = None) -> None:
    expected: str | None = request.app.state.admin_token
    if expected is not None and not (
        x_admin_token and secrets.compare_digest(x_admin_token, expected)
    ):
        raise HostError(403, "admin_token_required", "X-Admin-Token is missing or wrong")


SignedCaller = Annotated[Caller, Depends(_signed)]
Admin = Depends(_admin)


class HostApp:
    """The ASGI entry point: fault injector -> FastAPI. Exposes the host and fault board."""

    def __init__(self, fastapi: FastAPI, host: AcquirerHost, faults: FaultBoard) -> None:
        self.fastapi = fastapi
        self.host = host
        self.faults = faults
        self._asgi = FaultInjector(fastapi, faults)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)


def create_app(
    db_path: str | os.PathLike[str],
    *,
    clock: Callable[[], float] = time.time,
    token: Callable[[int], bytes] = os.urandom,
    timestamp_window: int = 300,
    verifier: CryptogramVerifier | None = None,
    admin_token: str | None = None,
    rejection_limit: int = DEFAULT_LIMIT,
    rejection_window: float = DEFAULT_WINDOW,
    enrolment_limit: int = ENROLMENT_LIMIT,
    enrolment_window: float = ENROLMENT_WINDOW,
) -> HostApp:
    """`rejection_limit` refusals of unauthenticated requests per `rejection_window`
    seconds and source address, then 429; of those, `enrolment_limit` refused enrolments
    (wrong activation codes) per `enrolment_window` (simulator.host.guard)."""
    store = Store(FilePath(db_path))
    host = AcquirerHost(
        store, clock=clock, token=token, timestamp_window=timestamp_window, verifier=verifier
    )
    faults = FaultBoard()
    app = FastAPI(
        title="pipos simulated acquirer",
        version="1",
        description="Signed terminal protocol (docs/protocol.md) and test admin endpoints.",
    )

    app.state.host = host
    app.state.faults = faults
    guard = RejectionGuard(limit=rejection_limit, window=rejection_window)
    app.state.guard = guard
    enrolment_guard = RejectionGuard(limit=enrolment_limit, window=enrolment_window)
    app.state.enrolment_guard = enrolment_guard
    app.state.admin_token = admin_token
    # Phone QR payments (consumer-presented, wallet codes, merchant-presented orders).
    app.include_router(qr_router)

    def respond(
        request: Request, status: int, body: bytes, *, retry_after: float | None = None
    ) -> Response:
        headers = {}
        seq = verify.response_seq(request.headers.get("x-pipos-seq", ""))
        terminal = request.headers.get("x-pipos-terminal", "-")
        if seq is not None and (terminal == "-" or verify.TOKEN.fullmatch(terminal)):
            # Signed whenever the answer can be bound to a request number, refusals of an
            # out-of-range number included.
            headers["X-Pipos-Host-Key-Id"] = host.host_key_id
            headers["X-Pipos-Host-Signature"] = host.sign_response(
                terminal_id=terminal if terminal else "-", seq=seq, status=status, body=body
            )
        if status == 429:
            headers["Retry-After"] = str(max(1, round(retry_after or guard.window)))
        return Response(
            content=body, status_code=status, media_type="application/json", headers=headers
        )

    def reject(request: Request, error: HostError) -> Response:
        path = _signed_path(request.scope)
        if error.authenticated or getattr(request.state, "authenticated", False):
            # The terminal's own signed request: kept in the ledger with the reason.
            host.record_rejection(
                method=request.method, path=path, headers=request.headers, error=error
            )
        elif error.code != "rate_limited":
            # Anyone's junk, a refused enrolment included: counted in memory, never a row
            # each (issue 16: 19.3 MB from 2,000 junk requests); past the source's limit the
            # answer is 429.
            source = source_of(request)
            if guard.blocked(source):
                error = rate_limited(guard)
            else:
                guard.record(
                    source, error.code, method=request.method, path=path, status=error.status
                )
                if error.code in ENROLMENT_REFUSALS:
                    # An activation-code oracle: its own, stricter limit.
                    enrolment_guard.record(
                        source, error.code, method=request.method, path=path, status=error.status
                    )
        return respond(request, error.status, dumps(error.body()), retry_after=error.retry_after)

    @app.exception_handler(HostError)
    async def _host_error(request: Request, exc: HostError) -> Response:
        return reject(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own refusals (a body it cannot parse, an unknown path or method) in the
        # protocol's error shape, signed like every other answer.
        code = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        response = reject(request, HostError(exc.status_code, code, str(exc.detail)))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return reject(request, HostError(422, "invalid_request", problems[:500]))

    async def money(
        request: Request,
        caller: Caller,
        endpoint: str,
        operation: Callable[[Any], dict[str, Any]],
    ) -> Response:
        status, body = host.idempotent(caller, endpoint, await request.body(), operation)
        return respond(request, status, body)

    # --- public ---------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/host-key")
    async def host_key() -> dict[str, Any]:
        """The host's Ed25519 public key, for pinning (also returned at enrolment)."""
        return host.host_key_info()

    # --- signed protocol ------------------------------------------------------------------

    @app.post("/v1/enrol")
    async def enrol(request: Request, payload: EnrolBody, caller: SignedCaller) -> Response:
        result = host.enrol(caller, payload.model_dump())
        return respond(request, 200, dumps(result))

    @app.post("/v1/keys/rotate")
    async def rotate(request: Request, payload: RotateBody, caller: SignedCaller) -> Response:
        return respond(request, 200, dumps(host.rotate_key(caller, payload.model_dump())))

    @app.post("/v1/terminal-keys")
    async def terminal_keys(
        request: Request, payload: TerminalKeysBody, caller: SignedCaller
    ) -> Response:
        """Which of these key ids are keys of terminals of the caller's merchant (their
        public keys, terminals and retirement), for an import to trust (docs/protocol.md)."""
        return respond(request, 200, dumps(host.terminal_keys(caller, payload.key_ids)))

    @app.get("/v1/terminal")
    async def whoami(request: Request, caller: SignedCaller) -> Response:
        return respond(request, 200, dumps(host.whoami(caller)))

    @app.get("/v1/parameters")
    async def parameters(request: Request, caller: SignedCaller) -> Response:
        return respond(request, 200, dumps(host.parameters(caller)))

    @app.post("/v1/authorisations")
    async def authorise(request: Request, payload: AuthoriseBody, caller: SignedCaller) -> Response:
        data = payload.model_dump()
        return await money(
            request, caller, "authorisations", lambda conn: host.authorise(caller, conn, data)
        )

    @app.post("/v1/preauths/{ref}/increments")
    async def increment(
        request: Request,
        ref: Annotated[str, Path(pattern=_ID)],
        payload: HoldAmountBody,
        caller: SignedCaller,
    ) -> Response:
        data = payload.model_dump()
        return await money(
            request,
            caller,
            f"preauths/{ref}/increments",
            lambda conn: host.increment(caller, conn, ref, data),
        )

    @app.post("/v1/preauths/{ref}/capture")
    async def capture(
        request: Request,
        ref: Annotated[str, Path(pattern=_ID)],
        payload: HoldAmountBody,
        caller: SignedCaller,
    ) -> Response:
        data = payload.model_dump()
        return await money(
            request,
            caller,
            f"preauths/{ref}/capture",
            lambda conn: host.capture(caller, conn, ref, data),
        )

    @app.post("/v1/preauths/{ref}/release")
    async def release(
        request: Request,
        ref: Annotated[str, Path(pattern=_ID)],
        payload: ReleaseBody,
        caller: SignedCaller,
    ) -> Response:
        return await money(
            request, caller, f"preauths/{ref}/release", lambda conn: host.release(caller, conn, ref)
        )

    @app.post("/v1/reversals")
    async def reversal(request: Request, payload: ReversalBody, caller: SignedCaller) -> Response:
        data = payload.model_dump()
        return await money(
            request, caller, "reversals", lambda conn: host.reverse(caller, conn, data)
        )

    @app.post("/v1/voids")
    async def void(request: Request, payload: VoidBody, caller: SignedCaller) -> Response:
        data = payload.model_dump()
        return await money(request, caller, "voids", lambda conn: host.void(caller, conn, data))

    @app.post("/v1/refunds")
    async def refund(request: Request, payload: RefundBody, caller: SignedCaller) -> Response:
        data = payload.model_dump()
        return await money(request, caller, "refunds", lambda conn: host.refund(caller, conn, data))

    @app.post("/v1/batches/offline")
    async def offline(
        request: Request, payload: OfflineBatchBody, caller: SignedCaller
    ) -> Response:
        data = payload.model_dump()
        return await money(
            request, caller, "offline", lambda conn: host.offline_batch(caller, conn, data)
        )

    @app.post("/v1/settlement")
    async def settlement(
        request: Request, payload: SettlementBody, caller: SignedCaller
    ) -> Response:
        data = payload.model_dump(exclude_none=True)
        return await money(
            request, caller, "settlement", lambda conn: host.settle(caller, conn, data)
        )

    @app.get("/v1/transactions/{ref}")
    async def status_by_ref(request: Request, ref: str, caller: SignedCaller) -> Response:
        return respond(request, 200, dumps(host.status(caller, ref=ref, idem=None)))

    @app.get("/v1/transactions")
    async def status_by_key(
        request: Request, idempotency_key: str, caller: SignedCaller
    ) -> Response:
        return respond(request, 200, dumps(host.status(caller, ref=None, idem=idempotency_key)))

    # --- admin ----------------------------------------------------------------------------

    @app.post("/admin/activation-codes", dependencies=[Admin])
    async def activation_code(payload: ActivationCodeBody) -> dict[str, str]:
        """A one-time code, with the host key fingerprint the technician pins
        (`pipos provision --host-key`)."""
        code = host.create_activation_code(payload.merchant_id, payload.code)
        return {
            "code": code,
            "merchant_id": payload.merchant_id,
            "host_key_fingerprint": host.host_key_fingerprint,
        }

    @app.put("/admin/merchants/{merchant_id}/unreferenced-refund-limit", dependencies=[Admin])
    async def unreferenced_refund_limit(
        merchant_id: Annotated[str, Path(pattern=_ID)], payload: RefundLimitBody
    ) -> dict[str, Any]:
        return host.set_unreferenced_refund_limit(merchant_id, payload.limit)

    @app.get("/admin/status", dependencies=[Admin])
    async def status() -> dict[str, Any]:
        """The host key, what is in the ledger, and the unauthenticated refusals counted in
        memory (by code and source, the most recent, how many were rate-limited)."""
        counts = store.one(
            "SELECT (SELECT COUNT(*) FROM terminals) AS terminals, "
            "(SELECT COUNT(*) FROM transactions) AS transactions, "
            "(SELECT COUNT(*) FROM rejections) AS recorded_rejections"
        )
        return {
            **host.host_key_info(),
            **(counts or {}),
            "unauthenticated_rejections": guard.snapshot(),
            "enrolment_refusals": enrolment_guard.snapshot(),
        }

    @app.put("/admin/rules", dependencies=[Admin])
    async def set_rules(payload: RulesBody) -> dict[str, Any]:
        return host.set_rules(payload.model_dump())

    @app.put("/admin/issuer-keys", dependencies=[Admin])
    async def set_issuer_keys(payload: dict[str, IssuerKeyBody]) -> dict[str, Any]:
        host.set_issuer_keys({k: v.model_dump() for k, v in payload.items()})
        return {"issuer_keys": sorted(payload)}

    @app.put("/admin/parameters", dependencies=[Admin])
    async def set_parameters(payload: dict[str, Any]) -> dict[str, Any]:
        return {"version": host.set_parameters(payload)}

    @app.put("/admin/faults", dependencies=[Admin])
    async def set_faults(payload: dict[str, FaultBody]) -> dict[str, Any]:
        for path, f in payload.items():
            try:
                faults.set(path, Fault(f.mode, f.delay_ms, f.times))
            except ValueError as exc:
                raise HostError(422, "invalid_fault", str(exc)) from exc
        return faults.snapshot()

    @app.delete("/admin/faults", dependencies=[Admin])
    async def clear_faults() -> dict[str, Any]:
        faults.clear()
        return {}

    @app.get("/admin/faults", dependencies=[Admin])
    async def get_faults() -> dict[str, Any]:
        return faults.snapshot()

    def _view(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not isinstance(v, bytes)} for r in rows]

    @app.get("/admin/ledger", dependencies=[Admin])
    async def ledger(terminal_id: str | None = None) -> list[dict[str, Any]]:
        return _view(store.ledger(terminal_id))

    @app.get("/admin/events", dependencies=[Admin])
    async def events() -> list[dict[str, Any]]:
        return _view(store.events())

    @app.get("/admin/rejections", dependencies=[Admin])
    async def rejections() -> list[dict[str, Any]]:
        """The refusals of authenticated requests (ledger rows), then the most recent
        unauthenticated ones (kept in memory only, `"recorded": "memory"`)."""
        recent = [{**r, "recorded": "memory"} for r in guard.snapshot()["recent"]]
        return _view(store.rejections()) + recent

    @app.get("/admin/terminals", dependencies=[Admin])
    async def terminals() -> list[dict[str, Any]]:
        return _view(store.query("SELECT * FROM terminals ORDER BY enrolled_at"))

    iso8583 = TerminalRegistry(host)

    @app.post("/admin/iso8583/terminals", dependencies=[Admin])
    async def iso8583_terminal(payload: Iso8583TerminalBody) -> dict[str, Any]:
        """Register an enrolled terminal for ISO 8583: its TID (field 41), MID (field 42)
        and TMK as a TR-31 block under the KIF's TEST KBPK; the same answer every time
        (docs/iso8583.md)."""
        return iso8583.register(payload.terminal_id)

    @app.get("/admin/batches", dependencies=[Admin])
    async def batches() -> list[dict[str, Any]]:
        return _view(store.query("SELECT * FROM batches ORDER BY closed_at"))

    return HostApp(app, host, faults)


__all__ = ["HostApp", "create_app"]
