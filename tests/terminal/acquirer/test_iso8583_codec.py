"""The ISO 8583 codec, its MACs, framing, profile checks and traces.

Known answers: the MACs from the standards' own examples (ISO/IEC 9797-1:2011 Annex B, MAC
algorithm 3; RFC 4493 §4, AES-CMAC), and an 0800 written out byte by byte from ISO
8583:1987 (bitmaps worked by hand in the test), not from what the codec produced."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from emv import tlv
from terminal.acquirer.iso8583.codec import (
    FramingError,
    Iso8583Error,
    MacMismatchError,
    MessageFormatError,
    decode_message,
    encode_message,
    frame,
    mac_field,
    read_frame,
)
from terminal.acquirer.iso8583.mac import MacError, compute_mac
from terminal.acquirer.iso8583.profile import (
    Iso8583ProfileError,
    default_profile,
    load_profile,
    parse_profile,
)
from terminal.acquirer.iso8583.trace import trace_lines

PROFILE = default_profile()
#: A double-length DES key (ISO/IEC 9797-1 Annex B's K and K').
DES_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
#: RFC 4493's AES-128 key and message (those of NIST SP 800-38A).
AES_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_M = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


# --- MACs: the standards' examples -----------------------------------------------------


def test_retail_mac_is_iso_9797_1_annex_b_algorithm_3() -> None:
    # ISO/IEC 9797-1, Annex B: MAC algorithm 3, padding method 1, "Now is the time for all ".
    mac = compute_mac("iso9797-1-alg3", DES_KEY, b"Now is the time for all ", padding=1)
    assert mac.hex().upper() == "A1C72E74EA3FA9B6"


def _retail_mac_by_hand(key: bytes, data: bytes, padding: int) -> bytes:
    """ISO/IEC 9797-1 algorithm 3 written out with DES block by block (single DES is
    TripleDES with K1 = K2 = K3), for the padding method psec is not checked by above."""
    if padding == 2:
        data += b"\x80"
    data += bytes(-len(data) % 8)
    left, right = key[:8], key[8:]

    def des(k: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
        cipher = Cipher(TripleDES(k * 3), modes.ECB())
        op = cipher.decryptor() if decrypt else cipher.encryptor()
        return op.update(block) + op.finalize()

    state = bytes(8)
    for start in range(0, len(data), 8):
        block = bytes(a ^ b for a, b in zip(state, data[start : start + 8], strict=True))
        state = des(left, block)
    return des(left, des(right, state, decrypt=True))


@pytest.mark.parametrize(
    ("padding", "data"),
    [(2, b"")]
    + [
        (padding, data)
        for padding in (1, 2)
        for data in (b"0800", b"Now is the time for all ", bytes(range(37)))
    ],
)
def test_retail_mac_matches_the_algorithm_written_out(padding: int, data: bytes) -> None:
    mac = compute_mac("iso9797-1-alg3", DES_KEY, data, padding=padding)
    assert mac == _retail_mac_by_hand(DES_KEY, data, padding)


@pytest.mark.parametrize(
    ("length", "full_mac"),
    [
        # RFC 4493 §4, examples 1 to 4; the fields hold the leftmost 64 bits.
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_aes_cmac_is_rfc_4493_truncated_to_64_bits(length: int, full_mac: str) -> None:
    assert compute_mac("aes-cmac", AES_KEY, RFC4493_M[:length]) == bytes.fromhex(full_mac)[:8]


def test_mac_keys_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(MacError, match="16 bytes"):
        compute_mac("iso9797-1-alg3", bytes(24), b"x")
    with pytest.raises(MacError, match="16, 24 or 32"):
        compute_mac("aes-cmac", bytes(8), b"x")


# --- messages ----------------------------------------------------------------------------


def test_an_echo_test_0800_is_encoded_byte_for_byte() -> None:
    """ISO 8583:1987: an 0800 with STAN (11), terminal id (41) and network management code
    301 (70, echo test). Field 70 needs the secondary bitmap, so the MAC is field 128."""
    fields = {"11": "000001", "41": "TERM0001", "70": "301"}
    raw = encode_message(PROFILE, "0800", fields, DES_KEY)
    # Primary bitmap: bit 1 (secondary follows) and bit 11 -> 80 20, bit 41 -> byte 6 = 80.
    primary = bytes.fromhex("8020000000800000")
    # Secondary bitmap (bits 65-128): bit 70 -> 04 in its first byte, bit 128 -> 01 last.
    secondary = bytes.fromhex("0400000000000001")
    body = b"0800" + primary + secondary + b"000001" + b"TERM0001" + b"301"
    assert raw == body + _retail_mac_by_hand(DES_KEY, body, 1)
    assert frame(PROFILE, raw)[:2] == len(raw).to_bytes(2, "big")


def _purchase() -> dict[str, str | bytes]:
    icc = tlv.encode(
        [
            tlv.Tlv.primitive(0x9F26, bytes.fromhex("1122334455667788")),
            tlv.Tlv.primitive(0x9F27, b"\x80"),
            tlv.Tlv.primitive(0x9F36, b"\x00\x2a"),
            tlv.Tlv.primitive(0x5A, bytes.fromhex("4761739001010119")),
        ]
    )
    return {
        "2": "4761739001010119",
        "3": "000000",
        "4": "000000001234",
        "11": "000042",
        "22": "071",
        "23": "001",
        "25": "00",
        "41": "TERM0001",
        "42": "MERCHANT0000001",
        "49": "978",
        "55": icc,
    }


def test_a_purchase_goes_there_and_back_with_its_mac_in_field_64() -> None:
    fields = _purchase()
    assert mac_field(fields) == "64"
    raw = encode_message(PROFILE, "0200", fields, DES_KEY)
    message = decode_message(PROFILE, raw, DES_KEY)
    assert message.mti == "0200"
    assert {k: v for k, v in message.fields.items() if k != "64"} == fields
    assert message.get("4") == "000000001234"


def test_a_changed_byte_or_another_key_fails_the_mac() -> None:
    raw = bytearray(encode_message(PROFILE, "0210", {**_purchase(), "39": "00"}, DES_KEY))
    raw[raw.index(b"000000001234")] = ord("9")  # the amount, 9000... instead of 0000...
    with pytest.raises(MacMismatchError, match="wrong"):
        decode_message(PROFILE, bytes(raw), DES_KEY)
    good = encode_message(PROFILE, "0210", {**_purchase(), "39": "00"}, DES_KEY)
    with pytest.raises(MacMismatchError):
        decode_message(PROFILE, good, bytes(reversed(DES_KEY)))
    unsigned = encode_message(PROFILE, "0210", {**_purchase(), "39": "00"}, None)
    with pytest.raises(MacMismatchError, match="no MAC"):
        decode_message(PROFILE, unsigned, DES_KEY)


def test_values_that_do_not_fit_the_profile_are_named() -> None:
    with pytest.raises(MessageFormatError, match="0200"):
        encode_message(PROFILE, "0200", {**_purchase(), "4": "12.34"}, DES_KEY)
    with pytest.raises(MessageFormatError, match="set by the codec"):
        encode_message(PROFILE, "0200", {"64": b"12345678"}, DES_KEY)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_from_the_host_are_a_message_or_an_iso8583_error(data: bytes) -> None:
    with contextlib.suppress(Iso8583Error):
        decode_message(PROFILE, data, DES_KEY)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.integers(min_value=1, max_value=7))
def test_any_stream_gives_a_frame_or_a_framing_error(stream: bytes, chunk: int) -> None:
    pieces = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]

    def receive(count: int) -> bytes:
        return pieces.pop(0)[:count] if pieces else b""

    try:
        message = read_frame(PROFILE, receive)
    except FramingError:
        return
    assert message == stream[2 : 2 + int.from_bytes(stream[:2], "big")]


def test_a_frame_over_the_limit_is_refused_both_ways() -> None:
    with pytest.raises(FramingError, match="over the profile's limit"):
        frame(PROFILE, bytes(PROFILE.max_message_bytes + 1))
    header = (PROFILE.max_message_bytes + 1).to_bytes(2, "big")
    with pytest.raises(FramingError, match="announced"):
        read_frame(PROFILE, lambda n: header[:n])


# --- profiles ----------------------------------------------------------------------------


def test_the_default_profile_is_iso_8583_1987_with_a_binary_bitmap() -> None:
    assert PROFILE.version == "1987"
    assert PROFILE.fields["p"]["data_enc"] == "b"
    assert (PROFILE.mac_algorithm, PROFILE.mac_padding) == ("iso9797-1-alg3", 1)
    assert (PROFILE.reversal_mti, PROFILE.stan_max, PROFILE.length_header_bytes) == (
        "0400",
        999999,
        2,
    )


@pytest.mark.parametrize(
    ("change", "fault"),
    [
        (lambda d: d["fields"].pop("64"), "must define fields 64"),
        (lambda d: d["fields"]["64"].update(max_len=4), "field 64 .the MAC. must be 8 bytes"),
        (lambda d: d["fields"]["2"].pop("len_type"), "field 2 lacks len_type"),
        (lambda d: d["fields"].update({"129": d["fields"]["2"]}), "unknown field id '129'"),
        (lambda d: d["mac"].update(algorithm="md5"), "mac.algorithm must be one of"),
        (lambda d: d.update(reversal_mti="0401"), "reversal_mti"),
        (lambda d: d.update(stan_max=10**6), "stan_max must be 1 to 999999"),
        (lambda d: d["framing"].update(length_header_bytes=3), "length_header_bytes"),
    ],
)
def test_a_bad_profile_is_refused_with_what_is_wrong(change: object, fault: str) -> None:
    data = json.loads(json.dumps({**_default_json()}))
    change(data)  # type: ignore[operator]
    with pytest.raises(Iso8583ProfileError, match=fault):
        parse_profile(data, source="acquirer.json")


def _default_json() -> dict[str, object]:
    root = Path(__file__).resolve().parents[3] / "terminal" / "data" / "iso8583"
    data: dict[str, object] = json.loads((root / "default-1987.json").read_text())
    return data


def test_an_unreadable_profile_file_says_which_and_why(tmp_path: Path) -> None:
    with pytest.raises(Iso8583ProfileError, match="cannot be read"):
        load_profile(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"fields": ')
    with pytest.raises(Iso8583ProfileError, match=r"not JSON \(line 1"):
        load_profile(broken)


# --- traces ------------------------------------------------------------------------------


def test_a_trace_masks_card_data_and_names_the_emv_tags() -> None:
    fields = {**_purchase(), "35": "4761739001010119D28122011234567", "52": bytes(8)}
    lines = [line.strip() for line in trace_lines(PROFILE, "0200", fields)]
    text = "\n".join(lines)
    assert "4761739001010119" not in text
    assert "DE 002 Primary account number (PAN), n..19: 476173******0119" in lines
    assert "DE 035 Track 2 data, z..37: 476173******0119=" + "*" * 14 in lines
    assert "DE 052 Personal identification number (PIN) data, b64: <8 bytes, not shown>" in lines
    assert any("9F26 Application Cryptogram: 1122334455667788" in line for line in lines)
    assert any(
        "5A Application Primary Account Number (PAN): <8 bytes, masked>" in line for line in lines
    )
    assert lines[0] == "MTI 0200"


def test_the_docs_table_is_the_default_profile() -> None:
    """docs/iso8583.md documents the default profile field by field: the table there is the
    one the terminal loads."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "iso8583.md").read_text()
    kinds = {"fixed": 0, "LVAR": 1, "LLVAR": 2, "LLLVAR": 3}
    documented = {}
    for line in doc.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and (cells[0].isdigit() or cells[0] in ("t", "p")):
            kind, length = cells[3].split()
            encoding = "b" if cells[2] == "binary" else cells[2].lower()
            documented[cells[0]] = (cells[1], encoding, kinds[kind], int(length))
    shipped = {
        key: (spec["desc"], spec["data_enc"], spec["len_type"], spec["max_len"])
        for key, spec in PROFILE.fields.items()
        if key != "h"
    }
    assert documented == shipped


def test_a_trace_masks_a_pan_and_track_2_packed_as_bcd() -> None:
    # An acquirer's profile that packs fields 2 and 35 as binary (BCD, F-padded).
    fields = {
        "2": bytes.fromhex("4761739001010119"),
        "35": bytes.fromhex("4761739001010119D28122011234567F"),
    }
    text = "\n".join(trace_lines(PROFILE, "0200", fields))
    assert "4761739001010119" not in text
    assert "476173******0119" in text
