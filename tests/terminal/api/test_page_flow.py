"""The checkout page's feedback and flow, as a merchant at the counter meets it (issue 17,
items 4, 5 and 7), in headless Chromium at 800x480 against the real terminal API, simulated
acquirer and virtual cards: a physical keypad and backspace, the contactless limit warning,
tones and the spoken amount, the idle screen and the result's return to the keypad, try
again, the transaction screen (search, date filter, paging, refund and void dialogs on the
on-screen keypad with a human title, the locale's decimal separator, refunds linked to their
sale), the end of day as a report with its confirmation, history and print, and the
simulator drawer's declined card and acquirer outages. Integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from terminal.api.stack import DemoStack
from tests.terminal.api.test_page import (
    CSP_RECORDER,
    PIN_CLOCK,
    csp_violations,
    key_in,
    open_drawer,
    open_page,
    pay,
    playwright_sync,
    present,
    shot,
    show_code,
    wait_for_card,
)
from tests.terminal.api.test_page import browser as browser
from tests.terminal.api.test_page import own_host_stack as own_host_stack
from tests.terminal.api.test_page import page as page
from tests.terminal.api.test_page import stack as stack
from tests.terminal.api.test_page_fit import KEYPAD, assert_fits

pytestmark = pytest.mark.integration

PIN = "2468"  # the page tests' stack's merchant PIN

#: Records the page's tones (each oscillator's frequency as it starts) and what it speaks,
#: with one English and one Chinese voice, as a kiosk with speech voices installed has.
AUDIO_RECORDER = """
window.__tones = [];
const realStart = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__tones.push(Math.round(this.frequency.value));
  return realStart.apply(this, args);
};
window.__spoken = [];
const voices = [{ lang: "en-GB", name: "English" }, { lang: "zh-CN", name: "Chinese" }];
window.SpeechSynthesisUtterance = class { constructor(text) { this.text = text; } };
Object.defineProperty(window, "speechSynthesis", { configurable: true, value: {
  getVoices: () => voices,
  speak: (utterance) => window.__spoken.push({ text: utterance.text, lang: utterance.lang }),
} });
"""


def register(stack: DemoStack) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    )


def sale_by_api(client: httpx.Client, stack: DemoStack, amount: int, card: str = "visa") -> str:
    """A sale the cash register starts and the simulated customer pays (faster than the
    keypad, for tests that need many transactions)."""
    started = client.post("/api/v1/sales", json={"amount": amount, "currency": 978})
    assert started.status_code == 202, started.text
    txn_id = str(started.json()["id"])
    presented = client.post("/api/v1/simulator/present", json={"card": card})
    assert presented.status_code == 200, presented.text
    stack.checkout.wait(txn_id, timeout=15)
    return txn_id


def tap_pin(page: Any, pin: str = PIN) -> None:
    """The merchant PIN typed on the dialog's own keypad (the kiosk has no OS keyboard)."""
    page.click("[data-testid=pin]")
    for digit in pin:
        page.click(f'#dialog-keypad button[data-key="{digit}"]')


@pytest.fixture
def audio_page(browser: Any, stack: DemoStack) -> Iterator[Any]:
    p = browser.new_page()
    p.add_init_script(AUDIO_RECORDER)
    p.add_init_script(CSP_RECORDER)
    p.goto(stack.kiosk_url())
    p.wait_for_selector("body[data-live=true]")
    try:
        yield p
        assert csp_violations(p) == []
    finally:
        p.close()


@pytest.fixture
def own_page(browser: Any, own_host_stack: DemoStack) -> Iterator[Any]:
    """The page of `make run`'s demo, whose simulated acquirer the drawer can take down."""
    p = open_page(browser, own_host_stack)
    p.wait_for_selector("body[data-live=true]")
    try:
        yield p
        assert csp_violations(p) == []
    finally:
        p.close()


@pytest.fixture
def clock_page(browser: Any, stack: DemoStack) -> Iterator[Any]:
    """The page with its timers on Playwright's clock: minutes pass at once."""
    p = browser.new_page()
    p.clock.install()
    p.add_init_script(CSP_RECORDER)
    p.goto(stack.kiosk_url())
    p.wait_for_selector("body[data-live=true]")
    try:
        yield p
    finally:
        p.close()


# --- the keypad ------------------------------------------------------------------------


def test_a_physical_keypad_types_deletes_clears_and_charges(page: Any, stack: DemoStack) -> None:
    page.keyboard.type("12345")
    assert page.inner_text("[data-testid=amount]") == "123.45"
    page.keyboard.press("Backspace")
    assert page.inner_text("[data-testid=amount]") == "12.34"
    page.click('#keypad button[data-key="back"]')  # the on-screen backspace too
    assert page.inner_text("[data-testid=amount]") == "1.23"
    page.keyboard.press("Escape")
    assert page.inner_text("[data-testid=amount]") == "0.00"
    page.keyboard.type("700")
    page.keyboard.press("Enter")
    wait_for_card(page)
    assert page.inner_text("#wait-amount") == "7.00 EUR"
    present(page, "visa")
    page.wait_for_selector("#view-result:not(.hidden)")
    assert page.inner_text("[data-testid=result]") == "Approved"


def test_an_amount_above_a_contactless_limit_is_warned_before_charge(
    page: Any, stack: DemoStack
) -> None:
    limits = stack.checkout.status()["contactless_limits"]
    assert limits, "the demo parameters configure contactless limits"
    # The first amount a reader refuses: the limit itself for Visa (Book C-3), one unit
    # above it for Mastercard (Book C-2).
    first = min(limits, key=lambda limit: limit["refused_from"])
    key_in(page, str(first["refused_from"] - 1))
    warning = page.locator("[data-testid=limit-warning]")
    assert warning.is_hidden()  # one unit below: every card can tap
    page.click("#clear-amount")
    key_in(page, str(first["refused_from"]))
    warning.wait_for(state="visible")
    assert "contactless limit" in warning.inner_text()
    assert first["brand_text"] in warning.inner_text()
    shot(page, "flow-01-limit-warning")
    page.click('#keypad button[data-key="back"]')
    warning.wait_for(state="hidden")


# --- tones, voice, idle, try again ----------------------------------------------------------


def test_tones_on_tap_approval_and_decline(audio_page: Any) -> None:
    page = audio_page
    pay(page, "1200", "visa")
    tones = page.evaluate("window.__tones")
    assert tones[-2:] == [880, 1318], tones  # approved: two rising notes
    assert tones[:-2] == [1318], tones  # before them, the card's tap: one short high note
    page.click("#new-sale")
    page.evaluate("window.__tones = []")
    pay(page, "1051", "visa")  # declined by the issuer: insufficient funds
    tones = page.evaluate("window.__tones")
    assert tones[-2:] == [330, 220], tones  # declined: two low notes
    assert page.evaluate("window.__spoken") == []  # the announcement is off by default


def test_the_approved_amount_is_spoken_when_the_parameters_ask(
    browser: Any, stack: DemoStack
) -> None:
    params = stack.checkout.params
    stack.checkout.params = replace(params, terminal=replace(params.terminal, announce_amount=True))
    p = browser.new_page()
    p.add_init_script(AUDIO_RECORDER)
    p.goto(stack.kiosk_url())
    try:
        p.wait_for_selector("body[data-live=true]")
        pay(p, "1234", "visa")
        for _ in range(50):  # the page's CSP allows no eval: poll with evaluate
            if p.evaluate("window.__spoken.length"):
                break
            p.wait_for_timeout(100)
        assert p.evaluate("window.__spoken") == [
            {"text": "Payment received, 12.34 EUR", "lang": "en-GB"}
        ]
    finally:
        p.close()


def test_a_chinese_terminal_announces_alipay_as_a_speaker_box_does(
    browser: Any, stack: DemoStack
) -> None:
    params = stack.checkout.params
    stack.checkout.params = replace(
        params, terminal=replace(params.terminal, announce_amount=True, language="zh")
    )
    p = browser.new_page()
    p.add_init_script(AUDIO_RECORDER)
    p.goto(stack.kiosk_url())
    try:
        p.wait_for_selector("body[data-live=true][data-language=zh]")
        key_in(p, "560")
        p.click("[data-testid=charge]")
        show_code(p, "alipay")
        p.wait_for_selector("#view-result:not(.hidden)")
        for _ in range(50):
            if p.evaluate("window.__spoken.length"):
                break
            p.wait_for_timeout(100)
        assert p.evaluate("window.__spoken") == [{"text": "支付宝到账5.60 EUR", "lang": "zh-CN"}]
    finally:
        p.close()


def test_idle_screen_after_a_minute_and_results_return_to_the_keypad(clock_page: Any) -> None:
    page = clock_page
    page.clock.fast_forward(61_000)
    page.wait_for_selector("[data-testid=idle]:not(.hidden)")
    assert_fits(page, "[data-testid=idle]", "#idle-clock", '.tab[data-view="list"]')
    shot(page, "flow-02-idle")
    page.click("[data-testid=idle]")
    page.wait_for_selector("#view-sale:not(.hidden)")
    pay(page, "300", "visa")
    assert "30 s" in page.inner_text("[data-testid=auto-return]")
    page.clock.fast_forward(31_000)
    page.wait_for_selector("#view-sale:not(.hidden)")
    assert page.inner_text("[data-testid=amount]") == "0.00"
    # Back from the receipt, the result still returns to the keypad by itself.
    pay(page, "400", "visa")
    page.click("#show-receipt")
    page.wait_for_selector("[data-testid=receipt] .receipt")
    page.clock.fast_forward(40_000)  # the receipt stays while the merchant reads it
    assert page.is_visible("#view-receipt")
    page.click("#receipt-back")
    page.wait_for_selector("#view-result:not(.hidden)")
    page.clock.fast_forward(31_000)
    page.wait_for_selector("#view-sale:not(.hidden)")


def test_typing_keeps_the_screen_awake(clock_page: Any) -> None:
    page = clock_page
    page.clock.fast_forward(50_000)
    key_in(page, "5")
    page.clock.fast_forward(61_000)  # an amount is typed: never idle over it
    assert page.is_visible("#view-sale")
    assert page.inner_text("[data-testid=amount]") == "0.05"


def test_try_again_after_a_decline_keeps_the_amount(page: Any, stack: DemoStack) -> None:
    pay(page, "2051", "visa")
    assert page.inner_text("[data-testid=result]") != "Approved"
    page.click("[data-testid=try-again]")
    wait_for_card(page)
    assert page.inner_text("#wait-amount") == "20.51 EUR"
    present(page, "mastercard")  # another card: the bank declines x.51 again, as it should
    page.wait_for_selector("#view-result:not(.hidden)")
    sales = [r for r in stack.checkout.journal.recent(limit=5) if r.kind == "sale"]
    assert [r.amount for r in sales[:2]] == [2051, 2051]


def test_no_duplicated_reasons_and_titles_say_what_happened(page: Any) -> None:
    pay(page, "1200", "visa?decline")  # the card itself declines (AAC)
    title = page.inner_text("[data-testid=result]")
    merchant = page.inner_text("[data-testid=result-merchant]")
    assert "card" in title.lower(), title
    lowered = merchant.lower()
    assert lowered.count("declined") <= 1, merchant


# --- the transaction screen --------------------------------------------------------------


def test_refund_dialog_has_a_human_title_keypad_and_the_decimal_comma(
    page: Any, stack: DemoStack
) -> None:
    pay(page, "2500", "visa")
    page.click("#new-sale")
    page.click('.tab[data-view="list"]')
    page.click("#txn-rows .refund-btn")
    title = page.inner_text("[data-testid=pin-title]")
    assert title.startswith("Refund 25.00 EUR, VISA CREDIT \u2022\u20220010, "), title
    sale_id = stack.checkout.journal.recent(limit=1)[0].id
    assert sale_id not in title
    page.fill("[data-testid=refund-amount]", "5,00")  # a German shop's comma
    tap_pin(page)
    shot(page, "flow-03-refund-dialog")
    page.click("[data-testid=pin-ok]")
    page.wait_for_selector("#view-result:not(.hidden)")
    assert page.inner_text("[data-testid=result]") == "Refunded"
    page.click("#new-sale")
    page.click('.tab[data-view="list"]')
    page.wait_for_selector("[data-testid=refund-of]")
    refund_row = page.locator("#txn-rows tr", has=page.locator("[data-testid=refund-of]"))
    assert "25.00 EUR" in refund_row.inner_text()
    assert "-5.00 EUR" in refund_row.inner_text()
    sale_row = page.locator(f'#txn-rows tr[data-id="{sale_id}"]')
    assert "partially refunded" in sale_row.inner_text()
    shot(page, "flow-04-refund-linked")


def test_a_refund_above_what_is_left_is_refused_in_the_dialog(page: Any) -> None:
    pay(page, "1000", "visa")
    page.click("#new-sale")
    page.click('.tab[data-view="list"]')
    page.click("#txn-rows .refund-btn")
    page.fill("[data-testid=refund-amount]", "10.01")
    tap_pin(page)
    page.click("[data-testid=pin-ok]")
    page.wait_for_selector("[data-testid=pin-error]:has-text('At most 10.00 EUR')")
    page.fill("[data-testid=refund-amount]", "1,000")  # grouping is never guessed
    page.click("[data-testid=pin-ok]")
    page.wait_for_selector("[data-testid=pin-error]:has-text('Enter a valid amount')")


def test_void_from_the_list_with_the_pin(page: Any, stack: DemoStack) -> None:
    pay(page, "1800", "visa")
    page.click("#new-sale")
    page.click('.tab[data-view="list"]')
    page.click("#txn-rows .void-btn")
    title = page.inner_text("[data-testid=pin-title]")
    assert title.startswith("Void 18.00 EUR, VISA CREDIT \u2022\u20220010, "), title
    assert page.is_hidden("[data-testid=refund-amount]")
    tap_pin(page, "0000")
    page.click("[data-testid=pin-ok]")
    page.wait_for_selector("[data-testid=pin-error]:has-text('Wrong PIN')")
    PIN_CLOCK.now += 60
    page.fill("[data-testid=pin]", "")
    tap_pin(page)
    page.click("[data-testid=pin-ok]")
    page.wait_for_selector("#view-result:not(.hidden)")
    assert page.inner_text("[data-testid=result]") == "Voided"
    page.click("#new-sale")
    page.click('.tab[data-view="list"]')
    sale_id = next(r.id for r in stack.checkout.journal.recent(limit=5) if r.kind == "sale")
    row = page.locator(f'#txn-rows tr[data-id="{sale_id}"]')
    playwright_sync.expect(row).to_contain_text("voided")  # once the list is reloaded
    assert row.locator(".void-btn").count() == 0
    assert row.locator(".refund-btn").count() == 0


def test_search_by_amount_and_last_digits_filter_by_date_and_page(
    page: Any, stack: DemoStack
) -> None:
    with register(stack) as client:
        for amount in range(101, 113):  # twelve sales: more than one page at 800x480
            sale_by_api(client, stack, amount)
        sale_by_api(client, stack, 4321, card="mastercard")
    page.click('.tab[data-view="list"]')
    page.wait_for_selector("#txn-rows tr")
    first_page = page.locator("#txn-rows tr").count()
    assert 4 <= first_page < 13
    assert page.inner_text("[data-testid=page-label]") == "Page 1"
    page.click("[data-testid=page-older]")
    page.wait_for_selector("[data-testid=page-label]:has-text('Page 2')")
    assert "1.01 EUR" not in page.inner_text("#txn-rows") or first_page >= 12
    page.click("[data-testid=page-newer]")
    page.wait_for_selector("[data-testid=page-label]:has-text('Page 1')")
    # Search on the on-screen keypad: an amount with the comma.
    page.click("[data-testid=search]")
    page.wait_for_selector("[data-testid=search-dialog][open]")
    for key in ("4", "3", "sep", "2", "1"):
        page.click(f'#search-keypad button[data-key="{key}"]')
    page.click("[data-testid=search-ok]")
    playwright_sync.expect(page.locator("#txn-rows tr")).to_have_count(1)
    assert "43.21 EUR" in page.inner_text("#txn-rows")
    # The card's last 4 digits.
    last4 = next(r.masked_pan for r in stack.checkout.journal.recent(limit=1))[-4:]
    page.click("[data-testid=search]")
    page.fill("[data-testid=search-entry]", last4)
    page.click("[data-testid=search-ok]")
    page.wait_for_selector("#txn-rows tr")
    assert all(last4 in row for row in page.locator("#txn-rows tr").all_inner_texts())
    # Yesterday: nothing was sold yesterday on this fresh terminal.
    page.select_option("[data-testid=date-filter]", "yesterday")
    page.wait_for_selector("#list-empty:not(.hidden)")
    page.select_option("[data-testid=date-filter]", "today")
    page.wait_for_selector("#txn-rows tr")
    shot(page, "flow-05-search")


# --- end of day -----------------------------------------------------------------------------


def test_end_of_day_confirms_closes_reports_and_keeps_history(page: Any, stack: DemoStack) -> None:
    with register(stack) as client:
        sale_by_api(client, stack, 1200)
        sale_by_api(client, stack, 3000, card="mastercard")
        sale_by_api(client, stack, 1051)  # declined: never counted
    page.click('.tab[data-view="totals"]')
    grand = page.locator("[data-testid=grand-total]")
    grand.wait_for()
    assert "42.00 EUR" in grand.inner_text()
    assert "(2)" in grand.inner_text()
    shot(page, "flow-06-totals")
    page.click("[data-testid=end-of-day]")
    confirm = page.locator("[data-testid=eod-confirm]")
    confirm.wait_for()
    assert "42.00 EUR" in confirm.inner_text()
    page.click("#pin-cancel")  # changed their mind: the batch stays open
    assert stack.checkout.totals() != []
    page.click("[data-testid=end-of-day]")
    tap_pin(page, "0000")
    page.click("[data-testid=pin-ok]")
    page.wait_for_selector("[data-testid=pin-error]:has-text('Wrong PIN')")
    assert stack.checkout.totals() != []
    PIN_CLOCK.now += 60
    page.fill("[data-testid=pin]", "")
    tap_pin(page)
    page.click("[data-testid=pin-ok]")
    balance = page.locator("[data-testid=eod-balance]")
    balance.wait_for()
    assert "In balance with the bank: 2 payment(s)" in balance.inner_text()
    assert page.locator("[data-testid=report-line]").count() == 2
    assert stack.checkout.totals() == []
    shot(page, "flow-07-end-of-day-report")
    page.click("[data-testid=eod-print]")  # no printer in the demo: said in the page
    page.wait_for_selector("[data-testid=notice-text]:has-text('No receipt printer')")
    page.click("#notice-ok")
    page.click('.tab[data-view="sale"]')
    page.click('.tab[data-view="totals"]')
    page.click("[data-testid=batch-history]")
    batches = page.locator("[data-testid=batches] li button")
    batches.first.wait_for()
    assert batches.count() == 1
    assert "42.00 EUR" in batches.first.inner_text()
    batches.first.click()
    page.wait_for_selector("[data-testid=eod-balance]")
    shot(page, "flow-08-batch-history")


# --- the simulator drawer --------------------------------------------------------------------


def test_drawer_declined_card_is_one_tap_away(page: Any) -> None:
    key_in(page, "1500")
    page.click("[data-testid=charge]")
    present(page, "visa?decline")
    page.wait_for_selector("#view-result:not(.hidden)")
    assert "declined" in page.inner_text("[data-testid=result]").lower()


def test_drawer_outage_that_drops_answers_then_back(own_page: Any) -> None:
    page = own_page
    open_drawer(page)
    page.click('#sim-acquirer button[data-acquirer="drops"]')
    page.wait_for_selector('#sim-acquirer button[data-acquirer="drops"][aria-pressed=true]')
    page.click("[data-testid=sim-toggle]")
    pay(page, "1200", "visa")  # unanswered: reversed; the terminal now knows
    banner = page.locator("[data-testid=offline-banner]")
    banner.wait_for(state="visible")
    assert "Bank not answering" in banner.inner_text()
    page.click("#new-sale")
    pay(page, "800", "visa")
    assert page.inner_text("[data-testid=result]") == "Approved offline"
    page.click("#new-sale")
    open_drawer(page)
    page.click('#sim-acquirer button[data-acquirer="online"]')
    page.wait_for_selector('#sim-acquirer button[data-acquirer="online"][aria-pressed=true]')
    page.click("[data-testid=sim-toggle]")
    page.click('.tab[data-view="list"]')
    page.click("#sync-now")
    page.wait_for_selector('[data-testid=sync-result]:has-text("1 sent")')
    banner.wait_for(state="hidden")


def test_both_banners_leave_the_keypad_on_screen(own_page: Any) -> None:
    """The bank declined an offline sale afterwards (orange banner) and is down again with a
    payment waiting (red banner): keypad and Charge still fit, at 800x480 and 1024x600."""
    page = own_page
    acquirer(page, "drops")
    pay(page, "1200", "visa")  # unanswered: reversed; the terminal now knows
    page.click("#new-sale")
    pay(page, "951", "visa")  # x.51: the bank declines it when it is sent
    page.click("#new-sale")
    acquirer(page, "online")
    page.click('.tab[data-view="list"]')
    page.click("#sync-now")
    page.wait_for_selector("[data-testid=flagged-banner]")
    acquirer(page, "drops")
    page.click('.tab[data-view="sale"]')
    pay(page, "1300", "visa")  # unanswered again
    page.click("#new-sale")
    pay(page, "700", "visa")  # offline, waiting
    page.click("#new-sale")
    page.wait_for_selector('[data-testid=offline-banner]:has-text("1 payment waiting")')
    assert page.is_visible("[data-testid=flagged-banner]")
    for size in ({"width": 800, "height": 480}, {"width": 1024, "height": 600}):
        page.set_viewport_size(size)
        assert_fits(page, *KEYPAD, "[data-testid=offline-banner]", "#flagged-ack")
    page.set_viewport_size({"width": 800, "height": 480})
    shot(page, "flow-09-both-banners")


def acquirer(page: Any, mode: str) -> None:
    """The simulated bank's switch in the drawer (then the drawer is closed again)."""
    open_drawer(page)
    page.click(f'#sim-acquirer button[data-acquirer="{mode}"]')
    page.wait_for_selector(f'#sim-acquirer button[data-acquirer="{mode}"][aria-pressed=true]')
    page.click("[data-testid=sim-toggle]")


def test_drawer_outage_that_refuses_connections(own_page: Any) -> None:
    page = own_page
    open_drawer(page)
    page.click('#sim-acquirer button[data-acquirer="unreachable"]')
    page.wait_for_selector('#sim-acquirer button[data-acquirer="unreachable"][aria-pressed=true]')
    page.click("[data-testid=sim-toggle]")
    pay(page, "800", "mastercard")
    assert page.inner_text("[data-testid=result]") == "Approved offline"
    banner = page.locator("[data-testid=offline-banner]")
    banner.wait_for(state="visible")
    assert "unreachable" in banner.inner_text()
    page.click("#new-sale")
    open_drawer(page)
    page.click('#sim-acquirer button[data-acquirer="online"]')
    page.wait_for_selector('#sim-acquirer button[data-acquirer="online"][aria-pressed=true]')


def test_batch_history_pages_back_to_the_oldest_batch(page: Any, stack: DemoStack) -> None:
    with register(stack) as client:
        for amount in range(201, 222):  # 21 days, one sale each
            sale_by_api(client, stack, amount)
            closed = client.post("/api/v1/end-of-day", json={"pin": PIN})
            assert closed.status_code == 200, closed.text
    page.click('.tab[data-view="totals"]')
    page.click("[data-testid=batch-history]")
    rows = page.locator("[data-testid=batches] li button:not([data-testid=older-batches])")
    playwright_sync.expect(rows).to_have_count(20)
    assert "2.21 EUR" in rows.first.inner_text()  # newest first
    page.click("[data-testid=older-batches]")
    playwright_sync.expect(rows).to_have_count(21)
    assert "2.01 EUR" in rows.last.inner_text()
    assert page.locator("[data-testid=older-batches]").count() == 0
