"""Code payments on the simulated acquirer: wallet codes, EMVCo consumer- and merchant-presented.

An `APIRouter`; the host application includes it with ``app.include_router(router)``. State
lives in this module's own tables (prefix ``qr_``) in the host's SQLite database, created on
first use. Signed endpoints authenticate exactly like the host's own (docs/protocol.md) and
answer with the host's response signature; money-moving ones are idempotent.

Money is booked in the host's own `transactions` ledger, so settlement, refunds and
reversals treat a code like a card: a consumer-presented code goes through the host's normal
authorisation (its ARQC verified by the host's CryptogramVerifier, approved or declined, and
recorded either way); an order a wallet paid (wallet payment code, or a merchant-presented
code) is booked as a sale with the wallet scheme as its brand. The order's
`transaction_ref` is that ledger reference. Failed and cancelled orders book nothing.

    POST /v1/qr/payments                 a scanned code: {"kind": "wallet"|"cpm", ...}
    POST /v1/qr/merchant-orders          the terminal shows a dynamic MPM code for an order
    GET  /v1/qr/orders/{order_id}        poll: paid, failed, pending_confirmation, ...
    POST /v1/qr/orders/{order_id}/cancel cancel (or reverse, if paid) an order
    POST /qr/wallet/notify               the wallet provider's notification for a scanned MPM
    POST /admin/qr/wallet-codes          what a wallet issued: expiry, confirmation behaviour
    GET  /admin/qr/orders                every order, for tests

The terminal chooses `order_id` itself, so it can cancel an order whose creation it never
saw answered; a cancel that arrives first leaves a cancelled order, and the late creation is
then refused. No money moves for a cancelled order.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from emv.errors import EmvError
from emv.pan import mask_pan
from emv.qr.mpm import parse_mpm

from . import verify
from .guard import refuse_if_flooding
from .ledger import Store
from .service import AcquirerHost, Caller, HostError, dumps

_ID: Final = r"^[A-Za-z0-9._:~-]{1,25}$"
_MAX_AMOUNT: Final = 10**12 - 1
_MAX_INT64: Final = 2**63 - 1

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS qr_wallet_codes (
    code TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    confirm_delay REAL,            -- NULL: pays at once, else seconds until the user answers
    confirm_outcome TEXT NOT NULL, -- paid | declined | never
    balance INTEGER,               -- NULL: unlimited
    used_by TEXT                   -- order id that consumed it
);
CREATE TABLE IF NOT EXISTS qr_orders (
    order_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    kind TEXT NOT NULL,            -- wallet | cpm | mpm | unknown
    scheme TEXT,
    amount INTEGER,
    currency INTEGER,
    status TEXT NOT NULL,          -- paid | failed | pending_confirmation | awaiting_payment
                                   -- | cancelled | reversed
    reason TEXT NOT NULL DEFAULT '',
    masked_code TEXT,
    transaction_ref TEXT,
    confirm_at REAL,
    confirm_outcome TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, order_id)
);
CREATE TABLE IF NOT EXISTS qr_cryptograms (
    digest TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
"""

FINAL: Final = frozenset({"paid", "failed", "cancelled", "reversed"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodePaymentBody(_Body):
    order_id: str = Field(pattern=_ID, description="chosen by the terminal; also the reference")
    kind: Literal["wallet", "cpm"]
    amount: int = Field(gt=0, le=_MAX_AMOUNT, description="minor units")
    currency: int = Field(ge=1, le=999, description="ISO 4217 numeric")
    scheme: str = Field(default="", max_length=32)
    code: str | None = Field(default=None, pattern=r"^[0-9]{16,24}$", description="wallet code")
    pan: str | None = Field(default=None, pattern=r"^[0-9]{12,19}$")
    pan_sequence: int | None = Field(default=None, ge=0, le=99)
    expiry: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    aid: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{10,32}$")
    emv: dict[str, str] = Field(default_factory=dict, description="tag hex -> value hex")


class MerchantOrderBody(_Body):
    order_id: str = Field(pattern=_ID)
    amount: int = Field(gt=0, le=_MAX_AMOUNT)
    currency: int = Field(ge=1, le=999)


class CancelBody(_Body):
    reason: str = Field(default="", max_length=64)


class NotifyBody(_Body):
    payload: str = Field(min_length=1, max_length=512, description="the scanned MPM text")
    wallet: str = Field(default="sim-wallet", max_length=32)
    result: Literal["paid", "declined"] = "paid"


class WalletCodeBody(_Body):
    code: str = Field(pattern=r"^[0-9]{16,24}$")
    scheme: str = Field(max_length=32)
    # SQLite stores 64-bit integers: anything larger is a 422, never a crash.
    issued_at: int = Field(ge=0, le=_MAX_INT64)
    expires_at: int = Field(ge=0, le=_MAX_INT64)
    confirm_delay: float | None = Field(default=None, ge=0, le=3600)
    confirm_outcome: Literal["paid", "declined", "never"] = "paid"
    balance: int | None = Field(default=None, ge=0, le=_MAX_INT64)


# --- state ----------------------------------------------------------------------------------


def ensure_schema(store: Store) -> None:
    with store.transaction() as conn:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)


def register_wallet_code(store: Store, record: dict[str, Any]) -> None:
    """What the wallet provider knows about a code it issued (used by the simulated phone)."""
    data = WalletCodeBody.model_validate(record)
    ensure_schema(store)
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO qr_wallet_codes (code, scheme, issued_at, expires_at, "
            "confirm_delay, confirm_outcome, balance, used_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                data.code,
                data.scheme,
                data.issued_at,
                data.expires_at,
                data.confirm_delay,
                data.confirm_outcome,
                data.balance,
            ),
        )


def _host(request: Request) -> AcquirerHost:
    host: AcquirerHost = request.app.state.host
    if not getattr(request.app.state, "qr_schema_ready", False):
        ensure_schema(host.store)
        request.app.state.qr_schema_ready = True
    return host


def _signed_path(request: Request) -> str:
    scope = request.scope
    path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return path + ("?" + query if query else "")


async def _signed(request: Request) -> Caller:
    refuse_if_flooding(request)
    host = _host(request)
    body = await request.body()
    caller = host.authenticate(
        method=request.method, path=_signed_path(request), headers=request.headers, body=body
    )
    # Refusals from here on are the terminal's own: the host's error handler records them.
    request.state.authenticated = caller.enrolled
    return caller


async def _admin(request: Request, x_admin_token: Annotated[str | None, Header()] = None) -> None:
    expected: str | None = getattr(request.app.state, "admin_token", None)
    if expected is not None and not (
        x_admin_token and secrets.compare_digest(x_admin_token, expected)
    ):
        raise HostError(403, "admin_token_required", "X-Admin-Token is missing or wrong")


SignedCaller = Annotated[Caller, Depends(_signed)]


def _respond(request: Request, host: AcquirerHost, status: int, body: bytes) -> Response:
    headers: dict[str, str] = {}
    seq = verify.response_seq(request.headers.get("x-pipos-seq", ""))
    terminal = request.headers.get("x-pipos-terminal", "-") or "-"
    if seq is not None and (terminal == "-" or verify.TOKEN.fullmatch(terminal)):
        headers["X-Pipos-Host-Key-Id"] = host.host_key_id
        headers["X-Pipos-Host-Signature"] = host.sign_response(
            terminal_id=terminal, seq=seq, status=status, body=body
        )
    return Response(
        content=body, status_code=status, media_type="application/json", headers=headers
    )


def _view(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": row["order_id"],
        "kind": row["kind"],
        "scheme": row["scheme"],
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "reason": row["reason"],
        "masked_code": row["masked_code"],
        "transaction_ref": row["transaction_ref"],
    }


def _order(conn: sqlite3.Connection, terminal_id: str, order_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM qr_orders WHERE terminal_id = ? AND order_id = ?", (terminal_id, order_id)
    ).fetchone()
    return row


def _settle_confirmation(host: AcquirerHost, conn: sqlite3.Connection, row: sqlite3.Row) -> None:
    """A pending order whose user has answered by now becomes paid or failed (lazily)."""
    if row["status"] != "pending_confirmation" or row["confirm_outcome"] == "never":
        return
    now = host.clock()
    if row["confirm_at"] is None or now < row["confirm_at"]:
        return
    paid = row["confirm_outcome"] == "paid"
    ref = _book_wallet_sale(host, conn, row, str(row["scheme"] or "wallet")) if paid else None
    conn.execute(
        "UPDATE qr_orders SET status = ?, reason = ?, transaction_ref = ?, updated_at = ? "
        "WHERE terminal_id = ? AND order_id = ?",
        (
            "paid" if paid else "failed",
            "paid" if paid else "user_declined",
            ref,
            int(now),
            row["terminal_id"],
            row["order_id"],
        ),
    )
    host.store.add_event(
        conn,
        int(now),
        row["terminal_id"],
        row["order_id"],
        "qr_paid" if paid else "qr_declined",
        {"kind": row["kind"], "amount": row["amount"]},
    )


def _book_wallet_sale(
    host: AcquirerHost, conn: sqlite3.Connection, row: sqlite3.Row, scheme: str
) -> str:
    """Put an order the wallet provider paid in the host's transactions ledger (brand = the
    wallet scheme), so batch totals count it and the terminal can refund or reverse it by
    the returned reference. Only paid orders are booked: nothing for failed or cancelled."""
    code = conn.execute(
        "SELECT code FROM qr_wallet_codes WHERE used_by = ?", (row["order_id"],)
    ).fetchone()
    return host.record_code_sale(
        conn,
        terminal_id=str(row["terminal_id"]),
        amount=int(row["amount"]),
        currency=int(row["currency"]),
        scheme=scheme,
        masked=str(row["masked_code"] or ""),
        # One-time codes identify no card; the keyed hash only ties the row to its order.
        code=str(code["code"]) if code else f"{row['kind']}:{row['order_id']}",
        idempotency_key=str(row["order_id"]),
    )


def _insert_order(
    conn: sqlite3.Connection,
    now: int,
    caller: Caller,
    body: CodePaymentBody | MerchantOrderBody,
    *,
    kind: str,
    scheme: str | None,
    status: str,
    reason: str,
    masked: str | None = None,
    ref: str | None = None,
    confirm_at: float | None = None,
    confirm_outcome: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO qr_orders (order_id, terminal_id, kind, scheme, amount, currency, status, "
        "reason, masked_code, transaction_ref, confirm_at, confirm_outcome, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            body.order_id,
            caller.terminal_id,
            kind,
            scheme,
            body.amount,
            body.currency,
            status,
            reason,
            masked,
            ref,
            confirm_at,
            confirm_outcome,
            now,
            now,
        ),
    )


def _wallet_payment(
    host: AcquirerHost, conn: sqlite3.Connection, caller: Caller, body: CodePaymentBody
) -> str:
    """Returns the new order's status after checking the code against what was issued."""
    now = host.now()
    code = body.code or ""
    masked = "*" * (len(code) - 4) + code[-4:]
    row = conn.execute("SELECT * FROM qr_wallet_codes WHERE code = ?", (code,)).fetchone()

    def fail(reason: str) -> str:
        _insert_order(
            conn,
            now,
            caller,
            body,
            kind="wallet",
            scheme=body.scheme,
            status="failed",
            reason=reason,
            masked=masked,
        )
        return "failed"

    if row is None:
        return fail("unknown_code")
    if row["used_by"] is not None:
        return fail("code_already_used")
    if now >= row["expires_at"]:
        return fail("code_expired")
    if row["balance"] is not None and body.amount > row["balance"]:
        return fail("insufficient_funds")
    conn.execute("UPDATE qr_wallet_codes SET used_by = ? WHERE code = ?", (body.order_id, code))
    if row["confirm_delay"] is None:
        _insert_order(
            conn,
            now,
            caller,
            body,
            kind="wallet",
            scheme=row["scheme"],
            status="paid",
            reason="paid",
            masked=masked,
        )
        order = _order(conn, caller.terminal_id, body.order_id)
        assert order is not None
        ref = _book_wallet_sale(host, conn, order, str(row["scheme"]))
        conn.execute(
            "UPDATE qr_orders SET transaction_ref = ? WHERE terminal_id = ? AND order_id = ?",
            (ref, caller.terminal_id, body.order_id),
        )
        host.store.add_event(
            conn,
            now,
            caller.terminal_id,
            body.order_id,
            "qr_paid",
            {"kind": "wallet", "amount": body.amount},
        )
        return "paid"
    _insert_order(
        conn,
        now,
        caller,
        body,
        kind="wallet",
        scheme=row["scheme"],
        status="pending_confirmation",
        reason="waiting_for_user",
        masked=masked,
        confirm_at=host.clock() + float(row["confirm_delay"]),
        confirm_outcome=row["confirm_outcome"],
    )
    return "pending_confirmation"


def _cpm_payment(
    host: AcquirerHost, conn: sqlite3.Connection, caller: Caller, body: CodePaymentBody
) -> str:
    """EMVCo CPM: one use per cryptogram, then the host's normal authorisation with the code's
    application cryptogram data, exactly as for a card (EMVCo CPM §3.3): the host's
    CryptogramVerifier checks the ARQC and the ledger records the result, approved or not."""
    now = host.now()
    pan = body.pan or ""
    masked = mask_pan(pan)
    try:
        emv = {k.upper(): bytes.fromhex(v) for k, v in body.emv.items()}
    except ValueError as exc:
        raise HostError(422, "invalid_emv_data", "EMV values must be hex") from exc

    def fail(reason: str, ref: str | None = None) -> str:
        _insert_order(
            conn,
            now,
            caller,
            body,
            kind="cpm",
            scheme=body.scheme or None,
            status="failed",
            reason=reason,
            masked=masked,
            ref=ref,
        )
        return "failed"

    cryptogram = emv.get("9F26")
    if cryptogram is None or "9F36" not in emv:
        return fail("cryptogram_missing")
    digest = hashlib.sha256(
        host.store.card_token(pan).encode() + b"|" + emv["9F36"] + b"|" + cryptogram
    ).hexdigest()
    if conn.execute("SELECT 1 FROM qr_cryptograms WHERE digest = ?", (digest,)).fetchone():
        return fail("code_already_used")
    conn.execute(
        "INSERT INTO qr_cryptograms (digest, order_id, at) VALUES (?, ?, ?)",
        (digest, body.order_id, now),
    )
    pan_sequence = body.pan_sequence
    if pan_sequence is None and emv.get("5F34", b"").hex().isdigit():
        pan_sequence = int(emv["5F34"].hex())
    # The phone computed its cryptogram before the amount was known (CPM §3.3): its 9F02 is
    # zero and is verified as sent, while the ledger and the decision use the sale's amount.
    result = host.authorise(
        caller,
        conn,
        {
            "pan": pan,
            "amount": body.amount,
            "currency": body.currency,
            "pan_sequence": pan_sequence,
            "expiry": body.expiry,
            "aid": body.aid,
            "brand": body.scheme or None,
            "entry_mode": "qr_consumer_presented",
            "emv": {tag: value.hex().upper() for tag, value in emv.items()},
        },
        cryptogram_before_sale=True,
    )
    ref = result.get("transaction_ref")
    if result.get("outcome") == "approved":
        _insert_order(
            conn,
            now,
            caller,
            body,
            kind="cpm",
            scheme=body.scheme or None,
            status="paid",
            reason="paid",
            masked=masked,
            ref=ref,
        )
        return "paid"
    arqc = result.get("arqc_status")
    if arqc in ("invalid", "malformed"):
        return fail(f"cryptogram_{arqc}", ref)
    return fail(f"declined_{result.get('response_code')}", ref)


router = APIRouter(tags=["qr"])


@router.post("/v1/qr/payments")
async def create_code_payment(
    request: Request, payload: CodePaymentBody, caller: SignedCaller
) -> Response:
    host = _host(request)
    if payload.kind == "wallet" and not payload.code:
        raise HostError(422, "invalid_request", "a wallet payment needs code")
    if payload.kind == "cpm" and not payload.pan:
        raise HostError(422, "invalid_request", "a consumer-presented payment needs pan")

    def operation(conn: sqlite3.Connection) -> dict[str, Any]:
        existing = _order(conn, caller.terminal_id, payload.order_id)
        if existing is not None:
            # A cancel got here first (or the terminal reused an order id): never charge.
            if existing["status"] == "cancelled":
                return _view(existing)
            raise HostError(409, "order_exists", f"order {payload.order_id} already exists")
        if payload.kind == "wallet":
            _wallet_payment(host, conn, caller, payload)
        else:
            _cpm_payment(host, conn, caller, payload)
        row = _order(conn, caller.terminal_id, payload.order_id)
        assert row is not None
        return _view(row)

    status, body = host.idempotent(caller, "qr_payments", await request.body(), operation)
    return _respond(request, host, status, body)


@router.post("/v1/qr/merchant-orders")
async def create_merchant_order(
    request: Request, payload: MerchantOrderBody, caller: SignedCaller
) -> Response:
    host = _host(request)

    def operation(conn: sqlite3.Connection) -> dict[str, Any]:
        existing = _order(conn, caller.terminal_id, payload.order_id)
        if existing is not None:
            if existing["status"] == "cancelled":
                return _view(existing)
            raise HostError(409, "order_exists", f"order {payload.order_id} already exists")
        _insert_order(
            conn,
            host.now(),
            caller,
            payload,
            kind="mpm",
            scheme=None,
            status="awaiting_payment",
            reason="waiting_for_scan",
        )
        row = _order(conn, caller.terminal_id, payload.order_id)
        assert row is not None
        return _view(row)

    status, body = host.idempotent(caller, "qr_merchant_orders", await request.body(), operation)
    return _respond(request, host, status, body)


@router.get("/v1/qr/orders/{order_id}")
async def order_status(request: Request, order_id: str, caller: SignedCaller) -> Response:
    host = _host(request)
    with host.store.transaction() as conn:
        row = _order(conn, caller.terminal_id, order_id)
        if row is None:
            raise HostError(404, "not_found", f"order {order_id} not found")
        _settle_confirmation(host, conn, row)
        row = _order(conn, caller.terminal_id, order_id)
        assert row is not None
        view = _view(row)
    return _respond(request, host, 200, dumps(view))


@router.post("/v1/qr/orders/{order_id}/cancel")
async def cancel_order(
    request: Request, order_id: str, payload: CancelBody, caller: SignedCaller
) -> Response:
    host = _host(request)

    def operation(conn: sqlite3.Connection) -> dict[str, Any]:
        now = host.now()
        row = _order(conn, caller.terminal_id, order_id)
        if row is None:
            # Cancelled before it arrived: a tombstone so a late creation cannot charge.
            conn.execute(
                "INSERT INTO qr_orders (order_id, terminal_id, kind, status, reason, "
                "created_at, updated_at) VALUES (?, ?, 'unknown', 'cancelled', ?, ?, ?)",
                (order_id, caller.terminal_id, "cancelled_before_arrival", now, now),
            )
        else:
            _settle_confirmation(host, conn, row)
            row = _order(conn, caller.terminal_id, order_id)
            assert row is not None
            new_status: str | None = None
            if row["status"] in ("pending_confirmation", "awaiting_payment"):
                new_status = "cancelled"
            elif row["status"] == "paid":
                # Paid but the terminal gave up: give the money back (no receipt, no charge).
                if row["transaction_ref"]:
                    host.reverse(
                        caller,
                        conn,
                        {"original_ref": row["transaction_ref"], "reason": "qr_cancelled"},
                    )
                new_status = "reversed"
            if new_status is not None:
                conn.execute(
                    "UPDATE qr_orders SET status = ?, reason = ?, updated_at = ? "
                    "WHERE terminal_id = ? AND order_id = ?",
                    (
                        new_status,
                        payload.reason or "cancelled_by_terminal",
                        now,
                        caller.terminal_id,
                        order_id,
                    ),
                )
                host.store.add_event(
                    conn,
                    now,
                    caller.terminal_id,
                    order_id,
                    f"qr_{new_status}",
                    {"kind": row["kind"]},
                )
        final = _order(conn, caller.terminal_id, order_id)
        assert final is not None
        return _view(final)

    status, body = host.idempotent(
        caller, "qr_cancel", await request.body() + order_id.encode(), operation
    )
    return _respond(request, host, status, body)


@router.post("/qr/wallet/notify")
async def wallet_notify(request: Request, payload: NotifyBody) -> dict[str, Any]:
    """The wallet provider tells the acquirer that its user paid a scanned merchant code."""
    host = _host(request)
    try:
        mpm = parse_mpm(payload.payload)
    except EmvError as exc:
        raise HostError(422, "invalid_mpm", str(exc)) from exc
    reference = mpm.additional.get("05")
    if not reference:
        raise HostError(422, "invalid_mpm", "no reference label (62/05) in the code")
    with host.store.transaction() as conn:
        rows = conn.execute(
            "SELECT * FROM qr_orders WHERE order_id = ? AND kind = 'mpm'", (reference,)
        ).fetchall()
        if len(rows) != 1:
            raise HostError(404, "not_found", f"no single merchant order {reference}")
        row = rows[0]
        if row["status"] != "awaiting_payment":
            raise HostError(409, "order_closed", f"order {reference} is {row['status']}")
        # Amount in the code must be the order's (the phone must not pay a doctored code).
        exponent = 0 if row["currency"] in (392, 410) else 2
        if mpm.amount_minor(exponent) != row["amount"] or mpm.currency != row["currency"]:
            raise HostError(422, "amount_mismatch", "amount or currency differ from the order")
        now = host.now()
        paid = payload.result == "paid"
        ref = _book_wallet_sale(host, conn, row, payload.wallet) if paid else None
        conn.execute(
            "UPDATE qr_orders SET status = ?, reason = ?, scheme = ?, transaction_ref = ?, "
            "updated_at = ? WHERE terminal_id = ? AND order_id = ?",
            (
                "paid" if paid else "failed",
                "paid" if paid else "user_declined",
                payload.wallet,
                ref,
                now,
                row["terminal_id"],
                reference,
            ),
        )
        host.store.add_event(
            conn,
            now,
            row["terminal_id"],
            reference,
            "qr_paid" if paid else "qr_declined",
            {"kind": "mpm"},
        )
        final = _order(conn, row["terminal_id"], reference)
        assert final is not None
        return _view(final)


@router.post("/admin/qr/wallet-codes", dependencies=[Depends(_admin)])
async def admin_wallet_code(request: Request, payload: WalletCodeBody) -> dict[str, Any]:
    host = _host(request)
    register_wallet_code(host.store, payload.model_dump())
    return {"registered": payload.code[-4:]}


@router.get("/admin/qr/orders", dependencies=[Depends(_admin)])
async def admin_orders(request: Request) -> list[dict[str, Any]]:
    host = _host(request)
    return [
        {**_view(r), "terminal_id": r["terminal_id"]}
        for r in host.store.query("SELECT * FROM qr_orders ORDER BY created_at, rowid")
    ]


__all__ = ["SCHEMA", "ensure_schema", "register_wallet_code", "router"]
