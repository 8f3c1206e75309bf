"""The checkout page on the kiosk's real screens: every step of the merchant's day at 800x480
and 1024x600 (the Raspberry Pi's usual touch panels) in headless Chromium, against the real
terminal API and simulated acquirer. At each step the page does not scroll and every control
that step needs is inside the viewport and not covered (the "viewport rule"). The tours in
English and Chinese at 800x480 write the screenshots of each step under
$PIPOS_TEST_OUTPUT/page/tour-<language>-<size>/ (the README shows three of them); the Chinese
tour also checks that the screen shows no English word outside card data and brand codes.
Integration tests."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from terminal.api.stack import DemoStack
from tests.terminal.api.test_api_zh import _english
from tests.terminal.api.test_page import (
    OUTPUT,
    csp_violations,
    key_in,
    open_page,
    page_stack,
    pay,
    present,
    wait_for_card,
)
from tests.terminal.api.test_page import browser as browser

pytestmark = pytest.mark.integration

PIN = "2468"

#: Every control and text a step needs, by step: what must be on screen, uncovered.
KEYPAD = [
    "[data-testid=amount]",
    *(f'#keypad button[data-key="{k}"]' for k in ("1", "5", "9", "0", "00", "back")),
    "#clear-amount",
    "[data-testid=charge]",
    '.tab[data-view="list"]',
]

#: The viewport rule, checked in the page: the document does not scroll, and each selector's
#: elements have a box inside the viewport whose centre is the element itself (not covered
#: by a drawer, a banner or another control).
FITS = """(selectors) => {
  const problems = [];
  const w = window.innerWidth, h = window.innerHeight;
  const doc = document.documentElement;
  if (doc.scrollHeight > h + 1 || doc.scrollWidth > w + 1) {
    problems.push("the page scrolls: " + doc.scrollWidth + "x" + doc.scrollHeight);
  }
  // The body clips (overflow: hidden): content taller than the screen would not scroll but
  // be cut off, so the page and its main area must hold what they show.
  for (const box of [document.body, document.querySelector("main")]) {
    if (box.scrollHeight > box.clientHeight + 1 || box.scrollWidth > box.clientWidth + 1) {
      problems.push((box.tagName) + " overflows: " + box.scrollWidth + "x" + box.scrollHeight +
        " in " + box.clientWidth + "x" + box.clientHeight);
    }
  }
  for (const selector of selectors) {
    const elements = document.querySelectorAll(selector);
    if (!elements.length) { problems.push(selector + ": not in the page"); continue; }
    for (const el of elements) {
      const r = el.getBoundingClientRect();
      if (r.width < 1 || r.height < 1) { problems.push(selector + ": not shown"); continue; }
      if (r.left < -0.5 || r.top < -0.5 || r.right > w + 0.5 || r.bottom > h + 0.5) {
        problems.push(selector + ": outside the screen at " +
          [r.left, r.top, r.right, r.bottom].map(Math.round).join(","));
        continue;
      }
      const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      if (!hit || !(hit === el || el.contains(hit))) {
        problems.push(selector + ": covered by " + (hit ? hit.tagName + "#" + hit.id : "nothing"));
      }
    }
  }
  return problems;
}"""


def assert_fits(page: Any, *selectors: str) -> None:
    problems = page.evaluate(FITS, list(selectors))
    size = page.viewport_size
    assert problems == [], f"at {size['width']}x{size['height']}: {problems}"


class Tour:
    """One merchant's day on one screen: each step asserts the viewport rule and writes its
    screenshot; on a Chinese terminal each step's visible text is checked for English."""

    def __init__(self, page: Any, stack: DemoStack, language: str, size: tuple[int, int]) -> None:
        self.page = page
        self.stack = stack
        self.language = language
        self.folder = OUTPUT / f"tour-{language}-{size[0]}x{size[1]}"
        shutil.rmtree(self.folder, ignore_errors=True)  # this run's steps only
        self.folder.mkdir(parents=True, exist_ok=True)
        self.number = 0

    def step(self, name: str, *selectors: str) -> None:
        self.page.wait_for_timeout(150)  # let a transition or a redraw settle
        assert_fits(self.page, *selectors)
        self.number += 1
        self.page.screenshot(path=str(self.folder / f"{self.number:02d}-{name}.png"))
        if self.language == "zh":
            self.assert_chinese(name)

    def assert_chinese(self, name: str) -> None:
        shown = str(self.page.evaluate("document.body.innerText"))
        dialogs = self.page.evaluate(
            "Array.from(document.querySelectorAll('dialog[open]')).map(d => d.innerText)"
        )
        card_data = _card_data(self.stack)
        english = _english([shown, *dialogs], card_data=card_data)
        assert english == [], f"step {name}: English on a Chinese terminal: {english}"


def _card_data(stack: DemoStack) -> set[str]:
    """The journal's identifiers and card data (the card's own application label, "VISA
    CREDIT", included): shown as they are, in every language."""
    values: set[str] = {stack.checkout.terminal_id}
    for record in stack.checkout.journal.recent(limit=500):
        values.add(record.id)
        for name in ("masked_pan", "brand", "auth_code", "rrn", "aid", "batch_id", "reason"):
            value = getattr(record, name, "") or ""
            if name == "reason":
                # The bank's response code ("51"), never its words.
                value = value.split(" ")[0] if re.match(r"^\d\d ", value) else ""
            if value:
                values.add(value)
    for batch in stack.checkout.journal.batches():
        values.add(batch.batch_id)
    return values


@pytest.fixture
def tour_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DemoStack]:
    """`make run`'s demo (its own simulated acquirer, for the drawer's outage switch)."""
    s = page_stack(tmp_path, language=request.param)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize(
    ("tour_stack", "size"),
    [("en", (800, 480)), ("zh", (800, 480)), ("en", (1024, 600)), ("zh", (1024, 600))],
    ids=["en-800x480", "zh-800x480", "en-1024x600", "zh-1024x600"],
    indirect=["tour_stack"],
)
def test_a_merchants_day_fits_the_screen(
    browser: Any, tour_stack: DemoStack, size: tuple[int, int]
) -> None:
    stack = tour_stack
    language = str(stack.checkout.language)
    page = open_page(browser, stack)
    page.set_viewport_size({"width": size[0], "height": size[1]})
    try:
        page.wait_for_selector(f"body[data-live=true][data-language={language}]")
        tour = Tour(page, stack, language, size)
        tour.step("keypad", *KEYPAD)
        page.click("[data-testid=charge]")  # nothing typed: the error shows where it is seen
        page.wait_for_selector("[data-testid=sale-error]:not(:empty)")
        tour.step("no-amount", *KEYPAD, "[data-testid=sale-error]")
        key_in(page, "1234000")  # 12,340.00: above every contactless limit
        page.wait_for_selector("[data-testid=limit-warning]:not(.hidden)")
        tour.step("limit-warning", *KEYPAD, "[data-testid=limit-warning]")
        for _ in range(3):
            page.click('#keypad button[data-key="back"]')
        tour.step("amount", *KEYPAD)
        page.click("[data-testid=charge]")
        wait_for_card(page)
        tour.step(
            "tap-card",
            "[data-testid=prompt]",
            "#wait-amount",
            "[data-testid=cancel]",
            "[data-testid=sim-toggle]",
        )
        page.click("[data-testid=sim-toggle]")
        tour.step(
            "simulator-drawer",
            *(
                f'#sim-cards button[data-card="{c}"]'
                for c in ("visa", "mastercard", "visa?decline")
            ),
            "#sim-acquirer button",
        )
        present(page, "visa")
        page.wait_for_selector("#view-result:not(.hidden)")
        tour.step(
            "approved",
            "[data-testid=result]",
            "[data-testid=result-merchant]",
            "#show-receipt",
            "#new-sale",
        )
        page.click("#show-receipt")
        page.wait_for_selector("[data-testid=receipt] .receipt")
        tour.step(
            "receipt", "[data-testid=receipt]", "#print-receipt", "#receipt-back", ".copy-btn"
        )
        page.click("#print-receipt")  # the demo has no printer: said in the page, no alert()
        page.wait_for_selector("[data-testid=notice]")
        tour.step("no-printer", "[data-testid=notice-text]", "#notice-ok")
        page.click("#notice-ok")
        page.click("#receipt-back")
        page.click("#new-sale")
        pay(page, "1051", "visa")  # the simulated issuer declines x.51: insufficient funds
        tour.step(
            "declined",
            "[data-testid=result]",
            "[data-testid=result-merchant]",
            "[data-testid=try-again]",
            "#new-sale",
        )
        page.click("[data-testid=try-again]")  # the same amount, at once
        wait_for_card(page)
        assert page.inner_text("#wait-amount").startswith("10.51")
        page.click("[data-testid=cancel]")
        page.wait_for_selector("#view-result:not(.hidden)")
        page.click("#new-sale")
        key_in(page, "990")
        page.click("[data-testid=charge-qr]")  # the demo offers the merchant-presented code
        page.wait_for_selector("[data-testid=merchant-qr] svg")
        tour.step(
            "merchant-code",
            "[data-testid=merchant-qr] svg",
            "[data-testid=prompt]",
            "[data-testid=cancel]",
        )
        page.click("[data-testid=cancel]")
        page.wait_for_selector("#view-result:not(.hidden)")
        page.click("#new-sale")
        page.click('.tab[data-view="list"]')
        page.wait_for_selector("#txn-rows tr .refund-btn")
        tour.step(
            "transactions",
            "[data-testid=search]",
            "[data-testid=date-filter]",
            "#attention-filter",
            "#sync-now",
            "#txn-rows tr:first-child",
            "#txn-rows .refund-btn",
            "#txn-rows .void-btn",
            "[data-testid=page-older]",
        )
        page.click("[data-testid=search]")
        page.wait_for_selector("[data-testid=search-dialog][open]")
        tour.step(
            "search-dialog",
            "[data-testid=search-entry]",
            "#search-keypad button",
            "[data-testid=search-ok]",
            "#search-cancel",
        )
        page.click("#search-cancel")
        page.click("#txn-rows .void-btn")
        page.wait_for_selector("[data-testid=pin-dialog][open]")
        tour.step(
            "void-dialog",
            "[data-testid=pin-title]",
            "[data-testid=pin]",
            "#dialog-keypad button",
            "[data-testid=pin-ok]",
            "#pin-cancel",
        )
        page.click("#pin-cancel")
        page.click("#txn-rows .refund-btn")
        page.wait_for_selector("[data-testid=pin-dialog][open]")
        tour.step(
            "refund-dialog",
            "[data-testid=pin-title]",
            "[data-testid=refund-amount]",
            "[data-testid=pin]",
            "#dialog-keypad button",
            "[data-testid=pin-ok]",
            "#pin-cancel",
        )
        for _ in range(5):  # 12.34 offered: the merchant refunds 2.00 on the keypad
            page.click('#dialog-keypad button[data-key="back"]')
        for key in ("2", "sep", "0", "0"):
            page.click(f'#dialog-keypad button[data-key="{key}"]')
        page.click("[data-testid=pin]")
        for digit in PIN:
            page.click(f'#dialog-keypad button[data-key="{digit}"]')
        page.click("[data-testid=pin-ok]")
        page.wait_for_selector("#view-result:not(.hidden)")
        tour.step(
            "refunded",
            "[data-testid=result]",
            "[data-testid=result-merchant]",
            "#show-receipt",
            "#new-sale",
        )
        assert stack.checkout.journal.recent(limit=1)[0].amount == 200
        page.click("#new-sale")
        page.click('.tab[data-view="totals"]')
        page.wait_for_selector("[data-testid=grand-total]")
        tour.step(
            "totals",
            "[data-testid=totals]",
            "[data-testid=end-of-day]",
            "[data-testid=batch-history]",
        )
        page.click("[data-testid=end-of-day]")
        page.wait_for_selector("[data-testid=eod-confirm]:not(.hidden)")
        tour.step(
            "end-of-day-confirm",
            "[data-testid=eod-confirm]",
            "[data-testid=pin]",
            "#dialog-keypad button",
            "[data-testid=pin-ok]",
            "#pin-cancel",
        )
        for digit in PIN:
            page.click(f'#dialog-keypad button[data-key="{digit}"]')
        page.click("[data-testid=pin-ok]")
        page.wait_for_selector("[data-testid=eod-balance]")
        tour.step(
            "end-of-day-report",
            "[data-testid=eod-balance]",
            "[data-testid=report-line]",
            "[data-testid=eod-print]",
            "[data-testid=batch-history]",
        )
        page.click("[data-testid=batch-history]")
        page.wait_for_selector("[data-testid=batches] li button")
        tour.step("batch-history", "[data-testid=batches] li button", '.tab[data-view="sale"]')
        page.click('.tab[data-view="sale"]')
        page.click("[data-testid=sim-toggle]")
        page.click('#sim-acquirer button[data-acquirer="unreachable"]')
        page.wait_for_selector(
            '#sim-acquirer button[data-acquirer="unreachable"][aria-pressed=true]'
        )
        page.click("[data-testid=sim-toggle]")
        pay(page, "800", "mastercard")  # the bank is down: taken offline
        page.click("#new-sale")
        page.wait_for_selector("[data-testid=offline-banner]")
        tour.step("offline-banner", *KEYPAD, "[data-testid=offline-banner]")
        assert csp_violations(page) == []
    finally:
        page.close()


README_SHOTS = re.compile(r"\]\((docs/screenshots/[\w-]+\.png)\)")


def test_the_readme_shows_three_screenshots_at_the_kiosk_size() -> None:
    """The README's screenshots are the tour's, at 800x480 (copied from test-output/page)."""
    root = Path(__file__).resolve().parents[3]
    shots = README_SHOTS.findall((root / "README.md").read_text(encoding="utf-8"))
    assert len(shots) == 3
    for name in shots:
        data = (root / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (800, 480), name
