"""Kernel behaviour against strict scripted cards: exact commands, faults, Entry Point rules.

Every ScriptedCard fails the test on a command it did not expect (UnexpectedCommand).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.kernel import (
    AidConfig,
    ContactlessTransaction,
    CryptogramKind,
    CvmKind,
    KernelStateError,
    OutcomeKind,
    Reasons,
    TerminalConfig,
    default_aids,
)
from emv.kernel.kernel_data import UiMessage
from emv.kernel.tvr import Tvr
from emv.tlv import Tlv
from simulator.cards import ANY, ScriptedCard, prefix

from .test_kernel_helpers import CA_KEYS, request, transact

VISA = bytes.fromhex("A0000000031010")
ELECTRON = bytes.fromhex("A0000000032010")
MC = bytes.fromhex("A0000000041010")
PPSE_CMD = "00A404000E325041592E5359532E444446303100"
OK = "9000"


def p(tag: int, value: bytes | str) -> Tlv:
    return Tlv.primitive(tag, bytes.fromhex(value) if isinstance(value, str) else value)


def t(tag: int, *children: Tlv) -> Tlv:
    return Tlv.template(tag, children)


def hexr(obj: Tlv, sw: str = OK) -> str:
    return obj.encode().hex() + sw


def ppse(*entries: tuple[bytes, int | None, str | None]) -> str:
    apps = []
    for aid, priority, kernel in entries:
        kids = [p(0x4F, aid), p(0x50, b"APP")]
        if priority is not None:
            kids.append(p(0x87, bytes([priority])))
        if kernel is not None:
            kids.append(p(0x9F2A, kernel))
        apps.append(t(0x61, *kids))
    return hexr(t(0x6F, p(0x84, b"2PAY.SYS.DDF01"), t(0xA5, t(0xBF0C, *apps))))


def select_cmd(aid: bytes) -> str:
    return "00A40400" + f"{len(aid):02X}" + aid.hex() + "00"


def fci(aid: bytes, pdol: str = "9F66049F02069F37045F2A02") -> str:
    return hexr(t(0x6F, p(0x84, aid), t(0xA5, p(0x50, b"VISA TEST"), p(0x9F38, pdol))))


TRACK2 = "4761739001010010D31122010000000000000F"


def visa_gpo(cid: str = "80", ctq: str | None = "0000", extra: tuple[Tlv, ...] = ()) -> str:
    return hexr(
        t(
            0x77,
            p(0x82, "0000"),
            p(0x9F36, "0011"),
            p(0x9F26, "1122334455667788"),
            p(0x9F27, cid),
            p(0x9F10, "06011203A00000"),
            *([p(0x9F6C, ctq)] if ctq is not None else []),
            p(0x57, TRACK2),
            *extra,
        )
    )


def visa_to_gpo(gpo_answer: str) -> list[tuple[Any, str]]:
    """A Visa card's script up to its GPO answer: PPSE, SELECT (PDOL asking for the TTQ), GPO."""
    return [
        (PPSE_CMD, ppse((VISA, 1, "03"))),
        (select_cmd(VISA), fci(VISA, "9F6604")),
        (prefix("80A8"), gpo_answer),
    ]


def run_script(script: list[tuple[Any, str]], amount: int = 1000, **kwargs: Any) -> Any:
    card = ScriptedCard(script)
    run = transact(card, amount, **kwargs)
    card.assert_finished()
    return run


def test_visa_online_exact_commands() -> None:
    """PDOL data: TTQ (CVM not required, floor not exceeded), amount, UN, currency."""
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA)),
            (
                "80A80000"
                + "12"
                + "8310"
                + "22004000"  # TTQ: qVSDC, signature; no online PIN without a PIN pad
                + "000000001000"
                + "A1B2C3D4"
                + "0978"
                + "00",
                visa_gpo(),
            ),
        ]
    )
    outcome = run.outcome
    assert outcome.kind is OutcomeKind.ONLINE_REQUEST
    assert outcome.cryptogram is CryptogramKind.ARQC
    assert outcome.cvm is CvmKind.NO_CVM
    assert outcome.masked_pan == "476173******0010"
    assert outcome.expiry == "3112"
    assert outcome.apdu_count == 3


def test_ttq_qualifiers_from_preprocessing() -> None:
    """Book B §3.1.1: amount > floor -> online cryptogram required; >= CVM limit -> CVM required."""
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            ("80A8000006830422C0400000", visa_gpo(ctq="4000")),
        ],
        amount=5000 + 1,
    )
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST
    assert run.outcome.cvm is CvmKind.SIGNATURE


def test_cvm_required_at_exactly_the_limit_and_the_ctq_names_none() -> None:
    """Book B v2.10 §3.1.1.9: at the CVM Required Limit ("greater than or equal") the reader
    requires a CVM (TTQ byte 2 b7); Book C-3 v2.10 Req 5.7.1.3: a CTQ naming no CVM the
    reader supports then declines, whatever cryptogram the card gave."""
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            ("80A8000006830422404000" + "00", visa_gpo()),
        ],
        amount=5000,
    )
    assert run.outcome.kind is OutcomeKind.DECLINED
    assert run.outcome.reason == Reasons.CVM_FAILED
    assert "Req 5.7.1.3" in run.outcome.detail
    assert "cardholder_verification_not_successful" in Tvr(run.outcome.tvr).names()


def test_cvm_required_without_a_ctq_is_the_readers_signature() -> None:
    """No CTQ at all: the reader's own capability decides (TTQ byte 1 b2, signature)."""
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            ("80A8000006830422404000" + "00", visa_gpo(ctq=None)),
        ],
        amount=5000,
    )
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST
    assert run.outcome.cvm is CvmKind.SIGNATURE


def test_over_contactless_limit_needs_no_card() -> None:
    """Book B §3.1.1.13: no Kernel 3 Combination is allowed: Try Another Interface before
    any command (Kernel 2 applies its own limits after GPO, C-2 S456.14)."""
    visa_only = [aid for aid in default_aids() if aid.kernel_id == 3]
    tx = ContactlessTransaction(TerminalConfig(), visa_only, request(100_000), CA_KEYS)
    outcome = tx.start()
    assert not isinstance(outcome, bytes)
    assert outcome.kind is OutcomeKind.TRY_ANOTHER_INTERFACE
    assert outcome.reason == Reasons.OVER_LIMIT
    assert outcome.apdu_count == 0


def test_priority_and_fallback_to_next_candidate() -> None:
    """Book B §3.3.3: priority 1 before priority 2 whatever the PPSE order; failure -> next."""
    run = run_script(
        [
            (PPSE_CMD, ppse((ELECTRON, 2, "03"), (VISA, 1, "03"))),
            (select_cmd(VISA), "6A82"),
            (select_cmd(ELECTRON), fci(ELECTRON, "9F6604")),
            (prefix("80A8"), visa_gpo(cid="00")),
        ]
    )
    assert run.outcome.kind is OutcomeKind.DECLINED
    assert run.outcome.aid == ELECTRON


def test_gpo_6985_selects_next_candidate() -> None:
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, None), (ELECTRON, 2, None))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            (prefix("80A8"), "6985"),
            (select_cmd(ELECTRON), fci(ELECTRON, "9F6604")),
            (prefix("80A8"), visa_gpo()),
        ]
    )
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST
    assert run.outcome.aid == ELECTRON
    assert run.outcome.apdu_count == 5


def test_unknown_kernel_and_aid_are_not_candidates() -> None:
    run = run_script(
        [(PPSE_CMD, ppse((VISA, 1, "02"), (bytes.fromhex("A0000000999090"), 1, None)))]
    )
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.reason == Reasons.NOT_SUPPORTED


def test_no_ppse() -> None:
    run = run_script([(PPSE_CMD, "6A82")])
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert "6A82" in run.outcome.detail


@pytest.mark.parametrize(
    ("sw", "kind", "reason"),
    [
        ("6984", OutcomeKind.TRY_ANOTHER_INTERFACE, Reasons.OTHER_INTERFACE),
        ("6986", OutcomeKind.TRY_AGAIN, Reasons.SEE_PHONE),
        ("6A80", OutcomeKind.END_APPLICATION, Reasons.READ_ERROR),
    ],
)
def test_kernel3_gpo_status_words(sw: str, kind: OutcomeKind, reason: str) -> None:
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            (prefix("80A8"), sw),
        ]
    )
    assert run.outcome.kind is kind
    assert run.outcome.reason == reason


def test_get_response_and_wrong_le_are_handled_by_the_transport() -> None:
    body = visa_gpo()[:-4]
    run = run_script(
        [
            (PPSE_CMD, "6C" + f"{len(ppse((VISA, 1, '03'))) // 2 - 2:02X}"),
            (PPSE_CMD[:-2] + f"{len(ppse((VISA, 1, '03'))) // 2 - 2:02X}", ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            (prefix("80A8"), "61" + f"{len(body) // 2:02X}"),
            ("00C00000" + f"{len(body) // 2:02X}", body + OK),
        ]
    )
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST
    assert run.outcome.apdu_count == 5


def test_malformed_gpo_response_ends_the_application() -> None:
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            (prefix("80A8"), "7710820200009F3602" + OK),
        ]
    )
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.reason == Reasons.READ_ERROR
    assert "malformed TLV" in run.outcome.detail


def test_missing_cryptogram_is_missing_data() -> None:
    gpo = hexr(t(0x77, p(0x82, "0000"), p(0x9F36, "0001"), p(0x9F27, "80"), p(0x57, TRACK2)))
    run = run_script(visa_to_gpo(gpo))
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.reason == Reasons.DATA_MISSING
    assert "icc_data_missing" in Tvr(run.outcome.tvr).names()


def test_read_record_error_ends_the_application() -> None:
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            (prefix("80A8"), visa_gpo(extra=(p(0x94, "08010100"),))),
            ("00B2010C00", "6A83"),
        ]
    )
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert "6A83" in run.outcome.detail


def test_card_removed_and_state_errors() -> None:
    tx = ContactlessTransaction(TerminalConfig(), default_aids(), request(), CA_KEYS)
    first = tx.start()
    assert isinstance(first, bytes)
    removed = tx.card_removed()
    assert removed.kind is OutcomeKind.TRY_AGAIN
    assert removed.reason == "Card removed too early - tap again"
    assert tx.card_removed() is removed
    with pytest.raises(KernelStateError):
        tx.feed(bytes.fromhex("9000"))
    with pytest.raises(KernelStateError):
        tx.start()


# --- Kernel 2 without CDA, with velocity checking (GET DATA) ----------------------------

MC_CDOL1 = "9F02069F03069F1A0295055F2A029A039C019F37049F3403"


def mc_record(*extra: Tlv, cvm_list: str = "000000000000000042031E031F03") -> str:
    return hexr(
        t(
            0x70,
            p(0x5A, "5413330089020011"),
            p(0x5F24, "301231"),
            p(0x5F25, "240101"),
            p(0x8C, MC_CDOL1),
            p(0x8E, cvm_list),
            p(0x9F0D, "0000000000"),
            p(0x9F0E, "0000000000"),
            p(0x9F0F, "0000000000"),
            *extra,
        )
    )


def mc_script(record: str, *tail: tuple[Any, str], aip: str = "1880") -> list[tuple[Any, str]]:
    return [
        (PPSE_CMD, ppse((MC, 1, "02"))),
        (select_cmd(MC), hexr(t(0x6F, p(0x84, MC), t(0xA5, p(0x50, b"MASTERCARD"))))),
        ("80A8000002830000", hexr(p(0x80, aip + "08010100"))),
        ("00B2010C00", record),
        *tail,
    ]


def genac_response(cid: str) -> str:
    return hexr(
        t(0x77, p(0x9F27, cid), p(0x9F36, "0005"), p(0x9F26, "0102030405060708"), p(0x9F10, "0110"))
    )


def test_kernel2_velocity_checking_and_new_card() -> None:
    record = mc_record(p(0x9F14, "02"), p(0x9F23, "04"))
    run = run_script(
        mc_script(
            record,
            ("80CA9F3600", "9F3602000A" + OK),
            ("80CA9F1300", "9F13020000" + OK),
            (prefix("80AE8000"), genac_response("80")),
        )
    )
    bits = set(Tvr(run.outcome.tvr).names())
    assert {
        "lower_consecutive_offline_limit_exceeded",
        "upper_consecutive_offline_limit_exceeded",
        "new_card",
        "oda_not_performed",
    } <= bits
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST


def test_kernel2_velocity_get_data_not_supported() -> None:
    record = mc_record(p(0x9F14, "02"), p(0x9F23, "04"))
    run = run_script(
        mc_script(
            record,
            ("80CA9F3600", "6A88"),
            ("80CA9F1300", "6A88"),
            (prefix("80AE"), genac_response("80")),
        )
    )
    bits = set(Tvr(run.outcome.tvr).names())
    assert "lower_consecutive_offline_limit_exceeded" in bits
    assert "new_card" not in bits


def test_kernel2_offline_terminal_approves_within_limits() -> None:
    aids = [
        AidConfig(
            aid=MC,
            kernel_id=2,
            contactless_floor_limit=5000,
            tac_online=bytes(5),
            tac_default=bytes(5),
        )
    ]
    run = run_script(mc_script(mc_record(), (prefix("80AE4000"), genac_response("40"))), aids=aids)
    assert run.outcome.kind is OutcomeKind.APPROVED
    assert run.outcome.cryptogram is CryptogramKind.TC
    # ODA not performed (no CDA data); byte 5 b2-b1 '01': relay resistance not performed
    # (C-2 v2.6+).
    assert run.outcome.tvr == bytes.fromhex("8000000001")


def test_kernel2_card_may_not_upgrade_the_cryptogram() -> None:
    run = run_script(mc_script(mc_record(), (prefix("80AE8000"), genac_response("40"))))
    assert run.outcome.kind is OutcomeKind.END_APPLICATION


def test_kernel2_missing_cdol1_is_missing_data() -> None:
    record = hexr(t(0x70, p(0x5A, "5413330089020011"), p(0x5F24, "301231")))
    run = run_script(mc_script(record))
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.reason == Reasons.DATA_MISSING


def test_kernel2_cvm_list_all_fail() -> None:
    """Book 3 §10.5: only offline PIN listed; the reader cannot do it -> CVM not successful."""
    run = run_script(
        mc_script(
            mc_record(cvm_list="00000000000000000103"), (prefix("80AE"), genac_response("80"))
        ),
        amount=7000,
    )
    assert "cardholder_verification_not_successful" in Tvr(run.outcome.tvr).names()
    assert run.outcome.cvm is None


def test_kernel2_mag_stripe_only_card() -> None:
    """C-2 v2.10 S3.30: a card without EMV mode (AIP byte 2 b8) on a kernel that does EMV
    mode only: End Application, "insert, swipe or try another card" (not Try Another
    Interface)."""
    run = run_script(mc_script(mc_record(), aip="1800")[:3])
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.message is UiMessage.INSERT_SWIPE_OR_TRY_ANOTHER_CARD
    assert run.outcome.start is None


def test_kernel2_expired_card_declined_by_iac() -> None:
    record = hexr(
        t(
            0x70,
            p(0x5A, "5413330089020011"),
            p(0x5F24, "240131"),
            p(0x8C, MC_CDOL1),
            p(0x9F0E, "0040000000"),
        )
    )
    run = run_script(mc_script(record, (prefix("80AE00"), genac_response("00"))))
    assert run.outcome.kind is OutcomeKind.DECLINED
    assert run.outcome.reason == Reasons.EXPIRED
    assert run.outcome.expiry == "2401"


# --- Robustness: no card response makes feed() raise -----------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8))
def test_arbitrary_responses_never_raise(responses: list[bytes]) -> None:
    tx = ContactlessTransaction(TerminalConfig(), default_aids(), request(), CA_KEYS)
    step = tx.start()
    for raw in responses:
        if not isinstance(step, bytes):
            break
        step = tx.feed(raw)
    if isinstance(step, bytes):
        step = tx.card_removed()
    assert step.kind in set(OutcomeKind)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=60), st.sampled_from(["select", "gpo", "record"]))
def test_garbage_at_each_step_gives_an_outcome(garbage: bytes, where: str) -> None:
    script: list[tuple[Any, str]] = [(PPSE_CMD, ppse((VISA, 1, "03")))]
    if where != "select":
        script.append((ANY, fci(VISA, "9F6604")))
    if where == "record":
        script.append((ANY, visa_gpo(cid="40", extra=(p(0x94, "08010100"),))))
    script.append((ANY, garbage.hex() + "9000"))
    card = ScriptedCard(script)
    run = transact(card)
    assert run.outcome.kind in set(OutcomeKind)


def test_kernel3_cdcvm_ctq_differs_from_its_signed_copy() -> None:
    """Book C-3 Req 5.7.1.2: 9F69 bytes 6-7 (the CTQ the card signed) must equal the CTQ
    returned in clear; otherwise 'Consumer Device CVM Performed' is not believed: decline."""
    card_auth = p(0x9F69, "01A1A2A3A40000")
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            (prefix("80A8"), visa_gpo(cid="80", ctq="0080", extra=(card_auth,))),
        ]
    )
    assert run.outcome.kind is OutcomeKind.DECLINED
    assert run.outcome.reason == Reasons.CVM_FAILED
    matching = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            (
                prefix("80A8"),
                visa_gpo(cid="80", ctq="0080", extra=(p(0x9F69, "01A1A2A3A40080"),)),
            ),
        ]
    )
    assert matching.outcome.kind is OutcomeKind.ONLINE_REQUEST
    assert matching.outcome.cvm is CvmKind.CDCVM


# --- the card's account data: one reader (emv.carddata), redundant objects (Book 3 §10.2) ---


def _visa_with_record(record: Tlv, gpo_track2: str = TRACK2) -> list[tuple[Any, str]]:
    gpo = hexr(
        t(
            0x77,
            p(0x82, "0000"),
            p(0x94, "08010100"),
            p(0x9F36, "0011"),
            p(0x9F26, "1122334455667788"),
            p(0x9F27, "80"),
            p(0x9F10, "06011203A00000"),
            p(0x57, gpo_track2),
        )
    )
    return [*visa_to_gpo(gpo), ("00B2010C00", hexr(record))]


def test_record_repeating_a_data_object_with_another_value_ends_the_application() -> None:
    other = "5413330089010434D29122010000000000000F"  # another card's track 2
    run = run_script(_visa_with_record(t(0x70, p(0x57, other), p(0x5F24, "311231"))))
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.reason == Reasons.READ_ERROR
    assert "57 again with another value" in run.outcome.detail
    assert run.outcome.card_data == {}  # nothing of it goes anywhere


def test_record_repeating_a_data_object_with_the_same_value_is_read() -> None:
    run = run_script(_visa_with_record(t(0x70, p(0x57, TRACK2), p(0x5F24, "311231"))))
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST
    assert run.outcome.masked_pan == "476173******0010"


def test_pan_in_5a_and_in_track_2_must_agree() -> None:
    run = run_script(_visa_with_record(t(0x70, p(0x5A, "5413330089010434"))))
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.reason == Reasons.READ_ERROR
    assert "differs from the Application PAN (5A)" in run.outcome.detail
    assert "icc_data_missing" not in Tvr(run.outcome.tvr).names()  # present, but contradicting


@pytest.mark.parametrize(
    ("track2", "problem"),
    [
        ("4761739001010010031122010000000000000F", "no field separator"),  # no 'D'
        ("4761739001010010D31132010000000000000F", "not a valid YYMM"),  # month 13
        ("4761739D31122010000000000000", "a PAN of 7 digits"),  # ISO/IEC 7812: 8 to 19
        ("4761739001010010D3112F", "no 3-digit service code"),
        ("476173900101001AD31122010000000F", "other than decimal digits"),
    ],
)
def test_malformed_track_2_ends_the_application(track2: str, problem: str) -> None:
    run = run_script(_visa_with_record(t(0x70, p(0x5F24, "311231")), gpo_track2=track2))
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.reason == Reasons.READ_ERROR
    assert problem in run.outcome.detail


def test_gpo_answer_giving_a_data_object_twice_with_two_values_ends_the_application() -> None:
    other = "5413330089010434D29122010000000000000F"
    run = run_script(visa_to_gpo(visa_gpo(extra=(p(0x57, other),))))
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert "the GPO response gives data object 57 again" in run.outcome.detail


def test_a_record_may_fill_a_data_object_the_gpo_answer_left_empty() -> None:
    script = _visa_with_record(t(0x70, p(0x5F24, "311231"), p(0x9F6E, "20700000")))
    gpo = t(
        0x77,
        p(0x82, "0000"),
        p(0x94, "08010100"),
        p(0x9F36, "0011"),
        p(0x9F26, "1122334455667788"),
        p(0x9F27, "80"),
        p(0x9F10, "06011203A00000"),
        p(0x57, TRACK2),
        p(0x9F6E, b""),
    )
    script[2] = (prefix("80A8"), hexr(gpo))
    run = run_script(script)
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST


def test_empty_aip_in_the_gpo_answer_is_missing_data() -> None:
    """Found by fuzzing once the kernel stopped folding IndexError into "card read error":
    an AIP (82) that is not 2 bytes is mandatory data missing (Book 3 Annex A: b2)."""
    gpo = hexr(
        t(0x77, p(0x82, b""), p(0x9F36, "0011"), p(0x9F26, "1122334455667788"),
          p(0x9F27, "40"), p(0x9F10, "06011203A00000"), p(0x57, TRACK2))
    )  # fmt: skip
    run = run_script(visa_to_gpo(gpo))
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.reason == Reasons.DATA_MISSING
    assert "82" in run.outcome.detail
