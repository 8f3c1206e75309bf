"""A hostile web page gets nothing from the kiosk page (issue 16, item 1 and the docs and
chunked-body items of 9).

The attacks, each of which worked on the old terminal:

* DNS rebinding: a page on evil.example makes its name resolve to 127.0.0.1 and reads `/`
  with its own name in the Host header; the page carried a full API token in a <meta> tag;
* framing: the page could be put in another site's frame (no frame-ancestors, no
  X-Frame-Options);
* the page's credential closed the batch without the merchant PIN (and had the register's
  full API);
* the page's credential was handed to whoever loaded `/`, instead of earned once by the
  kiosk through a file only the terminal's user can read;
* a chunked body over the limit got 400, not the documented 413;
* /docs pulled Swagger UI from a CDN into the API's origin;
* the page's session cookie, which a server on another loopback port receives (cookies are
  not scoped by port), was accepted from any program that sent it without Sec-Fetch-Site,
  and it never expired.

A real terminal API under uvicorn on loopback (integration), on the session's simulated host.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from terminal.api.kiosk import COOKIE, SESSION_IDLE, SESSION_MAX_AGE
from terminal.api.stack import DemoStack, start_demo_stack
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle

pytestmark = pytest.mark.integration

PIN = "2468"
#: What a browser says of the page's own requests (fetch, EventSource) and of the kiosk's
#: top-level navigation: the Fetch Metadata headers Chromium sends, which a page cannot set.
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
NAVIGATION = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}


class WallClock:
    """The wall clock the page's sessions end by, moved by the tests."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def stack(tmp_path: Path, session_host: HostHandle, clock: WallClock) -> Iterator[DemoStack]:
    s = start_demo_stack(
        tmp_path,
        host_url=session_host.url,
        activation_code=session_host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin=PIN,
        background=False,
        session_clock=clock,
    )
    try:
        yield s
    finally:
        s.close()


def _kiosk(stack: DemoStack) -> httpx.Client:
    """A browser-like client that opened the kiosk link (it keeps the cookie it gets, and
    says what a browser says of the page's own requests)."""
    client = httpx.Client(base_url=stack.api.url, timeout=30, headers=SAME_ORIGIN)
    opened = client.get(stack.kiosk_url(), headers=NAVIGATION)
    assert opened.status_code == 303, opened.text
    assert client.cookies
    return client


def _page_sale(stack: DemoStack, page: httpx.Client, amount: int) -> str:
    created = page.post("/api/v1/sales", json={"amount": amount, "currency": 978})
    assert created.status_code == 202, created.text
    assert page.post("/api/v1/simulator/present", json={"card": "visa"}).status_code == 200
    record = stack.checkout.wait(created.json()["id"], timeout=30)
    assert record.state == "approved"
    return str(record.id)


def test_a_rebinding_page_reads_neither_the_page_nor_the_api(stack: DemoStack) -> None:
    evil = {"Host": "evil.example:8700"}
    with httpx.Client(base_url=stack.api.url, timeout=30) as browser:
        page = browser.get("/", headers=evil)
        assert page.status_code == 400
        error = page.json()["error"]
        assert error["code"] == "host_not_allowed"
        assert "Host header 'evil.example:8700'" in error["message"]
        assert stack.token not in page.text
        api = browser.get(
            "/api/v1/status", headers=evil | {"Authorization": f"Bearer {stack.token}"}
        )
        assert api.status_code == 400
        assert api.json()["error"]["code"] == "host_not_allowed"
        sale = browser.post(
            "/api/v1/sales",
            json={"amount": 100, "currency": 978},
            headers=evil | {"Authorization": f"Bearer {stack.token}"},
        )
        assert sale.status_code == 400
        assert stack.checkout.journal.recent() == []
        # The page itself, asked by its right name, holds no token: only how to open it.
        plain = browser.get("/")
        assert plain.status_code == 401
        assert stack.token not in plain.text
        assert "pipos-token" not in plain.text
        assert "pipos kiosk" in plain.text
        assert "收银" in plain.text  # the same explanation in Chinese
        # Loopback names are answered (with or without a port).
        for host in ("localhost", "[::1]:8700", "127.0.0.1", "LOCALHOST:1"):
            assert browser.get("/health", headers={"Host": host}).status_code == 200, host
        # Even a browser with the page's session gets no token in the page.
        kiosk = _kiosk(stack)
        shown = kiosk.get("/")
        assert shown.status_code == 200
        assert "checkout.js" in shown.text
        assert stack.token not in shown.text
        assert not re.search(r'name="pipos-token"', shown.text)
        kiosk.close()


def test_the_operators_names_are_answered_and_no_other(
    tmp_path: Path, session_host: HostHandle
) -> None:
    stack = start_demo_stack(
        tmp_path,
        host_url=session_host.url,
        activation_code=session_host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin=PIN,
        background=False,
        allowed_hosts=["till-1.shop.lan"],
    )
    try:
        with httpx.Client(base_url=stack.api.url, timeout=30) as client:
            for host in ("till-1.shop.lan:8700", "TILL-1.shop.lan", "127.0.0.1"):
                assert client.get("/health", headers={"Host": host}).status_code == 200, host
            for host in ("till-2.shop.lan", "till-1.shop.lan.evil.example", "", "a b"):
                refused = client.get("/health", headers={"Host": host})
                assert refused.status_code == 400, host
                assert "till-1.shop.lan" in refused.json()["error"]["message"]
    finally:
        stack.close()


def test_the_page_cannot_be_framed(stack: DemoStack) -> None:
    _framing_refused(httpx.get(stack.api.url + "/"))
    kiosk = _kiosk(stack)
    try:
        _framing_refused(kiosk.get("/"))
        # Errors too: every answer carries them.
        _framing_refused(httpx.get(stack.api.url + "/", headers={"Host": "evil.example"}))
        _framing_refused(kiosk.get("/api/v1/transactions/nothing"))
    finally:
        kiosk.close()


def _framing_refused(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, response.headers
    assert "script-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert response.headers.get("x-frame-options") == "DENY"
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("referrer-policy") == "no-referrer"


def test_the_page_cannot_close_the_batch_refund_or_void_without_the_pin(
    stack: DemoStack,
) -> None:
    # Whatever loading the page hands a browser, it does not close the batch.
    with httpx.Client(base_url=stack.api.url, timeout=30) as browser:
        html = browser.get("/").text
        found = re.search(r'name="pipos-token" content="([^"]*)"', html)
        headers = {"Authorization": f"Bearer {found.group(1)}"} if found else {}
        assert browser.post("/api/v1/end-of-day", headers=headers).status_code in (401, 422)
    page = _kiosk(stack)
    try:
        sale = _page_sale(stack, page, 1500)
        other = _page_sale(stack, page, 700)
        assert page.get("/api/v1/totals").json()["totals"] != []
        for path, body in (
            ("/api/v1/end-of-day", {}),
            (f"/api/v1/transactions/{sale}/refund", {"amount": 100}),
            (f"/api/v1/transactions/{other}/void", {}),
        ):
            refused = page.post(path, json=body)
            assert refused.status_code == 422, (path, refused.text)
            assert refused.json()["error"]["field"] == "pin"
        # Nothing happened: the batch is open, the sales stand as they were.
        assert page.get("/api/v1/totals").json()["totals"][0]["sales_count"] == 2
        assert [r.kind for r in stack.checkout.journal.recent()] == ["sale", "sale"]
        wrong = page.post("/api/v1/end-of-day", json={"pin": "9753"})
        assert wrong.status_code == 403
        assert page.get("/api/v1/totals").json()["totals"][0]["sales_count"] == 2
    finally:
        page.close()
    # The register needs the PIN to close the batch too.
    with httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    ) as register:
        assert register.post("/api/v1/end-of-day").status_code == 422
        closed = register.post("/api/v1/end-of-day", json={"pin": PIN})
        assert closed.status_code == 200, closed.text
        assert closed.json()["transactions"] == 2


def test_the_kiosk_code_is_single_use_and_the_cookie_is_http_only_strict(
    stack: DemoStack,
) -> None:
    assert stack.kiosk is not None
    code_file = stack.kiosk.code_path
    assert code_file.stat().st_mode & 0o777 == 0o600
    url = stack.kiosk_url()
    with httpx.Client(timeout=30) as first:
        opened = first.get(url)
        assert opened.status_code == 303
        assert opened.headers["location"] == "/"
        cookie = opened.headers["set-cookie"]
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert "httponly" in attributes
        assert "samesite=strict" in attributes
        assert "path=/" in attributes
        assert first.get(stack.api.url + "/", headers=NAVIGATION).status_code == 200
    with httpx.Client(timeout=30) as second:
        again = second.get(url)
        assert again.status_code == 403
        assert "set-cookie" not in again.headers
        assert not second.cookies
        assert second.get(stack.api.url + "/api/v1/status").status_code == 401
    fresh = stack.kiosk_url()
    assert fresh != url  # a new code replaced the spent one, for the next launcher
    with httpx.Client(timeout=30) as third:
        assert third.get(fresh).status_code == 303


def test_the_page_session_works_only_from_the_page_itself(stack: DemoStack) -> None:
    page = _kiosk(stack)
    try:
        assert page.get("/api/v1/status").status_code == 200
        # Another origin of the same site (another port on 127.0.0.1) would get the cookie
        # sent along; the browser says where the request comes from, and it is refused.
        cross = page.post(
            "/api/v1/sales",
            json={"amount": 100, "currency": 978},
            headers={"Origin": "http://127.0.0.1:9999"},
        )
        assert cross.status_code == 401
        site = page.get("/api/v1/status", headers={"Sec-Fetch-Site": "same-site"})
        assert site.status_code == 401
        assert page.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 401
        own = page.get("/api/v1/status", headers={"Origin": stack.api.url})
        assert own.status_code == 200
        # The register's query token stays the register's: a cookie is no token.
        assert (
            httpx.get(stack.api.url + "/api/v1/events", params={"token": "nope"}).status_code == 401
        )
    finally:
        page.close()
    assert stack.checkout.journal.recent() == []


def _replay(stack: DemoStack, cookie: str) -> httpx.Client:
    """A program (not a browser) that got the page's cookie, e.g. a server on another
    loopback port the kiosk's browser was sent to, replaying it as it was received."""
    return httpx.Client(base_url=stack.api.url, timeout=30, cookies={COOKIE: cookie})


def test_the_cookie_without_fetch_metadata_is_refused(stack: DemoStack) -> None:
    page = _kiosk(stack)
    cookie = page.cookies[COOKIE]
    try:
        with _replay(stack, cookie) as program:
            sale = program.post("/api/v1/sales", json={"amount": 100, "currency": 978})
            assert sale.status_code == 401, sale.text
            message = sale.json()["error"]["message"]
            assert "Sec-Fetch-Site" in message
            assert "Authorization: Bearer" in message
            assert program.get("/api/v1/status").status_code == 401
            assert program.get("/api/v1/events").status_code == 401
            shown = program.get("/")
            assert shown.status_code == 401
            assert "kiosk-locked" in shown.text
            # "none" (a navigation the user started) only opens the page itself.
            typed = program.get("/api/v1/status", headers=NAVIGATION)
            assert typed.status_code == 401
            assert "Sec-Fetch-Site: none" in typed.json()["error"]["message"]
            assert program.get("/", headers=NAVIGATION).status_code == 200
            fetched = program.get("/", headers={"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "cors"})
            assert fetched.status_code == 401
        # The page itself goes on.
        assert page.get("/api/v1/status").status_code == 200
    finally:
        page.close()
    assert stack.checkout.journal.recent() == []


def _live(client: httpx.Client) -> int:
    return client.get("/api/v1/status").status_code


def test_the_page_session_ends_when_unused_and_after_a_day(
    stack: DemoStack, clock: WallClock
) -> None:
    # Unused for SESSION_IDLE: ended.
    idle = _kiosk(stack)
    clock.now += SESSION_IDLE - 60
    assert _live(idle) == 200  # a use: the idle time starts again
    clock.now += SESSION_IDLE - 60
    assert _live(idle) == 200
    clock.now += SESSION_IDLE + 1
    ended = idle.get("/api/v1/status")
    assert ended.status_code == 401
    assert "pipos kiosk" in ended.json()["error"]["message"]
    assert idle.get("/", headers=NAVIGATION).status_code == 401  # how to open it again
    idle.close()
    # Used all the time: ended SESSION_MAX_AGE after it was earned.
    busy = _kiosk(stack)
    earned = clock.now
    while clock.now + 3600 < earned + SESSION_MAX_AGE:
        clock.now += 3600
        assert _live(busy) == 200
    clock.now = earned + SESSION_MAX_AGE
    assert _live(busy) == 401
    busy.close()
    # A fresh code opens the page again (what `pipos kiosk` does).
    again = _kiosk(stack)
    assert _live(again) == 200
    again.close()


def test_an_ended_session_ends_the_open_event_stream(stack: DemoStack, clock: WallClock) -> None:
    page = _kiosk(stack)
    # The stream's keep-alive comes every 15 s: a read waiting 5 s tells "ended" from "runs on".
    patience = httpx.Timeout(30, read=5)
    try:
        with page.stream("GET", "/api/v1/events", timeout=patience) as events:
            assert events.status_code == 200
            lines = events.iter_lines()
            assert next(lines).startswith("retry:")
            clock.now += SESSION_MAX_AGE
            stack.checkout.events.publish("status", stack.checkout.status())
            try:
                rest = list(lines)
            except httpx.ReadTimeout:
                pytest.fail("the event stream of an ended page session runs on")
            assert "event: status" in rest  # what was on its way is delivered, then the end
        assert page.get("/api/v1/events").status_code == 401
    finally:
        page.close()


def test_a_chunked_body_over_the_limit_gets_413(stack: DemoStack) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"amount": 100, "currency": 978, "external_reference": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    response = httpx.post(
        stack.api.url + "/api/v1/sales",
        content=chunks(),
        headers={"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    # A chunked body within the limit is read whole and served.
    small = httpx.post(
        stack.api.url + "/api/v1/sales",
        content=iter([b'{"amount": 100,', b' "currency": 978}']),
        headers={"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert small.status_code == 202, small.text
    stack.checkout.cancel(None)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_load_nothing_from_elsewhere(stack: DemoStack, path: str) -> None:
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        page = client.get(path)
        assert page.status_code == 200
        links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert links, page.text
        for link in links:
            assert not urlsplit(link).netloc, f"{path} loads {link} from another host"
            assert client.get(link).status_code == 200, link
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp
        assert "frame-ancestors 'none'" in csp
        assert "http" not in csp
