"""The checkout's refusals say why, by a stable reason the merchant's screen words in the
terminal's language (ui string ``error_<code>_<reason>``, terminal.checkout.errors): a refund
of an offline sale the bank has not got yet, refunds and voids the sale's state forbids, a
void whose earlier answer was lost, bad amounts and currencies. An offline sale still in the
queue offers no refund until it is sent. The simulated acquirer in process (its "refuse"
fault for the outage and the lost answer); real journal and offline queue."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

import terminal.checkout.errors as checkout_errors
from terminal.app.runtime import TerminalRuntime
from terminal.checkout.errors import (
    AcquirerRequiredError,
    CheckoutError,
    NotFoundError,
    RequestError,
    StateError,
)
from terminal.domain.messages import LANGUAGES, ui_strings
from tests.conftest_host import HostHandle

CHECKOUT = Path(inspect.getfile(checkout_errors)).parent


def _sale(rt: TerminalRuntime, amount: int, card: str = "visa") -> dict[str, Any]:
    record = rt.checkout.start_sale(amount)
    assert rt.field is not None
    rt.field.present(f"sim:{card}")
    return rt.checkout.view(rt.checkout.wait(record.id, timeout=30))


def _offline_sale(rt: TerminalRuntime, host: HostHandle, amount: int) -> dict[str, Any]:
    """A sale taken while the bank drops every connection (the first, unanswered, is
    reversed as always; the next is taken offline)."""
    host.set_fault("/v1/", "refuse")
    try:
        if rt.checkout.host_online is not False:
            assert _sale(rt, 1200)["state"] == "declined"
        sale = _sale(rt, amount)
    finally:
        host.clear_faults()
    assert sale["state"] == "approved_offline"
    return sale


def _reason(excinfo: pytest.ExceptionInfo[CheckoutError]) -> tuple[str, str]:
    return type(excinfo.value).code, excinfo.value.reason


def test_an_offline_sale_not_yet_sent_offers_its_refund_only_after_it_is_sent(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    checkout = terminal.checkout
    sale = _offline_sale(terminal, host, 1500)
    assert sale["offline_status"] == "waiting"
    # The bank has no reference to refund against yet: nothing refundable now, but later.
    assert (sale["refundable_amount"], sale["refundable_after_sync"]) == (0, True)
    with pytest.raises(StateError) as refused:
        checkout.refund(sale["id"], 500)
    assert _reason(refused) == ("invalid_state", "offline_not_sent")
    with pytest.raises(StateError) as not_voided:
        checkout.void(sale["id"])
    assert _reason(not_voided) == ("invalid_state", "void_offline")

    assert checkout.sync_report()["accepted"] == 1
    sent = checkout.view(checkout.get(sale["id"]))
    assert sent["offline_status"] == "sent"
    assert (sent["refundable_amount"], sent["refundable_after_sync"]) == (1500, False)
    assert checkout.refund(sale["id"], 500).state == "approved"
    left = checkout.view(checkout.get(sale["id"]))
    assert (left["refundable_amount"], left["refundable_after_sync"]) == (1000, False)
    online = _sale(terminal, 900)
    assert (online["refundable_amount"], online["refundable_after_sync"]) == (900, False)


def test_a_void_whose_answer_was_lost_is_refused_as_pending_not_as_not_connected(
    terminal: TerminalRuntime, host: HostHandle
) -> None:
    checkout = terminal.checkout
    sale = _sale(terminal, 2500)
    host.set_fault("/v1/voids", "refuse")
    try:
        first = checkout.void(sale["id"])
        assert (first.state, first.outcome_unknown) == ("failed", True)
        with pytest.raises(AcquirerRequiredError) as pending:
            checkout.void(sale["id"])
    finally:
        host.clear_faults()
    assert _reason(pending) == ("acquirer_unavailable", "pending_void")
    # Once the bank answers, the earlier void is settled first: the sale is voided once.
    assert checkout.retry_reversals() == 0
    assert checkout.get(sale["id"]).voided


def test_each_refusal_says_why(terminal: TerminalRuntime) -> None:
    checkout = terminal.checkout
    refunded = _sale(terminal, 3000)
    with pytest.raises(RequestError) as too_much:
        checkout.refund(refunded["id"], 3001)
    assert _reason(too_much) == ("invalid_request", "refund_too_much")
    part = checkout.refund(refunded["id"], 1000)
    with pytest.raises(StateError) as void_refunded:
        checkout.void(refunded["id"])
    assert _reason(void_refunded) == ("invalid_state", "void_refunded")
    checkout.refund(refunded["id"])
    with pytest.raises(StateError) as in_full:
        checkout.refund(refunded["id"], 100)
    assert _reason(in_full) == ("invalid_state", "refund_fully_refunded")
    with pytest.raises(StateError) as refund_of_refund:
        checkout.refund(part.id, 100)
    assert _reason(refund_of_refund) == ("invalid_state", "refund_not_a_sale")
    with pytest.raises(StateError) as void_of_refund:
        checkout.void(part.id)
    assert _reason(void_of_refund) == ("invalid_state", "void_not_a_sale")

    voided = _sale(terminal, 1800)
    assert checkout.void(voided["id"]).state == "approved"
    with pytest.raises(StateError) as twice:
        checkout.void(voided["id"])
    assert _reason(twice) == ("invalid_state", "void_already_voided")
    with pytest.raises(StateError) as refund_voided:
        checkout.refund(voided["id"], 100)
    assert _reason(refund_voided) == ("invalid_state", "refund_voided")

    declined = _sale(terminal, 1051)  # the simulated issuer: 51 insufficient funds
    assert declined["state"] == "declined"
    with pytest.raises(StateError) as not_approved:
        checkout.refund(declined["id"], 100)
    assert _reason(not_approved) == ("invalid_state", "refund_not_approved")
    with pytest.raises(StateError) as void_declined:
        checkout.void(declined["id"])
    assert _reason(void_declined) == ("invalid_state", "void_not_approved")

    settled = _sale(terminal, 1300)
    checkout.end_of_day()
    with pytest.raises(StateError) as too_late:
        checkout.void(settled["id"])
    assert _reason(too_late) == ("invalid_state", "void_settled")

    with pytest.raises(NotFoundError) as nothing:
        checkout.cancel(None)
    assert _reason(nothing) == ("not_found", "not_running")
    with pytest.raises(StateError) as finished:
        checkout.cancel(settled["id"])
    assert _reason(finished) == ("invalid_state", "already_finished")
    with pytest.raises(NotFoundError) as unknown:
        checkout.get("S-none")
    assert _reason(unknown) == ("not_found", "no_transaction")
    with pytest.raises(NotFoundError) as no_batch:
        checkout.batch_report("B-none")
    assert _reason(no_batch) == ("not_found", "no_batch")
    for amount, code, method, reason in (
        (0, 978, "card", "amount_not_positive"),
        (10**12, 978, "card", "amount_too_large"),
        (100, 840, "card", "wrong_currency"),
        (100, 999, "card", "unknown_currency"),
        (100, 978, "cash", "unknown_method"),
    ):
        with pytest.raises(RequestError) as bad:
            checkout.start_sale(amount, code, method=method)
        assert _reason(bad) == ("invalid_request", reason), (amount, code, method)


def _assigned(function: ast.AST, name: str) -> set[str]:
    """The strings `function` assigns to `name` (``reason = "x"``, ``why, reason = ...``)."""
    values: set[str] = set()
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs: list[tuple[ast.expr, ast.expr]] = [(target, node.value)]
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(target.elts, node.value.elts, strict=True))
            for left, right in pairs:
                if isinstance(left, ast.Name) and left.id == name:
                    assert isinstance(right, ast.Constant), ast.dump(right)
                    values.add(str(right.value))
    return values


def _raised_reasons() -> set[tuple[str, str]]:
    """(code, reason) of every refusal the checkout's modules raise with a reason: a string
    given as `reason=`, or each string the function assigns to the variable given."""
    classes = {
        name: cls
        for name, cls in vars(checkout_errors).items()
        if isinstance(cls, type) and issubclass(cls, CheckoutError)
    }
    found: set[tuple[str, str]] = set()
    for module in sorted(CHECKOUT.glob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                    continue
                cls = classes.get(node.func.id)
                for keyword in node.keywords:
                    if cls is None or keyword.arg != "reason":
                        continue
                    if isinstance(keyword.value, ast.Name):
                        reasons = _assigned(function, keyword.value.id)
                        assert reasons, (module.name, node.lineno)
                    else:
                        assert isinstance(keyword.value, ast.Constant), (module.name, node.lineno)
                        reasons = {str(keyword.value.value)}
                    found |= {(cls.code, reason) for reason in reasons}
    return found


def test_every_reason_the_checkout_gives_has_a_text_in_every_language() -> None:
    raised = _raised_reasons()
    assert ("invalid_state", "offline_not_sent") in raised
    assert ("acquirer_unavailable", "pending_void") in raised
    assert len(raised) > 30
    for language in LANGUAGES:
        strings = ui_strings(language)
        missing = sorted({f"error_{code}_{reason}" for code, reason in raised} - strings.keys())
        assert not missing, (language, missing)
    zh = ui_strings("zh")
    english = ui_strings("en")
    for code, reason in raised:
        key = f"error_{code}_{reason}"
        assert zh[key] != english[key]
        assert "{message}" not in zh[key] + english[key]  # the page's words, never the server's


def test_the_status_says_from_which_amount_each_kernel_refuses(
    terminal: TerminalRuntime,
) -> None:
    """Kernel 3 (Visa, through Entry Point, Book B §3.1.1.6) refuses an amount greater than
    or equal to the limit; Kernel 2 (Mastercard, Book C-2 S456.14) one greater than it."""
    limits = {x["brand"]: x for x in terminal.checkout.status()["contactless_limits"]}
    visa, mastercard = limits["VISA"], limits["MASTERCARD"]
    assert (visa["amount"], visa["text"]) == (15000, "150.00 EUR")
    assert (visa["refused_from"], visa["refused_from_text"]) == (15000, "150.00 EUR")
    assert (mastercard["refused_from"], mastercard["refused_from_text"]) == (15001, "150.01 EUR")
    assert (visa["kernel_id"], mastercard["kernel_id"]) == (3, 2)
    assert visa["on_device_cvm_refused_from"] == 100000
    assert mastercard["on_device_cvm_refused_from_text"] == "1000.01 EUR"
