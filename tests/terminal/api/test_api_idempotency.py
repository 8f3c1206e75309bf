"""Idempotency-Key on every request that moves money, and the unique external_reference
option (issue 18 item 1; docs/api.md, "Idempotency"): the real demo stack on the session's
simulated acquirer, over HTTP on loopback, as a cash register retries after a lost answer.
Integration tests: a real API server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.api.server import ApiSettings, PinGuard, create_api
from terminal.api.stack import ApiServer, DemoStack, start_demo_stack
from terminal.security.merchant_pin import FILE as PIN_FILE
from terminal.security.merchant_pin import KEY_PURPOSE, MerchantPin
from terminal.store.audit import AuditLog
from terminal.store.idempotency import FILE, IdempotencyStore, fingerprint
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle

pytestmark = pytest.mark.integration

PIN = "2468"
REPLAYED = "Idempotent-Replayed"


@contextmanager
def _stack(state_dir: Path, host: HostHandle) -> Iterator[DemoStack]:
    s = start_demo_stack(
        state_dir,
        host_url=host.url,
        activation_code=host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin=PIN,
        background=False,
    )
    try:
        yield s
    finally:
        s.close()


@contextmanager
def _client(url: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def stack(tmp_path: Path, session_host: HostHandle) -> Iterator[DemoStack]:
    with _stack(tmp_path, session_host) as s:
        yield s


@pytest.fixture
def api(stack: DemoStack) -> Iterator[httpx.Client]:
    with _client(stack.api.url, stack.token) as client:
        yield client


SALE = {"amount": 1250, "currency": 978, "external_reference": "ECR-77"}


def _sale(api: httpx.Client, key: str | None, body: dict[str, Any] = SALE) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return api.post("/api/v1/sales", json=body, headers=headers)


def _pay(stack: DemoStack, api: httpx.Client, txn_id: str, card: str = "visa") -> dict[str, Any]:
    assert api.post("/api/v1/simulator/present", json={"card": card}).status_code == 200
    stack.checkout.wait(txn_id, timeout=30)
    return dict(api.get(f"/api/v1/transactions/{txn_id}").json())


def _sales(stack: DemoStack) -> list[dict[str, Any]]:
    views, _ = stack.checkout.transactions(limit=500, kind="sale")
    return list(views)


def _host_rows(host: HostHandle, stack: DemoStack, kind: str) -> list[dict[str, Any]]:
    return [r for r in host.ledger(stack.checkout.terminal_id) if r["kind"] == kind]


def test_a_sale_retried_with_its_key_after_a_restart_is_the_same_sale_authorised_once(
    tmp_path: Path, session_host: HostHandle
) -> None:
    with _stack(tmp_path, session_host) as first, _client(first.api.url, first.token) as api:
        created = _sale(api, "sale-0001")
        assert created.status_code == 202, created.text
        assert REPLAYED not in created.headers
        txn = created.json()["id"]
        assert _pay(first, api, txn)["state"] == "approved"
        # The answer was lost: the register sends the same request again.
        again = _sale(api, "sale-0001")
        assert again.status_code == 202
        assert again.headers[REPLAYED] == "true"
        # The sale as it stands now, not as it stood when the first answer was given.
        assert again.json()["id"] == txn
        assert again.json()["state"] == "approved"
        terminal_id = first.checkout.terminal_id
    # The terminal restarts on the same files, with the same acquirer.
    with _stack(tmp_path, session_host) as second, _client(second.api.url, second.token) as api:
        assert second.checkout.terminal_id == terminal_id
        replay = _sale(api, "sale-0001")
        assert replay.status_code == 202, replay.text
        assert replay.headers[REPLAYED] == "true"
        assert replay.json()["id"] == txn
        assert replay.json()["state"] == "approved"
        assert [s["id"] for s in _sales(second)] == [txn]
        # The acquirer saw one authorisation.
        assert len(_host_rows(session_host, second, "sale")) == 1
    assert (tmp_path / "terminal" / FILE).stat().st_mode & 0o777 == 0o600


def test_the_same_key_with_another_body_or_path_is_refused(
    stack: DemoStack, api: httpx.Client
) -> None:
    first = _sale(api, "order-9")
    assert first.status_code == 202
    other = _sale(api, "order-9", {**SALE, "amount": 1251})
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert other.json()["error"]["field"] == "Idempotency-Key"
    # The same key on another operation is another request too.
    cancel = api.post(
        f"/api/v1/transactions/{first.json()['id']}/cancel", headers={"Idempotency-Key": "order-9"}
    )
    assert cancel.status_code == 422
    assert cancel.json()["error"]["code"] == "idempotency_key_reused"
    # The same meaning is the same request: a default spelled out changes nothing.
    same = _sale(api, "order-9", {**SALE, "method": "card", "unique_reference": False})
    assert same.status_code == 202
    assert same.headers[REPLAYED] == "true"
    assert len(_sales(stack)) == 1
    assert api.post("/api/v1/cancel").status_code == 200


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_an_invalid_key_is_refused_with_what_a_key_may_be(
    stack: DemoStack, api: httpx.Client, key: str
) -> None:
    answer = api.post(
        "/api/v1/sales",
        json=SALE,
        headers=[(b"Idempotency-Key", key.encode("latin-1"))],
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_idempotency_key"
    assert "1 to 255 printable ASCII" in error["message"]
    assert _sales(stack) == []


def test_a_key_is_the_registers_own(stack: DemoStack, api: httpx.Client) -> None:
    """Two registers on one terminal (two tokens): the same key from each is two keys."""
    directory = stack.checkout.journal.path.parent
    pin = MerchantPin(
        directory / PIN_FILE,
        AuditLog(directory / "audit.log"),
        device_key=stack.runtime.keystore.data_key(KEY_PURPOSE),
        scrypt_n=TEST_SCRYPT_N,
    )
    settings = ApiSettings(
        tokens={"token-a": "register-1", "token-b": "register-2"}, pin_guard=PinGuard(pin)
    )
    server = ApiServer(create_api(stack.checkout, settings))
    server.start()
    try:
        mine = _sale(api, "k-1")  # register-1, on the stack's own API
        assert mine.status_code == 202
        assert api.post("/api/v1/cancel").status_code == 200
        with _client(server.url, "token-b") as other:
            theirs = _sale(other, "k-1")
            assert theirs.status_code == 202, theirs.text
            assert REPLAYED not in theirs.headers
            assert theirs.json()["id"] != mine.json()["id"]
            assert other.post("/api/v1/cancel").status_code == 200
        with _client(server.url, "token-a") as same_register:
            again = _sale(same_register, "k-1")
            assert again.headers.get(REPLAYED) == "true"
            assert again.json()["id"] == mine.json()["id"]
            assert again.json()["state"] == "cancelled"
    finally:
        server.stop()
    assert len(_sales(stack)) == 2


def test_a_refund_retried_with_its_key_refunds_once(
    stack: DemoStack, api: httpx.Client, session_host: HostHandle
) -> None:
    sale = _sale(api, None).json()["id"]
    assert _pay(stack, api, sale)["state"] == "approved"
    body = {"pin": PIN, "amount": 500, "external_reference": "RF-1"}
    path = f"/api/v1/transactions/{sale}/refund"
    first = api.post(path, json=body, headers={"Idempotency-Key": "refund-1"})
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "approved"
    again = api.post(path, json=body, headers={"Idempotency-Key": "refund-1"})
    assert again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    # A retry needs the PIN as the first request did (no answer for a wrong one).
    wrong = api.post(path, json={**body, "pin": "1357"}, headers={"Idempotency-Key": "refund-1"})
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "wrong_pin"
    assert api.get(f"/api/v1/transactions/{sale}").json()["refunded_amount"] == 500
    assert [r["amount"] for r in _host_rows(session_host, stack, "refund")] == [500]
    # Nothing in the store holds the PIN.
    assert PIN.encode() not in (stack.checkout.journal.path.parent / FILE).read_bytes()


def test_a_void_and_an_end_of_day_retried_with_their_keys_happen_once(
    stack: DemoStack, api: httpx.Client
) -> None:
    sale = _sale(api, None).json()["id"]
    assert _pay(stack, api, sale)["state"] == "approved"
    path = f"/api/v1/transactions/{sale}/void"
    voided = api.post(path, json={"pin": PIN}, headers={"Idempotency-Key": "void-1"})
    assert voided.status_code == 200, voided.text
    again = api.post(path, json={"pin": PIN}, headers={"Idempotency-Key": "void-1"})
    assert again.headers[REPLAYED] == "true"
    assert again.json()["id"] == voided.json()["id"]
    closed = api.post("/api/v1/end-of-day", json={"pin": PIN}, headers={"Idempotency-Key": "eod"})
    assert closed.status_code == 200, closed.text
    repeat = api.post("/api/v1/end-of-day", json={"pin": PIN}, headers={"Idempotency-Key": "eod"})
    assert repeat.headers[REPLAYED] == "true"
    assert repeat.json()["batch_id"] == closed.json()["batch_id"]
    assert len(api.get("/api/v1/batches").json()["batches"]) == 1


def test_a_refusal_that_may_change_is_not_kept(stack: DemoStack, api: httpx.Client) -> None:
    running = _sale(api, None)
    busy = _sale(api, "after-the-first", {**SALE, "external_reference": "ECR-78"})
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "busy"
    assert api.post(f"/api/v1/transactions/{running.json()['id']}/cancel").status_code == 200
    # The key was released with the 409: the retry is processed.
    retried = _sale(api, "after-the-first", {**SALE, "external_reference": "ECR-78"})
    assert retried.status_code == 202, retried.text
    assert REPLAYED not in retried.headers
    # A refusal for good is kept: the same answer again.
    unknown = api.post("/api/v1/transactions/T-NONE/cancel", headers={"Idempotency-Key": "x"})
    assert api.post("/api/v1/cancel").status_code == 200
    assert unknown.status_code == 404
    again = api.post("/api/v1/transactions/T-NONE/cancel", headers={"Idempotency-Key": "x"})
    assert (again.status_code, again.headers[REPLAYED]) == (404, "true")
    assert again.json() == unknown.json()


def test_concurrent_requests_with_one_key_make_one_sale(
    stack: DemoStack, api: httpx.Client
) -> None:
    barrier = threading.Barrier(4)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with _client(stack.api.url, stack.token) as own:
            barrier.wait()
            answer = _sale(own, "same-time")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 4
    processed = [a for a in answers if a.status_code == 202 and REPLAYED not in a.headers]
    assert len(processed) == 1, [(a.status_code, a.text) for a in answers]
    txn = processed[0].json()["id"]
    for answer in answers:
        if answer is processed[0]:
            continue
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "idempotency_in_progress"
            assert answer.json()["error"]["reason"] == "running"
        else:
            assert (answer.status_code, answer.headers[REPLAYED]) == (202, "true")
            assert answer.json()["id"] == txn
    assert [s["id"] for s in _sales(stack)] == [txn]
    assert api.post("/api/v1/cancel").status_code == 200


def test_a_request_the_terminal_stopped_processing_is_not_run_again(
    stack: DemoStack, api: httpx.Client
) -> None:
    """A key claimed by an earlier run of the terminal that never stored its answer (a power
    cut while processing): the repeat is told to look the transaction up, not run twice."""
    earlier = IdempotencyStore(stack.checkout.journal.path.parent / FILE)
    earlier.claim("register-1", "cut", fingerprint("POST", "/api/v1/sales", _model(SALE)))
    earlier.close()
    answer = _sale(api, "cut")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "idempotency_in_progress"
    assert answer.json()["error"]["reason"] == "interrupted"
    assert "external_reference" in answer.json()["error"]["message"]
    assert _sales(stack) == []


def _model(body: dict[str, Any]) -> dict[str, Any]:
    """The sale body as the API reads it (defaults filled in): what its fingerprint covers."""
    return {"method": "card", "unique_reference": False, **body}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_kept_a_day_then_purged(stack: DemoStack) -> None:
    clock = FakeClock()
    store = IdempotencyStore(
        stack.checkout.journal.path.parent / "keys-clocked.sqlite3", clock=clock
    )
    directory = stack.checkout.journal.path.parent
    pin = MerchantPin(
        directory / PIN_FILE,
        AuditLog(directory / "audit.log"),
        device_key=stack.runtime.keystore.data_key(KEY_PURPOSE),
        scrypt_n=TEST_SCRYPT_N,
    )
    settings = ApiSettings(tokens={"t": "register-1"}, pin_guard=PinGuard(pin), idempotency=store)
    server = ApiServer(create_api(stack.checkout, settings))
    server.start()
    try:
        with _client(server.url, "t") as api:
            first = _sale(api, "day-old")
            assert first.status_code == 202
            assert api.post("/api/v1/cancel").status_code == 200
            clock.now += 24 * 3600 - 1  # a day less a second: still kept
            kept = _sale(api, "day-old")
            assert kept.headers.get(REPLAYED) == "true"
            assert kept.json()["id"] == first.json()["id"]
            clock.now += 2  # more than a day: the key is new again
            new = _sale(api, "day-old")
            assert new.status_code == 202
            assert REPLAYED not in new.headers
            assert new.json()["id"] != first.json()["id"]
            assert api.post("/api/v1/cancel").status_code == 200
            # Old keys are deleted from the file, not only ignored.
            clock.now += 2 * 24 * 3600
            assert store.purge() == 1
    finally:
        server.stop()
        store.close()


def test_a_unique_reference_answers_with_the_sale_already_made(
    stack: DemoStack, api: httpx.Client, session_host: HostHandle
) -> None:
    unique = {**SALE, "unique_reference": True}
    first = _sale(api, None, unique)
    assert first.status_code == 202
    assert _pay(stack, api, first.json()["id"])["state"] == "approved"
    second = _sale(api, None, unique)
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["state"] == "approved"
    other_amount = _sale(api, None, {**unique, "amount": 999})
    assert other_amount.status_code == 409
    assert other_amount.json()["error"]["code"] == "reference_in_use"
    no_reference = _sale(api, None, {"amount": 100, "currency": 978, "unique_reference": True})
    assert no_reference.status_code == 422
    assert no_reference.json()["error"]["field"] == "unique_reference"
    assert len(_host_rows(session_host, stack, "sale")) == 1
    # A sale that took nothing (cancelled) does not stand in the way of paying again.
    again = {**unique, "external_reference": "ECR-80"}
    cancelled = _sale(api, None, again)
    assert api.post("/api/v1/cancel").status_code == 200
    retried = _sale(api, None, again)
    assert retried.status_code == 202
    assert retried.json()["id"] != cancelled.json()["id"]
    assert api.post("/api/v1/cancel").status_code == 200
    # Without the option, a reference may repeat as before.
    assert _sale(api, None, SALE).status_code == 202
    assert api.post("/api/v1/cancel").status_code == 200


def test_the_key_is_in_the_openapi_of_every_request_that_moves_money(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/sales",
        "/api/v1/transactions/{txn_id}/refund",
        "/api/v1/transactions/{txn_id}/void",
        "/api/v1/transactions/{txn_id}/cancel",
        "/api/v1/cancel",
        "/api/v1/end-of-day",
    ):
        params = {p["name"]: p for p in paths[path]["post"].get("parameters", [])}
        assert "Idempotency-Key" in params, path
        header = params["Idempotency-Key"]
        assert header["in"] == "header"
        assert not header.get("required", False)
        assert "24 hours" in header["description"]
