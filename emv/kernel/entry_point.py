"""Entry Point (EMV Contactless Book B): pre-processing and combination selection.

Pure functions; :mod:`emv.kernel.transaction` calls them from its state machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from emv import tlv

from .config import KERNEL_MASTERCARD, AidConfig, TerminalConfig, TransactionRequest

__all__ = [
    "Candidate",
    "PreprocessingIndicators",
    "build_candidate_list",
    "default_kernel_id",
    "order_candidates",
    "preprocess",
]

#: Book B §3.3.2.5 / Table 3-6: kernel used when a directory entry has no Kernel Identifier.
_DEFAULT_KERNEL_BY_RID: Final[dict[bytes, int]] = {
    bytes.fromhex("A000000004"): 2,  # Mastercard
    bytes.fromhex("A000000003"): 3,  # Visa
    bytes.fromhex("A000000025"): 4,  # American Express
    bytes.fromhex("A000000065"): 5,  # JCB
    bytes.fromhex("A000000152"): 6,  # Discover
    bytes.fromhex("A000000324"): 6,
    bytes.fromhex("A000000333"): 7,  # UnionPay
}


@dataclass(frozen=True)
class PreprocessingIndicators:
    """Entry Point Pre-Processing Indicators for one Combination (Book B §3.1.1, Table 3-1)."""

    not_allowed: bool
    zero_amount: bool
    cvm_required_limit_exceeded: bool
    floor_limit_exceeded: bool
    #: Copy of the TTQ with byte 2 b8 (online cryptogram required) and b7 (CVM required) set
    #: for this transaction.
    ttq: bytes


def preprocess(
    terminal: TerminalConfig, aid: AidConfig, request: TransactionRequest
) -> PreprocessingIndicators:
    """Book B §3.1.1: Pre-Processing of one Combination against the reader limits."""
    amount = request.amount
    # §3.1.1.2: start from the Combination's TTQ (the AID's, else the terminal's) with byte 2
    # b8-b7 cleared, and without capabilities the terminal lacks (no PIN entry device: no
    # online PIN; an offline-only Terminal Type: an offline-only reader).
    ttq = bytearray(terminal.honest_ttq(aid.ttq if aid.ttq is not None else terminal.ttq))
    ttq[1] &= 0x3F
    not_allowed = False
    zero_amount = False
    # §3.1.1.3: Status Check Support: a single unit of currency asks for an online
    # cryptogram (TTQ byte 2 b8 below), so the issuer sees the card's status.
    exponent = int(terminal.data.get(0x5F36, b"\x02").hex())
    status_check = aid.status_check and amount == 10**exponent
    # §3.1.1.5: zero amount. An offline-only reader (TTQ byte 1 b4) cannot ask for an online
    # cryptogram, so for it the combination is not allowed (§3.1.1.12).
    if amount == 0:
        if not aid.zero_amount_allowed:
            not_allowed = True
        else:
            zero_amount = True
    # §3.1.1.6: Reader Contactless Transaction Limit, "greater than or equal to". Kernel 2
    # checks its own limits (C-2 v2.10 S456.14: DF8124 or DF8125 by on-device CVM support,
    # "greater than"), which Entry Point cannot know before the card's AIP.
    limit = aid.contactless_transaction_limit
    if aid.kernel_id != KERNEL_MASTERCARD and limit is not None and amount >= limit:
        not_allowed = True
    # §3.1.1.7-8: Reader Contactless Floor Limit, else the Terminal Floor Limit.
    floor_exceeded = amount > aid.floor_limit
    # §3.1.1.9: Reader CVM Required Limit, "greater than or equal to".
    cvm_exceeded = aid.cvm_required_limit is not None and amount >= aid.cvm_required_limit
    # §3.1.1.10-12: qualifiers for Kernel 3 (TTQ byte 2).
    if floor_exceeded or status_check:
        ttq[1] |= 0x80
    if zero_amount:
        if ttq[0] & 0x08:
            not_allowed = True
        else:
            ttq[1] |= 0x80
    if cvm_exceeded:
        ttq[1] |= 0x40
    return PreprocessingIndicators(
        not_allowed, zero_amount, cvm_exceeded, floor_exceeded, bytes(ttq)
    )


def default_kernel_id(adf_name: bytes) -> int | None:
    return _DEFAULT_KERNEL_BY_RID.get(adf_name[:5])


@dataclass(frozen=True)
class Candidate:
    """One Combination on the Candidate List (Book B §3.3.2.5)."""

    adf_name: bytes
    kernel_id: int
    aid: AidConfig
    label: str
    #: Application Priority Indicator b4-b1; 0 when absent (no priority).
    priority: int
    #: Extended Selection (9F29), appended to the ADF Name at final selection (§3.3.3.3).
    extended_selection: bytes
    #: Position of the directory entry in the PPSE, which breaks priority ties (§3.3.3.2).
    order: int


def _kernel_id(entry: dict[int, bytes], adf_name: bytes) -> int | None:
    """Book B §3.3.2.5 step C: requested kernel from 9F2A, or the default for the RID."""
    raw = entry.get(0x9F2A)
    if not raw or raw[0] == 0:
        return default_kernel_id(adf_name)
    # Byte 1 b8-b7 '00' or '01': an international kernel, identified by b6-b1.
    if raw[0] & 0xC0 in (0x00, 0x40):
        return raw[0] & 0x3F
    return None  # domestic or proprietary kernels are not implemented


def build_candidate_list(
    fci: bytes,
    aids: Sequence[AidConfig],
    indicators: Sequence[PreprocessingIndicators],
) -> list[Candidate]:
    """Book B §3.3.2.5: Candidate List from the PPSE's directory entries (tag 61 in BF0C).

    A directory entry yields a Combination when its ADF Name matches a reader AID (exactly,
    or as an extension when partial selection is allowed), its kernel is that AID's kernel,
    and pre-processing did not mark the Combination "not allowed".
    Raises :class:`emv.tlv.TlvError` for a malformed FCI.
    """
    root = tlv.decode_one(fci, 0x6F)
    directory = root.find(0xA5, 0xBF0C)
    if directory is None:
        return []
    candidates: list[Candidate] = []
    for order, entry_tlv in enumerate(c for c in directory.children if c.tag == 0x61):
        entry = {child.tag: child.value for child in entry_tlv.children if not child.constructed}
        adf_name = entry.get(0x4F)
        if adf_name is None or not 5 <= len(adf_name) <= 16:
            continue  # §3.3.2.5 step A: entries without a valid ADF Name are ignored
        kernel = _kernel_id(entry, adf_name)
        for aid, indicator in zip(aids, indicators, strict=True):
            exact = adf_name == aid.aid
            partial = aid.partial_selection and adf_name.startswith(aid.aid)
            if not (exact or partial) or kernel != aid.kernel_id or indicator.not_allowed:
                continue
            priority_raw = entry.get(0x87, b"\x00")
            candidates.append(
                Candidate(
                    adf_name=adf_name,
                    kernel_id=kernel,
                    aid=aid,
                    label=entry.get(0x50, b"").decode("latin-1") or aid.label,
                    priority=priority_raw[0] & 0x0F if priority_raw else 0,
                    # §3.3.3.3: appended only when the Combination supports it.
                    extended_selection=entry.get(0x9F29, b"") if aid.extended_selection else b"",
                    order=order,
                )
            )
            break
    return candidates


def order_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Book B §3.3.3.2: highest priority first (1 highest; 0/absent last), then PPSE order."""
    return sorted(candidates, key=lambda c: (c.priority or 16, c.order))
