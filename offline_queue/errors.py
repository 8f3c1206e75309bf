"""The `offline_queue` package's exception tree.

Outcomes (a refused offline payment, a declined upload item) are values; these exceptions are
for faults: a corrupt database file, a wrong key, a malformed backup, an unreachable host.
"""

from __future__ import annotations

from emv.errors import PiposError


class QueueError(PiposError):
    """Root of the `offline_queue` package's exceptions."""


class QueueCorruptError(QueueError):
    """The queue database failed its integrity check or is not a pipos queue."""


class QueueSchemaError(QueueError):
    """The queue database has a schema this version cannot read (e.g. written by a newer one)."""


class QueueBusyError(QueueError):
    """The queue database stayed locked by another process longer than the busy timeout."""


class PaymentConflictError(QueueError):
    """A transaction id is already queued with different contents."""


class CardDataError(QueueError):
    """Encrypted card data cannot be opened: wrong data key, or the row was tampered with."""


class InvalidPaymentError(QueueError, ValueError):
    """A payment handed to the queue is malformed (amount, currency, id, PAN ...)."""


class UnknownPaymentError(QueueError, LookupError):
    """No queued payment has this transaction id."""


class UplinkError(QueueError):
    """Root of the faults a :class:`offline_queue.forwarder.BatchUploader` may raise."""


class UplinkUnavailableError(UplinkError):
    """The host could not be reached or answered ambiguously; the batch is retried as it is."""


class BatchRejectedError(UplinkError):
    """The host refused the whole batch as invalid; retrying it unchanged cannot help."""


class BackupError(QueueError):
    """A queue backup file cannot be written, read or opened (format, passphrase, tampering)."""
