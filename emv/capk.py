"""Certification Authority public keys (CAPK) and the terminal's key store.

EMV Book 2 §11.2.2 ("Certification Authority Public Key Check Sum"): the terminal keeps, for
every CA public key, a SHA-1 checksum over RID || CA Public Key Index || Modulus || Exponent and
checks it when the key is loaded. EMV Book 2 §11.2.1 requires a key to be usable only up to its
expiry date; :meth:`CaKeyStore.lookup` refuses expired keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from emv.errors import EmvError

__all__ = ["CaKeyStore", "CaPublicKey", "CapkError", "parse_ca_key", "parse_ca_keys"]


class CapkError(EmvError):
    """A CA public key (or a list of them) is malformed; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CaPublicKey:
    """One Certification Authority public key (EMV Book 2 §11.2.1, data elements table)."""

    rid: bytes
    index: int
    modulus: bytes
    exponent: bytes
    expiry: date | None = None
    sha1: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.rid) != 5:
            raise CapkError(f"rid must be 5 bytes, got {len(self.rid)}", field="rid")
        if not 0 <= self.index <= 0xFF:
            raise CapkError(f"index must be one byte, got {self.index}", field="index")
        # EMV Book 2 §11.2.1: modulus up to 248 bytes, exponent 3 or 2^16+1 (1 or 3 bytes).
        if not 1 <= len(self.modulus) <= 248:
            raise CapkError(
                f"modulus must be 1..248 bytes, got {len(self.modulus)}", field="modulus"
            )
        if not 1 <= len(self.exponent) <= 3:
            raise CapkError(
                f"exponent must be 1..3 bytes, got {len(self.exponent)}", field="exponent"
            )
        if self.sha1 is not None and len(self.sha1) != 20:
            raise CapkError(f"sha1 must be 20 bytes, got {len(self.sha1)}", field="sha1")

    def compute_checksum(self) -> bytes:
        """SHA-1 over RID || index || modulus || exponent (EMV Book 2 §11.2.2)."""
        return hashlib.sha1(  # noqa: S324 - SHA-1 is what EMV Book 2 §11.2.2 specifies
            self.rid + bytes([self.index]) + self.modulus + self.exponent
        ).digest()

    def verify_checksum(self) -> bool:
        """True when the stored checksum is present and matches (EMV Book 2 §11.2.2)."""
        if self.sha1 is None:
            return False
        return hmac.compare_digest(self.compute_checksum(), self.sha1)

    def is_expired(self, today: date) -> bool:
        """A key is valid up to and including its expiry date (EMV Book 2 §11.2.1)."""
        return self.expiry is not None and today > self.expiry

    @property
    def modulus_length(self) -> int:
        """N_CA, the modulus length in bytes (EMV Book 2 §5.1)."""
        return len(self.modulus)


def _hex_field(raw: Mapping[str, object], name: str, *, required: bool = True) -> bytes | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise CapkError(f"CA key field {name!r} is missing", field=name)
        return None
    if not isinstance(value, str):
        raise CapkError(f"CA key field {name!r} must be a hex string", field=name)
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise CapkError(f"CA key field {name!r} is not valid hex: {value!r}", field=name) from exc


def _required_hex(raw: Mapping[str, object], name: str) -> bytes:
    value = _hex_field(raw, name)
    if value is None:  # pragma: no cover - _hex_field raises for a missing required field
        raise CapkError(f"CA key field {name!r} is missing", field=name)
    return value


def parse_ca_key(raw: Mapping[str, object]) -> CaPublicKey:
    """Build a :class:`CaPublicKey` from a JSON-like dict.

    Accepted shape: ``{"rid": "A000000003", "index": "92" or 146, "modulus": "hex",
    "exponent": "03", "expiry": "YYYY-MM-DD" (optional), "sha1": "hex" (optional)}``.
    Other keys (labels, comments) are ignored. A present ``sha1`` must match the key.
    """
    if not isinstance(raw, Mapping):
        raise CapkError("CA key entry must be an object", field=None)
    rid = _required_hex(raw, "rid")
    modulus = _required_hex(raw, "modulus")
    exponent = _required_hex(raw, "exponent")
    sha1 = _hex_field(raw, "sha1", required=False)

    raw_index = raw.get("index")
    index: int
    if isinstance(raw_index, bool) or raw_index is None:
        raise CapkError("CA key field 'index' is missing or not a number", field="index")
    if isinstance(raw_index, int):
        index = raw_index
    elif isinstance(raw_index, str):
        try:
            # The index is conventionally written in hex ("92", "F1"), as on the card (tag 8F).
            index = int(raw_index, 16)
        except ValueError as exc:
            raise CapkError(
                f"CA key field 'index' is not hex: {raw_index!r}", field="index"
            ) from exc
    else:
        raise CapkError("CA key field 'index' must be a hex string or int", field="index")

    raw_expiry = raw.get("expiry")
    expiry: date | None = None
    if raw_expiry is not None:
        if not isinstance(raw_expiry, str):
            raise CapkError("CA key field 'expiry' must be 'YYYY-MM-DD'", field="expiry")
        try:
            expiry = date.fromisoformat(raw_expiry)
        except ValueError as exc:
            raise CapkError(
                f"CA key field 'expiry' is not a date: {raw_expiry!r}", field="expiry"
            ) from exc

    key = CaPublicKey(
        rid=rid, index=index, modulus=modulus, exponent=exponent, expiry=expiry, sha1=sha1
    )
    if sha1 is not None and not key.verify_checksum():
        raise CapkError(
            f"CA key {rid.hex().upper()}/{index:02X}: sha1 checksum does not match "
            "(EMV Book 2 §11.2.2)",
            field="sha1",
        )
    return key


def parse_ca_keys(raw: Iterable[Mapping[str, object]]) -> list[CaPublicKey]:
    """Parse a list of CA key dicts; the error names the entry position and field."""
    keys: list[CaPublicKey] = []
    for position, entry in enumerate(raw):
        try:
            keys.append(parse_ca_key(entry))
        except CapkError as exc:
            raise CapkError(f"CA key #{position}: {exc}", field=exc.field) from exc
    return keys


class CaKeyStore:
    """The terminal's CA public keys, addressed by (RID, CA Public Key Index)."""

    def __init__(self, keys: Iterable[CaPublicKey] = ()) -> None:
        self._keys: dict[tuple[bytes, int], CaPublicKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: CaPublicKey) -> None:
        """Add or replace a key; a key with a wrong checksum is refused (Book 2 §11.2.2)."""
        if key.sha1 is not None and not key.verify_checksum():
            raise CapkError(
                f"CA key {key.rid.hex().upper()}/{key.index:02X}: sha1 checksum does not match",
                field="sha1",
            )
        self._keys[(bytes(key.rid), key.index)] = key

    def get(self, rid: bytes, index: int) -> CaPublicKey | None:
        """The key regardless of its expiry (for diagnostics); None when unknown."""
        return self._keys.get((bytes(rid), index))

    def lookup(self, rid: bytes, index: int, today: date) -> CaPublicKey | None:
        """The key usable today, or None when unknown or expired (EMV Book 2 §11.2.1)."""
        key = self.get(rid, index)
        if key is None or key.is_expired(today):
            return None
        return key

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[CaPublicKey]:
        return iter(list(self._keys.values()))

    @classmethod
    def from_json_list(cls, raw: Iterable[Mapping[str, object]]) -> CaKeyStore:
        """A store from parsed JSON (a list of dicts in :func:`parse_ca_key`'s shape)."""
        return cls(parse_ca_keys(raw))
