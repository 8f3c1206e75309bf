"""Tip entry at the checkout (off by default): the presets the customer is offered, in whole
percent of the sale's amount, and whether an amount of their own may be typed.

A preset's tip is the percentage of the base amount rounded half up to the minor unit, in
integer arithmetic (no float touches an amount): ``tip_for(1234, 15) == 185`` (185.1),
``tip_for(1230, 15) == 185`` (184.5 rounds up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import ConfigurationError

__all__ = ["DEFAULT_TIP_PRESETS", "MAX_TIP_PERCENT", "MAX_TIP_PRESETS", "TipSettings", "tip_for"]

#: The presets `pipos run --tips` and the configuration file's `checkout.tips` default to.
DEFAULT_TIP_PRESETS: Final = (10, 15, 20)
#: A preset above this is a typing error, not a tip.
MAX_TIP_PERCENT: Final = 100
#: As many buttons as the tip screen holds on an 800x480 screen, with "custom" and "no tip".
MAX_TIP_PRESETS: Final = 4


def tip_for(base: int, percent: int) -> int:
    """`percent` % of `base` minor units, rounded half up to the minor unit."""
    return (base * percent * 2 + 100) // 200


@dataclass(frozen=True)
class TipSettings:
    """`presets`: the percentages offered (empty: tip entry off); `custom`: whether the
    customer may type a tip amount of their own."""

    presets: tuple[int, ...] = ()
    custom: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.presets) or self.custom

    @classmethod
    def parse(cls, text: str, *, custom: bool = True, source: str = "--tips") -> TipSettings:
        """Presets as typed ("10,15,20"; "" for none: only a typed amount, if `custom`).
        Raises ConfigurationError naming `source` and what is wrong."""
        presets: list[int] = []
        for part in (p.strip() for p in text.split(",")) if text.strip() else ():
            if not (part.isascii() and part.isdigit()):
                raise ConfigurationError(
                    f"{source}: {part[:16]!r} is not a whole percentage (e.g. 10,15,20)"
                )
            value = int(part)
            if not 1 <= value <= MAX_TIP_PERCENT:
                raise ConfigurationError(
                    f"{source}: tip preset {value} % is outside 1 to {MAX_TIP_PERCENT} %"
                )
            if value in presets:
                raise ConfigurationError(f"{source}: tip preset {value} % is given twice")
            presets.append(value)
        if len(presets) > MAX_TIP_PRESETS:
            raise ConfigurationError(
                f"{source}: {len(presets)} tip presets; the tip screen holds {MAX_TIP_PRESETS}"
            )
        if not presets and not custom:
            raise ConfigurationError(
                f"{source}: no tip presets and no typed tip: nothing to offer the customer"
            )
        return cls(tuple(sorted(presets)), custom)
