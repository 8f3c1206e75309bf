"""Terminal Verification Results and Transaction Status Information, bit by bit.

TVR (tag 95) is EMV Book 3 Annex C5, Table 46 (byte 5 b4-b1: Book C-2 relay resistance);
TSI (tag 9B) is Book 3 Annex C6, Table 47. Bits are named so a kernel step reads as the
specification does (``tvr.set("expired_application")``), and so the names returned by
:attr:`emv.oda.OdaResult.tvr_bits` apply directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import ClassVar, Final

__all__ = ["TSI_BITS", "TVR_BITS", "Tsi", "Tvr"]

#: name -> (byte index from 0, mask), EMV Book 3 Annex C5, Table 46.
TVR_BITS: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        "oda_not_performed": (0, 0x80),
        "sda_failed": (0, 0x40),
        "icc_data_missing": (0, 0x20),
        "card_on_exception_file": (0, 0x10),
        "dda_failed": (0, 0x08),
        "cda_failed": (0, 0x04),
        "sda_selected": (0, 0x02),
        "different_application_versions": (1, 0x80),
        "expired_application": (1, 0x40),
        "application_not_yet_effective": (1, 0x20),
        "service_not_allowed": (1, 0x10),
        "new_card": (1, 0x08),
        "cardholder_verification_not_successful": (2, 0x80),
        "unrecognised_cvm": (2, 0x40),
        "pin_try_limit_exceeded": (2, 0x20),
        "pin_pad_not_present": (2, 0x10),
        "pin_not_entered": (2, 0x08),
        "online_pin_entered": (2, 0x04),
        "floor_limit_exceeded": (3, 0x80),
        "lower_consecutive_offline_limit_exceeded": (3, 0x40),
        "upper_consecutive_offline_limit_exceeded": (3, 0x20),
        "selected_randomly_for_online": (3, 0x10),
        "merchant_forced_online": (3, 0x08),
        "default_tdol_used": (4, 0x80),
        "issuer_authentication_failed": (4, 0x40),
        "script_failed_before_final_generate_ac": (4, 0x20),
        "script_failed_after_final_generate_ac": (4, 0x10),
        "relay_resistance_threshold_exceeded": (4, 0x08),
        "relay_resistance_time_limits_exceeded": (4, 0x04),
        # Byte 5 b2-b1 "Relay resistance performed" (C-2 v2.6+): '00' not supported, '01'
        # not performed, '10' performed.
        "relay_resistance_not_performed": (4, 0x01),
        "relay_resistance_performed": (4, 0x02),
    }
)

#: name -> (byte index, mask), EMV Book 3 Annex C6, Table 47.
TSI_BITS: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        "oda_performed": (0, 0x80),
        "cardholder_verification_performed": (0, 0x40),
        "card_risk_management_performed": (0, 0x20),
        "issuer_authentication_performed": (0, 0x10),
        "terminal_risk_management_performed": (0, 0x08),
        "script_processing_performed": (0, 0x04),
    }
)


class _Bits:
    """A fixed-length bit map whose bits are addressed by name."""

    TABLE: ClassVar[Mapping[str, tuple[int, int]]]
    LENGTH: ClassVar[int]

    def __init__(self, value: bytes | None = None) -> None:
        raw = bytes(self.LENGTH) if value is None else bytes(value)
        if len(raw) != self.LENGTH:
            raise ValueError(f"{type(self).__name__} is {self.LENGTH} bytes, got {len(raw)}")
        self._value = bytearray(raw)

    def set(self, *names: str) -> None:
        for name in names:
            index, mask = self.TABLE[name]
            self._value[index] |= mask

    def set_all(self, names: Iterable[str]) -> None:
        self.set(*names)

    def is_set(self, name: str) -> bool:
        index, mask = self.TABLE[name]
        return bool(self._value[index] & mask)

    def names(self) -> list[str]:
        """Names of the bits set, in table order."""
        return [name for name in self.TABLE if self.is_set(name)]

    @property
    def value(self) -> bytes:
        return bytes(self._value)

    def __bytes__(self) -> bytes:
        return self.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value.hex().upper()}: {', '.join(self.names())})"


class Tvr(_Bits):
    """Terminal Verification Results, tag 95 (5 bytes)."""

    TABLE = TVR_BITS
    LENGTH = 5


class Tsi(_Bits):
    """Transaction Status Information, tag 9B (2 bytes)."""

    TABLE = TSI_BITS
    LENGTH = 2
