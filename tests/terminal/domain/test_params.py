"""The terminal parameter file: loading, validation messages, currencies and amounts."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal.domain.errors import ConfigurationError, TerminalError
from terminal.domain.params import (
    CURRENCIES,
    AmountError,
    ParamsError,
    UnknownCurrencyError,
    currency,
    default_params,
    format_amount,
    load_params,
    parse_amount,
    parse_params,
)

DEFAULTS = Path(__file__).resolve().parents[3] / "terminal" / "data" / "default_params.json"


@pytest.fixture
def doc() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFAULTS.read_text(encoding="utf-8"))
    return copy.deepcopy(data)


def errors_of(obj: object) -> list[str]:
    with pytest.raises(ParamsError) as info:
        parse_params(obj, "params.json")
    return info.value.messages


def capk(rid: str = "A000000999", index: str = "F1", exponent: str = "03") -> dict[str, Any]:
    modulus = bytes([0xC5]) + bytes(range(1, 127)) + b"\x01"  # 128 bytes, odd
    checksum = hashlib.sha1(
        bytes.fromhex(rid) + bytes.fromhex(index) + modulus + bytes.fromhex(exponent)
    ).hexdigest()
    return {
        "rid": rid,
        "index": index,
        "modulus": modulus.hex().upper(),
        "exponent": exponent,
        "expiry": "2030-12-31",
        "sha1": checksum.upper(),
    }


# --- valid files ---------------------------------------------------------------------------


def test_default_params_load() -> None:
    params = default_params()
    assert params.terminal.currency_code == 978
    assert params.terminal.currency_exponent == 2
    assert params.terminal.country_code == 276
    # The simulator's TEST CA keys, so the simulated cards' certificates verify (see test_cli_params).
    assert {key.rid.hex().upper() for key in params.ca_public_keys} == {"A000000003", "A000000004"}
    visa = params.aid_params(bytes.fromhex("A0000000031010"))
    master = params.aid_params(bytes.fromhex("A0000000041010"))
    assert visa is not None
    assert visa.kernel_id == 3
    assert master is not None
    assert master.kernel_id == 2
    assert visa.limits.cvm_required == 5000
    assert visa.rid == bytes.fromhex("A000000003")
    assert master.ddol == bytes.fromhex("9F3704")
    assert params.offline is not None
    assert params.offline.max_total_amount[978] == 50000


def test_emv_tag_values_are_encoded() -> None:
    tags = default_params().terminal.emv_tags()
    assert tags[0x9F1A] == bytes.fromhex("0276")
    assert tags[0x5F2A] == bytes.fromhex("0978")
    assert tags[0x9F35] == bytes.fromhex("22")
    assert tags[0x9F15] == bytes.fromhex("5999")
    assert len(tags[0x9F16]) == 15
    assert tags[0x9F1C] == b"PIPOS001"


def test_load_params_from_file_with_ca_keys(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["ca_public_keys"] = [capk(), capk(index="F2", exponent="010001")]
    path = tmp_path / "params.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    params = load_params(path)
    assert params.source == str(path)
    first, second = params.ca_public_keys
    assert (first.rid, first.index, first.exponent) == (bytes.fromhex("A000000999"), 0xF1, b"\x03")
    assert first.expiry == datetime.date(2030, 12, 31)
    assert len(first.modulus) == 128
    assert second.exponent == bytes.fromhex("010001")


def test_params_are_frozen() -> None:
    params = default_params()
    with pytest.raises(AttributeError):
        params.terminal.currency_code = 840  # type: ignore[misc]
    assert params.offline is not None
    with pytest.raises(TypeError):
        params.offline.max_total_amount[978] = 1  # type: ignore[index]


# --- each kind of error names its field ------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["aids"][1]["limits"].__setitem__("cvm_required", -5),
            "params.json: aids[1].limits.cvm_required: expected a non-negative integer amount "
            "in minor units, got -5",
        ),
        (
            lambda d: d["aids"][0]["limits"].__setitem__("cvm_required", 50.0),
            "params.json: aids[0].limits.cvm_required: expected an integer amount in minor "
            "units (money is never a float), got 50.0",
        ),
        (
            lambda d: d["aids"][0].__setitem__("terminal_floor_limit", "12.34"),
            "params.json: aids[0].terminal_floor_limit: expected an integer amount in minor "
            'units, got the string "12.34" (write 1234 for 12.34)',
        ),
        (
            lambda d: d["aids"][0]["limits"].__setitem__("contactless_floor", True),
            "params.json: aids[0].limits.contactless_floor: expected an integer amount in "
            "minor units, got true",
        ),
        (
            lambda d: d["terminal"].__setitem__("terminal_capabilities", "E0F8"),
            "params.json: terminal.terminal_capabilities: expected 3 bytes as 6 hex digits, "
            "got 2 bytes",
        ),
        (
            lambda d: d["terminal"].__setitem__("additional_terminal_capabilities", "zz"),
            "params.json: terminal.additional_terminal_capabilities: expected 5 bytes as 10 "
            'hex digits, got "zz"',
        ),
        (
            lambda d: d["terminal"].__setitem__("currency_code", 999),
            "params.json: terminal.currency_code: unknown ISO 4217 numeric currency code 999",
        ),
        (
            lambda d: d["terminal"].__setitem__("currency_exponent", 3),
            "params.json: terminal.currency_exponent: EUR has exponent 2 in ISO 4217, got 3",
        ),
        (
            lambda d: d["terminal"].__setitem__("country_code", "DE"),
            "params.json: terminal.country_code: expected a 3-digit numeric ISO 3166 country "
            'code, got "DE"',
        ),
        (
            lambda d: d["terminal"].__setitem__("language", "fr"),
            'params.json: terminal.language: expected "en" or "zh", got "fr"',
        ),
        (
            lambda d: d["terminal"].__setitem__("terminal_identifier", "T1"),
            "params.json: terminal.terminal_identifier: expected exactly 8 letters and digits, "
            'got 2: "T1"',
        ),
        (
            lambda d: d["terminal"].__setitem__("terminal_type", "42"),
            "params.json: terminal.terminal_type: expected a terminal type n2",
        ),
        (
            lambda d: d["terminal"].pop("ttq"),
            "params.json: terminal.ttq: missing required field",
        ),
        (
            lambda d: d["terminal"].__setitem__("colour", "red"),
            "params.json: terminal.colour: unknown field (expected one of: ",
        ),
        (
            lambda d: d["aids"][0]["tac"].__setitem__("online", "DC4004F8"),
            "params.json: aids[0].tac.online: expected 5 bytes as 10 hex digits, got 4 bytes",
        ),
        (
            lambda d: d["aids"][0].__setitem__("aid", "A000"),
            "params.json: aids[0].aid: expected 5 to 16 bytes as hex, got 2 bytes",
        ),
        (
            lambda d: d["aids"][1].__setitem__("aid", "A0000000031010"),
            "params.json: aids[1].aid: duplicate AID A0000000031010 (also aids[0])",
        ),
        (
            lambda d: d["aids"][0].__setitem__("kernel_id", 0),
            "params.json: aids[0].kernel_id: expected an integer 1..255, got 0",
        ),
        (
            lambda d: d["aids"][0].__setitem__("partial_selection", "yes"),
            'params.json: aids[0].partial_selection: expected true or false, got "yes"',
        ),
        (
            lambda d: d["aids"][0]["random_selection"].update(
                target_percent=50, max_target_percent=20
            ),
            "params.json: aids[0].random_selection.target_percent: target percentage 50 "
            "exceeds max_target_percent 20",
        ),
        (
            lambda d: d["offline"]["max_total_amount"].__setitem__("978", 1000),
            "params.json: offline.max_transaction_amount: 5000 exceeds the total offline "
            "limit 1000 for currency 978",
        ),
        (
            lambda d: d["offline"].__setitem__("max_total_amount", {"840": 1000}),
            "params.json: offline.max_total_amount: no total limit for the terminal currency 978",
        ),
        (
            lambda d: d["offline"].__setitem__("max_age_hours", 0),
            "params.json: offline.max_age_hours: expected an integer 1..8760, got 0",
        ),
        (
            lambda d: d.__setitem__("aids", []),
            "params.json: aids: no applications configured and QR is disabled",
        ),
        (
            lambda d: d.__setitem__("version", 2),
            "params.json: version: unsupported format version 2, expected 1",
        ),
    ],
)
def test_error_names_the_field(mutate: Any, expected: str, doc: dict[str, Any]) -> None:
    if expected.endswith("QR is disabled"):
        doc["qr"]["enabled"] = False
    mutate(doc)
    messages = errors_of(doc)
    assert any(message.startswith(expected) for message in messages), messages


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("rid", "A0000003", "ca_public_keys[0].rid: expected 5 bytes as 10 hex digits"),
        ("index", "192", "ca_public_keys[0].index: expected a 1-byte index as 2 hex digits"),
        ("modulus", "C3" * 63, "ca_public_keys[0].modulus: expected 64 to 248 bytes as hex"),
        ("modulus", "C3" * 249, "ca_public_keys[0].modulus: expected 64 to 248 bytes as hex"),
        ("modulus", "C2" * 128, "ca_public_keys[0].modulus: an RSA modulus is odd"),
        ("exponent", "05", 'ca_public_keys[0].exponent: expected exponent "03" or "010001"'),
        ("sha1", "00" * 20, "ca_public_keys[0].sha1: check sum does not match the key"),
        ("sha1", "00" * 19, "ca_public_keys[0].sha1: expected 20 bytes as 40 hex digits"),
        ("expiry", "31/12/2030", 'ca_public_keys[0].expiry: expected a date "YYYY-MM-DD"'),
    ],
)
def test_ca_key_errors(field: str, value: str, expected: str, doc: dict[str, Any]) -> None:
    key = capk()
    key[field] = value
    doc["ca_public_keys"] = [key]
    messages = errors_of(doc)
    assert any(m.startswith("params.json: " + expected) for m in messages), messages


def test_duplicate_ca_key(doc: dict[str, Any]) -> None:
    doc["ca_public_keys"] = [capk(), capk()]
    assert errors_of(doc) == [
        "params.json: ca_public_keys[1]: duplicate key RID A000000999 index F1 "
        "(also ca_public_keys[0])"
    ]


def test_all_errors_are_reported_together(doc: dict[str, Any]) -> None:
    doc["terminal"]["currency_code"] = "EUR"
    doc["terminal"].pop("merchant_identifier")
    doc["aids"][0]["limits"]["cvm_required"] = 50.5
    doc["aids"][1]["tac"]["denial"] = "00"
    doc["aids"][1]["limits"]["contactless_transaction"] = -1
    doc["ca_public_keys"] = [{"rid": "A000000003"}]
    with pytest.raises(ParamsError) as info:
        parse_params(doc, "params.json")
    error = info.value
    paths = [issue.path for issue in error.issues]
    assert set(paths) == {
        "terminal.merchant_identifier",
        "terminal.currency_code",
        "aids[0].limits.cvm_required",
        "aids[1].tac.denial",
        "aids[1].limits.contactless_transaction",
        "ca_public_keys[0].index",
        "ca_public_keys[0].modulus",
        "ca_public_keys[0].exponent",
    }
    assert str(error).count("\n") == len(error.issues) - 1
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, TerminalError)


def test_top_level_must_be_an_object() -> None:
    assert errors_of([1, 2]) == ["params.json: expected an object, got [1, 2]"]
    assert errors_of({}) == [
        "params.json: terminal: missing required field",
        "params.json: aids: missing required field",
    ]


def test_comment_keys_are_ignored(doc: dict[str, Any]) -> None:
    doc["aids"][0]["_note"] = "anything"
    assert parse_params(doc, "params.json").aids[0].label == "VISA"


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ParamsError, match=r"nope\.json: cannot read: No such file"):
        load_params(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "terminal": {,\n}', encoding="utf-8")
    with pytest.raises(ParamsError, match=r"broken\.json: invalid JSON at line 2 column 16"):
        load_params(broken)
    dup = tmp_path / "dup.json"
    dup.write_text('{"aids": [], "aids": []}', encoding="utf-8")
    with pytest.raises(ParamsError, match="duplicate key 'aids'"):
        load_params(dup)
    nan = tmp_path / "nan.json"
    nan.write_text('{"x": NaN}', encoding="utf-8")
    with pytest.raises(ParamsError, match="NaN is not a valid JSON number"):
        load_params(nan)


# --- currencies and amounts ------------------------------------------------------------------


def test_currency_table() -> None:
    assert currency(978).alpha == "EUR"
    assert (currency(392).alpha, currency(392).exponent) == ("JPY", 0)
    assert (currency(414).alpha, currency(414).exponent) == ("KWD", 3)
    assert currency(840).exponent == 2
    assert all(c.numeric == n and len(c.alpha) == 3 for n, c in CURRENCIES.items())
    assert len({c.alpha for c in CURRENCIES.values()}) == len(CURRENCIES)
    with pytest.raises(UnknownCurrencyError, match="unknown ISO 4217 numeric currency code 1"):
        currency(1)


@pytest.mark.parametrize(
    ("minor", "code", "text"),
    [
        (1234, 978, "12.34 EUR"),
        (5, 978, "0.05 EUR"),
        (0, 840, "0.00 USD"),
        (-250, 826, "-2.50 GBP"),
        (1234, 392, "1234 JPY"),
        (1, 414, "0.001 KWD"),
    ],
)
def test_format_amount(minor: int, code: int, text: str) -> None:
    assert format_amount(minor, code) == text


@pytest.mark.parametrize(
    ("text", "code", "minor"),
    [
        ("12.34", 978, 1234),
        ("12", 978, 1200),
        ("12.3", 978, 1230),
        (" 0.01 ", 978, 1),
        ("1234", 392, 1234),
        ("1.5", 414, 1500),
        ("9999999999.99", 978, 999_999_999_999),
    ],
)
def test_parse_amount(text: str, code: int, minor: int) -> None:
    assert parse_amount(text, code) == minor


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("-1.00", 978, "must not be negative"),
        ("+1", 978, "without a sign"),
        ("12.345", 978, "EUR has 2 decimal places at most"),
        ("12.0", 392, "JPY has no minor unit"),
        ("1,000.00", 978, "no thousands separators"),
        ("12,50", 978, "'.' as the decimal point"),
        ("", 978, "amount is empty"),
        ("twelve", 978, r"digits with an optional '\.'"),
        (".5", 978, r"digits with an optional '\.'"),
        ("1e3", 978, r"digits with an optional '\.'"),
        ("10000000000.00", 978, "exceeds the largest payable amount 9999999999.99 EUR"),
    ],
)
def test_parse_amount_rejects(text: str, code: int, message: str) -> None:
    with pytest.raises(AmountError, match=message) as info:
        parse_amount(text, code)
    assert isinstance(info.value, ValueError)


def test_amount_functions_reject_unknown_currency_and_floats() -> None:
    with pytest.raises(UnknownCurrencyError):
        format_amount(1, 999)
    with pytest.raises(UnknownCurrencyError):
        parse_amount("1", 999)
    with pytest.raises(AmountError, match="integer in minor units"):
        format_amount(1.5, 978)  # type: ignore[arg-type]


@given(
    minor=st.integers(min_value=0, max_value=999_999_999_999),
    code=st.sampled_from(sorted(CURRENCIES)),
)
def test_format_parse_round_trip(minor: int, code: int) -> None:
    text = format_amount(minor, code)
    number, alpha = text.split(" ")
    assert alpha == currency(code).alpha
    assert parse_amount(number, code) == minor
