"""Checkout orchestration: sale, refund, void and end of day as one flow.

A sale goes: wait for a card (cancellable) -> run the kernel -> go online when the card asks
for it (ARQC) -> if the host cannot be reached, approve offline within the offline limits
(store and forward: the cryptogram is kept in the offline queue and sent when the network is
back) -> sign -> record durably -> publish the result. Every state change is committed to the
journal before it is published, so what the merchant sees is always on disk first.

With a code scanner configured, the sale waits for whichever comes first: a card on the
reader or a code on the scanner (a scanned code pays through terminal.checkout.qr_payment, over the
acquirer client's own signed connection). A "merchant_qr" sale instead shows the terminal's
dynamic EMVCo merchant-presented code and waits for the wallet provider's payment
notification. Either way the outcome is journaled, evented and receipted like a card's.

Rules the flow keeps:

* One transaction at a time: a second request while one runs raises :class:`BusyError`.
* A lost host response is never an approval: the acquirer client reverses it before it
  returns; a reversal the host does not acknowledge is kept in the journal and retried.
* A card approved (or sent to store and forward) that the offline queue refuses is declined,
  with the queue's reason, never silently accepted.
* A code payment's order id is journaled before the request leaves; a cancel, a timeout, a
  lost answer or a crash cancels the order with the acquirer (reversed if it was paid), so
  no money is taken without a receipt. Codes are online-only unless the parameters allow a
  scheme offline: otherwise the merchant is told to take a card instead.
* The clock and the random source are injected; card data is never logged."""

from __future__ import annotations

from .preauths import Preauths
from .reconciliation import Reconciliation
from .sale import Sales

__all__ = ["Checkout"]


class Checkout(Preauths, Sales, Reconciliation):
    """The one place that runs payments on this terminal.

    `reader_factory` opens the card reader for one transaction (closed afterwards, also on
    cancel). `acquirer` is None for a terminal that is not enrolled: every online request then
    follows the host-unreachable path.
    """
