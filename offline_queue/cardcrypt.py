"""Encryption of card data at rest: a data key per payment, wrapped under the queue's key.

The terminal hands in one 32-byte queue key (from its keystore). Sub-keys are derived from it
with HKDF-SHA256 (RFC 5869 §3.2: distinct `info` strings separate uses): the key-encryption
key (KEK) that wraps every payment's data key, the PAN lookup hash key (which cannot decrypt
anything) and the key check that tells "wrong key" from "tampered row".

Each payment's card data is sealed with AES-256-GCM under a data key of its own (32 random
bytes from the injected randomness); the data key is wrapped (AES-256-GCM under the KEK) and
kept apart from the sealed card data. Destroying the wrapped key is what erases the payment's
card data: every copy of the sealed data SQLite may leave behind (a free block, an old page
in the WAL) becomes ciphertext under a key that no longer exists anywhere, even for someone
who holds the open keystore (crypto-shredding; NIST SP 800-88 Rev. 1 §2.6 "cryptographic
erase").

Both ciphertexts are bound to their transaction id through GCM's associated data (NIST SP
800-38D §5.2.1): sealed card data moved to another row, or a wrapped key moved to another
payment, fails authentication instead of attaching one customer's card to another's payment.

Formats (the first byte is the scheme's version, so it can change without ambiguity)::

    sealed card data   02 | nonce (12) | AES-GCM(data key, plaintext, aad=02 "card" txid)
    wrapped data key   02 | nonce (12) | AES-GCM(KEK, data key, aad=02 "key" txid)   61 bytes
    version 1 (before per-payment keys): 01 | nonce | AES-GCM(queue sub-key, plaintext,
    aad=01 txid), read only by the migration that re-seals it (:meth:`CardCipher.open_v1`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CardDataError

__all__ = ["WRAPPED_KEY_LEN", "CardCipher", "Sealed", "Token"]

Token = Callable[[int], bytes]

_V1: Final = b"\x01"
_V2: Final = b"\x02"
_NONCE_LEN: Final = 12  # 96-bit nonce, the GCM recommended size (SP 800-38D §8.2)
_TAG_LEN: Final = 16
_DATA_KEY_LEN: Final = 32  # AES-256
WRAPPED_KEY_LEN: Final = 1 + _NONCE_LEN + _DATA_KEY_LEN + _TAG_LEN


def _subkey(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


@dataclass(frozen=True, slots=True)
class Sealed:
    """One payment's card data, sealed: the ciphertext and its wrapped data key, stored apart."""

    payload: bytes
    wrapped_key: bytes

    def __repr__(self) -> str:
        return f"Sealed(<{len(self.payload)} bytes>, <wrapped key>)"


class CardCipher:
    """Seals and opens a payment's card data under its own data key; PAN lookup hashes."""

    def __init__(self, data_key: bytes, *, token: Token = os.urandom) -> None:
        if not isinstance(data_key, bytes | bytearray) or len(data_key) != 32:
            raise CardDataError("data key: expected 32 bytes (AES-256)")
        key = bytes(data_key)
        self._kek = AESGCM(_subkey(key, b"pipos offline-queue v2: key-wrap"))
        self._v1 = AESGCM(_subkey(key, b"pipos offline-queue v1: aes-gcm"))
        self._mac_key = _subkey(key, b"pipos offline-queue v1: pan-hmac")
        # A fingerprint lets the queue tell "wrong key" from "tampered row" before decrypting.
        # Unchanged from version 1, so a queue written before per-payment keys still opens.
        self.key_check = _subkey(key, b"pipos offline-queue v1: key-check")[:8].hex()
        self._token = token

    def __repr__(self) -> str:
        return "CardCipher(<key hidden>)"

    def _nonce(self) -> bytes:
        nonce = self._token(_NONCE_LEN)
        if len(nonce) != _NONCE_LEN:
            raise CardDataError("token source returned a nonce of the wrong length")
        return nonce

    def seal(self, transaction_id: str, plaintext: bytes) -> Sealed:
        """`plaintext` sealed under a fresh data key, and that key wrapped under the KEK."""
        data_key = self._token(_DATA_KEY_LEN)
        if len(data_key) != _DATA_KEY_LEN:
            raise CardDataError("token source returned a data key of the wrong length")
        txid = transaction_id.encode("utf-8")
        nonce = self._nonce()
        payload = _V2 + nonce + AESGCM(data_key).encrypt(nonce, plaintext, _V2 + b"card" + txid)
        wrap_nonce = self._nonce()
        wrapped = _V2 + wrap_nonce + self._kek.encrypt(wrap_nonce, data_key, _V2 + b"key" + txid)
        return Sealed(payload, wrapped)

    def open(self, transaction_id: str, payload: bytes, wrapped_key: bytes | None) -> bytes:
        """The plaintext of `payload`; CardDataError when its key is gone or does not fit."""
        if wrapped_key is None:
            raise CardDataError(f"{transaction_id}: card data key missing (erased)")
        if len(payload) < 1 + _NONCE_LEN + _TAG_LEN or payload[:1] != _V2:
            raise CardDataError(f"{transaction_id}: card data is not a v2 ciphertext")
        if len(wrapped_key) != WRAPPED_KEY_LEN or wrapped_key[:1] != _V2:
            raise CardDataError(f"{transaction_id}: card data key is not a v2 wrapped key")
        txid = transaction_id.encode("utf-8")
        try:
            data_key = self._kek.decrypt(
                wrapped_key[1 : 1 + _NONCE_LEN], wrapped_key[1 + _NONCE_LEN :], _V2 + b"key" + txid
            )
            return AESGCM(data_key).decrypt(
                payload[1 : 1 + _NONCE_LEN], payload[1 + _NONCE_LEN :], _V2 + b"card" + txid
            )
        except InvalidTag:
            raise CardDataError(
                f"{transaction_id}: card data failed authentication "
                "(wrong data key, or the row or its key was altered or moved)"
            ) from None

    def open_v1(self, transaction_id: str, sealed: bytes) -> bytes:
        """Card data sealed the version 1 way (one queue-wide key): for the re-sealing
        migration only."""
        if len(sealed) < 1 + _NONCE_LEN + _TAG_LEN or sealed[:1] != _V1:
            raise CardDataError(f"{transaction_id}: card data is not a v1 ciphertext")
        try:
            return self._v1.decrypt(
                sealed[1 : 1 + _NONCE_LEN],
                sealed[1 + _NONCE_LEN :],
                _V1 + transaction_id.encode("utf-8"),
            )
        except InvalidTag:
            raise CardDataError(
                f"{transaction_id}: card data failed authentication "
                "(wrong data key, or the row was altered or moved)"
            ) from None

    def pan_hash(self, pan: str) -> str:
        """Keyed hash of the PAN for lookups: equal PANs match, the file alone reveals nothing.

        With the key it is a guess oracle (the masked PAN leaves some 10^5 candidates), so the
        queue erases it together with the card data.
        """
        return hmac.new(self._mac_key, pan.encode("ascii"), hashlib.sha256).hexdigest()
