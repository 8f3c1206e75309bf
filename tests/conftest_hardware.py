"""Pytest plugin: the real hardware stacks, started for tests without any hardware.

Fixtures:

* ``pcscd`` (session) - pcscd with vsmartcard's vpcd driver, started as root
  (``pcscd --foreground`` in the background) and stopped at the end; an already running
  pcscd is reused and left running. Skipped, with the reason, when not root or when the
  Debian packages are missing.
* ``vpcd_card`` - a :class:`simulator.bridges.vpcd.VpcdBridge` on the first vpcd slot
  ('Virtual PCD 00 00'); call ``insert(card)``; removed at teardown.
* ``nfc_card`` - a :class:`simulator.bridges.nfc_udp.NfcUdpCardEmulator` on a free loopback
  UDP port; its ``url`` is the ``nfc:udp:...`` reader URL.
* ``pty_scanner`` - a :class:`simulator.bridges.pty_scanner.PtyScanner`; its ``path`` is the
  serial device to open.
* ``pn532_pty`` - a :class:`simulator.bridges.pn532_pty.Pn532PtySimulator` (a PN532 on a pty,
  named ``/dev/pipos-pn532-<hex>``), started with no card; ``insert(card)``; its ``url`` is
  the ``nfc:tty:...:pn532`` reader URL. Skipped when not root (the name in /dev needs it).

Load it from tests/conftest.py with ``pytest_plugins = ["tests.conftest_hardware"]``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
PCSCD_PIDFILE = Path("/run/pcscd/pcscd.pid")
VPCD_READER = "Virtual PCD 00 00"


def _running_pcscd_pid() -> int | None:
    try:
        pid = int(PCSCD_PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def _readers_visible() -> bool:
    from drivers.pcsc import list_pcsc_readers

    try:
        return VPCD_READER in list_pcsc_readers()
    except Exception:
        return False


VPCD_PORTS = (35963, 35964)


def _wait_for_vpcd_ports(timeout: float = 90.0) -> None:
    """Only one pcscd can hold vpcd's ports: a pcscd started while another process still
    listens there (another test run on this machine, one shutting down) comes up without
    its readers. Wait until the ports are free, as vpcd itself would bind them."""
    deadline = time.monotonic() + timeout
    for port in VPCD_PORTS:
        while True:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vpcd's port {port} stayed busy for {timeout:.0f} s")
                time.sleep(0.5)
            finally:
                probe.close()


class Pcscd:
    """The pcscd the tests run against; ``stop()``/``start()`` simulate the daemon dying."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.owned = False

    def start(self, timeout: float = 10.0) -> None:
        running = _running_pcscd_pid()
        if running is None:
            _wait_for_vpcd_ports()
            self.process = subprocess.Popen(
                ["pcscd", "--foreground"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.owned = True
        deadline = time.monotonic() + timeout
        while not _readers_visible():
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"pcscd exited with {self.process.returncode} at start")
            if time.monotonic() > deadline:
                if self.owned:
                    self.stop()  # never leave a half-started daemon behind
                    pytest.fail("pcscd started but the vpcd reader never appeared")
                pytest.fail(
                    f"a pcscd the tests did not start is running (pid {running}) without the "
                    "vpcd reader: stop it (systemctl stop pcscd.socket pcscd)"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            pid = _running_pcscd_pid()
            if pid is not None and self.owned:
                os.kill(pid, signal.SIGTERM)
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def pcscd() -> Iterator[Pcscd]:
    pytest.importorskip("smartcard", reason="pyscard is not installed (pip install 'pipos[pcsc]')")
    if os.geteuid() != 0:
        pytest.skip("pcscd tests need root: pcscd 1.9.9 always uses /run/pcscd (CI runs as root)")
    if shutil.which("pcscd") is None or not VPCD_DRIVER.exists():
        pytest.skip(
            "pcscd or vsmartcard-vpcd is not installed (apt-get install pcscd vsmartcard-vpcd)"
        )
    daemon = Pcscd()
    daemon.start()
    yield daemon
    if daemon.owned:
        daemon.stop()


@pytest.fixture
def vpcd_card(pcscd: Pcscd) -> Iterator[object]:
    from simulator.bridges.vpcd import VpcdBridge

    bridge = VpcdBridge(port=35963)
    yield bridge
    bridge.remove()


@pytest.fixture
def nfc_card() -> Iterator[object]:
    pytest.importorskip("nfc", reason="nfcpy is not installed (pip install 'pipos[nfc]')")
    from simulator.bridges.nfc_udp import NfcUdpCardEmulator

    emulator = NfcUdpCardEmulator()
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def pty_scanner() -> Iterator[object]:
    pytest.importorskip("serial", reason="pyserial is not installed (pip install 'pipos[serial]')")
    from simulator.bridges.pty_scanner import PtyScanner

    scanner = PtyScanner()
    yield scanner
    scanner.unplug()


@pytest.fixture
def pn532_pty() -> Iterator[object]:
    pytest.importorskip("nfc", reason="nfcpy is not installed (pip install 'pipos[nfc]')")
    if os.geteuid() != 0:
        pytest.skip(
            "the PN532 pty tests need root: nfcpy finds serial devices only by name under "
            "/dev, where the simulator's symlink goes (CI runs as root)"
        )
    from simulator.bridges.pn532_pty import Pn532PtySimulator

    chip = Pn532PtySimulator()
    chip.start()
    yield chip
    chip.stop()
