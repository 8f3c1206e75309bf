"""Consumer-presented (base64 BER-TLV) and merchant-presented (EMVCo MPM) codes, wallet codes."""

import contextlib

from common import main

from emv.qr import WalletCodeTable, classify, decode_cpm, parse_mpm
from emv.qr.cpm import decode_cpm_bytes
from emv.qr.errors import QrError

TABLE = WalletCodeTable.default()


def target(data: bytes) -> None:
    with contextlib.suppress(QrError):
        decode_cpm_bytes(data)
    text = data.decode("utf-8", errors="replace")
    for parse in (decode_cpm, parse_mpm, classify, TABLE.recognise):
        with contextlib.suppress(QrError):
            parse(text)


if __name__ == "__main__":
    main(target)
