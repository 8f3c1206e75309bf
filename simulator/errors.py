"""The `simulator` package's exception root."""

from __future__ import annotations

from emv.errors import PiposError


class SimulatorError(PiposError):
    """Root of the exceptions raised by the simulator (virtual cards, wallets, host)."""
