"""Offline queue: durable enqueue latency, and draining 10,000 payments to the simulated host.

Enqueue runs with the production settings (WAL, synchronous=FULL: one fsync per payment) on a
real file in a temporary directory. The drains go over real HTTP on loopback to the simulated
acquirer (uvicorn + SQLite), signed and idempotent, once in batches and once one request per
payment. PIPOS_BENCH_QUEUE_N changes the number of payments drained (default 10,000).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import Row
from emv.pan import mask_pan
from offline_queue import CardData, Forwarder, OfflinePayment, OfflineQueue
from simulator.host import HostServer
from terminal.acquirer.client import AcquirerClient
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink
from terminal.domain.signing import offline_record
from terminal.store.keys import Keystore, SequenceCounter

SECRET = b"bench-device-secret-0123456789"


def _payment(i: int, prefix: str, keystore: Keystore | None = None) -> OfflinePayment:
    """A queued payment; with `keystore`, signed as the checkout signs what it approved offline
    (the host refuses unsigned records)."""
    pan = f"47617390{i:08d}"
    payment = OfflinePayment(
        transaction_id=f"{prefix}{i}",
        amount=1000 + i % 4000,
        currency=978,
        card=CardData(pan=pan, pan_sequence=1, expiry="2812"),
        captured_at=1_700_000_000 + i,
        emv={"9F27": "40", "9F26": "0102030405060708", "9F36": "0001", "95": "0000000000"},
        brand="visa",
        aid="A0000000031010",
    )
    if keystore is None:
        return payment
    record = offline_record(
        transaction_id=payment.transaction_id,
        terminal_id=keystore.terminal_id or "",
        amount=payment.amount,
        currency=payment.currency,
        captured_at=payment.captured_at,
        masked_pan=mask_pan(pan),
        aid=payment.aid or "",
        cryptogram=payment.emv["9F26"],
        atc=payment.emv["9F36"],
    )
    return replace(
        payment, signed_record=record, signature=keystore.sign(record), key_id=keystore.key_id
    )


def enqueue_latencies(directory: Path, count: int = 300) -> list[float]:
    """Seconds per durable enqueue (commit + fsync of the WAL), one sample per payment."""
    key = bytes(range(32))
    samples = []
    with OfflineQueue.open(directory / "latency.sqlite3", key) as q:
        for i in range(count):
            p = _payment(i, "lat-")
            start = time.perf_counter()
            q.enqueue(p)
            samples.append(time.perf_counter() - start)
    return samples


def _drain(directory: Path, n: int, batch_size: int) -> float:
    """Seconds to drain `n` queued payments to a fresh simulated host."""
    directory.mkdir()
    with HostServer(directory / "acquirer.sqlite3") as server:
        import httpx

        code = httpx.post(f"{server.url}/admin/activation-codes", json={"merchant_id": "M1"})
        ks = Keystore.create(directory / "terminal", SECRET, scrypt_n=2**10)
        seq = SequenceCounter(directory / "terminal" / "sequence.json")
        with AcquirerClient(server.url, ks, seq) as client:
            client.enrol(str(code.json()["code"]))
            with OfflineQueue.open(
                directory / "queue.sqlite3", ks.data_key(QUEUE_KEY_PURPOSE)
            ) as q:
                # Filling is not what is measured: skip the per-row fsync for the setup only.
                q._db.execute("PRAGMA synchronous = OFF")
                for i in range(n):
                    q.enqueue(_payment(i, f"b{batch_size}-", ks))
                q._db.execute("PRAGMA synchronous = FULL")
                forwarder = Forwarder(q, AcquirerUplink(client), batch_size=batch_size)
                start = time.perf_counter()
                report = forwarder.sync(max_failures=3)
                elapsed = time.perf_counter() - start
                if report.accepted + report.declined != n:
                    raise RuntimeError(f"drain incomplete: {report}")
        seq.close()
    return elapsed


def run() -> list[Row]:
    n = int(os.environ.get("PIPOS_BENCH_QUEUE_N", "10000"))
    with tempfile.TemporaryDirectory(prefix="pipos-bench-queue-") as tmp:
        base = Path(tmp)
        lat = enqueue_latencies(base)
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        batched = _drain(base / "batched", n, batch_size=500)
        single = _drain(base / "single", n, batch_size=1)
    return [
        ("durable enqueue (WAL, synchronous=FULL), median", statistics.median(lat) * 1e3, "ms"),
        ("durable enqueue (WAL, synchronous=FULL), p99", p99 * 1e3, "ms"),
        (f"drain {n:,} payments to host, batches of 500", batched, "s"),
        (f"drain {n:,} payments to host, 1 request each", single, "s"),
        ("drain speed-up from batching", single / batched, "x"),
    ]


if __name__ == "__main__":
    for label, value, unit in run():
        print(f"{label:<55} {value:>10.3f} {unit}")
