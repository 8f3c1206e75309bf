"""Checkout orchestration: sale, refund, void and end of day as one flow.

A sale goes: wait for a card (cancellable) -> run the kernel -> go online when the card asks
for it (ARQC) -> if the host cannot be reached, approve offline within the offline limits
(store and forward: the cryptogram is kept in the offline queue and sent when the network is
back) -> sign -> record durably -> publish the result. Every state change is committed to the
journal before it is published, so what the merchant sees is always on disk first.

With a code scanner configured, the sale waits for whichever comes first: a card on the
reader or a code on the scanner (a scanned code pays through terminal.checkout.qr_payment, over the
acquirer client's own signed connection). A "merchant_qr" sale instead shows the terminal's
dynamic EMVCo merchant-presented code and waits for the wallet provider's payment
notification. Either way the outcome is journaled, evented and receipted like a card's.

Rules the flow keeps:

* One transaction at a time: a second request while one runs raises :class:`BusyError`.
* A lost host response is never an approval: the acquirer client reverses it before it
  returns; a reversal the host does not acknowledge is kept in the journal and retried.
* A card approved (or sent to store and forward) that the offline queue refuses is declined,
  with the queue's reason, never silently accepted.
* A code payment's order id is journaled before the request leaves; a cancel, a timeout, a
  lost answer or a crash cancels the order with the acquirer (reversed if it was paid), so
  no money is taken without a receipt. Codes are online-only unless the parameters allow a
  scheme offline: otherwise the merchant is told to take a card instead.
* The clock and the random source are injected; card data is never logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from drivers.base import CardReader
from drivers.errors import CancelledError, DriverError, ReaderTimeoutError
from drivers.scanner import CodeScanner, ScanRejectedError
from emv.carddata import CardAccount, CardAccountError, read_account
from emv.kernel import CryptogramKind, Outcome, OutcomeKind
from offline_queue.limits import OfflineDecision
from offline_queue.model import CardData as QueueCardData
from offline_queue.model import OfflinePayment

from ..acquirer.client import (
    AcquirerClient,
    AcquirerError,
    AuthorisationRequest,
    AuthOutcome,
    BrandTotals,
    HostRejectedError,
    HostUnreachable,
    NotEnrolledError,
    OutcomeUnknownError,
    RefundRequest,
    ReversalPendingError,
)
from ..acquirer.qr_client import OrderStatus, QrClient, QrHostError, QrHostUnavailableError
from ..domain.currency import MAX_EMV_AMOUNT, UnknownCurrencyError, currency, format_amount
from ..domain.errors import TerminalError
from ..domain.merchant_qr import MerchantCodeError, merchant_payload
from ..domain.messages import Message, Result, message_for, progress_text
from ..domain.params import TerminalParams
from ..domain.records import APPROVED_STATES, Kind, Stage, State, TotalsLine, TxnRecord, check_move
from ..domain.signing import Signer
from ..store.journal import Journal
from .card_session import new_request, run_card_transaction
from .qr_payment import (
    CodePaymentOutcome,
    QrPaymentParams,
    new_order_id,
    run_code_payment,
    run_merchant_order,
)

__all__ = [
    "QR_CANCEL_PREFIX",
    "SALE_METHODS",
    "BusyError",
    "Checkout",
    "CheckoutError",
    "EventHub",
    "NotFoundError",
    "OfflineQueuePort",
    "QueueSummary",
    "RequestError",
    "ScannerFactory",
    "Stage",
    "StateError",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RandomBytes = Callable[[int], bytes]
ReaderFactory = Callable[[], CardReader]
ScannerFactory = Callable[[], CodeScanner]

#: How a sale is paid: "card" waits for a card on the reader or a code on the scanner;
#: "merchant_qr" shows the terminal's own EMVCo MPM code and waits for the wallet to pay it.
SALE_METHODS: Final = ("card", "merchant_qr")
#: Journal prefix of merchant cancels of code-payment orders still to be acknowledged (they
#: share the pending-reversal list: both undo something the host may have done).
QR_CANCEL_PREFIX: Final = "qr-cancel:"


class CheckoutError(TerminalError):
    """Root of the checkout's refusals (each maps to one clear answer for the merchant)."""


class BusyError(CheckoutError):
    """Another transaction is running on this terminal."""


class NotFoundError(CheckoutError, LookupError):
    """No such transaction."""


class StateError(CheckoutError):
    """The transaction is not in a state that allows this (e.g. refund of a declined sale)."""


class RequestError(CheckoutError, ValueError):
    """The request itself is invalid (amount, currency)."""


class HostUnavailableError(CheckoutError):
    """The operation needs the acquirer and it cannot be reached now."""


@dataclass(frozen=True, slots=True)
class _Failure:
    """How an acquirer error ends a transaction."""

    state: State
    result: Result
    #: What the error says of the link to the acquirer (None: nothing).
    online: bool | None
    reason: Callable[[AcquirerError], str]
    #: A refund whose answer was lost: the bank may have paid it (settled before the next).
    unknown: bool = False


def _host_said(exc: AcquirerError) -> str:
    return (exc.message or exc.code) if isinstance(exc, HostRejectedError) else str(exc)


#: One table from acquirer errors to how each kind of transaction ends: the most specific
#: class of the error wins (its MRO is walked). A sale whose host cannot be reached at all
#: (HostUnreachable, NotEnrolledError) does not end here: it goes offline.
_ACQUIRER_FAILURES: Final[Mapping[tuple[Kind, type[AcquirerError]], _Failure]] = {
    (Kind.SALE, ReversalPendingError): _Failure(
        State.DECLINED, Result.HOST_NO_RESPONSE, False, lambda _: "reversal pending"
    ),
    (Kind.SALE, HostRejectedError): _Failure(State.DECLINED, Result.HOST_ERROR, True, _host_said),
    (Kind.SALE, AcquirerError): _Failure(State.DECLINED, Result.HOST_ERROR, False, _host_said),
    (Kind.REFUND, HostUnreachable): _Failure(
        State.FAILED, Result.REFUND_DECLINED, False, lambda e: f"bank unreachable: {e}"
    ),
    (Kind.REFUND, OutcomeUnknownError): _Failure(
        State.FAILED,
        Result.REFUND_DECLINED,
        False,
        lambda _: "no answer from the bank",
        unknown=True,
    ),
    (Kind.REFUND, HostRejectedError): _Failure(
        State.DECLINED, Result.REFUND_DECLINED, True, _host_said
    ),
    (Kind.REFUND, AcquirerError): _Failure(State.FAILED, Result.REFUND_DECLINED, None, _host_said),
    (Kind.VOID, HostUnreachable): _Failure(
        State.FAILED, Result.VOID_DECLINED, False, lambda e: f"bank unreachable: {e}"
    ),
    (Kind.VOID, HostRejectedError): _Failure(
        State.DECLINED, Result.VOID_DECLINED, True, _host_said
    ),
    (Kind.VOID, AcquirerError): _Failure(State.FAILED, Result.VOID_DECLINED, None, _host_said),
}


def _failure(kind: Kind, exc: AcquirerError) -> _Failure:
    for cls in type(exc).__mro__:
        found = _ACQUIRER_FAILURES.get((kind, cls))
        if found is not None:
            return found
    raise TypeError(f"no failure for {type(exc).__name__}")  # AcquirerError is in every kind


#: Stages in which the merchant may still cancel (nothing is charged without a receipt: a
#: code payment's order is cancelled with the acquirer, reversed if it was paid meanwhile).
_CANCELLABLE_STAGES: Final = frozenset(
    {
        Stage.WAITING_FOR_CARD,
        Stage.READING_CODE,
        Stage.WAITING_FOR_CONFIRMATION,
        Stage.OPENING_ORDER,
        Stage.WAITING_FOR_PAYMENT,
    }
)


# --- the offline queue, as the checkout needs it -------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """Payments stored but not yet accepted by the host (the offline banner)."""

    count: int = 0
    amounts: Mapping[int, int] = field(default_factory=dict)
    flagged: int = 0  # declined by the host after the fact, or failed: the merchant must look

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "amounts": {f"{cur:03d}": amount for cur, amount in sorted(self.amounts.items())},
            "flagged": self.flagged,
        }


class OfflineQueuePort(Protocol):
    """What the checkout needs from the offline queue (adapted in terminal.app.queue_port)."""

    def admit(
        self, payment: OfflinePayment, *, card_approves_offline: bool, now: int
    ) -> OfflineDecision:
        """Check the offline limits and, when allowed, store `payment` durably (fsynced)."""

    def summary(self, now: int) -> QueueSummary: ...

    def host_ref(self, transaction_id: str) -> tuple[str, str | None]:
        """(queue state, host reference once the host accepted it); ("", None) if unknown."""

    def sync(self) -> Mapping[str, int]:
        """Send what is pending now; returns counts per final state."""


# --- events --------------------------------------------------------------------------------


class EventHub:
    """A bounded, numbered log of events that API streams and the page follow."""

    def __init__(self, keep: int = 500) -> None:
        self._events: list[dict[str, Any]] = []
        self._next = 1
        self._keep = keep
        self._cond = threading.Condition()
        self._closed = False
        self._followers = 0

    def publish(self, kind: str, data: Mapping[str, Any]) -> int:
        with self._cond:
            event_id = self._next
            self._next += 1
            self._events.append({"id": event_id, "type": kind, "data": dict(data)})
            del self._events[: -self._keep]
            self._cond.notify_all()
            return event_id

    @property
    def last_id(self) -> int:
        with self._cond:
            return self._next - 1

    def after(self, event_id: int, timeout: float | None = None) -> list[dict[str, Any]]:
        """Events newer than `event_id`, waiting up to `timeout` seconds for one (not at all
        once the hub is closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._next - 1 > event_id, timeout=timeout)
            return [e for e in self._events if e["id"] > event_id]

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @contextmanager
    def following(self) -> Iterator[None]:
        """Counts a live stream (an API client, the page) while it follows the hub."""
        with self._cond:
            self._followers += 1
        try:
            yield
        finally:
            with self._cond:
                self._followers -= 1
                self._cond.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        """The terminal is stopping: wake every follower and wait (up to `timeout` s) until
        their streams have ended, so the server then stops with no request still running
        (a stream cut by the server's shutdown prints a CancelledError traceback)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._followers == 0, timeout=timeout)


# --- helpers -------------------------------------------------------------------------------

#: Card data that never goes into the `emv` map sent to the host or the queue: the PAN,
#: track data, name and expiry travel in their own (encrypted / TLS-only) fields.
_NOT_IN_EMV: Final = frozenset({0x5A, 0x57, 0x56, 0x9F6B, 0x5F20, 0x5F24, 0x9F1F, 0x9F20})


def _account(card: Mapping[int, bytes]) -> CardAccount | None:
    """The card's account data by the kernel's own reader (emv.carddata): the number the
    kernel vetted is the number sent. None when the card gave none or it is malformed (the
    kernel ends such a transaction itself; this is the checkout's guard)."""
    try:
        return read_account(card)
    except CardAccountError as exc:
        log.warning("card account data refused: %s", exc)
        return None


def _emv_map(card: Mapping[int, bytes]) -> dict[str, bytes]:
    return {f"{tag:X}": value for tag, value in card.items() if tag not in _NOT_IN_EMV}


def _now_text(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


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
        raise QrHostUnavailableError("the terminal is not connected to an acquirer")


_ENTRY_MODES: Final = {"cpm": "qr_consumer", "wallet": "qr_wallet", "mpm": "qr_merchant"}


def _code_brand(outcome: CodePaymentOutcome, label: str | None) -> str:
    """What the totals and receipts call a code payment (per scheme, like a card brand)."""
    if outcome.kind == "cpm":
        return f"QR {label}".upper() if label else "EMV QR"
    if outcome.kind == "mpm":
        return f"QR {outcome.scheme}".upper() if outcome.scheme else "MERCHANT QR"
    return (outcome.scheme or "wallet").upper()


# --- the checkout ---------------------------------------------------------------------------


class Checkout:
    """The one place that runs payments on this terminal.

    `reader_factory` opens the card reader for one transaction (closed afterwards, also on
    cancel). `acquirer` is None for a terminal that is not enrolled: every online request then
    follows the host-unreachable path.
    """

    def __init__(
        self,
        *,
        params: TerminalParams,
        journal: Journal,
        queue: OfflineQueuePort,
        reader_factory: ReaderFactory,
        acquirer: AcquirerClient | None,
        signer: Signer | None,
        clock: Clock = lambda: datetime.now(UTC),
        random_bytes: RandomBytes,
        card_timeout: float = 60.0,
        terminal_id: str = "",
        scanner_factory: ScannerFactory | None = None,
        qr_client: QrClient | None = None,
        qr_params: QrPaymentParams | None = None,
    ) -> None:
        self.params = params
        self.journal = journal
        self.queue = queue
        self.events = EventHub()
        self._reader_factory = reader_factory
        self._acquirer = acquirer
        self._signer = signer
        self._clock = clock
        self._random = random_bytes
        self._card_timeout = card_timeout
        self.terminal_id = terminal_id or params.terminal.terminal_identifier
        self._busy = threading.Lock()
        self._state_lock = threading.Lock()
        self._current: str | None = None
        self._cancel = threading.Event()
        self._cancellable = False
        self._worker: threading.Thread | None = None
        self.host_online: bool | None = None  # None until the first exchange
        self._final: TxnRecord | None = None
        self._scanner_factory = scanner_factory
        self._qr_client = qr_client
        self.qr_params = qr_params or QrPaymentParams.from_terminal_params(params)
        self._stop_wait: threading.Event | None = None

    # --- reading ------------------------------------------------------------------------

    @property
    def language(self) -> str:
        return self.params.terminal.language

    def message(self, record: TxnRecord) -> Message | None:
        if not record.result:
            return None
        return message_for(
            Result(record.result),
            self.language,
            amount=format_amount(record.amount, record.currency),
            reason=record.reason,
        )

    def view(self, record: TxnRecord) -> dict[str, Any]:
        """A transaction as the API and the page show it (JSON-ready, no card data)."""
        data = record.to_json()
        data["amount_text"] = format_amount(record.amount, record.currency)
        data["refundable_amount"] = self._refundable(record)
        data["voidable"] = self._voidable(record)
        message = self.message(record)
        data["message"] = (
            None
            if message is None
            else {"merchant": message.merchant, "customer": message.customer}
        )
        data["prompt"] = progress_text(record.stage, self.language) if not record.finished else ""
        data["method"] = record.method
        # The merchant-presented code, while the phone can still pay it.
        data["qr_svg"] = (
            f"/api/v1/sales/{record.id}/qr.svg"
            if record.qr_payload and record.stage == Stage.WAITING_FOR_PAYMENT
            else None
        )
        data["cancellable"] = not record.finished and record.stage in _CANCELLABLE_STAGES
        return data

    def get(self, txn_id: str) -> TxnRecord:
        record = self.journal.get(txn_id)
        if record is None:
            raise NotFoundError(f"no transaction {txn_id!r} on this terminal")
        return record

    @property
    def current(self) -> str | None:
        return self._current

    def queue_summary(self) -> QueueSummary:
        return self.queue.summary(self._unix())

    def status(self) -> dict[str, Any]:
        summary = self.queue_summary()
        return {
            "terminal_id": self.terminal_id,
            "host_online": self.host_online,
            "busy": self._current is not None,
            "current": self._current,
            "queue": summary.to_json()
            | {
                "text": [
                    format_amount(amount, cur) for cur, amount in sorted(summary.amounts.items())
                ]
            },
            "pending_reversals": len(self.journal.pending_reversals()),
            "codes": {
                "scanner": self._scanner_factory is not None,
                "merchant_presented": bool(
                    self.params.qr.enabled
                    and self.params.qr.merchant_presented
                    and self._qr_client is not None
                ),
            },
            "language": self.language,
            "currency": self.params.terminal.currency_code,
            "currency_alpha": currency(self.params.terminal.currency_code).alpha,
            "currency_exponent": currency(self.params.terminal.currency_code).exponent,
        }

    # --- internals ----------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock()

    def _unix(self) -> int:
        return int(self._clock().timestamp())

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{self._now().strftime('%y%m%d')}-{self._random(6).hex()}"

    def _claim(self) -> None:
        if not self._busy.acquire(blocking=False):
            raise BusyError(
                f"terminal busy: transaction {self._current} is in progress"
                if self._current
                else "terminal busy: another operation is in progress"
            )

    @contextmanager
    def _holding(self, *, claimed: bool = False) -> Iterator[None]:
        """The terminal is this operation's until the block ends: claimed on entry (unless
        the caller `claimed` it already: a sale's worker), then released, and only then is
        the operation's final state published, with the terminal's status."""
        if not claimed:
            self._claim()
        try:
            yield
        finally:
            self._release()
            self._publish_final()
            self._publish_status()

    def _move(
        self,
        record: TxnRecord,
        state: State,
        result: Result | None = None,
        reason: str | None = None,
        *,
        reversal_key: str = "",
        **changes: Any,
    ) -> TxnRecord:
        """The one way a transaction changes: the move is checked against the table
        (:data:`terminal.domain.records.MOVES`), committed (with what it changes in its sale
        and any reversal it owes, in one SQLite transaction), then published, so what anyone
        sees is on disk first. The final state of the transaction the terminal is busy with
        is published once the terminal is free again (:meth:`_holding`): a register that
        reacts to the result at once is not told "busy"."""
        check_move(record.kind, record.state, state)
        if result is not None:
            changes["result"] = str(result)
        if reason is not None:
            changes["reason"] = reason
        if state is not State.IN_PROGRESS:
            changes.setdefault("stage", Stage.DONE)
        new = self.journal.update(
            record,
            reversal_key=reversal_key,
            updated_at=_now_text(self._now()),
            state=state,
            **changes,
        )
        if new.finished and new.id == self._current:
            self._final = new
        else:
            self._publish(new)
        return new

    def _publish(self, record: TxnRecord) -> None:
        if record.original_id and record.finished:
            # The sale a refund or void changed (its refundable amount, its voided flag).
            self.events.publish("transaction", self.view(self.get(record.original_id)))
        self.events.publish("transaction", self.view(record))

    def _link(self, online: bool | None) -> None:
        """What the last exchange said of the link to the acquirer (None: nothing)."""
        if online is not None:
            self.host_online = online

    def _publish_status(self) -> None:
        self.events.publish("status", self.status())

    def _check_amount(self, amount: int, currency_code: int) -> None:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise RequestError("amount must be an integer number of minor units")
        if amount <= 0:
            raise RequestError(f"amount must be positive, got {amount}")
        if amount > MAX_EMV_AMOUNT:
            raise RequestError(f"amount {amount} exceeds the EMV maximum {MAX_EMV_AMOUNT}")
        try:
            currency(currency_code)
        except UnknownCurrencyError as exc:
            raise RequestError(str(exc)) from exc
        if currency_code != self.params.terminal.currency_code:
            raise RequestError(
                f"currency {currency_code:03d} is not accepted: this terminal takes "
                f"{currency(self.params.terminal.currency_code).alpha} "
                f"({self.params.terminal.currency_code:03d})"
            )

    # --- sale ---------------------------------------------------------------------------

    def merchant_qr_payload(self, record: TxnRecord) -> str:
        """The EMVCo MPM payload a merchant-presented sale shows (NotFoundError otherwise)."""
        if not record.qr_payload:
            raise NotFoundError(f"sale {record.id} has no merchant-presented code")
        return record.qr_payload

    def _merchant_qr_fields(self, amount: int) -> dict[str, Any]:
        if not (self.params.qr.enabled and self.params.qr.merchant_presented):
            raise RequestError("merchant-presented codes are not enabled in the parameters")
        if self._qr_client is None:
            raise HostUnavailableError("the terminal is not connected to an acquirer")
        order_id = new_order_id(self._random)
        try:
            # The order id is the code's reference label (MPM 62/05): the wallet provider's
            # notification names it, so the acquirer knows which order was paid.
            payload = merchant_payload(self.params, amount, reference=order_id)
        except MerchantCodeError as exc:
            raise RequestError(f"cannot make the merchant-presented code: {exc}") from exc
        return {"method": "merchant_qr", "qr_order_id": order_id, "qr_payload": payload}

    def start_sale(
        self,
        amount: int,
        currency_code: int | None = None,
        *,
        external_ref: str = "",
        method: str = "card",
    ) -> TxnRecord:
        """Begin a sale and return at once; progress arrives as events and in the journal.

        `method` "card" waits for a card or a scanned code; "merchant_qr" shows the
        terminal's dynamic EMVCo code for the amount and waits for the phone to pay it.
        """
        code = self.params.terminal.currency_code if currency_code is None else currency_code
        self._check_amount(amount, code)
        if method not in SALE_METHODS:
            raise RequestError(f"unknown payment method {method!r}: one of {SALE_METHODS}")
        fields: dict[str, Any] = {}
        stage = Stage.WAITING_FOR_CARD
        entry_mode = "contactless"
        if method == "merchant_qr":
            fields = self._merchant_qr_fields(amount)
            stage = Stage.OPENING_ORDER
            entry_mode = _ENTRY_MODES["mpm"]
        self._claim()
        try:
            now = _now_text(self._now())
            record = self.journal.insert(
                TxnRecord(
                    id=self._new_id("S"),
                    kind=Kind.SALE,
                    state=State.IN_PROGRESS,
                    amount=amount,
                    currency=code,
                    created_at=now,
                    updated_at=now,
                    external_ref=external_ref,
                    stage=stage,
                    entry_mode=entry_mode,
                    **fields,
                )
            )
            with self._state_lock:
                self._current = record.id
                self._cancel = threading.Event()
                self._stop_wait = threading.Event()
                self._cancellable = True
            self.events.publish("transaction", self.view(record))
            self._worker = threading.Thread(
                target=self._sale_worker, args=(record, self._cancel), name="sale", daemon=True
            )
            self._worker.start()
        except BaseException:
            self._release()
            raise
        return record

    def wait(self, txn_id: str, timeout: float | None = None) -> TxnRecord:
        """Block until the transaction has finished, or `timeout` seconds have passed; returns
        it as it then stands (the API's cancel, tests, the demo, the CLI)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = self.events.last_id
        record = self.get(txn_id)
        while not record.finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if (remaining is not None and remaining <= 0) or self.events.closed:
                break  # out of time, or the terminal is stopping: no more changes come
            self.events.after(last, timeout=remaining)
            last = self.events.last_id
            record = self.get(txn_id)
        return record

    def cancel(self, txn_id: str | None = None) -> TxnRecord:
        """Stop waiting for a card or a code. Refused once a card is being read (it is too
        late). A code payment can be cancelled until it is final: its order is cancelled with
        the acquirer (and reversed if the wallet paid meanwhile), so nothing is charged."""
        with self._state_lock:
            current = self._current
            if current is None or (txn_id is not None and txn_id != current):
                target = txn_id or "(none)"
                record = self.journal.get(target) if txn_id else None
                if record is not None and record.finished:
                    raise StateError(f"transaction {target} has already finished ({record.state})")
                raise NotFoundError(f"no transaction {target} is running")
            if not self._cancellable:
                raise StateError("too late to cancel: the card is being processed")
            self._cancel.set()
            if self._stop_wait is not None:
                self._stop_wait.set()
        return self.get(current)

    def _release(self) -> None:
        with self._state_lock:
            self._current = None
            self._cancellable = False
            self._stop_wait = None
        self._busy.release()

    def _sale_worker(self, record: TxnRecord, cancel: threading.Event) -> None:
        with self._holding(claimed=True):
            try:
                self._run_sale(record, cancel)
            except Exception:
                # The backstop of the sale's thread: a fault, not an outcome. Logged with its
                # traceback; the journal stays truthful and the terminal usable.
                log.exception("sale %s failed", record.id)
                current = self.journal.get(record.id) or record
                if not current.finished:
                    self._move(
                        current, State.FAILED, Result.READER_ERROR, "internal error; see the log"
                    )

    def _finish(
        self, record: TxnRecord, state: State, result: Result, reason: str = "", **changes: Any
    ) -> TxnRecord:
        """End `record` in a final state (a :meth:`_move` with its result and reason)."""
        return self._move(record, state, result, reason, **changes)

    def _fail(self, record: TxnRecord, exc: AcquirerError) -> TxnRecord:
        """End `record` as the acquirer error table says, and note what it says of the link."""
        failure = _failure(record.kind, exc)
        self._link(failure.online)
        return self._finish(
            record,
            failure.state,
            failure.result,
            failure.reason(exc),
            outcome_unknown=failure.unknown,
        )

    def _publish_final(self) -> None:
        final, self._final = self._final, None
        if final is not None:
            self._publish(final)

    def _run_sale(self, record: TxnRecord, cancel: threading.Event) -> TxnRecord:
        if record.method == "merchant_qr":
            return self._run_merchant_qr(record, cancel)
        reader: CardReader | None = None
        scanner: CodeScanner | None = None
        problems: list[str] = []
        try:
            reader = self._reader_factory()
        except DriverError as exc:
            problems.append(str(exc))
        if self._scanner_factory is not None:
            try:
                scanner = self._scanner_factory()
            except DriverError as exc:  # cards still work; say why codes do not
                log.warning("code scanner unavailable: %s", exc)
                problems.append(str(exc))
        if reader is None and scanner is None:
            return self._finish(record, State.FAILED, Result.READER_ERROR, "; ".join(problems))
        # Both devices are open and listening: a serial port drops what arrived before it
        # was opened, so the register (and tests) may wait for this before the customer acts.
        self.events.publish(
            "ready",
            {"id": record.id, "card": reader is not None, "code": scanner is not None},
        )
        try:
            stop = self._stop_wait or threading.Event()
            if cancel.is_set():
                stop.set()
            got, value = self._wait_for_card_or_code(record, reader, scanner, stop)
            if scanner is not None:
                scanner.close()
                scanner = None
            with self._state_lock:
                if cancel.is_set():
                    return self._finish(record, State.CANCELLED, Result.CANCELLED)
                if got == "card":
                    self._cancellable = False  # the card is being read: too late to cancel
            if got == "timeout":
                return self._finish(record, State.CANCELLED, Result.NO_CARD)
            if got == "error":
                return self._finish(record, State.FAILED, Result.READER_ERROR, value)
            if got == "code":
                if reader is not None:
                    reader.close()
                    reader = None
                return self._run_code(record, value, cancel)
            assert reader is not None
            record = self._move(record, record.state, stage=Stage.READING_CARD)
            request = new_request(
                record.amount,
                currency=record.currency,
                clock=self._clock,
                random_bytes=self._random,
                reader=reader,
            )
            session = run_card_transaction(reader, self.params, request)
        finally:
            if scanner is not None:
                scanner.close()
            if reader is not None:
                reader.close()
        return self._after_card(record, session.outcome)

    def _wait_for_card_or_code(
        self,
        record: TxnRecord,
        reader: CardReader | None,
        scanner: CodeScanner | None,
        stop: threading.Event,
    ) -> tuple[str, str]:
        """Wait for whichever comes first: a card on the reader or a code on the scanner.

        Returns ("card", ""), ("code", text), ("timeout", ""), ("error", why) or
        ("cancelled", ""). `stop` ends both waits: the merchant's cancel sets it, and so
        does the first of the two to get something (the other then gives up).
        """
        won: list[tuple[str, str]] = []
        lock = threading.Lock()
        scan_problem: list[str] = []

        def claim(kind: str, value: str) -> bool:
            with lock:
                if won:
                    return False
                won.append((kind, value))
                stop.set()
                return True

        def scan() -> None:
            assert scanner is not None
            deadline = time.monotonic() + self._card_timeout
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    code = scanner.wait_for_code(timeout=remaining, cancel=stop)
                except ScanRejectedError as exc:
                    # A bad read (partial, not text): say so and keep waiting for a good one.
                    self.events.publish(
                        "scan_rejected", {"id": record.id, "reason": f"code not read: {exc}"}
                    )
                    continue
                except (CancelledError, ReaderTimeoutError):
                    return
                except DriverError as exc:
                    log.warning("code scanner failed: %s", exc)
                    scan_problem.append(str(exc))
                    return
                claim("code", code)
                return

        worker = None
        if scanner is not None:
            worker = threading.Thread(target=scan, name="scanner", daemon=True)
            worker.start()
        card_problem = ""
        if reader is not None:
            try:
                reader.wait_for_card(timeout=self._card_timeout, cancel=stop)
            except (CancelledError, ReaderTimeoutError):
                stop.set()
            except DriverError as exc:
                # A broken reader: codes may still come; report it only if nothing does.
                card_problem = str(exc)
            else:
                claim("card", "")
        if worker is not None:
            worker.join()
        if won:
            return won[0]
        if self._cancel.is_set():
            return "cancelled", ""
        if card_problem or (reader is None and scan_problem):
            return "error", card_problem or scan_problem[0]
        return "timeout", ""

    # --- code payments ----------------------------------------------------------------

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
        record = self._move(
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
                current[0] = self._move(
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
            current[0] = self._move(current[0], current[0].state, stage=Stage.WAITING_FOR_PAYMENT)

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
        record = self._move(record, record.state, stage=Stage.STORING, **fields)
        captured_at = self._unix()
        signed, signature, key_id = self._signed_record(record, captured_at)
        emv = {str(tag): str(value) for tag, value in dict(data.get("emv") or {}).items()}
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

    def _card_fields(self, outcome: Outcome) -> dict[str, Any]:
        card = outcome.card_data
        return {
            "masked_pan": outcome.masked_pan or "",
            "brand": outcome.label,
            "aid": "" if outcome.aid is None else outcome.aid.hex().upper(),
            "cryptogram_kind": "" if outcome.cryptogram is None else str(outcome.cryptogram),
            "cryptogram": card.get(0x9F26, b"").hex().upper(),
            "atc": card.get(0x9F36, b"").hex().upper(),
            "tvr": outcome.tvr.hex().upper(),
            "cvm": "" if outcome.cvm is None else str(outcome.cvm),
        }

    def _after_card(self, record: TxnRecord, outcome: Outcome) -> TxnRecord:
        kind = outcome.kind
        if kind in (OutcomeKind.APPROVED, OutcomeKind.ONLINE_REQUEST):
            record = self._move(record, record.state, **self._card_fields(outcome))
        if kind is OutcomeKind.APPROVED:
            # The card approved offline (TC): the payment still has to reach the acquirer, so
            # it goes through the queue; a refusal there is a decline, never a silent accept.
            return self._store_offline(record, outcome, online_failed=False)
        if kind is OutcomeKind.ONLINE_REQUEST:
            return self._go_online(record, outcome)
        fields = self._card_fields(outcome)
        reason = outcome.reason or outcome.detail
        if kind is OutcomeKind.DECLINED:
            return self._finish(record, State.DECLINED, Result.DECLINED_BY_CARD, reason, **fields)
        if kind is OutcomeKind.TRY_AGAIN:
            return self._finish(record, State.DECLINED, Result.TRY_AGAIN, reason, **fields)
        if kind is OutcomeKind.TRY_ANOTHER_INTERFACE:
            return self._finish(
                record, State.DECLINED, Result.TRY_ANOTHER_INTERFACE, reason, **fields
            )
        return self._finish(record, State.DECLINED, Result.CARD_NOT_SUPPORTED, reason, **fields)

    def _go_online(self, record: TxnRecord, outcome: Outcome) -> TxnRecord:
        card = outcome.card_data
        account = _account(card)
        if account is None:
            return self._finish(record, State.DECLINED, Result.TRY_AGAIN, "card gave no valid PAN")
        if self._acquirer is None:
            return self._store_offline(record, outcome, online_failed=True)
        key = self._acquirer.new_idempotency_key("auth")
        # The key is on disk before the request leaves: after a crash, recovery can reverse it.
        record = self._move(record, record.state, stage=Stage.AUTHORISING, idempotency_key=key)
        request = AuthorisationRequest(
            amount=record.amount,
            currency=record.currency,
            pan=account.pan,
            pan_sequence=account.pan_sequence,
            expiry=account.expiry,
            brand=outcome.label or None,
            aid=record.aid or None,
            emv=_emv_map(card),
        )
        try:
            answer = self._acquirer.authorise(request, idempotency_key=key)
        except (HostUnreachable, NotEnrolledError) as exc:
            self._link(False)
            log.info("sale %s: acquirer unreachable (%s); trying offline", record.id, exc)
            return self._store_offline(record, outcome, online_failed=True)
        except ReversalPendingError as exc:
            # The reversal the client could not get acknowledged is kept, with the decline,
            # in one commit, and retried (retry_reversals).
            failure = _failure(record.kind, exc)
            self._link(failure.online)
            return self._finish(
                record,
                failure.state,
                failure.result,
                failure.reason(exc),
                reversal_key=exc.idempotency_key,
            )
        except AcquirerError as exc:
            return self._fail(record, exc)
        self._link(True)
        if answer.outcome is AuthOutcome.APPROVED:
            return self._finish(
                record,
                State.APPROVED,
                Result.APPROVED,
                auth_code=answer.auth_code or "",
                response_code=answer.response_code or "",
                host_ref=answer.transaction_ref or "",
            )
        if answer.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE:
            return self._finish(
                record,
                State.DECLINED,
                Result.HOST_NO_RESPONSE,
                f"reversal {answer.reversal_status}",
            )
        return self._finish(
            record,
            State.DECLINED,
            Result.DECLINED_BY_ISSUER,
            f"{answer.response_code} {answer.reason}".strip(),
            response_code=answer.response_code or "",
            host_ref=answer.transaction_ref or "",
        )

    def _signed_record(self, record: TxnRecord, captured_at: int) -> tuple[bytes, bytes, str]:
        """The terminal's signature over what it approved offline (no card data in it)."""
        body = json.dumps(
            {
                "transaction_id": record.id,
                "terminal_id": self.terminal_id,
                "amount": record.amount,
                "currency": record.currency,
                "captured_at": captured_at,
                "masked_pan": record.masked_pan,
                "aid": record.aid,
                "cryptogram": record.cryptogram,
                "atc": record.atc,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        if self._signer is None:
            return body, b"", ""
        return body, self._signer.sign(body), self._signer.key_id

    def _store_offline(
        self, record: TxnRecord, outcome: Outcome, *, online_failed: bool
    ) -> TxnRecord:
        card = outcome.card_data
        account = _account(card)
        if account is None:
            return self._finish(record, State.DECLINED, Result.TRY_AGAIN, "card gave no valid PAN")
        offline = self.params.offline
        if online_failed and (offline is None or not offline.enabled):
            return self._finish(record, State.DECLINED, Result.DECLINED_OFFLINE_DISABLED)
        record = self._move(record, record.state, stage=Stage.STORING)
        captured_at = self._unix()
        signed, signature, key_id = self._signed_record(record, captured_at)
        payment = OfflinePayment(
            transaction_id=record.id,
            amount=record.amount,
            currency=record.currency,
            card=QueueCardData(
                pan=account.pan, pan_sequence=account.pan_sequence, expiry=account.expiry
            ),
            captured_at=captured_at,
            emv={tag: value.hex().upper() for tag, value in _emv_map(card).items()},
            brand=outcome.label or None,
            aid=record.aid or None,
            signed_record=signed,
            signature=signature,
            key_id=key_id or None,
        )
        # Store and forward (deferred authorisation): an ARQC or a TC may be kept for later
        # upload; an AAC is the card's own refusal and is never stored.
        card_ok = outcome.cryptogram in (CryptogramKind.TC, CryptogramKind.ARQC)
        decision = self.queue.admit(payment, card_approves_offline=card_ok, now=captured_at)
        if not decision.allowed:
            result = Result.DECLINED_OFFLINE_LIMIT if online_failed else Result.DECLINED_BY_CARD
            return self._finish(record, State.DECLINED, result, decision.message)
        result = Result.APPROVED_OFFLINE if online_failed else Result.APPROVED
        return self._finish(record, State.APPROVED_OFFLINE, result, offline_id=record.id)

    # --- refund, void -------------------------------------------------------------------

    def _resolve_host_ref(self, sale: TxnRecord) -> str:
        if sale.host_ref:
            return sale.host_ref
        if sale.offline_id:
            state, ref = self.queue.host_ref(sale.offline_id)
            if ref:
                self.journal.update(sale, host_ref=ref)
                return ref
            raise StateError(
                f"sale {sale.id} is still in the offline queue ({state or 'unknown'}); "
                "it can be refunded once it has been sent to the bank"
            )
        raise StateError(f"sale {sale.id} has no bank reference")

    def _refundable(self, record: TxnRecord) -> int:
        if record.kind is not Kind.SALE or record.voided:
            return 0
        if record.state not in APPROVED_STATES:
            return 0
        return record.amount - record.refunded_amount

    def _voidable(self, record: TxnRecord) -> bool:
        return (
            record.kind is Kind.SALE
            and record.state is State.APPROVED
            and not record.voided
            and not record.batch_id
            and record.refunded_amount == 0
            and bool(record.host_ref)
        )

    def _undo_record(self, sale: TxnRecord, kind: Kind, amount: int, **fields: Any) -> TxnRecord:
        """Journal a refund or void of `sale` before its request leaves, and make it the
        terminal's current transaction."""
        now = _now_text(self._now())
        record = self.journal.insert(
            TxnRecord(
                id=self._new_id("R" if kind is Kind.REFUND else "V"),
                kind=kind,
                state=State.IN_PROGRESS,
                amount=amount,
                currency=sale.currency,
                created_at=now,
                updated_at=now,
                original_id=sale.id,
                stage=Stage.AUTHORISING,
                masked_pan=sale.masked_pan,
                brand=sale.brand,
                aid=sale.aid,
                **fields,
            )
        )
        with self._state_lock:
            self._current = record.id
        return record

    def refund(
        self, original_id: str, amount: int | None = None, *, external_ref: str = ""
    ) -> TxnRecord:
        """Refund (part of) an approved sale to the card it was paid with."""
        sale = self.get(original_id)
        if sale.kind is not Kind.SALE:
            raise StateError(f"{original_id} is a {sale.kind}, only sales can be refunded")
        refundable = self._refundable(sale)
        if refundable <= 0:
            raise StateError(
                f"sale {original_id} cannot be refunded ({sale.state}"
                + (
                    ", voided"
                    if sale.voided
                    else ", already fully refunded"
                    if sale.refunded_amount
                    else ""
                )
                + ")"
            )
        amount = refundable if amount is None else amount
        self._check_amount(amount, sale.currency)
        if amount > refundable:
            raise RequestError(
                f"refund of {format_amount(amount, sale.currency)} exceeds what is left to "
                f"refund ({format_amount(refundable, sale.currency)})"
            )
        with self._holding():
            host_ref = self._resolve_host_ref(sale)
            if self._acquirer is None:
                raise HostUnavailableError("the terminal is not connected to an acquirer")
            self._settle_unknown_refunds(sale, host_ref, self._acquirer)
            # Checked again now that the terminal is ours: another refund or a void may have
            # finished since the checks above.
            sale = self.get(original_id)
            if amount > self._refundable(sale):
                raise StateError(
                    f"refund of {format_amount(amount, sale.currency)} exceeds what is left to "
                    f"refund ({format_amount(self._refundable(sale), sale.currency)})"
                )
            record = self._undo_record(
                sale,
                Kind.REFUND,
                amount,
                external_ref=external_ref,
                entry_mode=sale.entry_mode,
                idempotency_key=self._acquirer.new_idempotency_key("refund"),
            )
            self._publish(record)
            try:
                answer = self._acquirer.refund(
                    RefundRequest(amount=amount, currency=sale.currency, original_ref=host_ref),
                    idempotency_key=record.idempotency_key,
                )
            except AcquirerError as exc:
                # A lost answer (the bank may have refunded): the next refund of this sale
                # first re-sends this one under its own key (_settle_unknown_refunds).
                return self._fail(record, exc)
            self._link(True)
            # One commit: the refund's approval and the sale's refunded amount derived from
            # it (a crash can no longer leave the one without the other).
            return self._finish(
                record, State.APPROVED, Result.REFUND_APPROVED, host_ref=answer.transaction_ref
            )

    def _settle_unknown_refunds(
        self, sale: TxnRecord, host_ref: str, acquirer: AcquirerClient
    ) -> None:
        """Re-send, under their own idempotency keys, this sale's refunds whose answer was
        lost, before any new refund: the host answers the first result (or refunds now), so a
        refund the merchant retries is never paid twice. One that did go through is recorded
        and the new request is refused, for the merchant to decide again."""
        went_through: list[TxnRecord] = []
        for earlier in self.journal.find_original(sale.id):
            if earlier.kind is not Kind.REFUND or not earlier.outcome_unknown:
                continue
            try:
                answer = acquirer.refund(
                    RefundRequest(
                        amount=earlier.amount, currency=earlier.currency, original_ref=host_ref
                    ),
                    idempotency_key=earlier.idempotency_key,
                )
            except HostRejectedError as exc:
                self._link(True)
                self._move(earlier, State.DECLINED, reason=exc.message, outcome_unknown=False)
                continue
            except AcquirerError as exc:
                raise HostUnavailableError(
                    f"an earlier refund ({earlier.id}) of this sale has no answer from the bank "
                    "yet; try again when the bank can be reached"
                ) from exc
            self._link(True)
            went_through.append(
                self._move(
                    earlier,
                    State.APPROVED,
                    Result.REFUND_APPROVED,
                    "",
                    host_ref=answer.transaction_ref,
                    outcome_unknown=False,
                )
            )
        if went_through:
            done = ", ".join(
                f"{r.id} ({format_amount(r.amount, r.currency)})" for r in went_through
            )
            raise StateError(
                f"an earlier refund of this sale did reach the bank and is now recorded as "
                f"approved: {done}; nothing more was refunded"
            )

    def _check_voidable(self, sale: TxnRecord) -> None:
        if not self._voidable(sale):
            why = (
                "only approved online sales not yet settled or refunded can be voided"
                if sale.kind is Kind.SALE
                else f"{sale.id} is a {sale.kind}"
            )
            raise StateError(f"{sale.id} cannot be voided: {why}")

    def void(self, original_id: str) -> TxnRecord:
        """Cancel an approved online sale that is not settled yet (no money moves)."""
        self._check_voidable(self.get(original_id))
        if self._acquirer is None:
            raise HostUnavailableError("the terminal is not connected to an acquirer")
        acquirer = self._acquirer
        with self._holding():
            # Read again under the terminal's lock: a refund may have finished in between.
            sale = self.get(original_id)
            self._check_voidable(sale)
            record = self._undo_record(
                sale, Kind.VOID, sale.amount, idempotency_key="void-" + sale.host_ref
            )
            try:
                answer = acquirer.void(sale.host_ref, idempotency_key=record.idempotency_key)
            except AcquirerError as exc:
                return self._fail(record, exc)
            self._link(True)
            # One commit: the void's approval and the sale's voided flag derived from it.
            return self._finish(record, State.APPROVED, Result.VOID_APPROVED, reason=answer.status)

    # --- totals, end of day, sync, recovery ---------------------------------------------

    def totals(self) -> list[TotalsLine]:
        return self.journal.open_totals()

    def end_of_day(self) -> dict[str, Any]:
        """Send what the queue holds, then close the batch with the acquirer and compare."""
        with self._holding():
            if self._acquirer is None:
                raise HostUnavailableError("the terminal is not connected to an acquirer")
            sync = self._safe_sync()
            lines = self.journal.open_totals()
            mine = [
                BrandTotals(
                    brand=line.brand,
                    currency=line.currency,
                    sales_count=line.sales_count - line.offline_count,
                    sales_amount=line.sales_amount - line.offline_amount,
                    refunds_count=line.refunds_count,
                    refunds_amount=line.refunds_amount,
                    net_amount=line.net_amount - line.offline_amount,
                )
                for line in lines
            ]
            try:
                settlement = self._acquirer.settle(terminal_totals=None)
            except HostUnreachable as exc:
                self._link(False)
                raise HostUnavailableError(f"bank unreachable, batch not closed: {exc}") from exc
            except AcquirerError as exc:
                raise HostUnavailableError(f"batch not closed: {exc}") from exc
            self._link(True)
            host_totals = [t.to_json() for t in settlement.totals]
            count = self.journal.close_batch(
                settlement.batch_id, _now_text(self._now()), host_totals
            )
            report = {
                "batch_id": settlement.batch_id,
                "transactions": count,
                "host_transactions": settlement.transaction_count,
                "host_totals": host_totals,
                "terminal_totals": [t.to_json() for t in mine],
                "offline_synced": dict(sync),
                "still_offline": self.queue_summary().to_json(),
            }
            self.events.publish("end_of_day", report)
            return report

    def _safe_sync(self) -> Mapping[str, int]:
        try:
            result = self.queue.sync()
        except Exception as exc:  # the queue's own errors: report, do not lose the batch
            log.warning("offline sync failed: %s", exc)
            return {"error": 1}
        self._mark_synced()
        return result

    def sync_offline(self) -> Mapping[str, int]:
        """Send the offline queue now and bring the journal up to date with what happened."""
        result = self._safe_sync()
        self._publish_status()
        return result

    def _mark_synced(self) -> None:
        """Copy the host references (and after-the-fact declines) from the queue."""
        for record in self.journal.recent(limit=500):
            if (
                record.state is not State.APPROVED_OFFLINE
                or record.host_ref
                or not record.offline_id
            ):
                continue
            state, ref = self.queue.host_ref(record.offline_id)
            if state == "declined":
                self._move(
                    record,
                    record.state,
                    reason="declined by the bank after the fact",
                    host_ref=ref or "",
                )
            elif ref:
                self._move(record, record.state, host_ref=ref)
        if self.queue_summary().count == 0:
            self._link(True)

    def retry_reversals(self) -> int:
        """Send reversals the host has not acknowledged yet; returns how many remain."""
        for key, _txn in self.journal.pending_reversals():
            if key.startswith(QR_CANCEL_PREFIX):
                if self._qr_client is None:
                    continue
                try:
                    self._qr_client.cancel(key[len(QR_CANCEL_PREFIX) :], "no_answer")
                except QrHostError as exc:
                    log.info("code order cancel still pending: %s", type(exc).__name__)
                    continue
                self.journal.reversal_done(key)
                continue
            if self._acquirer is None:
                continue
            try:
                self._acquirer.reverse(original_idempotency_key=key, reason="lost_response")
            except AcquirerError as exc:
                log.info("reversal still pending: %s", type(exc).__name__)
                continue
            self.journal.reversal_done(key)
        return len(self.journal.pending_reversals())

    def recover(self) -> list[TxnRecord]:
        """After a restart: finish what a crash interrupted, truthfully."""
        fixed = [self._recovered(record) for record in self.journal.unfinished()]
        self.retry_reversals()
        return fixed

    def _recovered(self, record: TxnRecord) -> TxnRecord:
        """How a transaction a crash interrupted ends: each in one commit, with the reversal
        or order cancel it owes."""
        if record.qr_order_id and not record.offline_id:
            # A code payment cut short: cancel its order (reversed if it was paid), so no
            # money is kept for a sale the merchant never saw approved.
            return self._finish(
                record,
                State.CANCELLED,
                Result.CODE_CANCELLED,
                "cancelled",
                reversal_key=QR_CANCEL_PREFIX + record.qr_order_id,
            )
        if record.offline_id or self.queue.host_ref(record.id)[0]:
            return self._finish(
                record, State.APPROVED_OFFLINE, Result.APPROVED_OFFLINE, offline_id=record.id
            )
        if record.idempotency_key and record.kind is Kind.REFUND:
            # The refund may have reached the bank: the next refund of the sale re-sends it
            # under this key first (_settle_unknown_refunds).
            return self._finish(
                record,
                State.FAILED,
                Result.REFUND_DECLINED,
                "interrupted; no answer from the bank",
                outcome_unknown=True,
            )
        if record.idempotency_key and record.kind is Kind.SALE:
            # The authorisation may have reached the host: reverse it, never assume.
            return self._finish(
                record,
                State.DECLINED,
                Result.HOST_NO_RESPONSE,
                "interrupted",
                reversal_key=record.idempotency_key,
            )
        return self._finish(record, State.CANCELLED, Result.CANCELLED, "interrupted")

    def close(self) -> None:
        with self._state_lock:
            if self._current is not None and self._cancellable:
                self._cancel.set()
                if self._stop_wait is not None:
                    self._stop_wait.set()
        if self._worker is not None:
            self._worker.join(timeout=10)


def totals_json(lines: Sequence[TotalsLine]) -> list[dict[str, Any]]:
    return [
        {
            "brand": line.brand,
            "currency": line.currency,
            "sales_count": line.sales_count,
            "sales_amount": line.sales_amount,
            "refunds_count": line.refunds_count,
            "refunds_amount": line.refunds_amount,
            "net_amount": line.net_amount,
            "offline_count": line.offline_count,
            "offline_amount": line.offline_amount,
            "net_text": format_amount(line.net_amount, line.currency),
        }
        for line in lines
    ]
