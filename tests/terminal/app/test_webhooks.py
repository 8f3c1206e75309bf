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
import sqlite3
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
from terminal.store.webhooks import JournalCursor, JournalFeed, WebhookStore, signing_key

TOKEN = "reg-token-0123456789"
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def _key(token: str) -> bytes:
    """The signing key as docs/api.md tells a register to derive it from its token."""
    return hmac.new(token.encode(), b"pipos-webhook-v1", hashlib.sha256).digest()


def test_the_signature_is_stripes_scheme_keyed_by_the_key_derived_from_the_token() -> None:
    # Known answers, worked out apart (openssl dgst -sha256 -hmac): the key is
    # HMAC-SHA256(key=TOKEN, msg="pipos-webhook-v1"), the signature HMAC-SHA256(key=that
    # key, msg="1767225600." + body).
    key = "12e16fc7334b7c13eaf3cf7a42046e9efddc611455f7ed609c51dd9761f10bcd"
    assert signing_key(TOKEN).hex() == key
    assert _key(TOKEN).hex() == key
    body = b'{"id":"evt_S1_7","type":"transaction.final"}'
    expected = "2082d55d2d4bb8773b6d80598d9b34f03bd30506427f68d0eb513a01406f03a8"
    assert sign(bytes.fromhex(key), 1767225600, body) == f"t=1767225600,v1={expected}"


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
        self.store.set_endpoint(register, url, token, self.clock(), feed=self.feed)

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
    # The signature verifies with the key derived from the register's token, over
    # "<t>.<body as sent>".
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", first.headers[SIGNATURE_HEADER])
    assert match is not None
    assert int(match[1]) == int(T0)
    mac = hmac.new(_key(TOKEN), match[1].encode() + b"." + first.body, hashlib.sha256)
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
    # Each signed with the key of its own register's token.
    for r in receiver.got:
        token = "token-a-123456" if r.path == "/a" else "token-b-123456"
        t = r.headers[SIGNATURE_HEADER].split(",")[0][2:]
        assert r.headers[SIGNATURE_HEADER] == sign(_key(token), int(t), r.body)
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
    store.set_endpoint("till-1", receiver.url(), TOKEN, time.time(), feed=feed)
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


# --- review of issue 18: one bad URL, old events at the end of day, keys at rest -----------


def test_a_url_the_http_client_cannot_use_fails_its_own_delivery_and_no_other(
    rig: Rig, receiver: Receiver
) -> None:
    # A host label of 64 characters: httpx raises UnicodeError (not an httpx.HTTPError) when
    # it sends to it. The API refuses such a URL now; a file written before may hold one.
    rig.set_webhook("till-bad", f"http://{'a' * 64}.example/hook", token="token-bad-1234")
    rig.set_webhook("till-good", receiver.url(), token="token-good-123")
    rig.final_sale("S1")
    rig.final_sale("S2")
    rig.worker.run_once()
    rig.worker.run_once()
    assert receiver.ids() == [
        f"evt_S1_{rig.journal.get('S1').revision}",  # type: ignore[union-attr]
        f"evt_S2_{rig.journal.get('S2').revision}",  # type: ignore[union-attr]
    ]
    # The bad one is a failed attempt like any other: counted, retried after its backoff.
    assert rig.store.pending("till-bad") == (2, "not sent (UnicodeError)")
    (head,) = [d for d in rig.store.due(T0 + 1) if d.register == "till-bad"]
    assert (head.attempts, head.next_at) == (1, T0 + 1)


def test_a_poster_that_raises_anything_fails_only_that_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    store = WebhookStore(tmp_path / "webhooks.sqlite3")
    feed = JournalFeed(journal)
    sent: list[str] = []

    def post(url: str, body: bytes, headers: Any) -> int:
        if "broken" in url:
            raise RuntimeError(f"cannot send to {url}")
        sent.append(url)
        return 200

    worker = WebhookWorker(
        store, feed, lambda r: r.to_json(), clock=lambda: T0, random=lambda: 0.5, post=post
    )
    try:
        store.set_endpoint("till-a", "https://broken.example/k/SECRET", "t-a-123456", T0, feed=feed)
        store.set_endpoint("till-b", "https://fine.example/hook", "t-b-123456", T0, feed=feed)
        started = journal.insert(_record("S1", 500))
        journal.update(started, state=State.APPROVED, result="approved")
        with caplog.at_level("INFO", logger="terminal.app.webhooks"):
            assert worker.run_once() >= 0
        assert sent == ["https://fine.example/hook"]
        assert store.pending("till-a") == (1, "not sent (RuntimeError)")
        # Logged as a warning, without the URL's path, where a register may keep a secret
        # of its own.
        (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
        assert "https://broken.example" in warning.getMessage()
        assert "RuntimeError" in warning.getMessage()
        assert "SECRET" not in caplog.text
    finally:
        worker.close()
        store.close()
        journal.close()


def test_what_finished_before_the_first_webhook_is_never_sent_not_even_at_the_end_of_day(
    rig: Rig, receiver: Receiver
) -> None:
    rig.final_sale("S0")  # before any webhook
    running = rig.journal.insert(_record("S1", 700))  # still in progress when it is set
    rig.set_webhook("till-1", receiver.url())
    rig.journal.update(running, state=State.APPROVED, result="approved", host_ref="A-S1")
    rig.final_sale("S2")
    for _ in range(3):
        rig.worker.run_once()
    assert [(r.event["data"]["id"], r.event["type"]) for r in receiver.got] == [
        ("S1", "transaction.final"),
        ("S2", "transaction.final"),
    ]
    # The end of day writes every one of them again (a new revision, the batch's id):
    # nothing a register sees changed, so nothing is sent, S0 included.
    assert rig.journal.close_batch("B1", "2026-01-01T23:00:00+00:00", []) == 3
    for _ in range(3):
        rig.worker.run_once()
    assert len(receiver.got) == 2
    # A later change of S0 is a change the register has not seen: an update.
    rig.journal.insert(_record("R0", 100, kind=Kind.REFUND, state=State.APPROVED, original_id="S0"))
    for _ in range(3):
        rig.worker.run_once()
    assert [(r.event["data"]["id"], r.event["type"]) for r in receiver.got[2:]] == [
        ("R0", "transaction.final"),
        ("S0", "transaction.updated"),
    ]


def test_a_register_gets_nothing_written_before_it_set_its_own_webhook(
    rig: Rig, receiver: Receiver
) -> None:
    rig.set_webhook("till-a", receiver.url("/a"), token="token-a-123456")
    rig.final_sale("S1")  # not yet fed to the outbox when till-b sets its webhook
    rig.set_webhook("till-b", receiver.url("/b"), token="token-b-123456")
    rig.final_sale("S2")
    for _ in range(3):
        rig.worker.run_once()
    assert [r.event["data"]["id"] for r in receiver.got if r.path == "/a"] == ["S1", "S2"]
    assert [r.event["data"]["id"] for r in receiver.got if r.path == "/b"] == ["S2"]


def test_every_row_of_a_revision_larger_than_a_page_is_queued_once(
    rig: Rig, receiver: Receiver
) -> None:
    rig.set_webhook("till-1", receiver.url())
    for n in range(250):  # approved as written: final from their first revision
        rig.journal.insert(_record(f"S{n:03d}", 100 + n, state=State.APPROVED, result="approved"))
    # Closed before the worker read any of them: all 250 now share one revision, more than
    # the worker reads at a time (200).
    rig.journal.close_batch("B1", "2026-01-01T23:00:00+00:00", [])
    (revision,) = {r.revision for r in rig.journal.in_batch("B1")}
    assert rig.worker.feed_once() == 250
    assert rig.worker.feed_once() == 0
    assert rig.store.pending("till-1") == (250, "")
    assert rig.store.cursor() == (revision, "S249")


def test_the_feed_pages_one_revision_by_id(rig: Rig) -> None:
    for n in range(5):
        rig.journal.insert(_record(f"S{n}", 100, state=State.APPROVED, result="approved"))
    rig.journal.close_batch("B1", "2026-01-01T23:00:00+00:00", [])
    revision = rig.journal.latest_revision()
    pages: list[list[str]] = []
    at = JournalCursor(0, "")
    while True:
        records, at = rig.feed.since(at, 2)
        if not records:
            break
        pages.append([r.id for r in records])
    assert pages == [["S0", "S1"], ["S2", "S3"], ["S4"]]
    assert at == (revision, "S4")
    assert [r.id for r in rig.journal.changed_since(revision, 10, after_id="S2")] == ["S3", "S4"]
    assert rig.journal.changed_since(revision, 10) == []


def test_no_token_is_kept_only_the_key_derived_from_it(rig: Rig, receiver: Receiver) -> None:
    rig.set_webhook("till-1", receiver.url())
    endpoint = rig.store.endpoint("till-1")
    assert endpoint is not None
    assert endpoint.signing_key == _key(TOKEN)
    assert TOKEN not in repr(endpoint)
    rig.store.close()
    assert _stored_bytes(rig.tmp).find(TOKEN.encode()) == -1
    assert _key(TOKEN) in _stored_bytes(rig.tmp)


def _stored_bytes(tmp: Path) -> bytes:
    """Everything of the webhook store on disk: the file, its WAL and shared memory."""
    return b"".join(
        path.read_bytes() for path in sorted(tmp.glob("webhooks.sqlite3*")) if path.is_file()
    )


#: The schema 1 file, as the release before kept it: the tokens in clear.
_SCHEMA_1 = (
    "CREATE TABLE endpoints (register TEXT PRIMARY KEY, url TEXT NOT NULL, token TEXT NOT NULL, "
    "created_at REAL NOT NULL, updated_at REAL NOT NULL)",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE seen (txn_id TEXT PRIMARY KEY, digest TEXT NOT NULL)",
    "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, register TEXT NOT NULL, "
    "event_id TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL, "
    "attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, "
    "last_error TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX outbox_register ON outbox (register, id)",
    "PRAGMA user_version = 1",
)


def _schema_1_file(path: Path, tokens: dict[str, str], url: str, revision: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in _SCHEMA_1:
            conn.execute(statement)
        for register, token in tokens.items():
            conn.execute(
                "INSERT INTO endpoints VALUES (?, ?, ?, ?, ?)", (register, url, token, T0, T0)
            )
        conn.execute("INSERT INTO state VALUES ('journal_revision', ?)", (revision,))
        conn.execute(
            "INSERT INTO outbox (register, event_id, body, created_at, next_at) "
            "VALUES ('till-1', 'evt_S1_1', '{\"id\":\"evt_S1_1\"}', ?, ?)",
            (T0, T0),
        )
    conn.close()


def test_a_schema_1_file_has_its_clear_tokens_turned_into_keys_in_place(
    rig: Rig, receiver: Receiver
) -> None:
    rig.close()  # the rig's files are replaced: a journal, and a schema 1 store beside it
    journal = Journal(rig.tmp / "journal.sqlite3")
    first = journal.insert(_record("S0", 900))  # ended before the webhook: never sent
    journal.update(first, state=State.APPROVED, result="approved", host_ref="A-S0")
    revision = journal.latest_revision()
    journal.close()
    tokens = {"till-1": TOKEN, "till-2": "token-two-123456"}
    _schema_1_file(rig.tmp / "webhooks.sqlite3", tokens, receiver.url(), revision)
    assert TOKEN.encode() in _stored_bytes(rig.tmp)

    rig.journal, rig.store, rig.feed, rig.worker = _open(rig.tmp, rig.clock)
    for register, token in tokens.items():
        endpoint = rig.store.endpoint(register)
        assert endpoint is not None
        assert endpoint.signing_key == _key(token)
    assert rig.store.cursor() == (revision, "")
    # Not a byte of either token is left in the file, its WAL or free pages.
    for token in tokens.values():
        assert token.encode() not in _stored_bytes(rig.tmp)

    # What waited in the outbox is delivered, signed with the derived key.
    rig.worker.run_once()
    (got,) = receiver.got
    t = got.headers[SIGNATURE_HEADER].split(",")[0][2:]
    assert got.headers[SIGNATURE_HEADER] == sign(_key(TOKEN), int(t), got.body)
    # And the sale that ended before the webhook is not sent at the end of day.
    rig.journal.close_batch("B1", "2026-01-01T23:00:00+00:00", [])
    rig.final_sale("S1")
    for _ in range(3):
        rig.worker.run_once()
    assert [r.event["data"]["id"] for r in receiver.got[1:]] == ["S1", "S1"]  # one per register


def test_the_schema_1_upgrade_is_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "webhooks.sqlite3"
    tokens = {"till-1": TOKEN, "till-2": "token-two-123456"}
    _schema_1_file(path, tokens, "https://register.example/hook", 3)
    import terminal.store.webhooks as webhooks

    derived: list[str] = []

    def fails_on_the_second(token: str) -> bytes:
        if derived:
            raise RuntimeError("power cut")
        derived.append(token)
        return _key(token)

    monkeypatch.setattr(webhooks, "signing_key", fails_on_the_second)
    store = WebhookStore(path)
    with pytest.raises(RuntimeError, match="power cut"):
        store.endpoint("till-1")
    store.close()
    # Nothing of it stayed: still schema 1, both tokens as they were.
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert dict(conn.execute("SELECT register, token FROM endpoints").fetchall()) == tokens
    conn.close()
    monkeypatch.undo()
    store = WebhookStore(path)
    try:
        endpoint = store.endpoint("till-2")
        assert endpoint is not None
        assert endpoint.signing_key == _key("token-two-123456")
    finally:
        store.close()
