"""The terminal's card session: parameters become kernel configuration, bytes move."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from drivers.url import open_reader
from terminal.checkout.card_session import new_request, run_card_transaction, supported_aids
from terminal.domain.params import default_params


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
