"""Pairing a cash register with the terminal (docs/api.md, "Pairing"): the routes.

A register on another machine gets no token from the page or the banner: the merchant (a
register already paired, or the checkout page, with the merchant PIN) or the technician
(``pipos registers pair``) asks for a one-time code, and the new register trades it for
its own token at ``POST /api/v1/pairing``, the one /api/v1 endpoint that needs no token.
The store is terminal.store.registers (the codes' life, their tries, the tokens' hashes);
here are the answers and the second brake on guessing: a client address that gave
:data:`~terminal.store.registers.CODE_TRIES` wrong codes within
:data:`~terminal.store.registers.CODE_LIFETIME` seconds is answered 429 (``Retry-After``)
until the oldest of them is that old, whatever code is live.

- ``POST /api/v1/pairing`` ``{"code": "123 456", "name": "till-2"}``: 201 ``{"register",
  "token"}`` (the token shown this once); 403 pairing_code_invalid (``reason`` wrong,
  with ``tries_left``; expired; none: no code waits, or it was used or burned); 409
  register_name_taken (``reason`` paired: a register not revoked has it; reserved: a
  fixed token's register or the checkout page); 429 pairing_rate_limited.
- ``POST /api/v1/pairing/codes`` ``{"pin"}`` (a register or the page, and the merchant
  PIN): 201 a new code ``{code, shown, expires_at, expires_in}``.
- ``GET /api/v1/registers``: the paired registers, revoked ones too, never a token.
- ``DELETE /api/v1/registers/{name}`` ``{"pin"}``: revokes it (its token is 401
  token_revoked from its next request on); 404 register_not_found.

Each is audited (terminal.store.audit): register_paired under the new register's name,
register_pairing_refused, pairing_code_issued and register_revoked under the caller's.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from ..store.idempotency import IdempotencyError
from ..store.registers import (
    CODE_LIFETIME,
    CODE_TRIES,
    NAME_PATTERN,
    CodeRefused,
    NameTaken,
    PairedRegister,
    RefusalReason,
    RegisterNameError,
    RegisterStore,
    RegisterStoreError,
    normalise_code,
)
from ..store.webhooks import WebhookError, drop_webhook
from .common import ApiError, Body, ok_answers
from .models import ErrorEnvelope
from .settings import SHARED_REGISTER, RouteKit

log = logging.getLogger(__name__)

__all__ = [
    "PAGE_CALLER",
    "PairingAnswer",
    "PairingCode",
    "RegisterList",
    "RegisterView",
    "install",
]

#: The checkout page's name as a caller (terminal.api.server.PAGE; this module cannot
#: import the server, which imports it; tests/terminal/api/test_pairing.py keeps the two
#: equal): no register may be paired under it.
PAGE_CALLER: Final = "checkout-page"
#: Client addresses whose wrong codes are remembered at most (the oldest forgotten first),
#: so a flood from many addresses cannot grow the terminal's memory without end.
_MAX_ADDRESSES: Final = 4096


# --- answers --------------------------------------------------------------------------


class PairingAnswer(BaseModel):
    """The register, paired: its token (shown this once, never again) names it from now on."""

    # (`register` is also a method of BaseModel's ABC: the field is named by its alias.)
    register_name: str = Field(
        alias="register", description="the register's name, as the audit log shows it"
    )
    token: str = Field(
        description="the register's token: `Authorization: Bearer <token>` on every request"
    )


class PairingCode(BaseModel):
    """A one-time pairing code for the merchant to type at the new register."""

    code: str = Field(pattern=r"^[0-9]{6}$", description="the 6 digits")
    shown: str = Field(description='as it is printed for the merchant: "123 456"')
    expires_at: str = Field(description="ISO 8601, UTC")
    expires_in: int = Field(description="seconds it is valid from now")


class RegisterView(BaseModel):
    """A paired register (never its token)."""

    name: str
    created_at: str = Field(description="when it was paired, ISO 8601 UTC")
    last_seen_at: str | None = Field(
        description="its last request, ISO 8601 UTC, to the minute (null: none yet)"
    )
    revoked_at: str | None = Field(description="when it was revoked (null: it may use the API)")
    revoked: bool


class RegisterList(BaseModel):
    registers: list[RegisterView]


# --- request bodies -------------------------------------------------------------------


class PairingBody(Body):
    code: StrictStr = Field(
        min_length=6,
        max_length=12,
        pattern=r"^[0-9 ]+$",
        description="the code `pipos registers pair` printed or POST /api/v1/pairing/codes "
        'gave, spaces allowed ("123 456")',
    )
    name: StrictStr = Field(
        pattern=NAME_PATTERN,
        description="the register's name: 1 to 32 letters, digits, spaces, '.', '_', '-'",
    )


class PinBody(Body):
    pin: StrictStr = Field(min_length=4, max_length=12, pattern=r"^[0-9]+$")


# --- the OpenAPI's answers ------------------------------------------------------------

_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "seconds until this address may try a code again",
        "schema": {"type": "integer"},
    }
}


def _answers(
    model: type[BaseModel],
    *statuses: int,
    code: int = 200,
    texts: Mapping[int, str] | None = None,
    token: bool = True,
) -> dict[int | str, Any]:
    """ok_answers, with this module's own statuses: 429 (not in the shared table) and
    the descriptions its 403 and 409 mean here; `token` False: no 401 (no token asked)."""
    answers = ok_answers(model, *[s for s in statuses if s != 429], code=code)
    for status, text in (texts or {}).items():
        answers[status] = {**answers[status], "description": text}
    if 429 in statuses:
        answers[429] = {
            "model": ErrorEnvelope,
            "description": f"{CODE_TRIES} wrong codes from this address within "
            f"{int(CODE_LIFETIME)} s (pairing_rate_limited; `retry_after`)",
            "headers": _RETRY_AFTER,
        }
    if not token:
        answers.pop(401, None)
    return answers


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _view(register: PairedRegister) -> dict[str, Any]:
    return {
        "name": register.name,
        "created_at": _iso(register.created_at),
        "last_seen_at": _iso(register.last_seen_at),
        "revoked_at": _iso(register.revoked_at),
        "revoked": register.revoked,
    }


class _WrongCodes:
    """The wrong codes each client address gave within the last `window` seconds: the
    address is held back once it has `limit` of them."""

    def __init__(self, clock: Callable[[], float], *, limit: int, window: float) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._seen.get(address, deque())
        while times and now - times[0] >= self._window:
            times.popleft()
        return times

    def wait(self, address: str) -> int:
        """Seconds `address` must wait before it may try a code (0: it may now)."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            if len(times) < self._limit:
                return 0
            return max(1, math.ceil(times[0] + self._window - now))

    def wrong(self, address: str) -> None:
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            times.append(now)
            self._seen.pop(address, None)
            self._seen[address] = times  # the newest last: the first is the one to forget
            while len(self._seen) > _MAX_ADDRESSES:
                del self._seen[next(iter(self._seen))]


def install(app: FastAPI, kit: RouteKit) -> None:
    """Adds the pairing and register routes to `app` (the store: kit.settings.registers)."""
    settings = kit.settings
    store = settings.registers
    # Closed with the API (terminal.api.stack.ApiServer.stop), as the idempotency store is.
    app.state.registers = store
    wrong_codes = _WrongCodes(
        store.clock if store is not None else (lambda: 0.0),
        limit=CODE_TRIES,
        window=CODE_LIFETIME,
    )
    reserved = {name.casefold() for name in settings.tokens.values()} | {
        PAGE_CALLER,
        SHARED_REGISTER.casefold(),
    }

    def registers() -> RegisterStore:
        if store is None:
            raise ApiError(
                503,
                "pairing_unavailable",
                "this terminal keeps no paired registers; use the register token it was "
                "started with",
            )
        return store

    def unavailable(exc: RegisterStoreError) -> ApiError:
        return ApiError(503, "registers_unavailable", str(exc))

    def audit(event: str, actor: str, **detail: Any) -> None:
        if settings.audit is not None:
            settings.audit.record(event, actor=actor, **detail)

    @app.post(
        "/api/v1/pairing",
        status_code=201,
        tags=["pairing"],
        response_model=None,
        responses=_answers(
            PairingAnswer,
            403,
            409,
            413,
            422,
            429,
            503,
            code=201,
            token=False,
            texts={
                403: "The code is not the one waiting (pairing_code_invalid; `reason` "
                "wrong, with `tries_left`, expired, or none: no code waits, or it was used "
                "or burned)",
                409: "A register not revoked has this name, or it is reserved "
                "(register_name_taken; `reason` paired or reserved)",
            },
        ),
    )
    def pair(request: Request, body: PairingBody) -> JSONResponse:
        """Pair a new register: the code the terminal gave (POST /api/v1/pairing/codes, or
        `pipos registers pair`) and a name for it. No token needed; the answer holds the
        register's own token, shown once. A code pairs one register, is valid 5 minutes
        and takes 5 wrong tries in all; an address that gave 5 wrong codes waits
        (429)."""
        address = request.client.host if request.client is not None else "unknown"
        wait = wrong_codes.wait(address)
        if wait:
            raise ApiError(
                429,
                "pairing_rate_limited",
                f"{CODE_TRIES} wrong pairing codes from {address}; try again in {wait} s",
                retry_after=wait,
                details={"retry_after": wait},
            )
        digits = normalise_code(body.code)
        if digits is None:
            raise ApiError(422, "invalid_request", "code: 6 digits (spaces allowed)", field="code")
        if body.name.casefold() in reserved:
            raise ApiError(
                409,
                "register_name_taken",
                f"register name {body.name!r} is reserved on this terminal; choose another",
                field="name",
                details={"reason": "reserved"},
            )
        try:
            outcome = registers().pair(digits, body.name)
        except RegisterNameError as exc:
            raise ApiError(422, "invalid_request", str(exc), field="name") from exc
        except RegisterStoreError as exc:
            raise unavailable(exc) from exc
        if isinstance(outcome, CodeRefused):
            if outcome.reason is RefusalReason.WRONG:
                wrong_codes.wrong(address)
            audit(
                "register_pairing_refused",
                "unpaired",
                name=body.name,
                address=address,
                reason=outcome.reason.value,
            )
            details: dict[str, int | str] = {"reason": outcome.reason.value}
            if outcome.reason is RefusalReason.WRONG:
                details["tries_left"] = outcome.tries_left
            said = {
                RefusalReason.WRONG: "not the pairing code the terminal gave",
                RefusalReason.EXPIRED: "the pairing code has expired; ask for a new one",
                RefusalReason.NONE: "no pairing code waits (none was asked for, or it was "
                "used or burned by wrong tries); ask for a new one",
            }[outcome.reason]
            raise ApiError(403, "pairing_code_invalid", said, field="code", details=details)
        if isinstance(outcome, NameTaken):
            raise ApiError(
                409,
                "register_name_taken",
                f"a register named {outcome.name!r} is paired (revoke it first, or choose "
                "another name); the code still holds",
                field="name",
                details={"reason": "paired"},
            )
        audit("register_paired", outcome.register.name, address=address)
        return JSONResponse(
            {"register": outcome.register.name, "token": outcome.token},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    @app.post(
        "/api/v1/pairing/codes",
        status_code=201,
        tags=["pairing"],
        response_model=None,
        responses=_answers(PairingCode, 403, 413, 422, 423, 503, code=201),
    )
    def new_code(body: PinBody, who: str = Depends(kit.register)) -> JSONResponse:
        """A new one-time pairing code for the merchant to type at the new register (the
        one before it stops pairing), valid 5 minutes. Needs the merchant PIN (body
        `{"pin": "..."}`)."""
        kit.check_pin(body.pin, who, "pairing_code", "")
        store = registers()
        try:
            issued = store.issue_code()
        except RegisterStoreError as exc:
            raise unavailable(exc) from exc
        audit("pairing_code_issued", who, expires_at=int(issued.expires_at))
        left = max(0, int(issued.expires_at - store.clock()))
        return JSONResponse(
            {
                "code": issued.code,
                "shown": issued.shown,
                "expires_at": _iso(issued.expires_at),
                "expires_in": left,
            },
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    @app.get(
        "/api/v1/registers",
        tags=["pairing"],
        response_model=None,
        responses=_answers(RegisterList, 503),
    )
    def list_registers(who: str = Depends(kit.register)) -> dict[str, Any]:
        """The registers paired with a code, in the order they were paired, revoked ones
        too (the registers of fixed tokens are not listed); never a token."""
        try:
            paired = registers().registers()
        except RegisterStoreError as exc:
            raise unavailable(exc) from exc
        return {"registers": [_view(r) for r in paired]}

    @app.delete(
        "/api/v1/registers/{name}",
        tags=["pairing"],
        response_model=None,
        responses=_answers(RegisterView, 403, 404, 413, 422, 423, 503),
    )
    def revoke(name: str, body: PinBody, who: str = Depends(kit.register)) -> dict[str, Any]:
        """Revoke a paired register: its token is refused (401 token_revoked) from its next
        request on; its name may be paired again. Needs the merchant PIN."""
        kit.check_pin(body.pin, who, "register_revoke", "")
        try:
            revoked = registers().revoke(name)
        except RegisterNameError as exc:
            raise ApiError(422, "invalid_request", str(exc), field="name") from exc
        except RegisterStoreError as exc:
            raise unavailable(exc) from exc
        if revoked is None:
            raise ApiError(404, "register_not_found", f"no paired register named {name[:40]!r}")
        # Audited as soon as it holds: what follows only tidies up after it.
        audit("register_revoked", who, register=revoked.name)
        forget_register(revoked.name)
        return _view(revoked)

    def forget_register(name: str) -> None:
        """A revoked register's webhook (nothing more is signed with a token that no longer
        counts) and its kept answers (a register paired again under the name is another
        register). A store that fails here leaves the revocation standing: logged, and the
        webhook worker or the day's purge gets to it."""
        webhooks = getattr(app.state, "webhooks", None)  # terminal.api.webhook_routes
        try:
            if webhooks is not None:
                drop_webhook(webhooks, name)
            app.state.idempotency.forget(name)
        except (IdempotencyError, WebhookError) as exc:
            log.error("register %r revoked, but not all of it forgotten: %s", name, exc)
