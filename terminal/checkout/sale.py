"""A card sale: wait for a card (or a code on the scanner), run the kernel, go online when
the card asks for it, store and forward when the host cannot be reached."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

from drivers.base import CardReader
from drivers.errors import CancelledError, DriverError, ReaderTimeoutError
from drivers.scanner import CodeScanner, ScanRejectedError
from emv.carddata import CardAccount, CardAccountError, read_account
from emv.kernel import CardData, CryptogramKind, Outcome, OutcomeKind
from emv.kernel.outcome import Start
from emv.qr.classify import classify
from emv.qr.errors import QrError
from emv.qr.wallet import WalletCodeTable
from offline_queue.limits import OfflineDecision
from offline_queue.model import CardData as QueueCardData
from offline_queue.model import OfflinePayment

from ..acquirer.client import (
    AcquirerError,
    AuthorisationRequest,
    AuthOutcome,
    HostUnreachable,
    NotEnrolledError,
)
from ..domain.currency import MAX_EMV_AMOUNT, format_amount
from ..domain.messages import Result, restart_text, ui_strings
from ..domain.records import Kind, Method, Stage, State, TxnRecord
from ..domain.tips import MAX_TIP_PERCENT, TipSettings, tip_for
from .card_session import CardConversation, CardSessionResult, new_request
from .codes import _ENTRY_MODES, CodePayments
from .core import SALE_METHODS, _now_text
from .errors import NotFoundError, RequestError, StateError

__all__ = ["Sales"]

log = logging.getLogger(__name__)


#: How many times one sale lets the card ask for another tap (an outcome with Start B, EMV
#: Contactless Book B v2.10 §3.5: "see phone", removed too early). The bound is the
#: terminal's: each tap needs the cardholder to act, so a phone whose verification keeps
#: failing, or a hand that keeps pulling the card away, must not hold the counter until the
#: card timeout. Three covers a phone unlocked at the second try and an unsteady tap; then
#: the sale ends as a single Try Again would, and the merchant starts a new one.
MAX_RESTARTS: Final = 3


#: Card data that never goes into the `emv` map sent to the host or the queue: the PAN,
#: track data, name and expiry travel in their own (encrypted / TLS-only) fields.


def _account(card: Mapping[int, bytes]) -> CardAccount | None:
    """The card's account data by the kernel's own reader (emv.carddata): the number the
    kernel vetted is the number sent. None when the card gave none or it is malformed (the
    kernel ends such a transaction itself; this is the checkout's guard)."""
    try:
        return read_account(card)
    except CardAccountError as exc:
        log.warning("card account data refused: %s", exc)
        return None


def _emv_map(card: CardData) -> dict[str, bytes]:
    return {f"{tag:X}": value for tag, value in card.icc_data().items()}


class Sales(CodePayments):
    """Starting, waiting for, cancelling and running sales."""

    #: Tip entry (off by default): a card sale first waits for the customer's tip
    #: (Stage.WAITING_FOR_TIP, :meth:`set_tip`). Set by the composition (pipos run --tips,
    #: the configuration file's checkout.tips).
    tips: TipSettings = TipSettings()
    #: The sale waiting for its tip, until :meth:`set_tip` takes one or the wait ends.
    _awaiting_tip: str | None = None

    def start_sale(
        self,
        amount: int,
        currency_code: int | None = None,
        *,
        external_ref: str = "",
        method: str = "card",
        tip_amount: int | None = None,
    ) -> TxnRecord:
        """Begin a sale and return at once; progress arrives as events and in the journal.

        `method` "card" waits for a card or a scanned code; "merchant_qr" shows the
        terminal's dynamic EMVCo code for the amount and waits for the phone to pay it.
        With tip entry on, a card sale first waits for the tip (:meth:`set_tip`), unless
        `tip_amount` is given (the register asked the customer): the card is then asked
        for `amount` + `tip_amount` at once.
        """
        code = self.params.terminal.currency_code if currency_code is None else currency_code
        self._check_amount(amount, code)
        if method not in SALE_METHODS:
            raise RequestError(
                f"unknown payment method {method!r}: one of {SALE_METHODS}",
                reason="unknown_method",
            )
        fields: dict[str, Any] = {}
        stage = Stage.WAITING_FOR_TIP if self.tips.enabled else Stage.WAITING_FOR_CARD
        if tip_amount is not None:
            self._check_tip(amount, tip_amount, code)
            fields = {"tip_amount": tip_amount}
            amount += tip_amount
            stage = Stage.WAITING_FOR_CARD
        entry_mode = "contactless"
        if method == Method.MERCHANT_QR:
            fields |= self._merchant_qr_fields(amount)  # a tip given with the sale stays
            stage = Stage.OPENING_ORDER
            entry_mode = _ENTRY_MODES["mpm"]
        return self._start_at_reader(
            Kind.SALE, amount, code, external_ref, stage=stage, entry_mode=entry_mode, **fields
        )

    def _start_at_reader(
        self,
        kind: Kind,
        amount: int,
        code: int,
        external_ref: str,
        *,
        stage: Stage = Stage.WAITING_FOR_CARD,
        entry_mode: str = "contactless",
        **fields: Any,
    ) -> TxnRecord:
        """Journal a transaction run at the reader (a sale; a pre-authorisation, which runs
        the card the same way) and start its worker; the amount is checked already."""
        self._claim()
        try:
            now = _now_text(self._now())
            record = self.journal.insert(
                TxnRecord(
                    id=self._new_id("S" if kind is Kind.SALE else "P"),
                    kind=kind,
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
                self._awaiting_tip = record.id if stage is Stage.WAITING_FOR_TIP else None
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
        """Stop waiting for a card or a code, or for the card being read: whatever the card
        does, the sale ends cancelled within moments (the card's conversation is abandoned,
        what it may still answer is dropped). Refused once the card has given its outcome
        (the payment is being completed). A code payment can be cancelled until it is final:
        its order is cancelled with the acquirer (and reversed if the wallet paid meanwhile),
        so nothing is charged."""
        with self._state_lock:
            current = self._current
            if current is None or (txn_id is not None and txn_id != current):
                target = txn_id or "(none)"
                record = self.journal.get(target) if txn_id else None
                if record is not None and record.finished:
                    raise StateError(
                        f"transaction {target} has already finished ({record.state})",
                        reason="already_finished",
                    )
                raise NotFoundError(f"no transaction {target} is running", reason="not_running")
            if not self._cancellable:
                raise StateError(
                    "too late to cancel: the card has been read and the payment is being completed",
                    reason="too_late_to_cancel",
                )
            self._cancel.set()
            if self._stop_wait is not None:
                self._stop_wait.set()
        return self.get(current)

    def _check_tip(self, base: int, tip: int, currency: int) -> None:
        if isinstance(tip, bool) or not isinstance(tip, int) or tip < 0:
            raise RequestError(
                "tip_amount must be a whole number of minor units, 0 or more",
                reason="tip_not_valid",
            )
        if tip > tip_for(base, MAX_TIP_PERCENT):
            # The presets' own ceiling: a typed tip above the sale itself is a slip of the
            # finger (an extra zero), not a tip; the customer is asked again.
            raise RequestError(
                f"a tip of {format_amount(tip, currency)} is more than the sale's amount "
                f"({format_amount(base, currency)})",
                reason="tip_too_large",
            )
        if base + tip > MAX_EMV_AMOUNT:
            raise RequestError(
                f"amount {base} with tip {tip} exceeds the EMV maximum {MAX_EMV_AMOUNT}",
                reason="amount_too_large",
            )

    def set_tip(self, txn_id: str, tip_amount: int) -> TxnRecord:
        """The customer's tip for the sale waiting for it (0: no tip): `tip_amount` is
        recorded, the amount becomes base + tip, and the sale waits for the card, in one
        commit (published). Refused (409) for a sale not waiting for its tip."""
        with self._state_lock:
            record = self.get(txn_id)
            if self._awaiting_tip != txn_id or self._cancel.is_set():
                if record.finished:
                    raise StateError(
                        f"transaction {txn_id} has already finished ({record.state})",
                        reason="already_finished",
                    )
                raise StateError(
                    f"transaction {txn_id} is not waiting for a tip ({record.stage or 'none'})",
                    reason="not_waiting_for_tip",
                )
            self._check_tip(record.amount, tip_amount, record.currency)
            record = self._transition(
                record,
                State.IN_PROGRESS,
                amount=record.amount + tip_amount,
                tip_amount=tip_amount,
                stage=Stage.WAITING_FOR_CARD,
            )
            self._awaiting_tip = None
            if self._stop_wait is not None:
                self._stop_wait.set()  # the worker's wait for the tip ends: the card's begins
        log.info("sale %s: tip %s", txn_id, format_amount(tip_amount, record.currency))
        return record

    def _wait_for_tip(self, record: TxnRecord, cancel: threading.Event) -> TxnRecord:
        """Wait (the card timeout at most) for :meth:`set_tip` or the merchant's cancel,
        the reader not armed yet. Returns the sale as it then stands: waiting for the card
        (with its tip), or finished (cancelled)."""
        with self._state_lock:
            wake = self._stop_wait or threading.Event()
            if cancel.is_set():
                wake.set()
        wake.wait(self._card_timeout)
        with self._state_lock:
            timed_out = self._awaiting_tip == record.id
            self._awaiting_tip = None
            # A fresh event for the card's wait (cancel() sets whichever is current).
            self._stop_wait = threading.Event()
            if cancel.is_set():
                self._stop_wait.set()
        if cancel.is_set() and self.get(record.id).stage is Stage.WAITING_FOR_TIP:
            return self._finish(record, State.CANCELLED, Result.CANCELLED)
        if timed_out:
            return self._finish(
                record,
                State.CANCELLED,
                Result.CANCELLED,
                f"no tip chosen within {self._card_timeout:g} s",
            )
        return self.get(record.id)

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
                    self._transition(
                        current, State.FAILED, Result.READER_ERROR, "internal error; see the log"
                    )

    def _run_sale(self, record: TxnRecord, cancel: threading.Event) -> TxnRecord:
        if record.method is Method.MERCHANT_QR:
            return self._run_merchant_qr(record, cancel)
        if record.stage is Stage.WAITING_FOR_TIP:
            record = self._wait_for_tip(record, cancel)
            if record.finished:
                return record
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
            # One card timeout for the whole sale: a second tap gets what is left of it.
            deadline = time.monotonic() + self._card_timeout
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
            record, result = self._read_card(record, reader)
            restarts = 0
            while result is not None and result.outcome.start is Start.B:
                if restarts >= MAX_RESTARTS:
                    break
                restarts += 1
                record, ended = self._tap_again(record, reader, result.outcome, restarts, deadline)
                if ended:
                    return record
                record, result = self._read_card(record, reader)
            if result is None:
                reader = None  # the abandoned conversation closes it when it returns
                return record
        finally:
            if scanner is not None:
                scanner.close()
            if reader is not None:
                reader.close()
        return self._after_card(record, result.outcome, result.fault)

    def _read_card(
        self, record: TxnRecord, reader: CardReader
    ) -> tuple[TxnRecord, CardSessionResult | None]:
        """One kernel transaction with the card in the field (a fresh one for every tap:
        Book B §3.5 Start B begins again at protocol activation, with a new request).

        The conversation runs in its own thread (card_session.CardConversation) while this
        one waits for it, the merchant's cancel or the card read deadline, whichever comes
        first. Returns the card's result, or None when the sale has ended (cancelled, the
        card too slow, a fault) and `record` is final; the reader then belongs to the
        abandoned conversation, which closes it."""
        record = self._transition(record, record.state, stage=Stage.READING_CARD)
        request = new_request(
            record.amount,
            currency=record.currency,
            clock=self._clock,
            random_bytes=self._random,
            reader=reader,
        )
        cancel = self._cancel
        done = threading.Event()
        taken: list[CardSessionResult] = []
        gave_up = False

        def accept(result: CardSessionResult) -> bool:
            # Called by the conversation's thread. Under the lock cancel() takes: either the
            # card's outcome is in first (then it is too late to cancel), or the cancel (or
            # the deadline) is, and the outcome is dropped, whatever it says.
            with self._state_lock:
                if gave_up or cancel.is_set():
                    return False
                self._cancellable = False
                taken.append(result)
                return True

        with self._state_lock:
            self._stop_wait = done  # cancel() sets it: the wait below ends at once
            self._cancellable = True  # nothing is decided while the card is read
            if cancel.is_set():
                done.set()
        conversation = CardConversation(
            reader, self.params, request, accept=accept, done=done
        ).start()
        done.wait(self._card_read_timeout)
        with self._state_lock:
            if taken:
                return record, taken[0]
            gave_up = True
            cancelled = cancel.is_set()
            # Read under the lock: a conversation that finishes from here on was refused.
            faulted = conversation.exited
            self._cancellable = False  # ending now
        conversation.abandon()
        if cancelled:
            log.info("sale %s: cancelled while the card was read", record.id)
            return self._finish(record, State.CANCELLED, Result.CANCELLED), None
        if faulted:
            # The conversation ended without an outcome: a fault, logged by its thread.
            return self._finish(
                record, State.FAILED, Result.READER_ERROR, "internal error; see the log"
            ), None
        log.warning(
            "sale %s: no outcome from the card within %g s; conversation abandoned",
            record.id,
            self._card_read_timeout,
        )
        return self._finish(
            record,
            State.DECLINED,
            Result.CARD_TOO_SLOW,
            f"no answer from the card within {self._card_read_timeout:g} s",
        ), None

    def _tap_again(
        self,
        record: TxnRecord,
        reader: CardReader,
        outcome: Outcome,
        restarts: int,
        deadline: float,
    ) -> tuple[TxnRecord, bool]:
        """The card asked for another tap (Start B): say what it said, wait for it to leave
        the field and come back within what is left of the sale's card timeout, the
        merchant's cancel stopping the wait as it stops the first one.

        Returns the record and whether the sale has ended (cancelled, no card, a reader
        failure); when it has not, the card is in the field again."""
        message = restart_text(outcome.message, self.language)
        log.info(
            "sale %s: the card asks for another tap (%s), %d of %d",
            record.id,
            outcome.reason or outcome.kind,
            restarts,
            MAX_RESTARTS,
        )
        stop = threading.Event()
        with self._state_lock:
            self._stop_wait = stop
            self._cancellable = True  # nothing is being read: the merchant may cancel again
            if self._cancel.is_set():
                stop.set()
        # What the card gave is committed with the move, whatever comes next.
        record = self._transition(
            record, record.state, stage=Stage.WAITING_FOR_CARD_AGAIN, **self._card_fields(outcome)
        )
        self.events.publish(
            "restart",
            {"id": record.id, "message": message, "reason": outcome.reason, "restarts": restarts},
        )
        problem, timed_out = "", False
        try:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                reader.wait_for_removal(timeout=remaining, cancel=stop)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReaderTimeoutError("no card presented again in time")
            reader.wait_for_card(timeout=remaining, cancel=stop)
        except (CancelledError, ReaderTimeoutError) as exc:
            problem = str(exc) or "no card presented again in time"
            timed_out = True
        except DriverError as exc:  # the reader failed while the card was away
            problem = str(exc)
        with self._state_lock:
            if self._cancel.is_set():
                return self._finish(record, State.CANCELLED, Result.CANCELLED), True
            if not problem:
                return record, False  # the card is back: read it (still cancellable)
        if timed_out:
            return self._finish(record, State.CANCELLED, Result.NO_CARD, problem), True
        return self._finish(record, State.FAILED, Result.READER_ERROR, problem), True

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
                    # `message` is for the merchant, in the terminal's language; `reason` is
                    # the scanner's own words, for the technician.
                    self.events.publish(
                        "scan_rejected",
                        {
                            "id": record.id,
                            "message": ui_strings(self.language)["scan_rejected"],
                            "reason": f"code not read: {exc}",
                        },
                    )
                    continue
                except (CancelledError, ReaderTimeoutError):
                    return
                except DriverError as exc:
                    log.warning("code scanner failed: %s", exc)
                    scan_problem.append(str(exc))
                    return
                damage = _damaged_read(code, self.qr_params.wallet_table)
                if damage:
                    # A payment code read with a character lost or misread: the customer
                    # holds the phone again; the sale goes on.
                    self.events.publish(
                        "scan_rejected",
                        {
                            "id": record.id,
                            "message": ui_strings(self.language)["scan_rejected"],
                            "reason": f"code not read: {damage}",
                        },
                    )
                    continue
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

    def _after_card(self, record: TxnRecord, outcome: Outcome, fault: str = "") -> TxnRecord:
        """`fault`: what the reader said when it failed mid-conversation (the reason then)."""
        kind = outcome.kind
        # What the card gave goes into the journal with the next commit, whatever it is.
        fields = self._card_fields(outcome)
        if kind in (OutcomeKind.APPROVED, OutcomeKind.ONLINE_REQUEST):
            account = _account(outcome.card_data)
            if account is None:
                return self._finish(
                    record, State.DECLINED, Result.TRY_AGAIN, "card gave no valid PAN", **fields
                )
            if kind is OutcomeKind.ONLINE_REQUEST:
                return self._go_online(record, outcome, account, fields)
            if record.kind is Kind.PREAUTH:  # a hold is the bank's to give, never the card's
                return self._finish(
                    record,
                    State.DECLINED,
                    Result.PREAUTH_DECLINED,
                    "the card approved offline; a pre-authorisation needs the bank",
                    **fields,
                )
            # The card approved offline (TC): the payment still has to reach the acquirer, so
            # it goes through the queue; a refusal there is a decline, never a silent accept.
            return self._store_offline(record, outcome, account, fields, online_failed=False)
        reason = fault or outcome.reason or outcome.detail
        if kind is OutcomeKind.DECLINED:
            return self._finish(record, State.DECLINED, Result.DECLINED_BY_CARD, reason, **fields)
        if kind is OutcomeKind.TRY_AGAIN or outcome.start is Start.B:
            # Start B here: the card asked for one tap more than a sale allows.
            if outcome.start is Start.B:
                reason = f"{reason}; the card asked for another tap after {MAX_RESTARTS} already"
            return self._finish(record, State.DECLINED, Result.TRY_AGAIN, reason, **fields)
        if kind is OutcomeKind.TRY_ANOTHER_INTERFACE:
            return self._finish(
                record, State.DECLINED, Result.TRY_ANOTHER_INTERFACE, reason, **fields
            )
        return self._finish(record, State.DECLINED, Result.CARD_NOT_SUPPORTED, reason, **fields)

    def _go_online(
        self,
        record: TxnRecord,
        outcome: Outcome,
        account: CardAccount,
        fields: Mapping[str, Any],
    ) -> TxnRecord:
        card = outcome.card_data
        # A pre-authorisation is never taken offline: without the bank nothing is held.
        hold = record.kind is Kind.PREAUTH
        if self._acquirer is None:
            if hold:
                return self._finish(
                    record, State.DECLINED, Result.PREAUTH_DECLINED, "not connected to a bank"
                )
            return self._store_offline(record, outcome, account, fields, online_failed=True)
        # Why the queue would not take this sale offline, once it has been asked.
        over_limits: OfflineDecision | None = None
        if self.host_online is False and not hold:
            # The last exchange with the bank went unanswered or was refused: until a signed
            # answer says it is back (a sync, a reversal, an echo: reconciliation), a sale
            # within the offline limits does not wait for another request to fail (and owe
            # another reversal) but goes offline, as a refused connection does.
            offline = self.params.offline
            if offline is not None and offline.enabled:
                if not self._enrolled():  # declined as an offline payment it could not send
                    return self._store_offline(record, outcome, account, fields, online_failed=True)
                log.info("sale %s: the bank is not answering; trying offline", record.id)
                record, decision = self._admit_offline(record, outcome, account, fields)
                if decision.allowed:
                    return self._finish(
                        record,
                        State.APPROVED_OFFLINE,
                        Result.APPROVED_OFFLINE,
                        offline_id=record.id,
                    )
                over_limits = decision
            # One the terminal cannot take offline (over the limits, or offline acceptance
            # off) is still the bank's to answer: it may be back, and only its answer says
            # so. If it is not, the sale ends as an unanswered one ends (reversed as always).
            log.info("sale %s: cannot be taken offline; asking the bank all the same", record.id)
        key = self._acquirer.new_idempotency_key("auth")
        # The key is on disk before the request leaves (with what the card gave, in the
        # same commit): after a crash, recovery can reverse it.
        record = self._transition(
            record, record.state, stage=Stage.AUTHORISING, idempotency_key=key, **fields
        )
        request = AuthorisationRequest(
            amount=record.amount,
            currency=record.currency,
            pan=account.pan,
            pan_sequence=account.pan_sequence,
            expiry=account.expiry,
            brand=outcome.label or None,
            aid=record.aid or None,
            emv=_emv_map(card),
            kind="preauth" if hold else None,
        )
        try:
            answer = self._acquirer.authorise(request, idempotency_key=key)
        except (HostUnreachable, NotEnrolledError) as exc:
            self._link(False, "unreachable")
            if hold:
                return self._finish(
                    record, State.DECLINED, Result.PREAUTH_DECLINED, f"bank unreachable: {exc}"
                )
            if over_limits is not None:  # offline was asked first, and said no
                log.info(
                    "sale %s: acquirer unreachable (%s), over the offline limits", record.id, exc
                )
                return self._finish(
                    record, State.DECLINED, Result.DECLINED_OFFLINE_LIMIT, over_limits.message
                )
            log.info("sale %s: acquirer unreachable (%s); trying offline", record.id, exc)
            return self._store_offline(record, outcome, account, fields, online_failed=True)
        except AcquirerError as exc:
            return self._fail(record, exc)
        if answer.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE:
            # The reversal was answered, the authorisation was not: the next sales go
            # offline rather than lose (and reverse) their authorisations too.
            self._link(False, "no_answer")
        else:
            self._link(True)
        if answer.outcome is AuthOutcome.APPROVED:
            return self._finish(
                record,
                State.APPROVED,
                Result.PREAUTH_APPROVED if hold else Result.APPROVED,
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

    def _store_offline(
        self,
        record: TxnRecord,
        outcome: Outcome,
        account: CardAccount,
        fields: Mapping[str, Any],
        *,
        online_failed: bool,
    ) -> TxnRecord:
        offline = self.params.offline
        if online_failed and (offline is None or not offline.enabled):
            return self._finish(record, State.DECLINED, Result.DECLINED_OFFLINE_DISABLED, **fields)
        if not self._enrolled():
            # Without a terminal id and host key the payment could never be uploaded: the
            # customer would leave "approved" and the merchant never be paid.
            log.warning("sale %s: offline payment refused, the terminal is not enrolled", record.id)
            return self._finish(
                record,
                State.DECLINED,
                Result.DECLINED_NOT_ENROLLED,
                "terminal not enrolled",
                **fields,
            )
        record, decision = self._admit_offline(record, outcome, account, fields)
        if not decision.allowed:
            result = Result.DECLINED_OFFLINE_LIMIT if online_failed else Result.DECLINED_BY_CARD
            return self._finish(record, State.DECLINED, result, decision.message)
        result = Result.APPROVED_OFFLINE if online_failed else Result.APPROVED
        return self._finish(record, State.APPROVED_OFFLINE, result, offline_id=record.id)

    def _admit_offline(
        self,
        record: TxnRecord,
        outcome: Outcome,
        account: CardAccount,
        fields: Mapping[str, Any],
    ) -> tuple[TxnRecord, OfflineDecision]:
        """Sign the sale and offer it to the offline queue, which stores it durably when the
        limits allow (the record, moved to the storing stage, and the queue's decision).
        The sale is not finished here: the caller says how it ends."""
        card = outcome.card_data
        # The record the terminal signs below carries the card's fields: committed here.
        record = self._transition(record, record.state, stage=Stage.STORING, **fields)
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
        return record, self.queue.admit(payment, card_approves_offline=card_ok, now=captured_at)


def _damaged_read(code: str, table: WalletCodeTable) -> str:
    """Why a scanned text is a damaged read of a payment code ("" when it is not): a wallet
    or EMVCo code with a corrupt or missing part. Anything else goes on to be paid or
    refused with its own reason: a whole code the acquirer refuses (expired, used), a
    merchant's own code, text that is no payment code at all (a menu's web address)."""
    try:
        classify(code, table)
    except QrError as exc:
        if getattr(exc, "reason", "") in ("corrupt", "truncated"):
            return str(exc)
    return ""
