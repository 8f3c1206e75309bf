"""TEST ONLY certificate authority, issuer and ICC keys for the card simulator.

This is the inverse of :mod:`emv.oda`: it builds the Issuer Public Key Certificate (EMV Book 2
§5.3, Table 6), the ICC Public Key Certificate (§6.4, Table 14), Signed Static Application
Data (§5.4, Table 7) and Signed Dynamic Application Data for DDA, fDDA and CDA (§6.5, §6.6,
Table 17) with raw RSA ``pow(m, d, n)`` (EMV Book 2 Annex A2.1).

Every key here is a TEST key: its private half ships in this repository
(``simulator/data/pki/``) so tests and the simulator start instantly. They must never be
loaded into a production terminal. Regenerate them with ``python -m simulator.pki``
(:func:`generate_test_pki`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final, NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa

from emv.capk import CaKeyStore, CaPublicKey, parse_ca_keys
from emv.tlv import encode_one

from .errors import SimulatorError

__all__ = [
    "DATA_DIR",
    "PKI_DIR",
    "TEST_CA_KEYS_FILE",
    "TEST_ONLY",
    "IccCertificate",
    "IccKeys",
    "IssuerCertificate",
    "IssuerKeys",
    "PkiError",
    "RsaKey",
    "TestCa",
    "build_cda_genac_response",
    "cda_icc_dynamic_data",
    "dda_icc_dynamic_data",
    "generate_test_pki",
    "load_test_ca_store",
    "make_card_oda_data",
    "make_icc_certificate",
    "make_issuer_certificate",
    "sign_sdad",
    "sign_ssad",
]

TEST_ONLY: Final = (
    "TEST ONLY - simulator keys with published private halves; never use in production"
)
DATA_DIR: Final = Path(__file__).resolve().parent / "data"
PKI_DIR: Final = DATA_DIR / "pki"
TEST_CA_KEYS_FILE: Final = DATA_DIR / "test_ca_keys.json"
_CA_PRIVATE_FILE: Final = "test_ca_private_keys.json"
_ISSUER_FILE: Final = "test_issuer_keys.json"
_ICC_FILE: Final = "test_icc_keys.json"

_HASH_SHA1: Final = 0x01
_RSA: Final = 0x01


class PkiError(SimulatorError):
    """The test PKI was asked for something it cannot build (unknown key, data too long)."""


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()  # noqa: S324 - SHA-1 is mandated by EMV Book 2 Annex B2.1


@dataclass(frozen=True)
class RsaKey:
    """A raw RSA key pair: modulus n, public exponent e, private exponent d."""

    modulus: int
    public_exponent: int
    private_exponent: int

    @property
    def length(self) -> int:
        """Modulus length in bytes (N_CA, N_I or N_IC in EMV Book 2)."""
        return (self.modulus.bit_length() + 7) // 8

    @property
    def modulus_bytes(self) -> bytes:
        return self.modulus.to_bytes(self.length, "big")

    @property
    def exponent_bytes(self) -> bytes:
        """The exponent as the card carries it: '03' or '010001' (EMV Book 2 §11.2.1)."""
        return self.public_exponent.to_bytes((self.public_exponent.bit_length() + 7) // 8, "big")

    def sign_raw(self, message: bytes) -> bytes:
        """S = M^d mod n, M being exactly the modulus length (EMV Book 2 Annex A2.1)."""
        if len(message) != self.length:
            raise PkiError(f"message is {len(message)} bytes, modulus is {self.length}")
        m = int.from_bytes(message, "big")
        if m >= self.modulus:
            raise PkiError("message is not smaller than the modulus")
        return pow(m, self.private_exponent, self.modulus).to_bytes(self.length, "big")

    @classmethod
    def generate(cls, bits: int, public_exponent: int = 3) -> RsaKey:
        """A fresh key of exactly ``bits`` bits (a multiple of 8, at least 1024: the floor
        `cryptography` enforces). Exponent 3 or 65537, both allowed by EMV Book 2 §11.2.1."""
        if bits % 8 or bits < 1024:
            raise PkiError("key size must be a multiple of 8 and at least 1024 bits")
        try:
            private = rsa.generate_private_key(public_exponent=public_exponent, key_size=bits)
        except ValueError as exc:
            raise PkiError(f"cannot generate RSA key: {exc}") from exc
        numbers = private.private_numbers()
        return cls(numbers.public_numbers.n, numbers.public_numbers.e, numbers.d)

    def to_json(self) -> dict[str, str]:
        return {
            "modulus": f"{self.modulus:X}",
            "public_exponent": f"{self.public_exponent:X}",
            "private_exponent": f"{self.private_exponent:X}",
        }

    @classmethod
    def from_json(cls, raw: dict[str, str]) -> RsaKey:
        try:
            return cls(
                int(raw["modulus"], 16),
                int(raw["public_exponent"], 16),
                int(raw["private_exponent"], 16),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise PkiError(f"malformed test key: {exc}") from exc


@functools.cache
def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read test PKI file {path}: {exc}") from exc


def _rid_bytes(rid: bytes | str) -> bytes:
    return bytes.fromhex(rid) if isinstance(rid, str) else bytes(rid)


@dataclass(frozen=True)
class TestCa:
    """A TEST certification authority: RID, CA Public Key Index and its key pair."""

    __test__ = False  # not a pytest test class

    rid: bytes
    index: int
    key: RsaKey
    expiry: date | None = None

    @classmethod
    def load(cls, rid: bytes | str, index: int, *, directory: Path = PKI_DIR) -> TestCa:
        """The shipped TEST CA for (RID, index), e.g. ``TestCa.load("A000000003", 0x92)``."""
        want = _rid_bytes(rid)
        entries = _read_json(directory / _CA_PRIVATE_FILE)
        if isinstance(entries, list):
            for entry in entries:
                if bytes.fromhex(entry["rid"]) == want and int(entry["index"], 16) == index:
                    expiry = entry.get("expiry")
                    return cls(
                        want,
                        index,
                        RsaKey.from_json(entry["key"]),
                        date.fromisoformat(expiry) if expiry else None,
                    )
        raise PkiError(f"no test CA key {want.hex().upper()}/{index:02X}")

    def public_key(self) -> CaPublicKey:
        """The terminal-side CA public key, with its EMV Book 2 §11.2.2 checksum."""
        key = CaPublicKey(
            self.rid, self.index, self.key.modulus_bytes, self.key.exponent_bytes, self.expiry
        )
        return CaPublicKey(
            key.rid, key.index, key.modulus, key.exponent, key.expiry, key.compute_checksum()
        )


def _load_named(file: str, name: str, directory: Path) -> RsaKey:
    entries = _read_json(directory / file)
    if not isinstance(entries, dict) or name not in entries:
        raise PkiError(f"no test key named {name!r} in {file}")
    return RsaKey.from_json(entries[name]["key"])


@dataclass(frozen=True)
class IssuerKeys:
    """A TEST issuer key pair (signs ICC certificates and SSAD)."""

    key: RsaKey

    @classmethod
    def load(cls, name: str = "visa_issuer", *, directory: Path = PKI_DIR) -> IssuerKeys:
        return cls(_load_named(_ISSUER_FILE, name, directory))

    @classmethod
    def generate(cls, bits: int = 1152, public_exponent: int = 3) -> IssuerKeys:
        return cls(RsaKey.generate(bits, public_exponent))


@dataclass(frozen=True)
class IccKeys:
    """A TEST ICC key pair (signs the SDAD for DDA, fDDA and CDA)."""

    key: RsaKey

    @classmethod
    def load(cls, name: str = "visa_card", *, directory: Path = PKI_DIR) -> IccKeys:
        return cls(_load_named(_ICC_FILE, name, directory))

    @classmethod
    def generate(cls, bits: int = 1024, public_exponent: int = 3) -> IccKeys:
        return cls(RsaKey.generate(bits, public_exponent))


class IssuerCertificate(NamedTuple):
    """Tags 90 (certificate), 92 (remainder, None when the key fits) and 9F32 (exponent)."""

    certificate: bytes
    remainder: bytes | None
    exponent: bytes


class IccCertificate(NamedTuple):
    """Tags 9F46 (certificate), 9F48 (remainder, None when the key fits), 9F47 (exponent)."""

    certificate: bytes
    remainder: bytes | None
    exponent: bytes


def _pad_digits(digits: str, size: int, what: str) -> bytes:
    if not digits.isdigit() or len(digits) > size * 2:
        raise PkiError(f"{what} must be at most {size * 2} digits")
    return bytes.fromhex(digits + "F" * (size * 2 - len(digits)))


def _mmyy(expiry_mmyy: str) -> bytes:
    if len(expiry_mmyy) != 4 or not expiry_mmyy.isdigit():
        raise PkiError("expiry must be 'MMYY'")
    return bytes.fromhex(expiry_mmyy)


def _split_key(modulus: bytes, room: int) -> tuple[bytes, bytes | None]:
    """Leftmost digits padded with 'BB', and the remainder (Book 2 Tables 6 and 14)."""
    if len(modulus) <= room:
        return modulus + b"\xbb" * (room - len(modulus)), None
    return modulus[:room], modulus[room:]


def _sign(key: RsaKey, body: bytes, hash_input_tail: bytes) -> bytes:
    """6A || body || SHA-1(body || tail) || BC, signed with ``key``."""
    return key.sign_raw(b"\x6a" + body + _sha1(body + hash_input_tail) + b"\xbc")


def make_issuer_certificate(
    ca: TestCa,
    issuer: IssuerKeys,
    issuer_identifier: str,
    expiry_mmyy: str,
    serial: bytes,
    *,
    certificate_format: int = 0x02,
    hash_algorithm: int = _HASH_SHA1,
    key_algorithm: int = _RSA,
) -> IssuerCertificate:
    """Issuer Public Key Certificate signed by the CA, EMV Book 2 §5.3, Table 6.

    ``issuer_identifier`` is the leftmost 3-8 PAN digits; ``serial`` 3 bytes.
    """
    n_ca = ca.key.length
    if len(serial) != 3:
        raise PkiError("certificate serial number must be 3 bytes")
    modulus = issuer.key.modulus_bytes
    exponent = issuer.key.exponent_bytes
    leftmost, remainder = _split_key(modulus, n_ca - 36)
    body = (
        bytes([certificate_format])
        + _pad_digits(issuer_identifier, 4, "issuer identifier")
        + _mmyy(expiry_mmyy)
        + serial
        + bytes([hash_algorithm, key_algorithm, len(modulus), len(exponent)])
        + leftmost
    )
    cert = _sign(ca.key, body, (remainder or b"") + exponent)
    return IssuerCertificate(cert, remainder, exponent)


def make_icc_certificate(
    issuer: IssuerKeys,
    icc: IccKeys,
    pan: str,
    expiry_mmyy: str,
    static_data: bytes,
    *,
    serial: bytes = b"\x00\x00\x01",
    certificate_format: int = 0x04,
    hash_algorithm: int = _HASH_SHA1,
    key_algorithm: int = _RSA,
) -> IccCertificate:
    """ICC Public Key Certificate signed by the issuer, EMV Book 2 §6.4, Table 14.

    The hash covers the static data to be authenticated (Book 3 §10.3).
    """
    n_i = issuer.key.length
    if len(serial) != 3:
        raise PkiError("certificate serial number must be 3 bytes")
    modulus = icc.key.modulus_bytes
    exponent = icc.key.exponent_bytes
    leftmost, remainder = _split_key(modulus, n_i - 42)
    body = (
        bytes([certificate_format])
        + _pad_digits(pan, 10, "PAN")
        + _mmyy(expiry_mmyy)
        + serial
        + bytes([hash_algorithm, key_algorithm, len(modulus), len(exponent)])
        + leftmost
    )
    cert = _sign(issuer.key, body, (remainder or b"") + exponent + static_data)
    return IccCertificate(cert, remainder, exponent)


def sign_ssad(
    issuer: IssuerKeys, dac: bytes, static_data: bytes, *, signed_data_format: int = 0x03
) -> bytes:
    """Signed Static Application Data (tag 93), EMV Book 2 §5.4, Table 7."""
    if len(dac) != 2:
        raise PkiError("Data Authentication Code must be 2 bytes")
    n_i = issuer.key.length
    body = bytes([signed_data_format, _HASH_SHA1]) + dac + b"\xbb" * (n_i - 26)
    return _sign(issuer.key, body, static_data)


def sign_sdad(
    icc: IccKeys,
    icc_dynamic_data: bytes,
    terminal_dynamic_data: bytes,
    *,
    signed_data_format: int = 0x05,
) -> bytes:
    """Signed Dynamic Application Data (tag 9F4B), EMV Book 2 §6.5.1 / §6.6.1, Table 17.

    For DDA ``terminal_dynamic_data`` is the DDOL related data; for fDDA the data of
    :func:`emv.oda.fdda_terminal_dynamic_data`; for CDA the Unpredictable Number.
    """
    n_ic = icc.key.length
    l_dd = len(icc_dynamic_data)
    if l_dd > n_ic - 25:
        raise PkiError(f"ICC Dynamic Data of {l_dd} bytes does not fit a {n_ic}-byte key")
    body = (
        bytes([signed_data_format, _HASH_SHA1, l_dd])
        + icc_dynamic_data
        + b"\xbb" * (n_ic - l_dd - 25)
    )
    return _sign(icc.key, body, terminal_dynamic_data)


def dda_icc_dynamic_data(icc_dynamic_number: bytes) -> bytes:
    """ICC Dynamic Data for DDA/fDDA: length || ICC Dynamic Number (Book 2 Table 18)."""
    if not 2 <= len(icc_dynamic_number) <= 8:
        raise PkiError("ICC Dynamic Number must be 2..8 bytes")
    return bytes([len(icc_dynamic_number)]) + icc_dynamic_number


def cda_icc_dynamic_data(
    icc_dynamic_number: bytes, cid: int, application_cryptogram: bytes, transaction_data_hash: bytes
) -> bytes:
    """ICC Dynamic Data for CDA (Book 2 §6.6.1, Table 19): number, CID, AC, TDHC."""
    if len(application_cryptogram) != 8 or len(transaction_data_hash) != 20:
        raise PkiError("AC must be 8 bytes and the transaction data hash 20")
    return (
        dda_icc_dynamic_data(icc_dynamic_number)
        + bytes([cid])
        + application_cryptogram
        + transaction_data_hash
    )


def build_cda_genac_response(
    icc: IccKeys,
    *,
    cid: int,
    application_cryptogram: bytes,
    icc_dynamic_number: bytes,
    unpredictable_number: bytes,
    pdol_data: bytes,
    cdol1_data: bytes,
    other_objects: Sequence[tuple[int, bytes]] = (),
    cdol2_data: bytes | None = None,
) -> bytes:
    """A GENERATE AC response template '77' with CDA (EMV Book 2 §6.6.1, Book 3 §6.5.5.4).

    The response is 9F27 (CID), then ``other_objects`` (e.g. 9F36 ATC, 9F10 IAD) in order,
    then 9F4B. The AC travels only inside the SDAD. The Transaction Data Hash Code is SHA-1
    over PDOL data || CDOL1 data (|| CDOL2 data) || the response objects other than 9F4B.
    """
    objects = b"".join(encode_one(t, v) for t, v in ((0x9F27, bytes([cid])), *other_objects))
    tdhc = _sha1(pdol_data + cdol1_data + (cdol2_data or b"") + objects)
    dyn = cda_icc_dynamic_data(icc_dynamic_number, cid, application_cryptogram, tdhc)
    sdad = sign_sdad(icc, dyn, unpredictable_number)
    return encode_one(0x77, objects + encode_one(0x9F4B, sdad))


def make_card_oda_data(
    ca: TestCa,
    issuer: IssuerKeys,
    icc: IccKeys | None,
    pan: str,
    static_data: bytes,
    *,
    issuer_expiry_mmyy: str = "1249",
    icc_expiry_mmyy: str = "1249",
    issuer_serial: bytes = b"\x00\x00\x01",
    icc_serial: bytes = b"\x00\x00\x01",
    dac: bytes | None = None,
    issuer_identifier_digits: int = 6,
) -> dict[int, bytes]:
    """The card's ODA data objects as tag -> value: 8F, 90, 92?, 9F32, 5A, and either the
    ICC certificate (9F46, 9F48?, 9F47) when ``icc`` is given, or 93 (SSAD) when ``dac``."""
    issuer_cert = make_issuer_certificate(
        ca, issuer, pan[:issuer_identifier_digits], issuer_expiry_mmyy, issuer_serial
    )
    card: dict[int, bytes] = {
        0x8F: bytes([ca.index]),
        0x90: issuer_cert.certificate,
        0x9F32: issuer_cert.exponent,
        0x5A: bytes.fromhex(pan + ("F" if len(pan) % 2 else "")),
    }
    if issuer_cert.remainder is not None:
        card[0x92] = issuer_cert.remainder
    if icc is not None:
        icc_cert = make_icc_certificate(
            issuer, icc, pan, icc_expiry_mmyy, static_data, serial=icc_serial
        )
        card[0x9F46] = icc_cert.certificate
        card[0x9F47] = icc_cert.exponent
        if icc_cert.remainder is not None:
            card[0x9F48] = icc_cert.remainder
    if dac is not None:
        card[0x93] = sign_ssad(issuer, dac, static_data)
    return card


def load_test_ca_store(path: Path = TEST_CA_KEYS_FILE) -> CaKeyStore:
    """The TEST CA public keys of ``simulator/data/test_ca_keys.json`` as a key store."""
    raw = _read_json(path)
    if not isinstance(raw, list):
        raise PkiError(f"{path} must hold a list of CA keys")
    return CaKeyStore(parse_ca_keys(raw))


# (rid, index, bits, exponent, expiry) of the shipped TEST CAs; index 99 is expired on purpose.
DEFAULT_CAS: Final[tuple[tuple[str, int, int, int, str], ...]] = (
    ("A000000003", 0x92, 1408, 3, "2035-12-31"),
    ("A000000003", 0x94, 1984, 3, "2035-12-31"),
    ("A000000003", 0x99, 1408, 3, "2020-12-31"),
    ("A000000004", 0xF1, 1408, 3, "2035-12-31"),
    ("A000000004", 0xEF, 1984, 65537, "2035-12-31"),
)
# name -> (bits, exponent). Issuer 1152 under a 1408-bit CA needs a remainder (92) and
# under a 1984-bit CA fits; ICC 1024 under a 1152/1408-bit issuer needs a 9F48 remainder.
DEFAULT_ISSUERS: Final[dict[str, tuple[int, int]]] = {
    "visa_issuer": (1152, 3),
    "mc_issuer": (1408, 65537),
}
DEFAULT_ICCS: Final[dict[str, tuple[int, int]]] = {
    "visa_card": (1024, 3),
    "mc_card": (1024, 65537),
}


def generate_test_pki(
    data_dir: Path = DATA_DIR,
    *,
    cas: Sequence[tuple[str, int, int, int, str]] = DEFAULT_CAS,
    issuers: dict[str, tuple[int, int]] = DEFAULT_ISSUERS,
    iccs: dict[str, tuple[int, int]] = DEFAULT_ICCS,
) -> None:
    """(Re)generate every TEST key and write them under ``data_dir`` (slow: fresh RSA keys).

    Writes ``test_ca_keys.json`` (CA public keys with checksums, the terminal's view) and
    ``pki/test_ca_private_keys.json``, ``pki/test_issuer_keys.json``, ``pki/test_icc_keys.json``.
    """
    pki_dir = data_dir / "pki"
    pki_dir.mkdir(parents=True, exist_ok=True)
    public: list[dict[str, str]] = []
    private: list[dict[str, object]] = []
    for rid, index, bits, exponent, expiry in cas:
        ca = TestCa(
            bytes.fromhex(rid), index, RsaKey.generate(bits, exponent), date.fromisoformat(expiry)
        )
        pub = ca.public_key()
        public.append(
            {
                "label": TEST_ONLY,
                "rid": rid,
                "index": f"{index:02X}",
                "modulus": pub.modulus.hex().upper(),
                "exponent": pub.exponent.hex().upper(),
                "expiry": expiry,
                "sha1": (pub.sha1 or b"").hex().upper(),
            }
        )
        private.append(
            {
                "label": TEST_ONLY,
                "rid": rid,
                "index": f"{index:02X}",
                "expiry": expiry,
                "key": ca.key.to_json(),
            }
        )

    def named(specs: dict[str, tuple[int, int]]) -> dict[str, object]:
        return {
            name: {"label": TEST_ONLY, "key": RsaKey.generate(bits, e).to_json()}
            for name, (bits, e) in specs.items()
        }

    def write(path: Path, value: object) -> None:
        path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")

    write(data_dir / "test_ca_keys.json", public)
    write(pki_dir / _CA_PRIVATE_FILE, private)
    write(pki_dir / _ISSUER_FILE, named(issuers))
    write(pki_dir / _ICC_FILE, named(iccs))
    (pki_dir / "README.txt").write_text(
        TEST_ONLY + "\nGenerated by simulator.pki.generate_test_pki (python -m simulator.pki).\n",
        encoding="utf-8",
    )
    _read_json.cache_clear()


if __name__ == "__main__":  # pragma: no cover
    generate_test_pki()
    print(f"{TEST_ONLY}\nwrote test PKI under {DATA_DIR}")
