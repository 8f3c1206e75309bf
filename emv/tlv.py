"""BER-TLV as EMV uses it (EMV Book 3, Annex B).

Tags are kept as the integer of their big-endian bytes (``0x9F02``), which keeps lookups cheap
and prints the way the specifications write them. Decoding is strict and bounded: every
object must fit inside its parent, nesting is capped, and any defect raises :class:`TlvError`
with the offset, the tag being read and what was expected. Nothing else escapes.

:func:`decode` builds the tree of :class:`Tlv`; :func:`read_raw` and :func:`decode_raw` keep
each object's tag and length bytes as coded and leave values undecoded, for what is hashed or
signed as received (offline data authentication). :func:`encode_one` codes one object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from .errors import EmvError

#: Deepest nesting accepted. EMV templates nest three or four levels; 32 leaves room for
#: every real card while stopping a hostile card from exhausting the stack.
MAX_DEPTH: Final = 32
#: Longest tag accepted, in bytes. EMV tags are at most three bytes (Annex B1); four allows
#: for proprietary tags seen in the field.
MAX_TAG_BYTES: Final = 4
#: Longest length field accepted: '84' followed by four bytes (Annex B2).
MAX_LENGTH_BYTES: Final = 4


class TlvError(EmvError):
    """Malformed BER-TLV: says where, in which object, and what was expected."""

    def __init__(self, offset: int, expected: str, tag: int | None = None) -> None:
        self.offset = offset
        self.tag = tag
        self.expected = expected
        where = f"at offset {offset}"
        if tag is not None:
            where += f" in tag {tag_hex(tag)}"
        super().__init__(f"malformed TLV {where}: expected {expected}")


def tag_hex(tag: int) -> str:
    """The tag as the specifications write it: '9F02', '5A'."""
    width = max(1, (tag.bit_length() + 7) // 8)
    return tag.to_bytes(width, "big").hex().upper()


def tag_is_constructed(tag: int) -> bool:
    """Bit 6 of the first tag byte marks a constructed object (Annex B1, Table 35)."""
    width = max(1, (tag.bit_length() + 7) // 8)
    return bool((tag >> (8 * (width - 1))) & 0x20)


@dataclass(frozen=True, slots=True)
class Tlv:
    """One data object. `children` is filled for constructed objects, empty otherwise."""

    tag: int
    value: bytes
    children: tuple[Tlv, ...] = ()

    @property
    def constructed(self) -> bool:
        return tag_is_constructed(self.tag)

    @classmethod
    def primitive(cls, tag: int, value: bytes) -> Tlv:
        encode_tag(tag)
        if tag_is_constructed(tag):
            raise TlvError(0, "a primitive tag", tag)
        return cls(tag, bytes(value))

    @classmethod
    def template(cls, tag: int, children: Iterable[Tlv]) -> Tlv:
        encode_tag(tag)
        if not tag_is_constructed(tag):
            raise TlvError(0, "a constructed tag", tag)
        kids = tuple(children)
        return cls(tag, b"".join(child.encode() for child in kids), kids)

    def encode(self) -> bytes:
        return encode_one(self.tag, self.value)

    def find(self, *path: int) -> Tlv | None:
        """The first descendant reached through `path` (tags of successive levels)."""
        return find(self.children, *path)

    def walk(self) -> Iterator[tuple[int, Tlv]]:
        """Depth-first (depth, object) pairs, this object at depth 0."""
        yield 0, self
        for child in self.children:
            for depth, node in child.walk():
                yield depth + 1, node


def encode_tag(tag: int) -> bytes:
    if tag <= 0:
        raise TlvError(0, "a positive tag number", tag)
    width = (tag.bit_length() + 7) // 8
    raw = tag.to_bytes(width, "big")
    # Annex B1: a multi-byte tag starts with xxx11111 and every following byte but the last
    # has bit 8 set; a single-byte tag must not end in 11111.
    if width == 1:
        if raw[0] & 0x1F == 0x1F:
            raise TlvError(0, "a complete tag (first byte announces more bytes)", tag)
    else:
        if raw[0] & 0x1F != 0x1F or any(b & 0x80 == 0 for b in raw[1:-1]) or raw[-1] & 0x80:
            raise TlvError(0, "a well-formed multi-byte tag", tag)
    return raw


def encode_length(length: int) -> bytes:
    """Definite length, short form below 128, long form '81'..'84' above (Annex B2)."""
    if length < 0:
        raise TlvError(0, "a non-negative length")
    if length < 0x80:
        return bytes([length])
    width = (length.bit_length() + 7) // 8
    if width > MAX_LENGTH_BYTES:
        raise TlvError(0, f"a length that fits in {MAX_LENGTH_BYTES} bytes")
    return bytes([0x80 | width]) + length.to_bytes(width, "big")


def encode_one(tag: int, value: bytes) -> bytes:
    """One data object: its tag, its definite length and `value` (Annex B1, B2).

    >>> encode_one(0x9F27, bytes([0x80])).hex().upper()
    '9F270180'
    >>> encode_one(0x9F4B, bytes(200)).hex().upper()[:8]
    '9F4B81C8'

    `value` is taken as given: a template's value is its children's encodings, concatenated.
    A malformed tag raises :class:`TlvError` (:func:`encode_tag`).
    """
    return encode_tag(tag) + encode_length(len(value)) + bytes(value)


def encode(objects: Iterable[Tlv]) -> bytes:
    return b"".join(obj.encode() for obj in objects)


def _read_tag(data: bytes, offset: int, end: int) -> tuple[int, int]:
    first = data[offset]
    tag = first
    offset += 1
    if first & 0x1F == 0x1F:
        for count in range(1, MAX_TAG_BYTES + 1):
            if offset >= end:
                raise TlvError(offset, "another tag byte (tag truncated)", tag)
            if count == MAX_TAG_BYTES:
                raise TlvError(offset, f"a tag of at most {MAX_TAG_BYTES} bytes", tag)
            byte = data[offset]
            tag = (tag << 8) | byte
            offset += 1
            if not byte & 0x80:
                break
    return tag, offset


def _read_length(data: bytes, offset: int, end: int, tag: int) -> tuple[int, int]:
    if offset >= end:
        raise TlvError(offset, "a length byte", tag)
    first = data[offset]
    offset += 1
    if first < 0x80:
        return first, offset
    width = first & 0x7F
    if width == 0:
        raise TlvError(offset - 1, "a definite length (indefinite form '80' is not allowed)", tag)
    if width > MAX_LENGTH_BYTES:
        raise TlvError(offset - 1, f"at most {MAX_LENGTH_BYTES} length bytes, got {width}", tag)
    if offset + width > end:
        noun = "byte" if width == 1 else "bytes"
        raise TlvError(offset, f"{width} length {noun} (length truncated)", tag)
    return int.from_bytes(data[offset : offset + width], "big"), offset + width


def _read_header(data: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the object whose tag starts at `offset`."""
    tag, value_start = _read_tag(data, offset, end)
    length, value_start = _read_length(data, value_start, end, tag)
    if length > end - value_start:
        raise TlvError(
            offset, f"{length} value bytes, only {end - value_start} remain in the parent", tag
        )
    return tag, value_start, value_start + length


def _headers(data: bytes, offset: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, tag start, value start, value end) of each object in data[offset:end]."""
    while offset < end:
        # Annex B: '00' bytes may appear before, between or after data objects, and
        # 'FF' is used as padding by some cards; neither starts a valid EMV tag.
        if data[offset] in (0x00, 0xFF):
            offset += 1
            continue
        tag, start, stop = _read_header(data, offset, end)
        yield tag, offset, start, stop
        offset = stop


def _decode_range(data: bytes, offset: int, end: int, depth: int) -> tuple[Tlv, ...]:
    if depth > MAX_DEPTH:
        raise TlvError(offset, f"nesting no deeper than {MAX_DEPTH} levels")
    objects: list[Tlv] = []
    for tag, _, start, stop in _headers(data, offset, end):
        children: tuple[Tlv, ...] = ()
        if tag_is_constructed(tag):
            children = _decode_range(data, start, stop, depth + 1)
        objects.append(Tlv(tag, data[start:stop], children))
    return tuple(objects)


def decode(data: bytes) -> tuple[Tlv, ...]:
    """All top-level objects in `data`, constructed ones decoded recursively."""
    return _decode_range(bytes(data), 0, len(data), 0)


def decode_one(data: bytes, tag: int | None = None) -> Tlv:
    """Exactly one top-level object (optionally of the given tag), as in an R-APDU body."""
    objects = decode(data)
    if len(objects) != 1:
        raise TlvError(0, f"exactly one data object, found {len(objects)}", tag)
    if tag is not None and objects[0].tag != tag:
        raise TlvError(0, f"template {tag_hex(tag)}, found {tag_hex(objects[0].tag)}", tag)
    return objects[0]


@dataclass(frozen=True, slots=True)
class RawTlv:
    """One data object as the card coded it; its value is not decoded, constructed or not.

    `header` is the tag and length fields exactly as received (a length sent in a longer form
    than needed stays so), for what is hashed or signed as coded: the '70' record templates
    and SFI 11-30 records of the static data to be authenticated (EMV 4.4 Book 3 §10.3) and
    the GENERATE AC response objects of the Transaction Data Hash Code (Book 2 §6.6.1).
    """

    tag: int
    header: bytes
    value: bytes

    @property
    def encoded(self) -> bytes:
        """Tag, length and value, byte for byte as read."""
        return self.header + self.value


def read_raw(data: bytes, offset: int = 0) -> RawTlv:
    """The one object whose tag starts at `offset`, exactly there.

    >>> obj = read_raw(bytes.fromhex("7081035A0100FF"))
    >>> hex(obj.tag), obj.header.hex().upper(), obj.value.hex().upper()
    ('0x70', '708103', '5A0100')

    Bytes after the object are not looked at, nor is its value. :class:`TlvError` when no
    object starts there (the end of the data, or padding '00' / 'FF', which is skipped only
    between objects by :func:`decode` and :func:`decode_raw`), for a defect in the object's
    own tag or length, and for a value running past the end of the data.
    """
    data = bytes(data)
    if not 0 <= offset < len(data):
        raise TlvError(offset, f"a data object (the data is {len(data)} bytes long)")
    if data[offset] in (0x00, 0xFF):
        raise TlvError(offset, f"a tag, found padding byte '{data[offset]:02X}'")
    tag, start, stop = _read_header(data, offset, len(data))
    return RawTlv(tag, data[offset:start], data[start:stop])


def decode_raw(data: bytes) -> tuple[RawTlv, ...]:
    """All top-level objects of `data` as coded, padding between them skipped as by
    :func:`decode`; values are not decoded, so only the top level has to be well formed.

    >>> [o.encoded.hex().upper() for o in decode_raw(bytes.fromhex("9F2701800077025A00"))]
    ['9F270180', '77025A00']
    """
    data = bytes(data)
    return tuple(
        RawTlv(tag, data[head:start], data[start:stop])
        for tag, head, start, stop in _headers(data, 0, len(data))
    )


def find(objects: Sequence[Tlv], *path: int) -> Tlv | None:
    """The first object reached by following `path` through nested templates."""
    if not path:
        return None
    head, *rest = path
    for obj in objects:
        if obj.tag == head:
            if not rest:
                return obj
            found = find(obj.children, *rest)
            if found is not None:
                return found
    return None


def find_anywhere(objects: Sequence[Tlv], tag: int) -> Tlv | None:
    """The first object with `tag` at any depth, depth-first."""
    for obj in objects:
        if obj.tag == tag:
            return obj
        found = find_anywhere(obj.children, tag)
        if found is not None:
            return found
    return None


def flatten(objects: Sequence[Tlv]) -> dict[int, bytes]:
    """Every primitive object by tag, at any depth; the first occurrence of a tag wins."""
    result: dict[int, bytes] = {}
    for obj in objects:
        for _, node in obj.walk():
            if not node.constructed:
                result.setdefault(node.tag, node.value)
    return result


def parse_tag_hex(text: str) -> int:
    """'9F02' -> 0x9F02, validating that the bytes form exactly one well-formed tag."""
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise TlvError(0, f"a tag in hex, got {text!r}") from exc
    if not raw:
        raise TlvError(0, "a non-empty tag")
    tag, end = _read_tag(raw, 0, len(raw))
    if end != len(raw):
        raise TlvError(end, f"a single tag, got extra bytes in {text!r}", tag)
    return tag
