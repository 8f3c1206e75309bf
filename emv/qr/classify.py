"""What a scanned text is: a consumer-presented EMVCo code, a wallet payment code, a
merchant-presented code (shown to the wrong side of the counter), or nothing we accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .cpm import ConsumerPresentedCode, decode_cpm, looks_like_cpm
from .errors import QrError
from .mpm import MerchantPayload, looks_like_mpm, parse_mpm
from .wallet import WalletCode, WalletCodeTable

Kind = Literal["cpm", "wallet", "mpm"]


@dataclass(frozen=True)
class ScannedCode:
    kind: Kind
    cpm: ConsumerPresentedCode | None = None
    wallet: WalletCode | None = None
    mpm: MerchantPayload | None = None


class UnrecognisedCodeError(QrError):
    """Text that is none of the code kinds the terminal knows."""

    reason = "unsupported"


def classify(text: str, table: WalletCodeTable | None = None) -> ScannedCode:
    """Decode `text` by its shape; raises a QrError subclass with a reason when it is bad."""
    table = table or WalletCodeTable.default()
    stripped = text.strip()
    if looks_like_cpm(stripped):
        return ScannedCode("cpm", cpm=decode_cpm(stripped))
    if looks_like_mpm(stripped):
        return ScannedCode("mpm", mpm=parse_mpm(stripped))
    if table.is_candidate(stripped):
        return ScannedCode("wallet", wallet=table.recognise(stripped))
    raise UnrecognisedCodeError(
        "not a payment code: expected an EMVCo consumer-presented code or a wallet payment code"
    )
