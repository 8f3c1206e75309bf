"""The long chaos run: a fleet of terminal processes against one simulated host, with an
outage, injected faults and random SIGKILLs; reconciled at the end (bench/fleet.py).

Reports the counts (lost + duplicated + unexplained must be 0, or the bench fails), how long
the outage's backlog took to drain while the fleet kept selling, and how the terminals' first
uploads after the outage were spread by the forwarder's jittered backoff.
PIPOS_BENCH_FLEET_TERMINALS / PIPOS_BENCH_FLEET_SECONDS change the size (default 8 / 60);
PIPOS_BENCH_FLEET_PROTOCOL the money messages' link: pipos (default) or iso8583 (`python -m
bench fleet --protocol iso8583` sets it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import Row
from bench.fleet import FleetConfig, run_fleet, summary_rows


def run() -> list[Row]:
    seconds = float(os.environ.get("PIPOS_BENCH_FLEET_SECONDS", "60"))
    cfg = FleetConfig(
        terminals=int(os.environ.get("PIPOS_BENCH_FLEET_TERMINALS", "8")),
        duration=seconds,
        outage_at=seconds * 0.25,
        outage_for=seconds * 0.25,
        kill_every=2.0,
        fault_every=0.5,
        background_interval=1.0,
        seed=20240613,
        protocol=os.environ.get("PIPOS_BENCH_FLEET_PROTOCOL", "pipos"),
    )
    with tempfile.TemporaryDirectory(prefix="pipos-bench-fleet-") as tmp:
        report = run_fleet(Path(tmp), cfg)
    print(report.summary())
    if report.problems():
        raise RuntimeError("fleet run did not reconcile: " + "; ".join(report.problems()))
    return summary_rows(report)


if __name__ == "__main__":
    for label, value, unit in run():
        print(f"{label:<55} {value:>10.3f} {unit}")
