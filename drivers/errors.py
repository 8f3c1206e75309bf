"""The driver exception tree. Every pyscard, nfcpy or pyserial exception is translated into
one of these at the boundary (``raise CardRemovedError(...) from exc``), so nothing above the
drivers ever sees a hardware library's exception.

The root comes from :mod:`emv.errors` only because that is where the project's single base
class lives; the drivers use nothing else of `emv`.
"""

from __future__ import annotations

from typing import Final

from emv.errors import PiposError

#: How to start pcscd: the one fix every message about a stopped pcscd gives (the driver's
#: errors, `pipos readers`, `pipos doctor`). The socket unit starts the daemon on demand and
#: at every boot (Debian's pcscd package ships it).
PCSCD_FIX: Final = "sudo systemctl enable --now pcscd.socket (package: pcscd)"
#: A pcscd that runs but fails to list its readers: started afresh.
PCSCD_RESTART_FIX: Final = "sudo systemctl restart pcscd"


class DriverError(PiposError):
    """Root of the driver exceptions."""


class DeviceUnavailableError(DriverError):
    """The device could not be opened. The message says what was tried and how to fix it."""

    def __init__(self, url: str, tried: str, fix: str) -> None:
        self.url = url
        self.tried = tried
        self.fix = fix
        super().__init__(f"cannot open {url!r}: {tried}. Fix: {fix}")


class UnknownSchemeError(DeviceUnavailableError):
    """The URL's scheme names no driver."""


class ReaderGoneError(DriverError):
    """The reader was unplugged or its daemon stopped."""


class CardRemovedError(DriverError):
    """The card left the field (before or during a command)."""


class ReaderTimeoutError(DriverError):
    """No card (or no code) arrived within the time allowed."""


class CancelledError(DriverError):
    """Waiting was cancelled by the caller (the register or the checkout page)."""


class ReaderProtocolError(DriverError):
    """The reader or card broke the transport protocol (framing, chaining, ATS)."""


class TransportLoopError(ReaderProtocolError):
    """The card kept one command's transport going past the driver's bound: '61xx' (more
    data) after every GET RESPONSE, '6Cxx' (wrong length) after the resend, S(WTX) (more
    time) or chained blocks without end, or longer than the time allowed per command. The
    card is faulty or hostile; the message says which bound it crossed."""
