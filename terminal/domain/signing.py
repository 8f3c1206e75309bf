"""The canonical signing format of the pipos acquirer protocol (docs/protocol.md).

Pure functions, shared by the acquirer client and the tests; the simulated host re-implements
the same few lines in `simulator/host/verify.py` (simulator/ may not import terminal/), and a
test checks that the two agree.

Every request carries five headers and a signature over one canonical string:

    PIPOS-REQ-V1 \\n METHOD \\n PATH?QUERY \\n TERMINAL-ID \\n KEY-ID \\n SEQ \\n TIMESTAMP
                 \\n IDEMPOTENCY-KEY \\n SHA256-HEX(BODY)

(no spaces; lines joined by a single LF). Unset terminal id (enrolment) and unset idempotency
key are written as "-". Responses carry the host's signature over

    PIPOS-RESP-V1 \\n TERMINAL-ID \\n REQUEST-SEQ \\n STATUS \\n SHA256-HEX(BODY)

binding each response to the request it answers, so an old response cannot be replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import TerminalError

REQUEST_FORMAT: Final = "PIPOS-REQ-V1"
RESPONSE_FORMAT: Final = "PIPOS-RESP-V1"

HEADER_TERMINAL: Final = "X-Pipos-Terminal"
HEADER_KEY_ID: Final = "X-Pipos-Key-Id"
HEADER_SEQ: Final = "X-Pipos-Seq"
HEADER_TIMESTAMP: Final = "X-Pipos-Timestamp"
HEADER_SIGNATURE: Final = "X-Pipos-Signature"
HEADER_IDEMPOTENCY: Final = "Idempotency-Key"
HEADER_HOST_KEY_ID: Final = "X-Pipos-Host-Key-Id"
HEADER_HOST_SIGNATURE: Final = "X-Pipos-Host-Signature"

UNSET: Final = "-"

# Identifiers go into a line-oriented string: no separators, bounded length.
_TOKEN: Final = re.compile(r"[A-Za-z0-9._:~-]{1,128}")


class SigningError(TerminalError):
    """A request or response could not be signed or its signature is not valid."""


@dataclass(frozen=True)
class Signer:
    """A key id and a signing function; the private key itself never leaves the keystore."""

    key_id: str
    sign: Callable[[bytes], bytes] = field(repr=False)
    public_key: bytes = field(repr=False)


def _token(value: str | None, what: str) -> str:
    if value is None or value == "":
        return UNSET
    if not _TOKEN.fullmatch(value):
        raise SigningError(
            f"{what}: expected 1-128 characters from [A-Za-z0-9._:~-], got {value[:40]!r}"
        )
    return value


def body_digest(body: bytes) -> str:
    """Lower-case hex SHA-256 of the exact body bytes (of b"" when there is no body)."""
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    *,
    method: str,
    path: str,
    terminal_id: str | None,
    key_id: str,
    seq: int,
    timestamp: int,
    idempotency_key: str | None,
    body: bytes,
) -> bytes:
    """The exact bytes the terminal signs and the host verifies."""
    if "\n" in path or "\r" in path or not path.startswith("/"):
        raise SigningError(f"path: expected an absolute path without line breaks, got {path!r}")
    if seq < 0 or timestamp < 0:
        raise SigningError("sequence number and timestamp must be non-negative integers")
    lines = [
        REQUEST_FORMAT,
        method.upper(),
        path,
        _token(terminal_id, "terminal id"),
        _token(key_id, "key id"),
        str(int(seq)),
        str(int(timestamp)),
        _token(idempotency_key, "idempotency key"),
        body_digest(body),
    ]
    return "\n".join(lines).encode("utf-8")


def canonical_response(*, terminal_id: str | None, seq: int, status: int, body: bytes) -> bytes:
    """The exact bytes the host signs for a response to request `seq`."""
    lines = [
        RESPONSE_FORMAT,
        _token(terminal_id, "terminal id"),
        str(int(seq)),
        str(int(status)),
        body_digest(body),
    ]
    return "\n".join(lines).encode("utf-8")


def offline_record(
    *,
    transaction_id: str,
    terminal_id: str,
    amount: int,
    currency: int,
    captured_at: int,
    masked_pan: str,
    aid: str,
    cryptogram: str,
    atc: str,
) -> bytes:
    """The canonical record of a payment approved offline, which the terminal signs and the host
    and `pipos queue import` check each uploaded item against (docs/protocol.md, "Offline
    records"): compact JSON, keys sorted. It holds no card data beyond the masked PAN."""
    return json.dumps(
        {
            "transaction_id": transaction_id,
            "terminal_id": terminal_id,
            "amount": amount,
            "currency": currency,
            "captured_at": captured_at,
            "masked_pan": masked_pan,
            "aid": aid,
            "cryptogram": cryptogram,
            "atc": atc,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SigningError(f"{what}: not valid base64") from exc


def key_id_for(public_key: bytes) -> str:
    """Key id: 'ed25519:' + first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


def sign_request(
    signer: Signer,
    *,
    method: str,
    path: str,
    terminal_id: str | None,
    seq: int,
    timestamp: int,
    idempotency_key: str | None,
    body: bytes,
) -> dict[str, str]:
    """The protocol headers (including the signature) for one request."""
    message = canonical_request(
        method=method,
        path=path,
        terminal_id=terminal_id,
        key_id=signer.key_id,
        seq=seq,
        timestamp=timestamp,
        idempotency_key=idempotency_key,
        body=body,
    )
    headers = {
        HEADER_TERMINAL: _token(terminal_id, "terminal id"),
        HEADER_KEY_ID: signer.key_id,
        HEADER_SEQ: str(seq),
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: b64encode(signer.sign(message)),
    }
    if idempotency_key:
        headers[HEADER_IDEMPOTENCY] = idempotency_key
    return headers


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` under `public_key`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_response(
    host_public_key: bytes,
    headers: Mapping[str, str],
    *,
    terminal_id: str | None,
    seq: int,
    status: int,
    body: bytes,
) -> bool:
    """True when the response carries a valid host signature bound to request `seq`."""
    signature_text = headers.get(HEADER_HOST_SIGNATURE)
    if not signature_text:
        return False
    try:
        signature = b64decode(signature_text, "host signature")
    except SigningError:
        return False
    message = canonical_response(terminal_id=terminal_id, seq=seq, status=status, body=body)
    return verify_signature(host_public_key, signature, message)
