"""Acquirer responses of any shape, correctly signed by the host key the terminal trusts."""

import base64
import json
import tempfile
from pathlib import Path

import atheris
import httpx
from common import main
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from terminal.acquirer.client import (
    AcquirerClient,
    AuthorisationRequest,
    OfflineItem,
    RefundRequest,
)
from terminal.domain.signing import (
    HEADER_HOST_SIGNATURE,
    HEADER_SEQ,
    HEADER_TERMINAL,
    canonical_response,
)
from terminal.store.keys import Keystore, SequenceCounter

HOST_KEY = Ed25519PrivateKey.generate()
ANSWER = {"status": 200, "body": b"{}"}


def handler(request: httpx.Request) -> httpx.Response:
    seq = int(request.headers[HEADER_SEQ])
    tid = request.headers[HEADER_TERMINAL]
    status, body = int(ANSWER["status"]), bytes(ANSWER["body"])  # type: ignore[call-overload]
    message = canonical_response(terminal_id=tid, seq=seq, status=status, body=body)
    signature = base64.b64encode(HOST_KEY.sign(message)).decode()
    return httpx.Response(status, content=body, headers={HEADER_HOST_SIGNATURE: signature})


DIRECTORY = Path(tempfile.mkdtemp(prefix="pipos-fuzz-"))
KEYS = Keystore.create(DIRECTORY, b"fuzz-device-secret-0123456789", scrypt_n=2**10)
KEYS.set_enrolment(
    terminal_id="T0001",
    merchant_id="M1",
    host_public_key=HOST_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    host_key_id="h1",
)
CLIENT = AcquirerClient(
    "http://127.0.0.1:9",
    KEYS,
    SequenceCounter(DIRECTORY / "sequence.json", block=100_000),
    transport=httpx.MockTransport(handler),
    sleep=lambda _s: None,
    retries=1,
    max_reversal_attempts=1,
)
OPERATIONS = [
    lambda: CLIENT.authorise(
        AuthorisationRequest(amount=100, currency=978, pan="4761739001010010")
    ),
    lambda: CLIENT.reverse(original_idempotency_key="auth-1"),
    lambda: CLIENT.refund(RefundRequest(amount=100, currency=978, original_ref="A1")),
    lambda: CLIENT.void("A1"),
    lambda: CLIENT.upload_offline([OfflineItem("o1", 100, 978, "4761739001010010")]),
    lambda: CLIENT.status(transaction_ref="A1"),
    lambda: CLIENT.settle(),
    lambda: CLIENT.download_parameters(),
]


def target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    op = OPERATIONS[fdp.ConsumeIntInRange(0, len(OPERATIONS) - 1)]
    ANSWER["status"] = fdp.PickValueInList([200, 201, 400, 409, 422])
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        ANSWER["body"] = json.dumps(json.loads(raw)).encode()
    except (UnicodeDecodeError, ValueError, RecursionError):
        ANSWER["body"] = raw
    op()


if __name__ == "__main__":
    main(target)
