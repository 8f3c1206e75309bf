"""Shared helpers for the kernel tests: drive a ContactlessTransaction against a card."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emv.kernel import (
    AidConfig,
    ContactlessTransaction,
    Outcome,
    TerminalConfig,
    TransactionRequest,
    default_aids,
)
from simulator.cards import VirtualCardRemovedError
from simulator.pki import load_test_ca_store

TRANSCRIPTS = Path(__file__).parents[1] / "transcripts"
UN = bytes.fromhex("A1B2C3D4")
DATE = "250601"
TIME = "101500"
CA_KEYS = load_test_ca_store()


def request(amount: int = 1000, **kwargs: Any) -> TransactionRequest:
    values: dict[str, Any] = {
        "amount": amount,
        "date": DATE,
        "time": TIME,
        "unpredictable_number": UN,
    }
    values.update(kwargs)
    return TransactionRequest(**values)


@dataclass
class Run:
    outcome: Outcome
    exchanges: list[tuple[bytes, bytes]] = field(default_factory=list)
    tx: ContactlessTransaction | None = None

    @property
    def commands(self) -> list[bytes]:
        return [command for command, _ in self.exchanges]

    def instructions(self) -> list[str]:
        return [command[:2].hex().upper() for command in self.commands]


def transact(
    card: Any,
    amount: int = 1000,
    *,
    config: TerminalConfig | None = None,
    aids: Sequence[AidConfig] | None = None,
    req: TransactionRequest | None = None,
    **request_kwargs: Any,
) -> Run:
    """The terminal's loop: move bytes between the kernel and the card until an outcome."""
    tx = ContactlessTransaction(
        config or TerminalConfig(),
        default_aids() if aids is None else aids,
        req or request(amount, **request_kwargs),
        CA_KEYS,
    )
    step = tx.start()
    while isinstance(step, bytes):
        try:
            response = card.transceive(step)
        except VirtualCardRemovedError:
            step = tx.card_removed()
            break
        step = tx.feed(response)
    return Run(step, list(tx.exchanges), tx)


def transcript_json(run: Run, req: TransactionRequest, description: str) -> dict[str, Any]:
    """The replay format of issue 3, plus the transaction and the expected outcome."""
    return {
        "description": description,
        "terminal": {
            "unpredictable_number": req.unpredictable_number.hex().upper(),
            "date": req.date,
            "time": req.time,
        },
        "transaction": {
            "amount": req.amount,
            "currency": req.currency,
            "type": req.transaction_type,
        },
        "expected": {
            "outcome": str(run.outcome.kind),
            "cryptogram": None if run.outcome.cryptogram is None else str(run.outcome.cryptogram),
            "tvr": run.outcome.tvr.hex().upper(),
            "apdus": run.outcome.apdu_count,
        },
        "exchanges": [
            {"command": c.hex().upper(), "response": r.hex().upper(), "note": annotate(c, r)}
            for c, r in run.exchanges
        ],
    }


def annotate(command: bytes, response: bytes) -> str:
    """A short human note for a transcript line (no card data)."""
    ins = command[1] if len(command) > 1 else 0
    sw = response[-2:].hex().upper()
    names = {
        0xA4: "SELECT",
        0xA8: "GET PROCESSING OPTIONS",
        0xB2: "READ RECORD",
        0xAE: "GENERATE AC",
        0xCA: "GET DATA",
        0xC0: "GET RESPONSE",
    }
    name = names.get(ins, f"INS {ins:02X}")
    if ins == 0xA4 and command[5:19] == b"2PAY.SYS.DDF01":
        name = "SELECT PPSE"
    elif ins == 0xA4:
        name = f"SELECT AID {command[5 : 5 + command[4]].hex().upper()}"
    elif ins == 0xB2:
        name = f"READ RECORD SFI {command[3] >> 3} record {command[2]}"
    elif ins == 0xCA:
        name = f"GET DATA {command[2:4].hex().upper()}"
    return f"{name} -> {sw}"


def load_transcript(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
