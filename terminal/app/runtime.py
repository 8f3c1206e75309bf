"""Putting a terminal together: keys, acquirer client, offline queue, journal, reader, checkout.

`pipos run`, `pipos demo`, the API tests and the bench all build their terminal here, so they
run the same assembly the merchant's terminal runs.
"""

from __future__ import annotations

import logging
import os
import random as _random
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from drivers.scanner import open_scanner
from drivers.url import open_reader
from offline_queue.forwarder import Backoff, Forwarder
from offline_queue.store import OfflineQueue

from ..acquirer.client import AcquirerClient, AcquirerError, HostRejectedError
from ..acquirer.iso8583.link import Iso8583Link
from ..acquirer.iso8583.settings import Iso8583Settings, LinkStores, open_link
from ..acquirer.link import AcquirerLink
from ..acquirer.qr_client import AcquirerTransport, QrClient
from ..acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink, limits_from_params
from ..checkout.card_session import CARD_READ_TIMEOUT
from ..checkout.flow import Checkout
from ..checkout.ports import ReaderFactory, ScannerFactory
from ..checkout.qr_payment import QrPaymentParams
from ..domain.params import TerminalParams, default_params
from ..store.journal import Journal
from ..store.keys import DEFAULT_SCRYPT_N, Keystore, SequenceCounter, atomic_write
from .queue_port import QueuePort
from .sim_field import SimulatedField
from .sim_scanner import SimulatedScanner

__all__ = ["TerminalRuntime", "start_terminal"]

log = logging.getLogger(__name__)


@dataclass
class TerminalRuntime:
    checkout: Checkout
    keystore: Keystore
    sequence: SequenceCounter
    #: The pipos protocol's client: enrolment, parameters, code payments, and the money
    #: messages too unless the terminal is on the ISO 8583 link (`iso8583`).
    client: AcquirerClient | None
    queue: OfflineQueue
    journal: Journal
    field: SimulatedField | None
    state_dir: Path
    scanner: SimulatedScanner | None = None  # the simulated scanner, when no scanner_url
    #: The ISO 8583 link, when the money messages go over it (acquirer.protocol).
    iso8583: Iso8583Link | None = None
    _link_stores: LinkStores | None = None
    _stop: threading.Event = dc_field(default_factory=threading.Event)
    _background: threading.Thread | None = None

    def start_background(
        self,
        interval: float = 15.0,
        *,
        max_backoff: float | None = None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """Forward the offline queue and retry pending reversals every `interval` seconds.

        While uploads keep failing the wait grows with full jitter (offline_queue.Backoff,
        capped at `max_backoff`, default 20 intervals), so a fleet coming back after an
        outage spreads its retries instead of hitting the host in step.
        """
        backoff = Backoff(base=interval, cap=max_backoff or interval * 20)

        def loop() -> None:
            failures = 0
            wait = interval
            while not self._stop.wait(wait):
                wait = interval
                try:
                    if self.checkout.queue_summary().count:
                        result = self.checkout.sync_offline()
                        if result.get("remaining") and (
                            result.get("upload_errors") or result.get("error")
                        ):
                            failures += 1
                            wait = backoff.delay(failures, random)
                        else:
                            failures = 0
                    if self.iso8583 is not None:
                        # An idle ISO 8583 link is kept open with an echo test (0800, 301).
                        # Unanswered, it says only that the host is away: the pass goes on
                        # (reversals, the probe), with no traceback every interval.
                        try:
                            self.iso8583.keep_alive()
                        except AcquirerError as exc:
                            log.info("ISO 8583 echo test unanswered: %s", type(exc).__name__)
                    if self.checkout.owes_the_host():
                        self.checkout.retry_reversals()
                    elif self.checkout.host_online is False and not (
                        self.checkout.queue_summary().count
                    ):
                        # Nothing to send or settle says nothing of the bank: ask it (a
                        # signed request that moves no money), or the terminal would stay
                        # offline until the merchant pressed sync.
                        self.checkout.probe_host()
                except Exception:
                    # One bad pass (a locked or failing disk, a bug) must not end forwarding
                    # and reversals for good: log it and try again after a backoff.
                    log.exception("background forwarding pass failed; retrying")
                    failures += 1
                    wait = backoff.delay(failures, random)

        self._background = threading.Thread(target=loop, name="forwarder", daemon=True)
        self._background.start()

    def close(self) -> None:
        # Bounded waits: a SIGTERM must stop the terminal within 3 s (cli.service). A pass
        # of the forwarder cut short is durable and picked up again at the next start.
        self._stop.set()
        self.checkout.close()
        if self._background is not None:
            self._background.join(timeout=1.0)
        if self.client is not None:
            self.client.close()
        if self.iso8583 is not None:
            self.iso8583.close()
        if self._link_stores is not None:
            self._link_stores.close()
        self.queue.close()
        self.journal.close()
        self.sequence.close()


#: The activation code an enrolment in flight used, kept until the keystore holds its answer.
ENROLMENT_CODE_FILE: Final = "enrolment-code"


def _enrol(
    client: AcquirerClient, directory: Path, activation_code: str | Callable[[], str]
) -> None:
    """Enrol, with the code an earlier start had in flight if there is one.

    The code is kept on disk until the keystore holds the host's answer. The host answers a
    retry from the same key with the same code by the same enrolment (docs/protocol.md), so
    a crash after the host committed the enrolment and before the keystore saved it is mended
    on the next start; any other code would be refused, the host knowing this key already
    (the demo asks the host for a new code on every start). A code the host refuses is not
    kept (a kept one is dropped and the code given now is used); one that got no answer is."""
    kept = directory / ENROLMENT_CODE_FILE
    if kept.exists():
        try:
            client.enrol(kept.read_text(encoding="utf-8").strip())
        except HostRejectedError as exc:
            log.info("the enrolment code kept from an earlier start is refused (%s)", exc.code)
        else:
            kept.unlink()
            return
    code = activation_code() if callable(activation_code) else activation_code
    atomic_write(kept, code.encode("utf-8"))
    try:
        client.enrol(code)
    except HostRejectedError:
        kept.unlink()  # refused: nothing to retry with; the technician's error says why
        raise
    kept.unlink()


def start_terminal(
    state_dir: str | os.PathLike[str],
    *,
    secret: bytes,
    host_url: str | None,
    activation_code: str | Callable[[], str] | None = None,
    params: TerminalParams | None = None,
    reader_url: str | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    card_timeout: float = 120.0,
    card_read_timeout: float = CARD_READ_TIMEOUT,
    client_options: dict[str, Any] | None = None,
    scanner_url: str | None = None,
    qr_params: QrPaymentParams | None = None,
    iso8583: Iso8583Settings | Callable[[Keystore], Iso8583Settings] | None = None,
) -> TerminalRuntime:
    """Open (or create) the terminal in `state_dir` and enrol it when it is not yet enrolled.

    `reader_url` None: a :class:`SimulatedField` (cards presented through the page or API).
    `card_timeout`: seconds a sale waits for a card; `card_read_timeout`: seconds one tap's
    card conversation may take (then the sale ends "card took too long").
    `scanner_url` (e.g. ``serial:/dev/ttyACM0?suffix=CR``): the code scanner; None gives a
    :class:`SimulatedScanner` on a simulated terminal (no `reader_url`) and no scanner on a
    terminal with a real reader; "" turns the scanner off.
    `iso8583`: the money messages (sales, refunds, voids, reversals, holds, offline
    uploads, the end of day) go over the ISO 8583 link; enrolment, parameters and code
    payments stay on the pipos protocol's `host_url`. Its TMK must be in the keystore
    (terminal.acquirer.iso8583.link.load_terminal_master_key). A callable is given the
    keystore once the terminal is enrolled (the demo registers it with its own ISO host
    then, by the terminal id the enrolment gave).
    """
    directory = Path(state_dir)
    params = params or default_params()
    if Keystore.exists(directory):
        keystore = Keystore.open(directory, secret)
    else:
        keystore = Keystore.create(directory, secret, scrypt_n=scrypt_n)
    sequence = SequenceCounter(directory / "sequence.json")
    client: AcquirerClient | None = None
    if host_url:
        client = AcquirerClient(host_url, keystore, sequence, **(client_options or {}))
        if keystore.terminal_id is None and activation_code is not None:
            _enrol(client, directory, activation_code)
    if keystore.terminal_id is not None:
        # Killed after the keystore saved the enrolment, before the kept code was removed.
        (directory / ENROLMENT_CODE_FILE).unlink(missing_ok=True)
    queue = OfflineQueue.open(
        directory / "offline_queue.sqlite3",
        keystore.data_key(QUEUE_KEY_PURPOSE),
        clock=lambda: clock().timestamp(),
    )
    link: AcquirerLink | None = client
    iso_link: Iso8583Link | None = None
    link_stores: LinkStores | None = None
    if iso8583 is not None:
        settings = iso8583(keystore) if callable(iso8583) else iso8583
        iso_link, link_stores = open_link(
            directory, keystore, settings, currency=params.terminal.currency_code, clock=clock
        )
        link = iso_link
    forwarder = Forwarder(queue, AcquirerUplink(link), backoff=None) if link is not None else None
    port = QueuePort(
        queue, limits_from_params(params.offline, params.terminal.currency_code), forwarder
    )
    journal = Journal(directory / "journal.sqlite3")
    sim_field: SimulatedField | None = None
    reader_factory: ReaderFactory
    if reader_url is None:
        sim_field = SimulatedField()
        reader_factory = sim_field.reader
    else:
        url = reader_url
        reader_factory = lambda: open_reader(url)  # noqa: E731
    sim_scanner: SimulatedScanner | None = None
    scanner_factory: ScannerFactory | None = None
    if scanner_url:
        scanner_address = scanner_url
        scanner_factory = lambda: open_scanner(scanner_address)  # noqa: E731
    elif scanner_url is None and reader_url is None:
        sim_scanner = SimulatedScanner()
        scanner_factory = sim_scanner.scanner
    # Code payments go over the acquirer client's own signed connection: one sequence
    # counter for every request this terminal makes.
    qr_client = QrClient(AcquirerTransport(client)) if client is not None else None
    checkout = Checkout(
        params=params,
        journal=journal,
        queue=port,
        reader_factory=reader_factory,
        acquirer=link,
        signer=keystore.signer(),
        clock=clock,
        random_bytes=random_bytes,
        card_timeout=card_timeout,
        card_read_timeout=card_read_timeout,
        # Read at each offline payment: an enrolment made while running counts at once.
        enrolled=lambda: keystore.terminal_id is not None and keystore.host_public_key is not None,
        terminal_id=keystore.terminal_id or "",
        scanner_factory=scanner_factory,
        qr_client=qr_client,
        qr_params=qr_params,
    )
    checkout.recover()
    return TerminalRuntime(
        checkout=checkout,
        keystore=keystore,
        sequence=sequence,
        client=client,
        queue=queue,
        journal=journal,
        field=sim_field,
        state_dir=directory,
        scanner=sim_scanner,
        iso8583=iso_link,
        _link_stores=link_stores,
    )
