"""A simulated code scanner at the counter, and the customer's simulated phone.

`pipos run` and the checkout page use :class:`SimulatedScanner` in place of a serial
scanner: the page's "simulated phone" buttons (or a test, or the demo) put a code in front of
it with :meth:`SimulatedScanner.scan`; the checkout, waiting for a card or a code, then reads
it through the ordinary :class:`drivers.scanner.CodeScanner` interface.

:class:`SimulatedPhone` is the phone on the demo path: a :class:`simulator.wallet.PhoneWallet`
that registers the codes it issues with the simulated acquirer (loopback only), shows them to
the simulated scanner, and pays merchant-presented codes shown on the checkout page.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from drivers.errors import CancelledError, ReaderTimeoutError
from drivers.scanner import CodeScanner, ScanRejectedError

from ..domain.errors import TerminalError, simulator_missing, simulator_not_installed

__all__ = ["PHONE_CODES", "SimulatedDeviceError", "SimulatedPhone", "SimulatedScanner"]

_POLL: Final = 0.02  # seconds between looks at the cancel flag while nothing is scanned
MAX_CODE: Final = 4096  # the serial driver's default cap, so both refuse the same


class SimulatedDeviceError(TerminalError):
    """The simulated phone could not make or pay a code (e.g. the host is not loopback)."""


class SimulatedScanner:
    """Holds at most one scanned code until a scanner picks it up (a newer scan replaces it,
    as a real scanner's next read would)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._code: str | None = None
        self.scanned_at: float | None = None  # monotonic time of the last scan (bench)

    def scan(self, code: str) -> None:
        """Put `code` in front of the scanner (the driver's own checks: not empty, not too
        long, no control characters)."""
        if not code:
            raise ScanRejectedError("empty code")
        if len(code.encode("utf-8")) > MAX_CODE:
            raise ScanRejectedError(f"code too long: the limit is {MAX_CODE} bytes")
        bad = next((i for i, ch in enumerate(code) if ord(ch) < 0x20 and ch != "\t"), None)
        if bad is not None:
            raise ScanRejectedError(f"control character 0x{ord(code[bad]):02X} at offset {bad}")
        with self._cond:
            self._code = code
            self.scanned_at = time.monotonic()
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._code = None

    def _take(self, timeout: float | None, cancel: threading.Event | None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._code is None:
                if cancel is not None and cancel.is_set():
                    raise CancelledError("waiting for a code was cancelled")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ReaderTimeoutError(f"no code scanned within {timeout} s")
                self._cond.wait(_POLL if remaining is None else min(_POLL, remaining))
            code, self._code = self._code, None
            return code

    def scanner(self) -> CodeScanner:
        """A scanner for one transaction."""
        return _SimScanner(self)


class _SimScanner(CodeScanner):
    def __init__(self, source: SimulatedScanner) -> None:
        self.url = "simscan:"
        self._source = source

    def wait_for_code(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> str:
        return self._source._take(timeout, cancel)

    def close(self) -> None:
        pass


#: What the page's simulated phone can show: name -> (label, how the wallet makes it).
PHONE_CODES: Final = {
    "alipay": "Alipay code",
    "wechatpay": "WeChat Pay code",
    "confirm": "Wallet code, customer confirms on the phone",
    "cpm": "EMVCo QR (card in wallet)",
    "expired": "Expired wallet code",
    "reused": "Screenshot of the last code",
    "corrupt": "Damaged code",
}


class SimulatedPhone:
    """The customer's phone for the demo and the page's simulator panel."""

    def __init__(
        self,
        host_url: str,
        scanner: SimulatedScanner,
        *,
        admin_token: str | None = None,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = secrets.token_bytes,
        confirm_delay: float = 3.0,
    ) -> None:
        # The simulator only on the demo path (ARCHITECTURE.md: terminal/ reaches the
        # simulator through URLs otherwise); imported here so a production terminal never
        # loads it, and may not have it (the `sim` extra).
        try:
            from simulator.wallet import PhoneWallet, WalletAccount, http_registrar
        except ImportError as exc:
            if not simulator_missing(exc):
                raise
            raise SimulatedDeviceError(simulator_not_installed("the simulated phone")) from exc

        self.host_url = host_url
        self._scanner = scanner
        self.confirm_delay = confirm_delay
        self.wallet = PhoneWallet(
            # A tokenised card the simulated host knows no issuer key for: its cryptogram is
            # then not checked (a test that wants the check sets the key with the host admin).
            WalletAccount("4761739001010119", "3012", bytes(16)),
            random=random,
            clock=clock,
            register=http_registrar(host_url, admin_token),
        )

    def make_code(self, kind: str) -> str:
        """A code of `kind` (a key of :data:`PHONE_CODES`), registered with the host."""
        wallet = self.wallet
        try:
            if kind in ("alipay", "wechatpay"):
                return wallet.wallet_code(kind)
            if kind == "confirm":
                return wallet.wallet_code("wechatpay", confirm_delay=self.confirm_delay)
            if kind == "cpm":
                return wallet.consumer_code()
            if kind == "expired":
                return wallet.wallet_code("alipay", expired=True)
            if kind == "reused":
                return wallet.reused_code() if wallet.issued else wallet.wallet_code("alipay")
            if kind == "corrupt":
                return wallet.corrupt(wallet.consumer_code())
        except (OSError, ValueError) as exc:  # urllib's errors are OSError subclasses
            raise SimulatedDeviceError(
                f"the simulated wallet could not make a code: {exc}"
            ) from exc
        raise SimulatedDeviceError(f"unknown phone code {kind!r}: one of {', '.join(PHONE_CODES)}")

    def show(self, kind: str) -> str:
        """Make a code and hold the phone to the scanner; returns the code."""
        code = self.make_code(kind)
        self._scanner.scan(code)
        return code

    def pay_merchant_code(self, payload: str, *, result: str = "paid") -> dict[str, Any]:
        """The phone scanned the terminal's merchant-presented code and the user paid."""
        try:
            from simulator.wallet import pay_merchant_code
        except ImportError as exc:
            if not simulator_missing(exc):
                raise
            raise SimulatedDeviceError(simulator_not_installed("the simulated phone")) from exc
        try:
            return pay_merchant_code(self.host_url, payload, result=result)
        except (OSError, ValueError) as exc:
            raise SimulatedDeviceError(f"the simulated wallet could not pay: {exc}") from exc
