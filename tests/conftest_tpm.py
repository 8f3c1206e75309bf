"""A software TPM 2.0 for the tests: Debian's swtpm on loopback, one per test, with its own state.

``swtpm`` is a started TPM (its ``tcti`` string goes to ``TpmSecret`` or ``pipos provision
--tpm-tcti``); ``swtpm_factory()`` starts more (a second device: another TPM, another seed), and
``swtpm_factory(state_dir)`` starts one on a stopped TPM's state again (the same device, back on
after a power cut: same seeds, another port). Each is stopped at teardown. A machine without swtpm or tpm2-pytss skips, saying what is missing;
under ``CI=true`` that skip is a failure (tests/conftest.py).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: How long swtpm may take to open its sockets (it is ready in ~50 ms on this class of machine).
START_TIMEOUT = 10.0


@dataclass
class SwTpm:
    """One running swtpm: its command port (``port``) and control port (``port + 1``)."""

    process: subprocess.Popen[bytes]
    port: int
    state_dir: Path

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _free_port_pair() -> int:
    """A loopback port P with P + 1 free too (swtpm's command and control sockets)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two adjacent free loopback ports for swtpm")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _start(state_dir: Path) -> SwTpm:
    executable = shutil.which("swtpm")
    if executable is None:
        pytest.skip("swtpm is not installed (Debian: swtpm swtpm-tools)")
    pytest.importorskip(
        "tpm2_pytss", reason="tpm2-pytss is not installed (the `tpm` extra; needs libtss2-dev)"
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # a port taken between the probe and swtpm's bind: try another
        port = _free_port_pair()
        log = state_dir / "swtpm.log"
        process = subprocess.Popen(
            [
                executable,
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={state_dir}",
                "--server",
                f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
                "--log",
                f"file={log}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _listening(port):
                return SwTpm(process, port, state_dir)
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
        _, err = process.communicate(timeout=5)
        last_error = err.decode("utf-8", "replace").strip()
    raise RuntimeError(f"swtpm did not start: {last_error}")


StartTpm = Callable[..., SwTpm]


@pytest.fixture
def swtpm_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartTpm]:
    """Start a fresh software TPM (its own state: another device), or one on `state_dir`."""
    started: list[SwTpm] = []

    def start(state_dir: Path | None = None) -> SwTpm:
        tpm = _start(state_dir or tmp_path_factory.mktemp("swtpm"))
        started.append(tpm)
        return tpm

    yield start
    for tpm in started:
        tpm.stop()


@pytest.fixture
def swtpm(swtpm_factory: StartTpm) -> SwTpm:
    """A software TPM 2.0 on loopback for this test."""
    return swtpm_factory()
