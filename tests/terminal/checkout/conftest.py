"""The checkout tests' terminal: one `terminal` fixture for the modules of this folder, and
the helper it starts the terminal with, for a test that starts its own (a second terminal,
a restart, other options).

A module varies the shared fixture by overriding one of the two small fixtures it reads:
`checkout_host` (the host the terminal is enrolled on: `host` unless the module needs
`acquirer_host` for every test) and `terminal_options` (start_checkout_terminal's keywords:
other `client` options, or start_terminal's own, such as `card_timeout` or `params`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from terminal.app.runtime import TerminalRuntime, start_terminal
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle

CLIENT: Mapping[str, Any] = {
    "sleep": lambda _s: None,
    "read_timeout": 10.0,
    "max_reversal_attempts": 3,
}


def start_checkout_terminal(
    directory: Path,
    host: HostHandle,
    *,
    client: Mapping[str, Any] = CLIENT,
    **options: Any,
) -> TerminalRuntime:
    """A terminal with its state in `directory`, enrolled on `host` with the test secret and
    cheap scrypt; `client` is the AcquirerClient's options (no-op sleep, 10 s read timeout,
    3 reversal attempts unless given), `options` go to start_terminal as they are. The
    caller closes it."""
    return start_terminal(
        directory,
        secret=TEST_SECRET,
        host_url=host.url,
        activation_code=host.activation_code,
        scrypt_n=TEST_SCRYPT_N,
        client_options=host.client_options(**client),
        **options,
    )


@pytest.fixture
def checkout_host(host: HostHandle) -> HostHandle:
    """The host `terminal` is enrolled on: the test's `host` (in process, or acquirer_host
    when the test takes it). A module whose every test needs a real socket overrides it to
    return `acquirer_host`."""
    return host


@pytest.fixture
def terminal_options() -> dict[str, Any]:
    """start_checkout_terminal's keywords for `terminal`; none by default. A module that
    needs other client options or start_terminal keywords overrides it."""
    return {}


@pytest.fixture
def terminal(
    tmp_path: Path, checkout_host: HostHandle, terminal_options: dict[str, Any]
) -> Iterator[TerminalRuntime]:
    """A terminal runtime with its state in tmp_path/terminal, enrolled on `checkout_host`
    with `terminal_options` (the module's, if it overrides either), closed after the test."""
    rt = start_checkout_terminal(tmp_path / "terminal", checkout_host, **terminal_options)
    try:
        yield rt
    finally:
        rt.close()
