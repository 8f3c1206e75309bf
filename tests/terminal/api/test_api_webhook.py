"""PUT, GET and DELETE /api/v1/webhook on the demo terminal (the session's simulated host),
audited; and a sale's final state delivered to a receiver on 127.0.0.1, signed with the key
derived from the register's token, once: the end of day sends nothing again."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from terminal.api.stack import DemoStack
from terminal.api.webhook_routes import WebhookAnswer, start_webhooks, stop_webhooks
from terminal.app.webhooks import SIGNATURE_HEADER, WebhookWorker
from terminal.store.audit import AuditLog
from tests.terminal.api.test_api import _pay
from tests.terminal.api.test_api import api as api
from tests.terminal.api.test_api import pin_clock as pin_clock
from tests.terminal.api.test_api import stack as stack
from tests.terminal.app.test_webhooks import Receiver
from tests.terminal.app.test_webhooks import receiver as receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def app(stack: DemoStack) -> Iterator[FastAPI]:
    """The stack's API app with its webhook worker running (as the composition starts it)."""
    application: FastAPI = stack.api._app
    start_webhooks(application)
    try:
        yield application
    finally:
        stop_webhooks(application)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"url": "ftp://register.example/hook"}, 422, "http:// or https://"),
        ({"url": "register.example/hook"}, 422, "http:// or https://"),
        ({"url": "http:///hook"}, 422, "no host"),
        ({"url": "https://user:secret@register.example/"}, 422, "user name or password"),
        ({"url": "https://register.example/a b"}, 422, "spaces"),
        ({"url": "http://register.example:99999/"}, 422, "not a URL"),
        # Hosts httpx would raise for when sending (UnicodeError, InvalidURL), or no
        # resolver takes: refused here, never left to stall a delivery.
        ({"url": f"http://{'a' * 64}.example/hook"}, 422, "not a host name"),
        ({"url": "http://a..example/hook"}, 422, "not a host name"),
        ({"url": "http://exa%20mple.com/hook"}, 422, "not a host name"),
        ({"url": f"http://{'abc.' * 64}example/"}, 422, "not a host name"),
        ({"url": "http://xn--zz.example/hook"}, 422, "host is not valid"),
        ({"url": "http://\u2603.example/hook"}, 422, "host is not valid"),
        ({"url": "http://exa\u00admple.com/hook"}, 422, "host is not valid"),
        ({"url": "http://[zz]/hook"}, 422, "not a URL"),
        ({"url": ""}, 422, "url"),
        ({"url": "https://register.example/", "secret": "x"}, 422, "secret"),
        ({}, 422, "url"),
    ],
)
def test_a_webhook_url_must_be_http_or_https(
    app: FastAPI, api: httpx.Client, body: dict[str, str], status: int, needle: str
) -> None:
    answer = api.put("/api/v1/webhook", json=body)
    assert answer.status_code == status, answer.text
    assert needle in answer.json()["error"]["message"]
    assert api.get("/api/v1/webhook").status_code == 404


def test_set_read_and_delete_and_a_sale_delivered_signed(
    app: FastAPI, stack: DemoStack, api: httpx.Client, receiver: Receiver
) -> None:
    assert api.delete("/api/v1/webhook").json()["error"]["code"] == "no_webhook"
    answer = api.put("/api/v1/webhook", json={"url": receiver.url()})
    assert answer.status_code == 200, answer.text
    webhook = WebhookAnswer.model_validate(answer.json())
    assert (webhook.url, webhook.pending, webhook.last_error) == (receiver.url(), 0, "")
    assert stack.token not in answer.text
    assert WebhookAnswer.model_validate(api.get("/api/v1/webhook").json()) == webhook

    sale = _pay(stack, api, 1234)
    deadline = time.monotonic() + 10
    while not receiver.got and time.monotonic() < deadline:
        time.sleep(0.05)
    (got,) = receiver.got
    event = got.event
    assert (event["type"], event["data"]["id"], event["data"]["state"]) == (
        "transaction.final",
        sale["id"],
        "approved",
    )
    assert event["data"]["amount_text"] == sale["amount_text"]  # the API's own view
    # Verified as docs/api.md tells a register: the key derived from its token, then the
    # HMAC of "<t>.<body>" under it.
    t, v1 = (part.split("=", 1)[1] for part in got.headers[SIGNATURE_HEADER].split(","))
    key = hmac.new(stack.token.encode(), b"pipos-webhook-v1", hashlib.sha256).digest()
    expected = hmac.new(key, f"{t}.".encode() + got.body, hashlib.sha256)
    assert hmac.compare_digest(v1, expected.hexdigest())

    gone = api.delete("/api/v1/webhook")
    assert gone.status_code == 200
    assert gone.json() == {"deleted": True, "dropped": 0}
    assert api.get("/api/v1/webhook").status_code == 404


def test_the_webhook_needs_a_register_token(app: FastAPI, stack: DemoStack) -> None:
    with httpx.Client(base_url=stack.api.url) as anonymous:
        assert anonymous.put("/api/v1/webhook", json={"url": "http://x.example/"}).status_code == (
            401
        )
    if stack.kiosk is None:
        return
    with httpx.Client(base_url=stack.api.url) as page:
        navigation = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}
        opened = page.get(stack.kiosk_url(), headers=navigation, follow_redirects=True)
        assert opened.status_code == 200
        own = {"Sec-Fetch-Site": "same-origin", "Origin": stack.api.url}
        assert page.get("/api/v1/status", headers=own).status_code == 200
        refused = page.put("/api/v1/webhook", json={"url": "http://x.example/"}, headers=own)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "register_token_required"


@pytest.mark.parametrize(
    "url",
    [
        "https://register.example/hook",
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "https://till_2.shop.internal./hook",
        "https://\u4f8b\u3048.\u30c6\u30b9\u30c8/hook",  # an IDN, sent as its xn-- form
    ],
)
def test_a_webhook_url_a_resolver_takes_is_accepted(
    app: FastAPI, api: httpx.Client, url: str
) -> None:
    answer = api.put("/api/v1/webhook", json={"url": url})
    assert answer.status_code == 200, answer.text
    assert answer.json()["url"] == url


def _audit_events(tmp_path: Path) -> list[dict[str, Any]]:
    return list(AuditLog(tmp_path / "terminal" / "audit.log").events())


def test_setting_and_deleting_a_webhook_is_audited_under_the_register_name(
    app: FastAPI, stack: DemoStack, api: httpx.Client, tmp_path: Path
) -> None:
    assert api.put("/api/v1/webhook", json={"url": "https://a.example/k/SECRET"}).status_code == (
        200
    )
    assert api.put("/api/v1/webhook", json={"url": "https://b.example:8443/x"}).status_code == 200
    assert api.delete("/api/v1/webhook").status_code == 200
    assert api.delete("/api/v1/webhook").status_code == 404  # nothing changed: not audited
    hooks = [e for e in _audit_events(tmp_path) if e["event"].startswith("webhook_")]
    assert [(e["event"], e["actor"], e["detail"]) for e in hooks] == [
        ("webhook_set", "register-1", {"url": "https://a.example", "replaced": False}),
        ("webhook_set", "register-1", {"url": "https://b.example:8443", "replaced": True}),
        ("webhook_deleted", "register-1", {"dropped": 0}),
    ]
    # Neither the register's token nor the URL's path (a register's own secret) is kept.
    text = (tmp_path / "terminal" / "audit.log").read_text()
    assert stack.token not in text
    assert "SECRET" not in text


def test_the_end_of_day_sends_nothing_again_and_nothing_from_before_the_webhook(
    stack: DemoStack, api: httpx.Client, receiver: Receiver
) -> None:
    # The worker driven by hand (its thread not started): each pass is seen whole.
    worker: WebhookWorker = stack.api._app.state.webhook_worker
    before = _pay(stack, api, 1100)
    assert api.put("/api/v1/webhook", json={"url": receiver.url()}).status_code == 200
    sale = _pay(stack, api, 1234)
    assert sale["voidable"] is True
    for _ in range(3):
        worker.run_once()
    assert [(r.event["type"], r.event["data"]["id"]) for r in receiver.got] == [
        ("transaction.final", sale["id"]),
    ]
    # The end of day closes both sales' batch: each gets a new revision, and its view
    # changes (no longer voidable), but nothing of the payment changed.
    closed = api.post("/api/v1/end-of-day", json={"pin": stack.pin})
    assert closed.status_code == 200, closed.text
    after = api.get(f"/api/v1/transactions/{sale['id']}").json()
    assert (after["voidable"], after["revision"] > sale["revision"]) == (False, True)
    assert api.get(f"/api/v1/transactions/{before['id']}").json()["batch_id"]
    for _ in range(3):
        worker.run_once()
    assert len(receiver.got) == 1
