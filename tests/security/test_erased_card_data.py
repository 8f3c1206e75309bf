"""Erased means unrecoverable (issue 16, items 3 and 4): the WAL scan.

The attack: the SD card of a terminal that took offline payments, read with everything the
terminal itself has (the keystore open, so every key it can give). Before issue 16, 10 of 10
offline card records decrypted from the files alone, payments the host had accepted among
them: their sealed copies were still in the queue's ``-wal`` file (and in free space of the
database file).

The test takes offline payments through the real checkout (a virtual card on the simulated
field, the acquirer unreachable), syncs them to the simulated host, and then scans every file
of the data directory (database, ``-wal``, ``-shm``, journal, keystore, audit log, a backup)
the way an attacker would, concretely:

* every place a sealed record of the old format (``01 | nonce | AES-GCM``) or the new one
  (``02 | nonce | AES-GCM``) could start is decrypted under every candidate key: the queue key
  the keystore gives and its sub-keys, every data key unwrapped from any candidate wrapped key
  (with and without its associated data), and every 32-byte window of the files that looks
  random enough to be an unwrapped key. GCM is CTR mode underneath, so a candidate is
  recognised by its first plaintext block (a JSON record) without knowing its length, and
  then named by the transaction id inside it;
* the PAN in ASCII and BCD, tag 57 (track 2 equivalent) and tag 5A, as bytes and as hex
  text, and the PAN's keyed lookup hash (with the key, a guess oracle for the PAN).

Nothing of an accepted (or declined) payment may be found; the payments still unsent must
decrypt (the positive control: the scanner finds what is there) and sync after a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from offline_queue import State, export_queue, read_backup
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE
from terminal.app.runtime import TerminalRuntime, start_terminal
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle

PASSPHRASE = b"technician backup passphrase"
FINISHED_STATES = (State.ACCEPTED, State.DECLINED)


class Network(httpx.BaseTransport):
    """The terminal's way to the in-process host, which can be cut: a connect error, what
    httpx raises for a host that cannot be reached (the checkout then approves offline)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.online = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.online:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        """The in-process host's transport is shared: left open."""


def _start(directory: Path, host: HostHandle, network: Network) -> TerminalRuntime:
    return start_terminal(
        directory,
        secret=TEST_SECRET,
        host_url=host.url,
        activation_code=host.activation_code,
        scrypt_n=TEST_SCRYPT_N,
        client_options={
            "transport": network,
            "sleep": lambda _s: None,
            "read_timeout": 10.0,
            "max_reversal_attempts": 3,
        },
    )


def _offline_sale(rt: TerminalRuntime, amount: int, card: str) -> str:
    record = rt.checkout.start_sale(amount)
    assert rt.field is not None
    rt.field.present(f"sim:{card}")
    done = rt.checkout.wait(record.id, timeout=30)
    assert done.state == "approved_offline", (card, done.state, done.reason)
    return done.id


# --- what the attacker looks for ---------------------------------------------------------


def _subkey(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


@dataclass
class CardSecrets:
    """What must not be found of one payment: its card data in every form it has."""

    transaction_id: str
    needles: dict[str, bytes] = field(default_factory=dict)


def _secrets(txid: str, doc: Mapping[str, Any], mac_key: bytes) -> CardSecrets:
    pan = str(doc["card"]["pan"])
    emv = {str(k).upper(): str(v) for k, v in doc["emv"].items()}
    found = CardSecrets(txid)
    bcd = pan + ("F" if len(pan) % 2 else "")
    found.needles["PAN (ASCII)"] = pan.encode()
    found.needles["PAN (BCD)"] = bytes.fromhex(bcd)
    lookup = hmac.new(mac_key, pan.encode(), hashlib.sha256).hexdigest()
    found.needles["PAN lookup hash"] = lookup.encode()
    for tag in ("57", "5A"):
        if tag in emv:
            found.needles[f"tag {tag} (hex text)"] = emv[tag].upper().encode()
            found.needles[f"tag {tag} (hex text, lower case)"] = emv[tag].lower().encode()
            found.needles[f"tag {tag} (bytes)"] = bytes.fromhex(emv[tag])
    return found


@dataclass
class Scan:
    decrypted: dict[str, set[str]] = field(default_factory=dict)  # txid -> where
    found: list[str] = field(default_factory=list)  # "what of txid in file"
    files: list[str] = field(default_factory=list)
    keys_tried: int = 0


_BLOCK = 16
_NONCE = 12
#: The first plaintext block of a sealed record: canonical JSON, `{"` and printable ASCII.
_JSON_START = re.compile(rb'\{"[ -~]{14}')
_TXID_IN_RECORD = re.compile(rb'"transaction_id":"([A-Za-z0-9._:~-]{1,128})"')


def _random_looking(window: bytes, distinct: int) -> bool:
    return len(set(window)) >= distinct


def _ctr_stream(key: bytes, nonces: list[bytes], first_counter: int, blocks: int) -> bytes:
    """The AES-GCM key stream (GCM's CTR mode, SP 800-38D §7.1: J0 = nonce || 1, the
    plaintext starts at counter 2) for each nonce, `blocks` blocks each."""
    counters = b"".join(
        nonce + (first_counter + i).to_bytes(4, "big") for nonce in nonces for i in range(blocks)
    )
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(counters) + encryptor.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class Attacker:
    """Everything on the SD card, read with every key the open keystore gives."""

    def __init__(self, directory: Path, queue_key: bytes, txids: set[str]) -> None:
        self.directory = directory
        self.txids = txids
        self.queue_keys = [
            queue_key,
            _subkey(queue_key, b"pipos offline-queue v1: aes-gcm"),
            _subkey(queue_key, b"pipos offline-queue v2: key-wrap"),
        ]

    def files(self) -> Iterator[tuple[str, bytes]]:
        for path in sorted(self.directory.rglob("*")):
            if path.is_file():
                yield str(path.relative_to(self.directory)), path.read_bytes()

    def scan(self, secrets: list[CardSecrets], backup: Path | None = None) -> Scan:
        scan = Scan()
        blobs: list[tuple[str, bytes]] = list(self.files())
        if backup is not None:
            # The backup opened with the technician's passphrase: its decrypted items too.
            blobs.append(
                (f"{backup.name} (decrypted)", repr(read_backup(backup, PASSPHRASE)).encode())
            )
        scan.files = [name for name, _ in blobs]
        for name, data in blobs:
            for s in secrets:
                for what, needle in s.needles.items():
                    if needle in data:
                        scan.found.append(f"{what} of {s.transaction_id} in {name}")
        # Every 32-byte window random enough to be a data key stored unwrapped.
        windows = {
            data[j : j + 32]
            for _, data in blobs
            for j in range(len(data) - 31)
            if _random_looking(data[j : j + 32], 20)
        }
        for name, data in blobs:
            self._decrypt_file(name, data, windows, scan)
        return scan

    def _decrypt_file(self, name: str, data: bytes, windows: set[bytes], scan: Scan) -> None:
        # Every offset a sealed record or a wrapped key of either format could start at.
        starts = [
            i
            for i in range(len(data) - (1 + _NONCE + _BLOCK))
            if data[i] in (1, 2) and _random_looking(data[i + 1 : i + 1 + _NONCE + _BLOCK], 18)
        ]
        if not starts:
            return
        nonces = [data[i + 1 : i + 1 + _NONCE] for i in starts]
        firsts = b"".join(data[i + 1 + _NONCE : i + 1 + _NONCE + _BLOCK] for i in starts)
        keys: list[bytes] = list(self.queue_keys)
        # Data keys unwrapped from every candidate wrapped key, under every queue key: with
        # the associated data the new format binds them with (each payment id), and without
        # it (GCM's CTR stream alone gives the key, authenticated or not).
        for kek in self.queue_keys:
            stream = _ctr_stream(kek, nonces, 2, 2)
            for n, i in enumerate(starts):
                body = data[i + 1 + _NONCE : i + 1 + _NONCE + 32]
                if len(body) == 32:
                    keys.append(_xor(body, stream[n * 32 : n * 32 + 32]))
                wrapped = data[i + 1 + _NONCE : i + 1 + _NONCE + 48]
                if data[i] == 2 and len(wrapped) == 48:
                    for txid in self.txids:
                        try:
                            key = AESGCM(kek).decrypt(
                                data[i + 1 : i + 1 + _NONCE], wrapped, b"\x02key" + txid.encode()
                            )
                        except Exception:
                            continue
                        keys.append(key)
        keys.extend(windows)
        seen: set[bytes] = set()
        for key in keys:
            if key in seen:
                continue
            seen.add(key)
            scan.keys_tried += 1
            plain = _xor(firsts, _ctr_stream(key, nonces, 2, 1))
            at = plain.find(b'{"')
            while at >= 0:
                if at % _BLOCK == 0 and _JSON_START.match(plain, at):
                    self._name_record(name, data, starts[at // _BLOCK], key, scan)
                at = plain.find(b'{"', at + 1)

    @staticmethod
    def _name_record(name: str, data: bytes, start: int, key: bytes, scan: Scan) -> None:
        """A record's first block decrypted: the rest of it says whose it is."""
        body = data[start + 1 + _NONCE : start + 1 + _NONCE + 8192]
        blocks = (len(body) + _BLOCK - 1) // _BLOCK
        stream = _ctr_stream(key, [data[start + 1 : start + 1 + _NONCE]], 2, blocks)
        plain = _xor(body, stream[: len(body)])
        match = _TXID_IN_RECORD.search(plain)
        txid = match.group(1).decode() if match else "?"
        scan.decrypted.setdefault(txid, set()).add(name)


# --- the test ----------------------------------------------------------------------------


def test_nothing_on_the_sd_card_decrypts_a_payment_the_host_has(
    tmp_path: Path, inprocess_host: HostHandle
) -> None:
    network = Network(inprocess_host.transport)  # type: ignore[arg-type]
    data = tmp_path / "terminal"
    rt = _start(data, inprocess_host, network)
    try:
        network.online = False
        first = [
            _offline_sale(rt, 800, "visa"),
            _offline_sale(rt, 1200, "mastercard"),
            _offline_sale(rt, 1051, "visa"),  # the simulated issuer declines xx51 (no funds)
            _offline_sale(rt, 950, "mastercard"),
        ]
        docs = {d["row"]["transaction_id"]: d["payment"] for d in rt.queue.export_documents()}
        assert set(docs) == set(first)
        queue_key = rt.keystore.data_key(QUEUE_KEY_PURPOSE)
        mac_key = _subkey(queue_key, b"pipos offline-queue v1: pan-hmac")
        attacker = Attacker(data, queue_key, set(first))

        # Positive control: unsent, every payment decrypts from the files (the scanner works).
        before = attacker.scan([])
        assert set(first) <= set(before.decrypted), before.decrypted

        network.online = True
        rt.checkout.sync_offline()
        states = {txid: rt.queue.get(txid).state for txid in first}  # type: ignore[union-attr]
        assert set(states.values()) <= set(FINISHED_STATES), states
        assert State.ACCEPTED in states.values()

        # Two more, with other cards, left unsent; the terminal keeps running.
        network.online = False
        later = [_offline_sale(rt, 700, "visa_debit"), _offline_sale(rt, 600, "mastercard_phone")]
        for d in rt.queue.export_documents():
            if d["row"]["transaction_id"] in later:
                docs[d["row"]["transaction_id"]] = d["payment"]
        attacker.txids |= set(later)
        finished = [_secrets(t, docs[t], mac_key) for t in first]

        # While it runs (the WAL in use), with every key the keystore gives.
        running = attacker.scan(finished)
        assert not set(first) & set(running.decrypted), running.decrypted
        assert not running.found, running.found
        assert set(later) <= set(running.decrypted), running.decrypted
        assert not rt.queue.erasure_pending
    finally:
        rt.close()

    # After a restart the unsent payments still open, and go.
    network.online = True
    rt = _start(data, inprocess_host, network)
    try:
        rt.checkout.sync_offline()
        for txid in later:
            assert rt.queue.get(txid).state in FINISHED_STATES  # type: ignore[union-attr]
        ledger = {r["offline_id"] for r in inprocess_host.ledger() if r["offline_id"]}
        assert set(first) | set(later) <= ledger
        backup = data / "queue.backup"
        export_queue(rt.queue, backup, PASSPHRASE, scrypt_n=2**10)
        everything = finished + [_secrets(t, docs[t], mac_key) for t in later]
        done = attacker.scan(everything, backup)
        assert not done.found, done.found
        assert not done.decrypted, done.decrypted
        assert {"offline_queue.sqlite3", "journal.sqlite3", "queue.backup"} <= set(done.files)
        assert done.keys_tried > 3
    finally:
        rt.close()
    closed = attacker.scan(everything)
    assert not closed.found, closed.found
    assert not closed.decrypted, closed.decrypted
