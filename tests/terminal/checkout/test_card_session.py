"""The terminal's card session: parameters become kernel configuration, bytes move."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import CardReader
from drivers.errors import TransportLoopError
from drivers.url import open_reader
from emv.kernel import OutcomeKind
from terminal.checkout.card_session import (
    CardConversation,
    CardSessionResult,
    aid_config,
    new_request,
    run_card_transaction,
    supported_aids,
)
from terminal.domain.params import default_params, parse_params
from tests.terminal.domain.test_params import (
    MASTERCARD,
    VISA,
    kernel_data_dicts,
    kernel_data_document,
)


def _fixed_clock() -> datetime:
    return datetime(2026, 11, 25, 10, 15, 0)


def _counter_bytes(n: int) -> bytes:
    return bytes(range(1, n + 1))


def test_an_application_without_a_kernel_is_skipped_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    params = default_params()
    amex = dataclasses.replace(
        params.aids[0], aid=bytes.fromhex("A00000002501"), kernel_id=4, label="AMEX"
    )
    params = dataclasses.replace(params, aids=(*params.aids, amex))
    assert [aid.label for aid in supported_aids(params)] == ["VISA", "MASTERCARD"]
    assert "needs kernel 4, which pipos does not implement" in caplog.text
    with open_reader("sim:visa") as reader:
        request = new_request(1234, currency=978, clock=_fixed_clock, random_bytes=_counter_bytes)
        result = run_card_transaction(reader, params, request)
    assert str(result.outcome.kind) == "online_request"
    assert result.apdu_count == result.outcome.apdu_count


def test_request_takes_clock_and_random_source() -> None:
    request = new_request(500, currency=978, clock=_fixed_clock, random_bytes=_counter_bytes)
    assert (request.date, request.time) == ("261125", "101500")
    assert request.unpredictable_number == bytes.fromhex("01020304")
    assert request.random_selection == 1


def test_aid_config_passes_the_per_aid_configuration_through() -> None:
    params = default_params()
    visa = dataclasses.replace(
        params.aids[VISA],
        ttq=bytes.fromhex("20004000"),
        status_check=True,
        extended_selection=True,
        fdda_version_0=True,
    )
    config = aid_config(visa)
    assert config.ttq == bytes.fromhex("20004000")  # was parsed and dropped before
    assert config.status_check is True
    assert (config.extended_selection, config.fdda_version_0) == (True, True)
    master = aid_config(params.aids[MASTERCARD])
    assert dict(master.kernel_data) == dict(params.aids[MASTERCARD].kernel_data)
    assert master.kernel_data[0xDF811B] == bytes.fromhex("A0")
    assert master.ttq is None
    # The named fields reach the kernel as the objects they carry.
    assert master.data_object(0xDF8124) == bytes.fromhex("000000015000")
    assert master.data_object(0xDF8120) == params.aids[MASTERCARD].tac_default


@given(
    case=st.sampled_from([(VISA, 3), (MASTERCARD, 2)]).flatmap(
        lambda c: st.tuples(st.just(c[0]), kernel_data_dicts(c[1]))
    )
)
def test_any_valid_kernel_data_reaches_the_kernel_as_given(
    case: tuple[int, dict[int, bytes]],
) -> None:
    index, data = case
    aid = parse_params(kernel_data_document(index, data, False), "p.json").aids[index]
    config = aid_config(aid)  # the kernel's own checks agree with the parameter file's
    assert {tag: config.data_object(tag) for tag in data} == data


@pytest.mark.parametrize("card", ["mastercard", "mastercard_phone", "visa"])
def test_a_sale_on_the_default_kernel_data(card: str) -> None:
    with open_reader(f"sim:{card}") as reader:
        request = new_request(9000, currency=978, clock=_fixed_clock, random_bytes=_counter_bytes)
        result = run_card_transaction(reader, default_params(), request)
    assert str(result.outcome.kind) == "online_request"


class _LoopingReader:
    """A reader whose card answers SELECT, then breaks its transport on the next command."""

    def __init__(self, inner: CardReader) -> None:
        self.inner = inner
        self.calls = 0

    def transceive(self, command: bytes) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise TransportLoopError("pcsc:: the card kept answering '61xx' (more data)")
        return self.inner.transceive(command)

    def recorded_inputs(self) -> None:
        return None


def test_a_card_breaking_its_transport_ends_the_application_with_the_driver_s_reason() -> None:
    with open_reader("sim:visa") as inner:
        reader: Any = _LoopingReader(inner)
        request = new_request(900, currency=978, clock=_fixed_clock, random_bytes=_counter_bytes)
        result = run_card_transaction(reader, default_params(), request)
    assert result.outcome.kind is OutcomeKind.END_APPLICATION
    assert result.outcome.start is None  # tapping that card again would do the same
    assert "kept answering '61xx'" in result.fault


def test_a_stopped_conversation_sends_no_further_command() -> None:
    with open_reader("sim:visa") as inner:
        reader: Any = _LoopingReader(inner)
        request = new_request(900, currency=978, clock=_fixed_clock, random_bytes=_counter_bytes)
        result = run_card_transaction(reader, default_params(), request, stop=lambda: True)
    assert reader.calls == 0
    assert result.fault == "the card conversation was abandoned"


def test_an_abandoned_conversation_closes_its_reader_once_its_command_returns() -> None:
    release = threading.Event()
    closed: list[str] = []

    class Stuck:
        def transceive(self, command: bytes) -> bytes:
            release.wait(10)
            return b"\x6a\x82"

        def abort(self) -> None:
            closed.append("abort")

        def close(self) -> None:
            closed.append("close")

        def recorded_inputs(self) -> None:
            return None

    done = threading.Event()
    accepted: list[CardSessionResult] = []
    request = new_request(900, currency=978, clock=_fixed_clock, random_bytes=_counter_bytes)
    stuck: Any = Stuck()
    conversation = CardConversation(
        stuck, default_params(), request, accept=lambda r: bool(accepted.append(r)), done=done
    ).start()
    assert not done.wait(0.1)
    conversation.abandon()  # returns at once, never waits for the stuck command
    assert closed == ["abort"]
    release.set()
    assert done.wait(5)
    assert closed == ["abort", "close"]  # closed by the conversation's own thread
    assert accepted == []  # abandoned: its late outcome is never offered
