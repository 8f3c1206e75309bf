"""Cardholder verification for Kernel 2 (EMV Book 3 §10.5, Book C-2 §7.5 "CVM Selection").

:func:`select_cvm` walks the card's CVM List (8E) the way Book 3 §10.5 describes, with the
contactless restrictions of Book C-2: the terminal's CVM capability depends on whether the
amount exceeds the Reader CVM Required Limit, and a card supporting on-device cardholder
verification (AIP byte 1 b2) skips the list altogether.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .outcome import CvmKind

__all__ = ["CvmDecision", "CvmInputs", "select_cvm"]

#: CVM Codes, Book 3 Annex C3, Table 39 (b6-b1 of the first byte of a CV Rule).
CVM_FAIL: Final = 0x00
CVM_PLAINTEXT_PIN_ICC: Final = 0x01
CVM_ONLINE_PIN: Final = 0x02
CVM_PLAINTEXT_PIN_ICC_SIGNATURE: Final = 0x03
CVM_ENCIPHERED_PIN_ICC: Final = 0x04
CVM_ENCIPHERED_PIN_ICC_SIGNATURE: Final = 0x05
CVM_SIGNATURE: Final = 0x1E
CVM_NO_CVM: Final = 0x1F
_RECOGNISED: Final = frozenset(
    {
        CVM_FAIL,
        CVM_PLAINTEXT_PIN_ICC,
        CVM_ONLINE_PIN,
        CVM_PLAINTEXT_PIN_ICC_SIGNATURE,
        CVM_ENCIPHERED_PIN_ICC,
        CVM_ENCIPHERED_PIN_ICC_SIGNATURE,
        CVM_SIGNATURE,
        CVM_NO_CVM,
    }
)

# CVM Results third byte (Book 3 Annex A, tag 9F34).
RESULT_UNKNOWN: Final = 0x00
RESULT_FAILED: Final = 0x01
RESULT_SUCCESSFUL: Final = 0x02


@dataclass(frozen=True)
class CvmInputs:
    aip: bytes
    cvm_list: bytes | None
    amount: int
    other_amount: int
    transaction_type: int
    #: Transaction Currency Code (5F2A) and the card's Application Currency Code (9F42).
    transaction_currency: bytes
    application_currency: bytes | None
    #: Terminal Capabilities byte 2 (CVM capability) in force for this amount.
    cvm_capability: int
    #: Reader CVM Required Limit exceeded (Book C-2: amount greater than the limit).
    cvm_required_limit_exceeded: bool
    unattended: bool
    #: Card (AIP byte 1 b2) and kernel (Kernel Configuration DF811B b6) both support
    #: on-device cardholder verification (C-2 v2.10 §7.5).
    on_device_cvm: bool = False


@dataclass(frozen=True)
class CvmDecision:
    #: The CVM to apply; None when cardholder verification failed.
    cvm: CvmKind | None
    #: CVM Results, 9F34: CVM code, condition, result.
    results: bytes
    tvr_bits: frozenset[str] = field(default_factory=frozenset)
    #: Whether "cardholder verification was performed" goes in the TSI (Book 3 §10.5).
    performed: bool = False


def _condition_met(condition: int, code: int, x: int, y: int, inputs: CvmInputs) -> bool | None:
    """Book 3 Annex C3, Table 40. None: condition code not understood (rule skipped)."""
    cash = inputs.transaction_type == 1
    cashback = inputs.transaction_type == 9 or inputs.other_amount > 0
    same_currency = (
        inputs.application_currency is not None
        and inputs.application_currency == inputs.transaction_currency
    )
    if condition == 0x00:
        return True
    if condition == 0x01:
        return cash and inputs.unattended
    if condition == 0x02:
        return (
            not (cash and inputs.unattended)
            and not (cash and not inputs.unattended)
            and not cashback
        )
    if condition == 0x03:
        return _supported(code, inputs.cvm_capability)
    if condition == 0x04:
        return cash and not inputs.unattended
    if condition == 0x05:
        return cashback
    if condition in (0x06, 0x07, 0x08, 0x09):
        # Book 3 §10.5: amount conditions apply only in the application currency.
        if not same_currency:
            return False
        limit = x if condition in (0x06, 0x07) else y
        return inputs.amount < limit if condition in (0x06, 0x08) else inputs.amount > limit
    return None


def _supported(code: int, capability: int) -> bool:
    """Terminal Capabilities byte 2 (Book 4 Annex A2): which CVMs the reader can perform."""
    if code == CVM_NO_CVM:
        return bool(capability & 0x08)
    if code == CVM_SIGNATURE:
        return bool(capability & 0x20)
    if code == CVM_ONLINE_PIN:
        return bool(capability & 0x40)
    # Offline PIN is not available on a contactless reader (Book C-2 §7.5).
    return False


def select_cvm(inputs: CvmInputs) -> CvmDecision:
    """Book C-2 §7.5 and Book 3 §10.5: choose the CVM and compute CVM Results (9F34)."""
    aip1 = inputs.aip[0] if inputs.aip else 0
    # C-2 §7.5.1: on-device cardholder verification supported by card and reader.
    if inputs.on_device_cvm:
        if inputs.cvm_required_limit_exceeded:
            return CvmDecision(
                CvmKind.CDCVM, bytes([0x01, 0x00, RESULT_SUCCESSFUL]), performed=True
            )
        return CvmDecision(CvmKind.NO_CVM, bytes([0x3F, 0x00, RESULT_SUCCESSFUL]), performed=True)
    # C-2 §7.5.2 / Book 3 §10.5: "Cardholder verification is supported" (AIP byte 1 b5) off.
    if not aip1 & 0x10:
        return CvmDecision(CvmKind.NO_CVM, bytes([0x3F, 0x00, RESULT_UNKNOWN]))
    cvm_list = inputs.cvm_list or b""
    if len(cvm_list) < 10 or len(cvm_list) % 2:
        # Book 3 §10.5: CVM List absent or without rules: ICC data missing, no CVM.
        return CvmDecision(
            CvmKind.NO_CVM, bytes([0x3F, 0x00, RESULT_UNKNOWN]), frozenset({"icc_data_missing"})
        )
    x = int.from_bytes(cvm_list[0:4], "big")
    y = int.from_bytes(cvm_list[4:8], "big")
    bits: set[str] = set()
    last: bytes | None = None
    for i in range(8, len(cvm_list), 2):
        rule, condition = cvm_list[i], cvm_list[i + 1]
        code = rule & 0x3F
        apply_next = bool(rule & 0x40)
        met = _condition_met(condition, code, x, y, inputs)
        if not met:
            continue  # condition not satisfied or not understood: next rule (§10.5)
        last = bytes([rule, condition, RESULT_FAILED])
        if code not in _RECOGNISED:
            bits.add("unrecognised_cvm")
        elif code == CVM_FAIL:
            break  # "Fail CVM processing": verification fails here
        elif _supported(code, inputs.cvm_capability):
            if code == CVM_NO_CVM:
                return CvmDecision(
                    CvmKind.NO_CVM,
                    bytes([rule, condition, RESULT_SUCCESSFUL]),
                    frozenset(bits),
                    True,
                )
            if code == CVM_SIGNATURE:
                return CvmDecision(
                    CvmKind.SIGNATURE,
                    bytes([rule, condition, RESULT_UNKNOWN]),
                    frozenset(bits),
                    True,
                )
            # The PIN is still to be entered (on a PIN entry device): TVR "online PIN
            # entered" is set by whoever collects it, never by CVM selection.
            return CvmDecision(
                CvmKind.ONLINE_PIN, bytes([rule, condition, RESULT_UNKNOWN]), frozenset(bits), True
            )
        if not apply_next:
            break
    # Book 3 §10.5.5: no CVM succeeded: cardholder verification was not successful.
    bits.add("cardholder_verification_not_successful")
    results = last if last is not None else bytes([0x3F, 0x00, RESULT_FAILED])
    return CvmDecision(None, results, frozenset(bits), True)
