"""Encryption of card data at rest: AES-256-GCM per row, HMAC-SHA256 lookup hash of the PAN.

The terminal hands in one 32-byte data key (from its keystore). Two independent sub-keys are
derived from it with HKDF-SHA256 (RFC 5869 §3.2: distinct `info` strings separate uses), one
for AES-GCM and one for the PAN lookup hash, so the hash key cannot decrypt anything.

Each row's ciphertext is bound to its transaction id through GCM's associated data
(NIST SP 800-38D §5.2.1): a ciphertext moved to another row fails authentication instead of
attaching one customer's card to another customer's payment.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CardDataError

Token = Callable[[int], bytes]

# Version byte at the head of every ciphertext, so the scheme can change without ambiguity.
_VERSION: Final = b"\x01"
_NONCE_LEN: Final = 12  # 96-bit nonce, the GCM recommended size (SP 800-38D §8.2)


def _subkey(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


class CardCipher:
    """Seals and opens a row's sensitive payload; computes PAN lookup hashes."""

    def __init__(self, data_key: bytes, *, token: Token = os.urandom) -> None:
        if not isinstance(data_key, bytes | bytearray) or len(data_key) != 32:
            raise CardDataError("data key: expected 32 bytes (AES-256)")
        self._aes = AESGCM(_subkey(bytes(data_key), b"pipos offline-queue v1: aes-gcm"))
        self._mac_key = _subkey(bytes(data_key), b"pipos offline-queue v1: pan-hmac")
        # A fingerprint lets the queue tell "wrong key" from "tampered row" before decrypting.
        self.key_check = _subkey(bytes(data_key), b"pipos offline-queue v1: key-check")[:8].hex()
        self._token = token

    def __repr__(self) -> str:
        return "CardCipher(<key hidden>)"

    def seal(self, transaction_id: str, plaintext: bytes) -> bytes:
        nonce = self._token(_NONCE_LEN)
        if len(nonce) != _NONCE_LEN:
            raise CardDataError("token source returned a nonce of the wrong length")
        aad = _VERSION + transaction_id.encode("utf-8")
        return _VERSION + nonce + self._aes.encrypt(nonce, plaintext, aad)

    def open(self, transaction_id: str, sealed: bytes) -> bytes:
        if len(sealed) < 1 + _NONCE_LEN + 16 or sealed[:1] != _VERSION:
            raise CardDataError(f"{transaction_id}: card data is not a v1 ciphertext")
        nonce = sealed[1 : 1 + _NONCE_LEN]
        aad = _VERSION + transaction_id.encode("utf-8")
        try:
            return self._aes.decrypt(nonce, sealed[1 + _NONCE_LEN :], aad)
        except InvalidTag:
            raise CardDataError(
                f"{transaction_id}: card data failed authentication "
                "(wrong data key, or the row was altered or moved)"
            ) from None

    def pan_hash(self, pan: str) -> str:
        """Keyed hash of the PAN for lookups: equal PANs match, the file alone reveals nothing."""
        return hmac.new(self._mac_key, pan.encode("ascii"), hashlib.sha256).hexdigest()
