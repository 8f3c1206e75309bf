"""`pipos run --config`: the provisioned terminal serves sales with its own keys, verified
parameters and devices, and audits refunds and merchant PIN failures."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from terminal.acquirer.uplink import open_queue
from terminal.api.stack import start_provisioned_stack
from terminal.domain.errors import ConfigurationError
from terminal.service.config import load_config
from terminal.service.provision import provision
from terminal.store.audit import verify_audit_log
from terminal.store.keys import Keystore, KeystoreError
from tests.conftest_host import TEST_SCRYPT_N, HostHandle
from tests.terminal.store.test_keys import _as_format_1

# `pipos run` serves the API on loopback, against a host of the test's own.
pytestmark = pytest.mark.integration


def _provisioned(host: HostHandle, tmp_path: Path) -> Path:
    config_path = tmp_path / "etc" / "terminal.toml"
    provision(
        host_url=host.url,
        activation_code=host.activation_code(),
        config_path=config_path,
        technician_secret="270513",
        data_dir=tmp_path / "data",
        reader_url="sim:visa",
        scrypt_n=TEST_SCRYPT_N,
        **host.provision_options(),  # the host's key pinned; plain HTTP on loopback asked for
    )
    return config_path


def test_sale_refund_and_audit(acquirer_host: HostHandle, tmp_path: Path) -> None:
    config_path = _provisioned(acquirer_host, tmp_path)
    data_dir = load_config(config_path).data_dir
    _set_merchant_pin(config_path, tmp_path, "5831")
    now = [1000.0]
    stack, token_path, created = start_provisioned_stack(
        config_path,
        bind="127.0.0.1",
        port=0,
        printer_url=None,
        pin_file=None,
        token_file=None,
        pin_clock=lambda: now[0],
    )
    try:
        assert created
        assert token_path.stat().st_mode & 0o077 == 0
        api = httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        )
        created_sale = api.post("/api/v1/sales", json={"amount": 1234, "currency": 826})
        assert created_sale.status_code == 202, created_sale.text
        sale = created_sale.json()
        record = stack.checkout.wait(sale["id"], timeout=30)
        assert record.state == "approved"
        assert [t["kind"] for t in acquirer_host.ledger()] == ["sale"]
        wrong = api.post(f"/api/v1/transactions/{sale['id']}/refund", json={"pin": "0000"})
        assert wrong.status_code == 403
        refund = api.post(
            f"/api/v1/transactions/{sale['id']}/refund", json={"pin": "5831", "amount": 234}
        )
        assert refund.status_code == 200, refund.text
        assert refund.json()["state"] == "approved"
    finally:
        stack.close()
    events = [line for line in (data_dir / "audit.log").read_text().splitlines() if line]
    assert any('"merchant_pin_wrong"' in line for line in events)
    assert any('"refund"' in line for line in events)
    assert verify_audit_log(data_dir / "audit.log").ok


def test_missing_pin_file_says_how_to_fix(acquirer_host: HostHandle, tmp_path: Path) -> None:
    config_path = _provisioned(acquirer_host, tmp_path)
    with pytest.raises(ConfigurationError, match=r"no merchant PIN is set.*pipos merchant-pin set"):
        start_provisioned_stack(
            config_path,
            bind="127.0.0.1",
            port=0,
            printer_url=None,
            pin_file=None,
            token_file=None,
        )


def test_a_clear_text_merchant_pin_file_is_refused_until_set_properly(
    acquirer_host: HostHandle, tmp_path: Path
) -> None:
    config_path = _provisioned(acquirer_host, tmp_path)
    legacy = load_config(config_path).data_dir / "merchant-pin"
    legacy.write_text("5831\n")  # how earlier versions kept it
    os.chmod(legacy, 0o600)
    with pytest.raises(ConfigurationError, match=r"in clear.*pipos merchant-pin set"):
        start_provisioned_stack(
            config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None, token_file=None
        )
    _set_merchant_pin(config_path, tmp_path, "5831")
    assert not legacy.exists()  # overwritten, then removed
    stack, _, _ = start_provisioned_stack(
        config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None, token_file=None
    )
    stack.close()


def test_a_format_1_keystore_is_authenticated_after_one_start(
    acquirer_host: HostHandle, tmp_path: Path
) -> None:
    # A terminal provisioned by an earlier version: its identity block (terminal id, host
    # key) not MAC'd. `pipos run` alone must close that, not only a re-provision.
    config_path = _provisioned(acquirer_host, tmp_path)
    config = load_config(config_path)
    secret = config.secret_provider().load()
    _set_merchant_pin(config_path, tmp_path, "5831")
    _as_format_1(config.data_dir, secret)
    assert Keystore.open(config.data_dir, secret).needs_upgrade
    stack, _, _ = start_provisioned_stack(
        config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None, token_file=None
    )
    stack.close()
    path = Keystore.path_in(config.data_dir)
    assert '"format": "pipos-keystore-2"' in path.read_text()
    assert not Keystore.open(config.data_dir, secret).needs_upgrade
    # From now on the identity block is bound to the device secret.
    path.write_text(path.read_text().replace(str(config.terminal_id), "T-ATTACKER"))
    with pytest.raises(KeystoreError, match="altered"):
        Keystore.open(config.data_dir, secret)


def _set_merchant_pin(config_path: Path, tmp_path: Path, pin: str) -> None:
    """`pipos merchant-pin set`, as the technician runs it from a script."""
    technician = tmp_path / "technician-pin"
    technician.write_text("270513\n")
    merchant = tmp_path / "merchant-pin-new"
    merchant.write_text(pin + "\n")
    os.chmod(merchant, 0o600)
    from terminal.cli import main

    argv = ["merchant-pin", "set", "--config", str(config_path)]
    assert main([*argv, "--technician-pin-file", str(technician), "--pin-file", str(merchant)]) == 0


def test_unprovisioned_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "terminal.toml"
    config.write_text(
        '[acquirer]\nurl = "http://127.0.0.1:1"\n[storage]\n'
        f'data_dir = "{tmp_path}"\nsecret_file = "{tmp_path / "secret"}"\n'
    )
    with pytest.raises(ConfigurationError, match="not provisioned"):
        start_provisioned_stack(
            config, bind="127.0.0.1", port=0, printer_url=None, pin_file=None, token_file=None
        )


def test_queue_export_on_a_provisioned_terminal_needs_the_technician(
    acquirer_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from terminal.cli import main

    config_path = _provisioned(acquirer_host, tmp_path)
    config = load_config(config_path)
    keystore = Keystore.open(config.data_dir, config.secret_provider().load())
    open_queue(config.data_dir / "offline_queue.sqlite3", keystore).close()
    wrong, right, passphrase = tmp_path / "wrong", tmp_path / "right", tmp_path / "pass"
    for path, text in ((wrong, "999999"), (right, "270513"), (passphrase, "backup pass 1")):
        path.write_text(text + "\n")
        os.chmod(path, 0o600)
    backup = tmp_path / "queue.backup"
    common = ["queue", "export", "--config", str(config_path), "--passphrase-file", str(passphrase)]
    assert main([*common, "--technician-pin-file", str(wrong), str(backup)]) == 1
    assert "technician" in capsys.readouterr().err.lower()
    assert not backup.exists()
    assert main([*common, "--technician-pin-file", str(right), str(backup)]) == 0
    assert backup.exists()
    log = (load_config(config_path).data_dir / "audit.log").read_text()
    assert "queue_export" in log
    assert '"queue_exported"' in log
    # Importing card data into a provisioned terminal's queue needs the technician too, as
    # `pipos unit import` does, and is audited with what it added.
    back_in = [
        "queue",
        "import",
        "--config",
        str(config_path),
        "--passphrase-file",
        str(passphrase),
    ]
    assert main([*back_in, "--technician-pin-file", str(wrong), str(backup)]) == 1
    assert "technician" in capsys.readouterr().err.lower()
    assert main([*back_in, "--technician-pin-file", str(right), str(backup)]) == 0
    log = (load_config(config_path).data_dir / "audit.log").read_text()
    assert '"queue_imported"' in log
    # A transfer that fails after the technician's PIN (here: the wrong passphrase) is
    # audited as failed, with why.
    bad_pass = tmp_path / "bad-pass"
    bad_pass.write_text("not the passphrase\n")
    os.chmod(bad_pass, 0o600)
    failing = ["queue", "import", "--config", str(config_path), "--passphrase-file", str(bad_pass)]
    assert main([*failing, "--technician-pin-file", str(right), str(backup)]) == 1
    log = (load_config(config_path).data_dir / "audit.log").read_text()
    assert '"queue_import_failed"' in log
    assert log.count('"technician_auth_ok"') >= 2


def test_a_provisioned_terminal_beyond_loopback_makes_no_shared_token(
    acquirer_host: HostHandle, tmp_path: Path
) -> None:
    # 127.0.0.2 is loopback to the kernel but not to the terminal's rule (stack.loopback_bind):
    # it stands for the shop's network, where a shared token would be anyone's.
    config_path = _provisioned(acquirer_host, tmp_path)
    _set_merchant_pin(config_path, tmp_path, "5831")
    data_dir = load_config(config_path).data_dir
    stack, token_path, created = start_provisioned_stack(
        config_path, bind="127.0.0.2", port=0, printer_url=None, pin_file=None, token_file=None
    )
    try:
        assert stack.token == ""
        assert not created
        assert not token_path.exists()
        assert not (data_dir / "register-token").exists()
        with httpx.Client(base_url=stack.api.url, timeout=30) as anonymous:
            assert anonymous.get("/api/v1/status").status_code == 401
            page = anonymous.get("/")
            assert "Bearer" not in page.text
    finally:
        stack.close()
    # Named by the technician, the shared token is made and accepted there too.
    named = tmp_path / "till-token"
    stack, token_path, created = start_provisioned_stack(
        config_path, bind="127.0.0.2", port=0, printer_url=None, pin_file=None, token_file=named
    )
    try:
        assert created
        assert token_path == named
        assert stack.token
        with httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        ) as till:
            assert till.get("/api/v1/status").status_code == 200
    finally:
        stack.close()
