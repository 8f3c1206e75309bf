"""Crash proof: sales and syncs killed with SIGKILL at random instants, many times over.

Child processes stand in for the terminal: a *sale* process stores offline payments exactly as
a sale does (durable enqueue, then "APPROVED <txid>" on stdout only after the commit), and a
*sync* process runs `pipos sync` against the simulated acquirer host (real uvicorn on
127.0.0.1, real SQLite ledger). Both are killed at random instants, and every third round
the sync is killed on purpose while its batch is on its way (the host holds the upload before
committing it); afterwards every payment that was shown APPROVED is in the queue, and once
everything is synced, in the host's ledger exactly once; no payment is ever in the ledger
twice; and each payment a kill caught mid-send (counted) ended exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from offline_queue import OfflineQueue, State
from terminal.acquirer.client import AcquirerClient
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE
from terminal.store.keys import Keystore, SequenceCounter

if TYPE_CHECKING:
    from tests.conftest_host import HostHandle

pytest_plugins = ["tests.conftest_host"]

# Child processes killed with SIGKILL, a host of the test's own on loopback.
pytestmark = pytest.mark.integration

SECRET = b"crash-test-device-secret-0123456789"
ROOT = Path(__file__).resolve().parents[2]

SALE_CHILD = r"""
import random, sys, time
from pathlib import Path
from emv.pan import mask_pan
from offline_queue import CardData, OfflinePayment, OfflineQueue
from terminal.store.keys import Keystore, secret_from_file
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE
from terminal.domain.signing import offline_record

data, prefix = Path(sys.argv[1]), sys.argv[2]
ks = Keystore.open(data, secret_from_file(data / "device-secret"))
queue = OfflineQueue.open(data / "offline_queue.sqlite3", ks.data_key(QUEUE_KEY_PURPOSE))
rng = random.Random(prefix)
i = 0
while True:
    txid = f"{prefix}-{i}"
    amount, captured_at = rng.randrange(100, 5000), int(time.time())
    pan = "47617390" + f"{rng.randrange(10**8):08d}"
    # The card's offline approval (its TC and ATC), and the terminal's signed record of the
    # payment, which the host checks says what the item says: no card data beyond the masked
    # PAN, bound to the card by its cryptogram.
    emv = {"9F27": "40", "9C": "00", "9F26": f"{rng.randrange(2**64):016X}", "9F36": f"{i % 65536:04X}"}
    record = offline_record(
        transaction_id=txid, terminal_id=ks.terminal_id or "", amount=amount, currency=978,
        captured_at=captured_at, masked_pan=mask_pan(pan), aid="A0000000031010",
        cryptogram=emv["9F26"], atc=emv["9F36"],
    )
    payment = OfflinePayment(
        transaction_id=txid,
        amount=amount,
        currency=978,
        card=CardData(pan=pan, pan_sequence=1),
        captured_at=captured_at,
        emv=emv,
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
from terminal.cli.queue import main
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


def _sending(db: Path) -> set[str]:
    """The payments of a batch that may be on its way to the host (read-only peek)."""
    if not db.exists():
        return set()
    peek = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = peek.execute("SELECT transaction_id FROM payments WHERE state = 'sending'")
        return {row[0] for row in rows}
    except sqlite3.OperationalError:  # the schema is not there yet
        return set()
    finally:
        peek.close()


def _upload_held(host: HostHandle) -> bool:
    """An offline upload has reached the host and waits there (the delay fault was hit)."""
    faults = host.faults()
    return int(faults.get("/v1/batches/offline", {}).get("hits", 0)) >= 1


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_sigkill_at_random_instants_loses_and_doubles_nothing(
    terminal_dir: Path, acquirer_host: HostHandle
) -> None:
    rng = random.Random(20240601)
    approved: list[str] = []
    db = terminal_dir / "offline_queue.sqlite3"
    # Payments a kill caught mid-send: their batch was on its way to the host (state
    # "sending" in the queue) when the sync process died.
    caught_mid_send: set[str] = set()
    forced_rounds: list[int] = []  # payments in flight at each forced mid-send kill
    rounds = 18
    for n in range(rounds):
        sale = _spawn(SALE_CHILD, str(terminal_dir), f"r{n}")
        if n % 3 == 2:
            # A forced mid-send kill: the host holds every upload for 1.5 s before it commits
            # it; once one has reached the host, the sync process is killed while it waits
            # for the answer.
            _wait_for(lambda: db.exists(), 10, "the sale process's first payment")
            time.sleep(0.3)
            left_sending = _sending(db)  # from an earlier round's kill: not this round's
            acquirer_host.set_fault("/v1/batches/offline", "delay", delay_ms=1500)
            sync = _spawn(SYNC_CHILD, str(terminal_dir), acquirer_host.url)
            _wait_for(lambda: _upload_held(acquirer_host), 15, "an upload held by the host")
            sync.send_signal(signal.SIGKILL)
            in_flight = _sending(db)
            # Held at the host: the batch an earlier kill left in flight (re-sent as is,
            # first), or else a new one of at most --batch-size 4 payments.
            new = in_flight - left_sending
            if left_sending:
                assert in_flight == left_sending, (n, in_flight, left_sending)
            else:
                assert 1 <= len(new) <= 4, (n, in_flight)
            forced_rounds.append(len(in_flight))
            caught_mid_send |= in_flight
            sale.send_signal(signal.SIGKILL)
        else:
            sync = _spawn(SYNC_CHILD, str(terminal_dir), acquirer_host.url)
            # Each killed at its own random instant (imports take ~0.3 s; most land mid-work).
            kills = sorted(
                [(rng.uniform(0.35, 1.4), sale), (rng.uniform(0.35, 1.4), sync)],
                key=lambda k: k[0],
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
                caught_mid_send |= {p.transaction_id for p in q.list_payments([State.SENDING])}
        acquirer_host.clear_faults()

    assert len(approved) > 50, "the sale processes should have approved many payments"
    assert len(set(approved)) == len(approved)
    # Six rounds force a kill while a batch is on its way; each caught payments mid-send.
    assert len(forced_rounds) == 6
    assert all(count >= 1 for count in forced_rounds), forced_rounds

    # Every payment shown APPROVED survived every crash.
    with OfflineQueue.open(db) as q:
        queued = {p.transaction_id: p for p in q.list_payments()}
    missing = [t for t in approved if t not in queued]
    assert missing == []
    assert caught_mid_send <= set(queued)

    # The host never holds a payment twice, nor one that is not in the queue.
    ledger = acquirer_host.ledger()
    offline_ids = [row["offline_id"] for row in ledger if row["offline_id"]]
    assert [k for k, c in Counter(offline_ids).items() if c > 1] == []
    assert set(offline_ids) <= set(queued)

    # Drain what is left with a sync nobody kills: then everything is in the ledger once.
    ks = Keystore.open(terminal_dir, SECRET)
    from terminal.cli.queue import main

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
    # Each payment a kill caught mid-send ended exactly once: in the ledger once, and final
    # in the queue (its batch re-sent under the same idempotency key, never as a new one).
    assert {t: counts[t] for t in caught_mid_send} == dict.fromkeys(caught_mid_send, 1)
    final = {p.transaction_id: p.state for p in rows}
    assert {final[t] for t in caught_mid_send} <= {State.ACCEPTED, State.DECLINED}
    # Host's verdict and the queue agree, payment by payment.
    host_status = {row["offline_id"]: row["status"] for row in ledger if row["offline_id"]}
    for p in rows:
        assert host_status[p.transaction_id] == (
            "approved" if p.state is State.ACCEPTED else "declined"
        )
    assert status.outstanding_count == 0
    print(
        f"\n{rounds} rounds, {len(approved)} approved, {len(rows)} queued, "
        f"{len(caught_mid_send)} payments caught mid-send by a kill (forced rounds: "
        f"{forced_rounds}), each ended once"
    )
