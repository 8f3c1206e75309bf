"""`pipos acquirer` sub-commands (registered into a parser the way terminal/cli/__init__.py does)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from terminal.cli import acquirer as cli_acquirer

if TYPE_CHECKING:
    from tests.conftest_host import HostHandle


REPO = Path(__file__).resolve().parents[3]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipos")
    sub = parser.add_subparsers(dest="command")
    cli_acquirer.register(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args))


@pytest.mark.integration
def test_activation_code_via_running_host(
    session_host: HostHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command takes a URL: the session's host over real HTTP on loopback.
    assert (
        _run(["acquirer", "activation-code", "--merchant", "M42", "--url", session_host.url]) == 0
    )
    code = capsys.readouterr().out.strip()
    assert code
    # The code is one-time and belongs to the merchant: visible to the host.
    assert len(code) >= 6


def test_activation_code_written_to_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "acq.sqlite3"
    assert _run(["acquirer", "--db", str(db), "activation-code", "--merchant", "M7"]) == 0
    assert capsys.readouterr().out.strip()
    assert db.exists()


def test_unreachable_host_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(cli_acquirer.AcquirerCommandError, match="acquirer at"):
        _run(["acquirer", "activation-code", "--merchant", "M", "--url", "http://127.0.0.1:9"])


@pytest.mark.integration
def test_python_m_simulator_host_serves(tmp_path: Path) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.host",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "h.db"),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/openapi.json")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "host did not start"
                time.sleep(0.1)
        assert r.status_code == 200
        assert "/v1/authorisations" in r.json()["paths"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
