"""A crash at every commit point (issue 14 item 5): the driver side of the harness.

Each :class:`Worker` (one per core) has the simulated acquirer in its own process
(:class:`HostProcess`: it outlives every terminal that is killed, and its fault board is the
worker's own), the terminals' network path to it (:class:`Uplink`, a loopback forwarder that
can refuse connections: "host unreachable" for a running terminal) and a pre-imported zygote
(:class:`Zygote`, tests/crash_child.py) that forks one terminal process per start, on a
trial's own files and with its own enrolment. This module is the cash register: it drives
each terminal only through its local HTTP API, as a register would, and notes what the
terminal *showed* it.

A trial of an operation: set up what the operation needs (not counted), arm the terminal to
SIGKILL itself at the N-th durable write (just before or just after it), run the operation,
see the terminal die there; start a terminal on the same files (its start-up recovers),
let it sync the offline queue once and check; then let the merchant ask again for what was
left unconfirmed (a refund or void that got no answer: looked up first by the register's own
reference, never sent twice blindly) and check again, strictly:

1. every payment the terminal showed approved (or approved offline) is, exactly once, in the
   offline queue or in the host's ledger; and no payment is in the ledger that the terminal
   does not record as approved;
2. every sale's refunded amount on the terminal is what the host moved for it, and its
   voided flag is the host's (before the merchant asks again, the host may also have moved
   a refund the terminal shows failed: its answer was lost, the next refund settles it);
3. nothing is left unfinished: no transaction in progress, no queued payment still sending
   (nor outstanding after the sync), no reversal still owed.

The same code drives an older tree (terminal/*.py flat): only the zygote's import differs.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PIN = "2468"
SECRET = "crash-points-device-secret-0123456789"
MODES = ("before", "after")

_HOST_RUNNER = r"""
import sys
from simulator.host import HostServer
server = HostServer(sys.argv[1])
print(server.start(), flush=True)
sys.stdin.read()
server.stop()
"""


class HarnessError(AssertionError):
    """The harness itself could not do what a trial needs (not an invariant)."""


def _tree_env(root: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _read_line(stream: IO[str], what: str) -> str:
    line = stream.readline()
    if not line:
        raise HarnessError(f"{what} ended before answering")
    return line


# --- the host ----------------------------------------------------------------------------


class HostProcess:
    """The simulated acquirer (real uvicorn, real SQLite ledger) in its own process."""

    def __init__(self, root: Path, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HOST_RUNNER, str(db)],
            cwd=root,
            env=_tree_env(root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = _read_line(self.process.stdout, "the host process").strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise HarnessError(f"the host did not start on loopback: {self.url!r}")
        self.admin = httpx.Client(base_url=self.url, timeout=20)

    def _ok(self, response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()

    def activation_code(self) -> str:
        data = self._ok(self.admin.post("/admin/activation-codes", json={"merchant_id": "M0001"}))
        return str(data["code"])

    def set_fault(self, path: str, mode: str, times: int) -> None:
        body = {path: {"mode": mode, "times": times, "delay_ms": 0}}
        self._ok(self.admin.put("/admin/faults", json=body))

    def clear_faults(self) -> None:
        self._ok(self.admin.delete("/admin/faults"))

    def ledger(self, terminal_id: str) -> list[dict[str, Any]]:
        return list(self._ok(self.admin.get("/admin/ledger", params={"terminal_id": terminal_id})))

    def close(self) -> None:
        self.admin.close()
        _end(self.process)


def _end(process: subprocess.Popen[str]) -> None:
    """A child told to stop by closing its stdin: waited for, killed if it does not."""
    if process.stdin is not None:
        with suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


class Uplink:
    """The terminals' network path to the host: a TCP forwarder on 127.0.0.1 that can play
    "host unreachable" (its port refuses connections and open ones are cut) and come back,
    so one running terminal can sell offline and later sync, without a restart."""

    def __init__(self, target: str) -> None:
        self._target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        #: While offline: bound to the port, not listening (connections are refused, and
        #: no other socket can take the port meanwhile).
        self._placeholder: socket.socket | None = None
        self.port = 0
        self._listen()
        self.url = f"http://127.0.0.1:{self.port}"

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        return sock

    def _listen(self) -> None:
        listener = self._socket()
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    @property
    def online(self) -> bool:
        return self._listener is not None

    def set_online(self, online: bool) -> None:
        if online == self.online:
            return
        if online:
            self._listen()
            return
        self._placeholder = self._socket()
        listener, self._listener = self._listener, None
        assert listener is not None
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        with self._lock:
            cut, self._open = self._open, set()
        for sock in cut:
            self._reset(sock)

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        # shutdown first: it wakes the pump blocked in recv on this socket (a bare close
        # would not, and the connection would live on); then close with a reset.
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # offline: the listener is closed
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                self._reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            ended = [0]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, ended), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, ended: list[int]) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            # One side reset (the host cut the connection on purpose, or we went offline):
            # reset the other, as a direct connection would have been.
            self._forget(source, sink)
            self._reset(source)
            self._reset(sink)
            return
        with self._lock:
            ended[0] += 1
            done = ended[0] == 2
        if done:
            self._forget(source, sink)
            source.close()
            sink.close()

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open -= set(socks)

    def close(self) -> None:
        self.set_online(False)
        if self._placeholder is not None:
            self._placeholder.close()


# --- the terminals -----------------------------------------------------------------------


class Zygote:
    """tests/crash_child.py run on a source tree: forks terminals on request."""

    def __init__(self, root: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "crash_child.py"), str(root)],
            cwd=root,
            env=_tree_env(root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = json.loads(self._answer())
        self.stack_module = str(ready["stack"])
        self._serial = 0

    def _answer(self) -> str:
        assert self.process.stdout is not None
        return _read_line(self.process.stdout, "the terminal zygote")

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._answer())
        return answer

    def spawn(
        self,
        directory: Path,
        host_url: str,
        activation_code: str | None,
        arm_at_start: dict[str, Any] | None = None,
    ) -> Terminal:
        self._serial += 1
        control = f"pipos-crash-{self.process.pid}-{self._serial}"
        directory.mkdir(parents=True, exist_ok=True)
        spec = {
            "dir": str(directory),
            "host_url": host_url,
            "activation_code": activation_code,
            "secret": SECRET,
            "pin": PIN,
            "control": control,
            "log": "terminal.log",
            "arm_at_start": arm_at_start,
        }
        pid = int(self._ask({"cmd": "spawn", "spec": spec})["pid"])
        return Terminal(self, pid, control, directory)

    def exit_signal(self, pid: int) -> int | None:
        """The signal that ended terminal `pid` (waits for it to end), None if it exited."""
        answer = self._ask({"cmd": "status", "pid": pid, "wait": True})
        signal_number = answer.get("signal")
        return None if signal_number is None else int(signal_number)

    def close(self) -> None:
        with suppress(OSError, HarnessError):
            self._ask({"cmd": "quit"})
        _end(self.process)


class TerminalGoneError(Exception):
    """The terminal process died (the injected SIGKILL) while the register talked to it."""


class Terminal:
    """One terminal process: its control socket and its local HTTP API."""

    def __init__(self, zygote: Zygote, pid: int, control: str, directory: Path) -> None:
        self.zygote = zygote
        self.pid = pid
        self.directory = directory
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 30
        while True:
            try:
                self._sock.connect("\0" + control)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise HarnessError(f"terminal {pid} did not listen: {self.log()}") from None
                time.sleep(0.005)
        self._sock.settimeout(60)
        self._reader = self._sock.makefile("r")
        self.alive = True
        ready = self._receive()
        if ready is None:
            self.alive = False
            self.url = ""
            self.terminal_id = ""
            self.start_points: list[dict[str, Any]] = []
            self.api = httpx.Client(timeout=5)
            return
        self.url = str(ready["url"])
        self.terminal_id = str(ready["terminal_id"] or "")
        self.start_points = list(ready["points"])
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ready['token']}"}, timeout=60
        )

    def log(self) -> str:
        path = self.directory / "terminal.log"
        return path.read_text()[-3000:] if path.exists() else "(no log)"

    def _receive(self) -> dict[str, Any] | None:
        try:
            line = self._reader.readline()
        except OSError:  # killed before it accepted the harness's connection
            return None
        if not line:
            return None
        message: dict[str, Any] = json.loads(line)
        return message

    def _command(self, command: dict[str, Any]) -> dict[str, Any]:
        if not self.alive:
            raise TerminalGoneError()
        self._sock.sendall(json.dumps(command).encode() + b"\n")
        answer = self._receive()
        if answer is None:
            self.alive = False
            raise TerminalGoneError()
        return answer

    def arm(self, mode: str, point: int = 0) -> None:
        self._command({"cmd": "arm", "mode": mode, "point": point})

    def points(self) -> list[dict[str, Any]]:
        return list(self._command({"cmd": "points"})["points"])

    def exit(self) -> None:
        """Switch the terminal off at rest (everything it answered is on disk already)."""
        if self.alive:
            with suppress(OSError):
                self._sock.sendall(b'{"cmd": "exit"}\n')
        signal_number = self.wait_killed()
        if signal_number is not None:
            raise HarnessError(f"terminal {self.pid} ended by signal {signal_number}")

    def wait_killed(self) -> int | None:
        """Wait until the process is gone; the signal that ended it."""
        with suppress(OSError):
            while self._receive() is not None:
                pass
        self.alive = False
        self.close()
        return self.zygote.exit_signal(self.pid)

    def close(self) -> None:
        self.api.close()
        self._reader.close()
        self._sock.close()

    # --- the register's requests --------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if not self.alive:
            raise TerminalGoneError()
        try:
            return self.api.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self.alive = False
            raise TerminalGoneError() from exc

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.call(method, path, **kwargs)
        if response.status_code >= 500:
            raise HarnessError(f"{method} {path}: {response.status_code} {response.text}")
        data: dict[str, Any] = response.json()
        data["_status"] = response.status_code
        return data


# --- what the register saw ---------------------------------------------------------------


@dataclass
class Intent:
    """A refund or void the merchant asked for, until the terminal confirms it."""

    kind: str  # "refund" | "void"
    sale_id: str
    amount: int | None
    reference: str
    confirmed: bool = False
    #: The Idempotency-Key the register sends it with ("": none); the same on every retry.
    key: str = ""


@dataclass
class Register:
    """The cash register: what the terminal showed it, and what it still wants done."""

    trial: str
    shown: dict[str, str] = field(default_factory=dict)  # transaction id -> last state seen
    shown_kind: dict[str, str] = field(default_factory=dict)
    intents: list[Intent] = field(default_factory=list)
    sales: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    _refs: int = 0

    def saw(self, view: dict[str, Any]) -> None:
        if "id" in view and "state" in view:
            self.shown[str(view["id"])] = str(view["state"])
            self.shown_kind[str(view["id"])] = str(view.get("kind", ""))

    def reference(self, what: str) -> str:
        self._refs += 1
        return f"{what}{self._refs}-{self.trial}"[:64]


def sale(term: Terminal, reg: Register, amount: int, *, card: str = "visa") -> str:
    """A sale paid by tapping a virtual card (``card``) or showing the phone's EMVCo
    consumer-presented code (``card="phone:cpm"``); waits until the terminal shows how it
    ended. Returns its id."""
    created = term.json("POST", "/api/v1/sales", json={"amount": amount, "currency": 978})
    if created["_status"] != 202:
        raise HarnessError(f"sale refused: {created}")
    reg.saw(created)
    txn = str(created["id"])
    reg.sales.append(txn)
    if card.startswith("phone:"):
        shown = term.json("POST", "/api/v1/simulator/phone", json={"code": card[6:]})
    else:
        shown = term.json("POST", "/api/v1/simulator/present", json={"card": card})
    if shown["_status"] != 200:
        raise HarnessError(f"could not present {card}: {shown}")
    deadline = time.monotonic() + 60
    while True:
        view = term.json("GET", f"/api/v1/transactions/{txn}")
        reg.saw(view)
        if view["state"] != "in_progress":
            return txn
        if time.monotonic() > deadline:
            raise HarnessError(f"sale {txn} did not finish: {view}")
        time.sleep(0.01)


def _settled(term: Terminal, intent: Intent) -> bool:
    """Whether the terminal records the intent as done (looked up by the register's own
    reference, or, for a void, on the sale)."""
    if intent.kind == "void":
        view = term.json("GET", f"/api/v1/transactions/{intent.sale_id}")
        return bool(view.get("voided"))
    found = term.json(
        "GET", "/api/v1/transactions", params={"external_reference": intent.reference}
    )
    return any(t["state"] == "approved" for t in found["transactions"])


def refund(term: Terminal, reg: Register, intent: Intent) -> dict[str, Any]:
    body: dict[str, Any] = {"pin": PIN, "external_reference": intent.reference}
    if intent.amount is not None:
        body["amount"] = intent.amount
    headers = {"Idempotency-Key": intent.key} if intent.key else {}
    path = f"/api/v1/transactions/{intent.sale_id}/refund"
    answer = term.json("POST", path, json=body, headers=headers)
    reg.saw(answer)
    reg.answers.append(f"refund {answer['_status']} {answer.get('state', answer.get('error'))}")
    error = answer.get("error") or {}
    if error.get("code") == "idempotency_in_progress" and error.get("reason") == "interrupted":
        # The terminal stopped while processing the first request with this key: as
        # docs/api.md says, look it up by the register's reference, then a new key.
        if _settled(term, intent):
            intent.confirmed = True
            return answer
        intent.key = reg.reference("key")
        return refund(term, reg, intent)
    if answer.get("state") == "approved":
        intent.confirmed = True
    elif answer["_status"] == 409 and "earlier refund" in json.dumps(answer):
        # The terminal found that the unanswered refund did reach the bank: it is recorded
        # now, and nothing more was refunded.
        intent.confirmed = True
    return answer


def void(term: Terminal, reg: Register, intent: Intent) -> dict[str, Any]:
    answer = term.json("POST", f"/api/v1/transactions/{intent.sale_id}/void", json={"pin": PIN})
    reg.saw(answer)
    reg.answers.append(f"void {answer['_status']} {answer.get('state', answer.get('error'))}")
    if answer.get("state") == "approved":
        intent.confirmed = True
    return answer


# --- the operations ----------------------------------------------------------------------


@dataclass
class Worker:
    """One simulated host, the terminals' path to it and one zygote: trials on different
    workers share nothing (not even the host's fault board)."""

    host: HostProcess
    uplink: Uplink
    zygote: Zygote


@dataclass
class Trial:
    """The files of one terminal under test, its worker, the register."""

    name: str
    directory: Path
    worker: Worker
    register: Register
    terminal_id: str = ""

    @property
    def host(self) -> HostProcess:
        return self.worker.host

    def offline(self) -> None:
        """The host becomes unreachable (connections refused, open ones cut)."""
        self.worker.uplink.set_online(False)

    def online(self) -> None:
        self.worker.uplink.set_online(True)

    def start(self, arm_at_start: dict[str, Any] | None = None) -> Terminal:
        code = self.host.activation_code() if self.worker.uplink.online else None
        term = self.worker.zygote.spawn(self.directory, self.worker.uplink.url, code, arm_at_start)
        if term.terminal_id:
            self.terminal_id = term.terminal_id
        return term


@dataclass(frozen=True)
class Operation:
    """`setup` runs uncounted and returns the terminal to arm, then `act` runs armed; with
    no `setup` the operation is the terminal's first start (keystore, enrolment, files)."""

    name: str
    setup: Callable[[Trial], Terminal] | None
    act: Callable[[Trial, Terminal], None]
    #: After recovery, the merchant does this (end of day again; a first sale).
    again: Callable[[Trial, Terminal], None] | None = None


def _fresh(trial: Trial) -> Terminal:
    return trial.start()


def _with_sale(trial: Trial) -> Terminal:
    term = trial.start()
    sale(term, trial.register, 2000)
    if trial.register.shown.get(trial.register.sales[-1]) != "approved":
        raise HarnessError(f"setup sale not approved: {trial.register.shown}")
    return term


def _offline_then_online(online_sale: bool, restart: bool) -> Callable[[Trial], Terminal]:
    def setup(trial: Trial) -> Terminal:
        term = trial.start()  # enrols
        if online_sale:
            txn = sale(term, trial.register, 1000)
            if trial.register.shown.get(txn) != "approved":
                raise HarnessError(f"setup sale not approved: {trial.register.shown}")
        trial.offline()
        for amount in (800, 900):
            txn = sale(term, trial.register, amount, card="mastercard")
            if trial.register.shown.get(txn) != "approved_offline":
                raise HarnessError(f"setup sale not approved offline: {trial.register.shown}")
        trial.online()
        if restart:
            # Switched off overnight: the first request of the new process reserves a new
            # block of sequence numbers (a durable write of its own).
            term.exit()
            term = trial.start()
        return term

    return setup


def _enrolled_offline(trial: Trial) -> Terminal:
    term = trial.start()  # enrols
    trial.offline()
    return term


def _act_sale(amount: int, card: str, expect: str) -> Callable[[Trial, Terminal], None]:
    def act(trial: Trial, term: Terminal) -> None:
        txn = sale(term, trial.register, amount, card=card)
        if trial.register.shown.get(txn) != expect:
            raise HarnessError(f"the sale should have been {expect}: {trial.register.shown}")

    return act


def _act_refunds(*amounts: int | None) -> Callable[[Trial, Terminal], None]:
    def act(trial: Trial, term: Terminal) -> None:
        reg = trial.register
        for amount in amounts:
            intent = Intent("refund", reg.sales[0], amount, reg.reference("rf"))
            reg.intents.append(intent)
            refund(term, reg, intent)
            if not intent.confirmed:
                raise HarnessError(f"refund not approved: {reg.answers}")

    return act


def _act_refund_lost(trial: Trial, term: Terminal) -> None:
    """The host refunds and commits, then drops the connection (every try of the client);
    the merchant, told there was no answer, asks again: the terminal settles the first one
    under its own key and refunds nothing more."""
    reg = trial.register
    intent = Intent("refund", reg.sales[0], 700, reg.reference("rf"))
    reg.intents.append(intent)
    trial.host.set_fault("/v1/refunds", "drop_after_commit", times=10)
    try:
        first = refund(term, reg, intent)
    finally:
        trial.host.clear_faults()
    if first.get("state") != "failed":
        raise HarnessError(f"the lost refund should have failed: {first}")
    refund(term, reg, intent)
    if not intent.confirmed:
        raise HarnessError(f"the retried refund was not settled: {reg.answers}")


def _act_refund_with_key(trial: Trial, term: Terminal) -> None:
    """A refund sent with an Idempotency-Key, then sent again with it (the register lost the
    answer): the same refund answered again, nothing more refunded; after a crash the
    register asks again with the same key."""
    reg = trial.register
    intent = Intent("refund", reg.sales[0], 600, reg.reference("rf"), key=reg.reference("key"))
    reg.intents.append(intent)
    first = refund(term, reg, intent)
    if not intent.confirmed:
        raise HarnessError(f"refund not approved: {reg.answers}")
    again = refund(term, reg, intent)
    if again.get("id") != first.get("id") or again.get("state") != "approved":
        raise HarnessError(f"the retried refund was not answered as the first: {again}")


def _act_void(trial: Trial, term: Terminal) -> None:
    reg = trial.register
    intent = Intent("void", reg.sales[0], None, "")
    reg.intents.append(intent)
    void(term, reg, intent)
    if not intent.confirmed:
        raise HarnessError(f"void not approved: {reg.answers}")


def _act_sync(trial: Trial, term: Terminal) -> None:
    answer = term.json("POST", "/api/v1/queue/sync")
    trial.register.answers.append(f"sync {answer['_status']} {answer.get('sync')}")


def _act_end_of_day(trial: Trial, term: Terminal) -> None:
    answer = term.json("POST", "/api/v1/end-of-day", json={"pin": PIN})
    trial.register.answers.append(f"end-of-day {answer['_status']} {answer.get('batch_id')}")
    if answer["_status"] != 200:
        raise HarnessError(f"end of day refused: {answer}")


def _end_of_day_again(trial: Trial, term: Terminal) -> None:
    answer = term.json("POST", "/api/v1/end-of-day", json={"pin": PIN})
    if answer["_status"] != 200:
        raise HarnessError(f"end of day after recovery refused: {answer}")


def _declined_after_the_fact(trial: Trial) -> Terminal:
    """An offline sale the bank declines at upload (the x.51 rule, docs/protocol.md): the
    banner the merchant acknowledges."""
    term = trial.start()  # enrols
    trial.offline()
    txn = sale(term, trial.register, 1551, card="mastercard")
    if trial.register.shown.get(txn) != "approved_offline":
        raise HarnessError(f"setup sale not approved offline: {trial.register.shown}")
    trial.online()
    term.json("POST", "/api/v1/queue/sync")
    status = term.json("GET", "/api/v1/status")
    if status.get("offline_declines", {}).get("unacknowledged") != 1:
        raise HarnessError(f"setup: the bank should have declined the sale: {status}")
    return term


def _act_acknowledge(trial: Trial, term: Terminal) -> None:
    answer = term.json("POST", "/api/v1/offline-declines/acknowledge")
    trial.register.answers.append(f"acknowledge {answer['_status']}")
    if answer["_status"] != 200:
        raise HarnessError(f"acknowledgement refused: {answer}")


def _acknowledge_again(trial: Trial, term: Terminal) -> None:
    """After recovery the banner is either acknowledged or still there to acknowledge, and
    acknowledging it (again) leaves nothing unacknowledged."""
    _act_acknowledge(trial, term)
    status = term.json("GET", "/api/v1/status")
    if status.get("offline_declines", {}).get("unacknowledged") != 0:
        raise HarnessError(f"the banner is still up after acknowledging it: {status}")


def _act_nothing(trial: Trial, term: Terminal) -> None:
    """The first start is the operation (armed from the process's first instruction)."""


def _first_sale(trial: Trial, term: Terminal) -> None:
    txn = sale(term, trial.register, 1100)
    if trial.register.shown.get(txn) != "approved":
        raise HarnessError(f"the first sale after the first start: {trial.register.shown}")


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("sale_online", _fresh, _act_sale(1500, "visa", "approved")),
        Operation(
            "sale_offline", _enrolled_offline, _act_sale(1200, "mastercard", "approved_offline")
        ),
        Operation("code_payment", _fresh, _act_sale(1300, "phone:cpm", "approved")),
        Operation("refund_full", _with_sale, _act_refunds(None)),
        Operation("refund_partial", _with_sale, _act_refunds(700, 500)),
        Operation("refund_lost_answer", _with_sale, _act_refund_lost),
        Operation("refund_idempotent", _with_sale, _act_refund_with_key),
        Operation("void", _with_sale, _act_void),
        Operation("sync", _offline_then_online(False, True), _act_sync),
        Operation(
            "end_of_day",
            _offline_then_online(True, False),
            _act_end_of_day,
            again=_end_of_day_again,
        ),
        Operation(
            "acknowledge_decline",
            _declined_after_the_fact,
            _act_acknowledge,
            again=_acknowledge_again,
        ),
        Operation("first_start", None, _act_nothing, again=_first_sale),
    )
}


# --- running a trial ---------------------------------------------------------------------


@dataclass
class Outcome:
    """What one trial did and found."""

    operation: str
    mode: str  # "count" (no crash), "before" or "after"
    point: int
    name: str = ""
    killed_by: int | None = None
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        if self.mode == "count":
            return f"{self.operation}: no crash"
        return f"{self.operation}: kill {self.mode} #{self.point} {self.name}"


def run_trial(op: Operation, mode: str, point: int, base: Path, worker: Worker) -> Outcome:
    started = time.monotonic()
    tag = f"{op.name}-{mode}-{point}"
    trial = Trial(tag, base / tag, worker, Register(tag))
    outcome = Outcome(op.name, mode, point)
    arm = "count" if mode == "count" else mode
    if op.setup is None:
        term = trial.start(arm_at_start={"mode": arm, "point": point})
    else:
        term = op.setup(trial)
        term.arm(arm, point)
    with suppress(TerminalGoneError):
        op.act(trial, term)
    if mode == "count":
        outcome.points = term.points()
        term.exit()
    else:
        if term.alive:
            # Still running: the point was not reached (the operation made fewer writes).
            term.exit()
            raise HarnessError(f"{tag}: the terminal was not killed at point {point}")
        outcome.killed_by = term.wait_killed()
        marker = trial.directory / "killed.json"
        if not marker.exists():
            raise HarnessError(f"{tag}: died without reaching the point: {term.log()}")
        killed = json.loads(marker.read_text())
        marker.unlink()
        outcome.name = str(killed["name"])
    trial.host.clear_faults()
    trial.online()
    recover_and_check(op, trial, outcome)
    outcome.seconds = time.monotonic() - started
    return outcome


def _queue_rows(directory: Path) -> dict[str, str]:
    """transaction id -> state, read from the offline queue file (WAL: beside a running
    terminal too)."""
    path = directory / "offline_queue.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(path, timeout=10)
    try:
        return {
            str(r[0]): str(r[1]) for r in db.execute("SELECT transaction_id, state FROM payments")
        }
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def _journal(term: Terminal) -> dict[str, dict[str, Any]]:
    listed = term.json("GET", "/api/v1/transactions", params={"limit": 500})
    return {str(t["id"]): t for t in listed["transactions"]}


def recover_and_check(op: Operation, trial: Trial, outcome: Outcome) -> None:
    reg = trial.register
    term = trial.start()  # start-up recovers what the crash interrupted
    if not term.alive:
        outcome.violations.append(f"the terminal does not start again: {term.log()}")
        return
    sync = term.json("POST", "/api/v1/queue/sync")
    outcome.notes.append(f"sync after restart: {sync.get('sync')}")
    # At rest after recovery and one sync: a refund whose outcome the terminal does not know
    # yet (failed, settled by the next refund of the sale) may be what the host moved.
    outcome.violations += [
        f"after recovery and one sync: {v}"
        for v in check_invariants(reg, *_snapshot(trial, term), settled=False)
    ]
    # The register asks again for what the terminal never confirmed.
    for intent in reg.intents:
        if intent.confirmed:
            continue
        if _settled(term, intent):
            intent.confirmed = True
            continue
        answer = (refund if intent.kind == "refund" else void)(term, reg, intent)
        outcome.notes.append(f"{intent.kind} asked again: {answer['_status']}")
        if not intent.confirmed and _settled(term, intent):
            intent.confirmed = True
    for intent in reg.intents:
        if not intent.confirmed:
            outcome.violations.append(
                f"(2) the merchant's {intent.kind} of {intent.sale_id} is still not done after "
                f"recovery and asking again: {reg.answers}"
            )
    if op.again is not None:
        op.again(trial, term)
    snapshot = _snapshot(trial, term)
    term.exit()
    outcome.violations += [
        f"after the merchant asked again: {v}" for v in check_invariants(reg, *snapshot)
    ]


Snapshot = tuple[dict[str, dict[str, Any]], dict[str, str], list[dict[str, Any]], dict[str, Any]]


def _snapshot(trial: Trial, term: Terminal) -> Snapshot:
    """The journal (through the API), the queue file, the host's ledger, the status."""
    journal = _journal(term)
    status = term.json("GET", "/api/v1/status")
    return journal, _queue_rows(trial.directory), trial.host.ledger(trial.terminal_id), status


def check_invariants(
    reg: Register,
    journal: dict[str, dict[str, Any]],
    queue: dict[str, str],
    ledger: list[dict[str, Any]],
    status: dict[str, Any],
    *,
    settled: bool = True,
) -> list[str]:
    """What is wrong with this state (empty: the invariants hold). With `settled` False the
    host may also have moved refunds the terminal shows failed (their answer was lost; the
    next refund of the sale settles them first)."""
    bad: list[str] = []
    live = [r for r in ledger if r["kind"] in ("sale", "offline_sale")]
    by_ref = Counter(str(r["ref"]) for r in live)
    by_offline = Counter(str(r["offline_id"]) for r in live if r.get("offline_id"))
    approved_sales = {
        t: rec
        for t, rec in journal.items()
        if rec["kind"] == "sale" and rec["state"] in ("approved", "approved_offline")
    }
    # (1) shown approved -> on the terminal, and once in the queue or the ledger.
    for txn, state in reg.shown.items():
        if reg.shown_kind.get(txn) == "sale" and state in ("approved", "approved_offline"):
            rec = journal.get(txn)
            if rec is None or rec["state"] not in ("approved", "approved_offline"):
                bad.append(
                    f"(1) sale {txn} was shown {state} but the terminal now records "
                    f"{'nothing' if rec is None else rec['state']}"
                )
    for txn, rec in approved_sales.items():
        if rec["state"] == "approved" and not rec.get("offline_id"):
            ref = str(rec.get("host_ref") or "")
            count = by_ref.get(ref, 0) if ref else 0
            good = [r for r in live if r["ref"] == ref and r["status"] in ("approved", "voided")]
            if count != 1 or len(good) != 1:
                bad.append(f"(1) sale {txn} (ref {ref!r}) is {count} times in the host ledger")
        else:
            offline_id = str(rec.get("offline_id") or txn)
            in_ledger = by_offline.get(offline_id, 0)
            in_queue = queue.get(offline_id)
            if in_ledger > 1 or (in_ledger == 0 and in_queue not in ("pending", "failed")):
                bad.append(
                    f"(1) offline sale {txn}: {in_ledger} times in the host ledger, "
                    f"queue state {in_queue!r}"
                )
    # (1) the other way: money the host holds for a sale the terminal does not record.
    known_refs = {str(r.get("host_ref")) for r in approved_sales.values() if r.get("host_ref")}
    known_offline = {
        str(r.get("offline_id")) for r in approved_sales.values() if r.get("offline_id")
    }
    for row in live:
        if row["status"] not in ("approved", "voided"):
            continue
        if row["ref"] not in known_refs and str(row.get("offline_id") or "") not in known_offline:
            bad.append(
                f"(1) the host holds {row['kind']} {row['ref']} ({row['amount']}, "
                f"{row['status']}) that the terminal does not record as approved"
            )
    # (2) refunded amounts and voids, sale by sale.
    for txn, rec in journal.items():
        if rec["kind"] != "sale" or not rec.get("host_ref"):
            continue
        ref = str(rec["host_ref"])
        moved = sum(
            int(r["amount"])
            for r in ledger
            if r["kind"] == "refund" and r.get("original_ref") == ref and r["status"] == "approved"
        )
        shown = int(rec.get("refunded_amount") or 0)
        unsure = sum(
            int(t["amount"])
            for t in journal.values()
            if t["kind"] == "refund" and t.get("original_id") == txn and t["state"] == "failed"
        )
        if moved != shown and (settled or not shown <= moved <= shown + unsure):
            bad.append(
                f"(2) sale {txn}: the terminal shows {rec.get('refunded_amount')} refunded, "
                f"the host moved {moved}"
            )
        host_voided = any(r["ref"] == ref and r["status"] == "voided" for r in live)
        if bool(rec.get("voided")) != host_voided:
            bad.append(
                f"(2) sale {txn}: voided on the terminal {bool(rec.get('voided'))}, "
                f"at the host {host_voided}"
            )
    for txn, state in reg.shown.items():
        if reg.shown_kind.get(txn) in ("refund", "void") and state == "approved":
            rec = journal.get(txn)
            if rec is None or rec["state"] != "approved":
                bad.append(f"(2) {reg.shown_kind[txn]} {txn} was shown approved, now {rec}")
    # (3) nothing unfinished after recovery and one sync.
    for txn, rec in journal.items():
        if rec["state"] == "in_progress":
            bad.append(f"(3) {rec['kind']} {txn} is still in progress")
    for txn, state in queue.items():
        if state in ("sending", "pending"):
            bad.append(f"(3) queued payment {txn} is still {state} after the sync")
    if int(status.get("pending_reversals") or 0):
        bad.append(f"(3) {status['pending_reversals']} reversal(s) still owed to the host")
    return bad


# --- running every point ------------------------------------------------------------------


@contextmanager
def workers(root: Path, base: Path, count: int = 2) -> Iterator[list[Worker]]:
    """`count` workers on the source tree `root` (the machine's cores: a trial mostly waits
    for its terminal's and its host's processes, and the host's fault board is its own)."""
    base.mkdir(parents=True, exist_ok=True)
    started: list[Worker] = []
    try:
        for n in range(count):
            host = HostProcess(root, base / f"acquirer-{n}.sqlite3")
            try:
                started.append(Worker(host, Uplink(host.url), Zygote(root)))
            except BaseException:
                host.close()
                raise
        yield started
    finally:
        for worker in started:
            worker.zygote.close()
            worker.uplink.close()
            worker.host.close()


@dataclass
class Coverage:
    """An operation's durable write points and the trials that crashed at them."""

    counted: Outcome
    trials: list[Outcome]
    #: "after #k" crash states that are the same as "before #k+1" (nothing went out to the
    #: host in between: same files, same host; the register has seen no less): not run twice.
    same_as_next: list[int]

    @property
    def points(self) -> list[dict[str, Any]]:
        return self.counted.points


def crash_plan(points: list[dict[str, Any]]) -> tuple[list[tuple[int, str]], list[int]]:
    """(point, mode) to run; and the points whose "after" state is the next one's "before"."""
    wanted: list[tuple[int, str]] = []
    same: list[int] = []
    for n, point in enumerate(points):
        wanted.append((point["index"], "before"))
        following = points[n + 1] if n + 1 < len(points) else None
        if following is not None and not following["external_before"]:
            same.append(point["index"])
        else:
            wanted.append((point["index"], "after"))
    return wanted, same


def every_point(op: Operation, base: Path, pool: list[Worker]) -> Coverage:
    """The operation once without a crash (counting its durable writes), then killed at each
    of them, just before and just after, the trials spread over the workers."""
    counted = run_trial(op, "count", 0, base, pool[0])
    names = {p["index"]: p["name"] for p in counted.points}
    wanted, same = crash_plan(counted.points)
    free: queue.Queue[Worker] = queue.Queue()
    for worker in pool:
        free.put(worker)

    def one(job: tuple[int, str]) -> Outcome:
        point, mode = job
        worker = free.get()
        try:
            outcome = run_trial(op, mode, point, base, worker)
        finally:
            free.put(worker)
        if outcome.name != names[point]:
            # The writes of an operation come in the same order every time, or the numbering
            # means nothing: say so rather than check the wrong point.
            outcome.violations.append(
                f"killed at {outcome.name!r}, but point {point} of the counted run is "
                f"{names[point]!r}"
            )
        return outcome

    with ThreadPoolExecutor(max_workers=len(pool)) as executor:
        trials = list(executor.map(one, wanted))
    return Coverage(counted, trials, same)


__all__ = [
    "MODES",
    "OPERATIONS",
    "ROOT",
    "Coverage",
    "HarnessError",
    "HostProcess",
    "Operation",
    "Outcome",
    "Worker",
    "Zygote",
    "every_point",
    "run_trial",
    "workers",
]
