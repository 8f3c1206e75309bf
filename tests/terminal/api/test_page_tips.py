"""Tip entry on the checkout page (pipos run --tips) in headless Chromium at 800x480: a preset
chosen, the card asked for the total, the receipt's tip line; a typed tip; no tip; cancel
on the tip screen; every step inside the screen. Integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from terminal.api.stack import DemoStack
from terminal.domain.tips import TipSettings
from tests.conftest_host import HostHandle
from tests.terminal.api.test_page import browser as browser
from tests.terminal.api.test_page import (
    csp_violations,
    key_in,
    open_page,
    page_stack,
    playwright_sync,
    present,
    shot,
)
from tests.terminal.api.test_page_fit import assert_fits

pytestmark = pytest.mark.integration

expect = playwright_sync.expect

TIP_SCREEN = [
    "[data-testid=tip-base]",
    "[data-testid=tip-preset-10]",
    "[data-testid=tip-preset-15]",
    "[data-testid=tip-preset-20]",
    "[data-testid=tip-custom]",
    "[data-testid=tip-none]",
    "[data-testid=tip-cancel]",
]
TYPING = [
    "[data-testid=tip-custom-amount]",
    "[data-testid=tip-custom-total]",
    "[data-testid=tip-custom-ok]",
    "[data-testid=tip-cancel]",
    *(f'#tip-keypad button[data-key="{k}"]' for k in ("1", "5", "0", "00", "back")),
]


@pytest.fixture
def stack(tmp_path: Path, loopback_host: HostHandle) -> Iterator[DemoStack]:
    s = page_stack(tmp_path, loopback_host)
    s.checkout.tips = TipSettings((10, 15, 20), custom=True)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def page(browser: object, stack: DemoStack) -> Iterator[Any]:
    p: Any = open_page(browser, stack)
    p.wait_for_selector("body[data-live=true]")
    try:
        yield p
        assert csp_violations(p) == []
    finally:
        p.close()


def _charge(page: Any, digits: str) -> None:
    key_in(page, digits)
    page.click("[data-testid=charge]")
    expect(page.locator("[data-testid=tip]")).to_be_visible()
    expect(page.locator("[data-testid=tip-none]")).to_be_visible()  # the offer has arrived


def test_a_preset_tip_asks_the_card_for_the_total_and_the_receipt_shows_it(
    page: Any, stack: DemoStack
) -> None:
    _charge(page, "1234")
    expect(page.locator("[data-testid=tip-base]")).to_have_text("Amount 12.34 EUR")
    expect(page.locator("[data-testid=tip-preset-15]")).to_have_text("15 %+ 1.85 EUR")
    assert page.is_hidden("[data-testid=tip-keypad]")
    assert_fits(page, *TIP_SCREEN)
    shot(page, "tip-screen")
    page.click("[data-testid=tip-preset-15]")
    expect(page.locator("#wait-amount")).to_have_text("14.19 EUR")
    expect(page.locator("[data-testid=wait-tip]")).to_have_text("Including tip 1.85 EUR")
    assert_fits(page, "#wait-amount", "[data-testid=wait-tip]", "[data-testid=cancel]")
    current = stack.checkout.current
    assert current is not None
    assert stack.checkout.get(current).amount == 1419
    present(page, "visa")
    page.wait_for_selector("#view-result:not(.hidden)")
    assert stack.checkout.get(current).state == "approved"
    page.click("#show-receipt")
    receipt = page.locator("[data-testid=receipt]")
    expect(receipt).to_contain_text("TIP")
    expect(receipt).to_contain_text("1.85 EUR")
    expect(receipt).to_contain_text("14.19 EUR")


def test_a_typed_tip(page: Any, stack: DemoStack) -> None:
    _charge(page, "1000")
    page.click("[data-testid=tip-custom]")
    expect(page.locator("[data-testid=tip-keypad]")).to_be_visible()
    for key in "250":
        page.click(f'#tip-keypad button[data-key="{key}"]')
    expect(page.locator("[data-testid=tip-custom-amount]")).to_have_text("2.50")
    expect(page.locator("[data-testid=tip-custom-total]")).to_have_text("Total 12.50 EUR")
    assert_fits(page, *TYPING)
    shot(page, "tip-typed")
    page.click("[data-testid=tip-custom-ok]")
    expect(page.locator("#wait-amount")).to_have_text("12.50 EUR")
    current = stack.checkout.current
    assert current is not None
    record = stack.checkout.get(current)
    assert (record.amount, record.tip_amount) == (1250, 250)
    page.click("[data-testid=cancel]")
    expect(page.locator("[data-testid=result]")).to_be_visible()


def test_no_tip(page: Any, stack: DemoStack) -> None:
    _charge(page, "800")
    page.click("[data-testid=tip-none]")
    expect(page.locator("#wait-amount")).to_have_text("8.00 EUR")
    assert page.is_hidden("[data-testid=wait-tip]")
    present(page, "visa")
    page.wait_for_selector("#view-result:not(.hidden)")
    sale = stack.checkout.journal.page(limit=1)[0][0]
    assert (sale.state, sale.amount, sale.tip_amount) == ("approved", 800, 0)


def test_cancel_on_the_tip_screen(page: Any, stack: DemoStack) -> None:
    _charge(page, "900")
    page.click("[data-testid=tip-cancel]")
    page.wait_for_selector("#view-result:not(.hidden)")
    expect(page.locator("[data-testid=result]")).to_have_text("Cancelled")
    assert_fits(page, "[data-testid=result]", "#new-sale")
    sale = stack.checkout.journal.page(limit=1)[0][0]
    assert (sale.state, sale.amount) == ("cancelled", 900)
    assert stack.checkout.current is None
