"""Wallet payment codes: the numeric one-time codes of Alipay, WeChat Pay and similar wallets.

These are not EMVCo payloads: a wallet shows a 16-24 digit code (as a QR and a barcode) whose
leading digits name the wallet. The terminal recognises the scheme from a configurable table
of prefixes and lengths and sends the code to the acquirer as a "code payment"; the wallet
provider decides. The default table reflects the wallets' published merchant integration
guides: Alipay codes start 25-30 and have 16-24 digits, WeChat Pay codes start 10-15 and have
18 digits, UnionPay's QR payment codes start 62 and have 19 digits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .errors import WalletCodeError

MIN_LENGTH: Final = 16
MAX_LENGTH: Final = 24


@dataclass(frozen=True, slots=True)
class WalletScheme:
    """One wallet: its name, the code prefixes it owns and the code lengths it issues."""

    name: str
    prefixes: tuple[str, ...]
    lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name or not self.prefixes or not self.lengths:
            raise WalletCodeError("a scheme with a name, prefixes and lengths")
        for prefix in self.prefixes:
            if not (prefix.isascii() and prefix.isdigit()):
                raise WalletCodeError(f"digit prefixes for {self.name}, got {prefix!r}")
        for length in self.lengths:
            if not MIN_LENGTH <= length <= MAX_LENGTH:
                raise WalletCodeError(
                    f"code lengths of {MIN_LENGTH}-{MAX_LENGTH} for {self.name}, got {length}"
                )

    def matches(self, code: str) -> bool:
        return len(code) in self.lengths and code.startswith(self.prefixes)


def _range(lo: int, hi: int) -> tuple[str, ...]:
    return tuple(str(n) for n in range(lo, hi + 1))


@dataclass(frozen=True, slots=True)
class WalletCode:
    """A recognised payment code. `masked` is safe for logs and receipts."""

    scheme: str
    code: str

    @property
    def masked(self) -> str:
        """A one-time code is a bearer credential until used: show its last four only."""
        return "*" * (len(self.code) - 4) + self.code[-4:]


class WalletCodeTable:
    """The configured schemes; the longest matching prefix wins when tables overlap."""

    def __init__(self, schemes: Iterable[WalletScheme]) -> None:
        self.schemes: tuple[WalletScheme, ...] = tuple(schemes)
        names = [s.name for s in self.schemes]
        if len(set(names)) != len(names):
            raise WalletCodeError("each wallet scheme once in the table")

    @classmethod
    def default(cls) -> WalletCodeTable:
        return cls(DEFAULT_SCHEMES)

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, Any]]) -> WalletCodeTable:
        """From parameter data: [{"name": "alipay", "prefixes": ["25", ...], "lengths": [18]}]."""
        schemes = []
        for index, entry in enumerate(entries):
            try:
                schemes.append(
                    WalletScheme(
                        str(entry["name"]),
                        tuple(str(p) for p in entry["prefixes"]),
                        tuple(int(n) for n in entry["lengths"]),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise WalletCodeError(
                    f"entry {index}: name, prefixes and lengths ({exc})", reason="unsupported"
                ) from exc
        return cls(schemes)

    def recognise(self, text: str) -> WalletCode:
        """The wallet that issued `text`, or a WalletCodeError saying why none did."""
        code = text.strip()
        if not code:
            raise WalletCodeError("a payment code, got nothing", reason="truncated")
        if not (code.isascii() and code.isdigit()):
            raise WalletCodeError("digits only (the code is damaged)", reason="corrupt")
        candidates = [s for s in self.schemes if code.startswith(s.prefixes)]
        if not candidates:
            raise WalletCodeError(
                f"a code starting with a configured wallet prefix, got {code[:2]}...",
                reason="unsupported",
            )
        for scheme in sorted(
            candidates, key=lambda s: -max(len(p) for p in s.prefixes if code.startswith(p))
        ):
            if scheme.matches(code):
                return WalletCode(scheme.name, code)
        lengths = sorted({n for s in candidates for n in s.lengths})
        reason = "truncated" if len(code) < min(lengths) else "corrupt"
        contiguous = lengths == list(range(lengths[0], lengths[-1] + 1))
        wanted = (
            f"{lengths[0]}-{lengths[-1]}"
            if contiguous and len(lengths) > 1
            else " or ".join(map(str, lengths))
        )
        raise WalletCodeError(
            f"{wanted} digits for {candidates[0].name}, got {len(code)}",
            reason=reason,
        )

    def is_candidate(self, text: str) -> bool:
        """Digits (or digits with a couple of misread characters) of about a wallet code's
        length: worth trying as a wallet code, so a damaged one is reported as damaged."""
        code = text.strip()
        digits = sum(c.isascii() and c.isdigit() for c in code)
        return 8 <= len(code) <= MAX_LENGTH + 2 and digits >= len(code) - 2


DEFAULT_SCHEMES: Final = (
    WalletScheme("alipay", _range(25, 30), tuple(range(16, 25))),
    WalletScheme("wechatpay", _range(10, 15), (18,)),
    WalletScheme("unionpay", ("62",), (19,)),
)
