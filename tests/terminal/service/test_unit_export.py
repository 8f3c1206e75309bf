"""`pipos unit export` tells the truth and leaves the old unit unable to double up (issue 18,
item 7): it counts only the payments still to be sent; the old unit then refuses `pipos run`
(saying why and how a mistaken export is undone); a sync forced on it anyway reports the
payments the host already had as duplicates, not as accepted. Against the session's host
over loopback, as the commands reach it by the configured URL."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from offline_queue import OfflineQueue
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink
from terminal.cli import main
from terminal.service.provision import open_service_terminal
from tests.conftest_host import TEST_SCRYPT_N, HostHandle
from tests.terminal.service.test_provision import PIN, _enqueue, _payment, _provision

pytestmark = pytest.mark.integration


def _run(config: Path) -> int:
    # `pipos run` installs its SIGTERM handler: put the test process's back afterwards.
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return main(["run", "--config", str(config), "--port", "0"])
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_unit_export_counts_waiting_payments_and_retires_the_old_unit(
    session_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin, passphrase = tmp_path / "pin", tmp_path / "passphrase"
    pin.write_text(PIN + "\n")
    passphrase.write_text("correct horse battery staple\n")
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    _provision(session_host, old_dir)
    # Ids and amounts of their own: the session host matches a payment across its terminals.
    _enqueue(old_dir / "data", _payment(9101, 1210), _payment(9102, 3410), _payment(9103, 570))
    old_config = old_dir / "etc" / "terminal.toml"

    # Payment 1 is sent and accepted before the unit fails: history, not to be sent again.
    service = open_service_terminal(old_config, scrypt_n=TEST_SCRYPT_N)
    with (
        OfflineQueue.open(
            old_dir / "data" / "offline_queue.sqlite3",
            service.keystore.data_key(QUEUE_KEY_PURPOSE),
        ) as queue,
        service.client() as client,
    ):
        batch = queue.claim_batch(max_items=1)
        assert batch is not None
        queue.record_results(batch, AcquirerUplink(client).upload(batch))

    backup = tmp_path / "queue.backup"
    old_args = ["--config", str(old_config)]
    pins = ["--technician-pin-file", str(pin), "--passphrase-file", str(passphrase)]
    assert main(["unit", "export", str(backup), *old_args, *pins]) == 0
    assert "exported 2 payment(s) still to be sent" in capsys.readouterr().out

    # The old unit no longer runs: its payments are the replacement's to send.
    assert _run(old_config) != 0
    err = capsys.readouterr().err
    assert f"its offline queue was exported to {backup.resolve()}" in err
    assert "(2 payment(s) to send)" in err
    assert f"pipos unit reinstate --config {old_config}" in err

    # The replacement imports and sends them.
    _provision(session_host, new_dir)
    new_args = ["--config", str(new_dir / "etc" / "terminal.toml")]
    assert main(["unit", "import", str(backup), *new_args, *pins]) == 0
    capsys.readouterr()
    assert main(["sync", *new_args]) == 0
    assert "accepted 2," in capsys.readouterr().out

    # A sync forced on the old unit: the host had them all; said so, nothing paid again.
    assert main(["sync", *old_args]) == 0
    out = capsys.readouterr().out
    assert "accepted 0," in out
    assert "2 payment(s) the host already had (duplicates" in out

    # A technician undoes the export (here after the fact: harmless, as the sync showed).
    assert main(["unit", "reinstate", *old_args, "--technician-pin-file", str(pin)]) == 0
    assert "reinstated: it runs again" in capsys.readouterr().out
    assert "unit_reinstated" in (old_dir / "data" / "audit.log").read_text()
    assert not (old_dir / "data" / "unit-exported.json").exists()
    assert main(["unit", "reinstate", *old_args, "--technician-pin-file", str(pin)]) != 0
    assert "nothing to undo" in capsys.readouterr().err
