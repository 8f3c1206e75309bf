"""A `sequence.json` restored from an older copy (issue 16, item 5/6): the host refused every
request as `stale_sequence` and the terminal declined 40 sales in a row, with no way back but a
technician. Now the host's signed refusal carries its last accepted number; the terminal checks
the signature, jumps its counter past it and sends the request once more (same idempotency
key): the next sale is approved, once. An answer that is not the host's (unsigned, or signed
by another key) moves nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from simulator.host import verify
from terminal.acquirer.client import (
    AcquirerClient,
    AuthorisationRequest,
    HostFaultError,
    HostRejectedError,
)
from terminal.store.keys import Keystore, SequenceCounter, SequenceError
from tests.conftest_host import (
    TEST_SCRYPT_N,
    TEST_SECRET,
    HostHandle,
    TerminalKeys,
    card_emv,
    enrolled_terminal,
)

VISA = "4761739001010010"


def _sale(amount: int) -> AuthorisationRequest:
    emv, psn = card_emv(VISA, amount)
    return AuthorisationRequest(amount, 826, VISA, pan_sequence=psn, emv=emv, brand="visa")


def test_a_restored_old_sequence_file_mends_itself_on_the_next_sale(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    directory = tmp_path / "terminal"
    keystore = Keystore.create(directory, TEST_SECRET, scrypt_n=TEST_SCRYPT_N)
    seq_file = directory / "sequence.json"
    counter = SequenceCounter(seq_file)
    old_copy = tmp_path / "sequence.json.old"
    with enrolled_terminal(inprocess_host, TerminalKeys(directory, keystore, counter)) as t:
        shutil.copy(seq_file, old_copy)  # the copy a restore brings back
        for i in range(40):
            assert t.client.authorise(_sale(1000 + i)).approved
        terminal_id = t.terminal_id
    counter.close()
    host_last = inprocess_host.app.host.store.one(
        "SELECT last_seq FROM terminals WHERE terminal_id = ?", (terminal_id,)
    )
    assert host_last is not None
    shutil.copy(old_copy, seq_file)

    counter = SequenceCounter(seq_file)
    assert counter.last_reserved < host_last["last_seq"]  # the rollback is real
    try:
        with inprocess_host.client(TerminalKeys(directory, keystore, counter)) as client:
            sale = client.authorise(_sale(2500), idempotency_key="auth-after-restore")
            assert sale.approved
            assert client.authorise(_sale(2600)).approved  # and the next ones too
        # Resynchronised durably: past the host's number, on disk.
        assert json.loads(seq_file.read_text())["reserved"] > host_last["last_seq"]
    finally:
        counter.close()
    ledger = inprocess_host.ledger(terminal_id)
    assert [r["amount"] for r in ledger if r["idempotency_key"] == "auth-after-restore"] == [2500]
    assert len(ledger) == 42
    stale = [r for r in inprocess_host.rejections() if r["code"] == "stale_sequence"]
    assert len(stale) == 1  # one refusal, then the retry past it


def _stale_answer(request: httpx.Request, key: Ed25519PrivateKey | None) -> httpx.Response:
    body = json.dumps(
        {"error": {"code": "stale_sequence", "message": "stale", "last_sequence": 10**12}}
    ).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        headers["X-Pipos-Host-Key-Id"] = verify.key_id_for(public)
        headers["X-Pipos-Host-Signature"] = verify.sign_response(
            key,
            terminal_id=request.headers["X-Pipos-Terminal"],
            seq=int(request.headers["X-Pipos-Seq"]),
            status=409,
            body=body,
        )
    return httpx.Response(409, content=body, headers=headers)


@pytest.mark.parametrize("signed_by", ["nobody", "another key", "the host"])
def test_only_the_hosts_signed_stale_answer_moves_the_counter(
    terminal_keys: TerminalKeys, signed_by: str
) -> None:
    host_key = Ed25519PrivateKey.generate()
    host_public = host_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signer = {"nobody": None, "another key": Ed25519PrivateKey.generate(), "the host": host_key}
    terminal_keys.keystore.set_enrolment(
        terminal_id="T0001",
        merchant_id="M1",
        host_public_key=host_public,
        host_key_id=verify.key_id_for(host_public),
    )
    seen: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(int(request.headers["X-Pipos-Seq"]))
        return _stale_answer(request, signer[signed_by])

    client = AcquirerClient(
        "http://127.0.0.1:9",
        terminal_keys.keystore,
        terminal_keys.sequence,
        transport=httpx.MockTransport(answer),
        sleep=lambda _s: None,
    )
    with client:
        if signed_by == "the host":
            # Believed: the counter jumps past the host's number, the request goes once more
            # (and, refused again, the refusal is passed on: no loop).
            with pytest.raises(HostRejectedError, match="stale_sequence"):
                client.whoami()
            assert seen[1] == 10**12 + 1
            assert len(seen) == 2
        else:
            # Not the host's answer: a lost one; the counter stays where it was.
            with pytest.raises(HostFaultError, match="signature"):
                client.whoami()
            assert len(seen) == 1
            assert terminal_keys.sequence.next() == seen[0] + 1


def test_advance_past_is_durable_and_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "sequence.json"
    with SequenceCounter(path, block=16) as counter:
        assert counter.next() == 1
        counter.advance_past(500)
        assert counter.next() == 501
        counter.advance_past(10)  # behind: nothing moves
        assert counter.next() == 502
    # Reserved on disk before it returned: a restart resumes above it.
    with SequenceCounter(path) as counter:
        assert counter.next() > 502
        with pytest.raises(SequenceError):
            counter.advance_past(-1)
