"""The project's exception root and the `emv` package's exception tree.

Every package roots its own exceptions in :class:`PiposError`, so a caller can catch
everything pipos raises with one clause and nothing else. The root lives here because
`emv` is the one package every other package may import; it carries no EMV logic.
"""

from __future__ import annotations


class PiposError(Exception):
    """Root of every exception raised by pipos code."""


class EmvError(PiposError):
    """Root of the `emv` package's exceptions."""
