"""Pairing a register with the terminal (terminal.api.pairing; docs/api.md, "Pairing"): the
demo stack bound to 127.0.0.2, a loopback address that is not 127.0.0.1, so the terminal
behaves as on a shop's network: no register token of its own, registers pair with a
one-time code, use their token, are listed and revoked, and what they do is audited under
their names. Integration tests: a real API server on the session's simulated acquirer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.api import server
from terminal.api.pairing import PAGE_CALLER
from terminal.api.stack import DemoStack, loopback_bind, start_demo_stack
from terminal.store.audit import AuditLog
from terminal.store.registers import CODE_TRIES, FILE, CodeRefused, RefusalReason, RegisterStore
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle
from tests.security.test_kiosk_page import NAVIGATION, SAME_ORIGIN

pytestmark = pytest.mark.integration

PIN = "2468"
ADDRESS = "127.0.0.2"


def _beyond_loopback(state: Path, host: HostHandle, **options: Any) -> DemoStack:
    return start_demo_stack(
        state,
        host_url=host.url,
        activation_code=host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin=PIN,
        background=False,
        bind=ADDRESS,
        **options,
    )


@pytest.fixture
def stack(tmp_path: Path, session_host: HostHandle) -> Iterator[DemoStack]:
    s = _beyond_loopback(tmp_path, session_host)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def technician(tmp_path: Path) -> Iterator[RegisterStore]:
    """The same file as `pipos registers pair` opens it, beside the running terminal."""
    store = RegisterStore(tmp_path / "terminal" / FILE)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def anonymous(stack: DemoStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _pair(client: httpx.Client, code: str, name: str) -> httpx.Response:
    return client.post("/api/v1/pairing", json={"code": code, "name": name})


def _events(tmp_path: Path) -> list[dict[str, Any]]:
    return list(AuditLog(tmp_path / "terminal" / "audit.log").events())


def test_a_non_loopback_bind_has_no_register_token(stack: DemoStack) -> None:
    assert stack.token == ""
    assert not loopback_bind(ADDRESS)
    assert loopback_bind("127.0.0.1")
    assert loopback_bind("[::1]")
    assert stack.api.url.startswith(f"http://{ADDRESS}:")


def test_the_page_caller_is_the_servers(stack: DemoStack) -> None:
    assert PAGE_CALLER == server.PAGE


def test_pair_use_list_and_revoke(
    tmp_path: Path, stack: DemoStack, technician: RegisterStore, anonymous: httpx.Client
) -> None:
    assert anonymous.get("/api/v1/status").status_code == 401
    issued = technician.issue_code()
    paired = _pair(anonymous, issued.shown, "till-2")  # as shown, with its space
    assert paired.status_code == 201, paired.text
    assert paired.json()["register"] == "till-2"
    token = paired.json()["token"]
    assert paired.headers["cache-control"] == "no-store"

    api = httpx.Client(base_url=stack.api.url, headers=_bearer(token), timeout=30)
    with api:
        assert api.get("/api/v1/status").status_code == 200
        sale = api.post("/api/v1/sales", json={"amount": 1200, "currency": 978})
        assert sale.status_code == 202, sale.text
        cancelled = api.post("/api/v1/cancel")
        assert cancelled.status_code == 200, cancelled.text

        # A second register, paired with a code the first asked for (merchant PIN).
        code = api.post("/api/v1/pairing/codes", json={"pin": PIN})
        assert code.status_code == 201, code.text
        body = code.json()
        assert body["shown"] == f"{body['code'][:3]} {body['code'][3:]}"
        assert 0 < body["expires_in"] <= 300
        second = _pair(anonymous, body["code"], "till 3")
        assert second.status_code == 201, second.text

        listed = api.get("/api/v1/registers")
        assert listed.status_code == 200
        rows = listed.json()["registers"]
        assert [r["name"] for r in rows] == ["till-2", "till 3"]
        assert all(not r["revoked"] for r in rows)
        assert rows[0]["last_seen_at"] is not None
        assert token not in listed.text
        assert second.json()["token"] not in listed.text

        wrong_pin = api.request("DELETE", "/api/v1/registers/till 3", json={"pin": "1357"})
        assert wrong_pin.status_code == 403
        assert wrong_pin.json()["error"]["code"] == "wrong_pin"
        gone = api.request("DELETE", "/api/v1/registers/till 3", json={"pin": PIN})
        assert gone.status_code == 200, gone.text
        assert gone.json()["revoked"] is True
        unknown = api.request("DELETE", "/api/v1/registers/till 3", json={"pin": PIN})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "register_not_found"

    refused = anonymous.get("/api/v1/status", headers=_bearer(second.json()["token"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_revoked"

    # Revoked by the technician's command (the same file): refused from the next request.
    technician.revoke("till-2")
    after = anonymous.get("/api/v1/status", headers=_bearer(token))
    assert after.json()["error"]["code"] == "token_revoked"

    by_event: dict[str, list[str]] = {}
    for record in _events(tmp_path):
        by_event.setdefault(record["event"], []).append(record["actor"])
    assert by_event["register_paired"] == ["till-2", "till 3"]
    assert by_event["sale_started"] == ["till-2"]
    assert by_event["cancel"] == ["till-2"]
    assert by_event["pairing_code_issued"] == ["till-2"]
    assert by_event["register_revoked"] == ["till-2"]
    assert "merchant_pin_wrong" in by_event
    assert all(token not in str(record) for record in _events(tmp_path))


def test_wrong_expired_and_missing_codes_are_403(
    stack: DemoStack, technician: RegisterStore, anonymous: httpx.Client
) -> None:
    none = _pair(anonymous, "123456", "till-2")
    assert none.status_code == 403
    assert none.json()["error"] == {
        "code": "pairing_code_invalid",
        "message": none.json()["error"]["message"],
        "field": "code",
        "reason": "none",
    }
    issued = technician.issue_code()
    wrong = _pair(anonymous, f"{(int(issued.code) + 1) % 10**6:06d}", "till-2")
    assert wrong.status_code == 403
    assert wrong.json()["error"]["reason"] == "wrong"
    assert wrong.json()["error"]["tries_left"] == CODE_TRIES - 1
    malformed = _pair(anonymous, "12a456", "till-2")
    assert malformed.status_code == 422
    bad_name = _pair(anonymous, issued.code, "till/2")
    assert bad_name.status_code == 422
    assert bad_name.json()["error"]["field"] == "name"
    reserved = _pair(anonymous, issued.code, "Checkout-Page")
    assert reserved.status_code == 409
    assert reserved.json()["error"]["reason"] == "reserved"
    # The fixed token's register, though this terminal has no fixed token: its name's
    # webhook, audit trail and kept answers stay its own.
    shared = _pair(anonymous, issued.code, "Register-1")
    assert shared.status_code == 409
    assert shared.json()["error"]["reason"] == "reserved"
    assert _pair(anonymous, issued.code, "till-2").status_code == 201
    taken = _pair(anonymous, technician.issue_code().code, "till-2")
    assert taken.status_code == 409
    assert taken.json()["error"]["reason"] == "paired"


def test_an_expired_code_is_403_expired(stack: DemoStack, tmp_path: Path) -> None:
    # Issued by a clock a day behind the terminal's: expired by the terminal's own.
    behind = RegisterStore(tmp_path / "terminal" / FILE, clock=lambda: time.time() - 86400)
    try:
        old = behind.issue_code()
    finally:
        behind.close()
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        expired = _pair(client, old.code, "till-2")
    assert expired.status_code == 403
    assert expired.json()["error"]["reason"] == "expired"


def test_five_wrong_codes_burn_the_code_and_hold_the_address_back(
    stack: DemoStack, technician: RegisterStore, anonymous: httpx.Client
) -> None:
    issued = technician.issue_code()
    wrong = f"{(int(issued.code) + 1) % 10**6:06d}"
    for _ in range(CODE_TRIES):
        assert _pair(anonymous, wrong, "till-2").json()["error"]["reason"] == "wrong"
    # Burned: the right code no longer pairs, for anyone.
    assert technician.pair(issued.code, "till-2") == CodeRefused(RefusalReason.NONE)
    # And this address is held back even with a new, right code.
    fresh = technician.issue_code()
    limited = _pair(anonymous, fresh.code, "till-2")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "pairing_rate_limited"
    assert int(limited.headers["retry-after"]) > 0
    assert limited.json()["error"]["retry_after"] == int(limited.headers["retry-after"])


def test_codes_need_a_caller_and_the_merchant_pin(
    stack: DemoStack, anonymous: httpx.Client
) -> None:
    assert anonymous.post("/api/v1/pairing/codes", json={"pin": PIN}).status_code == 401
    assert anonymous.get("/api/v1/registers").status_code == 401
    assert anonymous.request("DELETE", "/api/v1/registers/x", json={"pin": PIN}).status_code == 401


def test_the_page_holds_no_token(
    tmp_path: Path, session_host: HostHandle, anonymous: httpx.Client
) -> None:
    # A terminal beyond loopback that does have a register token (--token, for CI): the
    # page a browser opens with the kiosk code works with its session cookie alone, and
    # the token is nowhere in it.
    token = "ci-token-4f1b9e27d3a8"
    s = _beyond_loopback(tmp_path / "with-token", session_host, token=token)
    try:
        # As a browser says it (Fetch Metadata), which the page's session requires.
        with httpx.Client(base_url=s.api.url, timeout=30, headers=SAME_ORIGIN) as browser:
            assert browser.get("/", headers=NAVIGATION).status_code == 401
            opened = browser.get(s.kiosk_url(), headers=NAVIGATION)
            assert opened.status_code == 303, opened.text
            assert browser.cookies  # the session the code earned
            page = browser.get("/", headers=NAVIGATION)
            assert page.status_code == 200
            assert "checkout.js" in page.text  # the real checkout page
            assert token not in page.text
            script = browser.get("/static/checkout.js")
            assert script.status_code == 200
            assert token not in script.text
            assert browser.get("/api/v1/status").status_code == 200  # the cookie suffices
    finally:
        s.close()


def test_a_revoked_register_loses_its_open_event_stream(
    stack: DemoStack, technician: RegisterStore, anonymous: httpx.Client
) -> None:
    stack.api._app.state.settings.sse_keepalive = 0.2  # a test seam: keep-alives every 0.2 s
    token = _pair(anonymous, technician.issue_code().code, "till-2").json()["token"]
    lines: list[str] = []
    with anonymous.stream("GET", f"/api/v1/events?token={token}") as stream:
        assert stream.status_code == 200
        received = stream.iter_lines()
        for line in received:
            lines.append(line)
            if line == ": keep-alive":
                break  # the stream is open and waiting
        revoked_at = time.monotonic()
        technician.revoke("till-2")
        after: list[str] = []
        for line in received:  # ends: the server closes the stream
            after.append(line)
            assert time.monotonic() - revoked_at < 10, "the stream outlived the revocation"
        ended_in = time.monotonic() - revoked_at
    assert lines[0].startswith("retry:")
    assert "event: status" in lines
    assert ended_in < 5, ended_in
    assert all(not line.startswith("event:") for line in after)
    again = anonymous.get(f"/api/v1/events?token={token}")
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "token_revoked"


def test_a_register_paired_again_under_a_revoked_name_has_none_of_its_answers(
    stack: DemoStack, technician: RegisterStore, anonymous: httpx.Client
) -> None:
    first = _pair(anonymous, technician.issue_code().code, "till-2").json()["token"]
    sale = {"amount": 700, "currency": 978}
    key = {"Idempotency-Key": "sale-0001"}
    started = anonymous.post("/api/v1/sales", json=sale, headers=_bearer(first) | key)
    assert started.status_code == 202, started.text
    stack.checkout.cancel(started.json()["id"])
    stack.checkout.wait(started.json()["id"], timeout=10)
    with httpx.Client(base_url=stack.api.url, headers=_bearer(first), timeout=30) as till:
        assert till.request("DELETE", "/api/v1/registers/till-2", json={"pin": PIN}).is_success
    # Another register, the same name, the same key (its own counter starts at 1 too).
    second = _pair(anonymous, technician.issue_code().code, "till-2").json()["token"]
    again = anonymous.post("/api/v1/sales", json=sale, headers=_bearer(second) | key)
    assert again.status_code == 202, again.text
    assert again.headers.get("Idempotent-Replayed") is None
    assert again.json()["id"] != started.json()["id"]
    stack.checkout.cancel(again.json()["id"])
    stack.checkout.wait(again.json()["id"], timeout=10)
