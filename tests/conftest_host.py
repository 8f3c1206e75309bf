"""Pytest plugin: the simulated acquirer host on 127.0.0.1 (real uvicorn, real SQLite file).

Load it from tests/conftest.py with ``pytest_plugins = ["tests.conftest_host"]``.

Fixtures:
    acquirer_host      a running host; `.url`, admin helpers (activation codes, rules,
                       faults, ledger, rejections)
    terminal_keys      a fresh keystore + sequence counter in a temp dir
    acquirer_terminal  an enrolled terminal: keystore, counter and AcquirerClient
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.host import HostServer
from terminal.acquirer.client import AcquirerClient, Enrolment
from terminal.store.keys import Keystore, SequenceCounter

TEST_SECRET = b"test-device-secret-0123456789"
# Low scrypt cost keeps the suite fast; production uses the module default.
TEST_SCRYPT_N = 2**10


class HostHandle:
    """A running simulated host and the admin calls tests need."""

    def __init__(self, server: HostServer) -> None:
        self.server = server
        self.url = server.url
        self.db_path = server.db_path
        self._admin = httpx.Client(base_url=server.url, timeout=10)

    def close(self) -> None:
        self._admin.close()

    def _ok(self, response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()

    def activation_code(self, merchant_id: str = "M0001") -> str:
        data = self._ok(
            self._admin.post("/admin/activation-codes", json={"merchant_id": merchant_id})
        )
        return str(data["code"])

    def set_rules(self, **rules: Any) -> None:
        self._ok(self._admin.put("/admin/rules", json=rules))

    def set_issuer_key(self, pan_prefix: str, imk_ac: bytes, **options: Any) -> None:
        body = {pan_prefix: {"imk_ac": imk_ac.hex(), **options}}
        self._ok(self._admin.put("/admin/issuer-keys", json=body))

    def set_parameters(self, params: dict[str, Any]) -> int:
        return int(self._ok(self._admin.put("/admin/parameters", json=params))["version"])

    def set_fault(
        self, path: str, mode: str, *, times: int | None = None, delay_ms: int = 0
    ) -> None:
        body = {path: {"mode": mode, "times": times, "delay_ms": delay_ms}}
        self._ok(self._admin.put("/admin/faults", json=body))

    def clear_faults(self) -> None:
        self._ok(self._admin.delete("/admin/faults"))

    def ledger(self, terminal_id: str | None = None) -> list[dict[str, Any]]:
        params = {"terminal_id": terminal_id} if terminal_id else None
        return list(self._ok(self._admin.get("/admin/ledger", params=params)))

    def events(self) -> list[dict[str, Any]]:
        return list(self._ok(self._admin.get("/admin/events")))

    def rejections(self) -> list[dict[str, Any]]:
        return list(self._ok(self._admin.get("/admin/rejections")))

    def host_public_key(self) -> bytes:
        import base64

        data = self._ok(self._admin.get("/v1/host-key"))
        return base64.b64decode(data["host_public_key"])


@pytest.fixture
def acquirer_host(tmp_path: Path) -> Iterator[HostHandle]:
    server = HostServer(tmp_path / "acquirer.sqlite3")
    server.start()
    handle = HostHandle(server)
    try:
        yield handle
    finally:
        handle.close()
        server.stop()


@dataclass
class TerminalKeys:
    directory: Path
    keystore: Keystore
    sequence: SequenceCounter


@pytest.fixture
def terminal_keys(tmp_path: Path) -> Iterator[TerminalKeys]:
    directory = tmp_path / "terminal"
    ks = Keystore.create(directory, TEST_SECRET, serial="PIPOS-TEST-1", scrypt_n=TEST_SCRYPT_N)
    seq = SequenceCounter(directory / "sequence.json")
    try:
        yield TerminalKeys(directory, ks, seq)
    finally:
        seq.close()


@dataclass
class AcquirerTerminal:
    keys: TerminalKeys
    client: AcquirerClient
    enrolment: Enrolment
    host: HostHandle

    @property
    def keystore(self) -> Keystore:
        return self.keys.keystore


def make_client(host_url: str, keys: TerminalKeys, **kwargs: Any) -> AcquirerClient:
    kwargs.setdefault("sleep", lambda _seconds: None)
    kwargs.setdefault("read_timeout", 10.0)
    return AcquirerClient(host_url, keys.keystore, keys.sequence, **kwargs)


@pytest.fixture
def acquirer_client_factory() -> Any:
    """`factory(url, terminal_keys, **client_kwargs) -> AcquirerClient` (no-op sleep)."""
    return make_client


@pytest.fixture
def acquirer_terminal(
    acquirer_host: HostHandle, terminal_keys: TerminalKeys
) -> Iterator[AcquirerTerminal]:
    client = make_client(acquirer_host.url, terminal_keys)
    try:
        enrolment = client.enrol(acquirer_host.activation_code())
        yield AcquirerTerminal(terminal_keys, client, enrolment, acquirer_host)
    finally:
        client.close()


__all__ = [
    "TEST_SCRYPT_N",
    "TEST_SECRET",
    "AcquirerTerminal",
    "HostHandle",
    "TerminalKeys",
    "acquirer_client_factory",
    "acquirer_host",
    "acquirer_terminal",
    "make_client",
    "terminal_keys",
]
