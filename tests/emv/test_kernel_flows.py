"""Complete contactless transactions against the virtual cards of every profile and behaviour.

Amounts: 10.00 is below the default floor and CVM limits (50.00); 70.00 is above both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emv.kernel import CryptogramKind, CvmKind, OdaStatus, OutcomeKind, Reasons, TerminalConfig
from emv.kernel.kernel_data import UiMessage
from emv.kernel.tvr import Tvr
from emv.oda import OdaMethod
from simulator.cards import load_card, verify_cryptogram

from .test_kernel_helpers import transact

PROFILES_DIR = Path(__file__).resolve().parents[2] / "simulator" / "data" / "cards"

A, D, ONLINE, E, T = (
    OutcomeKind.APPROVED,
    OutcomeKind.DECLINED,
    OutcomeKind.ONLINE_REQUEST,
    OutcomeKind.END_APPLICATION,
    OutcomeKind.TRY_AGAIN,
)


def tvr(outcome: Any) -> set[str]:
    return set(Tvr(outcome.tvr).names())


# (profile, behaviour, amount, outcome, cryptogram, TVR bits that must be set)
VISA_CASES: list[tuple[str, dict[str, Any], int, OutcomeKind, str | None, set[str]]] = [
    ("visa", {}, 1000, A, "TC", set()),
    ("visa", {"approve_offline": True}, 1000, A, "TC", set()),
    ("visa", {"request_online": True}, 1000, ONLINE, "ARQC", {"oda_not_performed"}),
    ("visa", {"decline": True}, 1000, D, "AAC", set()),
    ("visa", {"cdcvm_performed": True}, 1000, A, "TC", set()),
    ("visa", {"expired": True}, 1000, ONLINE, "ARQC", {"expired_application"}),
    ("visa", {"corrupt": "cryptogram"}, 1000, A, "TC", set()),
    ("visa", {"slow": 0.5}, 1000, A, "TC", set()),
    # No PIN entry device: the card's first choice (online PIN) is not offered, signature is.
    ("visa", {}, 7000, ONLINE, "ARQC", set()),
    # fDDA version 00 (no 9F69) is not accepted unless configured (C-3 v2.10 §5.8.2): the
    # CTQ says go online when offline data authentication fails.
    ("visa_debit", {}, 1000, ONLINE, "TC", {"dda_failed"}),
    ("visa_debit", {"request_online": True}, 1000, ONLINE, "ARQC", set()),
    ("visa_debit", {"decline": True}, 1000, D, "AAC", set()),
    ("visa_debit", {"expired": True}, 1000, ONLINE, "ARQC", {"expired_application"}),
    ("maestro", {}, 1000, ONLINE, "ARQC", {"oda_not_performed"}),
    ("maestro", {"decline": True}, 1000, D, "AAC", set()),
    ("maestro", {"expired": True}, 1000, ONLINE, "ARQC", {"expired_application"}),
    ("maestro", {}, 7000, ONLINE, "ARQC", {"floor_limit_exceeded"}),
]


@pytest.mark.parametrize(
    ("profile", "behaviour", "amount", "kind", "cryptogram", "bits"), VISA_CASES
)
def test_complete_transaction(
    profile: str,
    behaviour: dict[str, Any],
    amount: int,
    kind: OutcomeKind,
    cryptogram: str | None,
    bits: set[str],
) -> None:
    outcome = transact(load_card(profile, **behaviour), amount).outcome
    assert outcome.kind is kind, outcome.detail
    assert outcome.cryptogram == (CryptogramKind(cryptogram) if cryptogram else None)
    assert bits <= tvr(outcome)
    if kind is A:
        assert outcome.reason == ""
        assert outcome.oda_status is OdaStatus.SUCCESSFUL
    if kind is D:
        assert outcome.reason


MASTERCARD_CASES: list[tuple[str, dict[str, Any], int, OutcomeKind, str, set[str]]] = [
    ("mastercard", {}, 1000, A, "TC", set()),
    ("mastercard", {"approve_offline": True}, 1000, A, "TC", set()),
    ("mastercard", {"request_online": True}, 1000, ONLINE, "ARQC", set()),
    ("mastercard", {}, 7000, ONLINE, "ARQC", {"floor_limit_exceeded"}),
    ("mastercard", {"corrupt": "cryptogram"}, 1000, A, "TC", set()),
    ("mastercard_phone", {}, 1000, ONLINE, "ARQC", set()),
    ("mastercard_phone", {}, 7000, ONLINE, "ARQC", {"floor_limit_exceeded"}),
]


@pytest.mark.parametrize(
    ("profile", "behaviour", "amount", "kind", "cryptogram", "bits"), MASTERCARD_CASES
)
def test_mastercard_with_cda(
    profile: str,
    behaviour: dict[str, Any],
    amount: int,
    kind: OutcomeKind,
    cryptogram: str,
    bits: set[str],
) -> None:
    outcome = transact(load_card(profile, **behaviour), amount).outcome
    # A CDA failure here with "ICC Public Key Certificate hash mismatch" means the card signed
    # different static data than Book 3 §10.3 defines (e.g. a '70 81 xx' record cut at [2:]).
    assert outcome.kind is kind, outcome.detail
    assert outcome.cryptogram is CryptogramKind(cryptogram)
    assert outcome.oda_method is OdaMethod.CDA
    assert outcome.oda_status is OdaStatus.SUCCESSFUL, outcome.detail
    assert bits <= tvr(outcome)
    assert not {"cda_failed", "oda_not_performed"} & tvr(outcome)


@pytest.fixture
def mastercard_short(tmp_path: Path) -> Path:
    """The Mastercard profile with its signed record kept under 128 bytes (short-form length)."""
    profile = json.loads((PROFILES_DIR / "mastercard.json").read_text())
    profile["name"] = "mastercard_short"
    profile["records"][0]["tags"] += ["8E", "9F0D", "9F0E", "9F0F", "8C", "8D"]
    profile["records"][1]["tags"] = ["5A", "5F34", "5F24", "5F25", "5F28", "9F07", "9F08", "9F4A"]
    path = tmp_path / "mastercard_short.json"
    path.write_text(json.dumps(profile))
    return path


@pytest.mark.parametrize(
    ("behaviour", "amount", "kind", "cryptogram", "cvm"),
    [
        ({}, 1000, A, "TC", CvmKind.NO_CVM),
        # CVM list: online PIN, signature, no CVM; no PIN entry device, so signature.
        ({}, 7000, ONLINE, "ARQC", CvmKind.SIGNATURE),
        ({"request_online": True}, 1000, ONLINE, "ARQC", CvmKind.NO_CVM),
        ({"cdcvm_performed": True}, 7000, ONLINE, "ARQC", CvmKind.CDCVM),
        ({"cdcvm_performed": True}, 1000, A, "TC", CvmKind.NO_CVM),
        ({"corrupt": "cryptogram"}, 1000, A, "TC", CvmKind.NO_CVM),
    ],
)
def test_kernel2_cda_end_to_end(
    mastercard_short: Path,
    behaviour: dict[str, Any],
    amount: int,
    kind: OutcomeKind,
    cryptogram: str,
    cvm: CvmKind,
) -> None:
    run = transact(load_card(mastercard_short, **behaviour), amount)
    outcome = run.outcome
    assert outcome.kind is kind, outcome.detail
    assert outcome.cryptogram is CryptogramKind(cryptogram)
    assert outcome.cvm is cvm
    assert outcome.oda_method is OdaMethod.CDA
    assert outcome.oda_status is OdaStatus.SUCCESSFUL
    # GENERATE AC asked for CDA (P1 b5) and the AC recovered from the SDAD is passed on.
    genac = [c for c in run.commands if c[:2] == b"\x80\xae"]
    assert len(genac) == 1
    assert genac[0][2] & 0x10
    assert len(outcome.card_data[0x9F26]) == 8
    assert outcome.tsi[0] & 0x80  # ODA performed


@pytest.mark.parametrize("corruption", ["sdad", "icc_certificate", "issuer_certificate"])
def test_kernel2_cda_tampering_ends_the_application_with_cda_failed(
    mastercard_short: Path, corruption: str
) -> None:
    """C-2 v2.10 S910: a failed CDA ends the application, "insert, swipe or try another card"
    (not Declined: the card's cryptogram cannot be trusted to say anything)."""
    outcome = transact(load_card(mastercard_short, corrupt=corruption), 1000).outcome
    assert outcome.kind is OutcomeKind.END_APPLICATION
    assert outcome.reason == Reasons.TRY_ANOTHER_CARD
    assert outcome.message is UiMessage.INSERT_SWIPE_OR_TRY_ANOTHER_CARD
    assert "cda_failed" in tvr(outcome)
    assert outcome.oda_status is OdaStatus.FAILED
    assert outcome.oda_failure is not None


def test_kernel2_decline_is_not_signed(mastercard_short: Path) -> None:
    run = transact(load_card(mastercard_short, decline=True), 1000)
    assert run.outcome.kind is D
    assert run.outcome.cryptogram is CryptogramKind.AAC
    assert run.outcome.reason == Reasons.DECLINED


@pytest.mark.parametrize(
    "corruption", ["issuer_certificate", "icc_certificate", "sdad", "static_data"]
)
@pytest.mark.parametrize("profile", ["visa", "visa_debit"])
def test_fdda_tampering_sets_dda_failed_and_goes_online(profile: str, corruption: str) -> None:
    """Book C-3: fDDA fails -> TVR 'DDA failed'; CTQ b6 (go online if ODA fails) -> online."""
    outcome = transact(load_card(profile, corrupt=corruption), 1000).outcome
    assert "dda_failed" in tvr(outcome)
    assert outcome.oda_method is OdaMethod.FDDA
    assert outcome.oda_status is OdaStatus.FAILED
    assert outcome.kind is ONLINE
    assert outcome.cryptogram is CryptogramKind.TC


def test_fdda_failure_declines_on_offline_only_reader() -> None:
    config = TerminalConfig(ttq=bytes.fromhex("28000000"), online_capable=False)
    outcome = transact(load_card("visa", corrupt="sdad"), 1000, config=config).outcome
    assert outcome.kind is D
    assert outcome.reason == Reasons.ODA_FAILED
    assert "dda_failed" in tvr(outcome)


@pytest.mark.parametrize(
    "profile", ["visa", "visa_debit", "mastercard", "mastercard_phone", "maestro"]
)
class TestCardFaults:
    def test_blocked_application(self, profile: str) -> None:
        outcome = transact(load_card(profile, blocked_application=True)).outcome
        assert outcome.kind is E
        assert outcome.reason == Reasons.BLOCKED

    def test_blocked_at_gpo(self, profile: str) -> None:
        outcome = transact(load_card(profile, blocked_application=True, blocked_at="gpo")).outcome
        assert outcome.kind is E
        assert "6985" in outcome.detail

    def test_malformed_record(self, profile: str) -> None:
        outcome = transact(load_card(profile, corrupt="record_tlv")).outcome
        assert outcome.kind is E
        assert outcome.reason == Reasons.READ_ERROR
        assert "malformed TLV" in outcome.detail

    def test_missing_expiry(self, profile: str) -> None:
        outcome = transact(load_card(profile, corrupt="missing_data")).outcome
        if profile.startswith("visa"):
            # Kernel 3 needs 5F24 only for an offline approval.
            assert outcome.kind is E
        else:
            assert outcome.kind is E
        assert outcome.reason == Reasons.DATA_MISSING
        assert "icc_data_missing" in tvr(outcome)

    def test_unexpected_status_word(self, profile: str) -> None:
        outcome = transact(load_card(profile, corrupt="unexpected_status")).outcome
        assert outcome.kind is E
        assert "6F00" in outcome.detail

    def test_removed_mid_transaction(self, profile: str) -> None:
        run = transact(load_card(profile, removed_after_n_commands=3))
        assert run.outcome.kind is T
        assert run.outcome.reason == Reasons.CARD_REMOVED
        assert run.outcome.apdu_count == 3

    def test_expired_card_is_flagged(self, profile: str) -> None:
        outcome = transact(load_card(profile, expired=True)).outcome
        assert "expired_application" in tvr(outcome)
        assert outcome.kind is not A
        if outcome.kind is D:
            assert outcome.reason == Reasons.EXPIRED


def test_outcome_fields_and_card_data() -> None:
    run = transact(load_card("visa"), 1000)
    outcome = run.outcome
    assert outcome.kernel_id == 3
    assert outcome.aid == bytes.fromhex("A0000000031010")
    assert outcome.label == "VISA CREDIT"
    assert outcome.masked_pan == "476173******0010"
    assert outcome.expiry == "3112"
    assert outcome.apdu_count == len(run.exchanges) == 7
    for tag in (0x9F26, 0x9F27, 0x9F10, 0x9F36, 0x9F37, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A, 0x82):
        assert tag in outcome.card_data, hex(tag)
    assert outcome.card_data[0x9F37] == bytes.fromhex("A1B2C3D4")
    assert outcome.card_data[0x9F02] == bytes.fromhex("000000001000")
    text = repr(outcome) + str(outcome.summary())
    assert "4761739001010010" not in text
    assert "4761739001010010" not in text.replace("*", "")
    assert outcome.card_data[0x5A].hex().startswith("4761739001010010")
    assert "<redacted>" in repr(outcome.card_data)
    json.dumps(outcome.summary())


def test_tvr_sent_in_cdol1_matches_outcome(mastercard_short: Path) -> None:
    run = transact(load_card(mastercard_short), 7000)
    genac = next(c for c in run.commands if c[:2] == b"\x80\xae")
    # CDOL1: 9F02 06 9F03 06 9F1A 02 95 05 ... -> TVR at offset 14 of the data.
    data = genac[5:-1]
    assert data[14:19] == run.outcome.tvr
    # Floor limit exceeded; relay resistance not performed (byte 5 b2-b1 '01', C-2 v2.6+);
    # no "online PIN entered" (byte 3 b3): no PIN was entered.
    assert run.outcome.tvr == bytes.fromhex("0000008001")


# --- Kernel 3 CVM from the CTQ (Book C-3 §5.7, Req 5.7.1.2) ----------------------------


@pytest.fixture
def visa_online_pin_ctq(tmp_path: Path) -> Path:
    """The Visa profile whose CTQ always asks for online PIN (byte 1 b8), even with a TC."""
    profile = json.loads((PROFILES_DIR / "visa.json").read_text())
    profile["name"] = "visa_online_pin_ctq"
    profile["ctq"] = "A800"
    path = tmp_path / "visa_online_pin_ctq.json"
    path.write_text(json.dumps(profile))
    return path


def test_kernel3_tc_with_ctq_online_pin_required_goes_online(visa_online_pin_ctq: Path) -> None:
    """Req 5.7.1.2: CTQ 'Online PIN Required' and TTQ 'online PIN supported' -> Online PIN and
    an online request, even when the card approved offline: never an offline approval
    without the PIN the card asked for."""
    with_pin_pad = TerminalConfig(ttq=bytes.fromhex("26004000"), pin_entry_device=True)
    outcome = transact(load_card(visa_online_pin_ctq), 1000, config=with_pin_pad).outcome
    assert outcome.cryptogram is CryptogramKind.TC
    assert outcome.kind is ONLINE, outcome.detail
    assert outcome.cvm is CvmKind.ONLINE_PIN
    # The PIN is still to be collected: the kernel never claims it was entered.
    assert "online_pin_entered" not in tvr(outcome)


def test_kernel3_ctq_online_pin_on_a_reader_without_pin_pad(visa_online_pin_ctq: Path) -> None:
    """Without a PIN entry device the TTQ does not claim online PIN: below the CVM limit no
    CVM is required and the card's TC stands; above it, Req 5.7.1.3 declines."""
    below = transact(load_card(visa_online_pin_ctq), 1000).outcome
    assert below.kind is A, below.detail
    assert below.cvm is CvmKind.NO_CVM
    above = transact(load_card(visa_online_pin_ctq, approve_offline=True), 6000).outcome
    assert above.cvm is not CvmKind.ONLINE_PIN


def test_kernel3_cdcvm_with_tc_needs_signed_ctq() -> None:
    """Req 5.7.1.2: CTQ 'Consumer Device CVM Performed' without Card Authentication Related
    Data (9F69, which carries the signed copy of the CTQ) is trusted only with an ARQC; with
    a TC the reader declines (fDDA version 00 card: no 9F69)."""
    outcome = transact(load_card("visa_debit", cdcvm_performed=True), 1000).outcome
    assert outcome.kind is D, outcome.detail
    assert outcome.reason == Reasons.CVM_FAILED
    # With 9F69 (fDDA version 01) the signed CTQ copy matches: approved with CDCVM.
    signed = transact(load_card("visa", cdcvm_performed=True), 1000).outcome
    assert signed.kind is A, signed.detail
    assert signed.cvm is CvmKind.CDCVM


# --- The online data is what the card computed its cryptogram over ---------------------------


@pytest.mark.parametrize(
    ("profile", "behaviour", "amount"),
    [
        ("visa", {"request_online": True}, 1000),
        ("visa", {}, 7000),  # above the CVM limit: the kernel sets TVR bits after the GPO
        ("visa", {"expired": True}, 1000),  # expired: TVR byte 2 set after the GPO
        ("visa_debit", {"request_online": True}, 1000),
        ("maestro", {}, 7000),
        ("mastercard", {"request_online": True}, 1000),
        ("mastercard", {}, 7000),
        ("mastercard_phone", {}, 1000),
    ],
)
def test_the_arqc_verifies_from_the_online_data_alone(
    profile: str, behaviour: dict[str, Any], amount: int
) -> None:
    """The TVR is an input of the Application Cryptogram (EMV Book 2 v4.4 §8.1.1, Table 26):
    the online data must carry the TVR the card received in the DOL of the command that gave
    the ARQC (Kernel 3: the PDOL of GET PROCESSING OPTIONS; Kernel 2: CDOL1 of GENERATE AC),
    or the issuer, recomputing the ARQC from what it is sent, declines it. Checked with the
    issuer's own arithmetic (simulator.cards.verify_cryptogram, the card's IMK)."""
    card = load_card(profile, **behaviour)
    run = transact(card, amount)
    outcome = run.outcome
    assert outcome.kind is ONLINE, outcome.detail
    assert outcome.cryptogram is CryptogramKind.ARQC
    assert verify_cryptogram(card.profile, dict(outcome.card_data.items()))


def test_kernel3_online_data_carries_the_pdol_tvr_while_the_outcome_has_the_final_one() -> None:
    """What the terminal itself decided on (the receipt's and the journal's TVR) is the final
    TVR; what goes to the issuer is the card's input."""
    outcome = transact(load_card("visa", expired=True), 1000).outcome
    assert "expired_application" in tvr(outcome)  # set by the kernel after the GPO
    sent = outcome.card_data[0x95]
    assert "expired_application" not in Tvr(sent).names()
    assert sent != outcome.tvr


@pytest.mark.parametrize(
    ("corruption", "tvr_after"),
    [(None, "0000000001"), ("sdad", "0400000001")],
)
def test_kernel2_cda_known_answer_tvr_and_cvm_results(
    mastercard_short: Path, corruption: str | None, tvr_after: str
) -> None:
    """Known answers for a CDA transaction at 10.00 (below the floor and CVM limits):
    CDOL1 carries TVR 00 00 00 00 01 (CDA possible, so no "ODA not performed"; byte 5 b2-b1
    '01' relay resistance not performed, C-2 v2.6+) and CVM Results 1F 03 02 (CVM list rule
    No CVM "if terminal supports", successful; C-2 S456.30: DF8119 '08' below the limit).
    A tampered SDAD then adds "CDA failed" (TVR byte 1 b3, Book 3 Annex C5) to the outcome."""
    behaviour = {} if corruption is None else {"corrupt": corruption}
    run = transact(load_card(mastercard_short, **behaviour), 1000)
    genac = next(c for c in run.commands if c[:2] == b"\x80\xae")
    data = genac[5:-1]
    assert genac[2] & 0x10  # CDA requested
    assert data[14:19] == bytes.fromhex("0000000001")
    assert data[-3:] == bytes.fromhex("1F0302")
    assert run.outcome.tvr == bytes.fromhex(tvr_after)
