"""Command APDUs the kernels send and the parsing of the card's responses.

Commands follow EMV Book 3 §6.5 and Book C-2/C-3; transport rules (ISO/IEC 7816-4 §5.1.3,
EMV Book 1 §9.3.1) for '61xx' (more data: GET RESPONSE) and '6Cxx' (wrong Le: resend
with the exact length) are handled once, in :class:`ApduExchange`, so no kernel step sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .errors import EmvError
from .tlv import encode_one


class ApduError(EmvError):
    """A response too short to carry a status word, or a transport rule broken by the card."""


class CryptogramType(IntEnum):
    """Reference control parameter of GENERATE AC, bits 8-7 (Book 3 §6.5.5.2, Table 12)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80


@dataclass(frozen=True, slots=True)
class CommandApdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    name: str = ""

    def encode(self) -> bytes:
        if len(self.data) > 255:
            raise ApduError(f"{self.name or 'command'} data of {len(self.data)} bytes exceeds 255")
        out = bytes([self.cla, self.ins, self.p1, self.p2])
        if self.data:
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([self.le & 0xFF])
        return out

    def with_le(self, le: int) -> CommandApdu:
        return CommandApdu(self.cla, self.ins, self.p1, self.p2, self.data, le, self.name)


def select(name: bytes, *, next_occurrence: bool = False) -> CommandApdu:
    """SELECT by DF name (Book 1 §11.3.2): P1 '04', P2 '00' first or '02' next occurrence."""
    return CommandApdu(0x00, 0xA4, 0x04, 0x02 if next_occurrence else 0x00, name, 0x00, "SELECT")


PPSE_NAME: Final = b"2PAY.SYS.DDF01"


def select_ppse() -> CommandApdu:
    """SELECT of the Proximity Payment System Environment (Book B §3.3.2)."""
    return select(PPSE_NAME)


def get_processing_options(pdol_related_data: bytes) -> CommandApdu:
    """GET PROCESSING OPTIONS (Book 3 §6.5.8): data is the template '83' around PDOL data."""
    body = encode_one(0x83, pdol_related_data)
    return CommandApdu(0x80, 0xA8, 0x00, 0x00, body, 0x00, "GET PROCESSING OPTIONS")


def read_record(sfi: int, record: int) -> CommandApdu:
    """READ RECORD (Book 3 §6.5.11): P2 is SFI in bits 8-4 and '100' (P1 is a record number)."""
    if not 1 <= sfi <= 30:
        raise ApduError(f"SFI {sfi} is outside 1-30")
    if not 1 <= record <= 255:
        raise ApduError(f"record number {record} is outside 1-255")
    return CommandApdu(0x00, 0xB2, record, (sfi << 3) | 0x04, b"", 0x00, "READ RECORD")


def generate_ac(
    cryptogram: CryptogramType, cdol_related_data: bytes, *, cda_requested: bool = False
) -> CommandApdu:
    """GENERATE AC (Book 3 §6.5.5): P1 bits 8-7 the type, bit 5 CDA signature requested."""
    p1 = int(cryptogram) | (0x10 if cda_requested else 0x00)
    return CommandApdu(0x80, 0xAE, p1, 0x00, cdol_related_data, 0x00, "GENERATE AC")


def get_data(tag: int) -> CommandApdu:
    """GET DATA (Book 3 §6.5.7) for a one- or two-byte tag: ATC, PIN Try Counter, logs."""
    if not 0 < tag <= 0xFFFF:
        raise ApduError(f"GET DATA takes a one- or two-byte tag, got {tag:X}")
    return CommandApdu(0x80, 0xCA, tag >> 8, tag & 0xFF, b"", 0x00, "GET DATA")


def internal_authenticate(ddol_related_data: bytes) -> CommandApdu:
    """INTERNAL AUTHENTICATE (Book 3 §6.5.9) for DDA."""
    return CommandApdu(0x00, 0x88, 0x00, 0x00, ddol_related_data, 0x00, "INTERNAL AUTHENTICATE")


def compute_cryptographic_checksum(udol_related_data: bytes) -> CommandApdu:
    """COMPUTE CRYPTOGRAPHIC CHECKSUM (Book C-2 §5.3) for mag-stripe mode."""
    return CommandApdu(
        0x80, 0x2A, 0x8E, 0x80, udol_related_data, 0x00, "COMPUTE CRYPTOGRAPHIC CHECKSUM"
    )


def get_response(length: int) -> CommandApdu:
    """GET RESPONSE (ISO/IEC 7816-4 §7.6.1) for the bytes announced by '61xx'."""
    return CommandApdu(0x00, 0xC0, 0x00, 0x00, b"", length, "GET RESPONSE")


# Book 3 §6.3.5 and ISO/IEC 7816-4 §5.1.3: the status words a terminal meets.
_STATUS_MEANINGS: Final[dict[int, str]] = {
    0x9000: "success",
    0x6200: "warning: no information given",
    0x6281: "warning: part of returned data may be corrupted",
    0x6282: "warning: end of file or record reached before reading Le bytes",
    0x6283: "warning: selected file invalidated (application blocked)",
    0x6284: "warning: FCI not formatted according to ISO 7816-4",
    0x6300: "authentication failed",
    0x6400: "execution error: state of non-volatile memory unchanged",
    0x6581: "memory failure",
    0x6700: "wrong length",
    0x6882: "secure messaging not supported",
    0x6900: "command not allowed",
    0x6981: "command incompatible with file structure",
    0x6982: "security status not satisfied",
    0x6983: "authentication method blocked",
    0x6984: "referenced data invalidated",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed: no current EF",
    0x6A80: "incorrect parameters in the data field",
    0x6A81: "function not supported (card or application blocked)",
    0x6A82: "file or application not found",
    0x6A83: "record not found",
    0x6A84: "not enough memory space in the file",
    0x6A86: "incorrect parameters P1-P2",
    0x6A88: "referenced data not found",
    0x6B00: "wrong parameters P1-P2",
    0x6D00: "instruction code not supported or invalid",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
}


def status_meaning(sw: int) -> str:
    if sw in _STATUS_MEANINGS:
        return _STATUS_MEANINGS[sw]
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return f"{sw2} more bytes available (GET RESPONSE)"
    if sw1 == 0x6C:
        return f"wrong Le: exact length is {sw2}"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"verification failed, {sw2 & 0x0F} tries left"
    if sw1 in (0x62, 0x63):
        return "warning: non-volatile memory changed or state unchanged"
    return "unknown status"


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    data: bytes
    sw: int

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise ApduError(f"response of {len(raw)} bytes has no status word")
        return cls(bytes(raw[:-2]), (raw[-2] << 8) | raw[-1])

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    @property
    def warning(self) -> bool:
        """'62xx'/'63xx': processed with a warning; data may still be present (Book 1 §9.4)."""
        return self.sw >> 8 in (0x62, 0x63)

    @property
    def meaning(self) -> str:
        return status_meaning(self.sw)

    def describe(self) -> str:
        return f"{self.sw:04X} ({self.meaning})"


#: Bounds on what a card may ask of the transport, so a hostile card cannot loop forever.
MAX_GET_RESPONSE: Final = 32
MAX_RESPONSE_BYTES: Final = 8192


class ApduExchange:
    """Sans-I/O handling of '61xx' and '6Cxx' for one command.

    ``start()`` gives the bytes to send; each ``feed(raw)`` gives either the next bytes to
    send (a GET RESPONSE or the command resent with the right Le) or the final response.
    """

    def __init__(self, command: CommandApdu) -> None:
        self.command = command
        self._collected = b""
        self._get_responses = 0
        self._resent = False
        self.exchanges = 0

    def start(self) -> bytes:
        return self.command.encode()

    def feed(self, raw: bytes) -> bytes | ResponseApdu:
        self.exchanges += 1
        response = ResponseApdu.parse(raw)
        sw1, sw2 = response.sw >> 8, response.sw & 0xFF
        if sw1 == 0x61:
            self._collected += response.data
            self._get_responses += 1
            if self._get_responses > MAX_GET_RESPONSE:
                raise ApduError(
                    f"{self.command.name}: card kept answering 61xx after "
                    f"{MAX_GET_RESPONSE} GET RESPONSE commands"
                )
            if len(self._collected) > MAX_RESPONSE_BYTES:
                raise ApduError(f"{self.command.name}: response exceeds {MAX_RESPONSE_BYTES} bytes")
            return get_response(sw2 if sw2 else 256).encode()
        if sw1 == 0x6C:
            if self._resent:
                raise ApduError(f"{self.command.name}: card answered 6Cxx twice")
            self._resent = True
            return self.command.with_le(sw2).encode()
        return ResponseApdu(self._collected + response.data, response.sw)
