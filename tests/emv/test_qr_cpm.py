"""EMVCo Consumer-Presented Mode and wallet payment codes: examples, validation, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.qr import (
    CpmApplication,
    CpmError,
    QrError,
    WalletCodeError,
    WalletCodeTable,
    classify,
    decode_cpm,
    encode_cpm,
)
from emv.qr.cpm import decode_cpm_bytes
from simulator.wallet import PhoneWallet, WalletAccount

# EMVCo CPM specification v1.1 examples: one application with track 2 equivalent data, and
# two applications with a common data template carrying PAN, name, languages and the
# cryptogram data in the common data transparent template (64).
SPEC_TRACK2 = "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8="
SPEC_TWO_APPS = (
    "hQVDUFYwMWETTwegAAAAVVVVUAhQcm9kdWN0MWETTwegAAAAZmZmUAhQcm9kdWN0MmJJWggSNFZ4kBI0WF8g"
    "DkNBUkRIT0xERVIvRU1WXy0IcnVlc2RlZW5kIZ8QBwYBCgMAAACfJghYT9OF+iNLzJ82AgABnzcEbVjvEw=="
)
SPEC_TWO_APPS_HEX = (
    "8505435056303161134F07A0000000555555500850726F647563743161134F07A0000000666666500850726F"
    "64756374326249 5A0812345678901234585F200E43415244484F4C4445522F454D565F2D0872756573"
    "646565 6E 64219F100706010A030000009F2608584FD385FA234BCC9F360200019F37046D58EF13"
).replace(" ", "")


def test_spec_track2_example() -> None:
    code = decode_cpm(SPEC_TRACK2)
    assert code.applications[0].aid.hex().upper() == "A0000000555555"
    account = code.account()
    assert (account.pan, account.expiry, account.service_code) == (
        "1234567890123458",
        "1912",
        "201",
    )
    assert account.masked_pan == "123456******3458"
    assert code.encode() == SPEC_TRACK2


def test_spec_two_application_example() -> None:
    assert base64.b64decode(SPEC_TWO_APPS).hex().upper() == SPEC_TWO_APPS_HEX
    code = decode_cpm(SPEC_TWO_APPS)
    assert [a.label for a in code.applications] == ["Product1", "Product2"]
    assert code.common[0x5F20] == b"CARDHOLDER/EMV"
    assert code.common[0x5F2D] == b"ruesdeen"
    assert code.account().pan == "1234567890123458"
    assert code.host_emv() == {
        "9F10": "06010A03000000",
        "9F26": "584FD385FA234BCC",
        "9F36": "0001",
        "9F37": "6D58EF13",
        "4F": "A0000000555555",
    }
    assert code.encode() == SPEC_TWO_APPS


def test_spec_two_application_example_encodes_from_parts() -> None:
    apps = [
        CpmApplication({0x4F: bytes.fromhex("A0000000555555"), 0x50: b"Product1"}),
        CpmApplication({0x4F: bytes.fromhex("A0000000666666"), 0x50: b"Product2"}),
    ]
    common = {
        0x5A: bytes.fromhex("1234567890123458"),
        0x5F20: b"CARDHOLDER/EMV",
        0x5F2D: b"ruesdeen",
    }
    transparent = {
        0x9F10: bytes.fromhex("06010A03000000"),
        0x9F26: bytes.fromhex("584FD385FA234BCC"),
        0x9F36: bytes.fromhex("0001"),
        0x9F37: bytes.fromhex("6D58EF13"),
    }
    assert encode_cpm(apps, common, transparent) == SPEC_TWO_APPS


def test_display_form_never_shows_the_pan_or_track2() -> None:
    text = str(decode_cpm(SPEC_TRACK2).to_json()) + str(decode_cpm(SPEC_TWO_APPS).to_json())
    assert "1234567890123458" not in text
    assert "D1912" not in text


def _b64(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text)).decode()


@pytest.mark.parametrize(
    ("text", "tag", "words", "reason"),
    [
        ("hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF", None, "groups of four", "truncated"),
        ("hQVDUFYwMWEa*wegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=", None, "base64", "corrupt"),
        (_b64("8505435056303261074F05A000000003"), "85", "CPV01", "corrupt"),
        (_b64("850543505630316107500550524F4431"), "61", "ADF Name", "corrupt"),
        (_b64("8505435056303161074F05A000000003"), "61", "PAN '5A' or Track 2", "corrupt"),
        (_b64("8505435056303161094F05A0000000035A"), "61", "remain", "truncated"),
        (_b64("8505435056303161204F05A000000003"), "61", "remain", "truncated"),
        (_b64("85054350563031610B4F05A0000000035A021234"), "5A", "6-10 bytes", "corrupt"),
        (_b64("8505435056303161054F03A00000"), "4F", "5-16 bytes", "corrupt"),
        (_b64("850543505630319F0100"), "9F01", "only '61'", "corrupt"),
    ],
)
def test_errors_name_the_tag_and_what_was_expected(
    text: str, tag: str | None, words: str, reason: str
) -> None:
    with pytest.raises(CpmError) as info:
        decode_cpm(text)
    assert info.value.tag == tag
    assert words in str(info.value)
    assert info.value.reason == reason


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_fuzz_any_bytes_raise_only_cpm_error(data: bytes) -> None:
    with contextlib.suppress(CpmError):
        decode_cpm_bytes(data)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_fuzz_any_text_raises_only_cpm_error(text: str) -> None:
    with contextlib.suppress(CpmError):
        decode_cpm(text)


@settings(max_examples=400)
@given(st.integers(0, 120), st.integers(0, 255), st.booleans())
def test_fuzz_mutated_example_raises_only_cpm_error(index: int, byte: int, delete: bool) -> None:
    raw = bytearray(base64.b64decode(SPEC_TWO_APPS))
    index %= len(raw)
    if delete:
        del raw[index]
    else:
        raw[index] = byte
    try:
        code = decode_cpm_bytes(bytes(raw))
    except CpmError:
        return
    code.account()
    code.to_json()


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_fuzz_classify_raises_only_qr_errors(text: str) -> None:
    with contextlib.suppress(QrError):
        classify(text)


# --- wallet codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "scheme"),
    [
        ("281234567890123456", "alipay"),
        ("2512345678901234", "alipay"),
        ("301234567890123456789012", "alipay"),
        ("134567890123456789", "wechatpay"),
        ("6212345678901234567", "unionpay"),
    ],
)
def test_default_table_recognises_wallets(code: str, scheme: str) -> None:
    wc = WalletCodeTable.default().recognise(code)
    assert wc.scheme == scheme
    assert wc.masked.endswith(code[-4:])
    assert code[:-4] not in wc.masked


@pytest.mark.parametrize(
    ("code", "reason", "words"),
    [
        ("13456789012345678", "truncated", "18 digits for wechatpay"),
        ("1345678901234567890", "corrupt", "18 digits"),
        ("9912345678901234", "unsupported", "prefix"),
        ("28123456789O123456", "corrupt", "digits only"),
        ("", "truncated", "got nothing"),
    ],
)
def test_bad_wallet_codes_say_why(code: str, reason: str, words: str) -> None:
    with pytest.raises(WalletCodeError) as info:
        WalletCodeTable.default().recognise(code)
    assert info.value.reason == reason
    assert words in str(info.value)


def test_wallet_table_is_configurable() -> None:
    table = WalletCodeTable.from_config([{"name": "paynow", "prefixes": ["77"], "lengths": [20]}])
    assert table.recognise("77" + "1" * 18).scheme == "paynow"
    with pytest.raises(WalletCodeError):
        table.recognise("281234567890123456")
    with pytest.raises(WalletCodeError):
        WalletCodeTable.from_config([{"name": "bad", "prefixes": ["7"], "lengths": [30]}])


# --- the simulated phone's codes -----------------------------------------------------------

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def _wallet() -> PhoneWallet:
    counter = iter(range(10**6))

    def rnd(n: int) -> bytes:
        return bytes((next(counter) * 37) % 256 for _ in range(n))

    return PhoneWallet(
        WalletAccount("4761739001010119", "3012", IMK), random=rnd, clock=lambda: 1_760_000_000
    )


def test_phone_consumer_code_carries_a_verifiable_arqc() -> None:
    from emv import cryptogram

    wallet = _wallet()
    code = decode_cpm(wallet.consumer_code())
    data = code.cryptogram_data()
    account = code.account()
    assert account.pan == "4761739001010119"
    master = cryptogram.derive_icc_master_key_option_a(IMK, account.pan, account.pan_sequence)
    session = cryptogram.derive_common_session_key(master, int.from_bytes(data[0x9F36], "big"))
    ac_data = cryptogram.build_ac_data(
        amount_authorised=0,
        amount_other=0,
        terminal_country_code=276,
        tvr=data[0x95],
        transaction_currency_code=978,
        transaction_date=datetime.date(2025, 10, 9),
        transaction_type=0,
        unpredictable_number=data[0x9F37],
        aip=data[0x82],
        atc=1,
    )
    assert data[0x9A] == bytes.fromhex("251009")
    assert cryptogram.verify_ac(session, ac_data, data[0x9F26])


def test_phone_makes_corrupt_truncated_and_expired_codes() -> None:
    wallet = _wallet()
    good = wallet.consumer_code()
    with pytest.raises(CpmError) as info:
        decode_cpm(PhoneWallet.corrupt(good))
    assert info.value.reason == "corrupt"
    with pytest.raises(CpmError):
        decode_cpm(PhoneWallet.truncate(good))
    expired = decode_cpm(wallet.consumer_code(expired=True)).account()
    assert expired.expired(datetime.date(2025, 1, 1))
