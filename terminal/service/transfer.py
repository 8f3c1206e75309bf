"""Card data out of and into the offline queue: a technician's backup, a unit swap. One way,
whichever command asks (`pipos queue export|import`, `pipos unit export|import`).

On a terminal with a technician credential (a provisioned one) the technician's PIN comes
first; then the result is audited, ``queue_exported``/``queue_imported`` with what moved, or
``queue_export_failed``/``queue_import_failed`` with the reason. A developer's or a test
queue (no credential) moves without either.

An import takes only payments a terminal of this merchant signed, exactly as signed: every
payment still to be sent must carry its canonical record (terminal.checkout.core
``_signed_record``) and an Ed25519 signature that verifies with

* one of the importing terminal's own keys, or
* a key the exporting unit wrote into the backup, once (a) its key id names its public key
  (``key_id_for``) and (b) the acquirer confirms it is a key it enrolled for a terminal of
  this terminal's merchant, the terminal the record names (``POST /v1/terminal-keys``,
  docs/protocol.md): a forged backup can declare any key it likes, so a declared key alone
  proves nothing;

and a record that says what the payment says (:func:`mismatched_field`: id, amount,
currency, capture time, masked PAN, and the card's own cryptogram, ATC and AID, which a card
payment must carry). One item that fails refuses the whole file, naming it and the key, and
nothing is imported; the backup file is only read, so nothing is lost: a payment refused
because the acquirer could not be asked comes in when the import is run again, connected.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from emv.errors import PiposError
from emv.pan import mask_pan
from offline_queue import ImportReport, OfflineQueue, export_queue, import_queue
from offline_queue.backup import BackupSigner, open_backup

from ..domain.errors import TerminalError
from ..domain.signing import key_id_for, verify_signature
from ..security.technician import TechnicianCredential
from ..store.audit import AuditLog
from ..store.keys import Keystore

if TYPE_CHECKING:
    from ..acquirer.client import AcquirerClient

__all__ = [
    "ConfirmedKey",
    "ImportRefusedError",
    "KeyConfirmer",
    "TransferGuard",
    "acquirer_key_confirmer",
    "check_signed_items",
    "export_queue_file",
    "import_queue_file",
    "keystore_signers",
    "mismatched_field",
]

QueueOpener = Callable[[], AbstractContextManager[OfflineQueue]]
Signers = Mapping[str, BackupSigner]
#: A record captured this long after its key was retired is not believed (clock skew).
_RETIREMENT_SLACK: Final = 300
_AGAIN: Final = (
    "Nothing was imported and the backup file is unchanged: connect the terminal to the "
    "acquirer and run the import again"
)


class ImportRefusedError(TerminalError):
    """A backup holds a payment this terminal cannot show was signed, as it stands, by a
    terminal of its merchant; nothing imported."""


@dataclass(frozen=True)
class ConfirmedKey:
    """A key the acquirer confirmed as enrolled for `terminal_id`, of this merchant."""

    key_id: str
    terminal_id: str
    public_key: bytes
    retired: int | None = None


#: Asks the acquirer which of these key ids are its terminals' keys; raises a
#: TerminalError when it cannot be asked (unreachable, not enrolled, refused).
KeyConfirmer = Callable[[Sequence[str]], Sequence[ConfirmedKey]]


def keystore_signers(keystore: Keystore) -> dict[str, BackupSigner]:
    """Every public key of `keystore` (retired ones with their retirement time)."""
    return {k.key_id: BackupSigner(k.public_key, k.retired) for k in keystore.public_keys()}


def acquirer_key_confirmer(
    open_client: Callable[[], AbstractContextManager[AcquirerClient]],
) -> KeyConfirmer:
    """A :data:`KeyConfirmer` over the terminal's own acquirer connection (opened only when
    a backup declares a key other than the terminal's own)."""

    def confirm(key_ids: Sequence[str]) -> Sequence[ConfirmedKey]:
        with open_client() as client:
            keys = client.terminal_keys(key_ids)
        return [ConfirmedKey(k.key_id, k.terminal_id, k.public_key, k.retired_at) for k in keys]

    return confirm


def _unb64(text: object) -> bytes:
    if not isinstance(text, str) or not text:
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return b""


#: The card's own fields in the signed record, and where the payment carries them.
_CARD_FIELDS: Final = (("cryptogram", "9F26"), ("atc", "9F36"), ("aid", None))


def mismatched_field(
    record: Mapping[str, Any], payment: Mapping[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first field where the signed `record` and the backup's `payment` (its document,
    offline_queue.store.payment_document) disagree: (name, signed, in the payment), or None.

    The same rule as the host's on upload (simulator/host/service.py ``mismatched_field``;
    the simulator may not import the terminal, so tests/terminal/domain/test_signing.py runs
    both over the same payments): id, amount, currency, capture time, masked PAN; and a card
    payment (one with a PAN or EMV data) must carry in its record the card's cryptogram
    (9F26), ATC (9F36) and AID, equal to the payment's. The masked PAN alone fits every card
    of the same BIN and last 4; the cryptogram binds the record to this card's transaction
    (its issuer verifies it over amount, ATC and unpredictable number). No hash of the PAN
    in the record: it is kept in the clear in the queue, and a hash of PAN and expiry falls
    to a search over the digits between BIN and last 4."""
    card_value = payment.get("card")
    card: Mapping[str, Any] = card_value if isinstance(card_value, Mapping) else {}
    pan = str(card.get("pan") or "")
    emv = {str(k).upper(): str(v).upper() for k, v in (payment.get("emv") or {}).items()}
    pairs: list[tuple[str, Any, Any]] = [
        ("transaction_id", record.get("transaction_id"), payment.get("transaction_id")),
        ("amount", record.get("amount"), payment.get("amount")),
        ("currency", record.get("currency"), payment.get("currency")),
        ("captured_at", record.get("captured_at"), payment.get("captured_at")),
        ("masked_pan", record.get("masked_pan"), mask_pan(pan)),
    ]
    for name, signed, sent in pairs:
        if signed != sent or isinstance(signed, bool) or isinstance(sent, bool):
            return name, signed, sent
    is_card = bool(pan or emv)
    for name, tag in _CARD_FIELDS:
        value = record.get(name)
        signed = value.upper() if isinstance(value, str) else value
        sent = emv.get(tag, "") if tag else str(payment.get("aid") or "").upper()
        if not isinstance(signed, str) or (is_card and not signed) or signed != sent:
            return name, signed, sent
    return None


@dataclass(frozen=True)
class _Trust:
    """The keys an import may believe: the terminal's own; the acquirer's confirmations of
    declared ones, by (key id, terminal); which key ids were declared; and, when the
    acquirer could not be asked, why."""

    own: Signers
    confirmed: Mapping[tuple[str, str], BackupSigner]
    declared: frozenset[str]
    unconfirmed_because: str | None = None


@dataclass(frozen=True)
class _Refusal:
    """Why a payment cannot be imported; `again`: because the acquirer could not be asked,
    so the same import will work once the terminal is connected."""

    reason: str
    again: bool = False


def _record_problem(payment: Mapping[str, Any], trust: _Trust) -> _Refusal | None:
    """Why `payment` cannot be imported as it stands, or None."""
    raw = _unb64(payment.get("signed_record"))
    signature = _unb64(payment.get("signature"))
    key_id = payment.get("key_id")
    if not raw or not signature or not isinstance(key_id, str) or not key_id:
        return _Refusal("it carries no terminal signature (an unsigned payment)")
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return _Refusal("its signed record is not a JSON object")
    signer = trust.own.get(key_id)
    if signer is None:
        if key_id not in trust.declared:
            return _Refusal(
                f"it is signed by key {key_id[:40]}, which is neither this terminal's nor one "
                "the exporting unit declared"
            )
        if trust.unconfirmed_because is not None:
            return _Refusal(
                f"it is signed by key {key_id}, declared by the exporting unit, and the "
                "acquirer could not be asked whether that key belongs to a terminal of this "
                f"merchant ({trust.unconfirmed_because})",
                again=True,
            )
        named = str(record.get("terminal_id") or "")
        signer = trust.confirmed.get((key_id, named))
        if signer is None:
            return _Refusal(
                f"it is signed by key {key_id}, which the acquirer does not confirm as a key "
                f"of terminal {named[:40] or '(none named)'} of this merchant"
            )
    if not verify_signature(signer.public_key, signature, raw):
        return _Refusal(
            f"its signature does not verify with key {key_id}: it was altered or forged"
        )
    captured = record.get("captured_at")
    if signer.retired is not None and (
        not isinstance(captured, int) or captured > signer.retired + _RETIREMENT_SLACK
    ):
        return _Refusal(f"key {key_id} was retired before the record was captured")
    found = mismatched_field(record, payment)
    if found is None:
        return None
    name, signed, sent = found
    if name in ("cryptogram", "atc", "aid") and not signed:
        return _Refusal(
            f"its signed record has no {name}, and a card payment must carry its card's"
        )
    return _Refusal(f"its {name} is {sent!r} but the terminal signed {signed!r}")


def _payments(items: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(transaction id, payment) of every item still to be sent. Items without card data
    (accepted or declined on the old unit) are history, never sent again: not checked."""
    for index, item in enumerate(items):
        payment = item.get("payment") if isinstance(item, Mapping) else None
        if payment is None:
            continue
        if not isinstance(payment, Mapping):
            raise ImportRefusedError(
                f"backup item {index + 1}: malformed payment; nothing imported"
            )
        yield str(payment.get("transaction_id", f"#{index + 1}"))[:128], payment


def _check_declared(declared: Signers) -> None:
    """A declared key whose id does not name its public key is a forgery (or a damaged
    file): the whole file is refused."""
    for key_id, signer in declared.items():
        if key_id_for(signer.public_key) != key_id:
            raise ImportRefusedError(
                f"the backup declares key {key_id[:40]} with a public key whose key id is "
                f"{key_id_for(signer.public_key)}: the file was altered or forged. Nothing was "
                "imported from this file"
            )


def _trust(
    items: Sequence[Mapping[str, Any]],
    own: Signers,
    declared: Signers,
    confirm: KeyConfirmer | None,
) -> _Trust:
    _check_declared(declared)
    wanted = sorted(
        {
            str(p.get("key_id"))
            for _, p in _payments(items)
            if p.get("key_id") in declared and p.get("key_id") not in own
        }
    )
    confirmed: dict[tuple[str, str], BackupSigner] = {}
    why: str | None = None
    if wanted:
        if confirm is None:
            why = "this terminal has no acquirer to ask"
        else:
            try:
                answer = confirm(wanted)
            except TerminalError as exc:
                why = str(exc)
            else:
                for key in answer:
                    # The acquirer's key, and only if it is the one the backup declared.
                    mine = declared.get(key.key_id)
                    if mine is not None and mine.public_key == key.public_key:
                        confirmed[(key.key_id, key.terminal_id)] = BackupSigner(
                            key.public_key, key.retired
                        )
    return _Trust(own, confirmed, frozenset(declared), why)


def check_signed_items(
    items: Sequence[Mapping[str, Any]],
    signers: Signers,
    *,
    declared: Signers | None = None,
    confirm: KeyConfirmer | None = None,
) -> None:
    """Refuse (ImportRefusedError, naming the item and the key) a backup with any payment
    to be sent that is not signed, exactly as it stands, by one of this terminal's own keys
    (`signers`) or by a key the backup `declared` that the acquirer confirms (`confirm`,
    asked once, only when a payment needs a declared key)."""
    trust = _trust(items, signers, declared or {}, confirm)
    for txid, payment in _payments(items):
        problem = _record_problem(payment, trust)
        if problem is None:
            continue
        after = _AGAIN if problem.again else "Nothing was imported from this file"
        raise ImportRefusedError(f"payment {txid} refused: {problem.reason}. {after}")


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
    """Write every queued payment to `target`, encrypted under `passphrase`; returns how many
    of them are still to be sent (those the importing unit will send). Payments the host
    already has go into the file too, as history (their card data is gone), but are not
    counted: a technician reads the number as what the replacement will send.

    The file is read back and authenticated before the count is given, so the number is
    what the file holds, not what the queue held a moment before. `signers` (this terminal's
    public keys) go into the file, for the importing unit to check the payments'
    signatures with."""
    with guard.transfer("queue_export", target) as done:
        # The queue (and the keystore behind it) first: a terminal that cannot open it is
        # not asked for a passphrase.
        with open_queue() as queue:
            keys = signers() if signers is not None else None
            secret = passphrase()
            export_queue(queue, target, secret, signers=keys)
        items = open_backup(target, secret).items
        waiting = sum(1 for item in items if item.get("payment") is not None)
        done(count=waiting, history=len(items) - waiting)
    return waiting


def import_queue_file(
    open_queue: QueueOpener,
    source: Path,
    passphrase: Callable[[], bytes],
    guard: TransferGuard,
    *,
    signers: Callable[[], Signers],
    confirm_keys: KeyConfirmer | None = None,
) -> ImportReport:
    """Add the payments of the backup `source` (idempotent: those already queued are
    skipped; a different payment under a queued id is a conflict, not imported).

    `signers` are this terminal's own public keys (:func:`keystore_signers`); a key the
    exporting unit declared in the file counts only once `confirm_keys` (the acquirer,
    :func:`acquirer_key_confirmer`) confirms it (:func:`check_signed_items`). All or
    nothing; the file is only read."""
    with guard.transfer("queue_import", source) as done:
        with open_queue() as queue:
            own = dict(signers())

            def check(items: Sequence[Mapping[str, Any]], declared: Signers) -> None:
                check_signed_items(items, own, declared=declared, confirm=confirm_keys)

            report = import_queue(queue, source, passphrase(), check=check)
        done(
            added=len(report.added),
            already_present=len(report.already_present),
            conflicts=list(report.conflicts),
        )
    return report
