"""Tools that force the checkout page's answers and events into a chosen order.

* :class:`StreamHold`: a loopback TCP proxy between the browser and the terminal API that
  can hold back what the server sends on the live-update stream (``GET /api/v1/events``)
  while every other request passes: the event stream arrives late, as on a slow network.
* :class:`HeldRequests`: Playwright routes that keep one kind of API request waiting; the
  test sends it to the terminal (``route.fetch()``) and hands the answer to the page when
  it chooses (``route.fulfill()``): the answer arrives late.
* :data:`RECORDER`: an init script that records, in the page, every screen it shows
  (``window.__screens``), how many answers to each request it has finished handling
  (``window.__handled["POST /api/v1/sales"]``) and the id of the last event it has handled
  (``window.__lastEventId``). A count goes up on the task after the page's own code ran, so
  a test that waits for it knows the page has rendered what it got: no sleeps.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any

RECORDER = """
(() => {
  window.__screens = [];
  window.__handled = {};
  window.__lastEventId = 0;
  const realFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const response = await realFetch(input, init);
    const method = ((init && init.method) || "GET").toUpperCase();
    const key = method + " " + new URL(String(input), location.href).pathname;
    for (const reader of ["json", "text"]) {
      const read = response[reader].bind(response);
      response[reader] = async () => {
        const body = await read();
        setTimeout(() => { window.__handled[key] = (window.__handled[key] || 0) + 1; }, 0);
        return body;
      };
    }
    return response;
  };
  const RealEventSource = window.EventSource;
  window.EventSource = function (url, options) {
    const source = new RealEventSource(url, options);
    for (const type of ["transaction", "status"]) {
      source.addEventListener(type, (event) => {
        const id = Number(event.lastEventId || 0);
        setTimeout(() => { window.__lastEventId = Math.max(window.__lastEventId, id); }, 0);
      });
    }
    return source;
  };
  const record = () => {
    const shown = [...document.querySelectorAll(".view")].find(
      (view) => !view.classList.contains("hidden"));
    const name = shown ? shown.id.replace("view-", "") : "";
    if (window.__screens[window.__screens.length - 1] !== name) window.__screens.push(name);
  };
  document.addEventListener("DOMContentLoaded", () => {
    record();
    new MutationObserver(record).observe(document.body,
      { subtree: true, attributes: true, attributeFilter: ["class"] });
  });
})();
"""


class StreamHold:
    """A TCP proxy on 127.0.0.1 in front of `target` ("http://127.0.0.1:PORT").

    ``hold()`` keeps back every byte the server sends on event-stream connections (those
    whose request is ``GET /api/v1/events``) until ``release()``; nothing is lost or
    reordered, only delayed. Other connections always pass at once.
    """

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so that close() ends the accept loop at once
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._released = threading.Event()
        self._released.set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, name="stream-hold", daemon=True)
        accept.start()
        self._threads.append(accept)

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._stop.set()
        self._released.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            server = socket.create_connection(self._target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            pump = threading.Thread(
                target=self._pump, args=(client, server), name="stream-hold-pump", daemon=True
            )
            pump.start()
            self._threads.append(pump)

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        is_stream = False
        held = b""
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.05)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    is_stream = is_stream or data.startswith(b"GET /api/v1/events")
                    server.sendall(data)
                if server in ready:
                    data = server.recv(65536)
                    if not data:
                        if held:
                            self._released.wait()
                            client.sendall(held)
                        return
                    held += data
                if held and (not is_stream or self._released.is_set()):
                    client.sendall(held)
                    held = b""
        except OSError:
            return
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.close()


class HeldRequest:
    """One request the page sent and the test holds: ``send()`` passes it to the terminal
    and keeps the answer; ``answer()`` hands that answer to the page."""

    def __init__(self, route: Any) -> None:
        self._route = route
        self._response: Any = None

    def send(self) -> None:
        # Playwright sends it from outside the browser's network stack, without the Fetch
        # Metadata headers Chromium adds to the page's own requests; the terminal accepts the
        # page's cookie only with them, so they are sent as the browser would have.
        headers = {**self._route.request.headers, "sec-fetch-site": "same-origin"}
        self._response = self._route.fetch(headers=headers)

    def answer(self) -> None:
        if self._response is None:
            self.send()
        self._route.fulfill(response=self._response)


class HeldRequests:
    """Keeps the page's `method` requests to `path` waiting, for the test to answer."""

    def __init__(self, page: Any, method: str, path: str) -> None:
        self._page = page
        self._method = method
        self._pattern = "**" + path
        self._waiting: list[HeldRequest] = []
        page.route(self._pattern, self._handle)

    def _handle(self, route: Any) -> None:
        if route.request.method == self._method:
            self._waiting.append(HeldRequest(route))
        else:
            route.continue_()

    def next(self, timeout: float = 10.0) -> HeldRequest:
        """The next held request (pumping the browser's events while it comes)."""
        deadline = time.monotonic() + timeout
        while not self._waiting:
            if time.monotonic() > deadline:
                raise AssertionError(f"the page sent no {self._method} {self._pattern}")
            self._page.wait_for_timeout(10)
        return self._waiting.pop(0)

    def stop(self) -> None:
        self._page.unroute(self._pattern, self._handle)
