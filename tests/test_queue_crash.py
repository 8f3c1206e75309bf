"""Crash proof: sales and syncs killed with SIGKILL at random instants, many times over.

Child processes stand in for the terminal: a *sale* process stores offline payments exactly as
a sale does (durable enqueue, then "APPROVED <txid>" on stdout only after the commit), and a
*sync* process runs `pipos sync` against the simulated acquirer host (real uvicorn on
127.0.0.1, real SQLite ledger). Both are killed at random instants; afterwards every payment
that was shown APPROVED is in the queue, and once everything is synced, in the host's ledger
exactly once; no payment is ever in the ledger twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from offline_queue import OfflineQueue, State
from terminal.acquirer import AcquirerClient
from terminal.keys import Keystore, SequenceCounter
from terminal.queue_uplink import QUEUE_KEY_PURPOSE

if TYPE_CHECKING:
    from tests.conftest_host import HostHandle

pytest_plugins = ["tests.conftest_host"]

SECRET = b"crash-test-device-secret-0123456789"
ROOT = Path(__file__).resolve().parent.parent

SALE_CHILD = r"""
import random, sys, time
from pathlib import Path
from offline_queue import CardData, OfflinePayment, OfflineQueue
from terminal.keys import Keystore, secret_from_file
from terminal.queue_uplink import QUEUE_KEY_PURPOSE

data, prefix = Path(sys.argv[1]), sys.argv[2]
ks = Keystore.open(data, secret_from_file(data / "device-secret"))
queue = OfflineQueue.open(data / "offline_queue.sqlite3", ks.data_key(QUEUE_KEY_PURPOSE))
rng = random.Random(prefix)
i = 0
while True:
    txid = f"{prefix}-{i}"
    record = f"sale {txid}".encode()
    payment = OfflinePayment(
        transaction_id=txid,
        amount=rng.randrange(100, 5000),
        currency=978,
        card=CardData(pan="47617390" + f"{rng.randrange(10**8):08d}", pan_sequence=1),
        captured_at=int(time.time()),
        emv={"9F27": "40", "9C": "00"},
        brand="visa",
        aid="A0000000031010",
        signed_record=record,
        signature=ks.sign(record),
        key_id=ks.key_id,
    )
    if queue.enqueue(payment).stored:
        # The screen says APPROVED only after the payment is committed and fsynced.
        print("APPROVED", txid, flush=True)
    i += 1
    time.sleep(rng.random() * 0.01)
"""

SYNC_CHILD = r"""
import sys, time
from terminal.cli_queue import main
while True:
    main(["sync", "--data-dir", sys.argv[1], "--host-url", sys.argv[2], "--batch-size", "4",
          "--max-failures", "2"])
    time.sleep(0.02)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.fixture
def terminal_dir(tmp_path: Path, acquirer_host: HostHandle) -> Path:
    data = tmp_path / "terminal"
    data.mkdir()
    secret = data / "device-secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    ks = Keystore.create(data, SECRET, serial="PIPOS-CRASH-1", scrypt_n=2**10)
    seq = SequenceCounter(data / "sequence.json")
    with AcquirerClient(acquirer_host.url, ks, seq, sleep=lambda _s: None) as client:
        client.enrol(acquirer_host.activation_code())
    seq.close()
    return data


def test_sigkill_at_random_instants_loses_and_doubles_nothing(
    terminal_dir: Path, acquirer_host: HostHandle
) -> None:
    rng = random.Random(20240601)
    approved: list[str] = []
    db = terminal_dir / "offline_queue.sqlite3"
    interrupted_batches = 0
    rounds = 18
    for n in range(rounds):
        sale = _spawn(SALE_CHILD, str(terminal_dir), f"r{n}")
        sync = _spawn(SYNC_CHILD, str(terminal_dir), acquirer_host.url)
        # Kill each at its own random instant (imports take ~0.3 s; most kills land mid-work).
        kills = sorted(
            [(rng.uniform(0.35, 1.4), sale), (rng.uniform(0.35, 1.4), sync)], key=lambda k: k[0]
        )
        start = time.monotonic()
        for at, proc in kills:
            time.sleep(max(0.0, at - (time.monotonic() - start)))
            proc.send_signal(signal.SIGKILL)
        for proc in (sale, sync):
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            if proc is sale:
                approved += [
                    line.split()[1]
                    for line in out.splitlines()
                    if line.startswith("APPROVED ") and len(line.split()) == 2
                ]
        if db.exists():
            with OfflineQueue.open(db) as q:  # integrity check after every crash
                interrupted_batches += len([p for p in q.list_payments([State.SENDING])])

    assert len(approved) > 50, "the sale processes should have approved many payments"
    assert len(set(approved)) == len(approved)

    # Every payment shown APPROVED survived every crash.
    with OfflineQueue.open(db) as q:
        queued = {p.transaction_id: p for p in q.list_payments()}
    missing = [t for t in approved if t not in queued]
    assert missing == []

    # The host never holds a payment twice, nor one that is not in the queue.
    ledger = acquirer_host.ledger()
    offline_ids = [row["offline_id"] for row in ledger if row["offline_id"]]
    assert [k for k, c in Counter(offline_ids).items() if c > 1] == []
    assert set(offline_ids) <= set(queued)

    # Drain what is left with a sync nobody kills: then everything is in the ledger once.
    ks = Keystore.open(terminal_dir, SECRET)
    from terminal.cli_queue import main

    argv = ["sync", "--data-dir", str(terminal_dir), "--host-url", acquirer_host.url]
    assert main([*argv, "--batch-size", "100"]) == 0
    with OfflineQueue.open(db, ks.data_key(QUEUE_KEY_PURPOSE)) as q:
        rows = q.list_payments()
        assert {p.state for p in rows} <= {State.ACCEPTED, State.DECLINED}
        status = q.status()
    ledger = acquirer_host.ledger()
    offline_ids = [row["offline_id"] for row in ledger if row["offline_id"]]
    counts = Counter(offline_ids)
    assert all(counts[t] == 1 for t in approved)
    assert set(counts) == {p.transaction_id for p in rows}
    assert max(counts.values()) == 1
    # Host's verdict and the queue agree, payment by payment.
    host_status = {row["offline_id"]: row["status"] for row in ledger if row["offline_id"]}
    for p in rows:
        assert host_status[p.transaction_id] == (
            "approved" if p.state is State.ACCEPTED else "declined"
        )
    assert status.outstanding_count == 0
    print(
        f"\n{rounds} rounds, {len(approved)} approved, {len(rows)} queued, "
        f"{interrupted_batches} payments caught mid-send by a kill"
    )
