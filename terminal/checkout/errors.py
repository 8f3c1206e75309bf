"""The checkout's refusals: each maps to one clear answer for the merchant and one HTTP
status of the local API."""

from __future__ import annotations

from ..domain.errors import TerminalError

__all__ = [
    "AcquirerRequiredError",
    "BusyError",
    "CheckoutError",
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


class RequestError(CheckoutError, ValueError):
    """The request itself is invalid (amount, currency)."""


class AcquirerRequiredError(CheckoutError):
    """Refused before anything was sent: the operation needs the acquirer, and the terminal
    is not connected to one or cannot reach it now (the acquirer client's
    :class:`terminal.acquirer.client.HostUnreachable` says the same of one request)."""
