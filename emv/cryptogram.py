"""Issuer-side application cryptogram arithmetic (EMV 4.4 Book 2, §8 and Annex A1).

This is the arithmetic shared by the simulated card (which generates ARQC/TC/AAC and checks the
ARPC) and the simulated acquirer/issuer host (which verifies the ARQC and generates the ARPC):

* ISO/IEC 9797-1 MAC algorithm 3 ("retail MAC") with padding method 1 or 2 (Book 2 A1.2.1);
* ICC master key derivation Option A (Book 2 A1.4.1);
* session key derivation: EMV common session key derivation (Book 2 A1.3.1) with
  R = ATC || 00..00 (Book 2 §8.1.2), and the Mastercard proprietary variant with
  R = ATC || 00 00 || UN (see :func:`derive_mastercard_session_key`);
* application cryptogram generation over caller-supplied data (Book 2 §8.1.2) and the
  recommended minimum data set of Book 2 §8.1.1, Table 26;
* ARPC method 1 (Book 2 §8.2.1) and method 2 (Book 2 §8.2.2).

Only double-length (16-byte) 3DES keys are supported; the AES variants of Book 2 A1.3/A1.4
are not implemented. Nothing here logs, and no error message ever contains a key or a PAN.
The module is pure: no clock, no randomness.
"""

from __future__ import annotations

import datetime
import hmac
from typing import Final, Literal

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from emv.errors import EmvError

__all__ = [
    "AC_LENGTH",
    "ARPC_METHOD_2_LENGTH",
    "DES_BLOCK",
    "CryptogramError",
    "PaddingMethod",
    "adjust_odd_parity",
    "build_ac_data",
    "derive_common_session_key",
    "derive_icc_master_key_option_a",
    "derive_mastercard_session_key",
    "derive_session_key",
    "generate_ac",
    "generate_arpc_method_1",
    "generate_arpc_method_2",
    "key_check_value",
    "pad_method_1",
    "pad_method_2",
    "retail_mac",
    "verify_ac",
    "verify_arpc_method_1",
    "verify_arpc_method_2",
]

DES_BLOCK: Final = 8
"""Block size of (triple) DES in bytes."""

AC_LENGTH: Final = 8
"""Length of an application cryptogram (9F26) in bytes (Book 2 §8.1.2)."""

ARPC_METHOD_2_LENGTH: Final = 4
"""Length of an ARPC produced by method 2 (Book 2 §8.2.2)."""

_KEY_LENGTH: Final = 16

PaddingMethod = Literal[1, 2]
"""ISO/IEC 9797-1 padding method: 1 = zero bytes, 2 = '80' then zero bytes."""


class CryptogramError(EmvError):
    """Bad input to the cryptogram arithmetic (wrong key length, malformed PAN, ...)."""


# --- primitives ---------------------------------------------------------------------------


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes | bytearray):
        raise CryptogramError(f"{what}: expected bytes, got {type(key).__name__}")
    if len(key) != _KEY_LENGTH:
        raise CryptogramError(
            f"{what}: expected a 16-byte double-length 3DES key, got {len(key)} bytes"
        )


def _check_len(value: bytes, length: int, what: str) -> None:
    if not isinstance(value, bytes | bytearray):
        raise CryptogramError(f"{what}: expected bytes, got {type(value).__name__}")
    if len(value) != length:
        raise CryptogramError(f"{what}: expected {length} bytes, got {len(value)}")


def _ecb_encrypt(key24: bytes, block: bytes) -> bytes:
    encryptor = Cipher(TripleDES(key24), modes.ECB()).encryptor()  # noqa: S305 - single block
    return encryptor.update(block) + encryptor.finalize()


def _ecb_decrypt(key24: bytes, block: bytes) -> bytes:
    decryptor = Cipher(TripleDES(key24), modes.ECB()).decryptor()  # noqa: S305 - single block
    return decryptor.update(block) + decryptor.finalize()


def _des_encrypt(key8: bytes, block: bytes) -> bytes:
    # Single DES is 3DES with K1 = K2 = K3 (EDE collapses to E).
    return _ecb_encrypt(key8 * 3, block)


def _des_decrypt(key8: bytes, block: bytes) -> bytes:
    return _ecb_decrypt(key8 * 3, block)


def _tdes_encrypt(key16: bytes, block: bytes) -> bytes:
    # Double-length key: K1 || K2 || K1 (Book 2 A1.1, "DES3(K)[X]").
    return _ecb_encrypt(key16 + key16[:8], block)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def adjust_odd_parity(key: bytes) -> bytes:
    """Set the least significant bit of every byte so each byte has odd parity (DES keys)."""
    return bytes(b ^ ((b.bit_count() + 1) & 1) for b in key)


def key_check_value(key: bytes, length: int = 3) -> bytes:
    """Key check value: the leftmost `length` bytes of DES3(key)[00..00] (ANSI X9.24).

    Safe to log or display, unlike the key itself.
    """
    _check_key(key, "key")
    if not 1 <= length <= DES_BLOCK:
        raise CryptogramError(f"KCV length: expected 1..8 bytes, got {length}")
    return _tdes_encrypt(bytes(key), bytes(DES_BLOCK))[:length]


# --- ISO/IEC 9797-1 padding and MAC (Book 2 A1.2) -----------------------------------------


def pad_method_1(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 1: zero bytes up to a multiple of 8.

    Data already a multiple of 8 is left alone; empty data becomes one zero block.
    """
    if data and len(data) % DES_BLOCK == 0:
        return bytes(data)
    return bytes(data) + bytes(-len(data) % DES_BLOCK or DES_BLOCK)


def pad_method_2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: '80' then zero bytes up to a multiple of 8.

    Book 2 A1.2.1: the '80' byte is always appended, even to data already block-aligned.
    """
    padded = bytes(data) + b"\x80"
    return padded + bytes(-len(padded) % DES_BLOCK)


def retail_mac(key: bytes, data: bytes, *, padding: PaddingMethod = 2) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with single-DES CBC and a 3DES final block.

    Book 2 A1.2.1: the data is padded, chained with DES under K_L, and the last chaining
    value is then decrypted under K_R and encrypted again under K_L. Returns the full
    8-byte MAC; callers truncate where their clause says so.
    """
    _check_key(key, "MAC key")
    if padding == 1:
        padded = pad_method_1(data)
    elif padding == 2:
        padded = pad_method_2(data)
    else:
        raise CryptogramError(f"padding: expected ISO/IEC 9797-1 method 1 or 2, got {padding!r}")
    k_left, k_right = bytes(key[:8]), bytes(key[8:])
    chain = bytes(DES_BLOCK)
    for offset in range(0, len(padded), DES_BLOCK):
        chain = _des_encrypt(k_left, _xor(chain, padded[offset : offset + DES_BLOCK]))
    return _des_encrypt(k_left, _des_decrypt(k_right, chain))


# --- key derivation (Book 2 A1.3, A1.4) ---------------------------------------------------


def _pan_digits(pan: str) -> str:
    if not isinstance(pan, str):
        raise CryptogramError(f"PAN: expected a string of digits, got {type(pan).__name__}")
    for position, char in enumerate(pan):
        if char not in "0123456789":
            # Never echo the PAN itself: only where the bad character is.
            raise CryptogramError(
                f"PAN: expected decimal digits only, found a non-digit at position {position}"
            )
    if not 12 <= len(pan) <= 19:
        raise CryptogramError(f"PAN: expected 12 to 19 digits, got {len(pan)}")
    return pan


def derive_icc_master_key_option_a(
    issuer_master_key: bytes, pan: str, pan_sequence_number: int | None = None
) -> bytes:
    """Derive the 16-byte ICC master key MK from the issuer master key (Book 2 A1.4.1).

    Y is the rightmost 16 digits of PAN || PSN (PSN '00' when absent), left-padded with
    zeros if shorter, packed as 8 bytes of BCD. MK = DES3(IMK)[Y] || DES3(IMK)[Y xor FF..FF],
    with each byte then set to odd parity.

    `pan` is the PAN as decimal digits (no 'F' padding); `pan_sequence_number` is the value of
    5F34 as an integer 0..99, or None when the card has none.
    """
    _check_key(issuer_master_key, "issuer master key")
    digits = _pan_digits(pan)
    if pan_sequence_number is None:
        psn = 0
    elif (
        isinstance(pan_sequence_number, bool)
        or not isinstance(pan_sequence_number, int)
        or not 0 <= pan_sequence_number <= 99
    ):
        raise CryptogramError(
            f"PAN sequence number: expected an integer 0..99 (n2), got {pan_sequence_number!r}"
        )
    else:
        psn = pan_sequence_number
    y_digits = (digits + f"{psn:02d}")[-16:].rjust(16, "0")
    y = bytes.fromhex(y_digits)
    z_left = _tdes_encrypt(bytes(issuer_master_key), y)
    z_right = _tdes_encrypt(bytes(issuer_master_key), _xor(y, b"\xff" * DES_BLOCK))
    return adjust_odd_parity(z_left + z_right)


def derive_session_key(master_key: bytes, diversification: bytes) -> bytes:
    """EMV common session key derivation (Book 2 A1.3.1) from an 8-byte diversification value R.

    SK = DES3(MK)[R0 R1 'F0' R3..R7] || DES3(MK)[R0 R1 '0F' R3..R7], each byte then set to
    odd parity like the ICC master key (DES ignores the parity bits, so the cryptograms do
    not change; the adjusted form is what HSMs and published vectors show).
    """
    _check_key(master_key, "ICC master key")
    _check_len(diversification, DES_BLOCK, "diversification value R")
    r = bytes(diversification)
    f1 = r[:2] + b"\xf0" + r[3:]
    f2 = r[:2] + b"\x0f" + r[3:]
    return adjust_odd_parity(
        _tdes_encrypt(bytes(master_key), f1) + _tdes_encrypt(bytes(master_key), f2)
    )


def _atc_bytes(atc: int) -> bytes:
    if isinstance(atc, bool) or not isinstance(atc, int) or not 0 <= atc <= 0xFFFF:
        raise CryptogramError(f"ATC: expected an integer 0..65535, got {atc!r}")
    return atc.to_bytes(2, "big")


def derive_common_session_key(icc_master_key: bytes, atc: int) -> bytes:
    """Application cryptogram session key from the ATC (Book 2 §8.1.2 with A1.3.1).

    R = ATC || '00 00 00 00 00 00'.
    """
    return derive_session_key(icc_master_key, _atc_bytes(atc) + bytes(6))


def derive_mastercard_session_key(
    icc_master_key: bytes, atc: int, unpredictable_number: bytes
) -> bytes:
    """Mastercard proprietary session key derivation ("Mastercard SKD" of M/Chip).

    The card key is diversified with R = ATC || '00 00' || UN, with byte 3 forced to 'F0' /
    '0F' for the left / right halves exactly as in A1.3.1; that is
    SK_L = DES3(MK)[ATC || F0 00 || UN] and SK_R = DES3(MK)[ATC || 0F 00 || UN].
    Checked against an HSM-verified public vector (Interac CVN 133, which uses this SKD).
    """
    _check_len(unpredictable_number, 4, "unpredictable number (9F37)")
    return derive_session_key(
        icc_master_key, _atc_bytes(atc) + b"\x00\x00" + bytes(unpredictable_number)
    )


# --- application cryptograms (Book 2 §8.1) ------------------------------------------------


def _bcd(value: int, digits: int, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CryptogramError(f"{what}: expected an integer, got {type(value).__name__}")
    if not 0 <= value < 10**digits:
        raise CryptogramError(f"{what}: expected 0..{10**digits - 1} (n{digits}), got {value}")
    text = f"{value:0{digits + digits % 2}d}"
    return bytes.fromhex(text)


def build_ac_data(
    *,
    amount_authorised: int,
    amount_other: int,
    terminal_country_code: int,
    tvr: bytes,
    transaction_currency_code: int,
    transaction_date: datetime.date,
    transaction_type: int,
    unpredictable_number: bytes,
    aip: bytes,
    atc: int,
    iad: bytes | None = None,
) -> bytes:
    """Concatenate the recommended minimum data set for an AC (Book 2 §8.1.1, Table 26).

    Order: 9F02 amount (n12), 9F03 other amount (n12), 9F1A terminal country (n3),
    95 TVR (5), 5F2A currency (n3), 9A date (n6 YYMMDD), 9C transaction type (n2),
    9F37 UN (4), 82 AIP (2), 9F36 ATC (2), then `iad` when given.

    Amounts are integer minor units. `transaction_type` is the decimal reading of the n2
    value (0 = purchase, 1 = cash, 9 = purchase with cashback, 20 = refund). Pass `iad` for
    CVNs that append the Issuer Application Data (e.g. Visa CVN 18 appends all of 9F10; for
    CVN 10 pass just the CVR bytes).
    """
    _check_len(tvr, 5, "TVR (95)")
    _check_len(unpredictable_number, 4, "unpredictable number (9F37)")
    _check_len(aip, 2, "AIP (82)")
    if not isinstance(transaction_date, datetime.date):
        raise CryptogramError(
            "transaction date (9A): expected a datetime.date, got "
            f"{type(transaction_date).__name__}"
        )
    if iad is not None and not isinstance(iad, bytes | bytearray):
        raise CryptogramError(f"IAD (9F10): expected bytes, got {type(iad).__name__}")
    date = bytes.fromhex(transaction_date.strftime("%y%m%d"))
    return b"".join(
        [
            _bcd(amount_authorised, 12, "amount authorised (9F02)"),
            _bcd(amount_other, 12, "amount other (9F03)"),
            _bcd(terminal_country_code, 3, "terminal country code (9F1A)"),
            bytes(tvr),
            _bcd(transaction_currency_code, 3, "transaction currency code (5F2A)"),
            date,
            _bcd(transaction_type, 2, "transaction type (9C)"),
            bytes(unpredictable_number),
            bytes(aip),
            _atc_bytes(atc),
            bytes(iad) if iad is not None else b"",
        ]
    )


def generate_ac(session_key: bytes, data: bytes, *, padding: PaddingMethod = 2) -> bytes:
    """Generate an 8-byte application cryptogram (ARQC, TC or AAC) over `data`.

    Book 2 §8.1.2: the AC is the MAC of A1.2.1 over the data under the AC session key.
    EMV uses padding method 2; some scheme CVNs (Visa CVN 10) use method 1.
    """
    if not isinstance(data, bytes | bytearray):
        raise CryptogramError(f"AC data: expected bytes, got {type(data).__name__}")
    return retail_mac(session_key, bytes(data), padding=padding)


def verify_ac(
    session_key: bytes, data: bytes, cryptogram: bytes, *, padding: PaddingMethod = 2
) -> bool:
    """Check an application cryptogram in constant time. A mismatch is an outcome, not a fault."""
    _check_len(cryptogram, AC_LENGTH, "application cryptogram (9F26)")
    expected = generate_ac(session_key, data, padding=padding)
    return hmac.compare_digest(expected, bytes(cryptogram))


# --- authorisation response cryptograms (Book 2 §8.2) -------------------------------------


def generate_arpc_method_1(key: bytes, arqc: bytes, arc: bytes) -> bytes:
    """ARPC method 1 (Book 2 §8.2.1): DES3(key)[ARQC xor (ARC || '00' * 6)].

    `arc` is the 2-byte Authorisation Response Code (8A). Book 2 uses the AC session key;
    some CVNs (Visa CVN 10) use the ICC master key: pass whichever the CVN specifies.
    """
    _check_key(key, "ARPC key")
    _check_len(arqc, AC_LENGTH, "ARQC")
    _check_len(arc, 2, "authorisation response code (8A)")
    return _tdes_encrypt(bytes(key), _xor(bytes(arqc), bytes(arc) + bytes(6)))


def generate_arpc_method_2(
    session_key: bytes, arqc: bytes, csu: bytes, proprietary_auth_data: bytes = b""
) -> bytes:
    """ARPC method 2 (Book 2 §8.2.2): the leftmost 4 bytes of MAC(SK)[ARQC || CSU || PAD].

    `csu` is the 4-byte Card Status Update; `proprietary_auth_data` is 0 to 8 bytes. The MAC
    is the A1.2.1 MAC with padding method 2.
    """
    _check_len(arqc, AC_LENGTH, "ARQC")
    _check_len(csu, 4, "card status update (CSU)")
    if not isinstance(proprietary_auth_data, bytes | bytearray):
        raise CryptogramError(
            "proprietary authentication data: expected bytes, got "
            f"{type(proprietary_auth_data).__name__}"
        )
    if len(proprietary_auth_data) > 8:
        raise CryptogramError(
            "proprietary authentication data: expected 0..8 bytes, got "
            f"{len(proprietary_auth_data)}"
        )
    data = bytes(arqc) + bytes(csu) + bytes(proprietary_auth_data)
    return retail_mac(session_key, data, padding=2)[:ARPC_METHOD_2_LENGTH]


def verify_arpc_method_1(key: bytes, arqc: bytes, arc: bytes, arpc: bytes) -> bool:
    """Check a method-1 ARPC in constant time (what the card does on EXTERNAL AUTHENTICATE)."""
    _check_len(arpc, AC_LENGTH, "ARPC")
    return hmac.compare_digest(generate_arpc_method_1(key, arqc, arc), bytes(arpc))


def verify_arpc_method_2(
    session_key: bytes,
    arqc: bytes,
    csu: bytes,
    arpc: bytes,
    proprietary_auth_data: bytes = b"",
) -> bool:
    """Check a method-2 ARPC in constant time."""
    _check_len(arpc, ARPC_METHOD_2_LENGTH, "ARPC")
    expected = generate_arpc_method_2(session_key, arqc, csu, proprietary_auth_data)
    return hmac.compare_digest(expected, bytes(arpc))
