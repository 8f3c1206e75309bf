"""The local API's answers as OpenAPI schemas: the error envelope and the main responses.

These models document what the endpoints send; the endpoints still build their JSON where
they always did (``checkout.view`` and friends), so a schema never drops or rewrites a field
on the way out. Every model allows fields it does not name (``extra="allow"``): a field a
later release adds is not a breaking change for a register, and
tests/terminal/api/test_openapi.py checks that every field an endpoint really sends is named
here, while tests/terminal/api/test_schemathesis.py checks the answers against these
schemas. Enumerations come from the domain's own enums, so the schema follows them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..domain.records import Kind, Method, Stage, State

__all__ = [
    "Acknowledged",
    "AcquirerMode",
    "BatchList",
    "EndOfDayReport",
    "ErrorBody",
    "ErrorEnvelope",
    "Health",
    "Printed",
    "QueueSummary",
    "ReceiptJson",
    "SimulatorAnswer",
    "Status",
    "SyncAnswer",
    "Totals",
    "TransactionList",
    "TransactionView",
    "UiStrings",
]


class _Open(BaseModel):
    """An answer that may carry fields this schema does not name yet."""

    model_config = ConfigDict(extra="allow")


# --- the error envelope ---------------------------------------------------------------


class ErrorBody(_Open):
    code: str = Field(
        description="what went wrong, stable (unauthorised, wrong_pin, pin_locked, "
        "not_found, busy, invalid_state, invalid_request, body_too_large, "
        "acquirer_unavailable, ...)",
        examples=["invalid_state"],
    )
    message: str = Field(
        description="for the register and the log, in English (503 acquirer_unavailable: "
        "in the terminal's language)",
        examples=["transaction T1 has not finished"],
    )
    field: str | None = Field(
        default=None, description="the field or header at fault (422, 400 host_not_allowed)"
    )
    reason: str | None = Field(
        default=None,
        description="where one code covers several causes, which one (invalid_state: "
        "not_finished, void_settled, ...; pin_locked: wrong, locked, tampered; "
        "acquirer_unavailable: not_connected, unreachable, no_answer, host_error, ...)",
    )
    tries_left: int | None = Field(
        default=None, description="403 wrong_pin: wrong PINs left before a lock-out"
    )
    retry_after: int | None = Field(
        default=None, description="423 pin_locked: seconds (also the Retry-After header)"
    )


class ErrorEnvelope(BaseModel):
    """Every error the API answers, whatever its status."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": {"code": "unauthorised", "message": "unknown API token"}},
                {
                    "error": {
                        "code": "wrong_pin",
                        "message": "wrong merchant PIN",
                        "field": "pin",
                        "tries_left": 2,
                    }
                },
            ]
        }
    )

    error: ErrorBody


# --- transactions ---------------------------------------------------------------------


class Message(_Open):
    merchant: str
    customer: str


class RefundRef(_Open):
    """One refund or void of a sale."""

    id: str
    kind: Kind
    amount: int
    amount_text: str
    state: State
    created_at: str


class OriginalRef(_Open):
    """A refund's or void's sale."""

    id: str
    amount: int
    amount_text: str
    masked_pan: str
    brand: str
    brand_text: str
    created_at: str


class TransactionView(_Open):
    """A transaction as every endpoint and the event stream show it (docs/api.md, "A
    transaction"). Amounts in minor units; no card data beyond the masked PAN."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "id": "T20260301175502A1B2",
                    "kind": "sale",
                    "state": "approved",
                    "amount": 1234,
                    "amount_text": "12.34 EUR",
                    "currency": 978,
                    "title": "Approved",
                    "title_key": "approved",
                    "masked_pan": "476173******0119",
                    "brand": "VISA",
                }
            ]
        },
    )

    id: str
    kind: Kind
    state: State
    amount: int = Field(description="minor units (1234 = 12.34)")
    currency: int = Field(description="ISO 4217 numeric")
    created_at: str = Field(description="ISO 8601 with the UTC offset of the terminal's clock")
    updated_at: str
    result: str
    reason: str
    external_ref: str
    original_id: str
    stage: Stage
    masked_pan: str
    brand: str
    aid: str
    entry_mode: str
    cryptogram_kind: str
    cryptogram: str
    atc: str
    tvr: str
    cvm: str
    auth_code: str
    response_code: str
    host_ref: str
    idempotency_key: str
    offline_id: str
    refunded_amount: int
    voided: bool
    batch_id: str
    revision: int = Field(description="journal-wide change number: keep the highest seen")
    tip_amount: int = Field(
        description="a sale with tip entry: the tip, minor units, included in `amount`"
    )
    authorised_amount: int = Field(
        description="a pre-authorisation: the amount held (first plus incremental ones)"
    )
    captured_amount: int = Field(description="a pre-authorisation: the amount captured")
    released: bool = Field(description="a pre-authorisation: its hold was released")
    extra: dict[str, Any] = Field(description="code-payment fields as earlier releases showed")
    amount_text: str
    refundable_amount: int
    refundable_after_sync: bool
    voidable: bool
    offline_status: Literal["waiting", "sent", "declined"] | None
    message: Message | None
    prompt: str
    method: Method
    qr_svg: str | None
    cancellable: bool
    brand_text: str
    title_key: str
    title: str
    refund_state: Literal["partially_refunded", "refunded", "voided"] | None
    refunds: list[RefundRef] | None
    original: OriginalRef | None


class TransactionList(_Open):
    transactions: list[TransactionView]
    next: int | None = Field(description="pass as `before` for the next (older) page")


class ReceiptJson(_Open):
    copy_: str = Field(alias="copy")
    text: str
    html: str


class Printed(_Open):
    printed: list[str] | str


# --- totals and the end of day --------------------------------------------------------


class _Amounts(_Open):
    sales_count: int
    sales_amount: int
    refunds_count: int
    refunds_amount: int
    net_amount: int
    sales_amount_text: str
    refunds_amount_text: str
    net_amount_text: str


class TotalsLine(_Amounts):
    brand: str
    brand_text: str
    method: Literal["card", "code"]
    method_text: str
    currency: int


class GrandTotal(_Amounts):
    currency: int


class OfflineAmounts(_Open):
    count: int
    amounts: dict[str, int] = Field(description="ISO 4217 numeric (3 digits) -> minor units")
    amount_text: str


class Totals(_Open):
    """The open batch before the end of day."""

    lines: list[TotalsLine]
    grand_totals: list[GrandTotal]
    offline: OfflineAmounts
    transactions: int
    totals: list[dict[str, Any]] = Field(description="as earlier releases answered")
    batches: list[dict[str, Any]] = Field(description="the last five closed, as earlier")


class ReportLine(TotalsLine):
    host: _Amounts | None = None
    differs: bool | None = None


class StillOffline(_Open):
    count: int
    amounts: dict[str, int] = Field(description="ISO 4217 numeric (3 digits) -> minor units")
    flagged: int
    amount_text: str


class EndOfDayReport(_Open):
    """A closed batch's report (the end of day's answer, and each of GET /batches). A batch
    an earlier version closed has `legacy` true, no terminal side (`lines` empty,
    `differences`, `in_balance` and `transactions` null) and `host_lines`."""

    batch_id: str
    closed_at: str
    language: str
    lines: list[ReportLine]
    grand_totals: list[GrandTotal]
    host_grand_totals: list[GrandTotal]
    differences: int | None
    in_balance: bool | None
    transactions: int | None
    host_transactions: int
    text: list[str] = Field(description="the report's lines, a 32-column slip")
    host_totals: list[dict[str, Any]] = Field(description="as earlier releases answered")
    # Reports this release closes carry these; a legacy one (`legacy`: true) has not.
    merchant: dict[str, str] | None = Field(
        default=None, description="`name_location`, `identifier`"
    )
    terminal_id: str | None = None
    host_records: int | None = Field(
        default=None, description="every record the bank closed into the batch, declined too"
    )
    offline_synced: dict[str, int] | None = Field(
        default=None, description="what this end of day's sync did, per final state"
    )
    still_offline: StillOffline | None = None
    terminal_totals: list[dict[str, Any]] | None = Field(
        default=None, description="as earlier releases answered"
    )
    legacy: bool | None = Field(default=None, description="closed by an earlier version")
    host_lines: list[TotalsLine] | None = Field(
        default=None, description="a legacy batch: the bank's lines, all it kept"
    )


class BatchList(_Open):
    batches: list[EndOfDayReport]
    next: int | None


# --- status, queue, sync --------------------------------------------------------------


class QueueSummary(_Open):
    count: int
    amounts: dict[str, int] = Field(description="ISO 4217 numeric (3 digits) -> minor units")
    flagged: int


class HostLink(_Open):
    online: bool | None
    since: str | None
    last_failure: str
    last_failure_text: str


class OfflineAcceptance(_Open):
    enabled: bool
    max_amount: int | None
    currency: int
    max_amount_text: str


class StatusQueue(QueueSummary):
    text: list[str]


class Status(_Open):
    terminal_id: str
    host_online: bool | None
    host: HostLink
    offline_acceptance: OfflineAcceptance
    busy: bool
    current: str | None
    queue: StatusQueue
    pending_reversals: int
    offline_declines: dict[str, int]
    codes: dict[str, bool]
    language: str
    currency: int
    currency_alpha: str
    currency_exponent: int
    contactless_limits: list[dict[str, Any]]
    announce: bool
    sounds: bool


class SyncResult(_Open):
    sent: int
    accepted: int
    declined: int
    failed: int
    remaining: int
    ok: bool
    failure: str
    text: str
    host_online: bool | None


class SyncAnswer(_Open):
    sync: dict[str, int]
    result: SyncResult
    queue: QueueSummary


class Acknowledged(_Open):
    acknowledged: int
    unacknowledged: int


class UiStrings(_Open):
    language: str
    strings: dict[str, str]


class Health(_Open):
    status: Literal["ok"]
    busy: bool


class SimulatorAnswer(_Open):
    """What the simulator did (one field, named by the endpoint)."""


class AcquirerMode(_Open):
    acquirer: Literal["online", "unreachable", "drops"]
