"""The checkout's refusals: each maps to one clear answer for the merchant and one HTTP
status of the local API."""

from __future__ import annotations

from ..domain.errors import TerminalError

__all__ = [
    "AcquirerRequiredError",
    "BusyError",
    "CheckoutError",
    "DeclinedAfterTheFactError",
    "NotFoundError",
    "RequestError",
    "StateError",
]


class CheckoutError(TerminalError):
    """Root of the checkout's refusals (each maps to one clear answer for the merchant)."""


class BusyError(CheckoutError):
    """Another transaction is running on this terminal."""


class NotFoundError(CheckoutError, LookupError):
    """No such transaction."""


class StateError(CheckoutError):
    """The transaction is not in a state that allows this (e.g. refund of a declined sale)."""


class DeclinedAfterTheFactError(StateError):
    """A refund or void of an offline sale the bank declined when it was sent: no money
    came in, so there is nothing to give back (the local API answers
    409 ``declined_by_bank``)."""


class RequestError(CheckoutError, ValueError):
    """The request itself is invalid (amount, currency)."""


class AcquirerRequiredError(CheckoutError):
    """An operation at the counter that needs the acquirer could not be done, and nothing
    changed on the terminal: it has no acquirer, cannot reach it, or (closing the batch,
    settling an earlier refund) got no usable answer; the register may retry. The local
    API answers it 503. Not the client's
    :class:`terminal.acquirer.client.HostUnreachable`, which says of one request that it
    never reached the host."""
