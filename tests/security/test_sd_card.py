"""The stolen SD card (issue 16, item 3). A terminal provisioned with its device secret sealed
to the TPM (Debian's swtpm stands in for the chip) takes a sale; then a copy of its data dir
and configuration, with no TPM and no process, opens nothing: the keystore (so the signing key
and the card-data keys) does not open with any provider a thief could try, and its identity
block cannot be swapped either (an attacker's host key written into the card is refused by the
terminal when the card goes back in). With the TPM there, the terminal runs as before.

Before this, the device secret was a file next to the keystore: the copy opened in 0.16 s, and
the identity block (terminal id, host public key) could be rewritten without any secret.
The other halves of "opens nothing" (card data in the queue and its WAL, the merchant PIN) are
tests/security/test_wal_scan.py's and the merchant-PIN tests'.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from terminal.acquirer.client import host_key_fingerprint
from terminal.api.stack import start_provisioned_stack
from terminal.service.config import load_config
from terminal.service.provision import provision
from terminal.store.device_secret import (
    SEALED_FILE,
    DeviceSecretError,
    FileSecret,
    ForeignDeviceError,
    RpiOtpSecret,
    TpmSecret,
)
from terminal.store.keys import Keystore, KeystoreError, WrongSecretError
from tests.conftest_host import TEST_SCRYPT_N, HostHandle
from tests.conftest_tpm import StartTpm, SwTpm

# swtpm and a uvicorn host on 127.0.0.1: real components.
pytestmark = pytest.mark.integration

TECHNICIAN_PIN = "270513"


@dataclass
class Terminal:
    root: Path
    config_path: Path
    data_dir: Path
    tpm: SwTpm


def _provision(host: HostHandle, root: Path, tpm: SwTpm) -> Terminal:
    config_path = root / "etc" / "terminal.toml"
    provision(
        host_url=host.url,
        activation_code=host.activation_code(),
        config_path=config_path,
        technician_secret=TECHNICIAN_PIN,
        data_dir=root / "data",
        reader_url="sim:visa",
        secret_provider="tpm",
        tpm_tcti=tpm.tcti,
        scrypt_n=TEST_SCRYPT_N,
        host_key=host_key_fingerprint(host.host_public_key()),
        allow_plain_http=True,  # the simulated acquirer on 127.0.0.1
    )
    return Terminal(root, config_path, root / "data", tpm)


def _private_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def _set_merchant_pin(terminal: Terminal) -> None:
    """As a technician does before the first start: `pipos merchant-pin set`."""
    from terminal.cli import main

    technician = _private_file(terminal.root / "technician-pin", TECHNICIAN_PIN)
    merchant = _private_file(terminal.root / "new-merchant-pin", "5830")
    assert (
        main(
            [
                "merchant-pin",
                "set",
                "--config",
                str(terminal.config_path),
                "--technician-pin-file",
                str(technician),
                "--pin-file",
                str(merchant),
            ]
        )
        == 0
    )


def _take_a_sale(terminal: Terminal, host: HostHandle) -> None:
    _set_merchant_pin(terminal)
    stack, _token_path, _created = start_provisioned_stack(
        terminal.config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None,
        token_file=None,
    )  # fmt: skip
    try:
        api = httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        )
        created = api.post("/api/v1/sales", json={"amount": 1234, "currency": 826})
        assert created.status_code == 202, created.text
        record = stack.checkout.wait(created.json()["id"], timeout=30)
        assert record.state == "approved"
    finally:
        stack.close()
    terminal_id = load_config(terminal.config_path).terminal_id
    assert [t["kind"] for t in host.ledger(terminal_id)] == ["sale"]


def _copy(terminal: Terminal, to: Path) -> Terminal:
    """What a thief takes: every file of the data dir and the configuration, nothing else."""
    shutil.copytree(terminal.data_dir, to / "data")
    shutil.copytree(terminal.config_path.parent, to / "etc")
    return Terminal(to, to / "etc" / terminal.config_path.name, to / "data", terminal.tpm)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _candidate_secrets(root: Path) -> Iterator[tuple[str, bytes]]:
    """Everything on the card a thief could take for the device secret."""
    for path in _files(root):
        raw = path.read_bytes()
        yield f"{path.name} as it is", raw
        for line in raw.splitlines():
            if 16 <= len(line.strip()) <= 128:
                yield f"a line of {path.name}", line.strip()
        if path.name == SEALED_FILE:
            doc = json.loads(raw)
            for part in ("private", "public"):
                yield f"the sealed blob's {part} part", base64.b64decode(doc[part])


def _fake_otp(directory: Path) -> str:
    """A thief's own Raspberry Pi: an OTP key, programmed, but not the terminal's."""
    script = directory / "rpi-otp-private-key"
    script.write_text(f"#!/bin/sh\necho {os.urandom(32).hex()}\n")
    script.chmod(0o755)
    return str(script)


def _needles(keystore: Keystore, secret: bytes) -> dict[str, bytes]:
    seed = keystore._current.private_bytes(  # test-only peek: what must be on no file
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    out: dict[str, bytes] = {}
    for name, value in (("signing key", seed), ("device secret", secret)):
        out[f"{name} (raw)"] = value
        out[f"{name} (hex)"] = value.hex().encode()
        out[f"{name} (base64)"] = base64.b64encode(value)
    return out


def test_a_copied_sd_card_opens_nothing_and_the_terminal_runs_with_its_tpm(
    acquirer_host: HostHandle, swtpm_factory: StartTpm, tmp_path: Path
) -> None:
    device_tpm = swtpm_factory()
    terminal = _provision(acquirer_host, tmp_path / "device", device_tpm)
    # With its TPM, the terminal runs as before: a sale, approved by the host.
    _take_a_sale(terminal, acquirer_host)
    config = load_config(terminal.config_path)
    assert config.secret == "tpm"
    secret = config.secret_provider().load()
    keystore = Keystore.open(terminal.data_dir, secret)
    needles = _needles(keystore, secret)

    # The card is taken out and copied; the thief's machine has no TPM of this device.
    stolen = _copy(terminal, tmp_path / "stolen")
    device_tpm.stop()
    files = _files(stolen.root)
    assert {"keystore.json", SEALED_FILE, "terminal.toml"} <= {p.name for p in files}
    assert not any(p.name == "device-secret" for p in files)

    # 1. Neither the signing key nor the device secret is on the card, in any encoding.
    for path in files:
        content = path.read_bytes()
        for name, needle in needles.items():
            assert needle not in content, f"{name} found in {path.name}"

    # 2. The file provider, reading any file of the copy (or any line of one), opens nothing.
    tries = 0
    for what, candidate in _candidate_secrets(stolen.root):
        try:
            Keystore.open(stolen.data_dir, candidate)
        except KeystoreError:
            tries += 1
        else:
            pytest.fail(f"{what} opened the copied keystore")
    for path in files:
        try:
            candidate = FileSecret(path).load()
        except KeystoreError:
            continue  # not even usable as a secret file
        with pytest.raises(WrongSecretError):
            Keystore.open(stolen.data_dir, candidate)
        tries += 1
    assert tries > len(files)

    # 3. The copy's sealed blob: without the TPM it cannot be unsealed; on the thief's own TPM
    #    (another chip, another seed) the TPM refuses it.
    blob = stolen.data_dir / SEALED_FILE
    with pytest.raises(DeviceSecretError, match="cannot reach the TPM"):
        load_config(stolen.config_path).secret_provider().load()
    with pytest.raises(ForeignDeviceError, match="sealed on another device"):
        TpmSecret(blob, swtpm_factory().tcti).load()
    # ... and the thief's own Pi's OTP key derives a secret that opens nothing either.
    with pytest.raises(WrongSecretError):
        Keystore.open(stolen.data_dir, RpiOtpSecret(_fake_otp(tmp_path)).load())

    # 4. The identity block cannot be swapped: the attacker writes their host key and another
    #    terminal id into the card and puts it back; with the device's own TPM (back on, same
    #    seed) the secret unseals, and the keystore refuses to open.
    back_on = swtpm_factory(device_tpm.state_dir)
    assert TpmSecret(blob, back_on.tcti).load() == secret
    path = Keystore.path_in(stolen.data_dir)
    original = path.read_text()
    for field, value in (
        ("host_public_key", base64.b64encode(b"\x01" * 32).decode()),
        ("terminal_id", "T-ATTACKER"),
    ):
        doc = json.loads(original)
        doc["identity"][field] = value
        path.write_text(json.dumps(doc, indent=2, sort_keys=True))
        with pytest.raises(KeystoreError, match="altered"):
            Keystore.open(stolen.data_dir, secret)
    path.write_text(original)
    assert Keystore.open(stolen.data_dir, secret).terminal_id == config.terminal_id


def _swap_host_key(data_dir: Path, key: bytes) -> None:
    path = Keystore.path_in(data_dir)
    doc = json.loads(path.read_text())
    doc["identity"]["host_public_key"] = base64.b64encode(key).decode()
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def test_a_host_key_swapped_on_the_card_stops_the_terminal(
    acquirer_host: HostHandle, swtpm: SwTpm, tmp_path: Path
) -> None:
    terminal = _provision(acquirer_host, tmp_path, swtpm)
    _set_merchant_pin(terminal)
    _swap_host_key(terminal.data_dir, b"\x02" * 32)
    with pytest.raises(KeystoreError, match=r"identity block .* altered"):
        start_provisioned_stack(
            terminal.config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None,
            token_file=None,
        )  # fmt: skip
