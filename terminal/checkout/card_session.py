"""The card part of a transaction: moves bytes between a reader and the sans-I/O kernel.

The kernel decides; this loop only carries APDUs, counts them, and turns a reader's
removal or failure into the kernel's own outcome for it (EMV Book B §3.5: a card removed
mid-transaction ends in Try Again), so a driver fault never surfaces as a traceback.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from drivers.base import CardReader
from drivers.errors import CardRemovedError, DriverError
from emv.capk import CaKeyStore, CaPublicKey
from emv.kernel import ContactlessTransaction, Outcome
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
) -> CardSessionResult:
    """Run the kernel against the card in the reader's field until it reaches an outcome."""
    transaction = ContactlessTransaction(
        terminal_config(params),
        supported_aids(params),
        request,
        ca_keys if ca_keys is not None else ca_key_store(params),
    )
    step = transaction.start()
    count = 0
    while isinstance(step, bytes):
        try:
            response = reader.transceive(step)
        except CardRemovedError:
            log.info("card removed after %d commands", count)
            return CardSessionResult(transaction.card_removed(), count)
        except DriverError as exc:
            # The reader itself failed (unplugged, daemon gone): for the transaction this is
            # the same as losing the card (Book B §3.5.1.2), the merchant retries the tap.
            log.warning("reader failed after %d commands: %s", count, exc)
            # Not a tap to repeat on the same reader: no Entry Point restart (Start B).
            ended = replace(transaction.card_removed(), start=None, message=None)
            return CardSessionResult(ended, count)
        count += 1
        step = transaction.feed(response)
    return CardSessionResult(step, count)
