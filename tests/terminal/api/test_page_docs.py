"""The API's documentation pages render with no network (issue 18, "Docs that work offline"):
Swagger UI at /docs and ReDoc at /redoc, in headless Chromium whose every request to anything
but the terminal itself is refused, as on a counter with no internet. Integration tests."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from terminal.api.stack import DemoStack
from tests.terminal.api.test_page import browser as browser
from tests.terminal.api.test_page import stack as stack

pytestmark = pytest.mark.integration


def offline_page(browser: Any, stack: DemoStack) -> tuple[Any, list[str]]:
    """A page that may reach the terminal's own address only; what it tried elsewhere is
    recorded (and refused)."""
    own = urlsplit(stack.api.url).netloc
    elsewhere: list[str] = []
    page = browser.new_page()

    def only_the_terminal(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_the_terminal)
    return page, elsewhere


def test_swagger_ui_renders_the_api_with_no_network(browser: Any, stack: DemoStack) -> None:
    page, elsewhere = offline_page(browser, stack)
    try:
        page.goto(stack.api.url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
        assert "pipos" in page.inner_text(".swagger-ui .info .title").lower()
        # The operations are listed: the schema itself was fetched from the terminal.
        page.wait_for_selector(".opblock-summary-path", timeout=15000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert any("/api/v1/sales" in p for p in paths), paths
        assert elsewhere == []
    finally:
        page.close()


def test_redoc_renders_the_api_with_no_network(browser: Any, stack: DemoStack) -> None:
    page, elsewhere = offline_page(browser, stack)
    try:
        page.goto(stack.api.url + "/redoc")
        page.wait_for_selector("redoc h1, .api-info h1, [role=navigation]", timeout=20000)
        body = page.inner_text("body")
        assert "/api/v1/sales" in body or "sales" in body.lower()
        assert elsewhere == []
    finally:
        page.close()
