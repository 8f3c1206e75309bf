"""Run every harness in turn for the same budget: python fuzz/fuzz_all.py -max_total_time=60."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = sorted(p for p in HERE.glob("fuzz_*.py") if p.name != "fuzz_all.py")

if __name__ == "__main__":
    failed = []
    for harness in HARNESSES:
        print(f"== {harness.name}", flush=True)
        argv = [sys.executable, str(harness), *sys.argv[1:]]
        if subprocess.run(argv, check=False).returncode:  # noqa: S603 - our own harnesses
            failed.append(harness.name)
    print("failed:", ", ".join(failed) if failed else "none")
    sys.exit(1 if failed else 0)
