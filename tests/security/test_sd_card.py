"""The stolen SD card (issue 16, item 3). A terminal provisioned with its device secret sealed
to the TPM (Debian's swtpm stands in for the chip) takes a sale; then a copy of its data dir
and configuration, with no TPM and no process, opens nothing: the keystore (so the signing key
and the card-data keys) does not open with any provider a thief could try, and its identity
block cannot be swapped either (an attacker's host key written into the card is refused by the
terminal when the card goes back in). With the TPM there, the terminal runs as before.

Before this, the device secret was a file next to the keystore: the copy opened in 0.16 s, and
the identity block (terminal id, host public key) could be rewritten without any secret.
The second test takes the rest of "opens nothing" on the same kind of copy: an offline payment
left unsent in the queue and the merchant PIN. No key a thief can find or derive from the files
(every 32-byte window, every rung of the terminal's key ladder) opens the payment's card data
or tests a PIN guess; the PAN is in no file; with its TPM back the terminal sends the payment.
The WAL scan with the keystore open (payments the host has) is
tests/security/test_erased_card_data.py's, whose scanner is reused here.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from offline_queue import State
from simulator.host import HostServer
from terminal.acquirer.client import host_key_fingerprint
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE
from terminal.api.stack import DemoStack, start_provisioned_stack
from terminal.domain.records import TxnRecord
from terminal.security.merchant_pin import FILE as MERCHANT_PIN_FILE
from terminal.security.merchant_pin import KEY_PURPOSE as MERCHANT_PIN_KEY_PURPOSE
from terminal.security.merchant_pin import MerchantPin, MerchantPinError
from terminal.service.config import load_config
from terminal.service.provision import provision
from terminal.store.audit import AuditLog
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
from tests.security.test_erased_card_data import Attacker, CardSecrets, _secrets, _subkey

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


def _set_merchant_pin(terminal: Terminal, pin: str = "5830") -> None:
    """As a technician does before the first start: `pipos merchant-pin set`."""
    from terminal.cli import main

    technician = _private_file(terminal.root / "technician-pin", TECHNICIAN_PIN)
    merchant = _private_file(terminal.root / "new-merchant-pin", pin)
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


# --- the queue's card data and the merchant PIN on the copy -------------------------------

#: Eight digits, so that what is looked for is the PIN stored, not four digits that a
#: timestamp or an amount in some file happens to hold.
MERCHANT_PIN = "73950186"
CURRENCY = 826
_DATA_KEY_INFO = b"pipos data key v1:"
_KEY_CHECK_INFO = b"pipos offline-queue v1: key-check"
_KEY_WRAP_INFO = b"pipos offline-queue v2: key-wrap"
_PAN_HMAC_INFO = b"pipos offline-queue v1: pan-hmac"
_PEPPER_INFO = b"pipos pin v1:pepper:merchant-pin"
_MASTER_AAD = b"pipos-master-secret:2"


@dataclass
class Queued:
    """The offline payment left unsent, as the running terminal knew it (read with its
    keystore open): what must not be found on the copy."""

    transaction_id: str
    pan: str
    secrets: CardSecrets
    queue_key: bytes


def _sale(api: httpx.Client, stack: DemoStack, amount: int) -> TxnRecord:
    created = api.post("/api/v1/sales", json={"amount": amount, "currency": CURRENCY})
    assert created.status_code == 202, created.text
    record: TxnRecord = stack.checkout.wait(created.json()["id"], timeout=60)
    return record


def _sales_online_then_offline(terminal: Terminal, host: HostHandle) -> Queued:
    """A sale the acquirer approves; then the acquirer unreachable (its server stopped:
    connection refused) and a sale the terminal approves offline, left in the queue."""
    _set_merchant_pin(terminal, MERCHANT_PIN)
    stack, _token_path, _created = start_provisioned_stack(
        terminal.config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None,
        token_file=None,
    )  # fmt: skip
    try:
        api = httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=60
        )
        assert _sale(api, stack, 1234).state == "approved"
        assert host.server is not None
        host.server.stop()
        offline = _sale(api, stack, 800)
        assert offline.state == "approved_offline", (offline.state, offline.reason)
        queue = stack.runtime.queue
        payment = queue.get(offline.id)
        assert payment is not None
        assert payment.state == State.PENDING
        (doc,) = queue.export_documents()
        queue_key = stack.runtime.keystore.data_key(QUEUE_KEY_PURPOSE)
    finally:
        stack.close()
    found = _secrets(offline.id, doc["payment"], _subkey(queue_key, _PAN_HMAC_INFO))
    pan = str(doc["payment"]["card"]["pan"])
    bcd = (pan + ("F" if len(pan) % 2 else "")).encode()
    for what, needle in (
        ("PAN (hex of its ASCII)", pan.encode().hex().encode()),
        ("PAN (hex of its ASCII, upper case)", pan.encode().hex().upper().encode()),
        ("PAN (BCD as hex text)", bcd),
        ("PAN (BCD as hex text, lower case)", bcd.lower()),
        ("PAN (base64)", base64.b64encode(pan.encode())),
    ):
        found.needles[what] = needle
    return Queued(offline.id, pan, found, queue_key)


def _hkdf(key: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869: no salt, 32 bytes out), how the terminal derives each key from
    the one above it, as two HMACs: fast enough to run from every window of the card. The
    positive control shows it gives the terminal's own keys."""
    prk = hmac.digest(b"\0" * 32, key, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")


def _gcm(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        return None


@dataclass
class Targets:
    """What a thief reads off the copy with sqlite3 and a text editor: the ciphertexts a key
    would have to open, and the merchant PIN's hash a guess would have to match."""

    master: tuple[bytes, bytes]  # the keystore's master secret: nonce, AES-GCM ciphertext
    signing: tuple[bytes, bytes, bytes]  # the signing key: nonce, ciphertext, associated data
    key_check: str  # the queue's key fingerprint (its meta table)
    payments: list[tuple[str, bytes, bytes]]  # transaction id, sealed card data, wrapped key
    #: Each payment's keyed PAN lookup hash, and its right PAN: the thief's best case, a guess
    #: made right (the masked PAN beside it leaves some 10^6 to try, with the key).
    pan_hashes: list[tuple[str, str, bytes]]
    pin_hash: bytes
    #: scrypt of the right PIN under the file's salt: a guess made right, too.
    pin_guess: bytes


def _targets(copy: Terminal, scratch: Path, pan: str) -> Targets:
    doc = json.loads(Keystore.path_in(copy.data_dir).read_text())

    def entry(e: dict[str, str]) -> tuple[bytes, bytes]:
        return base64.b64decode(e["nonce"]), base64.b64decode(e["ciphertext"])

    current = doc["current"]
    signing_aad = b"pipos-signing-key:" + str(current["key_id"]).encode()
    # The queue read from a copy of the copy: sqlite3 replays the WAL into the file it opens.
    scratch.mkdir()
    for path in copy.data_dir.glob("offline_queue.sqlite3*"):
        shutil.copy2(path, scratch / path.name)
    db = sqlite3.connect(scratch / "offline_queue.sqlite3")
    try:
        (key_check,) = db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        payments = db.execute(
            "SELECT p.transaction_id, p.payload, k.wrapped_key FROM payments p "
            "JOIN card_data_keys k USING (transaction_id)"
        ).fetchall()
        pan_hashes = db.execute("SELECT transaction_id, pan_hash FROM payments").fetchall()
    finally:
        db.close()
    pin = json.loads((copy.data_dir / MERCHANT_PIN_FILE).read_text())
    kdf = pin["kdf"]
    guess = Scrypt(
        salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]
    ).derive(MERCHANT_PIN.encode())
    return Targets(
        entry(doc["master"]),
        (*entry(current), signing_aad),
        str(key_check),
        [(str(t), bytes(p), bytes(k)) for t, p, k in payments],
        [(str(t), str(h), pan.encode()) for t, h in pan_hashes],
        base64.b64decode(pin["hash"]),
        guess,
    )


class Ladder:
    """The terminal's key ladder, climbed from any candidate: the candidate taken for each
    rung (the scrypt key that opens the keystore, the keystore's master secret, the queue key,
    its key-wrapping key, a payment's data key, the merchant PIN's device key and its pepper)
    and every key the terminal derives from that rung down."""

    def __init__(self, targets: Targets) -> None:
        self.t = targets

    def opened(self, c: bytes) -> list[str]:
        """What `c` opens, or tests (a PIN guess); empty: nothing."""
        t, out = self.t, []
        aes = len(c) == 32  # every key of the terminal is an AES-256 key
        if aes and _gcm(c, *t.master, _MASTER_AAD) is not None:
            out.append("the keystore's master secret")
        if aes and _gcm(c, *t.signing) is not None:
            out.append("the signing key")
        queue_keys = [_hkdf(c, _DATA_KEY_INFO + QUEUE_KEY_PURPOSE.encode())] + ([c] if aes else [])
        wrapping = [c] if aes else []
        for key in queue_keys:
            if _hkdf(key, _KEY_CHECK_INFO)[:8].hex() == t.key_check:
                out.append("the queue key")
            wrapping.append(_hkdf(key, _KEY_WRAP_INFO))
        for key in queue_keys:
            mac = _hkdf(key, _PAN_HMAC_INFO)
            for txid, lookup, guess in t.pan_hashes:
                if hmac.compare_digest(hmac.new(mac, guess, "sha256").hexdigest(), lookup):
                    out.append(f"a PAN guess (the lookup hash of {txid})")
        data_keys = [c] if aes else []
        for key in wrapping:
            for txid, _payload, wrapped in t.payments:
                unwrapped = _gcm(key, wrapped[1:13], wrapped[13:], b"\x02key" + txid.encode())
                if unwrapped is not None:
                    out.append(f"the data key of {txid}")
                    data_keys.append(unwrapped)
        for key in data_keys:
            for txid, payload, _wrapped in t.payments:
                opened = _gcm(key, payload[1:13], payload[13:], b"\x02card" + txid.encode())
                if opened is not None:
                    out.append(f"the card data of {txid}")
        device_keys = [_hkdf(c, _DATA_KEY_INFO + MERCHANT_PIN_KEY_PURPOSE.encode()), c]
        for pepper in [*(_hkdf(k, _PEPPER_INFO) for k in device_keys), c]:
            if hmac.compare_digest(hmac.digest(pepper, t.pin_guess, "sha256"), t.pin_hash):
                out.append("a merchant PIN guess")
        return out


_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")


def _decoded(raw: bytes) -> Iterator[bytes]:
    """Every run of base64 (and so of hex) text in `raw`, decoded: where the keystore, the
    sealed blob and the PIN file keep their bytes."""
    for match in _BASE64_RUN.finditer(raw):
        run = match.group().rstrip(b"=")
        if len(run) % 4 == 1:
            run = run[:-1]
        yield base64.b64decode(run + b"=" * (-len(run) % 4))
        if re.fullmatch(rb"(?:[0-9a-fA-F]{2})+", run):
            yield bytes.fromhex(run.decode())


def _windows(root: Path) -> set[bytes]:
    """Every 32-byte window of every file of the copy, and of every text run in one decoded."""
    out: set[bytes] = set()
    for path in _files(root):
        raw = path.read_bytes()
        for blob in (raw, *_decoded(raw)):
            out.update(blob[j : j + 32] for j in range(len(blob) - 31))
    return out


def _thief_secrets(copy: Terminal, otp: str) -> Iterator[tuple[str, bytes]]:
    """Every secret a thief could try that is not a key-sized window: the files, their lines
    and decoded texts, each file through the file provider, the thief's own Pi's OTP key."""
    yield from _candidate_secrets(copy.root)
    for path in _files(copy.root):
        for n, blob in enumerate(_decoded(path.read_bytes())):
            yield f"decoded text {n} of {path.name}", blob
        try:
            yield f"{path.name} through the file provider", FileSecret(path).load()
        except KeystoreError:
            continue  # not even usable as a secret file
    yield "the thief's own Pi's OTP key", RpiOtpSecret(otp).load()


def _pin_needles(pin: str) -> dict[str, bytes]:
    return {
        "merchant PIN (ASCII)": pin.encode(),
        "merchant PIN (UTF-16)": pin.encode("utf-16-le"),
        "merchant PIN (hex of its ASCII)": pin.encode().hex().encode(),
        "merchant PIN (BCD)": bytes.fromhex(pin),
        "merchant PIN (base64)": base64.b64encode(pin.encode()),
    }


def test_a_copied_sd_card_gives_no_card_data_and_no_merchant_pin(
    acquirer_host: HostHandle, swtpm_factory: StartTpm, tmp_path: Path
) -> None:
    device_tpm = swtpm_factory()
    terminal = _provision(acquirer_host, tmp_path / "device", device_tpm)
    queued = _sales_online_then_offline(terminal, acquirer_host)
    txid = queued.transaction_id
    # The device's own keys, for the positive controls: taken while its TPM is there.
    secret = load_config(terminal.config_path).secret_provider().load()
    master = Keystore.open(terminal.data_dir, secret)._master  # test-only peek
    kdf = json.loads(Keystore.path_in(terminal.data_dir).read_text())["kdf"]
    kek = Scrypt(
        salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]
    ).derive(secret)

    # The card is copied; the thief's machine has no TPM of this device.
    stolen = _copy(terminal, tmp_path / "stolen")
    device_tpm.stop()
    targets = _targets(stolen, tmp_path / "bench", queued.pan)
    assert [p[0] for p in targets.payments] == [txid]  # the payment is there, sealed
    ladder = Ladder(targets)
    everything = [
        "the queue key",
        f"a PAN guess (the lookup hash of {txid})",
        f"the data key of {txid}",
        f"the card data of {txid}",
        "a merchant PIN guess",
    ]
    # Positive control: the ladder is the terminal's. From the device's scrypt key it opens
    # the keystore; from the master secret inside, the queued card data and the PIN's hash.
    assert _hkdf(master, _DATA_KEY_INFO + QUEUE_KEY_PURPOSE.encode()) == queued.queue_key
    assert ladder.opened(kek) == ["the keystore's master secret", "the signing key"]
    assert ladder.opened(master) == everything
    assert ladder.opened(queued.queue_key) == everything[:4]

    # (a) No key on the copy opens the queued payment's card data: every 32-byte window of
    #     every file (and of every base64 or hex text in one, decoded) taken for every rung...
    windows = _windows(stolen.root)
    assert len(windows) > 10_000
    opened = {w.hex(): hits for w in windows if (hits := ladder.opened(w))}
    assert not opened, opened
    # ... every other secret a thief could try, as the device secret (scrypt, then the
    # keystore) and for every rung (the sealed blob on the thief's own TPM: at the end)...
    candidates = list(_thief_secrets(stolen, _fake_otp(tmp_path)))
    for what, candidate in candidates:
        with pytest.raises(KeystoreError):
            Keystore.open(stolen.data_dir, candidate)
        assert not ladder.opened(candidate), what
    # The same through the WAL scan of tests/security/test_erased_card_data.py (every place a
    # record could start in every file, the WAL's old frames and free pages included): with
    # the queue key (positive control) it finds the payment; with every queue key the
    # thief's secrets give, and every random-looking window as a data key, nothing.
    found = Attacker(stolen.root, queued.queue_key, {txid}).scan([])
    assert set(found.decrypted) == {txid}, found.decrypted
    thief = Attacker(stolen.root, queued.queue_key, {txid})
    thief.queue_keys = [
        key
        for _what, c in candidates
        for queue_key in (_hkdf(c, _DATA_KEY_INFO + QUEUE_KEY_PURPOSE.encode()), c)
        if len(queue_key) == 32
        for key in (queue_key, _hkdf(queue_key, b"pipos offline-queue v1: aes-gcm"),
                    _hkdf(queue_key, _KEY_WRAP_INFO))
    ]  # fmt: skip
    assert queued.queue_key not in thief.queue_keys
    # (b) ... and the PAN is in no file of the copy in clear: ASCII, BCD, hex, base64, tags 57
    #     and 5A. (Its keyed lookup hash is stored while the payment is unsent: no key from
    #     the copy tests a guess against it, shown above.)
    del queued.secrets.needles["PAN lookup hash"]
    scan = thief.scan([queued.secrets])
    assert not scan.decrypted, scan.decrypted
    assert not scan.found, scan.found
    assert {"data/offline_queue.sqlite3", "data/keystore.json", "etc/terminal.toml"} <= set(
        scan.files
    )

    # (c) The merchant PIN: its digits are in no file, and no key from the copy tests a guess
    #     (shown in (a), the right PIN's scrypt taken as the guess). The credential itself will
    #     not even run on the copy: its key comes from the keystore, which needs the TPM.
    for path in _files(stolen.root):
        for what, needle in _pin_needles(MERCHANT_PIN).items():
            assert needle not in path.read_bytes(), f"{what} in {path.name}"
    bench = tmp_path / "pin-bench"
    shutil.copytree(stolen.data_dir, bench)
    provider = load_config(stolen.config_path).secret_provider()

    def pin(device_key: Callable[[], bytes] | bytes) -> MerchantPin:
        return MerchantPin(bench / MERCHANT_PIN_FILE, AuditLog(bench / "audit.log"),
                           device_key=device_key)  # fmt: skip

    with pytest.raises(DeviceSecretError, match="cannot reach the TPM"):
        pin(
            lambda: Keystore.open(bench, provider.load()).data_key(MERCHANT_PIN_KEY_PURPOSE)
        ).verify(MERCHANT_PIN, scope="thief")
    guessed = dict(candidates)[f"{SEALED_FILE} as it is"]
    with pytest.raises(WrongSecretError):
        pin(lambda: Keystore.open(bench, guessed).data_key(MERCHANT_PIN_KEY_PURPOSE)).verify(
            MERCHANT_PIN, scope="thief"
        )
    # A key made up (here a window of the card) in its place: even the right PIN is refused
    # (the lock-out record does not authenticate under it; nor would the hash, shown above).
    with pytest.raises(MerchantPinError):
        pin(max(windows)).verify(MERCHANT_PIN, scope="thief")
    # Nor does the terminal start from the copy's configuration.
    with pytest.raises(DeviceSecretError, match="cannot reach the TPM"):
        start_provisioned_stack(
            stolen.config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None,
            token_file=None,
        )  # fmt: skip
    # (a, the end) The sealed blob, unsealed by the thief's own TPM: refused.
    with pytest.raises(ForeignDeviceError, match="sealed on another device"):
        TpmSecret(stolen.data_dir / SEALED_FILE, swtpm_factory().tcti).load()

    # (d) The device's own TPM back on (its state) and the acquirer back (its ledger): the
    #     terminal starts and the payment goes. Both come back on other loopback ports (a
    #     test's: a device has /dev/tpmrm0 and one acquirer URL), written into its config.
    back_on = swtpm_factory(device_tpm.state_dir)
    server = HostServer(acquirer_host.db_path)
    text = terminal.config_path.read_text()
    text = text.replace(device_tpm.tcti, back_on.tcti).replace(acquirer_host.url, server.start())
    terminal.config_path.write_text(text)
    try:
        stack, _token_path, _created = start_provisioned_stack(
            terminal.config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None,
            token_file=None,
        )  # fmt: skip
        try:
            stack.checkout.sync_offline()
            assert stack.checkout.queue_summary().count == 0
            payment = stack.runtime.queue.get(txid)
            assert payment is not None
            assert payment.state == State.ACCEPTED
        finally:
            stack.close()
        terminal_id = load_config(terminal.config_path).terminal_id
        handle = HostHandle(server)
        ledger = handle.ledger(terminal_id)
        handle.close()
        assert sorted(str(t["kind"]) for t in ledger) == ["offline_sale", "sale"]
        assert {t["offline_id"] for t in ledger} >= {txid}
    finally:
        server.stop()
