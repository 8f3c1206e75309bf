"""The checkout's refusals: each maps to one clear answer for the merchant and one HTTP
status of the local API."""

from __future__ import annotations

from typing import ClassVar

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
    """Root of the checkout's refusals (each maps to one clear answer for the merchant).

    `code` is the local API's error code for the class; `reason`, where one code covers
    several causes, the stable key of this one (the API's error ``reason``). The page words
    the refusal by the two (ui string ``error_<code>_<reason>``, else ``error_<code>``) in
    the terminal's language; the message stays the English text for the register and the
    log."""

    code: ClassVar[str] = "refused"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class BusyError(CheckoutError):
    """Another transaction is running on this terminal."""

    code = "busy"


class NotFoundError(CheckoutError, LookupError):
    """No such transaction (or batch, or code, or running sale: its `reason`)."""

    code = "not_found"


class StateError(CheckoutError):
    """The transaction is not in a state that allows this (e.g. refund of a declined sale)."""

    code = "invalid_state"


class DeclinedAfterTheFactError(StateError):
    """A refund or void of an offline sale the bank declined when it was sent: no money
    came in, so there is nothing to give back (the local API answers
    409 ``declined_by_bank``)."""

    code = "declined_by_bank"


class RequestError(CheckoutError, ValueError):
    """The request itself is invalid (amount, currency)."""

    code = "invalid_request"


class AcquirerRequiredError(CheckoutError):
    """An operation at the counter that needs the acquirer could not be done, and nothing
    changed on the terminal: it has no acquirer, cannot reach it, or (closing the batch,
    settling an earlier refund) got no usable answer; the register may retry. The local
    API answers it 503. Not the client's
    :class:`terminal.acquirer.client.HostUnreachable`, which says of one request that it
    never reached the host. Its `reason`: the one given, else what its cause (an acquirer
    error) says of the link, else ``not_connected``."""

    code = "acquirer_unavailable"
