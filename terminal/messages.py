"""What the merchant and the customer are told, for every result a checkout can reach.

Each :class:`Result` carries two short texts: one for the merchant (what happened and what to
do next, with the technical reason when there is one) and one for the customer (what to do,
never a technical detail). The language comes from the terminal parameters
(``terminal.language``: "en" or "zh"); an unknown language falls back to English.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = ["LANGUAGES", "Message", "Result", "message_for", "progress_text"]

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
    REFUND_APPROVED = "refund_approved"
    REFUND_DECLINED = "refund_declined"
    VOID_APPROVED = "void_approved"
    VOID_DECLINED = "void_declined"
    REFUND_PENDING = "refund_pending"  # host unreachable, refund waits for the network


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
            Result.REFUND_APPROVED: ("Refund approved {amount}", "Refund done"),
            Result.REFUND_DECLINED: ("Refund declined{reason}", "Refund declined"),
            Result.VOID_APPROVED: ("Payment voided {amount}", "Payment cancelled"),
            Result.VOID_DECLINED: ("Void declined{reason}", "Cancellation declined"),
            Result.REFUND_PENDING: (
                "Network down - refund saved, will be sent automatically",
                "Refund accepted",
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
            Result.REFUND_APPROVED: ("退款成功 {amount}", "退款完成"),
            Result.REFUND_DECLINED: ("退款被拒绝{reason}", "退款被拒绝"),
            Result.VOID_APPROVED: ("交易已撤销 {amount}", "交易已撤销"),
            Result.VOID_DECLINED: ("撤销被拒绝{reason}", "撤销被拒绝"),
            Result.REFUND_PENDING: (
                "网络中断 - 退款已保存，联网后将自动上送",
                "退款已受理",
            ),
        },
    }
)

_PROGRESS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {
            "waiting_for_card": "Tap card or scan code",
            "reading_card": "Reading card - hold still",
            "authorising": "Authorising",
            "storing": "Saving",
            "reversing": "No answer from the bank - reversing",
            "done": "Done",
        },
        "zh": {
            "waiting_for_card": "请挥卡或扫码",
            "reading_card": "正在读卡 - 请勿移开",
            "authorising": "正在授权",
            "storing": "正在保存",
            "reversing": "银行无应答 - 正在冲正",
            "done": "完成",
        },
    }
)


def _language(language: str) -> str:
    return language if language in LANGUAGES else "en"


def message_for(result: Result, language: str, *, amount: str = "", reason: str = "") -> Message:
    """The merchant's and the customer's message for `result` in `language`.

    `reason` (technical, e.g. "offline limit reached: 250.00 EUR stored of 250.00 EUR") is
    appended to the merchant's text only; the customer never sees it.
    """
    merchant, customer = _TEXT[_language(language)][result]
    suffix = f" ({reason})" if reason else ""
    return Message(
        merchant=merchant.format(amount=amount, reason=suffix).strip(),
        customer=customer.format(amount=amount, reason="").strip(),
    )


def progress_text(stage: str, language: str) -> str:
    """The prompt shown while a transaction runs (stage names of terminal.checkout.Stage)."""
    return _PROGRESS[_language(language)].get(stage, stage)
