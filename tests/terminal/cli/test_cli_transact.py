"""`pipos emv transact`: the card part of a sale on a reader URL, printed for an engineer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terminal.cli import main


def transact(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object], str]:
    status = main(["emv", "transact", "--json", *args])
    captured = capsys.readouterr()
    document = json.loads(captured.out) if captured.out.strip() else {}
    return status, document, captured.err


@pytest.mark.parametrize(
    ("url", "amount", "outcome", "cryptogram", "kernel", "oda"),
    [
        ("sim:visa", "12.34", "online_request", "ARQC", 3, "not_performed"),
        ("sim:mastercard", "80.00", "online_request", "ARQC", 2, "successful"),
        ("sim:visa?decline", "5.00", "declined", "AAC", 3, "not_performed"),
        # C-2 v2.10 S910: a failed CDA ends the application (not a decline).
        ("sim:mastercard?corrupt=sdad", "5.00", "end_application", "ARQC", 2, "failed"),
    ],
)
def test_outcomes_for_simulated_cards(
    capsys: pytest.CaptureFixture[str],
    url: str,
    amount: str,
    outcome: str,
    cryptogram: str,
    kernel: int,
    oda: str,
) -> None:
    status, result, _ = transact(capsys, "--reader", url, "--amount", amount)
    assert result["outcome"] == outcome
    assert result["cryptogram"] == cryptogram
    assert result["kernel"] == kernel
    assert result["oda_result"] == oda
    assert status == (0 if outcome == "online_request" else 1)
    assert str(result["pan"]).count("*") >= 6
    assert isinstance(result["apdus"], int)
    assert result["apdus"] >= 4


def test_card_without_a_supported_application(capsys: pytest.CaptureFixture[str]) -> None:
    # Maestro (A0000000043060) is not among the embedded defaults' applications.
    status, result, _ = transact(capsys, "--reader", "sim:maestro", "--amount", "5.00")
    assert status == 1
    assert result["outcome"] == "end_application"
    assert result["reason"] == "Card not supported - try another card"


def test_card_removed_mid_transaction_asks_to_tap_again(capsys: pytest.CaptureFixture[str]) -> None:
    status, result, _ = transact(
        capsys, "--reader", "sim:visa?removed_after_n_commands=3", "--amount", "5.00"
    )
    assert status == 1
    assert result["outcome"] == "try_again"
    assert result["reason"] == "Card removed too early - tap again"


def test_recorded_transcript_replays_to_the_same_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transcript = tmp_path / "mastercard.json"
    _, live, _ = transact(
        capsys, "--reader", "sim:mastercard", "--amount", "80.00", "--record", str(transcript)
    )
    recorded = json.loads(transcript.read_text())
    assert len(recorded["exchanges"]) == live["apdus"]
    assert set(recorded["terminal"]) == {"unpredictable_number", "date", "time"}
    _, replayed, _ = transact(capsys, "--reader", f"replay:{transcript}", "--amount", "80.00")
    # CDA verifies again because the replay feeds the recorded unpredictable number and date.
    for key in ("outcome", "cryptogram", "oda_method", "oda_result", "tvr", "tsi", "pan", "apdus"):
        assert replayed[key] == live[key], key
    # Everything asked was recorded, and everything recorded was asked for.
    assert replayed["replay"] == {"unmatched": [], "unused": [], "differing": []}
    assert replayed["online_data"] == live["online_data"]


def test_json_shows_the_icc_data_the_acquirer_would_get_and_no_account_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, result, _ = transact(capsys, "--reader", "sim:visa", "--amount", "12.34")
    online = result["online_data"]
    assert isinstance(online, dict)
    # DE 55: the cryptogram and what it covers (EMV Book 2 v4.4 §8.1.1 Table 26) ...
    for tag in ("9F26", "9F27", "9F10", "9F36", "9F37", "95", "9A", "9C", "9F02", "5F2A", "82"):
        assert tag in online, tag
    assert online["9F02"] == "000000001234"
    # ... and none of the account data, which travels in fields of its own.
    for tag in ("5A", "57", "5F24", "5F20"):
        assert tag not in online, tag
    assert "4761739001010010" not in json.dumps(result)
    assert result["unanswered"] == []
    assert "replay" not in result  # a live (virtual) card: nothing to report


def test_a_transcript_that_lacks_a_record_fails_there_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transcript = tmp_path / "visa.json"
    transact(capsys, "--reader", "sim:visa", "--amount", "12.34", "--record", str(transcript))
    document = json.loads(transcript.read_text())
    records = [e for e in document["exchanges"] if e["command"].startswith("00B2")]
    document["exchanges"].remove(records[0])  # the card's first record is gone
    transcript.write_text(json.dumps(document))
    _, replayed, _ = transact(capsys, "--reader", f"replay:{transcript}", "--amount", "12.34")
    assert replayed["outcome"] != "online_request"
    missing = records[0]["command"]
    assert {"command": missing, "status": "6A83"} in replayed["unanswered"]
    assert replayed["replay"]["unmatched"] == [missing]


def test_text_output_lists_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emv", "transact", "--reader", "sim:mastercard", "--amount", "80.00"]) == 0
    out = capsys.readouterr().out
    for label in (
        "Amount",
        "Outcome",
        "Cryptogram",
        "Kernel",
        "AID",
        "Application",
        "PAN",
        "Expiry (YYMM)",
        "ODA method",
        "ODA result",
        "CVM",
        "TVR",
        "TSI",
        "APDUs",
    ):
        assert f"\n{label} " in "\n" + out, label
    assert "5413330089" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reader", "sim:visa", "--amount", "-1"], "amount"),
        (["--reader", "sim:visa", "--amount", "1.234"], "decimal"),
        (["--reader", "sim:visa", "--amount", "1", "--currency", "999"], "999"),
    ],
)
def test_bad_amounts_are_refused_before_the_card(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status = main(["emv", "transact", *args])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err


def test_unknown_reader_says_how_to_fix(capsys: pytest.CaptureFixture[str]) -> None:
    # Bad input: the exit status the help promises for it (argparse's 2).
    assert main(["emv", "transact", "--reader", "floppy:a", "--amount", "1.00"]) == 2
    err = capsys.readouterr().err
    assert "no reader driver for scheme 'floppy'" in err
    assert "sim:" in err
