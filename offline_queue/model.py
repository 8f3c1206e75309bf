"""Value types of the offline queue: payments going in, rows coming out, upload results."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from emv.pan import mask_pan

from .errors import InvalidPaymentError

__all__ = [
    "FINAL_STATES",
    "OUTSTANDING_STATES",
    "Batch",
    "BatchItem",
    "CardData",
    "ItemOutcome",
    "ItemResult",
    "OfflinePayment",
    "QueueStatus",
    "QueuedPayment",
    "State",
    "StateSummary",
    "validate_payment",
]

# Same alphabet as the acquirer protocol's identifiers (docs/protocol.md), so a transaction id
# can be used unchanged as the host's offline_id and as an idempotency key.
TXID_RE: Final = re.compile(r"[A-Za-z0-9._:~-]{1,128}")
_PAN_RE: Final = re.compile(r"[0-9]{12,19}")
_HEX_RE: Final = re.compile(r"(?:[0-9A-Fa-f]{2})*")
MAX_AMOUNT: Final = 999_999_999_999  # EMV n12 amount field (9F02)


class State(enum.StrEnum):
    """Life of a queued payment: pending -> sending -> accepted | declined | failed."""

    PENDING = "pending"  # stored, waiting for the host
    SENDING = "sending"  # part of a batch that may have reached the host; resent as is
    ACCEPTED = "accepted"  # the host took it (approved)
    DECLINED = "declined"  # the host declined it after the fact: kept and flagged
    FAILED = "failed"  # the host refused it as invalid: kept for a technician


OUTSTANDING_STATES: Final = (State.PENDING, State.SENDING, State.FAILED)
"""States whose money the merchant has not been paid yet (they count against offline limits)."""
FINAL_STATES: Final = (State.ACCEPTED, State.DECLINED, State.FAILED)


@dataclass(frozen=True, slots=True)
class CardData:
    """The sensitive card data kept (encrypted) until the host has the payment."""

    pan: str
    pan_sequence: int | None = None  # 5F34
    expiry: str | None = None  # YYMM from 5F24
    cardholder_name: str | None = None  # 5F20

    def __repr__(self) -> str:  # never show a full PAN, even in a traceback
        return f"CardData(pan={mask_pan(self.pan)!r}, ...)"


@dataclass(frozen=True, slots=True)
class OfflinePayment:
    """A payment approved offline, as the checkout hands it to the queue.

    `emv` maps tag (hex) to value (hex) - the data the issuer needs for clearing (9F26 TC,
    9F27, 9F10, 9F36, 95, 9A, 9C, 9F37, ...). It is encrypted together with the card data,
    since it may hold 5A/57. `signed_record` is the terminal-signed record and `signature`
    its Ed25519 signature (terminal keys); both are kept encrypted too.
    """

    transaction_id: str
    amount: int  # minor units
    currency: int  # ISO 4217 numeric
    card: CardData
    captured_at: int  # unix seconds, from the terminal clock at approval
    emv: Mapping[str, str] = field(default_factory=dict)
    brand: str | None = None
    aid: str | None = None  # hex
    signed_record: bytes = b""
    signature: bytes = b""
    key_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"OfflinePayment({self.transaction_id!r}, amount={self.amount}, "
            f"currency={self.currency:03d}, pan={mask_pan(self.card.pan)!r})"
        )


def validate_payment(p: OfflinePayment) -> None:
    """Raise InvalidPaymentError with the field and what was expected."""
    if not isinstance(p.transaction_id, str) or not TXID_RE.fullmatch(p.transaction_id):
        raise InvalidPaymentError(
            "transaction_id: expected 1-128 characters of A-Z a-z 0-9 . _ : ~ -, "
            f"got {p.transaction_id!r}"
        )
    if isinstance(p.amount, bool) or not isinstance(p.amount, int):
        raise InvalidPaymentError(f"amount: expected integer minor units, got {p.amount!r}")
    if not 0 < p.amount <= MAX_AMOUNT:
        raise InvalidPaymentError(f"amount: expected 1..{MAX_AMOUNT} minor units, got {p.amount}")
    if isinstance(p.currency, bool) or not isinstance(p.currency, int):
        raise InvalidPaymentError(f"currency: expected ISO 4217 numeric, got {p.currency!r}")
    if not 1 <= p.currency <= 999:
        raise InvalidPaymentError(f"currency: expected ISO 4217 numeric 001..999, got {p.currency}")
    if not isinstance(p.card.pan, str) or not _PAN_RE.fullmatch(p.card.pan):
        raise InvalidPaymentError("card.pan: expected 12 to 19 digits")
    if p.card.pan_sequence is not None and not 0 <= p.card.pan_sequence <= 99:
        raise InvalidPaymentError(f"card.pan_sequence: expected 0..99, got {p.card.pan_sequence}")
    if p.card.expiry is not None and not re.fullmatch(r"[0-9]{4}", p.card.expiry):
        raise InvalidPaymentError(f"card.expiry: expected YYMM, got {p.card.expiry!r}")
    if isinstance(p.captured_at, bool) or not isinstance(p.captured_at, int) or p.captured_at < 0:
        raise InvalidPaymentError(f"captured_at: expected unix seconds, got {p.captured_at!r}")
    for tag, value in p.emv.items():
        if not (tag and _HEX_RE.fullmatch(tag)) or not _HEX_RE.fullmatch(value):
            raise InvalidPaymentError(f"emv: tag {tag!r}: expected hex tag and hex value")
    if p.aid is not None and not (p.aid and _HEX_RE.fullmatch(p.aid) and len(p.aid) <= 32):
        raise InvalidPaymentError(f"aid: expected 1-16 bytes of hex, got {p.aid!r}")


@dataclass(frozen=True, slots=True)
class QueuedPayment:
    """One row of the queue as shown to the merchant: no card data beyond the masked PAN."""

    transaction_id: str
    state: State
    amount: int
    currency: int
    masked_pan: str
    brand: str | None
    aid: str | None
    captured_at: int
    created_at: int  # when it was queued
    updated_at: int
    sending_at: int | None  # last time it was put in a batch
    finished_at: int | None  # accepted / declined / failed
    attempts: int
    batch_id: str | None
    host_ref: str | None
    host_code: str | None
    reason: str | None  # why declined or failed, or the last retry reason
    flagged: bool  # declined after the fact or failed: the merchant must see it
    acknowledged_at: int | None
    imported: bool


@dataclass(frozen=True, slots=True)
class StateSummary:
    state: State
    count: int
    amounts: Mapping[int, int]  # ISO 4217 numeric -> total minor units
    oldest_created_at: int | None


@dataclass(frozen=True, slots=True)
class QueueStatus:
    now: int
    states: Mapping[State, StateSummary]
    flagged: int  # declined/failed rows not yet acknowledged

    def outstanding_amounts(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for state in OUTSTANDING_STATES:
            for cur, amount in self.states[state].amounts.items():
                out[cur] = out.get(cur, 0) + amount
        return out

    @property
    def outstanding_count(self) -> int:
        return sum(self.states[s].count for s in OUTSTANDING_STATES)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One payment of a batch, decrypted for the uploader (it never reaches a log)."""

    transaction_id: str  # also the host's offline_id: the same on every resend
    amount: int
    currency: int
    card: CardData
    captured_at: int
    emv: Mapping[str, str]
    brand: str | None
    aid: str | None
    signed_record: bytes
    signature: bytes
    key_id: str | None

    def __repr__(self) -> str:
        return f"BatchItem({self.transaction_id!r}, {self.amount}, {self.currency:03d})"


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch claimed for upload. Resent after a crash with the same id, items and key."""

    batch_id: str
    idempotency_key: str
    items: tuple[BatchItem, ...]
    attempts: int  # upload attempts before this one
    resumed: bool  # True when this batch was already 'sending' (crash or lost answer)


class ItemOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"
    RETRY = "retry"  # the host asks to send this item again later
    FAILED = "failed"  # the host refuses this item as invalid


@dataclass(frozen=True, slots=True)
class ItemResult:
    transaction_id: str
    outcome: ItemOutcome
    host_ref: str | None = None
    code: str | None = None  # host response code
    reason: str | None = None
    #: The host already had this payment (sent before, by this unit or another one after a
    #: unit swap): its first answer is the outcome, and nothing was paid again.
    duplicate: bool = False
