"""The durable store of payments, its limits and the forwarder that syncs it.

queue = OfflineQueue.open(path, data_key)          # integrity check, migrations, WAL
decision = queue.check(limits, amount=..., currency=..., card_approves_offline=True)
result = queue.enqueue(payment, limits=limits)     # durable (fsynced) when it returns
Forwarder(queue, uploader).sync(progress=...)      # batches, backoff, crash-safe
"""

from .backup import export_queue, import_queue, read_backup
from .errors import (
    BackupError,
    BatchRejectedError,
    CardDataError,
    InvalidPaymentError,
    PaymentConflictError,
    QueueBusyError,
    QueueCorruptError,
    QueueError,
    QueueSchemaError,
    UnknownPaymentError,
    UplinkError,
    UplinkUnavailableError,
)
from .forwarder import Backoff, BatchUploader, Forwarder, Progress, SyncReport
from .limits import (
    AmountFormatter,
    Exposure,
    OfflineDecision,
    OfflineLimits,
    RefusalReason,
    check_offline,
    plain_formatter,
)
from .model import (
    Batch,
    BatchItem,
    CardData,
    ItemOutcome,
    ItemResult,
    OfflinePayment,
    QueuedPayment,
    QueueStatus,
    State,
    StateSummary,
)
from .store import SCHEMA_VERSION, EnqueueResult, ImportReport, OfflineQueue

__all__ = [
    "SCHEMA_VERSION",
    "AmountFormatter",
    "Backoff",
    "BackupError",
    "Batch",
    "BatchItem",
    "BatchRejectedError",
    "BatchUploader",
    "CardData",
    "CardDataError",
    "EnqueueResult",
    "Exposure",
    "Forwarder",
    "ImportReport",
    "InvalidPaymentError",
    "ItemOutcome",
    "ItemResult",
    "OfflineDecision",
    "OfflineLimits",
    "OfflinePayment",
    "OfflineQueue",
    "PaymentConflictError",
    "Progress",
    "QueueBusyError",
    "QueueCorruptError",
    "QueueError",
    "QueueSchemaError",
    "QueueStatus",
    "QueuedPayment",
    "RefusalReason",
    "State",
    "StateSummary",
    "SyncReport",
    "UnknownPaymentError",
    "UplinkError",
    "UplinkUnavailableError",
    "check_offline",
    "export_queue",
    "import_queue",
    "plain_formatter",
    "read_backup",
]
