"""The canonical request format: exact bytes, terminal/host agreement, tamper detection."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from simulator.host import verify as host_verify
from terminal.domain import signing
from terminal.domain.signing import Signer, SigningError


def _signer(seed: bytes = bytes(range(32))) -> Signer:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Signer(key_id=signing.key_id_for(pub), sign=key.sign, public_key=pub)


def test_canonical_request_known_answer() -> None:
    body = b'{"amount":1000}'
    message = signing.canonical_request(
        method="post",
        path="/v1/authorisations",
        terminal_id="T0001",
        key_id="ed25519:0011223344556677",
        seq=42,
        timestamp=1700000000,
        idempotency_key="auth-1",
        body=body,
    )
    expected = (
        "PIPOS-REQ-V1\nPOST\n/v1/authorisations\nT0001\ned25519:0011223344556677\n42\n"
        "1700000000\nauth-1\n" + hashlib.sha256(body).hexdigest()
    ).encode()
    assert message == expected


def test_unset_fields_and_empty_body() -> None:
    message = signing.canonical_request(
        method="GET",
        path="/v1/terminal",
        terminal_id=None,
        key_id="k",
        seq=1,
        timestamp=2,
        idempotency_key=None,
        body=b"",
    )
    assert message.split(b"\n")[3] == b"-"
    assert message.split(b"\n")[7] == b"-"
    assert message.endswith(b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


_tokens = st.from_regex(r"[A-Za-z0-9._:~-]{1,20}", fullmatch=True)


@given(
    method=st.sampled_from(["GET", "POST", "PUT"]),
    path=st.from_regex(r"/v1/[a-z/]{0,20}(\?[a-z=_0-9]{1,10})?", fullmatch=True),
    terminal=_tokens,
    key_id=_tokens,
    seq=st.integers(0, 2**63),
    ts=st.integers(0, 2**40),
    idem=st.one_of(st.none(), _tokens),
    body=st.binary(max_size=64),
)
def test_terminal_and_host_formats_agree(
    method: str,
    path: str,
    terminal: str,
    key_id: str,
    seq: int,
    ts: int,
    idem: str | None,
    body: bytes,
) -> None:
    kwargs = dict(
        method=method,
        path=path,
        terminal_id=terminal,
        key_id=key_id,
        seq=seq,
        timestamp=ts,
        idempotency_key=idem,
        body=body,
    )
    assert signing.canonical_request(**kwargs) == host_verify.canonical_request(**kwargs)  # type: ignore[arg-type]


def test_signature_covers_every_field() -> None:
    signer = _signer()
    base = dict(
        method="POST",
        path="/v1/refunds",
        terminal_id="T1",
        seq=7,
        timestamp=1000,
        idempotency_key="refund-1",
        body=b'{"amount":500}',
    )
    headers = signing.sign_request(signer, **base)  # type: ignore[arg-type]
    signature = signing.b64decode(headers[signing.HEADER_SIGNATURE], "sig")
    message = signing.canonical_request(key_id=signer.key_id, **base)  # type: ignore[arg-type]
    assert signing.verify_signature(signer.public_key, signature, message)
    changes = {
        "method": "PUT",
        "path": "/v1/voids",
        "terminal_id": "T2",
        "seq": 8,
        "timestamp": 1001,
        "idempotency_key": "refund-2",
        "body": b'{"amount":5000}',
    }
    for name, value in changes.items():
        altered = signing.canonical_request(key_id=signer.key_id, **{**base, name: value})  # type: ignore[arg-type]
        assert not signing.verify_signature(signer.public_key, signature, altered), name
    other = _signer(bytes(32))
    assert not signing.verify_signature(other.public_key, signature, message)


def test_headers_carry_the_protocol_fields() -> None:
    headers = signing.sign_request(
        _signer(),
        method="POST",
        path="/v1/voids",
        terminal_id="T9",
        seq=3,
        timestamp=99,
        idempotency_key="void-A1",
        body=b"{}",
    )
    assert headers["X-Pipos-Terminal"] == "T9"
    assert headers["X-Pipos-Seq"] == "3"
    assert headers["X-Pipos-Timestamp"] == "99"
    assert headers["Idempotency-Key"] == "void-A1"
    assert headers["X-Pipos-Key-Id"].startswith("ed25519:")


@pytest.mark.parametrize(
    ("field", "value"),
    [("path", "/v1/a\nb"), ("path", "v1/no-slash"), ("terminal_id", "T 1"), ("key_id", "a\nb")],
)
def test_values_that_would_break_the_format_are_refused(field: str, value: str) -> None:
    kwargs: dict[str, object] = dict(
        method="GET",
        path="/v1/terminal",
        terminal_id="T1",
        key_id="k1",
        seq=1,
        timestamp=1,
        idempotency_key=None,
        body=b"",
    )
    kwargs[field] = value
    with pytest.raises(SigningError):
        signing.canonical_request(**kwargs)  # type: ignore[arg-type]


def test_response_signature_is_bound_to_the_request_sequence() -> None:
    host_key = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
    pub = host_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    body = b'{"outcome":"approved"}'
    sig = host_verify.sign_response(host_key, terminal_id="T1", seq=5, status=200, body=body)
    headers = {signing.HEADER_HOST_SIGNATURE: sig}
    assert signing.verify_response(pub, headers, terminal_id="T1", seq=5, status=200, body=body)
    assert not signing.verify_response(pub, headers, terminal_id="T1", seq=6, status=200, body=body)
    assert not signing.verify_response(
        pub, headers, terminal_id="T1", seq=5, status=200, body=body + b" "
    )
    assert not signing.verify_response(pub, {}, terminal_id="T1", seq=5, status=200, body=body)


def test_offline_record_known_answer() -> None:
    """The exact bytes the terminal signs for an offline payment (docs/protocol.md): compact
    JSON with sorted keys, so the host, `pipos queue import` and a later version all read the
    same record the terminal signed."""
    record = signing.offline_record(
        transaction_id="t-1",
        terminal_id="PIPOS001",
        amount=1250,
        currency=978,
        captured_at=1_700_000_000,
        masked_pan="476173******0010",
        aid="A0000000031010",
        cryptogram="0102030405060708",
        atc="0001",
    )
    assert record == (
        b'{"aid":"A0000000031010","amount":1250,"atc":"0001","captured_at":1700000000,'
        b'"cryptogram":"0102030405060708","currency":978,"masked_pan":"476173******0010",'
        b'"terminal_id":"PIPOS001","transaction_id":"t-1"}'
    )
