"""A sale paid with a scanned code: the function the checkout calls where it would read a card.

:func:`run_code_payment` takes the scanned text and returns a :class:`CodePaymentOutcome`
value; it raises only for programming faults. It

1. recognises the code (EMVCo consumer-presented, or a wallet payment code by the parameter
   table of prefixes and lengths) and refuses corrupt, truncated, expired or unsupported ones
   locally with a reason for the screen;
2. refuses to work offline unless the parameters allow offline acceptance for that scheme
   (the merchant is told to take a card instead);
3. sends the code to the acquirer under an order id chosen here, so the order can be
   cancelled even if the answer is lost;
4. when the wallet asks its user to confirm, polls until paid, failed, the merchant cancels,
   or the timeout; then cancels the order, so no money is taken without a receipt.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from emv.qr import QrError, WalletCodeTable, classify
from emv.qr.cpm import TAG_CRYPTOGRAM

from ..acquirer.qr_client import (
    OrderStatus,
    QrClient,
    QrHostError,
    QrHostRejectedError,
    QrNoAnswerError,
)

Result = Literal[
    "approved", "declined", "rejected", "cancelled", "timed_out", "use_card", "offline_accepted"
]

#: What the merchant screen says for each reason (kept short: one line on a small display).
MESSAGES: dict[str, str] = {
    "paid": "Paid.",
    "corrupt": "The code could not be read: it is damaged. Ask the customer to refresh it.",
    "truncated": "The code is incomplete. Ask the customer to scan it again.",
    "unsupported": "This kind of code is not accepted here. Please take a card.",
    "merchant_code": "That is a shop's code, not a payment code. Ask for the wallet's pay code.",
    "expired": "The code has expired. Ask the customer to refresh it.",
    "reused": "The code was already used. Ask the customer to refresh it.",
    "unknown_code": "The wallet does not know this code. Ask the customer to refresh it.",
    "insufficient_funds": "Declined: insufficient funds in the wallet.",
    "user_declined": "The customer declined the payment on their phone.",
    "declined": "Declined by the wallet or card issuer.",
    "cryptogram": "Declined: the code's security check failed.",
    "offline": "No connection to the acquirer: codes need one. Please take a card instead.",
    "offline_accepted": "Accepted offline; it will be sent when the connection returns.",
    "cancelled": "Payment cancelled. Nothing was charged.",
    "timeout": "The customer did not confirm in time. Payment cancelled, nothing charged.",
    "host_refused": "The acquirer refused the request. Please take a card.",
}

# Host reasons (simulator/host/qr_payments.py) -> screen reasons.
_HOST_REASONS: dict[str, str] = {
    "code_expired": "expired",
    "code_already_used": "reused",
    "unknown_code": "unknown_code",
    "insufficient_funds": "insufficient_funds",
    "user_declined": "user_declined",
    "cryptogram_invalid": "cryptogram",
    "cryptogram_malformed": "cryptogram",
    "cryptogram_missing": "cryptogram",
    "declined_51": "insufficient_funds",
}


@dataclass(frozen=True)
class QrPaymentParams:
    """Which codes the terminal accepts and how long it waits for a customer to confirm."""

    wallet_table: WalletCodeTable = field(default_factory=WalletCodeTable.default)
    accept_consumer_presented: bool = True
    accept_wallet_codes: bool = True
    #: Schemes ("alipay", "wechatpay", "cpm", ...) the parameters allow to accept offline.
    offline_schemes: frozenset[str] = frozenset()
    confirm_timeout: float = 60.0  # seconds
    poll_interval: float = 2.0  # seconds

    @classmethod
    def from_terminal_params(cls, params: Any) -> QrPaymentParams:
        """From terminal.domain.params.TerminalParams: its `qr` section switches the flows on."""
        qr = getattr(params, "qr", None)
        enabled = bool(getattr(qr, "enabled", False))
        return cls(
            accept_consumer_presented=enabled and bool(getattr(qr, "consumer_presented", False)),
            accept_wallet_codes=enabled and bool(getattr(qr, "consumer_presented", False)),
            offline_schemes=frozenset(getattr(qr, "offline_schemes", ()) or ()),
        )


@dataclass(frozen=True)
class CodePaymentOutcome:
    """The value the checkout shows and records. `message` is for the merchant's screen."""

    result: Result
    reason: str
    amount: int
    currency: int
    order_id: str | None = None
    kind: str | None = None  # "cpm" | "wallet" | "mpm"
    scheme: str | None = None
    masked: str | None = None  # masked PAN or wallet code, safe for receipts and logs
    transaction_ref: str | None = None
    #: True when the order's fate is unknown and cancelling it failed: the checkout must
    #: retry `QrClient.cancel(order_id)` until it succeeds.
    cancel_pending: bool = False
    #: For "offline_accepted": what to put in the offline queue (never logged).
    offline_data: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def approved(self) -> bool:
        return self.result in ("approved", "offline_accepted")

    @property
    def message(self) -> str:
        return MESSAGES.get(self.reason, MESSAGES["declined"])


def new_order_id(token: Callable[[int], bytes]) -> str:
    """An order id that also fits an MPM reference label (25 characters, EMVCo MPM §4.8)."""
    return "Q" + token(8).hex().upper()


def _from_status(
    status: OrderStatus, base: dict[str, Any], *, timed_out: bool = False
) -> CodePaymentOutcome:
    base = {**base, "transaction_ref": status.transaction_ref}
    if base.get("scheme") is None and status.scheme:
        base["scheme"] = status.scheme  # merchant-presented: the wallet that paid
    if status.status == "paid":
        return CodePaymentOutcome("approved", "paid", **base)
    if status.status in ("cancelled", "reversed"):
        if timed_out:
            return CodePaymentOutcome("timed_out", "timeout", **base)
        return CodePaymentOutcome("cancelled", "cancelled", **base)
    reason = _HOST_REASONS.get(status.reason, "declined")
    return CodePaymentOutcome("declined", reason, **base)


def _cancel(client: QrClient, order_id: str, reason: str) -> tuple[OrderStatus | None, bool]:
    """Cancel `order_id`; (final status or None, whether a retry is still needed)."""
    try:
        return client.cancel(order_id, reason), False
    except QrNoAnswerError:
        return None, True


def run_code_payment(
    code: str,
    amount: int,
    currency: int,
    client: QrClient,
    params: QrPaymentParams,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    *,
    order_id: str,
    online: bool = True,
    cancel_requested: Callable[[], bool] | None = None,
    on_sent: Callable[[OrderStatus], None] | None = None,
) -> CodePaymentOutcome:
    """Pay `amount` (minor units of ISO 4217 `currency`) with the scanned `code`.

    `on_sent` is called once with the host's first answer (e.g. ``pending_confirmation``, so
    the screen can say the customer must confirm on the phone).
    """
    base: dict[str, Any] = {"amount": amount, "currency": currency}
    try:
        scanned = classify(code, params.wallet_table)
    except QrError as exc:
        return CodePaymentOutcome("rejected", exc.reason, **base)
    base["kind"] = scanned.kind
    if scanned.kind == "mpm":
        return CodePaymentOutcome("rejected", "merchant_code", **base)

    send: Callable[[], OrderStatus]
    if scanned.cpm is not None:
        cpm = scanned.cpm
        if not params.accept_consumer_presented:
            return CodePaymentOutcome("rejected", "unsupported", **base)
        account = cpm.account()
        base["scheme"] = "cpm"
        base["masked"] = account.masked_pan
        today = datetime.datetime.fromtimestamp(clock(), datetime.UTC).date()
        if account.expired(today):
            return CodePaymentOutcome("rejected", "expired", **base)
        emv = cpm.host_emv()
        if account.pan_sequence is not None:
            # As for a card, the PAN Sequence Number travels with the EMV data; the PAN and
            # track 2 go in their own fields, never in the EMV map.
            emv.setdefault("5F34", f"{account.pan_sequence:02d}")
        if TAG_CRYPTOGRAM not in cpm.cryptogram_data():
            # Without a cryptogram the code is a bare card number: not a payment credential.
            return CodePaymentOutcome("rejected", "corrupt", **base)
        aid = cpm.applications[0].aid.hex().upper()
        offline_data: dict[str, Any] = {
            "kind": "cpm",
            "aid": aid,
            "emv": emv,
            "pan": account.pan,
            "pan_sequence": account.pan_sequence,
            "expiry": account.expiry,
            "label": cpm.applications[0].label,
        }

        def send() -> OrderStatus:
            return client.pay_with_consumer_code(
                order_id,
                amount=amount,
                currency=currency,
                pan=account.pan,
                pan_sequence=account.pan_sequence,
                expiry=account.expiry,
                aid=aid,
                emv=emv,
            )

    else:
        wallet = scanned.wallet
        assert wallet is not None
        if not params.accept_wallet_codes:
            return CodePaymentOutcome("rejected", "unsupported", **base)
        base["scheme"] = wallet.scheme
        base["masked"] = wallet.masked
        offline_data = {"kind": "wallet", "scheme": wallet.scheme, "code": wallet.code}

        def send() -> OrderStatus:
            return client.pay_with_wallet_code(
                order_id, wallet.code, wallet.scheme, amount, currency
            )

    if not online:
        if base["scheme"] in params.offline_schemes:
            return CodePaymentOutcome(
                "offline_accepted", "offline_accepted", offline_data=offline_data, **base
            )
        return CodePaymentOutcome("use_card", "offline", **base)

    base["order_id"] = order_id
    try:
        status = send()
    except QrNoAnswerError:
        # The request may have arrived: cancel, so a late success cannot charge without a
        # receipt. Offline acceptance is not offered here for the same reason.
        _, pending = _cancel(client, order_id, "no_answer")
        return CodePaymentOutcome("use_card", "offline", cancel_pending=pending, **base)
    except QrHostRejectedError:
        return CodePaymentOutcome("rejected", "host_refused", **base)
    if on_sent is not None:
        on_sent(status)
    return _poll_until_final(client, params, clock, sleep, status, base, cancel_requested)


def _poll_until_final(
    client: QrClient,
    params: QrPaymentParams,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    status: OrderStatus,
    base: dict[str, Any],
    cancel_requested: Callable[[], bool] | None,
    *,
    timeout: float | None = None,
) -> CodePaymentOutcome:
    """Poll the order until it is final; cancel it on the merchant's word or the timeout."""
    order_id = str(base["order_id"])
    limit = params.confirm_timeout if timeout is None else timeout
    start = clock()
    while not status.final:
        if cancel_requested is not None and cancel_requested():
            final, pending = _cancel(client, order_id, "cancelled_by_merchant")
            if final is not None and final.status == "paid":
                return _from_status(final, base)
            return CodePaymentOutcome("cancelled", "cancelled", cancel_pending=pending, **base)
        if clock() - start >= limit:
            final, pending = _cancel(client, order_id, "confirmation_timeout")
            if final is not None and final.status == "paid":
                return _from_status(final, base)
            return CodePaymentOutcome("timed_out", "timeout", cancel_pending=pending, **base)
        sleep(params.poll_interval)
        try:
            status = client.order_status(order_id)
        except QrNoAnswerError:
            continue  # a blip: keep polling until the timeout, then cancel
        except QrHostError:
            final, pending = _cancel(client, order_id, "status_unknown")
            return CodePaymentOutcome("use_card", "host_refused", cancel_pending=pending, **base)
    return _from_status(status, base)


def run_merchant_order(
    amount: int,
    currency: int,
    client: QrClient,
    params: QrPaymentParams,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    *,
    order_id: str,
    timeout: float,
    cancel_requested: Callable[[], bool] | None = None,
    on_created: Callable[[OrderStatus], None] | None = None,
) -> CodePaymentOutcome:
    """Merchant-presented (EMVCo MPM): open order `order_id` with the acquirer, then wait for
    the wallet provider's payment notification by polling the order; cancel it when the
    merchant cancels or nobody pays within `timeout` seconds, so a late scan cannot charge.

    The caller shows the dynamic code (with `order_id` as its reference label, MPM 62/05)
    from `on_created` on; the phone pays against that reference.
    """
    base: dict[str, Any] = {
        "amount": amount,
        "currency": currency,
        "kind": "mpm",
        "order_id": order_id,
    }
    try:
        status = client.create_merchant_order(order_id, amount, currency)
    except QrNoAnswerError:
        _, pending = _cancel(client, order_id, "no_answer")
        return CodePaymentOutcome("use_card", "offline", cancel_pending=pending, **base)
    except QrHostRejectedError:
        return CodePaymentOutcome("rejected", "host_refused", **base)
    if on_created is not None:
        on_created(status)
    return _poll_until_final(
        client, params, clock, sleep, status, base, cancel_requested, timeout=timeout
    )
