"""The simulated acquirer's pre-authorisations (docs/protocol.md, "Pre-authorisation"): a
hold authorised like a sale with `"kind": "preauth"`, raised only while open, captured once
for 1 up to what it holds (the rest released), released while open, lapsed after the rules'
days; signed, idempotent by key, under the same fault injection as sales; settlement counts
a capture as a sale of its amount and nothing else of a hold; the status lookup shows what
a hold holds. In process, through the terminal's own acquirer client."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from terminal.acquirer.client import (
    AcquirerClient,
    AuthorisationRequest,
    BrandTotals,
    HoldChange,
    HostRejectedError,
    OutcomeUnknownError,
    RefundRequest,
)
from tests.conftest_host import (
    AcquirerTerminal,
    HostHandle,
    TerminalKeys,
    card_emv,
    enrolled_terminal,
    inprocess_host_at,
)

PAN = "4761739001010010"


def _authorise(client: AcquirerClient, amount: int, *, kind: str | None = "preauth") -> str:
    emv, psn = card_emv(PAN, amount)
    answer = client.authorise(
        AuthorisationRequest(
            amount=amount, currency=826, pan=PAN, pan_sequence=psn, emv=emv, kind=kind
        )
    )
    assert answer.approved, answer
    assert answer.transaction_ref
    return answer.transaction_ref


def _key(client: AcquirerClient) -> str:
    return client.new_idempotency_key("hold")


def test_a_hold_is_kept_apart_from_sales_and_moves_no_money(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    client = inprocess_terminal.client
    ref = _authorise(client, 5000)
    assert ref.startswith("P")
    status = client.status(transaction_ref=ref)
    assert (status.kind, status.status) == ("preauth", "approved")
    assert (status.authorised_amount, status.captured_amount, status.released_amount) == (
        5000,
        0,
        0,
    )
    settlement = client.settle(terminal_totals=[])
    assert settlement.totals == ()
    assert settlement.in_balance is True


def test_increments_raise_only_an_open_hold(inprocess_terminal: AcquirerTerminal) -> None:
    client = inprocess_terminal.client
    ref = _authorise(client, 5000)
    raised = client.increment_hold(ref, 2500, 826, idempotency_key=_key(client))
    assert (raised.status, raised.authorised_amount, raised.hold_status) == (
        "approved",
        7500,
        "open",
    )
    # The issuer's rules decide on the added amount: x.51 is insufficient funds.
    declined = client.increment_hold(ref, 151, 826, idempotency_key=_key(client))
    assert (declined.status, declined.response_code, declined.authorised_amount) == (
        "declined",
        "51",
        7500,
    )
    with pytest.raises(HostRejectedError) as mismatch:
        client.increment_hold(ref, 100, 978, idempotency_key=_key(client))
    assert mismatch.value.code == "currency_mismatch"
    client.capture_hold(ref, 7500, 826, idempotency_key=_key(client))
    with pytest.raises(HostRejectedError) as closed:
        client.increment_hold(ref, 100, 826, idempotency_key=_key(client))
    assert (closed.value.status, closed.value.code) == (409, "hold_captured")


def test_one_capture_of_1_up_to_the_hold_and_the_rest_released(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    client = inprocess_terminal.client
    ref = _authorise(client, 5000)
    with pytest.raises(HostRejectedError) as over:
        client.capture_hold(ref, 5001, 826, idempotency_key=_key(client))
    assert (over.value.status, over.value.code) == (422, "capture_exceeds_hold")
    captured = client.capture_hold(ref, 3000, 826, idempotency_key=_key(client))
    assert (captured.status, captured.hold_status) == ("approved", "captured")
    assert (captured.captured_amount, captured.released_amount) == (3000, 2000)
    with pytest.raises(HostRejectedError) as again:
        client.capture_hold(ref, 1000, 826, idempotency_key=_key(client))
    assert (again.value.status, again.value.code) == (409, "hold_captured")
    with pytest.raises(HostRejectedError) as release:
        client.release_hold(ref, idempotency_key=_key(client))
    assert release.value.code == "hold_captured"
    status = client.status(transaction_ref=ref)
    assert (status.status, status.captured_amount, status.released_amount) == (
        "captured",
        3000,
        2000,
    )
    # Settlement: the capture is a sale of what was captured; the hold itself is not (no
    # brand or AID was sent: the host books it "unknown").
    sale = _authorise(client, 1200, kind=None)
    assert sale.startswith("A")
    terminal_totals = [BrandTotals("unknown", 826, 2, 4200, 0, 0, 4200)]
    settlement = client.settle(terminal_totals=terminal_totals)
    [line] = settlement.totals
    assert (line.sales_count, line.sales_amount) == (2, 4200)
    assert settlement.in_balance is True


def test_release_of_an_open_hold_only(inprocess_terminal: AcquirerTerminal) -> None:
    client = inprocess_terminal.client
    ref = _authorise(client, 4000)
    released = client.release_hold(ref, idempotency_key=_key(client))
    assert (released.status, released.amount, released.released_amount) == ("approved", 4000, 4000)
    changes: list[Callable[[], HoldChange]] = [
        lambda: client.release_hold(ref, idempotency_key=_key(client)),
        lambda: client.capture_hold(ref, 100, 826, idempotency_key=_key(client)),
    ]
    for change in changes:
        with pytest.raises(HostRejectedError) as closed:
            change()
        assert (closed.value.status, closed.value.code) == (409, "hold_released")
    assert client.settle().totals == ()


def test_a_sale_or_an_unknown_reference_is_no_hold(inprocess_terminal: AcquirerTerminal) -> None:
    client = inprocess_terminal.client
    sale = _authorise(client, 1000, kind=None)
    for ref in (sale, "P0000000000000000"):
        with pytest.raises(HostRejectedError) as missing:
            client.capture_hold(ref, 100, 826, idempotency_key=_key(client))
        assert (missing.value.status, missing.value.code) == (404, "not_found")


def test_a_capture_is_idempotent_by_key_and_a_fault_does_not_double_it(
    inprocess_terminal: AcquirerTerminal, inprocess_host: HostHandle
) -> None:
    client = inprocess_terminal.client
    ref = _authorise(client, 5000)
    key = _key(client)
    inprocess_host.set_fault("/v1/preauths/", "http_500")
    with pytest.raises(OutcomeUnknownError) as unknown:
        client.capture_hold(ref, 5000, 826, idempotency_key=key)
    assert unknown.value.idempotency_key == key
    inprocess_host.clear_faults()
    first = client.capture_hold(ref, 5000, 826, idempotency_key=key)
    second = client.capture_hold(ref, 5000, 826, idempotency_key=key)
    assert first == second
    captures = [r for r in inprocess_host.ledger() if r["kind"] == "capture"]
    assert len(captures) == 1
    with pytest.raises(HostRejectedError) as reused:
        client.capture_hold(ref, 4000, 826, idempotency_key=key)
    assert reused.value.code == "idempotency_key_reused"


def test_a_hold_whose_answer_was_lost_is_reversed_by_its_key(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    client = inprocess_terminal.client
    emv, psn = card_emv(PAN, 3000)
    key = client.new_idempotency_key("auth")
    client.authorise(
        AuthorisationRequest(
            amount=3000, currency=826, pan=PAN, pan_sequence=psn, emv=emv, kind="preauth"
        ),
        idempotency_key=key,
    )
    reversal = client.reverse(original_idempotency_key=key)
    assert reversal.status == "reversed"
    assert reversal.original_ref is not None
    with pytest.raises(HostRejectedError) as closed:
        client.capture_hold(reversal.original_ref, 100, 826, idempotency_key=_key(client))
    assert (closed.value.status, closed.value.code) == (409, "hold_not_open")


def test_a_hold_lapses_after_the_rules_days(tmp_path: Path, terminal_keys: TerminalKeys) -> None:
    now = [time.time()]
    with (
        inprocess_host_at(
            tmp_path / "acquirer.sqlite3", clock=lambda: now[0], timestamp_window=30 * 86400
        ) as host,
        enrolled_terminal(host, terminal_keys) as terminal,
    ):
        client = terminal.client
        ref = _authorise(client, 2000)
        now[0] += 7 * 86400 - 60  # the default 7 days, not quite
        assert client.status(transaction_ref=ref).authorised_amount == 2000
        now[0] += 120
        with pytest.raises(HostRejectedError) as lapsed:
            client.capture_hold(ref, 2000, 826, idempotency_key=_key(client))
        assert (lapsed.value.status, lapsed.value.code) == (409, "hold_expired")
        # The rules set it: 30 days, and the same hold is open again.
        host.set_rules(preauth_hold_days=30)
        captured = client.capture_hold(ref, 2000, 826, idempotency_key=_key(client))
        assert captured.status == "approved"


# --- issue 18 review: lookups by key, what a hold counts, one key per hold ----------------


def test_a_refund_and_each_change_of_a_hold_are_found_by_their_key(
    inprocess_terminal: AcquirerTerminal,
) -> None:
    """The terminal looks up a lost answer by the key it sent: a capture, an increment, a
    release or a refund is found like a sale (not 404, which would read as "never done")."""
    client = inprocess_terminal.client
    held = _authorise(client, 5000)
    raise_key, capture_key = _key(client), _key(client)
    client.increment_hold(held, 1000, 826, idempotency_key=raise_key)
    captured = client.capture_hold(held, 4000, 826, idempotency_key=capture_key)
    released = _authorise(client, 3000)
    release_key = _key(client)
    client.release_hold(released, idempotency_key=release_key)
    sale = _authorise(client, 2000, kind=None)
    refund_key = client.new_idempotency_key("refund")
    client.refund(RefundRequest(500, 826, original_ref=sale), idempotency_key=refund_key)

    found = {
        key: client.status(idempotency_key=key)
        for key in (raise_key, capture_key, release_key, refund_key)
    }
    assert [(s.kind, s.status, s.amount) for s in found.values()] == [
        ("increment", "approved", 1000),
        ("capture", "approved", 4000),
        ("release", "approved", 3000),
        ("refund", "approved", 500),
    ]
    assert found[capture_key].transaction_ref == captured.transaction_ref
    assert found[capture_key].original_ref == held


def test_a_reversed_hold_holds_nothing(inprocess_terminal: AcquirerTerminal) -> None:
    client = inprocess_terminal.client
    emv, psn = card_emv(PAN, 3000)
    key = client.new_idempotency_key("auth")
    client.authorise(
        AuthorisationRequest(
            amount=3000, currency=826, pan=PAN, pan_sequence=psn, emv=emv, kind="preauth"
        ),
        idempotency_key=key,
    )
    reversal = client.reverse(original_idempotency_key=key)
    assert reversal.original_ref is not None
    status = client.status(transaction_ref=reversal.original_ref)
    assert (status.status, status.authorised_amount, status.released_amount) == ("reversed", 0, 0)


def test_open_holds_count_toward_the_cards_limit_until_captured_or_released(
    inprocess_terminal: AcquirerTerminal, inprocess_host: HostHandle
) -> None:
    client = inprocess_terminal.client
    inprocess_host.set_rules(default_card_limit=6000)
    held = _authorise(client, 5000)
    # 5000 held of 6000: 2000 more is over the limit, as a sale or as an increment.
    emv, psn = card_emv(PAN, 2000)
    over = client.authorise(
        AuthorisationRequest(amount=2000, currency=826, pan=PAN, pan_sequence=psn, emv=emv)
    )
    assert (over.approved, over.response_code) == (False, "61")
    raised = client.increment_hold(held, 2000, 826, idempotency_key=_key(client))
    assert (raised.status, raised.response_code, raised.authorised_amount) == (
        "declined",
        "61",
        5000,
    )
    # Captured for 3000: the rest is released, the capture spent; 2000 more fits (5000).
    client.capture_hold(held, 3000, 826, idempotency_key=_key(client))
    assert _authorise(client, 2000, kind=None).startswith("A")
    # 5000 spent of 6000: a 1500 hold is over the limit; a released hold frees its amount.
    emv, psn = card_emv(PAN, 1500)
    big_hold = client.authorise(
        AuthorisationRequest(
            amount=1500, currency=826, pan=PAN, pan_sequence=psn, emv=emv, kind="preauth"
        )
    )
    assert big_hold.response_code == "61"
    small = _authorise(client, 1000)
    client.release_hold(small, idempotency_key=_key(client))
    assert _authorise(client, 1000).startswith("P")


def test_a_lapsed_hold_says_expired_and_frees_the_cards_limit(
    tmp_path: Path, terminal_keys: TerminalKeys
) -> None:
    now = [time.time()]
    with (
        inprocess_host_at(
            tmp_path / "acquirer.sqlite3", clock=lambda: now[0], timestamp_window=30 * 86400
        ) as host,
        enrolled_terminal(host, terminal_keys) as terminal,
    ):
        client = terminal.client
        host.set_rules(default_card_limit=3000)
        ref = _authorise(client, 2000)
        now[0] += 7 * 86400 + 60
        status = client.status(transaction_ref=ref)
        assert (status.kind, status.status, status.authorised_amount) == (
            "preauth",
            "expired",
            2000,
        )
        # The funds are the card's again: the whole limit is free.
        assert _authorise(client, 3000, kind=None).startswith("A")


def test_a_key_sent_to_another_hold_is_a_different_request(
    inprocess_terminal: AcquirerTerminal, inprocess_host: HostHandle
) -> None:
    """The same key and body on another hold's path is not a replay: refused, never
    answered with the first hold's capture (which would tell the register the second hold
    is captured when nothing was taken)."""
    client = inprocess_terminal.client
    first, second = _authorise(client, 5000), _authorise(client, 5000)
    key = _key(client)
    client.capture_hold(first, 2500, 826, idempotency_key=key)
    replays: list[Callable[[], HoldChange]] = [
        lambda: client.capture_hold(second, 2500, 826, idempotency_key=key),
        lambda: client.increment_hold(second, 2500, 826, idempotency_key=key),
    ]
    for action in replays:
        with pytest.raises(HostRejectedError) as reused:
            action()
        assert (reused.value.status, reused.value.code) == (422, "idempotency_key_reused")
    release_key = _key(client)
    client.release_hold(second, idempotency_key=release_key)
    third = _authorise(client, 1000)
    with pytest.raises(HostRejectedError) as reused_release:
        client.release_hold(third, idempotency_key=release_key)
    assert reused_release.value.code == "idempotency_key_reused"
    assert client.status(transaction_ref=third).status == "approved"
    captures = [r for r in inprocess_host.ledger() if r["kind"] == "capture"]
    assert [(r["original_ref"], r["amount"]) for r in captures] == [(first, 2500)]
