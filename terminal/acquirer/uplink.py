"""The terminal side of the offline queue: its key, its limits, and its link to the acquirer.

`offline_queue` knows nothing of the terminal; this module fills in what it needs:

* the card-data key, from the keystore (`Keystore.data_key(QUEUE_KEY_PURPOSE)`);
* the offline limits, from the downloaded terminal parameters (`limits_from_params`);
* a :class:`offline_queue.BatchUploader` over the acquirer link, either protocol
  (:class:`AcquirerUplink`, using `AcquirerLink.upload_offline`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from offline_queue import (
    Batch,
    BatchRejectedError,
    ItemOutcome,
    ItemResult,
    OfflineLimits,
    OfflineQueue,
    UplinkUnavailableError,
)

from ..domain.params import OfflineParams
from ..store.keys import Keystore
from .client import (
    BatchItemResult,
    HostFaultError,
    HostRejectedError,
    HostUnreachable,
    NotEnrolledError,
    OfflineItem,
    OutcomeUnknownError,
)
from .link import AcquirerLink

__all__ = [
    "QUEUE_KEY_PURPOSE",
    "AcquirerUplink",
    "limits_from_params",
    "open_queue",
]

QUEUE_KEY_PURPOSE: Final = "offline-queue/card-data"


def open_queue(path: str | os.PathLike[str], keystore: Keystore) -> OfflineQueue:
    """The terminal's queue, with the card-data key from its keystore."""
    return OfflineQueue.open(path, keystore.data_key(QUEUE_KEY_PURPOSE))


def limits_from_params(offline: OfflineParams | None, terminal_currency: int) -> OfflineLimits:
    """Offline limits from the parameter file's `offline` section (None: offline refused).

    The per-transaction limit is given in the terminal currency only, so only that currency
    (and only if it has a total limit) can be taken offline.
    """
    if offline is None or not offline.enabled:
        return OfflineLimits({}, {}, max_count=0, max_age_seconds=0, enabled=False)
    return OfflineLimits(
        max_transaction_amount={terminal_currency: offline.max_transaction_amount},
        max_total_amount=dict(offline.max_total_amount),
        max_count=offline.max_count,
        max_age_seconds=offline.max_age_hours * 3600,
    )


class AcquirerUplink:
    """A :class:`offline_queue.BatchUploader` over `AcquirerLink.upload_offline` (the pipos
    protocol's client, or the ISO 8583 link: one 0220 advice per payment, in order).

    The batch's idempotency key is sent as the request's Idempotency-Key and each payment's
    transaction id as its offline_id, so a resent batch is answered with the host's first
    result, and a payment sent again in another batch is answered as a duplicate.
    """

    def __init__(self, client: AcquirerLink) -> None:
        self._client = client

    def upload(self, batch: Batch) -> Sequence[ItemResult]:
        items = [
            OfflineItem(
                offline_id=i.transaction_id,
                amount=i.amount,
                currency=i.currency,
                pan=i.card.pan,
                pan_sequence=i.card.pan_sequence,
                expiry=i.card.expiry,
                brand=i.brand,
                aid=i.aid,
                emv={tag: bytes.fromhex(value) for tag, value in i.emv.items()},
                captured_at=i.captured_at,
                # The terminal's signature travels with the payment: the host checks it and
                # that the record says what the item says (docs/protocol.md).
                signed_record=i.signed_record,
                signature=i.signature,
                key_id=i.key_id,
            )
            for i in batch.items
        ]
        try:
            result = self._client.upload_offline(items, idempotency_key=batch.idempotency_key)
        except (HostUnreachable, OutcomeUnknownError, HostFaultError) as exc:
            raise UplinkUnavailableError(str(exc)) from exc
        except NotEnrolledError as exc:
            raise UplinkUnavailableError(f"{exc}; enrol it, then sync again") from exc
        except HostRejectedError as exc:
            # 400/422: this batch is invalid (or its key was reused for another body) and will
            # stay so; other refusals (authentication, sequence, rate) are about the terminal,
            # not the payments, so the batch waits to be resent as it is.
            if exc.status in (400, 422):
                raise BatchRejectedError(str(exc)) from exc
            raise UplinkUnavailableError(str(exc)) from exc
        return [_item_result(r) for r in result.items]


def _item_result(r: BatchItemResult) -> ItemResult:
    offline_id, ref, code = r.offline_id, r.transaction_ref, r.response_code
    if r.result == "refused":
        # The host refused the item itself (unsigned, wrongly signed, or not what its signed
        # record says): sending it again cannot change that, so it is kept, flagged, for a
        # technician, never retried.
        why = r.reason_code or "refused"
        return ItemResult(
            offline_id,
            ItemOutcome.FAILED,
            host_ref=ref,
            code=why,
            reason=f"refused by the host ({why}): {r.reason or 'no reason given'}",
        )
    # "duplicate" means the host already had this payment: its first status is the answer.
    duplicate = r.result == "duplicate"
    decided = r.status if duplicate else r.result
    if decided == "approved":
        return ItemResult(
            offline_id,
            ItemOutcome.ACCEPTED,
            host_ref=ref,
            code=code,
            reason=f"the host already had it (ref {ref}): not paid again" if duplicate else None,
            duplicate=duplicate,
        )
    if decided == "declined":
        return ItemResult(
            offline_id,
            ItemOutcome.DECLINED,
            host_ref=ref,
            code=code,
            reason=f"declined by the host after the fact (code {code or '?'})",
        )
    return ItemResult(
        offline_id, ItemOutcome.RETRY, host_ref=ref, code=code, reason=f"host status {decided!r}"
    )
