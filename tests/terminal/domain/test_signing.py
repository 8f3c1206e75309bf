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


# --- the offline record against the item: terminal (import) and host (upload) agree --------
#
# The comparison is written twice, in terminal/service/transfer.py (`pipos queue import`,
# `pipos unit import`) and in simulator/host/service.py (the upload), because the simulator
# may not import the terminal (two sides of one protocol). These tests run both over the
# same payments, each in the form its side gets it (the backup's payment document; the
# upload item as the host validates it), and want the same verdict, field by field.

_VISA = "4761739001010010"
#: Another card of the same BIN and last 4: the same masked PAN.
_TWIN = "4761730000000010"


def _card_payment() -> dict[str, object]:
    return {
        "transaction_id": "S260101-00000000000a",
        "amount": 1250,
        "currency": 978,
        "captured_at": 1_700_000_000,
        "pan": _VISA,
        "aid": "A0000000031010",
        "emv": {"9F26": "0102030405060708", "9F36": "001C", "9F27": "40"},
    }


def _record_of(p: dict[str, object], **changes: object) -> dict[str, object]:
    from emv.pan import mask_pan

    emv = p["emv"]
    assert isinstance(emv, dict)
    record: dict[str, object] = {
        "transaction_id": p["transaction_id"],
        "terminal_id": "T1",
        "amount": p["amount"],
        "currency": p["currency"],
        "captured_at": p["captured_at"],
        "masked_pan": mask_pan(str(p["pan"] or "")),
        "aid": p["aid"] or "",
        "cryptogram": emv.get("9F26", ""),
        "atc": emv.get("9F36", ""),
    }
    record.update(changes)
    return record


def _verdicts(record: dict[str, object], p: dict[str, object]) -> tuple[str | None, str | None]:
    """(the import's, the host's) first mismatched field, or None for a match."""
    import json

    from offline_queue import CardData, OfflinePayment
    from offline_queue.store import payment_document
    from simulator.host.app import OfflineItem as HostItem
    from simulator.host.service import mismatched_field as host_mismatch
    from terminal.acquirer.client import OfflineItem
    from terminal.service.transfer import mismatched_field as import_mismatch

    emv = p["emv"]
    assert isinstance(emv, dict)
    payment = OfflinePayment(
        transaction_id=str(p["transaction_id"]),
        amount=int(str(p["amount"])),
        currency=int(str(p["currency"])),
        card=CardData(pan=str(p["pan"])),
        captured_at=int(str(p["captured_at"])),
        emv={str(k): str(v) for k, v in emv.items()},
        aid=str(p["aid"]) if p["aid"] else None,
    )
    # What the import reads: the backup's document of the payment.
    document = payment_document(payment)
    # What the host reads: the uplink's item (terminal/acquirer/uplink.py), as the host's
    # request model validates it.
    item = OfflineItem(
        offline_id=payment.transaction_id,
        amount=payment.amount,
        currency=payment.currency,
        pan=payment.card.pan,
        aid=payment.aid,
        emv={tag: bytes.fromhex(value) for tag, value in payment.emv.items()},
        captured_at=payment.captured_at,
    )
    host_item = HostItem.model_validate(json.loads(json.dumps(item.to_json()))).model_dump()
    ours = import_mismatch(record, document)
    theirs = host_mismatch(record, host_item)
    return (None if ours is None else ours[0]), (None if theirs is None else theirs[0])


def _with(p: dict[str, object], **changes: object) -> dict[str, object]:
    out = dict(p)
    emv_changes = changes.pop("emv", None)
    out.update(changes)
    if isinstance(emv_changes, dict):
        emv = dict(p["emv"])  # type: ignore[call-overload]
        for tag, value in emv_changes.items():
            if value is None:
                emv.pop(tag, None)
            else:
                emv[tag] = value
        out["emv"] = emv
    return out


_CASES: dict[str, tuple[dict[str, object], dict[str, object], str | None]] = {
    # name: (changes to the signed record, changes to the payment, expected field)
    "as signed": ({}, {}, None),
    "hex in lower case": ({}, {"emv": {"9F26": "0102030405060708".lower()}}, None),
    "amount": ({}, {"amount": 125_000}, "amount"),
    "currency": ({}, {"currency": 826}, "currency"),
    "captured later": ({}, {"captured_at": 1_700_000_500}, "captured_at"),
    "another id": ({}, {"transaction_id": "S260101-00000000000b"}, "transaction_id"),
    "another card": ({}, {"pan": "4761739001010028"}, "masked_pan"),
    # The masked PAN fits the twin; its cryptogram does not.
    "twin card, its own cryptogram": (
        {},
        {"pan": _TWIN, "emv": {"9F26": "A1A2A3A4A5A6A7A8"}},
        "cryptogram",
    ),
    "twin card, cryptogram emptied in both": (
        {"cryptogram": ""},
        {"pan": _TWIN, "emv": {"9F26": None}},
        "cryptogram",
    ),
    "no ATC in either": ({"atc": ""}, {"emv": {"9F36": None}}, "atc"),
    "no AID in either": ({"aid": ""}, {"aid": None}, "aid"),
    "nothing of the card signed (today's code payment record)": (
        {"cryptogram": "", "atc": "", "aid": ""},
        {"pan": _TWIN, "emv": {"9F26": None, "9F36": None}, "aid": None},
        "cryptogram",
    ),
    "record without the cryptogram field": ({"cryptogram": None}, {}, "cryptogram"),
    "ATC changed": ({}, {"emv": {"9F36": "001D"}}, "atc"),
    "AID changed": ({}, {"aid": "A0000000041010"}, "aid"),
    "amount signed as a boolean": ({"amount": True}, {"amount": 1}, "amount"),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_the_import_and_the_host_check_an_offline_record_alike(case: str) -> None:
    record_changes, payment_changes, expected = _CASES[case]
    payment = _with(_card_payment(), **payment_changes)
    record = _record_of(_card_payment(), **record_changes)
    record = {k: v for k, v in record.items() if v is not None}
    assert _verdicts(record, payment) == (expected, expected)


#: Values each side may hold for a field: the payment's are valid (the queue validated
#: them); the record is whatever was signed.
_PAYMENT_VALUES: dict[str, st.SearchStrategy[object]] = {
    "transaction_id": st.sampled_from(["S260101-00000000000a", "S260101-00000000000b"]),
    "amount": st.integers(min_value=1, max_value=10**6),
    "currency": st.sampled_from([978, 826, 840]),
    "captured_at": st.sampled_from([1_700_000_000, 1_700_000_001]),
    "pan": st.sampled_from([_VISA, _TWIN, "4761739001010028"]),
    "aid": st.sampled_from([None, "A0000000031010", "a0000000031010", "A0000000041010"]),
    "9F26": st.sampled_from([None, "0102030405060708", "A1A2A3A4A5A6A7A8"]),
    "9F36": st.sampled_from([None, "001C", "001c", "001D"]),
}
_RECORD_NAMES = {"pan": "masked_pan", "9F26": "cryptogram", "9F36": "atc"}
_RECORD_EXTRA: st.SearchStrategy[object] = st.sampled_from(
    ["", None, True, "476173******0010", 1250, "A0000000031010"]
)


@given(data=st.data())
def test_the_two_checkers_agree_on_any_changes(data: st.DataObject) -> None:
    payment = _card_payment()
    record = _record_of(payment)
    for field in data.draw(st.sets(st.sampled_from(sorted(_PAYMENT_VALUES)), max_size=3)):
        value = data.draw(_PAYMENT_VALUES[field])
        if field in ("9F26", "9F36"):
            payment = _with(payment, emv={field: value})
        else:
            payment = _with(payment, **{field: value})
    for field in data.draw(st.sets(st.sampled_from(sorted(_PAYMENT_VALUES)), max_size=2)):
        value = data.draw(st.one_of(_PAYMENT_VALUES[field], _RECORD_EXTRA))
        if field == "pan" and isinstance(value, str) and value.isdigit():
            from emv.pan import mask_pan

            value = mask_pan(value)
        record[_RECORD_NAMES.get(field, field)] = value
    record = {k: v for k, v in record.items() if v is not None}
    ours, theirs = _verdicts(record, payment)
    assert ours == theirs
