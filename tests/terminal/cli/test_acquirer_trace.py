"""`pipos acquirer trace`: an ISO 8583 message as engineers read it, from hex, standard input
or a capture file; bad input exits 2 with what is wrong."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from terminal.acquirer.iso8583.codec import encode_message, frame
from terminal.acquirer.iso8583.profile import default_profile
from terminal.cli import main

from ..acquirer.test_iso8583_messages import _purchase

PROFILE = default_profile()
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def _message() -> bytes:
    request = _purchase()
    return encode_message(PROFILE, request.mti, request.fields, KEY)


def test_a_purchase_in_hex_is_printed_field_by_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acquirer", "trace", _message().hex(), "--mac-key", KEY.hex()]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "MTI 0200"
    assert "DE 002 Primary account number (PAN), n..19: 476173******0119" in out
    assert "4761739001010119" not in out
    assert "9F26 Application Cryptogram: 1122334455667788" in out
    assert out.rstrip().endswith("MAC: ok")


def test_a_framed_capture_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "capture.bin"
    capture.write_bytes(frame(PROFILE, _message()))
    assert main(["acquirer", "trace", "--binary", str(capture), "--framed"]) == 0
    assert "DE 049 Currency code, transaction, n3 (ISO 4217): 978" in capsys.readouterr().out


def test_hex_on_standard_input_with_spaces(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _message().hex()
    spaced = " ".join(text[i : i + 32] for i in range(0, len(text), 32)) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(spaced))
    assert main(["acquirer", "trace", "-"]) == 0
    assert "DE 011 Systems trace audit number (STAN), n6: 000042" in capsys.readouterr().out


def test_a_wrong_mac_is_said_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acquirer", "trace", _message().hex(), "--mac-key", "00" * 16]) == 1
    assert "MAC: WRONG" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["zz"], "not hex"),
        (["0200"], "not a message under"),
        (["00100200", "--framed"], "announces 16 bytes and 2 follow"),
        (["--binary", "/nonexistent/capture.bin"], "cannot read"),
    ],
)
def test_bad_input_exits_2_with_what_is_wrong(
    arguments: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["acquirer", "trace", *arguments]) == 2
    assert says in capsys.readouterr().err
