"""BER-TLV codec (EMV Book 3 Annex B): known answers, errors, and properties."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv import tlv
from emv.errors import EmvError
from emv.tlv import Tlv, TlvError


def test_decodes_multi_byte_tags_and_nested_templates() -> None:
    data = bytes.fromhex("6F1A840E315041592E5359532E4444463031A5088801025F2D02656E")
    (fci,) = tlv.decode(data)
    assert fci.tag == 0x6F
    assert fci.find(0x84) == Tlv(0x84, b"1PAY.SYS.DDF01")
    assert tlv.find([fci], 0x6F, 0xA5, 0x88) == Tlv(0x88, b"\x02")
    assert tlv.find([fci], 0x6F, 0xA5, 0x5F2D) == Tlv(0x5F2D, b"en")
    assert tlv.flatten([fci]) == {0x84: b"1PAY.SYS.DDF01", 0x88: b"\x02", 0x5F2D: b"en"}


def test_long_form_lengths_decode_and_encode() -> None:
    value = bytes(range(200))
    encoded = Tlv.primitive(0x90, value).encode()
    assert encoded[:3] == bytes.fromhex("9081C8")
    big = Tlv.primitive(0x9F46, bytes(300)).encode()
    assert big[:5] == bytes.fromhex("9F4682012C")
    assert tlv.decode(encoded) == (Tlv(0x90, value),)
    assert tlv.decode(big)[0].value == bytes(300)


def test_padding_between_objects_is_skipped() -> None:
    data = bytes.fromhex("00005A0847617390010101190000FFFF9F360200FF00")
    objects = tlv.decode(data)
    assert [obj.tag for obj in objects] == [0x5A, 0x9F36]
    assert objects[1].value == b"\x00\xff"


def test_real_gpo_response_format_2() -> None:
    # A Visa qVSDC GPO response as cards send it: template 77 with a long-form length.
    body = bytes.fromhex(
        "82022000"
        "940418010100"
        "57134761739001010119D22122011758928889000F"
        "5F340100"
        "9F100706010A03A00000"
        "9F2608C0E8AE3F2AC0F4A8"
        "9F270180"
        "9F36020001"
        "9F6C023000"
        "9F6E0420700000"
        "9F4B70" + "11" * 112
    )
    response = b"\x77\x81" + bytes([len(body)]) + body
    (template,) = tlv.decode(response)
    values = tlv.flatten([template])
    assert values[0x82] == bytes.fromhex("2000")
    assert values[0x94] == bytes.fromhex("18010100")
    assert values[0x9F27] == b"\x80"
    assert values[0x9F36] == b"\x00\x01"
    assert len(values[0x9F4B]) == 112
    assert values[0x57][:8] == bytes.fromhex("4761739001010119")


#: Defects of a top-level object: decode and decode_raw name them alike.
_TOP_LEVEL_DEFECTS = [
    ("9F", 1, 0x9F, "another tag byte"),
    ("9F02", 2, 0x9F02, "a length byte"),
    ("9F0281", 3, 0x9F02, "1 length byte (length truncated)"),
    ("5A0547617390", 0, 0x5A, "5 value bytes, only 4 remain"),
    ("5A80", 1, 0x5A, "definite length"),
    ("5A85FFFFFFFFFF", 1, 0x5A, "at most 4 length bytes"),
    ("DF818181810100", 4, 0xDF818181, "a tag of at most 4 bytes"),
    ("5A01FF00009F", 6, 0x9F, "another tag byte"),  # the second object, after padding
]


@pytest.mark.parametrize("decoder", [tlv.decode, tlv.decode_raw])
@pytest.mark.parametrize(("hex_data", "offset", "tag", "expected"), _TOP_LEVEL_DEFECTS)
def test_malformed_input_names_offset_tag_and_expectation(
    decoder: Callable[[bytes], object], hex_data: str, offset: int, tag: int, expected: str
) -> None:
    with pytest.raises(TlvError) as caught:
        decoder(bytes.fromhex(hex_data))
    error = caught.value
    assert (error.offset, error.tag) == (offset, tag)
    assert expected in str(error)
    assert f"offset {offset}" in str(error)


def test_a_defect_inside_a_template_is_found_by_decode_only() -> None:
    data = bytes.fromhex("70045A051122")
    with pytest.raises(TlvError) as caught:
        tlv.decode(data)
    assert (caught.value.offset, caught.value.tag) == (2, 0x5A)
    assert "5 value bytes, only 2 remain in the parent" in str(caught.value)
    (template,) = tlv.decode_raw(data)  # values are not decoded
    assert template.value == bytes.fromhex("5A051122")


def test_nesting_is_bounded() -> None:
    data = b""
    for _ in range(tlv.MAX_DEPTH + 5):
        data = b"\x70" + tlv.encode_length(len(data)) + data
    with pytest.raises(TlvError, match="nesting no deeper than"):
        tlv.decode(data)


def test_decode_one_insists_on_a_single_template() -> None:
    assert tlv.decode_one(bytes.fromhex("7003820100"), 0x70).tag == 0x70
    with pytest.raises(TlvError, match="template 77, found 70"):
        tlv.decode_one(bytes.fromhex("7003820100"), 0x77)
    with pytest.raises(TlvError, match="exactly one data object, found 2"):
        tlv.decode_one(bytes.fromhex("820100820100"))


def test_encoding_rejects_malformed_tags() -> None:
    with pytest.raises(TlvError):
        Tlv.primitive(0x1F, b"")  # announces a second tag byte that is not there
    with pytest.raises(TlvError):
        Tlv.primitive(0x9F82, b"")  # last byte has bit 8 set: tag not finished
    with pytest.raises(TlvError, match="primitive"):
        Tlv.primitive(0x70, b"")
    with pytest.raises(TlvError, match="constructed"):
        Tlv.template(0x5A, [])


def test_parse_tag_hex() -> None:
    assert tlv.parse_tag_hex("9f02") == 0x9F02
    assert tlv.parse_tag_hex("DF8129") == 0xDF8129
    with pytest.raises(TlvError, match="a single tag"):
        tlv.parse_tag_hex("9F0201")
    with pytest.raises(TlvError, match="a tag in hex"):
        tlv.parse_tag_hex("xyz")


# --- one object encoded, objects as coded -----------------------------------------------


@pytest.mark.parametrize(
    ("tag", "value_hex", "expected_hex"),
    [
        # Application Cryptogram, two-byte tag and 8-byte value (the GPO answer above).
        (0x9F26, "C0E8AE3F2AC0F4A8", "9F2608C0E8AE3F2AC0F4A8"),
        (0x5A, "4761739001010010", "5A084761739001010010"),
        (0x9F36, "", "9F3600"),
        (0xDF8129, "00", "DF81290100"),  # three-byte tag
        (0x77, "9F270180", "77049F270180"),  # a template's value is taken as given
    ],
)
def test_encode_one_known_answers(tag: int, value_hex: str, expected_hex: str) -> None:
    assert tlv.encode_one(tag, bytes.fromhex(value_hex)) == bytes.fromhex(expected_hex)


@pytest.mark.parametrize(
    ("size", "length_hex"),
    [
        # Annex B2: short form up to 127; '81' then one byte up to 255; '82' then two bytes.
        (127, "7F"),
        (128, "8180"),
        (255, "81FF"),
        (256, "820100"),
        (65535, "82FFFF"),
        (65536, "83010000"),
    ],
)
def test_encode_one_length_forms(size: int, length_hex: str) -> None:
    encoded = tlv.encode_one(0x9F4B, bytes(size))
    assert encoded[:2] == bytes.fromhex("9F4B")
    assert encoded[2 : 2 + len(length_hex) // 2] == bytes.fromhex(length_hex)
    assert len(encoded) == 2 + len(length_hex) // 2 + size
    assert tlv.decode_one(encoded) == Tlv(0x9F4B, bytes(size))


def test_encode_one_is_what_tlv_encode_writes() -> None:
    obj = Tlv.template(0x70, [Tlv.primitive(0x5A, b"\x47\x61"), Tlv.primitive(0x9F07, b"")])
    assert tlv.encode_one(obj.tag, obj.value) == obj.encode()


@pytest.mark.parametrize("tag", [0, 0x1F, 0x9F82, 0x9F0280])
def test_encode_one_rejects_malformed_tags(tag: int) -> None:
    with pytest.raises(TlvError):
        tlv.encode_one(tag, b"")


def test_read_raw_keeps_the_header_as_coded() -> None:
    # A non-minimal '81' length stays as sent: ODA hashes objects byte for byte.
    obj = tlv.read_raw(bytes.fromhex("7081035A0100FF"))
    assert (obj.tag, obj.header, obj.value) == (0x70, bytes.fromhex("708103"), b"\x5a\x01\x00")
    assert obj.encoded == bytes.fromhex("7081035A0100")
    at_offset = tlv.read_raw(bytes.fromhex("9F270180 9F3602002A"), 4)
    assert (at_offset.tag, at_offset.value) == (0x9F36, b"\x00\x2a")


def test_read_raw_leaves_values_undecoded() -> None:
    # The value of this '70' is not valid TLV; decode refuses it, read_raw does not look.
    data = bytes.fromhex("70035A0511")
    with pytest.raises(TlvError):
        tlv.decode(data)
    assert tlv.read_raw(data).value == bytes.fromhex("5A0511")


@pytest.mark.parametrize(
    ("hex_data", "offset", "expected"),
    [
        ("", 0, "a data object (the data is 0 bytes long)"),
        ("5A00", 2, "a data object (the data is 2 bytes long)"),
        ("5A00", -1, "a data object"),
        ("00700100", 0, "a tag, found padding byte '00'"),
        ("FF", 0, "a tag, found padding byte 'FF'"),
        ("9F", 0, "another tag byte"),
        ("9F02", 0, "a length byte"),
        ("5A80", 0, "definite length"),
        ("5A85FFFFFFFFFF", 0, "at most 4 length bytes"),
        ("5A0547617390", 0, "5 value bytes, only 4 remain"),
    ],
)
def test_read_raw_errors(hex_data: str, offset: int, expected: str) -> None:
    with pytest.raises(TlvError, match=re.escape(expected)):
        tlv.read_raw(bytes.fromhex(hex_data), offset)


def test_decode_raw_top_level_objects_as_coded() -> None:
    # A GENERATE AC response body: padding skipped between objects, a long-form length kept.
    body = bytes.fromhex("9F270180 0000 9F3602002A FF 9F4B8103AABBCC 00")
    objects = tlv.decode_raw(body)
    assert [obj.tag for obj in objects] == [0x9F27, 0x9F36, 0x9F4B]
    assert [obj.header.hex().upper() for obj in objects] == ["9F2701", "9F3602", "9F4B8103"]
    assert objects[2].value == bytes.fromhex("AABBCC")
    assert tlv.decode_raw(b"") == ()
    assert tlv.decode_raw(b"\x00\xff") == ()


def test_decode_raw_does_not_decode_constructed_values() -> None:
    objects = tlv.decode_raw(bytes.fromhex("70035A0511" + "82022000"))
    assert [(obj.tag, obj.value) for obj in objects] == [
        (0x70, bytes.fromhex("5A0511")),
        (0x82, b"\x20\x00"),
    ]


# --- properties -------------------------------------------------------------------------

_primitive_tags = st.sampled_from(
    [0x5A, 0x57, 0x82, 0x94, 0x9F02, 0x9F36, 0x9F4B, 0xDF8129, 0x5F2D]
)
_constructed_tags = st.sampled_from([0x70, 0x77, 0x6F, 0xA5, 0xBF0C, 0x61])


def _tlv_trees() -> st.SearchStrategy[Tlv]:
    leaves = st.builds(
        lambda tag, value: Tlv.primitive(tag, value),
        _primitive_tags,
        st.binary(max_size=300),
    )
    return st.recursive(
        leaves,
        lambda children: st.builds(
            lambda tag, kids: Tlv.template(tag, kids),
            _constructed_tags,
            st.lists(children, max_size=4),
        ),
        max_leaves=12,
    )


@given(st.lists(_tlv_trees(), max_size=5))
def test_round_trip(objects: list[Tlv]) -> None:
    encoded = tlv.encode(objects)
    assert tlv.decode(encoded) == tuple(objects)
    assert tlv.encode(tlv.decode(encoded)) == encoded


_values = st.one_of(
    st.binary(max_size=300),
    # Long values, past the '82' and into the '83' length form, without drawing 70 kB.
    st.builds(
        lambda size, fill: fill * size, st.integers(0, 70_000), st.binary(min_size=1, max_size=1)
    ),
)


@given(st.one_of(_primitive_tags, _constructed_tags), _values)
def test_encode_one_round_trips(tag: int, value: bytes) -> None:
    encoded = tlv.encode_one(tag, value)
    raw = tlv.read_raw(encoded)
    assert (raw.tag, raw.value, raw.encoded) == (tag, value, encoded)
    assert tlv.decode_raw(encoded) == (raw,)
    if not tlv.tag_is_constructed(tag):
        assert tlv.decode_one(encoded) == Tlv(tag, value)


@given(st.lists(_tlv_trees(), max_size=5))
def test_decode_raw_agrees_with_decode_on_the_top_level(objects: list[Tlv]) -> None:
    encoded = tlv.encode(objects)
    raw = tlv.decode_raw(encoded)
    assert [(obj.tag, obj.value) for obj in raw] == [(obj.tag, obj.value) for obj in objects]
    assert b"".join(obj.encoded for obj in raw) == encoded


@settings(max_examples=2000)
@given(st.binary(max_size=600))
def test_decode_raw_accepts_whatever_decode_accepts(data: bytes) -> None:
    try:
        decoded = tlv.decode(data)
    except TlvError:
        decoded = None
    try:
        raw = tlv.decode_raw(data)
    except TlvError as error:
        assert decoded is None
        assert 0 <= error.offset <= len(data)
        return
    if decoded is not None:
        assert [(obj.tag, obj.value) for obj in raw] == [(o.tag, o.value) for o in decoded]
    # Nothing is invented: the objects as coded fit in the input.
    assert len(b"".join(obj.encoded for obj in raw)) <= len(data)


@settings(max_examples=2000)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_tlv_error(data: bytes) -> None:
    try:
        objects = tlv.decode(data)
    except TlvError as error:
        assert 0 <= error.offset <= len(data)
        return
    # Whatever decodes re-encodes within the input's size: nothing is invented.
    assert len(tlv.encode(objects)) <= len(data)


def test_survives_100000_random_inputs_with_only_its_own_error() -> None:
    rng = random.Random(20261125)
    own_errors = 0
    for _ in range(100_000):
        size = rng.randrange(0, 64)
        # Bias towards tag-like first bytes so parsing goes deep, not just fails at once.
        data = bytes(
            rng.choice((0x70, 0x77, 0x9F, 0x5F, 0x81, 0x82, rng.randrange(256)))
            for _ in range(size)
        )
        try:
            tlv.decode(data)
        except TlvError:
            own_errors += 1
        except Exception as unexpected:  # pragma: no cover - the property under test
            pytest.fail(f"{type(unexpected).__name__} escaped for {data.hex()}: {unexpected}")
    assert own_errors > 0
    assert issubclass(TlvError, EmvError)
