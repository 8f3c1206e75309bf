"""The checkout page never shows an older state than it has seen, whatever order the
terminal's answers and live events reach it in, and a running sale is never a dead end.

Each test forces one bad order (see tests/page_orders.py) instead of hoping the machine's
load produces it, and runs it ROUNDS times in a row, each round a new sale. Every one of them
failed against the page as it was before transaction views carried a revision: a late answer
was drawn over a newer event and hid the merchant's QR code, left a spinner after a decline
or brought a cancelled sale's prompt back; a reload showed the keypad and "terminal busy".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from terminal.api.stack import DemoStack
from tests.page_orders import RECORDER, HeldRequests, StreamHold
from tests.terminal.api.test_page import CARD_WANTED, key_in, present, shot, wait_for_card
from tests.terminal.api.test_page import browser as browser
from tests.terminal.api.test_page import stack as stack

ROUNDS = 10


def _open(browser: Any, stack: DemoStack, url: str) -> Any:
    """The page on `url` (the terminal's API, or a proxy in front of it), opened as the kiosk
    opens it: the one-time link, which sets the page's session cookie."""
    page = browser.new_page()
    page.add_init_script(RECORDER)
    page.goto(stack.kiosk_url(url))
    page.wait_for_selector("body[data-live=true]")
    return page


@pytest.fixture
def page(browser: Any, stack: DemoStack) -> Iterator[Any]:
    p = _open(browser, stack, stack.api.url)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def proxy(stack: DemoStack) -> Iterator[StreamHold]:
    hold = StreamHold(stack.api.url)
    try:
        yield hold
    finally:
        hold.close()


@pytest.fixture
def slow_stream_page(browser: Any, stack: DemoStack, proxy: StreamHold) -> Iterator[Any]:
    """The page, reaching the terminal through a proxy that can hold its event stream."""
    p = _open(browser, stack, proxy.url)
    try:
        yield p
    finally:
        p.close()


def handled(page: Any, request: str) -> int:
    return int(page.evaluate(f"window.__handled[{request!r}] || 0"))


def wait_handled(page: Any, request: str, before: int) -> None:
    """Until the page has finished with one more answer to `request` than `before`."""
    # A function, not an expression string: the page's CSP allows no eval of strings.
    page.wait_for_function(
        "([key, count]) => (window.__handled[key] || 0) > count", arg=[request, before]
    )


def wait_event(page: Any, event_id: int) -> None:
    """Until the page has handled the terminal's event `event_id` (and all before it)."""
    page.wait_for_function("(id) => window.__lastEventId >= id", arg=event_id)


def screens(page: Any) -> list[str]:
    return list(page.evaluate("window.__screens"))


def start_round(page: Any, digits: str) -> None:
    """Back to the keypad (from a result) and key in an amount."""
    page.evaluate("window.__screens = []")
    if page.is_visible("#new-sale"):
        page.click("#new-sale")
    page.wait_for_selector("#view-sale:not(.hidden)")
    key_in(page, digits)


def result(page: Any) -> str:
    page.wait_for_selector("#view-result:not(.hidden)")
    return str(page.inner_text("[data-testid=result]"))


def cancel_from_screen(page: Any) -> None:
    page.wait_for_selector("[data-testid=cancel]:enabled")
    page.click("[data-testid=cancel]")
    assert result(page) == "Cancelled"


def assert_never_went_back(page: Any) -> None:
    """Once a result was on screen, the waiting screen of that sale never came back."""
    seen = screens(page)
    if "result" in seen:
        assert "wait" not in seen[seen.index("result") :], seen


SALE = "POST /api/v1/sales"


def final_event_published(stack: DemoStack, txn_id: str) -> int:
    """The id of the event that carries `txn_id`'s final state (waiting for it briefly)."""
    hub = stack.checkout.events
    for _ in range(500):
        for event in hub.after(0, timeout=0):
            data = event["data"]
            if (
                event["type"] == "transaction"
                and data.get("id") == txn_id
                and data["state"] != "in_progress"
            ):
                return int(event["id"])
        hub.after(hub.last_id, timeout=0.01)
    raise AssertionError(f"no final event for {txn_id}")


def test_sale_answer_after_the_event_never_hides_the_merchant_code(
    page: Any, stack: DemoStack
) -> None:
    """The original failure: the answer to POST /sales (stage opening_order, no code) came
    after the event that carries the code and hid it until the 120 s timeout."""
    sales = HeldRequests(page, "POST", "/api/v1/sales")
    for round_ in range(ROUNDS):
        start_round(page, "990")
        before = handled(page, SALE)
        page.click("[data-testid=charge-qr]")
        sale = sales.next()
        sale.send()  # the sale starts; the page has not had the answer yet
        page.wait_for_selector("[data-testid=merchant-qr] svg")  # the event brought it
        sale.answer()
        wait_handled(page, SALE, before)
        assert page.is_visible("[data-testid=merchant-qr] svg"), f"round {round_}"
        assert "Scan this code" in page.inner_text("[data-testid=prompt]")
        if round_ == 0:
            shot(page, "orders-01-code-kept-after-late-answer")
        cancel_from_screen(page)
        assert_never_went_back(page)


def test_fast_decline_before_the_sale_answer_leaves_no_spinner(page: Any) -> None:
    sales = HeldRequests(page, "POST", "/api/v1/sales")
    for round_ in range(ROUNDS):
        start_round(page, "1051")  # the simulated issuer declines 10.51: insufficient funds
        before = handled(page, SALE)
        page.click("[data-testid=charge]")
        sale = sales.next()
        sale.send()
        wait_for_card(page)  # the event: waiting for a card
        present(page, "visa")
        assert result(page) == "Declined by the bank"
        sale.answer()  # "waiting for card", long after the card was declined
        wait_handled(page, SALE, before)
        assert page.is_visible("#view-result"), f"round {round_}: {screens(page)}"
        assert page.inner_text("[data-testid=result]") == "Declined by the bank"
        assert page.is_hidden("#spinner")
        assert_never_went_back(page)


def test_late_cancel_answer_never_brings_back_the_cancelled_sale(
    page: Any, stack: DemoStack
) -> None:
    cancels = HeldRequests(page, "POST", "/api/v1/transactions/*/cancel")
    for round_ in range(ROUNDS):
        start_round(page, "100")
        page.click("[data-testid=charge]")
        page.wait_for_selector("[data-testid=cancel]:enabled")
        first = stack.checkout.current
        page.click("[data-testid=cancel]")
        cancel = cancels.next()
        cancel.send()  # cancelled on the terminal; the page hears it from the event
        assert result(page) == "Cancelled"
        start_round(page, "200")  # the merchant goes on with the next sale at once
        page.click("[data-testid=charge]")
        page.wait_for_selector("[data-testid=cancel]:enabled")
        request = f"POST /api/v1/transactions/{first}/cancel"
        before = handled(page, request)
        cancel.answer()  # the first sale's "cancelled" arrives now
        wait_handled(page, request, before)
        assert page.is_visible("#view-wait"), f"round {round_}: {screens(page)}"
        assert page.inner_text("#wait-amount") == "2.00 EUR"
        page.click("[data-testid=cancel]")
        cancels.next().answer()
        assert result(page) == "Cancelled"
        assert_never_went_back(page)


def test_late_events_never_bring_back_the_cancelled_sale(
    slow_stream_page: Any, proxy: StreamHold, stack: DemoStack
) -> None:
    page = slow_stream_page
    for round_ in range(ROUNDS):
        start_round(page, "300")
        proxy.hold()  # from now on the live events arrive late
        page.click("[data-testid=charge]")  # the answer draws the waiting screen
        page.wait_for_selector("[data-testid=cancel]:enabled")
        sale = stack.checkout.current
        assert sale is not None
        page.click("[data-testid=cancel]")  # the answer is the final state: cancelled
        assert result(page) == "Cancelled"
        last = final_event_published(stack, sale)
        proxy.release()  # "waiting for card", "ready", then "cancelled" arrive now
        wait_event(page, last)
        assert page.is_visible("#view-result"), f"round {round_}: {screens(page)}"
        assert page.inner_text("[data-testid=result]") == "Cancelled"
        assert_never_went_back(page)


def test_reload_mid_sale_shows_the_running_sale_and_its_cancel(page: Any, stack: DemoStack) -> None:
    for round_ in range(ROUNDS):
        merchant_code = round_ % 2 == 1
        start_round(page, "450")
        page.click("[data-testid=charge-qr]" if merchant_code else "[data-testid=charge]")
        page.wait_for_selector(
            "[data-testid=merchant-qr] svg" if merchant_code else CARD_WANTED,
            state="visible" if merchant_code else "attached",
        )
        page.reload()
        page.wait_for_selector("body[data-live=true]")
        page.wait_for_selector("#view-wait:not(.hidden)", timeout=5000)
        assert page.inner_text("#wait-amount") == "4.50 EUR"
        if merchant_code:
            page.wait_for_selector("[data-testid=merchant-qr] svg")
        else:
            wait_for_card(page)
        if round_ == 1:
            shot(page, "orders-02-reloaded-during-a-sale")
        cancel_from_screen(page)
        assert stack.checkout.current is None


def test_leaving_the_sale_tab_and_coming_back_shows_the_running_sale(page: Any) -> None:
    for round_ in range(ROUNDS):
        start_round(page, "520")
        page.click("[data-testid=charge]")
        page.wait_for_selector("[data-testid=cancel]:enabled")
        page.click('.tab[data-view="list"]')
        page.wait_for_selector("#view-list:not(.hidden)")
        page.click('.tab[data-view="sale"]')
        page.wait_for_selector("#view-wait:not(.hidden)", timeout=5000)
        assert page.inner_text("#wait-amount") == "5.20 EUR", f"round {round_}"
        cancel_from_screen(page)


def test_charge_while_the_register_runs_a_sale_shows_that_sale(
    slow_stream_page: Any, proxy: StreamHold, stack: DemoStack
) -> None:
    """The page missed the register's sale (its events are late) and the merchant presses
    Charge: instead of "terminal busy" on the keypad, the running sale with its Cancel."""
    import httpx

    page = slow_stream_page
    register = httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=10
    )
    try:
        for round_ in range(ROUNDS):
            start_round(page, "610")
            proxy.hold()
            started = register.post("/api/v1/sales", json={"amount": 777, "currency": 978})
            assert started.status_code == 202, started.text
            page.click("[data-testid=charge]")
            page.wait_for_selector("#view-wait:not(.hidden)", timeout=5000)
            assert page.inner_text("#wait-amount") == "7.77 EUR", f"round {round_}"
            cancel_from_screen(page)
            proxy.release()
            wait_event(page, final_event_published(stack, started.json()["id"]))
            assert page.inner_text("[data-testid=result]") == "Cancelled"
    finally:
        register.close()


def test_refund_answer_after_its_sales_newer_event_is_shown(page: Any) -> None:
    """A refund changes two transactions: the refund, and the sale's refundable amount (a
    newer revision, published before the refund's own final event). Refunding from the list
    while the sale is still the sale screen's, its event reaches the page before the answer
    to the refund: freshness is per transaction, so the refund's result is shown."""
    for round_ in range(ROUNDS):
        start_round(page, "1500")
        page.click("[data-testid=charge]")
        wait_for_card(page)
        present(page, "visa")
        assert result(page) == "Approved"
        page.click('.tab[data-view="list"]')  # no "New sale": the sale stays the screen's
        page.wait_for_selector("#txn-rows .refund-btn")
        page.click("#txn-rows tr:first-child .refund-btn")
        page.fill("[data-testid=refund-amount]", "2.50")
        page.fill("[data-testid=pin]", "2468")
        page.click("[data-testid=pin-ok]")
        assert result(page) == "Refunded", f"round {round_}"
        assert "Refund approved 2.50 EUR" in page.inner_text("[data-testid=result-merchant]")
        assert_never_went_back(page)


def test_a_receipt_from_the_list_during_a_sale_leads_back_to_that_sale(
    page: Any, stack: DemoStack
) -> None:
    start_round(page, "120")
    page.click("[data-testid=charge]")
    wait_for_card(page)
    present(page, "visa")
    assert result(page) == "Approved"
    for round_ in range(ROUNDS):
        start_round(page, "340")
        page.click("[data-testid=charge]")
        page.wait_for_selector("[data-testid=cancel]:enabled")
        page.click('.tab[data-view="list"]')
        page.wait_for_selector("#view-list:not(.hidden)")
        # The approved sale's receipt, while the new sale waits for a card (found by its
        # amount: the cancelled sales of the earlier rounds push it to an older page).
        page.fill("[data-testid=search]", "1.20")
        page.press("[data-testid=search]", "Enter")
        page.click("#txn-rows tr:has-text('1.20') button:has-text('Receipt')")
        page.wait_for_selector("[data-testid=receipt] .receipt")
        assert "1.20 EUR" in page.inner_text("[data-testid=receipt]")
        page.click("#receipt-back")
        page.wait_for_selector("#view-list:not(.hidden)")
        page.click('.tab[data-view="sale"]')
        page.wait_for_selector("#view-wait:not(.hidden)", timeout=5000)
        assert page.inner_text("#wait-amount") == "3.40 EUR", f"round {round_}"
        cancel_from_screen(page)
