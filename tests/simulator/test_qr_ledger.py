"""Code payments in the acquirer's ledger: a consumer-presented code is authorised through the
host's normal path (its ARQC verified by the host's CryptogramVerifier and recorded), and a
wallet-paid order is booked as a sale under its scheme, so it is settled, refunded and
reversed like a card sale. A host of each test's own, in process (inprocess_terminal from
tests/conftest_host.py, real SQLite), an enrolled terminal's signed AcquirerClient, and the
terminal's own code-payment function."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from emv.qr import decode_cpm, encode_cpm
from emv.qr.cpm import CpmApplication
from simulator.wallet import PhoneWallet, WalletAccount
from terminal.acquirer.client import RefundRequest
from terminal.acquirer.qr_client import AcquirerTransport, QrClient
from terminal.checkout.qr_payment import CodePaymentOutcome, QrPaymentParams, run_code_payment
from terminal.domain.merchant_qr import merchant_payload
from terminal.domain.params import default_params
from tests.conftest_host import AcquirerTerminal

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "4761739001010119"
EUR = 978
PARAMS = QrPaymentParams(confirm_timeout=30, poll_interval=0)


def _random() -> Any:
    counter = itertools.count(1)

    def rnd(n: int) -> bytes:
        return bytes((next(counter) * 151 + 7) % 256 for _ in range(n))

    return rnd


class Till:
    """An enrolled terminal paying codes over its acquirer client's signed connection."""

    def __init__(self, terminal: AcquirerTerminal) -> None:
        self.terminal = terminal
        self.host = terminal.host
        self.client = QrClient(AcquirerTransport(terminal.client))
        self._orders = itertools.count(1)

    def phone(self, pan: str = PAN) -> PhoneWallet:
        return PhoneWallet(
            WalletAccount(pan, "3012", IMK),
            random=_random(),
            clock=time.time,
            register=self.host.register_wallet_code,
        )

    def pay(self, code: str, amount: int = 1250, **kwargs: Any) -> CodePaymentOutcome:
        return run_code_payment(
            code,
            amount,
            EUR,
            self.client,
            PARAMS,
            time.time,
            lambda _seconds: None,
            order_id=f"QL{next(self._orders):06d}",
            **kwargs,
        )

    def totals(self) -> dict[str, tuple[int, int, int, int]]:
        settlement = self.terminal.client.settle()
        return {
            t.brand: (t.sales_count, t.sales_amount, t.refunds_count, t.refunds_amount)
            for t in settlement.totals
            if t.currency == EUR
        }


@pytest.fixture
def till(inprocess_terminal: AcquirerTerminal) -> Till:
    inprocess_terminal.host.set_issuer_key(PAN[:6], IMK)
    return Till(inprocess_terminal)


def _forged(code: str) -> str:
    cpm = decode_cpm(code)
    app = cpm.applications[0]
    transparent = dict(app.transparent)
    transparent[0x9F26] = bytes(8)
    return encode_cpm([CpmApplication(app.data, transparent)])


# --- consumer-presented: the host's own ARQC check ------------------------------------------


def test_consumer_code_is_authorised_with_a_verified_arqc(till: Till) -> None:
    # The phone's cryptogram covers amount 0 (made before the sale); the sale is 20.00.
    outcome = till.pay(till.phone().consumer_code(), amount=2000)
    assert (outcome.result, outcome.reason) == ("approved", "paid")
    [tx] = till.host.ledger()
    assert (tx["kind"], tx["status"], tx["amount"], tx["currency"]) == (
        "sale",
        "approved",
        2000,
        EUR,
    )
    assert (tx["arqc_status"], tx["brand"], tx["masked_pan"]) == (
        "valid",
        "visa",
        "476173******0119",
    )
    assert outcome.transaction_ref == tx["ref"]


def test_forged_consumer_code_is_declined_and_recorded(till: Till) -> None:
    outcome = till.pay(_forged(till.phone().consumer_code()))
    assert (outcome.result, outcome.reason) == ("declined", "cryptogram")
    [tx] = till.host.ledger()
    assert (tx["status"], tx["arqc_status"], tx["response_code"]) == ("declined", "invalid", "05")
    assert till.client.order_status(outcome.order_id or "").reason == "cryptogram_invalid"


def test_require_verified_arqc_still_approves_a_good_consumer_code(till: Till) -> None:
    till.host.set_rules(require_verified_arqc=True)
    phone = till.phone()
    good = till.pay(phone.consumer_code())
    forged = till.pay(_forged(phone.consumer_code()))
    # A card range whose issuer key the host does not hold cannot be verified: declined.
    unknown = till.pay(till.phone("4000000000000002").consumer_code())
    assert [good.result, forged.result, unknown.result] == ["approved", "declined", "declined"]
    assert [(t["status"], t["arqc_status"]) for t in till.host.ledger()] == [
        ("approved", "valid"),
        ("declined", "invalid"),
        ("declined", "no_key"),
    ]


def test_reused_consumer_code_is_refused_without_a_second_authorisation(till: Till) -> None:
    code = till.phone().consumer_code()
    assert till.pay(code).result == "approved"
    assert till.pay(code).reason == "reused"
    assert [t["status"] for t in till.host.ledger()] == ["approved"]


# --- wallet payment codes in the ledger -----------------------------------------------------


def test_wallet_sale_is_in_the_settlement_totals_under_its_scheme(till: Till) -> None:
    phone = till.phone()
    paid = till.pay(phone.wallet_code("alipay"), amount=1250)
    confirmed = till.pay(phone.wallet_code("wechatpay", confirm_delay=0), amount=700)
    assert (paid.result, confirmed.result) == ("approved", "approved")
    ledger = till.host.ledger()
    assert [(t["brand"], t["amount"], t["status"]) for t in ledger] == [
        ("alipay", 1250, "approved"),
        ("wechatpay", 700, "approved"),
    ]
    assert [paid.transaction_ref, confirmed.transaction_ref] == [t["ref"] for t in ledger]
    assert all(t["masked_pan"].startswith("*") for t in ledger)  # never the code itself
    assert till.totals() == {"alipay": (1, 1250, 0, 0), "wechatpay": (1, 700, 0, 0)}


def test_refund_of_a_wallet_sale_is_approved(till: Till) -> None:
    sale = till.pay(till.phone().wallet_code("alipay"), amount=1250)
    assert sale.transaction_ref
    refund = till.terminal.client.refund(
        RefundRequest(amount=500, currency=EUR, original_ref=sale.transaction_ref)
    )
    assert (refund.status, refund.original_ref) == ("approved", sale.transaction_ref)
    assert till.totals() == {"alipay": (1, 1250, 1, 500)}


def test_cancelled_or_failed_wallet_orders_are_absent_from_the_totals(till: Till) -> None:
    phone = till.phone()
    cancelled = till.pay(
        phone.wallet_code("alipay", confirm_delay=3600, confirm_outcome="never"),
        cancel_requested=lambda: True,
    )
    declined = till.pay(phone.wallet_code("wechatpay", confirm_delay=0, confirm_outcome="declined"))
    expired = till.pay(phone.wallet_code("alipay", expired=True))
    assert [(o.result, o.reason) for o in (cancelled, declined, expired)] == [
        ("cancelled", "cancelled"),
        ("declined", "user_declined"),
        ("declined", "expired"),
    ]
    assert till.host.ledger() == []
    assert till.totals() == {}


def test_paid_order_cancelled_by_the_terminal_is_reversed_in_the_ledger(till: Till) -> None:
    code = till.phone().wallet_code("alipay")
    status = till.client.pay_with_wallet_code("QREV1", code, "alipay", 900, EUR)
    assert status.status == "paid"
    assert till.client.cancel("QREV1", "no_answer").status == "reversed"
    [tx] = till.host.ledger()
    assert (tx["ref"], tx["status"]) == (status.transaction_ref, "reversed")
    assert till.totals() == {}


def test_repeated_wallet_request_is_answered_once_and_booked_once(till: Till) -> None:
    code = till.phone().wallet_code("alipay")
    first = till.client.pay_with_wallet_code("QDUP1", code, "alipay", 300, EUR)
    again = till.client.pay_with_wallet_code("QDUP1", code, "alipay", 300, EUR)
    assert first == again
    assert [t["ref"] for t in till.host.ledger()] == [first.transaction_ref]


def test_merchant_presented_order_paid_by_a_wallet_is_booked(till: Till) -> None:
    till.client.create_merchant_order("QMP1", 1234, EUR)
    till.host.pay_merchant_code(
        merchant_payload(default_params(), 1234, reference="QMP1"), wallet="alipay"
    )
    status = till.client.order_status("QMP1")
    assert status.status == "paid"
    [tx] = till.host.ledger()
    assert (tx["ref"], tx["brand"], tx["amount"]) == (status.transaction_ref, "alipay", 1234)
