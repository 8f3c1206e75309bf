"""Issue 16, item 5 "a slow card wedges the terminal": a card that answers slowly, never
answers, or keeps its transport going ('61xx' more data, '6Cxx' wrong length, S(WTX) more
time, for ever) cannot hold the terminal.

* Cancel ends the sale within 1 s whatever the card does, through the real stacks: pcscd +
  vpcd (a virtual card that never answers GET PROCESSING OPTIONS), nfcpy's udp device (a
  card asking for more time for ever), and the simulated field of `pipos run`.
* SIGTERM stops `pipos run` within 3 s with a wedged card mid-sale, and the sale is on disk
  as cancelled, not left in progress.
* The drivers' transport loops are bounded: such cards now end in a clear
  :class:`drivers.errors.TransportLoopError` instead of looping for ever.

Before the fix: cancel was refused once a card was being read ("too late to cancel"), the
checkout waited for the card for ever and SIGTERM took over 12 s; the PC/SC driver sent GET
RESPONSE for as long as the card said '61xx'; nfcpy answered S(WTX) for ever.
"""

from __future__ import annotations

import re
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.errors import TransportLoopError
from terminal.app.runtime import TerminalRuntime, start_terminal
from terminal.domain.messages import Result
from terminal.domain.records import Stage, State, TxnRecord
from terminal.store.journal import Journal
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle
from tests.pipos_run import pipos_run

CLIENT = {"sleep": lambda _s: None, "read_timeout": 10.0, "max_reversal_attempts": 3}
CANCEL_WITHIN = 1.0
VPCD_READER = "pcsc:Virtual PCD 00 00"


def _terminal(path: Path, host: HostHandle, reader_url: str | None) -> TerminalRuntime:
    return start_terminal(
        path / "terminal",
        secret=TEST_SECRET,
        host_url=host.url,
        activation_code=host.activation_code,
        scrypt_n=TEST_SCRYPT_N,
        client_options=host.client_options(**CLIENT),
        reader_url=reader_url,
        scanner_url="" if reader_url else None,
        card_timeout=30.0,
    )


def _wait_for_stage(rt: TerminalRuntime, txn_id: str, stage: Stage, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while rt.checkout.get(txn_id).stage != stage:
        assert not rt.checkout.get(txn_id).finished, rt.checkout.get(txn_id)
        assert time.monotonic() < deadline, f"the sale never reached {stage}"
        time.sleep(0.005)


def _cancel_mid_read(rt: TerminalRuntime, present: Callable[[], None]) -> tuple[TxnRecord, float]:
    """Start a sale, present the wedged card, cancel once it is being read: the sale as it
    ended and the seconds from the cancel to the sale recorded cancelled."""
    record = rt.checkout.start_sale(1500)
    present()
    _wait_for_stage(rt, record.id, Stage.READING_CARD)
    time.sleep(0.2)  # the card is now stuck on a command
    started = time.monotonic()
    rt.checkout.cancel(record.id)
    ended = rt.checkout.wait(record.id, timeout=10)
    return ended, time.monotonic() - started


def _assert_cancelled(ended: TxnRecord, latency: float) -> None:
    assert (ended.state, ended.result) == (State.CANCELLED, Result.CANCELLED), ended
    assert latency < CANCEL_WITHIN, f"cancel took {latency:.3f} s"


# --- the simulated field (what `pipos run` uses) --------------------------------------------


@pytest.fixture
def field_terminal(tmp_path: Path, host: HostHandle) -> Iterator[TerminalRuntime]:
    rt = _terminal(tmp_path, host, None)
    try:
        yield rt
    finally:
        rt.close()


@pytest.mark.parametrize("card", ["visa?hang_on=gpo", "mastercard?slow=30"])
def test_cancel_within_a_second_of_a_wedged_card_in_the_simulated_field(
    field_terminal: TerminalRuntime, card: str
) -> None:
    rt = field_terminal
    assert rt.field is not None
    field = rt.field
    latencies = []
    for _ in range(5):
        ended, latency = _cancel_mid_read(rt, lambda: field.present(f"sim:{card}"))
        _assert_cancelled(ended, latency)
        latencies.append(latency)
    print(f"cancel latency ({card}): median {statistics.median(latencies) * 1000:.1f} ms")


# --- pcscd + vpcd -------------------------------------------------------------------------


def test_cancel_within_a_second_of_a_wedged_card_through_pcscd(
    vpcd_card: Any, tmp_path: Path, host: HostHandle
) -> None:
    from simulator.cards import load_card

    pytest.importorskip("smartcard", reason="pyscard is not installed (pip install 'pipos[pcsc]')")
    rt = _terminal(tmp_path, host, VPCD_READER)
    try:
        latencies = []
        for _ in range(3):
            ended, latency = _cancel_mid_read(
                rt, lambda: vpcd_card.insert(load_card("visa", hang_on="gpo"))
            )
            _assert_cancelled(ended, latency)
            latencies.append(latency)
            vpcd_card.remove()  # the merchant takes the wedged card away
            time.sleep(0.6)  # pcscd polls vpcd every ~0.4 s: let it see the card go
        print(f"cancel latency (pcscd): median {statistics.median(latencies) * 1000:.1f} ms")
        # The reader is usable again: the next card is read and approved.
        record = rt.checkout.start_sale(1200)
        vpcd_card.insert(load_card("visa"))
        assert rt.checkout.wait(record.id, timeout=30).state == State.APPROVED
    finally:
        vpcd_card.remove()
        rt.close()


def _in_thread(call: Callable[[], Any], timeout: float) -> BaseException | None:
    """`call()` in a thread: what it raised; fails when it is still running after `timeout`
    (an unbounded loop)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # the test looks at it
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still looping after {timeout} s"
    return raised[0] if raised else None


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("more_data_forever", r"kept answering '61xx' \(more data\) after 32 GET RESPONSE"),
        ("wrong_length_forever", r"'6C[0-9A-F]{2}' \(wrong length\) again"),
    ],
)
def test_a_t0_card_looping_its_transport_through_pcscd_is_cut_at_the_bound(
    vpcd_card: Any, behaviour: str, message: str
) -> None:
    from drivers.url import open_reader
    from emv import apdu
    from simulator.bridges.vpcd import contact_t0_atr
    from simulator.cards import load_card

    pytest.importorskip("smartcard", reason="pyscard is not installed (pip install 'pipos[pcsc]')")
    options: dict[str, Any] = {behaviour: True}
    card = load_card("visa", **options)
    time.sleep(0.6)  # pcscd polls vpcd every ~0.4 s: a card swapped faster goes unseen
    vpcd_card.insert(card, atr=contact_t0_atr())
    try:
        with open_reader(VPCD_READER) as reader:
            assert reader.wait_for_card(timeout=10).atr == contact_t0_atr()  # T=0 only
            raised = _in_thread(lambda: reader.transceive(apdu.select_ppse().encode()), 10)
        assert isinstance(raised, TransportLoopError), raised
        assert re.search(message, str(raised)), raised
        assert card.commands <= 33  # the command and the GET RESPONSE commands allowed
    finally:
        vpcd_card.remove()


# --- nfcpy's udp device -------------------------------------------------------------------


def test_cancel_within_a_second_of_a_card_asking_for_more_time_through_nfcpy(
    nfc_card: Any, tmp_path: Path, host: HostHandle
) -> None:
    from simulator.cards import load_card

    # A card working for ever: an S(WTX) every 0.3 s (within its FWT of ~0.6 s, FWI 11).
    nfc_card.fwi, nfc_card.wtx, nfc_card.wtx_forever = 11, True, True
    nfc_card.wtx_interval = 0.3
    rt = _terminal(tmp_path, host, nfc_card.url)
    try:
        latencies = []
        for _ in range(3):
            ended, latency = _cancel_mid_read(rt, lambda: nfc_card.insert(load_card("visa")))
            _assert_cancelled(ended, latency)
            latencies.append(latency)
            nfc_card.remove()
        print(f"cancel latency (nfcpy): median {statistics.median(latencies) * 1000:.1f} ms")
    finally:
        rt.close()


def test_a_card_asking_for_more_time_forever_through_nfcpy_is_cut_at_the_bound(
    nfc_card: Any,
) -> None:
    from drivers.nfc import MAX_WTX_PER_APDU
    from drivers.url import open_reader
    from emv import apdu
    from simulator.cards import load_card

    nfc_card.wtx, nfc_card.wtx_forever = True, True
    nfc_card.insert(load_card("visa"))
    with open_reader(nfc_card.url) as reader:
        reader.wait_for_card(timeout=10)
        raised = _in_thread(lambda: reader.transceive(apdu.select_ppse().encode()), 10)
    assert isinstance(raised, TransportLoopError), raised
    assert f"more time (S(WTX)) {MAX_WTX_PER_APDU} times" in str(raised)
    assert nfc_card.wtx_sent <= MAX_WTX_PER_APDU + 1


# --- SIGTERM with a wedged card mid-sale ------------------------------------------------------


@pytest.mark.integration
def test_sigterm_stops_pipos_run_within_3_s_with_a_wedged_card_mid_sale(
    tmp_path: Path,
) -> None:
    token = "wedged-card-test-token"
    state = tmp_path / "run"
    with pipos_run(state, token, tmp_path / "stderr.txt") as running:
        with httpx.Client(
            base_url=running.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as api:
            sale = api.post("/api/v1/sales", json={"amount": 1500, "currency": 978})
            assert sale.status_code == 202, sale.text
            txn = sale.json()["id"]
            shown = api.post("/api/v1/simulator/present", json={"card": "visa?hang_on=gpo"})
            assert shown.status_code == 200, shown.text
            deadline = time.monotonic() + 15
            while api.get(f"/api/v1/transactions/{txn}").json()["stage"] != "reading_card":
                assert time.monotonic() < deadline, "the sale never started reading the card"
                time.sleep(0.01)
        time.sleep(0.3)  # wedged on GET PROCESSING OPTIONS
        stopped = running.stop(signal.SIGTERM)
    errors = running.errors.read_text()
    print(f"SIGTERM stop time with a wedged card: {stopped:.2f} s")
    assert stopped < 3.0, f"pipos run took {stopped:.2f} s to stop:\n{errors}"
    assert running.process.returncode == 0, errors
    assert "Traceback" not in errors
    # On disk, as the next start finds it: cancelled, not left in progress.
    journal = Journal(state / "terminal" / "journal.sqlite3")
    try:
        record = journal.get(txn)
    finally:
        journal.close()
    assert record is not None
    assert (record.state, record.result) == (State.CANCELLED, Result.CANCELLED)
