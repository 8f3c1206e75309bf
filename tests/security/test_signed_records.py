"""The terminal's signature on offline payments, sent and checked (issue 16, item 7).

Every payment approved offline is queued with the terminal's Ed25519 signature over its
canonical record (terminal.checkout.core). The uplink used to drop both, so "every record is
signed by the terminal key" was hollow for offline payments, and `pipos queue import` queued a
forged, unsigned payment. Now the upload carries them and the host books only an item whose
record verifies with a key it enrolled for a terminal of the merchant and says what the item
says; the import takes only payments signed by this unit, or by the unit that exported them
with a key the acquirer confirms (a key a backup declares proves nothing by itself), all or
nothing.

The record binds the card: the masked PAN fits every card of the same BIN and last 4, so a
card payment's record must carry the card's own cryptogram, ATC and AID, and both the host
and the import refuse one that does not."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from emv.pan import mask_pan
from offline_queue import (
    CardData,
    Forwarder,
    ImportReport,
    OfflinePayment,
    OfflineQueue,
    State,
    export_queue,
)
from offline_queue.backup import BackupSigner
from terminal.acquirer.client import AcquirerClient, OfflineItem
from terminal.acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink
from terminal.cli import main
from terminal.domain.signing import offline_record
from terminal.service.transfer import (
    ImportRefusedError,
    KeyConfirmer,
    TransferGuard,
    acquirer_key_confirmer,
    import_queue_file,
    keystore_signers,
)
from terminal.store.keys import Keystore, SequenceCounter
from tests.conftest_host import (
    INPROCESS_URL,
    TEST_SCRYPT_N,
    TEST_SECRET,
    AcquirerTerminal,
    HostHandle,
    TerminalKeys,
    card_emv,
    enrolled_terminal,
    make_client,
    signed_item,
    signed_payment,
    with_chip_data,
)

PASSPHRASE = b"technician passphrase"
VISA = "4761739001010010"
#: Another card of the same BIN and last 4: its masked PAN is VISA's.
TWIN = "4761730000000010"
VISA_AID = "A0000000031010"


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


def test_payments_signed_here_come_in_without_asking_anyone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ks = _unit(tmp_path, "terminal")
    own = [signed_payment(_payment(4), ks), signed_payment(_payment(5), ks)]
    assert _import(data, _backup(tmp_path, own, keystore_signers(ks)), tmp_path) == 0
    assert "imported 2 payment(s)" in capsys.readouterr().out
    assert sorted(_queued(data, ks)) == sorted(p.transaction_id for p in own)


def test_a_forged_backup_that_declares_its_own_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reviewer's forgery: a backup whose payment is signed by the forger's key, with
    that key declared in the file. The import used to check records against the declared
    keys, so it came in."""
    data, ks = _unit(tmp_path, "terminal")
    _, forger = _unit(tmp_path, "forger")
    forged = signed_payment(_payment(6, amount=99_000), forger)
    backup = _backup(tmp_path, [forged], keystore_signers(forger))
    before = backup.read_bytes()
    assert _import(data, backup, tmp_path) == 1
    err = capsys.readouterr().err
    assert forged.transaction_id in err
    assert forger.key_id in err
    assert "connect the terminal to the acquirer and run the import again" in err
    assert _queued(data, ks) == []
    assert backup.read_bytes() == before  # nothing lost: the file is as it was


def test_a_declared_key_whose_id_names_another_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backup declaring the old unit's key id with the forger's public key: the key id is
    the public key's hash (key_id_for), so it cannot name another key."""
    data, ks = _unit(tmp_path, "terminal")
    _, old_unit = _unit(tmp_path, "old-unit")
    _, forger = _unit(tmp_path, "forger")
    forged = replace(signed_payment(_payment(7), forger), key_id=old_unit.key_id)
    declared = {old_unit.key_id: BackupSigner(forger.public_key)}
    assert _import(data, _backup(tmp_path, [forged], declared), tmp_path) == 1
    err = capsys.readouterr().err
    assert old_unit.key_id in err
    assert "altered or forged" in err
    assert _queued(data, ks) == []


# --- the acquirer confirms the exporting unit's keys ---------------------------------------


@contextmanager
def _enrolled(host: HostHandle, directory: Path, merchant: str = "M0001") -> Iterator[TerminalKeys]:
    keys = TerminalKeys(
        directory,
        Keystore.create(directory, TEST_SECRET, scrypt_n=TEST_SCRYPT_N),
        SequenceCounter(directory / "sequence.json"),
    )
    try:
        with host.client(keys) as client:
            client.enrol(host.activation_code(merchant))
        yield keys
    finally:
        keys.sequence.close()


def _import_into(keys: TerminalKeys, backup: Path, confirm: KeyConfirmer | None) -> ImportReport:
    """`pipos unit import`'s transfer (terminal.service.transfer) into `keys`' queue."""
    path = keys.directory / "offline_queue.sqlite3"
    return import_queue_file(
        lambda: OfflineQueue.open(path, keys.keystore.data_key(QUEUE_KEY_PURPOSE)),
        backup,
        lambda: PASSPHRASE,
        TransferGuard(None, None, lambda: ""),
        signers=lambda: keystore_signers(keys.keystore),
        confirm_keys=confirm,
    )


def _confirmer(host: HostHandle, keys: TerminalKeys) -> KeyConfirmer:
    return acquirer_key_confirmer(lambda: host.client(keys))


def test_a_replacement_unit_takes_what_the_old_one_signed_once_the_acquirer_confirms(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        old = stack.enter_context(_enrolled(inprocess_host, tmp_path / "old"))
        new = stack.enter_context(_enrolled(inprocess_host, tmp_path / "new"))
        stranger = stack.enter_context(_enrolled(inprocess_host, tmp_path / "other", "M0002"))
        theirs = signed_payment(_payment(8), old.keystore)
        backup = _backup(tmp_path, [theirs], keystore_signers(old.keystore))
        report = _import_into(new, backup, _confirmer(inprocess_host, new))
        assert report.added == (theirs.transaction_id,)

        # A terminal of another merchant, enrolled with this host: not confirmed.
        elsewhere = signed_payment(_payment(9), stranger.keystore)
        backup = _backup(tmp_path, [elsewhere], keystore_signers(stranger.keystore))
        with pytest.raises(ImportRefusedError) as err:
            _import_into(new, backup, _confirmer(inprocess_host, new))
        assert elsewhere.transaction_id in str(err.value)
        assert stranger.keystore.key_id in str(err.value)
        assert "does not confirm" in str(err.value)

        # A key the host never enrolled (declared, with its right id): not confirmed either.
        _, forger = _unit(tmp_path, "forger")
        forged = signed_payment(_payment(10), forger)
        backup = _backup(tmp_path, [forged], keystore_signers(forger))
        with pytest.raises(ImportRefusedError, match="does not confirm"):
            _import_into(new, backup, _confirmer(inprocess_host, new))
    with OfflineQueue.open(
        new.directory / "offline_queue.sqlite3", new.keystore.data_key(QUEUE_KEY_PURPOSE)
    ) as queue:
        assert [p.transaction_id for p in queue.list_payments()] == [theirs.transaction_id]


def test_an_import_the_acquirer_cannot_confirm_loses_nothing(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        old = stack.enter_context(_enrolled(inprocess_host, tmp_path / "old"))
        new = stack.enter_context(_enrolled(inprocess_host, tmp_path / "new"))
        theirs = signed_payment(_payment(11), old.keystore)
        backup = _backup(tmp_path, [theirs], keystore_signers(old.keystore))
        before = backup.read_bytes()

        def unreachable() -> AcquirerClient:
            # Nothing listens there: the connection is refused.
            return make_client(INPROCESS_URL, new, connect_timeout=1.0)

        with pytest.raises(ImportRefusedError) as err:
            _import_into(new, backup, acquirer_key_confirmer(unreachable))
        message = str(err.value)
        assert theirs.transaction_id in message
        assert old.keystore.key_id in message
        assert "connect the terminal to the acquirer and run the import again" in message
        assert backup.read_bytes() == before
        # Connected again, the same file comes in.
        report = _import_into(new, backup, _confirmer(inprocess_host, new))
        assert report.added == (theirs.transaction_id,)


@pytest.mark.integration
def test_pipos_queue_import_asks_the_acquirer(
    session_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command as a technician runs it on the replacement unit, reaching the acquirer
    by its URL (`--host-url`, or the configured one)."""
    data, ks = _unit(tmp_path, "new")
    keys = TerminalKeys(data, ks, SequenceCounter(data / "sequence.json"))
    try:
        with session_host.client(keys) as client:
            client.enrol(session_host.activation_code())
    finally:
        keys.sequence.close()
    with _enrolled(session_host, tmp_path / "old") as old:
        theirs = signed_payment(_payment(12), old.keystore)
        backup = _backup(tmp_path, [theirs], keystore_signers(old.keystore))
    pw = tmp_path / "pw"
    pw.write_bytes(PASSPHRASE + b"\n")
    argv = ["queue", "import", str(backup), "--data-dir", str(data), "--passphrase-file", str(pw)]
    assert main([*argv, "--host-url", session_host.url]) == 0
    assert "imported 1 payment(s)" in capsys.readouterr().out
    assert _queued(data, ks) == [theirs.transaction_id]


# --- the record binds the card -------------------------------------------------------------


def _twin_record(keystore: Keystore, **card: str) -> tuple[bytes, bytes]:
    """A record the terminal signed for VISA without the card's cryptogram (as a code
    payment's record is signed today): the masked PAN is all it says of the card."""
    record = offline_record(
        transaction_id="off-twin",
        terminal_id=keystore.terminal_id or "",
        amount=1500,
        currency=826,
        captured_at=1_700_000_000,
        masked_pan=mask_pan(VISA),
        aid=card.get("aid", VISA_AID),
        cryptogram=card.get("cryptogram", ""),
        atc=card.get("atc", "001C"),
    )
    return record, keystore.sign(record)


@pytest.mark.parametrize("signed", ["no cryptogram", "nothing of the card"])
def test_another_card_of_the_same_bin_and_last_4_is_refused_by_the_host(
    inprocess_terminal: AcquirerTerminal, signed: str
) -> None:
    ks = inprocess_terminal.keystore
    card = {} if signed == "no cryptogram" else {"aid": "", "atc": ""}
    record, signature = _twin_record(ks, **card)
    chip, psn = card_emv(TWIN, 1500)
    del chip["9F26"]  # the cryptogram emptied
    item = OfflineItem(
        offline_id="off-twin",
        amount=1500,
        currency=826,
        pan=TWIN,
        pan_sequence=psn,
        aid=VISA_AID if signed == "no cryptogram" else None,
        emv=chip if signed == "no cryptogram" else {},
        captured_at=1_700_000_000,
        signed_record=record,
        signature=signature,
        key_id=ks.key_id,
    )
    [result] = inprocess_terminal.client.upload_offline([item]).items
    assert (result.result, result.reason_code) == ("refused", "record_mismatch")
    assert "cryptogram" in (result.reason or "")
    assert inprocess_terminal.host.ledger() == []


def test_another_card_of_the_same_bin_and_last_4_is_refused_by_the_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ks = _unit(tmp_path, "terminal")
    record, signature = _twin_record(ks)
    genuine = with_chip_data(_payment(13))
    twin = replace(
        genuine,
        transaction_id="off-twin",
        amount=1500,
        captured_at=1_700_000_000,
        card=CardData(pan=TWIN, pan_sequence=1, expiry="2812"),
        emv={k: v for k, v in genuine.emv.items() if k != "9F26"},
        aid=VISA_AID,
        signed_record=record,
        signature=signature,
        key_id=ks.key_id,
    )
    assert _import(data, _backup(tmp_path, [twin]), tmp_path) == 1
    err = capsys.readouterr().err
    assert "off-twin" in err
    assert "no cryptogram" in err
    assert _queued(data, ks) == []
