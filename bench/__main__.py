"""Run every benchmark module and print one table of medians, with the machine it ran on.

Usage: python -m bench [--markdown] [--protocol pipos|iso8583] [NAME ...]
(NAME filters modules, e.g. `tlv`)

``--markdown`` prints the same table as Markdown, ready for the README. ``--protocol`` is the
fleet run's link for the money messages (bench_fleet: `python -m bench fleet --protocol
iso8583`; the pipos protocol by default).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import sys
import traceback
from pathlib import Path

from bench.common import Row


def _modules(filters: list[str]) -> list[str]:
    names = sorted(
        info.name
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if info.name.startswith("bench_")
    )
    if filters:
        names = [name for name in names if any(f in name for f in filters)]
    return names


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; the platform's guess elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
            return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """One line naming the machine: CPU model, cores, OS and architecture, Python."""
    return (
        f"{cpu_model()}, {os.cpu_count() or '?'} cores, {platform.system()} "
        f"{platform.release()} {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def _shown(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or float(value).is_integer() else f"{value:,.3f}"


def text_table(rows: list[tuple[str, Row]], where: str) -> str:
    width = max((len(row[0]) for _, row in rows), default=10)
    lines = [
        f"machine: {where}",
        f"{'area':<10} {'benchmark':<{width}} {'median':>14}  unit",
        "-" * (width + 40),
    ]
    for area, (label, value, unit) in rows:
        lines.append(f"{area:<10} {label:<{width}} {_shown(value):>14}  {unit}")
    return "\n".join(lines)


def markdown_table(rows: list[tuple[str, Row]], where: str) -> str:
    lines = [
        f"Measured on {where}.",
        "",
        "| area | benchmark | median | unit |",
        "|---|---|---:|---|",
    ]
    for area, (label, value, unit) in rows:
        cell = label.replace("|", "\\|")
        lines.append(f"| {area} | {cell} | {_shown(value)} | {unit} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    markdown = "--markdown" in argv
    filters = [a for a in argv if a != "--markdown"]
    if "--protocol" in filters:
        at = filters.index("--protocol")
        if at + 1 >= len(filters):
            print("bench: --protocol needs pipos or iso8583", file=sys.stderr)
            return 2
        # Read by bench_fleet.run(), as its other settings are (PIPOS_BENCH_FLEET_*).
        os.environ["PIPOS_BENCH_FLEET_PROTOCOL"] = filters[at + 1]
        del filters[at : at + 2]
    rows: list[tuple[str, Row]] = []
    failed = 0
    for name in _modules(filters):
        try:
            module = importlib.import_module(f"bench.{name}")
            for row in module.run():
                rows.append((name.removeprefix("bench_"), row))
        except Exception:
            failed += 1
            print(f"bench: {name} failed:", file=sys.stderr)
            traceback.print_exc()
    where = machine()
    print(markdown_table(rows, where) if markdown else text_table(rows, where))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
