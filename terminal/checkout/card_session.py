"""The card part of a transaction: moves bytes between a reader and the sans-I/O kernel.

The kernel decides; this loop only carries APDUs, counts them, and turns a reader's
removal or failure into the kernel's own outcome for it (EMV Book B §3.5: a card removed
mid-transaction ends in Try Again), so a driver fault never surfaces as a traceback.

A card can also wedge: answer slowly, never answer, or keep its transport going. A reader's
``transceive`` may then block for as long as the card likes (pyscard's has no timeout), so
the checkout runs the conversation in a thread of its own, :class:`CardConversation`, and
waits for it with the sale's deadline and cancel in hand: giving up is one call
(:meth:`CardConversation.abandon`) that never blocks, and the conversation's late answer,
if one ever comes, is dropped, never read.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from drivers.base import CardReader
from drivers.errors import CardRemovedError, DriverError, TransportLoopError
from emv.capk import CaKeyStore, CaPublicKey
from emv.kernel import ContactlessTransaction, Outcome, OutcomeKind
from emv.kernel.config import (
    KERNEL_MASTERCARD,
    KERNEL_VISA,
    AidConfig,
    TerminalConfig,
    TransactionRequest,
)

from ..domain.params import AidParams, TerminalParams

log = logging.getLogger(__name__)

IMPLEMENTED_KERNELS = frozenset({KERNEL_MASTERCARD, KERNEL_VISA})

#: Seconds the whole card conversation of one tap may take (from the first command to the
#: kernel's outcome). EMV Contactless Book A v2.10 §5 expects a tap to be over in about half
#: a second and Book C-2's and C-3's own time limits are of that order; a card still talking
#: after this is wedged or far too slow, and the sale ends with "card took too long".
CARD_READ_TIMEOUT: Final = 5.0

Clock = Callable[[], datetime]
RandomBytes = Callable[[int], bytes]


def terminal_config(params: TerminalParams) -> TerminalConfig:
    """The kernel's view of the terminal's parameter file."""
    return TerminalConfig(data=params.terminal.emv_tags(), ttq=params.terminal.ttq)


def aid_config(aid: AidParams) -> AidConfig:
    """The kernel's view of one configured application: the named fields, the per-AID TTQ
    and status check, and the kernel data objects by tag (docs/parameters.md)."""
    limits = aid.limits
    return AidConfig(
        aid=aid.aid,
        kernel_id=aid.kernel_id,
        label=aid.label,
        partial_selection=aid.partial_selection,
        app_version=aid.application_version,
        contactless_transaction_limit=limits.contactless_transaction,
        contactless_floor_limit=limits.contactless_floor,
        cvm_required_limit=limits.cvm_required,
        terminal_floor_limit=aid.terminal_floor_limit,
        tac_denial=aid.tac_denial,
        tac_online=aid.tac_online,
        tac_default=aid.tac_default,
        random_selection_threshold=aid.random_selection.threshold,
        random_selection_target_percent=aid.random_selection.target_percent,
        random_selection_max_percent=aid.random_selection.max_target_percent,
        cdcvm_transaction_limit=limits.contactless_transaction_on_device_cvm,
        zero_amount_allowed=aid.zero_amount_allowed,
        ttq=aid.ttq,
        status_check=aid.status_check,
        extended_selection=aid.extended_selection,
        fdda_version_0=aid.fdda_version_0,
        kernel_data=aid.kernel_data,
    )


def supported_aids(params: TerminalParams) -> tuple[AidConfig, ...]:
    """The configured applications this terminal has a kernel for (Book B §3.3.2.6: a
    directory entry whose kernel the reader lacks is not a candidate)."""
    supported = []
    for aid in params.aids:
        if aid.kernel_id in IMPLEMENTED_KERNELS:
            supported.append(aid_config(aid))
        else:
            log.warning(
                "application %s (%s) needs kernel %d, which pipos does not implement; skipped",
                aid.aid.hex().upper(),
                aid.label,
                aid.kernel_id,
            )
    return tuple(supported)


def ca_key_store(params: TerminalParams) -> CaKeyStore:
    return CaKeyStore(
        CaPublicKey(key.rid, key.index, key.modulus, key.exponent, key.expiry, key.sha1)
        for key in params.ca_public_keys
    )


@dataclass(frozen=True, slots=True)
class CardSessionResult:
    outcome: Outcome
    apdu_count: int
    #: What the reader said when it failed (empty when the kernel reached its own outcome).
    fault: str = ""


def new_request(
    amount: int,
    *,
    currency: int,
    clock: Clock,
    random_bytes: RandomBytes = secrets.token_bytes,
    transaction_type: int = 0,
    reader: CardReader | None = None,
) -> TransactionRequest:
    """A request with the date, time and unpredictable number taken from the injected clock
    and random source, or from the reader's recorded transcript when it has one."""
    recorded = reader.recorded_inputs() if reader is not None else None
    if recorded is not None:
        un, date, time = recorded.unpredictable_number, recorded.date, recorded.time
    else:
        now = clock()
        un, date, time = random_bytes(4), now.strftime("%y%m%d"), now.strftime("%H%M%S")
    return TransactionRequest(
        amount=amount,
        currency=currency,
        transaction_type=transaction_type,
        date=date,
        time=time,
        unpredictable_number=un,
        random_selection=random_bytes(1)[0] % 100,
    )


def run_card_transaction(
    reader: CardReader,
    params: TerminalParams,
    request: TransactionRequest,
    *,
    ca_keys: CaKeyStore | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> CardSessionResult:
    """Run the kernel against the card in the reader's field until it reaches an outcome.

    `stop` is asked before every command: once it says so no more commands are sent (the
    conversation was abandoned) and the transaction ends as if the card had left."""
    transaction = ContactlessTransaction(
        terminal_config(params),
        supported_aids(params),
        request,
        ca_keys if ca_keys is not None else ca_key_store(params),
    )
    step = transaction.start()
    count = 0
    while isinstance(step, bytes):
        if stop():
            ended = replace(transaction.card_removed(), start=None, message=None)
            return CardSessionResult(ended, count, "the card conversation was abandoned")
        try:
            response = reader.transceive(step)
        except CardRemovedError:
            log.info("card removed after %d commands", count)
            return CardSessionResult(transaction.card_removed(), count)
        except TransportLoopError as exc:
            # The card, not the reader, is at fault (it kept its transport going past the
            # driver's bound): tapping it again would do the same, so no second tap either.
            log.warning("card broke the transport after %d commands: %s", count, exc)
            ended = replace(
                transaction.card_removed(),
                kind=OutcomeKind.END_APPLICATION,
                reason="card_transport_error",
                start=None,
                message=None,
            )
            return CardSessionResult(ended, count, str(exc))
        except DriverError as exc:
            # The reader itself failed (unplugged, daemon gone): for the transaction this is
            # the same as losing the card (Book B §3.5.1.2), the merchant retries the tap.
            log.warning("reader failed after %d commands: %s", count, exc)
            # Not a tap to repeat on the same reader: no Entry Point restart (Start B).
            ended = replace(transaction.card_removed(), start=None, message=None)
            return CardSessionResult(ended, count, str(exc))
        count += 1
        step = transaction.feed(response)
    return CardSessionResult(step, count)


class CardConversation:
    """One tap's card conversation (:func:`run_card_transaction`) in a thread of its own.

    The thread gives its result to `accept` (called from that thread; it says whether the
    result is still wanted: the sale takes it under its own lock, so that either the result
    or a cancel wins, never both) and then sets `done`. Whoever gives up first calls
    :meth:`abandon`: the reader is told to stop (``CardReader.abort``, which never blocks),
    no further command is sent, and the reader is closed by whichever of the two finishes
    last, never by a thread that would wait for a stuck command.
    """

    def __init__(
        self,
        reader: CardReader,
        params: TerminalParams,
        request: TransactionRequest,
        *,
        accept: Callable[[CardSessionResult], bool],
        done: threading.Event,
        ca_keys: CaKeyStore | None = None,
    ) -> None:
        self._reader = reader
        self._params = params
        self._request = request
        self._ca_keys = ca_keys
        self._accept = accept
        self._done = done
        self._lock = threading.Lock()
        self._abandoned = False
        self._exited = False
        self.result: CardSessionResult | None = None
        self._thread = threading.Thread(target=self._run, name="card", daemon=True)

    def start(self) -> CardConversation:
        self._thread.start()
        return self

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    @property
    def exited(self) -> bool:
        """The conversation's thread has finished (with a result or a fault)."""
        return self._exited

    def _run(self) -> None:
        result: CardSessionResult | None = None
        try:
            result = run_card_transaction(
                self._reader,
                self._params,
                self._request,
                ca_keys=self._ca_keys,
                stop=lambda: self._abandoned,
            )
        except Exception:
            # A fault in the kernel, not an outcome: the sale's thread ends it as one.
            log.exception("card conversation failed")
        if result is not None and not self._abandoned and self._accept(result):
            self.result = result
        with self._lock:
            self._exited = True
            close = self._abandoned
        self._done.set()
        if close:
            self._close()

    def abandon(self) -> None:
        """Stop the conversation and drop whatever it may still answer; never blocks."""
        with self._lock:
            self._abandoned = True
            running = not self._exited
        if running:
            try:
                self._reader.abort()
            except DriverError as exc:  # best effort: the thread still closes it
                log.warning("could not stop the card reader: %s", exc)
        else:
            self._close()

    def _close(self) -> None:
        try:
            self._reader.close()
        except DriverError as exc:
            log.warning("closing the abandoned card reader failed: %s", exc)
