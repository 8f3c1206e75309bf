"""The virtual cards answer a kernel's command sequence with data that verifies.

Every card is driven by hand with the emv.apdu builders the way a kernel would (PPSE,
SELECT, GPO, every AFL record, GENERATE AC); the certificate chain it returns is checked with
emv.oda against the TEST CA keys and its cryptograms with emv.cryptogram from the profile's
TEST issuer master key, as a simulated issuer host would.
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from emv import apdu, cryptogram, oda
from emv.apdu import CryptogramType, ResponseApdu
from emv.dol import build_dol
from emv.tlv import TlvError, decode, decode_one, find, flatten
from simulator import pki
from simulator.cards import (
    ANY,
    BehaviourError,
    ProfileError,
    ScriptedCard,
    UnexpectedCommand,
    VirtualCard,
    VirtualCardRemovedError,
    list_profiles,
    load_card,
    load_profile,
    prefix,
    profile_for_pan,
    verify_cryptogram,
)
from simulator.cards.crypto import cryptogram_type_of_iad
from simulator.errors import SimulatorError
from simulator.ports import virtual_card_factory

TODAY = datetime.date(2026, 3, 1)
UN = bytes.fromhex("1A2B3C4D")
# TTQ: qVSDC, online PIN and signature supported; consumer device CVM supported (Book C-3 A.2).
TTQ = bytes.fromhex("26004000")
TTQ_ONLINE_REQUIRED = bytes.fromhex("26804000")
TTQ_CVM_REQUIRED = bytes.fromhex("26404000")
TTQ_OFFLINE_ONLY = bytes.fromhex("2E004000")
CA_KEYS = pki.load_test_ca_store()


def terminal_data(amount: int, currency: int = 978, ttq: bytes = TTQ) -> dict[int, bytes]:
    return {
        0x9F66: ttq,
        0x9F02: bytes.fromhex(f"{amount:012d}"),
        0x9F03: bytes(6),
        0x9F1A: bytes.fromhex("0276"),
        0x95: bytes(5),
        0x5F2A: bytes.fromhex(f"{currency:04d}"),
        0x9A: bytes.fromhex(TODAY.strftime("%y%m%d")),
        0x9C: b"\x00",
        0x9F37: UN,
        0x9F35: b"\x22",
        0x9F45: bytes(2),
        0x9F34: bytes.fromhex("1F0302"),
    }


def send(card: VirtualCard | ScriptedCard, command: apdu.CommandApdu) -> ResponseApdu:
    return ResponseApdu.parse(card.transceive(command.encode()))


@dataclass
class Run:
    """What a kernel collects from one card in one transaction."""

    card: VirtualCard
    terminal: dict[int, bytes]
    aid: bytes = b""
    fci: dict[int, bytes] = field(default_factory=dict)
    pdol_data: bytes = b""
    gpo: ResponseApdu | None = None
    gpo_data: dict[int, bytes] = field(default_factory=dict)
    records: dict[tuple[int, int], bytes] = field(default_factory=dict)
    card_data: dict[int, bytes] = field(default_factory=dict)
    cdol1_data: bytes = b""
    genac: ResponseApdu | None = None
    genac_data: dict[int, bytes] = field(default_factory=dict)
    apdus: int = 0

    @property
    def static_data(self) -> bytes:
        result = oda.build_static_data_from_afl(self.gpo_data[0x94], self.records, self.card_data)
        assert result.data is not None, result
        return result.data

    @property
    def rid(self) -> bytes:
        return self.aid[:5]

    def verify_cda(self) -> oda.OdaResult:
        """The terminal's CDA check (EMV Book 2 §6.6.2) of this run's GENERATE AC answer."""
        assert self.genac is not None
        return oda.perform_cda(
            self.card_data,
            self.static_data,
            CA_KEYS,
            self.rid,
            TODAY,
            genac_response=self.genac.data,
            unpredictable_number=UN,
            pdol_data=self.pdol_data,
            cdol1_data=self.cdol1_data,
        )

    @property
    def cryptogram_type(self) -> CryptogramType:
        source = self.genac_data if self.genac is not None else self.gpo_data
        if 0x9F27 in source:
            return CryptogramType(source[0x9F27][0] & 0xC0)
        found = cryptogram_type_of_iad(source[0x9F10])
        assert found is not None
        return found


def run(
    card: VirtualCard,
    amount: int = 1000,
    *,
    currency: int = 978,
    ttq: bytes = TTQ,
    request: CryptogramType = CryptogramType.TC,
    cda: bool = True,
) -> Run:
    """PPSE, final selection by priority, GPO, all AFL records, and GENERATE AC if M/Chip."""
    result = Run(card, terminal_data(amount, currency, ttq))
    card.power_on()
    ppse = send(card, apdu.select_ppse())
    assert ppse.ok, ppse.describe()
    entries = [e for e in decode_one(ppse.data, 0x6F).find(0xA5, 0xBF0C).children]  # type: ignore[union-attr]
    entries.sort(key=lambda e: find(e.children, 0x87).value[0])  # type: ignore[union-attr]
    result.aid = find(entries[0].children, 0x4F).value  # type: ignore[union-attr]
    select = send(card, apdu.select(result.aid))
    assert select.ok, select.describe()
    result.fci = flatten(decode(select.data))
    result.pdol_data = build_dol(result.fci.get(0x9F38, b""), result.terminal)
    result.gpo = send(card, apdu.get_processing_options(result.pdol_data))
    assert result.gpo.ok, result.gpo.describe()
    template = decode_one(result.gpo.data)
    if template.tag == 0x80:
        result.gpo_data = {0x82: template.value[:2], 0x94: template.value[2:]}
    else:
        result.gpo_data = flatten([template])
    afl = result.gpo_data[0x94]
    for i in range(0, len(afl), 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        for number in range(first, last + 1):
            response = send(card, apdu.read_record(sfi, number))
            assert response.ok, response.describe()
            result.records[(sfi, number)] = response.data
            result.card_data.update(
                {
                    k: v
                    for k, v in flatten(decode(response.data)).items()
                    if k not in result.card_data
                }
            )
    result.card_data.update(result.gpo_data)
    if 0x8C in result.card_data:
        result.cdol1_data = build_dol(result.card_data[0x8C], result.terminal)
        result.genac = send(card, apdu.generate_ac(request, result.cdol1_data, cda_requested=cda))
        assert result.genac.ok, result.genac.describe()
        template = decode_one(result.genac.data)
        if template.tag == 0x80:
            v = template.value
            result.genac_data = {0x9F27: v[:1], 0x9F36: v[1:3], 0x9F26: v[3:11], 0x9F10: v[11:]}
        else:
            result.genac_data = flatten([template])
    result.apdus = card.commands
    return result


def host_values(result: Run, ac: bytes | None = None) -> dict[int, bytes]:
    """The ICC data an issuer host receives in the authorisation request."""
    source = result.genac_data if result.genac is not None else result.gpo_data
    values = dict(result.terminal)
    values[0x82] = result.gpo_data[0x82]
    values[0x9F36] = source[0x9F36]
    values[0x9F10] = source[0x9F10]
    values[0x9F26] = ac if ac is not None else source[0x9F26]
    return values


# ------------------------------------------------------------------------------------------
# The whole sequence on every profile


def test_the_required_profiles_ship() -> None:
    assert {"visa", "mastercard"} <= set(list_profiles())
    assert len(list_profiles()) >= 4


@pytest.mark.parametrize("name", list_profiles())
def test_every_profile_answers_a_whole_transaction(name: str) -> None:
    card = load_card(name)
    result = run(card, amount=1000)
    profile = card.profile
    assert result.card_data[0x5A].hex().upper().rstrip("F") == profile.pan
    assert result.card_data[0x5F24] == bytes.fromhex(profile.expiry.strftime("%y%m%d"))
    assert (
        result.fci[0x50] == profile.applications[0].label.encode() or len(profile.applications) > 1
    )
    # Every record the AFL names was readable and is a '70' template.
    assert all(record[0] == 0x70 for record in result.records.values())
    assert result.apdus == 3 + len(result.records) + (1 if result.genac else 0)


@pytest.mark.parametrize("name", ["visa", "visa_debit", "mastercard", "mastercard_phone"])
def test_certificate_chain_and_dynamic_signature_verify(name: str) -> None:
    card = load_card(name)
    result = run(card, amount=1000)
    if card.profile.oda.method.value == "fdda":
        assert result.cryptogram_type is CryptogramType.TC
        outcome = oda.perform_fdda(
            result.card_data,
            result.static_data,
            CA_KEYS,
            result.rid,
            TODAY,
            unpredictable_number=UN,
            amount_authorised=result.terminal[0x9F02],
            currency_code=result.terminal[0x5F2A],
        )
    else:
        outcome = result.verify_cda()
    assert outcome.ok, outcome


def test_visa_internal_authenticate_dda_verifies() -> None:
    card = load_card("visa")
    result = run(card)
    ddol_data = build_dol(result.card_data.get(0x9F49, b"\x9f\x37\x04"), result.terminal)
    response = send(card, apdu.internal_authenticate(ddol_data))
    assert response.ok
    sdad = decode_one(response.data, 0x77).find(0x9F4B)
    assert sdad is not None
    outcome = oda.perform_dda(
        result.card_data, result.static_data, CA_KEYS, result.rid, TODAY, ddol_data, sdad=sdad.value
    )
    assert outcome.ok, outcome


def _independent_visa_arqc_check(result: Run, imk: bytes, pan: str, psn: int) -> bool:
    """Visa CVN 18 straight from emv.cryptogram, without the simulator's helpers."""
    mk = cryptogram.derive_icc_master_key_option_a(imk, pan, psn)
    atc = int.from_bytes(result.gpo_data[0x9F36], "big")
    data = cryptogram.build_ac_data(
        amount_authorised=int(result.terminal[0x9F02].hex()),
        amount_other=0,
        terminal_country_code=276,
        tvr=bytes(5),
        transaction_currency_code=978,
        transaction_date=TODAY,
        transaction_type=0,
        unpredictable_number=UN,
        aip=result.gpo_data[0x82],
        atc=atc,
        iad=result.gpo_data[0x9F10],
    )
    key = cryptogram.derive_common_session_key(mk, atc)
    return cryptogram.verify_ac(key, data, result.gpo_data[0x9F26])


def test_visa_arqc_verifies_from_the_issuer_master_key() -> None:
    card = load_card("visa")
    result = run(card, amount=9000)  # above the card's 50.00 offline limit
    assert result.cryptogram_type is CryptogramType.ARQC
    assert 0x9F4B not in result.gpo_data  # fDDA only signs offline approvals
    profile = card.profile
    assert profile.pan_sequence_number is not None
    imk = profile.issuer_master_key
    assert _independent_visa_arqc_check(result, imk, profile.pan, profile.pan_sequence_number)
    assert verify_cryptogram(profile, host_values(result))
    assert not verify_cryptogram(
        profile, {**host_values(result), 0x9F02: bytes.fromhex("000000009001")}
    )


def test_mastercard_arqc_inside_cda_verifies_from_the_issuer_master_key() -> None:
    card = load_card("mastercard")
    result = run(card, amount=9000, request=CryptogramType.TC)
    assert result.cryptogram_type is CryptogramType.ARQC
    assert 0x9F26 not in result.genac_data  # with CDA the AC travels inside the SDAD
    outcome = result.verify_cda()
    assert outcome.ok
    assert outcome.application_cryptogram is not None
    assert outcome.cryptogram_information_data == 0x80
    values = host_values(result, ac=outcome.application_cryptogram)
    # Independent check: Mastercard session key (ATC || 0000 || UN), Table 26 data + CVR.
    profile = card.profile
    mk = cryptogram.derive_icc_master_key_option_a(
        profile.issuer_master_key, profile.pan, profile.pan_sequence_number
    )
    atc = int.from_bytes(values[0x9F36], "big")
    key = cryptogram.derive_mastercard_session_key(mk, atc, UN)
    data = cryptogram.build_ac_data(
        amount_authorised=9000,
        amount_other=0,
        terminal_country_code=276,
        tvr=bytes(5),
        transaction_currency_code=978,
        transaction_date=TODAY,
        transaction_type=0,
        unpredictable_number=UN,
        aip=values[0x82],
        atc=atc,
        iad=values[0x9F10][2:8],
    )
    assert cryptogram.verify_ac(key, data, outcome.application_cryptogram)
    assert verify_cryptogram(profile, values)
    assert profile_for_pan(profile.pan) == profile


def test_mastercard_without_cda_returns_the_clear_cryptogram() -> None:
    card = load_card("mastercard")
    result = run(card, amount=9000, cda=False)
    assert set(result.genac_data) >= {0x9F27, 0x9F36, 0x9F26, 0x9F10}
    assert 0x9F4B not in result.genac_data
    assert verify_cryptogram(card.profile, host_values(result))


def test_maestro_answers_in_format_1_and_goes_online() -> None:
    card = load_card("maestro")
    result = run(card, amount=100)
    assert result.gpo is not None
    assert result.gpo.data[0] == 0x80
    assert result.genac is not None
    assert result.genac.data[0] == 0x80
    assert result.cryptogram_type is CryptogramType.ARQC
    assert verify_cryptogram(card.profile, host_values(result))
    assert result.card_data[0x5A].hex().upper() == card.profile.pan + "F"


def test_visa_debit_lists_two_applications_and_supports_next_occurrence() -> None:
    card = load_card("visa_debit")
    card.power_on()
    ppse = send(card, apdu.select_ppse())
    entries = decode_one(ppse.data, 0x6F).find(0xA5, 0xBF0C)
    assert entries is not None
    aids = [find(e.children, 0x4F).value.hex().upper() for e in entries.children]  # type: ignore[union-attr]
    kernels = {find(e.children, 0x9F2A).value for e in entries.children}  # type: ignore[union-attr]
    assert aids == ["A0000000032010", "A0000000031010"]
    assert kernels == {b"\x03"}
    first = send(card, apdu.select(bytes.fromhex("A000000003")))
    second = send(card, apdu.select(bytes.fromhex("A000000003"), next_occurrence=True))
    third = send(card, apdu.select(bytes.fromhex("A000000003"), next_occurrence=True))
    assert first.ok
    assert second.ok
    assert third.sw == 0x6A82
    assert find(decode(first.data), 0x6F, 0x84).value.hex().upper() == "A0000000032010"  # type: ignore[union-attr]
    assert find(decode(second.data), 0x6F, 0x84).value.hex().upper() == "A0000000031010"  # type: ignore[union-attr]


def test_visa_debit_gives_the_cryptogram_type_only_in_the_iad() -> None:
    card = load_card("visa_debit")
    offline = run(card, amount=1000)
    assert 0x9F27 not in offline.gpo_data
    assert offline.cryptogram_type is CryptogramType.TC
    assert 0x9F69 not in offline.gpo_data  # fDDA version 00
    online = run(card, amount=2500)
    assert online.cryptogram_type is CryptogramType.ARQC


# ------------------------------------------------------------------------------------------
# Card risk management and behaviours


def test_atc_increments_once_per_transaction_and_get_data_reads_it() -> None:
    card = load_card("visa")
    first = run(card)
    second = run(card)
    atc1 = int.from_bytes(first.gpo_data[0x9F36], "big")
    atc2 = int.from_bytes(second.gpo_data[0x9F36], "big")
    assert atc2 == atc1 + 1 == card.profile.atc + 2
    response = send(card, apdu.get_data(0x9F36))
    assert response.data == bytes.fromhex("9F3602") + atc2.to_bytes(2, "big")
    pin_tries = send(card, apdu.get_data(0x9F17))
    assert pin_tries.ok
    assert pin_tries.data == bytes.fromhex("9F170103")
    assert send(card, apdu.get_data(0x9F4E)).sw == 0x6A88


def test_visa_goes_online_when_the_reader_requires_it() -> None:
    result = run(load_card("visa"), amount=100, ttq=TTQ_ONLINE_REQUIRED)
    assert result.cryptogram_type is CryptogramType.ARQC


def test_visa_goes_online_once_cumulative_offline_spending_is_used() -> None:
    card = load_card("visa")
    types = [run(card, amount=4000).cryptogram_type for _ in range(4)]
    assert types == [CryptogramType.TC] * 3 + [CryptogramType.ARQC]


def test_visa_goes_online_for_a_foreign_currency() -> None:
    assert run(load_card("visa"), currency=840).cryptogram_type is CryptogramType.ARQC


def test_visa_declines_when_an_offline_only_reader_would_need_online() -> None:
    result = run(load_card("visa"), amount=9000, ttq=TTQ_OFFLINE_ONLY)
    assert result.cryptogram_type is CryptogramType.AAC


def test_visa_asks_for_online_pin_when_the_reader_requires_a_cvm() -> None:
    result = run(load_card("visa"), amount=9000, ttq=TTQ_CVM_REQUIRED)
    assert result.gpo_data[0x9F6C][0] & 0x80
    offline = run(load_card("visa"), amount=1000, ttq=TTQ_CVM_REQUIRED)
    assert offline.gpo_data[0x9F6C][0] & 0x40  # signature for an offline approval


@pytest.mark.parametrize("name", ["visa", "mastercard"])
def test_approve_offline_answers_tc_above_the_card_limits(name: str) -> None:
    assert run(load_card(name), amount=9000).cryptogram_type is CryptogramType.ARQC
    result = run(load_card(name, approve_offline=True), amount=9000)
    assert result.cryptogram_type is CryptogramType.TC


@pytest.mark.parametrize("name", ["visa", "mastercard"])
def test_request_online_answers_arqc_for_small_amounts(name: str) -> None:
    assert run(load_card(name), amount=100).cryptogram_type is CryptogramType.TC
    result = run(load_card(name, request_online=True), amount=100)
    assert result.cryptogram_type is CryptogramType.ARQC


@pytest.mark.parametrize("name", list_profiles())
def test_decline_answers_aac(name: str) -> None:
    card = load_card(name, decline=True)
    result = run(card, amount=100)
    assert result.cryptogram_type is CryptogramType.AAC
    assert verify_cryptogram(card.profile, host_values(result))
    assert 0x9F4B not in result.genac_data
    assert 0x9F4B not in result.gpo_data


def test_mastercard_never_answers_more_than_the_terminal_asked() -> None:
    aac = run(load_card("mastercard", approve_offline=True), request=CryptogramType.AAC)
    arqc = run(load_card("mastercard", approve_offline=True), request=CryptogramType.ARQC)
    assert aac.cryptogram_type is CryptogramType.AAC
    assert arqc.cryptogram_type is CryptogramType.ARQC


def test_second_generate_ac_follows_the_issuer_response() -> None:
    for arc, expected in ((b"00", CryptogramType.TC), (b"05", CryptogramType.AAC)):
        card = load_card("mastercard")
        result = run(card, amount=9000, cda=False)
        assert result.cryptogram_type is CryptogramType.ARQC
        cdol2 = build_dol(result.card_data[0x8D], {**result.terminal, 0x8A: arc})
        response = send(card, apdu.generate_ac(CryptogramType.TC, cdol2))
        assert response.ok
        assert flatten(decode(response.data))[0x9F27][0] & 0xC0 == expected
        third = send(card, apdu.generate_ac(CryptogramType.TC, cdol2))
        assert third.sw == 0x6985


def test_cdcvm_performed_is_signalled_by_each_scheme() -> None:
    visa = run(load_card("visa", cdcvm_performed=True), ttq=TTQ_CVM_REQUIRED)
    assert visa.gpo_data[0x9F6C][1] & 0x80
    assert not visa.gpo_data[0x9F6C][0] & 0xC0
    plain = run(load_card("visa"))
    assert not plain.gpo_data[0x9F6C][1] & 0x80
    mc = run(load_card("mastercard", cdcvm_performed=True))
    assert mc.gpo_data[0x82][0] & 0x02
    assert not run(load_card("mastercard")).gpo_data[0x82][0] & 0x02
    phone = run(load_card("mastercard_phone"))
    assert phone.gpo_data[0x82][0] & 0x02
    # The AIP is signed (9F4A = '82'): CDA still verifies with the changed AIP.
    outcome = mc.verify_cda()
    assert outcome.ok, outcome


def test_expired_card_carries_a_past_expiry_and_goes_online() -> None:
    card = load_card("visa", expired=True)
    result = run(card, amount=100)
    assert result.card_data[0x5F24] == bytes.fromhex("211231")
    assert "D2112" in result.gpo_data[0x57].hex().upper()
    assert result.cryptogram_type is CryptogramType.ARQC
    # Still correctly signed: the ICC certificate covers the new expiry date.
    outcome = oda.perform_dda(
        result.card_data,
        result.static_data,
        CA_KEYS,
        result.rid,
        TODAY,
        UN,
        sdad=decode_one(send(card, apdu.internal_authenticate(UN)).data).find(0x9F4B).value,  # type: ignore[union-attr]
    )
    assert outcome.ok, outcome


def test_blocked_application_at_select_answers_6283() -> None:
    card = load_card("mastercard", blocked_application=True)
    card.power_on()
    assert send(card, apdu.select_ppse()).ok
    response = send(card, apdu.select(bytes.fromhex("A0000000041010")))
    assert response.sw == 0x6283
    assert decode_one(response.data, 0x6F)  # the FCI still comes back
    assert send(card, apdu.get_processing_options(b"")).sw == 0x6985


def test_blocked_application_at_gpo_answers_6985() -> None:
    card = load_card("visa", blocked_application=True, blocked_at="gpo")
    card.power_on()
    assert send(card, apdu.select(bytes.fromhex("A0000000031010"))).ok
    pdol_data = build_dol(card.profile.pdol, terminal_data(100))
    assert send(card, apdu.get_processing_options(pdol_data)).sw == 0x6985


def _fdda(result: Run) -> oda.OdaResult:
    return oda.perform_fdda(
        result.card_data,
        result.static_data,
        CA_KEYS,
        result.rid,
        TODAY,
        unpredictable_number=UN,
        amount_authorised=result.terminal[0x9F02],
        currency_code=result.terminal[0x5F2A],
    )


@pytest.mark.parametrize(
    ("corruption", "failures"),
    [
        ("issuer_certificate", {"issuer_cert"}),
        ("icc_certificate", {"icc_cert"}),
        ("static_data", {"icc_cert_hash"}),
        ("sdad", {"sdad"}),
    ],
)
def test_corrupted_signatures_fail_oda(corruption: str, failures: set[str]) -> None:
    good = _fdda(run(load_card("visa")))
    assert good.ok
    bad = _fdda(run(load_card("visa", corrupt=corruption)))
    assert not bad.ok
    assert bad.failure is not None
    assert any(bad.failure.value.startswith(prefix) for prefix in failures), bad


def test_corrupted_sdad_fails_cda() -> None:
    result = run(load_card("mastercard", wrong_data="sdad"))
    outcome = result.verify_cda()
    assert not outcome.ok


@pytest.mark.parametrize("name", ["visa", "maestro"])
def test_corrupted_cryptogram_fails_at_the_host_only(name: str) -> None:
    card = load_card(name, corrupt="cryptogram", request_online=True)
    result = run(card)
    assert result.cryptogram_type is CryptogramType.ARQC
    assert not verify_cryptogram(card.profile, host_values(result))


def test_record_with_malformed_tlv() -> None:
    card = load_card("visa", corrupt="record_tlv")
    card.power_on()
    send(card, apdu.select(bytes.fromhex("A0000000031010")))
    send(card, apdu.get_processing_options(build_dol(card.profile.pdol, terminal_data(100))))
    first = card.profile.afl[0]
    response = send(card, apdu.read_record(first.sfi, first.first))
    assert response.ok
    with pytest.raises(TlvError):
        decode(response.data)


def test_missing_mandatory_data_and_unexpected_status() -> None:
    result = run(load_card("mastercard", corrupt="missing_data"))
    assert 0x5F24 not in result.card_data
    card = load_card("mastercard", corrupt="unexpected_status")
    card.power_on()
    send(card, apdu.select(bytes.fromhex("A0000000041010")))
    assert send(card, apdu.get_processing_options(b"")).sw == 0x6F00


def test_removed_after_n_commands() -> None:
    card = load_card("visa", removed_after_n_commands=3)
    card.power_on()
    send(card, apdu.select_ppse())
    send(card, apdu.select(bytes.fromhex("A0000000031010")))
    send(card, apdu.get_processing_options(build_dol(card.profile.pdol, terminal_data(100))))
    with pytest.raises(VirtualCardRemovedError) as info:
        send(card, apdu.read_record(1, 1))
    assert isinstance(info.value, SimulatorError)
    assert card.removed
    with pytest.raises(VirtualCardRemovedError):
        card.power_on()
    card.insert()  # presented again: completes
    assert run(card).cryptogram_type is CryptogramType.TC


def _see_phone_answer(result: Run) -> bool:
    """The M/Chip phone's first answer: an AAC carrying DF4B '000100' (C-2 Annex A)."""
    pcii = result.genac_data.get(0xDF4B)
    return result.cryptogram_type is CryptogramType.AAC and pcii == bytes.fromhex("000100")


def test_see_phone_mchip_answers_aac_with_pcii_until_tapped_again() -> None:
    card = load_card("mastercard", see_phone=True)
    first = run(card, request=CryptogramType.ARQC)
    assert _see_phone_answer(first)
    assert decode_one(first.genac.data).tag == 0x77  # type: ignore[union-attr]
    assert first.gpo_data[0x82][0] & 0x02  # a phone: on-device verification supported
    assert card.asked_to_see_phone
    assert not card.verified_on_device
    # Asked again without leaving the field: the phone still wants its own verification.
    assert _see_phone_answer(run(card, request=CryptogramType.ARQC))
    card.remove()
    card.insert()  # taken away, unlocked, tapped again
    assert card.verified_on_device
    second = run(card, request=CryptogramType.ARQC)
    assert second.cryptogram_type is CryptogramType.ARQC
    assert 0xDF4B not in second.genac_data
    assert second.gpo_data[0x82] == first.gpo_data[0x82]  # the signed AIP does not change
    outcome = second.verify_cda()
    assert outcome.ok, outcome


def test_see_phone_answers_in_format_2_even_on_a_format_1_card() -> None:
    card = load_card("maestro", see_phone=True)
    first = run(card, request=CryptogramType.ARQC)
    assert decode_one(first.genac.data).tag == 0x77  # type: ignore[union-attr]
    assert _see_phone_answer(first)
    card.remove()
    card.insert()
    second = run(card, request=CryptogramType.ARQC)
    assert decode_one(second.genac.data).tag == 0x80  # type: ignore[union-attr]
    assert second.cryptogram_type is CryptogramType.ARQC


def test_see_phone_qvsdc_answers_gpo_6986_then_is_a_verified_phone() -> None:
    card = load_card("visa", see_phone=True)
    card.power_on()
    assert send(card, apdu.select_ppse()).ok
    assert send(card, apdu.select(bytes.fromhex("A0000000031010"))).ok
    pdol = build_dol(card.profile.pdol, terminal_data(1000, ttq=TTQ_CVM_REQUIRED))
    atc = card.atc
    assert send(card, apdu.get_processing_options(pdol)).sw == 0x6986
    assert card.atc == atc  # nothing processed
    assert card.asked_to_see_phone
    card.remove()
    card.insert()
    second = run(card, ttq=TTQ_CVM_REQUIRED)
    assert second.gpo_data[0x9F6C][1] & 0x80  # CTQ byte 2 b8: consumer device CVM performed
    assert not second.gpo_data[0x9F6C][0] & 0xC0  # so neither online PIN nor signature
    assert verify_cryptogram(card.profile, host_values(second))


def test_see_phone_by_url_and_its_checks() -> None:
    port = virtual_card_factory("sim", "mastercard_phone", {"see_phone": ""})
    card = port.card  # type: ignore[attr-defined]
    assert card.behaviour.see_phone
    assert card.behaviour.cdcvm_performed
    card.asked_to_see_phone = True
    port.remove()  # type: ignore[attr-defined]
    assert card.removed
    port.insert()  # type: ignore[attr-defined]
    assert card.verified_on_device
    assert not card.removed
    with pytest.raises(BehaviourError, match="see_phone must be true or false"):
        load_card("visa", see_phone="sometimes")


def test_slow_card_calls_the_injected_sleep_per_command() -> None:
    delays: list[float] = []
    card = load_card("mastercard", slow=0.25, sleep=delays.append)
    result = run(card)
    assert delays == [0.25] * result.apdus
    default = load_card("mastercard", slow=0.5)
    run(default)
    assert default.simulated_delay == pytest.approx(0.5 * default.commands)


def test_hang_on_card_is_silent_on_that_command_until_it_leaves_the_field() -> None:
    card = load_card("visa", hang_on="GPO")  # names are case-insensitive
    card.power_on()
    assert send(card, apdu.select_ppse()).sw == 0x9000  # other commands are answered
    raised: list[BaseException] = []

    def gpo() -> None:
        try:
            card.transceive(bytes.fromhex("80A8000002830000"))
        except VirtualCardRemovedError as exc:
            raised.append(exc)

    worker = threading.Thread(target=gpo, daemon=True)
    worker.start()
    worker.join(0.2)
    assert worker.is_alive()
    assert not raised
    card.remove()
    worker.join(2)
    assert raised
    with pytest.raises(BehaviourError, match="hang_on must name one of select, gpo"):
        load_card("visa", hang_on="verify")


def test_transport_fault_behaviours_answer_61xx_or_6cxx_forever() -> None:
    card = load_card("visa", more_data_forever=True)
    card.power_on()
    assert card.transceive(apdu.select_ppse().encode()) == bytes.fromhex("6110")
    for _ in range(3):
        assert card.transceive(bytes.fromhex("00C0000010")) == bytes(16) + bytes.fromhex("6110")
    card = load_card("visa", wrong_length_forever=True)
    card.power_on()
    assert card.transceive(apdu.select_ppse().encode()) == bytes.fromhex("6C01")
    assert card.transceive(apdu.select_ppse().encode()[:-1] + b"\x01") == bytes.fromhex("6C02")
    with pytest.raises(BehaviourError, match="choose one of more_data_forever"):
        load_card("visa", more_data_forever=True, wrong_length_forever=True)


# ------------------------------------------------------------------------------------------
# Status words for misuse


def test_status_words_for_misuse() -> None:
    card = load_card("visa")
    card.power_on()
    assert card.transceive(bytes.fromhex("00A4")) == bytes.fromhex("6700")
    assert card.transceive(bytes.fromhex("80500000")) == bytes.fromhex("6D00")
    assert card.transceive(bytes.fromhex("00A80000028300")) == bytes.fromhex("6E00")
    assert send(card, apdu.get_processing_options(b"")).sw == 0x6985  # nothing selected
    assert send(card, apdu.select(bytes.fromhex("A0000000999999"))).sw == 0x6A82
    assert send(card, apdu.select(bytes.fromhex("A0000000031010"))).ok
    assert send(card, apdu.get_processing_options(b"\x00\x01")).sw == 0x6700
    assert send(card, apdu.generate_ac(CryptogramType.TC, b"")).sw == 0x6985
    assert send(card, apdu.read_record(9, 1)).sw == 0x6A82
    assert send(card, apdu.read_record(1, 9)).sw == 0x6A83
    assert card.atr == bytes.fromhex("3B8980015049504F532053494D2A")
    assert len(card.uid) == 7


def test_behaviour_and_profile_errors_are_specific() -> None:
    with pytest.raises(BehaviourError, match="approve_offline"):
        load_card("visa", approve_offline=True, decline=True)
    with pytest.raises(BehaviourError, match="unknown behaviour"):
        load_card("visa", fly=True)
    with pytest.raises(BehaviourError):
        load_card("visa", corrupt="everything")
    with pytest.raises(ProfileError, match="no such profile"):
        load_card("amex_centurion")


def test_profile_field_errors_name_the_field(tmp_path: Path) -> None:
    raw = Path(load_profile("visa").source).read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(raw.replace('"pan": "4761739001010010"', '"pan": "47617390X1010010"'))
    with pytest.raises(ProfileError, match="pan"):
        load_card(bad)
    bad.write_text(raw.replace('"sfi": 3, "record": 1', '"sfi": 4, "record": 1'))
    with pytest.raises(ProfileError, match=r"afl.*SFI 3 record 1"):
        load_card(bad)


def test_masked_pan_shows_first_six_and_last_four() -> None:
    profile = load_profile("visa")
    assert profile.masked_pan == "476173******0010"
    assert profile.pan not in repr(profile.masked_pan)


# ------------------------------------------------------------------------------------------
# ScriptedCard


def test_scripted_card_plays_its_script_and_checks_completion() -> None:
    card = ScriptedCard(
        [
            ("00A404000E325041592E5359532E444446303100", "6A82"),
            (prefix("00A40400"), "9000"),
            (ANY, "6D00"),
        ]
    )
    assert send(card, apdu.select_ppse()).sw == 0x6A82
    assert send(card, apdu.select(bytes.fromhex("A0000000031010"))).ok
    with pytest.raises(AssertionError, match="1 scripted exchange"):
        card.assert_finished()
    assert card.transceive(b"\x80\xca\x9f\x36\x00") == b"\x6d\x00"
    card.assert_finished()


def test_scripted_card_fails_on_an_unexpected_command() -> None:
    card = ScriptedCard.from_transcript(
        [{"command": "00A404000E325041592E5359532E444446303100", "response": "9000"}]
    )
    with pytest.raises(UnexpectedCommand) as info:
        card.transceive(apdu.select(bytes.fromhex("A0000000041010")).encode())
    assert "00A404000E325041592E5359532E444446303100" in str(info.value)
    assert "00A4040007A000000004101000" in str(info.value)
    # Even if a caller swallows it, the test still fails at the end.
    with pytest.raises(UnexpectedCommand):
        card.assert_finished()


def test_scripted_card_fails_on_a_command_after_the_script() -> None:
    card = ScriptedCard([("80CA9F3600", "9F360200019000")])
    card.transceive(bytes.fromhex("80CA9F3600"))
    with pytest.raises(UnexpectedCommand, match="script finished"):
        card.transceive(bytes.fromhex("80CA9F3600"))
