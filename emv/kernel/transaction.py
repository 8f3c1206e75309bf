"""The contactless transaction engine: Entry Point, Kernel 2 and Kernel 3, sans-I/O.

h11-style: :class:`ContactlessTransaction` is given the card's responses and hands back the
next command or the final :class:`~emv.kernel.outcome.Outcome`; the caller moves the bytes.
Every state transition happens in :meth:`ContactlessTransaction._apply`, and each state's
handler (``_HANDLERS``) is named after the step of the specification it performs:

====================  ==========================================================
state                 handler (specification)
====================  ==========================================================
SELECT_PPSE           ``_on_ppse_selected``       Book B §3.3.2 (PPSE, Candidate List)
FINAL_SELECTION       ``_on_application_selected`` Book B §3.3.3, §3.4 (kernel activation)
K3_GPO                ``_k3_on_gpo``              Book C-3 §5.2 (Initiate Application Processing)
K2_GPO                ``_k2_on_gpo``              Book C-2 §3.2 / Book 3 §10.1
READ_RECORD           ``_on_record``              Book 3 §10.2 (Read Application Data)
K2_GET_ATC            ``_k2_on_atc``              Book 3 §10.6.3 (velocity checking)
K2_GET_LAST_ONLINE    ``_k2_on_last_online_atc``  Book 3 §10.6.3
K2_GENERATE_AC        ``_k2_on_generate_ac``      Book 3 §9.3, §10.8; Book 2 §6.6 (CDA)
====================  ==========================================================

Card faults (malformed TLV, missing mandatory data, unexpected status words, removal) end in
an Outcome with a reason the merchant can act on; ``feed`` raises only for caller mistakes
(feeding after the end), as :class:`KernelStateError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from emv import tlv
from emv.apdu import (
    ApduError,
    ApduExchange,
    CommandApdu,
    CryptogramType,
    ResponseApdu,
    generate_ac,
    get_data,
    get_processing_options,
    read_record,
    select,
    select_ppse,
)
from emv.capk import CaKeyStore
from emv.carddata import CardAccount, CardAccountError, read_account
from emv.dol import build_dol, parse_dol
from emv.errors import EmvError
from emv.oda import (
    OdaFailure,
    OdaMethod,
    OdaResult,
    RevocationCheck,
    build_static_data_from_afl,
    oda_records_from_afl,
    perform_cda,
    perform_fdda,
)

from .config import KERNEL_MASTERCARD, KERNEL_VISA, AidConfig, TerminalConfig, TransactionRequest
from .cvm import CvmInputs, select_cvm
from .entry_point import (
    Candidate,
    PreprocessingIndicators,
    build_candidate_list,
    order_candidates,
    preprocess,
)
from .kernel_data import (
    DEFAULT_PHONE_MESSAGE_TABLE,
    KC_ON_DEVICE_CVM,
    KC_ONLY_EMV_MODE,
    UiMessage,
    parse_phone_message_table,
)
from .outcome import (
    CardData,
    CryptogramKind,
    CvmKind,
    OdaStatus,
    Outcome,
    OutcomeKind,
    Start,
    mask_pan,
)
from .risk import (
    bcd_date,
    processing_restrictions,
    random_selection,
    terminal_action_analysis,
    velocity_checking,
)
from .tvr import Tsi, Tvr

__all__ = ["ContactlessTransaction", "KernelStateError", "Reasons"]


#: What a codec raises on a card's malformed answer (ODA reports its failures as values).
_CODEC_FAULTS: Final = (tlv.TlvError, ApduError, CardAccountError)


class KernelStateError(EmvError):
    """The caller drove the transaction out of order (e.g. fed a response after the end)."""


class Reasons:
    """Merchant-facing reasons (Book A §9.4 user interface messages, in plain words)."""

    CARD_REMOVED: Final = "Card removed too early - tap again"
    NOT_SUPPORTED: Final = "Card not supported - try another card"
    BLOCKED: Final = "Card blocked - try another card"
    READ_ERROR: Final = "Card read error - tap again or try another card"
    DATA_MISSING: Final = "Card data missing - try another card"
    EXPIRED: Final = "Card expired"
    DECLINED: Final = "Declined by card"
    ODA_FAILED: Final = "Card authentication failed - declined"
    CVM_FAILED: Final = "Cardholder verification not possible - declined"
    OTHER_INTERFACE: Final = "Insert or swipe the card"
    OVER_LIMIT: Final = "Amount above the contactless limit - insert or swipe the card"
    SEE_PHONE: Final = "See phone for instructions, then tap again"
    #: Book A message '1C' (C-2 S910: a failed combined authentication).
    TRY_ANOTHER_CARD: Final = "Insert, swipe or try another card"
    NOT_YET_EFFECTIVE: Final = "Card not yet valid - try another card"
    SERVICE_NOT_ALLOWED: Final = "Card not valid for this transaction - try another card"


#: What a GENERATE AC answer in format 2 ('77') itself carries (Book 3 §6.5.5.4; Book 2
#: §6.6 for the Signed Dynamic Application Data of CDA): these replace earlier values.
_GENERATE_AC_OBJECTS: Final = frozenset({0x9F27, 0x9F36, 0x9F26, 0x9F10, 0x9F4B})


class _State(StrEnum):
    IDLE = "idle"
    SELECT_PPSE = "select_ppse"
    FINAL_SELECTION = "final_selection"
    K3_GPO = "k3_gpo"
    K2_GPO = "k2_gpo"
    READ_RECORD = "read_record"
    K2_GET_ATC = "k2_get_atc"
    K2_GET_LAST_ONLINE = "k2_get_last_online_atc"
    K2_GENERATE_AC = "k2_generate_ac"
    DONE = "done"


@dataclass(frozen=True)
class _Send:
    """Next step: send ``command`` and handle its response in ``state``."""

    state: _State
    command: CommandApdu


class _CardFault(Exception):  # noqa: N818 - internal control flow, never escapes feed()
    """A card-caused problem ending the transaction with a defined outcome."""

    def __init__(
        self,
        kind: OutcomeKind,
        reason: str,
        detail: str,
        *,
        tvr_bits: Sequence[str] = (),
        cryptogram: CryptogramKind | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.reason = reason
        self.detail = detail
        self.tvr_bits = tuple(tvr_bits)
        self.cryptogram = cryptogram


_Step = _Send | Outcome


def _redundant(where: str, tag: int) -> _CardFault:
    """Book 3 §10.2: the card gave a primitive data object again with another value."""
    return _CardFault(
        OutcomeKind.END_APPLICATION,
        Reasons.READ_ERROR,
        f"{where} gives data object {tlv.tag_hex(tag)} again with another value "
        "(Book 3 §10.2: redundant data objects)",
    )


#: The AFL entry of a mag-stripe-mode record (C-2 v2.10 S3.32): SFI 1, record 1 to 1, none
#: for offline data authentication.
_MAG_STRIPE_AFL_ENTRY: Final = bytes.fromhex("08010100")

#: Terminal data objects an AID's kernel data may give its own value of.
_PER_AID_TERMINAL_DATA: Final = (0x9F33, 0x9F35, 0x9F40, 0x9F1A, 0x9F1D, 0x9F53, 0x9F6D, 0x9F7E)

#: Tags passed on for online authorisation (EMV Book 3 Annex A; ISO 8583 DE 55 content).
_ONLINE_TAGS: Final = (
    0x9F26, 0x9F27, 0x9F10, 0x9F36, 0x9F37, 0x95, 0x9A, 0x9C, 0x9F02, 0x9F03, 0x5F2A,
    0x82, 0x9F1A, 0x9F34, 0x84, 0x4F, 0x5F34, 0x57, 0x5A, 0x5F24, 0x9F33, 0x9F35, 0x9F09,
    0x9F1E, 0x9F21, 0x9F66, 0x9F6C, 0x9F6E, 0x9F7C, 0x9F53, 0x9B, 0x50, 0x9F12, 0x9F6B,
    0x9F4C, 0x9F69, 0x9F5D, 0x5F28, 0x9F07, 0x9F08, 0x9F0D, 0x9F0E, 0x9F0F, 0x9F40, 0x9F15,
    0x9F16, 0x9F1C, 0x9F4E,
)  # fmt: skip

#: CVM Results (9F34) for the Kernel 3 CVMs (Book 3 Annex C3 codes, result byte).
_K3_CVM_RESULTS: Final = {
    CvmKind.NO_CVM: bytes.fromhex("1F0002"),
    CvmKind.SIGNATURE: bytes.fromhex("1E0000"),
    CvmKind.ONLINE_PIN: bytes.fromhex("020000"),
    CvmKind.CDCVM: bytes.fromhex("010002"),
}

_CRYPTOGRAM_RANK: Final = {CryptogramKind.AAC: 0, CryptogramKind.ARQC: 1, CryptogramKind.TC: 2}
_REQUESTED_KIND: Final = {
    CryptogramType.AAC: CryptogramKind.AAC,
    CryptogramType.ARQC: CryptogramKind.ARQC,
    CryptogramType.TC: CryptogramKind.TC,
}


def _bcd(value: int, length: int) -> bytes:
    return bytes.fromhex(f"{value:0{length * 2}d}")


#: The most records one transaction reads (see _parse_afl).
MAX_AFL_RECORDS = 64


def _parse_afl(afl: bytes) -> list[tuple[int, int]]:
    """Book 3 §10.2: (SFI, record) pairs in AFL order; a malformed AFL is a card fault."""
    if not afl or len(afl) % 4:
        raise _CardFault(
            OutcomeKind.END_APPLICATION,
            Reasons.READ_ERROR,
            f"AFL of {len(afl)} bytes is not a non-empty multiple of 4 (Book 3 §10.2)",
        )
    out: list[tuple[int, int]] = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if not 1 <= sfi <= 30 or first == 0 or last < first or oda > last - first + 1:
            raise _CardFault(
                OutcomeKind.END_APPLICATION,
                Reasons.READ_ERROR,
                f"AFL entry {afl[i : i + 4].hex().upper()} is invalid (Book 3 §10.2)",
            )
        out.extend((sfi, number) for number in range(first, last + 1))
    if len(set(out)) != len(out):
        raise _CardFault(
            OutcomeKind.END_APPLICATION,
            Reasons.READ_ERROR,
            "AFL names a record more than once (Book 3 §10.2)",
        )
    if len(out) > MAX_AFL_RECORDS:
        # Not a spec limit but a robustness one: a well-formed AFL may name 30 x 254
        # records, which a hostile card could use to hold the customer at the reader for
        # minutes. Real cards list a handful.
        raise _CardFault(
            OutcomeKind.END_APPLICATION,
            Reasons.READ_ERROR,
            f"AFL names {len(out)} records; at most {MAX_AFL_RECORDS} are read",
        )
    return out


class ContactlessTransaction:
    """One contactless transaction from Entry Point pre-processing to the outcome.

    ``start()`` returns the first command (SELECT PPSE), or an Outcome when pre-processing
    alone decides (every application over its contactless limit: Try Another Interface).
    Each ``feed(r_apdu)`` returns the next command or the final Outcome.
    ``card_removed()`` ends the transaction when the card leaves the field.
    """

    def __init__(
        self,
        config: TerminalConfig,
        aids: Sequence[AidConfig],
        request: TransactionRequest,
        ca_keys: CaKeyStore,
        *,
        revocation_check: RevocationCheck | None = None,
    ) -> None:
        self._config = config
        self._aids = tuple(aids)
        self._request = request
        self._ca_keys = ca_keys
        self._revocation_check = revocation_check
        self._today = request.today
        self._state = _State.IDLE
        self._exchange: ApduExchange | None = None
        self._last_command = b""
        self._outcome: Outcome | None = None
        self._apdus = 0
        #: (command, response) pairs exchanged so far, in order (for transcripts). They hold
        #: card data in the clear (PAN, track 2): never log them outside a test environment.
        self.exchanges: list[tuple[bytes, bytes]] = []
        self._indicators: dict[int, PreprocessingIndicators] = {}
        self._candidates: list[Candidate] = []
        self._candidate: Candidate | None = None
        self._blocked_seen = False
        #: A Kernel 2 Combination was dropped for its transaction limit (C-2 S456.14).
        self._over_limit_seen = False
        self._reset_kernel()

    def _reset_kernel(self) -> None:
        """Kernel data starts afresh for every application tried (Book B §3.4)."""
        self._tvr = Tvr()
        self._tsi = Tsi()
        self._card: dict[int, bytes] = {}
        #: What the card gave in its GPO answer and its records (not the FCI): Book 3 §10.2
        #: does not let a record give one of these again with another value.
        self._read_data: dict[int, bytes] = {}
        self._terminal: dict[int, bytes] = {}
        self._afl = b""
        self._to_read: list[tuple[int, int]] = []
        self._oda_ids: set[tuple[int, int]] = set()
        self._oda_records: dict[tuple[int, int], bytes] = {}
        self._pdol_data = b""
        self._cdol1_data = b""
        #: The TVR as the card received it in the DOL of the command that gave its
        #: cryptogram (the PDOL for Kernel 3's GPO, CDOL1 for GENERATE AC). It is an input of
        #: the Application Cryptogram (EMV Book 2 v4.4 §8.1.1, Table 26), so the online data
        #: carries this one, not the TVR the kernel went on to set: an issuer recomputes the
        #: ARQC from the online data alone.
        self._tvr_given: bytes | None = None
        self._oda_method = OdaMethod.NONE
        self._oda_result: OdaResult | None = None
        self._cda_possible = False
        self._cda_requested = False
        self._requested: CryptogramType | None = None
        self._cvm: CvmKind | None = None
        self._cvm_results: bytes | None = None
        self._atc: bytes | None = None
        self._last_online_atc: bytes | None = None

    # ------------------------------------------------------------------------------------
    # Public interface

    @property
    def state(self) -> str:
        return self._state.value

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    def start(self) -> bytes | Outcome:
        """Book B §3.1 pre-processing, then §3.2-3.3: the first command, SELECT PPSE."""
        if self._state is not _State.IDLE:
            raise KernelStateError("start() was already called")
        for index, aid in enumerate(self._aids):
            self._indicators[index] = preprocess(self._config, aid, self._request)
        # Book B §3.1.1.13: when no Combination is allowed, Try Another Interface.
        if all(ind.not_allowed for ind in self._indicators.values()):
            return self._apply(
                self._end(
                    OutcomeKind.TRY_ANOTHER_INTERFACE,
                    Reasons.OVER_LIMIT,
                    "every application is over its contactless limit (Book B §3.1.1.13)",
                )
            )
        return self._apply(_Send(_State.SELECT_PPSE, select_ppse()))

    def feed(self, r_apdu: bytes) -> bytes | Outcome:
        """The card's response to the last command: the next command or the Outcome."""
        if self._state in (_State.IDLE, _State.DONE) or self._exchange is None:
            raise KernelStateError(f"feed() in state {self._state.value}")
        self._apdus += 1
        self.exchanges.append((self._last_command, bytes(r_apdu)))
        try:
            got = self._exchange.feed(bytes(r_apdu))
        except ApduError as exc:
            return self._apply(self._end(OutcomeKind.END_APPLICATION, Reasons.READ_ERROR, str(exc)))
        if isinstance(got, bytes):
            self._last_command = got  # GET RESPONSE or the command resent with Le
            return got
        try:
            step = _HANDLERS[self._state](self, got)
        except _CardFault as fault:
            self._tvr.set_all(fault.tvr_bits)
            step = self._end(fault.kind, fault.reason, fault.detail, fault.cryptogram)
        except _CODEC_FAULTS as exc:
            # A card fault found by a codec (TLV and DOLs, APDUs, account data): the card's
            # answer ends the transaction. Anything else, the kernel's own configuration and
            # state errors included, is a bug and propagates, so the fuzzers and the "never
            # raises" properties find it.
            step = self._end(OutcomeKind.END_APPLICATION, Reasons.READ_ERROR, str(exc))
        return self._apply(step)

    def card_removed(self) -> Outcome:
        """Book B §3.5.1.2 / Book A §6.2: communication lost -> Try Again (tap again)."""
        if self._outcome is not None:
            return self._outcome
        outcome = self._end(
            OutcomeKind.TRY_AGAIN,
            Reasons.CARD_REMOVED,
            f"card left the field in state {self._state.value}",
            start=Start.B,
            message=UiMessage.PRESENT_CARD_AGAIN,
        )
        self._apply(outcome)
        return outcome

    # ------------------------------------------------------------------------------------
    # The one place where the state changes

    def _apply(self, step: _Step) -> bytes | Outcome:
        if isinstance(step, Outcome):
            self._state = _State.DONE
            self._exchange = None
            self._outcome = step
            return step
        self._state = step.state
        self._exchange = ApduExchange(step.command)
        self._last_command = self._exchange.start()
        return self._last_command

    # ------------------------------------------------------------------------------------
    # Entry Point (Book B)

    def _on_ppse_selected(self, response: ResponseApdu) -> _Step:
        """Book B §3.3.2: Candidate List from the PPSE directory entries."""
        candidates: list[Candidate] = []
        if response.ok:
            try:
                aids = list(self._aids)
                indicators = [self._indicators[i] for i in range(len(aids))]
                candidates = build_candidate_list(response.data, aids, indicators)
            except tlv.TlvError:
                candidates = []  # §3.3.2.3: an unusable PPSE gives no Combinations
        if not candidates:
            # §3.3.2.7: an empty Candidate List ends the application on this interface.
            detail = (
                f"SELECT PPSE answered {response.describe()}"
                if not response.ok
                else "no supported application in the PPSE directory"
            )
            return self._end(OutcomeKind.END_APPLICATION, Reasons.NOT_SUPPORTED, detail)
        self._candidates = order_candidates(candidates)
        return self._final_selection()

    def _final_selection(self) -> _Step:
        """Book B §3.3.3: select the highest-priority remaining Combination."""
        if not self._candidates:
            reason = Reasons.BLOCKED if self._blocked_seen else Reasons.NOT_SUPPORTED
            return self._end(
                OutcomeKind.END_APPLICATION, reason, "no Combination left on the Candidate List"
            )
        self._candidate = self._candidates.pop(0)
        self._reset_kernel()
        name = self._candidate.adf_name + self._candidate.extended_selection
        return _Send(_State.FINAL_SELECTION, select(name))

    def _select_next(self, detail: str) -> _Step:
        """Book B §3.5.1.1 Outcome "Select Next" (Start C): drop this Combination, select
        the next on the same tap."""
        if not self._candidates:
            if self._over_limit_seen:
                # As when pre-processing allows no Combination (Book B §3.1.1.13).
                return self._end(OutcomeKind.TRY_ANOTHER_INTERFACE, Reasons.OVER_LIMIT, detail)
            reason = Reasons.BLOCKED if self._blocked_seen else Reasons.NOT_SUPPORTED
            return self._end(OutcomeKind.END_APPLICATION, reason, detail)
        return self._final_selection()

    def _on_application_selected(self, response: ResponseApdu) -> _Step:
        """Book B §3.3.3.4-6 and §3.4: check the FCI, then activate the kernel."""
        assert self._candidate is not None
        if response.sw == 0x6283:
            self._blocked_seen = True  # Book 1 §12.4: application blocked
            return self._select_next(
                f"application {self._candidate.adf_name.hex().upper()} blocked"
            )
        if not response.ok:
            return self._select_next(f"SELECT AID answered {response.describe()}")
        try:
            fci = tlv.decode_one(response.data, 0x6F)
        except tlv.TlvError as exc:
            return self._select_next(f"malformed FCI: {exc}")
        self._card.update(tlv.flatten([fci]))
        self._card.setdefault(0x84, self._candidate.adf_name)
        self._terminal = self._terminal_data(self._candidate)
        if self._candidate.kernel_id == KERNEL_VISA:
            return self._k3_initiate()
        if self._candidate.kernel_id == KERNEL_MASTERCARD:
            return self._k2_initiate()
        return self._select_next(f"kernel {self._candidate.kernel_id} not implemented")

    def _terminal_data(self, candidate: Candidate) -> dict[int, bytes]:
        """The terminal's data objects for this transaction (Book 3 Annex A, source 'terminal')."""
        req = self._request
        aid = candidate.aid
        index = self._aids.index(aid)
        data = dict(self._config.data)
        currency = req.currency if req.currency is not None else self._config.currency
        data.update(
            {
                0x9F02: _bcd(req.amount, 6),
                0x9F03: _bcd(req.other_amount, 6),
                0x81: req.amount.to_bytes(4, "big"),
                0x9F04: req.other_amount.to_bytes(4, "big"),
                0x5F2A: _bcd(currency, 2),
                0x9A: bytes.fromhex(req.date),
                0x9F21: bytes.fromhex(req.time),
                0x9C: _bcd(req.transaction_type, 1),
                0x9F37: req.unpredictable_number,
                0x9F66: self._indicators[index].ttq,
                0x9F09: aid.app_version,
                0x9F1B: aid.terminal_floor_limit.to_bytes(4, "big"),
                0x9F06: aid.aid,
            }
        )
        # Terminal data a kernel needs its own value of, per AID (C-2 Annex A; Book B
        # §3.1: configuration data is per Combination).
        for tag in _PER_AID_TERMINAL_DATA:
            value = aid.kernel_data.get(tag)
            if value is not None:
                data[tag] = value
        data[0x9F33] = self._config.honest_capabilities(data[0x9F33])
        return data

    def _dol_values(self) -> dict[int, bytes]:
        """Values for DOL building: card data, then terminal data, then live TVR/TSI/CVM."""
        values = {**self._card, **self._terminal, 0x95: self._tvr.value, 0x9B: self._tsi.value}
        if self._cvm_results is not None:
            values[0x9F34] = self._cvm_results
        return values

    def _gpo(self, state: _State) -> _Send:
        """Book 3 §10.1: GET PROCESSING OPTIONS with the PDOL related data."""
        pdol = self._card.get(0x9F38, b"")
        self._pdol_data = build_dol(parse_dol(pdol), self._dol_values()) if pdol else b""
        self._tvr_given = self._tvr_in(pdol)
        return _Send(state, get_processing_options(self._pdol_data))

    def _tvr_in(self, dol: bytes) -> bytes | None:
        """The TVR as it is now, if `dol` asks for it (so the card computes over it)."""
        if any(entry.tag == 0x95 for entry in parse_dol(dol)):
            return self._tvr.value
        return None

    def _read_next_record(self, then: Callable[[ContactlessTransaction], _Step]) -> _Step:
        if self._to_read:
            sfi, number = self._to_read[0]
            return _Send(_State.READ_RECORD, read_record(sfi, number))
        return then(self)

    def _on_record(self, response: ResponseApdu) -> _Step:
        """Book 3 §10.2: every AFL record, template '70'; any failure ends the application."""
        sfi, number = self._to_read.pop(0)
        if not response.ok:
            raise _CardFault(
                OutcomeKind.END_APPLICATION,
                Reasons.READ_ERROR,
                f"READ RECORD SFI {sfi} record {number} answered {response.describe()}",
            )
        record = tlv.decode_one(response.data, 0x70)
        if (sfi, number) in self._oda_ids:
            self._oda_records[(sfi, number)] = response.data
        self._take_read_data(record, f"SFI {sfi} record {number}")
        for _, node in record.walk():  # nested templates' objects too, unchecked
            if not node.constructed and not self._card.get(node.tag):
                self._card[node.tag] = node.value
        assert self._candidate is not None
        then = _k3_records_read if self._candidate.kernel_id == KERNEL_VISA else _k2_records_read
        return self._read_next_record(then)

    def _take_read_data(self, template: tlv.Tlv, where: str) -> None:
        """Book 3 §10.2: redundant primitive data objects are not permitted. A primitive the
        card gives (directly in its GPO answer or a record template) that it already gave
        with another value is a card fault: which of the two would the terminal believe?
        An empty object may be filled later, and the same value given again is accepted
        (lenient: some cards repeat 57 or 9F6E in the GPO answer and a record)."""
        for child in template.children:
            if child.constructed:
                continue
            earlier = self._read_data.get(child.tag)
            if earlier and child.value and earlier != child.value:
                raise _redundant(where, child.tag)
            if not earlier:
                self._read_data[child.tag] = child.value

    def _schedule_records(self, afl: bytes) -> None:
        self._afl = afl
        self._to_read = _parse_afl(afl)
        self._oda_ids = set(oda_records_from_afl(afl) or ())

    # ------------------------------------------------------------------------------------
    # Kernel 3 (Book C-3, qVSDC)

    def _k3_initiate(self) -> _Step:
        """Book C-3 §5.2: PDOL data (TTQ, amount, UN, date, currency, country, type), GPO."""
        return self._gpo(_State.K3_GPO)

    def _see_phone_gpo(self) -> Outcome:
        """GPO '6986' (C-3 v2.10 §5.2.2): the phone wants its cardholder first: Try Again,
        Start B, "see phone"."""
        return self._end(
            OutcomeKind.TRY_AGAIN,
            Reasons.SEE_PHONE,
            "GPO answered 6986",
            start=Start.B,
            message=UiMessage.SEE_PHONE,
        )

    def _k3_on_gpo(self, response: ResponseApdu) -> _Step:
        """Book C-3 §5.2.2: GPO status words, then the response template '77'."""
        sw = response.sw
        if sw == 0x6984:
            return self._end(
                OutcomeKind.TRY_ANOTHER_INTERFACE, Reasons.OTHER_INTERFACE, "GPO answered 6984"
            )
        if sw == 0x6985:
            return self._select_next("GPO answered 6985 (conditions of use not satisfied)")
        if sw == 0x6986:
            return self._see_phone_gpo()
        if not response.ok:
            return self._end(
                OutcomeKind.END_APPLICATION,
                Reasons.READ_ERROR,
                f"GPO answered {response.describe()}",
            )
        template = tlv.decode_one(response.data)
        if template.tag != 0x77:
            # qVSDC answers in Format 2 only (Book C-3 §5.2.2).
            raise _CardFault(
                OutcomeKind.END_APPLICATION,
                Reasons.NOT_SUPPORTED,
                f"GPO response template {tlv.tag_hex(template.tag)}, qVSDC requires '77'",
            )
        self._take_read_data(template, "the GPO response")
        self._card.update(tlv.flatten([template]))
        if len(self._card.get(0x82, b"")) != 2:  # AIP: b2 (Book 3 Annex A)
            raise self._missing("82")
        afl = self._card.get(0x94)
        if afl:
            self._schedule_records(afl)
        return self._read_next_record(_k3_records_read)

    def _k3_after_records(self) -> _Step:
        """Book C-3 §5.4-§5.8: card read complete, restrictions, ODA, CVM, outcome."""
        card = self._card
        self._tsi.set("card_risk_management_performed")
        cid = self._k3_cid()
        kind = CryptogramKind.from_cid(cid)
        if kind is None:
            raise _CardFault(
                OutcomeKind.END_APPLICATION, Reasons.READ_ERROR, f"CID {cid:02X} is RFU"
            )
        for tag, name in ((0x9F26, "9F26"), (0x9F36, "9F36")):
            if tag not in card:
                raise self._missing(name)
        if 0x57 not in card and 0x5A not in card:
            raise self._missing("57")
        self._checked_account()
        # §5.5 processing restrictions: Application Expiration Date against today.
        expired = self._is_expired()
        if expired:
            self._tvr.set("expired_application")
        ctq = card.get(0x9F6C, b"\x00\x00").ljust(2, b"\x00")
        ttq = self._terminal[0x9F66]
        online_capable = self._config.can_go_online and not ttq[0] & 0x08
        if kind is CryptogramKind.AAC:
            self._tvr.set("oda_not_performed")
            reason = Reasons.EXPIRED if expired else Reasons.DECLINED
            return self._end(OutcomeKind.DECLINED, reason, "card returned AAC", kind)
        if kind is CryptogramKind.ARQC:
            if not online_capable:
                # An offline-only reader (Terminal Type x3/x6, TTQ byte 1 b4) cannot send
                # the request the card asks for; C-3 names no outcome for a card that
                # answers an offline-only reader with an ARQC, so it is declined.
                return self._end(
                    OutcomeKind.DECLINED,
                    Reasons.DECLINED,
                    "card returned ARQC, the reader is offline-only",
                    kind,
                )
            # §5.8: an online authorisation; fDDA for online is optional and not performed.
            self._tvr.set("oda_not_performed")
            self._k3_cvm(online=True)
            return self._end(OutcomeKind.ONLINE_REQUEST, "", "card returned ARQC", kind)
        # TC: offline approval needs a valid application and successful fDDA; the
        # Application Expiration Date is then mandatory (Book C-3 §5.5).
        if 0x5F24 not in card:
            raise self._missing("5F24")
        if expired:
            if ctq[0] & 0x08 and online_capable:
                self._k3_cvm(online=True)
                return self._end(
                    OutcomeKind.ONLINE_REQUEST, "", "application expired, CTQ: go online", kind
                )
            return self._end(OutcomeKind.DECLINED, Reasons.EXPIRED, "application expired", kind)
        oda = self._k3_fdda()
        if not oda.ok:
            # §5.8.2: CTQ byte 1 b6 go online / b5 switch interface if ODA fails.
            if ctq[0] & 0x20 and online_capable:
                self._k3_cvm(online=True)
                return self._end(
                    OutcomeKind.ONLINE_REQUEST,
                    "",
                    f"fDDA failed, CTQ: go online: {oda.detail}",
                    kind,
                )
            if ctq[0] & 0x10 and ttq[0] & 0x10:
                return self._end(
                    OutcomeKind.TRY_ANOTHER_INTERFACE,
                    Reasons.OTHER_INTERFACE,
                    f"fDDA failed, CTQ: switch interface: {oda.detail}",
                    kind,
                )
            return self._end(OutcomeKind.DECLINED, Reasons.ODA_FAILED, oda.detail, kind)
        if self._k3_cvm(online=False):
            # Req 5.7.1.2: the card asks for online PIN, which only an online request can carry.
            if online_capable:
                return self._end(
                    OutcomeKind.ONLINE_REQUEST, "", "CTQ: online PIN required, go online", kind
                )
            return self._end(
                OutcomeKind.DECLINED,
                Reasons.CVM_FAILED,
                "CTQ: online PIN required, reader cannot go online",
                kind,
            )
        return self._end(OutcomeKind.APPROVED, "", "offline approval (TC, fDDA successful)", kind)

    def _k3_cid(self) -> int:
        """CID from 9F27, or from the Issuer Application Data (Visa CVR byte 2 b6-b5)."""
        cid = self._card.get(0x9F27)
        if cid is not None:
            if len(cid) != 1:
                raise self._missing("9F27")
            return cid[0]
        iad = self._card.get(0x9F10)
        if iad is None or len(iad) < 5:
            raise self._missing("9F27")
        # Book C-3 Annex A: when 9F27 is absent the card's CVR (IAD byte 5) carries the type.
        return {0x00: 0x00, 0x10: 0x40, 0x20: 0x80}.get(iad[4] & 0x30, 0xC0)

    def _k3_fdda(self) -> OdaResult:
        """Book C-3 §5.8 / Book 2 §6.5: fDDA over UN, amount, currency (and 9F69)."""
        card = self._card
        self._oda_method = OdaMethod.FDDA
        if not card.get(0x82, b"\x00")[0] & 0x20:
            # AIP does not offer (f)DDA: offline approval is impossible.
            result = OdaResult(OdaMethod.NONE, False, None, "card does not support fDDA (AIP)")
            self._oda_method = OdaMethod.NONE
            self._oda_result = result
            self._tvr.set("oda_not_performed")
            return result
        static = (
            build_static_data_from_afl(self._afl, self._oda_records, card) if self._afl else None
        )
        assert self._candidate is not None
        version = self._k3_fdda_version_problem(self._candidate.aid)
        if version is not None:
            # Absent 9F69 is missing ICC data; a 9F69 of another version is an fDDA failure.
            failure = (
                OdaFailure.ICC_DATA_MISSING if 0x9F69 not in card else OdaFailure.SDAD_DYNAMIC_DATA
            )
            result = OdaResult(OdaMethod.FDDA, False, failure, version)
        elif static is not None and not static.ok:
            result = OdaResult(
                OdaMethod.FDDA, False, static.failure or OdaFailure.STATIC_DATA_AFL, static.detail
            )
        else:
            assert self._candidate is not None
            result = perform_fdda(
                card,
                (static.data or b"") if static is not None else b"",
                self._ca_keys,
                self._candidate.adf_name[:5],
                self._today,
                unpredictable_number=self._terminal[0x9F37],
                amount_authorised=self._terminal[0x9F02],
                currency_code=self._terminal[0x5F2A],
                is_revoked=self._revocation_check,
            )
        self._oda_result = result
        self._tsi.set("oda_performed")
        self._tvr.set_all(result.tvr_bits)
        return result

    def _k3_fdda_version_problem(self, aid: AidConfig) -> str | None:
        """C-3 v2.10 §5.8.2 (fDDA): Card Authentication Related Data (9F69) byte 1 is the
        fDDA version; this reader performs version '01'. Legacy version '00' (no 9F69) only
        when the acquirer configured it for the AID."""
        card_auth = self._card.get(0x9F69)
        if card_auth is None:
            if aid.fdda_version_0:
                return None
            return (
                "no Card Authentication Related Data (9F69): legacy fDDA version 00 "
                "is not accepted for this AID"
            )
        if len(card_auth) < 7 or card_auth[0] != 0x01:
            return (
                f"Card Authentication Related Data (9F69) {card_auth.hex().upper()} is not "
                "fDDA version 01"
            )
        return None

    def _k3_cvm(self, *, online: bool) -> bool:
        """Book C-3 v2.10 §5.7.1: the CVM from the CTQ and the reader's TTQ.

        Req 5.7.1.1: with a CTQ the card names the CVM: online PIN (CTQ byte 1 b8) when the
        reader supports it (TTQ byte 1 b3), else consumer device CVM performed (byte 2 b8,
        believed per Req 5.7.1.2), else signature (byte 1 b7) when the reader supports it
        (TTQ byte 1 b2). Req 5.7.1.3: when the reader requires a CVM (TTQ byte 2 b7) and
        none of these applies, the transaction is declined. Without a CTQ the reader's own
        capabilities decide when a CVM is required.

        Returns True when the CVM (online PIN asked for by the card) needs an online
        request although the card did not return an ARQC. The kernel never sets TVR
        "online PIN entered": only a PIN entry device that collected the PIN may.
        """
        ttq = self._terminal[0x9F66]
        raw_ctq = self._card.get(0x9F6C) or None  # an empty CTQ is no CTQ
        ctq = (raw_ctq or b"").ljust(2, b"\x00")
        cvm_required = bool(ttq[1] & 0x40)
        cvm: CvmKind
        if raw_ctq is not None and ctq[0] & 0x80 and ttq[0] & 0x04:
            cvm = CvmKind.ONLINE_PIN
        elif raw_ctq is not None and ctq[1] & 0x80:
            # Req 5.7.1.2: Consumer Device CVM Performed is believed only when the CTQ copy
            # the card signed (Card Authentication Related Data 9F69 bytes 6-7) matches, or,
            # without 9F69, when the card returned an ARQC.
            card_auth = self._card.get(0x9F69)
            if card_auth is not None:
                trusted = card_auth[5:7] == raw_ctq
            else:
                trusted = CryptogramKind.from_cid(self._k3_cid()) is CryptogramKind.ARQC
            if not trusted:
                raise _CardFault(
                    OutcomeKind.DECLINED,
                    Reasons.CVM_FAILED,
                    "CTQ says consumer device CVM performed, not confirmed by a signed CTQ "
                    "(9F69) or an ARQC (Book C-3 Req 5.7.1.2)",
                    tvr_bits=("cardholder_verification_not_successful",),
                )
            cvm = CvmKind.CDCVM
        elif raw_ctq is not None and ctq[0] & 0x40 and ttq[0] & 0x02:
            cvm = CvmKind.SIGNATURE
        elif not cvm_required:
            cvm = CvmKind.NO_CVM
        elif raw_ctq is None and ttq[0] & 0x02:
            cvm = CvmKind.SIGNATURE
        elif raw_ctq is None and ttq[0] & 0x04 and online:
            cvm = CvmKind.ONLINE_PIN
        else:
            card_says = (
                "the card's CTQ names none the reader supports"
                if raw_ctq is not None
                else "the card gave no CTQ and the reader supports none"
            )
            raise _CardFault(
                OutcomeKind.DECLINED,
                Reasons.CVM_FAILED,
                f"the reader requires a CVM; {card_says} (Book C-3 Req 5.7.1.3)",
                tvr_bits=("cardholder_verification_not_successful",),
            )
        self._cvm = cvm
        self._cvm_results = _K3_CVM_RESULTS[cvm]
        self._tsi.set("cardholder_verification_performed")
        return cvm is CvmKind.ONLINE_PIN and not online

    # ------------------------------------------------------------------------------------
    # Kernel 2 (Book C-2, M/Chip)

    def _k2_initiate(self) -> _Step:
        """Book C-2 v2.10 S1.9: Terminal Capabilities (9F33) from Card Data Input Capability
        (DF8117), '00' and Security Capability (DF811F): its CVM byte is set only after
        the CVM Required Limit check (S456.30), so the PDOL data (which CDA signs) carries
        '00' there. Then the PDOL data and GET PROCESSING OPTIONS (§3.2, Book 3 §10.1)."""
        card_input, _, _, security = self._k2_capabilities()
        self._terminal[0x9F33] = bytes([card_input, 0x00, security])
        return self._gpo(_State.K2_GPO)

    def _k2_capabilities(self) -> tuple[int, int, int, int]:
        """DF8117, DF8118, DF8119, DF811F for this AID (C-2 Annex A): as configured, else
        from the terminal's 9F33 (byte 1; byte 2 without "No CVM"; "No CVM" ('08') below
        the CVM Required Limit; byte 3); never online PIN without a PIN entry device."""
        assert self._candidate is not None
        aid = self._candidate.aid
        caps = aid.kernel_data.get(0x9F33) or self._config.data[0x9F33]

        def one(tag: int, derived: int) -> int:
            value = aid.kernel_data.get(tag)
            return value[0] if value is not None else derived

        honest = self._config.honest_capabilities
        cvm_required = honest(bytes([one(0xDF8118, caps[1] & ~0x08 & 0xFF)]))[0]
        no_cvm_required = honest(bytes([one(0xDF8119, 0x08)]))[0]
        return one(0xDF8117, caps[0]), cvm_required, no_cvm_required, one(0xDF811F, caps[2])

    def _k2_kernel_configuration(self) -> int:
        """DF811B for this AID; unconfigured, what this kernel is: only EMV mode
        transactions supported, on-device cardholder verification supported (C-2 Annex A)."""
        assert self._candidate is not None
        value = self._candidate.aid.kernel_data.get(0xDF811B)
        return value[0] if value is not None else KC_ONLY_EMV_MODE | KC_ON_DEVICE_CVM

    def _k2_on_gpo(self, response: ResponseApdu) -> _Step:
        """Book C-2 §3.2: GPO response, Format 1 ('80') or Format 2 ('77')."""
        if response.sw == 0x6986:
            return self._see_phone_gpo()
        if not response.ok:
            # C-2: any other status word -> Select Next.
            return self._select_next(f"GPO answered {response.describe()}")
        template = tlv.decode_one(response.data)
        if template.tag == 0x80:
            if len(template.value) < 2 or (len(template.value) - 2) % 4:
                raise self._missing("94")
            self._card[0x82] = template.value[:2]
            self._card[0x94] = template.value[2:]
            self._read_data.update({0x82: self._card[0x82], 0x94: self._card[0x94]})
        elif template.tag == 0x77:
            self._take_read_data(template, "the GPO response")
            self._card.update(tlv.flatten([template]))
        else:
            raise _CardFault(
                OutcomeKind.END_APPLICATION,
                Reasons.READ_ERROR,
                f"GPO response template {tlv.tag_hex(template.tag)} (Book 3 §6.5.8.4)",
            )
        aip = self._card.get(0x82, b"")
        if len(aip) != 2:
            raise self._missing("82")
        if 0x94 not in self._card:
            raise self._missing("94")
        configuration = self._k2_kernel_configuration()
        if not aip[1] & 0x80:
            # C-2 v2.10 S3.30: the card does not support EMV mode (AIP byte 2 b8). This
            # kernel implements EMV mode only, so as with "Only EMV mode transactions
            # supported": End Application, "insert, swipe or try another card".
            return self._end(
                OutcomeKind.END_APPLICATION,
                Reasons.TRY_ANOTHER_CARD,
                "card supports mag-stripe mode only (AIP byte 2 b8); "
                "this kernel performs EMV mode only",
                message=UiMessage.INSERT_SWIPE_OR_TRY_ANOTHER_CARD,
            )
        # C-2 v2.10 S3.31-S3.32, the Active AFL: a card that also does mag-stripe mode lists
        # its mag-stripe record ('08010100': SFI 1, record 1, not signed) first; a kernel that
        # does both modes leaves it out in EMV mode.
        afl = self._card[0x94]
        if afl[:4] == _MAG_STRIPE_AFL_ENTRY and not configuration & KC_ONLY_EMV_MODE:
            afl = afl[4:]
        # C-2 v2.6+: the relay resistance protocol is not performed (this kernel does not
        # implement it, and DF811B cannot ask for it): TVR byte 5 b2-b1 '01'.
        self._tvr.set("relay_resistance_not_performed")
        if not afl:
            raise self._missing("94")
        self._schedule_records(afl)
        return self._read_next_record(_k2_records_read)

    def _k2_after_records(self) -> _Step:
        """Book C-2 §7: mandatory data, ODA set-up, restrictions, CVM, risk management."""
        card = self._card
        assert self._candidate is not None
        aid = self._candidate.aid
        # Mandatory data (C-2 §4.3 / Book 3 §7.2): PAN, expiry, CDOL1.
        for tag, name in ((0x5A, "5A"), (0x5F24, "5F24"), (0x8C, "8C")):
            if tag not in card:
                raise self._missing(name)
        self._checked_account()
        aip = card[0x82]
        amount = self._request.amount
        # C-2 v2.10 S456.14: the Reader Contactless Transaction Limit is the on-device-CVM
        # one (DF8125) when card (AIP byte 1 b2) and kernel (DF811B b6) both support on-device
        # cardholder verification, else DF8124; above it ("greater than"): Select Next.
        on_device_cvm = bool(aip[0] & 0x02) and bool(
            self._k2_kernel_configuration() & KC_ON_DEVICE_CVM
        )
        limit = aid.contactless_transaction_limit
        if on_device_cvm and aid.cdcvm_transaction_limit is not None:
            limit = aid.cdcvm_transaction_limit
        if limit is not None and amount > limit:
            self._over_limit_seen = True
            return self._select_next(
                f"amount {amount} above the Reader Contactless Transaction Limit {limit} "
                f"({'DF8125, on-device CVM' if on_device_cvm else 'DF8124'}; C-2 S456.14)"
            )
        caps = self._terminal[0x9F33]
        # ODA selection (C-2 §7.3 / Book 3 §10.3): CDA only, when card and terminal support it.
        if aip[0] & 0x01 and caps[2] & 0x08:
            self._oda_method = OdaMethod.CDA
            self._cda_possible = self._k2_cda_precheck()
        else:
            self._tvr.set("oda_not_performed")
        # Processing restrictions (Book 3 §10.4).
        self._tvr.set_all(
            processing_restrictions(
                card,
                self._terminal,
                aid,
                self._today,
                self._request.transaction_type,
                self._request.other_amount,
            )
        )
        # C-2 v2.10 S456.30: above the Reader CVM Required Limit ("greater than")
        # Terminal Capabilities byte 2 is CVM Capability - CVM Required (DF8118), else CVM
        # Capability - No CVM Required (DF8119); CVM selection (§7.5) then uses it.
        _, cvm_required, no_cvm_required, _ = self._k2_capabilities()
        exceeded = aid.cvm_required_limit is not None and amount > aid.cvm_required_limit
        capability = cvm_required if exceeded else no_cvm_required
        self._terminal[0x9F33] = bytes([caps[0], capability, caps[2]])
        terminal_type = self._terminal[0x9F35][0]
        decision = select_cvm(
            CvmInputs(
                aip=aip,
                cvm_list=card.get(0x8E),
                amount=amount,
                other_amount=self._request.other_amount,
                transaction_type=self._request.transaction_type,
                transaction_currency=self._terminal[0x5F2A],
                application_currency=card.get(0x9F42),
                cvm_capability=capability,
                cvm_required_limit_exceeded=exceeded,
                unattended=terminal_type & 0x0F in (0x04, 0x05, 0x06),
                on_device_cvm=on_device_cvm,
            )
        )
        self._cvm = decision.cvm
        self._cvm_results = decision.results
        self._tvr.set_all(decision.tvr_bits)
        if decision.performed:
            self._tsi.set("cardholder_verification_performed")
        # Terminal risk management (Book 3 §10.6): floor limit, random selection, velocity.
        self._tsi.set("terminal_risk_management_performed")
        if amount > aid.floor_limit:
            self._tvr.set("floor_limit_exceeded")
        elif random_selection(amount, aid, self._request.random_selection):
            self._tvr.set("selected_randomly_for_online")
        if 0x9F14 in card and 0x9F23 in card and aip[0] & 0x08:
            return _Send(_State.K2_GET_ATC, get_data(0x9F36))
        return self._k2_action_analysis()

    def _k2_cda_precheck(self) -> bool:
        """Book 3 §10.3 / C-2 §7.3: CDA data and CA key present before GENERATE AC."""
        assert self._candidate is not None
        missing = [f"{t:X}" for t in (0x8F, 0x90, 0x9F32, 0x9F46, 0x9F47) if t not in self._card]
        if missing:
            self._tvr.set("cda_failed", "icc_data_missing")
            self._oda_result = OdaResult(
                OdaMethod.CDA, False, OdaFailure.ICC_DATA_MISSING, "absent: " + ", ".join(missing)
            )
            return False
        index = self._card[0x8F]
        rid = self._candidate.adf_name[:5]
        if len(index) != 1 or self._ca_keys.lookup(rid, index[0], self._today) is None:
            self._tvr.set("cda_failed")
            failure = (
                OdaFailure.CA_KEY_EXPIRED
                if len(index) == 1 and self._ca_keys.get(rid, index[0]) is not None
                else OdaFailure.CA_KEY_MISSING
            )
            self._oda_result = OdaResult(
                OdaMethod.CDA, False, failure, f"no usable CA key {index.hex().upper()}"
            )
            return False
        return True

    def _k2_on_atc(self, response: ResponseApdu) -> _Step:
        """Book 3 §10.6.3: GET DATA ATC (9F36)."""
        self._atc = self._get_data_value(response, 0x9F36)
        return _Send(_State.K2_GET_LAST_ONLINE, get_data(0x9F13))

    def _k2_on_last_online_atc(self, response: ResponseApdu) -> _Step:
        """Book 3 §10.6.3: GET DATA Last Online ATC Register (9F13), then velocity checks."""
        self._last_online_atc = self._get_data_value(response, 0x9F13)
        self._tvr.set_all(
            velocity_checking(
                self._atc, self._last_online_atc, self._card.get(0x9F14), self._card.get(0x9F23)
            )
        )
        return self._k2_action_analysis()

    @staticmethod
    def _get_data_value(response: ResponseApdu, tag: int) -> bytes | None:
        if not response.ok:
            return None  # §10.6.3: not returned -> both velocity bits are set
        try:
            obj = tlv.decode_one(response.data, tag)
        except tlv.TlvError:
            return None
        return obj.value

    def _k2_action_analysis(self) -> _Step:
        """Book 3 §10.7 terminal action analysis, then the first GENERATE AC (§9.3)."""
        assert self._candidate is not None
        index = self._aids.index(self._candidate.aid)
        requested = terminal_action_analysis(
            self._tvr.value,
            self._candidate.aid,
            self._card,
            online_capable=self._config.can_go_online,
            online_only=self._config.online_only,
            online_cryptogram_required=self._indicators[index].zero_amount
            and self._config.can_go_online,
        )
        self._requested = requested
        # Book 2 v4.4 §6.6.1: CDA is requested for TC and ARQC; for an AAC only when the
        # card says it signs one (C-2 v2.10 Annex A: Application Capabilities Information
        # 9F5D byte 2 b1 "CDA supported over TC, ARQC and AAC").
        self._cda_requested = self._cda_possible and (
            requested is not CryptogramType.AAC or self._k2_cda_over_aac()
        )
        self._cdol1_data = build_dol(parse_dol(self._card[0x8C]), self._dol_values())
        self._tvr_given = self._tvr_in(self._card[0x8C])
        return _Send(
            _State.K2_GENERATE_AC,
            generate_ac(requested, self._cdol1_data, cda_requested=self._cda_requested),
        )

    def _k2_cda_over_aac(self) -> bool:
        aci = self._card.get(0x9F5D, b"")
        return len(aci) >= 2 and bool(aci[1] & 0x01)

    def _k2_on_generate_ac(self, response: ResponseApdu) -> _Step:
        """Book 3 §9.3 / §6.5.5.4 the card's decision; Book 2 §6.6.2 CDA verification."""
        if not response.ok:
            raise _CardFault(
                OutcomeKind.END_APPLICATION,
                Reasons.READ_ERROR,
                f"GENERATE AC answered {response.describe()}",
            )
        self._tsi.set("card_risk_management_performed")
        template = tlv.decode_one(response.data)
        if template.tag == 0x80:
            value = template.value
            if len(value) < 11:
                raise self._missing("9F26")
            self._card.update({0x9F27: value[:1], 0x9F36: value[1:3], 0x9F26: value[3:11]})
            if len(value) > 11:
                self._card[0x9F10] = value[11:]
        elif template.tag == 0x77:
            for tag, item in tlv.flatten([template]).items():
                # The answer's own objects replace what was there; anything else it gives
                # must match what the card already said: the account data the kernel
                # checked before GENERATE AC is the account data that leaves it.
                known = self._card.get(tag)
                if tag not in _GENERATE_AC_OBJECTS and known and known != item:
                    raise _redundant("GENERATE AC", tag)
                self._card[tag] = item
        else:
            raise _CardFault(
                OutcomeKind.END_APPLICATION,
                Reasons.READ_ERROR,
                f"GENERATE AC response template {tlv.tag_hex(template.tag)}",
            )
        cid = self._card.get(0x9F27, b"")
        if len(cid) != 1 or 0x9F36 not in self._card:
            raise self._missing("9F27" if len(cid) != 1 else "9F36")
        kind = CryptogramKind.from_cid(cid[0])
        assert self._requested is not None
        requested = _REQUESTED_KIND[self._requested]
        if kind is None or _CRYPTOGRAM_RANK[kind] > _CRYPTOGRAM_RANK[requested]:
            # Book 3 §9.3: the card may not answer with more than the terminal asked for.
            raise _CardFault(
                OutcomeKind.END_APPLICATION,
                Reasons.READ_ERROR,
                f"card answered CID {cid[0]:02X} to a request for {requested}",
            )
        signed = kind is not CryptogramKind.AAC or self._k2_cda_over_aac()
        if self._cda_requested and signed:
            result = self._k2_verify_cda(response.data)
            if not result.ok:
                # C-2 v2.10 S910: a missing or failed SDAD when CDA was requested ends the
                # application (the card is not to be trusted with another tap either).
                return self._end(
                    OutcomeKind.END_APPLICATION,
                    Reasons.TRY_ANOTHER_CARD,
                    f"combined data authentication failed: {result.detail}",
                    kind,
                    message=UiMessage.INSERT_SWIPE_OR_TRY_ANOTHER_CARD,
                )
        elif 0x9F26 not in self._card:
            raise self._missing("9F26")
        if kind is CryptogramKind.TC:
            return self._end(OutcomeKind.APPROVED, "", "card returned TC", kind)
        if kind is CryptogramKind.ARQC:
            return self._end(OutcomeKind.ONLINE_REQUEST, "", "card returned ARQC", kind)
        return self._k2_declined(kind)

    def _k2_declined(self, kind: CryptogramKind) -> Outcome:
        """C-2 v2.10 S910 for an AAC: a phone that asks its holder to look at it (POS
        Cardholder Interaction Information DF4B) gets End Application with Start B and the
        Phone Message Table's message; a card (not a mobile device) on a terminal that
        has a contact interface gets Try Another Interface; anything else is Declined."""
        pcii = self._card.get(0xDF4B)
        if pcii is not None and len(pcii) == 3 and int.from_bytes(pcii, "big") & 0x00030F:
            assert self._candidate is not None
            table = self._candidate.aid.kernel_data.get(0xDF8131, DEFAULT_PHONE_MESSAGE_TABLE)
            entry = next((e for e in parse_phone_message_table(table) if e.matches(pcii)), None)
            known = {int(m) for m in UiMessage}
            # An identifier this terminal has no text for stays "see phone".
            message = UiMessage.SEE_PHONE
            if entry is not None and entry.message in known:
                message = UiMessage(entry.message)
            return self._end(
                OutcomeKind.END_APPLICATION,
                Reasons.SEE_PHONE if message is UiMessage.SEE_PHONE else Reasons.DECLINED,
                f"card returned AAC with POS Cardholder Interaction Information "
                f"{pcii.hex().upper()}: the phone asks its holder, then a second tap",
                kind,
                start=Start.B,
                message=message,
            )
        contact = bool(self._terminal[0x9F33][0] & 0x20)
        if contact and not self._k2_mobile_device():
            return self._end(
                OutcomeKind.TRY_ANOTHER_INTERFACE,
                Reasons.OTHER_INTERFACE,
                "card returned AAC; the terminal has a contact interface",
                kind,
                message=UiMessage.PLEASE_INSERT_CARD,
            )
        return self._end(
            OutcomeKind.DECLINED,
            self._k2_decline_reason(),
            "card returned AAC",
            kind,
            message=UiMessage.NOT_AUTHORISED,
        )

    def _k2_mobile_device(self) -> bool:
        """A phone or wearable rather than a card: its Third Party Data (9F6E) names a
        Device Type (bytes 5-6 when Unique Identifier byte 1 b8 is 0) other than '30 30'
        (card) (C-2 v2.10 S910, Annex A)."""
        third_party = self._card.get(0x9F6E, b"")
        if len(third_party) >= 6 and not third_party[2] & 0x80:
            return third_party[4:6] != b"00"
        return False

    def _k2_verify_cda(self, genac_response: bytes) -> OdaResult:
        """Book 2 §6.6.2: recover the ICC key and check the signed GENERATE AC response."""
        assert self._candidate is not None
        static = build_static_data_from_afl(self._afl, self._oda_records, self._card)
        if not static.ok or static.data is None:
            result = OdaResult(
                OdaMethod.CDA, False, static.failure or OdaFailure.STATIC_DATA_AFL, static.detail
            )
        elif 0x9F4B not in self._card:
            result = OdaResult(
                OdaMethod.CDA, False, OdaFailure.ICC_DATA_MISSING, "CDA requested, no SDAD (9F4B)"
            )
        else:
            result = perform_cda(
                self._card,
                static.data,
                self._ca_keys,
                self._candidate.adf_name[:5],
                self._today,
                genac_response=genac_response,
                unpredictable_number=self._terminal[0x9F37],
                pdol_data=self._pdol_data,
                cdol1_data=self._cdol1_data,
                is_revoked=self._revocation_check,
            )
        self._oda_result = result
        self._tsi.set("oda_performed")
        self._tvr.set_all(result.tvr_bits)
        if result.ok and result.application_cryptogram is not None:
            self._card[0x9F26] = result.application_cryptogram
        return result

    def _k2_decline_reason(self) -> str:
        tvr = self._tvr
        if tvr.is_set("expired_application"):
            return Reasons.EXPIRED
        if tvr.is_set("application_not_yet_effective"):
            return Reasons.NOT_YET_EFFECTIVE
        if tvr.is_set("service_not_allowed"):
            return Reasons.SERVICE_NOT_ALLOWED
        if tvr.is_set("cda_failed"):
            return Reasons.ODA_FAILED
        if tvr.is_set("cardholder_verification_not_successful"):
            return Reasons.CVM_FAILED
        return Reasons.DECLINED

    # ------------------------------------------------------------------------------------
    # Shared helpers

    def _is_expired(self) -> bool:
        expiry = bcd_date(self._card.get(0x5F24))
        if expiry is None:
            account = self._account()
            yymm = account.expiry if account is not None else None
            if yymm is None:
                return False
            year, month = 2000 + int(yymm[:2]), int(yymm[2:])
            if not 1 <= month <= 12:
                return False
            # Track 2 expiry (YYMM) is valid to the end of the month.
            return (self._today.year, self._today.month) > (year, month)
        return self._today > expiry

    def _missing(self, tag: str) -> _CardFault:
        return _CardFault(
            OutcomeKind.END_APPLICATION,
            Reasons.DATA_MISSING,
            f"mandatory data object {tag} missing or malformed",
            tvr_bits=("icc_data_missing",),
        )

    def _checked_account(self) -> CardAccount:
        """The card's PAN, expiry and PAN sequence number by the one reader the checkout also
        uses (emv.carddata): missing, malformed or contradicting account data ends the
        application (only missing data sets TVR 'ICC data missing')."""
        try:
            return read_account(self._card)
        except CardAccountError as exc:
            if exc.missing:
                raise _CardFault(
                    OutcomeKind.END_APPLICATION,
                    Reasons.DATA_MISSING,
                    str(exc),
                    tvr_bits=("icc_data_missing",),
                ) from exc
            raise _CardFault(OutcomeKind.END_APPLICATION, Reasons.READ_ERROR, str(exc)) from exc

    def _account(self) -> CardAccount | None:
        try:
            return read_account(self._card)
        except CardAccountError:
            return None  # an outcome before (or instead of) the card data checks

    def _end(
        self,
        kind: OutcomeKind,
        reason: str,
        detail: str,
        cryptogram: CryptogramKind | None = None,
        *,
        start: Start | None = None,
        message: UiMessage | None = None,
    ) -> Outcome:
        """The Outcome, filled from everything the kernel knows at this point."""
        candidate = self._candidate
        oda = self._oda_result
        if oda is None:
            status = OdaStatus.NOT_PERFORMED
        else:
            status = OdaStatus.SUCCESSFUL if oda.ok else OdaStatus.FAILED
        if oda is not None and oda.method is OdaMethod.NONE:
            status = OdaStatus.NOT_PERFORMED
        card_data: CardData = CardData()
        if kind in (OutcomeKind.APPROVED, OutcomeKind.DECLINED, OutcomeKind.ONLINE_REQUEST):
            values = {**self._card, **self._terminal}
            # The TVR the card computed its cryptogram over, when a DOL gave it one.
            values[0x95] = self._tvr.value if self._tvr_given is None else self._tvr_given
            values[0x9B] = self._tsi.value
            if self._cvm_results is not None:
                values[0x9F34] = self._cvm_results
            card_data = CardData({tag: values[tag] for tag in _ONLINE_TAGS if tag in values})
        account = self._account()
        label = ""
        if candidate is not None:
            raw_label = self._card.get(0x50)
            label = raw_label.decode("latin-1") if raw_label else candidate.label
        return Outcome(
            kind=kind,
            reason=reason,
            cryptogram=cryptogram,
            kernel_id=candidate.kernel_id if candidate is not None else None,
            aid=candidate.adf_name if candidate is not None else None,
            label=label,
            masked_pan=mask_pan(account.pan if account is not None else None),
            expiry=account.expiry if account is not None else None,
            oda_method=self._oda_method if oda is not None else OdaMethod.NONE,
            oda_status=status,
            oda_failure=oda.failure if oda is not None and not oda.ok else None,
            cvm=self._cvm,
            tvr=self._tvr.value,
            tsi=self._tsi.value,
            apdu_count=self._apdus,
            detail=detail,
            card_data=card_data,
            start=start,
            message=message,
        )


def _k3_records_read(tx: ContactlessTransaction) -> _Step:
    return tx._k3_after_records()


def _k2_records_read(tx: ContactlessTransaction) -> _Step:
    return tx._k2_after_records()


#: The state table: which handler reads the response to the command sent in each state.
_HANDLERS: Final[Mapping[_State, Callable[[ContactlessTransaction, ResponseApdu], _Step]]] = {
    _State.SELECT_PPSE: ContactlessTransaction._on_ppse_selected,
    _State.FINAL_SELECTION: ContactlessTransaction._on_application_selected,
    _State.K3_GPO: ContactlessTransaction._k3_on_gpo,
    _State.K2_GPO: ContactlessTransaction._k2_on_gpo,
    _State.READ_RECORD: ContactlessTransaction._on_record,
    _State.K2_GET_ATC: ContactlessTransaction._k2_on_atc,
    _State.K2_GET_LAST_ONLINE: ContactlessTransaction._k2_on_last_online_atc,
    _State.K2_GENERATE_AC: ContactlessTransaction._k2_on_generate_ac,
}
