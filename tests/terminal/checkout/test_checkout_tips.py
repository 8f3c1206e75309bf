"""Tip entry at the checkout (terminal.checkout.sale: Stage.WAITING_FOR_TIP, set_tip): the
reader is not armed before the tip; the card is asked for base + tip; cancel, the wait's
timeout, refusals; the receipt's tip line; the presets' arithmetic and their parsing, in
`pipos run --tips` and the configuration file's checkout.tips."""

from __future__ import annotations

from typing import Any

import pytest

from terminal.app.runtime import TerminalRuntime
from terminal.checkout.errors import RequestError, StateError
from terminal.domain.currency import MAX_EMV_AMOUNT
from terminal.domain.errors import ConfigurationError
from terminal.domain.messages import Result
from terminal.domain.receipts import build_receipt
from terminal.domain.records import Stage, State
from terminal.domain.tips import TipSettings, tip_for
from terminal.service.config import ConfigError, parse_config
from tests.conftest_host import HostHandle

TIPS = TipSettings((10, 15, 20), custom=True)


def _tipping(rt: TerminalRuntime) -> TerminalRuntime:
    rt.checkout.tips = TIPS
    return rt


def _events_of(rt: TerminalRuntime, txn_id: str, after: int) -> list[dict[str, Any]]:
    return [e for e in rt.checkout.events.after(after, timeout=0) if e["data"].get("id") == txn_id]


def test_a_sale_waits_for_the_tip_then_asks_the_card_for_the_total(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    checkout = _tipping(terminal).checkout
    before = checkout.events.last_id
    record = checkout.start_sale(1234)
    assert record.stage is Stage.WAITING_FOR_TIP
    assert checkout.view(record)["prompt"] == "Waiting for the customer to choose a tip"
    # The reader is not armed while the customer chooses: no "ready" event yet.
    assert checkout.wait(record.id, timeout=0.3).stage is Stage.WAITING_FOR_TIP
    assert [e["type"] for e in _events_of(terminal, record.id, before)] == ["transaction"]
    tipped = checkout.set_tip(record.id, tip_for(1234, 15))
    assert (tipped.amount, tipped.tip_amount, tipped.stage) == (1419, 185, Stage.WAITING_FOR_CARD)
    assert terminal.field is not None
    terminal.field.present("sim:visa")
    done = checkout.wait(record.id, timeout=30)
    assert done.state is State.APPROVED
    assert (done.amount, done.tip_amount) == (1419, 185)
    assert [(r["amount"], r["status"]) for r in host.ledger()] == [(1419, "approved")]
    receipt = build_receipt(done, checkout.params, "customer").text()
    assert "SUBTOTAL" in receipt
    assert "12.34 EUR" in receipt
    assert "TIP" in receipt
    assert "1.85 EUR" in receipt
    assert "14.19 EUR" in receipt
    # The tip was one commit, published: the view the page and the register get.
    views = [
        e["data"] for e in _events_of(terminal, record.id, before) if e["type"] == "transaction"
    ]
    assert any(v["stage"] == "waiting_for_card" and v["tip_amount"] == 185 for v in views)


def test_no_tip_asks_the_card_for_the_base_and_the_receipt_has_no_tip_line(
    terminal: TerminalRuntime,
) -> None:
    checkout = _tipping(terminal).checkout
    record = checkout.start_sale(500)
    checkout.set_tip(record.id, 0)
    assert terminal.field is not None
    terminal.field.present("sim:visa")
    done = checkout.wait(record.id, timeout=30)
    assert (done.state, done.amount, done.tip_amount) == (State.APPROVED, 500, 0)
    assert "TIP" not in build_receipt(done, checkout.params, "customer").text()


def test_cancel_on_the_tip_screen_ends_the_sale_and_a_late_tip_is_refused(
    terminal: TerminalRuntime,
) -> None:
    checkout = _tipping(terminal).checkout
    record = checkout.start_sale(800)
    checkout.cancel(record.id)
    done = checkout.wait(record.id, timeout=10)
    assert (done.state, done.result) == (State.CANCELLED, Result.CANCELLED)
    assert done.amount == 800
    with pytest.raises(StateError) as refused:
        checkout.set_tip(record.id, 80)
    assert refused.value.reason == "already_finished"
    assert checkout.current is None  # the terminal is free for the next sale


@pytest.mark.parametrize("terminal_options", [{"card_timeout": 0.3}])
def test_no_tip_chosen_in_time_cancels_the_sale(terminal: TerminalRuntime) -> None:
    checkout = _tipping(terminal).checkout
    record = checkout.start_sale(800)
    done = checkout.wait(record.id, timeout=10)
    assert done.state is State.CANCELLED
    assert "no tip chosen" in done.reason


def test_a_tip_is_refused_for_a_sale_not_waiting_for_one(terminal: TerminalRuntime) -> None:
    checkout = terminal.checkout  # tip entry off: straight to the card
    record = checkout.start_sale(700)
    assert record.stage is Stage.WAITING_FOR_CARD
    with pytest.raises(StateError) as refused:
        checkout.set_tip(record.id, 70)
    assert refused.value.reason == "not_waiting_for_tip"
    checkout.cancel(record.id)
    assert checkout.wait(record.id, timeout=10).amount == 700


def test_a_tip_over_the_emv_maximum_or_negative_is_refused_and_the_sale_waits_on(
    terminal: TerminalRuntime,
) -> None:
    checkout = _tipping(terminal).checkout
    near_the_top = checkout.start_sale(MAX_EMV_AMOUNT - 10)
    with pytest.raises(RequestError) as over_emv:
        checkout.set_tip(near_the_top.id, 11)
    assert over_emv.value.reason == "amount_too_large"
    checkout.cancel(near_the_top.id)
    checkout.wait(near_the_top.id, timeout=10)
    record = checkout.start_sale(1000)
    with pytest.raises(RequestError) as too_large:
        checkout.set_tip(record.id, 1001)  # an extra zero typed: more than the sale itself
    assert too_large.value.reason == "tip_too_large"
    with pytest.raises(RequestError) as negative:
        checkout.set_tip(record.id, -1)
    assert negative.value.reason == "tip_not_valid"
    assert checkout.get(record.id).stage is Stage.WAITING_FOR_TIP
    assert checkout.set_tip(record.id, 100).amount == 1100
    checkout.cancel(record.id)
    assert checkout.wait(record.id, timeout=10).state is State.CANCELLED


def test_a_tip_given_with_the_sale_skips_the_tip_screen(terminal: TerminalRuntime) -> None:
    checkout = _tipping(terminal).checkout
    record = checkout.start_sale(1000, tip_amount=150)
    assert (record.amount, record.tip_amount, record.stage) == (
        1150,
        150,
        Stage.WAITING_FOR_CARD,
    )
    with pytest.raises(RequestError):
        checkout.start_sale(MAX_EMV_AMOUNT, tip_amount=1)
    checkout.cancel(record.id)
    checkout.wait(record.id, timeout=10)


def test_a_tip_given_with_a_merchant_qr_sale_is_kept(terminal: TerminalRuntime) -> None:
    checkout = terminal.checkout
    record = checkout.start_sale(1000, tip_amount=150, method="merchant_qr")
    assert (record.amount, record.tip_amount) == (1150, 150)
    assert "540511.50" in checkout.merchant_qr_payload(record)  # EMVCo MPM tag 54: the total
    checkout.cancel(record.id)
    assert checkout.wait(record.id, timeout=10).tip_amount == 150


@pytest.mark.parametrize(
    ("base", "percent", "tip"),
    [(1234, 15, 185), (1230, 15, 185), (1000, 10, 100), (1, 10, 0), (5, 10, 1), (333, 20, 67)],
)
def test_a_presets_tip_is_rounded_half_up_to_the_minor_unit(
    base: int, percent: int, tip: int
) -> None:
    assert tip_for(base, percent) == tip


def test_tip_presets_as_typed() -> None:
    assert TipSettings.parse("20,10,15") == TipSettings((10, 15, 20), custom=True)
    assert TipSettings.parse("", custom=True) == TipSettings((), custom=True)
    assert not TipSettings().enabled
    for bad, said in [
        ("10,abc", "not a whole percentage"),
        ("0", "outside 1 to 100"),
        ("150", "outside 1 to 100"),
        ("10,10", "given twice"),
        ("5,10,15,20,25", "holds 4"),
    ]:
        with pytest.raises(ConfigurationError, match=said):
            TipSettings.parse(bad)
    with pytest.raises(ConfigurationError, match="nothing to offer"):
        TipSettings.parse("", custom=False)


def _config(checkout: dict[str, Any]) -> dict[str, Any]:
    return {
        "acquirer": {"url": "https://acquirer.example"},
        "storage": {"data_dir": "/var/lib/pipos", "secret_file": "/etc/pipos/secret"},
        "checkout": checkout,
    }


def test_the_configuration_files_checkout_tips() -> None:
    config = parse_config(_config({"tips": "10,15", "tip_custom": False}), "terminal.toml")
    assert config.tip_settings == TipSettings((10, 15), custom=False)
    assert parse_config(_config({}), "t.toml").tip_settings == TipSettings()
    with pytest.raises(ConfigError, match=r"checkout\.tips: tip preset 0 %"):
        parse_config(_config({"tips": "0"}), "t.toml")
    with pytest.raises(ConfigError, match="tip_custom: expected true or false"):
        parse_config(_config({"tips": "10", "tip_custom": "yes"}), "t.toml")
    with pytest.raises(ConfigError, match=r"only used with checkout\.tips"):
        parse_config(_config({"tip_custom": True}), "t.toml")
