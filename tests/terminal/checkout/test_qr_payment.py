"""Code payments end to end: simulated phone -> pty -> real scanner driver -> checkout
function -> signed requests -> simulated acquirer (in process through tests/inprocess.py,
real SQLite file). The tests through the pty are integration tests.

Time is a fake clock shared by the host and the terminal; `sleep` advances it, so the
confirm-then-pay and timeout flows run instantly and deterministically.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from simulator.host import qr_payments
from simulator.wallet import PhoneWallet, WalletAccount, type_code
from terminal.acquirer.qr_client import HttpSignedTransport, QrClient
from terminal.checkout.qr_payment import CodePaymentOutcome, QrPaymentParams, run_code_payment
from terminal.domain.merchant_qr import merchant_payload
from terminal.domain.params import default_params
from terminal.domain.signing import Signer, key_id_for
from tests.conftest_host import HostHandle, inprocess_host_at

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "4761739001010119"
EUR = 978
START = 1_760_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.t = START

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Rig:
    host: HostHandle
    clock: FakeClock
    client: QrClient
    wallet: PhoneWallet
    admin: httpx.Client
    terminal_id: str
    orders: Iterator[int]

    def pay(self, code: str, amount: int = 1250, **kwargs: Any) -> CodePaymentOutcome:
        params = kwargs.pop("params", QrPaymentParams(confirm_timeout=30, poll_interval=1))
        return run_code_payment(
            code,
            amount,
            EUR,
            self.client,
            params,
            self.clock.now,
            self.clock.sleep,
            order_id=f"Q{next(self.orders):06d}",
            **kwargs,
        )

    def orders_on_host(self) -> list[dict[str, Any]]:
        return list(self.admin.get("/admin/qr/orders").json())

    def ledger(self) -> list[dict[str, Any]]:
        return list(self.admin.get("/admin/ledger").json())


def _random() -> Any:
    counter = itertools.count(1)

    def rnd(n: int) -> bytes:
        return bytes((next(counter) * 151 + 7) % 256 for _ in range(n))

    return rnd


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = FakeClock()
    with inprocess_host_at(tmp_path / "acquirer.sqlite3", clock=clock.now) as host:
        admin = host.http
        admin.put("/admin/issuer-keys", json={"476173": {"imk_ac": IMK.hex()}}).raise_for_status()
        code = host.activation_code("M1")
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        signer = Signer(key_id_for(public), key.sign, public)
        seq = itertools.count(1)
        http = httpx.Client(base_url=host.url, timeout=10, transport=host.transport)
        enrol = HttpSignedTransport(host.url, signer, "", lambda: next(seq), clock.now, http=http)
        import base64

        status, data = enrol.request(
            "POST",
            "/v1/enrol",
            {"activation_code": code, "public_key": base64.b64encode(public).decode()},
        )
        assert status == 200, data
        host_key = base64.b64decode(data["host_public_key"])
        transport = HttpSignedTransport(
            host.url,
            signer,
            data["terminal_id"],
            lambda: next(seq),
            clock.now,
            host_public_key=host_key,
            http=http,
        )
        store = host.app.host.store
        wallet = PhoneWallet(
            WalletAccount(PAN, "3012", IMK),
            random=_random(),
            clock=clock.now,
            register=lambda record: qr_payments.register_wallet_code(store, record),
        )
        yield Rig(
            host,
            clock,
            QrClient(transport),
            wallet,
            admin,
            data["terminal_id"],
            itertools.count(1),
        )
        http.close()


@pytest.fixture
def scanner() -> Iterator[tuple[int, Any]]:
    """The real serial scanner driver on a pty (tests using it are marked integration)."""
    pytest.importorskip("serial")
    from drivers.scanner import open_scanner

    master, slave = os.openpty()
    device = open_scanner(f"serial:{os.ttyname(slave)}?suffix=CR")
    try:
        yield master, device
    finally:
        device.close()
        os.close(master)
        os.close(slave)


def _scan(scanner: tuple[int, Any], code: str) -> str:
    master, device = scanner
    type_code(master, code)
    text: str = device.wait_for_code(timeout=10)
    return text


# --- through the pty scanner -----------------------------------------------------------------


@pytest.mark.integration
def test_wallet_code_sale_through_the_scanner(rig: Rig, scanner: tuple[int, Any]) -> None:
    code = rig.wallet.wallet_code("alipay")
    outcome = rig.pay(_scan(scanner, code))
    assert (outcome.result, outcome.reason, outcome.scheme) == ("approved", "paid", "alipay")
    assert outcome.masked is not None
    assert code not in outcome.masked
    [order] = rig.orders_on_host()
    assert (order["status"], order["amount"]) == ("paid", 1250)


@pytest.mark.integration
def test_confirm_then_pay_through_the_scanner(rig: Rig, scanner: tuple[int, Any]) -> None:
    code = rig.wallet.wallet_code("wechatpay", confirm_delay=5)
    start = rig.clock.now()
    outcome = rig.pay(_scan(scanner, code))
    assert (outcome.result, outcome.reason) == ("approved", "paid")
    assert rig.clock.now() - start >= 5  # it polled until the user confirmed
    assert rig.orders_on_host()[0]["status"] == "paid"


@pytest.mark.integration
def test_unconfirmed_payment_times_out_and_is_cancelled(rig: Rig, scanner: tuple[int, Any]) -> None:
    code = rig.wallet.wallet_code("alipay", confirm_delay=5, confirm_outcome="never")
    outcome = rig.pay(_scan(scanner, code))
    assert (outcome.result, outcome.reason) == ("timed_out", "timeout")
    assert "nothing charged" in outcome.message
    assert rig.orders_on_host()[0]["status"] == "cancelled"


@pytest.mark.integration
def test_merchant_cancels_while_waiting(rig: Rig, scanner: tuple[int, Any]) -> None:
    code = rig.wallet.wallet_code("alipay", confirm_delay=20)
    polls = itertools.count()
    outcome = rig.pay(_scan(scanner, code), cancel_requested=lambda: next(polls) >= 2)
    assert outcome.result == "cancelled"
    assert rig.orders_on_host()[0]["status"] == "cancelled"
    rig.clock.sleep(60)  # the user confirms too late: still nothing is charged
    assert rig.client.order_status(outcome.order_id or "").status == "cancelled"


@pytest.mark.integration
def test_consumer_presented_code_with_real_cryptogram(rig: Rig, scanner: tuple[int, Any]) -> None:
    outcome = rig.pay(_scan(scanner, rig.wallet.consumer_code()), amount=2000)
    assert (outcome.result, outcome.scheme) == ("approved", "cpm")
    assert outcome.masked == "476173******0119"
    [tx] = rig.ledger()
    assert (tx["status"], tx["amount"], tx["masked_pan"]) == ("approved", 2000, "476173******0119")


# --- bad codes: clear reasons, nothing charged ------------------------------------------------


def test_expired_reused_and_unknown_wallet_codes(rig: Rig) -> None:
    expired = rig.wallet.wallet_code("alipay", expired=True)
    assert rig.pay(expired).reason == "expired"
    code = rig.wallet.wallet_code("alipay")
    assert rig.pay(code).result == "approved"
    again = rig.pay(rig.wallet.reused_code())
    assert (again.result, again.reason) == ("declined", "reused")
    assert "already used" in again.message
    assert rig.pay("281111111111111111").reason == "unknown_code"
    paid = [o for o in rig.orders_on_host() if o["status"] == "paid"]
    assert len(paid) == 1


def test_corrupt_and_truncated_codes_are_refused_locally(rig: Rig) -> None:
    for bad, reason in [
        (PhoneWallet.corrupt(rig.wallet.wallet_code("alipay")), "corrupt"),
        (PhoneWallet.truncate(rig.wallet.wallet_code("wechatpay")), "truncated"),
        (PhoneWallet.corrupt(rig.wallet.consumer_code()), "corrupt"),
        ("hello", "unsupported"),
    ]:
        outcome = rig.pay(bad)
        assert (outcome.result, outcome.reason) == ("rejected", reason), bad
    assert rig.orders_on_host() == []


def test_reused_and_expired_consumer_codes(rig: Rig) -> None:
    code = rig.wallet.consumer_code()
    assert rig.pay(code).result == "approved"
    assert rig.pay(code).reason == "reused"
    assert rig.pay(rig.wallet.consumer_code(expired=True)).reason == "expired"
    assert [t["status"] for t in rig.ledger()] == ["approved"]


def test_tampered_cryptogram_is_declined(rig: Rig) -> None:
    from emv.qr import decode_cpm, encode_cpm
    from emv.qr.cpm import CpmApplication

    code = decode_cpm(rig.wallet.consumer_code())
    app = code.applications[0]
    forged = dict(app.transparent)
    forged[0x9F26] = bytes(8)
    outcome = rig.pay(encode_cpm([CpmApplication(app.data, forged)]))
    assert (outcome.result, outcome.reason) == ("declined", "cryptogram")
    # Declined by the host's own ARQC check and recorded, exactly as a forged card would be.
    [tx] = rig.ledger()
    assert (tx["status"], tx["arqc_status"], tx["response_code"]) == ("declined", "invalid", "05")


def test_offline_means_take_a_card_unless_allowed(rig: Rig) -> None:
    code = rig.wallet.wallet_code("alipay")
    outcome = rig.pay(code, online=False)
    assert (outcome.result, outcome.reason) == ("use_card", "offline")
    assert "take a card" in outcome.message
    allowed = QrPaymentParams(offline_schemes=frozenset({"alipay"}))
    outcome = rig.pay(code, online=False, params=allowed)
    assert outcome.result == "offline_accepted"
    assert rig.orders_on_host() == []


def test_unreachable_host_means_take_a_card(rig: Rig) -> None:
    dead = QrClient(
        HttpSignedTransport(
            "http://127.0.0.1:9",
            Signer("k", lambda m: b"", b""),
            rig.terminal_id,
            lambda: 1,
            rig.clock.now,
        )
    )
    outcome = run_code_payment(
        rig.wallet.wallet_code("alipay"),
        100,
        EUR,
        dead,
        QrPaymentParams(),
        rig.clock.now,
        rig.clock.sleep,
        order_id="QDEAD",
    )
    assert (outcome.result, outcome.cancel_pending) == ("use_card", True)


def test_cancel_before_the_payment_arrives_blocks_it(rig: Rig) -> None:
    assert rig.client.cancel("QLATE").status == "cancelled"
    code = rig.wallet.wallet_code("alipay")
    status = rig.client.pay_with_wallet_code("QLATE", code, "alipay", 100, EUR)
    assert status.status == "cancelled"


# --- merchant-presented -----------------------------------------------------------------------


def test_merchant_presented_payment_notification(rig: Rig) -> None:
    order = rig.client.create_merchant_order("QM0001", 1234, EUR)
    assert order.status == "awaiting_payment"
    payload = merchant_payload(default_params(), 1234, reference="QM0001")
    assert rig.client.order_status("QM0001").status == "awaiting_payment"
    rig.host.pay_merchant_code(payload, wallet="alipay")
    assert rig.client.order_status("QM0001").status == "paid"


def test_doctored_merchant_code_is_refused(rig: Rig) -> None:
    rig.client.create_merchant_order("QM0002", 1234, EUR)
    payload = merchant_payload(default_params(), 1, reference="QM0002")
    with pytest.raises(Exception, match="422"):
        rig.host.pay_merchant_code(payload)
    assert rig.client.order_status("QM0002").status == "awaiting_payment"
