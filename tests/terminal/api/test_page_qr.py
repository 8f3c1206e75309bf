"""Phone payments on the checkout page in headless Chromium: a simulated phone code scanned
from the simulator panel, a refused code with its reason, and a merchant-presented code shown
as SVG and paid by the simulated phone. Screenshots go with the other page artefacts."""

from __future__ import annotations

from tests.terminal.api.test_page import browser as browser
from tests.terminal.api.test_page import key_in, pay_merchant_code, shot, show_code, wait_for_phone
from tests.terminal.api.test_page import page as page
from tests.terminal.api.test_page import stack as stack


def test_scanned_phone_code_pays_and_shows_the_receipt(page: object) -> None:
    key_in(page, "560")
    page.click("[data-testid=charge]")  # type: ignore[attr-defined]
    wait_for_phone(page)
    assert "scan code" in page.inner_text("[data-testid=prompt]")  # type: ignore[attr-defined]
    shot(page, "qr-01-tap-or-scan")
    show_code(page, "alipay")
    page.wait_for_selector("#view-result:not(.hidden)")  # type: ignore[attr-defined]
    assert page.inner_text("[data-testid=result]") == "Approved"  # type: ignore[attr-defined]
    assert "5.60 EUR" in page.inner_text("[data-testid=result-merchant]")  # type: ignore[attr-defined]
    shot(page, "qr-02-approved")
    page.click("#show-receipt")  # type: ignore[attr-defined]
    page.wait_for_selector(".receipt")  # type: ignore[attr-defined]
    receipt = page.inner_text("[data-testid=receipt]")  # type: ignore[attr-defined]
    assert "QR / WALLET" in receipt
    assert "WALLET CODE" in receipt
    shot(page, "qr-03-receipt")


def test_expired_code_shows_the_reason(page: object) -> None:
    key_in(page, "300")
    page.click("[data-testid=charge]")  # type: ignore[attr-defined]
    wait_for_phone(page)
    show_code(page, "expired")
    page.wait_for_selector("#view-result:not(.hidden)")  # type: ignore[attr-defined]
    assert page.inner_text("[data-testid=result]") == "Declined"  # type: ignore[attr-defined]
    merchant = page.inner_text("[data-testid=result-merchant]")  # type: ignore[attr-defined]
    assert "expired" in merchant
    shot(page, "qr-04-expired")


def test_merchant_presented_code_on_screen_paid_by_the_phone(page: object) -> None:
    key_in(page, "990")
    page.click("[data-testid=charge-qr]")  # type: ignore[attr-defined]
    page.wait_for_selector("[data-testid=merchant-qr] svg")  # type: ignore[attr-defined]
    assert "Scan this code" in page.inner_text("[data-testid=prompt]")  # type: ignore[attr-defined]
    shot(page, "qr-05-merchant-code")
    pay_merchant_code(page)
    page.wait_for_selector("#view-result:not(.hidden)")  # type: ignore[attr-defined]
    assert page.inner_text("[data-testid=result]") == "Approved"  # type: ignore[attr-defined]
    assert "9.90 EUR" in page.inner_text("[data-testid=result-merchant]")  # type: ignore[attr-defined]
    assert page.is_hidden("[data-testid=merchant-qr]")  # type: ignore[attr-defined]
    shot(page, "qr-06-merchant-paid")


def test_a_damaged_scan_asks_to_scan_again_and_the_sale_goes_on(page: object) -> None:
    key_in(page, "450")
    page.click("[data-testid=charge]")  # type: ignore[attr-defined]
    show_code(page, "corrupt")
    page.wait_for_selector("[data-testid=scan-note]:has-text('scan it again')")  # type: ignore[attr-defined]
    assert page.is_visible("#view-wait")  # type: ignore[attr-defined]  # not a Declined
    assert page.is_hidden("#view-result")  # type: ignore[attr-defined]
    shot(page, "qr-07-damaged-scan")
    show_code(page, "alipay")  # the customer holds the phone steadier
    page.wait_for_selector("#view-result:not(.hidden)")  # type: ignore[attr-defined]
    assert page.inner_text("[data-testid=result]") == "Approved"  # type: ignore[attr-defined]
