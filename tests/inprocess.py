"""httpx's transport interface onto an ASGI application in this process: no socket, no server.

The acquirer client is synchronous (``httpx.Client``) and the simulated host is an ASGI
application; ``httpx.ASGITransport`` only serves ``httpx.AsyncClient``. As starlette's
``TestClient`` does, :class:`InProcessTransport` runs the application on an event loop in one
background thread (an anyio blocking portal) and hands each request to it::

    app = create_app(tmp_path / "acquirer.sqlite3")
    transport = InProcessTransport(app)
    client = AcquirerClient("http://acquirer.test", keystore, sequence, transport=transport)
    ...
    transport.shutdown()

What a real network would do, it does the way uvicorn and httpx would show it:

* the client's read timeout holds: an answer slower than it raises ``httpx.ReadTimeout``,
  and the application still finishes the request (a host that received it processes it);
* a connection cut by the host's fault injector (``simulator/host/faults.py``: ``refuse``,
  ``drop_after_commit``, which call ``send.__self__.transport.abort()``) raises
  ``httpx.RemoteProtocolError``, as a real cut does;
* an exception in the application before it answered is a 500, as uvicorn answers it.

What it does not do: TLS, connect errors, connection pooling and keep-alive, streamed
response bodies (the body is buffered). Tests of those use a real host on 127.0.0.1
(``acquirer_host`` in tests/conftest_host.py), marked ``integration``.

Several clients may share one transport (the terminal's client, the admin client, a
provisioning client): ``close()``, which ``httpx.Client.close()`` calls, leaves it running;
its owner calls :meth:`InProcessTransport.shutdown`.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from typing import Any

import anyio
import anyio.from_thread
import httpx
from starlette.types import ASGIApp, Message

log = logging.getLogger(__name__)

_CUT = "Server disconnected without sending a response."


class _ConnectionCutError(Exception):
    """The application aborted the connection (the fault injector's cut)."""


class _Exchange:
    """One request and its response, as the ASGI application sees them.

    ``send`` is a bound method whose ``__self__.transport.abort()`` is how the fault
    injector cuts a connection under uvicorn: here it marks the exchange as cut.
    """

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self._done = anyio.Event()
        self.transport = self
        self.aborted = False
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.complete = False

    def abort(self) -> None:
        self.aborted = True
        self._done.set()

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._done.wait()  # the request was read: the client "disconnects" once answered
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.aborted or self.complete:
            return
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            self.chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self.complete = True
                self._done.set()


class InProcessTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that calls an ASGI application in this process."""

    def __init__(self, app: ASGIApp, *, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self._app = app
        self._client = client
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal(name="in-process-host")
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        timeout = request.extensions.get("timeout", {}).get("read")
        future = self._portal.start_task_soon(self._call, request, body)
        try:
            status, headers, content = future.result(timeout=timeout)
        except TimeoutError as exc:
            # The application goes on with the request, as a host that received it would.
            raise httpx.ReadTimeout("in-process host: read timed out", request=request) from exc
        except _ConnectionCutError as exc:
            raise httpx.RemoteProtocolError(_CUT, request=request) from exc
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def _call(
        self, request: httpx.Request, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        url = request.url
        raw_path = url.raw_path.partition(b"?")[0]
        default_port = 443 if url.scheme == "https" else 80
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": urllib.parse.unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": url.query,
            "root_path": "",
            "headers": [(key.lower(), value) for key, value in request.headers.raw],
            "client": self._client,
            "server": (url.host, url.port or default_port),
        }
        exchange = _Exchange(body)
        try:
            await self._app(scope, exchange.receive, exchange.send)
        except Exception:
            if exchange.aborted or (exchange.status is not None and not exchange.complete):
                raise _ConnectionCutError from None  # cut mid-answer: no usable response
            if not exchange.complete:
                log.exception("in-process host: exception before the answer (500)")
                return 500, [(b"content-type", b"text/plain")], b"Internal Server Error"
            log.exception("in-process host: exception after the answer")
        if exchange.aborted or (exchange.status is not None and not exchange.complete):
            raise _ConnectionCutError
        if exchange.status is None:
            return 500, [(b"content-type", b"text/plain")], b"Internal Server Error"
        return exchange.status, exchange.headers, b"".join(exchange.chunks)

    def close(self) -> None:
        """Kept running: other clients may share this transport (see :meth:`shutdown`)."""

    def shutdown(self) -> None:
        """Stop the event loop thread once requests still running have finished."""
        self._stack.close()


__all__ = ["InProcessTransport"]
