"""Offline data authentication against the simulator's TEST PKI (EMV Book 2 §5-§6)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv import oda
from emv.capk import CaKeyStore
from emv.oda import OdaFailure, OdaMethod, OdaResult, RecoveredPublicKey
from simulator.pki import (
    IccKeys,
    IssuerKeys,
    RsaKey,
    TestCa,
    build_cda_genac_response,
    dda_icc_dynamic_data,
    generate_test_pki,
    load_test_ca_store,
    make_card_oda_data,
    make_icc_certificate,
    make_issuer_certificate,
    sign_sdad,
    sign_ssad,
)

VISA = bytes.fromhex("A000000003")
MASTERCARD = bytes.fromhex("A000000004")
TODAY = date(2025, 6, 15)
PAN = "4761739001010010"
MC_PAN = "5413330089010434"
# Static data to be authenticated: two records' values and the AIP (Book 3 §10.3).
STATIC = bytes.fromhex("5A0847617390010100105F24033012315F25032001019F0702FF00") + b"\x39\x00"
DAC = b"\xda\xc1"
DDOL_DATA = bytes.fromhex("0A1B2C3D")
DYN_NUMBER = bytes.fromhex("1122334455667788")
UN = bytes.fromhex("DEADBEEF")
AMOUNT = bytes.fromhex("000000001234")
CURRENCY = bytes.fromhex("0978")
CARD_AUTH = bytes.fromhex("01A1B2C3D48000")  # fDDA version 01, card UN, CTQ
PDOL_DATA = bytes.fromhex("3600000000000012340000000000000978250615") + UN
CDOL1_DATA = bytes.fromhex("000000001234000000000000097825061500") + UN
AC = bytes.fromhex("0102030405060708")
ATC = b"\x00\x2a"
IAD = bytes.fromhex("06011203A00000")


@pytest.fixture(scope="module")
def store() -> CaKeyStore:
    return load_test_ca_store()


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa.load("A000000003", 0x92)


@pytest.fixture(scope="module")
def issuer() -> IssuerKeys:
    return IssuerKeys.load("visa_issuer")


@pytest.fixture(scope="module")
def icc() -> IccKeys:
    return IccKeys.load("visa_card")


def flip(data: bytes, position: int = 40) -> bytes:
    out = bytearray(data)
    out[position % len(out)] ^= 0x5A
    return bytes(out)


def sda_card(ca: TestCa, issuer: IssuerKeys, **kw: object) -> dict[int, bytes]:
    return make_card_oda_data(ca, issuer, None, PAN, STATIC, dac=DAC, **kw)  # type: ignore[arg-type]


def dda_card(ca: TestCa, issuer: IssuerKeys, icc: IccKeys, **kw: object) -> dict[int, bytes]:
    card = make_card_oda_data(ca, issuer, icc, PAN, STATIC, **kw)  # type: ignore[arg-type]
    card[0x9F4B] = sign_sdad(icc, dda_icc_dynamic_data(DYN_NUMBER), DDOL_DATA)
    return card


def fdda_card(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, card_auth: bytes | None = CARD_AUTH
) -> dict[int, bytes]:
    card = make_card_oda_data(ca, issuer, icc, PAN, STATIC)
    terminal = oda.fdda_terminal_dynamic_data(UN, AMOUNT, CURRENCY, card_auth)
    card[0x9F4B] = sign_sdad(icc, dda_icc_dynamic_data(DYN_NUMBER[:4]), terminal)
    if card_auth is not None:
        card[0x9F69] = card_auth
    return card


def genac(icc: IccKeys, cid: int = 0x40) -> bytes:
    return build_cda_genac_response(
        icc,
        cid=cid,
        application_cryptogram=AC,
        icc_dynamic_number=DYN_NUMBER,
        unpredictable_number=UN,
        pdol_data=PDOL_DATA,
        cdol1_data=CDOL1_DATA,
        other_objects=[(0x9F36, ATC), (0x9F10, IAD)],
    )


def run_sda(
    card: dict[int, bytes],
    store: CaKeyStore,
    *,
    static: bytes = STATIC,
    today: date = TODAY,
    is_revoked: Callable[[bytes, int, bytes], bool] | None = None,
) -> OdaResult:
    return oda.perform_sda(card, static, store, VISA, today, is_revoked=is_revoked)


def run_dda(
    card: dict[int, bytes],
    store: CaKeyStore,
    *,
    static: bytes = STATIC,
    ddol: bytes = DDOL_DATA,
) -> OdaResult:
    return oda.perform_dda(card, static, store, VISA, TODAY, ddol)


def run_fdda(card: dict[int, bytes], store: CaKeyStore, amount: bytes = AMOUNT) -> OdaResult:
    return oda.perform_fdda(
        card,
        STATIC,
        store,
        VISA,
        TODAY,
        unpredictable_number=UN,
        amount_authorised=amount,
        currency_code=CURRENCY,
    )


def run_cda(
    card: dict[int, bytes],
    store: CaKeyStore,
    response: bytes,
    un: bytes = UN,
    pdol: bytes = PDOL_DATA,
    cdol1: bytes = CDOL1_DATA,
) -> OdaResult:
    return oda.perform_cda(
        card,
        STATIC,
        store,
        VISA,
        TODAY,
        genac_response=response,
        unpredictable_number=un,
        pdol_data=pdol,
        cdol1_data=cdol1,
    )


# --- Full chains ------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0x92, 0x94])
def test_sda_chain_verifies_with_and_without_issuer_remainder(
    index: int, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    ca = TestCa.load(VISA, index)
    card = sda_card(ca, issuer)
    # 1152-bit issuer: needs tag 92 under the 1408-bit CA, fits under the 1984-bit one.
    assert (0x92 in card) == (index == 0x92)
    result = run_sda(card, store)
    assert result.ok, result.detail
    assert result.method is OdaMethod.SDA
    assert result.failure is None
    assert result.data_authentication_code == DAC
    assert result.tvr_bits == frozenset()
    assert result.issuer_key is not None
    assert result.issuer_key.modulus == issuer.key.modulus_bytes
    assert result.issuer_key.expiry == date(2049, 12, 31)


def test_dda_chain_verifies_and_returns_icc_dynamic_number(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    card = dda_card(ca, issuer, icc)
    assert 0x9F48 in card  # the 1024-bit ICC key does not fit a 1152-bit issuer certificate
    result = run_dda(card, store)
    assert result.ok, result.detail
    assert result.icc_dynamic_number == DYN_NUMBER
    assert result.icc_key is not None
    assert result.icc_key.modulus == icc.key.modulus_bytes


def test_mastercard_chain_with_exponent_65537(store: CaKeyStore) -> None:
    ca = TestCa.load(MASTERCARD, 0xEF)
    issuer, icc = IssuerKeys.load("mc_issuer"), IccKeys.load("mc_card")
    card = make_card_oda_data(ca, issuer, icc, MC_PAN, STATIC)
    assert card[0x9F32] == card[0x9F47] == b"\x01\x00\x01"
    card[0x9F4B] = sign_sdad(icc, dda_icc_dynamic_data(DYN_NUMBER), DDOL_DATA)
    result = oda.perform_dda(card, STATIC, store, MASTERCARD, TODAY, DDOL_DATA)
    assert result.ok, result.detail


@pytest.mark.parametrize("card_auth", [CARD_AUTH, None], ids=["fdda-01", "fdda-00"])
def test_fdda_chain_verifies(
    card_auth: bytes | None, ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    result = run_fdda(fdda_card(ca, issuer, icc, card_auth), store)
    assert result.ok, result.detail
    assert result.method is OdaMethod.FDDA
    assert result.icc_dynamic_number == DYN_NUMBER[:4]


def test_cda_chain_verifies(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    result = run_cda(make_card_oda_data(ca, issuer, icc, PAN, STATIC), store, genac(icc))
    assert result.ok, result.detail
    assert result.icc_dynamic_number == DYN_NUMBER
    assert result.cryptogram_information_data == 0x40
    assert result.application_cryptogram == AC


def test_cda_transaction_data_hash_excludes_the_sdad(icc: IccKeys) -> None:
    response = genac(icc)
    tlvs = bytes.fromhex("9F270140") + b"\x9f\x36\x02" + ATC + b"\x9f\x10\x07" + IAD
    expected = hashlib.sha1(PDOL_DATA + CDOL1_DATA + tlvs).digest()
    assert oda.cda_transaction_data_hash(PDOL_DATA, CDOL1_DATA, response) == expected
    assert oda.cda_transaction_data_hash(PDOL_DATA, CDOL1_DATA, b"\x9f") is None


def test_cda_transaction_data_hash_takes_objects_as_coded() -> None:
    # Book 2 §6.6.1: the response objects enter the hash with their tag and length as sent,
    # a longer length form included; padding between them does not; nor does the SDAD.
    cid, iad = bytes.fromhex("9F270180"), bytes.fromhex("9F1081020102")
    body = cid + b"\x00" + iad + bytes.fromhex("9F4B03AABBCC")
    expected = hashlib.sha1(PDOL_DATA + CDOL1_DATA + cid + iad).digest()
    response = b"\x77\x81" + bytes([len(body)]) + body
    assert oda.cda_transaction_data_hash(PDOL_DATA, CDOL1_DATA, response) == expected
    assert oda.cda_transaction_data_hash(PDOL_DATA, CDOL1_DATA, body) == expected  # value only


@pytest.mark.parametrize(
    "response",
    [
        b"\x77\x05\x9f\x27\x01\x80",  # '77' longer than the response
        b"\x77\x04\x9f\x27\x01\x80\x00",  # bytes after the '77'
        b"\x77\x03\x9f\x27\x05",  # an object inside '77' runs past it
        b"\x80\x04\x80\x00\x01\x02",  # format 1 cannot carry an SDAD
        b"\x9f\x27\x01",  # a bare object list, truncated
    ],
)
def test_malformed_genac_response_is_a_value_not_an_error(response: bytes) -> None:
    assert oda.cda_transaction_data_hash(PDOL_DATA, CDOL1_DATA, response) is None
    key = _key(bytes([0xFF]) * 128, b"\x03")
    result = oda.verify_cda(key, response, UN, PDOL_DATA, CDOL1_DATA)
    assert result.failure is OdaFailure.GENAC_RESPONSE_FORMAT


# --- Tampering ---------------------------------------------------------------------------------


def test_flipped_issuer_certificate_byte_fails_issuer_checks(
    ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    for position in (0, 40, 100, 175):
        card = sda_card(ca, issuer)
        card[0x90] = flip(card[0x90], position)
        result = run_sda(card, store)
        assert not result.ok
        assert result.failure is not None
        assert result.failure.name.startswith("ISSUER_CERT_"), result.failure
        assert result.tvr_bits == {"sda_failed"}


def test_flipped_issuer_remainder_or_exponent_fails_issuer_hash(
    ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer)
    card[0x92] = flip(card[0x92], 1)
    assert run_sda(card, store).failure is OdaFailure.ISSUER_CERT_HASH
    card = sda_card(ca, issuer)
    card[0x9F32] = b"\x02"
    assert run_sda(card, store).failure is OdaFailure.ISSUER_CERT_HASH


def test_flipped_icc_certificate_byte_fails_icc_checks(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    for position in (0, 30, 143):
        card = dda_card(ca, issuer, icc)
        card[0x9F46] = flip(card[0x9F46], position)
        result = run_dda(card, store)
        assert result.failure is not None
        assert result.failure.name.startswith("ICC_CERT_"), result.failure
        assert result.tvr_bits == {"dda_failed"}
    card = dda_card(ca, issuer, icc)
    card[0x9F48] = flip(card[0x9F48], 3)
    assert run_dda(card, store).failure is OdaFailure.ICC_CERT_HASH


def test_flipped_ssad_byte_fails_sda(ca: TestCa, issuer: IssuerKeys, store: CaKeyStore) -> None:
    card = sda_card(ca, issuer)
    card[0x93] = flip(card[0x93])
    result = run_sda(card, store)
    assert result.failure is not None
    assert result.failure.name.startswith("SSAD_")
    assert result.failure.tvr_bit == "sda_failed"


def test_flipped_sdad_byte_fails_dda(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    card = dda_card(ca, issuer, icc)
    card[0x9F4B] = flip(card[0x9F4B])
    result = run_dda(card, store)
    assert result.failure is not None
    assert result.failure.name.startswith("SDAD_")


def test_unknown_ca_index_or_rid_is_ca_key_missing(
    ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer)
    card[0x8F] = b"\x93"
    result = run_sda(card, store)
    assert result.failure is OdaFailure.CA_KEY_MISSING
    assert result.tvr_bits == {"sda_failed"}
    card = sda_card(ca, issuer)
    other_rid = oda.perform_sda(card, STATIC, store, MASTERCARD, TODAY)
    assert other_rid.failure is OdaFailure.CA_KEY_MISSING


def test_wrong_ca_index_for_the_certificate_fails_recovery(
    ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer)
    card[0x8F] = b"\x94"  # a 1984-bit key for a certificate made with the 1408-bit one
    assert run_sda(card, store).failure is OdaFailure.ISSUER_CERT_LENGTH


def test_expired_ca_key_is_refused(issuer: IssuerKeys, store: CaKeyStore) -> None:
    expired_ca = TestCa.load(VISA, 0x99)
    assert expired_ca.expiry is not None
    assert expired_ca.expiry < TODAY
    result = run_sda(sda_card(expired_ca, issuer), store)
    assert result.failure is OdaFailure.CA_KEY_EXPIRED
    assert result.tvr_bits == {"sda_failed"}
    # The same card verifies on the key's last day.
    assert run_sda(sda_card(expired_ca, issuer), store, today=expired_ca.expiry).ok


def test_issuer_certificate_valid_to_the_end_of_its_month(
    ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer, issuer_expiry_mmyy="0625")
    assert run_sda(card, store, today=date(2025, 6, 30)).ok
    late = run_sda(card, store, today=date(2025, 7, 1))
    assert late.failure is OdaFailure.ISSUER_CERT_EXPIRED
    old = sda_card(ca, issuer, issuer_expiry_mmyy="1299")  # December 1999
    assert run_sda(old, store).failure is OdaFailure.ISSUER_CERT_EXPIRED


def test_expired_icc_certificate(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    card = dda_card(ca, issuer, icc, icc_expiry_mmyy="0525")
    assert run_dda(card, store).failure is OdaFailure.ICC_CERT_EXPIRED


def test_revoked_issuer_certificate(ca: TestCa, issuer: IssuerKeys, store: CaKeyStore) -> None:
    calls: list[tuple[bytes, int, bytes]] = []

    def revoked(rid: bytes, index: int, serial: bytes) -> bool:
        calls.append((rid, index, serial))
        return serial == b"\x12\x34\x56"

    card = sda_card(ca, issuer, issuer_serial=b"\x12\x34\x56")
    result = run_sda(card, store, is_revoked=revoked)
    assert result.failure is OdaFailure.ISSUER_CERT_REVOKED
    assert calls == [(VISA, 0x92, b"\x12\x34\x56")]
    assert run_sda(sda_card(ca, issuer), store, is_revoked=revoked).ok


def test_pan_not_matching_the_issuer_identifier(
    ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer)
    card[0x5A] = bytes.fromhex("4000001234567899")
    assert run_sda(card, store).failure is OdaFailure.ISSUER_ID_MISMATCH


def test_pan_not_matching_the_icc_certificate(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    card = dda_card(ca, issuer, icc)
    other = make_icc_certificate(issuer, icc, PAN[:-1] + "9", "1249", STATIC)
    card[0x9F46] = other.certificate
    result = run_dda(card, store)
    assert result.failure is OdaFailure.PAN_MISMATCH
    assert result.tvr_bits == {"dda_failed"}


def test_odd_length_pan_padded_with_f(ca: TestCa, issuer: IssuerKeys, icc: IccKeys) -> None:
    pan = "476173900101001"
    card = make_card_oda_data(ca, issuer, icc, pan, STATIC)
    assert card[0x5A].hex().upper().endswith("F")
    assert oda.recover_issuer_public_key(
        ca.public_key(), card[0x90], card.get(0x92), card[0x9F32], card[0x5A], TODAY
    ).ok


def test_altered_static_data(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    altered = flip(STATIC, 5)
    assert run_sda(sda_card(ca, issuer), store, static=altered).failure is OdaFailure.SSAD_HASH
    result = run_dda(dda_card(ca, issuer, icc), store, static=altered)
    assert result.failure is OdaFailure.ICC_CERT_HASH


def test_altered_dynamic_data(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    result = run_dda(dda_card(ca, issuer, icc), store, ddol=b"\x0a\x1b\x2c\x3e")
    assert result.failure is OdaFailure.SDAD_HASH
    assert result.tvr_bits == {"dda_failed"}
    fdda = run_fdda(fdda_card(ca, issuer, icc), store, amount=bytes.fromhex("000000001235"))
    assert fdda.failure is OdaFailure.SDAD_HASH
    assert fdda.tvr_bits == {"dda_failed"}


def test_cda_altered_unpredictable_number_or_transaction_data(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    card = make_card_oda_data(ca, issuer, icc, PAN, STATIC)
    response = genac(icc)
    wrong_un = run_cda(card, store, response, un=b"\x00\x00\x00\x01")
    assert wrong_un.failure is OdaFailure.SDAD_HASH
    assert wrong_un.tvr_bits == {"cda_failed"}
    wrong_pdol = run_cda(card, store, response, pdol=flip(PDOL_DATA, 2))
    assert wrong_pdol.failure is OdaFailure.TRANSACTION_DATA_HASH
    wrong_cdol = run_cda(card, store, response, cdol1=flip(CDOL1_DATA, 2))
    assert wrong_cdol.failure is OdaFailure.TRANSACTION_DATA_HASH
    changed_atc = response.replace(b"\x9f\x36\x02" + ATC, b"\x9f\x36\x02\x00\x2b")
    assert run_cda(card, store, changed_atc).failure is OdaFailure.TRANSACTION_DATA_HASH


def test_cda_cid_mismatch(ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore) -> None:
    card = make_card_oda_data(ca, issuer, icc, PAN, STATIC)
    response = genac(icc, cid=0x00)  # the card signed an AAC ...
    upgraded = response.replace(b"\x9f\x27\x01\x00", b"\x9f\x27\x01\x40", 1)  # ... shown as TC
    result = run_cda(card, store, upgraded)
    assert result.failure is OdaFailure.CID_MISMATCH
    assert result.failure.tvr_bit == "cda_failed"
    assert result.tvr_bits == {"cda_failed"}


def test_cda_response_without_sdad_or_in_format_1(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    card = make_card_oda_data(ca, issuer, icc, PAN, STATIC)
    no_sdad = b"\x77\x09\x9f\x27\x01\x40\x9f\x36\x02\x00\x2a"
    assert run_cda(card, store, no_sdad).failure is OdaFailure.ICC_DATA_MISSING
    format1 = b"\x80\x0b\x40\x00\x2a" + AC
    assert run_cda(card, store, format1).failure is OdaFailure.GENAC_RESPONSE_FORMAT


@pytest.mark.parametrize(
    ("field", "value", "failure"),
    [
        ("certificate_format", 0x12, OdaFailure.ISSUER_CERT_FORMAT),
        ("hash_algorithm", 0x02, OdaFailure.ISSUER_CERT_HASH_ALGORITHM),
        ("key_algorithm", 0x02, OdaFailure.ISSUER_KEY_ALGORITHM),
    ],
)
def test_issuer_certificate_field_checks(
    field: str, value: int, failure: OdaFailure, ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer)
    cert = make_issuer_certificate(ca, issuer, PAN[:6], "1249", b"\x00\x00\x01", **{field: value})
    card[0x90] = cert.certificate
    assert run_sda(card, store).failure is failure


@pytest.mark.parametrize(
    ("field", "value", "failure"),
    [
        ("certificate_format", 0x02, OdaFailure.ICC_CERT_FORMAT),
        ("hash_algorithm", 0x02, OdaFailure.ICC_CERT_HASH_ALGORITHM),
        ("key_algorithm", 0x03, OdaFailure.ICC_KEY_ALGORITHM),
    ],
)
def test_icc_certificate_field_checks(
    field: str,
    value: int,
    failure: OdaFailure,
    ca: TestCa,
    issuer: IssuerKeys,
    icc: IccKeys,
    store: CaKeyStore,
) -> None:
    card = dda_card(ca, issuer, icc)
    cert = make_icc_certificate(issuer, icc, PAN, "1249", STATIC, **{field: value})  # type: ignore[arg-type]
    card[0x9F46] = cert.certificate
    assert run_dda(card, store).failure is failure


def test_signed_data_format_checks(
    ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer)
    card[0x93] = sign_ssad(issuer, DAC, STATIC, signed_data_format=0x05)
    assert run_sda(card, store).failure is OdaFailure.SSAD_FORMAT
    card = dda_card(ca, issuer, icc)
    card[0x9F4B] = sign_sdad(
        icc, dda_icc_dynamic_data(DYN_NUMBER), DDOL_DATA, signed_data_format=0x03
    )
    assert run_dda(card, store).failure is OdaFailure.SDAD_FORMAT
    card[0x9F4B] = sign_sdad(icc, b"\x09" + DYN_NUMBER, DDOL_DATA)  # number length 9 > 8
    assert run_dda(card, store).failure is OdaFailure.SDAD_DYNAMIC_DATA


@pytest.mark.parametrize("tag", [0x8F, 0x90, 0x9F32, 0x93, 0x5A])
def test_missing_sda_data_sets_icc_data_missing(
    tag: int, ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer)
    del card[tag]
    result = run_sda(card, store)
    assert result.failure is OdaFailure.ICC_DATA_MISSING
    assert result.tvr_bits == {"icc_data_missing", "sda_failed"}


@pytest.mark.parametrize("tag", [0x9F46, 0x9F47, 0x9F4B, 0x92, 0x9F48])
def test_missing_dda_data_sets_icc_data_missing(
    tag: int, ca: TestCa, issuer: IssuerKeys, icc: IccKeys, store: CaKeyStore
) -> None:
    card = dda_card(ca, issuer, icc)
    del card[tag]
    result = run_dda(card, store)
    assert result.failure is OdaFailure.ICC_DATA_MISSING
    assert result.tvr_bits == {"icc_data_missing", "dda_failed"}


def test_tvr_bits_mapping() -> None:
    assert OdaResult.not_performed().tvr_bits == {"oda_not_performed"}
    assert OdaFailure.ICC_DATA_MISSING.tvr_bit == "icc_data_missing"
    assert OdaFailure.SSAD_HASH.tvr_bit == "sda_failed"
    assert OdaFailure.TRANSACTION_DATA_HASH.tvr_bit == "cda_failed"
    assert OdaFailure.ISSUER_CERT_HASH.tvr_bit is None  # depends on the method
    assert OdaFailure.ISSUER_CERT_HASH.tvr_bits(OdaMethod.CDA) == {"cda_failed"}
    assert OdaFailure.SDAD_HASH.tvr_bits(OdaMethod.FDDA) == {"dda_failed"}


# --- Static data to be authenticated (Book 3 §10.3) --------------------------------------------


def test_static_data_strips_70_for_sfi_1_to_10_only() -> None:
    rec1 = b"\x70\x0a\x5a\x08" + bytes.fromhex("4761739001010010")
    rec11 = b"\x70\x03\x9f\x07\x00"
    result = oda.build_static_data([(1, rec1), (11, rec11)], sda_tag_list=b"\x82", aip=b"\x39\x00")
    assert result.ok
    assert result.data == rec1[2:] + rec11 + b"\x39\x00"


def test_static_data_record_not_70_fails() -> None:
    result = oda.build_static_data([(2, b"\x77\x02\x01\x02")])
    assert result.failure is OdaFailure.STATIC_DATA_RECORD
    trailing = oda.build_static_data([(2, b"\x70\x02\x01\x02\x00")])
    assert trailing.failure is OdaFailure.STATIC_DATA_RECORD
    assert oda.build_static_data([(12, b"\x77\x02\x01\x02")]).ok  # SFI 11-30: taken whole


def test_static_data_takes_records_as_coded() -> None:
    # A '70' with a longer length form than needed: SFI 1-10 lose exactly that header, SFI
    # 11-30 keep it, byte for byte (Book 3 §10.3).
    record = b"\x70\x81\x03\x9f\x07\x00"
    assert oda.build_static_data([(1, record)]).data == b"\x9f\x07\x00"
    assert oda.build_static_data([(11, record)]).data == record
    # A four-byte length field is read as emv.tlv reads it (the kernel decoded the same
    # record with emv.tlv before ODA sees it); the old private reader of oda stopped at three.
    four = b"\x70\x84\x00\x00\x00\x03\x9f\x07\x00"
    assert oda.build_static_data([(1, four)]).data == b"\x9f\x07\x00"


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x70",  # no length
        b"\x70\x05\x9f\x07\x00",  # value runs past the record
        b"\x70\x80\x00\x00",  # indefinite length
        b"\x00\x70\x01\xaa",  # padding before the template
        b"\x70\x01\xaa\x5a",  # bytes after the template
    ],
)
def test_static_data_malformed_record_is_a_failure_not_an_error(record: bytes) -> None:
    result = oda.build_static_data([(1, record)])
    assert result.failure is OdaFailure.STATIC_DATA_RECORD


def test_static_data_tag_list_other_than_82_fails() -> None:
    result = oda.build_static_data([], sda_tag_list=b"\x82\x5a", aip=b"\x39\x00")
    assert result.failure is OdaFailure.STATIC_DATA_TAG_LIST
    missing = oda.build_static_data([], sda_tag_list=b"\x82")
    assert missing.failure is OdaFailure.ICC_DATA_MISSING


def test_static_data_from_afl() -> None:
    # SFI 1 records 1-3 with 2 for ODA; SFI 2 record 1, none for ODA; SFI 11 record 1 for ODA.
    afl = bytes.fromhex("080103021001010058010101")
    assert oda.oda_records_from_afl(afl) == [(1, 1), (1, 2), (11, 1)]
    records = {
        (1, 1): b"\x70\x03\x5f\x28\x00",
        (1, 2): b"\x70\x02\x9f\x07",
        (1, 3): b"\x70\x00",
        (2, 1): b"\x70\x00",
        (11, 1): b"\x70\x01\xaa",
    }
    result = oda.build_static_data_from_afl(afl, records, {0x9F4A: b"\x82", 0x82: b"\x19\x80"})
    assert result.data == b"\x5f\x28\x00" + b"\x9f\x07" + b"\x70\x01\xaa" + b"\x19\x80"
    del records[(1, 2)]
    missing = oda.build_static_data_from_afl(afl, records, {})
    assert missing.failure is OdaFailure.ICC_DATA_MISSING
    assert oda.oda_records_from_afl(b"\x08\x01\x01") is None
    assert oda.oda_records_from_afl(bytes.fromhex("08010103")) is None  # 3 ODA records of 1
    bad = oda.build_static_data_from_afl(b"\x00\x01\x01\x01", records, {})
    assert bad.failure is OdaFailure.STATIC_DATA_AFL


# --- Generation ---------------------------------------------------------------------------------


def test_freshly_generated_chain_verifies() -> None:
    ca = TestCa(VISA, 0x50, RsaKey.generate(1024), date(2030, 1, 1))
    issuer = IssuerKeys.generate(1024, 65537)
    icc = IccKeys.generate(1024)
    card = make_card_oda_data(ca, issuer, icc, PAN, STATIC)
    card[0x9F4B] = sign_sdad(icc, dda_icc_dynamic_data(DYN_NUMBER), DDOL_DATA)
    store = CaKeyStore([ca.public_key()])
    result = oda.perform_dda(card, STATIC, store, VISA, TODAY, DDOL_DATA)
    assert result.ok, result.detail


def test_generate_test_pki_writes_loadable_files(tmp_path: Path) -> None:
    generate_test_pki(
        tmp_path,
        cas=[("A000000004", 0x05, 1024, 3, "2030-01-01")],
        issuers={"i": (1024, 3)},
        iccs={"c": (1024, 3)},
    )
    store = load_test_ca_store(tmp_path / "test_ca_keys.json")
    ca = TestCa.load(MASTERCARD, 0x05, directory=tmp_path / "pki")
    assert store.lookup(MASTERCARD, 0x05, TODAY) == ca.public_key()
    issuer = IssuerKeys.load("i", directory=tmp_path / "pki")
    icc = IccKeys.load("c", directory=tmp_path / "pki")
    card = make_card_oda_data(ca, issuer, icc, MC_PAN, STATIC)
    card[0x9F4B] = sign_sdad(icc, dda_icc_dynamic_data(DYN_NUMBER), DDOL_DATA)
    assert oda.perform_dda(card, STATIC, store, MASTERCARD, TODAY, DDOL_DATA).ok
    assert "TEST ONLY" in (tmp_path / "pki" / "README.txt").read_text()


# --- Robustness: recovery never raises on arbitrary bytes -------------------------------------

_ROBUST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _key(draw_modulus: bytes, exponent: bytes) -> RecoveredPublicKey:
    return RecoveredPublicKey(draw_modulus, exponent, date(2049, 12, 31), b"\0\0\1", 1, 1)


@_ROBUST
@given(
    cert=st.binary(max_size=260),
    remainder=st.one_of(st.none(), st.binary(max_size=40)),
    exponent=st.binary(max_size=4),
    pan=st.binary(max_size=12),
    full_length=st.booleans(),
)
def test_issuer_recovery_never_raises(
    cert: bytes, remainder: bytes | None, exponent: bytes, pan: bytes, full_length: bool
) -> None:
    ca_key = TestCa.load(VISA, 0x92).public_key()
    if full_length:
        cert = (cert * 200)[:176] if cert else bytes(176)
    result = oda.recover_issuer_public_key(ca_key, cert, remainder, exponent, pan, TODAY)
    assert not result.ok
    assert result.failure is not None


@_ROBUST
@given(
    modulus=st.binary(max_size=200),
    exponent=st.binary(max_size=4),
    blob=st.binary(max_size=260),
    data=st.binary(max_size=64),
)
def test_icc_and_signature_recovery_never_raise(
    modulus: bytes, exponent: bytes, blob: bytes, data: bytes
) -> None:
    key = _key(modulus, exponent)
    if modulus:
        blob = (blob * 300)[: len(modulus)] if blob else bytes(len(modulus))
    icc = oda.recover_icc_public_key(key, blob, data, exponent, data, data, TODAY)
    assert icc.failure is not None or icc.ok
    results = [
        oda.verify_ssad(key, blob, data),
        oda.verify_sdad(key, blob, data),
        oda.verify_fdda(key, blob, data, data, data, data),
        oda.verify_cda(key, blob, data, data, data),
        oda.verify_cda(key, b"\x77\x81" + bytes([len(blob) % 256]) + blob, data, data, data),
    ]
    for result in results:
        assert result.failure is not None or result.ok


@_ROBUST
@given(body=st.binary(min_size=154, max_size=154), remainder=st.binary(max_size=8))
def test_correctly_signed_random_issuer_certificates_never_raise(
    body: bytes, remainder: bytes
) -> None:
    """Valid frame and hash around random fields: dates, lengths and identifiers are hostile."""
    ca = TestCa.load(VISA, 0x92)
    body = b"\x02" + body[1:]
    exponent = b"\x03"
    digest = hashlib.sha1(body + remainder + exponent).digest()
    cert = ca.key.sign_raw(b"\x6a" + body + digest + b"\xbc")
    result = oda.recover_issuer_public_key(
        ca.public_key(), cert, remainder, exponent, bytes.fromhex(PAN), TODAY
    )
    assert result.ok or result.failure is not None


@_ROBUST
@given(
    response=st.binary(max_size=80),
    records=st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=20)), max_size=4),
)
def test_tlv_walkers_never_raise(response: bytes, records: list[tuple[int, bytes]]) -> None:
    oda.cda_transaction_data_hash(b"", b"", response)
    oda.build_static_data(records, sda_tag_list=response[:2] or None, aip=response[2:4] or None)
    oda.oda_records_from_afl(response)


def test_results_are_values_for_every_failure_path(
    ca: TestCa, issuer: IssuerKeys, store: CaKeyStore
) -> None:
    card = sda_card(ca, issuer)
    card[0x8F] = b""  # malformed index
    assert run_sda(card, store).failure is OdaFailure.ICC_DATA_MISSING
    callback: Callable[[bytes, int, bytes], bool] = lambda *_: False  # noqa: E731
    assert run_sda(sda_card(ca, issuer), store, is_revoked=callback).ok
