"""Card data out of and into the offline queue: a technician's backup, a unit swap. One way,
whichever command asks (`pipos queue export|import`, `pipos unit export|import`).

On a terminal with a technician credential (a provisioned one) the technician's PIN comes
first; then the result is audited, ``queue_exported``/``queue_imported`` with what moved, or
``queue_export_failed``/``queue_import_failed`` with the reason. A developer's or a test
queue (no credential) moves without either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emv.errors import PiposError
from offline_queue import ImportReport, OfflineQueue, export_queue, import_queue

from ..security.technician import TechnicianCredential
from ..store.audit import AuditLog

__all__ = ["TransferGuard", "export_queue_file", "import_queue_file"]

QueueOpener = Callable[[], AbstractContextManager[OfflineQueue]]


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
    open_queue: QueueOpener, target: Path, passphrase: Callable[[], bytes], guard: TransferGuard
) -> int:
    """Write every queued payment to `target`, encrypted under `passphrase`; returns how many."""
    with guard.transfer("queue_export", target) as done:
        # The queue (and the keystore behind it) first: a terminal that cannot open it is
        # not asked for a passphrase.
        with open_queue() as queue:
            count = export_queue(queue, target, passphrase())
        done(count=count)
    return count


def import_queue_file(
    open_queue: QueueOpener, source: Path, passphrase: Callable[[], bytes], guard: TransferGuard
) -> ImportReport:
    """Add the payments of the backup `source` (idempotent: those already queued are
    skipped; a different payment under a queued id is a conflict, not imported)."""
    with guard.transfer("queue_import", source) as done:
        with open_queue() as queue:
            report = import_queue(queue, source, passphrase())
        done(
            added=len(report.added),
            already_present=len(report.already_present),
            conflicts=list(report.conflicts),
        )
    return report
