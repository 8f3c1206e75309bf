"""`pipos params check`: a technician validates a parameter file before installing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terminal.cli import main
from terminal.domain.params import default_params

DEFAULTS = Path(__file__).resolve().parents[3] / "terminal" / "data" / "default_params.json"
SIM_CA_KEYS = Path(__file__).resolve().parents[3] / "simulator" / "data" / "test_ca_keys.json"


def test_embedded_defaults_are_valid_and_summarised(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "check"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out
    assert "A0000000031010   VISA         kernel 3  contactless limit 150.00 EUR" in out
    assert "A000000004 F1  1408 bits, expires 2035-12-31, checksum ok" in out
    assert "offline: up to 50.00 EUR each, 100 payments, 72 h" in out


def test_embedded_ca_keys_are_exactly_the_simulator_test_keys() -> None:
    shipped = {(k["rid"], k["index"], k["modulus"]) for k in json.loads(SIM_CA_KEYS.read_text())}
    embedded = {
        (k.rid.hex().upper(), f"{k.index:02X}", k.modulus.hex().upper())
        for k in default_params().ca_public_keys
    }
    assert embedded == shipped


def test_every_problem_is_listed_with_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(DEFAULTS.read_text())
    document["aids"][1]["limits"]["cvm_required"] = -5
    document["aids"][0]["limits"]["contactless_floor"] = 12.5
    document["terminal"]["currency_code"] = 999
    path = tmp_path / "params.json"
    path.write_text(json.dumps(document))
    assert main(["params", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("3 problems found:")
    assert f"{path}: aids[1].limits.cvm_required:" in err
    assert "-5" in err
    assert f"{path}: aids[0].limits.contactless_floor:" in err
    assert "unknown ISO 4217 numeric currency code 999" in err


def test_unreadable_json_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"terminal": {,}}')
    assert main(["params", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err
