"""The Primary Account Number as the rest of the code may show it.

ISO/IEC 7812-1 defines the PAN and its check digit (Annex B, the Luhn formula); PCI DSS 3.3
allows at most the first six and last four digits to be displayed. Every place that shows a
PAN masks it here.
"""

from __future__ import annotations


def luhn_valid(digits: str) -> bool:
    """True when `digits` (decimal digits only) pass the ISO/IEC 7812-1 Annex B check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def mask_pan(digits: str) -> str:
    """First six and last four digits, the rest as '*'; a number too short to keep any
    digits private is masked entirely."""
    if len(digits) < 10:
        return "*" * len(digits)
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]
