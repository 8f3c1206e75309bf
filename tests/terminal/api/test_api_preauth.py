"""The pre-authorisation endpoints (docs/api.md, "Pre-authorisation"): a hold started like a
sale, raised, captured and released with the register's token only (no merchant PIN), each
change under a required Idempotency-Key, a retried capture answered from the first (the bank
saw one capture), and the errors a register tells apart: 404, 409 with the hold's state,
422 over the hold, 503. The real demo stack on the session's simulated acquirer, over HTTP
on loopback. Integration tests: a real API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.api.stack import DemoStack
from tests.conftest_host import HostHandle
from tests.terminal.api.test_api import FakeClock, _demo_stack, _pay
from tests.terminal.api.test_api import api as api
from tests.terminal.api.test_api import pin_clock as pin_clock
from tests.terminal.api.test_api import stack as stack

pytestmark = pytest.mark.integration

REPLAYED = "Idempotent-Replayed"


def _hold(stack: DemoStack, api: httpx.Client, amount: int = 8000) -> dict[str, Any]:
    started = api.post(
        "/api/v1/preauths",
        json={"amount": amount, "currency": "EUR", "external_reference": "ROOM-12"},
        headers={"Idempotency-Key": f"hold-{amount}"},
    )
    assert started.status_code == 202, started.text
    txn_id = started.json()["id"]
    assert started.json()["kind"] == "preauth"
    assert api.post("/api/v1/simulator/present", json={"card": "visa"}).status_code == 200
    stack.checkout.wait(txn_id, timeout=30)
    held = api.get(f"/api/v1/transactions/{txn_id}").json()
    assert (held["state"], held["authorised_amount"]) == ("approved", amount), held
    return dict(held)


def _ledger(host: HostHandle, stack: DemoStack, kind: str) -> list[dict[str, Any]]:
    return [r for r in host.ledger(stack.checkout.terminal_id) if r["kind"] == kind]


def test_capture_retried_with_its_key_is_answered_once_and_the_bank_saw_one(
    stack: DemoStack, api: httpx.Client, session_host: HostHandle
) -> None:
    held = _hold(stack, api)
    path = f"/api/v1/preauths/{held['id']}/capture"
    first = api.post(path, json={"amount": 6500}, headers={"Idempotency-Key": "cap-1"})
    assert first.status_code == 200, first.text
    assert (first.json()["kind"], first.json()["state"]) == ("capture", "approved")
    again = api.post(path, json={"amount": 6500}, headers={"Idempotency-Key": "cap-1"})
    assert again.status_code == 200
    assert again.headers.get(REPLAYED) == "true"
    assert again.json()["id"] == first.json()["id"]
    assert [(r["amount"], r["status"]) for r in _ledger(session_host, stack, "capture")] == [
        (6500, "approved")
    ]
    hold = api.get(f"/api/v1/transactions/{held['id']}").json()
    assert (hold["captured_amount"], hold["released"], hold["title_key"]) == (
        6500,
        True,
        "preauth_captured",
    )
    # A new capture under a new key: the hold is closed (409, reason captured).
    closed = api.post(path, json={"amount": 100}, headers={"Idempotency-Key": "cap-2"})
    assert closed.status_code == 409
    assert closed.json()["error"]["reason"] == "captured"


def test_increment_then_release_with_the_token_only(
    stack: DemoStack, api: httpx.Client, session_host: HostHandle
) -> None:
    held = _hold(stack, api, 3000)
    raised = api.post(
        f"/api/v1/preauths/{held['id']}/increments",
        json={"amount": 1500},
        headers={"Idempotency-Key": "inc-1"},
    )
    assert raised.status_code == 200, raised.text
    assert (raised.json()["kind"], raised.json()["state"]) == ("increment", "approved")
    assert api.get(f"/api/v1/transactions/{held['id']}").json()["authorised_amount"] == 4500
    released = api.post(
        f"/api/v1/preauths/{held['id']}/release", headers={"Idempotency-Key": "rel-1"}
    )
    assert released.status_code == 200, released.text
    assert (released.json()["amount"], released.json()["state"]) == (4500, "approved")
    again = api.post(f"/api/v1/preauths/{held['id']}/release", headers={"Idempotency-Key": "r2"})
    assert again.status_code == 409
    assert again.json()["error"]["reason"] == "released"
    assert [r["status"] for r in _ledger(session_host, stack, "preauth")] == ["released"]


def test_the_errors_a_register_tells_apart(stack: DemoStack, api: httpx.Client) -> None:
    held = _hold(stack, api, 2000)
    capture = f"/api/v1/preauths/{held['id']}/capture"
    over = api.post(capture, json={"amount": 2001}, headers={"Idempotency-Key": "over"})
    assert over.status_code == 422
    assert over.json()["error"]["reason"] == "over_hold"
    no_key = api.post(capture, json={})
    assert no_key.status_code == 422
    assert no_key.json()["error"]["field"] == "Idempotency-Key"
    unknown = api.post(
        "/api/v1/preauths/P000000-abcdef/capture", json={}, headers={"Idempotency-Key": "u"}
    )
    assert unknown.status_code == 404
    bad = api.post(
        "/api/v1/preauths", json={"amount": 0, "currency": 978}, headers={"Idempotency-Key": "z"}
    )
    assert bad.status_code == 422
    # No merchant PIN asked, none accepted: a body with one is refused as unknown.
    pin = api.post(capture, json={"pin": "2468"}, headers={"Idempotency-Key": "pin"})
    assert pin.status_code == 422


def test_the_endpoints_are_typed_in_the_openapi(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    paths = {
        "/api/v1/preauths": "202",
        "/api/v1/preauths/{txn_id}/increments": "200",
        "/api/v1/preauths/{txn_id}/capture": "200",
        "/api/v1/preauths/{txn_id}/release": "200",
    }
    for path, ok in paths.items():
        operation = document["paths"][path]["post"]
        assert {"bearerAuth": []} in operation["security"], path
        answers = operation["responses"]
        assert answers[ok]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/TransactionView"
        }, path
        assert {"400", "401", "409", "422", "503"} <= set(answers), path
        for status, answer in answers.items():
            if status[0] in "45":
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (path, status)
        if path != "/api/v1/preauths":
            assert "404" in answers, path
            assert "pin" not in json.dumps(operation.get("requestBody", {})), path


def test_a_replayed_capture_answers_the_capture_as_it_stands_now(
    tmp_path: Path, acquirer_host: HostHandle, pin_clock: FakeClock
) -> None:
    # The first answer was "failed" (the bank's answer lost); the capture is settled after
    # it. A register retrying with its key must learn it went through, not the stale answer.
    with (
        _demo_stack(tmp_path, acquirer_host, pin_clock) as s,
        httpx.Client(
            base_url=s.api.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=30
        ) as client,
    ):
        held = _hold(s, client)
        path = f"/api/v1/preauths/{held['id']}/capture"
        acquirer_host.set_fault("/v1/preauths/", "drop_after_commit", times=3)
        first = client.post(path, json={"amount": 4000}, headers={"Idempotency-Key": "cap-lost"})
        assert first.status_code == 200, first.text
        assert (first.json()["state"], first.json()["title_key"]) == ("failed", "capture_unknown")
        s.checkout.retry_reversals()  # what the background loop does
        again = client.post(path, json={"amount": 4000}, headers={"Idempotency-Key": "cap-lost"})
        assert again.headers.get(REPLAYED) == "true"
        assert (again.json()["id"], again.json()["state"]) == (first.json()["id"], "approved")
        assert [(r["amount"], r["status"]) for r in _ledger(acquirer_host, s, "capture")] == [
            (4000, "approved")
        ]


@pytest.mark.parametrize(("path", "action", "body"), [
    ("/v1/refunds", "refund", {"pin": "2468", "amount": 300}),
    ("/v1/voids", "void", {"pin": "2468"}),
])  # fmt: skip
def test_a_replayed_refund_or_void_answers_it_as_it_stands_now(
    tmp_path: Path,
    acquirer_host: HostHandle,
    pin_clock: FakeClock,
    path: str,
    action: str,
    body: dict[str, Any],
) -> None:
    # Its answer from the bank was lost. A void is settled under its own key by the
    # background loop; a refund by the register's repeat itself (sent again under the
    # refund's own key: the bank answers its first result). Either way the repeat learns
    # it went through, and the bank moved the money once.
    with (
        _demo_stack(tmp_path, acquirer_host, pin_clock) as s,
        httpx.Client(
            base_url=s.api.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=30
        ) as client,
    ):
        sale = _pay(s, client, 1000)
        route = f"/api/v1/transactions/{sale['id']}/{action}"
        key = {"Idempotency-Key": f"{action}-lost"}
        acquirer_host.set_fault(path, "drop_after_commit", times=3)
        first = client.post(route, json=body, headers=key)
        assert first.status_code == 200, first.text
        assert first.json()["state"] == "failed", first.json()
        if action == "void":
            assert s.checkout.owes_the_host()
            s.checkout.retry_reversals()  # what the background loop does
            assert not s.checkout.owes_the_host()
        again = client.post(route, json=body, headers=key)
        assert again.headers.get(REPLAYED) == "true"
        assert (again.json()["id"], again.json()["state"]) == (first.json()["id"], "approved")
        kind = "refund" if action == "refund" else "sale"
        rows = [r["status"] for r in _ledger(acquirer_host, s, kind)]
        assert rows == (["approved"] if action == "refund" else ["voided"])
