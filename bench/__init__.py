"""Benchmarks: each `bench_*.py` module has `run() -> list[Row]`; `python -m bench` prints all."""
