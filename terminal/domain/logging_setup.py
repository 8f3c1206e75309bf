"""Logging, set up once, with card data redacted from every record.

PCI DSS 3.4 forbids a full PAN in logs and 3.2 forbids track 2 data anywhere after
authorisation. The filter is attached to the handlers (not only to loggers), so records
from every library logger pass through it as well.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Final, TextIO

from emv.pan import luhn_valid, mask_pan

# A PAN is 12-19 digits, possibly written with spaces or dashes between groups; as hex
# in an APDU trace it appears as the same digits, possibly followed by an F pad nibble.
_PAN_CANDIDATE: Final = re.compile(r"(?<![0-9A-Fa-f])(?:\d[ -]?){11,18}\d(?![0-9])")
# Track 2 equivalent data (tag 57): PAN, separator 'D' (or '=' in magstripe form),
# expiry YYMM, service code and discretionary data, optionally padded with F.
_TRACK2: Final = re.compile(r"(?<![0-9A-Fa-f])\d{12,19}[Dd=]\d{4,}[0-9A-Fa-f]*")

REDACTED_TRACK2: Final = "[TRACK2 REDACTED]"


def _mask_pan_match(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = "".join(c for c in text if c.isdigit())
    # Every 12-19 digit run that passes Luhn is treated as a PAN. Long numbers that are not
    # PANs (amounts, timestamps) rarely pass Luhn and are left readable; if one does, it is
    # masked, which errs on the side of card data safety.
    if 12 <= len(digits) <= 19 and luhn_valid(digits):
        return mask_pan(digits)
    return text


# A hex dump (an APDU trace): a long run of hex digits with at least one letter in it.
_HEX_TOKEN: Final = re.compile(r"[0-9A-Fa-f]*[A-Fa-f][0-9A-Fa-f]*")
_MIN_HEX_TOKEN = 16


def _mask_pan_in_hex(match: re.Match[str]) -> str:
    """Inside a hex dump a PAN is BCD at a byte boundary (tag 5A, 57), so bordered by
    other hex digits. Every byte-aligned 13-19 digit window that starts like a card
    number (ISO/IEC 7812 major industry identifier 2-6) and passes Luhn is masked."""
    token = match.group(0)
    if len(token) < _MIN_HEX_TOKEN:
        return token
    chars = list(token)
    for start in range(0, len(token) - 12, 2):
        if token[start] not in "23456":
            continue
        for length in range(19, 12, -1):
            window = token[start : start + length]
            if len(window) == length and window.isdigit() and luhn_valid(window):
                for i in range(start + 6, start + length - 4):
                    chars[i] = "*"
                # Track 2 equivalent data in BCD: separator 'D', then expiry, service code
                # and discretionary data (EMV Book 3 Annex A, tag 57) - all of it goes.
                end = start + length
                if end < len(token) and token[end] in "Dd":
                    tail = end + 1
                    while tail < len(token) and token[tail].isdigit():
                        chars[tail] = "*"
                        tail += 1
                break
    return "".join(chars)


def redact(text: str) -> str:
    """Remove track 2 equivalent data and mask every PAN-shaped, Luhn-valid digit run."""
    text = _TRACK2.sub(REDACTED_TRACK2, text)
    text = _HEX_TOKEN.sub(_mask_pan_in_hex, text)
    return _PAN_CANDIDATE.sub(_mask_pan_match, text)


class CardDataRedactingFilter(logging.Filter):
    """Rewrites each record's final message with card data removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[0] is not None:
            # Exception text is formatted later by the handler; render and redact it now.
            cleaned += "\n" + redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        if record.stack_info:
            cleaned += "\n" + redact(record.stack_info)
            record.stack_info = None
        record.msg = cleaned
        record.args = None
        return True


_configured_handler: logging.Handler | None = None


def configure_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Install one redacting handler on the root logger. Calling again replaces it."""
    global _configured_handler
    root = logging.getLogger()
    if _configured_handler is not None:
        root.removeHandler(_configured_handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(CardDataRedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    _configured_handler = handler
