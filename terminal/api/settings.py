"""The API's settings (what create_api serves with) and the merchant PIN guard, in their own
module so that route modules (terminal.api.common.RouteKit) read them without importing
terminal.api.server."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Final

from fastapi.responses import JSONResponse

from ..app.sim_field import SimulatedField
from ..app.sim_scanner import SimulatedPhone, SimulatedScanner
from ..checkout.flow import Checkout
from ..domain.records import TxnRecord
from ..security.lockout import LockoutError
from ..security.merchant_pin import (
    MerchantPin,
    MerchantPinError,
    MerchantPinLockedError,
    MerchantPinWrongError,
)
from ..store.audit import AuditLog
from ..store.idempotency import IdempotencyStore
from ..store.registers import RegisterStore
from .common import ApiError
from .kiosk import KioskCodes

__all__ = ["ApiSettings", "PinGuard", "RouteKit"]


class PinGuard:
    """The merchant PIN check behind the PIN-guarded operations, in the API's error shape.

    The credential is terminal.security.merchant_pin (scrypt, bound to the device, its
    lock-out kept on disk and authenticated), checked per caller: `scope` is the caller's name,
    so one caller's wrong PINs lock that caller only (the kiosk page, never the register).
    403 wrong_pin (``tries_left`` in the error); 423 pin_locked (``retry_after`` in the error
    and the Retry-After header, and ``reason``: "wrong", this entry locked it; "locked", still
    locked; "tampered", its lock-out record was altered; while locked the right PIN is
    refused too); 503
    pin_unavailable when no PIN is set or its files cannot be read or written.
    """

    def __init__(self, credential: MerchantPin) -> None:
        self.credential = credential

    def check(self, pin: str, *, scope: str) -> None:
        try:
            self.credential.verify(pin, scope=scope)
        except MerchantPinLockedError as exc:
            wait = int(exc.retry_after)
            details = {"retry_after": wait, "reason": exc.reason}
            raise ApiError(423, "pin_locked", str(exc), retry_after=wait, details=details) from exc
        except MerchantPinWrongError as exc:
            left = int(exc.tries_left)
            raise ApiError(
                403, "wrong_pin", str(exc), field="pin", details={"tries_left": left}
            ) from exc
        except (MerchantPinError, LockoutError) as exc:
            raise ApiError(503, "pin_unavailable", str(exc)) from exc


#: The name of the register that holds the terminal's fixed token (--token, the
#: register-token file). Never given to a paired register, even while no fixed token is in
#: use: the name's audit trail, webhook and kept answers are that register's.
SHARED_REGISTER: Final = "register-1"


@dataclass
class ApiSettings:
    """`tokens`: register token -> register name. `kiosk`: the checkout page's one-time
    codes and sessions (None: no page credential; `/` only explains how to open it).
    `allowed_hosts`: the names, besides loopback, a request's Host header may carry
    (:func:`allowed_host_names`)."""

    tokens: Mapping[str, str]
    pin_guard: PinGuard
    kiosk: KioskCodes | None = None
    allowed_hosts: frozenset[str] = frozenset()
    printer_url: str | None = None
    field: SimulatedField | None = None
    scanner: SimulatedScanner | None = None  # simulated terminals: POST /simulator/scan
    phone: SimulatedPhone | None = None  # the simulated customer's phone (demo host only)
    sse_keepalive: float = 15.0
    extra_status: Callable[[], Mapping[str, Any]] = dc_field(default=lambda: {})
    #: Security events (refunds, voids, merchant PIN failures) go to the audit log.
    audit: AuditLog | None = None
    #: A demo stack's own simulated acquirer: puts it "online", "unreachable" (connections
    #: refused) or "drops" (connections accepted, then dropped); POST /simulator/acquirer.
    acquirer_switch: Callable[[str], str] | None = None
    #: The answers kept by Idempotency-Key (None: the store in the journal's directory).
    idempotency: IdempotencyStore | None = None
    #: The registers paired with a code (terminal.api.pairing), whose tokens are accepted
    #: after the fixed `tokens` (None: none; the pairing routes answer 503).
    registers: RegisterStore | None = None


@dataclass(frozen=True)
class RouteKit:
    """What a route module's ``install(app, kit)`` gets from create_api.

    `register`: the FastAPI dependency that names the caller (a register's name, or the
    checkout page); `idempotent(request, who, key, body, run, current=...)`: runs `run` once
    per Idempotency-Key (server.create_api's docstring); `check_pin(pin, who, action,
    txn_id)`: the merchant PIN, audited when wrong; `audit(event, who, record)`: a
    transaction's audit record under the caller's name; `view(txn_id)`: a transaction as
    every endpoint shows it; `settings`: what the API was created with."""

    checkout: Checkout
    register: Callable[..., str]
    idempotent: Callable[..., JSONResponse]
    check_pin: Callable[[str, str, str, str], None]
    audit: Callable[[str, str, TxnRecord], None]
    view: Callable[[str], dict[str, Any]]
    settings: ApiSettings
