"""The register's display request on the checkout page in headless Chromium at 800x480: the
basket shown between sales (a long one scrolls inside its box, never the page), cleared by a
sale starting and by DELETE. Integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.api.stack import DemoStack
from tests.conftest_host import HostHandle
from tests.terminal.api.test_page import browser as browser
from tests.terminal.api.test_page import (
    csp_violations,
    open_page,
    page_stack,
    playwright_sync,
    shot,
)
from tests.terminal.api.test_page_fit import assert_fits

pytestmark = pytest.mark.integration

expect = playwright_sync.expect

BASKET: dict[str, Any] = {
    "message": "Welcome to the bakery",
    "lines": [
        {"text": "Croissant", "quantity": 2, "amount": 360},
        {"text": "Coffee", "quantity": 1, "amount": 250},
    ],
    "total": 610,
    "currency": 978,
}


@pytest.fixture
def stack(tmp_path: Path, loopback_host: HostHandle) -> Iterator[DemoStack]:
    s = page_stack(tmp_path, loopback_host)
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


@pytest.fixture
def page(browser: object, stack: DemoStack) -> Iterator[Any]:
    p: Any = open_page(browser, stack)
    p.wait_for_selector("body[data-live=true]")
    try:
        yield p
        assert csp_violations(p) == []
    finally:
        p.close()


def test_the_basket_is_shown_between_sales_and_a_sale_replaces_it(
    page: Any, stack: DemoStack, api: httpx.Client
) -> None:
    assert api.put("/api/v1/display", json=BASKET).status_code == 200
    basket = page.locator("[data-testid=basket]")
    expect(basket).to_be_visible()
    expect(page.locator("[data-testid=basket-message]")).to_have_text("Welcome to the bakery")
    rows = page.locator("[data-testid=basket-lines] tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Croissant")
    expect(rows.nth(0)).to_contain_text("3.60 EUR")
    expect(page.locator("[data-testid=basket-total]")).to_have_text("6.10 EUR")
    assert_fits(
        page, "[data-testid=basket-message]", "[data-testid=basket-total]", "#basket-scroll"
    )
    shot(page, "display-basket")
    sale = api.post("/api/v1/sales", json={"amount": 610, "currency": 978})
    assert sale.status_code == 202
    expect(page.locator("#view-wait")).to_be_visible()
    expect(page.locator("#wait-amount")).to_have_text("6.10 EUR")
    assert page.is_hidden("[data-testid=basket]")
    assert api.get("/api/v1/display").json()["shown"] is False
    api.post(f"/api/v1/transactions/{sale.json()['id']}/cancel")
    page.wait_for_selector("#view-result:not(.hidden)")
    assert page.is_hidden("[data-testid=basket]")


def test_a_long_basket_scrolls_in_its_box_and_delete_clears_it(
    page: Any, api: httpx.Client
) -> None:
    lines = [{"text": f"Item number {n}", "quantity": n, "amount": 100 * n} for n in range(1, 51)]
    body = {"message": "Your basket", "lines": lines, "total": 127500}
    assert api.put("/api/v1/display", json=body).status_code == 200
    expect(page.locator("[data-testid=basket-lines] tr")).to_have_count(50)
    assert_fits(page, "[data-testid=basket-message]", "[data-testid=basket-total]")
    box = page.evaluate(
        "(() => { const b = document.getElementById('basket-scroll');"
        " return [b.scrollHeight, b.clientHeight]; })()"
    )
    assert box[0] > box[1], box  # the lines scroll inside their box; the page does not
    expect(page.locator("[data-testid=basket-total]")).to_have_text("1275.00 EUR")
    shot(page, "display-long-basket")
    assert api.delete("/api/v1/display").status_code == 200
    expect(page.locator("[data-testid=basket]")).to_be_hidden()
    expect(page.locator("[data-testid=idle]")).to_be_visible()  # the idle screen, its clock


def test_the_basket_waits_while_an_amount_is_typed(page: Any, api: httpx.Client) -> None:
    page.click('#keypad button[data-key="5"]')
    assert api.put("/api/v1/display", json=BASKET).status_code == 200
    page.wait_for_timeout(300)
    assert page.is_visible("[data-testid=keypad]")  # the merchant's typing is not taken away
    expect(page.locator("[data-testid=amount]")).to_have_text("0.05")
