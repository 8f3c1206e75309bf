"""Terminal memory: the resident size of one terminal process while it sells.

The process is a fleet terminal (bench/fleet.py): the same assembly as `pipos run`
(keystore, acquirer client, journal, offline queue, forwarder, checkout, virtual cards) selling
in a loop against the simulated host in its own process. Reported after a few seconds of
sales: current RSS and the peak (VmHWM), sampled from /proc.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Row
from bench.fleet import FleetConfig, HostProcess, TerminalProcess, _free_port, _provision

SELL_SECONDS = 4.0


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="pipos-bench-memory-") as tmp:
        base = Path(tmp)
        host = HostProcess(base / "acquirer.sqlite3", _free_port())
        host.start()
        try:
            _provision(base / "terminal", host, 0)
            terminal = TerminalProcess(0, base / "terminal", host.url, FleetConfig())
            terminal.start()
            try:
                time.sleep(SELL_SECONDS)
                assert terminal.proc is not None
                pid = terminal.proc.pid
                rss, peak = _status_kib(pid, "VmRSS"), _status_kib(pid, "VmHWM")
                sales = len(terminal.log.sales)
            finally:
                terminal.kill()
        finally:
            host.kill()
    if not sales:
        raise RuntimeError("the terminal made no sales")
    return [
        (f"terminal process RSS while selling ({sales} sales)", rss / 1024, "MiB"),
        ("terminal process peak RSS (VmHWM)", peak / 1024, "MiB"),
    ]


if __name__ == "__main__":
    for label, value, unit in run():
        print(f"{label:<50} {value:>10.1f} {unit}")
