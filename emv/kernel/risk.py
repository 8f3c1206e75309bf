"""Processing restrictions, terminal risk management and terminal action analysis.

EMV Book 3 §10.4 (processing restrictions), §10.6 (terminal risk management) and §10.7
(terminal action analysis), as Kernel 2 applies them (Book C-2 §7.4, §7.6, §7.7). Pure
functions returning the names of the TVR bits they set (see :mod:`emv.kernel.tvr`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from emv.apdu import CryptogramType

from .config import AidConfig

__all__ = [
    "bcd_date",
    "processing_restrictions",
    "random_selection",
    "terminal_action_analysis",
    "velocity_checking",
]


def bcd_date(value: bytes | None) -> date | None:
    """An n6 YYMMDD date; YY 00-49 is 20YY, 50-99 is 19YY (Book 3 Annex A)."""
    if value is None or len(value) != 3:
        return None
    text = value.hex()
    if not text.isdigit():
        return None
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:])
    try:
        return date(2000 + yy if yy < 50 else 1900 + yy, mm, dd)
    except ValueError:
        return None


def processing_restrictions(
    card: Mapping[int, bytes],
    terminal: Mapping[int, bytes],
    aid: AidConfig,
    today: date,
    transaction_type: int,
    other_amount: int,
) -> set[str]:
    """Book 3 §10.4: application versions, usage control and dates."""
    bits: set[str] = set()
    # §10.4.1: Application Version Number of card (9F08) versus terminal (9F09).
    card_version = card.get(0x9F08)
    if card_version is not None and card_version != aid.app_version:
        bits.add("different_application_versions")
    # §10.4.2: Application Usage Control (9F07).
    auc = card.get(0x9F07)
    if (
        auc is not None
        and len(auc) >= 2
        and not _usage_allowed(auc, card, terminal, transaction_type, other_amount)
    ):
        bits.add("service_not_allowed")
    # §10.4.3: Application Effective Date (5F25) and Expiration Date (5F24).
    effective = bcd_date(card.get(0x5F25))
    if effective is not None and today < effective:
        bits.add("application_not_yet_effective")
    expiry = bcd_date(card.get(0x5F24))
    if expiry is not None and today > expiry:
        bits.add("expired_application")
    return bits


def _usage_allowed(
    auc: bytes,
    card: Mapping[int, bytes],
    terminal: Mapping[int, bytes],
    transaction_type: int,
    other_amount: int,
) -> bool:
    """Book 3 §10.4.2 with the AUC bits of Annex C2, Table 38."""
    terminal_type = terminal.get(0x9F35, b"\x22")[0]
    atm = terminal_type in (0x14, 0x15, 0x16)
    if atm and not auc[0] & 0x02:
        return False
    if not atm and not auc[0] & 0x01:
        return False
    issuer_country = card.get(0x5F28)
    if issuer_country is None:
        return True  # §10.4.2: domestic/international checks need the Issuer Country Code
    domestic = issuer_country == terminal.get(0x9F1A)
    if transaction_type == 1:  # cash
        return bool(auc[0] & (0x80 if domestic else 0x40))
    if transaction_type in (0, 9):  # purchase of goods or services
        goods_or_services = auc[0] & ((0x20 | 0x08) if domestic else (0x10 | 0x04))
        if not goods_or_services:
            return False
        if transaction_type == 9 or other_amount > 0:
            return bool(auc[1] & (0x80 if domestic else 0x40))
    return True


def random_selection(amount: int, aid: AidConfig, draw: int) -> bool:
    """Book 3 §10.6.2: random transaction selection below the floor limit.

    ``draw`` is a uniformly random 0-99 supplied by the caller; the transaction is selected
    when it is below the transaction target percentage.
    """
    floor = aid.floor_limit
    threshold = aid.random_selection_threshold
    if amount > floor or (
        aid.random_selection_target_percent == 0 and aid.random_selection_max_percent == 0
    ):
        return False
    if amount < threshold or floor <= threshold:
        target = aid.random_selection_target_percent
    else:
        # Biased selection between threshold and floor limit: the percentage rises linearly
        # from the target to the maximum (§10.6.2, Figure 13).
        span = aid.random_selection_max_percent - aid.random_selection_target_percent
        target = aid.random_selection_target_percent + span * (amount - threshold) // (
            floor - threshold
        )
    return draw < target


def velocity_checking(
    atc: bytes | None,
    last_online_atc: bytes | None,
    lower_limit: bytes | None,
    upper_limit: bytes | None,
) -> set[str]:
    """Book 3 §10.6.3: consecutive offline transactions from ATC and Last Online ATC."""
    if lower_limit is None or upper_limit is None:
        return set()
    if atc is None or last_online_atc is None or len(atc) != 2 or len(last_online_atc) != 2:
        return {
            "lower_consecutive_offline_limit_exceeded",
            "upper_consecutive_offline_limit_exceeded",
        }
    atc_value = int.from_bytes(atc, "big")
    last = int.from_bytes(last_online_atc, "big")
    bits: set[str] = set()
    if atc_value <= last:
        bits |= {
            "lower_consecutive_offline_limit_exceeded",
            "upper_consecutive_offline_limit_exceeded",
        }
    else:
        offline = atc_value - last
        if offline > int.from_bytes(lower_limit, "big"):
            bits.add("lower_consecutive_offline_limit_exceeded")
        if offline > int.from_bytes(upper_limit, "big"):
            bits.add("upper_consecutive_offline_limit_exceeded")
    if last == 0:
        bits.add("new_card")
    return bits


def _any(tvr: bytes, *codes: bytes) -> bool:
    return any(t & c for code in codes for t, c in zip(tvr, code, strict=False))


def terminal_action_analysis(
    tvr: bytes,
    aid: AidConfig,
    card: Mapping[int, bytes],
    *,
    online_capable: bool,
    online_only: bool,
    online_cryptogram_required: bool,
) -> CryptogramType:
    """Book 3 §10.7: compare the TVR with the Terminal and Issuer Action Codes.

    Absent IACs default to zeros for Denial and all ones for Online and Default (§10.7).
    """
    iac_denial = card.get(0x9F0E, bytes(5))
    iac_online = card.get(0x9F0F, b"\xff" * 5)
    iac_default = card.get(0x9F0D, b"\xff" * 5)
    if _any(tvr, aid.tac_denial, iac_denial):
        return CryptogramType.AAC
    if online_capable:
        if online_only or online_cryptogram_required or _any(tvr, aid.tac_online, iac_online):
            return CryptogramType.ARQC
        return CryptogramType.TC
    # Offline-only terminal (or unable to go online): Default action codes decide.
    if _any(tvr, aid.tac_default, iac_default):
        return CryptogramType.AAC
    return CryptogramType.TC
