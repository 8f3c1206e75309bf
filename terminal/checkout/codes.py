"""Code payments at the checkout: a consumer-presented code on the scanner (paid through
:mod:`terminal.checkout.qr_payment`) and the terminal's own merchant-presented code, journaled,
evented and receipted like a card's outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from offline_queue.model import CardData as QueueCardData
from offline_queue.model import OfflinePayment

from ..acquirer.qr_client import OrderStatus, QrClient, QrNoAnswerError
from ..domain.merchant_qr import MerchantCodeError, merchant_payload
from ..domain.messages import Result
from ..domain.records import Method, Stage, State, TxnRecord
from .core import QR_CANCEL_PREFIX, CheckoutCore
from .errors import AcquirerRequiredError, NotFoundError, RequestError
from .qr_payment import CodePaymentOutcome, new_order_id, run_code_payment, run_merchant_order

__all__ = ["CodePayments"]


def _sleeper(cancel: threading.Event) -> Callable[[float], None]:
    """Sleep between polls, waking at once when the merchant cancels."""

    def sleep(seconds: float) -> None:
        cancel.wait(seconds)

    return sleep


class _NoAcquirer:
    """The transport of a terminal that has no acquirer: every code request is unreachable."""

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[int, Any]:
        raise QrNoAnswerError("the terminal is not connected to an acquirer")


_ENTRY_MODES: Final = {"cpm": "qr_consumer", "wallet": "qr_wallet", "mpm": "qr_merchant"}


def _code_brand(outcome: CodePaymentOutcome, label: str | None) -> str:
    """What the totals and receipts call a code payment (per scheme, like a card brand)."""
    if outcome.kind == "cpm":
        return f"QR {label}".upper() if label else "EMV QR"
    if outcome.kind == "mpm":
        return f"QR {outcome.scheme}".upper() if outcome.scheme else "MERCHANT QR"
    return (outcome.scheme or "wallet").upper()


class CodePayments(CheckoutCore):
    """Scanned and merchant-presented codes."""

    def merchant_qr_payload(self, record: TxnRecord) -> str:
        """The EMVCo MPM payload a merchant-presented sale shows (NotFoundError otherwise)."""
        if not record.qr_payload:
            raise NotFoundError(
                f"sale {record.id} has no merchant-presented code", reason="no_code"
            )
        return record.qr_payload

    def _merchant_qr_fields(self, amount: int) -> dict[str, Any]:
        if not (self.params.qr.enabled and self.params.qr.merchant_presented):
            raise RequestError(
                "merchant-presented codes are not enabled in the parameters",
                reason="qr_disabled",
            )
        if self._qr_client is None:
            raise AcquirerRequiredError(
                "the terminal is not connected to an acquirer", reason="not_connected"
            )
        order_id = new_order_id(self._random)
        try:
            # The order id is the code's reference label (MPM 62/05): the wallet provider's
            # notification names it, so the acquirer knows which order was paid.
            payload = merchant_payload(self.params, amount, reference=order_id)
        except MerchantCodeError as exc:
            raise RequestError(
                f"cannot make the merchant-presented code: {exc}", reason="qr_unavailable"
            ) from exc
        return {"method": Method.MERCHANT_QR, "qr_order_id": order_id, "qr_payload": payload}

    def _qr(self) -> QrClient:
        return self._qr_client or QrClient(_NoAcquirer())

    def _qr_clock(self) -> float:
        return self._clock().timestamp()

    def _run_code(self, record: TxnRecord, code: str, cancel: threading.Event) -> TxnRecord:
        """A scanned code pays the sale (terminal.checkout.qr_payment): journaled, evented and shown
        exactly like a card's outcome."""
        order_id = new_order_id(self._random)
        # The order id is on disk before the request leaves: after a crash, recovery cancels
        # the order, so a payment nobody saw approved is never kept.
        record = self._transition(
            record,
            record.state,
            stage=Stage.READING_CODE,
            entry_mode="qr",
            qr_order_id=order_id,
        )
        # Codes are online-only unless the parameters allow a scheme offline; only then does
        # a terminal that knows it is offline skip the attempt (an attempt that gets no
        # answer is cancelled, never accepted offline: it may have arrived).
        online = self._qr_client is not None and not (
            self.host_online is False and self.qr_params.offline_schemes
        )
        current = [record]

        def on_sent(status: OrderStatus) -> None:
            self._link(True)
            if not status.final:
                current[0] = self._transition(
                    current[0], current[0].state, stage=Stage.WAITING_FOR_CONFIRMATION
                )

        outcome = run_code_payment(
            code,
            record.amount,
            record.currency,
            self._qr(),
            self.qr_params,
            self._qr_clock,
            _sleeper(cancel),
            order_id=order_id,
            online=online,
            cancel_requested=cancel.is_set,
            on_sent=on_sent,
        )
        label = None
        if outcome.offline_data is not None:
            label = outcome.offline_data.get("label")
        return self._after_code(current[0], outcome, label)

    def _run_merchant_qr(self, record: TxnRecord, cancel: threading.Event) -> TxnRecord:
        """Show the terminal's dynamic code (the page fetches it) and wait for the wallet
        provider's payment notification by polling the order."""
        current = [record]

        def on_created(status: OrderStatus) -> None:
            self._link(True)
            # Only now does the page show the code: the acquirer knows the order.
            current[0] = self._transition(
                current[0], current[0].state, stage=Stage.WAITING_FOR_PAYMENT
            )

        outcome = run_merchant_order(
            record.amount,
            record.currency,
            self._qr(),
            self.qr_params,
            self._qr_clock,
            _sleeper(cancel),
            order_id=record.qr_order_id,
            timeout=self._card_timeout,
            cancel_requested=cancel.is_set,
            on_created=on_created,
        )
        return self._after_code(current[0], outcome, None)

    def _after_code(
        self, record: TxnRecord, outcome: CodePaymentOutcome, label: str | None
    ) -> TxnRecord:
        fields: dict[str, Any] = {
            "masked_pan": outcome.masked or "",
            "brand": _code_brand(outcome, label) if outcome.kind else "",
            "entry_mode": _ENTRY_MODES.get(outcome.kind or "", "qr"),
            "qr_kind": outcome.kind or "",
            "qr_scheme": outcome.scheme or "",
        }
        if outcome.cancel_pending and outcome.order_id:
            # The cancel did not get through: keep retrying it (retry_reversals), so a late
            # success cannot charge the customer without a receipt. Committed with the
            # outcome, in one transaction.
            fields["reversal_key"] = QR_CANCEL_PREFIX + outcome.order_id
        result = outcome.result
        if result == "approved":
            self._link(True)
            return self._finish(
                record,
                State.APPROVED,
                Result.APPROVED,
                host_ref=outcome.transaction_ref or "",
                **fields,
            )
        if result == "offline_accepted":
            return self._store_code_offline(record, outcome, fields)
        if result == "use_card" and outcome.reason == "offline":
            self._link(False)
        states: dict[str, tuple[State, Result]] = {
            "declined": (State.DECLINED, Result.CODE_DECLINED),
            "rejected": (State.DECLINED, Result.CODE_REJECTED),
            "cancelled": (State.CANCELLED, Result.CODE_CANCELLED),
            "timed_out": (State.CANCELLED, Result.CODE_TIMED_OUT),
            "use_card": (State.DECLINED, Result.CODE_USE_CARD),
        }
        state, code_result = states[result]
        return self._finish(record, state, code_result, outcome.reason, **fields)

    def _store_code_offline(
        self, record: TxnRecord, outcome: CodePaymentOutcome, fields: dict[str, Any]
    ) -> TxnRecord:
        """A consumer-presented code the parameters allow offline: its cryptogram goes to the
        offline queue like a card's ARQC (store and forward). A wallet code carries no card
        data the queue could forward, so it is refused: take a card."""
        data = outcome.offline_data or {}
        if data.get("kind") != "cpm" or not data.get("pan"):
            return self._finish(record, State.DECLINED, Result.CODE_USE_CARD, "offline", **fields)
        if not self._enrolled():  # it could never be uploaded (as a card's: sale.py)
            return self._finish(
                record,
                State.DECLINED,
                Result.DECLINED_NOT_ENROLLED,
                "terminal not enrolled",
                **fields,
            )
        emv = {str(tag): str(value) for tag, value in dict(data.get("emv") or {}).items()}
        # The signed record binds the card, as a card's does (docs/protocol.md, "Offline
        # payments"): the host refuses an item whose cryptogram, ATC or AID it does not carry.
        fields = {
            **fields,
            "aid": str(data.get("aid") or "").upper(),
            "cryptogram": emv.get("9F26", ""),
            "atc": emv.get("9F36", ""),
        }
        record = self._transition(record, record.state, stage=Stage.STORING, **fields)
        captured_at = self._unix()
        signed, signature, key_id = self._signed_record(record, captured_at)
        payment = OfflinePayment(
            transaction_id=record.id,
            amount=record.amount,
            currency=record.currency,
            card=QueueCardData(
                pan=str(data["pan"]),
                pan_sequence=data.get("pan_sequence"),
                expiry=data.get("expiry"),
            ),
            captured_at=captured_at,
            emv=emv,
            brand=record.brand or None,
            aid=str(data.get("aid") or "") or None,
            signed_record=signed,
            signature=signature,
            key_id=key_id or None,
        )
        decision = self.queue.admit(payment, card_approves_offline=True, now=captured_at)
        if not decision.allowed:
            return self._finish(
                record, State.DECLINED, Result.DECLINED_OFFLINE_LIMIT, decision.message
            )
        return self._finish(
            record, State.APPROVED_OFFLINE, Result.APPROVED_OFFLINE, offline_id=record.id
        )
