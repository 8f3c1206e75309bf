"""Phone payments through the local API: the simulated phone shows codes to the simulated
scanner, merchant-presented sales serve their EMVCo code as SVG, and the register cancels."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emv.qr.mpm import parse_mpm
from terminal.api.stack import DemoStack, start_demo_stack
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle

pytestmark = pytest.mark.integration  # a real API server (and the session's host) on loopback


@pytest.fixture
def stack(tmp_path: Path, session_host: HostHandle) -> Iterator[DemoStack]:
    s = start_demo_stack(
        tmp_path,
        host_url=session_host.url,
        activation_code=session_host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin="2468",
        background=False,
        confirm_delay=0.2,
        qr_poll_interval=0.05,
    )
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def api(stack: DemoStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    ) as client:
        yield client


def _start(api: httpx.Client, amount: int, **extra: Any) -> dict[str, Any]:
    created = api.post("/api/v1/sales", json={"amount": amount, "currency": "EUR", **extra})
    assert created.status_code == 202, created.text
    return dict(created.json())


def _finish(stack: DemoStack, api: httpx.Client, txn_id: str) -> dict[str, Any]:
    stack.checkout.wait(txn_id, timeout=30)
    return dict(api.get(f"/api/v1/transactions/{txn_id}").json())


def _wait_for_stage(stack: DemoStack, txn_id: str, stage: str) -> None:
    last = 0
    while True:
        for event in stack.checkout.events.after(last, timeout=30):
            last = event["id"]
            data = event["data"]
            if event["type"] == "transaction" and data.get("id") == txn_id:
                assert data["state"] == "in_progress", data
                if data["stage"] == stage:
                    return


def test_phone_code_sale_from_the_register(stack: DemoStack, api: httpx.Client) -> None:
    txn = _start(api, 560)
    assert txn["prompt"] == "Tap card or scan code"
    shown = api.post("/api/v1/simulator/phone", json={"code": "alipay"})
    assert shown.status_code == 200, shown.text
    done = _finish(stack, api, txn["id"])
    assert (done["state"], done["brand"], done["entry_mode"]) == ("approved", "ALIPAY", "qr_wallet")
    receipt = api.get(f"/api/v1/transactions/{txn['id']}/receipt").text
    assert "WALLET CODE" in receipt
    assert "APPROVED" in receipt
    status = api.get("/api/v1/status").json()
    assert status["codes"] == {"scanner": True, "merchant_presented": True}


def test_confirm_then_pay_and_a_reused_code(stack: DemoStack, api: httpx.Client) -> None:
    txn = _start(api, 720)
    assert api.post("/api/v1/simulator/phone", json={"code": "confirm"}).status_code == 200
    assert _finish(stack, api, txn["id"])["state"] == "approved"
    again = _start(api, 720)
    assert api.post("/api/v1/simulator/phone", json={"code": "reused"}).status_code == 200
    done = _finish(stack, api, again["id"])
    assert (done["state"], done["reason"]) == ("declined", "reused")
    assert done["message"]["customer"] == "Code already used - please refresh it"


def test_scanned_text_that_is_no_payment_code(stack: DemoStack, api: httpx.Client) -> None:
    txn = _start(api, 300)
    assert api.post("/api/v1/simulator/scan", json={"code": "HELLO WORLD"}).status_code == 200
    done = _finish(stack, api, txn["id"])
    assert (done["state"], done["result"]) == ("declined", "code_rejected")
    bad = api.post("/api/v1/simulator/scan", json={"code": "12\x0734"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "unreadable_code"


def test_register_cancels_while_the_customer_confirms(
    stack: DemoStack, api: httpx.Client, session_host: HostHandle
) -> None:
    assert stack.phone is not None
    stack.phone.confirm_delay = 3600
    txn = _start(api, 1500)
    assert api.post("/api/v1/simulator/phone", json={"code": "confirm"}).status_code == 200
    _wait_for_stage(stack, txn["id"], "waiting_for_confirmation")
    cancelled = api.post(f"/api/v1/transactions/{txn['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    done = _finish(stack, api, txn["id"])
    assert (done["state"], done["result"]) == ("cancelled", "code_cancelled")
    orders = session_host.qr_orders(stack.runtime.keystore.terminal_id)
    assert [o["status"] for o in orders] == ["cancelled"]


def test_merchant_presented_sale_serves_its_code_and_is_paid(
    stack: DemoStack, api: httpx.Client
) -> None:
    txn = _start(api, 990, method="merchant_qr")
    # No code on screen until the acquirer knows the order (a phone could not pay it).
    assert txn["stage"] == "opening_order"
    assert txn["qr_svg"] is None
    _wait_for_stage(stack, txn["id"], "waiting_for_payment")
    txn = api.get(f"/api/v1/transactions/{txn['id']}").json()
    assert txn["qr_svg"] == f"/api/v1/sales/{txn['id']}/qr.svg"
    svg = api.get(txn["qr_svg"])
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.text.lstrip().startswith("<svg")
    # The page's <img>/fetch may pass its token in the query, as for the event stream.
    plain = httpx.get(stack.api.url + txn["qr_svg"], params={"token": stack.token})
    assert plain.status_code == 200
    payload = txn["extra"]["qr_payload"]
    assert parse_mpm(payload).amount_minor(2) == 990
    paid = api.post("/api/v1/simulator/pay-merchant-qr", json={"transaction_id": txn["id"]})
    assert paid.status_code == 200, paid.text
    done = _finish(stack, api, txn["id"])
    assert (done["state"], done["entry_mode"]) == ("approved", "qr_merchant")
    assert done["qr_svg"] is None


def test_merchant_code_only_for_merchant_qr_sales_and_methods_are_checked(
    stack: DemoStack, api: httpx.Client
) -> None:
    bad = api.post("/api/v1/sales", json={"amount": 100, "currency": 978, "method": "cash"})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "method"
    txn = _start(api, 100)
    assert api.get(f"/api/v1/sales/{txn['id']}/qr.svg").status_code == 404
    assert api.get("/api/v1/sales/S-unknown/qr.svg").status_code == 404
    api.post("/api/v1/cancel")
    stack.checkout.wait(txn["id"], timeout=30)


def test_demo_tour_includes_phone_payments(capsys: pytest.CaptureFixture[str]) -> None:
    from terminal.cli.run import _demo_command

    assert _demo_command(argparse.Namespace()) == 0
    out = capsys.readouterr().out
    section = out[out.index("6. Phone payments") : out.index("7. End-of-day totals")]
    assert section.count("approved: Approved") == 3  # scanned, confirmed, merchant-presented
    assert "declined: The code was already used" in section
    assert "ALIPAY" in out[out.index("7. End-of-day totals") :]
