"""PUT, GET and DELETE /api/v1/webhook on the demo terminal (the session's simulated host),
and a sale's final state delivered to a receiver on 127.0.0.1, signed with the register's
token."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from terminal.api.stack import DemoStack
from terminal.api.webhook_routes import WebhookAnswer, start_webhooks, stop_webhooks
from terminal.app.webhooks import SIGNATURE_HEADER
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
    t, v1 = (part.split("=", 1)[1] for part in got.headers[SIGNATURE_HEADER].split(","))
    expected = hmac.new(stack.token.encode(), f"{t}.".encode() + got.body, hashlib.sha256)
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
