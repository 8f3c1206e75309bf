"""`pipos emv decode`, run as the installed console script a payment engineer would use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The installed `pipos` console script in a subprocess.
pytestmark = pytest.mark.integration

PIPOS = Path(sys.executable).with_name("pipos")

# A Mastercard READ RECORD response (SFI 1 record 1) with its status word.
READ_RECORD = (
    "7081A5"
    "5F24032912315A0854133300890104345F3401009F0702FF00"
    "8C219F02069F03069F1A0295055F2A029A039C019F37049F35019F45029F4C089F3403"
    "8D0C910A8A0295059F37049F4C08"
    "8E0E000000000000000042031E031F03"
    "9F0D05B4508400009F0E0500000000009F0F05B470840000"
    "5F280200565F300202015F25032001019F4A0182"
    "571354133300890104 34D29122011234567890000F".replace(" ", "")
    + "9F080200029F420209789F440102"
    "9000"
)


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PIPOS), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def _fixed_length(hex_record: str) -> str:
    """Recompute the outer 70 length so the fixture stays readable above."""
    body = bytes.fromhex(hex_record)[3:-2]
    return ("7081" + f"{len(body):02X}" + body.hex() + "9000").upper()


@pytest.fixture(scope="module")
def record() -> str:
    return _fixed_length(READ_RECORD)


def test_decodes_a_read_record_response_with_names_and_values(record: str) -> None:
    result = run("emv", "decode", record)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "70 READ RECORD Response Message Template" in out
    assert "5A Application Primary Account Number (PAN): 541333******0434" in out
    assert "5F24 Application Expiration Date: 2029-12-31 (291231)" in out
    assert "57 Track 2 Equivalent Data: 541333******0434 D 2912 [" in out
    assert "8E Cardholder Verification Method (CVM) List: X=0 Y=0:" in out
    assert "Signature (paper) if terminal supports the CVM, else fail" in out
    assert "SW 9000 (success)" in out
    assert "5413330089010434" not in out
    assert "1234567890" not in out


def test_reveal_shows_the_full_pan(record: str) -> None:
    result = run("emv", "decode", "--reveal", record)
    assert "5A Application Primary Account Number (PAN): 5413330089010434" in result.stdout


def test_json_output(record: str) -> None:
    result = run("emv", "decode", "--json", record)
    document = json.loads(result.stdout)
    (template,) = document["objects"]
    assert template["tag"] == "70"
    by_tag = {child["tag"]: child for child in template["children"]}
    assert by_tag["5A"]["value"] == "541333******0434"
    assert "hex" not in by_tag["5A"]
    assert by_tag["9F07"]["hex"] == "FF00"
    assert document["status_word"] == {"sw": "9000", "meaning": "success"}


def test_gpo_response_explains_bits() -> None:
    result = run(
        "emv", "decode", "77 0E 82 02 19 80 94 08 08 01 01 00 10 01 02 01 95 05 80 00 04 80 00"
    )
    assert result.returncode == 0, result.stderr
    assert "- CDA supported" in result.stdout
    assert "SFI 1 records 1-1 (0 for ODA); SFI 2 records 1-2 (1 for ODA)" in result.stdout


def test_tvr_bits_explained() -> None:
    result = run("emv", "decode", "950580000480 00")
    assert "- Offline data authentication was not performed" in result.stdout
    assert "- Online PIN entered" in result.stdout
    assert "- Transaction exceeds floor limit" in result.stdout


def test_reads_standard_input(record: str) -> None:
    result = run("emv", "decode", "-", stdin=record + "\n")
    assert result.returncode == 0
    assert "541333******0434" in result.stdout


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("70 0Z", "not hex: character 'Z' at position 3"),
        ("7003820", "odd number of hex digits (7)"),
        ("9F02 81", "malformed TLV at offset 3 in tag 9F02: expected 1 length byte"),
        ("5A 05 4761", "malformed TLV at offset 0 in tag 5A: expected 5 value bytes"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(argument: str, message: str) -> None:
    result = run("emv", "decode", argument)
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# Responses of a real Mastercard (M/Chip, Maestro co-badged), as published in public
# integration fixtures: the PPSE directory, the application FCI and the GPO response.
REAL_PPSE = (
    "6F39840E325041592E5359532E4444463031A527BF0C2461104F07A00000000410108701019F2A0102"
    "61104F07A00000000422038701029F2A0102"
)
REAL_FCI = (
    "6F2D8407A0000000042203A522500A4D6173746572436172648701019F38039F3501BF0C0A9F6E0703800000313400"
)
REAL_GPO = "770E8202198094081002040020010201"


def test_real_ppse_directory_is_decoded() -> None:
    result = run("emv", "decode", "--json", REAL_PPSE + "9000")
    assert result.returncode == 0, result.stderr
    (fci,) = json.loads(result.stdout)["objects"]
    proprietary = next(c for c in fci["children"] if c["tag"] == "A5")
    (discretionary,) = proprietary["children"]
    entries = [
        {child["tag"]: child["value"] for child in entry["children"]}
        for entry in discretionary["children"]
    ]
    assert entries == [
        {"4F": "A0000000041010", "87": "01", "9F2A": "02"},
        {"4F": "A0000000042203", "87": "02", "9F2A": "02"},
    ]


def test_real_application_fci_and_gpo_are_decoded() -> None:
    fci = run("emv", "decode", REAL_FCI).stdout
    assert "50 Application Label: MasterCard" in fci
    assert "9F38 Processing Options Data Object List (PDOL): 9F3501" in fci
    gpo = run("emv", "decode", REAL_GPO).stdout
    assert "82 Application Interchange Profile: 1980" in gpo
    assert "(AFL): SFI 2 records 2-4 (0 for ODA); SFI 4 records 1-2 (1 for ODA)" in gpo
