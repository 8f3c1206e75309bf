"""BER-TLV as cards send it: decode, re-encode, decode again."""

from common import main

from emv import tlv


def target(data: bytes) -> None:
    objects = tlv.decode(data)
    assert tlv.decode(tlv.encode(objects)) == objects
    tlv.flatten(objects)


if __name__ == "__main__":
    main(target)
