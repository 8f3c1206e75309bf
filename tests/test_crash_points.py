"""A crash at every commit point (issue 14 item 5).

Each operation at the counter (a sale approved online, a sale approved offline into the
queue, a scanned consumer-presented code, a full refund, two partial refunds, a refund whose
answer the host loses after committing it, a refund sent twice with one Idempotency-Key, a
void, a sync of the offline queue, an end of
day) and the terminal's first start (keystore, enrolment, new files) is run once to count
its durable writes: every SQLite commit of the terminal process (journal, offline queue) and
every durable file write (keystore and sequence counter by atomic replace, audit log by
append). Then, for each of those points in turn, the terminal process SIGKILLs itself just
before it and just after it; a terminal started again on the same files recovers, syncs once,
the merchant asks again for what was never confirmed, and the invariants are checked:

1. every payment the terminal showed approved (or approved offline) is exactly once in the
   offline queue or in the host's ledger, and the host holds no payment the terminal does
   not record as approved;
2. the refunded amount (and voided flag) of every sale is what the host moved;
3. nothing is left in progress, sending, outstanding or owed (a reversal).

Real components: the simulated acquirer in its own process (real uvicorn and SQLite ledger,
it outlives every kill), terminals forked from a pre-imported zygote running the real demo
stack (journal, offline queue, keystore, local HTTP API on 127.0.0.1) driven over HTTP like
a cash register. Crash injection wraps ``sqlite3.connect``, ``os.replace/open/write/fsync``
and sockets, nothing of the terminal (tests/crash_child.py; driver in tests/crash_harness.py).

A kill just after point k that leaves the same files and the same host as a kill just before
point k+1 (nothing went out to another process in between) is run once, as the latter.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash_harness import OPERATIONS, ROOT, Coverage, Worker, every_point, workers

#: What each operation must write at least (the harness sees these files' writes, or it
#: would count nothing and crash nowhere).
MUST_WRITE: dict[str, set[str]] = {
    "sale_online": {"journal.sqlite3"},
    "sale_offline": {"journal.sqlite3", "offline_queue.sqlite3"},
    "code_payment": {"journal.sqlite3"},
    "refund_full": {"journal.sqlite3", "audit.log"},
    "refund_partial": {"journal.sqlite3", "audit.log"},
    "refund_lost_answer": {"journal.sqlite3", "audit.log"},
    "refund_idempotent": {"journal.sqlite3", "audit.log", "idempotency.sqlite3"},
    "void": {"journal.sqlite3", "audit.log"},
    "sync": {"offline_queue.sqlite3", "journal.sqlite3", "sequence.json"},
    "end_of_day": {"offline_queue.sqlite3", "journal.sqlite3"},
    "acknowledge_decline": {"journal.sqlite3", "audit.log"},
    "first_start": {"keystore.json", "sequence.json", "offline_queue.sqlite3", "journal.sqlite3"},
}

_REPORT: list[tuple[str, Coverage, float]] = []


@pytest.fixture(scope="module")
def pool(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[list[Worker]]:
    started = time.monotonic()
    with workers(ROOT, tmp_path_factory.mktemp("crash-points")) as running:
        yield running
    # The report of every point and trial, on the terminal even under -q (outside capture).
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and _REPORT:
        with capture.global_and_fixture_disabled():
            for line in _report(time.monotonic() - started):
                reporter.write_line(line)


def _report(seconds: float) -> list[str]:
    points = sum(len(c.points) for _, c, _ in _REPORT)
    trials = sum(len(c.trials) + 1 for _, c, _ in _REPORT)
    lines = [
        "",
        f"crash points: {points} durable write points in {len(_REPORT)} operations, "
        f"{trials} trials (one uncrashed run per operation), {seconds:.1f} s",
    ]
    for name, coverage, took in _REPORT:
        lines.append(
            f"  {name}: {len(coverage.points)} points, {len(coverage.trials)} crashes, {took:.1f} s"
        )
        by_point = {(o.point, o.mode): o for o in coverage.trials}
        for point in coverage.points:
            kills = []
            for mode in ("before", "after"):
                outcome = by_point.get((point["index"], mode))
                if outcome is not None:
                    kills.append(f"{mode}:{'ok' if not outcome.violations else 'BROKEN'}")
                elif mode == "after" and point["index"] in coverage.same_as_next:
                    kills.append("after:=before next")
            lines.append(f"    #{point['index']} {point['name']}  [{' '.join(kills)}]")
    return lines


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_crash_at_every_durable_write_loses_and_doubles_nothing(
    operation: str, pool: list[Worker], tmp_path: Path
) -> None:
    started = time.monotonic()
    coverage = every_point(OPERATIONS[operation], tmp_path, pool)
    _REPORT.append((operation, coverage, time.monotonic() - started))

    # The uncrashed run holds the invariants, and wrote what the operation must write.
    assert coverage.counted.violations == []
    assert MUST_WRITE[operation] <= {p["file"] for p in coverage.points}, coverage.points
    # Every point was crashed at, before and after (an "after" equal to the next "before"
    # counts as that one), and every crash was a SIGKILL at the point named.
    planned = {(o.point, o.mode) for o in coverage.trials}
    for point in coverage.points:
        assert (point["index"], "before") in planned
        assert (point["index"], "after") in planned or point["index"] in coverage.same_as_next
    assert all(o.killed_by == signal.SIGKILL for o in coverage.trials), [
        (o.label, o.killed_by) for o in coverage.trials
    ]

    broken = {o.label: o.violations for o in coverage.trials if o.violations}
    assert broken == {}
