"""Which new PINs are too easy to guess: one rule for the merchant PIN and the technician PIN.

A guessed PIN needs no brute force at all, so the lock-out (terminal.security.lockout) only
helps if the PIN is not among the first few an attacker tries. Refused, for digit PINs:

* sequences: each digit one above (or below) the last, 9 wrapping to 0: 1234, 7890, 654321;
* repeats: one digit or one block repeated (1111, 1212, 123123) and doubled digits (1122,
  112233);
* common PINs: the most frequent ones in the published analyses of leaked PINs, the
  DataGenetics analysis of 3.4 million 4-digit PINs (N. Berry, "PIN analysis", 2012; 1234,
  1111, 0000, 1212, 7777, 1004, 2000, 4444, 2222, 6969 lead) and Wang et al., "Understanding
  Human-chosen PINs: Characteristics, Distribution and Security" (ASIA CCS 2017; 6-digit
  PINs, with keypad shapes such as 147258 and 159753 and the Chinese 520520 and 1314), plus
  the keypad column 2580 and its reverse;
* a 4-digit year, 1900 to 2099 (birth years are the next guess after the list).

A technician pass-phrase (not all digits) is refused when it is one character repeated or one
of the most common passwords. Only ASCII digits count as digits (a full-width or Arabic-Indic
digit is not typed on the terminal's keypad).

The reasons are keys of terminal.domain.messages.pin_policy_text; :func:`refusal` says them in
English and Chinese at once, for the technician typing the PIN.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Final

from ..domain.messages import pin_policy_text

__all__ = [
    "MERCHANT_MAX_DIGITS",
    "MERCHANT_MIN_DIGITS",
    "TECHNICIAN_MIN_LENGTH",
    "digit_pin_weakness",
    "merchant_pin_problem",
    "refusal",
    "technician_secret_problem",
]

MERCHANT_MIN_DIGITS: Final = 4
MERCHANT_MAX_DIGITS: Final = 12
TECHNICIAN_MIN_LENGTH: Final = 6

_DIGITS = re.compile(r"[0-9]+")

#: The most frequent PINs of the analyses named in the module docstring that the sequence,
#: repeat and year rules do not already refuse.
COMMON_PINS: Final = frozenset(
    {
        # 4 digits (DataGenetics' top entries, the keypad column and Chinese number puns)
        "1004",
        "2580",
        "0852",
        "1470",
        "0741",
        "3690",
        "0963",
        "5683",  # LOVE on a phone keypad
        "1314",  # "一生一世"
        "0520",  # "我爱你"
        "5200",
        # 6 digits (Wang et al. 2017: the most frequent ones that are not sequences/repeats)
        "123321",
        "147258",
        "258369",
        "147369",
        "159753",
        "753159",
        "951753",
        "789456",
        "456123",
        "741852",
        "852963",
        "963852",
        "123654",
        "987456",
        "102030",
        "520131",
        "520520",
        "131420",
        "5201314",
        "1314520",
        "100200",
        "142536",
    }
)

COMMON_PHRASES: Final = frozenset(
    {
        "password",
        "password1",
        "passw0rd",
        "qwerty",
        "qwerty123",
        "qwertyuiop",
        "azerty",
        "asdfgh",
        "zxcvbn",
        "abcdef",
        "abcdefg",
        "abcdefgh",
        "abc123",
        "abcd1234",
        "123abc",
        "1q2w3e",
        "1q2w3e4r",
        "qwe123",
        "iloveyou",
        "woaini",
        "admin123",
        "letmein",
        "welcome",
        "changeme",
        "technician",
        "pipos123",
    }
)


def _is_sequence(pin: str) -> bool:
    steps = {(int(b) - int(a)) % 10 for a, b in pairwise(pin)}
    return steps in ({1}, {9})


def _is_repeated(pin: str) -> bool:
    n = len(pin)
    if any(n % size == 0 and pin == pin[:size] * (n // size) for size in range(1, n // 2 + 1)):
        return True
    # Doubled digits: 1122, 112233, 00112233.
    return n >= 4 and n % 2 == 0 and all(pin[i] == pin[i + 1] for i in range(0, n, 2))


def digit_pin_weakness(pin: str) -> str | None:
    """Why the all-digit `pin` is too easy to guess ("sequence", "repeated", "common",
    "year"), or None."""
    if _is_repeated(pin):
        return "repeated"
    if _is_sequence(pin):
        return "sequence"
    if pin in COMMON_PINS:
        return "common"
    if len(pin) == 4 and pin[:2] in ("19", "20"):
        return "year"
    return None


def merchant_pin_problem(pin: str) -> tuple[str, dict[str, int]] | None:
    """Why `pin` cannot be the merchant PIN (a reason key and its fields), or None."""
    if not (_DIGITS.fullmatch(pin) and MERCHANT_MIN_DIGITS <= len(pin) <= MERCHANT_MAX_DIGITS):
        return "merchant_format", {"min": MERCHANT_MIN_DIGITS, "max": MERCHANT_MAX_DIGITS}
    weakness = digit_pin_weakness(pin)
    return (weakness, {}) if weakness else None


def technician_secret_problem(secret: str) -> tuple[str, dict[str, int]] | None:
    """Why `secret` cannot be the technician PIN or pass-phrase, or None."""
    if len(secret) < TECHNICIAN_MIN_LENGTH:
        return "too_short", {"min": TECHNICIAN_MIN_LENGTH}
    if _DIGITS.fullmatch(secret):
        weakness = digit_pin_weakness(secret)
        return (weakness, {}) if weakness else None
    if len(set(secret)) == 1:
        return "repeated", {}
    if secret.lower() in COMMON_PHRASES:
        return "common_phrase", {}
    return None


def refusal(subject: str, reason: str, fields: dict[str, int]) -> str:
    """The refusal in English and Chinese: "merchant PIN: ... / 商户密码：...".

    `subject` is "merchant" or "technician"."""
    en = f"{pin_policy_text('subject_' + subject, 'en')}: {pin_policy_text(reason, 'en', **fields)}"
    zh = f"{pin_policy_text('subject_' + subject, 'zh')}：{pin_policy_text(reason, 'zh', **fields)}"
    return f"{en} / {zh}"
