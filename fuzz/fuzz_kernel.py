"""A whole contactless transaction against a card whose every answer is fuzz bytes."""

import atheris
from common import main

from emv.kernel import ContactlessTransaction, TerminalConfig, TransactionRequest, default_aids
from simulator.pki import load_test_ca_store

CA_KEYS = load_test_ca_store()


def target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    tx = ContactlessTransaction(
        TerminalConfig(),
        default_aids(),
        TransactionRequest(
            amount=1000, date="250601", time="101500", unpredictable_number=b"\x01\x02\x03\x04"
        ),
        CA_KEYS,
    )
    step = tx.start()
    for _ in range(400):
        if not isinstance(step, bytes):
            return
        step = tx.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 260)))
    raise AssertionError("the kernel was still sending commands after 400")


if __name__ == "__main__":
    main(target)
