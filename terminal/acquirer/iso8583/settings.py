"""Where and as whom a terminal on the ISO 8583 link talks to its acquiring host, and the
link opened from that with its durable stores (docs/iso8583.md).

The configuration file's [iso8583] table gives the settings (terminal.service.config), the
demo its own host's; the runtime (`pipos run`) and `pipos doctor` open the link the same
way, on the same counters and message memory in the terminal's data directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ...store.keys import Keystore
from ...store.link_counters import FILE as COUNTERS_FILE
from ...store.link_counters import LinkCounters
from ...store.link_messages import LinkMessages
from ..client import TlsOptions
from .link import Iso8583Link, open_memory
from .messages import Station
from .profile import Profile, default_profile

__all__ = ["Iso8583Settings", "LinkStores", "open_link"]


@dataclass(frozen=True)
class Iso8583Settings:
    """`options`: Iso8583Link's keyword options (timeouts, retries, backoff)."""

    host: str
    port: int
    terminal_id: str
    merchant_id: str
    profile: Profile | None = None
    tls: TlsOptions | None = None
    echo_interval: float = 60.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkStores:
    """The link's files: closed with it."""

    counters: LinkCounters
    memory: LinkMessages

    def close(self) -> None:
        self.memory.close()
        self.counters.close()


def open_link(
    directory: str | os.PathLike[str],
    keystore: Keystore,
    settings: Iso8583Settings,
    *,
    currency: int,
    clock: Callable[[], datetime] | None = None,
) -> tuple[Iso8583Link, LinkStores]:
    """The ISO 8583 link with its durable counters (STAN, batch number) and its message
    memory, both in the terminal's data `directory`."""
    profile = settings.profile or default_profile()
    counters = LinkCounters(Path(directory) / COUNTERS_FILE, stan_max=profile.stan_max)
    stores = LinkStores(counters, open_memory(directory, keystore))
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    try:
        link = Iso8583Link(
            settings.host,
            settings.port,
            station=Station(settings.terminal_id, settings.merchant_id),
            keystore=keystore,
            counters=counters,
            memory=stores.memory,
            currency=currency,
            profile=profile,
            tls=settings.tls,
            echo_interval=settings.echo_interval,
            **extra,
            **settings.options,
        )
    except BaseException:
        stores.close()
        raise
    return link, stores
