"""TLV decode throughput for a typical READ RECORD response (Visa record with certificates)."""

from __future__ import annotations

from bench.common import Row, median_seconds
from emv import tlv


def typical_read_record() -> bytes:
    """A record shaped like a real card's SFI 2 record: certificates plus card data."""
    objects = [
        tlv.Tlv.primitive(0x8F, b"\x92"),
        tlv.Tlv.primitive(0x90, bytes(range(176))),
        tlv.Tlv.primitive(0x92, bytes(36)),
        tlv.Tlv.primitive(0x9F32, b"\x03"),
        tlv.Tlv.primitive(0x9F46, bytes(range(128))),
        tlv.Tlv.primitive(0x9F47, b"\x03"),
        tlv.Tlv.primitive(0x9F48, bytes(10)),
        tlv.Tlv.primitive(0x9F4A, b"\x82"),
        tlv.Tlv.primitive(0x5A, bytes.fromhex("4761739001010119")),
        tlv.Tlv.primitive(0x5F24, bytes.fromhex("291231")),
        tlv.Tlv.primitive(0x5F34, b"\x01"),
        tlv.Tlv.primitive(0x9F07, b"\xff\x00"),
        tlv.Tlv.primitive(0x9F0D, bytes.fromhex("B850AC8800")),
        tlv.Tlv.primitive(0x9F0E, bytes(5)),
        tlv.Tlv.primitive(0x9F0F, bytes.fromhex("B870BC9800")),
    ]
    return tlv.Tlv.template(0x70, objects).encode()


def run() -> list[Row]:
    record = typical_read_record()
    objects_per_record = sum(1 for obj in tlv.decode(record) for _ in obj.walk())
    per_call = median_seconds(lambda: tlv.decode(record), repeats=9, number=2000)
    return [
        ("TLV decode, READ RECORD response", objects_per_record / per_call, "objects/s"),
        ("TLV decode, READ RECORD response", per_call * 1e6, "us/record"),
    ]
