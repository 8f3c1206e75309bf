"""The ISO 8583 link (docs/iso8583.md): the authorisation round trip and the offline backlog
drain, over TCP on loopback to the simulated host in its own process (`python -m
simulator.host --iso8583-port`, the JSON host beside it on the same ledger).

run() returns rows (name, median, unit):
  * one 0200 authorisation through :class:`Iso8583Link` (remembered in the link's memory and
    its STAN committed before it leaves, MAC'd, booked by the host in its SQLite ledger,
    answered, the answer kept): median ms per authorisation;
  * the floor under it, measured in the same run: the same framed bytes sent to a bare
    asyncio TCP server in its own process that echoes each frame back (socket, loopback,
    event loop: what no ISO 8583 host can go below), and the ratio of the two;
  * the pipos protocol's authorisation round trip to the same host process, for comparison;
  * the drain of 10,000 queued offline payments over ISO 8583 (one 0220 advice each, in
    order: total seconds and ms per payment), beside the pipos protocol's batched drain
    (batches of 500); each drain to a fresh host process (an empty ledger).

PIPOS_BENCH_ISO8583_N changes the number of payments drained (default 10,000).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.bench_queue import _payment
from bench.common import Row
from bench.fleet import ROOT, HostProcess, _env, _free_port
from offline_queue import Forwarder, OfflineQueue
from terminal.acquirer.client import AcquirerClient, AuthorisationRequest
from terminal.acquirer.iso8583.codec import encode_message, frame
from terminal.acquirer.iso8583.link import Iso8583Link, load_terminal_master_key, open_memory
from terminal.acquirer.iso8583.messages import CardData, Station, financial_request
from terminal.acquirer.iso8583.profile import default_profile
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink
from terminal.store.keys import Keystore, SequenceCounter
from terminal.store.link_counters import FILE as COUNTERS_FILE
from terminal.store.link_counters import LinkCounters

SECRET = b"bench-device-secret-iso8583-0123"
AUTHS = 200
ECHOES = 1000
REQUEST = AuthorisationRequest(amount=1000, currency=826, pan="4761739001010010", expiry="2812")


@dataclass
class _Terminal:
    """One provisioned terminal: enrolled over the pipos protocol, registered for ISO 8583,
    its TMK loaded; both links to the one host process."""

    keystore: Keystore
    client: AcquirerClient
    link: Iso8583Link


@contextmanager
def _terminal(directory: Path, host: HostProcess) -> Iterator[_Terminal]:
    from simulator.host.iso8583.keys import kif_kbpk

    assert host.iso8583_port is not None
    with ExitStack() as stack:
        keystore = Keystore.create(directory, SECRET, scrypt_n=2**10)
        sequence = stack.enter_context(SequenceCounter(directory / "sequence.json"))
        client = stack.enter_context(AcquirerClient(host.url, keystore, sequence))
        code = httpx.post(host.url + "/admin/activation-codes", json={"merchant_id": "B1"})
        client.enrol(str(code.json()["code"]))
        registered = httpx.post(
            host.url + "/admin/iso8583/terminals", json={"terminal_id": keystore.terminal_id}
        ).json()
        load_terminal_master_key(keystore, kif_kbpk(), str(registered["tmk_key_block"]))
        counters = LinkCounters(directory / COUNTERS_FILE)
        stack.callback(counters.close)
        memory = open_memory(directory, keystore)
        stack.callback(memory.close)
        link = Iso8583Link(
            "127.0.0.1",
            host.iso8583_port,
            station=Station(str(registered["tid"]), str(registered["mid"])),
            keystore=keystore,
            counters=counters,
            memory=memory,
            currency=826,
        )
        stack.callback(link.close)
        yield _Terminal(keystore, client, link)


def _median_ms(work: Callable[[], object], count: int) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


# --- the floor: a bare asyncio server that echoes each frame -------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            header = await reader.readexactly(2)
            body = await reader.readexactly(int.from_bytes(header, "big"))
            writer.write(header + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def echo_server(port: int) -> None:
    """`python -m bench.bench_iso8583 echo PORT`: serve until killed."""

    async def serve() -> None:
        # proto=IPPROTO_TCP: TCP_NODELAY on the accepted connections, as the ISO host has.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        server = await asyncio.start_server(_echo, sock=sock)
        print("READY", flush=True)
        await server.serve_forever()

    asyncio.run(serve())


@contextmanager
def _echo_process(port: int) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_iso8583", "echo", str(port)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError("the echo server did not start")
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _floor_ms(port: int, data: bytes) -> float:
    """Median ms to send `data` (one framed message) and read it back whole."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def round_trip() -> None:
            sock.sendall(data)
            left = len(data)
            while left:
                piece = sock.recv(left)
                if not piece:
                    raise RuntimeError("the echo server closed the connection")
                left -= len(piece)

        round_trip()
        return _median_ms(round_trip, ECHOES)


def _framed_0200(station: Station) -> bytes:
    """An 0200 as the link frames it for REQUEST (a MAC under a stand-in key: the same
    length, the same bytes on the wire but eight)."""
    request = financial_request(
        "purchase",
        station=station,
        stan=1,
        now=datetime.now(UTC),
        amount=REQUEST.amount,
        currency=REQUEST.currency,
        card=CardData(pan=REQUEST.pan, expiry_yymm=REQUEST.expiry or ""),
    )
    profile = default_profile()
    return frame(profile, encode_message(profile, request.mti, request.fields, bytes(16)))


# --- the drain ---------------------------------------------------------------------------


@contextmanager
def _host_and_terminal(directory: Path) -> Iterator[_Terminal]:
    """A fresh host process (an empty ledger) and a terminal provisioned on it."""
    directory.mkdir()
    host = HostProcess(directory / "acquirer.sqlite3", _free_port(), _free_port())
    host.start()
    try:
        with _terminal(directory / "terminal", host) as terminal:
            yield terminal
    finally:
        host.kill()


def _drain(directory: Path, n: int, protocol: str) -> float:
    """Seconds to drain `n` queued payments to a fresh host: over ISO 8583 (one 0220 each,
    the forwarder's batches of 100 sent item by item) or the pipos protocol (batches of
    500, one request each)."""
    with _host_and_terminal(directory) as terminal:
        link = terminal.link if protocol == "iso8583" else terminal.client
        if protocol == "iso8583":
            terminal.link.echo_test()  # key exchange and sign-on: not what is measured
        key = terminal.keystore.data_key(QUEUE_KEY_PURPOSE)
        with OfflineQueue.open(directory / "queue.sqlite3", key) as q:
            # Filling is not what is measured: skip the per-row fsync for the setup only.
            q._db.execute("PRAGMA synchronous = OFF")
            for i in range(n):
                q.enqueue(_payment(i, f"{protocol}-", terminal.keystore))
            q._db.execute("PRAGMA synchronous = FULL")
            size = 100 if protocol == "iso8583" else 500
            forwarder = Forwarder(q, AcquirerUplink(link), batch_size=size)
            start = time.perf_counter()
            report = forwarder.sync(max_failures=3)
            elapsed = time.perf_counter() - start
            if report.accepted + report.declined != n:
                raise RuntimeError(f"drain incomplete: {report}")
    return elapsed


def run() -> list[Row]:
    n = int(os.environ.get("PIPOS_BENCH_ISO8583_N", "10000"))
    with tempfile.TemporaryDirectory(prefix="pipos-bench-iso8583-") as tmp:
        base = Path(tmp)
        with _host_and_terminal(base / "round-trip") as terminal:
            terminal.link.authorise(REQUEST)  # key exchange and sign-on, then a warm sale
            iso_ms = _median_ms(lambda: terminal.link.authorise(REQUEST), AUTHS)
            terminal.client.authorise(REQUEST)
            pipos_ms = _median_ms(lambda: terminal.client.authorise(REQUEST), AUTHS)
            echo_port = _free_port()
            with _echo_process(echo_port):
                floor_ms = _floor_ms(echo_port, _framed_0200(terminal.link.station))
        iso_drain = _drain(base / "iso-drain", n, "iso8583")
        pipos_drain = _drain(base / "pipos-drain", n, "pipos")
    return [
        ("ISO 8583 authorisation round trip (0200/0210, host process)", iso_ms, "ms"),
        ("  floor: the same frame echoed by a bare asyncio server", floor_ms, "ms"),
        ("  round trip / floor", iso_ms / floor_ms, "x"),
        ("pipos protocol authorisation round trip, same host", pipos_ms, "ms"),
        (f"drain {n:,} payments over ISO 8583, one 0220 each", iso_drain, "s"),
        ("  per payment", iso_drain / n * 1e3, "ms"),
        (f"drain {n:,} payments over the pipos protocol, batches of 500", pipos_drain, "s"),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["echo"]:
        echo_server(int(sys.argv[2]))
    else:
        for label, value, unit in run():
            print(f"{label:<62} {value:>10.3f} {unit}")
