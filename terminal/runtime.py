"""Putting a terminal together: keys, acquirer client, offline queue, journal, reader, checkout.

`pipos run`, `pipos demo`, the API tests and the bench all build their terminal here, so they
run the same assembly the merchant's terminal runs.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.url import open_reader
from offline_queue.forwarder import Forwarder
from offline_queue.store import OfflineQueue

from .acquirer import AcquirerClient
from .checkout import Checkout, ReaderFactory
from .keys import DEFAULT_SCRYPT_N, Keystore, SequenceCounter
from .params import TerminalParams, default_params
from .queue_port import QueuePort
from .queue_uplink import QUEUE_KEY_PURPOSE, AcquirerUplink, limits_from_params
from .sim_field import SimulatedField
from .transactions import Journal

__all__ = ["TerminalRuntime", "start_terminal"]


@dataclass
class TerminalRuntime:
    checkout: Checkout
    keystore: Keystore
    sequence: SequenceCounter
    client: AcquirerClient | None
    queue: OfflineQueue
    journal: Journal
    field: SimulatedField | None
    state_dir: Path
    _stop: threading.Event = dc_field(default_factory=threading.Event)
    _background: threading.Thread | None = None

    def start_background(self, interval: float = 15.0) -> None:
        """Forward the offline queue and retry pending reversals every `interval` seconds."""

        def loop() -> None:
            while not self._stop.wait(interval):
                if self.checkout.queue_summary().count:
                    self.checkout.sync_offline()
                if self.checkout.journal.pending_reversals():
                    self.checkout.retry_reversals()

        self._background = threading.Thread(target=loop, name="forwarder", daemon=True)
        self._background.start()

    def close(self) -> None:
        self._stop.set()
        self.checkout.close()
        if self._background is not None:
            self._background.join(timeout=10)
        if self.client is not None:
            self.client.close()
        self.queue.close()
        self.journal.close()
        self.sequence.close()


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
    client_options: dict[str, Any] | None = None,
) -> TerminalRuntime:
    """Open (or create) the terminal in `state_dir` and enrol it when it is not yet enrolled.

    `reader_url` None: a :class:`SimulatedField` (cards presented through the page or API).
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
            code = activation_code() if callable(activation_code) else activation_code
            client.enrol(code)
    queue = OfflineQueue.open(
        directory / "offline_queue.sqlite3",
        keystore.data_key(QUEUE_KEY_PURPOSE),
        clock=lambda: clock().timestamp(),
    )
    forwarder = (
        Forwarder(queue, AcquirerUplink(client), backoff=None) if client is not None else None
    )
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
    checkout = Checkout(
        params=params,
        journal=journal,
        queue=port,
        reader_factory=reader_factory,
        acquirer=client,
        signer=keystore.signer(),
        clock=clock,
        random_bytes=random_bytes,
        card_timeout=card_timeout,
        terminal_id=keystore.terminal_id or "",
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
    )
