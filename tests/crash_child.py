"""The terminal side of the crash-point harness (tests/test_crash_points.py).

Run as a script, ``python tests/crash_child.py ROOT``: a *zygote* that imports the terminal
from the source tree ROOT once, then forks one terminal process per request read from its
stdin (one JSON object a line), so a trial does not pay Python's start-up and imports.

Each forked terminal runs the real demo stack (runtime, journal, offline queue, keystore,
local HTTP API on 127.0.0.1) against the simulated acquirer given by URL, and listens on an
abstract Unix socket for the harness's commands: ``arm`` (count durable writes, or SIGKILL
itself at the N-th one, just before or just after it), ``points`` (the durable writes counted
since arming), ``stop`` (close cleanly and exit) and ``exit`` (end at once, at rest).

Crash injection knows nothing of the terminal's modules: it wraps ``sqlite3.connect`` (a
connection subclass plus ``set_trace_callback`` on every connection), ``os.replace``,
``os.open``, ``os.write``, ``os.fsync`` and ``os.close``, and the socket methods ``connect``,
``send`` and ``sendall`` (only to note whether anything went out to another process, the
host, between two points). A *durable write point* is

* an SQLite commit of a transaction that wrote something: ``COMMIT``/``END``, or the
  ``RELEASE`` of an outermost savepoint (sqlite-utils' way), or a write statement run in
  autocommit mode;
* an ``os.replace`` (the keystore's and the sequence counter's atomic writes);
* an append to a file opened with ``O_APPEND`` (the audit log: its write, up to its fsync).

"before" kills as the point is about to happen (the trace callback runs before SQLite
executes the statement); "after" kills as soon as it has returned, in the same thread,
before that thread does anything else. Each point is named by its file, its statement and
the chain of product functions that made it (from the stack), e.g.
``journal.sqlite3 COMMIT in Journal.update <- Checkout._finish <- Checkout.refund``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import traceback
import weakref
from pathlib import Path
from types import FrameType
from typing import Any

_WRITE_KEYWORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER"})
#: Product folders whose functions name a point (the harness's own frames are left out).
_PRODUCT = ("emv", "drivers", "offline_queue", "terminal", "simulator")
#: Frames that say nothing about who wrote (the store's own transaction helpers).
_PLUMBING = frozenset({"_write", "write", "atomic_write", "__exit__", "__enter__"})

_real_connect = sqlite3.connect
_real_replace = os.replace
_real_open = os.open
_real_write = os.write
_real_fsync = os.fsync
_real_close = os.close
_real_sock_connect = socket.socket.connect
_real_sock_send = socket.socket.send
_real_sock_sendall = socket.socket.sendall


def _keyword(sql: str) -> str:
    text = sql.lstrip(" \t\r\n;(")
    word = ""
    for ch in text:
        if not (ch.isalpha() or ch == "_"):
            break
        word += ch
    return word.upper()


def _savepoint_name(sql: str) -> str:
    words = sql.replace(";", " ").split()
    name = words[-1] if words else ""
    return name.strip('"`[]').lower()


class Injector:
    """Counts the durable write points of this process and kills it at the armed one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self.mode = "off"  # off | count | before | after
        self.target = 0
        self.count = 0
        self.points: list[dict[str, Any]] = []
        self.marker: Path | None = None
        #: (point index, thread id) of an "after" kill waiting for its write to return.
        self._pending: tuple[int, int] | None = None
        self._append_fds: dict[int, str] = {}
        self._appending: dict[int, int] = {}  # fd -> point index of its append, until fsync
        #: Sockets this process connected out (the acquirer, the wallet's registrar).
        self._outbound: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        #: Something went out to another process since the last point (see `point`).
        self._external = False

    # --- arming ----------------------------------------------------------------------

    def arm(self, mode: str, target: int, marker: Path) -> None:
        with self._lock:
            self.mode, self.target, self.marker = mode, target, marker
            self.count = 0
            self.points = []
            self._pending = None
            self._external = False

    def disarm(self) -> None:
        with self._lock:
            self.mode = "off"
            self._pending = None

    # --- naming ----------------------------------------------------------------------

    def _callers(self, frame: FrameType | None) -> str:
        names: list[str] = []
        while frame is not None and len(names) < 4:
            filename = frame.f_code.co_filename
            try:
                rel = Path(filename).resolve().relative_to(self.root)
            except ValueError:
                rel = None
            if rel is not None and rel.parts and rel.parts[0] in _PRODUCT:
                name = frame.f_code.co_qualname
                if frame.f_code.co_name not in _PLUMBING and (not names or names[-1] != name):
                    names.append(name)
            frame = frame.f_back
        return " <- ".join(names) or "(no product caller)"

    # --- the points --------------------------------------------------------------------

    def point(self, label: str, what: str, frame: FrameType | None) -> int:
        """A durable write is about to happen: count it; kill now if armed "before"."""
        with self._lock:
            if self.mode == "off":
                return 0
            self.count += 1
            index = self.count
            name = f"{label} {what} in {self._callers(frame)}"
            self.points.append(
                {
                    "index": index,
                    "name": name,
                    "file": label,
                    "what": what,
                    "thread": threading.current_thread().name,
                    # Whether this process connected or sent to another one (the host)
                    # since the previous point: if not, a kill just after the previous
                    # point leaves the same files and the same host as a kill just before
                    # this one.
                    "external_before": self._external,
                }
            )
            self._external = False
            if index == self.target and self.mode == "before":
                self._die(index, name)
            if index == self.target and self.mode == "after":
                self._pending = (index, threading.get_ident())
            return index

    def returned(self) -> None:
        """A hooked call has returned in this thread: an "after" kill pending here fires."""
        pending = self._pending
        if pending is not None and pending[1] == threading.get_ident():
            with self._lock:
                self._die(pending[0], self.points[pending[0] - 1]["name"])

    def _die(self, index: int, name: str) -> None:
        if self.marker is not None:
            with self.marker.open("w") as handle:
                json.dump({"index": index, "mode": self.mode, "name": name}, handle)
        os.kill(os.getpid(), signal.SIGKILL)

    # --- SQLite ----------------------------------------------------------------------

    def traced(self, conn: _Connection, sql: str) -> None:
        self.returned()  # a statement after an "after" point in the same thread
        kw = _keyword(sql)
        state = conn.crash_state
        label = conn.crash_label
        frame = sys._getframe(1)
        if kw == "BEGIN":
            state["via"], state["dirty"] = "BEGIN", False
        elif kw == "SAVEPOINT":
            if state["via"] is None:
                state["via"], state["dirty"] = "SAVEPOINT:" + _savepoint_name(sql), False
        elif kw in ("COMMIT", "END"):
            if state["dirty"]:
                self.point(label, "COMMIT", frame)
            state["via"], state["dirty"] = None, False
        elif kw == "RELEASE":
            if state["via"] == "SAVEPOINT:" + _savepoint_name(sql):
                if state["dirty"]:
                    self.point(label, "RELEASE (outermost savepoint: commits)", frame)
                state["via"], state["dirty"] = None, False
        elif kw == "ROLLBACK":
            if "TO" not in sql.upper().split():
                state["via"], state["dirty"] = None, False
        elif kw in _WRITE_KEYWORDS or (kw == "PRAGMA" and "=" in sql and state["via"]):
            if state["via"] is None and not conn.in_transaction:
                self.point(label, f"autocommit {kw}", frame)
            else:
                state["dirty"] = True

    # --- files -----------------------------------------------------------------------

    def replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self.returned()
        self.point(Path(os.fsdecode(dst)).name, "os.replace", sys._getframe(1))
        _real_replace(src, dst, **kwargs)
        self.returned()

    def open(self, path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        fd = _real_open(path, flags, mode, **kwargs)
        self._append_fds.pop(fd, None)  # a number closed some other way, now reused
        self._appending.pop(fd, None)
        if flags & os.O_APPEND and flags & (os.O_WRONLY | os.O_RDWR):
            self._append_fds[fd] = Path(os.fsdecode(path)).name
        return fd

    def write(self, fd: int, data: Any) -> int:
        label = self._append_fds.get(fd)
        if label is not None and fd not in self._appending:
            self._appending[fd] = self.point(label, "append", sys._getframe(1))
        return _real_write(fd, data)

    def fsync(self, fd: Any) -> None:
        _real_fsync(fd)
        if isinstance(fd, int) and self._appending.pop(fd, None) is not None:
            self.returned()

    def close(self, fd: int) -> None:
        self._append_fds.pop(fd, None)
        self._appending.pop(fd, None)
        _real_close(fd)

    # --- sockets ---------------------------------------------------------------------

    def connected(self, sock: socket.socket) -> None:
        self._outbound.add(sock)
        self._external = True

    def sent(self, sock: socket.socket) -> None:
        if sock in self._outbound:
            self._external = True

    # --- installing ------------------------------------------------------------------

    def install(self) -> None:
        injector = self

        def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            if "factory" in kwargs:
                raise RuntimeError("crash harness: sqlite3.connect(factory=...) not supported")
            conn = _real_connect(database, *args, factory=_Connection, **kwargs)
            assert isinstance(conn, _Connection)
            conn.crash_label = Path(os.fsdecode(database)).name
            conn.crash_state = {"via": None, "dirty": False}
            conn.crash_injector = injector
            conn.set_trace_callback(lambda sql: injector.traced(conn, sql))
            return conn

        def sock_connect(sock: socket.socket, address: Any) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                injector.connected(sock)
            _real_sock_connect(sock, address)

        def sock_send(sock: socket.socket, data: Any, *args: Any) -> int:
            injector.sent(sock)
            return _real_sock_send(sock, data, *args)

        def sock_sendall(sock: socket.socket, data: Any, *args: Any) -> None:
            injector.sent(sock)
            _real_sock_sendall(sock, data, *args)

        socket.socket.connect = sock_connect  # type: ignore[method-assign,assignment]
        socket.socket.send = sock_send  # type: ignore[method-assign,assignment]
        socket.socket.sendall = sock_sendall  # type: ignore[method-assign,assignment]
        sqlite3.connect = connect  # type: ignore[assignment]
        os.replace = self.replace
        os.open = self.open
        os.write = self.write
        os.fsync = self.fsync
        os.close = self.close


class _Connection(sqlite3.Connection):
    """A connection that tells the injector when a statement has returned (an "after" kill
    then fires before the thread goes on)."""

    crash_label: str
    crash_state: dict[str, Any]
    crash_injector: Injector

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        cursor = super().execute(*args, **kwargs)
        self.crash_injector.returned()
        return cursor

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        cursor = super().executemany(*args, **kwargs)
        self.crash_injector.returned()
        return cursor

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        cursor = super().executescript(*args, **kwargs)
        self.crash_injector.returned()
        return cursor

    def commit(self) -> None:
        super().commit()
        self.crash_injector.returned()


# --- the terminal process ----------------------------------------------------------------


def _stack_module() -> Any:
    """The demo stack, where the tree keeps it (terminal/api/stack.py, or flat
    terminal/stack.py before terminal/ was cut into sub-packages)."""
    try:
        return importlib.import_module("terminal.api.stack")
    except ModuleNotFoundError:
        return importlib.import_module("terminal.stack")


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _terminal(spec: dict[str, Any], injector: Injector, stack_module: Any) -> None:
    """One terminal process: serve the demo stack and obey the harness until told to stop."""
    directory = Path(spec["dir"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + spec["control"])
    listener.listen(1)
    marker = directory / "killed.json"
    if spec.get("arm_at_start"):
        injector.arm(spec["arm_at_start"]["mode"], int(spec["arm_at_start"]["point"]), marker)
    code = spec.get("activation_code")
    stack = stack_module.start_demo_stack(
        directory,
        host_url=spec["host_url"],
        activation_code=code,
        secret=spec["secret"].encode(),
        scrypt_n=2**10,
        pin=spec["pin"],
        background=False,
        confirm_delay=0.0,
        qr_poll_interval=0.02,
    )
    conn, _ = listener.accept()
    reader = conn.makefile("r")
    _send(
        conn,
        {
            "url": stack.api.url,
            "token": stack.token,
            "terminal_id": stack.runtime.keystore.terminal_id,
            "points": injector.points,
        },
    )
    for line in reader:
        command = json.loads(line)
        if command["cmd"] == "arm":
            injector.arm(command["mode"], int(command.get("point", 0)), marker)
            _send(conn, {"armed": True})
        elif command["cmd"] == "points":
            points = list(injector.points)
            injector.disarm()
            _send(conn, {"points": points})
        elif command["cmd"] == "stop":
            injector.disarm()
            stack.close()
            _send(conn, {"stopped": True})
            conn.close()
            return
        elif command["cmd"] == "exit":
            # Switched off at rest: every answer given is on disk already (no clean-up, as
            # a power cut while idle; the next start finds the files as they are).
            os._exit(0)


def _fork_terminal(spec: dict[str, Any], root: Path, stack_module: Any) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The terminal: its own output, no hold on the zygote's pipes.
    status = 1
    try:
        log = _real_open(str(Path(spec["dir"]) / spec["log"]), os.O_WRONLY | os.O_CREAT, 0o600)
        os.lseek(log, 0, os.SEEK_END)
        os.dup2(log, 1)
        os.dup2(log, 2)
        devnull = _real_open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        injector = Injector(root)
        injector.install()
        _terminal(spec, injector, stack_module)
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def zygote(root: Path) -> None:
    """Import once, then fork a terminal per request; report exit statuses when asked."""
    stack_module = _stack_module()
    importlib.import_module("simulator.wallet")  # the simulated phone's, imported on use
    exited: dict[int, int] = {}
    print(json.dumps({"ready": True, "stack": stack_module.__name__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            exited[pid] = status
        if request["cmd"] == "spawn":
            reply: dict[str, Any] = {"pid": _fork_terminal(request["spec"], root, stack_module)}
        elif request["cmd"] == "status":
            pid = int(request["pid"])
            if pid not in exited:
                with contextlib.suppress(ChildProcessError):
                    done, status = os.waitpid(pid, 0 if request.get("wait") else os.WNOHANG)
                    if done:
                        exited[pid] = status
            ended = exited.get(pid)
            reply = {
                "exited": ended is not None,
                "signal": os.WTERMSIG(ended)
                if ended is not None and os.WIFSIGNALED(ended)
                else None,
                "code": os.WEXITSTATUS(ended)
                if ended is not None and os.WIFEXITED(ended)
                else None,
            }
        else:
            return
        print(json.dumps(reply), flush=True)


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve()
    # The tree under test first; never this file's folder (tests/ of another tree).
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(root)] + [p for p in sys.path if p and Path(p).resolve() != Path(here)]
    zygote(root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
