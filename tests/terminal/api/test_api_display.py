"""The register's display request (PUT/GET/DELETE /api/v1/display: in memory, published as
`display` events, cleared by a sale starting) and the tip endpoints (GET/POST
/api/v1/transactions/{id}/tip) through the real API on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.api.stack import DemoStack
from terminal.domain.currency import MAX_EMV_AMOUNT
from terminal.domain.tips import TipSettings
from tests.conftest_host import HostHandle
from tests.terminal.api.test_api import FakeClock, _demo_stack

pytestmark = pytest.mark.integration

BASKET: dict[str, Any] = {
    "message": "Welcome to the bakery",
    "lines": [
        {"text": "Croissant", "quantity": 2, "amount": 360},
        {"text": "Coffee", "quantity": 1, "amount": 250},
    ],
    "total": 610,
    "currency": "EUR",
}


@pytest.fixture
def stack(tmp_path: Path, session_host: HostHandle) -> Iterator[DemoStack]:
    with _demo_stack(tmp_path, session_host, FakeClock()) as s:
        yield s


@pytest.fixture
def api(stack: DemoStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    ) as client:
        yield client


def _display_events(stack: DemoStack, after: int) -> list[dict[str, Any]]:
    events = stack.checkout.events.after(after, timeout=0)
    return [e["data"] for e in events if e["type"] == "display"]


def test_display_is_set_read_published_and_cleared(stack: DemoStack, api: httpx.Client) -> None:
    assert api.get("/api/v1/display").json()["shown"] is False
    before = stack.checkout.events.last_id
    put = api.put("/api/v1/display", json=BASKET)
    assert put.status_code == 200, put.text
    shown = put.json()
    assert shown["shown"] is True
    assert shown["message"] == "Welcome to the bakery"
    assert [(x["text"], x["quantity"], x["amount_text"]) for x in shown["lines"]] == [
        ("Croissant", 2, "3.60 EUR"),
        ("Coffee", 1, "2.50 EUR"),
    ]
    assert (shown["total"], shown["total_text"], shown["currency"]) == (610, "6.10 EUR", 978)
    assert api.get("/api/v1/display").json() == shown
    assert _display_events(stack, before) == [shown]
    cleared = api.delete("/api/v1/display")
    assert cleared.status_code == 200
    assert cleared.json()["shown"] is False
    assert cleared.json()["lines"] == []
    assert api.get("/api/v1/display").json()["shown"] is False
    assert _display_events(stack, before)[-1]["shown"] is False


def test_a_sale_starting_clears_the_display(stack: DemoStack, api: httpx.Client) -> None:
    assert api.put("/api/v1/display", json={"message": "Next customer"}).status_code == 200
    sale = api.post("/api/v1/sales", json={"amount": 610, "currency": 978})
    assert sale.status_code == 202
    deadline = time.monotonic() + 5
    while api.get("/api/v1/display").json()["shown"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.get("/api/v1/display").json()["shown"] is False
    api.post(f"/api/v1/transactions/{sale.json()['id']}/cancel")


def _cleared(api: httpx.Client) -> bool:
    deadline = time.monotonic() + 5
    while api.get("/api/v1/display").json()["shown"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return api.get("/api/v1/display").json()["shown"] is False


def test_a_display_set_during_a_sale_stays_until_the_next_one(
    stack: DemoStack, api: httpx.Client
) -> None:
    assert api.put("/api/v1/display", json={"message": "Next customer"}).status_code == 200
    sale = api.post("/api/v1/sales", json={"amount": 610, "currency": 978}).json()
    # The register shows the basket while the customer taps, sent at once after the sale
    # (before the display's follower has seen the sale start): it stays, and the sale's own
    # progress (the card read, the bank's answer) leaves it on the screen.
    basket = {"lines": [{"text": "Tea", "quantity": 2, "amount": 305}], "total": 610}
    assert api.put("/api/v1/display", json=basket).status_code == 200
    assert api.post("/api/v1/simulator/present", json={"card": "visa"}).status_code == 200
    assert stack.checkout.wait(sale["id"], timeout=30).state == "approved"
    time.sleep(0.3)  # the follower has read the sale's last events
    assert api.get("/api/v1/display").json()["shown"] is True
    # A pre-authorisation starting is a new transaction at the terminal: it clears it.
    hold = api.post("/api/v1/preauths", json={"amount": 900, "currency": 978})
    assert hold.status_code == 202, hold.text
    assert _cleared(api)
    api.post(f"/api/v1/transactions/{hold.json()['id']}/cancel")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": "x" * 121}, "message"),
        ({"lines": [{"text": "x" * 41, "quantity": 1, "amount": 1}]}, "lines.0.text"),
        ({"lines": [{"text": "Tea", "quantity": 0, "amount": 1}]}, "lines.0.quantity"),
        ({"lines": [{"text": "Tea", "quantity": 1, "amount": "1.00"}]}, "lines.0.amount"),
        ({"lines": [{"text": "Tea", "amount": 1}] * 51}, "lines"),
        ({"message": "hi", "total": -1}, "total"),
        ({"message": "hi", "currency": "USD"}, "currency"),
        ({"message": "hi", "currency": "XYZ"}, "currency"),
        ({"message": "hi", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_display_request_is_refused_with_its_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    answer = api.put("/api/v1/display", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
    assert api.get("/api/v1/display").json()["shown"] is False


def test_an_empty_display_request_is_refused(api: httpx.Client) -> None:
    answer = api.put("/api/v1/display", json={})
    assert answer.status_code == 422
    assert "nothing to show" in answer.json()["error"]["message"]


def test_the_display_needs_the_token(stack: DemoStack) -> None:
    answer = httpx.put(f"{stack.api.url}/api/v1/display", json=BASKET)
    assert answer.status_code == 401


def test_the_tip_offer_and_the_tip_through_the_api(stack: DemoStack, api: httpx.Client) -> None:
    stack.checkout.tips = TipSettings((10, 15, 20), custom=True)
    sale = api.post("/api/v1/sales", json={"amount": 1234, "currency": "EUR"}).json()
    assert sale["stage"] == "waiting_for_tip"
    offer = api.get(f"/api/v1/transactions/{sale['id']}/tip")
    assert offer.status_code == 200, offer.text
    body = offer.json()
    assert [(p["percent"], p["tip_amount"], p["total_text"]) for p in body["presets"]] == [
        (10, 123, "13.57 EUR"),
        (15, 185, "14.19 EUR"),
        (20, 247, "14.81 EUR"),
    ]
    assert (body["amount"], body["custom"], body["max_tip"]) == (1234, True, 1234)
    too_much = api.post(
        f"/api/v1/transactions/{sale['id']}/tip", json={"tip_amount": MAX_EMV_AMOUNT}
    )
    assert too_much.status_code == 422
    assert (
        api.post(f"/api/v1/transactions/{sale['id']}/tip", json={"tip_amount": -5}).json()["error"][
            "field"
        ]
        == "tip_amount"
    )
    tipped = api.post(f"/api/v1/transactions/{sale['id']}/tip", json={"tip_amount": 185})
    assert tipped.status_code == 200, tipped.text
    assert (tipped.json()["amount"], tipped.json()["tip_amount"]) == (1419, 185)
    assert tipped.json()["stage"] == "waiting_for_card"
    again = api.post(f"/api/v1/transactions/{sale['id']}/tip", json={"tip_amount": 185})
    assert again.status_code == 409
    assert again.json()["error"]["reason"] == "not_waiting_for_tip"
    assert api.get(f"/api/v1/transactions/{sale['id']}/tip").status_code == 409
    assert api.post("/api/v1/simulator/present", json={"card": "visa"}).status_code == 200
    done = stack.checkout.wait(sale["id"], timeout=30)
    assert (done.state, done.amount) == ("approved", 1419)
    receipt = api.get(f"/api/v1/transactions/{sale['id']}/receipt").text
    assert "TIP" in receipt
    assert "1.85 EUR" in receipt
    assert "14.19 EUR" in receipt


def test_only_a_presets_tip_without_a_typed_tip(stack: DemoStack, api: httpx.Client) -> None:
    stack.checkout.tips = TipSettings((10,), custom=False)
    sale = api.post("/api/v1/sales", json={"amount": 1000, "currency": 978}).json()
    odd = api.post(f"/api/v1/transactions/{sale['id']}/tip", json={"tip_amount": 99})
    assert odd.status_code == 422
    assert "none of the presets" in odd.json()["error"]["message"]
    assert (
        api.post(f"/api/v1/transactions/{sale['id']}/tip", json={"tip_amount": 100}).json()[
            "amount"
        ]
        == 1100
    )
    api.post(f"/api/v1/transactions/{sale['id']}/cancel")


def test_tip_for_an_unknown_transaction(api: httpx.Client) -> None:
    assert api.get("/api/v1/transactions/S000000-nope/tip").status_code == 404
    answer = api.post("/api/v1/transactions/S000000-nope/tip", json={"tip_amount": 1})
    assert answer.status_code == 404
