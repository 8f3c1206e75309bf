"""What the merchant and the customer are told, for every result a checkout can reach.

Each :class:`Result` carries two short texts: one for the merchant (what happened and what to
do next, with the technical reason when there is one) and one for the customer (what to do,
never a technical detail). The language comes from the terminal parameters
(``terminal.language``: "en" or "zh"); an unknown language falls back to English.

The checkout page's own labels (tabs, keypad, buttons, banners, dialogs) live here too, so
every text the merchant and the customer read is translated in one place: see
:func:`ui_strings`, served to the page by ``GET /api/v1/ui-strings``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from emv.kernel.kernel_data import UiMessage

__all__ = [
    "CODE_RESULTS",
    "LANGUAGES",
    "RESPONSE_CODES",
    "Message",
    "Result",
    "brand_text",
    "message_for",
    "pin_policy_text",
    "progress_text",
    "reason_text",
    "receipt_text",
    "response_text",
    "restart_text",
    "ui_strings",
]

LANGUAGES: Final = ("en", "zh")


class Result(StrEnum):
    """Every end a transaction can reach, as the merchant and the customer see it."""

    APPROVED = "approved"
    APPROVED_OFFLINE = "approved_offline"  # host unreachable, stored to be sent later
    DECLINED_BY_CARD = "declined_by_card"
    DECLINED_BY_ISSUER = "declined_by_issuer"
    DECLINED_OFFLINE_LIMIT = "declined_offline_limit"  # host unreachable, over the limits
    DECLINED_OFFLINE_DISABLED = "declined_offline_disabled"  # host unreachable, no offline
    CARD_NOT_SUPPORTED = "card_not_supported"
    TRY_AGAIN = "try_again"  # card removed too early, read failed
    TRY_ANOTHER_INTERFACE = "try_another_interface"
    NO_CARD = "no_card"  # nobody tapped within the time allowed
    CANCELLED = "cancelled"
    READER_ERROR = "reader_error"
    HOST_NO_RESPONSE = "host_no_response"  # lost answer: reversed, customer not charged
    HOST_ERROR = "host_error"  # host refused the request (protocol error)
    CARD_TOO_SLOW = "card_too_slow"  # the card gave no outcome within the card read time
    DECLINED_NOT_ENROLLED = "declined_not_enrolled"  # offline, but the terminal is not enrolled
    REFUND_APPROVED = "refund_approved"
    REFUND_DECLINED = "refund_declined"
    VOID_APPROVED = "void_approved"
    VOID_DECLINED = "void_declined"
    REFUND_PENDING = "refund_pending"  # host unreachable, refund waits for the network
    # Scanned and merchant-presented codes (terminal.checkout.qr_payment); the reason is a code
    # reason key (terminal.checkout.qr_payment.MESSAGES) with its own text below.
    CODE_DECLINED = "code_declined"  # the wallet or the issuer said no
    CODE_REJECTED = "code_rejected"  # unreadable, expired, reused, not a payment code
    CODE_CANCELLED = "code_cancelled"  # the merchant cancelled; the order is cancelled
    CODE_TIMED_OUT = "code_timed_out"  # nobody confirmed or paid in time; order cancelled
    CODE_USE_CARD = "code_use_card"  # no connection: codes need one, take a card
    # Pre-authorisations (terminal.checkout.preauths): the hold, and its changes.
    PREAUTH_APPROVED = "preauth_approved"  # the amount is held on the card
    PREAUTH_DECLINED = "preauth_declined"  # not possible here (the bank could not be asked)
    INCREMENT_APPROVED = "increment_approved"
    INCREMENT_DECLINED = "increment_declined"
    CAPTURE_APPROVED = "capture_approved"
    CAPTURE_DECLINED = "capture_declined"
    RELEASE_APPROVED = "release_approved"
    RELEASE_DECLINED = "release_declined"


@dataclass(frozen=True, slots=True)
class Message:
    merchant: str
    customer: str


# (merchant, customer) per language. "{reason}" is replaced by the technical reason (merchant
# side only), "{amount}" by the formatted amount.
_TEXT: Final[Mapping[str, Mapping[Result, tuple[str, str]]]] = MappingProxyType(
    {
        "en": {
            Result.APPROVED: ("Approved {amount}", "Approved - thank you"),
            Result.APPROVED_OFFLINE: (
                "Network down - approved offline, will be sent automatically",
                "Approved - thank you",
            ),
            Result.DECLINED_BY_CARD: ("Declined by the card{reason}", "Declined"),
            Result.DECLINED_BY_ISSUER: ("Declined by the bank{reason}", "Declined"),
            Result.DECLINED_OFFLINE_LIMIT: (
                "Network down - offline limit reached, payment not taken{reason}",
                "Declined - please use another way to pay",
            ),
            Result.DECLINED_OFFLINE_DISABLED: (
                "Network down - offline payments are not allowed, payment not taken",
                "Declined - please use another way to pay",
            ),
            Result.CARD_NOT_SUPPORTED: (
                "Card not supported - try another card{reason}",
                "Card not supported - try another card",
            ),
            Result.TRY_AGAIN: (
                "Card read failed - ask the customer to tap again{reason}",
                "Please tap again and hold the card still",
            ),
            Result.TRY_ANOTHER_INTERFACE: (
                "Contactless not possible - use another card or payment method{reason}",
                "Please use another card",
            ),
            Result.NO_CARD: ("No card presented - payment not taken", "Timed out"),
            Result.CANCELLED: ("Cancelled - payment not taken", "Cancelled"),
            Result.READER_ERROR: (
                "Card reader problem - check the reader{reason}",
                "Sorry, the card reader is not working",
            ),
            Result.HOST_NO_RESPONSE: (
                "No answer from the bank - payment reversed, customer not charged. Try again",
                "Not charged - please try again",
            ),
            Result.HOST_ERROR: ("Bank refused the request{reason}", "Declined"),
            Result.CARD_TOO_SLOW: (
                "Card took too long; try again - payment not taken{reason}",
                "Card not read - please try again",
            ),
            Result.DECLINED_NOT_ENROLLED: (
                "Cannot take offline payments: terminal not enrolled - payment not taken",
                "Declined - please use another way to pay",
            ),
            Result.REFUND_APPROVED: ("Refund approved {amount}", "Refund done"),
            Result.REFUND_DECLINED: ("Refund declined{reason}", "Refund declined"),
            Result.VOID_APPROVED: ("Payment voided {amount}", "Payment cancelled"),
            Result.VOID_DECLINED: ("Void declined{reason}", "Cancellation declined"),
            Result.PREAUTH_APPROVED: ("Pre-authorisation approved {amount}", "Amount held"),
            Result.PREAUTH_DECLINED: (
                "Pre-authorisation not possible - nothing held{reason}",
                "Declined - please use another way to pay",
            ),
            Result.INCREMENT_APPROVED: ("Hold raised by {amount}", "Hold raised"),
            Result.INCREMENT_DECLINED: ("Hold not raised{reason}", "Hold not raised"),
            Result.CAPTURE_APPROVED: ("Captured {amount}", "Payment taken - thank you"),
            Result.CAPTURE_DECLINED: ("Capture declined{reason}", "Payment not taken"),
            Result.RELEASE_APPROVED: ("Hold released {amount}", "Hold released"),
            Result.RELEASE_DECLINED: ("Release declined{reason}", "Hold not released"),
            Result.REFUND_PENDING: (
                "Network down - refund saved, will be sent automatically",
                "Refund accepted",
            ),
            Result.CODE_DECLINED: ("Code payment declined{reason}", "Declined"),
            Result.CODE_REJECTED: (
                "The code cannot be used{reason}",
                "Please refresh the payment code",
            ),
            Result.CODE_CANCELLED: (
                "Payment cancelled. Nothing was charged.",
                "Cancelled - nothing was charged",
            ),
            Result.CODE_TIMED_OUT: (
                "Not confirmed in time. Payment cancelled, nothing charged.",
                "Timed out - nothing was charged",
            ),
            Result.CODE_USE_CARD: (
                "No connection to the acquirer: codes need one. Please take a card instead.",
                "Please pay by card",
            ),
        },
        "zh": {
            Result.APPROVED: ("交易成功 {amount}", "支付成功，谢谢"),
            Result.APPROVED_OFFLINE: (
                "网络中断 - 已脱机批准，联网后将自动上送",
                "支付成功，谢谢",
            ),
            Result.DECLINED_BY_CARD: ("卡片拒绝交易{reason}", "交易被拒绝"),
            Result.DECLINED_BY_ISSUER: ("发卡行拒绝交易{reason}", "交易被拒绝"),
            Result.DECLINED_OFFLINE_LIMIT: (
                "网络中断 - 已达脱机限额，未收款{reason}",
                "交易被拒绝 - 请使用其他支付方式",
            ),
            Result.DECLINED_OFFLINE_DISABLED: (
                "网络中断 - 不允许脱机交易，未收款",
                "交易被拒绝 - 请使用其他支付方式",
            ),
            Result.CARD_NOT_SUPPORTED: (
                "不支持此卡 - 请换一张卡{reason}",
                "不支持此卡 - 请换一张卡",
            ),
            Result.TRY_AGAIN: (
                "读卡失败 - 请顾客重新挥卡{reason}",
                "请重新挥卡并保持卡片不动",
            ),
            Result.TRY_ANOTHER_INTERFACE: (
                "无法非接交易 - 请换卡或换支付方式{reason}",
                "请使用其他卡片",
            ),
            Result.NO_CARD: ("未检测到卡片 - 未收款", "操作超时"),
            Result.CANCELLED: ("已取消 - 未收款", "交易已取消"),
            Result.READER_ERROR: ("读卡器故障 - 请检查读卡器{reason}", "抱歉，读卡器暂不可用"),
            Result.HOST_NO_RESPONSE: (
                "银行无应答 - 交易已冲正，顾客未扣款，请重试",
                "未扣款 - 请重试",
            ),
            Result.HOST_ERROR: ("银行拒绝请求{reason}", "交易被拒绝"),
            Result.CARD_TOO_SLOW: ("读卡超时，请重试 - 未收款{reason}", "未能读卡 - 请重试"),
            Result.DECLINED_NOT_ENROLLED: (
                "无法脱机收款：终端未注册 - 未收款",
                "交易被拒绝 - 请使用其他支付方式",
            ),
            Result.REFUND_APPROVED: ("退款成功 {amount}", "退款完成"),
            Result.REFUND_DECLINED: ("退款被拒绝{reason}", "退款被拒绝"),
            Result.VOID_APPROVED: ("交易已撤销 {amount}", "交易已撤销"),
            Result.VOID_DECLINED: ("撤销被拒绝{reason}", "撤销被拒绝"),
            Result.PREAUTH_APPROVED: ("预授权成功 {amount}", "金额已冻结"),
            Result.PREAUTH_DECLINED: (
                "无法预授权 - 未冻结任何金额{reason}",
                "交易被拒绝 - 请使用其他支付方式",
            ),
            Result.INCREMENT_APPROVED: ("追加预授权成功 {amount}", "追加预授权完成"),
            Result.INCREMENT_DECLINED: ("追加预授权被拒绝{reason}", "追加预授权被拒绝"),
            Result.CAPTURE_APPROVED: ("预授权完成 {amount}", "扣款完成 - 谢谢"),
            Result.CAPTURE_DECLINED: ("预授权完成被拒绝{reason}", "未扣款"),
            Result.RELEASE_APPROVED: ("预授权已撤销 {amount}", "冻结金额已释放"),
            Result.RELEASE_DECLINED: ("预授权撤销被拒绝{reason}", "预授权撤销被拒绝"),
            Result.REFUND_PENDING: (
                "网络中断 - 退款已保存，联网后将自动上送",
                "退款已受理",
            ),
            Result.CODE_DECLINED: ("扫码支付被拒绝{reason}", "支付被拒绝"),
            Result.CODE_REJECTED: ("付款码无法使用{reason}", "请刷新付款码"),
            Result.CODE_CANCELLED: ("支付已取消，未扣款", "已取消，未扣款"),
            Result.CODE_TIMED_OUT: ("顾客未及时确认，支付已取消，未扣款", "已超时，未扣款"),
            Result.CODE_USE_CARD: ("无法连接收单机构，扫码支付需联网，请改用银行卡", "请刷卡支付"),
        },
    }
)

#: Results of code payments: their `reason` is a key of _CODE_TEXT when it has its own text.
CODE_RESULTS: Final = frozenset(
    {
        Result.CODE_DECLINED,
        Result.CODE_REJECTED,
        Result.CODE_CANCELLED,
        Result.CODE_TIMED_OUT,
        Result.CODE_USE_CARD,
    }
)

# (merchant, customer) per code reason (terminal.checkout.qr_payment reasons), per language.
_CODE_TEXT: Final[Mapping[str, Mapping[str, tuple[str, str]]]] = MappingProxyType(
    {
        "en": {
            "corrupt": (
                "The code could not be read: it is damaged. Ask the customer to refresh it.",
                "Code damaged - please refresh it",
            ),
            "truncated": (
                "The code is incomplete. Ask the customer to scan it again.",
                "Please scan the code again",
            ),
            "unsupported": (
                "This kind of code is not accepted here. Please take a card.",
                "This code is not accepted - please pay by card",
            ),
            "merchant_code": (
                "That is a shop's code, not a payment code. Ask for the wallet's pay code.",
                "Please show your wallet's payment code",
            ),
            "expired": (
                "The code has expired. Ask the customer to refresh it.",
                "Code expired - please refresh it",
            ),
            "reused": (
                "The code was already used. Ask the customer to refresh it.",
                "Code already used - please refresh it",
            ),
            "unknown_code": (
                "The wallet does not know this code. Ask the customer to refresh it.",
                "Please refresh the payment code",
            ),
            "insufficient_funds": (
                "Declined: insufficient funds in the wallet.",
                "Declined - insufficient funds",
            ),
            "user_declined": (
                "The customer declined the payment on their phone.",
                "Payment declined on the phone",
            ),
            "declined": ("Declined by the wallet or card issuer.", "Declined"),
            "cryptogram": (
                "Declined: the code's security check failed.",
                "Declined - please refresh the code",
            ),
            "offline": (
                "No connection to the acquirer: codes need one. Please take a card instead.",
                "Please pay by card",
            ),
            "cancelled": ("Payment cancelled. Nothing was charged.", "Cancelled - nothing charged"),
            "timeout": (
                "The customer did not confirm in time. Payment cancelled, nothing charged.",
                "Timed out - nothing charged",
            ),
            "host_refused": (
                "The acquirer refused the request. Please take a card.",
                "Please pay by card",
            ),
        },
        "zh": {
            "corrupt": ("付款码已损坏，无法识别，请顾客刷新付款码", "付款码损坏，请刷新"),
            "truncated": ("付款码不完整，请顾客重新扫码", "请重新扫码"),
            "unsupported": ("不支持此类付款码，请改用银行卡", "不支持此付款码，请刷卡"),
            "merchant_code": ("这是商户收款码，不是付款码，请顾客出示付款码", "请出示付款码"),
            "expired": ("付款码已过期，请顾客刷新", "付款码已过期，请刷新"),
            "reused": ("付款码已使用过，请顾客刷新", "付款码已使用，请刷新"),
            "unknown_code": ("钱包无法识别此付款码，请顾客刷新", "请刷新付款码"),
            "insufficient_funds": ("交易被拒绝：钱包余额不足", "余额不足"),
            "user_declined": ("顾客在手机上拒绝了支付", "已在手机上拒绝支付"),
            "declined": ("钱包或发卡行拒绝交易", "交易被拒绝"),
            "cryptogram": ("交易被拒绝：付款码安全校验失败", "交易被拒绝，请刷新付款码"),
            "offline": ("无法连接收单机构，扫码支付需联网，请改用银行卡", "请刷卡支付"),
            "cancelled": ("支付已取消，未扣款", "已取消，未扣款"),
            "timeout": ("顾客未及时确认，支付已取消，未扣款", "已超时，未扣款"),
            "host_refused": ("收单机构拒绝了请求，请改用银行卡", "请刷卡支付"),
        },
    }
)

_PROGRESS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {
            "waiting_for_tip": "Waiting for the customer to choose a tip",
            "waiting_for_card": "Tap card or scan code",
            "waiting_for_card_again": "Tap the card or phone again",
            "reading_card": "Reading card - hold still",
            "authorising": "Authorising",
            "storing": "Saving",
            "reversing": "No answer from the bank - reversing",
            "reading_code": "Code scanned - sending it to the wallet",
            "waiting_for_confirmation": "Waiting for the customer to confirm on the phone",
            "opening_order": "Preparing the QR code",
            "waiting_for_payment": "Scan this code with your phone to pay",
            "done": "Done",
        },
        "zh": {
            "waiting_for_tip": "等待顾客选择小费",
            "waiting_for_card": "请挥卡或扫码",
            "waiting_for_card_again": "请将卡片或手机再次靠近读卡器",
            "reading_card": "正在读卡 - 请勿移开",
            "authorising": "正在授权",
            "storing": "正在保存",
            "reversing": "银行无应答 - 正在冲正",
            "reading_code": "已扫码 - 正在提交",
            "waiting_for_confirmation": "等待顾客在手机上确认",
            "opening_order": "正在生成收款码",
            "waiting_for_payment": "请用手机扫描此码付款",
            "done": "完成",
        },
    }
)


# What the card said when it asked for a second tap (EMV Contactless Book B v2.10 §3.5,
# Start B), by its Book A v2.10 §9.4 message identifier: one text, shown to the merchant and
# the cardholder alike. Any other identifier reads as "present card again".
_RESTART_TEXT: Final[Mapping[str, Mapping[UiMessage, str]]] = MappingProxyType(
    {
        "en": {
            UiMessage.SEE_PHONE: "See phone for instructions, then tap again",
            UiMessage.PRESENT_CARD_AGAIN: "Present card again",
            UiMessage.PRESENT_ONE_CARD_ONLY: "Present one card only, then tap again",
        },
        "zh": {
            UiMessage.SEE_PHONE: "请查看手机上的提示，然后再次挥卡",
            UiMessage.PRESENT_CARD_AGAIN: "请再次挥卡",
            UiMessage.PRESENT_ONE_CARD_ONLY: "请只出示一张卡，然后再次挥卡",
        },
    }
)


# Why a new merchant or technician PIN is refused (terminal.security.pin_policy), shown to the
# technician who types it, in both languages at once. "{min}"/"{max}" are filled in.
_PIN_POLICY_TEXT: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {
            "subject_merchant": "merchant PIN",
            "subject_technician": "technician PIN or pass-phrase",
            "merchant_format": "must be {min} to {max} digits (0-9)",
            "too_short": "too short (at least {min} characters)",
            "repeated": "a repeated digit or pattern (like 1111, 1212 or 112233) is too easy "
            "to guess; choose another",
            "sequence": "digits in a row (like 1234, 7890 or 654321) are too easy to guess; "
            "choose another",
            "common": "one of the most common PINs (like 2580, 1004 or 6969); choose another",
            "year": "a year (1900 to 2099) is too easy to guess; choose another",
            "common_phrase": "one of the most common passwords; choose another",
        },
        "zh": {
            "subject_merchant": "商户密码",
            "subject_technician": "技术员密码",
            "merchant_format": "必须是 {min} 到 {max} 位数字（0-9）",
            "too_short": "太短（至少 {min} 个字符）",
            "repeated": "重复的数字或组合（如 1111、1212、112233）太容易被猜到，请换一个",
            "sequence": "连续的数字（如 1234、7890、654321）太容易被猜到，请换一个",
            "common": "这是最常用的密码之一（如 2580、1004、6969），请换一个",
            "year": "年份（1900 至 2099）太容易被猜到，请换一个",
            "common_phrase": "这是最常用的密码之一，请换一个",
        },
    }
)


# The technical reasons a transaction ends with (the record's `reason`, kept whole there and
# in the API's `reason` field for the technician) as the merchant reads them, matched by
# their start. English keeps its reasons' own words (they carry the amounts) except where an
# exception's text follows: "bank unreachable: [Errno 111] Connection refused" reads "bank
# unreachable", the socket's words never reach the merchant.
_REASON_TEXT: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {"bank unreachable": "bank unreachable"},
        "zh": {
            "bank unreachable": "无法连接银行",
            "no answer from the bank": "银行无应答",
            "reversal pending": "冲正待完成",
            "declined by the bank after the fact": "事后被银行拒绝",
            "offline limit reached": "已达脱机限额",
            "offline limit per payment exceeded": "超出单笔脱机限额",
            "offline payments are not allowed": "不允许脱机交易",
            "the card does not allow an offline approval": "此卡不允许脱机批准",
        },
    }
)

# ISO 8583 response codes (field 39) the acquirer answers with, as the merchant reads them
# when the host gave no words of its own (English) or always (Chinese: the host speaks
# English); the code itself is kept in front, as Chinese and European counters print it.
# The one copy of these words: what each code means to the terminal (approved, declined,
# refused, ...) is terminal.acquirer.iso8583.responses, which words it with these (this
# layer sits below the acquirer's, and the pipos protocol's host answers the same codes).
_RESPONSE_TEXT: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "00": {"en": "approved", "zh": "交易成功"},
        "01": {"en": "refer to the card issuer", "zh": "请与发卡行联系"},
        "03": {"en": "invalid merchant", "zh": "无效商户"},
        "04": {"en": "pick up the card", "zh": "没收卡"},
        "05": {"en": "do not honour", "zh": "不予承兑"},
        "08": {"en": "approved with identification", "zh": "核实身份后批准"},
        "10": {"en": "approved for a partial amount", "zh": "部分金额批准"},
        "11": {"en": "approved (VIP)", "zh": "批准（贵宾）"},
        "12": {"en": "invalid transaction", "zh": "无效交易"},
        "13": {"en": "invalid amount", "zh": "无效金额"},
        "14": {"en": "invalid card number", "zh": "无效卡号"},
        "30": {"en": "message format error", "zh": "报文格式错误"},
        "41": {"en": "lost card", "zh": "挂失卡"},
        "43": {"en": "stolen card", "zh": "被盗卡"},
        "51": {"en": "insufficient funds", "zh": "余额不足"},
        "54": {"en": "expired card", "zh": "卡片已过期"},
        "55": {"en": "incorrect PIN", "zh": "密码错误"},
        "57": {"en": "transaction not permitted", "zh": "不允许此交易"},
        "58": {"en": "transaction not permitted to this terminal", "zh": "本终端不允许此交易"},
        "59": {"en": "suspected fraud", "zh": "疑似欺诈"},
        "61": {"en": "over the card's limit", "zh": "超出卡片限额"},
        "62": {"en": "restricted card", "zh": "受限制的卡"},
        "63": {"en": "security violation", "zh": "安全校验失败"},
        "65": {"en": "too many uses of the card", "zh": "超出用卡次数限制"},
        "75": {"en": "PIN tries exceeded", "zh": "密码错误次数超限"},
        "91": {"en": "issuer unavailable", "zh": "发卡行不可用"},
        "94": {"en": "duplicate transmission", "zh": "重复交易"},
        "95": {"en": "reconciliation error", "zh": "对账不平"},
        "96": {"en": "system malfunction", "zh": "系统故障"},
        "Q1": {"en": "card authentication required", "zh": "需要卡片认证"},
    }
)

#: The response codes the catalogue has words for.
RESPONSE_CODES: Final = frozenset(_RESPONSE_TEXT)


def response_text(code: str, language: str) -> str:
    """The words for response code `code` in `language` ("" for a code without words)."""
    return _RESPONSE_TEXT.get(code, {}).get(_language(language), "")


#: "51 insufficient funds": a response code in front of the host's own words.
_RESPONSE_CODE: Final = re.compile(r"^(\d\d|[A-Z]\d)(?: |$)")


# The receipt's words (terminal.domain.receipts), per language. English is the card receipt
# of EMV Book 4 §11.4; Chinese follows the 签购单 a Chinese counter prints (商户存根 and
# 持卡人存根, 消费 / 退货 / 撤销, 凭证号, 批次号).
_RECEIPT_TEXT: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {
            "title_sale": "SALE",
            "title_refund": "REFUND",
            "title_void": "VOID",
            "title_preauth": "PRE-AUTHORISATION",
            "title_increment": "INCREMENTAL AUTHORISATION",
            "title_capture": "CAPTURE",
            "title_release": "RELEASE OF HOLD",
            "merchant": "MERCHANT",
            "terminal": "TERMINAL",
            "date": "DATE",
            "time": "TIME",
            "txn": "TXN",
            "payment": "PAYMENT",
            "payment_code": "QR / WALLET",
            "card": "CARD",
            "code": "CODE",
            "app": "APP",
            "entry": "ENTRY",
            "auth_code": "AUTH CODE",
            "offline": "OFFLINE",
            "ref": "REF",
            "order": "ORDER",
            "original": "ORIGINAL",
            "amount": "AMOUNT",
            "subtotal": "SUBTOTAL",
            "tip": "TIP",
            "cvm": "CVM",
            "entry_contactless": "CONTACTLESS",
            "entry_qr": "QR CODE",
            "entry_qr_consumer": "QR CODE (CUSTOMER)",
            "entry_qr_wallet": "WALLET CODE",
            "entry_qr_merchant": "QR CODE (MERCHANT)",
            "cvm_no_cvm": "NO CARDHOLDER VERIFICATION",
            "cvm_cdcvm": "CARDHOLDER VERIFIED BY DEVICE",
            "cvm_online_pin": "PIN VERIFIED ONLINE",
            "cvm_signature": "SIGNATURE REQUIRED",
            "status_approved": "APPROVED",
            "status_declined": "DECLINED",
            "status_cancelled": "CANCELLED",
            "status_failed": "FAILED",
            # An offline sale the bank declined when it was sent: no money came in.
            "status_declined_after_the_fact": "DECLINED BY THE BANK AFTERWARDS",
            "signature": "CARDHOLDER SIGNATURE",
            "copy_merchant": "MERCHANT COPY",
            "copy_customer": "CUSTOMER COPY",
            "retain": "PLEASE RETAIN THIS RECEIPT",
            # The end-of-day report (terminal.domain.receipts.build_batch_report).
            "report_title": "END OF DAY",
            "batch": "BATCH",
            "closed": "CLOSED",
            "sales": "SALES",
            "refunds": "REFUNDS",
            "net": "NET",
            "bank": "BANK",
            "bank_none": "BANK: NO SUCH LINE",
            "differs": "DIFFERS FROM THE BANK",
            "total": "TOTAL",
            "count": "TRANSACTIONS",
            "in_balance": "IN BALANCE WITH THE BANK",
            "out_of_balance": "LINES DIFFERING FROM THE BANK: {count}",
            "offline_synced": "OFFLINE SENT",
            "still_offline": "STILL OFFLINE",
            "method_card": "CARD",
            "method_code": "QR CODE",
            "no_transactions": "NO TRANSACTIONS",
            "report_legacy": "BANK TOTALS ONLY (EARLIER VERSION)",
        },
        "zh": {
            "title": "签购单",
            "merchant_name": "商户名称",
            "merchant": "商户编号",
            "terminal": "终端编号",
            "card": "卡号",
            "code": "付款码",
            "app": "卡组织",
            "wallet": "支付方式",
            "kind": "交易类型",
            "kind_sale": "消费",
            "kind_refund": "退货",
            "kind_void": "撤销",
            "kind_preauth": "预授权",
            "kind_increment": "追加预授权",
            "kind_capture": "预授权完成",
            "kind_release": "预授权撤销",
            "batch": "批次号",
            "batch_open": "未结算",
            "voucher": "凭证号",
            "datetime": "日期时间",
            "entry": "输入方式",
            "auth_code": "授权码",
            "offline": "脱机",
            "ref": "参考号",
            "order": "订单号",
            "original": "原凭证号",
            "amount": "金额",
            "subtotal": "小计",
            "tip": "小费",
            "cvm": "验证方式",
            "entry_contactless": "非接触",
            "entry_qr": "扫码",
            "entry_qr_consumer": "扫码（顾客出示）",
            "entry_qr_wallet": "付款码",
            "entry_qr_merchant": "扫码（商户出示）",
            "cvm_no_cvm": "免密免签",
            "cvm_cdcvm": "持卡人已在手机上验证",
            "cvm_online_pin": "已联机验证密码",
            "cvm_signature": "需持卡人签名",
            "status_approved": "交易成功",
            "status_declined": "交易被拒绝",
            "status_cancelled": "已取消",
            "status_failed": "交易失败",
            "status_declined_after_the_fact": "事后被银行拒绝",
            "signature": "持卡人签名",
            "agree": "本人确认以上交易，同意将其记入本卡账户",
            "copy_merchant": "商户存根",
            "copy_customer": "持卡人存根",
            "retain": "请妥善保管",
            "report_title": "结算单",
            "closed": "结算时间",
            "sales": "消费",
            "refunds": "退货",
            "net": "净额",
            "bank": "银行",
            "bank_none": "银行：无此项",
            "differs": "与银行不符",
            "total": "合计",
            "count": "笔数",
            "in_balance": "与银行对账平衡",
            "out_of_balance": "与银行不符：{count} 项",
            "offline_synced": "已上送脱机交易",
            "still_offline": "待上送脱机交易",
            "method_card": "银行卡",
            "method_code": "扫码",
            "no_transactions": "无交易",
            "report_legacy": "仅有银行汇总（旧版本记录）",
        },
    }
)

# Brand and wallet names as a Chinese customer reads them: the wallets by their Chinese
# names; card schemes keep the code printed on the card (VISA, MASTERCARD), which is what
# the acceptance marks at a Chinese counter show too. "QR X" (a scheme's QR code) reads
# "X 二维码".
_BRAND_TEXT: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {},
        "zh": {
            "ALIPAY": "支付宝",
            "WECHATPAY": "微信支付",
            "WECHAT": "微信支付",
            "UNIONPAY": "银联",
            "EMV QR": "EMV 二维码",
            "MERCHANT QR": "收款码",
            "WALLET": "钱包",
        },
    }
)


def _language(language: str) -> str:
    return language if language in LANGUAGES else "en"


def reason_text(reason: str, language: str) -> str:
    """The technical `reason` as the merchant reads it in `language` ("" for none to show).

    Known reasons and response codes come from the catalogue. Another reason (the card's or
    the host's own words) is shown to an English merchant as it is, unless it carries an
    exception's text; a Chinese merchant is never shown English: the result's own text says
    what happened, and the reason stays in the technical `reason` field.
    """
    lang = _language(language)
    if not reason:
        return ""
    code = _RESPONSE_CODE.match(reason)
    if code is not None:
        if lang == "en" and reason != code.group(1):
            return reason  # the host's own English words after its code
        words = response_text(code.group(1), lang)
        return f"{code.group(1)} {words}" if words else code.group(1)
    for start, text in _REASON_TEXT[lang].items():
        if reason.startswith(start):
            return text
    if lang != "en" or "[Errno" in reason or "Error" in reason:
        return ""
    return reason


def message_for(result: Result, language: str, *, amount: str = "", reason: str = "") -> Message:
    """The merchant's and the customer's message for `result` in `language`.

    `reason` (technical, e.g. "offline limit reached: 250.00 EUR stored of 250.00 EUR") is
    appended to the merchant's text only, as :func:`reason_text` words it in `language`
    (never an exception's text); the customer never sees it.
    """
    lang = _language(language)
    if result in CODE_RESULTS and reason in _CODE_TEXT[lang]:
        merchant, customer = _CODE_TEXT[lang][reason]
        return Message(merchant=merchant, customer=customer)
    merchant, customer = _TEXT[lang][result]
    shown = reason_text(reason, lang)
    if _restates(shown, merchant):
        shown = ""  # "Declined by the card", never "Declined by the card (Declined by card)"
    suffix = (" (" if lang == "en" else "（") + shown + (")" if lang == "en" else "）")
    suffix = suffix if shown else ""
    return Message(
        merchant=merchant.format(amount=amount, reason=suffix).strip(),
        customer=customer.format(amount=amount, reason="").strip(),
    )


_WORD: Final = re.compile(r"\w+")
#: Words a reason may leave out and still say only what its result's text says.
_FILLER: Final = frozenset({"the", "a", "an"})


def _restates(reason: str, text: str) -> bool:
    """Whether `reason` says nothing the result's own `text` does not already say: each of
    its words is one of the text's (the kernel's "Declined by card" under "Declined by the
    card"; "Card not supported - try another card" under the same words)."""
    said = set(_WORD.findall(text.replace("{reason}", "").replace("{amount}", "").lower()))
    words = set(_WORD.findall(reason.lower())) - _FILLER
    return bool(words) and words <= said


def receipt_text(key: str, language: str) -> str:
    """One word of a receipt in `language` ("" for a key the language has no line for)."""
    return _RECEIPT_TEXT[_language(language)].get(key, "")


def brand_text(brand: str, language: str) -> str:
    """A card brand or wallet (a record's `brand`, e.g. "ALIPAY") as `language` names it."""
    names = _BRAND_TEXT[_language(language)]
    if brand in names:
        return names[brand]
    if brand.startswith("QR ") and _language(language) != "en":
        scheme = brand.removeprefix("QR ")
        return f"{names.get(scheme, scheme)} 二维码"
    return brand


def restart_text(message: UiMessage | None, language: str) -> str:
    """What the merchant and the cardholder are told when the card asks for another tap
    (its outcome's Book A message identifier; None or one without a text of its own: "present
    card again")."""
    texts = _RESTART_TEXT[_language(language)]
    if message is not None and message in texts:
        return texts[message]
    return texts[UiMessage.PRESENT_CARD_AGAIN]


def pin_policy_text(key: str, language: str, **fields: int) -> str:
    """Why a new PIN is refused (or whose PIN it is: "subject_merchant", "subject_technician"),
    in `language`; `fields` fill "{min}" and "{max}"."""
    return _PIN_POLICY_TEXT[_language(language)][key].format(**fields)


def progress_text(stage: str, language: str) -> str:
    """The prompt shown while a transaction runs (stage names of terminal.domain.records.Stage)."""
    return _PROGRESS[_language(language)].get(stage, stage)


# The checkout page's labels (terminal/api/web), per language. "{name}" placeholders are filled
# in by the page; every language has the same keys and the same placeholders (tested). The
# page's index.html carries the English text as its default, for the instant before the
# page has loaded its strings. Prompts shared with progress_text() are taken from _PROGRESS.
_UI: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {
            "html_lang": "en",
            "page_title": "pipos checkout",
            "tab_sale": "Sale",
            "tab_list": "Transactions",
            "tab_totals": "Totals",
            "charge": "Charge",
            "charge_qr": "Show QR code to pay",
            "error_no_amount": "Enter an amount first",
            "sim_phone_title": "Simulated phone: show a code to the scanner",
            "phone_alipay": "Alipay code",
            "phone_wechatpay": "WeChat Pay code",
            "phone_confirm": "Code, confirm on phone",
            "phone_cpm": "EMVCo QR",
            "phone_expired": "Expired code",
            "phone_reused": "Used code again",
            "phone_corrupt": "Damaged code",
            "sim_mpm_title": "Simulated phone",
            "sim_pay_mpm": "Scan and pay with the phone",
            "sim_cards_title": "Simulated cards",
            "card_visa": "Visa",
            "card_mastercard": "Mastercard",
            "card_visa_debit": "Visa Debit",
            "card_maestro": "Maestro",
            "card_see_phone": "Phone (asks to tap again)",
            "cancel": "Cancel",
            "result_approved": "Approved",
            "result_approved_offline": "Approved (offline)",
            "result_declined": "Declined",
            "result_cancelled": "Cancelled",
            "receipt": "Receipt",
            "new_sale": "New sale",
            "copy_customer": "Customer copy",
            "copy_merchant": "Merchant copy",
            "print": "Print",
            "done": "Done",
            "refresh": "Refresh",
            "sync_now": "Send offline payments",
            "col_time": "Time",
            "col_type": "Type",
            "col_amount": "Amount",
            "col_card": "Card",
            "col_status": "Status",
            "kind_sale": "sale",
            "kind_refund": "refund",
            "kind_void": "void",
            "kind_preauth": "pre-authorisation",
            "kind_increment": "increment",
            "kind_capture": "capture",
            "kind_release": "release",
            "state_in_progress": "in progress",
            "state_approved": "approved",
            "state_approved_offline": "approved offline",
            "state_declined": "declined",
            "state_cancelled": "cancelled",
            "state_failed": "failed",
            "refund": "Refund",
            "refund_title": "Refund {what}",
            "refund_amount": "Amount",
            "merchant_pin": "Merchant PIN",
            "error_bad_amount": "Enter a valid amount",
            "col_brand": "Brand",
            "col_sales": "Sales",
            "col_refunds": "Refunds",
            "col_net": "Net",
            "col_offline": "Offline",
            "end_of_day": "End of day",
            "eod_closed": "Batch {batch} closed: {count} transactions",
            "eod_net": "{brand}: net {amount}",
            "banner_offline": "OFFLINE",
            "banner_not_sent": "NOT YET SENT",
            "banner_host_down": "Bank unreachable - payments are taken offline.",
            "banner_waiting_one": "{count} payment waiting to be sent: {amounts}",
            "banner_waiting_other": "{count} payments waiting to be sent: {amounts}",
            "banner_flagged": (
                "{count} offline payment(s) declined by the bank afterwards - "
                "check the transaction list"
            ),
            "banner_ack": "OK",
            # A register's Idempotency-Key refused or its first request unfinished
            # (docs/api.md, "Idempotency"); the page itself sends none.
            "error_invalid_idempotency_key": (
                "The register sent an invalid Idempotency-Key: 1 to 255 printable characters"
            ),
            "error_idempotency_key_reused": (
                "This request key was already used for another request: send a new one"
            ),
            "error_idempotency_in_progress": "This request is still being processed: wait",
            "error_idempotency_in_progress_running": (
                "This request is still being processed: wait for its answer"
            ),
            "error_idempotency_in_progress_interrupted": (
                "The terminal restarted during this request: check the transaction list, "
                "then try again with a new request"
            ),
            "error_idempotency_unavailable": (
                "The terminal cannot read its record of requests: try again; if it goes on, "
                "call for service"
            ),
            # Pairing a register (terminal.api.pairing; docs/api.md "Pairing").
            "error_token_revoked": "This register was revoked: pair it again with a new code",
            "error_registers_unavailable": (
                "The terminal cannot read its paired registers: try again; if it goes on, "
                "call for service"
            ),
            "error_pairing_unavailable": "This terminal does not pair registers",
            "error_pairing_code_invalid": "Wrong or expired pairing code: ask for a new one",
            "error_register_name_taken": "A register with this name is already paired",
            "error_pairing_rate_limited": "Too many wrong pairing codes: wait, then try again",
            "error_register_not_found": "No paired register has this name",
            "error_reference_in_use": (
                "A sale with this reference already exists for another amount: use another "
                "reference"
            ),
            # The checkout's refusals by code and reason (the API error's `code` and
            # `reason`; terminal.checkout.errors), and the API's own codes, as the page
            # shows them: what happened and what to do, never the server's English words.
            "error_invalid_state_offline_not_sent": (
                "This offline payment has not been sent to the bank yet: refund it after it is sent"
            ),
            "error_invalid_state_no_bank_reference": (
                "The bank has no reference for this payment, so it cannot be refunded here"
            ),
            "error_invalid_state_refund_not_a_sale": "Only sales can be refunded",
            "error_invalid_state_refund_voided": "This sale was voided: there is nothing to refund",
            "error_invalid_state_refund_fully_refunded": "This sale has already been refunded "
            "in full",
            "error_invalid_state_refund_not_approved": "This sale was not approved: there is "
            "nothing to refund",
            "error_invalid_state_refund_too_much": "The amount is more than is left to refund "
            "on this sale",
            "error_invalid_request_refund_too_much": "The amount is more than is left to "
            "refund on this sale",
            "error_invalid_state_earlier_refund_done": (
                "An earlier refund of this sale did reach the bank and is now recorded: "
                "nothing more was refunded. Check the sale before refunding again"
            ),
            "error_invalid_state_void_not_a_sale": "Only sales can be voided",
            "error_invalid_state_void_already_voided": "This sale has already been voided",
            "error_invalid_state_void_offline": "An offline payment cannot be voided: refund "
            "it instead",
            "error_invalid_state_void_not_approved": "This sale was not approved: there is "
            "nothing to void",
            "error_invalid_state_void_settled": (
                "This sale was closed at an end of day and can no longer be voided: refund it "
                "instead"
            ),
            "error_invalid_state_void_refunded": "A sale with a refund cannot be voided: "
            "refund the rest instead",
            "error_invalid_state_already_finished": "This payment has already finished",
            "error_invalid_state_too_late_to_cancel": (
                "Too late to cancel: the card has been read and the payment is being completed"
            ),
            "error_invalid_state_not_finished": "This payment is still running: its receipt "
            "comes when it ends",
            "error_invalid_request_amount_not_integer": "The amount is not valid",
            "error_invalid_request_amount_not_positive": "Enter an amount above zero",
            "error_invalid_request_amount_too_large": "The amount is too large for a card payment",
            "error_invalid_request_tip_not_valid": "The tip is not a valid amount",
            "error_invalid_request_tip_too_large": "The tip is more than the sale's amount",
            "error_invalid_state_not_waiting_for_tip": "This payment is not waiting for a tip",
            "error_invalid_request_unknown_currency": "Unknown currency",
            "error_invalid_request_wrong_currency": "This terminal does not take payments in "
            "this currency",
            "error_invalid_request_unknown_method": "Unknown payment method",
            "error_invalid_request_qr_disabled": "QR code payments are not enabled on this "
            "terminal",
            "error_invalid_request_qr_unavailable": "The QR code cannot be made for this payment",
            "error_not_found_no_transaction": "No such transaction on this terminal",
            "error_not_found_no_batch": "No such batch on this terminal",
            "error_not_found_no_code": "This sale has no QR code to show",
            "error_not_found_not_running": "No payment is in progress",
            "error_acquirer_unavailable_pending_refund": (
                "An earlier refund of this sale has no answer from the bank yet: try again "
                "when the bank can be reached"
            ),
            "error_acquirer_unavailable_pending_void": (
                "An earlier void of this sale has no answer from the bank yet: try again when "
                "the bank can be reached"
            ),
            "error_invalid_state_not_a_preauth": "This transaction is not a pre-authorisation",
            "error_invalid_state_not_open": (
                "This pre-authorisation holds nothing: it was not approved"
            ),
            "error_invalid_state_captured": "This pre-authorisation has already been captured",
            "error_invalid_state_released": "This pre-authorisation has already been released",
            "error_invalid_state_expired": (
                "This pre-authorisation has expired: the hold has lapsed"
            ),
            "error_invalid_state_earlier_hold_change_done": (
                "An earlier change of this hold did reach the bank and is "
                "now recorded: nothing more was done"
            ),
            "error_invalid_request_over_hold": (
                "The amount is more than the pre-authorisation holds"
            ),
            "error_acquirer_unavailable_pending_hold_change": (
                "An earlier change of this hold has no answer from the bank "
                "yet: try again when the bank can be reached"
            ),
            "error_unknown_currency": "Unknown currency",
            "error_malformed_body": "The terminal could not read the request",
            "error_method_not_allowed": "The terminal does not offer this operation",
            "error_http_error": "The terminal answered HTTP {status}",
            "error_unauthorised": "This screen is not signed in to the terminal: open the "
            "kiosk again (pipos kiosk)",
            "error_unknown_language": "The terminal does not speak this language",
            "error_unknown_card": "No such simulated card",
            "error_unreadable_code": "The scanner could not read this code",
            "error_simulator_error": "The simulator did not work: see the terminal's log",
            "error_not_paid": "The simulated phone could not pay this code",
            "error_docs_unavailable": "The API documentation is not installed on this terminal",
            # An offline sale still waiting to be sent (a view's refundable_after_sync).
            "refund_after_sync": "Can be refunded once sent to the bank",
            # A transaction's title (its view's `title`): what happened, for the result
            # screen and the list (terminal.checkout.core: title_key).
            "title_in_progress": "In progress",
            "title_approved": "Approved",
            "title_approved_offline": "Approved offline",
            "title_declined_after_the_fact": "Declined by the bank afterwards",
            "title_sale_voided": "Voided",
            "title_sale_refunded": "Refunded",
            "title_sale_partially_refunded": "Partially refunded",
            "title_declined_by_card": "Declined by the card",
            "title_declined_by_bank": "Declined by the bank",
            "title_declined_offline": "Declined - bank unreachable",
            "title_use_another_method": "Use another payment method",
            "title_try_again": "Try again",
            "title_reversed": "Not completed - payment reversed",
            "title_bank_error": "Not completed - bank error",
            "title_code_declined": "Declined",
            "title_code_rejected": "Code not accepted",
            "title_cancelled": "Cancelled",
            "title_no_card": "No card presented",
            "title_timed_out": "Timed out",
            "title_reader_error": "Card reader problem",
            "title_failed": "Not completed",
            "title_refund_in_progress": "Refund in progress",
            "title_refunded": "Refunded",
            "title_refund_declined": "Refund declined",
            "title_refund_unknown": "Refund not confirmed - no answer from the bank",
            "title_refund_failed": "Refund not completed",
            "title_void_in_progress": "Void in progress",
            "title_voided": "Voided",
            "title_void_declined": "Void declined",
            "title_void_unknown": "Void not confirmed - no answer from the bank",
            "title_void_failed": "Void not completed",
            "title_preauth_in_progress": "Pre-authorisation in progress",
            "title_preauth_held": "Amount held",
            "title_preauth_captured": "Pre-authorisation captured",
            "title_preauth_released": "Hold released",
            "title_preauth_declined": "Pre-authorisation declined",
            "title_preauth_failed": "Pre-authorisation not completed",
            "title_increment_in_progress": "Raising the hold",
            "title_increment_approved": "Hold raised",
            "title_increment_declined": "Hold not raised",
            "title_increment_unknown": "Hold raise not confirmed - no answer from the bank",
            "title_increment_failed": "Hold not raised - not completed",
            "title_capture_in_progress": "Capture in progress",
            "title_capture_approved": "Captured",
            "title_capture_declined": "Capture declined",
            "title_capture_unknown": "Capture not confirmed - no answer from the bank",
            "title_capture_failed": "Capture not completed",
            "title_release_in_progress": "Releasing the hold",
            "title_release_approved": "Hold released",
            "title_release_declined": "Release declined",
            "title_release_unknown": "Release not confirmed - no answer from the bank",
            "title_release_failed": "Release not completed",
            # A sale's refund_state in the list.
            "refund_state_partially_refunded": "partially refunded",
            "refund_state_refunded": "refunded",
            "refund_state_voided": "voided",
            # How a totals line is paid (its `method`).
            "method_card": "Card",
            "method_code": "QR code",
            # The amount typed is above a brand's contactless limit (status
            # contactless_limits): {brands} the brands, {amount} the lowest limit.
            "contactless_over_limit": "Above the contactless limit of {brands} ({amount})",
            # The acquirer could not be asked (503 acquirer_unavailable, by its reason).
            "error_acquirer_unavailable_not_connected": "This terminal is not connected to a bank",
            "error_acquirer_unavailable_unreachable": "Bank unreachable - nothing was done. "
            "Try again when the connection is back",
            "error_acquirer_unavailable_no_answer": "The bank is not answering - nothing was "
            "done. Try again later",
            "error_acquirer_unavailable_host_error": "The bank refused the request - nothing "
            "was done. Try again later",
            # An offline sale in the list: where it is (a view's offline_status).
            "offline_waiting": "waiting to be sent",
            "offline_sent": "sent to the bank",
            "offline_declined": "declined by the bank",
            "filter_attention": "Needs attention",
            "error_declined_by_bank": (
                "The bank declined this offline payment afterwards: no money was received, "
                "so it cannot be refunded or voided"
            ),
            # The outage banner and the sync button's answer (checkout status / sync_report).
            # {reason}: a host_failure_* text ("Bank not answering - payments taken ...").
            "banner_offline_up_to": "{reason} - payments taken offline up to {amount}.",
            "banner_offline_declined": "{reason} - card payments declined.",
            "host_failure_unreachable": "bank unreachable",
            "host_failure_no_answer": "bank not answering",
            "host_failure_host_error": "bank error",
            "host_failure_queue_error": "offline store error",
            "sync_sent": "{count} sent",
            "sync_nothing": "Nothing to send",
            "scan_rejected": "Code not read - scan it again",
            "sync_failed": "Could not send: {reason}",
            "sync_sending": "Sending...",
            # The API's errors as the page shows them, by the error's code. "{message}" (the
            # API's own English text) only in English, for a code whose cause has no reason:
            # another language never shows it.
            "error_wrong_pin": "Wrong PIN ({tries} tries left before PIN entry is locked)",
            "error_pin_locked": "Merchant PIN locked after too many wrong PINs: try again in "
            "{seconds} s",
            "error_pin_locked_wrong": "Wrong PIN: PIN entry is now locked for {seconds} s",
            "error_pin_locked_tampered": "Merchant PIN locked for {seconds} s: its lock-out "
            "record was altered or removed (the technician sees it in the audit log)",
            "error_pin_unavailable": "The merchant PIN cannot be checked on this terminal: "
            "the technician sets it (pipos merchant-pin set)",
            "error_busy": "Another payment is in progress: finish or cancel it first",
            "error_body_too_large": "The request was too large for the terminal",
            "error_host_not_allowed": "This screen reaches the terminal by a name it does not "
            "answer to: open the kiosk again (pipos kiosk)",
            "error_acquirer_unavailable": "{message}",
            "error_invalid_state": "{message}",
            "error_invalid_request": "{message}",
            "error_refused": "{message}",
            "error_not_found": "{message}",
            "error_no_printer": "No receipt printer is set up on this terminal",
            "error_printer_error": "The printer failed: check that it is on, connected and "
            "has paper",
            "error_http": "The terminal answered HTTP {status}",
            # --- the page's own labels (issue 17: fit, list, end of day, feedback) ---
            "error_terminal_unreachable": "The terminal does not answer: check that pipos runs",
            "error_refund_too_much": "At most {amount} can still be refunded",
            "key_clear": "Clear",
            "key_back": "Delete",
            "sim_drawer": "Simulator",
            "sim_cards_note": "Start a sale, then tap a card",
            "card_declined": "Card that declines",
            "sim_acquirer_title": "Simulated bank",
            "sim_acquirer_online": "Answering",
            "sim_acquirer_drops": "Drops every answer",
            "sim_acquirer_unreachable": "Unreachable",
            "sim_acquirer_online_note": "The bank answers again",
            "sim_acquirer_drops_note": "The bank takes requests and never answers",
            "sim_acquirer_unreachable_note": "The bank refuses every connection",
            "idle_title": "Ready for payment",
            "idle_hint": "Touch the screen to start",
            "try_again": "Try again",
            "auto_return": "Back to the keypad in {seconds} s",
            "limit_warning_all": "At this amount cards cannot pay by tap (contactless limit "
            "{amount})",
            "limit_warning_some": "At this amount {brands} cards cannot pay by tap "
            "(contactless limit {amount})",
            "speech_lang": "en-GB",
            "speech_yuan": " yuan",
            "announce_approved": "Payment received, {amount}",
            "announce_alipay": "Alipay payment received, {amount}",
            "announce_wechatpay": "WeChat Pay payment received, {amount}",
            "search_placeholder": "Amount, last 4 digits, reference",
            "search_title": "Find a payment",
            "search_hint": "An amount or the card's last 4 digits",
            "search_clear": "Clear",
            "search_go": "Search",
            "date_all": "All dates",
            "date_today": "Today",
            "date_yesterday": "Yesterday",
            "date_week": "Last 7 days",
            "list_empty": "No transactions",
            "page_newer": "Newer",
            "page_older": "Older",
            "page_number": "Page {page}",
            "refund_of": "of the sale of {amount}, {when}",
            "state_voided": "voided",
            "state_refunded": "refunded",
            "state_partially_refunded": "partially refunded",
            "void": "Void",
            "void_title": "Void {what}",
            "count_amount": "{amount} ({count})",
            "col_method": "Method",
            "col_terminal": "Terminal",
            "col_bank": "Bank",
            "grand_total": "Total",
            "totals_open": "Open batch: approved payments since the last end of day",
            "totals_empty": "No approved payments since the last end of day",
            "totals_offline_waiting": "{count} offline payment(s) of {amount} not yet sent: "
            "they are sent first at the end of day",
            "batch_history": "Earlier batches",
            "batch_heading": "Batch {batch}, closed {when}",
            "batch_row": "Batch {batch} - {when} - net {net}",
            "batches_empty": "No batch closed yet",
            "report_no_line": "not counted",
            "report_differs": "differs",
            "report_in_balance": "In balance with the bank: {count} payment(s)",
            "report_out_of_balance": "Not in balance with the bank: {count} line(s) differ",
            "report_still_offline": "{count} offline payment(s) could not be sent: they go "
            "into the next batch",
            "eod_confirm_title": "End of day: close the batch?",
            "eod_confirm_hint": "The batch is closed with the bank; this cannot be undone.",
            "eod_confirm_offline": "{count} offline payment(s) are sent first; then the batch "
            "is closed with the bank. This cannot be undone.",
            "eod_close": "Close the batch",
            "eod_closing": "Closing the batch with the bank...",
            "report_legacy_note": "Closed by an earlier version: the bank's totals only",
            "batches_older": "Older batches",
            "tip_title": "Add a tip?",
            "tip_base": "Amount {amount}",
            "tip_percent": "{percent} %",
            "tip_adds": "+ {amount}",
            "tip_custom": "Other amount",
            "tip_custom_title": "Type the tip",
            "tip_custom_ok": "Add tip",
            "tip_none": "No tip",
            "tip_total": "Total {amount}",
            "tip_included": "Including tip {amount}",
            "display_total": "Total",
        },
        "zh": {
            "html_lang": "zh-CN",
            "page_title": "pipos 收银台",
            "tab_sale": "收款",
            "tab_list": "交易记录",
            "tab_totals": "汇总",
            "charge": "收款",
            "charge_qr": "显示收款码",
            "error_no_amount": "请先输入金额",
            "sim_phone_title": "模拟手机：向扫码器出示付款码",
            "phone_alipay": "支付宝付款码",
            "phone_wechatpay": "微信支付付款码",
            "phone_confirm": "付款码（需在手机上确认）",
            "phone_cpm": "EMVCo 二维码",
            "phone_expired": "过期的付款码",
            "phone_reused": "重复使用的付款码",
            "phone_corrupt": "损坏的付款码",
            "sim_mpm_title": "模拟手机",
            "sim_pay_mpm": "用手机扫码付款",
            "sim_cards_title": "模拟银行卡",
            "card_visa": "Visa",
            "card_mastercard": "Mastercard",
            "card_visa_debit": "Visa 借记卡",
            "card_maestro": "Maestro",
            "card_see_phone": "手机（需再次挥卡）",
            "cancel": "取消",
            "result_approved": "交易成功",
            "result_approved_offline": "交易成功（脱机）",
            "result_declined": "交易被拒绝",
            "result_cancelled": "已取消",
            "receipt": "小票",
            "new_sale": "新交易",
            "copy_customer": "持卡人存根",
            "copy_merchant": "商户存根",
            "print": "打印",
            "done": "完成",
            "refresh": "刷新",
            "sync_now": "上送脱机交易",
            "col_time": "时间",
            "col_type": "类型",
            "col_amount": "金额",
            "col_card": "卡号",
            "col_status": "状态",
            "kind_sale": "消费",
            "kind_refund": "退款",
            "kind_void": "撤销",
            "kind_preauth": "预授权",
            "kind_increment": "追加预授权",
            "kind_capture": "预授权完成",
            "kind_release": "预授权撤销",
            "state_in_progress": "处理中",
            "state_approved": "成功",
            "state_approved_offline": "脱机成功",
            "state_declined": "被拒绝",
            "state_cancelled": "已取消",
            "state_failed": "失败",
            "refund": "退款",
            "refund_title": "退款 {what}",
            "refund_amount": "退款金额",
            "merchant_pin": "商户密码",
            "error_bad_amount": "请输入有效金额",
            "col_brand": "卡组织",
            "col_sales": "消费",
            "col_refunds": "退款",
            "col_net": "净额",
            "col_offline": "脱机",
            "end_of_day": "日终结算",
            "eod_closed": "批次 {batch} 已结算：共 {count} 笔交易",
            "eod_net": "{brand}：净额 {amount}",
            "banner_offline": "脱机",
            "banner_not_sent": "尚未上送",
            "banner_host_down": "无法连接银行 - 交易将脱机处理。",
            "banner_waiting_one": "{count} 笔交易待上送：{amounts}",
            "banner_waiting_other": "{count} 笔交易待上送：{amounts}",
            "banner_flagged": "{count} 笔脱机交易事后被银行拒绝 - 请查看交易记录",
            "banner_ack": "知道了",
            "error_invalid_idempotency_key": "收银机发送的请求键无效：须为 1 至 255 个可打印字符",
            "error_idempotency_key_reused": "该请求键已用于另一请求：请使用新的请求键",
            "error_idempotency_in_progress": "该请求仍在处理中：请稍候",
            "error_idempotency_in_progress_running": "该请求仍在处理中：请等待结果",
            "error_idempotency_in_progress_interrupted": (
                "处理该请求时终端重新启动：请先查看交易记录，再以新请求重试"
            ),
            "error_idempotency_unavailable": "终端无法读取请求记录：请重试；如仍失败，请联系维修",
            "error_token_revoked": "该收银机已被撤销：请用新配对码重新配对",
            "error_registers_unavailable": (
                "终端无法读取已配对的收银机：请重试；如仍失败，请联系维修"
            ),
            "error_pairing_unavailable": "本终端不支持收银机配对",
            "error_pairing_code_invalid": "配对码错误或已过期：请获取新的配对码",
            "error_register_name_taken": "已有同名的收银机完成配对",
            "error_pairing_rate_limited": "配对码错误次数过多：请稍后再试",
            "error_register_not_found": "没有该名称的已配对收银机",
            "error_reference_in_use": "该参考号已有一笔不同金额的消费：请使用其他参考号",
            "error_invalid_state_offline_not_sent": "该脱机交易尚未上送银行：请在上送后再退款",
            "error_invalid_state_no_bank_reference": "银行没有该笔交易的参考号，无法在此退款",
            "error_invalid_state_refund_not_a_sale": "只有消费交易可以退款",
            "error_invalid_state_refund_voided": "该笔消费已撤销：没有可退的金额",
            "error_invalid_state_refund_fully_refunded": "该笔消费已全额退款",
            "error_invalid_state_refund_not_approved": "该笔消费未成功：没有可退的金额",
            "error_invalid_state_refund_too_much": "退款金额超过该笔消费的剩余可退金额",
            "error_invalid_request_refund_too_much": "退款金额超过该笔消费的剩余可退金额",
            "error_invalid_state_earlier_refund_done": (
                "该笔消费此前的一笔退款已到达银行并已记录：本次未再退款。请先查看该笔消费再决定"
            ),
            "error_invalid_state_void_not_a_sale": "只有消费交易可以撤销",
            "error_invalid_state_void_already_voided": "该笔消费已撤销",
            "error_invalid_state_void_offline": "脱机交易不能撤销：请改为退款",
            "error_invalid_state_void_not_approved": "该笔消费未成功：无需撤销",
            "error_invalid_state_void_settled": "该笔消费已日终结算，不能再撤销：请改为退款",
            "error_invalid_state_void_refunded": "已有退款的消费不能撤销：请退还剩余金额",
            "error_invalid_state_already_finished": "该笔交易已结束",
            "error_invalid_state_too_late_to_cancel": "无法取消：卡片已读取，交易正在完成",
            "error_invalid_state_not_finished": "该笔交易仍在进行：结束后才有小票",
            "error_invalid_request_amount_not_integer": "金额无效",
            "error_invalid_request_amount_not_positive": "请输入大于零的金额",
            "error_invalid_request_amount_too_large": "金额超出银行卡交易的上限",
            "error_invalid_request_tip_not_valid": "小费金额无效",
            "error_invalid_request_tip_too_large": "小费超过了交易金额",
            "error_invalid_state_not_waiting_for_tip": "此笔交易不在等待小费",
            "error_invalid_request_unknown_currency": "未知的币种",
            "error_invalid_request_wrong_currency": "本终端不受理该币种",
            "error_invalid_request_unknown_method": "未知的支付方式",
            "error_invalid_request_qr_disabled": "本终端未开通收款码支付",
            "error_invalid_request_qr_unavailable": "无法为该笔交易生成收款码",
            "error_not_found_no_transaction": "本终端没有该笔交易",
            "error_not_found_no_batch": "本终端没有该批次",
            "error_not_found_no_code": "该笔交易没有收款码",
            "error_not_found_not_running": "当前没有进行中的交易",
            "error_acquirer_unavailable_pending_refund": (
                "该笔消费此前的一笔退款尚未收到银行应答：请在能连接银行时重试"
            ),
            "error_acquirer_unavailable_pending_void": (
                "该笔消费此前的一笔撤销尚未收到银行应答：请在能连接银行时重试"
            ),
            "error_invalid_state_not_a_preauth": "该笔交易不是预授权",
            "error_invalid_state_not_open": "该笔预授权未成功：没有冻结金额",
            "error_invalid_state_captured": "该笔预授权已完成",
            "error_invalid_state_released": "该笔预授权已撤销",
            "error_invalid_state_expired": "该笔预授权已过期：冻结已失效",
            "error_invalid_state_earlier_hold_change_done": (
                "该笔预授权此前的一次操作已到达银行并已记录：本次未做任何操作"
            ),
            "error_invalid_request_over_hold": "金额超过预授权冻结的金额",
            "error_acquirer_unavailable_pending_hold_change": (
                "该笔预授权此前的一次操作尚未收到银行应答：请在能连接银行时重试"
            ),
            "error_unknown_currency": "未知的币种",
            "error_malformed_body": "终端无法读取该请求",
            "error_method_not_allowed": "终端不支持此操作",
            "error_http_error": "终端返回错误 HTTP {status}",
            "error_unauthorised": "此屏幕未登录终端：请重新打开收银页面（pipos kiosk）",
            "error_unknown_language": "终端不支持该语言",
            "error_unknown_card": "没有这种模拟卡",
            "error_unreadable_code": "扫码器无法识别该码",
            "error_simulator_error": "模拟器出错：请查看终端日志",
            "error_not_paid": "模拟手机未能支付该收款码",
            "error_docs_unavailable": "本终端未安装接口文档",
            "refund_after_sync": "上送银行后可退款",
            "title_in_progress": "处理中",
            "title_approved": "交易成功",
            "title_approved_offline": "脱机交易成功",
            "title_declined_after_the_fact": "事后被银行拒绝",
            "title_sale_voided": "已撤销",
            "title_sale_refunded": "已全额退款",
            "title_sale_partially_refunded": "已部分退款",
            "title_declined_by_card": "卡片拒绝交易",
            "title_declined_by_bank": "发卡行拒绝交易",
            "title_declined_offline": "交易被拒绝 - 无法连接银行",
            "title_use_another_method": "请使用其他支付方式",
            "title_try_again": "请重试",
            "title_reversed": "交易未完成 - 已冲正",
            "title_bank_error": "交易未完成 - 银行返回错误",
            "title_code_declined": "交易被拒绝",
            "title_code_rejected": "付款码无法使用",
            "title_cancelled": "已取消",
            "title_no_card": "未检测到卡片",
            "title_timed_out": "已超时",
            "title_reader_error": "读卡器故障",
            "title_failed": "交易未完成",
            "title_refund_in_progress": "退款处理中",
            "title_refunded": "退款成功",
            "title_refund_declined": "退款被拒绝",
            "title_refund_unknown": "退款结果未确认 - 银行无应答",
            "title_refund_failed": "退款未完成",
            "title_void_in_progress": "撤销处理中",
            "title_voided": "撤销成功",
            "title_void_declined": "撤销被拒绝",
            "title_void_unknown": "撤销结果未确认 - 银行无应答",
            "title_void_failed": "撤销未完成",
            "title_preauth_in_progress": "预授权处理中",
            "title_preauth_held": "金额已冻结",
            "title_preauth_captured": "预授权已完成",
            "title_preauth_released": "预授权已撤销",
            "title_preauth_declined": "预授权被拒绝",
            "title_preauth_failed": "预授权未完成",
            "title_increment_in_progress": "追加预授权处理中",
            "title_increment_approved": "追加预授权成功",
            "title_increment_declined": "追加预授权被拒绝",
            "title_increment_unknown": "追加预授权结果未确认 - 银行无应答",
            "title_increment_failed": "追加预授权未完成",
            "title_capture_in_progress": "预授权完成处理中",
            "title_capture_approved": "预授权完成成功",
            "title_capture_declined": "预授权完成被拒绝",
            "title_capture_unknown": "预授权完成结果未确认 - 银行无应答",
            "title_capture_failed": "预授权完成未完成",
            "title_release_in_progress": "预授权撤销处理中",
            "title_release_approved": "预授权撤销成功",
            "title_release_declined": "预授权撤销被拒绝",
            "title_release_unknown": "预授权撤销结果未确认 - 银行无应答",
            "title_release_failed": "预授权撤销未完成",
            "refund_state_partially_refunded": "部分退款",
            "refund_state_refunded": "已退款",
            "refund_state_voided": "已撤销",
            "method_card": "银行卡",
            "method_code": "扫码",
            "contactless_over_limit": "超出 {brands} 的非接交易限额（{amount}）",
            "error_acquirer_unavailable_not_connected": "本终端未连接银行",
            "error_acquirer_unavailable_unreachable": (
                "无法连接银行，未做任何处理，请在网络恢复后重试"
            ),
            "error_acquirer_unavailable_no_answer": "银行无应答，未做任何处理，请稍后重试",
            "error_acquirer_unavailable_host_error": "银行拒绝了请求，未做任何处理，请稍后重试",
            "offline_waiting": "等待上送",
            "offline_sent": "已上送银行",
            "offline_declined": "被银行拒绝",
            "filter_attention": "待处理",
            "error_declined_by_bank": "该脱机交易事后被银行拒绝：未收到款项，不能退款或撤销",
            "banner_offline_up_to": "{reason} - 单笔 {amount} 以内脱机受理。",
            "banner_offline_declined": "{reason} - 暂不受理银行卡。",
            "host_failure_unreachable": "无法连接银行",
            "host_failure_no_answer": "银行无应答",
            "host_failure_host_error": "银行返回错误",
            "host_failure_queue_error": "脱机存储出错",
            "sync_sent": "已上送 {count} 笔",
            "sync_nothing": "没有待上送的交易",
            "scan_rejected": "未能识别二维码，请重新扫描",
            "sync_failed": "上送失败：{reason}",
            "sync_sending": "正在上送…",
            "error_wrong_pin": "密码错误（再输错 {tries} 次将锁定密码输入）",
            "error_pin_locked": "商户密码输错次数过多，已锁定：请在 {seconds} 秒后重试",
            "error_pin_locked_wrong": "密码错误：密码输入已锁定 {seconds} 秒",
            "error_pin_locked_tampered": (
                "商户密码已锁定 {seconds} 秒：密码锁定记录被修改或删除"
                "（技术人员可在审计日志中查看）"
            ),
            "error_pin_unavailable": (
                "本终端无法校验商户密码：请技术人员设置（pipos merchant-pin set）"
            ),
            "error_busy": "另一笔交易正在进行：请先完成或取消",
            "error_body_too_large": "请求过大，终端无法处理",
            "error_host_not_allowed": (
                "此屏幕使用的地址不被终端接受：请重新打开收银页面（pipos kiosk）"
            ),
            "error_acquirer_unavailable": "无法连接银行，请稍后重试",
            "error_invalid_state": "当前无法执行此操作",
            "error_invalid_request": "请求无效",
            "error_refused": "终端拒绝了此操作",
            "error_not_found": "未找到所请求的内容",
            "error_no_printer": "本终端未配置小票打印机",
            "error_printer_error": "打印失败：请检查打印机是否开机、连接正常且有纸",
            "error_http": "终端返回错误 HTTP {status}",
            # --- 页面自身的文字（第 17 号议题） ---
            "error_terminal_unreachable": "终端无响应：请检查 pipos 是否在运行",
            "error_refund_too_much": "最多还可退款 {amount}",
            "key_clear": "清除",
            "key_back": "删除",
            "sim_drawer": "模拟器",
            "sim_cards_note": "请先发起收款，再挥卡",
            "card_declined": "会拒绝的卡",
            "sim_acquirer_title": "模拟银行",
            "sim_acquirer_online": "正常应答",
            "sim_acquirer_drops": "接收请求但不应答",
            "sim_acquirer_unreachable": "无法连接",
            "sim_acquirer_online_note": "银行已恢复应答",
            "sim_acquirer_drops_note": "银行接收请求，但从不应答",
            "sim_acquirer_unreachable_note": "银行拒绝所有连接",
            "idle_title": "等待收款",
            "idle_hint": "触摸屏幕开始",
            "try_again": "重试",
            "auto_return": "{seconds} 秒后返回键盘",
            "limit_warning_all": "此金额无法挥卡支付（非接触交易限额 {amount}）",
            "limit_warning_some": "此金额 {brands} 卡无法挥卡支付（非接触交易限额 {amount}）",
            "speech_lang": "zh-CN",
            "speech_yuan": "元",
            "announce_approved": "收款成功，{amount}",
            "announce_alipay": "支付宝到账{amount}",
            "announce_wechatpay": "微信收款{amount}",
            "search_placeholder": "金额、卡号后四位、参考号",
            "search_title": "查找交易",
            "search_hint": "输入金额或卡号后四位",
            "search_clear": "清除",
            "search_go": "查找",
            "date_all": "全部日期",
            "date_today": "今天",
            "date_yesterday": "昨天",
            "date_week": "最近 7 天",
            "list_empty": "没有交易",
            "page_newer": "较新",
            "page_older": "较早",
            "page_number": "第 {page} 页",
            "refund_of": "原消费 {amount}，{when}",
            "state_voided": "已撤销",
            "state_refunded": "已退款",
            "state_partially_refunded": "部分退款",
            "void": "撤销",
            "void_title": "撤销 {what}",
            "count_amount": "{amount}（{count} 笔）",
            "col_method": "支付方式",
            "col_terminal": "终端",
            "col_bank": "银行",
            "grand_total": "合计",
            "totals_open": "当前批次：上次结算以来的成功交易",
            "totals_empty": "上次结算以来没有成功交易",
            "totals_offline_waiting": "{count} 笔离线交易（{amount}）尚未上送：结算时先上送",
            "batch_history": "历史批次",
            "batch_heading": "批次 {batch}，结算于 {when}",
            "batch_row": "批次 {batch} - {when} - 净额 {net}",
            "batches_empty": "尚无已结算批次",
            "report_no_line": "未计入",
            "report_differs": "不一致",
            "report_in_balance": "与银行对账平：{count} 笔",
            "report_out_of_balance": "与银行对账不平：{count} 行不一致",
            "report_still_offline": "{count} 笔离线交易未能上送：计入下一批次",
            "eod_confirm_title": "结算：确认关闭当前批次？",
            "eod_confirm_hint": "将与银行结算当前批次，结算后无法撤回。",
            "eod_confirm_offline": (
                "将先上送 {count} 笔离线交易，再与银行结算当前批次。结算后无法撤回。"
            ),
            "eod_close": "确认结算",
            "eod_closing": "正在与银行结算…",
            "report_legacy_note": "旧版本结算的批次：仅有银行汇总",
            "batches_older": "更早的批次",
            "tip_title": "是否添加小费？",
            "tip_base": "金额 {amount}",
            "tip_percent": "小费 {percent}%",
            "tip_adds": "加 {amount}",
            "tip_custom": "其他金额",
            "tip_custom_title": "请输入小费金额",
            "tip_custom_ok": "确认小费",
            "tip_none": "不加小费",
            "tip_total": "合计 {amount}",
            "tip_included": "含小费 {amount}",
            "display_total": "合计",
        },
    }
)


def ui_strings(language: str) -> dict[str, str]:
    """Every label of the checkout page in `language` (unknown languages: English).

    The prompts the page shows before the terminal sends its own progress text are the
    progress texts themselves, so the two never disagree.
    """
    lang = _language(language)
    progress = _PROGRESS[lang]
    return dict(_UI[lang]) | {
        "prompt": progress["waiting_for_card"],
        "mpm_label": progress["waiting_for_payment"],
    }
