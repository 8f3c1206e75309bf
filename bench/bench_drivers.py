"""Time per APDU and tap-to-outcome through the real stacks: pyscard + pcscd + vpcd, nfcpy's
udp device, and nfcpy's pn532 driver on a pty (APDU only). Stacks that cannot run here (pcscd
and the PN532's /dev name need root; a library missing) are left out of the table with a note
on stderr."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from bench.common import Row

if TYPE_CHECKING:
    from simulator.cards import VirtualCard

SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")
APDUS = 300
TAPS = 15


def _median_ms(work: Callable[[], object], count: int) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def _card() -> VirtualCard:
    from simulator.cards import load_card

    return load_card("visa", approve_offline=True)


def _tap(open_reader_with_card: Callable[[], object]) -> Callable[[], object]:
    """One tap: card arrives, kernel runs to its outcome, reader closed."""
    from simulator.pki import load_test_ca_store
    from terminal.checkout.card_session import new_request, run_card_transaction
    from terminal.domain.params import default_params

    params, keys = default_params(), load_test_ca_store()

    def tap() -> object:
        reader = open_reader_with_card()
        try:
            reader.wait_for_card(timeout=10)  # type: ignore[attr-defined]
            request = new_request(1500, currency=978, clock=datetime.now, random_bytes=os.urandom)
            return run_card_transaction(reader, params, request, ca_keys=keys)  # type: ignore[arg-type]
        finally:
            reader.close()  # type: ignore[attr-defined]

    return tap


def _bench_nfc() -> list[Row]:
    from drivers.url import open_reader
    from simulator.bridges.nfc_udp import NfcUdpCardEmulator

    emulator = NfcUdpCardEmulator(_card())
    emulator.start()
    try:
        with open_reader(emulator.url) as reader:
            reader.wait_for_card(timeout=10)
            per_apdu = _median_ms(lambda: reader.transceive(SELECT_PPSE), APDUS)

        def fresh() -> object:
            emulator.insert(_card())
            return open_reader(emulator.url)

        tap = _median_ms(_tap(fresh), TAPS)
    finally:
        emulator.stop()
    return [
        ("APDU round trip, nfcpy udp ISO-DEP", per_apdu, "ms"),
        ("tap to outcome, nfcpy udp", tap, "ms"),
    ]


def _bench_pn532() -> list[Row]:
    if os.geteuid() != 0:
        print("bench_drivers: the PN532 pty needs root (/dev name); row skipped", file=sys.stderr)
        return []
    from drivers.url import open_reader
    from simulator.bridges.pn532_pty import Pn532PtySimulator

    with Pn532PtySimulator(_card()) as chip, open_reader(chip.url) as reader:
        reader.wait_for_card(timeout=10)
        per_apdu = _median_ms(lambda: reader.transceive(SELECT_PPSE), APDUS)
    return [("APDU round trip, nfcpy pn532 on a pty (simulated chip)", per_apdu, "ms")]


def _bench_pcsc() -> list[Row]:
    if os.geteuid() != 0:
        print("bench_drivers: pcscd needs root; PC/SC rows skipped", file=sys.stderr)
        return []
    from drivers.pcsc import list_pcsc_readers
    from drivers.url import open_reader
    from simulator.bridges.vpcd import VpcdBridge

    started = None
    try:
        list_pcsc_readers()
    except Exception:
        started = subprocess.Popen(
            ["pcscd", "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if list_pcsc_readers():
                    break
            except Exception:
                time.sleep(0.05)
    bridge = VpcdBridge()
    try:
        bridge.insert(_card())
        with open_reader("pcsc:Virtual PCD 00 00") as reader:
            reader.wait_for_card(timeout=10)
            per_apdu = _median_ms(lambda: reader.transceive(SELECT_PPSE), APDUS)

        # Tap to outcome with the card already seen by pcscd (its ~0.4 s insertion poll is
        # the daemon's, not ours).
        def same_card() -> object:
            return open_reader("pcsc:Virtual PCD 00 00")

        tap = _median_ms(_tap(same_card), TAPS)
    finally:
        bridge.remove()
        if started is not None:
            started.terminate()
            started.wait(timeout=10)
    return [
        ("APDU round trip, pcscd + vpcd", per_apdu, "ms"),
        ("tap to outcome, pcscd + vpcd", tap, "ms"),
    ]


def run() -> list[Row]:
    rows: list[Row] = []
    for name, bench in (("pcsc", _bench_pcsc), ("nfc", _bench_nfc), ("pn532", _bench_pn532)):
        try:
            rows.extend(bench())
        except ImportError as exc:
            print(f"bench_drivers: {name} skipped ({exc.name} not installed)", file=sys.stderr)
    return rows
