"""Benchmarks for the signed acquirer protocol.

run() returns rows (name, median, unit):
  * authorisations per second the simulated host sustains over real HTTP on loopback, each
    request signed by the terminal, verified, decided and committed to SQLite (FULL sync);
  * the terminal's cost to sign one request (canonical string + SHA-256 + Ed25519);
  * the cost of one durable sequence number reservation (atomic replace + fsync).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from simulator.host import HostServer
from terminal.acquirer.client import AcquirerClient, AuthorisationRequest
from terminal.domain.signing import sign_request
from terminal.store.keys import Keystore, SequenceCounter

RUNS = 5
AUTHS_PER_RUN = 100
SIGNS_PER_RUN = 2000
RESERVATIONS_PER_RUN = 50


def _host_auths_per_second(workdir: Path) -> float:
    server = HostServer(workdir / "acquirer.sqlite3")
    server.start()
    ks = Keystore.create(workdir / "terminal", b"bench-device-secret-01", scrypt_n=2**10)
    seq = SequenceCounter(workdir / "terminal" / "sequence.json", block=64)
    client = AcquirerClient(server.url, ks, seq)
    try:
        import httpx

        code = httpx.post(server.url + "/admin/activation-codes", json={"merchant_id": "B1"})
        client.enrol(code.json()["code"])
        request = AuthorisationRequest(amount=1000, currency=826, pan="4761739001010010")
        client.authorise(request)  # warm up
        rates = []
        for _ in range(RUNS):
            start = time.perf_counter()
            for _ in range(AUTHS_PER_RUN):
                client.authorise(request)
            rates.append(AUTHS_PER_RUN / (time.perf_counter() - start))
        return statistics.median(rates)
    finally:
        client.close()
        seq.close()
        server.stop()


def _signing_microseconds(workdir: Path) -> float:
    ks = Keystore.create(workdir / "signer", b"bench-device-secret-02", scrypt_n=2**10)
    signer = ks.signer()
    body = b'{"amount":1000,"currency":826,"pan":"4761739001010010","emv":{}}' * 4
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for i in range(SIGNS_PER_RUN):
            sign_request(
                signer,
                method="POST",
                path="/v1/authorisations",
                terminal_id="T0001",
                seq=i,
                timestamp=1_700_000_000,
                idempotency_key=f"auth-{i}",
                body=body,
            )
        samples.append((time.perf_counter() - start) / SIGNS_PER_RUN * 1e6)
    return statistics.median(samples)


def _reservation_milliseconds(workdir: Path) -> float:
    samples = []
    with SequenceCounter(workdir / "seq-block1.json", block=1) as counter:
        for _ in range(RUNS):
            start = time.perf_counter()
            for _ in range(RESERVATIONS_PER_RUN):
                counter.next()
            samples.append((time.perf_counter() - start) / RESERVATIONS_PER_RUN * 1e3)
    return statistics.median(samples)


def run() -> list[tuple[str, float, str]]:
    with tempfile.TemporaryDirectory(prefix="pipos-bench-host-") as tmp:
        workdir = Path(tmp)
        return [
            (
                "host authorisations (signed, verified, stored)",
                _host_auths_per_second(workdir),
                "auth/s",
            ),
            ("terminal request signing", _signing_microseconds(workdir), "us/request"),
            (
                "durable sequence reservation (fsync)",
                _reservation_milliseconds(workdir),
                "ms/reservation",
            ),
        ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:50s} {value:12.2f} {unit}")
