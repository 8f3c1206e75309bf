"""Run every benchmark module and print one table of medians.

Usage: python -m bench [NAME ...]   (NAME filters modules, e.g. `tlv`)
"""

from __future__ import annotations

import importlib
import pkgutil
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


def main(argv: list[str]) -> int:
    rows: list[tuple[str, Row]] = []
    failed = 0
    for name in _modules(argv):
        module = importlib.import_module(f"bench.{name}")
        try:
            for row in module.run():
                rows.append((name.removeprefix("bench_"), row))
        except Exception:
            failed += 1
            print(f"bench: {name} failed:", file=sys.stderr)
            traceback.print_exc()
    width = max((len(row[0]) for _, row in rows), default=10)
    print(f"{'area':<10} {'benchmark':<{width}} {'median':>14}  unit")
    print("-" * (width + 40))
    for area, (label, value, unit) in rows:
        shown = f"{value:,.0f}" if value >= 100 else f"{value:,.3f}"
        print(f"{area:<10} {label:<{width}} {shown:>14}  {unit}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
