"""How an acquirer error ends each kind of transaction: one table, one lookup."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from ..acquirer.client import (
    AcquirerError,
    HostFaultError,
    HostRejectedError,
    HostUnreachable,
    OutcomeUnknownError,
    ReversalPendingError,
)
from ..domain.messages import Result
from ..domain.records import Kind, State

__all__ = ["ACQUIRER_FAILURES", "LINK_FAILURES", "Failure", "failure_for", "link_failure"]


@dataclass(frozen=True, slots=True)
class Failure:
    """How an acquirer error ends a transaction."""

    state: State
    result: Result
    #: What the error says of the link to the acquirer (None: nothing).
    online: bool | None
    reason: Callable[[AcquirerError], str]
    #: A refund whose answer was lost: the bank may have paid it (settled before the next).
    unknown: bool = False


def _host_said(exc: AcquirerError) -> str:
    return (exc.message or exc.code) if isinstance(exc, HostRejectedError) else str(exc)


#: One table from acquirer errors to how each kind of transaction ends: the most specific
#: class of the error wins (its MRO is walked). A sale whose host cannot be reached at all
#: (HostUnreachable, NotEnrolledError) does not end here: it goes offline.
ACQUIRER_FAILURES: Final[Mapping[tuple[Kind, type[AcquirerError]], Failure]] = {
    (Kind.SALE, ReversalPendingError): Failure(
        State.DECLINED, Result.HOST_NO_RESPONSE, False, lambda _: "reversal pending"
    ),
    (Kind.SALE, HostRejectedError): Failure(State.DECLINED, Result.HOST_ERROR, True, _host_said),
    (Kind.SALE, AcquirerError): Failure(State.DECLINED, Result.HOST_ERROR, False, _host_said),
    (Kind.REFUND, HostUnreachable): Failure(
        State.FAILED, Result.REFUND_DECLINED, False, lambda e: f"bank unreachable: {e}"
    ),
    (Kind.REFUND, OutcomeUnknownError): Failure(
        State.FAILED,
        Result.REFUND_DECLINED,
        False,
        lambda _: "no answer from the bank",
        unknown=True,
    ),
    (Kind.REFUND, HostRejectedError): Failure(
        State.DECLINED, Result.REFUND_DECLINED, True, _host_said
    ),
    (Kind.REFUND, AcquirerError): Failure(State.FAILED, Result.REFUND_DECLINED, None, _host_said),
    (Kind.VOID, OutcomeUnknownError): Failure(
        State.FAILED, Result.VOID_DECLINED, False, lambda _: "no answer from the bank", unknown=True
    ),
    (Kind.VOID, HostUnreachable): Failure(
        State.FAILED, Result.VOID_DECLINED, False, lambda e: f"bank unreachable: {e}"
    ),
    (Kind.VOID, HostRejectedError): Failure(State.DECLINED, Result.VOID_DECLINED, True, _host_said),
    (Kind.VOID, AcquirerError): Failure(State.FAILED, Result.VOID_DECLINED, None, _host_said),
    # A pre-authorisation's authorisation ends as a sale's does (the client reverses a lost
    # answer before it returns); one whose bank cannot be reached is declined, never taken
    # offline (terminal.checkout.preauths).
    (Kind.PREAUTH, ReversalPendingError): Failure(
        State.DECLINED, Result.HOST_NO_RESPONSE, False, lambda _: "reversal pending"
    ),
    (Kind.PREAUTH, HostRejectedError): Failure(State.DECLINED, Result.HOST_ERROR, True, _host_said),
    (Kind.PREAUTH, AcquirerError): Failure(State.DECLINED, Result.HOST_ERROR, False, _host_said),
    # The hold's changes end as refunds do: a lost answer is settled under its own key
    # before the next change of the same hold; the host's refusal is a decline.
    **{
        (kind, error): failure
        for kind, declined in (
            (Kind.INCREMENT, Result.INCREMENT_DECLINED),
            (Kind.CAPTURE, Result.CAPTURE_DECLINED),
            (Kind.RELEASE, Result.RELEASE_DECLINED),
        )
        for error, failure in (
            (
                HostUnreachable,
                Failure(State.FAILED, declined, False, lambda e: f"bank unreachable: {e}"),
            ),
            (
                OutcomeUnknownError,
                Failure(
                    State.FAILED,
                    declined,
                    False,
                    lambda _: "no answer from the bank",
                    unknown=True,
                ),
            ),
            (HostRejectedError, Failure(State.DECLINED, declined, True, _host_said)),
            (AcquirerError, Failure(State.FAILED, declined, None, _host_said)),
        )
    },
}


def failure_for(kind: Kind, exc: AcquirerError) -> Failure:
    for cls in type(exc).__mro__:
        found = ACQUIRER_FAILURES.get((kind, cls))
        if found is not None:
            return found
    raise TypeError(f"no failure for {type(exc).__name__}")  # AcquirerError is in every kind


#: What a failed exchange says of the link, as a code the page words in the merchant's
#: language (ui string ``host_failure_<code>``): the request never reached the bank, it
#: reached it and got no (usable) answer, or the bank answered with a fault.
LINK_FAILURES: Final[Mapping[type[AcquirerError], str]] = {
    HostUnreachable: "unreachable",
    OutcomeUnknownError: "no_answer",
    HostFaultError: "no_answer",
    AcquirerError: "host_error",
}


def link_failure(exc: AcquirerError) -> str:
    for cls in type(exc).__mro__:
        found = LINK_FAILURES.get(cls)
        if found is not None:
            return found
    return "host_error"
