"""Offline data authentication: SDA, DDA, fDDA and CDA (EMV Book 2 §5-§6, Book 3 §10.3).

Everything here is a pure function of the card's data, the terminal's CA public keys and the
date passed in. Outcomes are values: every check that fails returns an :class:`OdaResult` (or
a :class:`KeyRecoveryResult` / :class:`StaticDataResult`) naming the failed check as an
:class:`OdaFailure`; nothing raises on bad card data, however malformed.

RSA "recovery" is the raw public-key operation of EMV Book 2 Annex A2.1 (digital signature
scheme giving message recovery): ``X = S^e mod n``. Hashes are SHA-1 (Hash Algorithm Indicator
'01', EMV Book 2 Annex B2.1), the only algorithm the Book 2 certificate formats define.

Card data is passed as a ``Mapping[int, bytes]`` from tag (``0x9F46``) to value.

fDDA (Visa qVSDC; EMV Contactless Book C-3, Kernel 3, offline data authentication - the
exact clause number could not be checked against the book here) is DDA as in Book 2 §6.5
with the signature taken from the GET PROCESSING OPTIONS / READ RECORD data (tag 9F4B) and
with the terminal dynamic data fixed instead of coming from a DDOL:
``Unpredictable Number (9F37) || Amount, Authorised (9F02) || Transaction Currency Code (5F2A)``
followed, for fDDA version '01', by the value of Card Authentication Related Data (9F69),
whose first byte is the fDDA version number. When 9F69 is absent the card performs fDDA
version '00' and nothing follows the currency code. That is what :func:`verify_fdda`
implements; the ICC Dynamic Data is read as in Book 2 Table 18 (length + ICC Dynamic Number).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from emv.capk import CaKeyStore, CaPublicKey
from emv.tlv import RawTlv, TlvError, decode_raw, read_raw

__all__ = [
    "HASH_SHA1",
    "RSA_ALGORITHM",
    "KeyRecoveryResult",
    "OdaFailure",
    "OdaMethod",
    "OdaResult",
    "RecoveredPublicKey",
    "RevocationCheck",
    "StaticDataResult",
    "build_static_data",
    "build_static_data_from_afl",
    "cda_transaction_data_hash",
    "fdda_terminal_dynamic_data",
    "oda_records_from_afl",
    "perform_cda",
    "perform_dda",
    "perform_fdda",
    "perform_sda",
    "recover_icc_public_key",
    "recover_issuer_public_key",
    "verify_cda",
    "verify_fdda",
    "verify_sdad",
    "verify_ssad",
]

# Tags used by ODA (EMV Book 3 Annex A).
TAG_AIP: Final = 0x82
TAG_PAN: Final = 0x5A
TAG_CA_INDEX: Final = 0x8F
TAG_ISSUER_CERT: Final = 0x90
TAG_ISSUER_REMAINDER: Final = 0x92
TAG_ISSUER_EXPONENT: Final = 0x9F32
TAG_SSAD: Final = 0x93
TAG_ICC_CERT: Final = 0x9F46
TAG_ICC_EXPONENT: Final = 0x9F47
TAG_ICC_REMAINDER: Final = 0x9F48
TAG_SDA_TAG_LIST: Final = 0x9F4A
TAG_SDAD: Final = 0x9F4B
TAG_CID: Final = 0x9F27
TAG_AC: Final = 0x9F26
TAG_CARD_AUTH_DATA: Final = 0x9F69
TAG_RESPONSE_TEMPLATE_2: Final = 0x77
TAG_RESPONSE_TEMPLATE_1: Final = 0x80
TAG_RECORD_TEMPLATE: Final = 0x70

#: Hash Algorithm Indicator for SHA-1 (EMV Book 2 Annex B2.1).
HASH_SHA1: Final = 0x01
#: Issuer / ICC Public Key Algorithm Indicator for RSA (EMV Book 2 Annex B2.2).
RSA_ALGORITHM: Final = 0x01

_HEADER: Final = 0x6A
_TRAILER: Final = 0xBC

#: Certificate revocation list hook (EMV Book 2 §5.3 step 10): called with
#: (RID, CA Public Key Index, Certificate Serial Number) and returns True when revoked.
RevocationCheck = Callable[[bytes, int, bytes], bool]


class OdaMethod(enum.Enum):
    """The ODA method performed (EMV Book 3 §10.3)."""

    NONE = "none"
    SDA = "sda"
    DDA = "dda"
    FDDA = "fdda"
    CDA = "cda"


class OdaFailure(enum.Enum):
    """Each ODA check that can fail, named after the clause that performs it."""

    ICC_DATA_MISSING = "icc_data_missing"
    CA_KEY_MISSING = "ca_key_missing"
    CA_KEY_EXPIRED = "ca_key_expired"
    # Issuer public key certificate, EMV Book 2 §5.3 / Table 6.
    ISSUER_CERT_LENGTH = "issuer_cert_length"
    ISSUER_CERT_TRAILER = "issuer_cert_trailer"
    ISSUER_CERT_HEADER = "issuer_cert_header"
    ISSUER_CERT_FORMAT = "issuer_cert_format"
    ISSUER_CERT_HASH_ALGORITHM = "issuer_cert_hash_algorithm"
    ISSUER_CERT_HASH = "issuer_cert_hash"
    ISSUER_ID_MISMATCH = "issuer_id_mismatch"
    ISSUER_CERT_EXPIRED = "issuer_cert_expired"
    ISSUER_CERT_REVOKED = "issuer_cert_revoked"
    ISSUER_KEY_ALGORITHM = "issuer_key_algorithm"
    ISSUER_KEY_LENGTH = "issuer_key_length"
    # ICC public key certificate, EMV Book 2 §6.4 / Table 14.
    ICC_CERT_LENGTH = "icc_cert_length"
    ICC_CERT_TRAILER = "icc_cert_trailer"
    ICC_CERT_HEADER = "icc_cert_header"
    ICC_CERT_FORMAT = "icc_cert_format"
    ICC_CERT_HASH_ALGORITHM = "icc_cert_hash_algorithm"
    ICC_CERT_HASH = "icc_cert_hash"
    PAN_MISMATCH = "pan_mismatch"
    ICC_CERT_EXPIRED = "icc_cert_expired"
    ICC_KEY_ALGORITHM = "icc_key_algorithm"
    ICC_KEY_LENGTH = "icc_key_length"
    # Static data to be authenticated, EMV Book 3 §10.3.
    STATIC_DATA_AFL = "static_data_afl"
    STATIC_DATA_RECORD = "static_data_record"
    STATIC_DATA_TAG_LIST = "static_data_tag_list"
    # Signed Static Application Data, EMV Book 2 §5.4 / Table 7.
    SSAD_LENGTH = "ssad_length"
    SSAD_TRAILER = "ssad_trailer"
    SSAD_HEADER = "ssad_header"
    SSAD_FORMAT = "ssad_format"
    SSAD_HASH_ALGORITHM = "ssad_hash_algorithm"
    SSAD_HASH = "ssad_hash"
    # Signed Dynamic Application Data, EMV Book 2 §6.5.2 / Table 17, §6.6.2.
    SDAD_LENGTH = "sdad_length"
    SDAD_TRAILER = "sdad_trailer"
    SDAD_HEADER = "sdad_header"
    SDAD_FORMAT = "sdad_format"
    SDAD_HASH_ALGORITHM = "sdad_hash_algorithm"
    SDAD_DYNAMIC_DATA = "sdad_dynamic_data"
    SDAD_HASH = "sdad_hash"
    # CDA only, EMV Book 2 §6.6.2.
    GENAC_RESPONSE_FORMAT = "genac_response_format"
    CID_MISMATCH = "cid_mismatch"
    TRANSACTION_DATA_HASH = "transaction_data_hash"

    @property
    def tvr_bit(self) -> str | None:
        """The TVR byte 1 bit this failure sets by itself (EMV Book 3 Annex C1).

        ``"icc_data_missing"`` (b6), ``"sda_failed"`` (b7) or ``"cda_failed"`` (b3) for the
        failures that belong to one method only; ``None`` for a failure shared by several
        methods (CA key, certificates, SDAD), whose bit is that of the method being performed:
        use :meth:`tvr_bits` or :attr:`OdaResult.tvr_bits`.
        """
        if self is OdaFailure.ICC_DATA_MISSING:
            return "icc_data_missing"
        if self.name.startswith("SSAD_"):
            return "sda_failed"
        if self in (
            OdaFailure.CID_MISMATCH,
            OdaFailure.TRANSACTION_DATA_HASH,
            OdaFailure.GENAC_RESPONSE_FORMAT,
        ):
            return "cda_failed"
        return None

    def tvr_bits(self, method: OdaMethod) -> frozenset[str]:
        """All TVR byte 1 bits set when ``method`` fails with this failure (Book 3 Annex C1).

        Method bits: SDA -> ``sda_failed`` (b7); DDA and fDDA -> ``dda_failed`` (b4); CDA ->
        ``cda_failed`` (b3). Missing mandatory data also sets ``icc_data_missing`` (b6).
        """
        bits = {_METHOD_BIT[method]} if method in _METHOD_BIT else set()
        if self is OdaFailure.ICC_DATA_MISSING:
            bits.add("icc_data_missing")
        return frozenset(bits)


_METHOD_BIT: Final[dict[OdaMethod, str]] = {
    OdaMethod.SDA: "sda_failed",
    OdaMethod.DDA: "dda_failed",
    OdaMethod.FDDA: "dda_failed",
    OdaMethod.CDA: "cda_failed",
}


@dataclass(frozen=True)
class RecoveredPublicKey:
    """An issuer or ICC public key recovered from its certificate (Book 2 §5.3, §6.4)."""

    modulus: bytes
    exponent: bytes
    #: Last day of the certificate's expiry month.
    expiry: date
    serial_number: bytes
    hash_algorithm: int
    key_algorithm: int


@dataclass(frozen=True)
class KeyRecoveryResult:
    """Outcome of recovering an issuer or ICC public key."""

    key: RecoveredPublicKey | None
    failure: OdaFailure | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.key is not None and self.failure is None


@dataclass(frozen=True)
class StaticDataResult:
    """Outcome of building the static data to be authenticated (EMV Book 3 §10.3)."""

    data: bytes | None
    failure: OdaFailure | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.data is not None and self.failure is None


@dataclass(frozen=True)
class OdaResult:
    """Outcome of one ODA method. ``failure`` is None exactly when ``ok`` is True."""

    method: OdaMethod
    ok: bool
    failure: OdaFailure | None = None
    detail: str = ""
    #: ICC Dynamic Number (9F4C) from the ICC Dynamic Data (DDA, fDDA, CDA).
    icc_dynamic_number: bytes | None = None
    #: The whole ICC Dynamic Data recovered from the SDAD (Book 2 Table 18 / Table 19).
    icc_dynamic_data: bytes | None = None
    #: Data Authentication Code (9F45) recovered from the SSAD (SDA).
    data_authentication_code: bytes | None = None
    #: CDA: Cryptogram Information Data and Application Cryptogram from the ICC Dynamic Data.
    cryptogram_information_data: int | None = None
    application_cryptogram: bytes | None = None
    issuer_key: RecoveredPublicKey | None = None
    icc_key: RecoveredPublicKey | None = None

    @property
    def tvr_bits(self) -> frozenset[str]:
        """TVR byte 1 bits this outcome sets (EMV Book 3 Annex C1, §10.3).

        ``{"oda_not_performed"}`` (b8) for method NONE; empty on success; otherwise the
        method's failed bit plus ``icc_data_missing`` when mandatory data was absent.
        """
        if self.method is OdaMethod.NONE:
            return frozenset({"oda_not_performed"})
        if self.ok or self.failure is None:
            return frozenset()
        return self.failure.tvr_bits(self.method)

    @classmethod
    def not_performed(cls, detail: str = "") -> OdaResult:
        return cls(OdaMethod.NONE, ok=False, detail=detail)


def _fail(
    method: OdaMethod,
    failure: OdaFailure,
    detail: str,
    *,
    issuer_key: RecoveredPublicKey | None = None,
    icc_key: RecoveredPublicKey | None = None,
) -> OdaResult:
    return OdaResult(method, False, failure, detail, issuer_key=issuer_key, icc_key=icc_key)


# ---------------------------------------------------------------------------------------------
# Small helpers: RSA recovery, SHA-1, dates, PAN digits, a minimal BER-TLV reader.


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()  # noqa: S324 - SHA-1 is mandated by EMV Book 2 Annex B2.1


def _rsa_recover(signature: bytes, modulus: bytes, exponent: bytes) -> bytes | None:
    """X = S^e mod n (EMV Book 2 Annex A2.1); None when S is not a valid input for n."""
    n = int.from_bytes(modulus, "big")
    e = int.from_bytes(exponent, "big")
    s = int.from_bytes(signature, "big")
    if n < 2 or e < 1 or s >= n:
        return None
    return pow(s, e, n).to_bytes(len(modulus), "big")


def _bcd_digits(value: bytes) -> str | None:
    """Digits of a cn-format field with its trailing 'F' padding removed; None if malformed."""
    text = value.hex().upper().rstrip("F")
    return text if text.isdigit() else None


def _expiry_date(mmyy: bytes) -> date | None:
    """Last day of the month of an n4 MMYY date; YY < 50 is 20YY (EMV Book 4 §6.7.3)."""
    text = mmyy.hex()
    if len(text) != 4 or not text.isdigit():
        return None
    month, yy = int(text[:2]), int(text[2:])
    if not 1 <= month <= 12:
        return None
    year = 2000 + yy if yy < 50 else 1900 + yy
    first_of_next = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return first_of_next - timedelta(days=1)


def _objects(data: bytes) -> tuple[RawTlv, ...] | None:
    """The top-level objects of ``data`` as coded, values undecoded; None if malformed."""
    try:
        return decode_raw(data)
    except TlvError:
        return None


def _object_at_start(data: bytes) -> RawTlv | None:
    """The object that starts at byte 0 of ``data`` (no padding skipped); None if malformed."""
    try:
        return read_raw(data)
    except TlvError:
        return None


# ---------------------------------------------------------------------------------------------
# Static data to be authenticated (EMV Book 3 §10.3).


def oda_records_from_afl(afl: bytes) -> list[tuple[int, int]] | None:
    """The (SFI, record number) pairs the AFL marks for ODA, in order; None if malformed.

    EMV Book 3 §10.2: each 4-byte AFL entry is SFI (b8-b4 of byte 1), first record, last
    record, and the number of records, from the first, that take part in ODA.
    """
    if len(afl) % 4 != 0:
        return None
    ids: list[tuple[int, int]] = []
    for i in range(0, len(afl), 4):
        sfi = afl[i] >> 3
        first, last, oda_count = afl[i + 1], afl[i + 2], afl[i + 3]
        if not 1 <= sfi <= 30 or afl[i] & 0x07 or first == 0 or last < first:
            return None
        if oda_count > last - first + 1:
            return None
        ids.extend((sfi, first + k) for k in range(oda_count))
    return ids


def build_static_data(
    oda_records: Iterable[tuple[int, bytes]],
    *,
    sda_tag_list: bytes | None = None,
    aip: bytes | None = None,
) -> StaticDataResult:
    """Concatenate the static data to be authenticated (EMV Book 3 §10.3).

    ``oda_records`` are (SFI, raw READ RECORD response) in AFL order. For SFI 1-10 only the
    value of the record template '70' is used, and a record not coded as '70' makes ODA fail;
    for SFI 11-30 the whole record, tag and length included, is used. When the Static Data
    Authentication Tag List (9F4A) is present it shall hold only tag '82', and the value of the
    AIP is appended.
    """
    parts: list[bytes] = []
    for sfi, record in oda_records:
        if 1 <= sfi <= 10:
            item = _object_at_start(record)
            if item is None or item.tag != TAG_RECORD_TEMPLATE or len(item.encoded) != len(record):
                return StaticDataResult(
                    None,
                    OdaFailure.STATIC_DATA_RECORD,
                    f"record in SFI {sfi} is not coded as a '70' template (Book 3 §10.3)",
                )
            parts.append(item.value)
        elif 11 <= sfi <= 30:
            parts.append(bytes(record))
        else:
            return StaticDataResult(None, OdaFailure.STATIC_DATA_AFL, f"SFI {sfi} out of range")
    if sda_tag_list is not None:
        if sda_tag_list != bytes([TAG_AIP]):
            return StaticDataResult(
                None,
                OdaFailure.STATIC_DATA_TAG_LIST,
                f"SDA Tag List 9F4A is {sda_tag_list.hex().upper()}, only '82' is allowed "
                "(Book 3 §10.3)",
            )
        if aip is None:
            return StaticDataResult(
                None, OdaFailure.ICC_DATA_MISSING, "9F4A lists '82' but the AIP is absent"
            )
        parts.append(bytes(aip))
    return StaticDataResult(b"".join(parts))


def build_static_data_from_afl(
    afl: bytes, records: Mapping[tuple[int, int], bytes], card: Mapping[int, bytes]
) -> StaticDataResult:
    """:func:`build_static_data` from the AFL, the records read keyed by (SFI, record number),
    and the card data (for 9F4A and 82)."""
    ids = oda_records_from_afl(afl)
    if ids is None:
        return StaticDataResult(None, OdaFailure.STATIC_DATA_AFL, "malformed AFL (Book 3 §10.2)")
    selected: list[tuple[int, bytes]] = []
    for sfi, number in ids:
        record = records.get((sfi, number))
        if record is None:
            return StaticDataResult(
                None, OdaFailure.ICC_DATA_MISSING, f"record {number} of SFI {sfi} was not read"
            )
        selected.append((sfi, record))
    return build_static_data(
        selected, sda_tag_list=card.get(TAG_SDA_TAG_LIST), aip=card.get(TAG_AIP)
    )


# ---------------------------------------------------------------------------------------------
# Certificates (EMV Book 2 §5.3 Table 6, §6.4 Table 14).


def _recover_frame(
    signature: bytes,
    modulus: bytes,
    exponent: bytes,
    length_f: OdaFailure,
    trailer_f: OdaFailure,
    header_f: OdaFailure,
    what: str,
) -> tuple[bytes | None, OdaFailure | None, str]:
    """Common first steps of every recovery (Book 2 §5.3 steps 1-3, §5.4, §6.4, §6.5.2):
    length equal to the key's modulus, recover, trailer 'BC', header '6A'."""
    if len(signature) != len(modulus):
        return (
            None,
            length_f,
            f"{what} is {len(signature)} bytes, key modulus is {len(modulus)}",
        )
    recovered = _rsa_recover(signature, modulus, exponent)
    if recovered is None:
        return None, trailer_f, f"{what} cannot be recovered with this key"
    if recovered[-1] != _TRAILER:
        return None, trailer_f, f"{what}: recovered data trailer is not 'BC'"
    if recovered[0] != _HEADER:
        return None, header_f, f"{what}: recovered data header is not '6A'"
    return recovered, None, ""


def recover_issuer_public_key(
    ca_key: CaPublicKey,
    certificate: bytes,
    remainder: bytes | None,
    exponent: bytes,
    pan: bytes,
    today: date,
    *,
    is_revoked: RevocationCheck | None = None,
) -> KeyRecoveryResult:
    """Recover the Issuer Public Key from its certificate (tag 90), EMV Book 2 §5.3, Table 6.

    ``remainder`` is tag 92 (None when absent), ``exponent`` tag 9F32, ``pan`` tag 5A.
    """
    n_ca = len(ca_key.modulus)
    if n_ca < 37:
        return KeyRecoveryResult(None, OdaFailure.ISSUER_CERT_LENGTH, "CA key too short")
    # Steps 1-3: length, recovery, trailer, header.
    rec, failure, detail = _recover_frame(
        certificate,
        ca_key.modulus,
        ca_key.exponent,
        OdaFailure.ISSUER_CERT_LENGTH,
        OdaFailure.ISSUER_CERT_TRAILER,
        OdaFailure.ISSUER_CERT_HEADER,
        "Issuer Public Key Certificate",
    )
    if rec is None:
        return KeyRecoveryResult(None, failure, detail)
    # Step 4: Certificate Format '02'.
    if rec[1] != 0x02:
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_CERT_FORMAT, f"certificate format {rec[1]:02X}, expected 02"
        )
    issuer_id = rec[2:6]
    expiry_raw = rec[6:8]
    serial = rec[8:11]
    hash_alg, key_alg, key_len, exp_len = rec[11], rec[12], rec[13], rec[14]
    leftmost = rec[15 : n_ca - 21]
    hash_result = rec[n_ca - 21 : n_ca - 1]
    # Table 6: the key fits in the certificate when N_I <= N_CA - 36, otherwise the rest is
    # in the Issuer Public Key Remainder (92), which is then mandatory (Book 2 §5.1).
    if key_len > n_ca - 36 and remainder is None:
        return KeyRecoveryResult(
            None,
            OdaFailure.ICC_DATA_MISSING,
            "Issuer Public Key Remainder (92) required but absent",
        )
    # Steps 5-7: hash over items 2-10 of Table 6 || remainder || exponent.
    if hash_alg != HASH_SHA1:
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_CERT_HASH_ALGORITHM, f"hash algorithm {hash_alg:02X}"
        )
    hash_input = rec[1 : n_ca - 21] + (remainder or b"") + exponent
    if not hmac.compare_digest(_sha1(hash_input), hash_result):
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_CERT_HASH, "Issuer Public Key Certificate hash mismatch"
        )
    # Step 8: Issuer Identifier equals the leftmost 3-8 PAN digits (padded with 'F').
    id_digits = _bcd_digits(issuer_id)
    pan_digits = _bcd_digits(pan)
    if (
        id_digits is None
        or pan_digits is None
        or not 3 <= len(id_digits) <= 8
        or not pan_digits.startswith(id_digits)
    ):
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_ID_MISMATCH, "Issuer Identifier does not match the PAN"
        )
    # Step 9: Certificate Expiration Date not earlier than today (valid to the month's end).
    expiry = _expiry_date(expiry_raw)
    if expiry is None:
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_CERT_EXPIRED, f"invalid expiry {expiry_raw.hex()}"
        )
    if today > expiry:
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_CERT_EXPIRED, f"issuer certificate expired {expiry_raw.hex()}"
        )
    # Step 10: RID || CA index || serial number not on the certification revocation list.
    if is_revoked is not None and is_revoked(ca_key.rid, ca_key.index, serial):
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_CERT_REVOKED, f"issuer certificate {serial.hex()} revoked"
        )
    # Step 11: Issuer Public Key Algorithm Indicator recognised.
    if key_alg != RSA_ALGORITHM:
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_KEY_ALGORITHM, f"key algorithm {key_alg:02X}"
        )
    # Step 12: modulus = leftmost digits || remainder.
    modulus = leftmost[:key_len] if key_len <= n_ca - 36 else leftmost + (remainder or b"")
    if len(modulus) != key_len or key_len == 0 or len(exponent) != exp_len:
        return KeyRecoveryResult(
            None, OdaFailure.ISSUER_KEY_LENGTH, "issuer key or exponent length inconsistent"
        )
    return KeyRecoveryResult(
        RecoveredPublicKey(modulus, bytes(exponent), expiry, serial, hash_alg, key_alg)
    )


def recover_icc_public_key(
    issuer_key: RecoveredPublicKey,
    certificate: bytes,
    remainder: bytes | None,
    exponent: bytes,
    pan: bytes,
    static_data: bytes,
    today: date,
) -> KeyRecoveryResult:
    """Recover the ICC Public Key from its certificate (9F46), EMV Book 2 §6.4, Table 14.

    ``remainder`` is tag 9F48 (None when absent), ``exponent`` 9F47, ``pan`` 5A and
    ``static_data`` the static data to be authenticated (Book 3 §10.3).
    """
    n_i = len(issuer_key.modulus)
    if n_i < 43:
        return KeyRecoveryResult(None, OdaFailure.ICC_CERT_LENGTH, "issuer key too short")
    # Steps 1-3: length N_I, recovery, trailer, header.
    rec, failure, detail = _recover_frame(
        certificate,
        issuer_key.modulus,
        issuer_key.exponent,
        OdaFailure.ICC_CERT_LENGTH,
        OdaFailure.ICC_CERT_TRAILER,
        OdaFailure.ICC_CERT_HEADER,
        "ICC Public Key Certificate",
    )
    if rec is None:
        return KeyRecoveryResult(None, failure, detail)
    # Step 4: Certificate Format '04'.
    if rec[1] != 0x04:
        return KeyRecoveryResult(
            None, OdaFailure.ICC_CERT_FORMAT, f"certificate format {rec[1]:02X}, expected 04"
        )
    cert_pan = rec[2:12]
    expiry_raw = rec[12:14]
    serial = rec[14:17]
    hash_alg, key_alg, key_len, exp_len = rec[17], rec[18], rec[19], rec[20]
    leftmost = rec[21 : n_i - 21]
    hash_result = rec[n_i - 21 : n_i - 1]
    if key_len > n_i - 42 and remainder is None:
        return KeyRecoveryResult(
            None, OdaFailure.ICC_DATA_MISSING, "ICC Public Key Remainder (9F48) required but absent"
        )
    # Steps 5-7: hash over items 2-10 of Table 14 || remainder || exponent || static data.
    if hash_alg != HASH_SHA1:
        return KeyRecoveryResult(
            None, OdaFailure.ICC_CERT_HASH_ALGORITHM, f"hash algorithm {hash_alg:02X}"
        )
    hash_input = rec[1 : n_i - 21] + (remainder or b"") + exponent + static_data
    if not hmac.compare_digest(_sha1(hash_input), hash_result):
        return KeyRecoveryResult(
            None, OdaFailure.ICC_CERT_HASH, "ICC Public Key Certificate hash mismatch"
        )
    # Step 8: recovered PAN (padded with 'F') equals the Application PAN (5A).
    cert_digits = _bcd_digits(cert_pan)
    pan_digits = _bcd_digits(pan)
    if cert_digits is None or pan_digits is None or cert_digits != pan_digits:
        return KeyRecoveryResult(
            None, OdaFailure.PAN_MISMATCH, "ICC certificate PAN differs from the application PAN"
        )
    # Step 9: Certificate Expiration Date not earlier than today.
    expiry = _expiry_date(expiry_raw)
    if expiry is None:
        return KeyRecoveryResult(
            None, OdaFailure.ICC_CERT_EXPIRED, f"invalid expiry {expiry_raw.hex()}"
        )
    if today > expiry:
        return KeyRecoveryResult(
            None, OdaFailure.ICC_CERT_EXPIRED, f"ICC certificate expired {expiry_raw.hex()}"
        )
    # Step 10: ICC Public Key Algorithm Indicator recognised.
    if key_alg != RSA_ALGORITHM:
        return KeyRecoveryResult(None, OdaFailure.ICC_KEY_ALGORITHM, f"key algorithm {key_alg:02X}")
    # Step 11: modulus = leftmost digits || remainder.
    modulus = leftmost[:key_len] if key_len <= n_i - 42 else leftmost + (remainder or b"")
    if len(modulus) != key_len or key_len == 0 or len(exponent) != exp_len:
        return KeyRecoveryResult(
            None, OdaFailure.ICC_KEY_LENGTH, "ICC key or exponent length inconsistent"
        )
    return KeyRecoveryResult(
        RecoveredPublicKey(modulus, bytes(exponent), expiry, serial, hash_alg, key_alg)
    )


# ---------------------------------------------------------------------------------------------
# Signatures: SSAD (Book 2 §5.4, Table 7), SDAD (§6.5.2, Table 17; §6.6.2).


def verify_ssad(issuer_key: RecoveredPublicKey, ssad: bytes, static_data: bytes) -> OdaResult:
    """Verify the Signed Static Application Data (tag 93), EMV Book 2 §5.4, Table 7."""
    m = OdaMethod.SDA
    n_i = len(issuer_key.modulus)
    if n_i < 27:
        return _fail(m, OdaFailure.SSAD_LENGTH, "issuer key too short", issuer_key=issuer_key)
    # Steps 1-3: length N_I, recovery, trailer, header.
    rec, failure, detail = _recover_frame(
        ssad,
        issuer_key.modulus,
        issuer_key.exponent,
        OdaFailure.SSAD_LENGTH,
        OdaFailure.SSAD_TRAILER,
        OdaFailure.SSAD_HEADER,
        "Signed Static Application Data",
    )
    if rec is None or failure is not None:
        assert failure is not None
        return _fail(m, failure, detail, issuer_key=issuer_key)
    # Step 4: Signed Data Format '03'.
    if rec[1] != 0x03:
        return _fail(
            m, OdaFailure.SSAD_FORMAT, f"signed data format {rec[1]:02X}", issuer_key=issuer_key
        )
    if rec[2] != HASH_SHA1:
        return _fail(
            m, OdaFailure.SSAD_HASH_ALGORITHM, f"hash algorithm {rec[2]:02X}", issuer_key=issuer_key
        )
    # Steps 5-7: hash over items 2-5 of Table 7 (format .. pad pattern) || static data.
    if not hmac.compare_digest(_sha1(rec[1 : n_i - 21] + static_data), rec[n_i - 21 : n_i - 1]):
        return _fail(m, OdaFailure.SSAD_HASH, "SSAD hash mismatch", issuer_key=issuer_key)
    return OdaResult(
        m,
        True,
        detail="SDA successful",
        data_authentication_code=rec[3:5],
        issuer_key=issuer_key,
    )


def _recover_sdad(
    icc_key: RecoveredPublicKey, sdad: bytes, method: OdaMethod
) -> tuple[bytes, bytes] | OdaResult:
    """Book 2 §6.5.2 steps 1-4: frame checks and format '05'. Returns (recovered, ICC Dynamic
    Data) or the failure."""
    n_ic = len(icc_key.modulus)
    if n_ic < 26:
        return _fail(method, OdaFailure.SDAD_LENGTH, "ICC key too short", icc_key=icc_key)
    rec, failure, detail = _recover_frame(
        sdad,
        icc_key.modulus,
        icc_key.exponent,
        OdaFailure.SDAD_LENGTH,
        OdaFailure.SDAD_TRAILER,
        OdaFailure.SDAD_HEADER,
        "Signed Dynamic Application Data",
    )
    if rec is None or failure is not None:
        assert failure is not None
        return _fail(method, failure, detail, icc_key=icc_key)
    if rec[1] != 0x05:
        return _fail(
            method, OdaFailure.SDAD_FORMAT, f"signed data format {rec[1]:02X}", icc_key=icc_key
        )
    if rec[2] != HASH_SHA1:
        return _fail(
            method, OdaFailure.SDAD_HASH_ALGORITHM, f"hash algorithm {rec[2]:02X}", icc_key=icc_key
        )
    # Table 17: ICC Dynamic Data Length L_DD, then L_DD bytes, then N_IC - L_DD - 25 pad bytes.
    l_dd = rec[3]
    if l_dd > n_ic - 25:
        return _fail(
            method, OdaFailure.SDAD_DYNAMIC_DATA, f"ICC Dynamic Data length {l_dd}", icc_key=icc_key
        )
    dyn = rec[4 : 4 + l_dd]
    # Table 18 / Table 19: ICC Dynamic Number Length (2..8) and the number itself come first.
    if l_dd < 1 or not 2 <= dyn[0] <= 8 or dyn[0] + 1 > l_dd:
        return _fail(
            method, OdaFailure.SDAD_DYNAMIC_DATA, "bad ICC Dynamic Number length", icc_key=icc_key
        )
    return rec, dyn


def _check_sdad_hash(rec: bytes, terminal_dynamic_data: bytes) -> bool:
    """Book 2 §6.5.2 steps 5-7: SHA-1 over items 2-6 of Table 17 || terminal dynamic data."""
    n_ic = len(rec)
    return hmac.compare_digest(
        _sha1(rec[1 : n_ic - 21] + terminal_dynamic_data), rec[n_ic - 21 : n_ic - 1]
    )


def verify_sdad(
    icc_key: RecoveredPublicKey,
    sdad: bytes,
    terminal_dynamic_data: bytes,
    *,
    method: OdaMethod = OdaMethod.DDA,
) -> OdaResult:
    """Verify a DDA Signed Dynamic Application Data (9F4B), EMV Book 2 §6.5.2, Table 17.

    ``terminal_dynamic_data`` is the concatenated values of the DDOL data elements sent in
    INTERNAL AUTHENTICATE. On success the ICC Dynamic Number (9F4C) is returned.
    """
    got = _recover_sdad(icc_key, sdad, method)
    if isinstance(got, OdaResult):
        return got
    rec, dyn = got
    if not _check_sdad_hash(rec, terminal_dynamic_data):
        return _fail(method, OdaFailure.SDAD_HASH, "SDAD hash mismatch", icc_key=icc_key)
    return OdaResult(
        method,
        True,
        detail=f"{method.name} successful",
        icc_dynamic_number=dyn[1 : 1 + dyn[0]],
        icc_dynamic_data=dyn,
        icc_key=icc_key,
    )


def fdda_terminal_dynamic_data(
    unpredictable_number: bytes,
    amount_authorised: bytes,
    currency_code: bytes,
    card_authentication_related_data: bytes | None = None,
) -> bytes:
    """The data the terminal appends to the SDAD hash for fDDA (see the module docstring).

    fDDA version '01' (9F69 present, first byte '01'): 9F37 || 9F02 || 5F2A || 9F69.
    fDDA version '00' (9F69 absent): 9F37 || 9F02 || 5F2A.
    """
    data = bytes(unpredictable_number) + bytes(amount_authorised) + bytes(currency_code)
    if card_authentication_related_data:
        data += bytes(card_authentication_related_data)
    return data


def verify_fdda(
    icc_key: RecoveredPublicKey,
    sdad: bytes,
    unpredictable_number: bytes,
    amount_authorised: bytes,
    currency_code: bytes,
    card_authentication_related_data: bytes | None = None,
) -> OdaResult:
    """Verify a Visa fDDA signature (EMV Book C-3 fDDA, on top of Book 2 §6.5.2)."""
    data = fdda_terminal_dynamic_data(
        unpredictable_number, amount_authorised, currency_code, card_authentication_related_data
    )
    return verify_sdad(icc_key, sdad, data, method=OdaMethod.FDDA)


def cda_transaction_data_hash(
    pdol_data: bytes,
    cdol1_data: bytes,
    genac_response: bytes,
    cdol2_data: bytes | None = None,
) -> bytes | None:
    """Transaction Data Hash Code input and SHA-1 (EMV Book 2 §6.6.1 / §6.6.2 step 9).

    SHA-1 over the PDOL related data, the CDOL1 related data (and for the second GENERATE AC
    the CDOL2 related data), then every TLV object of the GENERATE AC response template '77'
    in the order returned, tag and length included, except the SDAD (9F4B).
    ``genac_response`` may be the whole '77' template or its value. None if malformed.
    """
    objects = _genac_objects(genac_response)
    if objects is None:
        return None
    parts = [bytes(pdol_data), bytes(cdol1_data)]
    if cdol2_data is not None:
        parts.append(bytes(cdol2_data))
    parts.extend(obj.encoded for obj in objects if obj.tag != TAG_SDAD)
    return _sha1(b"".join(parts))


def _genac_objects(genac_response: bytes) -> tuple[RawTlv, ...] | None:
    outer = _object_at_start(genac_response)
    if outer is not None and outer.tag == TAG_RESPONSE_TEMPLATE_2:
        if len(outer.encoded) != len(genac_response):
            return None
        return _objects(outer.value)
    if outer is not None and outer.tag == TAG_RESPONSE_TEMPLATE_1:
        return None  # Format 1 cannot carry an SDAD (Book 3 §6.5.5.4).
    return _objects(genac_response)


def verify_cda(
    icc_key: RecoveredPublicKey,
    genac_response: bytes,
    unpredictable_number: bytes,
    pdol_data: bytes,
    cdol1_data: bytes,
    cdol2_data: bytes | None = None,
) -> OdaResult:
    """Verify CDA on a GENERATE AC response (template '77'), EMV Book 2 §6.6.2.

    The SDAD (9F4B) and the CID (9F27) are taken from the response. The SDAD hash covers
    items 2-6 of Table 17 followed by the Unpredictable Number (9F37); the ICC Dynamic Data
    (Table 19) holds the ICC Dynamic Number, the CID, the Application Cryptogram and the
    Transaction Data Hash Code.
    """
    m = OdaMethod.CDA
    objects = _genac_objects(genac_response)
    if objects is None:
        return _fail(
            m, OdaFailure.GENAC_RESPONSE_FORMAT, "GENERATE AC response is not a '77' template"
        )
    found = {obj.tag: obj.value for obj in objects}
    sdad = found.get(TAG_SDAD)
    cid = found.get(TAG_CID)
    if sdad is None or cid is None or len(cid) != 1:
        return _fail(m, OdaFailure.ICC_DATA_MISSING, "SDAD (9F4B) or CID (9F27) absent")
    # Steps 1-4: frame and format.
    got = _recover_sdad(icc_key, sdad, m)
    if isinstance(got, OdaResult):
        return got
    rec, dyn = got
    # Step 5: retrieve Table 19 from the ICC Dynamic Data.
    n_len = dyn[0]
    if len(dyn) < 1 + n_len + 1 + 8 + 20:
        return _fail(m, OdaFailure.SDAD_DYNAMIC_DATA, "ICC Dynamic Data too short for CDA")
    number = dyn[1 : 1 + n_len]
    signed_cid = dyn[1 + n_len]
    cryptogram = dyn[2 + n_len : 10 + n_len]
    tdhc = dyn[10 + n_len : 30 + n_len]
    # Step 6: CID in the ICC Dynamic Data equals the CID returned in clear.
    if signed_cid != cid[0]:
        return _fail(
            m,
            OdaFailure.CID_MISMATCH,
            f"signed CID {signed_cid:02X} differs from returned CID {cid[0]:02X}",
            icc_key=icc_key,
        )
    # Steps 7-9: SDAD hash with the Unpredictable Number as terminal dynamic data.
    if not _check_sdad_hash(rec, unpredictable_number):
        return _fail(m, OdaFailure.SDAD_HASH, "SDAD hash mismatch", icc_key=icc_key)
    # Steps 10-11: Transaction Data Hash Code.
    expected = cda_transaction_data_hash(pdol_data, cdol1_data, genac_response, cdol2_data)
    if expected is None or not hmac.compare_digest(expected, tdhc):
        return _fail(
            m,
            OdaFailure.TRANSACTION_DATA_HASH,
            "Transaction Data Hash Code mismatch",
            icc_key=icc_key,
        )
    return OdaResult(
        m,
        True,
        detail="CDA successful",
        icc_dynamic_number=number,
        icc_dynamic_data=dyn,
        cryptogram_information_data=signed_cid,
        application_cryptogram=cryptogram,
        icc_key=icc_key,
    )


# ---------------------------------------------------------------------------------------------
# Whole methods from the card's data.


def _missing(card: Mapping[int, bytes], tags: Iterable[int]) -> list[str]:
    return [f"{t:02X}" for t in tags if t not in card]


def _issuer_key(
    method: OdaMethod,
    card: Mapping[int, bytes],
    ca_keys: CaKeyStore,
    rid: bytes,
    today: date,
    is_revoked: RevocationCheck | None,
) -> RecoveredPublicKey | OdaResult:
    """Book 2 §5.2 (CA key retrieval) and §5.3 (issuer key) common to every method."""
    index_raw = card[TAG_CA_INDEX]
    if len(index_raw) != 1:
        return _fail(method, OdaFailure.ICC_DATA_MISSING, "CA Public Key Index (8F) malformed")
    index = index_raw[0]
    # Book 2 §5.2: the terminal must hold the CA key named by RID and index, and it must not
    # have expired (§11.2.1).
    ca_key = ca_keys.lookup(rid, index, today)
    if ca_key is None:
        if ca_keys.get(rid, index) is not None:
            return _fail(method, OdaFailure.CA_KEY_EXPIRED, f"CA key {index:02X} has expired")
        return _fail(method, OdaFailure.CA_KEY_MISSING, f"no CA key {index:02X} for this RID")
    issuer = recover_issuer_public_key(
        ca_key,
        card[TAG_ISSUER_CERT],
        card.get(TAG_ISSUER_REMAINDER),
        card[TAG_ISSUER_EXPONENT],
        card[TAG_PAN],
        today,
        is_revoked=is_revoked,
    )
    if issuer.key is None or issuer.failure is not None:
        return _fail(method, issuer.failure or OdaFailure.ISSUER_CERT_HASH, issuer.detail)
    return issuer.key


def _icc_key(
    method: OdaMethod,
    card: Mapping[int, bytes],
    static_data: bytes,
    ca_keys: CaKeyStore,
    rid: bytes,
    today: date,
    is_revoked: RevocationCheck | None,
) -> RecoveredPublicKey | OdaResult:
    """Book 2 §6.2-§6.4: issuer key then ICC key."""
    missing = _missing(
        card,
        (
            TAG_CA_INDEX,
            TAG_ISSUER_CERT,
            TAG_ISSUER_EXPONENT,
            TAG_PAN,
            TAG_ICC_CERT,
            TAG_ICC_EXPONENT,
        ),
    )
    if missing:
        return _fail(method, OdaFailure.ICC_DATA_MISSING, "absent: " + ", ".join(missing))
    issuer = _issuer_key(method, card, ca_keys, rid, today, is_revoked)
    if isinstance(issuer, OdaResult):
        return issuer
    icc = recover_icc_public_key(
        issuer,
        card[TAG_ICC_CERT],
        card.get(TAG_ICC_REMAINDER),
        card[TAG_ICC_EXPONENT],
        card[TAG_PAN],
        static_data,
        today,
    )
    if icc.key is None or icc.failure is not None:
        return _fail(method, icc.failure or OdaFailure.ICC_CERT_HASH, icc.detail, issuer_key=issuer)
    return icc.key


def perform_sda(
    card: Mapping[int, bytes],
    static_data: bytes,
    ca_keys: CaKeyStore,
    rid: bytes,
    today: date,
    *,
    is_revoked: RevocationCheck | None = None,
) -> OdaResult:
    """Static Data Authentication, EMV Book 2 §5 (mandatory data §5.1: 8F, 90, 9F32, 93)."""
    m = OdaMethod.SDA
    missing = _missing(
        card, (TAG_CA_INDEX, TAG_ISSUER_CERT, TAG_ISSUER_EXPONENT, TAG_SSAD, TAG_PAN)
    )
    if missing:
        return _fail(m, OdaFailure.ICC_DATA_MISSING, "absent: " + ", ".join(missing))
    issuer = _issuer_key(m, card, ca_keys, rid, today, is_revoked)
    if isinstance(issuer, OdaResult):
        return issuer
    return verify_ssad(issuer, card[TAG_SSAD], static_data)


def perform_dda(
    card: Mapping[int, bytes],
    static_data: bytes,
    ca_keys: CaKeyStore,
    rid: bytes,
    today: date,
    terminal_dynamic_data: bytes,
    *,
    sdad: bytes | None = None,
    is_revoked: RevocationCheck | None = None,
) -> OdaResult:
    """Dynamic Data Authentication, EMV Book 2 §6.1-§6.5.

    ``sdad`` is the INTERNAL AUTHENTICATE response's 9F4B (default: ``card[0x9F4B]``);
    ``terminal_dynamic_data`` the DDOL related data sent with it.
    """
    m = OdaMethod.DDA
    icc = _icc_key(m, card, static_data, ca_keys, rid, today, is_revoked)
    if isinstance(icc, OdaResult):
        return icc
    signature = sdad if sdad is not None else card.get(TAG_SDAD)
    if signature is None:
        return _fail(m, OdaFailure.ICC_DATA_MISSING, "absent: 9F4B", icc_key=icc)
    return verify_sdad(icc, signature, terminal_dynamic_data, method=m)


def perform_fdda(
    card: Mapping[int, bytes],
    static_data: bytes,
    ca_keys: CaKeyStore,
    rid: bytes,
    today: date,
    *,
    unpredictable_number: bytes,
    amount_authorised: bytes,
    currency_code: bytes,
    is_revoked: RevocationCheck | None = None,
) -> OdaResult:
    """Visa fDDA (EMV Book C-3): SDAD (9F4B) and 9F69 come from the card's data."""
    m = OdaMethod.FDDA
    if TAG_SDAD not in card:
        return _fail(m, OdaFailure.ICC_DATA_MISSING, "absent: 9F4B")
    icc = _icc_key(m, card, static_data, ca_keys, rid, today, is_revoked)
    if isinstance(icc, OdaResult):
        return icc
    return verify_fdda(
        icc,
        card[TAG_SDAD],
        unpredictable_number,
        amount_authorised,
        currency_code,
        card.get(TAG_CARD_AUTH_DATA),
    )


def perform_cda(
    card: Mapping[int, bytes],
    static_data: bytes,
    ca_keys: CaKeyStore,
    rid: bytes,
    today: date,
    *,
    genac_response: bytes,
    unpredictable_number: bytes,
    pdol_data: bytes,
    cdol1_data: bytes,
    cdol2_data: bytes | None = None,
    is_revoked: RevocationCheck | None = None,
) -> OdaResult:
    """Combined DDA/Application Cryptogram Generation, EMV Book 2 §6.6."""
    m = OdaMethod.CDA
    icc = _icc_key(m, card, static_data, ca_keys, rid, today, is_revoked)
    if isinstance(icc, OdaResult):
        return icc
    return verify_cda(icc, genac_response, unpredictable_number, pdol_data, cdol1_data, cdol2_data)
