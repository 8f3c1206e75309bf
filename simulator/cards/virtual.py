"""A contactless EMV card in software, personalised from a profile, with real TEST keys.

:class:`VirtualCard` answers C-APDUs the way a Visa qVSDC (EMV Book C-3) or Mastercard
M/Chip (EMV Book C-2) card does; see the package docstring (:mod:`simulator.cards`) for the
command set and the public API. Certificates are made by :mod:`simulator.pki` from the
profile's TEST key names over the card's real static data, so a kernel's ODA verifies them;
cryptograms come from :mod:`simulator.cards.crypto`.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

from emv.apdu import PPSE_NAME, CryptogramType
from emv.dol import dol_length, split_dol_data
from emv.oda import fdda_terminal_dynamic_data
from emv.tlv import Tlv, TlvError, decode_one, encode_length, encode_one, encode_tag
from simulator import pki

from .behaviour import Behaviour, Corruption, Decision
from .crypto import CryptogramDataError, bcd_to_int, build_iad, compute_cryptogram, icc_master_key
from .errors import ProfileError, VirtualCardRemovedError
from .profile import Application, CardKernel, CardOda, CardProfile

# Status words (EMV Book 3 §6.3.5, ISO/IEC 7816-4 §5.1.3).
SW_OK: Final = b"\x90\x00"
SW_BLOCKED: Final = b"\x62\x83"
SW_WRONG_LENGTH: Final = b"\x67\x00"
SW_CONDITIONS: Final = b"\x69\x85"
SW_WRONG_DATA: Final = b"\x6a\x80"
SW_FILE_NOT_FOUND: Final = b"\x6a\x82"
SW_RECORD_NOT_FOUND: Final = b"\x6a\x83"
SW_WRONG_P1P2: Final = b"\x6a\x86"
#: A qVSDC phone's "see phone" answer to GPO (EMV Contactless Book C-3 v2.10: the cardholder
#: must look at the device, then tap again).
SW_SEE_PHONE: Final = b"\x69\x86"
SW_DATA_NOT_FOUND: Final = b"\x6a\x88"
SW_INS_NOT_SUPPORTED: Final = b"\x6d\x00"
SW_CLA_NOT_SUPPORTED: Final = b"\x6e\x00"
SW_NO_DIAGNOSIS: Final = b"\x6f\x00"

#: The fixed past expiry date of the ``expired`` behaviour.
EXPIRED_DATE: Final = date(2021, 12, 31)
#: Authorisation Response Codes (8A) a second GENERATE AC treats as an approval.
_APPROVED_ARC: Final = (b"00", b"Y1", b"Y3", b"10", b"11")
_MAX_RESPONSE: Final = 256
#: POS Cardholder Interaction Information (DF4B, Book C-2 v2.10 Annex A) of the ``see_phone``
#: behaviour's AAC: byte 2 b1, the phone wants the cardholder verified on the device (the
#: default Phone Message Table maps it to "See Phone").
SEE_PHONE_PCII: Final = bytes.fromhex("000100")


def _bcd(number: int, digits: int) -> bytes:
    return bytes.fromhex(f"{number:0{digits}d}")


def _cn(digits: str) -> bytes:
    return bytes.fromhex(digits + ("F" if len(digits) % 2 else ""))


def _yymmdd(day: date) -> bytes:
    return bytes.fromhex(day.strftime("%y%m%d"))


def _flip(value: bytes, index: int) -> bytes:
    index = min(index, len(value) - 1)
    return value[:index] + bytes([value[index] ^ 0x01]) + value[index + 1 :]


# Certificates are pure functions of hashable inputs; signing with the private exponent takes
# milliseconds, so cards built from the same profile share them.
_issuer_certificate = functools.lru_cache(maxsize=64)(pki.make_issuer_certificate)
_icc_certificate = functools.lru_cache(maxsize=128)(pki.make_icc_certificate)
_ssad = functools.lru_cache(maxsize=128)(pki.sign_ssad)


def deterministic_random(seed: bytes) -> Callable[[int], bytes]:
    """A reproducible byte source (SHA-256 in counter mode) so transcripts replay exactly."""
    counter = 0

    def random_bytes(length: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < length:
            counter += 1
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        return out[:length]

    return random_bytes


@dataclass
class _Transaction:
    """Volatile state from SELECT to the end of the transaction."""

    application: Application | None = None
    select_name: bytes = b""
    select_occurrence: int = 0
    gpo_done: bool = False
    pdol_data: bytes = b""
    pdol_values: dict[int, bytes] = field(default_factory=dict)
    cdol1_data: bytes = b""
    generate_ac_count: int = 0
    first_ac: CryptogramType | None = None


@dataclass(frozen=True)
class Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None


def parse_command(raw: bytes) -> Command | None:
    """Split a short C-APDU (ISO/IEC 7816-3 §12.1 cases 1-4); None if its length is wrong."""
    if len(raw) < 4:
        return None
    cla, ins, p1, p2 = raw[:4]
    body = raw[4:]
    if not body:
        return Command(cla, ins, p1, p2, b"", None)
    if len(body) == 1:
        return Command(cla, ins, p1, p2, b"", body[0])
    lc = body[0]
    if lc == 0:
        return None
    if len(body) == 1 + lc:
        return Command(cla, ins, p1, p2, bytes(body[1:]), None)
    if len(body) == 2 + lc:
        return Command(cla, ins, p1, p2, bytes(body[1 : 1 + lc]), body[-1])
    return None


class VirtualCard:
    """One virtual contactless card. ``transceive(c_apdu) -> r_apdu`` (data + SW1 SW2)."""

    def __init__(
        self,
        profile: CardProfile,
        behaviour: Behaviour | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self.profile = profile
        self.behaviour = (
            behaviour if behaviour is not None else Behaviour().updated(profile.behaviour)
        )
        #: Seconds the ``slow`` behaviour asked for while no ``sleep`` was injected.
        self.simulated_delay = 0.0
        self._sleep = sleep if sleep is not None else self._add_delay
        self._random = (
            random_bytes
            if random_bytes is not None
            else deterministic_random(b"pipos-card:" + profile.pan.encode())
        )
        self.removed = False
        #: Set while the card is out of the field: ends a ``hang_on`` silence.
        self._left_field = threading.Event()
        self._removal_armed = self.behaviour.removed_after_n_commands is not None
        #: Commands answered since the card entered the field.
        self.commands = 0
        #: Every (command, response) pair since the card entered the field.
        self.transcript: list[tuple[bytes, bytes]] = []
        self.atc = profile.atc
        self.last_online_atc = 0
        self.offline_total = 0
        self.offline_count = 0
        #: Type of the last cryptogram the card produced (GPO for qVSDC, GENERATE AC else).
        self.last_cryptogram: CryptogramType | None = None
        #: ``see_phone``: the card has asked the cardholder to look at the phone (and not yet
        #: been taken away and presented again), and whether that has happened since.
        self.asked_to_see_phone = False
        self.verified_on_device = False
        self.uid = profile.uid if profile.uid is not None else self._derived_uid()
        self.atr = self._build_atr(b"PIPOS SIM")
        self._icc: pki.IccKeys | None = None
        self.data: dict[int, bytes] = {}
        self.records: dict[tuple[int, int], bytes] = {}
        self._personalise()
        self._tx = _Transaction()

    # ----------------------------------------------------------------------------------
    # Personalisation

    def _derived_uid(self) -> bytes:
        # A 7-byte UID, first byte '04' (NXP-style manufacturer code), stable per PAN.
        return b"\x04" + hashlib.sha256(b"uid:" + self.profile.pan.encode()).digest()[:6]

    @staticmethod
    def _build_atr(historical: bytes) -> bytes:
        # PC/SC Part 3 §3.1.3.2.3: contactless ISO 14443-4 pseudo-ATR 3B 8n 80 01 hist TCK.
        body = bytes([0x80 | len(historical), 0x80, 0x01]) + historical
        tck = 0
        for byte in body:
            tck ^= byte
        return b"\x3b" + body + bytes([tck])

    @property
    def aip(self) -> bytes:
        aip = bytearray(self.profile.aip)
        # A phone (see_phone) supports on-device verification on every tap: the AIP is
        # static (and signed when 9F4A lists it), the verification itself is the phone's.
        phone = self.behaviour.cdcvm_performed or self.behaviour.see_phone
        if phone and self.profile.kernel is CardKernel.MASTERCARD_MCHIP:
            aip[0] |= 0x02  # EMV Book C-2 Table A.5: on-device cardholder verification
        return bytes(aip)

    @property
    def cdcvm_performed(self) -> bool:
        """The cardholder is verified on the device: always (``cdcvm_performed``), or since
        the second tap of a ``see_phone`` phone."""
        return self.behaviour.cdcvm_performed or self.verified_on_device

    @property
    def _sees_phone(self) -> bool:
        """This tap ends in "see phone" (the ``see_phone`` behaviour, not yet verified)."""
        return self.behaviour.see_phone and not self.verified_on_device

    @property
    def expiry(self) -> date:
        return EXPIRED_DATE if self.behaviour.expired else self.profile.expiry

    @property
    def effective(self) -> date:
        return min(self.profile.effective, self.expiry.replace(year=self.expiry.year - 3))

    def _base_data(self) -> dict[int, bytes]:
        p = self.profile
        data: dict[int, bytes] = {
            0x5A: _cn(p.pan),
            0x5F24: _yymmdd(self.expiry),
            0x5F25: _yymmdd(self.effective),
            0x5F20: p.cardholder_name.encode("ascii"),
            0x9F42: _bcd(p.application_currency, 4),
            0x5F28: _bcd(p.issuer_country, 4),
            0x9F49: p.oda.ddol,
        }
        if p.pan_sequence_number is not None:
            data[0x5F34] = _bcd(p.pan_sequence_number, 2)
        # Track 2 equivalent data (Book 3 Annex A): PAN, 'D', YYMM, service code,
        # discretionary data, 'F'-padded to a whole byte.
        track2 = p.pan + "D" + self.expiry.strftime("%y%m") + p.service_code + "0000000000"
        data[0x57] = _cn(track2)
        data.update(p.data)
        return data

    def _render(self, sfi: int, number: int, tags: tuple[int, ...]) -> bytes:
        body = b"".join(encode_one(tag, self.data[tag]) for tag in tags if tag in self.data)
        record = encode_one(0x70, body)
        if len(record) > _MAX_RESPONSE:
            raise ProfileError(
                self.profile.name, f"{len(record)} bytes exceed 256", f"SFI {sfi} record {number}"
            )
        return record

    def _record_tags(self, tags: tuple[int, ...]) -> tuple[int, ...]:
        if self.behaviour.corrupt is Corruption.MISSING_DATA:
            return tuple(tag for tag in tags if tag != 0x5F24)
        return tags

    def _personalise(self) -> None:
        p = self.profile
        corrupt = self.behaviour.corrupt
        self.data = self._base_data()
        self.data[0x82] = self.aip
        layouts = {(r.sfi, r.record): self._record_tags(r.tags) for r in p.records}
        oda_ids = [
            (entry.sfi, number)
            for entry in p.afl
            for number in entry.records()
            if entry.is_oda(number)
        ]
        issuer: pki.IssuerKeys | None = None
        if p.oda.method is not CardOda.NONE:
            ca = pki.TestCa.load(p.oda.ca_rid, p.oda.ca_index)
            issuer = pki.IssuerKeys.load(p.oda.issuer_key)
            cert = _issuer_certificate(ca, issuer, p.pan[:6], p.oda.issuer_expiry, b"\x00\x00\x01")
            self.data[0x8F] = bytes([p.oda.ca_index])
            self.data[0x90] = cert.certificate
            self.data[0x9F32] = cert.exponent
            if cert.remainder is not None:
                self.data[0x92] = cert.remainder
            if corrupt is Corruption.ISSUER_CERTIFICATE:
                self.data[0x90] = _flip(self.data[0x90], 20)
            if p.oda.icc_key is not None:
                self._icc = pki.IccKeys.load(p.oda.icc_key)
        # Records signed by ODA first: the ICC certificate / SSAD hash covers them
        # (EMV Book 3 §10.3: value of '70' for SFI 1-10, the whole record for 11-30).
        for sfi, number in oda_ids:
            self.records[(sfi, number)] = self._render(sfi, number, layouts[(sfi, number)])
        static = b"".join(
            decode_one(self.records[key], 0x70).value if key[0] <= 10 else self.records[key]
            for key in oda_ids
        )
        if self.data.get(0x9F4A) == b"\x82":
            static += self.aip
        if issuer is not None:
            if self._icc is not None:
                icc_cert = _icc_certificate(issuer, self._icc, p.pan, p.oda.icc_expiry, static)
                self.data[0x9F46] = icc_cert.certificate
                self.data[0x9F47] = icc_cert.exponent
                if icc_cert.remainder is not None:
                    self.data[0x9F48] = icc_cert.remainder
                if corrupt is Corruption.ICC_CERTIFICATE:
                    self.data[0x9F46] = _flip(self.data[0x9F46], 20)
            if p.oda.method is CardOda.SDA:
                self.data[0x93] = _ssad(issuer, p.oda.dac, static)
        for layout in p.records:
            key = (layout.sfi, layout.record)
            if key not in self.records:
                self.records[key] = self._render(layout.sfi, layout.record, layouts[key])
        if corrupt is Corruption.STATIC_DATA and oda_ids:
            self._alter_signed_record(oda_ids)
        if corrupt is Corruption.RECORD_TLV and p.afl:
            key = (p.afl[0].sfi, p.afl[0].first)
            self.records[key] = self._malformed(self.records[key])

    def _alter_signed_record(self, oda_ids: list[tuple[int, int]]) -> None:
        """The card's data changed after the issuer signed it: the effective date (5F25)
        moves one day earlier in the signed record that holds it (else the first value
        byte of the first signed record is flipped)."""
        earlier = _yymmdd(self.effective - timedelta(days=1))
        for key in oda_ids:
            record = decode_one(self.records[key], 0x70)
            if any(child.tag == 0x5F25 for child in record.children):
                children = [Tlv(c.tag, earlier) if c.tag == 0x5F25 else c for c in record.children]
                self.records[key] = Tlv.template(0x70, children).encode()
                return
        first = oda_ids[0]
        header = len(self.records[first]) - len(decode_one(self.records[first]).value)
        self.records[first] = _flip(self.records[first], header + 3)

    @staticmethod
    def _malformed(record: bytes) -> bytes:
        """The record with its last object claiming one byte more than it holds."""
        objects = decode_one(record, 0x70).children
        if not objects:
            return record[:-1]
        head = b"".join(obj.encode() for obj in objects[:-1])
        last = objects[-1]
        body = head + encode_tag(last.tag) + encode_length(len(last.value) + 1) + last.value
        return encode_one(0x70, body)

    # ----------------------------------------------------------------------------------
    # Field presence

    def _add_delay(self, seconds: float) -> None:
        self.simulated_delay += seconds

    def power_on(self) -> bytes:
        """Activate the card (field on, ISO 14443-4 activation): returns the ATR."""
        if self.removed:
            raise VirtualCardRemovedError(self.commands)
        self.reset()
        return self.atr

    def reset(self) -> bytes:
        """Warm reset: the selection and transaction state are lost; ATC and counters stay."""
        self._tx = _Transaction()
        return self.atr

    def remove(self) -> None:
        """Take the card out of the field now."""
        self.removed = True
        self._left_field.set()

    def insert(self) -> None:
        """Put the card back (a new tap): clears the removal and disarms the removal
        behaviour, so a re-presented card completes the transaction. A ``see_phone`` phone
        that asked to be looked at and was taken away comes back verified."""
        if self.removed and self.asked_to_see_phone:
            self.verified_on_device = True
            self.asked_to_see_phone = False
        self.removed = False
        #: Set while the card is out of the field: ends a ``hang_on`` silence.
        self._left_field = threading.Event()
        self._removal_armed = False
        self.commands = 0
        self.transcript = []
        self.reset()

    # ----------------------------------------------------------------------------------
    # Command dispatch

    def transceive(self, c_apdu: bytes) -> bytes:
        """Answer one C-APDU with the R-APDU (response data followed by SW1 SW2).

        Raises :class:`VirtualCardRemovedError` when the card has left the field.
        """
        limit = self.behaviour.removed_after_n_commands
        if self._removal_armed and limit is not None and self.commands >= limit:
            self.removed = True
        if self.removed:
            raise VirtualCardRemovedError(self.commands)
        if self.behaviour.slow:
            self._sleep(self.behaviour.slow)
        if self.behaviour.hangs_on(c_apdu):
            # A wedged card: silent until someone takes it out of the field.
            self._left_field.wait()
            raise VirtualCardRemovedError(self.commands)
        forced = self.behaviour.transport_answer(bytes(c_apdu))
        response = forced if forced is not None else self._dispatch(bytes(c_apdu))
        self.commands += 1
        self.transcript.append((bytes(c_apdu), response))
        return response

    def _dispatch(self, raw: bytes) -> bytes:
        cmd = parse_command(raw)
        if cmd is None:
            return SW_WRONG_LENGTH
        handlers: dict[tuple[int, int], Callable[[Command], bytes]] = {
            (0x00, 0xA4): self._select,
            (0x80, 0xA8): self._get_processing_options,
            (0x00, 0xB2): self._read_record,
            (0x80, 0xAE): self._generate_ac,
            (0x00, 0x88): self._internal_authenticate,
            (0x80, 0xCA): self._get_data,
        }
        handler = handlers.get((cmd.cla, cmd.ins))
        if handler is not None:
            return handler(cmd)
        if cmd.ins in {ins for _, ins in handlers}:
            return SW_CLA_NOT_SUPPORTED
        return SW_INS_NOT_SUPPORTED

    # ----------------------------------------------------------------------------------
    # SELECT (EMV Book 1 §11.3, Book B §3.3)

    def _select(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x02):
            return SW_WRONG_P1P2
        name = cmd.data
        if name == PPSE_NAME:
            self._tx = _Transaction()
            return self._ppse_fci() + SW_OK
        matches = [app for app in self.profile.applications if app.aid.startswith(name)]
        if not name or not matches:
            return SW_FILE_NOT_FOUND
        occurrence = 0
        if cmd.p2 == 0x02 and self._tx.select_name == name:
            occurrence = self._tx.select_occurrence + 1
        if occurrence >= len(matches):
            return SW_FILE_NOT_FOUND
        app = matches[occurrence]
        self._tx = _Transaction(select_name=name, select_occurrence=occurrence)
        fci = self._application_fci(app)
        if app.blocked or (
            self.behaviour.blocked_application and self.behaviour.blocked_at == "select"
        ):
            # Book 1 §12.4: a blocked application answers '6283'; it is not selected.
            return fci + SW_BLOCKED
        self._tx.application = app
        return fci + SW_OK

    def _ppse_fci(self) -> bytes:
        # Book B §3.3.2, Table 3-3: FCI 6F { 84 DF name, A5 { BF0C { 61 entries } } }.
        entries = b""
        for app in self.profile.applications:
            entry = encode_one(0x4F, app.aid) + encode_one(0x50, app.label.encode("ascii"))
            entry += encode_one(0x87, bytes([app.priority])) + encode_one(0x9F2A, app.kernel_id)
            entries += encode_one(0x61, entry)
        proprietary = encode_one(0xA5, encode_one(0xBF0C, entries))
        return encode_one(0x6F, encode_one(0x84, PPSE_NAME) + proprietary)

    def _application_fci(self, app: Application) -> bytes:
        # Book 1 §11.3.4, Table 11 / Book 3 §6.5.8: FCI of an ADF.
        body = encode_one(0x50, app.label.encode("ascii")) + encode_one(0x87, bytes([app.priority]))
        if self.profile.pdol:
            body += encode_one(0x9F38, self.profile.pdol)
        body += encode_one(0x5F2D, self.profile.language.encode("ascii"))
        if app.preferred_name:
            body += encode_one(0x9F11, b"\x01") + encode_one(
                0x9F12, app.preferred_name.encode("ascii")
            )
        if app.fci_discretionary:
            body += encode_one(
                0xBF0C, b"".join(encode_one(tag, value) for tag, value in app.fci_discretionary)
            )
        return encode_one(0x6F, encode_one(0x84, app.aid) + encode_one(0xA5, body))

    # ----------------------------------------------------------------------------------
    # GET PROCESSING OPTIONS (EMV Book 3 §6.5.8, Book C-3 §5.4, Book C-2 §5.6)

    def _get_processing_options(self, cmd: Command) -> bytes:
        tx = self._tx
        if cmd.p1 != 0 or cmd.p2 != 0:
            return SW_WRONG_P1P2
        if tx.application is None or tx.gpo_done:
            return SW_CONDITIONS
        if self.behaviour.blocked_application and self.behaviour.blocked_at == "gpo":
            return SW_CONDITIONS
        if self.behaviour.corrupt is Corruption.UNEXPECTED_STATUS:
            return SW_NO_DIAGNOSIS
        try:
            template = decode_one(cmd.data, 0x83)
        except TlvError:
            return SW_WRONG_DATA
        if len(template.value) != dol_length(self.profile.pdol):
            return SW_WRONG_LENGTH
        values = split_dol_data(self.profile.pdol, template.value)
        qvsdc = self.profile.kernel is CardKernel.VISA_QVSDC
        if qvsdc and not values.get(0x9F66, b"\x20")[0] & 0x20:
            # TTQ byte 1 b6: the reader does not support qVSDC; this card has no MSD path.
            return SW_CONDITIONS
        if qvsdc and self._sees_phone:
            # The phone wants its own verification first: nothing is processed, no ATC used.
            self.asked_to_see_phone = True
            return SW_SEE_PHONE
        if self.atc >= 0xFFFF:
            return SW_CONDITIONS
        self.atc += 1
        tx.gpo_done = True
        tx.pdol_data = template.value
        tx.pdol_values = values
        if qvsdc:
            return self._qvsdc(values)
        afl = self.profile.afl_bytes()
        if self.profile.response_format == 1:
            return encode_one(0x80, self.aip + afl) + SW_OK
        return encode_one(0x77, encode_one(0x82, self.aip) + encode_one(0x94, afl)) + SW_OK

    def _amount(self, values: Mapping[int, bytes]) -> int:
        return bcd_to_int(values.get(0x9F02, bytes(6)), 0x9F02)

    def _card_risk(self, amount: int, currency: int) -> CryptogramType:
        """Card risk management of the ``auto`` decision: offline only within the limits."""
        limits = self.profile.limits
        if (
            self.behaviour.expired
            or currency != self.profile.application_currency
            or amount > limits.single_offline
            or self.offline_total + amount > limits.cumulative_offline
            or self.offline_count >= limits.consecutive_offline
        ):
            return CryptogramType.ARQC
        return CryptogramType.TC

    def _qvsdc(self, values: Mapping[int, bytes]) -> bytes:
        """qVSDC card processing in GPO (EMV Book C-3 §5.4 and Annex A card behaviour)."""
        p = self.profile
        ttq = values.get(0x9F66, b"\x20\x00\x00\x00")
        try:
            amount = self._amount(values)
            currency = bcd_to_int(values.get(0x5F2A, bytes(2)), 0x5F2A)
        except CryptogramDataError:
            return SW_WRONG_DATA
        decision = self.behaviour.decision
        online_required = bool(ttq[1] & 0x80)  # TTQ byte 2 b8
        offline_only_reader = bool(ttq[0] & 0x08)  # TTQ byte 1 b4
        if decision is Decision.DECLINE:
            ctype = CryptogramType.AAC
        elif online_required or decision is Decision.REQUEST_ONLINE:
            ctype = CryptogramType.ARQC
        elif decision is Decision.APPROVE_OFFLINE:
            ctype = CryptogramType.TC
        else:
            ctype = self._card_risk(amount, currency)
        if ctype is CryptogramType.ARQC and offline_only_reader:
            ctype = CryptogramType.AAC  # an offline-only reader cannot go online: decline
        ctq = bytearray(p.ctq)
        if self.cdcvm_performed:
            ctq[1] |= 0x80  # CTQ byte 2 b8: Consumer Device CVM Performed
        elif ttq[1] & 0x40:  # TTQ byte 2 b7: CVM required
            for choice in p.cvm_preference:
                if choice == "online_pin" and ctype is CryptogramType.ARQC and ttq[0] & 0x04:
                    ctq[0] |= 0x80  # CTQ byte 1 b8: Online PIN Required
                    break
                if choice == "signature" and ttq[0] & 0x02:
                    ctq[0] |= 0x40  # CTQ byte 1 b7: Signature Required
                    break
                if choice == "no_cvm":
                    break
        atc = self.atc.to_bytes(2, "big")
        iad = build_iad(p.cryptogram_kind, p.derivation_key_index, ctype)
        try:
            cryptogram = self._cryptogram(values, atc, iad)
        except CryptogramDataError:
            return SW_WRONG_DATA
        objects = [
            (0x82, self.aip),
            (0x94, p.afl_bytes()),
            (0x9F36, atc),
            (0x9F26, cryptogram),
        ]
        if p.return_cid:
            objects.append((0x9F27, bytes([int(ctype)])))
        objects += [(0x9F10, iad), (0x9F6C, bytes(ctq)), (0x57, self.data[0x57])]
        if 0x5F34 in self.data:
            objects.append((0x5F34, self.data[0x5F34]))
        if 0x9F6E in self.data:
            objects.append((0x9F6E, self.data[0x9F6E]))
        if ctype is CryptogramType.TC and p.oda.method is CardOda.FDDA and self._icc:
            objects += self._fdda(values, atc, bytes(ctq))
        self._finish(ctype, amount)
        body = b"".join(encode_one(tag, value) for tag, value in objects)
        return encode_one(0x77, body) + SW_OK

    def _fdda(self, values: Mapping[int, bytes], atc: bytes, ctq: bytes) -> list[tuple[int, bytes]]:
        """fDDA signature (EMV Book C-3 fDDA; Book 2 §6.5 Table 17 with the ATC as the ICC
        Dynamic Number). Version '01' adds 9F69 = '01' || card UN || CTQ to the signed data."""
        assert self._icc is not None
        card_auth: bytes | None = None
        if self.profile.oda.fdda_version == 1:
            card_auth = b"\x01" + self._random(4) + ctq
        terminal = fdda_terminal_dynamic_data(
            values.get(0x9F37, bytes(4)),
            values.get(0x9F02, bytes(6)),
            values.get(0x5F2A, bytes(2)),
            card_auth,
        )
        sdad = pki.sign_sdad(self._icc, pki.dda_icc_dynamic_data(atc), terminal)
        if self.behaviour.corrupt is Corruption.SDAD:
            sdad = _flip(sdad, len(sdad) // 2)
        out = [(0x9F4B, sdad)]
        if card_auth is not None:
            out.append((0x9F69, card_auth))
        return out

    def _cryptogram(self, values: Mapping[int, bytes], atc: bytes, iad: bytes) -> bytes:
        full: dict[int, bytes] = {
            0x9F02: bytes(6),
            0x9F03: bytes(6),
            0x9F1A: bytes(2),
            0x95: bytes(5),
            0x5F2A: bytes(2),
            0x9C: bytes(1),
            0x9F37: bytes(4),
        }
        full.update(values)
        full.update({0x82: self.aip, 0x9F36: atc, 0x9F10: iad})
        cryptogram = compute_cryptogram(
            self.profile.cryptogram_kind, icc_master_key(self.profile), full
        )
        if self.behaviour.corrupt is Corruption.CRYPTOGRAM:
            cryptogram = _flip(cryptogram, 0)
        return cryptogram

    def _finish(self, ctype: CryptogramType, amount: int) -> None:
        self.last_cryptogram = ctype
        if ctype is CryptogramType.TC:
            self.offline_total += amount
            self.offline_count += 1

    # ----------------------------------------------------------------------------------
    # READ RECORD (EMV Book 3 §6.5.11)

    def _read_record(self, cmd: Command) -> bytes:
        if cmd.p2 & 0x07 != 0x04:
            return SW_WRONG_P1P2
        if self._tx.application is None:
            return SW_CONDITIONS
        sfi = cmd.p2 >> 3
        record = self.records.get((sfi, cmd.p1))
        if record is not None:
            return record + SW_OK
        if any(key[0] == sfi for key in self.records):
            return SW_RECORD_NOT_FOUND
        return SW_FILE_NOT_FOUND

    # ----------------------------------------------------------------------------------
    # GENERATE AC (EMV Book 3 §6.5.5, Book 2 §6.6 for CDA)

    def _generate_ac(self, cmd: Command) -> bytes:
        tx = self._tx
        p = self.profile
        requested_bits = cmd.p1 & 0xC0
        if requested_bits == 0xC0 or cmd.p2 != 0:
            return SW_WRONG_P1P2
        requested = CryptogramType(requested_bits)
        second = tx.generate_ac_count == 1
        if not tx.gpo_done or tx.generate_ac_count >= 2:
            return SW_CONDITIONS
        if second and tx.first_ac is not CryptogramType.ARQC:
            return SW_CONDITIONS  # Book 3 §9.3: only an ARQC leaves the transaction open
        dol = p.data.get(0x8D if second else 0x8C)
        if dol is None:
            return SW_INS_NOT_SUPPORTED
        if len(cmd.data) != dol_length(dol):
            return SW_WRONG_LENGTH
        values = dict(tx.pdol_values)
        values.update(split_dol_data(dol, cmd.data))
        try:
            amount = self._amount(values)
            currency = bcd_to_int(values.get(0x5F2A, bytes(2)), 0x5F2A)
        except CryptogramDataError:
            return SW_WRONG_DATA
        decision = self.behaviour.decision
        # The phone's first answer: an AAC that tells the reader to send the cardholder to
        # the phone (DF4B, Book C-2 v2.10 Annex A), never a cryptogram to go online.
        see_phone = not second and self._sees_phone
        ctype: CryptogramType
        if see_phone or requested is CryptogramType.AAC or decision is Decision.DECLINE:
            ctype = CryptogramType.AAC
        elif second:
            arc = values.get(0x8A, b"")
            ctype = CryptogramType.TC if arc in _APPROVED_ARC else CryptogramType.AAC
        elif requested is CryptogramType.ARQC or decision is Decision.REQUEST_ONLINE:
            ctype = CryptogramType.ARQC
        elif decision is Decision.APPROVE_OFFLINE:
            ctype = CryptogramType.TC
        else:
            ctype = self._card_risk(amount, currency)
        atc = self.atc.to_bytes(2, "big")
        dynamic_number = self._random(8)
        iad = build_iad(p.cryptogram_kind, p.derivation_key_index, ctype, dynamic_number)
        try:
            cryptogram = self._cryptogram(values, atc, iad)
        except CryptogramDataError:
            return SW_WRONG_DATA
        cid = int(ctype)
        tx.generate_ac_count += 1
        if not second:
            tx.first_ac = ctype
            tx.cdol1_data = cmd.data
            self._finish(ctype, amount)
        else:
            self.last_cryptogram = ctype
            if ctype is CryptogramType.TC:
                self.last_online_atc = self.atc
                self.offline_total = 0
                self.offline_count = 0
        cda = (
            bool(cmd.p1 & 0x10)
            and bool(self.aip[0] & 0x01)
            and ctype is not CryptogramType.AAC
            and self._icc is not None
        )
        if cda:
            assert self._icc is not None
            response = pki.build_cda_genac_response(
                self._icc,
                cid=cid,
                application_cryptogram=cryptogram,
                icc_dynamic_number=dynamic_number,
                unpredictable_number=values.get(0x9F37, bytes(4)),
                pdol_data=tx.pdol_data,
                cdol1_data=tx.cdol1_data,
                cdol2_data=cmd.data if second else None,
                other_objects=[(0x9F36, atc), (0x9F10, iad)],
            )
            if self.behaviour.corrupt is Corruption.SDAD:
                response = self._corrupt_sdad(response)
            return response + SW_OK
        if p.response_format == 1 and not see_phone:  # format 1 cannot carry DF4B
            return encode_one(0x80, bytes([cid]) + atc + cryptogram + iad) + SW_OK
        body = (
            encode_one(0x9F27, bytes([cid]))
            + encode_one(0x9F36, atc)
            + encode_one(0x9F26, cryptogram)
            + encode_one(0x9F10, iad)
        )
        if see_phone:
            self.asked_to_see_phone = True
            body += encode_one(0xDF4B, SEE_PHONE_PCII)
        return encode_one(0x77, body) + SW_OK

    @staticmethod
    def _corrupt_sdad(response: bytes) -> bytes:
        template = decode_one(response, 0x77)
        children = [
            Tlv(c.tag, _flip(c.value, len(c.value) // 2)) if c.tag == 0x9F4B else c
            for c in template.children
        ]
        return Tlv.template(0x77, children).encode()

    # ----------------------------------------------------------------------------------
    # INTERNAL AUTHENTICATE (EMV Book 3 §6.5.9, Book 2 §6.5.1) and GET DATA (§6.5.7)

    def _internal_authenticate(self, cmd: Command) -> bytes:
        if self._icc is None:
            return SW_INS_NOT_SUPPORTED
        if self._tx.application is None:
            return SW_CONDITIONS
        if cmd.p1 != 0 or cmd.p2 != 0:
            return SW_WRONG_P1P2
        number = self._random(8)
        sdad = pki.sign_sdad(self._icc, pki.dda_icc_dynamic_data(number), cmd.data)
        if self.behaviour.corrupt is Corruption.SDAD:
            sdad = _flip(sdad, len(sdad) // 2)
        if self.profile.response_format == 1:
            return encode_one(0x80, sdad) + SW_OK
        return encode_one(0x77, encode_one(0x9F4B, sdad)) + SW_OK

    def _get_data(self, cmd: Command) -> bytes:
        tag = (cmd.p1 << 8) | cmd.p2 if cmd.p1 else cmd.p2
        values: dict[int, bytes] = {
            0x9F36: self.atc.to_bytes(2, "big"),
            0x9F13: self.last_online_atc.to_bytes(2, "big"),
            0x9F17: self.data.get(0x9F17, b"\x03"),
        }
        for extra in (0x9F4F, 0x9F51, 0x9F5D):
            if extra in self.data:
                values[extra] = self.data[extra]
        value = values.get(tag)
        if value is None:
            return SW_DATA_NOT_FOUND
        return encode_one(tag, value) + SW_OK
