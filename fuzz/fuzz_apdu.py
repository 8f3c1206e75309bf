"""Response APDUs, and the exchange that follows 61xx / 6Cxx with GET RESPONSE / resend."""

import atheris
from common import main

from emv import apdu


def target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    response = apdu.ResponseApdu.parse(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
    response.describe()
    exchange = apdu.ApduExchange(apdu.read_record(1, 1))
    exchange.start()
    for _ in range(64):
        step = exchange.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)))
        if not isinstance(step, bytes):
            return
    raise AssertionError("the exchange never ended")


if __name__ == "__main__":
    main(target)
