"""Host side of the pipos request signing format (docs/protocol.md).

A deliberate re-implementation of the few lines in terminal/domain/signing.py: simulator/ may not
import terminal/, and a second implementation written against the document is what a real
acquirer would have. tests/terminal/domain/test_signing.py checks the two agree byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

REQUEST_FORMAT: Final = "PIPOS-REQ-V1"
RESPONSE_FORMAT: Final = "PIPOS-RESP-V1"
UNSET: Final = "-"
TOKEN: Final = re.compile(r"[A-Za-z0-9._:~-]{1,128}")
#: Every number in a header is a decimal of ASCII digits below 2^63: what SQLite's INTEGER
#: holds, so no header can make the host fail (int() alone would take "+1", " 1", "1_0" and
#: other scripts' digits).
MAX_HEADER_NUMBER: Final = 2**63 - 1
_DIGITS: Final = re.compile(r"[0-9]{1,19}")
#: The signature header: 64 bytes in padded base64 are 88 characters.
MAX_SIGNATURE_HEADER: Final = 100


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    *,
    method: str,
    path: str,
    terminal_id: str,
    key_id: str,
    seq: int,
    timestamp: int,
    idempotency_key: str | None,
    body: bytes,
) -> bytes:
    return "\n".join(
        [
            REQUEST_FORMAT,
            method.upper(),
            path,
            terminal_id or UNSET,
            key_id,
            str(seq),
            str(timestamp),
            idempotency_key or UNSET,
            body_digest(body),
        ]
    ).encode("utf-8")


def canonical_response(*, terminal_id: str, seq: int, status: int, body: bytes) -> bytes:
    return "\n".join(
        [RESPONSE_FORMAT, terminal_id or UNSET, str(seq), str(status), body_digest(body)]
    ).encode("utf-8")


def key_id_for(public_key: bytes) -> str:
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


def fingerprint_for(public_key: bytes) -> str:
    """The host key fingerprint printed next to an activation code: ``ed25519:`` + the 64
    hex digits of SHA-256 over the raw 32-byte key (`pipos provision --host-key`)."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()


def header_number(text: str) -> int | None:
    """A header number (sequence, timestamp) if it is one: ASCII digits, below 2^63."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_HEADER_NUMBER else None


def response_seq(text: str) -> int | None:
    """The request's sequence number to bind a signed answer to, whenever it is plain ASCII
    digits (even one the host refuses as too large: that refusal is signed too)."""
    if not re.fullmatch(r"[0-9]{1,20}", text):
        return None
    return int(text)


def b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_response(
    key: Ed25519PrivateKey, *, terminal_id: str, seq: int, status: int, body: bytes
) -> str:
    message = canonical_response(terminal_id=terminal_id, seq=seq, status=status, body=body)
    return b64encode(key.sign(message))
