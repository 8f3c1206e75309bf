"""The technician's commands end to end through `pipos ...` against the simulated host, and
unit replacement: export the queue from a failing unit, import it on its replacement, sync -
a payment the old unit was sending when it died is not paid twice.

The commands reach the host by the URL in the terminal's configuration: over real HTTP on
loopback, the session's host (each test enrols its own terminals and reads their ledger
only) or, to change the host's parameters, a host of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline_queue import OfflineQueue
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink
from terminal.cli import main
from terminal.service.config import load_config
from terminal.service.provision import open_service_terminal
from terminal.store.keys import Keystore, SequenceCounter, secret_from_file
from tests.conftest_host import TEST_SCRYPT_N, HostHandle
from tests.terminal.service.test_provision import PIN, _enqueue, _payment, _provision

pytestmark = pytest.mark.integration


def _files(tmp: Path) -> tuple[Path, Path]:
    pin, passphrase = tmp / "pin", tmp / "passphrase"
    pin.write_text(PIN + "\n")
    passphrase.write_text("correct horse battery staple\n")
    return pin, passphrase


def test_cli_provision_params_update_and_key_rotation(
    acquirer_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin, _ = _files(tmp_path)
    config = tmp_path / "etc" / "terminal.toml"
    args = ["--config", str(config), "--technician-pin-file", str(pin)]
    code = acquirer_host.activation_code()
    status = main(
        ["provision", "--host", acquirer_host.url, "--activation-code", code,
         "--host-key", acquirer_host.host_key_fingerprint, "--allow-plain-http",
         "--data-dir", str(tmp_path / "data"), "--reader", "pcsc:ACR122", *args]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    terminal_id = load_config(config).terminal_id
    assert f"terminal {terminal_id} provisioned" in out
    assert "refused CA key A000000003/99: expired" in out
    assert load_config(config).reader_url == "pcsc:ACR122"

    assert main(["params", "update", *args]) == 0
    assert "up to date" in capsys.readouterr().out
    params = dict(acquirer_host.server.app.host.store.get_config("parameters") or {})
    version = acquirer_host.set_parameters(params or _default_host_params())
    assert main(["params", "update", *args]) == 0
    assert f"-> {version}" in capsys.readouterr().out

    old_key = Keystore.open(
        tmp_path / "data", secret_from_file(tmp_path / "data" / "device-secret")
    ).key_id
    assert main(["keys", "rotate", *args]) == 0
    assert f"{old_key} -> ed25519:" in capsys.readouterr().out

    wrong = tmp_path / "wrong"
    wrong.write_text("111112\n")
    bad = ["--config", str(config), "--technician-pin-file", str(wrong)]
    assert main(["keys", "rotate", *bad]) == 1
    assert "wrong technician PIN" in capsys.readouterr().err


def _default_host_params() -> dict[str, object]:
    from simulator.host.service import default_parameters

    return default_parameters()


def test_unit_replacement_does_not_pay_a_payment_twice(
    session_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin, passphrase = _files(tmp_path)
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old = _provision(session_host, old_dir)
    _enqueue(old_dir / "data", _payment(1, 1200), _payment(2, 3400))

    # The old unit was sending payment 1 when it died: the host processed it, the answer
    # never arrived, so the old unit still has it in 'sending'.
    service = open_service_terminal(old_dir / "etc" / "terminal.toml", scrypt_n=TEST_SCRYPT_N)
    with (
        OfflineQueue.open(
            old_dir / "data" / "offline_queue.sqlite3",
            service.keystore.data_key(QUEUE_KEY_PURPOSE),
        ) as queue,
        service.client() as client,
    ):
        batch = queue.claim_batch(max_items=1)
        assert batch is not None
        [first] = AcquirerUplink(client).upload(batch)
        assert first.transaction_id == _payment(1).transaction_id

    backup = tmp_path / "queue.backup"
    old_args = ["--config", str(old_dir / "etc" / "terminal.toml")]
    pins = ["--technician-pin-file", str(pin), "--passphrase-file", str(passphrase)]
    assert main(["unit", "export", str(backup), *old_args, *pins]) == 0
    assert "exported 2 payment(s) still to be sent" in capsys.readouterr().out

    # The replacement: same merchant, its own key and terminal id.
    new = _provision(session_host, new_dir)
    assert new.terminal_id != old.terminal_id
    new_args = ["--config", str(new_dir / "etc" / "terminal.toml")]
    assert main(["unit", "import", str(backup), *new_args, *pins]) == 0
    assert "imported 2 payment(s)" in capsys.readouterr().out
    # Importing twice adds nothing.
    assert main(["unit", "import", str(backup), *new_args, *pins]) == 0
    assert "imported 0 payment(s)" in capsys.readouterr().out
    # A wrong passphrase imports nothing and is audited with its reason, as `pipos queue
    # import` audits it: one transfer (terminal/service/transfer.py) behind both commands.
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the passphrase of this backup\n")
    bad_pins = ["--technician-pin-file", str(pin), "--passphrase-file", str(wrong)]
    assert main(["unit", "import", str(backup), *new_args, *bad_pins]) == 1
    assert "queue_import_failed" in (new_dir / "data" / "audit.log").read_text()
    capsys.readouterr()

    assert main(["sync", *new_args]) == 0
    out = capsys.readouterr().out
    # Payment 1 reached the host from the old unit before it died: the host says it had it.
    assert "accepted 1," in out
    assert "1 payment(s) the host already had (duplicates" in out

    ledger = session_host.ledger(old.terminal_id) + session_host.ledger(new.terminal_id)
    sales = [r for r in ledger if r["kind"] == "offline_sale"]
    by_id = {}
    for row in sales:
        by_id.setdefault(row["offline_id"], []).append(row)
    assert {k: len(v) for k, v in by_id.items()} == {
        _payment(1).transaction_id: 1,
        _payment(2).transaction_id: 1,
    }
    # Payment 1 stays with the old terminal that sent it; payment 2 went via the new one.
    assert by_id[_payment(1).transaction_id][0]["terminal_id"] == old.terminal_id
    assert by_id[_payment(2).transaction_id][0]["terminal_id"] == new.terminal_id

    events = (new_dir / "data" / "audit.log").read_text()
    assert "queue_imported" in events
    assert "queue_exported" in (old_dir / "data" / "audit.log").read_text()


def test_same_offline_id_with_other_content_is_still_a_new_payment(
    session_host: HostHandle, tmp_path: Path
) -> None:
    """The host's cross-terminal match is on the payment's content too, so two units whose
    random ids collide never lose one of the payments."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = _provision(session_host, a_dir)
    b = _provision(session_host, b_dir)
    _enqueue(a_dir / "data", _payment(7, 1000))
    _enqueue(b_dir / "data", _payment(7, 2000))
    for d in (a_dir, b_dir):
        assert main(["sync", "--config", str(d / "etc" / "terminal.toml")]) == 0
    ledger = session_host.ledger(a.terminal_id) + session_host.ledger(b.terminal_id)
    sales = [r for r in ledger if r["kind"] == "offline_sale"]
    assert sorted(r["amount"] for r in sales) == [1000, 2000]


def test_service_commands_refuse_while_the_terminal_runs(
    session_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin, _ = _files(tmp_path)
    _provision(session_host, tmp_path)
    running = SequenceCounter(tmp_path / "data" / "sequence.json")
    try:
        config = ["--config", str(tmp_path / "etc" / "terminal.toml")]
        assert main(["keys", "rotate", *config, "--technician-pin-file", str(pin)]) == 1
        assert "stop it first" in capsys.readouterr().err
    finally:
        running.close()


def test_doctor_human_output(
    session_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(session_host, tmp_path)
    main(["doctor", "--config", str(tmp_path / "etc" / "terminal.toml")])
    out = capsys.readouterr().out
    assert "PASS  host reachable" in out
    assert "passed" in out
