"""Stopping the terminal while clients follow its live updates is quiet: the event streams
end first, then the server stops, and nothing prints a traceback (a CancelledError from a
stream cut by the server's shutdown used to, in the tests and when stopping `pipos run`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from terminal.api.stack import start_demo_stack
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET
from tests.pipos_run import pipos_run

# A demo stack (uvicorn servers on loopback) and `pipos run` in a subprocess.
pytestmark = pytest.mark.integration


def _follow(url: str, token: str, lines: list[str], opened: threading.Event) -> None:
    try:
        with httpx.stream("GET", f"{url}/api/v1/events", params={"token": token}) as response:
            for line in response.iter_lines():
                lines.append(line)
                # The first line comes from inside the stream, once it follows the hub.
                opened.set()
    except httpx.HTTPError as exc:  # the stream must end cleanly, not be cut
        lines.append(f"cut: {type(exc).__name__}")


def test_closing_the_stack_ends_event_streams_cleanly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    stack = start_demo_stack(tmp_path, secret=TEST_SECRET, scrypt_n=TEST_SCRYPT_N, background=False)
    followers = []
    for _ in range(3):
        lines: list[str] = []
        opened = threading.Event()
        thread = threading.Thread(
            target=_follow, args=(stack.api.url, stack.token, lines, opened), daemon=True
        )
        thread.start()
        assert opened.wait(10)
        followers.append((thread, lines))
    stack.close()
    for thread, lines in followers:
        thread.join(10)
        assert not thread.is_alive()
        assert lines[0] == "retry: 2000"
        assert not any(line.startswith("cut: ") for line in lines), lines
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "CancelledError" not in err
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_pipos_run_with_a_live_page_prints_no_traceback(
    tmp_path: Path, stop: signal.Signals
) -> None:
    token = "shutdown-test-token"
    with pipos_run(tmp_path / "run", token, tmp_path / "stderr.txt") as running:
        lines: list[str] = []
        opened = threading.Event()
        follower = threading.Thread(
            target=_follow, args=(running.url, token, lines, opened), daemon=True
        )
        follower.start()
        assert opened.wait(10)
        running.stop(stop)
    err = running.errors.read_text()
    assert running.process.returncode == 0, err
    assert "Traceback" not in err, err
    assert "CancelledError" not in err, err
    follower.join(10)
    assert not any(line.startswith("cut: ") for line in lines), lines
