"""`pipos params check`: a technician validates a parameter file before installing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terminal.cli import main
from terminal.domain.params import default_params

DEFAULTS = Path(__file__).resolve().parents[3] / "terminal" / "data" / "default_params.json"
SIM_CA_KEYS = Path(__file__).resolve().parents[3] / "simulator" / "data" / "test_ca_keys.json"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "parameters.md"


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


def test_each_aid_lists_its_kernel_data_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "check"]) == 0
    out = capsys.readouterr().out
    master = out[out.index("A0000000041010") : out.index("CA public keys")]
    assert "    DF811B Kernel Configuration = A0\n" in master
    assert "    DF8118 CVM Capability - CVM Required = 20\n" in master
    assert "    DF8120 Terminal Action Code - Default = F45084800C\n" in master
    # The effective limits, as the tags the kernel gets and in money.
    assert (
        "    DF8124 Reader Contactless Transaction Limit (No On-device CVM) = 000000015000 "
        "(150.00 EUR)\n" in master
    )
    assert "    9F1B Terminal Floor Limit = 00000000 (0.00 EUR)\n" in master
    assert "on-device CVM 1000.00 EUR" in master
    visa = out[out.index("A0000000031010") : out.index("A0000000041010")]
    assert "    9F66 Terminal Transaction Qualifiers = 22004000 (the terminal's)\n" in visa
    assert "DF811B" not in visa


def test_a_claimed_online_pin_is_shown_as_the_kernel_sends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(DEFAULTS.read_text())
    document["terminal"]["ttq"] = "26004000"  # online PIN, but there is no PIN entry device
    document["aids"][1]["kernel_data"]["DF8118"] = "60"
    path = tmp_path / "params.json"
    path.write_text(json.dumps(document))
    assert main(["params", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "    9F66 Terminal Transaction Qualifiers = 26004000 (the terminal's), sent as 22004000: "
        "no PIN entry device, no online PIN\n" in out
    )
    assert (
        "    DF8118 CVM Capability - CVM Required = 60, sent as 20: no PIN entry device, "
        "no online PIN\n" in out
    )


def test_kernel_data_errors_read_well(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = json.loads(DEFAULTS.read_text())
    document["aids"][1]["kernel_data"]["DF8118"] = "27"
    document["aids"][1]["kernel_data"]["DF8124"] = "000000020000"
    path = tmp_path / "params.json"
    path.write_text(json.dumps(document))
    assert main(["params", "check", str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.replace(str(path), "params.json").splitlines()
    assert lines == [
        "2 problems found:",
        "  params.json: aids[1].kernel_data.DF8118: DF8118 (CVM Capability - CVM Required) "
        "byte 1 sets bits the book leaves RFU (07; defined: F8)",
        "  params.json: aids[1].kernel_data.DF8124: DF8124 (Reader Contactless Transaction "
        "Limit (No On-device CVM)) 000000020000 (200.00 EUR) disagrees with "
        "aids[1].limits.contactless_transaction 15000 (150.00 EUR); give it one way, or the "
        "same both ways",
    ]
    # docs/parameters.md shows this very output.
    assert "\n".join(lines) in DOCS.read_text(encoding="utf-8")
