"""Schemathesis against both HTTP APIs, driven from their own OpenAPI documents.

* the terminal's local API for cash registers (real uvicorn on loopback, a real terminal
  enrolled with the simulated acquirer, virtual cards);
* the simulated acquirer host's API (protocol endpoints, which refuse unsigned requests, and
  the admin endpoints tests and operators use).

Whatever schemathesis sends, the answer is never a 5xx, and every error is a precise 4xx
carrying the documented JSON error body ``{"error": {"code": ..., "message": ...}}``. On the
terminal's API every answer also matches its OpenAPI document: a status code the endpoint
documents, that status's content type, and its schema (the error envelope, the transaction
view, ...).
Example counts are kept modest so the suite stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from simulator.host import HostServer
from terminal.api.stack import DemoStack, start_demo_stack
from tests.conftest_host import TEST_SCRYPT_N

# Both APIs over real HTTP on loopback (uvicorn's own refusals are part of the answer).
pytestmark = pytest.mark.integration

EXAMPLES = 12

# Long-lived streams would hold a worker forever; the event stream has its own tests.
STREAMS = "/api/v1/events"


@schemathesis.check
def precise_client_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx says what was wrong, in the documented error shape."""
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError as exc:
            raise AssertionError(f"{response.status_code} without a JSON body") from exc
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict), f"{response.status_code} without an error object: {body}"
        assert error.get("code"), f"{response.status_code} error without a code: {body}"
        assert error.get("message"), f"{response.status_code} error without a message: {body}"
    return None


CHECKS = [not_a_server_error, precise_client_error]
#: The terminal's API also says, in its OpenAPI, every status and schema it answers.
CONFORMANCE = [
    *CHECKS,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def terminal_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_demo_stack(
        tmp_path_factory.mktemp("schemathesis-terminal"),
        scrypt_n=TEST_SCRYPT_N,
        background=False,
        confirm_delay=0.0,
    )
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def terminal_schema(terminal_stack: DemoStack) -> Any:
    schema = schemathesis.openapi.from_url(terminal_stack.api.url + "/openapi.json")
    return schema.exclude(path=STREAMS)


@pytest.fixture(scope="module")
def host_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostServer]:
    server = HostServer(Path(tmp_path_factory.mktemp("schemathesis-host")) / "acquirer.sqlite3")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def host_schema(host_server: HostServer) -> Any:
    return schemathesis.openapi.from_url(host_server.url + "/openapi.json")


def _fuzz(
    schema: Any, headers: dict[str, str] | None = None, checks: list[Any] = CHECKS
) -> list[str]:
    """Run every operation of `schema` with generated requests; one line per failure.

    (Driven through hypothesis directly: schemathesis' pytest plugin does not load under the
    pytest version this project uses.)
    """
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(headers=headers, checks=checks, timeout=30)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing in this operation can be made invalid (no parameters)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations > 5, "the OpenAPI document lists the API's operations"
    print("\n".join(failures))
    return [f.splitlines()[0] + " | " + " ".join(f.split())[:600] for f in failures]


def test_terminal_api_answers_as_its_openapi_says_precise_4xx_never_5xx(
    terminal_schema: Any, terminal_stack: DemoStack
) -> None:
    failures = _fuzz(
        terminal_schema, {"Authorization": f"Bearer {terminal_stack.token}"}, CONFORMANCE
    )
    assert failures == []


def test_host_api_answers_precise_4xx_never_5xx(host_schema: Any) -> None:
    assert _fuzz(host_schema) == []
