"""The messages of the ISO 8583 link, field by field (docs/iso8583.md, "Messages"), and the
checks every answer must pass before it is believed.

Each builder returns a :class:`Request`: the message type and its fields as the codec takes
them (terminal.acquirer.iso8583.codec), nothing sent. What the terminal knows (its ids, the
STAN, the clock) is given, so the same inputs always give the same bytes: the known-answer
tests write the expected messages out by hand.

ISO 8583:1987 references: the message classes (§4.1: 01xx authorisation, 02xx financial,
03xx file action, 04xx reversal, 05xx reconciliation, 08xx network management), the answer
to a message being its type with the function digit + 1 (§4.1.3: 0200 -> 0210), field 3's
transaction type digits (00 goods and services, 02 adjustment, 20 returns), field 90's
original data elements (§4.3, n42) and the reconciliation totals (fields 74-97).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from emv import tlv

from .codec import FieldValue, Iso8583Error, Message, MessageFormatError

__all__ = [
    "APPROVED_CODES",
    "AnswerMismatchError",
    "CardData",
    "EntryMode",
    "NetworkAction",
    "OriginalMessage",
    "ReconciliationTotals",
    "Request",
    "Station",
    "answer_mti",
    "answer_mtis",
    "batch_upload",
    "check_answer",
    "echo_test",
    "financial_request",
    "icc_data",
    "key_exchange",
    "reconciliation",
    "reversal",
    "sign_on",
]

EntryMode = Literal["contactless", "contactless_magstripe", "qr"]
#: Field 22, positions 1-2 (PAN entry mode): 07 contactless chip, 91 contactless magnetic
#: stripe data, 03 bar code (a scanned code).
_PAN_ENTRY: Final[Mapping[EntryMode, str]] = {
    "contactless": "07",
    "contactless_magstripe": "91",
    "qr": "03",
}
#: Field 3, positions 1-2, by the kind of financial message.
_PROCESSING: Final = {"purchase": "00", "refund": "20", "void": "02", "preauth": "00"}
#: Field 70, network management information codes.
NetworkAction = Literal["sign_on", "echo_test", "key_exchange"]
_NETWORK_CODE: Final[Mapping[NetworkAction, str]] = {
    "sign_on": "001",
    "echo_test": "301",
    "key_exchange": "161",
}
#: Field 39 codes that approve (00 approved, 08 honour with identification, 11 approved
#: VIP). Not 10, approved for a partial amount: the terminal does not take partial
#: approvals, so a 10 is a decline of the amount asked for (and a 0210 whose amount differs
#: from the request's is not its answer: check_answer).
APPROVED_CODES: Final = frozenset({"00", "08", "11"})
#: EMV data objects that never go in field 55: the PAN and track 2 travel in fields 2/35
#: (one of them, never both), the cardholder name nowhere.
_NOT_IN_ICC_DATA: Final = frozenset({0x5A, 0x57, 0x5F20, 0x9F1F, 0x56, 0x9F6B})


class AnswerMismatchError(Iso8583Error):
    """An answer that is not the answer to the request sent (another type, STAN or
    terminal): never acted on, treated as lost."""


@dataclass(frozen=True, slots=True)
class Station:
    """Who the terminal is on the link, as the acquirer enrolled it."""

    terminal_id: str  # field 41, 8 characters
    merchant_id: str  # field 42, 15 characters
    acquirer_id: str = "0"  # field 32, up to 11 digits
    nii: str = "000"  # field 24

    def __post_init__(self) -> None:
        # A longer id cut to fit would name another terminal or merchant at the host.
        _fixed(self.terminal_id, 8, "the terminal id (field 41)", " ")
        _fixed(self.merchant_id, 15, "the merchant id (field 42)", " ")

    def identify(self) -> dict[str, FieldValue]:
        # Checked to fit when the Station was made.
        return {"41": self.terminal_id.ljust(8), "42": self.merchant_id.ljust(15)}


def _fixed(value: str, width: int, what: str, pad: str, *, right: bool = False) -> str:
    """`value` padded to a fixed field's `width`; MessageFormatError when it is longer
    (never cut: a cut id or reference names something else)."""
    if not value.strip() or len(value) > width or not value.isprintable():
        raise MessageFormatError(f"{what} is 1 to {width} printable characters, not {value[:40]!r}")
    return value.rjust(width, pad) if right else value.ljust(width, pad)


@dataclass(frozen=True, slots=True)
class CardData:
    """The card as a financial message carries it: the PAN with its expiry, or the track 2
    equivalent data (then no PAN and no expiry: never both)."""

    pan: str = ""
    expiry_yymm: str = ""
    track2: str = ""
    pan_sequence: int | None = None
    entry_mode: EntryMode = "contactless"
    #: Whether the terminal can take a PIN (field 22, position 3: 1 can, 2 cannot).
    pin_capable: bool = False

    def fields(self) -> dict[str, FieldValue]:
        out: dict[str, FieldValue] = {}
        if self.track2:
            out["35"] = self.track2.upper().replace("=", "D").rstrip("F")
        elif self.pan:
            out["2"] = self.pan
            if self.expiry_yymm:
                out["14"] = self.expiry_yymm
        out["22"] = _PAN_ENTRY[self.entry_mode] + ("1" if self.pin_capable else "2")
        if self.pan_sequence is not None:
            out["23"] = f"{self.pan_sequence:03d}"
        return out


@dataclass(frozen=True, slots=True)
class OriginalMessage:
    """What field 90 says of the message a reversal or a void refers to."""

    mti: str
    stan: str
    transmitted_at: datetime
    fields: Mapping[str, FieldValue]


@dataclass(frozen=True, slots=True)
class ReconciliationTotals:
    """The batch's totals as the terminal counts them: debits are sales (the cardholder
    is debited), credits refunds; amounts in minor units."""

    debits_count: int
    debits_amount: int
    credits_count: int
    credits_amount: int
    debit_reversals_count: int = 0
    debit_reversals_amount: int = 0
    credit_reversals_count: int = 0
    credit_reversals_amount: int = 0

    @property
    def net(self) -> int:
        return (self.debits_amount - self.debit_reversals_amount) - (
            self.credits_amount - self.credit_reversals_amount
        )


@dataclass(frozen=True, slots=True)
class Request:
    mti: str
    fields: Mapping[str, FieldValue]

    @property
    def stan(self) -> str:
        value = self.fields.get("11", "")
        return value if isinstance(value, str) else ""


def _transmitted(now: datetime) -> str:
    """Field 7: the transmission date and time, MMDDhhmmss in UTC."""
    if now.tzinfo is None:
        raise MessageFormatError("the clock must give an aware datetime")
    return now.astimezone(UTC).strftime("%m%d%H%M%S")


def _times(now: datetime) -> dict[str, FieldValue]:
    """Fields 7 (transmission, UTC) and 12/13 (ISO 8583:1987: the local transaction time
    and date, in `now`'s own zone: the link's clock gives the terminal's local time)."""
    return {
        "7": _transmitted(now),
        "12": now.strftime("%H%M%S"),
        "13": now.strftime("%m%d"),
    }


def _stan(stan: int) -> str:
    if not 1 <= stan <= 999999:
        raise MessageFormatError(f"a STAN is 1 to 999999, not {stan}")
    return f"{stan:06d}"


def icc_data(emv: Mapping[str, bytes]) -> bytes:
    """Field 55: the kernel's online data (tag hex -> value) as BER-TLV, in the order given,
    without the objects that never go there (PAN, track 2, cardholder name)."""
    objects = []
    for tag_text, value in emv.items():
        tag = int(tag_text, 16)
        if tag in _NOT_IN_ICC_DATA:
            continue
        if tlv.tag_is_constructed(tag):
            raise MessageFormatError(
                f"field 55 holds primitive data objects, not template {tag_text}"
            )
        objects.append(tlv.Tlv.primitive(tag, value))
    return tlv.encode(objects)


def financial_request(
    kind: Literal["purchase", "refund", "void", "preauth"],
    *,
    station: Station,
    stan: int,
    now: datetime,
    amount: int,
    currency: int,
    card: CardData | None,
    emv: Mapping[str, bytes] | None = None,
    pin_block: bytes | None = None,
    original_rrn: str = "",
    original_auth_code: str = "",
    offline_advice: bool = False,
    pos_condition: str = "00",
    terminal_reference: str = "",
) -> Request:
    """0200 (purchase 00, refund 20, void 02), 0100 (pre-authorisation 00) or, with
    `offline_advice`, the 0220 advice of a payment the card approved offline (TC).

    `pos_condition` (field 25): 00 normal; 06 pre-authorisation request, the condition of an
    incremental authorisation (0100 with the hold's RRN in field 37) and of a completion
    (0220 with it). `terminal_reference` (field 62): the terminal's own reference of the
    payment (the offline queue's id of an advice, so the host knows a payment sent again)."""
    if not 0 < amount < 10**12:
        raise MessageFormatError(f"an amount is 1 to 999999999999 minor units, not {amount}")
    mti = "0100" if kind == "preauth" else ("0220" if offline_advice else "0200")
    fields: dict[str, FieldValue] = {
        "3": _PROCESSING[kind] + "0000",
        "4": f"{amount:012d}",
        "11": _stan(stan),
        **_times(now),
        "24": station.nii,
        "25": pos_condition,
        "49": f"{currency:03d}",
        **station.identify(),
    }
    if card is not None:
        fields |= card.fields()
    if original_rrn:
        fields["37"] = _fixed(original_rrn, 12, "the original's RRN (field 37)", "0", right=True)
    if original_auth_code:
        fields["38"] = _fixed(original_auth_code, 6, "the original's auth code (field 38)", " ")
    if pin_block is not None:
        if len(pin_block) != 8:
            raise MessageFormatError("a PIN block (field 52) is 8 bytes")
        fields["52"] = pin_block
    if emv:
        fields["55"] = icc_data(emv)
    if terminal_reference:
        fields["62"] = terminal_reference
    return Request(mti, fields)


def _original_data(original: OriginalMessage, station: Station) -> str:
    """Field 90, n42: original MTI, STAN, transmission date and time, acquiring institution
    id (11, zero-filled on the left) and forwarding institution id (11, zeros: none)."""
    sent = _transmitted(original.transmitted_at)
    return f"{original.mti}{original.stan}{sent}{station.acquirer_id.rjust(11, '0')}{'0' * 11}"


def reversal(
    original: OriginalMessage, *, station: Station, stan: int, now: datetime, mti: str = "0400"
) -> Request:
    """0400 (request) or 0420 (advice) undoing `original`: its amount, card and
    identification again, a STAN of its own, and field 90 naming the original."""
    if mti not in ("0400", "0420"):
        raise MessageFormatError("a reversal is 0400 or 0420")
    kept = {k: v for k, v in original.fields.items() if k in ("2", "3", "4", "14", "22", "23")}
    kept |= {k: v for k, v in original.fields.items() if k in ("35", "49", "55")}
    fields: dict[str, FieldValue] = {
        **kept,
        "11": _stan(stan),
        **_times(now),
        # The original's POS condition code (06 for a hold's follow-up): a reversal
        # describes the message it undoes.
        "25": original.fields.get("25", "00"),
        **station.identify(),
        "90": _original_data(original, station),
    }
    return Request(mti, fields)


def batch_upload(
    original: OriginalMessage,
    *,
    station: Station,
    stan: int,
    now: datetime,
    rrn: str,
    auth_code: str = "",
) -> Request:
    """0320: one transaction of the batch, sent after the host answered the 0500 with 95
    (out of balance): its card (the PAN, or the track 2 equivalent it was sent with, its
    expiry and sequence number), processing code, amount, POS entry mode, its RRN and
    authorisation code, a STAN of its own, and field 90 naming the message that booked it."""
    fields: dict[str, FieldValue] = {
        k: v
        for k, v in original.fields.items()
        if k in ("2", "3", "4", "14", "22", "23", "35", "49")
    }
    fields |= {"11": _stan(stan), **_times(now), "24": station.nii, **station.identify()}
    fields["37"] = _fixed(rrn, 12, "the RRN (field 37)", "0", right=True)
    if auth_code:
        fields["38"] = _fixed(auth_code, 6, "the auth code (field 38)", " ")
    fields["90"] = _original_data(original, station)
    return Request("0320", fields)


def _network(action: NetworkAction, station: Station, stan: int, now: datetime) -> Request:
    fields: dict[str, FieldValue] = {
        "7": _transmitted(now),
        "11": _stan(stan),
        "24": station.nii,
        **station.identify(),
        "70": _NETWORK_CODE[action],
    }
    return Request("0800", fields)


def sign_on(*, station: Station, stan: int, now: datetime) -> Request:
    return _network("sign_on", station, stan, now)


def echo_test(*, station: Station, stan: int, now: datetime) -> Request:
    """The keep-alive on an idle link."""
    return _network("echo_test", station, stan, now)


def key_exchange(*, station: Station, stan: int, now: datetime) -> Request:
    """Asks for new session keys; the 0810 carries them in field 63 as TR-31 key blocks
    under the terminal master key."""
    return _network("key_exchange", station, stan, now)


def reconciliation(
    totals: ReconciliationTotals,
    *,
    station: Station,
    stan: int,
    now: datetime,
    batch_number: int,
    currency: int,
    after_upload: bool = False,
) -> Request:
    """0500 with the batch's totals (fields 74-97); processing code 920000, or 960000 for
    the second 0500 after a batch upload (the host answered 95, out of balance)."""
    net = totals.net
    fields: dict[str, FieldValue] = {
        "3": "960000" if after_upload else "920000",
        "11": _stan(stan),
        **_times(now),
        "24": station.nii,
        "49": f"{currency:03d}",
        **station.identify(),
        "60": f"{batch_number:06d}",
        "74": f"{totals.credits_count:010d}",
        "75": f"{totals.credit_reversals_count:010d}",
        "76": f"{totals.debits_count:010d}",
        "77": f"{totals.debit_reversals_count:010d}",
        "86": f"{totals.credits_amount:016d}",
        "87": f"{totals.credit_reversals_amount:016d}",
        "88": f"{totals.debits_amount:016d}",
        "89": f"{totals.debit_reversals_amount:016d}",
        # x+n16: the default profile writes C when the net is owed to the merchant (sales
        # over refunds), D when the merchant owes it; acquirers' profiles say which way.
        "97": ("C" if net >= 0 else "D") + f"{abs(net):016d}",
    }
    return Request("0500", fields)


def answer_mti(request_mti: str) -> str:
    """The answer's message type (ISO 8583:1987 §4.1.3): the function digit + 1."""
    if len(request_mti) != 4 or not request_mti.isdigit() or int(request_mti[2]) % 2:
        raise MessageFormatError(f"{request_mti!r} is not a request's message type")
    return request_mti[:2] + str(int(request_mti[2]) + 1) + request_mti[3]


def answer_mtis(request_mti: str) -> frozenset[str]:
    """The message types an answer to `request_mti` may have: :func:`answer_mti`, and for a
    repeat (origin digit 1: 0201, 0401) the original's answer type too (0210, 0410), which
    is what a host that answers a repeat with its stored answer sends."""
    expected = answer_mti(request_mti)
    if request_mti[3] == "1":
        return frozenset({expected, expected[:3] + "0"})
    return frozenset({expected})


def check_answer(request: Request, answer: Message) -> str:
    """The answer's response code (field 39), once the answer is shown to be the one to
    `request`: its type, STAN and terminal id. AnswerMismatchError otherwise."""
    expected = answer_mti(request.mti)
    if answer.mti not in answer_mtis(request.mti):
        raise AnswerMismatchError(f"the answer to {request.mti} is {expected}, not {answer.mti}")
    # The STAN and terminal say whose answer it is; the amount and currency, when the answer
    # carries them, that it approves what was asked (never another amount).
    for field, what in (("11", "STAN"), ("41", "terminal id"), ("4", "amount"), ("49", "currency")):
        if field in ("4", "49") and (not answer.get(field) or field not in request.fields):
            continue
        if answer.get(field) != request.fields.get(field):
            raise AnswerMismatchError(
                f"the {expected} carries another {what} ({answer.get(field)!r}) than the "
                f"{request.mti} sent"
            )
    code = answer.get("39")
    if len(code) != 2:
        raise AnswerMismatchError(f"the {expected} carries no response code (field 39)")
    return code
