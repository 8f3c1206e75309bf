"""The simulated acquirer going down and coming back on its own address
(`HostServer.stop_listening()` / `listen_again()`), over real sockets on 127.0.0.1: refused
while down, as a host that is down is refused, answering after, its ledger kept."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from simulator.errors import SimulatorError
from simulator.host import HostServer
from terminal.acquirer.client import AuthorisationRequest, AuthOutcome, HostUnreachable
from tests.conftest_host import AcquirerTerminal, HostHandle, card_emv

pytestmark = pytest.mark.integration

VISA = "4761739001010010"  # the virtual Visa, whose issuer key the host holds


def _purchase(amount: int) -> AuthorisationRequest:
    emv, psn = card_emv(VISA, amount)
    return AuthorisationRequest(
        amount=amount, currency=826, pan=VISA, brand="visa", emv=emv, pan_sequence=psn
    )


def _address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    assert parsed.hostname is not None
    assert parsed.port is not None
    return parsed.hostname, parsed.port


def _connect(url: str) -> None:
    """A bare TCP connect to the host's address (raises ConnectionRefusedError when down)."""
    with socket.create_connection(_address(url), timeout=5):
        pass


def _host_threads() -> int:
    """How many host servers run in this process (the session's host may be one of them)."""
    return sum(t.name == "acquirer-host" for t in threading.enumerate())


def test_a_host_down_refuses_connections_and_comes_back_with_its_ledger(
    acquirer_terminal: AcquirerTerminal,
) -> None:
    client, host = acquirer_terminal.client, acquirer_terminal.host
    assert host.server is not None
    server = host.server
    url = server.url
    running = _host_threads()
    assert client.authorise(_purchase(1000)).outcome is AuthOutcome.APPROVED
    assert server.listening is True

    server.stop_listening()
    assert server.listening is False
    with pytest.raises(ConnectionRefusedError):
        _connect(url)
    with pytest.raises(HostUnreachable):  # what a terminal sees: the bank cannot be reached
        client.authorise(_purchase(1100))
    server.stop_listening()  # again: nothing changes
    with pytest.raises(ConnectionRefusedError):
        _connect(url)

    # Back on the same address (port 0 picked it at start), the same app and ledger.
    assert server.listen_again() == url
    assert server.listen_again() == url  # listening already: nothing to do
    assert server.listening is True
    assert _host_threads() == running
    assert [(r["amount"], r["status"]) for r in host.ledger()] == [(1000, "approved")]
    assert client.authorise(_purchase(1200)).outcome is AuthOutcome.APPROVED
    assert sorted(r["amount"] for r in host.ledger()) == [1000, 1200]

    # Down and up once more: the address is still free to bind (no TIME_WAIT trouble).
    server.stop_listening()
    assert server.listen_again() == url
    assert client.authorise(_purchase(1300)).outcome is AuthOutcome.APPROVED
    assert len(host.ledger()) == 3


def test_open_keep_alive_connections_are_closed_when_the_host_goes_down(
    acquirer_host: HostHandle,
) -> None:
    assert acquirer_host.server is not None
    server = acquirer_host.server
    with httpx.Client(base_url=server.url, timeout=5) as http:
        assert http.get("/v1/host-key").status_code == 200  # a pooled, open connection
        server.stop_listening()
        # Not answered over the old connection: a host that is down answers nothing.
        with pytest.raises(httpx.ConnectError):
            http.get("/v1/host-key")
        server.listen_again()
        assert http.get("/v1/host-key").status_code == 200


def test_a_request_in_flight_is_cut_after_the_grace_time(acquirer_host: HostHandle) -> None:
    assert acquirer_host.server is not None
    server = acquirer_host.server
    # Armed for every request (one that fires once is gone from the board once taken).
    acquirer_host.set_fault("/v1/host-key", "delay", delay_ms=20_000)
    outcome: list[Any] = []

    def slow_request() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                outcome.append(http.get("/v1/host-key"))
        except httpx.TransportError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 10
    while acquirer_host.faults().get("/v1/host-key", {}).get("hits", 0) == 0:
        assert time.monotonic() < deadline, "the slow request never reached the host"
        time.sleep(0.02)

    started = time.monotonic()
    server.stop_listening(timeout=0.3)
    assert time.monotonic() - started < 5  # not the 20 s the handler would take
    worker.join(5)
    assert not worker.is_alive(), "the client was left waiting on a cut connection"
    [cut] = outcome
    assert isinstance(cut, httpx.TransportError)
    with pytest.raises(ConnectionRefusedError):
        _connect(server.url)
    server.listen_again()
    assert acquirer_host.faults()["/v1/host-key"]["mode"] == "delay"  # the host kept its faults
    acquirer_host.clear_faults()
    assert acquirer_host.http.get("/v1/host-key").status_code == 200


def test_stop_ends_the_host_listening_or_not(tmp_path: Path) -> None:
    running = _host_threads()
    listening = HostServer(tmp_path / "a.sqlite3")
    url = listening.start()
    listening.stop()
    with pytest.raises(ConnectionRefusedError):
        _connect(url)
    listening.stop()  # twice: nothing more to do

    down = HostServer(tmp_path / "b.sqlite3")
    url = down.start()
    down.stop_listening()
    down.stop()
    with pytest.raises(ConnectionRefusedError):
        _connect(url)
    down.stop_listening()  # ended: left as it is
    with pytest.raises(SimulatorError, match="was stopped"):
        down.listen_again()
    assert _host_threads() == running


def test_listen_again_needs_a_started_host(tmp_path: Path) -> None:
    server = HostServer(tmp_path / "acquirer.sqlite3")
    try:
        with pytest.raises(SimulatorError, match="never started"):
            server.listen_again()
        server.stop_listening()  # not listening: nothing to do
    finally:
        server.stop()


def test_the_address_taken_meanwhile_is_a_clear_error(acquirer_host: HostHandle) -> None:
    assert acquirer_host.server is not None
    server = acquirer_host.server
    server.stop_listening()
    squatter = socket.socket()
    try:
        squatter.bind(_address(server.url))
        squatter.listen()
        with pytest.raises(SimulatorError, match=r"cannot listen on 127\.0\.0\.1:"):
            server.listen_again()
        assert server.listening is False
    finally:
        squatter.close()
    assert server.listen_again() == acquirer_host.url
    assert acquirer_host.http.get("/v1/host-key").status_code == 200


def test_calls_from_many_threads_at_once_leave_one_consistent_server(
    acquirer_host: HostHandle,
) -> None:
    assert acquirer_host.server is not None
    server = acquirer_host.server
    running = _host_threads()
    errors: list[BaseException] = []

    def toggle(index: int) -> None:
        try:
            for _ in range(3):
                if index % 2:
                    server.stop_listening()
                else:
                    server.listen_again()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=toggle, args=(i,)) for i in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    server.listen_again()
    assert _host_threads() == running
    assert acquirer_host.http.get("/v1/host-key").status_code == 200
    server.stop_listening()
    assert _host_threads() == running - 1
    with pytest.raises(ConnectionRefusedError):
        _connect(server.url)
