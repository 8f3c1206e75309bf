"""The virtual cards' issuers: the simulated host holds their issuer master keys by default,
so every ARQC a virtual card makes (the demo, the tests, `make run`) is recomputed from the
online data and a wrong one is declined with its reason. An operator's own keys
(`PUT /admin/issuer-keys`) replace these; with none configured at all, the host would
approve without checking, as a host without the issuer's keys must (it cannot tell)."""

from __future__ import annotations

from functools import cache
from typing import Any

from ..cards import list_profiles, load_profile
from ..cards.profile import CryptogramKind

__all__ = ["virtual_issuer_keys"]

#: How each card product computes its cryptogram, as the host's verifier names it
#: (simulator.cards.crypto: Visa CVN 18 covers the whole IAD and derives the common session
#: key, EMV Book 2 v4.4 A1.3; M/Chip CVN 10 covers the CVR, IAD bytes 3-8, under the
#: Mastercard session key with the unpredictable number).
_SCHEMES: dict[CryptogramKind, dict[str, Any]] = {
    CryptogramKind.VISA_CVN18: {"session_key": "common", "padding": 2, "iad": "full"},
    CryptogramKind.MCHIP_CVN10: {"session_key": "mastercard", "padding": 2, "iad": "cvr"},
}


@cache
def virtual_issuer_keys() -> dict[str, dict[str, Any]]:
    """PAN -> issuer key, for every shipped virtual card profile."""
    keys: dict[str, dict[str, Any]] = {}
    for name in list_profiles():
        profile = load_profile(name)
        keys[profile.pan] = {
            "imk_ac": profile.issuer_master_key.hex(),
            **_SCHEMES[profile.cryptogram_kind],
        }
    return keys
