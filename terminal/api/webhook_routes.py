"""A register's webhook for final transaction states (issue 18 item 5): ``PUT``, ``GET`` and
``DELETE /api/v1/webhook``, with a register's token only (the checkout page has no webhook:
403 register_token_required).

The register sets its URL (http or https) with its token; the terminal keeps the URL and a
signing key derived from the token, never the token (terminal.store.webhooks, a 0600 file
beside the journal), and signs every event with that key (terminal.app.webhooks: what is
sent, the signature, the retries). Setting a webhook sends nothing that happened before it;
deleting it drops what it had still to receive. Both are audited under the register's name
(``webhook_set``, ``webhook_deleted``; the URL's scheme, host and port only: its path or
query may carry the register's own secret).

The delivery worker runs beside the API server: :func:`start_webhooks` and
:func:`stop_webhooks` (the composition calls them with the server's start and stop; the
server runs without a lifespan)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import httpx
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, Field

from ..app.webhooks import WebhookWorker, url_origin
from ..store.webhooks import FILE, Endpoint, JournalFeed, WebhookError, WebhookStore
from .common import ApiError, Body, ok_answers
from .settings import RouteKit

__all__ = [
    "MAX_URL",
    "WebhookAnswer",
    "WebhookBody",
    "WebhookDeleted",
    "install",
    "start_webhooks",
    "stop_webhooks",
]

#: The longest webhook URL accepted.
MAX_URL: Final = 2048
_SCHEMES: Final = frozenset({"http", "https"})
#: One label of a host name as the resolver takes it (RFC 1123, and the underscore some
#: internal names carry): 1 to 63 letters, digits, hyphens. An internationalised name
#: arrives here already as its xn-- form (httpx encodes it).
_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
#: The longest host name DNS carries, without its final dot.
_MAX_HOST: Final = 253


class WebhookBody(Body):
    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_URL,
            description="where events are POSTed: an http:// or https:// URL",
            examples=["https://register.example/pipos-events"],
        ),
    ]


class WebhookAnswer(BaseModel):
    """A register's webhook (its token is never shown)."""

    register_name: str = Field(description="the register's name")
    url: str
    created_at: str = Field(description="ISO 8601, when the register first set it")
    updated_at: str = Field(description="ISO 8601, when it was last set")
    pending: int = Field(description="events not yet acknowledged with a 2xx")
    last_error: str = Field(description='why the oldest pending one failed so far ("": none)')


class WebhookDeleted(BaseModel):
    deleted: bool
    dropped: int = Field(description="events it had still to receive, now dropped")


def _register_only(request: Request) -> None:
    authorization = request.headers.get("authorization", "")
    if not authorization.startswith("Bearer "):
        raise ApiError(
            403,
            "register_token_required",
            "a webhook is set with a register's own token (Authorization: Bearer ...); "
            "the checkout page has none",
        )


def _token(request: Request) -> str:
    return request.headers["authorization"][7:].strip()


def _check_url(url: str) -> str:
    url = url.strip()
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ApiError(
            422,
            "invalid_webhook_url",
            "the webhook URL has spaces or control characters",
            field="url",
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # read for its check: a port out of range raises ValueError
    except ValueError as exc:
        raise ApiError(
            422, "invalid_webhook_url", f"the webhook URL is not a URL: {exc}", field="url"
        ) from exc
    if parts.scheme.lower() not in _SCHEMES:
        raise ApiError(
            422,
            "invalid_webhook_url",
            f"the webhook URL must be http:// or https://, not {parts.scheme[:16] or 'none'!r}",
            field="url",
        )
    if not parts.hostname:
        raise ApiError(422, "invalid_webhook_url", "the webhook URL has no host", field="url")
    if parts.username or parts.password:
        raise ApiError(
            422,
            "invalid_webhook_url",
            "the webhook URL may not carry a user name or password: events are signed with "
            "the register's token instead",
            field="url",
        )
    del port
    _check_host(url)
    return url


def _check_host(url: str) -> None:
    """Refuse what the delivery's HTTP client would refuse, now, with the reason: a URL
    httpx does not parse (a name that is not IDNA, an IPv6 literal that is not one), and a
    host the resolver cannot take (an empty label, one over 63 characters, a character no
    host name has). Checked here so that it never reaches a delivery."""
    try:
        parsed = httpx.URL(url)
        # .host decodes the host from its xn-- form: an xn-- label that is no A-label raises
        # here, as it would when sent to.
        shown = parsed.host
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ApiError(
            422, "invalid_webhook_url", f"the webhook URL's host is not valid: {exc}", field="url"
        ) from exc
    if not shown:
        raise ApiError(422, "invalid_webhook_url", "the webhook URL has no host", field="url")
    try:
        ip_address(host)
    except ValueError:
        pass
    else:
        return
    name = host.removesuffix(".")
    if len(name) > _MAX_HOST or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ApiError(
            422,
            "invalid_webhook_url",
            f"the webhook URL's host {host[:80]!r} is not a host name: each dot-separated "
            "label is 1 to 63 letters, digits or hyphens, 253 characters in all",
            field="url",
        )


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def _store_error(exc: WebhookError) -> ApiError:
    return ApiError(503, "webhooks_unavailable", str(exc))


def _with_403(answers: dict[int | str, Any]) -> dict[int | str, Any]:
    """`answers` with 403 described as these routes mean it (the page, not a register)."""
    answers[403] = dict(answers[403]) | {
        "description": "The checkout page's session, not a register's token "
        "(register_token_required)"
    }
    return answers


def install(app: FastAPI, kit: RouteKit) -> None:
    """Adds this module's routes to `app`, and its store and delivery worker to
    `app.state` (``webhooks``, ``webhook_worker``; started by :func:`start_webhooks`)."""
    journal = kit.checkout.journal
    audit_log = kit.settings.audit
    store = WebhookStore(journal.path.parent / FILE)
    feed = JournalFeed(journal)
    app.state.webhooks = store
    app.state.webhook_feed = feed
    worker = WebhookWorker(store, feed, kit.checkout.view)
    app.state.webhook_worker = worker

    def answer(endpoint: Endpoint) -> WebhookAnswer:
        pending, last_error = store.pending(endpoint.register)
        return WebhookAnswer(
            register_name=endpoint.register,
            url=endpoint.url,
            created_at=_iso(endpoint.created_at),
            updated_at=_iso(endpoint.updated_at),
            pending=pending,
            last_error=last_error,
        )

    @app.put(
        "/api/v1/webhook",
        tags=["webhooks"],
        response_model=None,
        responses=_with_403(ok_answers(WebhookAnswer, 403, 413, 422, 503)),
    )
    def set_webhook(
        request: Request, body: WebhookBody, who: str = Depends(kit.register)
    ) -> WebhookAnswer:
        """Set (or replace) this register's webhook: every final transaction state from now
        on (approved, declined, cancelled, failed, approved_offline) and every later change
        of one (an offline sale sent, or declined after the fact; a refund or void of a sale)
        is POSTed to `url`, signed with a key derived from this register's token
        (`Pipos-Signature`, docs/api.md "Webhooks"), retried with backoff for 24 hours, in
        order. Only http and https URLs with a host a resolver takes (422
        invalid_webhook_url). Audited (`webhook_set`)."""
        _register_only(request)
        url = _check_url(body.url)
        try:
            replaced = store.endpoint(who) is not None
            endpoint = store.set_endpoint(who, url, _token(request), worker.now(), feed=feed)
        except WebhookError as exc:
            raise _store_error(exc) from exc
        if audit_log is not None:
            audit_log.record("webhook_set", actor=who, url=url_origin(url), replaced=replaced)
        return answer(endpoint)

    @app.get(
        "/api/v1/webhook",
        tags=["webhooks"],
        response_model=None,
        responses=_with_403(ok_answers(WebhookAnswer, 403, 404, 503)),
    )
    def get_webhook(request: Request, who: str = Depends(kit.register)) -> WebhookAnswer:
        """This register's webhook and what it has still to receive; 404 no_webhook."""
        _register_only(request)
        try:
            endpoint = store.endpoint(who)
            if endpoint is None:
                raise ApiError(404, "no_webhook", "this register has no webhook set")
            return answer(endpoint)
        except WebhookError as exc:
            raise _store_error(exc) from exc

    @app.delete(
        "/api/v1/webhook",
        tags=["webhooks"],
        response_model=None,
        responses=_with_403(ok_answers(WebhookDeleted, 403, 404, 503)),
    )
    def delete_webhook(request: Request, who: str = Depends(kit.register)) -> WebhookDeleted:
        """Remove this register's webhook; what it had still to receive is dropped;
        404 no_webhook. Audited (`webhook_deleted`)."""
        _register_only(request)
        try:
            dropped = store.delete_endpoint(who)
        except WebhookError as exc:
            raise _store_error(exc) from exc
        if dropped is None:
            raise ApiError(404, "no_webhook", "this register has no webhook set")
        if audit_log is not None:
            audit_log.record("webhook_deleted", actor=who, dropped=dropped)
        return WebhookDeleted(deleted=True, dropped=dropped)


def start_webhooks(app: FastAPI) -> None:
    """Start the delivery worker install() put on `app` (a no-op while it runs)."""
    worker: WebhookWorker | None = getattr(app.state, "webhook_worker", None)
    if worker is not None:
        worker.start()


def stop_webhooks(app: FastAPI) -> None:
    """Stop the delivery worker and close the webhook store and its journal reader (once
    no request runs any more: after the server has stopped)."""
    worker: WebhookWorker | None = getattr(app.state, "webhook_worker", None)
    if worker is not None:
        worker.close()
    feed: JournalFeed | None = getattr(app.state, "webhook_feed", None)
    if feed is not None:
        feed.close()
    store: WebhookStore | None = getattr(app.state, "webhooks", None)
    if store is not None:
        store.close()
