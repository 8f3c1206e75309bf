"""The checkout page follows the terminal's language: with parameters saying "zh" every label
is Simplified Chinese (keypad screen, result, offline banner, the merchant PIN's errors), and
a status event carrying a new language switches the page live. Screenshots go with the other
page artefacts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from terminal.api.stack import DemoStack
from tests.conftest_host import HostHandle
from tests.terminal.api.test_page import (
    PIN_CLOCK,
    csp_violations,
    key_in,
    open_page,
    pay,
    present,
    shot,
    wait_for_card,
)
from tests.terminal.api.test_page import browser as browser
from tests.terminal.api.test_page import page as page
from tests.terminal.api.test_page import stack as stack


def speak(stack: DemoStack, language: str) -> None:
    """The terminal's parameters now say `language` (as a parameter download would)."""
    params = stack.checkout.params
    stack.checkout.params = replace(params, terminal=replace(params.terminal, language=language))


@pytest.fixture
def zh_page(browser: object, stack: DemoStack) -> Iterator[object]:
    speak(stack, "zh")
    p = open_page(browser, stack)
    p.wait_for_selector("body[data-live=true][data-language=zh]")  # type: ignore[attr-defined]
    try:
        yield p
        assert csp_violations(p) == []
    finally:
        p.close()  # type: ignore[attr-defined]


def text(page: object, selector: str) -> str:
    return str(page.inner_text(selector))  # type: ignore[attr-defined]


def test_keypad_and_approved_sale_in_chinese(zh_page: object) -> None:
    page = zh_page
    assert page.evaluate("document.documentElement.lang") == "zh-CN"  # type: ignore[attr-defined]
    assert page.title() == "pipos 收银台"  # type: ignore[attr-defined]
    assert text(page, '.tab[data-view="sale"]') == "收款"
    assert text(page, '.tab[data-view="list"]') == "交易记录"
    assert text(page, '.tab[data-view="totals"]') == "汇总"
    assert text(page, "[data-testid=charge]") == "收款"
    key_in(page, "1234")
    assert text(page, "[data-testid=amount]") == "12.34"  # the currency's exponent, as before
    shot(page, "zh-01-keypad")
    page.click("[data-testid=charge]")  # type: ignore[attr-defined]
    wait_for_card(page)
    assert text(page, "[data-testid=prompt]") == "请挥卡或扫码"
    assert text(page, "#sim-cards .sim-title") == "模拟银行卡"
    assert text(page, "[data-testid=cancel]") == "取消"
    shot(page, "zh-02-tap-prompt")
    present(page, "visa")
    page.wait_for_selector("#view-result:not(.hidden)")  # type: ignore[attr-defined]
    assert text(page, "[data-testid=result]") == "交易成功"
    assert text(page, "[data-testid=result-merchant]") == "交易成功 12.34 EUR"
    assert text(page, "#result-customer") == "支付成功，谢谢"
    assert text(page, "#show-receipt") == "小票"
    assert text(page, "#new-sale") == "新交易"
    shot(page, "zh-03-approved")
    page.click("#show-receipt")  # type: ignore[attr-defined]
    page.wait_for_selector(".receipt")  # type: ignore[attr-defined]
    assert text(page, '[data-copy="merchant"]') == "商户存根"
    assert text(page, "#receipt-back") == "完成"
    page.click("#receipt-back")  # type: ignore[attr-defined]
    page.click('.tab[data-view="list"]')  # type: ignore[attr-defined]
    page.wait_for_selector("[data-testid=transactions] tr")  # type: ignore[attr-defined]
    row = text(page, "[data-testid=transactions] tr")
    assert "消费" in row
    assert "成功" in row
    assert "退款" in row  # the refund button
    assert text(page, "#view-list thead").split() == ["时间", "类型", "金额", "卡号", "状态"]
    shot(page, "zh-04-transactions")


def test_offline_banner_in_chinese(zh_page: object, acquirer_host: HostHandle) -> None:
    page = zh_page
    acquirer_host.server.stop()
    pay(page, "800", "mastercard")
    assert text(page, "[data-testid=result]") == "脱机交易成功"
    banner = page.locator("[data-testid=offline-banner]")  # type: ignore[attr-defined]
    banner.wait_for(state="visible")
    assert text(page, "#offline-title") == "脱机"
    assert "无法连接银行" in banner.inner_text()
    assert "1 笔交易待上送：8.00 EUR" in banner.inner_text()
    shot(page, "zh-05-offline-banner")


def test_status_event_switches_the_language_live(page: object, stack: DemoStack) -> None:
    assert text(page, "[data-testid=charge]") == "Charge"
    speak(stack, "zh")
    stack.checkout.events.publish("status", stack.checkout.status())
    page.wait_for_selector("body[data-language=zh]")  # type: ignore[attr-defined]
    assert text(page, "[data-testid=charge]") == "收款"
    assert text(page, '.tab[data-view="list"]') == "交易记录"
    speak(stack, "en")
    stack.checkout.events.publish("status", stack.checkout.status())
    page.wait_for_selector("body[data-language=en]")  # type: ignore[attr-defined]
    assert text(page, "[data-testid=charge]") == "Charge"


def test_language_switch_during_a_sale_redraws_its_prompt_and_result(
    page: object, stack: DemoStack
) -> None:
    key_in(page, "640")
    page.click("[data-testid=charge]")  # type: ignore[attr-defined]
    wait_for_card(page)
    assert text(page, "[data-testid=prompt]") == "Tap card or scan code"
    speak(stack, "zh")
    stack.checkout.events.publish("status", stack.checkout.status())
    # The prompt is the terminal's: asked for again (same revision, other words).
    page.wait_for_selector("[data-testid=prompt]:has-text('请挥卡或扫码')")  # type: ignore[attr-defined]
    present(page, "visa")
    page.wait_for_selector("#view-result:not(.hidden)")  # type: ignore[attr-defined]
    assert text(page, "[data-testid=result-merchant]") == "交易成功 6.40 EUR"
    speak(stack, "en")
    stack.checkout.events.publish("status", stack.checkout.status())
    page.wait_for_selector("[data-testid=result-merchant]:has-text('Approved 6.40 EUR')")  # type: ignore[attr-defined]
    assert text(page, "[data-testid=result]") == "Approved"


def test_wrong_and_locked_merchant_pin_in_chinese(zh_page: object, stack: DemoStack) -> None:
    page = zh_page
    pay(page, "2500", "visa")
    page.click("#new-sale")  # type: ignore[attr-defined]
    page.click('.tab[data-view="list"]')  # type: ignore[attr-defined]
    page.click(".refund-btn")  # type: ignore[attr-defined]
    page.fill("[data-testid=refund-amount]", "5.00")  # type: ignore[attr-defined]
    error = "[data-testid=pin-error]"
    for left in (2, 1):
        page.fill("[data-testid=pin]", "0000")  # type: ignore[attr-defined]
        page.click("[data-testid=pin-ok]")  # type: ignore[attr-defined]
        page.wait_for_selector(f"{error}:has-text('{left} 次')")  # type: ignore[attr-defined]
        assert text(page, error) == f"密码错误（再输错 {left} 次将锁定密码输入）"
    shot(page, "zh-06-wrong-pin")
    page.fill("[data-testid=pin]", "0000")  # type: ignore[attr-defined]
    page.click("[data-testid=pin-ok]")  # type: ignore[attr-defined]
    page.wait_for_selector(f"{error}:has-text('秒')")  # type: ignore[attr-defined]
    assert text(page, error) == "密码错误：密码输入已锁定 30 秒"  # this wrong PIN locked it
    shot(page, "zh-07-pin-locked")
    PIN_CLOCK.now += 10
    page.fill("[data-testid=pin]", "2468")  # type: ignore[attr-defined]  # right, but locked
    page.click("[data-testid=pin-ok]")  # type: ignore[attr-defined]
    page.wait_for_selector(f"{error}:has-text('20 秒')")  # type: ignore[attr-defined]
    assert text(page, error) == "商户密码输错次数过多，已锁定：请在 20 秒后重试"
    page.click("#pin-cancel")  # type: ignore[attr-defined]
    PIN_CLOCK.now += 3600  # past the lock-out, for the tests after this one
    assert [r.kind for r in stack.checkout.journal.recent()] == ["sale"]  # nothing refunded
