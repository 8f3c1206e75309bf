"""A fleet of terminals under chaos, and the reconciliation that proves nothing was lost.

Shared by the short run in the test suite (tests/test_fleet.py) and the long one in the bench
(bench/bench_fleet.py). Everything is real and on loopback:

* the simulated acquirer host runs as its own process (`python -m simulator.host`, uvicorn,
  SQLite ledger) and is taken down with SIGKILL for a while, then started again on the same
  port and file;
* each terminal is its own process (`python -m bench.fleet child DIR URL SEED`) assembled by
  `terminal.app.runtime.start_terminal` exactly as `pipos run` does: its own keystore and key,
  sequence counter, journal, offline queue file, a simulated contactless field with virtual
  cards behind the `sim:` driver, and the background forwarder. It sells in a loop and prints
  ``SALE <id> <state> <result>`` only once `Checkout.wait` returned, i.e. once the screen
  would show the result (which the journal has on disk first);
* the parent arms faults on the host's protocol paths (refused connections, delays past the
  client's read timeout, 500s, responses dropped after commit, corrupted responses) and
  SIGKILLs terminals at random instants, restarting each a moment later.

``FleetConfig.protocol`` "iso8583" runs the same fleet with the money messages on the ISO 8583
link (docs/iso8583.md): the host process serves ISO 8583 beside the JSON host
(``--iso8583-port``, one process: a SIGKILL takes both down), each terminal is registered for
it at provisioning and its TMK loaded under the key-injection facility's TEST key, the faults
are armed on the ISO pseudo-paths (``/v1/iso8583/<MTI>``) with the same modes, and the host's
ledger rows, keyed by the host's own dedup key (``iso8583:<class>:<STAN>:<field 7>``) and
named by RRN, are mapped back to the terminal's idempotency keys (the link's message memory)
and refs (the host's RRN table) before the same reconciliation.

At the end every terminal is opened once more (recovery, reversals, queue drain with no faults
left) and its journal and queue are reconciled with the host's ledger. See
:meth:`FleetReport.problems` for the rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from terminal.acquirer.iso8583.settings import Iso8583Settings
    from terminal.store.keys import Keystore

ROOT = Path(__file__).resolve().parent.parent
SECRET_FILE = "device-secret"
SCRYPT_N = 2**10  # low key-derivation cost: terminals restart often in the run
CARDS = ("visa", "mastercard", "visa_debit", "mastercard_phone")
FAULT_PATHS = ("/v1/authorisations", "/v1/batches/offline", "/v1/reversals")
#: The same messages on the ISO 8583 host's pseudo-paths: sales (0200), offline advices
#: (0220) and reversals (0400). (Their repeats, 0221 and 0401, are not faulted: each is
#: sent only after one of these failed, too rarely for a fault armed on it to be hit.)
ISO8583_FAULT_PATHS = tuple(f"/v1/iso8583/{mti}" for mti in ("0200", "0220", "0400"))
PROTOCOLS = ("pipos", "iso8583")
FAULT_MODES = ("refuse", "delay", "http_500", "drop_after_commit", "corrupt")
#: Short timeouts and backoff: a chaos run has no time to wait like a real terminal would.
CLIENT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 0.5,
    "read_timeout": 1.0,
    "retries": 2,
    "backoff": (0.05, 0.3),
    "max_reversal_attempts": 2,
}
#: The ISO 8583 link's equivalents (Iso8583Link options).
ISO8583_OPTIONS: dict[str, Any] = {
    "connect_timeout": 0.5,
    "answer_timeout": 1.0,
    "retries": 2,
    "backoff": (0.05, 0.3),
    "max_reversal_attempts": 2,
}
#: In a terminal's directory: its ISO 8583 identity, written at provisioning (the fleet's
#: stand-in for the configuration file's [iso8583] table).
ISO8583_FILE = "fleet-iso8583.json"
APPROVED_STATES = frozenset({"approved", "approved_offline"})


@dataclass(frozen=True)
class FleetConfig:
    terminals: int = 4
    duration: float = 20.0  # seconds of selling
    outage_at: float = 5.0  # seconds into the run the host goes down
    outage_for: float = 4.0
    kill_every: float = 2.0  # mean seconds between SIGKILLs of a random terminal
    fault_every: float = 0.6  # mean seconds between armed faults (host up only)
    background_interval: float = 0.5  # terminal's forwarder / reversal loop
    sale_pause: float = 0.1  # at most this long between two sales on one terminal
    seed: int = 20240611
    protocol: str = "pipos"  # the money messages' link: "pipos" or "iso8583"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")


@dataclass
class TerminalLog:
    """What one terminal printed, stamped with the parent's monotonic clock."""

    index: int
    sales: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, id, state, result
    queue: list[tuple[float, int]] = field(default_factory=list)  # t, outstanding count
    starts: int = 0


@dataclass
class FleetReport:
    config: FleetConfig
    terminals: int = 0
    sales: int = 0
    shown_approved: int = 0
    approved_online: int = 0
    approved_offline: int = 0
    declined: Counter[str] = field(default_factory=Counter)
    faults_armed: int = 0
    faults_hit: int = 0
    kills: int = 0
    host_outages: int = 0
    settled: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)
    declined_after_the_fact: list[str] = field(default_factory=list)
    lost_responses: int = 0  # sales that ended "no response from the bank"
    reversals: int = 0  # ledger rows reversed
    reversals_unmatched: list[str] = field(default_factory=list)
    pending_reversals: int = 0
    queue_left: int = 0
    backlog: int = 0  # offline payments outstanding when the host came back
    drain_seconds: float | None = None
    reconnect_offsets: list[float] = field(default_factory=list)  # s after host back, first upload
    final_settle_seconds: float = 0.0
    wall_seconds: float = 0.0

    def problems(self) -> list[str]:
        """Empty when the run reconciles: every payment shown approved is settled exactly
        once, nothing is lost, doubled or unexplained, every reversal matches a lost response,
        and nothing is left pending."""
        out = []
        if self.lost:
            out.append(f"lost: {self.lost[:10]}")
        if self.duplicated:
            out.append(f"duplicated: {self.duplicated[:10]}")
        if self.unexplained:
            out.append(f"unexplained ledger rows: {self.unexplained[:10]}")
        if self.reversals_unmatched:
            out.append(f"reversals without a lost response: {self.reversals_unmatched[:10]}")
        if self.declined_after_the_fact:
            out.append(f"approved offline, declined by host: {self.declined_after_the_fact[:10]}")
        if self.pending_reversals:
            out.append(f"{self.pending_reversals} reversals still pending")
        if self.queue_left:
            out.append(f"{self.queue_left} payments still in offline queues")
        return out

    @property
    def reconnect_spread(self) -> float | None:
        offsets = self.reconnect_offsets
        return max(offsets) - min(offsets) if len(offsets) > 1 else None

    def summary(self) -> str:
        declined = ", ".join(f"{k} {v}" for k, v in sorted(self.declined.items())) or "none"
        drain = "n/a" if self.drain_seconds is None else f"{self.drain_seconds:.2f} s"
        offsets = ", ".join(f"{o:.2f}" for o in sorted(self.reconnect_offsets)) or "n/a"
        return "\n".join(
            [
                f"fleet: {self.terminals} terminals over {self.config.protocol}, "
                f"{self.wall_seconds:.1f} s wall",
                f"payments: {self.sales} sales, {self.shown_approved} shown approved "
                f"({self.approved_online} online, {self.approved_offline} offline), "
                f"{self.settled} settled in the host ledger",
                f"declined: {declined}",
                f"faults: {self.faults_armed} armed, {self.faults_hit} hit; "
                f"host outages {self.host_outages}; kills {self.kills} (SIGKILL)",
                f"lost responses {self.lost_responses}, reversals in ledger {self.reversals}, "
                f"unmatched {len(self.reversals_unmatched)}",
                f"backlog at host return {self.backlog}, drained in {drain}; "
                f"first uploads after return at [{offsets}] s",
                f"final settle {self.final_settle_seconds:.2f} s",
                f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
                f"unexplained {len(self.unexplained)}",
            ]
        )


# --- processes -----------------------------------------------------------------------------


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HostProcess:
    """The simulated acquirer in its own process, on a fixed loopback port; with
    `iso8583_port`, the ISO 8583 host too, in the same process (both die together)."""

    def __init__(self, db: Path, port: int, iso8583_port: int | None = None) -> None:
        self.db = db
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.iso8583_port = iso8583_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        iso = () if self.iso8583_port is None else ("--iso8583-port", str(self.iso8583_port))
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "simulator.host", "--port", str(self.port)),
                *("--db", str(self.db), "--log-level", "critical", *iso),
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            # The ISO 8583 listener is up before the JSON host's (simulator.host.server).
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("simulated acquirer host did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def up(self) -> bool:
        return self.proc is not None


class TerminalProcess:
    def __init__(self, index: int, directory: Path, host_url: str, cfg: FleetConfig) -> None:
        self.index = index
        self.directory = directory
        self.host_url = host_url
        self.cfg = cfg
        self.log = TerminalLog(index)
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.log.starts += 1
        seed = f"{self.cfg.seed}-{self.index}-{self.log.starts}"
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.fleet", "child", str(self.directory)),
                *(self.host_url, seed, str(self.cfg.background_interval), str(self.cfg.sale_pause)),
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if not line.endswith("\n"):  # cut short by the kill: never shown
                break
            parts = line.split()
            now = time.monotonic()
            if parts[:1] == ["SALE"] and len(parts) == 4:
                self.log.sales.append((now, parts[1], parts[2], parts[3]))
            elif parts[:1] == ["QUEUE"] and len(parts) == 2:
                self.log.queue.append((now, int(parts[1])))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        self.proc = None


# --- the terminal child ---------------------------------------------------------------------


def child(directory: Path, host_url: str, seed: str, interval: float, pause: float) -> None:
    """One terminal: sell forever with virtual cards, report results and the queue size."""
    from terminal.app.runtime import start_terminal
    from terminal.checkout.errors import BusyError

    rng = random.Random(seed)
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    rt = start_terminal(
        directory,
        secret=(directory / SECRET_FILE).read_bytes(),
        host_url=host_url,
        scrypt_n=SCRYPT_N,
        card_timeout=10.0,
        client_options=CLIENT_OPTIONS,
        iso8583=iso8583_settings(directory),
    )
    rt.start_background(interval=interval, random=rng.random)
    field = rt.field
    assert field is not None

    def watch_queue() -> None:
        last = -1
        while True:
            count = rt.checkout.queue_summary().count
            if count != last:
                say(f"QUEUE {count}")
                last = count
            time.sleep(0.02)

    threading.Thread(target=watch_queue, daemon=True).start()
    while True:
        amount = rng.randrange(100, 2500)
        if amount % 100 == 51:  # the simulated issuer's "insufficient funds" amounts
            amount += 1
        try:
            record = rt.checkout.start_sale(amount)
        except BusyError:  # the previous sale is still releasing the terminal
            time.sleep(0.005)
            continue
        field.present(f"sim:{rng.choice(CARDS)}")
        record = rt.checkout.wait(record.id, timeout=30)
        say(f"SALE {record.id} {record.state} {record.result or '-'}")
        time.sleep(rng.uniform(0, pause))


# --- the run ---------------------------------------------------------------------------------


def iso8583_settings(directory: Path) -> Iso8583Settings | None:
    """The terminal's ISO 8583 link as it was provisioned (None: the pipos protocol)."""
    from terminal.acquirer.iso8583.settings import Iso8583Settings

    path = directory / ISO8583_FILE
    if not path.exists():
        return None
    identity = json.loads(path.read_text(encoding="utf-8"))
    return Iso8583Settings(
        host="127.0.0.1",
        port=int(identity["port"]),
        terminal_id=str(identity["tid"]),
        merchant_id=str(identity["mid"]),
        options=dict(ISO8583_OPTIONS),
    )


def _provision(directory: Path, host: HostProcess, index: int) -> None:
    """Enrol the terminal at the host (pipos protocol); on ISO 8583, register it there too
    and load its TMK (a TR-31 block under the key-injection facility's TEST key), as a
    technician provisions an ISO 8583 terminal."""
    from terminal.app.runtime import start_terminal

    directory.mkdir(parents=True)
    secret = f"fleet-device-secret-{index:04d}-0123456789".encode()
    (directory / SECRET_FILE).write_bytes(secret)
    (directory / SECRET_FILE).chmod(0o600)
    code = httpx.post(host.url + "/admin/activation-codes", json={"merchant_id": "FLEET"})
    code.raise_for_status()
    rt = start_terminal(
        directory,
        secret=secret,
        host_url=host.url,
        activation_code=str(code.json()["code"]),
        scrypt_n=SCRYPT_N,
        client_options=CLIENT_OPTIONS,
    )
    try:
        if host.iso8583_port is not None:
            _register_iso8583(directory, host, rt.keystore)
    finally:
        rt.close()


def _register_iso8583(directory: Path, host: HostProcess, keystore: Keystore) -> None:
    from simulator.host.iso8583.keys import kif_kbpk
    from terminal.acquirer.iso8583.link import load_terminal_master_key

    assert keystore.terminal_id is not None
    assert host.iso8583_port is not None
    answer = httpx.post(
        host.url + "/admin/iso8583/terminals", json={"terminal_id": keystore.terminal_id}
    )
    answer.raise_for_status()
    registered = answer.json()
    load_terminal_master_key(keystore, kif_kbpk(), str(registered["tmk_key_block"]))
    identity = {"port": host.iso8583_port, "tid": registered["tid"], "mid": registered["mid"]}
    (directory / ISO8583_FILE).write_text(json.dumps(identity), encoding="utf-8")


class _Faults:
    """Arms faults on the host and counts how many were hit."""

    def __init__(self, host: HostProcess, rng: random.Random, paths: tuple[str, ...]) -> None:
        self.host = host
        self.rng = rng
        self.paths = paths
        self.armed_count = 0
        self.hit = 0
        self._armed: dict[str, int] = {}  # path -> times armed with, not yet accounted

    def _snapshot(self) -> dict[str, Any]:
        response = httpx.get(self.host.url + "/admin/faults", timeout=2)
        response.raise_for_status()
        data = response.json()
        return data if isinstance(data, dict) else {}

    def _account(self, paths: list[str], snapshot: dict[str, Any]) -> None:
        for path in paths:
            times = self._armed.pop(path, None)
            if times is None:
                continue
            live = snapshot.get(path)
            self.hit += int(live["hits"]) if isinstance(live, dict) else times

    def arm(self) -> None:
        path = self.rng.choice(self.paths)
        mode = self.rng.choice(FAULT_MODES)
        times = self.rng.randint(1, 3)
        delay = self.rng.choice((200, 1500)) if mode == "delay" else 0  # 1.5 s > read timeout
        self._account([path], self._snapshot())
        body = {path: {"mode": mode, "times": times, "delay_ms": delay}}
        httpx.put(self.host.url + "/admin/faults", json=body, timeout=2).raise_for_status()
        self._armed[path] = times
        self.armed_count += 1

    def finish(self) -> None:
        """Count what was hit and clear the rest (the host must be up)."""
        self._account(list(self._armed), self._snapshot())
        httpx.delete(self.host.url + "/admin/faults", timeout=2).raise_for_status()

    def forget(self) -> None:
        """The host died: faults armed but not hit died with it."""
        self._armed.clear()


def run_fleet(workdir: Path, cfg: FleetConfig | None = None) -> FleetReport:
    cfg = cfg or FleetConfig()
    rng = random.Random(cfg.seed)
    report = FleetReport(cfg, terminals=cfg.terminals)
    started = time.monotonic()
    iso8583 = cfg.protocol == "iso8583"
    host = HostProcess(
        workdir / "acquirer.sqlite3", _free_port(), _free_port() if iso8583 else None
    )
    host.start()
    terminals: list[TerminalProcess] = []
    try:
        for i in range(cfg.terminals):
            directory = workdir / f"terminal-{i:02d}"
            _provision(directory, host, i)
            terminals.append(TerminalProcess(i, directory, host.url, cfg))
        for t in terminals:
            t.start()
        _wait_until_selling(terminals)
        host_back_at = _chaos(cfg, rng, host, terminals, report)
    finally:
        for t in terminals:
            t.kill()
        if not host.up:
            host.start()
    try:
        _measure_drain(terminals, host_back_at, report)
        _reconcile(terminals, host, report)
    finally:
        host.kill()
    report.wall_seconds = time.monotonic() - started
    return report


def _wait_until_selling(terminals: list[TerminalProcess], timeout: float = 60.0) -> None:
    """Until every terminal has started (printed its queue size, then it sells): the chaos's
    clock starts then, so a loaded machine's slow start does not eat the time before the
    outage (a fleet that never sold online before it would prove little)."""
    deadline = time.monotonic() + timeout
    while not all(t.log.queue for t in terminals):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the fleet's terminals did not start within {timeout:g} s")
        dead = [t.index for t in terminals if t.proc is not None and t.proc.poll() is not None]
        if dead:
            raise RuntimeError(f"fleet terminals {dead} exited before they sold")
        time.sleep(0.02)


def _chaos(
    cfg: FleetConfig,
    rng: random.Random,
    host: HostProcess,
    terminals: list[TerminalProcess],
    report: FleetReport,
) -> float | None:
    """Sell for `cfg.duration` seconds with kills, faults and one outage; returns the
    monotonic time the host was back (None: no outage)."""
    faults = _Faults(host, rng, ISO8583_FAULT_PATHS if cfg.protocol == "iso8583" else FAULT_PATHS)
    t0 = time.monotonic()
    next_kill = t0 + rng.expovariate(1 / cfg.kill_every)
    next_fault = t0 + rng.expovariate(1 / cfg.fault_every)
    outage_start = t0 + cfg.outage_at
    outage_end = outage_start + cfg.outage_for
    host_back_at: float | None = None
    restarts: list[tuple[float, TerminalProcess]] = []
    while (now := time.monotonic()) < t0 + cfg.duration:
        if host.up and outage_start <= now < outage_end:
            host.kill()
            faults.forget()
            report.host_outages += 1
        elif not host.up and now >= outage_end:
            host.start()
            host_back_at = time.monotonic()
        if now >= next_kill:
            alive = [t for t in terminals if t.proc is not None]
            if alive:
                victim = rng.choice(alive)
                victim.kill()
                report.kills += 1
                restarts.append((now + rng.uniform(0.1, 0.6), victim))
            next_kill = now + rng.expovariate(1 / cfg.kill_every)
        for due in [r for r in restarts if r[0] <= now]:
            restarts.remove(due)
            due[1].start()
        if host.up and now >= next_fault:
            faults.arm()
            next_fault = now + rng.expovariate(1 / cfg.fault_every)
        time.sleep(0.02)
    if host.up:
        faults.finish()
    report.faults_armed = faults.armed_count
    report.faults_hit = faults.hit
    return host_back_at


def _measure_drain(
    terminals: list[TerminalProcess], host_back_at: float | None, report: FleetReport
) -> None:
    """From the queue sizes the terminals printed: backlog when the host came back, the time
    until every terminal had emptied its queue, and each terminal's first upload."""
    if host_back_at is None:
        return
    done_at: list[float] = []
    for t in terminals:
        before = [n for ts, n in t.log.queue if ts <= host_back_at]
        backlog = before[-1] if before else 0
        report.backlog += backlog
        after = [(ts, n) for ts, n in t.log.queue if ts > host_back_at]
        empty = [ts for ts, n in after if n == 0]
        if backlog and not empty:
            return  # never drained during the run: the final settle did it
        if backlog:
            done_at.append(empty[0])
            previous = backlog
            for ts, n in after:
                if n < previous:
                    report.reconnect_offsets.append(ts - host_back_at)
                    break
                previous = n
    report.drain_seconds = max(done_at) - host_back_at if done_at else 0.0


def _reconcile(terminals: list[TerminalProcess], host: HostProcess, report: FleetReport) -> None:
    from offline_queue import State
    from terminal.app.runtime import start_terminal

    start = time.monotonic()
    journals: dict[str, tuple[TerminalProcess, list[Any]]] = {}
    #: ISO 8583: per terminal, the host's dedup key of each message -> the checkout's key.
    iso_keys: dict[str, dict[str, str]] = {}
    for t in terminals:
        iso8583 = iso8583_settings(t.directory)
        rt = start_terminal(
            t.directory,
            secret=(t.directory / SECRET_FILE).read_bytes(),
            host_url=host.url,
            scrypt_n=SCRYPT_N,
            client_options=CLIENT_OPTIONS,
            iso8583=iso8583,
        )
        try:
            # Recovery ran on open; now drain the queue and the reversals with no faults.
            for _ in range(50):
                if rt.checkout.queue_summary().count:
                    rt.checkout.sync_offline()
                if rt.journal.pending_reversals():
                    rt.checkout.retry_reversals()
                if not rt.checkout.queue_summary().count and not rt.journal.pending_reversals():
                    break
                time.sleep(0.1)
            report.pending_reversals += len(rt.journal.pending_reversals())
            report.queue_left += sum(
                1 for p in rt.queue.list_payments() if p.state not in (State.ACCEPTED,)
            )
            terminal_id = rt.keystore.terminal_id
            assert terminal_id is not None
            journals[terminal_id] = (t, rt.journal.recent(limit=1_000_000))
        finally:
            rt.close()
        if iso8583 is not None:
            iso_keys[terminal_id] = _iso8583_keys(t.directory, rt.keystore)
    report.final_settle_seconds = time.monotonic() - start

    ledger = httpx.get(host.url + "/admin/ledger", timeout=30).json()
    rrns = _iso8583_rrns(host.db) if iso_keys else {}
    by_terminal: dict[str, list[dict[str, Any]]] = {}
    for row in ledger:
        by_terminal.setdefault(row["terminal_id"], []).append(row)
    for tid, (t, records) in journals.items():
        rows = by_terminal.pop(tid, [])
        if tid in iso_keys:
            rows = terminal_view(rows, iso_keys[tid], rrns)
        _reconcile_terminal(tid, t.log, records, rows, report)
    for tid, rows in by_terminal.items():
        report.unexplained += [f"{tid}:{r['ref']} (unknown terminal)" for r in rows]


def host_key(mti: str, stan: int, transmitted: str) -> str:
    """The ISO 8583 host's dedup key of a message (simulator/host/iso8583/handlers.py):
    its class (MTI digits 1-3), STAN and field 7."""
    return f"iso8583:{mti[:3]}:{stan:06d}:{transmitted}"


def _iso8583_keys(directory: Path, keystore: Keystore) -> dict[str, str]:
    """From the link's message memory: the host's dedup key of every money message the
    terminal remembers -> the checkout's idempotency key it was sent under. (Every row of
    the fleet's memory is in the open batch: the fleet never settles.)"""
    from terminal.acquirer.iso8583.link import open_memory

    memory = open_memory(directory, keystore)
    try:
        # Field 7 is the time the message was first sent, MMDDhhmmss in UTC.
        return {
            host_key(row.mti, row.stan, row.sent_at.astimezone(UTC).strftime("%m%d%H%M%S")): row.key
            for row in memory.open_batch()
        }
    finally:
        memory.close()


def _iso8583_rrns(db: Path) -> dict[str, str]:
    """The ISO 8583 host's RRN table (simulator/host/ledger.py, iso8583_rrns): ledger ref ->
    RRN (field 37: the row's id, 12 digits). Read from the ledger file itself: the admin API
    does not serve it."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {
            str(ref): f"{int(id_):012d}"
            for id_, ref in conn.execute("SELECT id, ref FROM iso8583_rrns")
        }


def terminal_view(
    rows: list[dict[str, Any]], keys: dict[str, str], rrns: dict[str, str]
) -> list[dict[str, Any]]:
    """The ISO 8583 host's ledger rows of one terminal in the terminal's own terms, so the
    pipos protocol's rules apply unchanged: each row's idempotency key (the host's
    ``iso8583:<class>:<STAN>:<field 7>``) becomes the checkout's key it was sent under, and
    its ref the RRN the host gave the terminal for it (the terminal's host_ref). A host key
    the terminal never sent, or a ref without an RRN, stays as it is: nothing of the
    terminal's matches it, so it counts as unexplained."""
    view = []
    for row in rows:
        key = row["idempotency_key"]
        view.append(
            row
            | {
                "idempotency_key": keys.get(key, key) if key else key,
                "ref": rrns.get(row["ref"], row["ref"]),
            }
        )
    return view


def _reconcile_terminal(
    tid: str,
    log: TerminalLog,
    records: list[Any],
    rows: list[dict[str, Any]],
    report: FleetReport,
) -> None:
    journal = {r.id: r for r in records}
    by_key: dict[str, list[dict[str, Any]]] = {}
    by_offline: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["idempotency_key"] and not row["offline_id"]:
            by_key.setdefault(row["idempotency_key"], []).append(row)
        if row["offline_id"]:
            by_offline.setdefault(row["offline_id"], []).append(row)

    report.sales += len(log.sales)
    for _ts, txn_id, state, result in log.sales:
        if state in APPROVED_STATES:
            report.shown_approved += 1
            report.approved_online += state == "approved"
            report.approved_offline += state == "approved_offline"
            record = journal.get(txn_id)
            if record is None or record.state not in APPROVED_STATES:
                report.lost.append(f"{tid}:{txn_id} shown approved, journal says otherwise")
        else:
            report.declined[result] += 1

    explained: set[str] = set()
    for record in records:
        if record.kind != "sale":
            continue
        if record.state == "approved":
            matches = by_key.get(record.idempotency_key, [])
            ok = [r for r in matches if r["status"] == "approved" and r["ref"] == record.host_ref]
            if len(matches) > 1:
                report.duplicated.append(f"{tid}:{record.id}")
            if not ok or ok[0]["amount"] != record.amount:
                report.lost.append(f"{tid}:{record.id} approved online, not settled as such")
            else:
                report.settled += 1
                explained.add(ok[0]["ref"])
        elif record.state == "approved_offline":
            matches = by_offline.get(record.id, [])
            if len(matches) > 1:
                report.duplicated.append(f"{tid}:{record.id}")
            if not matches:
                report.lost.append(f"{tid}:{record.id} approved offline, never reached the host")
            elif matches[0]["status"] != "approved":
                report.declined_after_the_fact.append(f"{tid}:{record.id}")
                explained.add(matches[0]["ref"])
            elif matches[0]["amount"] != record.amount:
                report.lost.append(f"{tid}:{record.id} settled with a different amount")
            else:
                report.settled += 1
                explained.add(matches[0]["ref"])
        elif record.result == "host_no_response":
            report.lost_responses += 1
            for row in by_key.get(record.idempotency_key, []):
                if row["status"] == "reversed":
                    explained.add(row["ref"])
        else:
            # Declined by the host (a real answer): its ledger row is a decline.
            for row in by_key.get(record.idempotency_key, []):
                if row["status"] == "declined":
                    explained.add(row["ref"])
    for row in rows:
        if row["status"] == "reversed":
            report.reversals += 1
            if row["ref"] not in explained:
                report.reversals_unmatched.append(f"{tid}:{row['ref']}")
        elif row["ref"] not in explained:
            report.unexplained.append(f"{tid}:{row['ref']} {row['kind']} {row['status']}")


def summary_rows(report: FleetReport) -> list[tuple[str, float, str]]:
    """Bench rows (name, value, unit) for a fleet report (named "fleet over ISO 8583" for a
    run on the ISO 8583 link)."""
    n = report.terminals
    name = "fleet" if report.config.protocol == "pipos" else "fleet over ISO 8583"
    wrong = len(report.lost) + len(report.duplicated) + len(report.unexplained)
    out: list[tuple[str, float, str]] = [
        (
            f"{name} ({n} terminals): payments shown approved",
            float(report.shown_approved),
            "payments",
        ),
        (f"{name}: lost + duplicated + unexplained", float(wrong), "payments"),
        (f"{name}: SIGKILLs of terminals", float(report.kills), "kills"),
        (f"{name}: injected faults hit", float(report.faults_hit), "faults"),
        (f"{name}: lost responses reversed", float(report.reversals), "reversals"),
    ]
    if report.drain_seconds is not None:
        out.append(
            (
                f"{name}: drain {report.backlog} queued payments after outage",
                report.drain_seconds,
                "s",
            )
        )
    if report.reconnect_offsets:
        first = statistics.median(report.reconnect_offsets)
        out.append((f"{name}: first upload after outage, median terminal", first, "s"))
    if report.reconnect_spread is not None:
        out.append(
            (f"{name}: reconnect spread, first..last terminal", report.reconnect_spread, "s")
        )
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["child"] and len(argv) == 6:
        child(Path(argv[1]), argv[2], argv[3], float(argv[4]), float(argv[5]))
        return 0
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="pipos")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pipos-fleet-") as tmp:
        report = run_fleet(Path(tmp), FleetConfig(protocol=args.protocol))
    print(report.summary())
    for problem in report.problems():
        print("PROBLEM:", problem)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
