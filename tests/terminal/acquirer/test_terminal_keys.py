"""`POST /v1/terminal-keys`: which keys the acquirer enrolled for terminals of the caller's
merchant (docs/protocol.md, "Terminal keys"). An import asks it before it believes a key a
backup declares (terminal/service/transfer.py), so the answer must be the host's and name
only the merchant's own terminals."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from simulator.host.service import AcquirerHost, Caller
from terminal.acquirer.client import HostFaultError, NotEnrolledError
from terminal.domain.signing import b64encode
from terminal.store.keys import Keystore, SequenceCounter
from tests.conftest_host import (
    TEST_SCRYPT_N,
    TEST_SECRET,
    AcquirerTerminal,
    HostHandle,
    TerminalKeys,
)


@contextmanager
def _unit(host: HostHandle, directory: Path, merchant: str | None) -> Iterator[TerminalKeys]:
    """A terminal's keys, enrolled with `merchant` (None: not enrolled)."""
    keys = TerminalKeys(
        directory,
        Keystore.create(directory, TEST_SECRET, scrypt_n=TEST_SCRYPT_N),
        SequenceCounter(directory / "sequence.json"),
    )
    try:
        if merchant is not None:
            with host.client(keys) as client:
                client.enrol(host.activation_code(merchant))
        yield keys
    finally:
        keys.sequence.close()


def test_the_merchants_own_terminals_keys_are_confirmed(
    inprocess_host: HostHandle, inprocess_terminal: AcquirerTerminal, tmp_path: Path
) -> None:
    with (
        _unit(inprocess_host, tmp_path / "sibling", "M0001") as sibling,
        _unit(inprocess_host, tmp_path / "other", "M0002") as other,
        _unit(inprocess_host, tmp_path / "never", None) as never,
    ):
        retired = sibling.keystore.key_id
        with inprocess_host.client(sibling) as client:
            client.rotate_key()
        asked = [retired, sibling.keystore.key_id, other.keystore.key_id, never.keystore.key_id]
        keys = {k.key_id: k for k in inprocess_terminal.client.terminal_keys(asked)}
        assert sorted(keys) == sorted([retired, sibling.keystore.key_id])
        terminal_id = sibling.keystore.terminal_id
        assert {k.terminal_id for k in keys.values()} == {terminal_id}
        assert keys[sibling.keystore.key_id].public_key == sibling.keystore.public_key
        assert keys[sibling.keystore.key_id].retired_at is None
        assert keys[retired].retired_at is not None
        # The caller's own key is one of its merchant's, too.
        [own] = inprocess_terminal.client.terminal_keys([inprocess_terminal.keystore.key_id])
        assert own.terminal_id == inprocess_terminal.terminal_id


def test_many_key_ids_are_asked_in_bounded_requests(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    unknown = [f"ed25519:{i:016x}" for i in range(250)]
    asked = [*unknown, inprocess_terminal.keystore.key_id]
    [own] = inprocess_terminal.client.terminal_keys(asked)
    assert own.key_id == inprocess_terminal.keystore.key_id


def test_the_endpoint_takes_only_an_enrolled_terminals_signed_request(
    inprocess_host: HostHandle, terminal_keys: TerminalKeys
) -> None:
    with inprocess_host.client(terminal_keys) as client, pytest.raises(NotEnrolledError):
        client.terminal_keys([terminal_keys.keystore.key_id])
    response = inprocess_host.http.post("/v1/terminal-keys", json={"key_ids": ["ed25519:00"]})
    assert response.status_code == 401
    # Anyone's refusal: counted in memory, not a row.
    assert inprocess_host.status()["recorded_rejections"] == 0


def test_an_answer_naming_a_key_with_another_public_key_is_a_host_fault(
    inprocess_terminal: AcquirerTerminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id = inprocess_terminal.keystore.key_id

    def lying(self: AcquirerHost, caller: Caller, key_ids: Any) -> dict[str, Any]:
        entry = {"key_id": key_id, "terminal_id": "T1", "public_key": b64encode(bytes(32))}
        return {"merchant_id": caller.merchant_id, "keys": [entry]}

    monkeypatch.setattr(AcquirerHost, "terminal_keys", lying)
    with pytest.raises(HostFaultError, match="does not name"):
        inprocess_terminal.client.terminal_keys([key_id])


def test_an_answer_not_signed_by_the_host_is_not_believed(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    inprocess_terminal.host.set_fault("/v1/terminal-keys", "corrupt", times=1)
    with pytest.raises(HostFaultError):
        inprocess_terminal.client.terminal_keys([inprocess_terminal.keystore.key_id])
