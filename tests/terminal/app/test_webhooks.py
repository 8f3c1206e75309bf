"""The webhook delivery worker (terminal.app.webhooks) and its outbox
(terminal.store.webhooks): a real journal and store in a temp dir, a small receiver on
127.0.0.1, a fake clock and a fixed jitter; the worker driven pass by pass (run_once), and
once as its thread."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from terminal.app.webhooks import SIGNATURE_HEADER, WebhookWorker, retry_delay, sign
from terminal.domain.records import DECLINED_AFTER_THE_FACT, Kind, State, TxnRecord
from terminal.store.journal import Journal
from terminal.store.webhooks import JournalFeed, WebhookStore

TOKEN = "reg-token-0123456789"
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def test_the_signature_is_stripes_scheme_keyed_by_the_register_token() -> None:
    body = b'{"id":"evt_S1_7","type":"transaction.final"}'
    # Known answer: HMAC-SHA256(key=TOKEN, msg="1767225600." + body), worked out apart.
    expected = "634e282a32050a6a6864a2790cc83b57c0d38cd0a902baa8777090ae6587f2d5"
    assert sign(TOKEN, 1767225600, body) == f"t=1767225600,v1={expected}"
    assert hmac.new(TOKEN.encode(), b"1767225600." + body, hashlib.sha256).hexdigest() == expected


def test_retries_back_off_exponentially_with_jitter_up_to_five_minutes() -> None:
    assert [retry_delay(n, lambda: 0.5) for n in range(1, 11)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
        256.0,
        300.0,
    ]
    assert retry_delay(3, lambda: 0.0) == 2.0  # half of 4 s
    assert retry_delay(3, lambda: 0.99) == pytest.approx(5.96)
    assert retry_delay(40, lambda: 0.99) == 300.0  # never above the cap


# --- the receiver -------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1: records every POST, answers each path's next
    status from `statuses` (200 when none is left)."""

    server: ThreadingHTTPServer
    got: list[Received] = field(default_factory=list)
    statuses: dict[str, deque[int]] = field(default_factory=dict)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def answer(self, path: str, *statuses: int) -> None:
        self.statuses.setdefault(path, deque()).extend(statuses)

    def ids(self, path: str = "/hook") -> list[str]:
        return [r.event["id"] for r in self.got if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec = holder[0]
            rec.got.append(Received(self.path, dict(self.headers.items()), body))
            queue = rec.statuses.get(self.path)
            self.send_response(queue.popleft() if queue else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()


def _refusing_url() -> str:
    """A loopback URL nothing listens on (connections refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# --- the worker pass by pass ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    tmp: Path
    clock: Clock
    journal: Journal
    store: WebhookStore
    feed: JournalFeed
    worker: WebhookWorker

    def reopen(self) -> None:
        """A restart: everything closed, then opened again from the same files."""
        self.worker.close()
        self.feed.close()
        self.store.close()
        self.journal.close()
        self.journal, self.store, self.feed, self.worker = _open(self.tmp, self.clock)

    def close(self) -> None:
        self.worker.close()
        self.feed.close()
        self.store.close()
        self.journal.close()

    def set_webhook(self, register: str, url: str, token: str = TOKEN) -> None:
        self.store.set_endpoint(
            register, url, token, self.clock(), journal_revision=self.feed.latest()
        )

    def final_sale(self, txn_id: str, amount: int = 1000, **fields: Any) -> TxnRecord:
        """A sale started (no event: not final), then approved (its final state)."""
        started = self.journal.insert(_record(txn_id, amount))
        return self.journal.update(
            started,
            **({"state": State.APPROVED, "result": "approved", "host_ref": f"A-{txn_id}"} | fields),
        )


def _record(txn_id: str, amount: int, **fields: Any) -> TxnRecord:
    values: dict[str, Any] = {
        "id": txn_id,
        "kind": Kind.SALE,
        "state": State.IN_PROGRESS,
        "amount": amount,
        "currency": 978,
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "masked_pan": "476173******0010",
        "brand": "VISA",
    } | fields
    return TxnRecord(**values)


def _open(tmp: Path, clock: Clock) -> tuple[Journal, WebhookStore, JournalFeed, WebhookWorker]:
    journal = Journal(tmp / "journal.sqlite3")
    store = WebhookStore(tmp / "webhooks.sqlite3")
    feed = JournalFeed(journal)
    worker = WebhookWorker(
        store, feed, lambda r: r.to_json(), clock=clock, random=lambda: 0.5, sleep=lambda s: None
    )
    return journal, store, feed, worker


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = Clock()
    r = Rig(tmp_path, clock, *_open(tmp_path, clock))
    try:
        yield r
    finally:
        r.close()


def test_nothing_is_kept_until_a_register_sets_a_webhook_and_nothing_before_it_is_sent(
    rig: Rig, receiver: Receiver
) -> None:
    rig.final_sale("S0")
    rig.worker.run_once()
    assert not rig.store.exists()  # no register asked for webhooks: no file, no work
    rig.set_webhook("till-1", receiver.url())
    assert (rig.tmp / "webhooks.sqlite3").stat().st_mode & 0o777 == 0o600
    rig.final_sale("S1")
    rig.worker.run_once()
    assert receiver.ids() == [f"evt_S1_{rig.journal.get('S1').revision}"]  # type: ignore[union-attr]


def test_a_final_state_is_posted_signed_and_later_changes_as_updates(
    rig: Rig, receiver: Receiver
) -> None:
    rig.set_webhook("till-1", receiver.url())
    sale = rig.final_sale("S1")
    rig.worker.run_once()
    (first,) = receiver.got
    # The signature verifies with the register's token, over "<t>.<body as sent>".
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", first.headers[SIGNATURE_HEADER])
    assert match is not None
    assert int(match[1]) == int(T0)
    mac = hmac.new(TOKEN.encode(), match[1].encode() + b"." + first.body, hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), match[2])
    event = first.event
    assert event["id"] == f"evt_S1_{sale.revision}"
    assert event["type"] == "transaction.final"
    assert event["created_at"] == "2026-01-01T00:00:00+00:00"
    assert (event["data"]["id"], event["data"]["state"], event["data"]["amount"]) == (
        "S1",
        "approved",
        1000,
    )
    # No card data beyond the masked PAN: no run of digits a PAN could be, no track data.
    assert event["data"]["masked_pan"] == "476173******0010"
    text = first.body.decode()
    assert re.search(r"\d{12,19}", text) is None
    assert "track" not in text.lower()
    assert TOKEN not in text

    # The batch closed: nothing a register sees changed, nothing is sent.
    rig.journal.close_batch("B1", "2026-01-01T23:00:00+00:00", [])
    rig.worker.run_once()
    assert len(receiver.got) == 1
    # A refund: its own final state, then the sale's change (its refunded amount).
    rig.journal.insert(_record("R1", 300, kind=Kind.REFUND, state=State.APPROVED, original_id="S1"))
    rig.worker.run_once()
    rig.worker.run_once()
    assert [(r.event["data"]["id"], r.event["type"]) for r in receiver.got[1:]] == [
        ("R1", "transaction.final"),
        ("S1", "transaction.updated"),
    ]
    assert receiver.got[2].event["data"]["refunded_amount"] == 300


def test_an_offline_sale_sent_later_or_declined_after_the_fact_is_an_update(
    rig: Rig, receiver: Receiver
) -> None:
    rig.set_webhook("till-1", receiver.url())
    offline = rig.final_sale("S1", state=State.APPROVED_OFFLINE, result="approved", host_ref="")
    rig.worker.run_once()
    rig.journal.update(offline, host_ref="O-1")
    rig.worker.run_once()
    assert [(r.event["type"], r.event["data"]["host_ref"]) for r in receiver.got] == [
        ("transaction.final", ""),
        ("transaction.updated", "O-1"),
    ]
    declined = rig.final_sale("S2", state=State.APPROVED_OFFLINE, result="approved", host_ref="")
    rig.worker.run_once()
    rig.journal.update(declined, reason=DECLINED_AFTER_THE_FACT)
    rig.worker.run_once()
    assert [(r.event["type"], r.event["data"]["reason"]) for r in receiver.got[2:]] == [
        ("transaction.final", ""),
        ("transaction.updated", DECLINED_AFTER_THE_FACT),
    ]


def test_a_500_is_retried_after_1_then_2_seconds(rig: Rig, receiver: Receiver) -> None:
    rig.set_webhook("till-1", receiver.url())
    receiver.answer("/hook", 500, 503)
    rig.final_sale("S1")
    attempts: list[float] = []
    for moment in (0, 0.5, 0.99, 1, 2.9, 3, 4):
        rig.clock.now = T0 + moment
        before = len(receiver.got)
        rig.worker.run_once()
        if len(receiver.got) > before:
            attempts.append(moment)
    assert attempts == [0, 1, 3]
    assert rig.store.pending("till-1") == (0, "")
    # Each attempt is signed afresh: its own t.
    stamps = [r.headers[SIGNATURE_HEADER].split(",")[0] for r in receiver.got]
    assert stamps == [f"t={int(T0)}", f"t={int(T0) + 1}", f"t={int(T0) + 3}"]


def test_a_refused_connection_is_retried_with_backoff_and_given_up_after_a_day(
    rig: Rig, receiver: Receiver
) -> None:
    rig.set_webhook("till-1", _refusing_url())
    rig.final_sale("S1")
    tried: list[float] = []
    for moment in (0, 1, 2, 3, 6, 7, 14, 15):
        rig.clock.now = T0 + moment
        rig.worker.feed_once()
        pending_before = rig.store.due(rig.clock())
        rig.worker.run_once()
        if pending_before:
            tried.append(moment)
    assert tried == [0, 1, 3, 7, 15]
    count, error = rig.store.pending("till-1")
    assert count == 1
    assert error == "no answer (ConnectError)"
    # The register fixes its URL: the next attempt, when due, gets through.
    rig.set_webhook("till-1", receiver.url())
    rig.clock.now = T0 + 15 + 16
    rig.worker.run_once()
    assert [r.event["data"]["id"] for r in receiver.got] == ["S1"]

    # One that never gets through is given up after 24 hours, and the next one is sent.
    rig.set_webhook("till-1", _refusing_url())
    rig.final_sale("S2")
    rig.worker.run_once()
    rig.final_sale("S3")
    rig.clock.now += 24 * 3600
    rig.set_webhook("till-1", receiver.url())
    rig.worker.run_once()
    rig.worker.run_once()
    assert [r.event["data"]["id"] for r in receiver.got] == ["S1", "S3"]


def test_a_restart_loses_no_delivery_and_no_change_made_while_stopped(
    rig: Rig, receiver: Receiver
) -> None:
    rig.set_webhook("till-1", receiver.url())
    receiver.answer("/hook", 500)
    rig.final_sale("S1")
    rig.worker.run_once()  # refused with a 500: stays in the outbox
    rig.reopen()
    # Committed to the journal while the worker was not running (a crash before queueing).
    rig.final_sale("S2")
    rig.reopen()
    rig.clock.now = T0 + 1
    rig.worker.run_once()
    rig.worker.run_once()
    assert [r.event["data"]["id"] for r in receiver.got] == ["S1", "S1", "S2"]
    assert rig.store.pending("till-1") == (0, "")


def test_each_register_gets_its_events_in_order_and_one_failing_holds_up_no_other(
    rig: Rig, receiver: Receiver
) -> None:
    rig.set_webhook("till-a", receiver.url("/a"), token="token-a-123456")
    rig.set_webhook("till-b", receiver.url("/b"), token="token-b-123456")
    receiver.answer("/a", 500)
    rig.final_sale("S1")
    rig.final_sale("S2")
    rig.worker.run_once()  # a: S1 refused; b: S1
    rig.worker.run_once()  # a waits for its retry; b: S2
    assert [r.event["data"]["id"] for r in receiver.got if r.path == "/b"] == ["S1", "S2"]
    assert [r.event["data"]["id"] for r in receiver.got if r.path == "/a"] == ["S1"]
    rig.clock.now = T0 + 1
    rig.worker.run_once()
    rig.worker.run_once()
    assert [r.event["data"]["id"] for r in receiver.got if r.path == "/a"] == ["S1", "S1", "S2"]
    # Each signed with its own register's token.
    for r in receiver.got:
        token = "token-a-123456" if r.path == "/a" else "token-b-123456"
        t = r.headers[SIGNATURE_HEADER].split(",")[0][2:]
        assert r.headers[SIGNATURE_HEADER] == sign(token, int(t), r.body)
    # A register that removes its webhook drops what it had left.
    receiver.answer("/b", 500)
    rig.final_sale("S3")
    rig.worker.run_once()
    assert rig.store.delete_endpoint("till-b") == 1
    assert rig.store.delete_endpoint("till-b") is None


def test_the_worker_thread_delivers_and_stops(tmp_path: Path, receiver: Receiver) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    store = WebhookStore(tmp_path / "webhooks.sqlite3")
    feed = JournalFeed(journal)
    worker = WebhookWorker(store, feed, lambda r: r.to_json(), poll=0.05)
    store.set_endpoint("till-1", receiver.url(), TOKEN, time.time(), journal_revision=0)
    worker.start()
    try:
        started = journal.insert(_record("S1", 500))
        journal.update(started, state=State.APPROVED, result="approved")
        deadline = time.monotonic() + 10
        while not receiver.got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r.event["data"]["id"] for r in receiver.got] == ["S1"]
    finally:
        worker.close()
        feed.close()
        store.close()
        journal.close()
    assert not any(t.name == "webhooks" for t in threading.enumerate())
