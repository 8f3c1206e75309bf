"""`pipos qr decode` and `pipos qr merchant` (through the module's own register())."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from emv.qr import parse_mpm
from terminal.cli import qr as cli_qr
from tests.emv.test_qr_cpm import SPEC_TRACK2
from tests.emv.test_qr_mpm import SPEC


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pipos")
    cli_qr.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_decode_merchant_code_names_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("qr", "decode", SPEC) == 0
    out = capsys.readouterr().out
    assert "CRC ok" in out
    assert "59 Merchant Name: BEST TRANSPORT" in out
    assert "29 Merchant Account Information" in out


def test_decode_consumer_code_json_masks_the_pan(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("qr", "decode", SPEC_TRACK2, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pan"] == "123456******3458"
    assert "1234567890123458" not in json.dumps(data)


def test_decode_wallet_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("qr", "decode", "134567890123456789") == 0
    out = capsys.readouterr().out
    assert "wechatpay" in out
    assert "1345678901234" not in out


def test_decode_bad_code_exits_2_with_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("qr", "decode", SPEC[:-1] + "0") == 2
    err = capsys.readouterr().err
    assert "field 63" in err
    assert "CRC" in err


def test_merchant_code_with_amount_and_svg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svg = tmp_path / "code.svg"
    assert run("qr", "merchant", "--amount", "12.34", "--svg", str(svg)) == 0
    payload = capsys.readouterr().out.strip()
    p = parse_mpm(payload)
    assert (p.initiation, p.amount, p.currency, p.country) == ("dynamic", "12.34", 978, "DE")
    assert svg.read_text().lstrip().startswith("<?xml")
    assert "<svg" in svg.read_text()


def test_merchant_code_without_amount_is_static(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("qr", "merchant") == 0
    assert parse_mpm(capsys.readouterr().out.strip()).initiation == "static"
