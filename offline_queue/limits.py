"""Offline acceptance limits: may this card payment be approved offline and queued?

The checks run before a card is approved offline (EMV Book 3 §10.6, terminal risk management:
the floor limit and velocity checks are the terminal's own; these are the acquirer's limits on
what the terminal may hold unsent). A refusal is a value with a reason a merchant can read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "AmountFormatter",
    "Exposure",
    "OfflineDecision",
    "OfflineLimits",
    "RefusalReason",
    "check_offline",
    "plain_formatter",
]

AmountFormatter = Callable[[int, int], str]
"""(minor units, ISO 4217 numeric) -> text, e.g. terminal.domain.currency.format_amount."""


def plain_formatter(exponents: Mapping[int, int] | None = None) -> AmountFormatter:
    """A formatter without currency names: 25000 -> "250.00" (exponent 2 unless given)."""
    table = dict(exponents or {})

    def fmt(minor: int, currency: int) -> str:
        exp = table.get(currency, 2)
        sign = "-" if minor < 0 else ""
        digits = str(abs(minor))
        if exp == 0:
            return sign + digits
        digits = digits.rjust(exp + 1, "0")
        return f"{sign}{digits[:-exp]}.{digits[-exp:]}"

    return fmt


@dataclass(frozen=True, slots=True)
class OfflineLimits:
    """The acquirer's offline limits, filled in by the terminal from its parameters.

    `max_transaction_amount` maps currency -> the largest single offline payment; a currency
    missing from `max_total_amount` cannot be taken offline at all (an unbounded queue is
    never what the acquirer meant).
    """

    max_transaction_amount: Mapping[int, int]
    max_total_amount: Mapping[int, int]
    max_count: int
    max_age_seconds: int
    enabled: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "max_transaction_amount", MappingProxyType(dict(self.max_transaction_amount))
        )
        object.__setattr__(self, "max_total_amount", MappingProxyType(dict(self.max_total_amount)))


class RefusalReason(enum.StrEnum):
    DISABLED = "offline_disabled"
    CARD_DECLINED = "card_declined_offline"  # the card asked for online or answered AAC
    CURRENCY = "currency_not_allowed"
    TRANSACTION_AMOUNT = "transaction_amount"
    TOTAL_AMOUNT = "total_amount"
    COUNT = "count"
    AGE = "oldest_too_old"


@dataclass(frozen=True, slots=True)
class Exposure:
    """What the queue already holds unsent (pending, sending and failed payments)."""

    amounts: Mapping[int, int] = field(default_factory=dict)
    count: int = 0
    oldest_created_at: int | None = None


@dataclass(frozen=True, slots=True)
class OfflineDecision:
    allowed: bool
    reason: RefusalReason | None = None
    message: str = ""

    def __bool__(self) -> bool:
        return self.allowed


def check_offline(
    limits: OfflineLimits,
    exposure: Exposure,
    *,
    amount: int,
    currency: int,
    card_approves_offline: bool,
    now: int,
    fmt: AmountFormatter | None = None,
) -> OfflineDecision:
    """Decide whether one more payment may be approved offline. Pure: no I/O, no clock."""
    f = fmt or plain_formatter()

    def refuse(reason: RefusalReason, message: str) -> OfflineDecision:
        return OfflineDecision(False, reason, message)

    if not limits.enabled:
        return refuse(RefusalReason.DISABLED, "offline payments are not allowed on this terminal")
    if not card_approves_offline:
        return refuse(RefusalReason.CARD_DECLINED, "the card does not allow an offline approval")
    total_limit = limits.max_total_amount.get(currency)
    per_tx = limits.max_transaction_amount.get(currency)
    if total_limit is None or per_tx is None:
        return refuse(
            RefusalReason.CURRENCY, f"offline payments are not allowed in currency {currency:03d}"
        )
    if amount > per_tx:
        return refuse(
            RefusalReason.TRANSACTION_AMOUNT,
            f"offline limit per payment exceeded: {f(amount, currency)} over {f(per_tx, currency)}",
        )
    stored = exposure.amounts.get(currency, 0)
    if stored + amount > total_limit:
        return refuse(
            RefusalReason.TOTAL_AMOUNT,
            f"offline limit reached: {f(stored, currency)} stored of {f(total_limit, currency)}",
        )
    if exposure.count >= limits.max_count:
        return refuse(
            RefusalReason.COUNT,
            f"offline limit reached: {exposure.count} payments stored of {limits.max_count}",
        )
    if exposure.oldest_created_at is not None:
        age = now - exposure.oldest_created_at
        if age >= limits.max_age_seconds:
            return refuse(
                RefusalReason.AGE,
                f"offline limit reached: oldest stored payment is {_duration(age)} old "
                f"(limit {_duration(limits.max_age_seconds)})",
            )
    return OfflineDecision(True)


def _duration(seconds: int) -> str:
    seconds = max(0, seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min"
