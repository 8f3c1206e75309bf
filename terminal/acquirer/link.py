"""The acquirer link: what the checkout and the offline queue's forwarder ask of an
acquirer, whichever protocol carries it (ARCHITECTURE.md, `acquirer/`).

Two implementations: :class:`terminal.acquirer.client.AcquirerClient`, the signed pipos
protocol (docs/protocol.md), and :class:`terminal.acquirer.iso8583.link.Iso8583Link`, ISO
8583 (docs/iso8583.md). Both take and give the same values (defined in
terminal.acquirer.client) and raise the same errors, each meaning the same thing for the
money:

* ``HostUnreachable``: nothing reached the host; retry, or take the sale offline;
* ``OutcomeUnknownError``: the host may have acted; retry under the same idempotency key
  (an authorisation is reversed by the link before it returns, or
  ``ReversalPendingError`` carries the key whose reversal the caller keeps retrying);
* ``HostRejectedError``: the host answered, and refused; nothing was done;
* ``HostFaultError``: the host failed a request that moves no money; retry later;
* ``NotEnrolledError``: the terminal has no identity on this link yet.

Enrolment, parameters, key rotation and code payments stay on the pipos protocol to the
terminal-management host; they are not part of the link.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .client import (
    Authorisation,
    AuthorisationRequest,
    BatchUploadResult,
    BrandTotals,
    Cancellation,
    HoldChange,
    OfflineItem,
    RefundRequest,
    RefundResult,
    Settlement,
    TransactionStatus,
)

__all__ = ["AcquirerLink"]


class AcquirerLink(Protocol):
    """What the checkout (terminal.checkout) and the forwarder link
    (terminal.acquirer.uplink) call; the signatures are AcquirerClient's."""

    def new_idempotency_key(self, kind: str) -> str:
        """A fresh key for a money request of `kind` ("auth", "refund", ...)."""
        ...

    def authorise(
        self, request: AuthorisationRequest, *, idempotency_key: str | None = None
    ) -> Authorisation:
        """Online authorisation (a sale, or a hold with kind "preauth"); a lost answer is
        reversed before this returns."""
        ...

    def reverse(
        self,
        *,
        original_idempotency_key: str | None = None,
        original_ref: str | None = None,
        reason: str = "merchant",
    ) -> Cancellation:
        """Undo an authorisation, named by its idempotency key or the host's reference."""
        ...

    def void(self, transaction_ref: str, *, idempotency_key: str | None = None) -> Cancellation:
        """Cancel an approved sale not yet settled."""
        ...

    def refund(
        self, request: RefundRequest, *, idempotency_key: str | None = None
    ) -> RefundResult: ...

    def increment_hold(
        self, preauth_ref: str, amount: int, currency: int, *, idempotency_key: str
    ) -> HoldChange: ...

    def capture_hold(
        self, preauth_ref: str, amount: int, currency: int, *, idempotency_key: str
    ) -> HoldChange: ...

    def release_hold(self, preauth_ref: str, *, idempotency_key: str) -> HoldChange: ...

    def upload_offline(
        self, items: Sequence[OfflineItem], *, idempotency_key: str | None = None
    ) -> BatchUploadResult:
        """Payments approved offline, one result per item, in order."""
        ...

    def status(
        self, *, transaction_ref: str | None = None, idempotency_key: str | None = None
    ) -> TransactionStatus:
        """What the host holds of one transaction (the reconciliation report's lookup)."""
        ...

    def settle(
        self,
        *,
        terminal_totals: Sequence[BrandTotals] | None = None,
        idempotency_key: str | None = None,
    ) -> Settlement:
        """Close the batch with the host."""
        ...

    def whoami(self) -> dict[str, Any]:
        """A request that moves no money: whether the host answers (the checkout's probe)."""
        ...
