"""CLI start time: how long a technician waits for `pipos` to answer, as separate processes.

Medians of full process runs (interpreter start, imports, work, exit) of `pipos --help` and
of `pipos emv decode HEX`, the command that needs the EMV data layer. Runs the console script
installed next to this interpreter, falling back to `python -m terminal.cli`.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Row

RUNS = 11
#: A Visa FCI (SELECT answer), as `pipos emv decode` shows it to a technician.
FCI = "6F1A840E325041592E5359532E4444463031A508880102" + "5F2D02656E"


def _command() -> list[str]:
    script = Path(sys.executable).with_name("pipos")
    if script.exists():
        return [str(script)]
    found = shutil.which("pipos")
    return [found] if found else [sys.executable, "-m", "terminal.cli"]


def _median_run(argv: list[str]) -> float:
    samples = []
    subprocess.run(argv, capture_output=True, check=True)  # warm the page cache
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run() -> list[Row]:
    pipos = _command()
    return [
        ("CLI start: pipos --help (process run)", _median_run([*pipos, "--help"]) * 1e3, "ms"),
        (
            "CLI start: pipos emv decode FCI (process run)",
            _median_run([*pipos, "emv", "decode", FCI]) * 1e3,
            "ms",
        ),
        (
            "python interpreter alone (baseline)",
            _median_run([sys.executable, "-c", "pass"]) * 1e3,
            "ms",
        ),
    ]


if __name__ == "__main__":
    for label, value, unit in run():
        print(f"{label:<50} {value:>10.1f} {unit}")
