"""The exception tree of `emv.qr`: every defect in a scanned or built QR payload.

Each error carries where (field id or tag, character or byte offset) and what was expected,
so a merchant screen can say "corrupt code" and a log can say exactly why.
"""

from __future__ import annotations

from ..errors import EmvError


class QrError(EmvError):
    """Root of the `emv.qr` exceptions."""

    #: A short, stable machine reason ("corrupt", "truncated", "unsupported", ...).
    reason: str = "corrupt"


class MpmError(QrError):
    """A Merchant-Presented Mode payload that is malformed or fails its CRC."""

    def __init__(
        self, expected: str, *, field: str | None = None, offset: int = 0, reason: str = "corrupt"
    ) -> None:
        self.field = field
        self.offset = offset
        self.expected = expected
        self.reason = reason
        where = f"at offset {offset}"
        if field is not None:
            where = f"field {field} {where}"
        super().__init__(f"merchant-presented QR {where}: expected {expected}")


class CpmError(QrError):
    """A Consumer-Presented Mode payload that is malformed or misses mandatory data."""

    def __init__(
        self, expected: str, *, tag: str | None = None, offset: int = 0, reason: str = "corrupt"
    ) -> None:
        self.tag = tag
        self.offset = offset
        self.expected = expected
        self.reason = reason
        where = f"at byte {offset}"
        if tag is not None:
            where = f"tag {tag} {where}"
        super().__init__(f"consumer-presented QR {where}: expected {expected}")


class WalletCodeError(QrError):
    """A wallet payment code that no configured scheme accepts, or a bad scheme table."""

    def __init__(self, expected: str, *, reason: str = "corrupt") -> None:
        self.expected = expected
        self.reason = reason
        super().__init__(f"wallet payment code: expected {expected}")
