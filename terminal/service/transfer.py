"""Card data out of and into the offline queue: a technician's backup, a unit swap. One way,
whichever command asks (`pipos queue export|import`, `pipos unit export|import`).

On a terminal with a technician credential (a provisioned one) the technician's PIN comes
first; then the result is audited, ``queue_exported``/``queue_imported`` with what moved, or
``queue_export_failed``/``queue_import_failed`` with the reason. A developer's or a test
queue (no credential) moves without either.

An import takes only payments the terminal signed: every payment still to be sent must
carry its canonical record (terminal.checkout.core ``_signed_record``), an Ed25519
signature that verifies with one of the importing terminal's own keys or one the exporting
unit wrote into the backup, and a record that says what the payment says (id, amount,
currency, capture time, masked PAN, AID, cryptogram, ATC). One item that fails refuses the
whole file, naming it, and nothing is imported. The acquirer checks the same signature
again on upload against the keys it enrolled (docs/protocol.md), so a key declared in a
forged backup gets the payment no further than the queue's failed list.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from emv.errors import PiposError
from emv.pan import mask_pan
from offline_queue import ImportReport, OfflineQueue, export_queue, import_queue
from offline_queue.backup import BackupSigner

from ..domain.errors import TerminalError
from ..domain.signing import verify_signature
from ..security.technician import TechnicianCredential
from ..store.audit import AuditLog
from ..store.keys import Keystore

__all__ = [
    "ImportRefusedError",
    "TransferGuard",
    "check_signed_items",
    "export_queue_file",
    "import_queue_file",
    "keystore_signers",
]

QueueOpener = Callable[[], AbstractContextManager[OfflineQueue]]
Signers = Mapping[str, BackupSigner]
#: A record captured this long after its key was retired is not believed (clock skew).
_RETIREMENT_SLACK: Final = 300


class ImportRefusedError(TerminalError):
    """A backup holds a payment this terminal did not sign as it stands; nothing imported."""


def keystore_signers(keystore: Keystore) -> dict[str, BackupSigner]:
    """Every public key of `keystore` (retired ones with their retirement time)."""
    return {k.key_id: BackupSigner(k.public_key, k.retired) for k in keystore.public_keys()}


def _unb64(text: object) -> bytes:
    if not isinstance(text, str) or not text:
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return b""


def _record_problem(payment: Mapping[str, Any], signers: Signers) -> str | None:
    raw = _unb64(payment.get("signed_record"))
    signature = _unb64(payment.get("signature"))
    key_id = payment.get("key_id")
    if not raw or not signature or not isinstance(key_id, str) or not key_id:
        return "it carries no terminal signature (an unsigned payment)"
    signer = signers.get(key_id)
    if signer is None:
        return (
            f"it is signed by key {key_id[:40]}, which is neither this terminal's nor one the "
            "exporting unit declared"
        )
    if not verify_signature(signer.public_key, signature, raw):
        return f"its signature does not verify with key {key_id}: it was altered or forged"
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return "its signed record is not a JSON object"
    captured = record.get("captured_at")
    if signer.retired is not None and (
        not isinstance(captured, int) or captured > signer.retired + _RETIREMENT_SLACK
    ):
        return f"key {key_id} was retired before the record was captured"
    card_value = payment.get("card")
    card: Mapping[str, Any] = card_value if isinstance(card_value, Mapping) else {}
    emv = {str(k).upper(): str(v).upper() for k, v in (payment.get("emv") or {}).items()}
    pairs: list[tuple[str, Any, Any]] = [
        ("transaction_id", record.get("transaction_id"), payment.get("transaction_id")),
        ("amount", record.get("amount"), payment.get("amount")),
        ("currency", record.get("currency"), payment.get("currency")),
        ("captured_at", captured, payment.get("captured_at")),
        ("masked_pan", record.get("masked_pan"), mask_pan(str(card.get("pan") or ""))),
    ]
    for name, tag in (("cryptogram", "9F26"), ("atc", "9F36")):
        if record.get(name):
            pairs.append((name, str(record[name]).upper(), emv.get(tag)))
    if record.get("aid"):
        pairs.append(("aid", str(record["aid"]).upper(), str(payment.get("aid") or "").upper()))
    for name, signed, sent in pairs:
        if signed != sent or isinstance(signed, bool) or isinstance(sent, bool):
            return f"its {name} is {sent!r} but the terminal signed {signed!r}"
    return None


def check_signed_items(items: Sequence[Mapping[str, Any]], signers: Signers) -> None:
    """Refuse (ImportRefusedError, naming the item) a backup with any payment to be sent
    that is not signed by one of `signers` exactly as it stands. Items without card data
    (accepted or declined on the old unit) are history, never sent again: not checked."""
    for index, item in enumerate(items):
        payment = item.get("payment") if isinstance(item, Mapping) else None
        if payment is None:
            continue
        if not isinstance(payment, Mapping):
            raise ImportRefusedError(
                f"backup item {index + 1}: malformed payment; nothing imported"
            )
        txid = str(payment.get("transaction_id", f"#{index + 1}"))[:128]
        problem = _record_problem(payment, signers)
        if problem is not None:
            raise ImportRefusedError(
                f"payment {txid} refused: {problem}. Nothing was imported from this file"
            )


@dataclass(frozen=True)
class TransferGuard:
    """Who may move the queue's card data, and where that is recorded: both None on a
    terminal without a technician credential."""

    technician: TechnicianCredential | None
    audit: AuditLog | None
    #: The technician's PIN, asked for only when there is a credential to check it against.
    secret: Callable[[], str]
    terminal_id: str | None = None

    @contextmanager
    def transfer(self, action: str, file: Path) -> Iterator[Callable[..., None]]:
        """Check the PIN, then yield the function that audits the result; a failure (any of
        the project's errors) is audited with its reason and raised again."""
        if self.technician is not None:
            self.technician.verify(self.secret(), action=action)
        where: dict[str, Any] = {"file": str(file)}
        if self.terminal_id:
            where["terminal_id"] = self.terminal_id

        def done(**detail: Any) -> None:
            if self.audit is not None:
                self.audit.record(action + "ed", actor="technician", **where, **detail)

        try:
            yield done
        except PiposError as exc:
            if self.audit is not None:
                self.audit.record(action + "_failed", actor="technician", **where, error=str(exc))
            raise


def export_queue_file(
    open_queue: QueueOpener,
    target: Path,
    passphrase: Callable[[], bytes],
    guard: TransferGuard,
    *,
    signers: Callable[[], Signers] | None = None,
) -> int:
    """Write every queued payment to `target`, encrypted under `passphrase`; returns how many.
    `signers` (this terminal's public keys) go into the file, for the importing unit to
    check the payments' signatures with."""
    with guard.transfer("queue_export", target) as done:
        # The queue (and the keystore behind it) first: a terminal that cannot open it is
        # not asked for a passphrase.
        with open_queue() as queue:
            keys = signers() if signers is not None else None
            count = export_queue(queue, target, passphrase(), signers=keys)
        done(count=count)
    return count


def import_queue_file(
    open_queue: QueueOpener,
    source: Path,
    passphrase: Callable[[], bytes],
    guard: TransferGuard,
    *,
    signers: Callable[[], Signers],
) -> ImportReport:
    """Add the payments of the backup `source` (idempotent: those already queued are
    skipped; a different payment under a queued id is a conflict, not imported).

    `signers` are this terminal's own public keys (:func:`keystore_signers`); with the keys
    the exporting unit declared in the file, they are the only ones a payment may be signed
    with (:func:`check_signed_items`). All or nothing."""
    with guard.transfer("queue_import", source) as done:
        with open_queue() as queue:
            own = dict(signers())

            def check(items: Sequence[Mapping[str, Any]], declared: Signers) -> None:
                # The terminal's own keys win over a declared key of the same id.
                check_signed_items(items, {**declared, **own})

            report = import_queue(queue, source, passphrase(), check=check)
        done(
            added=len(report.added),
            already_present=len(report.already_present),
            conflicts=list(report.conflicts),
        )
    return report
