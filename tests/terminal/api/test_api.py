"""The local API for the cash register, served by uvicorn on loopback, against the simulated
acquirer host (the session's, on loopback: each test's terminal enrols anew) and virtual
cards. Integration tests: a real API server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.api.stack import DemoStack, start_demo_stack
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle

pytestmark = pytest.mark.integration


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pin_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stack(
    tmp_path: Path,
    session_host: HostHandle,
    pin_clock: FakeClock,
) -> Iterator[DemoStack]:
    with _demo_stack(
        tmp_path, session_host, pin_clock, printer_url=f"file:{tmp_path / 'printer.bin'}"
    ) as s:
        yield s


@contextmanager
def _demo_stack(
    tmp_path: Path, host: HostHandle, pin_clock: FakeClock, **options: Any
) -> Iterator[DemoStack]:
    """The demo terminal on `host`, with the test PIN and clock, no background loop."""
    s = start_demo_stack(
        tmp_path,
        host_url=host.url,
        activation_code=host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin="2468",
        pin_clock=pin_clock,
        background=False,
        **options,
    )
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def api(stack: DemoStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    ) as client:
        yield client


def _pay(stack: DemoStack, api: httpx.Client, amount: int, card: str = "visa") -> dict[str, Any]:
    created = api.post(
        "/api/v1/sales", json={"amount": amount, "currency": 978, "external_reference": "ECR-1"}
    )
    assert created.status_code == 202, created.text
    assert api.post("/api/v1/simulator/present", json={"card": card}).status_code == 200
    stack.checkout.wait(created.json()["id"], timeout=30)
    got = api.get(f"/api/v1/transactions/{created.json()['id']}")
    assert got.status_code == 200
    return dict(got.json())


def test_sale_then_lookup_list_receipt_and_print(
    stack: DemoStack, api: httpx.Client, tmp_path: Path
) -> None:
    txn = _pay(stack, api, 1234)
    assert txn["state"] == "approved"
    assert txn["external_ref"] == "ECR-1"
    listed = api.get("/api/v1/transactions", params={"external_reference": "ECR-1"}).json()
    assert [t["id"] for t in listed["transactions"]] == [txn["id"]]
    text = api.get(f"/api/v1/transactions/{txn['id']}/receipt?copy=merchant").text
    for field in (
        "PIPOS DEMO SHOP",
        "476173******0010",
        "A0000000031010",
        "CONTACTLESS",
        "12.34 EUR",
        txn["auth_code"],
        "NO CARDHOLDER VERIFICATION",
        "MERCHANT COPY",
    ):
        assert field in text
    customer = api.get(f"/api/v1/transactions/{txn['id']}/receipt").text
    assert "476173" not in customer
    assert "0010" in customer
    printed = api.post(f"/api/v1/transactions/{txn['id']}/print", json={"copies": ["customer"]})
    assert printed.status_code == 200
    raw = (tmp_path / "printer.bin").read_bytes()
    assert b"CUSTOMER COPY" in raw
    assert b"\x1dV" in raw


def test_token_required(stack: DemoStack) -> None:
    with httpx.Client(base_url=stack.api.url) as anon:
        assert anon.post("/api/v1/sales", json={"amount": 1, "currency": 978}).status_code == 401
        bad = anon.get("/api/v1/status", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        assert bad.json()["error"]["code"] == "unauthorised"
        assert anon.get("/health").status_code == 200
        assert "/api/v1/sales" in anon.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"amount": -5, "currency": 978}, 422, "amount"),
        ({"amount": 0, "currency": 978}, 422, "amount"),
        ({"amount": 10**13, "currency": 978}, 422, "amount"),
        ({"amount": 12.5, "currency": 978}, 422, "amount"),
        ({"amount": "100", "currency": 978}, 422, "amount"),
        ({"amount": 100, "currency": 999}, 422, "unknown ISO 4217"),
        ({"amount": 100, "currency": "XYZ"}, 422, "unknown ISO 4217"),
        # Digits that are not ASCII (Arabic-Indic, full-width) are not a currency code.
        ({"amount": 100, "currency": "\u0669\u0667\u0668"}, 422, "unknown ISO 4217"),
        ({"amount": 100, "currency": "\uff19\uff17\uff18"}, 422, "unknown ISO 4217"),
        ({"amount": 100, "currency": 840}, 422, "not accepted"),
        ({"amount": 100}, 422, "currency"),
        ({"amount": 100, "currency": 978, "tip": 5}, 422, "tip"),
        ({"amount": 100, "currency": 978, "external_reference": "x" * 65}, 422, "external"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_validation_is_precise_and_nothing_starts(
    stack: DemoStack, api: httpx.Client, body: Any, status: int, needle: str
) -> None:
    response = api.post("/api/v1/sales", json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert stack.checkout.journal.recent() == []


def test_malformed_and_oversized_bodies(stack: DemoStack, api: httpx.Client) -> None:
    bad = api.post(
        "/api/v1/sales", content=b"{amount: 1", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "malformed_body"
    big = api.post(
        "/api/v1/sales",
        content=b"{" + b" " * 20000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413
    assert stack.checkout.journal.recent() == []


def test_busy_and_cancel(stack: DemoStack, api: httpx.Client) -> None:
    first = api.post("/api/v1/sales", json={"amount": 500, "currency": "EUR"}).json()
    second = api.post("/api/v1/sales", json={"amount": 600, "currency": 978})
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "busy"
    cancelled = api.post(f"/api/v1/transactions/{first['id']}/cancel")
    assert cancelled.status_code == 200
    # The answer is the sale as it ended, newer than the answer that started it.
    assert (cancelled.json()["state"], cancelled.json()["result"]) == ("cancelled", "cancelled")
    assert cancelled.json()["revision"] > first["revision"]
    assert cancelled.json()["cancellable"] is False
    final = stack.checkout.wait(first["id"], timeout=10)
    assert final.state == "cancelled"
    assert api.get(f"/api/v1/transactions/{first['id']}").json() == cancelled.json()
    again = api.post(f"/api/v1/transactions/{first['id']}/cancel")
    assert again.status_code == 409
    assert api.get("/api/v1/transactions/S000000-nothing").status_code == 404


def test_refund_needs_pin_wrong_pins_slow_down_then_lock(
    stack: DemoStack, api: httpx.Client, pin_clock: FakeClock
) -> None:
    sale = _pay(stack, api, 3000)
    url = f"/api/v1/transactions/{sale['id']}/refund"
    missing = api.post(url, json={"amount": 100})
    assert missing.status_code == 422
    assert "pin" in missing.json()["error"]["message"]
    wrong = api.post(url, json={"pin": "0000", "amount": 100})
    assert wrong.status_code == 403
    # The numbers are fields of the error (a client says them in its own language), as
    # well as in the English message.
    assert wrong.json()["error"]["code"] == "wrong_pin"
    assert wrong.json()["error"]["tries_left"] == 2
    assert "2" in wrong.json()["error"]["message"]
    # The one lock-out policy (terminal.security.lockout): the 3rd wrong PIN in a row locks
    # this caller for 30 s, the next ones for twice as long each.
    second = api.post(url, json={"pin": "1111", "amount": 100})
    assert second.status_code == 403
    assert second.json()["error"]["tries_left"] == 1
    last = api.post(url, json={"pin": "1111", "amount": 100})
    assert last.status_code == 423
    assert last.json()["error"]["code"] == "pin_locked"
    assert last.json()["error"]["retry_after"] == 30
    assert last.json()["error"]["reason"] == "wrong"  # this wrong PIN locked it
    assert last.headers["Retry-After"] == "30"
    pin_clock.now += 10
    locked = api.post(url, json={"pin": "2468", "amount": 100})
    assert locked.status_code == 423  # the right PIN too
    assert locked.json()["error"]["retry_after"] == 20
    assert locked.json()["error"]["reason"] == "locked"
    assert locked.headers["Retry-After"] == "20"
    pin_clock.now += 20
    ok = api.post(url, json={"pin": "2468", "amount": 1000})
    assert ok.status_code == 200, ok.text
    assert ok.json()["kind"] == "refund"
    assert ok.json()["state"] == "approved"
    assert ok.json()["revision"] > sale["revision"]
    over = api.post(url, json={"pin": "2468", "amount": 2001})
    assert over.status_code == 422
    assert "exceeds" in over.json()["error"]["message"]
    assert api.get(f"/api/v1/transactions/{sale['id']}").json()["refundable_amount"] == 2000


def test_void_totals_end_of_day_queue_status(
    stack: DemoStack, api: httpx.Client, pin_clock: FakeClock
) -> None:
    sale = _pay(stack, api, 700)
    _pay(stack, api, 900, "mastercard")
    voided = api.post(f"/api/v1/transactions/{sale['id']}/void", json={"pin": "2468"})
    assert voided.status_code == 200
    assert voided.json()["result"] == "void_approved"
    # The void, and the sale it marked voided, are both newer than the sale was.
    voided_sale = api.get(f"/api/v1/transactions/{sale['id']}").json()
    assert voided_sale["voided"] is True
    assert voided.json()["revision"] > sale["revision"]
    assert voided_sale["revision"] > sale["revision"]
    totals = api.get("/api/v1/totals").json()["totals"]
    assert [(t["sales_count"], t["net_amount"]) for t in totals] == [(1, 900)]
    assert api.get("/api/v1/queue").json() == {"count": 0, "amounts": {}, "flagged": 0}
    status = api.get("/api/v1/status").json()
    assert status["busy"] is False
    assert status["currency_alpha"] == "EUR"
    # The end of day needs the merchant PIN, from a register too.
    assert api.post("/api/v1/end-of-day").status_code == 422
    assert api.post("/api/v1/end-of-day", json={"pin": "1111"}).status_code == 403
    assert api.get("/api/v1/totals").json()["totals"] != []
    pin_clock.now += 60  # past the slow-down after one wrong PIN
    eod = api.post("/api/v1/end-of-day", json={"pin": "2468"}).json()
    # Approved sales and refunds only, as the bank counts them: the voided sale and its
    # void do not count (the journal holds three transactions).
    assert (eod["transactions"], eod["host_transactions"]) == (1, 1)
    assert eod["host_totals"][0]["net_amount"] == 900
    assert api.get("/api/v1/totals").json()["totals"] == []


def test_server_sent_events_stream_the_sale(stack: DemoStack, api: httpx.Client) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    ready = threading.Event()

    def follow() -> None:
        with httpx.stream(
            "GET", f"{stack.api.url}/api/v1/events", params={"token": stack.token}, timeout=30
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    seen.append((kind, json.loads(line[6:])))
                    ready.set()
                    if kind == "transaction" and seen[-1][1].get("stage") == "done":
                        return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert ready.wait(10)
    final = _pay(stack, api, 4321)
    thread.join(30)
    stages = [data.get("stage") for kind, data in seen if kind == "transaction"]
    assert stages[0] == "waiting_for_card"
    assert "authorising" in stages
    assert stages[-1] == "done"
    assert seen[-1][1]["state"] == "approved"
    # Every view carries the journal's revision: it grows with each change, and the final
    # event, the GET after it and nothing else carry the newest.
    revisions = [data["revision"] for kind, data in seen if kind == "transaction"]
    assert revisions == sorted(set(revisions)), revisions
    assert revisions[-1] == final["revision"]


@pytest.fixture
def outage_stack(
    tmp_path: Path, acquirer_host: HostHandle, pin_clock: FakeClock
) -> Iterator[DemoStack]:
    """A stack on the test's own host, whose faults touch no other test."""
    with _demo_stack(tmp_path, acquirer_host, pin_clock) as s:
        yield s


def test_status_and_sync_say_what_an_outage_does(
    outage_stack: DemoStack, acquirer_host: HostHandle
) -> None:
    stack = outage_stack
    with httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    ) as api:
        assert _pay(stack, api, 500)["state"] == "approved"
        status = api.get("/api/v1/status").json()
        assert status["host"] == {
            "online": True,
            "since": status["host"]["since"],
            "last_failure": "",
            "last_failure_text": "",
        }
        assert status["offline_acceptance"] == {
            "enabled": True,
            "max_amount": 5000,
            "currency": 978,
            "max_amount_text": "50.00 EUR",
        }
        acquirer_host.set_fault("/v1/", "refuse")  # connections accepted, then dropped
        assert _pay(stack, api, 1200)["result"] == "host_no_response"
        assert _pay(stack, api, 800)["state"] == "approved_offline"
        status = api.get("/api/v1/status").json()
        assert status["host_online"] is False
        assert status["host"]["online"] is False
        assert status["host"]["last_failure_text"] == "bank not answering"
        assert status["pending_reversals"] == 1
        assert (status["queue"]["count"], status["queue"]["text"]) == (1, ["8.00 EUR"])

        synced = api.post("/api/v1/queue/sync").json()
        assert synced["result"]["ok"] is False
        assert synced["result"]["text"] == "Could not send: bank not answering"
        assert (synced["result"]["sent"], synced["result"]["remaining"]) == (0, 1)
        assert api.get("/api/v1/status").json()["host_online"] is False

        acquirer_host.clear_faults()
        synced = api.post("/api/v1/queue/sync").json()
        assert (synced["result"]["ok"], synced["result"]["text"]) == (True, "1 sent")
        assert synced["sync"]["accepted"] == 1
        assert synced["queue"]["count"] == 0
        assert api.get("/api/v1/status").json()["host"]["online"] is True


def test_offline_declines_are_marked_filtered_refused_and_acknowledged(
    tmp_path: Path, acquirer_host: HostHandle, pin_clock: FakeClock
) -> None:
    """An offline sale says waiting / sent / declined; a declined one (the simulated host
    declines amounts ending in 51, offline uploads included) is under ?attention=1, cannot
    be refunded (code declined_by_bank), and its banner count is acknowledged durably."""

    def start() -> DemoStack:
        return start_demo_stack(
            tmp_path,
            host_url=acquirer_host.url,
            activation_code=acquirer_host.activation_code,
            secret=TEST_SECRET,
            scrypt_n=TEST_SCRYPT_N,
            pin="2468",
            pin_clock=pin_clock,
            background=False,
        )

    def client(stack: DemoStack) -> httpx.Client:
        return httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        )

    def unacknowledged(api: httpx.Client) -> int:
        return int(api.get("/api/v1/status").json()["offline_declines"]["unacknowledged"])

    stack = start()
    try:
        with client(stack) as api:
            online = _pay(stack, api, 500)
            assert online["offline_status"] is None
            acquirer_host.set_fault("/v1/", "refuse")
            assert _pay(stack, api, 1200)["result"] == "host_no_response"
            good = _pay(stack, api, 800)
            bad = _pay(stack, api, 951)
            assert (good["offline_status"], bad["offline_status"]) == ("waiting", "waiting")
            assert api.get("/api/v1/transactions", params={"attention": 1}).json() == {
                "transactions": [],
                "next": None,
            }
            acquirer_host.clear_faults()
            synced = api.post("/api/v1/queue/sync").json()
            assert (synced["sync"]["accepted"], synced["sync"]["declined"]) == (1, 1)

            listed = {t["id"]: t for t in api.get("/api/v1/transactions").json()["transactions"]}
            assert listed[good["id"]]["offline_status"] == "sent"
            assert listed[bad["id"]]["offline_status"] == "declined"
            assert listed[bad["id"]]["refundable_amount"] == 0
            assert listed[online["id"]]["offline_status"] is None
            attention = api.get("/api/v1/transactions?attention=1").json()["transactions"]
            assert [t["id"] for t in attention] == [bad["id"]]

            refused = api.post(
                f"/api/v1/transactions/{bad['id']}/refund", json={"pin": "2468", "amount": 100}
            )
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "declined_by_bank"
            assert "no money was received" in refused.json()["error"]["message"]
            voided = api.post(f"/api/v1/transactions/{bad['id']}/void", json={"pin": "2468"})
            assert voided.json()["error"]["code"] == "declined_by_bank"

            assert unacknowledged(api) == 1
            ack = api.post("/api/v1/offline-declines/acknowledge")
            assert ack.status_code == 200
            assert ack.json() == {"acknowledged": 1, "unacknowledged": 0}
            assert unacknowledged(api) == 0
    finally:
        stack.close()

    stack = start()
    try:
        with client(stack) as api:
            assert unacknowledged(api) == 0  # the journal kept the acknowledgement
            attention = api.get("/api/v1/transactions?attention=1").json()["transactions"]
            assert [t["id"] for t in attention] == [bad["id"]]  # still listed
            no_token = httpx.post(stack.api.url + "/api/v1/offline-declines/acknowledge")
            assert no_token.status_code == 401
    finally:
        stack.close()
