"""Receipts (terminal.domain.receipts) in the terminal's language: the exact text of an
English card receipt and of a Chinese 签购单 for one fixed transaction, and the words each
language uses for brands, states and the signature."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import pytest

from terminal.domain.params import default_params
from terminal.domain.receipts import build_receipt
from terminal.domain.records import DECLINED_AFTER_THE_FACT, Kind, State, TxnRecord

PARAMS = default_params()
SALE = TxnRecord(
    id="T-20261202-0001",
    kind=Kind.SALE,
    state=State.APPROVED,
    amount=1234,
    currency=978,
    created_at="2026-12-02T10:11:12+00:00",
    updated_at="2026-12-02T10:11:13+00:00",
    result="approved",
    masked_pan="476173******0010",
    brand="VISA",
    aid="A0000000031010",
    cryptogram_kind="ARQC",
    cryptogram="0123456789ABCDEF",
    atc="0042",
    tvr="0000000000",
    cvm="signature",
    auth_code="A1B2C3",
    host_ref="H123456",
)

ENGLISH_MERCHANT = """\
        PIPOS DEMO SHOP
           BERLIN DE

              SALE

MERCHANT         PIPOS0000000001
TERMINAL                PIPOS001
DATE                  2026-12-02
TIME                    10:11:12
TXN              T-20261202-0001
CARD            476173******0010
APP                         VISA
AID               A0000000031010
ENTRY                CONTACTLESS
AUTH CODE                 A1B2C3
ARQC            0123456789ABCDEF
ATC                         0042
TVR                   0000000000
REF                      H123456
AMOUNT                 12.34 EUR
CVM           SIGNATURE REQUIRED

            APPROVED


X_______________________________
CARDHOLDER SIGNATURE

         MERCHANT COPY
"""

CHINESE_MERCHANT = """\

             签购单

商户名称：
      PIPOS DEMO SHOP, BERLIN DE
商户编号：       PIPOS0000000001
终端编号：              PIPOS001
卡号：          476173******0010
卡组织：                    VISA
交易类型：                  消费
批次号：                  未结算
凭证号：         T-20261202-0001
日期时间：   2026-12-02 10:11:12
输入方式：                非接触
授权码：                  A1B2C3
参考号：                 H123456
AID：             A0000000031010
ARQC：          0123456789ABCDEF
ATC：                       0042
TVR：                 0000000000
金额：                 12.34 EUR
验证方式：          需持卡人签名

            交易成功

本人确认以上交易，同意将其记入本
卡账户

X_______________________________
持卡人签名

            商户存根
"""


def test_english_merchant_copy_exact_text() -> None:
    assert build_receipt(SALE, PARAMS, "merchant").text() == ENGLISH_MERCHANT


def test_chinese_merchant_copy_is_a_signed_slip() -> None:
    receipt = build_receipt(SALE, PARAMS, "merchant", language="zh")
    assert receipt.text() == CHINESE_MERCHANT
    # A wide character takes two of the printer's 32 columns: no line runs over.
    for line in receipt.text().splitlines():
        cells = sum(2 if "\u4e00" <= c <= "\u9fff" or c in "：，（）" else 1 for c in line)
        assert cells <= 32, line


def test_language_defaults_to_the_terminal_parameter() -> None:
    zh = replace(PARAMS, terminal=replace(PARAMS.terminal, language="zh"))
    assert build_receipt(SALE, zh, "merchant").text() == CHINESE_MERCHANT
    assert build_receipt(SALE, zh, "merchant", language="en").text() == ENGLISH_MERCHANT


def test_chinese_customer_copy_masks_the_card_and_has_no_signature() -> None:
    text = build_receipt(SALE, PARAMS, "customer", language="zh").text()
    assert "************0010" in text
    assert "476173" not in text
    assert "X___" not in text
    assert "本人确认" not in text
    assert text.rstrip().endswith("持卡人存根\n           请妥善保管")


@pytest.mark.parametrize(
    ("changes", "present", "absent"),
    [
        # No signature was asked for: the slip says 免密免签 and has no signature box.
        ({"cvm": "no_cvm"}, ["免密免签"], ["持卡人签名", "本人确认", "X___"]),
        ({"kind": Kind.REFUND, "original_id": "T-0"}, ["退货", "原凭证号", "-12.34 EUR"], []),
        ({"state": State.APPROVED_OFFLINE, "result": "approved_offline"}, ["脱机"], []),
        ({"batch_id": "B-000007"}, ["B-000007"], ["未结算"]),
        (
            {"state": State.DECLINED, "result": "declined_by_issuer", "reason": "51 x"},
            ['<div class="r-status">交易被拒绝</div>'],
            ["授权码", "X___", "交易被拒绝 - 交易被拒绝"],
        ),
        (
            {"entry_mode": "qr_wallet", "brand": "ALIPAY", "qr_order_id": "O-1"},
            ["支付宝", "付款码", "订单号"],
            ["ALIPAY"],
        ),
        ({"entry_mode": "qr_wallet", "brand": "WECHATPAY"}, ["微信支付"], ["WECHATPAY"]),
        ({"entry_mode": "qr_consumer", "brand": "QR ALIPAY"}, ["支付宝 二维码"], []),
    ],
)
def test_chinese_slip_words(
    changes: dict[str, object], present: list[str], absent: list[str]
) -> None:
    record = replace(SALE, **changes)  # type: ignore[arg-type]
    receipt = build_receipt(record, PARAMS, "merchant", language="zh")
    text = receipt.text() + receipt.html()
    for word in present:
        assert word in text, word
    for word in absent:
        assert word not in text, word


def test_english_receipt_keeps_brand_codes_and_html() -> None:
    record = replace(SALE, entry_mode="qr_wallet", brand="ALIPAY", cvm="no_cvm")
    receipt = build_receipt(record, PARAMS, "customer")
    assert "ALIPAY" in receipt.text()
    assert "WALLET CODE" in receipt.text()
    assert receipt.html().startswith('<div class="receipt" data-copy="customer">')
    assert 'lang="zh"' in build_receipt(record, PARAMS, "customer", language="zh").html()


@pytest.mark.parametrize(
    ("language", "said"), [("en", "DECLINED BY THE BANK AFTERWARDS"), ("zh", "事后被银行拒绝")]
)
def test_a_receipt_of_an_offline_sale_the_bank_declined_says_so(language: str, said: str) -> None:
    """Reprinted after the sync: the bank declined the offline sale when it was sent, so the
    receipt says declined by the bank, never approved, and asks for no signature."""
    record = replace(
        SALE,
        state=State.APPROVED_OFFLINE,
        result="approved_offline",
        reason=DECLINED_AFTER_THE_FACT,
        auth_code="",
        host_ref="",
    )
    approved = ("APPROVED", "交易成功")
    copies: tuple[Literal["merchant", "customer"], ...] = ("merchant", "customer")
    for copy in copies:
        receipt = build_receipt(record, PARAMS, copy, language=language)
        assert receipt.status == said
        text = receipt.text() + receipt.html()
        assert said in text
        assert not any(word in text for word in approved), text
        assert "X___" not in text
    # The same sale while it waited (or once sent and accepted) was approved offline.
    waiting = replace(record, reason="")
    assert build_receipt(waiting, PARAMS, "merchant", language=language).status in approved
