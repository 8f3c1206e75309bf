"""The terminal parameter file: loading, validation messages, currencies and amounts."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from emv.kernel.kernel_data import KERNEL_DATA_OBJECTS, KernelDataObject, check_kernel_data
from terminal.domain.errors import ConfigurationError, TerminalError
from terminal.domain.params import (
    CURRENCIES,
    NAMED_KERNEL_DATA,
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

ROOT = Path(__file__).resolve().parents[3]
DEFAULTS = ROOT / "terminal" / "data" / "default_params.json"
PARAMETERS_DOC = ROOT / "docs" / "parameters.md"
VISA, MASTERCARD = 0, 1  # the defaults' AIDs: Kernel 3, Kernel 2


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


def test_page_feedback_defaults_tones_on_and_announcement_off(doc: dict[str, Any]) -> None:
    assert default_params().terminal.sounds is True
    assert default_params().terminal.announce_amount is False
    # Both optional: a file from before they existed (an acquirer's) keeps working.
    del doc["terminal"]["announce_amount"]
    del doc["terminal"]["sounds"]
    terminal = parse_params(doc, "params.json").terminal
    assert (terminal.announce_amount, terminal.sounds) == (False, True)


def test_page_feedback_is_what_the_acquirer_set(doc: dict[str, Any]) -> None:
    doc["terminal"].update(announce_amount=True, sounds=False)
    terminal = parse_params(doc, "params.json").terminal
    assert (terminal.announce_amount, terminal.sounds) == (True, False)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("announce_amount", "yes", '"yes"'),
        ("announce_amount", 1, "1"),
        ("sounds", "false", '"false"'),
        ("sounds", None, "null"),
    ],
)
def test_page_feedback_must_be_a_boolean(
    key: str, value: object, shown: str, doc: dict[str, Any]
) -> None:
    doc["terminal"][key] = value
    assert errors_of(doc) == [f"params.json: terminal.{key}: expected true or false, got {shown}"]


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


# --- kernel data by tag (aids[].kernel_data) -------------------------------------------------


def parsed_aid(doc: dict[str, Any], index: int) -> Any:
    return parse_params(doc, "params.json").aids[index]


def test_defaults_claim_only_what_the_terminal_can_do() -> None:
    params = default_params()
    # No PIN entry device: no online PIN (TTQ byte 1 b3, 9F33 byte 2 b7), no contact chip.
    assert params.terminal.ttq == bytes.fromhex("22004000")
    assert params.terminal.terminal_capabilities == bytes.fromhex("0028C8")
    master = params.aids[MASTERCARD]
    assert {f"{tag:X}": value.hex().upper() for tag, value in master.kernel_data.items()} == {
        "DF8117": "00",
        "DF8118": "20",
        "DF8119": "08",
        "DF811B": "A0",  # only EMV mode, on-device CVM
        "DF811F": "C8",
    }
    assert params.aids[VISA].kernel_data == {}
    assert check_kernel_data(2, master.kernel_data) == []


# Each named key, the tag it maps onto for its kernel, a tag value, and the named value.
NAMED_CASES = [
    (MASTERCARD, "limits.contactless_transaction", "DF8124", "000000020000", 20000),
    (VISA, "limits.contactless_transaction", "DF8124", "000000020000", 20000),
    (MASTERCARD, "limits.contactless_transaction_on_device_cvm", "DF8125", "000000200000", 200000),
    (MASTERCARD, "limits.contactless_floor", "DF8123", "000000001000", 1000),
    (VISA, "limits.contactless_floor", "DF8123", "000000001000", 1000),
    (MASTERCARD, "limits.cvm_required", "DF8126", "000000002500", 2500),
    (VISA, "limits.cvm_required", "DF8126", "000000002500", 2500),
    (MASTERCARD, "terminal_floor_limit", "9F1B", "00002710", 10000),
    (VISA, "terminal_floor_limit", "9F1B", "00002710", 10000),
    (MASTERCARD, "tac.default", "DF8120", "FC50BCA000", "FC50BCA000"),
    (MASTERCARD, "tac.denial", "DF8121", "0000800000", "0000800000"),
    (MASTERCARD, "tac.online", "DF8122", "FC50BCF800", "FC50BCF800"),
    (MASTERCARD, "application_version", "9F09", "0003", "0003"),
    (VISA, "application_version", "9F09", "0097", "0097"),
    (VISA, "ttq", "9F66", "20004000", "20004000"),
]


def _set_named(aid: dict[str, Any], key: str, value: object) -> None:
    *section, name = key.split(".")
    (aid[section[0]] if section else aid)[name] = value


def _drop_named(aid: dict[str, Any], key: str) -> None:
    *section, name = key.split(".")
    (aid[section[0]] if section else aid).pop(name, None)


def _named_value(aid: Any, key: str) -> object:
    """The parsed value of a named key ("tac.default" is AidParams.tac_default)."""
    *section, name = key.split(".")
    if section == ["tac"]:
        value = getattr(aid, f"tac_{name}")
    else:
        value = getattr(getattr(aid, section[0]) if section else aid, name)
    return value.hex().upper() if isinstance(value, bytes) else value


@pytest.mark.parametrize(("index", "key", "tag", "raw", "named"), NAMED_CASES)
def test_a_named_key_may_be_given_as_its_tag(
    index: int, key: str, tag: str, raw: str, named: object, doc: dict[str, Any]
) -> None:
    assert NAMED_KERNEL_DATA[int(tag, 16)] == key
    aid = doc["aids"][index]
    _drop_named(aid, key)
    aid["kernel_data"] = {tag.lower(): raw}  # any case; stored as the tag
    parsed = parsed_aid(doc, index)
    assert _named_value(parsed, key) == named  # the named field takes the tag's value
    assert int(tag, 16) not in parsed.kernel_data  # held once, in the named field
    assert parsed.data_objects()[int(tag, 16)] == bytes.fromhex(raw)


@pytest.mark.parametrize(("index", "key", "tag", "raw", "named"), NAMED_CASES)
def test_a_value_given_both_ways_must_agree(
    index: int, key: str, tag: str, raw: str, named: object, doc: dict[str, Any]
) -> None:
    aid = doc["aids"][index]
    _set_named(aid, key, named)
    aid["kernel_data"] = {tag: raw}
    assert _named_value(parsed_aid(doc, index), key) == named  # the same both ways: fine

    other: object = named + 1 if isinstance(named, int) else "00" * (len(raw) // 2)
    _set_named(aid, key, other)
    messages = errors_of(doc)
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"params.json: aids[{index}].kernel_data.{tag}: {tag} (")
    assert f"disagrees with aids[{index}].{key} " in messages[0]
    assert "give it one way, or the same both ways" in messages[0]


def test_disagreeing_amounts_are_shown_in_money(doc: dict[str, Any]) -> None:
    doc["aids"][MASTERCARD]["kernel_data"]["DF8124"] = "000000020000"
    assert errors_of(doc) == [
        "params.json: aids[1].kernel_data.DF8124: DF8124 (Reader Contactless Transaction Limit "
        "(No On-device CVM)) 000000020000 (200.00 EUR) disagrees with "
        "aids[1].limits.contactless_transaction 15000 (150.00 EUR); give it one way, or the "
        "same both ways"
    ]


def test_limits_and_tac_may_be_given_only_as_tags(doc: dict[str, Any]) -> None:
    aid = doc["aids"][MASTERCARD]
    for key in ("limits", "tac", "application_version", "terminal_floor_limit"):
        del aid[key]
    aid["kernel_data"].update(
        {
            "DF8120": "F45084800C",
            "DF8121": "0000000000",
            "DF8122": "F45084800C",
            "DF8123": "000000000000",
            "DF8124": "000000015000",
            "DF8126": "000000005000",
            "9F09": "0002",
            "9F1B": "00000000",
        }
    )
    parsed = parsed_aid(doc, MASTERCARD)
    assert parsed.limits.contactless_transaction == 15000  # "000000015000" is 150.00
    assert parsed.limits.cvm_required == 5000
    assert parsed.limits.contactless_floor == 0
    assert parsed.limits.contactless_transaction_on_device_cvm is None
    assert parsed.tac_default == bytes.fromhex("F45084800C")
    assert parsed.tac_denial == bytes(5)
    assert parsed.application_version == bytes.fromhex("0002")
    assert set(parsed.kernel_data) == {0xDF8117, 0xDF8118, 0xDF8119, 0xDF811B, 0xDF811F}


def test_missing_named_keys_say_which_tag_would_do(doc: dict[str, Any]) -> None:
    master = doc["aids"][MASTERCARD]
    for key in ("limits", "tac", "application_version", "terminal_floor_limit"):
        del master[key]
    visa = doc["aids"][VISA]
    del visa["limits"], visa["tac"]
    visa["kernel_data"] = {"DF8124": "000000015000"}
    assert errors_of(doc) == [
        "params.json: aids[0].limits.contactless_floor: missing required field "
        "(or give it as kernel_data.DF8123)",
        "params.json: aids[0].limits.cvm_required: missing required field "
        "(or give it as kernel_data.DF8126)",
        "params.json: aids[0].tac: missing required field",  # Kernel 3 has no TAC tags
        "params.json: aids[1].application_version: missing required field "
        "(or give it as kernel_data.9F09)",
        "params.json: aids[1].terminal_floor_limit: missing required field "
        "(or give it as kernel_data.9F1B)",
        "params.json: aids[1].limits: missing required field "
        "(or give kernel_data DF8123, DF8124 and DF8126)",
        "params.json: aids[1].tac: missing required field "
        "(or give kernel_data DF8120, DF8121 and DF8122)",
    ]


@pytest.mark.parametrize(
    ("index", "entries", "expected"),
    [
        (
            MASTERCARD,
            {"DF8118": "27"},
            "aids[1].kernel_data.DF8118: DF8118 (CVM Capability - CVM Required) byte 1 sets "
            "bits the book leaves RFU (07; defined: F8)",
        ),
        (
            MASTERCARD,
            {"DF811F": "D8"},
            "aids[1].kernel_data.DF811F: DF811F (Security Capability) byte 1 sets bits the "
            "book leaves RFU (10; defined: E8)",
        ),
        (
            MASTERCARD,
            {"DF8117": "0000"},
            "aids[1].kernel_data.DF8117: DF8117 (Card Data Input Capability) must be 1 bytes, "
            "got 2",
        ),
        (
            MASTERCARD,
            {"DF8124": "00000001500A"},
            "aids[1].kernel_data.DF8124: DF8124 (Reader Contactless Transaction Limit (No "
            "On-device CVM)) is numeric (BCD digits only), got 00000001500A",
        ),
        (
            MASTERCARD,
            {"DF8131": "00080000080020"},
            "aids[1].kernel_data.DF8131: DF8131 (Phone Message Table) must be 8-240 bytes, got 7",
        ),
        (
            MASTERCARD,
            {"DF81FF": "00"},
            "aids[1].kernel_data.DF81FF: DF81FF is not a Kernel 2 configuration data object "
            "pipos knows (see docs/parameters.md for the list)",
        ),
        (
            VISA,
            {"DF8125": "000000100000"},
            "aids[0].kernel_data.DF8125: DF8125 (Reader Contactless Transaction Limit "
            "(On-device CVM)) configures Kernel 2, not Kernel 3",
        ),
        (
            VISA,
            {"DF811B": "20"},
            "aids[0].kernel_data.DF811B: DF811B (Kernel Configuration) configures Kernel 2, "
            "not Kernel 3",
        ),
        (
            MASTERCARD,
            {"9F66": "22004000"},
            "aids[1].kernel_data.9F66: 9F66 (Terminal Transaction Qualifiers) configures "
            "Kernel 3, not Kernel 2",
        ),
        (
            MASTERCARD,
            {"DF811B": "30"},
            "aids[1].kernel_data.DF811B: DF811B (Kernel Configuration) asks for the relay "
            "resistance protocol, which pipos does not implement",
        ),
        (
            MASTERCARD,
            {"DF811B": "40"},
            "aids[1].kernel_data.DF811B: DF811B (Kernel Configuration) says only mag-stripe "
            "mode: pipos implements EMV mode only",
        ),
        (
            MASTERCARD,
            {"9F35": "27"},
            "aids[1].kernel_data.9F35: 9F35 (Terminal Type) 27 is not a Book 4 Annex A1 type",
        ),
        (
            MASTERCARD,
            {"DF8119": 8},
            "aids[1].kernel_data.DF8119: DF8119 (CVM Capability - No CVM Required): expected "
            'its value as hex digits, two per byte (e.g. "20"), got 8',
        ),
        (
            MASTERCARD,
            {"DF8119": "0G"},
            "aids[1].kernel_data.DF8119: DF8119 (CVM Capability - No CVM Required): expected "
            'its value as hex digits, two per byte (e.g. "20"), got "0G"',
        ),
        (
            MASTERCARD,
            {"DF8119": "008"},
            "aids[1].kernel_data.DF8119: DF8119 (CVM Capability - No CVM Required): expected "
            'its value as hex digits, two per byte (e.g. "20"), got "008"',
        ),
        (
            MASTERCARD,
            {"CVM": "20"},
            'aids[1].kernel_data.CVM: expected a tag as hex digits, such as "DF811B", got "CVM"',
        ),
        (
            MASTERCARD,
            {"00DF8118": "20"},
            "aids[1].kernel_data.00DF8118: 00DF8118 is not a configuration data object pipos knows",
        ),
        (
            MASTERCARD,
            {"df8118": "20"},  # also given as "DF8118" by the defaults
            'aids[1].kernel_data.DF8118: given twice, as "DF8118" and as "df8118"',
        ),
    ],
)
def test_kernel_data_errors_name_the_object(
    index: int, entries: dict[str, object], expected: str, doc: dict[str, Any]
) -> None:
    doc["aids"][index].setdefault("kernel_data", {}).update(entries)
    messages = errors_of(doc)
    assert len(messages) == 1, messages
    assert messages[0].startswith("params.json: " + expected), messages


def test_kernel_data_must_be_an_object(doc: dict[str, Any]) -> None:
    doc["aids"][VISA]["kernel_data"] = ["DF8118", "20"]
    assert errors_of(doc) == [
        "params.json: aids[0].kernel_data: expected an object of tag to hex value, e.g. "
        '{"DF811B": "20"}, got ["DF8118", "20"]'
    ]


def test_every_kernel_data_problem_is_reported_together(doc: dict[str, Any]) -> None:
    doc["aids"][MASTERCARD]["kernel_data"].update(
        {"_note": "ignored", "DF8118": "27", "DF811B": "10", "9F66": "22004000"}
    )
    doc["aids"][VISA]["kernel_data"] = {"DF8125": "000000100000", "9F66": "FF004000"}
    with pytest.raises(ParamsError) as info:
        parse_params(doc, "params.json")
    assert {issue.path for issue in info.value.issues} == {
        "aids[1].kernel_data.DF8118",
        "aids[1].kernel_data.DF811B",
        "aids[1].kernel_data.9F66",
        "aids[0].kernel_data.DF8125",
        "aids[0].kernel_data.9F66",
    }


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["aids"][MASTERCARD].__setitem__("ttq", "22004000"),
            "aids[1].ttq: 9F66 (Terminal Transaction Qualifiers) configures Kernel 3, not Kernel 2",
        ),
        (
            lambda d: d["aids"][VISA].__setitem__("ttq", "62004000"),
            "aids[0].ttq: 9F66 (Terminal Transaction Qualifiers) byte 1 sets bits the book "
            "leaves RFU (40; defined: BF)",
        ),
        (
            lambda d: d["terminal"].__setitem__("ttq", "62004000"),
            "terminal.ttq: 9F66 (Terminal Transaction Qualifiers) byte 1 sets bits the book "
            "leaves RFU (40; defined: BF)",
        ),
        (
            lambda d: d["terminal"].__setitem__("terminal_capabilities", "0028CC"),
            "terminal.terminal_capabilities: 9F33 (Terminal Capabilities) byte 3 sets bits the "
            "book leaves RFU (04; defined: E8)",
        ),
        (
            lambda d: d["aids"][VISA].__setitem__("terminal_floor_limit", 2**32),
            "aids[0].terminal_floor_limit: 4294967296 does not fit 9F1B (Terminal Floor Limit, "
            "b4): at most 4294967295",
        ),
        (
            lambda d: d["aids"][MASTERCARD].__setitem__("fdda_version_0", True),
            "aids[1].fdda_version_0: fDDA is Kernel 3's (Book C-3 §5.8.2); Kernel 2 has none",
        ),
        (
            lambda d: d["aids"][VISA].__setitem__("extended_selection", "no"),
            'aids[0].extended_selection: expected true or false, got "no"',
        ),
    ],
)
def test_named_values_are_checked_as_their_objects(
    mutate: Any, expected: str, doc: dict[str, Any]
) -> None:
    mutate(doc)
    messages = errors_of(doc)
    assert len(messages) == 1, messages
    assert messages[0].startswith("params.json: " + expected), messages


def test_new_aid_flags(doc: dict[str, Any]) -> None:
    assert (parsed_aid(doc, VISA).extended_selection, parsed_aid(doc, VISA).fdda_version_0) == (
        False,
        False,
    )
    doc["aids"][VISA].update(extended_selection=True, fdda_version_0=True, ttq=None)
    visa = parsed_aid(doc, VISA)
    assert (visa.extended_selection, visa.fdda_version_0, visa.ttq) == (True, True, None)


_TERMINAL_TYPES = [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26]
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _object_values(definition: KernelDataObject) -> st.SearchStrategy[bytes]:
    """Values valid for one kernel data object's definition."""
    if definition.tag == 0x9F35:
        return st.sampled_from(_TERMINAL_TYPES).map(lambda b: bytes([b]))
    sizes = [
        n
        for n in range(definition.min_length, definition.max_length + 1)
        if not definition.entry_size or n % definition.entry_size == 0
    ]

    def of_size(n: int) -> st.SearchStrategy[bytes]:
        if definition.data_format == "n":
            return st.lists(st.integers(0, 9), min_size=2 * n, max_size=2 * n).map(
                lambda digits: bytes.fromhex("".join(map(str, digits)))
            )
        if definition.data_format == "an":
            return st.text(_ALNUM, min_size=n, max_size=n).map(str.encode)
        defined = definition.defined_bits
        if definition.tag == 0xDF811B:  # EMV mode; no relay resistance (not implemented)
            defined = (0xA8,)
        if defined is None:
            return st.binary(min_size=n, max_size=n)
        return st.tuples(*(_bits_within(mask) for mask in defined)).map(bytes)

    return st.sampled_from(sizes).flatmap(of_size)


def _bits_within(mask: int) -> st.SearchStrategy[int]:
    """A byte with no bit set outside `mask` (the bits a definition leaves RFU stay zero)."""
    return st.integers(0, 255).map(lambda byte: byte & mask)


@st.composite
def kernel_data_dicts(draw: st.DrawFn, kernel_id: int) -> dict[int, bytes]:
    """Any valid kernel data of one kernel (2 or 3)."""
    tags = sorted(tag for tag, item in KERNEL_DATA_OBJECTS.items() if kernel_id in item.kernels)
    chosen = draw(st.lists(st.sampled_from(tags), unique=True, max_size=len(tags)))
    data = {tag: draw(_object_values(KERNEL_DATA_OBJECTS[tag])) for tag in chosen}
    assume(check_kernel_data(kernel_id, data) == [])
    return data


def kernel_data_document(index: int, data: dict[int, bytes], lower: bool) -> dict[str, Any]:
    """The defaults with this AID's kernel data replaced by `data`; the named keys its tags
    carry left out, so that they take the tags' values."""
    document: dict[str, Any] = copy.deepcopy(json.loads(DEFAULTS.read_text(encoding="utf-8")))
    aid = document["aids"][index]
    for tag in data:
        key = NAMED_KERNEL_DATA.get(tag)
        if key is not None:
            _drop_named(aid, key)
    aid["kernel_data"] = {
        (f"{tag:x}" if lower else f"{tag:X}"): value.hex() for tag, value in data.items()
    }
    return document


@given(
    case=st.sampled_from([(VISA, 3), (MASTERCARD, 2)]).flatmap(
        lambda c: st.tuples(st.just(c[0]), kernel_data_dicts(c[1]), st.booleans())
    )
)
def test_any_valid_kernel_data_round_trips(case: tuple[int, dict[int, bytes], bool]) -> None:
    index, data, lower = case
    aid = parse_params(kernel_data_document(index, data, lower), "params.json").aids[index]
    objects = aid.data_objects()
    assert {tag: objects[tag] for tag in data} == data
    assert dict(aid.kernel_data) == {
        tag: value for tag, value in data.items() if tag not in NAMED_KERNEL_DATA
    }


# --- docs/parameters.md is the format, checked against the code -------------------------------


def kernel_data_table() -> list[str]:
    """The kernel data objects table of docs/parameters.md, as KERNEL_DATA_OBJECTS gives it."""
    lines = [
        "| tag | name | kernels | bytes | format | defined bits | AID key | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tag, item in KERNEL_DATA_OBJECTS.items():
        size = (
            f"{item.min_length}"
            if item.min_length == item.max_length
            else f"{item.min_length}-{item.max_length}"
        )
        if item.entry_size:
            size += f", entries of {item.entry_size}"
        bits = (
            "any" if item.defined_bits is None else " ".join(f"{b:02X}" for b in item.defined_bits)
        )
        key = f"`{NAMED_KERNEL_DATA[tag]}`" if tag in NAMED_KERNEL_DATA else ""
        kernels = ", ".join(str(k) for k in sorted(item.kernels))
        lines.append(
            f"| `{tag:X}` | {item.name} | {kernels} | {size} | {item.data_format} | {bits} "
            f"| {key} | {item.source} |"
        )
    return lines


def test_docs_kernel_data_table_matches_the_kernel() -> None:
    text = PARAMETERS_DOC.read_text(encoding="utf-8")
    start, end = "<!-- kernel-data-table:start -->\n", "\n<!-- kernel-data-table:end -->"
    documented = text[text.index(start) + len(start) : text.index(end)].splitlines()
    expected = kernel_data_table()
    assert documented == expected, "docs/parameters.md, replace the table with:\n" + "\n".join(
        expected
    )


def _accepted_keys(doc: dict[str, Any]) -> dict[str, set[str]]:
    """Every key the parser accepts, per section, read from its unknown-field messages."""
    doc["zz"] = 1
    for section in (
        doc["terminal"],
        doc["aids"][0],
        doc["aids"][0]["limits"],
        doc["aids"][0]["tac"],
        doc["aids"][0]["random_selection"],
        doc["ca_public_keys"][0],
        doc["offline"],
        doc["qr"],
    ):
        section["zz"] = 1
    keys = {}
    for message in errors_of(doc):
        path = message.split(": ")[1].removesuffix("zz").removesuffix(".")
        listed = message.split("expected one of: ")[1].rstrip(")")
        keys[path] = set(listed.split(", "))
    return keys


def test_docs_list_every_key_and_its_tag(doc: dict[str, Any]) -> None:
    text = PARAMETERS_DOC.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    first_cells = {row.split("|")[1].strip().strip("`"): row for row in rows}
    for path, keys in _accepted_keys(doc).items():
        prefix = {"aids[0].limits": "limits.", "aids[0].tac": "tac."}.get(path, "")
        for key in keys:
            assert prefix + key in first_cells, f"docs/parameters.md does not list {path}.{key}"
    for tag, key in NAMED_KERNEL_DATA.items():
        assert f"`{tag:X}`" in first_cells[key], f"docs: {key} does not name its tag {tag:X}"
    for tag, key in {
        0x9F33: "terminal_capabilities",
        0x9F66: "ttq",
        0x9F35: "terminal_type",
    }.items():
        assert f"`{tag:X}`" in first_cells[key]
