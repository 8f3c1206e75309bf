"""Recorded transcripts (tests/transcripts/*.json) replay to the same outcome.

Each transcript is in the replay format of issue 3 (``terminal`` block with the
unpredictable number, date and time; ``exchanges`` of command/response hex), annotated with
a description, the transaction amount, per-exchange notes and the expected outcome. The
kernel is driven with the recorded terminal values, so every command it sends must equal the
recorded one byte for byte and the recorded signatures (fDDA, CDA) must verify again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emv.kernel import ContactlessTransaction, Outcome, TerminalConfig, default_aids
from simulator.cards import ScriptedCard

from .test_kernel_helpers import CA_KEYS, TRANSCRIPTS, load_transcript, request, transact

FILES = sorted(TRANSCRIPTS.glob("*.json"))


def replay(data: dict[str, Any]) -> Outcome:
    terminal = data["terminal"]
    req = request(
        data["transaction"]["amount"],
        unpredictable_number=bytes.fromhex(terminal["unpredictable_number"]),
        date=terminal["date"],
        time=terminal["time"],
    )
    tx = ContactlessTransaction(TerminalConfig(), default_aids(), req, CA_KEYS)
    step = tx.start()
    for index, exchange in enumerate(data["exchanges"]):
        assert isinstance(step, bytes), f"kernel finished early at exchange {index}"
        assert step.hex().upper() == exchange["command"], (
            f"exchange {index}: {exchange.get('note')}"
        )
        step = tx.feed(bytes.fromhex(exchange["response"]))
    assert not isinstance(step, bytes), "kernel wants more commands than were recorded"
    return step


def test_transcripts_exist() -> None:
    assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_transcript_replays_to_the_same_outcome(path: Path) -> None:
    data = load_transcript(path)
    outcome = replay(data)
    expected = data["expected"]
    assert str(outcome.kind) == expected["outcome"]
    assert (None if outcome.cryptogram is None else str(outcome.cryptogram)) == expected[
        "cryptogram"
    ]
    assert outcome.tvr.hex().upper() == expected["tvr"]
    assert outcome.apdu_count == expected["apdus"]


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_transcript_through_strict_scripted_card(path: Path) -> None:
    data = load_transcript(path)
    card = ScriptedCard.from_transcript(data["exchanges"])
    terminal = data["terminal"]
    run = transact(
        card,
        req=request(
            data["transaction"]["amount"],
            unpredictable_number=bytes.fromhex(terminal["unpredictable_number"]),
            date=terminal["date"],
            time=terminal["time"],
        ),
    )
    card.assert_finished()
    assert str(run.outcome.kind) == data["expected"]["outcome"]


def test_other_unpredictable_number_breaks_the_recorded_signature() -> None:
    """fDDA signs the terminal's UN: replaying with another UN must not verify."""
    data = load_transcript(TRANSCRIPTS / "visa_offline_approved.json")
    data["terminal"]["unpredictable_number"] = "00000000"
    tx = ContactlessTransaction(
        TerminalConfig(), default_aids(), request(1000, unpredictable_number=bytes(4)), CA_KEYS
    )
    step = tx.start()
    for exchange in data["exchanges"]:
        assert isinstance(step, bytes)
        step = tx.feed(bytes.fromhex(exchange["response"]))
    assert isinstance(step, Outcome)
    assert "dda_failed" in step.tvr_bits
    assert str(step.kind) != "approved"


def test_tampered_cda_response_is_rejected() -> None:
    data = load_transcript(TRANSCRIPTS / "mastercard_cda_approved.json")
    last = data["exchanges"][-1]
    raw = bytearray(bytes.fromhex(last["response"]))
    raw[-10] ^= 0x01  # inside the SDAD
    last["response"] = raw.hex().upper()
    outcome = replay(data)
    # C-2 v2.10 S910: a failed CDA is End Application, never an approval.
    assert str(outcome.kind) == "end_application"
    assert "cda_failed" in outcome.tvr_bits
