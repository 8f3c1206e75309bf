"""The `terminal` package's exception tree."""

from __future__ import annotations

from emv.errors import PiposError


class TerminalError(PiposError):
    """Root of the `terminal` package's exceptions."""


class ConfigurationError(TerminalError):
    """A parameter or configuration file is missing or invalid."""
