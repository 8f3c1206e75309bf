"""The ISO 8583 link's keys as acquirers deliver them: TR-31 key blocks (ASC X9 TR-31:2018,
ANSI X9.143), unwrapped by psec and checked for what each key may be used for.

The hierarchy (docs/iso8583.md, "Keys"): the terminal master key (TMK, usage K0: a key
encryption key) is loaded once at provisioning, as a key block under the key the
key-injection facility and the terminal share; the session keys (the MAC key, usage M3 for
ISO 9797-1 algorithm 3 with TDES or M6 for AES-CMAC; the PIN key, usage P0) come in the
0810 of each key exchange as key blocks under the TMK. A key block binds its key to its
header (usage, algorithm, mode of use) by its MAC, so a PIN key cannot be passed off as a
MAC key: a block whose header says another use than the one asked for is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import psec.tr31

from .codec import Iso8583Error
from .profile import MacAlgorithm

__all__ = ["KeyBlockRefusedError", "KeyPurpose", "UnwrappedKey", "unwrap_key_block"]

KeyPurpose = Literal["master", "mac", "pin"]
#: The TR-31 key usages each purpose accepts (TR-31:2018 Table 6), by MAC algorithm for MAC.
_USAGES: Final[dict[str, frozenset[str]]] = {
    "master": frozenset({"K0"}),
    "pin": frozenset({"P0"}),
    "mac:iso9797-1-alg3": frozenset({"M3"}),
    "mac:aes-cmac": frozenset({"M6"}),
}
#: The key algorithm (header byte 8) each MAC algorithm needs: T (TDES) or A (AES).
_MAC_KEY_ALGORITHM: Final[dict[str, str]] = {"iso9797-1-alg3": "T", "aes-cmac": "A"}
#: Modes of use (header byte 9) a terminal's key may have: B both ways (encrypt and decrypt
#: or wrap/unwrap), C both (MAC generate and verify), D decrypt, E encrypt, G generate, N no
#: restriction, V verify. A MAC key the terminal checks answers with must verify (C or V).
_MAC_MODES: Final = frozenset({"C", "N"})


class KeyBlockRefusedError(Iso8583Error):
    """A key block that does not open under its key-block protection key, is damaged, or
    holds a key for another use than the one it was delivered for."""


@dataclass(frozen=True, slots=True)
class UnwrappedKey:
    usage: str
    algorithm: str
    mode_of_use: str
    key: bytes = field(repr=False)


def unwrap_key_block(
    kbpk: bytes, key_block: str, purpose: KeyPurpose, *, mac_algorithm: MacAlgorithm | None = None
) -> UnwrappedKey:
    """The key in `key_block`, once its header is shown to allow `purpose` (and, for a MAC
    key, the profile's `mac_algorithm`)."""
    try:
        header, key = psec.tr31.unwrap(kbpk, key_block.strip())
    except (psec.tr31.HeaderError, psec.tr31.KeyBlockError, ValueError) as exc:
        raise KeyBlockRefusedError(f"the {purpose} key block cannot be opened: {exc}") from exc
    wanted = f"mac:{mac_algorithm}" if purpose == "mac" else purpose
    if purpose == "mac" and mac_algorithm is None:
        raise KeyBlockRefusedError("a MAC key block is checked against the profile's algorithm")
    if header.key_usage not in _USAGES[wanted]:
        raise KeyBlockRefusedError(
            f"the {purpose} key block holds a key for usage {header.key_usage} "
            f"(TR-31), not {' or '.join(sorted(_USAGES[wanted]))}"
        )
    if purpose == "mac":
        assert mac_algorithm is not None
        if header.algorithm != _MAC_KEY_ALGORITHM[mac_algorithm]:
            raise KeyBlockRefusedError(
                f"the MAC key block holds a key of algorithm {header.algorithm}, and "
                f"{mac_algorithm} needs {_MAC_KEY_ALGORITHM[mac_algorithm]}"
            )
        if header.mode_of_use not in _MAC_MODES:
            raise KeyBlockRefusedError(
                f"the MAC key block's mode of use {header.mode_of_use} does not let the "
                "terminal both compute and verify MACs (C or N)"
            )
    return UnwrappedKey(
        usage=header.key_usage,
        algorithm=header.algorithm,
        mode_of_use=header.mode_of_use,
        key=bytes(key),
    )
