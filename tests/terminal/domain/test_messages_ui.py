"""The checkout page's labels (terminal.domain.messages.ui_strings): every language has every label
with the same placeholders, and the page asks only for labels the table has."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources

import pytest

from terminal.checkout.failures import LINK_FAILURES
from terminal.domain.messages import LANGUAGES, ui_strings

WEB = resources.files("terminal.api").joinpath("web")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
HAN = re.compile(r"[\u4e00-\u9fff]")


def test_every_language_has_the_same_labels_and_placeholders() -> None:
    """Except "{message}", the API's own English text: English may show it where a code
    has no reason to be worded by; another language never does (it would put English
    words in the merchant's Chinese)."""
    english = ui_strings("en")
    for language in LANGUAGES:
        table = ui_strings(language)
        assert table.keys() == english.keys(), language
        for key, text in table.items():
            assert text.strip(), (language, key)
            expected = set(PLACEHOLDER.findall(english[key]))
            if language != "en":
                expected.discard("message")
            assert set(PLACEHOLDER.findall(text)) == expected, (language, key)


def test_no_chinese_label_shows_the_servers_english_text() -> None:
    zh = ui_strings("zh")
    shown = sorted(key for key, text in zh.items() if "{message}" in text)
    assert shown == []
    for key in ("error_invalid_state", "error_invalid_request", "error_refused"):
        assert HAN.search(zh[key]), key
    assert zh["error_printer_error"] == "打印失败：请检查打印机是否开机、连接正常且有纸"


def test_chinese_labels_are_chinese() -> None:
    zh = ui_strings("zh")
    assert zh["tab_sale"] == "收款"
    assert zh["prompt"] == "请挥卡或扫码"  # the same text as the server's progress prompt
    assert zh["banner_offline"] == "脱机"
    # Everything but brand names, the language tag and the product name is in Chinese.
    latin_only = {k for k, v in zh.items() if not HAN.search(v)}
    assert latin_only == {
        "html_lang",
        "speech_lang",  # the voice's language tag, zh-CN
        "card_visa",
        "card_mastercard",
        "card_maestro",
    }


def test_unknown_language_falls_back_to_english() -> None:
    assert ui_strings("fr") == ui_strings("en")


class _Labels(HTMLParser):
    """(key, default text) of every data-i18n element, and every data-i18n-aria key."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.aria: dict[str, str] = {}
        self._current: str | None = None
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if attr.get("data-i18n-aria"):
            self.aria[str(attr["data-i18n-aria"])] = str(attr.get("aria-label"))
        if attr.get("data-i18n"):
            self._current = str(attr["data-i18n"])
            self._buffer = []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._buffer.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._current is not None:
            self.text[self._current] = "".join(self._buffer)
            self._current = None


def test_the_page_defaults_are_the_english_labels() -> None:
    labels = _Labels()
    labels.feed(WEB.joinpath("index.html").read_text(encoding="utf-8"))
    english = ui_strings("en")
    assert len(labels.text) > 30
    for key, default in labels.text.items():
        assert english.get(key) == default, key
    for key, default in labels.aria.items():
        assert english.get(key) == default, key


def test_the_script_asks_only_for_known_labels() -> None:
    script = WEB.joinpath("checkout.js").read_text(encoding="utf-8")
    keys = set(re.findall(r'\bt\(\s*"(\w+)"', script))
    for pair in re.findall(r'\bt\([^()]*?\?\s*"(\w+)"\s*:\s*"(\w+)"', script):
        keys.update(pair)
    assert {"banner_waiting_one", "result_approved_offline", "eod_confirm_title"} <= keys
    # "kind_" + kind, "state_" + state, "host_failure_" + why the bank is not answering,
    # "offline_" + where an offline sale is (a view's offline_status), "sim_acquirer_" +
    # the simulated bank's mode + "_note" (the simulator drawer)
    prefixes = {k for k in keys if k.endswith("_")}
    assert prefixes == {"kind_", "state_", "host_failure_", "offline_", "sim_acquirer_"}
    for where in ("waiting", "sent", "declined"):
        assert f"offline_{where}" in ui_strings("en")
    for mode in ("online", "drops", "unreachable"):
        assert f"sim_acquirer_{mode}_note" in ui_strings("en")
    # What refunds and voids did to a sale (a view's refund_state), as the list shows it.
    for shown in ("partially_refunded", "refunded", "voided"):
        assert f"state_{shown}" in ui_strings("en")
    missing = keys - prefixes - ui_strings("en").keys()
    assert not missing


# Kinds and states of terminal.domain.records.TxnRecord, as the transaction list shows them.
KINDS = ("sale", "refund", "void")
STATES = ("in_progress", "approved", "approved_offline", "declined", "cancelled", "failed")


@pytest.mark.parametrize("key", [f"kind_{k}" for k in KINDS] + [f"state_{s}" for s in STATES])
def test_list_labels_for_every_kind_and_state(key: str) -> None:
    for language in LANGUAGES:
        assert key in ui_strings(language)


# Why the terminal says the bank is not answering (terminal.checkout: the host's last failure,
# and the sync report's), as the banner and the sync feedback show them.
HOST_FAILURES = (*sorted(set(LINK_FAILURES.values())), "unreachable", "no_answer", "queue_error")


@pytest.mark.parametrize("failure", HOST_FAILURES)
def test_banner_labels_for_every_host_failure(failure: str) -> None:
    for language in LANGUAGES:
        assert f"host_failure_{failure}" in ui_strings(language)
