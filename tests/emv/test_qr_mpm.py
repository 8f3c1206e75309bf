"""EMVCo Merchant-Presented Mode: the specification's example, CRC, validation, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.qr import MpmError, MpmField, build_merchant_payload, crc16_ccitt_false, parse_mpm
from emv.qr.mpm import LanguageTemplate, crc_for, encode_mpm

# EMVCo MPM specification v1.1, Appendix A example (dynamic, two account templates, Chinese
# language template, CRC A13A). Lengths count characters; the CRC covers UTF-8 bytes.
SPEC = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)


def test_crc16_ccitt_false_check_value() -> None:
    # The catalogue check value of CRC-16/CCITT-FALSE over "123456789".
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_spec_example_crc_is_over_utf8_bytes() -> None:
    assert crc_for(SPEC[:-8]) == "A13A"


def test_spec_example_decodes_field_by_field() -> None:
    p = parse_mpm(SPEC)
    assert p.initiation == "dynamic"
    assert [a.id for a in p.accounts] == ["29", "31"]
    assert p.field("29") is not None
    assert p.field("29").child("00").value == "D15600000000"  # type: ignore[union-attr]
    assert p.field("29").child("05").value == "A93FO3230Q"  # type: ignore[union-attr]
    assert p.field("31").child("03").value == "12345678"  # type: ignore[union-attr]
    assert (p.mcc, p.country, p.merchant_name, p.merchant_city) == (
        "4111",
        "CN",
        "BEST TRANSPORT",
        "BEIJING",
    )
    assert p.currency == 156
    assert p.amount == "23.72"
    assert p.amount_minor(2) == 2372
    assert p.get("55") == "01"
    assert p.additional == {"03": "1234", "06": "***", "07": "A6008667", "09": "ME"}
    assert p.language == LanguageTemplate("ZH", "最佳运输", "北京")
    assert p.field("91").child("00").value == "A011223344998877"  # type: ignore[union-attr]
    assert p.crc == "A13A"


def test_spec_example_re_encodes_exactly() -> None:
    assert parse_mpm(SPEC).encode() == SPEC


def test_spec_example_encodes_exactly_from_parts() -> None:
    fields = [
        MpmField("00", "01"),
        MpmField("01", "12"),
        MpmField.template("29", [MpmField("00", "D15600000000"), MpmField("05", "A93FO3230Q")]),
        MpmField.template("31", [MpmField("00", "D15600000001"), MpmField("03", "12345678")]),
        MpmField("52", "4111"),
        MpmField("58", "CN"),
        MpmField("59", "BEST TRANSPORT"),
        MpmField("60", "BEIJING"),
        MpmField.template(
            "64", [MpmField("00", "ZH"), MpmField("01", "最佳运输"), MpmField("02", "北京")]
        ),
        MpmField("54", "23.72"),
        MpmField("53", "156"),
        MpmField("55", "01"),
        MpmField.template(
            "62",
            [
                MpmField("03", "1234"),
                MpmField("06", "***"),
                MpmField("07", "A6008667"),
                MpmField("09", "ME"),
            ],
        ),
        MpmField.template("91", [MpmField("00", "A011223344998877"), MpmField("07", "12345678")]),
    ]
    assert encode_mpm(fields) == SPEC


def test_builder_makes_a_dynamic_code_that_parses_back() -> None:
    text = build_merchant_payload(
        accounts=[MpmField.template("26", [MpmField("00", "com.pipos"), MpmField("01", "M1")])],
        mcc="5999",
        currency=978,
        country="DE",
        merchant_name="PIPOS DEMO SHOP",
        merchant_city="BERLIN",
        amount_minor=1234,
        additional={"05": "Q0011"},
    )
    p = parse_mpm(text)
    assert text.startswith("000201010212")
    assert (p.amount, p.amount_minor(2), p.additional["05"]) == ("12.34", 1234, "Q0011")


def test_builder_without_amount_is_static() -> None:
    text = build_merchant_payload(
        accounts=[MpmField("02", "4111111111111111")],
        mcc="5999",
        currency=392,
        country="JP",
        merchant_name="SHOP",
        merchant_city="TOKYO",
    )
    assert parse_mpm(text).initiation == "static"


def _with_crc(body: str) -> str:
    return body + "6304" + crc_for(body)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (SPEC[:-1] + ("B" if SPEC[-1] != "B" else "C"), "63", "CRC A13A"),
        (SPEC[:40], "29", "remain"),
        ("", None, "non-empty"),
        (_with_crc("000202"), "00", "Payload Format Indicator"),
        (_with_crc("000201010213"), "01", "'11' (static) or '12' (dynamic)"),
        (
            _with_crc("0002010102110208411111115204599953039785802DE5904SHOP"),
            "60",
            "Merchant City",
        ),
        (
            _with_crc("00020102084111111152045999530397853039785802DE5904SHOP6006BERLIN"),
            "53",
            "repeats",
        ),
        (
            _with_crc("0002010208411111115204599X53039785802DE5904SHOP6006BERLIN"),
            "52",
            "4 digits",
        ),
        (
            _with_crc("0002010208411111115204599953039785502035802DE5904SHOP6006BERLIN"),
            "57",
            "ID 57 because ID 55 is 03",
        ),
        (
            _with_crc("000201261001061234565204599953039785802DE5904SHOP6006BERLIN"),
            "26",
            "Globally Unique Identifier",
        ),
    ],
)
def test_errors_name_the_field_and_what_was_expected(
    text: str, field: str | None, words: str
) -> None:
    with pytest.raises(MpmError) as info:
        parse_mpm(text)
    assert info.value.field == field
    assert words in str(info.value)


def test_truncated_code_says_truncated() -> None:
    with pytest.raises(MpmError) as info:
        parse_mpm(SPEC[:-3])
    assert info.value.reason == "truncated"


@settings(max_examples=400)
@given(st.text(max_size=300))
def test_fuzz_any_text_raises_only_mpm_error(text: str) -> None:
    with contextlib.suppress(MpmError):
        parse_mpm(text)


@settings(max_examples=400)
@given(st.integers(0, len(SPEC) - 1), st.characters(), st.booleans())
def test_fuzz_mutated_spec_example_raises_only_mpm_error(
    index: int, char: str, delete: bool
) -> None:
    mutated = SPEC[:index] + ("" if delete else char) + SPEC[index + 1 :]
    try:
        parse_mpm(mutated)
    except MpmError:
        return
    # A mutation that survives must still be self-consistent.
    assert parse_mpm(mutated).encode() == mutated[:-4] + crc_for(mutated[:-8])


@settings(max_examples=100)
@given(
    st.integers(1, 10**10),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=25),
    st.sampled_from([0, 2, 3]),
)
def test_fuzz_builder_round_trips(amount: int, name: str, exponent: int) -> None:
    text = build_merchant_payload(
        accounts=[MpmField("02", "4000123412341234")],
        mcc="5411",
        currency=978,
        country="FR",
        merchant_name=name,
        merchant_city="PARIS",
        amount_minor=amount,
        exponent=exponent,
    )
    p = parse_mpm(text)
    assert p.merchant_name == name
    assert p.amount_minor(exponent) == amount
    assert p.encode() == text
