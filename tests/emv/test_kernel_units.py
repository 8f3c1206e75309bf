"""Unit tests of the kernel's pure pieces: pre-processing, CVM, risk, TAA, TVR, outcome."""

from __future__ import annotations

from datetime import date

import pytest

from emv.apdu import CryptogramType
from emv.explain import TSI_BITS as EXPLAIN_TSI
from emv.explain import TVR_BITS as EXPLAIN_TVR
from emv.kernel import (
    AidConfig,
    CardData,
    KernelConfigError,
    Outcome,
    OutcomeKind,
    TerminalConfig,
    TransactionRequest,
    Tsi,
    Tvr,
    mask_pan,
)
from emv.kernel.cvm import CvmInputs, select_cvm
from emv.kernel.entry_point import preprocess
from emv.kernel.outcome import CvmKind
from emv.kernel.risk import (
    processing_restrictions,
    random_selection,
    terminal_action_analysis,
    velocity_checking,
)
from emv.kernel.tvr import TSI_BITS, TVR_BITS

from .test_kernel_helpers import request

VISA = bytes.fromhex("A0000000031010")


def aid(**kwargs: object) -> AidConfig:
    values: dict[str, object] = {"aid": VISA, "kernel_id": 3}
    values.update(kwargs)
    return AidConfig(**values)  # type: ignore[arg-type]


# --- Entry Point pre-processing (Book B §3.1.1) --------------------------------------


@pytest.mark.parametrize(
    ("amount", "not_allowed", "floor", "cvm", "ttq2"),
    [
        (0, False, False, False, 0x80),  # zero amount, online-capable reader: online cryptogram
        (100, False, False, False, 0x00),
        (3000, False, True, False, 0x80),  # > floor limit 2000
        (5000, False, True, True, 0xC0),  # >= CVM required limit 5000
        (9999, False, True, True, 0xC0),
        (10000, True, True, True, 0xC0),  # >= contactless transaction limit
    ],
)
def test_preprocessing(amount: int, not_allowed: bool, floor: bool, cvm: bool, ttq2: int) -> None:
    config = aid(
        contactless_transaction_limit=10000, contactless_floor_limit=2000, cvm_required_limit=5000
    )
    terminal = TerminalConfig(ttq=bytes.fromhex("36C04000"), pin_entry_device=True)
    result = preprocess(terminal, config, request(amount))
    assert result.not_allowed is not_allowed
    assert result.floor_limit_exceeded is floor
    assert result.cvm_required_limit_exceeded is cvm
    assert result.ttq[1] == ttq2  # b8-b7 cleared first, then set per transaction
    assert result.ttq[0] == 0x36
    assert result.ttq[2] == 0x40


def test_zero_amount_offline_only_reader_not_allowed() -> None:
    config = TerminalConfig(ttq=bytes.fromhex("28000000"), online_capable=False)
    assert preprocess(config, aid(contactless_floor_limit=100), request(0)).not_allowed
    assert preprocess(TerminalConfig(), aid(zero_amount_allowed=False), request(0)).not_allowed


def test_floor_limit_falls_back_to_terminal_floor_limit() -> None:
    result = preprocess(TerminalConfig(), aid(terminal_floor_limit=500), request(501))
    assert result.floor_limit_exceeded


# --- CVM selection (Book 3 §10.5, Book C-2 §7.5) -------------------------------------


def cvm_inputs(cvm_list: str | None, amount: int = 7000, **kwargs: object) -> CvmInputs:
    values: dict[str, object] = {
        "aip": bytes.fromhex("1880"),
        "cvm_list": None if cvm_list is None else bytes.fromhex(cvm_list),
        "amount": amount,
        "other_amount": 0,
        "transaction_type": 0,
        "transaction_currency": bytes.fromhex("0978"),
        "application_currency": bytes.fromhex("0978"),
        "cvm_capability": 0x68,
        "cvm_required_limit_exceeded": True,
        "unattended": False,
    }
    values.update(kwargs)
    return CvmInputs(**values)  # type: ignore[arg-type]


def test_cvm_online_pin_first() -> None:
    decision = select_cvm(cvm_inputs("000000000000000042031E031F03"))
    assert decision.cvm is CvmKind.ONLINE_PIN
    assert decision.results == bytes.fromhex("420300")
    # Selecting online PIN is not entering it: only a PIN entry device that collected the
    # PIN may set TVR byte 3 b3.
    assert "online_pin_entered" not in decision.tvr_bits


def test_cvm_below_limit_only_no_cvm_capability() -> None:
    decision = select_cvm(cvm_inputs("000000000000000042031E031F03", cvm_capability=0x08))
    assert decision.cvm is CvmKind.NO_CVM
    assert decision.results == bytes.fromhex("1F0302")


def test_cvm_amount_conditions_x_and_y() -> None:
    # X = 50.00: under X -> no CVM (rule 1F06), otherwise signature (1E07).
    cvm_list = "00001388" + "00000000" + "1F06" + "1E07"
    assert select_cvm(cvm_inputs(cvm_list, amount=1000)).cvm is CvmKind.NO_CVM
    assert select_cvm(cvm_inputs(cvm_list, amount=9000)).cvm is CvmKind.SIGNATURE
    # Amount conditions apply only in the application currency.
    foreign = select_cvm(cvm_inputs(cvm_list, amount=1000, application_currency=b"\x08\x40"))
    assert foreign.cvm is None


def test_cvm_unrecognised_then_next() -> None:
    decision = select_cvm(cvm_inputs("0000000000000000" + "6700" + "1F00"))
    assert decision.cvm is CvmKind.NO_CVM
    assert "unrecognised_cvm" in decision.tvr_bits


def test_cvm_fail_rule_and_no_match() -> None:
    failed = select_cvm(cvm_inputs("0000000000000000" + "0000"))
    assert failed.cvm is None
    assert failed.results == bytes.fromhex("000001")
    assert "cardholder_verification_not_successful" in failed.tvr_bits
    none_applies = select_cvm(cvm_inputs("0000000000000000" + "1F05"))
    assert none_applies.results == bytes.fromhex("3F0001")


def test_cvm_missing_list_and_unsupported_aip() -> None:
    missing = select_cvm(cvm_inputs(None))
    assert missing.cvm is CvmKind.NO_CVM
    assert "icc_data_missing" in missing.tvr_bits
    off = select_cvm(cvm_inputs(None, aip=bytes.fromhex("0080")))
    assert off.cvm is CvmKind.NO_CVM
    assert off.results == bytes.fromhex("3F0000")
    assert not off.performed


def test_cdcvm_on_device() -> None:
    above = select_cvm(cvm_inputs(None, aip=bytes.fromhex("1A80"), on_device_cvm=True))
    assert above.cvm is CvmKind.CDCVM
    assert above.results == bytes.fromhex("010002")
    below = select_cvm(
        cvm_inputs(
            None, aip=bytes.fromhex("1A80"), cvm_required_limit_exceeded=False, on_device_cvm=True
        )
    )
    assert below.cvm is CvmKind.NO_CVM
    assert below.results == bytes.fromhex("3F0002")


# --- Processing restrictions, TRM, TAA (Book 3 §10.4, §10.6, §10.7) --------------------


def test_processing_restrictions() -> None:
    card = {
        0x9F08: b"\x00\x01",
        0x5F25: bytes.fromhex("250701"),
        0x5F24: bytes.fromhex("250531"),
        0x9F07: bytes.fromhex("0000"),
        0x5F28: bytes.fromhex("0978"),
    }
    bits = processing_restrictions(
        card, TerminalConfig().data, aid(app_version=b"\x00\x02"), date(2025, 6, 1), 0, 0
    )
    assert bits == {
        "different_application_versions",
        "application_not_yet_effective",
        "expired_application",
        "service_not_allowed",
    }
    fine = {0x5F24: bytes.fromhex("250630"), 0x9F07: bytes.fromhex("FF00")}
    assert (
        processing_restrictions(fine, TerminalConfig().data, aid(), date(2025, 6, 30), 0, 0)
        == set()
    )


def test_random_selection() -> None:
    config = aid(
        contactless_floor_limit=10000,
        random_selection_threshold=2000,
        random_selection_target_percent=10,
        random_selection_max_percent=50,
    )
    assert random_selection(1000, config, 9)
    assert not random_selection(1000, config, 10)
    # Halfway between threshold and floor: 10 + (50 - 10) / 2 = 30 %.
    assert random_selection(6000, config, 29)
    assert not random_selection(6000, config, 30)
    assert not random_selection(10001, config, 0)  # above the floor: not random
    assert not random_selection(1000, aid(contactless_floor_limit=10000), 0)


def test_velocity_checking() -> None:
    assert velocity_checking(b"\x00\x05", b"\x00\x03", b"\x01", b"\x03") == {
        "lower_consecutive_offline_limit_exceeded"
    }
    assert velocity_checking(b"\x00\x05", b"\x00\x04", b"\x01", b"\x03") == set()
    assert velocity_checking(None, b"\x00\x04", b"\x01", b"\x03") == {
        "lower_consecutive_offline_limit_exceeded",
        "upper_consecutive_offline_limit_exceeded",
    }
    assert velocity_checking(b"\x00\x05", b"\x00\x05", b"\x01", b"\x03") >= {
        "upper_consecutive_offline_limit_exceeded"
    }
    assert velocity_checking(b"\x00\x05", None, None, b"\x03") == set()


@pytest.mark.parametrize(
    ("tvr", "iacs", "online", "expected"),
    [
        ("0000000000", {}, True, CryptogramType.TC),
        ("0000008000", {}, True, CryptogramType.ARQC),  # floor limit: IAC-online default FF
        ("0040000000", {0x9F0E: "0040000000"}, True, CryptogramType.AAC),
        ("0000008000", {0x9F0F: "0000000000"}, True, CryptogramType.TC),  # TAC online 00 too
        ("0000008000", {}, False, CryptogramType.AAC),  # offline-only: default codes
        ("0000000000", {}, False, CryptogramType.TC),
    ],
)
def test_terminal_action_analysis(
    tvr: str, iacs: dict[int, str], online: bool, expected: CryptogramType
) -> None:
    config = aid(tac_online=bytes(5), tac_default=bytes(5), tac_denial=bytes(5))
    card = {tag: bytes.fromhex(value) for tag, value in iacs.items()}
    result = terminal_action_analysis(
        bytes.fromhex(tvr),
        config,
        card,
        online_capable=online,
        online_only=False,
        online_cryptogram_required=False,
    )
    assert result is expected


# --- TVR / TSI, outcome, config -----------------------------------------------------


def test_tvr_bits_match_book3_table() -> None:
    """Same positions as emv.explain's Annex C5/C6 tables, name by name."""
    assert [(i, m) for i, m in TVR_BITS.values()] == [(i, m) for i, m, _ in EXPLAIN_TVR]
    assert [(i, m) for i, m in TSI_BITS.values()] == [(i, m) for i, m, _ in EXPLAIN_TSI]
    tvr = Tvr()
    tvr.set("oda_not_performed", "expired_application", "floor_limit_exceeded")
    assert tvr.value == bytes.fromhex("8040008000")
    assert tvr.names() == ["oda_not_performed", "expired_application", "floor_limit_exceeded"]
    tsi = Tsi()
    tsi.set("oda_performed", "terminal_risk_management_performed")
    assert tsi.value == bytes.fromhex("8800")


def test_outcome_repr_never_shows_card_data() -> None:
    data = CardData(
        {
            0x5A: bytes.fromhex("4761739001010010"),
            0x57: bytes.fromhex("4761739001010010D3112201"),
            0x9F26: bytes.fromhex("0102030405060708"),
        }
    )
    outcome = Outcome(OutcomeKind.APPROVED, masked_pan=mask_pan("4761739001010010"), card_data=data)
    text = repr(outcome) + str(data) + str(data.redacted())
    assert "4761739001010010" not in text
    assert "47617390010100" not in text
    assert "0102030405060708" in text
    assert outcome.masked_pan == "476173******0010"
    assert data[0x5A] == bytes.fromhex("4761739001010010")
    assert mask_pan("123") == "***"


def test_config_errors_name_the_field() -> None:
    with pytest.raises(KernelConfigError, match="tac_online"):
        aid(tac_online=b"\x00")
    with pytest.raises(KernelConfigError, match="kernel_id"):
        aid(kernel_id=4)
    with pytest.raises(KernelConfigError, match=r"terminal\.9F1A"):
        TerminalConfig(data={0x9F33: b"\x00\x00\x00", 0x9F35: b"\x22", 0x5F2A: b"\x09\x78"})
    with pytest.raises(KernelConfigError, match="date"):
        request(date="251301")
    with pytest.raises(KernelConfigError, match="unpredictable_number"):
        request(unpredictable_number=b"\x00")
    with pytest.raises(KernelConfigError, match="amount"):
        TransactionRequest(amount=-1, date="250101", time="000000", unpredictable_number=bytes(4))
