"""Kernel 2 and Kernel 3 per spec step, with scripted cards (issue 15, items 2, 4, 5, 6, 10).

Each test names the clause it checks (EMV Contactless Book C-2 v2.10, Book C-3 v2.10,
Book B v2.10) and asserts known-answer bytes the book fixes: the PDOL and CDOL1 data the
terminal sends (Terminal Capabilities 9F33, CVM Results 9F34, TVR 95, TTQ 9F66) and the
outcome the book gives.
"""

from __future__ import annotations

from typing import Any

import pytest

from emv.kernel import (
    AidConfig,
    CryptogramKind,
    CvmKind,
    OutcomeKind,
    Reasons,
    TerminalConfig,
)
from emv.kernel.config import KernelConfigError
from emv.kernel.kernel_data import UiMessage, check_kernel_data
from emv.kernel.outcome import Start
from emv.kernel.tvr import Tvr
from simulator.cards import ScriptedCard, load_card, prefix

from .test_kernel_helpers import transact
from .test_kernel_scripted import (
    MC,
    PPSE_CMD,
    VISA,
    fci,
    hexr,
    p,
    ppse,
    run_script,
    select_cmd,
    t,
    visa_gpo,
)

#: CDOL1 asking for amount, other amount, country, TVR, currency, date, type, UN, 9F33, 9F34.
CDOL1 = "9F02069F03069F1A0295055F2A029A039C019F37049F33039F3403"
#: Offsets of 95, 9F33 and 9F34 in the CDOL1 related data above.
TVR_AT, CAPS_AT, CVM_AT = slice(14, 19), slice(29, 32), slice(32, 35)


def mc_fci(pdol: str = "9F3303") -> str:
    return hexr(t(0x6F, p(0x84, MC), t(0xA5, p(0x50, b"MASTERCARD"), p(0x9F38, pdol))))


def mc_record(*extra: Any, cvm_list: str = "000000000000000042031E031F03") -> str:
    return hexr(
        t(
            0x70,
            p(0x5A, "5413330089020011"),
            p(0x5F24, "301231"),
            p(0x5F25, "240101"),
            p(0x8C, CDOL1),
            p(0x8E, cvm_list),
            p(0x9F0D, "0000000000"),
            p(0x9F0E, "0000000000"),
            p(0x9F0F, "0000000000"),
            *extra,
        )
    )


def genac(cid: str, *extra: Any) -> str:
    return hexr(
        t(
            0x77,
            p(0x9F27, cid),
            p(0x9F36, "0005"),
            p(0x9F26, "0102030405060708"),
            p(0x9F10, "0110"),
            *extra,
        )
    )


def mc_card(
    gpo_command: str,
    *,
    aip: str = "1880",
    afl: str = "10010100",
    records: tuple[tuple[str, str], ...] | None = None,
    tail: tuple[tuple[Any, str], ...] = (),
) -> ScriptedCard:
    script: list[tuple[Any, str]] = [
        (PPSE_CMD, ppse((MC, 1, "02"))),
        (select_cmd(MC), mc_fci()),
        (gpo_command, hexr(p(0x80, aip + afl))),
    ]
    script += list(records if records is not None else (("00B2011400", mc_record()),))
    script += list(tail)
    return ScriptedCard(script)


def mc_aid(**kwargs: Any) -> AidConfig:
    values: dict[str, Any] = {
        "aid": MC,
        "kernel_id": 2,
        "contactless_transaction_limit": 15000,
        "contactless_floor_limit": 0,
        "cvm_required_limit": 5000,
        "tac_online": bytes(5),
        "tac_default": bytes(5),
    }
    values.update(kwargs)
    return AidConfig(**values)


def genac_data(run: Any) -> bytes:
    command: bytes = next(c for c in run.commands if c[:2] == b"\x80\xae")
    return command[5:-1]


# --- C-2 S1.9 / S456.30: Terminal Capabilities -------------------------------------------


def test_pdol_gets_9f33_with_cvm_byte_00_and_cdol1_the_cvm_required_capability() -> None:
    """C-2 v2.10 S1.9: 9F33 = DF8117 || '00' || DF811F while the PDOL is built; S456.30:
    above the Reader CVM Required Limit byte 2 becomes DF8118. Known answer: DF8117 'E0',
    DF8118 '60' (online PIN, signature) without a PIN pad is '20'; DF811F '08'."""
    data = {0xDF8117: b"\xe0", 0xDF8118: b"\x60", 0xDF8119: b"\x08", 0xDF811F: b"\x08"}
    card = mc_card(
        "80A8000005" + "8303E00008" + "00",
        tail=((prefix("80AE"), genac("80")),),
    )
    run = transact(card, 7000, aids=[mc_aid(kernel_data=data)])
    card.assert_finished()
    sent = genac_data(run)
    assert sent[CAPS_AT] == bytes.fromhex("E02008")
    # CVM list: online PIN (not offered) -> signature: CVM Results 1E 03 00.
    assert sent[CVM_AT] == bytes.fromhex("1E0300")
    assert run.outcome.cvm is CvmKind.SIGNATURE
    assert run.outcome.card_data[0x9F33] == bytes.fromhex("E02008")


def test_with_a_pin_entry_device_the_cvm_required_capability_keeps_online_pin() -> None:
    data = {0xDF8117: b"\x00", 0xDF8118: b"\x60", 0xDF8119: b"\x08", 0xDF811F: b"\x08"}
    card = mc_card("80A8000005" + "8303000008" + "00", tail=((prefix("80AE"), genac("80")),))
    config = TerminalConfig(pin_entry_device=True)
    run = transact(card, 7000, aids=[mc_aid(kernel_data=data)], config=config)
    sent = genac_data(run)
    assert sent[CAPS_AT] == bytes.fromhex("006008")
    assert sent[CVM_AT] == bytes.fromhex("420300")  # online PIN, "unknown" until entered
    assert run.outcome.cvm is CvmKind.ONLINE_PIN
    assert "online_pin_entered" not in Tvr(run.outcome.tvr).names()


def test_at_the_cvm_required_limit_no_cvm_is_required() -> None:
    """C-2 S456.30 compares "greater than": at exactly the limit, DF8119 (No CVM)."""
    data = {0xDF8117: b"\x00", 0xDF8118: b"\x20", 0xDF8119: b"\x08", 0xDF811F: b"\x08"}
    card = mc_card("80A8000005" + "8303000008" + "00", tail=((prefix("80AE"), genac("80")),))
    run = transact(card, 5000, aids=[mc_aid(kernel_data=data)])
    sent = genac_data(run)
    assert sent[CAPS_AT] == bytes.fromhex("000808")
    assert sent[CVM_AT] == bytes.fromhex("1F0302")  # No CVM, successful
    assert run.outcome.cvm is CvmKind.NO_CVM


def test_capabilities_derived_from_the_terminals_9f33_when_not_configured() -> None:
    """Default 0028C8: DF8117 00, DF8118 20 (signature), DF8119 08 (No CVM), DF811F C8."""
    card = mc_card("80A8000005" + "830300" + "00C8" + "00", tail=((prefix("80AE"), genac("80")),))
    run = transact(card, 7000, aids=[mc_aid()])
    assert genac_data(run)[CAPS_AT] == bytes.fromhex("0020C8")


# --- C-2 S3.30-S3.32: Active AFL; relay resistance -------------------------------------


def test_active_afl_leaves_out_the_mag_stripe_record_when_both_modes_are_configured() -> None:
    """C-2 v2.10 S3.31-S3.32: AFL '08010100' first and a kernel configured for both modes
    (DF811B b8 clear): in EMV mode that record is not read."""
    card = mc_card(
        "80A8000005" + "830300" + "00C8" + "00",
        afl="08010100" + "10010100",
        tail=((prefix("80AE"), genac("80")),),
    )
    run = transact(card, 1000, aids=[mc_aid(kernel_data={0xDF811B: b"\x20"})])
    card.assert_finished()
    assert b"\x00\xb2\x01\x0c\x00" not in run.commands
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST


def test_active_afl_is_the_afl_for_an_emv_only_kernel() -> None:
    card = mc_card(
        "80A8000005" + "830300" + "00C8" + "00",
        afl="08010100" + "10010100",
        records=(
            ("00B2010C00", hexr(t(0x70, p(0x9F62, "000000000038")))),
            ("00B2011400", mc_record()),
        ),
        tail=((prefix("80AE"), genac("80")),),
    )
    transact(card, 1000, aids=[mc_aid(kernel_data={0xDF811B: b"\xa0"})])
    card.assert_finished()


def test_tvr_byte5_says_relay_resistance_not_performed() -> None:
    """C-2 v2.6+: TVR byte 5 b2-b1 '01' when the relay resistance protocol is not run."""
    card = mc_card("80A8000005" + "830300" + "00C8" + "00", tail=((prefix("80AE"), genac("80")),))
    run = transact(card, 1000, aids=[mc_aid()])
    assert genac_data(run)[TVR_AT][4] & 0x03 == 0x01
    assert "relay_resistance_not_performed" in Tvr(run.outcome.tvr).names()


# --- C-2 S456.14: transaction limits inside the kernel ----------------------------------


def test_phone_with_on_device_cvm_uses_the_on_device_limit() -> None:
    """AIP byte 1 b2 and DF811B b6: DF8125 (1000.00) applies, not DF8124 (150.00)."""
    card = mc_card(
        "80A8000005" + "830300" + "00C8" + "00",
        aip="1A80",
        tail=((prefix("80AE"), genac("80")),),
    )
    run = transact(card, 60_000, aids=[mc_aid(cdcvm_transaction_limit=100_000)])
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST
    assert run.outcome.cvm is CvmKind.CDCVM


def test_card_above_the_no_on_device_cvm_limit_is_select_next() -> None:
    """No on-device CVM: DF8124; "greater than" it: Select Next, none left: over the limit."""
    card = mc_card("80A8000005" + "830300" + "00C8" + "00")
    run = transact(card, 15_001, aids=[mc_aid(cdcvm_transaction_limit=100_000)])
    card.assert_finished()
    assert run.outcome.kind is OutcomeKind.TRY_ANOTHER_INTERFACE
    assert run.outcome.reason == Reasons.OVER_LIMIT
    assert "S456.14" in run.outcome.detail


def test_at_the_limit_is_allowed() -> None:
    card = mc_card("80A8000005" + "830300" + "00C8" + "00", tail=((prefix("80AE"), genac("80")),))
    run = transact(card, 15_000, aids=[mc_aid()])
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST


def test_on_device_cvm_off_in_the_kernel_configuration_uses_the_card_limit() -> None:
    card = mc_card("80A8000005" + "830300" + "00C8" + "00", aip="1A80")
    aid = mc_aid(cdcvm_transaction_limit=100_000, kernel_data={0xDF811B: b"\x80"})
    run = transact(card, 60_000, aids=[aid])
    assert run.outcome.kind is OutcomeKind.TRY_ANOTHER_INTERFACE


# --- C-2 S910: outcomes of GENERATE AC ---------------------------------------------------


def test_aac_on_a_contact_capable_terminal_is_try_another_interface() -> None:
    card = mc_card("80A8000005" + "8303E000C8" + "00", tail=((prefix("80AE"), genac("00")),))
    aid = mc_aid(kernel_data={0xDF8117: b"\xe0"})
    run = transact(card, 1000, aids=[aid])
    assert run.outcome.kind is OutcomeKind.TRY_ANOTHER_INTERFACE
    assert run.outcome.cryptogram is CryptogramKind.AAC


def test_aac_from_a_phone_is_declined_even_with_contact() -> None:
    """Third Party Data (9F6E) with a Device Type other than '30 30' (card): a mobile device."""
    record = mc_record(p(0x9F6E, "0280" + "0000" + "3031"))
    card = mc_card(
        "80A8000005" + "8303E000C8" + "00",
        records=(("00B2011400", record),),
        tail=((prefix("80AE"), genac("00")),),
    )
    run = transact(card, 1000, aids=[mc_aid(kernel_data={0xDF8117: b"\xe0"})])
    assert run.outcome.kind is OutcomeKind.DECLINED
    assert run.outcome.message is UiMessage.NOT_AUTHORISED


def test_aac_with_pos_cardholder_interaction_is_end_application_start_b() -> None:
    """C-2 S910: AAC with DF4B & '00030F' != 0: End Application, Start B, the phone message
    table's message (default table: '000100' -> See Phone)."""
    card = mc_card(
        "80A8000005" + "830300" + "00C8" + "00",
        tail=((prefix("80AE"), genac("00", p(0xDF4B, "000100"))),),
    )
    run = transact(card, 1000, aids=[mc_aid()])
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.start is Start.B
    assert run.outcome.message is UiMessage.SEE_PHONE
    assert run.outcome.reason == Reasons.SEE_PHONE


def test_a_configured_phone_message_table_gives_its_message() -> None:
    table = bytes.fromhex("000100000100" + "2100")  # present card again
    card = mc_card(
        "80A8000005" + "830300" + "00C8" + "00",
        tail=((prefix("80AE"), genac("00", p(0xDF4B, "000100"))),),
    )
    run = transact(card, 1000, aids=[mc_aid(kernel_data={0xDF8131: table})])
    assert run.outcome.message is UiMessage.PRESENT_CARD_AGAIN
    assert run.outcome.start is Start.B


def test_cda_requested_over_an_aac_when_the_card_says_it_signs_one() -> None:
    """9F5D byte 2 b1 "CDA supported over TC, ARQC and AAC": a GENERATE AC for an AAC asks
    for CDA (P1 b5); the card's missing SDAD then ends the application (S910)."""
    cda_record = mc_record(
        p(0x8F, "EF"), p(0x90, "00"), p(0x9F32, "03"), p(0x9F46, "00"), p(0x9F47, "03"),
        p(0x9F5D, "000100"),
    )  # fmt: skip
    aid = mc_aid(tac_denial=bytes.fromhex("FFFFFFFFFF"))
    card = mc_card(
        "80A8000005" + "830300" + "00C8" + "00",
        aip="1981",
        records=(("00B2011400", cda_record),),
        tail=((prefix("80AE10"), genac("00")),),
    )
    run = transact(card, 1000, aids=[aid])
    card.assert_finished()
    assert run.commands[-1][2] == 0x10  # GENERATE AC for an AAC, CDA requested
    assert run.outcome.kind is OutcomeKind.END_APPLICATION
    assert run.outcome.message is UiMessage.INSERT_SWIPE_OR_TRY_ANOTHER_CARD
    assert "cda_failed" in Tvr(run.outcome.tvr).names()


# --- Book B §3.1.1 and C-3 ----------------------------------------------------------------


def visa_aid(**kwargs: Any) -> AidConfig:
    values: dict[str, Any] = {
        "aid": VISA,
        "kernel_id": 3,
        "contactless_transaction_limit": 100_000,
        "contactless_floor_limit": 5_000,
        "cvm_required_limit": 5_000,
    }
    values.update(kwargs)
    return AidConfig(**values)


def test_per_aid_ttq_goes_in_the_pdol() -> None:
    """Book B v2.10 §3.1.1.1: the TTQ is per Combination (without online PIN: no PIN pad)."""
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            ("80A8000006830432004000" + "00", visa_gpo()),
        ],
        aids=[visa_aid(ttq=bytes.fromhex("36004000"))],
    )
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST


def test_status_check_asks_for_an_online_cryptogram_at_one_unit() -> None:
    """Book B v2.10 §3.1.1.3: amount 1.00 with status check: TTQ byte 2 b8."""
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            ("80A8000006830422804000" + "00", visa_gpo()),
        ],
        amount=100,
        aids=[visa_aid(status_check=True)],
    )
    assert run.outcome.kind is OutcomeKind.ONLINE_REQUEST


def test_extended_selection_only_when_supported() -> None:
    """Book B v2.10 §3.3.3.3: 9F29 is appended only for a Combination that supports it."""
    entry = t(0x61, p(0x4F, VISA), p(0x87, "01"), p(0x9F2A, "03"), p(0x9F29, "0102"))
    directory = hexr(t(0x6F, p(0x84, b"2PAY.SYS.DDF01"), t(0xA5, t(0xBF0C, entry))))
    plain = ScriptedCard([(PPSE_CMD, directory), (select_cmd(VISA), "6A82")])
    transact(plain, 1000, aids=[visa_aid()])
    plain.assert_finished()
    extended = ScriptedCard(
        [(PPSE_CMD, directory), ("00A4040009" + VISA.hex().upper() + "010200", "6A82")]
    )
    transact(extended, 1000, aids=[visa_aid(extended_selection=True)])
    extended.assert_finished()


def test_offline_only_terminal_type_cannot_send_an_arqc() -> None:
    """Terminal Type 23 (offline only, Book 4 Annex A1): TTQ byte 1 b4 set, an ARQC is
    declined (there is no online request to make)."""
    config = TerminalConfig(
        data={**TerminalConfig().data, 0x9F35: b"\x23"},
    )
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            ("80A80000068304" + "2A004000" + "00", visa_gpo()),
        ],
        config=config,
        aids=[visa_aid()],
    )
    assert run.outcome.kind is OutcomeKind.DECLINED
    assert "offline-only" in run.outcome.detail


def test_card_removed_is_try_again_with_start_b() -> None:
    """Book B v2.10 §3.5.1.2: communication lost: Try Again, Start B, "present card again"."""
    run = transact(load_card("visa", removed_after_n_commands=2), 1000, aids=[visa_aid()])
    assert run.outcome.kind is OutcomeKind.TRY_AGAIN
    assert run.outcome.start is Start.B
    assert run.outcome.message is UiMessage.PRESENT_CARD_AGAIN


def test_gpo_6986_is_see_phone_with_start_b() -> None:
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            ("80A8000006830422004000" + "00", "6986"),
        ],
        aids=[visa_aid()],
    )
    assert run.outcome.kind is OutcomeKind.TRY_AGAIN
    assert run.outcome.start is Start.B
    assert run.outcome.message is UiMessage.SEE_PHONE


def test_fdda_needs_version_01() -> None:
    """C-3 v2.10 §5.8.2: 9F69 byte 1 '02' is not fDDA version 01: ODA fails before any
    signature is checked (the CTQ then decides; here: decline)."""
    extra = (p(0x9F69, "02" + "11223344" + "0000"), p(0x5F24, "301231"), p(0x9F4B, "00"))
    gpo = visa_gpo(cid="40", ctq="0000", extra=extra).replace("820200009", "820220009", 1)
    run = run_script(
        [
            (PPSE_CMD, ppse((VISA, 1, "03"))),
            (select_cmd(VISA), fci(VISA, "9F6604")),
            ("80A8000006830422004000" + "00", gpo),
        ],
        aids=[visa_aid()],
    )
    assert run.outcome.kind is OutcomeKind.DECLINED
    assert "not fDDA version 01" in run.outcome.detail


def test_fdda_version_00_only_when_configured() -> None:
    """A card without 9F69 (legacy fDDA version '00'): ODA fails unless the AID allows it;
    then the signature is checked (here a bad one: still a failure, but a different one)."""
    extra = (p(0x5F24, "301231"), p(0x9F4B, "00"))
    gpo = visa_gpo(cid="40", ctq="0000", extra=extra).replace("820200009", "820220009", 1)
    script = [
        (PPSE_CMD, ppse((VISA, 1, "03"))),
        (select_cmd(VISA), fci(VISA, "9F6604")),
        ("80A8000006830422004000" + "00", gpo),
    ]
    strict = run_script(list(script), aids=[visa_aid()])
    assert "legacy fDDA version 00" in strict.outcome.detail
    lenient = run_script(list(script), aids=[visa_aid(fdda_version_0=True)])
    assert "legacy fDDA version 00" not in lenient.outcome.detail
    assert lenient.outcome.kind is OutcomeKind.DECLINED


# --- kernel data by tag (C-2 Annex A) ------------------------------------------------------


def test_kernel_data_is_checked_against_its_definition() -> None:
    problems = dict(
        check_kernel_data(
            2,
            {
                0xDF8118: b"\x07",  # b3-b1 RFU
                0xDF8124: b"\x00\x00\x00\x01\x50",  # 5 bytes, n12 is 6
                0xDF8123: bytes.fromhex("00000000001A"),  # not BCD
                0xDF811B: b"\x40",  # only mag-stripe mode
                0x9F66: bytes(4),  # Kernel 3's
                0xDF8131: bytes(12),  # not whole entries
            },
        )
    )
    assert "CVM Capability - CVM Required" in problems[0xDF8118]
    assert "RFU" in problems[0xDF8118]
    assert "must be 6 bytes" in problems[0xDF8124]
    assert "BCD" in problems[0xDF8123]
    assert "mag-stripe" in problems[0xDF811B]
    assert "Kernel 3" in problems[0x9F66]
    assert "entries of 8" in problems[0xDF8131]
    assert check_kernel_data(3, {0xDF8125: bytes(6)})[0][1].endswith("not Kernel 3")
    assert check_kernel_data(2, {0xDF811B: b"\x20", 0xDF8118: b"\x60"}) == []


def test_named_fields_and_their_tags_must_agree() -> None:
    with pytest.raises(KernelConfigError, match=r"DF8124.*contactless_transaction_limit"):
        mc_aid(kernel_data={0xDF8124: bytes.fromhex("000000010000")})
    same = mc_aid(kernel_data={0xDF8124: bytes.fromhex("000000015000")})
    assert same.data_object(0xDF8124) == bytes.fromhex("000000015000")
    filled = AidConfig(aid=MC, kernel_id=2, kernel_data={0xDF8125: bytes.fromhex("000000100000")})
    assert filled.cdcvm_transaction_limit == 100_000
