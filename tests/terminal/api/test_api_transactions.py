"""The merchant's transaction screen and end-of-day report through the local API, on a demo
stack against the session's simulated acquirer (and, for outages, a host of the test's own,
or the demo's own host switched by the simulator drawer): the list's search, date filter and
paging; each view's title, refund state, refunds and original sale; the open batch's
report; the end of day's report beside the bank's, kept with the batch, listed, shown as
text and HTML and printed; an unreachable bank at end of day said in the terminal's
language, never with a socket's words."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.api.stack import DemoStack, start_demo_stack
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle
from tests.terminal.api.test_api import FakeClock, _demo_stack

pytestmark = pytest.mark.integration

PIN = "2468"


@pytest.fixture
def stack(tmp_path: Path, session_host: HostHandle) -> Iterator[DemoStack]:
    with _demo_stack(
        tmp_path, session_host, FakeClock(), printer_url=f"file:{tmp_path / 'printer.bin'}"
    ) as s:
        yield s


def _client(stack: DemoStack) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    )


@pytest.fixture
def api(stack: DemoStack) -> Iterator[httpx.Client]:
    with _client(stack) as client:
        yield client


def _pay(
    stack: DemoStack, api: httpx.Client, amount: int, card: str = "visa", ref: str = ""
) -> dict[str, Any]:
    body: dict[str, Any] = {"amount": amount, "currency": 978}
    if ref:
        body["external_reference"] = ref
    created = api.post("/api/v1/sales", json=body)
    assert created.status_code == 202, created.text
    assert api.post("/api/v1/simulator/present", json={"card": card}).status_code == 200
    stack.checkout.wait(created.json()["id"], timeout=30)
    return dict(api.get(f"/api/v1/transactions/{created.json()['id']}").json())


def _ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [t["id"] for t in answer.json()["transactions"]]


def test_the_list_searches_filters_pages_and_links_refunds_to_their_sale(
    stack: DemoStack, api: httpx.Client
) -> None:
    first = _pay(stack, api, 1234, ref="ECR-77")
    card = _pay(stack, api, 4826, "mastercard")
    third = _pay(stack, api, 2000)
    refund = api.post(
        f"/api/v1/transactions/{third['id']}/refund", json={"pin": PIN, "amount": 500}
    ).json()
    void = api.post(f"/api/v1/transactions/{first['id']}/void", json={"pin": PIN}).json()
    declined = _pay(stack, api, 700, "visa?decline")
    everyone = [declined["id"], void["id"], refund["id"], third["id"], card["id"], first["id"]]

    listed = api.get("/api/v1/transactions").json()
    assert ([t["id"] for t in listed["transactions"]], listed["next"]) == (everyone, None)

    # Search: the amount either way, the card's last 4 digits, a reference, any case.
    search = "/api/v1/transactions"
    # 12.34: the sale and its void (which undoes all of it).
    assert _ids(api.get(search, params={"q": "12,34"})) == [void["id"], first["id"]]
    assert _ids(api.get(search, params={"q": "12.34"})) == [void["id"], first["id"]]
    assert _ids(api.get(search, params={"q": "48.26"})) == [card["id"]]
    last4 = card["masked_pan"][-4:]
    assert card["id"] in _ids(api.get(search, params={"q": last4}))
    assert _ids(api.get(search, params={"q": "ecr-77"})) == [first["id"]]
    assert _ids(api.get(search, params={"q": refund["id"].lower()})) == [refund["id"]]
    assert _ids(api.get(search, params={"q": "12.345"})) == []
    assert _ids(api.get(search, params={"q": "nothing like it"})) == []
    too_long = api.get(search, params={"q": "x" * 65})
    assert too_long.status_code == 422
    assert too_long.json()["error"]["field"] == "query.q"

    # Dates: the terminal's local day, both ends included.
    today = datetime.fromisoformat(first["created_at"]).astimezone().date()
    day = today.isoformat()
    assert _ids(api.get(search, params={"date_from": day, "date_to": day})) == everyone
    yesterday = (today - timedelta(days=1)).isoformat()
    assert _ids(api.get(search, params={"date_to": yesterday})) == []
    assert api.get(search, params={"date_from": "2026-13-01"}).status_code == 422

    # Paging: `next` is the cursor of the next (older) page.
    seen: list[str] = []
    cursor: int | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor is not None:
            params["before"] = cursor
        page = api.get(search, params=params).json()
        seen += [t["id"] for t in page["transactions"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert (seen, pages) == (everyone, 2)

    views = {t["id"]: t for t in listed["transactions"]}
    # The refunded sale: its refunds, its state, its title.
    sale = views[third["id"]]
    assert sale["refund_state"] == "partially_refunded"
    assert sale["title"] == "Partially refunded"
    assert [(r["id"], r["kind"], r["amount_text"], r["state"]) for r in sale["refunds"]] == [
        (refund["id"], "refund", "5.00 EUR", "approved")
    ]
    assert sale["original"] is None
    # The refund: which sale it refunds, never "Approved".
    assert views[refund["id"]]["title"] == "Refunded"
    assert views[refund["id"]]["refunds"] is None
    original = views[refund["id"]]["original"]
    assert original == {
        "id": third["id"],
        "amount": 2000,
        "amount_text": "20.00 EUR",
        "masked_pan": third["masked_pan"],
        "brand": third["brand"],
        "brand_text": third["brand"],
        "created_at": third["created_at"],
    }
    # The voided sale reads voided; the void says so and names its sale.
    assert (views[first["id"]]["refund_state"], views[first["id"]]["title"]) == (
        "voided",
        "Voided",
    )
    assert views[first["id"]]["voidable"] is False
    assert [r["kind"] for r in views[first["id"]]["refunds"]] == ["void"]
    assert (views[void["id"]]["title"], views[void["id"]]["original"]["id"]) == (
        "Voided",
        first["id"],
    )
    assert (views[card["id"]]["title"], views[card["id"]]["refund_state"]) == ("Approved", None)
    assert views[card["id"]]["voidable"] is True
    # A card's own decline: its title, and its reason said once.
    assert views[declined["id"]]["title"] == "Declined by the card"
    assert views[declined["id"]]["message"]["merchant"] == "Declined by the card"
    # The single GET carries the same view.
    assert api.get(f"/api/v1/transactions/{refund['id']}").json() == views[refund["id"]]


def test_totals_and_end_of_day_report_count_approved_only_and_are_kept_with_the_batch(
    stack: DemoStack, api: httpx.Client, tmp_path: Path
) -> None:
    kept = _pay(stack, api, 1500)
    refunded = _pay(stack, api, 2000, "mastercard")
    voided = _pay(stack, api, 700)
    _pay(stack, api, 1051)  # the simulated issuer: 51 insufficient funds
    _pay(stack, api, 900, "visa?decline")
    api.post(f"/api/v1/transactions/{refunded['id']}/refund", json={"pin": PIN, "amount": 500})
    api.post(f"/api/v1/transactions/{voided['id']}/void", json={"pin": PIN})
    cancelled = api.post("/api/v1/sales", json={"amount": 300, "currency": 978}).json()
    api.post(f"/api/v1/transactions/{cancelled['id']}/cancel")

    totals = api.get("/api/v1/totals").json()
    lines = {line["brand"]: line for line in totals["lines"]}
    visa, mastercard = lines[kept["brand"]], lines[refunded["brand"]]
    assert (visa["sales_count"], visa["sales_amount"], visa["method"]) == (1, 1500, "card")
    assert visa["sales_amount_text"] == "15.00 EUR"
    assert (mastercard["refunds_count"], mastercard["net_amount_text"]) == (1, "15.00 EUR")
    assert totals["grand_totals"] == [
        {
            "currency": 978,
            "sales_count": 2,
            "sales_amount": 3500,
            "sales_amount_text": "35.00 EUR",
            "refunds_count": 1,
            "refunds_amount": 500,
            "refunds_amount_text": "5.00 EUR",
            "net_amount": 3000,
            "net_amount_text": "30.00 EUR",
        }
    ]
    assert totals["transactions"] == 3
    assert totals["offline"] == {"count": 0, "amounts": {}, "amount_text": ""}
    assert [t["sales_count"] for t in totals["totals"]] == [1, 1]  # the old list, kept

    eod = api.post("/api/v1/end-of-day", json={"pin": PIN})
    assert eod.status_code == 200, eod.text
    report = eod.json()
    # Counted as the bank counts: two approved sales and a refund, not the 9 journalled.
    assert (report["transactions"], report["host_transactions"]) == (3, 3)
    assert (report["in_balance"], report["differences"]) == (True, 0)
    for line in report["lines"]:
        assert line["differs"] is False
        assert line["host"]["net_amount"] == line["net_amount"]
    assert report["grand_totals"] == report["host_grand_totals"] == totals["grand_totals"]
    assert report["text"][3].strip() == "END OF DAY"
    assert "IN BALANCE WITH THE BANK" in report["text"]
    assert api.get("/api/v1/totals").json()["lines"] == []

    batch = report["batch_id"]
    history = api.get("/api/v1/batches").json()
    assert (history["batches"], history["next"]) == ([report], None)
    text = api.get(f"/api/v1/batches/{batch}/report").text
    assert text == "\n".join(report["text"]) + "\n"
    assert batch in text
    html = api.get(f"/api/v1/batches/{batch}/report", params={"format": "html"})
    assert html.headers["content-type"].startswith("text/html")
    assert "30.00 EUR" in html.text
    assert f'data-batch="{batch}"' in html.text
    printed = api.post(f"/api/v1/batches/{batch}/print")
    assert printed.json() == {"printed": batch}
    assert b"END OF DAY" in (tmp_path / "printer.bin").read_bytes()
    unknown = api.get("/api/v1/batches/B-none/report")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert api.post("/api/v1/batches/B-none/print").status_code == 404

    # The next batch pages the history.
    _pay(stack, api, 1300)
    second = api.post("/api/v1/end-of-day", json={"pin": PIN}).json()
    newest = api.get("/api/v1/batches", params={"limit": 1}).json()
    assert [b["batch_id"] for b in newest["batches"]] == [second["batch_id"]]
    older = api.get("/api/v1/batches", params={"limit": 1, "before": newest["next"]}).json()
    assert ([b["batch_id"] for b in older["batches"]], older["next"]) == ([batch], None)


def test_printing_a_report_without_a_printer_is_409(
    tmp_path: Path, session_host: HostHandle
) -> None:
    with _demo_stack(tmp_path, session_host, FakeClock()) as stack, _client(stack) as api:
        _pay(stack, api, 1000)
        batch = api.post("/api/v1/end-of-day", json={"pin": PIN}).json()["batch_id"]
        answer = api.post(f"/api/v1/batches/{batch}/print")
        assert (answer.status_code, answer.json()["error"]["code"]) == (409, "no_printer")


def test_status_gives_contactless_limits_and_the_sound_settings(api: httpx.Client) -> None:
    status = api.get("/api/v1/status").json()
    limits = {limit["brand"]: limit for limit in status["contactless_limits"]}
    assert limits["VISA"]["amount"] == 15000
    assert limits["VISA"]["text"] == "150.00 EUR"
    assert limits["VISA"]["on_device_cvm_amount"] == 100000
    assert limits["MASTERCARD"]["aid"] == "A0000000041010"
    # From which amount each reader refuses: Kernel 3 at the limit, Kernel 2 above it.
    assert limits["VISA"]["refused_from"] == 15000
    assert limits["MASTERCARD"]["refused_from"] == 15001
    assert limits["MASTERCARD"]["refused_from_text"] == "150.01 EUR"
    assert status["announce"] is False
    assert status["sounds"] is True
    assert "simulator" not in status  # not a stack with its own simulated acquirer


def test_end_of_day_with_the_bank_down_says_so_in_the_terminal_language(
    tmp_path: Path, acquirer_host: HostHandle
) -> None:
    with _demo_stack(tmp_path, acquirer_host, FakeClock()) as stack, _client(stack) as api:
        _pay(stack, api, 1000)
        server = acquirer_host.server
        assert server is not None
        server.stop_listening()  # connections refused: [Errno 111]
        try:
            refused = api.post("/api/v1/end-of-day", json={"pin": PIN})
        finally:
            server.listen_again()
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert (error["code"], error["reason"]) == ("acquirer_unavailable", "unreachable")
        assert error["message"] == (
            "Bank unreachable - nothing was done. Try again when the connection is back"
        )
        assert "Errno" not in refused.text
        # Nothing was closed: the batch is still open, and closes once the bank is back.
        assert api.get("/api/v1/totals").json()["transactions"] == 1
        closed = api.post("/api/v1/end-of-day", json={"pin": PIN})
        assert closed.status_code == 200, closed.text
        assert closed.json()["in_balance"] is True


def test_the_simulator_drawer_takes_the_demo_acquirer_down_both_ways(tmp_path: Path) -> None:
    """The demo's own simulated acquirer: "drops" (connections accepted and dropped) gives
    the unanswered sale reversed, then offline approvals; "unreachable" (refused) gives an
    offline approval at once; the end of day while down is refused in words, and once the
    bank is back the report counts the offline sales its own sync sent."""
    stack = start_demo_stack(
        tmp_path,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin=PIN,
        pin_clock=FakeClock(),
        background=False,
    )
    try:
        with _client(stack) as api:
            checkout = stack.checkout

            def switch(mode: str) -> None:
                last = checkout.events.last_id
                answer = api.post("/api/v1/simulator/acquirer", json={"mode": mode})
                assert answer.json() == {"acquirer": mode}
                assert api.get("/api/v1/status").json()["simulator"] == {"acquirer": mode}
                # The page's banner follows the status event, which carries the mode.
                published = checkout.events.after(last, 1.0)
                assert any(
                    e["type"] == "status" and e["data"]["simulator"] == {"acquirer": mode}
                    for e in published
                )

            bad = api.post("/api/v1/simulator/acquirer", json={"mode": "sideways"})
            assert bad.status_code == 422
            assert api.get("/api/v1/status").json()["simulator"] == {"acquirer": "online"}
            assert _pay(stack, api, 1000)["state"] == "approved"

            switch("drops")
            # Not told: the terminal still thinks the bank is there until it asks.
            assert api.get("/api/v1/status").json()["host_online"] is True
            unanswered = _pay(stack, api, 1200)
            assert (unanswered["state"], unanswered["result"]) == ("declined", "host_no_response")
            assert unanswered["title"] == "Not completed - payment reversed"
            assert _pay(stack, api, 800)["state"] == "approved_offline"
            down = api.post("/api/v1/end-of-day", json={"pin": PIN})
            assert (down.status_code, down.json()["error"]["reason"]) == (503, "no_answer")

            switch("online")
            assert api.post("/api/v1/queue/sync").json()["result"]["ok"] is True
            assert api.get("/api/v1/status").json()["host_online"] is True

            switch("unreachable")
            at_once = _pay(stack, api, 900)
            assert (at_once["state"], at_once["title"]) == ("approved_offline", "Approved offline")
            down = api.post("/api/v1/end-of-day", json={"pin": PIN})
            assert (down.status_code, down.json()["error"]["reason"]) == (503, "unreachable")
            assert "Errno" not in down.text

            switch("online")
            closed = api.post("/api/v1/end-of-day", json={"pin": PIN})
            assert closed.status_code == 200, closed.text
            report = closed.json()
            assert report["offline_synced"]["accepted"] == 1  # the 9.00 sent by this sync
            # 10.00 online, 8.00 and 9.00 offline (sent by a sync, and by this end of day's):
            # all three counted, as the bank counts them.
            assert (report["transactions"], report["host_transactions"]) == (3, 3)
            assert report["grand_totals"][0]["sales_amount"] == 2700
            assert report["in_balance"] is True
            assert report["still_offline"]["count"] == 0
    finally:
        stack.close()
