"""Fixture plugins: the real components tests start (pcscd + vpcd, nfcpy udp, pty pairs, the
simulated acquirer host on 127.0.0.1) and the in-process seams unit tests take instead (the
host through tests/inprocess.py); the ``integration`` marker on every test that starts a real
component; and, under ``CI=true``, no silent skips. How to add a test: tests/README.md.

A test skips when a component it needs is missing on a developer's machine (not root, no
pcscd or vpcd, no Chromium, no pty, an extra not installed); the skip says what is missing.
In CI every component must be there, so under ``CI=true`` such a skip is turned into a
failure that names the missing component: a green CI run has run every test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.conftest_hardware", "tests.conftest_host", "tests.conftest_tpm"]

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skip_reason(longrepr: object) -> str:
    # A skip's report is (file, line, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _as_failure(report: pytest.CollectReport | pytest.TestReport) -> None:
    reason = _skip_reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"CI=true: this test would have been skipped, and CI skips nothing.\n"
        f"Missing component: {reason}\n"
        f"Install it (scripts/bootstrap.sh does, as root) or run outside CI to skip."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        _as_failure(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    # A whole module skipped at import (pytest.importorskip, allow_module_level=True).
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if IN_CI and report.outcome == "skipped":
        _as_failure(report)


# Fixtures that start a real component (tests/README.md): a test that uses one, directly or
# through another fixture, is an integration test whether or not it says so.
REAL_COMPONENT_FIXTURES = frozenset(
    {
        "acquirer_host",  # uvicorn on 127.0.0.1, one per test
        "acquirer_terminal",
        "pcscd",  # pcscd + vpcd
        "vpcd_card",
        "nfc_card",  # nfcpy's udp device
        "pn532_pty",
        "pty_scanner",
        "browser",  # Chromium (tests/terminal/api/test_page.py)
        "swtpm",  # Debian's software TPM 2.0 on loopback (tests/conftest_tpm.py)
        "swtpm_factory",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_COMPONENT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_configure(config: pytest.Config) -> None:
    if IN_CI:
        # A module that fails for a missing component must not stop the others from running.
        config.option.continue_on_collection_errors = True


def pytest_report_header() -> str:
    return "CI=true: a skip for a missing component is a failure" if IN_CI else ""
