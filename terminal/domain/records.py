"""What the journal records: one transaction as the merchant sees it, its kind and state,
the moves between states the checkout may make, and a totals line.

Plain values, no I/O: the checkout builds them and moves them through :data:`MOVES` (one
table, checked by :func:`check_move` before every commit), the journal
(:mod:`terminal.store.journal`) stores them, receipts and the API show them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Final, Literal

from .currency import MAX_EMV_AMOUNT
from .errors import TerminalError

__all__ = [
    "CODE_BRANDS",
    "DECLINED_AFTER_THE_FACT",
    "HOLD_CHANGES",
    "MAX_SEARCH",
    "MOVES",
    "Kind",
    "Method",
    "PaymentMethod",
    "Stage",
    "State",
    "TotalsLine",
    "TransitionError",
    "TxnQuery",
    "TxnRecord",
    "brand_method",
    "check_move",
    "parse_search",
]


class Kind(StrEnum):
    SALE = "sale"
    REFUND = "refund"
    VOID = "void"
    #: A hold on the card (hotels, fuel, rentals), authorised like a sale but moving no
    #: money until it is captured; the three after it change one hold (their original_id).
    PREAUTH = "preauth"
    INCREMENT = "increment"  # raises the hold, no card needed
    CAPTURE = "capture"  # takes (part of) the hold: the money moves, the rest is released
    RELEASE = "release"  # gives the whole hold back


#: The records that change a pre-authorisation (original_id: the hold).
HOLD_CHANGES: Final = frozenset({Kind.INCREMENT, Kind.CAPTURE, Kind.RELEASE})


class Method(StrEnum):
    """How a sale is paid: a card (or a code on the scanner), or the terminal's own
    merchant-presented code the customer's phone pays."""

    CARD = "card"
    MERCHANT_QR = "merchant_qr"


class State(StrEnum):
    IN_PROGRESS = "in_progress"
    APPROVED = "approved"
    #: Taken without the acquirer (store and forward): in the offline queue until it is sent.
    APPROVED_OFFLINE = "approved_offline"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    #: Ended without an answer that settles it (the bank could not be reached, or its answer
    #: was lost: then `outcome_unknown`, and the next refund of the sale settles it first).
    FAILED = "failed"


#: The final states an approved payment can be in.
APPROVED_STATES: Final = frozenset({State.APPROVED, State.APPROVED_OFFLINE})

#: The reason an offline sale gets when the bank declines it at upload: the sale stays
#: approved offline (the customer left with the goods, the receipt said approved), and this
#: reason is what marks it for the merchant: no refund, no void, "needs attention".
DECLINED_AFTER_THE_FACT: Final = "declined by the bank after the fact"


class Stage(StrEnum):
    """Where a running transaction is (the prompt the merchant and the customer see)."""

    NONE = ""
    #: Tip entry is on (off by default): the customer chooses a tip on the page (a preset
    #: percentage, an amount, or none) before the reader is armed for the total.
    WAITING_FOR_TIP = "waiting_for_tip"
    WAITING_FOR_CARD = "waiting_for_card"
    #: The card asked for a second tap (EMV Contactless Book B v2.10 §3.5, Start B: "see
    #: phone", removed too early): waiting for it to leave the field and come back. What it
    #: said is the `restart` event's message.
    WAITING_FOR_CARD_AGAIN = "waiting_for_card_again"
    READING_CARD = "reading_card"
    AUTHORISING = "authorising"
    STORING = "storing"
    REVERSING = "reversing"
    READING_CODE = "reading_code"  # a scanned code is on its way to the acquirer
    WAITING_FOR_CONFIRMATION = "waiting_for_confirmation"  # the wallet asks its user
    #: The merchant-presented order is being opened with the acquirer: no code on screen
    #: yet, so a phone cannot pay an order the acquirer does not know.
    OPENING_ORDER = "opening_order"
    WAITING_FOR_PAYMENT = "waiting_for_payment"  # merchant-presented code on the screen
    DONE = "done"


#: Every move the checkout may make, per kind: (kind, from) -> the states it may go to.
#: A move to the same state changes fields only (a stage, the host reference an offline
#: sale gets once it is sent). Anything else is a bug, refused before it is committed.
MOVES: Final[Mapping[tuple[Kind, State], frozenset[State]]] = {
    # A sale ends in any final state; recovery ends an interrupted one too.
    (Kind.SALE, State.IN_PROGRESS): frozenset(State),
    # Sent later: the host reference (or an after-the-fact decline) is copied from the queue.
    (Kind.SALE, State.APPROVED_OFFLINE): frozenset({State.APPROVED_OFFLINE}),
    (Kind.REFUND, State.IN_PROGRESS): frozenset(State) - {State.APPROVED_OFFLINE},
    # A refund whose answer was lost is settled under its own key before the next one.
    (Kind.REFUND, State.FAILED): frozenset({State.APPROVED, State.DECLINED}),
    (Kind.VOID, State.IN_PROGRESS): frozenset(State) - {State.APPROVED_OFFLINE},
    # So is a void whose answer was lost, by the background loop (or before the next void).
    (Kind.VOID, State.FAILED): frozenset({State.APPROVED, State.DECLINED}),
    # A pre-authorisation needs the bank: never approved offline. Once approved it does not
    # move again; what its changes do to it (held, captured, released) is derived.
    (Kind.PREAUTH, State.IN_PROGRESS): frozenset(State) - {State.APPROVED_OFFLINE},
    # Its changes, like refunds: one whose answer was lost is settled under its own key
    # before the next change of the same hold.
    **{
        (kind, before): after
        for kind in (Kind.INCREMENT, Kind.CAPTURE, Kind.RELEASE)
        for before, after in (
            (State.IN_PROGRESS, frozenset(State) - {State.APPROVED_OFFLINE}),
            (State.FAILED, frozenset({State.APPROVED, State.DECLINED})),
        )
    },
}


class TransitionError(TerminalError):
    """The checkout tried a move :data:`MOVES` does not allow: a bug, never committed."""


def check_move(kind: Kind, before: State, after: State) -> None:
    if after not in MOVES.get((kind, before), frozenset()):
        raise TransitionError(f"a {kind} may not go from {before} to {after}")


@dataclass(frozen=True, slots=True)
class TxnRecord:
    """One transaction as the merchant sees it. Amounts are minor units."""

    id: str
    kind: Kind
    state: State
    amount: int
    currency: int
    created_at: str  # ISO 8601, terminal's clock
    updated_at: str
    result: str = ""  # terminal.domain.messages.Result value once finished
    reason: str = ""
    external_ref: str = ""
    original_id: str = ""  # refunds and voids: the sale they undo
    stage: Stage = Stage.NONE
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
    method: Method = Method.CARD
    #: Code payments: the order id the acquirer knows, the merchant-presented payload
    #: shown, and what was scanned (kind: cpm | wallet | mpm ...; the wallet's scheme).
    qr_order_id: str = ""
    qr_payload: str = ""
    qr_kind: str = ""
    qr_scheme: str = ""
    #: A refund or void that failed because its answer was lost: the bank may have done it.
    outcome_unknown: bool = False
    #: Journal-wide change number: every write of a transaction gives it a revision higher
    #: than any before it, on this or any other transaction. Views carry it, so a client that
    #: gets one transaction by several paths (an HTTP answer, a poll, the event stream) keeps
    #: the newest and drops whatever arrives late (the checkout page does exactly this).
    revision: int = 0
    #: Sales with tip entry: the tip chosen, in minor units, already part of `amount` (the
    #: total the card was asked for); 0 for no tip or no tip entry.
    tip_amount: int = 0
    #: Pre-authorisations, derived like refunded_amount (never written from a copy): the
    #: amount held (the first authorisation plus approved incremental ones), the amount
    #: captured, and whether the hold was released.
    authorised_amount: int = 0
    captured_amount: int = 0
    released: bool = False

    @property
    def finished(self) -> bool:
        return self.state is not State.IN_PROGRESS

    @property
    def declined_after_the_fact(self) -> bool:
        """An offline sale the bank declined when it was sent: no money came in."""
        return (
            self.kind is Kind.SALE
            and self.state is State.APPROVED_OFFLINE
            and self.reason == DECLINED_AFTER_THE_FACT
        )

    @property
    def offline_status(self) -> str | None:
        """Where an offline sale is: "waiting" in the queue, "sent" (the bank accepted it and
        gave its reference), "declined" by the bank after the fact; None for anything else."""
        if self.kind is not Kind.SALE or self.state is not State.APPROVED_OFFLINE:
            return None
        if self.declined_after_the_fact:
            return "declined"
        return "sent" if self.host_ref else "waiting"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in _VIEW_FIELDS:
            value = getattr(self, name)
            data[name] = str(value) if isinstance(value, StrEnum) else value
        # The code-payment fields as earlier releases showed them (the register's API reads
        # `extra`): only those set, and no method for a card sale.
        data["extra"] = {
            name: value
            for name in _EXTRA_VIEW
            if (value := getattr(self, name)) not in ("", Method.CARD)
        }
        if self.outcome_unknown and self.kind is Kind.REFUND:
            data["extra"]["refund_outcome_unknown"] = True  # as schema 2 showed it
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

    #: "card" (a card brand) or "code" (a wallet or a QR scheme): how the totals group it.
    method: PaymentMethod = "card"

    @property
    def net_amount(self) -> int:
        return self.sales_amount - self.refunds_amount


#: How the merchant's totals and report group a payment: by card brand, or by the code
#: (wallet or QR scheme) it was paid with.
PaymentMethod = Literal["card", "code"]

#: Brands that are codes, not cards (codes.py names a code payment by its wallet or scheme:
#: ALIPAY, WECHATPAY, "QR <scheme>", EMV QR, MERCHANT QR, WALLET): how a line the host
#: reports and the terminal has not is grouped.
CODE_BRANDS: Final = frozenset({"ALIPAY", "WECHATPAY", "WECHAT", "EMV QR", "MERCHANT QR", "WALLET"})


def brand_method(brand: str) -> PaymentMethod:
    """Whether a brand (as a record or the acquirer names it) is a code or a card."""
    name = brand.strip().upper()
    return "code" if name in CODE_BRANDS or name.startswith("QR ") else "card"


# --- the merchant's search of the transaction list -------------------------------------

#: The longest search the list accepts (the local API answers 422 above it).
MAX_SEARCH: Final = 64

#: An amount as a merchant types it: digits, then a decimal part after "." or "," (the
#: locale's separator either way: "12.34" and "12,34" are the same amount).
_AMOUNT_TYPED: Final = re.compile(r"(\d{1,13})(?:[.,](\d{1,4}))?")


@dataclass(frozen=True, slots=True)
class TxnQuery:
    """What the merchant's search asks for (:func:`parse_search`): a transaction matches
    when any of the set criteria matches it; an empty query matches everything."""

    #: Amounts, in minor units, any of which matches exactly.
    amounts: tuple[int, ...] = ()
    #: The last 4 digits of the masked PAN.
    last4: str = ""
    #: Lower case; a substring of the transaction id, the register's external reference,
    #: the authorisation code, the bank's reference (RRN) or a code payment's order id.
    text: str = ""
    #: Whether anything was typed: a query typed that sets no criterion matches nothing.
    typed: bool = False

    @property
    def everything(self) -> bool:
        """Nothing was typed: the query matches every transaction."""
        return not self.typed


def parse_search(typed: str, exponent: int) -> TxnQuery:
    """The merchant's search box, read in the terminal's currency (`exponent`: its minor
    unit digits, ISO 4217).

    - An amount as typed ("12.34", "12,34": the locale's separator either way; "12" is
      12.00; at most `exponent` decimals) matches that amount exactly.
    - Exactly 4 digits match the last 4 digits of the card number, OR the amount they spell
      either way: in whole units as above ("4826": 4826.00) or as the terminal's keypad
      enters an amount, in minor units (48.26). A merchant types all three the same way.
    - 6 digits or more also match as a reference (authorisation codes and RRNs are digits).
    - Anything else matches, case-insensitive, a substring of the transaction id, the
      external reference, the authorisation code, the bank's reference or the order id.

    Never raises: input that is none of these ("12.345" on a EUR terminal, stray
    characters) simply matches nothing. The caller refuses input longer than
    :data:`MAX_SEARCH`.

    >>> parse_search(" 12,5 ", 2)
    TxnQuery(amounts=(1250,), last4='', text='', typed=True)
    >>> parse_search("4826", 2)
    TxnQuery(amounts=(482600, 4826), last4='4826', text='', typed=True)
    >>> parse_search("ECR-42", 2)
    TxnQuery(amounts=(), last4='', text='ecr-42', typed=True)
    """
    query = typed.strip()
    if not query:
        return TxnQuery()
    amounts: list[int] = []
    typed_amount = _AMOUNT_TYPED.fullmatch(query) if query.isascii() else None
    if typed_amount is not None:
        whole, fraction = typed_amount.group(1), typed_amount.group(2) or ""
        if len(fraction) <= exponent:
            amounts.append(int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0"))
    digits = query.isascii() and query.isdigit()
    last4 = query if digits and len(query) == 4 else ""
    if last4 and exponent:
        amounts.append(int(query))  # the keypad's way: 4826 is 48.26
    # What reads as an amount is one (an impossible one, "0" or "12.345" on EUR, matches
    # nothing), except a long run of digits, which may be a reference too.
    reference = typed_amount is None or (digits and len(query) >= 6)
    return TxnQuery(
        amounts=tuple(a for a in amounts if 0 < a <= MAX_EMV_AMOUNT),
        last4=last4,
        text=query.lower() if reference else "",
        typed=True,
    )


#: What the API and the page see of a record: everything but the internal settle mark.
_EXTRA_VIEW: Final = ("method", "qr_order_id", "qr_payload", "qr_kind", "qr_scheme")
_VIEW_FIELDS: Final = tuple(
    f.name for f in fields(TxnRecord) if f.name not in (*_EXTRA_VIEW, "outcome_unknown")
)
