"""Checkout latency: from "card presented" to "result on the API", with a virtual card and
the simulated acquirer on loopback; and the terminal process's memory (RSS)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx

from terminal.api.stack import start_demo_stack

from .common import Row


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run() -> list[Row]:
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pipos-bench-") as tmp:
        stack = start_demo_stack(tmp, scrypt_n=2**12, background=False)
        try:
            with httpx.Client(
                base_url=stack.api.url,
                headers={"Authorization": f"Bearer {stack.token}"},
                timeout=30,
            ) as api:
                for i in range(25):
                    txn = api.post("/api/v1/sales", json={"amount": 100 + i, "currency": 978})
                    txn_id = txn.json()["id"]
                    start = time.perf_counter()
                    api.post("/api/v1/simulator/present", json={"card": "visa"})
                    while True:  # the register's view: poll the API until the result is there
                        state = api.get(f"/api/v1/transactions/{txn_id}").json()["state"]
                        if state != "in_progress":
                            break
                    samples.append(time.perf_counter() - start)
            rss = _rss_mib()
        finally:
            stack.close()
    warm = samples[3:]  # the first sales pay for imports and connection set-up
    return [
        ("checkout: card presented -> result on API (median)", statistics.median(warm) * 1e3, "ms"),
        ("checkout: card presented -> result on API (max)", max(warm) * 1e3, "ms"),
        ("checkout: terminal process RSS (with simulated host in-process)", rss, "MiB"),
    ]
