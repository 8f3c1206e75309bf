"""The weak-PIN rules shared by the merchant PIN and the technician PIN."""

from __future__ import annotations

import pytest

from terminal.security.merchant_pin import MerchantPinError, check_new_pin
from terminal.security.pin_policy import (
    digit_pin_weakness,
    merchant_pin_problem,
    technician_secret_problem,
)
from terminal.security.technician import TechnicianError, check_new_secret


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        ("1234", "sequence"),
        ("2345", "sequence"),
        ("7890", "sequence"),  # 9 wraps to 0, as on the keypad's row
        ("123456", "sequence"),
        ("654321", "sequence"),
        ("4321", "sequence"),
        ("1111", "repeated"),
        ("000000", "repeated"),
        ("1212", "repeated"),
        ("6969", "repeated"),
        ("123123", "repeated"),
        ("1122", "repeated"),
        ("112233", "repeated"),
        ("2580", "common"),
        ("1004", "common"),
        ("5683", "common"),
        ("147258", "common"),
        ("159753", "common"),
        ("520520", "repeated"),
        ("1314", "common"),
        ("2000", "year"),
        ("1987", "year"),
        ("2024", "year"),
    ],
)
def test_weak_digit_pins_and_why(pin: str, reason: str) -> None:
    assert digit_pin_weakness(pin) == reason


@pytest.mark.parametrize("pin", ["4826", "2468", "7395", "270513", "83920174", "3141"])
def test_ordinary_pins_pass(pin: str) -> None:
    assert digit_pin_weakness(pin) is None
    assert merchant_pin_problem(pin) is None


@pytest.mark.parametrize(
    "pin",
    ["123", "1234567890123", "12a4", "", "４８２６", "٤٨٢٦", " 4826", "4826\n"],
)
def test_merchant_pin_is_4_to_12_ascii_digits(pin: str) -> None:
    problem = merchant_pin_problem(pin)
    assert problem == ("merchant_format", {"min": 4, "max": 12})


def test_refusals_say_why_in_english_and_chinese() -> None:
    with pytest.raises(MerchantPinError) as merchant:
        check_new_pin("1234")
    assert str(merchant.value) == (
        "merchant PIN: digits in a row (like 1234, 7890 or 654321) are too easy to guess; "
        "choose another / 商户密码：连续的数字（如 1234、7890、654321）太容易被猜到，请换一个"
    )
    with pytest.raises(TechnicianError) as technician:
        check_new_secret("654321")
    assert "technician PIN or pass-phrase: digits in a row" in str(technician.value)
    assert "技术员密码：连续的数字" in str(technician.value)
    with pytest.raises(TechnicianError, match=r"too short \(at least 6 characters\).*至少 6"):
        check_new_secret("12345")


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("123456", "sequence"),
        ("654321", "sequence"),
        ("111111", "repeated"),
        ("121212", "repeated"),
        ("147258", "common"),
        ("aaaaaaa", "repeated"),
        ("Password", "common_phrase"),
        ("qwerty", "common_phrase"),
        ("12345", "too_short"),
    ],
)
def test_weak_technician_secrets(secret: str, reason: str) -> None:
    problem = technician_secret_problem(secret)
    assert problem is not None
    assert problem[0] == reason


@pytest.mark.parametrize("secret", ["270513", "correct horse battery", "T3chn1c!an-42"])
def test_good_technician_secrets(secret: str) -> None:
    assert technician_secret_problem(secret) is None


def test_the_demo_terminal_s_pin_passes_the_rules() -> None:
    from terminal.api.stack import DEMO_PIN

    assert merchant_pin_problem(DEMO_PIN) is None
