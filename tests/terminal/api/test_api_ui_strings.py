"""GET /api/v1/ui-strings: the checkout page's labels in the terminal's language."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from terminal.api.stack import DemoStack
from tests.terminal.api.test_api import api as api
from tests.terminal.api.test_api import pin_clock as pin_clock
from tests.terminal.api.test_api import stack as stack

pytestmark = pytest.mark.integration  # the API server of tests/terminal/api/test_api.py's stack


def speak(stack: DemoStack, language: str) -> None:
    """The terminal's parameters now say `language` (as a parameter download would)."""
    params = stack.checkout.params
    stack.checkout.params = replace(params, terminal=replace(params.terminal, language=language))


def test_both_languages_have_the_same_labels(api: httpx.Client) -> None:
    en = api.get("/api/v1/ui-strings", params={"lang": "en"})
    zh = api.get("/api/v1/ui-strings", params={"lang": "zh"})
    assert en.status_code == 200, en.text
    assert zh.status_code == 200, zh.text
    assert en.json()["language"] == "en"
    assert zh.json()["language"] == "zh"
    assert en.json()["strings"].keys() == zh.json()["strings"].keys()
    assert en.json()["strings"]["charge"] == "Charge"
    assert zh.json()["strings"]["charge"] == "收款"
    assert zh.json()["strings"]["prompt"] == "请挥卡或扫码"


def test_default_is_the_terminal_language(stack: DemoStack, api: httpx.Client) -> None:
    assert api.get("/api/v1/ui-strings").json()["language"] == "en"
    speak(stack, "zh")
    got = api.get("/api/v1/ui-strings")
    assert got.json()["language"] == "zh"
    assert got.json()["strings"]["tab_list"] == "交易记录"
    assert api.get("/api/v1/status").json()["language"] == "zh"


def test_unknown_language_is_refused_precisely(api: httpx.Client) -> None:
    got = api.get("/api/v1/ui-strings", params={"lang": "fr"})
    assert got.status_code == 422
    assert got.json() == {
        "error": {
            "code": "unknown_language",
            "message": "unknown language 'fr': expected one of en, zh",
            "field": "lang",
        }
    }


def test_an_absurd_language_is_not_echoed_in_full(api: httpx.Client) -> None:
    got = api.get("/api/v1/ui-strings", params={"lang": "x" * 2000})
    assert got.status_code == 422
    assert len(got.json()["error"]["message"]) < 80


def test_labels_need_the_register_token(stack: DemoStack) -> None:
    got = httpx.get(stack.api.url + "/api/v1/ui-strings", params={"lang": "en"}, timeout=30)
    assert got.status_code == 401
