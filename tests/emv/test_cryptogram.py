"""Known-answer tests for emv.cryptogram.

Vectors come from the published documentation and the HSM-checked test suite of the `pyemv`
project (knovichikhin/pyemv, README.rst and tests/test_*_hsm.py): values only, no code.
Intermediate values (ICC master key, session key) are checked by full value where published
and by key check value (KCV, leftmost bytes of 3DES(K)[00..00]) otherwise.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given
from hypothesis import strategies as st

from emv.cryptogram import (
    CryptogramError,
    adjust_odd_parity,
    build_ac_data,
    derive_common_session_key,
    derive_icc_master_key_option_a,
    derive_mastercard_session_key,
    derive_session_key,
    generate_ac,
    generate_arpc_method_1,
    generate_arpc_method_2,
    key_check_value,
    pad_method_1,
    pad_method_2,
    retail_mac,
    verify_ac,
    verify_arpc_method_1,
    verify_arpc_method_2,
)
from emv.errors import EmvError

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
H = bytes.fromhex


def kcv2(key: bytes) -> str:
    return key_check_value(key, 2).hex().upper()


# --- the pyemv README walk-through (full intermediate values) ------------------------------


def test_readme_chain_full_values() -> None:
    assert kcv2(IMK) == "08D7"
    mk = derive_icc_master_key_option_a(IMK, "99012345678901234", 45)
    assert mk.hex().upper() == "67F8292358083E5EA7AB7FDA58D53B6B"
    sk = derive_session_key(mk, H("1234567890123456"))
    assert sk.hex().upper() == "29B33180E567CE38EA4CBC9D753B0E61"
    arqc = generate_ac(sk, H("0123456789ABCDEF0123456789ABCDEF"))
    assert arqc.hex().upper() == "FA624250B008B59A"
    assert generate_arpc_method_1(sk, arqc, H("0000")).hex().upper() == "45D4255EEF10C920"
    assert generate_arpc_method_2(sk, arqc, H("00000000")).hex().upper() == "CB56FA40"


# --- HSM-checked vectors -------------------------------------------------------------------


def test_hsm_vector_emv_padding_arpc1_with_icc_master_key() -> None:
    mk = derive_icc_master_key_option_a(IMK, "9901234567890123", 45)
    assert kcv2(mk) == "1DA5"
    sk = derive_session_key(mk, H("1234567890123456"))
    assert kcv2(sk) == "0995"
    arqc = generate_ac(sk, H("0123456789ABCDEF0123456789ABCDEF"), padding=2)
    assert arqc.hex().upper() == "4B46013359B7A58B"
    assert generate_arpc_method_1(mk, arqc, H("0000")).hex().upper() == "F8C9CECAABD55AD1"
    arpc2 = generate_arpc_method_2(sk, arqc, H("00000000"), H("1234567890ABCDEF"))
    assert arpc2.hex().upper() == "4962B76C"
    assert generate_arpc_method_2(sk, arqc, H("00000000")).hex().upper() == "7DFB1188"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("0123456789ABCDEF0123456789ABCDEF01", "2E141C6BC4A20DA8"),  # zero padding added
        ("0123456789ABCDEF0123456789ABCDEF", "922F3E83125EB46B"),  # already aligned
    ],
)
def test_hsm_vector_padding_method_1(data: str, expected: str) -> None:
    mk = derive_icc_master_key_option_a(IMK, "9901234567890123", 45)
    sk = derive_session_key(mk, H("1234567890123456"))
    assert generate_ac(sk, H(data), padding=1).hex().upper() == expected


def test_hsm_vector_long_pan_and_absent_psn() -> None:
    mk = derive_icc_master_key_option_a(IMK, "12345678901234567", 45)
    assert kcv2(mk) == "FF08"
    sk = derive_session_key(mk, H("1234567890123456"))
    assert kcv2(sk) == "DF82"
    arqc = generate_ac(sk, H("0123456789ABCDEF0123456789ABCDEF"))
    assert arqc.hex().upper() == "19C1FBC83EBDC0D5"
    assert generate_arpc_method_1(mk, arqc, H("0000")).hex().upper() == "78A372523FA35A03"
    assert generate_arpc_method_1(sk, arqc, H("0000")).hex().upper() == "C3620580668E5B65"

    # Book 2 A1.4.1: a card without 5F34 derives with PSN '00'.
    mk0 = derive_icc_master_key_option_a(IMK, "12345678901234567")
    assert mk0 == derive_icc_master_key_option_a(IMK, "12345678901234567", 0)
    sk0 = derive_session_key(mk0, H("1234567890123456"))
    assert kcv2(sk0) == "3F4F"
    arqc0 = generate_ac(sk0, H("0123456789ABCDEF0123456789ABCDEF"))
    assert arqc0.hex().upper() == "8698A7319324FD93"
    assert generate_arpc_method_1(mk0, arqc0, H("0000")).hex().upper() == "BEA11C8F4A47EF6F"


def visa_vector_data(iad: bytes) -> bytes:
    return build_ac_data(
        amount_authorised=4000,
        amount_other=0,
        terminal_country_code=124,
        tvr=H("8000048000"),
        transaction_currency_code=124,
        transaction_date=datetime.date(2019, 11, 5),
        transaction_type=1,
        unpredictable_number=H("52BF4585"),
        aip=H("1800"),
        atc=0x001C,
        iad=iad,
    )


def test_minimum_data_set_layout() -> None:
    data = visa_vector_data(H("06011203A0B800"))
    assert data == H(
        "000000004000"  # 9F02
        "000000000000"  # 9F03
        "0124"  # 9F1A
        "8000048000"  # 95
        "0124"  # 5F2A
        "191105"  # 9A
        "01"  # 9C
        "52BF4585"  # 9F37
        "1800"  # 82
        "001C"  # 9F36
        "06011203A0B800"  # 9F10
    )


def test_visa_cvn18_common_session_key_and_arpc_method_2() -> None:
    mk = derive_icc_master_key_option_a(IMK, "1234567890123456", 0)
    assert kcv2(mk) == "BAB0"
    sk = derive_common_session_key(mk, 0x001C)
    assert kcv2(sk) == "22C8"
    assert sk == derive_session_key(mk, H("001C000000000000"))
    data = visa_vector_data(H("06011203A0B800"))
    arqc = generate_ac(sk, data)
    assert arqc.hex().upper() == "7A788EA6B8A3E733"
    assert verify_ac(sk, data, arqc)
    arpc = generate_arpc_method_2(sk, arqc, H("00000000"))
    assert arpc.hex().upper() == "9AF514C1"
    assert verify_arpc_method_2(sk, arqc, H("00000000"), arpc)


def test_visa_cvn10_zero_padding_and_arpc_method_1() -> None:
    # CVN 10 uses the ICC master key directly, zero padding and only the CVR from the IAD.
    mk = derive_icc_master_key_option_a(IMK, "1234567890123456", 0)
    data = visa_vector_data(H("03A06010"))
    arqc = generate_ac(mk, data, padding=1)
    assert arqc.hex().upper() == "29CCA15AE665FA2E"
    arpc = generate_arpc_method_1(mk, arqc, H("3030"))
    assert arpc.hex().upper() == "28993816AFAE4AEB"
    assert verify_arpc_method_1(mk, arqc, H("3030"), arpc)
    assert not verify_arpc_method_1(mk, arqc, H("3035"), arpc)


def test_mastercard_skd_with_unpredictable_number() -> None:
    # Interac CVN 133 uses the Mastercard session key derivation (ATC and UN).
    mk = derive_icc_master_key_option_a(IMK, "1234567890123456", 0)
    un = H("ABCDEF12")
    sk = derive_mastercard_session_key(mk, 0x001C, un)
    assert kcv2(sk) == "2FD5"
    assert sk == derive_session_key(mk, H("001C0000ABCDEF12"))
    data = H(
        "000000009999000000000000012480000000000124209906"
        "00ABCDEF121800001C1501850440B100000000B00000000000000000000000"
    )
    arqc = generate_ac(sk, data)
    assert arqc.hex().upper() == "18932FECA2D84326"
    assert generate_arpc_method_1(sk, arqc, H("0000")).hex().upper() == "4DF171A49396C363"


# --- MAC and padding against an independent reference --------------------------------------


def reference_retail_mac(key: bytes, data: bytes) -> bytes:
    """ISO 9797-1 algorithm 3 built differently: DES-CBC over all but the last block, then
    one 3DES-EDE(K_L, K_R, K_L) encryption of (chain xor last block)."""
    padded = data + b"\x80" + bytes(-(len(data) + 1) % 8)
    head, last = padded[:-8], padded[-8:]
    chain = bytes(8)
    if head:
        enc = Cipher(TripleDES(key[:8] * 3), modes.CBC(bytes(8))).encryptor()
        chain = (enc.update(head) + enc.finalize())[-8:]
    block = bytes(a ^ b for a, b in zip(chain, last, strict=True))
    enc = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=64))
def test_retail_mac_matches_independent_reference(key: bytes, data: bytes) -> None:
    assert retail_mac(key, data) == reference_retail_mac(key, data)


def test_padding_methods() -> None:
    assert pad_method_2(b"") == H("8000000000000000")
    assert pad_method_2(bytes(8)) == bytes(8) + H("8000000000000000")
    assert pad_method_2(H("0102")) == H("0102800000000000")
    assert pad_method_1(b"") == bytes(8)
    assert pad_method_1(bytes(8)) == bytes(8)
    assert pad_method_1(H("01")) == H("0100000000000000")


def test_parity_and_kcv() -> None:
    assert adjust_odd_parity(H("00FF0102")) == H("01FE0102")
    assert key_check_value(IMK).hex().upper() == "08D7B4"


# --- verification and errors ---------------------------------------------------------------


def test_verify_ac_rejects_any_change() -> None:
    sk = derive_common_session_key(derive_icc_master_key_option_a(IMK, "4761739001010010", 1), 7)
    data = visa_vector_data(b"")
    arqc = generate_ac(sk, data)
    assert verify_ac(sk, data, arqc)
    assert not verify_ac(sk, data[:-1] + b"\x1d", arqc)
    assert not verify_ac(sk, data, bytes([arqc[0] ^ 1]) + arqc[1:])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: derive_common_session_key(bytes(8), 1), "expected a 16-byte double-length"),
        (lambda: derive_icc_master_key_option_a(IMK, "4761 7390"), "non-digit at position 4"),
        (lambda: derive_icc_master_key_option_a(IMK, "47617390"), "12 to 19 digits, got 8"),
        (lambda: derive_icc_master_key_option_a(IMK, "4761739001010010", 100), "0..99"),
        (lambda: derive_common_session_key(IMK, 0x10000), "ATC: expected an integer 0..65535"),
        (lambda: derive_mastercard_session_key(IMK, 1, b"\x01"), "expected 4 bytes, got 1"),
        (lambda: generate_arpc_method_1(IMK, bytes(8), b"0"), r"response code \(8A\)"),
        (lambda: generate_arpc_method_2(IMK, bytes(8), bytes(4), bytes(9)), "0..8 bytes"),
        (lambda: retail_mac(IMK, b"", padding=3), "method 1 or 2"),  # type: ignore[arg-type]
        (lambda: verify_ac(IMK, b"", bytes(4)), "expected 8 bytes, got 4"),
    ],
)
def test_errors_are_precise(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(CryptogramError, match=message) as info:
        call()
    assert isinstance(info.value, EmvError)


def test_pan_never_appears_in_errors() -> None:
    pan = "476173900101001X"
    with pytest.raises(CryptogramError) as info:
        derive_icc_master_key_option_a(IMK, pan)
    assert "4761739001" not in str(info.value)


def test_build_ac_data_rejects_out_of_range_amount() -> None:
    with pytest.raises(CryptogramError, match=r"amount authorised \(9F02\): expected 0\.\."):
        build_ac_data(
            amount_authorised=10**12,
            amount_other=0,
            terminal_country_code=276,
            tvr=bytes(5),
            transaction_currency_code=978,
            transaction_date=datetime.date(2024, 1, 2),
            transaction_type=0,
            unpredictable_number=bytes(4),
            aip=bytes(2),
            atc=1,
        )
