"""The terminal API's OpenAPI document says the truth a register can build on: a bearer
security scheme (Swagger's Authorize button), the error envelope on every error status each
endpoint documents (never FastAPI's ``{"detail": [...]}``), a schema for every success
answer, the event stream's types, and response models that name every field the endpoints
really send (checked against the answers of a real sale, refund, void and end of day).
Integration tests: a real API server on loopback, against the simulated acquirer host."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from terminal.api.models import (
    BatchList,
    EndOfDayReport,
    Status,
    Totals,
    TransactionList,
    TransactionView,
)
from terminal.api.stack import DemoStack
from tests.terminal.api.test_api import api as api
from tests.terminal.api.test_api import pin_clock as pin_clock
from tests.terminal.api.test_api import stack as stack

pytestmark = pytest.mark.integration

PIN = "2468"


@pytest.fixture
def document(api: httpx.Client) -> dict[str, Any]:
    answer = api.get("/openapi.json")
    assert answer.status_code == 200
    return dict(answer.json())


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


def test_every_api_endpoint_is_behind_the_bearer_scheme(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    api = [(m, p, op) for m, p, op in _operations(document) if p.startswith("/api/v1/")]
    assert len(api) > 20
    # The one endpoint without a token: a new register pairs with the code on the screen.
    public = {(m, p) for m, p, op in api if not op.get("security")}
    assert public == {("POST", "/api/v1/pairing")}
    for method, path, operation in api:
        if (method, path) in public:
            continue
        assert {"bearerAuth": []} in operation.get("security", []), (method, path)
        # The token is the scheme's, not an optional header parameter of every endpoint.
        names = {p["name"].lower() for p in operation.get("parameters", [])}
        assert "authorization" not in names, (method, path)
    # ?token= only where a browser cannot send the header.
    query = {p for m, p, op in api if {"tokenQuery": []} in op.get("security", [])}
    assert query == {"/api/v1/events", "/api/v1/sales/{txn_id}/qr.svg"}
    health = document["paths"]["/health"]["get"]
    assert not health.get("security")


def test_every_error_status_is_the_envelope(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    assert "HTTPValidationError" not in text
    assert '"detail"' not in text
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    body = document["components"]["schemas"]["ErrorBody"]["properties"]
    assert {"code", "message", "field", "reason", "tries_left", "retry_after"} <= set(body)
    for method, path, operation in _operations(document):
        errors = {s: a for s, a in operation["responses"].items() if s[0] in "45"}
        if path.startswith("/api/v1/"):
            # Pairing takes no token, so it never answers 401.
            needed = {"400"} if (method, path) == ("POST", "/api/v1/pairing") else {"400", "401"}
            assert needed <= set(errors), (method, path)
        for _status, answer in errors.items():
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path)
    responses = document["paths"]["/api/v1/transactions/{txn_id}/refund"]["post"]["responses"]
    assert {"403", "404", "409", "413", "422", "423", "503"} <= set(responses)
    assert "Retry-After" in responses["423"]["headers"]


def test_every_endpoint_documents_its_success_answer(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        ok = [s for s in operation["responses"] if s in ("200", "201", "202")]
        assert ok, (method, path)
        for status in ok:
            content = operation["responses"][status]["content"]
            for media, body in content.items():
                assert body.get("schema"), (method, path, media)
    sale = document["paths"]["/api/v1/sales"]["post"]["responses"]
    assert sale["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TransactionView"
    }
    view = document["components"]["schemas"]["TransactionView"]
    assert {"kind", "state", "amount", "refunds", "original", "extra"} <= set(view["properties"])
    assert view["properties"]["extra"]["type"] == "object"


def test_the_event_stream_names_its_event_types(document: dict[str, Any]) -> None:
    events = document["paths"]["/api/v1/events"]["get"]
    stream = events["responses"]["200"]["content"]["text/event-stream"]
    types = set(stream["x-events"])
    assert {"status", "transaction", "ready", "restart", "scan_rejected", "end_of_day"} <= types
    for name in types:
        assert f"`{name}`" in events["description"], name


def _check(model: type[BaseModel], answer: dict[str, Any], where: str) -> None:
    """`answer` validates against `model`, and every field it carries is one the model
    names (the schema keeps extra fields allowed, so this is where a new field is caught)."""
    model.model_validate(answer)
    named = {f.alias or name for name, f in model.model_fields.items()}
    assert set(answer) <= named, f"{where}: fields the schema does not name: {set(answer) - named}"


def test_the_models_name_every_field_the_endpoints_send(
    stack: DemoStack, api: httpx.Client
) -> None:
    created = api.post("/api/v1/sales", json={"amount": 1500, "currency": 978})
    assert created.status_code == 202
    _check(TransactionView, created.json(), "sale started")
    assert api.post("/api/v1/simulator/present", json={"card": "visa"}).status_code == 200
    sale_id = created.json()["id"]
    stack.checkout.wait(sale_id, timeout=30)
    refund = api.post(f"/api/v1/transactions/{sale_id}/refund", json={"pin": PIN, "amount": 500})
    assert refund.status_code == 200, refund.text
    _check(TransactionView, refund.json(), "refund")
    sale = api.get(f"/api/v1/transactions/{sale_id}").json()
    _check(TransactionView, sale, "refunded sale")
    assert sale["refunds"]
    assert refund.json()["original"]
    listed = api.get("/api/v1/transactions").json()
    _check(TransactionList, listed, "list")
    for view in listed["transactions"]:
        _check(TransactionView, view, "listed")
    _check(Totals, api.get("/api/v1/totals").json(), "totals")
    _check(Status, api.get("/api/v1/status").json(), "status")
    report = api.post("/api/v1/end-of-day", json={"pin": PIN})
    assert report.status_code == 200, report.text
    _check(EndOfDayReport, report.json(), "end of day")
    batches = api.get("/api/v1/batches").json()
    _check(BatchList, batches, "batches")
