"""A crash at every durable write of the ISO 8583 link (its STAN counter, its message
memory, the session keys in the keystore), just before and just after each: the terminal
process SIGKILLs itself there (tests/crash_child.py's injector, which knows nothing of the
link), a terminal started again on the same files does what the checkout does after a
restart, and the host has booked nothing twice and keeps nothing the terminal does not:

- a sale cut short is reversed by its idempotency key (the checkout's recovery): the host
  holds no approved sale, and no reversal is owed;
- a refund cut short is sent again under its key (the checkout's next refund of the sale
  settles it first): the host booked it exactly once;
- an offline upload cut short is sent again as it was (the forwarder's retry): each payment
  is booked exactly once, in order.

The whole-terminal harness (tests/crash_harness.py) drives a terminal over its HTTP API on
the pipos protocol and covers the checkout's own writes; the link's are covered here, at
the link, the host (tests/terminal/acquirer/iso8583_fake_host.py) in the test process so it
outlives every kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psec.tr31
import pytest

from terminal.acquirer.client import (
    AcquirerError,
    AuthorisationRequest,
    OfflineItem,
    RefundRequest,
)
from terminal.acquirer.iso8583.link import Iso8583Link, load_terminal_master_key, open_memory
from terminal.acquirer.iso8583.messages import Station
from terminal.store.keys import Keystore
from terminal.store.link_counters import FILE as COUNTERS_FILE
from terminal.store.link_counters import LinkCounters

from .iso8583_fake_host import FakeIsoHost

pytestmark = pytest.mark.integration  # a subprocess per trial

ROOT = Path(__file__).resolve().parents[3]
SECRET = b"iso8583-crash-device-secret-0123"
KBPK = bytes.fromhex("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")
TMK = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFE")
STATION = Station(terminal_id="TERM0001", merchant_id="MERCHANT0000001")
PAN = "4761739001010119"
SALE_KEY, REFUND_KEY, BATCH_KEY = "auth-crash", "refund-crash", "batch-crash"
OFFLINE_IDS = ("txn-a", "txn-b")

_CHILD = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.crash_child import Injector
root, directory, port, mode, target, marker, operation = sys.argv[1:8]
injector = Injector(Path(root))
injector.install()
from tests.terminal.acquirer.test_iso8583_link_crash import run_operation
run_operation(
    operation, Path(directory), int(port), lambda: injector.arm(mode, int(target), Path(marker))
)
print(json.dumps(injector.points), flush=True)
"""


def _open(directory: Path, port: int) -> tuple[Iso8583Link, list[object]]:
    keystore = Keystore.open(directory, SECRET)
    counters = LinkCounters(directory / COUNTERS_FILE)
    memory = open_memory(directory, keystore)
    link = Iso8583Link(
        "127.0.0.1",
        port,
        station=STATION,
        keystore=keystore,
        counters=counters,
        memory=memory,
        currency=978,
        answer_timeout=5.0,
        sleep=lambda _: None,
    )
    return link, [link, memory, counters]


def _items() -> list[OfflineItem]:
    return [
        OfflineItem(offline_id=offline_id, amount=100 * (n + 1), currency=978, pan=PAN)
        for n, offline_id in enumerate(OFFLINE_IDS)
    ]


def _refund() -> RefundRequest:
    return RefundRequest(amount=500, currency=978, pan=PAN)


def run_operation(operation: str, directory: Path, port: int, arm: Callable[[], None]) -> None:
    """The operation, on a terminal freshly started on `directory` (the child's work).
    The sale's trials crash from the start (the files opened, the keys exchanged and
    kept, the sign-on); the others' once the link is signed on (those points are the
    sale's)."""
    if operation == "sale":
        arm()
    link, parts = _open(directory, port)
    if operation != "sale":
        link.echo_test()
        arm()
    if operation == "sale":
        request = AuthorisationRequest(amount=1234, currency=978, pan=PAN, brand="VISA")
        link.authorise(request, idempotency_key=SALE_KEY)
    elif operation == "refund":
        link.refund(_refund(), idempotency_key=REFUND_KEY)
    else:
        link.upload_offline(_items(), idempotency_key=BATCH_KEY)
    for part in parts:
        part.close()  # type: ignore[attr-defined]


def _recover_and_check(operation: str, directory: Path, host: FakeIsoHost) -> list[str]:
    """What the checkout does after the restart, then the invariants (violations)."""
    link, parts = _open(directory, host.port)
    memory = parts[1]
    broken: list[str] = []
    try:
        if operation == "sale":
            status = ""
            for _ in range(3):
                try:
                    status = link.reverse(
                        original_idempotency_key=SALE_KEY, reason="lost_response"
                    ).status
                    break
                except AcquirerError as exc:  # retried, as retry_reversals does
                    status = repr(exc)
            if status not in ("reversed", "nothing_to_reverse"):
                broken.append(f"the reversal was not acknowledged: {status}")
            held = [b for b in host.bookings if b.kind == "sale" and b.status == "approved"]
            if held:
                broken.append(f"the host keeps a sale the terminal never saw approved: {held}")
            owed = memory.get("rev-" + SALE_KEY)  # type: ignore[attr-defined]
            if owed is not None and not owed.answered:
                broken.append("a reversal is still owed")
        elif operation == "refund":
            result = link.refund(_refund(), idempotency_key=REFUND_KEY)
            refunds = [b for b in host.bookings if b.kind == "refund"]
            if len(refunds) != 1 or refunds[0].rrn != result.transaction_ref:
                broken.append(f"the refund is booked {len(refunds)} times: {refunds}")
        else:
            result = link.upload_offline(_items(), idempotency_key=BATCH_KEY)
            booked = [b.offline_id for b in host.bookings if b.kind == "advice"]
            if booked != list(OFFLINE_IDS):
                broken.append(f"the advices are booked as {booked}")
            if [r.result for r in result.items] != ["approved", "approved"]:
                broken.append(f"the upload answered {result.items}")
    finally:
        for part in parts:
            part.close()  # type: ignore[attr-defined]
    return broken


def _provisioned(directory: Path) -> None:
    keystore = Keystore.create(directory, SECRET, scrypt_n=2**10)
    load_terminal_master_key(keystore, KBPK, psec.tr31.wrap(KBPK, "D0000K0AB00N0000", TMK))


def _child(
    operation: str, directory: Path, port: int, mode: str, target: int, marker: Path
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    command = [sys.executable, "-c", _CHILD, str(ROOT), str(directory), str(port)]
    command += [mode, str(target), str(marker), operation]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def hosts() -> Iterator[list[FakeIsoHost]]:
    started: list[FakeIsoHost] = []
    yield started
    for host in started:
        host.close()


@pytest.mark.parametrize("operation", ["sale", "refund", "advice"])
def test_a_crash_at_every_durable_write_of_the_link_loses_and_doubles_nothing(
    operation: str, tmp_path: Path, hosts: list[FakeIsoHost]
) -> None:
    # The uncrashed run: it holds the invariants, and names the points.
    host = FakeIsoHost(TMK)
    hosts.append(host)
    _provisioned(tmp_path / "counted")
    counted = _child(operation, tmp_path / "counted", host.port, "count", 0, tmp_path / "m")
    assert counted.returncode == 0, counted.stderr
    points = json.loads(counted.stdout.strip().splitlines()[-1])
    files = {point["file"] for point in points}
    assert {"iso8583-messages.sqlite3", "iso8583-counters.sqlite3"} <= files
    assert operation != "sale" or "keystore.json" in files  # the session keys, kept
    assert _recover_and_check(operation, tmp_path / "counted", host) == []

    broken: dict[str, list[str]] = {}
    for point, following in zip(points, [*points[1:], None], strict=True):
        # A kill just after a point that leaves what a kill just before the next leaves
        # (nothing went to the host in between) is run once, as the latter.
        same_as_next = following is not None and not following["external_before"]
        for mode in ("before",) if same_as_next else ("before", "after"):
            label = f"{mode} #{point['index']} {point['name']}"
            trial = tmp_path / f"{mode}-{point['index']}"
            host = FakeIsoHost(TMK)
            hosts.append(host)
            _provisioned(trial)
            marker = trial / "killed.json"
            run = _child(operation, trial, host.port, mode, point["index"], marker)
            assert run.returncode == -signal.SIGKILL, (label, run.returncode, run.stderr)
            assert json.loads(marker.read_text())["index"] == point["index"]
            violations = _recover_and_check(operation, trial, host)
            if violations:
                broken[label] = violations
    assert broken == {}
