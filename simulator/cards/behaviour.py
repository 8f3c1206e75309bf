"""Behaviours a virtual card can be told to show (issue 3, "Behaviours selectable per card").

A :class:`Behaviour` is built from the profile's ``"behaviour"`` object, then overridden by the
keyword arguments of :func:`simulator.cards.load_card`. Keyword names (all optional):

``approve_offline``  card risk management always answers TC when the terminal asks for one
                     (qVSDC: unless the reader demands an online cryptogram, TTQ byte 2 b8).
``request_online``   the card always answers ARQC (or AAC when the terminal asks for AAC).
``decline``          the card always answers AAC.
                     (at most one of the three; none means the card's limits decide)
``cdcvm_performed``  the cardholder was verified on the device: qVSDC sets CTQ byte 2 b8
                     "Consumer Device CVM Performed" (EMV Book C-3, Table A.2);
                     M/Chip sets AIP byte 1 b2 "On device cardholder verification supported"
                     (EMV Book C-2, Table A.5).
``expired``          Application Expiration Date (5F24, and track 2) one month in the past
                     (the ICC certificate is signed over it, so ODA still verifies).
``blocked_application``
                     every application is blocked: SELECT answers its FCI with '6283'
                     (EMV Book 1 §12.4, "selected file invalidated") or, with
                     ``blocked_at="gpo"``, GPO answers '6985' (conditions of use not satisfied).
``corrupt``          one :class:`Corruption` (also accepted as ``wrong_data=``).
``removed_after_n_commands``
                     after N answered commands the card leaves the field: the next
                     ``transceive`` raises :class:`VirtualCardRemovedError` and ``removed`` is True.
``slow``             seconds of delay per command, passed to the injected ``sleep`` callable.
``hang_on``          the card never answers one command: ``select``, ``gpo``, ``read_record``,
                     ``generate_ac``, ``internal_authenticate``, ``get_data`` or ``any`` (the
                     first command of all). The card stays silent until it leaves the field
                     (``remove()``: a bridge or reader taking it away), then raises
                     :class:`VirtualCardRemovedError`; a wedged card in front of the terminal.
``more_data_forever``
                     a T=0 transport fault: every command is answered '61 10' ("16 more
                     bytes": ISO/IEC 7816-4 §5.1.3) and every GET RESPONSE with 16 bytes and
                     '61 10' again, forever.
``wrong_length_forever``
                     a T=0 transport fault: every command is answered '6C xx' ("wrong Le, use
                     xx": ISO/IEC 7816-3 §10.3.3) with an xx one above the Le it was sent,
                     so no resend is ever right.
``see_phone``        a phone that asks for its own cardholder verification on the first tap
                     (EMV Contactless Book B v2.10 §3.5, Start B; Book A §9.4 "See Phone"):
                     M/Chip answers its first GENERATE AC with an AAC carrying POS Cardholder
                     Interaction Information DF4B = '000100' (Book C-2 Annex A: the phone
                     wants verification on the device; always a format 2 '77' response, which
                     can carry it); qVSDC answers GPO with '6986' (Book C-3: "see phone").
                     Once the card has left the field and been presented again
                     (``remove()`` then ``insert()``) it is a verified phone: as
                     ``cdcvm_performed`` (CTQ byte 2 b8; M/Chip's AIP byte 1 b2, set on
                     every tap since a phone supports on-device verification). Presented
                     again without leaving the field, it asks again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Final

from .errors import BehaviourError


class Decision(StrEnum):
    """Who decides the cryptogram type: the card's own limits, or a fixed answer."""

    AUTO = "auto"
    APPROVE_OFFLINE = "approve_offline"
    REQUEST_ONLINE = "request_online"
    DECLINE = "decline"


class Corruption(StrEnum):
    """Kinds of wrong data a card can be told to return."""

    #: One byte flipped in the Issuer Public Key Certificate (90): recovery fails.
    ISSUER_CERTIFICATE = "issuer_certificate"
    #: One byte flipped in the ICC Public Key Certificate (9F46): recovery fails.
    ICC_CERTIFICATE = "icc_certificate"
    #: A signed record changed after personalisation (5F25 effective date one day earlier):
    #: the ICC certificate (or SSAD) hash over the static data no longer matches.
    STATIC_DATA = "static_data"
    #: One byte flipped in every Signed Dynamic Application Data (9F4B) the card returns.
    SDAD = "sdad"
    #: The application cryptogram is wrong (one byte flipped before any CDA signature):
    #: ODA still passes, the issuer's ARQC verification fails.
    CRYPTOGRAM = "cryptogram"
    #: The first AFL record is malformed BER-TLV (its last object claims one byte too many).
    RECORD_TLV = "record_tlv"
    #: The mandatory Application Expiration Date (5F24) is left out of the records.
    MISSING_DATA = "missing_data"
    #: GET PROCESSING OPTIONS answers '6F00' (no precise diagnosis).
    UNEXPECTED_STATUS = "unexpected_status"


#: The commands ``hang_on`` can name, by instruction byte (EMV Book 3 §6.5); ``any`` is None.
HANG_COMMANDS: Final[Mapping[str, int | None]] = {
    "select": 0xA4,
    "gpo": 0xA8,
    "read_record": 0xB2,
    "generate_ac": 0xAE,
    "internal_authenticate": 0x88,
    "get_data": 0xCA,
    "any": None,
}

#: What ``more_data_forever`` announces and hands out per GET RESPONSE (ISO/IEC 7816-4).
_MORE_DATA: Final = 0x10
_GET_RESPONSE_INS: Final = 0xC0


@dataclass(frozen=True)
class Behaviour:
    decision: Decision = Decision.AUTO
    cdcvm_performed: bool = False
    expired: bool = False
    blocked_application: bool = False
    blocked_at: str = "select"
    corrupt: Corruption | None = None
    removed_after_n_commands: int | None = None
    slow: float = 0.0
    see_phone: bool = False
    hang_on: str | None = None
    more_data_forever: bool = False
    wrong_length_forever: bool = False

    def hangs_on(self, command: bytes) -> bool:
        """Whether the card stays silent on `command` (the ``hang_on`` behaviour)."""
        if self.hang_on is None or len(command) < 4:
            return False
        ins = HANG_COMMANDS[self.hang_on]
        return ins is None or command[1] == ins

    def transport_answer(self, command: bytes) -> bytes | None:
        """The answer a T=0 transport fault forces in place of the card's own (the
        ``more_data_forever`` and ``wrong_length_forever`` behaviours), else None."""
        if self.more_data_forever:
            if len(command) >= 4 and command[1] == _GET_RESPONSE_INS:
                return bytes(_MORE_DATA) + bytes([0x61, _MORE_DATA])  # 16 filler bytes
            return bytes([0x61, _MORE_DATA])
        if self.wrong_length_forever:
            le = command[-1] if len(command) >= 5 else 0
            return bytes([0x6C, (le + 1) & 0xFF])
        return None

    def updated(self, options: Mapping[str, Any]) -> Behaviour:
        """This behaviour with ``options`` (keyword names of the module docstring) applied."""
        changes: dict[str, Any] = {}
        decisions = [
            name
            for name in (Decision.APPROVE_OFFLINE, Decision.REQUEST_ONLINE, Decision.DECLINE)
            if options.get(name.value)
        ]
        if len(decisions) > 1:
            raise BehaviourError(f"choose one of {', '.join(d.value for d in decisions)}")
        if decisions:
            changes["decision"] = decisions[0]
        known = {f.name for f in fields(self)}
        for key, value in options.items():
            if key in (d.value for d in Decision):
                if value not in (True, False, None):
                    raise BehaviourError(f"{key} must be true or false")
                continue
            if key == "wrong_data":
                key = "corrupt"
            if key not in known:
                raise BehaviourError(
                    f"unknown behaviour {key!r}; known: "
                    + ", ".join(sorted(known | {d.value for d in Decision} | {"wrong_data"}))
                )
            changes[key] = value
        merged = replace(self, **changes)
        return merged._checked()

    def _checked(self) -> Behaviour:
        try:
            decision = Decision(self.decision)
            raw: object = self.corrupt
            corrupt = None if raw is None or raw is False else Corruption(str(raw))
        except ValueError as exc:
            raise BehaviourError(str(exc)) from exc
        if self.blocked_at not in ("select", "gpo"):
            raise BehaviourError(f"blocked_at must be 'select' or 'gpo', got {self.blocked_at!r}")
        n = self.removed_after_n_commands
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise BehaviourError("removed_after_n_commands must be a non-negative integer")
        if isinstance(self.slow, bool) or not isinstance(self.slow, int | float) or self.slow < 0:
            raise BehaviourError("slow must be a non-negative number of seconds")
        for name in (
            "cdcvm_performed",
            "expired",
            "blocked_application",
            "see_phone",
            "more_data_forever",
            "wrong_length_forever",
        ):
            if not isinstance(getattr(self, name), bool):
                raise BehaviourError(f"{name} must be true or false")
        if self.more_data_forever and self.wrong_length_forever:
            raise BehaviourError("choose one of more_data_forever, wrong_length_forever")
        hang_on = None if self.hang_on is None else str(self.hang_on).lower()
        if hang_on is not None and hang_on not in HANG_COMMANDS:
            raise BehaviourError(
                f"hang_on must name one of {', '.join(HANG_COMMANDS)}, got {self.hang_on!r}"
            )
        return replace(
            self, decision=decision, corrupt=corrupt, slow=float(self.slow), hang_on=hang_on
        )
