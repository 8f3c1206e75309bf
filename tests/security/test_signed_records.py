"""The terminal's signature on offline payments, sent and checked (issue 16, item 7).

Every payment approved offline is queued with the terminal's Ed25519 signature over its
canonical record (terminal.checkout.core). The uplink used to drop both, so "every record is
signed by the terminal key" was hollow for offline payments, and `pipos queue import` queued a
forged, unsigned payment. Now the upload carries them and the host books only an item whose
record verifies with a key it enrolled for a terminal of the merchant and says what the item
says; the import takes only payments signed (by this unit, or by the unit that exported
them), all or nothing."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from offline_queue import CardData, Forwarder, OfflinePayment, OfflineQueue, State, export_queue
from offline_queue.backup import BackupSigner
from terminal.acquirer.client import OfflineItem
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink
from terminal.cli import main
from terminal.service.transfer import keystore_signers
from terminal.store.keys import Keystore, SequenceCounter
from tests.conftest_host import (
    TEST_SCRYPT_N,
    TEST_SECRET,
    AcquirerTerminal,
    HostHandle,
    TerminalKeys,
    enrolled_terminal,
    signed_item,
    signed_payment,
)

PASSPHRASE = b"technician passphrase"
VISA = "4761739001010010"


def _payment(i: int, amount: int = 1200) -> OfflinePayment:
    return OfflinePayment(
        transaction_id=f"S260101-{i:012x}",
        amount=amount,
        currency=826,
        card=CardData(pan=f"4761739001{i:06d}", pan_sequence=1, expiry="2812"),
        captured_at=1_700_000_000 + i,
        emv={"9F27": "40", "9F26": f"{i:016X}", "9F36": "001C"},
        brand="visa",
        aid="A0000000031010",
    )


# --- the host ------------------------------------------------------------------------------


def _send(terminal: AcquirerTerminal, item: OfflineItem) -> tuple[str, str | None]:
    [result] = terminal.client.upload_offline([item]).items
    return result.result, result.reason_code


def test_a_tampered_amount_is_refused_by_the_host(inprocess_terminal: AcquirerTerminal) -> None:
    item = signed_item(
        inprocess_terminal.keystore, offline_id="off-1", amount=800, currency=826, pan=VISA
    )
    assert _send(inprocess_terminal, replace(item, amount=80000)) == ("refused", "record_mismatch")
    assert _send(inprocess_terminal, replace(item, pan="4761739001010028")) == (
        "refused",
        "record_mismatch",
    )
    assert inprocess_terminal.host.ledger() == []
    # The item as signed is booked.
    assert _send(inprocess_terminal, item) == ("approved", None)


def test_unsigned_and_wrongly_signed_items_are_refused(
    inprocess_terminal: AcquirerTerminal, tmp_path: Path
) -> None:
    ks = inprocess_terminal.keystore
    fields: dict[str, Any] = {"offline_id": "off-2", "amount": 700, "currency": 826, "pan": VISA}
    item = signed_item(ks, **fields)
    unsigned = replace(item, signed_record=b"", signature=b"", key_id=None)
    assert _send(inprocess_terminal, unsigned) == ("refused", "unsigned_record")
    forged = replace(item, signature=bytes(64))
    assert _send(inprocess_terminal, forged) == ("refused", "bad_record_signature")
    # Signed by a key the host never enrolled, claiming this terminal's key id or its own.
    stranger = Keystore.create(tmp_path / "stranger", TEST_SECRET, scrypt_n=TEST_SCRYPT_N)
    other = signed_item(stranger, **fields)
    assert _send(inprocess_terminal, replace(other, key_id=ks.key_id)) == (
        "refused",
        "bad_record_signature",
    )
    assert _send(inprocess_terminal, other) == ("refused", "unknown_signing_key")
    assert inprocess_terminal.host.ledger() == []


def test_a_refused_item_is_kept_flagged_not_sent_forever(
    inprocess_terminal: AcquirerTerminal, tmp_path: Path
) -> None:
    ks = inprocess_terminal.keystore
    with OfflineQueue.open(tmp_path / "q.sqlite3", ks.data_key(QUEUE_KEY_PURPOSE)) as queue:
        queue.enqueue(signed_payment(_payment(1), ks))
        queue.enqueue(_payment(2))  # unsigned, as a forged import used to queue it
        report = Forwarder(queue, AcquirerUplink(inprocess_terminal.client)).sync()
        assert (report.accepted, report.failed, report.remaining) == (1, 1, 0)
        failed = queue.get(_payment(2).transaction_id)
        assert failed is not None
        assert failed.state is State.FAILED
        assert failed.flagged
        assert "unsigned_record" in (failed.reason or "")
    assert [r["offline_id"] for r in inprocess_terminal.host.ledger()] == [
        _payment(1).transaction_id
    ]


def test_records_signed_before_a_key_rotation_still_verify(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    ks = inprocess_terminal.keystore
    before = signed_item(ks, offline_id="off-3", amount=900, currency=826, pan=VISA)
    inprocess_terminal.client.rotate_key()
    after = signed_item(ks, offline_id="off-4", amount=901, currency=826, pan=VISA)
    result = inprocess_terminal.client.upload_offline([before, after])
    assert [r.result for r in result.items] == ["approved", "approved"]


def test_a_record_of_another_merchants_terminal_is_refused(
    inprocess_host: HostHandle, inprocess_terminal: AcquirerTerminal, tmp_path: Path
) -> None:
    directory = tmp_path / "elsewhere"
    keys = TerminalKeys(
        directory,
        Keystore.create(directory, TEST_SECRET, scrypt_n=TEST_SCRYPT_N),
        SequenceCounter(directory / "sequence.json"),
    )
    try:
        with enrolled_terminal(inprocess_host, keys) as _:
            pass
    finally:
        keys.sequence.close()
    # Enrolled with merchant M0001 like the uploader: a replacement unit's upload is fine.
    item = signed_item(keys.keystore, offline_id="off-5", amount=500, currency=826, pan=VISA)
    assert _send(inprocess_terminal, item) == ("approved", None)
    directory = tmp_path / "other-merchant"
    keys = TerminalKeys(
        directory,
        Keystore.create(directory, TEST_SECRET, scrypt_n=TEST_SCRYPT_N),
        SequenceCounter(directory / "sequence.json"),
    )
    try:
        with inprocess_host.client(keys) as client:
            client.enrol(inprocess_host.activation_code("M0002"))
    finally:
        keys.sequence.close()
    item = signed_item(keys.keystore, offline_id="off-6", amount=500, currency=826, pan=VISA)
    assert _send(inprocess_terminal, item) == ("refused", "unknown_signing_key")


# --- pipos queue import --------------------------------------------------------------------


def _unit(tmp_path: Path, name: str) -> tuple[Path, Keystore]:
    data = tmp_path / name
    data.mkdir()
    (data / "device-secret").write_bytes(TEST_SECRET)
    (data / "device-secret").chmod(0o600)
    return data, Keystore.create(data, TEST_SECRET, scrypt_n=TEST_SCRYPT_N)


def _backup(
    tmp_path: Path,
    payments: list[OfflinePayment],
    signers: dict[str, BackupSigner] | None = None,
) -> Path:
    """A backup made on a queue of the attacker's own (any data key, any passphrase)."""
    path = tmp_path / f"import-{len(list(tmp_path.iterdir()))}.backup"
    with OfflineQueue.open(tmp_path / f"{path.name}.sqlite3", os.urandom(32)) as queue:
        for p in payments:
            queue.enqueue(p)
        export_queue(queue, path, PASSPHRASE, scrypt_n=2**10, signers=signers)
    return path


def _import(data: Path, backup: Path, tmp_path: Path) -> int:
    pw = tmp_path / "pw"
    pw.write_bytes(PASSPHRASE + b"\n")
    return main(
        ["queue", "import", str(backup), "--data-dir", str(data), "--passphrase-file", str(pw)]
    )


def _queued(data: Path, keystore: Keystore) -> list[str]:
    path = data / "offline_queue.sqlite3"
    if not path.exists():
        return []
    with OfflineQueue.open(path, keystore.data_key(QUEUE_KEY_PURPOSE)) as queue:
        return [p.transaction_id for p in queue.list_payments()]


def test_the_issues_forged_unsigned_payment_is_refused_and_nothing_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ks = _unit(tmp_path, "terminal")
    forged = _payment(9, amount=99_000)
    backup = _backup(
        tmp_path, [signed_payment(_payment(1), ks), forged, signed_payment(_payment(2), ks)]
    )
    assert _import(data, backup, tmp_path) == 1
    err = capsys.readouterr().err
    assert forged.transaction_id in err
    assert "no terminal signature" in err
    assert _queued(data, ks) == []  # all or nothing: the two good ones did not come in


@pytest.mark.parametrize("tamper", ["amount", "signature", "stranger"])
def test_a_wrongly_signed_payment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: str
) -> None:
    data, ks = _unit(tmp_path, "terminal")
    good = signed_payment(_payment(3), ks)
    if tamper == "amount":
        bad = replace(good, amount=good.amount * 100)
        expected = "amount"
    elif tamper == "signature":
        bad = replace(good, signature=bytes(64))
        expected = "does not verify"
    else:
        _, stranger = _unit(tmp_path, "stranger")
        bad = signed_payment(_payment(3), stranger)
        expected = "neither this terminal's"
    assert _import(data, _backup(tmp_path, [bad]), tmp_path) == 1
    err = capsys.readouterr().err
    assert good.transaction_id in err
    assert expected in err
    assert _queued(data, ks) == []


def test_payments_signed_here_or_by_the_exporting_unit_come_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ks = _unit(tmp_path, "terminal")
    _, old_unit = _unit(tmp_path, "old-unit")
    own = signed_payment(_payment(4), ks)
    theirs = signed_payment(_payment(5), old_unit)
    declared: dict[str, BackupSigner] = keystore_signers(old_unit)
    assert _import(data, _backup(tmp_path, [own, theirs], declared), tmp_path) == 0
    assert "imported 2 payment(s)" in capsys.readouterr().out
    assert sorted(_queued(data, ks)) == sorted([own.transaction_id, theirs.transaction_id])
