"""Fault injection for chaos tests, as an ASGI wrapper around the host application.

A test sets a fault per path prefix through `PUT /admin/faults`; the wrapper applies it to
the next matching requests (`times`, or always when unset). It sits outside FastAPI so it
sees uvicorn's own `send` and can cut the TCP connection the way a real network would.

Modes:
    refuse             close the connection before reading the request (nothing processed)
    delay              wait `delay_ms`, then process normally
    http_500           answer 500 without processing
    drop_after_commit  process and commit, then cut the connection instead of answering
    corrupt            process and commit, then flip bytes in the response body
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FaultMode = Literal["refuse", "delay", "http_500", "drop_after_commit", "corrupt"]
MODES: Final = ("refuse", "delay", "http_500", "drop_after_commit", "corrupt")


@dataclass
class Fault:
    mode: FaultMode
    delay_ms: int = 0
    times: int | None = None  # None: every matching request
    hits: int = 0


class FaultBoard:
    """The faults currently armed, by path prefix (thread-safe; admin writes, requests read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}

    def set(self, path: str, fault: Fault) -> None:
        if fault.mode not in MODES:
            raise ValueError(f"fault mode must be one of {', '.join(MODES)}")
        if not path.startswith("/v1/"):
            raise ValueError("faults apply to protocol paths under /v1/")
        with self._lock:
            self._faults[path] = fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {p: asdict(f) for p, f in self._faults.items()}

    def take(self, path: str) -> Fault | None:
        with self._lock:
            matches = [p for p in self._faults if path == p or path.startswith(p.rstrip("/") + "/")]
            if not matches:
                return None
            prefix = max(matches, key=len)
            fault = self._faults[prefix]
            fault.hits += 1
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[prefix]
            return Fault(fault.mode, fault.delay_ms, None, fault.hits)


async def _cut(send: Send) -> bool:
    """Abort the TCP connection under `send` (uvicorn's cycle); False if not reachable."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    transport.abort()
    # Let the protocol see connection_lost, so uvicorn treats the cycle as disconnected
    # rather than as an application that forgot to answer.
    for _ in range(3):
        await asyncio.sleep(0)
    return True


class FaultInjector:
    def __init__(self, app: ASGIApp, board: FaultBoard) -> None:
        self.app = app
        self.board = board

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fault = self.board.take(str(scope.get("path", "")))
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.delay_ms:
            # Take the whole request in first, as a slow host that already received it would:
            # it is then processed even if the client has given up and disconnected.
            receive = await _buffered(receive)
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.mode == "delay":
            await self.app(scope, receive, send)
        elif fault.mode == "refuse":
            if not await _cut(send):
                await _plain(send, 503, "injected fault: connection refused")
        elif fault.mode == "http_500":
            await _plain(send, 500, "injected fault: internal server error")
        else:
            captured: list[Message] = []

            async def capture(message: Message) -> None:
                captured.append(message)

            await self.app(scope, receive, capture)
            if fault.mode == "drop_after_commit":
                if not await _cut(send):
                    # No transport to cut: promise more body than is sent, then stop.
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [(b"content-length", b"100000")],
                        }
                    )
                    raise ConnectionAbortedError("injected fault: response dropped")
                return
            for message in captured:
                if message["type"] == "http.response.body" and message.get("body"):
                    body = bytearray(message["body"])
                    for i in range(len(body) // 3, len(body), 7):
                        body[i] ^= 0x5A
                    message = {**message, "body": bytes(body)}
                await send(message)


async def _buffered(receive: Receive) -> Receive:
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # never: the application has read the whole body
        return {"type": "http.disconnect"}

    return replay


async def _plain(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"code": "injected_fault", "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
