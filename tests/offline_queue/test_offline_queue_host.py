"""The forwarder against the simulated acquirer host, under every fault it has: in process
(tests/inprocess.py) for the faults that answer, over real HTTP on loopback for those that
cut the connection (integration).

Also the `pipos queue` / `pipos sync` commands end to end (`pipos sync` takes a URL: the
session's host on loopback).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from offline_queue import (
    Backoff,
    CardData,
    Forwarder,
    OfflinePayment,
    OfflineQueue,
    State,
)
from terminal.acquirer.client import AcquirerClient
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink, limits_from_params
from terminal.cli.queue import ProgressBar, main
from terminal.domain.params import OfflineParams
from terminal.store.keys import Keystore, SequenceCounter
from tests.conftest_host import signed_payment

if TYPE_CHECKING:
    from tests.conftest_host import HostHandle

pytest_plugins = ["tests.conftest_host"]

SECRET = b"queue-host-test-secret-0123456789"
PATH = "/v1/batches/offline"


@dataclass
class Terminal:
    data: Path
    keystore: Keystore
    host: HostHandle

    def queue(self) -> OfflineQueue:
        return OfflineQueue.open(
            self.data / "offline_queue.sqlite3", self.keystore.data_key(QUEUE_KEY_PURPOSE)
        )

    def client(self, seq: SequenceCounter) -> AcquirerClient:
        options = self.host.client_options(sleep=lambda _s: None, read_timeout=5.0)
        return AcquirerClient(self.host.url, self.keystore, seq, **options)

    def sign(self, payment: OfflinePayment) -> OfflinePayment:
        """`payment` as the checkout queues it: signed by this terminal's key."""
        return signed_payment(payment, self.keystore)

    def offline_ids(self) -> list[str]:
        ledger = self.host.ledger(self.keystore.terminal_id)
        return [r["offline_id"] for r in ledger if r["offline_id"]]


@pytest.fixture
def terminal(tmp_path: Path, request: pytest.FixtureRequest) -> Terminal:
    """An enrolled terminal's files, on the host fixture named by an indirect parameter:
    inprocess_host unless the test says otherwise."""
    host: HostHandle = request.getfixturevalue(getattr(request, "param", "inprocess_host"))
    data = tmp_path / "terminal"
    data.mkdir()
    secret = data / "device-secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    ks = Keystore.create(data, SECRET, serial="PIPOS-Q-1", scrypt_n=2**10)
    seq = SequenceCounter(data / "sequence.json")
    with AcquirerClient(host.url, ks, seq, **host.client_options(sleep=lambda _s: None)) as client:
        client.enrol(host.activation_code())
    seq.close()
    return Terminal(data, ks, host)


def _payment(i: int, amount: int = 1000) -> OfflinePayment:
    return OfflinePayment(
        transaction_id=f"tx-{i}",
        amount=amount,
        currency=978,
        card=CardData(pan=f"4761739001{i:06d}", pan_sequence=1, expiry="2812"),
        captured_at=1_700_000_000 + i,
        emv={"9F27": "40"},
        brand="visa",
        aid="A0000000031010",
    )


def _fill(terminal: Terminal, q: OfflineQueue, n: int) -> None:
    for i in range(n):
        assert q.enqueue(terminal.sign(_payment(i, amount=1000 + i))).stored


# A fault that cuts the TCP connection is a real socket's (a host of its own, integration).
CUT = pytest.mark.integration


@pytest.mark.parametrize(
    ("mode", "terminal"),
    [
        pytest.param("refuse", "acquirer_host", marks=CUT),
        ("http_500", "inprocess_host"),
        pytest.param("drop_after_commit", "acquirer_host", marks=CUT),
        ("corrupt", "inprocess_host"),
        ("delay", "inprocess_host"),
    ],
    indirect=["terminal"],
)
def test_every_host_fault_ends_with_each_payment_once(terminal: Terminal, mode: str) -> None:
    q = terminal.queue()
    _fill(terminal, q, 9)
    # The fault hits the first two uploads; the client retries within one call (same key),
    # the forwarder retries the same batch across calls.
    terminal.host.set_fault(PATH, mode, times=4, delay_ms=50)
    seq = SequenceCounter(terminal.data / "sequence.json")
    sleeps: list[float] = []
    with terminal.client(seq) as client:
        fw = Forwarder(
            q,
            AcquirerUplink(client),
            batch_size=4,
            backoff=Backoff(base=0.5, cap=4),
            sleep=sleeps.append,
            random=lambda: 0.5,
        )
        report = fw.sync(max_failures=10)
    seq.close()
    assert report.complete, report.last_error
    assert report.accepted == 9
    ids = terminal.offline_ids()
    assert Counter(ids) == Counter(f"tx-{i}" for i in range(9))
    assert all(p.state is State.ACCEPTED and p.host_ref for p in q.list_payments())
    if mode != "delay":
        # Three client attempts per upload: the fault outlasts one upload, so the forwarder
        # backed off and resent the very same batch (same idempotency key).
        assert report.upload_errors == 1
        assert report.resumed_batches == 1
        assert sleeps == [0.25]
    q.close()


def test_lost_answer_then_crash_resends_same_batch_and_host_answers_first_result(
    terminal: Terminal,
) -> None:
    """The host commits the batch, the answer is lost, the terminal 'dies' before recording."""
    q = terminal.queue()
    _fill(terminal, q, 3)
    batch = q.claim_batch(10)
    assert batch is not None
    seq = SequenceCounter(terminal.data / "sequence.json")
    with terminal.client(seq) as client:
        AcquirerUplink(client).upload(batch)  # committed at the host; never recorded here
        # ... power cut. A new forwarder resumes the 'sending' batch with the same key.
        report = Forwarder(q, AcquirerUplink(client), sleep=lambda _s: None).sync()
    seq.close()
    assert report.resumed_batches == 1
    assert report.accepted == 3
    assert Counter(terminal.offline_ids()) == Counter(["tx-0", "tx-1", "tx-2"])
    q.close()


@pytest.mark.integration
@pytest.mark.parametrize("terminal", ["session_host"], indirect=True)
def test_host_declines_after_the_fact_and_the_cli_shows_it(
    terminal: Terminal, capsys: pytest.CaptureFixture[str]
) -> None:
    q = terminal.queue()
    q.enqueue(terminal.sign(_payment(1, amount=1000)))
    q.enqueue(
        terminal.sign(_payment(2, amount=2051))
    )  # the host's rules: amounts ending in 51 lack funds
    q.close()
    args = ["--data-dir", str(terminal.data)]
    assert main(["sync", *args, "--host-url", terminal.host.url]) == 0
    out = capsys.readouterr().out
    assert "accepted 1, declined 1, failed 0, still waiting 0" in out
    assert "1 payment(s) need attention" in out
    assert main(["queue", "status", *args]) == 0
    out = capsys.readouterr().out
    assert "declined       1" in out
    assert "20.51 EUR" in out
    assert "ATTENTION: 1 payment(s) declined or refused" in out
    assert main(["queue", "list", *args, "--flagged"]) == 0
    out = capsys.readouterr().out
    assert "! tx-2" in out
    assert "476173******0002" in out
    assert "declined by the host" in out
    assert "4761739001000002" not in out


@pytest.mark.integration
@pytest.mark.parametrize("terminal", ["session_host"], indirect=True)
def test_cli_status_list_export_import(
    terminal: Terminal, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q = terminal.queue()
    _fill(terminal, q, 3)
    q.close()
    args = ["--data-dir", str(terminal.data)]
    assert main(["queue", "status", *args]) == 0
    out = capsys.readouterr().out
    assert "pending        3" in out
    assert "30.03 EUR" in out
    assert main(["queue", "list", *args, "--state", "pending", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "tx-0" in out
    assert "tx-1" in out
    assert "tx-2" not in out

    pw = tmp_path / "pw"
    pw.write_text("technician passphrase\n")
    backup = tmp_path / "queue.backup"
    exp = ["queue", "export", str(backup), *args, "--passphrase-file", str(pw)]
    assert main(exp) == 0
    assert "exported 3 payment(s)" in capsys.readouterr().out
    assert main(exp) == 1
    assert "already exists" in capsys.readouterr().err

    # A replacement unit: its own keystore and data key, enrolled with the same merchant; the
    # import asks the acquirer (by its URL) to confirm the old unit's key.
    new = tmp_path / "replacement"
    new.mkdir()
    (new / "device-secret").write_bytes(SECRET)
    (new / "device-secret").chmod(0o600)
    ks = Keystore.create(new, SECRET, serial="PIPOS-Q-2", scrypt_n=2**10)
    seq = SequenceCounter(new / "sequence.json")
    host = terminal.host
    with AcquirerClient(host.url, ks, seq, **host.client_options(sleep=lambda _s: None)) as client:
        client.enrol(host.activation_code())
    seq.close()
    imp = ["queue", "import", str(backup), "--data-dir", str(new), "--host-url", host.url]
    imp += ["--passphrase-file", str(pw)]
    assert main(imp) == 0
    assert "imported 3 payment(s); 0 already in the queue" in capsys.readouterr().out
    assert main(imp) == 0
    assert "imported 0 payment(s); 3 already in the queue" in capsys.readouterr().out
    bad = tmp_path / "bad-pw"
    bad.write_text("not the passphrase\n")
    assert main([*imp[:-1], str(bad)]) == 1
    assert "wrong passphrase" in capsys.readouterr().err


def test_cli_errors_are_specific(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "status", "--db", str(tmp_path / "nope.sqlite3")]) == 1
    assert "no offline queue at" in capsys.readouterr().err
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"garbage" * 1000)
    assert main(["queue", "list", "--db", str(junk)]) == 1
    assert "damaged or not an SQLite database" in capsys.readouterr().err
    assert main(["queue", "export", str(tmp_path / "x"), "--data-dir", str(tmp_path)]) == 1
    assert "no keystore in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["queue", "list", "--limit", "0"])
    assert "expected 1 or more" in capsys.readouterr().err


def test_progress_bar_without_a_tty() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=10, tty=False)
    for done in range(0, 101):
        bar(done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[..........] 0/100 sent"
    assert lines[-1] == "[##########] 100/100 sent"
    assert len(lines) == 11  # one line per tenth, no carriage returns
    assert "\r" not in out.getvalue()


def test_progress_bar_on_a_tty_redraws_one_line() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=4, tty=True)
    bar(0, 2)
    bar(1, 2)
    bar(2, 2)
    assert out.getvalue() == "\r[....] 0/2 sent\r[##..] 1/2 sent\r[####] 2/2 sent\n"


def test_limits_from_terminal_parameters() -> None:
    params = OfflineParams(
        max_transaction_amount=5000, max_total_amount={978: 25000}, max_count=3, max_age_hours=2
    )
    limits = limits_from_params(params, 978)
    assert limits.max_transaction_amount == {978: 5000}
    assert limits.max_age_seconds == 7200
    assert not limits_from_params(None, 978).enabled


def test_durable_enqueue_is_committed_before_return(terminal: Terminal) -> None:
    """Another connection (another process in production) sees the payment at once."""
    q = terminal.queue()
    q.enqueue(terminal.sign(_payment(7)))
    other = OfflineQueue.open(terminal.data / "offline_queue.sqlite3")
    assert other.get("tx-7") is not None
    other.close()
    q.close()
