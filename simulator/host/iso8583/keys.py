"""The simulated ISO 8583 host's keys, as TR-31 key blocks (ASC X9 TR-31:2018, psec).

The hierarchy (docs/iso8583.md, "Keys"):

    KIF KBPK (AES-256, a published TEST key: simulator/data/iso8583/kif-test-kbpk.json)
      wraps  TMK, one per registered terminal     D ... K0 A B (key encryption key)
               wraps  MAC key, per key exchange   D ... M3 T C (TDES, ISO 9797-1 alg 3)
                                                  or M6 A C (AES-128, AES-CMAC)
               wraps  PIN key, per key exchange   D ... P0 A B (AES-128)

The key-injection facility (KIF) loads the TMK into the terminal under the KBPK it shares
with it; the host keeps only the blocks and opens them when it needs a key (a real host keeps
them under its HSM's key; the simulator's HSM is this module). Keys come from the host's
injected randomness; only the blocks' padding is psec's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import psec.tr31

from ...errors import SimulatorError
from .profile import MacAlgorithm

__all__ = [
    "KIF_KBPK_FILE",
    "SESSION_KEY_BYTES",
    "kif_kbpk",
    "open_block",
    "wrap_mac_key",
    "wrap_pin_key",
    "wrap_tmk",
]

KIF_KBPK_FILE: Final = Path(__file__).resolve().parents[2] / "data/iso8583/kif-test-kbpk.json"

#: TR-31 headers (version D: AES key-block protection key): usage, algorithm, mode of use.
_TMK: Final = ("K0", "A", "B")
_MAC: Final[dict[str, tuple[str, str, str]]] = {
    "iso9797-1-alg3": ("M3", "T", "C"),
    "aes-cmac": ("M6", "A", "C"),
}
_PIN: Final = ("P0", "A", "B")
#: Every session key is 16 bytes: a double-length TDES key (ISO 9797-1 algorithm 3) or
#: AES-128 (AES-CMAC, and the PIN key).
SESSION_KEY_BYTES: Final = 16


def kif_kbpk(path: Path = KIF_KBPK_FILE) -> bytes:
    """The KIF's TEST key-block protection key (AES-256)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        key = bytes.fromhex(str(data["kbpk"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SimulatorError(f"the KIF TEST KBPK {path} cannot be read: {exc}") from exc
    if len(key) != 32:
        raise SimulatorError(f"the KIF TEST KBPK {path} must be 32 bytes (AES-256)")
    return key


def _wrap(kbpk: bytes, usage: tuple[str, str, str], key: bytes) -> str:
    key_usage, algorithm, mode = usage
    header = psec.tr31.Header("D", key_usage, algorithm, mode, "00", "N")
    return psec.tr31.wrap(kbpk, header, key)


def wrap_tmk(kbpk: bytes, tmk: bytes) -> str:
    if len(tmk) != 32:
        raise SimulatorError("a TMK is AES-256: 32 bytes")
    return _wrap(kbpk, _TMK, tmk)


def wrap_mac_key(tmk: bytes, algorithm: MacAlgorithm, key: bytes) -> str:
    return _wrap(tmk, _MAC[algorithm], key)


def wrap_pin_key(tmk: bytes, key: bytes) -> str:
    return _wrap(tmk, _PIN, key)


def open_block(kbpk: bytes, block: str) -> bytes:
    """The key in one of the host's own blocks."""
    try:
        _, key = psec.tr31.unwrap(kbpk, block)
    except (psec.tr31.HeaderError, psec.tr31.KeyBlockError, ValueError) as exc:
        raise SimulatorError(f"a key block of the ledger does not open: {exc}") from exc
    return bytes(key)
