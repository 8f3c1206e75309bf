"""The command line as a script uses it (issue 18, item 6): the help's examples run, bad input
exits 2 and a failure 1, a closed output pipe ends a command quietly, and `pipos demo --json`
prints one JSON object per step."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from terminal.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[3]


def _transact_help() -> str:
    parser = build_parser(["emv"])
    emv = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = next(
        a
        for a in emv.choices["emv"]._actions
        if isinstance(a, argparse._SubParsersAction)  # the emv sub-commands
    )
    return " ".join((sub.choices["transact"].description or "").split())


def test_every_simulated_card_example_in_the_transact_help_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _transact_help()
    examples = sorted(set(re.findall(r"'(sim:[^' ]+)'", text)))
    assert "sim:mastercard?decline" in examples
    assert "behaviour=" not in text  # the old example, a behaviour called "behaviour"
    for url in examples:
        status = main(["emv", "transact", "--json", "--reader", url, "--amount", "5.00"])
        captured = capsys.readouterr()
        assert status in (0, 1), (url, captured.err)  # an outcome, never "bad input"
        assert json.loads(captured.out)["outcome"], url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sim:mastercard?behaviour=decline", "unknown behaviour 'behaviour'"),
        ("sim:visa?slow=abc", "slow must be a non-negative number"),
        ("sim:nosuchcard", "no such profile"),
    ],
)
def test_an_unknown_card_or_behaviour_is_bad_input(
    capsys: pytest.CaptureFixture[str], url: str, says: str
) -> None:
    assert main(["emv", "transact", "--reader", url, "--amount", "1.00"]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert f"reader {url!r}" in err
    assert "sim:PROFILE?BEHAVIOUR[=VALUE]" in err  # the form the URL takes
    assert "Traceback" not in err


def test_a_transcript_that_is_not_there_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.json"
    assert main(["emv", "transact", "--reader", f"replay:{missing}", "--amount", "1.00"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "pipos emv transact --record" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["emv", "transact", "--reader", "sim:visa", "--amount", "1", "--params", "/no/p.json"],
        ["emv", "transact", "--reader", "floppy:a", "--amount", "1.00"],
        ["run", "--config", "/no/such/terminal.toml"],
        ["queue", "status", "--db", "/no/such/queue.sqlite3"],
        ["kiosk", "--url", "ftp://x", "--code-file", "/no/such/kiosk-code"],
        ["qr", "merchant", "--amount", "1", "--params", "/no/p.json"],
        ["params", "update", "--config", "/no/such/terminal.toml"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipos")
    assert "Traceback" not in err


def test_a_failure_that_is_not_the_input_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The call is right; nothing answers on the acquirer's port (the discard port).
    argv = ["acquirer", "activation-code", "--merchant", "M1", "--url", "http://127.0.0.1:9"]
    assert main(argv) == 1
    assert "acquirer at http://127.0.0.1:9" in capsys.readouterr().err
    # The kiosk of a terminal that is not running: its code file is not there.
    assert main(["kiosk", "--code-file", str(tmp_path / "kiosk-code"), "--print-url"]) == 1
    assert "no such file" in capsys.readouterr().err


def _into_a_closed_pipe(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """`pipos ARGV | head -0`: the reader of the command's output has gone before it writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "terminal.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.integration
@pytest.mark.parametrize(
    "argv",
    [
        ("emv", "decode", "6F1A840E315041592E5359532E4444463031A5088801025F2D02656E"),
        ("params", "check"),
        ("--help",),
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_closed_pipe_ends_the_command_quietly(argv: tuple[str, ...]) -> None:
    result = _into_a_closed_pipe(*argv)
    assert result.stderr.decode() == ""  # no BrokenPipeError traceback
    assert result.returncode in (0, 128 + 13)  # done, or what a shell says for SIGPIPE


def test_demo_prints_one_json_object_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [s["step"] for s in steps] == [
        *("0", "1", "2", "3", "4", "5"),
        *("6a", "6b", "6c", "6d", "7", "8"),
    ]
    by_name = {s["name"]: s for s in steps}
    assert all({"step", "name", "title"} <= set(s) for s in steps)
    online = by_name["online_sale"]
    assert (online["state"], online["amount"], online["currency"]) == ("approved", 1234, 978)
    assert re.fullmatch(r"\d{6}\*{6}\d{4}", online["masked_pan"])
    assert by_name["offline_sale"]["state"] == "approved_offline"
    assert by_name["offline_sale"]["queue_count"] == 1
    assert (by_name["sync"]["accepted"], by_name["sync"]["queue_count"]) == (1, 0)
    assert by_name["refund"]["original_id"] == online["transaction_id"]
    assert by_name["declined_sale"]["state"] == "declined"
    assert "51" in by_name["declined_sale"]["message"]
    assert by_name["qr_reused_code"]["state"] == "declined"
    assert by_name["qr_merchant_code"]["payload"].startswith("000201")
    assert by_name["end_of_day"]["host_transactions"] >= 1
    assert "SALE" in by_name["receipt"]["receipt"]
