"""The merchant's texts for a transaction's technical reason (terminal.domain.messages):
catalogue words in the terminal's language, and never an exception's text."""

from __future__ import annotations

import re

import pytest

from terminal.domain.messages import Result, brand_text, message_for, reason_text

ERRNO = "bank unreachable: [Errno 111] Connection refused"
ASCII_WORD = re.compile(r"[A-Za-z]{3,}")


@pytest.mark.parametrize(
    ("reason", "english", "chinese"),
    [
        ("51 insufficient funds", "51 insufficient funds", "51 余额不足"),
        ("05 declined by amount rule", "05 declined by amount rule", "05 不予承兑"),
        ("51", "51 insufficient funds", "51 余额不足"),
        ("Q1 ARQC (9F26) required", "Q1 ARQC (9F26) required", "Q1 需要卡片认证"),
        ("77 something new", "77 something new", "77"),
        (ERRNO, "bank unreachable", "无法连接银行"),
        ("no answer from the bank", "no answer from the bank", "银行无应答"),
        ("reversal pending", "reversal pending", "冲正待完成"),
        (
            "offline limit reached: 250.00 EUR stored of 250.00 EUR",
            "offline limit reached: 250.00 EUR stored of 250.00 EUR",
            "已达脱机限额",
        ),
        ("Declined by card", "Declined by card", ""),  # the card's words: English only
        ("host said: OSError boom", "", ""),  # an exception's text: nobody
        ("", "", ""),
    ],
)
def test_reason_text(reason: str, english: str, chinese: str) -> None:
    assert reason_text(reason, "en") == english
    assert reason_text(reason, "zh") == chinese


def test_merchant_message_never_carries_the_socket_error() -> None:
    en = message_for(Result.REFUND_DECLINED, "en", reason=ERRNO)
    zh = message_for(Result.REFUND_DECLINED, "zh", reason=ERRNO)
    assert en.merchant == "Refund declined (bank unreachable)"
    assert zh.merchant == "退款被拒绝（无法连接银行）"
    assert "Errno" not in en.merchant + zh.merchant


def test_chinese_messages_have_no_english_words() -> None:
    for result in Result:
        for reason in ("51 insufficient funds", ERRNO, "Declined by card", "reversal pending"):
            message = message_for(result, "zh", amount="12.34 EUR", reason=reason)
            words = set(ASCII_WORD.findall(message.merchant + message.customer)) - {"EUR"}
            assert not words, (result, reason, message)


def test_brand_names() -> None:
    assert brand_text("ALIPAY", "zh") == "支付宝"
    assert brand_text("WECHATPAY", "zh") == "微信支付"
    assert brand_text("QR WECHATPAY", "zh") == "微信支付 二维码"
    assert brand_text("VISA", "zh") == "VISA"  # the code printed on the card
    assert brand_text("MASTERCARD", "zh") == "MASTERCARD"
    assert brand_text("ALIPAY", "en") == "ALIPAY"
