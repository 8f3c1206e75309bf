"""Contactless kernel: host processing time per transaction and APDUs per transaction.

Host time is the time spent inside the kernel (``start``/``feed``, ODA included) for one
complete transaction against an in-process virtual card; the card's own time is excluded.
APDU counts are compared with the minimum the card's AFL allows: SELECT PPSE, SELECT AID,
GET PROCESSING OPTIONS, one READ RECORD per AFL record, and GENERATE AC for Kernel 2.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import Row
from emv.kernel import (
    ContactlessTransaction,
    Outcome,
    TerminalConfig,
    TransactionRequest,
    default_aids,
)
from simulator.cards import load_card
from simulator.pki import load_test_ca_store

_CASES = (
    # (label, profile, amount, Kernel 2 sends GENERATE AC)
    ("Kernel 3 Visa qVSDC, fDDA, offline approval", "visa", 1000, False),
    ("Kernel 2 Mastercard M/Chip, CDA, offline approval", "mastercard", 1000, True),
    ("Kernel 2 Mastercard M/Chip, CDA, online (ARQC)", "mastercard", 7000, True),
)


def _one(card: Any, amount: int, ca_keys: Any) -> tuple[float, Outcome]:
    req = TransactionRequest(
        amount=amount, date="250601", time="120000", unpredictable_number=b"\x12\x34\x56\x78"
    )
    tx = ContactlessTransaction(TerminalConfig(), default_aids(), req, ca_keys)
    spent = 0.0
    start = time.perf_counter()
    step = tx.start()
    spent += time.perf_counter() - start
    while isinstance(step, bytes):
        response = card.transceive(step)
        start = time.perf_counter()
        step = tx.feed(response)
        spent += time.perf_counter() - start
    return spent, step


def run() -> list[Row]:
    ca_keys = load_test_ca_store()
    rows: list[Row] = []
    for label, profile, amount, genac in _CASES:
        # One fresh card per transaction so card risk management never drifts.
        cards = [load_card(profile) for _ in range(15)]
        samples: list[float] = []
        outcome: Outcome | None = None
        for card in cards:
            spent, outcome = _one(card, amount, ca_keys)
            samples.append(spent)
        assert outcome is not None
        afl_records = sum(entry.last - entry.first + 1 for entry in cards[0].profile.afl)
        minimum = 3 + afl_records + (1 if genac else 0)
        rows.append((f"{label}: host time", statistics.median(samples) * 1e3, "ms/transaction"))
        rows.append((f"{label}: APDUs ({outcome.kind})", float(outcome.apdu_count), "APDUs"))
        rows.append((f"{label}: AFL minimum", float(minimum), "APDUs"))
    return rows
