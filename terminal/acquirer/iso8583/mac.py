"""The message authentication code on every ISO 8583 message (field 64, or 128 when the
message has a secondary bitmap: ISO 8583:1987 §4.4, the MAC is the message's last field).

Two algorithms, as acquirers' profiles name them:

- ``iso9797-1-alg3``: ISO/IEC 9797-1:2011 MAC algorithm 3 (the "retail MAC" of ANSI X9.19):
  single-DES CBC under the left half of a double-length key, the last block then decrypted
  under the right half and encrypted again under the left. Padding method 1 (zeros) or 2
  (0x80, then zeros), per the profile. Computed by psec.
- ``aes-cmac``: NIST SP 800-38B CMAC with AES (128, 192 or 256-bit key), truncated to its
  leftmost 64 bits (SP 800-38B §5.5 allows truncation; 64 bits is what fields 64/128 hold).

The MAC covers the message as sent, from the message type to the byte before the MAC field.
A received MAC is compared in constant time.
"""

from __future__ import annotations

import hmac
import warnings

import psec.mac
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.utils import CryptographyDeprecationWarning

from ...domain.errors import TerminalError
from .profile import MacAlgorithm

__all__ = ["MAC_BYTES", "MacError", "compute_mac", "mac_matches"]

#: What fields 64 and 128 hold (b64).
MAC_BYTES = 8

# psec builds its DES with cryptography's TripleDES (K1 = K2 = K3 for single DES), which
# cryptography marks as deprecated: the retail MAC is what acquirers require, so the warning
# (psec's, on every MAC) says nothing the operator can act on.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"psec\.")


class MacError(TerminalError):
    """A MAC key of the wrong length for the profile's algorithm."""


def compute_mac(algorithm: MacAlgorithm, key: bytes, data: bytes, *, padding: int = 1) -> bytes:
    """The 8-byte MAC of `data` under `key` (double-length DES key for ISO 9797-1 algorithm 3;
    16, 24 or 32 bytes of AES key for CMAC)."""
    if algorithm == "iso9797-1-alg3":
        if len(key) != 16:
            raise MacError(
                f"an ISO 9797-1 algorithm 3 MAC key is 16 bytes (double-length DES), not {len(key)}"
            )
        return psec.mac.generate_retail_mac(key[:8], key[8:], data, padding=padding)
    if len(key) not in (16, 24, 32):
        raise MacError(f"an AES-CMAC key is 16, 24 or 32 bytes, not {len(key)}")
    try:
        signer = cmac.CMAC(algorithms.AES(key))
    except UnsupportedAlgorithm as exc:  # pragma: no cover - every cryptography build has AES
        raise MacError(f"AES-CMAC is not available: {exc}") from exc
    signer.update(data)
    return signer.finalize()[:MAC_BYTES]


def mac_matches(
    algorithm: MacAlgorithm, key: bytes, data: bytes, received: bytes, *, padding: int = 1
) -> bool:
    """Whether `received` is the MAC of `data` (compared in constant time)."""
    expected = compute_mac(algorithm, key, data, padding=padding)
    return hmac.compare_digest(expected, received)
