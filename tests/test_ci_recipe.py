"""The CI recipe (docs/ci.md) as a CI job follows it: `pipos run` headless with a fixed token,
a free port and a ready file; the example script against it; the simulated acquirer's faults
from `pipos acquirer fault`; and the page itself kept true (its commands parse, its tables
give the outcomes they say, its behaviour list is the simulator's)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from terminal.cli import build_parser, main

pytestmark = pytest.mark.integration  # pipos run and the example script as subprocesses

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ci.md"
EXAMPLE = ROOT / "examples" / "ci_example.py"
TOKEN = "ci-register-token-0123456789"
FINAL = {"approved", "approved_offline", "declined", "cancelled", "failed"}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Headless:
    process: subprocess.Popen[bytes]
    ready: Path
    errors: Path
    document: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.document["url"])

    @property
    def acquirer_url(self) -> str:
        return str(self.document["acquirer_url"])


def _start(tmp: Path) -> Headless:
    pytest.importorskip("simulator.host", reason="the simulator (sim extra) runs the demo")
    ready = tmp / "pipos.ready"
    ready.write_text("stale: a killed run's file\n")  # removed at start, never read as ours
    errors = tmp / "stderr.txt"
    with errors.open("wb") as err, open(os.devnull, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "terminal.cli", "run", "--state-dir", str(tmp / "state"),
             "--port", "0", "--token", TOKEN, "--ready-file", str(ready)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=out,
            stderr=err,
            preexec_fn=_default_sigint,
        )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pipos run ended ({process.returncode}): {errors.read_text()}")
        try:
            document = json.loads(ready.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.1)
            continue
        return Headless(process, ready, errors, document)
    process.kill()
    pytest.fail(f"no ready file within 90 s: {errors.read_text()}")


def _stop(run: Headless) -> None:
    if run.process.poll() is None:
        run.process.send_signal(signal.SIGTERM)
        try:
            run.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Headless]:
    run = _start(tmp_path_factory.mktemp("ci"))
    try:
        yield run
    finally:
        _stop(run)


@pytest.fixture
def api(headless: Headless) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=headless.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        yield client
        # Whatever a test did to the bank, the next one starts idle with the bank answering.
        client.post("/api/v1/cancel")
        httpx.delete(headless.acquirer_url + "/admin/faults", timeout=10)
        httpx.put(headless.acquirer_url + "/admin/rules", json={}, timeout=10)
        client.post("/api/v1/simulator/acquirer", json={"mode": "online"})
        client.post("/api/v1/queue/sync")


def _sale(api: httpx.Client, amount: int, card: str, taps: int = 1) -> dict[str, Any]:
    started = api.post("/api/v1/sales", json={"amount": amount, "currency": 978})
    assert started.status_code == 202, started.text
    txn_id = started.json()["id"]
    for tap in range(taps):
        if tap:
            _wait_for_restart(api, txn_id)
        shown = api.post("/api/v1/simulator/present", json={"card": card})
        assert shown.status_code == 200, shown.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        txn: dict[str, Any] = api.get(f"/api/v1/transactions/{txn_id}").json()
        if txn["state"] in FINAL:
            return txn
        time.sleep(0.05)
    api.post(f"/api/v1/transactions/{txn_id}/cancel")
    pytest.fail(f"sale with {card} did not finish")


def _wait_for_restart(api: httpx.Client, txn_id: str) -> None:
    """The phone asked for a second tap: the sale waits for the card again."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        txn = api.get(f"/api/v1/transactions/{txn_id}").json()
        if txn["state"] != "in_progress" or txn.get("stage") == "waiting_for_card":
            time.sleep(0.3)  # the card leaves the field before it is presented again
            return
        time.sleep(0.05)


def _fault(headless: Headless, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "terminal.cli", "acquirer", "fault",
         "--url", headless.acquirer_url, *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


# --- the example script -------------------------------------------------------------------


def test_example_script_passes_against_a_headless_terminal(headless: Headless) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--ready-file", str(headless.ready)],
        env=dict(os.environ, PIPOS_TOKEN=TOKEN),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sale 12.34 EUR, sim:visa: approved (00)" in result.stdout
    assert "sale 10.51 EUR, sim:mastercard: declined (51)" in result.stdout
    assert "refund 2.34 EUR of the sale: approved" in result.stdout
    assert result.stdout.rstrip().endswith("all checks passed")


def test_example_script_fails_on_an_unexpected_outcome(headless: Headless) -> None:
    # The bank declines 12.34 EUR: the script's first sale is not approved.
    httpx.put(
        headless.acquirer_url + "/admin/rules", json={"decline_amounts": {"1234": "05"}}
    ).raise_for_status()
    try:
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), "--url", headless.url, "--token", TOKEN],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        httpx.put(headless.acquirer_url + "/admin/rules", json={}).raise_for_status()
    assert result.returncode == 1
    assert "expected approved (response code 00), got declined 05" in result.stderr


def test_ready_file_is_json_without_the_token(headless: Headless) -> None:
    assert set(headless.document) == {"url", "terminal_id", "acquirer_url", "pid"}
    assert TOKEN not in headless.ready.read_text()
    assert headless.document["pid"] == headless.process.pid
    assert httpx.get(headless.url + "/health").json()["status"] == "ok"


def test_ready_file_goes_when_the_terminal_stops(tmp_path: Path) -> None:
    run = _start(tmp_path)
    try:
        assert run.ready.exists()
    finally:
        _stop(run)
    assert run.process.returncode == 0, run.errors.read_text()
    assert not run.ready.exists()


# --- the tables of docs/ci.md -------------------------------------------------------------


def _table(heading_row: str) -> list[list[str]]:
    """The rows of the docs/ci.md table whose header row starts with `heading_row`."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_row))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert rows, heading_row
    return rows


def _minor(eur: str) -> int:
    whole, _, cents = eur.partition(".")
    return int(whole) * 100 + int(cents.ljust(2, "0"))


def test_every_test_card_row_gives_its_outcome(headless: Headless, api: httpx.Client) -> None:
    rows = _table("| card | amount (EUR) |")
    wrong = []
    for card, amount, taps, state, code, message in rows:
        txn = _sale(api, _minor(amount), card.strip("`"), int(taps))
        got = (txn["state"], txn.get("response_code") or "", txn["message"]["merchant"])
        if got != (state, code, message):
            wrong.append(f"{card} {amount}: documented {(state, code, message)}, got {got}")
    assert not wrong, "\n".join(wrong)


def test_every_test_card_is_in_the_table() -> None:
    cards = pytest.importorskip("simulator.cards")
    listed = {row[0].strip("`").partition("?")[0] for row in _table("| card | amount (EUR) |")}
    assert listed == set(cards.list_profiles())


def test_the_behaviour_table_lists_every_behaviour_the_simulator_documents() -> None:
    behaviour = pytest.importorskip("simulator.cards.behaviour")
    documented = set(re.findall(r"^``(\w+)``", behaviour.__doc__ or "", re.MULTILINE))
    assert {"decline", "see_phone", "hang_on", "expired"} <= documented
    rows = _table("| behaviour | what the card does |")
    names = {m for row in rows for m in re.findall(r"`\?(\w+)", row[0])}
    # `?wrong_data=` is corrupt's other name (the docstring says so on corrupt's line).
    assert "``wrong_data=``" in (behaviour.__doc__ or "")
    assert names == documented | {"wrong_data"}
    corrupt = next(row[1] for row in rows if row[0].startswith("`?corrupt"))
    for kind in behaviour.Corruption:
        assert f"`{kind.value}`" in corrupt
    hang = next(row[1] for row in rows if row[0].startswith("`?hang_on"))
    for command in behaviour.HANG_COMMANDS:
        assert f"`{command}`" in hang


def test_the_amount_rule_row_is_the_hosts_default(api: httpx.Client) -> None:
    decisions = pytest.importorskip("simulator.host.decisions")
    assert decisions.Rules().insufficient_funds_suffix == 51
    (rule, code, message), _ = _table("| amount | response code |")
    assert rule.startswith("ending in .51")
    assert code == "51"
    txn = _sale(api, 12351, "visa")
    assert (txn["state"], txn["response_code"], txn["message"]["merchant"]) == (
        "declined",
        "51",
        message,
    )


def test_a_rule_set_as_documented_declines(headless: Headless, api: httpx.Client) -> None:
    httpx.put(
        headless.acquirer_url + "/admin/rules",
        json={"decline_amounts": {"777": "05"}, "blocked_cards": ["5413330089020011"]},
    ).raise_for_status()
    assert _sale(api, 777, "visa")["response_code"] == "05"
    assert _sale(api, 1234, "mastercard")["response_code"] == "62"
    httpx.put(headless.acquirer_url + "/admin/rules", json={}).raise_for_status()
    assert _sale(api, 1234, "mastercard")["state"] == "approved"


# --- the acquirer's faults ----------------------------------------------------------------

NO_ANSWER = "No answer from the bank - payment reversed, customer not charged. Try again"
OFFLINE = "Network down - approved offline, will be sent automatically"


def _back_online(api: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        api.post("/api/v1/queue/sync")
        status = api.get("/api/v1/status").json()
        if status["host_online"] and status["queue"]["count"] == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"the terminal did not come back online: {status}")


@pytest.mark.parametrize(
    "args",
    [
        ("--mode", "refuse"),
        ("--mode", "http_500"),
        ("--mode", "drop_after_commit", "--path", "/v1/authorisations", "--times", "1"),
        ("--mode", "corrupt", "--path", "/v1/authorisations", "--times", "1"),
    ],
    ids=lambda args: args[1],
)
def test_a_fault_without_an_answer_declines_and_reverses_then_goes_offline(
    headless: Headless, api: httpx.Client, args: tuple[str, ...]
) -> None:
    armed = _fault(headless, *args)
    assert armed.returncode == 0, armed.stderr
    assert f"  {args[1]}  " in armed.stdout
    first = _sale(api, 1234, "visa")
    assert (first["state"], first["message"]["merchant"]) == ("declined", NO_ANSWER)
    # The bank counts as down now: the next sale is taken offline.
    second = _sale(api, 1234, "visa")
    assert (second["state"], second["message"]["merchant"]) == ("approved_offline", OFFLINE)
    cleared = _fault(headless, "--clear")
    assert (cleared.returncode, cleared.stdout.strip()) == (0, "no fault armed (all cleared)")
    _back_online(api)
    assert _sale(api, 1234, "visa")["state"] == "approved"


def test_a_short_delay_is_only_slower(headless: Headless, api: httpx.Client) -> None:
    armed = _fault(headless, "--mode", "delay", "--delay-ms", "1500", "--times", "1")
    assert armed.returncode == 0, armed.stderr
    listed = _fault(headless)
    assert listed.stdout.strip() == "/v1/  delay  delay_ms=1500  times=1  hits=0"
    started = time.monotonic()
    txn = _sale(api, 1234, "visa")
    assert txn["state"] == "approved"
    assert time.monotonic() - started >= 1.5
    assert _fault(headless).stdout.strip() == "no fault armed"  # --times 1: used up


@pytest.mark.parametrize(
    ("mode", "state", "message"),
    [("unreachable", "approved_offline", OFFLINE), ("drops", "declined", NO_ANSWER)],
)
def test_the_terminals_own_switch(api: httpx.Client, mode: str, state: str, message: str) -> None:
    assert api.post("/api/v1/simulator/acquirer", json={"mode": mode}).json() == {"acquirer": mode}
    txn = _sale(api, 1234, "visa")
    assert (txn["state"], txn["message"]["merchant"]) == (state, message)
    api.post("/api/v1/simulator/acquirer", json={"mode": "online"})
    _back_online(api)


def test_fault_modes_are_the_simulators() -> None:
    faults = pytest.importorskip("simulator.host.faults")
    from terminal.cli.acquirer import FAULT_MODES

    assert tuple(FAULT_MODES) == faults.MODES
    text = DOC.read_text(encoding="utf-8")
    for mode in faults.MODES:
        assert f"--mode {mode}" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "delay"], "--mode delay needs --delay-ms"),
        (["--times", "2"], "--delay-ms and --times go with --mode"),
    ],
)
def test_fault_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status = main(["acquirer", "fault", "--url", "http://127.0.0.1:9", *args])
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--mode", "bogus"], ["--times", "0", "--mode", "refuse"]])
def test_fault_bad_option_exits_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["acquirer", "fault", "--url", "http://127.0.0.1:9", *args])
    assert exited.value.code == 2


# --- the commands of docs/ci.md -----------------------------------------------------------


def _doc_commands() -> list[list[str]]:
    """Every `pipos ...` command in the page's sh blocks, continuation lines joined, `&`
    and shell variables left as words."""
    text = DOC.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```(?:sh|yaml)\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("pipos "):
                words = shlex.split(line.rstrip("&").strip())
                commands.append(words[1:])
    return commands


def test_the_docs_show_the_commands() -> None:
    commands = _doc_commands()
    assert any(c[0] == "run" and "--ready-file" in c for c in commands)
    assert sum(c[:2] == ["acquirer", "fault"] for c in commands) >= 5


@pytest.mark.parametrize("argv", _doc_commands(), ids=" ".join)
def test_every_documented_command_parses(argv: list[str]) -> None:
    args = build_parser(argv).parse_args(argv)
    assert callable(args.handler)
