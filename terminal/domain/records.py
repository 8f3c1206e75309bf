"""What the journal records: one transaction as the merchant sees it, and a totals line.

Plain values, no I/O: the checkout builds them, the journal (:mod:`terminal.store.journal`)
stores them, receipts and the API show them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TotalsLine", "TxnRecord"]


@dataclass(frozen=True, slots=True)
class TxnRecord:
    """One transaction as the merchant sees it. Amounts are minor units."""

    id: str
    kind: str  # sale | refund | void
    state: str  # in_progress | approved | approved_offline | declined | cancelled | failed
    amount: int
    currency: int
    created_at: str  # ISO 8601, terminal's clock
    updated_at: str
    result: str = ""  # terminal.domain.messages.Result value once finished
    reason: str = ""
    external_ref: str = ""
    original_id: str = ""  # refunds and voids: the sale they undo
    stage: str = ""
    masked_pan: str = ""
    brand: str = ""  # application label, e.g. VISA
    aid: str = ""
    entry_mode: str = "contactless"
    cryptogram_kind: str = ""
    cryptogram: str = ""  # 9F26 hex (not sensitive authentication data)
    atc: str = ""
    tvr: str = ""
    cvm: str = ""
    auth_code: str = ""
    response_code: str = ""
    host_ref: str = ""
    idempotency_key: str = ""
    offline_id: str = ""
    #: Derived, never written from a copy: the sum of this sale's approved refunds, and
    #: whether an approved void of it exists. The journal computes both in the same commit
    #: as the refund or void that changes them (see Journal._derive).
    refunded_amount: int = 0
    voided: bool = False
    batch_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Journal-wide change number: every write of a transaction gives it a revision higher
    #: than any before it, on this or any other transaction. Views carry it, so a client that
    #: gets one transaction by several paths (an HTTP answer, a poll, the event stream) keeps
    #: the newest and drops whatever arrives late (the checkout page does exactly this).
    revision: int = 0

    @property
    def finished(self) -> bool:
        return self.state != "in_progress"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        return data


@dataclass(frozen=True, slots=True)
class TotalsLine:
    brand: str
    currency: int
    sales_count: int = 0
    sales_amount: int = 0
    refunds_count: int = 0
    refunds_amount: int = 0
    offline_count: int = 0  # of the sales, still waiting in the offline queue
    offline_amount: int = 0

    @property
    def net_amount(self) -> int:
        return self.sales_amount - self.refunds_amount
