"""A Chinese terminal speaks Chinese end to end: `pipos run --language zh`'s demo stack (in
process, against the session's simulated acquirer) takes a sale, a sale the bank declines
(the x.51 amount rule: 51 insufficient funds), a refund and the end of day; every text its
API gives the merchant or the customer (the transaction views, the receipts, the page's
labels) has no English word outside card data, brand codes, EMV names, currency codes and
the merchant's own name from its parameters."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.api.stack import DemoStack, start_demo_stack
from terminal.domain.errors import ConfigurationError
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle
from tests.terminal.api.test_api import api as api  # the register's client of this module's stack

pytestmark = pytest.mark.integration

PIN = "2468"
WORD = re.compile(r"[A-Za-z]{3,}")
#: Not words: EMV data in hex (cryptograms, TVR) and the page's "{name}" placeholders.
NOT_WORDS = re.compile(r"\b[0-9A-F]{8,}\b|\{\w+\}")
HAN = re.compile(r"[\u4e00-\u9fff]")
#: What a Chinese merchant reads as it is: card brands and EMV names (the card's own data),
#: the currency code, and the merchant's name and identifiers its acquirer configured
#: ("PIPOS DEMO SHOP, BERLIN DE", PIPOS0000000001, PIPOS001); the product's and its
#: commands' names; the simulator's card brand buttons.
ALLOWED: frozenset[str] = frozenset(
    {
        "VISA",
        "Visa",
        "MASTERCARD",
        "Mastercard",
        "Maestro",
        "EMVCo",
        "AID",
        "ARQC",
        "ATC",
        "TVR",
        "AAC",
        "EUR",
        "PIPOS",
        "DEMO",
        "SHOP",
        "BERLIN",
        "pipos",
        "merchant",  # "pipos merchant-pin set": a command the technician types
        "pin",
        "set",
        "kiosk",
        "HTTP",
    }
)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(markup: str) -> str:
    parser = _Text()
    parser.feed(markup)
    return " ".join(parser.parts)


def _english(texts: list[str], *, card_data: set[str]) -> list[tuple[str, str]]:
    """(word, text) for every English word in `texts` that is not allowed; card data
    (masked PANs, AIDs, references, transaction ids) is removed first."""
    found = []
    for text in texts:
        for value in card_data:
            text = text.replace(value, " ")
        text = NOT_WORDS.sub(" ", text)
        found += [
            (w, text)
            for w in WORD.findall(text)
            # A piece of a value the receipt wrapped over two lines (a long transaction id
            # on a 32-column slip) is that value, not a word.
            if w not in ALLOWED and not any(w in value for value in card_data)
        ]
    return found


def _zh_stack(tmp_path: Path, host: HostHandle) -> DemoStack:
    """`pipos run --language zh`'s demo stack, enrolled with `host`."""
    return start_demo_stack(
        tmp_path,
        host_url=host.url,
        activation_code=host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin=PIN,
        background=False,
        language="zh",
    )


@pytest.fixture
def stack(tmp_path: Path, session_host: HostHandle) -> Iterator[DemoStack]:
    s = _zh_stack(tmp_path, session_host)
    try:
        yield s
    finally:
        s.close()


def _pay(stack: DemoStack, api: httpx.Client, amount: int) -> dict[str, Any]:
    created = api.post("/api/v1/sales", json={"amount": amount, "currency": 978})
    assert created.status_code == 202, created.text
    assert api.post("/api/v1/simulator/present", json={"card": "visa"}).status_code == 200
    stack.checkout.wait(created.json()["id"], timeout=30)
    return dict(api.get(f"/api/v1/transactions/{created.json()['id']}").json())


def _merchant_texts(view: dict[str, Any]) -> list[str]:
    message = view.get("message") or {}
    return [
        str(view.get("prompt") or ""),
        str(view.get("amount_text") or ""),
        str(message.get("merchant") or ""),
        str(message.get("customer") or ""),
    ]


def test_a_chinese_terminal_shows_no_english(stack: DemoStack, api: httpx.Client) -> None:
    assert api.get("/api/v1/status").json()["language"] == "zh"
    sale = _pay(stack, api, 1234)
    declined = _pay(stack, api, 1051)  # the simulated issuer: 51 insufficient funds
    assert (sale["state"], declined["state"]) == ("approved", "declined")
    assert declined["message"]["merchant"] == "发卡行拒绝交易（51 余额不足）"
    assert declined["reason"].startswith("51")  # the technical reason, kept whole
    refund = api.post(f"/api/v1/transactions/{sale['id']}/refund", json={"pin": PIN, "amount": 234})
    assert refund.status_code == 200, refund.text
    eod = api.post("/api/v1/end-of-day", json={"pin": PIN})
    assert eod.status_code == 200, eod.text
    report = eod.json()

    texts: list[str] = []
    # The terminal's own id (终端编号), which its enrolment made, and the bank's batch
    # number (批次号): identifiers, not words.
    card_data: set[str] = {stack.checkout.terminal_id or "", report["batch_id"]}
    # The end-of-day report (结算单): its text, as stored and served, and its HTML.
    texts += report["text"]
    texts.append(api.get(f"/api/v1/batches/{report['batch_id']}/report").text)
    html = api.get(f"/api/v1/batches/{report['batch_id']}/report", params={"format": "html"})
    texts.append(_html_text(html.text))
    for line in report["lines"]:
        texts += [line["brand_text"], line["method_text"]]
        card_data.add(line["brand"])
    views = api.get("/api/v1/transactions").json()["transactions"]
    assert len(views) == 3
    for view in views:
        texts += _merchant_texts(view)
        # Its outcome title, and the sale a refund refunds.
        texts += [view["title"], view["brand_text"]]
        if view["original"]:
            texts.append(view["original"]["brand_text"])
        card_data |= {
            str(view.get(k) or "")
            for k in (
                "id",
                "masked_pan",
                "aid",
                "auth_code",
                "host_ref",
                "original_id",
                "brand",
                # The card's EMV data as the slip prints it: an ATC such as 0ADC is data.
                "cryptogram",
                "atc",
                "tvr",
            )
        }
        card_data.discard("")
        for copy in ("merchant", "customer"):
            got = api.get(
                f"/api/v1/transactions/{view['id']}/receipt",
                params={"copy": copy, "format": "json"},
            ).json()
            texts += [got["text"], _html_text(got["html"])]
            assert HAN.search(got["text"]), got["text"]
    texts += list(api.get("/api/v1/ui-strings").json()["strings"].values())
    receipts = "\n".join(texts)
    for word in ("签购单", "消费", "退货", "商户存根", "持卡人存根", "交易被拒绝", "凭证号"):
        assert word in receipts, word
    for word in ("结算单", "批次号", "合计", "净额", "退款成功", "已部分退款", "发卡行拒绝交易"):
        assert word in receipts, word
    found = _english(texts, card_data=card_data)
    assert not found, sorted({w for w, _ in found})


def test_an_unknown_language_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"'fr'.*en, zh"):
        start_demo_stack(tmp_path, language="fr")
    assert not (tmp_path / "terminal").exists()


def test_a_chinese_end_of_day_with_the_bank_down_is_said_in_chinese(
    tmp_path: Path, acquirer_host: HostHandle
) -> None:
    """The bank refusing connections at the end of day: the error the page shows is in
    Chinese, with no socket's words ("[Errno 111] Connection refused")."""
    stack = _zh_stack(tmp_path, acquirer_host)
    try:
        with httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        ) as api:
            assert _pay(stack, api, 1000)["title"] == "交易成功"
            server = acquirer_host.server
            assert server is not None
            server.stop_listening()
            try:
                refused = api.post("/api/v1/end-of-day", json={"pin": PIN})
                sold = _pay(stack, api, 800)  # taken offline: the bank is not reachable
            finally:
                server.listen_again()
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["reason"] == "unreachable"
        assert HAN.search(error["message"])
        assert _english([error["message"]], card_data=set()) == []
        assert "Errno" not in refused.text
        assert (sold["title"], sold["state"]) == ("脱机交易成功", "approved_offline")
    finally:
        stack.close()


PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _page_text(strings: dict[str, str], answer: httpx.Response) -> tuple[str, str]:
    """(label key, text) the checkout page shows for an API error, as its errorText() finds
    it: "error_" + code + "_" + reason, then "error_" + code, its placeholders filled from
    the error's numbers and message; ("", message) when the table has neither."""
    error = answer.json()["error"]
    values = {
        "tries": error.get("tries_left"),
        "seconds": error.get("retry_after"),
        "message": error.get("message"),
        "status": answer.status_code,
    }
    base = "error_" + error["code"]
    keys = [f"{base}_{error['reason']}", base] if isinstance(error.get("reason"), str) else [base]
    for key in keys:
        if key in strings:
            text = PLACEHOLDER.sub(
                lambda m: str(values[m[1]]) if values.get(m[1]) is not None else m[0],
                strings[key],
            )
            return key, text
    return "", str(error.get("message"))


def test_a_chinese_terminal_words_every_refusal_in_chinese(
    stack: DemoStack, api: httpx.Client, session_host: HostHandle
) -> None:
    """The refusals a merchant meets (a refund of an offline sale not sent yet, a refund
    above what is left, voids of an offline and of a settled sale, a void whose earlier
    answer was lost, a receipt of a running sale, printing with no printer, an unknown
    simulated card, an unknown transaction) are said by the page in Chinese: each error's
    code and reason name a label of the terminal's language, never the server's English."""
    strings = api.get("/api/v1/ui-strings").json()["strings"]
    refused: list[tuple[httpx.Response, str, str | None]] = []

    sale = _pay(stack, api, 1000)
    too_much = api.post(
        f"/api/v1/transactions/{sale['id']}/refund", json={"pin": PIN, "amount": 5000}
    )
    refused.append((too_much, "invalid_request", "refund_too_much"))
    running = api.post("/api/v1/sales", json={"amount": 700, "currency": 978}).json()
    refused.append(
        (api.get(f"/api/v1/transactions/{running['id']}/receipt"), "invalid_state", "not_finished")
    )
    assert api.post("/api/v1/cancel").json()["state"] == "cancelled"
    refused.append((api.post(f"/api/v1/transactions/{sale['id']}/print"), "no_printer", None))
    unknown_card = api.post("/api/v1/simulator/present", json={"card": "nosuchcard"})
    refused.append((unknown_card, "unknown_card", None))
    refused.append((api.get("/api/v1/transactions/S-none"), "not_found", "no_transaction"))

    # A void whose answer is lost: the next void waits for the bank's answer to the first.
    lost = _pay(stack, api, 2500)
    session_host.set_fault("/v1/voids", "refuse")
    try:
        first = api.post(f"/api/v1/transactions/{lost['id']}/void", json={"pin": PIN})
        assert first.json()["state"] == "failed", first.text
        again = api.post(f"/api/v1/transactions/{lost['id']}/void", json={"pin": PIN})
        refused.append((again, "acquirer_unavailable", "pending_void"))
    finally:
        session_host.clear_faults()

    # An offline sale not sent yet: neither refunded nor voided, refundable once sent.
    session_host.set_fault("/v1/", "refuse")
    try:
        if stack.checkout.host_online is not False:  # the lost void answer said so already
            assert _pay(stack, api, 1200)["state"] == "declined"  # unanswered: reversed
        offline = _pay(stack, api, 1500)
    finally:
        session_host.clear_faults()
    assert (offline["state"], offline["offline_status"]) == ("approved_offline", "waiting")
    assert (offline["refundable_amount"], offline["refundable_after_sync"]) == (0, True)
    not_sent = api.post(
        f"/api/v1/transactions/{offline['id']}/refund", json={"pin": PIN, "amount": 100}
    )
    refused.append((not_sent, "invalid_state", "offline_not_sent"))
    offline_void = api.post(f"/api/v1/transactions/{offline['id']}/void", json={"pin": PIN})
    refused.append((offline_void, "invalid_state", "void_offline"))

    # Closed at the end of day: too late to void.
    assert api.post("/api/v1/end-of-day", json={"pin": PIN}).status_code == 200
    settled = api.post(f"/api/v1/transactions/{sale['id']}/void", json={"pin": PIN})
    refused.append((settled, "invalid_state", "void_settled"))

    for answer, code, reason in refused:
        error = answer.json()["error"]
        assert (error["code"], error.get("reason")) == (code, reason), answer.text
        key, text = _page_text(strings, answer)
        assert key == (f"error_{code}_{reason}" if reason else f"error_{code}"), answer.text
        assert HAN.search(text), (key, text)
        assert _english([text], card_data=set()) == [], (key, text)
    texts = {key: text for key, text in (_page_text(strings, a) for a, _, _ in refused)}
    assert texts["error_invalid_state_offline_not_sent"] == (
        "该脱机交易尚未上送银行：请在上送后再退款"
    )
    # The generic labels, for a refusal without a reason, carry no server text either.
    for code in ("invalid_state", "invalid_request", "refused", "not_found", "printer_error"):
        assert "{message}" not in strings[f"error_{code}"], code


def test_a_failed_printer_is_said_in_chinese_without_the_devices_words(
    tmp_path: Path, session_host: HostHandle
) -> None:
    missing = tmp_path / "no-such-dir" / "lp0"
    stack = start_demo_stack(
        tmp_path,
        host_url=session_host.url,
        activation_code=session_host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin=PIN,
        background=False,
        language="zh",
        printer_url=f"file:{missing}",
    )
    try:
        with httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        ) as api:
            sale = _pay(stack, api, 1000)
            failed = api.post(f"/api/v1/transactions/{sale['id']}/print")
            strings = api.get("/api/v1/ui-strings").json()["strings"]
    finally:
        stack.close()
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "printer_error")
    assert "Errno" in failed.json()["error"]["message"]  # the register's English, for the log
    key, text = _page_text(strings, failed)
    assert key == "error_printer_error"
    assert HAN.search(text)
    assert "Errno" not in text
    assert _english([text], card_data=set()) == []
