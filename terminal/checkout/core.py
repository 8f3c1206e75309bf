"""The checkout's core: one transaction at a time, and the one way a transaction changes
(:meth:`CheckoutCore._transition`: the move checked against the table, committed, then published).
The operations (sale, code payments, refunds and voids, reconciliation) build on it, one
module each; :class:`terminal.checkout.flow.Checkout` puts them together."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any, Final

from emv.kernel.config import KERNEL_MASTERCARD

from ..acquirer.client import AcquirerError, ReversalPendingError
from ..acquirer.link import AcquirerLink
from ..acquirer.qr_client import QrClient
from ..domain.currency import MAX_EMV_AMOUNT, UnknownCurrencyError, currency, format_amount
from ..domain.messages import (
    Message,
    Result,
    brand_text,
    message_for,
    progress_text,
    ui_strings,
)
from ..domain.params import TerminalParams
from ..domain.records import (
    APPROVED_STATES,
    Kind,
    Method,
    Stage,
    State,
    TxnRecord,
    check_move,
    parse_search,
)
from ..domain.signing import Signer, offline_record
from ..store.journal import Journal
from .card_session import CARD_READ_TIMEOUT
from .errors import BusyError, NotFoundError, RequestError
from .events import EventHub
from .failures import failure_for, link_failure
from .ports import Clock, OfflineQueuePort, QueueSummary, RandomBytes, ReaderFactory, ScannerFactory
from .qr_payment import QrPaymentParams

__all__ = ["QR_CANCEL_PREFIX", "SALE_METHODS", "CheckoutCore", "refund_state", "title_key"]

log = logging.getLogger(__name__)


#: How a sale is paid: "card" waits for a card on the reader or a code on the scanner;
#: "merchant_qr" shows the terminal's own EMVCo MPM code and waits for the wallet to pay it.
SALE_METHODS: Final = tuple(Method)


#: Journal prefix of merchant cancels of code-payment orders still to be acknowledged (they
#: share the pending-reversal list: both undo something the host may have done).
QR_CANCEL_PREFIX: Final = "qr-cancel:"


#: Stages in which the merchant may still cancel (nothing is charged without a receipt: a
#: code payment's order is cancelled with the acquirer, reversed if it was paid meanwhile).
_CANCELLABLE_STAGES: Final = frozenset(
    {
        Stage.WAITING_FOR_TIP,
        Stage.WAITING_FOR_CARD,
        Stage.WAITING_FOR_CARD_AGAIN,
        Stage.READING_CARD,  # until the card has given its outcome (a wedged card)
        Stage.READING_CODE,
        Stage.WAITING_FOR_CONFIRMATION,
        Stage.OPENING_ORDER,
        Stage.WAITING_FOR_PAYMENT,
    }
)


def _now_text(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


#: A declined or failed sale's title by its result (the ui string ``title_<key>``).
_SALE_TITLES: Final[Mapping[Result, str]] = {
    Result.DECLINED_BY_CARD: "declined_by_card",
    Result.DECLINED_BY_ISSUER: "declined_by_bank",
    Result.DECLINED_OFFLINE_LIMIT: "declined_offline",
    Result.DECLINED_OFFLINE_DISABLED: "declined_offline",
    Result.DECLINED_NOT_ENROLLED: "declined_offline",
    # Try another interface, a card the terminal does not take, end application asking for
    # another card, a code where a card is needed: the customer pays another way.
    Result.TRY_ANOTHER_INTERFACE: "use_another_method",
    Result.CARD_NOT_SUPPORTED: "use_another_method",
    Result.CODE_USE_CARD: "use_another_method",
    Result.TRY_AGAIN: "try_again",
    Result.CARD_TOO_SLOW: "try_again",
    Result.HOST_NO_RESPONSE: "reversed",
    Result.HOST_ERROR: "bank_error",
    Result.CODE_DECLINED: "code_declined",
    Result.CODE_REJECTED: "code_rejected",
    Result.CANCELLED: "cancelled",
    Result.CODE_CANCELLED: "cancelled",
    Result.NO_CARD: "no_card",
    Result.CODE_TIMED_OUT: "timed_out",
    Result.READER_ERROR: "reader_error",
}


def refund_state(record: TxnRecord) -> str | None:
    """A sale's refunds and void as the list shows them: "voided", "refunded" (all of it),
    "partially_refunded"; None for a sale with neither, and for refunds and voids."""
    if record.kind is not Kind.SALE:
        return None
    if record.voided:
        return "voided"
    if record.refunded_amount and record.refunded_amount >= record.amount:
        return "refunded"
    if record.refunded_amount:
        return "partially_refunded"
    return None


def title_key(record: TxnRecord) -> str:
    """What happened to `record`, as the key of its title (ui string ``title_<key>``): from
    its kind, state and stored result. A sale says what became of it since (voided,
    refunded, declined by the bank after the fact); a refund or a void is never "approved"
    but "refunded" or "voided"; a refund or void whose answer was lost is "not confirmed"."""
    if record.kind is not Kind.SALE:
        word = "refund" if record.kind is Kind.REFUND else "void"
        if record.state is State.IN_PROGRESS:
            return f"{word}_in_progress"
        if record.state is State.APPROVED:
            return "refunded" if record.kind is Kind.REFUND else "voided"
        if record.state is State.DECLINED:
            return f"{word}_declined"
        if record.state is State.FAILED and record.outcome_unknown:
            return f"{word}_unknown"
        return f"{word}_failed"
    if record.state is State.IN_PROGRESS:
        return "in_progress"
    if record.state in APPROVED_STATES:
        if record.declined_after_the_fact:
            return "declined_after_the_fact"
        state = refund_state(record)
        if state is not None:
            return f"sale_{state}"
        return "approved_offline" if record.result == Result.APPROVED_OFFLINE else "approved"
    if record.result:
        found = _SALE_TITLES.get(Result(record.result))
        if found is not None:
            return found
    return "cancelled" if record.state is State.CANCELLED else "failed"


class CheckoutCore:
    """State and rules every operation shares."""

    def __init__(
        self,
        *,
        params: TerminalParams,
        journal: Journal,
        queue: OfflineQueuePort,
        reader_factory: ReaderFactory,
        acquirer: AcquirerLink | None,
        signer: Signer | None,
        clock: Clock = lambda: datetime.now(UTC),
        random_bytes: RandomBytes,
        card_timeout: float = 60.0,
        card_read_timeout: float = CARD_READ_TIMEOUT,
        enrolled: Callable[[], bool] = lambda: False,
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
        #: Seconds one tap's card conversation may take (card_session.CARD_READ_TIMEOUT).
        self._card_read_timeout = card_read_timeout
        #: Whether the terminal holds its enrolment (terminal id and host key): without it an
        #: offline payment could never be uploaded, so none is taken.
        self._enrolled = enrolled
        self.terminal_id = terminal_id or params.terminal.terminal_identifier
        self._busy = threading.Lock()
        self._state_lock = threading.Lock()
        self._current: str | None = None
        self._cancel = threading.Event()
        self._cancellable = False
        self._worker: threading.Thread | None = None
        self.host_online: bool | None = None  # None until the first exchange
        #: When the link last changed state, and what the last failure was (a
        #: :data:`terminal.checkout.failures.LINK_FAILURES` code), for the page's banner.
        self.host_since: datetime | None = None
        self.host_failure: str = ""
        self._final: TxnRecord | None = None
        self._scanner_factory = scanner_factory
        self._qr_client = qr_client
        self.qr_params = qr_params or QrPaymentParams.from_terminal_params(params)
        self._stop_wait: threading.Event | None = None
        #: One settler of lost answers at a time: the background loop and a merchant's void
        #: may both find the same unsettled void.
        self._settling = threading.Lock()
        #: What the composition adds to the status (a demo stack: its simulated acquirer's
        #: mode), in every status answer and event.
        self.extra_status: Callable[[], Mapping[str, Any]] = dict
        self._status_publish_lock = threading.Lock()
        #: The zone the merchant's dates are in (the list's date filter); None: the
        #: machine's local zone, as the kiosk's clock shows it.
        self.local_zone: tzinfo | None = None

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
        """A transaction as the API and the page show it (JSON-ready, no card data).

        `created_at` / `updated_at`: ISO 8601 with the UTC offset of the terminal's clock
        ("2025-03-01T17:55:02+00:00"; UTC unless the clock gives another zone). A sale
        carries its `refunds` (refunds and voids, oldest first) and `refund_state`; a refund
        or void its `original` sale; every view its `title` and `brand_text` in the
        terminal's language."""
        data = record.to_json()
        data["amount_text"] = format_amount(record.amount, record.currency)
        # An offline sale still in the queue: the bank has no reference to refund against
        # yet, so nothing is refundable now; `refundable_after_sync` says it will be.
        data["refundable_amount"] = self._refundable(record)
        data["refundable_after_sync"] = (
            record.offline_status == "waiting" and self._left_to_refund(record) > 0
        )
        data["voidable"] = self._voidable(record)
        # An offline sale: "waiting" in the queue, "sent", or "declined" by the bank after
        # the fact (needs the merchant's attention); None for online ones.
        data["offline_status"] = record.offline_status
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
        strings = ui_strings(self.language)
        data["brand_text"] = brand_text(record.brand, self.language)
        # What happened, in the terminal's language, for the result screen and the list;
        # `title_key` for a client that words or styles it itself.
        data["title_key"] = title_key(record)
        data["title"] = strings[f"title_{data['title_key']}"]
        data["refund_state"] = refund_state(record)
        data["refunds"] = None
        data["original"] = None
        if record.kind is Kind.SALE:
            data["refunds"] = [
                {
                    "id": undo.id,
                    "kind": str(undo.kind),
                    "amount": undo.amount,
                    "amount_text": format_amount(undo.amount, undo.currency),
                    "state": str(undo.state),
                    "created_at": undo.created_at,
                }
                for undo in self.journal.find_original(record.id)
            ]
        elif record.original_id:
            sale = self.journal.get(record.original_id)
            if sale is not None:
                data["original"] = {
                    "id": sale.id,
                    "amount": sale.amount,
                    "amount_text": format_amount(sale.amount, sale.currency),
                    "masked_pan": sale.masked_pan,
                    "brand": sale.brand,
                    "brand_text": brand_text(sale.brand, self.language),
                    "created_at": sale.created_at,
                }
        return data

    def _local_midnight(self, day: date | None) -> int | None:
        """Unix seconds of the start of `day` in the terminal's local zone (None: no day,
        or one at the edge of the calendar, where no bound is needed)."""
        if day is None:
            return None
        start = datetime.combine(day, time.min)
        try:
            if self.local_zone is None:
                return int(start.astimezone().timestamp())  # naive: the machine's local time
            return int(start.replace(tzinfo=self.local_zone).timestamp())
        except (OverflowError, ValueError, OSError):
            return None  # year 1 or 9999 in a zone that moves it off the calendar

    def transactions(
        self,
        *,
        limit: int = 50,
        before: int | None = None,
        kind: str | None = None,
        external_ref: str | None = None,
        attention: bool = False,
        search: str = "",
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The merchant's list: views newest first and the cursor of the next (older) page
        (None: no more). `search` as :func:`terminal.domain.records.parse_search` reads it
        in the terminal's currency; `date_from` / `date_to`: days in the terminal's local
        zone (:attr:`local_zone`), both included."""
        exponent = currency(self.params.terminal.currency_code).exponent
        records, cursor = self.journal.page(
            limit=limit,
            before=before,
            kind=kind,
            external_ref=external_ref,
            attention=attention,
            query=parse_search(search, exponent),
            since=self._local_midnight(date_from),
            until=None
            if date_to is None or date_to == date.max
            else self._local_midnight(date.fromordinal(date_to.toordinal() + 1)),
        )
        return [self.view(r) for r in records], cursor

    def get(self, txn_id: str) -> TxnRecord:
        record = self.journal.get(txn_id)
        if record is None:
            raise NotFoundError(
                f"no transaction {txn_id!r} on this terminal", reason="no_transaction"
            )
        return record

    @property
    def current(self) -> str | None:
        return self._current

    def queue_summary(self) -> QueueSummary:
        return self.queue.summary(self._unix())

    def status(self) -> dict[str, Any]:
        summary = self.queue_summary()
        strings = ui_strings(self.language)
        offline = self.params.offline
        accepting = offline is not None and offline.enabled and self._enrolled()
        code = self.params.terminal.currency_code
        return {
            "terminal_id": self.terminal_id,
            "host_online": self.host_online,
            # What the banner says: the link as the last exchange showed it, since when, why.
            "host": {
                "online": self.host_online,
                "since": None if self.host_since is None else _now_text(self.host_since),
                "last_failure": self.host_failure,
                "last_failure_text": strings.get(f"host_failure_{self.host_failure}", "")
                if self.host_failure
                else "",
            },
            "offline_acceptance": {
                "enabled": accepting,
                "max_amount": offline.max_transaction_amount if accepting and offline else None,
                "currency": code,
                "max_amount_text": format_amount(offline.max_transaction_amount, code)
                if accepting and offline
                else "",
            },
            "busy": self._current is not None,
            "current": self._current,
            "queue": summary.to_json()
            | {
                "text": [
                    format_amount(amount, cur) for cur, amount in sorted(summary.amounts.items())
                ]
            },
            "pending_reversals": len(self.journal.pending_reversals()),
            # Offline sales the bank declined after the fact that the merchant has not
            # acknowledged yet: the banner shows while this is above 0.
            "offline_declines": {
                "unacknowledged": len(self.journal.declined_after_the_fact(unacknowledged=True))
            },
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
            "contactless_limits": self.contactless_limits(),
            # The page's sounds and spoken announcement of the approved amount (parameters
            # terminal.sounds, terminal.announce_amount; off by default, sounds on).
            "announce": self.params.terminal.announce_amount,
            "sounds": self.params.terminal.sounds,
        } | dict(self.extra_status())

    def contactless_limits(self) -> list[dict[str, Any]]:
        """Per configured application: its Reader Contactless Transaction Limit (EMV
        Contactless Book A v2.10 §5.7; Book C-2 DF8124, "no on-device CVM"; Book C-3
        Reader Contactless Transaction Limit), the amount from which a card of that brand
        cannot pay contactless, and the higher limit for a phone that verifies its holder
        (C-2 DF8125, on-device CVM; None when not configured). An AID without a limit
        (0) is left out.

        `refused_from` is the first amount the reader refuses, as the AID's kernel compares:
        Entry Point for Kernel 3 and the others refuses at "amount greater than or equal to"
        the limit (Book B v2.10 §3.1.1.6), so from the limit itself; Kernel 2 checks its own
        limits, "greater than" (Book C-2 v2.10 S456.14), so from one minor unit above it
        (the same for its on-device CVM limit: `on_device_cvm_refused_from`)."""
        code = self.params.terminal.currency_code
        limits = []
        for aid in self.params.aids:
            amount = aid.limits.contactless_transaction
            if amount <= 0:
                continue
            on_device = aid.limits.contactless_transaction_on_device_cvm
            above = 1 if aid.kernel_id == KERNEL_MASTERCARD else 0
            refused_from = amount + above
            on_device_from = None if on_device is None else on_device + above
            limits.append(
                {
                    "brand": aid.label,
                    "brand_text": brand_text(aid.label, self.language),
                    "aid": aid.aid.hex().upper(),
                    "kernel_id": aid.kernel_id,
                    "amount": amount,
                    "text": format_amount(amount, code),
                    "refused_from": refused_from,
                    "refused_from_text": format_amount(refused_from, code),
                    "on_device_cvm_amount": on_device,
                    "on_device_cvm_text": ""
                    if on_device is None
                    else format_amount(on_device, code),
                    "on_device_cvm_refused_from": on_device_from,
                    "on_device_cvm_refused_from_text": ""
                    if on_device_from is None
                    else format_amount(on_device_from, code),
                }
            )
        return limits

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

    def _release(self) -> None:
        with self._state_lock:
            self._current = None
            self._cancellable = False
            self._stop_wait = None
        self._busy.release()

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

    def _transition(
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
        (:data:`terminal.domain.records.MOVES`) from the state as stored, inside the write
        transaction (never from a copy that may be stale), committed with what it changes in
        its sale and any reversal it owes, then published, so what anyone sees is on disk
        first. The final state of the transaction the terminal is busy with is published
        once the terminal is free again (:meth:`_holding`): a register that reacts to the
        result at once is not told "busy"."""

        def allowed(stored: TxnRecord) -> None:
            check_move(stored.kind, stored.state, state)

        if result is not None:
            changes["result"] = str(result)
        if reason is not None:
            changes["reason"] = reason
        if state is not State.IN_PROGRESS:
            changes.setdefault("stage", Stage.DONE)
        new = self.journal.update(
            record,
            expect=allowed,
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

    def _publish_final(self) -> None:
        final, self._final = self._final, None
        if final is not None:
            self._publish(final)

    def _link(self, online: bool | None, failure: str = "") -> None:
        """What the last exchange said of the link to the acquirer (None: nothing). Only
        evidence moves it: a signed answer (True), an unanswered or refused request (False,
        with the failure's code); doing nothing with the host never does."""
        if online is None:
            return
        if online is not self.host_online:
            self.host_since = self._now()
        self.host_online = online
        if not online:
            self.host_failure = failure or "no_answer"

    def _publish_status(self) -> None:
        # Computed and published in one step: two threads publishing at once (a sync, the
        # demo's acquirer switch) publish in the order they looked, so the last status
        # event is never an older picture than the one before it.
        with self._status_publish_lock:
            self.events.publish("status", self.status())

    def publish_status(self) -> None:
        """Tell every follower of the event stream the terminal's status now (something
        outside the checkout changed what it shows: the demo's simulated acquirer)."""
        self._publish_status()

    def _check_amount(self, amount: int, currency_code: int) -> None:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise RequestError(
                "amount must be an integer number of minor units", reason="amount_not_integer"
            )
        if amount <= 0:
            raise RequestError(
                f"amount must be positive, got {amount}", reason="amount_not_positive"
            )
        if amount > MAX_EMV_AMOUNT:
            raise RequestError(
                f"amount {amount} exceeds the EMV maximum {MAX_EMV_AMOUNT}",
                reason="amount_too_large",
            )
        try:
            currency(currency_code)
        except UnknownCurrencyError as exc:
            raise RequestError(str(exc), reason="unknown_currency") from exc
        if currency_code != self.params.terminal.currency_code:
            raise RequestError(
                f"currency {currency_code:03d} is not accepted: this terminal takes "
                f"{currency(self.params.terminal.currency_code).alpha} "
                f"({self.params.terminal.currency_code:03d})",
                reason="wrong_currency",
            )

    def _finish(
        self, record: TxnRecord, state: State, result: Result, reason: str = "", **changes: Any
    ) -> TxnRecord:
        """End `record` in a final state (a :meth:`_transition` with its result and reason)."""
        return self._transition(record, state, result, reason, **changes)

    def _fail(self, record: TxnRecord, exc: AcquirerError) -> TxnRecord:
        """End `record` as the acquirer error table says, and note what it says of the link.
        An authorisation whose reversal is not acknowledged yet keeps that reversal, in the
        same commit as the decline, for :meth:`retry_reversals`."""
        failure = failure_for(record.kind, exc)
        self._link(failure.online, link_failure(exc))
        return self._finish(
            record,
            failure.state,
            failure.result,
            failure.reason(exc),
            outcome_unknown=failure.unknown,
            reversal_key=exc.idempotency_key if isinstance(exc, ReversalPendingError) else "",
        )

    def _signed_record(self, record: TxnRecord, captured_at: int) -> tuple[bytes, bytes, str]:
        """The terminal's signature over what it approved offline (no card data in it)."""
        body = offline_record(
            transaction_id=record.id,
            terminal_id=self.terminal_id,
            amount=record.amount,
            currency=record.currency,
            captured_at=captured_at,
            masked_pan=record.masked_pan,
            aid=record.aid,
            cryptogram=record.cryptogram,
            atc=record.atc,
        )
        if self._signer is None:
            return body, b"", ""
        return body, self._signer.sign(body), self._signer.key_id

    def _left_to_refund(self, record: TxnRecord) -> int:
        """What of an approved sale has not been refunded (0: voided, declined, not a
        sale), whether or not the bank can refund it yet."""
        if record.kind is not Kind.SALE or record.voided:
            return 0
        if record.state not in APPROVED_STATES or record.declined_after_the_fact:
            return 0  # a sale the bank declined after the fact brought no money in
        return record.amount - record.refunded_amount

    def _refundable(self, record: TxnRecord) -> int:
        """What can be refunded now: nothing of an offline sale still waiting in the queue
        (the bank has not got it, so it has nothing to refund against)."""
        if record.offline_status == "waiting":
            return 0
        return self._left_to_refund(record)

    def _voidable(self, record: TxnRecord) -> bool:
        return (
            record.kind is Kind.SALE
            and record.state is State.APPROVED
            and not record.voided
            and not record.batch_id
            and record.refunded_amount == 0
            and bool(record.host_ref)
        )

    def close(self, timeout: float = 2.0) -> None:
        """Stop taking payments. A sale waiting for a card or a code, or reading a card
        (whatever the card does), is cancelled and recorded so within moments; one being
        completed (authorised, stored) gets `timeout` seconds, then the terminal stops
        anyway (SIGTERM must stop it within 3 s) and :meth:`recover` settles that sale
        truthfully at the next start, as after a power cut."""
        with self._state_lock:
            if self._current is not None and self._cancellable:
                self._cancel.set()
                if self._stop_wait is not None:
                    self._stop_wait.set()
        if self._worker is not None:
            self._worker.join(timeout=timeout)
            if self._worker.is_alive():
                log.warning(
                    "transaction %s still running after %g s; stopping anyway (recovered at "
                    "the next start)",
                    self._current,
                    timeout,
                )
