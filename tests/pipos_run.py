"""`pipos run` (the demo terminal) in a child process, as a merchant starts it from a shell:
for the tests that stop it with a signal and check what it leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _default_sigint() -> None:
    # As from an interactive shell: a test run started in the background (a CI script,
    # `cmd &`) has SIGINT ignored, and Python then leaves it ignored in its children.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class RunningTerminal:
    process: subprocess.Popen[str]
    url: str  # the checkout page's address, no trailing slash
    errors: Path  # the child's stderr

    def stop(self, how: signal.Signals = signal.SIGTERM) -> float:
        """Send `how` and wait for the process to end: seconds it took. A process still
        running after 30 s gets SIGABRT (faulthandler prints every thread's stack) and fails
        the test."""
        started = time.monotonic()
        self.process.send_signal(how)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=10)
            pytest.fail(f"pipos run did not stop within 30 s:\n{self.errors.read_text()}")
        return time.monotonic() - started


@contextmanager
def pipos_run(
    state: Path, token: str, errors: Path, *options: str, banner: list[str] | None = None
) -> Iterator[RunningTerminal]:
    """`pipos run --state-dir STATE --port 0 --token TOKEN [OPTIONS]`, started and up (its
    banner printed, its lines appended to `banner`); killed at the end if the test did not
    stop it."""
    with errors.open("w") as err_file:
        process = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "terminal.cli", "run",
             "--state-dir", str(state), "--port", "0", "--token", token, *options],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            preexec_fn=_default_sigint,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        url = ""
        for line in process.stdout:
            if banner is not None:
                banner.append(line.rstrip("\n"))
            if line.strip().startswith("checkout page:"):
                url = line.split()[-1].rstrip("/")
            if line.startswith("Press Ctrl-C"):
                break
        else:
            pytest.fail(f"pipos run did not start: {errors.read_text()}")
        yield RunningTerminal(process, url, errors)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
