"""The sans-I/O EMV contactless kernel: Entry Point (Book B), Kernel 2 (Book C-2, Mastercard
M/Chip) and Kernel 3 (Book C-3, Visa qVSDC), with CVM processing, terminal risk management,
terminal action analysis, TVR/TSI and outcomes.

Drive it with::

    tx = ContactlessTransaction(config, aids, request, ca_keys)
    step = tx.start()
    while isinstance(step, bytes):
        step = tx.feed(reader.transceive(step))   # on removal: step = tx.card_removed()
    outcome = step
"""

from __future__ import annotations

from .config import (
    DEFAULT_TERMINAL_DATA,
    DEFAULT_TTQ,
    KERNEL_MASTERCARD,
    KERNEL_VISA,
    AidConfig,
    KernelConfigError,
    TerminalConfig,
    TransactionRequest,
    default_aids,
)
from .outcome import CardData, CryptogramKind, CvmKind, OdaStatus, Outcome, OutcomeKind, mask_pan
from .transaction import ContactlessTransaction, KernelStateError, Reasons
from .tvr import Tsi, Tvr

__all__ = [
    "DEFAULT_TERMINAL_DATA",
    "DEFAULT_TTQ",
    "KERNEL_MASTERCARD",
    "KERNEL_VISA",
    "AidConfig",
    "CardData",
    "ContactlessTransaction",
    "CryptogramKind",
    "CvmKind",
    "KernelConfigError",
    "KernelStateError",
    "OdaStatus",
    "Outcome",
    "OutcomeKind",
    "Reasons",
    "TerminalConfig",
    "TransactionRequest",
    "Tsi",
    "Tvr",
    "default_aids",
    "mask_pan",
]
