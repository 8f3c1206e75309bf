"""The MAC of the simulated ISO 8583 host, written here from the standards with
`cryptography`'s block ciphers (the terminal computes its own with psec: two
implementations, so a mistake in one shows as a MAC the other refuses).

- ``iso9797-1-alg3``: ISO/IEC 9797-1:2011 MAC algorithm 3 (ANSI X9.19 retail MAC): DES-CBC
  under K (the key's left half) over the padded data, the last block decrypted under K'
  (the right half) and encrypted again under K. Padding method 1 (zeros) or 2 (0x80, then
  zeros). Single DES is TripleDES with the same key three times.
- ``aes-cmac``: NIST SP 800-38B, truncated to its leftmost 64 bits (§5.5), what fields 64
  and 128 hold.
"""

from __future__ import annotations

import hmac
from typing import Final

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ...errors import SimulatorError
from .profile import MacAlgorithm

__all__ = ["MAC_BYTES", "compute_mac", "mac_matches"]

MAC_BYTES: Final = 8


def _des(key: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    """One DES block operation: the algorithm's output transformation, one block only."""
    cipher = Cipher(TripleDES(key * 3), modes.ECB())  # noqa: S305 - a single block
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


def _retail_mac(key: bytes, data: bytes, padding: int) -> bytes:
    if len(key) != 16:
        raise SimulatorError(f"an ISO 9797-1 algorithm 3 key is 16 bytes, not {len(key)}")
    if padding == 2:
        data += b"\x80"
    if not data or len(data) % 8:
        data += bytes(-len(data) % 8 or 8)
    left, right = key[:8], key[8:]
    encryptor = Cipher(TripleDES(left * 3), modes.CBC(bytes(8))).encryptor()
    last = (encryptor.update(data) + encryptor.finalize())[-8:]
    return _des(left, _des(right, last, decrypt=True))


def compute_mac(algorithm: MacAlgorithm, key: bytes, data: bytes, *, padding: int = 1) -> bytes:
    """The 8-byte MAC of `data` under `key`."""
    if algorithm == "iso9797-1-alg3":
        return _retail_mac(key, data, padding)
    if len(key) not in (16, 24, 32):
        raise SimulatorError(f"an AES-CMAC key is 16, 24 or 32 bytes, not {len(key)}")
    signer = cmac.CMAC(algorithms.AES(key))
    signer.update(data)
    return signer.finalize()[:MAC_BYTES]


def mac_matches(
    algorithm: MacAlgorithm, key: bytes, data: bytes, received: bytes, *, padding: int = 1
) -> bool:
    """Whether `received` is the MAC of `data`, compared in constant time."""
    return hmac.compare_digest(compute_mac(algorithm, key, data, padding=padding), received)
