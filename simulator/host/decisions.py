"""How the simulated issuer decides: ARQC verification and configurable decline rules.

The ARQC check sits behind :class:`CryptogramVerifier` so a test can swap it; the default
:class:`EmvCryptogramVerifier` uses emv.cryptogram with issuer master keys configured per
PAN prefix (the simulated cards' issuers).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from emv import cryptogram
from emv.errors import EmvError

ArqcStatus = Literal["valid", "invalid", "absent", "no_key", "malformed"]

# ISO 8583 field 39 response codes the simulator uses.
APPROVED: Final = "00"
DO_NOT_HONOUR: Final = "05"
INVALID_TRANSACTION: Final = "12"
INVALID_AMOUNT: Final = "13"
INSUFFICIENT_FUNDS: Final = "51"
EXCEEDS_LIMIT: Final = "61"
RESTRICTED_CARD: Final = "62"
#: An online card authorisation without an ARQC (9F26): the host cannot tell the card was
#: there (card authentication failed, as ISO 8583 networks answer it).
ARQC_REQUIRED: Final = "Q1"

BRANDS_BY_RID: Final = {
    "A000000003": "visa",
    "A000000004": "mastercard",
    "A000000025": "amex",
    "A000000065": "jcb",
    "A000000152": "discover",
    "A000000333": "unionpay",
}


def brand_for(aid: str | None, declared: str | None) -> str:
    if declared:
        return declared.lower()
    if aid:
        return BRANDS_BY_RID.get(aid.upper()[:10], "unknown")
    return "unknown"


@dataclass(frozen=True)
class ArqcResult:
    status: ArqcStatus
    detail: str = ""


class CryptogramVerifier(Protocol):
    """Issuer-side cryptogram arithmetic as the host needs it."""

    def verify_arqc(
        self, *, pan: str, pan_sequence: int | None, emv: Mapping[str, bytes]
    ) -> ArqcResult: ...

    def make_arpc(
        self, *, pan: str, pan_sequence: int | None, emv: Mapping[str, bytes], arc: bytes
    ) -> bytes | None: ...


@dataclass(frozen=True)
class IssuerKey:
    """An issuer master key for AC (IMK-AC) and how its cards' CVN computes cryptograms."""

    imk_ac: bytes
    session_key: Literal["common", "mastercard"] = "common"
    padding: Literal[1, 2] = 2
    #: How much of the Issuer Application Data (9F10) the cryptogram covers: none, all of
    #: it (Visa CVN 18), or the CVR in bytes 3-8 (M/Chip).
    iad: Literal["none", "full", "cvr"] = "none"
    arpc_key: Literal["session", "master"] = "session"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IssuerKey:
        return cls(
            imk_ac=bytes.fromhex(str(data["imk_ac"])),
            session_key=data.get("session_key", "common"),
            padding=int(data.get("padding", 2)),  # type: ignore[arg-type]
            iad=data.get("iad", "none"),
            arpc_key=data.get("arpc_key", "session"),
        )


def _n(value: bytes) -> int:
    """A numeric (n) data element: BCD digits read as a decimal integer."""
    return int(value.hex()) if value else 0


def _covered_iad(ik: IssuerKey, emv: Mapping[str, bytes]) -> bytes | None:
    if ik.iad == "full":
        return emv.get("9F10", b"")
    if ik.iad == "cvr":
        return emv["9F10"][2:8]
    return None


class EmvCryptogramVerifier:
    """ARQC check and ARPC method 1 (EMV Book 2 §8.1, §8.2.1) over the Table 26 data set."""

    def __init__(self, issuer_key: Callable[[str], IssuerKey | None]) -> None:
        self._issuer_key = issuer_key

    def _keys(
        self, pan: str, pan_sequence: int | None, emv: Mapping[str, bytes]
    ) -> tuple[IssuerKey, bytes, bytes] | None:
        ik = self._issuer_key(pan)
        if ik is None:
            return None
        master = cryptogram.derive_icc_master_key_option_a(ik.imk_ac, pan, pan_sequence)
        atc = int.from_bytes(emv["9F36"], "big")
        if ik.session_key == "mastercard":
            session = cryptogram.derive_mastercard_session_key(master, atc, emv["9F37"])
        else:
            session = cryptogram.derive_common_session_key(master, atc)
        return ik, master, session

    def verify_arqc(
        self, *, pan: str, pan_sequence: int | None, emv: Mapping[str, bytes]
    ) -> ArqcResult:
        if "9F26" not in emv:
            return ArqcResult("absent")
        try:
            keys = self._keys(pan, pan_sequence, emv)
            if keys is None:
                return ArqcResult("no_key", "no issuer key configured for this card range")
            ik, _master, session = keys
            date = emv["9A"].hex()
            data = cryptogram.build_ac_data(
                amount_authorised=_n(emv["9F02"]),
                amount_other=_n(emv.get("9F03", b"")),
                terminal_country_code=_n(emv["9F1A"]),
                tvr=emv["95"],
                transaction_currency_code=_n(emv["5F2A"]),
                transaction_date=datetime.date(2000 + int(date[:2]), int(date[2:4]), int(date[4:])),
                transaction_type=_n(emv.get("9C", b"\x00")),
                unpredictable_number=emv["9F37"],
                aip=emv["82"],
                atc=int.from_bytes(emv["9F36"], "big"),
                iad=_covered_iad(ik, emv),
            )
            ok = cryptogram.verify_ac(session, data, emv["9F26"], padding=ik.padding)
        except KeyError as exc:
            return ArqcResult("malformed", f"missing EMV data element {exc.args[0]}")
        except (EmvError, ValueError) as exc:
            return ArqcResult("malformed", str(exc))
        return ArqcResult("valid" if ok else "invalid")

    def make_arpc(
        self, *, pan: str, pan_sequence: int | None, emv: Mapping[str, bytes], arc: bytes
    ) -> bytes | None:
        try:
            keys = self._keys(pan, pan_sequence, emv)
            if keys is None or "9F26" not in emv:
                return None
            ik, master, session = keys
            key = master if ik.arpc_key == "master" else session
            return cryptogram.generate_arpc_method_1(key, emv["9F26"], arc)
        except (KeyError, EmvError, ValueError):
            return None


@dataclass(frozen=True)
class Rules:
    """Decline rules a test can set through `PUT /admin/rules` (PANs stored as tokens)."""

    insufficient_funds_suffix: int | None = 51
    decline_amounts: Mapping[int, str] | None = None
    card_limits: Mapping[str, int] | None = None  # card token -> open-to-buy in minor units
    default_card_limit: int | None = None
    blocked_cards: frozenset[str] = frozenset()  # card tokens
    #: An online authorisation must carry an ARQC (9F26); off only for a host configured to
    #: take card data without one.
    require_arqc: bool = True
    #: ... and one the host could verify: a card range whose issuer key it does not hold
    #: (`no_key`) is declined too.
    require_verified_arqc: bool = False
    #: Days a pre-authorisation's hold stays open: after them it can no longer be raised,
    #: captured or released (it has lapsed, the card's funds are free again).
    preauth_hold_days: int = 7

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rules:
        return cls(
            insufficient_funds_suffix=data.get("insufficient_funds_suffix", 51),
            decline_amounts={
                int(k): str(v) for k, v in (data.get("decline_amounts") or {}).items()
            },
            card_limits={str(k): int(v) for k, v in (data.get("card_limits") or {}).items()},
            default_card_limit=data.get("default_card_limit"),
            blocked_cards=frozenset(data.get("blocked_cards") or ()),
            require_arqc=bool(data.get("require_arqc", True)),
            require_verified_arqc=bool(data.get("require_verified_arqc", False)),
            preauth_hold_days=int(data.get("preauth_hold_days", 7)),
        )


@dataclass(frozen=True)
class Decision:
    response_code: str
    reason: str

    @property
    def approved(self) -> bool:
        return self.response_code == APPROVED


def decide(
    rules: Rules,
    *,
    amount: int,
    card_token: str,
    spent: int,
    arqc: ArqcResult,
    online: bool = True,
) -> Decision:
    """Apply the rules in a fixed order; the first that matches declines.

    `online`: an authorisation (the ARQC rule applies); False for an offline payment the
    terminal uploads later, whose record is vouched for by the terminal's signature."""
    if amount <= 0:
        return Decision(INVALID_AMOUNT, "amount must be positive")
    if arqc.status == "invalid":
        return Decision(DO_NOT_HONOUR, "ARQC verification failed")
    if arqc.status == "malformed":
        return Decision(DO_NOT_HONOUR, f"EMV data unusable: {arqc.detail}")
    if online and rules.require_arqc and arqc.status == "absent":
        return Decision(ARQC_REQUIRED, "ARQC (9F26) required: the authorisation carries none")
    if rules.require_verified_arqc and arqc.status != "valid":
        return Decision(DO_NOT_HONOUR, f"verified ARQC required but {arqc.status}")
    return _issuer_rules(rules, amount=amount, card_token=card_token, spent=spent)


def decide_increment(rules: Rules, *, amount: int, card_token: str, spent: int) -> Decision:
    """An incremental authorisation: the card is not there (no ARQC), so only the issuer's
    own rules apply to the added amount, as they do to a sale's."""
    if amount <= 0:
        return Decision(INVALID_AMOUNT, "amount must be positive")
    return _issuer_rules(rules, amount=amount, card_token=card_token, spent=spent)


def _issuer_rules(rules: Rules, *, amount: int, card_token: str, spent: int) -> Decision:
    """The issuer's own rules on an amount, the same for a sale and an incremental
    authorisation: a blocked card, a declined amount, insufficient funds, the card's limit."""
    if card_token in rules.blocked_cards:
        return Decision(RESTRICTED_CARD, "card blocked")
    if rules.decline_amounts and amount in rules.decline_amounts:
        return Decision(rules.decline_amounts[amount], "declined by amount rule")
    if rules.insufficient_funds_suffix is not None and amount % 100 == (
        rules.insufficient_funds_suffix
    ):
        return Decision(INSUFFICIENT_FUNDS, "insufficient funds")
    limit = (rules.card_limits or {}).get(card_token, rules.default_card_limit)
    if limit is not None and spent + amount > limit:
        return Decision(EXCEEDS_LIMIT, "over the card's limit")
    return Decision(APPROVED, "approved")
