"""Terminal client <-> simulated acquirer host, end to end: in process through the host's ASGI
app (tests/inprocess.py), and over real HTTP on loopback for the faults that cut the TCP
connection or outlast the client's read timeout (integration)."""

from __future__ import annotations

import datetime
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from emv import cryptogram
from terminal.acquirer.client import (
    AcquirerError,
    AuthorisationRequest,
    AuthOutcome,
    BrandTotals,
    HostKeyMismatchError,
    HostRejectedError,
    HostUnreachable,
    ParametersInvalidError,
    RefundRequest,
    host_key_fingerprint,
    parse_host_key_fingerprint,
    verify_parameters,
)
from terminal.domain.signing import key_id_for, sign_request
from terminal.store.keys import Keystore, SequenceCounter
from tests.conftest_host import card_emv, signed_item

if TYPE_CHECKING:
    from tests.conftest_host import AcquirerTerminal, HostHandle, TerminalKeys


VISA = "4761739001010010"
MASTERCARD = "5413330089010434"
TEST_SCRYPT_N = 2**10
IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def _purchase(amount: int = 1000, pan: str = VISA, **kw: Any) -> AuthorisationRequest:
    """A card authorisation with its chip data: an ARQC (the host declines one without,
    Q1), for the virtual Visa under its issuer's key, which the host holds and checks."""
    brand = "visa" if pan.startswith("4") else "mastercard"
    if "emv" not in kw:
        emv, psn = card_emv(pan, amount)
        kw = {"emv": emv, "pan_sequence": psn, **kw}
    return AuthorisationRequest(amount=amount, currency=826, pan=pan, brand=brand, **kw)


def _bcd(value: int, digits: int) -> bytes:
    return bytes.fromhex(f"{value:0{digits}d}")


def _emv_with_arqc(amount: int, pan: str, psn: int, *, atc: int = 0x1C) -> dict[str, bytes]:
    emv = {
        "9F02": _bcd(amount, 12),
        "9F03": _bcd(0, 12),
        "9F1A": _bcd(826, 4),
        "95": bytes(5),
        "5F2A": _bcd(826, 4),
        "9A": bytes.fromhex("261125"),
        "9C": b"\x00",
        "9F37": bytes.fromhex("A1B2C3D4"),
        "82": bytes.fromhex("1980"),
        "9F36": atc.to_bytes(2, "big"),
    }
    master = cryptogram.derive_icc_master_key_option_a(IMK, pan, psn)
    session = cryptogram.derive_common_session_key(master, atc)
    data = cryptogram.build_ac_data(
        amount_authorised=amount,
        amount_other=0,
        terminal_country_code=826,
        tvr=bytes(5),
        transaction_currency_code=826,
        transaction_date=datetime.date(2026, 11, 25),
        transaction_type=0,
        unpredictable_number=emv["9F37"],
        aip=emv["82"],
        atc=atc,
    )
    emv["9F26"] = cryptogram.generate_ac(session, data)
    return emv


def _session_key(pan: str, psn: int, atc: int = 0x1C) -> bytes:
    master = cryptogram.derive_icc_master_key_option_a(IMK, pan, psn)
    return cryptogram.derive_common_session_key(master, atc)


def _raw(
    host: HostHandle,
    keys: TerminalKeys,
    *,
    path: str = "/v1/terminal",
    method: str = "GET",
    body: bytes = b"",
    seq: int | None = None,
    timestamp: int | None = None,
    idem: str | None = None,
    send_body: bytes | None = None,
    signer: Any = None,
) -> httpx.Response:
    headers = sign_request(
        signer or keys.keystore.signer(),
        method=method,
        path=path,
        terminal_id=keys.keystore.terminal_id,
        seq=keys.sequence.next() if seq is None else seq,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        idempotency_key=idem,
        body=body,
    )
    headers["Content-Type"] = "application/json"
    content = body if send_body is None else send_body
    return host.http.request(method, path, content=content or None, headers=headers)


def _rejected(host: HostHandle, code: str) -> bool:
    return any(r["code"] == code for r in host.rejections())


# --- enrolment and parameters -------------------------------------------------------------


def test_enrolment_gives_identity_and_host_key(inprocess_terminal: AcquirerTerminal) -> None:
    ks = inprocess_terminal.keystore
    assert ks.terminal_id == inprocess_terminal.enrolment.terminal_id
    assert ks.merchant_id == "M0001"
    assert ks.host_public_key == inprocess_terminal.host.host_public_key()
    who = inprocess_terminal.client.whoami()
    assert who["terminal_id"] == ks.terminal_id
    assert who["key_id"] == ks.key_id


def test_host_key_fingerprint_is_the_same_on_both_sides(inprocess_host: HostHandle) -> None:
    public = inprocess_host.host_public_key()
    fingerprint = host_key_fingerprint(public)
    assert fingerprint == inprocess_host.host_key_fingerprint
    assert fingerprint == inprocess_host.http.get("/v1/host-key").json()["host_key_fingerprint"]
    assert fingerprint.startswith(key_id_for(public))  # the key id is its first 16 digits
    assert len(fingerprint) == len("ed25519:") + 64
    assert parse_host_key_fingerprint(" " + fingerprint.upper().replace("ED25519", "ed25519"))
    for bad in ("ed25519:abc", "sha256:" + "0" * 64, fingerprint + "0", ""):
        with pytest.raises(AcquirerError, match="64 hex digits"):
            parse_host_key_fingerprint(bad)
    code = inprocess_host.http.post("/admin/activation-codes", json={"merchant_id": "M9"})
    assert code.json()["host_key_fingerprint"] == fingerprint


def test_enrolment_against_the_pin(inprocess_host: HostHandle, terminal_keys: TerminalKeys) -> None:
    with inprocess_host.client(terminal_keys) as client:
        wrong = "ed25519:" + "00" * 32
        code = inprocess_host.activation_code()
        with pytest.raises(HostKeyMismatchError) as err:
            client.enrol(code, host_key=wrong)
        assert wrong in str(err.value)
        assert inprocess_host.host_key_fingerprint in str(err.value)
        assert terminal_keys.keystore.terminal_id is None  # nothing stored
        assert terminal_keys.keystore.host_public_key is None
        # The host (or whoever answered) may have committed it: the same code, from the same
        # key, is answered with the same enrolment once the right key is pinned.
        enrolment = client.enrol(code, host_key=inprocess_host.host_key_fingerprint)
    assert terminal_keys.keystore.terminal_id == enrolment.terminal_id


def test_activation_code_is_one_time(
    inprocess_host: HostHandle,
    inprocess_terminal: AcquirerTerminal,
    tmp_path: Any,
) -> None:
    code = inprocess_host.activation_code("M0002")
    with pytest.raises(HostRejectedError) as err:
        inprocess_terminal.client.enrol(code)  # the same key cannot become a second terminal
    assert err.value.code == "key_already_enrolled"
    ks2 = Keystore.create(tmp_path / "other", b"another-secret-123", scrypt_n=TEST_SCRYPT_N)
    with SequenceCounter(tmp_path / "other" / "seq.json") as seq2:
        keys2 = type(inprocess_terminal.keys)(tmp_path / "other", ks2, seq2)
        with inprocess_host.client(keys2) as other:
            first = other.enrol(code)
            # A retry after a lost answer (same key, same code) gets the same enrolment.
            assert other.enrol(code) == first
            assert first.merchant_id == "M0002"
        ks3 = Keystore.create(tmp_path / "third", b"another-secret-456", scrypt_n=TEST_SCRYPT_N)
        with SequenceCounter(tmp_path / "third" / "seq.json") as seq3:
            keys3 = type(inprocess_terminal.keys)(tmp_path / "third", ks3, seq3)
            with inprocess_host.client(keys3) as third:
                with pytest.raises(HostRejectedError) as err:
                    third.enrol(code)
                assert err.value.code == "activation_code_used"
                with pytest.raises(HostRejectedError) as err:
                    third.enrol("NOT-A-CODE")
                assert err.value.code == "activation_code_invalid"


def test_parameters_are_verified_before_use(inprocess_terminal: AcquirerTerminal) -> None:
    client, host = inprocess_terminal.client, inprocess_terminal.host
    version = host.set_parameters({"terminal": {"country_code": "0826"}, "aids": [], "x": 1})
    params = client.download_parameters()
    assert params.version == version
    assert params.document["x"] == 1
    assert params.terminal_id == inprocess_terminal.keystore.terminal_id
    host_key = inprocess_terminal.keystore.host_public_key
    assert host_key is not None
    tampered = params.raw.replace(b'"x":1', b'"x":2')
    with pytest.raises(ParametersInvalidError, match="signature"):
        verify_parameters(
            tampered, params.signature, host_public_key=host_key, terminal_id=params.terminal_id
        )
    with pytest.raises(ParametersInvalidError, match="signature"):
        verify_parameters(
            params.raw, params.signature, host_public_key=bytes(32), terminal_id=params.terminal_id
        )
    with pytest.raises(ParametersInvalidError, match="another terminal"):
        verify_parameters(params.raw, params.signature, host_public_key=host_key, terminal_id="T")
    with pytest.raises(ParametersInvalidError, match="older"):
        client.download_parameters(min_version=version + 1)


def test_default_parameters_carry_aids_and_ca_keys(inprocess_terminal: AcquirerTerminal) -> None:
    params = inprocess_terminal.client.download_parameters()
    assert {a["aid"] for a in params.document["aids"]} >= {"A0000000031010", "A0000000041010"}
    assert "terminal" in params.document
    assert isinstance(params.document["ca_public_keys"], list)


# --- authorisation -------------------------------------------------------------------------


def test_authorisation_approved(inprocess_terminal: AcquirerTerminal) -> None:
    result = inprocess_terminal.client.authorise(_purchase(1250))
    assert result.outcome is AuthOutcome.APPROVED
    assert result.approved
    assert result.response_code == "00"
    assert result.arc == b"00"
    assert result.auth_code
    assert len(result.auth_code) == 6
    [row] = inprocess_terminal.host.ledger()
    assert row["status"] == "approved"
    assert row["amount"] == 1250
    assert row["masked_pan"] == "476173******0010"


def test_pan_never_stored_by_host(inprocess_terminal: AcquirerTerminal) -> None:
    inprocess_terminal.client.authorise(_purchase(700))
    assert VISA.encode() not in inprocess_terminal.host.db_path.read_bytes()


def test_decline_rules(inprocess_terminal: AcquirerTerminal) -> None:
    client, host = inprocess_terminal.client, inprocess_terminal.host
    assert client.authorise(_purchase(1051)).response_code == "51"  # insufficient funds
    host.set_rules(
        card_limits={MASTERCARD: 3000}, blocked_cards=[VISA], decline_amounts={"777": "05"}
    )
    blocked = client.authorise(_purchase(100))
    assert blocked.outcome is AuthOutcome.DECLINED
    assert blocked.response_code == "62"
    assert client.authorise(_purchase(2000, MASTERCARD)).approved
    over = client.authorise(_purchase(2000, MASTERCARD))
    assert over.response_code == "61"
    assert client.authorise(_purchase(777, MASTERCARD)).response_code == "05"


def test_arqc_verified_and_arpc_returned(inprocess_terminal: AcquirerTerminal) -> None:
    client, host = inprocess_terminal.client, inprocess_terminal.host
    host.set_issuer_key("476173", IMK)
    emv = _emv_with_arqc(1500, VISA, 1)
    result = client.authorise(_purchase(1500, pan_sequence=1, emv=emv))
    assert result.approved
    assert result.arqc_status == "valid"
    assert result.arpc is not None
    assert cryptogram.verify_arpc_method_1(_session_key(VISA, 1), emv["9F26"], b"00", result.arpc)

    forged = dict(emv, **{"9F26": bytes(8)})
    bad = client.authorise(_purchase(1500, pan_sequence=1, emv=forged))
    assert bad.outcome is AuthOutcome.DECLINED
    assert bad.arqc_status == "invalid"
    assert bad.arpc is None

    # The amount is covered by the ARQC: a request amount differing from 9F02 is declined.
    mismatch = client.authorise(_purchase(9999, pan_sequence=1, emv=emv))
    assert mismatch.response_code == "13"


def test_arpc_for_a_decline_carries_the_decline_code(inprocess_terminal: AcquirerTerminal) -> None:
    inprocess_terminal.host.set_issuer_key("476173", IMK)
    emv = _emv_with_arqc(2051, VISA, 1)
    result = inprocess_terminal.client.authorise(_purchase(2051, pan_sequence=1, emv=emv))
    assert result.response_code == "51"
    assert result.arpc is not None
    assert cryptogram.verify_arpc_method_1(_session_key(VISA, 1), emv["9F26"], b"51", result.arpc)


# --- idempotency ----------------------------------------------------------------------------


def test_duplicate_idempotency_key_returns_first_result(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    client = inprocess_terminal.client
    first = client.authorise(_purchase(1200), idempotency_key="auth-dup-1")
    second = client.authorise(_purchase(1200), idempotency_key="auth-dup-1")
    assert second == first
    assert len(inprocess_terminal.host.ledger()) == 1


def test_duplicate_is_byte_for_byte_and_reuse_is_refused(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    host, keys = inprocess_terminal.host, inprocess_terminal.keys
    body = json.dumps({"amount": 900, "currency": 826, "pan": VISA}).encode()
    path = "/v1/authorisations"
    a = _raw(host, keys, method="POST", path=path, body=body, idem="auth-raw-1")
    b = _raw(host, keys, method="POST", path=path, body=body, idem="auth-raw-1")
    assert a.status_code == 200
    assert a.content == b.content
    other = json.dumps({"amount": 901, "currency": 826, "pan": VISA}).encode()
    c = _raw(host, keys, method="POST", path=path, body=other, idem="auth-raw-1")
    assert c.status_code == 422
    assert c.json()["error"]["code"] == "idempotency_key_reused"
    assert len(host.ledger()) == 1
    missing = _raw(host, keys, method="POST", path=path, body=body)
    assert missing.json()["error"]["code"] == "missing_idempotency_key"


# --- attacks --------------------------------------------------------------------------------


def test_tampered_body_is_rejected_and_recorded(inprocess_terminal: AcquirerTerminal) -> None:
    host, keys = inprocess_terminal.host, inprocess_terminal.keys
    body = json.dumps({"amount": 100, "currency": 826, "pan": VISA}).encode()
    evil = body.replace(b"100", b"900")
    r = _raw(
        host, keys, method="POST", path="/v1/authorisations", body=body, idem="k1", send_body=evil
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "bad_signature"
    assert _rejected(host, "bad_signature")
    assert host.ledger() == []


def test_wrong_key_is_rejected(inprocess_terminal: AcquirerTerminal, tmp_path: Any) -> None:
    host, keys = inprocess_terminal.host, inprocess_terminal.keys
    impostor = Keystore.create(tmp_path / "impostor", b"impostor-secret-1", scrypt_n=TEST_SCRYPT_N)
    real = keys.keystore.signer()
    forged = type(real)(key_id=real.key_id, sign=impostor.sign, public_key=impostor.public_key)
    r = _raw(host, keys, signer=forged)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "bad_signature"
    unknown = _raw(host, keys, signer=impostor.signer())
    assert unknown.json()["error"]["code"] == "unknown_key"
    assert _rejected(host, "unknown_key")


def test_old_sequence_and_replay_are_rejected(inprocess_terminal: AcquirerTerminal) -> None:
    host, keys = inprocess_terminal.host, inprocess_terminal.keys
    ok = _raw(host, keys)
    assert ok.status_code == 200
    stale = _raw(host, keys, seq=1)
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_sequence"
    replay = host.http.request("GET", "/v1/terminal", headers=dict(ok.request.headers))
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "replayed_request"
    assert _rejected(host, "stale_sequence")
    assert _rejected(host, "replayed_request")


def test_timestamp_outside_window_is_rejected(inprocess_terminal: AcquirerTerminal) -> None:
    host, keys = inprocess_terminal.host, inprocess_terminal.keys
    r = _raw(host, keys, timestamp=int(time.time()) - 3600)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "timestamp_out_of_window"


def test_unsigned_and_unknown_terminal_are_rejected(inprocess_host: HostHandle) -> None:
    r = inprocess_host.http.post("/v1/authorisations", json={})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_header"
    assert _rejected(inprocess_host, "missing_header")


def test_client_rejects_a_forged_response(inprocess_terminal: AcquirerTerminal) -> None:
    # A response not signed by the host (here: corrupted in transit) is never trusted;
    # for an authorisation that means a reversal, and no approval.
    host = inprocess_terminal.host
    host.set_fault("/v1/authorisations", "corrupt", times=1)
    result = inprocess_terminal.client.authorise(_purchase(1300))
    assert result.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    assert result.reversal_status == "reversed"
    [row] = host.ledger()
    assert row["status"] == "reversed"


# --- money operations -----------------------------------------------------------------------


def test_reversal_void_refund_status_and_settlement(inprocess_terminal: AcquirerTerminal) -> None:
    client, _host = inprocess_terminal.client, inprocess_terminal.host
    a = client.authorise(_purchase(1000))
    b = client.authorise(_purchase(2500, MASTERCARD))
    c = client.authorise(_purchase(400))
    d = client.authorise(_purchase(300))
    assert client.reverse(original_idempotency_key=a.idempotency_key).status == "reversed"
    assert client.reverse(original_idempotency_key=a.idempotency_key).status == "reversed"
    assert c.transaction_ref is not None
    assert d.transaction_ref is not None
    assert client.void(c.transaction_ref).status == "voided"
    with pytest.raises(HostRejectedError) as err:
        client.void(c.transaction_ref, idempotency_key="void-again-x")
    assert err.value.code == "not_voidable"
    assert b.transaction_ref is not None
    refund = client.refund(RefundRequest(amount=500, currency=826, original_ref=b.transaction_ref))
    assert refund.status == "approved"
    with pytest.raises(HostRejectedError) as err:
        client.refund(RefundRequest(amount=2500, currency=826, original_ref=b.transaction_ref))
    assert err.value.code == "refund_exceeds_sale"

    status = client.status(transaction_ref=a.transaction_ref)
    assert status.status == "reversed"
    assert client.status(idempotency_key=b.idempotency_key).status == "approved"
    with pytest.raises(HostRejectedError):
        client.status(transaction_ref="A0000")

    ks = inprocess_terminal.keystore
    offline = client.upload_offline(
        [signed_item(ks, offline_id="off-1", amount=800, currency=826, pan=VISA, brand="visa")]
    )
    assert offline.items[0].result == "approved"

    expected = (
        BrandTotals("mastercard", 826, 1, 2500, 1, 500, 2000),
        BrandTotals("visa", 826, 2, 1100, 0, 0, 1100),
    )
    settlement = client.settle(terminal_totals=expected)
    assert settlement.totals == expected
    assert settlement.in_balance is True
    # Void and refund (the voided sale c is excluded; d=300 + offline 800 = 1100 visa).
    assert client.settle().totals == ()
    with pytest.raises(HostRejectedError) as err:
        client.reverse(original_ref=d.transaction_ref)
    assert err.value.code == "already_settled"


def test_offline_batch_is_deduplicated_per_item(inprocess_terminal: AcquirerTerminal) -> None:
    client, host = inprocess_terminal.client, inprocess_terminal.host
    ks = inprocess_terminal.keystore
    items = [
        signed_item(ks, offline_id=f"off-{i}", amount=100 + i, currency=826, pan=MASTERCARD)
        for i in range(3)
    ]
    first = client.upload_offline(items[:2])
    assert [i.result for i in first.items] == ["approved", "approved"]
    again = client.upload_offline(items)  # a new batch re-sending two already uploaded
    assert [i.result for i in again.items] == ["duplicate", "duplicate", "approved"]
    assert len(host.ledger()) == 3


# --- faults ---------------------------------------------------------------------------------
# A cut connection and a read timeout are a real network's: these run on a host of their own
# on 127.0.0.1 (acquirer_terminal, integration).


def test_connect_failure_is_host_unreachable(
    terminal_keys: TerminalKeys, acquirer_client_factory: Any
) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    terminal_keys.keystore.set_enrolment(
        terminal_id="T1", merchant_id="M1", host_public_key=bytes(32), host_key_id="x"
    )
    with (
        acquirer_client_factory(f"http://127.0.0.1:{port}", terminal_keys) as client,
        pytest.raises(HostUnreachable),
    ):
        client.authorise(_purchase())


@pytest.mark.integration
def test_lost_response_is_reversed_and_acknowledged(acquirer_terminal: AcquirerTerminal) -> None:
    client, host = acquirer_terminal.client, acquirer_terminal.host
    host.set_fault("/v1/authorisations", "drop_after_commit", times=1)
    host.set_fault("/v1/reversals", "refuse", times=2)  # the reversal itself is retried
    result = client.authorise(_purchase(4200))
    assert result.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    assert result.reversal_status == "reversed"
    [row] = host.ledger()
    assert row["amount"] == 4200
    assert row["status"] == "reversed"
    assert client.status(idempotency_key=result.idempotency_key).status == "reversed"


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["http_500", "refuse"])
def test_unprocessed_authorisation_is_reversed_and_refused_later(
    acquirer_terminal: AcquirerTerminal, mode: str
) -> None:
    client, host = acquirer_terminal.client, acquirer_terminal.host
    host.set_fault("/v1/authorisations", mode, times=1)
    result = client.authorise(_purchase(1800), idempotency_key="auth-late-1")
    assert result.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    assert result.reversal_status == "no_original"
    # The original arriving later (a retry, a slow network) is refused, not approved.
    late = client.authorise(_purchase(1800), idempotency_key="auth-late-1")
    assert late.outcome is AuthOutcome.DECLINED
    assert host.ledger() == []


@pytest.mark.integration
def test_delayed_authorisation_is_reversed_before_it_lands(
    acquirer_host: HostHandle, terminal_keys: TerminalKeys, acquirer_client_factory: Any
) -> None:
    client = acquirer_client_factory(acquirer_host.url, terminal_keys, read_timeout=0.3)
    client.enrol(acquirer_host.activation_code())
    acquirer_host.set_fault("/v1/authorisations", "delay", times=1, delay_ms=3000)
    result = client.authorise(_purchase(2200))
    assert result.outcome is AuthOutcome.REVERSED_AFTER_LOST_RESPONSE
    deadline = time.monotonic() + 30
    # The slow original lands after the reversal: its sequence number is older than the
    # reversal's, so the host refuses it (and the tombstone would refuse it anyway).
    while not any(r["path"] == "/v1/authorisations" for r in acquirer_host.rejections()):
        assert time.monotonic() < deadline, "the delayed request never reached the host"
        time.sleep(0.05)
    [late] = acquirer_host.rejections()
    assert late["code"] == "stale_sequence"
    assert acquirer_host.ledger() == []
    client.close()


@pytest.mark.integration
def test_refund_with_lost_response_is_not_duplicated(acquirer_terminal: AcquirerTerminal) -> None:
    client, host = acquirer_terminal.client, acquirer_terminal.host
    sale = client.authorise(_purchase(3000))
    assert sale.transaction_ref is not None
    host.set_fault("/v1/refunds", "drop_after_commit", times=1)
    refund = client.refund(
        RefundRequest(amount=1000, currency=826, original_ref=sale.transaction_ref)
    )
    assert refund.status == "approved"
    refunds = [r for r in host.ledger() if r["kind"] == "refund"]
    assert len(refunds) == 1


# --- key rotation ---------------------------------------------------------------------------


def test_key_rotation_with_host(inprocess_terminal: AcquirerTerminal) -> None:
    client, host, keys = inprocess_terminal.client, inprocess_terminal.host, inprocess_terminal.keys
    old = keys.keystore.signer()
    new_id = client.rotate_key()
    assert keys.keystore.key_id == new_id != old.key_id
    assert client.whoami()["key_id"] == new_id
    r = _raw(host, keys, signer=old)
    assert r.json()["error"]["code"] == "retired_key"
    assert client.authorise(_purchase(100)).approved


@pytest.mark.integration
def test_key_rotation_recovers_from_lost_response(acquirer_terminal: AcquirerTerminal) -> None:
    client, host, ks = acquirer_terminal.client, acquirer_terminal.host, acquirer_terminal.keystore
    host.set_fault("/v1/keys/rotate", "drop_after_commit", times=1)
    pending = ks.begin_rotation()
    new_id = client.rotate_key()
    assert new_id == pending.key_id
    assert ks.key_id == new_id
    assert client.whoami()["key_id"] == new_id
