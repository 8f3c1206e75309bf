"""GET /api/v1/reconciliation: the per-transaction report over the API (the demo terminal
on the session's simulated host), its refusals, and its answer against its schema."""

from __future__ import annotations

import httpx
import pytest

from terminal.api.report_routes import ReconciliationReportModel
from terminal.api.stack import DemoStack
from tests.conftest_host import HostHandle
from tests.terminal.api.test_api import _pay
from tests.terminal.api.test_api import api as api
from tests.terminal.api.test_api import pin_clock as pin_clock
from tests.terminal.api.test_api import stack as stack
from tests.terminal.api.test_api_preauth import _hold

pytestmark = pytest.mark.integration


def test_the_open_batch_and_a_closed_one_are_reported_line_by_line(
    stack: DemoStack, api: httpx.Client
) -> None:
    paid = _pay(stack, api, 1234)
    declined = _pay(stack, api, 1551)
    answer = api.get("/api/v1/reconciliation")
    assert answer.status_code == 200, answer.text
    report = ReconciliationReportModel.model_validate(answer.json())
    assert report.batch == "current"
    assert report.open
    assert report.batch_id is None
    assert {(line.transaction_id, line.flag) for line in report.lines} == {
        (paid["id"], "match"),
        (declined["id"], "match"),
    }
    line = next(x for x in report.lines if x.transaction_id == paid["id"])
    assert (line.terminal_state, line.host_state, line.terminal_amount, line.host_amount) == (
        "approved",
        "approved",
        1234,
        1234,
    )
    assert report.differences == 0
    assert report.host_reachable
    assert report.counts["match"] == 2

    closed = api.post("/api/v1/end-of-day", json={"pin": "2468"})
    assert closed.status_code == 200, closed.text
    batch_id = closed.json()["batch_id"]
    by_id = api.get("/api/v1/reconciliation", params={"batch": batch_id})
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["batch_id"] == batch_id
    assert len(by_id.json()["lines"]) == 2
    assert api.get("/api/v1/reconciliation").json()["lines"] == []


def test_an_unknown_or_malformed_batch_and_a_missing_token_are_refused(
    stack: DemoStack, api: httpx.Client
) -> None:
    unknown = api.get("/api/v1/reconciliation", params={"batch": "B-NOT-HERE"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    malformed = api.get("/api/v1/reconciliation", params={"batch": "no spaces"})
    assert malformed.status_code == 422
    assert malformed.json()["error"]["field"] == "query.batch"
    with httpx.Client(base_url=stack.api.url) as anonymous:
        assert anonymous.get("/api/v1/reconciliation").status_code == 401


def test_with_the_acquirer_unreachable_the_report_still_answers(
    stack: DemoStack, api: httpx.Client, session_host: HostHandle
) -> None:
    paid = _pay(stack, api, 500)
    # (The session's host: its faults are cleared after every test.)
    session_host.set_fault("/v1/transactions", "refuse")
    answer = api.get("/api/v1/reconciliation")
    assert answer.status_code == 200, answer.text
    assert [(x["transaction_id"], x["flag"]) for x in answer.json()["lines"]] == [
        (paid["id"], "host_unreachable")
    ]
    assert answer.json()["host_reachable"] is False


def test_a_hold_its_increment_and_its_capture_are_each_a_line(
    stack: DemoStack, api: httpx.Client
) -> None:
    """A pre-authorisation raised, then captured in part: three lines, each matched by the
    host's record of it; only the capture (and the sale) move money in the totals."""
    paid = _pay(stack, api, 1000)
    held = _hold(stack, api, 8000)
    raised = api.post(
        f"/api/v1/preauths/{held['id']}/increments",
        json={"amount": 1500},
        headers={"Idempotency-Key": "report-inc"},
    )
    assert raised.status_code == 200, raised.text
    captured = api.post(
        f"/api/v1/preauths/{held['id']}/capture",
        json={"amount": 9000},
        headers={"Idempotency-Key": "report-cap"},
    )
    assert captured.status_code == 200, captured.text
    assert captured.json()["state"] == "approved"

    answer = api.get("/api/v1/reconciliation")
    assert answer.status_code == 200, answer.text
    report = ReconciliationReportModel.model_validate(answer.json())
    lines = {line.transaction_id: line for line in report.lines}
    assert {
        txn_id: (line.kind, line.flag, line.terminal_amount, line.host_state, line.host_amount)
        for txn_id, line in lines.items()
    } == {
        paid["id"]: ("sale", "match", 1000, "approved", 1000),
        # The hold's line: authorised for its first amount; captured since, at the host.
        held["id"]: ("preauth", "match", 8000, "captured", 8000),
        raised.json()["id"]: ("increment", "match", 1500, "approved", 1500),
        captured.json()["id"]: ("capture", "match", 9000, "approved", 9000),
    }
    assert report.differences == 0
    assert report.counts["match"] == 4
    assert [total.model_dump() for total in report.totals] == [
        {"currency": 978, "terminal_net": 10000, "host_net": 10000, "difference": 0}
    ]
