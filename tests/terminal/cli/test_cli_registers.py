"""`pipos registers pair|list|revoke` (terminal.cli.registers): in process on a demo-like
data directory (no technician credential: nothing asked) and on a provisioned terminal
(the technician PIN for pair and revoke); and `pipos run --bind 127.0.0.2` as a real
process, which prints no token, holds none in its page, and pairs a register with the
code `pipos registers pair` printed, whose sale then goes through."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from terminal.cli import main
from terminal.service.config import load_config
from terminal.store.audit import AuditLog
from terminal.store.registers import FILE, Paired, RegisterStore
from tests.conftest_host import HostHandle
from tests.security.test_pin_bruteforce import provisioned

ROOT = Path(__file__).resolve().parents[3]
TECHNICIAN = "270513"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A demo terminal's state directory as `pipos run --state-dir` leaves it (its journal)."""
    (tmp_path / "terminal").mkdir()
    (tmp_path / "terminal" / "journal.sqlite3").touch()
    return tmp_path


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out
    document: dict[str, object] = json.loads(out)
    return document


def test_pair_list_revoke_on_the_demo_data_dir(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["registers", "pair", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Pairing code: ")
    shown = out.splitlines()[0].removeprefix("Pairing code: ")
    assert len(shown) == 7
    assert shown[3] == " "
    assert "valid until" in out

    assert main(["registers", "pair", "--state-dir", str(state), "--json"]) == 0
    code = str(_json(capsys)["code"])
    terminal = RegisterStore(state / "terminal" / FILE)
    try:
        # The running terminal reads the same file: the newest code pairs.
        assert isinstance(terminal.pair(code, "till-2"), Paired)
    finally:
        terminal.close()

    assert main(["registers", "list", "--data-dir", str(state / "terminal")]) == 0
    listing = capsys.readouterr().out
    assert "till-2" in listing
    assert "active" in listing
    assert main(["registers", "revoke", "till-2", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    assert main(["registers", "list", "--state-dir", str(state), "--json"]) == 0
    rows = _json(capsys)["registers"]
    assert isinstance(rows, list)
    [row] = rows
    assert row["name"] == "till-2"
    assert row["revoked"] is True
    events = [(e["event"], e["actor"]) for e in AuditLog(state / "terminal" / "audit.log").events()]
    assert ("pairing_code_issued", "operator") in events
    assert ("register_revoked", "operator") in events


def test_bad_input_exits_2(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registers", "revoke", "till-9", "--state-dir", str(state)]) == 2
    assert "no paired register named 'till-9'" in capsys.readouterr().err
    assert main(["registers", "revoke", "till/9", "--state-dir", str(state)]) == 2
    assert "register name" in capsys.readouterr().err
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    assert main(["registers", "pair", "--data-dir", str(empty)]) == 2
    assert "no terminal data in" in capsys.readouterr().err
    assert not (empty / FILE).exists()
    with pytest.raises(SystemExit) as exited:
        main(["registers", "list", "--state-dir", str(state), "--data-dir", str(state)])
    assert exited.value.code == 2


def test_another_users_terminal_is_refused_before_anything_is_written(
    state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As root (sudo pipos registers pair) on a terminal that runs as its own user: the
    # registers' file would be root's, and the running terminal could not pair with it.
    data_dir = state / "terminal"
    before = sorted(p.name for p in data_dir.iterdir())
    owner = data_dir.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    assert main(["registers", "pair", "--state-dir", str(state)]) == 1  # not a typing error
    err = capsys.readouterr().err
    assert "run this as the terminal's user" in err
    assert sorted(p.name for p in data_dir.iterdir()) == before


def test_a_provisioned_terminal_asks_for_the_technician_pin(
    inprocess_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = provisioned(inprocess_host, tmp_path, technician=TECHNICIAN)
    right = tmp_path / "pin"
    right.write_text(TECHNICIAN + "\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("999111\n")
    argv = ["registers", "pair", "--config", str(config)]
    # No PIN given and no terminal to type it on: bad input.
    assert main(argv) == 2
    assert "technician PIN" in capsys.readouterr().err
    assert main([*argv, "--technician-pin-file", str(wrong)]) == 1
    capsys.readouterr()
    data = load_config(config).data_dir
    assert not (data / FILE).exists()  # nothing issued
    assert main([*argv, "--technician-pin-file", str(right), "--json"]) == 0
    assert len(str(_json(capsys)["code"])) == 6
    assert main(["registers", "list", "--config", str(config)]) == 0  # no PIN to read
    assert "No register is paired" in capsys.readouterr().out
    events = [(e["event"], e["actor"]) for e in AuditLog(load_config(config).audit_path).events()]
    assert ("pairing_code_issued", "technician") in events


# --- pipos run on a non-loopback bind, as a real process -------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    """`pipos run --bind 127.0.0.2 --port 0` (no --token): its URL, banner and state."""
    pytest.importorskip("simulator.host", reason="the simulator (sim extra) runs the demo")
    state = tmp_path / "state"
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "terminal.cli", "run", "--state-dir", str(state),
             "--bind", "127.0.0.2", "--port", "0"],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            preexec_fn=_default_sigint,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        banner: list[str] = []
        for line in process.stdout:
            banner.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        else:
            pytest.fail(f"pipos run did not start: {errors.read_text()}")
        [url] = [b.split()[-1].rstrip("/") for b in banner if "checkout page:" in b]
        yield url, banner, state
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.integration
def test_run_on_127_0_0_2_pairs_a_register_whose_sale_works(
    running: tuple[str, list[str], Path],
) -> None:
    url, banner, state = running
    assert url.startswith("http://127.0.0.2:")
    text = "\n".join(banner)
    assert "register token" not in text
    assert f"pipos registers pair --state-dir {state}" in text

    with httpx.Client(base_url=url, timeout=30) as anonymous:
        page = anonymous.get("/")
        assert "Bearer" not in page.text
        # Nothing in it shaped like a token (secrets.token_urlsafe: 32 characters or more).
        assert re.search(r"[A-Za-z0-9_-]{32,}", page.text) is None
        assert anonymous.get("/api/v1/status").status_code == 401

        paired_code = subprocess.run(
            [sys.executable, "-m", "terminal.cli", "registers", "pair", "--state-dir",
             str(state), "--json"],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )  # fmt: skip
        code = json.loads(paired_code.stdout)["shown"]
        paired = anonymous.post("/api/v1/pairing", json={"code": code, "name": "till-2"})
        assert paired.status_code == 201, paired.text
        token = paired.json()["token"]
        assert token not in text

    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as register:
        sale = register.post("/api/v1/sales", json={"amount": 1234, "currency": 978})
        assert sale.status_code == 202, sale.text
        shown = register.post("/api/v1/simulator/present", json={"card": "visa"})
        assert shown.status_code == 200, shown.text
        deadline = time.monotonic() + 30
        state_now = ""
        while time.monotonic() < deadline:
            state_now = register.get(f"/api/v1/transactions/{sale.json()['id']}").json()["state"]
            if state_now not in ("in_progress", "waiting_for_card", "card_read"):
                break
            time.sleep(0.05)
        assert state_now == "approved"
