"""The device-secret providers: a file (development), the Raspberry Pi's OTP key (through a fake
of `rpi-otp-private-key` on PATH) and the TPM 2.0 (Debian's swtpm, started per test)."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from terminal.store.device_secret import (
    SEALED_FILE,
    DeviceSecretError,
    FileSecret,
    ForeignDeviceError,
    RpiOtpSecret,
    TpmSecret,
    make_provider,
)
from terminal.store.keys import Keystore, KeystoreError, WrongSecretError
from tests.conftest_tpm import SwTpm

N = 2**10
OTP_KEY = "9f" * 16 + "0123456789abcdef" * 2


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


# --- file ----------------------------------------------------------------------------------


def test_file_secret_is_created_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    provider = FileSecret(tmp_path / "etc" / "device-secret")
    assert not provider.exists()
    secret = provider.ensure(os.urandom)
    assert _mode(provider.path) == 0o600
    assert provider.load() == secret
    assert provider.ensure(os.urandom) == secret  # the second time reads, never replaces
    assert provider.development_only
    with pytest.raises(DeviceSecretError, match="refusing to replace"):
        provider.create(os.urandom)
    provider.discard()
    assert not provider.exists()


# --- Raspberry Pi OTP, through a fake of its command ---------------------------------------


@pytest.fixture
def fake_otp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Put a fake `rpi-otp-private-key` first on PATH; the argument is its shell body."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def install(body: str) -> None:
        script = bin_dir / "rpi-otp-private-key"
        script.write_text("#!/bin/sh\n" + body + "\n")
        script.chmod(0o755)

    return install


def test_otp_secret_is_derived_from_the_key_never_the_key(fake_otp: Callable[[str], None]) -> None:
    fake_otp(f"echo {OTP_KEY}")
    provider = RpiOtpSecret()
    secret = provider.load()
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"pipos device secret v1: rpi-otp"
    ).derive(bytes.fromhex(OTP_KEY))
    assert secret == expected
    assert secret != bytes.fromhex(OTP_KEY)
    assert provider.load() == secret  # stable: the same Pi gives the same secret
    assert provider.create(os.urandom) == secret  # nothing to store
    fake_otp(f"echo {'ab' * 32}")  # another Pi
    assert provider.load() != secret


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"echo {'0' * 64}", "not programmed"),
        ("echo 'vcmailbox: failed to open /dev/vcio' >&2; exit 1", "exit status 1.*/dev/vcio"),
        ("echo 'this is no key SECRETGARBAGE'", "not a 256-bit key in hex"),
        ("echo 0123", "not a 256-bit key in hex"),
        ("exec sleep 5", "no answer within"),
    ],
    ids=["zeros", "fails", "garbage", "short", "hangs"],
)
def test_otp_refuses_what_is_not_a_programmed_key(
    fake_otp: Callable[[str], None], body: str, message: str
) -> None:
    fake_otp(body)
    with pytest.raises(DeviceSecretError, match=message) as caught:
        RpiOtpSecret(timeout=0.5).load()
    assert "SECRETGARBAGE" not in str(caught.value)  # what it printed is never echoed


def test_otp_command_missing(tmp_path: Path) -> None:
    with pytest.raises(DeviceSecretError, match="command not found"):
        RpiOtpSecret(str(tmp_path / "no-such-command")).load()


def test_otp_key_opens_a_keystore(fake_otp: Callable[[str], None], tmp_path: Path) -> None:
    fake_otp(f"echo {OTP_KEY}")
    Keystore.create(tmp_path, RpiOtpSecret().load(), scrypt_n=N)
    assert Keystore.open(tmp_path, RpiOtpSecret().load()).key_id
    fake_otp(f"echo {'ab' * 32}")  # the card in another Pi
    with pytest.raises(WrongSecretError):
        Keystore.open(tmp_path, RpiOtpSecret().load())


# --- TPM 2.0 on swtpm ----------------------------------------------------------------------


def test_tpm_seals_and_unseals_on_the_same_tpm(swtpm: SwTpm, tmp_path: Path, umask: int) -> None:
    provider = TpmSecret(tmp_path / SEALED_FILE, swtpm.tcti)
    assert not provider.exists()
    secret = provider.create(os.urandom)
    assert len(secret) == 32
    assert _mode(provider.blob_path) == 0o600
    assert secret not in provider.blob_path.read_bytes()
    assert secret.hex().encode() not in provider.blob_path.read_bytes()
    assert provider.load() == secret
    assert TpmSecret(tmp_path / SEALED_FILE, swtpm.tcti).ensure(os.urandom) == secret
    assert "answers through" in provider.probe()
    with pytest.raises(DeviceSecretError, match="refusing to replace"):
        provider.create(os.urandom)
    assert not provider.development_only


def test_tpm_blob_does_not_unseal_on_another_tpm(
    swtpm_factory: Callable[[], SwTpm], tmp_path: Path
) -> None:
    mine, another = swtpm_factory(), swtpm_factory()
    blob = tmp_path / SEALED_FILE
    TpmSecret(blob, mine.tcti).create(os.urandom)
    with pytest.raises(ForeignDeviceError, match="sealed on another device"):
        TpmSecret(blob, another.tcti).load()


def test_tpm_unreachable_and_malformed_blobs(swtpm: SwTpm, tmp_path: Path) -> None:
    blob = tmp_path / SEALED_FILE
    provider = TpmSecret(blob, swtpm.tcti)
    with pytest.raises(DeviceSecretError, match="not found; provision"):
        provider.load()
    provider.create(os.urandom)
    with pytest.raises(DeviceSecretError, match="cannot reach the TPM"):
        TpmSecret(blob, "swtpm:host=127.0.0.1,port=1").load()
    with pytest.raises(DeviceSecretError, match="cannot reach the TPM"):
        TpmSecret(blob, "device:/nonexistent/tpmrm0").probe()
    doc = json.loads(blob.read_text())
    for broken in (
        b"not json",
        json.dumps({**doc, "format": "other"}).encode(),
        json.dumps({**doc, "private": "!!"}).encode(),
        json.dumps({**doc, "private": "AAA="}).encode(),
    ):
        blob.write_bytes(broken)
        with pytest.raises(DeviceSecretError):
            provider.load()
    # A blob altered by one bit is refused by the TPM's integrity check.
    private = bytearray(base64.b64decode(doc["private"]))
    private[-1] ^= 1
    altered = {**doc, "private": base64.b64encode(bytes(private)).decode()}
    blob.write_text(json.dumps(altered))
    with pytest.raises(ForeignDeviceError):
        provider.load()


def test_tpm_secret_opens_the_keystore(swtpm: SwTpm, tmp_path: Path) -> None:
    provider = TpmSecret(tmp_path / SEALED_FILE, swtpm.tcti)
    ks = Keystore.create(tmp_path, provider.create(os.urandom), scrypt_n=N)
    assert Keystore.open(tmp_path, provider.load()).key_id == ks.key_id
    # The blob is no secret: whatever it is read as, it does not open the keystore.
    with pytest.raises(KeystoreError):
        Keystore.open(tmp_path, provider.blob_path.read_bytes())


def test_make_provider(tmp_path: Path) -> None:
    assert isinstance(make_provider("tpm", data_dir=tmp_path), TpmSecret)
    assert (
        make_provider("tpm", data_dir=tmp_path)
        .describe()
        .startswith("TPM 2.0 through device:/dev/tpmrm0")
    )
    assert isinstance(make_provider("rpi-otp", data_dir=tmp_path), RpiOtpSecret)
    file = make_provider("file", data_dir=tmp_path)
    assert isinstance(file, FileSecret)
    assert file.path == tmp_path / "device-secret"
    with pytest.raises(DeviceSecretError, match="unknown device-secret provider"):
        make_provider("hsm", data_dir=tmp_path)


def test_tpm_without_tpm2_pytss_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tpm2_pytss", None)  # as if the extra were not installed
    with pytest.raises(DeviceSecretError, match=r"pipos\[tpm\]"):
        TpmSecret(tmp_path / SEALED_FILE).create(os.urandom)
