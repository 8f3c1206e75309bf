"""The ISO 8583 link's STAN and batch counters: never the same number twice, across
threads, processes, restarts and a SIGKILL; back to 1 after the maximum."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from terminal.store.link_counters import BATCH, STAN, LinkCounterError, LinkCounters

REPO = Path(__file__).resolve().parents[3]


def test_stans_count_up_from_one_and_wrap_after_the_maximum(tmp_path: Path) -> None:
    counters = LinkCounters(tmp_path / "c.sqlite3", stan_max=3)
    assert [counters.next_stan() for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]
    assert counters.peek(STAN) == 1
    assert (counters.peek(BATCH), counters.next_batch(), counters.next_batch()) == (0, 1, 2)
    counters.close()


def test_a_restart_carries_on_where_the_last_run_stopped(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    first = LinkCounters(path)
    taken = [first.next_stan() for _ in range(5)]
    first.close()
    again = LinkCounters(path)
    assert again.next_stan() == taken[-1] + 1
    again.close()


def test_threads_never_share_a_stan(tmp_path: Path) -> None:
    counters = LinkCounters(tmp_path / "c.sqlite3")
    seen: list[int] = []
    guard = threading.Lock()

    def take() -> None:
        mine = [counters.next_stan() for _ in range(100)]
        with guard:
            seen.extend(mine)

    workers = [threading.Thread(target=take) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(seen) == list(range(1, 401))
    counters.close()


_CHILD = textwrap.dedent(
    """
    import sys
    from terminal.store.link_counters import LinkCounters
    counters = LinkCounters(sys.argv[1])
    while True:
        print(counters.next_stan(), flush=True)
    """
)


@pytest.mark.integration
def test_two_processes_then_a_sigkill_never_repeat_a_stan(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    seen: list[int] = []
    for child in children:
        assert child.stdout is not None
        seen.extend(int(child.stdout.readline()) for _ in range(150))
    for child in children:
        child.send_signal(signal.SIGKILL)  # in the middle of taking the next one
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert len(seen) == len(set(seen))
    after = LinkCounters(path)
    assert after.next_stan() > max(seen)
    after.close()


def test_a_maximum_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LinkCounterError, match="1 to 999999999999"):
        LinkCounters(tmp_path / "c.sqlite3", stan_max=0)
