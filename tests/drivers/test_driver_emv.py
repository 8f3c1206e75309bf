"""A whole EMV contactless transaction with a simulated card through the real stacks:
pyscard + pcscd + vpcd, and nfcpy's ISO-DEP code on its udp device. The outcome must be the
one the same card gives through the in-process `sim:` reader."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

pytest.importorskip("emv.kernel", reason="the EMV kernel is not there yet")
pytest.importorskip("simulator.cards")

import simulator.cards as cards
from drivers.base import CardReader
from drivers.errors import CardRemovedError
from drivers.sim import VirtualCardReader
from drivers.url import open_reader
from emv.kernel import OutcomeKind
from simulator.pki import load_test_ca_store
from terminal.checkout.card_session import CardSessionResult, new_request, run_card_transaction
from terminal.domain.params import default_params

NOW = datetime(2026, 1, 5, 10, 0, 0)


class _SimPort:
    """sim: reader port around a card (None on removal), as simulator.ports does."""

    def __init__(self, card: object) -> None:
        self.card = card
        self.uid = card.uid  # type: ignore[attr-defined]
        self.atr = card.atr  # type: ignore[attr-defined]

    def transceive(self, command: bytes) -> bytes | None:
        from simulator.cards.errors import VirtualCardRemovedError as Removed

        try:
            return self.card.transceive(command)  # type: ignore[attr-defined,no-any-return]
        except Removed:
            return None

    def recorded_inputs(self) -> None:
        return None


def _transact(reader: CardReader, amount: int = 1500) -> CardSessionResult:
    request = new_request(
        amount, currency=978, clock=lambda: NOW, random_bytes=lambda n: bytes(range(7, 7 + n))
    )
    return run_card_transaction(reader, default_params(), request, ca_keys=load_test_ca_store())


def _reference(**behaviour: Any) -> CardSessionResult:
    card = cards.load_card("visa", **behaviour)
    return _transact(VirtualCardReader("sim:visa", _SimPort(card)))


def _same_outcome(got: CardSessionResult, expected: CardSessionResult) -> None:
    assert got.outcome.kind == expected.outcome.kind
    assert got.outcome.masked_pan == expected.outcome.masked_pan
    assert got.outcome.cryptogram == expected.outcome.cryptogram
    assert got.apdu_count == expected.apdu_count
    assert got.outcome.card_data == expected.outcome.card_data


@pytest.mark.parametrize("behaviour", [{}, {"approve_offline": True}])
def test_emv_transaction_through_pcscd(vpcd_card: object, behaviour: dict[str, Any]) -> None:
    vpcd_card.insert(cards.load_card("visa", **behaviour))  # type: ignore[attr-defined]
    with open_reader("pcsc:Virtual PCD 00 00") as reader:
        reader.wait_for_card(timeout=10)
        result = _transact(reader)
    _same_outcome(result, _reference(**behaviour))
    assert result.outcome.masked_pan == "476173******0010"


@pytest.mark.integration
@pytest.mark.parametrize("technology", ["A", "B"])
def test_emv_transaction_through_nfcpy(technology: str) -> None:
    from simulator.bridges.nfc_udp import NfcUdpCardEmulator

    emulator = NfcUdpCardEmulator(
        cards.load_card("visa", approve_offline=True), technology=technology, fsci=5
    )
    emulator.start()
    try:
        with open_reader(emulator.url) as reader:
            reader.wait_for_card(timeout=10)
            result = _transact(reader)
    finally:
        emulator.stop()
    _same_outcome(result, _reference(approve_offline=True))


def _removal_outcome(open_and_insert: Callable[[object], CardReader]) -> CardSessionResult:
    card = cards.load_card("visa", removed_after_n_commands=3)
    reader = open_and_insert(card)
    try:
        reader.wait_for_card(timeout=10)
        result = _transact(reader)
        with pytest.raises(CardRemovedError):
            reader.transceive(bytes.fromhex("00A404000E325041592E5359532E444446303100"))
        return result
    finally:
        reader.close()


def test_card_removed_mid_transaction_through_pcscd(vpcd_card: object) -> None:
    def open_and_insert(card: object) -> CardReader:
        vpcd_card.insert(card)  # type: ignore[attr-defined]
        return open_reader("pcsc:Virtual PCD 00 00")

    result = _removal_outcome(open_and_insert)
    assert result.apdu_count == 3
    assert result.outcome.kind == _reference(removed_after_n_commands=3).outcome.kind
    assert result.outcome.kind != OutcomeKind.APPROVED


@pytest.mark.integration
def test_card_removed_mid_transaction_through_nfcpy() -> None:
    from simulator.bridges.nfc_udp import NfcUdpCardEmulator

    emulator = NfcUdpCardEmulator()
    emulator.start()
    try:

        def open_and_insert(card: object) -> CardReader:
            emulator.insert(card)  # type: ignore[arg-type]
            return open_reader(emulator.url)

        result = _removal_outcome(open_and_insert)
    finally:
        emulator.stop()
    assert result.apdu_count == 3
    assert result.outcome.kind == _reference(removed_after_n_commands=3).outcome.kind
